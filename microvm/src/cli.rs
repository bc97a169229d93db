//! `vmmtrace microvm ...`: run a micro-VM and print its ground truth as JSON.
//! `vmmtrace microvm [OPTIONS] -- PROGRAM [ARGS...]` runs a Linux program as the guest.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::guest_program::{self, Policy, ProgramConfig, ProgramSpec};
use crate::{Config, Vm, Workload};

/// Parses a size such as "512M", "1G", "1073741824" (bytes) into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?} (expected e.g. \"512M\" or \"2G\")"))
}

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

/// Where a guest PROGRAM runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// The micro-VM: one KVM vCPU, system calls served at its exits.
    #[default]
    Kvm,
    /// No VM: the program in a PTRACE_SYSEMU child, the same loader and system-call
    /// server (to check a program where /dev/kvm is missing; no VM exits).
    Ptrace,
}

/// The guest job's options, the same for `vmmtrace microvm` and `vmmtrace qemu`
/// (flattened into both).
#[derive(clap::Args, Debug, Clone)]
pub struct JobArgs {
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
    /// Pin vCPU i to the i-th CPU of this list (cyclically), e.g. "0,1" or "0-1".
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_vcpus: Option<CpuList>,
    /// bzip2: input bytes per work unit.
    #[arg(long, default_value_t = 256 << 10)]
    pub unit_bytes: u32,
    /// loop: iterations per work unit.
    #[arg(long, default_value_t = 1 << 16)]
    pub unit_iters: u32,
}

/// Where the ground truth goes, and a guest PROGRAM with what it may do: the same for
/// `vmmtrace microvm` and `vmmtrace qemu` (flattened into both).
#[derive(clap::Args, Debug, Clone)]
pub struct ProgramArgs {
    /// Write the ground truth JSON to FILE (atomically) instead of stdout (with a
    /// PROGRAM, stdout is the program's: the ground truth is written only with --truth).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Guest RAM for a PROGRAM, e.g. "512M" or "2G" (a multiple of 2 MiB; under QEMU
    /// 64M..2G).
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub mem: u64,
    /// A PROGRAM may create and write files under DIR (repeatable); otherwise it may
    /// write only to its stdout and stderr.
    #[arg(long, value_name = "DIR")]
    pub guest_write: Vec<PathBuf>,
    /// Answer system calls the system-call server does not serve with ENOSYS instead
    /// of stopping.
    #[arg(long)]
    pub enosys_unknown: bool,
    /// An unmodified Linux x86-64 program to run as the guest (after `--`), and its
    /// arguments.
    #[arg(last = true, value_name = "PROGRAM")]
    pub program: Vec<OsString>,
}

impl ProgramArgs {
    /// The PROGRAM (called with one) and what it may do.
    pub fn spec_and_policy(&self) -> anyhow::Result<(ProgramSpec, Policy)> {
        let (prog, rest) = self.program.split_first().expect("called with a program");
        let spec = ProgramSpec::from_command(Path::new(prog), rest).map_err(anyhow::Error::msg)?;
        let policy =
            Policy { write_dirs: self.guest_write.clone(), enosys_unknown: self.enosys_unknown, ..Default::default() };
        Ok((spec, policy))
    }

    /// Writes the ground truth JSON into --truth FILE, or else prints it on stdout.
    pub fn write_or_print_truth(&self, json: &str) -> anyhow::Result<()> {
        match &self.truth {
            Some(path) => write_truth(path, json),
            None => {
                println!("{json}");
                Ok(())
            }
        }
    }
}

/// The CPUs of a CPU list option, as a `Config` holds them.
pub fn cpus(list: &Option<CpuList>) -> Option<Vec<usize>> {
    list.as_ref().map(|l| l.0.clone())
}

/// Options of `vmmtrace microvm`.
#[derive(clap::Args, Debug, Clone)]
pub struct MicrovmArgs {
    /// Number of vCPUs (threads "CPU n/KVM"), 1..=64.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    #[command(flatten)]
    pub job: JobArgs,
    /// Guest x2APIC timer frequency (in-kernel exits); 0 = no timer.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub timer_hz: u32,
    /// Pin the emulator thread to these CPUs, e.g. "1" or "0-1".
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin_emulator: Option<CpuList>,
    /// Frequency of the emulator thread's own timer work; 0 = none.
    #[arg(long, default_value_t = 100)]
    pub emulator_hz: u32,
    /// Where a PROGRAM runs: `kvm` (the micro-VM) or `ptrace` (no VM; same loader and
    /// system-call server, for checking a program without /dev/kvm).
    #[arg(long, value_enum, default_value_t = Platform::Kvm)]
    pub platform: Platform,
    #[command(flatten)]
    pub program: ProgramArgs,
}

impl MicrovmArgs {
    pub fn to_config(&self) -> Config {
        Config {
            vcpus: self.vcpus,
            workload: self.job.workload,
            work: self.job.work,
            exit_every: self.job.exit_every,
            timer_hz: self.timer_hz,
            pin_vcpus: cpus(&self.job.pin_vcpus),
            pin_emulator: cpus(&self.pin_emulator),
            bzip2_unit_bytes: self.job.unit_bytes,
            loop_unit_iters: self.job.unit_iters,
            emulator_hz: self.emulator_hz,
        }
    }
}

/// Writes `json` and a newline to `path` atomically: a temporary file in the same
/// directory, then a rename, so that readers see the old file or the new one.
pub fn write_truth(path: &Path, json: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("--truth {}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(json.as_bytes()).and_then(|_| f.write_all(b"\n")))
        .and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("--truth: write {}", path.display()))
}

/// Runs the guest program of `args.program`; ends the process with the program's exit
/// status (stdout and stderr are the program's: nothing else is printed there).
fn run_program(args: &MicrovmArgs) -> anyhow::Result<()> {
    let (spec, policy) = args.program.spec_and_policy()?;
    let cfg = ProgramConfig {
        mem_bytes: args.program.mem,
        pin_vcpu: cpus(&args.job.pin_vcpus),
        pin_emulator: cpus(&args.pin_emulator),
        emulator_hz: args.emulator_hz,
    };
    let (json, status, oom) = match args.platform {
        Platform::Kvm => {
            let t = guest_program::kvm::run(&spec, &cfg, policy)?;
            (serde_json::to_string_pretty(&t)?, t.exit_status, t.syscalls.out_of_memory)
        }
        Platform::Ptrace => {
            cfg.validate()?;
            let t = guest_program::ptrace::run(&spec, cfg.mem_bytes, policy).map_err(anyhow::Error::msg)?;
            (serde_json::to_string_pretty(&t)?, t.exit_status, t.stats.out_of_memory)
        }
    };
    if status != 0 && oom > 0 {
        eprintln!(
            "vmmtrace microvm: the program exited with status {status} after {oom} memory request(s) failed for \
             lack of guest memory: give it more with --mem (now {} MiB)",
            cfg.mem_bytes >> 20
        );
    }
    if let Some(p) = &args.program.truth {
        write_truth(p, &json)?;
    }
    std::process::exit(status);
}

/// Runs the micro-VM with the emulator loop on the calling thread (call it from the
/// main thread: like QEMU, the main thread is the emulator) and prints the ground
/// truth JSON on stdout (or into --truth FILE). With a PROGRAM, runs it and exits with
/// its status.
pub fn run(args: &MicrovmArgs) -> anyhow::Result<()> {
    if !args.program.program.is_empty() {
        return run_program(args);
    }
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
    args.program.write_or_print_truth(&serde_json::to_string_pretty(&truth)?)
}
