//! The `vmmtrace` binary as a user meets it: exit codes, Ctrl-C, and clear errors.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
};

use vmmtrace::report::Report;

fn vmmtrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmmtrace"))
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn record_around_false_exits_1_and_writes_a_report() {
    let d = tmp();
    let out = d.path().join("r.json");
    let st = vmmtrace().args(["record", "--interval", "0", "-o"]).arg(&out).args(["--", "false"]).status().unwrap();
    assert_eq!(st.code(), Some(1));
    let r = Report::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let cmd = r.command.expect("command in report");
    assert_eq!(cmd.exit_code, Some(1));
    assert_eq!(cmd.argv, vec!["false"]);
}

#[test]
fn the_commands_exit_code_is_passed_through_and_its_children_are_workload() {
    let d = tmp();
    let out = d.path().join("r.json");
    let st = vmmtrace()
        .args(["record", "--interval", "0", "-o"])
        .arg(&out)
        .args(["--", "sh", "-c", "head -c 3000000 /dev/zero | bzip2 -9 > /dev/null; exit 7"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));
    let r = Report::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let bz = r.threads.iter().find(|t| t.comm == "bzip2").expect("bzip2 thread in report");
    assert_eq!(serde_json::to_value(bz.role).unwrap(), "workload");
    assert!(bz.on_cpu_ns > 0);
    assert!(r.threads.iter().any(|t| t.comm == "head" && serde_json::to_value(t.role).unwrap() == "workload"));
}

#[test]
fn ctrl_c_leaves_a_valid_report() {
    let d = tmp();
    let out = d.path().join("r.json");
    let mut child =
        vmmtrace().args(["record", "--interval", "100ms", "-o"]).arg(&out).stderr(Stdio::piped()).spawn().unwrap();
    // Wait for the first live line: the probes are attached and tracing.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("vmmtrace ended before printing a live line").unwrap();
        if line.starts_with('[') {
            break;
        }
    }
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130), "stderr: {rest:?}");
    let r = Report::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(r.wall_ns > 0);
    assert!(!r.threads.is_empty());
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
}

#[test]
fn sigterm_leaves_a_valid_report_and_stops_the_command() {
    let d = tmp();
    let out = d.path().join("r.json");
    let mut child = vmmtrace()
        .args(["record", "--interval", "100ms", "-o"])
        .arg(&out)
        .args(["--", "sleep", "1000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines.next().expect("no live line").unwrap().starts_with('[') {}
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(128 + libc::SIGTERM));
    let r = Report::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r.command.unwrap().signal, Some(libc::SIGTERM));
}

#[test]
fn without_privileges_it_says_why_in_one_line() {
    let d = tmp();
    let out = d.path().join("r.json");
    // Writable for nobody, so the only thing missing is the privilege.
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut cmd = vmmtrace();
    cmd.args(["record", "-d", "1", "-o"]).arg(&out);
    // SAFETY: setgid/setuid between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("root") && err.contains("CAP_BPF"), "{err}");
    assert!(!out.exists());
}

#[test]
fn bad_input_fails_before_tracing_with_a_clear_message() {
    let d = tmp();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["record".into(), "-d".into(), "soon".into()], "not a duration"),
        (vec!["record".into(), "--duration=-3".into()], "not a positive duration"),
        (vec!["record".into(), "-d".into(), "-5".into()], "'-5' is not a positive duration"),
        (vec!["record".into(), "--interval".into(), "-1".into()], "'-1' is not a duration of 0 or more seconds"),
        (
            vec![
                "record".into(),
                "-o".into(),
                d.path().join("r.json").display().to_string(),
                "--".into(),
                "no-such-cmd-xyz".into(),
            ],
            "command not found: no-such-cmd-xyz",
        ),
        (
            vec!["record".into(), "-d".into(), "1".into(), "-o".into(), "/nonexistent-dir/r.json".into()],
            "cannot write the report",
        ),
        (vec!["report".into(), "/nonexistent-file.json".into()], "cannot read"),
    ];
    for (args, want) in cases {
        let o = vmmtrace().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // The cause is said once (it once read "... (os error 2) (choose another
        // --output): No such file or directory (os error 2)").
        assert!(err.matches("os error").count() <= 1, "{args:?}: {err}");
    }
}

#[test]
fn report_renders_a_recorded_file() {
    let d = tmp();
    let out = d.path().join("r.json");
    let st = vmmtrace().args(["record", "-d", "300ms", "--interval", "0", "-o"]).arg(&out).status().unwrap();
    assert!(st.success());
    let o = vmmtrace().arg("report").arg(&out).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("top threads"), "{text}");
    assert!(text.contains("dropped events: 0"), "{text}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

#[test]
fn record_ends_with_the_top_finding() {
    let d = tmp();
    let out = d.path().join("r.json");
    // One busy job more than CPUs: no CPU is idle.
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) + 1;
    let script = format!("for i in $(seq {jobs}); do timeout 1.5 sh -c 'while :; do :; done' & done; wait");
    let o = vmmtrace()
        .args(["record", "--interval", "0", "-o"])
        .arg(&out)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("top finding (vmmtrace diagnose "), "{stderr}");
    assert!(stderr.contains("Remedy: "), "{stderr}");
}

#[test]
fn diagnose_json_gives_the_findings_as_data() {
    let o = vmmtrace().args(["diagnose", "--json"]).arg(fixture("lookalike-vm.json")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(findings[0]["kind"], "vmm_thread_on_vcpu_core");
    assert!(findings[0]["cost_ns"].as_u64().unwrap() > 0);
    // A threshold above every wait leaves only the findings that are not about waits.
    let o = vmmtrace().args(["diagnose", "--min-wait-pct", "100"]).arg(fixture("lookalike-vm.json")).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("waited"), "{text}");
}

#[test]
fn report_out_says_what_to_do_about_a_bad_font() {
    let d = tmp();
    let o = vmmtrace()
        .args(["report"])
        .arg(fixture("jobs.json"))
        .arg("--out")
        .arg(d.path())
        .env("VMMTRACE_FONT", fixture("jobs.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("is not a TrueType font") && stderr.contains("VMMTRACE_FONT"), "{stderr}");
}
