//! Values users type (durations) and small texts the preflight reads (CapEff,
//! kernel release, kernel log).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmmtrace::{
    check::{kernel_version, last_kvm_refusal},
    cli::parse_duration,
    probe::privileges::parse_cap_eff,
};

fuzz_target!(|text: &str| {
    if let Ok(d) = parse_duration(text) {
        assert!(!d.is_zero());
    }
    let _ = parse_cap_eff(text);
    let _ = kernel_version(text);
    let _ = last_kvm_refusal(text);
});
