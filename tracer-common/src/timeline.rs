//! The timeline's records: what the probes stream through the `TIMELINE` ring buffer
//! when `record --timeline` asks for it (the [`crate::Window::flags`] bit
//! [`crate::window_flags::TIMELINE`]). Userspace parses them with the `bytes` crate,
//! field by field in this order, little-endian; never by casting the record.

/// [`TimelineEvent::kind`].
pub mod kind {
    /// `sched_switch` on `cpu`: `tid` (prev) left, `other` (next) came;
    /// `flags` = [`super::SWITCH_PREV_RUNNABLE`] when prev was still runnable.
    pub const SWITCH: u32 = 1;
    /// `sched_wakeup` of a sleeping `tid`; `other` = the task that woke it (the
    /// current task on `cpu`, 0 in an interrupt of the idle task).
    pub const WAKEUP: u32 = 2;
    /// `sched_wakeup_new`: `tid` was born runnable; `other` = its creator.
    pub const WAKEUP_NEW: u32 = 3;
    /// `sched_migrate_task`: `tid` moves to CPU `other` (`cpu` is where the event
    /// fired, not necessarily where it came from).
    pub const MIGRATE: u32 = 4;
}

/// [`kind::SWITCH`] flag: prev left while still runnable (preempted), so its
/// run-queue wait starts now.
pub const SWITCH_PREV_RUNNABLE: u32 = 1;

/// One scheduler event, as the kernel writes it into the ring buffer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TimelineEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC), as the trace window.
    pub ts_ns: u64,
    /// One of [`kind`].
    pub kind: u32,
    /// The CPU the event fired on.
    pub cpu: u32,
    pub tid: u32,
    /// Meaning depends on `kind`.
    pub other: u32,
    pub flags: u32,
    pub _pad: u32,
}

impl TimelineEvent {
    /// Bytes of one record in the ring buffer.
    pub const SIZE: usize = size_of::<TimelineEvent>();
}
