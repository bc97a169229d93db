//! KVM awareness against the micro-VM's own ground truth: a real KVM guest with two
//! vCPUs and a known number of exits, traced by the real probes.

use vmmtrace::{
    host::Role,
    probe::{ProbeOptions, kvm_btf::KvmBtfPlan, table::TRACEPOINTS},
    report::Report,
};
use vmmtrace_tests::*;

/// A micro-VM lives in this test process, so two at once would be one VMM process
/// with the vCPUs of both: the session lock runs them one at a time.
fn traced_vm(cfg: &microvm::Config) -> (Report, microvm::GroundTruth) {
    trace(&ProbeOptions::default(), || {
        let vm = microvm::spawn(cfg).expect("start the micro-VM (needs /dev/kvm)");
        vm.wait().expect("micro-VM run")
    })
}

#[test]
fn vcpus_exits_and_kvm_run_split_match_the_vms_own_counts() {
    require_kvm!();
    let cfg = microvm::Config {
        vcpus: 2,
        workload: microvm::Workload::Bzip2,
        work: 48,
        exit_every: 2,
        timer_hz: 250,
        pin_vcpus: Some(vec![0, 1]),
        ..Default::default()
    };
    let (report, truth) = traced_vm(&cfg);
    assert_eq!(report.dropped_events, 0);
    let vm = report
        .vms
        .iter()
        .find(|v| v.vcpus.iter().any(|c| c.tid == truth.vcpus[0].tid))
        .unwrap_or_else(|| panic!("no VM with vCPU tid {} in {:?}", truth.vcpus[0].tid, report.vms));
    assert_eq!(vm.pid, truth.pid);
    assert_eq!(vm.vcpus.len(), 2);
    for t in &truth.vcpus {
        let v = vm.vcpus.iter().find(|v| v.tid == t.tid).expect("vCPU in report");
        // Exits to userspace: exactly what the VMM handled (every KVM_RUN return).
        assert_eq!(t.exits.get("io").copied(), Some(cfg.work / cfg.exit_every + 1));
        let io = v.userspace_exits.get("KVM_EXIT_IO").copied().unwrap_or(0);
        assert_eq!(io, t.exits["io"], "vCPU {}: {:?}", t.index, v.userspace_exits);
        assert_eq!(v.userspace_exits.values().sum::<u64>(), t.vmm.kvm_run_calls);
        // Role and index.
        assert_eq!(v.index, Some(t.index));
        let th = report.thread(t.tid).expect("vCPU thread in report");
        assert_eq!(th.role, Role::Vcpu);
        assert_eq!(th.vcpu, Some(t.index));
        assert_eq!(th.comm, format!("CPU {}/KVM", t.index));
        // The split covers the thread's time, which matches the kernel's own count.
        assert_eq!(v.kvm_run_ns + v.vmm_user_ns, v.on_cpu_ns);
        let err = relative_error(v.kvm_run_ns + v.vmm_user_ns, t.sum_exec_runtime_ns);
        eprintln!(
            "vCPU {}: kvm_run {} + vmm_user {} vs the kernel's runtime {} ({:.3}% off); events {:?}",
            t.index,
            v.kvm_run_ns,
            v.vmm_user_ns,
            t.sum_exec_runtime_ns,
            err * 100.0,
            v.kvm_events
        );
        assert!(err < 0.01, "vCPU {}: {:.3}% off", t.index, err * 100.0);
        // Nearly all of a CPU-bound guest's time is inside KVM_RUN.
        assert!(v.kvm_run_ns > 10 * v.vmm_user_ns, "{v:?}");
    }
    // The emulator thread (another thread of this process) is a VMM thread and did work.
    let emu = vm.vmm_threads.iter().find(|t| t.tid == truth.emulator.tid).expect("emulator thread");
    assert!(truth.emulator.work_items > 0);
    assert!(emu.on_cpu_ns > 0, "{emu:?}");
}

#[test]
fn on_a_host_without_kvm_exit_the_split_is_null_with_the_reason_and_pvm_events_are_counted() {
    require_kvm!();
    let fired = {
        let cfg = microvm::Config { vcpus: 1, work: 4, exit_every: 1, timer_hz: 250, ..Default::default() };
        traced_vm(&cfg)
    };
    let (report, truth) = fired;
    let vm = report.vms.iter().find(|v| v.pid == truth.pid).expect("VM");
    let v = vm.vcpus.iter().find(|v| v.tid == truth.vcpus[0].tid).expect("vCPU");
    if report.events.get("kvm_exit").copied().unwrap_or(0) > 0 {
        // A VT-x/AMD-V host: the split is measured.
        assert!(v.guest_ns.is_some() && v.exit_handling_ns.is_some());
        assert!(!v.exits.is_empty());
        return;
    }
    // This PVM host: no zeros pretending to be measurements.
    assert_eq!(v.guest_ns, None);
    assert_eq!(v.exit_handling_ns, None);
    let why = v.split_unavailable.as_deref().expect("a reason");
    assert!(why.contains("kvm_exit never fired"), "{why}");
    let est = v.guest_estimate.as_ref().expect("an estimate section");
    assert!(est.resolution_ns > 0);
    assert!(est.guest_ns.is_some() || est.note.is_some(), "{est:?}");
    assert!(est.guest_ns.unwrap_or(0) <= v.kvm_run_ns);
    // The in-kernel events that do fire are counted on the vCPU thread: port I/O for
    // every exit to userspace, the guest timer's interrupts.
    assert_eq!(v.kvm_events.get("kvm:kvm_pio").copied(), Some(truth.vcpus[0].exits["io"]));
    assert!(v.kvm_events.get("kvm:kvm_apic_accept_irq").copied().unwrap_or(0) > 0, "{:?}", v.kvm_events);
}

/// The sampled guest-time estimate tells a CPU-bound guest from one that spends its
/// time in exits (only where kvm_exit does not fire: elsewhere it is not needed).
#[test]
fn sampled_guest_time_separates_guest_work_from_exit_handling() {
    require_kvm!();
    let share = |cfg: &microvm::Config| {
        let (report, truth) = traced_vm(cfg);
        if report.events.get("kvm_exit").copied().unwrap_or(0) > 0 {
            return None;
        }
        let vm = report.vms.iter().find(|v| v.pid == truth.pid).expect("VM");
        let v = vm.vcpus.iter().find(|v| v.tid == truth.vcpus[0].tid).expect("vCPU");
        let est = v.guest_estimate.as_ref().expect("estimate");
        let g = est.guest_ns.unwrap_or_else(|| panic!("no estimate: {est:?}"));
        eprintln!(
            "{:?}: guest {g} of kvm_run {} ({} + {} samples)",
            cfg.workload, v.kvm_run_ns, v.samples_guest, v.samples_host_kvm
        );
        assert!(v.samples_guest + v.samples_host_kvm >= 50, "too few samples: {v:?}");
        Some(g as f64 / v.kvm_run_ns as f64)
    };
    // bzip2 with an exit per 256 KiB unit: nearly all guest.
    let cpu_bound = microvm::Config { vcpus: 1, work: 12, exit_every: 1, timer_hz: 100, ..Default::default() };
    // A tiny unit of work between exits: mostly exit handling (about 35 us each here).
    let exit_bound = microvm::Config {
        vcpus: 1,
        workload: microvm::Workload::Loop,
        work: 6_000,
        exit_every: 1,
        loop_unit_iters: 50,
        timer_hz: 1000,
        ..Default::default()
    };
    let (Some(a), Some(b)) = (share(&cpu_bound), share(&exit_bound)) else { return };
    assert!(a > 0.8, "CPU-bound guest share {a:.3}");
    assert!(b < 0.5, "exit-bound guest share {b:.3}");
}

/// A guest that entered KVM_RUN before tracing started, and stays there (no exits
/// until it is done), is counted as inside KVM_RUN: discovery at the start sees it in
/// ioctl(KVM_RUN) and marks it.
#[test]
fn a_vcpu_already_inside_kvm_run_when_tracing_starts_counts_as_kvm_run() {
    require_kvm!();
    let cfg = microvm::Config {
        vcpus: 1,
        workload: microvm::Workload::Loop,
        work: 60,
        exit_every: 0,
        timer_hz: 0,
        loop_unit_iters: 20_000_000,
        ..Default::default()
    };
    let vm = microvm::spawn(&cfg).expect("start the micro-VM");
    let mut session = Session::attach(&ProbeOptions::default());
    let tid = vm.vcpu_tids()[0];
    let marked = session.mark_vcpus_in_kvm_run();
    let start = session.start();
    let truth = vm.wait().expect("micro-VM run");
    assert!(
        truth.vcpus[0].end_monotonic_ns > start + 100_000_000,
        "the guest finished before tracing had run 100 ms: make its work longer"
    );
    assert!(marked.contains(&tid), "vCPU {tid} not seen inside KVM_RUN: {marked:?}");
    let report = session.finish();
    let v = report.vms.iter().flat_map(|vm| vm.vcpus.iter()).find(|v| v.tid == tid).expect("vCPU in report");
    eprintln!("kvm_run {} vmm_user {} on_cpu {}", v.kvm_run_ns, v.vmm_user_ns, v.on_cpu_ns);
    assert!(v.on_cpu_ns > 50_000_000);
    assert!(v.kvm_run_ns as f64 > 0.95 * v.on_cpu_ns as f64, "{v:?}");
}

/// The kvm tracepoints as tp_btf programs (where the kernel's BTF allows) and as
/// classic tracepoints count the same exits: each path, on the same guest, against
/// the VMM's own count of exits to userspace (port I/O), which kvm_userspace_exit,
/// kvm_pio and (where it fires) kvm_exit with the I/O reason all see once per exit.
#[test]
fn tp_btf_and_classic_kvm_probes_count_the_same_exits() {
    require_kvm!();
    let cfg = microvm::Config { vcpus: 1, work: 24, exit_every: 2, timer_hz: 250, ..Default::default() };
    let mut io_exits_by_path = Vec::new();
    for classic_kvm in [false, true] {
        let (report, truth) = trace(&ProbeOptions { classic_kvm, ..Default::default() }, || {
            microvm::spawn(&cfg).expect("start the micro-VM (needs /dev/kvm)").wait().expect("micro-VM run")
        });
        let attached = &report.host.features.attached;
        let path = if classic_kvm { "tracepoint" } else { "tp_btf" };
        let userspace_exit = TRACEPOINTS.iter().find(|r| r.name == "kvm_userspace_exit").expect("in the table");
        let btf_usable = KvmBtfPlan::choose(false).btf_program(userspace_exit.program).is_ok();
        if classic_kvm || btf_usable {
            assert!(attached.contains(&format!("{path}:kvm:kvm_userspace_exit")), "{attached:?}");
        }
        assert_eq!(report.dropped_events, 0);
        let vm = report.vms.iter().find(|v| v.pid == truth.pid).expect("VM");
        let v = vm.vcpus.iter().find(|v| v.tid == truth.vcpus[0].tid).expect("vCPU");
        let io = truth.vcpus[0].exits["io"];
        assert_eq!(v.userspace_exits.get("KVM_EXIT_IO").copied(), Some(io), "{path}: {:?}", v.userspace_exits);
        assert_eq!(v.kvm_events.get("kvm:kvm_pio").copied(), Some(io), "{path}: {:?}", v.kvm_events);
        let io_exits: u64 =
            v.exits.iter().filter(|(name, _)| *name == "IO_INSTRUCTION" || *name == "io").map(|(_, e)| e.count).sum();
        if report.events.get("kvm_exit").copied().unwrap_or(0) > 0 {
            assert_eq!(io_exits, io, "{path}: {:?}", v.exits.keys().collect::<Vec<_>>());
        }
        io_exits_by_path.push(io_exits);
    }
    assert_eq!(io_exits_by_path[0], io_exits_by_path[1]);
}
