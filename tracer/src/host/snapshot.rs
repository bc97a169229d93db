//! [`HostSnapshot`]: the VMs and the role of every thread at one moment, read from
//! /proc (`procfs.rs`) and classified by the rules of `roles.rs`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    Error, HostPaths, ProcessSample, Role, ThreadIdentity, ThreadSample, Vm, VmmKind,
    names::{self, VmKernelThread, vcpu_index_from_name, vm_name_from_cmdline},
    procfs, roles,
};

/// The VMs, threads, roles and affinities of the host at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// VMs by VMM pid.
    pub vms: Vec<Vm>,
    /// Every thread seen, by tid, plus tid 0 (the idle tasks, comm "swapper").
    pub threads: HashMap<u32, ThreadIdentity>,
    /// /sys/devices/system/cpu/online.
    pub online_cpus: Vec<u32>,
    #[serde(skip)]
    kvm_run_tids: HashSet<u32>,
    #[serde(skip)]
    workload_tids: HashSet<u32>,
}

impl HostSnapshot {
    /// Reads /proc and /sys and classifies every thread of the host.
    ///
    /// `kvm_run_tids`: threads known (from the probes) to have entered `ioctl(KVM_RUN)`:
    /// they are vCPUs and their processes VMMs, whatever their names.
    /// `workload_tids`: the threads of the command vmmtrace runs; they get
    /// `Role::Workload` unless they are vCPU, VMM or kernel threads.
    pub fn discover(kvm_run_tids: &HashSet<u32>, workload_tids: &HashSet<u32>) -> Result<HostSnapshot, Error> {
        HostSnapshot::discover_with(&HostPaths::default(), kvm_run_tids, workload_tids)
    }

    /// [`HostSnapshot::discover`] reading from other paths (a fake /proc in tests).
    pub fn discover_with(
        paths: &HostPaths,
        kvm_run_tids: &HashSet<u32>,
        workload_tids: &HashSet<u32>,
    ) -> Result<HostSnapshot, Error> {
        let online_cpus = procfs::read_online_cpus(&paths.cpu_online)?;
        let processes = procfs::read_processes(&paths.proc_root)?;
        Ok(HostSnapshot::from_samples(&processes, online_cpus, kvm_run_tids, workload_tids))
    }

    /// The pure half of discovery: classify processes already read from /proc.
    ///
    /// Rules (in `roles.rs`), in order of precedence:
    /// 1. A process is a VMM if its comm or executable is qemu-system-*, qemu-kvm,
    ///    cloud-hypervisor, firecracker or crosvm, or if one of its threads is in
    ///    `kvm_run_tids` or is named `"CPU <n>/KVM"`. Its threads named as vCPUs
    ///    ("CPU 3/KVM", cloud-hypervisor "vcpu3", firecracker "fc_vcpu 3", crosvm
    ///    "crosvm_vcpu3") or in `kvm_run_tids` are `Vcpu`; every other thread is `Vmm`.
    ///    vCPU threads without an index in their name get the free indexes in tid order.
    /// 2. Kernel threads named `vhost-<pid>`, `kvm-pit/<pid>`,
    ///    `kvm-nx-lpage-recovery-<pid>` are `Vmm` (of that VM if `<pid>` is a VMM).
    /// 3. Other kernel threads (`PF_KTHREAD`) and tid 0 are `HostKernel`.
    /// 4. Threads in `workload_tids` are `Workload`; all the rest `Other`.
    pub fn from_samples(
        processes: &[ProcessSample],
        online_cpus: Vec<u32>,
        kvm_run_tids: &HashSet<u32>,
        workload_tids: &HashSet<u32>,
    ) -> HostSnapshot {
        let mut snapshot = HostSnapshot {
            online_cpus: online_cpus.clone(),
            kvm_run_tids: kvm_run_tids.clone(),
            workload_tids: workload_tids.clone(),
            ..HostSnapshot::default()
        };
        let online: HashSet<u32> = online_cpus.iter().copied().collect();
        // VMMs first: kernel threads that work for a VM are tied to it in the second pass.
        let mut vmm_pids = HashSet::new();
        for process in processes {
            if let Some(kind) = vmm_kind_of(process, kvm_run_tids) {
                snapshot.add_vmm(process, kind, &online);
                vmm_pids.insert(process.pid);
            }
        }
        for process in processes.iter().filter(|p| !vmm_pids.contains(&p.pid)) {
            for thread in &process.threads {
                snapshot.add_other(thread, process.pid, &online);
            }
        }
        for vm in &mut snapshot.vms {
            vm.vmm_threads.sort_unstable();
        }
        // The idle tasks (pid 0 on every CPU) never appear in /proc.
        let idle = ThreadIdentity {
            affinity: online_cpus,
            kernel_thread: true,
            ..ThreadIdentity::new(0, 0, "swapper".to_string(), Role::HostKernel)
        };
        snapshot.threads.entry(0).or_insert(idle);
        snapshot
    }

    /// A VMM process: its VM, its vCPU threads (by index) and its other threads.
    fn add_vmm(&mut self, process: &ProcessSample, kind: VmmKind, online: &HashSet<u32>) {
        let name = vm_name_from_cmdline(kind, &process.cmdline).unwrap_or_else(|| process.pid.to_string());
        let mut vm = Vm { name, pid: process.pid, kind, vcpus: Vec::new(), vmm_threads: Vec::new() };
        // vCPUs: (index from name, tid).
        let mut named: Vec<(u32, u32)> = Vec::new();
        let mut unnamed: Vec<u32> = Vec::new();
        for thread in &process.threads {
            let (role, index) = roles::in_vmm(&thread.comm, Some(kind), self.kvm_run_tids.contains(&thread.tid));
            let id = ThreadIdentity { vcpu_index: index, ..sampled(thread, process.pid, role, online) };
            match (role, index) {
                (Role::Vcpu, Some(index)) => named.push((index, thread.tid)),
                (Role::Vcpu, None) => unnamed.push(thread.tid),
                _ => vm.vmm_threads.push(thread.tid),
            }
            self.threads.insert(thread.tid, id.in_vm(&vm.name, process.pid));
        }
        vm.vcpus = self.index_unnamed_vcpus(named, unnamed);
        self.vms.push(vm);
    }

    /// Gives vCPU threads whose name has no index the free indexes, in tid order;
    /// returns every vCPU thread ordered by index.
    fn index_unnamed_vcpus(&mut self, mut named: Vec<(u32, u32)>, mut unnamed: Vec<u32>) -> Vec<u32> {
        let used: HashSet<u32> = named.iter().map(|(index, _)| *index).collect();
        let mut free = (0u32..).filter(|index| !used.contains(index));
        unnamed.sort_unstable();
        for tid in unnamed {
            let index = free.next().expect("unbounded range");
            let id = self.threads.get_mut(&tid).expect("inserted by add_vmm");
            id.vcpu_index = Some(index);
            id.vcpu_index_inferred = true;
            named.push((index, tid));
        }
        named.sort_unstable();
        named.into_iter().map(|(_, tid)| tid).collect()
    }

    /// A thread outside the VMM processes (after every VMM is known).
    fn add_other(&mut self, thread: &ThreadSample, pid: u32, online: &HashSet<u32>) {
        let workload = self.workload_tids.contains(&thread.tid);
        let (role, owner) = roles::outside_vmm(&thread.comm, Some(thread.kernel_thread), workload);
        let mut id = sampled(thread, pid, role, online);
        if let Some(VmKernelThread::Owner(owner)) = owner
            && let Some(vm) = self.vms.iter_mut().find(|vm| vm.pid == owner)
        {
            vm.vmm_threads.push(thread.tid);
            id = id.in_vm(&vm.name, owner);
        }
        self.threads.insert(thread.tid, id);
    }

    /// The VM whose VMM process has this pid.
    pub fn vm_by_pid(&self, pid: u32) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.pid == pid)
    }

    /// The first VM with this name.
    pub fn vm_by_name(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.name == name)
    }

    /// Classifies a thread from what the probes recorded (tid, thread group id, comm
    /// of at most 15 bytes), typically one that exited before or after discovery.
    /// Returns the role, the vCPU index if known, and the VM name if known.
    ///
    /// A thread seen by discovery (same tid and pid) keeps its discovered identity.
    /// Otherwise: tid 0 is `HostKernel`; a `"CPU <n>/KVM"` comm or a tid that entered
    /// KVM_RUN is `Vcpu`; any other thread of a known VMM pid is `Vmm`; `vhost-<pid>`,
    /// `kvm-pit/<pid>`, `kvm-nx-lpage-re..` are `Vmm`; a workload tid is `Workload`;
    /// well-known kernel thread names (kworker/, ksoftirqd/, migration/, rcu_,
    /// swapper/, ...) are `HostKernel`; the rest is `Other`.
    pub fn classify(&self, tid: u32, pid: u32, comm: &str) -> (Role, Option<u32>, Option<String>) {
        if tid == 0 {
            return (Role::HostKernel, None, None);
        }
        if let Some(id) = self.threads.get(&tid).filter(|id| id.pid == pid) {
            return (id.role, id.vcpu_index, id.vm.clone());
        }
        let vm = self.vm_by_pid(pid);
        let (role, index) = roles::in_vmm(comm, vm.map(|vm| vm.kind), self.kvm_run_tids.contains(&tid));
        if role == Role::Vcpu || vm.is_some() {
            return (role, index, vm.map(|vm| vm.name.clone()));
        }
        let (role, owner) = roles::outside_vmm(comm, None, self.workload_tids.contains(&tid));
        let vm = match owner {
            Some(VmKernelThread::Owner(owner)) => self.vm_by_pid(owner).map(|vm| vm.name.clone()),
            _ => None,
        };
        (role, None, vm)
    }
}

/// A thread as /proc showed it, with `role`.
fn sampled(thread: &ThreadSample, pid: u32, role: Role, online: &HashSet<u32>) -> ThreadIdentity {
    let allowed_online = thread.cpus_allowed.iter().filter(|cpu| online.contains(cpu)).count();
    ThreadIdentity {
        affinity: thread.cpus_allowed.clone(),
        pinned: !online.is_empty() && allowed_online < online.len(),
        kernel_thread: thread.kernel_thread,
        ..ThreadIdentity::new(thread.tid, pid, thread.comm.clone(), role)
    }
}

/// Whether a process is a VMM, and which.
fn vmm_kind_of(process: &ProcessSample, kvm_run_tids: &HashSet<u32>) -> Option<VmmKind> {
    let main = process.threads.iter().find(|t| t.tid == process.pid).or(process.threads.first())?;
    if main.kernel_thread {
        return None;
    }
    let mut exe_names: Vec<&str> = Vec::new();
    exe_names.extend(process.exe.as_deref());
    exe_names.extend(process.cmdline.first().map(String::as_str));
    if let Some(kind) = names::vmm_kind(&main.comm, &exe_names) {
        return Some(kind);
    }
    let runs_vcpus =
        process.threads.iter().any(|t| kvm_run_tids.contains(&t.tid) || vcpu_index_from_name(&t.comm, None).is_some());
    runs_vcpus.then_some(VmmKind::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: u32, comm: &str, cpus: &[u32]) -> ThreadSample {
        ThreadSample { tid, comm: comm.to_string(), kernel_thread: false, cpus_allowed: cpus.to_vec() }
    }

    fn kthread(tid: u32, comm: &str, cpus: &[u32]) -> ThreadSample {
        ThreadSample { kernel_thread: true, ..thread(tid, comm, cpus) }
    }

    fn process(pid: u32, exe: Option<&str>, cmdline: &[&str], threads: Vec<ThreadSample>) -> ProcessSample {
        ProcessSample {
            pid,
            exe: exe.map(str::to_string),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            threads,
        }
    }

    fn set(tids: &[u32]) -> HashSet<u32> {
        tids.iter().copied().collect()
    }

    /// A host with 4 CPUs: a QEMU VM with named vCPUs (one pinned), a vhost kernel
    /// thread, a process found only through KVM_RUN, kernel threads, a workload.
    fn fixture() -> Vec<ProcessSample> {
        vec![
            process(1, Some("/usr/lib/systemd/systemd"), &["/sbin/init"], vec![thread(1, "systemd", &[0, 1, 2, 3])]),
            process(2, None, &[], vec![kthread(2, "kthreadd", &[0, 1, 2, 3])]),
            process(15, None, &[], vec![kthread(15, "ksoftirqd/1", &[1])]),
            process(
                100,
                Some("/usr/bin/qemu-system-x86_64"),
                &["qemu-system-x86_64", "-accel", "kvm", "-name", "guest=web,debug-threads=on", "-smp", "2"],
                vec![
                    thread(100, "qemu-system-x86", &[0, 1, 2, 3]),
                    thread(101, "call_rcu", &[0, 1, 2, 3]),
                    thread(103, "CPU 1/KVM", &[3]),
                    thread(104, "CPU 0/KVM", &[0, 1, 2, 3]),
                    thread(105, "vhost-100", &[0, 1, 2, 3]),
                ],
            ),
            process(120, None, &[], vec![kthread(120, "vhost-100", &[0, 1, 2, 3])]),
            process(121, None, &[], vec![kthread(121, "kvm-pit/100", &[0, 1, 2, 3])]),
            process(122, None, &[], vec![kthread(122, "kvm-nx-lpage-recovery-100", &[0, 1, 2, 3])]),
            process(123, None, &[], vec![kthread(123, "vhost-999", &[0, 1, 2, 3])]),
            process(
                200,
                Some("/opt/vmm/my-vmm"),
                &["my-vmm", "--vcpus", "3"],
                vec![
                    thread(200, "my-vmm", &[0, 1, 2, 3]),
                    thread(207, "worker", &[0, 1, 2, 3]),
                    thread(203, "worker", &[0, 1, 2, 3]),
                    thread(205, "worker", &[0, 1, 2, 3]),
                ],
            ),
            process(300, Some("/usr/bin/bzip2"), &["bzip2", "-9"], vec![thread(300, "bzip2", &[0, 1, 2, 3])]),
            process(
                400,
                Some("/usr/bin/firecracker"),
                &["firecracker", "--id", "fc1"],
                vec![thread(400, "firecracker", &[0, 1, 2, 3]), thread(401, "fc_vcpu 0", &[2])],
            ),
        ]
    }

    fn snapshot() -> HostSnapshot {
        // 203 and 207 entered KVM_RUN; 300 is the workload, and so (wrongly) is 104:
        // a vCPU stays a vCPU.
        HostSnapshot::from_samples(&fixture(), vec![0, 1, 2, 3], &set(&[203, 207]), &set(&[300, 104]))
    }

    #[test]
    fn qemu_vm_with_named_vcpus() {
        let snap = snapshot();
        let vm = snap.vm_by_name("web").expect("VM web");
        assert_eq!(vm.pid, 100);
        assert_eq!(vm.kind, VmmKind::Qemu);
        assert_eq!(vm.vcpus, vec![104, 103], "ordered by vCPU index");
        assert_eq!(vm.vmm_threads, vec![100, 101, 105, 120, 121, 122]);
        let cpu1 = &snap.threads[&103];
        assert_eq!((cpu1.role, cpu1.vcpu_index, cpu1.vcpu_index_inferred), (Role::Vcpu, Some(1), false));
        assert_eq!((cpu1.vm.as_deref(), cpu1.vm_pid), (Some("web"), Some(100)));
        assert_eq!((cpu1.affinity.clone(), cpu1.pinned), (vec![3], true));
        let cpu0 = &snap.threads[&104];
        assert_eq!((cpu0.role, cpu0.vcpu_index, cpu0.pinned), (Role::Vcpu, Some(0), false));
        for tid in [100, 101, 105] {
            assert_eq!(snap.threads[&tid].role, Role::Vmm, "tid {tid}");
            assert_eq!(snap.threads[&tid].vm.as_deref(), Some("web"));
        }
    }

    #[test]
    fn kernel_threads_tied_to_a_vm() {
        let snap = snapshot();
        for tid in [120, 121, 122] {
            let id = &snap.threads[&tid];
            assert_eq!((id.role, id.vm.as_deref(), id.kernel_thread), (Role::Vmm, Some("web"), true), "{tid}");
        }
        // vhost of an unknown owner: still VMM work, VM unknown.
        let id = &snap.threads[&123];
        assert_eq!((id.role, id.vm.as_deref()), (Role::Vmm, None));
    }

    #[test]
    fn vmm_found_through_kvm_run_with_inferred_indexes() {
        let snap = snapshot();
        let vm = snap.vm_by_pid(200).expect("VMM found through KVM_RUN tids");
        assert_eq!((vm.name.as_str(), vm.kind), ("200", VmmKind::Other));
        assert_eq!(vm.vcpus, vec![203, 207]);
        assert_eq!(vm.vmm_threads, vec![200, 205]);
        let id = &snap.threads[&203];
        assert_eq!((id.role, id.vcpu_index, id.vcpu_index_inferred), (Role::Vcpu, Some(0), true));
        let id = &snap.threads[&207];
        assert_eq!((id.role, id.vcpu_index, id.vcpu_index_inferred), (Role::Vcpu, Some(1), true));
        assert_eq!(snap.threads[&205].role, Role::Vmm);
    }

    #[test]
    fn firecracker_vm() {
        let snap = snapshot();
        let vm = snap.vm_by_name("fc1").expect("firecracker --id");
        assert_eq!((vm.pid, vm.kind, vm.vcpus.clone()), (400, VmmKind::Firecracker, vec![401]));
        assert_eq!(snap.threads[&401].vcpu_index, Some(0));
        assert!(snap.threads[&401].pinned);
    }

    #[test]
    fn other_roles() {
        let snap = snapshot();
        assert_eq!(snap.vms.len(), 3);
        assert_eq!(snap.threads[&1].role, Role::Other);
        assert_eq!(snap.threads[&2].role, Role::HostKernel);
        let ksoftirqd = &snap.threads[&15];
        assert_eq!((ksoftirqd.role, ksoftirqd.pinned), (Role::HostKernel, true));
        assert_eq!(snap.threads[&300].role, Role::Workload);
        let idle = &snap.threads[&0];
        assert_eq!((idle.role, idle.comm.as_str(), idle.pinned), (Role::HostKernel, "swapper", false));
    }

    #[test]
    fn mixed_named_and_unnamed_vcpus_get_free_indexes() {
        let procs = vec![process(
            10,
            Some("/usr/bin/qemu-system-x86_64"),
            &["qemu-system-x86_64"],
            vec![
                thread(10, "qemu-system-x86", &[0, 1]),
                thread(11, "CPU 1/KVM", &[0, 1]),
                thread(12, "qemu-system-x86", &[0, 1]),
                thread(13, "qemu-system-x86", &[0, 1]),
            ],
        )];
        let snap = HostSnapshot::from_samples(&procs, vec![0, 1], &set(&[11, 12, 13]), &set(&[]));
        let vm = snap.vm_by_pid(10).unwrap();
        assert_eq!(vm.name, "10");
        assert_eq!(vm.vcpus, vec![12, 11, 13]);
        assert_eq!(snap.threads[&12].vcpu_index, Some(0));
        assert_eq!(snap.threads[&13].vcpu_index, Some(2));
        assert!(!snap.threads[&11].vcpu_index_inferred);
    }

    #[test]
    fn pinning_ignores_offline_cpus_in_the_mask() {
        // Cpus_allowed_list may list possible-but-offline CPUs: still not pinned.
        let procs = vec![process(5, None, &["x"], vec![thread(5, "x", &[0, 1, 2, 3, 4, 5, 6, 7])])];
        let snap = HostSnapshot::from_samples(&procs, vec![0, 1], &set(&[]), &set(&[]));
        assert!(!snap.threads[&5].pinned);
        let procs = vec![process(5, None, &["x"], vec![thread(5, "x", &[1, 2, 3])])];
        let snap = HostSnapshot::from_samples(&procs, vec![0, 1], &set(&[]), &set(&[]));
        assert!(snap.threads[&5].pinned);
    }

    #[test]
    fn classify_exited_threads() {
        let snap = snapshot();
        let web = Some("web".to_string());
        // Known threads keep their identity.
        assert_eq!(snap.classify(103, 100, "CPU 1/KVM"), (Role::Vcpu, Some(1), web.clone()));
        // A vCPU thread created after discovery.
        assert_eq!(snap.classify(150, 100, "CPU 2/KVM"), (Role::Vcpu, Some(2), web.clone()));
        // Any other thread of a known VMM.
        assert_eq!(snap.classify(151, 100, "worker"), (Role::Vmm, None, web.clone()));
        // A "CPU n/KVM" thread of an unknown process.
        assert_eq!(snap.classify(900, 899, "CPU 3/KVM"), (Role::Vcpu, Some(3), None));
        // Kernel threads tied to a VM.
        assert_eq!(snap.classify(152, 152, "vhost-100"), (Role::Vmm, None, web.clone()));
        assert_eq!(snap.classify(153, 153, "kvm-pit/100"), (Role::Vmm, None, web.clone()));
        assert_eq!(snap.classify(154, 154, "kvm-nx-lpage-re"), (Role::Vmm, None, None));
        // Kernel threads, idle.
        for comm in ["kworker/0:1", "ksoftirqd/0", "migration/1", "rcu_preempt", "swapper/1", "cpuhp/0"] {
            assert_eq!(snap.classify(160, 160, comm), (Role::HostKernel, None, None), "{comm}");
        }
        assert_eq!(snap.classify(0, 0, "swapper/0"), (Role::HostKernel, None, None));
        // Workload and the rest.
        assert_eq!(snap.classify(300, 300, "bzip2"), (Role::Workload, None, None));
        assert_eq!(snap.classify(170, 170, "bash"), (Role::Other, None, None));
        // A reused tid in another process is classified afresh.
        assert_eq!(snap.classify(103, 170, "bash"), (Role::Other, None, None));
        // A KVM_RUN tid of a process found through KVM_RUN.
        assert_eq!(snap.classify(203, 200, "worker"), (Role::Vcpu, Some(0), Some("200".into())));
    }

    #[test]
    fn serializes_to_json() {
        let snap = snapshot();
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["vms"][0]["name"], "web");
        assert_eq!(json["vms"][0]["kind"], "qemu");
        assert_eq!(json["threads"]["103"]["role"], "vcpu");
        assert_eq!(json["threads"]["103"]["vcpu_index"], 1);
        assert_eq!(json["threads"]["0"]["role"], "host_kernel");
        assert!(json.get("kvm_run_tids").is_none());
    }

    /// Discovery on a fake /proc: every file format, a vanished task, a kernel thread.
    #[test]
    fn discover_from_a_fake_proc_tree() {
        use std::fs;
        let root = tempfile::tempdir().unwrap();
        let proc_root = root.path().join("proc");
        let write_task = |pid: u32, tid: u32, comm: &str, flags: u32, cpus: &str| {
            let dir = proc_root.join(format!("{pid}/task/{tid}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("stat"),
                format!("{tid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 1 2 0 0 20 0 1 0\n"),
            )
            .unwrap();
            fs::write(
                dir.join("status"),
                format!("Name:\t{comm}\nTgid:\t{pid}\nPid:\t{tid}\nCpus_allowed_list:\t{cpus}\n"),
            )
            .unwrap();
        };
        write_task(4242, 4242, "qemu-system-x86", 4194560, "0-1");
        write_task(4242, 4243, "CPU 0/KVM", 4194368, "0-1");
        write_task(4242, 4244, "CPU 1/KVM", 4194368, "1");
        fs::write(proc_root.join("4242/cmdline"), b"qemu-system-x86_64\0-name\0guest=fake,debug-threads=on\0").unwrap();
        write_task(7, 7, "kworker/0:0-events", 0x0420_8060, "0");
        // A process whose only task vanished: no stat.
        fs::create_dir_all(proc_root.join("99/task/99")).unwrap();
        // Not processes.
        fs::create_dir_all(proc_root.join("sys")).unwrap();
        fs::write(proc_root.join("uptime"), "1.0 1.0\n").unwrap();
        let online = root.path().join("online");
        fs::write(&online, "0-1\n").unwrap();
        let paths = HostPaths { proc_root, cpu_online: online };

        let snap = HostSnapshot::discover_with(&paths, &set(&[]), &set(&[])).unwrap();
        assert_eq!(snap.online_cpus, vec![0, 1]);
        let vm = snap.vm_by_name("fake").unwrap();
        assert_eq!((vm.pid, vm.vcpus.clone(), vm.vmm_threads.clone()), (4242, vec![4243, 4244], vec![4242]));
        assert!(snap.threads[&4244].pinned);
        assert_eq!(snap.threads[&7].role, Role::HostKernel);
        assert_eq!(snap.threads[&7].comm, "kworker/0:0-events");
        assert!(!snap.threads.contains_key(&99));
        assert_eq!(snap.threads.len(), 5, "4 tasks + the idle task");

        // A malformed Cpus_allowed_list is an error naming the file.
        fs::write(paths.proc_root.join("7/task/7/status"), "Name:\tk\nCpus_allowed_list:\t0-z\n").unwrap();
        let err = HostSnapshot::discover_with(&paths, &set(&[]), &set(&[])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("7/task/7/status") && message.contains("invalid CPU list"), "{message}");

        // No /proc at all.
        let missing = HostPaths { proc_root: root.path().join("nope"), ..paths.clone() };
        let err = HostSnapshot::discover_with(&missing, &set(&[]), &set(&[])).unwrap_err();
        assert!(err.to_string().contains("procfs"), "{err}");
    }
}
