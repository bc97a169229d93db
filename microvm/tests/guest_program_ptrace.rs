//! The loader and the system-call server running real programs on the ptrace platform
//! (no /dev/kvm needed): the program runs natively in a forked process whose every
//! system call is served by `SyscallServer`.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use microvm::guest_program::{Policy, ProgramSpec, ptrace};

const RAM: u64 = 512 << 20;

fn spec(prog: &str, args: &[&str]) -> ProgramSpec {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    ProgramSpec::from_command(Path::new(prog), &args).unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("microvm-gp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Several MiB of compressible but not trivial text, the same on every run.
fn generate(path: &Path, bytes: usize) {
    let words = ["kvm", "guest", "exit", "vcpu", "bzip2", "trace", "host", "emulator", "qemu", "ring"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(bytes + 16);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 10) as usize].as_bytes());
        out.push(if x.is_multiple_of(13) { b'\n' } else { b' ' });
        if x.is_multiple_of(7) {
            out.extend_from_slice(format!("{}", x % 100_000).as_bytes());
        }
    }
    out.truncate(bytes);
    std::fs::write(path, out).unwrap();
}

/// Runs `prog args` in the guest with stdin from `stdin` and stdout into `stdout`.
fn guest(prog: &str, args: &[&str], stdin: &Path, stdout: &Path) -> ptrace::PtraceRun {
    let i = File::open(stdin).unwrap();
    let o = File::create(stdout).unwrap();
    let policy = Policy { stdio: [i.as_raw_fd(), o.as_raw_fd(), 2], ..Default::default() };
    ptrace::run(&spec(prog, args), RAM, policy).unwrap()
}

fn host(prog: &str, args: &[&str], stdin: &Path) -> Vec<u8> {
    let out =
        Command::new(prog).args(args).stdin(File::open(stdin).unwrap()).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "host {prog} failed");
    out.stdout
}

#[test]
fn bzip2_output_is_byte_identical_and_round_trips() {
    let d = tmpdir("bz");
    let input = d.join("input.txt");
    generate(&input, 6 << 20);
    let zin = d.join("input.txt.bz2");
    let r = guest("/usr/bin/bzip2", &["-9", "-c", input.to_str().unwrap()], Path::new("/dev/null"), &zin);
    assert_eq!(r.exit_status, 0);
    let want = host("/usr/bin/bzip2", &["-9", "-c", input.to_str().unwrap()], Path::new("/dev/null"));
    let got = std::fs::read(&zin).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "guest bzip2 output differs from the host's");
    assert_eq!(r.stats.stdout_bytes, got.len() as u64);
    assert!(r.stats.bytes_read >= 6 << 20, "read the whole input: {}", r.stats.bytes_read);
    // decompress inside the guest, from stdin
    let back = d.join("back.txt");
    let r2 = guest("bzip2", &["-d", "-c"], &zin, &back);
    assert_eq!(r2.exit_status, 0);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&input).unwrap(), "round trip gives the original back");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn gnugo_answers_a_gtp_script_as_on_the_host() {
    let d = tmpdir("gnugo");
    let script = d.join("script.gtp");
    std::fs::write(&script, "boardsize 9\nclear_board\nkomi 6.5\ngenmove black\ngenmove white\nplay black E5\ngenmove white\ngenmove black\nshowboard\nquit\n").unwrap();
    let args = ["--mode", "gtp", "--seed", "7", "--level", "6"];
    let out = d.join("answers.txt");
    let r = guest("/usr/games/gnugo", &args, &script, &out);
    assert_eq!(r.exit_status, 0);
    let want = host("/usr/games/gnugo", &args, &script);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn writes_outside_guest_write_dirs_are_refused() {
    let d = tmpdir("policy");
    let input = d.join("f.txt");
    std::fs::write(&input, "hello\n").unwrap();
    // bzip2 without -c creates f.txt.bz2 next to the input: refused (no --guest-write)
    let r = ptrace::run(&spec("bzip2", &["-k", input.to_str().unwrap()]), RAM, Policy::default()).unwrap();
    assert_ne!(r.exit_status, 0);
    assert!(!d.join("f.txt.bz2").exists());
}

#[test]
fn unknown_system_calls_stop_the_guest_with_their_name() {
    // bzip2 without -k removes its input (unlink) after writing f.txt.bz2
    let d = tmpdir("unknown");
    let input = d.join("f.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let policy = Policy { write_dirs: vec![d.clone()], ..Default::default() };
    let e = ptrace::run(&spec("bzip2", &[input.to_str().unwrap()]), RAM, policy).unwrap_err();
    assert!(e.contains("system call") && e.contains("--enosys-unknown"), "{e}");
}
