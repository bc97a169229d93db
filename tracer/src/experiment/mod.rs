//! `vmmtrace experiment`: the 2011 study's two experiments (N-1 against N CPU-bound
//! jobs on N CPUs; pinned against unpinned) re-run on this host with the real bzip2
//! and GNU Go, every run traced by the probes, and every job's slowdown decomposed
//! into the parts of the trace's account of its wall time.
//!
//! - [`workloads`]: the jobs, their generated inputs and self-checks;
//! - [`plan`]: scenarios and the seeded run order (pure);
//! - [`env`]: how a job starts in each environment (host, micro-VM, QEMU);
//! - [`user_vm`]: `--env vm`, the user's own VMs found by name and pinned;
//! - [`run`]: runs the plan, traces each run, keeps the result current on disk;
//! - [`account`]: a job's interval as the trace tells it (named parts);
//! - [`result`]: the result file;
//! - [`stats`], [`decompose`]: spreads, slowdowns and their decomposition (pure);
//! - [`table`]: the text table beside the study's figures;
//! - [`charts`], [`findings`]: `report --out` and `diagnose` of a result.

pub mod account;
pub mod charts;
pub mod decompose;
pub mod env;
pub mod findings;
pub mod plan;
pub mod result;
pub mod run;
pub mod stats;
pub mod table;
pub mod user_vm;
pub mod workloads;

pub use plan::{Env, Pinning, PlanConfig, Scenario};
pub use result::ExperimentResult;
pub use run::{ExperimentOptions, run_experiment};
pub use workloads::Workload;

/// The experiment's options from the command line, validated.
pub fn config_from_cli(a: &crate::cli::ExperimentArgs) -> anyhow::Result<result::ExperimentConfig> {
    use anyhow::{Context as _, anyhow, bail};
    let mut envs = a.env.iter().map(|e| Env::parse(e)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow!(e))?;
    if envs.is_empty() && !a.vm.is_empty() {
        envs = vec![Env::Vm];
    }
    if envs.is_empty() {
        // Without /dev/kvm QEMU would emulate (TCG), several times slower: not by default.
        let kvm = std::path::Path::new("/dev/kvm").exists();
        envs = [Env::Host, Env::Microvm, Env::Qemu]
            .into_iter()
            .filter(|e| env::unavailable(e).is_none() && (kvm || *e != Env::Qemu))
            .collect();
    }
    let workloads =
        a.workload.iter().map(|w| Workload::parse(w)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow!(e))?;
    let cpus = match &a.cpus {
        Some(list) => {
            let want = crate::host::parse_cpu_list(list).context("--cpus")?;
            let allowed = plan::available_cpus();
            if let Some(c) = want.iter().find(|c| !allowed.contains(c)) {
                bail!("--cpus: CPU {c} is not available to vmmtrace (available: {allowed:?})");
            }
            want
        }
        None => plan::available_cpus(),
    };
    if !(a.scale.is_finite() && a.scale > 0.0) {
        bail!("--scale must be a positive number (1.0 is about 6 s per job here)");
    }
    let mut vm_commands = std::collections::BTreeMap::new();
    for v in &a.vm {
        let (name, cmd) = v.split_once('=').ok_or_else(|| anyhow!("--vm {v:?}: give NAME=COMMAND"))?;
        if name.trim().is_empty() || cmd.trim().is_empty() {
            bail!("--vm {v:?}: give NAME=COMMAND, e.g. --vm web='ssh root@web'");
        }
        if vm_commands.insert(name.trim().to_string(), cmd.to_string()).is_some() {
            bail!("--vm: the VM {:?} is given twice; give each VM once", name.trim());
        }
    }
    check_user_vms(&envs, &vm_commands, cpus.len())?;
    let plan = PlanConfig { envs, workloads, cpus, repeat: a.repeat, seed: a.seed };
    plan::plan(&plan)?;
    Ok(result::ExperimentConfig { plan, scale: a.scale, vm_commands })
}

/// `--env vm` needs one VM per job (N jobs in the N-jobs scenarios); `--vm` is for it alone.
pub(crate) fn check_user_vms(
    envs: &[Env],
    vm_commands: &std::collections::BTreeMap<String, String>,
    n_cpus: usize,
) -> anyhow::Result<()> {
    if envs.contains(&Env::Vm) && vm_commands.len() < n_cpus {
        anyhow::bail!(
            "--env vm runs up to {n_cpus} jobs at once, one per VM: give {n_cpus} VMs with --vm NAME=COMMAND (got {}), or fewer CPUs with --cpus",
            vm_commands.len()
        );
    }
    if !envs.contains(&Env::Vm) && !vm_commands.is_empty() {
        anyhow::bail!("--vm is for --env vm: add vm to --env");
    }
    Ok(())
}
