//! Every core busy: with no idle CPU, each job and vCPU waits for the others (the
//! study's N-jobs effect: N jobs on N cores run slower than N-1).

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Finding, Kind, Thresholds,
    words::{ms_text, pct},
};
use crate::{host::Role, report::Report};

pub fn findings(r: &Report, t: &Thresholds) -> Vec<Finding> {
    if r.cpus.is_empty() || r.wall_ns == 0 {
        return Vec::new();
    }
    let idle_pct: Vec<f64> = r.cpus.iter().map(|c| pct(c.idle_ns, r.wall_ns)).collect();
    let most_idle = idle_pct.iter().copied().fold(0.0, f64::max);
    if most_idle > t.busy_idle_pct {
        return Vec::new();
    }
    // Threads that ran more than a quarter of the trace.
    let busy_threads = r.threads.iter().filter(|th| th.on_cpu_ns * 4 > r.wall_ns).count();
    // The cost is the jobs' wait: vCPUs' wait has findings of its own.
    let waited: u64 = r.threads.iter().filter(|th| th.role == Role::Workload).map(|th| r.runq_wait_ns(th.tid)).sum();
    let summary = format!(
        "Every core was busy: no CPU was idle more than {most_idle:.1} % of the {:.1} s traced, and {busy_threads} thread{} each ran more than a quarter of it on {} CPUs{}.",
        r.wall_ns as f64 / 1e9,
        if busy_threads == 1 { "" } else { "s" },
        r.cpus.len(),
        if waited > 0 {
            format!("; the traced job's threads waited {} in all for a CPU", ms_text(waited))
        } else {
            String::new()
        }
    );
    let remedy = format!(
        "Leave a core free: run one busy job fewer than there are CPUs ({} here) beside the VMs, or keep the vCPUs' cores for them alone (isolcpus= and nohz_full= on the kernel command line, or a cgroup cpuset such as systemd's AllowedCPUs= for the host's other work).",
        r.cpus.len().saturating_sub(1).max(1)
    );
    let facts = BTreeMap::from([
        ("idle_pct".into(), json!(idle_pct)),
        ("busy_threads".into(), json!(busy_threads)),
        ("cpus".into(), json!(r.cpus.len())),
        ("runq_wait_ns".into(), json!(waited)),
    ]);
    vec![Finding { kind: Kind::EveryCoreBusy, cost_ns: waited, summary, remedy, facts }]
}
