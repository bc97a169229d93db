//! What the guest-program tests and the guest-program benchmark both need (the
//! benchmark includes this file with `#[path]`).

use std::path::Path;

/// Writes `bytes` of compressible but not trivial text to `path` (words, line breaks
/// and numbers from a fixed xorshift sequence): the same on every run, so that bzip2's
/// output can be compared byte for byte between the guest and the host.
pub fn generate_text(path: &Path, bytes: usize) {
    let words = ["kvm", "guest", "exit", "vcpu", "bzip2", "trace", "host", "emulator", "qemu", "ring"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(bytes + 16);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 10) as usize].as_bytes());
        out.push(if x.is_multiple_of(13) { b'\n' } else { b' ' });
        if x.is_multiple_of(7) {
            out.extend_from_slice(format!("{}", x % 100_000).as_bytes());
        }
    }
    out.truncate(bytes);
    std::fs::write(path, out).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
