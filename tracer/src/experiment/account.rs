//! A job's interval as the trace tells it: named parts of its wall time, from the
//! run's record report. A job's processes run one after the other (bzip2 compresses,
//! then decompresses) and exist only inside the job's stopwatch interval, so the sum
//! of their threads' figures over the whole trace window is the account of that
//! interval. The run-queue wait is split by thief as the study would name them, from
//! the preemption ledger.

use std::collections::{BTreeMap, BTreeSet};

use super::result::NamedThief;
use crate::report::Report;

/// The parts of the wall time of a host job made of processes `pids`: `on_cpu` (for
/// now; the run-queue wait by thief and the blocked time join it with the ledger).
pub fn host_job_parts(report: &Report, pids: &[u32], other_jobs_pids: &[u32]) -> BTreeMap<String, u64> {
    let tids = host_job_threads(report, pids);
    let on_cpu: u64 = report.threads.iter().filter(|t| tids.contains(&t.tid)).map(|t| t.on_cpu_ns).sum();
    let mut parts: BTreeMap<String, u64> = [("on_cpu".to_string(), on_cpu)].into_iter().collect();
    parts.extend(ledger_parts(report, &tids, pids, other_jobs_pids));
    parts
}

/// The threads of a host job: every thread of its processes.
pub fn host_job_threads(report: &Report, pids: &[u32]) -> BTreeSet<u32> {
    report.threads.iter().filter(|t| pids.contains(&t.pid)).map(|t| t.tid).collect()
}

/// The vCPU threads of a VM job: those of its KVM VMs, else (QEMU emulating) its
/// threads named "CPU n/...".
pub fn vm_job_vcpus(report: &Report, pids: &[u32]) -> BTreeSet<u32> {
    let kvm: BTreeSet<u32> =
        report.vms.iter().filter(|vm| pids.contains(&vm.pid)).flat_map(|vm| vm.vcpus.iter().map(|v| v.tid)).collect();
    if !kvm.is_empty() {
        return kvm;
    }
    report.threads.iter().filter(|t| pids.contains(&t.pid) && t.comm.starts_with("CPU ")).map(|t| t.tid).collect()
}

/// The parts of a VM job (one VMM process per step, `pids`): the vCPU threads' time
/// on CPU, split into guest and exit handling where kvm_exit fires (else inside
/// KVM_RUN as a whole) and VMM userspace on the vCPU thread (where a guest program's
/// system calls are served); and `vm_setup`, the part of the wall time outside the
/// vCPUs' lives (VM creation, program loading, teardown), by the VMM's own clock.
pub fn vm_job_parts(
    report: &Report,
    pids: &[u32],
    other_jobs_pids: &[u32],
    vcpu_life_ns: Option<u64>,
    wall_ns: u64,
) -> BTreeMap<String, u64> {
    let vcpus = vm_job_vcpus(report, pids);
    let mut parts = vcpu_on_cpu_parts(report, pids, &vcpus);
    if let Some(life) = vcpu_life_ns {
        parts.insert("vm_setup".into(), wall_ns.saturating_sub(life));
    }
    parts.extend(ledger_parts(report, &vcpus, pids, other_jobs_pids));
    parts
}

/// The vCPU threads' time on CPU: split into guest and exit handling where kvm_exit
/// fires (else inside KVM_RUN as a whole) and VMM userspace, for the KVM VMs of
/// `pids`; without a KVM VM (QEMU emulating), the `vcpus` threads' time as a whole.
fn vcpu_on_cpu_parts(report: &Report, pids: &[u32], vcpus: &BTreeSet<u32>) -> BTreeMap<String, u64> {
    let mut parts: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |k: &str, v: u64| *parts.entry(k.to_string()).or_insert(0) += v;
    if !report.vms.iter().any(|vm| pids.contains(&vm.pid) && !vm.vcpus.is_empty()) {
        for t in report.threads.iter().filter(|t| vcpus.contains(&t.tid)) {
            add("on_cpu", t.on_cpu_ns);
        }
    }
    for vm in report.vms.iter().filter(|vm| pids.contains(&vm.pid)) {
        for v in &vm.vcpus {
            match (v.guest_ns, v.exit_handling_ns) {
                (Some(g), Some(e)) => {
                    add("on_cpu.guest", g);
                    add("on_cpu.exit_handling", e);
                }
                _ => add("on_cpu.kvm_run", v.kvm_run_ns),
            }
            add("on_cpu.vmm_user", v.vmm_user_ns);
        }
    }
    parts
}

/// The vCPU threads of a user's VM (`--env vm`) whose VMM processes are `vm_pids`:
/// those of its KVM VMs, else its threads named as vCPUs (QEMU emulating: "CPU n/TCG"),
/// else (a process standing in for a VM) every thread of it.
pub fn user_vm_vcpus(report: &Report, vm_pids: &[u32]) -> BTreeSet<u32> {
    let named = vm_job_vcpus(report, vm_pids);
    if !named.is_empty() {
        return named;
    }
    report.threads.iter().filter(|t| vm_pids.contains(&t.pid)).map(|t| t.tid).collect()
}

/// The parts of a job run in a user's VM (`--env vm`): as a VM job's, from the vCPU
/// threads of its VMM processes `vm_pids`, over the time they were alive in the
/// trace. The VM's life need not match the job's stopwatch: a VM started by the
/// command lives inside it (the rest of the wall time is `vm_setup`: starting the VM,
/// connecting), a running VM lives across the whole trace (the vCPUs' time outside
/// the job is taken out of their blocked time: an idle guest's vCPU sleeps).
/// `own_pids`: the job's processes on the host and its VMM's.
pub fn user_vm_job_parts(
    report: &Report,
    vm_pids: &[u32],
    own_pids: &[u32],
    other_jobs_pids: &[u32],
    wall_ns: u64,
) -> BTreeMap<String, u64> {
    let vcpus = user_vm_vcpus(report, vm_pids);
    let mut parts = vcpu_on_cpu_parts(report, vm_pids, &vcpus);
    parts.extend(ledger_parts(report, &vcpus, own_pids, other_jobs_pids));
    let alive: u64 = report
        .threads
        .iter()
        .filter(|t| vcpus.contains(&t.tid))
        .filter_map(|t| t.sched.as_ref())
        .map(|s| s.alive_ns)
        .sum();
    if alive < wall_ns {
        parts.insert("vm_setup".into(), wall_ns - alive);
    } else if let Some(blocked) = parts.get_mut("blocked") {
        *blocked = blocked.saturating_sub(alive - wall_ns);
    }
    parts
}

/// How long the vCPU of a VMM's ground truth ran, by the VMM's clock: the micro-VM's
/// `vcpus[].start_monotonic_ns` to `end_monotonic_ns` (the longest vCPU); QEMU's
/// `elapsed_ns` less `boot_ns` (launch to the guest program's start).
pub fn vcpu_life_ns(truth_json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(truth_json).ok()?;
    if let (Some(e), Some(b)) =
        (v.get("elapsed_ns").and_then(|x| x.as_u64()), v.get("boot_ns").and_then(|x| x.as_u64()))
    {
        return e.checked_sub(b);
    }
    v.get("vcpus")?
        .as_array()?
        .iter()
        .filter_map(|c| {
            let s = c.get("start_monotonic_ns")?.as_u64()?;
            let e = c.get("end_monotonic_ns")?.as_u64()?;
            e.checked_sub(s)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_life_from_the_truth() {
        let t = r#"{"vcpus":[{"start_monotonic_ns":100,"end_monotonic_ns":600},{"start_monotonic_ns":150,"end_monotonic_ns":400}]}"#;
        assert_eq!(vcpu_life_ns(t), Some(500));
        assert_eq!(vcpu_life_ns("{}"), None);
        assert_eq!(vcpu_life_ns(r#"{"elapsed_ns":1000,"boot_ns":130,"vcpu":{}}"#), Some(870));
    }

    #[test]
    fn qemu_truth_names_the_vmm_and_the_vcpus_kernel_counts() {
        let t = r#"{"pid":7,"threads":[{"role":"main_loop","on_cpu_ns":5,"run_delay_ns":1},
            {"role":"vcpu","on_cpu_ns":100,"run_delay_ns":20}]}"#;
        assert_eq!(truth_pid(t), Some(7));
        let k = truth_vcpu_kernel_times(t).unwrap();
        assert_eq!((k.on_cpu_ns, k.run_delay_ns), (100, 20));
        assert!(truth_vcpu_kernel_times(r#"{"pid":7,"vcpus":[]}"#).is_none());
        assert_eq!(vcpu_life_ns("not json"), None);
    }
}

/// The VMM process a ground truth names (`pid`).
pub fn truth_pid(truth_json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(truth_json).ok()?;
    v.get("pid")?.as_u64().map(|p| p as u32)
}

/// The kernel's on-CPU time and run-queue wait of the vCPU threads, where the truth
/// gives both (QEMU's `threads[]` with role `vcpu`).
pub fn truth_vcpu_kernel_times(truth_json: &str) -> Option<super::result::KernelTimes> {
    let v: serde_json::Value = serde_json::from_str(truth_json).ok()?;
    let vcpus: Vec<&serde_json::Value> = v
        .get("threads")?
        .as_array()?
        .iter()
        .filter(|t| t.get("role").and_then(|r| r.as_str()) == Some("vcpu"))
        .collect();
    if vcpus.is_empty() {
        return None;
    }
    let sum = |k: &str| vcpus.iter().map(|t| t.get(k).and_then(|x| x.as_u64())).sum::<Option<u64>>();
    Some(super::result::KernelTimes { on_cpu_ns: sum("on_cpu_ns")?, run_delay_ns: sum("run_delay_ns")? })
}

/// What the ledger's pairs tell of a job's wait beyond the thief roles.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NamedWait {
    /// Taken by this job's own VMM's non-vCPU threads.
    pub vmm_own_ns: u64,
    /// Taken by the other jobs of the run (their processes, or their vCPUs).
    pub other_jobs_ns: u64,
}

/// The study's thieves, from a job's run-queue wait by thief role (the ledger's
/// `by_thief_role_ns`, summed over the job's threads) and what the pairs name:
/// `runq_wait.other_jobs`, `runq_wait.vmm_own` (this VM's VMM threads),
/// `runq_wait.vmm_other_vms` (any other VMM thread), `runq_wait.host_kernel`,
/// `runq_wait.idle` (wake-up latency), `runq_wait.unresolved` and `runq_wait.other`
/// (everything else: other processes and other VMs' vCPUs). They add up to the
/// job's run-queue wait.
pub fn runq_wait_parts(by_thief_role_ns: &BTreeMap<String, u64>, named: NamedWait) -> BTreeMap<String, u64> {
    let role = |r: &str| by_thief_role_ns.get(r).copied().unwrap_or(0);
    let not_kernel = role("workload") + role("vcpu") + role("other");
    // The job's own VMM threads are `vmm` where the VM was discovered, else (QEMU
    // emulating, the guest programs' server) they carry the workload role.
    let vmm_own = named.vmm_own_ns.min(role("vmm") + not_kernel);
    let own_from_vmm = vmm_own.min(role("vmm"));
    let rest = not_kernel - (vmm_own - own_from_vmm);
    let other_jobs = named.other_jobs_ns.min(rest);
    let known = ["workload", "vcpu", "other", "vmm", "host_kernel", "idle", "unresolved"];
    let unknown_roles: u64 =
        by_thief_role_ns.iter().filter(|(k, _)| !known.contains(&k.as_str())).map(|(_, v)| v).sum();
    let mut parts: BTreeMap<String, u64> = [
        ("runq_wait.other_jobs", other_jobs),
        ("runq_wait.vmm_own", vmm_own),
        ("runq_wait.vmm_other_vms", role("vmm") - own_from_vmm),
        ("runq_wait.host_kernel", role("host_kernel")),
        ("runq_wait.idle", role("idle")),
        ("runq_wait.unresolved", role("unresolved")),
        ("runq_wait.other", rest - other_jobs + unknown_roles),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    parts.retain(|_, v| *v > 0);
    parts
}

#[cfg(test)]
mod runq_tests {
    use super::*;

    #[test]
    fn thieves_are_named_as_the_study_would_and_add_up() {
        let by: BTreeMap<String, u64> = [
            ("workload", 10u64),
            ("vcpu", 5),
            ("vmm", 30),
            ("host_kernel", 7),
            ("other", 3),
            ("idle", 2),
            ("unresolved", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let p = runq_wait_parts(&by, NamedWait { vmm_own_ns: 20, other_jobs_ns: 12 });
        let get = |k: &str| p.get(k).copied().unwrap_or(0);
        assert_eq!(get("runq_wait.other_jobs"), 12);
        assert_eq!(get("runq_wait.other"), 6, "the vCPU and workload time of no job of ours, and other");
        assert_eq!(get("runq_wait.vmm_own"), 20);
        assert_eq!(get("runq_wait.vmm_other_vms"), 10);
        assert_eq!(get("runq_wait.host_kernel"), 7);
        assert_eq!(get("runq_wait.idle"), 2);
        assert_eq!(get("runq_wait.unresolved"), 1);
        assert_eq!(p.values().sum::<u64>(), by.values().sum::<u64>());
        // A named share cannot exceed what its roles took.
        let p = runq_wait_parts(&by, NamedWait { vmm_own_ns: 40, other_jobs_ns: 99 });
        assert_eq!(
            (p["runq_wait.vmm_own"], p["runq_wait.other_jobs"]),
            (40, 8),
            "own VMM threads with the workload role"
        );
        assert!(!p.contains_key("runq_wait.vmm_other_vms"));
        assert_eq!(p.values().sum::<u64>(), by.values().sum::<u64>());
        let p = runq_wait_parts(&by, NamedWait { vmm_own_ns: 999, other_jobs_ns: 0 });
        assert_eq!(p["runq_wait.vmm_own"], 48);
        assert_eq!(p.values().sum::<u64>(), by.values().sum::<u64>());
    }
}

/// Run-queue wait by thief and blocked time of the job's threads `tids` (its
/// processes' threads on the host; its vCPU threads in a VM), from the ledger; empty
/// where the report has no ledger (vmmtrace/1, --no-ledger). `own_pids`: the job's
/// own processes, whose VMM threads are `vmm_own` thieves; `other_jobs_pids`, the
/// processes of the run's other jobs.
pub fn ledger_parts(
    report: &Report,
    tids: &BTreeSet<u32>,
    own_pids: &[u32],
    other_jobs_pids: &[u32],
) -> BTreeMap<String, u64> {
    let Some(ledger) = &report.ledger else { return BTreeMap::new() };
    let mut by_role: BTreeMap<String, u64> = BTreeMap::new();
    for v in ledger.victims.iter().filter(|v| tids.contains(&v.tid)) {
        for (role, ns) in &v.by_thief_role_ns {
            *by_role.entry(role.clone()).or_insert(0) += ns;
        }
    }
    let pid_of = |tid: u32| report.thread(tid).map(|t| t.pid);
    let mut named = NamedWait::default();
    for p in ledger.pairs.iter().filter(|p| tids.contains(&p.victim)) {
        let Some(pid) = pid_of(p.thief) else { continue };
        match p.thief_role.as_str() {
            // A thread of the job's own processes that is not the victim's: its VMM.
            _ if own_pids.contains(&pid) && !tids.contains(&p.thief) => named.vmm_own_ns += p.ns,
            "workload" | "vcpu" | "other" if other_jobs_pids.contains(&pid) => named.other_jobs_ns += p.ns,
            _ => {}
        }
    }
    let mut parts = runq_wait_parts(&by_role, named);
    let blocked: u64 = report
        .threads
        .iter()
        .filter(|t| tids.contains(&t.tid))
        .filter_map(|t| t.sched.as_ref())
        .map(|s| s.blocked_ns)
        .sum();
    if report.threads.iter().any(|t| tids.contains(&t.tid) && t.sched.is_some()) {
        parts.insert("blocked".into(), blocked);
    }
    parts
}

/// The threads that took the most of the job's run-queue wait, by name (at most 5).
pub fn top_thieves(report: &Report, tids: &BTreeSet<u32>) -> Vec<NamedThief> {
    let Some(ledger) = &report.ledger else { return Vec::new() };
    let mut by: BTreeMap<u32, NamedThief> = BTreeMap::new();
    for p in ledger.pairs.iter().filter(|p| tids.contains(&p.victim)) {
        let e = by.entry(p.thief).or_insert_with(|| NamedThief {
            tid: p.thief,
            comm: p.thief_comm.clone(),
            role: p.thief_role.clone(),
            vm: report.thread(p.thief).and_then(|t| t.vm.clone()),
            ns: 0,
        });
        e.ns += p.ns;
    }
    let mut v: Vec<NamedThief> = by.into_values().collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.ns));
    v.truncate(5);
    v
}
