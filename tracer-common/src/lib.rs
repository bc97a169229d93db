#![cfg_attr(not(test), no_std)]
//! The contract between the eBPF probes (`tracer-ebpf`) and userspace (`vmmtrace`).
//!
//! Everything here is `#[repr(C)]` + `Copy` so that both sides agree on the layout of
//! map keys and values, and the accounting state machines are plain functions so that
//! the exact code the probes run is unit-tested on the host.
//!
//! # The accounting model
//! Each CPU keeps a [`CpuState`] with the time of its last *checkpoint*. Every event
//! that changes what a CPU is doing (a context switch, a thread entering or leaving
//! `ioctl(KVM_RUN)`, a VM entry or exit) is a checkpoint: the time since the previous
//! checkpoint is charged to the thread that was running (always the `current` task of
//! the event, because these tracepoints fire in the context of the outgoing/acting
//! task) in the [`Mode`] it was in. Before a CPU's first event, its clock starts at the
//! trace start; at the end, userspace charges each CPU's open interval to the thread
//! the last switch put on it. So the time charged on a CPU sums to the wall time.

pub mod kvm;
mod layout;
pub mod ledger;
pub mod names;
pub mod retire;
pub mod timeline;

/// Names of the global variables (in `.rodata`) that userspace sets at load time.
pub mod globals {
    /// u32: byte offset of `pid` in `struct task_struct` (from the kernel's BTF).
    pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    /// [u64; 2 * kvm::GUEST_IRQ_RANGES]: [start, end) of the kernel functions in
    /// `kvm::GUEST_IRQ_FUNCTIONS` (from /proc/kallsyms; 0 = absent).
    pub const GUEST_IRQ_TEXT: &str = "GUEST_IRQ_TEXT";
    /// [u32; N]: byte offsets of the fields of classic tracepoint records that the
    /// probes read, indexed by the `OFF_*` constants (from tracefs `format` files).
    pub const TP_OFFSETS: &str = "TP_OFFSETS";
    /// u32, one of `ledger::level`: what of the run-queue states and the preemption
    /// ledger the probes keep (the verifier drops the code of the rest, so each level
    /// costs exactly what it runs).
    pub const LEDGER_ON: &str = "LEDGER_ON";
    /// [u32; ledger::kfield::COUNT]: byte offsets of the kernel's own run-queue
    /// bookkeeping that tp_btf sched_switch reads instead of a sched_wakeup program
    /// (from the kernel's BTF; all 0 = that path is off, see `ledger::kfield`).
    pub const SCHED_INFO_OFFSETS: &str = "SCHED_INFO_OFFSETS";
    /// [u32; kvm_btf_off::COUNT]: where the tp_btf kvm_exit program finds the exit
    /// reason behind its `struct kvm_vcpu *` argument, per backend (from the
    /// kernel's BTF; 0 = that backend's structs are not in the kernel's BTF).
    pub const KVM_BTF_OFFSETS: &str = "KVM_BTF_OFFSETS";
}

/// Indices into the `KVM_BTF_OFFSETS` global: what the classic kvm_exit record's
/// `exit_reason` is copied from (the vendor's `get_exit_info`), as byte offsets.
pub mod kvm_btf_off {
    /// isa 1 (VMX): `vcpu_vmx.exit_reason` relative to its `vcpu` member.
    pub const VMX_EXIT_REASON: usize = 0;
    /// isa 2 (SVM): `vcpu_svm.vmcb` (a pointer) relative to its `vcpu` member...
    pub const SVM_VMCB: usize = 1;
    /// ...and `vmcb.control.exit_code` inside the `struct vmcb` it points to.
    pub const SVM_EXIT_CODE: usize = 2;
    /// Any other isa (PVM): `vcpu_pvm.exit_reason` relative to its `vcpu` member.
    pub const PVM_EXIT_REASON: usize = 3;
    pub const COUNT: usize = 4;
}

/// Indices into the `TP_OFFSETS` global.
pub mod tp_off {
    /// sched:sched_switch `prev_state` (long)
    pub const SWITCH_PREV_STATE: usize = 0;
    /// sched:sched_switch `next_pid` (pid_t)
    pub const SWITCH_NEXT_PID: usize = 1;
    /// sched:sched_migrate_task `pid`
    pub const MIGRATE_PID: usize = 2;
    /// sched:sched_process_fork `parent_pid`
    pub const FORK_PARENT_PID: usize = 3;
    /// sched:sched_process_fork `child_pid`
    pub const FORK_CHILD_PID: usize = 4;
    /// syscalls:sys_enter_ioctl `cmd`
    pub const IOCTL_CMD: usize = 5;
    /// kvm:kvm_exit `exit_reason`
    pub const KVM_EXIT_REASON: usize = 6;
    /// kvm:kvm_exit `isa`
    pub const KVM_EXIT_ISA: usize = 7;
    /// kvm:kvm_userspace_exit `reason`
    pub const KVM_USERSPACE_EXIT_REASON: usize = 8;
    /// task:task_rename `pid`
    pub const RENAME_PID: usize = 9;
    /// task:task_rename `newcomm` (char[16])
    pub const RENAME_NEWCOMM: usize = 10;
    /// sched:sched_wakeup `pid`
    pub const WAKEUP_PID: usize = 11;
    /// sched:sched_wakeup_new `pid`
    pub const WAKEUP_NEW_PID: usize = 12;
    /// sched:sched_migrate_task `dest_cpu`
    pub const MIGRATE_DEST_CPU: usize = 13;
    pub const COUNT: usize = 14;
}

/// What the thread on a CPU is doing, for the split of its on-CPU time.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not inside `ioctl(KVM_RUN)`: ordinary user or kernel work.
    Outside = 0,
    /// Inside `ioctl(KVM_RUN)` but not in guest mode: the host kernel's KVM code
    /// (exit handling, emulation), or the whole of KVM_RUN where no VM-entry
    /// tracepoint fires.
    KvmRun = 1,
    /// Between `kvm_entry` and `kvm_exit`: the guest runs.
    Guest = 2,
}

impl Mode {
    pub const fn from_u32(v: u32) -> Mode {
        match v {
            1 => Mode::KvmRun,
            2 => Mode::Guest,
            _ => Mode::Outside,
        }
    }
}

/// Per-CPU clock of the accounting model (value of the `CPU_STATE` per-CPU array).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuState {
    /// `bpf_ktime_get_ns()` of the last checkpoint on this CPU; 0 = none yet.
    pub last_ts: u64,
    /// Thread put on this CPU by the last context switch; `NO_TID` = not known yet.
    pub curr_tid: u32,
    pub _pad: u32,
    /// Context switches seen on this CPU.
    pub switches: u64,
}

/// `curr_tid` before the first switch on a CPU.
pub const NO_TID: u32 = u32::MAX;

/// The trace window (value of the `CONFIG` array, written by userspace: `start_ns`
/// right after the programs are attached, `stop_ns` when tracing ends).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Window {
    /// `CLOCK_MONOTONIC` ns (the clock of `bpf_ktime_get_ns`); 0 = not started.
    pub start_ns: u64,
    /// 0 = still running.
    pub stop_ns: u64,
    /// [`window_flags`]: what the probes emit besides their counters.
    pub flags: u64,
}

/// Bits of [`Window::flags`]. They live in `CONFIG`, which every hot program already
/// reads, so that an option that is off costs a test of a bit already loaded.
pub mod window_flags {
    /// Stream every switch, wakeup and migration into the `TIMELINE` ring buffer.
    pub const TIMELINE: u64 = 1;
}

impl Window {
    /// Whether the probes stream the timeline's events.
    #[inline(always)]
    pub fn timeline(&self) -> bool {
        self.flags & window_flags::TIMELINE != 0
    }
}

impl CpuState {
    /// Advances this CPU's clock to `now` and returns the ns to charge to the thread
    /// that ran since the previous checkpoint, clipped to the trace window: the first
    /// event after the start charges from the start (the thread it names has been
    /// running since before), and the first event after the stop charges up to the
    /// stop; everything outside the window charges nothing.
    #[inline(always)]
    pub fn advance(&mut self, now: u64, w: &Window) -> u64 {
        let from = if self.last_ts > w.start_ns { self.last_ts } else { w.start_ns };
        let to = if w.stop_ns != 0 && now > w.stop_ns { w.stop_ns } else { now };
        self.last_ts = now;
        if w.start_ns == 0 { 0 } else { to.saturating_sub(from) }
    }

    /// A context switch at `now` to `next_tid`: returns the ns to charge to prev.
    #[inline(always)]
    pub fn switch(&mut self, now: u64, w: &Window, next_tid: u32) -> u64 {
        let d = self.advance(now, w);
        self.curr_tid = next_tid;
        self.switches += 1;
        d
    }
}

/// Per-thread, per-CPU counters (value of the `THREAD_STATS` per-CPU hash, keyed by
/// tid; userspace reads one value per CPU).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadCpuStats {
    /// Time this thread ran on this CPU.
    pub on_cpu_ns: u64,
    /// Of which inside `ioctl(KVM_RUN)` (guest + host-kernel KVM work).
    pub kvm_run_ns: u64,
    /// Of which in guest mode (between kvm_entry and kvm_exit; 0 where they never fire).
    pub guest_ns: u64,
    /// Times switched out on this CPU.
    pub switches: u64,
    /// Of which while still runnable (preempted).
    pub involuntary_switches: u64,
    /// Times moved to another CPU (counted on the CPU that moved it).
    pub migrations: u64,
}

impl ThreadCpuStats {
    /// Charges `ns` of on-CPU time spent in `mode`.
    #[inline(always)]
    pub fn charge(&mut self, mode: Mode, ns: u64) {
        self.on_cpu_ns += ns;
        match mode {
            Mode::Outside => {}
            Mode::KvmRun => self.kvm_run_ns += ns,
            Mode::Guest => {
                self.kvm_run_ns += ns;
                self.guest_ns += ns;
            }
        }
    }

    /// A fresh value holding one charge.
    #[inline(always)]
    pub fn with_charge(mode: Mode, ns: u64) -> Self {
        let mut s = Self::default();
        s.charge(mode, ns);
        s
    }
}

/// Identity of a thread, written the first time it is seen (value of `THREAD_INFO`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadInfo {
    /// Process id (thread group id).
    pub tgid: u32,
    /// Reserved (0).
    pub flags: u32,
    /// `comm` when first seen, NUL-padded.
    pub comm: [u8; 16],
}

/// `prev_state` of a task that is still runnable when switched out (tp_btf argument).
pub const TASK_RUNNING: u64 = 0;
/// The bit the classic sched_switch tracepoint sets in `prev_state` when the switch
/// was a preemption (`TASK_REPORT_MAX`, 0x100 on kernels >= 4.14).
pub const TASK_REPORT_MAX: u64 = 0x100;

/// tp_btf sched_switch: involuntary = preempted, or switched out while still
/// runnable (`prev_state == TASK_RUNNING`, e.g. sched_yield).
#[inline(always)]
pub fn is_involuntary(preempt: bool, prev_state: u64) -> bool {
    preempt || prev_state == TASK_RUNNING
}

/// Classic sched_switch: `prev_state` is the reported state, with
/// [`TASK_REPORT_MAX`] added on preemption; the task was still runnable when no
/// state bit below it is set (shown as "R" or "R+" by the tracepoint).
#[inline(always)]
pub fn is_involuntary_classic(prev_state: u64) -> bool {
    prev_state & (TASK_REPORT_MAX - 1) == 0
}

/// Indices into the `COUNTERS` per-CPU array.
pub mod counter {
    /// Updates lost because `THREAD_STATS` was full.
    pub const DROPPED_THREAD_STATS: u32 = 0;
    /// Inserts lost because `THREAD_INFO` was full.
    pub const DROPPED_THREAD_INFO: u32 = 1;
    /// Inserts lost because `WATCH` (workload tids) was full.
    pub const DROPPED_WATCH: u32 = 2;
    /// Events lost because a KVM map was full.
    pub const DROPPED_KVM: u32 = 3;
    /// sched_switch events handled.
    pub const SCHED_SWITCH: u32 = 4;
    /// sched_migrate_task events handled.
    pub const SCHED_MIGRATE: u32 = 5;
    /// sched_process_fork events handled.
    pub const SCHED_FORK: u32 = 6;
    /// ioctl(KVM_RUN) entries.
    pub const KVM_RUN_ENTER: u32 = 7;
    /// ioctl(KVM_RUN) returns.
    pub const KVM_RUN_EXIT: u32 = 8;
    /// kvm:kvm_entry events.
    pub const KVM_ENTRY: u32 = 9;
    /// kvm:kvm_exit events.
    pub const KVM_EXIT: u32 = 10;
    /// kvm:kvm_userspace_exit events.
    pub const KVM_USERSPACE_EXIT: u32 = 11;
    /// Other in-kernel KVM events (PVM fallback: kvm_pio, kvm_msr, ...).
    pub const KVM_OTHER: u32 = 12;
    /// sched_process_exec and task_rename events (comm updates).
    pub const COMM_UPDATE: u32 = 13;
    /// sched_wakeup events handled.
    pub const SCHED_WAKEUP: u32 = 14;
    /// sched_wakeup_new events handled.
    pub const SCHED_WAKEUP_NEW: u32 = 15;
    /// Threads whose run-queue state was lost because `THREAD_SCHED` was full.
    pub const DROPPED_THREAD_SCHED: u32 = 16;
    /// Context switches whose prev was not the thread the previous switch on that CPU
    /// put there: a switch in between was not reported by the tracepoint.
    pub const MISSED_SWITCH: u32 = 17;
    /// Ledger pairs lost because `LEDGER` was full.
    pub const DROPPED_LEDGER: u32 = 18;
    /// Timeline events lost because the `TIMELINE` ring buffer was full.
    pub const DROPPED_TIMELINE: u32 = 19;
    /// sched_process_exit events handled.
    pub const SCHED_EXIT: u32 = 20;
    /// Exits not marked because `EXITED` was full: those threads stay in the maps
    /// (they are not lost, but not retired either).
    pub const DROPPED_EXITED: u32 = 21;
    /// Threads whose tid was reused before userspace retired them: the new thread
    /// wiped their entries, so their counters since the last read are lost.
    pub const LOST_REUSED_TID: u32 = 22;
    pub const COUNT: u32 = 23;
    /// How many of the first counters count lost data ...
    pub const DROPPED_COUNT: u32 = 4;
    /// ... and every counter of lost data.
    pub const DROPPED: [u32; 9] = [
        DROPPED_THREAD_STATS,
        DROPPED_THREAD_INFO,
        DROPPED_WATCH,
        DROPPED_KVM,
        DROPPED_THREAD_SCHED,
        DROPPED_LEDGER,
        DROPPED_TIMELINE,
        DROPPED_EXITED,
        LOST_REUSED_TID,
    ];
    /// The report's name of each counter of [`DROPPED`], by cause.
    pub const DROPPED_NAMES: [&str; 9] = [
        "thread_stats_full",
        "thread_info_full",
        "watch_full",
        "kvm_map_full",
        "thread_sched_full",
        "ledger_full",
        "timeline_full",
        "exited_full",
        "tid_reused_before_retired",
    ];
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain #[repr(C)] integer structs with explicit padding fields; every bit
    // pattern is valid.
    unsafe impl aya::Pod for CpuState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Window {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ThreadCpuStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ThreadInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ledger::ThreadSched {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ledger::CpuHistory {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ledger::PairKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ledger::PairStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ledger::PairCache {}
    // SAFETY: as above.
    unsafe impl aya::Pod for timeline::TimelineEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for retire::ExitMark {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { start_ns: 1_000, stop_ns: 0, flags: 0 };

    #[test]
    fn first_event_charges_from_trace_start() {
        let mut c = CpuState { last_ts: 400, ..Default::default() }; // seen before the start
        assert_eq!(c.switch(1_500, &W, 7), 500);
        assert_eq!(c.curr_tid, 7);
        assert_eq!(c.switch(2_000, &W, 8), 500);
        assert_eq!(c.switches, 2);
    }

    #[test]
    fn nothing_is_charged_before_the_start() {
        let mut c = CpuState::default();
        assert_eq!(c.advance(500, &Window::default()), 0);
        assert_eq!(c.last_ts, 500);
        assert_eq!(c.advance(1_200, &W), 200);
    }

    #[test]
    fn first_event_after_the_stop_closes_the_window() {
        let w = Window { start_ns: 1_000, stop_ns: 3_000, flags: 0 };
        let mut c = CpuState::default();
        assert_eq!(c.advance(2_000, &w), 1_000);
        assert_eq!(c.advance(5_000, &w), 1_000); // up to the stop only
        assert_eq!(c.advance(6_000, &w), 0);
    }

    #[test]
    fn checkpoints_partition_the_window() {
        // Whatever the sequence of checkpoints, the charged deltas add up to the
        // window: nothing lost, nothing counted twice.
        let w = Window { start_ns: 100, stop_ns: 4_000, flags: 0 };
        let mut c = CpuState { last_ts: 50, ..Default::default() };
        let mut total = 0;
        for (i, t) in [150u64, 150, 400, 401, 999, 5_000, 6_000].iter().enumerate() {
            total += if i % 2 == 0 { c.advance(*t, &w) } else { c.switch(*t, &w, i as u32) };
        }
        assert_eq!(total, 4_000 - 100);
    }

    #[test]
    fn a_clock_going_backwards_charges_nothing() {
        let mut c = CpuState { last_ts: 1_500, ..Default::default() };
        assert_eq!(c.advance(1_400, &W), 0);
    }

    #[test]
    fn charge_splits_by_mode() {
        let mut s = ThreadCpuStats::default();
        s.charge(Mode::Outside, 10);
        s.charge(Mode::KvmRun, 20);
        s.charge(Mode::Guest, 30);
        assert_eq!((s.on_cpu_ns, s.kvm_run_ns, s.guest_ns), (60, 50, 30));
        assert_eq!(Mode::from_u32(2), Mode::Guest);
        assert_eq!(Mode::from_u32(99), Mode::Outside);
    }

    #[test]
    fn involuntary_means_still_runnable_or_preempted() {
        assert!(is_involuntary(false, TASK_RUNNING));
        assert!(is_involuntary(true, 1));
        assert!(!is_involuntary(false, 1)); // TASK_INTERRUPTIBLE: went to sleep
        assert!(is_involuntary_classic(0)); // "R"
        assert!(is_involuntary_classic(TASK_REPORT_MAX)); // "R+": preempted
        assert!(!is_involuntary_classic(1)); // "S"
        assert!(!is_involuntary_classic(2)); // "D"
    }
}
