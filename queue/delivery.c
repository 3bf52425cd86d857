/* delivery: the per-recipient state of the messages a worker delivers, the
 * jobs that carry them to their routes, and the verdicts (see delivery.h).
 * This is the part of the relay that decides; io/relay.c is the part that
 * connects, sends and writes. Nothing here blocks, reads a clock or logs,
 * so every decision is tested without a socket (tests/unit/delivery_test.c).
 *
 * Per-route queues keep their length, so that the relay's dispatcher asks
 * "how many jobs wait here?" in O(1) instead of walking the queue for each
 * job queued (which made 20,000 jobs behind a route that is down cost
 * O(n^2)): a dispatch costs O(recipients of the message). */
#include "queue/delivery.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int delivery_msg_init(struct delivery_msg *m, unsigned nrcpt)
{
	memset(m, 0, sizeof(*m));
	m->rcpt = calloc(nrcpt ? nrcpt : 1, sizeof(*m->rcpt));
	if (!m->rcpt)
		return -ENOMEM;
	m->nrcpt = nrcpt;
	return 0;
}

void delivery_msg_fini(struct delivery_msg *m)
{
	for (unsigned i = 0; i < m->nrcpt; i++) {
		free(m->rcpt[i].why);
		free(m->rcpt[i].mta);
	}
	free(m->rcpt);
	m->rcpt = NULL;
	m->nrcpt = 0;
}

/* Replaces a malloc'd string with a copy of <s> (NULL: none). A failed
 * copy leaves NULL: the reply text is informational. */
static void delivery_set(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? strdup(s) : NULL;
}

void delivery_rcpt_fail(struct delivery_msg *m, unsigned i, const char *why)
{
	m->rcpt[i].state = DELIVERY_FAILED;
	delivery_set(&m->rcpt[i].why, why);
}

int delivery_queue_init(struct delivery_queue *q, unsigned nroutes)
{
	memset(q, 0, sizeof(*q));
	q->routes = calloc(nroutes, sizeof(*q->routes));
	q->group = calloc(nroutes, sizeof(*q->group));
	q->count = calloc(nroutes, sizeof(*q->count));
	if (!q->routes || !q->group || !q->count) {
		delivery_queue_fini(q);
		return -ENOMEM;
	}
	q->nroutes = nroutes;
	return 0;
}

void delivery_queue_fini(struct delivery_queue *q)
{
	struct delivery_job *j;

	for (unsigned rt = 0; rt < q->nroutes; rt++) {
		while ((j = delivery_take(q, rt)))
			free(j);
	}
	free(q->routes);
	free(q->group);
	free(q->count);
	memset(q, 0, sizeof(*q));
}

/* One allocation per job: the job, then its address and index arrays. */
static struct delivery_job *delivery_job_new(struct delivery_msg *m, unsigned route, unsigned n)
{
	struct delivery_job *j;

	j = calloc(1, sizeof(*j) + n * (sizeof(*j->rcpts) + sizeof(*j->idx)));
	if (!j)
		return NULL;
	j->rcpts = (const char **)(j + 1);
	j->idx = (unsigned *)(j->rcpts + n);
	j->msg = m;
	j->route = route;
	j->cm = (struct smtp_client_msg){
	    .from = m->from,
	    .rcpts = j->rcpts,
	    .size = m->size,
	    .body_8bit = m->body_8bit,
	    .smtputf8 = m->smtputf8,
	};
	return j;
}

static void delivery_enqueue(struct delivery_queue *q, struct delivery_job *j)
{
	struct delivery_route *rs = &q->routes[j->route];

	j->next = NULL;
	if (rs->tail)
		rs->tail->next = j;
	else
		rs->head = j;
	rs->tail = j;
	rs->njobs++;
}

int delivery_dispatch(struct delivery_queue *q, struct delivery_msg *m, delivery_kick_fn *kick,
                      void *arg)
{
	struct delivery_job **group = q->group;
	int err = 0;

	/* Pass 1: how many recipients per route, and a job for each. */
	memset(q->count, 0, q->nroutes * sizeof(*q->count));
	for (unsigned i = 0; i < m->nrcpt; i++)
		q->count[m->rcpt[i].route] += m->rcpt[i].state == DELIVERY_PENDING;
	for (unsigned rt = 0; rt < q->nroutes; rt++) {
		unsigned n = q->count[rt];

		group[rt] = n ? delivery_job_new(m, rt, n) : NULL;
		if (n && !group[rt])
			err = -ENOMEM; /* those recipients stay PENDING */
	}
	/* Pass 2: fill the jobs, in message order. */
	for (unsigned i = 0; i < m->nrcpt; i++) {
		struct delivery_rcpt *r = &m->rcpt[i];
		struct delivery_job *j = group[r->route];

		if (r->state != DELIVERY_PENDING || !j)
			continue;
		j->idx[j->n] = i;
		j->rcpts[j->n++] = r->addr;
		r->state = DELIVERY_BUSY;
	}
	/* Count them all before the first kick: a kick may not settle <m>. */
	for (unsigned rt = 0; rt < q->nroutes; rt++)
		m->jobs += group[rt] != NULL;
	for (unsigned rt = 0; rt < q->nroutes; rt++) {
		struct delivery_job *j = group[rt];

		if (!j)
			continue;
		group[rt] = NULL;
		j->cm.nrcpt = j->n;
		delivery_enqueue(q, j);
		if (kick)
			kick(arg, rt);
	}
	return err;
}

struct delivery_job *delivery_take(struct delivery_queue *q, unsigned route)
{
	struct delivery_route *rs = &q->routes[route];
	struct delivery_job *j = rs->head;

	if (!j)
		return NULL;
	rs->head = j->next;
	if (!rs->head)
		rs->tail = NULL;
	rs->njobs--;
	j->next = NULL;
	return j;
}

enum delivery_state delivery_job_result(struct delivery_job *j, unsigned k,
                                        enum smtp_client_status st, const char *text,
                                        const char *mta)
{
	struct delivery_rcpt *r = &j->msg->rcpt[j->idx[k]];

	delivery_set(&r->why, text);
	delivery_set(&r->mta, mta);
	if (st == SMTPC_OK)
		r->state = DELIVERY_SENT;
	else if (st == SMTPC_PERM)
		r->state = DELIVERY_FAILED;
	else
		r->state = DELIVERY_PENDING;
	return r->state;
}

void delivery_job_why(struct delivery_job *j, const char *why)
{
	for (unsigned k = 0; k < j->n; k++)
		delivery_set(&j->msg->rcpt[j->idx[k]].why, why);
}

struct delivery_msg *delivery_job_release(struct delivery_job *j)
{
	struct delivery_msg *m = j->msg;

	free(j);
	return --m->jobs == 0 ? m : NULL;
}

struct delivery_msg *delivery_job_unqueue(struct delivery_job *j)
{
	for (unsigned k = 0; k < j->n; k++)
		if (j->msg->rcpt[j->idx[k]].state == DELIVERY_BUSY)
			j->msg->rcpt[j->idx[k]].state = DELIVERY_PENDING;
	return delivery_job_release(j);
}

struct delivery_settlement delivery_settle(struct delivery_msg *m, const struct retry_conf *rc,
                                           time_t now)
{
	struct delivery_settlement s = {.outcome = DELIVERY_SETTLE_DONE};
	struct retry_conf c = m->from[0] ? *rc : retry_conf_null_sender(rc);
	unsigned pending = 0;

	for (unsigned i = 0; i < m->nrcpt; i++) {
		if (m->rcpt[i].state == DELIVERY_BUSY)
			m->rcpt[i].state = DELIVERY_PENDING;
		pending += m->rcpt[i].state == DELIVERY_PENDING;
	}
	if (pending && retry_expired(&c, m->arrival, now)) {
		for (unsigned i = 0; i < m->nrcpt; i++) {
			if (m->rcpt[i].state != DELIVERY_PENDING)
				continue;
			m->rcpt[i].state = DELIVERY_FAILED;
			m->rcpt[i].flags |= DELIVERY_R_EXPIRED;
			s.expired++;
		}
		pending = 0;
	}
	if (pending) {
		m->attempts++;
		m->next_try = retry_next(&c, m->arrival, now, m->attempts);
		s.outcome = DELIVERY_SETTLE_DEFER;
		s.next_try = m->next_try;
		return s;
	}
	for (unsigned i = 0; i < m->nrcpt; i++)
		s.failed += m->rcpt[i].state == DELIVERY_FAILED;
	if (s.failed)
		s.outcome = DELIVERY_SETTLE_BOUNCE;
	return s;
}

unsigned delivery_bounce_rcpts(const struct delivery_msg *m, struct dsn_rcpt *out, time_t now)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->nrcpt; i++) {
		const struct delivery_rcpt *r = &m->rcpt[i];

		if (r->state != DELIVERY_FAILED)
			continue;
		out[n++] = (struct dsn_rcpt){
		    .addr = r->addr,
		    .action = DSN_FAILED,
		    .remote_mta = r->mta,
		    .diag = r->why,
		    .diag_type = r->mta ? NULL : "X-Ringmx",
		    .last_attempt = now,
		};
	}
	return n;
}

const char *delivery_defer_why(const struct delivery_msg *m)
{
	for (unsigned i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].state == DELIVERY_PENDING && m->rcpt[i].why)
			return m->rcpt[i].why;
	return NULL;
}

enum delivery_failover delivery_failover(struct delivery_queue *q, unsigned route, unsigned *hop,
                                         unsigned nhops, unsigned nconns, bool connect)
{
	if (*hop + 1 < nhops) {
		++*hop;
		return DELIVERY_FO_NEXT_HOP;
	}
	if (!connect || ++q->routes[route].failures >= nconns)
		return DELIVERY_FO_ROUTE_DOWN;
	return DELIVERY_FO_CLOSE;
}
