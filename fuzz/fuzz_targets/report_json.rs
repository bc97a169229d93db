//! Report files, of this schema, older or foreign ones, or none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmmtrace::report::{Report, render_text};

fuzz_target!(|text: &str| {
    if let Ok(report) = Report::from_json(text) {
        let _ = render_text(&report, 20);
    }
});
