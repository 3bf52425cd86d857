/* relay: delivery to the next hops, the messages' side. See relay.h.
 *
 * A worker delivers the messages whose descriptors the queue routed to it.
 * For each it reads the record's header and envelope back from its spool
 * segment through the ring, splits the recipients by route (--route
 * domain, else --relay-to), and queues one job per route; the connections
 * of io/relay_conn.c carry the jobs, streaming the body from the disk.
 *
 * Per recipient: 2xx = delivered; 4xx, a timeout or a connection failure =
 * deferred, retried with exponential backoff (--retry-min doubling up to
 * --retry-max) until --max-queue-lifetime, then bounced; 5xx = bounced. A
 * message is done when every recipient is: a done mark goes to the
 * committer and, if a recipient failed and the sender is not the null
 * sender, a DSN (core/dsn) is spooled as a new message from <>, delivered
 * like any other; the message is marked done only once its DSN is durable.
 *
 * The decisions (grouping by route, per-recipient results, settling,
 * failover) are queue/delivery's; this file carries them out and hands
 * bounces, done marks and defer notes to the loop (struct relay_sink). */
#include "io/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/dsn.h"
#include "core/log.h"
#include "core/maillog.h"
#include "core/stats.h"
#include "io/control.h"
#include "io/fault.h"
#include "io/metrics.h"
#include "io/ring.h"
#include "io/relay-int.h"
#include "io/types-t.h"
#include "queue/crc32c.h"
#include "queue/delivery.h"
#include "queue/spool.h"

/* Its log lines name ringmx/smtp (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTP

/* ---- messages ---- */

void relay_msg_free(struct worker *w, struct rmsg *m)
{
	if (!m)
		return;
	w->relay->nmsgs--;
	delivery_msg_fini(&m->d);
	free(m->rd);
	buf_free(&m->scratch);
	free(m);
}

/* The open file of segment <segno>, with one more reference; -errno. */
int relay_seg_ref(struct worker *w, int segno)
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

void relay_seg_unref(struct worker *w, int fd)
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
	int fd = relay_seg_ref(w, m->segno);

	if (fd < 0) {
		LOGE("relay: segment %d: %s", m->segno, strerror(-fd));
		rmsg_read_failed(w, m, fd);
		return;
	}
	sqe = ring_sqe(&w->ring);
	io_uring_prep_read(sqe, fd, dst + m->got, (unsigned)(rmsg_want(m) - m->got), at);
	io_uring_sqe_set_data64(sqe, UD(m, UD_RELAY_READ));
	m->fd = fd;
}

/* Gives the pending recipients of <m> their routes in the relay's next
 * hops (again, after a reload changed them). */
static void msg_route(struct relay *r, struct rmsg *m)
{
	for (unsigned i = 0; i < m->d.nrcpt; i++) {
		int rt;

		if (m->d.rcpt[i].state != DELIVERY_PENDING)
			continue;
		rt = relay_conf_route_of(r->rc, m->d.rcpt[i].addr);
		if (rt < 0)
			delivery_rcpt_fail(&m->d, i, "5.4.4 no route to the recipient's domain");
		else
			m->d.rcpt[i].route = (unsigned)rt;
	}
	m->gen = r->gen;
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
	for (unsigned i = 0; i < m->d.nrcpt; i++, p += strlen(p) + 1)
		m->d.rcpt[i].addr = p;
	msg_route(w->relay, m);
	return 0;
}

static void msg_bounce_read(struct worker *w, struct rmsg *m);
static void msg_move_read(struct worker *w, struct rmsg *m);
static void msg_move_failed(struct worker *w, struct rmsg *m, const char *why);

/* A read of <m> failed (<err>, logged by the caller): a record being
 * loaded is forgotten (it stays in the spool for a restart); a bounce goes
 * without the original's header section rather than not at all; a move is
 * given up (the message stays where it was). */

static void rmsg_read_failed(struct worker *w, struct rmsg *m, int err)
{
	if (m->phase == RM_MOVE) {
		msg_move_failed(w, m, strerror(-err));
		return;
	}
	if (m->phase == RM_DSN) {
		LOGE("relay: id=%s the bounce returns no headers: %s", m->m.qid, strerror(-err));
		m->rd_len = 0;
		msg_bounce_read(w, m);
		return;
	}
	w->relay->nloading--;
	relay_msg_free(w, m);
}

void relay_on_read(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct rmsg *m = p;
	int err = 0;

	relay_seg_unref(w, m->fd);
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
		relay_msg_dispatch(w, m);
		return;
	case RM_DSN:
		msg_bounce_read(w, m);
		return;
	case RM_MOVE:
		msg_move_read(w, m);
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

static void msg_settle(struct worker *w, struct rmsg *m);

static void conn_kick_cb(void *w, unsigned route)
{
	relay_conn_kick(w, route);
}

/* Whether <m> is on hold: then it waits in the deferred list, skipped by
 * the tick, until relay_release(). A message is looked up each time it is
 * about to be dispatched, so a hold reaches it wherever it was: being
 * read back, deferred, or recovered at start. One already on a connection
 * may still go. */
static bool msg_held(struct worker *w, struct rmsg *m)
{
	struct relay *r = w->relay;

	if (!control_held(w->g, m->m.qid, m->m.quarantine && *m->m.quarantine))
		return false;
	if (!m->held)
		LOGI("relay: id=%s on hold: not delivered until released", m->m.qid);
	m->held = true;
	m->next = r->deferred;
	r->deferred = m;
	return true;
}

void relay_msg_dispatch(struct worker *w, struct rmsg *m)
{
	if (msg_held(w, m))
		return;
	if (m->gen != w->relay->gen)
		msg_route(w->relay, m);
	/* A kick may give a job back at once (no socket could be made: the
	 * route's jobs are deferred). The message is settled once, here,
	 * after the dispatch: settled from inside it too, it would be put on
	 * the deferred list twice (a list that loops on itself). */
	m->dispatching = true;
	m->dispatched_ms = w->now;
	m->dispatched_at = time(NULL);
	if (delivery_dispatch(&w->relay->q, &m->d, conn_kick_cb, w) < 0)
		LOGE("relay: out of memory for %s", m->m.qid);
	m->dispatching = false;
	if (!m->d.jobs)
		msg_settle(w, m); /* nothing to send (no route, all decided), or given back */
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
		w->relay->nmsgs++;
		rmsg_read(w, m);
	}
}

/* ---- done log and bounces ---- */

/* Delivery of <m> is over: a done mark, through the loop, for the committer. */
void relay_done_record(struct worker *w, struct rmsg *m, enum spool_state st)
{
	struct spool_done d = {0};

	snprintf(d.qid, sizeof(d.qid), "%s", m->m.qid);
	d.seg = m->seg;
	d.offset = m->offset;
	d.result = st;
	w->relay->sink->done(w, &d, m->segno);
	if (st != SPOOL_MOVED)
		maillog_removed(m->m.qid); /* delivered, bounced (its DSN is queued) or deleted */
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

/* Appends <s> cut to <max> bytes, tabs, CRs and LFs as spaces (they only
 * separate fields and lines). */
static int note_text(struct buf *b, const char *s, size_t max)
{
	size_t n = s ? strnlen(s, max) : 0, at = b->len;
	int err = buf_append(b, s ? s : "", n);

	for (size_t i = at; !err && i < b->len; i++)
		if (b->p[i] == '\t' || b->p[i] == '\r' || b->p[i] == '\n')
			b->p[i] = ' ';
	return err;
}

/* One line per deferral for `ringmx queue` (informational: not synced):
 * "<qid>\t<next attempt>\t<attempts>\t<last reply>\t<states>\t<reply 1>
 * ...\n", <states> a letter per recipient ('d' deferred, 's' sent, 'f'
 * failed), then each recipient's last reply (docs/spool.md, "Defer logs").
 * Past DEFER_NOTE_MAX bytes the recipients' replies are left empty. */
#define DEFER_NOTE_MAX   (16u * 1024)
#define DEFER_RCPT_REPLY 512u

static void defer_note(struct worker *w, const struct rmsg *m)
{
	struct buf *b = &w->relay->note;
	int err;

	buf_reset(b, 4 * DEFER_NOTE_MAX);
	err = buf_printf(b, "%s\t%lld\t%u\t", m->m.qid, (long long)m->d.next_try, m->d.attempts);
	err = err ? err : note_text(b, delivery_defer_why(&m->d), 511);
	err = err ? err : buf_append(b, "\t", 1);
	for (unsigned i = 0; !err && i < m->d.nrcpt; i++) {
		uint8_t st = m->d.rcpt[i].state;

		err = buf_append(b,
		                 st == DELIVERY_SENT     ? "s"
		                 : st == DELIVERY_FAILED ? "f"
		                                         : "d",
		                 1);
	}
	for (unsigned i = 0; !err && i < m->d.nrcpt; i++) {
		err = buf_append(b, "\t", 1);
		if (!err && b->len < DEFER_NOTE_MAX && m->d.rcpt[i].state != DELIVERY_SENT)
			err = note_text(b, m->d.rcpt[i].why, DEFER_RCPT_REPLY);
	}
	err = err ? err : buf_append(b, "\n", 1);
	if (!err)
		w->relay->sink->defer(w, b->p, b->len);
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

/* <m>'s bounce is durable, or there was none to send (err 0): <m> is
 * done; or it failed (-errno): <m> stays for its next retry. */
static void bounce_settled(struct worker *w, struct rmsg *m, int err)
{
	if (err < 0) {
		bounce_retry(w, m, err, time(NULL));
		return;
	}
	relay_done_record(w, m, SPOOL_BOUNCED);
	relay_msg_free(w, m);
}

void relay_bounce_done(struct worker *w, void *token, int err, const char *bounce_qid)
{
	w->relay->nbouncing--;
	if (err == 0)
		maillog_bounce(((struct rmsg *)token)->m.qid, bounce_qid);
	bounce_settled(w, token, err);
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
	bounce_settled(w, m, err);
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

		if (dr->flags & DELIVERY_R_EXPIRED) {
			char why[512];
			struct maillog_dlv d = {
			    .qid = m->m.qid,
			    .to = dr->addr,
			    .relay = "none",
			    .status = "bounced",
			    .reply = why,
			    .delay_s = (long long)(now - m->m.arrival),
			    .delays_ms = {(int64_t)(now - m->m.arrival) * 1000},
			    .attempt = m->d.attempts,
			};

			snprintf(why, sizeof(why), "%s (message expired after %llds in the queue)",
			         dr->why ? dr->why : "", (long long)(now - m->m.arrival));
			maillog_delivery(&d);
		}
	}
	switch (s.outcome) {
	case DELIVERY_SETTLE_DEFER:
		msg_defer(w, m);
		return;
	case DELIVERY_SETTLE_BOUNCE:
		msg_bounce(w, m);
		return;
	case DELIVERY_SETTLE_DONE:
		relay_done_record(w, m, SPOOL_DELIVERED);
		break;
	}
	relay_msg_free(w, m);
}

/* Frees a job that came back; settles its message if it was the last. */
void relay_job_release(struct worker *w, struct delivery_job *j)
{
	struct delivery_msg *d = delivery_job_release(j);

	if (d && !rmsg_of(d)->dispatching)
		msg_settle(w, rmsg_of(d));
}

/* The results of a job from the client session. */
void relay_job_results(struct worker *w, struct relay_conn *c, struct delivery_job *j)
{
	struct relay *r = w->relay;
	const struct delivery_msg *m = j->msg;
	const struct relay_hop *hop = &r->rc->routes[c->route].hops[c->hop];
	uint64_t *dlv = w->st.dlv + (size_t)hop->stat * WSTAT_DLV_N;
	const struct rmsg *rm = rmsg_of(j->msg);
	struct timespec ts;
	int64_t setup;
	time_t now;

	clock_gettime(CLOCK_REALTIME, &ts); /* vDSO; once per job */
	now = ts.tv_sec;
	/* The connection's set-up counts in its first job's delays= only. */
	setup = c->setup_ms > 0 ? c->setup_ms : 0;
	c->setup_ms = 0;

	for (unsigned k = 0; k < j->n; k++) {
		const struct smtp_client_result *res = smtp_client_result(&c->cl, k);
		const char *text = res ? smtp_client_result_text(&c->cl, res) : "4.4.0 no result";
		const char *st = "deferred";

		switch (delivery_job_result(j, k, res ? res->status : SMTPC_PENDING, text,
		                            res && res->code ? hop->text : NULL)) {
		case DELIVERY_SENT: {
			int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 -
			             (int64_t)m->arrival * 1000;

			st = "sent";
			r->stat_sent++;
			stats_add_local(&dlv[WSTAT_DLV_SENT], 1);
			stats_hist_observe_local(&w->st.delivery, &metrics_delivery_bounds,
			                         ms > 0 ? (uint64_t)ms : 0);
			break;
		}
		case DELIVERY_FAILED:
			st = "bounced";
			r->stat_bounced++;
			stats_add_local(&dlv[WSTAT_DLV_BOUNCED], 1);
			break;
		default:
			r->stat_deferred++;
			stats_add_local(&dlv[WSTAT_DLV_DEFERRED], 1);
			break;
		}
		if (log_enabled(LOG_INFO)) {
			struct maillog_dlv d = {
			    .qid = m->qid,
			    .to = j->rcpts[k],
			    .relay = res && res->code ? hop->name : "none",
			    .status = st,
			    .reply = text,
			    .delay_s = (long long)(now - m->arrival),
			    .delays_ms = {(int64_t)(rm->dispatched_at - m->arrival) * 1000,
			                  c->job_ms - rm->dispatched_ms, setup, w->now - c->job_ms},
			    .attempt = m->attempts + 1,
			};

			maillog_delivery(&d);
		}
	}
	relay_job_release(w, j);
}

/* ---- moving long-deferred messages forward ---- */

/* A deferred message keeps its whole segment on the disk (a segment goes
 * only when nothing in it is live). Once it is older than
 * --spool-compact-age and its segment is sealed with at most one record in
 * MOVE_RATIO live, it is copied, verbatim, into the current segment through
 * the committer, and only once the copy is durable is the old record
 * marked SPOOL_MOVED (releasing the old segment). A crash between the two
 * leaves two pending records with the same id and crc: readers and
 * recovery take one (queue/spool_read.c), so nothing is sent twice. The
 * copy is read back whole, so at most MOVE_INFLIGHT messages and
 * MOVE_BYTES are moving per worker at a time, and records past
 * --data-buffer (alone in a segment of their own) never move. */
#define MOVE_RATIO    4u
#define MOVE_INFLIGHT 16u
#define MOVE_BYTES    (16u * 1024 * 1024)

static void moving_remove(struct relay *r, struct rmsg *m)
{
	for (struct rmsg **pp = &r->moving; *pp; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	r->nmoving--;
	r->moving_bytes -= m->rd_len;
}

/* The move of <m> is over (done or not): back among the deferred, or
 * forgotten when the operator deleted it meanwhile. */
static void msg_move_end(struct worker *w, struct rmsg *m)
{
	struct relay *r = w->relay;

	moving_remove(r, m);
	free(m->rd);
	m->rd = NULL;
	m->rd_len = 0;
	m->phase = RM_LOADED;
	if (m->dropped) {
		relay_msg_free(w, m);
		return;
	}
	m->next = r->deferred;
	r->deferred = m;
}

static void msg_move_failed(struct worker *w, struct rmsg *m, const char *why)
{
	LOGE("relay: id=%s cannot be moved out of segment %d (tried again in %us): %s", m->m.qid,
	     m->segno, w->g->conf->spool_compact_age, why);
	m->move_try = time(NULL) + w->g->conf->spool_compact_age;
	if (m->dropped)
		relay_done_record(w, m, SPOOL_DELETED); /* as relay_drop() does */
	msg_move_end(w, m);
}

static void msg_move(struct worker *w, struct rmsg *m)
{
	struct relay *r = w->relay;

	m->rd_len = (size_t)(m->body_at + m->m.body_len);
	m->rd = malloc(m->rd_len);
	m->next = r->moving;
	r->moving = m;
	r->nmoving++;
	r->moving_bytes += m->rd_len;
	m->phase = RM_MOVE;
	m->got = 0;
	if (!m->rd) {
		msg_move_failed(w, m, "out of memory");
		return;
	}
	rmsg_read(w, m);
}

/* The whole record is in <m->rd>: checked against the header read at
 * first and its crc, then handed to the committer. */
static void msg_move_read(struct worker *w, struct rmsg *m)
{
	uint32_t crc = spool_rec_crc_start(m->rd);
	int err;

	crc = crc32c(crc, m->rd + SPOOL_HDR_LEN, m->rd_len - SPOOL_HDR_LEN);
	if (memcmp(m->rd, m->hdr, SPOOL_HDR_LEN) || spool_rec_verify(m->rd, crc)) {
		msg_move_failed(w, m, "the record does not read back as it was (crc)");
		return;
	}
	err = w->relay->sink->move(w, sv_make((const char *)m->rd, m->rd_len), m);
	if (err < 0)
		msg_move_failed(w, m, strerror(-err));
}

void relay_move_done(struct worker *w, void *token, int err, int segno, uint64_t off)
{
	struct rmsg *m = token;
	const struct spool_seg_id *from = &m->seg;

	if (!err && segno < 0)
		err = -EIO; /* written nowhere the registry knows */
	if (err) {
		msg_move_failed(w, m, strerror(-err));
		return;
	}
	if (fault_at("move-copied"))
		fault_kill("move-copied");
	LOGI("relay: id=%s moved forward from seg-%llu-%u-%u to seg-%llu-%u-%u", m->m.qid,
	     (unsigned long long)from->start, from->worker, from->seq,
	     (unsigned long long)segreg_get(&w->g->segs, (unsigned)segno)->start,
	     segreg_get(&w->g->segs, (unsigned)segno)->worker,
	     segreg_get(&w->g->segs, (unsigned)segno)->seq);
	w->relay->stat_moved++;
	relay_done_record(w, m, SPOOL_MOVED); /* releases the old segment once durable */
	m->segno = segno;
	m->seg = *segreg_get(&w->g->segs, (unsigned)segno);
	m->offset = off;
	if (m->dropped)
		relay_done_record(w, m, SPOOL_DELETED); /* the tool knew only the old one */
	msg_move_end(w, m);
}

/* Starts moving the deferred messages that qualify, within the bounds. */
static void msg_moves(struct worker *w, time_t now)
{
	struct relay *r = w->relay;
	const struct conf *cf = w->g->conf;
	struct rmsg **pp, *m;

	if (!cf->spool_compact_age || r->stopping)
		return;
	for (pp = &r->deferred; (m = *pp) && r->nmoving < MOVE_INFLIGHT;) {
		uint64_t len = m->body_at + m->m.body_len;

		if (m->move_try <= now && now - m->m.arrival >= (time_t)cf->spool_compact_age &&
		    len <= cf->data_buffer &&
		    (r->nmoving == 0 || r->moving_bytes + len <= MOVE_BYTES) &&
		    segreg_mostly_dead(&w->g->segs, (unsigned)m->segno, MOVE_RATIO)) {
			*pp = m->next;
			msg_move(w, m);
		} else {
			pp = &m->next;
		}
	}
}

/* The retry schedule of options <cf> (live: a reload changes it). */
static void relay_retry_conf(struct relay *r, const struct conf *cf)
{
	r->retry = (struct retry_conf)RETRY_CONF_INIT;
	r->retry.min_backoff_s = cf->retry_min;
	r->retry.max_backoff_s = cf->retry_max < cf->retry_min ? cf->retry_min : cf->retry_max;
	r->retry.max_lifetime_s = cf->max_queue_lifetime;
	r->retry.bounce_lifetime_s = cf->max_queue_lifetime;
}

void relay_tick(struct worker *w)
{
	struct relay *r = w->relay;
	time_t now = time(NULL);
	struct rmsg **pp, *m;

	if (!r)
		return;
	relay_retry_conf(r, relay_cf(w));
	relay_routes_check(w);
	for (struct relay_conn *c = r->conns, *next; c; c = next) {
		next = c->next;
		if (!(c->rc.flags & RCONN_CLOSING) && c->deadline && c->deadline <= w->now) {
			LOGI("relay: %s: timeout", r->rc->routes[c->route].hops[c->hop].text);
			if (c->flags & RC_CONN) {
				shutdown(c->rc.fd,
				         SHUT_RDWR); /* the connect completes with an error */
				continue;
			}
			relay_conn_close(w, c, "4.4.2 timeout talking to the next hop");
		}
	}
	/* Finished segments' files are closed once no read needs them: an
	 * unlinked segment gives its space back only when nobody holds it
	 * open. The others stay open for the next message in them. */
	for (unsigned i = 0; i < r->nsegf; i++) {
		if (r->segf[i].fd >= 0 && r->segf[i].refs == 0 &&
		    segreg_finished(&w->g->segs, (unsigned)r->segf[i].segno)) {
			close(r->segf[i].fd);
			r->segf[i].fd = -1;
		}
	}
	r->oldest = 0;
	for (pp = &r->deferred; (m = *pp);) {
		if (!r->oldest || m->m.arrival < r->oldest)
			r->oldest = m->m.arrival;
		if (m->d.next_try <= now && !r->stopping && !m->held) {
			*pp = m->next;
			relay_msg_dispatch(w, m);
		} else {
			pp = &m->next;
		}
	}
	msg_moves(w, now);
}

unsigned relay_queued(const struct worker *w, time_t *oldest)
{
	if (!w->relay)
		return 0;
	*oldest = w->relay->oldest;
	return w->relay->nmsgs;
}

bool relay_busy(const struct worker *w)
{
	return w->relay &&
	       (w->relay->conns || w->relay->nbouncing || w->relay->nloading || w->relay->nmoving);
}

void relay_stop(struct worker *w, bool hard)
{
	struct relay *r = w->relay;

	if (!r)
		return;
	r->stopping = true;
	for (unsigned rt = 0; rt < r->rc->nroutes; rt++)
		relay_conn_route_down(w, rt, "4.3.2 gateway shutting down");
	for (struct relay_conn *c = r->conns, *next; c; c = next) {
		next = c->next;
		if (c->rc.flags & RCONN_CLOSING)
			continue;
		if (!c->job && c->cl.state == SMTPC_S_READY && !hard) {
			smtp_client_quit(&c->cl);
			relay_conn_dirty(r, c);
		} else if (!c->job || hard) {
			relay_conn_close(w, c, "4.3.2 gateway shutting down");
		}
	}
}

int relay_init(struct worker *w, const struct relay_sink *sink)
{
	struct relay_conf *rc = (struct relay_conf *)&w->g->relay; /* not counted */
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
	relay_retry_conf(r, w->g->conf);
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
	LOGI("relay: worker %u: %llu sent, %llu deferred, %llu bounced attempts, %llu moved; %s",
	     w->id, (unsigned long long)r->stat_sent, (unsigned long long)r->stat_deferred,
	     (unsigned long long)r->stat_bounced, (unsigned long long)r->stat_moved,
	     r->deferred ? "deferred messages stay in the spool" : "nothing deferred");
	while ((m = r->deferred)) {
		r->deferred = m->next;
		relay_msg_free(w, m);
	}
	while (r->conns)
		relay_conn_free(w, r->conns);
	for (unsigned i = 0; i < r->nsegf; i++)
		if (r->segf[i].fd >= 0)
			close(r->segf[i].fd);
	free(r->segf);
	buf_free(&r->note);
	delivery_queue_fini(&r->q);
	free(r->rs);
	relay_conf_unref(r->rc);
	free(r);
	w->relay = NULL;
}
