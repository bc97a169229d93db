//! `vmmtrace microvm ...`: run a micro-VM and print its ground truth as JSON.

use anyhow::Context;

use crate::{Config, Vm, Workload};

/// A CPU list such as "0,1", "0-3" or "0-1,4".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses "0,1", "0-3", "0-1,4" (no duplicates, ranges ascending).
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    let err = |why: &str| format!("bad CPU list {s:?}: {why} (expected e.g. \"0,1\" or \"0-3\" or \"0-1,4\")");
    if s.trim().is_empty() {
        return Err(err("empty"));
    }
    for part in s.split(',') {
        let part = part.trim();
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| err(&format!("{t:?} is not a CPU number")));
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let a = num(part)?;
                (a, a)
            }
        };
        if a > b {
            return Err(err(&format!("range {a}-{b} is descending")));
        }
        if b >= libc::CPU_SETSIZE as usize {
            return Err(err(&format!("CPU {b} is beyond the maximum {}", libc::CPU_SETSIZE - 1)));
        }
        for c in a..=b {
            if out.contains(&c) {
                return Err(err(&format!("CPU {c} listed twice")));
            }
            out.push(c);
        }
    }
    Ok(CpuList(out))
}

/// Options of `vmmtrace microvm`.
#[derive(clap::Args, Debug, Clone)]
pub struct MicrovmArgs {
    /// Number of vCPUs (threads "CPU n/KVM"), 1..=64.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// CPU-bound job each vCPU runs in CPL3.
    #[arg(long, value_enum, default_value_t = Workload::Bzip2)]
    pub workload: Workload,
    /// Work units per vCPU (bzip2: one compress+decompress+verify round; loop: a fixed
    /// number of iterations), >= 1.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub work: u64,
    /// A userspace exit (port I/O to the VMM) every K work units; 0 = never.
    #[arg(long, default_value_t = 1)]
    pub exit_every: u64,
    /// Guest x2APIC timer frequency (in-kernel exits); 0 = no timer.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub timer_hz: u32,
    /// Pin vCPU i to the i-th CPU of this list (cyclically), e.g. "0,1" or "0-1".
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_vcpus: Option<CpuList>,
    /// Pin the emulator thread to these CPUs, e.g. "1" or "0-1".
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_emulator: Option<CpuList>,
    /// bzip2: input bytes per work unit.
    #[arg(long, default_value_t = 256 << 10)]
    pub unit_bytes: u32,
    /// loop: iterations per work unit.
    #[arg(long, default_value_t = 1 << 16)]
    pub unit_iters: u32,
    /// Frequency of the emulator thread's own timer work; 0 = none.
    #[arg(long, default_value_t = 100)]
    pub emulator_hz: u32,
}

impl MicrovmArgs {
    pub fn to_config(&self) -> Config {
        Config {
            vcpus: self.vcpus,
            workload: self.workload,
            work: self.work,
            exit_every: self.exit_every,
            timer_hz: self.timer_hz,
            pin_vcpus: self.pin_vcpus.as_ref().map(|c| c.0.clone()),
            pin_emulator: self.pin_emulator.as_ref().map(|c| c.0.clone()),
            bzip2_unit_bytes: self.unit_bytes,
            loop_unit_iters: self.unit_iters,
            emulator_hz: self.emulator_hz,
        }
    }
}

/// Runs the micro-VM with the emulator loop on the calling thread (call it from the
/// main thread: like QEMU, the main thread is the emulator) and prints the ground
/// truth JSON on stdout.
pub fn run(args: &MicrovmArgs) -> anyhow::Result<()> {
    let cfg = args.to_config();
    let vm = Vm::create(&cfg).context("micro-VM")?;
    // One line on stderr before the guest starts, for a parent process (e.g. a tracer
    // running `vmmtrace microvm` as a child) that wants the tids early.
    eprintln!(
        "microvm: started pid {} vcpu_tids {:?} emulator_tid {}",
        std::process::id(),
        vm.vcpu_tids(),
        crate::sys::gettid()
    );
    let truth = vm.run_here().context("micro-VM")?;
    println!("{}", serde_json::to_string_pretty(&truth)?);
    Ok(())
}
