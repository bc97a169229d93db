//! From the stream of scheduler events to intervals: who ran on each CPU, and when each
//! thread waited in a run queue. Pure, so that it is tested without a kernel.
//!
//! A run is charged as the probes charge on-CPU time: a switch on a CPU closes the
//! interval since that CPU's previous switch (or since the window's start) and gives
//! it to prev; at the end, the thread the last switch put on a CPU ran until the
//! window's stop. Everything is clipped to the window, so the runs of a thread sum to
//! its `on_cpu_ns` in the report, unless events were lost.

use std::collections::HashMap;

use tracer_common::{
    Window,
    timeline::{SWITCH_PREV_RUNNABLE, TimelineEvent, kind},
};

/// A thread on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub cpu: u32,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A thread runnable but not running: from its wakeup (or its preemption) until a
/// CPU took it (`cpu`; None when the window closed first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub tid: u32,
    pub cpu: Option<u32>,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A point event of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    Wakeup { waker: u32 },
    Born { creator: u32 },
    Migrate { dest_cpu: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub tid: u32,
    pub ts_ns: u64,
    /// Where the event fired.
    pub cpu: u32,
    pub kind: MarkKind,
}

/// The intervals and marks of a trace, the idle task left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slices {
    pub runs: Vec<Run>,
    pub waits: Vec<Wait>,
    pub marks: Vec<Mark>,
}

/// What a CPU's last switch said.
#[derive(Clone, Copy)]
struct OnCpu {
    tid: u32,
    since_ns: u64,
}

/// `[from, to)` clipped to the window; None if nothing of it is inside.
fn clip(from: u64, to: u64, w: &Window) -> Option<(u64, u64)> {
    let from = from.max(w.start_ns);
    let to = if w.stop_ns != 0 { to.min(w.stop_ns) } else { to };
    (to > from).then_some((from, to))
}

/// Builds the slices of `events` (any order: the ring buffer interleaves CPUs) over
/// the window `w` (closed: `stop_ns` set).
pub fn build_slices(events: &[TimelineEvent], w: &Window) -> Slices {
    let mut sorted: Vec<&TimelineEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.ts_ns);
    let mut b = Builder { w: *w, ..Default::default() };
    for e in sorted {
        match e.kind {
            kind::SWITCH => b.switch(e),
            kind::WAKEUP | kind::WAKEUP_NEW => b.wakeup(e),
            kind::MIGRATE => b.mark(e, MarkKind::Migrate { dest_cpu: e.other }),
            _ => {}
        }
    }
    b.close()
}

#[derive(Default)]
struct Builder {
    w: Window,
    cpus: HashMap<u32, OnCpu>,
    /// tid -> since when it waits for a CPU.
    waiting: HashMap<u32, u64>,
    out: Slices,
}

impl Builder {
    fn switch(&mut self, e: &TimelineEvent) {
        let (prev, next, ts) = (e.tid, e.other, e.ts_ns);
        let since = self.cpus.get(&e.cpu).map_or(self.w.start_ns, |c| c.since_ns);
        // prev came on this CPU without a switch saying so (the probes count it as
        // `missed_switch`): its wait ended when the CPU's previous thread left.
        if let Some(from) = self.waiting.remove(&prev) {
            self.wait(prev, Some(e.cpu), from, since);
        }
        self.run(e.cpu, prev, since, ts);
        if prev != 0 && e.flags & SWITCH_PREV_RUNNABLE != 0 {
            self.waiting.insert(prev, ts);
        }
        if next != 0
            && let Some(from) = self.waiting.remove(&next)
        {
            self.wait(next, Some(e.cpu), from, ts);
        }
        self.cpus.insert(e.cpu, OnCpu { tid: next, since_ns: ts });
    }

    fn wakeup(&mut self, e: &TimelineEvent) {
        self.waiting.entry(e.tid).or_insert(e.ts_ns);
        let kind = match e.kind {
            kind::WAKEUP_NEW => MarkKind::Born { creator: e.other },
            _ => MarkKind::Wakeup { waker: e.other },
        };
        self.mark(e, kind);
    }

    fn mark(&mut self, e: &TimelineEvent, kind: MarkKind) {
        if clip(e.ts_ns, e.ts_ns + 1, &self.w).is_some() {
            self.out.marks.push(Mark { tid: e.tid, ts_ns: e.ts_ns, cpu: e.cpu, kind });
        }
    }

    fn run(&mut self, cpu: u32, tid: u32, from: u64, to: u64) {
        if tid == 0 {
            return;
        }
        if let Some((start_ns, end_ns)) = clip(from, to, &self.w) {
            self.out.runs.push(Run { cpu, tid, start_ns, end_ns });
        }
    }

    fn wait(&mut self, tid: u32, cpu: Option<u32>, from: u64, to: u64) {
        if let Some((start_ns, end_ns)) = clip(from, to, &self.w) {
            self.out.waits.push(Wait { tid, cpu, start_ns, end_ns });
        }
    }

    /// The runs and waits still open at the stop.
    fn close(mut self) -> Slices {
        let stop = self.w.stop_ns;
        let mut open: Vec<(u32, OnCpu)> = self.cpus.drain().collect();
        open.sort_by_key(|(cpu, _)| *cpu);
        for (cpu, c) in open {
            self.run(cpu, c.tid, c.since_ns, stop);
        }
        let mut waiting: Vec<(u32, u64)> = self.waiting.drain().collect();
        waiting.sort();
        for (tid, from) in waiting {
            self.wait(tid, None, from, stop);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { start_ns: 1_000, stop_ns: 10_000, flags: 0 };

    fn switch(ts_ns: u64, cpu: u32, prev: u32, next: u32, runnable: bool) -> TimelineEvent {
        let flags = if runnable { SWITCH_PREV_RUNNABLE } else { 0 };
        TimelineEvent { ts_ns, kind: kind::SWITCH, cpu, tid: prev, other: next, flags, _pad: 0 }
    }

    fn wakeup(ts_ns: u64, cpu: u32, tid: u32, waker: u32) -> TimelineEvent {
        TimelineEvent { ts_ns, kind: kind::WAKEUP, cpu, tid, other: waker, flags: 0, _pad: 0 }
    }

    fn on_cpu(s: &Slices, tid: u32) -> u64 {
        s.runs.iter().filter(|r| r.tid == tid).map(|r| r.end_ns - r.start_ns).sum()
    }

    #[test]
    fn the_first_switch_charges_prev_from_the_start_and_the_last_runs_to_the_stop() {
        let s = build_slices(&[switch(3_000, 0, 7, 8, false), switch(12_000, 0, 8, 9, false)], &W);
        assert_eq!(
            s.runs,
            vec![
                Run { cpu: 0, tid: 7, start_ns: 1_000, end_ns: 3_000 },
                Run { cpu: 0, tid: 8, start_ns: 3_000, end_ns: 10_000 },
            ]
        );
    }

    #[test]
    fn runs_on_every_cpu_partition_the_window() {
        // Whatever the order the ring buffer delivers, each CPU's runs (idle included)
        // cover the window exactly once.
        let events = [
            switch(9_000, 1, 5, 0, false),
            switch(500, 0, 0, 5, false),
            switch(2_000, 0, 5, 6, true),
            switch(4_000, 1, 0, 5, false),
            switch(6_000, 0, 6, 0, false),
            switch(11_000, 0, 0, 6, false),
            switch(11_000, 1, 0, 7, false),
        ];
        let s = build_slices(&events, &W);
        assert_eq!(on_cpu(&s, 5), (2_000 - 1_000) + (9_000 - 4_000));
        assert_eq!(on_cpu(&s, 6), 4_000);
        assert_eq!(on_cpu(&s, 7), 0);
        assert!(s.runs.iter().all(|r| r.tid != 0));
    }

    #[test]
    fn a_wait_runs_from_wakeup_or_preemption_until_a_cpu_takes_the_thread() {
        let events = [
            wakeup(2_000, 1, 5, 9),
            switch(2_500, 0, 6, 5, true), // 6 preempted by 5
            switch(4_000, 1, 8, 6, false),
            wakeup(5_000, 0, 7, 0),
        ];
        let s = build_slices(&events, &W);
        assert_eq!(
            s.waits,
            vec![
                Wait { tid: 5, cpu: Some(0), start_ns: 2_000, end_ns: 2_500 },
                Wait { tid: 6, cpu: Some(1), start_ns: 2_500, end_ns: 4_000 },
                Wait { tid: 7, cpu: None, start_ns: 5_000, end_ns: 10_000 },
            ]
        );
        assert_eq!(s.marks.len(), 2);
        assert_eq!(s.marks[0].kind, MarkKind::Wakeup { waker: 9 });
    }

    #[test]
    fn a_thread_that_came_on_a_cpu_unseen_stops_waiting_when_it_ran() {
        // 5 waits from 2_000; the switch at 3_000 put 6 on CPU 0, yet 5 leaves it at
        // 4_000: a switch in between was not reported, and 5 ran from 3_000.
        let events = [wakeup(2_000, 1, 5, 9), switch(3_000, 0, 8, 6, false), switch(4_000, 0, 5, 8, false)];
        let s = build_slices(&events, &W);
        assert_eq!(s.waits, vec![Wait { tid: 5, cpu: Some(0), start_ns: 2_000, end_ns: 3_000 }]);
        assert_eq!(on_cpu(&s, 5), 1_000);
    }

    #[test]
    fn events_outside_the_window_only_say_who_is_on_the_cpu() {
        let events = [switch(100, 0, 1, 2, false), wakeup(200, 0, 3, 2), switch(20_000, 0, 2, 0, false)];
        let s = build_slices(&events, &W);
        assert_eq!(s.runs, vec![Run { cpu: 0, tid: 2, start_ns: 1_000, end_ns: 10_000 }]);
        assert!(s.marks.is_empty());
        assert_eq!(s.waits, vec![Wait { tid: 3, cpu: None, start_ns: 1_000, end_ns: 10_000 }]);
    }
}
