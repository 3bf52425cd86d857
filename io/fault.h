/* fault: named points where the tests kill the gateway on purpose, to
 * check that a crash at exactly that step loses and resurrects nothing.
 * RINGMX_FAULT=<point> in the environment arms one point (read once, at
 * the first check); unset, every check is one compare of a cached
 * pointer. Points: "move-copied" (io/relay: a moved message's copy is
 * durable, its old record not yet marked), "seg-unlinked" (io/commit: a
 * finished segment's unlink completed, the directory fsync not yet
 * done), "worker-stall" (io/worker: worker 0's loop sleeps 5 s at its
 * first tick, as a stuck worker's would: the systemd watchdog pings stop,
 * io/service). For tests only; documented in docs/spool.md (worker-stall
 * in docs/operations.md). Any thread. */
#ifndef RINGMX_IO_FAULT_H
#define RINGMX_IO_FAULT_H

#include <stdbool.h>

/* True when <point> is the armed one. */
bool fault_at(const char *point);
/* Logs the point and dies by SIGKILL, as kill -9 would. Never returns. */
_Noreturn void fault_kill(const char *point);

#endif
