//! Errors of the QEMU environment, worded to say what to do.

use std::path::PathBuf;

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
    #[error(
        "guest CPU exception {vector} ({name}) error code {error_code:#x} at rip {rip:#x} rsp {rsp:#x} cs {cs:#x} rflags {rflags:#x} cr2 {cr2:#x}"
    )]
    GuestException {
        vector: u64,
        name: &'static str,
        error_code: u64,
        rip: u64,
        rsp: u64,
        cs: u64,
        rflags: u64,
        cr2: u64,
    },
    #[error("guest program: {0}")]
    Program(String),
    #[error("vCPU {vcpu}: workload failed with status {status} (see microvm/guest/workload.c for the codes)")]
    Workload { vcpu: u32, status: i64 },
}

/// The name of an x86 exception vector.
pub(crate) fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization",
        "#CP control protection",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("reserved")
}
