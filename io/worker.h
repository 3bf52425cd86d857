/* worker: the gateway's threads. One worker per core, each with its own
 * io_uring ring, its own SO_REUSEPORT listening sockets, its own sessions,
 * receive buffers and spool segment: workers share nothing but the
 * read-only configuration, the segment registry, the mesh and one session
 * counter. The loop in worker.c is the only room that calls across the
 * others (session, commit, route, relay, control). */
#ifndef RINGMX_IO_WORKER_H
#define RINGMX_IO_WORKER_H

#include <stdbool.h>

#include "core/sv.h"
#include "io/types-t.h"

/* The thread of worker <arg> (struct worker *, set up by io/gateway): sets
 * up its ring, reports through w->ready, runs until the gateway stops and
 * its sessions and deliveries are done. */
void *worker_main(void *arg);

/* Spools a message generated here (a bounce: from the null sender to
 * <rcpt>) through the committer, with the next group commit, and routes it
 * like any accepted message once durable. Returns 0 once queued (the body
 * is copied) or -errno. Worker thread only. */
int worker_spool_local(struct worker *w, const char *rcpt, struct sv body, bool body_8bit,
                       bool smtputf8);

#endif
