/* relay: delivery to the next hops. See relay.h.
 *
 * A worker delivers the messages whose descriptors the queue routed to it.
 * For each it reads the record's header and envelope back from its spool
 * segment, splits the recipients by route (--route domain, else
 * --relay-to), and queues one job per route; the body stays on the disk
 * until a connection sends it, in 64 KB chunks checked against the
 * record's crc before the final dot. Each route has a pool of at most
 * --relay-pool connections per worker; a connection runs the sans-I/O
 * client (core/smtp_client) and takes the route's jobs one after the other
 * (connection reuse), then QUITs when none is left. Connection I/O goes
 * through the worker's ring: IORING_OP_CONNECT, a multishot receive over
 * the worker's provided buffers, one send per round.
 *
 * Per recipient: 2xx = delivered; 4xx, a timeout or a connection failure =
 * deferred, retried with exponential backoff (--retry-min doubling up to
 * --retry-max) until --max-queue-lifetime, then bounced; 5xx = bounced. A
 * message is done when every recipient is: a done record goes to the
 * worker's done log and, if a recipient failed and the sender is not the
 * null sender, a DSN (core/dsn) is spooled as a new message from <>, which
 * is delivered like any other. Failover: a connection that cannot connect
 * tries the route's next hop; when none answers, the route's queued jobs
 * are deferred.
 *
 * The decisions (grouping by route, per-recipient results, settling,
 * failover) are queue/delivery's; this file carries them out: connections,
 * the done log, bounce spooling, the defer log and the log lines. */
#include "io/relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/dsn.h"
#include "core/log.h"
#include "core/retry.h"
#include "core/smtp_client.h"
#include "io/tls.h"
#include "io/conn.h"
#include "io/ring.h"
#include "io/types-t.h"
#include "queue/crc32c.h"
#include "queue/delivery.h"
#include "queue/spool.h"

/* What an rmsg is reading back (see "Records are read back through the
 * ring" below). */
enum rmsg_phase {
	RM_HDR = 0, /* the header, into <hdr> */
	RM_ENV,     /* header and envelope, into <rd> */
	RM_LOADED,  /* nothing: being delivered, or deferred */
	RM_DSN,     /* the body's first bytes, into <rd>, for the bounce */
};

/* A message being delivered: its record's header and envelope, read back
 * from the spool, and its delivery state (queue/delivery), whose strings
 * point into them. The body stays on the disk: each connection sending it
 * streams it in chunks of its own (struct relay_conn), so that memory does
 * not grow with the size of the messages in the queue. */
struct rmsg {
	struct delivery_msg d;
	struct spool_msg m; /* envelope; strings in <scratch>; body NULL, body_len set */
	struct buf scratch;
	unsigned char hdr[SPOOL_HDR_LEN]; /* read first; kept: its crc checks every sending */
	uint32_t env_crc; /* crc32c of header and envelope: where a sending starts */
	uint64_t body_at; /* the body's offset in the record */
	enum rmsg_phase phase;
	unsigned char *rd; /* RM_ENV, RM_DSN: the read's buffer (<rd_len> bytes), else NULL */
	size_t rd_len;
	size_t got; /* bytes of the phase's read done so far (short reads continue) */
	int segno;
	int fd; /* the segment file of the read in flight */
	struct spool_seg_id seg;
	uint64_t offset;
	struct rmsg *next; /* in the deferred list */
};

static struct rmsg *rmsg_of(struct delivery_msg *d)
{
	return (struct rmsg *)((char *)d - offsetof(struct rmsg, d));
}

/* relay_conn flags (the connection's own are RCONN_*: io/conn) */
#define RC_CONN  0x4u  /* connecting (RCONN_SEND is set for the connect too) */
#define RC_DIRTY 0x10u /* on the relay's list of connections to flush */
#define RC_BODY  0x20u /* a body chunk read is in flight (UD_RELAY_BODY) */

/* Body bytes a connection holds at a time: read from the spool, then given
 * to the client, which stops at its own out_max (SMTPC_OUT_MAX, 64 KB). */
#define RELAY_CHUNK (64u * 1024)

struct relay_conn {
	struct ring_conn rc; /* first: user_data names both */
	struct worker *w;
	unsigned route;
	unsigned hop;     /* index in the route's hops: failover moves it on */
	unsigned flags;   /* RC_* */
	int64_t deadline; /* ms: connect or the next reply */
	struct smtp_client cl;
	struct smtp_client_conf ccf;
	struct delivery_job *job;
	struct relay_conn *next, *dirty_next;
	struct relay_conn *route_next; /* in its route's list */
	/* The job's body, streamed from the spool (body_feed()): */
	uint64_t body_read;          /* body bytes read so far */
	uint32_t body_crc;           /* crc32c of the record up to there */
	unsigned body_seq;           /* bumped per body: a read for an earlier one is stale */
	unsigned read_seq;           /* <body_seq> when the read in flight was prepared */
	int read_fd;                 /* the segment file of the read in flight */
	size_t chunk_len, chunk_pos; /* bytes in <chunk>; of them, given to the client */
	/* Embedded rather than allocated per body, so that closing and
	 * freeing a connection (rc_close(), rc_free()) need not know of it;
	 * a connection lives only while its route has work. */
	unsigned char chunk[RELAY_CHUNK];
} __attribute__((aligned(8)));

/* Per route, so that opening connections for one route looks at its own
 * (at most --relay-pool) connections, not at every connection. */
struct relay_route_state {
	struct relay_conn *conns; /* linked by route_next */
	unsigned nconns;
};

struct relay {
	const struct relay_conf *rc;
	struct retry_conf retry;
	struct relay_route_state *rs;
	struct delivery_queue q; /* per route: the jobs waiting for a connection */
	struct relay_conn *conns;
	struct relay_conn *dirty;
	struct rmsg *deferred;
	struct seg_file *segf; /* segments open for reads */
	unsigned nsegf;
	const struct relay_sink *sink; /* the loop: bounces, done marks, defer notes */
	unsigned nbouncing;            /* messages waiting for their bounce to be durable */
	unsigned nloading;             /* records being read back */
	bool stopping;
	unsigned ndsn;
	uint64_t stat_sent, stat_deferred, stat_bounced;
};

/* ---- messages ---- */

static void rmsg_free(struct rmsg *m)
{
	if (!m)
		return;
	delivery_msg_fini(&m->d);
	free(m->rd);
	buf_free(&m->scratch);
	free(m);
}

/* An open segment for reads. An SQE names its file by number, and the
 * number is looked up when the ring submits it, later: a file with reads
 * prepared or in flight (<refs>) is never closed. */
struct seg_file {
	int segno, fd;
	unsigned refs;
};

/* The open file of segment <segno>, with one more reference; -errno. */
static int seg_ref(struct worker *w, int segno)
{
	struct relay *r = w->relay;
	const struct spool_seg_id *id;
	struct seg_file *f = NULL;
	char name[96];

	for (unsigned i = 0; i < r->nsegf; i++) {
		if (r->segf[i].fd >= 0 && r->segf[i].segno == segno) {
			r->segf[i].refs++;
			return r->segf[i].fd;
		}
		if (!f && r->segf[i].refs == 0)
			f = &r->segf[i]; /* an idle one to reuse */
	}
	if (!f) {
		struct seg_file *n = realloc(r->segf, (r->nsegf + 1) * sizeof(*n));

		if (!n)
			return -ENOMEM;
		r->segf = n;
		f = &r->segf[r->nsegf++];
		f->fd = -1;
	}
	if (f->fd >= 0)
		close(f->fd);
	f->refs = 0;
	id = segreg_get(&w->g->segs, (unsigned)segno);
	spool_seg_name(name, sizeof(name), id->start, id->worker, id->seq);
	f->fd = openat(w->g->spool_dirfd, name, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return -errno;
	f->segno = segno;
	f->refs = 1;
	return f->fd;
}

static void seg_unref(struct worker *w, int fd)
{
	struct relay *r = w->relay;

	for (unsigned i = 0; i < r->nsegf; i++)
		if (r->segf[i].fd == fd && r->segf[i].refs)
			r->segf[i].refs--;
}

/* Records are read back through the ring: the header first (it gives the
 * envelope's length), then the header and envelope, never the body: each
 * connection sending the message streams the body in chunks of at most
 * RELAY_CHUNK (body_feed()), and a bounce reads the body's first bytes,
 * all the DSN returns (msg_bounce()). Each read continues where a short
 * one stopped. The segment was written moments ago (or found by
 * recovery), so these are page-cache reads, but a cold one no longer
 * stalls the worker's other sessions. The crc covers the body, so the
 * record is checked while it is sent: the envelope is trusted for routing
 * before that, but no transaction is completed until the crc holds. */
static size_t rmsg_want(const struct rmsg *m)
{
	return m->phase == RM_HDR ? SPOOL_HDR_LEN : m->rd_len;
}

static void rmsg_read_failed(struct worker *w, struct rmsg *m, int err);

static void rmsg_read(struct worker *w, struct rmsg *m)
{
	unsigned char *dst = m->phase == RM_HDR ? m->hdr : m->rd;
	uint64_t at = m->offset + (m->phase == RM_DSN ? m->body_at : 0) + m->got;
	struct io_uring_sqe *sqe;
	int fd = seg_ref(w, m->segno);

	if (fd < 0) {
		LOGE("relay: segment %d: %s", m->segno, strerror(-fd));
		rmsg_read_failed(w, m, fd);
		return;
	}
	sqe = ring_sqe(w);
	io_uring_prep_read(sqe, fd, dst + m->got, (unsigned)(rmsg_want(m) - m->got), at);
	io_uring_sqe_set_data64(sqe, UD(m, UD_RELAY_READ));
	m->fd = fd;
}

/* The header and envelope are in: the envelope parsed, the recipients
 * given routes. */
static int rmsg_parsed(struct worker *w, struct rmsg *m)
{
	if (spool_rec_parse_env(m->rd, m->rd_len, &m->m, &m->scratch, &m->env_crc) ||
	    delivery_msg_init(&m->d, m->m.nrcpt))
		return -EBADMSG;
	m->d.qid = m->m.qid;
	m->d.from = m->m.from;
	m->d.arrival = m->m.arrival;
	m->d.size = m->m.body_len;
	m->d.body_8bit = m->m.body_8bit;
	m->d.smtputf8 = m->m.smtputf8;
	const char *p = m->m.rcpts;
	for (unsigned i = 0; i < m->d.nrcpt; i++, p += strlen(p) + 1) {
		int rt = relay_conf_route_of(w->relay->rc, p);

		m->d.rcpt[i].addr = p;
		if (rt < 0)
			delivery_rcpt_fail(&m->d, i, "5.4.4 no route to the recipient's domain");
		else
			m->d.rcpt[i].route = (unsigned)rt;
	}
	return 0;
}

static void msg_dispatch(struct worker *w, struct rmsg *m);
static void msg_bounce_read(struct worker *w, struct rmsg *m);

/* A read of <m> failed (<err>, logged by the caller): a record being
 * loaded is forgotten (it stays in the spool for a restart); a bounce goes
 * without the original's header section rather than not at all. */
static void rmsg_read_failed(struct worker *w, struct rmsg *m, int err)
{
	if (m->phase == RM_DSN) {
		LOGE("relay: id=%s the bounce returns no headers: %s", m->m.qid, strerror(-err));
		m->rd_len = 0;
		msg_bounce_read(w, m);
		return;
	}
	w->relay->nloading--;
	rmsg_free(m);
}

void relay_on_read(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct rmsg *m = p;
	int err = 0;

	seg_unref(w, m->fd);
	if (cqe->res <= 0) {
		err = cqe->res < 0 ? cqe->res : -ENODATA; /* the record ends early */
		goto fail;
	}
	m->got += (size_t)cqe->res;
	if (m->got < rmsg_want(m)) {
		rmsg_read(w, m);
		return;
	}
	switch (m->phase) {
	case RM_HDR:
		err = spool_rec_env_end(m->hdr, &m->body_at);
		if (err)
			goto fail;
		m->rd_len = (size_t)m->body_at;
		m->rd = malloc(m->rd_len);
		if (!m->rd) {
			err = -ENOMEM;
			goto fail;
		}
		memcpy(m->rd, m->hdr, SPOOL_HDR_LEN);
		m->phase = RM_ENV;
		if (m->got == m->rd_len) {
			err = -EBADMSG; /* an empty envelope: no id, no sender */
			goto fail;
		}
		rmsg_read(w, m);
		return;
	case RM_ENV:
		err = rmsg_parsed(w, m);
		free(m->rd);
		m->rd = NULL;
		if (err)
			goto fail;
		m->phase = RM_LOADED;
		w->relay->nloading--;
		msg_dispatch(w, m);
		return;
	case RM_DSN:
		msg_bounce_read(w, m);
		return;
	case RM_LOADED:
		break;
	}
	abort(); /* broken invariant: no read is in flight for a loaded message */
fail:
	LOGE("relay: record at %llu in segment %d: %s", (unsigned long long)m->offset, m->segno,
	     strerror(-err));
	rmsg_read_failed(w, m, err);
}

static void conn_kick(struct worker *w, unsigned route);
static void msg_settle(struct worker *w, struct rmsg *m);

static void conn_kick_cb(void *w, unsigned route)
{
	conn_kick(w, route);
}

/* Queues one job per route for the message's pending recipients. */
static void msg_dispatch(struct worker *w, struct rmsg *m)
{
	if (delivery_dispatch(&w->relay->q, &m->d, conn_kick_cb, w) < 0)
		LOGE("relay: out of memory for %s", m->m.qid);
	if (!m->d.jobs)
		msg_settle(w, m); /* nothing to send: no route, or all decided */
}

void relay_take(struct worker *w, const struct mq_item *it, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct rmsg *m = calloc(1, sizeof(*m));

		if (!m) {
			LOGE("relay: out of memory: a message waits in the spool for a restart");
			continue;
		}
		m->segno = (int)QDESC_SEGNO(it[i]);
		m->seg = *segreg_get(&w->g->segs, (unsigned)m->segno);
		m->offset = it[i].b;
		w->relay->nloading++;
		rmsg_read(w, m);
	}
}

/* ---- done log and bounces ---- */

/* Delivery of <m> is over: a done mark, through the loop, for the committer. */
static void done_record(struct worker *w, struct rmsg *m, enum spool_state st)
{
	struct spool_done d = {0};

	snprintf(d.qid, sizeof(d.qid), "%s", m->m.qid);
	d.seg = m->seg;
	d.offset = m->offset;
	d.result = st;
	w->relay->sink->done(w, &d);
}

/* Builds the DSN for <m>'s failed recipients, returning the <m->rd_len>
 * first body bytes at <m->rd> (msg_bounce()), and hands it to the loop for
 * the committer. Returns 1 when it was queued (the answer comes through
 * relay_bounce_done()), 0 when there is none to send (null sender) or
 * -errno. */
static int bounce(struct worker *w, struct rmsg *m)
{
	struct relay *r = w->relay;
	struct dsn_rcpt *dr;
	struct buf out = BUF_INIT;
	time_t now = time(NULL);
	char token[64];
	unsigned n;
	int flags, err;

	dr = calloc(m->d.nrcpt, sizeof(*dr));
	if (!dr)
		return -ENOMEM;
	n = delivery_bounce_rcpts(&m->d, dr, now);
	snprintf(token, sizeof(token), "%s.%lld.%u.%u", m->m.qid, (long long)now, w->id, r->ndsn++);
	flags = dsn_build(&out, &(struct dsn_msg){
	                            .hostname = w->g->conf->hostname,
	                            .sender = m->m.from,
	                            .qid = m->m.qid,
	                            .arrival = m->m.arrival,
	                            .now = now,
	                            .token = token,
	                            .rcpts = dr,
	                            .nrcpt = n,
	                            .content = (const char *)m->rd,
	                            .content_len = m->rd_len,
	                        });
	free(dr);
	if (flags < 0) {
		buf_free(&out);
		if (flags == -EDESTADDRREQ)
			return 0; /* the null sender: nobody to tell */
		LOGE("relay: id=%s cannot build the bounce: %s", m->m.qid, strerror(-flags));
		return flags;
	}
	err = r->sink->bounce(w, m->m.from, buf_sv(&out), (flags & DSN_F_8BIT) != 0,
	                      (flags & DSN_F_UTF8) != 0, m);
	buf_free(&out);
	if (err < 0)
		return err;
	r->nbouncing++;
	return 1;
}

/* One line per deferral for `ringmx queue` (informational: not synced):
 * "<qid>\t<next attempt>\t<attempts>\t<last reply>\n". */
static void defer_note(struct worker *w, const struct rmsg *m)
{
	char why[512] = "", line[640];
	int n;

	if (delivery_defer_why(&m->d))
		snprintf(why, sizeof(why), "%s", delivery_defer_why(&m->d));
	for (char *p = why; *p; p++)
		if (*p == '\t' || *p == '\r' || *p == '\n')
			*p = ' '; /* tabs and newlines only as separators */
	n = snprintf(line, sizeof(line), "%s\t%lld\t%u\t%s\n", m->m.qid, (long long)m->d.next_try,
	             m->d.attempts, why);
	if (n > 0 && (size_t)n < sizeof(line))
		w->relay->sink->defer(w, line, (size_t)n);
}

/* Keeps <m> for a later attempt. */
static void msg_defer(struct worker *w, struct rmsg *m)
{
	struct relay *r = w->relay;

	m->next = r->deferred;
	r->deferred = m;
	defer_note(w, m);
}

/* The bounce of <m> could not be spooled: <m> stays, and is settled (its
 * bounce made) again at the first retry. */
static void bounce_retry(struct worker *w, struct rmsg *m, int err, time_t now)
{
	LOGE("relay: id=%s cannot spool the bounce: %s (tried again in %us)", m->m.qid,
	     strerror(-err), w->relay->retry.min_backoff_s);
	m->d.next_try = now + w->relay->retry.min_backoff_s;
	msg_defer(w, m);
}

void relay_bounce_done(struct worker *w, void *token, int err)
{
	struct rmsg *m = token;

	w->relay->nbouncing--;
	if (err < 0) {
		bounce_retry(w, m, err, time(NULL));
		return;
	}
	done_record(w, m, SPOOL_BOUNCED);
	rmsg_free(m);
}

/* The body's first bytes are in <m->rd> (<m->rd_len>, 0 when they could
 * not be read): the bounce is built. The message is done only once its
 * bounce is durable. */
static void msg_bounce_read(struct worker *w, struct rmsg *m)
{
	int err;

	if (m->phase == RM_DSN) {
		m->phase = RM_LOADED;
		w->relay->nloading--;
	}
	err = bounce(w, m);
	/* Built or not, the copy is not kept: a bounce tried again later
	 * reads it again, and a deferred message holds no body bytes. */
	free(m->rd);
	m->rd = NULL;
	m->rd_len = 0;
	if (err > 0)
		return; /* relay_bounce_done() finishes it */
	if (err < 0) {
		bounce_retry(w, m, err, time(NULL));
		return;
	}
	done_record(w, m, SPOOL_BOUNCED);
	rmsg_free(m);
}

/* <m> bounces. The DSN returns the original's header section within
 * DSN_RETURN_MAX octets (dsn_build() with return_max 0 and no
 * return_full), and dsn_copy() writes at least as many octets as it reads,
 * so the body's first DSN_RETURN_MAX bytes give the same DSN as the whole
 * body: those are read back first, through the ring. */
static void msg_bounce(struct worker *w, struct rmsg *m)
{
	size_t n = m->m.body_len < DSN_RETURN_MAX ? (size_t)m->m.body_len : DSN_RETURN_MAX;

	if (n && *m->m.from) { /* the null sender gets no DSN: nothing to read */
		m->rd = malloc(n);
		if (m->rd) {
			m->phase = RM_DSN;
			m->rd_len = n;
			m->got = 0;
			w->relay->nloading++;
			rmsg_read(w, m);
			return;
		}
		LOGE("relay: id=%s out of memory: the bounce returns no headers", m->m.qid);
	}
	m->rd_len = 0;
	msg_bounce_read(w, m);
}

/* A message whose jobs have all come back: done, or deferred. */
static void msg_settle(struct worker *w, struct rmsg *m)
{
	struct relay *r = w->relay;
	time_t now = time(NULL);
	struct delivery_settlement s = delivery_settle(&m->d, &r->retry, now);

	for (unsigned i = 0; s.expired && i < m->d.nrcpt; i++) {
		const struct delivery_rcpt *dr = &m->d.rcpt[i];

		if (dr->flags & DELIVERY_R_EXPIRED)
			LOGI("relay: id=%s to=<%s> status=bounced (expired after %llds): %s",
			     m->m.qid, dr->addr, (long long)(now - m->m.arrival),
			     dr->why ? dr->why : "");
	}
	switch (s.outcome) {
	case DELIVERY_SETTLE_DEFER:
		msg_defer(w, m);
		return;
	case DELIVERY_SETTLE_BOUNCE:
		msg_bounce(w, m);
		return;
	case DELIVERY_SETTLE_DONE:
		done_record(w, m, SPOOL_DELIVERED);
		break;
	}
	rmsg_free(m);
}

/* Frees a job that came back; settles its message if it was the last. */
static void rjob_release(struct worker *w, struct delivery_job *j)
{
	struct delivery_msg *d = delivery_job_release(j);

	if (d)
		msg_settle(w, rmsg_of(d));
}

/* The results of a job from the client session. */
static void job_results(struct worker *w, struct relay_conn *c, struct delivery_job *j)
{
	struct relay *r = w->relay;
	const struct delivery_msg *m = j->msg;
	const struct relay_hop *hop = &r->rc->routes[c->route].hops[c->hop];
	time_t now = time(NULL);

	for (unsigned k = 0; k < j->n; k++) {
		const struct smtp_client_result *res = smtp_client_result(&c->cl, k);
		const char *text = res ? smtp_client_result_text(&c->cl, res) : "4.4.0 no result";
		const char *st = "deferred";

		switch (delivery_job_result(j, k, res ? res->status : SMTPC_PENDING, text,
		                            res && res->code ? hop->text : NULL)) {
		case DELIVERY_SENT:
			st = "sent";
			r->stat_sent++;
			break;
		case DELIVERY_FAILED:
			st = "bounced";
			r->stat_bounced++;
			break;
		default:
			r->stat_deferred++;
			break;
		}
		LOGI("relay: id=%s to=<%s> relay=%s delay=%llds attempt=%u status=%s (%s)", m->qid,
		     j->rcpts[k], hop->text, (long long)(now - m->arrival), m->attempts + 1, st,
		     text);
	}
	rjob_release(w, j);
}

/* ---- connections ---- */

static void rc_dirty(struct relay *r, struct relay_conn *c)
{
	if (c->flags & RC_DIRTY)
		return;
	c->flags |= RC_DIRTY;
	c->dirty_next = r->dirty;
	r->dirty = c;
}

static void rc_free(struct worker *w, struct relay_conn *c)
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
		conn_kick(w, c->route); /* jobs queued while it was closing */
	free(c);
}

static void rc_maybe_free(struct worker *w, struct relay_conn *c)
{
	if ((c->rc.flags & RCONN_CLOSING) && !c->rc.inflight && !(c->flags & RC_DIRTY))
		rc_free(w, c);
}

/* Gives the job back (its recipients deferred with <why>) and closes. */
static void rc_close(struct worker *w, struct relay_conn *c, const char *why)
{
	if (c->rc.flags & RCONN_CLOSING)
		return;
	if (c->job) {
		if (c->cl.msg)
			smtp_client_fail(&c->cl, why);
		if (c->cl.act & SMTPC_ACT_DONE) {
			c->cl.act &= ~SMTPC_ACT_DONE;
			job_results(w, c, c->job);
		} else {
			delivery_job_why(c->job, why);
			rjob_release(w, c->job);
		}
		c->job = NULL;
	}
	conn_close(w, &c->rc);
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
		rc_close(w, c, "4.3.0 cannot create a socket");
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
	c->deadline = w->now + (int64_t)w->g->conf->relay_timeout * 1000;
	sqe = ring_sqe(w);
	io_uring_prep_connect(sqe, c->rc.fd, (const struct sockaddr *)&h->addr, h->addrlen);
	io_uring_sqe_set_data64(sqe, UD(c, UD_RELAY_CONNECT));
}

/* Opens connections for the route's waiting jobs, up to the pool size.
 * Costs O(1) plus the route's own connections (at most --relay-pool),
 * however many jobs wait and however many other routes have connections
 * (bench/delivery_bench.c). */
static void conn_kick(struct worker *w, unsigned route)
{
	struct relay *r = w->relay;
	struct relay_route_state *rs = &r->rs[route];
	unsigned waiting;

	if (r->stopping)
		return;
	waiting = delivery_waiting(&r->q, route);
	/* Idle connections pick jobs up at their next READY; open more only
	 * for what they cannot take. One that is quitting takes nothing. */
	for (struct relay_conn *c = rs->conns; c && waiting; c = c->route_next)
		if (!c->job && !(c->rc.flags & RCONN_CLOSING) && c->cl.state != SMTPC_S_QUIT &&
		    c->cl.state != SMTPC_S_CLOSED)
			waiting--;
	while (waiting && rs->nconns < w->g->conf->relay_pool) {
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
static void route_down(struct worker *w, unsigned route, const char *why)
{
	struct relay *r = w->relay;
	struct delivery_job *j;

	while ((j = delivery_take(&r->q, route))) {
		const struct delivery_msg *m = j->msg;

		delivery_job_why(j, why);
		for (unsigned k = 0; k < j->n; k++) {
			LOGI("relay: id=%s to=<%s> relay=none delay=%llds attempt=%u "
			     "status=deferred "
			     "(%s)",
			     m->qid, j->rcpts[k], (long long)(time(NULL) - m->arrival),
			     m->attempts + 1, why);
			r->stat_deferred++;
		}
		rjob_release(w, j);
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

	switch (delivery_failover(&r->q, c->route, &c->hop, r->rc->routes[c->route].nhops,
	                          r->rs[c->route].nconns, connect)) {
	case DELIVERY_FO_NEXT_HOP:
		rc_connect(w, c);
		return;
	case DELIVERY_FO_ROUTE_DOWN:
		route_down(w, c->route, down_why);
		break;
	case DELIVERY_FO_CLOSE:
		break;
	}
	rc_close(w, c, close_why);
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
	rc_dirty(w->relay, c);
	rc_close(w, c, why);
}

/* Reads the next chunk of the body into <c->chunk>, at most RELAY_CHUNK
 * bytes from where the last read stopped. Returns 0, or -1 when it could
 * not and <c> is closed. */
static int body_read_next(struct worker *w, struct relay_conn *c, const struct rmsg *m)
{
	uint64_t left = m->m.body_len - c->body_read;
	size_t n = left < RELAY_CHUNK ? (size_t)left : RELAY_CHUNK;
	struct io_uring_sqe *sqe;
	int fd = seg_ref(w, m->segno);

	if (fd < 0) {
		LOGE("relay: id=%s segment %d: %s", m->m.qid, m->segno, strerror(-fd));
		body_abort(w, c, "4.3.0 cannot read the spool record");
		return -1;
	}
	c->chunk_len = c->chunk_pos = 0;
	sqe = ring_sqe(w);
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

	seg_unref(w, c->read_fd);
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
			job_results(w, c, j);
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
		if (!r->stopping && (c->job = delivery_take(&r->q, c->route))) {
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
	rc_dirty(r, c);
}

/* One multishot receive over the worker's provided buffers. */
/* Replies for the client session. After a 220 to STARTTLS nothing more of
 * the clear-text input is read (client-side CVE-2011-0411): TLS starts. */
static void rc_input(struct worker *w, struct relay_conn *c, const char *data, size_t n)
{
	size_t off = 0;

	while (off < n && !(c->cl.act & SMTPC_ACT_CLOSE)) {
		size_t k = smtp_client_feed(&c->cl, data + off, n - off);

		off += k;
		if (c->cl.act & SMTPC_ACT_STARTTLS) {
			const struct relay_hop *h = &w->relay->rc->routes[c->route].hops[c->hop];
			struct tls_conn *t = tls_conn_new_client(w->relay->rc->tls, h->host);

			c->cl.act &= ~SMTPC_ACT_STARTTLS;
			if (t)
				conn_start_tls(&c->rc,
				               t); /* the ClientHello leaves with the next flush */
			else
				smtp_client_fail(&c->cl, "4.3.0 cannot start TLS");
			rc_act(w, c);
			return;
		}
		rc_act(w, c);
		if (!k)
			break;
	}
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
		rc_input(c->w, c, p, n);
	}
	return !(c->rc.flags & RCONN_CLOSING);
}

void relay_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct relay_conn *c = p;
	char why[300];
	int err;

	if (cqe->res > 0 && !(c->rc.flags & RCONN_CLOSING))
		c->deadline = w->now + (int64_t)w->g->conf->relay_timeout * 1000;
	switch (conn_on_recv(w, &c->rc, cqe, rc_on_input, c, &err)) {
	case CONN_RX_CLOSING:
		rc_maybe_free(w, c);
		return;
	case CONN_RX_EOF:
		if (c->cl.state != SMTPC_S_CLOSED) {
			smtp_client_fail(&c->cl, "4.4.2 connection closed by the next hop");
			rc_act(w, c);
		}
		rc_close(w, c, "4.4.2 connection closed by the next hop");
		return;
	case CONN_RX_XPRT:
		snprintf(why, sizeof(why), "4.7.5 TLS with the next hop failed: %s",
		         err == -ESHUTDOWN ? "closed" : tls_conn_error(c->rc.tls));
		smtp_client_fail(&c->cl, why);
		rc_act(w, c);
		return;
	case CONN_RX_OK:
		if (c->rc.tls)
			rc_dirty(w->relay, c); /* the handshake answers on its own */
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
	conn_arm_recv(w, &c->rc);
}

void relay_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct relay_conn *c = p;
	int res;

	res = conn_on_send(w, &c->rc, cqe);
	if (res == -ECANCELED) {
		rc_maybe_free(w, c);
		return;
	}
	if (res < 0) {
		rc_close(w, c, "4.4.2 send to the next hop failed");
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
	if (conn_flush(w, &c->rc, &c->cl.out, c->cl.state == SMTPC_S_CLOSED)) {
		c->deadline = w->now + (int64_t)w->g->conf->relay_timeout * 1000;
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
		rc_close(w, c, "4.4.2 connection closed");
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

void relay_tick(struct worker *w)
{
	struct relay *r = w->relay;
	time_t now = time(NULL);
	struct rmsg **pp, *m;

	if (!r)
		return;
	for (struct relay_conn *c = r->conns, *next; c; c = next) {
		next = c->next;
		if (!(c->rc.flags & RCONN_CLOSING) && c->deadline && c->deadline <= w->now) {
			LOGI("relay: %s: timeout", r->rc->routes[c->route].hops[c->hop].text);
			if (c->flags & RC_CONN) {
				shutdown(c->rc.fd,
				         SHUT_RDWR); /* the connect completes with an error */
				continue;
			}
			rc_close(w, c, "4.4.2 timeout talking to the next hop");
		}
	}
	for (pp = &r->deferred; (m = *pp);) {
		if (m->d.next_try <= now && !r->stopping) {
			*pp = m->next;
			msg_dispatch(w, m);
		} else {
			pp = &m->next;
		}
	}
}

void relay_drop(struct worker *w, const char *qid)
{
	struct relay *r = w->relay;
	struct rmsg **pp, *m;

	if (!r)
		return;
	for (pp = &r->deferred; (m = *pp);) {
		if (strcmp(m->m.qid, qid) == 0) {
			*pp = m->next;
			LOGI("relay: id=%s deleted by the operator", qid);
			rmsg_free(m);
		} else {
			pp = &m->next;
		}
	}
}

void relay_flush(struct worker *w)
{
	struct relay *r = w->relay;

	if (!r)
		return;
	for (struct rmsg *m = r->deferred; m; m = m->next)
		m->d.next_try = 0;
	relay_tick(w);
}

bool relay_busy(const struct worker *w)
{
	return w->relay && (w->relay->conns || w->relay->nbouncing || w->relay->nloading);
}

void relay_stop(struct worker *w, bool hard)
{
	struct relay *r = w->relay;

	if (!r)
		return;
	r->stopping = true;
	for (unsigned rt = 0; rt < r->rc->nroutes; rt++)
		route_down(w, rt, "4.3.2 gateway shutting down");
	for (struct relay_conn *c = r->conns, *next; c; c = next) {
		next = c->next;
		if (c->rc.flags & RCONN_CLOSING)
			continue;
		if (!c->job && c->cl.state == SMTPC_S_READY && !hard) {
			smtp_client_quit(&c->cl);
			rc_dirty(r, c);
		} else if (!c->job || hard) {
			rc_close(w, c, "4.3.2 gateway shutting down");
		}
	}
}

int relay_init(struct worker *w, const struct relay_sink *sink)
{
	const struct relay_conf *rc = &w->g->relay;
	const struct conf *cf = w->g->conf;
	struct relay *r;

	if (!rc->nroutes)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->rc = rc;
	r->rs = calloc(rc->nroutes, sizeof(*r->rs));
	if (!r->rs || delivery_queue_init(&r->q, rc->nroutes)) {
		free(r->rs);
		free(r);
		return -ENOMEM;
	}
	r->retry = (struct retry_conf)RETRY_CONF_INIT;
	r->retry.min_backoff_s = cf->retry_min;
	r->retry.max_backoff_s = cf->retry_max < cf->retry_min ? cf->retry_min : cf->retry_max;
	r->retry.max_lifetime_s = cf->max_queue_lifetime;
	r->retry.bounce_lifetime_s = cf->max_queue_lifetime;
	r->sink = sink;
	w->relay = r;
	return 0;
}

void relay_fini(struct worker *w)
{
	struct relay *r = w->relay;
	struct rmsg *m;

	if (!r)
		return;
	LOGI("relay: worker %u: %llu sent, %llu deferred, %llu bounced attempts; %s", w->id,
	     (unsigned long long)r->stat_sent, (unsigned long long)r->stat_deferred,
	     (unsigned long long)r->stat_bounced,
	     r->deferred ? "deferred messages stay in the spool" : "nothing deferred");
	while ((m = r->deferred)) {
		r->deferred = m->next;
		rmsg_free(m);
	}
	while (r->conns)
		rc_free(w, r->conns);
	for (unsigned i = 0; i < r->nsegf; i++)
		if (r->segf[i].fd >= 0)
			close(r->segf[i].fd);
	free(r->segf);
	delivery_queue_fini(&r->q);
	free(r->rs);
	free(r);
	w->relay = NULL;
}
