//! How a job's step is launched in each environment: the command line, and the CPUs
//! its process (and so every thread it starts) may use. In a VM the same unmodified
//! program runs as the guest, one vCPU per job, and the VMM pins the vCPU itself.

use std::path::{Path, PathBuf};

use super::{
    plan::{Env, Pinning},
    workloads::Step,
};

/// A step ready to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub argv: Vec<String>,
    /// The process's CPU affinity at exec (inherited by every thread it starts).
    pub affinity: Vec<u32>,
    /// Where the VMM writes its ground truth (VMs only).
    pub truth: Option<PathBuf>,
}

/// The CPUs job `index` (or its vCPU) may run on in a scenario with this pinning.
pub fn job_cpus(pinning: Pinning, index: usize, cpus: &[u32]) -> Vec<u32> {
    match pinning {
        Pinning::None => cpus.to_vec(),
        Pinning::Vcpu | Pinning::VcpuVmm => vec![cpus[index % cpus.len()]],
    }
}

/// Whether this build can run jobs in `env`, and if not, why.
pub fn unavailable(env: &Env) -> Option<String> {
    match env {
        Env::Host => None,
        Env::Microvm if !Path::new("/dev/kvm").exists() => Some(
            "the microvm environment needs /dev/kvm, which this host lacks (load kvm-intel, kvm-amd or kvm-pvm; dmesg says why it did not bind); run with --env host".into(),
        ),
        Env::Microvm => None,
        Env::Qemu if crate::record::resolve_command("qemu-system-x86_64").is_err() => Some(
            "the qemu environment needs qemu-system-x86_64: run `apt-get install qemu-system-x86`, or leave out qemu".into(),
        ),
        Env::Qemu => None,
        // The user's VMs: what they need is checked with --vm (config_from_cli).
        Env::Vm => None,
    }
}

/// How step `step` of job `index` starts in `env`. `exe` is vmmtrace itself (the
/// micro-VM's VMM); `truth` where a VMM writes its ground truth. (The user's VMs,
/// `Env::Vm`, start through their own command: [`super::user_vm::launch`].)
pub fn launch(
    env: &Env,
    step: &Step,
    pinning: Pinning,
    index: usize,
    cpus: &[u32],
    exe: &Path,
    truth: &Path,
) -> Launch {
    let own = job_cpus(pinning, index, cpus);
    match env {
        Env::Host => Launch { argv: step.argv.clone(), affinity: own, truth: None },
        Env::Microvm | Env::Qemu | Env::Vm => {
            let cpu = own[0].to_string();
            // The micro-VM's only other thread is its emulator; QEMU confines all of
            // its other threads (main loop, RCU, iothreads).
            let (vmm, pin_vmm) = match env {
                Env::Qemu => ("qemu", "--pin-vmm"),
                _ => ("microvm", "--pin-emulator"),
            };
            let mut argv = vec![exe.to_string_lossy().into_owned(), vmm.into()];
            argv.extend(["--truth".into(), truth.to_string_lossy().into_owned()]);
            if pinning != Pinning::None {
                argv.extend(["--pin-vcpus".into(), cpu.clone()]);
            }
            if pinning == Pinning::VcpuVmm {
                argv.extend([pin_vmm.into(), cpu]);
            }
            argv.push("--".into());
            argv.extend(step.argv.iter().cloned());
            // vcpu: the VMM's other threads float over every experiment CPU, as KVM's
            // by default; vcpu+vmm: they are confined to the job's CPU from the start.
            let affinity = if pinning == Pinning::VcpuVmm { own } else { cpus.to_vec() };
            Launch { argv, affinity, truth: Some(truth.to_path_buf()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Step {
        Step { argv: vec!["/usr/bin/bzip2".into(), "-9".into()], stdin: None, stdout: "/o".into() }
    }

    #[test]
    fn pinning_puts_job_i_on_cpu_i_else_anywhere() {
        let cpus = [2, 5];
        assert_eq!(job_cpus(Pinning::None, 1, &cpus), vec![2, 5]);
        assert_eq!(job_cpus(Pinning::Vcpu, 0, &cpus), vec![2]);
        assert_eq!(job_cpus(Pinning::VcpuVmm, 1, &cpus), vec![5]);
    }

    #[test]
    fn on_the_host_the_program_runs_as_is() {
        let l = launch(&Env::Host, &step(), Pinning::Vcpu, 1, &[0, 1], Path::new("/vmmtrace"), Path::new("/t"));
        assert_eq!(l, Launch { argv: step().argv, affinity: vec![1], truth: None });
    }

    #[test]
    fn in_the_micro_vm_the_vcpu_is_pinned_and_the_vmm_floats_unless_asked() {
        let exe = Path::new("/vmmtrace");
        let l = launch(&Env::Microvm, &step(), Pinning::Vcpu, 1, &[0, 1], exe, Path::new("/t.json"));
        assert_eq!(
            l.argv,
            ["/vmmtrace", "microvm", "--truth", "/t.json", "--pin-vcpus", "1", "--", "/usr/bin/bzip2", "-9"]
        );
        assert_eq!(l.affinity, vec![0, 1]);
        let l = launch(&Env::Microvm, &step(), Pinning::VcpuVmm, 1, &[0, 1], exe, Path::new("/t.json"));
        assert!(l.argv.windows(2).any(|w| w == ["--pin-emulator", "1"]), "{:?}", l.argv);
        assert_eq!(l.affinity, vec![1]);
        let l = launch(&Env::Microvm, &step(), Pinning::None, 0, &[0, 1], exe, Path::new("/t.json"));
        assert!(!l.argv.iter().any(|a| a.starts_with("--pin")), "{:?}", l.argv);
    }

    #[test]
    fn under_qemu_every_other_qemu_thread_is_confined_with_vcpu_vmm() {
        let l = launch(&Env::Qemu, &step(), Pinning::VcpuVmm, 0, &[0, 1], Path::new("/v"), Path::new("/t"));
        assert_eq!(l.argv[..2], ["/v", "qemu"]);
        assert!(l.argv.windows(2).any(|w| w == ["--pin-vmm", "0"]), "{:?}", l.argv);
        assert!(l.argv.windows(2).any(|w| w == ["--pin-vcpus", "0"]), "{:?}", l.argv);
        assert_eq!(l.affinity, vec![0]);
    }
}
