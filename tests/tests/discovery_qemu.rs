//! Host discovery against a real QEMU/KVM process.
//!
//! Starts Debian's `qemu-system-x86_64 -accel kvm` with 2 vCPUs, stopped (`-S`): the
//! vCPU threads exist (QEMU creates them at machine init, before the guest runs), and
//! `-name guest=NAME,debug-threads=on` names them "CPU 0/KVM" and "CPU 1/KVM". The
//! guest never runs, so the test costs no guest CPU time even under the PVM backend.
//!
//! Needs qemu-system-x86 (`apt-get install qemu-system-x86`) and a usable /dev/kvm;
//! without them the tests fail, saying so.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vmmtrace::host::{HostSnapshot, Role, VmmKind};
use vmmtrace_tests::require_kvm;

/// How long QEMU may take to create its vCPU threads.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// Kills and reaps QEMU when dropped, also when the test panics.
struct Qemu {
    child: Child,
}

impl Qemu {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills QEMU and returns what it wrote to stderr (for failure messages).
    fn kill_and_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_qemu() -> PathBuf {
    vmm_qemu::find_qemu(None).unwrap_or_else(|e| panic!("this test needs QEMU: {e}"))
}

fn unique_name() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("vmmtrace-test-{}-{nanos:08x}", std::process::id())
}

/// Starts a stopped 2-vCPU KVM guest; `name_option` is the value of `-name`.
fn start_qemu(name_option: &str) -> Qemu {
    let qemu = find_qemu();
    if let Err(err) = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "cannot open /dev/kvm ({err}): this test starts a KVM guest; run it as root \
             (or in the kvm group) on a host with KVM enabled"
        );
    }
    let child = Command::new(&qemu)
        .args(["-accel", "kvm", "-name", name_option])
        .args(["-machine", "microvm", "-m", "64", "-smp", "2", "-S"])
        .args(["-display", "none", "-nodefaults", "-no-user-config"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", qemu.display()));
    Qemu { child }
}

/// The comms of the process's threads, by tid.
fn thread_comms(pid: u32) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut comms: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let tid = entry.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((tid, comm.trim_end().to_string()))
        })
        .collect();
    comms.sort();
    comms
}

/// Polls /proc until `ready` holds for QEMU's threads, QEMU exits, or the deadline
/// passes (then panics with QEMU's stderr).
fn wait_for_threads(qemu: &mut Qemu, what: &str, ready: impl Fn(&[(u32, String)]) -> bool) {
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        let comms = thread_comms(qemu.pid());
        if ready(&comms) {
            return;
        }
        if let Ok(Some(status)) = qemu.child.try_wait() {
            let stderr = qemu.kill_and_stderr();
            panic!("QEMU exited ({status}) before {what}; its stderr:\n{stderr}");
        }
        if start.elapsed() > STARTUP_DEADLINE {
            let stderr = qemu.kill_and_stderr();
            panic!("no {what} after {STARTUP_DEADLINE:?}; threads: {comms:?}; QEMU's stderr:\n{stderr}");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

fn vcpu_thread_count(comms: &[(u32, String)]) -> usize {
    comms.iter().filter(|(_, comm)| comm.starts_with("CPU ") && comm.ends_with("/KVM")).count()
}

#[test]
fn discovers_qemu_vm_by_name_with_named_vcpus() {
    require_kvm!();
    let name = unique_name();
    let mut qemu = start_qemu(&format!("guest={name},debug-threads=on"));
    let pid = qemu.pid();
    wait_for_threads(&mut qemu, "2 \"CPU n/KVM\" threads", |comms| vcpu_thread_count(comms) == 2);

    let snapshot = HostSnapshot::discover(&HashSet::new(), &HashSet::new())
        .unwrap_or_else(|err| panic!("discovery failed: {err}"));

    let vm = snapshot.vm_by_name(&name).unwrap_or_else(|| {
        let names: Vec<_> = snapshot.vms.iter().map(|vm| (&vm.name, vm.pid)).collect();
        panic!("VM {name:?} not discovered; VMs found: {names:?}")
    });
    assert_eq!(vm.pid, pid);
    assert_eq!(vm.kind, VmmKind::Qemu);
    assert_eq!(vm.vcpus.len(), 2, "vCPU threads of {vm:?}");
    for (index, tid) in vm.vcpus.iter().enumerate() {
        let thread = &snapshot.threads[tid];
        assert_eq!(thread.role, Role::Vcpu, "{thread:?}");
        assert_eq!(thread.vcpu_index, Some(index as u32), "{thread:?}");
        assert!(!thread.vcpu_index_inferred, "{thread:?}");
        assert_eq!(thread.comm, format!("CPU {index}/KVM"));
        assert_eq!(thread.vm.as_deref(), Some(name.as_str()));
        assert_eq!(thread.pid, pid);
    }
    let main = &snapshot.threads[&pid];
    assert_eq!(main.role, Role::Vmm, "{main:?}");
    assert_eq!(main.vm.as_deref(), Some(name.as_str()));
    assert!(vm.vmm_threads.contains(&pid));
    // Every thread of the process is a vCPU or a VMM thread of this VM.
    for (tid, _) in thread_comms(pid) {
        let Some(thread) = snapshot.threads.get(&tid) else {
            continue;
        };
        assert!(matches!(thread.role, Role::Vcpu | Role::Vmm), "{thread:?}");
        assert_eq!(thread.vm_pid, Some(pid), "{thread:?}");
    }
    // Threads that exit later are classified the same way from their comm and pid.
    assert_eq!(snapshot.classify(u32::MAX - 1, pid, "CPU 1/KVM"), (Role::Vcpu, Some(1), Some(name.clone())));
    assert_eq!(snapshot.classify(u32::MAX - 2, pid, "worker"), (Role::Vmm, None, Some(name)));
}

/// Without debug-threads=on the vCPU threads are not named: discovery still finds the
/// VM by binary and `-name`, and the threads the probes saw entering KVM_RUN become
/// vCPUs with indexes inferred in tid order.
#[test]
fn discovers_qemu_vm_without_thread_names() {
    require_kvm!();
    let name = unique_name();
    let mut qemu = start_qemu(&name);
    let pid = qemu.pid();
    // Main thread, call_rcu thread and 2 vCPU threads, all named "qemu-system-x86".
    wait_for_threads(&mut qemu, "4 threads", |comms| comms.len() >= 4);

    let snapshot = HostSnapshot::discover(&HashSet::new(), &HashSet::new())
        .unwrap_or_else(|err| panic!("discovery failed: {err}"));
    let vm = snapshot.vm_by_name(&name).expect("VM found by QEMU binary and -name");
    assert_eq!(vm.pid, pid);
    assert!(vm.vcpus.is_empty(), "no vCPU can be told without names or KVM_RUN: {vm:?}");

    // Pretend the probes saw the two highest tids enter KVM_RUN (QEMU creates the
    // vCPU threads last).
    let tids: Vec<u32> = thread_comms(pid).into_iter().map(|(tid, _)| tid).collect();
    let kvm_run: HashSet<u32> = tids[tids.len() - 2..].iter().copied().collect();
    let snapshot = HostSnapshot::discover(&kvm_run, &HashSet::new()).unwrap();
    let vm = snapshot.vm_by_pid(pid).unwrap();
    assert_eq!(vm.vcpus, tids[tids.len() - 2..].to_vec());
    for (index, tid) in vm.vcpus.iter().enumerate() {
        let thread = &snapshot.threads[tid];
        assert_eq!((thread.role, thread.vcpu_index), (Role::Vcpu, Some(index as u32)));
        assert!(thread.vcpu_index_inferred);
    }
    assert_eq!(snapshot.threads[&pid].role, Role::Vmm);
}
