/* worker: the gateway's threads. One worker per core, each with its own
 * io_uring ring, its own SO_REUSEPORT listening sockets, its own sessions,
 * receive buffers and spool segment: workers share nothing but the
 * read-only configuration, the segment registry, the mesh and one session
 * counter. The loop in worker.c is the only room that calls across the
 * others (session, commit, route, relay, control). */
#ifndef RINGMX_IO_WORKER_H
#define RINGMX_IO_WORKER_H

#include "io/types-t.h"

/* The thread of worker <arg> (struct worker *, set up by io/gateway): sets
 * up its ring, reports through w->ready, runs until the gateway stops and
 * its sessions and deliveries are done. */
void *worker_main(void *arg);

#endif
