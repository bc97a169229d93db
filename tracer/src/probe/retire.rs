//! Retired threads: the final totals of threads that exited, carried out of the
//! kernel maps (see `tracer_common::retire` for when a thread is retired) so that
//! the maps stay bounded while the report still lists every thread that ran.
//!
//! [`Retired`] is pure: `maps.rs` fills it, [`Retired::merge_into`] adds it to every
//! snapshot, so that everything downstream (the live line, the timeline, the report)
//! sees retired threads exactly as if they were still in the maps.

use std::collections::{BTreeMap, HashMap};

use tracer_common::{
    ThreadCpuStats, ThreadInfo,
    kvm::{ExitStats, TidKey, VcpuState},
    ledger::{PairKey, PairStats, ThreadSched},
};

use super::RawCounters;

/// One retired thread's own entries (those keyed by its tid alone).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetiredThread {
    pub tid: u32,
    /// Per CPU.
    pub stats: Vec<ThreadCpuStats>,
    pub info: Option<ThreadInfo>,
    pub sched: Option<ThreadSched>,
    pub vcpu: Option<VcpuState>,
    /// It was a workload thread (in `WATCH`).
    pub workload: bool,
}

/// What retired threads left behind.
#[derive(Clone, Debug, Default)]
pub struct Retired {
    /// The last thread retired under each tid.
    pub threads: BTreeMap<u32, RetiredThread>,
    /// Threads retired under a tid that a later thread retired again: each keeps its
    /// own row in the report.
    pub earlier: Vec<RetiredThread>,
    /// Entries keyed by (tid, ...) and ledger pairs: summed over the threads of a tid.
    pub exits: HashMap<TidKey, ExitStats>,
    pub userspace_exits: HashMap<TidKey, u64>,
    pub kvm_events: HashMap<TidKey, u64>,
    pub guest_samples: HashMap<TidKey, u64>,
    pub ledger: BTreeMap<PairKey, PairStats>,
    /// Threads retired so far.
    pub count: u64,
    /// New threads that took a tid while userspace was deleting the old thread's
    /// entries: their first charges may have gone with them (counted with the
    /// probes' `LOST_REUSED_TID`).
    pub lost_reborn: u64,
    /// The tids retired by the last retire step (`Probes::retire_exited`): what a
    /// live snapshot adds back ([`Retired::merge_recent_into`]).
    pub recent: Vec<u32>,
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
    /// Keeps a thread just retired; an earlier one of the same tid gets a row of its own.
    pub fn add(&mut self, t: RetiredThread) {
        self.recent.push(t.tid);
        if let Some(old) = self.threads.insert(t.tid, t) {
            self.earlier.push(old);
        }
        self.count += 1;
    }

    /// Adds what retired threads left to a snapshot of the maps, so that it reads as
    /// if they were still there. A retired thread whose tid a live thread has now is
    /// not added to it (that would make the new thread inherit its counters): it goes
    /// to `earlier_threads`, a row of its own.
    pub fn merge_into(&self, raw: &mut RawCounters) {
        raw.earlier_threads = self.earlier.clone();
        for (tid, t) in &self.threads {
            if raw.threads.contains_key(tid) {
                raw.earlier_threads.push(t.clone());
                continue;
            }
            raw.threads.insert(*tid, t.stats.clone());
            if let Some(info) = t.info {
                raw.thread_info.insert(*tid, info);
            }
            if let Some(s) = t.sched {
                raw.sched.insert(*tid, s);
            }
            if let Some(v) = t.vcpu {
                raw.vcpus.insert(*tid, v);
            }
            if t.workload {
                raw.workload.insert(*tid);
            }
        }
        merge_list(&mut raw.exits, &self.exits, add_exit_stats);
        merge_list(&mut raw.userspace_exits, &self.userspace_exits, |a, b| *a += b);
        merge_list(&mut raw.kvm_events, &self.kvm_events, |a, b| *a += b);
        merge_list(&mut raw.guest_samples, &self.guest_samples, |a, b| *a += b);
        for (k, s) in &self.ledger {
            add_pair(raw.ledger.entry(*k).or_default(), s);
        }
        raw.retired_threads = self.count;
        if let Some(c) = raw.counters.get_mut(tracer_common::counter::LOST_REUSED_TID as usize) {
            *c += self.lost_reborn;
        }
    }

    /// Starts a retire step: the threads it retires are the new `recent`.
    pub fn begin_step(&mut self) {
        self.recent.clear();
    }

    /// Adds to a snapshot of the maps only the threads the last retire step retired,
    /// with their final totals: enough for per-tick deltas (the live line, the
    /// timeline), whose previous snapshot still had them alive, while the cost of a
    /// snapshot stays bounded by the threads alive, not by every thread that ever
    /// exited. A thread retired under a tid that a live thread has now is left out
    /// (its last partial tick is not in the deltas). Entries keyed by (tid, ...) and
    /// ledger pairs of retired threads are not added: the deltas taken from them
    /// (the live line's top thief) miss the last tick of a thread that exited.
    pub fn merge_recent_into(&self, raw: &mut RawCounters) {
        for t in self.recent.iter().filter_map(|tid| self.threads.get(tid)) {
            if raw.threads.contains_key(&t.tid) {
                continue;
            }
            raw.threads.insert(t.tid, t.stats.clone());
            if let Some(info) = t.info {
                raw.thread_info.insert(t.tid, info);
            }
            if let Some(v) = t.vcpu {
                raw.vcpus.insert(t.tid, v);
            }
            if t.workload {
                raw.workload.insert(t.tid);
            }
        }
        raw.retired_threads = self.count;
        if let Some(c) = raw.counters.get_mut(tracer_common::counter::LOST_REUSED_TID as usize) {
            *c += self.lost_reborn;
        }
    }

    /// Whether a thread with `tid` was retired (for the sweep of late ledger pairs).
    pub fn has(&self, tid: u32) -> bool {
        self.threads.contains_key(&tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(on_cpu_ns: u64) -> ThreadCpuStats {
        ThreadCpuStats { on_cpu_ns, switches: 1, ..Default::default() }
    }

    fn retired(tid: u32, on_cpu_ns: u64) -> RetiredThread {
        RetiredThread {
            tid,
            stats: vec![stats(on_cpu_ns), stats(0)],
            info: Some(ThreadInfo { tgid: tid, flags: 0, comm: *b"short-lived\0\0\0\0\0" }),
            sched: Some(ThreadSched { runq_wait_ns: 5, ..ThreadSched::UNSEEN }),
            vcpu: None,
            workload: true,
        }
    }

    #[test]
    fn a_retired_thread_reads_as_if_it_were_still_in_the_maps() {
        let mut r = Retired::default();
        r.add(retired(7, 30));
        r.exits.insert(TidKey { tid: 7, code: 1, isa: 1, _pad: 0 }, ExitStats { count: 3, ..Default::default() });
        r.ledger.insert(PairKey { victim: 8, thief: 7 }, PairStats { ns: 5, intervals: 1 });
        let mut raw = RawCounters::default();
        raw.ledger.insert(PairKey { victim: 8, thief: 7 }, PairStats { ns: 2, intervals: 1 });
        raw.exits.push((TidKey { tid: 7, code: 1, isa: 1, _pad: 0 }, ExitStats { count: 1, ..Default::default() }));
        r.merge_into(&mut raw);
        assert_eq!(raw.threads[&7].iter().map(|s| s.on_cpu_ns).sum::<u64>(), 30);
        assert_eq!(raw.thread_info[&7].tgid, 7);
        assert_eq!(raw.sched[&7].runq_wait_ns, 5);
        assert!(raw.workload.contains(&7));
        assert!(raw.earlier_threads.is_empty());
        assert_eq!(raw.exits.len(), 1);
        assert_eq!(raw.exits[0].1.count, 4);
        assert_eq!(raw.ledger[&PairKey { victim: 8, thief: 7 }], PairStats { ns: 7, intervals: 2 });
        assert_eq!(raw.retired_threads, 1);
    }

    #[test]
    fn a_live_thread_with_a_retired_tid_inherits_nothing() {
        let mut r = Retired::default();
        r.add(retired(9, 100));
        let mut raw = RawCounters::default();
        raw.threads.insert(9, vec![stats(1)]);
        r.merge_into(&mut raw);
        assert_eq!(raw.threads[&9][0].on_cpu_ns, 1);
        assert!(!raw.sched.contains_key(&9) && !raw.workload.contains(&9));
        assert_eq!(raw.earlier_threads, [retired(9, 100)]);
    }

    #[test]
    fn each_thread_retired_under_a_tid_keeps_its_own_totals() {
        let mut r = Retired::default();
        r.add(retired(9, 100));
        r.add(retired(9, 200));
        let mut raw = RawCounters::default();
        r.merge_into(&mut raw);
        assert_eq!(raw.threads[&9][0].on_cpu_ns, 200);
        assert_eq!(raw.earlier_threads, [retired(9, 100)]);
        assert_eq!(raw.retired_threads, 2);
    }

    #[test]
    fn a_tick_snapshot_holds_only_the_threads_the_last_step_retired() {
        let mut r = Retired::default();
        r.begin_step();
        r.add(retired(7, 100));
        r.begin_step();
        r.add(retired(8, 50));
        let mut raw = RawCounters::default();
        r.merge_recent_into(&mut raw);
        assert_eq!(raw.threads.keys().copied().collect::<Vec<_>>(), [8]);
        assert_eq!(raw.threads[&8][0].on_cpu_ns, 50);
        assert!(raw.workload.contains(&8) && raw.thread_info.contains_key(&8));
        assert_eq!(raw.retired_threads, 2);
    }

    #[test]
    fn per_tick_deltas_count_a_retired_threads_last_tick_once() {
        use crate::account::on_cpu_delta;
        let mut r = Retired::default();
        let mut before = RawCounters::default();
        before.threads.insert(7, vec![stats(60)]);
        // Step 1 retires tid 7 at 100 ns on CPU: the tick after it adds its last 40.
        r.begin_step();
        r.add(retired(7, 100));
        let mut now = RawCounters::default();
        r.merge_recent_into(&mut now);
        assert_eq!(on_cpu_delta(&before, &now), [(7, 40)]);
        // Step 2 retires nothing: tid 7 is gone and adds nothing more.
        r.begin_step();
        let mut later = RawCounters::default();
        r.merge_recent_into(&mut later);
        assert!(on_cpu_delta(&now, &later).is_empty());
    }

    #[test]
    fn per_cpu_vectors_of_different_lengths_add_up() {
        let mut a = vec![stats(1)];
        add_thread_stats(&mut a, &[stats(2), stats(3)]);
        assert_eq!(a.iter().map(|s| s.on_cpu_ns).collect::<Vec<_>>(), [3, 3]);
        assert_eq!(a[0].switches, 2);
    }
}
