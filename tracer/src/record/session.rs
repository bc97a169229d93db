//! A trace in progress, as `record` and `serve` both run it: the probes attached,
//! the window open, host discovery once a second.

use std::time::Instant;

use super::{build::build_report, live::live_snapshot};
use crate::{
    host::Discovery,
    probe::{ProbeOptions, Probes, RawCounters},
    report::Report,
};

pub struct LiveTrace {
    pub probes: Probes,
    pub discovery: Discovery,
    pub started_unix_s: u64,
    pub started: Instant,
}

impl LiveTrace {
    /// Attaches the probes, takes the first host snapshot, marks the vCPU threads
    /// already inside KVM_RUN, and opens the window.
    pub fn start(opts: &ProbeOptions) -> anyhow::Result<LiveTrace> {
        Self::start_with(opts, |_| Ok(())).map(|(live, ())| live)
    }

    /// As [`LiveTrace::start`], with `before_start` run on the attached probes before
    /// the window opens (to take a ring buffer and start its reader, say).
    pub fn start_with<T>(
        opts: &ProbeOptions,
        before_start: impl FnOnce(&mut Probes) -> anyhow::Result<T>,
    ) -> anyhow::Result<(LiveTrace, T)> {
        let mut probes = Probes::attach(opts)?;
        let extra = before_start(&mut probes)?;
        let discovery = Discovery::start();
        if opts.kvm {
            probes.mark_in_kvm_run(&discovery.vcpus_in_kvm_run());
        }
        let started_unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        probes.start()?;
        Ok((LiveTrace { probes, discovery, started_unix_s, started: Instant::now() }, extra))
    }

    /// The once-a-second step: the counters as of now (every CPU's running interval
    /// charged up to now), which discovery then sees, to follow VMs that come and go.
    /// Threads that exited are retired from the kernel maps first, so that the maps
    /// stay bounded on a host with process churn. The counters hold the threads
    /// alive and those retired by this step only ([`LiveTrace::tick_snapshot`]):
    /// for deltas between ticks, not for a report.
    pub fn tick(&mut self) -> anyhow::Result<RawCounters> {
        self.probes.retire_exited()?;
        let now = self.tick_snapshot()?;
        self.discovery.observe(&now);
        Ok(now)
    }

    /// A discovery step without reading the counters (the maps discovery needs
    /// only): what `serve` does between scrapes, where nothing else needs them.
    pub fn observe_host(&mut self) -> anyhow::Result<()> {
        self.probes.retire_exited()?;
        let inputs = self.probes.read_discovery_inputs()?;
        self.discovery.observe(&inputs);
        Ok(())
    }

    /// The counters as of now, every thread retired so far included, without a
    /// discovery step: for a report of the trace so far.
    pub fn snapshot(&self) -> anyhow::Result<RawCounters> {
        live_snapshot(&self.probes, true)
    }

    /// The counters as of now for deltas between ticks: the threads alive and those
    /// the last retire step retired (whose previous tick still had them alive), so
    /// that a tick costs memory and CPU by the threads alive, not by every thread
    /// that ever exited. Take the first before any retire step.
    pub fn tick_snapshot(&self) -> anyhow::Result<RawCounters> {
        live_snapshot(&self.probes, false)
    }

    /// The report of the trace so far, from a [`LiveTrace::snapshot`], the trace going on.
    pub fn report_so_far(&self, raw: RawCounters, ledger_top: usize) -> Report {
        build_report(raw, self.probes.features.clone(), self.started_unix_s, self.discovery.clone(), ledger_top)
    }
}
