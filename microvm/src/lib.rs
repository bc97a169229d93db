//! A real KVM VM with no image (issue 3).
//!
//! A tiny CPL0 stub sets up the IDT and the guest x2APIC timer, then drops each vCPU
//! to CPL3 (IOPL=3), where a CPU-bound workload runs natively: real libbz2 or a pure
//! compute loop. Every K work units the guest leaves to the VMM with `out` (a
//! userspace exit); the timer gives in-kernel exits. Each VM has an emulator thread
//! doing device-model work per exit and on its own timer, as QEMU's main loop does.
//! vCPU threads are named `CPU n/KVM` as QEMU names them. See docs/microvm.md.
//!
//! ```no_run
//! let cfg = microvm::Config { vcpus: 2, work: 8, ..Default::default() };
//! let vm = microvm::spawn(&cfg)?;          // vCPUs are in KVM_RUN from here
//! println!("vCPU tids {:?}", vm.vcpu_tids());
//! let truth = vm.wait()?;
//! # Ok::<(), microvm::Error>(())
//! ```

mod boot;
pub mod cli;
pub mod elf;
mod emulator;
mod error;
pub mod guest_program;
pub mod layout;
mod mem;
pub mod sys;
mod vcpu;
mod vm;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use workload::{NativeResult, Workload, loop_reference, loop_unit_native, run_native};

/// What to run. `Default` is 1 vCPU of bzip2, 16 units, an exit every unit, 250 Hz timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Number of vCPUs (1..=64), each running the whole workload on its own data.
    pub vcpus: u32,
    pub workload: Workload,
    /// Work units per vCPU (>= 1).
    pub work: u64,
    /// A userspace exit (OUT to port 0x10) every K units; 0 = never.
    pub exit_every: u64,
    /// Guest x2APIC periodic timer frequency; 0 = no timer.
    pub timer_hz: u32,
    /// vCPU i is pinned to `pin_vcpus[i % len]`.
    pub pin_vcpus: Option<Vec<usize>>,
    /// The emulator thread's CPU affinity.
    pub pin_emulator: Option<Vec<usize>>,
    /// bzip2: input bytes generated, compressed, decompressed and verified per unit.
    pub bzip2_unit_bytes: u32,
    /// loop: xorshift iterations per unit.
    pub loop_unit_iters: u32,
    /// Emulator thread's own timer frequency (device-model work per tick); 0 = none.
    pub emulator_hz: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vcpus: 1,
            workload: Workload::Bzip2,
            work: 16,
            exit_every: 1,
            timer_hz: 250,
            pin_vcpus: None,
            pin_emulator: None,
            bzip2_unit_bytes: 256 << 10,
            loop_unit_iters: 1 << 16,
            emulator_hz: 100,
        }
    }
}

impl Config {
    /// Checks the options; the error says which one is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vcpus < 1 || self.vcpus > layout::MAX_VCPUS {
            return bad(format!("--vcpus {} out of range 1..={}", self.vcpus, layout::MAX_VCPUS));
        }
        if self.work < 1 {
            return bad("--work must be >= 1".into());
        }
        if self.timer_hz > 100_000 {
            return bad(format!("--timer-hz {} too high (max 100000; 0 = no timer)", self.timer_hz));
        }
        if self.emulator_hz > 100_000 {
            return bad(format!("emulator timer {} Hz too high (max 100000)", self.emulator_hz));
        }
        if self.bzip2_unit_bytes < 1 || self.bzip2_unit_bytes > 4 << 20 {
            return bad(format!("bzip2 unit of {} bytes out of range 1..=4 MiB", self.bzip2_unit_bytes));
        }
        if self.loop_unit_iters < 1 {
            return bad("loop unit iterations must be >= 1".into());
        }
        let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        for (flag, l) in [("--pin-vcpus", &self.pin_vcpus), ("--pin-emulator", &self.pin_emulator)] {
            if let Some(l) = l {
                if l.is_empty() {
                    return bad(format!("{flag}: empty CPU list"));
                }
                if let Some(c) = l.iter().find(|&&c| c >= libc::CPU_SETSIZE as usize) {
                    return bad(format!("{flag}: CPU {c} does not exist (this host has {ncpu} usable CPUs)"));
                }
            }
        }
        Ok(())
    }

    /// Number of progress (port I/O) exits each vCPU makes: `work / exit_every`.
    pub fn expected_progress_exits(&self) -> u64 {
        self.work.checked_div(self.exit_every).unwrap_or(0)
    }
}

/// Exact ground truth of one vCPU, counted by the VMM (exits) and the guest (timer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuTruth {
    pub index: u32,
    /// Thread id of the vCPU thread (the thread that calls KVM_RUN).
    pub tid: u32,
    /// Thread name, `CPU {index}/KVM`.
    pub name: String,
    /// Every return of KVM_RUN to userspace by reason: "io", "hlt", "intr", ...
    pub exits: BTreeMap<String, u64>,
    /// KVM_RUN calls made (= sum of `exits`).
    pub kvm_run_calls: u64,
    /// The "io" exits that were progress exits (port 0x10): exactly work / exit_every.
    /// The other io exit is the final "done" OUT to port 0x11.
    pub progress_exits: u64,
    /// Guest timer interrupts taken (counted by the guest ISR). These are in-kernel
    /// exits: they never return to userspace, so they are not in `exits`.
    pub timer_interrupts: u64,
    pub work_units: u64,
    /// Result checksum of the workload (compare with `run_native`/`loop_reference`).
    pub checksum: u64,
    /// Wall time from the first KVM_RUN to the guest's "done" exit.
    pub elapsed_ns: u64,
    /// CLOCK_MONOTONIC (as bpf_ktime_get_ns) just before the first KVM_RUN...
    pub start_monotonic_ns: u64,
    /// ...and just after the "done" exit.
    pub end_monotonic_ns: u64,
    /// The CPU the vCPU thread was on when it finished.
    pub last_cpu: u32,
    /// The kernel's count of this thread's runtime (`sum_exec_runtime`, read with
    /// CLOCK_THREAD_CPUTIME_ID) when the guest finished and the vCPU was closed: an
    /// independent check for tracers.
    pub sum_exec_runtime_ns: u64,
}

/// Ground truth of the emulator (QEMU main loop) thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorTruth {
    pub tid: u32,
    pub name: String,
    /// exit_work_items + timer_work_items.
    pub work_items: u64,
    /// One per progress exit handed over by a vCPU (checksum of a guest buffer).
    pub exit_work_items: u64,
    /// One per tick of the emulator's own timer (checksum of 64 KiB of guest RAM).
    pub timer_work_items: u64,
    pub bytes_checksummed: u64,
    pub digest: u64,
}

/// Everything the micro-VM knows about its own run; printed as JSON by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub pid: u32,
    pub config: Config,
    pub vcpus: Vec<VcpuTruth>,
    pub emulator: EmulatorTruth,
    /// Wall time from starting the vCPUs until all of them finished.
    pub elapsed_ns: u64,
}

/// A VM whose vCPU threads exist (named, pinned, configured, tids known) but have not
/// entered KVM_RUN yet. Dropping it ends the threads without running the guest.
pub struct Vm {
    shared: Arc<vm::Shared>,
    vcpu_tids: Vec<u32>,
    vcpu_threads: Vec<JoinHandle<Result<VcpuTruth, Error>>>,
    start: Vec<Sender<bool>>,
    emu_rx: Receiver<emulator::EmuMsg>,
}

/// A VM whose vCPUs are running. `wait` returns the ground truth.
pub struct RunningVm {
    vcpu_tids: Vec<u32>,
    emulator_tid: u32,
    started: Instant,
    shared: Arc<vm::Shared>,
    vcpu_threads: Vec<JoinHandle<Result<VcpuTruth, Error>>>,
    emulator: JoinHandle<EmulatorTruth>,
}

impl Vm {
    /// Creates the VM and its vCPU threads, stopped before their first KVM_RUN.
    pub fn create(cfg: &Config) -> Result<Vm, Error> {
        let shared = vm::Shared::new(cfg)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (emu_tx, emu_rx) = mpsc::channel();
        let mut vcpu_threads = Vec::new();
        let mut start = Vec::new();
        for i in 0..cfg.vcpus {
            let (stx, srx) = mpsc::channel();
            start.push(stx);
            vcpu_threads.push(vcpu::spawn_vcpu(shared.clone(), i, ready_tx.clone(), srx, emu_tx.clone())?);
        }
        drop(ready_tx);
        drop(emu_tx);
        let mut tids = vec![0u32; cfg.vcpus as usize];
        let mut first_err = None;
        for (i, r) in ready_rx.iter() {
            match r {
                Ok(t) => tids[i as usize] = t,
                Err(_) if first_err.is_some() => {}
                Err(_) => first_err = Some(i),
            }
        }
        if let Some(i) = first_err {
            drop(start); // the other vCPU threads end
            let err = vcpu_threads.remove(i as usize).join();
            for h in vcpu_threads {
                let _ = h.join();
            }
            return Err(match err {
                Ok(Err(e)) => e,
                _ => Error::Thread(format!("vCPU {i} thread failed")),
            });
        }
        Ok(Vm { shared, vcpu_tids: tids, vcpu_threads, start, emu_rx })
    }

    pub fn vcpu_tids(&self) -> &[u32] {
        &self.vcpu_tids
    }

    /// Starts an emulator thread (named like the process, as QEMU's main loop thread
    /// is) and lets the vCPUs enter KVM_RUN.
    pub fn start(self) -> Result<RunningVm, Error> {
        let Vm { shared, vcpu_tids, vcpu_threads, start, emu_rx } = self;
        let (tid_tx, tid_rx) = mpsc::channel();
        let sh = shared.clone();
        let name = sys::process_comm();
        let emulator = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let tid = sys::gettid();
                let pinned = match &sh.cfg.pin_emulator {
                    Some(c) => vcpu::pin_current("emulator thread", c),
                    None => Ok(()),
                };
                let ok = pinned.is_ok();
                let _ = tid_tx.send(pinned.map(|_| tid));
                if !ok {
                    return EmulatorTruth::default();
                }
                emulator_loop_of(&sh, emu_rx, tid, name)
            })
            .map_err(|e| Error::Thread(format!("spawn emulator thread: {e}")))?;
        let emulator_tid = tid_rx.recv().map_err(|_| Error::Thread("emulator thread died".into()))??;
        let started = Instant::now();
        for s in &start {
            let _ = s.send(true);
        }
        Ok(RunningVm { vcpu_tids, emulator_tid, started, shared, vcpu_threads, emulator })
    }

    /// Runs the VM with the emulator loop on the calling thread (the CLI calls this from
    /// the process's main thread, so the emulator is the main thread as in QEMU).
    pub fn run_here(self) -> Result<GroundTruth, Error> {
        let Vm { shared, vcpu_tids: _, vcpu_threads, start, emu_rx } = self;
        if let Some(c) = &shared.cfg.pin_emulator {
            vcpu::pin_current("emulator thread", c)?;
        }
        let tid = sys::gettid();
        let name = sys::thread_comm(tid);
        let started = Instant::now();
        for s in &start {
            let _ = s.send(true);
        }
        let emu = emulator_loop_of(&shared, emu_rx, tid, name);
        let elapsed = started.elapsed();
        let res = vcpu_threads
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Thread("vCPU thread panicked".into()))))
            .collect();
        vm::assemble(&shared, res, emu, elapsed)
    }
}

impl RunningVm {
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
    pub fn vcpu_tids(&self) -> &[u32] {
        &self.vcpu_tids
    }
    pub fn emulator_tid(&self) -> u32 {
        self.emulator_tid
    }
    /// Waits for every vCPU to finish; returns the ground truth or the first error.
    pub fn wait(self) -> Result<GroundTruth, Error> {
        let res: Vec<_> = self
            .vcpu_threads
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Thread("vCPU thread panicked".into()))))
            .collect();
        let elapsed = self.started.elapsed();
        let emu = self.emulator.join().map_err(|_| Error::Thread("emulator thread panicked".into()))?;
        vm::assemble(&self.shared, res, emu, elapsed)
    }
}

/// The emulator loop of a built-in-workload VM: its timer scans the vCPUs' heaps.
fn emulator_loop_of(sh: &vm::Shared, rx: Receiver<emulator::EmuMsg>, tid: u32, name: String) -> EmulatorTruth {
    let scan = emulator::ScanArea {
        base: layout::user_region(0),
        regions: sh.cfg.vcpus,
        stride: layout::USER_REGION,
        window: workload::HEAP_BYTES,
    };
    emulator::emulator_loop(&sh.mem, sh.cfg.vcpus, sh.cfg.emulator_hz, scan, rx, tid, name)
}

/// Creates and starts a VM in the background (vCPUs in KVM_RUN on return).
pub fn spawn(cfg: &Config) -> Result<RunningVm, Error> {
    Vm::create(cfg)?.start()
}

/// Runs a VM to completion (emulator on its own thread) and returns its ground truth.
pub fn run(cfg: &Config) -> Result<GroundTruth, Error> {
    spawn(cfg)?.wait()
}
