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
pub mod job;
pub mod layout;
mod mem;
pub mod sys;
mod vcpu;
mod vm;
mod workload;

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use error::{CpuException, Error, workload_status};
use job::JobOptions;
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
        let options = JobOptions {
            vcpus: self.vcpus,
            max_vcpus: layout::MAX_VCPUS,
            work: self.work,
            timer_hz: self.timer_hz,
            bzip2_unit_bytes: self.bzip2_unit_bytes,
            loop_unit_iters: self.loop_unit_iters,
            cpu_lists: [("--pin-vcpus", self.pin_vcpus.as_deref()), ("--pin-emulator", self.pin_emulator.as_deref())],
        };
        options.check().map_err(Error::Config)?;
        if self.emulator_hz > job::MAX_HZ {
            return Err(Error::Config(format!(
                "emulator timer {} Hz too high (max {})",
                self.emulator_hz,
                job::MAX_HZ
            )));
        }
        Ok(())
    }

    /// Number of progress (port I/O) exits each vCPU makes: `work / exit_every`.
    pub fn expected_progress_exits(&self) -> u64 {
        job::expected_progress_exits(self.work, self.exit_every)
    }
}

/// Exact ground truth of one vCPU of the micro-VM: the VMM counts its exits.
pub type VcpuTruth = job::VcpuTruth<KvmRunTruth>;

/// What the micro-VM's VMM knows of a vCPU beside [`job::VcpuTruth`]'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmRunTruth {
    /// KVM_RUN calls made (= sum of `exits`; the one "io" exit beyond the progress
    /// exits is the final "done" OUT to port 0x11).
    pub kvm_run_calls: u64,
    /// The CPU the vCPU thread was on when it finished.
    pub last_cpu: u32,
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

/// Why this host cannot run a KVM guest, or None. Some hosts have no /dev/kvm (this
/// build machine at times: its PVM backend refuses to bind on a kernel with page-table
/// isolation on); tests that need one print this and skip.
pub fn no_kvm() -> Option<&'static str> {
    (!std::path::Path::new("/dev/kvm").exists())
        .then_some("/dev/kvm does not exist on this host (dmesg says why KVM did not load)")
}

/// Creates and starts a VM in the background (vCPUs in KVM_RUN on return).
pub fn spawn(cfg: &Config) -> Result<RunningVm, Error> {
    Vm::create(cfg)?.start()
}

/// Runs a VM to completion (emulator on its own thread) and returns its ground truth.
pub fn run(cfg: &Config) -> Result<GroundTruth, Error> {
    spawn(cfg)?.wait()
}
