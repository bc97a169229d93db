//! Exits: per VM, the rate of each exit reason (kvm_exit), of each userspace exit
//! (KVM_EXIT_*), and, where kvm_exit does not fire (PVM), of the KVM events seen
//! instead.

use std::collections::BTreeMap;

use super::{
    model::{Bar, BarChart},
    palette::Category,
};
use crate::report::Report;

/// Reasons shown per VM, most frequent first.
const REASONS: usize = 12;

/// Per reason: the count, and whether the guest was idle (HLT-like exits).
type Counts = BTreeMap<String, (u64, bool)>;

pub fn chart(r: &Report) -> BarChart {
    let seconds = (r.wall_ns as f64 / 1e9).max(1e-9);
    let mut bars = Vec::new();
    for vm in &r.vms {
        let mut counts = Counts::new();
        for v in &vm.vcpus {
            for (reason, e) in &v.exits {
                add(&mut counts, format!("exit {reason}"), e.count, e.guest_idle);
            }
            for (reason, n) in &v.userspace_exits {
                add(&mut counts, format!("to VMM {reason}"), *n, false);
            }
            for (event, n) in &v.kvm_events {
                add(&mut counts, format!("event {event}"), *n, false);
            }
        }
        let mut rows: Vec<(String, (u64, bool))> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        for (reason, (count, idle)) in rows.into_iter().take(REASONS) {
            let mut bar = Bar::new(format!("{}: {reason}", vm.name));
            let cat = if idle { Category::Idle } else { Category::VcpuOverhead };
            bar.push_labelled(cat, count as f64 / seconds, Some(count.to_string()));
            bars.push(bar);
        }
    }
    let notes = if r.vms.is_empty() {
        vec!["No VM ran during the trace.".into()]
    } else if bars.is_empty() {
        vec!["The probes saw no exit and no KVM event of the VMs in this trace.".into()]
    } else {
        vec![
            "exit: kvm_exit by reason (HLT-like exits in the idle colour); to VMM: exits to userspace (KVM_EXIT_*);"
                .into(),
            "event: KVM tracepoints that fire where kvm_exit does not (PVM). Numbers in bars are counts.".into(),
        ]
    };
    BarChart {
        name: "exits",
        title: "Exits per reason, per VM".into(),
        unit: "per second of trace".into(),
        bars,
        notes,
    }
}

fn add(counts: &mut Counts, reason: String, n: u64, idle: bool) {
    let slot = counts.entry(reason).or_insert((0, idle));
    slot.0 += n;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::fixtures::one_vm_report;

    #[test]
    fn reasons_by_rate_most_frequent_first() {
        let c = chart(&one_vm_report());
        let labels: Vec<&str> = c.bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["web: exit HLT", "web: exit IO_INSTRUCTION", "web: to VMM KVM_EXIT_IO"]);
        assert_eq!(c.bars[0].segments[0].category, Category::Idle);
        // 1 s traced: the rate is the count.
        assert!((c.bars[1].total() - 500.0).abs() < 1e-6);
    }

    #[test]
    fn no_vm_no_bars_and_says_so() {
        let mut r = one_vm_report();
        r.vms.clear();
        let c = chart(&r);
        assert!(c.bars.is_empty());
        assert!(c.notes[0].contains("No VM"));
    }
}
