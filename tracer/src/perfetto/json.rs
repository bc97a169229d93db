//! Slices to Chrome trace-event JSON (the format ui.perfetto.dev and trace_processor
//! import): a process "CPUs" with one track per CPU naming the thread that ran, and
//! one track per thread under its own process (a VM's process carries the VM's name,
//! its vCPU threads "vCPU n"), with its runs, its run-queue waits and its wakeups and
//! migrations as instants. Times are µs from the window's start, with ns decimals.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::slices::{MarkKind, Slices};
use crate::{
    host::Role,
    report::{Report, ThreadReport, role_name},
};

/// The pid of the "CPUs" process (above any real pid: pid_max is at most 2^22); CPU n
/// is its thread `CPU_TRACKS_PID + n`.
pub const CPU_TRACKS_PID: u32 = 1 << 23;

/// What the file says about itself besides the events (`otherData`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Provenance {
    pub window_start_monotonic_ns: u64,
    pub wall_ns: u64,
    pub events_kept: u64,
    /// Lost because the ring buffer was full: the slices around them are wrong.
    pub events_dropped_ring_full: u64,
    /// Read but not kept: past `--timeline-limit`.
    pub events_over_limit: u64,
}

/// One trace event. Fields Perfetto does not need for a phase are left out.
#[derive(Serialize)]
struct TraceEvent<'a> {
    name: &'a str,
    ph: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    /// Instant events: scoped to their thread's track.
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    args: Value,
}

/// Who a thread is, from the report.
struct Names<'a> {
    threads: HashMap<u32, &'a ThreadReport>,
    /// vCPU thread -> its index in its VM.
    vcpu_index: HashMap<u32, u32>,
    /// pid -> process track name.
    processes: BTreeMap<u32, String>,
}

impl<'a> Names<'a> {
    fn new(report: &'a Report) -> Names<'a> {
        let threads: HashMap<u32, &ThreadReport> = report.threads.iter().map(|t| (t.tid, t)).collect();
        let mut processes = BTreeMap::new();
        for t in &report.threads {
            let main = threads.get(&t.pid).map_or(t.comm.as_str(), |m| m.comm.as_str());
            processes.entry(t.pid).or_insert_with(|| format!("{main} (pid {})", t.pid));
        }
        if let Some(c) = &report.command {
            processes.insert(c.pid, format!("command: {} (pid {})", c.argv.join(" "), c.pid));
        }
        let mut vcpu_index = HashMap::new();
        for vm in &report.vms {
            processes.insert(vm.pid, format!("VM {} ({}, pid {})", vm.name, vm.kind, vm.pid));
            vcpu_index.extend(vm.vcpus.iter().filter_map(|v| Some((v.tid, v.index?))));
        }
        Names { threads, vcpu_index, processes }
    }

    fn pid(&self, tid: u32) -> u32 {
        self.threads.get(&tid).map_or(tid, |t| t.pid)
    }

    /// "comm [tid]", "vCPU n [tid]" for vCPUs.
    fn thread(&self, tid: u32) -> String {
        let t = self.threads.get(&tid);
        match (self.vcpu_index.get(&tid).copied().or(t.and_then(|t| t.vcpu)), t) {
            (Some(i), _) => format!("vCPU {i} [{tid}]"),
            (None, Some(t)) => format!("{} [{tid}]", t.comm),
            (None, None) => format!("[{tid}]"),
        }
    }

    fn role(&self, tid: u32) -> Option<Role> {
        self.threads.get(&tid).map(|t| t.role)
    }
}

/// The CPUs worth a track: those where a thread that matters ran (vCPUs, VMM threads,
/// the traced command), or every CPU of a trace that has none of them.
fn cpus_that_matter(slices: &Slices, names: &Names) -> BTreeSet<u32> {
    let matters = |tid| matches!(names.role(tid), Some(Role::Vcpu | Role::Vmm | Role::Workload));
    let picked: BTreeSet<u32> = slices.runs.iter().filter(|r| matters(r.tid)).map(|r| r.cpu).collect();
    if picked.is_empty() { slices.runs.iter().map(|r| r.cpu).collect() } else { picked }
}

/// µs from the window's start.
fn us(ns: u64, start_ns: u64) -> f64 {
    ns.saturating_sub(start_ns) as f64 / 1e3
}

/// Writes events into a JSON array, comma-separated.
struct Writer {
    buf: Vec<u8>,
    first: bool,
}

impl Writer {
    fn push(&mut self, e: &TraceEvent) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        // Serializing a struct of strings and numbers into memory cannot fail.
        serde_json::to_writer(&mut self.buf, e).expect("trace event serializes");
        self.buf.push(b'\n');
    }

    fn meta(&mut self, name: &str, pid: u32, tid: u32, args: Value) {
        self.push(&TraceEvent { name, ph: "M", cat: None, ts: None, dur: None, pid, tid, s: None, args });
    }
}

/// The whole file.
pub fn trace_json(slices: &Slices, report: &Report, prov: &Provenance) -> Vec<u8> {
    let names = Names::new(report);
    let cpus = cpus_that_matter(slices, &names);
    let start = prov.window_start_monotonic_ns;
    let mut w = Writer { buf: Vec::new(), first: true };
    w.buf.extend_from_slice(b"{\"displayTimeUnit\":\"ns\",\"otherData\":");
    w.buf.extend_from_slice(&serde_json::to_vec(prov).unwrap_or_default());
    w.buf.extend_from_slice(b",\"traceEvents\":[\n");
    let runs: Vec<_> = slices.runs.iter().filter(|r| cpus.contains(&r.cpu)).collect();
    let tids: BTreeSet<u32> = runs.iter().map(|r| r.tid).collect();
    write_tracks(&mut w, &names, &cpus, &tids);
    for r in &runs {
        let (ts, dur) = (Some(us(r.start_ns, start)), Some((r.end_ns - r.start_ns) as f64 / 1e3));
        let name = names.thread(r.tid);
        let role = names.role(r.tid).map(role_name).unwrap_or_else(|| "?".into());
        let on_cpu = json!({ "tid": r.tid, "pid": names.pid(r.tid), "role": role });
        let (pid, tid) = (CPU_TRACKS_PID, CPU_TRACKS_PID + r.cpu);
        w.push(&TraceEvent { name: &name, ph: "X", cat: Some("cpu"), ts, dur, pid, tid, s: None, args: on_cpu });
        let (pid, tid, args) = (names.pid(r.tid), r.tid, json!({ "cpu": r.cpu }));
        w.push(&TraceEvent { name: "running", ph: "X", cat: Some("run"), ts, dur, pid, tid, s: None, args });
    }
    write_waits_and_marks(&mut w, slices, &names, &tids, start);
    w.buf.extend_from_slice(b"]}\n");
    w.buf
}

/// Process and thread names, CPUs first.
fn write_tracks(w: &mut Writer, names: &Names, cpus: &BTreeSet<u32>, tids: &BTreeSet<u32>) {
    w.meta("process_name", CPU_TRACKS_PID, 0, json!({ "name": "CPUs" }));
    w.meta("process_sort_index", CPU_TRACKS_PID, 0, json!({ "sort_index": -1 }));
    for &cpu in cpus {
        w.meta("thread_name", CPU_TRACKS_PID, CPU_TRACKS_PID + cpu, json!({ "name": format!("CPU {cpu}") }));
        w.meta("thread_sort_index", CPU_TRACKS_PID, CPU_TRACKS_PID + cpu, json!({ "sort_index": cpu }));
    }
    let pids: BTreeSet<u32> = tids.iter().map(|&t| names.pid(t)).collect();
    for pid in pids {
        let name = names.processes.get(&pid).cloned().unwrap_or_else(|| format!("pid {pid}"));
        w.meta("process_name", pid, 0, json!({ "name": name }));
    }
    for &tid in tids {
        w.meta("thread_name", names.pid(tid), tid, json!({ "name": names.thread(tid) }));
    }
}

/// Run-queue waits as slices and wakeups/migrations as instants, on the tracks of the
/// threads shown.
fn write_waits_and_marks(w: &mut Writer, slices: &Slices, names: &Names, tids: &BTreeSet<u32>, start: u64) {
    for q in slices.waits.iter().filter(|q| tids.contains(&q.tid)) {
        let name = match q.cpu {
            Some(cpu) => format!("runnable (until CPU {cpu} took it)"),
            None => "runnable (at the end)".to_string(),
        };
        let (ts, dur) = (Some(us(q.start_ns, start)), Some((q.end_ns - q.start_ns) as f64 / 1e3));
        let (pid, tid, args) = (names.pid(q.tid), q.tid, json!({ "cpu": q.cpu }));
        w.push(&TraceEvent { name: &name, ph: "X", cat: Some("wait"), ts, dur, pid, tid, s: None, args });
    }
    for m in slices.marks.iter().filter(|m| tids.contains(&m.tid)) {
        let (name, args) = match m.kind {
            MarkKind::Wakeup { waker } => ("wakeup".to_string(), json!({ "waker": waker, "cpu": m.cpu })),
            MarkKind::Born { creator } => ("born".to_string(), json!({ "creator": creator, "cpu": m.cpu })),
            MarkKind::Migrate { dest_cpu } => (format!("migrate to CPU {dest_cpu}"), json!({ "cpu": m.cpu })),
        };
        let (ts, pid, tid) = (Some(us(m.ts_ns, start)), names.pid(m.tid), m.tid);
        w.push(&TraceEvent { name: &name, ph: "i", cat: Some("sched"), ts, dur: None, pid, tid, s: Some("t"), args });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        perfetto::slices::{Mark, Run, Wait},
        report::charts::fixtures::one_vm_report,
    };

    const MS: u64 = 1_000_000;

    /// The fixture's threads on its CPUs: vCPU 101 on CPU 1, the job 300, the VMM
    /// thread 102 and a kworker on CPU 0.
    fn slices() -> Slices {
        let run = |cpu, tid, start_ns, end_ns| Run { cpu, tid, start_ns, end_ns };
        Slices {
            runs: vec![
                run(1, 101, 0, 500 * MS),
                run(0, 300, 0, 400 * MS),
                run(0, 102, 400 * MS, 500 * MS),
                run(0, 10, 500 * MS, 550 * MS),
            ],
            waits: vec![Wait { tid: 101, cpu: Some(1), start_ns: 500 * MS, end_ns: 600 * MS }],
            marks: vec![Mark { tid: 102, ts_ns: 450 * MS, cpu: 0, kind: MarkKind::Migrate { dest_cpu: 1 } }],
        }
    }

    fn parse(report: &Report) -> Vec<Value> {
        let bytes = trace_json(&slices(), report, &Provenance::default());
        let v: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        v["traceEvents"].as_array().expect("traceEvents").clone()
    }

    fn named<'a>(events: &'a [Value], kind: &str, tid: u64) -> Option<&'a str> {
        events.iter().find(|e| e["name"] == kind && e["tid"] == tid).and_then(|e| e["args"]["name"].as_str())
    }

    #[test]
    fn a_vm_is_a_process_with_its_vcpus_named() {
        let events = parse(&one_vm_report());
        let vm = events.iter().find(|e| e["name"] == "process_name" && e["pid"] == 100).expect("the VM's process");
        assert_eq!(vm["args"]["name"], "VM web (qemu, pid 100)");
        assert_eq!(named(&events, "thread_name", 101), Some("vCPU 0 [101]"));
        assert_eq!(named(&events, "thread_name", 102), Some("qemu-system-x86 [102]"));
        let cpu1 = u64::from(CPU_TRACKS_PID + 1);
        assert_eq!(named(&events, "thread_name", cpu1), Some("CPU 1"));
        let on_cpu1: Vec<_> = events.iter().filter(|e| e["tid"] == cpu1 && e["ph"] == "X").collect();
        assert_eq!(on_cpu1.len(), 1);
        assert_eq!(on_cpu1[0]["name"], "vCPU 0 [101]");
        assert_eq!(on_cpu1[0]["dur"], 500_000.0);
        let wait = events.iter().find(|e| e["cat"] == "wait").expect("the wait");
        assert_eq!((wait["tid"].as_u64(), wait["ts"].as_f64()), (Some(101), Some(500_000.0)));
        let mark = events.iter().find(|e| e["ph"] == "i").expect("the migration");
        assert_eq!((mark["name"].as_str(), mark["s"].as_str()), (Some("migrate to CPU 1"), Some("t")));
    }

    #[test]
    fn only_the_cpus_where_a_thread_that_matters_ran_get_tracks() {
        let mut r = one_vm_report();
        // Only the vCPU matters now; it ran on CPU 1 alone.
        for t in r.threads.iter_mut().filter(|t| t.tid != 101) {
            t.role = Role::Other;
        }
        let events = parse(&r);
        assert_eq!(named(&events, "thread_name", u64::from(CPU_TRACKS_PID)), None, "CPU 0 has a track");
        assert!(events.iter().all(|e| e["tid"] != 300), "the job ran on CPU 0 only");
        // A trace of threads that do not matter shows every CPU.
        for t in r.threads.iter_mut() {
            t.role = Role::Other;
        }
        let events = parse(&r);
        assert_eq!(named(&events, "thread_name", u64::from(CPU_TRACKS_PID)), Some("CPU 0"));
    }
}
