//! `cargo bench -p vmm-qemu`: real QEMU against native, side by side in one run.
//!
//! Prints: boot time; guest/native wall ratio for `loop` and `bzip2` (vCPU and the native
//! twin pinned to the same CPU, runs alternated); the cost of one userspace exit (port
//! I/O served by QEMU) from exit-every-unit vs no-exit runs of tiny units, next to the
//! micro-VM's for the same job; and the CPU time QEMU's non-vCPU threads use per second
//! of guest run (start-up excluded). `VMM_QEMU_BENCH_REPS` (default 3) sets repetitions.

use common::{env_u64, median};
use vmm_qemu::{Config, GroundTruth, Workload, threads};

#[path = "../../microvm/benches/common/mod.rs"]
mod common;

fn reps() -> usize {
    env_u64("VMM_QEMU_BENCH_REPS", 3) as usize
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

/// One QEMU run; also the non-vCPU threads' CPU time between "go" and the end.
struct Run {
    truth: GroundTruth,
    vmm_cpu_in_run_ns: u64,
}

fn run_qemu(cfg: &Config) -> Run {
    let vm = vmm_qemu::Vm::boot(cfg).unwrap_or_else(|e| panic!("QEMU: {e}"));
    let pid = vm.pid();
    let at_go: u64 = vm.vmm_tids().iter().filter_map(|&tid| threads::schedstat(pid, tid)).map(|(on, _)| on).sum();
    let truth = vm.start().wait().unwrap_or_else(|e| panic!("QEMU run: {e}"));
    let vmm_cpu_in_run_ns = truth.vmm_on_cpu_ns().saturating_sub(at_go);
    Run { truth, vmm_cpu_in_run_ns }
}

fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one in-range CPU set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Guest/native ratio of one workload, alternating runs on the same CPU.
fn ratio(name: &str, cfg: &Config, vmm_cpu_per_s: &mut Vec<f64>) -> (f64, f64, f64) {
    let (mut ratios, mut guest, mut native) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps() {
        let run = run_qemu(cfg);
        let v = &run.truth.vcpus[0];
        let n = microvm::run_native(cfg.workload, 0, cfg.work, cfg.bzip2_unit_bytes, cfg.loop_unit_iters);
        assert_eq!(n.checksum, v.checksum, "{name}: guest and native results differ");
        let native_ns = n.elapsed.as_nanos() as f64;
        ratios.push(v.elapsed_ns as f64 / native_ns);
        guest.push(v.elapsed_ns as f64);
        native.push(native_ns);
        vmm_cpu_per_s.push(run.vmm_cpu_in_run_ns as f64 / (run.truth.elapsed_ns as f64 / 1e9));
    }
    (median(&ratios), median(&guest), median(&native))
}

/// Extra wall time per exit: tiny units with an exit each vs without, same guest.
fn qemu_exit_cost(units: u64) -> (f64, u64) {
    let base = Config {
        workload: Workload::Loop,
        work: units,
        loop_unit_iters: 64,
        pin_vcpus: Some(vec![0]),
        ..Default::default()
    };
    let mut costs = Vec::new();
    let mut exits = 0;
    for _ in 0..reps() {
        let quiet = run_qemu(&Config { exit_every: 0, ..base.clone() }).truth.vcpus[0].elapsed_ns;
        let busy = run_qemu(&Config { exit_every: 1, ..base.clone() }).truth.vcpus[0].clone();
        exits = busy.progress_exits;
        costs.push((busy.elapsed_ns as f64 - quiet as f64) / busy.progress_exits as f64);
    }
    (median(&costs), exits)
}

/// The same measurement on the micro-VM (needs /dev/kvm).
fn microvm_exit_cost(units: u64) -> Option<f64> {
    let base = microvm::Config {
        workload: Workload::Loop,
        work: units,
        loop_unit_iters: 64,
        timer_hz: 0,
        emulator_hz: 0,
        pin_vcpus: Some(vec![0]),
        ..Default::default()
    };
    let mut costs = Vec::new();
    for _ in 0..reps() {
        let quiet = microvm::run(&microvm::Config { exit_every: 0, ..base.clone() }).ok()?.vcpus[0].elapsed_ns;
        let busy = microvm::run(&microvm::Config { exit_every: 1, ..base.clone() }).ok()?.vcpus[0].clone();
        costs.push((busy.elapsed_ns as f64 - quiet as f64) / busy.progress_exits as f64);
    }
    Some(median(&costs))
}

fn main() {
    let cpu = 0;
    pin_self(cpu);
    let loop_cfg = Config {
        workload: Workload::Loop,
        work: 2000,
        exit_every: 0,
        pin_vcpus: Some(vec![cpu]),
        ..Default::default()
    };
    let bzip2_cfg =
        Config { workload: Workload::Bzip2, work: 4, exit_every: 0, pin_vcpus: Some(vec![cpu]), ..Default::default() };
    let first = run_qemu(&Config { work: 1, ..loop_cfg.clone() });
    println!(
        "vmm-qemu bench: accel {:?}, {} repetitions, vCPU and native pinned to CPU {cpu}",
        first.truth.accel,
        reps()
    );

    let (mut boot, mut guest_boot, mut qmp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps().max(5) {
        let t = run_qemu(&Config { work: 1, ..loop_cfg.clone() }).truth;
        boot.push(t.boot_ns as f64);
        guest_boot.push(t.guest_boot_ns as f64);
        qmp.push(t.qmp_ready_ns as f64);
    }
    println!(
        "boot (median of {}): launch -> all vCPUs at CPL3 {:.1} ms (min {:.1}); of which QEMU start-up to QMP {:.1} ms, \
`cont` -> CPL3 (firmware + our CPL0) {:.1} ms",
        boot.len(),
        ms(median(&boot)),
        ms(boot.iter().copied().fold(f64::MAX, f64::min)),
        ms(median(&qmp)),
        ms(median(&guest_boot))
    );

    let mut vmm_cpu = Vec::new();
    println!("{:<8} {:>12} {:>12} {:>12}", "workload", "guest ms", "native ms", "guest/native");
    for (name, cfg) in [("loop", &loop_cfg), ("bzip2", &bzip2_cfg)] {
        let (r, g, n) = ratio(name, cfg, &mut vmm_cpu);
        println!("{name:<8} {:>12.1} {:>12.1} {r:>12.3}", ms(g), ms(n));
    }
    println!(
        "QEMU's non-vCPU threads (main loop, RCU, ...): {:.2} ms of CPU per second of guest run (median of {} runs; start-up excluded)",
        ms(median(&vmm_cpu)),
        vmm_cpu.len()
    );

    let units = 4000;
    let (q, exits) = qemu_exit_cost(units);
    print!("cost per userspace exit (port I/O to a debugcon, {exits} exits): QEMU {:.1} us", q / 1e3);
    match microvm_exit_cost(units) {
        Some(m) => println!(", micro-VM {:.1} us", m / 1e3),
        None => println!(", micro-VM not measured (needs /dev/kvm)"),
    }
}
