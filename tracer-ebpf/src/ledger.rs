//! Wakeups and the preemption ledger: every thread's run-queue state, and who ran on
//! a CPU while a thread waited for it. The state machines are
//! `tracer_common::ledger`; this file feeds them events and keeps the maps.

use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    NO_TID, Window, assert_named, counter,
    ledger::{CpuHistory, PairKey, PairStats, SwitchOut, ThreadSched, unresolved},
    names::program,
    tp_off,
};

use crate::{
    maps::{
        CPU_HISTORY, LEDGER, PAIR_CACHE, THREAD_SCHED, THREAD_SCHED_BY_TID, bump, current_tid, get_or_insert,
        ledger_full, now, task_run_delay, task_tid, task_wait_here, tp_offset, wakeless, window,
    },
    timeline,
};

/// A thread's entry, created empty the first time: its slot of the array where the
/// array covers its tid, else in the hash.
#[inline(always)]
fn sched_entry(tid: u32) -> Option<*mut ThreadSched> {
    if let Some(t) = THREAD_SCHED_BY_TID.get_ptr_mut(tid) {
        return Some(t);
    }
    get_or_insert(&THREAD_SCHED, &tid, &ThreadSched::UNSEEN, counter::DROPPED_THREAD_SCHED)
}

/// A thread's entry if the probes have one.
#[inline(always)]
fn sched_lookup(tid: u32) -> Option<*mut ThreadSched> {
    THREAD_SCHED_BY_TID.get_ptr_mut(tid).or_else(|| THREAD_SCHED.get_ptr_mut(tid))
}

/// Forgets an exited thread, so that its tid starts afresh when reused: its slot of
/// the array is reset (an array entry cannot be deleted), or its hash entry deleted.
/// Userspace must have read the entry before: called for a thread whose tid is
/// reused before userspace retired it (its loss is counted by the caller).
#[inline(always)]
pub fn forget_sched(tid: u32) {
    match THREAD_SCHED_BY_TID.get_ptr_mut(tid) {
        // SAFETY: the thread's slot; it is off every CPU for good.
        Some(t) => unsafe { *t = ThreadSched::UNSEEN },
        None => {
            let _ = THREAD_SCHED.remove(tid);
        }
    }
}

/// Adds `stats` to a pair in the map; false when the map is full. The same pair can
/// be flushed from two CPUs' caches at once (its victim moved): an insert that lost
/// the race adds to the winner's entry. (Two adds at once to an existing entry could
/// still lose one: the BPF target has no atomic add in Rust's `core`; that needs the
/// same pair evicted on two CPUs in the same instant.)
#[inline(always)]
fn add_to_map(key: &PairKey, stats: &PairStats) -> bool {
    const BPF_NOEXIST: u64 = 1;
    const EEXIST: i64 = 17;
    if add_to_entry(key, stats) {
        return true;
    }
    match LEDGER.insert(key, stats, BPF_NOEXIST) {
        Ok(()) => true,
        Err(e) if e as i64 == -EEXIST => add_to_entry(key, stats),
        Err(_) => false,
    }
}

/// Adds `stats` to the pair's entry if it has one.
#[inline(always)]
fn add_to_entry(key: &PairKey, stats: &PairStats) -> bool {
    let Some(p) = LEDGER.get_ptr_mut(key) else { return false };
    // SAFETY: a map value, alive while this program runs.
    unsafe {
        (*p).ns += stats.ns;
        (*p).intervals += stats.intervals;
    }
    true
}

/// Adds `ns` to (victim, thief), through this CPU's pair cache; false when the map is
/// full for it.
#[inline(always)]
fn add_pair(victim: u32, thief: u32, ns: u64) -> bool {
    let key = PairKey { victim, thief };
    let Some(c) = PAIR_CACHE.get_ptr_mut(0) else { return add_to_map(&key, &PairStats { ns, intervals: 1 }) };
    // SAFETY: this CPU's slot; its users run with interrupts off (scheduler locks).
    if let Some((k, s)) = unsafe { (*c).add(key, ns) }
        && !add_to_map(&k, &s)
    {
        bump(counter::DROPPED_LEDGER);
    }
    true
}

/// Charges the victim's wait `[from, to)` on the CPU of `history` to its thieves.
/// The victim's entry is looked up again only for a charge it cannot pass on: no
/// pointer to it lives across the walk, so that the verifier sees one state whether
/// the entry came from the array or from the hash (with it live, the walk was verified
/// once per origin, and the switch program grew past the verifier's 1M-instruction
/// budget once the timeline's branch doubled it again).
#[inline(always)]
fn charge_wait(victim: u32, history: &CpuHistory, from: u64, to: u64, w: &Window) {
    let mut lost = 0u64;
    let overflow = history.walk(from, to, w, |thief, ns| {
        if !add_pair(victim, thief, ns) {
            lost += ns;
        }
    });
    if overflow == 0 && lost == 0 {
        return;
    }
    if let Some(t) = sched_lookup(victim) {
        // SAFETY: the victim's entry; its updates are serialized by its run-queue lock.
        unsafe {
            (*t).add_unresolved(unresolved::HISTORY_OVERFLOW, overflow);
            (*t).add_unresolved(unresolved::LEDGER_FULL, lost);
        }
    }
}

/// The task pointers of a tp_btf sched_switch, (prev, next), for the kernel's own
/// run-queue bookkeeping where no sched_wakeup program runs.
pub type Tasks = Option<(*const u8, *const u8)>;

/// The ledger's part of a context switch on this CPU at `now`: prev's interval ends
/// and it leaves as `how`; next's begins, and its wait (if it waited) is charged.
#[inline(always)]
pub fn on_switch(prev: u32, next: u32, now: u64, how: SwitchOut, w: &Window, tasks: Tasks) {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let history = if ledger_full() { CPU_HISTORY.get_ptr_mut(cpu) } else { None };
    // Where the on-CPU accounting starts charging prev (now, without a history).
    let mut prev_since = now;
    if let Some(h) = history {
        // SAFETY: this CPU's history, written under its run-queue lock (held here).
        let (was, was_since) = unsafe { (*h).switch(prev, next, now) };
        if was != prev && was != NO_TID {
            missed_switch(was, was_since, cpu);
        }
        prev_since = was_since;
    }
    if prev != 0
        && let Some(t) = sched_entry(prev)
    {
        // SAFETY: prev's entry, serialized by its run-queue lock.
        unsafe { (*t).on_switch_out(now, cpu, how, prev_since, w) };
        // Kept at every switch-out (a branch on `how` would double the verifier's
        // states); it is read only after one as blocked.
        if let Some((prev_task, _)) = tasks
            && wakeless()
        {
            // SAFETY: as above.
            unsafe { (*t).run_delay_ns = task_run_delay(prev_task) };
        }
    }
    if next == 0 {
        return;
    }
    let Some(t) = sched_entry(next) else { return };
    if let Some((_, next_task)) = tasks
        && wakeless()
    {
        infer_wakeup(t, next_task, now, cpu, w);
    }
    // SAFETY: next's entry, serialized by its run-queue lock.
    let wait = unsafe { (*t).on_switch_in(now, cpu, w) };
    if let (Some(from), Some(h)) = (wait, history) {
        // SAFETY: as above.
        charge_wait(next, unsafe { &*h }, from, now, w);
    }
}

/// Where no sched_wakeup program runs: a blocked thread switched in was woken, and
/// the kernel's bookkeeping says how long ago (see `tracer_common::ledger::kfield`).
#[inline(always)]
fn infer_wakeup(t: *mut ThreadSched, next_task: *const u8, now: u64, cpu: u32, w: &Window) {
    // SAFETY: next's entry, serialized by its run-queue lock.
    unsafe {
        if (*t).state != tracer_common::ledger::state::BLOCKED {
            return;
        }
        (*t).on_inferred_wakeup(now, cpu, task_wait_here(next_task), task_run_delay(next_task), w);
    }
}

/// A switch on this CPU since `at` was not reported: `was` left without a switch-out
/// (`prev`, which came without a switch-in, is handled by its switch-out).
#[inline(always)]
fn missed_switch(was: u32, at: u64, cpu: u32) {
    bump(counter::MISSED_SWITCH);
    if was != 0
        && let Some(t) = sched_lookup(was)
    {
        // SAFETY: its entry; it is off every CPU, and its next events need this CPU's lock.
        unsafe { (*t).on_missed_switch_out(at, cpu) };
    }
}

/// The ledger's part of a migration of `tid` to `dest`: a waiting thread's wait on
/// the CPU it leaves is charged to that CPU's thieves now. The migration holds the
/// old CPU's run-queue lock, so its history is not being written meanwhile.
#[inline(always)]
pub fn on_migrate(tid: u32, dest: u32) {
    let Some(t) = sched_entry(tid) else { return };
    let now = now();
    // SAFETY: tid's entry, serialized by its run-queue lock.
    let Some((old, from)) = (unsafe { (*t).on_migrate(now, dest) }) else { return };
    if !ledger_full() {
        return;
    }
    let w = window();
    match CPU_HISTORY.get(old) {
        Some(h) => charge_wait(tid, h, from, now, &w),
        // SAFETY: as above.
        None => unsafe { (*t).add_unresolved(unresolved::MIGRATED, tracer_common::ledger::clip(from, now, &w)) },
    }
}

/// Kept small: it runs on every wakeup. A thread already running or runnable (woken
/// before it could block) costs one lookup, no clock read.
#[inline(always)]
fn on_wakeup(tid: u32) {
    bump(counter::SCHED_WAKEUP);
    let Some(t) = sched_entry(tid) else { return };
    // SAFETY: the wakee's entry; the wakeup holds its run-queue lock.
    unsafe {
        if (*t).is_asleep() {
            let (now, w) = (now(), window());
            (*t).on_wakeup(now, &w);
            if w.timeline() {
                timeline::on_wakeup(now, tid, current_tid());
            }
        }
    }
}

#[inline(always)]
fn on_wakeup_new(tid: u32) {
    bump(counter::SCHED_WAKEUP_NEW);
    let now = now();
    if let Some(t) = sched_entry(tid) {
        // SAFETY: a new thread's entry, before it ever ran.
        unsafe { (*t).start_new(now) };
    }
    if window().timeline() {
        timeline::on_wakeup_new(now, tid, current_tid());
    }
}

assert_named!(sched_wakeup_btf, program::SCHED_WAKEUP_BTF);
/// tp_btf: `sched_wakeup(struct task_struct *p)`.
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup_btf(ctx: BtfTracePointContext) -> i32 {
    on_wakeup(task_tid(ctx.arg(0)));
    0
}

assert_named!(sched_wakeup_new_btf, program::SCHED_WAKEUP_NEW_BTF);
/// tp_btf: `sched_wakeup_new(struct task_struct *p)`.
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new_btf(ctx: BtfTracePointContext) -> i32 {
    on_wakeup_new(task_tid(ctx.arg(0)));
    0
}

assert_named!(sched_wakeup_tp, program::SCHED_WAKEUP_TP);
/// Classic tracepoint fallback; `pid` offset from tracefs.
#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn sched_wakeup_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from this kernel's format file; read_at checks bounds.
    if let Ok(tid) = unsafe { ctx.read_at::<i32>(tp_offset(tp_off::WAKEUP_PID)) } {
        on_wakeup(tid as u32);
    }
    0
}

assert_named!(sched_wakeup_new_tp, program::SCHED_WAKEUP_NEW_TP);
#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn sched_wakeup_new_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: as above.
    if let Ok(tid) = unsafe { ctx.read_at::<i32>(tp_offset(tp_off::WAKEUP_NEW_PID)) } {
        on_wakeup_new(tid as u32);
    }
    0
}
