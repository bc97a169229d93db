//! The report: one versioned JSON schema (`vmmtrace/2`, see docs/schema.md; files of
//! `vmmtrace/1` are still read), written atomically, and its text rendering.

mod who_took;

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    account::{
        Attribution,
        kvm::VmReport,
        ledger::{LedgerReport, SchedReport},
    },
    host::Role,
    probe::Features,
};

pub const SCHEMA: &str = "vmmtrace/2";
/// Older schemas `Report::from_json` still reads (their missing parts stay empty).
pub const READABLE_SCHEMAS: [&str; 2] = ["vmmtrace/1", SCHEMA];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub schema: String,
    /// Length of the trace window.
    pub wall_ns: u64,
    /// Unix time (s) at which tracing started.
    pub started_unix_s: u64,
    pub host: HostInfo,
    /// The traced command, if any, and how it ended.
    pub command: Option<CommandInfo>,
    pub cpus: Vec<CpuReport>,
    /// Every thread that ran in the window, busiest first (the idle task excluded:
    /// it is `cpus[].idle_ns`).
    pub threads: Vec<ThreadReport>,
    /// On-CPU time summed by role.
    pub by_role_ns: BTreeMap<Role, u64>,
    /// Every VM seen during the trace, with its vCPUs and VMM threads.
    pub vms: Vec<VmReport>,
    /// Events the probes could not record (a map was full); the figures above miss them.
    pub dropped_events: u64,
    /// How many events each probe handled.
    pub events: BTreeMap<String, u64>,
    /// Who took the time: run-queue waits charged to the threads that ran meanwhile
    /// (null in vmmtrace/1 files and with --no-ledger).
    #[serde(default)]
    pub ledger: Option<LedgerReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    /// Online CPUs.
    pub cpus: usize,
    pub kernel: String,
    pub features: Features,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandInfo {
    pub argv: Vec<String>,
    pub pid: u32,
    /// Exit code; null if it was killed by a signal or still running at the end.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CpuReport {
    pub cpu: u32,
    pub busy_ns: u64,
    pub idle_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ThreadReport {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub role: Role,
    /// For vCPU threads: the vCPU index.
    pub vcpu: Option<u32>,
    /// For vCPU and VMM threads: the VM's name.
    pub vm: Option<String>,
    /// Time on a CPU, from switch-in to switch-out (sum of per_cpu_ns).
    pub on_cpu_ns: u64,
    /// Indexed by CPU id.
    pub per_cpu_ns: Vec<u64>,
    pub switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    /// Run-queue wait, blocked time and their closure (null in vmmtrace/1 files, with
    /// --no-ledger, and for a thread whose state the probes never learned).
    #[serde(default)]
    pub sched: Option<SchedReport>,
}

impl Report {
    pub fn from_attribution(a: &Attribution, host: HostInfo, started_unix_s: u64) -> Report {
        Report {
            schema: SCHEMA.into(),
            wall_ns: a.wall_ns,
            started_unix_s,
            host,
            command: None,
            cpus: a.cpus.iter().map(|c| CpuReport { cpu: c.cpu, busy_ns: c.busy_ns, idle_ns: c.idle_ns }).collect(),
            threads: a
                .threads
                .iter()
                .map(|t| ThreadReport {
                    tid: t.tid,
                    pid: t.meta.pid,
                    comm: t.meta.comm.clone(),
                    role: t.meta.role,
                    vcpu: t.meta.vcpu_index,
                    vm: t.meta.vm.clone(),
                    on_cpu_ns: t.on_cpu_ns,
                    per_cpu_ns: t.per_cpu_ns.clone(),
                    switches: t.switches,
                    involuntary_switches: t.involuntary_switches,
                    migrations: t.migrations,
                    sched: None,
                })
                .collect(),
            by_role_ns: a.by_role_ns.clone(),
            vms: Vec::new(),
            dropped_events: 0,
            events: BTreeMap::new(),
            ledger: None,
        }
    }

    pub fn thread(&self, tid: u32) -> Option<&ThreadReport> {
        self.threads.iter().find(|t| t.tid == tid)
    }

    /// Parses a report, refusing other schemas with a clear message.
    pub fn from_json(text: &str) -> Result<Report, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(s) if READABLE_SCHEMAS.contains(&s) => {
                let s = s.to_string();
                serde_json::from_value(v).map_err(|e| format!("not a valid {s} report: {e}"))
            }
            Some(other) => Err(format!(
                "report schema is {other}; this vmmtrace reads {} (a newer vmmtrace may read it)",
                READABLE_SCHEMAS.join(" and ")
            )),
            None => Err("not a vmmtrace report (no \"schema\" field)".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the report to {path}: {source} (choose another --output)")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// fsync, then rename over the target. A reader sees the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |source| WriteError { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| err(std::io::Error::other("not a file path")))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(err)
}

/// Fails early (before tracing) if `path` cannot be written.
pub fn check_writable(path: &Path) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = dir.join(format!(".vmmtrace-probe.{}.tmp", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            if path.is_dir() {
                return Err(WriteError { path: path.into(), source: std::io::Error::other("is a directory") });
            }
            Ok(())
        }
        Err(source) => Err(WriteError { path: path.into(), source }),
    }
}

/// The role as the report spells it (vcpu, vmm, host_kernel, workload, other).
pub fn role_name(r: Role) -> String {
    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The text summary printed at the end of `record`.
pub fn render_text(r: &Report, top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
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
    for vm in &r.vms {
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
    s.push_str(&who_took::render(r, top));
    let _ = writeln!(s, "  dropped events: {}", r.dropped_events);
    for u in &r.host.features.unavailable {
        let _ = writeln!(s, "  note: {} unavailable: {}", u.probe, u.reason);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new contents").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new contents");
        // no temporary files left behind
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn unwritable_paths_are_refused_up_front() {
        assert!(check_writable(Path::new("/nonexistent-dir/x.json")).is_err());
        let d = tempfile::tempdir().unwrap();
        assert!(check_writable(d.path()).is_err());
        assert!(check_writable(&d.path().join("ok.json")).is_ok());
    }

    #[test]
    fn other_schemas_are_refused() {
        assert!(Report::from_json("{\"schema\":\"vmmtrace/0\"}").unwrap_err().contains("vmmtrace/0"));
        assert!(Report::from_json("[]").unwrap_err().contains("no \"schema\""));
        assert!(Report::from_json("nope").unwrap_err().contains("not JSON"));
    }
}
