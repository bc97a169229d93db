//! /proc/<pid>/stat, status, cmdline and syscall, /sys CPU lists, /proc/kallsyms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmmtrace::{
    host::{format_cpu_list, in_kvm_run, parse_cmdline, parse_cpu_list, parse_stat, parse_status},
    probe::kallsyms::symbol_ranges,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_cmdline(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_stat(text);
    let _ = parse_status(text);
    let _ = in_kvm_run(text);
    let _ = symbol_ranges(text, &["pvm_do_event_irqoff", "vmx_do_interrupt_irqoff"]);
    if let Ok(cpus) = parse_cpu_list(text) {
        // What parses reads back the same once formatted.
        assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)).unwrap(), cpus);
    }
});
