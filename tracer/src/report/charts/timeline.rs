//! The per-CPU timeline: which kind of thread ran on each CPU over time (the report's
//! `timeline` bins), the busiest thread named where it fits, and a mark where a VMM
//! thread arrived on a CPU, so that an unpinned emulator landing on a pinned vCPU's
//! core shows at a glance.

use super::{
    model::{TimelineCell, TimelineChart, TimelineRow},
    palette::Category,
};
use crate::{account::timeline::CpuBin, report::Report};

pub fn chart(r: &Report) -> TimelineChart {
    let bins = r.timeline.as_ref().map(|t| t.bins.as_slice()).unwrap_or_default();
    let vcpu_cpus = pinned_vcpu_cpus(r);
    let rows = r
        .cpus
        .iter()
        .map(|c| {
            let pinned = if vcpu_cpus.contains(&c.cpu) { " (pinned vCPU)" } else { "" };
            let cells = bins
                .iter()
                .filter_map(|b| {
                    let bin = b.cpus.get(c.cpu as usize)?;
                    Some(cell(r, bin, b.start_ns as f64 / 1e9, b.len_ns as f64 / 1e9))
                })
                .collect();
            TimelineRow { label: format!("CPU {}{pinned}", c.cpu), cells }
        })
        .collect();
    let mut notes = vec![
        "Each bin's height is split by category (bottom up); the busiest thread is named where it fits.".to_string(),
        "A black triangle above a bin: a VMM thread arrived on that CPU in it. vCPU threads count as guest here."
            .to_string(),
    ];
    if bins.is_empty() {
        notes.push("This report has no timeline (reports of vmmtrace record have one from this version on).".into());
    }
    TimelineChart {
        name: "timeline",
        title: "Each CPU over time".into(),
        rows,
        seconds: (r.wall_ns as f64 / 1e9).max(1e-3),
        notes,
    }
}

fn cell(r: &Report, bin: &CpuBin, start_s: f64, len_s: f64) -> TimelineCell {
    let busy: u64 = bin.by_role_ns.values().sum();
    let total = (busy + bin.idle_ns).max(1) as f64;
    let mut shares: Vec<(Category, f64)> =
        bin.by_role_ns.iter().map(|(role, ns)| (Category::of_role(*role), *ns as f64 / total)).collect();
    shares.push((Category::Idle, bin.idle_ns as f64 / total));
    shares.retain(|s| s.1 > 0.0);
    shares.sort_by_key(|s| s.0);
    let name = |tid: u32| r.thread(tid).map(|t| format!("{}[{tid}]", t.comm)).unwrap_or_else(|| tid.to_string());
    TimelineCell {
        start_s,
        len_s,
        shares,
        top: bin.top_tid.map(|tid| bin.top_comm.clone().map(|c| format!("{c}[{tid}]")).unwrap_or_else(|| name(tid))),
        vmm_arrivals: bin.vmm_arrivals.iter().map(|&tid| name(tid)).collect(),
    }
}

/// The CPUs a vCPU is pinned to alone.
fn pinned_vcpu_cpus(r: &Report) -> Vec<u32> {
    r.vms.iter().flat_map(|vm| &vm.vcpus).filter(|v| v.pinned && v.affinity.len() == 1).map(|v| v.affinity[0]).collect()
}
