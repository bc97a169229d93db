//! Host discovery: which threads exist, what role each plays, where it may run.

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
