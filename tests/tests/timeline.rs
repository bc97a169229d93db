//! `record --timeline`: the Chrome trace-event JSON against the trace-event format
//! (what Perfetto's importer needs; its trace_processor shell cannot be downloaded on
//! this host, see docs/results.md) and against the report of the same run: each
//! thread's running slices sum to its on-CPU time, each CPU track to the CPU's busy
//! time, migrations appear as instants.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::Output,
};

use serde_json::Value;
use vmmtrace::report::Report;
use vmmtrace_tests::*;

/// A track: (pid, tid).
type Track = (u64, u64);

/// A parsed timeline, checked against the trace-event format on the way in.
struct Timeline {
    other: Value,
    /// track -> its complete events (cat, name, ts µs, dur µs), in file order.
    slices: HashMap<Track, Vec<(String, String, f64, f64)>>,
    /// track -> instant events' names.
    instants: HashMap<Track, Vec<String>>,
    thread_names: HashMap<Track, String>,
    process_names: HashMap<u64, String>,
}

fn num(e: &Value, k: &str) -> f64 {
    e[k].as_f64().unwrap_or_else(|| panic!("{k} missing or not a number in {e}"))
}

fn int(e: &Value, k: &str) -> u64 {
    e[k].as_u64().unwrap_or_else(|| panic!("{k} missing or not an integer in {e}"))
}

/// Parses `path`, asserting the trace-event format's rules for every event.
fn read_timeline(path: &Path, wall_ns: u64) -> Timeline {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("the timeline is JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents is an array");
    let mut t = Timeline {
        other: v["otherData"].clone(),
        slices: HashMap::new(),
        instants: HashMap::new(),
        thread_names: HashMap::new(),
        process_names: HashMap::new(),
    };
    let wall_us = wall_ns as f64 / 1e3;
    for e in events {
        let name = e["name"].as_str().unwrap_or_else(|| panic!("event without a name: {e}")).to_string();
        let track = (int(e, "pid"), int(e, "tid"));
        match e["ph"].as_str() {
            Some("X") => {
                let (ts, dur) = (num(e, "ts"), num(e, "dur"));
                assert!(ts >= 0.0 && dur > 0.0 && ts + dur <= wall_us + 1e-3, "slice outside the window: {e}");
                let cat = e["cat"].as_str().expect("a slice has a category").to_string();
                t.slices.entry(track).or_default().push((cat, name, ts, dur));
            }
            Some("i") => {
                assert_eq!(e["s"], "t", "instants are thread-scoped: {e}");
                assert!((0.0..=wall_us).contains(&num(e, "ts")), "instant outside the window: {e}");
                t.instants.entry(track).or_default().push(name);
            }
            Some("M") => match name.as_str() {
                "thread_name" => {
                    t.thread_names.insert(track, e["args"]["name"].as_str().expect("a name").into());
                }
                "process_name" => {
                    t.process_names.insert(track.0, e["args"]["name"].as_str().expect("a name").into());
                }
                "process_sort_index" | "thread_sort_index" => assert!(e["args"]["sort_index"].is_i64()),
                other => panic!("unexpected metadata event {other}"),
            },
            other => panic!("unexpected phase {other:?} in {e}"),
        }
    }
    for (track, slices) in &t.slices {
        assert!(t.thread_names.contains_key(track), "track {track:?} has slices but no name");
        assert!(t.process_names.contains_key(&track.0), "process {} has no name", track.0);
        // Slices of one track never overlap (Perfetto would nest them).
        let mut spans: Vec<(f64, f64)> = slices.iter().map(|s| (s.2, s.2 + s.3)).collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in spans.windows(2) {
            assert!(w[1].0 >= w[0].1 - 1e-3, "overlapping slices on {track:?}: {w:?}");
        }
    }
    t
}

impl Timeline {
    /// ns of the slices of category `cat` on `track`.
    fn sum_ns(&self, track: Track, cat: &str) -> u64 {
        let us: f64 = self.slices.get(&track).into_iter().flatten().filter(|s| s.0 == cat).map(|s| s.3).sum();
        (us * 1e3).round() as u64
    }
}

/// Runs `vmmtrace record --interval 0 -o DIR/r.json --timeline DIR/t.json [extra] -- cmd`.
fn record(dir: &Path, extra: &[&str], cmd: &[&str]) -> (Output, Report) {
    let (report, timeline) = (dir.join("r.json"), dir.join("t.json"));
    let out = vmmtrace_cmd!()
        .args(["record", "--interval", "0", "-o"])
        .arg(&report)
        .arg("--timeline")
        .arg(&timeline)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run vmmtrace");
    assert!(out.status.success(), "vmmtrace record failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&report).expect("the report");
    (out, Report::from_json(&text).expect("a report"))
}

/// Every thread that ran a millisecond or more on the CPUs the timeline shows, and
/// each of those CPUs: the timeline's slices against the report, within 1 %.
fn assert_slices_match_report(t: &Timeline, r: &Report) {
    let cpu_pid = vmmtrace::perfetto::CPU_TRACKS_PID as u64;
    let shown: Vec<usize> =
        t.thread_names.keys().filter(|(pid, _)| *pid == cpu_pid).map(|(_, tid)| (tid - cpu_pid) as usize).collect();
    assert!(!shown.is_empty(), "no CPU track");
    for th in &r.threads {
        let on_shown: u64 = shown.iter().filter_map(|&c| th.per_cpu_ns.get(c)).sum();
        if on_shown < 1_000_000 {
            continue;
        }
        let run = t.sum_ns((th.pid as u64, th.tid as u64), "run");
        let err = relative_error(run, on_shown);
        assert!(err < 0.01, "{}[{}]: running slices {run} ns, report {on_shown} ns on CPUs {shown:?}", th.comm, th.tid);
    }
    for c in &r.cpus {
        let track = (vmmtrace::perfetto::CPU_TRACKS_PID as u64, (vmmtrace::perfetto::CPU_TRACKS_PID + c.cpu) as u64);
        if let Some(slices) = t.slices.get(&track) {
            let busy = t.sum_ns(track, "cpu");
            assert!(relative_error(busy, c.busy_ns) < 0.01, "CPU {}: slices {busy} ns, report {}", c.cpu, c.busy_ns);
            assert!(!slices.is_empty());
        }
    }
}

/// Two CPU-bound threads pinned to one CPU (the watched command), beside whatever
/// else the host runs: each thread's runs and waits, and the CPU's track.
#[test]
fn two_threads_pinned_together_slices_agree_with_the_report() {
    require_root!();
    check_two_threads_pinned_together(&[]);
}

/// The same through the classic tracepoints (sched_switch and the wakeups).
#[test]
fn two_threads_pinned_together_classic_tracepoints() {
    require_root!();
    check_two_threads_pinned_together(&["--classic-sched-switch"]);
}

fn check_two_threads_pinned_together(extra: &[&str]) {
    let cpu = online_cpus()[0].to_string();
    let spin = "end=$((SECONDS+2)); while [ $SECONDS -lt $end ]; do :; done";
    let script = format!("({spin}) & ({spin}) & wait");
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = record(dir.path(), extra, &["taskset", "-c", &cpu, "bash", "-c", &script]);
    let t = read_timeline(&dir.path().join("t.json"), r.wall_ns);

    assert_eq!(r.dropped_events, 0, "the ring buffer overflowed on a 2 s run");
    assert_eq!(t.other["events_dropped_ring_full"], 0);
    assert_eq!(t.other["events_over_limit"], 0);
    assert!(r.events["timeline_kept"] > 0);
    assert_slices_match_report(&t, &r);

    let cmd_pid = r.command.as_ref().expect("the command").pid;
    // The two subshells (the command's own shell only waits for them). On a host
    // busy with other work they get less than their 2 s each.
    let spinners: Vec<_> = r
        .threads
        .iter()
        .filter(|th| th.role == vmmtrace::host::Role::Workload && th.tid != cmd_pid && th.on_cpu_ns > 50_000_000)
        .collect();
    assert_eq!(spinners.len(), 2, "two spinners in the report: {:?}", r.threads.iter().take(5).collect::<Vec<_>>());
    let cmd_pid = cmd_pid as u64;
    assert!(t.process_names[&cmd_pid].starts_with("command: taskset"), "{:?}", t.process_names.get(&cmd_pid));
    for (th, other) in [(spinners[0], spinners[1]), (spinners[1], spinners[0])] {
        let track = (th.pid as u64, th.tid as u64);
        assert!(t.thread_names[&track].ends_with(&format!("[{}]", th.tid)));
        // Pinned together and never blocking, each waited at least while the other
        // ran (but for the moments one of them was not born yet).
        let waited = t.sum_ns(track, "wait");
        let ledger = r.runq_wait_ns(th.tid);
        eprintln!("{}: wait slices {waited} ns, report's run-queue wait {ledger} ns", th.tid);
        assert!(waited > other.on_cpu_ns / 2, "{}: waited {waited} ns, the other ran {}", th.tid, other.on_cpu_ns);
        assert!(relative_error(waited, ledger) < 0.01, "{}: wait slices {waited} vs report {ledger}", th.tid);
    }
}

/// A shell moved between two CPUs 10 times by taskset: each move is a migration
/// instant on its track, as many as the report counts.
#[test]
fn migrations_are_instants_on_the_threads_track() {
    require_root!();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "this test needs 2 CPUs");
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do taskset -pc {} $$ >/dev/null; taskset -pc {} $$ >/dev/null; done",
        cpus[0], cpus[1]
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = record(dir.path(), &[], &["bash", "-c", &script]);
    let t = read_timeline(&dir.path().join("t.json"), r.wall_ns);
    let shell = r.command.as_ref().expect("the command").pid;
    let th = r.thread(shell).expect("the shell in the report");
    let moves: Vec<&String> = t
        .instants
        .get(&(shell as u64, shell as u64))
        .into_iter()
        .flatten()
        .filter(|n| n.starts_with("migrate"))
        .collect();
    assert!(moves.len() >= 19, "{} migrations of the shell", moves.len());
    assert_eq!(moves.len() as u64, th.migrations, "instants vs the report's count");
    assert_slices_match_report(&t, &r);
}

/// A limit below what the run produces: the excess is counted in the report, in the
/// file, and said on stderr; the slices kept are still well formed.
#[test]
fn events_over_the_limit_are_counted_and_said() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let (out, r) =
        record(dir.path(), &["--timeline-limit", "50"], &["bash", "-c", "for i in $(seq 50); do true; done"]);
    let t = read_timeline(&dir.path().join("t.json"), r.wall_ns);
    let over = r.events["timeline_over_limit"];
    assert!(over > 0, "a 50-process run fits in 50 events?");
    assert_eq!(r.events["timeline_kept"], 50);
    assert_eq!(t.other["events_over_limit"], over);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("over --timeline-limit (raise it)"), "{stderr}");
}

/// A micro-VM as the watched command: a process named after the VM, its vCPU threads
/// named "vCPU n", their running slices equal to the report's per-thread times.
#[test]
fn a_micro_vm_is_a_process_with_named_vcpus() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let vm = vmmtrace_cmd!().get_program().to_string_lossy().into_owned();
    let (_, r) = record(
        dir.path(),
        &[],
        &[
            &vm,
            "microvm",
            "--vcpus",
            "2",
            "--workload",
            "loop",
            "--work",
            "2000",
            "--exit-every",
            "1",
            "--timer-hz",
            "250",
        ],
    );
    let t = read_timeline(&dir.path().join("t.json"), r.wall_ns);
    assert_eq!(r.dropped_events, 0);
    assert_slices_match_report(&t, &r);
    let vm = r.vms.first().expect("the micro-VM in the report");
    assert!(t.process_names[&(vm.pid as u64)].starts_with(&format!("VM {}", vm.name)));
    let mut named: BTreeMap<u32, String> = BTreeMap::new();
    for v in &vm.vcpus {
        let track = (vm.pid as u64, v.tid as u64);
        named.insert(v.tid, t.thread_names.get(&track).cloned().unwrap_or_default());
        assert!(t.sum_ns(track, "run") > 0, "vCPU thread {} never ran in the timeline", v.tid);
    }
    assert!(named.values().all(|n| n.starts_with("vCPU ")), "{named:?}");
}

/// SIGINT and SIGTERM end the trace with the timeline written too (after the
/// report), its live line part shown while tracing.
#[test]
fn sigint_and_sigterm_leave_a_valid_timeline() {
    use std::io::BufRead as _;
    require_root!();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let (report, timeline) = (dir.path().join("r.json"), dir.path().join("t.json"));
        let mut child = vmmtrace_cmd!()
            .args(["record", "--interval", "100ms", "-o"])
            .arg(&report)
            .arg("--timeline")
            .arg(&timeline)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start vmmtrace");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        // Tracing once the first live line is out; it carries the timeline's counts.
        let first = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with('['));
        let first = first.unwrap_or_else(|| panic!("vmmtrace ended before tracing: {:?}", child.wait()));
        assert!(first.contains("| timeline "), "{first}");
        // SAFETY: kill(2) on the child this test started.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert_eq!(child.wait().unwrap().code(), Some(128 + sig), "signal {sig}: {rest:?}");
        let r = Report::from_json(&std::fs::read_to_string(&report).unwrap()).expect("a report");
        let t = read_timeline(&timeline, r.wall_ns);
        assert!(!t.slices.is_empty(), "signal {sig}: an empty timeline");
        assert_slices_match_report(&t, &r);
    }
}

/// A ring buffer nobody drains (one page, about a hundred records) under a
/// context-switch load: every record it refused is counted, in `events` and in
/// `dropped_events`, and the live counters say it too. Never silent.
#[test]
fn a_full_ring_buffer_is_counted_not_silent() {
    require_root!();
    let page = vmmtrace::sys::page_size() as u32;
    let mut session =
        Session::attach(&vmmtrace::probe::ProbeOptions { timeline_ring_bytes: page, kvm: false, ..Default::default() });
    // Held, never read: the buffer fills after its first hundred records.
    let _ring = session.probes.take_timeline().expect("the timeline's ring buffer");
    session.start();
    vmmtrace::bench::ping_pong(5_000, online_cpus()[0]);
    let live = session.probes.read().expect("read the maps");
    let report = session.finish();
    let dropped = report.events["timeline_dropped"];
    let per_record = (tracer_common::timeline::TimelineEvent::SIZE + 8) as u64; // with its header
    assert!(dropped >= 10_000 - u64::from(page) / per_record, "{dropped} records refused of 10,000+ switches");
    assert!(report.dropped_events >= dropped, "dropped_events {} < {dropped}", report.dropped_events);
    assert!(live.dropped_events() > 0, "the live counters miss the refused records");
}

/// Perfetto's own importer, where it can run: python3 with the PyPI package
/// `perfetto`, and a `trace_processor_shell` (the package downloads one from
/// commondatastorage.googleapis.com, which the build machine cannot reach: give a
/// path in VMMTRACE_TP_SHELL, or put one on PATH). Its per-thread sums of the
/// `running` slices against the report, within 1 %. Skips, saying why, otherwise.
#[test]
fn perfetto_trace_processor_agrees_with_the_report() {
    require_root!();
    let Some(shell) = trace_processor_shell() else {
        eprintln!("SKIPPED: no trace_processor_shell (set VMMTRACE_TP_SHELL or put it on PATH)");
        return;
    };
    let has_module = std::process::Command::new("python3").args(["-c", "import perfetto"]).output();
    if !has_module.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: python3 or its `perfetto` package is missing (pip install perfetto)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spin = "end=$((SECONDS+1)); while [ $SECONDS -lt $end ]; do :; done";
    let (_, r) = record(dir.path(), &[], &["bash", "-c", &format!("({spin}) & ({spin}) & wait")]);
    const QUERY: &str = "select thread.tid as tid, sum(slice.dur) as ns from slice \
        join thread_track on slice.track_id = thread_track.id join thread using (utid) \
        where slice.name = 'running' group by thread.tid";
    let script = format!(
        "import json, sys\nfrom perfetto.trace_processor import TraceProcessor, TraceProcessorConfig\n\
         tp = TraceProcessor(trace=sys.argv[1], config=TraceProcessorConfig(bin_path=sys.argv[2]))\n\
         print(json.dumps({{str(r.tid): r.ns for r in tp.query(\"{QUERY}\")}}))\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .arg(dir.path().join("t.json"))
        .arg(&shell)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "trace_processor: {}", String::from_utf8_lossy(&out.stderr));
    let sums: HashMap<String, u64> = serde_json::from_slice(&out.stdout).expect("the query's JSON");
    let workload: Vec<_> = r.threads.iter().filter(|t| t.role == vmmtrace::host::Role::Workload).collect();
    assert!(!workload.is_empty());
    for th in workload.iter().filter(|t| t.on_cpu_ns >= 1_000_000) {
        let ns = sums.get(&th.tid.to_string()).copied().unwrap_or(0);
        assert!(
            relative_error(ns, th.on_cpu_ns) < 0.01,
            "{}: trace_processor {ns} ns, report {}",
            th.tid,
            th.on_cpu_ns
        );
    }
}

fn trace_processor_shell() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("VMMTRACE_TP_SHELL") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("trace_processor_shell")).find(|p| p.is_file())
}
