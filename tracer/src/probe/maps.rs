//! Typed handles on the object's maps, taken once when the probes are attached, and
//! the copy of every map into [`RawCounters`].

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{
    CpuState, ThreadCpuStats, ThreadInfo, Window, counter,
    kvm::{ExitStats, TidKey, VcpuState},
    ledger::{CpuHistory, PairCache, PairKey, PairStats, ThreadSched},
    names::map,
    retire::ExitMark,
};

use super::{
    ProbeError, RawCounters,
    retire::{Occupancy, Retired, RetiredThread, add_exit_stats, add_pair},
    sched_by_tid::SchedByTid,
};

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
    exited: Keyed<u32, ExitMark>,
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
            exited: take(ebpf, map::EXITED)?,
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
        self.read_ledger_into(raw)?;
        raw.occupancy = self.occupancy(raw)?;
        Ok(())
    }

    /// How full the maps that grow with threads are, from a fresh read of them.
    fn occupancy(&self, raw: &RawCounters) -> Result<Occupancy, ProbeError> {
        let cap = |m: &MapData| m.info().map(|i| i.max_entries()).unwrap_or(0);
        let exited_pending = self.exited.keys().count();
        Ok(Occupancy {
            maps: vec![
                (map::THREAD_STATS, raw.threads.len(), cap(self.thread_stats.map())),
                (map::THREAD_INFO, raw.thread_info.len(), cap(self.thread_info.map())),
                (map::THREAD_SCHED, raw.sched.len(), cap(self.thread_sched.map())),
                (map::WATCH, raw.workload.len(), cap(self.watch.map())),
                (map::VCPU_STATE, raw.vcpus.len(), cap(self.vcpu_state.map())),
                (map::VCPU_EXITS, raw.exits.len(), cap(self.vcpu_exits.map())),
                (map::USERSPACE_EXITS, raw.userspace_exits.len(), cap(self.userspace_exits.map())),
                (map::KVM_EVENTS, raw.kvm_events.len(), cap(self.kvm_events.map())),
                (map::GUEST_SAMPLES, raw.guest_samples.len(), cap(self.guest_samples.map())),
                (map::LEDGER, self.ledger.keys().count(), cap(self.ledger.map())),
                (map::EXITED, exited_pending, cap(self.exited.map())),
            ],
            exited_pending,
        })
    }

    /// Retires the threads whose final switch was seen: carries every entry keyed by
    /// their tid into `into` and deletes it from the kernel maps; also moves the
    /// ledger pairs of threads retired earlier that a late wait charged since (a dead
    /// thief stays in the CPUs' interval histories for a while). Returns how many
    /// threads were retired.
    pub(super) fn retire(&mut self, into: &mut Retired) -> Result<u64, ProbeError> {
        let marked: Vec<(u32, ExitMark)> =
            entries(&self.exited, map::EXITED)?.into_iter().filter(|(_, m)| m.is_final() && m.retiring == 0).collect();
        let mut tids = HashSet::new();
        let before = into.count;
        into.begin_step();
        for (tid, mark) in marked {
            self.retire_thread(tid, mark, into)?;
            tids.insert(tid);
        }
        carry_tid_keyed(&mut self.vcpu_exits, map::VCPU_EXITS, &tids, &mut into.exits, add_exit_stats)?;
        carry_tid_keyed(&mut self.userspace_exits, map::USERSPACE_EXITS, &tids, &mut into.userspace_exits, |a, b| {
            *a += b
        })?;
        carry_tid_keyed(&mut self.kvm_events, map::KVM_EVENTS, &tids, &mut into.kvm_events, |a, b| *a += b)?;
        carry_tid_keyed(&mut self.guest_samples, map::GUEST_SAMPLES, &tids, &mut into.guest_samples, |a, b| *a += b)?;
        self.carry_ledger(&tids, into)?;
        Ok(into.count - before)
    }

    /// Reads the entries keyed by `tid` alone, marks the thread as retiring, deletes
    /// its entries, then its mark (the protocol and its races:
    /// `tracer_common::retire`). None when a new thread took the tid before it was
    /// marked retiring: its fork wiped the old entries (and counted them lost), and
    /// what was read may be the new thread's, so it is dropped and left alone.
    fn retire_thread(&mut self, tid: u32, mark: ExitMark, into: &mut Retired) -> Result<(), ProbeError> {
        let t = RetiredThread {
            tid,
            stats: absent_ok(self.thread_stats.get(&tid, 0), map::THREAD_STATS)?
                .map(|v| v.to_vec())
                .unwrap_or_default(),
            info: absent_ok(self.thread_info.get(&tid, 0), map::THREAD_INFO)?,
            sched: match self.thread_sched_by_tid.get(tid) {
                Some(t) => Some(t),
                None => absent_ok(self.thread_sched.get(&tid, 0), map::THREAD_SCHED)?,
            },
            vcpu: absent_ok(self.vcpu_state.get(&tid, 0), map::VCPU_STATE)?,
            workload: absent_ok(self.watch.get(&tid, 0), map::WATCH)?.is_some(),
        };
        const BPF_EXIST: u64 = 2;
        if self.exited.insert(tid, ExitMark { retiring: 1, ..mark }, BPF_EXIST).is_err() {
            return Ok(());
        }
        // Absent entries fail to delete: nothing to do for them.
        let _ = self.thread_stats.remove(&tid);
        let _ = self.thread_info.remove(&tid);
        let _ = self.thread_sched.remove(&tid);
        self.thread_sched_by_tid.forget(tid);
        let _ = self.vcpu_state.remove(&tid);
        let _ = self.watch.remove(&tid);
        if lookup_and_delete(&self.exited, &tid, map::EXITED)?.is_some_and(|m| m.reborn != 0) {
            into.lost_reborn += 1;
        }
        into.add(t);
        Ok(())
    }

    /// Moves the ledger pairs whose victim or thief is retired (now or before, and
    /// not alive again under the same tid) out of the map.
    fn carry_ledger(&mut self, now: &HashSet<u32>, into: &mut Retired) -> Result<(), ProbeError> {
        let alive: HashSet<u32> =
            self.thread_stats.keys().collect::<Result<_, _>>().map_err(map_err(map::THREAD_STATS))?;
        let retired = |tid: u32| now.contains(&tid) || (into.has(tid) && !alive.contains(&tid));
        let keys: Vec<PairKey> = self.ledger.keys().collect::<Result<_, _>>().map_err(map_err(map::LEDGER))?;
        let keys: Vec<PairKey> = keys.into_iter().filter(|k| retired(k.victim) || retired(k.thief)).collect();
        for key in keys {
            if let Some(stats) = lookup_and_delete(&self.ledger, &key, map::LEDGER)? {
                add_pair(into.ledger.entry(key).or_default(), &stats);
            }
        }
        Ok(())
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

/// `Ok(None)` for a key that is not in the map.
fn absent_ok<V>(r: Result<V, MapError>, name: &'static str) -> Result<Option<V>, ProbeError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(ProbeError::Map { name, source }),
    }
}

/// Moves the entries of a map keyed by (tid, ...) whose tid is in `tids` into `into`.
fn carry_tid_keyed<V: aya::Pod>(
    m: &mut Keyed<TidKey, V>,
    name: &'static str,
    tids: &HashSet<u32>,
    into: &mut std::collections::HashMap<TidKey, V>,
    add: impl Fn(&mut V, &V),
) -> Result<(), ProbeError> {
    if tids.is_empty() {
        return Ok(());
    }
    let keys: Vec<TidKey> = m.keys().collect::<Result<_, _>>().map_err(map_err(name))?;
    for key in keys.into_iter().filter(|k| tids.contains(&k.tid)) {
        if let Some(v) = take_entry_by(m, &key, name)? {
            match into.get_mut(&key) {
                Some(old) => add(old, &v),
                None => {
                    into.insert(key, v);
                }
            }
        }
    }
    Ok(())
}

fn take_entry_by<K: aya::Pod, V: aya::Pod>(
    m: &mut Keyed<K, V>,
    key: &K,
    name: &'static str,
) -> Result<Option<V>, ProbeError> {
    let v = absent_ok(m.get(key, 0), name)?;
    if v.is_some() {
        m.remove(key).map_err(map_err(name))?;
    }
    Ok(v)
}

/// Reads and deletes an entry in one step (BPF_MAP_LOOKUP_AND_DELETE_ELEM; hash maps
/// since kernel 5.14), so that what the probes add to it meanwhile is not deleted
/// unread. aya 0.14 offers it for queues and stacks only.
fn lookup_and_delete<K: aya::Pod, V: aya::Pod + Default>(
    m: &Keyed<K, V>,
    key: &K,
    name: &'static str,
) -> Result<Option<V>, ProbeError> {
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let mut value = V::default();
    let attr = UpdateAttr {
        map_fd: m.map().fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: &mut value as *mut V as u64,
        flags: 0,
    };
    // SAFETY: bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM) reads the key and writes one value
    // of the map's value size (V, checked when aya opened the map) into `value`; all
    // alive on this stack.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &attr as *const UpdateAttr,
            size_of::<UpdateAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(None),
        _ => Err(ProbeError::Map {
            name,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_and_delete_elem",
                io_error: e,
            }),
        }),
    }
}

/// `union bpf_attr` as BPF_MAP_UPDATE_ELEM and BPF_MAP_LOOKUP_AND_DELETE_ELEM read it.
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
