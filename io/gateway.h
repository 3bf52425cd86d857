/* gateway: start-up and shutdown of the whole process: the listening
 * sockets (bound before root is given up), the spool directory and its
 * recovery, the mesh, the worker threads, and the wait for the signal that
 * stops them. Main thread only. */
#ifndef RINGMX_IO_GATEWAY_H
#define RINGMX_IO_GATEWAY_H

#include "io/types-t.h"

/* Creates the spool directory if needed, starts the workers (they bind
 * and listen before this returns, so the caller may report readiness),
 * waits for SIGTERM or SIGINT, drains and joins them. Returns the process
 * exit status. Main thread only. */
int gateway_run(struct gateway *g);

#endif
