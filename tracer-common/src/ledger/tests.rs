use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::{CpuState, NO_TID};

const W: Window = Window { start_ns: 1_000, stop_ns: 0, flags: 0 };

fn history(intervals: &[(u32, u64)], curr: (u32, u64)) -> CpuHistory {
    let mut h = CpuHistory::default();
    let mut prev = None;
    for &(tid, start) in intervals.iter().chain(std::iter::once(&curr)) {
        match prev {
            None => h.curr_since_ns = start,
            Some(p) => {
                h.switch(p, tid, start);
            }
        }
        h.curr_tid = tid;
        prev = Some(tid);
    }
    h
}

fn walk(h: &CpuHistory, from: u64, to: u64, w: &Window) -> (BTreeMap<u32, u64>, u64) {
    let mut got = BTreeMap::new();
    let un = h.walk(from, to, w, |t, ns| *got.entry(t).or_insert(0) += ns);
    (got, un)
}

#[test]
fn a_wait_is_charged_to_whoever_ran_meanwhile() {
    // 7 ran 1000..2000, idle 2000..2500, 8 2500..4000, 9 since 4000.
    let h = history(&[(7, 1_000), (0, 2_000), (8, 2_500)], (9, 4_000));
    let (got, un) = walk(&h, 1_500, 4_200, &W);
    assert_eq!(got, BTreeMap::from([(7, 500), (0, 500), (8, 1_500), (9, 200)]));
    assert_eq!(un, 0);
}

#[test]
fn a_wait_longer_than_the_history_leaves_the_rest_unresolved() {
    let mut h = CpuHistory { curr_tid: 1, curr_since_ns: 2_000, ..Default::default() };
    for i in 0..(HISTORY_LEN as u64 + 5) {
        h.switch(1 + (i % 2) as u32, 2 - (i % 2) as u32, 2_000 + 100 * (i + 1));
    }
    let now = 2_000 + 100 * (HISTORY_LEN as u64 + 5);
    let (got, un) = walk(&h, 1_500, now, &W);
    let charged: u64 = got.values().sum();
    assert_eq!(charged, 100 * HISTORY_LEN as u64);
    assert_eq!(charged + un, now - 1_500);
}

#[test]
fn only_the_window_is_charged() {
    let h = history(&[(7, 0), (8, 800)], (9, 1_200));
    let w = Window { start_ns: 1_000, stop_ns: 1_500, flags: 0 };
    let (got, un) = walk(&h, 500, 3_000, &w);
    assert_eq!(got, BTreeMap::from([(8, 200), (9, 300)]));
    assert_eq!(un, 0);
    assert_eq!(walk(&h, 500, 900, &w).0, BTreeMap::new());
    assert_eq!(walk(&h, 500, 900, &Window::default()), (BTreeMap::new(), 0));
}

#[test]
fn before_a_cpus_first_switch_nobody_is_known() {
    let h = CpuHistory::default();
    assert_eq!(walk(&h, 1_200, 1_700, &W), (BTreeMap::new(), 500));
    // After it, prev owns the time since before the probes.
    let mut h = CpuHistory::default();
    h.switch(4, 5, 3_000);
    assert_eq!(walk(&h, 1_200, 3_100, &W), (BTreeMap::from([(4, 1_800), (5, 100)]), 0));
}

#[test]
fn how_a_thread_leaves_the_cpu() {
    assert_eq!(switch_out_btf(true, 1), SwitchOut::Runnable);
    assert_eq!(switch_out_btf(false, 0), SwitchOut::Runnable);
    assert_eq!(switch_out_btf(false, 1), SwitchOut::Blocked);
    assert_eq!(switch_out_btf(false, 2), SwitchOut::Blocked);
    assert_eq!(switch_out_btf(false, TASK_DEAD), SwitchOut::Dead);
    assert_eq!(switch_out_classic(crate::TASK_REPORT_MAX), SwitchOut::Runnable);
    assert_eq!(switch_out_classic(0), SwitchOut::Runnable);
    assert_eq!(switch_out_classic(1), SwitchOut::Blocked);
    assert_eq!(switch_out_classic(0x10), SwitchOut::Dead);
    assert_eq!(switch_out_classic(0x20), SwitchOut::Dead);
    assert_eq!(switch_out_classic(0x80), SwitchOut::Blocked); // "I": idle kthread
}

#[test]
fn threads_first_seen_mid_trace_were_blocked_or_waiting_since_the_start() {
    let mut t = ThreadSched::default();
    assert!(t.on_wakeup(3_000, &W));
    assert_eq!(t.blocked_ns, 2_000);
    let mut u = ThreadSched::default();
    assert_eq!(u.on_switch_in(2_500, 0, &W), Some(0));
    assert_eq!(u.runq_wait_ns, 1_500);
    // A wakeup of a running or already woken thread changes nothing.
    assert!(!u.on_wakeup(2_600, &W));
    assert!(!t.on_wakeup(3_100, &W));
    assert_eq!((t.wakeups, u.wakeups), (1, 0));
}

#[test]
fn a_migration_hands_the_wait_on_the_old_cpu_back() {
    let mut t = ThreadSched::default();
    t.on_switch_out(2_000, 1, SwitchOut::Runnable, 0, &W);
    assert_eq!(t.on_migrate(2_300, 0), Some((1, 2_000)));
    assert_eq!(t.on_switch_in(2_600, 0, &W), Some(2_300));
    assert_eq!(t.runq_wait_ns, 600);
    // A blocked thread moved by its wakeup has no wait to hand back.
    t.on_switch_out(3_000, 0, SwitchOut::Blocked, 0, &W);
    assert_eq!(t.on_migrate(3_500, 1), None);
    assert!(t.on_wakeup(3_500, &W));
    assert_eq!(t.on_switch_in(3_700, 1, &W), Some(3_500));
    // Switched in where the probes did not see it queued: unresolved.
    t.on_switch_out(4_000, 1, SwitchOut::Runnable, 0, &W);
    assert_eq!(t.on_switch_in(4_400, 0, &W), None);
    assert_eq!(t.unresolved_ns[unresolved::CPU_UNKNOWN], 400);
    assert_eq!(t.runq_wait_ns, 600 + 200 + 400);
    assert_eq!(t.blocked_ns, 500);
}

#[test]
fn a_wakeup_inferred_from_the_kernels_accounts_splits_blocked_and_waiting() {
    let mut t = ThreadSched::default();
    t.on_switch_out(2_000, 0, SwitchOut::Blocked, 0, &W);
    t.run_delay_ns = 50;
    // Switched in at 5_000 after 300 ns on this run queue and 200 on another one.
    t.on_inferred_wakeup(5_000, 1, 300, 250, &W);
    assert_eq!(t.on_switch_in(5_000, 1, &W), Some(4_700));
    assert_eq!((t.blocked_ns, t.runq_wait_ns, t.wakeups), (2_500, 500, 1));
    assert_eq!(t.unresolved_ns[unresolved::MIGRATED], 200);
    // Never woken before it blocked, whatever the accounts say; unknown run_delay at
    // the block: only the wait here counts.
    t.on_switch_out(6_000, 1, SwitchOut::Blocked, 0, &W);
    t.run_delay_ns = NO_RUN_DELAY;
    t.on_inferred_wakeup(6_100, 1, 400, 9_999, &W);
    assert_eq!(t.on_switch_in(6_100, 1, &W), Some(6_000));
    assert_eq!((t.blocked_ns, t.runq_wait_ns, t.wakeups), (2_500, 600, 2));
}

#[test]
fn waits_fill_the_histogram() {
    let mut t = ThreadSched::default();
    t.on_switch_out(2_000, 0, SwitchOut::Runnable, 0, &W);
    t.on_switch_in(2_100, 0, &W);
    t.on_switch_out(3_000, 0, SwitchOut::Runnable, 0, &W);
    t.on_switch_in(4_000, 0, &W);
    assert_eq!(t.waits, 2);
    assert_eq!(t.wait_hist[log2_bucket(100)], 1);
    assert_eq!(t.wait_hist[log2_bucket(1_000)], 1);
    assert_eq!(t.preemptions, 2);
}

#[test]
fn death_ends_the_time_alive() {
    let w = Window { start_ns: 1_000, stop_ns: 9_000, flags: 0 };
    let mut t = ThreadSched::UNSEEN;
    t.start_new(2_000);
    t.on_switch_in(2_500, 0, &w);
    t.on_switch_out(4_000, 0, SwitchOut::Dead, 0, &w);
    let t = t.closed_at_stop(&w);
    assert_eq!(t.alive_ns(&w), 2_000);
    assert_eq!((t.runq_wait_ns, t.blocked_ns), (500, 0));
}

/// xorshift64: deterministic pseudo-random numbers for the scheduler below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Copy, Clone, PartialEq, Debug)]
enum Truth {
    Running(usize),
    Runnable(usize),
    Blocked,
}

/// A random scheduler over `ncpu` CPUs and a few threads (some already running,
/// waiting or blocked before the trace), driving the state machines exactly as the
/// probes do, next to the truth it keeps itself.
struct Sim {
    w: Window,
    now: u64,
    rng: Rng,
    truth: Vec<Truth>,
    cpus: Vec<(CpuState, CpuHistory, u32)>,
    threads: HashMap<u32, ThreadSched>,
    on_cpu: HashMap<u32, u64>,
    ledger: BTreeMap<(u32, u32), u64>,
    truth_ledger: BTreeMap<(u32, u32), u64>,
    truth_state_ns: HashMap<(u32, u8), u64>,
    /// Probability (per mille) that a switch goes unreported, and how many did.
    unreported_per_mille: u64,
    missed: u64,
}

const NTHREADS: usize = 5;

impl Sim {
    fn new(ncpu: usize, seed: u64) -> Sim {
        // Thread tids 1..=NTHREADS; thread 1 runs on CPU 0, 2 waits on CPU 0, the rest block.
        let mut truth = vec![Truth::Blocked; NTHREADS + 1];
        truth[1] = Truth::Running(0);
        truth[2] = Truth::Runnable(0);
        let cpus =
            (0..ncpu).map(|c| (CpuState::default(), CpuHistory::default(), if c == 0 { 1 } else { 0 })).collect();
        Sim {
            w: Window::default(),
            now: 100,
            rng: Rng(seed),
            truth,
            cpus,
            threads: HashMap::new(),
            on_cpu: HashMap::new(),
            ledger: BTreeMap::new(),
            truth_ledger: BTreeMap::new(),
            truth_state_ns: HashMap::new(),
            unreported_per_mille: 0,
            missed: 0,
        }
    }

    /// Advances time, charging the truth.
    fn tick(&mut self) {
        let dt = 1 + self.rng.below(300);
        let d = clip(self.now, self.now + dt, &self.w);
        for tid in 1..=NTHREADS {
            let (k, cpu) = match self.truth[tid] {
                Truth::Running(c) => (0u8, Some(c)),
                Truth::Runnable(c) => (1, Some(c)),
                Truth::Blocked => (2, None),
            };
            *self.truth_state_ns.entry((tid as u32, k)).or_insert(0) += d;
            if k == 1 {
                let thief = self.cpus[cpu.unwrap()].2;
                *self.truth_ledger.entry((tid as u32, thief)).or_insert(0) += d;
            }
        }
        self.now += dt;
    }

    fn sched(&mut self, tid: u32) -> &mut ThreadSched {
        self.threads.entry(tid).or_default()
    }

    fn charge(&mut self, cpu: usize, victim: u32, from: u64) {
        let (w, now) = (self.w, self.now);
        let mut got = Vec::new();
        let un = self.cpus[cpu].1.walk(from, now, &w, |t, ns| got.push((t, ns)));
        for (t, ns) in got {
            *self.ledger.entry((victim, t)).or_insert(0) += ns;
        }
        self.sched(victim).add_unresolved(unresolved::HISTORY_OVERFLOW, un);
    }

    fn switch(&mut self, cpu: usize, how: SwitchOut) {
        self.switch_reported(cpu, how, true)
    }

    /// A switch; one the tracepoint does not report changes only the truth.
    fn switch_reported(&mut self, cpu: usize, how: SwitchOut, reported: bool) {
        let prev = self.cpus[cpu].2;
        let waiting: Vec<usize> = (1..=NTHREADS).filter(|&t| self.truth[t] == Truth::Runnable(cpu)).collect();
        let next = if how != SwitchOut::Runnable && waiting.is_empty() {
            0
        } else if waiting.is_empty() {
            return;
        } else {
            waiting[self.rng.below(waiting.len() as u64) as usize] as u32
        };
        self.do_switch(cpu, prev, next, how, reported);
    }

    fn do_switch(&mut self, cpu: usize, prev: u32, next: u32, how: SwitchOut, reported: bool) {
        let (w, now) = (self.w, self.now);
        self.cpus[cpu].2 = next;
        if !reported {
            if prev != 0 {
                self.truth[prev as usize] =
                    if how == SwitchOut::Runnable { Truth::Runnable(cpu) } else { Truth::Blocked };
            }
            if next != 0 {
                self.truth[next as usize] = Truth::Running(cpu);
            }
            return;
        }
        let d = self.cpus[cpu].0.switch(now, &w, next);
        *self.on_cpu.entry(prev).or_insert(0) += d;
        let (was, since) = self.cpus[cpu].1.switch(prev, next, now);
        if was != prev && was != NO_TID {
            // As the probe does (tracer-ebpf/src/ledger.rs, missed_switch).
            self.missed += 1;
            if let Some(t) = self.threads.get_mut(&was).filter(|_| was != 0) {
                t.on_missed_switch_out(since, cpu as u32);
            }
        }
        if prev != 0 {
            self.sched(prev).on_switch_out(now, cpu as u32, how, since, &w);
            self.truth[prev as usize] = if how == SwitchOut::Runnable { Truth::Runnable(cpu) } else { Truth::Blocked };
        }
        if next != 0 {
            if let Some(from) = self.sched(next).on_switch_in(now, cpu as u32, &w) {
                self.charge(cpu, next, from);
            }
            self.truth[next as usize] = Truth::Running(cpu);
        }
    }

    /// As the probe's sched_migrate_task does.
    fn migrate(&mut self, tid: u32, dest: usize) {
        let now = self.now;
        if let Some((old, from)) = self.sched(tid).on_migrate(now, dest as u32) {
            self.charge(old as usize, tid, from);
        }
    }

    fn step(&mut self) {
        self.tick();
        let ncpu = self.cpus.len();
        let cpu = self.rng.below(ncpu as u64) as usize;
        let tid = 1 + self.rng.below(NTHREADS as u64) as usize;
        let reported = self.rng.below(1000) >= self.unreported_per_mille;
        match self.rng.below(4) {
            0 => self.switch_reported(cpu, SwitchOut::Runnable, reported),
            1 if self.cpus[cpu].2 != 0 => self.switch_reported(cpu, SwitchOut::Blocked, reported),
            2 if self.truth[tid] == Truth::Blocked => {
                let (w, now) = (self.w, self.now);
                let target = self.rng.below(ncpu as u64) as usize;
                let old = self.threads.get(&(tid as u32)).map(|t| t.cpu).unwrap_or(NO_CPU);
                if old != target as u32 {
                    self.migrate(tid as u32, target);
                }
                self.sched(tid as u32).on_wakeup(now, &w);
                self.truth[tid] = Truth::Runnable(target);
                if self.cpus[target].2 == 0 {
                    self.tick();
                    self.switch(target, SwitchOut::Runnable);
                }
            }
            3 => {
                if let Truth::Runnable(c) = self.truth[tid] {
                    let dest = (c + 1) % ncpu;
                    if dest != c {
                        self.migrate(tid as u32, dest);
                        self.truth[tid] = Truth::Runnable(dest);
                    }
                }
            }
            _ => {}
        }
    }

    /// Stops the trace the way userspace does, and returns each thread's totals.
    fn stop(&mut self) -> HashMap<u32, ThreadSched> {
        self.tick();
        self.w.stop_ns = self.now;
        let w = self.w;
        // As vmmtrace's stop does: a switch on every CPU after the stop.
        for cpu in 0..self.cpus.len() {
            let curr = self.cpus[cpu].2;
            self.do_switch(cpu, curr, curr, SwitchOut::Runnable, true);
        }
        let mut out = HashMap::new();
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            let t = self.threads[&tid];
            if t.state == state::RUNNABLE {
                self.now = w.stop_ns;
                self.charge(t.cpu as usize, tid, t.wait_on_cpu_since_ns);
            }
            out.insert(tid, self.threads[&tid].closed_at_stop(&w));
        }
        out
    }
}

fn run_sim(ncpu: usize, seed: u64, steps: usize) {
    run_sim_missing(ncpu, seed, steps, 0);
}

/// With `unreported_per_mille` > 0, some switches are not reported: the on-CPU
/// accounting then gives the time to the wrong thread, and only the closure and the
/// ledger's sum can be checked.
fn run_sim_missing(ncpu: usize, seed: u64, steps: usize, unreported_per_mille: u64) -> u64 {
    let mut sim = Sim::new(ncpu, seed);
    sim.unreported_per_mille = unreported_per_mille;
    let exact = unreported_per_mille == 0;
    for i in 0..steps {
        if i == 20 {
            sim.w.start_ns = sim.now; // events before the start set the states only
        }
        sim.step();
    }
    let totals = sim.stop();
    let w = sim.w;
    for (tid, t) in &totals {
        let tid = *tid;
        let truth = |k: u8| sim.truth_state_ns.get(&(tid, k)).copied().unwrap_or(0);
        let on_cpu = sim.on_cpu.get(&tid).copied().unwrap_or(0);
        if exact {
            assert_eq!(on_cpu, truth(0), "seed {seed} tid {tid}: on-CPU");
            assert_eq!(t.runq_wait_ns, truth(1), "seed {seed} tid {tid}: run-queue wait");
            assert_eq!(t.blocked_ns, truth(2), "seed {seed} tid {tid}: blocked");
        }
        if t.missed_switches == 0 {
            assert_eq!(on_cpu + t.runq_wait_ns + t.blocked_ns, t.alive_ns(&w), "seed {seed} tid {tid}: closure");
        }
        let charged: u64 = sim.ledger.range((tid, 0)..=(tid, u32::MAX)).map(|(_, ns)| ns).sum();
        let unresolved: u64 = t.unresolved_ns.iter().sum();
        assert_eq!(charged + unresolved, t.runq_wait_ns, "seed {seed} tid {tid}: ledger sum");
        if unresolved == 0 && exact {
            for thief in 0..=NTHREADS as u32 {
                let got = sim.ledger.get(&(tid, thief)).copied().unwrap_or(0);
                let want = sim.truth_ledger.get(&(tid, thief)).copied().unwrap_or(0);
                assert_eq!(got, want, "seed {seed}: victim {tid} thief {thief}");
            }
        }
    }
    sim.missed
}

#[test]
fn unreported_switches_keep_every_thread_closed() {
    let mut missed = 0;
    for seed in 1..200 {
        missed += run_sim_missing(2, seed, 400, 100);
    }
    assert!(missed > 100, "the simulation should miss switches: {missed}");
}

#[test]
fn random_schedules_on_one_cpu_close_exactly_and_charge_the_right_thieves() {
    for seed in 1..200 {
        run_sim(1, seed, 400);
    }
}

#[test]
fn random_schedules_on_two_cpus_with_migrations_close_exactly() {
    for seed in 1..200 {
        run_sim(2, seed, 400);
    }
}

#[test]
fn two_cpu_bound_threads_on_one_cpu_charge_each_other() {
    let mut sim = Sim::new(1, 7);
    sim.w.start_ns = 100;
    for _ in 0..200 {
        sim.tick();
        sim.switch(0, SwitchOut::Runnable); // thread 1 and 2 take turns
    }
    let totals = sim.stop();
    for (victim, thief) in [(1, 2), (2, 1)] {
        let t = totals[&victim];
        assert!(t.runq_wait_ns > 0);
        assert_eq!(sim.ledger[&(victim, thief)], t.runq_wait_ns, "victim {victim}");
    }
}

#[test]
fn the_pair_cache_keeps_recurring_pairs_and_hands_the_others_on() {
    let mut c = PairCache::default();
    let k = |v, t| PairKey { victim: v, thief: t };
    let mut flushed: BTreeMap<PairKey, u64> = BTreeMap::new();
    let mut total = 0;
    for i in 0..100u64 {
        // Two pairs taking turns, and now and then one of many others.
        let key = if i % 10 == 9 { k(100 + i as u32, 1) } else { k(1 + (i % 2) as u32, 2 - (i % 2) as u32) };
        total += i;
        if let Some((ek, es)) = c.add(key, i) {
            *flushed.entry(ek).or_insert(0) += es.ns;
        }
    }
    for (key, s) in c.pairs() {
        *flushed.entry(key).or_insert(0) += s.ns;
    }
    assert_eq!(flushed.values().sum::<u64>(), total);
    assert_eq!(flushed.len(), 2 + 10);
}
