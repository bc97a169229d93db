//! Unmodified Linux x86-64 programs as the micro-VM's guest (issue 9): the program runs
//! at CPL3 with no guest kernel; each of its system calls exits to the VMM, which
//! serves it against the host.
//!
//! The pieces are platform-independent and reusable (for instance by a QEMU-based
//! runner that shares guest RAM and passes registers through a mailbox):
//! * [`load`] puts a program, its interpreter and its initial stack into guest RAM (a
//!   `&mut [u8]` from guest-physical 0, identity-mapped by the VM) per a [`Layout`];
//! * [`SyscallServer::serve`] performs one [`Syscall`] on that RAM and says what to do
//!   next ([`Outcome`]);
//! * [`kvm::run`] is the KVM platform (vCPU thread "CPU 0/KVM"), [`ptrace::run`] a
//!   ptrace one.

pub mod kvm;
mod loader;
mod names;
pub mod ptrace;
mod server;
mod space;

pub use kvm::{ProgramConfig, ProgramTruth};
pub use loader::{Loaded, ProgramSpec, load};
pub use names::syscall_name;
pub use server::{CallStat, Outcome, Policy, Syscall, SyscallServer, SyscallStats};
pub use space::{AddressSpace, GuestMemory, Layout};
