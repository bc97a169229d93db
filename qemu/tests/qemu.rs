//! Real QEMU running the guest: results against the host's own computation, QEMU's
//! served I/O against the guest's exit counts, pinning and thread roles against /proc.
//!
//! Needs qemu-system-x86_64 (`apt-get install qemu-system-x86`). With /dev/kvm the
//! guest runs under KVM; without it (accel auto) under TCG, which checks everything
//! here except KVM itself (tracer/tests/qemu_traced.rs traces the KVM exits).

use std::collections::BTreeSet;

use vmm_qemu::{Config, GroundTruth, ThreadRole, Workload};

fn run(cfg: &Config) -> GroundTruth {
    vmm_qemu::run(cfg).unwrap_or_else(|e| panic!("QEMU run failed: {e}"))
}

/// Bytes of the console lines the guest printed after "go" (QEMU wrote each one out
/// for one port exit), with their newlines.
fn console_bytes_after_go(t: &GroundTruth) -> u64 {
    t.console.iter().filter(|l| !l.starts_with("vmmtrace-qemu: ready ")).map(|l| l.len() as u64 + 1).sum()
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `Cpus_allowed_list` of a thread, read here rather than with the crate's helper.
fn proc_affinity(pid: u32, tid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).expect("thread status");
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list").trim().to_string()
}

#[test]
fn loop_checksums_equal_the_hosts_and_every_exit_is_accounted_for() {
    let cfg = Config { vcpus: 2, workload: Workload::Loop, work: 10, exit_every: 3, ..Default::default() };
    let t = run(&cfg);
    assert_eq!(t.vcpus.len(), 2);
    for v in &t.vcpus {
        assert_eq!(v.work_units, 10);
        assert_eq!(v.checksum, microvm::loop_reference(v.index, 10, cfg.loop_unit_iters), "vCPU {}", v.index);
        assert_eq!(v.progress_exits, cfg.expected_progress_exits());
        assert!(v.start_monotonic_ns <= v.end_monotonic_ns);
    }
    // QEMU served exactly the port exits the guest counted: the progress bytes it wrote,
    // the console bytes it printed after "go", and the final isa-debug-exit.
    let guest_counted: u64 = t.vcpus.iter().map(|v| v.exits["io"]).sum();
    assert_eq!(t.progress_bytes, 2 * cfg.expected_progress_exits());
    assert_eq!(guest_counted, t.progress_bytes + console_bytes_after_go(&t) + 1, "{:#?}", t.console);
}

#[test]
fn bzip2_checksums_equal_the_hosts() {
    let cfg = Config { vcpus: 2, workload: Workload::Bzip2, work: 2, bzip2_unit_bytes: 64 << 10, ..Default::default() };
    let t = run(&cfg);
    for v in &t.vcpus {
        let native = microvm::run_native(Workload::Bzip2, v.index, 2, 64 << 10, cfg.loop_unit_iters);
        assert_eq!(native.status, 0);
        assert_eq!((v.work_units, v.checksum), (native.work_units, native.checksum), "vCPU {}", v.index);
    }
    assert_ne!(t.vcpus[0].checksum, t.vcpus[1].checksum, "each vCPU compresses its own data");
}

#[test]
fn pinning_is_applied_as_asked() {
    let last = online_cpus() - 1;
    let cfg = Config {
        vcpus: 2,
        workload: Workload::Loop,
        work: 2,
        pin_vcpus: Some(vec![last, 0]),
        pin_vmm: Some(vec![last]),
        iothreads: 1,
        ..Default::default()
    };
    let vm = vmm_qemu::Vm::boot(&cfg).unwrap_or_else(|e| panic!("boot: {e}"));
    let pid = vm.pid();
    let tids = vm.vcpu_tids();
    assert_eq!(proc_affinity(pid, tids[0]), last.to_string());
    assert_eq!(proc_affinity(pid, tids[1]), "0");
    let task_dir = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let all: BTreeSet<u32> = task_dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    for tid in all.iter().filter(|t| !tids.contains(t)) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        if !comm.starts_with("kvm-nx-lpage") {
            assert_eq!(proc_affinity(pid, *tid), last.to_string(), "thread {tid} {comm}");
        }
    }
    let t = vm.start().wait().unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(t.vcpus[0].vmm.affinity, [last]);
    assert_eq!(t.vcpus[1].vmm.affinity, [0]);
}

#[test]
fn every_qemu_thread_has_its_role() {
    let cfg = Config { vcpus: 2, workload: Workload::Loop, work: 1, iothreads: 1, ..Default::default() };
    let t = run(&cfg);
    let with = |role| t.threads.iter().filter(move |th| th.role == role);
    let main: Vec<_> = with(ThreadRole::MainLoop).collect();
    assert_eq!(main.len(), 1);
    assert_eq!(main[0].tid, t.pid);
    assert_eq!(with(ThreadRole::Rcu).count(), 1, "{:#?}", t.threads);
    let io: BTreeSet<_> = with(ThreadRole::IoThread).map(|th| th.iothread.clone().unwrap()).collect();
    assert!(io.contains("iothread0"), "{:#?}", t.threads);
    let vcpus: Vec<_> = with(ThreadRole::Vcpu).collect();
    assert_eq!(vcpus.len(), 2);
    for v in vcpus {
        let index = v.vcpu.unwrap();
        assert!(v.comm == format!("CPU {index}/KVM") || v.comm == format!("CPU {index}/TCG"), "{v:?}");
        assert_eq!(t.vcpus[index as usize].tid, v.tid);
    }
    assert!(with(ThreadRole::Other).next().is_none(), "unexplained QEMU threads: {:#?}", t.threads);
    assert!(t.vmm_on_cpu_ns() > 0);
}

#[test]
fn timer_interrupts_are_counted_by_the_guest() {
    let cfg = Config { workload: Workload::Loop, work: 400, exit_every: 0, timer_hz: 1000, ..Default::default() };
    let t = run(&cfg);
    let v = &t.vcpus[0];
    let expected = v.elapsed_ns as f64 * 1e-6;
    eprintln!("{} timer interrupts in {:.1} ms at 1000 Hz", v.timer_interrupts, v.elapsed_ns as f64 / 1e6);
    assert!(v.timer_interrupts > 0);
    assert!((v.timer_interrupts as f64) < expected * 1.5 + 2.0, "{} vs {expected:.0}", v.timer_interrupts);
    assert_eq!(v.exits["io"], t.progress_bytes + console_bytes_after_go(&t) + 1);
}

#[test]
fn a_missing_qemu_says_how_to_install_it() {
    let cfg = Config { qemu: Some("/nonexistent/qemu-system-x86_64".into()), ..Default::default() };
    let err = vmm_qemu::run(&cfg).expect_err("no QEMU there").to_string();
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
    let cfg = Config { vcpus: 17, ..Default::default() };
    assert!(vmm_qemu::run(&cfg).unwrap_err().to_string().contains("--vcpus 17 out of range"));
}
