//! `vmmtrace bench`: what the probes cost, measured side by side in one run. A
//! context-switch load (two threads ping-ponging one byte over pipes, pinned to one
//! CPU) runs with no probes, with the tp_btf sched_switch program and with the classic
//! tracepoint; the kernel's own BPF statistics give each program's cost per event.

use std::{io::Read as _, io::Write as _, time::Instant};

use crate::{
    perfetto,
    probe::{ProbeOptions, Probes, table::KVM_EVENT_SLOTS},
    sys::set_affinity,
};

/// One measurement.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub mode: &'static str,
    /// Wall ns per round trip (two context switches).
    pub ns_per_round_trip: f64,
    /// Programs that ran: (name, events, average ns per event).
    pub programs: Vec<(String, u64, f64)>,
    /// With the timeline: (events read from the ring buffer, events lost to a full one).
    pub timeline: Option<(u64, u64)>,
}

/// (name, events, average ns per event) of each program that ran.
fn programs_that_ran(p: &Probes) -> Vec<(String, u64, f64)> {
    p.program_stats()
        .into_iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(name, n, t)| (name, n, t as f64 / n as f64))
        .collect()
}

/// Runs `rounds` pipe round trips between two threads pinned to `cpu`.
pub fn ping_pong(rounds: u64, cpu: u32) -> f64 {
    let (mut ping_r, mut ping_w) = std::io::pipe().expect("pipe");
    let (mut pong_r, mut pong_w) = std::io::pipe().expect("pipe");
    let t = std::thread::spawn(move || {
        set_affinity(0, &[cpu]);
        let mut buf = [0u8; 1];
        for _ in 0..rounds {
            if ping_r.read_exact(&mut buf).is_err() || pong_w.write_all(&buf).is_err() {
                break;
            }
        }
    });
    set_affinity(0, &[cpu]);
    let mut buf = [0u8; 1];
    let start = Instant::now();
    for _ in 0..rounds {
        if ping_w.write_all(&buf).is_err() || pong_r.read_exact(&mut buf).is_err() {
            break;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    let _ = t.join();
    ns
}

/// Turns on kernel.bpf_stats_enabled for its lifetime.
struct BpfStats(Option<String>);

impl BpfStats {
    fn enable() -> BpfStats {
        const P: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(P).ok();
        let _ = std::fs::write(P, "1");
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old.trim());
        }
    }
}

/// The probe sets measured side by side: none, the sched_switch program alone (tp_btf
/// or classic), and with the run-queue states and the ledger (its wakeup programs and
/// its part of sched_switch).
/// "+runq" keeps the run-queue states without the thieves, to price the two apart;
/// "+hash" keeps them in the hash instead of the array by tid, to price the array.
/// "+timeline" streams every event to a reader as `record --timeline` does.
/// "+wakeup" runs the sched_wakeup program where tp_btf sched_switch would infer
/// wakeups from the kernel's bookkeeping (the path before that, and the timeline's).
pub const MODES: [&str; 9] = [
    "none",
    "tp_btf",
    "tp_btf+runq",
    "tp_btf+ledger",
    "tp_btf+ledger+wakeup",
    "tp_btf+ledger+hash",
    "tp_btf+ledger+timeline",
    "tracepoint",
    "tracepoint+ledger",
];

pub fn run(rounds: u64, reps: usize) -> anyhow::Result<Vec<BenchRow>> {
    let _stats = BpfStats::enable();
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() }.max(0) as u32;
    let mut rows = Vec::new();
    for _ in 0..reps {
        for mode in MODES {
            let (probes, reader) = match mode {
                "none" => (None, None),
                m => {
                    let timeline = m.ends_with("+timeline");
                    let mut p = Probes::attach(&ProbeOptions {
                        classic_sched_switch: m.starts_with("tracepoint"),
                        kvm: false,
                        ledger: m.contains('+'),
                        runq_only: m.ends_with("+runq"),
                        sched_in_hash: m.ends_with("+hash"),
                        wakeup_probe: m.ends_with("+wakeup"),
                        timeline_ring_bytes: if timeline { perfetto::RING_BYTES } else { 0 },
                        ..Default::default()
                    })?;
                    let reader = p.take_timeline().map(|ring| perfetto::Stream::start(ring, u64::MAX)).transpose()?;
                    p.start()?;
                    (Some(p), reader)
                }
            };
            let ns = ping_pong(rounds, cpu);
            let programs = probes.as_ref().map(programs_that_ran).unwrap_or_default();
            let timeline = reader.map(|r| {
                let lost = probes.as_ref().and_then(|p| p.read().ok()).map_or(0, |raw| {
                    raw.counters.get(tracer_common::counter::DROPPED_TIMELINE as usize).copied().unwrap_or(0)
                });
                drop(probes);
                (r.finish().events.len() as u64, lost)
            });
            rows.push(BenchRow { mode, ns_per_round_trip: ns, programs, timeline });
        }
    }
    Ok(rows)
}

/// One micro-VM run (exits at a high rate), with or without the probes.
#[derive(Debug, Clone)]
pub struct KvmBenchRow {
    pub probes: bool,
    pub elapsed_ns: u64,
    pub exits: u64,
    pub programs: Vec<(String, u64, f64)>,
}

/// The KVM probes' cost: a 2-vCPU micro-VM doing an exit to userspace every small unit
/// of work, plus a guest timer, run without and with the probes, alternately.
pub fn run_kvm(reps: usize) -> anyhow::Result<Vec<KvmBenchRow>> {
    let _stats = BpfStats::enable();
    let cfg = microvm::Config {
        vcpus: 2,
        workload: microvm::Workload::Loop,
        work: 20_000,
        exit_every: 1,
        timer_hz: 1000,
        loop_unit_iters: 2_000,
        ..Default::default()
    };
    let mut rows = Vec::new();
    for _ in 0..reps {
        for with in [false, true] {
            let probes = if with {
                let mut p = Probes::attach(&ProbeOptions::default())?;
                p.start()?;
                Some(p)
            } else {
                None
            };
            let truth = microvm::run(&cfg)?;
            let exits = truth.vcpus.iter().map(|v| v.vmm.kvm_run_calls).sum();
            let elapsed_ns = truth.vcpus.iter().map(|v| v.elapsed_ns).max().unwrap_or(0);
            let programs = probes.as_ref().map(programs_that_ran).unwrap_or_default();
            rows.push(KvmBenchRow { probes: with, elapsed_ns, exits, programs });
        }
    }
    Ok(rows)
}

pub fn render_kvm(rows: &[KvmBenchRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\nmicro-VM: 2 vCPUs, an exit to userspace per unit of work, 1000 Hz guest timer");
    let _ =
        writeln!(s, "{:<8} {:>10} {:>9} {:>10}  programs (events, avg ns/event)", "probes", "ms", "exits/s", "vs none");
    let mut base = None;
    for r in rows {
        if !r.probes {
            base = Some(r.elapsed_ns as f64);
        }
        let ratio = base.map(|b| r.elapsed_ns as f64 / b).unwrap_or(f64::NAN);
        let progs: Vec<String> = r
            .programs
            .iter()
            .filter(|(n, _, _)| !n.starts_with("sched_"))
            .map(|(n, c, a)| {
                // kvm_event_<slot> (or its tp_btf twin kvm_event_btf_<slot>) -> the
                // tracepoint attached to that slot
                let name = n
                    .strip_prefix("kvm_event_btf_")
                    .or_else(|| n.strip_prefix("kvm_event_"))
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| KVM_EVENT_SLOTS.get(i))
                    .map(|e| format!("{}:{}", e.category, e.name))
                    .unwrap_or_else(|| n.clone());
                format!("{name}: {c} ev, {a:.0} ns")
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<8} {:>10.1} {:>9.0} {:>9.3}x  {}",
            if r.probes { "all" } else { "none" },
            r.elapsed_ns as f64 / 1e6,
            r.exits as f64 / (r.elapsed_ns as f64 / 1e9),
            ratio,
            progs.join("; ")
        );
    }
    s
}

pub fn render(rows: &[BenchRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ =
        writeln!(s, "context-switch load: two threads ping-ponging over pipes on one CPU (2 switches per round trip)");
    let _ = writeln!(
        s,
        "{:<17} {:>14} {:>10}  programs (events, avg ns/event from kernel bpf stats)",
        "probes", "ns/round trip", "vs none"
    );
    let mut base = None;
    for r in rows {
        if r.mode == "none" {
            base = Some(r.ns_per_round_trip);
        }
        let ratio = base.map(|b| r.ns_per_round_trip / b).unwrap_or(f64::NAN);
        let progs: Vec<String> = r.programs.iter().map(|(n, c, a)| format!("{n}: {c} ev, {a:.0} ns")).collect();
        let _ = writeln!(s, "{:<17} {:>14.0} {:>9.3}x  {}", r.mode, r.ns_per_round_trip, ratio, progs.join("; "));
    }
    s.push_str(&render_ledger_cost(rows));
    s.push_str(&render_timeline_cost(rows));
    s
}

/// What `--timeline` adds to the ledger's probes: per repetition, ns per context
/// switch over no probes without and with it, and in the programs themselves.
fn render_timeline_cost(rows: &[BenchRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "timeline cost: added ns per context switch over no probes (same repetition)");
    for chunk in rows.chunks(MODES.len()) {
        let row = |m: &str| chunk.iter().find(|r| r.mode == m);
        let (Some(none), Some(off), Some(on)) = (row("none"), row("tp_btf+ledger"), row("tp_btf+ledger+timeline"))
        else {
            continue;
        };
        let added = |r: &BenchRow| (r.ns_per_round_trip - none.ns_per_round_trip) / 2.0;
        let (a, b) = (added(off), added(on));
        let (read, lost) = on.timeline.unwrap_or_default();
        let _ = write!(s, "  tp_btf+ledger: {a:.0} ns without --timeline, {b:.0} ns with ({:.2}x)", b / a);
        if let (Some(x), Some(y)) = (bpf_ns_per_switch(off), bpf_ns_per_switch(on)) {
            let _ = write!(s, "; in the programs {x:.0} -> {y:.0} ns");
        }
        let _ = writeln!(s, "; {read} events read, {lost} lost to a full ring buffer");
    }
    s
}

/// What the ledger adds: per repetition, the ns each mode adds per context switch
/// over no probes, and the ratio with the ledger to without it.
fn render_ledger_cost(rows: &[BenchRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "ledger cost: added ns per context switch over no probes (same repetition)");
    for chunk in rows.chunks(MODES.len()) {
        let rt = |m: &str| chunk.iter().find(|r| r.mode == m).map(|r| r.ns_per_round_trip);
        let Some(none) = rt("none") else { continue };
        let mut parts = Vec::new();
        let added = |m: &str| rt(m).map(|ns| (ns - none) / 2.0);
        for base in ["tp_btf", "tracepoint"] {
            if let (Some(a), Some(b)) = (added(base), added(&format!("{base}+ledger"))) {
                parts.push(format!("{base}: {a:.0} ns without, {b:.0} ns with states and ledger ({:.2}x)", b / a));
            }
        }
        if let (Some(a), Some(b)) = (added("tp_btf"), added("tp_btf+ledger+wakeup")) {
            parts.push(format!("tp_btf with the sched_wakeup program: {b:.0} ns ({:.2}x)", b / a));
        }
        if let (Some(a), Some(b)) = (added("tp_btf+runq"), added("tp_btf+ledger")) {
            parts.push(format!("tp_btf, ledger over states alone: {a:.0} -> {b:.0} ns ({:.2}x)", b / a));
        }
        let _ = writeln!(s, "  {}", parts.join("; "));
        let bpf = |m: &str| chunk.iter().find(|r| r.mode == m).and_then(bpf_ns_per_switch);
        if let (Some(a), Some(b)) = (bpf("tp_btf"), bpf("tp_btf+ledger")) {
            let _ = writeln!(
                s,
                "    in the programs (kernel bpf stats): tp_btf {a:.0} ns without, {b:.0} ns with ({:.2}x)",
                b / a
            );
            if let Some(h) = bpf("tp_btf+ledger+wakeup") {
                let _ = writeln!(s, "    with the sched_wakeup program instead: {h:.0} ns ({:.2}x)", h / a);
            }
            if let Some(h) = bpf("tp_btf+ledger+hash") {
                let _ = writeln!(s, "    with the states in the hash instead: {h:.0} ns ({:.2}x)", h / a);
            }
        }
    }
    s
}

/// Time spent in all the programs per context switch (kernel bpf stats), the part of
/// the cost that other load on the machine does not blur; the programs' invocation
/// is not in it.
fn bpf_ns_per_switch(r: &BenchRow) -> Option<f64> {
    let switches: u64 = r.programs.iter().filter(|(n, _, _)| n.starts_with("sched_switch")).map(|(_, c, _)| c).sum();
    let total: f64 = r.programs.iter().map(|(_, c, a)| *c as f64 * a).sum();
    (switches > 0).then(|| total / switches as f64)
}
