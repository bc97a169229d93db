//! KVM attribution, pure: per VM and per vCPU, the split of on-CPU time into inside
//! KVM_RUN (guest + in-kernel exit handling) and VMM userspace, guest mode vs exit
//! handling where kvm_entry/kvm_exit fire, exits by reason, and the VMM threads' time.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::ThreadTime;
use crate::{
    host::{ThreadIdentity, Vm},
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

pub fn vms(raw: &RawCounters, threads: &[ThreadTime], inp: &KvmInputs) -> Vec<VmReport> {
    let by_tid: BTreeMap<u32, &ThreadTime> = threads.iter().map(|t| (t.tid, t)).collect();
    let mut out = Vec::new();
    for vm in inp.vms {
        let ident = |tid: u32| inp.threads.get(&tid);
        let mut vcpus = Vec::new();
        for &tid in &vm.vcpus {
            let id = ident(tid);
            let t = by_tid.get(&tid).copied();
            let (on_cpu, kvm_run_wall, guest_wall) =
                t.map(|t| (t.on_cpu_ns, t.kvm_run_ns, t.guest_ns)).unwrap_or((0, 0, 0));
            let mut exits = BTreeMap::new();
            let mut any_exit = false;
            for (k, s) in raw.exits.iter().filter(|(k, _)| k.tid == tid) {
                any_exit = true;
                let name = match Isa::from_u32(k.isa) {
                    Some(isa) => exit_reason_name(isa, k.code).into_owned(),
                    None => format!("isa{}:{}", k.isa, k.code),
                };
                exits.insert(
                    name,
                    ExitReport {
                        count: s.count,
                        completed: s.completed,
                        latency_ns: s.latency_ns,
                        latency_hist_log2: s.hist.to_vec(),
                        guest_idle: Isa::from_u32(k.isa).map(|i| is_guest_idle(i, k.code)).unwrap_or(false),
                    },
                );
            }
            let split_unavailable = if any_exit || guest_wall > 0 {
                None
            } else if let Some(why) = &inp.entry_exit_unavailable {
                Some(why.clone())
            } else if kvm_run_wall > 0 {
                Some(
                    "kvm:kvm_exit never fired for this vCPU although it ran inside KVM_RUN: this KVM backend \
(e.g. PVM) does not emit kvm_entry/kvm_exit, so guest time and exit handling cannot be told apart; see guest_estimate"
                        .into(),
                )
            } else {
                Some("the vCPU did not run inside KVM_RUN during the trace".into())
            };
            let (guest_ns, exit_handling_ns) = match split_unavailable {
                None => (Some(guest_wall), Some(kvm_run_wall.saturating_sub(guest_wall))),
                Some(_) => (None, None),
            };
            let sample = |code: u32| {
                raw.guest_samples.iter().filter(|(k, _)| k.tid == tid && k.code == code).map(|(_, n)| *n).sum::<u64>()
            };
            let (samples_guest, samples_host_kvm) =
                (sample(tracer_common::kvm::SAMPLE_GUEST), sample(tracer_common::kvm::SAMPLE_HOST_KVM));
            let period = raw.guest_sample_period_ns;
            let guest_estimate = split_unavailable.as_ref().map(|_| {
                let g = inp.gtime_ns.get(&tid).copied();
                if period > 0 && samples_guest + samples_host_kvm > 0 {
                    // Scale the samples' guest share to the measured KVM_RUN time.
                    let share = samples_guest as f64 / (samples_guest + samples_host_kvm) as f64;
                    return GuestEstimate {
                        guest_ns: Some((kvm_run_wall as f64 * share) as u64),
                        resolution_ns: period,
                        source: format!(
                            "sampled: cpu-clock every {period} ns on every CPU; {samples_guest} of {} samples inside KVM_RUN \
found the thread running guest code (user mode, or the kernel function that takes host interrupts \
arriving during guest execution); the share is applied to kvm_run_ns",
                            samples_guest + samples_host_kvm
                        ),
                        note: None,
                    };
                }
                match g {
                    Some(ns) if ns > 0 => GuestEstimate {
                        guest_ns: Some(ns.min(kvm_run_wall)),
                        resolution_ns: inp.tick_ns,
                        source: "task gtime (/proc/<pid>/task/<tid>/stat field 43), sampled by the scheduler tick".into(),
                        note: None,
                    },
                    Some(_) if kvm_run_wall > 0 => GuestEstimate {
                        guest_ns: None,
                        resolution_ns: inp.tick_ns,
                        source: "task gtime".into(),
                        note: Some(format!(
                            "the kernel counted no guest time for this thread although it spent {:.1} ms inside KVM_RUN: \
this KVM backend does not account guest time (PVM); the upper bound is kvm_run_ns",
                            kvm_run_wall as f64 / 1e6
                        )),
                    },
                    _ => GuestEstimate {
                        guest_ns: None,
                        resolution_ns: inp.tick_ns,
                        source: "task gtime".into(),
                        note: Some("gtime could not be read (the thread exited before the end)".into()),
                    },
                }
            });
            let mut userspace_exits = BTreeMap::new();
            for (k, n) in raw.userspace_exits.iter().filter(|(k, _)| k.tid == tid) {
                *userspace_exits.entry(userspace_exit_name(k.code).into_owned()).or_insert(0) += n;
            }
            let mut kvm_events = BTreeMap::new();
            for (k, n) in raw.kvm_events.iter().filter(|(k, _)| k.tid == tid) {
                let name =
                    raw.kvm_event_names.get(&k.code).cloned().unwrap_or_else(|| format!("tracepoint#{}", k.code));
                *kvm_events.entry(name).or_insert(0) += n;
            }
            vcpus.push(VcpuReport {
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
                samples_guest,
                samples_host_kvm,
                userspace_exits,
                exits,
                kvm_events,
                switches: t.map(|t| t.switches).unwrap_or(0),
                involuntary_switches: t.map(|t| t.involuntary_switches).unwrap_or(0),
                migrations: t.map(|t| t.migrations).unwrap_or(0),
                affinity: id.map(|i| i.affinity.clone()).unwrap_or_default(),
                pinned: id.map(|i| i.pinned).unwrap_or(false),
                lost_to: Vec::new(),
            });
        }
        let mut vmm_threads: Vec<VmmThreadReport> = vm
            .vmm_threads
            .iter()
            .map(|&tid| {
                let id = ident(tid);
                let t = by_tid.get(&tid);
                VmmThreadReport {
                    tid,
                    comm: id.map(|i| i.comm.clone()).unwrap_or_default(),
                    on_cpu_ns: t.map(|t| t.on_cpu_ns).unwrap_or(0),
                    migrations: t.map(|t| t.migrations).unwrap_or(0),
                    affinity: id.map(|i| i.affinity.clone()).unwrap_or_default(),
                    pinned: id.map(|i| i.pinned).unwrap_or(false),
                }
            })
            .collect();
        vmm_threads.sort_by(|a, b| b.on_cpu_ns.cmp(&a.on_cpu_ns).then(a.tid.cmp(&b.tid)));
        out.push(VmReport {
            name: vm.name.clone(),
            pid: vm.pid,
            kind: serde_json::to_value(vm.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            vmm_threads_ns: vmm_threads.iter().map(|t| t.on_cpu_ns).sum(),
            kvm_run_ns: vcpus.iter().map(|v| v.kvm_run_ns).sum(),
            vmm_user_ns: vcpus.iter().map(|v| v.vmm_user_ns).sum(),
            vcpus,
            vmm_threads,
        });
    }
    out
}
