/* The CPU-bound job of the micro-VM (see workload.h). Pure C, no libc beyond
 * memset/memcpy; libbz2 is built with -DBZ_NO_STDIO. */
#include "bzlib.h"
#include "workload.h"

void *memset(void *d, int c, __SIZE_TYPE__ n);

/* ---- loop: xorshift64 chain, exactly reproducible (src/workload.rs has the Rust twin) */
uint64_t wl_loop_unit(uint64_t *state, uint32_t iters)
{
	uint64_t x = *state, acc = 0;
	for (uint32_t i = 0; i < iters; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		acc += x * 0x9E3779B97F4A7C15ull;
	}
	*state = x;
	return acc;
}

/* ---- bzip2: generate pseudo-text, compress (level 9), decompress, verify */
static uint32_t lcg(uint32_t *s) { *s = *s * 1103515245u + 12345u; return *s >> 8; }

static const char *const words[] = {"the", "of", "and", "virtual", "machine", "guest", "host", "exit",
	"entry", "kernel", "page", "table", "shadow", "interrupt", "timer", "trace", "probe",
	"bzip2", "compress", "block", "sort", "huffman", "random", "data", "loop", "cpu", "cycle"};

static void gen_input(unsigned char *buf, uint32_t n, uint32_t seed)
{
	uint32_t s = seed, i = 0;
	while (i < n) {
		uint32_t r = lcg(&s);
		if ((r & 15) == 0) {
			buf[i++] = (unsigned char)(r >> 4);
			continue;
		}
		const char *w = words[r % (sizeof(words) / sizeof(words[0]))];
		while (*w && i < n)
			buf[i++] = (unsigned char)*w++;
		if (i < n)
			buf[i++] = (r & 0x300) ? ' ' : '\n';
	}
}

static void *bump_alloc(struct wl_params *p, uint64_t n)
{
	uint64_t a = (p->heap_cur + 63) & ~63ull;
	if (a + n > p->heap_hi)
		return 0;
	p->heap_cur = a + n;
	return (void *)(uintptr_t)a;
}
static void *bz_alloc(void *opaque, int items, int size)
{
	return bump_alloc((struct wl_params *)opaque, (uint64_t)items * (uint64_t)size);
}
static void bz_free(void *opaque, void *ptr) { (void)opaque; (void)ptr; }

static int bz_unit(struct wl_params *p, unsigned char *in, unsigned char *cmp, unsigned char *back,
		   uint32_t size, uint32_t seed, uint64_t *digest)
{
	uint32_t cap = size + size / 100 + 1024;
	uint64_t mark = p->heap_cur;
	gen_input(in, size, seed);

	bz_stream s = {0};
	s.bzalloc = bz_alloc;
	s.bzfree = bz_free;
	s.opaque = p;
	if (BZ2_bzCompressInit(&s, 9, 0, 30) != BZ_OK)
		return -1;
	s.next_in = (char *)in;
	s.avail_in = size;
	s.next_out = (char *)cmp;
	s.avail_out = cap;
	int r = BZ2_bzCompress(&s, BZ_FINISH);
	uint32_t clen = cap - s.avail_out;
	BZ2_bzCompressEnd(&s);
	if (r != BZ_STREAM_END)
		return -2;
	p->heap_cur = mark;

	bz_stream d = {0};
	d.bzalloc = bz_alloc;
	d.bzfree = bz_free;
	d.opaque = p;
	if (BZ2_bzDecompressInit(&d, 0, 0) != BZ_OK)
		return -3;
	d.next_in = (char *)cmp;
	d.avail_in = clen;
	d.next_out = (char *)back;
	d.avail_out = size;
	r = BZ2_bzDecompress(&d);
	uint32_t blen = size - d.avail_out;
	BZ2_bzDecompressEnd(&d);
	p->heap_cur = mark;
	if (r != BZ_STREAM_END || blen != size)
		return -4;
	for (uint32_t i = 0; i < size; i++)
		if (in[i] != back[i])
			return -5;
	/* FNV-1a over the compressed stream, folded with its length */
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < clen; i++)
		h = (h ^ cmp[i]) * 0x100000001b3ull;
	*digest = h ^ clen;
	return 0;
}

int64_t wl_run(struct wl_params *p, wl_progress_fn progress)
{
	uint64_t sum = 0;
	int64_t st = 0;
	uint64_t u;
	p->heap_cur = p->heap_lo;
	p->units_done = 0;
	if (p->workload == WL_LOOP) {
		uint64_t state = 0x9E3779B97F4A7C15ull ^ ((uint64_t)p->vcpu + 1);
		/* a 4 KiB ring of per-unit results: the buffer the emulator checksums */
		uint64_t *ring = bump_alloc(p, 4096);
		if (!ring)
			return p->status = -10;
		memset(ring, 0, 4096);
		p->io_buf = (uint64_t)(uintptr_t)ring;
		p->io_len = 4096;
		for (u = 0; u < p->work_units; u++) {
			uint64_t r = wl_loop_unit(&state, p->loop_iters);
			ring[u & 511] = r;
			sum = sum * 31 + r;
			if (p->exit_every && (u + 1) % p->exit_every == 0) {
				p->units_done = u + 1;
				p->checksum = sum;
				progress(p, u + 1);
			}
		}
	} else if (p->workload == WL_BZIP2) {
		uint32_t size = p->bz_bytes;
		unsigned char *in = bump_alloc(p, size), *cmp = bump_alloc(p, size + size / 100 + 1024),
			      *back = bump_alloc(p, size);
		if (!in || !cmp || !back) {
			st = -10;
			u = 0;
		} else {
			p->io_buf = (uint64_t)(uintptr_t)cmp;
			p->io_len = size / 4 < 65536 ? size / 4 : 65536;
			for (u = 0; u < p->work_units; u++) {
				uint64_t d = 0;
				st = bz_unit(p, in, cmp, back, size, (p->vcpu << 20) + (uint32_t)u + 1, &d);
				if (st)
					break;
				sum = sum * 1000003 ^ d;
				if (p->exit_every && (u + 1) % p->exit_every == 0) {
					p->units_done = u + 1;
					p->checksum = sum;
					progress(p, u + 1);
				}
			}
		}
	} else if (p->workload == WL_FAULT_TEST) {
		__builtin_trap();
	} else {
		st = -20;
		u = 0;
	}
	p->units_done = u;
	p->checksum = sum;
	p->status = st;
	return st;
}
