//! Run-queue wait and the preemption ledger: who took the time.
//!
//! Every thread the probes see is, at each instant, in one of three states: on a CPU,
//! runnable and waiting for one (woken, or switched out while still runnable), or
//! blocked. [`ThreadSched`] is that state machine (value of the `THREAD_SCHED` hash,
//! keyed by tid): `sched_switch` moves prev out and next in, `sched_wakeup` moves a
//! blocked thread to runnable, `sched_wakeup_new` starts a new one as runnable, and
//! `sched_migrate_task` moves a thread's queue to another CPU. Time is charged to the
//! state the thread leaves, clipped to the trace window, so that per thread
//! `on_cpu_ns + runq_wait_ns + blocked_ns` is its time alive inside the window.
//!
//! When a waiting thread (the victim) is switched in, its wait is charged to the
//! threads that ran on that CPU meanwhile (the thieves). Each CPU keeps a short
//! history of its recent on-CPU intervals ([`CpuHistory`]), contiguous by
//! construction (each switch ends one and starts the next), and [`CpuHistory::walk`]
//! goes back over it to the start of the wait. Idle time is charged to tid 0. What the
//! history cannot cover is charged to one of the [`unresolved`] buckets, never dropped:
//! together they sum exactly to the wait.
//!
//! A thread's transitions are serialized by the scheduler (its switches and wakeups
//! happen under its run-queue lock), so plain stores are enough even though the
//! entries live in a hash shared by all CPUs.

use crate::{
    Window,
    kvm::{HIST_BUCKETS, log2_bucket},
};

/// Intervals kept per CPU (a power of two, so that an index is a mask).
pub const HISTORY_LEN: usize = 64;
const HISTORY_MASK: u32 = HISTORY_LEN as u32 - 1;

/// `ThreadSched::cpu` when the probes have not seen where the thread is queued.
pub const NO_CPU: u32 = u32::MAX;

/// Values of the `LEDGER_ON` global.
pub mod level {
    /// Neither (no wakeup probes).
    pub const OFF: u32 = 0;
    /// Run-queue states only: wait, blocked and closure per thread, no thieves (for
    /// `vmmtrace bench`, to price the ledger apart from the states).
    pub const RUN_QUEUE: u32 = 1;
    /// States and the ledger.
    pub const FULL: u32 = 2;
}

/// The kernel's run-queue bookkeeping (`CONFIG_SCHED_INFO`) that tp_btf
/// sched_switch reads where no sched_wakeup program runs: indices of the
/// `SCHED_INFO_OFFSETS` global, each a byte offset from the kernel's BTF.
///
/// At sched_switch (before `sched_info_switch`, which runs after the tracepoint),
/// `next->sched_info.last_queued` is when next was enqueued on this run queue, in
/// the run queue's clock, and `rq->clock` is the value `sched_info_arrive` is about
/// to use: their difference is exactly what the kernel adds to `run_delay` for the
/// wait on this CPU. `run_delay` itself, minus its value when the thread blocked, is
/// what it waited on other run queues before a migration (`sched_info_dequeue`).
pub mod kfield {
    /// `task_struct.sched_info.last_queued` (u64, rq clock; 0 = not queued).
    pub const LAST_QUEUED: usize = 0;
    /// `task_struct.sched_info.run_delay` (u64, ns, cumulative).
    pub const RUN_DELAY: usize = 1;
    /// `task_struct.se.cfs_rq` (a pointer; set for every task, whatever its class).
    pub const SE_CFS_RQ: usize = 2;
    /// `cfs_rq.rq` (a pointer).
    pub const CFS_RQ_RQ: usize = 3;
    /// `rq.clock` (u64).
    pub const RQ_CLOCK: usize = 4;
    pub const COUNT: usize = 5;
}

/// `ThreadSched::run_delay_ns` when the kernel's `run_delay` at the thread's last
/// block is not known.
pub const NO_RUN_DELAY: u64 = u64::MAX;

/// Values of `ThreadSched::state`.
pub mod state {
    /// Created by an event that says nothing of the state (a migration), or not
    /// seen since before the trace.
    pub const UNKNOWN: u32 = 0;
    pub const ON_CPU: u32 = 1;
    pub const RUNNABLE: u32 = 2;
    pub const BLOCKED: u32 = 3;
    /// Switched out for the last time (`TASK_DEAD`).
    pub const DEAD: u32 = 4;
}

/// Why part of a wait could not be charged to a thief (indices of
/// `ThreadSched::unresolved_ns`).
pub mod unresolved {
    /// The wait spanned more on-CPU intervals than the CPU's history holds.
    pub const HISTORY_OVERFLOW: usize = 0;
    /// The wait began on another CPU, before the thread was migrated.
    pub const MIGRATED: usize = 1;
    /// The (victim, thief) map was full.
    pub const LEDGER_FULL: usize = 2;
    /// Switched in on a CPU other than the one the probes last saw it queued on (a
    /// migration the probes missed).
    pub const CPU_UNKNOWN: usize = 3;
    /// The thread was put on a CPU by a switch the tracepoint did not report (see
    /// [`super::ThreadSched::on_missed_switch_out`]).
    pub const MISSED_SWITCH: usize = 4;
    pub const COUNT: usize = 5;
    /// Names used in the report.
    pub const NAMES: [&str; COUNT] = ["history_overflow", "migrated", "ledger_full", "cpu_unknown", "missed_switch"];
}

/// How a thread left the CPU, from sched_switch's `preempt` and `prev_state`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SwitchOut {
    /// Still runnable: preempted, or yielded.
    Runnable,
    /// Went to sleep.
    Blocked,
    /// Exited.
    Dead,
}

/// `TASK_DEAD` in the raw `__state` that tp_btf's `prev_state` carries.
pub const TASK_DEAD: u64 = 0x80;
/// `EXIT_DEAD | EXIT_ZOMBIE` as the classic tracepoint reports a dying task.
pub const REPORT_EXITED: u64 = 0x10 | 0x20;

/// tp_btf sched_switch: how prev left (same test of runnable as
/// [`crate::is_involuntary`]).
#[inline(always)]
pub fn switch_out_btf(preempt: bool, prev_state: u64) -> SwitchOut {
    if crate::is_involuntary(preempt, prev_state) {
        SwitchOut::Runnable
    } else if prev_state & TASK_DEAD != 0 {
        SwitchOut::Dead
    } else {
        SwitchOut::Blocked
    }
}

/// Classic sched_switch: how prev left, from the reported state.
#[inline(always)]
pub fn switch_out_classic(prev_state: u64) -> SwitchOut {
    if crate::is_involuntary_classic(prev_state) {
        SwitchOut::Runnable
    } else if prev_state & REPORT_EXITED != 0 {
        SwitchOut::Dead
    } else {
        SwitchOut::Blocked
    }
}

/// `[from, to)` clipped to the window; 0 before the trace starts.
#[inline(always)]
pub fn clip(from: u64, to: u64, w: &Window) -> u64 {
    if w.start_ns == 0 {
        return 0;
    }
    let lo = if from > w.start_ns { from } else { w.start_ns };
    let hi = if w.stop_ns != 0 && to > w.stop_ns { w.stop_ns } else { to };
    hi.saturating_sub(lo)
}

/// One thread's scheduling state and totals (value of `THREAD_SCHED`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadSched {
    /// One of [`state`].
    pub state: u32,
    /// CPU the thread runs on, is queued on, or last ran on; [`NO_CPU`] = not known.
    pub cpu: u32,
    /// When it entered `state`; 0 = before the probes saw it.
    pub since_ns: u64,
    /// While runnable: when the wait began on `cpu` (later than `since_ns` after a
    /// migration).
    pub wait_on_cpu_since_ns: u64,
    // The fields above and these five are what every switch and wakeup touches: 64
    // bytes, kept together so that an event touches as few cache lines as it can.
    /// Inside the window: time runnable but not running ...
    pub runq_wait_ns: u64,
    /// ... and time blocked.
    pub blocked_ns: u64,
    /// Inside the window: blocked -> runnable transitions,
    pub wakeups: u64,
    /// waits that ended (switch-ins after a wait),
    pub waits: u64,
    /// and switch-outs while still runnable.
    pub preemptions: u64,
    /// `sched_wakeup_new` time; 0 = existed before the probes saw it.
    pub born_ns: u64,
    /// Last switch-out as `TASK_DEAD`; 0 = alive.
    pub died_ns: u64,
    /// The kernel's `run_delay` when the thread last blocked ([`NO_RUN_DELAY`] = not
    /// read), where sched_switch infers wakeups (see [`kfield`]).
    pub run_delay_ns: u64,
    /// Wait time that could not be charged to a thief, by [`unresolved`] reason.
    pub unresolved_ns: [u64; unresolved::COUNT],
    /// Log2 histogram of single waits (bucket as `kvm::log2_bucket`).
    pub wait_hist: [u32; HIST_BUCKETS],
    /// Switches of this thread the tracepoint did not report (see
    /// [`ThreadSched::on_missed_switch_out`]).
    pub missed_switches: u32,
    pub _pad: u32,
}

impl Default for ThreadSched {
    fn default() -> Self {
        ThreadSched::UNSEEN
    }
}

/// Whether `now` is inside the window (for counts).
#[inline(always)]
fn in_window(now: u64, w: &Window) -> bool {
    w.start_ns != 0 && now >= w.start_ns && (w.stop_ns == 0 || now <= w.stop_ns)
}

impl ThreadSched {
    /// A thread the probes meet for the first time: nothing known yet.
    pub const UNSEEN: ThreadSched = ThreadSched {
        state: state::UNKNOWN,
        cpu: NO_CPU,
        since_ns: 0,
        wait_on_cpu_since_ns: 0,
        born_ns: 0,
        died_ns: 0,
        run_delay_ns: NO_RUN_DELAY,
        runq_wait_ns: 0,
        blocked_ns: 0,
        wakeups: 0,
        waits: 0,
        preemptions: 0,
        unresolved_ns: [0; unresolved::COUNT],
        wait_hist: [0; HIST_BUCKETS],
        missed_switches: 0,
        _pad: 0,
    };

    /// Closes the time spent in the current state up to `now`.
    #[inline(always)]
    fn close_state(&mut self, now: u64, w: &Window) {
        match self.state {
            state::RUNNABLE => self.runq_wait_ns += clip(self.since_ns, now, w),
            // A thread first seen by a wakeup was blocked since before the trace.
            state::BLOCKED => self.blocked_ns += clip(self.since_ns, now, w),
            _ => {}
        }
    }

    #[inline(always)]
    fn enter(&mut self, st: u32, now: u64) {
        self.state = st;
        self.since_ns = now;
    }

    /// Switched out of `cpu` at `now`; `on_cpu_since` is the CPU's previous switch
    /// (when the on-CPU accounting starts charging this thread). A thread the probes
    /// did not see put on the CPU is taken as put there then.
    #[inline(always)]
    pub fn on_switch_out(&mut self, now: u64, cpu: u32, how: SwitchOut, on_cpu_since: u64, w: &Window) {
        if self.state != state::ON_CPU && self.state != state::UNKNOWN {
            self.on_missed_switch_in(on_cpu_since, cpu, w);
        }
        self.cpu = cpu;
        match how {
            SwitchOut::Runnable => {
                self.enter(state::RUNNABLE, now);
                self.wait_on_cpu_since_ns = now;
                if in_window(now, w) {
                    self.preemptions += 1;
                }
            }
            SwitchOut::Blocked => self.enter(state::BLOCKED, now),
            SwitchOut::Dead => {
                self.enter(state::DEAD, now);
                self.died_ns = now;
            }
        }
    }

    /// Whether a wakeup would make it runnable (blocked, or not seen yet).
    #[inline(always)]
    pub fn is_asleep(&self) -> bool {
        self.state == state::BLOCKED || self.state == state::UNKNOWN
    }

    /// `sched_wakeup`: a blocked (or never seen) thread becomes runnable. A wakeup of a
    /// thread that is running or already runnable (it was woken before it could
    /// block) changes nothing. Returns whether it was a real wakeup.
    #[inline(always)]
    pub fn on_wakeup(&mut self, now: u64, w: &Window) -> bool {
        if !self.is_asleep() {
            return false;
        }
        self.state = state::BLOCKED; // an unknown thread was blocked since before
        self.close_state(now, w);
        self.enter(state::RUNNABLE, now);
        self.wait_on_cpu_since_ns = now;
        if in_window(now, w) {
            self.wakeups += 1;
        }
        true
    }

    /// Where no sched_wakeup program runs: a blocked thread is being switched in on
    /// `cpu` at `now`, after waiting `wait_here` on this CPU's run queue and
    /// `run_delay` - `run_delay_ns` on others (the kernel's own accounts, see
    /// [`kfield`]). Its wakeup is placed back at `now` minus the whole wait (never
    /// before it blocked), the part on other CPUs is [`unresolved::MIGRATED`], and the
    /// wait on this CPU begins at `now - wait_here`: [`Self::on_switch_in`] then
    /// charges it. When `run_delay` at the block is not known, only `wait_here` is
    /// taken as waited.
    #[inline(always)]
    pub fn on_inferred_wakeup(&mut self, now: u64, cpu: u32, wait_here: u64, run_delay: u64, w: &Window) {
        let elsewhere = if self.run_delay_ns == NO_RUN_DELAY { 0 } else { run_delay.saturating_sub(self.run_delay_ns) };
        let here_from = now.saturating_sub(wait_here);
        let woken = here_from.saturating_sub(elsewhere);
        let woken = if woken > self.since_ns { woken } else { self.since_ns };
        let woken = if woken < now { woken } else { now };
        self.on_wakeup(woken, w);
        if here_from > woken {
            self.unresolved_ns[unresolved::MIGRATED] += clip(woken, here_from, w);
            self.wait_on_cpu_since_ns = here_from;
        }
        self.cpu = cpu;
    }

    /// `sched_wakeup_new`: a new thread, runnable from `now` (in place, so that the
    /// probe needs no second copy of the value on its stack).
    #[inline(always)]
    pub fn start_new(&mut self, now: u64) {
        self.state = state::RUNNABLE;
        self.since_ns = now;
        self.wait_on_cpu_since_ns = now;
        self.born_ns = now;
    }

    /// Switched in on `cpu` at `now`. Returns the part of the wait to charge to the
    /// thieves of `cpu`, `[from, now)` as `Some(from)`, or None if it was not waiting
    /// (or waited where the probes did not see it). A thread not seen before was
    /// runnable since before the trace.
    #[inline(always)]
    pub fn on_switch_in(&mut self, now: u64, cpu: u32, w: &Window) -> Option<u64> {
        let was = self.state;
        if was != state::RUNNABLE && was != state::UNKNOWN {
            // Not waiting (a wakeup the probes missed): close what it was in.
            self.close_state(now, w);
            self.enter(state::ON_CPU, now);
            self.cpu = cpu;
            return None;
        }
        let wait = clip(self.since_ns, now, w);
        self.runq_wait_ns += wait;
        if in_window(now, w) {
            self.waits += 1;
            if let Some(b) = self.wait_hist.get_mut(log2_bucket(wait)) {
                *b += 1;
            }
        }
        let from = self.wait_on_cpu_since_ns;
        if was == state::UNKNOWN {
            // Seen only by a migration: what it did before is not known.
            self.unresolved_ns[unresolved::MIGRATED] += clip(self.since_ns, from, w);
        }
        let queued_elsewhere = self.cpu != NO_CPU && self.cpu != cpu;
        self.enter(state::ON_CPU, now);
        self.cpu = cpu;
        if queued_elsewhere {
            self.unresolved_ns[unresolved::CPU_UNKNOWN] += clip(from, now, w);
            return None;
        }
        Some(from)
    }

    /// `sched_migrate_task` to `dest` at `now`. For a waiting thread, returns the part
    /// of its wait spent queued on the CPU it leaves, `(cpu, from)` for `[from, now)`,
    /// for the caller to charge to that CPU's thieves (or to
    /// [`unresolved::MIGRATED`]); the wait goes on on `dest` from `now`.
    #[inline(always)]
    pub fn on_migrate(&mut self, now: u64, dest: u32) -> Option<(u32, u64)> {
        let old = self.cpu;
        let from = self.wait_on_cpu_since_ns;
        self.cpu = dest;
        match self.state {
            state::RUNNABLE => {
                self.wait_on_cpu_since_ns = now;
                if old == NO_CPU { None } else { Some((old, from)) }
            }
            state::UNKNOWN => {
                self.wait_on_cpu_since_ns = now;
                None
            }
            _ => None,
        }
    }

    /// The CPU this thread was put on switched away from it without a sched_switch
    /// event (seen on this kernel for some threads: the next event on that CPU names
    /// another prev). The on-CPU accounting gives the time since `at`, the last
    /// switch on that CPU, to that prev; the thread is taken off the CPU at `at` too,
    /// as blocked (what it did meanwhile is not known), unless it was already seen
    /// on another CPU.
    #[inline(always)]
    pub fn on_missed_switch_out(&mut self, at: u64, cpu: u32) {
        self.missed_switches += 1;
        if self.state == state::ON_CPU && self.cpu == cpu {
            self.enter(state::BLOCKED, at);
            self.run_delay_ns = NO_RUN_DELAY;
        }
    }

    /// `prev` of a switch was not put on the CPU by a reported switch: it is taken
    /// as switched in at `at`, the last switch on that CPU (from when the on-CPU
    /// accounting charges it), or when it was last seen if that is later; its wait
    /// up to then, if any, is unresolved. When it was seen after `at`, the time in
    /// between counts twice, on CPU and in its state then: the closure of such a
    /// thread is off by that much (`missed_switches` says so).
    #[inline(always)]
    pub fn on_missed_switch_in(&mut self, at: u64, cpu: u32, w: &Window) {
        self.missed_switches += 1;
        if self.state == state::ON_CPU {
            return;
        }
        let seen = if self.state == state::RUNNABLE { self.wait_on_cpu_since_ns } else { self.since_ns };
        let at = if seen > at { seen } else { at };
        if let Some(from) = self.on_switch_in(at, cpu, w) {
            self.unresolved_ns[unresolved::MISSED_SWITCH] += clip(from, at, w);
        }
    }

    /// Charges `ns` of wait to an unresolved bucket.
    #[inline(always)]
    pub fn add_unresolved(&mut self, reason: usize, ns: u64) {
        // Nothing to add is the common case: no store, no cache line touched.
        if ns == 0 {
            return;
        }
        if let Some(b) = self.unresolved_ns.get_mut(reason) {
            *b += ns;
        }
    }

    /// Userspace, at the end: the thread's totals with the state it is in at the
    /// stop closed up to the stop (on-CPU time is not counted here).
    pub fn closed_at_stop(&self, w: &Window) -> ThreadSched {
        let mut t = *self;
        if w.stop_ns != 0 {
            if t.state == state::UNKNOWN {
                return t;
            }
            t.close_state(w.stop_ns, w);
            t.since_ns = w.stop_ns;
        }
        t
    }

    /// Time alive inside the window: from the start (or birth) to the stop (or death).
    pub fn alive_ns(&self, w: &Window) -> u64 {
        let end = if self.died_ns != 0 { self.died_ns } else { w.stop_ns };
        clip(self.born_ns, end, w)
    }
}

/// A CPU's recent on-CPU intervals (value of the `CPU_HISTORY` array, indexed by CPU
/// id). Intervals are contiguous: each starts where the previous one ended, so only
/// starts are kept. Written by the CPU's own sched_switch; read by a migration of a
/// thread queued on it, which holds the same run-queue lock.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CpuHistory {
    /// On the CPU now ([`crate::NO_TID`] before the first switch); 0 = idle.
    pub curr_tid: u32,
    /// Intervals ever pushed; the newest is at `(head - 1) % HISTORY_LEN`.
    pub head: u32,
    /// Start of the current interval; 0 = since before the probes.
    pub curr_since_ns: u64,
    pub starts_ns: [u64; HISTORY_LEN],
    pub tids: [u32; HISTORY_LEN],
}

impl Default for CpuHistory {
    fn default() -> Self {
        CpuHistory {
            curr_tid: crate::NO_TID,
            head: 0,
            curr_since_ns: 0,
            starts_ns: [0; HISTORY_LEN],
            tids: [0; HISTORY_LEN],
        }
    }
}

impl CpuHistory {
    /// A context switch at `now`: `prev`'s interval ends, `next`'s begins. At the
    /// first switch prev has been on the CPU since before the probes. Returns the
    /// thread the previous switch put here and since when: when it is not `prev`, a
    /// switch in between was not reported (the interval is prev's, as the on-CPU
    /// accounting counts it).
    #[inline(always)]
    pub fn switch(&mut self, prev: u32, next: u32, now: u64) -> (u32, u64) {
        let was = (self.curr_tid, self.curr_since_ns);
        let i = (self.head & HISTORY_MASK) as usize;
        if let (Some(s), Some(t)) = (self.starts_ns.get_mut(i), self.tids.get_mut(i)) {
            *s = self.curr_since_ns;
            *t = prev;
        }
        self.head = self.head.wrapping_add(1);
        self.curr_tid = next;
        self.curr_since_ns = now;
        was
    }

    /// Charges the part of `[from, to)` inside the window to whoever ran on this CPU
    /// then, newest first, through `charge(tid, ns, _)` (tid 0 = idle). Returns the ns
    /// the history does not reach back to. The charges and the returned ns add up to
    /// `clip(from, to, w)` exactly.
    #[inline(always)]
    pub fn walk(&self, from: u64, to: u64, w: &Window, mut charge: impl FnMut(u32, u64)) -> u64 {
        let total = clip(from, to, w);
        if total == 0 {
            return 0;
        }
        let lo = if from > w.start_ns { from } else { w.start_ns };
        let hi = lo + total;
        // The current interval, then the ring from the newest back.
        let mut end = u64::MAX;
        let mut start = self.curr_since_ns;
        let mut tid = self.curr_tid;
        let kept = if self.head < HISTORY_LEN as u32 { self.head } else { HISTORY_LEN as u32 };
        let mut i = 0u32;
        loop {
            let a = if start > lo { start } else { lo };
            let b = if end < hi { end } else { hi };
            if tid == crate::NO_TID {
                // Before the CPU's first switch: who ran is not known.
                return b.saturating_sub(a);
            }
            if b > a {
                charge(tid, b - a);
            }
            if start <= lo {
                return 0;
            }
            if i >= kept || i >= HISTORY_LEN as u32 {
                break;
            }
            let k = (self.head.wrapping_sub(1 + i) & HISTORY_MASK) as usize;
            end = start;
            start = self.starts_ns.get(k).copied().unwrap_or(0);
            tid = self.tids.get(k).copied().unwrap_or(crate::NO_TID);
            i += 1;
        }
        // The oldest interval kept began after `lo`.
        (if start < hi { start } else { hi }) - lo
    }
}

/// Key of the `LEDGER` hash: who waited, who ran meanwhile (0 = idle).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct PairKey {
    pub victim: u32,
    pub thief: u32,
}

/// Value of `LEDGER`: wait time the thief took from the victim, and in how many
/// on-CPU intervals.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PairStats {
    pub ns: u64,
    pub intervals: u64,
}

/// Pairs kept per CPU before they go to the `LEDGER` hash: the same few (victim,
/// thief) pairs recur on a CPU (two threads taking turns), and adding to a slot here
/// is cheaper than a hash update per switch.
pub const PAIR_CACHE_LEN: usize = 4;

/// Value of the `PAIR_CACHE` per-CPU array: the CPU's recent pairs, not yet in
/// `LEDGER` (userspace adds both). A slot with `intervals == 0` is empty.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PairCache {
    pub keys: [PairKey; PAIR_CACHE_LEN],
    pub stats: [PairStats; PAIR_CACHE_LEN],
    /// Slot to evict next (round robin).
    pub next: u32,
    pub _pad: u32,
}

impl PairCache {
    /// Adds `ns` to (victim, thief). When the pair is not cached, it takes the slot of
    /// another, which is returned for the caller to add to the map.
    #[inline(always)]
    pub fn add(&mut self, key: PairKey, ns: u64) -> Option<(PairKey, PairStats)> {
        let mut i = 0;
        while i < PAIR_CACHE_LEN {
            if self.stats[i].intervals != 0 && self.keys[i] == key {
                self.stats[i].ns += ns;
                self.stats[i].intervals += 1;
                return None;
            }
            i += 1;
        }
        let slot = (self.next as usize) % PAIR_CACHE_LEN;
        self.next = self.next.wrapping_add(1);
        let evicted = (self.stats[slot].intervals != 0).then_some((self.keys[slot], self.stats[slot]));
        self.keys[slot] = key;
        self.stats[slot] = PairStats { ns, intervals: 1 };
        evicted
    }

    /// The cached pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (PairKey, PairStats)> + '_ {
        self.keys.iter().zip(self.stats.iter()).filter(|(_, s)| s.intervals != 0).map(|(k, s)| (*k, *s))
    }
}

#[cfg(test)]
mod tests;
