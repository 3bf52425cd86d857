/* milter_stream: the message goes to the filters while it arrives, and
 * into its segment when it is large. See milter.h.
 *
 * The header block is held (it is small: at most about --data-buffer)
 * until it ends, at the empty line or the first line that is no header
 * field (core/milter's milter_hdr_end(), the rule milter_msg_load()
 * follows); then the message gets its queue id and Received: header and
 * goes to the chain: DATA, the header fields, EOH, while the body is
 * still coming. From then on each body octet is copied, as it is taken in,
 * into the chain's <pend> for the filter it streams to (the first one to
 * reach the message, ch->live), which is sent BODY packets of 64 KB
 * (MILTER_CHUNK) as they fill, one reply at a time; the client's input
 * pauses while more than STREAM_PEND_MAX wait for that filter, so a slow
 * filter holds back its own client only and memory stays bounded. The
 * end of message goes once the content is complete.
 *
 * A large message's body also streams to the disk (io/spill), but only
 * the body: the filters may still change the header block and the
 * envelope at end of message. So the body goes at an offset that leaves
 * room for the record header, the envelope, the header block as it came
 * and STREAM_HDR_ROOM more (spill_open_body()); at the end the filtered
 * head is written into that room, the envelope ending with a "pad" line
 * (queue/spool: readers skip it) that fills it to the octet, and the
 * record is sealed as any streamed one: content, head, fdatasync,
 * directory fsync, then the 250. Nothing is copied or written twice for
 * the common case (filters add or change headers). Until the seal the
 * segment starts with zeros, which recovery deletes as a torn segment: a
 * message refused, discarded, cut off or whose filter died leaves nothing
 * to deliver (its segment is also unlinked at once). A filter that
 * replaces the body: the new body is in memory (its REPLBODY packets), so
 * the message is written whole the ordinary way (io/commit) and the
 * segment dropped. Header changes larger than the room: 451 4.3.0, logged
 * (a filter adding more than 32 KB of headers is broken, not busy).
 *
 * A second filter in the chain sees what the first one changed (as
 * libmilter users expect), so it can only start once the first answered
 * the end of message: it gets the header block from memory and the body
 * from memory, or read back from the segment in chunks through the ring
 * (the writes all done first), the tail still in tx.body. */
#include "io/milter.h"
#include "io/milter-int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/smtp_session.h"
#include "io/commit.h"
#include "io/ring.h"
#include "io/session-int.h"
#include "io/spill.h"
#include "queue/spool.h"

#define STREAM_PEND_MAX (2u * MILTER_CHUNK) /* body octets waiting for the filter: pause */
#define STREAM_HDR_ROOM (32u << 10)         /* room for the filters' header changes */
#define STREAM_HDR_MAX  (256u << 10)        /* header block held, at most (the pad's bound) */

static bool stale(const struct mchain *ch)
{
	return ch->serial != ch->c->s.tx.serial;
}

void stream_reset(struct mchain *ch)
{
	ch->hdr_done = ch->data_end = ch->early = ch->live_off = ch->spilled = false;
	ch->live = NULL;
	ch->fed = ch->pend_base = ch->body_len = ch->disk_len = ch->body_at = 0;
	buf_reset(&ch->pend, 0);
}

void stream_leave(struct mchain *ch, struct mfilt *f)
{
	if (ch->live != f)
		return;
	ch->live = NULL;
	if (ch->pend_base || ch->data_end) {
		/* It took some: the next filter needs the body from its start. */
		ch->live_off = true;
		buf_reset(&ch->pend, 0);
	} /* else the next filter may take it (mf_begin()) */
}

/* The body octets taken in since the last call, into <pend>. */
static int stream_feed(struct mchain *ch, const struct smtp_tx *tx)
{
	uint64_t end = tx->body_taken + tx->body.len;
	size_t from;

	if (end <= ch->fed || ch->fed < tx->body_taken)
		return 0; /* nothing new (or the content was dropped: refused at its end) */
	from = (size_t)(ch->fed - tx->body_taken);
	ch->fed = end;
	if (!ch->live) {
		/* Nobody takes the body as it comes (the filter at the message
		 * left it out, skipped it, or the chain answered): none kept. */
		ch->live_off = true;
		buf_reset(&ch->pend, 0);
	}
	if (ch->live_off)
		return 0;
	return buf_append(&ch->pend, tx->body.p + from, tx->body.len - from);
}

/* The header block (<hlen> octets at the start of tx.body) is complete:
 * the message goes to the filters. */
static void stream_begin(struct worker *w, struct mchain *ch, size_t hlen)
{
	struct conn *c = ch->c;
	struct smtp_tx *tx = &c->s.tx;
	time_t now = time(NULL);
	struct buf all = BUF_INIT;
	int err;

	commit_qid(w, c->qid, now);
	buf_reset(&c->rcvd, OUT_KEEP);
	err = smtp_session_received(&c->s, &c->rcvd, c->qid, now);
	if (!err)
		err = buf_append(&all, c->rcvd.p, c->rcvd.len) || buf_append(&all, tx->body.p, hlen)
		          ? -ENOMEM
		          : 0;
	if (!err)
		err = milter_msg_load(&ch->msg, all.p, all.len, buf_sv(&tx->from), tx->rcpts.p,
		                      tx->rcpts.len, tx->nrcpt);
	buf_free(&all);
	buf_reset(&c->rcvd, OUT_KEEP);
	buf_consume(&tx->body, hlen); /* tx.body holds the body only from here on */
	ch->serial = tx->serial;
	ch->hdr_done = true;
	ch->fed = 0;
	LOGD("milter: id=%s client=[%s] header block of %zu octets: to the filters", c->qid,
	     c->s.peer.addr, hlen);
	chain_start(w, ch, MC_MSG, err ? "452 4.3.1 Insufficient system storage" : NULL);
	/* The client is still sending: its idle timeout runs (C_FILTER
	 * spares a session that waits for the filters). */
	if (!ch->data_end)
		c->flags &= ~C_FILTER;
}

/* The filter at the body may go on: kicks it (its answer, if the chain
 * ends, in a NOP's completion). */
static void stream_kick(struct worker *w, struct mchain *ch)
{
	struct mfilt *f;
	bool was;

	if (ch->op != MC_MSG || ch->cur >= ch->n || ch->reading || ch->nop)
		return;
	f = ch->f[ch->cur];
	if (f->st != MF_OPEN || f->phase != MP_BODY || f->m.state != MILTER_S_READY)
		return;
	was = ch->starting;
	ch->starting = true;
	chain_next(w, ch, mf_body_step(w, f));
	ch->starting = was;
}

void milter_stream(struct worker *w, struct conn *c, size_t hdr_max)
{
	struct mchain *ch = c->mch;
	struct smtp_tx *tx = &c->s.tx;
	size_t hlen;

	if (!ch || c->state == CONN_S_CLOSING)
		return;
	if (ch->op == MC_MSG && stale(ch)) {
		stream_kick(w, ch); /* reset while it streamed: the filter leaves it */
		return;
	}
	if (!smtp_session_in_content(&c->s) || (tx->flags & SMTP_TX_NOMEM)) {
		if (ch->data_end)
			stream_kick(w, ch); /* (a write it waited for is done) */
		return;
	}
	if (hdr_max > STREAM_HDR_MAX)
		hdr_max = STREAM_HDR_MAX;
	if (!ch->hdr_done) {
		if (ch->op != MC_NONE ||
		    !milter_hdr_end(tx->body.p, tx->body.len, tx->body.len >= hdr_max, &hlen))
			return;
		stream_begin(w, ch, hlen);
	}
	if (stream_feed(ch, tx)) {
		LOGW("milter: id=%s client=[%s] out of memory for the body", c->qid,
		     c->s.peer.addr);
		smtp_session_body_fail(&c->s); /* 452 at its end */
		return;
	}
	stream_kick(w, ch);
}

bool milter_stream_hold(const struct worker *w, const struct conn *c)
{
	(void)w;
	return c->s.cf->filters && (!c->mch || !c->mch->hdr_done);
}

bool milter_stream_full(const struct conn *c)
{
	const struct mchain *ch = c->mch;

	return ch && ch->live && ch->pend.len + ch->live->m.out.len >= STREAM_PEND_MAX;
}

void stream_flow(struct worker *w, struct mchain *ch)
{
	if (ch && (ch->c->flags & C_PAUSED) && !milter_stream_full(ch->c))
		session_content_flow(w, ch->c);
}

int milter_stream_spill(struct worker *w, struct conn *c)
{
	struct mchain *ch = c->mch;
	struct smtp_tx *tx = &c->s.tx;
	struct spool_env env = {
	    .qid = c->qid,
	    .arrival = time(NULL),
	    .client = c->s.peer.addr,
	    .helo = c->s.helo,
	    .from = tx->from.len ? buf_cstr(&tx->from) : "",
	    .rcpts = tx->rcpts.p,
	    .nrcpt = tx->nrcpt,
	    .body_8bit = tx->body_8bit,
	    .smtputf8 = tx->smtputf8,
	};
	uint64_t at;
	int err;

	if (!ch || !ch->hdr_done)
		return -EAGAIN;
	if (!spill_idle(&c->sp))
		return -EAGAIN; /* the last message's segment is still going */
	buf_reset(&c->rec, OUT_KEEP);
	err = spool_rec_open(&c->rec, &env);
	at = c->rec.len + ch->msg.hdrs.len + 2 + STREAM_HDR_ROOM;
	buf_reset(&c->rec, OUT_KEEP);
	if (!err)
		err = spill_open_body(w, &c->sp, at);
	if (err) {
		LOGW("spool: id=%s client=[%s] cannot stream a large message: %s: 452 at its end",
		     c->qid, c->s.peer.addr, strerror(-err));
		return err;
	}
	ch->spilled = true;
	ch->body_at = at;
	c->sp_serial = tx->serial;
	return 0;
}

bool stream_message_end(struct worker *w, struct mchain *ch)
{
	struct conn *c = ch->c;
	struct smtp_tx *tx = &c->s.tx;
	size_t hlen = 0;

	if (!ch->hdr_done) {
		milter_hdr_end(tx->body.p, tx->body.len, true, &hlen);
		stream_begin(w, ch, hlen);
	}
	if (stream_feed(ch, tx))
		ch->live_off = true; /* (the live filter then fails: no memory) */
	ch->data_end = true;
	if (!ch->spilled) {
		/* The body is all in memory: the chain's message takes it. */
		struct buf t = ch->msg.body;

		ch->msg.body = tx->body;
		tx->body = t;
		tx->body.len = 0;
		ch->body_len = ch->msg.body.len;
	} else {
		ch->body_len = tx->body_taken + tx->body.len;
		ch->disk_len = tx->body_taken;
	}
	if (!ch->live) {
		ch->live_off = true;
		buf_reset(&ch->pend, 0);
	}
	c->flags |= C_FILTER;
	if (ch->early || ch->op != MC_MSG) {
		/* Answered before its end: the answer now (in a NOP's completion). */
		ch->op = MC_MSG;
		ch->cur = ch->n;
		ch->starting = true;
		chain_run(w, ch);
		ch->starting = false;
		return true;
	}
	stream_kick(w, ch);
	return true;
}

/* Sends <n> body octets at <p> to <f>, then whatever comes next. */
static enum mf_step body_send(struct worker *w, struct mfilt *f, const char *p, size_t n)
{
	enum mf_step r = mf_sent(w, f, milter_send_body(&f->m, p, n));

	f->body_off += n;
	return r;
}

enum mf_step mf_body_step(struct worker *w, struct mfilt *f)
{
	struct mchain *ch = f->ch;
	struct conn *c = ch->c;
	enum mf_step r;
	size_t k;

	for (;;) {
		if (stale(ch))
			return MS_NEXT; /* the client reset it: ABORT at the next MAIL */
		if (f->skip || !milter_wants(&f->m, MILTER_ST_BODY))
			break;
		if (ch->live == f) {
			/* As it comes: full chunks, the last one at the end. */
			if (ch->pend.len < MILTER_CHUNK && !(ch->data_end && ch->pend.len)) {
				if (!ch->data_end)
					return MS_WAIT;
				break;
			}
			k = ch->pend.len < MILTER_CHUNK ? ch->pend.len : MILTER_CHUNK;
			r = body_send(w, f, ch->pend.p, k);
			buf_consume(&ch->pend, k);
			ch->pend_base += k;
			if (r != MS_NEXT)
				return r;
			continue;
		}
		if (!ch->data_end)
			return MS_WAIT;
		if (!ch->spilled || ch->msg.body_replaced) {
			/* In memory. */
			if (f->body_off >= ch->msg.body.len)
				break;
			k = ch->msg.body.len - f->body_off;
			r = body_send(w, f, ch->msg.body.p + f->body_off,
			              k < MILTER_CHUNK ? k : MILTER_CHUNK);
			if (r != MS_NEXT)
				return r;
			continue;
		}
		if (f->body_off >= ch->body_len)
			break;
		if (f->body_off >= ch->disk_len) {
			/* The tail, still in memory. */
			size_t at = (size_t)(f->body_off - ch->disk_len);

			k = c->s.tx.body.len - at;
			r = body_send(w, f, c->s.tx.body.p + at,
			              k < MILTER_CHUNK ? k : MILTER_CHUNK);
			if (r != MS_NEXT)
				return r;
			continue;
		}
		/* On the disk: read back once the writes are done. */
		if (!spill_idle(&c->sp))
			return MS_WAIT; /* kicked by the write's completion (content_flow) */
		k = ch->disk_len - f->body_off < MILTER_CHUNK ? (size_t)(ch->disk_len - f->body_off)
		                                              : MILTER_CHUNK;
		ch->rbuf.len = 0;
		if (buf_reserve(&ch->rbuf, k))
			return mf_fail(w, f, "out of memory");
		{
			struct io_uring_sqe *sqe = ring_sqe(&w->ring);

			io_uring_prep_read(sqe, c->sp.fd, ch->rbuf.p, (unsigned)k,
			                   ch->body_at + f->body_off);
			io_uring_sqe_set_data64(sqe, UD(ch, UD_MILTER_READ));
		}
		ch->reading = true;
		ch->rd_f = f;
		ch->rbuf.len = k;
		return MS_WAIT;
	}
	/* The end of message, once the content is complete. It stays the
	 * chain's filter until then: the body that comes is nobody's. */
	if (ch->live == f) {
		ch->live = NULL;
		ch->live_off = true;
		buf_reset(&ch->pend, 0);
	}
	if (!ch->data_end)
		return MS_WAIT;
	f->phase = MP_EOM;
	mf_send_macros(f, MILTER_ST_EOM);
	return mf_sent(w, f, milter_send_eom(&f->m));
}

void milter_on_read(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct mchain *ch = p;
	struct mfilt *f = ch->rd_f;
	enum mf_step r;

	ch->reading = false;
	if (ch->dead) {
		if (!ch->nop)
			chain_free(ch);
		return;
	}
	if (cqe->res < 0 || (size_t)cqe->res != ch->rbuf.len) {
		LOGW("milter: id=%s client=[%s] cannot read the message back from its segment: %s",
		     ch->c->qid, ch->c->s.peer.addr,
		     cqe->res < 0 ? strerror(-cqe->res) : "short read");
		ch->reply.len = 0;
		buf_append_str(&ch->reply, "451 4.3.0 Error: cannot read the message back");
		ch->refused_by = f->idx;
		chain_next(w, ch, MS_STOP);
		return;
	}
	/* A chunk that ends where the disk does takes the tail's start, so
	 * that the chunks are full ones however the writes fell. */
	if (ch->rbuf.len < MILTER_CHUNK && f->body_off + ch->rbuf.len == ch->disk_len) {
		size_t k = MILTER_CHUNK - ch->rbuf.len;

		if (k > ch->c->s.tx.body.len)
			k = ch->c->s.tx.body.len;
		if (buf_append(&ch->rbuf, ch->c->s.tx.body.p, k)) {
			chain_next(w, ch, mf_fail(w, f, "out of memory"));
			return;
		}
	}
	r = body_send(w, f, ch->rbuf.p, ch->rbuf.len);
	if (r == MS_NEXT)
		r = mf_body_step(w, f);
	chain_next(w, ch, r);
}

const char *stream_spilled_head(struct worker *w, struct mchain *ch)
{
	struct conn *c = ch->c;
	struct milter_msg *msg = &ch->msg;
	struct spool_env env = {
	    .qid = c->qid,
	    .arrival = time(NULL),
	    .client = c->s.peer.addr,
	    .helo = c->s.helo,
	    .from = buf_cstr(&c->s.tx.from),
	    .rcpts = c->s.tx.rcpts.p,
	    .nrcpt = c->s.tx.nrcpt,
	    .body_8bit = c->s.tx.body_8bit,
	    .smtputf8 = c->s.tx.smtputf8,
	    .quarantine = c->quarantine,
	};
	size_t head;

	(void)w;
	buf_reset(&c->rcvd, OUT_KEEP);
	buf_reset(&c->rec, OUT_KEEP);
	if (buf_append(&c->rcvd, msg->hdrs.p, msg->hdrs.len) ||
	    (msg->has_sep && buf_append(&c->rcvd, "\r\n", 2)) || spool_rec_open(&c->rec, &env))
		return "452 4.3.1 Insufficient system storage";
	head = c->rec.len + c->rcvd.len;
	if (head + 5 > ch->body_at) {
		LOGW("milter: id=%s client=[%s] the filters' header changes (%zu octets of head) "
		     "do not fit the room before the body (%" PRIu64 "): refused",
		     c->qid, c->s.peer.addr, head, ch->body_at);
		return "451 4.3.0 Error: the filters' header changes are too large";
	}
	env.pad = (size_t)ch->body_at - head;
	buf_reset(&c->rec, OUT_KEEP);
	if (spool_rec_open(&c->rec, &env) || c->rec.len + c->rcvd.len != ch->body_at)
		return "452 4.3.1 Insufficient system storage";
	return NULL;
}
