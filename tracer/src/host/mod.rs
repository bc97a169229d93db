//! Host discovery: which threads exist, what role each plays, where it may run.
//!
//! [`HostSnapshot::discover`] reads /proc and /sys once and returns the VMs
//! ([`Vm`]: name, VMM pid, vCPU tids, VMM thread tids) and a [`ThreadIdentity`] for
//! every thread (role, vCPU index, VM, CPU affinity, pinned or not).
//! [`HostSnapshot::classify`] names threads the probes saw but discovery did not
//! (they started or exited in between) from their tid, pid and comm.
//!
//! The module is split into pure rules tested on fixture strings (`parse`: stat,
//! status, cmdline, CPU lists, syscall lines; `names`: VMM binaries, VM names, vCPU
//! thread names, kernel threads; `roles`: which role each of those makes) and a thin
//! I/O layer (`procfs`). `snapshot` classifies one reading of /proc
//! ([`HostSnapshot::from_samples`] on samples built in memory,
//! [`HostSnapshot::discover_with`] on another /proc tree); `registry` merges the
//! snapshots of a trace; `discovery` takes them while tracing ([`Discovery`]).

use serde::{Deserialize, Serialize};

/// What a thread is to the operator of a KVM host.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A thread that runs a guest vCPU (enters `ioctl(KVM_RUN)`).
    Vcpu,
    /// A VMM thread that is not a vCPU: QEMU's main loop, iothreads, vhost workers.
    Vmm,
    /// A host kernel thread (kworker, ksoftirqd, rcu, ...) or the idle task.
    HostKernel,
    /// The command vmmtrace ran, and its descendants.
    Workload,
    /// Anything else.
    Other,
}

mod discovery;
mod names;
mod parse;
mod procfs;
pub mod registry;
mod roles;
mod snapshot;

use std::path::PathBuf;

pub use discovery::{Discovery, earlier_thread_meta, thread_meta};
pub use names::{
    VmmKind, VmmThreadKind, basename, vcpu_index_from_name, vm_name_from_cmdline, vmm_kind, vmm_thread_kind,
};
pub use parse::{
    CpuListError, PF_KTHREAD, Stat, Status, comm_from_bytes, format_cpu_list, in_kvm_run, parse_cmdline,
    parse_cpu_list, parse_stat, parse_status,
};
pub use procfs::{HostPaths, clock_tick_ns, kernel_string};
pub use roles::with_workload;
pub use snapshot::HostSnapshot;

/// Why host discovery failed. Tasks that exit during discovery are not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read {path} (host discovery needs procfs on /proc and sysfs on /sys: \
         run vmmtrace on the host as root, or in a container that shares the host's /proc)"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot parse {path}: {reason}; the kernel's format is not what vmmtrace expects, \
         please report this with the file's content"
    )]
    Parse { path: PathBuf, reason: String },
}

/// A VM: one VMM process and the threads that work for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// QEMU's `-name guest=NAME`, Firecracker's `--id`, else the pid as a string.
    /// Not necessarily unique; `pid` is.
    pub name: String,
    /// The VMM process.
    pub pid: u32,
    pub kind: VmmKind,
    /// vCPU thread ids, ordered by vCPU index.
    pub vcpus: Vec<u32>,
    /// Every other thread of the VMM process, plus kernel threads tied to this VM
    /// (`vhost-<pid>`, `kvm-pit/<pid>`, `kvm-nx-lpage-recovery-<pid>`), by tid.
    pub vmm_threads: Vec<u32>,
}

/// What one thread is, as seen when discovery ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadIdentity {
    pub tid: u32,
    /// The thread group (process) id; equal to `tid` for kernel threads.
    pub pid: u32,
    /// The thread's name from /proc (kernel threads' full names, not truncated).
    pub comm: String,
    pub role: Role,
    /// For `Role::Vcpu`: the vCPU index, from the thread name ("CPU 1/KVM") or, when
    /// the name does not tell, inferred (see `vcpu_index_inferred`).
    pub vcpu_index: Option<u32>,
    /// True if `vcpu_index` was inferred from the order of tids of the VM's
    /// unnamed vCPU threads rather than read from a thread name.
    pub vcpu_index_inferred: bool,
    /// The name of the VM this thread works for, if any.
    pub vm: Option<String>,
    /// The pid of that VM's VMM process.
    pub vm_pid: Option<u32>,
    /// CPUs the thread may run on (`Cpus_allowed_list`), sorted.
    pub affinity: Vec<u32>,
    /// True if `affinity` excludes some online CPU.
    pub pinned: bool,
    /// A kernel thread (`PF_KTHREAD`) or the idle task.
    pub kernel_thread: bool,
}

impl ThreadIdentity {
    /// A thread with a role and nothing else known yet (no VM, vCPU index or
    /// affinity); callers add what they know.
    pub fn new(tid: u32, pid: u32, comm: String, role: Role) -> ThreadIdentity {
        ThreadIdentity {
            tid,
            pid,
            comm,
            role,
            vcpu_index: None,
            vcpu_index_inferred: false,
            vm: None,
            vm_pid: None,
            affinity: Vec::new(),
            pinned: false,
            kernel_thread: false,
        }
    }

    /// The same thread, working for the VM `vm` whose VMM is `vm_pid`.
    pub fn in_vm(self, vm: &str, vm_pid: u32) -> ThreadIdentity {
        ThreadIdentity { vm: Some(vm.to_string()), vm_pid: Some(vm_pid), ..self }
    }
}

/// One process as read from /proc: the input of [`HostSnapshot::from_samples`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProcessSample {
    pub pid: u32,
    /// Target of `/proc/<pid>/exe` (absent for kernel threads).
    pub exe: Option<String>,
    /// `/proc/<pid>/cmdline`, split at NULs.
    pub cmdline: Vec<String>,
    /// Sorted by tid; the thread with `tid == pid` is the main thread.
    pub threads: Vec<ThreadSample>,
}

/// One thread as read from `/proc/<pid>/task/<tid>/{stat,status}`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ThreadSample {
    pub tid: u32,
    pub comm: String,
    /// `PF_KTHREAD` is set in its stat flags.
    pub kernel_thread: bool,
    /// `Cpus_allowed_list`, parsed.
    pub cpus_allowed: Vec<u32>,
}
