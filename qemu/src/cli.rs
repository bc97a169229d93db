//! `vmmtrace qemu ...`: run the guest under real QEMU and print its ground truth.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use microvm::cli::{CpuList, parse_cpu_list, parse_size};
use microvm::guest_program::{Policy, ProgramSpec};

use crate::program::ProgramOptions;
use crate::{Accel, Config, Vm, Workload};

/// Options of `vmmtrace qemu`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  vmmtrace qemu --vcpus 2 --pin-vcpus 0,1 --pin-vmm 1 --workload bzip2 --work 8 --truth qemu.json\n\n\
Needs qemu-system-x86_64 (apt-get install qemu-system-x86) and /dev/kvm (or --accel tcg)."
)]
pub struct QemuArgs {
    /// vCPUs (threads "CPU n/KVM"), 1..=16.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub vcpus: u32,
    /// CPU-bound job each vCPU runs at CPL3.
    #[arg(long, value_enum, default_value_t = Workload::Bzip2)]
    pub workload: Workload,
    /// Work units per vCPU, >= 1.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub work: u64,
    /// A userspace exit (port I/O to a QEMU debugcon) every K work units; 0 = never.
    #[arg(long, default_value_t = 1)]
    pub exit_every: u64,
    /// Guest APIC timer frequency (in-kernel interrupts); 0 = no timer.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub timer_hz: u32,
    /// Pin vCPU i to the i-th CPU of this list (cyclically), e.g. "0,1".
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_vcpus: Option<CpuList>,
    /// Confine every other QEMU thread (main loop, RCU, iothreads) to these CPUs (libvirt's emulatorpin).
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_vmm: Option<CpuList>,
    /// bzip2: input bytes per work unit.
    #[arg(long, default_value_t = 256 << 10)]
    pub unit_bytes: u32,
    /// loop: iterations per work unit.
    #[arg(long, default_value_t = 1 << 16)]
    pub unit_iters: u32,
    /// QEMU iothreads to create (-object iothread), 0..=16.
    #[arg(long, default_value_t = 0)]
    pub iothreads: u32,
    /// Accelerator: kvm, tcg (emulation, no KVM exits) or auto (kvm if /dev/kvm opens).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// VM name (-name guest=NAME); default vmmtrace-qemu-<pid>-<n>.
    #[arg(long)]
    pub name: Option<String>,
    /// The QEMU binary (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Write the ground truth JSON here (atomically) instead of to stdout (with a
    /// PROGRAM, stdout is the program's: the truth is written only with --truth).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Guest RAM for a PROGRAM, e.g. "512M" or "1G" (64M..2G, multiple of 2 MiB).
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub mem: u64,
    /// A PROGRAM may create and write files under DIR (repeatable); otherwise only its
    /// stdout and stderr.
    #[arg(long, value_name = "DIR")]
    pub guest_write: Vec<PathBuf>,
    /// Answer system calls the server does not know with ENOSYS instead of stopping.
    #[arg(long)]
    pub enosys_unknown: bool,
    /// An unmodified Linux x86-64 program to run as the guest (after `--`), and its arguments.
    #[arg(last = true, value_name = "PROGRAM")]
    pub program: Vec<OsString>,
}

impl QemuArgs {
    pub fn to_config(&self) -> Config {
        Config {
            name: self.name.clone(),
            vcpus: self.vcpus,
            workload: self.workload,
            work: self.work,
            exit_every: self.exit_every,
            timer_hz: self.timer_hz,
            pin_vcpus: self.pin_vcpus.as_ref().map(|c| c.0.clone()),
            pin_vmm: self.pin_vmm.as_ref().map(|c| c.0.clone()),
            bzip2_unit_bytes: self.unit_bytes,
            loop_unit_iters: self.unit_iters,
            iothreads: self.iothreads,
            accel: self.accel,
            qemu: self.qemu.clone(),
            program_mem_mib: None,
        }
    }
}

/// Runs `args.program` under QEMU; ends the process with its exit status (stdout and
/// stderr are the program's).
fn run_program(args: &QemuArgs) -> anyhow::Result<()> {
    let (prog, rest) = args.program.split_first().expect("called with a program");
    let spec = ProgramSpec::from_command(Path::new(prog), rest).map_err(anyhow::Error::msg)?;
    let policy =
        Policy { write_dirs: args.guest_write.clone(), enosys_unknown: args.enosys_unknown, ..Default::default() };
    let opts = ProgramOptions {
        mem_mib: args.mem >> 20,
        pin_vcpus: args.pin_vcpus.as_ref().map(|c| c.0.clone()),
        pin_vmm: args.pin_vmm.as_ref().map(|c| c.0.clone()),
        accel: args.accel,
        qemu: args.qemu.clone(),
        name: args.name.clone(),
    };
    let truth = crate::program::run(&spec, policy, &opts).context("QEMU")?;
    if let Some(path) = &args.truth {
        let json = serde_json::to_string_pretty(&truth)?;
        write_atomic(path, json.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    }
    std::process::exit(truth.exit_status);
}

/// Boots QEMU, runs the guest and prints (or writes) the ground truth. With a PROGRAM,
/// runs it and exits with its status.
pub fn run(args: &QemuArgs) -> anyhow::Result<()> {
    if !args.program.is_empty() {
        return run_program(args);
    }
    let cfg = args.to_config();
    let vm = Vm::boot(&cfg).context("QEMU")?;
    if vm.accel() == Accel::Tcg && cfg.accel == Accel::Auto {
        eprintln!("qemu: /dev/kvm is not usable here: running under TCG (emulation; no KVM exits to trace)");
    }
    // One line before the guest starts, for a parent (e.g. a tracer) that wants the tids early.
    eprintln!(
        "qemu: booted pid {} name {} in {:.1} ms; vcpu_tids {:?} vmm_tids {:?}",
        vm.pid(),
        vm.name(),
        vm.boot_ns() as f64 / 1e6,
        vm.vcpu_tids(),
        vm.vmm_tids()
    );
    let truth = vm.start().wait().context("QEMU")?;
    let json = serde_json::to_string_pretty(&truth)?;
    match &args.truth {
        Some(path) => write_atomic(path, json.as_bytes()).with_context(|| format!("write {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

/// A temporary file in the same directory, then rename: readers see old or new.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file path"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
