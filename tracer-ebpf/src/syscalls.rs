//! ioctl(KVM_RUN) entry and return: marks vCPU threads and splits their on-CPU time
//! into inside KVM_RUN (guest + host kernel KVM work) and outside (VMM userspace).
//! Works on every KVM backend, PVM included.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    Mode, assert_named, counter,
    kvm::{KVM_RUN, VcpuState},
    names::program,
    tp_off,
};

use crate::maps::{VCPU_STATE, bump, checkpoint_current, current_tid, get_or_insert, tp_offset};

assert_named!(sys_enter_ioctl, program::SYS_ENTER_IOCTL);
#[tracepoint(category = "syscalls", name = "sys_enter_ioctl")]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the format file.
    let cmd: u64 = unsafe { ctx.read_at(tp_offset(tp_off::IOCTL_CMD)) }.unwrap_or(0);
    if cmd & 0xffff_ffff != KVM_RUN {
        return 0;
    }
    bump(counter::KVM_RUN_ENTER);
    let tid = current_tid();
    // A new entry starts Outside, the mode the thread was in until now.
    match get_or_insert(&VCPU_STATE, &tid, &VcpuState::default(), counter::DROPPED_KVM) {
        Some(v) => {
            // SAFETY: only this thread updates its own entry.
            checkpoint_current(tid, unsafe { (*v).mode() });
            // SAFETY: as above.
            unsafe { (*v).on_run_enter() };
        }
        None => checkpoint_current(tid, Mode::Outside),
    }
    0
}

assert_named!(sys_exit_ioctl, program::SYS_EXIT_IOCTL);
/// Any ioctl return of a thread that is inside KVM_RUN is the return of KVM_RUN
/// (a thread makes one syscall at a time).
#[tracepoint(category = "syscalls", name = "sys_exit_ioctl")]
pub fn sys_exit_ioctl(_ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    let Some(v) = VCPU_STATE.get_ptr_mut(tid) else { return 0 };
    // SAFETY: only this thread updates its own entry.
    let mode = unsafe { (*v).mode() };
    if mode == Mode::Outside {
        return 0;
    }
    bump(counter::KVM_RUN_EXIT);
    checkpoint_current(tid, mode);
    // SAFETY: as above.
    unsafe { (*v).on_run_exit() };
    0
}
