//! `vmmtrace experiment` end to end on the host: the real bzip2 and GNU Go, traced by
//! the real probes, a short experiment run to completion, and one interrupted with
//! SIGINT and resumed.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use vmmtrace::{experiment::ExperimentResult, report::Report};

/// Two experiments at once would each slow the other's jobs: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn vmmtrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmmtrace"))
}

fn programs_missing() -> bool {
    let missing = ["/usr/bin/bzip2", "/usr/games/gnugo"].iter().any(|p| !Path::new(p).exists());
    if missing {
        eprintln!("skipped: needs bzip2 and gnugo (apt-get install bzip2 gnugo)");
    }
    missing
}

fn load(path: &Path) -> ExperimentResult {
    ExperimentResult::load(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every job of every run: checked, its on-CPU time as the probes tell it equal to
/// the kernel's own count, and the stopwatch covering the kernel's on-CPU + wait.
fn assert_runs_sound(r: &ExperimentResult, dir: &Path) {
    for run in &r.runs {
        assert_eq!(run.dropped_events, 0, "run {}", run.id);
        let report = Report::from_json(&std::fs::read_to_string(dir.join(&run.report)).unwrap()).unwrap();
        assert_eq!(report.wall_ns, run.trace_ns);
        assert_eq!(run.jobs.len(), run.scenario.jobs);
        for j in &run.jobs {
            assert_eq!(j.check_error, None, "run {} job {}", run.id, j.index);
            let k = j.kernel.expect("kernel counts");
            let on_cpu = j.parts_ns["on_cpu"];
            let diff = on_cpu.abs_diff(k.on_cpu_ns);
            assert!(
                diff < k.on_cpu_ns / 50 + 5_000_000,
                "run {} job {}: on_cpu {on_cpu} vs kernel {k:?}",
                run.id,
                j.index
            );
            // The stopwatch holds the job's time on CPU and in the run queue.
            let held = (k.on_cpu_ns + k.run_delay_ns) as f64 / j.wall_ns as f64;
            assert!(held > 0.9 && held < 1.01, "run {} job {}: {held:.3} of wall {}", run.id, j.index, j.wall_ns);
            assert!((j.closure_error - (j.parts_sum_ns() as f64 / j.wall_ns as f64 - 1.0)).abs() < 1e-9);
            // With the ledger the account holds the wait and the blocked time too, and
            // closes: within 0.5 % on a quiet host; here other sessions' builds load
            // the CPUs, and the ledger then leaves up to a few % of wait unnamed.
            assert!(j.parts_ns.contains_key("blocked"), "run {} job {}: {:?}", run.id, j.index, j.parts_ns);
            assert!(
                j.closure_error.abs() < 0.05,
                "run {} job {}: closure {:.4} {:?}",
                run.id,
                j.index,
                j.closure_error,
                j.parts_ns
            );
        }
    }
}

#[test]
fn a_short_experiment_runs_every_scenario_checks_every_job_and_decomposes_the_slowdown() {
    if programs_missing() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("exp.json");
    let o = vmmtrace()
        .args(["experiment", "--env", "host", "--cpus", "0,1", "--repeat", "2", "--scale", "0.04", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let r = load(&out);
    assert!(r.complete);
    // 2 workloads x (warm-up + 2 jobs counts x 2 pinnings x 2 repeats).
    assert_eq!(r.runs.len(), 2 * (1 + 2 * 2 * 2));
    assert_runs_sound(&r, d.path());
    assert_eq!(r.references.len(), 1, "GNU Go's reference answer: {:?}", r.references.keys());
    // Four scenarios per workload, three of them compared with 1 job unpinned, whose
    // parts' changes add up to the slowdown.
    assert_eq!(r.summary.len(), 8);
    for s in &r.summary {
        assert_eq!(s.wall_s.n, 2 * s.scenario.jobs, "{:?}", s.scenario);
        match &s.slowdown {
            None => assert_eq!((s.scenario.jobs, s.scenario.pinning), (1, vmmtrace::experiment::Pinning::None)),
            Some(d) => assert!((d.parts_pp.values().sum::<f64>() - d.pct).abs() < 1e-6, "{d:?}"),
        }
    }
    // Two jobs on two CPUs: with pinning, each job's CPU is its own, and the other
    // job never appears as a thief of a pinned job.
    for run in r.runs.iter().filter(|r| r.scenario.pinning != vmmtrace::experiment::Pinning::None) {
        for j in &run.jobs {
            let other_jobs: u64 = j.parts_ns.get("runq_wait.other_jobs").copied().unwrap_or(0);
            assert!(other_jobs < j.wall_ns / 100, "run {} job {}: {:?}", run.id, j.index, j.parts_ns);
        }
    }
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("+1.28 % Linux") && table.contains("gobmk"), "{table}");
    // `report` prints the same table from the file.
    let again = vmmtrace().arg("report").arg(&out).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout), table);
}

#[test]
fn an_interrupted_experiment_keeps_its_finished_runs_and_resumes_to_the_end() {
    if programs_missing() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("exp.json");
    let args = ["experiment", "--env", "host", "--workload", "bzip2", "--repeat", "2", "--scale", "0.1", "-o"];
    let mut child = vmmtrace().args(args).arg(&out).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Interrupt once two runs have finished: the third is in progress.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut finished = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("run ") {
            finished += 1;
            if finished == 2 {
                break;
            }
        }
    }
    assert_eq!(finished, 2, "the experiment ended before two runs");
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let part = load(&out);
    assert!(!part.complete);
    assert!(part.runs.len() >= 2 && part.runs.len() < part.plan.len(), "{} runs", part.runs.len());
    assert!(rest.iter().any(|l| l.contains("--resume")), "{rest:?}");
    // No job of the interrupted run is left running.
    let work = format!("vmmtrace-experiment.{}", child.id());
    let leftover = Command::new("pgrep").args(["-f", &work]).output().unwrap();
    assert!(leftover.stdout.is_empty(), "{}", String::from_utf8_lossy(&leftover.stdout));
    assert!(!Path::new("/dev/shm").join(&work).exists(), "the work directory is removed");

    // Without --resume the unfinished result is not overwritten.
    let refused = vmmtrace().args(args).arg(&out).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    let o = vmmtrace().args(args).arg(&out).arg("--resume").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = load(&out);
    assert!(full.complete);
    assert_eq!(full.runs[..part.runs.len()], part.runs[..], "the finished runs are kept as they were");
    let mut ids: Vec<usize> = full.runs.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, (0..full.plan.len()).collect::<Vec<_>>(), "every planned run exactly once");
    assert_runs_sound(&full, d.path());
}

#[test]
fn in_the_micro_vm_each_job_runs_the_real_program_as_a_guest_and_its_vcpu_time_is_accounted() {
    if programs_missing() || !Path::new("/dev/kvm").exists() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("exp.json");
    let o = vmmtrace()
        .args(["experiment", "--env", "microvm", "--cpus", "0,1", "--repeat", "1", "--scale", "0.04", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    if stderr.contains("which this build lacks") {
        eprintln!("skipped: {stderr}");
        return;
    }
    assert!(o.status.success(), "{stderr}");
    let r = load(&out);
    assert!(r.complete);
    // 2 workloads x (warm-up + 2 job counts x 3 pinnings).
    assert_eq!(r.runs.len(), 2 * (1 + 2 * 3));
    for run in &r.runs {
        for j in &run.jobs {
            assert_eq!(j.check_error, None, "run {} job {}", run.id, j.index);
            let kvm_run = j.parts_ns.get("on_cpu.kvm_run").or(j.parts_ns.get("on_cpu.guest")).copied().unwrap_or(0);
            assert!(kvm_run > 0, "run {} job {}: {:?}", run.id, j.index, j.parts_ns);
            assert!(j.parts_ns.contains_key("vm_setup"), "{:?}", j.parts_ns);
            assert!(j.parts_sum_ns() as f64 <= j.wall_ns as f64 * 1.005, "run {} job {}: {j:?}", run.id, j.index);
        }
    }
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/experiment.json")
}

/// `report RESULT --out DIR` and `diagnose RESULT [--json]` on a result recorded here.
#[test]
fn report_draws_and_diagnose_reads_an_experiment_result() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("charts");
    let o = vmmtrace().arg("report").arg(fixture()).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("experiment_slowdown.svg") && stdout.contains("index.html"), "{stdout}");
    for f in ["experiment_slowdown.svg", "experiment_slowdown.png", "index.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let o = vmmtrace().arg("diagnose").arg(fixture()).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("1. host ") && text.contains("Remedy:"), "{text}");
    let o = vmmtrace().args(["diagnose", "--json"]).arg(fixture()).output().unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = findings.as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "n_jobs_slowdown").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "pinning_effect").count(), 4, "{kinds:?}");
}

/// `--env vm`: each job runs in "the user's VM", here a real QEMU emulating (TCG: this
/// host has no /dev/kvm at times) that the job's command starts under the name the
/// experiment is given (`vmmtrace qemu --name vmN --accel tcg -- PROGRAM`, the
/// program's system calls served from the host). vmmtrace finds each VM's threads by
/// that name, pins its vCPU thread ("CPU 0/TCG") to the job's CPU, and accounts the
/// job from the vCPU threads' time.
#[test]
fn with_env_vm_each_job_runs_in_the_vm_of_its_name_whose_vcpu_is_found_and_pinned() {
    if programs_missing() {
        return;
    }
    if vmmtrace::record::resolve_command("qemu-system-x86_64").is_err() {
        eprintln!("skipped: needs qemu-system-x86_64 (apt-get install qemu-system-x86)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("exp.json");
    let exe = env!("CARGO_BIN_EXE_vmmtrace");
    let vm = |n: usize| format!("vm{n}={exe} qemu --accel tcg --mem 256M --name vm{n} --");
    let o = vmmtrace()
        .args(["experiment", "--env", "vm", "--vm", &vm(0), "--vm", &vm(1), "--workload", "bzip2"])
        .args(["--cpus", "0,1", "--repeat", "1", "--scale", "0.01", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = load(&out);
    assert!(r.complete);
    assert_eq!(r.runs.len(), 1 + 2 * 3, "warm-up + 2 job counts x 3 pinnings");
    for run in &r.runs {
        let report = Report::from_json(&std::fs::read_to_string(d.path().join(&run.report)).unwrap()).unwrap();
        for j in &run.jobs {
            let at = format!("run {} ({}) job {}", run.id, run.scenario.label(), j.index);
            assert_eq!(j.check_error, None, "{at}");
            // The command's process on the host, then the VM's QEMU processes (one per
            // bzip2 step), found by the name the job's VM was given.
            assert!(j.pids.len() >= 3, "{at}: {:?}", j.pids);
            let vcpus: Vec<_> =
                report.threads.iter().filter(|t| j.pids.contains(&t.pid) && t.comm.starts_with("CPU ")).collect();
            assert_eq!(vcpus.len(), 2, "{at}: a vCPU thread per step");
            let on_cpu: u64 = vcpus.iter().map(|t| t.on_cpu_ns).sum();
            assert_eq!(j.parts_ns.get("on_cpu"), Some(&on_cpu), "{at}: the vCPUs' time is the job's CPU time");
            assert!(j.parts_ns.contains_key("vm_setup"), "{at}: {:?}", j.parts_ns);
            assert!(j.parts_sum_ns() <= j.wall_ns + j.wall_ns / 100, "{at}: {:?} > {}", j.parts_ns, j.wall_ns);
            let Some(cpu) = j.cpu else { continue };
            // Pinned by name: the vCPU threads ran on the job's CPU (but for the moments
            // before the pinner, which looks every 50 ms, found them).
            let elsewhere: u64 = vcpus
                .iter()
                .flat_map(|t| t.per_cpu_ns.iter().enumerate().filter(|(c, _)| *c != cpu as usize).map(|(_, ns)| ns))
                .sum();
            assert!(elsewhere < on_cpu / 10 + 100_000_000, "{at}: {elsewhere} ns of {on_cpu} off CPU {cpu}");
        }
    }
}
