//! [`Discovery`]: host discovery over a whole trace (a snapshot at the start, one per
//! second, one at the end, merged in a [`Registry`]), the guest time the kernel
//! accounts to vCPU threads, and what is known of each thread the probes saw.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    HostSnapshot, in_kvm_run,
    parse::comm_from_bytes,
    procfs::{clock_tick_ns, read_gtime_ticks, read_syscall},
    registry::Registry,
    roles::with_workload,
};
use tracer_common::ThreadInfo;

use crate::{account::ThreadMeta, probe::RawCounters};

/// Host discovery over the whole trace, and guest time (gtime) of vCPU threads at
/// the start and as last seen.
#[derive(Clone)]
pub struct Discovery {
    pub registry: Registry,
    gtime_start: HashMap<u32, u64>,
    gtime_last: HashMap<u32, u64>,
}

impl Discovery {
    /// The first snapshot. A failed discovery is logged and leaves the registry
    /// empty: the trace goes on, with roles from the probes' names only.
    pub fn start() -> Discovery {
        let mut d =
            Discovery { registry: Registry::default(), gtime_start: HashMap::new(), gtime_last: HashMap::new() };
        d.snapshot(&HashSet::new(), &HashSet::new());
        d.gtime_start = d.vcpu_gtimes();
        d
    }

    fn snapshot(&mut self, kvm_run_tids: &HashSet<u32>, workload_tids: &HashSet<u32>) {
        match HostSnapshot::discover(kvm_run_tids, workload_tids) {
            Ok(s) => self.registry.merge(s),
            Err(e) => log::warn!("host discovery failed: {}", crate::error::chain(&e)),
        }
    }

    /// Guest time (ticks) of every known vCPU thread still alive.
    fn vcpu_gtimes(&self) -> HashMap<u32, u64> {
        let mut out = HashMap::new();
        for vm in self.registry.vms.values() {
            for &tid in &vm.vcpus {
                if let Some(g) = read_gtime_ticks(vm.pid, tid) {
                    out.insert(tid, g);
                }
            }
        }
        out
    }

    /// vCPU threads that are inside ioctl(KVM_RUN) now (see [`in_kvm_run`]).
    pub fn vcpus_in_kvm_run(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for vm in self.registry.vms.values() {
            for &tid in &vm.vcpus {
                if read_syscall(vm.pid, tid).is_some_and(|line| in_kvm_run(&line)) {
                    out.push(tid);
                }
            }
        }
        out
    }

    /// Takes a snapshot, with what the probes know so far.
    pub fn observe(&mut self, raw: &RawCounters) {
        let kvm: HashSet<u32> = raw.vcpus.keys().copied().collect();
        self.snapshot(&kvm, &raw.workload);
        // Threads that exited keep their last reading.
        let now = self.vcpu_gtimes();
        self.gtime_last.extend(now);
    }

    /// Guest time (ns) each vCPU thread accumulated in the window, where known.
    pub fn gtime_ns(&self) -> BTreeMap<u32, u64> {
        let t = clock_tick_ns();
        self.gtime_last
            .iter()
            .map(|(tid, last)| (*tid, last.saturating_sub(self.gtime_start.get(tid).copied().unwrap_or(0)) * t))
            .collect()
    }
}

/// What is known of each thread: identity from the probes, refreshed from discovery;
/// role from discovery, the workload set and the kernel-thread flag.
pub fn thread_meta<'a>(raw: &'a RawCounters, reg: &'a Registry) -> impl Fn(u32) -> ThreadMeta + 'a {
    move |tid| {
        let workload = |pid: u32| raw.workload.contains(&tid) || raw.workload.contains(&pid);
        meta_of(reg, tid, raw.thread_info.get(&tid), workload)
    }
}

/// [`thread_meta`] of a retired thread whose tid a later thread took (from its own
/// identity, not the later thread's).
pub fn earlier_thread_meta(reg: &Registry, t: &crate::probe::retire::RetiredThread) -> ThreadMeta {
    meta_of(reg, t.tid, t.info.as_ref(), |_| t.workload)
}

fn meta_of(reg: &Registry, tid: u32, info: Option<&ThreadInfo>, workload: impl Fn(u32) -> bool) -> ThreadMeta {
    let pid = info.map(|i| i.tgid).unwrap_or(tid);
    let bpf_comm = info.map(|i| comm_from_bytes(&i.comm)).unwrap_or_default();
    let known = reg.threads.get(&tid).filter(|t| t.pid == pid);
    let comm = known.map(|t| t.comm.clone()).unwrap_or(bpf_comm);
    let (role, vcpu_index, vm) = reg.classify(tid, pid, &comm);
    let role = with_workload(role, workload(pid));
    ThreadMeta { pid, comm, role, vcpu_index, vm }
}
