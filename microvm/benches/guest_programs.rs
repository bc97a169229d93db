//! Guest/native wall-time ratio of real programs, side by side in one run: /usr/bin/bzip2
//! -9 on a generated file and GNU Go playing a fixed GTP game, each run alternately as
//! the micro-VM's guest program and natively on the host (the same CPU for both), with
//! the outputs compared. Prints the ratios with the system calls, exits and calls/s
//! behind them.
//!
//!     cargo bench -p microvm --bench guest_programs
//!
//! Tuning: MICROVM_BENCH_REPS (3), MICROVM_BENCH_BZIP2_MIB (40), MICROVM_BENCH_GNUGO_MOVES
//! (20 genmoves on 13x13 at level 10), MICROVM_BENCH_CPU (1). Without /dev/kvm the guest
//! side runs on the ptrace platform (same loader and server, no VM) and says so.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bench::{env_u64, median};
use common::generate_text;
use microvm::guest_program::{self, Policy, ProgramConfig, ProgramSpec, ptrace};

#[path = "common/mod.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

/// One program to compare: command, stdin file.
struct Case {
    name: &'static str,
    prog: &'static str,
    args: Vec<String>,
    stdin: PathBuf,
}

/// What one guest run reports.
struct GuestRun {
    wall_s: f64,
    syscalls: u64,
    io_exits: u64,
    kvm_runs: u64,
    vmm_s: f64,
}

fn native(c: &Case, out: &Path) -> f64 {
    let t = Instant::now();
    let st = Command::new(c.prog)
        .args(&c.args)
        .stdin(File::open(&c.stdin).unwrap())
        .stdout(File::create(out).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(st.success(), "native {} failed", c.name);
    t.elapsed().as_secs_f64()
}

fn guest(c: &Case, out: &Path, kvm: bool, cpu: usize) -> GuestRun {
    let i = File::open(&c.stdin).unwrap();
    let o = File::create(out).unwrap();
    let policy = Policy { stdio: [i.as_raw_fd(), o.as_raw_fd(), 2], ..Default::default() };
    let args: Vec<std::ffi::OsString> = c.args.iter().map(Into::into).collect();
    let spec = ProgramSpec::from_command(Path::new(c.prog), &args).unwrap();
    let t = Instant::now();
    if kvm {
        let cfg = ProgramConfig {
            mem_bytes: 1 << 30,
            pin_vcpu: Some(vec![cpu]),
            pin_emulator: Some(vec![cpu]),
            ..Default::default()
        };
        let r = guest_program::kvm::run(&spec, &cfg, policy).unwrap();
        assert_eq!(r.exit_status, 0, "guest {} failed", c.name);
        let v = &r.vcpus[0];
        GuestRun {
            wall_s: t.elapsed().as_secs_f64(),
            syscalls: r.syscalls.total,
            io_exits: v.exits.get("io").copied().unwrap_or(0),
            kvm_runs: v.vmm.kvm_run_calls,
            vmm_s: r.syscalls.by_name.values().map(|s| s.vmm_ns).sum::<u64>() as f64 / 1e9,
        }
    } else {
        let r = ptrace::run(&spec, 1 << 30, policy).unwrap();
        assert_eq!(r.exit_status, 0, "guest {} failed", c.name);
        let vmm = r.stats.by_name.values().map(|s| s.vmm_ns).sum::<u64>() as f64 / 1e9;
        GuestRun { wall_s: t.elapsed().as_secs_f64(), syscalls: r.stats.total, io_exits: 0, kvm_runs: 0, vmm_s: vmm }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench probing for test names
    }
    let reps = env_u64("MICROVM_BENCH_REPS", 3) as usize;
    let mib = env_u64("MICROVM_BENCH_BZIP2_MIB", 40) as usize;
    let moves = env_u64("MICROVM_BENCH_GNUGO_MOVES", 20);
    let cpu = env_u64("MICROVM_BENCH_CPU", 1) as usize;
    microvm::sys::set_affinity(0, &[cpu]).expect("pin the benchmark to MICROVM_BENCH_CPU");
    let kvm = Path::new("/dev/kvm").exists();
    let platform = if kvm { "kvm" } else { "ptrace (no /dev/kvm here: NOT the micro-VM)" };
    let dir = std::env::temp_dir().join(format!("microvm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("input.txt");
    generate_text(&text, mib << 20);
    let gtp = dir.join("game.gtp");
    let mut script = String::from("boardsize 13\nclear_board\nkomi 6.5\n");
    for k in 0..moves {
        script += if k % 2 == 0 { "genmove black\n" } else { "genmove white\n" };
    }
    script += "quit\n";
    std::fs::write(&gtp, script).unwrap();
    let cases = [
        Case {
            name: "bzip2",
            prog: "/usr/bin/bzip2",
            args: vec!["-9".into(), "-c".into(), text.display().to_string()],
            stdin: "/dev/null".into(),
        },
        Case {
            name: "gnugo",
            prog: "/usr/games/gnugo",
            args: ["--mode", "gtp", "--seed", "1", "--level", "10"].map(String::from).to_vec(),
            stdin: gtp.clone(),
        },
    ];
    println!("guest platform: {platform}; {reps} reps, alternating native/guest, pinned to CPU {cpu}");
    println!("bzip2 -9 -c on {mib} MiB of generated text; gnugo GTP 13x13 level 10, {moves} genmoves, seed 1");
    println!(
        "{:<6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "prog", "native_s", "guest_s", "ratio", "syscalls", "io_exits", "kvm_runs", "syscalls/s", "vmm_s"
    );
    for c in &cases {
        let (mut nat, mut gst, mut rat) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..reps {
            let (n_out, g_out) = (dir.join(format!("{}.native", c.name)), dir.join(format!("{}.guest", c.name)));
            let n = native(c, &n_out);
            let g = guest(c, &g_out, kvm, cpu);
            assert!(std::fs::read(&n_out).unwrap() == std::fs::read(&g_out).unwrap(), "{}: outputs differ", c.name);
            nat.push(n);
            gst.push(g.wall_s);
            rat.push(g.wall_s / n);
            last = Some(g);
        }
        let g = last.unwrap();
        println!(
            "{:<6} {:>9.3} {:>9.3} {:>6.3}x {:>9} {:>9} {:>9} {:>11.0} {:>9.3}",
            c.name,
            median(&nat),
            median(&gst),
            median(&rat),
            g.syscalls,
            g.io_exits,
            g.kvm_runs,
            g.syscalls as f64 / g.wall_s,
            g.vmm_s
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
