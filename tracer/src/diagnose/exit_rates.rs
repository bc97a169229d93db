//! High exit rates: a VM that leaves guest mode for one reason thousands of times a
//! second per vCPU spends that time in the hypervisor.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Finding, Kind, Thresholds, words::ms_text};
use crate::{account::kvm::VmReport, report::Report};

pub fn findings(r: &Report, t: &Thresholds) -> Vec<Finding> {
    let seconds = r.wall_ns as f64 / 1e9;
    if seconds <= 0.0 {
        return Vec::new();
    }
    r.vms.iter().flat_map(|vm| vm_findings(vm, seconds, t)).collect()
}

/// Per reason: count and handling time (ns, where kvm_entry/kvm_exit give it).
fn reasons(vm: &VmReport) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for v in &vm.vcpus {
        for (reason, e) in v.exits.iter().filter(|(_, e)| !e.guest_idle) {
            let slot = out.entry(reason.clone()).or_default();
            slot.0 += e.count;
            slot.1 += e.latency_ns;
        }
        for (reason, n) in &v.userspace_exits {
            out.entry(reason.clone()).or_default().0 += n;
        }
    }
    out
}

fn vm_findings(vm: &VmReport, seconds: f64, t: &Thresholds) -> Vec<Finding> {
    let vcpus = vm.vcpus.len().max(1) as f64;
    reasons(vm)
        .into_iter()
        .filter_map(|(reason, (count, handling_ns))| {
            let rate = count as f64 / seconds / vcpus;
            (rate >= t.exit_rate_per_s).then(|| {
                let handling = if handling_ns > 0 {
                    format!(", {} spent handling them", ms_text(handling_ns))
                } else {
                    String::new()
                };
                let summary = format!(
                    "VM '{}' exited {count} times for {reason} ({rate:.0} per second per vCPU{handling}).",
                    vm.name
                );
                let facts = BTreeMap::from([
                    ("vm".into(), json!(vm.name)),
                    ("reason".into(), json!(reason)),
                    ("count".into(), json!(count)),
                    ("per_vcpu_per_s".into(), json!(rate)),
                    ("handling_ns".into(), json!(handling_ns)),
                ]);
                Finding { kind: Kind::HighExitRate, cost_ns: handling_ns, summary, remedy: remedy(&reason), facts }
            })
        })
        .collect()
}

/// What usually lowers exits of this reason.
fn remedy(reason: &str) -> String {
    let r = reason.to_ascii_uppercase();
    if r.contains("IO") && !r.contains("MMIO") {
        "Port I/O is emulated device access: give the guest virtio devices (with vhost) instead of emulated ones (e1000, IDE).".into()
    } else if r.contains("MMIO") || r.contains("EPT") || r.contains("NPF") {
        "Memory-mapped device access or guest page faults: use virtio devices, and back the guest with huge pages (libvirt <memoryBacking><hugepages/>).".into()
    } else if r.contains("MSR") || r.contains("APIC") {
        "Timer and interrupt-controller traffic: make sure APICv/AVIC is on (kvm_intel enable_apicv=1, kvm_amd avic=1) and the guest uses x2APIC.".into()
    } else if r.contains("EXTERNAL_INTERRUPT") || r.contains("INTR") {
        "Host interrupts are landing on the vCPUs' cores: steer them elsewhere (irqaffinity=, /proc/irq/*/smp_affinity) and keep the cores quiet with nohz_full= and isolcpus=.".into()
    } else if r.contains("PAUSE") {
        "The guest spins on locks whose holder is not running: pin each vCPU to a core of its own (virsh vcpupin) so that holders are not preempted.".into()
    } else {
        format!(
            "Find what in the guest causes {reason} exits (perf kvm stat live on the host shows them as they happen)."
        )
    }
}
