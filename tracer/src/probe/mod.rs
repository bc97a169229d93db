//! Loading and attaching the eBPF programs, feature detection with fallbacks, and
//! reading the raw counters out of the maps. No attribution happens here.

pub mod btf;
pub mod ledger;
pub mod tracefs;

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        BtfTracePoint, PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use serde::{Deserialize, Serialize};
use tracer_common::{
    CpuState, ThreadCpuStats, ThreadInfo, Window, counter, globals,
    kvm::{ExitStats, TidKey, VcpuState},
    tp_off,
};

/// The eBPF object (built by `cargo xtask build-ebpf`, committed).
static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!("../../ebpf/tracer-ebpf.o");

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    NotPrivileged(String),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("attaching {probe} failed: {reason}")]
    Attach { probe: String, reason: String },
    #[error("reading map {0}: {1}")]
    Map(&'static str, String),
    #[error("cannot learn the CPUs of this machine: {0}")]
    Cpus(String),
}

/// A probe that could not be used, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Unavailable {
    pub probe: String,
    pub reason: String,
}

/// Which probes are attached; goes into the report as `host.features`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Features {
    /// How sched_switch is traced: "tp_btf" or "tracepoint".
    pub sched_switch: String,
    pub attached: Vec<String>,
    pub unavailable: Vec<Unavailable>,
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Use the classic sched_switch tracepoint even where tp_btf works.
    pub classic_sched_switch: bool,
    /// Attach the KVM probes (ioctl KVM_RUN, kvm tracepoints).
    pub kvm: bool,
    /// Capacity of the per-thread map.
    pub max_threads: u32,
    /// Period (ns) of the per-CPU cpu-clock samples that estimate guest time where
    /// kvm_entry/kvm_exit never fire; 0 = no sampling.
    pub guest_sample_period_ns: u64,
    /// Keep run-queue states and the preemption ledger (sched_wakeup probes).
    pub ledger: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            classic_sched_switch: false,
            kvm: true,
            max_threads: 16384,
            guest_sample_period_ns: 1_000_000,
            ledger: true,
        }
    }
}

/// Everything the maps hold at one moment.
#[derive(Clone, Debug, Default)]
pub struct RawCounters {
    pub window: Window,
    /// Possible CPUs (the length of every per-CPU vector).
    pub nr_cpus: usize,
    pub online_cpus: Vec<u32>,
    pub cpus: Vec<CpuState>,
    /// tid -> per-CPU counters.
    pub threads: BTreeMap<u32, Vec<ThreadCpuStats>>,
    pub thread_info: HashMap<u32, ThreadInfo>,
    /// Workload tids (the traced command and everything it forked).
    pub workload: HashSet<u32>,
    /// `tracer_common::counter`, summed over CPUs.
    pub counters: Vec<u64>,
    pub vcpus: HashMap<u32, VcpuState>,
    pub exits: Vec<(TidKey, ExitStats)>,
    pub userspace_exits: Vec<(TidKey, u64)>,
    pub kvm_events: Vec<(TidKey, u64)>,
    /// Slot -> tracepoint name, for `kvm_events`.
    pub kvm_event_names: HashMap<u32, String>,
    /// (tid, SAMPLE_GUEST/SAMPLE_HOST_KVM) -> cpu-clock samples inside KVM_RUN.
    pub guest_samples: Vec<(TidKey, u64)>,
    /// Period of those samples (ns); 0 = not sampled.
    pub guest_sample_period_ns: u64,
    /// tid -> run-queue state and totals (empty without the ledger).
    pub sched: HashMap<u32, tracer_common::ledger::ThreadSched>,
    /// Indexed by CPU id: its recent on-CPU intervals.
    pub cpu_history: Vec<tracer_common::ledger::CpuHistory>,
    /// (victim, thief) -> wait the thief took.
    pub ledger: BTreeMap<tracer_common::ledger::PairKey, tracer_common::ledger::PairStats>,
}

impl RawCounters {
    pub fn dropped_events(&self) -> u64 {
        counter::DROPPED.iter().map(|&i| self.counters.get(i as usize).copied().unwrap_or(0)).sum()
    }
}

/// [start, end) of each named function in a /proc/kallsyms text (end = the next
/// symbol's address); (0, 0) for a name that is absent or whose address is hidden
/// (kptr_restrict).
pub fn symbol_ranges(kallsyms: &str, names: &[&str]) -> Vec<(u64, u64)> {
    let mut addrs: Vec<u64> = Vec::new();
    let mut found: HashMap<&str, u64> = HashMap::new();
    for line in kallsyms.lines() {
        let mut it = line.split_whitespace();
        let (Some(a), Some(_kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
        let Ok(a) = u64::from_str_radix(a, 16) else { continue };
        if a == 0 {
            continue;
        }
        addrs.push(a);
        if let Some(n) = names.iter().find(|n| **n == name) {
            found.entry(n).or_insert(a);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    names
        .iter()
        .map(|n| match found.get(n) {
            Some(&start) => {
                let i = addrs.partition_point(|&x| x <= start);
                (start, addrs.get(i).copied().unwrap_or(start + 1))
            }
            None => (0, 0),
        })
        .collect()
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Fails with a one-line reason unless this process may load tracing programs.
pub fn check_privileges() -> Result<(), ProbeError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(ProbeError::NotPrivileged(
        "vmmtrace needs root, or the capabilities CAP_BPF and CAP_PERFMON, to load its eBPF probes: run it with sudo"
            .into(),
    ))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Loaded and attached probes. Dropping this detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    config: Array<MapData, Window>,
    window: Window,
    pub features: Features,
    kvm_event_names: HashMap<u32, String>,
    nr_cpus: usize,
    online_cpus: Vec<u32>,
    guest_sample_period_ns: u64,
    /// The programs' load-time diagnostics (aya-log), forwarded to `log` at info.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// The KVM tracepoints with programs of their own (the program is named as the
/// tracepoint), and the record fields each program reads: (field, `tp_off` index).
const KVM_TRACEPOINTS: &[(&str, &str, &[(&str, usize)])] = &[
    ("syscalls", "sys_enter_ioctl", &[("cmd", tp_off::IOCTL_CMD)]),
    ("syscalls", "sys_exit_ioctl", &[]),
    ("kvm", "kvm_exit", &[("exit_reason", tp_off::KVM_EXIT_REASON), ("isa", tp_off::KVM_EXIT_ISA)]),
    ("kvm", "kvm_entry", &[]),
    ("kvm", "kvm_userspace_exit", &[("reason", tp_off::KVM_USERSPACE_EXIT_REASON)]),
];

/// The in-kernel KVM events counted per thread where kvm_entry/kvm_exit don't fire
/// (at most 8: the eBPF object has programs kvm_event_0..7).
pub const KVM_OTHER_EVENTS: &[(&str, &str)] = &[
    ("kvm", "kvm_pio"),
    ("kvm", "kvm_mmio"),
    ("kvm", "kvm_msr"),
    ("kvm", "kvm_apic_accept_irq"),
    ("kvm", "kvm_vcpu_wakeup"),
    ("kvm", "kvm_emulate_insn"),
    ("kvm", "kvm_eoi"),
    ("kvmmmu", "kvm_mmu_set_spte"),
];

impl Probes {
    /// Loads the programs and attaches them. Nothing is charged until [`Probes::start`].
    pub fn attach(opts: &ProbeOptions) -> Result<Probes, ProbeError> {
        check_privileges()?;
        let root = tracefs::tracefs_root()?;
        let mut features = Features::default();
        let mut offsets = [0u32; tp_off::COUNT];

        // Classic tracepoint layouts (needed for the sched_switch fallback, and for the
        // rarer events, which are always classic tracepoints).
        let sw = tracefs::read_format(&root, "sched", "sched_switch")?;
        offsets[tp_off::SWITCH_PREV_STATE] = sw.offset("sched_switch", "prev_state")?;
        offsets[tp_off::SWITCH_NEXT_PID] = sw.offset("sched_switch", "next_pid")?;
        let mig = tracefs::read_format(&root, "sched", "sched_migrate_task")?;
        offsets[tp_off::MIGRATE_PID] = mig.offset("sched_migrate_task", "pid")?;
        offsets[tp_off::MIGRATE_DEST_CPU] = mig.offset("sched_migrate_task", "dest_cpu")?;
        let wk = tracefs::read_format(&root, "sched", "sched_wakeup")?;
        offsets[tp_off::WAKEUP_PID] = wk.offset("sched_wakeup", "pid")?;
        let wkn = tracefs::read_format(&root, "sched", "sched_wakeup_new")?;
        offsets[tp_off::WAKEUP_NEW_PID] = wkn.offset("sched_wakeup_new", "pid")?;
        let fork = tracefs::read_format(&root, "sched", "sched_process_fork")?;
        offsets[tp_off::FORK_PARENT_PID] = fork.offset("sched_process_fork", "parent_pid")?;
        offsets[tp_off::FORK_CHILD_PID] = fork.offset("sched_process_fork", "child_pid")?;
        let rename = tracefs::read_format(&root, "task", "task_rename").ok();
        if let Some(r) = &rename {
            offsets[tp_off::RENAME_PID] = r.offset("task_rename", "pid")?;
            offsets[tp_off::RENAME_NEWCOMM] = r.offset("task_rename", "newcomm")?;
        }
        // KVM tracepoints whose layout is known: attached after the object is loaded.
        let mut kvm_usable: Vec<(&str, &str)> = Vec::new();
        if !opts.ledger {
            features.unavailable.push(Unavailable {
                probe: "sched:sched_wakeup, sched:sched_wakeup_new (run-queue wait and ledger)".into(),
                reason: "not requested (--no-ledger)".into(),
            });
        }
        if !opts.kvm {
            features.unavailable.push(Unavailable {
                probe: "syscalls:sys_enter_ioctl, kvm:*".into(),
                reason: "not requested (--no-kvm)".into(),
            });
        }
        if opts.kvm {
            for &(cat, name, fields) in KVM_TRACEPOINTS {
                match tracefs::read_format(&root, cat, name) {
                    Ok(f) => {
                        let mut ok = true;
                        for (field, idx) in fields {
                            match f.offset(name, field) {
                                Ok(o) => offsets[*idx] = o,
                                Err(e) => {
                                    features.unavailable.push(Unavailable { probe: format!("{cat}:{name}"), reason: e.to_string() });
                                    ok = false;
                                }
                            }
                        }
                        if ok {
                            kvm_usable.push((cat, name));
                        }
                    }
                    Err(e) => features.unavailable.push(Unavailable {
                        probe: format!("{cat}:{name}"),
                        reason: if cat == "kvm" {
                            "no kvm tracepoints on this kernel: is the kvm module loaded? (modprobe kvm_intel or kvm_amd)".into()
                        } else {
                            format!("{e} (kernel built without CONFIG_FTRACE_SYSCALLS?)")
                        },
                    }),
                }
            }
        }

        // tp_btf needs the kernel's BTF, the 5.18+ prototype, and task_struct.pid.
        let mut pid_offset = 0u32;
        let mut use_btf = !opts.classic_sched_switch;
        if use_btf {
            let why = match btf::Btf::from_sys_fs() {
                Err(e) => Some(format!("/sys/kernel/btf/vmlinux: {e} (kernel without CONFIG_DEBUG_INFO_BTF)")),
                Ok(Err(e)) => Some(e.to_string()),
                Ok(Ok(b)) => {
                    match (b.typedef_proto_params("btf_trace_sched_switch"), b.member_offset("task_struct", "pid")) {
                        (Ok(5), Ok(off)) => {
                            pid_offset = off;
                            None
                        }
                        (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
                        (Ok(n), Ok(_)) => {
                            Some(format!("sched_switch has {n} BTF arguments, expected 5 (kernel older than 5.18)"))
                        }
                    }
                }
            };
            if let Some(reason) = why {
                features.unavailable.push(Unavailable {
                    probe: "tp_btf:sched_switch".into(),
                    reason: format!("{reason}; using the classic tracepoint"),
                });
                use_btf = false;
            }
        } else {
            features.unavailable.push(Unavailable {
                probe: "tp_btf:sched_switch".into(),
                reason: "not requested (--classic-sched-switch)".into(),
            });
        }

        // Where host interrupts that arrived during guest execution are taken (for the
        // guest-time sampler).
        let mut guest_irq = [0u64; 2 * tracer_common::kvm::GUEST_IRQ_RANGES];
        if let Ok(text) = std::fs::read_to_string("/proc/kallsyms") {
            for (i, (s, e)) in symbol_ranges(&text, &tracer_common::kvm::GUEST_IRQ_FUNCTIONS).into_iter().enumerate() {
                guest_irq[2 * i] = s;
                guest_irq[2 * i + 1] = e;
            }
        }
        raise_memlock_limit();
        let nr_cpus = aya::util::nr_cpus().map_err(|(w, e)| ProbeError::Cpus(format!("{w}: {e}")))?;
        let online_cpus = aya::util::online_cpus().map_err(|(w, e)| ProbeError::Cpus(format!("{w}: {e}")))?;
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::TASK_PID_OFFSET, &pid_offset, true)
            .override_global(globals::TP_OFFSETS, &offsets, true)
            .override_global(globals::GUEST_IRQ_TEXT, &guest_irq, true)
            .override_global(globals::LEDGER_ON, &(opts.ledger as u32), true)
            .map_max_entries("THREAD_STATS", opts.max_threads)
            .map_max_entries("THREAD_INFO", opts.max_threads * 2)
            .map_max_entries("THREAD_SCHED", opts.max_threads * 2)
            .map_max_entries("CPU_HISTORY", nr_cpus as u32)
            .load(EBPF_OBJ)
            .map_err(|e| ProbeError::Load(chain(&e)))?;

        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("eBPF logger unavailable: {e}");
                None
            }
        };
        let kernel_btf =
            if use_btf { Some(aya::Btf::from_sys_fs().map_err(|e| ProbeError::Load(chain(&e)))?) } else { None };
        let btf_err =
            |e: &dyn std::error::Error| ProbeError::Attach { probe: "tp_btf:sched_switch".into(), reason: chain(e) };
        if let Some(kb) = &kernel_btf {
            let p: &mut BtfTracePoint = prog(&mut ebpf, "sched_switch_btf")?;
            p.load("sched_switch", kb).map_err(|e| btf_err(&e))?;
            p.attach().map_err(|e| btf_err(&e))?;
            features.sched_switch = "tp_btf".into();
            features.attached.push("tp_btf:sched_switch".into());
            let wakeups: &[(&str, &str)] = match opts.ledger {
                true => &[("sched_wakeup_btf", "sched_wakeup"), ("sched_wakeup_new_btf", "sched_wakeup_new")],
                false => &[],
            };
            for &(prog_name, tp) in wakeups {
                let e =
                    |e: &dyn std::error::Error| ProbeError::Attach { probe: format!("tp_btf:{tp}"), reason: chain(e) };
                let p: &mut BtfTracePoint = prog(&mut ebpf, prog_name)?;
                p.load(tp, kb).map_err(|x| e(&x))?;
                p.attach().map_err(|x| e(&x))?;
                features.attached.push(format!("tp_btf:{tp}"));
            }
        } else {
            attach_tp(&mut ebpf, "sched_switch_tp", &[("sched", "sched_switch")], &mut features)?;
            if opts.ledger {
                attach_tp(&mut ebpf, "sched_wakeup_tp", &[("sched", "sched_wakeup")], &mut features)?;
                attach_tp(&mut ebpf, "sched_wakeup_new_tp", &[("sched", "sched_wakeup_new")], &mut features)?;
            }
            features.sched_switch = "tracepoint".into();
        }
        attach_tp(&mut ebpf, "sched_migrate_task", &[("sched", "sched_migrate_task")], &mut features)?;
        attach_tp(&mut ebpf, "sched_process_fork", &[("sched", "sched_process_fork")], &mut features)?;
        attach_tp(&mut ebpf, "sched_process_exec", &[("sched", "sched_process_exec")], &mut features)?;
        if rename.is_some() {
            attach_tp(&mut ebpf, "task_rename", &[("task", "task_rename")], &mut features)?;
        }

        let mut kvm_event_names = HashMap::new();
        let mut guest_sample_period_ns = 0;
        if opts.kvm {
            for &(cat, name) in &kvm_usable {
                if let Err(e) = attach_tp(&mut ebpf, name, &[(cat, name)], &mut features) {
                    features.unavailable.push(Unavailable { probe: format!("{cat}:{name}"), reason: e.to_string() });
                }
            }
            if opts.guest_sample_period_ns > 0 {
                let r = (|| -> Result<(), aya::programs::ProgramError> {
                    let p: &mut PerfEvent =
                        ebpf.program_mut("guest_sample").ok_or(aya::programs::ProgramError::NotLoaded)?.try_into()?;
                    p.load()?;
                    for &cpu in &online_cpus {
                        p.attach(
                            PerfEventConfig::Software(SoftwareEvent::CpuClock),
                            PerfEventScope::AllProcessesOneCpu { cpu },
                            SamplePolicy::Period(opts.guest_sample_period_ns),
                            false,
                        )?;
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => {
                        features.attached.push(format!(
                            "perf_event:cpu-clock every {} ns (guest sampling)",
                            opts.guest_sample_period_ns
                        ));
                        guest_sample_period_ns = opts.guest_sample_period_ns;
                    }
                    Err(e) => features
                        .unavailable
                        .push(Unavailable { probe: "perf_event:cpu-clock (guest sampling)".into(), reason: chain(&e) }),
                }
            }
            for (slot, (cat, name)) in KVM_OTHER_EVENTS.iter().enumerate() {
                if let Err(e) = tracefs::read_format(&root, cat, name) {
                    features.unavailable.push(Unavailable { probe: format!("{cat}:{name}"), reason: e.to_string() });
                    continue;
                }
                let prog_name = format!("kvm_event_{slot}");
                match attach_tp(&mut ebpf, &prog_name, &[(cat, name)], &mut features) {
                    Ok(()) => {
                        kvm_event_names.insert(slot as u32, format!("{cat}:{name}"));
                    }
                    Err(e) => {
                        features.unavailable.push(Unavailable { probe: format!("{cat}:{name}"), reason: e.to_string() })
                    }
                }
            }
        }

        let config: Array<MapData, Window> =
            Array::try_from(ebpf.take_map("CONFIG").ok_or(ProbeError::Map("CONFIG", "missing".into()))?)
                .map_err(|e| ProbeError::Map("CONFIG", chain(&e)))?;
        Ok(Probes {
            ebpf,
            config,
            window: Window::default(),
            features,
            kvm_event_names,
            nr_cpus,
            online_cpus,
            guest_sample_period_ns,
            logger,
        })
    }

    /// Starts charging time: the trace window opens now.
    pub fn start(&mut self) -> Result<u64, ProbeError> {
        self.window = Window { start_ns: monotonic_ns(), stop_ns: 0 };
        self.config.set(0, self.window, 0).map_err(|e| ProbeError::Map("CONFIG", chain(&e)))?;
        Ok(self.window.start_ns)
    }

    /// Closes the trace window now, then runs a thread on every CPU so that each CPU
    /// has an event after the stop, which charges its last interval to the thread that
    /// was running at the stop.
    pub fn stop(&mut self) -> Result<u64, ProbeError> {
        self.window.stop_ns = monotonic_ns();
        self.config.set(0, self.window, 0).map_err(|e| ProbeError::Map("CONFIG", chain(&e)))?;
        kick_cpus(&self.online_cpus);
        self.flush_log();
        Ok(self.window.stop_ns)
    }

    /// Forwards what the programs logged (once per CPU when they first fire) to the
    /// `log` crate: shown with RUST_LOG=info.
    pub fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Marks threads that are inside ioctl(KVM_RUN) right now (they entered it before
    /// the probes were attached), so that their time counts as inside KVM_RUN until
    /// they return. Threads already known to the probes are left alone.
    pub fn mark_in_kvm_run(&mut self, tids: &[u32]) -> Result<(), ProbeError> {
        let mut m: BpfHashMap<_, u32, VcpuState> = BpfHashMap::try_from(
            self.ebpf.map_mut("VCPU_STATE").ok_or(ProbeError::Map("VCPU_STATE", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("VCPU_STATE", chain(&e)))?;
        for &tid in tids {
            let mut v = VcpuState::default();
            v.on_run_enter();
            // BPF_NOEXIST: a thread the probes already saw keeps its state.
            let _ = m.insert(tid, v, 1);
        }
        Ok(())
    }

    /// A hook for `Command::pre_exec` that makes the child mark itself as workload
    /// before it execs, so nothing it forks can escape (see [`watch_self_raw`]).
    pub fn watch_fd(&self) -> Result<std::os::fd::RawFd, ProbeError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let m = self.ebpf.map("WATCH").ok_or(ProbeError::Map("WATCH", "missing".into()))?;
        let fd = match m {
            aya::maps::Map::HashMap(d) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(ProbeError::Map("WATCH", "not a hash map".into())),
        };
        Ok(fd)
    }

    /// Reads every map.
    pub fn read(&self) -> Result<RawCounters, ProbeError> {
        let map =
            |name: &'static str| self.ebpf.map(name).ok_or(ProbeError::Map(name, "missing from the object".into()));
        let err = |name: &'static str| move |e: aya::maps::MapError| ProbeError::Map(name, chain(&e));
        let mut raw = RawCounters {
            window: self.window,
            nr_cpus: self.nr_cpus,
            online_cpus: self.online_cpus.clone(),
            kvm_event_names: self.kvm_event_names.clone(),
            guest_sample_period_ns: self.guest_sample_period_ns,
            ..Default::default()
        };

        let cpu: PerCpuArray<_, CpuState> = PerCpuArray::try_from(map("CPU_STATE")?).map_err(err("CPU_STATE"))?;
        raw.cpus = cpu.get(&0, 0).map_err(err("CPU_STATE"))?.to_vec();

        let stats: PerCpuHashMap<_, u32, ThreadCpuStats> =
            PerCpuHashMap::try_from(map("THREAD_STATS")?).map_err(err("THREAD_STATS"))?;
        for item in stats.iter() {
            let (tid, vals) = item.map_err(err("THREAD_STATS"))?;
            raw.threads.insert(tid, vals.to_vec());
        }
        let info: BpfHashMap<_, u32, ThreadInfo> =
            BpfHashMap::try_from(map("THREAD_INFO")?).map_err(err("THREAD_INFO"))?;
        for item in info.iter() {
            let (tid, i) = item.map_err(err("THREAD_INFO"))?;
            raw.thread_info.insert(tid, i);
        }
        let watch: BpfHashMap<_, u32, u32> = BpfHashMap::try_from(map("WATCH")?).map_err(err("WATCH"))?;
        for item in watch.keys() {
            raw.workload.insert(item.map_err(err("WATCH"))?);
        }
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map("COUNTERS")?).map_err(err("COUNTERS"))?;
        for i in 0..counter::COUNT {
            raw.counters.push(counters.get(&i, 0).map_err(err("COUNTERS"))?.iter().sum());
        }
        let vcpus: BpfHashMap<_, u32, VcpuState> =
            BpfHashMap::try_from(map("VCPU_STATE")?).map_err(err("VCPU_STATE"))?;
        for item in vcpus.iter() {
            let (tid, v) = item.map_err(err("VCPU_STATE"))?;
            raw.vcpus.insert(tid, v);
        }
        let exits: BpfHashMap<_, TidKey, ExitStats> =
            BpfHashMap::try_from(map("VCPU_EXITS")?).map_err(err("VCPU_EXITS"))?;
        for item in exits.iter() {
            raw.exits.push(item.map_err(err("VCPU_EXITS"))?);
        }
        for (name, dst) in [
            ("USERSPACE_EXITS", &mut raw.userspace_exits),
            ("KVM_EVENTS", &mut raw.kvm_events),
            ("GUEST_SAMPLES", &mut raw.guest_samples),
        ] {
            let m: BpfHashMap<_, TidKey, u64> = BpfHashMap::try_from(map(name)?).map_err(err("KVM maps"))?;
            for item in m.iter() {
                dst.push(item.map_err(err("KVM maps"))?);
            }
        }
        ledger::read(&self.ebpf, &mut raw)?;
        Ok(raw)
    }

    /// The kernel's run statistics of each attached program (run_cnt, run_time_ns;
    /// zero unless `kernel.bpf_stats_enabled` is 1).
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for (name, p) in self.ebpf.programs() {
            if let Ok(info) = p.info() {
                out.push((name.to_string(), info.run_count(), info.run_time().as_nanos() as u64));
            }
        }
        out.sort();
        out
    }
}

/// Inserts the calling process's pid into the WATCH map whose fd is `map_fd`, with
/// nothing but raw syscalls: safe to call between fork and exec.
pub fn watch_self_raw(map_fd: std::os::fd::RawFd) -> std::io::Result<()> {
    #[repr(C)]
    struct UpdateAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    // SAFETY: getpid has no preconditions.
    let key: u32 = unsafe { libc::getpid() } as u32;
    let value: u32 = 1;
    let attr = UpdateAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: bpf(BPF_MAP_UPDATE_ELEM) reads `attr` and the key/value it points to,
    // all alive on this stack for the duration of the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, &attr as *const UpdateAttr, std::mem::size_of::<UpdateAttr>())
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p =
        ebpf.program_mut(name).ok_or_else(|| ProbeError::Load(format!("program {name} missing from the object")))?;
    p.try_into().map_err(|e: aya::programs::ProgramError| ProbeError::Load(chain(&e)))
}

/// Loads a classic tracepoint program and attaches it to each of `tps`.
fn attach_tp(ebpf: &mut Ebpf, name: &str, tps: &[(&str, &str)], features: &mut Features) -> Result<(), ProbeError> {
    let p: &mut TracePoint = prog(ebpf, name)?;
    p.load().map_err(|e| ProbeError::Attach { probe: name.into(), reason: chain(&e) })?;
    for (cat, tp) in tps {
        match p.attach(cat, tp) {
            Ok(_) => features.attached.push(format!("tracepoint:{cat}:{tp}")),
            Err(e) if tps.len() > 1 => {
                features.unavailable.push(Unavailable { probe: format!("{cat}:{tp}"), reason: chain(&e) })
            }
            Err(e) => return Err(ProbeError::Attach { probe: format!("{cat}:{tp}"), reason: chain(&e) }),
        }
    }
    Ok(())
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Runs a short-lived thread on each CPU in turn, ending where it started, so that
/// every CPU switches at least once from now on.
pub fn kick_cpus(cpus: &[u32]) {
    let cpus = cpus.to_vec();
    let _ = std::thread::Builder::new()
        .name("vmmtrace-kick".into())
        .spawn(move || {
            // SAFETY: sched_getcpu has no preconditions.
            let here = unsafe { libc::sched_getcpu() };
            let mut order: Vec<u32> = cpus.iter().copied().filter(|&c| c as i32 != here).collect();
            if here >= 0 {
                order.push(here as u32);
            }
            for cpu in order {
                set_affinity(0, &[cpu]);
            }
        })
        .map(|h| h.join());
}

/// sched_setaffinity(tid, cpus); false when the kernel refuses.
pub fn set_affinity(tid: u32, cpus: &[u32]) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if (c as usize) < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c as usize, &mut set);
            }
        }
        libc::sched_setaffinity(tid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        use crate::record::in_kvm_run;
        assert!(in_kvm_run("16 0x5 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f12"));
        assert!(in_kvm_run("running"));
        assert!(!in_kvm_run("16 0x5 0xae9a 0x0 0x0 0x0 0x0 0x7ffd 0x7f12")); // another ioctl
        assert!(!in_kvm_run("202 0x55576e1cf3b8 0x89 0xffffffff 0x7ff")); // futex
        assert!(!in_kvm_run("-1 0x7ffd 0x7f12"));
        assert!(!in_kvm_run(""));
    }

    #[test]
    fn symbol_ranges_end_at_the_next_symbol() {
        let text = "ffffffff821f1ab0 T pvm_do_event_irqoff\nffffffff821f1aa0 T __pfx_pvm_do_event_irqoff\n\
ffffffff821f1ae0 T __pvm_enter_tramp\n0000000000000000 T hidden\nffffffff81000000 t other [kvm]\n";
        let r = symbol_ranges(text, &["pvm_do_event_irqoff", "vmx_do_interrupt_irqoff", "hidden"]);
        assert_eq!(r, vec![(0xffffffff821f1ab0, 0xffffffff821f1ae0), (0, 0), (0, 0)]);
    }

    #[test]
    fn this_kernel_has_a_guest_irq_handoff() {
        // PVM here (pvm_do_event_irqoff), VMX elsewhere: at least one must resolve.
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let r = symbol_ranges(&text, &tracer_common::kvm::GUEST_IRQ_FUNCTIONS);
        assert!(r.iter().any(|(s, e)| *s != 0 && e > s), "{r:x?}");
    }
}
