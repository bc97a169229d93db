//! tracefs `events/<category>/<name>/format` files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmmtrace::probe::tracefs::parse_format;

fuzz_target!(|text: &str| {
    if let Ok(format) = parse_format(text) {
        let _ = format.offset("sched_switch", "prev_state");
    }
});
