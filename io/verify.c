/* verify: next-hop recipient verification on the worker's ring. See
 * verify.h for the design (why the probe runs here, how workers
 * coalesce).
 *
 * An address waited on has one entry in the worker's table
 * (core/verify_wait) with its sessions in arrival order. The entry this
 * worker probes waits on its route's queue until a connection of the pool
 * is READY, which takes up to VERIFY_BATCH of them as one probe
 * transaction (MAIL FROM:<>, a RCPT each, RSET) and puts each result in
 * the shared cache: 2xx for --verify-positive-ttl, 5xx for
 * --verify-negative-ttl, a 4xx or a failure only for the sessions that
 * waited (kept a few seconds so that the other workers' waiters read it,
 * never given to a new RCPT). Results reach the sessions at the end of the
 * round (verify_round()), never from inside the session's own feed. */
#include "io/verify.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/smtp_client.h"
#include "core/verify_cache.h"
#include "core/verify_wait.h"
#include "io/conn.h"
#include "io/milter.h"
#include "io/ring.h"
#include "io/session-int.h"
#include "io/tls.h"

#undef LOG_PROG
#define LOG_PROG LOG_P_SMTP

#define VERIFY_BATCH   16    /* recipients per probe transaction */
#define VERIFY_IDLE_MS 30000 /* an idle probe connection QUITs after this */
#define VERIFY_TEMP_S  5     /* a temporary result is readable by waiters this long */
#define VC_CONN        0x1u  /* connecting */
#define VC_DIRTY       0x2u  /* on the list of connections to flush */

struct vconn {
	struct ring_conn rc; /* first: user_data names both */
	struct worker *w;
	unsigned route, hop;
	unsigned flags;   /* VC_* */
	int64_t deadline; /* ms: connect or the next reply; 0 none */
	int64_t idle_since;
	struct smtp_client cl;
	struct smtp_client_conf ccf;
	struct smtp_client_msg msg;
	const char *rcpts[VERIFY_BATCH];
	struct verify_wait_ent *batch[VERIFY_BATCH];
	unsigned nbatch;
	struct vconn *next, *dirty_next; /* on its route's list; on the dirty list */
};

struct verify_route {
	struct vconn *conns;
	unsigned nconns;
	struct verify_wait_ent *qhead, *qtail; /* entries waiting for a connection */
};

struct verify {
	struct verify_wait wait;
	struct verify_route *routes; /* [g->relay.nroutes] */
	unsigned nroutes;
	struct vconn *dirty;
	struct verify_wait_ent *done; /* results to give this round */
	unsigned nforeign;            /* entries another worker probes */
	bool woken;                   /* a UD_VERIFY_WAKE came: look at the foreign entries */
	bool stopping;                /* the worker stops: no new connection */
	uint64_t stat_probes, stat_coalesced, stat_foreign;
};

/* The waiting entry of this worker's table that <w> is on. */
static struct conn *conn_of_waiter(struct verify_waiter *vw)
{
	return (struct conn *)((char *)vw - offsetof(struct conn, vw));
}

static int64_t wall_now(void)
{
	return (int64_t)time(NULL);
}

/* ---- results ---- */

/* <e>'s probe is over: its result goes to its sessions this round. The
 * entry stays (probing) until then. */
static void ent_result(struct worker *w, struct verify_wait_ent *e, int res, const char *text)
{
	struct verify *v = w->verify;

	if (e->foreign) {
		e->foreign = false;
		v->nforeign--;
	}
	e->probing = true;
	e->res = res;
	snprintf(e->text, sizeof(e->text), "%s", text ? text : "");
	e->dnext = v->done;
	v->done = e;
}

/* The session waited for <res>: its RCPT is answered and its input goes on. */
static void answer(struct worker *w, struct conn *c, int res, const char *text)
{
	c->flags &= ~C_VERIFYQ;
	if (c->state == CONN_S_CLOSING)
		return;
	smtp_session_verify_done(&c->s, res, text);
	c->last_active = w->now;
	if ((c->s.act & SMTP_ACT_FILTER) && !(c->flags & C_FILTER)) {
		/* Verified, and now the filters' turn (session_feed() would hold
		 * it as one waiting already); they resume the session. */
		milter_command(w, c);
		return;
	}
	session_feed(w, c, NULL, 0); /* the pipelined commands that waited */
}

static void give_results(struct worker *w)
{
	struct verify *v = w->verify;
	struct verify_wait_ent *e;

	while ((e = v->done)) {
		int res = e->res;
		char text[VERIFY_TEXT_MAX + 1];
		struct verify_waiter *x, *next;

		v->done = e->dnext;
		memcpy(text, e->text, sizeof(text));
		/* Each waiter's next is read before it is answered: an answered
		 * session may go on to wait on another entry at once. */
		for (x = verify_wait_finish(&v->wait, e); x; x = next) {
			next = x->next;
			x->next = NULL;
			answer(w, conn_of_waiter(x), res, text);
		}
	}
}

/* Wakes the other workers that waited on a result this worker put. */
static void wake_workers(struct worker *w, const uint64_t *mask)
{
	struct gateway *g = w->g;

	for (unsigned i = 0; i < g->nworkers && i < VERIFY_WORKERS; i++) {
		int fd;
		struct io_uring_sqe *sqe;

		if (i == w->id || !(mask[i / 64] & (1ull << (i % 64))))
			continue;
		fd = atomic_load_explicit(&g->ring_fds[i], memory_order_acquire);
		if (fd < 0)
			continue; /* not up: it looks at its entries at its tick anyway */
		sqe = ring_sqe(&w->ring);
		io_uring_prep_msg_ring(sqe, fd, 0, UD(g->workers[i], UD_VERIFY_WAKE), 0);
		io_uring_sqe_set_data64(sqe, UD_NONE);
	}
}

/* A probe's result for <e>: into the shared cache, to the workers that
 * waited on it, and to this worker's sessions. */
static void probe_done(struct worker *w, struct verify_wait_ent *e, int res, const char *text)
{
	const struct conf *cf = session_conf(w);
	uint64_t woken[VERIFY_WMASK_WORDS] = {0};
	int64_t now = wall_now(), until;

	until = res == VERIFY_OK       ? now + cf->verify_positive_ttl
	        : res == VERIFY_REJECT ? now + cf->verify_negative_ttl
	                               : now + VERIFY_TEMP_S;
	verify_cache_put(w->g->vcache, e->key, e->klen, (enum verify_result)res, text, until, now,
	                 woken);
	wake_workers(w, woken);
	if (res == VERIFY_REJECT)
		LOGI("verify: <%s> refused by the next hop: %s", e->key, text);
	else if (res != VERIFY_OK)
		LOGI("verify: <%s> not verified: %s", e->key, text);
	ent_result(w, e, res, text);
}

/* ---- the probe queue of a route ---- */

static void queue_add(struct verify_route *r, struct verify_wait_ent *e)
{
	e->qnext = NULL;
	if (r->qtail)
		r->qtail->qnext = e;
	else
		r->qhead = e;
	r->qtail = e;
}

static struct verify_wait_ent *queue_take(struct verify_route *r)
{
	struct verify_wait_ent *e = r->qhead;

	if (e) {
		r->qhead = e->qnext;
		if (!r->qhead)
			r->qtail = NULL;
		e->qnext = NULL;
	}
	return e;
}

/* No next hop of <route> answers: every entry waiting for it gets <why>. */
static void route_down(struct worker *w, unsigned route, const char *why)
{
	struct verify_wait_ent *e;

	while ((e = queue_take(&w->verify->routes[route])))
		probe_done(w, e, VERIFY_TEMP, why);
}

/* ---- connections ---- */

static void vc_dirty(struct worker *w, struct vconn *c)
{
	if (c->flags & VC_DIRTY)
		return;
	c->flags |= VC_DIRTY;
	c->dirty_next = w->verify->dirty;
	w->verify->dirty = c;
}

static void vc_kick(struct worker *w, unsigned route);

static void vc_free(struct worker *w, struct vconn *c)
{
	unsigned route = c->route;
	struct verify_route *r = &w->verify->routes[route];

	for (struct vconn **pp = &r->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	r->nconns--;
	conn_fini(&c->rc);
	smtp_client_fini(&c->cl);
	free(c);
	if (r->qhead)
		vc_kick(w, route); /* entries queued while it was closing */
}

static void vc_maybe_free(struct worker *w, struct vconn *c)
{
	if ((c->rc.flags & RCONN_CLOSING) && !c->rc.inflight && !(c->flags & VC_DIRTY))
		vc_free(w, c);
}

/* The batch's results (SMTPC_ACT_DONE), one per recipient. */
static void vc_results(struct worker *w, struct vconn *c)
{
	for (unsigned i = 0; i < c->nbatch; i++) {
		const struct smtp_client_result *r = smtp_client_result(&c->cl, i);
		const char *text = r ? smtp_client_result_text(&c->cl, r) : "";
		int res = !r                        ? VERIFY_TEMP
		          : r->status == SMTPC_OK   ? VERIFY_OK
		          : r->status == SMTPC_PERM ? VERIFY_REJECT
		                                    : VERIFY_TEMP;

		probe_done(w, c->batch[i], res, text && text[0] ? text : "4.4.0 no answer");
	}
	c->nbatch = 0;
}

static void vc_close(struct worker *w, struct vconn *c, const char *why)
{
	if (c->rc.flags & RCONN_CLOSING)
		return;
	if (c->nbatch) {
		if (c->cl.msg)
			smtp_client_fail(&c->cl, why);
		c->cl.act &= ~SMTPC_ACT_DONE;
		vc_results(w, c);
	}
	conn_close(&w->ring, &c->rc);
	vc_maybe_free(w, c);
}

static const struct relay_hop *vc_hop(const struct worker *w, const struct vconn *c)
{
	return &w->g->relay.routes[c->route].hops[c->hop];
}

static void vc_connect(struct worker *w, struct vconn *c)
{
	const struct relay_hop *h = vc_hop(w, c);
	const struct relay_conf *rc = &w->g->relay;
	struct io_uring_sqe *sqe;

	if (c->rc.fd >= 0)
		close(c->rc.fd);
	c->rc.fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->rc.fd < 0) {
		char why[128];

		snprintf(why, sizeof(why), "4.3.0 cannot create a socket: %s", strerror(errno));
		route_down(w, c->route, why);
		vc_close(w, c, why);
		return;
	}
	smtp_client_fini(&c->cl);
	tls_conn_free(c->rc.tls);
	c->rc.tls = NULL;
	c->rc.xprt = &conn_xprt_clear;
	c->rc.flags &= ~(RCONN_TLS_UP | RCONN_HANGUP | RCONN_CLEARONE);
	buf_reset(&c->rc.sending, 0);
	c->ccf.hostname = w->g->conf->hostname;
	c->ccf.lmtp = h->lmtp;
	c->ccf.starttls = rc->tls != NULL;
	c->ccf.require_tls = rc->require_tls;
	smtp_client_init(&c->cl, &c->ccf, h->text);
	c->flags |= VC_CONN;
	c->rc.flags |= RCONN_SEND;
	c->rc.inflight++;
	c->deadline = w->now + (int64_t)session_conf(w)->verify_timeout * 1000;
	sqe = ring_sqe(&w->ring);
	io_uring_prep_connect(sqe, c->rc.fd, (const struct sockaddr *)&h->addr, h->addrlen);
	io_uring_sqe_set_data64(sqe, UD(c, UD_VERIFY_CONNECT));
}

/* The connection cannot go on with this hop: the next one, or, when none
 * is left, the route is down for the entries waiting. */
static void vc_failover(struct worker *w, struct vconn *c, const char *why)
{
	const struct relay_route *rt = &w->g->relay.routes[c->route];

	if (c->nbatch) {
		if (c->cl.msg)
			smtp_client_fail(&c->cl, why);
		c->cl.act &= ~SMTPC_ACT_DONE;
		vc_results(w, c);
	}
	if (c->hop + 1 < rt->nhops) {
		c->hop++;
		vc_connect(w, c);
		return;
	}
	route_down(w, c->route, why);
	vc_close(w, c, why);
}

static void vc_act(struct worker *w, struct vconn *c);

/* Opens connections for the route's waiting entries, up to the pool. */
static void vc_kick(struct worker *w, unsigned route)
{
	struct verify_route *r = &w->verify->routes[route];
	struct vconn *c;
	unsigned usable = 0;

	if (!r->qhead || w->verify->stopping)
		return;
	for (c = r->conns; c; c = c->next) {
		if ((c->rc.flags & RCONN_CLOSING) || c->cl.state == SMTPC_S_QUIT ||
		    c->cl.state == SMTPC_S_CLOSED)
			continue;
		if (c->cl.state == SMTPC_S_READY && !c->nbatch) {
			c->cl.act |= SMTPC_ACT_READY; /* idle: takes the queue now */
			vc_act(w, c);
			return;
		}
		usable++;
	}
	if (usable >= w->g->conf->verify_pool)
		return; /* they take the queue at their next READY */
	c = calloc(1, sizeof(*c));
	if (!c) {
		route_down(w, route, "4.3.0 out of memory");
		return;
	}
	c->w = w;
	c->route = route;
	conn_init(&c->rc, -1, UD_VERIFY_RECV, UD_VERIFY_SEND);
	c->next = r->conns;
	r->conns = c;
	r->nconns++;
	vc_connect(w, c);
}

static void vc_act(struct worker *w, struct vconn *c)
{
	struct verify *v = w->verify;

	if (c->cl.act & SMTPC_ACT_DONE) {
		c->cl.act &= ~SMTPC_ACT_DONE;
		vc_results(w, c);
	}
	if (c->cl.act & SMTPC_ACT_READY) {
		struct verify_route *r = &v->routes[c->route];
		struct verify_wait_ent *e;

		c->cl.act &= ~SMTPC_ACT_READY;
		c->nbatch = 0;
		while (c->nbatch < VERIFY_BATCH && (e = queue_take(r))) {
			c->batch[c->nbatch] = e;
			c->rcpts[c->nbatch++] = e->key;
		}
		if (c->nbatch) {
			c->msg = (struct smtp_client_msg){
			    .from = "", .rcpts = c->rcpts, .nrcpt = c->nbatch, .probe = true};
			v->stat_probes += c->nbatch;
			c->deadline = w->now + (int64_t)session_conf(w)->verify_timeout * 1000;
			if (smtp_client_send(&c->cl, &c->msg) < 0) {
				/* Cannot be sent (no memory, or an address the client
				 * refuses): not the next hop's word, so temporary. */
				for (unsigned i = 0; i < c->nbatch; i++)
					probe_done(w, c->batch[i], VERIFY_TEMP,
					           "4.3.0 the address cannot be probed");
				c->nbatch = 0;
			}
		} else {
			c->deadline = 0;
			c->idle_since = w->now;
		}
	}
	vc_dirty(w, c);
}

static void vc_act_cb(void *arg)
{
	struct vconn *c = arg;

	vc_act(c->w, c);
}

static bool vc_on_input(void *owner, const char *p, size_t n)
{
	struct vconn *c = owner;

	if (!p) {
		smtp_client_tls_started(&c->cl);
		vc_act(c->w, c);
	} else {
		conn_client_input(&c->rc, &c->cl, c->w->g->relay.tls, vc_hop(c->w, c)->host, p, n,
		                  vc_act_cb, c);
	}
	return !(c->rc.flags & RCONN_CLOSING);
}

void verify_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct vconn *c = p;
	int err;

	if (cqe->res > 0 && c->deadline)
		c->deadline = w->now + (int64_t)session_conf(w)->verify_timeout * 1000;
	switch (conn_on_recv(&w->ring, &c->rc, cqe, vc_on_input, c, &err)) {
	case CONN_RX_CLOSING:
		vc_maybe_free(w, c);
		return;
	case CONN_RX_EOF:
		vc_close(w, c, "4.4.2 connection closed by the next hop");
		return;
	case CONN_RX_XPRT:
		smtp_client_fail(&c->cl, "4.7.5 TLS with the next hop failed");
		vc_act(w, c);
		return;
	case CONN_RX_OK:
		if (c->rc.tls)
			vc_dirty(w, c); /* the handshake answers on its own */
		return;
	}
}

void verify_on_connect(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct vconn *c = p;
	char why[160];
	int one = 1;

	c->flags &= ~VC_CONN;
	c->rc.flags &= ~RCONN_SEND;
	c->rc.inflight--;
	if (c->rc.flags & RCONN_CLOSING) {
		vc_maybe_free(w, c);
		return;
	}
	if (cqe->res < 0) {
		snprintf(why, sizeof(why), "4.4.1 next hop %s: %s", vc_hop(w, c)->text,
		         strerror(-cqe->res));
		LOGI("verify: connect to %s: %s", vc_hop(w, c)->text, strerror(-cqe->res));
		vc_failover(w, c, why);
		return;
	}
	setsockopt(c->rc.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_arm_recv(&w->ring, &c->rc);
}

void verify_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct vconn *c = p;
	int res = conn_on_send(&w->ring, &c->rc, cqe);

	if (res == -ECANCELED) {
		vc_maybe_free(w, c);
		return;
	}
	if (res < 0) {
		vc_close(w, c, "4.4.2 send to the next hop failed");
		return;
	}
	vc_dirty(w, c);
}

static void vc_send(struct worker *w, struct vconn *c)
{
	if (c->rc.flags & (RCONN_SEND | RCONN_CLOSING))
		return;
	if (conn_flush(&w->ring, &c->rc, &c->cl.out, c->cl.state == SMTPC_S_CLOSED))
		return;
	if ((c->cl.act & SMTPC_ACT_CLOSE) || c->cl.state == SMTPC_S_CLOSED) {
		const char *err = smtp_client_error(&c->cl);

		if (*err && w->verify->routes[c->route].qhead) {
			/* Refused before a probe (greeting, EHLO, TLS): the next hop. */
			char why[SMTPC_TEXT_MAX / 8];

			snprintf(why, sizeof(why), "%s", err);
			vc_failover(w, c, why);
			return;
		}
		vc_close(w, c, "4.4.2 connection closed");
	}
}

/* ---- sessions ---- */

void verify_ask(struct worker *w, struct conn *c)
{
	struct verify *v = w->verify;
	const struct conf *cf = session_conf(w);
	struct verify_wait_ent *e;
	enum verify_result r;
	char text[VERIFY_TEXT_MAX + 1] = "";
	size_t klen;
	const char *key = smtp_session_verify_key(&c->s, &klen);
	int64_t now = wall_now();
	bool created;
	int route;

	c->flags |= C_VERIFYQ;
	if (!v) {
		/* No cache, no probe: cannot happen (the session asks only with
		 * one); answered as a probe that could not tell. */
		c->vw = (struct verify_waiter){0};
		c->flags &= ~C_VERIFYQ;
		smtp_session_verify_done(&c->s, VERIFY_TEMP, "4.3.0 verification not available");
		return;
	}
	/* Waited on here already (probing, on another worker's probe, or
	 * its result due this round): one more waiter, no probe. */
	if (verify_wait_find(&v->wait, key, klen) &&
	    verify_wait_join(&v->wait, key, klen, &c->vw, &created)) {
		v->stat_coalesced++;
		return;
	}
	r = verify_cache_claim(w->g->vcache, key, klen, now, now + 3 * cf->verify_timeout + 2,
	                       w->id, text, sizeof(text));
	e = verify_wait_join(&v->wait, key, klen, &c->vw, &created);
	if (!e) {
		/* Out of memory: the cache entry we may have claimed expires. */
		c->flags &= ~C_VERIFYQ;
		/* Inside the session's feed: its end sends the reply. */
		smtp_session_verify_done(&c->s, VERIFY_TEMP, "4.3.0 out of memory");
		return;
	}
	if (r == VERIFY_OK || r == VERIFY_REJECT) {
		ent_result(w, e, r, text); /* came in since the session looked */
		return;
	}
	if (r == VERIFY_PENDING) {
		if (!e->foreign && !e->probing) {
			e->foreign = true;
			v->nforeign++;
			v->stat_foreign++;
		}
		e->deadline = w->now + (3 * (int64_t)cf->verify_timeout + 2) * 1000;
		return;
	}
	if (e->probing)
		return;
	route = relay_conf_route_of(&w->g->relay, smtp_session_verify_addr(&c->s));
	e->probing = true;
	if (route < 0) {
		probe_done(w, e, VERIFY_TEMP, "4.4.0 no next hop for the domain");
		return;
	}
	e->route = (unsigned)route;
	queue_add(&v->routes[route], e);
	vc_kick(w, (unsigned)route);
}

void verify_session_end(struct worker *w, struct conn *c)
{
	if (!(c->flags & C_VERIFYQ))
		return;
	c->flags &= ~C_VERIFYQ;
	if (w->verify && c->vw.e) {
		struct verify_wait_ent *e = c->vw.e;

		if (e->foreign && e->nwait == 1) {
			e->foreign = false;
			w->verify->nforeign--;
		}
		verify_wait_leave(&w->verify->wait, &c->vw);
	}
}

/* A foreign entry: has its result been put, or its probe given up? */
static void foreign_check(struct verify_wait_ent *e, void *arg)
{
	struct worker *w = arg;
	const struct conf *cf = session_conf(w);
	char text[VERIFY_TEXT_MAX + 1] = "";
	int64_t now = wall_now();
	enum verify_result r;

	if (!e->foreign)
		return;
	r = verify_cache_get(w->g->vcache, e->key, e->klen, now, true, text, sizeof(text));
	if (r == VERIFY_OK || r == VERIFY_REJECT || r == VERIFY_TEMP) {
		ent_result(w, e, r, text);
		return;
	}
	if (r == VERIFY_NONE) {
		/* Its prober went away (or the entry was evicted): ours now. */
		r = verify_cache_claim(w->g->vcache, e->key, e->klen, now,
		                       now + 3 * cf->verify_timeout + 2, w->id, text, sizeof(text));
		if (r == VERIFY_OK || r == VERIFY_REJECT) {
			ent_result(w, e, r, text);
			return;
		}
		if (r == VERIFY_NONE && e->head) {
			int route = relay_conf_route_of(
			    &w->g->relay, smtp_session_verify_addr(&conn_of_waiter(e->head)->s));

			e->foreign = false;
			w->verify->nforeign--;
			e->probing = true;
			if (route < 0) {
				probe_done(w, e, VERIFY_TEMP, "4.4.0 no next hop for the domain");
				return;
			}
			e->route = (unsigned)route;
			queue_add(&w->verify->routes[route], e);
			vc_kick(w, (unsigned)route);
			return;
		}
	}
	if (w->now >= e->deadline)
		ent_result(w, e, VERIFY_TEMP, "4.4.2 verification timed out");
}

void verify_on_wake(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	(void)p;
	(void)cqe;
	if (w->verify)
		w->verify->woken = true;
}

void verify_round(struct worker *w)
{
	struct verify *v = w->verify;
	struct vconn *c;

	if (!v)
		return;
	if (v->woken) {
		v->woken = false;
		if (v->nforeign)
			verify_wait_each(&v->wait, foreign_check, w);
	}
	give_results(w);
	while ((c = v->dirty)) {
		v->dirty = c->dirty_next;
		c->flags &= ~VC_DIRTY;
		if (c->rc.flags & RCONN_CLOSING)
			vc_maybe_free(w, c);
		else
			vc_send(w, c);
	}
}

void verify_tick(struct worker *w)
{
	struct verify *v = w->verify;

	if (!v)
		return;
	/* At stop, once no session is left to wait on a probe, the idle
	 * connections QUIT. */
	v->stopping = w->stopping && !w->nconns;
	if (v->nforeign)
		v->woken = true; /* a wake-up lost, a prober gone: looked at once a second */
	for (unsigned i = 0; i < v->nroutes; i++) {
		struct vconn *c, *next;

		for (c = v->routes[i].conns; c; c = next) {
			next = c->next;
			if (c->rc.flags & RCONN_CLOSING)
				continue;
			if (c->deadline && w->now >= c->deadline) {
				LOGI("verify: %s: timed out", vc_hop(w, c)->text);
				if (c->flags & VC_CONN) {
					vc_failover(w, c, "4.4.2 next hop timed out (connect)");
					continue;
				}
				smtp_client_fail(&c->cl, "4.4.2 next hop timed out");
				vc_act(w, c);
				vc_close(w, c, "4.4.2 next hop timed out");
			} else if (!c->nbatch && c->cl.state == SMTPC_S_READY &&
			           (v->stopping || w->now - c->idle_since >= VERIFY_IDLE_MS)) {
				smtp_client_quit(&c->cl);
				c->deadline =
				    w->now + (int64_t)session_conf(w)->verify_timeout * 1000;
				vc_dirty(w, c);
			}
		}
	}
}

bool verify_busy(const struct worker *w)
{
	const struct verify *v = w->verify;

	for (unsigned i = 0; v && i < v->nroutes; i++)
		if (v->routes[i].conns)
			return true;
	return false;
}

int verify_init(struct worker *w)
{
	struct verify *v;

	if (!w->g->vcache || !w->g->relay.nroutes)
		return 0;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->nroutes = w->g->relay.nroutes;
	v->routes = calloc(v->nroutes, sizeof(*v->routes));
	if (!v->routes || verify_wait_init(&v->wait, 1024)) {
		free(v->routes);
		free(v);
		return -ENOMEM;
	}
	w->verify = v;
	return 0;
}

void verify_fini(struct worker *w)
{
	struct verify *v = w->verify;

	if (!v)
		return;
	LOGI("worker %u: verify: %llu addresses probed, %llu RCPTs coalesced on a probe of this "
	     "worker, %llu waited on another worker's",
	     w->id, (unsigned long long)v->stat_probes, (unsigned long long)v->stat_coalesced,
	     (unsigned long long)v->stat_foreign);
	for (unsigned i = 0; i < v->nroutes; i++) {
		struct vconn *c, *next;

		for (c = v->routes[i].conns; c; c = next) {
			next = c->next;
			conn_fini(&c->rc);
			smtp_client_fini(&c->cl);
			free(c);
		}
	}
	verify_wait_fini(&v->wait);
	free(v->routes);
	free(v);
	w->verify = NULL;
}
