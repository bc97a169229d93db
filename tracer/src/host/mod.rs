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

mod names;
mod parse;
mod procfs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

pub use names::VmmKind;
pub use parse::{CpuListError, PF_KTHREAD, format_cpu_list, parse_cpu_list};
pub use procfs::HostPaths;

use names::{VmKernelThread, is_host_kernel_comm, vcpu_index_from_name, vm_name_from_cmdline};

/// Why host discovery failed. Tasks that exit during discovery are not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read {path}: {source}; host discovery needs procfs on /proc and sysfs on /sys \
         (run vmmtrace on the host as root, or in a container that shares the host's /proc)"
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

/// One process as read from /proc: the input of [`HostSnapshot::from_samples`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProcessSample {
    pub pid: u32,
    /// Target of /proc/<pid>/exe (absent for kernel threads).
    pub exe: Option<String>,
    /// /proc/<pid>/cmdline, split at NULs.
    pub cmdline: Vec<String>,
    /// Sorted by tid; the thread with `tid == pid` is the main thread.
    pub threads: Vec<ThreadSample>,
}

/// One thread as read from /proc/<pid>/task/<tid>/{stat,status}.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ThreadSample {
    pub tid: u32,
    pub comm: String,
    /// `PF_KTHREAD` is set in its stat flags.
    pub kernel_thread: bool,
    /// `Cpus_allowed_list`, parsed.
    pub cpus_allowed: Vec<u32>,
}

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
    pub fn discover(
        kvm_run_tids: &HashSet<u32>,
        workload_tids: &HashSet<u32>,
    ) -> Result<HostSnapshot, Error> {
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
    /// Rules, in order of precedence:
    /// 1. A process is a VMM if its comm or executable is qemu-system-*, qemu-kvm,
    ///    cloud-hypervisor, firecracker or crosvm, or if one of its threads is in
    ///    `kvm_run_tids` or is named "CPU <n>/KVM". Its threads named as vCPUs
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
        let online: HashSet<u32> = online_cpus.iter().copied().collect();
        let pinned = |affinity: &[u32]| {
            let allowed_online = affinity.iter().filter(|cpu| online.contains(cpu)).count();
            !online.is_empty() && allowed_online < online.len()
        };
        let mut snapshot = HostSnapshot {
            online_cpus: online_cpus.clone(),
            kvm_run_tids: kvm_run_tids.clone(),
            workload_tids: workload_tids.clone(),
            ..HostSnapshot::default()
        };
        let identity = |thread: &ThreadSample, pid: u32, role: Role| ThreadIdentity {
            tid: thread.tid,
            pid,
            comm: thread.comm.clone(),
            role,
            vcpu_index: None,
            vcpu_index_inferred: false,
            vm: None,
            vm_pid: None,
            affinity: thread.cpus_allowed.clone(),
            pinned: pinned(&thread.cpus_allowed),
            kernel_thread: thread.kernel_thread,
        };

        // Pass 1: VMM processes and their threads.
        let mut vm_names: BTreeMap<u32, String> = BTreeMap::new();
        for process in processes {
            let Some(kind) = vmm_kind_of(process, kvm_run_tids) else { continue };
            let name = vm_name_from_cmdline(kind, &process.cmdline)
                .unwrap_or_else(|| process.pid.to_string());
            let mut vm = Vm {
                name: name.clone(),
                pid: process.pid,
                kind,
                vcpus: Vec::new(),
                vmm_threads: Vec::new(),
            };
            // vCPUs: (index from name, tid).
            let mut named: Vec<(u32, u32)> = Vec::new();
            let mut unnamed: Vec<u32> = Vec::new();
            for thread in &process.threads {
                let mut id = identity(thread, process.pid, Role::Vmm);
                id.vm = Some(name.clone());
                id.vm_pid = Some(process.pid);
                match vcpu_index_from_name(&thread.comm, Some(kind)) {
                    Some(index) => {
                        id.role = Role::Vcpu;
                        id.vcpu_index = Some(index);
                        named.push((index, thread.tid));
                    }
                    None if kvm_run_tids.contains(&thread.tid) => {
                        id.role = Role::Vcpu;
                        unnamed.push(thread.tid);
                    }
                    None => vm.vmm_threads.push(thread.tid),
                }
                snapshot.threads.insert(thread.tid, id);
            }
            let used: HashSet<u32> = named.iter().map(|(index, _)| *index).collect();
            let mut free = (0u32..).filter(|index| !used.contains(index));
            unnamed.sort_unstable();
            for tid in unnamed {
                let index = free.next().expect("unbounded range");
                let id = snapshot.threads.get_mut(&tid).expect("inserted above");
                id.vcpu_index = Some(index);
                id.vcpu_index_inferred = true;
                named.push((index, tid));
            }
            named.sort_unstable();
            vm.vcpus = named.into_iter().map(|(_, tid)| tid).collect();
            vm_names.insert(process.pid, name);
            snapshot.vms.push(vm);
        }

        // Pass 2: everything else.
        for process in processes {
            if vm_names.contains_key(&process.pid) {
                continue;
            }
            for thread in &process.threads {
                let mut id = identity(thread, process.pid, Role::Other);
                if thread.kernel_thread {
                    id.role = Role::HostKernel;
                    match names::vm_thread_owner(&thread.comm) {
                        Some(VmKernelThread::Owner(owner)) => {
                            id.role = Role::Vmm;
                            if let Some(name) = vm_names.get(&owner) {
                                id.vm = Some(name.clone());
                                id.vm_pid = Some(owner);
                                let vm = snapshot.vms.iter_mut().find(|vm| vm.pid == owner);
                                vm.expect("vm_names and vms agree").vmm_threads.push(thread.tid);
                            }
                        }
                        Some(VmKernelThread::UnknownOwner) => id.role = Role::Vmm,
                        None => {}
                    }
                } else if workload_tids.contains(&thread.tid) {
                    id.role = Role::Workload;
                }
                snapshot.threads.insert(thread.tid, id);
            }
        }
        for vm in &mut snapshot.vms {
            vm.vmm_threads.sort_unstable();
        }

        // The idle tasks (pid 0 on every CPU) never appear in /proc.
        snapshot.threads.entry(0).or_insert_with(|| ThreadIdentity {
            tid: 0,
            pid: 0,
            comm: "swapper".to_string(),
            role: Role::HostKernel,
            vcpu_index: None,
            vcpu_index_inferred: false,
            vm: None,
            vm_pid: None,
            affinity: online_cpus.clone(),
            pinned: false,
            kernel_thread: true,
        });
        snapshot
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
    /// Otherwise: tid 0 is `HostKernel`; a "CPU <n>/KVM" comm or a tid that entered
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
        let vcpu_index = vcpu_index_from_name(comm, vm.map(|vm| vm.kind));
        if vcpu_index.is_some() || self.kvm_run_tids.contains(&tid) {
            return (Role::Vcpu, vcpu_index, vm.map(|vm| vm.name.clone()));
        }
        if let Some(vm) = vm {
            return (Role::Vmm, None, Some(vm.name.clone()));
        }
        match names::vm_thread_owner(comm) {
            Some(VmKernelThread::Owner(owner)) => {
                return (Role::Vmm, None, self.vm_by_pid(owner).map(|vm| vm.name.clone()));
            }
            Some(VmKernelThread::UnknownOwner) => return (Role::Vmm, None, None),
            None => {}
        }
        if self.workload_tids.contains(&tid) {
            return (Role::Workload, None, None);
        }
        if is_host_kernel_comm(comm) {
            return (Role::HostKernel, None, None);
        }
        (Role::Other, None, None)
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
    let runs_vcpus = process.threads.iter().any(|t| {
        kvm_run_tids.contains(&t.tid) || vcpu_index_from_name(&t.comm, None).is_some()
    });
    runs_vcpus.then_some(VmmKind::Other)
}
