/* Freestanding CPL3 runtime of the guest: entry from the CPL0 stub (rdi = this vCPU's
 * struct wl_params), progress and completion reported by port I/O (IOPL=3). */
#include <stddef.h>
#include "layout.h"
#include "workload.h"

#include "freestanding.h"

static inline void out32(unsigned short port, unsigned val)
{
	__asm__ volatile("out %%eax,%%dx" ::"a"(val), "d"(port) : "memory");
}

void bz_internal_error(int e)
{
	for (;;)
		out32(PORT_BZ_ERROR, (unsigned)e);
}

static void progress(struct wl_params *p, uint64_t units)
{
	(void)p;
	out32(PORT_PROGRESS, (unsigned)units);
}

void guest_main(struct wl_params *p)
{
	int64_t st = wl_run(p, progress);
	for (;;)
		out32(PORT_DONE, (unsigned)st);
}

__asm__(".section .text.start,\"ax\"\n.globl _start\n_start:\n and $-16,%rsp\n call guest_main\n1: jmp 1b\n.previous\n");
