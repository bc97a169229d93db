//! `vmmtrace record`: attach to the whole host, optionally around a command, show a
//! live summary, and write the report at the end (also on Ctrl-C or SIGTERM).
//!
//! `session.rs` holds the trace in progress ([`LiveTrace`], which `serve` runs too),
//! `signals.rs` the signals that end it, `command.rs` runs the traced command,
//! `live.rs` prints the live summary, `build.rs` turns the last counters into the
//! report.

mod build;
mod command;
mod live;
mod session;
mod signals;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub use build::{DEFAULT_LEDGER_TOP, build_report, finish, finish_listing, host_info};
pub use command::resolve_command;
pub use live::live_line;
pub use session::LiveTrace;
pub(crate) use signals::Signals;

use crate::{
    account::timeline::TimelineBuilder,
    perfetto,
    probe::{self, ProbeOptions},
    report::{self, CommandInfo, Report},
};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub duration: Option<Duration>,
    pub output: PathBuf,
    pub command: Vec<String>,
    /// Live summary interval; None = no live summary.
    pub live_interval: Option<Duration>,
    pub probe: ProbeOptions,
    /// (victim, thief) pairs to list in the report's ledger.
    pub ledger_top: usize,
    /// `--timeline`: every switch, wakeup and migration, for Perfetto.
    pub timeline: Option<perfetto::TimelineOptions>,
}

#[derive(Debug)]
pub struct RecordOutcome {
    pub report: Report,
    /// What vmmtrace should exit with: the command's exit code, 128+signal if it was
    /// killed, 130 if interrupted, else 0.
    pub exit_code: i32,
    pub interrupted: bool,
}

/// Why the trace ended.
enum End {
    Duration,
    CommandExited(std::process::ExitStatus),
    Signal(i32),
}

/// A trace in progress.
struct Tracing {
    live: LiveTrace,
    /// The traced command and its pid.
    child: Option<(tokio::process::Child, u32)>,
    timeline: TimelineBuilder,
    /// The reader of the probes' scheduler events, with `--timeline`.
    sched_events: Option<perfetto::Stream>,
}

pub async fn record(opts: RecordOptions) -> anyhow::Result<RecordOutcome> {
    check_before_tracing(&opts)?;
    let mut signals = Signals::install()?;
    let mut tracing = start(&opts)?;
    let end = tracing.run(&opts, &mut signals).await?;
    let Tracing { live, child, timeline, sched_events } = tracing;
    let LiveTrace { probes, discovery, started_unix_s, .. } = live;
    let window_start_ns = probes.window().start_ns;
    let mut report = finish_listing(probes, discovery, started_unix_s, opts.ledger_top)?;
    report.timeline = Some(timeline.finish());
    // The probes are stopped: the reader's last drain has every event of the window.
    let collected = sched_events.map(perfetto::Stream::finish);
    if let Some(c) = &collected {
        perfetto::count_in_report(&mut report, c);
    }

    let mut exit_code = 0;
    if let Some((child, pid)) = child {
        let exited = match end {
            End::CommandExited(st) => Some(st),
            _ => None,
        };
        let (code, sig) = command::settle(child, pid, exited).await;
        exit_code = code.unwrap_or_else(|| 128 + sig.unwrap_or(0));
        report.command = Some(CommandInfo { argv: opts.command.clone(), pid, exit_code: code, signal: sig });
    }
    let interrupted = matches!(end, End::Signal(_));
    if let End::Signal(sig) = end
        && (report.command.is_none() || exit_code == 0)
    {
        exit_code = 128 + sig;
    }
    let json = serde_json::to_vec_pretty(&report)?;
    if let Err(e) = report::write_atomic(&opts.output, &json) {
        // What was measured is not lost without a word: the summary still shows it.
        eprint!("{}", report::render_text(&report, 10));
        return Err(e.into());
    }
    if let (Some(t), Some(c)) = (&opts.timeline, collected) {
        perfetto::write_timeline(&t.path, &c, &report, window_start_ns)?;
    }
    Ok(RecordOutcome { report, exit_code, interrupted })
}

/// What can be found wrong before tracing starts is said before it starts.
fn check_before_tracing(opts: &RecordOptions) -> anyhow::Result<()> {
    probe::check_privileges()?;
    report::check_writable(&opts.output)?;
    if let Some(t) = &opts.timeline {
        perfetto::check_writable(&t.path)?;
    }
    if let Some(p) = opts.command.first() {
        resolve_command(p)?;
    }
    if opts.duration.is_none() && opts.command.is_empty() {
        eprintln!("vmmtrace: tracing until Ctrl-C (give --duration SECS or a command after -- to stop by itself)");
    }
    Ok(())
}

/// Attaches, discovers the host, opens the window, then starts the command.
fn start(opts: &RecordOptions) -> anyhow::Result<Tracing> {
    let mut probe_opts = opts.probe.clone();
    if opts.timeline.is_some() {
        probe_opts.timeline_ring_bytes = perfetto::RING_BYTES;
    }
    // The timeline's reader starts before the window opens, so that no event waits for it.
    let (live, sched_events) =
        LiveTrace::start_with(&probe_opts, |probes| match (&opts.timeline, probes.take_timeline()) {
            (Some(t), Some(ring)) => {
                Ok(Some(perfetto::Stream::start(ring, t.limit).context("start the timeline's reader")?))
            }
            _ => Ok(None),
        })?;
    let child = match opts.command.is_empty() {
        true => None,
        false => {
            let c = command::spawn_watched(&opts.command, live.probes.watch_fd())?;
            let pid = c.id().context("command exited before it started")?;
            Some((c, pid))
        }
    };
    Ok(Tracing { live, child, timeline: TimelineBuilder::default(), sched_events })
}

impl Tracing {
    /// Traces until the duration is over, the command exits or a signal arrives;
    /// meanwhile discovers the host every second and prints the live summary.
    async fn run(&mut self, opts: &RecordOptions, signals: &mut Signals) -> anyhow::Result<End> {
        let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
        // Discovery runs every second even without live output, to see VMs that come and go.
        let interval = opts.live_interval.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut last = self.live.tick_snapshot()?;
        let mut last_tick = last.clone();
        let mut last_print = Instant::now();
        loop {
            let child_wait = async {
                match self.child.as_mut() {
                    Some((c, _)) => c.wait().await,
                    None => std::future::pending().await,
                }
            };
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                st = child_wait => return Ok(End::CommandExited(st.context("waiting for the command")?)),
                _ = sleep => return Ok(End::Duration),
                sig = signals.recv() => return Ok(End::Signal(sig)),
                _ = ticker.tick() => {
                    let now = self.live.tick()?;
                    self.timeline.add(&last_tick, &now, live::who(&now, &self.live.discovery.registry));
                    last_tick = now.clone();
                    let Some(every) = opts.live_interval else { continue };
                    if last_print.elapsed() + interval / 2 >= every {
                        let ns = now.window.stop_ns.saturating_sub(last.window.stop_ns).max(1);
                        let reg = &self.live.discovery.registry;
                        let mut line = live_line(self.live.started.elapsed(), &last, &now, ns, reg);
                        if let Some(s) = &self.sched_events {
                            line.push_str(&perfetto::live_part(s, &now));
                        }
                        eprintln!("{line}");
                        last = now;
                        last_print = Instant::now();
                    }
                }
            }
        }
    }
}
