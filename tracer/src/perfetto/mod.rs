//! `record --timeline FILE.json`: the scheduler's own story of the trace, as Chrome
//! trace-event JSON that Perfetto (ui.perfetto.dev, trace_processor) opens. The probes
//! stream every switch, wakeup and migration through a ring buffer (`stream.rs`);
//! at the end they become slices (`slices.rs`: who ran on each CPU, each thread's
//! runs and run-queue waits) and the JSON (`json.rs`: one track per CPU, one per
//! thread, VMs as processes with their vCPUs named).
//!
//! Bounded: at most [`TimelineOptions::limit`] events are kept; what the ring buffer
//! or the limit lost is counted, shown on the live line and in the report
//! (`events.timeline_*`), and said in the file itself.

mod json;
mod slices;
mod stream;

use std::path::PathBuf;

pub use json::{CPU_TRACKS_PID, Provenance, trace_json};
pub use slices::{Slices, build_slices};
pub use stream::{Collected, Stream, parse_record};

/// Events kept unless `--timeline-limit` says otherwise: 60 s of a busy 2-CPU host
/// with room to spare (docs/results.md: 42,465 events/s on this host while five
/// builds and test runs shared it, 2.55 million in 60 s); 32 bytes each in memory.
pub const DEFAULT_LIMIT: u64 = 4_000_000;

/// The ring buffer between the probes and the reader: 8 MiB, about 210,000 records
/// of 40 bytes (32 and the kernel's 8-byte header), which the reader drains every
/// [`stream::DRAIN_EVERY`]: it fills only if the host switches about 20 million
/// times a second, or if the reader is kept off the CPUs that long.
pub const RING_BYTES: u32 = 8 << 20;

#[derive(Clone, Debug)]
pub struct TimelineOptions {
    /// Where to write the trace-event JSON.
    pub path: PathBuf,
    /// Events kept at most; the rest are counted as over the limit.
    pub limit: u64,
}

/// The live line's part: events kept, and lost (ring buffer full, over the limit).
pub fn live_part(stream: &Stream, now: &crate::probe::RawCounters) -> String {
    let (kept, over_limit) = stream.progress();
    let ring_full = now.counters.get(tracer_common::counter::DROPPED_TIMELINE as usize).copied().unwrap_or(0);
    format!(" | timeline {kept} ev, lost {ring_full} (ring full) {over_limit} (over limit)")
}

/// The timeline's counts in the report's `events`: `timeline_kept`,
/// `timeline_over_limit` (`timeline_dropped`, the ring buffer's losses, is the
/// probes' counter, already there and in `dropped_events`).
pub fn count_in_report(report: &mut crate::report::Report, c: &Collected) {
    report.events.insert("timeline_kept".into(), c.events.len() as u64);
    report.events.insert("timeline_over_limit".into(), c.over_limit);
}

/// The timeline file could not be written (the report's own error names `--output`).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the timeline to {path} (choose another --timeline)")]
pub struct TimelineWriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl From<crate::report::WriteError> for TimelineWriteError {
    fn from(e: crate::report::WriteError) -> Self {
        TimelineWriteError { path: e.path, source: e.source }
    }
}

/// Checks before tracing that the timeline can be written at `path`.
pub fn check_writable(path: &std::path::Path) -> Result<(), TimelineWriteError> {
    Ok(crate::report::check_writable(path)?)
}

/// Builds the timeline of `c` over the report's window and writes it atomically to
/// `path`; says on stderr what was lost, and what to do about it.
pub fn write_timeline(
    path: &std::path::Path,
    c: &Collected,
    report: &crate::report::Report,
    window_start_ns: u64,
) -> Result<(), TimelineWriteError> {
    let window =
        tracer_common::Window { start_ns: window_start_ns, stop_ns: window_start_ns + report.wall_ns, flags: 0 };
    let slices = build_slices(&c.events, &window);
    let prov = Provenance {
        window_start_monotonic_ns: window_start_ns,
        wall_ns: report.wall_ns,
        events_kept: c.events.len() as u64,
        events_dropped_ring_full: report.events.get("timeline_dropped").copied().unwrap_or(0),
        events_over_limit: c.over_limit,
    };
    if prov.events_dropped_ring_full + prov.events_over_limit + c.malformed > 0 {
        eprintln!(
            "vmmtrace: the timeline misses events: {} over --timeline-limit (raise it), {} lost to a full ring \
             buffer (the host switched faster than the reader drained), {} malformed; the slices around them are \
             wrong, the report's figures are not",
            prov.events_over_limit, prov.events_dropped_ring_full, c.malformed
        );
    }
    Ok(crate::report::write_atomic(path, &trace_json(&slices, report, &prov))?)
}
