//! Who took the time, pure: per-thread run-queue wait and blocked time with their
//! closure against the time alive, and the preemption ledger as (victim, thief)
//! pairs, per-victim totals by thief role, and each vCPU's `lost_to` list.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tracer_common::ledger::{PairKey, PairStats, ThreadSched, clip, state, unresolved};

use super::{ThreadMeta, kvm::VmReport};
use crate::{probe::RawCounters, report::role_name};

/// The thief "role" of idle time (tid 0) and of wait time no thief could be named for.
pub const IDLE: &str = "idle";
pub const UNRESOLVED: &str = "unresolved";

/// One thread's scheduling states over the window (`threads[].sched`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SchedReport {
    /// Runnable but not running: woken and not yet on a CPU, or preempted.
    pub runq_wait_ns: u64,
    /// Sleeping (waiting for I/O, a lock, a timer, ...).
    pub blocked_ns: u64,
    /// Time the thread existed inside the window (from its creation or the start, to
    /// its exit or the stop).
    pub alive_ns: u64,
    /// on_cpu_ns + runq_wait_ns + blocked_ns - alive_ns: 0 when every instant is
    /// accounted for exactly once.
    pub closure_error_ns: i64,
    /// on_cpu, runnable, blocked or dead.
    pub state_at_stop: String,
    /// Switches of this thread the kernel's sched_switch tracepoint did not report
    /// (seen on this kernel): its closure may be off by the time around them.
    pub missed_switches: u32,
    /// Switch-outs while still runnable, inside the window.
    pub preemptions: u64,
    /// Blocked -> runnable transitions inside the window.
    pub wakeups: u64,
    /// Waits that ended inside the window, and their log2 histogram (bucket b counts
    /// waits in [2^(b-1), 2^b) ns).
    pub waits: u64,
    pub wait_hist_log2: Vec<u64>,
    /// Wait time no thief could be named for, by reason (see docs/schema.md); absent
    /// when there was none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unresolved_ns: BTreeMap<String, u64>,
}

/// One (victim, thief) pair of the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PairReport {
    pub victim: u32,
    pub victim_comm: String,
    pub victim_role: String,
    /// 0 = the CPU was idle (wake-up latency).
    pub thief: u32,
    pub thief_comm: String,
    pub thief_role: String,
    /// Wait time of the victim during which the thief ran on the victim's CPU.
    pub ns: u64,
    /// On-CPU intervals of the thief that overlapped the victim's waits.
    pub intervals: u64,
}

/// A thread that waited, and who had its CPU meanwhile, by role.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VictimReport {
    pub tid: u32,
    pub comm: String,
    pub role: String,
    pub runq_wait_ns: u64,
    /// vcpu / vmm / host_kernel / workload / other / idle / unresolved -> ns; sums to
    /// runq_wait_ns.
    pub by_thief_role_ns: BTreeMap<String, u64>,
}

/// The ledger (`ledger` in the report).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LedgerReport {
    /// (victim, thief) pairs in the trace; `pairs` lists the largest of them.
    pub pairs_total: usize,
    pub pairs: Vec<PairReport>,
    /// Every thread that waited, longest wait first.
    pub victims: Vec<VictimReport>,
    /// Wait time no thief could be named for, by reason, over all threads.
    pub unresolved_ns: BTreeMap<String, u64>,
}

/// A thread that took a vCPU's time (`vms[].vcpus[].lost_to`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Thief {
    pub tid: u32,
    pub comm: String,
    pub role: String,
    /// The thief's VM, when it is a vCPU or VMM thread.
    pub vm: Option<String>,
    pub ns: u64,
}

/// Ends the ledger at the stop: a thread still waiting has its wait so far charged
/// to whoever ran on its CPU, and every thread's current state is closed. Closing
/// twice changes nothing.
pub fn close_at_stop(raw: &mut RawCounters) {
    let w = raw.window;
    if w.stop_ns == 0 {
        return;
    }
    for (&tid, t) in raw.sched.iter_mut() {
        if t.state == state::RUNNABLE {
            let from = t.wait_on_cpu_since_ns;
            match raw.cpu_history.get(t.cpu as usize) {
                Some(h) => {
                    let overflow = h.walk(from, w.stop_ns, &w, |thief, ns| {
                        let p = raw.ledger.entry(PairKey { victim: tid, thief }).or_default();
                        p.ns += ns;
                        p.intervals += 1;
                    });
                    t.add_unresolved(unresolved::HISTORY_OVERFLOW, overflow);
                }
                None => t.add_unresolved(unresolved::CPU_UNKNOWN, clip(from, w.stop_ns, &w)),
            }
            t.wait_on_cpu_since_ns = w.stop_ns;
        }
        *t = t.closed_at_stop(&w);
    }
}

fn unresolved_map(t: &ThreadSched) -> BTreeMap<String, u64> {
    unresolved::NAMES
        .iter()
        .zip(t.unresolved_ns.iter())
        .filter(|(_, ns)| **ns > 0)
        .map(|(n, ns)| (n.to_string(), *ns))
        .collect()
}

/// A thread's states, from its closed entry and its on-CPU time; None when the
/// probes never learned its state (seen only being migrated).
pub fn sched_report(t: &ThreadSched, on_cpu_ns: u64, raw: &RawCounters) -> Option<SchedReport> {
    if t.state == state::UNKNOWN {
        return None;
    }
    let alive_ns = t.alive_ns(&raw.window);
    Some(SchedReport {
        runq_wait_ns: t.runq_wait_ns,
        blocked_ns: t.blocked_ns,
        alive_ns,
        closure_error_ns: (on_cpu_ns + t.runq_wait_ns + t.blocked_ns) as i64 - alive_ns as i64,
        state_at_stop: state_name(t.state).into(),
        missed_switches: t.missed_switches,
        preemptions: t.preemptions,
        wakeups: t.wakeups,
        waits: t.waits,
        wait_hist_log2: t.wait_hist.iter().map(|&c| c as u64).collect(),
        unresolved_ns: unresolved_map(t),
    })
}

fn state_name(s: u32) -> &'static str {
    match s {
        state::ON_CPU => "on_cpu",
        state::RUNNABLE => "runnable",
        state::BLOCKED => "blocked",
        state::DEAD => "dead",
        _ => "unknown",
    }
}

/// What the ledger needs to know of a thread.
fn who(tid: u32, meta: &impl Fn(u32) -> ThreadMeta) -> (String, String) {
    if tid == 0 {
        return ("idle".into(), IDLE.into());
    }
    let m = meta(tid);
    (m.comm, role_name(m.role))
}

/// The ledger from closed counters: the `top` largest pairs, and every victim's wait
/// by thief role.
pub fn ledger_report(raw: &RawCounters, meta: &impl Fn(u32) -> ThreadMeta, top: usize) -> LedgerReport {
    let mut names: HashMap<u32, (String, String)> = HashMap::new();
    let mut name = |tid: u32| names.entry(tid).or_insert_with(|| who(tid, meta)).clone();
    let mut sorted: Vec<(&PairKey, &PairStats)> = raw.ledger.iter().filter(|(_, v)| v.ns > 0).collect();
    sorted.sort_by(|a, b| b.1.ns.cmp(&a.1.ns).then(a.0.cmp(b.0)));
    let pairs = sorted
        .iter()
        .take(top)
        .map(|(k, v)| {
            let (victim_comm, victim_role) = name(k.victim);
            let (thief_comm, thief_role) = name(k.thief);
            PairReport {
                victim: k.victim,
                victim_comm,
                victim_role,
                thief: k.thief,
                thief_comm,
                thief_role,
                ns: v.ns,
                intervals: v.intervals,
            }
        })
        .collect();
    let mut by_role: BTreeMap<u32, BTreeMap<String, u64>> = BTreeMap::new();
    for (k, v) in &sorted {
        *by_role.entry(k.victim).or_default().entry(name(k.thief).1).or_insert(0) += v.ns;
    }
    let mut unresolved_total: BTreeMap<String, u64> = BTreeMap::new();
    let mut victims: Vec<VictimReport> = Vec::new();
    for (&tid, t) in &raw.sched {
        let unresolved: u64 = t.unresolved_ns.iter().sum();
        for (reason, ns) in unresolved_map(t) {
            *unresolved_total.entry(reason).or_insert(0) += ns;
        }
        if t.runq_wait_ns == 0 {
            continue;
        }
        let mut roles = by_role.remove(&tid).unwrap_or_default();
        if unresolved > 0 {
            roles.insert(UNRESOLVED.into(), unresolved);
        }
        let (comm, role) = name(tid);
        victims.push(VictimReport { tid, comm, role, runq_wait_ns: t.runq_wait_ns, by_thief_role_ns: roles });
    }
    victims.sort_by(|a, b| b.runq_wait_ns.cmp(&a.runq_wait_ns).then(a.tid.cmp(&b.tid)));
    LedgerReport { pairs_total: sorted.len(), pairs, victims, unresolved_ns: unresolved_total }
}

/// Fills each vCPU's `lost_to`: the threads that ran on its CPU while it waited,
/// most first (idle time and unresolved time are in the ledger's victim totals).
pub fn fill_lost_to(vms: &mut [VmReport], raw: &RawCounters, meta: &impl Fn(u32) -> ThreadMeta) {
    for vm in vms.iter_mut() {
        for v in vm.vcpus.iter_mut() {
            let mut lost: Vec<Thief> = raw
                .ledger
                .range(PairKey { victim: v.tid, thief: 1 }..=PairKey { victim: v.tid, thief: u32::MAX })
                .filter(|(_, s)| s.ns > 0)
                .map(|(k, s)| {
                    let m = meta(k.thief);
                    Thief { tid: k.thief, comm: m.comm, role: role_name(m.role), vm: m.vm, ns: s.ns }
                })
                .collect();
            lost.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.tid.cmp(&b.tid)));
            v.lost_to = lost;
        }
    }
}

/// Wait time taken by each thief between two snapshots, largest first (for the live
/// line): (thief tid, ns), idle (tid 0) left out.
pub fn thieves_delta(before: &RawCounters, after: &RawCounters) -> Vec<(u32, u64)> {
    let mut by_thief: BTreeMap<u32, u64> = BTreeMap::new();
    for (k, v) in &after.ledger {
        let old = before.ledger.get(k).map(|p| p.ns).unwrap_or(0);
        if k.thief != 0 && v.ns > old {
            *by_thief.entry(k.thief).or_insert(0) += v.ns - old;
        }
    }
    let mut out: Vec<(u32, u64)> = by_thief.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use tracer_common::{
        Window,
        ledger::{CpuHistory, SwitchOut},
    };

    use super::*;
    use crate::host::Role;

    fn meta(tid: u32) -> ThreadMeta {
        let (role, vm) = match tid {
            10 => (Role::Vcpu, Some("vm1".to_string())),
            11 => (Role::Vmm, Some("vm1".to_string())),
            _ => (Role::Other, None),
        };
        ThreadMeta { pid: tid, comm: format!("t{tid}"), role, vcpu_index: None, vm }
    }

    /// CPU 0: vCPU 10 preempted at 2000 by the emulator 11, then 7 from 2600, and
    /// still waiting at the stop (3000).
    fn raw() -> RawCounters {
        let w = Window { start_ns: 1_000, stop_ns: 0, flags: 0 };
        let mut r = RawCounters { window: w, nr_cpus: 1, online_cpus: vec![0], ..Default::default() };
        let mut h = CpuHistory::default();
        h.switch(10, 10, 1_000);
        h.switch(10, 11, 2_000);
        h.switch(11, 7, 2_600);
        let mut t = ThreadSched::default();
        t.on_switch_out(2_000, 0, SwitchOut::Runnable, 0, &w);
        r.sched.insert(10, t);
        r.cpu_history = vec![h];
        r.window.stop_ns = 3_000;
        r
    }

    #[test]
    fn a_wait_open_at_the_stop_is_charged_once() {
        let mut r = raw();
        close_at_stop(&mut r);
        let once = (r.sched.clone(), r.ledger.clone());
        close_at_stop(&mut r);
        assert_eq!((r.sched.clone(), r.ledger.clone()), once);
        assert_eq!(r.sched[&10].runq_wait_ns, 1_000);
        assert_eq!(r.ledger[&PairKey { victim: 10, thief: 11 }].ns, 600);
        assert_eq!(r.ledger[&PairKey { victim: 10, thief: 7 }].ns, 400);
        let s = sched_report(&r.sched[&10], 1_000, &r).unwrap();
        assert_eq!((s.alive_ns, s.closure_error_ns), (2_000, 0));
    }

    #[test]
    fn victims_by_thief_role_and_the_vcpus_lost_to() {
        let mut r = raw();
        close_at_stop(&mut r);
        let l = ledger_report(&r, &meta, 1);
        assert_eq!(l.pairs_total, 2);
        assert_eq!((l.pairs.len(), l.pairs[0].thief, l.pairs[0].thief_role.as_str()), (1, 11, "vmm"));
        assert_eq!(l.victims.len(), 1);
        let roles = &l.victims[0].by_thief_role_ns;
        assert_eq!(roles.get("vmm"), Some(&600));
        assert_eq!(roles.get("other"), Some(&400));
        assert_eq!(roles.values().sum::<u64>(), l.victims[0].runq_wait_ns);
        assert!(l.unresolved_ns.is_empty());
    }

    #[test]
    fn unresolved_time_is_its_own_role() {
        let mut r = raw();
        r.sched.get_mut(&10).unwrap().cpu = 5; // a CPU with no history
        close_at_stop(&mut r);
        let l = ledger_report(&r, &meta, 10);
        assert_eq!(l.victims[0].by_thief_role_ns, BTreeMap::from([(UNRESOLVED.to_string(), 1_000)]));
        assert_eq!(l.unresolved_ns, BTreeMap::from([("cpu_unknown".to_string(), 1_000)]));
    }

    #[test]
    fn live_thieves() {
        let a = raw();
        let mut b = raw();
        b.ledger.insert(PairKey { victim: 10, thief: 11 }, PairStats { ns: 500, intervals: 1 });
        b.ledger.insert(PairKey { victim: 10, thief: 0 }, PairStats { ns: 900, intervals: 1 });
        assert_eq!(thieves_delta(&a, &b), vec![(11, 500)]);
    }
}
