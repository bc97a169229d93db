//! Who took the time: per victim (a vCPU or a job thread), its run-queue wait split by
//! thief: the top threads by name, the rest by role, each in its role's colour.

use super::{
    model::{Bar, BarChart, ms},
    palette::Category,
};
use crate::{host::Role, report::Report};

/// Victims shown, longest wait first, and thieves named per victim.
const VICTIMS: usize = 12;
const NAMED_THIEVES: usize = 3;

pub fn chart(r: &Report) -> BarChart {
    let mut bars = Vec::new();
    if let Some(ledger) = &r.ledger {
        for v in ledger.victims.iter().filter(|v| is_victim_role(r, v.tid, &v.role)).take(VICTIMS) {
            let mut bar = Bar::new(victim_label(r, v.tid, &v.comm));
            let mut by_role = v.by_thief_role_ns.clone();
            for p in ledger.pairs.iter().filter(|p| p.victim == v.tid && p.thief != 0).take(NAMED_THIEVES) {
                if let Some(left) = by_role.get_mut(&p.thief_role) {
                    *left = left.saturating_sub(p.ns);
                }
                let label = format!("{}[{}]", p.thief_comm, p.thief);
                bar.push_labelled(Category::of_role_name(&p.thief_role), ms(p.ns), Some(label));
            }
            for (role, ns) in by_role {
                bar.push_labelled(Category::of_role_name(&role), ms(ns), None);
            }
            bars.push(bar);
        }
    }
    let notes = if r.ledger.is_none() {
        vec!["This report has no ledger (a vmmtrace/1 file, or recorded with --no-ledger).".to_string()]
    } else {
        vec![
            "Each bar is a thread's run-queue wait, split by who ran on its CPU meanwhile: the top threads named,"
                .to_string(),
            "the rest by role, in the role's colour; idle = the CPU was idle (wake-up latency).".to_string(),
        ]
    };
    BarChart {
        name: "who_took",
        title: "Who took the time: run-queue wait of vCPUs and jobs, by thief".into(),
        unit: "run-queue wait (ms)".into(),
        bars,
        notes,
    }
}

/// vCPUs and the traced job's threads are the victims the chart is for.
fn is_victim_role(r: &Report, tid: u32, role: &str) -> bool {
    matches!(role, "vcpu" | "workload") || r.thread(tid).is_some_and(|t| matches!(t.role, Role::Vcpu | Role::Workload))
}

fn victim_label(r: &Report, tid: u32, comm: &str) -> String {
    let vcpu = r.vms.iter().find_map(|vm| vm.vcpus.iter().find(|v| v.tid == tid).map(|v| (vm, v)));
    match vcpu {
        Some((vm, v)) => {
            format!("{} vCPU {} [{tid}]", vm.name, v.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into()))
        }
        None => format!("job {comm} [{tid}]"),
    }
}
