/* relay_conn: delivery to the next hops, the connections' side. Each
 * route has a pool of at most --relay-pool connections per worker,
 * opened for the route's waiting jobs (relay_conn_kick(), which looks at
 * the route's own connections only); a connection runs the sans-I/O client
 * (core/smtp_client) over io/conn (IORING_OP_CONNECT, the multishot
 * receive, one send per round, clear text or TLS after STARTTLS), takes the
 * route's jobs one after the other, streams each job's body from the
 * spool in chunks checked against the record's crc, hands the results to
 * io/relay.c, and QUITs when no job is left. Failover: a connection that
 * cannot connect tries the route's next hop; when none answers, the
 * route's waiting jobs are deferred. */
#include "io/relay.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/maillog.h"
#include "io/conn.h"
#include "io/relay-int.h"
#include "io/ring.h"
#include "io/tls.h"
#include "queue/crc32c.h"

/* Its log lines name ringmx/smtp (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTP

/* ---- connections ---- */

void relay_conn_dirty(struct relay *r, struct relay_conn *c)
{
	if (c->flags & RC_DIRTY)
		return;
	c->flags |= RC_DIRTY;
	c->dirty_next = r->dirty;
	r->dirty = c;
}

void relay_conn_free(struct worker *w, struct relay_conn *c)
{
	struct relay *r = w->relay;
	struct relay_conn **pp;

	for (pp = &r->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	for (pp = &r->rs[c->route].conns; *pp; pp = &(*pp)->route_next) {
		if (*pp == c) {
			*pp = c->route_next;
			break;
		}
	}
	conn_fini(&c->rc);
	r->rs[c->route].nconns--;
	smtp_client_fini(&c->cl);
	if (delivery_waiting(&r->q, c->route))
		relay_conn_kick(w, c->route); /* jobs queued while it was closing */
	free(c);
}

static void rc_maybe_free(struct worker *w, struct relay_conn *c)
{
	if ((c->rc.flags & RCONN_CLOSING) && !c->rc.inflight && !(c->flags & RC_DIRTY))
		relay_conn_free(w, c);
}

/* Gives the job back (its recipients deferred with <why>) and closes. */
void relay_conn_close(struct worker *w, struct relay_conn *c, const char *why)
{
	if (c->rc.flags & RCONN_CLOSING)
		return;
	if (c->job) {
		if (c->cl.msg)
			smtp_client_fail(&c->cl, why);
		if (c->cl.act & SMTPC_ACT_DONE) {
			c->cl.act &= ~SMTPC_ACT_DONE;
			relay_job_results(w, c, c->job);
		} else {
			delivery_job_why(c->job, why);
			relay_job_release(w, c->job);
		}
		c->job = NULL;
	}
	conn_close(&w->ring, &c->rc);
	rc_maybe_free(w, c);
}

static void rc_connect(struct worker *w, struct relay_conn *c)
{
	const struct relay_hop *h = &w->relay->rc->routes[c->route].hops[c->hop];
	struct io_uring_sqe *sqe;

	/* Failover reuses the connection: a new socket, clear text again. */
	if (c->rc.fd >= 0)
		close(c->rc.fd);
	c->rc.fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->rc.fd < 0) {
		char why[128];

		/* Out of descriptors (EMFILE) or memory here, not a next hop's
		 * fault: the route's waiting jobs are deferred first, so that
		 * freeing this connection does not open another one for them
		 * at once (which failed the same way, one level deeper each
		 * time, until the stack ran out). */
		snprintf(why, sizeof(why), "4.3.0 cannot create a socket: %s", strerror(errno));
		LOGW("relay: %s: %s", h->text, why + 6);
		relay_conn_route_down(w, c->route, why);
		relay_conn_close(w, c, why);
		return;
	}
	smtp_client_fini(&c->cl);
	tls_conn_free(c->rc.tls);
	c->rc.tls = NULL;
	c->rc.xprt = &conn_xprt_clear;
	c->rc.flags &= ~(RCONN_TLS_UP | RCONN_HANGUP | RCONN_CLEARONE);
	buf_reset(&c->rc.sending, 0);
	c->ccf.lmtp = h->lmtp;
	c->ccf.starttls = w->relay->rc->tls != NULL;
	c->ccf.require_tls = w->relay->rc->require_tls;
	smtp_client_init(&c->cl, &c->ccf, h->text);
	c->flags |= RC_CONN;
	c->rc.flags |= RCONN_SEND;
	c->rc.inflight++;
	c->deadline = w->now + (int64_t)relay_cf(w)->relay_timeout * 1000;
	c->connect_ms = w->now;
	c->setup_ms = -1; /* until its first READY */
	sqe = ring_sqe(&w->ring);
	io_uring_prep_connect(sqe, c->rc.fd, (const struct sockaddr *)&h->addr, h->addrlen);
	io_uring_sqe_set_data64(sqe, UD(c, UD_RELAY_CONNECT));
}

/* Opens connections for the route's waiting jobs, up to the pool size.
 * Costs O(1) plus the route's own connections (at most --relay-pool),
 * however many jobs wait and however many other routes have connections
 * (bench/delivery_bench.c). */
void relay_conn_kick(struct worker *w, unsigned route)
{
	struct relay *r = w->relay;
	struct relay_route_state *rs = &r->rs[route];
	unsigned waiting;

	if (r->stopping || r->switching)
		return; /* switching: the jobs wait for the new next hops */
	waiting = delivery_waiting(&r->q, route);
	/* Idle connections pick jobs up at their next READY; open more only
	 * for what they cannot take. One that is quitting takes nothing. */
	for (struct relay_conn *c = rs->conns; c && waiting; c = c->route_next)
		if (!c->job && !(c->rc.flags & RCONN_CLOSING) && c->cl.state != SMTPC_S_QUIT &&
		    c->cl.state != SMTPC_S_CLOSED)
			waiting--;
	while (waiting && rs->nconns < relay_cf(w)->relay_pool) {
		struct relay_conn *c = calloc(1, sizeof(*c));

		if (!c)
			return;
		conn_init(&c->rc, -1, UD_RELAY_RECV, UD_RELAY_SEND);
		c->w = w;
		c->route = route;
		c->ccf.hostname = w->g->conf->hostname;
		smtp_client_init(&c->cl, &c->ccf, "");
		c->next = r->conns;
		r->conns = c;
		c->route_next = rs->conns;
		rs->conns = c;
		rs->nconns++;
		waiting--;
		rc_connect(w, c);
	}
}

/* Defers the route's waiting jobs: no next hop answers. */
void relay_conn_route_down(struct worker *w, unsigned route, const char *why)
{
	struct relay *r = w->relay;
	struct delivery_job *j;

	while ((j = delivery_take(&r->q, route))) {
		const struct delivery_msg *m = j->msg;

		delivery_job_why(j, why);
		for (unsigned k = 0; k < j->n; k++) {
			const struct rmsg *rm = rmsg_of(j->msg);
			struct maillog_dlv d = {
			    .qid = m->qid,
			    .to = j->rcpts[k],
			    .relay = "none",
			    .status = "deferred",
			    .reply = why,
			    .delay_s = (long long)(time(NULL) - m->arrival),
			    .delays_ms = {(int64_t)(rm->dispatched_at - m->arrival) * 1000,
			                  w->now - rm->dispatched_ms},
			    .attempt = m->attempts + 1,
			};

			maillog_delivery(&d);
			r->stat_deferred++;
		}
		relay_job_release(w, j);
	}
}

/* The hop of <c> failed before it took a message (<connect>: the connect
 * itself): connects to the route's next hop, or closes <c> with
 * <close_why>, deferring the route's waiting jobs with <down_why> when no
 * hop answers. */
static void rc_failover(struct worker *w, struct relay_conn *c, bool connect, const char *down_why,
                        const char *close_why)
{
	struct relay *r = w->relay;

	if (r->switching) {
		relay_conn_close(w, c, close_why); /* no job: the new next hops take over */
		return;
	}
	switch (delivery_failover(&r->q, c->route, &c->hop, r->rc->routes[c->route].nhops,
	                          r->rs[c->route].nconns, connect)) {
	case DELIVERY_FO_NEXT_HOP:
		rc_connect(w, c);
		return;
	case DELIVERY_FO_ROUTE_DOWN:
		relay_conn_route_down(w, c->route, down_why);
		break;
	case DELIVERY_FO_CLOSE:
		break;
	}
	relay_conn_close(w, c, close_why);
}

/* ---- bodies, streamed from the spool ---- */

static void rc_act(struct worker *w, struct relay_conn *c);

/* A new body for <c> (354 came): from its first byte, and the crc from
 * the envelope's, so that a job retried, or a second route's job, reads
 * and checks the record again from the start. */
static void body_start(struct relay_conn *c, const struct rmsg *m)
{
	c->body_seq++;
	c->body_read = 0;
	c->chunk_len = c->chunk_pos = 0;
	c->body_crc = m->env_crc;
}

/* The record of <c>'s job cannot be sent (<why>): the job is deferred and
 * the connection closed, in the middle of the data, so that the next hop
 * never sees the end of it. <c> is kept on the dirty list first: it is
 * freed by relay_round(), never under the caller. */
static void body_abort(struct worker *w, struct relay_conn *c, const char *why)
{
	relay_conn_dirty(w->relay, c);
	relay_conn_close(w, c, why);
}

/* Reads the next chunk of the body into <c->chunk>, at most RELAY_CHUNK
 * bytes from where the last read stopped. Returns 0, or -1 when it could
 * not and <c> is closed. */
static int body_read_next(struct worker *w, struct relay_conn *c, const struct rmsg *m)
{
	uint64_t left = m->m.body_len - c->body_read;
	size_t n = left < RELAY_CHUNK ? (size_t)left : RELAY_CHUNK;
	struct io_uring_sqe *sqe;
	int fd = relay_seg_ref(w, m->segno);

	if (fd < 0) {
		LOGE("relay: id=%s segment %d: %s", m->m.qid, m->segno, strerror(-fd));
		body_abort(w, c, "4.3.0 cannot read the spool record");
		return -1;
	}
	c->chunk_len = c->chunk_pos = 0;
	sqe = ring_sqe(&w->ring);
	io_uring_prep_read(sqe, fd, c->chunk, (unsigned)n, m->offset + m->body_at + c->body_read);
	io_uring_sqe_set_data64(sqe, UD(c, UD_RELAY_BODY));
	c->read_fd = fd;
	c->read_seq = c->body_seq;
	c->flags |= RC_BODY;
	c->rc.inflight++; /* <c> is not freed under the read */
	return 0;
}

/* State BODY: gives the client what <c->chunk> holds while its output has
 * room (out_max), reads the next chunk once it is all given, and ends the
 * data once the whole body is given and the record's crc holds. Called
 * again as <out> drains (relay_on_send()) and as chunks come in
 * (relay_on_body()). Returns 0, or -1 when <c> was closed. */
static int body_feed(struct worker *w, struct relay_conn *c)
{
	const struct rmsg *m = rmsg_of(c->job->msg);

	while (c->chunk_pos < c->chunk_len) {
		size_t k = smtp_client_body(&c->cl, (const char *)c->chunk + c->chunk_pos,
		                            c->chunk_len - c->chunk_pos);

		/* 0: <out> is full, or has one octet of room where a stuffed
		 * dot needs two (out.len < out_max then: looping on that
		 * test alone would spin). */
		if (!k)
			break;
		c->chunk_pos += k;
	}
	if (c->chunk_pos < c->chunk_len || (c->flags & RC_BODY))
		return 0; /* <out> drains first, or a read is on its way */
	if (c->body_read < m->m.body_len)
		return body_read_next(w, c, m);
	if (spool_rec_verify(m->hdr, c->body_crc)) {
		/* No final dot: the next hop must not take a damaged message
		 * for complete. The record stays in the spool and the job is
		 * deferred like a 4xx: tried again (the damage may have been
		 * in the reading) until --max-queue-lifetime. */
		LOGE("relay: id=%s record at %llu in segment %d damaged (crc): not sent", m->m.qid,
		     (unsigned long long)m->offset, m->segno);
		body_abort(w, c, "4.3.0 spool record damaged");
		return -1;
	}
	smtp_client_body_end(&c->cl);
	return 0;
}

void relay_on_body(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct relay_conn *c = p;
	const struct rmsg *m;

	relay_seg_unref(w, c->read_fd);
	c->rc.inflight--;
	c->flags &= ~RC_BODY;
	if (c->rc.flags & RCONN_CLOSING) {
		rc_maybe_free(w, c);
		return;
	}
	if (!c->job || c->read_seq != c->body_seq || c->cl.state != SMTPC_S_BODY) {
		/* The body it was for is over (its transaction failed while
		 * the read was in flight): the bytes are dropped, and a body
		 * begun meanwhile gets its first read now. */
		rc_act(w, c);
		return;
	}
	m = rmsg_of(c->job->msg);
	if (cqe->res <= 0) {
		LOGE("relay: id=%s record at %llu in segment %d: body at %llu: %s", m->m.qid,
		     (unsigned long long)m->offset, m->segno, (unsigned long long)c->body_read,
		     cqe->res < 0 ? strerror(-cqe->res) : "the record ends early");
		body_abort(w, c, "4.3.0 cannot read the spool record");
		return;
	}
	/* In order and once each: reads are one at a time, each where the
	 * last (short or not) stopped. */
	c->body_crc = crc32c(c->body_crc, c->chunk, (size_t)cqe->res);
	c->chunk_len = (size_t)cqe->res;
	c->body_read += (uint64_t)cqe->res;
	rc_act(w, c);
}

/* Acts on what the client session asks for. */
static void rc_act(struct worker *w, struct relay_conn *c)
{
	struct relay *r = w->relay;

	if (c->cl.act & SMTPC_ACT_DONE) {
		c->cl.act &= ~SMTPC_ACT_DONE;
		if (c->job) {
			struct delivery_job *j = c->job;

			c->job = NULL;
			relay_job_results(w, c, j);
		}
	}
	if (c->cl.act & SMTPC_ACT_BODY) {
		c->cl.act &= ~SMTPC_ACT_BODY;
		if (c->job)
			body_start(c, rmsg_of(c->job->msg));
	}
	if (c->cl.state == SMTPC_S_BODY && c->job && body_feed(w, c) < 0)
		return; /* closed */
	if (c->cl.act & SMTPC_ACT_READY) {
		c->cl.act &= ~SMTPC_ACT_READY;
		delivery_route_up(&r->q, c->route);
		if (c->setup_ms < 0)
			c->setup_ms = w->now - c->connect_ms;
		if (!r->stopping && !r->switching && (c->job = delivery_take(&r->q, c->route))) {
			c->job_ms = w->now;
			if (smtp_client_send(&c->cl, &c->job->cm) < 0) {
				smtp_client_fail(&c->cl, "5.6.0 message cannot be sent");
				rc_act(w, c);
				return;
			}
		} else {
			smtp_client_quit(&c->cl);
		}
		if (c->cl.act)
			rc_act(w, c); /* send may decide at once (local refusal) */
	}
	relay_conn_dirty(r, c);
}

static void rc_act_cb(void *arg)
{
	struct relay_conn *c = arg;

	rc_act(c->w, c);
}

/* Plaintext from the transport (io/conn); NULL: the TLS handshake is done. */
static bool rc_on_input(void *owner, const char *p, size_t n)
{
	struct relay_conn *c = owner;

	if (!p) {
		LOGI("relay: %s: %s cipher=%s", c->cl.peer, tls_conn_version(c->rc.tls),
		     tls_conn_cipher(c->rc.tls));
		smtp_client_tls_started(&c->cl);
		rc_act(c->w, c);
	} else {
		const struct relay_conf *rc = c->w->relay->rc;

		conn_client_input(&c->rc, &c->cl, rc->tls, rc->routes[c->route].hops[c->hop].host,
		                  p, n, rc_act_cb, c);
	}
	return !(c->rc.flags & RCONN_CLOSING);
}

void relay_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct relay_conn *c = p;
	char why[300];
	int err;

	if (cqe->res > 0 && !(c->rc.flags & RCONN_CLOSING))
		c->deadline = w->now + (int64_t)relay_cf(w)->relay_timeout * 1000;
	switch (conn_on_recv(&w->ring, &c->rc, cqe, rc_on_input, c, &err)) {
	case CONN_RX_CLOSING:
		rc_maybe_free(w, c);
		return;
	case CONN_RX_EOF:
		if (c->cl.state != SMTPC_S_CLOSED) {
			smtp_client_fail(&c->cl, "4.4.2 connection closed by the next hop");
			rc_act(w, c);
		}
		relay_conn_close(w, c, "4.4.2 connection closed by the next hop");
		return;
	case CONN_RX_XPRT:
		snprintf(why, sizeof(why), "4.7.5 TLS with the next hop failed: %s",
		         err == -ESHUTDOWN ? "closed" : tls_conn_error(c->rc.tls));
		smtp_client_fail(&c->cl, why);
		rc_act(w, c);
		return;
	case CONN_RX_OK:
		if (c->rc.tls)
			relay_conn_dirty(w->relay, c); /* the handshake answers on its own */
		return;
	}
}

void relay_on_connect(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct relay_conn *c = p;
	const struct relay_route *rt = &w->relay->rc->routes[c->route];
	int one = 1;

	c->flags &= ~RC_CONN;
	c->rc.flags &= ~RCONN_SEND;
	c->rc.inflight--;
	if (c->rc.flags & RCONN_CLOSING) {
		rc_maybe_free(w, c);
		return;
	}
	if (cqe->res < 0) {
		LOGI("relay: connect to %s: %s", rt->hops[c->hop].text, strerror(-cqe->res));
		rc_failover(w, c, true, "4.4.1 no next hop answers (connection refused)",
		            "4.4.1 connection failed");
		return;
	}
	setsockopt(c->rc.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_arm_recv(&w->ring, &c->rc);
}

void relay_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct relay_conn *c = p;
	int res;

	res = conn_on_send(&w->ring, &c->rc, cqe);
	if (res == -ECANCELED) {
		rc_maybe_free(w, c);
		return;
	}
	if (res < 0) {
		relay_conn_close(w, c, "4.4.2 send to the next hop failed");
		return;
	}
	rc_act(w, c); /* the body may continue */
}

static void rc_send(struct worker *w, struct relay_conn *c)
{
	if (c->rc.flags & (RCONN_SEND | RCONN_CLOSING))
		return;
	/* The client fills its <out> only up to out_max: the body keeps its
	 * back-pressure, in clear or through TLS. */
	if (conn_flush(&w->ring, &c->rc, &c->cl.out, c->cl.state == SMTPC_S_CLOSED)) {
		c->deadline = w->now + (int64_t)relay_cf(w)->relay_timeout * 1000;
		return;
	}
	if (c->cl.act & SMTPC_ACT_CLOSE || c->cl.state == SMTPC_S_CLOSED) {
		const char *err = smtp_client_error(&c->cl);
		const struct relay_route *rt = &w->relay->rc->routes[c->route];

		if (*err && !c->job) {
			/* Refused before any message (greeting, EHLO, TLS required):
			 * the next hop, or else the waiting jobs are deferred, so
			 * that no connection is opened again at once. */
			LOGI("relay: %s: %s", rt->hops[c->hop].text, err);
			rc_failover(w, c, false, err, "4.4.2 connection closed");
			return;
		}
		relay_conn_close(w, c, "4.4.2 connection closed");
	}
}

void relay_round(struct worker *w)
{
	struct relay *r = w->relay;
	struct relay_conn *c;

	if (!r)
		return;
	while ((c = r->dirty)) {
		r->dirty = c->dirty_next;
		c->flags &= ~RC_DIRTY;
		if (c->rc.flags & RCONN_CLOSING)
			rc_maybe_free(w, c);
		else
			rc_send(w, c);
	}
}
