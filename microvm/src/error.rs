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
    #[error("vCPU {vcpu}: guest CPU exception {exception}")]
    GuestException { vcpu: u32, exception: CpuException },
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

/// A CPU exception the guest took, with the registers it left, as both VMMs' guests
/// record it (the micro-VM's stub in registers, QEMU's guest in its mailbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuException {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub rsp: u64,
    pub cs: u64,
    pub rflags: u64,
    pub cr2: u64,
}

impl CpuException {
    /// The vector's name, e.g. "#UD invalid opcode".
    pub fn name(&self) -> &'static str {
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
            "#XM SIMD exception",
            "#VE virtualization",
            "#CP control protection",
        ];
        usize::try_from(self.vector).ok().and_then(|v| NAMES.get(v)).copied().unwrap_or("reserved")
    }
}

impl std::fmt::Display for CpuException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) error code {:#x} at rip {:#x} rsp {:#x} cs {:#x} rflags {:#x} cr2 {:#x}",
            self.vector,
            self.name(),
            self.error_code,
            self.rip,
            self.rsp,
            self.cs,
            self.rflags,
            self.cr2
        )
    }
}

/// What a negative status of `wl_run` (microvm/guest/workload.c) means.
pub fn workload_status(st: i64) -> &'static str {
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
