//! Helpers shared by the end-to-end tests (they run as root and load the real probes).
#![allow(dead_code)]

use std::{
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

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

/// Spins on `cpu` for `d` of wall time.
pub fn spin_on(cpu: u32, d: Duration) -> impl FnOnce() + Send + 'static {
    move || {
        pin_self(cpu);
        let end = Instant::now() + d;
        let mut x = 0u64;
        while Instant::now() < end {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
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
