//! `vmmtrace check` on this host, as root: it says that `record` can run (exit 0) and
//! gives a line for each probe of the probe table, attached or why not.

use vmmtrace::probe::table::{KVM_EVENT_SLOTS, TRACEPOINTS};
use vmmtrace_tests::{require_root, vmmtrace_cmd};

#[test]
fn check_as_root_says_record_can_run_and_covers_every_probe() {
    require_root!();
    let o = vmmtrace_cmd!().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.ends_with("vmmtrace record can run on this host.\n"), "{text}");
    assert!(!text.contains("FAILS"), "{text}");
    let probe_lines: Vec<&str> = text.lines().filter(|l| l.contains("] probe ")).collect();
    let names = TRACEPOINTS
        .iter()
        .map(|r| r.probe())
        .chain(KVM_EVENT_SLOTS.iter().map(|e| format!("{}:{}", e.category, e.name)));
    for probe in names {
        // The classic sched_switch, sched_wakeup(_new) and sched_process_exit are attached
        // only where their tp_btf siblings are not.
        let classic_only =
            ["sched:sched_switch", "sched:sched_wakeup", "sched:sched_wakeup_new", "sched:sched_process_exit"];
        if classic_only.contains(&probe.as_str()) {
            continue;
        }
        assert!(probe_lines.iter().any(|l| l.contains(&probe)), "no line for {probe}:\n{text}");
    }
    assert!(text.lines().any(|l| l.contains("sched_switch: attached")), "{text}");
    assert!(probe_lines.iter().any(|l| l.contains("sched_process_exit")), "no line for sched_process_exit:\n{text}");
    for subject in ["kernel", "BTF", "tracefs", "perf_event", "KVM backend", "/dev/kvm", "kvm tracepoints"] {
        assert!(text.lines().any(|l| l.contains(&format!("] {subject} "))), "no {subject} line:\n{text}");
    }
}
