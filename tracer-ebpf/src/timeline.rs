//! The timeline (`record --timeline`): every switch, wakeup and migration, streamed
//! to userspace through a ring buffer. Each program calls in here once, behind the
//! `Window::timeline()` bit of the `CONFIG` value it already holds, so tracing without
//! a timeline pays one test of that bit. A full ring buffer is counted, never silent.

use aya_ebpf::{helpers::bpf_get_smp_processor_id, macros::map, maps::RingBuf};
use tracer_common::{
    assert_named, counter,
    names::map,
    timeline::{SWITCH_PREV_RUNNABLE, TimelineEvent, kind},
};

use crate::maps::bump;

/// The records of [`TimelineEvent`]. Its size is set by userspace at load time (one
/// page when the timeline is off).
#[map]
pub static TIMELINE: RingBuf = RingBuf::with_byte_size(4096, 0);
assert_named!(TIMELINE, map::TIMELINE);

/// Userspace drains the buffer on its own clock: no wakeup per record, which would
/// cost an irq_work on every context switch.
const BPF_RB_NO_WAKEUP: u64 = 1;

#[inline(always)]
fn emit(ts_ns: u64, kind: u32, tid: u32, other: u32, flags: u32) {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let event = TimelineEvent { ts_ns, kind, cpu, tid, other, flags, _pad: 0 };
    if TIMELINE.output::<TimelineEvent>(&event, BPF_RB_NO_WAKEUP).is_err() {
        bump(counter::DROPPED_TIMELINE);
    }
}

/// A context switch on this CPU at `now`.
#[inline(always)]
pub fn on_switch(now: u64, prev: u32, next: u32, prev_runnable: bool) {
    let flags = if prev_runnable { SWITCH_PREV_RUNNABLE } else { 0 };
    emit(now, kind::SWITCH, prev, next, flags);
}

/// A sleeping `tid` woken by `waker` at `now`.
#[inline(always)]
pub fn on_wakeup(now: u64, tid: u32, waker: u32) {
    emit(now, kind::WAKEUP, tid, waker, 0);
}

/// A new thread `tid`, runnable for the first time, created by `creator`.
#[inline(always)]
pub fn on_wakeup_new(now: u64, tid: u32, creator: u32) {
    emit(now, kind::WAKEUP_NEW, tid, creator, 0);
}

/// `tid` moves to `dest_cpu`.
#[inline(always)]
pub fn on_migrate(now: u64, tid: u32, dest_cpu: u32) {
    emit(now, kind::MIGRATE, tid, dest_cpu, 0);
}
