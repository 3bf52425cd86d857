/* relay_conf: the next hops, from --relay-to and --route. Parsed and
 * resolved on the main thread (at start, and again by a reload that
 * changes them: no worker ever blocks on DNS), read-only once built;
 * io/relay.c picks a recipient's route here. io/ only (it holds the TLS
 * client context). */
#ifndef RINGMX_IO_RELAY_CONF_H
#define RINGMX_IO_RELAY_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/conf.h"

struct tls_ctx;
struct relay_dns;

#define RELAY_ADDRS_PER_NAME 8u /* hops a host name gives at most (A, then AAAA) */
#define RELAY_MX_MAX         8u /* exchanges an MX lookup gives at most */

/* One next hop: an address to connect to. A configured host name gives
 * one per address, an "mx:" one per address of each exchange, in order. */
struct relay_hop {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool lmtp;      /* RFC 2033 */
	char text[96];  /* as configured: "mx.example:25", "lmtp:[::1]:24", "mx:example.com" */
	char host[256]; /* the host name (the exchange's for mx:), for TLS SNI */
	char name[320]; /* "host[addr]:port", for the log's relay= (Postfix's form) */
	unsigned stat;  /* its slot in the per-hop counters (struct relay_hop_names) */
};

/* The next hops of one recipient domain (or of all: domain NULL), tried in
 * order: failover. */
struct relay_route {
	char *domain; /* lower case; NULL: the default route (--relay-to) */
	struct relay_hop *hops;
	unsigned nhops;
};

/* Built from the options on the main thread (host names are resolved
 * here, so that no worker ever blocks on DNS); read-only afterwards. The
 * gateway's startup one lives to the end (<refs> 0); a reload's is
 * allocated and counted (relay_conf_ref()): the snapshot that brought it
 * and each worker's relay that delivers with it hold a reference. */
struct relay_conf {
	_Atomic unsigned refs;
	struct relay_route *routes;
	unsigned nroutes;
	unsigned nhops;      /* of all routes together */
	int def;             /* index of the default route, -1 if there is none */
	struct tls_ctx *tls; /* client context for STARTTLS; NULL: --relay-tls none */
	bool require_tls;    /* --relay-tls encrypt */
	uint32_t ttl;        /* seconds until its names are looked up again (the smallest TTL);
	                      * 0: only addresses, nothing to look up */
};

/* Parses --relay-to and --route, names looked up with <dns>. Returns 0
 * (rc->nroutes == 0: no delivery) or -EINVAL with one line in <err>. Main
 * thread. On error, what was built is freed by relay_conf_free(). */
int relay_conf_build(struct relay_conf *rc, const struct conf *c, struct relay_dns *dns, char *err,
                     size_t errlen);
/* Logs each route's next hops, in order: address and configured form. */
void relay_conf_log(const struct relay_conf *rc);
/* Whether <a> and <b> connect to the same addresses in the same order. */
bool relay_conf_same(const struct relay_conf *a, const struct relay_conf *b);
/* Frees what relay_conf_build() allocated; <rc> is left empty (def -1). */
void relay_conf_free(struct relay_conf *rc);
/* A reference to <rc> (NULL and the startup one: not counted); returns
 * <rc>. relay_conf_unref() drops one: the last frees <rc>. Any thread. */
struct relay_conf *relay_conf_ref(struct relay_conf *rc);
void relay_conf_unref(struct relay_conf *rc);

/* The next hops the per-hop delivery counters know, by route and hop as
 * configured: append-only, so that a hop keeps its counters across
 * reloads and the metrics thread reads names that never change (<n> is
 * published after the names it counts). Room for the startup hops and 256
 * more, fixed at start. */
struct relay_hop_name {
	char route[256]; /* the route's domain, "*" for --relay-to */
	char hop[96];    /* relay_hop.text */
};
struct relay_hop_names {
	struct relay_hop_name *v;
	unsigned cap;
	_Atomic unsigned n;
};
/* Room for <rc>'s hops and 256 more. Returns 0 or -ENOMEM. Main thread. */
int relay_hop_names_init(struct relay_hop_names *hn, const struct relay_conf *rc);
void relay_hop_names_fini(struct relay_hop_names *hn);
/* Gives each hop of <rc> its counters' slot in <hn>, adding the new ones.
 * Returns 0, or -ENOSPC with one line in <err> when <hn> has no room left.
 * Main thread (the only writer). */
int relay_conf_slots(struct relay_conf *rc, struct relay_hop_names *hn, char *err, size_t errlen);

/* The route of <rcpt> (an address without <>): the index of its domain's
 * --route (case-insensitive), else the default route; -1 when there is
 * none. Any thread. */
int relay_conf_route_of(const struct relay_conf *rc, const char *rcpt);

#endif
