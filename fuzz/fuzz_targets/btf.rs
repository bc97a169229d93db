//! The kernel's BTF (/sys/kernel/btf/vmlinux): what the probes look up in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmmtrace::probe::btf::Btf;

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data.to_vec()) {
        let _ = btf.member_offset("task_struct", "pid");
        let _ = btf.typedef_proto_params("btf_trace_sched_switch");
        let _ = btf.typedef_proto_param_types("btf_trace_sched_switch");
        let _ = btf.has_struct("vcpu_vmx");
    }
});
