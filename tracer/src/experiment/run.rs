//! Runs the plan: each run traced in process with the probes, its jobs started
//! together and timed by the runner's own stopwatch, checked after the run, and the
//! result file rewritten after every run. Ctrl-C (or SIGTERM) ends the run in
//! progress, which is discarded; every finished run stays in the result, and
//! `--resume` continues from there.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    account,
    decompose::summarize,
    env::{self, Launch},
    plan::{Env, Pinning, PlannedRun, Scenario, available_cpus, plan},
    result::{ExperimentConfig, ExperimentResult, HostSummary, JobResult, KernelTimes, RunResult, closure_error},
    table::run_line,
    user_vm::{self, UserVm},
    workloads::{self, Prepared, Step, Workload},
};
use crate::{
    host::Discovery,
    probe::{self, ProbeOptions, Probes},
    record::finish_listing,
    report,
};

#[derive(Clone, Debug)]
pub struct ExperimentOptions {
    pub config: ExperimentConfig,
    pub output: PathBuf,
    /// Continue the experiment already in `output`.
    pub resume: bool,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

/// How an experiment ended.
#[derive(Debug)]
pub struct Outcome {
    pub result: ExperimentResult,
    /// Stopped by Ctrl-C or SIGTERM before the plan was done.
    pub interrupted: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag that the runner checks; the jobs (in the terminal's
/// process group) get Ctrl-C themselves.
fn install_signal_handlers() {
    INTERRUPTED.store(false, Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Where each run's record report goes: `<output stem>.runs/` beside the result.
pub fn runs_dir(output: &Path) -> PathBuf {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "experiment".into());
    output.with_file_name(format!("{stem}.runs"))
}

fn host_summary() -> HostSummary {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    HostSummary {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        online_cpus: available_cpus().len(),
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The result to continue: a fresh one, or with `--resume` the one in `output`,
/// which must have been made with the same options.
fn start_or_resume(opts: &ExperimentOptions) -> anyhow::Result<ExperimentResult> {
    let out = &opts.output;
    if opts.resume {
        let r = ExperimentResult::load(out).context("--resume needs the result of an interrupted experiment")?;
        if r.config != opts.config {
            bail!(
                "{} was made with other options ({}); give the same options to resume it, or another --output",
                out.display(),
                serde_json::to_string(&r.config).unwrap_or_default()
            );
        }
        return Ok(r);
    }
    if let Ok(r) = ExperimentResult::load(out)
        && !r.complete
    {
        bail!(
            "{} holds an unfinished experiment ({} of {} runs): give --resume to continue it, or remove it",
            out.display(),
            r.runs.len(),
            r.plan.len()
        );
    }
    let plan = plan(&opts.config.plan)?;
    Ok(ExperimentResult {
        schema: super::result::SCHEMA.into(),
        started_unix_s: unix_now_s(),
        host: host_summary(),
        config: opts.config.clone(),
        plan,
        runs: Vec::new(),
        references: Default::default(),
        complete: false,
        summary: Vec::new(),
    })
}

/// Fails before anything runs if an environment cannot run here yet, or a program
/// is missing.
fn check_ready(cfg: &ExperimentConfig) -> anyhow::Result<()> {
    for e in &cfg.plan.envs {
        if let Some(why) = env::unavailable(e) {
            bail!("{why}");
        }
    }
    for &w in &cfg.plan.workloads {
        workloads::find_program(w)?;
    }
    super::check_user_vms(&cfg.plan.envs, &cfg.vm_commands, cfg.plan.cpus.len())?;
    if cfg.plan.envs.contains(&Env::Qemu) && !Path::new("/dev/kvm").exists() {
        log::warn!(
            "no /dev/kvm: QEMU will emulate the guests (TCG), so the qemu figures say nothing about KVM and take several times longer"
        );
    }
    Ok(())
}

/// A directory for the generated inputs and the jobs' outputs, in memory where
/// possible (so the jobs stay CPU-bound), removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<WorkDir> {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("vmmtrace-experiment.{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn reference_key(env: &Env, w: Workload) -> String {
    format!("{}/{}", env.name(), w.name())
}

/// Runs (or continues) the experiment; the result is on disk after every run.
pub fn run_experiment(opts: &ExperimentOptions) -> anyhow::Result<Outcome> {
    probe::check_privileges()?;
    report::check_writable(&opts.output)?;
    check_ready(&opts.config)?;
    let mut result = start_or_resume(opts)?;
    let runs_dir = runs_dir(&opts.output);
    std::fs::create_dir_all(&runs_dir).with_context(|| format!("cannot create {}", runs_dir.display()))?;
    let work = WorkDir::create()?;
    install_signal_handlers();
    let pending = result.pending();
    let bar = progress_bar(pending.len() as u64, result.runs.len() as u64, opts.progress);
    let mut prepared: HashMap<(Env, Workload), Prepared> = HashMap::new();
    let mut interrupted = false;
    for planned in pending {
        let s = &planned.scenario;
        bar.set_message(format!("{}{}", s.label(), if planned.is_warmup() { " (warm-up)" } else { "" }));
        let key = (s.env.clone(), s.workload);
        if !prepared.contains_key(&key) {
            let dir = work.0.join(format!("{}-{}", s.env.name(), s.workload.name()));
            let mut p = workloads::prepare(s.workload, opts.config.scale, opts.config.plan.seed, &dir)?;
            p.reference = result.references.get(&reference_key(&s.env, s.workload)).cloned();
            prepared.insert(key.clone(), p);
        }
        let p = prepared.get_mut(&key).expect("prepared above");
        let report_name = format!("run-{:03}.json", planned.id);
        let report_path = runs_dir.join(&report_name);
        let rel = Path::new(runs_dir.file_name().unwrap_or_default()).join(&report_name);
        let Some(mut run) = run_once(&planned, p, &opts.config, &report_path)? else {
            interrupted = true;
            break;
        };
        run.report = rel.to_string_lossy().into_owned();
        if planned.is_warmup()
            && let Some(e) = run.jobs.iter().find_map(|j| j.check_error.as_ref())
        {
            bail!("the warm-up run of {} failed its check: {e}", s.label());
        }
        if let Some(r) = &p.reference {
            result.references.insert(reference_key(&s.env, s.workload), r.clone());
        }
        let line = run_line(&run);
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        result.runs.push(run);
        result.complete = result.pending().is_empty();
        result.summary = summarize(&result.runs, opts.config.plan.cpus.len());
        report::write_atomic(&opts.output, &result.to_json())?;
        bar.inc(1);
        if INTERRUPTED.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
    }
    bar.finish_and_clear();
    result.summary = summarize(&result.runs, opts.config.plan.cpus.len());
    report::write_atomic(&opts.output, &result.to_json())?;
    Ok(Outcome { result, interrupted })
}

fn progress_bar(len: u64, done: u64, enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len + done);
    bar.set_position(done);
    bar.reset_eta();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} runs, ETA {eta} | {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// What the runner saw of one job.
struct JobRun {
    pids: Vec<u32>,
    wall_ns: u64,
    kernel: KernelTimes,
    /// A step that did not exit with 0: what happened.
    failure: Option<String>,
    /// VMs: how long the vCPUs ran, summed over the steps, by the VMMs' own clocks.
    vcpu_life_ns: Option<u64>,
    /// VMs: the kernel's counts for the vCPU threads, where the VMM reports them.
    kernel_vcpu: Option<KernelTimes>,
}

/// One traced run: Some(result), or None when it was interrupted (discarded).
fn run_once(
    planned: &PlannedRun,
    prepared: &mut Prepared,
    config: &ExperimentConfig,
    report_path: &Path,
) -> anyhow::Result<Option<RunResult>> {
    let s = &planned.scenario;
    let cpus = &config.plan.cpus[..];
    let user_vms: Vec<UserVm> = config
        .vm_commands
        .iter()
        .map(|(name, command)| UserVm { name: name.clone(), command: command.clone() })
        .collect();
    for i in 0..s.jobs {
        prepared.make_job_dir(i).context("cannot create a job's output directory")?;
    }
    let t_attach = Instant::now();
    let mut probes = Probes::attach(&ProbeOptions::default())?;
    let disc = Discovery::start();
    log::debug!("run {}: probes attached in {:?}", planned.id, t_attach.elapsed());
    let started_unix_s = unix_now_s();
    probes.start()?;
    let watch_fd = probes.watch_fd();
    let launches = launches(s, prepared, cpus, &user_vms)?;
    let (job_runs, vm_pids) = match s.env {
        Env::Vm => {
            let names: Vec<String> = user_vms.iter().take(s.jobs).map(|v| v.name.clone()).collect();
            user_vm::with_pinned_vms(&names, s.pinning, cpus, || run_jobs(&launches, watch_fd))
        }
        _ => (run_jobs(&launches, watch_fd), Vec::new()),
    };
    let t_finish = Instant::now();
    // Every (victim, thief) pair: a job's wait by its own VMM's threads is summed
    // from them.
    let report = finish_listing(probes, disc, started_unix_s, usize::MAX)?;
    log::debug!("run {}: trace finished in {:?}", planned.id, t_finish.elapsed());
    let Some(job_runs) = job_runs else { return Ok(None) };
    report::write_atomic(report_path, &serde_json::to_vec_pretty(&report)?)?;
    // A user's VM job's processes are its command's on the host and its VM's.
    let all_pids: Vec<Vec<u32>> = job_runs
        .iter()
        .enumerate()
        .map(|(i, j)| j.pids.iter().chain(vm_pids.get(i).into_iter().flatten()).copied().collect())
        .collect();
    let jobs = job_runs
        .into_iter()
        .enumerate()
        .map(|(i, mut jr)| {
            let others: Vec<u32> =
                all_pids.iter().enumerate().filter(|(k, _)| *k != i).flat_map(|(_, p)| p.iter().copied()).collect();
            let vm = (s.env == Env::Vm).then(|| (user_vms[i].name.as_str(), &vm_pids[i]));
            let (parts_ns, tids, vm_missing) = job_account(s, &report, &jr, &others, vm);
            let check = match (jr.failure.take(), vm_missing) {
                (Some(f), _) | (None, Some(f)) => Err(f),
                (None, None) => prepared.check(i),
            };
            let mut job =
                job_result(i, jr, check.err(), parts_ns, (s.pinning != Pinning::None).then(|| cpus[i % cpus.len()]));
            if s.env == Env::Vm {
                // The runner's process is the command on the host (ssh), not the VM:
                // its kernel counts are not the vCPUs'. The job's processes are both.
                job.kernel = None;
                job.pids.clone_from(&all_pids[i]);
            }
            job.thieves = account::top_thieves(&report, &tids);
            job
        })
        .collect();
    Ok(Some(RunResult {
        id: planned.id,
        scenario: s.clone(),
        repeat: planned.repeat,
        started_unix_s,
        trace_ns: report.wall_ns,
        report: String::new(),
        dropped_events: report.dropped_events,
        unavailable: report.host.features.unavailable.iter().map(|u| format!("{}: {}", u.probe, u.reason)).collect(),
        jobs,
    }))
}

/// How each step of each job starts.
fn launches(
    s: &Scenario,
    prepared: &Prepared,
    cpus: &[u32],
    user_vms: &[UserVm],
) -> anyhow::Result<Vec<Vec<(Launch, Step)>>> {
    let exe = std::env::current_exe().context("cannot find the vmmtrace executable (the micro-VM's VMM)")?;
    Ok((0..s.jobs)
        .map(|i| {
            let truth = |n: usize| prepared.job_file(i, &format!("truth-{n}.json"));
            prepared
                .steps(i)
                .into_iter()
                .enumerate()
                .map(|(n, st)| match s.env {
                    Env::Vm => user_vm::launch(&user_vms[i], &st, cpus),
                    _ => (env::launch(&s.env, &st, s.pinning, i, cpus, &exe, &truth(n)), st),
                })
                .collect()
        })
        .collect())
}

/// A job's account (its parts and the threads whose thieves are named) from the run's
/// report; `vm`: the user's VM the job ran in and the VMM processes found for it, and
/// then what is wrong if none was found.
fn job_account(
    s: &Scenario,
    report: &report::Report,
    jr: &JobRun,
    others: &[u32],
    vm: Option<(&str, &BTreeSet<u32>)>,
) -> (BTreeMap<String, u64>, BTreeSet<u32>, Option<String>) {
    match (&s.env, vm) {
        (Env::Host, _) => {
            (account::host_job_parts(report, &jr.pids, others), account::host_job_threads(report, &jr.pids), None)
        }
        (Env::Vm, Some((name, found))) => {
            let vm: Vec<u32> = found.iter().copied().collect();
            let own: Vec<u32> = jr.pids.iter().chain(&vm).copied().collect();
            let missing = vm.is_empty().then(|| format!(
                "VM '{name}' was not found on the host while its job ran: give the name QEMU's -name guest=NAME (or Firecracker's --id) gives it, or the name of the process standing in for it"
            ));
            (
                account::user_vm_job_parts(report, &vm, &own, others, jr.wall_ns),
                account::user_vm_vcpus(report, &vm),
                missing,
            )
        }
        _ => (
            account::vm_job_parts(report, &jr.pids, others, jr.vcpu_life_ns, jr.wall_ns),
            account::vm_job_vcpus(report, &jr.pids),
            None,
        ),
    }
}

fn job_result(
    index: usize,
    jr: JobRun,
    check_error: Option<String>,
    parts_ns: BTreeMap<String, u64>,
    cpu: Option<u32>,
) -> JobResult {
    let sum: u64 = parts_ns.values().sum();
    JobResult {
        index,
        cpu,
        closure_error: closure_error(sum, jr.wall_ns),
        pids: jr.pids,
        wall_ns: jr.wall_ns,
        check_error,
        parts_ns,
        // For a VM job, the process the runner started is the VMM: the kernel's counts
        // that compare with the vCPU's account are the vCPU thread's, if known.
        kernel: if jr.vcpu_life_ns.is_some() { jr.kernel_vcpu } else { Some(jr.kernel) },
        thieves: Vec::new(),
    }
}

/// Starts every job at once (a barrier), each on its own thread running its steps one
/// after the other; None if interrupted, after the jobs' processes are killed.
fn run_jobs(steps: &[Vec<(Launch, Step)>], watch_fd: i32) -> Option<Vec<JobRun>> {
    let live: Arc<Mutex<Vec<u32>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(steps.len()));
    let (tx, rx) = mpsc::channel::<(usize, JobRun)>();
    let mut out: Vec<Option<JobRun>> = (0..steps.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        for (i, job) in steps.iter().enumerate() {
            let (tx, live, barrier) = (tx.clone(), live.clone(), barrier.clone());
            scope.spawn(move || {
                barrier.wait();
                let _ = tx.send((i, run_job(job, watch_fd, &live)));
            });
        }
        drop(tx);
        let mut killed = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((i, jr)) => out[i] = Some(jr),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if INTERRUPTED.load(Ordering::SeqCst) && !killed {
                killed = true;
                for &pid in live.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    // SAFETY: kill(2) on a child that has not been reaped (the job
                    // thread removes it from `live` before reaping it).
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    });
    if INTERRUPTED.load(Ordering::SeqCst) {
        return None;
    }
    out.into_iter().collect()
}

/// Runs one job's steps in order; the stopwatch runs from the first start to the last
/// exit (before the reap, after which its /proc entry is gone).
fn run_job(steps: &[(Launch, Step)], watch_fd: i32, live: &Mutex<Vec<u32>>) -> JobRun {
    let mut jr = JobRun {
        pids: Vec::new(),
        wall_ns: 0,
        kernel: KernelTimes::default(),
        failure: None,
        vcpu_life_ns: None,
        kernel_vcpu: None,
    };
    let t0 = Instant::now();
    for (n, (launch, step)) in steps.iter().enumerate() {
        match run_step(launch, step, watch_fd, live) {
            Ok((pid, kernel, status)) => {
                jr.pids.push(pid);
                jr.kernel.on_cpu_ns += kernel.on_cpu_ns;
                jr.kernel.run_delay_ns += kernel.run_delay_ns;
                if !status.success() {
                    jr.failure = Some(format!("step {} ({}) ended with {status}", n + 1, launch.argv.join(" ")));
                }
            }
            Err(e) => jr.failure = Some(format!("step {} ({}): {e:#}", n + 1, launch.argv.join(" "))),
        }
        if jr.failure.is_some() {
            break;
        }
    }
    jr.wall_ns = t0.elapsed().as_nanos() as u64;
    let truths: Vec<String> =
        steps.iter().filter_map(|(l, _)| l.truth.as_ref().and_then(|t| std::fs::read_to_string(t).ok())).collect();
    if !truths.is_empty() {
        add_vm_truths(&mut jr, &truths);
    }
    jr
}

/// What the VMMs' ground truths add to a VM job: the vCPU's life, the VMM process
/// when it is not the one the runner started (QEMU under `vmmtrace qemu`), and the
/// kernel's counts for the vCPU thread in place of the wrapper's where given.
fn add_vm_truths(jr: &mut JobRun, truths: &[String]) {
    let mut kernel = Some(KernelTimes::default());
    for t in truths {
        if let Some(l) = account::vcpu_life_ns(t) {
            *jr.vcpu_life_ns.get_or_insert(0) += l;
        }
        if let Some(pid) = account::truth_pid(t)
            && !jr.pids.contains(&pid)
        {
            jr.pids.push(pid);
        }
        kernel = match (kernel, account::truth_vcpu_kernel_times(t)) {
            (Some(a), Some(b)) => Some(KernelTimes {
                on_cpu_ns: a.on_cpu_ns + b.on_cpu_ns,
                run_delay_ns: a.run_delay_ns + b.run_delay_ns,
            }),
            _ => None,
        };
    }
    jr.kernel_vcpu = kernel;
}

fn run_step(
    launch: &Launch,
    step: &Step,
    watch_fd: i32,
    live: &Mutex<Vec<u32>>,
) -> anyhow::Result<(u32, KernelTimes, std::process::ExitStatus)> {
    let stdin = match &step.stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
        None => Stdio::null(),
    };
    let stdout =
        std::fs::File::create(&step.stdout).with_context(|| format!("cannot create {}", step.stdout.display()))?;
    let mut cmd = std::process::Command::new(&launch.argv[0]);
    cmd.args(&launch.argv[1..]).stdin(stdin).stdout(stdout).stderr(Stdio::null());
    // The forked child is born where its parent runs, and runs there until pre_exec
    // pins it: born on another job's CPU, it would take that job's CPU for a moment.
    // So this job thread forks from the job's CPUs, then floats again (it must not
    // share the job's CPU when it wakes to read the kernel's counts at the job's exit).
    let floating = available_cpus();
    if !crate::sys::set_affinity(0, &launch.affinity) {
        bail!("cannot move the job's thread to CPUs {:?}", launch.affinity);
    }
    let mask = cpu_set(&launch.affinity);
    // SAFETY: between fork and exec the closure makes raw syscalls only (getpid, bpf,
    // sched_setaffinity) on data it owns.
    unsafe {
        cmd.pre_exec(move || {
            probe::watch_self_raw(watch_fd)?;
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &mask) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        let c = cmd.spawn().with_context(|| format!("cannot start {}", launch.argv[0]));
        crate::sys::set_affinity(0, &floating);
        let c = c?;
        l.push(c.id());
        c
    };
    let pid = child.id();
    wait_exited_keep_zombie(pid);
    let kernel = read_schedstat(pid);
    live.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
    let status = child.wait().context("waiting for a job")?;
    Ok((pid, kernel, status))
}

fn cpu_set(cpus: &[u32]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus.iter().filter(|&&c| (c as usize) < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c as usize, &mut set);
        }
        set
    }
}

/// Waits until `pid` has exited without reaping it, so that its /proc entry (and the
/// kernel's counts in it) can still be read.
fn wait_exited_keep_zombie(pid: u32) {
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child, writing into `info`.
        let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// On-CPU and run-queue wait of a process from /proc/PID/schedstat (ns).
fn read_schedstat(pid: u32) -> KernelTimes {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    KernelTimes { on_cpu_ns: it.next().unwrap_or(0), run_delay_ns: it.next().unwrap_or(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_go_beside_the_result() {
        assert_eq!(runs_dir(Path::new("/x/exp.json")), PathBuf::from("/x/exp.runs"));
        assert_eq!(runs_dir(Path::new("exp")), PathBuf::from("exp.runs"));
    }
}
