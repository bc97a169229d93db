/*
 * The CPL0 part of the guest. Under PVM every instruction here is emulated (~4000x
 * slower than native), so it is kept to a handful of instructions per event.
 *
 * Linked at STUB_BASE in its own section (.cpl0); the offsets below are fixed with .org and
 * mirrored in src/layout.rs:
 *   +0x000 entry: lidt, optional x2APIC periodic timer, iretq to CPL3 with IOPL=3
 *   +0x100 timer ISR (vector 0x40): count, x2APIC EOI, iretq
 *   +0x200 + 16*v: exception v (0..31): report to the VMM by `out` to PORT_FAULT
 *   +0x800 syscall entry (LSTAR) of guest programs, +0x810 its CPL0 return (see there)
 *
 * Entry registers (set by the VMM): rdi = struct wl_params * (kept for CPL3),
 * r10 = user stack, r14 = user entry, r12 = x2APIC initial count (0 = no timer),
 * r13 = user RFLAGS.  GDT layout as Linux: kernel CS 0x10, user DS 0x2b, user CS 0x33.
 */
#include "layout.h"
#include "exception_stubs.inc"

	.section .cpl0, "ax"
	.code64
	.globl stub_entry
stub_entry:
	lidt IDTR_ADDR
	test %r12, %r12
	jz 1f
	mov $0x1b, %ecx            /* IA32_APIC_BASE: enable xAPIC + x2APIC */
	rdmsr
	or $0xc00, %eax
	wrmsr
	xor %edx, %edx
	mov $0x80f, %ecx           /* spurious vector register: APIC software enable */
	mov $0x1ff, %eax
	wrmsr
	mov $0x83e, %ecx           /* divide configuration: by 1 */
	mov $0xb, %eax
	wrmsr
	mov $0x832, %ecx           /* LVT timer: periodic, vector 0x40 */
	mov $0x20040, %eax
	wrmsr
	mov $0x838, %ecx           /* initial count: starts the timer */
	mov %r12d, %eax
	wrmsr
1:	pushq $0x2b                /* SS */
	push %r10                  /* RSP */
	push %r13                  /* RFLAGS */
	pushq $0x33                /* CS */
	push %r14                  /* RIP */
	iretq

	.org 0x100
timer_isr:
	/* 12 instructions, each one emulated under PVM. The timer only fires at CPL3 (the
	 * stub never sets IF), so the CPU switched to RSP0 = top of this vCPU's block and
	 * pushed a 40-byte frame: the count sits at a fixed offset from %rsp. */
	push %rax
	push %rcx
	push %rdx
	incq (TIMER_OFF - VCPU_BLOCK_SZ + 40 + 24)(%rsp)
	mov $0x80b, %ecx           /* x2APIC EOI */
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
	pop %rdx
	pop %rcx
	pop %rax
	iretq

	exception_stubs 0x200

	.org 0x400
exc_common:
	/* rax = vector, rbx = error code, rcx = faulting RIP, rdi = CR2, rsi = faulting RSP,
	 * r8 = faulting CS, r9 = faulting RFLAGS; the VMM reads them with KVM_GET_REGS. */
	mov 0(%rsp), %rax
	mov 8(%rsp), %rbx
	mov 16(%rsp), %rcx
	mov 24(%rsp), %r8
	mov 32(%rsp), %r9
	mov 40(%rsp), %rsi
	mov %cr2, %rdi
	mov $PORT_FAULT, %dx
	out %eax, %dx
2:	cli
	hlt
	jmp 2b

	/* A guest program's SYSCALL lands here (LSTAR; SFMASK = 0, so RFLAGS is untouched).
	 * The OUT exits to the VMM, which reads the registers, serves the call and puts the
	 * result in RAX. Where SYSCALL really enters CPL0 (VT-x, SVM) the VMM resumes at
	 * +0x810 (SYSRETQ: RIP = RCX, RFLAGS = R11, back to CPL3); on PVM SYSCALL stays at
	 * CPL3 (SYSRETQ would fault) and the vCPU simply continues with the JMP to the
	 * instruction after the SYSCALL. Under PVM only the OUT is emulated. */
	.org 0x800
syscall_entry:
	out %al, $PORT_SYSCALL
	jmp *%rcx
	.org 0x810
syscall_return_cpl0:
	sysretq

	.section .note.GNU-stack, "", @progbits
