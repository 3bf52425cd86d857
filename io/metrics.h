/* metrics: the --metrics-listen server, GET /metrics in the Prometheus
 * text format, off the workers: libmicrohttpd's own polling thread sums
 * the workers' counters (struct worker_stats, written by each worker alone
 * with relaxed stores) at each scrape. Nothing here runs on a worker but
 * the inline helpers below. io/ only. */
#ifndef RINGMX_IO_METRICS_H
#define RINGMX_IO_METRICS_H

#include <string.h>

#include "core/prom.h"
#include "io/types-t.h"

/* Bucket bounds: messages per group commit; microseconds from a batch's
 * writes to its fdatasync; milliseconds from arrival to delivery. */
extern const struct stats_bounds metrics_batch_bounds, metrics_sync_bounds, metrics_delivery_bounds;

/* Binds and listens on conf->metrics_listen (before privileges are
 * dropped: a port under 1024 needs root). Returns 0 (g->metrics_fd set,
 * or -1 without --metrics-listen) or -errno, logged. Main thread. */
int metrics_bind(struct gateway *g);
/* Starts the server thread on that socket, once the workers run, with
 * the signals blocked (the thread inherits the mask: signals stay with
 * io/control). Returns 0 or -errno, logged. Main thread. */
int metrics_start(struct gateway *g);
/* Stops the thread and closes the socket; no-op without a server. Before
 * the workers are freed. Main thread. */
void metrics_stop(struct gateway *g);

/* The per-hop delivery counters of <w> (w->st.dlv), 0 or -ENOMEM; freed by
 * metrics_worker_fini(). Main thread, before/after the worker runs. */
int metrics_worker_init(struct worker *w);
void metrics_worker_fini(struct worker *w);

/* Writes the whole page into <p>. Any thread; reads the workers with
 * relaxed loads. */
void metrics_render(struct gateway *g, struct prom *p);

/* The counter index of a TLS version as OpenSSL names it. */
static inline enum wstat_tls metrics_tls_version(const char *v)
{
	if (!strcmp(v, "TLSv1.3"))
		return WSTAT_TLS_1_3;
	if (!strcmp(v, "TLSv1.2"))
		return WSTAT_TLS_1_2;
	if (!strcmp(v, "TLSv1.1"))
		return WSTAT_TLS_1_1;
	if (!strcmp(v, "TLSv1"))
		return WSTAT_TLS_1_0;
	return WSTAT_TLS_OTHER;
}

#endif
