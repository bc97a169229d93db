//! Pure rules on names: which binaries are VMMs, what a VM is called, which thread
//! names mean "vCPU n", which kernel threads belong to a VM, which comms are the
//! host kernel's.

use serde::{Deserialize, Serialize};

/// Which VMM runs a VM.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmKind {
    Qemu,
    CloudHypervisor,
    Firecracker,
    Crosvm,
    /// A process found only because a thread of it enters `KVM_RUN` or is named like
    /// a vCPU (e.g. vmmtrace's own micro-VM, kvmtool, a test program).
    Other,
}

/// Recognises a VMM binary from its comm (at most 15 bytes, so `qemu-system-x86_64`
/// appears as `qemu-system-x86` and `cloud-hypervisor` as `cloud-hyperviso`) or from
/// the basename of its executable or `argv[0]`.
pub fn vmm_kind(comm: &str, exe_basenames: &[&str]) -> Option<VmmKind> {
    fn by_name(name: &str) -> Option<VmmKind> {
        let name = name.strip_suffix(" (deleted)").unwrap_or(name);
        if name.starts_with("qemu-system-") || name == "qemu-kvm" {
            Some(VmmKind::Qemu)
        } else if name.starts_with("cloud-hyperviso") {
            Some(VmmKind::CloudHypervisor)
        } else if name == "firecracker" {
            Some(VmmKind::Firecracker)
        } else if name == "crosvm" {
            Some(VmmKind::Crosvm)
        } else {
            None
        }
    }
    by_name(comm).or_else(|| exe_basenames.iter().find_map(|name| by_name(basename(name))))
}

/// The last path component (`/usr/bin/qemu-system-x86_64` -> `qemu-system-x86_64`).
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The VM's name from the VMM's command line, if it has one.
///
/// * QEMU: `-name guest=NAME,...`, `-name NAME[,...]` (a first element without `=`
///   is the guest name), also `--name` and `-name=...`; `,,` is an escaped comma.
///   `-name debug-threads=on` alone gives no name.
/// * Firecracker: `--id ID` or `--id=ID`.
/// * Others (or no such flag): `None`; the caller names the VM by its pid.
pub fn vm_name_from_cmdline(kind: VmmKind, args: &[String]) -> Option<String> {
    match kind {
        VmmKind::Qemu | VmmKind::Other => option_values(args, &["-name", "--name"]).filter_map(qemu_guest_name).last(),
        VmmKind::Firecracker => option_values(args, &["--id"]).filter(|id| !id.is_empty()).last().map(str::to_string),
        VmmKind::CloudHypervisor | VmmKind::Crosvm => None,
    }
}

/// The values of an option given as `OPT VALUE` or `OPT=VALUE`, in order.
fn option_values<'a>(args: &'a [String], options: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
    let mut iter = args.iter().skip(1).peekable();
    std::iter::from_fn(move || {
        while let Some(arg) = iter.next() {
            for option in options {
                if arg == option {
                    if let Some(value) = iter.next() {
                        return Some(value.as_str());
                    }
                } else if let Some(value) = arg.strip_prefix(option).and_then(|rest| rest.strip_prefix('=')) {
                    return Some(value);
                }
            }
        }
        None
    })
}

/// The guest name in a QEMU `-name` value (QemuOpts syntax with implied `guest=`).
fn qemu_guest_name(value: &str) -> Option<String> {
    for (i, element) in split_qemu_opts(value).into_iter().enumerate() {
        match element.split_once('=') {
            Some(("guest", name)) => return Some(name.to_string()).filter(|n| !n.is_empty()),
            Some(_) => {}
            None if i == 0 && !element.is_empty() => return Some(element),
            None => {}
        }
    }
    None
}

/// Splits a QemuOpts string at single commas; `,,` stands for a literal comma.
fn split_qemu_opts(value: &str) -> Vec<String> {
    let mut elements = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                elements.last_mut().unwrap().push(',');
            } else {
                elements.push(String::new());
            }
        } else {
            elements.last_mut().unwrap().push(c);
        }
    }
    elements
}

/// The vCPU index in a vCPU thread's name, for the naming conventions of each VMM:
/// QEMU `CPU 3/KVM` (with `-name ...,debug-threads=on`, recognised in any process),
/// and, only inside a process of that VMM: cloud-hypervisor `vcpu3`, Firecracker
/// `fc_vcpu 3`, crosvm `crosvm_vcpu3`.
pub fn vcpu_index_from_name(comm: &str, kind: Option<VmmKind>) -> Option<u32> {
    if let Some(index) = comm.strip_prefix("CPU ").and_then(|rest| rest.strip_suffix("/KVM")) {
        return parse_index(index);
    }
    let prefix = match kind? {
        VmmKind::CloudHypervisor => "vcpu",
        VmmKind::Firecracker => "fc_vcpu ",
        VmmKind::Crosvm => "crosvm_vcpu",
        VmmKind::Qemu | VmmKind::Other => return None,
    };
    comm.strip_prefix(prefix).and_then(parse_index)
}

fn parse_index(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The owner of a kernel thread (or vhost worker) that works for a VM, recognised by
/// name: `vhost-<pid>` (a kernel thread before Linux 6.4, a thread inside the VMM
/// process since), `kvm-pit/<pid>`, `kvm-nx-lpage-recovery-<pid>` (a kernel thread
/// before 6.13, with its full name in /proc since 5.17), and the truncated form seen in
/// 15-byte comms (`kvm-nx-lpage-re`), whose owner is unknown.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VmKernelThread {
    Owner(u32),
    UnknownOwner,
}

/// Whether a thread name says it works for a VM (see [`VmKernelThread`]).
pub fn vm_thread_owner(comm: &str) -> Option<VmKernelThread> {
    for prefix in ["vhost-", "kvm-pit/", "kvm-nx-lpage-recovery-"] {
        if let Some(rest) = comm.strip_prefix(prefix) {
            return match parse_index(rest) {
                Some(pid) => Some(VmKernelThread::Owner(pid)),
                // "kvm-nx-lpage-recovery-12" truncated to 15 bytes loses the pid.
                None if prefix == "kvm-nx-lpage-recovery-" => Some(VmKernelThread::UnknownOwner),
                None => None,
            };
        }
    }
    if "kvm-nx-lpage-recovery".starts_with(comm) && comm.starts_with("kvm-nx-lpage") {
        return Some(VmKernelThread::UnknownOwner);
    }
    None
}

/// True if a comm (as the probes see it: at most 15 bytes) is a well-known host
/// kernel thread: kworker, ksoftirqd, migration, rcu*, swapper (idle), cpuhp, ...
/// Used only for threads that exited before discovery could read their flags.
pub fn is_host_kernel_comm(comm: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "kworker/",
        "ksoftirqd/",
        "migration/",
        "rcu_",
        "rcub/",
        "rcuc/",
        "rcuog/",
        "rcuop/",
        "rcuos/",
        "swapper/",
        "cpuhp/",
        "idle_inject/",
        "watchdog/",
        "irq/",
        "kcompactd",
        "kswapd",
        "jbd2/",
        "scsi_eh_",
        "scsi_tmf_",
        "pr/",
        "kthrotld",
        "kauditd",
        "khungtaskd",
        "oom_reaper",
        "ksmd",
        "khugepaged",
        "kthreadd",
        "kdevtmpfs",
        "kintegrityd",
        "kblockd",
        "ext4-rsv-conver",
    ];
    comm == "swapper" || PREFIXES.iter().any(|prefix| comm.starts_with(prefix))
}

/// What a VMM thread that is not a vCPU does, for the operator: QEMU's main loop, its
/// RCU thread, an iothread, a thread-pool worker, KVM's own workers, vhost.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmThreadKind {
    /// The VMM process's main thread (QEMU's main loop: devices, timers, QMP).
    MainLoop,
    /// QEMU's `call_rcu` thread.
    Rcu,
    /// A QEMU iothread (`IO <id>`), including QEMU's own `IO mon_iothread`.
    IoThread,
    /// A QEMU thread-pool worker (`worker`).
    Worker,
    /// KVM's workers for the VM: `kvm-nx-lpage-recovery`, `kvm-pit`.
    KvmWorker,
    /// A vhost worker (`vhost-<pid>`).
    Vhost,
    #[default]
    Other,
}

/// The kind of a VMM thread (not a vCPU) of a process of `kind` whose main thread is
/// called `process_comm`. `vcpus_named`: the process names its vCPU threads (QEMU's
/// `debug-threads=on`); QEMU's RCU thread starts before QEMU reads that option, so it
/// often keeps the process's name: in a QEMU that names its threads, a thread other
/// than the main one still carrying the process's name is the RCU thread.
pub fn vmm_thread_kind(
    kind: VmmKind,
    comm: &str,
    is_main: bool,
    process_comm: &str,
    vcpus_named: bool,
) -> VmmThreadKind {
    if is_main {
        return VmmThreadKind::MainLoop;
    }
    if comm.starts_with("vhost-") {
        return VmmThreadKind::Vhost;
    }
    if comm.starts_with("kvm-nx-lpage") || comm.starts_with("kvm-pit/") {
        return VmmThreadKind::KvmWorker;
    }
    if kind != VmmKind::Qemu {
        return VmmThreadKind::Other;
    }
    match comm {
        "call_rcu" => VmmThreadKind::Rcu,
        "worker" => VmmThreadKind::Worker,
        _ if comm.starts_with("IO ") => VmmThreadKind::IoThread,
        _ if vcpus_named && comm == process_comm => VmmThreadKind::Rcu,
        _ => VmmThreadKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn vmm_binaries() {
        assert_eq!(vmm_kind("qemu-system-x86", &[]), Some(VmmKind::Qemu));
        assert_eq!(vmm_kind("qemu-system-aar", &[]), Some(VmmKind::Qemu));
        assert_eq!(vmm_kind("qemu-kvm", &[]), Some(VmmKind::Qemu));
        assert_eq!(vmm_kind("cloud-hyperviso", &[]), Some(VmmKind::CloudHypervisor));
        assert_eq!(vmm_kind("firecracker", &[]), Some(VmmKind::Firecracker));
        assert_eq!(vmm_kind("crosvm", &[]), Some(VmmKind::Crosvm));
        // Renamed main thread (e.g. QEMU's -name process=vm1): the exe still tells.
        assert_eq!(vmm_kind("vm1", &["/usr/bin/qemu-system-x86_64"]), Some(VmmKind::Qemu));
        assert_eq!(vmm_kind("vm1", &["/usr/libexec/qemu-kvm (deleted)"]), Some(VmmKind::Qemu));
        assert_eq!(vmm_kind("x", &["/opt/ch/cloud-hypervisor"]), Some(VmmKind::CloudHypervisor));
        assert_eq!(vmm_kind("bash", &["/usr/bin/bash"]), None);
        assert_eq!(vmm_kind("qemu-img", &["/usr/bin/qemu-img"]), None);
        assert_eq!(vmm_kind("firecracker-x", &[]), None);
    }

    #[test]
    fn qemu_names() {
        let q = |list: &[&str]| vm_name_from_cmdline(VmmKind::Qemu, &args(list));
        assert_eq!(q(&["qemu", "-name", "guest=web1,debug-threads=on"]), Some("web1".into()));
        assert_eq!(q(&["qemu", "-name", "web2"]), Some("web2".into()));
        assert_eq!(q(&["qemu", "-name", "web3,debug-threads=on"]), Some("web3".into()));
        assert_eq!(q(&["qemu", "-name", "debug-threads=on,guest=web4"]), Some("web4".into()));
        assert_eq!(q(&["qemu", "-name", "debug-threads=on"]), None);
        assert_eq!(q(&["qemu", "--name", "guest=web5"]), Some("web5".into()));
        assert_eq!(q(&["qemu", "-name=guest=web6"]), Some("web6".into()));
        assert_eq!(q(&["qemu", "-name", "guest=a,,b,process=qemu-a"]), Some("a,b".into()));
        assert_eq!(q(&["qemu", "-name", "guest=with space"]), Some("with space".into()));
        assert_eq!(q(&["qemu", "-m", "64", "-smp", "2"]), None);
        assert_eq!(q(&["qemu", "-name"]), None);
        assert_eq!(q(&["qemu", "-name", "guest="]), None);
        // argv[0] is never an option, and "-names" is not "-name".
        assert_eq!(q(&["-name", "x"]), None);
        assert_eq!(q(&["qemu", "-names", "x"]), None);
        // libvirt's style.
        let libvirt = [
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=debian12,debug-threads=on",
            "-S",
            "-object",
            "{\"qom-type\":\"secret\"}",
            "-machine",
            "pc-q35-7.2,usb=off",
        ];
        assert_eq!(q(&libvirt), Some("debian12".into()));
    }

    #[test]
    fn other_vmm_names() {
        let fc = args(&["firecracker", "--api-sock", "/tmp/fc.sock", "--id", "fc-7"]);
        assert_eq!(vm_name_from_cmdline(VmmKind::Firecracker, &fc), Some("fc-7".into()));
        let fc = args(&["firecracker", "--id=fc-8"]);
        assert_eq!(vm_name_from_cmdline(VmmKind::Firecracker, &fc), Some("fc-8".into()));
        let fc = args(&["firecracker", "--api-sock", "/tmp/fc.sock"]);
        assert_eq!(vm_name_from_cmdline(VmmKind::Firecracker, &fc), None);
        let ch = args(&["cloud-hypervisor", "--kernel", "vmlinux", "--cpus", "boot=2"]);
        assert_eq!(vm_name_from_cmdline(VmmKind::CloudHypervisor, &ch), None);
        let other = args(&["microvm", "-name", "guest=m1"]);
        assert_eq!(vm_name_from_cmdline(VmmKind::Other, &other), Some("m1".into()));
    }

    #[test]
    fn vcpu_thread_names() {
        assert_eq!(vcpu_index_from_name("CPU 0/KVM", Some(VmmKind::Qemu)), Some(0));
        assert_eq!(vcpu_index_from_name("CPU 12/KVM", None), Some(12));
        assert_eq!(vcpu_index_from_name("CPU 1/TCG", Some(VmmKind::Qemu)), None);
        assert_eq!(vcpu_index_from_name("CPU x/KVM", None), None);
        assert_eq!(vcpu_index_from_name("CPU /KVM", None), None);
        assert_eq!(vcpu_index_from_name("vcpu3", Some(VmmKind::CloudHypervisor)), Some(3));
        assert_eq!(vcpu_index_from_name("vcpu3", None), None);
        assert_eq!(vcpu_index_from_name("vcpu3", Some(VmmKind::Qemu)), None);
        assert_eq!(vcpu_index_from_name("fc_vcpu 1", Some(VmmKind::Firecracker)), Some(1));
        assert_eq!(vcpu_index_from_name("crosvm_vcpu2", Some(VmmKind::Crosvm)), Some(2));
        assert_eq!(vcpu_index_from_name("qemu-system-x86", Some(VmmKind::Qemu)), None);
    }

    #[test]
    fn qemu_thread_kinds() {
        let q = |comm, is_main, named| vmm_thread_kind(VmmKind::Qemu, comm, is_main, "qemu-system-x86", named);
        assert_eq!(q("qemu-system-x86", true, true), VmmThreadKind::MainLoop);
        assert_eq!(q("call_rcu", false, true), VmmThreadKind::Rcu);
        assert_eq!(q("qemu-system-x86", false, true), VmmThreadKind::Rcu);
        // Without debug-threads=on every thread has the process's name: unknown.
        assert_eq!(q("qemu-system-x86", false, false), VmmThreadKind::Other);
        assert_eq!(q("IO iothread0", false, true), VmmThreadKind::IoThread);
        assert_eq!(q("IO mon_iothread", false, true), VmmThreadKind::IoThread);
        assert_eq!(q("worker", false, true), VmmThreadKind::Worker);
        assert_eq!(q("kvm-nx-lpage-re", false, true), VmmThreadKind::KvmWorker);
        assert_eq!(q("vhost-4242", false, true), VmmThreadKind::Vhost);
        assert_eq!(q("vnc_worker", false, true), VmmThreadKind::Other);
        let other = vmm_thread_kind(VmmKind::Other, "vmmtrace", false, "vmmtrace", true);
        assert_eq!(other, VmmThreadKind::Other);
    }

    #[test]
    fn vm_kernel_threads() {
        assert_eq!(vm_thread_owner("vhost-4242"), Some(VmKernelThread::Owner(4242)));
        assert_eq!(vm_thread_owner("kvm-pit/4242"), Some(VmKernelThread::Owner(4242)));
        assert_eq!(vm_thread_owner("kvm-nx-lpage-recovery-4242"), Some(VmKernelThread::Owner(4242)));
        assert_eq!(vm_thread_owner("kvm-nx-lpage-re"), Some(VmKernelThread::UnknownOwner));
        assert_eq!(vm_thread_owner("kvm-nx-lpage-recovery"), Some(VmKernelThread::UnknownOwner));
        assert_eq!(vm_thread_owner("kvm-nx-lpage-recovery-4"), Some(VmKernelThread::Owner(4)));
        assert_eq!(vm_thread_owner("vhost-"), None);
        assert_eq!(vm_thread_owner("vhost-net"), None);
        assert_eq!(vm_thread_owner("kworker/0:1"), None);
        assert_eq!(vm_thread_owner("kvm"), None);
    }

    #[test]
    fn host_kernel_comms() {
        for comm in [
            "kworker/0:1",
            "kworker/u8:2-events_unbound",
            "ksoftirqd/1",
            "migration/0",
            "rcu_preempt",
            "rcu_sched",
            "rcuop/1",
            "swapper/0",
            "swapper",
            "cpuhp/1",
            "kthreadd",
            "kcompactd0",
            "kswapd0",
            "jbd2/vda1-8",
            "irq/24-virtio0",
            "idle_inject/0",
        ] {
            assert!(is_host_kernel_comm(comm), "{comm}");
        }
        for comm in ["bash", "CPU 0/KVM", "qemu-system-x86", "vhost-12", "sshd", "rcu"] {
            assert!(!is_host_kernel_comm(comm), "{comm}");
        }
    }
}
