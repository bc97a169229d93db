//! [`Probes::attach`]: the steps docs/design.md lists ("Probe loading, features and
//! fallbacks"), one function each, driven by the tables of `table.rs`.

use std::{collections::HashMap, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, PerfEvent, Program, ProgramError, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use tracer_common::{
    Window, globals,
    ledger::kfield,
    names::{map, program},
    tp_off,
};

use super::{
    EBPF_OBJ, Features, KvmSplit, ProbeError, ProbeOptions, Probes, btf, kallsyms,
    kvm_btf::KvmBtfPlan,
    maps::Maps,
    privileges::check_privileges,
    sched_by_tid,
    table::{
        EXIT_BTF, Group, KVM_EVENT_SLOTS, LEDGER_BTF, NO_KVM_PROBE, NO_LEDGER_PROBE, Need, TRACEPOINTS, TracepointRow,
        WAKELESS_PROBE,
    },
    tracefs::{self, TracefsError},
};
use crate::error::chain;

/// What the steps before loading learned.
#[derive(Default)]
struct Plan {
    features: Features,
    /// The `TP_OFFSETS` global.
    offsets: [u32; tp_off::COUNT],
    /// Rows whose layout is known, to attach once loaded (table order).
    usable: Vec<&'static TracepointRow>,
    /// `task_struct.pid` offset when tp_btf sched_switch is usable.
    btf_pid_offset: Option<u32>,
    /// The `SCHED_INFO_OFFSETS` global when tp_btf sched_switch infers wakeups from
    /// the kernel's bookkeeping instead of a sched_wakeup program.
    sched_info: Option<[u32; kfield::COUNT]>,
    /// Which kvm programs run as tp_btf, and the offsets they read with.
    kvm_btf: KvmBtfPlan,
    kernel_btf: KernelBtf,
}

/// The kernel's BTF as aya reads it, which every tp_btf program is loaded against:
/// parsed once per attach (a few hundred ms for vmlinux), dropped after it.
#[derive(Default)]
struct KernelBtf(Option<aya::Btf>);

impl KernelBtf {
    fn get(&mut self) -> Result<&aya::Btf, ProbeError> {
        if self.0.is_none() {
            self.0 = Some(aya::Btf::from_sys_fs().map_err(|e| ProbeError::KernelBtf(Box::new(e)))?);
        }
        Ok(self.0.as_ref().expect("parsed just above"))
    }
}

impl Plan {
    /// The one place a probe becomes unavailable.
    fn unavailable(&mut self, row: &TracepointRow, reason: String) {
        if row.splits_kvm_run && self.features.kvm_split == KvmSplit::Available {
            self.features.kvm_split = KvmSplit::Unavailable(format!("{} is not attached: {reason}", row.probe()));
        }
        self.features.unavailable(row.probe(), reason);
    }
}

/// The CPUs the per-CPU maps and perf events cover.
struct Cpus {
    possible: usize,
    online: Vec<u32>,
}

impl Cpus {
    fn read() -> Result<Cpus, ProbeError> {
        let cpus_err = |(path, source)| ProbeError::Cpus { path, source };
        Ok(Cpus {
            possible: aya::util::nr_cpus().map_err(cpus_err)?,
            online: aya::util::online_cpus().map_err(cpus_err)?,
        })
    }
}

impl Probes {
    /// Loads the programs and attaches them. Nothing is charged until [`Probes::start`].
    pub fn attach(opts: &ProbeOptions) -> Result<Probes, ProbeError> {
        check_privileges()?;
        let root = tracefs::tracefs_root()?;
        let mut plan = Plan::default();
        if !opts.kvm {
            plan.features.kvm_split =
                KvmSplit::Unavailable(format!("{NO_KVM_PROBE} is not attached: not requested (--no-kvm)"));
            plan.features.unavailable(NO_KVM_PROBE, "not requested (--no-kvm)");
        }
        if !opts.ledger {
            plan.features.unavailable(NO_LEDGER_PROBE, "not requested (--no-ledger)");
        }
        if opts.kvm {
            plan.kvm_btf = KvmBtfPlan::choose(opts.classic_kvm);
        }
        read_layouts(&root, opts, &mut plan)?;
        plan.btf_pid_offset = choose_sched_switch(opts, &mut plan.features);
        plan.sched_info = choose_wakeless(opts, &plan);
        raise_memlock_limit();
        let cpus = Cpus::read()?;
        let features_before = plan.features.clone();
        let mut ebpf = match load_with_sched(opts, &mut plan, &cpus) {
            // The wakeup-free path makes sched_switch the program the verifier works
            // hardest on (~930k of its 1M-instruction budget on 6.18): a kernel whose
            // verifier explores more states still gets the ledger, through the
            // sched_wakeup program, rather than no trace at all.
            Err(e) if plan.sched_info.is_some() => {
                log::warn!("{}; the ledger uses the sched_wakeup program instead", chain(&e));
                plan.sched_info = None;
                plan.features = features_before;
                load_with_sched(opts, &mut plan, &cpus)?
            }
            r => r?,
        };
        let logger = init_logger(&mut ebpf);
        let mut kvm_event_names = HashMap::new();
        let mut guest_sample_period_ns = 0;
        if opts.kvm {
            attach_kvm(&mut ebpf, &mut plan);
            guest_sample_period_ns = attach_guest_sampler(&mut ebpf, &cpus.online, opts, &mut plan.features);
            kvm_event_names = attach_kvm_events(&mut ebpf, &root, &mut plan);
        }
        let maps = Maps::take(&mut ebpf)?;
        Ok(Probes {
            ebpf,
            maps,
            window: Window::default(),
            features: plan.features,
            kvm_event_names,
            nr_cpus: cpus.possible,
            online_cpus: cpus.online,
            guest_sample_period_ns,
            logger,
            timeline: opts.timeline_ring_bytes != 0,
            retired: Default::default(),
        })
    }
}

/// A probe ("tp_btf:kvm:<name>") and whether it attached, or why not.
pub type ProbeTried = (String, Result<(), String>);

/// The kvm probes that need no tracefs (their tp_btf programs), loaded and attached
/// on their own, then detached: where tracefs is not readable, `check` shows with
/// this which of them would still work.
pub fn kvm_btf_without_tracefs() -> Result<Vec<ProbeTried>, ProbeError> {
    let opts = ProbeOptions::default();
    let mut plan = Plan { kvm_btf: KvmBtfPlan::choose(false), ..Plan::default() };
    raise_memlock_limit();
    let cpus = Cpus::read()?;
    let mut ebpf = load(&opts, &plan, &cpus)?;
    let kvm_rows = TRACEPOINTS.iter().filter(|r| r.category == "kvm").map(|r| (r.program, r.category, r.name));
    let slots = KVM_EVENT_SLOTS.iter().enumerate().map(|(i, e)| (program::KVM_EVENT[i], e.category, e.name));
    let mut out = Vec::new();
    for (classic, category, name) in kvm_rows.chain(slots) {
        let attached = plan
            .kvm_btf
            .btf_program(classic)
            .and_then(|program| attach_btf(&mut ebpf, &mut plan.kernel_btf, program, name).map_err(|e| chain(&e)));
        out.push((format!("tp_btf:{category}:{name}"), attached));
    }
    Ok(out)
}

/// Step 3: the field offsets of the classic tracepoints' records (they differ across
/// kernels), from tracefs `format` files.
fn read_layouts(root: &Path, opts: &ProbeOptions, plan: &mut Plan) -> Result<(), ProbeError> {
    for row in TRACEPOINTS {
        if (row.group == Group::Kvm && !opts.kvm) || (row.group == Group::Ledger && !opts.ledger) {
            continue;
        }
        // Required rows without fields, and kvm rows run as tp_btf, need no layout.
        let tp_btf = row.category == "kvm" && plan.kvm_btf.btf_program(row.program).is_ok();
        if (row.fields.is_empty() && row.need == Need::Required) || tp_btf {
            plan.usable.push(row);
            continue;
        }
        let format = match tracefs::read_format(root, row.category, row.name) {
            Ok(format) => format,
            Err(e) => match row.need {
                Need::Required => return Err(e.into()),
                Need::IfPresent => continue,
                Need::Optional => {
                    plan.unavailable(row, missing_reason(row, &e));
                    continue;
                }
            },
        };
        let mut complete = true;
        for f in row.fields {
            match format.offset(row.name, f.field) {
                Ok(offset) => plan.offsets[f.slot] = offset,
                Err(e) if row.need == Need::Optional => {
                    plan.unavailable(row, e.to_string());
                    complete = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if complete {
            plan.usable.push(row);
        }
    }
    Ok(())
}

/// Why an optional tracepoint is absent, with what to do about it.
fn missing_reason(row: &TracepointRow, e: &TracefsError) -> String {
    match row.category {
        "kvm" => "no kvm tracepoints on this kernel: is the kvm module loaded? (modprobe kvm_intel or kvm_amd)".into(),
        "syscalls" => format!("{e} (kernel built without CONFIG_FTRACE_SYSCALLS?)"),
        _ => chain(e),
    }
}

/// Step 4: tp_btf sched_switch needs the kernel's BTF, the 5.18+ prototype and
/// `task_struct.pid`; returns that offset, or records why the classic tracepoint is
/// used instead.
fn choose_sched_switch(opts: &ProbeOptions, features: &mut Features) -> Option<u32> {
    const PROBE: &str = "tp_btf:sched_switch";
    if opts.classic_sched_switch {
        features.unavailable(PROBE, "not requested (--classic-sched-switch)");
        return None;
    }
    match btf_pid_offset() {
        Ok(offset) => Some(offset),
        Err(reason) => {
            features.unavailable(PROBE, format!("{reason}; using the classic tracepoint"));
            None
        }
    }
}

/// `task_struct.pid`'s offset where tp_btf sched_switch is usable, else why not.
pub fn btf_pid_offset() -> Result<u32, String> {
    let btf = btf::Btf::from_sys_fs().map_err(|e| chain(&e))?;
    let params = btf.typedef_proto_params("btf_trace_sched_switch").map_err(|e| e.to_string())?;
    let offset = btf.member_offset("task_struct", "pid").map_err(|e| e.to_string())?;
    match params {
        5 => Ok(offset),
        n => Err(format!("sched_switch has {n} BTF arguments, expected 5 (kernel older than 5.18)")),
    }
}

/// Whether tp_btf sched_switch can do without the sched_wakeup program: with the
/// ledger, without the timeline (its wakeup records come from that program), unless
/// asked for the program, and where the kernel's BTF has the fields
/// (`CONFIG_SCHED_INFO`, `CONFIG_FAIR_GROUP_SCHED`). None = the program runs.
fn choose_wakeless(opts: &ProbeOptions, plan: &Plan) -> Option<[u32; kfield::COUNT]> {
    if plan.btf_pid_offset.is_none() || !opts.ledger || opts.wakeup_probe || opts.timeline_ring_bytes != 0 {
        return None;
    }
    match sched_info_offsets() {
        Ok(offsets) => Some(offsets),
        Err(reason) => {
            log::info!("the sched_wakeup program runs: {reason}");
            None
        }
    }
}

/// The byte offsets `kfield` lists, from the kernel's BTF, or why they are not there.
pub fn sched_info_offsets() -> Result<[u32; kfield::COUNT], String> {
    let btf = btf::Btf::from_sys_fs().map_err(|e| chain(&e))?;
    let off = |s: &str, m: &str| btf.member_offset(s, m).map_err(|e| e.to_string());
    let (info, se) = (off("task_struct", "sched_info")?, off("task_struct", "se")?);
    let mut o = [0u32; kfield::COUNT];
    o[kfield::LAST_QUEUED] = info + off("sched_info", "last_queued")?;
    o[kfield::RUN_DELAY] = info + off("sched_info", "run_delay")?;
    o[kfield::SE_CFS_RQ] = se + off("sched_entity", "cfs_rq")?;
    o[kfield::CFS_RQ_RQ] = off("cfs_rq", "rq")?;
    o[kfield::RQ_CLOCK] = off("rq", "clock")?;
    Ok(o)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Step 5: loads the object with the offsets, the guest sampler's function ranges,
/// whether the ledger runs, and the map sizes written in.
fn load(opts: &ProbeOptions, plan: &Plan, cpus: &Cpus) -> Result<Ebpf, ProbeError> {
    let pid_offset = plan.btf_pid_offset.unwrap_or(0);
    // Run-queue states by tid in an array where pid_max allows, else in the hash.
    let by_tid = if opts.sched_in_hash { 1 } else { sched_by_tid::array_len() };
    let sched_hash = if by_tid > 1 { sched_by_tid::HASH_BESIDE_ARRAY } else { opts.max_threads * 2 };
    EbpfLoader::new()
        .override_global(globals::TASK_PID_OFFSET, &pid_offset, true)
        .override_global(globals::TP_OFFSETS, &plan.offsets, true)
        .override_global(globals::KVM_BTF_OFFSETS, &plan.kvm_btf.offsets, true)
        .override_global(globals::GUEST_IRQ_TEXT, &kallsyms::guest_irq_text(), true)
        .override_global(globals::LEDGER_ON, &opts.ledger_level(), true)
        .override_global(globals::SCHED_INFO_OFFSETS, &plan.sched_info.unwrap_or_default(), true)
        .map_max_entries(map::THREAD_STATS, opts.max_threads)
        .map_max_entries(map::THREAD_INFO, opts.max_threads * 2)
        .map_max_entries(map::THREAD_SCHED, sched_hash)
        .map_max_entries(map::THREAD_SCHED_BY_TID, by_tid)
        .map_max_entries(map::EXITED, opts.max_threads)
        .map_max_entries(map::CPU_HISTORY, cpus.possible as u32)
        .map_max_entries(map::TIMELINE, timeline_ring_bytes(opts))
        .load(EBPF_OBJ)
        .map_err(|e| ProbeError::Load(Box::new(e)))
}

/// The timeline's ring buffer size: as asked, or one page (the least the kernel
/// takes) when there is no timeline.
fn timeline_ring_bytes(opts: &ProbeOptions) -> u32 {
    match opts.timeline_ring_bytes {
        0 => crate::sys::page_size() as u32,
        n => n,
    }
}

/// The programs' load-time diagnostics (aya-log); tracing works without them.
fn init_logger(ebpf: &mut Ebpf) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::debug!("eBPF logger unavailable: {}", chain(&e));
            None
        }
    }
}

/// Step 6, scheduler part: sched_switch (tp_btf or classic), then the other
/// scheduler rows; any failure fails `attach`.
/// Loads the object as `plan` says and attaches the scheduler programs.
fn load_with_sched(opts: &ProbeOptions, plan: &mut Plan, cpus: &Cpus) -> Result<Ebpf, ProbeError> {
    let mut ebpf = load(opts, plan, cpus)?;
    sched_by_tid::fill_unseen(&mut ebpf)?;
    attach_sched(&mut ebpf, plan)?;
    Ok(ebpf)
}

fn attach_sched(ebpf: &mut Ebpf, plan: &mut Plan) -> Result<(), ProbeError> {
    let features = &mut plan.features;
    if plan.btf_pid_offset.is_some() {
        attach_btf(ebpf, &mut plan.kernel_btf, program::SCHED_SWITCH_BTF, "sched_switch")?;
        features.sched_switch = "tp_btf".into();
        features.attached.push("tp_btf:sched_switch".into());
    } else {
        features.sched_switch = "tracepoint".into();
    }
    let btf = plan.btf_pid_offset.is_some();
    for row in plan.usable.iter().filter(|r| r.group != Group::Kvm) {
        // With tp_btf sched_switch, its tp_btf siblings replace these.
        if btf && (row.program == program::SCHED_SWITCH_TP || row.group == Group::Ledger || row.group == Group::Exit) {
            continue;
        }
        attach_tracepoint(ebpf, row.program, row.category, row.name)?;
        features.attached.push(format!("tracepoint:{}", row.probe()));
    }
    if btf {
        let (program, tracepoint) = EXIT_BTF;
        attach_btf(ebpf, &mut plan.kernel_btf, program, tracepoint)?;
        features.attached.push(format!("tp_btf:{tracepoint}"));
    }
    if btf && plan.usable.iter().any(|r| r.group == Group::Ledger) {
        for (program, tracepoint) in LEDGER_BTF {
            if program == program::SCHED_WAKEUP_BTF && plan.sched_info.is_some() {
                features.attached.push(WAKELESS_PROBE.into());
                continue;
            }
            attach_btf(ebpf, &mut plan.kernel_btf, program, tracepoint)?;
            features.attached.push(format!("tp_btf:{tracepoint}"));
        }
    }
    Ok(())
}

/// Loads the tp_btf program `program` for `tracepoint` and attaches it.
fn attach_btf(
    ebpf: &mut Ebpf,
    kernel_btf: &mut KernelBtf,
    program: &'static str,
    tracepoint: &str,
) -> Result<(), ProbeError> {
    let attach_err = |source| ProbeError::Attach { probe: format!("tp_btf:{tracepoint}"), source };
    let kernel_btf = kernel_btf.get()?;
    let p: &mut BtfTracePoint = program_mut(ebpf, program)?;
    p.load(tracepoint, kernel_btf).map_err(attach_err)?;
    if let Ok(info) = p.info() {
        log::debug!("tp_btf:{tracepoint}: the verifier processed {:?} instructions", info.verified_instruction_count());
    }
    p.attach().map_err(attach_err)?;
    Ok(())
}

/// Step 6, KVM part: the ioctl and KVM rows, each kvm one as tp_btf where
/// `plan.kvm_btf` chose it; a failure is recorded and tracing goes on.
fn attach_kvm(ebpf: &mut Ebpf, plan: &mut Plan) {
    let rows: Vec<&TracepointRow> = plan.usable.iter().copied().filter(|r| r.group == Group::Kvm).collect();
    for row in rows {
        let attached = match row.category {
            "kvm" => {
                let tp = (row.program, row.category, row.name);
                attach_kvm_tracepoint(ebpf, &mut plan.kernel_btf, &plan.kvm_btf, tp, &mut plan.features)
            }
            _ => attach_tracepoint(ebpf, row.program, row.category, row.name).map(|()| "tracepoint"),
        };
        match attached {
            Ok(kind) => plan.features.attached.push(format!("{kind}:{}", row.probe())),
            Err(e) => plan.unavailable(row, chain(&e)),
        }
    }
}

/// A kvm tracepoint as its tp_btf twin where chosen, else as the classic tracepoint
/// (saying why in `features`). Returns which: "tp_btf" or "tracepoint".
fn attach_kvm_tracepoint(
    ebpf: &mut Ebpf,
    kernel_btf: &mut KernelBtf,
    kvm_btf: &KvmBtfPlan,
    (classic, category, name): (&'static str, &str, &str),
    features: &mut Features,
) -> Result<&'static str, ProbeError> {
    match kvm_btf.btf_program(classic) {
        Ok(program) => attach_btf(ebpf, kernel_btf, program, name).map(|()| "tp_btf"),
        Err(reason) => {
            attach_tracepoint(ebpf, classic, category, name)?;
            features
                .unavailable(format!("tp_btf:{category}:{name}"), format!("{reason}; using the classic tracepoint"));
            Ok("tracepoint")
        }
    }
}

/// The guest-time sampler: one cpu-clock perf event per online CPU. Returns the
/// sampling period, 0 if not sampling.
fn attach_guest_sampler(ebpf: &mut Ebpf, cpus: &[u32], opts: &ProbeOptions, features: &mut Features) -> u64 {
    let period = opts.guest_sample_period_ns;
    if period == 0 {
        return 0;
    }
    match attach_perf_event(ebpf, cpus, period) {
        Ok(()) => {
            features.attached.push(format!("perf_event:cpu-clock every {period} ns (guest sampling)"));
            period
        }
        Err(e) => {
            features.unavailable("perf_event:cpu-clock (guest sampling)", chain(&e));
            0
        }
    }
}

fn attach_perf_event(ebpf: &mut Ebpf, cpus: &[u32], period: u64) -> Result<(), ProbeError> {
    let attach_err = |source| ProbeError::Attach { probe: "perf_event:cpu-clock".into(), source };
    let p: &mut PerfEvent = program_mut(ebpf, program::GUEST_SAMPLE)?;
    p.load().map_err(attach_err)?;
    for &cpu in cpus {
        p.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Period(period),
            false,
        )
        .map_err(attach_err)?;
    }
    Ok(())
}

/// The KVM event slots: slot i's program (tp_btf where chosen) on the i-th event
/// present. Returns slot -> "category:name" of what is attached.
fn attach_kvm_events(ebpf: &mut Ebpf, root: &Path, plan: &mut Plan) -> HashMap<u32, String> {
    let Plan { kvm_btf, kernel_btf, features, .. } = plan;
    let mut names = HashMap::new();
    for (slot, event) in KVM_EVENT_SLOTS.iter().enumerate() {
        let probe = format!("{}:{}", event.category, event.name);
        let classic = program::KVM_EVENT[slot];
        // The classic path needs the event in tracefs; tp_btf found it in the BTF.
        let present = match kvm_btf.btf_program(classic) {
            Ok(_) => Ok(()),
            Err(_) => tracefs::read_format(root, event.category, event.name).map(|_| ()).map_err(|e| e.to_string()),
        };
        let attached = present.and_then(|()| {
            let tp = (classic, event.category, event.name);
            attach_kvm_tracepoint(ebpf, kernel_btf, kvm_btf, tp, features).map_err(|e| chain(&e))
        });
        match attached {
            Ok(kind) => {
                features.attached.push(format!("{kind}:{probe}"));
                names.insert(slot as u32, probe);
            }
            Err(reason) => features.unavailable(probe, reason),
        }
    }
    names
}

/// A program of the object, as its type.
fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(ProbeError::MissingProgram(name))?;
    p.try_into().map_err(|source| ProbeError::Attach { probe: name.into(), source })
}

/// Loads a classic tracepoint program and attaches it to `category:name`.
fn attach_tracepoint(ebpf: &mut Ebpf, program: &'static str, category: &str, name: &str) -> Result<(), ProbeError> {
    let p: &mut TracePoint = program_mut(ebpf, program)?;
    p.load().map_err(|source| ProbeError::Attach { probe: program.into(), source })?;
    p.attach(category, name).map_err(|source| ProbeError::Attach { probe: format!("{category}:{name}"), source })?;
    Ok(())
}
