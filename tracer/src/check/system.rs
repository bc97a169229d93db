//! The kernel, its BTF, tracefs, perf_event_paranoid and this process's privileges.

use super::{Finding, Status};
use crate::{
    error::chain,
    probe::{
        btf_pid_offset,
        privileges::{self, CAP_DAC_READ_SEARCH, CAP_SYSLOG, REQUIRED, SETCAP},
        tracefs::{self, TracefsError},
    },
};

pub(super) fn findings() -> Vec<Finding> {
    let mut out = vec![kernel(), btf()];
    out.extend(privileges());
    out.push(tracefs());
    out.push(perf_event_paranoid());
    out
}

/// (major, minor) of a kernel release string ("6.18.44-fc-v595").
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel() -> Finding {
    let release = crate::host::kernel_string("osrelease");
    match kernel_version(&release) {
        Some(v) if v >= (5, 18) => Finding::ok("kernel", format!("{release} (>= 5.18: tp_btf sched_switch, CAP_BPF)")),
        Some(v) if v >= (5, 8) => Finding::not_ok(
            Status::Degraded,
            "kernel",
            format!("{release}: older than 5.18, sched_switch is traced by the classic tracepoint"),
            "a kernel >= 5.18 lets vmmtrace use tp_btf (cheaper per event)",
        ),
        _ => Finding::not_ok(
            Status::Degraded,
            "kernel",
            format!("{release}: older than 5.8 (no CAP_BPF/CAP_PERFMON: root or CAP_SYS_ADMIN needed)"),
            "run on a kernel >= 5.18",
        ),
    }
}

fn btf() -> Finding {
    match btf_pid_offset() {
        Ok(offset) => Finding::ok(
            "BTF",
            format!(
                "/sys/kernel/btf/vmlinux: sched_switch prototype with 5 arguments, task_struct.pid at byte {offset}"
            ),
        ),
        Err(reason) => Finding::not_ok(
            Status::Degraded,
            "BTF",
            format!("{reason}: sched_switch falls back to the classic tracepoint"),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y, >= 5.18",
        ),
    }
}

/// Each capability `record` needs, held or not, and the optional CAP_SYSLOG.
fn privileges() -> Vec<Finding> {
    let cap_eff = privileges::effective();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mut out = Vec::new();
    for cap in REQUIRED {
        out.push(match cap.held_in(cap_eff) {
            true => Finding::ok("privileges", format!("{}: held (uid {uid}); {}", cap.name, cap.why)),
            false if cap == CAP_DAC_READ_SEARCH && tracefs::find_root().is_ok() => Finding::ok(
                "privileges",
                format!("{}: not held, not needed: tracefs is readable by uid {uid}", cap.name),
            ),
            false => Finding::not_ok(
                Status::Fails,
                "privileges",
                format!("{}: missing (uid {uid}); {}", cap.name, cap.why),
                format!("run as root, or `setcap {SETCAP} vmmtrace` (docs/user-guide.md, Least privilege)"),
            ),
        });
    }
    out.push(match CAP_SYSLOG.held_in(cap_eff) {
        true => Finding::ok("privileges", format!("{}: held; {}", CAP_SYSLOG.name, CAP_SYSLOG.why)),
        false => Finding::not_ok(
            Status::Degraded,
            "privileges",
            format!("{}: missing (optional); {}", CAP_SYSLOG.name, CAP_SYSLOG.why),
            "add cap_syslog to the setcap list (or AmbientCapabilities) for the PVM guest-interrupt split",
        ),
    });
    out
}

fn tracefs() -> Finding {
    match tracefs::find_root() {
        Ok(root) => Finding::ok("tracefs", format!("mounted and readable at {}", root.display())),
        Err(TracefsError::NotMounted) => {
            // SAFETY: geteuid has no preconditions.
            let status = match unsafe { libc::geteuid() } {
                0 => Status::Degraded,
                _ => Status::Fails,
            };
            Finding::not_ok(
                status,
                "tracefs",
                "not mounted (record mounts it at /sys/kernel/tracing when run as root)",
                "mount -t tracefs nodev /sys/kernel/tracing (or add it to /etc/fstab)",
            )
        }
        Err(e) => Finding::not_ok(
            Status::Fails,
            "tracefs",
            chain(&e),
            format!("grant {} or run as root", CAP_DAC_READ_SEARCH.name),
        ),
    }
}

fn perf_event_paranoid() -> Finding {
    let text = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
    let Ok(level) = text.trim().parse::<i32>() else {
        return Finding::not_ok(
            Status::Degraded,
            "perf_event",
            "/proc/sys/kernel/perf_event_paranoid is missing: kernel without perf events?",
            "a kernel with CONFIG_PERF_EVENTS=y (the guest-time sampler needs it)",
        );
    };
    let kallsyms = match level {
        ..=1 => "kernel addresses in /proc/kallsyms readable where kptr_restrict is 0",
        _ => "kernel addresses in /proc/kallsyms need CAP_SYSLOG",
    };
    Finding::ok(
        "perf_event",
        format!(
            "perf_event_paranoid = {level}: CAP_PERFMON (or root) opens the per-CPU cpu-clock events at any level; {kallsyms}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("6.1"), Some((6, 1)));
        assert_eq!(kernel_version(""), None);
        assert_eq!(kernel_version("linux"), None);
    }
}
