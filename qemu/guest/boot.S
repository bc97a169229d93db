/*
 * The CPL0 part of the QEMU guest: PVH entry (32-bit, paging off) -> long mode with an
 * identity map of the first 4 GiB -> Linux-like GDT, a TSS with an I/O bitmap per vCPU,
 * a static IDT -> iretq to CPL3 user_main(cpu) (user.c).
 *
 * Everything here runs at CPL0, which PVM emulates (~4000x slower than native), so it
 * is kept to a few dozen instructions per event and every table is static. CPL3 asks
 * for the rest through three software interrupts (timer, halt, wake the other vCPUs).
 * The APIC is driven as x2APIC (MSRs) where CPUID offers it (KVM), else through its
 * xAPIC registers at 0xfee00000 (QEMU 7.2's TCG has no x2APIC).
 *
 * The section sits at CPL0_BASE (layout.h), so the IDT gates and TSS descriptors are
 * assembly-time constants: no code patches tables at run time.
 */
#include "layout.h"
#include "exception_stubs.inc"

#define TSS_LEN (0x68 + 128 + 1)	/* header, I/O bitmap for ports 0..0x3ff, terminator */
#define IDT_ENTRIES (VEC_SVC_WAKE + 1)

	.section .note.pvh, "a", @note	/* XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point */
	.p2align 2
	.long 4, 8, 18
	.asciz "Xen"
	.p2align 2
	.quad entry32
	.p2align 2

	.section .cpl0, "awx"
	.code32
	.globl entry32
entry32:
	cli
	/* qboot enters PVH kernels with eax = the multiboot magic: test the PVH start_info
	 * magic at [ebx]; its cmdline_paddr is at +24. */
	cmpl $0x336ec578, (%ebx)
	jne 1f
	mov 24(%ebx), %eax
	mov %eax, boot_cmdline
1:	xor %edi, %edi			/* vCPU index 0 */
common32:
	lgdt gdtr
	mov $pml4, %eax
	mov %eax, %cr3
	mov $0x10620, %eax		/* PAE | OSFXSR | OSXMMEXCPT | FSGSBASE */
	mov %eax, %cr4
	mov $0xC0000080, %ecx		/* EFER = SCE | LME | NXE */
	rdmsr
	or $0x901, %eax
	wrmsr
	mov $0x80050033, %eax		/* PG | AM | WP | NE | ET | MP | PE */
	mov %eax, %cr0
	ljmp $0x10, $entry64

	.code64
entry64:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov %edi, %r12d
	lea 1(%r12), %rax
	shl $12, %rax
	lea kstacks - KSTACK_RESERVE(%rax), %rsp	/* RSP0 of this vCPU */
	mov $0xC0000081, %ecx		/* STAR as Linux sets it (PVM wants it) */
	xor %eax, %eax
	mov $0x00230010, %edx
	wrmsr
	mov $0xC0000082, %ecx		/* LSTAR: system calls of a guest program */
	mov $(CPL0_BASE + SYSCALL_OFF), %eax
	xor %edx, %edx
	wrmsr
	mov %r12d, %eax
	shl $4, %eax
	add $0x40, %eax
	ltr %ax
	lidt idtr
	mov $1, %eax
	cpuid
	bt $21, %ecx			/* x2APIC? */
	jnc 2f
	movb $1, apic_x2(%rip)
	mov $0x1b, %ecx
	rdmsr
	or $0xc00, %eax
	wrmsr
2:	mov %r12d, %edi			/* user_main(cpu) on its own stack */
	lea 1(%r12), %rax
	shl $16, %rax
	add $USER_STACKS, %rax
	pushq $0x2b			/* SS */
	push %rax			/* RSP */
	pushq $0x2			/* RFLAGS: IOPL 0 (the TSS bitmap allows the ports), IF 0 */
	pushq $0x33			/* CS */
	pushq $user_entry		/* RIP */
	iretq

/* ecx = xAPIC register offset, eax = value; clobbers ecx, edx. */
apic_write:
	testb $1, apic_x2(%rip)
	jz 1f
	shr $4, %ecx
	add $0x800, %ecx
	xor %edx, %edx
	wrmsr
	ret
1:	mov $0xfee00000, %edx
	add %ecx, %edx
	mov %eax, (%rdx)
	ret

	.org ISR_TIMER_OFF
timer_isr:
	/* Only taken at CPL3 (CPL0 never sets IF): the CPU switched to RSP0 and pushed a
	 * 40-byte frame, so the counter at [RSP0] is 64 bytes above after three pushes. */
	push %rax
	push %rcx
	push %rdx
	incq 64(%rsp)
	mov $0xb0, %ecx			/* EOI */
	xor %eax, %eax
	call apic_write
	pop %rdx
	pop %rcx
	pop %rax
	iretq

	.org SVC_TIMER_OFF
svc_timer:				/* edi = initial count (1 GHz APIC bus), 0 = stop */
	push %rax
	push %rcx
	push %rdx
	mov $0xf0, %ecx			/* spurious vector register: software enable */
	mov $0x1ff, %eax
	call apic_write
	mov $0x3e0, %ecx		/* divide by 1 */
	mov $0xb, %eax
	call apic_write
	mov $0x320, %ecx		/* LVT timer: periodic, or masked when stopping */
	mov $(0x20000 | VEC_TIMER), %eax
	test %edi, %edi
	jnz 1f
	mov $(0x10000 | VEC_TIMER), %eax
1:	call apic_write
	mov $0x380, %ecx		/* initial count: starts (or stops) the timer */
	mov %edi, %eax
	call apic_write
	andq $~0x200, 40(%rsp)		/* the caller's IF: set while the timer runs */
	test %edi, %edi
	jz 2f
	orq $0x200, 40(%rsp)
2:	pop %rdx
	pop %rcx
	pop %rax
	iretq

	.org SVC_HALT_OFF
svc_halt:				/* a finished vCPU: blocks in KVM, using no CPU */
	cli
1:	hlt
	jmp 1b

	.org SVC_WAKE_OFF
svc_wake:				/* BSP: INIT + SIPI to all other vCPUs */
	push %rax
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	mov $ap_tramp, %esi
	mov $AP_TRAMPOLINE, %edi
	mov $(ap_tramp_end - ap_tramp), %ecx
	rep movsb
	mov $0x300, %ecx		/* ICR: INIT, level assert, all excluding self */
	mov $0xc4500, %eax
	call apic_write
	mov $0x300, %ecx		/* ICR: STARTUP at AP_TRAMPOLINE */
	mov $(0xc4600 | (AP_TRAMPOLINE >> 12)), %eax
	call apic_write
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rax
	iretq

	exception_stubs EXC_OFF

	.org EXC_COMMON_OFF
exc_common:				/* record the fault in the mailbox, end QEMU with EXIT_FAULT */
	mov $(MAILBOX + MB_FAULT_OFF), %edi
	pop %rax			/* vector */
	mov %rax, 0(%rdi)
	pop %rax			/* error code */
	mov %rax, 8(%rdi)
	pop %rax			/* rip */
	mov %rax, 16(%rdi)
	pop %rax			/* cs */
	mov %rax, 24(%rdi)
	pop %rax			/* rflags */
	mov %rax, 32(%rdi)
	pop %rax			/* rsp */
	mov %rax, 40(%rdi)
	mov %cr2, %rax
	mov %rax, 48(%rdi)
	movq $1, 56(%rdi)
	mov $PORT_EXIT, %dx
	mov $EXIT_FAULT, %eax
	out %eax, %dx
1:	cli
	hlt
	jmp 1b

	.org SYSCALL_OFF
syscall_entry:
	/* A guest program's SYSCALL. On PVM it stays at CPL3 and jumps here; on VT-x, SVM
	 * and TCG it enters CPL0 without switching stacks. Either way no stack is touched
	 * (the program's red zone) and only rax, rcx, r11 change, as the ABI allows. The
	 * call goes to the mailbox and one byte to a 16550 whose chardev is vmmtrace's
	 * socket; vmmtrace serves the call, writes the answer to the mailbox and one byte
	 * back, which QEMU's main loop receives into the UART: the guest polls the line
	 * status for it and reads it. Every port access is counted, before it is made. */
	mov %rax, SC_AT(SC_NR)
	mov %rdi, SC_AT(8)
	mov %rsi, SC_AT(16)
	mov %rdx, SC_AT(24)
	mov %r10, SC_AT(32)
	mov %r8, SC_AT(40)
	mov %r9, SC_AT(48)
	mov %rcx, SC_AT(SC_RIP)
	mov %r11, SC_AT(SC_RFLAGS)
	incq SC_AT(SC_COUNT)
	incq MAILBOX + MB_SLOTS_OFF + 8	/* vCPU 0's exit count */
	mov $PORT_SERIAL, %dx
	out %al, %dx
	mov $PORT_SERIAL_LSR, %dx
1:	incq MAILBOX + MB_SLOTS_OFF + 8
	in %dx, %al
	test $1, %al
	jz 1b
	incq MAILBOX + MB_SLOTS_OFF + 8
	mov $PORT_SERIAL, %dx
	in %dx, %al
	mov SC_AT(SC_ACTION), %rax
	cmp $SC_EXIT, %rax
	je 4f
	cmp $SC_SET_FS, %rax
	jne 2f
	mov SC_AT(SC_RESULT), %rax
	wrfsbase %rax
	xor %eax, %eax
	mov %rax, SC_AT(SC_RESULT)
2:	mov SC_AT(24), %rdx
	mov SC_AT(SC_RESULT), %rax
	mov %cs, %ecx
	test $3, %cl
	mov SC_AT(SC_RIP), %rcx
	jnz 3f
	sysretq
3:	jmp *%rcx
4:	incq MAILBOX + MB_SLOTS_OFF + 8
	mov $PORT_EXIT, %dx
	mov $EXIT_OK, %eax
	out %eax, %dx
5:	jmp 5b

	/* Real-mode trampoline of the other vCPUs, copied to AP_TRAMPOLINE (CS = 0x800). */
	.code16
ap_tramp:
	cli
	lgdtl %cs:(ap_gdtr - ap_tramp)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x08, $ap_entry32
	.p2align 2
ap_gdtr:
	.word gdt_end - gdt - 1
	.long gdt
ap_tramp_end:
	.code32
ap_entry32:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov $1, %edi
	lock xadd %edi, next_cpu	/* vCPU index in wake-up order */
	jmp common32

	/* One TSS per vCPU: RSP0 below the counters at the top of its kernel stack. */
	.org TSS_OFF
	.set c, 0
	.rept MAX_VCPUS
	.long 0
	.quad kstacks + KSTACK_SIZE * (c + 1) - KSTACK_RESERVE
	.fill 0x66 - 12, 1, 0
	.word 0x68			/* I/O permission bitmap offset */
	.fill 128, 1, 0			/* ports 0..0x3ff allowed */
	.byte 0xff
	.fill 256 - TSS_LEN, 1, 0
	.set c, c + 1
	.endr

/* 64-bit interrupt gate to CPL0_BASE + off, callable from CPL dpl. */
.macro gate vec, off, dpl
	.org IDT_OFF + 16 * \vec
	.quad ((CPL0_BASE + \off) & 0xffff) | (0x10 << 16) | ((0x8e | (\dpl << 5)) << 40) | (((CPL0_BASE + \off) >> 16) << 48)
	.quad 0
.endm
	.set v, 0
	.rept 32
	gate v, (EXC_OFF+16*v), 0
	.set v, v + 1
	.endr
	gate VEC_TIMER, ISR_TIMER_OFF, 0
	gate VEC_SVC_TIMER, SVC_TIMER_OFF, 3
	gate VEC_SVC_HALT, SVC_HALT_OFF, 3
	gate VEC_SVC_WAKE, SVC_WAKE_OFF, 3

	/* Linux's layout (PVM wants it): 0x10 kernel CS, 0x18 kernel DS, 0x2b user DS,
	 * 0x33 user CS; 0x08 is a 32-bit code segment for the way up; TSS i at 0x40 + 16 i. */
	.org GDT_OFF
gdt:	.quad 0
	.quad 0x00cf9b000000ffff
	.quad 0x00af9b000000ffff
	.quad 0x00cf93000000ffff
	.quad 0x00cffb000000ffff
	.quad 0x00cff3000000ffff
	.quad 0x00affb000000ffff
	.quad 0
	.set c, 0
	.rept MAX_VCPUS
	.set b, CPL0_BASE + TSS_OFF + 256 * c
	.quad (TSS_LEN - 1) | ((b & 0xffffff) << 16) | (0x89 << 40) | (((b >> 24) & 0xff) << 56)
	.quad 0
	.set c, c + 1
	.endr
gdt_end:
gdtr:	.word gdt_end - gdt - 1
	.long gdt
idtr:	.word IDT_ENTRIES * 16 - 1
	.quad CPL0_BASE + IDT_OFF

	.text
	.globl user_entry
user_entry:
	call user_main
	ud2

	.data
	.p2align 12
pml4:	.quad pdpt + 7
	.fill 511, 8, 0
pdpt:	.quad pd + 7, pd + 0x1007, pd + 0x2007, pd + 0x3007
	.fill 508, 8, 0
pd:	/* 4 GiB identity map in 2 MiB pages, P | RW | US | PS (the APIC at 0xfee00000 too) */
	.set i, 0
	.rept 2048
	.quad (i << 21) | 0x87
	.set i, i + 1
	.endr
	.globl boot_cmdline, apic_x2
boot_cmdline:	.long 0
next_cpu:	.long 1
apic_x2:	.byte 0

	.bss
	.p2align 12
	.globl kstacks
kstacks:	.fill MAX_VCPUS * KSTACK_SIZE, 1, 0

	.section .note.GNU-stack, "", @progbits
