//! Real QEMU traced by the real probes: userspace exits per vCPU against the guest's
//! own count, and the roles of every QEMU thread in the report.
//!
//! Needs qemu-system-x86_64 and /dev/kvm. Without /dev/kvm QEMU runs under TCG (no
//! KVM_RUN, no KVM exits): the test then checks only that the VM and its threads are
//! found and says that the exit counts were not checked.

use vmm_qemu::{Accel, ThreadRole, Workload};
use vmmtrace::{
    host::{Role, VmmThreadKind},
    probe::ProbeOptions,
    report::Report,
};
use vmmtrace_tests::{Session, require_root};

fn traced_qemu(cfg: &vmm_qemu::Config) -> (Report, vmm_qemu::GroundTruth) {
    // Boot first: the firmware's exits and the "ready" lines are not part of the count;
    // the vCPUs now spin at their gate without exits, inside KVM_RUN.
    let vm = vmm_qemu::Vm::boot(cfg).unwrap_or_else(|e| panic!("boot QEMU: {e}"));
    let mut session = Session::attach(&ProbeOptions::default());
    session.mark_vcpus_in_kvm_run();
    session.start();
    let truth = vm.start().wait().unwrap_or_else(|e| panic!("QEMU run: {e}"));
    (session.finish(), truth)
}

#[test]
fn userspace_exits_per_vcpu_equal_the_guests_count_and_qemu_threads_have_their_roles() {
    require_root!();
    let cfg = vmm_qemu::Config {
        name: Some(format!("vmmtrace-traced-{}", std::process::id())),
        vcpus: 2,
        workload: Workload::Bzip2,
        work: 6,
        exit_every: 1,
        bzip2_unit_bytes: 64 << 10,
        iothreads: 1,
        pin_vcpus: Some(vec![0, 1]),
        ..Default::default()
    };
    let (report, truth) = traced_qemu(&cfg);
    assert_eq!(report.dropped_events, 0);
    let vm = report
        .vms
        .iter()
        .find(|v| v.pid == truth.pid)
        .unwrap_or_else(|| panic!("no VM {} in {:?}", truth.pid, report.vms));
    assert_eq!(vm.name, truth.name);
    assert_eq!(vm.kind, "qemu");

    // Every non-vCPU thread of QEMU is a VMM thread of this VM, of the kind QMP and
    // /proc say (the RCU thread is told by name only where vCPUs are named "CPU n/KVM").
    let kvm = truth.accel == Accel::Kvm;
    for t in truth.threads.iter().filter(|t| t.role != ThreadRole::Vcpu) {
        let r = vm.vmm_threads.iter().find(|v| v.tid == t.tid);
        let r = r.unwrap_or_else(|| panic!("{t:?} not among {:?}", vm.vmm_threads));
        let expected = match t.role {
            ThreadRole::MainLoop => Some(VmmThreadKind::MainLoop),
            ThreadRole::Rcu if kvm => Some(VmmThreadKind::Rcu),
            ThreadRole::IoThread => Some(VmmThreadKind::IoThread),
            ThreadRole::KvmNxLpageRecovery => Some(VmmThreadKind::KvmWorker),
            ThreadRole::Worker => Some(VmmThreadKind::Worker),
            _ => None,
        };
        if let Some(kind) = expected {
            assert_eq!(r.kind, kind, "{t:?}");
        }
        if let Some(th) = report.thread(t.tid) {
            assert_eq!((th.role, th.vm.as_deref()), (Role::Vmm, Some(truth.name.as_str())), "{t:?}");
        }
    }
    let main = report.thread(truth.pid).expect("QEMU's main loop ran during the trace");
    assert_eq!(main.role, Role::Vmm);

    if !kvm {
        eprintln!("no /dev/kvm: QEMU ran under TCG, so there were no KVM exits to count; exit counts NOT checked");
        return;
    }
    assert_eq!(vm.vcpus.len(), 2);
    for t in &truth.vcpus {
        let v = vm.vcpus.iter().find(|v| v.tid == t.tid).expect("vCPU in the report");
        assert_eq!(v.index, Some(t.index));
        let th = report.thread(t.tid).expect("vCPU thread in the report");
        assert_eq!((th.role, th.vcpu), (Role::Vcpu, Some(t.index)));
        assert_eq!(th.comm, format!("CPU {}/KVM", t.index));
        // Exactly the port exits the guest counted after "go" (progress bytes, its
        // result line, the final isa-debug-exit), every one served by QEMU.
        let io = v.userspace_exits.get("KVM_EXIT_IO").copied().unwrap_or(0);
        assert_eq!(io, t.exits["io"], "vCPU {}: {:?}", t.index, v.userspace_exits);
        assert_eq!(t.progress_exits, cfg.expected_progress_exits());
        // The only other return to userspace: a halted vCPU interrupted once when the
        // other vCPU ends QEMU (exit_group).
        for (reason, n) in v.userspace_exits.iter().filter(|(r, _)| *r != "KVM_EXIT_IO") {
            assert!(reason == "KVM_EXIT_INTR" && *n <= 1, "vCPU {}: {:?}", t.index, v.userspace_exits);
        }
        assert!(v.kvm_run_ns > 10 * v.vmm_user_ns, "{v:?}");
    }
}

/// An unmodified program under QEMU: every port access of its system-call path (the
/// byte to vmmtrace, the line-status polls, the answer byte) is one `KVM_EXIT_IO` on
/// the vCPU, exactly as many as the guest counted.
#[test]
fn a_guest_programs_system_calls_are_its_userspace_exits() {
    require_root!();
    use microvm::guest_program::{Policy, ProgramSpec};
    let spec = ProgramSpec::from_command(std::path::Path::new("/usr/games/gnugo"), &["--version".into()])
        .expect("gnugo (apt-get install gnugo)");
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    use std::os::fd::AsRawFd as _;
    let policy = Policy { stdio: [0, devnull.as_raw_fd(), 2], ..Default::default() };
    let opts = vmm_qemu::program::ProgramOptions { mem_mib: 256, ..Default::default() };
    let booted = vmm_qemu::program::boot(&spec, policy, &opts).unwrap_or_else(|e| panic!("gnugo under QEMU: {e}"));
    let mut session = Session::attach(&ProbeOptions::default());
    session.mark_vcpus_in_kvm_run();
    session.start();
    let truth = booted.run().unwrap_or_else(|e| panic!("gnugo under QEMU: {e}"));
    let report = session.finish();
    assert_eq!(truth.exit_status, 0);
    assert!(truth.vcpu.exits["io"] > 3 * truth.syscalls.total);
    let vm = report.vms.iter().find(|v| v.pid == truth.pid).expect("the QEMU VM in the report");
    let main = vm.vmm_threads.iter().find(|t| t.tid == truth.pid).expect("main loop");
    assert_eq!(main.kind, VmmThreadKind::MainLoop);
    if truth.accel != Accel::Kvm {
        eprintln!("no /dev/kvm: QEMU ran under TCG; exit counts NOT checked");
        return;
    }
    let v = vm.vcpus.iter().find(|v| v.tid == truth.vcpu.tid).expect("the vCPU in the report");
    // Traced from the gate on: exactly the guest's count.
    let io = v.userspace_exits.get("KVM_EXIT_IO").copied().unwrap_or(0);
    assert_eq!(io, truth.vcpu.exits["io"], "{:?}", v.userspace_exits);
    assert!(v.userspace_exits.keys().all(|r| r == "KVM_EXIT_IO"), "{:?}", v.userspace_exits);
}
