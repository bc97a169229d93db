//! `vmmtrace serve`: continuous tracing, exposed to Prometheus at `/metrics`.
//!
//! One loop owns the trace ([`LiveTrace`], the same probes, discovery and accounting
//! as `record`): it steps discovery every second and answers each scrape with a
//! report of the trace so far, turned into series (`series.rs`, pure) and exposed
//! by the exporter (`exporter.rs`: counters carried across threads that leave the
//! maps, VMs that stopped removed after one more scrape). `http.rs` serves `/metrics`
//! (axum) and passes each scrape to the loop over a channel; `own_cost.rs` reads
//! vmmtrace's own CPU time and memory.

mod exporter;
mod http;
mod own_cost;
pub mod series;

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};

pub use exporter::{Exporter, Gauges};
pub use http::ListenError;

use crate::{
    probe::{self, ProbeOptions, RawCounters},
    record::{DEFAULT_LEDGER_TOP, LiveTrace, Signals},
};

/// Where `serve` listens unless told: loopback only (the metrics name the host's VMs).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub probe: ProbeOptions,
    /// Processes whose threads (and what they fork) count as role `workload`.
    pub watch: Vec<u32>,
}

/// Traces and serves until SIGINT, SIGTERM or SIGHUP.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    probe::check_privileges()?;
    let watch_tids = opts.watch.iter().map(|&pid| threads_of(pid)).collect::<anyhow::Result<Vec<_>>>()?;
    // Bound before the probes attach: a taken port is said at once.
    let listener = http::bind(opts.listen).await?;
    let addr = listener.local_addr().context("the address listened on")?;
    let mut signals = Signals::install()?;
    let mut live = LiveTrace::start(&opts.probe)?;
    let unwatched = live.probes.watch(&watch_tids.concat());
    anyhow::ensure!(unwatched == 0, "{unwatched} threads of --watch could not be marked: the WATCH map is full");
    let mut exporter = Exporter::new(&live.probes.map_capacities());

    let (scrape_tx, mut scrapes) = mpsc::channel::<http::ScrapeRequest>(16);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, scrape_tx, async {
        let _ = stop_rx.await;
    }));
    // Tests and scripts read the address from here (with --listen HOST:0 the port is chosen now).
    println!("vmmtrace serve: listening on http://{addr}/metrics");

    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let signal = loop {
        tokio::select! {
            sig = signals.recv() => break sig,
            _ = ticker.tick() => live.observe_host()?,
            Some(reply) = scrapes.recv() => {
                let answer = scrape(&live, &mut exporter).map_err(|e| format!("vmmtrace: scrape failed: {}", crate::error::chain(e.as_ref())));
                let _ = reply.send(answer);
            }
        }
    };
    let _ = stop_tx.send(());
    drop(scrapes);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => eprintln!("vmmtrace serve: the HTTP server ended with: {e}"),
        Err(_) => eprintln!("vmmtrace serve: open connections did not close within 5 s; stopping anyway"),
        _ => {}
    }
    eprintln!("vmmtrace serve: stopped by signal {signal}");
    Ok(())
}

/// One scrape: the report of the trace so far, into the exporter, rendered.
fn scrape(live: &LiveTrace, exporter: &mut Exporter) -> anyhow::Result<String> {
    let raw = live.snapshot()?;
    let gauges = Gauges {
        map_entries: map_entries(&raw),
        resident_bytes: own_cost::resident_bytes(),
        vms_running: live.discovery.registry.last.vms.len(),
        online_cpus: raw.online_cpus.len(),
    };
    let counters = raw.counters.clone();
    let report = live.report_so_far(raw, DEFAULT_LEDGER_TOP);
    let bpf_ns: u64 = live.probes.program_stats().iter().map(|(_, _, ns)| ns).sum();
    let own = series::OwnCpu { userspace_s: own_cost::process_cpu_s(), bpf_s: bpf_ns as f64 / 1e9 };
    let running: HashSet<u32> = live.discovery.registry.last.vms.iter().map(|vm| vm.pid).collect();
    exporter.update(series::parts(&report, &counters, own), &running, &gauges);
    Ok(exporter.render())
}

/// Entries in each growing kernel map, as read at this scrape: the occupancy
/// taken before retired threads were added back to the snapshot (they left the
/// maps; counting them would make the gauge grow with every thread that exited).
fn map_entries(raw: &RawCounters) -> Vec<(&'static str, u64)> {
    raw.occupancy.maps.iter().map(|&(m, n, _)| (m, n as u64)).collect()
}

/// The threads of process `pid` now.
fn threads_of(pid: u32) -> anyhow::Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir)
        .with_context(|| format!("no process {pid} (cannot read {dir}): give --watch the pid of a running process"))?;
    Ok(entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}
