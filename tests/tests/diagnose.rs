//! `diagnose` on real traces: the study's KVM case (a pinned vCPU whose core VMM
//! threads keep taking) named with the thread, the vCPU, the lost time as the ledger
//! has it and the emulatorpin remedy; and a scenario with nothing wrong that gets no
//! such finding. The host-only analogue runs anywhere (root); the micro-VM case needs
//! /dev/kvm.

use std::time::Duration;

use vmmtrace::{
    diagnose::{Finding, Kind, Thresholds, diagnose},
    probe::ProbeOptions,
    report::Report,
};
use vmmtrace_tests::*;

/// Runs the named threads to completion inside one trace; returns the report and
/// their tids.
fn traced(threads: Vec<Work>) -> (Report, Vec<u32>) {
    let (report, runs) = trace_threads(&ProbeOptions::default(), threads);
    (report, runs.iter().map(|r| r.tid).collect())
}

/// The finding about VMM threads on `vcpu`'s core, checked against the ledger: the
/// time it names is what the vCPU's `lost_to` charges to VMM threads.
fn vmm_finding<'a>(report: &Report, findings: &'a [Finding], vcpu: u32) -> &'a Finding {
    let f = findings
        .iter()
        .find(|f| f.kind == Kind::VmmThreadOnVcpuCore && f.facts["vcpu_tid"] == vcpu)
        .unwrap_or_else(|| panic!("no finding about VMM threads on vCPU {vcpu}'s core: {findings:#?}"));
    let v = report.vms.iter().flat_map(|vm| &vm.vcpus).find(|v| v.tid == vcpu).expect("the vCPU is in vms[]");
    let ledger_ns: u64 = v.lost_to.iter().filter(|t| t.role == "vmm").map(|t| t.ns).sum();
    assert_eq!(f.facts["lost_to_vmm_ns"], ledger_ns, "the finding's lost time is the ledger's");
    assert!(f.remedy.contains("virsh emulatorpin"), "{}", f.remedy);
    eprintln!("{}\n  Remedy: {}", f.summary, f.remedy);
    f
}

#[test]
fn a_pinned_vcpu_thread_and_floating_busy_vmm_threads_host_only_analogue() {
    require_root!();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "this test needs 2 CPUs");
    let spin = Duration::from_millis(2000);
    // The process becomes a VM to discovery by its thread named like QEMU's vCPU 0;
    // its other threads are its VMM threads. One more busy thread than CPUs floats.
    let mut threads: Vec<Work> = vec![("CPU 0/KVM", Box::new(spin_on(cpus[1], spin)))];
    let floaters = ["IO mon_iothread", "qemu-main", "IO iothread1", "IO iothread2"];
    for name in floaters.iter().take(cpus.len().min(floaters.len())) {
        threads.push((name, Box::new(move || spin_for(spin))));
    }
    let (report, tids) = traced(threads);
    let findings = diagnose(&report, &Thresholds::default());
    let f = vmm_finding(&report, &findings, tids[0]);
    assert!(f.summary.starts_with("vCPU 0 of VM"), "{}", f.summary);
    assert!(
        tids[1..].iter().any(|tid| f.summary.contains(&format!("(tid {tid})"))),
        "names a floating thread: {}",
        f.summary
    );
    assert!(f.summary.contains("not pinned"), "{}", f.summary);
}

#[test]
fn nothing_wrong_a_pinned_vcpu_thread_and_a_vmm_thread_pinned_elsewhere() {
    require_root!();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "this test needs 2 CPUs");
    let spin = Duration::from_millis(1500);
    let (report, tids) =
        traced(vec![("CPU 0/KVM", Box::new(spin_on(cpus[1], spin))), ("qemu-main", Box::new(spin_on(cpus[0], spin)))]);
    let findings = diagnose(&report, &Thresholds::default());
    for f in &findings {
        eprintln!("finding (other processes of this shared host may cause some): {}", f.summary);
    }
    let blames_ours = findings.iter().any(|f| {
        matches!(f.kind, Kind::VmmThreadOnVcpuCore | Kind::VcpusShareCpu)
            && (f.summary.contains(&format!("(tid {})", tids[1])) || f.facts.get("vcpu_tid") == Some(&tids[0].into()))
    });
    assert!(!blames_ours, "a VMM thread pinned away from the vCPU's core is not a finding: {findings:#?}");
}

/// The study's KVM case on a real micro-VM: its vCPU pinned to a CPU where its own
/// emulator thread, kept busy, is pinned too (as a wrong emulatorpin would do).
#[test]
fn microvm_vcpu_losing_its_core_to_the_emulator_is_diagnosed() {
    require_kvm!();
    let cpus = online_cpus();
    let cfg = vcpu_sharing_its_cpu_with_a_busy_emulator(cpus[0]);
    let mut session = Session::attach(&ProbeOptions::default());
    session.start();
    let vm = microvm::spawn(&cfg).unwrap_or_else(|e| panic!("start the micro-VM: {e}"));
    let (vcpu, emulator) = (vm.vcpu_tids()[0], vm.emulator_tid());
    vm.wait().expect("micro-VM run");
    let report = session.finish();
    let findings = diagnose(&report, &Thresholds::default());
    let f = vmm_finding(&report, &findings, vcpu);
    assert!(f.summary.contains(&format!("(tid {emulator})")), "names the emulator thread: {}", f.summary);
}
