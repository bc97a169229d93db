//! The guest job both of our VMMs run (the micro-VM here, real QEMU in `vmm-qemu`): the
//! options their `Config`s share, checked in one place, and the ground truth of one
//! vCPU, which both count the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The options every VM of ours takes, borrowed from its `Config`, with the flag that
/// sets each CPU list (as the error names it).
#[derive(Debug, Clone, Copy)]
pub struct JobOptions<'a> {
    pub vcpus: u32,
    /// The most vCPUs this VMM's guest can run.
    pub max_vcpus: u32,
    pub work: u64,
    pub timer_hz: u32,
    pub bzip2_unit_bytes: u32,
    pub loop_unit_iters: u32,
    pub cpu_lists: [(&'static str, Option<&'a [usize]>); 2],
}

/// The highest guest timer or emulator frequency: above it a guest does little but
/// take interrupts.
pub const MAX_HZ: u32 = 100_000;

impl JobOptions<'_> {
    /// Checks the options; the error says which one is wrong and what is allowed.
    pub fn check(&self) -> Result<(), String> {
        if self.vcpus < 1 || self.vcpus > self.max_vcpus {
            return Err(format!("--vcpus {} out of range 1..={}", self.vcpus, self.max_vcpus));
        }
        if self.work < 1 {
            return Err("--work must be >= 1".into());
        }
        if self.timer_hz > MAX_HZ {
            return Err(format!("--timer-hz {} too high (max {MAX_HZ}; 0 = no timer)", self.timer_hz));
        }
        if self.bzip2_unit_bytes < 1 || self.bzip2_unit_bytes > 4 << 20 {
            return Err(format!("bzip2 unit of {} bytes out of range 1..=4 MiB", self.bzip2_unit_bytes));
        }
        if self.loop_unit_iters < 1 {
            return Err("loop unit iterations must be >= 1".into());
        }
        self.cpu_lists.iter().try_for_each(|&(flag, list)| check_cpu_list(flag, list))
    }
}

/// An empty list, or a CPU no affinity mask can hold, is an error naming `flag`.
fn check_cpu_list(flag: &str, list: Option<&[usize]>) -> Result<(), String> {
    let Some(list) = list else { return Ok(()) };
    if list.is_empty() {
        return Err(format!("{flag}: empty CPU list"));
    }
    if let Some(c) = list.iter().find(|&&c| c >= libc::CPU_SETSIZE as usize) {
        let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return Err(format!("{flag}: CPU {c} does not exist (this host has {ncpu} usable CPUs)"));
    }
    Ok(())
}

/// Progress exits each vCPU makes: `work / exit_every` (none when `exit_every` is 0).
pub fn expected_progress_exits(work: u64, exit_every: u64) -> u64 {
    work.checked_div(exit_every).unwrap_or(0)
}

/// Exact ground truth of one vCPU, counted by the VMM or the guest itself; `vmm` holds
/// what only one VMM knows (its fields sit beside these in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuTruth<Vmm> {
    pub index: u32,
    /// The vCPU thread: the thread that calls KVM_RUN (under QEMU, QMP's
    /// `query-cpus-fast` thread-id).
    pub tid: u32,
    /// Its name, `CPU n/KVM` (QEMU under TCG: `CPU n/TCG`).
    pub name: String,
    /// Userspace exits by reason: "io", "hlt", "intr", ... The micro-VM's VMM counts
    /// every return of KVM_RUN; QEMU's guest counts every port access it makes after
    /// "go" (each one an "io" exit QEMU serves).
    pub exits: BTreeMap<String, u64>,
    /// Of the "io" exits, the progress exits: exactly `work / exit_every`.
    pub progress_exits: u64,
    /// Guest timer interrupts taken (counted by the guest's ISR). These are in-kernel
    /// exits: they never return to userspace, so they are not in `exits`.
    pub timer_interrupts: u64,
    pub work_units: u64,
    /// Result checksum of the workload: equals `run_native(workload, index, work, ...)`
    /// (the same C code) and, for `loop`, `loop_reference`.
    pub checksum: u64,
    /// Wall time of the workload: in the micro-VM from the first KVM_RUN to the guest's
    /// "done" exit; under QEMU the guest's own TSC from the start to the end of the work.
    pub elapsed_ns: u64,
    /// CLOCK_MONOTONIC (as bpf_ktime_get_ns) when that time started...
    pub start_monotonic_ns: u64,
    /// ...and when it ended.
    pub end_monotonic_ns: u64,
    /// The kernel's count of this thread's runtime (`sum_exec_runtime`) when the guest
    /// finished: an independent check for tracers.
    pub sum_exec_runtime_ns: u64,
    #[serde(flatten)]
    pub vmm: Vmm,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options<'a>(cpu_lists: [(&'static str, Option<&'a [usize]>); 2]) -> JobOptions<'a> {
        JobOptions { vcpus: 2, max_vcpus: 16, work: 1, timer_hz: 0, bzip2_unit_bytes: 1, loop_unit_iters: 1, cpu_lists }
    }

    #[test]
    fn each_bad_option_is_named() {
        let ok = options([("--pin-vcpus", Some(&[0, 1])), ("--pin-vmm", None)]);
        assert_eq!(ok.check(), Ok(()));
        let cases: [(JobOptions, &str); 7] = [
            (JobOptions { vcpus: 17, ..ok }, "--vcpus 17 out of range 1..=16"),
            (JobOptions { vcpus: 0, ..ok }, "--vcpus 0"),
            (JobOptions { work: 0, ..ok }, "--work must be >= 1"),
            (JobOptions { timer_hz: MAX_HZ + 1, ..ok }, "--timer-hz 100001 too high"),
            (JobOptions { bzip2_unit_bytes: (4 << 20) + 1, ..ok }, "bzip2 unit of 4194305 bytes"),
            (options([("--pin-vcpus", Some(&[])), ("--pin-vmm", None)]), "--pin-vcpus: empty CPU list"),
            (
                options([("--pin-vcpus", None), ("--pin-vmm", Some(&[1 << 20]))]),
                "--pin-vmm: CPU 1048576 does not exist",
            ),
        ];
        for (bad, says) in cases {
            let e = bad.check().expect_err(says);
            assert!(e.contains(says), "{e:?} should say {says:?}");
        }
    }

    #[test]
    fn progress_exits_are_work_over_exit_every() {
        assert_eq!(expected_progress_exits(10, 3), 3);
        assert_eq!(expected_progress_exits(10, 0), 0);
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Extra {
        last_cpu: u32,
    }

    #[test]
    fn what_one_vmm_adds_sits_beside_the_shared_fields() {
        let v = VcpuTruth {
            index: 1,
            tid: 2,
            name: "CPU 1/KVM".into(),
            exits: BTreeMap::from([("io".into(), 3)]),
            progress_exits: 2,
            timer_interrupts: 0,
            work_units: 2,
            checksum: u64::MAX,
            elapsed_ns: 4,
            start_monotonic_ns: 5,
            end_monotonic_ns: 9,
            sum_exec_runtime_ns: 4,
            vmm: Extra { last_cpu: 7 },
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!((json["last_cpu"].as_u64(), json["checksum"].as_u64()), (Some(7), Some(u64::MAX)));
        assert_eq!(serde_json::from_value::<VcpuTruth<Extra>>(json).unwrap(), v);
    }
}
