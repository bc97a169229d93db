//! Attribution, pure: raw per-thread per-CPU counters -> per-thread and per-CPU time,
//! with each thread's role. No I/O here; callers pass what they learned of each thread.

pub mod kvm;
pub mod ledger;
pub mod timeline;

use std::collections::BTreeMap;

use tracer_common::{Mode, NO_TID, ThreadCpuStats};

use crate::{
    host::Role,
    probe::{RawCounters, retire::RetiredThread},
};

/// What is known of a thread besides its counters.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadMeta {
    pub pid: u32,
    pub comm: String,
    pub role: Role,
    pub vcpu_index: Option<u32>,
    pub vm: Option<String>,
}

/// One thread's time over the trace window.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadTime {
    pub tid: u32,
    pub meta: ThreadMeta,
    /// Time on a CPU, from switch-in to switch-out, clipped to the window.
    pub on_cpu_ns: u64,
    /// Indexed by CPU id.
    pub per_cpu_ns: Vec<u64>,
    pub kvm_run_ns: u64,
    pub guest_ns: u64,
    pub switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    /// For a thread whose tid a later thread took: its index in
    /// `RawCounters::earlier_threads` (None for the tid's latest thread).
    pub earlier: Option<usize>,
}

impl ThreadTime {
    /// A thread's time from its per-CPU counters.
    fn from_stats(tid: u32, meta: ThreadMeta, v: &[ThreadCpuStats], earlier: Option<usize>) -> ThreadTime {
        let sum = |f: fn(&ThreadCpuStats) -> u64| v.iter().map(f).sum::<u64>();
        ThreadTime {
            tid,
            meta,
            on_cpu_ns: sum(|s| s.on_cpu_ns),
            per_cpu_ns: v.iter().map(|s| s.on_cpu_ns).collect(),
            kvm_run_ns: sum(|s| s.kvm_run_ns),
            guest_ns: sum(|s| s.guest_ns),
            switches: sum(|s| s.switches),
            involuntary_switches: sum(|s| s.involuntary_switches),
            migrations: sum(|s| s.migrations),
            earlier,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuTime {
    pub cpu: u32,
    pub busy_ns: u64,
    pub idle_ns: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    pub wall_ns: u64,
    pub cpus: Vec<CpuTime>,
    /// Busiest first; the idle task (tid 0) is not a thread here, it is `idle_ns`.
    pub threads: Vec<ThreadTime>,
    pub by_role_ns: BTreeMap<Role, u64>,
}

/// Charges each CPU's last interval (from its last event to the stop) to the thread
/// the last switch put there. The probes already did this for every CPU that had an
/// event after the stop; this covers a CPU that did not (e.g. one the kick thread was
/// not allowed on).
pub fn close_open_intervals(raw: &mut RawCounters) {
    let w = raw.window;
    if w.stop_ns == 0 || w.start_ns == 0 {
        return;
    }
    for (cpu, st) in raw.cpus.iter_mut().enumerate() {
        if st.last_ts >= w.stop_ns || st.curr_tid == NO_TID {
            continue;
        }
        let from = st.last_ts.max(w.start_ns);
        let d = w.stop_ns.saturating_sub(from);
        st.last_ts = w.stop_ns;
        let mode = raw.vcpus.get(&st.curr_tid).map(|v| v.mode()).unwrap_or(Mode::Outside);
        let n = raw.nr_cpus;
        let per_cpu = raw.threads.entry(st.curr_tid).or_insert_with(|| vec![ThreadCpuStats::default(); n]);
        if let Some(s) = per_cpu.get_mut(cpu) {
            s.charge(mode, d);
        }
    }
}

/// Builds the attribution from closed raw counters; `meta` describes each tid, and
/// `earlier_meta` each retired thread whose tid a later thread took.
pub fn attribute(
    raw: &RawCounters,
    meta: impl Fn(u32) -> ThreadMeta,
    earlier_meta: impl Fn(&RetiredThread) -> ThreadMeta,
) -> Attribution {
    let w = raw.window;
    let wall_ns = w.stop_ns.saturating_sub(w.start_ns);
    let idle = raw.threads.get(&0);
    let mut threads: Vec<ThreadTime> = raw
        .threads
        .iter()
        .filter(|(tid, _)| **tid != 0)
        .map(|(&tid, v)| ThreadTime::from_stats(tid, meta(tid), v, None))
        .collect();
    threads.extend(
        raw.earlier_threads
            .iter()
            .enumerate()
            .map(|(i, t)| ThreadTime::from_stats(t.tid, earlier_meta(t), &t.stats, Some(i))),
    );
    let cpus: Vec<CpuTime> = raw
        .online_cpus
        .iter()
        .map(|&c| {
            let idle_ns = idle.and_then(|v| v.get(c as usize)).map(|s| s.on_cpu_ns).unwrap_or(0);
            let busy_ns = threads.iter().filter_map(|t| t.per_cpu_ns.get(c as usize)).sum();
            CpuTime { cpu: c, busy_ns, idle_ns }
        })
        .collect();
    threads.sort_by(|a, b| b.on_cpu_ns.cmp(&a.on_cpu_ns).then(a.tid.cmp(&b.tid)));
    let mut by_role_ns = BTreeMap::new();
    for t in &threads {
        *by_role_ns.entry(t.meta.role).or_insert(0) += t.on_cpu_ns;
    }
    Attribution { wall_ns, cpus, threads, by_role_ns }
}

/// Per-thread on-CPU ns between two snapshots (for the live summary): (tid, ns).
pub fn on_cpu_delta(before: &RawCounters, after: &RawCounters) -> Vec<(u32, u64)> {
    let total = |v: &Vec<ThreadCpuStats>| v.iter().map(|s| s.on_cpu_ns).sum::<u64>();
    let mut out: Vec<(u32, u64)> = after
        .threads
        .iter()
        .map(|(tid, v)| {
            let prev = before.threads.get(tid).map(total).unwrap_or(0);
            (*tid, total(v).saturating_sub(prev))
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    out.sort_by_key(|&(_, ns)| std::cmp::Reverse(ns));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{CpuState, Window};

    fn stats(on: u64) -> ThreadCpuStats {
        ThreadCpuStats { on_cpu_ns: on, switches: 1, ..Default::default() }
    }

    fn raw() -> RawCounters {
        let mut r = RawCounters {
            window: Window { start_ns: 1_000, stop_ns: 11_000, flags: 0 },
            nr_cpus: 2,
            online_cpus: vec![0, 1],
            cpus: vec![
                CpuState { last_ts: 11_500, curr_tid: 7, ..Default::default() },
                CpuState { last_ts: 9_000, curr_tid: 8, ..Default::default() },
            ],
            ..Default::default()
        };
        r.threads.insert(0, vec![stats(4_000), stats(1_000)]); // idle
        r.threads.insert(7, vec![stats(6_000), stats(0)]);
        r.threads.insert(8, vec![stats(0), stats(7_000)]);
        r
    }

    fn meta(tid: u32) -> ThreadMeta {
        ThreadMeta {
            pid: tid,
            comm: format!("t{tid}"),
            role: if tid == 7 { Role::Workload } else { Role::Other },
            vcpu_index: None,
            vm: None,
        }
    }

    #[test]
    fn open_interval_goes_to_the_thread_on_the_cpu() {
        let mut r = raw();
        close_open_intervals(&mut r);
        // CPU 1 saw no event after the stop: 9_000..11_000 goes to tid 8.
        assert_eq!(r.threads[&8][1].on_cpu_ns, 9_000);
        assert_eq!(r.threads[&7][0].on_cpu_ns, 6_000); // CPU 0 was closed by the probes
        let a = attribute(&r, meta, |t| meta(t.tid));
        assert_eq!(a.wall_ns, 10_000);
        for c in &a.cpus {
            assert_eq!(c.busy_ns + c.idle_ns, a.wall_ns, "cpu {}", c.cpu);
        }
    }

    #[test]
    fn threads_sorted_busiest_first_with_roles() {
        let mut r = raw();
        close_open_intervals(&mut r);
        let a = attribute(&r, meta, |t| meta(t.tid));
        assert_eq!(a.threads.iter().map(|t| t.tid).collect::<Vec<_>>(), vec![8, 7]);
        assert_eq!(a.threads[1].per_cpu_ns, vec![6_000, 0]);
        assert_eq!(a.by_role_ns[&Role::Workload], 6_000);
        assert_eq!(a.by_role_ns[&Role::Other], 9_000);
        assert!(!a.threads.iter().any(|t| t.tid == 0));
    }

    #[test]
    fn closing_twice_changes_nothing() {
        let mut r = raw();
        close_open_intervals(&mut r);
        let once = r.threads.clone();
        close_open_intervals(&mut r);
        assert_eq!(r.threads, once);
    }

    #[test]
    fn live_delta() {
        let a = raw();
        let mut b = raw();
        b.threads.get_mut(&7).unwrap()[0].on_cpu_ns += 500;
        assert_eq!(on_cpu_delta(&a, &b), vec![(7, 500)]);
    }
}
