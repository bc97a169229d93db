//! Guest physical memory layout (identity-mapped). Mirrors `guest/layout.h`.

/// CPL0 stub (`.cpl0` section of the guest ELF).
pub const STUB_BASE: u64 = 0x1000;
pub const STUB_ENTRY: u64 = STUB_BASE;
pub const STUB_TIMER_ISR: u64 = STUB_BASE + 0x100;
pub const STUB_EXC_BASE: u64 = STUB_BASE + 0x200;
/// Guest programs: SYSCALL entry (LSTAR) and the SYSRETQ used where it ran at CPL0.
pub const STUB_SYSCALL: u64 = STUB_BASE + 0x800;
pub const STUB_SYSRET_CPL0: u64 = STUB_BASE + 0x810;
/// Interrupt descriptor table (256 x 16-byte gates) and its pseudo-descriptor.
pub const IDT_BASE: u64 = 0x2000;
pub const IDTR_ADDR: u64 = 0x3000;
/// Page tables: PML4, PDPT, 4 page directories (identity map 0..4 GiB with 2 MiB pages).
pub const PML4: u64 = 0x8000;
pub const PDPT: u64 = 0x9000;
pub const PD0: u64 = 0xA000;
pub const IDENTITY_GIB: u64 = 4;
/// Per-vCPU 16 KiB blocks: GDT (+0), params (+0x100), timer count (+0x300), TSS with
/// an I/O permission bitmap (+0x400), CPL0 stack (top = end of block).
pub const VCPU_BLOCK: u64 = 0x10_0000;
pub const VCPU_BLOCK_SZ: u64 = 0x4000;
pub const GDT_OFF: u64 = 0;
pub const TSS_OFF: u64 = 0x400;
/// TSS: 0x68 bytes, then an I/O bitmap allowing ports 0..0x3ff, then the 0xff terminator.
pub const TSS_IOPB: u64 = 0x68;
pub const TSS_LIMIT: u64 = TSS_IOPB + 0x80;
pub const PARAMS_OFF: u64 = 0x100;
pub const TIMER_OFF: u64 = 0x300;
/// Guest ELF (workload + libbz2) is linked at 0x400000 and must end below USER_BASE.
pub const ELF_BASE: u64 = 0x40_0000;
pub const ELF_LIMIT: u64 = 0x100_0000;
/// Per-vCPU user regions: heap from the bottom, stack from the top.
pub const USER_BASE: u64 = 0x100_0000;
pub const USER_REGION: u64 = 32 << 20;
pub const USER_STACK_RESERVE: u64 = 2 << 20;
/// At most this many vCPUs fit in the per-vCPU block area.
/// (blocks fit up to 0x400000 = 192; user regions within the 4 GiB identity map limit it more)
pub const MAX_VCPUS: u32 = 64;

pub const PORT_PROGRESS: u16 = 0x10;
pub const PORT_DONE: u16 = 0x11;
pub const PORT_BZ_ERROR: u16 = 0x12;
pub const PORT_FAULT: u16 = 0x13;
pub const PORT_SYSCALL: u16 = 0x14;

/// Linux-like GDT selectors (PVM wants these for native user mode).
pub const KERNEL_CS: u16 = 0x10;
pub const KERNEL_DS: u16 = 0x18;
pub const USER_DS: u16 = 0x2b;
pub const USER_CS: u16 = 0x33;
pub const TSS_SEL: u16 = 0x40;

pub const TIMER_VECTOR: usize = 0x40;

pub fn vcpu_block(i: u32) -> u64 {
    VCPU_BLOCK + i as u64 * VCPU_BLOCK_SZ
}
pub fn user_region(i: u32) -> u64 {
    USER_BASE + i as u64 * USER_REGION
}
pub fn mem_size(vcpus: u32) -> u64 {
    USER_BASE + vcpus as u64 * USER_REGION
}
