/* The C library calls a freestanding guest still needs: gcc emits memset/memcpy for
 * struct copies and clears even with -fno-builtin, and libbz2 names malloc/free for its
 * default allocator, which is never used (wl_run passes its own bump allocator).
 * Shared by the micro-VM's guest (guest_rt.c) and QEMU's (qemu/guest/user.c).
 * Definitions, not declarations: include it in exactly one file of a guest. */
#ifndef MICROVM_FREESTANDING_H
#define MICROVM_FREESTANDING_H
#include <stddef.h>

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *a = d;
	const unsigned char *b = s;
	while (n--)
		*a++ = *b++;
	return d;
}
void *malloc(size_t n)
{
	(void)n;
	return 0;
}
void free(void *p) { (void)p; }
#endif
