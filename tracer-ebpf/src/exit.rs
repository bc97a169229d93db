//! Thread exits: marks what userspace retires from the per-thread maps (see
//! `tracer_common::retire` for the protocol and its races).

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{assert_named, counter, names::program, retire::ExitMark};

use crate::maps::{EXITED, THREAD_INFO, THREAD_STATS, VCPU_STATE, WATCH, bump, current_tid, now};

/// The current thread is exiting: it still runs until its final switch.
#[inline(always)]
fn on_exit() {
    bump(counter::SCHED_EXIT);
    let tid = current_tid();
    if tid == 0 {
        return;
    }
    let mark = ExitMark { exit_ns: now(), final_switch_ns: 0, retiring: 0, reborn: 0 };
    if EXITED.insert(tid, mark, 0).is_err() {
        bump(counter::DROPPED_EXITED);
    }
}

/// `tid` was switched out as `TASK_DEAD` at `now`: its counters are final. Without a
/// mark nothing is done: either its exit was not marked (`EXITED` was full, counted,
/// or it exited as the probes attached), or a new thread already took its tid (a
/// tid is freed before the final switch) and wiped the mark: marking now would
/// retire the new thread.
#[inline(always)]
pub fn on_final_switch(tid: u32, now: u64) {
    if let Some(m) = EXITED.get_ptr_mut(tid) {
        // SAFETY: a map value; the dead thread's events are over, nothing else writes it.
        unsafe { (*m).final_switch_ns = now };
    }
}

/// A new thread `tid` is created (its fork, before it ever runs). If a thread that
/// had this tid exited and was not retired yet, its entries are wiped, so that the
/// new thread starts fresh; the old thread's counters are lost, and counted. If
/// userspace is retiring it right now, userspace deletes them (see
/// `tracer_common::retire`).
#[inline(always)]
pub fn on_new_thread(tid: u32) {
    let Some(m) = EXITED.get_ptr_mut(tid) else { return };
    // SAFETY: a map value; userspace replaces it whole, never in place.
    unsafe {
        if (*m).retiring != 0 {
            // Userspace is deleting the old entries: it counts what this loses.
            (*m).reborn = 1;
            return;
        }
    }
    bump(counter::LOST_REUSED_TID);
    let _ = THREAD_STATS.remove(tid);
    let _ = THREAD_INFO.remove(tid);
    crate::ledger::forget_sched(tid);
    let _ = VCPU_STATE.remove(tid);
    let _ = WATCH.remove(tid);
    let _ = EXITED.remove(tid);
}

assert_named!(sched_process_exit_btf, program::SCHED_PROCESS_EXIT_BTF);
/// tp_btf: `sched_process_exit(struct task_struct *p, ...)`, in the exiting task's
/// context (so `p` is the current task: no argument is read).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    on_exit();
    0
}

assert_named!(sched_process_exit_tp, program::SCHED_PROCESS_EXIT_TP);
/// Classic tracepoint fallback (where tp_btf sched_switch is not usable).
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_tp(_ctx: TracePointContext) -> u32 {
    on_exit();
    0
}
