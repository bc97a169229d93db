//! How findings name things: CPU lists as taskset writes them, vCPUs and threads as
//! an operator knows them, times in ms.

use crate::{
    account::kvm::VcpuReport,
    report::{Report, ms},
};

/// `0-3,6` (taskset's and cpuset's list format).
pub use crate::host::format_cpu_list as cpu_list;

/// `vCPU 0 of VM 'web'`.
pub fn vcpu_name(vm: &str, v: &VcpuReport) -> String {
    match v.index {
        Some(i) => format!("vCPU {i} of VM '{vm}'"),
        None => format!("vCPU thread {} of VM '{vm}'", v.tid),
    }
}

/// `311 ms` (one decimal below 10 ms).
pub fn ms_text(ns: u64) -> String {
    let v = ms(ns);
    if v < 10.0 { format!("{v:.1} ms") } else { format!("{v:.0} ms") }
}

/// `3.1 %`.
pub fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// A vCPU's run-queue wait and the time it was alive in the trace (the whole trace
/// where the report does not say).
pub fn vcpu_wait(r: &Report, v: &VcpuReport) -> (u64, u64) {
    let sched = r.thread(v.tid).and_then(|t| t.sched.as_ref());
    (sched.map(|s| s.runq_wait_ns).unwrap_or(0), sched.map(|s| s.alive_ns).filter(|a| *a > 0).unwrap_or(r.wall_ns))
}

/// The CPUs of a host of `n` CPUs that are not in `used`.
pub fn other_cpus(n: usize, used: &[u32]) -> Vec<u32> {
    (0..n as u32).filter(|c| !used.contains(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(other_cpus(4, &[1, 2]), [0, 3]);
        assert_eq!(ms_text(311_400_000), "311 ms");
        assert_eq!(ms_text(1_250_000), "1.2 ms");
    }
}
