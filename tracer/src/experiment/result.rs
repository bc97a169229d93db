//! The experiment's result file (`vmmtrace-experiment/1`, docs/schema.md): what was
//! asked, the plan, every finished run with each job's stopwatch and the trace's
//! account of it, and the summary derived from them. Written atomically after every
//! run, so an interruption loses at most the run in progress.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    decompose::ScenarioSummary,
    plan::{PlanConfig, PlannedRun, Scenario},
};

pub const SCHEMA: &str = "vmmtrace-experiment/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentResult {
    pub schema: String,
    pub started_unix_s: u64,
    pub host: HostSummary,
    pub config: ExperimentConfig,
    /// Every run in the order it is run (warm-ups included).
    pub plan: Vec<PlannedRun>,
    /// The runs finished so far, in the order they finished.
    pub runs: Vec<RunResult>,
    /// Reference answers of the workloads whose check compares with the first run
    /// (GNU Go), by "env/workload"; a resumed experiment checks against the same.
    pub references: BTreeMap<String, String>,
    /// True once every run of the plan is in `runs`.
    pub complete: bool,
    /// Per scenario: job wall time with its spread, the account's parts, and the
    /// slowdown against the N-1 unpinned scenario decomposed into those parts.
    pub summary: Vec<ScenarioSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    pub hostname: String,
    pub kernel: String,
    pub online_cpus: usize,
}

/// The options that define the experiment; `--resume` continues only with the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    #[serde(flatten)]
    pub plan: PlanConfig,
    /// Multiplies each job's work (1.0: about 6 s of work per job here).
    pub scale: f64,
    /// `vm` env: the command that starts one job in each named VM.
    #[serde(default)]
    pub vm_commands: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub id: usize,
    pub scenario: Scenario,
    /// None for the warm-up, whose figures are not used.
    pub repeat: Option<usize>,
    pub started_unix_s: u64,
    /// The trace window.
    pub trace_ns: u64,
    /// The run's record report, relative to the result file's directory.
    pub report: String,
    pub dropped_events: u64,
    /// Probes that could not be used in this run, with the reason.
    pub unavailable: Vec<String>,
    pub jobs: Vec<JobResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub index: usize,
    /// The CPU the job (or its vCPU) was pinned to, if pinned.
    pub cpu: Option<u32>,
    /// The processes of the job (host: each step's process; VMs: the VMM process; the
    /// user's VMs: the command's process on the host, then the VMM processes found by name).
    pub pids: Vec<u32>,
    /// The runner's own stopwatch, from the first step's start to the last one's exit.
    pub wall_ns: u64,
    /// The job's self-check: None if it passed, else what was wrong.
    pub check_error: Option<String>,
    /// The trace's account of the job's interval: named parts in ns (`on_cpu`,
    /// `runq_wait.<thief>`, `blocked`, ...), which should add up to `wall_ns`.
    pub parts_ns: BTreeMap<String, u64>,
    /// (sum of parts - wall) / wall: how well the account closes.
    pub closure_error: f64,
    /// The kernel's own counts for the job's processes (/proc/PID/schedstat read
    /// before they were reaped), independent of the probes.
    pub kernel: Option<KernelTimes>,
    /// The threads that took most of the job's run-queue wait (or its vCPU's), by name.
    #[serde(default)]
    pub thieves: Vec<NamedThief>,
}

/// A thread that took a job's CPU, from the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedThief {
    pub tid: u32,
    pub comm: String,
    pub role: String,
    /// The thief's VM, for vCPU and VMM threads.
    pub vm: Option<String>,
    pub ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelTimes {
    pub on_cpu_ns: u64,
    pub run_delay_ns: u64,
}

impl JobResult {
    pub fn parts_sum_ns(&self) -> u64 {
        self.parts_ns.values().sum()
    }
}

/// Signed closure error: (sum of the parts - wall) / wall.
pub fn closure_error(parts_sum_ns: u64, wall_ns: u64) -> f64 {
    (parts_sum_ns as f64 - wall_ns as f64) / wall_ns.max(1) as f64
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not an experiment result: {reason}")]
    Invalid { path: String, reason: String },
}

impl ExperimentResult {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<ExperimentResult, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(SCHEMA) => serde_json::from_value(v).map_err(|e| format!("not a valid {SCHEMA} file: {e}")),
            Some(other) => Err(format!("its schema is {other}; this vmmtrace reads {SCHEMA}")),
            None => Err("no \"schema\" field".into()),
        }
    }

    pub fn load(path: &Path) -> Result<ExperimentResult, ResultError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ResultError::Read { path: path.display().to_string(), source })?;
        Self::from_json(&text).map_err(|reason| ResultError::Invalid { path: path.display().to_string(), reason })
    }

    /// The runs of the plan not yet finished, in plan order.
    pub fn pending(&self) -> Vec<PlannedRun> {
        let done: std::collections::HashSet<usize> = self.runs.iter().map(|r| r.id).collect();
        self.plan.iter().filter(|r| !done.contains(&r.id)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{
        plan::{Env, Pinning, plan},
        workloads::Workload,
    };

    pub fn sample() -> ExperimentResult {
        let cfg = PlanConfig {
            envs: vec![Env::Host],
            workloads: vec![Workload::Bzip2],
            cpus: vec![0, 1],
            repeat: 2,
            seed: 1,
        };
        let p = plan(&cfg).unwrap();
        let job = JobResult {
            index: 0,
            cpu: Some(0),
            pids: vec![10, 11],
            wall_ns: 1_000_000,
            check_error: None,
            parts_ns: [("on_cpu".to_string(), 990_000u64)].into_iter().collect(),
            closure_error: closure_error(990_000, 1_000_000),
            kernel: Some(KernelTimes { on_cpu_ns: 991_000, run_delay_ns: 5_000 }),
            thieves: vec![NamedThief {
                tid: 9,
                comm: "kworker/0:1".into(),
                role: "host_kernel".into(),
                vm: None,
                ns: 4,
            }],
        };
        let run = RunResult {
            id: 1,
            scenario: Scenario { env: Env::Host, workload: Workload::Bzip2, jobs: 2, pinning: Pinning::Vcpu },
            repeat: Some(0),
            started_unix_s: 5,
            trace_ns: 1_100_000,
            report: "x.runs/run-001.json".into(),
            dropped_events: 0,
            unavailable: vec![],
            jobs: vec![job],
        };
        ExperimentResult {
            schema: SCHEMA.into(),
            started_unix_s: 4,
            host: HostSummary { hostname: "h".into(), kernel: "6.18".into(), online_cpus: 2 },
            config: ExperimentConfig { plan: cfg, scale: 0.5, vm_commands: BTreeMap::new() },
            plan: p,
            runs: vec![run],
            references: [("host/gobmk".to_string(), "= C3\n".to_string())].into_iter().collect(),
            complete: false,
            summary: vec![],
        }
    }

    #[test]
    fn result_round_trips_through_json() {
        let r = sample();
        let back = ExperimentResult::from_json(std::str::from_utf8(&r.to_json()).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.pending().len(), r.plan.len() - 1);
        assert!(back.pending().iter().all(|p| p.id != 1));
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        assert!(ExperimentResult::from_json("{\"schema\":\"vmmtrace/1\"}").unwrap_err().contains("vmmtrace/1"));
        assert!(ExperimentResult::from_json("{}").unwrap_err().contains("schema"));
    }

    #[test]
    fn closure_error_is_signed() {
        assert_eq!(closure_error(990, 1000), -0.01);
        assert_eq!(closure_error(1010, 1000), 0.01);
    }
}
