//! Unmodified Linux programs as the micro-VM's guest (issue 9): real /usr/bin/bzip2,
//! real GNU Go and a static program built here, compared with the same commands run on
//! the host. Each scenario runs on both platforms of `microvm::guest_program`:
//! * `kvm`: the real micro-VM (needs /dev/kvm; skipped with a printed reason without);
//! * `ptrace`: the same loader and system-call server, the program natively in a
//!   PTRACE_SYSEMU child (runs anywhere).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::generate_text;
use microvm::guest_program::{self, Policy, ProgramConfig, ProgramSpec, SyscallStats, ptrace};

mod common;

const RAM: u64 = 512 << 20;

/// One VM at a time (the machine has 2 CPUs, and tests compare timings-free output only).
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Kvm,
    Ptrace,
}

/// Skips (with the reason printed) when the platform cannot run here.
fn available(p: Platform) -> bool {
    if p == Platform::Kvm
        && let Some(why) = microvm::no_kvm()
    {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    true
}

struct Run {
    exit_status: i32,
    stats: SyscallStats,
}

fn spec(prog: &str, args: &[&str]) -> ProgramSpec {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    ProgramSpec::from_command(Path::new(prog), &args).unwrap()
}

fn run_on(p: Platform, spec: &ProgramSpec, policy: Policy) -> Result<Run, String> {
    match p {
        Platform::Ptrace => ptrace::run(spec, RAM, policy).map(|r| Run { exit_status: r.exit_status, stats: r.stats }),
        Platform::Kvm => {
            let cfg = ProgramConfig { mem_bytes: RAM, ..Default::default() };
            let t = guest_program::kvm::run(spec, &cfg, policy).map_err(|e| e.to_string())?;
            assert_eq!(t.vcpus.len(), 1);
            assert_eq!(t.vcpus[0].name, "CPU 0/KVM");
            assert_eq!(
                t.vcpus[0].exits.get("io").copied().unwrap_or(0),
                t.syscalls.total,
                "one io exit per system call: {:?}",
                t.vcpus[0].exits
            );
            Ok(Run { exit_status: t.exit_status, stats: t.syscalls })
        }
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("microvm-gp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `prog args` in the guest with stdin from `stdin` and stdout into `stdout`.
fn guest(p: Platform, prog: &str, args: &[&str], stdin: &Path, stdout: &Path) -> Run {
    let i = File::open(stdin).unwrap();
    let o = File::create(stdout).unwrap();
    let policy = Policy { stdio: [i.as_raw_fd(), o.as_raw_fd(), 2], ..Default::default() };
    run_on(p, &spec(prog, args), policy).unwrap()
}

fn host(prog: &str, args: &[&str], stdin: &Path) -> (i32, Vec<u8>) {
    let out =
        Command::new(prog).args(args).stdin(File::open(stdin).unwrap()).stderr(Stdio::inherit()).output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout)
}

fn bzip2_output_is_byte_identical_and_round_trips(p: Platform) {
    let d = tmpdir(&format!("bz-{p:?}"));
    let input = d.join("input.txt");
    generate_text(&input, 6 << 20);
    let zin = d.join("input.txt.bz2");
    let r = guest(p, "/usr/bin/bzip2", &["-9", "-c", input.to_str().unwrap()], Path::new("/dev/null"), &zin);
    assert_eq!(r.exit_status, 0);
    let (st, want) = host("/usr/bin/bzip2", &["-9", "-c", input.to_str().unwrap()], Path::new("/dev/null"));
    assert_eq!(st, 0);
    let got = std::fs::read(&zin).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "guest bzip2 output differs from the host's");
    assert_eq!(r.stats.stdout_bytes, got.len() as u64);
    assert!(r.stats.bytes_read >= 6 << 20, "read the whole input: {}", r.stats.bytes_read);
    assert!(r.stats.by_name["read"].count > 1000 && r.stats.by_name["write"].count > 100, "{:?}", r.stats.by_name);
    // decompress inside the guest, from stdin to stdout
    let back = d.join("back.txt");
    let r2 = guest(p, "bzip2", &["-d", "-c"], &zin, &back);
    assert_eq!(r2.exit_status, 0);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&input).unwrap(), "round trip gives the original back");
    let _ = std::fs::remove_dir_all(&d);
}

fn gnugo_answers_a_gtp_script_as_on_the_host(p: Platform) {
    let d = tmpdir(&format!("gnugo-{p:?}"));
    let script = d.join("script.gtp");
    std::fs::write(
        &script,
        "boardsize 9\nclear_board\nkomi 6.5\ngenmove black\ngenmove white\nplay black E5\ngenmove white\n\
         genmove black\nshowboard\nquit\n",
    )
    .unwrap();
    let args = ["--mode", "gtp", "--seed", "7", "--level", "6"];
    let out = d.join("answers.txt");
    let r = guest(p, "/usr/games/gnugo", &args, &script, &out);
    assert_eq!(r.exit_status, 0);
    let (st, want) = host("/usr/games/gnugo", &args, &script);
    assert_eq!(st, 0);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    assert!(got.starts_with(b"= "), "answers: {}", String::from_utf8_lossy(&got));
    let _ = std::fs::remove_dir_all(&d);
}

/// Builds tests/static_prog.c as a static, non-PIE executable (linked at 0x400000).
fn static_prog(d: &Path) -> PathBuf {
    let exe = d.join("static_prog");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/static_prog.c");
    let st = Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&exe).arg(&src).status().expect("run gcc");
    assert!(st.success(), "gcc -static failed (needs glibc's libc.a: package libc6-dev)");
    exe
}

fn a_static_binary_runs(p: Platform) {
    let d = tmpdir(&format!("static-{p:?}"));
    let exe = static_prog(&d);
    let data = d.join("data.bin");
    generate_text(&data, 3 << 20);
    let out = d.join("out.txt");
    // SAFETY: every test of this binary runs under SERIAL, so no other thread reads the
    // environment while it is set (setenv races only with a concurrent getenv).
    unsafe { std::env::set_var("MICROVM_TEST_VAR", "from-the-vmm") };
    let args = [data.to_str().unwrap()];
    let r = guest(p, exe.to_str().unwrap(), &args, Path::new("/dev/null"), &out);
    let (st, want) = host(exe.to_str().unwrap(), &args, Path::new("/dev/null"));
    assert_eq!((r.exit_status, st), (3, 3), "exit status passes through");
    let got = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got, String::from_utf8(want).unwrap());
    assert!(got.contains("var=from-the-vmm random=yes"), "{got}");
    let _ = std::fs::remove_dir_all(&d);
}

fn writes_outside_guest_write_dirs_are_refused(p: Platform) {
    let d = tmpdir(&format!("policy-{p:?}"));
    let input = d.join("f.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let devnull = File::options().write(true).open("/dev/null").unwrap();
    let quiet = Policy { stdio: [0, 1, devnull.as_raw_fd()], ..Default::default() };
    // bzip2 -k writes f.txt.bz2 beside its input: refused without --guest-write
    let r = run_on(p, &spec("bzip2", &["-k", input.to_str().unwrap()]), quiet.clone()).unwrap();
    assert_ne!(r.exit_status, 0);
    assert!(!d.join("f.txt.bz2").exists());
    // allowed under --guest-write; plain bzip2 then copies the mode with fchmod, which
    // is not served: the guest stops with a message naming the call
    let allowed = Policy { write_dirs: vec![d.clone()], ..quiet };
    let e = run_on(p, &spec("bzip2", &[input.to_str().unwrap()]), allowed).err().expect("fchmod stops the guest");
    assert!(e.contains("system call fchmod (number 91)") && e.contains("--enosys-unknown"), "{e}");
    assert!(d.join("f.txt.bz2").exists(), "the write under --guest-write happened");
    let _ = std::fs::remove_dir_all(&d);
}

fn a_guest_fault_names_the_address_and_stops_only_the_guest(p: Platform) {
    let d = tmpdir(&format!("fault-{p:?}"));
    let src = d.join("crash.c");
    std::fs::write(&src, "int main(void) { volatile int *p = (int *)0x7ff000001000; return *p; }\n").unwrap();
    let exe = d.join("crash");
    assert!(Command::new("gcc").arg("-O2").arg("-o").arg(&exe).arg(&src).status().unwrap().success());
    let e = run_on(p, &spec(exe.to_str().unwrap(), &[]), Policy::default()).err().expect("the guest faults");
    assert!(e.contains("0x7ff000001000") && !e.contains('\n'), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

fn a_non_elf_program_is_a_one_line_error(p: Platform) {
    let e = run_on(p, &spec("/etc/passwd", &[]), Policy::default()).err().unwrap();
    assert!(e.contains("/etc/passwd") && e.contains("not an ELF file") && !e.contains('\n'), "{e}");
}

macro_rules! on_both_platforms {
    ($($name:ident),* $(,)?) => {
        mod kvm {
            $(#[test]
            fn $name() {
                let _s = super::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
                if super::available(super::Platform::Kvm) {
                    super::$name(super::Platform::Kvm);
                }
            })*
        }
        mod ptrace_platform {
            $(#[test]
            fn $name() {
                let _s = super::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
                super::$name(super::Platform::Ptrace);
            })*
        }
    };
}

on_both_platforms!(
    bzip2_output_is_byte_identical_and_round_trips,
    gnugo_answers_a_gtp_script_as_on_the_host,
    a_static_binary_runs,
    writes_outside_guest_write_dirs_are_refused,
    a_non_elf_program_is_a_one_line_error,
    a_guest_fault_names_the_address_and_stops_only_the_guest,
);
