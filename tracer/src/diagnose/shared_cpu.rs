//! vCPUs pinned to the same CPU, of one VM or of several: together they get at most
//! that one CPU.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Finding, Kind, Thresholds,
    words::{cpu_list, ms_text, other_cpus, vcpu_name},
};
use crate::report::Report;

pub fn findings(r: &Report, _t: &Thresholds) -> Vec<Finding> {
    // CPU -> the vCPUs pinned to it alone: (VM, vCPU).
    let mut by_cpu: BTreeMap<u32, Vec<(&str, &crate::account::kvm::VcpuReport)>> = BTreeMap::new();
    for vm in &r.vms {
        for v in vm.vcpus.iter().filter(|v| v.pinned && v.affinity.len() == 1) {
            by_cpu.entry(v.affinity[0]).or_default().push((&vm.name, v));
        }
    }
    let pinned: Vec<u32> = by_cpu.keys().copied().collect();
    let free = other_cpus(r.cpus.len(), &pinned);
    by_cpu
        .into_iter()
        .filter(|(_, vcpus)| vcpus.len() > 1)
        .map(|(cpu, vcpus)| {
            let names: Vec<String> = vcpus.iter().map(|(vm, v)| vcpu_name(vm, v)).collect();
            let on_cpu: u64 = vcpus.iter().map(|(_, v)| v.on_cpu_ns).sum();
            let cost = shared_wait_ns(&vcpus);
            let vms: Vec<&str> = vcpus.iter().map(|(vm, _)| *vm).collect();
            let one_vm = vms.iter().all(|vm| *vm == vms[0]);
            let summary = format!(
                "{} are pinned to the same CPU {cpu}{}: together they ran {} and {}.",
                names.join(" and "),
                if one_vm { "" } else { " (different VMs)" },
                ms_text(on_cpu),
                if cost > 0 {
                    format!("waited {} for each other", ms_text(cost))
                } else {
                    "can never run at the same time".into()
                }
            );
            let (vm, v) = vcpus[1];
            let remedy = match free.first() {
                Some(c) => format!(
                    "Give each vCPU a CPU of its own: virsh vcpupin {vm} {} {c} (CPUs no vCPU is pinned to: {}).",
                    v.index.unwrap_or(0),
                    cpu_list(&free)
                ),
                None => "Every CPU already has a vCPU pinned to it: give the VMs fewer vCPUs than the host has CPUs, then virsh vcpupin each to a CPU of its own.".into(),
            };
            let facts = BTreeMap::from([
                ("cpu".into(), json!(cpu)),
                ("vcpu_tids".into(), json!(vcpus.iter().map(|(_, v)| v.tid).collect::<Vec<_>>())),
                ("vms".into(), json!(vms)),
                ("on_cpu_ns".into(), json!(on_cpu)),
                ("wait_for_each_other_ns".into(), json!(cost)),
            ]);
            Finding { kind: Kind::VcpusShareCpu, cost_ns: cost, summary, remedy, facts }
        })
        .collect()
}

/// Time the vCPUs of a group lost to each other (from their `lost_to`).
fn shared_wait_ns(vcpus: &[(&str, &crate::account::kvm::VcpuReport)]) -> u64 {
    let tids: Vec<u32> = vcpus.iter().map(|(_, v)| v.tid).collect();
    vcpus.iter().flat_map(|(_, v)| &v.lost_to).filter(|thief| tids.contains(&thief.tid)).map(|thief| thief.ns).sum()
}
