//! Scenario planning, pure: from the CPUs, environments, workloads and repeats to the
//! ordered list of runs. The study compared N-1 against N jobs on N cores (3 vs 4 on
//! its quad core), each with and without pinning; N here is the number of CPUs the
//! experiment may use, never a constant.

use serde::{Deserialize, Serialize};

use super::workloads::Workload;

/// Where each job runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Env {
    /// Each job a host process.
    Host,
    /// Each job in its own real QEMU VM with one vCPU.
    Qemu,
    /// Each job in its own micro-VM with one vCPU.
    Microvm,
    /// Each job started by the user's command inside one of the user's VMs.
    Vm,
}

impl Env {
    pub fn name(&self) -> &'static str {
        match self {
            Env::Host => "host",
            Env::Qemu => "qemu",
            Env::Microvm => "microvm",
            Env::Vm => "vm",
        }
    }

    pub fn parse(s: &str) -> Result<Env, String> {
        match s.trim() {
            "host" => Ok(Env::Host),
            "qemu" => Ok(Env::Qemu),
            "microvm" => Ok(Env::Microvm),
            "vm" => Ok(Env::Vm),
            other => Err(format!("unknown environment {other:?}: give any of host, qemu, microvm, vm")),
        }
    }

    /// Whether jobs run in VMs, which have VMM threads besides the vCPU.
    pub fn is_virtual(&self) -> bool {
        !matches!(self, Env::Host)
    }
}

/// How the jobs (or vCPUs) and the VMM's other threads are placed on CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pinning {
    /// Every thread may run on every experiment CPU.
    None,
    /// Job (or vCPU) i on CPU i; the VMM's other threads float (KVM's default, the
    /// study's case).
    Vcpu,
    /// As `vcpu`, and each VM's other threads confined too (libvirt's emulatorpin).
    VcpuVmm,
}

impl Pinning {
    pub const ALL: [Pinning; 3] = [Pinning::None, Pinning::Vcpu, Pinning::VcpuVmm];

    pub fn name(&self) -> &'static str {
        match self {
            Pinning::None => "none",
            Pinning::Vcpu => "vcpu",
            Pinning::VcpuVmm => "vcpu+vmm",
        }
    }
}

/// One cell of the experiment: environment, workload, number of jobs, pinning.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scenario {
    pub env: Env,
    pub workload: Workload,
    pub jobs: usize,
    pub pinning: Pinning,
}

impl Scenario {
    pub fn label(&self) -> String {
        format!("{} {} {} jobs pin={}", self.env.name(), self.workload.name(), self.jobs, self.pinning.name())
    }
}

/// One run of the plan: a scenario, which repeat it is (None for the warm-up, whose
/// figures are discarded), and the CPUs its jobs may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// Position in the plan; a resumed experiment matches runs by it.
    pub id: usize,
    pub scenario: Scenario,
    pub repeat: Option<usize>,
}

impl PlannedRun {
    pub fn is_warmup(&self) -> bool {
        self.repeat.is_none()
    }
}

/// What the user asked for, after validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub envs: Vec<Env>,
    pub workloads: Vec<Workload>,
    /// The CPUs the experiment uses; N = their number.
    pub cpus: Vec<u32>,
    pub repeat: usize,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(
        "the experiment needs at least 2 CPUs (N-1 against N jobs), but only {0:?} are available: run it on a machine with more CPUs, or give --cpus with two or more"
    )]
    TooFewCpus(Vec<u32>),
    #[error("--repeat must be at least 1")]
    NoRepeats,
    #[error("nothing to run: give at least one --env and one --workload")]
    Empty,
}

/// The pinnings worth running in an environment: on the host there are no VMM
/// threads, so `vcpu+vmm` would repeat `vcpu`.
pub fn pinnings(env: &Env) -> &'static [Pinning] {
    if env.is_virtual() { &Pinning::ALL } else { &Pinning::ALL[..2] }
}

/// Every scenario of one environment and workload, the N-1 unpinned baseline first.
pub fn scenarios(env: &Env, workload: Workload, n_cpus: usize) -> Vec<Scenario> {
    let mut out = Vec::new();
    for jobs in [n_cpus - 1, n_cpus] {
        for &pinning in pinnings(env) {
            out.push(Scenario { env: env.clone(), workload, jobs, pinning });
        }
    }
    out
}

/// The run order: per environment and workload, one warm-up (N-1 unpinned, discarded;
/// it also makes the reference answer of a workload), then every scenario `repeat`
/// times in a seeded shuffled order, so that drift on the host hits every scenario
/// alike.
pub fn plan(cfg: &PlanConfig) -> Result<Vec<PlannedRun>, PlanError> {
    if cfg.cpus.len() < 2 {
        return Err(PlanError::TooFewCpus(cfg.cpus.clone()));
    }
    if cfg.repeat == 0 {
        return Err(PlanError::NoRepeats);
    }
    if cfg.envs.is_empty() || cfg.workloads.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut rng = SplitMix64(cfg.seed);
    let mut out: Vec<PlannedRun> = Vec::new();
    for env in &cfg.envs {
        for &workload in &cfg.workloads {
            let cells = scenarios(env, workload, cfg.cpus.len());
            out.push(PlannedRun { id: 0, scenario: cells[0].clone(), repeat: None });
            let mut runs: Vec<PlannedRun> = (0..cfg.repeat)
                .flat_map(|r| cells.iter().map(move |s| PlannedRun { id: 0, scenario: s.clone(), repeat: Some(r) }))
                .collect();
            rng.shuffle(&mut runs);
            out.extend(runs);
        }
    }
    for (i, r) in out.iter_mut().enumerate() {
        r.id = i;
    }
    Ok(out)
}

/// A small seeded generator (SplitMix64): the same seed gives the same plan and the
/// same generated inputs on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0); the modulo bias is negligible for the small n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn available_cpus() -> Vec<u32> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).map(|c| c as u32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cpus: Vec<u32>, envs: Vec<Env>, repeat: usize) -> PlanConfig {
        PlanConfig { envs, workloads: vec![Workload::Bzip2, Workload::Gobmk], cpus, repeat, seed: 7 }
    }

    #[test]
    fn n_minus_one_and_n_jobs_from_the_cpu_count() {
        for n in [2usize, 3, 4, 8] {
            let cpus: Vec<u32> = (0..n as u32).collect();
            let p = plan(&cfg(cpus, vec![Env::Host], 1)).unwrap();
            let jobs: std::collections::BTreeSet<usize> = p.iter().map(|r| r.scenario.jobs).collect();
            assert_eq!(jobs, [n - 1, n].into_iter().collect(), "n = {n}");
        }
    }

    #[test]
    fn fewer_than_two_cpus_is_a_clear_error() {
        let e = plan(&cfg(vec![3], vec![Env::Host], 3)).unwrap_err();
        assert_eq!(e, PlanError::TooFewCpus(vec![3]));
        assert!(e.to_string().contains("--cpus"), "{e}");
        assert!(plan(&cfg(vec![], vec![Env::Host], 3)).is_err());
    }

    #[test]
    fn each_scenario_repeats_after_one_warmup_per_env_and_workload() {
        let p = plan(&cfg(vec![0, 1], vec![Env::Host, Env::Microvm], 3)).unwrap();
        // host: 2 jobs counts x 2 pinnings; microvm: 2 x 3; both workloads; + warm-ups.
        assert_eq!(p.len(), 2 * (4 * 3 + 1) + 2 * (6 * 3 + 1));
        assert_eq!(p.iter().filter(|r| r.is_warmup()).count(), 4);
        for (i, r) in p.iter().enumerate() {
            assert_eq!(r.id, i);
        }
        // A warm-up opens each (env, workload) block, as the N-1 unpinned baseline.
        let mut i = 0;
        while i < p.len() {
            let w = &p[i];
            assert!(w.is_warmup(), "run {i} should be a warm-up");
            assert_eq!((w.scenario.jobs, w.scenario.pinning), (1, Pinning::None));
            let block = p[i + 1..].iter().take_while(|r| !r.is_warmup()).count();
            for r in &p[i + 1..i + 1 + block] {
                assert_eq!((&r.scenario.env, r.scenario.workload), (&w.scenario.env, w.scenario.workload));
            }
            let mut count = std::collections::BTreeMap::new();
            for r in &p[i + 1..i + 1 + block] {
                *count.entry(r.scenario.clone()).or_insert(0) += 1;
            }
            assert!(count.values().all(|&c| c == 3), "{count:?}");
            i += 1 + block;
        }
    }

    #[test]
    fn host_has_no_vmm_pinning_and_vms_have_all_three() {
        assert_eq!(pinnings(&Env::Host), &[Pinning::None, Pinning::Vcpu]);
        assert_eq!(pinnings(&Env::Qemu).len(), 3);
        let s = scenarios(&Env::Microvm, Workload::Bzip2, 4);
        assert_eq!(s[0], Scenario { env: Env::Microvm, workload: Workload::Bzip2, jobs: 3, pinning: Pinning::None });
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn the_order_is_shuffled_reproducibly_by_the_seed() {
        let a = plan(&cfg(vec![0, 1], vec![Env::Host], 3)).unwrap();
        let b = plan(&cfg(vec![0, 1], vec![Env::Host], 3)).unwrap();
        assert_eq!(a, b);
        let mut other = cfg(vec![0, 1], vec![Env::Host], 3);
        other.seed = 8;
        assert_ne!(a, plan(&other).unwrap());
        // Not simply grouped by scenario.
        let first_block: Vec<_> = a[1..13].iter().map(|r| r.scenario.clone()).collect();
        let mut sorted = first_block.clone();
        sorted.sort();
        assert_ne!(first_block, sorted);
    }

    #[test]
    fn env_names_round_trip() {
        for e in [Env::Host, Env::Qemu, Env::Microvm, Env::Vm] {
            assert_eq!(Env::parse(e.name()).unwrap(), e);
        }
        assert!(Env::parse("xen").unwrap_err().contains("host, qemu"));
    }
}
