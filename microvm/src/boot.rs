//! Boot tables the VMM writes into guest memory before the first KVM_RUN: the identity
//! page map, the IDT pointing at the CPL0 stub, and each vCPU's Linux-like GDT and TSS;
//! plus the matching segment registers (`long_mode_sregs`).

use kvm_bindings::{kvm_segment, kvm_sregs};

use crate::Error;
use crate::layout::*;
use crate::mem::GuestMem;

/// Identity-maps guest-physical 0..`bytes` (rounded up to 2 MiB) with 2 MiB pages,
/// present, writable and user-accessible: no guest page fault ever needs CPL0 code.
pub(crate) fn write_page_tables(mem: &GuestMem, bytes: u64) -> Result<(), Error> {
    let pages = bytes.div_ceil(2 << 20);
    let gib = pages.div_ceil(512);
    if PD0 + gib * 0x1000 > VCPU_BLOCK {
        return Err(Error::Config(format!("{} GiB of guest RAM is more than the page tables can map", bytes >> 30)));
    }
    mem.write_u64(PML4, PDPT | 7)?;
    for g in 0..gib {
        let pd = PD0 + g * 0x1000;
        mem.write_u64(PDPT + g * 8, pd | 7)?;
        for i in 0..512u64.min(pages - g * 512) {
            mem.write_u64(pd + i * 8, ((g << 30) | (i << 21)) | 0x87)?; // P RW US PS
        }
    }
    Ok(())
}

fn interrupt_gate(handler: u64) -> [u8; 16] {
    let lo = (handler & 0xffff) | ((KERNEL_CS as u64) << 16) | (0x8eu64 << 40) | (((handler >> 16) & 0xffff) << 48);
    let hi = handler >> 32;
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&lo.to_le_bytes());
    g[8..].copy_from_slice(&hi.to_le_bytes());
    g
}

/// IDT: exceptions 0..31 and the timer vector, 64-bit interrupt gates (DPL0) into the
/// stub, and the pseudo-descriptor the stub's `lidt` loads.
pub(crate) fn write_idt(mem: &GuestMem) -> Result<(), Error> {
    for v in 0..32u64 {
        mem.write(IDT_BASE + v * 16, &interrupt_gate(STUB_EXC_BASE + 16 * v))?;
    }
    mem.write(IDT_BASE + TIMER_VECTOR as u64 * 16, &interrupt_gate(STUB_TIMER_ISR))?;
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&((256 * 16 - 1) as u16).to_le_bytes());
    idtr[2..].copy_from_slice(&IDT_BASE.to_le_bytes());
    mem.write(IDTR_ADDR, &idtr)
}

/// vCPU `i`'s block: Linux-like GDT, TSS (RSP0 = top of the block) with an I/O bitmap,
/// and a zeroed timer count.
pub(crate) fn write_vcpu_block(mem: &GuestMem, i: u32) -> Result<(), Error> {
    let b = vcpu_block(i);
    let tss = b + TSS_OFF;
    let gdt: [u64; 10] = [
        0,
        0x00cf_9b00_0000_ffff, // 0x08 kernel 32-bit code
        0x00af_9b00_0000_ffff, // 0x10 __KERNEL_CS
        0x00cf_9300_0000_ffff, // 0x18 __KERNEL_DS
        0x00cf_fb00_0000_ffff, // 0x20 __USER32_CS
        0x00cf_f300_0000_ffff, // 0x28 __USER_DS
        0x00af_fb00_0000_ffff, // 0x30 __USER_CS
        0,
        TSS_LIMIT | ((tss & 0xff_ffff) << 16) | (0x89u64 << 40) | (((tss >> 24) & 0xff) << 56), // 0x40 TSS
        tss >> 32,
    ];
    for (k, d) in gdt.iter().enumerate() {
        mem.write_u64(b + GDT_OFF + k as u64 * 8, *d)?;
    }
    // I/O permission bitmap (all ports 0..0x3ff allowed). IOPL=3 alone would do on
    // VT-x/AMD-V, but PVM runs CPL3 with hardware IOPL 0 and honours the bitmap.
    mem.zero(tss, TSS_LIMIT)?;
    mem.write_u64(tss + 4, b + VCPU_BLOCK_SZ)?; // RSP0
    mem.write(tss + 0x66, &(TSS_IOPB as u16).to_le_bytes())?;
    mem.write(tss + TSS_LIMIT, &[0xff])?;
    mem.write_u64(b + TIMER_OFF, 0)
}

fn seg(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: if long { 0 } else { 1 },
        s: 1,
        l: long as u8,
        g: 1,
        ..Default::default()
    }
}

/// Special registers for vCPU `i` starting at the stub in 64-bit CPL0 with the tables
/// above (paging on, EFER.SCE for SYSCALL).
pub(crate) fn long_mode_sregs(mut s: kvm_sregs, i: u32) -> kvm_sregs {
    let b = vcpu_block(i);
    s.gdt.base = b + GDT_OFF;
    s.gdt.limit = 10 * 8 - 1;
    s.cs = seg(KERNEL_CS, 0xb, true);
    s.ds = seg(KERNEL_DS, 0x3, false);
    s.es = s.ds;
    s.fs = s.ds;
    s.gs = s.ds;
    s.ss = s.ds;
    s.tr = kvm_segment {
        base: b + TSS_OFF,
        limit: TSS_LIMIT as u32,
        selector: TSS_SEL,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    s.cr3 = PML4;
    s.cr4 = 0x20 | 0x200 | 0x400 | 0x1_0000; // PAE OSFXSR OSXMMEXCPT FSGSBASE
    s.cr0 = 0x8005_0033; // PG AM WP NE ET MP PE
    s.efer = 0x501; // SCE LME LMA
    s
}
