//! `record` as an unprivileged user holding exactly the capabilities the docs list
//! (docs/user-guide.md, Least privilege): it traces; with any one of them dropped, it
//! stops before tracing with one line that names the missing capability.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Output};

use tracer_common::names::program::KVM_EVENT;
use vmmtrace::{
    probe::{
        kvm_btf::KvmBtfPlan,
        privileges::REQUIRED,
        table::{KVM_EVENT_SLOTS, TRACEPOINTS},
    },
    report::Report,
};
use vmmtrace_tests::{CopyForAnyone, require_root, vmmtrace_cmd};

/// `vmmtrace record -d 300ms -o out` as user nobody with exactly `caps` (setpriv
/// names: "bpf", "perfmon", ...), as effective, permitted and ambient capabilities.
fn record_as_nobody(vmmtrace: &Path, caps: &[String], out: &Path) -> Output {
    let list: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let list = list.join(",");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    if !caps.is_empty() {
        cmd.arg(format!("--inh-caps={list}")).arg(format!("--ambient-caps={list}"));
    }
    cmd.arg(vmmtrace).args(["record", "-d", "300ms", "--interval", "0", "-o"]).arg(out);
    cmd.output().expect("run setpriv")
}

fn setpriv_name(cap: &str) -> String {
    cap.trim_start_matches("CAP_").to_lowercase()
}

#[test]
fn record_runs_with_exactly_the_documented_capabilities_and_names_each_one_dropped() {
    require_root!();
    if which("setpriv").is_none() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let all: Vec<String> = REQUIRED.iter().map(|c| setpriv_name(c.name)).collect();
    let vmmtrace = CopyForAnyone::of(vmmtrace_cmd!().get_program().as_ref());

    let out = dir.path().join("all.json");
    let o = record_as_nobody(&vmmtrace.path, &all, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "record with {all:?} failed: {stderr}");
    let report = Report::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(!report.threads.is_empty());
    assert_eq!(report.dropped_events, 0);
    // The kvm probes attach as this user too, as tp_btf where the kernel's BTF allows
    // (they need no tracefs then).
    let plan = KvmBtfPlan::choose(false);
    let attached = &report.host.features.attached;
    for row in TRACEPOINTS.iter().filter(|r| r.category == "kvm") {
        let path = if plan.btf_program(row.program).is_ok() { "tp_btf" } else { "tracepoint" };
        assert!(attached.contains(&format!("{path}:{}", row.probe())), "{path}:{} not in {attached:?}", row.probe());
    }

    for dropped in REQUIRED {
        let rest: Vec<String> = all.iter().filter(|c| **c != setpriv_name(dropped.name)).cloned().collect();
        let out = dir.path().join(format!("without-{}.json", dropped.name));
        let o = record_as_nobody(&vmmtrace.path, &rest, &out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        eprintln!("without {}: {}", dropped.name, stderr.trim());
        assert_eq!(o.status.code(), Some(1), "without {}: {stderr}", dropped.name);
        assert_eq!(stderr.trim().lines().count(), 1, "without {}: {stderr}", dropped.name);
        assert!(stderr.contains(&format!("missing capabilities: {}", dropped.name)), "{stderr}");
        assert!(!out.exists(), "a report was written without {}", dropped.name);
    }
}

/// Mounted but unreadable tracefs is said as such (it once said "not mounted").
#[test]
fn unreadable_tracefs_is_not_called_unmounted() {
    require_root!();
    if which("setpriv").is_none() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let mode = std::fs::metadata("/sys/kernel/tracing").map(|m| m.permissions().mode()).unwrap_or(0o7);
    if mode & 0o005 != 0 || mode == 0o7 {
        eprintln!("skipped: /sys/kernel/tracing is not a tracefs only root may read here (mode {mode:o})");
        return;
    }
    let vmmtrace = CopyForAnyone::of(vmmtrace_cmd!().get_program().as_ref());
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=+bpf,+perfmon,+sys_ptrace"])
        .arg("--ambient-caps=+bpf,+perfmon,+sys_ptrace")
        .arg(&vmmtrace.path)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("tracefs is mounted at /sys/kernel/tracing but this user (uid 65534) cannot read it"),
        "{stdout}"
    );
    assert!(!stdout.contains("not mounted"), "{stdout}");
    // The kvm probes need no tracefs where they run as tp_btf: this user, with
    // CAP_BPF and CAP_PERFMON, attaches them (the kvm tracepoints exist here even
    // where /dev/kvm does not; they need not fire to attach).
    let plan = KvmBtfPlan::choose(false);
    let kvm_rows = TRACEPOINTS.iter().filter(|r| r.category == "kvm").map(|r| (r.program, r.probe()));
    let slots = KVM_EVENT_SLOTS.iter().enumerate().map(|(i, e)| (KVM_EVENT[i], format!("{}:{}", e.category, e.name)));
    for (program, probe) in kvm_rows.chain(slots) {
        if plan.btf_program(program).is_err() {
            eprintln!("{probe}: classic on this kernel, needs tracefs");
            continue;
        }
        let line = format!("tp_btf:{probe}: attached (without tracefs)");
        assert!(stdout.lines().any(|l| l.contains(&line)), "no line {line}:\n{stdout}");
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    vmmtrace::record::resolve_command(program).ok()
}
