//! Errors of the QEMU environment, worded to say what to do.

use std::path::PathBuf;

use microvm::{CpuException, workload_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found: install QEMU with `apt-get install qemu-system-x86`")]
    QemuMissing(String),
    #[error(
        "cannot open /dev/kvm ({0}): run as root on a host with KVM, or use --accel tcg (emulation: exits are then not KVM exits)"
    )]
    NoKvm(std::io::Error),
    #[error("bad QEMU option: {0}")]
    Config(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited with {status} {when}; its stderr:\n{stderr}")]
    QemuExited { status: String, when: String, stderr: String },
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("timed out after {secs} s waiting for {what}; QEMU's console so far:\n{console}")]
    Timeout { secs: u64, what: String, console: String },
    #[error("pin {what} (tid {tid}) to CPUs {cpus:?}: {source} (is every CPU online and allowed?)")]
    Pin {
        what: String,
        tid: u32,
        cpus: Vec<usize>,
        #[source]
        source: std::io::Error,
    },
    #[error("guest CPU exception {0}")]
    GuestException(CpuException),
    #[error("guest program: {0}")]
    Program(String),
    #[error("vCPU {vcpu}: workload failed with status {status} ({})", workload_status(*.status))]
    Workload { vcpu: u32, status: i64 },
}
