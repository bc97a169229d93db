/* A small static test program for the guest-program tests: reads the file named by
 * argv[1] with stdio, checksums it in a malloc'd buffer, prints argc, the checksum, an
 * environment variable and the number of auxv-provided random bytes seen, and exits
 * with status 3 (so the test sees the status pass through). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror("fopen"); return 1; }
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    unsigned long long h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ULL;
    const char *e = getenv("MICROVM_TEST_VAR");
    printf("argc=%d bytes=%zu fnv=%016llx var=%s random=%s\n", argc, n, h, e ? e : "(none)",
           getauxval(AT_RANDOM) ? "yes" : "no");
    free(buf);
    return 3;
}
