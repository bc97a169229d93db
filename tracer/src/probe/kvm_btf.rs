//! Policy: which kvm tracepoints run as tp_btf programs (no tracefs needed, and
//! cheaper per event than a classic tracepoint) rather than as classic tracepoints.
//! A kvm tracepoint runs as tp_btf where the kernel's BTF has its `btf_trace_<name>`
//! prototype with the arguments the program reads, and, for kvm_exit, the vendor
//! structs its exit reason is read from; else as the classic tracepoint.

use std::collections::HashMap;

use tracer_common::{kvm_btf_off, names::program};

use super::btf::{Btf, BtfError};

/// 32-bit integer spellings a prototype may use for a `u32` argument.
const U32: &[&str] = &["u32", "__u32", "unsigned int"];

/// The arguments a tp_btf program reads: (index after the context, accepted types).
type Expected = &'static [(usize, &'static [&'static str])];

/// The classic program, its tp_btf twin, and the arguments the twin reads.
const KVM_PROGRAMS: &[(&str, &str, Expected)] = &[
    (program::KVM_ENTRY, program::KVM_ENTRY_BTF, &[]),
    (program::KVM_EXIT, program::KVM_EXIT_BTF, &[(0, &["struct kvm_vcpu*"]), (1, U32)]),
    (program::KVM_USERSPACE_EXIT, program::KVM_USERSPACE_EXIT_BTF, &[(0, U32)]),
];

/// The tp_btf twin of a classic kvm program and what it reads (event slots read nothing).
fn twin(classic: &str) -> Option<(&'static str, Expected)> {
    if let Some(&(_, btf, expected)) = KVM_PROGRAMS.iter().find(|(c, ..)| *c == classic) {
        return Some((btf, expected));
    }
    let slot = program::KVM_EVENT.iter().position(|p| *p == classic)?;
    Some((program::KVM_EVENT_BTF[slot], &[]))
}

/// What the load step learned: the `KVM_BTF_OFFSETS` global, and per classic kvm
/// program either its tp_btf twin or why the classic tracepoint is used.
#[derive(Debug, Default)]
pub struct KvmBtfPlan {
    pub offsets: [u32; kvm_btf_off::COUNT],
    choice: HashMap<&'static str, Result<&'static str, String>>,
}

impl KvmBtfPlan {
    /// Every kvm program's path on this kernel; `forced_classic` (or no kernel BTF)
    /// keeps them all classic, with the reason.
    pub fn choose(forced_classic: bool) -> KvmBtfPlan {
        let btf = match forced_classic {
            true => Err("not requested (--classic-kvm)".to_string()),
            false => Btf::from_sys_fs().map_err(|e| crate::error::chain(&e)),
        };
        let mut plan = KvmBtfPlan::default();
        let exit_offsets = btf.as_ref().map_err(Clone::clone).and_then(exit_reason_offsets);
        if let Ok(offsets) = &exit_offsets {
            plan.offsets = *offsets;
        }
        let classics = KVM_PROGRAMS.iter().map(|(c, ..)| *c).chain(program::KVM_EVENT);
        for (classic, tracepoint) in classics.zip(tracepoints()) {
            let (btf_program, expected) = twin(classic).expect("every kvm program has a twin");
            let chosen = btf
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|b| check_prototype(b, tracepoint, expected))
                .and_then(|()| match classic == program::KVM_EXIT {
                    true => exit_offsets.as_ref().map(|_| ()).map_err(Clone::clone),
                    false => Ok(()),
                })
                .map(|()| btf_program);
            plan.choice.insert(classic, chosen);
        }
        plan
    }

    /// The tp_btf program that replaces `classic`, or why there is none.
    pub fn btf_program(&self, classic: &str) -> Result<&'static str, String> {
        self.choice.get(classic).cloned().unwrap_or_else(|| Err(format!("{classic} has no tp_btf twin")))
    }
}

/// The tracepoint each program of `KVM_PROGRAMS` then `KVM_EVENT` attaches to.
fn tracepoints() -> impl Iterator<Item = &'static str> {
    ["kvm_entry", "kvm_exit", "kvm_userspace_exit"]
        .into_iter()
        .chain(super::table::KVM_EVENT_SLOTS.iter().map(|e| e.name))
        .chain(std::iter::repeat("(no event for this slot)"))
}

/// Ok where `btf_trace_<tracepoint>` has the `expected` argument types.
pub fn check_prototype(btf: &Btf, tracepoint: &str, expected: Expected) -> Result<(), String> {
    let params = btf.typedef_proto_param_types(&format!("btf_trace_{tracepoint}")).map_err(|e| e.to_string())?;
    // params[0] is the `void *` context; the tracepoint's own arguments follow.
    for &(i, types) in expected {
        match params.get(i + 1) {
            Some(t) if types.contains(&t.as_str()) => {}
            found => {
                return Err(format!(
                    "argument {i} of {tracepoint} in the kernel's BTF is {}, expected {}",
                    found.map_or("missing", String::as_str),
                    types.join(" or ")
                ));
            }
        }
    }
    Ok(())
}

/// Where the vendor code keeps the exit reason that the classic kvm_exit record
/// copies (`get_exit_info`), relative to the `struct kvm_vcpu *` argument. A backend
/// whose vCPU struct is not in the kernel's BTF is not built in and cannot fire
/// kvm_exit (offset 0); one that is there but lacks the member fails the choice.
fn exit_reason_offsets(btf: &Btf) -> Result<[u32; kvm_btf_off::COUNT], String> {
    let mut off = [0; kvm_btf_off::COUNT];
    let err = |e: BtfError| format!("{e}: the exit reason cannot be read from tp_btf kvm_exit's arguments");
    let in_vcpu = |outer: &str, member: &str| -> Result<u32, BtfError> {
        let at = btf.member_offset(outer, member)?;
        let vcpu = btf.member_offset(outer, "vcpu")?;
        Ok(at.wrapping_sub(vcpu))
    };
    if btf.has_struct("vcpu_vmx") {
        off[kvm_btf_off::VMX_EXIT_REASON] = in_vcpu("vcpu_vmx", "exit_reason").map_err(err)?;
    }
    if btf.has_struct("vcpu_svm") {
        off[kvm_btf_off::SVM_VMCB] = in_vcpu("vcpu_svm", "vmcb").map_err(err)?;
        let control = btf.member_offset("vmcb", "control").map_err(err)?;
        let code = btf.member_offset("vmcb_control_area", "exit_code").map_err(err)?;
        off[kvm_btf_off::SVM_EXIT_CODE] = control + code;
    }
    if btf.has_struct("vcpu_pvm") {
        off[kvm_btf_off::PVM_EXIT_REASON] = in_vcpu("vcpu_pvm", "exit_reason").map_err(err)?;
    }
    if off == [0; kvm_btf_off::COUNT] {
        return Err("no KVM backend's vCPU struct (vcpu_vmx, vcpu_svm, vcpu_pvm) in the kernel's BTF".into());
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kvm_program_and_event_slot_has_a_twin() {
        for p in KVM_PROGRAMS.iter().map(|(c, ..)| *c).chain(program::KVM_EVENT) {
            let (btf, _) = twin(p).unwrap();
            assert!(btf.ends_with("_btf") || btf.contains("_btf_"), "{p} -> {btf}");
        }
        assert!(twin(program::SCHED_SWITCH_TP).is_none());
    }

    #[test]
    fn forced_classic_says_why_for_each_program() {
        let plan = KvmBtfPlan::choose(true);
        let err = plan.btf_program(program::KVM_EXIT).unwrap_err();
        assert!(err.contains("not requested"), "{err}");
        assert!(plan.btf_program(program::KVM_EVENT[7]).is_err());
    }
}
