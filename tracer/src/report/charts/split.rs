//! How a thread's on-CPU time divides into chart categories: by its role, except a
//! vCPU thread, whose time splits into guest and overhead (exit handling + VMM
//! userspace) by what the report measured for it.

use std::collections::HashMap;

use super::palette::Category;
use crate::{
    account::kvm::VcpuReport,
    host::Role,
    report::{Report, ThreadReport},
};

/// A vCPU's guest time and its overhead (ns). Where kvm_entry/kvm_exit do not fire
/// (PVM), in-kernel exit handling cannot be told from guest time and counts as guest.
pub fn vcpu_split(v: &VcpuReport) -> (u64, u64) {
    match (v.guest_ns, v.exit_handling_ns) {
        (Some(guest), Some(exits)) => (guest, exits + v.vmm_user_ns),
        _ => (v.kvm_run_ns, v.vmm_user_ns),
    }
}

/// Whether some vCPU's guest time includes its in-kernel exit handling.
pub fn guest_includes_exit_handling(r: &Report) -> bool {
    r.vms.iter().flat_map(|vm| &vm.vcpus).any(|v| v.guest_ns.is_none() && v.kvm_run_ns > 0)
}

/// Per thread: the fractions of its time by category (they sum to 1).
pub struct Splitter<'a> {
    vcpus: HashMap<u32, &'a VcpuReport>,
}

impl<'a> Splitter<'a> {
    pub fn new(r: &'a Report) -> Splitter<'a> {
        Splitter { vcpus: r.vms.iter().flat_map(|vm| &vm.vcpus).map(|v| (v.tid, v)).collect() }
    }

    pub fn fractions(&self, t: &ThreadReport) -> Vec<(Category, f64)> {
        if t.role == Role::Vcpu
            && let Some(v) = self.vcpus.get(&t.tid)
        {
            let (guest, overhead) = vcpu_split(v);
            let total = (guest + overhead) as f64;
            if total > 0.0 {
                return vec![
                    (Category::GuestOrJob, guest as f64 / total),
                    (Category::VcpuOverhead, overhead as f64 / total),
                ];
            }
        }
        vec![(Category::of_role(t.role), 1.0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vcpu_splits_into_guest_and_overhead() {
        let r = crate::report::charts::fixtures::one_vm_report();
        let s = Splitter::new(&r);
        let vcpu = r.threads.iter().find(|t| t.role == Role::Vcpu).unwrap();
        let f = s.fractions(vcpu);
        assert_eq!(f[0].0, Category::GuestOrJob);
        assert!((f[0].1 - 0.8).abs() < 1e-9, "{f:?}");
        assert!((f[1].1 - 0.2).abs() < 1e-9, "{f:?}");
        let vmm = r.threads.iter().find(|t| t.role == Role::Vmm).unwrap();
        assert_eq!(s.fractions(vmm), vec![(Category::VmmThreads, 1.0)]);
    }
}
