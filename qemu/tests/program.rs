//! Unmodified Linux programs under real QEMU: their output against the same program
//! run on the host, and the guest's exit count against the calls served.
//!
//! Needs qemu-system-x86_64, bzip2 and gnugo (`apt-get install qemu-system-x86 bzip2
//! gnugo`); runs under KVM where /dev/kvm opens, else under TCG.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use microvm::guest_program::{Policy, ProgramSpec};
use vmm_qemu::program::{ProgramOptions, ProgramTruth, run};

/// Runs `program args` under QEMU with stdin from `input` and stdout into a file;
/// returns the truth and what the program wrote.
fn run_in_qemu(program: &str, args: &[&str], input: &Path) -> (ProgramTruth, Vec<u8>) {
    let dir = tempdir();
    let out_path = dir.join("stdout");
    let stdin = std::fs::File::open(input).unwrap();
    let stdout = std::fs::File::create(&out_path).unwrap();
    use std::os::fd::AsRawFd as _;
    let policy = Policy { stdio: [stdin.as_raw_fd(), stdout.as_raw_fd(), 2], ..Default::default() };
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let spec = ProgramSpec::from_command(Path::new(program), &args).unwrap_or_else(|e| panic!("{program}: {e}"));
    let truth = run(&spec, policy, &ProgramOptions { mem_mib: 256, ..Default::default() })
        .unwrap_or_else(|e| panic!("{program} under QEMU: {e}"));
    drop(stdout);
    let out = std::fs::read(&out_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (truth, out)
}

fn tempdir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("vmm-qemu-program-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn host_output(program: &str, args: &[&str], input: &Path) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("run {program} on the host ({e}): apt-get install bzip2 gnugo"));
    out.stdout
}

/// Every system call the server handled went through the guest's entry, and each made
/// at least 3 port exits (byte out, a line-status poll, byte in), plus the final
/// isa-debug-exit.
fn check_exits(t: &ProgramTruth) {
    assert_eq!(t.vcpu.syscalls, t.syscalls.total, "{:?}", t.vcpu);
    assert!(t.vcpu.exits["io"] > 3 * t.syscalls.total, "{:?}", t.vcpu);
}

#[test]
fn bzip2_output_is_byte_identical_to_the_hosts() {
    let dir = tempdir();
    let input = dir.join("input.txt");
    let text: String = (0..20_000).map(|i| format!("line {i} of the vmmtrace QEMU guest program test\n")).collect();
    std::fs::write(&input, text).unwrap();
    let (t, out) = run_in_qemu("bzip2", &["-9", "-c"], &input);
    assert_eq!(t.exit_status, 0);
    assert_eq!(out, host_output("bzip2", &["-9", "-c"], &input), "compressed bytes differ from the host's bzip2");
    check_exits(&t);
    assert!(t.syscalls.by_name.contains_key("read") && t.syscalls.by_name.contains_key("write"), "{:?}", t.syscalls);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gnugo_answers_as_on_the_host() {
    let dir = tempdir();
    let input = dir.join("game.gtp");
    std::fs::write(&input, "boardsize 9\nclear_board\nplay black E5\ngenmove white\nshowboard\nquit\n").unwrap();
    let args = ["--mode", "gtp", "--seed", "1"];
    let (t, out) = run_in_qemu("/usr/games/gnugo", &args, &input);
    assert_eq!(t.exit_status, 0);
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&host_output("/usr/games/gnugo", &args, &input)));
    check_exits(&t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_programs_exit_status_is_kept() {
    let dir = tempdir();
    let input = dir.join("not-bzip2");
    std::fs::write(&input, "plain text, not a bzip2 stream\n").unwrap();
    let (t, _) = run_in_qemu("bzip2", &["-d", "-c"], &input);
    assert_eq!(t.exit_status, 2, "bzip2 -d of garbage exits 2 on the host");
    check_exits(&t);
    let _ = std::fs::remove_dir_all(&dir);
}
