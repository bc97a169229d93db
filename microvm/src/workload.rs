//! The workload's parameter block (shared with the C code) and its native twin.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::layout::{PARAMS_OFF, user_region, vcpu_block};
use crate::mem::GuestMem;
use crate::{Config, Error};

/// Which CPU-bound job the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Real libbz2: generate seeded text, compress (level 9), decompress, verify.
    Bzip2,
    /// A pure xorshift64 compute loop with an exactly known result.
    Loop,
    /// Test only: the guest executes `ud2` at CPL3 (checks guest-fault reporting).
    #[doc(hidden)]
    #[value(skip)]
    FaultTest,
}

impl Workload {
    pub(crate) fn code(self) -> u32 {
        match self {
            Workload::Loop => 0,
            Workload::Bzip2 => 1,
            Workload::FaultTest => 2,
        }
    }
}

/// `struct wl_params` of guest/workload.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WlParams {
    pub workload: u32,
    pub vcpu: u32,
    pub work_units: u64,
    pub exit_every: u64,
    pub bz_bytes: u32,
    pub loop_iters: u32,
    pub heap_lo: u64,
    pub heap_hi: u64,
    pub heap_cur: u64,
    pub units_done: u64,
    pub checksum: u64,
    pub status: i64,
    pub io_buf: u64,
    pub io_len: u64,
}

type ProgressFn = extern "C" fn(*mut WlParams, u64);

unsafe extern "C" {
    fn wl_run(p: *mut WlParams, progress: ProgressFn) -> i64;
    fn wl_loop_unit(state: *mut u64, iters: u32) -> u64;
}

extern "C" fn native_progress(_p: *mut WlParams, _units: u64) {}

/// Result of running the workload natively on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeResult {
    pub work_units: u64,
    pub checksum: u64,
    pub status: i64,
    pub elapsed: Duration,
}

/// Heap bytes a vCPU's job needs (same bound for the native twin).
pub(crate) const HEAP_BYTES: u64 = crate::layout::USER_REGION - crate::layout::USER_STACK_RESERVE;

/// Writes vCPU `i`'s parameter block into its block in guest memory.
pub(crate) fn write_params(mem: &GuestMem, cfg: &Config, i: u32) -> Result<(), Error> {
    let region = user_region(i);
    let p = WlParams {
        workload: cfg.workload.code(),
        vcpu: i,
        work_units: cfg.work,
        exit_every: cfg.exit_every,
        bz_bytes: cfg.bzip2_unit_bytes,
        loop_iters: cfg.loop_unit_iters,
        heap_lo: region,
        heap_hi: region + HEAP_BYTES,
        ..Default::default()
    };
    // SAFETY: WlParams is repr(C) plain data.
    let bytes = unsafe { std::slice::from_raw_parts(&p as *const WlParams as *const u8, size_of::<WlParams>()) };
    mem.write(vcpu_block(i) + PARAMS_OFF, bytes)
}

/// Runs, on the calling host thread, exactly the computation vCPU `vcpu` does in the
/// guest: the same C code (guest/workload.c + libbz2) compiled for the host.
pub fn run_native(
    workload: Workload,
    vcpu: u32,
    work_units: u64,
    bzip2_unit_bytes: u32,
    loop_unit_iters: u32,
) -> NativeResult {
    assert!(workload != Workload::FaultTest, "the fault test workload only runs in the guest");
    let mut heap = vec![0u8; HEAP_BYTES as usize];
    let lo = heap.as_mut_ptr() as u64;
    let mut p = WlParams {
        workload: workload.code(),
        vcpu,
        work_units,
        exit_every: 0,
        bz_bytes: bzip2_unit_bytes,
        loop_iters: loop_unit_iters,
        heap_lo: lo,
        heap_hi: lo + HEAP_BYTES,
        ..Default::default()
    };
    let t0 = Instant::now();
    // SAFETY: p points to a valid parameter block whose heap is `heap`, alive for the call.
    let st = unsafe { wl_run(&mut p, native_progress) };
    let elapsed = t0.elapsed();
    drop(heap);
    NativeResult { work_units: p.units_done, checksum: p.checksum, status: st, elapsed }
}

/// The loop workload's result computed in pure Rust (independent of the C code).
pub fn loop_reference(vcpu: u32, work_units: u64, loop_unit_iters: u32) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (vcpu as u64 + 1);
    let mut sum: u64 = 0;
    for _ in 0..work_units {
        let mut acc: u64 = 0;
        for _ in 0..loop_unit_iters {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc = acc.wrapping_add(x.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        sum = sum.wrapping_mul(31).wrapping_add(acc);
    }
    sum
}

/// One unit of the loop computed by the host build of the C code (for cross-checks).
pub fn loop_unit_native(state: &mut u64, iters: u32) -> u64 {
    // SAFETY: plain computation on a u64.
    unsafe { wl_loop_unit(state, iters) }
}
