//! The traced command: found before tracing starts, started so that it marks itself
//! as workload, stopped if the trace ends first.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
};

use anyhow::{Context as _, bail};

use crate::probe;

/// Finds `program` on PATH (or as a path), so a typo fails before tracing starts.
pub fn resolve_command(program: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    for c in candidates {
        if let Ok(m) = std::fs::metadata(&c) {
            use std::os::unix::fs::PermissionsExt as _;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(c);
            }
        }
    }
    bail!("command not found: {program} (give a program on PATH or a path to an executable)")
}

/// Starts the command; the child marks itself as workload (in the probes' WATCH map)
/// before it execs, so everything it forks is known to be workload.
pub(super) fn spawn_watched(argv: &[String], watch_fd: std::os::fd::RawFd) -> anyhow::Result<tokio::process::Child> {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closure only makes raw syscalls (getpid, bpf) between fork and exec.
    unsafe {
        cmd.pre_exec(move || probe::watch_self_raw(watch_fd));
    }
    tokio::process::Command::from(cmd).spawn().with_context(|| format!("cannot start {}", argv[0]))
}

/// The command once the trace is over: how it ended, as (exit code, signal). A
/// command still running is stopped first, so that vmmtrace's exit reflects it and
/// nothing is left running unseen.
pub(super) async fn settle(
    mut child: tokio::process::Child,
    pid: u32,
    exited: Option<std::process::ExitStatus>,
) -> (Option<i32>, Option<i32>) {
    let status = match exited {
        Some(st) => Some(st),
        None => {
            // SAFETY: kill(2) on the child's pid, which we have not reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            child.wait().await.ok()
        }
    };
    match status {
        Some(st) => (st.code(), st.signal()),
        None => (None, None),
    }
}
