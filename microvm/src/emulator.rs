//! The emulator (QEMU main loop) thread: device-model work for every exit the vCPUs
//! hand over, plus periodic work on its own timer.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::EmulatorTruth;
use crate::mem::GuestMem;

/// Bytes the emulator checksums on each of its own timer ticks.
const EMU_TICK_BYTES: u64 = 64 << 10;

/// Work the vCPU threads hand to the emulator thread.
pub(crate) enum EmuMsg {
    /// An exit to serve: checksum this guest buffer (like a device reading a DMA buffer).
    Exit { buf: u64, len: u64 },
    /// This vCPU finished (successfully or not).
    Done,
}

/// Where the emulator's own timer work scans guest RAM: tick k reads within window
/// `k % regions`, which starts at `base + (k % regions) * stride` and is `window` bytes long.
pub(crate) struct ScanArea {
    pub(crate) base: u64,
    pub(crate) regions: u32,
    pub(crate) stride: u64,
    pub(crate) window: u64,
}

/// Runs until `vcpus` Done messages arrived (or every sender is gone).
pub(crate) fn emulator_loop(
    mem: &GuestMem,
    vcpus: u32,
    hz: u32,
    scan: ScanArea,
    rx: Receiver<EmuMsg>,
    tid: u32,
    name: String,
) -> EmulatorTruth {
    let period = (hz > 0).then(|| Duration::from_nanos(1_000_000_000 / hz as u64));
    let mut t = EmulatorTruth { tid, name, ..Default::default() };
    let mut done = 0u32;
    let mut next = period.map(|p| Instant::now() + p);
    let mut cursor = 0u64;
    while done < vcpus {
        let msg = match next {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline { Err(RecvTimeoutError::Timeout) } else { rx.recv_timeout(deadline - now) }
            }
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(EmuMsg::Exit { buf, len }) => {
                let h = mem.checksum(buf, len).unwrap_or(0);
                t.digest = t.digest.rotate_left(5) ^ h;
                t.exit_work_items += 1;
                t.bytes_checksummed += len;
            }
            Ok(EmuMsg::Done) => done += 1,
            Err(RecvTimeoutError::Timeout) => {
                // own timer: scan a window of guest RAM (like a display/dirty-log refresh)
                let region = scan.base + (t.timer_work_items % scan.regions as u64) * scan.stride;
                let off = cursor % (scan.window - EMU_TICK_BYTES);
                cursor = cursor.wrapping_add(EMU_TICK_BYTES);
                let h = mem.checksum(region + off, EMU_TICK_BYTES).unwrap_or(0);
                t.digest = t.digest.rotate_left(5) ^ h;
                t.timer_work_items += 1;
                t.bytes_checksummed += EMU_TICK_BYTES;
                next = period.map(|p| next.unwrap() + p);
                if let (Some(nx), Some(p)) = (next, period)
                    && nx + p < Instant::now()
                {
                    next = Some(Instant::now() + p); // fell far behind: do not burst
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    t.work_items = t.exit_work_items + t.timer_work_items;
    t
}
