/* relay_conf: the next hops, from --relay-to and --route. Parsed and
 * resolved once on the main thread before the workers start (no worker
 * ever blocks on DNS), read-only afterwards; io/relay.c picks a recipient's
 * route here. io/ only (it holds the TLS client context). */
#ifndef RINGMX_IO_RELAY_CONF_H
#define RINGMX_IO_RELAY_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/conf.h"

struct tls_ctx;

/* One next hop: an address to connect to. */
struct relay_hop {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool lmtp;      /* RFC 2033 */
	char text[96];  /* as configured, for logs: "mx.example:25", "lmtp:[::1]:24" */
	char host[256]; /* the host part, for TLS SNI */
	char name[320]; /* "host[addr]:port", for the log's relay= (Postfix's form) */
};

/* The next hops of one recipient domain (or of all: domain NULL), tried in
 * order: failover. */
struct relay_route {
	char *domain; /* lower case; NULL: the default route (--relay-to) */
	struct relay_hop *hops;
	unsigned nhops;
	unsigned first_hop; /* its first hop's number among all routes' (metrics) */
};

/* Built once from the options, before the workers start (host names are
 * resolved here, on the main thread, so that no worker ever blocks on
 * DNS); read-only afterwards. */
struct relay_conf {
	struct relay_route *routes;
	unsigned nroutes;
	unsigned nhops;      /* of all routes together */
	int def;             /* index of the default route, -1 if there is none */
	struct tls_ctx *tls; /* client context for STARTTLS; NULL: --relay-tls none */
	bool require_tls;    /* --relay-tls encrypt */
};

/* Parses --relay-to and --route. Returns 0 (rc->nroutes == 0: no delivery)
 * or -EINVAL with one line in <err>. Main thread, at start. On error, what
 * was built is freed by relay_conf_free(). */
int relay_conf_build(struct relay_conf *rc, const struct conf *c, char *err, size_t errlen);
/* Frees what relay_conf_build() allocated; <rc> is left empty (def -1). */
void relay_conf_free(struct relay_conf *rc);

/* The route of <rcpt> (an address without <>): the index of its domain's
 * --route (case-insensitive), else the default route; -1 when there is
 * none. Any thread. */
int relay_conf_route_of(const struct relay_conf *rc, const char *rcpt);

#endif
