//! Retiring threads that exited, so that the per-thread maps stay bounded on a host
//! that starts thousands of processes a minute.
//!
//! `sched_process_exit` marks the thread in `EXITED` ([`ExitMark::exit_ns`]). The
//! thread still runs after that tracepoint (the rest of `do_exit`), and its last
//! `sched_switch` (prev_state `TASK_DEAD`) charges that time; that switch sets
//! [`ExitMark::final_switch_ns`]. Only then are its counters final, and userspace
//! carries them into its own records and deletes the thread from every map keyed by
//! tid. A new thread that gets the tid of a marked thread (its fork) wipes the old
//! entries first, so that it never inherits them (counted: the old thread's counters
//! were not carried yet). Userspace reads the entries, sets [`ExitMark::retiring`]
//! (which fails if a fork took the mark meanwhile: then what it read is dropped),
//! deletes the entries, then the mark; a fork that sees `retiring` leaves the
//! entries alone and sets [`ExitMark::reborn`], and userspace counts the new
//! thread's first charges as lost. Every race ends in exact totals or a count.

/// Value of the `EXITED` hash (keyed by tid).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ExitMark {
    /// `sched_process_exit` time.
    pub exit_ns: u64,
    /// The final switch-out (`TASK_DEAD`); 0 = not yet: the thread still runs.
    pub final_switch_ns: u64,
    /// Set by userspace while it retires the thread (it deletes its entries next).
    pub retiring: u32,
    /// Set by a fork that took the tid while userspace was retiring it: the new
    /// thread's first charges may have been deleted with the old thread's entries
    /// (userspace counts it as lost).
    pub reborn: u32,
}

impl ExitMark {
    /// Whether the thread's counters are final (it will never run again).
    pub fn is_final(&self) -> bool {
        self.final_switch_ns != 0
    }
}
