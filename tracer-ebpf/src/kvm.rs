//! KVM tracepoints. Classic tracepoints, with field offsets read from tracefs at load
//! time (they change across kernels). kvm_entry/kvm_exit fire on VT-x and AMD-V hosts;
//! on PVM only the other events do, and are counted per thread.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    counter,
    kvm::{ExitStats, TidKey, VcpuState, basic_exit_reason},
    tp_off,
};

use crate::maps::{
    KVM_EVENTS, USERSPACE_EXITS, VCPU_EXITS, VCPU_STATE, bump, checkpoint_current, current_tid,
    now, tp_offset,
};

#[inline(always)]
fn exit_stats(key: &TidKey) -> Option<*mut ExitStats> {
    if let Some(p) = VCPU_EXITS.get_ptr_mut(key) {
        return Some(p);
    }
    if VCPU_EXITS.insert(key, &ExitStats::default(), 0).is_err() {
        bump(counter::DROPPED_KVM);
        return None;
    }
    VCPU_EXITS.get_ptr_mut(key)
}

#[inline(always)]
fn count(map: &aya_ebpf::maps::HashMap<TidKey, u64>, key: &TidKey) {
    match map.get_ptr_mut(key) {
        // SAFETY: entries keyed by the current tid are only updated by that thread
        // (or, for KVM_EVENTS, races cost at most a count).
        Some(p) => unsafe { *p += 1 },
        None => {
            if map.insert(key, &1, 0).is_err() {
                bump(counter::DROPPED_KVM);
            }
        }
    }
}

/// The KVM state of the current thread, which these events prove is inside KVM_RUN:
/// a thread that entered KVM_RUN before the trace started gets its entry here, and
/// the time until now is counted as inside KVM_RUN.
#[inline(always)]
fn vcpu_state_in_run(tid: u32) -> Option<*mut VcpuState> {
    if let Some(v) = VCPU_STATE.get_ptr_mut(&tid) {
        return Some(v);
    }
    let mut v = VcpuState::default();
    v.on_run_enter();
    if VCPU_STATE.insert(&tid, &v, 0).is_err() {
        bump(counter::DROPPED_KVM);
        return None;
    }
    VCPU_STATE.get_ptr_mut(&tid)
}

#[tracepoint(category = "kvm", name = "kvm_entry")]
pub fn kvm_entry(_ctx: TracePointContext) -> u32 {
    bump(counter::KVM_ENTRY);
    let tid = current_tid();
    let Some(v) = vcpu_state_in_run(tid) else { return 0 };
    let t = now();
    // SAFETY: only this thread updates its own entry.
    checkpoint_current(tid, unsafe { (*v).mode() });
    if let Some(done) = unsafe { (*v).on_entry(t) } {
        let key = TidKey { tid, code: done.reason, isa: done.isa, _pad: 0 };
        if let Some(s) = exit_stats(&key) {
            // SAFETY: as above.
            unsafe { (*s).record_latency(done.latency_ns) };
        }
    }
    0
}

#[tracepoint(category = "kvm", name = "kvm_exit")]
pub fn kvm_exit(ctx: TracePointContext) -> u32 {
    bump(counter::KVM_EXIT);
    let tid = current_tid();
    let Some(v) = vcpu_state_in_run(tid) else { return 0 };
    // SAFETY: offsets from the format file.
    let reason: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_EXIT_REASON)) }.unwrap_or(u32::MAX);
    let isa: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_EXIT_ISA)) }.unwrap_or(0);
    let reason = basic_exit_reason(isa, reason);
    let t = now();
    // SAFETY: only this thread updates its own entry.
    checkpoint_current(tid, unsafe { (*v).mode() });
    unsafe { (*v).on_exit(t, reason, isa) };
    let key = TidKey { tid, code: reason, isa, _pad: 0 };
    if let Some(s) = exit_stats(&key) {
        // SAFETY: as above.
        unsafe { (*s).count += 1 };
    }
    0
}

#[tracepoint(category = "kvm", name = "kvm_userspace_exit")]
pub fn kvm_userspace_exit(ctx: TracePointContext) -> u32 {
    bump(counter::KVM_USERSPACE_EXIT);
    // SAFETY: offset from the format file.
    let reason: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_USERSPACE_EXIT_REASON)) }.unwrap_or(u32::MAX);
    let tid = current_tid();
    // Fires inside KVM_RUN, just before it returns: marks a vCPU thread that entered
    // KVM_RUN before the trace started.
    let _ = vcpu_state_in_run(tid);
    count(&USERSPACE_EXITS, &TidKey { tid, code: reason, isa: 0, _pad: 0 });
    0
}

#[inline(always)]
fn kvm_event(slot: u32) -> u32 {
    bump(counter::KVM_OTHER);
    count(&KVM_EVENTS, &TidKey { tid: current_tid(), code: slot, isa: 0, _pad: 0 });
    0
}

/// The other in-kernel KVM events, counted per thread. A BPF tracepoint program cannot
/// tell which tracepoint fired (the kernel overwrites the record's `common_type` with a
/// pointer before calling it), so each slot is its own program; userspace attaches
/// slot i to the i-th event of its list.
macro_rules! kvm_event_slots {
    ($($name:ident = $slot:expr),*) => {
        $(
            #[tracepoint]
            pub fn $name(_ctx: TracePointContext) -> u32 {
                kvm_event($slot)
            }
        )*
    };
}

kvm_event_slots!(
    kvm_event_0 = 0, kvm_event_1 = 1, kvm_event_2 = 2, kvm_event_3 = 3,
    kvm_event_4 = 4, kvm_event_5 = 5, kvm_event_6 = 6, kvm_event_7 = 7
);
