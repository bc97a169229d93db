//! Real QEMU as the VMM (issue 10).
//!
//! `qemu-system-x86_64 -M microvm` boots a small guest kernel of our own (built from
//! source by build.rs: PVH entry, long mode, 1..16 vCPUs woken with INIT/SIPI) that
//! drops to CPL3 and runs the micro-VM's workloads (`loop`, or real libbz2) at native
//! speed on KVM. Progress and results go out through port I/O to QEMU devices
//! (isa-debugcon), the end through isa-debug-exit; every port access is a userspace
//! exit QEMU serves, and the guest counts its own. Guest RAM is a shared file
//! (`memory-backend-file,share=on`) that the host maps too: the guest waits there for
//! "go" and leaves its results there.
//!
//! vmmtrace starts QEMU stopped (`-S`), finds the vCPU threads with QMP
//! `query-cpus-fast` as libvirt does, pins them (`pin_vcpus`) and every other QEMU
//! thread (`pin_vmm`, libvirt's emulatorpin), lets the guest boot, and once every vCPU
//! waits at the gate returns a [`Vm`]: attach probes, then [`Vm::start`].
//!
//! ```no_run
//! let cfg = vmm_qemu::Config { vcpus: 2, work: 8, ..Default::default() };
//! let vm = vmm_qemu::Vm::boot(&cfg)?; // booted, waiting for "go"
//! println!("vCPU tids {:?}, other threads {:?}", vm.vcpu_tids(), vm.vmm_tids());
//! let truth = vm.start().wait()?;
//! # Ok::<(), vmm_qemu::Error>(())
//! ```

pub mod cli;
mod command;
mod console;
mod error;
mod guest_ram;
pub mod layout;
pub mod program;
mod qmp;
pub mod threads;
mod vm;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use command::guest_cmdline;
pub use error::Error;
pub use microvm::Workload;
use microvm::job::JobOptions;
pub use qmp::{IoThread, VcpuThread};
pub use threads::ThreadRole;
pub use vm::{RunningVm, Vm};

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM if /dev/kvm can be opened, else TCG (with a warning).
    Auto,
    /// KVM: vCPU threads in KVM_RUN, real exits.
    Kvm,
    /// QEMU's emulator: no KVM, so no KVM exits; for hosts without /dev/kvm.
    Tcg,
}

/// What to run. `Default`: 1 vCPU of bzip2, 16 units of 256 KiB, a progress exit per
/// unit, no timer, no pinning, accel auto.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `-name guest=NAME`; `None`: `vmmtrace-qemu-<pid>-<n>`.
    pub name: Option<String>,
    /// vCPUs (`-smp`), 1..=16, each running the whole workload on its own data.
    pub vcpus: u32,
    pub workload: Workload,
    /// Work units per vCPU (>= 1).
    pub work: u64,
    /// A progress exit (OUT to the progress debugcon) every K units; 0 = never.
    pub exit_every: u64,
    /// Guest APIC periodic timer (in-kernel interrupts); 0 = none.
    pub timer_hz: u32,
    /// vCPU i is pinned to `pin_vcpus[i % len]`.
    pub pin_vcpus: Option<Vec<usize>>,
    /// Every other QEMU thread (main loop, RCU, iothreads, ...) is confined to these CPUs.
    pub pin_vmm: Option<Vec<usize>>,
    /// bzip2: input bytes per unit.
    pub bzip2_unit_bytes: u32,
    /// loop: iterations per unit.
    pub loop_unit_iters: u32,
    /// `-object iothread` count (idle event loops: real QEMU threads to account for).
    pub iothreads: u32,
    pub accel: Accel,
    /// The QEMU binary; `None`: `qemu-system-x86_64` on PATH.
    pub qemu: Option<PathBuf>,
    /// Set by [`program::run`]: the guest runs a Linux program instead of a workload
    /// (one vCPU, this much RAM in MiB).
    #[serde(default)]
    pub program_mem_mib: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: None,
            vcpus: 1,
            workload: Workload::Bzip2,
            work: 16,
            exit_every: 1,
            timer_hz: 0,
            pin_vcpus: None,
            pin_vmm: None,
            bzip2_unit_bytes: 256 << 10,
            loop_unit_iters: 1 << 16,
            iothreads: 0,
            accel: Accel::Auto,
            qemu: None,
            program_mem_mib: None,
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
            cpu_lists: [("--pin-vcpus", self.pin_vcpus.as_deref()), ("--pin-vmm", self.pin_vmm.as_deref())],
        };
        options.check().map_err(Error::Config)?;
        let bad = |m: String| Err(Error::Config(m));
        if self.workload == Workload::FaultTest {
            return bad("the fault-test workload is not supported under QEMU".into());
        }
        if let Some(mib) = self.program_mem_mib
            && (self.vcpus != 1 || !(64..=2048).contains(&mib) || mib % 2 != 0)
        {
            return bad(format!("--mem {mib}M: a guest program needs 1 vCPU and 64M..2G of RAM, in 2 MiB steps"));
        }
        if self.iothreads > 16 {
            return bad(format!("--iothreads {} too many (max 16)", self.iothreads));
        }
        if let Some(name) = &self.name
            && (name.is_empty() || name.contains('\n'))
        {
            return bad(format!("--name {name:?}: give a non-empty single-line name"));
        }
        Ok(())
    }

    /// Progress exits each vCPU makes: `work / exit_every`.
    pub fn expected_progress_exits(&self) -> u64 {
        microvm::job::expected_progress_exits(self.work, self.exit_every)
    }
}

/// Exact ground truth of one vCPU, counted by the guest itself: every port access
/// (progress bytes, its result line, the final isa-debug-exit) is one "io" exit.
pub type VcpuTruth = microvm::job::VcpuTruth<QemuVcpuTruth>;

/// What vmmtrace knows of a QEMU vCPU beside [`microvm::job::VcpuTruth`]'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuVcpuTruth {
    /// Port exits before "go" (its "ready" line); the boot's firmware exits come on top.
    pub exits_before_go: u64,
    /// The vCPU thread's `Cpus_allowed_list` when the last vCPU finished.
    pub affinity: Vec<usize>,
}

/// One QEMU thread at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadTruth {
    pub tid: u32,
    pub comm: String,
    pub role: ThreadRole,
    pub vcpu: Option<u32>,
    pub iothread: Option<String>,
    /// schedstat when the last vCPU finished: on-CPU and run-queue wait time.
    pub on_cpu_ns: u64,
    pub run_delay_ns: u64,
    /// `Cpus_allowed_list`.
    pub affinity: Vec<usize>,
}

/// Everything vmmtrace knows about one QEMU run; printed as JSON by `vmmtrace qemu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub pid: u32,
    pub name: String,
    /// The accelerator actually used (kvm or tcg).
    pub accel: Accel,
    pub qemu: PathBuf,
    /// QEMU's command line (argv).
    pub command: Vec<String>,
    pub config: Config,
    /// From launching QEMU to QMP answering (QEMU's own start-up).
    pub qmp_ready_ns: u64,
    /// From launching QEMU to every vCPU at CPL3, waiting for "go" (incl. pinning).
    pub boot_ns: u64,
    /// From QMP `cont` to every vCPU waiting for "go": firmware + our CPL0 code + AP wake-up.
    pub guest_boot_ns: u64,
    pub vcpus: Vec<VcpuTruth>,
    /// Every thread of the QEMU process, vCPUs included, with its role.
    pub threads: Vec<ThreadTruth>,
    /// From "go" to the last vCPU's "done" line.
    pub elapsed_ns: u64,
    /// Bytes QEMU wrote to the progress chardev: equals the sum of progress exits.
    pub progress_bytes: u64,
    /// The guest console (debugcon) lines.
    pub console: Vec<String>,
}

impl GroundTruth {
    /// CPU time of the QEMU threads that are not vCPUs.
    pub fn vmm_on_cpu_ns(&self) -> u64 {
        self.threads.iter().filter(|t| t.role != ThreadRole::Vcpu).map(|t| t.on_cpu_ns).sum()
    }
}

/// Boots QEMU and starts the guest (vCPUs running the workload on return).
pub fn spawn(cfg: &Config) -> Result<RunningVm, Error> {
    Ok(Vm::boot(cfg)?.start())
}

/// Runs a QEMU guest to completion and returns its ground truth.
pub fn run(cfg: &Config) -> Result<GroundTruth, Error> {
    spawn(cfg)?.wait()
}

/// The QEMU binary: `configured`, else `qemu-system-x86_64` on PATH.
pub fn find_qemu(configured: Option<&std::path::Path>) -> Result<PathBuf, Error> {
    if let Some(p) = configured {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(Error::QemuMissing(p.display().to_string())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("qemu-system-x86_64"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::QemuMissing("qemu-system-x86_64 (on PATH, /usr/bin, /usr/local/bin)".into()))
}

/// The accelerator to use: `Auto` becomes KVM when /dev/kvm opens, else TCG.
pub fn resolve_accel(accel: Accel) -> Result<Accel, Error> {
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm");
    match (accel, kvm) {
        (Accel::Tcg, _) => Ok(Accel::Tcg),
        (_, Ok(_)) => Ok(Accel::Kvm),
        (Accel::Kvm, Err(e)) => Err(Error::NoKvm(e)),
        (Accel::Auto, Err(_)) => Ok(Accel::Tcg),
    }
}
