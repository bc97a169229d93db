//! Real-KVM tests of the micro-VM (need /dev/kvm; run as root or a member of group kvm).

use std::sync::Mutex;

use microvm::{Config, Error, Workload, cli::parse_cpu_list, loop_reference, run_native};

/// The tests measure timing and parallelism on a 2-CPU machine: one VM at a time.
static SERIAL: Mutex<()> = Mutex::new(());
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The serial lock for a test that needs a working /dev/kvm, or None (the test then
/// returns) with the reason printed: some hosts have no KVM at all (here, when the PVM
/// backend refuses to bind on a kernel with page-table isolation on).
fn kvm_serial() -> Option<std::sync::MutexGuard<'static, ()>> {
    if let Some(why) = microvm::no_kvm() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    Some(serial())
}

fn cfg(workload: Workload, vcpus: u32, work: u64, exit_every: u64, timer_hz: u32) -> Config {
    Config {
        vcpus,
        workload,
        work,
        exit_every,
        timer_hz,
        bzip2_unit_bytes: 64 << 10,
        loop_unit_iters: 1 << 14,
        ..Default::default()
    }
}

fn check_exits(c: &Config, t: &microvm::GroundTruth) {
    assert_eq!(t.vcpus.len(), c.vcpus as usize);
    let mut total_progress = 0;
    for v in &t.vcpus {
        assert_eq!(v.work_units, c.work, "vCPU {}", v.index);
        assert_eq!(v.progress_exits, c.expected_progress_exits(), "vCPU {} progress exits", v.index);
        // progress exits + the final "done" OUT; nothing else reaches userspace except
        // signal interruptions, which are counted separately as "intr"
        assert_eq!(
            v.exits.get("io").copied(),
            Some(c.expected_progress_exits() + 1),
            "vCPU {}: {:?}",
            v.index,
            v.exits
        );
        for (k, n) in &v.exits {
            assert!(k == "io" || k == "intr", "unexpected exit reason {k} x{n}");
        }
        assert_eq!(v.vmm.kvm_run_calls, v.exits.values().sum::<u64>());
        total_progress += v.progress_exits;
    }
    assert_eq!(t.emulator.exit_work_items, total_progress, "emulator handled every progress exit");
    assert_eq!(t.emulator.work_items, t.emulator.exit_work_items + t.emulator.timer_work_items);
    assert_eq!(t.pid, std::process::id());
}

#[test]
fn loop_checksum_matches_host_and_exit_counts_are_exact() {
    let Some(_serial) = kvm_serial() else { return };
    let c = cfg(Workload::Loop, 2, 60, 7, 1000);
    let t = microvm::run(&c).expect("run loop VM");
    check_exits(&c, &t);
    for v in &t.vcpus {
        let want = loop_reference(v.index, c.work, c.loop_unit_iters);
        assert_eq!(v.checksum, want, "vCPU {} vs pure-Rust reference", v.index);
        let native = run_native(Workload::Loop, v.index, c.work, c.bzip2_unit_bytes, c.loop_unit_iters);
        assert_eq!(native.status, 0);
        assert_eq!(v.checksum, native.checksum, "vCPU {} vs the same C on the host", v.index);
    }
    assert_ne!(t.vcpus[0].checksum, t.vcpus[1].checksum, "vCPUs work on different seeds");
}

#[test]
fn bzip2_checksum_matches_host() {
    let Some(_serial) = kvm_serial() else { return };
    let c = cfg(Workload::Bzip2, 2, 4, 2, 250);
    let t = microvm::run(&c).expect("run bzip2 VM");
    check_exits(&c, &t);
    for v in &t.vcpus {
        let native = run_native(Workload::Bzip2, v.index, c.work, c.bzip2_unit_bytes, c.loop_unit_iters);
        assert_eq!(native.status, 0, "native bzip2 round trip verified");
        assert_eq!(native.work_units, c.work);
        assert_eq!(v.checksum, native.checksum, "vCPU {} vs the same libbz2 code on the host", v.index);
        assert_ne!(v.checksum, 0);
    }
}

#[test]
fn exit_counts_follow_exit_every() {
    let Some(_serial) = kvm_serial() else { return };
    // K dividing the work, not dividing it, larger than it, and 0 = never
    for (work, k) in [(12u64, 1u64), (12, 4), (10, 3), (5, 9), (8, 0)] {
        let c = Config { exit_every: k, work, timer_hz: 0, emulator_hz: 0, ..cfg(Workload::Loop, 1, work, k, 0) };
        let t = microvm::run(&c).unwrap_or_else(|e| panic!("work {work} K {k}: {e}"));
        check_exits(&c, &t);
        let want = work.checked_div(k).unwrap_or(0);
        assert_eq!(t.vcpus[0].progress_exits, want, "work {work} K {k}");
        assert_eq!(t.vcpus[0].timer_interrupts, 0, "no timer configured");
        assert_eq!(t.emulator.timer_work_items, 0, "emulator timer off");
    }
}

#[test]
fn guest_timer_gives_interrupts_at_the_configured_rate() {
    let Some(_serial) = kvm_serial() else { return };
    // A periodic APIC timer loses ticks while the vCPU thread is descheduled (a busy
    // shared machine), hence the loose lower bound; a wrong APIC clock would be off by
    // far more.
    let c = Config { loop_unit_iters: 1 << 16, ..cfg(Workload::Loop, 1, 2000, 0, 1000) };
    let t = microvm::run(&c).unwrap();
    let v = &t.vcpus[0];
    let secs = v.elapsed_ns as f64 / 1e9;
    let expect = secs * 1000.0;
    assert!(secs > 0.05, "run long enough to measure ({secs} s)");
    eprintln!("{} timer interrupts in {secs:.3} s at 1000 Hz", v.timer_interrupts);
    assert!(
        (v.timer_interrupts as f64) > expect * 0.5 && (v.timer_interrupts as f64) < expect * 1.3 + 2.0,
        "{} timer interrupts in {secs:.3} s at 1000 Hz",
        v.timer_interrupts
    );
}

#[test]
fn two_vcpus_run_in_parallel_on_two_cpus() {
    let Some(_serial) = kvm_serial() else { return };
    let ncpu = std::thread::available_parallelism().unwrap().get();
    assert!(ncpu >= 2, "this test needs 2 CPUs");
    let c = Config { pin_vcpus: Some(vec![0, 1]), loop_unit_iters: 1 << 16, ..cfg(Workload::Loop, 2, 3000, 100, 250) };
    let t = microvm::run(&c).unwrap();
    let (a, b) = (&t.vcpus[0], &t.vcpus[1]);
    assert_eq!((a.vmm.last_cpu, b.vmm.last_cpu), (0, 1), "each vCPU thread ran on its pinned CPU");
    // the two KVM_RUN loops overlap in time...
    let overlap =
        a.end_monotonic_ns.min(b.end_monotonic_ns) as i64 - a.start_monotonic_ns.max(b.start_monotonic_ns) as i64;
    let shorter = a.elapsed_ns.min(b.elapsed_ns) as i64;
    assert!(overlap > shorter * 8 / 10, "overlap {overlap} ns of {shorter} ns");
    // ...and the VM took about as long as one vCPU's job, not the sum of both
    let sum = a.elapsed_ns + b.elapsed_ns;
    assert!(t.elapsed_ns < sum * 3 / 4, "VM {} ns vs sum of vCPUs {} ns", t.elapsed_ns, sum);
}

#[test]
fn threads_are_named_like_qemu_and_tids_are_known_before_running() {
    let Some(_serial) = kvm_serial() else { return };
    let c = cfg(Workload::Loop, 2, 10, 1, 0);
    let vm = microvm::Vm::create(&c).unwrap();
    let tids = vm.vcpu_tids().to_vec();
    for (i, tid) in tids.iter().enumerate() {
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert_eq!(comm.trim_end(), format!("CPU {i}/KVM"));
    }
    let running = vm.start().unwrap();
    let etid = running.emulator_tid();
    assert_eq!(running.vcpu_tids(), &tids[..]);
    let t = running.wait().unwrap();
    assert_eq!(t.vcpus.iter().map(|v| v.tid).collect::<Vec<_>>(), tids);
    assert_eq!(t.emulator.tid, etid);
    let own = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(t.emulator.name, own.trim_end(), "emulator thread named like the process (QEMU main loop)");
    assert!(!tids.contains(&etid));
}

#[test]
fn bad_options_are_rejected_clearly() {
    let Some(_serial) = kvm_serial() else { return };
    let bad = |c: Config, needle: &str| {
        let e = microvm::run(&c).expect_err("must fail");
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    };
    bad(Config { vcpus: 0, ..Default::default() }, "--vcpus");
    bad(Config { vcpus: 65, ..Default::default() }, "--vcpus");
    bad(Config { work: 0, ..Default::default() }, "--work");
    bad(Config { timer_hz: 1_000_000, ..Default::default() }, "--timer-hz");
    bad(Config { pin_vcpus: Some(vec![]), ..Default::default() }, "--pin-vcpus");
    bad(Config { pin_emulator: Some(vec![100_000]), ..Default::default() }, "--pin-emulator");

    assert_eq!(parse_cpu_list("0,1").unwrap().0, vec![0, 1]);
    assert_eq!(parse_cpu_list("0-3").unwrap().0, vec![0, 1, 2, 3]);
    assert_eq!(parse_cpu_list("0-1,4").unwrap().0, vec![0, 1, 4]);
    for s in ["", "a", "0-", "3-1", "0,0", "1,,2", "-1"] {
        let e = parse_cpu_list(s).err().unwrap_or_else(|| panic!("{s:?} accepted"));
        assert!(e.contains("bad CPU list"), "{e}");
    }
}

#[test]
fn pinning_to_a_cpu_that_is_not_there_is_an_error() {
    let Some(_serial) = kvm_serial() else { return };
    let ncpu = std::thread::available_parallelism().unwrap().get();
    let c = Config { pin_vcpus: Some(vec![ncpu + 50]), ..cfg(Workload::Loop, 1, 1, 1, 0) };
    let e = microvm::run(&c).expect_err("must fail");
    assert!(e.to_string().contains("pin vCPU 0"), "{e}");
}

#[test]
fn guest_fault_is_reported_with_registers() {
    let Some(_serial) = kvm_serial() else { return };
    let c = Config { workload: Workload::FaultTest, ..cfg(Workload::Loop, 1, 1, 1, 0) };
    let e = microvm::run(&c).expect_err("the guest executes ud2");
    match &e {
        Error::GuestException { vcpu, exception } => {
            assert_eq!((*vcpu, exception.vector, exception.cs), (0, 6, 0x33), "{e}");
            assert!(exception.rip >= 0x40_0000 && exception.rip < microvm::layout::ELF_LIMIT, "{e}");
        }
        other => panic!("expected a #UD guest exception, got {other}"),
    }
    assert!(e.to_string().contains("#UD invalid opcode"), "{e}");
}

/// Runs in a child process without privileges (see the next test).
#[test]
fn unprivileged_child() {
    if std::env::var_os("MICROVM_UNPRIVILEGED_CHILD").is_none() {
        return;
    }
    let e = microvm::run(&Config::default()).expect_err("nobody cannot open /dev/kvm");
    println!("CHILD-ERROR: {e}");
}

#[test]
fn kvm_permission_error_says_what_to_do() {
    use std::os::unix::process::CommandExt;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("not root: cannot drop to an unprivileged user; skipped");
        return;
    }
    if kvm_serial().is_none() {
        return;
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "unprivileged_child", "--nocapture", "--test-threads=1"])
        .env("MICROVM_UNPRIVILEGED_CHILD", "1");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run the test binary as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("CHILD-ERROR: open /dev/kvm: permission denied: run as root or add yourself to group kvm"),
        "{stdout}"
    );
}

#[test]
fn missing_kvm_is_said_clearly() {
    if std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: this host has /dev/kvm");
        return;
    }
    let e = microvm::run(&Config::default()).expect_err("no /dev/kvm");
    assert!(matches!(e, Error::NoKvm), "{e}");
    assert!(e.to_string().contains("load the KVM module"), "{e}");
}
