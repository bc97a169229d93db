//! Attribution: where the CPU time went, as stacked bars by category for the whole
//! host, each VM, each vCPU and the traced job's busiest threads.

use super::{
    model::{Bar, BarChart, ms},
    palette::Category,
    split::{Splitter, guest_includes_exit_handling, vcpu_split},
};
use crate::{host::Role, report::Report};

/// Job threads shown, busiest first.
const JOB_THREADS: usize = 8;

pub fn chart(r: &Report) -> BarChart {
    let mut bars = vec![host_bar(r)];
    for vm in &r.vms {
        let mut bar = Bar::new(format!("VM {}", vm.name));
        let (guest, overhead) = vm.vcpus.iter().map(vcpu_split).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        bar.push(Category::GuestOrJob, ms(guest));
        bar.push(Category::VcpuOverhead, ms(overhead));
        bar.push(Category::VmmThreads, ms(vm.vmm_threads_ns));
        bars.push(bar);
        for v in &vm.vcpus {
            let index = v.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
            let mut bar = Bar::new(format!("{} vCPU {index} [{}]", vm.name, v.tid));
            let (guest, overhead) = vcpu_split(v);
            bar.push(Category::GuestOrJob, ms(guest));
            bar.push(Category::VcpuOverhead, ms(overhead));
            bar.push(Category::RunqWait, ms(r.runq_wait_ns(v.tid)));
            bars.push(bar);
        }
    }
    for t in r.threads.iter().filter(|t| t.role == Role::Workload).take(JOB_THREADS) {
        let mut bar = Bar::new(format!("job {} [{}]", t.comm, t.tid));
        bar.push(Category::GuestOrJob, ms(t.on_cpu_ns));
        bar.push(Category::RunqWait, ms(r.runq_wait_ns(t.tid)));
        bars.push(bar);
    }
    let mut notes = vec![format!(
        "{:.2} s traced on {} CPUs; the host bar is all CPUs' time; vCPU and job bars add the time they waited for a CPU.",
        r.wall_ns as f64 / 1e9,
        r.cpus.len()
    )];
    if guest_includes_exit_handling(r) {
        notes.push("kvm_exit does not fire on this backend (PVM): guest time includes in-kernel exit handling.".into());
    }
    BarChart {
        name: "attribution",
        title: "Where the CPU time went (by VM, vCPU and job)".into(),
        unit: "CPU time (ms)".into(),
        bars,
        notes,
    }
}

/// All CPUs' time by category, idle included.
fn host_bar(r: &Report) -> Bar {
    let split = Splitter::new(r);
    let mut by_category = std::collections::BTreeMap::<Category, f64>::new();
    for t in &r.threads {
        for (cat, share) in split.fractions(t) {
            *by_category.entry(cat).or_default() += share * ms(t.on_cpu_ns);
        }
    }
    *by_category.entry(Category::Idle).or_default() += r.cpus.iter().map(|c| ms(c.idle_ns)).sum::<f64>();
    let mut bar = Bar::new("host (all CPUs)");
    for (cat, value) in by_category {
        bar.push(cat, value);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::fixtures::one_vm_report;

    #[test]
    fn bars_for_the_host_each_vm_and_each_vcpu() {
        let c = chart(&one_vm_report());
        let labels: Vec<&str> = c.bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["host (all CPUs)", "VM web", "web vCPU 0 [101]", "job bzip2 [300]"]);
        // The host bar holds every CPU's time: 2 CPUs x 1 s.
        assert!((c.bars[0].total() - 2000.0).abs() < 1e-6, "{}", c.bars[0].total());
        let vm = &c.bars[1];
        assert_eq!(
            vm.segments.iter().map(|s| s.category).collect::<Vec<_>>(),
            [Category::GuestOrJob, Category::VcpuOverhead, Category::VmmThreads]
        );
        assert!((vm.segments[2].value - 150.0).abs() < 1e-6);
    }
}
