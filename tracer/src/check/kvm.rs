//! The KVM side: which backend the kernel has (VMX, SVM, PVM or none), whether
//! /dev/kvm exists and, where it does not, why (the kernel log), and which kvm
//! tracepoints exist and fire on that backend.

use std::path::Path;

use super::{Finding, Status};
use crate::probe::tracefs;

/// A KVM backend: the kernel module that provides /dev/kvm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vmx,
    Svm,
    Pvm,
}

impl Backend {
    fn module(self) -> &'static str {
        match self {
            Backend::Vmx => "kvm_intel",
            Backend::Svm => "kvm_amd",
            Backend::Pvm => "kvm_pvm",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Vmx => "VMX (Intel VT-x)",
            Backend::Svm => "SVM (AMD-V)",
            Backend::Pvm => "PVM (no hardware virtualization: CPL0 guest code is emulated)",
        }
    }

    /// What the kvm tracepoints do on this backend.
    fn tracepoints_fire(self) -> &'static str {
        match self {
            Backend::Vmx | Backend::Svm => {
                "kvm_entry/kvm_exit fire on every exit: KVM_RUN time splits into guest and exit handling"
            }
            Backend::Pvm => {
                "kvm_entry/kvm_exit never fire on PVM: guest time is estimated by cpu-clock sampling; kvm_emulate_insn fires per emulated CPL0 instruction"
            }
        }
    }
}

pub(super) fn findings() -> Vec<Finding> {
    let loaded: Vec<Backend> = [Backend::Vmx, Backend::Svm, Backend::Pvm]
        .into_iter()
        .filter(|b| Path::new("/sys/module").join(b.module()).exists())
        .collect();
    vec![backend(&loaded), dev_kvm(&loaded), tracepoints(loaded.first().copied())]
}

fn cpu_flags() -> (bool, bool) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    (has("vmx"), has("svm"))
}

fn backend(loaded: &[Backend]) -> Finding {
    let (vmx, svm) = cpu_flags();
    let cpu = match (vmx, svm) {
        (true, _) => "the CPU has VMX",
        (_, true) => "the CPU has SVM",
        _ => "the CPU shows neither VMX nor SVM",
    };
    match loaded.first() {
        Some(b) => Finding::ok("KVM backend", format!("{} ({} present; {cpu})", b.name(), b.module())),
        None => Finding::not_ok(
            Status::Degraded,
            "KVM backend",
            format!("no KVM module loaded ({cpu}): host tracing works, no VM to see"),
            "modprobe kvm_intel (or kvm_amd); enable virtualization in the firmware",
        ),
    }
}

fn dev_kvm(loaded: &[Backend]) -> Finding {
    if Path::new("/dev/kvm").exists() {
        return Finding::ok("/dev/kvm", "present: VMs (and `vmmtrace microvm`) can run");
    }
    let module = loaded.first().map(|b| format!("{} is present but did not bind", b.module()));
    let why = kernel_log_reason().map(|l| format!("kernel log: \"{l}\"")).unwrap_or_else(|| {
        "the kernel log is not readable here (dmesg_restrict: CAP_SYSLOG reads it) or says nothing".into()
    });
    let detail = match module {
        Some(m) => format!("missing: {m}; {why}"),
        None => format!("missing: no KVM module; {why}"),
    };
    let remedy = match loaded.first() {
        Some(Backend::Pvm) => {
            "PVM runs guests only without page-table isolation: boot with pti=off (the log line lists what it needs)"
        }
        _ => "load the KVM module for this CPU (modprobe kvm_intel or kvm_amd); tracing of the host still works",
    };
    Finding::not_ok(Status::Degraded, "/dev/kvm", detail, remedy)
}

/// The last kernel log line about KVM refusing to load or bind, if the log is readable.
fn kernel_log_reason() -> Option<String> {
    let log = read_kernel_log()?;
    last_kvm_refusal(&log).map(str::to_string)
}

/// The last line of a kernel log that says why a KVM backend did not load or bind.
pub fn last_kvm_refusal(log: &str) -> Option<&str> {
    const REFUSALS: [&str; 6] =
        ["not binding", "disabled by bios", "no hardware support", "cannot run", "not supported", "failed"];
    log.lines()
        .rev()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("kvm") && REFUSALS.iter().any(|r| l.contains(r))
        })
        .map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest).trim())
}

/// The kernel's log buffer (syslog(2) READ_ALL), or None where it may not be read.
fn read_kernel_log() -> Option<String> {
    const SYSLOG_ACTION_READ_ALL: i32 = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: i32 = 10;
    // SAFETY: SIZE_BUFFER ignores the buffer arguments.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    if size <= 0 {
        return None;
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: the kernel writes at most `size` bytes into `buf`, which holds that many.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), size) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn tracepoints(backend: Option<Backend>) -> Finding {
    let Ok(root) = tracefs::find_root() else {
        return Finding::not_ok(
            Status::Degraded,
            "kvm tracepoints",
            "unknown: tracefs is not readable (see the tracefs line)",
            "see the tracefs line",
        );
    };
    let names: Vec<String> = std::fs::read_dir(root.join("events/kvm"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with("kvm_")).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return Finding::not_ok(
            Status::Degraded,
            "kvm tracepoints",
            "none: the kvm module is not loaded; the report lists the KVM probes as unavailable",
            "modprobe kvm (with kvm_intel or kvm_amd)",
        );
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    let split = match (has("kvm_entry"), has("kvm_exit")) {
        (true, true) => "kvm_entry and kvm_exit exist",
        _ => "kvm_entry or kvm_exit missing: no guest/exit-handling split",
    };
    let fire = backend.map_or("which fire depends on the backend, and none is loaded", Backend::tracepoints_fire);
    Finding::ok("kvm tracepoints", format!("{} in {}/events/kvm; {split}; {fire}", names.len(), root.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_found_in_the_kernel_log() {
        let log = "<6>[    0.138090] kvm-guest: setup PV IPIs\n\
<4>[    0.232127] kvm-pvm: cannot run guests natively on this host (needs PTI=0; has PTI=1); not binding\n\
<6>[    1.0] other: fine\n";
        assert_eq!(
            last_kvm_refusal(log),
            Some("kvm-pvm: cannot run guests natively on this host (needs PTI=0; has PTI=1); not binding")
        );
        assert_eq!(last_kvm_refusal("<4>[ 1.0] kvm: disabled by bios\n"), Some("kvm: disabled by bios"));
        assert_eq!(last_kvm_refusal("<6>[ 1.0] kvm-guest: setup PV IPIs\n"), None);
    }
}
