//! The reader of the `TIMELINE` ring buffer: a thread that drains it on its own clock
//! (the probes do not wake it per record) into a bounded list of events.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use bytes::Buf as _;
use tracer_common::timeline::TimelineEvent;

/// How often the reader drains the ring buffer.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// Records read between two updates of the live counts: on a host switching faster
/// than one pass drains, a pass would otherwise never end and the counts would stall.
const PASS: usize = 16_384;

/// Parses one ring buffer record, field by field (the layout of [`TimelineEvent`],
/// little-endian: the BPF target's byte order); None if it is too short.
pub fn parse_record(mut b: &[u8]) -> Option<TimelineEvent> {
    if b.len() < TimelineEvent::SIZE {
        return None;
    }
    Some(TimelineEvent {
        ts_ns: b.get_u64_le(),
        kind: b.get_u32_le(),
        cpu: b.get_u32_le(),
        tid: b.get_u32_le(),
        other: b.get_u32_le(),
        flags: b.get_u32_le(),
        _pad: b.get_u32_le(),
    })
}

/// What the reader got.
#[derive(Debug, Default)]
pub struct Collected {
    /// In the order the ring buffer delivered them (per CPU, in time order).
    pub events: Vec<TimelineEvent>,
    /// Events read but not kept: past the limit.
    pub over_limit: u64,
    /// Records too short to be an event (a probe/userspace mismatch).
    pub malformed: u64,
}

/// Counts the live line shows while the reader runs.
#[derive(Debug, Default)]
struct Progress {
    kept: AtomicU64,
    over_limit: AtomicU64,
}

/// The running reader.
pub struct Stream {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    thread: JoinHandle<Collected>,
}

impl Stream {
    /// Starts draining `ring`, keeping at most `limit` events.
    pub fn start(ring: RingBuf<MapData>, limit: u64) -> std::io::Result<Stream> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let (s, p) = (stop.clone(), progress.clone());
        let thread =
            std::thread::Builder::new().name("vmmtrace-timeline".into()).spawn(move || drain(ring, limit, &s, &p))?;
        Ok(Stream { stop, progress, thread })
    }

    /// (events kept, events over the limit) so far.
    pub fn progress(&self) -> (u64, u64) {
        (self.progress.kept.load(Ordering::Relaxed), self.progress.over_limit.load(Ordering::Relaxed))
    }

    /// Drains what is left (call it after the probes stopped) and returns everything.
    pub fn finish(self) -> Collected {
        self.stop.store(true, Ordering::Relaxed);
        // A reader that panicked lost its events; say so rather than pretend.
        self.thread.join().unwrap_or_else(|_| {
            log::error!("the timeline reader failed; the timeline is empty");
            Collected::default()
        })
    }
}

/// The reader's loop: drain, sleep when empty, until told to stop, then a last
/// drain.
fn drain(mut ring: RingBuf<MapData>, limit: u64, stop: &AtomicBool, progress: &Progress) -> Collected {
    let mut out = Collected::default();
    loop {
        let last = stop.load(Ordering::Relaxed);
        let mut read = 0;
        while read < PASS
            && let Some(item) = ring.next()
        {
            read += 1;
            match parse_record(&item) {
                None => out.malformed += 1,
                Some(_) if out.events.len() as u64 >= limit => out.over_limit += 1,
                Some(e) => out.events.push(e),
            }
        }
        progress.kept.store(out.events.len() as u64, Ordering::Relaxed);
        progress.over_limit.store(out.over_limit, Ordering::Relaxed);
        match (read == PASS, last) {
            (true, _) => continue,
            (false, true) => return out,
            (false, false) => std::thread::sleep(DRAIN_EVERY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_parses_field_by_field() {
        let mut b = Vec::new();
        b.extend_from_slice(&123_456u64.to_le_bytes());
        for v in [1u32, 1, 42, 43, 1, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let e = parse_record(&b).unwrap();
        assert_eq!(e, TimelineEvent { ts_ns: 123_456, kind: 1, cpu: 1, tid: 42, other: 43, flags: 1, _pad: 0 });
        assert_eq!(parse_record(&b[..TimelineEvent::SIZE - 1]), None);
    }
}
