/* cluster: the cluster-wide rate counters in Redis on the worker's ring.
 * See cluster.h.
 *
 * hiredis does the protocol (its async API: commands are buffered, replies
 * come to callbacks) and asks its event library for read and write
 * readiness through five hooks. Here the event library is the worker's
 * ring: a hook only notes what hiredis wants, and one oneshot poll request
 * per direction (struct cluster_poll, UD_CLUSTER_POLL) is kept armed while
 * it wants it; its completion calls redisAsyncHandleRead() or
 * redisAsyncHandleWrite(), which read or write the non-blocking socket
 * once. So the commands asked in a round leave in one write, and their
 * replies come back in as few reads as the kernel has them.
 *
 * A verdict never runs inside a hiredis callback: the callback notes it on
 * the conn and puts the conn on <ready>, and cluster_round() hands them to
 * the sessions after the round's completions (a session fed then may ask
 * again: that is a new command, not re-entry into hiredis).
 *
 * Failures: a connection that fails or closes, a request unanswered after
 * --limits-redis-timeout, an error reply (LOADING after a restart, OOM,
 * NOAUTH) all drop the context (its pending callbacks run with no reply:
 * those sessions are decided locally) and a reconnect follows after a
 * backoff of 100 ms doubling to 5 s. The first failure of an outage is
 * logged by whichever worker sees it, the first answer after it too. */
#include "io/cluster.h"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "io/ring.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_MS     1000 /* a connect may take this, plus the request timeout */

struct cluster;

/* One direction of the socket: POLLIN or POLLOUT. */
struct cluster_poll {
	struct cluster *cl;
	unsigned mask;
	bool want;    /* hiredis wants it */
	bool armed;   /* a poll request is in flight */
	unsigned gen; /* the context it was armed for */
};

/* One event counted in Redis: SET NX, INCR, GET in flight. */
struct cluster_req {
	struct cluster *cl;
	struct conn *c; /* waiting for it; NULL once answered otherwise */
	struct cluster_req *next;
	int64_t deadline; /* worker ms */
	int64_t into_ms;  /* its place in the window */
	long long cur;    /* INCR's answer */
	bool counted;     /* <cur> came */
	enum cluster_rate_kind kind;
	char key[CLUSTER_RATE_KEY_MAX]; /* the window's key: DECR if refused */
	char why[64];                   /* an error answer, for the log */
};

struct cluster {
	struct worker *w;
	const struct cluster_conf *cc;
	redisAsyncContext *ac; /* NULL: down, a reconnect at <retry_at> */
	bool up;               /* connected: requests go to Redis */
	bool wfull;            /* a write left some behind: the socket is full */
	bool stopping;
	unsigned gen; /* bumped for each context */
	struct cluster_poll pin, pout;
	struct cluster_req *head, *tail; /* in the context, oldest first */
	struct conn *ready, *ready_tail; /* verdicts for cluster_round() */
	int64_t connect_deadline;        /* while connecting */
	int64_t retry_at;                /* while down */
	unsigned backoff_ms;
	struct ring_timer timer;
	const char *why; /* the reason of a drop of our own, for the log */
	struct buf cmd;
	uint64_t stat_redis;    /* verdicts Redis gave */
	uint64_t stat_fallback; /* asked, but Redis failed or was late: the local table's */
};

/* ---- the outage: said once, by any worker ---- */

static void outage_begin(struct cluster *cl, const char *why)
{
	struct cluster_conf *cc = (struct cluster_conf *)cl->cc;

	if (!atomic_exchange(&cc->outage, true))
		LOGW("limits: Redis %s: %s; rates are counted by this gateway alone until it "
		     "answers again",
		     cc->text, why);
	else
		LOGD("limits: worker %u: Redis %s: %s", cl->w->id, cc->text, why);
}

static void outage_end(struct cluster *cl)
{
	struct cluster_conf *cc = (struct cluster_conf *)cl->cc;

	cl->backoff_ms = BACKOFF_MIN_MS;
	if (atomic_load_explicit(&cc->outage, memory_order_relaxed) &&
	    atomic_exchange(&cc->outage, false))
		LOGI("limits: Redis %s answers again: rates are counted there", cc->text);
}

/* ---- the timer ---- */

static void timer_arm(struct cluster *cl)
{
	struct worker *w = cl->w;
	int64_t at = 0;

	for (struct cluster_req *q = cl->head; q; q = q->next) {
		if (q->c) { /* the oldest still awaited: the earliest deadline */
			at = q->deadline;
			break;
		}
	}
	if (cl->ac && !cl->up && (!at || cl->connect_deadline < at))
		at = cl->connect_deadline;
	if (!cl->ac && !cl->stopping && (!at || cl->retry_at < at))
		at = cl->retry_at;
	ring_timer_at(&w->ring, &cl->timer, w->now, at, UD(cl, UD_CLUSTER_TIMER));
}

/* ---- polls: hiredis's event hooks ---- */

static void poll_arm(struct cluster *cl, struct cluster_poll *pl)
{
	if (!cl->ac || !pl->want || pl->armed)
		return;
	ring_poll_fd(&cl->w->ring, cl->ac->c.fd, pl->mask, UD(pl, UD_CLUSTER_POLL));
	pl->armed = true;
	pl->gen = cl->gen;
}

/* Reads are always watched by a poll. Writes only while connecting (the
 * connect's end is a writable socket) and while the socket is full: once
 * connected, what a round asked leaves at its end (cluster_flush()), as
 * Redis's own loop writes replies before it sleeps, without a poll's
 * extra turn of the loop. */
static void poll_sync(struct cluster *cl)
{
	poll_arm(cl, &cl->pin);
	if (!cl->up || cl->wfull)
		poll_arm(cl, &cl->pout);
}

static void ev_add_read(void *priv)
{
	struct cluster *cl = priv;

	cl->pin.want = true;
	poll_sync(cl);
}

static void ev_del_read(void *priv)
{
	((struct cluster *)priv)->pin.want = false; /* a poll in flight is ignored */
}

static void ev_add_write(void *priv)
{
	struct cluster *cl = priv;

	cl->pout.want = true;
	poll_sync(cl);
}

static void ev_del_write(void *priv)
{
	((struct cluster *)priv)->pout.want = false;
}

/* The context is being freed (its pending callbacks have run): the polls
 * on its socket are cancelled (closing the descriptor would not end
 * them: the ring holds the file), and a reconnect is planned. */
static void ev_cleanup(void *priv)
{
	struct cluster *cl = priv;
	struct cluster_poll *ps[2] = {&cl->pin, &cl->pout};
	const char *why = cl->why;

	if (!why)
		why = cl->ac && cl->ac->c.err && cl->ac->c.errstr[0] ? cl->ac->c.errstr
		                                                     : "connection closed";
	for (unsigned i = 0; i < 2; i++) {
		if (ps[i]->armed && ps[i]->gen == cl->gen && !cl->stopping)
			ring_poll_cancel(&cl->w->ring, UD(ps[i], UD_CLUSTER_POLL));
		ps[i]->want = false;
	}
	if (!cl->stopping)
		outage_begin(cl, why);
	cl->ac = NULL;
	cl->up = false;
	cl->wfull = false;
	cl->why = NULL;
	cl->gen++;
	cl->retry_at = cl->w->now + cl->backoff_ms;
	cl->backoff_ms = cl->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cl->backoff_ms * 2;
	if (!cl->stopping)
		timer_arm(cl);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct cluster *cl = ac->data;

	if (status != REDIS_OK)
		return; /* hiredis frees it: ev_cleanup() says why */
	cl->up = true;
	LOGD("limits: worker %u: connected to Redis %s", cl->w->id, cl->cc->text);
}

static void link_connect(struct cluster *cl)
{
	redisAsyncContext *ac;

	cl->retry_at = 0;
	/* A numeric address: hiredis's getaddrinfo() has nothing to look up. */
	ac = redisAsyncConnect(cl->cc->ip, (int)cl->cc->port);
	if (!ac || ac->err) {
		outage_begin(cl, ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac); /* no hooks yet: nothing else runs */
		cl->retry_at = cl->w->now + cl->backoff_ms;
		cl->backoff_ms =
		    cl->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cl->backoff_ms * 2;
		timer_arm(cl);
		return;
	}
	cl->ac = ac;
	cl->gen++;
	ac->data = cl;
	ac->ev.data = cl;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	cl->connect_deadline = cl->w->now + CONNECT_MS + cl->cc->timeout_ms;
	redisAsyncSetConnectCallback(ac, on_connect); /* waits for writability */
	timer_arm(cl);
}

/* Drops the context (not from inside a hiredis callback): its pending
 * callbacks run with no reply, then ev_cleanup(). */
static void link_drop(struct cluster *cl, const char *why)
{
	if (!cl->ac)
		return;
	cl->why = why;
	redisAsyncFree(cl->ac);
}

void cluster_on_poll(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct cluster_poll *pl = p;
	struct cluster *cl = pl->cl;

	pl->armed = false;
	if (cl->ac && pl->gen == cl->gen && pl->want && cqe->res > 0) {
		if (pl == &cl->pin) {
			redisAsyncHandleRead(cl->ac); /* may free the context */
		} else {
			cl->wfull = false;
			redisAsyncHandleWrite(cl->ac);
			cl->wfull = cl->up && cl->pout.want;
		}
	}
	poll_sync(cl);
	timer_arm(cl);
}

/* ---- requests ---- */

static void answer(struct cluster *cl, struct conn *c, int v)
{
	if (c->cl_req) {
		c->cl_req->c = NULL;
		c->cl_req = NULL;
	}
	c->cl_verdict = (int8_t)v;
	c->cl_next = NULL;
	if (cl->ready_tail)
		cl->ready_tail->cl_next = c;
	else
		cl->ready = c;
	cl->ready_tail = c;
}

static void req_unlink(struct cluster *cl, struct cluster_req *q)
{
	struct cluster_req **pp = &cl->head, *prev = NULL;

	while (*pp && *pp != q) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = q->next;
	if (cl->tail == q)
		cl->tail = prev;
}

/* INCR's answer: the count, this event included. */
static void on_incr(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cluster_req *q = priv;
	const redisReply *r = reply;

	if (!r)
		return; /* the context is going: on_get() hears it too */
	if (r->type == REDIS_REPLY_INTEGER) {
		q->cur = r->integer;
		q->counted = true;
	} else {
		snprintf(q->why, sizeof(q->why), "%s",
		         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected answer to INCR");
	}
}

/* GET's answer (the previous window's count, or nil), the last of the
 * request's: the verdict. */
static void on_get(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cluster_req *q = priv;
	struct cluster *cl = q->cl;
	const redisReply *r = reply;
	int v = 0;

	req_unlink(cl, q);
	if (r && q->counted && (r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_STRING)) {
		long long prev = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;

		v = cluster_rate_fits(&cl->cc->rate[q->kind], q->into_ms, q->cur, prev) ? 1 : -1;
		if (v < 0 && !cl->stopping) {
			/* Refused: not counted, as the local table never counts one. */
			buf_reset(&cl->cmd, 256);
			if (!cluster_rate_undo(&cl->cmd, q->key))
				redisAsyncFormattedCommand(ac, NULL, NULL, cl->cmd.p, cl->cmd.len);
		}
		outage_end(cl);
	} else if (r) {
		if (!q->why[0])
			snprintf(q->why, sizeof(q->why), "%s",
			         r->type == REDIS_REPLY_ERROR ? r->str
			                                      : "unexpected answer to GET");
		outage_begin(cl, q->why);
		/* hiredis frees it once this callback returns. */
		cl->why = "error answer";
		redisAsyncFree(ac);
	}
	if (q->c)
		answer(cl, q->c, v);
	free(q);
}

bool cluster_asks(const struct worker *w, enum cluster_rate_kind kind)
{
	const struct cluster *cl = w->cluster;

	return cl && cl->up && (cl->cc->ask & (1u << kind));
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts); /* the gateways' shared clock (vDSO) */
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cluster_ask(struct worker *w, struct conn *c, enum cluster_rate_kind kind)
{
	struct cluster *cl = w->cluster;
	const struct cluster_conf *cc = cl->cc;
	char client[CLUSTER_RATE_CLIENT_MAX];
	size_t end[CLUSTER_RATE_CMDS], at = 0;
	struct cluster_req *q;
	unsigned i;

	c->flags |= C_RATEQ;
	c->cl_kind = (uint8_t)kind;
	c->rc.inflight++; /* the conn stays until its verdict is given */
	if (!cluster_asks(w, kind) || !(q = calloc(1, sizeof(*q))))
		goto local;
	q->cl = cl;
	q->kind = kind;
	buf_reset(&cl->cmd, 1024);
	if (cluster_rate_client(&c->s.peer.key, cc->prefix4, cc->prefix6, client) < 0 ||
	    cluster_rate_build(&cl->cmd, kind, client, &cc->rate[kind], wall_ms(), end, q->key,
	                       &q->into_ms) < 0) {
		free(q);
		goto local;
	}
	for (i = 0; i < CLUSTER_RATE_CMDS; i++) {
		static redisCallbackFn *const cb[CLUSTER_RATE_CMDS] = {NULL, on_incr, on_get};

		if (redisAsyncFormattedCommand(cl->ac, cb[i], cb[i] ? q : NULL, cl->cmd.p + at,
		                               end[i] - at) != REDIS_OK)
			break;
		at = end[i];
	}
	if (i < CLUSTER_RATE_CMDS) {
		/* Cut short (no memory): the context goes, on_incr() with it,
		 * before <q> does. */
		if (i > 0)
			link_drop(cl, "out of memory for a command");
		free(q);
		goto local;
	}
	q->c = c;
	c->cl_req = q;
	q->deadline = w->now + cc->timeout_ms;
	if (cl->tail)
		cl->tail->next = q;
	else
		cl->head = q;
	cl->tail = q;
	timer_arm(cl);
	return;
local:
	answer(cl, c, 0);
}

void cluster_round(struct worker *w)
{
	struct cluster *cl = w->cluster;
	struct conn *c;

	if (!cl)
		return;
	while ((c = cl->ready)) {
		cl->ready = c->cl_next;
		if (!cl->ready)
			cl->ready_tail = NULL;
		c->cl_next = NULL;
		c->flags &= ~C_RATEQ;
		c->rc.inflight--;
		if (c->cl_verdict)
			cl->stat_redis++;
		else
			cl->stat_fallback++;
		session_rate_answer(w, c, (enum cluster_rate_kind)c->cl_kind, c->cl_verdict);
	}
}

void cluster_flush(struct worker *w)
{
	struct cluster *cl = w->cluster;

	if (!cl || !cl->ac || !cl->up || !cl->pout.want || cl->pout.armed)
		return;
	redisAsyncHandleWrite(cl->ac); /* one write(2), non-blocking; may free it */
	if (cl->ac && cl->pout.want) {
		cl->wfull = true; /* the rest when the socket drains */
		poll_sync(cl);
	}
}

void cluster_on_timer(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct cluster *cl = p;
	char why[64];

	/* Which of the timers armed this was is not known: all is looked at. */
	cl->timer.armed_at = 0;
	if (cl->stopping)
		return;
	for (struct cluster_req *q = cl->head; q; q = q->next) {
		if (q->c && q->deadline <= w->now) {
			snprintf(why, sizeof(why), "no answer within %u ms", cl->cc->timeout_ms);
			link_drop(cl, why); /* <why> is read by ev_cleanup(), within */
			break;
		}
	}
	if (cl->ac && !cl->up && cl->connect_deadline <= w->now)
		link_drop(cl, "connect timed out");
	if (!cl->ac && cl->retry_at && cl->retry_at <= w->now)
		link_connect(cl);
	timer_arm(cl);
}

int cluster_start(struct worker *w)
{
	struct cluster *cl = calloc(1, sizeof(*cl));

	if (!cl)
		return -ENOMEM;
	cl->w = w;
	cl->cc = w->g->cluster;
	cl->pin = (struct cluster_poll){.cl = cl, .mask = POLLIN};
	cl->pout = (struct cluster_poll){.cl = cl, .mask = POLLOUT};
	cl->backoff_ms = BACKOFF_MIN_MS;
	cl->cmd = (struct buf)BUF_INIT;
	w->cluster = cl;
	link_connect(cl);
	return 0;
}

void cluster_stop(struct worker *w)
{
	struct cluster *cl = w->cluster;

	if (!cl)
		return;
	cl->stopping = true;
	if (cl->ac)
		redisAsyncFree(cl->ac); /* the requests left have no conn any more */
	cluster_round(w);
	LOGI("limits: worker %u: %llu rate verdicts from Redis, %llu from the local table after "
	     "asking (Redis failed or was late)",
	     w->id, (unsigned long long)cl->stat_redis, (unsigned long long)cl->stat_fallback);
	buf_free(&cl->cmd);
	free(cl);
	w->cluster = NULL;
}

int cluster_conf_init(struct cluster_conf *cc, const struct conf *cf, char *err, size_t errlen)
{
	/* IPv4 only: hiredis 0.14 looks the address up as IPv4 first, so an
	 * IPv6 one would go to the resolver from a worker (a blocking call). */
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
	char host[256], port[8];
	unsigned p;
	int rc;

	memset(cc, 0, sizeof(*cc));
	if (conf_split_hostport(cf->limits_redis, host, sizeof(host), &p) < 0) {
		snprintf(err, errlen, "--limits-redis: '%s' is not HOST:PORT", cf->limits_redis);
		return -1;
	}
	snprintf(port, sizeof(port), "%u", p);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "--limits-redis: %s: %s (an IPv4 address is needed)", host,
		         rc ? gai_strerror(rc) : "no address");
		return -1;
	}
	rc = getnameinfo(res->ai_addr, res->ai_addrlen, cc->ip, sizeof(cc->ip), NULL, 0,
	                 NI_NUMERICHOST);
	freeaddrinfo(res);
	if (rc != 0) {
		snprintf(err, errlen, "--limits-redis: %s: %s", host, gai_strerror(rc));
		return -1;
	}
	cc->port = p;
	snprintf(cc->text, sizeof(cc->text), "%s", cf->limits_redis);
	cc->timeout_ms = cf->limits_redis_timeout_ms;
	cc->rate[CLUSTER_RATE_CONN] = cf->client_conn_rate;
	cc->rate[CLUSTER_RATE_MSG] = cf->client_msg_rate;
	cc->rate[CLUSTER_RATE_RCPT] = cf->client_rcpt_rate;
	for (unsigned k = 0; k < CLUSTER_RATE_N; k++)
		if (cc->rate[k].n)
			cc->ask |= 1u << k;
	cc->prefix4 = cf->client_prefix4;
	cc->prefix6 = cf->client_prefix6;
	atomic_init(&cc->outage, false);
	return 0;
}
