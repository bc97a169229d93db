//! Threads that exit are retired from the kernel maps: many more short-lived threads
//! than the maps hold are each still reported with their exact on-CPU time, and a
//! thread that gets the tid of a dead one starts fresh.

use std::{
    collections::HashMap,
    sync::mpsc,
    time::{Duration, Instant},
};

use tracer_common::counter;
use vmmtrace::probe::{ProbeOptions, RawCounters};
use vmmtrace_tests::*;

/// This thread's `sum_exec_runtime`, up to now (the kernel adds the running slice).
fn own_runtime_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("read /proc/thread-self/schedstat");
    s.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat's first field")
}

/// Spins until this thread has run `ns` (or a second of wall time has passed).
fn spin_for_cpu(ns: u64) {
    let start = own_runtime_ns();
    let give_up = Instant::now() + Duration::from_secs(1);
    let mut x = 0u64;
    while own_runtime_ns() - start < ns && Instant::now() < give_up {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// A short-lived thread's tid and its on-CPU time as the kernel counted it just
/// before it returned.
struct Finished {
    tid: u32,
    runtime_ns: u64,
}

/// Starts `n` threads that each run about `cpu_ns` and exit; waits for all of them.
fn batch(n: usize, cpu_ns: u64) -> Vec<Finished> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("churn-{i}"))
                .spawn(move || {
                    spin_for_cpu(cpu_ns);
                    Finished { tid: gettid(), runtime_ns: own_runtime_ns() }
                })
                .expect("start a thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("a churn thread")).collect()
}

const MAX_THREADS: u32 = 512;

fn map_full_drops(raw_causes: &std::collections::BTreeMap<String, u64>) -> u64 {
    ["thread_stats_full", "thread_info_full", "thread_sched_full", "exited_full"]
        .iter()
        .filter_map(|c| raw_causes.get(*c))
        .sum()
}

/// Runs 24 batches of 50 threads under maps sized for 512 threads (this host runs
/// about 150 threads of its own, and other sessions' builds start more), retiring after
/// each batch as `record`'s tick does, and checks every thread against the kernel's
/// count taken just before it exited: what runs after (its exit path) may add a
/// little, nothing may be missing.
fn check_churn(opts: ProbeOptions) {
    require_root!();
    let mut session = Session::attach(&ProbeOptions { max_threads: MAX_THREADS, ..opts });
    session.start();
    let mut finished = Vec::new();
    let mut most_in_maps = 0;
    for _ in 0..24 {
        finished.extend(batch(50, 1_000_000));
        session.probes.retire_exited().expect("retire exited threads");
        let raw = session.probes.read().expect("read the maps");
        most_in_maps = most_in_maps.max(raw.occupancy.maps[0].1);
    }
    // The last batch's final switches may come after its joins.
    std::thread::sleep(Duration::from_millis(50));
    session.probes.retire_exited().expect("retire exited threads");
    let report = session.finish();

    eprintln!(
        "{} threads started, {} retired, at most {most_in_maps} in THREAD_STATS after a retirement (capacity {MAX_THREADS}), dropped {:?}",
        finished.len(),
        report.retired_threads,
        report.dropped_by_cause
    );
    assert_eq!(map_full_drops(&report.dropped_by_cause), 0, "a map filled up: {:?}", report.dropped_by_cause);
    assert!(finished.len() > 2 * MAX_THREADS as usize);
    assert!(report.retired_threads >= 1100, "only {} threads retired", report.retired_threads);
    // A tid may have been reused (the pid space wraps on a busy host): each thread
    // of a tid has a row of its own, matched here by its time.
    let mut worst_over = 0u64;
    let mut off = 0;
    let mut short = 0;
    let mut rows: HashMap<u32, Vec<u64>> = HashMap::new();
    for th in &report.threads {
        rows.entry(th.tid).or_default().push(th.on_cpu_ns);
    }
    for f in &finished {
        let candidates = rows.get_mut(&f.tid).unwrap_or_else(|| panic!("thread {} missing from the report", f.tid));
        // Clocks differ by a few µs (sched_clock vs CLOCK_MONOTONIC); the exit path
        // after the schedstat read adds a little.
        let fits = |on_cpu: u64| on_cpu + 50_000 >= f.runtime_ns && on_cpu < f.runtime_ns + 2_000_000;
        if !candidates.iter().any(|&ns| ns + 50_000 >= f.runtime_ns) {
            short += 1;
        }
        match candidates.iter().position(|&ns| fits(ns)) {
            Some(i) => worst_over = worst_over.max(candidates.swap_remove(i).saturating_sub(f.runtime_ns)),
            None => {
                eprintln!(
                    "thread {}: schedstat {} before its exit, rows of its tid: {candidates:?}",
                    f.tid, f.runtime_ns
                );
                off += 1;
            }
        }
    }
    // A few threads in a thousand run some ms after their schedstat read even
    // without retirement (seen with `retire_exited` never called and maps large
    // enough: same count; not yet explained: the exit path's work, or interrupt
    // time that schedstat leaves out). More than that, or any thread short of its
    // schedstat, is a loss, which the report must have counted.
    let lost = report.dropped_by_cause.get("tid_reused_before_retired").copied().unwrap_or(0) as usize;
    assert!(short <= lost, "{short} threads short of their schedstat, {lost} losses counted");
    assert!(
        off <= lost + finished.len() / 100,
        "{off} of {} threads off their schedstat, {lost} losses counted",
        finished.len()
    );
    eprintln!("every thread within [-50 µs, +{:.3} ms] of its schedstat before exit", worst_over as f64 / 1e6);
}

#[test]
fn churn_beyond_max_threads_keeps_every_thread_tp_btf() {
    check_churn(ProbeOptions::default());
}

#[test]
fn churn_beyond_max_threads_keeps_every_thread_classic_tracepoints() {
    check_churn(ProbeOptions { classic_sched_switch: true, ..Default::default() });
}

/// Puts the pid allocator's last pid back where it was, or where other processes
/// have taken it since (never back over tids handed out meanwhile: that would make
/// the next forks reuse tids of threads that just exited).
struct LastPid(u32);

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

impl LastPid {
    fn save() -> LastPid {
        LastPid(last_pid())
    }
}

fn last_pid() -> u32 {
    std::fs::read_to_string(NS_LAST_PID).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

impl Drop for LastPid {
    fn drop(&mut self) {
        let _ = std::fs::write(NS_LAST_PID, self.0.max(last_pid()).to_string());
    }
}

/// Starts a thread that gets tid `tid` (asks the pid allocator for it; retries while
/// another process takes it first), runs `cpu_ns` and exits. Returns its schedstat
/// before exit, or None if the tid could not be had.
fn run_with_tid(tid: u32, cpu_ns: u64) -> Option<u64> {
    for _ in 0..50 {
        std::fs::write(NS_LAST_PID, (tid - 1).to_string()).expect("write ns_last_pid");
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        let h = std::thread::Builder::new()
            .name("reuse-new".into())
            .spawn(move || {
                tx.send(gettid()).unwrap();
                if go_rx.recv().unwrap() {
                    spin_for_cpu(cpu_ns);
                }
                own_runtime_ns()
            })
            .unwrap();
        let got = rx.recv().unwrap();
        go_tx.send(got == tid).unwrap();
        let runtime = h.join().unwrap();
        if got == tid {
            return Some(runtime);
        }
    }
    None
}

/// A thread marked inside KVM_RUN (as a vCPU would be) runs and exits; returns its
/// tid and schedstat before exit.
fn old_vcpu_thread(session: &mut Session, cpu_ns: u64) -> (u32, u64) {
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h = std::thread::Builder::new()
        .name("reuse-old".into())
        .spawn(move || {
            tx.send(gettid()).unwrap();
            go_rx.recv().unwrap();
            spin_for_cpu(cpu_ns);
            own_runtime_ns()
        })
        .unwrap();
    let tid = rx.recv().unwrap();
    session.probes.mark_in_kvm_run(&[tid]);
    go_tx.send(()).unwrap();
    (tid, h.join().unwrap())
}

fn totals(raw: &RawCounters, tid: u32) -> (u64, u64) {
    let v = raw.threads.get(&tid).unwrap_or_else(|| panic!("thread {tid} missing"));
    (v.iter().map(|s| s.on_cpu_ns).sum(), v.iter().map(|s| s.kvm_run_ns).sum())
}

fn near(a: u64, b: u64) -> bool {
    a.abs_diff(b) < 2_000_000
}

/// The old thread is retired before its tid is reused: its counters are carried and
/// keep a row of their own, and the new thread starts from zero, outside KVM_RUN.
#[test]
fn a_reused_tid_starts_fresh_after_retirement() {
    require_root!();
    let _restore = LastPid::save();
    let mut session = Session::attach(&ProbeOptions::default());
    session.start();
    let (tid, old_ns) = old_vcpu_thread(&mut session, 20_000_000);
    let give_up = Instant::now() + Duration::from_secs(5);
    while !session.probes.retired().threads.contains_key(&tid) {
        assert!(Instant::now() < give_up, "thread {tid} was not retired within 5 s");
        std::thread::sleep(Duration::from_millis(5));
        session.probes.retire_exited().expect("retire exited threads");
    }
    let Some(new_ns) = run_with_tid(tid, 10_000_000) else {
        eprintln!("SKIPPED: tid {tid} could not be had again (the host forks too much)");
        return;
    };
    let raw = session.probes.read().expect("read the maps");
    let (on_cpu, kvm_run) = totals(&raw, tid);
    eprintln!("tid {tid}: new thread ran {new_ns} ns; read: on_cpu {on_cpu}, kvm_run {kvm_run}");
    assert!(near(on_cpu, new_ns), "the new thread inherited: on_cpu {on_cpu} vs its {new_ns}");
    assert_eq!(kvm_run, 0, "the new thread inherited KVM_RUN");
    let old = raw.earlier_threads.iter().find(|t| t.tid == tid).expect("the old thread has a row of its own");
    let old_on_cpu: u64 = old.stats.iter().map(|s| s.on_cpu_ns).sum();
    let old_kvm_run: u64 = old.stats.iter().map(|s| s.kvm_run_ns).sum();
    eprintln!("tid {tid}: old thread ran {old_ns} ns; read: on_cpu {old_on_cpu}, kvm_run {old_kvm_run}");
    assert!(near(old_on_cpu, old_ns) && near(old_kvm_run, old_ns));
    assert_eq!(raw.counters[counter::LOST_REUSED_TID as usize], 0);
    let report = session.finish();
    assert_eq!(report.threads.iter().filter(|t| t.tid == tid).count(), 2, "one row per thread of tid {tid}");
}

/// The tid is reused before the old thread was retired: the new thread's fork wipes
/// the old entries (counted, never silent), and the new thread starts fresh.
#[test]
fn a_tid_reused_before_retirement_is_wiped_and_counted() {
    require_root!();
    let _restore = LastPid::save();
    let mut session = Session::attach(&ProbeOptions::default());
    session.start();
    let (tid, old_ns) = old_vcpu_thread(&mut session, 20_000_000);
    let Some(new_ns) = run_with_tid(tid, 10_000_000) else {
        eprintln!("SKIPPED: tid {tid} could not be had again (the host forks too much)");
        return;
    };
    let raw = session.probes.read().expect("read the maps");
    let (on_cpu, kvm_run) = totals(&raw, tid);
    eprintln!("tid {tid}: old {old_ns} (lost) + new {new_ns} ns ran; report: on_cpu {on_cpu}, kvm_run {kvm_run}");
    assert!(raw.counters[counter::LOST_REUSED_TID as usize] >= 1, "the loss was not counted");
    assert!(near(on_cpu, new_ns), "on_cpu {on_cpu} vs the new thread's {new_ns}");
    assert_eq!(kvm_run, 0, "the new thread inherited KVM_RUN");
    let report = session.finish();
    assert!(report.dropped_by_cause.get("tid_reused_before_retired").copied().unwrap_or(0) >= 1);
}
