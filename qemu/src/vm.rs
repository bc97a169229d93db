//! Launching QEMU, finding and pinning its threads, the "go" gate, and the ground truth.

use std::collections::BTreeMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::command::{self, RunPaths, qemu_args};
use crate::console::{self, Console, Short};
use crate::guest_ram::GuestRam;
use crate::layout::{self, mailbox, slot};
use crate::qmp::{IoThread, Qmp, VcpuThread, accept_from_qemu};
use crate::threads::{self, Classified, ThreadRole};
use microvm::CpuException;

use crate::{Accel, Config, Error, GroundTruth, QemuVcpuTruth, ThreadTruth, VcpuTruth};

/// How long QEMU may take to connect to QMP, and the guest to reach its gate.
const QMP_DEADLINE: Duration = Duration::from_secs(30);
const BOOT_DEADLINE: Duration = Duration::from_secs(60);

static RUNS: AtomicU32 = AtomicU32::new(0);

/// A host clock reading: CLOCK_MONOTONIC and the TSC, taken together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub mono_ns: u64,
    pub tsc: u64,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn stamp() -> Stamp {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let tsc = unsafe { std::arch::x86_64::_rdtsc() };
    Stamp { mono_ns: monotonic_ns(), tsc }
}

/// The run's directory (QMP socket, guest image, progress file); removed on drop.
struct RunDir(PathBuf, u32);

impl RunDir {
    fn create() -> Result<RunDir, Error> {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("vmmtrace-qemu-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|source| Error::Io { what: "create", path: dir.clone(), source })?;
        Ok(RunDir(dir, n))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A QEMU VM booted to its gate: every vCPU at CPL3, waiting for "go". Dropping it
/// kills QEMU.
pub struct Vm {
    pub(crate) cfg: Config,
    pub(crate) name: String,
    pub(crate) accel: Accel,
    pub(crate) qemu: PathBuf,
    pub(crate) command: Vec<String>,
    child: Child,
    qmp: Qmp,
    /// Guest programs: where QEMU forwards the system-call port.
    pub(crate) syscalls: Option<UnixStream>,
    console: Console,
    stderr: Option<JoinHandle<String>>,
    pub(crate) vcpus: Vec<VcpuThread>,
    iothreads: Vec<IoThread>,
    threads: Vec<Classified>,
    launched: Stamp,
    pub(crate) qmp_ready_ns: u64,
    pub(crate) boot_ns: u64,
    pub(crate) guest_boot_ns: u64,
    pub(crate) ram: GuestRam,
    progress: PathBuf,
    _dir: RunDir,
}

/// A VM whose vCPUs run the workload. `wait` returns the ground truth.
pub struct RunningVm {
    pub(crate) vm: Vm,
    pub(crate) go: Stamp,
}

impl Vm {
    /// Starts QEMU stopped, finds and pins its threads through QMP and /proc, lets the
    /// guest boot and returns once every vCPU waits for "go".
    pub fn boot(cfg: &Config) -> Result<Vm, Error> {
        cfg.validate()?;
        let qemu = crate::find_qemu(cfg.qemu.as_deref())?;
        let accel = crate::resolve_accel(cfg.accel)?;
        let dir = RunDir::create()?;
        let paths = RunPaths {
            kernel: dir.0.join("guest.elf"),
            guest_ram: dir.0.join("ram"),
            qmp_socket: dir.0.join("qmp.sock"),
            progress: dir.0.join("progress"),
            syscall_socket: cfg.program_mem_mib.map(|_| dir.0.join("syscalls.sock")),
        };
        std::fs::write(&paths.kernel, GUEST_ELF).map_err(io_error("write", &paths.kernel))?;
        let ram = GuestRam::create(&paths.guest_ram, command::ram_mib(cfg) << 20)?;
        let listener = UnixListener::bind(&paths.qmp_socket).map_err(io_error("listen on", &paths.qmp_socket))?;
        let syscall_listener = match &paths.syscall_socket {
            Some(p) => Some(UnixListener::bind(p).map_err(io_error("listen on", p))?),
            None => None,
        };
        let name = cfg.name.clone().unwrap_or_else(|| format!("vmmtrace-qemu-{}-{}", std::process::id(), dir.1));
        let args = qemu_args(cfg, &name, accel, &paths);
        let launched = stamp();
        let (mut child, console, stderr) = launch(&qemu, &args)?;
        let command = std::iter::once(qemu.display().to_string()).chain(args).collect();
        let qmp = match Qmp::accept(&listener, &mut child, QMP_DEADLINE) {
            Ok(q) => q,
            Err(e) => return Err(fail_early(child, stderr, e)),
        };
        let syscalls =
            match syscall_listener.map(|l| accept_from_qemu(&l, &mut child, QMP_DEADLINE, "the system-call socket")) {
                Some(Err(e)) => return Err(fail_early(child, stderr, e)),
                Some(Ok(stream)) => Some(stream),
                None => None,
            };
        let mut vm = Vm {
            cfg: cfg.clone(),
            name,
            accel,
            qemu,
            command,
            child,
            qmp,
            syscalls,
            console,
            stderr,
            vcpus: Vec::new(),
            iothreads: Vec::new(),
            threads: Vec::new(),
            launched,
            qmp_ready_ns: monotonic_ns() - launched.mono_ns,
            boot_ns: 0,
            guest_boot_ns: 0,
            ram,
            progress: paths.progress,
            _dir: dir,
        };
        vm.find_and_pin_threads()?;
        vm.boot_guest()?;
        Ok(vm)
    }

    /// QMP tells the vCPU and iothread thread ids; /proc the rest. Pins as configured.
    fn find_and_pin_threads(&mut self) -> Result<(), Error> {
        self.vcpus = self.qmp.vcpu_threads()?;
        self.iothreads = self.qmp.iothreads()?;
        if self.vcpus.len() != self.cfg.vcpus as usize {
            return Err(Error::Qmp(format!("{} vCPUs asked, query-cpus-fast lists {:?}", self.cfg.vcpus, self.vcpus)));
        }
        let pid = self.pid();
        self.threads = threads::classify(pid, &threads::list_threads(pid)?, &self.vcpus, &self.iothreads);
        if let Some(cpus) = &self.cfg.pin_vcpus {
            for v in &self.vcpus {
                threads::pin(&format!("vCPU {}", v.index), v.tid, &[cpus[v.index as usize % cpus.len()]])?;
            }
        }
        if let Some(cpus) = &self.cfg.pin_vmm {
            for t in self.threads.iter().filter(|t| t.role != ThreadRole::Vcpu) {
                match threads::pin(&format!("QEMU thread ({:?})", t.role), t.tid, cpus) {
                    // KVM's own worker may refuse (kernel task); it is not QEMU's to pin.
                    Err(_) if t.role == ThreadRole::KvmNxLpageRecovery => {}
                    r => r?,
                }
            }
        }
        Ok(())
    }

    /// `cont`, then waits for every vCPU's "ready" line (it is then spinning at its gate).
    fn boot_guest(&mut self) -> Result<(), Error> {
        let cont = monotonic_ns();
        self.qmp.execute("cont", None)?;
        match self.console.await_lines(console::READY, self.cfg.vcpus as usize, Some(BOOT_DEADLINE)) {
            Ok(()) => {}
            Err(Short::Closed) => return Err(self.failure("before every vCPU reached CPL3")),
            Err(Short::TimedOut) => {
                return Err(Error::Timeout {
                    secs: BOOT_DEADLINE.as_secs(),
                    what: format!("{} vCPUs to report ready", self.cfg.vcpus),
                    console: self.console.text(),
                });
            }
        }
        let now = monotonic_ns();
        self.boot_ns = now - self.launched.mono_ns;
        self.guest_boot_ns = now - cont;
        let magic = self.ram.read_u64(layout::MAILBOX + mailbox::MAGIC);
        if magic != layout::MAILBOX_MAGIC {
            return Err(Error::Qmp(format!(
                "the guest's mailbox is not at file offset {:#x} of {} (magic {magic:#x})",
                layout::MAILBOX,
                self.ram.path().display()
            )));
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest is done: reads every QEMU thread from /proc while QEMU still runs,
    /// then `let_go` lets the guest end QEMU through isa-debug-exit (status 33).
    pub(crate) fn end(&mut self, let_go: impl FnOnce(&GuestRam)) -> Result<Vec<ThreadTruth>, Error> {
        let pid = self.pid();
        let samples = threads::list_threads(pid)?;
        let classified = threads::classify(pid, &samples, &self.vcpus, &self.iothreads);
        let threads = samples.iter().zip(&classified).map(|(s, c)| thread_truth(pid, s, c)).collect();
        let_go(&self.ram);
        let status =
            self.child.wait().map_err(|source| Error::Io { what: "wait for", path: self.qemu.clone(), source })?;
        if status.code() != Some(layout::QEMU_STATUS_OK) {
            return Err(self.failure("instead of through isa-debug-exit"));
        }
        Ok(threads)
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn accel(&self) -> Accel {
        self.accel
    }
    /// vCPU thread ids by index.
    pub fn vcpu_tids(&self) -> Vec<u32> {
        self.vcpus.iter().map(|v| v.tid).collect()
    }
    /// Every other thread of QEMU seen at boot (main loop, RCU, iothreads, ...).
    pub fn vmm_tids(&self) -> Vec<u32> {
        self.threads.iter().filter(|t| t.role != ThreadRole::Vcpu).map(|t| t.tid).collect()
    }
    /// QEMU's threads and their roles, as found at boot.
    pub fn threads(&self) -> &[Classified] {
        &self.threads
    }
    /// From launching QEMU to every vCPU waiting at CPL3.
    pub fn boot_ns(&self) -> u64 {
        self.boot_ns
    }

    /// Lets every vCPU start its work.
    pub fn start(self) -> RunningVm {
        let go = stamp();
        self.ram.write_u64(layout::MAILBOX + mailbox::GO, 1);
        RunningVm { vm: self, go }
    }

    /// QEMU ended early: why, with its stderr or the guest's exception.
    pub(crate) fn failure(&mut self, when: &str) -> Error {
        let status = self.child.wait();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if let Some(e) = self.guest_exception() {
            return e;
        }
        let status = match status {
            Ok(s) if s.code() == Some(0) => format!("{s} (the guest reset itself: a triple fault?)"),
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        let console = self.console.text();
        Error::QemuExited { status, when: when.into(), stderr: format!("{stderr}\nguest console:\n{console}") }
    }

    fn guest_exception(&self) -> Option<Error> {
        let f = |i: u64| self.ram.read_u64(layout::MAILBOX + mailbox::FAULT + 8 * i);
        (f(7) == 1).then(|| {
            Error::GuestException(CpuException {
                vector: f(0),
                error_code: f(1),
                rip: f(2),
                cs: f(3),
                rflags: f(4),
                rsp: f(5),
                cr2: f(6),
            })
        })
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts QEMU with its console (stdout) and stderr read by threads.
fn launch(qemu: &Path, args: &[String]) -> Result<(Child, Console, Option<JoinHandle<String>>), Error> {
    let mut child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { path: qemu.to_path_buf(), source })?;
    let console = Console::start(child.stdout.take().expect("piped stdout"));
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
            s
        })
    });
    Ok((child, console, stderr))
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

/// QEMU failed before the VM existed: kill it and say why, with its stderr.
fn fail_early(mut child: Child, stderr: Option<JoinHandle<String>>, e: Error) -> Error {
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    match e {
        Error::QemuExited { when, .. } => Error::QemuExited { status, when, stderr },
        e if stderr.is_empty() => e,
        e => Error::Qmp(format!("{e}; QEMU's stderr:\n{stderr}")),
    }
}

impl RunningVm {
    pub fn pid(&self) -> u32 {
        self.vm.pid()
    }
    pub fn vcpu_tids(&self) -> Vec<u32> {
        self.vm.vcpu_tids()
    }
    pub fn vmm_tids(&self) -> Vec<u32> {
        self.vm.vmm_tids()
    }

    /// Waits for every vCPU to finish, reads QEMU's threads while it still runs, lets
    /// the guest end QEMU through isa-debug-exit and returns the ground truth.
    pub fn wait(mut self) -> Result<GroundTruth, Error> {
        let vm = &mut self.vm;
        if let Err(Short::Closed | Short::TimedOut) = vm.console.await_lines(console::DONE, 1, None) {
            return Err(vm.failure("before the guest finished"));
        }
        let done = stamp();
        let pid = vm.pid();
        let threads = vm.end(|ram| ram.write_u64(layout::MAILBOX + mailbox::EXIT_REQ, 1))?;
        let tsc_hz = (done.tsc - vm.launched.tsc) as f64 * 1e9 / (done.mono_ns - vm.launched.mono_ns) as f64;
        let vcpus = vm.vcpus.iter().map(|v| vcpu_truth(vm, self.go, tsc_hz, v, &threads)).collect::<Result<_, _>>()?;
        let progress_bytes = std::fs::metadata(&vm.progress).map(|m| m.len()).unwrap_or(0);
        Ok(GroundTruth {
            pid,
            name: vm.name.clone(),
            accel: vm.accel,
            qemu: vm.qemu.clone(),
            command: vm.command.clone(),
            config: vm.cfg.clone(),
            qmp_ready_ns: vm.qmp_ready_ns,
            boot_ns: vm.boot_ns,
            guest_boot_ns: vm.guest_boot_ns,
            vcpus,
            threads,
            elapsed_ns: done.mono_ns - self.go.mono_ns,
            progress_bytes,
            console: vm.console.seen.clone(),
        })
    }
}

fn thread_truth(pid: u32, s: &threads::ThreadSample, c: &Classified) -> ThreadTruth {
    let (on_cpu_ns, run_delay_ns) = threads::schedstat(pid, s.tid).unwrap_or((0, 0));
    ThreadTruth {
        tid: s.tid,
        comm: s.comm.clone(),
        role: c.role,
        vcpu: c.vcpu,
        iothread: c.iothread.clone(),
        on_cpu_ns,
        run_delay_ns,
        affinity: threads::affinity(pid, s.tid).unwrap_or_default(),
    }
}

/// One vCPU's truth from its mailbox slot (final: QEMU has exited).
fn vcpu_truth(vm: &Vm, go: Stamp, tsc_hz: f64, v: &VcpuThread, threads: &[ThreadTruth]) -> Result<VcpuTruth, Error> {
    let base = layout::slot_addr(v.index);
    let read = |off: u64| vm.ram.read_u64(base + off);
    let status = read(slot::STATUS) as i64;
    if read(slot::STATE) != slot::STATE_DONE || status != 0 {
        return Err(Error::Workload { vcpu: v.index, status });
    }
    let ns = |ticks: u64| (ticks as f64 * 1e9 / tsc_hz) as u64;
    let (tsc_go, tsc_start, tsc_end) = (read(slot::TSC_GO), read(slot::TSC_START), read(slot::TSC_END));
    let thread = threads.iter().find(|t| t.tid == v.tid);
    Ok(VcpuTruth {
        index: v.index,
        tid: v.tid,
        name: thread.map(|t| t.comm.clone()).unwrap_or_default(),
        exits: BTreeMap::from([("io".to_string(), read(slot::EXITS))]),
        progress_exits: read(slot::PROGRESS_EXITS),
        timer_interrupts: read(slot::TIMER_INTERRUPTS),
        work_units: read(slot::UNITS_DONE),
        checksum: read(slot::CHECKSUM),
        elapsed_ns: ns(tsc_end - tsc_start),
        start_monotonic_ns: go.mono_ns + ns(tsc_start.saturating_sub(tsc_go)),
        end_monotonic_ns: go.mono_ns + ns(tsc_end.saturating_sub(tsc_go)),
        sum_exec_runtime_ns: thread.map_or(0, |t| t.on_cpu_ns),
        vmm: QemuVcpuTruth {
            exits_before_go: read(slot::EXITS_BEFORE_GO),
            affinity: thread.map(|t| t.affinity.clone()).unwrap_or_default(),
        },
    })
}

/// The guest image built by build.rs.
static GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));
