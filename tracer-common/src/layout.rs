//! Compile-time layout checks of every `#[repr(C)]` type the probes and userspace
//! share through maps: a field added, removed or reordered without a matching change
//! on the other side fails the build here instead of corrupting counters at run time.
//! Each size is the sum of the fields' sizes: no type has implicit padding (padding
//! is an explicit `_pad` field, so that every byte the kernel copies is initialised).

use core::mem::{align_of, size_of};

use crate::{
    CpuState, ThreadCpuStats, ThreadInfo, Window,
    kvm::{ExitStats, HIST_BUCKETS, TidKey, VcpuState},
    ledger::{CpuHistory, HISTORY_LEN, PAIR_CACHE_LEN, PairCache, PairKey, PairStats, ThreadSched, unresolved},
    timeline::TimelineEvent,
};

const _: () = assert!(size_of::<CpuState>() == 8 + 4 + 4 + 8 && align_of::<CpuState>() == 8);
const _: () = assert!(size_of::<Window>() == 8 + 8 + 8);
const _: () = assert!(size_of::<TimelineEvent>() == 8 + 6 * 4 && align_of::<TimelineEvent>() == 8);
const _: () = assert!(size_of::<ThreadCpuStats>() == 6 * 8);
const _: () = assert!(size_of::<ThreadInfo>() == 4 + 4 + 16 && align_of::<ThreadInfo>() == 4);
const _: () = assert!(size_of::<TidKey>() == 4 * 4 && align_of::<TidKey>() == 4);
const _: () = assert!(size_of::<VcpuState>() == 4 * 4 + 8);
const _: () = assert!(size_of::<ExitStats>() == (3 + HIST_BUCKETS) * 8);
// The Mode stored in VcpuState::mode.
const _: () = assert!(size_of::<crate::Mode>() == 4);
const _: () = assert!(
    size_of::<ThreadSched>() == 4 + 4 + 10 * 8 + unresolved::COUNT * 8 + HIST_BUCKETS * 4 + 4 + 4
        && align_of::<ThreadSched>() == 8
);
const _: () = assert!(size_of::<CpuHistory>() == 4 + 4 + 8 + HISTORY_LEN * (8 + 4));
const _: () = assert!(size_of::<PairKey>() == 4 + 4);
const _: () = assert!(size_of::<crate::retire::ExitMark>() == 8 + 8 + 4 + 4);
const _: () = assert!(size_of::<PairStats>() == 8 + 8);
const _: () = assert!(size_of::<PairCache>() == PAIR_CACHE_LEN * (8 + 16) + 4 + 4);
