//! `vmmtrace record`: attach to the whole host, optionally around a command, show a
//! live summary, and write the report at the end (also on Ctrl-C or SIGTERM).
//!
//! `command.rs` runs the traced command, `live.rs` prints the live summary,
//! `build.rs` turns the last counters into the report.

mod build;
mod command;
mod live;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub use build::{DEFAULT_LEDGER_TOP, build_report, finish, finish_listing, host_info};
pub use command::resolve_command;
pub use live::live_line;

use crate::{
    account::timeline::TimelineBuilder,
    host::Discovery,
    probe::{self, ProbeOptions, Probes},
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

/// The signals that end a trace with a report: Ctrl-C, SIGTERM (systemd's stop) and
/// SIGHUP (the terminal closed), whose default action would lose the trace.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let on = |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("install the {name} handler"));
        Ok(Signals {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next of them to arrive.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

/// A trace in progress.
struct Tracing {
    probes: Probes,
    discovery: Discovery,
    started_unix_s: u64,
    started: Instant,
    /// The traced command and its pid.
    child: Option<(tokio::process::Child, u32)>,
    timeline: TimelineBuilder,
}

pub async fn record(opts: RecordOptions) -> anyhow::Result<RecordOutcome> {
    check_before_tracing(&opts)?;
    let mut signals = Signals::install()?;
    let mut tracing = start(&opts)?;
    let end = tracing.run(&opts, &mut signals).await?;
    let Tracing { probes, discovery, started_unix_s, child, timeline, .. } = tracing;
    let mut report = finish_listing(probes, discovery, started_unix_s, opts.ledger_top)?;
    report.timeline = Some(timeline.finish());

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
    Ok(RecordOutcome { report, exit_code, interrupted })
}

/// What can be found wrong before tracing starts is said before it starts.
fn check_before_tracing(opts: &RecordOptions) -> anyhow::Result<()> {
    probe::check_privileges()?;
    report::check_writable(&opts.output)?;
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
    let mut probes = Probes::attach(&opts.probe)?;
    let discovery = Discovery::start();
    if opts.probe.kvm {
        probes.mark_in_kvm_run(&discovery.vcpus_in_kvm_run());
    }
    let started_unix_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    probes.start()?;
    let started = Instant::now();
    let child = match opts.command.is_empty() {
        true => None,
        false => {
            let c = command::spawn_watched(&opts.command, probes.watch_fd())?;
            let pid = c.id().context("command exited before it started")?;
            Some((c, pid))
        }
    };
    Ok(Tracing { probes, discovery, started_unix_s, started, child, timeline: TimelineBuilder::default() })
}

impl Tracing {
    /// Traces until the duration is over, the command exits or a signal arrives;
    /// meanwhile discovers the host every second and prints the live summary.
    async fn run(&mut self, opts: &RecordOptions, signals: &mut Signals) -> anyhow::Result<End> {
        let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
        // Discovery runs every second even without live output, to see VMs that come and go.
        let interval = opts.live_interval.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut last = live::live_snapshot(&self.probes)?;
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
                    self.probes.retire_exited()?;
                    let now = live::live_snapshot(&self.probes)?;
                    self.discovery.observe(&now);
                    self.timeline.add(&last_tick, &now, live::who(&now, &self.discovery.registry));
                    last_tick = now.clone();
                    let Some(every) = opts.live_interval else { continue };
                    if last_print.elapsed() + interval / 2 >= every {
                        let ns = now.window.stop_ns.saturating_sub(last.window.stop_ns).max(1);
                        eprintln!("{}", live_line(self.started.elapsed(), &last, &now, ns, &self.discovery.registry));
                        last = now;
                        last_print = Instant::now();
                    }
                }
            }
        }
    }
}
