/* fault: see fault.h. */
#include "io/fault.h"

#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char fault_none[] = "";
static _Atomic(const char *) fault_point;

bool fault_at(const char *point)
{
	const char *p = atomic_load_explicit(&fault_point, memory_order_relaxed);

	if (!p) {
		const char *env = getenv("RINGMX_FAULT");

		p = env && *env ? env : fault_none;
		atomic_store_explicit(&fault_point, p, memory_order_relaxed);
	}
	return p != fault_none && strcmp(p, point) == 0;
}

void fault_kill(const char *point)
{
	/* Straight to stderr: the worker's log buffer would die with it. */
	dprintf(2, "ringmx: fault: RINGMX_FAULT=%s reached: killing the gateway\n", point);
	kill(getpid(), SIGKILL);
	abort(); /* not reached */
}
