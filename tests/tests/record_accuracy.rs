//! The probes against the kernel's own accounting: per-thread on-CPU time against
//! /proc/<pid>/task/<tid>/schedstat, per-CPU sums against the wall clock, and
//! migrations against moves the test makes itself.

use std::time::Duration;

use vmmtrace::probe::ProbeOptions;
use vmmtrace_tests::*;

/// Runs two pinned spinners and a sleeper under `opts`, and checks each thread against
/// the kernel's own count (schedstat, read while the thread is parked, so up to date).
/// (These tests spin on every CPU: the session lock runs them one at a time.)
fn check_on_cpu_matches_schedstat(opts: ProbeOptions) {
    require_root!();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "this test needs 2 CPUs");
    let mut session = Session::attach(&opts);
    session.start();

    let spin = Duration::from_millis(1500);
    let a = Parked::spawn("spin-a", spin_on(cpus[0], spin));
    let b = Parked::spawn("spin-b", spin_on(cpus[1], spin));
    let sleeps = 200;
    let s = Parked::spawn("sleeper", move || {
        for _ in 0..sleeps {
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    for t in [&a, &b, &s] {
        t.wait_done();
    }
    let truth: Vec<(u32, u64)> = [&a, &b, &s].iter().map(|t| (t.tid, schedstat(t.tid).0)).collect();
    let report = session.finish();
    for t in [a, b, s] {
        t.release();
    }

    assert_eq!(report.dropped_events, 0);
    for (i, (tid, sum_exec)) in truth.iter().enumerate() {
        let th = report.thread(*tid).unwrap_or_else(|| panic!("thread {tid} missing from the report"));
        if i < 2 {
            let err = relative_error(th.on_cpu_ns, *sum_exec);
            eprintln!("{}: on_cpu_ns {} schedstat {} error {:.4}%", th.comm, th.on_cpu_ns, sum_exec, err * 100.0);
            assert!(
                err < 0.01,
                "{}: on_cpu_ns {} vs schedstat {sum_exec} ({:.3}% off)",
                th.comm,
                th.on_cpu_ns,
                err * 100.0
            );
            // It did spin (a sanity check on the test: the CPU may be shared with others).
            assert!(th.on_cpu_ns as u128 > spin.as_nanos() / 10, "{} ran {} ns", th.comm, th.on_cpu_ns);
        } else {
            // The sleeper went to sleep voluntarily each time.
            assert!(th.switches >= sleeps, "sleeper: {} switches", th.switches);
            assert!(th.switches - th.involuntary_switches >= sleeps);
            assert!(th.on_cpu_ns <= *sum_exec + 1_000_000, "sleeper {} vs {}", th.on_cpu_ns, sum_exec);
        }
    }
    // Every CPU's time adds up to the wall clock.
    for c in &report.cpus {
        let threads: u64 = report.threads.iter().filter_map(|t| t.per_cpu_ns.get(c.cpu as usize)).sum();
        assert_eq!(threads, c.busy_ns);
        let err = relative_error(c.busy_ns + c.idle_ns, report.wall_ns);
        assert!(err < 0.005, "cpu {}: busy {} + idle {} vs wall {}", c.cpu, c.busy_ns, c.idle_ns, report.wall_ns);
    }
}

#[test]
fn on_cpu_time_matches_schedstat_tp_btf() {
    check_on_cpu_matches_schedstat(ProbeOptions::default());
}

#[test]
fn on_cpu_time_matches_schedstat_classic_tracepoint() {
    check_on_cpu_matches_schedstat(ProbeOptions { classic_sched_switch: true, ..Default::default() });
}

#[test]
fn migrations_are_counted() {
    require_root!();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "this test needs 2 CPUs");
    let mut session = Session::attach(&ProbeOptions::default());
    session.start();
    let k = 25u64;
    let (c0, c1) = (cpus[0], cpus[1]);
    let mover = Parked::spawn("mover", move || {
        pin_self(c0);
        for i in 0..k {
            pin_self(if i % 2 == 0 { c1 } else { c0 });
            // The kernel moves a running task off a CPU it may no longer use before
            // sched_setaffinity returns.
            // SAFETY: sched_getcpu has no preconditions.
            let now = unsafe { libc::sched_getcpu() } as u32;
            assert_eq!(now, if i % 2 == 0 { c1 } else { c0 });
        }
    });
    mover.wait_done();
    let report = session.finish();
    let tid = mover.tid;
    mover.release();
    let th = report.thread(tid).expect("mover in report");
    assert!(th.migrations >= k, "moved {k} times, {} migrations counted", th.migrations);
    assert_eq!(th.comm, "mover");
}
