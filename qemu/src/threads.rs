//! QEMU's threads: what each one is (vCPU, main loop, RCU, iothread, ...), pinning, and
//! what /proc says about them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::qmp::{IoThread, VcpuThread};

/// What a thread of the QEMU process does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadRole {
    /// Runs a vCPU (`CPU n/KVM`, found with QMP `query-cpus-fast`).
    Vcpu,
    /// The main thread: QEMU's main loop (device emulation, timers, QMP, bottom halves).
    MainLoop,
    /// The `call_rcu` thread (QEMU's RCU reclamation).
    Rcu,
    /// An iothread event loop: `-object iothread` (QMP `query-iothreads`) or QEMU's own
    /// (`IO mon_iothread` serves QMP); named `IO <id>`.
    IoThread,
    /// KVM's `kvm-nx-lpage-recovery` worker, a kernel task in QEMU's thread group since Linux 6.13.
    KvmNxLpageRecovery,
    /// A thread-pool worker (`worker`), started on demand for blocking I/O.
    Worker,
    Other,
}

/// One thread of QEMU as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSample {
    pub tid: u32,
    pub comm: String,
    /// Field 22 of stat: when the thread started, in clock ticks after boot.
    pub start_ticks: u64,
}

/// A thread's role and, for vCPUs and iothreads, which one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub tid: u32,
    pub role: ThreadRole,
    pub vcpu: Option<u32>,
    pub iothread: Option<String>,
}

/// Roles of QEMU's threads. vCPUs and iothreads come from QMP; the main loop is the
/// thread with tid == pid. The RCU thread is named `call_rcu` only if it started after
/// QEMU parsed `debug-threads=on`; QEMU creates it first of all (in a constructor, before
/// main), and it often still carries the process name: then it is the earliest-started
/// other thread with the process's name.
pub fn classify(pid: u32, threads: &[ThreadSample], vcpus: &[VcpuThread], iothreads: &[IoThread]) -> Vec<Classified> {
    let main_comm = threads.iter().find(|t| t.tid == pid).map(|t| t.comm.as_str());
    let vcpu_of: HashMap<u32, u32> = vcpus.iter().map(|v| (v.tid, v.index)).collect();
    let io_of: HashMap<u32, &str> = iothreads.iter().map(|t| (t.tid, t.id.as_str())).collect();
    let named_rcu = threads.iter().any(|t| t.comm == "call_rcu");
    let unnamed_rcu = threads
        .iter()
        .filter(|t| !named_rcu && t.tid != pid && Some(t.comm.as_str()) == main_comm)
        .filter(|t| !vcpu_of.contains_key(&t.tid) && !io_of.contains_key(&t.tid))
        .min_by_key(|t| (t.start_ticks, t.tid))
        .map(|t| t.tid);
    threads
        .iter()
        .map(|t| {
            let mut c = Classified { tid: t.tid, role: ThreadRole::Other, vcpu: None, iothread: None };
            if let Some(&index) = vcpu_of.get(&t.tid) {
                c.role = ThreadRole::Vcpu;
                c.vcpu = Some(index);
            } else if let Some(id) = io_of.get(&t.tid).copied().or_else(|| t.comm.strip_prefix("IO ")) {
                // QMP lists the user's iothreads; QEMU's own (the QMP monitor's
                // `IO mon_iothread`) are known by their name.
                c.role = ThreadRole::IoThread;
                c.iothread = Some(id.to_string());
            } else if t.tid == pid {
                c.role = ThreadRole::MainLoop;
            } else if t.comm == "call_rcu" || Some(t.tid) == unnamed_rcu {
                c.role = ThreadRole::Rcu;
            } else if t.comm.starts_with("kvm-nx-lpage") {
                c.role = ThreadRole::KvmNxLpageRecovery;
            } else if t.comm == "worker" {
                c.role = ThreadRole::Worker;
            }
            c
        })
        .collect()
}

/// The threads of process `pid` (those that exit meanwhile are left out).
pub fn list_threads(pid: u32) -> Result<Vec<ThreadSample>, Error> {
    let dir = format!("/proc/{pid}/task");
    let entries =
        std::fs::read_dir(&dir).map_err(|source| Error::Io { what: "read", path: dir.clone().into(), source })?;
    let mut out: Vec<ThreadSample> = entries
        .flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, start_ticks) = parse_stat_comm_start(&stat)?;
            Some(ThreadSample { tid, comm, start_ticks })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    Ok(out)
}

/// comm and start time (field 22) from a stat line; comm may hold spaces and parentheses.
fn parse_stat_comm_start(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let start = stat.get(close + 1..)?.split_whitespace().nth(19)?.parse().ok()?;
    Some((comm, start))
}

/// (on-CPU ns, run-queue wait ns) from /proc/<pid>/task/<tid>/schedstat.
pub fn schedstat(pid: u32, tid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let mut it = s.split_whitespace().map(|n| n.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// The CPUs a thread may run on (`Cpus_allowed_list`).
pub fn affinity(pid: u32, tid: u32) -> Option<Vec<usize>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let list = s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    microvm::cli::parse_cpu_list(list.trim()).ok().map(|l| l.0)
}

/// Pins thread `tid` to `cpus`.
pub fn pin(what: &str, tid: u32, cpus: &[usize]) -> Result<(), Error> {
    microvm::sys::set_affinity(tid, cpus).map_err(|source| Error::Pin {
        what: what.into(),
        tid,
        cpus: cpus.to_vec(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tid: u32, comm: &str, start: u64) -> ThreadSample {
        ThreadSample { tid, comm: comm.into(), start_ticks: start }
    }

    fn roles(c: &[Classified]) -> Vec<(u32, ThreadRole)> {
        c.iter().map(|c| (c.tid, c.role)).collect()
    }

    #[test]
    fn qemu_threads_with_named_rcu() {
        let threads = [
            t(100, "qemu-system-x86", 5),
            t(101, "call_rcu", 5),
            t(102, "IO iothread0", 6),
            t(103, "CPU 0/KVM", 6),
            t(104, "CPU 1/KVM", 6),
            t(105, "kvm-nx-lpage-re", 7),
            t(106, "worker", 9),
            t(107, "IO mon_iothread", 6),
        ];
        let vcpus = [VcpuThread { index: 0, tid: 103 }, VcpuThread { index: 1, tid: 104 }];
        let io = [IoThread { id: "iothread0".into(), tid: 102 }];
        let c = classify(100, &threads, &vcpus, &io);
        use ThreadRole as R;
        assert_eq!(
            roles(&c),
            [
                (100, R::MainLoop),
                (101, R::Rcu),
                (102, R::IoThread),
                (103, R::Vcpu),
                (104, R::Vcpu),
                (105, R::KvmNxLpageRecovery),
                (106, R::Worker),
                (107, R::IoThread),
            ]
        );
        assert_eq!(c[4].vcpu, Some(1));
        assert_eq!(c[2].iothread.as_deref(), Some("iothread0"));
    }

    #[test]
    fn unnamed_rcu_thread_is_the_first_one_started() {
        // debug-threads=on was parsed after the RCU thread had started: it kept the
        // process name. A later thread also named like the process is not the RCU thread.
        let threads = [t(200, "qemu-system-x86", 5), t(201, "qemu-system-x86", 5), t(203, "qemu-system-x86", 8)];
        let c = classify(200, &threads, &[VcpuThread { index: 0, tid: 203 }], &[]);
        assert_eq!(roles(&c), [(200, ThreadRole::MainLoop), (201, ThreadRole::Rcu), (203, ThreadRole::Vcpu)]);
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let stat = "4242 (CPU 0/KVM) S 1 4240 4240 0 -1 4194624 0 0 0 0 10 5 0 0 20 0 5 0 123456 0 0";
        assert_eq!(parse_stat_comm_start(stat), Some(("CPU 0/KVM".into(), 123456)));
        assert_eq!(parse_stat_comm_start("1 (a) b) S"), None);
    }
}
