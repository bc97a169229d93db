/* Guest physical (= virtual: identity-mapped) layout and the ports the guest uses,
 * shared by the boot code, the CPL3 runtime and the host (src/layout.rs mirrors these
 * numbers and the two structs; keep them in sync). */
#ifndef VMM_QEMU_LAYOUT_H
#define VMM_QEMU_LAYOUT_H

#define MAX_VCPUS        16

/* Mailbox shared with the host through QEMU's file-backed guest RAM (share=on). */
#define MAILBOX          0x100000
#define MAILBOX_SIZE     0x2000
#define MAILBOX_MAGIC    0x756d65716d6d76ull /* "vmmqemu" */
#define MB_SLOTS_OFF     0x100               /* struct vcpu_slot[MAX_VCPUS], 256 bytes each */
#define SLOT_SIZE        0x100
#define MB_FAULT_OFF     0x20                /* u64[8]: vector, error, rip, cs, rflags, rsp, cr2, valid */
/* Guest programs: the system call being served (struct syscall_box in user.c). */
#define MB_SYSCALL_OFF   0x1100
#define SC(off)          (MAILBOX + MB_SYSCALL_OFF + (off))
#define SC_AT(off)       MAILBOX + MB_SYSCALL_OFF + off  /* the same, as an assembler operand */
#define SC_NR            0       /* rax, then rdi, rsi, rdx, r10, r8, r9 at 8..48 */
#define SC_RIP           56      /* rcx and r11 as SYSCALL left them */
#define SC_RFLAGS        64
#define SC_RESULT        72      /* host -> guest: rax, or the FS base for SC_SET_FS */
#define SC_ACTION        80      /* host -> guest: SC_RETURN, SC_SET_FS, SC_EXIT */
#define SC_ENTRY         96      /* host -> guest: the program's entry point ... */
#define SC_SP            104     /* ... and initial stack pointer */
#define SC_COUNT         112     /* system calls made (guest's count) */
#define SC_RETURN        0
#define SC_SET_FS        1
#define SC_EXIT          2

/* The CPL0 section, at a fixed address so that the IDT gates and TSS descriptors are
 * assembly-time constants. */
#define CPL0_BASE        0x102000
#define ISR_TIMER_OFF    0x200   /* vector 0x40: guest APIC timer */
#define SVC_TIMER_OFF    0x280   /* int 0x80 (CPL3): edi = APIC initial count, 0 = stop */
#define SVC_HALT_OFF     0x300   /* int 0x81 (CPL3): halt this vCPU for good */
#define SVC_WAKE_OFF     0x340   /* int 0x82 (CPL3, BSP): INIT/SIPI to every other vCPU */
#define EXC_OFF          0x400   /* exception v (0..31) at EXC_OFF + 16 v */
#define EXC_COMMON_OFF   0x600
#define SYSCALL_OFF      0x700   /* LSTAR: CPL3 on PVM, CPL0 elsewhere */
#define TSS_OFF          0x1000  /* MAX_VCPUS x 256 bytes */
#define IDT_OFF          0x2000  /* 256 x 16 bytes */
#define GDT_OFF          0x3000
#define CPL0_SIZE        0x4000

#define VEC_TIMER        0x40
#define VEC_SVC_TIMER    0x80
#define VEC_SVC_HALT     0x81
#define VEC_SVC_WAKE     0x82

/* Per-vCPU heap regions. */
#define VCPU_REGION_BASE 0x1000000
#define VCPU_REGION_SIZE 0x2000000
/* CPL3 stacks of the runtime, below 4 MiB (where a guest program's memory starts). */
#define USER_STACKS      0x200000
#define USER_STACK_SIZE  0x10000

/* Real-mode trampoline for the other vCPUs (SIPI vector 0x08). */
#define AP_TRAMPOLINE    0x8000

/* Ports (QEMU devices, see src/command.rs). */
#define PORT_CONSOLE     0xe9    /* isa-debugcon -> the host reads lines on QEMU's stdout */
#define PORT_PROGRESS    0xea    /* isa-debugcon -> a file: one byte per progress exit */
#define PORT_SERIAL      0x3f8   /* guest programs: a 16550 on a socket to vmmtrace (THR/RBR) ... */
#define PORT_SERIAL_LSR  0x3fd   /* ... and its line status (bit 0: a byte arrived) */
#define PORT_EXIT        0xf4    /* isa-debug-exit: QEMU exits with (value << 1) | 1 */
#define EXIT_OK          0x10    /* -> QEMU exit status 33 */
#define EXIT_FAULT       0x7f    /* -> 255: a CPU exception, details in the mailbox */

/* Kernel stacks: 4 KiB per vCPU; the top 64 bytes hold per-vCPU counters, RSP0 below. */
#define KSTACK_SIZE      0x1000
#define KSTACK_RESERVE   64      /* [RSP0 + 0]: timer interrupts taken */
#endif
