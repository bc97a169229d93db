//! The one printer of error chains, for messages shown to the user (`main`) and for
//! the reasons the report gives for an unavailable probe.

use std::error::Error;

/// `e` and its sources, joined by ": ", each said once: a source whose text the
/// message already contains is skipped (aya's `ProgramError::LoadError` prints its
/// `io_error` in its own message and also returns it as its source).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("load returned {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn sources_are_joined_once() {
        let io = || std::io::Error::from_raw_os_error(22);
        assert_eq!(chain(&Outer(io())), "outer: Invalid argument (os error 22)");
        assert_eq!(chain(&Repeats(io())), "load returned Invalid argument (os error 22)");
    }
}
