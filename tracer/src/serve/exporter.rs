//! The exposition: the series of each scrape, kept monotonic across threads that
//! leave the maps (their last total is carried), with the series of a VM that
//! stopped shown once more, then removed.

use std::collections::{HashMap, HashSet};

use prometheus::{CounterVec, GaugeVec, Opts, Registry, TextEncoder};

use super::series::{self, Family, Part};

/// A series: its family and label values.
type SeriesKey = (&'static str, Vec<String>);

/// What a scrape shows besides the counters.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// (map, entries now).
    pub map_entries: Vec<(&'static str, u64)>,
    pub resident_bytes: u64,
    pub vms_running: usize,
    pub online_cpus: usize,
}

pub struct Exporter {
    registry: Registry,
    counters: HashMap<&'static str, CounterVec>,
    gauges: HashMap<&'static str, GaugeVec>,
    /// Each series' parts at the last scrape, by source tid.
    last: HashMap<SeriesKey, HashMap<u32, f64>>,
    /// Each series' total from sources that have left (threads retired from the maps).
    carried: HashMap<SeriesKey, f64>,
    /// The VM (VMM pid) each series belongs to, if any.
    vm_of: HashMap<SeriesKey, u32>,
    /// VMs that stopped and whose final values a scrape has shown.
    shown_stopped: HashSet<u32>,
    /// VMs whose series are removed; their parts are ignored until the pid runs a VM again.
    removed: HashSet<u32>,
}

fn register<T: Clone + prometheus::core::Collector + 'static>(reg: &Registry, m: T) -> T {
    reg.register(Box::new(m.clone())).expect("the families' names are distinct (a unit test checks)");
    m
}

impl Exporter {
    /// The families registered; `capacities` (map, entries it holds) are set once.
    pub fn new(capacities: &[(&'static str, u32)]) -> Exporter {
        let registry = Registry::new();
        let opts = |f: &Family| Opts::new(f.name, f.help);
        let counters = series::COUNTERS
            .iter()
            .map(|f| {
                let v = CounterVec::new(opts(f), f.labels).expect("a valid counter family");
                (f.name, register(&registry, v))
            })
            .collect();
        let gauges: HashMap<_, _> = series::GAUGES
            .iter()
            .map(|f| (f.name, register(&registry, GaugeVec::new(opts(f), f.labels).expect("a valid gauge family"))))
            .collect();
        for (map, n) in capacities {
            gauges[series::MAP_CAPACITY.name].with_label_values(&[*map]).set(*n as f64);
        }
        Exporter {
            registry,
            counters,
            gauges,
            last: HashMap::new(),
            carried: HashMap::new(),
            vm_of: HashMap::new(),
            shown_stopped: HashSet::new(),
            removed: HashSet::new(),
        }
    }

    /// Takes a scrape's parts: `running_vms` are the VMM pids of the VMs running now.
    pub fn update(&mut self, parts: Vec<Part>, running_vms: &HashSet<u32>, gauges: &Gauges) {
        self.removed.retain(|pid| !running_vms.contains(pid));
        let present: HashSet<u32> = parts.iter().map(|p| p.source.tid).collect();
        let now = self.group(parts);
        self.carry_departed(&present);
        self.last = now;
        self.remove_stopped_vms(running_vms);
        self.raise_counters();
        self.set_gauges(gauges);
    }

    /// The exposition in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# vmmtrace: encoding the metrics failed: {e}\n"))
    }

    /// Parts summed by series and source, except those of removed VMs.
    fn group(&mut self, parts: Vec<Part>) -> HashMap<SeriesKey, HashMap<u32, f64>> {
        let mut now: HashMap<SeriesKey, HashMap<u32, f64>> = HashMap::new();
        for p in parts {
            if p.source.vm_pid.is_some_and(|pid| self.removed.contains(&pid)) {
                continue;
            }
            let key = (p.family.name, p.labels);
            if let Some(pid) = p.source.vm_pid {
                self.vm_of.insert(key.clone(), pid);
            }
            *now.entry(key).or_default().entry(p.source.tid).or_default() += p.value;
        }
        now
    }

    /// A thread that left the maps (it is in no part now) leaves its last value in
    /// the carried total of each series it was in. A thread still present but in
    /// another series (its role or VM was learned late) carries nothing: it counts
    /// in its new series from its start, and the old series, which never goes down,
    /// waits until its other parts catch up.
    fn carry_departed(&mut self, present: &HashSet<u32>) {
        for (key, sources) in &self.last {
            let gone: f64 = sources.iter().filter(|(tid, _)| !present.contains(tid)).map(|(_, v)| v).sum();
            if gone > 0.0 {
                *self.carried.entry(key.clone()).or_default() += gone;
            }
        }
    }

    /// A VM that stopped is shown at one scrape with its final values, then its
    /// series are removed.
    fn remove_stopped_vms(&mut self, running_vms: &HashSet<u32>) {
        let stopped: HashSet<u32> = self.vm_of.values().copied().filter(|pid| !running_vms.contains(pid)).collect();
        for pid in stopped {
            if !self.shown_stopped.insert(pid) {
                self.remove_vm(pid);
            }
        }
    }

    fn remove_vm(&mut self, pid: u32) {
        let keys: Vec<SeriesKey> = self.vm_of.iter().filter(|(_, p)| **p == pid).map(|(k, _)| k.clone()).collect();
        for key in keys {
            let labels: Vec<&str> = key.1.iter().map(String::as_str).collect();
            let _ = self.counters[key.0].remove_label_values(&labels);
            self.last.remove(&key);
            self.carried.remove(&key);
            self.vm_of.remove(&key);
        }
        self.shown_stopped.remove(&pid);
        self.removed.insert(pid);
    }

    /// Each counter goes up to its series' total now (carried + present sources); a
    /// total that went down (a thread's figure read before an update settled) leaves
    /// the counter where it was: counters never decrease.
    fn raise_counters(&self) {
        let keys: HashSet<&SeriesKey> = self.last.keys().chain(self.carried.keys()).collect();
        for key in keys {
            let total = self.carried.get(key).copied().unwrap_or(0.0)
                + self.last.get(key).map(|s| s.values().sum::<f64>()).unwrap_or(0.0);
            let labels: Vec<&str> = key.1.iter().map(String::as_str).collect();
            let c = self.counters[key.0].with_label_values(&labels);
            if total > c.get() {
                c.inc_by(total - c.get());
            }
        }
    }

    fn set_gauges(&self, g: &Gauges) {
        let gauge = |f: &Family| &self.gauges[f.name];
        for (map, n) in &g.map_entries {
            gauge(&series::MAP_ENTRIES).with_label_values(&[*map]).set(*n as f64);
        }
        gauge(&series::RESIDENT).with_label_values::<&str>(&[]).set(g.resident_bytes as f64);
        gauge(&series::VMS_RUNNING).with_label_values::<&str>(&[]).set(g.vms_running as f64);
        gauge(&series::ONLINE_CPUS).with_label_values::<&str>(&[]).set(g.online_cpus as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::{super::series::Source, *};

    fn part(family: &'static Family, labels: &[&str], tid: u32, vm_pid: Option<u32>, value: f64) -> Part {
        Part { family, labels: labels.iter().map(|s| s.to_string()).collect(), source: Source { tid, vm_pid }, value }
    }

    /// The value of the series whose line starts with `series` in the exposition.
    fn value(e: &Exporter, series: &str) -> Option<f64> {
        let line = e.render().lines().find(|l| l.starts_with(&format!("{series} ")))?.to_string();
        line.rsplit(' ').next()?.parse().ok()
    }

    fn line_of(e: &Exporter, needle: &str) -> Option<String> {
        e.render().lines().find(|l| l.contains(needle)).map(String::from)
    }

    const OTHER: &str = "vmmtrace_cpu_seconds_total{role=\"other\"}";

    #[test]
    fn a_thread_that_leaves_keeps_its_total() {
        let mut e = Exporter::new(&[("THREAD_STATS", 16384)]);
        let none = HashSet::new();
        let g = Gauges::default();
        e.update(
            vec![
                part(&series::CPU_BY_ROLE, &["other"], 10, None, 2.0),
                part(&series::CPU_BY_ROLE, &["other"], 11, None, 3.0),
            ],
            &none,
            &g,
        );
        assert_eq!(value(&e, OTHER), Some(5.0));
        // Thread 10 retired from the maps; 11 ran one more second.
        e.update(vec![part(&series::CPU_BY_ROLE, &["other"], 11, None, 4.0)], &none, &g);
        assert_eq!(value(&e, OTHER), Some(6.0));
        // A reading lower than before does not lower the counter.
        e.update(vec![part(&series::CPU_BY_ROLE, &["other"], 11, None, 3.5)], &none, &g);
        assert_eq!(value(&e, OTHER), Some(6.0));
        assert!(e.render().contains("vmmtrace_map_capacity{map=\"THREAD_STATS\"} 16384"));
    }

    #[test]
    fn a_thread_whose_role_is_learned_late_is_not_counted_twice() {
        let mut e = Exporter::new(&[]);
        let (none, g) = (HashSet::new(), Gauges::default());
        let other = |tid, v| part(&series::CPU_BY_ROLE, &["other"], tid, None, v);
        e.update(vec![other(10, 2.0), other(11, 3.0)], &none, &g);
        // Thread 10 turns out to be a VMM thread: it moves, nothing is carried for it.
        e.update(vec![part(&series::CPU_BY_ROLE, &["vmm"], 10, None, 2.5), other(11, 4.0)], &none, &g);
        assert_eq!(value(&e, OTHER), Some(5.0)); // held, not 4 + 2
        e.update(vec![part(&series::CPU_BY_ROLE, &["vmm"], 10, None, 2.5), other(11, 6.0)], &none, &g);
        assert_eq!(value(&e, OTHER), Some(6.0));
    }

    #[test]
    fn a_stopped_vm_is_shown_once_more_then_removed() {
        let mut e = Exporter::new(&[]);
        let g = Gauges::default();
        let vm = |v: f64| vec![part(&series::VM_CPU, &["web", "guest"], 7, Some(100), v)];
        e.update(vm(1.0), &HashSet::from([100]), &g);
        assert!(line_of(&e, "vm=\"web\"").is_some());
        // Stopped: the next scrape shows its final value...
        e.update(vm(1.5), &HashSet::new(), &g);
        assert_eq!(
            line_of(&e, "vm=\"web\"").unwrap(),
            "vmmtrace_vm_cpu_seconds_total{category=\"guest\",vm=\"web\"} 1.5"
        );
        // ... and the one after has no series of it, though the report still lists it.
        e.update(vm(1.5), &HashSet::new(), &g);
        assert_eq!(line_of(&e, "vm=\"web\""), None);
        // A new VM with the same pid is shown again.
        e.update(vm(0.2), &HashSet::from([100]), &g);
        assert!(line_of(&e, "vm=\"web\"").is_some());
    }
}
