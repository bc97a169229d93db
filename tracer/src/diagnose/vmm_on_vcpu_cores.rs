//! The study's KVM finding: a pinned vCPU waits for its CPU while VMM threads run
//! there: usually threads that are not pinned (emulator, iothreads) and float onto
//! the vCPU's core, sometimes a VMM thread pinned onto it. The ledger names them.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Finding, Kind, Thresholds,
    words::{cpu_list, ms_text, other_cpus, pct, vcpu_name, vcpu_wait},
};
use crate::{
    account::kvm::{VcpuReport, VmReport, VmmThreadReport},
    report::Report,
};

/// A VMM thread that took a pinned vCPU's time, and what is known of its affinity.
struct Taker<'a> {
    tid: u32,
    comm: &'a str,
    ns: u64,
    thread: Option<&'a VmmThreadReport>,
}

pub fn findings(r: &Report, t: &Thresholds) -> Vec<Finding> {
    let vcpu_cpus: Vec<u32> = r.vms.iter().flat_map(|vm| &vm.vcpus).filter_map(pinned_cpu).collect();
    let mut out = Vec::new();
    for vm in &r.vms {
        for v in &vm.vcpus {
            let Some(cpu) = pinned_cpu(v) else { continue };
            let takers = vmm_takers(r, v);
            let lost: u64 = takers.iter().map(|k| k.ns).sum();
            let (wait, alive) = vcpu_wait(r, v);
            if lost < t.min_wait_ns || pct(lost, alive) < t.min_wait_pct {
                continue;
            }
            let loss = Loss { cpu, wait, alive, lost };
            out.push(finding(r, vm, v, &loss, &takers, &vcpu_cpus));
        }
    }
    out
}

/// The one CPU a vCPU is pinned to.
pub fn pinned_cpu(v: &VcpuReport) -> Option<u32> {
    (v.pinned && v.affinity.len() == 1).then(|| v.affinity[0])
}

/// The VMM threads (of any VM) in the vCPU's `lost_to`, with their affinity where
/// the report has it.
fn vmm_takers<'a>(r: &'a Report, v: &'a VcpuReport) -> Vec<Taker<'a>> {
    v.lost_to
        .iter()
        .filter(|thief| thief.role == "vmm")
        .map(|thief| {
            let thread = r.vms.iter().flat_map(|vm| &vm.vmm_threads).find(|m| m.tid == thief.tid);
            Taker { tid: thief.tid, comm: &thief.comm, ns: thief.ns, thread }
        })
        .collect()
}

/// A pinned vCPU's CPU, its wait and time alive, and how much of the wait went to
/// VMM threads (ns).
#[derive(Clone, Copy)]
struct Loss {
    cpu: u32,
    wait: u64,
    alive: u64,
    lost: u64,
}

fn finding(r: &Report, vm: &VmReport, v: &VcpuReport, loss: &Loss, takers: &[Taker], vcpu_cpus: &[u32]) -> Finding {
    let Loss { cpu, wait, alive, lost } = *loss;
    let who: Vec<String> = takers.iter().map(describe).collect();
    let summary = format!(
        "{} (pinned to CPU {cpu}) waited {} ({:.1} % of its run) for CPU {cpu}; {} of it went to {}: {}.",
        vcpu_name(&vm.name, v),
        ms_text(wait),
        pct(wait, alive),
        ms_text(lost),
        if takers.len() == 1 { "a VMM thread" } else { "VMM threads" },
        who.join("; ")
    );
    let free = other_cpus(r.cpus.len(), vcpu_cpus);
    let remedy = if free.is_empty() {
        format!(
            "Every CPU has a vCPU pinned to it, so the VMM threads have nowhere else to go: leave a CPU free of vCPUs (virsh vcpupin), then confine the VMM threads to it (virsh emulatorpin {} <that cpu>).",
            vm.name
        )
    } else {
        let list = cpu_list(&free);
        let tids: Vec<String> = takers.iter().map(|k| k.tid.to_string()).collect();
        format!(
            "Confine the VMM threads away from the vCPUs' cores: virsh emulatorpin {} {list} (and virsh iothreadpin for its iothreads); without libvirt, taskset -apc {list} {} moves the VMM process, then pin the vCPU threads back with taskset -pc.{}",
            vm.name,
            vm.pid,
            if tids.is_empty() { String::new() } else { format!(" The threads: {}.", tids.join(", ")) }
        )
    };
    let facts = BTreeMap::from([
        ("vm".into(), json!(vm.name)),
        ("vcpu".into(), json!(v.index)),
        ("vcpu_tid".into(), json!(v.tid)),
        ("cpu".into(), json!(cpu)),
        ("runq_wait_ns".into(), json!(wait)),
        ("alive_ns".into(), json!(alive)),
        ("lost_to_vmm_ns".into(), json!(lost)),
        (
            "threads".into(),
            json!(
                takers
                    .iter()
                    .map(|k| json!({"tid": k.tid, "comm": k.comm, "ns": k.ns,
                        "migrations": k.thread.map(|m| m.migrations), "affinity": k.thread.map(|m| m.affinity.clone())}))
                    .collect::<Vec<_>>()
            ),
        ),
        ("free_cpus".into(), json!(free)),
    ]);
    Finding { kind: Kind::VmmThreadOnVcpuCore, cost_ns: lost, summary, remedy, facts }
}

/// `'IO mon_iothread' (tid 1234) 280 ms, not pinned, moved 1893 times over CPUs 0-3`.
fn describe(k: &Taker) -> String {
    let moves = match k.thread {
        Some(m) if m.pinned => format!("pinned to CPU {}", cpu_list(&m.affinity)),
        Some(m) => format!("not pinned (allowed on CPUs {}), moved {} times", cpu_list(&m.affinity), m.migrations),
        None => "affinity unknown".into(),
    };
    format!("'{}' (tid {}) {}, {moves}", k.comm, k.tid, ms_text(k.ns))
}
