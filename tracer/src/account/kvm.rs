//! KVM attribution, pure: per VM and per vCPU, the split of on-CPU time into inside
//! KVM_RUN (guest + in-kernel exit handling) and VMM userspace, guest mode vs exit
//! handling where kvm_entry/kvm_exit fire, exits by reason, and the VMM threads' time.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::ThreadTime;
use tracer_common::kvm::TidKey;

use crate::{
    host::{ThreadIdentity, Vm, VmmThreadKind, vmm_thread_kind},
    kvm_reasons::{Isa, exit_reason_name, is_guest_idle, userspace_exit_name},
    probe::RawCounters,
};

/// Guest time estimated from the kernel's own accounting, where it cannot be measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GuestEstimate {
    /// Estimated guest time in the window; null when the source gives nothing usable.
    pub guest_ns: Option<u64>,
    /// Granularity of the source (a scheduler tick).
    pub resolution_ns: u64,
    pub source: String,
    /// Why the estimate is missing or what to keep in mind.
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExitReport {
    /// kvm_exit events with this reason.
    pub count: u64,
    /// Exits whose handling ended (the next kvm_entry) in the window, and the time
    /// from kvm_exit to that entry, summed (includes trips to the VMM in userspace).
    pub completed: u64,
    pub latency_ns: u64,
    /// log2 histogram: bucket b counts latencies in [2^(b-1), 2^b) ns.
    pub latency_hist_log2: Vec<u64>,
    /// HLT-like exits: the guest was idle, not overhead.
    pub guest_idle: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VcpuReport {
    pub index: Option<u32>,
    pub tid: u32,
    pub comm: String,
    /// The vCPU thread's runtime (= kvm_run_ns + vmm_user_ns).
    pub on_cpu_ns: u64,
    /// Of which inside ioctl(KVM_RUN): guest and in-kernel exit handling.
    pub kvm_run_ns: u64,
    /// Of which outside KVM_RUN: the VMM's own userspace work on this thread.
    pub vmm_user_ns: u64,
    /// Guest mode, between kvm_entry and kvm_exit; null where they never fired.
    pub guest_ns: Option<u64>,
    /// In-kernel exit handling (kvm_run_ns - guest_ns); null where kvm_exit never fired.
    pub exit_handling_ns: Option<u64>,
    /// Why guest_ns/exit_handling_ns are null.
    pub split_unavailable: Option<String>,
    pub guest_estimate: Option<GuestEstimate>,
    /// cpu-clock samples taken while this thread was inside KVM_RUN: in user mode
    /// (guest code running natively) and in kernel mode (host KVM code).
    pub samples_guest: u64,
    pub samples_host_kvm: u64,
    /// kvm:kvm_userspace_exit by reason (KVM_EXIT_*).
    pub userspace_exits: BTreeMap<String, u64>,
    /// kvm:kvm_exit by reason name (VMX or SVM table by `isa`).
    pub exits: BTreeMap<String, ExitReport>,
    /// Other in-kernel KVM events on this thread (the only view on PVM).
    pub kvm_events: BTreeMap<String, u64>,
    pub switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    pub affinity: Vec<u32>,
    pub pinned: bool,
    /// The threads that ran on this vCPU's CPU while it waited for it, most first
    /// (schema vmmtrace/2; see the report's `ledger`).
    #[serde(default)]
    pub lost_to: Vec<super::ledger::Thief>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VmmThreadReport {
    pub tid: u32,
    /// What the thread does (main loop, RCU, iothread, ...), from its name; reports
    /// written before this field existed read as `other`.
    #[serde(default)]
    pub kind: VmmThreadKind,
    pub comm: String,
    pub on_cpu_ns: u64,
    pub migrations: u64,
    pub affinity: Vec<u32>,
    pub pinned: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VmReport {
    pub name: String,
    pub pid: u32,
    pub kind: String,
    pub vcpus: Vec<VcpuReport>,
    /// Non-vCPU threads of the VMM (emulator, iothreads, vhost), busiest first.
    pub vmm_threads: Vec<VmmThreadReport>,
    pub vmm_threads_ns: u64,
    /// Summed over vCPUs.
    pub kvm_run_ns: u64,
    pub vmm_user_ns: u64,
}

/// Inputs besides the raw counters.
pub struct KvmInputs<'a> {
    pub vms: &'a [Vm],
    pub threads: &'a HashMap<u32, ThreadIdentity>,
    /// Per thread, guest time from the kernel (task gtime) over the window, in ns,
    /// where it could be read.
    pub gtime_ns: &'a BTreeMap<u32, u64>,
    /// Scheduler tick length (ns), the resolution of gtime.
    pub tick_ns: u64,
    /// Why kvm_entry/kvm_exit are not attached, if they are not.
    pub entry_exit_unavailable: Option<String>,
}

/// Per VM: its vCPUs' split of on-CPU time and exits, and its VMM threads' time.
pub fn vms(raw: &RawCounters, threads: &[ThreadTime], inp: &KvmInputs) -> Vec<VmReport> {
    let by_tid: BTreeMap<u32, &ThreadTime> = threads.iter().map(|t| (t.tid, t)).collect();
    inp.vms.iter().map(|vm| vm_report(raw, vm, &by_tid, inp)).collect()
}

fn vm_report(raw: &RawCounters, vm: &Vm, by_tid: &BTreeMap<u32, &ThreadTime>, inp: &KvmInputs) -> VmReport {
    let vcpus: Vec<VcpuReport> = vm
        .vcpus
        .iter()
        .map(|&tid| vcpu_report(raw, tid, inp.threads.get(&tid), by_tid.get(&tid).copied(), inp))
        .collect();
    let vmm_threads = vmm_threads(vm, by_tid, inp.threads);
    VmReport {
        name: vm.name.clone(),
        pid: vm.pid,
        kind: serde_json::to_value(vm.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        vmm_threads_ns: vmm_threads.iter().map(|t| t.on_cpu_ns).sum(),
        kvm_run_ns: vcpus.iter().map(|v| v.kvm_run_ns).sum(),
        vmm_user_ns: vcpus.iter().map(|v| v.vmm_user_ns).sum(),
        vcpus,
        vmm_threads,
    }
}

/// One vCPU thread: `id` from discovery, `t` its time (None if it never ran).
fn vcpu_report(
    raw: &RawCounters,
    tid: u32,
    id: Option<&ThreadIdentity>,
    t: Option<&ThreadTime>,
    inp: &KvmInputs,
) -> VcpuReport {
    let (on_cpu, kvm_run_wall, guest_wall) = t.map(|t| (t.on_cpu_ns, t.kvm_run_ns, t.guest_ns)).unwrap_or((0, 0, 0));
    let exits = exit_table(raw, tid);
    let split_unavailable =
        split_unavailable(!exits.is_empty(), guest_wall, kvm_run_wall, inp.entry_exit_unavailable.as_deref());
    let (guest_ns, exit_handling_ns) = match split_unavailable {
        None => (Some(guest_wall), Some(kvm_run_wall.saturating_sub(guest_wall))),
        Some(_) => (None, None),
    };
    let samples = guest_samples(raw, tid);
    let guest_estimate = split_unavailable.as_ref().map(|_| {
        let gtime = GtimeReading { guest_ns: inp.gtime_ns.get(&tid).copied(), tick_ns: inp.tick_ns };
        guest_estimate(kvm_run_wall, samples, raw.guest_sample_period_ns, gtime)
    });
    VcpuReport {
        index: id.and_then(|i| i.vcpu_index),
        tid,
        comm: id.map(|i| i.comm.clone()).or_else(|| t.map(|t| t.meta.comm.clone())).unwrap_or_default(),
        on_cpu_ns: on_cpu,
        kvm_run_ns: kvm_run_wall.min(on_cpu),
        vmm_user_ns: on_cpu.saturating_sub(kvm_run_wall),
        guest_ns,
        exit_handling_ns,
        split_unavailable,
        guest_estimate,
        samples_guest: samples.guest,
        samples_host_kvm: samples.host_kvm,
        userspace_exits: count_by_name(&raw.userspace_exits, tid, |code| userspace_exit_name(code).into_owned()),
        exits,
        kvm_events: count_by_name(&raw.kvm_events, tid, |code| {
            raw.kvm_event_names.get(&code).cloned().unwrap_or_else(|| format!("tracepoint#{code}"))
        }),
        switches: t.map(|t| t.switches).unwrap_or(0),
        involuntary_switches: t.map(|t| t.involuntary_switches).unwrap_or(0),
        migrations: t.map(|t| t.migrations).unwrap_or(0),
        affinity: id.map(|i| i.affinity.clone()).unwrap_or_default(),
        pinned: id.map(|i| i.pinned).unwrap_or(false),
        lost_to: Vec::new(),
    }
}

/// kvm_exit reasons of one thread, by name (VMX or SVM table by `isa`).
fn exit_table(raw: &RawCounters, tid: u32) -> BTreeMap<String, ExitReport> {
    let mut exits = BTreeMap::new();
    for (k, s) in raw.exits.iter().filter(|(k, _)| k.tid == tid) {
        let isa = Isa::from_u32(k.isa);
        let name = match isa {
            Some(isa) => exit_reason_name(isa, k.code).into_owned(),
            None => format!("isa{}:{}", k.isa, k.code),
        };
        let report = ExitReport {
            count: s.count,
            completed: s.completed,
            latency_ns: s.latency_ns,
            latency_hist_log2: s.hist.to_vec(),
            guest_idle: isa.map(|i| is_guest_idle(i, k.code)).unwrap_or(false),
        };
        exits.insert(name, report);
    }
    exits
}

/// Why a vCPU's KVM_RUN time cannot be split into guest mode and exit handling, or
/// None when it can (kvm_exit fired for it, or guest time was measured).
fn split_unavailable(
    any_exit: bool,
    guest_ns: u64,
    kvm_run_ns: u64,
    entry_exit_unavailable: Option<&str>,
) -> Option<String> {
    if any_exit || guest_ns > 0 {
        None
    } else if let Some(why) = entry_exit_unavailable {
        Some(why.to_string())
    } else if kvm_run_ns > 0 {
        Some(
            "kvm:kvm_exit never fired for this vCPU although it ran inside KVM_RUN: this KVM backend \
(e.g. PVM) does not emit kvm_entry/kvm_exit, so guest time and exit handling cannot be told apart; see guest_estimate"
                .into(),
        )
    } else {
        Some("the vCPU did not run inside KVM_RUN during the trace".into())
    }
}

/// cpu-clock samples of one thread inside KVM_RUN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct GuestSamples {
    /// Running guest code.
    guest: u64,
    /// Running the host kernel's KVM code.
    host_kvm: u64,
}

fn guest_samples(raw: &RawCounters, tid: u32) -> GuestSamples {
    let sum = |code: u32| {
        raw.guest_samples.iter().filter(|(k, _)| k.tid == tid && k.code == code).map(|(_, n)| *n).sum::<u64>()
    };
    GuestSamples { guest: sum(tracer_common::kvm::SAMPLE_GUEST), host_kvm: sum(tracer_common::kvm::SAMPLE_HOST_KVM) }
}

/// The kernel's guest time (gtime) of a thread over the window, and its resolution.
#[derive(Clone, Copy, Debug)]
struct GtimeReading {
    /// None when it could not be read.
    guest_ns: Option<u64>,
    tick_ns: u64,
}

/// Guest time where it cannot be measured: the samples' guest share of
/// `kvm_run_ns` where the sampler ran, else the kernel's gtime.
fn guest_estimate(kvm_run_ns: u64, samples: GuestSamples, period_ns: u64, gtime: GtimeReading) -> GuestEstimate {
    let total = samples.guest + samples.host_kvm;
    if period_ns > 0 && total > 0 {
        // Scale the samples' guest share to the measured KVM_RUN time.
        let share = samples.guest as f64 / total as f64;
        return GuestEstimate {
            guest_ns: Some((kvm_run_ns as f64 * share) as u64),
            resolution_ns: period_ns,
            source: format!(
                "sampled: cpu-clock every {period_ns} ns on every CPU; {} of {total} samples inside KVM_RUN \
found the thread running guest code (user mode, or the kernel function that takes host interrupts \
arriving during guest execution); the share is applied to kvm_run_ns",
                samples.guest
            ),
            note: None,
        };
    }
    let estimate = |guest_ns, source: &str, note| GuestEstimate {
        guest_ns,
        resolution_ns: gtime.tick_ns,
        source: source.into(),
        note,
    };
    match gtime.guest_ns {
        Some(ns) if ns > 0 => estimate(
            Some(ns.min(kvm_run_ns)),
            "task gtime (/proc/<pid>/task/<tid>/stat field 43), sampled by the scheduler tick",
            None,
        ),
        Some(_) if kvm_run_ns > 0 => estimate(
            None,
            "task gtime",
            Some(format!(
                "the kernel counted no guest time for this thread although it spent {:.1} ms inside KVM_RUN: \
this KVM backend does not account guest time (PVM); the upper bound is kvm_run_ns",
                kvm_run_ns as f64 / 1e6
            )),
        ),
        _ => estimate(None, "task gtime", Some("gtime could not be read (the thread exited before the end)".into())),
    }
}

/// Counts of one thread in a (tid, code) -> count map, summed by `name(code)`.
fn count_by_name(counts: &[(TidKey, u64)], tid: u32, name: impl Fn(u32) -> String) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, n) in counts.iter().filter(|(k, _)| k.tid == tid) {
        *out.entry(name(k.code)).or_insert(0) += n;
    }
    out
}

/// The VMM's other threads, busiest first.
fn vmm_threads(
    vm: &Vm,
    by_tid: &BTreeMap<u32, &ThreadTime>,
    ids: &HashMap<u32, ThreadIdentity>,
) -> Vec<VmmThreadReport> {
    let process_comm = ids.get(&vm.pid).map(|i| i.comm.as_str()).unwrap_or_default();
    let vcpus_named = vm.vcpus.iter().any(|t| ids.get(t).is_some_and(|i| !i.vcpu_index_inferred));
    let mut out: Vec<VmmThreadReport> = vm
        .vmm_threads
        .iter()
        .map(|&tid| {
            let id = ids.get(&tid);
            let t = by_tid.get(&tid);
            let comm = id.map(|i| i.comm.clone()).unwrap_or_default();
            VmmThreadReport {
                tid,
                kind: vmm_thread_kind(vm.kind, &comm, tid == vm.pid, process_comm, vcpus_named),
                comm,
                on_cpu_ns: t.map(|t| t.on_cpu_ns).unwrap_or(0),
                migrations: t.map(|t| t.migrations).unwrap_or(0),
                affinity: id.map(|i| i.affinity.clone()).unwrap_or_default(),
                pinned: id.map(|i| i.pinned).unwrap_or(false),
            }
        })
        .collect();
    out.sort_by(|a, b| b.on_cpu_ns.cmp(&a.on_cpu_ns).then(a.tid.cmp(&b.tid)));
    out
}

#[cfg(test)]
mod tests {
    use tracer_common::kvm::{ExitStats, SAMPLE_GUEST, SAMPLE_HOST_KVM};

    use super::*;
    use crate::{
        account::ThreadMeta,
        host::{Role, VmmKind},
    };

    const VCPU: u32 = 11;
    const VMM: u32 = 10;

    fn key(tid: u32, code: u32, isa: u32) -> TidKey {
        TidKey { tid, code, isa, _pad: 0 }
    }

    fn time(tid: u32, on_cpu_ns: u64, kvm_run_ns: u64, guest_ns: u64) -> ThreadTime {
        ThreadTime {
            tid,
            meta: ThreadMeta { pid: VMM, comm: format!("t{tid}"), role: Role::Vcpu, vcpu_index: None, vm: None },
            on_cpu_ns,
            per_cpu_ns: vec![on_cpu_ns],
            kvm_run_ns,
            guest_ns,
            switches: 3,
            involuntary_switches: 1,
            migrations: 2,
            earlier: None,
        }
    }

    fn gtime(guest_ns: Option<u64>) -> GtimeReading {
        GtimeReading { guest_ns, tick_ns: 4_000_000 }
    }

    #[test]
    fn exits_are_named_by_isa_and_hlt_is_guest_idle() {
        let mut raw = RawCounters::default();
        let stats = ExitStats { count: 5, completed: 4, latency_ns: 400, ..Default::default() };
        raw.exits = vec![(key(VCPU, 12, 1), stats), (key(VCPU, 30, 1), stats), (key(VCPU, 3, 9), stats)];
        raw.exits.push((key(99, 12, 1), stats)); // another thread
        let t = exit_table(&raw, VCPU);
        assert_eq!(t.keys().collect::<Vec<_>>(), ["HLT", "IO_INSTRUCTION", "isa9:3"]);
        assert!(t["HLT"].guest_idle && !t["IO_INSTRUCTION"].guest_idle);
        assert_eq!((t["HLT"].count, t["HLT"].completed, t["HLT"].latency_ns), (5, 4, 400));
        assert!(exit_table(&raw, 12345).is_empty());
    }

    #[test]
    fn the_split_is_given_only_where_entry_and_exit_fired() {
        assert_eq!(split_unavailable(true, 0, 100, Some("kvm:kvm_exit is not attached: x")), None);
        assert_eq!(split_unavailable(false, 50, 100, None), None);
        let why = split_unavailable(false, 0, 100, Some("kvm:kvm_exit is not attached: x"));
        assert_eq!(why.as_deref(), Some("kvm:kvm_exit is not attached: x"));
        assert!(split_unavailable(false, 0, 100, None).unwrap().contains("PVM"));
        assert!(split_unavailable(false, 0, 0, None).unwrap().contains("did not run inside KVM_RUN"));
    }

    #[test]
    fn sampled_estimate_scales_the_guest_share_to_kvm_run() {
        let e = guest_estimate(1_000_000, GuestSamples { guest: 3, host_kvm: 1 }, 1_000, gtime(Some(5)));
        assert_eq!((e.guest_ns, e.resolution_ns, e.note), (Some(750_000), 1_000, None));
        assert!(e.source.starts_with("sampled: cpu-clock every 1000 ns") && e.source.contains("3 of 4 samples"));
    }

    #[test]
    fn without_samples_the_estimate_is_gtime() {
        let none = GuestSamples::default();
        let e = guest_estimate(10_000_000, none, 1_000, gtime(Some(40_000_000)));
        assert_eq!((e.guest_ns, e.resolution_ns), (Some(10_000_000), 4_000_000), "capped at kvm_run_ns");
        // Samples without a period (sampler off) do not count.
        let e = guest_estimate(10_000_000, GuestSamples { guest: 1, host_kvm: 0 }, 0, gtime(Some(8_000_000)));
        assert_eq!(e.guest_ns, Some(8_000_000));
        let e = guest_estimate(10_000_000, none, 0, gtime(Some(0)));
        assert_eq!(e.guest_ns, None);
        assert!(e.note.unwrap().contains("10.0 ms inside KVM_RUN"));
        let e = guest_estimate(10_000_000, none, 0, gtime(None));
        assert!(e.note.unwrap().contains("could not be read"));
    }

    #[test]
    fn counts_are_summed_by_name() {
        let counts = vec![(key(VCPU, 2, 0), 3), (key(VCPU, 2, 0), 4), (key(VCPU, 6, 0), 1), (key(99, 2, 0), 100)];
        let by_name = count_by_name(&counts, VCPU, |code| userspace_exit_name(code).into_owned());
        assert_eq!(by_name, BTreeMap::from([("KVM_EXIT_IO".to_string(), 7), ("KVM_EXIT_MMIO".to_string(), 1)]));
    }

    /// A VM with one vCPU whose guest time was measured, and one VMM thread.
    fn measured() -> (RawCounters, Vec<ThreadTime>, Vec<Vm>, HashMap<u32, ThreadIdentity>) {
        let raw = RawCounters {
            exits: vec![(key(VCPU, 30, 1), ExitStats { count: 7, ..Default::default() })],
            userspace_exits: vec![(key(VCPU, 2, 0), 7)],
            kvm_events: vec![(key(VCPU, 0, 0), 2), (key(VCPU, 5, 0), 1)],
            kvm_event_names: HashMap::from([(0, "kvm:kvm_pio".to_string())]),
            guest_samples: vec![(key(VCPU, SAMPLE_GUEST, 0), 9), (key(VCPU, SAMPLE_HOST_KVM, 0), 1)],
            guest_sample_period_ns: 1_000,
            ..Default::default()
        };
        let threads = vec![time(VCPU, 1_000, 800, 600), time(VMM, 300, 0, 0), time(12, 50, 0, 0)];
        let vms = vec![Vm {
            name: "web".into(),
            pid: VMM,
            kind: VmmKind::Qemu,
            vcpus: vec![VCPU],
            vmm_threads: vec![12, VMM],
        }];
        let ids = HashMap::from([
            (
                VCPU,
                ThreadIdentity {
                    vcpu_index: Some(0),
                    affinity: vec![1],
                    pinned: true,
                    ..ThreadIdentity::new(VCPU, VMM, "CPU 0/KVM".into(), Role::Vcpu)
                },
            ),
            (VMM, ThreadIdentity::new(VMM, VMM, "qemu".into(), Role::Vmm)),
        ]);
        (raw, threads, vms, ids)
    }

    /// `vms` on the VM of [`measured`] with the given counters and thread times.
    fn report(raw: &RawCounters, threads: &[ThreadTime], entry_exit_unavailable: Option<String>) -> VmReport {
        let (_, _, vm_list, ids) = measured();
        let gtime_ns = BTreeMap::new();
        let inp =
            KvmInputs { vms: &vm_list, threads: &ids, gtime_ns: &gtime_ns, tick_ns: 4_000_000, entry_exit_unavailable };
        vms(raw, threads, &inp).remove(0)
    }

    #[test]
    fn a_measured_vcpu_splits_kvm_run_into_guest_and_exit_handling() {
        let (raw, threads, _, _) = measured();
        let vm = &report(&raw, &threads, None);
        assert_eq!((vm.name.as_str(), vm.pid, vm.kind.as_str()), ("web", VMM, "qemu"));
        let v = &vm.vcpus[0];
        assert_eq!(
            (v.index, v.comm.as_str(), v.on_cpu_ns, v.kvm_run_ns, v.vmm_user_ns),
            (Some(0), "CPU 0/KVM", 1_000, 800, 200)
        );
        assert_eq!((v.guest_ns, v.exit_handling_ns, v.split_unavailable.as_deref()), (Some(600), Some(200), None));
        assert!(v.guest_estimate.is_none(), "measured: no estimate");
        assert_eq!((v.samples_guest, v.samples_host_kvm), (9, 1));
        assert_eq!(v.exits["IO_INSTRUCTION"].count, 7);
        assert_eq!(v.userspace_exits["KVM_EXIT_IO"], 7);
        assert_eq!(v.kvm_events, BTreeMap::from([("kvm:kvm_pio".into(), 2), ("tracepoint#5".into(), 1)]));
        assert_eq!((v.switches, v.involuntary_switches, v.migrations, v.pinned), (3, 1, 2, true));
        // VMM threads busiest first; sums over the VM.
        assert_eq!(vm.vmm_threads.iter().map(|t| t.tid).collect::<Vec<_>>(), [VMM, 12]);
        assert_eq!((vm.vmm_threads_ns, vm.kvm_run_ns, vm.vmm_user_ns), (350, 800, 200));
    }

    #[test]
    fn without_kvm_exit_the_split_is_null_and_estimated() {
        let (mut raw, mut threads, _, _) = measured();
        raw.exits.clear();
        threads[0].guest_ns = 0;
        let vm = report(&raw, &threads, Some("kvm:kvm_exit is not attached: no".to_string()));
        let v = &vm.vcpus[0];
        assert_eq!((v.guest_ns, v.exit_handling_ns), (None, None));
        assert_eq!(v.split_unavailable.as_deref(), Some("kvm:kvm_exit is not attached: no"));
        assert_eq!(v.guest_estimate.as_ref().unwrap().guest_ns, Some(720), "9 of 10 samples of 800 ns");
    }

    #[test]
    fn a_vcpu_that_never_ran_is_reported_with_zeros() {
        let (raw, _, _, _) = measured();
        let vm = report(&RawCounters { exits: Vec::new(), ..raw }, &[], None);
        let v = &vm.vcpus[0];
        assert_eq!((v.on_cpu_ns, v.kvm_run_ns, v.vmm_user_ns, v.switches), (0, 0, 0, 0));
        assert!(v.split_unavailable.as_deref().unwrap().contains("did not run"));
    }
}
