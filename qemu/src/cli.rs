//! `vmmtrace qemu ...`: run the guest under real QEMU and print its ground truth.

use std::path::PathBuf;

use anyhow::Context as _;
use microvm::cli::{CpuList, JobArgs, ProgramArgs, cpus, parse_cpu_list, write_truth};

use crate::program::ProgramOptions;
use crate::{Accel, Config, Vm};

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
    #[command(flatten)]
    pub job: JobArgs,
    /// Guest APIC timer frequency (in-kernel interrupts); 0 = no timer.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub timer_hz: u32,
    /// Confine every other QEMU thread (main loop, RCU, iothreads) to these CPUs (libvirt's emulatorpin).
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_vmm: Option<CpuList>,
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
    #[command(flatten)]
    pub program: ProgramArgs,
}

impl QemuArgs {
    pub fn to_config(&self) -> Config {
        Config {
            name: self.name.clone(),
            vcpus: self.vcpus,
            workload: self.job.workload,
            work: self.job.work,
            exit_every: self.job.exit_every,
            timer_hz: self.timer_hz,
            pin_vcpus: cpus(&self.job.pin_vcpus),
            pin_vmm: cpus(&self.pin_vmm),
            bzip2_unit_bytes: self.job.unit_bytes,
            loop_unit_iters: self.job.unit_iters,
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
    let (spec, policy) = args.program.spec_and_policy()?;
    let opts = ProgramOptions {
        mem_mib: args.program.mem >> 20,
        pin_vcpus: cpus(&args.job.pin_vcpus),
        pin_vmm: cpus(&args.pin_vmm),
        accel: args.accel,
        qemu: args.qemu.clone(),
        name: args.name.clone(),
    };
    let truth = crate::program::run(&spec, policy, &opts).context("QEMU")?;
    if let Some(path) = &args.program.truth {
        write_truth(path, &serde_json::to_string_pretty(&truth)?)?;
    }
    std::process::exit(truth.exit_status);
}

/// Boots QEMU, runs the guest and prints (or writes) the ground truth. With a PROGRAM,
/// runs it and exits with its status.
pub fn run(args: &QemuArgs) -> anyhow::Result<()> {
    if !args.program.program.is_empty() {
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
    args.program.write_or_print_truth(&serde_json::to_string_pretty(&truth)?)
}
