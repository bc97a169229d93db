//! A second platform for the loader and the system-call server: the program runs in a
//! forked host process under `PTRACE_SYSEMU` (as gVisor's ptrace platform), its guest
//! RAM a memfd shared with the VMM and mapped at the same addresses. Every `syscall`
//! stops the child without executing; the server performs it. Used to test loader and
//! server where /dev/kvm is missing, and as the native-speed reference for them.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::loader::{Loaded, ProgramSpec, load};
use super::server::{Outcome, Policy, Syscall, SyscallServer, SyscallStats};
use super::space::Layout;
use crate::sys;

/// Result of a run under ptrace (the ground truth of `--platform ptrace`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PtraceRun {
    pub platform: String,
    pub pid: u32,
    pub program: String,
    pub argv: Vec<String>,
    /// From the fork to the program's exit.
    pub elapsed_ns: u64,
    pub exit_status: i32,
    #[serde(rename = "syscalls")]
    pub stats: SyscallStats,
}

struct SharedRam {
    fd: OwnedFd,
    ptr: *mut u8,
    size: usize,
}

impl SharedRam {
    fn new(size: u64) -> Result<SharedRam, String> {
        // SAFETY: memfd_create with a static name; the fd is owned right away.
        let fd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a plain syscall on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) } != 0 {
            return Err(format!("guest RAM of {} MiB: {}", size >> 20, std::io::Error::last_os_error()));
        }
        let ptr = sys::map_shared(fd.as_fd(), size as usize).map_err(|e| format!("mmap guest RAM: {e}"))?;
        Ok(SharedRam { fd, ptr, size: size as usize })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: our mapping of `size` bytes; the child is stopped whenever we use it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size) }
    }
}

impl Drop for SharedRam {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.size) };
    }
}

/// The forked child: map guest RAM at its guest addresses, stop for the tracer.
/// Only async-signal-safe calls here (the parent may have threads).
fn child(ram: &SharedRam, layout: &Layout) -> ! {
    // SAFETY: raw syscalls in a forked child, then _exit; nothing returns to Rust.
    unsafe {
        let len = (layout.ram_size - layout.program_base) as usize;
        let p = libc::mmap(
            layout.program_base as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
            ram.fd.as_raw_fd(),
            layout.program_base as i64,
        );
        if p as u64 != layout.program_base {
            let m = b"microvm ptrace platform: guest RAM range is taken in the child\n";
            libc::write(2, m.as_ptr() as *const libc::c_void, m.len());
            libc::_exit(127);
        }
        libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
        libc::raise(libc::SIGSTOP);
        libc::_exit(126); // not reached: the tracer moves the child to the program
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "SIGTRAP",
    }
}

fn wait(pid: i32) -> Result<i32, String> {
    let mut st = 0;
    // SAFETY: waitpid on our own child.
    if unsafe { libc::waitpid(pid, &mut st, libc::__WALL) } != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    Ok(st)
}

fn regs(pid: i32) -> Result<libc::user_regs_struct, String> {
    // SAFETY: user_regs_struct is plain data; PTRACE_GETREGS fills it for a stopped tracee.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: r is a user_regs_struct the call writes into; pid is our stopped tracee.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut r) } != 0 {
        return Err(format!("PTRACE_GETREGS: {}", std::io::Error::last_os_error()));
    }
    Ok(r)
}

fn set_regs(pid: i32, r: &libc::user_regs_struct) -> Result<(), String> {
    // SAFETY: as above.
    if unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0, r) } != 0 {
        return Err(format!("PTRACE_SETREGS: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `spec` under ptrace with `ram_size` bytes of guest memory.
pub fn run(spec: &ProgramSpec, ram_size: u64, policy: Policy) -> Result<PtraceRun, String> {
    let layout = Layout::new(ram_size);
    let mut ram = SharedRam::new(ram_size)?;
    let loaded: Loaded = load(ram.bytes(), layout, spec)?;
    let mut server = SyscallServer::new(&loaded, policy)?;
    let t0 = std::time::Instant::now();
    // SAFETY: fork; the child only makes raw syscalls (see `child`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        child(&ram, &layout);
    }
    let kill = |e: String| {
        // SAFETY: killing and reaping our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = wait(pid);
        e
    };
    let st = wait(pid)?;
    if !libc::WIFSTOPPED(st) {
        return Err(kill(format!("the ptrace child did not stop (status {st:#x})")));
    }
    // SAFETY: options on our stopped tracee.
    unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD) };
    let mut r = regs(pid).map_err(kill)?;
    let (cs, ss) = (r.cs, r.ss);
    // SAFETY: plain data.
    r = unsafe { std::mem::zeroed() };
    (r.cs, r.ss, r.rip, r.rsp, r.eflags) = (cs, ss, loaded.entry, loaded.stack_pointer, 0x202);
    set_regs(pid, &r).map_err(kill)?;
    let mut sig = 0;
    loop {
        // SAFETY: resume our stopped tracee until its next syscall entry or signal.
        unsafe { libc::ptrace(libc::PTRACE_SYSEMU, pid, 0, sig) };
        sig = 0;
        let st = wait(pid).map_err(kill)?;
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            return Err(format!("the ptrace child ended unexpectedly (status {st:#x})"));
        }
        let s = libc::WSTOPSIG(st);
        let mut r = regs(pid).map_err(kill)?;
        if s != (libc::SIGTRAP | 0x80) {
            if matches!(s, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP) {
                // SAFETY: siginfo_t is plain data; PTRACE_GETSIGINFO fills it for a stopped tracee.
                let addr = unsafe {
                    let mut si: libc::siginfo_t = std::mem::zeroed();
                    libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0, &mut si);
                    si.si_addr() as u64
                };
                return Err(kill(format!(
                    "guest fault: signal {s} ({}) at address {addr:#x}, rip {:#x}, rsp {:#x}",
                    signal_name(s),
                    r.rip,
                    r.rsp
                )));
            }
            continue; // other signals are the VMM's, not the program's: not delivered
        }
        let call = Syscall { nr: r.orig_rax, args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9] };
        match server.serve(ram.bytes(), call).map_err(kill)? {
            Outcome::Return(v) => r.rax = v as u64,
            Outcome::SetFsBase(b) => (r.fs_base, r.rax) = (b, 0),
            Outcome::Exit(code) => {
                kill(String::new());
                return Ok(PtraceRun {
                    platform: "ptrace".into(),
                    pid: std::process::id(),
                    program: loaded.exe.display().to_string(),
                    argv: spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
                    elapsed_ns: t0.elapsed().as_nanos() as u64,
                    exit_status: code,
                    stats: server.stats().clone(),
                });
            }
        }
        set_regs(pid, &r).map_err(kill)?;
    }
}
