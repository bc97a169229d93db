//! `--env vm`: each job runs inside one of the user's own VMs, started by the user's
//! command (`--vm NAME=COMMAND`, e.g. an ssh command line). Job i runs in the i-th VM
//! by name order. vmmtrace finds the VM's threads on the host by its name (QEMU's
//! `-name guest=NAME` or Firecracker's `--id`, as host discovery names VMs; or, for a
//! process standing in for a VM, its comm), and pins them while the job runs as the
//! qemu environment's VMM does: `vcpu` puts the vCPU threads on the job's CPU and lets
//! the VMM's other threads float over the experiment's CPUs, `vcpu+vmm` confines
//! those too. The threads' affinities are put back after each run.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use super::{
    env::{Launch, job_cpus},
    plan::Pinning,
    workloads::Step,
};
use crate::host::{VmmKind, parse_cmdline, parse_cpu_list, vcpu_index_from_name, vm_name_from_cmdline, vmm_kind};

/// One of the user's VMs and the command that runs a program inside it.
#[derive(Clone, Debug, PartialEq)]
pub struct UserVm {
    pub name: String,
    pub command: String,
}

/// The command line that runs `argv` in the VM: COMMAND with the program and its
/// arguments (each shell-quoted) in place of `{}`, or after it.
pub fn command_line(command: &str, argv: &[String]) -> String {
    let program = argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    if command.contains("{}") { command.replace("{}", &program) } else { format!("{command} {program}") }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How a step starts in a user's VM: through `sh -c` on the host, the input file on
/// stdin (the VM does not see the host's files), the output from its stdout. The host
/// side of the command (ssh) floats over the experiment's CPUs: it is not the VM.
pub fn launch(vm: &UserVm, step: &Step, cpus: &[u32]) -> (Launch, Step) {
    let mut step = step.clone();
    if step.stdin.is_none()
        && let Some(last) = step.argv.last().filter(|a| a.starts_with('/') && Path::new(a.as_str()).is_file())
    {
        step.stdin = Some(PathBuf::from(last));
        step.argv.pop();
    }
    let argv = vec!["/bin/sh".into(), "-c".into(), command_line(&vm.command, &step.argv)];
    (Launch { argv, affinity: cpus.to_vec(), truth: None }, step)
}

/// Whether a process is VM `name`: a VMM (by its comm or executable) that its command
/// line names so, or a process of that name standing in for a VM.
pub fn is_vm_named(name: &str, comm: &str, cmdline: &[String]) -> Option<VmmKind> {
    let argv0 = cmdline.first().map(|a| crate::host::basename(a)).unwrap_or("");
    match vmm_kind(comm, &[argv0]) {
        Some(kind) if vm_name_from_cmdline(kind, cmdline).as_deref() == Some(name) => Some(kind),
        _ if comm == name => Some(VmmKind::Other),
        _ => None,
    }
}

/// Whether a thread of a VMM of `kind` is a vCPU, by its name; in a process standing
/// in for a VM (`Other`), every thread is the job's.
pub fn is_vcpu_thread(kind: VmmKind, comm: &str) -> bool {
    kind == VmmKind::Other || comm.starts_with("CPU ") || vcpu_index_from_name(comm, Some(kind)).is_some()
}

/// Where the threads of job `index`'s VM go.
#[derive(Clone, Debug, PartialEq)]
struct Placement {
    vcpus: Vec<u32>,
    others: Vec<u32>,
}

fn placement(pinning: Pinning, index: usize, cpus: &[u32]) -> Placement {
    let own = job_cpus(pinning, index, cpus);
    let others = if pinning == Pinning::VcpuVmm { own.clone() } else { cpus.to_vec() };
    Placement { vcpus: own, others }
}

/// Finds the VMs' processes by name and pins their threads; remembers what it changed.
struct Pinner<'a> {
    names: &'a [String],
    places: Vec<Placement>,
    /// pid -> (comm when read, the job whose VM it is and its kind).
    seen: HashMap<u32, (String, Option<(usize, VmmKind)>)>,
    /// tid -> (pid, the CPUs it was given).
    given: HashMap<u32, (u32, Vec<u32>)>,
    /// tid -> (pid, its affinity before the first change).
    original: HashMap<u32, (u32, Vec<u32>)>,
    found: Vec<BTreeSet<u32>>,
}

impl Pinner<'_> {
    fn scan(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        let pids: HashSet<u32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        self.seen.retain(|pid, _| pids.contains(pid));
        for pid in pids {
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
            let comm = comm.trim_end().to_string();
            if self.seen.get(&pid).is_none_or(|(c, _)| *c != comm) {
                let cmdline = parse_cmdline(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default());
                let job = self.names.iter().enumerate().find_map(|(i, n)| Some((i, is_vm_named(n, &comm, &cmdline)?)));
                self.seen.insert(pid, (comm, job));
            }
            if let Some((_, Some((job, kind)))) = self.seen.get(&pid).cloned() {
                self.found[job].insert(pid);
                self.pin_threads(pid, job, kind);
            }
        }
    }

    fn pin_threads(&mut self, pid: u32, job: usize, kind: VmmKind) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
        for tid in tasks.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            let place = &self.places[job];
            let want = if is_vcpu_thread(kind, comm.trim_end()) { &place.vcpus } else { &place.others };
            if self.given.get(&tid).is_some_and(|(p, cpus)| *p == pid && cpus == want) {
                continue;
            }
            if !self.original.contains_key(&tid)
                && let Some(before) = affinity_of(pid, tid)
            {
                self.original.insert(tid, (pid, before));
            }
            if crate::sys::set_affinity(tid, want) {
                self.given.insert(tid, (pid, want.clone()));
            }
        }
    }

    /// Puts back the affinity of every thread still alive in the same process.
    fn restore(&self) {
        for (tid, (pid, cpus)) in &self.original {
            if Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
                crate::sys::set_affinity(*tid, cpus);
            }
        }
    }
}

fn affinity_of(pid: u32, tid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list.trim()).ok()
}

/// How often the VMs' threads are looked for while the jobs run (new VMs, new threads).
const SCAN_EVERY: Duration = Duration::from_millis(50);

/// Runs `jobs` with the VMs `names` (one per job) pinned as `pinning` says, and
/// returns its result with the VMM processes found for each job.
pub fn with_pinned_vms<T: Send>(
    names: &[String],
    pinning: Pinning,
    cpus: &[u32],
    jobs: impl FnOnce() -> T + Send,
) -> (T, Vec<BTreeSet<u32>>) {
    let mut pinner = Pinner {
        names,
        places: (0..names.len()).map(|i| placement(pinning, i, cpus)).collect(),
        seen: HashMap::new(),
        given: HashMap::new(),
        original: HashMap::new(),
        found: vec![BTreeSet::new(); names.len()],
    };
    // VMs already running are placed before their jobs start.
    pinner.scan();
    let done = AtomicBool::new(false);
    let done = &done;
    std::thread::scope(|scope| {
        let watcher = scope.spawn(move || {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(SCAN_EVERY);
                pinner.scan();
            }
            pinner
        });
        let out = jobs();
        done.store(true, Ordering::SeqCst);
        let pinner = watcher.join().expect("the VM pinner does not panic");
        pinner.restore();
        (out, pinner.found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_program_goes_in_place_of_braces_or_after_the_command_quoted() {
        let argv = args("/usr/bin/bzip2 -9 -c");
        assert_eq!(command_line("ssh web", &argv), "ssh web /usr/bin/bzip2 -9 -c");
        assert_eq!(command_line("ssh web 'nice {}'", &argv), "ssh web 'nice /usr/bin/bzip2 -9 -c'");
        assert_eq!(command_line("x", &["a b".into(), "it's".into()]), r"x 'a b' 'it'\''s'");
    }

    #[test]
    fn in_a_vm_the_input_file_comes_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("corpus");
        std::fs::write(&input, "x").unwrap();
        let step = Step {
            argv: vec!["/usr/bin/bzip2".into(), "-9".into(), "-c".into(), input.to_string_lossy().into()],
            stdin: None,
            stdout: dir.path().join("out"),
        };
        let vm = UserVm { name: "web".into(), command: "ssh web".into() };
        let (l, s) = launch(&vm, &step, &[0, 1]);
        assert_eq!(l.argv, ["/bin/sh", "-c", "ssh web /usr/bin/bzip2 -9 -c"]);
        assert_eq!(s.stdin, Some(input));
        assert_eq!(l.affinity, [0, 1]);
    }

    #[test]
    fn a_vm_is_found_by_its_qemu_name_or_a_stand_in_by_its_comm() {
        let qemu = args("/usr/bin/qemu-system-x86_64 -name guest=web,debug-threads=on -m 1G");
        assert_eq!(is_vm_named("web", "qemu-system-x86", &qemu), Some(VmmKind::Qemu));
        assert_eq!(is_vm_named("db", "qemu-system-x86", &qemu), None);
        // A wrapper that passes the name on is not the VM.
        assert_eq!(is_vm_named("web", "vmmtrace", &args("vmmtrace qemu --name web --")), None);
        assert_eq!(is_vm_named("web", "web", &args("./web")), Some(VmmKind::Other));
        assert!(is_vcpu_thread(VmmKind::Qemu, "CPU 0/TCG"));
        assert!(is_vcpu_thread(VmmKind::Qemu, "CPU 3/KVM"));
        assert!(!is_vcpu_thread(VmmKind::Qemu, "IO mon_iothread"));
        assert!(is_vcpu_thread(VmmKind::Other, "anything"));
    }

    #[test]
    fn vcpus_on_the_job_cpu_and_the_vmm_floating_unless_confined() {
        assert_eq!(placement(Pinning::Vcpu, 1, &[2, 3]), Placement { vcpus: vec![3], others: vec![2, 3] });
        assert_eq!(placement(Pinning::VcpuVmm, 1, &[2, 3]), Placement { vcpus: vec![3], others: vec![3] });
        assert_eq!(placement(Pinning::None, 0, &[2, 3]), Placement { vcpus: vec![2, 3], others: vec![2, 3] });
    }
}
