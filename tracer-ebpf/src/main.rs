// no_std/no_main only for the BPF target, so that a host build of the workspace
// (clippy, check) does not fail on a duplicate panic handler.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

//! vmmtrace's eBPF programs, one file per hook family. All accounting goes through the
//! pure state machines of `tracer-common`; this crate only reads tracepoint arguments
//! and updates maps.

#[cfg(target_arch = "bpf")]
mod exit;
#[cfg(target_arch = "bpf")]
mod kvm;
#[cfg(target_arch = "bpf")]
mod ledger;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod sched;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod timeline;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Host build of the eBPF crate: nothing to run.
}
