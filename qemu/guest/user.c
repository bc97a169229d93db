/* CPL3 part of the QEMU guest: reads its configuration from the kernel command line,
 * wakes the other vCPUs, waits for the host's "go" in the shared mailbox, runs the
 * micro-VM's workload (workload.c + libbz2, the same C code the host twin runs) and
 * reports through QEMU devices. Every port access after "go" is counted by the vCPU
 * that makes it, before it makes it: the host compares these counts with the traced
 * userspace exits. */
#include <stddef.h>
#include <stdint.h>
#include "layout.h"
#include "workload.h"

#define SLOT_READY   1
#define SLOT_RUNNING 2
#define SLOT_DONE    3

/* Mirrored by src/layout.rs. */
struct vcpu_slot {
	uint64_t state;
	uint64_t exits;            /* port I/O exits since "go" */
	uint64_t exits_before_go;  /* port I/O exits before (the "ready" line) */
	uint64_t progress_exits;
	uint64_t timer_interrupts;
	uint64_t tsc_go, tsc_start, tsc_end;
	struct wl_params params;
};

struct mailbox {
	uint64_t magic;
	uint64_t go;               /* host -> guest: start the workload */
	uint64_t exit_req;         /* host -> guest: the last vCPU may end QEMU */
	uint64_t done;             /* vCPUs finished */
	uint64_t fault[8];         /* written by the CPL0 exception handler */
	uint64_t print_lock;
	uint64_t vcpus;
	uint64_t apic_x2;
};

_Static_assert(sizeof(struct vcpu_slot) <= SLOT_SIZE, "vcpu_slot outgrew SLOT_SIZE");
_Static_assert(sizeof(struct mailbox) <= MB_SLOTS_OFF, "mailbox header outgrew MB_SLOTS_OFF");
_Static_assert(MB_SLOTS_OFF + MAX_VCPUS * SLOT_SIZE <= MAILBOX_SIZE, "mailbox outgrew MAILBOX_SIZE");
_Static_assert(offsetof(struct mailbox, fault) == MB_FAULT_OFF, "fault record offset");

#define MB ((volatile struct mailbox *)MAILBOX)
#define SLOT(cpu) ((volatile struct vcpu_slot *)(MAILBOX + MB_SLOTS_OFF + SLOT_SIZE * (cpu)))

extern uint32_t boot_cmdline;
extern uint8_t apic_x2;
extern char kstacks[];

static struct {
	uint64_t vcpus, workload, work, exit_every, bz_bytes, loop_iters, timer_hz, program;
} cfg;

#include "freestanding.h"
void bz_internal_error(int e)
{
	(void)e;
	__builtin_trap(); /* reported by the host as #UD with the guest's RIP */
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* Every port access goes through here: count it, then make it. */
static void port_out(volatile struct vcpu_slot *s, uint16_t port, uint32_t value)
{
	if (s->state >= SLOT_RUNNING)
		s->exits++;
	else
		s->exits_before_go++;
	if (port == PORT_EXIT)
		__asm__ volatile("outl %0, %1" ::"a"(value), "Nd"(port) : "memory");
	else
		__asm__ volatile("outb %b0, %1" ::"a"(value), "Nd"(port) : "memory");
}

static void put_str(volatile struct vcpu_slot *s, const char *t)
{
	while (*t)
		port_out(s, PORT_CONSOLE, (unsigned char)*t++);
}
static void put_u64(volatile struct vcpu_slot *s, const char *key, uint64_t v)
{
	char b[24];
	int i = 23;
	b[i] = 0;
	do
		b[--i] = (char)('0' + v % 10);
	while (v /= 10);
	put_str(s, key);
	put_str(s, b + i);
}
static void lock_console(void)
{
	while (__atomic_exchange_n(&MB->print_lock, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}
static void unlock_console(void) { __atomic_store_n(&MB->print_lock, 0, __ATOMIC_RELEASE); }

/* Value of "key=<decimal>" in the command line (words separated by spaces), or def. */
static uint64_t arg(const char *line, const char *key, uint64_t def)
{
	for (const char *c = line; *c; c++) {
		if (c != line && c[-1] != ' ')
			continue;
		const char *k = key, *v = c;
		while (*k && *v == *k)
			k++, v++;
		if (*k || *v != '=')
			continue;
		uint64_t x = 0;
		for (v++; *v >= '0' && *v <= '9'; v++)
			x = x * 10 + (uint64_t)(*v - '0');
		return x;
	}
	return def;
}

static void read_config(void)
{
	const char *c = boot_cmdline ? (const char *)(uintptr_t)boot_cmdline : "";
	cfg.vcpus = arg(c, "vcpus", 1);
	cfg.workload = arg(c, "workload", WL_LOOP);
	cfg.work = arg(c, "work", 16);
	cfg.exit_every = arg(c, "exit_every", 1);
	cfg.bz_bytes = arg(c, "unit_bytes", 256 << 10);
	cfg.loop_iters = arg(c, "unit_iters", 1 << 16);
	cfg.timer_hz = arg(c, "timer_hz", 0);
	cfg.program = arg(c, "program", 0);
}

static void progress(struct wl_params *p, uint64_t units)
{
	(void)units;
	volatile struct vcpu_slot *s =
		(volatile struct vcpu_slot *)((char *)p - offsetof(struct vcpu_slot, params));
	s->progress_exits++;
	port_out(s, PORT_PROGRESS, '.');
}

static void timer(uint64_t initial_count)
{
	__asm__ volatile("int $" "0x80" ::"D"(initial_count) : "memory");
}

static void report(volatile struct vcpu_slot *s, unsigned cpu)
{
	lock_console();
	put_u64(s, "vmmtrace-qemu: result vcpu=", cpu);
	put_u64(s, " status=", (uint64_t)s->params.status);
	put_u64(s, " units=", s->params.units_done);
	put_u64(s, " checksum=", s->params.checksum);
	put_u64(s, " progress=", s->progress_exits);
	put_u64(s, " timer=", s->timer_interrupts);
	put_u64(s, " tsc=", s->tsc_end - s->tsc_start);
	put_str(s, "\n");
	unlock_console();
}

static void run_vcpu(unsigned cpu)
{
	volatile struct vcpu_slot *s = SLOT(cpu);
	struct wl_params *p = (struct wl_params *)&s->params;
	uint64_t region = VCPU_REGION_BASE + (uint64_t)VCPU_REGION_SIZE * cpu;
	p->workload = (uint32_t)cfg.workload;
	p->vcpu = cpu;
	p->work_units = cfg.work;
	p->exit_every = cfg.exit_every;
	p->bz_bytes = (uint32_t)cfg.bz_bytes;
	p->loop_iters = (uint32_t)cfg.loop_iters;
	p->heap_lo = region;
	p->heap_hi = region + VCPU_REGION_SIZE;
	s->state = SLOT_READY;
	lock_console();
	put_u64(s, "vmmtrace-qemu: ready vcpu=", cpu);
	put_str(s, "\n");
	unlock_console();

	while (!MB->go)
		cpu_relax();
	s->tsc_go = rdtsc();
	s->state = SLOT_RUNNING;
	if (cfg.timer_hz)
		timer(1000000000u / cfg.timer_hz); /* the APIC timer counts at 1 GHz */
	s->tsc_start = rdtsc();
	wl_run(p, progress);
	s->tsc_end = rdtsc();
	if (cfg.timer_hz)
		timer(0);
	s->timer_interrupts = *(volatile uint64_t *)(kstacks + KSTACK_SIZE * (cpu + 1) - KSTACK_RESERVE);
	s->state = SLOT_DONE;
	report(s, cpu);

	if (__atomic_add_fetch(&MB->done, 1, __ATOMIC_ACQ_REL) == cfg.vcpus) {
		lock_console();
		put_str(s, "vmmtrace-qemu: done\n");
		unlock_console();
		while (!MB->exit_req) /* the host reads QEMU's threads meanwhile */
			cpu_relax();
		port_out(s, PORT_EXIT, EXIT_OK);
	}
	__asm__ volatile("int $" "0x81" ::: "memory");
}

/* Guest-program mode: after "go", become the program vmmtrace loaded (its entry and
 * initial stack are in the mailbox). Its system calls go to syscall_entry (boot.S). */
static void run_program(volatile struct vcpu_slot *s)
{
	s->state = SLOT_READY;
	lock_console();
	put_str(s, "vmmtrace-qemu: ready vcpu=0\n");
	unlock_console();
	while (!MB->go)
		cpu_relax();
	s->tsc_go = s->tsc_start = rdtsc();
	s->state = SLOT_RUNNING;
	uint64_t entry = *(volatile uint64_t *)SC(SC_ENTRY), sp = *(volatile uint64_t *)SC(SC_SP);
	/* rdx = 0: no rtld_fini for the program's _start (the ELF ABI's entry state) */
	__asm__ volatile("mov %0, %%rsp\n\txor %%edx, %%edx\n\tjmp *%1" ::"S"(sp), "a"(entry) : "memory");
	__builtin_unreachable();
}

void user_main(unsigned cpu)
{
	if (cpu >= MAX_VCPUS)
		__asm__ volatile("int $" "0x81" ::: "memory");
	if (cpu == 0) {
		read_config();
		MB->vcpus = cfg.vcpus;
		MB->apic_x2 = apic_x2;
		MB->magic = MAILBOX_MAGIC;
		if (cfg.program)
			run_program(SLOT(0));
		if (cfg.vcpus > 1)
			__asm__ volatile("int $" "0x82" ::: "memory");
	}
	run_vcpu(cpu);
}
