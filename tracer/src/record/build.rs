//! The report at the end of a trace, from the probes' last counters and what
//! discovery learned.

use std::collections::{BTreeMap, HashSet};

use crate::{
    account,
    host::{Discovery, clock_tick_ns, comm_from_bytes, earlier_thread_meta, kernel_string, thread_meta},
    probe::{self, Probes, RawCounters},
    report::{HostInfo, Report},
};

pub fn host_info(features: probe::Features, online: usize) -> HostInfo {
    HostInfo { hostname: kernel_string("hostname"), cpus: online, kernel: kernel_string("osrelease"), features }
}

/// (victim, thief) pairs listed in the report's ledger unless told otherwise.
pub const DEFAULT_LEDGER_TOP: usize = 200;

/// Builds the report from the probes' final counters and what discovery learned,
/// listing the `ledger_top` largest (victim, thief) pairs.
pub fn build_report(
    mut raw: RawCounters,
    features: probe::Features,
    started_unix_s: u64,
    mut disc: Discovery,
    ledger_top: usize,
) -> Report {
    account::close_open_intervals(&mut raw);
    account::ledger::close_at_stop(&mut raw);
    disc.observe(&raw);
    let seen: BTreeMap<u32, (u32, String)> = raw
        .threads
        .keys()
        .filter_map(|tid| raw.thread_info.get(tid).map(|i| (*tid, (i.tgid, comm_from_bytes(&i.comm)))))
        .collect();
    let kvm_run_tids: HashSet<u32> = raw.vcpus.keys().copied().collect();
    disc.registry.add_unseen_vms(&kvm_run_tids, &seen);
    let meta = thread_meta(&raw, &disc.registry);
    let a = account::attribute(&raw, &meta, |t| earlier_thread_meta(&disc.registry, t));
    let entry_exit_unavailable = match &features.kvm_split {
        probe::KvmSplit::Available => None,
        probe::KvmSplit::Unavailable(why) => Some(why.clone()),
    };
    let gtime = disc.gtime_ns();
    let vm_list: Vec<_> = disc.registry.vms.values().cloned().collect();
    let vms = account::kvm::vms(
        &raw,
        &a.threads,
        &account::kvm::KvmInputs {
            vms: &vm_list,
            threads: &disc.registry.threads,
            gtime_ns: &gtime,
            tick_ns: clock_tick_ns(),
            entry_exit_unavailable,
        },
    );
    let mut r = Report::from_attribution(&a, host_info(features, raw.online_cpus.len()), started_unix_s);
    r.vms = vms;
    let earlier = a.threads.iter().map(|t| t.earlier).collect();
    add_ledger(&mut r, &raw, &meta, earlier, ledger_top);
    r.dropped_events = raw.dropped_events();
    r.dropped_by_cause = raw.dropped_by_cause();
    r.retired_threads = raw.retired_threads;
    use tracer_common::counter as c;
    for (name, idx) in [
        ("sched_switch", c::SCHED_SWITCH),
        ("sched_migrate_task", c::SCHED_MIGRATE),
        ("sched_process_fork", c::SCHED_FORK),
        ("comm_update", c::COMM_UPDATE),
        ("kvm_run_enter", c::KVM_RUN_ENTER),
        ("kvm_run_exit", c::KVM_RUN_EXIT),
        ("kvm_entry", c::KVM_ENTRY),
        ("kvm_exit", c::KVM_EXIT),
        ("kvm_userspace_exit", c::KVM_USERSPACE_EXIT),
        ("kvm_other", c::KVM_OTHER),
        ("sched_wakeup", c::SCHED_WAKEUP),
        ("sched_wakeup_new", c::SCHED_WAKEUP_NEW),
        ("missed_switch", c::MISSED_SWITCH),
        ("timeline_dropped", c::DROPPED_TIMELINE),
        ("sched_process_exit", c::SCHED_EXIT),
    ] {
        r.events.insert(name.into(), raw.counters.get(idx as usize).copied().unwrap_or(0));
    }
    r
}

/// Who took the time: each thread's run-queue states, the ledger, and each vCPU's
/// `lost_to` (nothing when the ledger was not kept).
fn add_ledger(
    r: &mut Report,
    raw: &RawCounters,
    meta: &impl Fn(u32) -> account::ThreadMeta,
    earlier: Vec<Option<usize>>,
    top: usize,
) {
    if raw.sched.is_empty() {
        return;
    }
    for (t, earlier) in r.threads.iter_mut().zip(&earlier) {
        let sched = match earlier {
            Some(i) => raw.earlier_threads.get(*i).and_then(|e| e.sched.as_ref()),
            None => raw.sched.get(&t.tid),
        };
        t.sched = sched.and_then(|s| account::ledger::sched_report(s, t.on_cpu_ns, raw));
    }
    account::ledger::fill_lost_to(&mut r.vms, raw, meta);
    r.ledger = Some(account::ledger::ledger_report(raw, meta, top));
}

/// Ends the trace: closes the window, reads the counters, detaches the probes, and
/// builds the report.
pub fn finish(probes: Probes, disc: Discovery, started_unix_s: u64) -> Result<Report, probe::ProbeError> {
    finish_listing(probes, disc, started_unix_s, DEFAULT_LEDGER_TOP)
}

/// [`finish`], listing the `ledger_top` largest (victim, thief) pairs.
pub fn finish_listing(
    mut probes: Probes,
    disc: Discovery,
    started_unix_s: u64,
    ledger_top: usize,
) -> Result<Report, probe::ProbeError> {
    probes.stop()?;
    let raw = probes.read()?;
    let features = probes.features.clone();
    drop(probes);
    Ok(build_report(raw, features, started_unix_s, disc, ledger_top))
}
