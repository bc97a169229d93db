//! The "who took the time" section of the text report: the threads that waited
//! longest for a CPU, who ran on it meanwhile, and what each vCPU lost to whom.

use std::fmt::Write as _;

use super::{Report, ms};

/// Thieves named per victim in the text.
const THIEVES_SHOWN: usize = 3;

/// The section, or nothing when the report has no ledger (vmmtrace/1, --no-ledger).
pub fn render(r: &Report, top: usize) -> String {
    let mut s = String::new();
    let Some(l) = &r.ledger else { return s };
    let _ = writeln!(s, "  who took the time (run-queue wait, charged to whoever ran on the CPU meanwhile):");
    let _ = writeln!(s, "    {:<28} {:>10} {:>8}  taken by", "victim", "waited ms", "% alive");
    for v in l.victims.iter().take(top) {
        let alive = r.thread(v.tid).and_then(|t| t.sched.as_ref()).map(|s| s.alive_ns).unwrap_or(0);
        let thieves: Vec<String> = l
            .pairs
            .iter()
            .filter(|p| p.victim == v.tid)
            .take(THIEVES_SHOWN)
            .map(|p| format!("{}[{}] {:.1}", p.thief_comm, p.thief, ms(p.ns)))
            .collect();
        let roles: Vec<String> = v.by_thief_role_ns.iter().map(|(role, ns)| format!("{role} {:.1}", ms(*ns))).collect();
        let _ = writeln!(
            s,
            "    {:<28} {:>10.1} {:>7.1}%  {} (by role: {})",
            format!("{}[{}] {}", v.comm, v.tid, v.role),
            ms(v.runq_wait_ns),
            100.0 * v.runq_wait_ns as f64 / alive.max(1) as f64,
            if thieves.is_empty() { "-".to_string() } else { thieves.join(", ") },
            roles.join(", ")
        );
    }
    for vm in &r.vms {
        for v in vm.vcpus.iter().filter(|v| !v.lost_to.is_empty()) {
            let lost: Vec<String> = v
                .lost_to
                .iter()
                .take(THIEVES_SHOWN)
                .map(|t| format!("{}[{}] {} {:.1} ms", t.comm, t.tid, t.role, ms(t.ns)))
                .collect();
            let _ = writeln!(
                s,
                "    VM {} vCPU {} (tid {}) lost its CPU to: {}",
                vm.name,
                v.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
                v.tid,
                lost.join(", ")
            );
        }
    }
    let unresolved: u64 = l.unresolved_ns.values().sum();
    if unresolved > 0 {
        let why: Vec<String> = l.unresolved_ns.iter().map(|(k, v)| format!("{k} {:.1} ms", ms(*v))).collect();
        let _ = writeln!(s, "    unresolved (no thief could be named): {}", why.join(", "));
    }
    s
}
