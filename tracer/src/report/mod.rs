//! The report: one versioned JSON schema (`vmmtrace/2`, see docs/schema.md; files of
//! `vmmtrace/1` are still read), written atomically (`write.rs`), and its text
//! rendering (`text.rs`, with the "who took the time" section in `who_took.rs`).

pub mod charts;
mod text;
mod who_took;
mod write;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    account::{
        Attribution,
        kvm::VmReport,
        ledger::{LedgerReport, SchedReport},
        timeline::Timeline,
    },
    host::Role,
    probe::Features,
};

pub use text::{by_cause, ms, render_text, role_name};
pub use write::{WriteError, check_writable, write_atomic};

pub const SCHEMA: &str = "vmmtrace/2";
/// The schemas `Report::from_json` reads: older files parse with the newer parts
/// empty (`sched`, `ledger` and `lost_to` null or empty).
pub const READABLE_SCHEMAS: [&str; 2] = ["vmmtrace/1", SCHEMA];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub schema: String,
    /// Length of the trace window.
    pub wall_ns: u64,
    /// Unix time (s) at which tracing started.
    pub started_unix_s: u64,
    pub host: HostInfo,
    /// The traced command, if any, and how it ended.
    pub command: Option<CommandInfo>,
    pub cpus: Vec<CpuReport>,
    /// Every thread that ran in the window, busiest first (the idle task excluded:
    /// it is `cpus[].idle_ns`).
    pub threads: Vec<ThreadReport>,
    /// On-CPU time summed by role.
    pub by_role_ns: BTreeMap<Role, u64>,
    /// Every VM seen during the trace, with its vCPUs and VMM threads.
    pub vms: Vec<VmReport>,
    /// Events the probes could not record (a map was full); the figures above miss them.
    pub dropped_events: u64,
    /// `dropped_events` by cause (`thread_stats_full`, `ledger_full`, ...; only the
    /// causes that occurred; empty in older files).
    #[serde(default)]
    pub dropped_by_cause: BTreeMap<String, u64>,
    /// Threads that exited during the trace and were retired from the kernel maps
    /// (their totals are in `threads` like any other's).
    #[serde(default)]
    pub retired_threads: u64,
    /// How many events each probe handled.
    pub events: BTreeMap<String, u64>,
    /// Who took the time: run-queue waits charged to the threads that ran meanwhile
    /// (null in vmmtrace/1 files and with --no-ledger).
    #[serde(default)]
    pub ledger: Option<LedgerReport>,
    /// Each CPU over time, in bins of the live interval (`record` only; bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    /// Online CPUs.
    pub cpus: usize,
    pub kernel: String,
    pub features: Features,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandInfo {
    pub argv: Vec<String>,
    pub pid: u32,
    /// Exit code; null if it was killed by a signal or still running at the end.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CpuReport {
    pub cpu: u32,
    pub busy_ns: u64,
    pub idle_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ThreadReport {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub role: Role,
    /// For vCPU threads: the vCPU index.
    pub vcpu: Option<u32>,
    /// For vCPU and VMM threads: the VM's name.
    pub vm: Option<String>,
    /// Time on a CPU, from switch-in to switch-out (sum of per_cpu_ns).
    pub on_cpu_ns: u64,
    /// Indexed by CPU id.
    pub per_cpu_ns: Vec<u64>,
    pub switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    /// Run-queue wait, blocked time and their closure (null in vmmtrace/1 files, with
    /// --no-ledger, and for a thread whose state the probes never learned).
    #[serde(default)]
    pub sched: Option<SchedReport>,
}

impl Report {
    pub fn from_attribution(a: &Attribution, host: HostInfo, started_unix_s: u64) -> Report {
        Report {
            schema: SCHEMA.into(),
            wall_ns: a.wall_ns,
            started_unix_s,
            host,
            command: None,
            cpus: a.cpus.iter().map(|c| CpuReport { cpu: c.cpu, busy_ns: c.busy_ns, idle_ns: c.idle_ns }).collect(),
            threads: a
                .threads
                .iter()
                .map(|t| ThreadReport {
                    tid: t.tid,
                    pid: t.meta.pid,
                    comm: t.meta.comm.clone(),
                    role: t.meta.role,
                    vcpu: t.meta.vcpu_index,
                    vm: t.meta.vm.clone(),
                    on_cpu_ns: t.on_cpu_ns,
                    per_cpu_ns: t.per_cpu_ns.clone(),
                    switches: t.switches,
                    involuntary_switches: t.involuntary_switches,
                    migrations: t.migrations,
                    sched: None,
                })
                .collect(),
            by_role_ns: a.by_role_ns.clone(),
            vms: Vec::new(),
            dropped_events: 0,
            dropped_by_cause: BTreeMap::new(),
            retired_threads: 0,
            events: BTreeMap::new(),
            ledger: None,
            timeline: None,
        }
    }

    pub fn thread(&self, tid: u32) -> Option<&ThreadReport> {
        self.threads.iter().find(|t| t.tid == tid)
    }

    /// A thread's run-queue wait; 0 where the report has none (no ledger).
    pub fn runq_wait_ns(&self, tid: u32) -> u64 {
        self.thread(tid).and_then(|t| t.sched.as_ref()).map(|s| s.runq_wait_ns).unwrap_or(0)
    }

    /// Parses a report, refusing other schemas with a clear message.
    pub fn from_json(text: &str) -> Result<Report, ParseError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(ParseError::NotJson)?;
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(s) if READABLE_SCHEMAS.contains(&s) => serde_json::from_value(v).map_err(ParseError::Invalid),
            Some(other) => Err(ParseError::OtherSchema(other.to_string())),
            None => Err(ParseError::NoSchema),
        }
    }
}

/// Why a file is not a report this vmmtrace reads.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("not a valid vmmtrace report")]
    Invalid(#[source] serde_json::Error),
    #[error("report schema is {0}; this vmmtrace reads vmmtrace/1 and {SCHEMA} (a newer vmmtrace may read it)")]
    OtherSchema(String),
    #[error("not a vmmtrace report (no \"schema\" field)")]
    NoSchema,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        account::{
            CpuTime, ThreadMeta, ThreadTime,
            ledger::{PairReport, VictimReport},
        },
        host::Role,
    };

    /// Two threads on one CPU that took turns, with their ledger.
    fn report() -> Report {
        let thread = |tid| ThreadTime {
            tid,
            meta: ThreadMeta { pid: tid, comm: format!("t{tid}"), role: Role::Workload, vcpu_index: None, vm: None },
            on_cpu_ns: 500,
            per_cpu_ns: vec![500],
            kvm_run_ns: 0,
            guest_ns: 0,
            switches: 5,
            involuntary_switches: 5,
            migrations: 0,
            earlier: None,
        };
        let a = Attribution {
            wall_ns: 1_000,
            cpus: vec![CpuTime { cpu: 0, busy_ns: 1_000, idle_ns: 0 }],
            threads: vec![thread(7), thread(8)],
            by_role_ns: BTreeMap::from([(Role::Workload, 1_000)]),
        };
        let host = HostInfo { hostname: "h".into(), cpus: 1, kernel: "k".into(), features: Features::default() };
        let mut r = Report::from_attribution(&a, host, 0);
        let pair = PairReport {
            victim: 7,
            victim_comm: "t7".into(),
            victim_role: "workload".into(),
            thief: 8,
            thief_comm: "t8".into(),
            thief_role: "workload".into(),
            ns: 500,
            intervals: 5,
        };
        let victim = VictimReport {
            tid: 7,
            comm: "t7".into(),
            role: "workload".into(),
            runq_wait_ns: 500,
            by_thief_role_ns: BTreeMap::from([("workload".to_string(), 500)]),
        };
        r.ledger = Some(LedgerReport {
            pairs_total: 1,
            pairs: vec![pair],
            victims: vec![victim],
            unresolved_ns: BTreeMap::new(),
        });
        r
    }

    #[test]
    fn a_report_reads_back_and_says_who_took_the_time() {
        let r = report();
        let back = Report::from_json(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let text = render_text(&r, 10);
        assert!(text.contains("who took the time"), "{text}");
        assert!(text.contains("t8[8] 0.0"), "{text}");
    }

    #[test]
    fn vmmtrace_1_files_are_still_read() {
        let mut v = serde_json::to_value(report()).unwrap();
        v["schema"] = "vmmtrace/1".into();
        v.as_object_mut().unwrap().remove("ledger");
        for t in v["threads"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("sched");
        }
        let r = Report::from_json(&v.to_string()).unwrap();
        assert_eq!(r.schema, "vmmtrace/1");
        assert!(r.ledger.is_none() && r.threads.iter().all(|t| t.sched.is_none()));
        assert!(!render_text(&r, 10).contains("who took the time"));
    }

    #[test]
    fn other_schemas_are_refused() {
        assert!(Report::from_json("{\"schema\":\"vmmtrace/0\"}").unwrap_err().to_string().contains("vmmtrace/0"));
        assert!(Report::from_json("[]").unwrap_err().to_string().contains("no \"schema\""));
        assert!(Report::from_json("nope").unwrap_err().to_string().contains("not JSON"));
    }
}
