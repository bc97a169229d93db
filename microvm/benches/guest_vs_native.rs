//! Guest/native time ratio of the bzip2 workload, measured side by side in one run:
//! the same C (guest/workload.c + libbz2) runs in the micro-VM at CPL3 and natively on
//! the host, alternately, on the same pinned CPU. Also reports the exit rates reached.
//!
//!     cargo bench -p microvm            (MICROVM_BENCH_REPS, MICROVM_BENCH_UNITS to tune)

use std::time::Duration;

use common::{env_u64, median};
use microvm::{Config, Workload, run_native};

mod common;

fn ratio_run(label: &str, base: &Config, reps: usize, cpu: usize) -> f64 {
    let mut ratios = Vec::new();
    let mut g_all = Vec::new();
    let mut n_all = Vec::new();
    for r in 0..reps {
        let t = microvm::run(base).expect("guest run");
        let v = &t.vcpus[0];
        let g = Duration::from_nanos(v.elapsed_ns);
        let n = std::thread::scope(|s| {
            s.spawn(|| {
                microvm::sys::set_affinity(0, &[cpu]).expect("pin the benchmark thread");
                run_native(base.workload, 0, base.work, base.bzip2_unit_bytes, base.loop_unit_iters)
            })
            .join()
            .unwrap()
        });
        assert_eq!(n.status, 0);
        assert_eq!(n.checksum, v.checksum, "guest and native computed the same thing");
        let ratio = g.as_secs_f64() / n.elapsed.as_secs_f64();
        println!(
            "  {label} rep {r}: guest {:8.3} ms  native {:8.3} ms  ratio {ratio:.3}  (io exits {}, timer irqs {})",
            g.as_secs_f64() * 1e3,
            n.elapsed.as_secs_f64() * 1e3,
            v.progress_exits,
            v.timer_interrupts
        );
        ratios.push(ratio);
        g_all.push(g.as_secs_f64());
        n_all.push(n.elapsed.as_secs_f64());
    }
    let m = median(&ratios);
    println!(
        "{label}: median guest/native ratio {m:.3}  (median guest {:.1} ms, native {:.1} ms, {reps} reps)",
        median(&g_all) * 1e3,
        median(&n_all) * 1e3
    );
    m
}

fn main() {
    // cargo bench passes "--bench"; ignore arguments
    let reps = env_u64("MICROVM_BENCH_REPS", 5) as usize;
    let units = env_u64("MICROVM_BENCH_UNITS", 8);
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = ncpu - 1;
    println!(
        "micro-VM guest vs native, bzip2 workload, {units} units x 1 MiB per run, vCPU and native pinned to CPU {cpu}"
    );
    let bz = Config {
        vcpus: 1,
        workload: Workload::Bzip2,
        work: units,
        exit_every: 1,
        timer_hz: 250,
        pin_vcpus: Some(vec![cpu]),
        pin_emulator: Some(vec![0]),
        bzip2_unit_bytes: 1 << 20,
        ..Default::default()
    };
    let with_exits = ratio_run("bzip2, exit every unit, 250 Hz timer", &bz, reps, cpu);
    let quiet = ratio_run("bzip2, no exits, no timer", &Config { exit_every: 0, timer_hz: 0, ..bz.clone() }, reps, cpu);

    // exit rates: loop workload, a progress exit after every small unit
    let lp = Config {
        vcpus: 1,
        workload: Workload::Loop,
        work: 20_000,
        exit_every: 1,
        timer_hz: 0,
        loop_unit_iters: 256,
        pin_vcpus: Some(vec![cpu]),
        pin_emulator: Some(vec![0]),
        ..Default::default()
    };
    let t = microvm::run(&lp).unwrap();
    let v = &t.vcpus[0];
    let io_rate = v.progress_exits as f64 / (v.elapsed_ns as f64 / 1e9);
    println!(
        "userspace (port I/O) exits: {} in {:.3} s = {:.0} exits/s on one vCPU ({:.1} us per exit incl. 256-iteration unit)",
        v.progress_exits,
        v.elapsed_ns as f64 / 1e9,
        io_rate,
        1e6 / io_rate
    );
    let tc = Config { exit_every: 0, timer_hz: 10_000, work: 40_000, loop_unit_iters: 1 << 12, ..lp.clone() };
    let t = microvm::run(&tc).unwrap();
    let v = &t.vcpus[0];
    println!(
        "in-kernel timer exits at 10 kHz requested: {} in {:.3} s = {:.0} interrupts/s",
        v.timer_interrupts,
        v.elapsed_ns as f64 / 1e9,
        v.timer_interrupts as f64 / (v.elapsed_ns as f64 / 1e9)
    );
    let t2 = microvm::run(&Config { vcpus: 2, pin_vcpus: Some(vec![0, 1]), pin_emulator: None, ..lp }).unwrap();
    let total: u64 = t2.vcpus.iter().map(|v| v.progress_exits).sum();
    println!(
        "2 vCPUs on 2 CPUs: {total} port I/O exits in {:.3} s = {:.0} exits/s total; emulator did {} work items",
        t2.elapsed_ns as f64 / 1e9,
        total as f64 / (t2.elapsed_ns as f64 / 1e9),
        t2.emulator.work_items
    );
    println!("RESULT guest/native ratio (bzip2, exits+timer) = {with_exits:.3}; without exits = {quiet:.3}");
}
