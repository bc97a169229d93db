//! `cargo xtask <command>`: the project's chores, so that README's two commands do
//! all set-up on a fresh machine (Debian 12, root, rustup's stable toolchain).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod browser;
mod soak;

#[derive(Parser)]
#[command(about = "vmmtrace's project chores")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the tool and its tests need (apt packages, tracefs mount).
    Setup,
    /// Set up, then run every test (they load the real eBPF programs: run as root).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then re-run the study's experiments here with `vmmtrace experiment`
    /// (result in target/experiment/result.json), and draw its chart and page
    /// (target/experiment/charts/index.html).
    Experiment {
        /// Extra arguments for `vmmtrace experiment` (e.g. --env host --scale 0.5, or --resume).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then trace bzip2 compressing generated data with `vmmtrace record`.
    Demo,
    /// Rebuild the eBPF object from tracer-ebpf/ and refresh the committed copy
    /// (installs bpf-linker, llvm-22-dev and rust-src when missing).
    BuildEbpf,
    /// Rebuild the eBPF object and fail if the committed copy differs.
    CheckEbpf,
    /// Clippy on tracer-ebpf for the BPF target (a host build of it compiles nothing),
    /// warnings denied.
    ClippyEbpf,
    /// Per-event cost of the sched_switch programs (kernel BPF stats).
    Bench,
    /// `vmmtrace record` for minutes under process churn (micro-VMs too where
    /// /dev/kvm exists): samples its memory and the maps' occupancy every 10 s, fails
    /// if either grows without bound or anything was dropped. Not part of CI.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Short-lived processes started per minute.
        #[arg(long, default_value_t = 6000)]
        per_minute: u64,
    },
    /// Draw a report's charts and open index.html in headless chromium (installed if
    /// missing): no console message, every image loads; take a screenshot.
    BrowserCheck {
        /// The report to draw.
        #[arg(long, default_value = "tests/fixtures/lookalike-vm.json")]
        report: PathBuf,
        /// Where to write the screenshot.
        #[arg(long, default_value = "docs/img/report-index.png")]
        screenshot: PathBuf,
    },
    /// Fuzz the parsers of outside text with cargo-fuzz (nightly; installs cargo-fuzz
    /// when missing). Not part of CI: docs/results.md has the figures of a run.
    Fuzz {
        /// Targets to run, one after the other (default: all of fuzz/Cargo.toml).
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
}

/// The fuzz targets of fuzz/Cargo.toml.
const FUZZ_TARGETS: [&str; 5] = ["proc_files", "tracefs_format", "btf", "report_json", "cli_values"];

/// `cargo +nightly fuzz run` each target for `seconds`, from the seeds of fuzz/seeds.
fn fuzz(root: &Path, targets: &[String], seconds: u64) -> anyhow::Result<()> {
    if !have("cargo-fuzz") {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets: Vec<String> = match targets.is_empty() {
        true => FUZZ_TARGETS.iter().map(|t| t.to_string()).collect(),
        false => targets.to_vec(),
    };
    for target in &targets {
        // New inputs go to fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET holds
        // the committed seeds (real files of this host, a hand-made BTF blob).
        let corpus = format!("corpus/{target}");
        std::fs::create_dir_all(root.join("fuzz").join(&corpus))?;
        let mut cmd = Command::new("cargo");
        // rustup's `cargo` proxy picks the toolchain; the CARGO of this xtask is stable's.
        cmd.current_dir(root.join("fuzz")).args(["+nightly", "fuzz", "run", target, &corpus]);
        if root.join("fuzz/seeds").join(target).is_dir() {
            cmd.arg(format!("seeds/{target}"));
        }
        run(cmd.args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"]))?;
    }
    Ok(())
}

/// The committed, stripped eBPF object that the `vmmtrace` binary embeds.
pub const EBPF_OBJECT: &str = "tracer/ebpf/tracer-ebpf.o";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Workloads and tools the tests and the demo use.
fn setup() -> anyhow::Result<()> {
    // fonts-dejavu-core: the font chart text is drawn with (`vmmtrace report --out`).
    // prometheus: its promtool checks every scrape of `vmmtrace serve` in the tests.
    apt_install(&["bzip2", "gnugo", "qemu-system-x86", "linux-perf", "fonts-dejavu-core", "prometheus"])?;
    if !Path::new("/sys/kernel/tracing/events").exists() {
        run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    if !have("bpf-linker") {
        apt_install(&["llvm-22-dev"])?;
        run(cargo()
            .args(["install", "bpf-linker@0.13.0", "--locked", "--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    Ok(())
}

/// `cargo <subcommand> -p tracer-ebpf` for the BPF target, with the flags of
/// aya-build plus path remapping, so that the object (whose BTF line info names
/// source files) is byte for byte the same in any checkout.
fn ebpf_cargo(subcommand: &str, target_dir: &Path) -> anyhow::Result<Command> {
    let root = root();
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let sysroot = String::from_utf8(Command::new("rustc").args(["--print", "sysroot"]).output()?.stdout)?;
    let rustflags = [
        "--cfg".to_string(),
        "bpf_target_arch=\"x86_64\"".into(),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        format!("--remap-path-prefix={}=/vmmtrace", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        format!("--remap-path-prefix={}=/rust", sysroot.trim()),
    ]
    .join("\x1f");
    let mut cmd = cargo();
    cmd.current_dir(&root)
        .args([subcommand, "-p", "tracer-ebpf", "-Z", "build-std=core", "--target", "bpfel-unknown-none", "--release"])
        .arg("--target-dir")
        .arg(target_dir)
        // build-std is unstable; the pinned stable toolchain builds it like aya-build does.
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    Ok(cmd)
}

/// Builds the eBPF object and writes the stripped copy to `out`.
fn build_ebpf(out: &Path) -> anyhow::Result<()> {
    ebpf_toolchain()?;
    let target_dir = root().join("target/ebpf");
    run(&mut ebpf_cargo("build", &target_dir)?)?;
    let built = target_dir.join("bpfel-unknown-none/release/tracer-ebpf");
    let objcopy = ["llvm-objcopy-22", "/usr/lib/llvm-22/bin/llvm-objcopy", "llvm-objcopy"]
        .into_iter()
        .find(|p| have(p))
        .context("llvm-objcopy not found: apt-get install llvm-22")?;
    // Drop DWARF; keep .BTF/.BTF.ext, which aya and the kernel use.
    run(Command::new(objcopy).arg("--strip-debug").arg(&built).arg(out))?;
    Ok(())
}

/// Deterministic text (words drawn by an LCG): compressible like real text, so bzip2
/// does real work for a few seconds.
fn write_demo_input(path: &Path, bytes: usize) -> anyhow::Result<()> {
    if std::fs::metadata(path).map(|m| m.len() as usize == bytes).unwrap_or(false) {
        return Ok(());
    }
    const WORDS: &[&str] = &[
        "guest",
        "host",
        "vcpu",
        "exit",
        "kvm",
        "qemu",
        "core",
        "pin",
        "steal",
        "time",
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "job",
        "bzip2",
        "gobmk",
        "overhead",
        "scheduler",
        "thread",
    ];
    let mut out = Vec::with_capacity(bytes);
    let mut x: u64 = 0x2545F4914F6CDD1D;
    while out.len() < bytes {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(WORDS[(x >> 33) as usize % WORDS.len()].as_bytes());
        out.push(if (x >> 20).is_multiple_of(13) { b'\n' } else { b' ' });
    }
    out.truncate(bytes);
    std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = root();
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Test { args } => {
            setup()?;
            run(cargo().current_dir(&root).args(["test", "--workspace"]).args(&args))
        }
        Cmd::Experiment { args } => {
            setup()?;
            run(cargo().current_dir(&root).args(["build", "--release", "-p", "vmmtrace"]))?;
            let dir = root.join("target/experiment");
            std::fs::create_dir_all(&dir)?;
            let vmmtrace = root.join("target/release/vmmtrace");
            let result = dir.join("result.json");
            let started = std::time::Instant::now();
            run(Command::new(&vmmtrace).current_dir(&root).args(["experiment", "-o"]).arg(&result).args(&args))?;
            let took = started.elapsed().as_secs();
            let charts = dir.join("charts");
            run(Command::new(&vmmtrace).arg("report").arg(&result).arg("--out").arg(&charts))?;
            eprintln!(
                "the experiment took {} min {} s; result in {}, charts in {} (open {})",
                took / 60,
                took % 60,
                result.display(),
                charts.display(),
                charts.join("index.html").display()
            );
            Ok(())
        }
        Cmd::Demo => {
            setup()?;
            run(cargo().current_dir(&root).args(["build", "--release", "-p", "vmmtrace"]))?;
            let dir = root.join("target/demo");
            std::fs::create_dir_all(&dir)?;
            let input = dir.join("input.txt");
            write_demo_input(&input, 24 << 20)?;
            let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
            // One bzip2 per CPU, as in the paper's "N jobs on N cores".
            let script = format!("for i in $(seq {jobs}); do bzip2 -9 -c {} > /dev/null & done; wait", input.display());
            eprintln!("tracing {jobs} bzip2 jobs on {jobs} CPUs...");
            run(Command::new(root.join("target/release/vmmtrace"))
                .current_dir(&root)
                .args(["record", "-o"])
                .arg(dir.join("report.json"))
                .args(["--", "sh", "-c", &script]))?;
            run(Command::new(root.join("target/release/vmmtrace")).arg("report").arg(dir.join("report.json")))
        }
        Cmd::BuildEbpf => {
            let out = root.join(EBPF_OBJECT);
            std::fs::create_dir_all(out.parent().unwrap())?;
            build_ebpf(&out)?;
            eprintln!("wrote {} ({} bytes)", out.display(), std::fs::metadata(&out)?.len());
            Ok(())
        }
        Cmd::CheckEbpf => {
            let tmp = root.join("target/ebpf/check.o");
            std::fs::create_dir_all(tmp.parent().unwrap())?;
            build_ebpf(&tmp)?;
            let committed = std::fs::read(root.join(EBPF_OBJECT)).with_context(|| format!("read {EBPF_OBJECT}"))?;
            if std::fs::read(&tmp)? != committed {
                bail!(
                    "{EBPF_OBJECT} differs from what tracer-ebpf/ builds: run `cargo xtask build-ebpf` and commit it"
                );
            }
            eprintln!("{EBPF_OBJECT} matches the sources");
            Ok(())
        }
        Cmd::ClippyEbpf => {
            run(Command::new("rustup").args(["component", "add", "rust-src", "clippy"]))?;
            // Its own target dir: clippy's metadata would make the next build-ebpf rebuild.
            let mut cmd = ebpf_cargo("clippy", &root.join("target/ebpf-clippy"))?;
            run(cmd.args(["--", "-D", "warnings"]))
        }
        Cmd::BrowserCheck { report, screenshot } => browser::check(&root, &root.join(report), &root.join(screenshot)),
        Cmd::Fuzz { targets, seconds } => fuzz(&root, &targets, seconds),
        Cmd::Soak { minutes, per_minute } => {
            run(cargo().current_dir(&root).args(["build", "--release", "-p", "vmmtrace"]))?;
            soak::soak(&root, minutes, per_minute)
        }
        Cmd::Bench => {
            setup()?;
            run(cargo().current_dir(&root).args(["build", "--release", "-p", "vmmtrace"]))?;
            run(Command::new(root.join("target/release/vmmtrace")).args(["bench"]))
        }
    }
}
