//! `vmmtrace check`: a preflight that tells, per capability of the tool, whether it
//! works on this host, why not, and what to do.
//!
//! `system.rs` looks at the kernel, BTF, tracefs, perf_event_paranoid and the
//! privileges; `kvm.rs` at the KVM backend, /dev/kvm and the kvm tracepoints. The
//! probes themselves are tried by attaching them as `record` does
//! ([`Probes::attach`], the probe table), so "attached" here means attached.

mod kvm;
mod system;

pub use kvm::last_kvm_refusal;
pub use system::kernel_version;

use crate::{
    error::chain,
    probe::{
        ProbeOptions, Probes, check_privileges, kvm_btf_without_tracefs,
        tracefs::{self, TracefsError},
    },
};

/// How a capability of the tool fares on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works with less: the report says what is missing.
    Degraded,
    /// `record` cannot run.
    Fails,
}

/// One line of the preflight.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub subject: String,
    pub status: Status,
    pub detail: String,
    /// What to do, where the status is not Ok.
    pub remedy: Option<String>,
}

impl Finding {
    fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding { subject: subject.into(), status: Status::Ok, detail: detail.into(), remedy: None }
    }

    fn not_ok(
        status: Status,
        subject: impl Into<String>,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Finding {
        Finding { subject: subject.into(), status, detail: detail.into(), remedy: Some(remedy.into()) }
    }
}

/// Everything the preflight found, in the order it looked.
#[derive(Clone, Debug, Default)]
pub struct Preflight {
    pub findings: Vec<Finding>,
}

impl Preflight {
    /// Whether `vmmtrace record` can run here (nothing Fails).
    pub fn record_can_run(&self) -> bool {
        self.findings.iter().all(|f| f.status != Status::Fails)
    }
}

/// Looks at this host. Attaches the probes as `record` would (and detaches them),
/// which mounts tracefs where it is missing and this process may.
pub fn run(opts: &ProbeOptions) -> Preflight {
    let mut findings = system::findings();
    findings.extend(probes(opts));
    findings.extend(kvm::findings());
    Preflight { findings }
}

/// Each probe of the table: attached, or why not.
fn probes(opts: &ProbeOptions) -> Vec<Finding> {
    if check_privileges().is_err() {
        let mut out = vec![Finding::not_ok(
            Status::Fails,
            "probes",
            "not tried: privileges missing (see the privileges lines)",
            "grant the missing capabilities, then check again",
        )];
        if opts.kvm && matches!(tracefs::find_root(), Err(TracefsError::Unreadable { .. })) {
            out.extend(kvm_probes_without_tracefs());
        }
        return out;
    }
    let probes = match Probes::attach(opts) {
        Ok(p) => p,
        Err(e) => {
            return vec![Finding::not_ok(
                Status::Fails,
                "probes",
                format!("attaching failed: {}", chain(&e)),
                "fix what the lines above say; RUST_LOG=debug vmmtrace check shows the loader's log",
            )];
        }
    };
    let features = &probes.features;
    let mut out: Vec<Finding> =
        features.attached.iter().map(|p| Finding::ok("probe", format!("{p}: attached"))).collect();
    for u in &features.unavailable {
        out.push(Finding::not_ok(
            Status::Degraded,
            "probe",
            format!("{}: not attached: {}", u.probe, u.reason),
            "the report lists it in host.features.unavailable and says what is not measured without it",
        ));
    }
    out
}

/// Where tracefs is not readable, the kvm probes that need none (tp_btf) are tried
/// on their own: which of them this user could attach.
fn kvm_probes_without_tracefs() -> Vec<Finding> {
    let subject = "probe";
    match kvm_btf_without_tracefs() {
        Ok(results) => results
            .into_iter()
            .map(|(probe, r)| match r {
                Ok(()) => Finding::ok(subject, format!("{probe}: attached (without tracefs)")),
                Err(why) => Finding::not_ok(
                    Status::Degraded,
                    subject,
                    format!("{probe}: not attached (without tracefs): {why}"),
                    "its classic tracepoint needs tracefs: grant CAP_DAC_READ_SEARCH",
                ),
            })
            .collect(),
        Err(e) => vec![Finding::not_ok(
            Status::Degraded,
            subject,
            format!("the kvm tp_btf probes could not be tried: {}", chain(&e)),
            "grant CAP_BPF and CAP_PERFMON, then check again",
        )],
    }
}

/// The preflight as text: one line per finding, its remedy below it.
pub fn render(p: &Preflight) -> String {
    let mut s = String::new();
    for f in &p.findings {
        let tag = match f.status {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Fails => "FAILS",
        };
        s.push_str(&format!("[{tag:>8}] {:<16} {}\n", f.subject, f.detail));
        if let Some(r) = &f.remedy {
            s.push_str(&format!("{:>28}{r}\n", "-> "));
        }
    }
    s.push_str(match p.record_can_run() {
        true => "vmmtrace record can run on this host.\n",
        false => "vmmtrace record cannot run on this host: see the FAILS lines.\n",
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_is_enough_to_say_record_cannot_run() {
        let mut p = Preflight { findings: vec![Finding::ok("kernel", "6.18")] };
        assert!(p.record_can_run());
        p.findings.push(Finding::not_ok(Status::Degraded, "btf", "absent", "rebuild"));
        assert!(p.record_can_run());
        p.findings.push(Finding::not_ok(Status::Fails, "tracefs", "absent", "mount it"));
        assert!(!p.record_can_run());
        let text = render(&p);
        assert!(text.contains("[   FAILS] tracefs"), "{text}");
        assert!(text.contains("-> mount it"), "{text}");
        assert!(text.ends_with("see the FAILS lines.\n"), "{text}");
    }
}
