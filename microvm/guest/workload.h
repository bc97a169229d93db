/* The CPU-bound workload, compiled twice from the same sources: freestanding for the
 * guest (CPL3, linked at 0x400000) and for the host (linked into the microvm crate) so
 * that checksums and timings can be compared side by side. */
#ifndef MICROVM_WORKLOAD_H
#define MICROVM_WORKLOAD_H
#include <stdint.h>

#define WL_LOOP  0u
#define WL_BZIP2 1u
#define WL_FAULT_TEST 2u /* executes ud2: tests the VMM's fault reporting */

/* Shared with src/workload.rs (#[repr(C)] WlParams). Inputs first, then outputs. */
struct wl_params {
	uint32_t workload;     /* WL_LOOP or WL_BZIP2 */
	uint32_t vcpu;         /* index: seeds differ per vCPU */
	uint64_t work_units;   /* units to do */
	uint64_t exit_every;   /* progress call every K units; 0 = never */
	uint32_t bz_bytes;     /* bzip2: input bytes per unit */
	uint32_t loop_iters;   /* loop: iterations per unit */
	uint64_t heap_lo, heap_hi; /* bump heap for bzip2 */
	/* outputs */
	uint64_t heap_cur;
	uint64_t units_done;
	uint64_t checksum;
	int64_t status;        /* 0 ok, <0 error */
	uint64_t io_buf;       /* buffer the emulator checksums at a progress exit */
	uint64_t io_len;
};

typedef void (*wl_progress_fn)(struct wl_params *p, uint64_t units_done);

/* Runs the whole job; calls progress every exit_every units. Returns status. */
int64_t wl_run(struct wl_params *p, wl_progress_fn progress);
/* One unit of the loop workload: exposed so the host can check the Rust reference. */
uint64_t wl_loop_unit(uint64_t *state, uint32_t iters);
#endif
