//! The role rules, once: every place that names a thread's role (a snapshot of
//! /proc, a thread only the probes saw, a VM rebuilt from KVM_RUN evidence, the
//! workload set) asks these functions.

use super::{
    Role, VmmKind,
    names::{VmKernelThread, is_host_kernel_comm, vcpu_index_from_name, vm_thread_owner},
};

/// A thread of a VMM process (or one that looks like a vCPU): a vCPU if its name
/// gives a vCPU index or it entered KVM_RUN, else VMM work. Returns the role and
/// the index its name gives.
pub(super) fn in_vmm(comm: &str, kind: Option<VmmKind>, entered_kvm_run: bool) -> (Role, Option<u32>) {
    let index = vcpu_index_from_name(comm, kind);
    if index.is_some() || entered_kvm_run { (Role::Vcpu, index) } else { (Role::Vmm, None) }
}

/// A thread outside any VMM process. `kernel_thread` is `PF_KTHREAD` where /proc
/// was read, None for a thread known only by its (15-byte) comm. Returns the role
/// and, for a kernel thread that works for a VM (`vhost-<pid>`, `kvm-pit/<pid>`,
/// `kvm-nx-lpage-recovery-<pid>`), whose.
pub(super) fn outside_vmm(comm: &str, kernel_thread: Option<bool>, workload: bool) -> (Role, Option<VmKernelThread>) {
    if kernel_thread != Some(false)
        && let Some(owner) = vm_thread_owner(comm)
    {
        return (Role::Vmm, Some(owner));
    }
    if kernel_thread == Some(true) {
        return (Role::HostKernel, None);
    }
    if workload {
        return (Role::Workload, None);
    }
    if kernel_thread.is_none() && is_host_kernel_comm(comm) {
        return (Role::HostKernel, None);
    }
    (Role::Other, None)
}

/// The workload set (the traced command and what it forked) only claims threads
/// that are nothing else: a vCPU, VMM or kernel thread keeps its role.
pub fn with_workload(role: Role, workload: bool) -> Role {
    if role == Role::Other && workload { Role::Workload } else { role }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_threads() {
        assert_eq!(in_vmm("CPU 2/KVM", Some(VmmKind::Qemu), false), (Role::Vcpu, Some(2)));
        assert_eq!(in_vmm("worker", None, true), (Role::Vcpu, None));
        assert_eq!(in_vmm("worker", None, false), (Role::Vmm, None));
    }

    #[test]
    fn threads_outside_vmms() {
        assert_eq!(outside_vmm("vhost-100", Some(true), false), (Role::Vmm, Some(VmKernelThread::Owner(100))));
        assert_eq!(outside_vmm("vhost-100", None, false).0, Role::Vmm);
        // A user thread named like a vhost worker is not one.
        assert_eq!(outside_vmm("vhost-100", Some(false), false).0, Role::Other);
        assert_eq!(outside_vmm("kworker/0:1", Some(true), true).0, Role::HostKernel);
        assert_eq!(outside_vmm("kworker/0:1", None, false).0, Role::HostKernel);
        assert_eq!(outside_vmm("kworker/0:1", None, true).0, Role::Workload);
        assert_eq!(outside_vmm("kworker/0:1", Some(false), false).0, Role::Other);
        assert_eq!(outside_vmm("bzip2", Some(false), true).0, Role::Workload);
    }

    #[test]
    fn workload_claims_only_other_threads() {
        assert_eq!(with_workload(Role::Other, true), Role::Workload);
        assert_eq!(with_workload(Role::Vcpu, true), Role::Vcpu);
        assert_eq!(with_workload(Role::Other, false), Role::Other);
    }
}
