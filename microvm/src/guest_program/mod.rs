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
//!
//! A platform of its own (e.g. QEMU with guest RAM in shared memory) drives them so:
//!
//! ```no_run
//! use std::path::Path;
//! use microvm::guest_program::{Layout, Outcome, Policy, ProgramSpec, Syscall, SyscallServer, load};
//!
//! let mut ram = vec![0u8; 512 << 20]; // guest RAM from guest-physical 0, identity-mapped
//! let spec = ProgramSpec::from_command(Path::new("bzip2"), &["-9".into(), "-c".into(), "f".into()])?;
//! let layout = Layout::new(ram.len() as u64);
//! let loaded = load(&mut ram, layout, &spec)?;
//! let mut server = SyscallServer::new(&loaded, Policy::default())?;
//! // start the vCPU at CPL3: RIP = loaded.entry, RSP = loaded.stack_pointer, RDX = 0;
//! // then at each SYSCALL (RAX = number; RDI, RSI, RDX, R10, R8, R9 = arguments):
//! let call = Syscall { nr: 39, args: [0; 6] };
//! match server.serve(&mut ram, call)? {
//!     Outcome::Return(rax) => { /* RAX = rax, resume after the SYSCALL */ }
//!     Outcome::SetFsBase(base) => { /* FS.base = base, RAX = 0, resume */ }
//!     Outcome::Exit(status) => { /* the program is done */ }
//! }
//! println!("{} system calls", server.stats().total);
//! # Ok::<(), String>(())
//! ```

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
