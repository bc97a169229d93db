//! A vCPU's run-queue wait by cause: who had its CPU while it waited (the ledger's
//! per-victim totals by thief role), beyond what a finding about VMM threads on its
//! core already says.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Finding, Kind, Thresholds,
    words::{ms_text, pct, vcpu_name, vcpu_wait},
};
use crate::{account::kvm::VcpuReport, report::Report};

/// `explained`: per vCPU tid, wait time another finding already accounts for.
pub fn findings(r: &Report, t: &Thresholds, explained: &BTreeMap<u32, u64>) -> Vec<Finding> {
    let Some(ledger) = &r.ledger else { return Vec::new() };
    let mut out = Vec::new();
    for vm in &r.vms {
        for v in &vm.vcpus {
            let (wait, alive) = vcpu_wait(r, v);
            let rest = wait.saturating_sub(explained.get(&v.tid).copied().unwrap_or(0));
            if rest < t.min_wait_ns || pct(rest, alive) < t.min_wait_pct {
                continue;
            }
            let Some(victim) = ledger.victims.iter().find(|x| x.tid == v.tid) else { continue };
            let already = explained.get(&v.tid).copied().unwrap_or(0);
            let mut by_role = victim.by_thief_role_ns.clone();
            if let Some(vmm) = by_role.get_mut("vmm") {
                *vmm = vmm.saturating_sub(already);
            }
            let mut causes: Vec<(&String, &u64)> = by_role.iter().filter(|(_, ns)| **ns > 0).collect();
            causes.sort_by_key(|(_, ns)| std::cmp::Reverse(**ns));
            let words: Vec<String> =
                causes.iter().map(|(role, ns)| format!("{} {}", cause_name(role), ms_text(**ns))).collect();
            let beyond = if already > 0 {
                format!(", {} beyond the VMM threads named above", ms_text(rest))
            } else {
                String::new()
            };
            let summary = format!(
                "{} waited {} ({:.1} % of its run) for a CPU{beyond}; its CPU went meanwhile to: {}.",
                vcpu_name(&vm.name, v),
                ms_text(wait),
                pct(wait, alive),
                words.join(", ")
            );
            let top = causes.first().map(|(role, _)| role.as_str()).unwrap_or("");
            let facts = BTreeMap::from([
                ("vm".into(), json!(vm.name)),
                ("vcpu".into(), json!(v.index)),
                ("vcpu_tid".into(), json!(v.tid)),
                ("runq_wait_ns".into(), json!(wait)),
                ("alive_ns".into(), json!(alive)),
                ("by_thief_role_ns".into(), json!(victim.by_thief_role_ns)),
            ]);
            out.push(Finding {
                kind: Kind::VcpuRunqWait,
                cost_ns: rest,
                summary,
                remedy: remedy(top, &vm.name, v),
                facts,
            });
        }
    }
    out
}

fn cause_name(role: &str) -> String {
    match role {
        "vcpu" => "other vCPUs".into(),
        "vmm" => "VMM threads".into(),
        "host_kernel" => "host kernel threads".into(),
        "workload" => "the traced job".into(),
        "other" => "other host processes".into(),
        "idle" => "nobody (the CPU was idle: wake-up latency)".into(),
        "unresolved" => "threads the ledger could not name".into(),
        r => r.to_string(),
    }
}

fn remedy(top_cause: &str, vm: &str, v: &VcpuReport) -> String {
    let index = v.index.unwrap_or(0);
    match top_cause {
        "vcpu" => format!("Give each vCPU a core of its own: virsh vcpupin {vm} {index} <cpu>, with no other vCPU on that <cpu>."),
        "vmm" => format!("Keep the VMM threads off the vCPUs' cores: virsh emulatorpin {vm} <cpus no vCPU uses>, virsh iothreadpin for iothreads."),
        "host_kernel" => "Keep the host kernel's work off the vCPUs' cores: isolcpus= and nohz_full= on the kernel command line, irqaffinity= (or /proc/irq/*/smp_affinity) for interrupts.".into(),
        "other" | "workload" => format!(
            "Reserve the vCPUs' cores for the VM: put the host's other work in a cgroup cpuset without them (systemd AllowedCPUs=, or taskset), and pin the vCPUs there (virsh vcpupin {vm} {index} <cpu>)."
        ),
        "idle" => "The CPU was idle while the vCPU waited: this is wake-up latency (deep idle states); cpupower idle-set -D 10 or the guest's haltpoll cpuidle driver shortens it.".into(),
        _ => "Run vmmtrace record again with a larger ledger (--ledger-top) to name who took the time.".into(),
    }
}
