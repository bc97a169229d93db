//! The live summary printed while tracing.

use std::time::Duration;

use crate::{
    account,
    host::{Role, comm_from_bytes, registry::Registry, thread_meta},
    probe::{Probes, RawCounters},
};

/// One line of live summary: elapsed, busy/idle split, guest vs hypervisor, top
/// threads, the thread that took the most run-queue wait from others, drops.
pub fn live_line(
    elapsed: Duration,
    before: &RawCounters,
    now: &RawCounters,
    interval_ns: u64,
    reg: &Registry,
) -> String {
    let ncpu = now.online_cpus.len().max(1) as f64;
    let deltas = account::on_cpu_delta(before, now);
    let total = interval_ns as f64 * ncpu;
    let idle: u64 = deltas.iter().filter(|(t, _)| *t == 0).map(|(_, d)| d).sum();
    let busy: u64 = deltas.iter().filter(|(t, _)| *t != 0).map(|(_, d)| d).sum();
    let mut s = format!(
        "[{:>5.0}s] busy {:>5.1}% idle {:>5.1}% |",
        elapsed.as_secs_f64(),
        100.0 * busy as f64 / total,
        100.0 * idle as f64 / total
    );
    if !reg.vms.is_empty() || !now.vcpus.is_empty() {
        let meta = thread_meta(now, reg);
        let mut vcpu = 0u64;
        let mut vmm = 0u64;
        for (tid, d) in deltas.iter().filter(|(t, _)| *t != 0) {
            match meta(*tid).role {
                Role::Vcpu => vcpu += d,
                Role::Vmm => vmm += d,
                _ => {}
            }
        }
        s.push_str(&format!(
            " vcpus {:.1}% vmm threads {:.1}% |",
            100.0 * vcpu as f64 / total,
            100.0 * vmm as f64 / total
        ));
    }
    for (tid, d) in deltas.iter().filter(|(t, _)| *t != 0).take(3) {
        let comm = now.thread_info.get(tid).map(|i| comm_from_bytes(&i.comm)).unwrap_or_else(|| "?".into());
        s.push_str(&format!(" {comm}[{tid}] {:.0}%", 100.0 * *d as f64 / interval_ns as f64));
    }
    if let Some((tid, ns)) = account::ledger::thieves_delta(before, now).first() {
        let comm = now.thread_info.get(tid).map(|i| comm_from_bytes(&i.comm)).unwrap_or_else(|| "?".into());
        s.push_str(&format!(" | top thief {comm}[{tid}] {:.1} ms", *ns as f64 / 1e6));
    }
    s.push_str(&format!(" | dropped {}{}", now.dropped_events(), crate::report::by_cause(&now.dropped_by_cause())));
    if now.retired_threads > 0 || now.occupancy.exited_pending > 0 {
        let threads =
            now.occupancy.maps.first().map(|(_, n, cap)| format!(", {n}/{cap} threads in maps")).unwrap_or_default();
        s.push_str(&format!(" | retired {}{threads}", now.retired_threads));
    }
    s
}

/// What the timeline learns of a thread at a tick: its role and name as known now.
pub(super) fn who<'a>(now: &'a RawCounters, reg: &'a Registry) -> impl Fn(u32) -> account::timeline::Who + 'a {
    let meta = thread_meta(now, reg);
    move |tid| {
        let m = meta(tid);
        account::timeline::Who { role: m.role, comm: m.comm }
    }
}

/// A snapshot with every CPU's running interval charged up to now, for live use:
/// every thread retired so far in it (`Probes::read`), or, for deltas between
/// ticks, only those the last retire step retired (`Probes::read_live`).
pub(super) fn live_snapshot(probes: &Probes, all_retired: bool) -> anyhow::Result<RawCounters> {
    let mut raw = if all_retired { probes.read()? } else { probes.read_live()? };
    raw.window.stop_ns = crate::sys::monotonic_ns();
    account::close_open_intervals(&mut raw);
    Ok(raw)
}
