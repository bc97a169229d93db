//! The system-call server: performs a guest program's Linux system calls against the
//! host, on guest memory given as a byte slice and a register set. It knows nothing
//! of KVM, so any platform that stops the program at each `syscall` (a KVM vCPU exit,
//! QEMU through shared guest RAM and a mailbox, ptrace) can use it.
//!
//! Files go through the host with the VMM's permissions, restricted by [`Policy`]:
//! reads anywhere the VMM can read, writes only to the program's stdout/stderr and to
//! files under the `--guest-write` directories. Memory calls (brk, mmap, ...) manage
//! the guest's own [`AddressSpace`]; no host mapping changes.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::loader::Loaded;
use super::names::syscall_name;
use super::space::{AddressSpace, GuestMemory, PAGE, page_up};

/// One system call as the program made it: RAX and RDI, RSI, RDX, R10, R8, R9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    pub nr: u64,
    pub args: [u64; 6],
}

/// What the platform does after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Put this in RAX (a negative errno on failure) and resume after the `syscall`.
    Return(i64),
    /// arch_prctl(ARCH_SET_FS): set the FS base to this, RAX = 0, resume.
    SetFsBase(u64),
    /// exit/exit_group: the program is finished with this status.
    Exit(i32),
}

/// What the program may do to the host's files, and which host fds are its stdio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Directories under which the program may create and write files.
    pub write_dirs: Vec<PathBuf>,
    /// Answer system calls the server does not know with ENOSYS instead of stopping.
    pub enosys_unknown: bool,
    /// The host fds the program's fds 0, 1, 2 are (default: the VMM's own 0, 1, 2).
    /// The server never closes them; the caller keeps them open for the run.
    pub stdio: [i32; 3],
}

impl Default for Policy {
    fn default() -> Self {
        Policy { write_dirs: Vec::new(), enosys_unknown: false, stdio: [0, 1, 2] }
    }
}

/// Count and VMM time of one system call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStat {
    pub count: u64,
    /// Wall time the VMM spent serving these calls (from the exit to the resume,
    /// excluding KVM's own entry/exit).
    pub vmm_ns: u64,
}

/// What the server saw, for the ground truth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallStats {
    pub total: u64,
    pub by_name: BTreeMap<String, CallStat>,
    /// Bytes the program read (read, pread64, readv) and wrote (write, writev, pwrite64).
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// brk, mmap and mremap calls refused for lack of guest memory (`--mem`).
    pub out_of_memory: u64,
}

const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const MAP_SHARED: u64 = 1;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MREMAP_MAYMOVE: u64 = 1;
const PROT_WRITE: u64 = 2;
const MADV_DONTNEED: u64 = 4;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const W_OK: u64 = 2;
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;

const EPERM: i64 = 1;
const ENOENT: i64 = 2;
const EBADF: i64 = 9;
const EAGAIN: i64 = 11;
const ENOMEM: i64 = 12;
const EACCES: i64 = 13;
const EEXIST: i64 = 17;
const EINVAL: i64 = 22;
const EMFILE: i64 = 24;
const ENOTTY: i64 = 25;
const ENOSYS: i64 = 38;
const ENOTSUP: i64 = 95;

/// A guest file descriptor: a host fd the VMM owns, or one of the VMM's stdio fds.
#[derive(Debug)]
enum Fd {
    Stdio { host: i32, writable: bool },
    File { file: OwnedFd, writable: bool },
}

impl Fd {
    fn host(&self) -> i32 {
        match self {
            Fd::Stdio { host, .. } => *host,
            Fd::File { file, .. } => file.as_raw_fd(),
        }
    }
    fn writable(&self) -> bool {
        match self {
            Fd::Stdio { writable, .. } | Fd::File { writable, .. } => *writable,
        }
    }
}

/// Result of one call before it becomes RAX: a value or a positive errno.
type Sys = Result<u64, i64>;

/// Serves one program's system calls. Create it from the loader's result.
pub struct SyscallServer {
    space: AddressSpace,
    fds: Vec<Option<Fd>>,
    policy: Policy,
    stats: SyscallStats,
    exe: PathBuf,
    fs_base: u64,
    pid: u32,
    /// MICROVM_DEBUG_SYSCALLS is set: print every call and its result on stderr.
    debug: bool,
}

fn host_errno() -> i64 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(EINVAL as i32) as i64
}

/// A host system call with raw arguments; pointers must already be host pointers.
fn host(nr: libc::c_long, a: [u64; 5]) -> Sys {
    // SAFETY: every caller passes pointers into guest memory it has bounds-checked (or
    // null), sized for what the call writes, and fds the server owns or the VMM's stdio.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
    if r < 0 { Err(host_errno()) } else { Ok(r as u64) }
}

impl SyscallServer {
    /// A server for the program `loaded`; stdin/stdout/stderr are the VMM's.
    pub fn new(loaded: &Loaded, policy: Policy) -> Result<SyscallServer, String> {
        let mut p = policy;
        for d in p.write_dirs.iter_mut() {
            *d = std::fs::canonicalize(&*d).map_err(|e| format!("--guest-write {}: {e}", d.display()))?;
        }
        let fds = vec![
            Some(Fd::Stdio { host: p.stdio[0], writable: false }),
            Some(Fd::Stdio { host: p.stdio[1], writable: true }),
            Some(Fd::Stdio { host: p.stdio[2], writable: true }),
        ];
        Ok(SyscallServer {
            space: loaded.space.clone(),
            fds,
            policy: p,
            stats: SyscallStats::default(),
            exe: loaded.exe.clone(),
            fs_base: 0,
            pid: std::process::id(),
            debug: std::env::var_os("MICROVM_DEBUG_SYSCALLS").is_some(),
        })
    }

    pub fn stats(&self) -> &SyscallStats {
        &self.stats
    }

    /// The program's FS base as last set with arch_prctl.
    pub fn fs_base(&self) -> u64 {
        self.fs_base
    }

    /// Serves one call on guest RAM `ram` (from guest-physical 0). `Err` stops the
    /// program: a one-line reason (an unknown system call without --enosys-unknown).
    pub fn serve(&mut self, ram: &mut [u8], call: Syscall) -> Result<Outcome, String> {
        let t0 = Instant::now();
        let mut mem = GuestMemory::new(ram, self.space.layout.program_base);
        let out = self.dispatch(&mut mem, call);
        let refused = match (call.nr, &out) {
            (9 | 25, Ok(Outcome::Return(r))) => *r == -ENOMEM,
            (12, Ok(Outcome::Return(r))) => call.args[0] > *r as u64,
            _ => false,
        };
        self.stats.out_of_memory += refused as u64;
        if self.debug {
            eprintln!("[sys] {} {:x?} -> {:x?}", syscall_name(call.nr), call.args, out);
        }
        let ns = t0.elapsed().as_nanos() as u64;
        let st = self.stats.by_name.entry(syscall_name(call.nr).into_owned()).or_default();
        st.count += 1;
        st.vmm_ns += ns;
        self.stats.total += 1;
        out
    }

    fn dispatch(&mut self, mem: &mut GuestMemory, c: Syscall) -> Result<Outcome, String> {
        let a = c.args;
        let r: Sys = match c.nr {
            0 => self.read(mem, a[0], a[1], a[2], None),
            1 => self.write(mem, a[0], a[1], a[2], None),
            17 => self.read(mem, a[0], a[1], a[2], Some(a[3])),
            18 => self.write(mem, a[0], a[1], a[2], Some(a[3])),
            19 => self.readv_writev(mem, a[0], a[1], a[2], false),
            20 => self.readv_writev(mem, a[0], a[1], a[2], true),
            2 => self.openat(mem, AT_FDCWD as u64, a[0], a[1], a[2]),
            257 => self.openat(mem, a[0], a[1], a[2], a[3]),
            3 => self.close(a[0]),
            8 => self.fd(a[0]).and_then(|f| host(libc::SYS_lseek, [f as u64, a[1], a[2], 0, 0])),
            5 => self.fstatat(mem, a[0], 0, a[1], AT_EMPTY_PATH),
            4 => self.fstatat(mem, AT_FDCWD as u64, a[0], a[1], 0),
            6 => self.fstatat(mem, AT_FDCWD as u64, a[0], a[1], libc::AT_SYMLINK_NOFOLLOW as u64),
            262 => self.fstatat(mem, a[0], a[1], a[2], a[3]),
            332 => self.statx(mem, a),
            21 => self.faccessat(mem, AT_FDCWD as u64, a[0], a[1]),
            269 | 439 => self.faccessat(mem, a[0], a[1], a[2]),
            89 => self.readlinkat(mem, AT_FDCWD as u64, a[0], a[1], a[2]),
            267 => self.readlinkat(mem, a[0], a[1], a[2], a[3]),
            79 => {
                mem.slice_mut(a[0], a[1]).and_then(|b| host(libc::SYS_getcwd, [b.as_mut_ptr() as u64, a[1], 0, 0, 0]))
            }
            72 => self.fcntl(a[0], a[1], a[2]),
            221 => self.fd(a[0]).map(|_| 0), // fadvise64: advice only
            217 => self.fd(a[0]).and_then(|f| {
                let out = mem.slice_mut(a[1], a[2])?.as_mut_ptr() as u64;
                host(libc::SYS_getdents64, [f as u64, out, a[2], 0, 0])
            }),
            137 => self.path(mem, a[0]).and_then(|p| {
                let out = out_ptr(mem, a[1], size_of::<libc::statfs>())?;
                host(libc::SYS_statfs, [p.as_ptr() as u64, out, 0, 0, 0])
            }),
            138 => self.fd(a[0]).and_then(|f| {
                let out = out_ptr(mem, a[1], size_of::<libc::statfs>())?;
                host(libc::SYS_fstatfs, [f as u64, out, 0, 0, 0])
            }),
            32 => self.dup(a[0], None),
            33 => self.dup(a[0], Some(a[1])),
            292 => self.dup(a[0], Some(a[1])).and_then(|n| if a[0] == a[1] { Err(EINVAL) } else { Ok(n) }),
            22 => self.pipe(mem, a[0], 0),
            293 => self.pipe(mem, a[0], a[1]),
            99 => out_ptr(mem, a[0], size_of::<libc::sysinfo>()).and_then(|p| host(libc::SYS_sysinfo, [p, 0, 0, 0, 0])),
            // answered as a kernel or file system without them would; programs fall back
            326 => Err(ENOSYS),        // copy_file_range: cat & co. fall back to read/write
            191..=196 => Err(ENOTSUP), // *getxattr, *listxattr: no extended attributes
            41 => Err(EACCES),         // socket: the guest has no network
            16 => self.fd(a[0]).and(Err(ENOTTY)),
            12 => Ok(self.brk(mem, a[0])),
            9 => self.mmap(mem, a),
            11 => self.munmap(mem, a[0], a[1]),
            25 => self.mremap(mem, a),
            10 => aligned(a[0]).map(|_| 0),
            28 => self.madvise(mem, a[0], a[1], a[2]),
            158 => return self.arch_prctl(mem, a[0], a[1]),
            218 | 39 | 186 => Ok(self.pid as u64),
            110 => Ok(std::os::unix::process::parent_id() as u64),
            102 => Ok(getuid()),
            104 => Ok(getgid()),
            107 => Ok(geteuid()),
            108 => Ok(getegid()),
            273 => Ok(0),       // set_robust_list: no threads, nothing to clean up
            334 => Err(ENOSYS), // rseq: as a kernel without it; glibc carries on
            13 => zero_out(mem, a[2], 32),
            14 => zero_out(mem, a[2], a[3].min(128)),
            131 => self.sigaltstack(mem, a[1]),
            97 => self.prlimit(mem, 0, a[0], 0, a[1]),
            302 => self.prlimit(mem, a[0], a[1], a[2], a[3]),
            318 => mem
                .slice_mut(a[0], a[1])
                .and_then(|b| host(libc::SYS_getrandom, [b.as_mut_ptr() as u64, a[1], a[2], 0, 0])),
            63 => out_ptr(mem, a[0], size_of::<libc::utsname>()).and_then(|p| host(libc::SYS_uname, [p, 0, 0, 0, 0])),
            228 => out_ptr(mem, a[1], 16).and_then(|p| host(libc::SYS_clock_gettime, [a[0], p, 0, 0, 0])),
            229 => opt_out_ptr(mem, a[1], 16).and_then(|p| host(libc::SYS_clock_getres, [a[0], p, 0, 0, 0])),
            96 => self.gettimeofday(mem, a[0], a[1]),
            201 => self.time(mem, a[0]),
            98 => self.getrusage(mem, a[0], a[1]),
            100 => self.times(mem, a[0]),
            204 => self.sched_getaffinity(mem, a[1], a[2]),
            202 => return self.futex(mem, a[0], a[1], a[2]),
            60 | 231 => return Ok(Outcome::Exit((a[0] & 0xff) as i32)),
            nr => {
                if !self.policy.enosys_unknown {
                    return Err(format!(
                        "the program made system call {} (number {nr}), which the micro-VM does not serve; \
                         rerun with --enosys-unknown to answer unknown calls with ENOSYS",
                        syscall_name(nr)
                    ));
                }
                Err(ENOSYS)
            }
        };
        Ok(Outcome::Return(match r {
            Ok(v) => v as i64,
            Err(e) => -e,
        }))
    }

    fn entry(&self, g: u64) -> Result<&Fd, i64> {
        self.fds.get(g as usize).and_then(|f| f.as_ref()).ok_or(EBADF)
    }

    fn fd(&self, g: u64) -> Result<i32, i64> {
        self.entry(g).map(Fd::host)
    }

    fn count_out(&mut self, g: u64, n: u64) {
        self.stats.bytes_written += n;
        match g {
            1 => self.stats.stdout_bytes += n,
            2 => self.stats.stderr_bytes += n,
            _ => {}
        }
    }

    fn read(&mut self, mem: &mut GuestMemory, g: u64, buf: u64, len: u64, off: Option<u64>) -> Sys {
        let f = self.fd(g)?;
        let p = mem.slice_mut(buf, len)?.as_mut_ptr() as u64;
        let n = match off {
            None => host(libc::SYS_read, [f as u64, p, len, 0, 0])?,
            Some(o) => host(libc::SYS_pread64, [f as u64, p, len, o, 0])?,
        };
        self.stats.bytes_read += n;
        Ok(n)
    }

    fn write(&mut self, mem: &mut GuestMemory, g: u64, buf: u64, len: u64, off: Option<u64>) -> Sys {
        let e = self.entry(g)?;
        if !e.writable() {
            return Err(EBADF);
        }
        let f = e.host() as u64;
        let p = mem.slice(buf, len)?.as_ptr() as u64;
        let n = match off {
            None => host(libc::SYS_write, [f, p, len, 0, 0])?,
            Some(o) => host(libc::SYS_pwrite64, [f, p, len, o, 0])?,
        };
        self.count_out(g, n);
        Ok(n)
    }

    fn readv_writev(&mut self, mem: &mut GuestMemory, g: u64, iov: u64, cnt: u64, write: bool) -> Sys {
        let e = self.entry(g)?;
        if write && !e.writable() {
            return Err(EBADF);
        }
        let f = e.host() as u64;
        if cnt > 1024 {
            return Err(EINVAL);
        }
        let mut host_iov = Vec::with_capacity(cnt as usize);
        for k in 0..cnt {
            let at = iov.wrapping_add(16 * k); // out of range wraps into an EFAULT below
            let (base, len) = (mem.read_u64(at)?, mem.read_u64(at.wrapping_add(8))?);
            let p = mem.slice_mut(base, len)?.as_mut_ptr();
            host_iov.push(libc::iovec { iov_base: p as *mut libc::c_void, iov_len: len as usize });
        }
        let nr = if write { libc::SYS_writev } else { libc::SYS_readv };
        let n = host(nr, [f, host_iov.as_ptr() as u64, cnt, 0, 0])?;
        if write {
            self.count_out(g, n);
        } else {
            self.stats.bytes_read += n;
        }
        Ok(n)
    }

    /// The host dirfd for a guest dirfd argument (AT_FDCWD stays).
    fn dirfd(&self, g: u64) -> Result<i64, i64> {
        if g as i32 as i64 == AT_FDCWD { Ok(AT_FDCWD) } else { self.fd(g as i32 as u64).map(|f| f as i64) }
    }

    fn path(&self, mem: &GuestMemory, addr: u64) -> Result<CString, i64> {
        CString::new(mem.c_str(addr, libc::PATH_MAX as usize)?).map_err(|_| EINVAL)
    }

    /// The absolute host path `path` names relative to `dirfd` (lexically).
    fn absolute(&self, dirfd: i64, path: &Path) -> Result<PathBuf, i64> {
        if path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        let base = if dirfd == AT_FDCWD {
            std::env::current_dir().map_err(|_| ENOENT)?
        } else {
            std::fs::read_link(format!("/proc/self/fd/{dirfd}")).map_err(|_| EBADF)?
        };
        Ok(base.join(path))
    }

    /// True if the program may write `path`: it lies under a --guest-write directory
    /// (symlinks resolved, also of a final component that already exists), or is
    /// /dev/null.
    fn may_write(&self, dirfd: i64, path: &Path) -> bool {
        let Ok(abs) = self.absolute(dirfd, path) else { return false };
        let real = match std::fs::canonicalize(&abs) {
            Ok(p) => p,
            Err(_) => match (abs.parent().map(std::fs::canonicalize), abs.file_name()) {
                (Some(Ok(dir)), Some(name)) if name != ".." => dir.join(name),
                _ => return false,
            },
        };
        real == Path::new("/dev/null") || self.policy.write_dirs.iter().any(|d| real.starts_with(d))
    }

    fn openat(&mut self, mem: &GuestMemory, dirfd: u64, path: u64, flags: u64, mode: u64) -> Sys {
        let d = self.dirfd(dirfd)?;
        let p = self.path(mem, path)?;
        let writes = flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC) != 0;
        if writes && !self.may_write(d, Path::new(OsStr::from_bytes(p.as_bytes()))) {
            return Err(EACCES);
        }
        let f = host(libc::SYS_openat, [d as u64, p.as_ptr() as u64, flags | libc::O_CLOEXEC as u64, mode, 0])?;
        // SAFETY: the host just returned this new fd; the server owns it from here.
        let file = unsafe { OwnedFd::from_raw_fd(f as i32) };
        let slot = self.free_slot(0)?;
        self.fds[slot] = Some(Fd::File { file, writable: writes });
        Ok(slot as u64)
    }

    /// A free guest fd (the lowest at or above `from`), the table grown as needed.
    fn free_slot(&mut self, from: usize) -> Result<usize, i64> {
        if from >= 1024 {
            return Err(EMFILE);
        }
        if self.fds.len() <= from {
            self.fds.resize_with(from + 1, || None);
        }
        match self.fds[from..].iter().position(Option::is_none) {
            Some(k) => Ok(from + k),
            None if self.fds.len() < 1024 => {
                self.fds.push(None);
                Ok(self.fds.len() - 1)
            }
            None => Err(EMFILE),
        }
    }

    /// dup (to the lowest free fd) or dup2/dup3 (onto `to`, closing what was there).
    fn dup(&mut self, g: u64, to: Option<u64>) -> Sys {
        let e = self.entry(g)?;
        let writable = e.writable();
        let f = host(libc::SYS_fcntl, [e.host() as u64, libc::F_DUPFD_CLOEXEC as u64, 3, 0, 0])?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new fd; it is owned from here.
        let file = unsafe { OwnedFd::from_raw_fd(f as i32) };
        let slot = match to {
            Some(t) if t == g => return Ok(t),
            Some(t) if t >= 1024 => return Err(EBADF),
            Some(t) => {
                if self.fds.len() <= t as usize {
                    self.fds.resize_with(t as usize + 1, || None);
                }
                t as usize // what was there is closed when its OwnedFd is dropped
            }
            None => self.free_slot(0)?,
        };
        self.fds[slot] = Some(Fd::File { file, writable });
        Ok(slot as u64)
    }

    /// A host pipe; both ends belong to the program (it may write to its own pipe).
    fn pipe(&mut self, mem: &mut GuestMemory, fds: u64, flags: u64) -> Sys {
        let mut p = [0i32; 2];
        let flags = (flags & libc::O_NONBLOCK as u64) | libc::O_CLOEXEC as u64;
        host(libc::SYS_pipe2, [p.as_mut_ptr() as u64, flags, 0, 0, 0])?;
        // SAFETY: pipe2 just created these two fds; they are owned from here.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let a = self.free_slot(0)?;
        self.fds[a] = Some(Fd::File { file: r, writable: false });
        let b = match self.free_slot(0) {
            Ok(b) => b,
            Err(e) => {
                self.fds[a] = None;
                return Err(e);
            }
        };
        self.fds[b] = Some(Fd::File { file: w, writable: true });
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&(a as i32).to_le_bytes());
        out[4..].copy_from_slice(&(b as i32).to_le_bytes());
        if let Err(e) = mem.write(fds, &out) {
            self.fds[a] = None;
            self.fds[b] = None;
            return Err(e);
        }
        Ok(0)
    }

    fn close(&mut self, g: u64) -> Sys {
        match self.fds.get_mut(g as usize).and_then(Option::take) {
            Some(_) => Ok(0), // dropping an OwnedFd closes it; the VMM's stdio stays open
            None => Err(EBADF),
        }
    }

    fn fstatat(&self, mem: &mut GuestMemory, dirfd: u64, path: u64, buf: u64, flags: u64) -> Sys {
        let d = self.dirfd(dirfd)?;
        let empty = CString::default();
        let p = if flags & AT_EMPTY_PATH != 0 && path == 0 { empty } else { self.path(mem, path)? };
        let out = out_ptr(mem, buf, size_of::<libc::stat>())?;
        host(libc::SYS_newfstatat, [d as u64, p.as_ptr() as u64, out, flags, 0])
    }

    fn statx(&self, mem: &mut GuestMemory, a: [u64; 6]) -> Sys {
        let d = self.dirfd(a[0])?;
        let p = self.path(mem, a[1])?;
        let out = out_ptr(mem, a[4], 256)?;
        host(libc::SYS_statx, [d as u64, p.as_ptr() as u64, a[2], a[3], out])
    }

    fn faccessat(&self, mem: &GuestMemory, dirfd: u64, path: u64, mode: u64) -> Sys {
        let d = self.dirfd(dirfd)?;
        let p = self.path(mem, path)?;
        if mode & W_OK != 0 && !self.may_write(d, Path::new(OsStr::from_bytes(p.as_bytes()))) {
            return Err(EACCES);
        }
        host(libc::SYS_faccessat, [d as u64, p.as_ptr() as u64, mode, 0, 0])
    }

    fn readlinkat(&self, mem: &mut GuestMemory, dirfd: u64, path: u64, buf: u64, len: u64) -> Sys {
        let d = self.dirfd(dirfd)?;
        let p = self.path(mem, path)?;
        let out = mem.slice_mut(buf, len)?;
        if p.as_bytes() == b"/proc/self/exe" {
            let exe = self.exe.as_os_str().as_bytes();
            let n = exe.len().min(out.len());
            out[..n].copy_from_slice(&exe[..n]);
            return Ok(n as u64);
        }
        host(libc::SYS_readlinkat, [d as u64, p.as_ptr() as u64, out.as_mut_ptr() as u64, len, 0])
    }

    fn fcntl(&self, g: u64, cmd: u64, arg: u64) -> Sys {
        let f = self.fd(g)?;
        match cmd as i32 {
            libc::F_GETFD => Ok(1), // every guest fd is close-on-exec: the guest cannot exec
            libc::F_SETFD => Ok(0),
            libc::F_GETFL => host(libc::SYS_fcntl, [f as u64, cmd, 0, 0, 0]),
            libc::F_SETFL => host(libc::SYS_fcntl, [f as u64, cmd, arg, 0, 0]),
            _ => Err(EINVAL),
        }
    }

    fn brk(&mut self, mem: &mut GuestMemory, want: u64) -> u64 {
        let s = &mut self.space;
        if want < s.brk_start {
            return s.brk;
        }
        let (old_top, new_top) = (page_up(s.brk), page_up(want));
        if new_top > old_top {
            if !s.is_free(old_top, new_top) {
                return s.brk;
            }
        } else if new_top < old_top {
            let _ = mem.zero(new_top, old_top - new_top);
        }
        s.brk = want;
        want
    }

    /// Removes [start, start+len) from the address space, zeroing what was mapped.
    fn unmap(&mut self, mem: &mut GuestMemory, start: u64, len: u64) {
        for (s, e) in self.space.remove(start, start + len) {
            let _ = mem.zero(s, e - s);
        }
    }

    fn mmap(&mut self, mem: &mut GuestMemory, a: [u64; 6]) -> Sys {
        let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        if len == 0 || off % PAGE != 0 {
            return Err(EINVAL);
        }
        let len = page_up(len);
        let file = if flags & MAP_ANONYMOUS == 0 {
            if flags & MAP_SHARED != 0 && prot & PROT_WRITE != 0 {
                return Err(EACCES); // writable shared file mappings would need write-back
            }
            Some(self.fd(fd)?)
        } else {
            None
        };
        let at = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            aligned(addr)?;
            let end = addr.checked_add(len).ok_or(ENOMEM)?;
            if addr < self.space.layout.program_base || end > self.space.layout.ram_size {
                return Err(ENOMEM);
            }
            if flags & MAP_FIXED_NOREPLACE != 0 && !self.space.is_free(addr, end) {
                return Err(EEXIST);
            }
            self.unmap(mem, addr, len);
            addr
        } else if addr != 0 && addr % PAGE == 0 && self.space.is_free(addr, addr.saturating_add(len)) {
            addr
        } else {
            self.space.find_free(len).ok_or(ENOMEM)?
        };
        self.space.insert(at, at + len);
        if let Some(f) = file {
            let dst = mem.slice_mut(at, len)?;
            let mut done = 0usize;
            while done < dst.len() {
                let rest = &mut dst[done..];
                let n = host(
                    libc::SYS_pread64,
                    [f as u64, rest.as_mut_ptr() as u64, rest.len() as u64, off + done as u64, 0],
                );
                match n {
                    Ok(0) => break, // beyond the end of the file: stays zero
                    Ok(n) => done += n as usize,
                    Err(e) => {
                        self.unmap(mem, at, len);
                        return Err(e);
                    }
                }
            }
        }
        Ok(at)
    }

    fn munmap(&mut self, mem: &mut GuestMemory, addr: u64, len: u64) -> Sys {
        aligned(addr)?;
        if len == 0 || addr.checked_add(page_up(len)).is_none() {
            return Err(EINVAL);
        }
        self.unmap(mem, addr, page_up(len));
        Ok(0)
    }

    fn mremap(&mut self, mem: &mut GuestMemory, a: [u64; 6]) -> Sys {
        let (old, old_len, new_len, flags) = (a[0], page_up(a[1]), page_up(a[2]), a[3]);
        aligned(old)?;
        if new_len == 0 || flags & !MREMAP_MAYMOVE != 0 {
            return Err(EINVAL);
        }
        if old.checked_add(old_len.max(new_len)).is_none_or(|end| end > self.space.layout.ram_size) {
            return Err(14); // EFAULT: beyond guest memory
        }
        if !self.space.is_mapped(old, old + old_len) {
            return Err(14); // EFAULT
        }
        if new_len <= old_len {
            self.unmap(mem, old + new_len, old_len - new_len);
            return Ok(old);
        }
        if self.space.is_free(old + old_len, old + new_len) {
            self.space.insert(old + old_len, old + new_len);
            return Ok(old);
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(ENOMEM);
        }
        let at = self.space.find_free(new_len).ok_or(ENOMEM)?;
        self.space.insert(at, at + new_len);
        mem.copy_within(old, at, old_len)?;
        self.unmap(mem, old, old_len);
        Ok(at)
    }

    fn madvise(&mut self, mem: &mut GuestMemory, addr: u64, len: u64, advice: u64) -> Sys {
        aligned(addr)?;
        if advice == MADV_DONTNEED {
            // private anonymous memory reads back as zero afterwards
            let end = addr.saturating_add(page_up(len));
            if !self.space.is_mapped(addr, end) {
                return Err(ENOMEM);
            }
            mem.zero(addr, end - addr)?;
        }
        Ok(0)
    }

    fn arch_prctl(&mut self, mem: &mut GuestMemory, code: u64, addr: u64) -> Result<Outcome, String> {
        Ok(match code {
            ARCH_SET_FS => {
                self.fs_base = addr;
                Outcome::SetFsBase(addr)
            }
            ARCH_GET_FS => Outcome::Return(mem.write_u64(addr, self.fs_base).map(|_| 0).unwrap_or_else(|e| -e)),
            _ => Outcome::Return(-EINVAL),
        })
    }

    /// One thread: nobody waits, so a wake wakes no one (glibc's pthread_once always
    /// wakes); a wait whose value still matches could never end, so it stops the guest.
    fn futex(&self, mem: &GuestMemory, addr: u64, op: u64, val: u64) -> Result<Outcome, String> {
        let r = match op & 0x7f {
            FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(0),
            FUTEX_WAIT | FUTEX_WAIT_BITSET => match mem.slice(addr, 4) {
                Err(e) => Err(e),
                Ok(w) if u32::from_le_bytes(w.try_into().unwrap()) != val as u32 => Err(EAGAIN),
                Ok(_) => {
                    return Err(format!(
                        "the program waits on futex {addr:#x}, which no other thread can wake (the guest has one \
                         thread): a deadlock"
                    ));
                }
            },
            _ => Err(ENOSYS),
        };
        Ok(Outcome::Return(r.map(|v| v as i64).unwrap_or_else(|e| -e)))
    }

    fn sigaltstack(&self, mem: &mut GuestMemory, old: u64) -> Sys {
        if old != 0 {
            let mut st = [0u8; 24];
            st[8..12].copy_from_slice(&(libc::SS_DISABLE as u32).to_le_bytes());
            mem.write(old, &st)?;
        }
        Ok(0)
    }

    fn prlimit(&self, mem: &mut GuestMemory, pid: u64, res: u64, new: u64, old: u64) -> Sys {
        if pid != 0 && pid != self.pid as u64 {
            return Err(EPERM);
        }
        if new != 0 {
            return Err(EPERM); // limits are the VMM's: the program may read, not change them
        }
        let out = opt_out_ptr(mem, old, 16)?;
        host(libc::SYS_prlimit64, [0, res, 0, out, 0])
    }

    fn gettimeofday(&self, mem: &mut GuestMemory, tv: u64, tz: u64) -> Sys {
        let t = opt_out_ptr(mem, tv, 16)?;
        let z = opt_out_ptr(mem, tz, 8)?;
        host(libc::SYS_gettimeofday, [t, z, 0, 0, 0])
    }

    fn time(&self, mem: &mut GuestMemory, t: u64) -> Sys {
        let now = crate::sys::realtime_ns() / 1_000_000_000;
        if t != 0 {
            mem.write_u64(t, now)?;
        }
        Ok(now)
    }

    /// The program's own rusage is the vCPU thread's (the thread that runs it and
    /// serves its calls); children: none.
    fn getrusage(&self, mem: &mut GuestMemory, who: u64, buf: u64) -> Sys {
        let out = out_ptr(mem, buf, size_of::<libc::rusage>())?;
        match who as i32 {
            libc::RUSAGE_SELF | libc::RUSAGE_THREAD => {
                host(libc::SYS_getrusage, [libc::RUSAGE_THREAD as u64, out, 0, 0, 0])
            }
            libc::RUSAGE_CHILDREN => mem.zero(buf, size_of::<libc::rusage>() as u64).map(|_| 0),
            _ => Err(EINVAL),
        }
    }

    fn times(&self, mem: &mut GuestMemory, buf: u64) -> Sys {
        // SAFETY: times(NULL) only returns the tick count.
        let now = unsafe { libc::times(std::ptr::null_mut()) };
        if buf != 0 {
            // SAFETY: rusage is plain data, valid when zeroed.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage writes into ru.
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let ticks = |t: libc::timeval| (t.tv_sec as u64 * hz) + (t.tv_usec as u64 * hz / 1_000_000);
            let words = [ticks(ru.ru_utime), ticks(ru.ru_stime), 0, 0];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            mem.write(buf, &bytes)?;
        }
        Ok(now as u64)
    }

    /// One vCPU: the program sees one CPU (CPU 0).
    fn sched_getaffinity(&self, mem: &mut GuestMemory, len: u64, mask: u64) -> Sys {
        if len < 8 || !len.is_multiple_of(8) {
            return Err(EINVAL);
        }
        let n = len.min(128);
        mem.zero(mask, n)?;
        mem.write(mask, &[1])?;
        Ok(n)
    }
}

fn aligned(addr: u64) -> Result<u64, i64> {
    if addr.is_multiple_of(PAGE) { Ok(addr) } else { Err(EINVAL) }
}

/// A host pointer to `len` writable guest bytes at `addr`.
fn out_ptr(mem: &mut GuestMemory, addr: u64, len: usize) -> Result<u64, i64> {
    Ok(mem.slice_mut(addr, len as u64)?.as_mut_ptr() as u64)
}

/// Like `out_ptr`, but a null guest pointer stays null.
fn opt_out_ptr(mem: &mut GuestMemory, addr: u64, len: usize) -> Result<u64, i64> {
    if addr == 0 { Ok(0) } else { out_ptr(mem, addr, len) }
}

/// Clears an optional "old value" output of `len` bytes; returns 0.
fn zero_out(mem: &mut GuestMemory, addr: u64, len: u64) -> Sys {
    if addr != 0 {
        mem.zero(addr, len)?;
    }
    Ok(0)
}

fn getuid() -> u64 {
    // SAFETY: getuid has no preconditions.
    u64::from(unsafe { libc::getuid() })
}

fn getgid() -> u64 {
    // SAFETY: getgid has no preconditions.
    u64::from(unsafe { libc::getgid() })
}

fn geteuid() -> u64 {
    // SAFETY: geteuid has no preconditions.
    u64::from(unsafe { libc::geteuid() })
}

fn getegid() -> u64 {
    // SAFETY: getegid has no preconditions.
    u64::from(unsafe { libc::getegid() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_program::space::Layout;

    const RAM: u64 = 64 << 20;

    fn server(policy: Policy) -> (SyscallServer, Vec<u8>) {
        let layout = Layout::new(RAM);
        let mut space = AddressSpace::new(layout);
        space.brk_start = 0x80_0000;
        space.brk = 0x80_0000;
        let loaded = Loaded { entry: 0, stack_pointer: 0, space, exe: "/bin/true".into(), interpreter: None };
        (SyscallServer::new(&loaded, policy).unwrap(), vec![0u8; RAM as usize])
    }

    fn call(s: &mut SyscallServer, ram: &mut [u8], nr: u64, a: &[u64]) -> i64 {
        let mut args = [0u64; 6];
        args[..a.len()].copy_from_slice(a);
        match s.serve(ram, Syscall { nr, args }).unwrap() {
            Outcome::Return(v) => v,
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn anonymous_mmap_reads_zero_after_reuse_and_munmap_frees() {
        let (mut s, mut ram) = server(Policy::default());
        let a = call(&mut s, &mut ram, 9, &[0, 8192, 3, 0x22, u64::MAX, 0]) as u64;
        ram[a as usize..a as usize + 8192].fill(0xaa);
        assert_eq!(call(&mut s, &mut ram, 11, &[a, 8192]), 0);
        let b = call(&mut s, &mut ram, 9, &[0, 8192, 3, 0x22, u64::MAX, 0]) as u64;
        assert_eq!(a, b, "the freed range is reused");
        assert!(ram[b as usize..b as usize + 8192].iter().all(|&x| x == 0));
        assert_eq!(call(&mut s, &mut ram, 11, &[a + 1, 4096]), -EINVAL);
    }

    #[test]
    fn brk_grows_and_shrinks_and_refuses_below_its_start() {
        let (mut s, mut ram) = server(Policy::default());
        assert_eq!(call(&mut s, &mut ram, 12, &[0]), 0x80_0000);
        assert_eq!(call(&mut s, &mut ram, 12, &[0x82_1000]), 0x82_1000);
        ram[0x82_0000] = 7;
        assert_eq!(call(&mut s, &mut ram, 12, &[0x80_0000]), 0x80_0000);
        assert_eq!(ram[0x82_0000], 0, "released break memory is zeroed");
        assert_eq!(call(&mut s, &mut ram, 12, &[0x10_0000]), 0x80_0000);
    }

    #[test]
    fn writes_only_to_stdout_stderr_and_allowed_dirs() {
        let dir = std::env::temp_dir().join(format!("microvm-srv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut s, mut ram) = server(Policy { write_dirs: vec![dir.clone()], ..Default::default() });
        let path = 0x90_0000u64;
        let put = |ram: &mut [u8], p: &str| {
            ram[path as usize..path as usize + p.len() + 1].copy_from_slice(format!("{p}\0").as_bytes());
        };
        assert_eq!(call(&mut s, &mut ram, 1, &[0, path, 1]), -EBADF, "stdin is not writable");
        put(&mut ram, "/etc/microvm-should-not-exist");
        assert_eq!(call(&mut s, &mut ram, 257, &[AT_FDCWD as u64, path, 0o101, 0o644]), -EACCES);
        let f = dir.join("out.txt");
        put(&mut ram, f.to_str().unwrap());
        let fd = call(&mut s, &mut ram, 257, &[AT_FDCWD as u64, path, 0o101, 0o644]);
        assert_eq!(fd, 3, "lowest free guest fd");
        assert_eq!(call(&mut s, &mut ram, 1, &[3, path, 4]), 4);
        assert_eq!(call(&mut s, &mut ram, 3, &[3]), 0);
        assert_eq!(std::fs::read(&f).unwrap(), &f.to_str().unwrap().as_bytes()[..4]);
        assert_eq!(s.stats().bytes_written, 4);
        assert_eq!(s.stats().by_name["openat"].count, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_calls_stop_unless_enosys_unknown() {
        let (mut s, mut ram) = server(Policy::default());
        let e = s.serve(&mut ram, Syscall { nr: 56, args: [0; 6] }).unwrap_err();
        assert!(e.contains("system call clone (number 56)"), "{e}");
        let (mut s, mut ram) = server(Policy { enosys_unknown: true, ..Default::default() });
        assert_eq!(call(&mut s, &mut ram, 56, &[]), -ENOSYS);
        assert_eq!(s.serve(&mut ram, Syscall { nr: 231, args: [258, 0, 0, 0, 0, 0] }).unwrap(), Outcome::Exit(2));
    }
}
