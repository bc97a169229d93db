//! `vmmtrace check` on this host, as root: it says that `record` can run (exit 0) and
//! gives a line for each probe of the probe table, attached or why not.

use vmmtrace::probe::{
    ProbeOptions,
    kvm_btf::KvmBtfPlan,
    table::{KVM_EVENT_SLOTS, TRACEPOINTS},
};
use vmmtrace_tests::{require_root, trace, vmmtrace_cmd};

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
    // Each kvm probe's line says which path it takes: tp_btf where the kernel's BTF
    // has its prototype, else the classic tracepoint.
    let plan = KvmBtfPlan::choose(false);
    for row in TRACEPOINTS.iter().filter(|r| r.category == "kvm") {
        let path = if plan.btf_program(row.program).is_ok() { "tp_btf" } else { "tracepoint" };
        let line = format!("{path}:{}: attached", row.probe());
        assert!(probe_lines.iter().any(|l| l.contains(&line)), "no line {line}:\n{text}");
    }
}

/// The kvm probes take the tp_btf path where the BTF allows and the classic one when
/// asked (`classic_kvm`), and the report's `host.features` says which.
#[test]
fn the_report_says_which_path_each_kvm_probe_takes() {
    require_root!();
    let plan = KvmBtfPlan::choose(false);
    for classic_kvm in [false, true] {
        let (report, ()) = trace(&ProbeOptions { classic_kvm, ..Default::default() }, || ());
        let f = &report.host.features;
        for row in TRACEPOINTS.iter().filter(|r| r.category == "kvm") {
            let btf = !classic_kvm && plan.btf_program(row.program).is_ok();
            let (used, unused) = if btf { ("tp_btf", "tracepoint") } else { ("tracepoint", "tp_btf") };
            assert!(f.attached.contains(&format!("{used}:{}", row.probe())), "{classic_kvm}: {:?}", f.attached);
            assert!(!f.attached.contains(&format!("{unused}:{}", row.probe())), "{classic_kvm}: {:?}", f.attached);
            if !btf {
                let why = f.unavailable.iter().find(|u| u.probe == format!("tp_btf:{}", row.probe()));
                assert!(why.is_some_and(|u| u.reason.contains("using the classic tracepoint")), "{:?}", f.unavailable);
            }
        }
    }
}
