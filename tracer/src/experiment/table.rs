//! The text table: per workload, each scenario's mean job wall time with its spread,
//! its slowdown against N-1 unpinned jobs, the study's figure for the same
//! comparison, and below it what the trace says the slowdown is made of.

use std::fmt::Write as _;

use super::{
    decompose::{ScenarioSummary, explain},
    plan::{Env, Pinning, Scenario},
    result::{ExperimentResult, RunResult},
};

/// The study's mean increase of run time per job, N against N-1 jobs unpinned
/// (4 against 3 on a quad core; ../shared/paper.md).
pub const STUDY_LINUX_PCT: f64 = 1.28;
pub const STUDY_KVM_PCT: f64 = 4.89;
pub const STUDY_XEN_PCT: f64 = 3.75;

/// The study's finding for the same comparison, if it made one.
pub fn study_figure(s: &Scenario, n_cpus: usize) -> Option<String> {
    if s.jobs != n_cpus {
        return None;
    }
    match (&s.env, s.pinning) {
        (Env::Host, Pinning::None) => Some(format!("+{STUDY_LINUX_PCT:.2} % Linux")),
        (Env::Host, _) => None,
        (_, Pinning::None) => Some(format!("+{STUDY_KVM_PCT:.2} % KVM")),
        (_, Pinning::Vcpu) => Some("KVM: a bit worse than unpinned".into()),
        (_, Pinning::VcpuVmm) => Some("(Xen pinned: better)".into()),
    }
}

fn pct(x: f64) -> String {
    format!("{:+.2} %", 100.0 * x)
}

/// One line per finished run, for the log above the progress bar.
pub fn run_line(r: &RunResult) -> String {
    let walls: Vec<String> = r.jobs.iter().map(|j| format!("{:.2}", j.wall_ns as f64 / 1e9)).collect();
    let closure = r.jobs.iter().map(|j| j.closure_error).fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
    let failed: Vec<String> = r.jobs.iter().filter_map(|j| j.check_error.clone()).collect();
    format!(
        "run {:>3} {}{}: job wall {} s; worst closure {}{}",
        r.id,
        r.scenario.label(),
        if r.repeat.is_none() { " (warm-up)" } else { "" },
        walls.join(", "),
        pct(closure),
        if failed.is_empty() { String::new() } else { format!("; CHECK FAILED: {}", failed.join("; ")) }
    )
}

fn row(s: &ScenarioSummary, n_cpus: usize) -> String {
    let slow = match &s.slowdown {
        Some(d) => format!("{:+.2} ±{:.2} %", d.pct, d.std_error_pct),
        None if s.scenario.jobs == n_cpus - 1 && s.scenario.pinning == Pinning::None => "baseline".into(),
        None => "-".into(),
    };
    format!(
        "  {:<8} {:>4} {:<9} {:>8.3} ±{:<6.3} {:>16}  {:<30} {:>8}{}",
        s.scenario.env.name(),
        s.scenario.jobs,
        s.scenario.pinning.name(),
        s.wall_s.mean,
        s.wall_s.stddev,
        slow,
        study_figure(&s.scenario, n_cpus).unwrap_or_default(),
        format!("{:.2}%", 100.0 * s.closure_error_max_abs),
        if s.failed_checks > 0 { format!("  {} CHECKS FAILED", s.failed_checks) } else { String::new() }
    )
}

/// The whole table for a result.
pub fn render(r: &ExperimentResult) -> String {
    let n = r.config.plan.cpus.len();
    let mut out = String::new();
    let measured = r.runs.iter().filter(|x| x.repeat.is_some()).count();
    let _ = writeln!(
        out,
        "vmmtrace experiment on {} (kernel {}): CPUs {:?} (N = {n}: {} against {n} jobs), {} repeats, scale {}, {} of {} runs done{}",
        r.host.hostname,
        r.host.kernel,
        r.config.plan.cpus,
        n - 1,
        r.config.plan.repeat,
        r.config.scale,
        r.runs.len(),
        r.plan.len(),
        if r.complete { "" } else { " (INCOMPLETE)" }
    );
    let _ = writeln!(out, "  ({measured} measured runs; warm-ups not counted)");
    for w in &r.config.plan.workloads {
        let rows: Vec<&ScenarioSummary> = r.summary.iter().filter(|s| s.scenario.workload == *w).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}: mean job wall time (s) ± stddev; slowdown against {} job(s) unpinned ± std error",
            w.name(),
            n - 1
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>4} {:<9} {:>15} {:>16}  {:<30} {:>8}",
            "env", "jobs", "pinning", "wall s", "slowdown", "study (3 -> 4 jobs)", "closure"
        );
        for s in &rows {
            let _ = writeln!(out, "{}", row(s, n));
        }
        let _ = writeln!(out, "  what the slowdown is made of (percentage points of the baseline's wall time):");
        for s in rows.iter().filter(|s| s.slowdown.is_some()) {
            let d = s.slowdown.as_ref().expect("filtered");
            let check =
                d.kernel_run_delay_pp.map(|k| format!(" [kernel's run-queue wait: {k:+.1} pp]")).unwrap_or_default();
            let _ = writeln!(
                out,
                "    {:<8} {} jobs {:<9} {}{check}",
                s.scenario.env.name(),
                s.scenario.jobs,
                s.scenario.pinning.name(),
                explain(d)
            );
            if !s.top_thieves.is_empty() {
                let names: Vec<String> =
                    s.top_thieves.iter().map(|t| format!("{} ({}) {:.0} ms", t.comm, t.role, t.mean_s * 1e3)).collect();
                let _ = writeln!(out, "      took the CPU, per job: {}", names.join(", "));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nstudy (Core2 Quad, 4 against 3 jobs, bzip2 and gobmk): Linux +{STUDY_LINUX_PCT} %, KVM +{STUDY_KVM_PCT} %, Xen +{STUDY_XEN_PCT} % (no Xen here)"
    );
    out
}
