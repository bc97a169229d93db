//! QEMU's stdout carries the guest's debugcon console (port 0xe9): lines such as
//! `vmmtrace-qemu: ready vcpu=0`. A thread reads them; the VM awaits the lines it needs.

use std::io::{BufRead as _, BufReader};
use std::process::ChildStdout;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub(crate) const READY: &str = "vmmtrace-qemu: ready ";
pub(crate) const DONE: &str = "vmmtrace-qemu: done";

pub(crate) struct Console {
    lines: Receiver<String>,
    /// Every line received so far (for error messages and the ground truth).
    pub seen: Vec<String>,
}

/// Why awaiting console lines stopped short.
pub(crate) enum Short {
    /// QEMU closed its stdout: it exited.
    Closed,
    TimedOut,
}

impl Console {
    pub(crate) fn start(stdout: ChildStdout) -> Console {
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("qemu-console".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the console reader thread");
        Console { lines, seen: Vec::new() }
    }

    /// Waits until `count` lines starting with `prefix` have been seen in total.
    pub(crate) fn await_lines(&mut self, prefix: &str, count: usize, deadline: Option<Duration>) -> Result<(), Short> {
        let start = Instant::now();
        while self.seen.iter().filter(|l| l.starts_with(prefix)).count() < count {
            let line = match deadline {
                Some(d) => match self.lines.recv_timeout(d.saturating_sub(start.elapsed())) {
                    Ok(line) => line,
                    Err(RecvTimeoutError::Timeout) => return Err(Short::TimedOut),
                    Err(RecvTimeoutError::Disconnected) => return Err(Short::Closed),
                },
                None => self.lines.recv().map_err(|_| Short::Closed)?,
            };
            self.seen.push(line);
        }
        Ok(())
    }

    /// The console so far, for error messages.
    pub(crate) fn text(&self) -> String {
        self.seen.join("\n")
    }
}
