//! `vmmtrace record`: attach to the whole host, optionally around a command, show a
//! live summary, and write the report at the end (also on Ctrl-C or SIGTERM).

use std::{
    collections::HashMap,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use std::collections::{BTreeMap, HashSet};

use crate::{
    account::{self, ThreadMeta},
    host::{HostSnapshot, Role, registry::Registry},
    probe::{self, ProbeOptions, Probes, RawCounters},
    report::{self, CommandInfo, HostInfo, Report},
};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub duration: Option<Duration>,
    pub output: PathBuf,
    pub command: Vec<String>,
    /// Live summary interval; None = no live summary.
    pub live_interval: Option<Duration>,
    pub probe: ProbeOptions,
    /// (victim, thief) pairs to list in the report's ledger.
    pub ledger_top: usize,
}

#[derive(Debug)]
pub struct RecordOutcome {
    pub report: Report,
    /// What vmmtrace should exit with: the command's exit code, 128+signal if it was
    /// killed, 130 if interrupted, else 0.
    pub exit_code: i32,
    pub interrupted: bool,
}

/// Why the trace ended.
enum End {
    Duration,
    CommandExited(std::process::ExitStatus),
    Signal(i32),
}

/// Finds `program` on PATH (or as a path), so a typo fails before tracing starts.
pub fn resolve_command(program: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    for c in candidates {
        if let Ok(m) = std::fs::metadata(&c) {
            use std::os::unix::fs::PermissionsExt as _;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(c);
            }
        }
    }
    bail!("command not found: {program} (give a program on PATH or a path to an executable)")
}

/// Starts the command; the child marks itself as workload (in the probes' WATCH map)
/// before it execs, so everything it forks is known to be workload.
fn spawn_watched(argv: &[String], watch_fd: std::os::fd::RawFd) -> anyhow::Result<tokio::process::Child> {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closure only makes raw syscalls (getpid, bpf) between fork and exec.
    unsafe {
        cmd.pre_exec(move || probe::watch_self_raw(watch_fd));
    }
    tokio::process::Command::from(cmd).spawn().with_context(|| format!("cannot start {}", argv[0]))
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Guest time of a thread as the kernel accounts it (field 43 of stat), in ticks.
fn gtime_ticks(pid: u32, tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    crate::host::parse_stat(&stat).ok()?.guest_time_ticks
}

/// Whether a /proc/<pid>/task/<tid>/syscall line shows a thread inside KVM_RUN
/// (or running, for a vCPU thread).
pub fn in_kvm_run(syscall_line: &str) -> bool {
    let mut it = syscall_line.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some("running"), _, _) => true,
        (Some("16"), Some(_fd), Some(cmd)) => u64::from_str_radix(cmd.trim_start_matches("0x"), 16) == Ok(0xae80),
        _ => false,
    }
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { 1_000_000_000 / hz as u64 } else { 10_000_000 }
}

/// Host discovery over the whole trace: a snapshot at the start, one per second, one
/// at the end, merged; and guest time (gtime) of vCPU threads at the start and as last
/// seen.
pub struct Discovery {
    pub registry: Registry,
    gtime_start: HashMap<u32, u64>,
    gtime_last: HashMap<u32, u64>,
}

impl Discovery {
    pub fn start() -> Discovery {
        let mut d =
            Discovery { registry: Registry::default(), gtime_start: HashMap::new(), gtime_last: HashMap::new() };
        if let Ok(s) = HostSnapshot::discover(&HashSet::new(), &HashSet::new()) {
            d.registry.merge(s);
        }
        d.gtime_start = d.vcpu_gtimes();
        d
    }

    /// Guest time (ticks) of every known vCPU thread still alive.
    fn vcpu_gtimes(&self) -> HashMap<u32, u64> {
        let mut out = HashMap::new();
        for vm in self.registry.vms.values() {
            for &tid in &vm.vcpus {
                if let Some(g) = gtime_ticks(vm.pid, tid) {
                    out.insert(tid, g);
                }
            }
        }
        out
    }

    /// vCPU threads that are inside ioctl(KVM_RUN) now: /proc/<pid>/task/<tid>/syscall
    /// shows ioctl (16 on x86_64) with KVM_RUN (0xae80) while the thread waits in
    /// the kernel, or "running" while it runs (a vCPU thread runs inside KVM_RUN nearly
    /// all the time).
    pub fn vcpus_in_kvm_run(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for vm in self.registry.vms.values() {
            for &tid in &vm.vcpus {
                let Ok(s) = std::fs::read_to_string(format!("/proc/{}/task/{tid}/syscall", vm.pid)) else { continue };
                if in_kvm_run(&s) {
                    out.push(tid);
                }
            }
        }
        out
    }

    /// Takes a snapshot, with what the probes know so far.
    pub fn observe(&mut self, raw: &RawCounters) {
        let kvm: HashSet<u32> = raw.vcpus.keys().copied().collect();
        if let Ok(s) = HostSnapshot::discover(&kvm, &raw.workload) {
            self.registry.merge(s);
        }
        // Threads that exited keep their last reading.
        let now = self.vcpu_gtimes();
        self.gtime_last.extend(now);
    }

    /// Guest time (ns) each vCPU thread accumulated in the window, where known.
    fn gtime_ns(&self) -> BTreeMap<u32, u64> {
        let t = tick_ns();
        self.gtime_last
            .iter()
            .map(|(tid, last)| (*tid, last.saturating_sub(self.gtime_start.get(tid).copied().unwrap_or(0)) * t))
            .collect()
    }
}

/// What is known of each thread: identity from the probes, refreshed from discovery;
/// role from discovery, the workload set and the kernel-thread flag.
pub fn thread_meta<'a>(raw: &'a RawCounters, reg: &'a Registry) -> impl Fn(u32) -> ThreadMeta + 'a {
    move |tid| {
        let info = raw.thread_info.get(&tid);
        let pid = info.map(|i| i.tgid).unwrap_or(tid);
        let bpf_comm = info.map(|i| comm_str(&i.comm)).unwrap_or_default();
        let known = reg.threads.get(&tid).filter(|t| t.pid == pid);
        let comm = known.map(|t| t.comm.clone()).unwrap_or(bpf_comm);
        let (mut role, vcpu_index, vm) = reg.classify(tid, pid, &comm);
        if matches!(role, Role::Other) && (raw.workload.contains(&tid) || raw.workload.contains(&pid)) {
            role = Role::Workload;
        }
        ThreadMeta { pid, comm, role, vcpu_index, vm }
    }
}

fn comm_str(c: &[u8; 16]) -> String {
    String::from_utf8_lossy(c).trim_end_matches('\0').to_string()
}

pub fn host_info(features: probe::Features, online: usize) -> HostInfo {
    HostInfo {
        hostname: read_trim("/proc/sys/kernel/hostname").unwrap_or_default(),
        cpus: online,
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        features,
    }
}

/// Builds the report from the probes' final counters and what discovery learned.
pub fn build_report(
    mut raw: RawCounters,
    features: probe::Features,
    started_unix_s: u64,
    mut disc: Discovery,
    ledger_top: usize,
) -> Report {
    account::close_open_intervals(&mut raw);
    account::ledger::close_at_stop(&mut raw);
    disc.observe(&raw);
    let seen: BTreeMap<u32, (u32, String)> = raw
        .threads
        .keys()
        .filter_map(|tid| raw.thread_info.get(tid).map(|i| (*tid, (i.tgid, comm_str(&i.comm)))))
        .collect();
    let kvm_run_tids: HashSet<u32> = raw.vcpus.keys().copied().collect();
    disc.registry.add_unseen_vms(&kvm_run_tids, &seen);
    let meta = thread_meta(&raw, &disc.registry);
    let a = account::attribute(&raw, &meta);
    let entry_exit_unavailable = features
        .unavailable
        .iter()
        .find(|u| u.probe.ends_with("kvm_exit") || u.probe.ends_with("kvm_entry") || u.probe.contains("kvm:*"))
        .map(|u| format!("{} is not attached: {}", u.probe, u.reason));
    let gtime = disc.gtime_ns();
    let vm_list: Vec<_> = disc.registry.vms.values().cloned().collect();
    let vms = account::kvm::vms(
        &raw,
        &a.threads,
        &account::kvm::KvmInputs {
            vms: &vm_list,
            threads: &disc.registry.threads,
            gtime_ns: &gtime,
            tick_ns: tick_ns(),
            entry_exit_unavailable,
        },
    );
    let mut r = Report::from_attribution(&a, host_info(features, raw.online_cpus.len()), started_unix_s);
    r.vms = vms;
    if !raw.sched.is_empty() {
        for t in r.threads.iter_mut() {
            t.sched = raw.sched.get(&t.tid).and_then(|s| account::ledger::sched_report(s, t.on_cpu_ns, &raw));
        }
        account::ledger::fill_lost_to(&mut r.vms, &raw, &meta);
        r.ledger = Some(account::ledger::ledger_report(&raw, &meta, ledger_top));
    }
    r.dropped_events = raw.dropped_events();
    use tracer_common::counter as c;
    for (name, idx) in [
        ("sched_switch", c::SCHED_SWITCH),
        ("sched_migrate_task", c::SCHED_MIGRATE),
        ("sched_process_fork", c::SCHED_FORK),
        ("comm_update", c::COMM_UPDATE),
        ("kvm_run_enter", c::KVM_RUN_ENTER),
        ("kvm_run_exit", c::KVM_RUN_EXIT),
        ("kvm_entry", c::KVM_ENTRY),
        ("kvm_exit", c::KVM_EXIT),
        ("kvm_userspace_exit", c::KVM_USERSPACE_EXIT),
        ("kvm_other", c::KVM_OTHER),
        ("sched_wakeup", c::SCHED_WAKEUP),
        ("sched_wakeup_new", c::SCHED_WAKEUP_NEW),
        ("missed_switch", c::MISSED_SWITCH),
    ] {
        r.events.insert(name.into(), raw.counters.get(idx as usize).copied().unwrap_or(0));
    }
    r
}

/// (victim, thief) pairs listed in the report's ledger unless told otherwise.
pub const DEFAULT_LEDGER_TOP: usize = 200;

/// Ends the trace: closes the window, reads the counters, detaches the probes, and
/// builds the report.
pub fn finish(probes: Probes, disc: Discovery, started_unix_s: u64) -> Result<Report, probe::ProbeError> {
    finish_listing(probes, disc, started_unix_s, DEFAULT_LEDGER_TOP)
}

/// [`finish`], listing the `ledger_top` largest (victim, thief) pairs.
pub fn finish_listing(
    mut probes: Probes,
    disc: Discovery,
    started_unix_s: u64,
    ledger_top: usize,
) -> Result<Report, probe::ProbeError> {
    probes.stop()?;
    let raw = probes.read()?;
    let features = probes.features.clone();
    drop(probes);
    Ok(build_report(raw, features, started_unix_s, disc, ledger_top))
}

/// One line of live summary: elapsed, busy/idle split, guest vs hypervisor, top
/// threads, drops.
pub fn live_line(
    elapsed: Duration,
    before: &RawCounters,
    now: &RawCounters,
    interval_ns: u64,
    reg: &Registry,
) -> String {
    let ncpu = now.online_cpus.len().max(1) as f64;
    let deltas = account::on_cpu_delta(before, now);
    let total = interval_ns as f64 * ncpu;
    let idle: u64 = deltas.iter().filter(|(t, _)| *t == 0).map(|(_, d)| d).sum();
    let busy: u64 = deltas.iter().filter(|(t, _)| *t != 0).map(|(_, d)| d).sum();
    let mut s = format!(
        "[{:>5.0}s] busy {:>5.1}% idle {:>5.1}% |",
        elapsed.as_secs_f64(),
        100.0 * busy as f64 / total,
        100.0 * idle as f64 / total
    );
    if !reg.vms.is_empty() || !now.vcpus.is_empty() {
        let meta = thread_meta(now, reg);
        let mut vcpu = 0u64;
        let mut vmm = 0u64;
        for (tid, d) in deltas.iter().filter(|(t, _)| *t != 0) {
            match meta(*tid).role {
                Role::Vcpu => vcpu += d,
                Role::Vmm => vmm += d,
                _ => {}
            }
        }
        s.push_str(&format!(
            " vcpus {:.1}% vmm threads {:.1}% |",
            100.0 * vcpu as f64 / total,
            100.0 * vmm as f64 / total
        ));
    }
    for (tid, d) in deltas.iter().filter(|(t, _)| *t != 0).take(3) {
        let comm = now.thread_info.get(tid).map(|i| comm_str(&i.comm)).unwrap_or_else(|| "?".into());
        s.push_str(&format!(" {comm}[{tid}] {:.0}%", 100.0 * *d as f64 / interval_ns as f64));
    }
    if let Some((tid, ns)) = account::ledger::thieves_delta(before, now).first() {
        let comm = now.thread_info.get(tid).map(|i| comm_str(&i.comm)).unwrap_or_else(|| "?".into());
        s.push_str(&format!(" | top thief {comm}[{tid}] {:.1} ms", *ns as f64 / 1e6));
    }
    s.push_str(&format!(" | dropped {}", now.dropped_events()));
    s
}

/// A snapshot with every CPU's running interval charged up to now, for live use.
fn live_snapshot(probes: &Probes) -> anyhow::Result<RawCounters> {
    let mut raw = probes.read()?;
    raw.window.stop_ns = probe::monotonic_ns();
    account::close_open_intervals(&mut raw);
    Ok(raw)
}

pub async fn record(opts: RecordOptions) -> anyhow::Result<RecordOutcome> {
    probe::check_privileges()?;
    report::check_writable(&opts.output)?;
    if let Some(p) = opts.command.first() {
        resolve_command(p)?;
    }
    if opts.duration.is_none() && opts.command.is_empty() {
        eprintln!("vmmtrace: tracing until Ctrl-C (give --duration SECS or a command after -- to stop by itself)");
    }
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;

    let mut probes = Probes::attach(&opts.probe)?;
    let mut disc = Discovery::start();
    if opts.probe.kvm {
        probes.mark_in_kvm_run(&disc.vcpus_in_kvm_run())?;
    }
    let started_unix_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    probes.start()?;
    let t0 = Instant::now();

    let mut child = match opts.command.is_empty() {
        true => None,
        false => {
            let c = spawn_watched(&opts.command, probes.watch_fd()?)?;
            let pid = c.id().context("command exited before it started")?;
            Some((c, pid))
        }
    };

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    // Discovery runs every second even without live output, to see VMs that come and go.
    let interval = opts.live_interval.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last = live_snapshot(&probes)?;
    let mut last_print = Instant::now();
    let end = loop {
        let child_wait = async {
            match child.as_mut() {
                Some((c, _)) => c.wait().await,
                None => std::future::pending().await,
            }
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            st = child_wait => break End::CommandExited(st.context("waiting for the command")?),
            _ = sleep => break End::Duration,
            _ = sigint.recv() => break End::Signal(libc::SIGINT),
            _ = sigterm.recv() => break End::Signal(libc::SIGTERM),
            _ = ticker.tick() => {
                let now = live_snapshot(&probes)?;
                disc.observe(&now);
                if let Some(every) = opts.live_interval {
                    let due = last_print.elapsed() + interval / 2 >= every;
                    if due {
                        let ns = now.window.stop_ns.saturating_sub(last.window.stop_ns).max(1);
                        eprintln!("{}", live_line(t0.elapsed(), &last, &now, ns, &disc.registry));
                        last = now;
                        last_print = Instant::now();
                    }
                }
            }
        }
    };
    let mut report = finish_listing(probes, disc, started_unix_s, opts.ledger_top)?;
    let mut exit_code = 0;
    let mut interrupted = false;
    if let Some((mut c, pid)) = child {
        let status = match &end {
            End::CommandExited(st) => Some(*st),
            _ => {
                // The trace ended first: the command is stopped, so that vmmtrace's exit
                // reflects it and nothing is left running unseen.
                // SAFETY: kill(2) on the child's pid, which we have not reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                c.wait().await.ok()
            }
        };
        let (code, sig) = match status {
            Some(st) => (st.code(), st.signal()),
            None => (None, None),
        };
        exit_code = code.unwrap_or_else(|| 128 + sig.unwrap_or(0));
        report.command = Some(CommandInfo { argv: opts.command.clone(), pid, exit_code: code, signal: sig });
    }
    if let End::Signal(sig) = end {
        interrupted = true;
        if report.command.is_none() || exit_code == 0 {
            exit_code = 128 + sig;
        }
    }
    let json = serde_json::to_vec_pretty(&report)?;
    report::write_atomic(&opts.output, &json)?;
    Ok(RecordOutcome { report, exit_code, interrupted })
}
