/* Host-side runtime for the native twin of the workload (linked into the microvm crate). */
#include <stdlib.h>
void bz_internal_error(int e)
{
	(void)e;
	abort();
}
