//! Small system helpers (thread ids, clocks, CPU affinity, thread names), in one
//! place for the micro-VM and, later, the tracer.

/// Maps the first `len` bytes of `fd` shared and read-write: guest RAM that another
/// party maps too (a ptrace child, QEMU). The caller unmaps it with `munmap`.
pub fn map_shared(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<*mut u8> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a new mapping chosen by the kernel (address hint null) touches no memory
    // of ours; the result is checked before use.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
    };
    if ptr == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(ptr.cast()) }
}

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns (the clock of bpf_ktime_get_ns and perf timestamps).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in ns.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// The calling thread's CPU time in ns: the kernel's `sum_exec_runtime`, brought up to
/// date (task_sched_runtime), which /proc/thread-self/schedstat read by the running
/// thread would not be.
pub fn thread_cputime_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() }.max(0) as u32
}

/// Pins thread `tid` (0 = the calling thread) to `cpus`. CPUs beyond CPU_SETSIZE are
/// refused with EINVAL rather than ignored.
pub fn set_affinity(tid: u32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET is only called for c < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The process's name (`/proc/self/comm`), empty if unreadable.
pub fn process_comm() -> String {
    std::fs::read_to_string("/proc/self/comm").map(|s| s.trim_end().to_string()).unwrap_or_default()
}

/// Thread `tid`'s name in this process, empty if unreadable.
pub fn thread_comm(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).map(|s| s.trim_end().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance_and_tid_is_this_thread() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        assert!(thread_cputime_ns() > 0);
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        assert_eq!(me.file_name().unwrap().to_str().unwrap(), gettid().to_string());
    }
}
