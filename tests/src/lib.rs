//! The harness of the end-to-end tests: they load the real probes, run a real
//! workload and compare with the kernel's own accounting, so they need root.
//!
//! A test starts with [`require_root!`] (it prints why and returns where it cannot
//! run), then traces with a [`Session`]: attach, start, run the trigger, finish. One
//! session at a time per test binary: tests that spin on every CPU, or run a
//! micro-VM in the test process, would disturb each other's figures.

use std::{
    sync::{
        Arc, Barrier, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use vmmtrace::{
    host::Discovery,
    probe::{ProbeOptions, Probes},
    record::finish,
    report::Report,
};

/// Why this process cannot load the probes, or None.
pub fn cannot_trace() -> Option<String> {
    vmmtrace::probe::check_privileges().err().map(|e| e.to_string())
}

/// Returns from the test, saying why, unless this process may load the probes.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = $crate::cannot_trace() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Why this host cannot run KVM guests, or None.
pub use microvm::no_kvm;

/// [`require_root!`], and returns from the test, saying why, unless this host has
/// /dev/kvm. Some hosts have none (this build machine boots at times with page-table
/// isolation on, and its PVM backend then refuses to bind), and a test cannot make one.
#[macro_export]
macro_rules! require_kvm {
    () => {
        $crate::require_root!();
        if let Some(why) = $crate::no_kvm() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// A `std::process::Command` for the current `vmmtrace` binary (built with these
/// tests as `vmmtrace-under-test`, from tracer/src/main.rs). A macro, because
/// cargo tells its path only to the test files themselves.
#[macro_export]
macro_rules! vmmtrace_cmd {
    () => {
        std::process::Command::new(env!("CARGO_BIN_EXE_vmmtrace-under-test"))
    };
}

/// A copy of a binary that any user may run, removed when dropped: the tests that run
/// vmmtrace as another user cannot rely on the build tree being open to them (a
/// clone under /root is not).
pub struct CopyForAnyone {
    dir: std::path::PathBuf,
    pub path: std::path::PathBuf,
}

impl CopyForAnyone {
    pub fn of(binary: &std::path::Path) -> CopyForAnyone {
        use std::os::unix::fs::PermissionsExt as _;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vmmtrace-for-anyone.{}.{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a directory for the copy");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join(binary.file_name().expect("a binary's file name"));
        std::fs::copy(binary, &path).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        CopyForAnyone { dir, path }
    }
}

impl Drop for CopyForAnyone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The probes attached and host discovery started, holding this binary's session lock.
pub struct Session {
    pub probes: Probes,
    pub discovery: Discovery,
    _serial: MutexGuard<'static, ()>,
}

impl Session {
    /// Waits for the other sessions of this binary, then attaches the probes and takes
    /// the first host snapshot. Nothing is charged until [`Session::start`].
    pub fn attach(opts: &ProbeOptions) -> Session {
        // A test that failed while holding the lock does not stop the others.
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let probes =
            Probes::attach(opts).unwrap_or_else(|e| panic!("attach the probes: {}", vmmtrace::error::chain(&e)));
        Session { probes, discovery: Discovery::start(), _serial: serial }
    }

    /// Marks the vCPU threads discovery found inside KVM_RUN (see
    /// `Probes::mark_in_kvm_run`); returns them.
    pub fn mark_vcpus_in_kvm_run(&mut self) -> Vec<u32> {
        let tids = self.discovery.vcpus_in_kvm_run();
        self.probes.mark_in_kvm_run(&tids);
        tids
    }

    /// Opens the trace window; returns its start (CLOCK_MONOTONIC ns).
    pub fn start(&mut self) -> u64 {
        self.probes.start().expect("open the trace window")
    }

    /// Ends the trace and builds the report, as `vmmtrace record` does.
    pub fn finish(self) -> Report {
        finish(self.probes, self.discovery, 0)
            .unwrap_or_else(|e| panic!("end the trace: {}", vmmtrace::error::chain(&e)))
    }
}

/// Traces `run` from start to finish; returns the report and what `run` returned.
pub fn trace<T>(opts: &ProbeOptions, run: impl FnOnce() -> T) -> (Report, T) {
    let mut session = Session::attach(opts);
    session.start();
    let out = run();
    (session.finish(), out)
}

/// The online CPUs.
pub fn online_cpus() -> Vec<u32> {
    aya::util::online_cpus().expect("online CPUs")
}

pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// `sum_exec_runtime` and `run_delay` (ns) from /proc/self/task/<tid>/schedstat.
pub fn schedstat(tid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .unwrap_or_else(|e| panic!("schedstat of {tid}: {e}"));
    let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

pub fn pin_self(cpu: u32) {
    assert!(vmmtrace::sys::set_affinity(0, &[cpu]), "cannot pin to CPU {cpu}");
}

/// A thread that runs `work` and then parks until released, so that the test can read
/// its schedstat while it still exists and is not running.
pub struct Parked {
    pub tid: u32,
    done: Arc<Barrier>,
    release: Arc<Barrier>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Parked {
    pub fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Parked {
        let done = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        let (d, r) = (done.clone(), release.clone());
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                tx.send(gettid()).unwrap();
                work();
                d.wait();
                r.wait();
            })
            .unwrap();
        let tid = rx.recv().unwrap();
        Parked { tid, done, release, handle: Some(handle) }
    }

    /// Waits until the work is done (the thread is then blocked on a barrier).
    pub fn wait_done(&self) {
        self.done.wait();
    }

    pub fn release(mut self) {
        self.release.wait();
        self.handle.take().unwrap().join().unwrap();
    }
}

/// Spins for `d` of wall time wherever the scheduler puts the calling thread.
pub fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Spins on `cpu` for `d` of wall time.
pub fn spin_on(cpu: u32, d: Duration) -> impl FnOnce() + Send + 'static {
    move || {
        pin_self(cpu);
        spin_for(d);
    }
}

/// A named piece of work for a [`Parked`] thread.
pub type Work = (&'static str, Box<dyn FnOnce() + Send>);

/// A thread [`trace_threads`] ran: its tid and the kernel's run_delay (ns) once its
/// work was done.
#[derive(Debug, Clone, Copy)]
pub struct ThreadRun {
    pub tid: u32,
    pub run_delay_ns: u64,
}

/// Runs the named threads to completion inside one trace, each parked once done so
/// that its schedstat can be read while it still exists; returns the report and the
/// threads in the order given.
pub fn trace_threads(opts: &ProbeOptions, threads: Vec<Work>) -> (Report, Vec<ThreadRun>) {
    let mut session = Session::attach(opts);
    session.start();
    let parked: Vec<Parked> = threads.into_iter().map(|(name, work)| Parked::spawn(name, work)).collect();
    for p in &parked {
        p.wait_done();
    }
    let runs = parked.iter().map(|p| ThreadRun { tid: p.tid, run_delay_ns: schedstat(p.tid).1 }).collect();
    let report = session.finish();
    for p in parked {
        p.release();
    }
    (report, runs)
}

/// The study's KVM case on the micro-VM: one vCPU running the loop workload, pinned
/// to `cpu` together with its own emulator thread, which its timer keeps busy (as a
/// wrong emulatorpin would do). About 6,000 progress exits, each handed over to the
/// emulator.
pub fn vcpu_sharing_its_cpu_with_a_busy_emulator(cpu: u32) -> microvm::Config {
    microvm::Config {
        vcpus: 1,
        workload: microvm::Workload::Loop,
        work: 6_000,
        loop_unit_iters: 4_000,
        exit_every: 1,
        timer_hz: 250,
        pin_vcpus: Some(vec![cpu as usize]),
        pin_emulator: Some(vec![cpu as usize]),
        emulator_hz: 100_000,
        ..Default::default()
    }
}

pub fn relative_error(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64).abs() / (b.max(1) as f64)
}

pub struct StopFlag(pub Arc<AtomicBool>);
impl StopFlag {
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
