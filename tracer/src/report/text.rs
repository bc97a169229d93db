//! The report as text.

use std::{collections::BTreeMap, fmt::Write as _};

use super::Report;
use crate::{account::kvm::VmReport, host::Role};

/// The role as the report spells it (vcpu, vmm, host_kernel, workload, other).
pub fn role_name(r: Role) -> String {
    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The text summary printed at the end of `record` and by `vmmtrace report`.
pub fn render_text(r: &Report, top: usize) -> String {
    let mut s = String::new();
    render_cpus(&mut s, r);
    render_threads(&mut s, r, top);
    for vm in &r.vms {
        render_vm(&mut s, vm);
    }
    s.push_str(&super::who_took::render(r, top));
    let _ = writeln!(s, "  dropped events: {}{}", r.dropped_events, by_cause(&r.dropped_by_cause));
    if r.retired_threads > 0 {
        let _ = writeln!(s, "  threads retired from the kernel maps after they exited: {}", r.retired_threads);
    }
    if let Some(line) = kvm_probe_paths(&r.host.features.attached) {
        let _ = writeln!(s, "  {line}");
    }
    for u in &r.host.features.unavailable {
        let _ = writeln!(s, "  note: {} unavailable: {}", u.probe, u.reason);
    }
    s
}

/// How the kvm tracepoints were attached, from `host.features.attached`: how many
/// as tp_btf and how many as classic tracepoints (None where none was).
pub fn kvm_probe_paths(attached: &[String]) -> Option<String> {
    let is_kvm = |p: &&String| p.split(':').nth(1).is_some_and(|c| c.starts_with("kvm"));
    let btf = attached.iter().filter(is_kvm).filter(|p| p.starts_with("tp_btf:")).count();
    let classic = attached.iter().filter(is_kvm).filter(|p| p.starts_with("tracepoint:")).count();
    (btf + classic > 0).then(|| {
        format!("kvm probes: {btf} as tp_btf, {classic} as classic tracepoints (host.features.attached names each)")
    })
}

/// " (cause n, cause n)", or nothing when no cause is known.
pub fn by_cause(causes: &BTreeMap<String, u64>) -> String {
    if causes.is_empty() {
        return String::new();
    }
    let list: Vec<String> = causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    format!(" ({})", list.join(", "))
}

/// The host line, each CPU's busy and idle shares, and time by role.
fn render_cpus(s: &mut String, r: &Report) {
    let cpu_total = r.wall_ns as f64 * r.cpus.len().max(1) as f64;
    let _ = writeln!(
        s,
        "vmmtrace: {:.2} s on {} CPUs ({}), kernel {}",
        r.wall_ns as f64 / 1e9,
        r.cpus.len(),
        r.host.hostname,
        r.host.kernel
    );
    for c in &r.cpus {
        let _ = writeln!(
            s,
            "  cpu {:>3}: busy {:>6.1}%  idle {:>6.1}%",
            c.cpu,
            100.0 * c.busy_ns as f64 / r.wall_ns.max(1) as f64,
            100.0 * c.idle_ns as f64 / r.wall_ns.max(1) as f64
        );
    }
    let _ = writeln!(s, "  by role (share of all CPU time):");
    for (role, ns) in &r.by_role_ns {
        let _ =
            writeln!(s, "    {:<12} {:>10.1} ms {:>6.1}%", role_name(*role), ms(*ns), 100.0 * *ns as f64 / cpu_total);
    }
}

/// The `top` busiest threads.
fn render_threads(s: &mut String, r: &Report, top: usize) {
    let _ = writeln!(s, "  top threads:");
    let _ = writeln!(
        s,
        "    {:>8} {:>8} {:<16} {:<12} {:>10} {:>8} {:>8} {:>6}",
        "tid", "pid", "comm", "role", "on-CPU ms", "switch", "invol", "migr"
    );
    for t in r.threads.iter().take(top) {
        let _ = writeln!(
            s,
            "    {:>8} {:>8} {:<16} {:<12} {:>10.1} {:>8} {:>8} {:>6}",
            t.tid,
            t.pid,
            t.comm,
            role_name(t.role),
            ms(t.on_cpu_ns),
            t.switches,
            t.involuntary_switches,
            t.migrations
        );
    }
}

/// A VM and its vCPUs.
fn render_vm(s: &mut String, vm: &VmReport) {
    let _ = writeln!(
        s,
        "  VM {} (pid {}): {} vCPUs, in KVM_RUN {:.1} ms, VMM userspace on vCPU threads {:.1} ms, VMM threads {:.1} ms",
        vm.name,
        vm.pid,
        vm.vcpus.len(),
        ms(vm.kvm_run_ns),
        ms(vm.vmm_user_ns),
        ms(vm.vmm_threads_ns)
    );
    for v in &vm.vcpus {
        let split = match (v.guest_ns, v.exit_handling_ns) {
            (Some(g), Some(e)) => format!("guest {:.1} ms, exit handling {:.1} ms", ms(g), ms(e)),
            _ => "guest/exit split unavailable".into(),
        };
        let uexits: u64 = v.userspace_exits.values().sum();
        let kexits: u64 = v.exits.values().map(|e| e.count).sum();
        let _ = writeln!(
            s,
            "    vCPU {} (tid {}{}): on-CPU {:.1} ms = KVM_RUN {:.1} + VMM user {:.1}; {split}; exits: {kexits} in-kernel, {uexits} to userspace; migrations {}",
            v.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            v.tid,
            if v.pinned { ", pinned" } else { "" },
            ms(v.on_cpu_ns),
            ms(v.kvm_run_ns),
            ms(v.vmm_user_ns),
            v.migrations
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_probe_paths_count_each_path_and_skip_the_others() {
        let attached: Vec<String> = [
            "tp_btf:sched_switch",
            "tracepoint:syscalls:sys_enter_ioctl",
            "tp_btf:kvm:kvm_exit",
            "tracepoint:kvm:kvm_pio",
            "tp_btf:kvmmmu:kvm_mmu_set_spte",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            kvm_probe_paths(&attached).unwrap(),
            "kvm probes: 2 as tp_btf, 1 as classic tracepoints (host.features.attached names each)"
        );
        assert_eq!(kvm_probe_paths(&attached[..2]), None);
    }
}
