//! A job's interval as the trace tells it: named parts of its wall time, from the
//! run's record report. A job's processes run one after the other (bzip2 compresses,
//! then decompresses) and exist only inside the job's stopwatch interval, so the sum
//! of their threads' figures over the whole trace window is the account of that
//! interval.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::Report;

/// The parts of the wall time of the job made of processes `pids`: `on_cpu` (for
/// now; the run-queue wait by thief and the blocked time join it with the ledger).
pub fn job_parts(report: &Report, pids: &[u32]) -> BTreeMap<String, u64> {
    let pids: BTreeSet<u32> = pids.iter().copied().collect();
    let on_cpu: u64 = report.threads.iter().filter(|t| pids.contains(&t.pid)).map(|t| t.on_cpu_ns).sum();
    [("on_cpu".to_string(), on_cpu)].into_iter().collect()
}
