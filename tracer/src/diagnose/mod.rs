//! `vmmtrace diagnose`: findings in plain words, read from a report, most costly
//! first, each with the numbers behind it and a remedy in the words operators know
//! (libvirt's vcpupin/emulatorpin/iothreadpin, taskset, isolcpus/nohz_full, cgroup
//! cpusets). Pure: a report in, findings out. One file per kind of finding.

mod busy_cores;
mod exit_rates;
mod shared_cpu;
mod vcpu_wait;
mod vmm_on_vcpu_cores;
mod words;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// What a finding is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Unpinned VMM threads ran on a pinned vCPU's core while the vCPU waited.
    VmmThreadOnVcpuCore,
    /// vCPUs (of one VM or of several) pinned to the same CPU.
    VcpusShareCpu,
    /// No CPU was idle: every job and vCPU competes (the N-jobs effect).
    EveryCoreBusy,
    /// A VM exits to the hypervisor at a high rate for one reason.
    HighExitRate,
    /// A vCPU waited for its CPU, by who had it.
    VcpuRunqWait,
    /// An experiment's N jobs on N CPUs ran slower than N-1, and what it is made of.
    NJobsSlowdown,
    /// An experiment's pinned scenario against the unpinned one.
    PinningEffect,
    /// An experiment's job accounts that do not close within the target.
    AccountNotClosed,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    /// CPU time the problem cost in the trace (what findings are ranked by); 0 where
    /// the report cannot tell (e.g. exit handling time on PVM).
    pub cost_ns: u64,
    /// What happened, in plain words with the numbers.
    pub summary: String,
    /// What to do about it.
    pub remedy: String,
    /// The numbers behind the words, for scripts (`--json`).
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// When something is worth saying (`vmmtrace diagnose --help` lists them as options).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// A vCPU's lost or waiting time is reported from this share of its run (%)...
    pub min_wait_pct: f64,
    /// ... and from this much time (ns).
    pub min_wait_ns: u64,
    /// Every core is busy when no CPU was idle more than this share of the trace (%).
    pub busy_idle_pct: f64,
    /// Exits of one reason are reported from this rate, per vCPU per second.
    pub exit_rate_per_s: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds { min_wait_pct: 1.0, min_wait_ns: 10_000_000, busy_idle_pct: 5.0, exit_rate_per_s: 10_000.0 }
    }
}

/// Every finding of `r`, most costly first.
pub fn diagnose(r: &Report, t: &Thresholds) -> Vec<Finding> {
    let mut out = vmm_on_vcpu_cores::findings(r, t);
    // What the findings on VMM threads explain of each vCPU's wait is not said twice.
    let explained: BTreeMap<u32, u64> =
        out.iter().filter_map(|f| Some((f.facts.get("vcpu_tid")?.as_u64()? as u32, f.cost_ns))).collect();
    out.extend(vcpu_wait::findings(r, t, &explained));
    out.extend(shared_cpu::findings(r, t));
    out.extend(busy_cores::findings(r, t));
    out.extend(exit_rates::findings(r, t));
    out.sort_by_key(|f| std::cmp::Reverse(f.cost_ns));
    out
}

/// The findings as text, numbered, or a line saying there is none.
pub fn render_text(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "No finding: nothing in this report crosses the thresholds (see vmmtrace diagnose --help).\n".into();
    }
    let mut s = String::new();
    for (i, f) in findings.iter().enumerate() {
        s.push_str(&format!("{}. {}\n   Remedy: {}\n", i + 1, f.summary, f.remedy));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests;
