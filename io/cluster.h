/* cluster: the cluster-wide rate counters (--limits-redis) on a worker's
 * ring. Each worker holds one hiredis async connection to Redis, driven by
 * io_uring poll requests on its socket (no thread of its own, no blocking
 * call): a session whose connection, message or recipient rate is shared
 * waits for Redis's count, at most --limits-redis-timeout; without an
 * answer by then, or while Redis is unreachable, the local table
 * (core/anvil) decides, as it does without --limits-redis (fail open, one
 * warning per outage), and the link reconnects with a backoff. The keys
 * and their expiry: core/cluster_rate.h, docs/operations.md. Worker thread
 * only, but for cluster_conf_init(). */
#ifndef RINGMX_IO_CLUSTER_H
#define RINGMX_IO_CLUSTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/cluster_rate.h"
#include "core/conf.h"
#include "io/types-t.h"

/* What the workers share: where Redis is and what is asked of it. */
struct cluster_conf {
	char ip[64];    /* numeric: resolved at start, never on a worker */
	unsigned port;  /* 1-65535 */
	char text[280]; /* --limits-redis as given, for the logs */
	unsigned timeout_ms;
	unsigned ask; /* bit 1 << enum cluster_rate_kind: the rates kept in Redis */
	struct anvil_rate rate[CLUSTER_RATE_N];
	unsigned prefix4, prefix6;
	atomic_bool outage; /* a worker found Redis gone and said so; cleared by an answer */
};

/* Fills <cc> from <cf> (which has limits_redis): resolves the host (main
 * thread, at start). Returns 0, or -1 with one line in <err>. */
int cluster_conf_init(struct cluster_conf *cc, const struct conf *cf, char *err, size_t errlen);

/* The worker's link, connecting (w->cluster; w->g->cluster set). Returns
 * 0 or -ENOMEM. */
int cluster_start(struct worker *w);
/* Worker end, its ring idle: the link goes. */
void cluster_stop(struct worker *w);
/* Whether rate <kind> is asked of Redis now: kept there, and the link is
 * up. Otherwise the local table decides at once. */
bool cluster_asks(const struct worker *w, enum cluster_rate_kind kind);
/* Asks for <c>'s verdict on one event of <kind> (C_RATEQ until it is
 * given: session_rate_answer(), from cluster_round()). */
void cluster_ask(struct worker *w, struct conn *c, enum cluster_rate_kind kind);
/* End of a round: the commands it asked leave, in one write. */
void cluster_flush(struct worker *w);
/* The verdicts that came in this round go to their sessions. */
void cluster_round(struct worker *w);
/* Completions: the socket's poll (UD_CLUSTER_POLL), the timer
 * (UD_CLUSTER_TIMER: overdue answers, connect deadline, reconnect). */
void cluster_on_poll(struct worker *w, void *p, struct io_uring_cqe *cqe);
void cluster_on_timer(struct worker *w, void *p, struct io_uring_cqe *cqe);

/* (io/session_limit.c) <c>'s verdict: <v> 1 fits, -1 over, 0 Redis gave
 * none (the local table decides). */
void session_rate_answer(struct worker *w, struct conn *c, enum cluster_rate_kind kind, int v);

#endif
