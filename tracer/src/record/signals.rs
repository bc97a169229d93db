//! The signals that end a trace: `record` writes its report, `serve` stops serving.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The signals that end a trace with a report: Ctrl-C, SIGTERM (systemd's stop) and
/// SIGHUP (the terminal closed), whose default action would lose the trace.
pub(crate) struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Signals> {
        let on = |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("install the {name} handler"));
        Ok(Signals {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next of them to arrive.
    pub(crate) async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}
