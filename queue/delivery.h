/* delivery: the sans-I/O state of the messages a worker is delivering to
 * the next hops, and the decisions taken on it. Per recipient: its route,
 * its state and its last reply. Per message: the jobs that carry its
 * pending recipients to one route each. Per route: the jobs waiting for a
 * connection, their count, and the failures that decide when a route is
 * down. Results come in and verdicts go out (delivered, deferred until a
 * time, bounce these recipients, try the next hop); io/relay.c runs the
 * connections and carries the verdicts out (done marks, bounces and defer
 * notes, handed to the committer through the worker loop). No sockets, no clocks (the caller passes
 * <now>), no logging. Every call is for the one worker thread that owns the state. core/ and libc
 * only. */
#ifndef RINGMX_QUEUE_DELIVERY_H
#define RINGMX_QUEUE_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/dsn.h"
#include "core/retry.h"
#include "core/smtp_client.h"

/* Recipient states in a message. */
enum delivery_state {
	DELIVERY_PENDING = 0, /* not delivered yet (never tried, or deferred) */
	DELIVERY_BUSY,        /* in a job: queued for, or on, a connection */
	DELIVERY_SENT,        /* the next hop took it */
	DELIVERY_FAILED,      /* permanent failure or expired: bounce */
};

/* Recipient flags (delivery_rcpt.flags). */
#define DELIVERY_R_EXPIRED 0x1u /* failed by delivery_settle(): still deferred at its lifetime */

struct delivery_rcpt {
	const char *addr; /* without <>: the caller's (the envelope), outlives the message */
	uint8_t state;    /* enum delivery_state */
	uint8_t flags;    /* DELIVERY_R_* */
	unsigned route;   /* index of its route; unused once FAILED without one */
	char *why;        /* last reply or local reason (malloc), NULL if none */
	char *mta;        /* the next hop that gave <why> (malloc), NULL: decided locally */
};

/* A message being delivered. The caller embeds it, fills the envelope
 * fields after delivery_msg_init() and keeps the strings valid until
 * delivery_msg_fini(). */
struct delivery_msg {
	const char *qid;  /* queue id, for the caller's logs */
	const char *from; /* reverse-path without <>, "" for the null sender */
	time_t arrival;
	uint64_t size;  /* content octets (SIZE=) */
	bool body_8bit; /* the content has 8-bit octets */
	bool smtputf8;  /* needs SMTPUTF8 */
	struct delivery_rcpt *rcpt;
	unsigned nrcpt;
	unsigned attempts; /* failed attempts so far (delivery_settle() counts them) */
	unsigned jobs;     /* jobs out: queued or on a connection */
	time_t next_try;   /* when deferred: the next attempt */
};

/* A message's recipients for one route: what one connection sends in one
 * transaction. Owned by its route's queue while queued, then by the
 * connection that took it until delivery_job_release(). */
struct delivery_job {
	struct delivery_msg *msg;
	unsigned route;
	unsigned n;
	unsigned *idx;             /* [n]: its recipients' indexes in msg->rcpt, ascending */
	const char **rcpts;        /* [n]: their addresses, for smtp_client_send() */
	struct smtp_client_msg cm; /* the message as smtp_client_send() takes it */
	struct delivery_job *next; /* in its route's queue */
};

struct delivery_route {
	struct delivery_job *head, *tail; /* jobs waiting for a connection, oldest first */
	unsigned njobs;                   /* how many: counted, never walked */
	unsigned failures;                /* connections in a row that reached no hop */
};

struct delivery_queue {
	struct delivery_route *routes;
	unsigned nroutes;
	struct delivery_job **group; /* [nroutes]: delivery_dispatch()'s scratch */
	unsigned *count;             /* [nroutes]: the same */
};

/* Allocates the recipients of <m> (zeroed: PENDING, route 0, no reply) and
 * zeroes the rest; the caller then sets the envelope fields and each
 * recipient's <addr> and <route> (or delivery_rcpt_fail()). Returns 0 or
 * -ENOMEM (then <m> is empty and delivery_msg_fini() is a no-op). */
int delivery_msg_init(struct delivery_msg *m, unsigned nrcpt);
/* Frees what <m> allocated (not the envelope strings). A zeroed <m> is a
 * no-op. No job of <m> may be out. */
void delivery_msg_fini(struct delivery_msg *m);
/* Recipient <i> of <m> fails at once with the local reason <why> (e.g. no
 * route to its domain): it will be bounced. */
void delivery_rcpt_fail(struct delivery_msg *m, unsigned i, const char *why);

/* Empty queues for <nroutes> routes (>= 1). Returns 0 or -ENOMEM. */
int delivery_queue_init(struct delivery_queue *q, unsigned nroutes);
/* Frees the queues. Jobs still queued are freed with them, their messages
 * untouched (shutdown: they stay in the spool). A zeroed <q> is a no-op. */
void delivery_queue_fini(struct delivery_queue *q);

/* Called by delivery_dispatch() after a job was queued on <route>. */
typedef void delivery_kick_fn(void *arg, unsigned route);

/* Groups the PENDING recipients of <m> by route, one job per route (in
 * route order; recipients in message order), marks them BUSY, counts the
 * jobs in m->jobs and appends each job to its route's queue, calling
 * <kick>(<arg>, route) after each. Costs O(recipients of <m> + routes),
 * however many jobs are queued already. Returns 0, or -ENOMEM when a route's job could not be
 * allocated (its recipients stay PENDING; the other routes were queued).
 * When m->jobs is 0 afterwards nothing is out: delivery_settle() it. */
int delivery_dispatch(struct delivery_queue *q, struct delivery_msg *m, delivery_kick_fn *kick,
                      void *arg);

/* The oldest job waiting on <route>, taken out of the queue (the caller
 * owns it now), or NULL when none waits. O(1). */
struct delivery_job *delivery_take(struct delivery_queue *q, unsigned route);

/* Jobs waiting on <route>. O(1). */
static inline unsigned delivery_waiting(const struct delivery_queue *q, unsigned route)
{
	return q->routes[route].njobs;
}

/* Recipient <k> of <j> (0 <= k < j->n) got its result: <st> (SMTPC_OK:
 * SENT, SMTPC_PERM: FAILED, anything else: PENDING again, to be retried),
 * <text> the reply that decided it (copied), <mta> the next hop that gave
 * it (copied; NULL: decided locally). Returns the recipient's new state. */
enum delivery_state delivery_job_result(struct delivery_job *j, unsigned k,
                                        enum smtp_client_status st, const char *text,
                                        const char *mta);
/* Every recipient of <j> gets <why> (copied) as its last reply, its state
 * and next hop unchanged: the job comes back unsent (connection lost before
 * the results, route down, shutdown). */
void delivery_job_why(struct delivery_job *j, const char *why);
/* Frees <j>, taken from its queue or never queued. Returns its message when
 * that was its last job out (call delivery_settle() now), else NULL. */
struct delivery_msg *delivery_job_release(struct delivery_job *j);

/* Takes <j>, queued and never sent, back: its recipients are PENDING
 * again, no attempt counted (the routes changed: io/relay dispatches its
 * message again). Frees <j>; returns its message when that was its last
 * job out, else NULL. */
struct delivery_msg *delivery_job_unqueue(struct delivery_job *j);

/* What to do with a message that has no job out. */
enum delivery_outcome {
	DELIVERY_SETTLE_DONE = 0, /* every recipient SENT: done (SPOOL_DELIVERED) */
	DELIVERY_SETTLE_BOUNCE,   /* every recipient decided, <failed> FAILED ones: bounce them
	                           * (delivery_bounce_rcpts()), then done (SPOOL_BOUNCED) */
	DELIVERY_SETTLE_DEFER,    /* recipients PENDING: try again at <next_try> */
};

struct delivery_settlement {
	enum delivery_outcome outcome;
	time_t next_try;  /* DEFER: when (also in m->next_try) */
	unsigned failed;  /* recipients FAILED, those expired now included */
	unsigned expired; /* recipients failed now because the message is too old to retry
	                   * (flag DELIVERY_R_EXPIRED) */
};

/* Settles <m>, which has no job out, at <now> under <rc> (for the null
 * sender, delivery_settle() applies retry_conf_null_sender() itself): BUSY
 * recipients become PENDING; if some are PENDING and the message has
 * expired they become FAILED (DELIVERY_R_EXPIRED); if some are still
 * PENDING, m->attempts counts one more and m->next_try is set: DEFER.
 * Otherwise DONE or BOUNCE. */
struct delivery_settlement delivery_settle(struct delivery_msg *m, const struct retry_conf *rc,
                                           time_t now);

/* The FAILED recipients of <m> as DSN recipients, into <out> (room for
 * m->nrcpt), last attempt <now>: the strings are <m>'s, valid until its
 * next change. Returns how many. */
unsigned delivery_bounce_rcpts(const struct delivery_msg *m, struct dsn_rcpt *out, time_t now);

/* The last reply of the first PENDING recipient that has one, for the
 * defer log; NULL if none. */
const char *delivery_defer_why(const struct delivery_msg *m);

/* A connection of <route> at hop <*hop> of <nhops>, one of the route's
 * <nconns> connections, failed before it could take a message. <connect>:
 * the connect itself failed (the route is down only once as many
 * connections in a row reached no hop as it has); otherwise the hop refused
 * (greeting, EHLO, TLS required), and with no other hop the route is down
 * at once (no reconnect loop). delivery_route_up() resets the count. */
enum delivery_failover {
	DELIVERY_FO_NEXT_HOP = 0, /* *hop was moved on: connect to it */
	DELIVERY_FO_ROUTE_DOWN,   /* no hop answers: defer the route's waiting jobs, close */
	DELIVERY_FO_CLOSE,        /* close this connection only: others are still trying */
};
enum delivery_failover delivery_failover(struct delivery_queue *q, unsigned route, unsigned *hop,
                                         unsigned nhops, unsigned nconns, bool connect);
/* A connection of <route> reached a hop that is ready for mail. */
static inline void delivery_route_up(struct delivery_queue *q, unsigned route)
{
	q->routes[route].failures = 0;
}

#endif
