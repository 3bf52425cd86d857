/* metrics: GET /metrics for Prometheus (--metrics-listen). See metrics.h.
 *
 * The workers never wait for it: each keeps its counters in its own
 * struct worker_stats (io/types-t.h) and adds to them with a relaxed load
 * and store (core/stats.h), no lock, no syscall; the server thread reads
 * them with relaxed loads and sums over the workers at each scrape.
 * Gauges come from the same counters (sessions open = accepted - ended,
 * per listener) or are published by each worker at its tick (the queue).
 *
 * The HTTP side is libmicrohttpd with its own polling thread (epoll), on
 * a socket bound at start before privileges are dropped. A hostile or
 * slow client is bounded by its limits: METRICS_CONNS connections at once,
 * METRICS_TIMEOUT seconds idle, METRICS_MEMORY bytes per connection (a
 * longer request line or header is refused by libmicrohttpd with a 4xx
 * and the connection closed). Anything but GET gets 405, any other path
 * 404. None of it shares a thread, a lock or a ring with the SMTP side. */
#include "io/metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/stats.h"

#define METRICS_CONNS   16          /* connections at once */
#define METRICS_TIMEOUT 10          /* seconds a connection may stay idle */
#define METRICS_MEMORY  (32u << 10) /* bytes per connection: request line and headers */

const struct stats_bounds metrics_batch_bounds = {
    11, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}, 1};
const struct stats_bounds metrics_sync_bounds = {15,
                                                 {50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000,
                                                  50000, 100000, 200000, 500000, 1000000, 5000000},
                                                 1e6};
/* The spool keeps a message's arrival in whole seconds: below 1 s a
 * latency is only "within a second of arrival". */
const struct stats_bounds metrics_delivery_bounds = {
    12,
    {1000, 2000, 5000, 10000, 30000, 60000, 300000, 900000, 3600000, 14400000, 43200000, 86400000},
    1e3};

struct metrics {
	struct MHD_Daemon *d;
	struct gateway *g;
	time_t started;
};

static const char *const tls_names[WSTAT_TLS_N] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3",
                                                   "unknown"};
static const char *const dlv_names[WSTAT_DLV_N] = {"sent", "deferred", "bounced"};
static const char *const class_names[SMTP_STAT_CLASSES] = {"2xx", "3xx", "4xx", "5xx"};

/* The sum over the workers of the counter at <off> in struct worker_stats. */
static uint64_t sum_at(const struct gateway *g, size_t off)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < g->nworkers; i++)
		n += stats_read(
		    (const uint64_t *)(const void *)((const char *)&g->workers[i]->st + off));
	return n;
}

#define SUM(field) sum_at(g, offsetof(struct worker_stats, field))

static void hist_total(const struct gateway *g, size_t off, const struct stats_bounds *b,
                       struct stats_hist *acc)
{
	*acc = (struct stats_hist){{0}, 0};
	for (unsigned i = 0; i < g->nworkers; i++)
		stats_hist_sum(
		    acc,
		    (const struct stats_hist *)(const void *)((const char *)&g->workers[i]->st +
		                                              off),
		    b);
}

static void render_sessions(struct gateway *g, struct prom *p)
{
	const struct conf *cf = g->conf;

	prom_family(p, "ringmx_smtp_sessions", "gauge", "SMTP sessions open, per listener.");
	for (unsigned l = 0; l < cf->nlisten; l++) {
		/* Ended first: read before the accepted count, open never looks negative. */
		uint64_t ended = SUM(closed[l][0]) + SUM(closed[l][1]), opened = SUM(opened[l]);
		const struct prom_label lb[] = {{"listener", cf->listen[l].text}};

		prom_sample_u64(p, "ringmx_smtp_sessions", lb, 1,
		                opened > ended ? opened - ended : 0);
	}
	prom_family(p, "ringmx_smtp_sessions_limit", "gauge",
	            "The most SMTP sessions open at once (--max-sessions).");
	prom_sample_u64(p, "ringmx_smtp_sessions_limit", NULL, 0, cf->max_sessions);
	prom_family(p, "ringmx_smtp_connections_total", "counter",
	            "SMTP connections accepted, per listener.");
	for (unsigned l = 0; l < cf->nlisten; l++) {
		const struct prom_label lb[] = {{"listener", cf->listen[l].text}};

		prom_sample_u64(p, "ringmx_smtp_connections_total", lb, 1, SUM(opened[l]));
	}
	prom_family(p, "ringmx_smtp_sessions_total", "counter",
	            "SMTP sessions ended, per listener and whether TLS was up at the end.");
	for (unsigned l = 0; l < cf->nlisten; l++) {
		for (unsigned t = 0; t < 2; t++) {
			const struct prom_label lb[] = {{"listener", cf->listen[l].text},
			                                {"tls", t ? "true" : "false"}};

			prom_sample_u64(p, "ringmx_smtp_sessions_total", lb, 2, SUM(closed[l][t]));
		}
	}
	prom_family(p, "ringmx_smtp_received_bytes_total", "counter",
	            "Bytes read from SMTP client connections (TLS records included).");
	prom_sample_u64(p, "ringmx_smtp_received_bytes_total", NULL, 0, SUM(rx_bytes));
	prom_family(p, "ringmx_overload", "gauge",
	            "1 while the gateway is in overload mode (--overload-threshold).");
	prom_sample_u64(p, "ringmx_overload", NULL, 0,
	                atomic_load_explicit(&g->overload, memory_order_relaxed) ? 1 : 0);
}

static void render_smtp(struct gateway *g, struct prom *p)
{
	prom_family(p, "ringmx_smtp_commands_total", "counter",
	            "SMTP commands by verb and the class of their final reply (DATA and BDAT "
	            "count the reply after the content too; UNKNOWN: no such verb).");
	for (unsigned v = 0; v < SMTP_STAT_VERBS; v++) {
		for (unsigned k = 0; k < SMTP_STAT_CLASSES; k++) {
			uint64_t n = SUM(smtp.replies[v][k]);
			const struct prom_label lb[] = {{"verb", smtp_stat_verb(v)},
			                                {"class", class_names[k]}};

			/* 3xx only exists for DATA: other lines would always be 0. */
			if (k == 1 && strcmp(smtp_stat_verb(v), "DATA") != 0)
				continue;
			prom_sample_u64(p, "ringmx_smtp_commands_total", lb, 2, n);
		}
	}
	prom_family(p, "ringmx_messages_accepted_total", "counter",
	            "Messages accepted: durable in the spool and answered 250.");
	prom_sample_u64(p, "ringmx_messages_accepted_total", NULL, 0, SUM(smtp.accepted));
	prom_family(p, "ringmx_messages_accepted_bytes_total", "counter",
	            "Content bytes of the messages accepted.");
	prom_sample_u64(p, "ringmx_messages_accepted_bytes_total", NULL, 0,
	                SUM(smtp.accepted_bytes));
	for (int temp = 0; temp < 2; temp++) {
		const char *name =
		    temp ? "ringmx_messages_tempfailed_total" : "ringmx_messages_rejected_total";

		prom_family(
		    p, name, "counter",
		    temp ? "Connections, commands and messages refused with a 4xx, by reason."
		         : "Commands and messages refused with a 5xx, by reason (a recipient "
		           "refused at RCPT counts once).");
		for (unsigned r = 0; r < SMTP_RF_N; r++) {
			bool t;
			const char *why = smtp_refusal_name((enum smtp_refusal)r, &t);
			const struct prom_label lb[] = {{"reason", why}};

			if (t == (temp != 0))
				prom_sample_u64(p, name, lb, 1, SUM(smtp.refused[r]));
		}
	}
	prom_family(p, "ringmx_tls_handshakes_total", "counter",
	            "TLS handshakes completed with SMTP clients (STARTTLS and --listen-tls), by "
	            "version.");
	for (unsigned v = 0; v < WSTAT_TLS_N - 1; v++) {
		const struct prom_label lb[] = {{"version", tls_names[v]}};

		prom_sample_u64(p, "ringmx_tls_handshakes_total", lb, 1, SUM(tls_ok[v]));
	}
	prom_family(p, "ringmx_tls_handshake_failures_total", "counter",
	            "TLS handshakes with SMTP clients that failed or timed out, by the version "
	            "negotiated (unknown: none was).");
	for (unsigned v = 0; v < WSTAT_TLS_N; v++) {
		const struct prom_label lb[] = {{"version", tls_names[v]}};

		prom_sample_u64(p, "ringmx_tls_handshake_failures_total", lb, 1, SUM(tls_fail[v]));
	}
}

static void render_spool(struct gateway *g, struct prom *p)
{
	struct stats_hist h;
	uint64_t oldest = 0;
	time_t now = time(NULL);

	hist_total(g, offsetof(struct worker_stats, batch), &metrics_batch_bounds, &h);
	prom_family(p, "ringmx_spool_commit_batch_messages", "histogram",
	            "Messages made durable by one group commit (one fdatasync).");
	prom_histogram(p, "ringmx_spool_commit_batch_messages", NULL, 0, &metrics_batch_bounds, &h);
	hist_total(g, offsetof(struct worker_stats, sync), &metrics_sync_bounds, &h);
	prom_family(p, "ringmx_spool_fdatasync_duration_seconds", "histogram",
	            "Time from a group commit's writes submitted to its fdatasync completed.");
	prom_histogram(p, "ringmx_spool_fdatasync_duration_seconds", NULL, 0, &metrics_sync_bounds,
	               &h);
	prom_family(p, "ringmx_queue_messages", "gauge",
	            "Messages in the spool held by the workers for delivery (updated every "
	            "second).");
	prom_sample_u64(p, "ringmx_queue_messages", NULL, 0, SUM(queue_msgs));
	for (unsigned i = 0; i < g->nworkers; i++) {
		uint64_t a = stats_read(&g->workers[i]->st.queue_oldest);

		if (a && (!oldest || a < oldest))
			oldest = a;
	}
	prom_family(p, "ringmx_queue_oldest_message_age_seconds", "gauge",
	            "Age of the oldest message waiting for a retry (0: none).");
	prom_sample_u64(p, "ringmx_queue_oldest_message_age_seconds", NULL, 0,
	                oldest && (uint64_t)now > oldest ? (uint64_t)now - oldest : 0);
	prom_family(p, "ringmx_mesh_overflows_total", "counter",
	            "Message descriptors a full worker-to-worker ring refused (kept and retried "
	            "each second; a retry refused again counts again).");
	prom_sample_u64(p, "ringmx_mesh_overflows_total", NULL, 0, SUM(mesh_full));
}

static void render_delivery(struct gateway *g, struct prom *p)
{
	const struct relay_hop_names *hn = &g->hopnames;
	unsigned nhops = atomic_load_explicit(&hn->n, memory_order_acquire);
	struct stats_hist h;

	if (!g->relay.nroutes)
		return; /* no --relay-to: nothing is delivered */
	prom_family(p, "ringmx_deliveries_total", "counter",
	            "Delivery attempts per recipient, by route, next hop and result (every "
	            "next hop configured since the start).");
	for (unsigned k = 0; k < nhops; k++) {
		for (unsigned res = 0; res < WSTAT_DLV_N; res++) {
			uint64_t n = 0;
			const struct prom_label lb[] = {{"route", hn->v[k].route},
			                                {"next_hop", hn->v[k].hop},
			                                {"result", dlv_names[res]}};

			for (unsigned i = 0; i < g->nworkers; i++)
				n += stats_read(&g->workers[i]->st.dlv[k * WSTAT_DLV_N + res]);
			prom_sample_u64(p, "ringmx_deliveries_total", lb, 3, n);
		}
	}
	hist_total(g, offsetof(struct worker_stats, delivery), &metrics_delivery_bounds, &h);
	prom_family(p, "ringmx_delivery_duration_seconds", "histogram",
	            "Time from a message's arrival to a recipient's delivery (whole-second "
	            "arrival times: up to 1 s more than the truth).");
	prom_histogram(p, "ringmx_delivery_duration_seconds", NULL, 0, &metrics_delivery_bounds,
	               &h);
}

void metrics_render(struct gateway *g, struct prom *p)
{
	const struct prom_label build[] = {{"version", RINGMX_VERSION}};

	prom_family(p, "ringmx_build_info", "gauge", "Always 1; the version in a label.");
	prom_sample_u64(p, "ringmx_build_info", build, 1, 1);
	prom_family(p, "ringmx_start_time_seconds", "gauge",
	            "When the gateway started, seconds since the epoch.");
	prom_sample_u64(p, "ringmx_start_time_seconds", NULL, 0,
	                g->metrics ? (uint64_t)g->metrics->started : 0);
	prom_family(p, "ringmx_workers", "gauge", "Worker threads.");
	prom_sample_u64(p, "ringmx_workers", NULL, 0, g->nworkers);
	render_sessions(g, p);
	render_smtp(g, p);
	render_spool(g, p);
	render_delivery(g, p);
}

/* ---- HTTP ---- */

static enum MHD_Result reply_static(struct MHD_Connection *conn, unsigned code, const char *text)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
	struct metrics *m = cls;
	struct MHD_Response *r;
	struct prom p = {BUF_INIT, 0};
	enum MHD_Result ret;

	/* Answered at the first call, before any request body: a body is
	 * never read (libmicrohttpd closes the connection after). */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
		return reply_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics here\n");
	if (strcmp(url, "/metrics") != 0)
		return reply_static(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
	metrics_render(m->g, &p);
	if (p.err) {
		LOGW("metrics: cannot build the page: %s", strerror(-p.err));
		buf_free(&p.b);
		return reply_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	r = MHD_create_response_from_buffer_with_free_callback(p.b.len, p.b.p, free);
	if (!r) {
		buf_free(&p.b);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, PROM_CONTENT_TYPE);
	ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

int metrics_bind(struct gateway *g)
{
	const struct conf_listen *cl = &g->conf->metrics_listen;
	int fd, one = 1, err;

	g->metrics_fd = -1;
	if (!cl->addrlen)
		return 0;
	fd = socket(cl->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (cl->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cl->addr, cl->addrlen) < 0 || listen(fd, 64) < 0)
		goto fail;
	g->metrics_fd = fd;
	return 0;
fail:
	err = -errno;
	LOGE("--metrics-listen %s: %s", cl->text, strerror(-err));
	if (fd >= 0)
		close(fd);
	return err;
}

int metrics_start(struct gateway *g)
{
	struct metrics *m;

	if (g->metrics_fd < 0)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->g = g;
	m->started = time(NULL);
	m->d = MHD_start_daemon(
	    MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL, on_request, m, MHD_OPTION_LISTEN_SOCKET,
	    (MHD_socket)g->metrics_fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_MEMORY, MHD_OPTION_END);
	if (!m->d) {
		LOGE("--metrics-listen %s: the HTTP server did not start",
		     g->conf->metrics_listen.text);
		free(m);
		return -EIO;
	}
	g->metrics = m;
	LOGI("metrics: GET http://%s/metrics", g->conf->metrics_listen.text);
	return 0;
}

void metrics_stop(struct gateway *g)
{
	if (g->metrics) {
		MHD_stop_daemon(g->metrics->d); /* joins its thread and closes the socket */
		free(g->metrics);
		g->metrics = NULL;
		g->metrics_fd = -1;
	}
	if (g->metrics_fd >= 0) {
		close(g->metrics_fd); /* bound, but the server never started */
		g->metrics_fd = -1;
	}
}

int metrics_worker_init(struct worker *w)
{
	size_t n = (size_t)w->g->hopnames.cap * WSTAT_DLV_N * sizeof(uint64_t);

	if (!n)
		return 0;
	/* Its own cache lines: no other worker's counter shares them. */
	n = (n + 63) & ~(size_t)63;
	w->st.dlv = aligned_alloc(64, n);
	if (!w->st.dlv)
		return -ENOMEM;
	memset(w->st.dlv, 0, n);
	return 0;
}

void metrics_worker_fini(struct worker *w)
{
	free(w->st.dlv);
	w->st.dlv = NULL;
}
