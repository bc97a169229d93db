//! Small system helpers: the BPF clock, CPU affinity.

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// sched_setaffinity(tid, cpus); false when the kernel refuses.
pub fn set_affinity(tid: u32, cpus: &[u32]) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if (c as usize) < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c as usize, &mut set);
            }
        }
        libc::sched_setaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Runs a short-lived thread on each CPU in turn, ending where it started, so that
/// every CPU switches at least once from now on.
pub fn kick_cpus(cpus: &[u32]) {
    let cpus = cpus.to_vec();
    let _ = std::thread::Builder::new()
        .name("vmmtrace-kick".into())
        .spawn(move || {
            // SAFETY: sched_getcpu has no preconditions.
            let here = unsafe { libc::sched_getcpu() };
            let mut order: Vec<u32> = cpus.iter().copied().filter(|&c| c as i32 != here).collect();
            if here >= 0 {
                order.push(here as u32);
            }
            for cpu in order {
                set_affinity(0, &[cpu]);
            }
        })
        .map(|h| h.join());
}

/// The memory page size (the unit of a BPF ring buffer's size).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}
