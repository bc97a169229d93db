//! Per CPU: each CPU's time by category, idle included.

use std::collections::BTreeMap;

use super::{
    model::{Bar, BarChart, ms},
    palette::Category,
    split::{Splitter, guest_includes_exit_handling},
};
use crate::report::Report;

pub fn chart(r: &Report) -> BarChart {
    let split = Splitter::new(r);
    let mut per_cpu: Vec<BTreeMap<Category, f64>> = vec![BTreeMap::new(); r.cpus.len()];
    for t in &r.threads {
        let fractions = split.fractions(t);
        for (cpu, ns) in t.per_cpu_ns.iter().enumerate() {
            let Some(slot) = per_cpu.get_mut(cpu) else { continue };
            for (cat, share) in &fractions {
                *slot.entry(*cat).or_default() += share * ms(*ns);
            }
        }
    }
    let bars = r
        .cpus
        .iter()
        .zip(per_cpu)
        .map(|(c, mut by_category)| {
            *by_category.entry(Category::Idle).or_default() += ms(c.idle_ns);
            let mut bar = Bar::new(format!("CPU {}", c.cpu));
            for (cat, value) in by_category {
                bar.push(cat, value);
            }
            bar
        })
        .collect();
    let mut notes = vec![
        "A vCPU thread's time on each CPU is split into guest and overhead in the proportion of its whole run.".into(),
    ];
    if guest_includes_exit_handling(r) {
        notes.push("kvm_exit does not fire on this backend (PVM): guest time includes in-kernel exit handling.".into());
    }
    BarChart { name: "per_cpu", title: "Each CPU's time by category".into(), unit: "time (ms)".into(), bars, notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::fixtures::one_vm_report;

    #[test]
    fn each_cpu_adds_up_to_the_trace_window() {
        let r = one_vm_report();
        let c = chart(&r);
        assert_eq!(c.bars.len(), 2);
        for b in &c.bars {
            assert!((b.total() - ms(r.wall_ns)).abs() < 1e-6, "{}: {}", b.label, b.total());
        }
    }
}
