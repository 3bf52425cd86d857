/* milter: the content filters on the worker's ring. See milter.h.
 *
 * A session's filters are a chain (struct mchain): one operation at a time
 * (a MAIL, a RCPT, the message) goes through them in --milter order; each
 * filter (struct mfilt) runs the commands of that operation one reply at a
 * time (core/milter says when none is awaited) and the operation goes on
 * to the next filter, or stops at a refusal. The filters' connections are
 * opened at the session's first MAIL: connect, negotiation, CONNECT and
 * HELO with their macros, then MAIL. At the end of the message each filter
 * gets the message as the filters before it left it (core/milter's
 * milter_msg, modifications carried out after each end of message), and
 * the message is spooled as the last one left it: the client's 250 still
 * comes only once it is durable (io/commit). What a filter that fails
 * (connect, timeout, EOF, a protocol error: each logged) was doing gets
 * --milter-default-action, and it is left out for the rest of the
 * session: accept goes on without it, tempfail and reject answer for it.
 * Its modifications are only carried out after its final reply, so a
 * filter dying mid-message never leaves a half-modified message. */
#include "io/milter.h"
#include "io/milter-int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/milter.h"
#include "io/commit.h"
#include "io/conn.h"
#include "io/ring.h"
#include "io/session-int.h"
#include "io/spill.h"
#include "io/tls.h"

/* ---- filters ---- */

const char *mf_name(const struct mfilt *f)
{
	return f->t->text;
}

static void mf_maybe_free(struct mfilt *f)
{
	struct worker *w = f->w;

	if (f->ch || f->rc.inflight)
		return;
	if (f->prev)
		f->prev->next = f->next;
	else
		w->mfilts = f->next;
	if (f->next)
		f->next->prev = f->prev;
	conn_fini(&f->rc);
	milter_fini(&f->m);
	buf_free(&f->refuse);
	tables_unref(f->snap); /* (its address and options were in it) */
	free(f);
}

static void mf_flush(struct worker *w, struct mfilt *f)
{
	if (f->rc.flags & (RCONN_SEND | RCONN_CLOSING))
		return; /* sent when the one in flight completes */
	conn_flush(&w->ring, &f->rc, &f->m.out, false);
}

/* The chain's answer to the session (possibly deferred to a NOP). */
static void chain_finish(struct worker *w, struct mchain *ch);

/* <f> failed (<why>, logged): closed, the default action for the rest of
 * the session. Returns what that makes of the operation at <f>. */
static enum mf_step mf_fail_as(struct worker *w, struct mfilt *f, const char *why, bool running)
{
	enum conf_milter_action a = f->cf->milter_default_action;
	struct mchain *ch = f->ch;

	if (f->st == MF_CONNECTING) {
		struct io_uring_sqe *sqe = ring_sqe(&w->ring);

		io_uring_prep_cancel64(sqe, UD(f, UD_MILTER_CONNECT), 0);
		io_uring_sqe_set_data64(sqe, UD_NONE);
	}

	LOGW("milter: %s: client=[%s] %s: default action %s", mf_name(f),
	     ch ? ch->c->s.peer.addr : "-", why,
	     a == CONF_MILTER_ACCEPT   ? "accept"
	     : a == CONF_MILTER_REJECT ? "reject"
	                               : "tempfail");
	f->st = MF_FAILED;
	f->phase = MP_IDLE;
	f->in_msg = false;
	if (!(f->rc.flags & RCONN_CLOSING) && f->rc.fd >= 0)
		conn_close(&w->ring, &f->rc);
	if (!running || a == CONF_MILTER_ACCEPT)
		return MS_NEXT;
	ch->reply.len = 0;
	buf_append_str(&ch->reply, a == CONF_MILTER_REJECT ? MF_REJECT_REPLY : MF_TEMPFAIL_REPLY);
	ch->refused_by = f->idx;
	return MS_STOP;
}

/* <f> fails while the operation is at it. */
enum mf_step mf_fail(struct worker *w, struct mfilt *f, const char *why)
{
	return mf_fail_as(w, f, why, true);
}

/* <f> fails in a completion: the operation goes on if it was at it. */
static void mf_fail_async(struct worker *w, struct mfilt *f, const char *why)
{
	struct mchain *ch = f->ch;
	bool running = ch && ch->op != MC_NONE && ch->cur < ch->n && ch->f[ch->cur] == f;
	enum mf_step r = mf_fail_as(w, f, why, running);

	if (running)
		chain_next(w, ch, r);
}

/* A command was appended: sent, and its reply awaited (or not). */
enum mf_step mf_sent(struct worker *w, struct mfilt *f, int r)
{
	if (r < 0)
		return mf_fail(w, f, "out of memory");
	mf_flush(w, f);
	if (r == 0)
		return MS_NEXT;
	f->deadline = w->now + (int64_t)f->cf->milter_timeout * 1000;
	return MS_WAIT;
}

static void mf_connect(struct worker *w, struct mfilt *f)
{
	const struct milter_target *t = f->t;
	struct io_uring_sqe *sqe;
	int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		f->st = MF_FAILED;
		return;
	}
	conn_init(&f->rc, fd, UD_MILTER_RECV, UD_MILTER_SEND);
	f->st = MF_CONNECTING;
	f->rc.flags |= RCONN_SEND;
	f->rc.inflight++;
	f->deadline = w->now + (int64_t)f->cf->milter_timeout * 1000;
	sqe = ring_sqe(&w->ring);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&t->addr, t->addrlen);
	io_uring_sqe_set_data64(sqe, UD(f, UD_MILTER_CONNECT));
}

static struct mfilt *mf_new(struct worker *w, struct mchain *ch, unsigned idx)
{
	struct mfilt *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->rc.fd = -1;
	f->w = w;
	f->ch = ch;
	f->idx = idx;
	f->t = &ch->targets[idx];
	f->cf = ch->mcf;
	f->snap = ch->snap ? tables_ref(ch->snap) : NULL;
	milter_init(&f->m, MF_ACTIONS, MILTER_P_OFFER);
	milter_set_version(&f->m, f->cf->milter_version, f->cf->milter_no_header_reply);
	f->next = w->mfilts;
	if (w->mfilts)
		w->mfilts->prev = f;
	w->mfilts = f;
	return f;
}

/* ---- macros ---- */

void mf_send_macros(struct mfilt *f, enum milter_stage st)
{
	struct conn *c = f->ch->c;
	struct smtp_session *s = &c->s;
	char port[8], under[96], bits[16], ifaddr[64] = "";
	struct milter_macro mv[8];
	size_t n = 0;

	switch (st) {
	case MILTER_ST_CONNECT: {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(c->rc.fd, (struct sockaddr *)&ss, &sl) == 0) {
			if (ss.ss_family == AF_INET)
				inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ifaddr,
				          sizeof(ifaddr));
			else if (ss.ss_family == AF_INET6)
				inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
				          ifaddr, sizeof(ifaddr));
		}
		snprintf(port, sizeof(port), "%u", c->port);
		snprintf(under, sizeof(under), "unknown [%s]", s->peer.addr);
		mv[n++] = (struct milter_macro){"j", s->cf->hostname};
		mv[n++] = (struct milter_macro){"_", under};
		mv[n++] = (struct milter_macro){"{daemon_name}", "ringmx"};
		mv[n++] = (struct milter_macro){"{client_addr}", s->peer.addr};
		mv[n++] = (struct milter_macro){"{client_port}", port};
		mv[n++] = (struct milter_macro){"{client_name}", "unknown"};
		mv[n++] = (struct milter_macro){"{if_addr}", ifaddr[0] ? ifaddr : NULL};
		break;
	}
	case MILTER_ST_HELO:
		if (!(s->flags & SMTP_F_TLS) || !c->rc.tls)
			return;
		snprintf(bits, sizeof(bits), "%d", tls_conn_cipher_bits(c->rc.tls));
		mv[n++] = (struct milter_macro){"{tls_version}", s->tls_version};
		mv[n++] = (struct milter_macro){"{cipher}", s->tls_cipher};
		mv[n++] = (struct milter_macro){"{cipher_bits}", bits};
		break;
	case MILTER_ST_MAIL:
		mv[n++] = (struct milter_macro){"{mail_addr}", buf_cstr(&s->tx.from)};
		break;
	case MILTER_ST_RCPT: {
		/* The last recipient: the one this RCPT added. */
		const char *r = NULL, *x;
		size_t it = 0;

		while ((x = smtp_tx_rcpt_next(&s->tx, &it)))
			r = x;
		mv[n++] = (struct milter_macro){"{rcpt_addr}", r};
		break;
	}
	case MILTER_ST_DATA:
	case MILTER_ST_EOM:
		mv[n++] = (struct milter_macro){"i", c->qid};
		break;
	default:
		return;
	}
	milter_send_macros(&f->m, st, mv, n);
}

/* ---- one filter's part of an operation ---- */

static enum mf_step mf_send_mail(struct worker *w, struct mfilt *f)
{
	struct smtp_session *s = &f->ch->c->s;
	const char *args[3];
	char size[32];
	size_t n = 0;

	if (f->in_msg)
		milter_send_abort(&f->m); /* the last transaction ended without its message */
	if (s->tx.size_decl) {
		snprintf(size, sizeof(size), "SIZE=%" PRIu64, s->tx.size_decl);
		args[n++] = size;
	}
	if (s->tx.body_8bit)
		args[n++] = "BODY=8BITMIME";
	if (s->tx.smtputf8)
		args[n++] = "SMTPUTF8";
	f->phase = MP_MAIL;
	f->in_msg = true;
	f->msg_done = false;
	mf_send_macros(f, MILTER_ST_MAIL);
	return mf_sent(w, f, milter_send_mail(&f->m, buf_cstr(&s->tx.from), args, n));
}

static enum mf_step mf_send_rcpt(struct worker *w, struct mfilt *f)
{
	const char *r = NULL, *x;
	size_t it = 0;

	while ((x = smtp_tx_rcpt_next(&f->ch->c->s.tx, &it)))
		r = x;
	f->phase = MP_RCPT;
	mf_send_macros(f, MILTER_ST_RCPT);
	return mf_sent(w, f, milter_send_rcpt(&f->m, r ? r : ""));
}

/* The next command of the message phase after <f>'s phase was answered
 * CONTINUE (or needed no answer). */
static enum mf_step mf_msg_next(struct worker *w, struct mfilt *f)
{
	struct mchain *ch = f->ch;
	bool leadspc = (f->m.proto & MILTER_P_HDR_LEADSPC) != 0;
	struct sv name, value;
	enum mf_step r;

	for (;;) {
		switch (f->phase) {
		case MP_DATA:
			f->phase = MP_HDR;
			f->hdr = 0;
			break;
		case MP_HDR:
			if (f->hdr >= milter_msg_nfields(&ch->msg) ||
			    !milter_wants(&f->m, MILTER_ST_HEADER)) {
				f->phase = MP_EOH;
				r = mf_sent(w, f, milter_send_eoh(&f->m));
				if (r != MS_NEXT)
					return r;
				continue;
			}
			if (milter_msg_field(&ch->msg, f->hdr++, leadspc, &ch->tmp, &name, &value))
				return mf_fail(w, f, "out of memory");
			r = mf_sent(w, f, milter_send_header(&f->m, name, value));
			if (r != MS_NEXT)
				return r;
			continue;
		case MP_EOH:
			f->phase = MP_BODY;
			break;
		case MP_BODY:
			return mf_body_step(w, f); /* io/milter_stream.c */
		default:
			return mf_fail(w, f, "internal: message phase out of order");
		}
	}
}

/* The operation reaches <f>: the first command, or its answer at once. */
static enum mf_step mf_begin(struct worker *w, struct mfilt *f)
{
	struct mchain *ch = f->ch;
	enum conf_milter_action a = f->cf->milter_default_action;

	switch (f->st) {
	case MF_SKIP:
		return MS_NEXT;
	case MF_FAILED:
		if (a == CONF_MILTER_ACCEPT)
			return MS_NEXT;
		ch->reply.len = 0;
		buf_append_str(&ch->reply,
		               a == CONF_MILTER_REJECT ? MF_REJECT_REPLY : MF_TEMPFAIL_REPLY);
		ch->refused_by = f->idx;
		return MS_STOP;
	case MF_DOWN:
		if (ch->op != MC_MAIL)
			return MS_NEXT; /* (never: MAIL opens it) */
		mf_connect(w, f);
		if (f->st == MF_FAILED)
			return mf_fail(w, f, "cannot create a socket");
		return MS_WAIT;
	case MF_CONNECTING:
		return MS_WAIT;
	case MF_OPEN:
		break;
	}
	if (f->refuse.len) {
		ch->reply.len = 0;
		buf_append_sv(&ch->reply, buf_sv(&f->refuse));
		ch->refused_by = f->idx;
		return MS_STOP;
	}
	switch (ch->op) {
	case MC_MAIL:
		return mf_send_mail(w, f);
	case MC_RCPT:
		if (f->msg_done)
			return MS_NEXT;
		return mf_send_rcpt(w, f);
	case MC_MSG:
		if (f->msg_done || ch->serial != ch->c->s.tx.serial)
			return MS_NEXT; /* (a message the client reset: ABORT at the next MAIL) */
		f->phase = MP_DATA;
		f->skip = false;
		f->body_off = 0;
		if (!ch->live && !ch->live_off && !ch->data_end)
			ch->live = f; /* the body goes to it as it comes */
		mf_send_macros(f, MILTER_ST_DATA);
		{
			enum mf_step r = mf_sent(w, f, milter_send_data(&f->m));

			return r == MS_NEXT ? mf_msg_next(w, f) : r;
		}
	default:
		return MS_NEXT;
	}
}

/* The reply text of a refusal by <f>: its own, or the usual one. */
static void mf_refusal(struct mchain *ch, struct mfilt *f, struct buf *into)
{
	into->len = 0;
	if (f->m.reply.len)
		buf_append_sv(into, buf_sv(&f->m.reply));
	else
		buf_append_str(into, f->m.verdict == MILTER_V_TEMPFAIL ? MF_TEMPFAIL_REPLY
		                                                       : MF_REJECT_REPLY);
	ch->refused_by = f->idx;
}

/* <f>'s awaited reply is in (f->m.verdict): what comes next. */
static enum mf_step mf_answered(struct worker *w, struct mfilt *f)
{
	struct mchain *ch = f->ch;
	enum milter_verdict v = f->m.verdict;
	enum mf_phase ph = f->phase;
	char why[128];

	switch (ph) {
	case MP_OPTNEG:
		f->st = MF_OPEN;
		LOGD("milter: %s: version %u actions 0x%x steps 0x%x", mf_name(f), f->m.version,
		     f->m.actions, f->m.proto);
		f->phase = MP_CONN;
		{
			struct smtp_session *s = &ch->c->s;
			enum mf_step r;

			mf_send_macros(f, MILTER_ST_CONNECT);
			r = mf_sent(w, f,
			            milter_send_connect(&f->m, "unknown",
			                                strchr(s->peer.addr, ':') ? '6' : '4',
			                                ch->c->port, s->peer.addr));
			if (r != MS_NEXT)
				return r;
		}
		v = MILTER_V_CONTINUE; /* CONNECT unanswered */
		                       /* fallthrough */
	case MP_CONN:
	case MP_HELO:
		if (v == MILTER_V_REJECT || v == MILTER_V_TEMPFAIL) {
			mf_refusal(ch, f, &f->refuse);
			ch->reply.len = 0;
			buf_append_sv(&ch->reply, buf_sv(&f->refuse));
			LOGI("milter: %s: client=[%s] connection refused: %s", mf_name(f),
			     ch->c->s.peer.addr, buf_cstr(&f->refuse));
			return MS_STOP;
		}
		if (v == MILTER_V_ACCEPT || v == MILTER_V_DISCARD) {
			f->st = MF_SKIP; /* no more of this session to it */
			return MS_NEXT;
		}
		if (f->phase == MP_CONN) {
			enum mf_step r;

			f->phase = MP_HELO;
			mf_send_macros(f, MILTER_ST_HELO);
			r = mf_sent(w, f, milter_send_helo(&f->m, ch->c->s.helo));
			if (r != MS_NEXT)
				return r;
		}
		return mf_send_mail(w, f);
	case MP_MAIL:
	case MP_RCPT:
	case MP_DATA:
	case MP_HDR:
	case MP_EOH:
	case MP_BODY:
	case MP_EOM:
		break;
	default:
		return mf_fail(w, f, "a reply nothing asked for");
	}
	switch (v) {
	case MILTER_V_CONTINUE:
	case MILTER_V_SKIP:
		if (ph == MP_EOM)
			break;
		if (ph == MP_MAIL || ph == MP_RCPT)
			return MS_NEXT;
		if (v == MILTER_V_SKIP)
			f->skip = true; /* the rest of the body is not wanted */
		return mf_msg_next(w, f);
	case MILTER_V_ACCEPT:
		if (ph == MP_EOM)
			break;
		f->msg_done = true;                         /* no more of this message to it */
		f->in_msg = ph == MP_MAIL || ph == MP_RCPT; /* an ABORT ends it at the next MAIL */
		return MS_NEXT;
	case MILTER_V_DISCARD:
		f->msg_done = true;
		ch->discard = true;
		LOGI("milter: %s: client=[%s] discards the message", mf_name(f),
		     ch->c->s.peer.addr);
		if (ph == MP_MAIL || ph == MP_RCPT)
			return MS_NEXT; /* dropped at its end */
		f->in_msg = false;
		return MS_STOP;
	default: /* REJECT, TEMPFAIL */
		mf_refusal(ch, f, &ch->reply);
		if (ph == MP_RCPT)
			return MS_STOP; /* that recipient only */
		f->msg_done = true;
		f->in_msg = ph != MP_EOM && ph != MP_MAIL;
		return MS_STOP;
	}
	/* The end of message taken: its modifications, on to the next one. */
	LOGD("milter: %s: id=%s end of message %s, %zu octets of modifications", mf_name(f),
	     ch->c->qid, v == MILTER_V_ACCEPT ? "accepted" : "continued", f->m.mods.len);
	f->in_msg = false;
	f->msg_done = true;
	if (milter_apply(&f->m, &ch->msg, why, sizeof(why)))
		return mf_fail(w, f, why);
	return MS_NEXT;
}

/* ---- the chain ---- */

void chain_next(struct worker *w, struct mchain *ch, enum mf_step r)
{
	if (r == MS_WAIT)
		return;
	if (ch->cur < ch->n)
		stream_leave(ch, ch->f[ch->cur]);
	if (r == MS_NEXT)
		ch->cur++;
	else
		ch->cur = ch->n;
	chain_run(w, ch);
}

void chain_run(struct worker *w, struct mchain *ch)
{
	while (ch->cur < ch->n) {
		enum mf_step r = mf_begin(w, ch->f[ch->cur]);

		if (r == MS_WAIT)
			return;
		stream_leave(ch, ch->f[ch->cur]);
		if (r == MS_STOP)
			break;
		ch->cur++;
	}
	ch->cur = ch->n;
	if (ch->op == MC_MSG && !ch->live) {
		ch->live_off = true; /* nobody takes the body as it comes */
		buf_reset(&ch->pend, 0);
	}
	if (ch->starting) {
		/* Answered without waiting: in a later completion, not under
		 * the session's feed that asked. */
		struct io_uring_sqe *sqe = ring_sqe(&w->ring);

		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, UD(ch, UD_MILTER_NOP));
		ch->nop = true;
		return;
	}
	chain_finish(w, ch);
}

static void chain_log(struct worker *w, struct mchain *ch, enum mc_op op, const char *what)
{
	struct conn *c = ch->c;

	LOGI("milter: %s: id=%s client=[%s] %s: %s", ch->targets[ch->refused_by].text,
	     op == MC_MSG ? c->qid : "-", c->s.peer.addr, what, buf_cstr(&ch->reply));
}

static void chain_finish(struct worker *w, struct mchain *ch)
{
	struct conn *c = ch->c;
	enum mc_op op = ch->op;
	struct smtp_tx *tx = &c->s.tx;
	bool on_disk = ch->spilled && !ch->msg.body_replaced; /* the body is in its segment */
	const char *head;

	if (op == MC_MSG) {
		if (ch->serial != tx->serial) {
			/* The client reset the message while it streamed (BDAT,
			 * RSET): the filters get ABORT at the next MAIL, which
			 * may be waiting for this. */
			ch->op = MC_NONE;
			c->flags &= ~C_FILTER;
			if (c->s.act & SMTP_ACT_FILTER)
				milter_command(w, c);
			return;
		}
		if (!ch->data_end) {
			ch->early = true; /* answered at the end of the content */
			return;
		}
	}
	ch->op = MC_NONE;
	c->flags &= ~C_FILTER;
	if (op == MC_MAIL || op == MC_RCPT) {
		if (ch->reply.len)
			chain_log(w, ch, op, op == MC_MAIL ? "MAIL refused" : "RCPT refused");
		smtp_session_filter_done(&c->s, ch->reply.len ? buf_cstr(&ch->reply) : NULL);
		session_resume(w, c);
		return;
	}
	if (ch->spilled &&
	    (ch->reply.len || ch->discard || ch->msg.nrcpt == 0 || ch->msg.body_replaced))
		spill_abort(w, &c->sp); /* its segment never becomes a message */
	if (ch->reply.len) {
		chain_log(w, ch, op, "message refused");
		smtp_session_msg_reply(&c->s, buf_cstr(&ch->reply));
		buf_reset(&c->rcvd, OUT_KEEP);
		session_resume(w, c);
		return;
	}
	if (ch->discard || ch->msg.nrcpt == 0) {
		LOGI("milter: id=%s client=[%s] message discarded by a filter%s", c->qid,
		     c->s.peer.addr, ch->discard ? "" : " (every recipient deleted)");
		smtp_session_msg_reply(&c->s, MF_DISCARD_REPLY);
		buf_reset(&c->rcvd, OUT_KEEP);
		session_resume(w, c);
		return;
	}
	/* As the filters left it: the content (Received: in it) and the
	 * envelope go to the spool. */
	tx->from.len = 0;
	tx->rcpts.len = 0;
	if ((!on_disk && milter_msg_write(&ch->msg, &tx->body)) ||
	    buf_append_sv(&tx->from, buf_sv(&ch->msg.from)) ||
	    buf_append_sv(&tx->rcpts, buf_sv(&ch->msg.rcpts))) {
		LOGW("milter: id=%s client=[%s] out of memory for the filtered message", c->qid,
		     c->s.peer.addr);
		smtp_session_msg_reply(&c->s, "452 4.3.1 Insufficient system storage");
		buf_reset(&c->rcvd, OUT_KEEP);
		session_resume(w, c);
		return;
	}
	buf_cstr(&tx->from);
	tx->nrcpt = ch->msg.nrcpt;
	c->quarantine = ch->msg.quarantined ? (ch->msg.reason.len ? buf_cstr(&ch->msg.reason)
	                                                          : "quarantined by a filter")
	                                    : NULL;
	if (on_disk) {
		/* The head fills the room before the body (io/milter_stream.c). */
		head = stream_spilled_head(w, ch);
		if (head) {
			spill_abort(w, &c->sp);
			buf_reset(&c->rec,
			          OUT_KEEP); /* (the next message builds its record there) */
			buf_reset(&c->rcvd, OUT_KEEP);
			c->quarantine = NULL;
			smtp_session_msg_reply(&c->s, head);
			session_resume(w, c);
			return;
		}
		session_commit(w, c);
		return;
	}
	buf_reset(&c->rcvd, OUT_KEEP);
	c->flags |= C_MILTERED;
	session_commit(w, c);
}

void chain_free(struct mchain *ch)
{
	milter_msg_fini(&ch->msg);
	buf_free(&ch->pend);
	buf_free(&ch->rbuf);
	buf_free(&ch->reply);
	buf_free(&ch->tmp);
	tables_unref(ch->snap);
	free(ch);
}

static struct mchain *chain_of(struct worker *w, struct conn *c)
{
	struct mchain *ch = c->mch;

	if (ch)
		return ch;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->c = c;
	/* The filters of the session's snapshot (a reload's), else the
	 * startup ones; kept for the session: a reload changes the filters of
	 * the sessions that start after it. */
	if (c->s.tables && c->s.tables->has_milters) {
		ch->snap = tables_ref(c->s.tables);
		ch->targets = ch->snap->milters;
		ch->n = ch->snap->nmilters;
		ch->mcf = ch->snap->conf;
	} else {
		ch->targets = w->g->milters;
		ch->n = w->g->nmilters;
		ch->mcf = w->g->conf;
	}
	for (unsigned i = 0; i < ch->n; i++) {
		ch->f[i] = mf_new(w, ch, i);
		if (!ch->f[i]) {
			for (unsigned k = 0; k < i; k++) {
				ch->f[k]->ch = NULL;
				mf_maybe_free(ch->f[k]);
			}
			tables_unref(ch->snap);
			free(ch);
			return NULL;
		}
	}
	c->mch = ch;
	return ch;
}

void chain_start(struct worker *w, struct mchain *ch, enum mc_op op, const char *reply)
{
	ch->op = op;
	ch->cur = 0;
	ch->reply.len = 0;
	ch->refused_by = 0;
	if (reply) {
		LOGW("milter: client=[%s] out of memory for the message", ch->c->s.peer.addr);
		buf_append_str(&ch->reply, reply);
		ch->cur = ch->n;
	}
	ch->c->flags |= C_FILTER;
	ch->starting = true;
	chain_run(w, ch);
	ch->starting = false;
}

void milter_command(struct worker *w, struct conn *c)
{
	struct mchain *ch = chain_of(w, c);

	if (!ch) {
		LOGW("milter: client=[%s] out of memory for the filters", c->s.peer.addr);
		smtp_session_filter_done(&c->s, MF_TEMPFAIL_REPLY);
		return;
	}
	if (ch->op != MC_NONE)
		return; /* (never: one at a time) */
	if (c->s.filter_verb == 'M') {
		ch->discard = false;
		stream_reset(ch);
	}
	chain_start(w, ch, c->s.filter_verb == 'M' ? MC_MAIL : MC_RCPT, NULL);
}

bool milter_message(struct worker *w, struct conn *c)
{
	struct mchain *ch = c->mch;

	if (!c->s.cf->filters || !ch)
		return false; /* no filters for this transaction (MAIL made the chain) */
	return stream_message_end(w, ch);
}

void milter_session_end(struct worker *w, struct conn *c)
{
	struct mchain *ch = c->mch;

	if (!ch)
		return;
	c->mch = NULL;
	c->flags &= ~C_FILTER;
	if (c->quarantine) /* its message is at the committer: the reason's memory goes */
		c->quarantine = "quarantined by a filter";
	for (unsigned i = 0; i < ch->n; i++) {
		struct mfilt *f = ch->f[i];

		f->ch = NULL;
		if (f->st == MF_OPEN && f->m.state == MILTER_S_READY &&
		    !(f->rc.flags & (RCONN_SEND | RCONN_CLOSING))) {
			/* Idle: a polite goodbye, sent before the close. */
			if (f->in_msg)
				milter_send_abort(&f->m);
			milter_send_quit(&f->m);
			conn_flush(&w->ring, &f->rc, &f->m.out, false);
		}
		if (!(f->rc.flags & RCONN_CLOSING) && f->rc.fd >= 0)
			conn_close(&w->ring, &f->rc);
		mf_maybe_free(f);
	}
	if (ch->nop || ch->reading)
		ch->dead = true; /* freed at that completion */
	else
		chain_free(ch);
}

/* ---- completions ---- */

void milter_on_nop(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct mchain *ch = p;

	(void)cqe;
	ch->nop = false;
	if (ch->dead) {
		if (!ch->reading)
			chain_free(ch);
		return;
	}
	chain_finish(w, ch);
}

void milter_on_connect(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct mfilt *f = p;
	char why[160];
	int one = 1;

	f->rc.flags &= ~RCONN_SEND;
	f->rc.inflight--;
	if (!f->ch || (f->rc.flags & RCONN_CLOSING) || f->st != MF_CONNECTING) {
		mf_maybe_free(f);
		return;
	}
	if (cqe->res < 0) {
		snprintf(why, sizeof(why), "connect: %s", strerror(-cqe->res));
		f->st = MF_DOWN; /* nothing to cancel */
		mf_fail_async(w, f, why);
		return;
	}
	if (f->t->addr.ss_family != AF_UNIX)
		setsockopt(f->rc.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_arm_recv(&w->ring, &f->rc);
	f->st = MF_OPEN; /* for sending; negotiated at MP_OPTNEG's answer */
	f->phase = MP_OPTNEG;
	chain_next(w, f->ch, mf_sent(w, f, milter_send_optneg(&f->m)));
}

/* Plaintext from the filter (io/conn's callback): decoded now, acted on
 * once the receive is done (milter_on_recv()). */
static bool mf_on_input(void *owner, const char *p, size_t n)
{
	struct mfilt *f = owner;

	if (!p || f->in_res == MILTER_IN_ERROR)
		return f->in_res != MILTER_IN_ERROR;
	f->in_res = milter_input(&f->m, p, n);
	return f->in_res != MILTER_IN_ERROR;
}

/* After input: a final reply goes on with the operation; an error fails. */
static void mf_act(struct worker *w, struct mfilt *f)
{
	int r = f->in_res;

	f->in_res = MILTER_IN_WAIT;
	if (r == MILTER_IN_WAIT)
		return;
	if (r == MILTER_IN_ERROR) {
		char why[160];

		snprintf(why, sizeof(why), "protocol error: %s", f->m.err);
		mf_fail_async(w, f, why);
		return;
	}
	chain_next(w, f->ch, mf_answered(w, f));
}

void milter_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct mfilt *f = p;
	int err;

	if (cqe->res > 0)
		f->deadline = w->now + (int64_t)f->cf->milter_timeout * 1000; /* progress */
	switch (conn_on_recv(&w->ring, &f->rc, cqe, mf_on_input, f, &err)) {
	case CONN_RX_CLOSING:
		mf_maybe_free(f);
		return;
	case CONN_RX_EOF:
	case CONN_RX_XPRT:
		if (f->ch && f->st != MF_FAILED)
			mf_fail_async(
			    w, f, err < 0 ? strerror(-err) : "the filter closed the connection");
		mf_maybe_free(f);
		return;
	case CONN_RX_OK:
		if (f->ch && f->st != MF_FAILED)
			mf_act(w, f);
		if (f->ch)
			stream_flow(w, f->ch);
		return;
	}
}

void milter_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct mfilt *f = p;
	int res = conn_on_send(&w->ring, &f->rc, cqe);

	if (res == -ECANCELED || !f->ch) {
		mf_maybe_free(f);
		return;
	}
	if (res < 0) {
		char why[160];

		snprintf(why, sizeof(why), "send: %s", strerror(-res));
		if (f->st != MF_FAILED)
			mf_fail_async(w, f, why);
		return;
	}
	if (res == 0 && f->m.out.len)
		mf_flush(w, f);
	stream_flow(w, f->ch);
}

void milter_tick(struct worker *w)
{
	struct mfilt *f;
	bool again = true;

	/* One at a time, from the top again: failing one answers its session,
	 * which may close and free other filters of the list. */
	while (again) {
		again = false;
		for (f = w->mfilts; f; f = f->next) {
			struct mchain *ch = f->ch;
			char why[96];

			if (!ch || f->st == MF_FAILED || f->deadline > w->now ||
			    (f->st != MF_CONNECTING && f->m.state != MILTER_S_WAIT))
				continue;
			snprintf(why, sizeof(why), "no %s in %us",
			         f->st == MF_CONNECTING ? "connection" : "reply",
			         f->cf->milter_timeout);
			mf_fail_async(w, f, why);
			again = true;
			break;
		}
	}
}
