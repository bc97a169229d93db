//! `vmmtrace diagnose RESULT` for an experiment result: the experiment's findings in
//! plain words, from the decomposition of each slowdown: what the N-jobs scenario
//! cost and which part (and which thief) cost it most, whether pinning helped, and
//! where the account does not close. Pure: a result in, findings out.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    decompose::{ScenarioSummary, Slowdown, explain},
    plan::{Env, Pinning, Scenario},
    result::ExperimentResult,
    table::{STUDY_KVM_PCT, STUDY_LINUX_PCT},
};
use crate::diagnose::{Finding, Kind};

/// The account is meant to close within this share of each job's wall time.
pub const CLOSURE_TARGET: f64 = 0.005;

/// Every finding of the result, most costly first.
pub fn findings(r: &ExperimentResult) -> Vec<Finding> {
    let n = r.config.plan.cpus.len();
    let mut out: Vec<Finding> = Vec::new();
    for s in r.summary.iter().filter(|s| s.scenario.jobs == n && s.scenario.pinning == Pinning::None) {
        if let Some(d) = &s.slowdown {
            out.push(n_jobs(s, d, n));
        }
    }
    for s in r.summary.iter().filter(|s| s.scenario.pinning != Pinning::None) {
        let unpinned = Scenario { pinning: Pinning::None, ..s.scenario.clone() };
        if let Some(u) = r.summary.iter().find(|x| x.scenario == unpinned) {
            out.push(pinning(s, u));
        }
    }
    out.extend(not_closed(&r.summary));
    out.sort_by_key(|f| std::cmp::Reverse(f.cost_ns));
    out
}

/// `host bzip2`.
fn what(s: &Scenario) -> String {
    format!("{} {}", s.env.name(), s.workload.name())
}

/// `1 job`, `2 jobs`.
fn jobs(n: usize) -> String {
    format!("{n} job{}", if n == 1 { "" } else { "s" })
}

/// A part of a job's account in plain words.
pub fn words(part: &str) -> &str {
    match part {
        "on_cpu" | "on_cpu.guest" | "on_cpu.kvm_run" => "more CPU time for the same work",
        "on_cpu.exit_handling" => "exit handling",
        "on_cpu.vmm_user" => "VMM userspace on the vCPU threads",
        "vm_setup" => "setting the VMs up",
        "runq_wait.other_jobs" => "waiting for the CPU while the other jobs had it",
        "runq_wait.vmm_own" => "waiting for the CPU while the VM's own VMM threads had it",
        "runq_wait.vmm_other_vms" => "waiting for the CPU while other VMs' VMM threads had it",
        "runq_wait.host_kernel" => "waiting for the CPU while host kernel threads had it",
        "runq_wait.other" => "waiting for the CPU while other processes of the host had it",
        "runq_wait.unresolved" => "run-queue wait the ledger could not name a thief for",
        "runq_wait.idle" => "wake-up latency",
        "blocked" => "blocked time",
        "unaccounted" => "what the account leaves unexplained",
        other => other,
    }
}

/// The part that grew most (what the account leaves unexplained only if nothing else grew).
fn largest_increase(parts_pp: &BTreeMap<String, f64>) -> Option<(&str, f64)> {
    parts_pp
        .iter()
        .filter(|(_, pp)| **pp > 0.0)
        .max_by(|a, b| (a.0 != "unaccounted").cmp(&(b.0 != "unaccounted")).then(a.1.total_cmp(b.1)))
        .map(|(k, v)| (k.as_str(), *v))
}

/// The N-jobs effect: N jobs on N CPUs against N-1.
fn n_jobs(s: &ScenarioSummary, d: &Slowdown, n: usize) -> Finding {
    let study = match s.scenario.env {
        Env::Host => format!("the study measured +{STUDY_LINUX_PCT} % on Linux"),
        _ => format!("the study measured +{STUDY_KVM_PCT} % under KVM"),
    };
    let top = largest_increase(&d.parts_pp);
    let thieves: Vec<String> =
        s.top_thieves.iter().take(3).map(|t| format!("{} ({}) {:.0} ms", t.comm, t.role, t.mean_s * 1e3)).collect();
    let each_other = match d.parts_pp.get("runq_wait.other_jobs") {
        Some(pp) if top.map(|t| t.0) != Some("runq_wait.other_jobs") => {
            format!("; the jobs taking each other's CPU account for {pp:+.1} pp")
        }
        _ => String::new(),
    };
    let summary = format!(
        "{}: with {n} jobs on {n} CPUs each job ran {:+.1} % (± {:.1}) longer than with {} ({study}); {}{each_other}. In all: {}.{}",
        what(&s.scenario),
        d.pct,
        d.std_error_pct,
        n - 1,
        match top {
            Some((part, pp)) => format!("the largest part is {} ({pp:+.1} pp)", words(part)),
            None => "no part of the account grew".into(),
        },
        explain(d),
        if thieves.is_empty() { String::new() } else { format!(" Who took the CPU, per job: {}.", thieves.join(", ")) }
    );
    let remedy = remedy_for(top.map(|t| t.0).unwrap_or(""), n);
    let base_mean_s = s.wall_s.mean / (1.0 + d.pct / 100.0);
    let facts = BTreeMap::from([
        ("env".into(), json!(s.scenario.env.name())),
        ("workload".into(), json!(s.scenario.workload.name())),
        ("jobs".into(), json!(n)),
        ("slowdown_pct".into(), json!(d.pct)),
        ("std_error_pct".into(), json!(d.std_error_pct)),
        ("parts_pp".into(), json!(d.parts_pp)),
        ("largest_part".into(), json!(top.map(|t| t.0))),
    ]);
    Finding { kind: Kind::NJobsSlowdown, cost_ns: cost_ns(d.pct, base_mean_s), summary, remedy, facts }
}

/// Job time lost per job (ns) for a slowdown of `pct` on a baseline of `base_mean_s`.
fn cost_ns(pct: f64, base_mean_s: f64) -> u64 {
    (pct.max(0.0) / 100.0 * base_mean_s * 1e9) as u64
}

/// What to do about the part that grew most.
fn remedy_for(part: &str, n: usize) -> String {
    match part {
        "runq_wait.other_jobs" => format!(
            "This is the N-jobs effect: the jobs take each other's CPUs. Run no more CPU-bound jobs (or vCPUs) than {} on {n} CPUs, and leave one CPU for the host's and the VMMs' work.",
            n - 1
        ),
        "runq_wait.vmm_own" | "runq_wait.vmm_other_vms" => "The VMMs' own threads took the vCPUs' CPUs: confine them away from the vCPUs' cores (virsh emulatorpin and iothreadpin; the experiment's vcpu+vmm pinning).".into(),
        "runq_wait.host_kernel" => "Host kernel threads took the jobs' CPUs: keep the jobs' cores for them (isolcpus= and nohz_full= on the kernel command line, irqaffinity= for interrupts).".into(),
        p if p.starts_with("on_cpu") => "The jobs needed more CPU time for the same work: they share caches and memory bandwidth, which pinning does not change; fewer jobs per socket does.".into(),
        "vm_setup" => "Starting and stopping the VMs took longer: keep VMs running between jobs, or measure the jobs without their VMs' setup.".into(),
        "unaccounted" => "The trace's account does not explain this change: see the closure column, and rerun on a quieter host.".into(),
        _ => "Other work on the host took the jobs' CPUs (the threads named above): keep it off the jobs' cores (a cgroup cpuset, systemd AllowedCPUs=, or taskset), or rerun on a quiet host; the study's figure is for an otherwise idle machine.".into(),
    }
}

/// Pinned against unpinned with the same number of jobs.
fn pinning(p: &ScenarioSummary, u: &ScenarioSummary) -> Finding {
    let zero = |s: &ScenarioSummary| (0.0, s.wall_s.std_error() / s.wall_s.mean.max(1e-12) * 100.0, BTreeMap::new());
    let of = |s: &ScenarioSummary| match &s.slowdown {
        Some(d) => (d.pct, d.std_error_pct, d.parts_pp.clone()),
        None => zero(s),
    };
    let ((pp, pe, pparts), (up, ue, uparts)) = (of(p), of(u));
    let diff = pp - up;
    let err = (pe * pe + ue * ue).sqrt();
    let mut parts_pp = pparts.clone();
    for (k, v) in &uparts {
        *parts_pp.entry(k.clone()).or_insert(0.0) -= v;
    }
    let change = Slowdown {
        baseline: u.scenario.clone(),
        pct: diff,
        std_error_pct: err,
        parts_pp: parts_pp.clone(),
        kernel_run_delay_pp: None,
    };
    let shown = diff.abs() > 2.0 * err;
    let verdict = match (shown, diff > 0.0) {
        (false, _) => "no effect beyond the repeats' spread",
        (true, true) => "worse",
        (true, false) => "better",
    };
    let study = if p.scenario.env.is_virtual() && p.scenario.pinning == Pinning::Vcpu {
        " (the study found KVM slightly worse with pinned vCPUs)"
    } else {
        ""
    };
    let summary = format!(
        "{}, {}: pinning {} changed the job wall time by {diff:+.1} pp (± {err:.1}) against unpinned: {verdict}{study}. The change: {}.",
        what(&p.scenario),
        jobs(p.scenario.jobs),
        p.scenario.pinning.name(),
        explain(&change)
    );
    let vmm_grew = ["runq_wait.vmm_own", "runq_wait.vmm_other_vms"]
        .iter()
        .map(|k| parts_pp.get(*k).copied().unwrap_or(0.0))
        .sum::<f64>()
        > 0.1;
    let remedy = match (shown, diff > 0.0) {
        (true, true) if vmm_grew => "The VMM threads still float onto the pinned vCPUs' cores: pin them too (virsh emulatorpin, iothreadpin; the experiment's vcpu+vmm pinning).".into(),
        (true, true) => "Leave these jobs unpinned here: the scheduler placed them better than a fixed CPU each (taskset or virsh vcpupin only where something else needs the other cores).".into(),
        (true, false) => format!("Pin as this scenario did ({}: taskset -c, or virsh vcpupin{}).", p.scenario.pinning.name(), if p.scenario.pinning == Pinning::VcpuVmm { " and emulatorpin" } else { "" }),
        (false, _) => "Nothing to change for pinning's sake; more repeats (--repeat) would narrow the spread.".into(),
    };
    let base_mean_s = p.wall_s.mean / (1.0 + pp / 100.0);
    let facts = BTreeMap::from([
        ("env".into(), json!(p.scenario.env.name())),
        ("workload".into(), json!(p.scenario.workload.name())),
        ("jobs".into(), json!(p.scenario.jobs)),
        ("pinning".into(), json!(p.scenario.pinning)),
        ("change_pp".into(), json!(diff)),
        ("std_error_pp".into(), json!(err)),
        ("beyond_spread".into(), json!(shown)),
        ("parts_pp".into(), json!(parts_pp)),
    ]);
    let cost = if shown { cost_ns(diff, base_mean_s) } else { 0 };
    Finding { kind: Kind::PinningEffect, cost_ns: cost, summary, remedy, facts }
}

/// The scenarios whose jobs' accounts do not close within the target, or whose
/// checks failed: one finding for them all.
fn not_closed(summary: &[ScenarioSummary]) -> Option<Finding> {
    let bad: Vec<&ScenarioSummary> =
        summary.iter().filter(|s| s.closure_error_max_abs > CLOSURE_TARGET || s.failed_checks > 0).collect();
    let worst = bad.iter().max_by(|a, b| a.closure_error_max_abs.total_cmp(&b.closure_error_max_abs))?;
    let failed: usize = bad.iter().map(|s| s.failed_checks).sum();
    let names: Vec<String> = bad
        .iter()
        .map(|s| {
            format!(
                "{} {} pin={} ({:.2} %)",
                what(&s.scenario),
                jobs(s.scenario.jobs),
                s.scenario.pinning.name(),
                100.0 * s.closure_error_max_abs
            )
        })
        .collect();
    let summary = format!(
        "The trace's account of a job's wall time closes only within {:.2} % (target {:.1} %) in {} of {} scenarios: {}{}.",
        100.0 * worst.closure_error_max_abs,
        100.0 * CLOSURE_TARGET,
        bad.len(),
        summary.len(),
        names.join(", "),
        if failed > 0 { format!("; {failed} jobs failed their self-check") } else { String::new() }
    );
    let remedy = "Read those decompositions with care (their `unaccounted` part, and the run-queue wait the ledger could not name); rerun on a quieter host; where a check failed, the run's check_error in the result says why.".into();
    let facts = BTreeMap::from([
        ("scenarios".into(), json!(bad.iter().map(|s| &s.scenario).collect::<Vec<_>>())),
        ("closure_error_max_abs".into(), json!(worst.closure_error_max_abs)),
        ("failed_checks".into(), json!(failed)),
    ]);
    Some(Finding { kind: Kind::AccountNotClosed, cost_ns: 0, summary, remedy, facts })
}
