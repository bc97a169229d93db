//! Scheduler tracepoints: on-CPU time, switches, migrations, workload tracking.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use aya_log_ebpf::info;
use tracer_common::{
    ThreadCpuStats, assert_named, counter,
    ledger::{SwitchOut, switch_out_btf, switch_out_classic},
    names::program,
    tp_off,
};

use crate::{
    exit, ledger,
    maps::{
        CPU_STATE, THREAD_INFO, THREAD_STATS, WATCH, bump, charge_current, current_tid, ledger_on, mode_of, now,
        remember_current, task_pid_offset, tp_offset, window,
    },
    timeline,
};

/// The common part of both sched_switch programs. `sched_switch` fires in the context
/// of `prev`, so prev is the current task. Returns true for the first switch seen on
/// this CPU. `how`: how prev left the CPU.
#[inline(always)]
fn on_switch(next_tid: u32, how: SwitchOut, tasks: ledger::Tasks) -> bool {
    bump(counter::SCHED_SWITCH);
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU slot, this CPU only.
    let first = unsafe { (*cpu).switches == 0 };
    let prev = current_tid();
    let (now, w) = (now(), window());
    // SAFETY: per-CPU slot, this CPU only, interrupts off in the scheduler.
    let d = unsafe { (*cpu).switch(now, &w, next_tid) };
    let involuntary = how == SwitchOut::Runnable;
    if ledger_on() {
        ledger::on_switch(prev, next_tid, now, how, &w, tasks);
    }
    if let Some(s) = charge_current(prev, mode_of(prev), d) {
        // SAFETY: per-CPU value returned by the map for this CPU.
        unsafe {
            if (*s).switches == 0 {
                // First switch-out on this CPU: the entry may have been created by a
                // migration, which does not know the thread's identity.
                remember_current(prev);
            }
            (*s).switches += 1;
            if involuntary {
                (*s).involuntary_switches += 1;
            }
        }
    }
    if how == SwitchOut::Dead {
        exit::on_final_switch(prev, now);
    }
    // Last, after the ledger's walk: a branch before it would double the states the
    // verifier explores there (the program outgrew the 1M-instruction budget so).
    if w.timeline() {
        timeline::on_switch(now, prev, next_tid, involuntary);
    }
    first
}

/// Load-time diagnostics (aya-log): once per CPU, that the probe fires there.
#[inline(always)]
fn log_first<C: aya_ebpf::EbpfContext>(ctx: &C, kind: &str) {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    info!(ctx, "sched_switch ({}) fires on cpu {}", kind, cpu);
}

assert_named!(sched_switch_btf, program::SCHED_SWITCH_BTF);
/// tp_btf: args are (bool preempt, task_struct *prev, task_struct *next,
/// unsigned int prev_state) on kernels >= 5.18 (userspace checks the prototype in
/// the kernel's BTF before choosing this program).
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    // Argument indices match the prototype checked at load time.
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // SAFETY: bpf_probe_read_kernel checks the address; the offset comes from BTF.
    let next_tid = unsafe { bpf_probe_read_kernel(next.add(task_pid_offset()) as *const i32) }.unwrap_or(-1) as u32;
    let how = switch_out_btf(preempt & 0xff != 0, prev_state & 0xffff_ffff);
    if on_switch(next_tid, how, Some((prev, next))) {
        log_first(&ctx, "tp_btf");
    }
    0
}

assert_named!(sched_switch_tp, program::SCHED_SWITCH_TP);
/// Classic tracepoint fallback; field offsets come from tracefs at load time.
#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets read from this kernel's format file; read_at checks bounds.
    let prev_state: i64 = unsafe { ctx.read_at(tp_offset(tp_off::SWITCH_PREV_STATE)) }.unwrap_or(1);
    // SAFETY: as above.
    let next_tid: i32 = unsafe { ctx.read_at(tp_offset(tp_off::SWITCH_NEXT_PID)) }.unwrap_or(-1);
    if on_switch(next_tid as u32, switch_out_classic(prev_state as u64), None) {
        log_first(&ctx, "tracepoint");
    }
    0
}

assert_named!(sched_migrate_task, program::SCHED_MIGRATE_TASK);
/// A task moved to another CPU (wakeup placement, load balancing, affinity change).
#[tracepoint(category = "sched", name = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: TracePointContext) -> u32 {
    bump(counter::SCHED_MIGRATE);
    // SAFETY: offset from the format file.
    let Ok(tid) = (unsafe { ctx.read_at::<i32>(tp_offset(tp_off::MIGRATE_PID)) }) else { return 0 };
    let tid = tid as u32;
    let timeline_on = window().timeline();
    if ledger_on() || timeline_on {
        // SAFETY: offset from the format file.
        if let Ok(dest) = unsafe { ctx.read_at::<i32>(tp_offset(tp_off::MIGRATE_DEST_CPU)) } {
            if ledger_on() {
                ledger::on_migrate(tid, dest as u32);
            }
            if timeline_on {
                timeline::on_migrate(now(), tid, dest as u32);
            }
        }
    }
    match THREAD_STATS.get_ptr_mut(tid) {
        // SAFETY: per-CPU value, this CPU only.
        Some(s) => unsafe { (*s).migrations += 1 },
        None => {
            let s = ThreadCpuStats { migrations: 1, ..Default::default() };
            if THREAD_STATS.insert(tid, s, 0).is_err() {
                bump(counter::DROPPED_THREAD_STATS);
            }
        }
    }
    0
}

assert_named!(sched_process_fork, program::SCHED_PROCESS_FORK);
/// Fork/clone: a child of a workload task is a workload task.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    bump(counter::SCHED_FORK);
    // SAFETY: offsets from the format file.
    let parent: i32 = unsafe { ctx.read_at(tp_offset(tp_off::FORK_PARENT_PID)) }.unwrap_or(-1);
    // SAFETY: as above.
    let child: i32 = unsafe { ctx.read_at(tp_offset(tp_off::FORK_CHILD_PID)) }.unwrap_or(-1);
    let (parent, child) = (parent as u32, child as u32);
    exit::on_new_thread(child);
    // SAFETY: value read by copy.
    if unsafe { WATCH.get(parent) }.is_some() && WATCH.insert(child, 1, 0).is_err() {
        bump(counter::DROPPED_WATCH);
    }
    0
}

assert_named!(sched_process_exec, program::SCHED_PROCESS_EXEC);
/// exec: the thread's name changes; keep the new one.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    bump(counter::COMM_UPDATE);
    let tid = current_tid();
    if let Some(info) = THREAD_INFO.get_ptr_mut(tid) {
        // SAFETY: the value belongs to the current task, which only it updates here.
        unsafe { (*info).comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or((*info).comm) };
    }
    0
}

assert_named!(task_rename, program::TASK_RENAME);
/// prctl(PR_SET_NAME) or a write to /proc/<pid>/task/<tid>/comm (how QEMU names its
/// "CPU n/KVM" threads).
#[tracepoint(category = "task", name = "task_rename")]
pub fn task_rename(ctx: TracePointContext) -> u32 {
    bump(counter::COMM_UPDATE);
    // SAFETY: offsets from the format file.
    let Ok(tid) = (unsafe { ctx.read_at::<i32>(tp_offset(tp_off::RENAME_PID)) }) else { return 0 };
    // SAFETY: as above.
    let Ok(comm) = (unsafe { ctx.read_at::<[u8; 16]>(tp_offset(tp_off::RENAME_NEWCOMM)) }) else {
        return 0;
    };
    if let Some(info) = THREAD_INFO.get_ptr_mut(tid as u32) {
        // SAFETY: a plain store of a byte array into the map value.
        unsafe { (*info).comm = comm };
    }
    0
}
