//! The guest's memory layout and ports, mirrored from guest/layout.h and the structs
//! of guest/user.c. Keep the three in sync.

pub const MAX_VCPUS: u32 = 16;

/// Guest-physical address of the mailbox the host and the guest share.
pub const MAILBOX: u64 = 0x100000;
pub const MAILBOX_MAGIC: u64 = 0x0075_6d65_716d_6d76;
pub const MB_SLOTS_OFF: u64 = 0x100;
pub const SLOT_SIZE: u64 = 0x100;

/// Per-vCPU memory (heap and CPL3 stack) starts at 16 MiB, 32 MiB each.
pub const VCPU_REGION_BASE: u64 = 0x100_0000;
pub const VCPU_REGION_SIZE: u64 = 0x200_0000;

pub const PORT_CONSOLE: u16 = 0xe9;
pub const PORT_PROGRESS: u16 = 0xea;
/// Guest programs: the 16550 whose chardev is vmmtrace's system-call socket.
pub const PORT_SERIAL: u16 = 0x3f8;
pub const PORT_EXIT: u16 = 0xf4;
/// QEMU's exit status when the guest wrote EXIT_OK (0x10) to isa-debug-exit: (0x10 << 1) | 1.
pub const QEMU_STATUS_OK: i32 = 33;
/// ... and when the guest's exception handler wrote EXIT_FAULT (0x7f).
pub const QEMU_STATUS_FAULT: i32 = 255;

/// Guest RAM for `vcpus` vCPUs, in MiB: the image below 16 MiB, then one region each.
pub fn ram_mib(vcpus: u32) -> u64 {
    (VCPU_REGION_BASE + VCPU_REGION_SIZE * vcpus as u64) >> 20
}

/// Offsets in the mailbox header (`struct mailbox`).
pub mod mailbox {
    pub const MAGIC: u64 = 0;
    pub const GO: u64 = 8;
    pub const EXIT_REQ: u64 = 16;
    pub const DONE: u64 = 24;
    /// u64[8]: vector, error code, rip, cs, rflags, rsp, cr2, valid.
    pub const FAULT: u64 = 32;
    pub const VCPUS: u64 = 104;
    pub const APIC_X2: u64 = 112;
}

/// Offsets in a vCPU's slot (`struct vcpu_slot`); `params` is `struct wl_params`.
pub mod slot {
    pub const STATE: u64 = 0;
    pub const EXITS: u64 = 8;
    pub const EXITS_BEFORE_GO: u64 = 16;
    pub const PROGRESS_EXITS: u64 = 24;
    pub const TIMER_INTERRUPTS: u64 = 32;
    pub const TSC_GO: u64 = 40;
    pub const TSC_START: u64 = 48;
    pub const TSC_END: u64 = 56;
    const PARAMS: u64 = 64;
    pub const UNITS_DONE: u64 = PARAMS + 56;
    pub const CHECKSUM: u64 = PARAMS + 64;
    pub const STATUS: u64 = PARAMS + 72;
    /// `state` once the vCPU finished its work.
    pub const STATE_DONE: u64 = 3;
}

/// The system call being served (`SC_*` in layout.h), at MAILBOX + MB_SYSCALL_OFF.
pub mod syscall {
    pub const BASE: u64 = super::MAILBOX + 0x1100;
    pub const NR: u64 = BASE;
    /// rdi, rsi, rdx, r10, r8, r9.
    pub const ARGS: u64 = BASE + 8;
    pub const RESULT: u64 = BASE + 72;
    pub const ACTION: u64 = BASE + 80;
    pub const ENTRY: u64 = BASE + 96;
    pub const SP: u64 = BASE + 104;
    pub const COUNT: u64 = BASE + 112;
    pub const RETURN: u64 = 0;
    pub const SET_FS: u64 = 1;
    pub const EXIT: u64 = 2;
}

/// Address of vCPU `index`'s slot.
pub fn slot_addr(index: u32) -> u64 {
    MAILBOX + MB_SLOTS_OFF + SLOT_SIZE * index as u64
}
