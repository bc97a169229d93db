//! The running kernel as vmmtrace reads it: BTF, tracefs formats, /proc/kallsyms,
//! the KVM tracepoints' print tables, and /proc itself. These reads need root (and
//! the kvm module for the KVM formats); they are checked here rather than in unit
//! tests, which stay pure.

use std::collections::HashSet;

use tracer_common::kvm_btf_off;
use vmmtrace::{
    host::{HostSnapshot, Role, VmmKind},
    kvm_reasons::{Isa, exit_reason_name, print_symbolic_entries, userspace_exit_name},
    probe::{
        btf::Btf,
        kallsyms::symbol_ranges,
        kvm_btf::KvmBtfPlan,
        table::TRACEPOINTS,
        tracefs::{TracefsError, read_format, tracefs_root},
    },
};
use vmmtrace_tests::*;

#[test]
fn btf_gives_task_pid_and_the_sched_switch_prototype() {
    require_root!();
    // task_struct.pid is somewhere past the start, and sched_switch's tracepoint has
    // the 5.18+ prototype (ctx, preempt, prev, next, prev_state).
    let b = Btf::from_sys_fs().expect("read and parse /sys/kernel/btf/vmlinux");
    let pid = b.member_offset("task_struct", "pid").unwrap();
    let tgid = b.member_offset("task_struct", "tgid").unwrap();
    assert!(pid > 0 && tgid == pid + 4, "pid at {pid}, tgid at {tgid}");
    assert_eq!(b.typedef_proto_params("btf_trace_sched_switch").unwrap(), 5);
}

/// The kernel's run-queue bookkeeping that tp_btf sched_switch reads instead of a
/// sched_wakeup program (design.md, "Wakeups from the kernel's sched_info") is in
/// this kernel's BTF: last_queued and run_delay inside sched_info,
/// and the pointers on the way to rq->clock.
#[test]
fn btf_gives_the_sched_info_fields_that_replace_the_wakeup_program() {
    require_root!();
    use tracer_common::ledger::kfield;
    let o = vmmtrace::probe::sched_info_offsets().expect("this kernel has CONFIG_SCHED_INFO and FAIR_GROUP_SCHED");
    let b = Btf::from_sys_fs().unwrap();
    let info = b.member_offset("task_struct", "sched_info").unwrap();
    for f in [kfield::LAST_QUEUED, kfield::RUN_DELAY] {
        assert!(o[f] >= info && o[f] < info + 128 && o[f].is_multiple_of(8), "{o:?}, sched_info at {info}");
    }
    assert_ne!(o[kfield::LAST_QUEUED], o[kfield::RUN_DELAY]);
    assert!(o[kfield::SE_CFS_RQ] > 0 && o[kfield::SE_CFS_RQ].is_multiple_of(8), "{o:?}");
    assert!(o[kfield::CFS_RQ_RQ].is_multiple_of(8) && o[kfield::RQ_CLOCK].is_multiple_of(8), "{o:?}");
}

/// The kvm tracepoints' prototypes as the tp_btf programs read them (TP_PROTO
/// arguments, not the classic record's fields), and the vendor struct offsets behind
/// kvm_exit's `vcpu` that replace the record's `exit_reason`.
#[test]
fn btf_gives_the_kvm_prototypes_the_tp_btf_programs_read() {
    require_root!();
    let b = Btf::from_sys_fs().expect("read and parse /sys/kernel/btf/vmlinux");
    if b.typedef_proto_params("btf_trace_kvm_exit").is_err() {
        eprintln!("SKIPPED: the kvm tracepoints are not in vmlinux's BTF (kvm built as a module?)");
        return;
    }
    assert_eq!(b.typedef_proto_param_types("btf_trace_kvm_exit").unwrap(), ["void*", "struct kvm_vcpu*", "u32"]);
    assert_eq!(b.typedef_proto_param_types("btf_trace_kvm_userspace_exit").unwrap()[1], "__u32");
    let plan = KvmBtfPlan::choose(false);
    for row in TRACEPOINTS.iter().filter(|r| r.category == "kvm") {
        assert!(plan.btf_program(row.program).is_ok(), "{}: {:?}", row.name, plan.btf_program(row.program));
    }
    // Each backend built in has its exit reason found, at least one is.
    for (vcpu_struct, slot) in [("vcpu_vmx", kvm_btf_off::VMX_EXIT_REASON), ("vcpu_pvm", kvm_btf_off::PVM_EXIT_REASON)]
    {
        if b.has_struct(vcpu_struct) {
            let expected =
                b.member_offset(vcpu_struct, "exit_reason").unwrap() - b.member_offset(vcpu_struct, "vcpu").unwrap();
            assert_eq!(plan.offsets[slot], expected, "{vcpu_struct}");
        }
    }
    if b.has_struct("vcpu_svm") {
        assert!(plan.offsets[kvm_btf_off::SVM_VMCB] > 0);
    }
    assert!(plan.offsets.iter().any(|&o| o > 0), "{:?}", plan.offsets);
}

#[test]
fn tracefs_formats_give_the_fields_the_probes_read() {
    require_root!();
    let root = tracefs_root().unwrap();
    let f = read_format(&root, "sched", "sched_switch").unwrap();
    assert!(f.offset("sched_switch", "next_pid").unwrap() > f.offset("sched_switch", "prev_state").unwrap());
    assert!(matches!(read_format(&root, "sched", "no_such_tp"), Err(TracefsError::NoTracepoint(_))));
}

#[test]
fn this_kernel_has_a_guest_irq_handoff() {
    require_root!();
    // PVM here (pvm_do_event_irqoff), VMX elsewhere: at least one must resolve
    // (addresses are hidden from non-root readers).
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let r = symbol_ranges(&text, &tracer_common::kvm::GUEST_IRQ_FUNCTIONS);
    assert!(r.iter().any(|(s, e)| *s != 0 && e > s), "{r:x?}");
}

/// The exit reason tables against this kernel's own (`__print_symbolic` in the
/// kvm_exit and kvm_userspace_exit formats). The unit tests check verbatim copies.
#[test]
fn exit_reason_tables_match_this_kernels_print_fmt() {
    require_root!();
    let root = tracefs_root().unwrap();
    let format = |event: &str| std::fs::read_to_string(root.join("events/kvm").join(event).join("format"));
    let Ok(exit) = format("kvm_exit") else {
        eprintln!("skipped: no kvm:kvm_exit tracepoint (kvm module not loaded)");
        return;
    };
    // The VMX table comes first in the print fmt, the SVM table second.
    let vmx_at = exit.find("__print_symbolic(REC->exit_reason & 0xffff").expect("VMX table");
    let svm_at = exit.find("__print_symbolic(REC->exit_reason,").expect("SVM table");
    for (isa, at, at_least) in [(Isa::Vmx, vmx_at, 60), (Isa::Svm, svm_at, 100)] {
        let entries = print_symbolic_entries(&exit[at..]).expect("a __print_symbolic table");
        assert!(entries.len() >= at_least, "parsed only {} {isa:?} entries", entries.len());
        for (value, name) in &entries {
            assert_eq!(exit_reason_name(isa, *value), name.as_str(), "{isa:?} {value:#x}");
        }
    }
    let userspace = format("kvm_userspace_exit").unwrap();
    for (value, name) in print_symbolic_entries(&userspace).expect("a __print_symbolic table") {
        assert_eq!(userspace_exit_name(value), name.as_str(), "KVM_EXIT {value}");
    }
}

/// Discovers this test process's own threads on the real /proc: a thread named like
/// a QEMU vCPU makes the process a VMM; a thread pinned to one CPU is `pinned`.
#[test]
fn discovers_own_threads() {
    let pid = std::process::id();
    let online = online_cpus();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u32>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let pin_to = online[0];
    let vcpu = std::thread::Builder::new()
        .name("CPU 5/KVM".to_string())
        .spawn(move || {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
            // sched_setaffinity(0, ..) only touch this thread's mask.
            unsafe {
                let mut mask: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(pin_to as usize, &mut mask);
                assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &mask), 0);
            }
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            ready_tx.send(tid).unwrap();
            done_rx.recv().ok();
        })
        .unwrap();
    let vcpu_tid = ready_rx.recv().unwrap();

    let snap = HostSnapshot::discover(&HashSet::new(), &HashSet::new()).unwrap();
    done_tx.send(()).unwrap();
    vcpu.join().unwrap();

    assert_eq!(snap.online_cpus, online);
    let vm = snap.vm_by_pid(pid).expect("this process is a VMM: it has a \"CPU 5/KVM\" thread");
    assert_eq!((vm.name.clone(), vm.kind), (pid.to_string(), VmmKind::Other));
    assert_eq!(vm.vcpus, vec![vcpu_tid]);
    let id = &snap.threads[&vcpu_tid];
    assert_eq!((id.role, id.vcpu_index, id.pid, id.comm.as_str()), (Role::Vcpu, Some(5), pid, "CPU 5/KVM"));
    assert_eq!(id.affinity, vec![pin_to]);
    assert_eq!(id.pinned, online.len() > 1);
    let main = &snap.threads[&pid];
    assert_eq!((main.role, main.vm_pid), (Role::Vmm, Some(pid)));
    // Kernel threads (none are visible inside a container's pid namespace) are
    // HostKernel unless they work for a VM.
    for id in snap.threads.values().filter(|id| id.kernel_thread) {
        assert!(matches!(id.role, Role::HostKernel | Role::Vmm), "{id:?}");
    }
}
