//! What `serve` exports, pure: the metric families (name, help, labels) and each
//! series' value, read off a report of the trace so far, split by the thread it comes
//! from so that the exporter can carry a thread's total when it leaves the maps.

use std::collections::BTreeMap;

use tracer_common::counter;

use crate::{
    account::kvm::{VcpuReport, VmReport},
    report::{Report, role_name},
};

/// A metric family: its full Prometheus name, help text and label names.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn family(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
    Family { name, help, labels }
}

pub const CPU_BY_ROLE: Family = family(
    "vmmtrace_cpu_seconds_total",
    "CPU time of the host's threads by role (vcpu, vmm, host_kernel, workload, other) and idle.",
    &["role"],
);
pub const VM_CPU: Family = family(
    "vmmtrace_vm_cpu_seconds_total",
    "CPU time of a VM by category: guest, exit_handling (in-kernel KVM), in_kvm_run (guest and exit handling \
     where kvm_entry/kvm_exit do not fire), vmm_userspace (the VMM on vCPU threads), vmm_threads.",
    &["vm", "category"],
);
pub const VCPU_CPU: Family = family(
    "vmmtrace_vcpu_cpu_seconds_total",
    "CPU time of a vCPU thread by category: guest, exit_handling, in_kvm_run, vmm_userspace.",
    &["vm", "vcpu", "category"],
);
pub const VCPU_WAIT: Family = family(
    "vmmtrace_vcpu_runqueue_wait_seconds_total",
    "Time a runnable vCPU waited for its CPU, by the role of the thread that ran meanwhile (the thief).",
    &["vm", "vcpu", "role"],
);
pub const VCPU_MIGRATIONS: Family =
    family("vmmtrace_vcpu_migrations_total", "Migrations of a vCPU thread between CPUs.", &["vm", "vcpu"]);
pub const VMM_MIGRATIONS: Family = family(
    "vmmtrace_vmm_thread_migrations_total",
    "Migrations of a VM's VMM threads (not vCPUs) between CPUs, by thread kind.",
    &["vm", "kind"],
);
pub const KVM_EXITS: Family = family(
    "vmmtrace_kvm_exits_total",
    "kvm:kvm_exit events by exit reason (none where kvm_exit does not fire, e.g. PVM).",
    &["vm", "vcpu", "reason"],
);
pub const KVM_USERSPACE_EXITS: Family = family(
    "vmmtrace_kvm_userspace_exits_total",
    "Returns of KVM_RUN to the VMM (kvm:kvm_userspace_exit) by KVM_EXIT_* reason.",
    &["vm", "vcpu", "reason"],
);
pub const KVM_EVENTS: Family = family(
    "vmmtrace_kvm_events_total",
    "Other in-kernel KVM events on a vCPU (kvm_pio, kvm_msr, ...): the view on exits where kvm_exit does not fire.",
    &["vm", "vcpu", "event"],
);
pub const TRACED: Family = family("vmmtrace_traced_seconds_total", "Wall time traced since serve started.", &[]);
pub const PROBE_EVENTS: Family =
    family("vmmtrace_probe_events_total", "Events the eBPF programs handled, by probe.", &["probe"]);
pub const DROPPED: Family = family(
    "vmmtrace_dropped_events_total",
    "Events the probes could not record, by cause (the map that was full); the figures above miss them.",
    &["cause"],
);
pub const TRACER_CPU: Family = family(
    "vmmtrace_tracer_cpu_seconds_total",
    "vmmtrace's own CPU time: userspace (this process, user and system) and bpf (its programs; counted only \
     while kernel.bpf_stats_enabled is 1).",
    &["part"],
);

/// Every counter family, in the order of the exposition.
pub const COUNTERS: [&Family; 13] = [
    &CPU_BY_ROLE,
    &VM_CPU,
    &VCPU_CPU,
    &VCPU_WAIT,
    &VCPU_MIGRATIONS,
    &VMM_MIGRATIONS,
    &KVM_EXITS,
    &KVM_USERSPACE_EXITS,
    &KVM_EVENTS,
    &TRACED,
    &PROBE_EVENTS,
    &DROPPED,
    &TRACER_CPU,
];

pub const MAP_ENTRIES: Family =
    family("vmmtrace_map_entries", "Entries in each of the probes' growing maps now.", &["map"]);
pub const MAP_CAPACITY: Family =
    family("vmmtrace_map_capacity", "Entries each of the probes' growing maps can hold.", &["map"]);
pub const RESIDENT: Family = family("vmmtrace_resident_memory_bytes", "vmmtrace's resident memory.", &[]);
pub const VMS_RUNNING: Family = family("vmmtrace_vms", "VMs running on the host now.", &[]);
pub const ONLINE_CPUS: Family = family("vmmtrace_online_cpus", "Online CPUs of the host.", &[]);

/// Every gauge family.
pub const GAUGES: [&Family; 5] = [&MAP_ENTRIES, &MAP_CAPACITY, &RESIDENT, &VMS_RUNNING, &ONLINE_CPUS];

/// Where a part of a series comes from: a thread (`tid`), or the host as a whole
/// (`tid` 0: the idle tasks and the probes' global counters, which never leave).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    pub tid: u32,
    /// The VMM pid of the VM the series belongs to: the series goes when the VM stops.
    pub vm_pid: Option<u32>,
}

/// One source's part of one series (the series is the family and its label values).
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub family: &'static Family,
    pub labels: Vec<String>,
    pub source: Source,
    pub value: f64,
}

const HOST: Source = Source { tid: 0, vm_pid: None };

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// vmmtrace's own CPU time (s), as the caller measured it.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct OwnCpu {
    pub userspace_s: f64,
    pub bpf_s: f64,
}

/// Every counter part the report holds. `counters` are the probes' global counters
/// (`tracer_common::counter`), for the drops by cause.
pub fn parts(report: &Report, counters: &[u64], own: OwnCpu) -> Vec<Part> {
    let mut out = Vec::new();
    let mut add = |family: &'static Family, labels: &[&str], source: Source, value: f64| {
        out.push(Part { family, labels: labels.iter().map(|l| l.to_string()).collect(), source, value })
    };
    for t in &report.threads {
        add(&CPU_BY_ROLE, &[&role_name(t.role)], Source { tid: t.tid, vm_pid: None }, secs(t.on_cpu_ns));
    }
    add(&CPU_BY_ROLE, &["idle"], HOST, secs(report.cpus.iter().map(|c| c.idle_ns).sum()));
    add(&TRACED, &[], HOST, secs(report.wall_ns));
    for (probe, n) in &report.events {
        add(&PROBE_EVENTS, &[probe], HOST, *n as f64);
    }
    for (cause, idx) in DROP_CAUSES {
        add(&DROPPED, &[cause], HOST, counters.get(idx as usize).copied().unwrap_or(0) as f64);
    }
    add(&TRACER_CPU, &["userspace"], HOST, own.userspace_s);
    add(&TRACER_CPU, &["bpf"], HOST, own.bpf_s);
    for vm in &report.vms {
        vm_parts(vm, &mut out);
    }
    out
}

/// Each counter of lost data, by the map that was full.
const DROP_CAUSES: [(&str, u32); 6] = [
    ("thread_stats_full", counter::DROPPED_THREAD_STATS),
    ("thread_info_full", counter::DROPPED_THREAD_INFO),
    ("watch_full", counter::DROPPED_WATCH),
    ("kvm_map_full", counter::DROPPED_KVM),
    ("thread_sched_full", counter::DROPPED_THREAD_SCHED),
    ("ledger_full", counter::DROPPED_LEDGER),
];

/// The label of a vCPU: its index, or its tid where discovery could not tell the index.
pub fn vcpu_label(v: &VcpuReport) -> String {
    match v.index {
        Some(i) => i.to_string(),
        None => format!("tid{}", v.tid),
    }
}

/// The categories a vCPU thread's time splits into: guest and exit handling where
/// kvm_entry/kvm_exit fired, else in_kvm_run undivided; and the VMM's userspace.
fn vcpu_categories(v: &VcpuReport) -> Vec<(&'static str, u64)> {
    let mut out = match (v.guest_ns, v.exit_handling_ns) {
        (Some(g), Some(e)) => vec![("guest", g), ("exit_handling", e)],
        _ => vec![("in_kvm_run", v.kvm_run_ns)],
    };
    out.push(("vmm_userspace", v.vmm_user_ns));
    out
}

fn vm_parts(vm: &VmReport, out: &mut Vec<Part>) {
    let name = vm.name.as_str();
    let mut add = |family: &'static Family, labels: &[&str], tid: u32, value: f64| {
        out.push(Part {
            family,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            source: Source { tid, vm_pid: Some(vm.pid) },
            value,
        })
    };
    for v in &vm.vcpus {
        let vcpu = vcpu_label(v);
        for (category, ns) in vcpu_categories(v) {
            add(&VCPU_CPU, &[name, &vcpu, category], v.tid, secs(ns));
            add(&VM_CPU, &[name, category], v.tid, secs(ns));
        }
        let mut wait_by_role: BTreeMap<&str, u64> = BTreeMap::new();
        for thief in &v.lost_to {
            *wait_by_role.entry(thief.role.as_str()).or_default() += thief.ns;
        }
        for (role, ns) in wait_by_role {
            add(&VCPU_WAIT, &[name, &vcpu, role], v.tid, secs(ns));
        }
        add(&VCPU_MIGRATIONS, &[name, &vcpu], v.tid, v.migrations as f64);
        for (reason, e) in &v.exits {
            add(&KVM_EXITS, &[name, &vcpu, reason], v.tid, e.count as f64);
        }
        for (reason, n) in &v.userspace_exits {
            add(&KVM_USERSPACE_EXITS, &[name, &vcpu, reason], v.tid, *n as f64);
        }
        for (event, n) in &v.kvm_events {
            add(&KVM_EVENTS, &[name, &vcpu, event], v.tid, *n as f64);
        }
    }
    for t in &vm.vmm_threads {
        add(&VM_CPU, &[name, "vmm_threads"], t.tid, secs(t.on_cpu_ns));
        let kind = serde_json::to_value(t.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        add(&VMM_MIGRATIONS, &[name, &kind], t.tid, t.migrations as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for f in COUNTERS {
            assert!(f.name.starts_with("vmmtrace_") && f.name.ends_with("_total"), "{}", f.name);
        }
        for f in GAUGES {
            assert!(f.name.starts_with("vmmtrace_") && !f.name.ends_with("_total"), "{}", f.name);
        }
        let mut names: Vec<_> = COUNTERS.iter().chain(GAUGES.iter()).map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len() + GAUGES.len(), "a family name is used twice");
    }

    #[test]
    fn unsplit_kvm_run_is_its_own_category() {
        let mut v: VcpuReport = serde_json::from_value(serde_json::json!({
            "index": 1, "tid": 42, "comm": "CPU 1/KVM", "on_cpu_ns": 10, "kvm_run_ns": 7, "vmm_user_ns": 3,
            "guest_ns": null, "exit_handling_ns": null, "split_unavailable": "kvm_exit never fired",
            "guest_estimate": null, "samples_guest": 0, "samples_host_kvm": 0, "userspace_exits": {},
            "exits": {}, "kvm_events": {}, "switches": 0, "involuntary_switches": 0, "migrations": 0,
            "affinity": [], "pinned": false
        }))
        .unwrap();
        assert_eq!(vcpu_categories(&v), vec![("in_kvm_run", 7), ("vmm_userspace", 3)]);
        v.guest_ns = Some(5);
        v.exit_handling_ns = Some(2);
        assert_eq!(vcpu_categories(&v), vec![("guest", 5), ("exit_handling", 2), ("vmm_userspace", 3)]);
        assert_eq!(vcpu_label(&v), "1");
        v.index = None;
        assert_eq!(vcpu_label(&v), "tid42");
    }
}
