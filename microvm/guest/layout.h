/* Guest physical (= virtual, identity-mapped) layout shared by the VMM (src/layout.rs
 * mirrors these numbers) and the guest code. Keep the two in sync. */
#ifndef MICROVM_LAYOUT_H
#define MICROVM_LAYOUT_H
#define STUB_BASE      0x1000   /* .cpl0 section: CPL0 entry, timer ISR, exception stubs */
#define IDT_BASE       0x2000   /* 256 x 16-byte gates, written by the VMM */
#define IDTR_ADDR      0x3000   /* 10-byte pseudo-descriptor for lidt, written by the VMM */
#define VCPU_BLOCK     0x100000 /* per-vCPU 16 KiB blocks: GDT, TSS, params, timer count, CPL0 stack */
#define VCPU_BLOCK_SZ  0x4000
#define TIMER_OFF      0x300    /* u64 timer interrupt count, inside the vCPU block */
#define PORT_PROGRESS  0x10     /* out: every K work units (eax = units done) */
#define PORT_DONE      0x11     /* out: workload finished (eax = status) */
#define PORT_BZ_ERROR  0x12     /* out: bz_internal_error (eax = code) */
#define PORT_FAULT     0x13     /* out: CPU exception (eax = vector) */
#define PORT_SYSCALL   0x14     /* out: a guest program's system call (registers as at SYSCALL) */
#endif
