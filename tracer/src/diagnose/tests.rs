//! Findings on hand-made reports: each finding where its cause is, none where
//! nothing is wrong.

use super::*;
use crate::report::charts::fixtures::one_vm_report;

fn kinds(r: &Report) -> Vec<Kind> {
    diagnose(r, &Thresholds::default()).iter().map(|f| f.kind).collect()
}

#[test]
fn nothing_wrong_no_finding() {
    let r = one_vm_report();
    assert_eq!(kinds(&r), []);
    assert!(render_text(&diagnose(&r, &Thresholds::default())).starts_with("No finding"));
}

#[test]
fn two_vcpus_pinned_to_one_cpu() {
    let mut r = one_vm_report();
    let mut second = r.vms[0].vcpus[0].clone();
    second.index = Some(1);
    second.tid = 103;
    r.vms[0].vcpus.push(second);
    let f = diagnose(&r, &Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].kind, Kind::VcpusShareCpu);
    assert!(
        f[0].summary.contains("vCPU 0 of VM 'web' and vCPU 1 of VM 'web' are pinned to the same CPU 1"),
        "{}",
        f[0].summary
    );
    assert_eq!(f[0].remedy, "Give each vCPU a CPU of its own: virsh vcpupin web 1 0 (CPUs no vCPU is pinned to: 0).");
}

#[test]
fn every_core_busy() {
    let mut r = one_vm_report();
    for c in &mut r.cpus {
        c.idle_ns = r.wall_ns / 100;
    }
    assert_eq!(kinds(&r), [Kind::EveryCoreBusy]);
    let t = Thresholds { busy_idle_pct: 0.5, ..Thresholds::default() };
    assert!(diagnose(&r, &t).is_empty(), "1 % idle is not busy at a 0.5 % threshold");
}

#[test]
fn high_exit_rate_with_a_remedy_for_its_reason() {
    let mut r = one_vm_report();
    r.vms[0].vcpus[0].exits.get_mut("IO_INSTRUCTION").unwrap().count = 50_000;
    r.vms[0].vcpus[0].exits.get_mut("HLT").unwrap().count = 90_000;
    let f = diagnose(&r, &Thresholds::default());
    assert_eq!(f.len(), 1, "HLT is the guest idling, not overhead: {f:?}");
    assert!(
        f[0].summary.contains("exited 50000 times for IO_INSTRUCTION (50000 per second per vCPU"),
        "{}",
        f[0].summary
    );
    assert!(f[0].remedy.contains("virtio"));
    assert_eq!(f[0].facts["count"], 50_000);
}
