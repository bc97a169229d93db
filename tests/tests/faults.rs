//! Faults `vmmtrace record` survives (issue 14 item 4), each as a user meets it: the
//! real binary, a real full filesystem, real signals, a second instance, a mount
//! namespace without tracefs.

use std::{
    io::{BufRead as _, BufReader, Lines},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Stdio},
};

use vmmtrace::report::Report;
use vmmtrace_tests::{CopyForAnyone, require_root, vmmtrace_cmd};

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Report::from_json(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// `vmmtrace record` with a live line every 100 ms; returns once it traces (its
/// first live line is out), with the rest of its stderr.
fn start_record(out: &Path, command: &[&str]) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut cmd = vmmtrace_cmd!();
    cmd.args(["record", "--interval", "100ms", "-o"]).arg(out);
    if !command.is_empty() {
        cmd.arg("--").args(command);
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start vmmtrace");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    if !lines.by_ref().map_while(Result::ok).any(|l| l.starts_with('[')) {
        let st = child.wait();
        panic!("vmmtrace ended before tracing: {st:?}");
    }
    (child, lines)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (or its child).
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid} with {sig}");
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs");
        SmallTmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it up: a file that grows until the disk is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = [0xaa_u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_no_partial_file_and_keeps_the_previous_report() {
    require_root!();
    let fs = SmallTmpfs::mount("1m");
    let out = fs.path().join("report.json");
    let previous = "{\"schema\": \"vmmtrace/1\", \"previous\": true}\n";
    std::fs::write(&out, previous).unwrap();
    fs.fill();

    let o = vmmtrace_cmd!().args(["record", "-d", "300ms", "--interval", "0", "-o"]).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or("");
    assert!(
        last.contains(&format!("cannot write the report to {}", out.display()))
            && last.contains("No space left on device (os error 28)"),
        "{stderr}"
    );
    assert_eq!(last.matches("os error 28").count(), 1, "the cause is said once: {last}");
    // What was measured is still shown.
    assert!(stderr.contains("top threads"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), previous);
    let mut left: Vec<String> =
        std::fs::read_dir(fs.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["filler", "report.json"], "no temporary file is left");
}

#[test]
fn a_traced_command_killed_with_sigkill_ends_the_trace_with_its_signal() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let (mut child, _lines) = start_record(&out, &["sleep", "1000"]);
    let sleep_pid = children_of(child.id()).into_iter().next().expect("the traced sleep");
    kill(sleep_pid, libc::SIGKILL);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(128 + libc::SIGKILL));
    let command = read_report(&out).command.expect("command in report");
    assert_eq!((command.pid, command.signal, command.exit_code), (sleep_pid, Some(libc::SIGKILL), None));
}

/// SIGHUP (terminal closed) and SIGTERM (systemd's stop) end the trace with a report.
#[test]
fn sighup_and_sigterm_of_vmmtrace_leave_a_valid_report() {
    require_root!();
    for sig in [libc::SIGHUP, libc::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.json");
        let (mut child, lines) = start_record(&out, &[]);
        kill(child.id(), sig);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(128 + sig), "signal {sig}: {rest:?}");
        let r = read_report(&out);
        assert!(r.wall_ns > 0 && !r.threads.is_empty(), "signal {sig}");
        assert!(rest.iter().any(|l| l.contains("interrupted")), "signal {sig}: {rest:?}");
    }
}

/// Two instances at once load their own probes: each report has its own command as
/// workload, and sees the other's as a thread like any other.
#[test]
fn two_instances_at_once_give_independent_results() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &PathBuf, job: &str| {
        vmmtrace_cmd!()
            .args(["record", "--interval", "0", "-o"])
            .arg(out)
            .args(["--", "sh", "-c", &format!("sleep 0.5; {job}; sleep 1.5")])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a_out, b_out) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let a = run(&a_out, "head -c 4000000 /dev/zero | bzip2 -9 > /dev/null");
    let b = run(&b_out, "head -c 40000000 /dev/zero | gzip -1 > /dev/null");
    for (name, child) in [("a", a), ("b", b)] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let (a, b) = (read_report(&a_out), read_report(&b_out));
    assert_ne!(a.command.as_ref().unwrap().pid, b.command.as_ref().unwrap().pid);
    for (report, own, other) in [(&a, "bzip2", "gzip"), (&b, "gzip", "bzip2")] {
        let role =
            |comm: &str| report.threads.iter().find(|t| t.comm == comm).map(|t| serde_role(t.role)).unwrap_or_default();
        assert_eq!(role(own), "workload", "{own} in its own report");
        assert_eq!(role(other), "other", "{other} in the report of {own}: seen, not workload");
        assert_eq!(report.dropped_events, 0);
    }
}

fn serde_role(role: vmmtrace::host::Role) -> String {
    vmmtrace::report::role_name(role)
}

/// In a mount namespace without tracefs, root's `record` mounts it (in that namespace
/// only) and traces; a user who may not mount is told that it is not mounted.
#[test]
fn tracefs_not_mounted() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("r.json");
    let copy = CopyForAnyone::of(vmmtrace_cmd!().get_program().as_ref());
    let vmmtrace = copy.path.display();
    let in_namespace_without_tracefs = |then: &str| {
        let script = format!(
            "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
             if grep -q tracefs /proc/self/mountinfo; then echo still mounted >&2; exit 99; fi; exec {then}"
        );
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap()
    };

    let o = in_namespace_without_tracefs(&format!("{vmmtrace} record -d 300ms --interval 0 -o {}", out.display()));
    assert!(o.status.success(), "as root: {}", String::from_utf8_lossy(&o.stderr));
    assert!(!read_report(&out).threads.is_empty());
    std::fs::remove_file(&out).unwrap();

    let caps = "+bpf,+perfmon,+dac_read_search,+sys_ptrace";
    let o = in_namespace_without_tracefs(&format!(
        "setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps={caps} --ambient-caps={caps} \
         {vmmtrace} record -d 300ms --interval 0 -o {}",
        out.display()
    ));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("tracefs is not mounted, and mounting it at /sys/kernel/tracing failed"), "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(!out.exists());
}

/// Without the kvm tracepoints (hidden here by empty mounts over tracefs's
/// events/kvm and events/kvmmmu in a private mount namespace, which is what vmmtrace
/// sees on a kernel without the kvm module), the report says why each KVM probe is
/// missing, and the host is traced as before. With `--classic-kvm`: the mounts hide
/// the tracepoints from tracefs, not from the kernel's BTF, where the tp_btf path
/// would still find them (on a kernel without kvm, neither has them).
#[test]
fn without_kvm_tracepoints_the_report_says_so_and_host_tracing_works() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let script = format!(
        "mount -t tmpfs none /sys/kernel/tracing/events/kvm && mount -t tmpfs none /sys/kernel/tracing/events/kvmmmu \
         && exec {} record --classic-kvm -d 300ms --interval 0 -o {}",
        vmmtrace_cmd!().get_program().to_string_lossy(),
        out.display()
    );
    let o = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let r = read_report(&out);
    let reason = |probe: &str| r.host.features.unavailable.iter().find(|u| u.probe == probe).map(|u| u.reason.clone());
    for probe in ["kvm:kvm_exit", "kvm:kvm_entry", "kvm:kvm_userspace_exit"] {
        let why = reason(probe).unwrap_or_else(|| panic!("{probe} not listed as unavailable"));
        assert!(why.contains("is the kvm module loaded?"), "{probe}: {why}");
    }
    assert!(reason("kvm:kvm_emulate_insn").is_some());
    assert!(stderr.contains("note: kvm:kvm_exit unavailable"), "{stderr}");
    // The host is still traced: every CPU's time adds up, threads are there.
    assert!(!r.threads.is_empty());
    assert_eq!(r.dropped_events, 0);
    for c in &r.cpus {
        assert!(c.busy_ns + c.idle_ns > r.wall_ns / 2, "cpu {}: {} + {} of {}", c.cpu, c.busy_ns, c.idle_ns, r.wall_ns);
    }
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}
