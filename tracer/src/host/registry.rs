//! What discovery learned over a whole trace: snapshots taken while tracing, merged, so
//! that VMs and threads that exited before the end keep their names and roles; and
//! VMs rebuilt from the probes' own evidence (threads that entered KVM_RUN) where no
//! snapshot saw them.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{HostSnapshot, Role, ThreadIdentity, Vm, names};

#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub vms: BTreeMap<u32, Vm>,
    pub threads: HashMap<u32, ThreadIdentity>,
    /// The latest snapshot, for `classify` of threads no snapshot saw.
    pub last: HostSnapshot,
}

impl Registry {
    pub fn merge(&mut self, s: HostSnapshot) {
        for vm in &s.vms {
            let e = self.vms.entry(vm.pid).or_insert_with(|| vm.clone());
            for &t in &vm.vcpus {
                if !e.vcpus.contains(&t) {
                    e.vcpus.push(t);
                }
            }
            for &t in &vm.vmm_threads {
                if !e.vmm_threads.contains(&t) && !e.vcpus.contains(&t) {
                    e.vmm_threads.push(t);
                }
            }
            e.vmm_threads.retain(|t| !e.vcpus.contains(t));
            // A later snapshot may know only the pid (a VMM that exited and is not yet
            // reaped reads an empty command line): keep a name learned before.
            if vm.name != vm.pid.to_string() || e.name == e.pid.to_string() {
                e.name = vm.name.clone();
            }
        }
        for (tid, t) in &s.threads {
            self.threads.insert(*tid, t.clone());
        }
        // Every thread of a VM carries the VM's name as kept above.
        for vm in self.vms.values() {
            for tid in vm.vcpus.iter().chain(&vm.vmm_threads) {
                if let Some(id) = self.threads.get_mut(tid).filter(|id| id.pid == vm.pid) {
                    id.vm = Some(vm.name.clone());
                }
            }
        }
        // Keep each VM's vCPUs ordered by index, whichever snapshot found them.
        let threads = &self.threads;
        for vm in self.vms.values_mut() {
            vm.vcpus.sort_by_key(|t| (threads.get(t).and_then(|i| i.vcpu_index).unwrap_or(u32::MAX), *t));
        }
        self.last = s;
    }

    /// Adds a VM for every process whose threads entered KVM_RUN but that no snapshot
    /// saw (it started and ended between two snapshots). `threads` gives, for each tid
    /// the probes saw, its process id and name.
    pub fn add_unseen_vms(&mut self, kvm_run_tids: &HashSet<u32>, threads: &BTreeMap<u32, (u32, String)>) {
        let known: HashSet<u32> = self.vms.values().flat_map(|v| v.vcpus.iter().copied()).collect();
        let mut by_pid: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &tid in kvm_run_tids {
            if known.contains(&tid) {
                continue;
            }
            if let Some((pid, _)) = threads.get(&tid) {
                by_pid.entry(*pid).or_default().push(tid);
            }
        }
        for (pid, mut vcpus) in by_pid {
            let index = |tid: &u32| threads.get(tid).and_then(|(_, c)| names::vcpu_index_from_name(c, None));
            vcpus.sort_by_key(|t| (index(t).unwrap_or(u32::MAX), *t));
            let vm = self.vms.entry(pid).or_insert_with(|| Vm {
                name: pid.to_string(),
                pid,
                kind: names::VmmKind::Other,
                vcpus: Vec::new(),
                vmm_threads: Vec::new(),
            });
            for (i, &tid) in vcpus.iter().enumerate() {
                if !vm.vcpus.contains(&tid) {
                    vm.vcpus.push(tid);
                }
                let comm = threads.get(&tid).map(|(_, c)| c.clone()).unwrap_or_default();
                let named = names::vcpu_index_from_name(&comm, None);
                let id = ThreadIdentity {
                    vcpu_index: named.or(Some(i as u32)),
                    vcpu_index_inferred: named.is_none(),
                    ..ThreadIdentity::new(tid, pid, comm, Role::Vcpu)
                };
                self.threads.insert(tid, id.in_vm(&vm.name, pid));
            }
            for (&tid, (p, comm)) in threads {
                if *p == pid && !vm.vcpus.contains(&tid) {
                    if !vm.vmm_threads.contains(&tid) {
                        vm.vmm_threads.push(tid);
                    }
                    let vm_name = &vm.name;
                    self.threads
                        .entry(tid)
                        .or_insert_with(|| ThreadIdentity::new(tid, pid, comm.clone(), Role::Vmm).in_vm(vm_name, pid));
                }
            }
        }
    }

    /// Role, vCPU index and VM name of a thread.
    pub fn classify(&self, tid: u32, pid: u32, comm: &str) -> (Role, Option<u32>, Option<String>) {
        match self.threads.get(&tid) {
            Some(t) if t.pid == pid || tid == 0 => (t.role, t.vcpu_index, t.vm.clone()),
            _ => self.last.classify(tid, pid, comm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vms_name_outlives_a_snapshot_that_knows_only_its_pid() {
        let vm = |name: &str| Vm {
            name: name.into(),
            pid: 100,
            kind: names::VmmKind::Qemu,
            vcpus: vec![101],
            vmm_threads: vec![100],
        };
        let mut r = Registry::default();
        for name in ["100", "web", "100"] {
            let mut s = HostSnapshot::default();
            s.vms.push(vm(name));
            s.threads.insert(100, ThreadIdentity::new(100, 100, "qemu-system-x86".into(), Role::Vmm).in_vm(name, 100));
            r.merge(s);
        }
        assert_eq!(r.vms[&100].name, "web");
        assert_eq!(r.threads[&100].vm.as_deref(), Some("web"));
    }

    #[test]
    fn a_vm_that_came_and_went_is_rebuilt_from_kvm_run_evidence() {
        let mut r = Registry::default();
        let threads: BTreeMap<u32, (u32, String)> = [
            (100, (100, "vmmtrace".to_string())),
            (101, (100, "CPU 1/KVM".to_string())),
            (102, (100, "CPU 0/KVM".to_string())),
            (200, (200, "bash".to_string())),
        ]
        .into_iter()
        .collect();
        r.add_unseen_vms(&[101, 102].into_iter().collect(), &threads);
        let vm = &r.vms[&100];
        assert_eq!(vm.vcpus, vec![102, 101]); // by index
        assert_eq!(vm.vmm_threads, vec![100]);
        assert_eq!(r.classify(101, 100, "CPU 1/KVM"), (Role::Vcpu, Some(1), Some("100".into())));
        assert_eq!(r.classify(100, 100, "vmmtrace").0, Role::Vmm);
        assert!(!r.threads.contains_key(&200));
    }
}
