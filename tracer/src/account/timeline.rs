//! The per-CPU timeline, pure: at each tick of `record` (every `--interval`, at most
//! a second), each CPU's time in the bin by role and the thread that ran most, and
//! the VMM threads that arrived on the CPU (ran there in this bin, not in the last).
//! Bounded: past [`MAX_BINS`], neighbouring bins merge and bins double in length.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{host::Role, probe::RawCounters};

/// Bins kept at most: 600 one-second bins are ten minutes; a longer trace keeps
/// 600 bins of 2 s, 4 s, ...
pub const MAX_BINS: usize = 600;

/// `timeline` in the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    /// Consecutive from the trace start; the time after the last tick is only in the
    /// report's totals.
    pub bins: Vec<TimelineBin>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimelineBin {
    /// From the trace start.
    pub start_ns: u64,
    pub len_ns: u64,
    /// Indexed by CPU id.
    pub cpus: Vec<CpuBin>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuBin {
    pub idle_ns: u64,
    pub by_role_ns: BTreeMap<Role, u64>,
    /// The thread that ran most on this CPU in the bin (null if only idle).
    pub top_tid: Option<u32>,
    pub top_comm: Option<String>,
    pub top_ns: u64,
    /// VMM threads (role vmm) that ran on this CPU in this bin but not in the one before.
    pub vmm_arrivals: Vec<u32>,
}

/// What the timeline needs to know of a thread at a tick.
pub struct Who {
    pub role: Role,
    pub comm: String,
}

/// Builds the timeline tick by tick.
#[derive(Default)]
pub struct TimelineBuilder {
    timeline: Timeline,
    /// Per CPU, the VMM threads that ran there in the last bin.
    last_vmm: Vec<BTreeSet<u32>>,
}

impl TimelineBuilder {
    /// Adds the bin between two snapshots of the counters.
    pub fn add(&mut self, before: &RawCounters, now: &RawCounters, who: impl Fn(u32) -> Who) {
        let start = now.window.start_ns;
        let bin_start = before.window.stop_ns.max(start);
        let mut cpus = vec![CpuBin::default(); now.nr_cpus];
        self.last_vmm.resize(now.nr_cpus, BTreeSet::new());
        for (tid, per_cpu) in &now.threads {
            let prev = before.threads.get(tid);
            let who = (*tid != 0).then(|| who(*tid));
            for (cpu, stats) in per_cpu.iter().enumerate() {
                let was = prev.and_then(|p| p.get(cpu)).map(|s| s.on_cpu_ns).unwrap_or(0);
                let delta = stats.on_cpu_ns.saturating_sub(was);
                if delta > 0 {
                    charge(&mut cpus[cpu], *tid, who.as_ref(), delta);
                }
            }
        }
        for (cpu, bin) in cpus.iter_mut().enumerate() {
            let now_vmm: BTreeSet<u32> = bin.vmm_arrivals.iter().copied().collect();
            bin.vmm_arrivals.retain(|tid| !self.last_vmm[cpu].contains(tid));
            self.last_vmm[cpu] = now_vmm;
        }
        let bin = TimelineBin { start_ns: bin_start - start, len_ns: now.window.stop_ns - bin_start, cpus };
        self.timeline.bins.push(bin);
        if self.timeline.bins.len() > MAX_BINS {
            self.timeline.bins = merge_pairs(std::mem::take(&mut self.timeline.bins));
        }
    }

    pub fn finish(self) -> Timeline {
        self.timeline
    }
}

fn charge(bin: &mut CpuBin, tid: u32, who: Option<&Who>, ns: u64) {
    let Some(who) = who else {
        bin.idle_ns += ns;
        return;
    };
    *bin.by_role_ns.entry(who.role).or_default() += ns;
    if ns > bin.top_ns {
        (bin.top_tid, bin.top_comm, bin.top_ns) = (Some(tid), Some(who.comm.clone()), ns);
    }
    if who.role == Role::Vmm {
        // Every VMM thread that ran here; `add` keeps only the arrivals.
        bin.vmm_arrivals.push(tid);
    }
}

/// Halves the number of bins: each pair becomes one bin of their summed time.
fn merge_pairs(bins: Vec<TimelineBin>) -> Vec<TimelineBin> {
    let mut out = Vec::with_capacity(bins.len().div_ceil(2));
    let mut it = bins.into_iter();
    while let Some(mut a) = it.next() {
        if let Some(b) = it.next() {
            a.len_ns += b.len_ns;
            for (x, y) in a.cpus.iter_mut().zip(b.cpus) {
                x.idle_ns += y.idle_ns;
                for (role, ns) in y.by_role_ns {
                    *x.by_role_ns.entry(role).or_default() += ns;
                }
                if y.top_ns > x.top_ns {
                    (x.top_tid, x.top_comm, x.top_ns) = (y.top_tid, y.top_comm, y.top_ns);
                }
                for tid in y.vmm_arrivals {
                    if !x.vmm_arrivals.contains(&tid) {
                        x.vmm_arrivals.push(tid);
                    }
                }
            }
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use tracer_common::{ThreadCpuStats, Window};

    use super::*;

    fn snapshot(stop_ns: u64, threads: &[(u32, [u64; 2])]) -> RawCounters {
        let mut r = RawCounters { nr_cpus: 2, ..Default::default() };
        r.window = Window { start_ns: 1000, stop_ns, flags: 0 };
        for (tid, ns) in threads {
            r.threads
                .insert(*tid, ns.iter().map(|&on| ThreadCpuStats { on_cpu_ns: on, ..Default::default() }).collect());
        }
        r
    }

    fn who(tid: u32) -> Who {
        Who { role: if tid == 7 { Role::Vmm } else { Role::Vcpu }, comm: format!("t{tid}") }
    }

    #[test]
    fn bins_by_role_with_top_thread_and_vmm_arrivals() {
        let mut b = TimelineBuilder::default();
        let s0 = snapshot(1000, &[]);
        let s1 = snapshot(2000, &[(0, [1000, 0]), (5, [0, 900]), (7, [0, 100])]);
        let s2 = snapshot(3000, &[(0, [2000, 0]), (5, [0, 1500]), (7, [0, 500])]);
        b.add(&s0, &s1, who);
        b.add(&s1, &s2, who);
        let t = b.finish();
        assert_eq!(t.bins.len(), 2);
        assert_eq!((t.bins[1].start_ns, t.bins[1].len_ns), (1000, 1000));
        let cpu1 = &t.bins[0].cpus[1];
        assert_eq!(cpu1.top_tid, Some(5));
        assert_eq!(cpu1.by_role_ns[&Role::Vmm], 100);
        assert_eq!(cpu1.vmm_arrivals, [7], "thread 7 arrived on CPU 1 in the first bin");
        assert!(t.bins[1].cpus[1].vmm_arrivals.is_empty(), "and stayed: no new arrival");
        assert_eq!(t.bins[1].cpus[0].idle_ns, 1000);
    }

    #[test]
    fn bounded_by_merging_neighbours() {
        let mut b = TimelineBuilder::default();
        let mut last = snapshot(1000, &[]);
        for i in 1..=(MAX_BINS as u64 + 1) {
            let now = snapshot(1000 + i * 10, &[(5, [i * 10, 0])]);
            b.add(&last, &now, who);
            last = now;
        }
        let t = b.finish();
        assert!(t.bins.len() <= MAX_BINS);
        let covered: u64 = t.bins.iter().map(|b| b.len_ns).sum();
        assert_eq!(covered, (MAX_BINS as u64 + 1) * 10);
        let on: u64 = t.bins.iter().map(|b| b.cpus[0].by_role_ns[&Role::Vcpu]).sum();
        assert_eq!(on, covered, "no time lost in merging");
    }
}
