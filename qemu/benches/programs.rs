//! `cargo bench -p vmm-qemu --bench programs`: unmodified programs under real QEMU
//! against the same programs run natively, side by side in one run (alternated, the
//! guest's vCPU and the native run on the same CPU, outputs compared): /usr/bin/bzip2 -9
//! on generated text and GNU Go answering a fixed GTP session. Prints the wall ratios, the
//! system calls behind them and the extra wall time per system call, next to the
//! micro-VM's where /dev/kvm works.
//!
//! Tuning: VMM_QEMU_BENCH_REPS (3), VMM_QEMU_BENCH_BZIP2_MIB (4), VMM_QEMU_BENCH_GNUGO_MOVES (10).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{env_u64, median};
use microvm::guest_program::{Policy, ProgramConfig, ProgramSpec};
use vmm_qemu::program::{self, ProgramOptions};

#[path = "../../microvm/benches/common/mod.rs"]
mod common;

struct Case {
    name: &'static str,
    prog: &'static str,
    args: Vec<String>,
    stdin: PathBuf,
}

/// Wall seconds, system calls, stdout.
type Run = (f64, u64, Vec<u8>);

fn native(c: &Case) -> Run {
    let t0 = Instant::now();
    let out = Command::new(c.prog)
        .args(&c.args)
        .stdin(File::open(&c.stdin).unwrap())
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install bzip2 gnugo)", c.prog));
    (t0.elapsed().as_secs_f64(), 0, out.stdout)
}

fn spec_and_policy(c: &Case, stdin: &File, stdout: &File) -> (ProgramSpec, Policy) {
    let args: Vec<_> = c.args.iter().map(Into::into).collect();
    let spec = ProgramSpec::from_command(Path::new(c.prog), &args).unwrap();
    (spec, Policy { stdio: [stdin.as_raw_fd(), stdout.as_raw_fd(), 2], ..Default::default() })
}

/// `micro`: the micro-VM instead of QEMU.
fn guest(c: &Case, out_path: &Path, micro: bool) -> Option<Run> {
    let stdin = File::open(&c.stdin).unwrap();
    let stdout = File::create(out_path).unwrap();
    let (spec, policy) = spec_and_policy(c, &stdin, &stdout);
    let (wall, calls) = if micro {
        let cfg = ProgramConfig { mem_bytes: 512 << 20, pin_vcpu: Some(vec![0]), ..Default::default() };
        let t = microvm::guest_program::kvm::run(&spec, &cfg, policy).ok()?;
        (t.elapsed_ns as f64 / 1e9, t.syscalls.total)
    } else {
        let opts = ProgramOptions { mem_mib: 512, pin_vcpus: Some(vec![0]), ..Default::default() };
        let t = program::run(&spec, policy, &opts).unwrap_or_else(|e| panic!("{} under QEMU: {e}", c.name));
        (t.elapsed_ns as f64 / 1e9, t.syscalls.total)
    };
    drop(stdout);
    Some((wall, calls, std::fs::read(out_path).unwrap()))
}

fn cases(dir: &Path) -> Vec<Case> {
    let text = dir.join("input.txt");
    let mib = env_u64("VMM_QEMU_BENCH_BZIP2_MIB", 4) as usize;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let words = ["kvm", "guest", "exit", "vcpu", "bzip2", "trace", "host", "qemu", "ring", "loop"];
    let mut out = Vec::with_capacity(mib << 20);
    while out.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 10) as usize].as_bytes());
        out.push(if x.is_multiple_of(13) { b'\n' } else { b' ' });
    }
    std::fs::write(&text, out).unwrap();
    let gtp = dir.join("game.gtp");
    let moves = env_u64("VMM_QEMU_BENCH_GNUGO_MOVES", 10);
    let mut session = String::from("boardsize 9\nclear_board\n");
    for i in 0..moves {
        session.push_str(if i % 2 == 0 { "genmove black\n" } else { "genmove white\n" });
    }
    session.push_str("quit\n");
    std::fs::write(&gtp, session).unwrap();
    let bzip2 = Case { name: "bzip2", prog: "/usr/bin/bzip2", args: vec!["-9".into(), "-c".into()], stdin: text };
    let gnugo_args = ["--mode", "gtp", "--seed", "1", "--level", "10"].map(String::from).to_vec();
    let gnugo = Case { name: "gnugo", prog: "/usr/games/gnugo", args: gnugo_args, stdin: gtp };
    vec![bzip2, gnugo]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vmm-qemu-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // SAFETY: a zeroed cpu_set_t with CPU 0 set: the native runs on the vCPU's CPU.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let reps = env_u64("VMM_QEMU_BENCH_REPS", 3);
    let accel = vmm_qemu::resolve_accel(vmm_qemu::Accel::Auto).unwrap();
    println!("vmm-qemu programs bench: QEMU accel {accel:?}, {reps} repetitions, CPU 0");
    println!(
        "{:<6} {:>10} {:>10} {:>8} {:>9} {:>12} {:>16}",
        "prog", "guest ms", "native ms", "ratio", "syscalls", "us/syscall", "micro-VM us/call"
    );
    for c in cases(&dir) {
        let (mut g, mut n, mut m, mut calls) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..reps {
            let (gw, gc, gout) = guest(&c, &dir.join("out"), false).unwrap();
            let (nw, _, nout) = native(&c);
            assert!(gout == nout, "{}: output under QEMU differs from the host's", c.name);
            if let Some((mw, mc, _)) = guest(&c, &dir.join("out"), true) {
                m.push((mw - nw) / mc as f64);
            }
            g.push(gw);
            n.push(nw);
            calls = gc;
        }
        let (gm, nm) = (median(&g), median(&n));
        let micro = if m.is_empty() { "needs /dev/kvm".to_string() } else { format!("{:.1}", median(&m) * 1e6) };
        // Under TCG the extra time is translated code, not system calls.
        let per_call = match accel {
            vmm_qemu::Accel::Tcg => "n/a (TCG)".to_string(),
            _ => format!("{:.1}", (gm - nm) / calls as f64 * 1e6),
        };
        println!(
            "{:<6} {:>10.1} {:>10.1} {:>8.3} {:>9} {:>12} {:>16}",
            c.name,
            gm * 1e3,
            nm * 1e3,
            gm / nm,
            calls,
            per_call,
            micro
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
