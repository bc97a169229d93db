//! Retired threads: the final totals of threads that exited, carried out of the
//! kernel maps (see `tracer_common::retire` for when a thread is retired) so that
//! the maps stay bounded while the report still lists every thread that ran.
//!
//! [`Retired`] is pure: `maps.rs` fills it, [`Retired::merge_into`] adds it to every
//! snapshot, so that everything downstream (the live line, the timeline, the report)
//! sees retired threads exactly as if they were still in the maps.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracer_common::{
    ThreadCpuStats, ThreadInfo,
    kvm::{ExitStats, TidKey, VcpuState},
    ledger::{PairKey, PairStats, ThreadSched},
};

use super::RawCounters;

/// What retired threads left behind, keyed as the maps were.
#[derive(Clone, Debug, Default)]
pub struct Retired {
    pub threads: BTreeMap<u32, Vec<ThreadCpuStats>>,
    pub info: HashMap<u32, ThreadInfo>,
    pub workload: HashSet<u32>,
    pub vcpus: HashMap<u32, VcpuState>,
    pub exits: HashMap<TidKey, ExitStats>,
    pub userspace_exits: HashMap<TidKey, u64>,
    pub kvm_events: HashMap<TidKey, u64>,
    pub guest_samples: HashMap<TidKey, u64>,
    pub sched: HashMap<u32, ThreadSched>,
    pub ledger: BTreeMap<PairKey, PairStats>,
    /// Threads retired so far (a reused tid counts once per thread).
    pub count: u64,
}

/// Entries in the kernel maps at one read (before retired threads are added back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// (map name, entries, capacity), for the maps that grow with threads.
    pub maps: Vec<(&'static str, usize, u32)>,
    /// Threads that exited and are waiting for their final switch or the next tick.
    pub exited_pending: usize,
}

/// Adds each of `b`'s per-CPU counters to `a`'s.
pub fn add_thread_stats(a: &mut Vec<ThreadCpuStats>, b: &[ThreadCpuStats]) {
    if a.len() < b.len() {
        a.resize(b.len(), ThreadCpuStats::default());
    }
    for (x, y) in a.iter_mut().zip(b) {
        x.on_cpu_ns += y.on_cpu_ns;
        x.kvm_run_ns += y.kvm_run_ns;
        x.guest_ns += y.guest_ns;
        x.switches += y.switches;
        x.involuntary_switches += y.involuntary_switches;
        x.migrations += y.migrations;
    }
}

/// Adds `b`'s totals to `a` (the same tid, two threads); `a` keeps its state.
pub fn add_sched(a: &mut ThreadSched, b: &ThreadSched) {
    a.runq_wait_ns += b.runq_wait_ns;
    a.blocked_ns += b.blocked_ns;
    a.wakeups += b.wakeups;
    a.waits += b.waits;
    a.preemptions += b.preemptions;
    a.missed_switches += b.missed_switches;
    for (x, y) in a.unresolved_ns.iter_mut().zip(b.unresolved_ns) {
        *x += y;
    }
    for (x, y) in a.wait_hist.iter_mut().zip(b.wait_hist) {
        *x += y;
    }
    if a.born_ns == 0 || (b.born_ns != 0 && b.born_ns < a.born_ns) {
        a.born_ns = b.born_ns;
    }
    a.died_ns = a.died_ns.max(b.died_ns);
}

pub fn add_exit_stats(a: &mut ExitStats, b: &ExitStats) {
    a.count += b.count;
    a.completed += b.completed;
    a.latency_ns += b.latency_ns;
    for (x, y) in a.hist.iter_mut().zip(b.hist) {
        *x += y;
    }
}

pub fn add_pair(a: &mut PairStats, b: &PairStats) {
    a.ns += b.ns;
    a.intervals += b.intervals;
}

/// Adds `(key, value)` pairs into a keyed list, summing values of equal keys.
fn merge_list<V: Copy>(list: &mut Vec<(TidKey, V)>, from: &HashMap<TidKey, V>, add: impl Fn(&mut V, &V)) {
    let mut index: HashMap<TidKey, usize> = list.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    for (k, v) in from {
        match index.get(k) {
            Some(&i) => add(&mut list[i].1, v),
            None => {
                index.insert(*k, list.len());
                list.push((*k, *v));
            }
        }
    }
}

impl Retired {
    /// Adds what retired threads left to a snapshot of the maps. A tid in both (it
    /// was reused by a thread still alive) shows the sum, as one row: the report is
    /// keyed by tid. The live thread's identity and state win.
    pub fn merge_into(&self, raw: &mut RawCounters) {
        for (tid, v) in &self.threads {
            add_thread_stats(raw.threads.entry(*tid).or_default(), v);
        }
        for (tid, info) in &self.info {
            raw.thread_info.entry(*tid).or_insert(*info);
        }
        raw.workload.extend(self.workload.iter().copied());
        for (tid, v) in &self.vcpus {
            raw.vcpus.entry(*tid).or_insert(*v);
        }
        merge_list(&mut raw.exits, &self.exits, add_exit_stats);
        merge_list(&mut raw.userspace_exits, &self.userspace_exits, |a, b| *a += b);
        merge_list(&mut raw.kvm_events, &self.kvm_events, |a, b| *a += b);
        merge_list(&mut raw.guest_samples, &self.guest_samples, |a, b| *a += b);
        for (tid, s) in &self.sched {
            match raw.sched.get_mut(tid) {
                Some(live) => add_sched(live, s),
                None => {
                    raw.sched.insert(*tid, *s);
                }
            }
        }
        for (k, s) in &self.ledger {
            add_pair(raw.ledger.entry(*k).or_default(), s);
        }
        raw.retired_threads = self.count;
    }

    /// Whether `tid` was retired (for the sweep of late ledger pairs).
    pub fn has(&self, tid: u32) -> bool {
        self.threads.contains_key(&tid) || self.sched.contains_key(&tid) || self.info.contains_key(&tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(on_cpu_ns: u64) -> ThreadCpuStats {
        ThreadCpuStats { on_cpu_ns, switches: 1, ..Default::default() }
    }

    #[test]
    fn a_retired_thread_reads_as_if_it_were_still_in_the_maps() {
        let mut r = Retired::default();
        r.threads.insert(7, vec![stats(10), stats(20)]);
        r.info.insert(7, ThreadInfo { tgid: 7, flags: 0, comm: *b"short-lived\0\0\0\0\0" });
        r.workload.insert(7);
        r.exits.insert(TidKey { tid: 7, code: 1, isa: 1, _pad: 0 }, ExitStats { count: 3, ..Default::default() });
        r.ledger.insert(PairKey { victim: 8, thief: 7 }, PairStats { ns: 5, intervals: 1 });
        r.count = 1;
        let mut raw = RawCounters::default();
        raw.ledger.insert(PairKey { victim: 8, thief: 7 }, PairStats { ns: 2, intervals: 1 });
        raw.exits.push((TidKey { tid: 7, code: 1, isa: 1, _pad: 0 }, ExitStats { count: 1, ..Default::default() }));
        r.merge_into(&mut raw);
        assert_eq!(raw.threads[&7].iter().map(|s| s.on_cpu_ns).sum::<u64>(), 30);
        assert_eq!(raw.thread_info[&7].tgid, 7);
        assert!(raw.workload.contains(&7));
        assert_eq!(raw.exits.len(), 1);
        assert_eq!(raw.exits[0].1.count, 4);
        assert_eq!(raw.ledger[&PairKey { victim: 8, thief: 7 }], PairStats { ns: 7, intervals: 2 });
        assert_eq!(raw.retired_threads, 1);
    }

    #[test]
    fn a_reused_tid_sums_totals_and_keeps_the_live_state() {
        let old = ThreadSched { runq_wait_ns: 5, waits: 1, died_ns: 100, born_ns: 50, ..ThreadSched::UNSEEN };
        let mut live = ThreadSched { runq_wait_ns: 7, waits: 2, born_ns: 200, ..ThreadSched::UNSEEN };
        live.state = tracer_common::ledger::state::ON_CPU;
        let mut r = Retired::default();
        r.sched.insert(9, old);
        let mut raw = RawCounters::default();
        raw.sched.insert(9, live);
        r.merge_into(&mut raw);
        let s = raw.sched[&9];
        assert_eq!((s.runq_wait_ns, s.waits, s.state), (12, 3, tracer_common::ledger::state::ON_CPU));
        assert_eq!((s.born_ns, s.died_ns), (50, 100));
    }

    #[test]
    fn per_cpu_vectors_of_different_lengths_add_up() {
        let mut a = vec![stats(1)];
        add_thread_stats(&mut a, &[stats(2), stats(3)]);
        assert_eq!(a.iter().map(|s| s.on_cpu_ns).collect::<Vec<_>>(), [3, 3]);
        assert_eq!(a[0].switches, 2);
    }
}
