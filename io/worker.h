/* worker: the gateway's threads. One worker per core, each with its own
 * io_uring ring, its own SO_REUSEPORT listening sockets, its own sessions,
 * receive buffers and spool segment: workers share nothing but the
 * read-only configuration and one session counter. */
#ifndef RINGMX_IO_WORKER_H
#define RINGMX_IO_WORKER_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/smtp_session.h"

struct worker;

struct gateway {
	const struct conf *conf;
	struct smtp_server_conf scf;
	unsigned nworkers;
	struct worker **workers;
	uint64_t start_id; /* unique per start: names this run's segments */
	int spool_dirfd;
	atomic_uint nsessions; /* open sessions, all workers */
	unsigned long recovered; /* pending messages found by recovery at start */
};

/* Creates the spool directory if needed, starts the workers (they bind
 * and listen before this returns, so the caller may report readiness),
 * waits for SIGTERM or SIGINT, drains and joins them. Returns the process
 * exit status. Main thread only. */
int gateway_run(struct gateway *g);

#endif
