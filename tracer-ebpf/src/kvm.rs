//! KVM tracepoints, each program twice: tp_btf (arguments are the tracepoint's
//! TP_PROTO arguments, struct fields found through offsets read from the kernel's BTF
//! at load time; needs no tracefs) and the classic tracepoint (record fields at
//! offsets read from tracefs at load time), the fallback. Both twins share one body,
//! so they count exactly the same. kvm_entry/kvm_exit fire on VT-x and AMD-V hosts;
//! on PVM only the other events do, and are counted per thread.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, perf_event, tracepoint},
    programs::{BtfTracePointContext, PerfEventContext, TracePointContext},
};
use tracer_common::{
    assert_named, counter,
    kvm::{ExitStats, SAMPLE_GUEST, SAMPLE_HOST_KVM, TidKey, VcpuState, basic_exit_reason},
    kvm_btf_off,
    names::program,
    tp_off,
};

use crate::maps::{
    GUEST_SAMPLES, KVM_EVENTS, USERSPACE_EXITS, VCPU_EXITS, VCPU_STATE, bump, checkpoint_current, current_tid,
    get_or_insert, guest_irq_range, kvm_btf_offset, now, tp_offset, window,
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
    on_kvm_entry();
    0
}

assert_named!(kvm_entry_btf, program::KVM_ENTRY_BTF);
/// tp_btf: args are (struct kvm_vcpu *vcpu, bool force_immediate_exit); neither is read.
#[btf_tracepoint(function = "kvm_entry")]
pub fn kvm_entry_btf(_ctx: BtfTracePointContext) -> i32 {
    on_kvm_entry();
    0
}

#[inline(always)]
fn on_kvm_entry() {
    bump(counter::KVM_ENTRY);
    let tid = current_tid();
    let Some(v) = vcpu_state_in_run(tid) else { return };
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
}

assert_named!(kvm_exit, program::KVM_EXIT);
#[tracepoint(category = "kvm", name = "kvm_exit")]
pub fn kvm_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the format file.
    let reason: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_EXIT_REASON)) }.unwrap_or(u32::MAX);
    // SAFETY: as above.
    let isa: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_EXIT_ISA)) }.unwrap_or(0);
    on_kvm_exit(reason, isa);
    0
}

assert_named!(kvm_exit_btf, program::KVM_EXIT_BTF);
/// tp_btf: args are (struct kvm_vcpu *vcpu, u32 isa). The classic record's
/// `exit_reason` is what the vendor's `get_exit_info` copies from its vCPU struct,
/// which embeds `vcpu`: read from there, at offsets userspace resolved in the BTF.
#[btf_tracepoint(function = "kvm_exit")]
pub fn kvm_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let vcpu: *const u8 = ctx.arg(0);
    let isa = ctx.arg::<u64>(1) as u32;
    on_kvm_exit(exit_reason_behind(vcpu, isa), isa);
    0
}

/// The exit reason the vendor code of `isa` keeps for `vcpu`; u32::MAX where its
/// structs were not in the kernel's BTF (the read fails as the classic read would).
#[inline(always)]
fn exit_reason_behind(vcpu: *const u8, isa: u32) -> u32 {
    let read_u32 = |at: *const u8| {
        // SAFETY: bpf_probe_read_kernel checks the address; offsets come from BTF.
        unsafe { bpf_probe_read_kernel(at as *const u32) }.unwrap_or(u32::MAX)
    };
    match isa {
        1 => match kvm_btf_offset(kvm_btf_off::VMX_EXIT_REASON) {
            0 => u32::MAX,
            off => read_u32(vcpu.wrapping_add(off)),
        },
        2 => {
            let (vmcb_at, code_at) =
                (kvm_btf_offset(kvm_btf_off::SVM_VMCB), kvm_btf_offset(kvm_btf_off::SVM_EXIT_CODE));
            if vmcb_at == 0 {
                return u32::MAX;
            }
            // SAFETY: as above.
            match unsafe { bpf_probe_read_kernel(vcpu.wrapping_add(vmcb_at) as *const *const u8) } {
                // exit_code is a u64 on newer kernels, the record's field a u32: its low half.
                Ok(vmcb) => read_u32(vmcb.wrapping_add(code_at)),
                Err(_) => u32::MAX,
            }
        }
        _ => match kvm_btf_offset(kvm_btf_off::PVM_EXIT_REASON) {
            0 => u32::MAX,
            off => read_u32(vcpu.wrapping_add(off)),
        },
    }
}

#[inline(always)]
fn on_kvm_exit(reason: u32, isa: u32) {
    bump(counter::KVM_EXIT);
    let tid = current_tid();
    let Some(v) = vcpu_state_in_run(tid) else { return };
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
}

assert_named!(kvm_userspace_exit, program::KVM_USERSPACE_EXIT);
#[tracepoint(category = "kvm", name = "kvm_userspace_exit")]
pub fn kvm_userspace_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the format file.
    let reason: u32 = unsafe { ctx.read_at(tp_offset(tp_off::KVM_USERSPACE_EXIT_REASON)) }.unwrap_or(u32::MAX);
    on_userspace_exit(reason);
    0
}

assert_named!(kvm_userspace_exit_btf, program::KVM_USERSPACE_EXIT_BTF);
/// tp_btf: args are (__u32 reason, int errno).
#[btf_tracepoint(function = "kvm_userspace_exit")]
pub fn kvm_userspace_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_userspace_exit(ctx.arg::<u64>(0) as u32);
    0
}

#[inline(always)]
fn on_userspace_exit(reason: u32) {
    bump(counter::KVM_USERSPACE_EXIT);
    let tid = current_tid();
    // Fires inside KVM_RUN, just before it returns: marks a vCPU thread that entered
    // KVM_RUN before the trace started.
    let _ = vcpu_state_in_run(tid);
    count(&USERSPACE_EXITS, &TidKey { tid, code: reason, isa: 0, _pad: 0 });
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
/// slot i to the i-th event of its list. Each slot has a tp_btf twin (no argument is
/// read), loaded for its event's BTF prototype.
macro_rules! kvm_event_slots {
    ($($name:ident, $btf_name:ident = $slot:expr),*) => {
        $(
            assert_named!($name, program::KVM_EVENT[$slot]);
            #[tracepoint]
            pub fn $name(_ctx: TracePointContext) -> u32 {
                kvm_event($slot)
            }

            assert_named!($btf_name, program::KVM_EVENT_BTF[$slot]);
            #[btf_tracepoint]
            pub fn $btf_name(_ctx: BtfTracePointContext) -> i32 {
                kvm_event($slot) as i32
            }
        )*
    };
}

kvm_event_slots!(
    kvm_event_0,
    kvm_event_btf_0 = 0,
    kvm_event_1,
    kvm_event_btf_1 = 1,
    kvm_event_2,
    kvm_event_btf_2 = 2,
    kvm_event_3,
    kvm_event_btf_3 = 3,
    kvm_event_4,
    kvm_event_btf_4 = 4,
    kvm_event_5,
    kvm_event_btf_5 = 5,
    kvm_event_6,
    kvm_event_btf_6 = 6,
    kvm_event_7,
    kvm_event_btf_7 = 7
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
