/* session: the SMTP server connection on the worker's ring. See session.h.
 *
 * Each worker keeps one idle list ordered by last activity (every session
 * has the same idle timeout, so the list is a timer wheel with one slot:
 * O(1) updates, expiry from its head). A receive feeds the sans-I/O session
 * (core/smtp_session), in clear or through TLS (io/tls); what it answers is
 * flushed once per round with one send. A complete message goes to the
 * committer (io/commit); its 250 or 4xx is given in on_committed()
 * once the group commit is done, and the pipelined commands that waited
 * behind it are fed then. */
#include "io/session.h"
#include "io/session-int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/maillog.h"
#include "core/stats.h"
#include "core/tables.h"
#include "io/cluster.h"
#include "io/commit.h"
#include "io/conn.h"
#include "io/metrics.h"
#include "io/milter.h"
#include "io/ring.h"
#include "io/route.h"
#include "io/spill.h"
#include "io/tls.h"
#include "io/verify.h"

/* Its log lines name ringmx/smtpd (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTPD

/* ---- lists ---- */

static void live_unlink(struct worker *w, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->live.head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		w->live.tail = c->prev;
	c->prev = c->next = NULL;
}

static void live_append(struct worker *w, struct conn *c)
{
	c->prev = w->live.tail;
	c->next = NULL;
	if (w->live.tail)
		w->live.tail->next = c;
	else
		w->live.head = c;
	w->live.tail = c;
}

static void touch(struct worker *w, struct conn *c)
{
	c->last_active = w->now;
	if (w->live.tail != c) {
		live_unlink(w, c);
		live_append(w, c);
	}
}

void session_mark_dirty(struct worker *w, struct conn *c)
{
	if (c->flags & C_DIRTY)
		return;
	c->flags |= C_DIRTY;
	c->dirty_next = w->dirty;
	w->dirty = c;
}

/* ---- message content in memory: streaming and back-pressure ----
 *
 * A message's content is held in the session's memory (tx.body) until its
 * end, unless it grows past about --data-buffer: then it streams into a
 * segment of its own (io/spill) in chunks of about --data-buffer, at most
 * SPILL_WRITES of them on the disk while the next one gathers. Content is
 * read one receive buffer at a time (conn_meter()), so that a pause takes
 * effect at once. What the worker's sessions hold of content not on the
 * disk, and of input waiting behind a message being committed, is counted
 * in w->data_held against the worker's share of --data-memory. Input is
 * paused (io/conn: no receive is armed, so TCP's window closes on the
 * sender), never refused, when
 * - the session's next chunk is ready while its write buffers are all on
 *   the disk;
 * - it pipelined more than PENDING_PAUSE behind a message being committed;
 * - the worker is over its share: then every session receiving content
 *   pauses, and each one holding content sends it to the disk, so that
 *   what is held drains by itself (writes and commits always complete).
 * Paused sessions are looked at again when their own write completes and,
 * while the worker is under its share, at the end of each round; the idle
 * timeout spares them (they wait for the gateway, not for the client). */

#define PENDING_PAUSE (64u << 10)

static void held_update(struct worker *w, struct conn *c)
{
	size_t now = c->s.tx.body.len + spill_held(&c->sp) + c->pending.len;

	w->data_held = w->data_held - c->held + now;
	c->held = now;
	if (w->data_held > w->stat_held_peak)
		w->stat_held_peak = w->data_held;
}

static void input_pause(struct worker *w, struct conn *c)
{
	if (c->flags & C_PAUSED)
		return;
	c->flags |= C_PAUSED;
	c->pause_next = NULL;
	c->pause_prev = w->paused.tail;
	if (w->paused.tail)
		w->paused.tail->pause_next = c;
	else
		w->paused.head = c;
	w->paused.tail = c;
	w->stat_paused++;
	conn_pause(&w->ring, &c->rc);
	LOGD("session: client=[%s]:%u input paused (%zu bytes held, worker %llu of %llu)",
	     c->s.peer.addr, c->port, c->held, (unsigned long long)w->data_held,
	     (unsigned long long)w->data_cap);
}

static void input_resume(struct worker *w, struct conn *c)
{
	if (!(c->flags & C_PAUSED))
		return;
	c->flags &= ~C_PAUSED;
	if (c->pause_prev)
		c->pause_prev->pause_next = c->pause_next;
	else
		w->paused.head = c->pause_next;
	if (c->pause_next)
		c->pause_next->pause_prev = c->pause_prev;
	else
		w->paused.tail = c->pause_prev;
	c->pause_prev = c->pause_next = NULL;
	if (c->state != CONN_S_CLOSING)
		conn_resume(&w->ring, &c->rc);
}

/* The streamed message's transaction is gone without a message. */
static void stream_abort(struct worker *w, struct conn *c)
{
	if (!spill_active(&c->sp))
		return;
	LOGI("%s: lost connection after DATA (%llu bytes) from unknown[%s]: message cut off, "
	     "not queued",
	     c->qid, (unsigned long long)c->sp.content, c->s.peer.addr);
	spill_abort(w, &c->sp);
	buf_reset(&c->rec, OUT_KEEP);
	buf_reset(&c->rcvd, OUT_KEEP);
}

/* The content outgrew memory: the message gets its queue id, envelope and
 * Received: header now, and a segment of its own. */
static int stream_open(struct worker *w, struct conn *c)
{
	time_t now = time(NULL);
	struct spool_env env;
	int err;

	commit_qid(w, c->qid, now);
	env = (struct spool_env){
	    .qid = c->qid,
	    .arrival = now,
	    .client = c->s.peer.addr,
	    .helo = c->s.helo,
	    .from = c->s.tx.from.len ? buf_cstr(&c->s.tx.from) : "",
	    .rcpts = c->s.tx.rcpts.p,
	    .nrcpt = c->s.tx.nrcpt,
	    .body_8bit = c->s.tx.body_8bit,
	    .smtputf8 = c->s.tx.smtputf8,
	};
	buf_reset(&c->rec, OUT_KEEP);
	buf_reset(&c->rcvd, OUT_KEEP);
	err = smtp_session_received(&c->s, &c->rcvd, c->qid, now);
	if (!err)
		err = spool_rec_open(&c->rec, &env);
	if (!err)
		err = spill_open(w, &c->sp, &c->rec, &c->rcvd);
	if (err) {
		LOGW("spool: id=%s client=[%s] cannot stream a large message: %s: 452 at its end",
		     c->qid, c->s.peer.addr, strerror(-err));
		buf_reset(&c->rec, OUT_KEEP);
		buf_reset(&c->rcvd, OUT_KEEP);
		return err;
	}
	c->sp_serial = c->s.tx.serial;
	return 0;
}

/* Content is taken in chunks just under --data-buffer, so that the
 * session's buffer, grown by doubling, stays at --data-buffer (a power of
 * two by default) while a receive buffer more arrives. */
static size_t chunk_size(const struct conf *cf)
{
	return cf->data_buffer >= 2 * RX_BUF_SIZE ? cf->data_buffer - RX_BUF_SIZE - 1
	                                          : cf->data_buffer;
}

/* After input or a completion: streams what should go to the disk, then
 * pauses or resumes <c>'s input. */
static void content_flow(struct worker *w, struct conn *c)
{
	const struct conf *cf = w->g->conf;
	struct smtp_tx *tx = &c->s.tx;
	bool in = c->state != CONN_S_CLOSING && smtp_session_in_content(&c->s);
	bool over = w->data_held > w->data_cap;
	bool pause = false;
	struct buf *b;
	int err = 0;

	if (spill_active(&c->sp) && c->sp_serial != tx->serial)
		stream_abort(w, c); /* refused (too big, bare LF...), reset, or a new one */
	milter_stream(w, c, chunk_size(cf)); /* the filters see it before it is taken */
	if (in && tx->body.len && !milter_stream_hold(w, c) &&
	    (tx->body.len >= chunk_size(cf) || over) &&
	    (!spill_active(&c->sp) || spill_buf(&c->sp))) {
		if (!spill_active(&c->sp))
			err = c->s.cf->filters ? milter_stream_spill(w, c) : stream_open(w, c);
		if (err < 0) {
			if (err != -EAGAIN) /* (-EAGAIN: when the last segment is done) */
				smtp_session_body_fail(&c->s);
		} else {
			b = spill_buf(&c->sp);
			smtp_session_body_take(&c->s, b);
			spill_write(w, &c->sp, b);
		}
	}
	held_update(w, c);
	if (c->state == CONN_S_CLOSING)
		return;
	/* Content is read one receive buffer at a time (commands keep the
	 * multishot receive), so that a pause stops it at once instead of
	 * after the burst a multishot receive brings. */
	if (in)
		conn_meter(&w->ring, &c->rc, true);
	else if (c->s.state != SMTP_S_SPOOL)
		conn_meter(&w->ring, &c->rc, false);
	if (c->s.state == SMTP_S_SPOOL)
		pause = c->pending.len >= PENDING_PAUSE;
	else if (in)
		pause = tx->body.len >= chunk_size(cf) || w->data_held > w->data_cap ||
		        milter_stream_full(c);
	if (pause)
		input_pause(w, c);
	else
		input_resume(w, c);
}

void session_content_flow(struct worker *w, struct conn *c)
{
	content_flow(w, c);
}

/* A streamed write of <sp>'s session completed: its memory is free. */
static void on_spill_written(struct worker *w, struct spill *sp)
{
	struct conn *c = (struct conn *)((char *)sp - offsetof(struct conn, sp));

	content_flow(w, c);
	session_maybe_free(w, c);
}

void session_resume_some(struct worker *w)
{
	struct conn *c, *next;

	for (c = w->paused.head; c && w->data_held <= w->data_cap; c = next) {
		next = c->pause_next;
		content_flow(w, c);
	}
}

/* ---- connections ---- */

static const char *const conn_state_names[] = {"new", "open", "bye", "closing"};

void conn_set_state(struct conn *c, enum conn_state st)
{
	LOGD("session: client=[%s]:%u state %s -> %s", c->s.peer.addr, c->port,
	     conn_state_names[c->state], conn_state_names[st]);
	c->state = st;
}

static void conn_free(struct worker *w, struct conn *c)
{
	if (c->flags & C_CONNLOG)
		smtp_session_log_disconnect(&c->s);
	session_dns_free(w, c);
	stats_add_local(&w->st.closed[c->lidx][(c->s.flags & SMTP_F_TLS) ? 1 : 0], 1);
	w->rejected.unknown += c->s.counts.unknown;
	w->rejected.relay_denied += c->s.counts.relay_denied;
	w->rejected.routing += c->s.counts.routing;
	if (c->flags & C_ANVIL)
		anvil_disconnect(session_anvil(w), &c->s.peer.key, w->now);
	tables_unref(c->s.tables);
	input_resume(w, c); /* off the pause list */
	w->data_held -= c->held;
	conn_fini(&c->rc);
	tables_unref(c->tls_snap); /* after the TLS connection it kept the context for */
	c->tls_snap = NULL;
	smtp_session_fini(&c->s);
	spill_fini(&c->sp);
	buf_free(&c->pending);
	buf_free(&c->rec);
	buf_free(&c->rcvd);
	atomic_fetch_sub_explicit(&w->g->nsessions, 1, memory_order_relaxed);
	w->nconns--;
	c->free_next = w->free_conns;
	w->free_conns = c;
}

/* A conn still on the greeting or the dirty list is freed when it leaves
 * it: freed earlier, it could be reused by an accept in the same round
 * while the list still points at it (a dirty list that loops forever). */
void session_maybe_free(struct worker *w, struct conn *c)
{
	if (c->state == CONN_S_CLOSING && c->rc.inflight == 0 && spill_idle(&c->sp) &&
	    !(c->flags & (C_GREETQ | C_DELAYQ | C_DIRTY)))
		conn_free(w, c);
}

/* Starts closing: no more input is read; the conn is freed once its
 * in-flight operations (receive, send, record write) have completed. */
void session_close(struct worker *w, struct conn *c)
{
	if (c->state == CONN_S_CLOSING)
		return;
	conn_set_state(c, CONN_S_CLOSING);
	milter_session_end(w, c);
	verify_session_end(w, c);
	conn_close(&w->ring, &c->rc);
	live_unlink(w, c);
	stream_abort(w, c); /* a message cut off in its content never exists */
	session_maybe_free(w, c);
}

void session_bye(struct worker *w, struct conn *c)
{
	if (c->state >= CONN_S_BYE || (c->s.act & SMTP_ACT_CLOSE))
		return;
	conn_set_state(c, CONN_S_BYE);
	buf_reset(&c->pending, 0);
	smtp_session_shutdown(&c->s);
	session_mark_dirty(w, c);
}

/* Starts TLS on <c>: at accept on a --listen-tls listener, or after the
 * STARTTLS 220 (which must still leave in clear: RCONN_CLEARONE). */
static void tls_begin(struct worker *w, struct conn *c)
{
	struct tls_ctx *x = session_tls(w);
	struct tls_conn *t = x ? tls_conn_new(x) : NULL;

	if (!t) {
		LOGW("tls: client=[%s]:%u out of memory", c->s.peer.addr, c->port);
		c->rc.flags |= RCONN_HANGUP;
		return;
	}
	conn_start_tls(&c->rc, t);
	/* The context outlives the connection even if a reload replaces it. */
	c->tls_snap = w->tables ? tables_ref(w->tables) : NULL;
	if (c->s.act & SMTP_ACT_STARTTLS)
		c->rc.flags |= RCONN_CLEARONE;
	c->flags |= C_TLSHS;
	c->hs_deadline = w->now + (int64_t)session_conf(w)->tls_handshake_timeout * 1000;
}

static void tls_up(struct worker *w, struct conn *c)
{
	struct tls_conn *t = c->rc.tls;
	const char *sni = tls_conn_sni(t);

	c->flags &= ~C_TLSHS;
	LOGI("tls: client=[%s]:%u %s cipher=%s sni=%s%s", c->s.peer.addr, c->port,
	     tls_conn_version(t), tls_conn_cipher(t), sni ? sni : "-",
	     tls_conn_resumed(t) ? " resumed" : "");
	stats_add_local(&w->st.tls_ok[metrics_tls_version(tls_conn_version(t))], 1);
	smtp_session_tls_started(&c->s, tls_conn_version(t), tls_conn_cipher(t));
	if (c->state == CONN_S_NEW)
		session_greet(w, c); /* implicit TLS: the greeting comes after the handshake */
}

static void on_committed(struct worker *w, struct commit_rec *r, int err);

/* The message is complete: its record (envelope, Received: header, the
 * body as views into the session's buffers) goes to the committer; or,
 * when it streamed, its last content goes to its own segment (io/spill),
 * which seals it. */
void session_commit(struct worker *w, struct conn *c)
{
	time_t now = time(NULL);
	struct spool_env env;
	struct iovec body[2];
	bool filtered;
	int err = 0;

	c->flags |= C_QUEUED;
	c->rc.inflight++; /* until on_committed() */
	filtered = c->flags & C_MILTERED;
	c->flags &= ~C_MILTERED;
	if (spill_active(&c->sp)) {
		c->msg_size = c->rcvd.len + c->s.tx.body_taken + c->s.tx.body.len;
		c->cr = (struct commit_rec){
		    .iov = {{c->rec.p, c->rec.len}, {c->rcvd.p, c->rcvd.len}},
		    .niov = 2,
		    .done = on_committed,
		};
		spill_finish(w, &c->sp, &c->s.tx.body, &c->cr);
		return;
	}
	if (!filtered) /* else both are in the content already (io/milter) */
		commit_qid(w, c->qid, now);
	env = (struct spool_env){
	    .qid = c->qid,
	    .arrival = now,
	    .client = c->s.peer.addr,
	    .helo = c->s.helo,
	    .from = c->s.tx.from.len ? buf_cstr(&c->s.tx.from) : "", /* <> */
	    .rcpts = c->s.tx.rcpts.p,
	    .nrcpt = c->s.tx.nrcpt,
	    .body_8bit = c->s.tx.body_8bit,
	    .smtputf8 = c->s.tx.smtputf8,
	    .quarantine = c->quarantine,
	};
	if (!filtered)
		err = smtp_session_received(&c->s, &c->rcvd, c->qid, now);
	body[0] = (struct iovec){c->rcvd.p, c->rcvd.len};
	body[1] = (struct iovec){c->s.tx.body.p, c->s.tx.body.len};
	c->msg_size = c->rcvd.len + c->s.tx.body.len;
	buf_reset(&c->rec, OUT_KEEP); /* spool_rec_build() appends */
	if (!err)
		err = spool_rec_build(&c->rec, &env, body, 2);
	c->cr = (struct commit_rec){
	    .iov = {{c->rec.p, c->rec.len}, body[0], body[1]},
	    .niov = c->s.tx.body.len ? 3 : 2,
	    .err = err,
	    .done = on_committed,
	};
	commit_submit(w, &c->cr);
}

/* Feeds input to the session and acts on what it asks for. Bytes that
 * follow a complete message wait in c->pending until it is spooled. */
void session_feed(struct worker *w, struct conn *c, const char *p, size_t n)
{
	size_t used;

	if (c->state == CONN_S_CLOSING)
		return;
	c->s.storage_low = w->storage_low;
	c->s.now_ms = w->now;
	c->s.now_s = (int64_t)time(NULL); /* the verification cache's clock */
	c->s.overload = atomic_load_explicit(&w->g->overload, memory_order_relaxed);
	c->s.rate_remote = cluster_asks(w, CLUSTER_RATE_MSG) || cluster_asks(w, CLUSTER_RATE_RCPT);
	if (c->s.tables != w->tables && !smtp_session_in_tx(&c->s)) {
		/* Reloaded: the next transaction checks against the new tables. */
		tables_unref(c->s.tables);
		c->s.tables = w->tables ? tables_ref(w->tables) : NULL;
		c->s.cf = c->s.tables ? &c->s.tables->scf : &w->g->scf;
	}
	if (c->s.state == SMTP_S_SPOOL || c->pending.len ||
	    (c->s.act &
	     (SMTP_ACT_DELAY | SMTP_ACT_FILTER | SMTP_ACT_RATE | SMTP_ACT_DNS | SMTP_ACT_VERIFY))) {
		if (c->pending.len + n > PENDING_MAX || buf_append(&c->pending, p, n)) {
			session_close(w, c);
			return;
		}
		if (c->s.state == SMTP_S_SPOOL) {
			content_flow(w, c); /* pauses a client that pipelines too far ahead */
			return;
		}
		/* Fed when the delay is over, the filters answered or the verdict
		 * in; a replay (no new bytes) goes on to act on a delay the
		 * verdict brought. */
		if ((c->s.act & (SMTP_ACT_FILTER | SMTP_ACT_VERIFY)) ||
		    ((c->s.act & (SMTP_ACT_DELAY | SMTP_ACT_RATE | SMTP_ACT_DNS)) && n))
			return;
		/* Replay what waited, then nothing else is left over. */
		p = NULL;
		n = 0;
	}
	if (c->pending.len) {
		used = smtp_session_feed(&c->s, c->pending.p, c->pending.len);
		buf_consume(&c->pending, used);
	} else {
		used = smtp_session_feed(&c->s, p, n);
		if (used < n &&
		    (c->s.act & (SMTP_ACT_MSG_READY | SMTP_ACT_DELAY | SMTP_ACT_FILTER |
		                 SMTP_ACT_RATE | SMTP_ACT_DNS | SMTP_ACT_VERIFY)) &&
		    buf_append(&c->pending, p + used, n - used)) {
			session_close(w, c);
			return;
		}
	}
	if (c->s.act & SMTP_ACT_MSG_READY) {
		c->s.act &= ~SMTP_ACT_MSG_READY;
		if (!milter_message(w, c))
			session_commit(w, c);
	}
	if ((c->s.act & SMTP_ACT_FILTER) && !(c->flags & C_FILTER))
		milter_command(w, c); /* answered in a later completion: session_resume() */
	if (c->s.act & SMTP_ACT_STARTTLS) {
		/* RFC 3207 / CVE-2011-0411: whatever the client pipelined after
		 * STARTTLS is dropped, never answered after the handshake. */
		buf_reset(&c->pending, 0);
		tls_begin(w, c);
	}
	if ((c->s.act & SMTP_ACT_DELAY) && !(c->flags & C_DELAYQ))
		session_delay_start(w, c);
	session_dns_sender(w, c); /* SMTP_ACT_DNS: the sender domain's questions */
	if ((c->s.act & SMTP_ACT_VERIFY) && !(c->flags & C_VERIFYQ))
		verify_ask(w, c); /* answered in a later round (io/verify) */
	if ((c->s.act & SMTP_ACT_RATE) && !(c->flags & C_RATEQ))
		cluster_ask(w, c,
		            c->s.rate_kind == SMTP_RATE_MSG ? CLUSTER_RATE_MSG : CLUSTER_RATE_RCPT);
	if (c->s.act & SMTP_ACT_CLOSE)
		buf_reset(&c->pending, 0);
	else if (w->stopping && !smtp_session_in_tx(&c->s))
		session_bye(w, c);
	content_flow(w, c);
	session_mark_dirty(w, c);
}

/* The filters answered (io/milter): what waited is fed. */
void session_resume(struct worker *w, struct conn *c)
{
	if (c->state == CONN_S_CLOSING)
		return;
	c->last_active = w->now;
	if (c->pending.len) {
		session_feed(w, c, NULL, 0);
		return;
	}
	if (w->stopping && !smtp_session_in_tx(&c->s))
		session_bye(w, c);
	content_flow(w, c);
	session_mark_dirty(w, c);
}

/* Whether the client at <sa> is under the per-client limits, with its key. */
void session_limits_for(const struct worker *w, const struct sockaddr *sa, struct smtp_peer *peer)
{
	struct anvil *a = session_anvil(w);

	peer->limited = a && anvil_key_of(a, sa, &peer->key) == 0 &&
	                !policy_client_may_relay(&session_conf(w)->limits_exempt, sa);
}

/* Plaintext from the transport (io/conn); NULL: the TLS handshake is done. */
bool session_on_input(void *owner, const char *p, size_t n)
{
	struct conn *c = owner;

	if (c->flags & C_PROXYH)
		session_proxy_input(c->w, c, p, n);
	else if (!p)
		tls_up(c->w, c);
	else if (c->state == CONN_S_NEW)
		smtp_session_feed(&c->s, p, n); /* notes talk before the greeting */
	else
		session_feed(c->w, c, p, n);
	return c->state != CONN_S_CLOSING;
}

void session_greet(struct worker *w, struct conn *c)
{
	if (session_dns_holds_greet(c))
		return; /* greeted once the DNS answers are in (io/session_dns) */
	if (c->state == CONN_S_NEW)
		conn_set_state(c, CONN_S_OPEN);
	if (w->stopping)
		smtp_session_shutdown(&c->s);
	else
		smtp_session_greet(&c->s);
	session_mark_dirty(w, c);
}

void session_on_accept(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct listener *l = p;
	const struct gateway *g = w->g;
	struct sockaddr_storage ss = {0};
	socklen_t sl = sizeof(ss);
	struct smtp_peer peer = {0};
	struct conn *c;
	unsigned n;
	int one = 1;
	int fd = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		l->armed = 0;
	if (fd < 0) {
		if (fd != -ECANCELED)
			LOGW("worker %u: accept on %s: %s", w->id, l->cl->text, strerror(-fd));
		if (!l->armed && !w->stopping)
			w->rearm_accept = true; /* at the next tick: no busy loop on EMFILE */
		return;
	}
	if (w->stopping) {
		close(fd);
		return;
	}
	if (l->cl->proxy &&
	    (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	     !policy_client_may_relay(&session_conf(w)->proxy_nets, (struct sockaddr *)&ss))) {
		char a[64] = "unknown";

		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a, sizeof(a));
		else if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof(a));
		LOGW("proxy: connection from [%s] on %s, not in --proxy-networks: closed", a,
		     l->cl->text);
		close(fd);
		return;
	}
	sl = sizeof(ss);
	uint16_t port = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &sin->sin_addr, peer.addr, sizeof(peer.addr));
			port = ntohs(sin->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, peer.addr, sizeof(peer.addr));
			port = ntohs(s6->sin6_port);
		}
		peer.may_relay =
		    policy_client_may_relay(&session_conf(w)->policy, (struct sockaddr *)&ss);
		session_limits_for(w, (struct sockaddr *)&ss, &peer);
	} else {
		snprintf(peer.addr, sizeof(peer.addr), "unknown");
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	c = w->free_conns;
	if (c)
		w->free_conns = c->free_next;
	else
		c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	memset(c, 0, sizeof(*c));
	conn_init(&c->rc, fd, UD_RECV, UD_SEND);
	spill_init(&c->sp, on_spill_written, g->conf->data_buffer);
	c->w = w;
	c->port = port;
	c->lidx = (uint8_t)(l->cl - g->conf->listen);
	stats_add_local(&w->st.opened[c->lidx], 1);
	smtp_session_init(&c->s, w->tables ? &w->tables->scf : &g->scf, &peer);
	c->s.stats = &w->st.smtp;
	c->s.tables = w->tables ? tables_ref(w->tables) : NULL;
	w->nconns++;
	n = atomic_fetch_add_explicit(&w->g->nsessions, 1, memory_order_relaxed) + 1;
	c->last_active = w->now;
	live_append(w, c);
	if (!l->cl->proxy) { /* else once the PROXY header names the client */
		maillog_connect(peer.addr);
		c->flags |= C_CONNLOG;
	}
	if (n > session_conf(w)->max_sessions) {
		LOGW("reject: client=[%s]:%u too many sessions (%u)", peer.addr, port, n - 1);
		conn_set_state(c, CONN_S_OPEN);
		smtp_session_busy(&c->s);
		session_mark_dirty(w, c);
		return;
	}
	conn_arm_recv(&w->ring, &c->rc);
	if (l->cl->tls)
		c->flags |= C_ITLS;
	if (l->cl->proxy) {
		c->flags |= C_PROXYH; /* session_start() once the header is in */
		c->proxy_deadline = w->now + (int64_t)session_conf(w)->proxy_timeout * 1000;
		return;
	}
	session_start(w, c);
}

/* The connection is ready for SMTP: the TLS handshake of an implicit-TLS
 * listener, else the greeting (after --greet-delay). */
void session_start(struct worker *w, struct conn *c)
{
	if (c->s.peer.limited && !session_limit_start(w, c))
		return; /* refused, or waiting for the cluster's verdict */
	session_begin(w, c);
}

/* The limits are passed: the TLS handshake or the greeting. */
void session_begin(struct worker *w, struct conn *c)
{
	session_dns_start(w, c); /* the greeting waits for its answers */
	if (c->flags & C_ITLS) {
		tls_begin(w, c); /* greeted once the handshake is done */
		return;
	}
	if (session_conf(w)->greet_delay_ms == 0) {
		session_greet(w, c);
	} else {
		c->greet_at = w->now + session_conf(w)->greet_delay_ms;
		c->flags |= C_GREETQ;
		if (w->greet_tail)
			w->greet_tail->greet_next = c;
		else
			w->greet_head = c;
		w->greet_tail = c;
	}
}

void session_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct conn *c = p;
	int err;

	if (cqe->res > 0) {
		stats_add_local(&w->st.rx_bytes, (uint64_t)cqe->res);
		if (c->state != CONN_S_CLOSING)
			touch(w, c);
	}
	switch (conn_on_recv(&w->ring, &c->rc, cqe, session_on_input, c, &err)) {
	case CONN_RX_CLOSING:
		session_maybe_free(w, c);
		return;
	case CONN_RX_EOF:
		/* Peer closed or reset; a message being spooled still completes. */
		if (err < 0 && err != -ECANCELED)
			LOGD("worker %u: recv from [%s]: %s", w->id, c->s.peer.addr,
			     strerror(-err));
		session_close(w, c);
		return;
	case CONN_RX_XPRT:
		if (err == -ESHUTDOWN)
			LOGD("tls: client=[%s]:%u closed TLS", c->s.peer.addr, c->port);
		else
			LOGI("tls: client=[%s]:%u %s: %s", c->s.peer.addr, c->port,
			     c->flags & C_TLSHS ? "handshake failed" : "error",
			     tls_conn_error(c->rc.tls));
		if (c->flags & C_TLSHS) {
			c->flags &= ~C_TLSHS; /* counted once */
			stats_add_local(
			    &w->st.tls_fail[metrics_tls_version(tls_conn_protocol(c->rc.tls))], 1);
		}
		session_mark_dirty(w, c); /* send the alert, if any, then close */
		return;
	case CONN_RX_OK:
		if (c->rc.tls)
			session_mark_dirty(w, c); /* the handshake answers on its own */
		return;
	}
}

void session_flush(struct worker *w, struct conn *c)
{
	bool last = (c->s.act & SMTP_ACT_CLOSE) != 0;

	if ((c->rc.flags & RCONN_SEND) || c->state == CONN_S_CLOSING || (c->flags & C_DELAYQ))
		return; /* (held: the tarpit) */
	if (conn_flush(&w->ring, &c->rc, &c->s.out, last))
		return;
	if ((last || c->rc.flags & RCONN_HANGUP) && !(c->flags & C_QUEUED))
		session_close(w, c);
}

void session_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct conn *c = p;
	int res = conn_on_send(&w->ring, &c->rc, cqe);

	if (res == -ECANCELED) {
		session_maybe_free(w, c);
		return;
	}
	if (res < 0) {
		LOGD("worker %u: send to [%s]: %s", w->id, c->s.peer.addr, strerror(-res));
		session_close(w, c);
		return;
	}
	if (res == 0)
		session_flush(w, c);
}

/* The committer's answer for <c>'s message: 0 (durable: 250, and routed
 * to the worker that delivers it) or -errno (4xx). */
static void on_committed(struct worker *w, struct commit_rec *r, int err)
{
	struct conn *c = (struct conn *)((char *)r - offsetof(struct conn, cr));

	c->flags &= ~C_QUEUED;
	c->rc.inflight--;
	if (err == 0) {
		size_t it = 0;

		if (r->segno >= 0) /* a quarantined one: held by the relay (control_held()) */
			route_outbox_add(
			    w,
			    QDESC(r->segno, route_hash(smtp_tx_rcpt_next(&c->s.tx, &it)), r->off));
		/* Its content is all in tx.body unless it streamed. */
		maillog_accepted(c->qid, c->s.peer.addr,
		                 c->s.tx.body_taken ? (struct sv){0} : buf_sv(&c->s.tx.body),
		                 c->s.tx.from.len ? buf_cstr(&c->s.tx.from) : "", c->msg_size,
		                 c->s.tx.nrcpt);
		if (c->quarantine)
			LOGI("%s: quarantine: held: %s", c->qid, c->quarantine);
	} else {
		LOGW("spool: id=%s client=[%s] not accepted: %s", c->qid, c->s.peer.addr,
		     strerror(-err));
	}
	buf_reset(&c->rec, OUT_KEEP);
	buf_reset(&c->rcvd, OUT_KEEP);
	c->quarantine = NULL;
	if (c->state == CONN_S_CLOSING) {
		/* Client gone: the session only needs its transaction reset. */
		smtp_session_msg_result(&c->s, err, c->qid);
		held_update(w, c);
		session_maybe_free(w, c);
		return;
	}
	smtp_session_msg_result(&c->s, err, c->qid);
	session_resume(w, c); /* the pipelined commands that waited */
}

/* Overload mode (Postfix's stress mode): past --overload-threshold percent
 * of --max-sessions, idle sessions get --overload-idle-timeout and errors
 * --overload-max-errors, so that slow or clumsy clients make room. Any
 * worker notices the crossing at its tick; the one that flips the flag
 * logs it. */
static bool overload_check(struct worker *w)
{
	struct gateway *g = w->g;
	const struct conf *cf = session_conf(w);
	unsigned n = atomic_load_explicit(&g->nsessions, memory_order_relaxed);
	bool on = cf->overload_threshold &&
	          (uint64_t)n * 100 > (uint64_t)cf->overload_threshold * cf->max_sessions;
	bool was = atomic_load_explicit(&g->overload, memory_order_relaxed);

	if (on != was && atomic_compare_exchange_strong(&g->overload, &was, on))
		LOGW("overload: %u sessions, %s --overload-threshold %u%% of %u: %s", n,
		     on ? "over" : "back under", cf->overload_threshold, cf->max_sessions,
		     on ? "idle timeout and error limit tightened" : "normal limits again");
	return on;
}

void session_tick(struct worker *w)
{
	bool overload = overload_check(w);
	int64_t idle_ms = (int64_t)(overload ? session_conf(w)->overload_idle_timeout
	                                     : session_conf(w)->idle_timeout) *
	                  1000;
	struct conn *c, *next;

	session_delay_tick(w);
	struct anvil *a = session_anvil(w);

	if (a) {
		/* The workers share the sweep of idle clients: all of the table
		 * in about 8 ticks. */
		unsigned n = anvil_shards(a) / (8 * w->g->nworkers) + 1;

		anvil_sweep(a, w->anvil_next, n, w->now);
		w->anvil_next = (w->anvil_next + n * w->g->nworkers) % anvil_shards(a);
	}
	while ((c = w->greet_head) && c->greet_at <= w->now) {
		w->greet_head = c->greet_next;
		if (!w->greet_head)
			w->greet_tail = NULL;
		c->flags &= ~C_GREETQ;
		if (c->state == CONN_S_CLOSING)
			session_maybe_free(w, c);
		else
			session_greet(w, c);
	}
	for (c = w->live.head; c && c->last_active + idle_ms <= w->now; c = next) {
		next = c->next;
		if (c->flags & (C_QUEUED | C_PAUSED | C_DELAYQ | C_FILTER))
			continue; /* waiting for the disk, memory, the tarpit or a filter */
		LOGI("timeout: client=[%s]:%u after %llds idle%s", c->s.peer.addr, c->port,
		     (long long)(idle_ms / 1000), overload ? " (overload)" : "");
		live_unlink(w, c);
		live_append(w, c);
		c->last_active = w->now; /* the 421 gets its own idle period */
		if (c->state == CONN_S_BYE || (c->s.act & SMTP_ACT_CLOSE)) {
			session_close(w, c);
			continue;
		}
		conn_set_state(c, CONN_S_BYE);
		smtp_session_timeout(&c->s);
		session_mark_dirty(w, c);
	}
	if (w->g->nproxy) {
		for (c = w->live.head; c; c = next) {
			next = c->next;
			if ((c->flags & C_PROXYH) && c->proxy_deadline <= w->now) {
				LOGI("proxy: client=[%s]:%u no PROXY header in %us: closed",
				     c->s.peer.addr, c->port, session_conf(w)->proxy_timeout);
				session_close(w, c);
			}
		}
	}
	{
		for (c = w->live.head; c; c = next) {
			next = c->next;
			if ((c->flags & C_TLSHS) && c->hs_deadline <= w->now) {
				LOGI("tls: client=[%s]:%u handshake timeout after %us",
				     c->s.peer.addr, c->port,
				     session_conf(w)->tls_handshake_timeout);
				stats_add_local(&w->st.tls_fail[metrics_tls_version(
				                    tls_conn_protocol(c->rc.tls))],
				                1);
				c->flags &= ~C_TLSHS;
				session_close(w, c);
			}
		}
	}
	if (w->stopping && w->now >= w->grace_end) {
		for (c = w->live.head; c; c = c->next)
			if (!(c->flags & C_QUEUED))
				session_bye(w, c);
	}
}

void session_stop(struct worker *w)
{
	struct conn *c;

	for (c = w->live.head; c; c = c->next) {
		if (c->state == CONN_S_NEW)
			continue; /* greeted with 421 by the greeting timer */
		if (!smtp_session_in_tx(&c->s))
			session_bye(w, c);
	}
}

/* Frees the pooled conns of a stopped worker. */
void session_pool_free(struct worker *w)
{
	while (w->free_conns) {
		struct conn *c = w->free_conns;

		w->free_conns = c->free_next;
		free(c);
	}
}
