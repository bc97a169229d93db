//! Errors of the micro-VM, worded to say what to do.

/// Everything that can go wrong creating or running a micro-VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "open /dev/kvm: no such device: load the KVM module (kvm_intel, kvm_amd or kvm_pvm) or run on a host with virtualization enabled"
    )]
    NoKvm,
    #[error("open /dev/kvm: permission denied: run as root or add yourself to group kvm")]
    KvmPermission,
    #[error("open /dev/kvm: {0}")]
    KvmOpen(std::io::Error),
    #[error("KVM API version {0} is not supported (need 12): upgrade the host kernel")]
    KvmApiVersion(i32),
    #[error("KVM lacks capability {0}: upgrade the host kernel (Linux >= 4.x with in-kernel irqchip)")]
    KvmMissingCap(&'static str),
    #[error("{op}: {source}")]
    Kvm {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad micro-VM option: {0}")]
    Config(String),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("guest payload: {0}")]
    Payload(String),
    #[error("pin {what} to CPUs {cpus:?}: {source} (is every CPU online and allowed by this process's affinity?)")]
    Pin {
        what: String,
        cpus: Vec<usize>,
        #[source]
        source: std::io::Error,
    },
    #[error("vCPU {vcpu}: guest fault: {reason}\n{registers}")]
    GuestFault { vcpu: u32, reason: String, registers: String },
    #[error(
        "vCPU {vcpu}: guest CPU exception {vector} ({name}) error code {error_code:#x} at rip {rip:#x} rsp {rsp:#x} cs {cs:#x} rflags {rflags:#x} cr2 {cr2:#x}"
    )]
    GuestException {
        vcpu: u32,
        vector: u32,
        name: &'static str,
        error_code: u64,
        rip: u64,
        rsp: u64,
        cs: u64,
        rflags: u64,
        cr2: u64,
    },
    #[error("vCPU {vcpu}: workload failed with status {status} ({what})")]
    Workload { vcpu: u32, status: i64, what: &'static str },
    /// A guest program could not be loaded or was stopped (one-line reason).
    #[error("{0}")]
    Program(String),
    #[error("thread: {0}")]
    Thread(String),
}

impl Error {
    pub(crate) fn kvm(op: impl Into<String>, e: kvm_ioctls::Error) -> Self {
        Error::Kvm { op: op.into(), source: std::io::Error::from_raw_os_error(e.errno()) }
    }
}

pub(crate) fn exception_name(v: u32) -> &'static str {
    match v {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD exception",
        _ => "reserved",
    }
}

pub(crate) fn workload_status(st: i64) -> &'static str {
    match st {
        -1 => "BZ2_bzCompressInit failed",
        -2 => "BZ2_bzCompress did not finish",
        -3 => "BZ2_bzDecompressInit failed",
        -4 => "BZ2_bzDecompress failed or wrong length",
        -5 => "decompressed data differs from the input",
        -10 => "guest heap too small for the buffers",
        -20 => "unknown workload",
        _ => "unknown",
    }
}
