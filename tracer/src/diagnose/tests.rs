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

const MS: u64 = 1_000_000;

/// The hand-made report with a ledger: vCPU 0 (pinned to CPU 1) waited 100 ms, 80 ms
/// of it while the emulator thread (tid 102, not pinned) had CPU 1, 20 ms while `cc1`
/// (another process) had it.
fn with_ledger() -> Report {
    let mut r = one_vm_report();
    let sched = serde_json::json!({"runq_wait_ns": 100 * MS, "blocked_ns": 400 * MS, "alive_ns": 1000 * MS,
        "closure_error_ns": 0, "state_at_stop": "runnable", "missed_switches": 0, "preemptions": 10,
        "wakeups": 10, "waits": 20, "wait_hist_log2": []});
    r.threads.iter_mut().find(|t| t.tid == 101).unwrap().sched = Some(serde_json::from_value(sched).unwrap());
    let thief = |tid: u32, comm: &str, role: &str, ns: u64| {
        serde_json::from_value(serde_json::json!({"tid": tid, "comm": comm, "role": role, "vm": null, "ns": ns}))
            .unwrap()
    };
    r.vms[0].vcpus[0].lost_to =
        vec![thief(102, "qemu-system-x86", "vmm", 80 * MS), thief(999, "cc1", "other", 20 * MS)];
    let ledger = serde_json::json!({"pairs_total": 2, "pairs": [], "unresolved_ns": {}, "victims": [
        {"tid": 101, "comm": "CPU 0/KVM", "role": "vcpu", "runq_wait_ns": 100 * MS,
         "by_thief_role_ns": {"vmm": 80 * MS, "other": 20 * MS}}]});
    r.ledger = Some(serde_json::from_value(ledger).unwrap());
    r
}

#[test]
fn vmm_threads_on_a_pinned_vcpus_core_then_the_rest_of_its_wait() {
    let f = diagnose(&with_ledger(), &Thresholds::default());
    assert_eq!(f.iter().map(|f| f.kind).collect::<Vec<_>>(), [Kind::VmmThreadOnVcpuCore, Kind::VcpuRunqWait]);
    assert_eq!(
        f[0].summary,
        "vCPU 0 of VM 'web' (pinned to CPU 1) waited 100 ms (10.0 % of its run) for CPU 1; 80 ms of it went to a VMM \
         thread: 'qemu-system-x86' (tid 102) 80 ms, not pinned (allowed on CPUs 0-1), moved 2 times."
    );
    assert!(f[0].remedy.starts_with("Confine the VMM threads away from the vCPUs' cores: virsh emulatorpin web 0 "));
    assert_eq!((f[0].cost_ns, f[0].facts["lost_to_vmm_ns"].as_u64()), (80 * MS, Some(80 * MS)));
    // The 20 ms the VMM finding does not explain, by cause.
    assert_eq!(f[1].cost_ns, 20 * MS);
    assert_eq!(
        f[1].summary,
        "vCPU 0 of VM 'web' waited 100 ms (10.0 % of its run) for a CPU, 20 ms beyond the VMM threads named above; \
         its CPU went meanwhile to: other host processes 20 ms."
    );
    assert!(f[1].remedy.contains("cpuset"), "{}", f[1].remedy);
}

#[test]
fn small_waits_are_below_the_thresholds() {
    let t = Thresholds { min_wait_ns: 200 * MS, ..Thresholds::default() };
    assert!(diagnose(&with_ledger(), &t).is_empty());
    let t = Thresholds { min_wait_pct: 50.0, ..Thresholds::default() };
    assert!(diagnose(&with_ledger(), &t).is_empty());
}
