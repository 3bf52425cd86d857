/* relay: delivery of spooled messages to the next hops (SMTP or LMTP),
 * driven by each worker's ring: connections from a bounded pool per next
 * hop, the sans-I/O client session of core/smtp_client, retries with
 * exponential backoff, failover between next hops, bounces (RFC 3464) and
 * the done log. A worker delivers the messages that the queue routed to it.
 * io/ only. */
#ifndef RINGMX_IO_RELAY_H
#define RINGMX_IO_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/conf.h"
#include "queue/mq.h"

struct io_uring_cqe;
struct worker;

/* One next hop: an address to connect to. */
struct relay_hop {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool lmtp;      /* RFC 2033 */
	char text[96];  /* as configured, for logs: "mx.example:25", "lmtp:[::1]:24" */
	char host[256]; /* the host part, for TLS SNI */
};

/* The next hops of one recipient domain (or of all: domain NULL), tried in
 * order: failover. */
struct relay_route {
	char *domain; /* lower case; NULL: the default route (--relay-to) */
	struct relay_hop *hops;
	unsigned nhops;
};

/* Built once from the options, before the workers start (host names are
 * resolved here, on the main thread, so that no worker ever blocks on
 * DNS); read-only afterwards. */
struct tls_ctx;

struct relay_conf {
	struct relay_route *routes;
	unsigned nroutes;
	int def;             /* index of the default route, -1 if there is none */
	struct tls_ctx *tls; /* client context for STARTTLS; NULL: --relay-tls none */
	bool require_tls;    /* --relay-tls encrypt */
};

/* Parses --relay-to and --route. Returns 0 (rc->nroutes == 0: no delivery)
 * or -EINVAL with one line in <err>. Main thread, at start. */
int relay_conf_build(struct relay_conf *rc, const struct conf *c, char *err, size_t errlen);
void relay_conf_free(struct relay_conf *rc);

/* Per-worker delivery state. Worker thread only. */
int relay_init(struct worker *w);
void relay_fini(struct worker *w);
/* Takes descriptors the queue routed to this worker. */
void relay_take(struct worker *w, const struct mq_item *it, unsigned n);
/* Once a second: timeouts, deferred messages whose time has come. */
void relay_tick(struct worker *w);
/* Retry every deferred message now (ringmx queue --flush). */
void relay_flush(struct worker *w);
/* Forgets the deferred message <qid> (ringmx queue --delete marked it done). */
void relay_drop(struct worker *w, const char *qid);
/* A completion for a relay object (enum obj_type OBJ_RELAY). */
void relay_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe);
void relay_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* End of a round: one send per relay connection with output. */
void relay_round(struct worker *w);
/* True while the relay still has connections open (shutdown waits). */
bool relay_busy(const struct worker *w);
/* Shutdown: stop starting deliveries, QUIT idle connections; <hard>
 * (the grace period is over): close the busy ones too, their recipients
 * deferred (they stay in the spool). */
void relay_stop(struct worker *w, bool hard);

#endif
