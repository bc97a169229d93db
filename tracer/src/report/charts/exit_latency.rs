//! Exit handling latency: per VM and exit reason, how many exits took how long from
//! kvm_exit to the next kvm_entry (the report's log2 histogram, in five bands), one
//! row per band. Only where kvm_entry/kvm_exit fire (not on PVM).

use std::collections::BTreeMap;

use super::{
    model::{Bar, BarChart},
    palette::Category,
};
use crate::report::Report;

/// Reasons shown per VM, most exits first.
const REASONS: usize = 6;

/// (label, highest log2 bucket in the band): bucket b counts [2^(b-1), 2^b) ns.
const BANDS: [(&str, usize); 5] =
    [("< 1 µs", 10), ("1-8 µs", 13), ("8-65 µs", 16), ("65 µs-1 ms", 20), (">= 1 ms", usize::MAX)];

pub fn chart(r: &Report) -> BarChart {
    let mut bars = Vec::new();
    for vm in &r.vms {
        let mut hists: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for v in &vm.vcpus {
            for (reason, e) in v.exits.iter().filter(|(_, e)| e.latency_hist_log2.iter().any(|n| *n > 0)) {
                let h = hists.entry(reason).or_default();
                h.resize(h.len().max(e.latency_hist_log2.len()), 0);
                for (slot, n) in h.iter_mut().zip(&e.latency_hist_log2) {
                    *slot += n;
                }
            }
        }
        let mut reasons: Vec<(&str, Vec<u64>)> = hists.into_iter().collect();
        reasons.sort_by_key(|(reason, h)| (std::cmp::Reverse(h.iter().sum::<u64>()), *reason));
        for (reason, h) in reasons.into_iter().take(REASONS) {
            for (band, count) in bands(&h) {
                let mut bar = Bar::new(format!("{}: {reason} {band}", vm.name));
                bar.push_labelled(Category::VcpuOverhead, count as f64, Some(count.to_string()));
                bars.push(bar);
            }
        }
    }
    let notes = if bars.is_empty() {
        vec!["No exit latency in this report: kvm_entry/kvm_exit did not fire (PVM), or no VM exited.".into()]
    } else {
        vec!["Time from kvm_exit to the next kvm_entry, including trips to the VMM in userspace.".into()]
    };
    BarChart {
        name: "exit_latency",
        title: "Exit handling latency per reason".into(),
        unit: "exits".into(),
        bars,
        notes,
    }
}

/// The non-empty bands of a log2 histogram.
fn bands(hist: &[u64]) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    let mut from = 0;
    for (label, last) in BANDS {
        let to = last.saturating_add(1).min(hist.len());
        let count: u64 = hist.get(from..to).map(|s| s.iter().sum()).unwrap_or(0);
        if count > 0 {
            out.push((label, count));
        }
        from = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::fixtures::one_vm_report;

    #[test]
    fn one_row_per_band_of_each_reason() {
        let c = chart(&one_vm_report());
        let rows: Vec<(&str, f64)> = c.bars.iter().map(|b| (b.label.as_str(), b.total())).collect();
        assert_eq!(rows, [("web: IO_INSTRUCTION 1-8 µs", 300.0), ("web: IO_INSTRUCTION 8-65 µs", 200.0)]);
    }

    #[test]
    fn bands_cover_every_bucket() {
        let hist: Vec<u64> = (0..40).map(|_| 1).collect();
        assert_eq!(bands(&hist).iter().map(|b| b.1).sum::<u64>(), 40);
        assert!(bands(&[]).is_empty());
    }
}
