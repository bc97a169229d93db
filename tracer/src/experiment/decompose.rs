//! Slowdown of each scenario against the N-1 unpinned scenario of the same
//! environment and workload, and its decomposition: every job's wall time is the sum
//! of its account's parts plus what the account leaves unexplained, so the change of
//! the mean wall time is exactly the sum of the changes of the parts' means. Each
//! change is given in percentage points of the baseline's mean wall time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    plan::{Pinning, Scenario},
    result::{JobResult, RunResult},
    stats::{Spread, ratio_pct},
};

/// The part that holds what the account does not explain (wall - sum of the parts).
pub const UNACCOUNTED: &str = "unaccounted";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub runs: usize,
    /// Job wall time by the stopwatch, over every job of every repeat (s).
    pub wall_s: Spread,
    /// Mean of each part of the account per job (s), `unaccounted` included.
    pub parts_mean_s: BTreeMap<String, f64>,
    /// The worst |closure_error| of any job.
    pub closure_error_max_abs: f64,
    /// Mean run-queue wait per job by the kernel's own count (schedstat), a check
    /// independent of the probes (s); None if a job has no kernel count.
    #[serde(default)]
    pub kernel_run_delay_mean_s: Option<f64>,
    /// Jobs whose self-check failed.
    pub failed_checks: usize,
    /// Who took the jobs' CPU, by thread name and role: mean per job (s), largest first
    /// (at most 5).
    #[serde(default)]
    pub top_thieves: Vec<ThiefShare>,
    /// Against the baseline; None for the baseline itself or when it has no runs yet.
    pub slowdown: Option<Slowdown>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThiefShare {
    pub comm: String,
    pub role: String,
    pub mean_s: f64,
}

/// The jobs' named thieves summed by (comm, role), per job, largest first.
fn top_thieves(jobs: &[&JobResult]) -> Vec<ThiefShare> {
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for t in jobs.iter().flat_map(|j| j.thieves.iter()) {
        *by.entry((t.comm.clone(), t.role.clone())).or_insert(0) += t.ns;
    }
    let n = jobs.len().max(1) as f64;
    let mut v: Vec<ThiefShare> =
        by.into_iter().map(|((comm, role), ns)| ThiefShare { comm, role, mean_s: ns as f64 / 1e9 / n }).collect();
    v.sort_by(|a, b| b.mean_s.total_cmp(&a.mean_s));
    v.truncate(5);
    v
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slowdown {
    /// The baseline scenario.
    pub baseline: Scenario,
    /// 100 (mean wall / baseline mean wall - 1).
    pub pct: f64,
    /// Its standard error from both scenarios' spreads.
    pub std_error_pct: f64,
    /// Change of each part's mean in percentage points of the baseline's mean wall
    /// time; they add up to `pct`.
    pub parts_pp: BTreeMap<String, f64>,
    /// Change of the kernel's count of run-queue wait, in the same points (a check).
    #[serde(default)]
    pub kernel_run_delay_pp: Option<f64>,
}

/// The scenario every other scenario of its environment and workload is compared to.
pub fn baseline_of(s: &Scenario, n_minus_one: usize) -> Scenario {
    Scenario { env: s.env.clone(), workload: s.workload, jobs: n_minus_one, pinning: Pinning::None }
}

/// A job's parts with the unexplained rest (negative when the parts exceed the wall).
fn job_parts_s(j: &JobResult) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = j.parts_ns.iter().map(|(k, v)| (k.clone(), *v as f64 / 1e9)).collect();
    m.insert(UNACCOUNTED.into(), (j.wall_ns as f64 - j.parts_sum_ns() as f64) / 1e9);
    m
}

/// Summary of one scenario's measured runs (warm-ups excluded by the caller).
fn summarize_one(scenario: &Scenario, runs: &[&RunResult]) -> ScenarioSummary {
    let jobs: Vec<&JobResult> = runs.iter().flat_map(|r| r.jobs.iter()).collect();
    let walls: Vec<f64> = jobs.iter().map(|j| j.wall_ns as f64 / 1e9).collect();
    let per_job: Vec<BTreeMap<String, f64>> = jobs.iter().map(|j| job_parts_s(j)).collect();
    let names: BTreeSet<&String> = per_job.iter().flat_map(|m| m.keys()).collect();
    let parts_mean_s = names
        .into_iter()
        .map(|k| {
            let sum: f64 = per_job.iter().map(|m| m.get(k).copied().unwrap_or(0.0)).sum();
            (k.clone(), sum / per_job.len().max(1) as f64)
        })
        .collect();
    ScenarioSummary {
        scenario: scenario.clone(),
        runs: runs.len(),
        wall_s: Spread::of(&walls),
        parts_mean_s,
        closure_error_max_abs: jobs.iter().map(|j| j.closure_error.abs()).fold(0.0, f64::max),
        kernel_run_delay_mean_s: jobs
            .iter()
            .map(|j| j.kernel.map(|k| k.run_delay_ns as f64 / 1e9))
            .sum::<Option<f64>>()
            .map(|sum| sum / jobs.len().max(1) as f64),
        failed_checks: jobs.iter().filter(|j| j.check_error.is_some()).count(),
        top_thieves: top_thieves(&jobs),
        slowdown: None,
    }
}

/// The slowdown of `s` against `base`, decomposed.
pub fn slowdown(s: &ScenarioSummary, base: &ScenarioSummary) -> Slowdown {
    let (pct, std_error_pct) = ratio_pct(&s.wall_s, &base.wall_s);
    let names: BTreeSet<&String> = s.parts_mean_s.keys().chain(base.parts_mean_s.keys()).collect();
    let denom = base.wall_s.mean.max(f64::MIN_POSITIVE);
    let parts_pp = names
        .into_iter()
        .map(|k| {
            let a = s.parts_mean_s.get(k).copied().unwrap_or(0.0);
            let b = base.parts_mean_s.get(k).copied().unwrap_or(0.0);
            (k.clone(), 100.0 * (a - b) / denom)
        })
        .collect();
    let kernel_run_delay_pp = match (s.kernel_run_delay_mean_s, base.kernel_run_delay_mean_s) {
        (Some(a), Some(b)) => Some(100.0 * (a - b) / denom),
        _ => None,
    };
    Slowdown { baseline: base.scenario.clone(), pct, std_error_pct, parts_pp, kernel_run_delay_pp }
}

/// Every scenario with measured runs, in scenario order, each with its slowdown
/// against the N-1 unpinned scenario of its environment and workload.
pub fn summarize(runs: &[RunResult], n_cpus: usize) -> Vec<ScenarioSummary> {
    let mut by: BTreeMap<&Scenario, Vec<&RunResult>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.repeat.is_some()) {
        by.entry(&r.scenario).or_default().push(r);
    }
    let mut out: Vec<ScenarioSummary> = by.iter().map(|(s, rs)| summarize_one(s, rs)).collect();
    let bases: BTreeMap<Scenario, ScenarioSummary> = out.iter().map(|s| (s.scenario.clone(), s.clone())).collect();
    for s in &mut out {
        let b = baseline_of(&s.scenario, n_cpus - 1);
        if b != s.scenario
            && let Some(base) = bases.get(&b)
        {
            s.slowdown = Some(slowdown(s, base));
        }
    }
    out
}

/// The group a part belongs to: `runq_wait.vmm_own` -> `runq_wait`.
pub fn group_of(part: &str) -> &str {
    part.split('.').next().unwrap_or(part)
}

/// What a part is called in a sentence.
fn describe(group: &str) -> &str {
    match group {
        "on_cpu" => "CPU time",
        "runq_wait" => "run-queue wait",
        "blocked" => "blocked",
        UNACCOUNTED => "unaccounted",
        other => other,
    }
}

/// "+4.6 %: 3.9 pp run-queue wait (2.8 pp other_jobs, 1.1 pp host_kernel), 0.5 pp CPU
/// time, ..." with groups and their parts largest first (unaccounted last); changes under 0.05 pp left out.
pub fn explain(d: &Slowdown) -> String {
    let mut groups: Vec<GroupChange> = Vec::new();
    for (k, v) in &d.parts_pp {
        let name = group_of(k);
        if groups.last().is_none_or(|g| g.name != name) {
            groups.push(GroupChange { name, pp: 0.0, parts: Vec::new() });
        }
        let g = groups.last_mut().expect("pushed above");
        g.pp += v;
        g.parts.push((k.split_once('.').map(|(_, s)| s).unwrap_or(""), *v));
    }
    groups.retain(|g| g.pp.abs() >= 0.05);
    // Largest first; what the account leaves unexplained always last.
    groups
        .sort_by(|a, b| (a.name == UNACCOUNTED).cmp(&(b.name == UNACCOUNTED)).then(b.pp.abs().total_cmp(&a.pp.abs())));
    let items: Vec<String> = groups.iter_mut().map(GroupChange::text).collect();
    format!("{:+.1} %: {}", d.pct, if items.is_empty() { "no part changed".into() } else { items.join(", ") })
}

/// The change of one group of parts (`runq_wait`), with its parts' changes.
struct GroupChange<'a> {
    name: &'a str,
    pp: f64,
    parts: Vec<(&'a str, f64)>,
}

impl GroupChange<'_> {
    fn text(&mut self) -> String {
        self.parts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let named: Vec<String> = self
            .parts
            .iter()
            .filter(|(n, p)| !n.is_empty() && p.abs() >= 0.05)
            .map(|(n, p)| format!("{p:+.1} pp {n}"))
            .collect();
        let detail =
            if self.parts.len() > 1 && !named.is_empty() { format!(" ({})", named.join(", ")) } else { String::new() };
        format!("{:+.1} pp {}{detail}", self.pp, describe(self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{plan::Env, result::closure_error, workloads::Workload};

    fn job(wall_ms: u64, parts: &[(&str, u64)]) -> JobResult {
        let parts_ns: BTreeMap<String, u64> = parts.iter().map(|(k, v)| (k.to_string(), v * 1_000_000)).collect();
        let sum = parts_ns.values().sum();
        JobResult {
            index: 0,
            cpu: None,
            pids: vec![],
            wall_ns: wall_ms * 1_000_000,
            check_error: None,
            closure_error: closure_error(sum, wall_ms * 1_000_000),
            parts_ns,
            kernel: None,
            thieves: vec![],
        }
    }

    fn run(id: usize, jobs: usize, pinning: Pinning, repeat: Option<usize>, js: Vec<JobResult>) -> RunResult {
        RunResult {
            id,
            scenario: Scenario { env: Env::Host, workload: Workload::Bzip2, jobs, pinning },
            repeat,
            started_unix_s: 0,
            trace_ns: 0,
            report: String::new(),
            dropped_events: 0,
            unavailable: vec![],
            jobs: js,
        }
    }

    /// Baseline: 1 job of 1000 ms, all on CPU. Two jobs: 1050 ms each, of which
    /// 1005 on CPU, 30 waiting for the other job, 10 for the host kernel, 5 unexplained.
    fn fixture() -> Vec<RunResult> {
        let base = |id, r| run(id, 1, Pinning::None, Some(r), vec![job(1000, &[("on_cpu", 1000)])]);
        let two = |id, r| {
            let j = job(1050, &[("on_cpu", 1005), ("runq_wait.other_jobs", 30), ("runq_wait.host_kernel", 10)]);
            run(id, 2, Pinning::None, Some(r), vec![j.clone(), j])
        };
        vec![
            run(0, 1, Pinning::None, None, vec![job(5000, &[("on_cpu", 10)])]), // warm-up: ignored
            base(1, 0),
            two(2, 0),
            base(3, 1),
            two(4, 1),
        ]
    }

    #[test]
    fn slowdown_is_against_n_minus_one_unpinned_and_its_parts_add_up() {
        let s = summarize(&fixture(), 2);
        assert_eq!(s.len(), 2);
        assert!(s[0].slowdown.is_none(), "the baseline has no slowdown");
        assert_eq!(s[0].wall_s.n, 2);
        assert!((s[0].wall_s.mean - 1.0).abs() < 1e-12, "warm-up excluded: {:?}", s[0].wall_s);
        let d = s[1].slowdown.as_ref().unwrap();
        assert_eq!(d.baseline, s[0].scenario);
        assert!((d.pct - 5.0).abs() < 1e-9, "{d:?}");
        assert_eq!(d.std_error_pct, 0.0);
        let pp = |k: &str| d.parts_pp[k];
        assert!((pp("on_cpu") - 0.5).abs() < 1e-9);
        assert!((pp("runq_wait.other_jobs") - 3.0).abs() < 1e-9);
        assert!((pp("runq_wait.host_kernel") - 1.0).abs() < 1e-9);
        assert!((pp(UNACCOUNTED) - 0.5).abs() < 1e-9);
        assert!((d.parts_pp.values().sum::<f64>() - d.pct).abs() < 1e-9);
        assert_eq!(s[1].wall_s.n, 4);
        assert_eq!(d.kernel_run_delay_pp, None, "no kernel counts in the fixture");
        assert!((s[1].closure_error_max_abs - 5.0 / 1050.0).abs() < 1e-12);
    }

    #[test]
    fn explanation_names_groups_and_their_parts_largest_first() {
        let s = summarize(&fixture(), 2);
        let text = explain(s[1].slowdown.as_ref().unwrap());
        assert_eq!(
            text,
            "+5.0 %: +4.0 pp run-queue wait (+3.0 pp other_jobs, +1.0 pp host_kernel), +0.5 pp CPU time, +0.5 pp unaccounted"
        );
    }

    #[test]
    fn the_kernels_run_queue_wait_is_compared_alike() {
        let mut runs = fixture();
        for r in &mut runs {
            for j in &mut r.jobs {
                let wait = if r.scenario.jobs == 2 { 40_000_000 } else { 0 };
                j.kernel = Some(crate::experiment::result::KernelTimes { on_cpu_ns: 0, run_delay_ns: wait });
            }
        }
        let s = summarize(&runs, 2);
        let d = s[1].slowdown.as_ref().unwrap();
        assert!((d.kernel_run_delay_pp.unwrap() - 4.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn thieves_are_summed_by_name_per_job() {
        use crate::experiment::result::NamedThief;
        let t = |tid, comm: &str, ns| NamedThief { tid, comm: comm.into(), role: "vmm".into(), vm: None, ns };
        let mut runs = fixture();
        runs[2].jobs[0].thieves = vec![t(5, "qemu-main", 30_000_000), t(6, "rcu", 1_000_000)];
        runs[4].jobs[1].thieves = vec![t(9, "qemu-main", 10_000_000)];
        let s = summarize(&runs, 2);
        let th = &s[1].top_thieves;
        assert_eq!(th[0].comm, "qemu-main");
        assert!((th[0].mean_s - 0.010).abs() < 1e-12, "{th:?}"); // 40 ms over 4 jobs
        assert_eq!(th.len(), 2);
    }

    #[test]
    fn a_scenario_without_its_baseline_has_no_slowdown() {
        let runs: Vec<RunResult> = fixture().into_iter().filter(|r| r.scenario.jobs == 2).collect();
        let s = summarize(&runs, 2);
        assert_eq!(s.len(), 1);
        assert!(s[0].slowdown.is_none());
    }

    #[test]
    fn spread_over_repeats_gives_a_standard_error() {
        let mut runs = fixture();
        runs[4].jobs[0].wall_ns = 1_070_000_000;
        runs[4].jobs[1].wall_ns = 1_030_000_000;
        let s = summarize(&runs, 2);
        let d = s[1].slowdown.as_ref().unwrap();
        assert!((d.pct - 5.0).abs() < 1e-9);
        assert!(d.std_error_pct > 0.5 && d.std_error_pct < 1.5, "{d:?}");
    }
}
