//! Loading and attaching the eBPF programs, feature detection with fallbacks, and
//! reading the raw counters out of the maps. No attribution happens here.
//!
//! `table.rs` says which tracepoints are used and what a missing one means;
//! `attach.rs` follows it ([`Probes::attach`]); `maps.rs` holds the typed map handles
//! and copies them into [`RawCounters`].

mod attach;
pub mod btf;
pub mod kallsyms;
pub mod kvm_btf;
mod maps;
pub mod privileges;
pub mod retire;
mod sched_by_tid;
pub mod table;
pub mod tracefs;

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::Ebpf;
use serde::{Deserialize, Serialize};
use tracer_common::{
    CpuState, ThreadCpuStats, ThreadInfo, Window, counter,
    kvm::{ExitStats, TidKey, VcpuState},
    ledger::{CpuHistory, PairKey, PairStats, ThreadSched},
};

pub use attach::{btf_pid_offset, kvm_btf_without_tracefs, sched_info_offsets};
pub use maps::watch_self_raw;
pub use privileges::check_privileges;

use crate::sys::{kick_cpus, monotonic_ns};

/// The eBPF object (built by `cargo xtask build-ebpf`, committed).
static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!("../../ebpf/tracer-ebpf.o");

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "missing capabilities: {missing}: run it as root, or `setcap {setcap} vmmtrace` (docs/user-guide.md, Least privilege)",
        setcap = privileges::SETCAP
    )]
    NotPrivileged { missing: String },
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF programs failed")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("reading the kernel's BTF for tp_btf:sched_switch failed")]
    KernelBtf(#[source] Box<aya::BtfError>),
    #[error("program {0} is missing from the eBPF object (rebuild it: cargo xtask build-ebpf)")]
    MissingProgram(&'static str),
    #[error("attaching {probe} failed")]
    Attach {
        probe: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {0} is missing from the eBPF object (rebuild it: cargo xtask build-ebpf)")]
    MissingMap(&'static str),
    #[error("reading or writing map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot learn the CPUs of this machine from {path}")]
    Cpus {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A probe that could not be used, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Unavailable {
    pub probe: String,
    pub reason: String,
}

/// Whether KVM_RUN time can be split into guest mode and exit handling: it can where
/// kvm_entry and kvm_exit are attached (and fire).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum KvmSplit {
    #[default]
    Available,
    /// Why not: "<probe> is not attached: <reason>".
    Unavailable(String),
}

/// Which probes are attached; goes into the report as `host.features`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Features {
    /// How sched_switch is traced: "tp_btf" or "tracepoint".
    pub sched_switch: String,
    pub attached: Vec<String>,
    pub unavailable: Vec<Unavailable>,
    /// Not in the report: its reason is already one of `unavailable`.
    #[serde(skip)]
    pub kvm_split: KvmSplit,
}

impl Features {
    /// Records a probe that could not be used.
    pub fn unavailable(&mut self, probe: impl Into<String>, reason: impl Into<String>) {
        self.unavailable.push(Unavailable { probe: probe.into(), reason: reason.into() });
    }
}

/// `ProbeOptions::max_threads` (and `record --max-threads`) unless told otherwise.
pub const DEFAULT_MAX_THREADS: u32 = 16384;

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Use the classic sched_switch tracepoint even where tp_btf works.
    pub classic_sched_switch: bool,
    /// Attach the KVM probes (ioctl KVM_RUN, kvm tracepoints).
    pub kvm: bool,
    /// Attach the kvm tracepoints as classic tracepoints even where their tp_btf
    /// programs could be used (for tests comparing the two paths, and `bench`).
    pub classic_kvm: bool,
    /// Capacity of the per-thread map.
    pub max_threads: u32,
    /// Period (ns) of the per-CPU cpu-clock samples that estimate guest time where
    /// kvm_entry/kvm_exit never fire; 0 = no sampling.
    pub guest_sample_period_ns: u64,
    /// Keep run-queue states and the preemption ledger (the sched_wakeup probes, and
    /// their part of sched_switch and sched_migrate_task).
    pub ledger: bool,
    /// With `ledger`: keep the run-queue states only, not the thieves (for `bench`).
    pub runq_only: bool,
    /// Keep the run-queue states in the hash even where `pid_max` allows the array
    /// by tid (for `bench` and the tests of the hash path).
    pub sched_in_hash: bool,
    /// With `ledger` and tp_btf: run the sched_wakeup program even where sched_switch
    /// can infer wakeups from the kernel's bookkeeping (for `bench` and tests).
    pub wakeup_probe: bool,
    /// Size of the timeline's ring buffer (a power of two, a multiple of the page
    /// size); 0 = no timeline (`record --timeline`).
    pub timeline_ring_bytes: u32,
}

impl ProbeOptions {
    /// The `LEDGER_ON` global for these options.
    pub fn ledger_level(&self) -> u32 {
        use tracer_common::ledger::level;
        match (self.ledger, self.runq_only) {
            (false, _) => level::OFF,
            (true, true) => level::RUN_QUEUE,
            (true, false) => level::FULL,
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            classic_sched_switch: false,
            kvm: true,
            classic_kvm: false,
            max_threads: DEFAULT_MAX_THREADS,
            guest_sample_period_ns: 1_000_000,
            ledger: true,
            runq_only: false,
            sched_in_hash: false,
            wakeup_probe: false,
            timeline_ring_bytes: 0,
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
    pub sched: HashMap<u32, ThreadSched>,
    /// Indexed by CPU id: its recent on-CPU intervals.
    pub cpu_history: Vec<CpuHistory>,
    /// (victim, thief) -> wait the thief took (the map and the CPUs' caches).
    pub ledger: BTreeMap<PairKey, PairStats>,
    /// Threads retired from the maps so far (their totals are in the fields above).
    pub retired_threads: u64,
    /// Retired threads whose tid a later thread took: not in the fields above (the
    /// later thread inherits nothing), each a row of its own in the report.
    pub earlier_threads: Vec<retire::RetiredThread>,
    /// How full the kernel maps were at this read.
    pub occupancy: retire::Occupancy,
}

impl RawCounters {
    pub fn dropped_events(&self) -> u64 {
        counter::DROPPED.iter().map(|&i| self.counters.get(i as usize).copied().unwrap_or(0)).sum()
    }

    /// Lost events by cause (`counter::DROPPED_NAMES`), the causes that occurred only.
    pub fn dropped_by_cause(&self) -> BTreeMap<String, u64> {
        counter::DROPPED
            .iter()
            .zip(counter::DROPPED_NAMES)
            .map(|(&i, name)| (name.to_string(), self.counters.get(i as usize).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Loaded and attached probes. Dropping this detaches everything.
pub struct Probes {
    /// Owns the programs and their attachments.
    ebpf: Ebpf,
    maps: maps::Maps,
    window: Window,
    pub features: Features,
    kvm_event_names: HashMap<u32, String>,
    nr_cpus: usize,
    online_cpus: Vec<u32>,
    guest_sample_period_ns: u64,
    /// The programs' load-time diagnostics (aya-log), forwarded to `log` at info.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Whether the programs stream the timeline (`ProbeOptions::timeline_ring_bytes`).
    timeline: bool,
    /// What threads retired from the maps left (added to every read).
    retired: retire::Retired,
}

impl Probes {
    /// Starts charging time: the trace window opens now.
    pub fn start(&mut self) -> Result<u64, ProbeError> {
        let flags = if self.timeline { tracer_common::window_flags::TIMELINE } else { 0 };
        self.window = Window { start_ns: monotonic_ns(), stop_ns: 0, flags };
        self.maps.set_window(self.window)?;
        Ok(self.window.start_ns)
    }

    /// Closes the trace window now, then runs a thread on every CPU so that each CPU
    /// has an event after the stop, which charges its last interval to the thread that
    /// was running at the stop.
    pub fn stop(&mut self) -> Result<u64, ProbeError> {
        self.window.stop_ns = monotonic_ns();
        self.maps.set_window(self.window)?;
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
    pub fn mark_in_kvm_run(&mut self, tids: &[u32]) {
        self.maps.mark_in_kvm_run(tids);
    }

    /// Marks running threads as workload (`serve --watch PID`); what they fork from
    /// now on is marked by the probes. Returns how many could not be marked (the WATCH
    /// map is full).
    pub fn watch(&mut self, tids: &[u32]) -> usize {
        self.maps.watch(tids)
    }

    /// (map name, capacity in entries) of the maps that grow with threads, VMs and
    /// (victim, thief) pairs.
    pub fn map_capacities(&self) -> Vec<(&'static str, u32)> {
        self.maps.capacities()
    }

    /// The WATCH map's fd, for a `Command::pre_exec` hook that makes the child mark
    /// itself as workload before it execs, so nothing it forks can escape (see
    /// [`watch_self_raw`]).
    pub fn watch_fd(&self) -> std::os::fd::RawFd {
        self.maps.watch_fd()
    }

    /// The timeline's ring buffer, once, when the options asked for a timeline. Its
    /// reader keeps it open after the probes are dropped, to drain the last records.
    pub fn take_timeline(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        if self.timeline { self.maps.take_timeline() } else { None }
    }

    /// Reads every map, with every thread retired so far added back: for reports.
    pub fn read(&self) -> Result<RawCounters, ProbeError> {
        let mut raw = self.read_maps()?;
        self.retired.merge_into(&mut raw);
        Ok(raw)
    }

    /// Reads every map, with only the threads the last [`Probes::retire_exited`]
    /// retired added back (`Retired::merge_recent_into`): for deltas between two
    /// such reads taken each right after a retire step (the live line, the
    /// timeline). Its size is bounded by the threads alive, not by every thread
    /// that ever exited.
    pub fn read_live(&self) -> Result<RawCounters, ProbeError> {
        let mut raw = self.read_maps()?;
        self.retired.merge_recent_into(&mut raw);
        Ok(raw)
    }

    fn read_maps(&self) -> Result<RawCounters, ProbeError> {
        let mut raw = RawCounters {
            window: self.window,
            nr_cpus: self.nr_cpus,
            online_cpus: self.online_cpus.clone(),
            kvm_event_names: self.kvm_event_names.clone(),
            guest_sample_period_ns: self.guest_sample_period_ns,
            ..Default::default()
        };
        self.maps.read_into(&mut raw)?;
        Ok(raw)
    }

    /// Reads only what host discovery needs (`vcpus` and `workload`; the rest is
    /// empty): for a discovery step between full reads.
    pub fn read_discovery_inputs(&self) -> Result<RawCounters, ProbeError> {
        let mut raw = RawCounters { window: self.window, nr_cpus: self.nr_cpus, ..Default::default() };
        self.maps.read_discovery_inputs(&mut raw)?;
        Ok(raw)
    }

    /// Retires the threads that exited and were switched out for the last time:
    /// their totals move from the kernel maps into this process (every later
    /// [`Probes::read`] still shows them), and their entries leave every map keyed
    /// by tid. Call it regularly (`record` does on each tick) so that the maps stay
    /// bounded on a host with process churn. Returns how many threads it retired.
    pub fn retire_exited(&mut self) -> Result<u64, ProbeError> {
        self.maps.retire(&mut self.retired)
    }

    /// What the threads retired so far left behind.
    pub fn retired(&self) -> &retire::Retired {
        &self.retired
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
