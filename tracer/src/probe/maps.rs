//! Typed handles on the object's maps, taken once when the probes are attached, and
//! the copy of every map into [`RawCounters`].

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{
    CpuState, ThreadCpuStats, ThreadInfo, Window, counter,
    kvm::{ExitStats, TidKey, VcpuState},
    ledger::{CpuHistory, PairCache, PairKey, PairStats, ThreadSched},
    names::map,
};

use super::{ProbeError, RawCounters, sched_by_tid::SchedByTid};

type Keyed<K, V> = HashMap<MapData, K, V>;

/// Every map userspace reads or writes.
pub(super) struct Maps {
    config: Array<MapData, Window>,
    cpu_state: PerCpuArray<MapData, CpuState>,
    thread_stats: PerCpuHashMap<MapData, u32, ThreadCpuStats>,
    thread_info: Keyed<u32, ThreadInfo>,
    watch: Keyed<u32, u32>,
    vcpu_state: Keyed<u32, VcpuState>,
    vcpu_exits: Keyed<TidKey, ExitStats>,
    userspace_exits: Keyed<TidKey, u64>,
    kvm_events: Keyed<TidKey, u64>,
    guest_samples: Keyed<TidKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    thread_sched: Keyed<u32, ThreadSched>,
    thread_sched_by_tid: SchedByTid,
    cpu_history: Array<MapData, CpuHistory>,
    ledger: Keyed<PairKey, PairStats>,
    pair_cache: PerCpuArray<MapData, PairCache>,
    /// Until the timeline's reader takes it.
    timeline: Option<RingBuf<MapData>>,
}

fn take<M: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbeError> {
    let m = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    M::try_from(m).map_err(|source| ProbeError::Map { name, source })
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> ProbeError {
    move |source| ProbeError::Map { name, source }
}

/// Every entry of a hash map.
fn entries<K: aya::Pod, V: aya::Pod>(m: &Keyed<K, V>, name: &'static str) -> Result<Vec<(K, V)>, ProbeError> {
    m.iter().collect::<Result<Vec<_>, _>>().map_err(map_err(name))
}

impl Maps {
    /// Takes the maps out of the loaded object (after its programs are loaded: they
    /// hold the maps' fds from then on).
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Maps, ProbeError> {
        Ok(Maps {
            config: take(ebpf, map::CONFIG)?,
            cpu_state: take(ebpf, map::CPU_STATE)?,
            thread_stats: take(ebpf, map::THREAD_STATS)?,
            thread_info: take(ebpf, map::THREAD_INFO)?,
            watch: take(ebpf, map::WATCH)?,
            vcpu_state: take(ebpf, map::VCPU_STATE)?,
            vcpu_exits: take(ebpf, map::VCPU_EXITS)?,
            userspace_exits: take(ebpf, map::USERSPACE_EXITS)?,
            kvm_events: take(ebpf, map::KVM_EVENTS)?,
            guest_samples: take(ebpf, map::GUEST_SAMPLES)?,
            counters: take(ebpf, map::COUNTERS)?,
            thread_sched: take(ebpf, map::THREAD_SCHED)?,
            thread_sched_by_tid: SchedByTid::take(ebpf)?,
            cpu_history: take(ebpf, map::CPU_HISTORY)?,
            ledger: take(ebpf, map::LEDGER)?,
            pair_cache: take(ebpf, map::PAIR_CACHE)?,
            timeline: Some(take(ebpf, map::TIMELINE)?),
        })
    }

    pub(super) fn set_window(&mut self, w: Window) -> Result<(), ProbeError> {
        self.config.set(0, w, 0).map_err(map_err(map::CONFIG))
    }

    pub(super) fn take_timeline(&mut self) -> Option<RingBuf<MapData>> {
        self.timeline.take()
    }

    /// Gives each of `tids` a KVM state inside KVM_RUN, unless it has one.
    pub(super) fn mark_in_kvm_run(&mut self, tids: &[u32]) {
        for &tid in tids {
            let mut v = VcpuState::default();
            v.on_run_enter();
            // BPF_NOEXIST: a thread the probes already saw keeps its state (the
            // insert then fails with EEXIST, which is the point).
            let _ = self.vcpu_state.insert(tid, v, 1);
        }
    }

    /// Marks each of `tids` as workload (a process already running that the user asked
    /// to watch); what they fork from now on is marked by the probes. Returns how many
    /// could not be marked (the map is full).
    pub(super) fn watch(&mut self, tids: &[u32]) -> usize {
        tids.iter().filter(|&&tid| self.watch.insert(tid, 1, 0).is_err()).count()
    }

    /// (map name, entries it can hold) of every hash map the probes grow per thread,
    /// VM or pair: what map occupancy is measured against.
    pub(super) fn capacities(&self) -> Vec<(&'static str, u32)> {
        let cap = |name: &'static str, m: &MapData| m.info().ok().map(|i| (name, i.max_entries()));
        [
            cap(map::THREAD_STATS, self.thread_stats.map()),
            cap(map::THREAD_INFO, self.thread_info.map()),
            cap(map::WATCH, self.watch.map()),
            cap(map::VCPU_STATE, self.vcpu_state.map()),
            cap(map::VCPU_EXITS, self.vcpu_exits.map()),
            cap(map::USERSPACE_EXITS, self.userspace_exits.map()),
            cap(map::KVM_EVENTS, self.kvm_events.map()),
            cap(map::GUEST_SAMPLES, self.guest_samples.map()),
            cap(map::THREAD_SCHED, self.thread_sched.map()),
            cap(map::LEDGER, self.ledger.map()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The fd of the WATCH map, for [`watch_self_raw`].
    pub(super) fn watch_fd(&self) -> RawFd {
        self.watch.map().fd().as_fd().as_raw_fd()
    }

    /// Copies only what host discovery needs into `raw`: the threads seen in
    /// KVM_RUN and the workload threads (a few entries, where every map may be
    /// tens of thousands).
    pub(super) fn read_discovery_inputs(&self, raw: &mut RawCounters) -> Result<(), ProbeError> {
        for tid in self.watch.keys() {
            raw.workload.insert(tid.map_err(map_err(map::WATCH))?);
        }
        raw.vcpus = entries(&self.vcpu_state, map::VCPU_STATE)?.into_iter().collect();
        Ok(())
    }

    /// Copies every map into `raw`.
    pub(super) fn read_into(&self, raw: &mut RawCounters) -> Result<(), ProbeError> {
        raw.cpus = self.cpu_state.get(&0, 0).map_err(map_err(map::CPU_STATE))?.to_vec();
        for item in self.thread_stats.iter() {
            let (tid, per_cpu) = item.map_err(map_err(map::THREAD_STATS))?;
            raw.threads.insert(tid, per_cpu.to_vec());
        }
        raw.thread_info = entries(&self.thread_info, map::THREAD_INFO)?.into_iter().collect();
        for tid in self.watch.keys() {
            raw.workload.insert(tid.map_err(map_err(map::WATCH))?);
        }
        for i in 0..counter::COUNT {
            raw.counters.push(self.counters.get(&i, 0).map_err(map_err(map::COUNTERS))?.iter().sum());
        }
        raw.vcpus = entries(&self.vcpu_state, map::VCPU_STATE)?.into_iter().collect();
        raw.exits = entries(&self.vcpu_exits, map::VCPU_EXITS)?;
        raw.userspace_exits = entries(&self.userspace_exits, map::USERSPACE_EXITS)?;
        raw.kvm_events = entries(&self.kvm_events, map::KVM_EVENTS)?;
        raw.guest_samples = entries(&self.guest_samples, map::GUEST_SAMPLES)?;
        self.read_ledger_into(raw)
    }

    /// The run-queue states, the CPUs' interval histories and the ledger, with the
    /// pairs still in the CPUs' caches added in (all empty without the ledger).
    fn read_ledger_into(&self, raw: &mut RawCounters) -> Result<(), ProbeError> {
        raw.sched = entries(&self.thread_sched, map::THREAD_SCHED)?.into_iter().collect();
        raw.sched.extend(self.thread_sched_by_tid.entries());
        raw.cpu_history = (0..self.cpu_history.len())
            .map(|cpu| self.cpu_history.get(&cpu, 0))
            .collect::<Result<_, _>>()
            .map_err(map_err(map::CPU_HISTORY))?;
        raw.ledger = entries(&self.ledger, map::LEDGER)?.into_iter().collect();
        for cache in self.pair_cache.get(&0, 0).map_err(map_err(map::PAIR_CACHE))?.iter() {
            for (key, stats) in cache.pairs() {
                let p = raw.ledger.entry(key).or_default();
                p.ns += stats.ns;
                p.intervals += stats.intervals;
            }
        }
        Ok(())
    }
}

/// `union bpf_attr` as BPF_MAP_UPDATE_ELEM reads it.
#[repr(C)]
struct UpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const _: () = assert!(size_of::<UpdateAttr>() == 32);

/// Inserts the calling process's pid into the WATCH map whose fd is `map_fd`, with
/// nothing but raw syscalls: safe to call between fork and exec.
pub fn watch_self_raw(map_fd: RawFd) -> std::io::Result<()> {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    // SAFETY: getpid has no preconditions.
    let key: u32 = unsafe { libc::getpid() } as u32;
    let value: u32 = 1;
    let attr = UpdateAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: bpf(BPF_MAP_UPDATE_ELEM) reads `attr` and the key/value it points to,
    // all alive on this stack for the duration of the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, &attr as *const UpdateAttr, size_of::<UpdateAttr>())
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
