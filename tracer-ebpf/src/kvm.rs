//! KVM tracepoints. Classic tracepoints, with field offsets read from tracefs at load
//! time (they change across kernels). kvm_entry/kvm_exit fire on VT-x and AMD-V hosts;
//! on PVM only the other events do, and are counted per thread.

use aya_ebpf::{
    macros::{perf_event, tracepoint},
    programs::{PerfEventContext, TracePointContext},
};
use tracer_common::{
    assert_named, counter,
    kvm::{ExitStats, SAMPLE_GUEST, SAMPLE_HOST_KVM, TidKey, VcpuState, basic_exit_reason},
    names::program,
    tp_off,
};

use crate::maps::{
    GUEST_SAMPLES, KVM_EVENTS, USERSPACE_EXITS, VCPU_EXITS, VCPU_STATE, bump, checkpoint_current, current_tid,
    get_or_insert, guest_irq_range, now, tp_offset, window,
};

#[inline(always)]
fn exit_stats(key: &TidKey) -> Option<*mut ExitStats> {
    get_or_insert(&VCPU_EXITS, key, &ExitStats::default(), counter::DROPPED_KVM)
}

#[inline(always)]
fn count(map: &aya_ebpf::maps::HashMap<TidKey, u64>, key: &TidKey) {
    if let Some(p) = get_or_insert(map, key, &0, counter::DROPPED_KVM) {
        // SAFETY: entries keyed by the current tid are only updated by that thread
        // (or, for KVM_EVENTS, races cost at most a count).
        unsafe { *p += 1 };
    }
}

/// The KVM state of the current thread, which these events prove is inside KVM_RUN:
/// a thread that entered KVM_RUN before the trace started gets its entry here, and
/// the time until now is counted as inside KVM_RUN.
#[inline(always)]
fn vcpu_state_in_run(tid: u32) -> Option<*mut VcpuState> {
    let mut v = VcpuState::default();
    v.on_run_enter();
    get_or_insert(&VCPU_STATE, &tid, &v, counter::DROPPED_KVM)
}

assert_named!(kvm_entry, program::KVM_ENTRY);
#[tracepoint(category = "kvm", name = "kvm_entry")]
pub fn kvm_entry(_ctx: TracePointContext) -> u32 {
    bump(counter::KVM_ENTRY);
    let tid = current_tid();
    let Some(v) = vcpu_state_in_run(tid) else { return 0 };
    let t = now();
    // SAFETY: only this thread updates its own entry.
    checkpoint_current(tid, unsafe { (*v).mode() });
    // SAFETY: as above.
    if let Some(done) = unsafe { (*v).on_entry(t) } {
        let key = TidKey { tid, code: done.reason, isa: done.isa, _pad: 0 };
        if let Some(s) = exit_stats(&key) {
            // SAFETY: as above.
            unsafe { (*s).record_latency(done.latency_ns) };
        }
    }
    0
}

assert_named!(kvm_exit, program::KVM_EXIT);
#[tracepoint(category = "kvm", name = "kvm_exit")]
pub fn kvm_exit(ctx: TracePointContext) -> u32 {
    bump(counter::KVM_EXIT);
    let tid = current_tid();
    let Some(v) = vcpu_state_in_run(tid) else { return 0 };
    // SAFETY: offsets from the format file.
    let reason: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_EXIT_REASON)) }.unwrap_or(u32::MAX);
    // SAFETY: as above.
    let isa: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_EXIT_ISA)) }.unwrap_or(0);
    let reason = basic_exit_reason(isa, reason);
    let t = now();
    // SAFETY: only this thread updates its own entry.
    checkpoint_current(tid, unsafe { (*v).mode() });
    // SAFETY: as above.
    unsafe { (*v).on_exit(t, reason, isa) };
    let key = TidKey { tid, code: reason, isa, _pad: 0 };
    if let Some(s) = exit_stats(&key) {
        // SAFETY: as above.
        unsafe { (*s).count += 1 };
    }
    0
}

assert_named!(kvm_userspace_exit, program::KVM_USERSPACE_EXIT);
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
            assert_named!($name, program::KVM_EVENT[$slot]);
            #[tracepoint]
            pub fn $name(_ctx: TracePointContext) -> u32 {
                kvm_event($slot)
            }
        )*
    };
}

kvm_event_slots!(
    kvm_event_0 = 0,
    kvm_event_1 = 1,
    kvm_event_2 = 2,
    kvm_event_3 = 3,
    kvm_event_4 = 4,
    kvm_event_5 = 5,
    kvm_event_6 = 6,
    kvm_event_7 = 7
);

/// Sampled guest time, for KVM backends where kvm_entry/kvm_exit never fire: on every
/// tick of a per-CPU cpu-clock event, a thread inside KVM_RUN is either running guest
/// code or the host kernel's KVM code. The sample was taken while the guest ran when
/// the interrupted context is user mode (inside an ioctl, only guest code runs there)
/// or the kernel function that takes a host interrupt which arrived during guest
/// execution (PVM: pvm_do_event_irqoff; VMX: vmx_do_interrupt_irqoff), whose address
/// ranges userspace finds in /proc/kallsyms.
#[inline(always)]
fn in_guest_irq_handoff(rip: u64) -> bool {
    let mut i = 0;
    while i < tracer_common::kvm::GUEST_IRQ_RANGES {
        let (start, end) = guest_irq_range(i);
        if start != 0 && rip >= start && rip < end {
            return true;
        }
        i += 1;
    }
    false
}

assert_named!(guest_sample, program::GUEST_SAMPLE);
#[perf_event]
pub fn guest_sample(ctx: PerfEventContext) -> u32 {
    // Only samples inside the trace window count.
    let w = window();
    if w.start_ns == 0 || (w.stop_ns != 0 && now() > w.stop_ns) {
        return 0;
    }
    let tid = current_tid();
    // SAFETY: the value is read by copy.
    let Some(v) = (unsafe { VCPU_STATE.get(tid) }) else { return 0 };
    if v.mode() == tracer_common::Mode::Outside {
        return 0;
    }
    // SAFETY: the verifier allows reading the sampled registers from the context.
    let (cs, rip) = unsafe { ((*ctx.ctx).regs.cs, (*ctx.ctx).regs.rip) };
    let code = if cs & 3 == 3 || in_guest_irq_handoff(rip) { SAMPLE_GUEST } else { SAMPLE_HOST_KVM };
    count(&GUEST_SAMPLES, &TidKey { tid, code, isa: 0, _pad: 0 });
    0
}
