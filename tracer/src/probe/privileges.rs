//! Which capabilities `record` needs, why, and whether this process holds them.
//!
//! Measured on kernel 6.18 as user nobody (tests/tests/least_privilege.rs): `record`
//! runs with exactly [`REQUIRED`], and stops with a one-line reason when any of them
//! is dropped.

use super::{ProbeError, tracefs};

/// One Linux capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// As the kernel and `setcap` spell it: "CAP_BPF".
    pub name: &'static str,
    pub bit: u32,
    /// What vmmtrace does with it.
    pub why: &'static str,
    /// Another capability that grants the same (CAP_SYS_ADMIN does everything
    /// CAP_BPF and CAP_PERFMON allow on kernels before 5.8 too).
    pub or: Option<u32>,
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_SYS_ADMIN: u32 = 21;

pub const CAP_BPF: Capability =
    Capability { name: "CAP_BPF", bit: 39, why: "loads the eBPF programs", or: Some(CAP_SYS_ADMIN) };
pub const CAP_PERFMON: Capability = Capability {
    name: "CAP_PERFMON",
    bit: 38,
    why: "attaches them and opens per-CPU perf events",
    or: Some(CAP_SYS_ADMIN),
};
pub const CAP_DAC_READ_SEARCH: Capability = Capability {
    name: "CAP_DAC_READ_SEARCH",
    bit: 2,
    why: "reads tracefs, mode 0700 root: tracepoint ids and layouts",
    or: Some(CAP_DAC_OVERRIDE),
};
pub const CAP_SYS_PTRACE: Capability = Capability {
    name: "CAP_SYS_PTRACE",
    bit: 19,
    why: "reads other users' /proc/<pid>/exe and .../syscall: names VMMs, finds vCPUs in KVM_RUN",
    or: None,
};
/// Optional: without it, kernel addresses in /proc/kallsyms read as zero
/// (kptr_restrict, perf_event_paranoid >= 2).
pub const CAP_SYSLOG: Capability = Capability {
    name: "CAP_SYSLOG",
    bit: 34,
    why: "reads kernel addresses in /proc/kallsyms (PVM guest-interrupt samples) and the kernel log",
    or: None,
};

/// What `record` needs, in the order they are named.
pub const REQUIRED: [Capability; 4] = [CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE];

/// The `setcap` argument that grants [`REQUIRED`].
pub const SETCAP: &str = "cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace+ep";

/// The effective capability set of this process (CapEff of /proc/self/status).
pub fn effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_cap_eff(&status).unwrap_or(0)
}

/// The CapEff line of a /proc/<pid>/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

impl Capability {
    /// Whether `cap_eff` grants what this capability is needed for.
    pub fn held_in(&self, cap_eff: u64) -> bool {
        let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
        has(self.bit) || self.or.is_some_and(has)
    }
}

/// The required capabilities that `cap_eff` lacks. CAP_DAC_READ_SEARCH is not
/// needed where tracefs is readable anyway (`tracefs_readable`: mounted with a
/// group or mode that lets this user in).
pub fn missing(cap_eff: u64, tracefs_readable: bool) -> Vec<Capability> {
    REQUIRED
        .into_iter()
        .filter(|c| !c.held_in(cap_eff))
        .filter(|c| !(*c == CAP_DAC_READ_SEARCH && tracefs_readable))
        .collect()
}

/// Fails with a one-line reason, naming each missing capability, unless this
/// process may trace the host.
pub fn check_privileges() -> Result<(), ProbeError> {
    let cap_eff = effective();
    let lacking = missing(cap_eff, CAP_DAC_READ_SEARCH.held_in(cap_eff) || tracefs::find_root().is_ok());
    if lacking.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = lacking.iter().map(|c| format!("{} ({})", c.name, c.why)).collect();
    Err(ProbeError::NotPrivileged { missing: named.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[Capability]) -> u64 {
        list.iter().fold(0, |acc, c| acc | 1u64 << c.bit)
    }

    #[test]
    fn the_required_set_is_enough_and_each_one_is_named_when_dropped() {
        assert!(missing(caps(&REQUIRED), false).is_empty());
        for dropped in REQUIRED {
            let rest: Vec<Capability> = REQUIRED.into_iter().filter(|c| *c != dropped).collect();
            assert_eq!(missing(caps(&rest), false), vec![dropped]);
        }
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_and_root_has_everything() {
        let admin = 1u64 << CAP_SYS_ADMIN;
        assert_eq!(missing(admin, false), vec![CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE]);
        assert!(missing(u64::MAX >> 23, false).is_empty());
        assert_eq!(missing(caps(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]), true), vec![]);
    }

    #[test]
    fn cap_eff_is_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("CapEff: zz"), None);
        assert_eq!(parse_cap_eff(""), None);
    }

    #[test]
    fn setcap_grants_the_required_set() {
        let named: Vec<String> = REQUIRED.iter().map(|c| c.name.to_lowercase()).collect();
        assert_eq!(SETCAP.trim_end_matches("+ep").split(',').collect::<Vec<_>>(), named);
    }
}
