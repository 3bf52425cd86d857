/* worker: one thread per core driving SMTP sessions from io_uring
 * completions (liburing examples' shape: prepare SQEs, submit once, reap
 * CQEs in a batch, dispatch on the kind encoded in user_data).
 *
 * Per worker: a ring (SINGLE_ISSUER | DEFER_TASKRUN where the kernel has
 * them), one SO_REUSEPORT listener per --listen address with a multishot
 * accept, a provided buffer ring shared by the worker's multishot receives
 * (an idle session holds no receive buffer), one idle list ordered by last
 * activity (every session has the same idle timeout, so the list is a
 * timer wheel with one slot: O(1) updates, expiry from its head), and one
 * spool segment written with group commit: the messages that completed in
 * one round of completions are written with one writev each, linked to ONE
 * fdatasync, and their 250 replies leave only when that fdatasync is done.
 * While a batch is on the disk the next one gathers. */
#include "io/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "io/tls.h"
#include "queue/spool.h"

#include "io/worker-t.h"

static int64_t clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	if (!sqe) {
		/* Cannot happen with SUBMIT_ALL and a large CQ; broken invariant. */
		LOGE("worker %u: submission queue full", w->id);
		abort();
	}
	return sqe;
}

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

static void mark_dirty(struct worker *w, struct conn *c)
{
	if (c->flags & C_DIRTY)
		return;
	c->flags |= C_DIRTY;
	c->dirty_next = w->dirty;
	w->dirty = c;
}

/* ---- connections ---- */

static void arm_recv(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RX_BGID;
	io_uring_sqe_set_data64(sqe, UD(c, UD_RECV));
	c->flags |= C_RECV;
	c->inflight++;
}

static void conn_free(struct worker *w, struct conn *c)
{
	LOGI("disconnect: client=[%s]:%u worker=%u msgs=%u errors=%u", c->s.peer.addr, c->port,
	     w->id, c->s.nmsgs, c->s.nerrors);
	close(c->fd);
	smtp_session_fini(&c->s);
	buf_free(&c->sending);
	buf_free(&c->pending);
	buf_free(&c->rec);
	buf_free(&c->rcvd);
	tls_conn_free(c->tls);
	c->tls = NULL;
	atomic_fetch_sub_explicit(&w->g->nsessions, 1, memory_order_relaxed);
	w->nconns--;
	c->batch_next = w->free_conns;
	w->free_conns = c;
}

/* A conn still on the greeting or the dirty list is freed when it leaves
 * it: freed earlier, it could be reused by an accept in the same round
 * while the list still points at it (a dirty list that loops forever). */
static void conn_maybe_free(struct worker *w, struct conn *c)
{
	if ((c->flags & C_CLOSING) && c->inflight == 0 && !(c->flags & (C_GREETQ | C_DIRTY)))
		conn_free(w, c);
}

/* Starts closing: no more input is read; the conn is freed once its
 * in-flight operations (receive, send, record write) have completed. */
static void conn_close(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->flags & C_CLOSING)
		return;
	c->flags |= C_CLOSING;
	live_unlink(w, c);
	if (c->flags & C_RECV) {
		sqe = get_sqe(w);
		io_uring_prep_cancel64(sqe, UD(c, UD_RECV), 0);
		io_uring_sqe_set_data64(sqe, UD_NONE);
	}
	conn_maybe_free(w, c);
}

static void spool_enqueue(struct worker *w, struct conn *c)
{
	c->flags |= C_QUEUED;
	c->inflight++; /* until batch_answer() */
	c->batch_next = NULL;
	if (!w->batch_head && w->g->conf->commit_window_us)
		w->batch_since = clock_us(); /* read only with a commit window */
	if (w->batch_tail)
		w->batch_tail->batch_next = c;
	else
		w->batch_head = c;
	w->batch_tail = c;
}

static void say_bye(struct worker *w, struct conn *c)
{
	if (c->flags & (C_BYE | C_CLOSING) || (c->s.act & SMTP_ACT_CLOSE))
		return;
	c->flags |= C_BYE;
	buf_reset(&c->pending, 0);
	smtp_session_shutdown(&c->s);
	mark_dirty(w, c);
}

/* Starts TLS on <c>: at accept on a --listen-tls listener, or after the
 * STARTTLS 220 (which must still leave in clear: C_CLEAR). */
static void tls_begin(struct worker *w, struct conn *c)
{
	c->tls = tls_conn_new(w->g->tls);
	if (!c->tls) {
		LOGW("tls: client=[%s]:%u out of memory", c->s.peer.addr, c->port);
		c->flags |= C_HANGUP;
		return;
	}
	if (c->s.act & SMTP_ACT_STARTTLS)
		c->flags |= C_CLEAR;
	c->flags |= C_TLSHS;
	c->hs_deadline = w->now + (int64_t)w->g->conf->tls_handshake_timeout * 1000;
}

static void conn_greet(struct worker *w, struct conn *c);

static void tls_up(struct worker *w, struct conn *c)
{
	const char *sni = tls_conn_sni(c->tls);

	c->flags = (c->flags & ~C_TLSHS) | C_TLSUP;
	LOGI("tls: client=[%s]:%u %s cipher=%s sni=%s%s", c->s.peer.addr, c->port,
	     tls_conn_version(c->tls), tls_conn_cipher(c->tls), sni ? sni : "-",
	     tls_conn_resumed(c->tls) ? " resumed" : "");
	smtp_session_tls_started(&c->s, tls_conn_version(c->tls), tls_conn_cipher(c->tls));
	if (!(c->flags & C_GREETED))
		conn_greet(w, c); /* implicit TLS: the greeting comes after the handshake */
}

/* Feeds input to the session and acts on what it asks for. Bytes that
 * follow a complete message wait in c->pending until it is spooled. */
static void conn_feed(struct worker *w, struct conn *c, const char *p, size_t n)
{
	size_t used;

	if (c->flags & C_CLOSING)
		return;
	c->s.storage_low = w->storage_low;
	if (c->s.state == SMTP_S_SPOOL || c->pending.len) {
		if (c->pending.len + n > PENDING_MAX || buf_append(&c->pending, p, n)) {
			conn_close(w, c);
			return;
		}
		if (c->s.state == SMTP_S_SPOOL)
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
		if (used < n && (c->s.act & SMTP_ACT_MSG_READY) &&
		    buf_append(&c->pending, p + used, n - used)) {
			conn_close(w, c);
			return;
		}
	}
	if (c->s.act & SMTP_ACT_MSG_READY) {
		c->s.act &= ~SMTP_ACT_MSG_READY;
		spool_enqueue(w, c);
	}
	if (c->s.act & SMTP_ACT_STARTTLS) {
		/* RFC 3207 / CVE-2011-0411: whatever the client pipelined after
		 * STARTTLS is dropped, never answered after the handshake. */
		buf_reset(&c->pending, 0);
		tls_begin(w, c);
	}
	if (c->s.act & SMTP_ACT_CLOSE)
		buf_reset(&c->pending, 0);
	else if (w->stopping && !smtp_session_in_tx(&c->s))
		say_bye(w, c);
	mark_dirty(w, c);
}

/* Received bytes: clear text to the session, or ciphertext through TLS. */
static void conn_input(struct worker *w, struct conn *c, const char *p, size_t n)
{
	char plain[RX_BUF_SIZE];
	ssize_t r;

	if (c->flags & (C_CLOSING | C_HANGUP))
		return;
	if (!c->tls) {
		if (!(c->flags & C_GREETED))
			smtp_session_feed(&c->s, p, n); /* notes talk before the greeting */
		else
			conn_feed(w, c, p, n);
		return;
	}
	r = tls_conn_feed(c->tls, p, n);
	while (r >= 0) {
		r = tls_conn_read(c->tls, plain, sizeof(plain));
		if (!(c->flags & C_TLSUP) && tls_conn_established(c->tls))
			tls_up(w, c);
		if (r <= 0)
			break;
		conn_feed(w, c, plain, (size_t)r);
		if (c->flags & C_CLOSING)
			return;
	}
	if (r < 0) {
		if (r == -ESHUTDOWN)
			LOGD("tls: client=[%s]:%u closed TLS", c->s.peer.addr, c->port);
		else
			LOGI("tls: client=[%s]:%u %s: %s", c->s.peer.addr, c->port,
			     c->flags & C_TLSHS ? "handshake failed" : "error",
			     tls_conn_error(c->tls));
		c->flags |= C_HANGUP; /* send the alert, if any, then close */
	}
	mark_dirty(w, c);
}

static void conn_greet(struct worker *w, struct conn *c)
{
	c->flags |= C_GREETED;
	if (w->stopping)
		smtp_session_shutdown(&c->s);
	else
		smtp_session_greet(&c->s);
	mark_dirty(w, c);
}

static void on_accept(struct worker *w, struct listener *l, struct io_uring_cqe *cqe)
{
	const struct gateway *g = w->g;
	struct sockaddr_storage ss;
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
		peer.may_relay = policy_client_may_relay(&g->conf->policy, (struct sockaddr *)&ss);
	} else {
		snprintf(peer.addr, sizeof(peer.addr), "unknown");
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	c = w->free_conns;
	if (c)
		w->free_conns = c->batch_next;
	else
		c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	memset(c, 0, sizeof(*c));
	c->type = OBJ_CONN;
	c->w = w;
	c->fd = fd;
	c->port = port;
	smtp_session_init(&c->s, &g->scf, &peer);
	w->nconns++;
	n = atomic_fetch_add_explicit(&w->g->nsessions, 1, memory_order_relaxed) + 1;
	c->last_active = w->now;
	live_append(w, c);
	LOGI("connect: client=[%s]:%u worker=%u", peer.addr, port, w->id);
	if (n > g->conf->max_sessions) {
		LOGW("reject: client=[%s]:%u too many sessions (%u)", peer.addr, port, n - 1);
		c->flags |= C_GREETED;
		smtp_session_busy(&c->s);
		mark_dirty(w, c);
		return;
	}
	arm_recv(w, c);
	if (l->cl->tls) {
		tls_begin(w, c); /* greeted once the handshake is done */
		return;
	}
	if (g->conf->greet_delay_ms == 0) {
		conn_greet(w, c);
	} else {
		c->greet_at = w->now + g->conf->greet_delay_ms;
		c->flags |= C_GREETQ;
		if (w->greet_tail)
			w->greet_tail->greet_next = c;
		else
			w->greet_head = c;
		w->greet_tail = c;
	}
}

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	return get_sqe(w);
}

const char *worker_rx(struct worker *w, unsigned bid)
{
	return w->rx + (size_t)bid * RX_BUF_SIZE;
}

static void recycle_buf(struct worker *w, unsigned bid)
{
	io_uring_buf_ring_add(w->br, w->rx + (size_t)bid * RX_BUF_SIZE, RX_BUF_SIZE,
	                      (unsigned short)bid, io_uring_buf_ring_mask(RX_BUF_COUNT), 0);
	io_uring_buf_ring_advance(w->br, 1);
}

void worker_rx_recycle(struct worker *w, unsigned bid)
{
	recycle_buf(w, bid);
}

static void on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->flags &= ~C_RECV;
		c->inflight--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0 && !(c->flags & C_CLOSING)) {
			touch(w, c);
			conn_input(w, c, w->rx + (size_t)bid * RX_BUF_SIZE, (size_t)res);
		}
		recycle_buf(w, bid);
	}
	if (c->flags & C_CLOSING) {
		conn_maybe_free(w, c);
		return;
	}
	if (res == 0 || (res < 0 && res != -ENOBUFS)) {
		/* Peer closed or reset; a message being spooled still completes. */
		if (res < 0 && res != -ECANCELED)
			LOGD("worker %u: recv from [%s]: %s", w->id, c->s.peer.addr,
			     strerror(-res));
		conn_close(w, c);
		return;
	}
	if (!(c->flags & C_RECV))
		arm_recv(w, c); /* ENOBUFS or the kernel ended the multishot */
}

static void send_out(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe;
	struct buf t;

	if ((c->flags & C_SEND) || (c->flags & C_CLOSING))
		return;
	if (c->tls && !(c->flags & C_CLEAR)) {
		if (c->s.out.len && !(c->flags & C_HANGUP)) {
			if (tls_conn_write(c->tls, c->s.out.p, c->s.out.len) < 0)
				c->flags |= C_HANGUP;
			buf_reset(&c->s.out, OUT_KEEP);
		}
		if ((c->s.act & SMTP_ACT_CLOSE) && !(c->flags & C_HANGUP)) {
			tls_conn_shutdown(c->tls); /* close_notify after the last reply */
			c->flags |= C_HANGUP;
		}
		if (tls_conn_pending(c->tls) && tls_conn_take(c->tls, &c->sending) > 0) {
			sqe = get_sqe(w);
			io_uring_prep_send(sqe, c->fd, c->sending.p, c->sending.len, MSG_NOSIGNAL);
			io_uring_sqe_set_data64(sqe, UD(c, UD_SEND));
			c->flags |= C_SEND;
			c->inflight++;
			return;
		}
		if ((c->flags & C_HANGUP) && !(c->flags & (C_WRITE | C_QUEUED)))
			conn_close(w, c);
		return;
	}
	c->flags &= ~C_CLEAR; /* the STARTTLS 220 goes now; what follows is encrypted */
	if (c->s.out.len) {
		/* Swap: the session writes its next replies into the other buffer
		 * while the kernel reads this one. */
		t = c->sending;
		c->sending = c->s.out;
		c->s.out = t;
		c->s.out.len = 0;
		sqe = get_sqe(w);
		io_uring_prep_send(sqe, c->fd, c->sending.p, c->sending.len, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, UD(c, UD_SEND));
		c->flags |= C_SEND;
		c->inflight++;
		return;
	}
	if ((c->s.act & SMTP_ACT_CLOSE || c->flags & C_HANGUP) &&
	    !(c->flags & (C_WRITE | C_QUEUED)))
		conn_close(w, c);
}

static void on_send(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
	struct io_uring_sqe *sqe;

	c->inflight--;
	c->flags &= ~C_SEND;
	if (c->flags & C_CLOSING) {
		conn_maybe_free(w, c);
		return;
	}
	if (cqe->res < 0) {
		LOGD("worker %u: send to [%s]: %s", w->id, c->s.peer.addr, strerror(-cqe->res));
		conn_close(w, c);
		return;
	}
	if ((size_t)cqe->res < c->sending.len) {
		buf_consume(&c->sending, (size_t)cqe->res);
		sqe = get_sqe(w);
		io_uring_prep_send(sqe, c->fd, c->sending.p, c->sending.len, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, UD(c, UD_SEND));
		c->flags |= C_SEND;
		c->inflight++;
		return;
	}
	buf_reset(&c->sending, OUT_KEEP);
	send_out(w, c);
}

/* ---- spool: group commit ---- */

static int seg_open(struct worker *w)
{
	char name[96];
	int fd;

	if (w->seg_fd >= 0)
		close(w->seg_fd);
	w->seg_fd = -1;
	spool_seg_name(name, sizeof(name), w->g->start_id, w->id, ++w->seg_seq);
	fd = openat(w->g->spool_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	/* The new name must be durable before a record in it is acknowledged. */
	if (fsync(w->g->spool_dirfd) < 0) {
		int err = -errno;

		close(fd);
		unlinkat(w->g->spool_dirfd, name, 0);
		return err;
	}
	w->seg_fd = fd;
	w->seg_off = 0;
	w->seg_broken = false;
	{
		struct spool_seg_id id = {w->g->start_id, w->id, w->seg_seq};

		w->segno = segreg_add(&w->g->segs, &id);
		if (w->segno < 0)
			LOGE("worker %u: segment registry full: messages are not routed", w->id);
	}
	LOGD("worker %u: spool segment %s", w->id, name);
	return 0;
}

static void make_qid(struct worker *w, char *qid, time_t now)
{
	/* seconds | worker | counter: unique within a start (the counter starts
	 * at a random value so restarts in the same second differ). */
	snprintf(qid, SMTP_QID_MAX + 1, "%08X%02X%06X", (unsigned)now, w->id & 0xffu,
	         w->qid_ctr++ & 0xffffffu);
}

struct route {
	unsigned to;
	struct mq_item it;
};

static void msg_ring_wake(struct worker *w, unsigned to)
{
	struct worker *t = w->g->workers[to];
	int fd = atomic_load_explicit(&w->g->ring_fds[to], memory_order_acquire);
	struct io_uring_sqe *sqe;

	if (fd < 0)
		return; /* not up yet: it drains its rings before it first sleeps */
	sqe = get_sqe(w);
	io_uring_prep_msg_ring(sqe, fd, 0, UD(&t->mq_token, UD_WAKE), 0);
	io_uring_sqe_set_data64(sqe, UD_NONE);
	w->stat_wakes++;
}

/* Pushes <n> descriptors to worker <to>; what the ring cannot take waits in
 * the overflow list (the messages are safe in the spool meanwhile). */
static void route_push(struct worker *w, unsigned to, const struct mq_item *it, unsigned n)
{
	bool wake = false;
	unsigned k = mq_push(&w->g->mq, w->id, to, it, n, &wake);

	if (wake && to != w->id)
		msg_ring_wake(w, to);
	w->stat_routed += k;
	for (; k < n; k++) {
		struct route r = {to, it[k]};

		if (buf_append(&w->overflow, &r, sizeof(r)))
			LOGE("worker %u: out of memory routing a message (it stays in the spool)",
			     w->id);
	}
}

static void outbox_flush(struct worker *w)
{
	for (unsigned to = 0; to < w->g->nworkers; to++) {
		if (w->outn[to])
			route_push(w, to, w->outbox + (size_t)to * OUTBOX_MAX, w->outn[to]);
		w->outn[to] = 0;
	}
}

static void outbox_add(struct worker *w, struct mq_item it)
{
	unsigned to = (uint32_t)it.a % w->g->nworkers;

	w->outbox[(size_t)to * OUTBOX_MAX + w->outn[to]++] = it;
	if (w->outn[to] == OUTBOX_MAX) {
		route_push(w, to, w->outbox + (size_t)to * OUTBOX_MAX, OUTBOX_MAX);
		w->outn[to] = 0;
	}
}

/* Takes what other workers (and this one) routed here: the relay delivers
 * them; without --relay-to they are only held (they stay in the spool). */
static void mq_drain(struct worker *w)
{
	struct mq_item it[POP_MAX];
	unsigned n;

	while ((n = mq_pop(&w->g->mq, w->id, it, POP_MAX))) {
		w->stat_received += n;
		if (w->relay)
			relay_take(w, it, n);
		else if (buf_append(&w->held, it, n * sizeof(it[0])))
			LOGE("worker %u: out of memory holding descriptors", w->id);
	}
}

/* Retries what a full ring refused (and places the messages recovered at
 * start). Order between messages does not matter to delivery. A full ring
 * to this worker itself is drained on the spot; other full rings keep
 * their share for the next tick. */
static void overflow_retry(struct worker *w)
{
	struct route *r = (struct route *)w->overflow.p;
	size_t n = w->overflow.len / sizeof(*r);
	struct buf again = BUF_INIT;

	if (!n)
		return;
	w->overflow = again;
	for (size_t i = 0; i < n; i++) {
		bool wake = false;

		if (r[i].to != w->id) {
			route_push(w, r[i].to, &r[i].it, 1);
			continue;
		}
		if (!mq_push(&w->g->mq, w->id, w->id, &r[i].it, 1, &wake)) {
			mq_drain(w);
			if (!mq_push(&w->g->mq, w->id, w->id, &r[i].it, 1, &wake)) {
				route_push(w, w->id, &r[i].it, 1); /* keeps it for later */
				continue;
			}
		}
		w->stat_routed++;
	}
	free(r);
}

static void batch_answer(struct worker *w, struct conn *c, int err)
{
	c->flags &= ~(C_WRITE | C_QUEUED);
	c->inflight--;
	if (err == 0) {
		size_t it = 0;

		if (w->segno >= 0)
			outbox_add(w, QDESC(w->segno, route_hash(smtp_tx_rcpt_next(&c->s.tx, &it)),
			                    c->rec_off));
		LOGI("queued: id=%s size=%zu from=<%s> nrcpt=%u client=[%s]", c->qid,
		     c->rcvd.len + c->s.tx.body.len,
		     c->s.tx.from.len ? buf_cstr(&c->s.tx.from) : "", c->s.tx.nrcpt,
		     c->s.peer.addr);
	} else {
		LOGW("spool: id=%s client=[%s] not accepted: %s", c->qid, c->s.peer.addr,
		     strerror(-err));
	}
	buf_reset(&c->rec, OUT_KEEP);
	buf_reset(&c->rcvd, OUT_KEEP);
	if (c->flags & C_CLOSING) {
		/* Client gone: the session only needs its transaction reset. */
		smtp_session_msg_result(&c->s, err, c->qid);
		conn_maybe_free(w, c);
		return;
	}
	smtp_session_msg_result(&c->s, err, c->qid);
	if (c->pending.len)
		conn_feed(w, c, NULL, 0); /* pipelined commands that waited */
	else if (w->stopping && !smtp_session_in_tx(&c->s))
		say_bye(w, c);
	mark_dirty(w, c);
}

/* Bounces go to a segment of their own per worker ("worker" number + 128
 * in its name), written synchronously with their own fdatasync: never
 * interleaved with a group-commit batch, so they can never sit behind a
 * torn record of one. They are rare. */
int worker_spool_local(struct worker *w, const char *rcpt, struct sv body, bool body_8bit,
                       bool smtputf8)
{
	struct buf rec = BUF_INIT;
	char qid[SMTP_QID_MAX + 1], name[96];
	time_t now = time(NULL);
	struct iovec iov[2];
	struct spool_env env;
	ssize_t k;
	int err;

	if (w->lseg_fd < 0) {
		struct spool_seg_id id = {w->g->start_id, w->id + 128, 1};

		spool_seg_name(name, sizeof(name), id.start, id.worker, id.seq);
		w->lseg_fd = openat(w->g->spool_dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
		if (w->lseg_fd < 0)
			return -errno;
		fsync(w->g->spool_dirfd);
		w->lsegno = segreg_add(&w->g->segs, &id);
		w->lseg_off = 0;
	}
	if (w->lsegno < 0)
		return -ENOSPC;
	make_qid(w, qid, now);
	env = (struct spool_env){
	    .qid = qid,
	    .arrival = now,
	    .client = "",
	    .helo = w->g->conf->hostname,
	    .from = "",
	    .rcpts = rcpt,
	    .nrcpt = 1,
	    .body_8bit = body_8bit,
	    .smtputf8 = smtputf8,
	};
	iov[1] = (struct iovec){(void *)body.p, body.len};
	err = spool_rec_build(&rec, &env, &iov[1], 1);
	if (err)
		goto out;
	iov[0] = (struct iovec){rec.p, rec.len};
	k = pwritev(w->lseg_fd, iov, 2, (off_t)w->lseg_off);
	if (k != (ssize_t)(rec.len + body.len) || fdatasync(w->lseg_fd) < 0) {
		err = k < 0 ? -errno : -EIO;
		/* A new file for the next one: nothing behind a torn record. */
		close(w->lseg_fd);
		w->lseg_fd = -1;
		goto out;
	}
	LOGI("queued: id=%s size=%zu from=<> nrcpt=1 client=[local] (bounce)", qid, body.len);
	outbox_add(w, QDESC(w->lsegno, route_hash(rcpt), w->lseg_off));
	outbox_flush(w);
	w->lseg_off += rec.len + body.len;
out:
	buf_free(&rec);
	return err;
}

/* Submits the gathered messages: one writev each, linked in order, and one
 * fdatasync at the end of the chain. Runs once per round, and only when no
 * batch is on the disk, so a failed write never leaves a hole that a later,
 * acknowledged record would sit behind. */
static void spool_flush(struct worker *w)
{
	struct io_uring_sqe *sqe;
	struct conn *c, *last = NULL;
	time_t now;
	unsigned n = 0, room;
	int err;

	if (w->flight || !w->batch_head)
		return;
	if (w->g->conf->commit_window_us && !w->stopping) {
		/* Group-commit window: give other sessions a moment to finish
		 * their messages so that one fdatasync covers them too. */
		int64_t wait = w->batch_since + w->g->conf->commit_window_us - clock_us();

		if (wait > 0) {
			if (!w->window_armed) {
				sqe = get_sqe(w);
				w->window_ts.tv_sec = wait / 1000000;
				w->window_ts.tv_nsec = (wait % 1000000) * 1000;
				io_uring_prep_timeout(sqe, &w->window_ts, 0, 0);
				io_uring_sqe_set_data64(sqe, UD(&w->window_ts, UD_TIMER));
				w->window_armed = true;
			}
			return;
		}
	}
	if (w->seg_fd < 0 || w->seg_broken || w->seg_off >= w->g->conf->segment_size) {
		err = seg_open(w);
		if (err) {
			LOGE("worker %u: cannot open a spool segment: %s", w->id, strerror(-err));
			while ((c = w->batch_head)) {
				w->batch_head = c->batch_next;
				batch_answer(w, c, err);
			}
			w->batch_tail = NULL;
			return;
		}
	}
	room = io_uring_sq_space_left(&w->ring);
	if (room < 8) {
		io_uring_submit(&w->ring);
		room = io_uring_sq_space_left(&w->ring);
	}
	room = room > BATCH_MAX + 1 ? BATCH_MAX + 1 : room;
	now = time(NULL);
	while ((c = w->batch_head) && n + 1 < room) {
		struct spool_env env;
		struct iovec body[2];
		size_t total;

		w->batch_head = c->batch_next;
		if (!w->batch_head)
			w->batch_tail = NULL;
		make_qid(w, c->qid, now);
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
		};
		err = smtp_session_received(&c->s, &c->rcvd, c->qid, now);
		body[0] = (struct iovec){c->rcvd.p, c->rcvd.len};
		body[1] = (struct iovec){c->s.tx.body.p, c->s.tx.body.len};
		if (!err)
			err = spool_rec_build(&c->rec, &env, body, 2);
		if (err) {
			batch_answer(w, c, err);
			continue;
		}
		c->rec_off = w->seg_off;
		c->iov[0] = (struct iovec){c->rec.p, c->rec.len};
		c->iov[1] = body[0];
		c->iov[2] = body[1];
		total = c->rec.len + c->rcvd.len + c->s.tx.body.len;
		c->spool_err = -ECANCELED;
		c->flags |= C_WRITE;
		sqe = get_sqe(w);
		io_uring_prep_writev(sqe, w->seg_fd, c->iov, c->s.tx.body.len ? 3 : 2, w->seg_off);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, UD(c, UD_WRITE));
		w->seg_off += total;
		c->batch_next = NULL;
		if (last)
			last->batch_next = c;
		else
			w->flight = c;
		last = c;
		n++;
	}
	if (!n)
		return;
	w->nflight = n;
	sqe = get_sqe(w);
	if (w->g->conf->durability_none)
		io_uring_prep_nop(sqe); /* --durability none: benchmarks only */
	else
		io_uring_prep_fsync(sqe, w->seg_fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data64(sqe, UD(w, UD_SYNC));
}

static void on_write(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
	size_t want = c->iov[0].iov_len + c->iov[1].iov_len + c->iov[2].iov_len;

	if (cqe->res >= 0 && (size_t)cqe->res == want) {
		c->spool_err = 0;
		return;
	}
	/* A short write means the disk filled up. */
	c->spool_err = cqe->res < 0 ? cqe->res : -ENOSPC;
	if (cqe->res != -ECANCELED && !w->flight_err)
		w->flight_err = c->spool_err;
	if (c->spool_err == -ENOSPC || c->spool_err == -EDQUOT)
		w->storage_low = true; /* until the next free-space check says otherwise */
	if (cqe->res != -ECANCELED)
		LOGW("worker %u: spool write: %s", w->id, strerror(-c->spool_err));
	w->seg_broken = true;
}

static void on_sync(struct worker *w, struct io_uring_cqe *cqe)
{
	struct conn *c, *next;
	int err = cqe->res;

	if (err < 0) {
		if (err != -ECANCELED)
			LOGE("worker %u: spool fdatasync: %s", w->id, strerror(-err));
		w->seg_broken = true;
	}
	LOGD("worker %u: group commit of %u messages", w->id, w->nflight);
	w->stat_commits++;
	w->stat_msgs += w->nflight;
	if (w->nflight > w->stat_max_batch)
		w->stat_max_batch = w->nflight;
	for (c = w->flight; c; c = next) {
		int e = c->spool_err;

		next = c->batch_next;
		if (e == 0 && err < 0)
			e = err; /* written but not known durable */
		/* A write cancelled behind a failed one failed for the same reason. */
		if (e == -ECANCELED)
			e = w->flight_err ? w->flight_err : -EIO;
		batch_answer(w, c, e);
	}
	w->flight = NULL;
	w->nflight = 0;
	w->flight_err = 0;
	outbox_flush(w);
}

/* ---- timers and shutdown ---- */

static void arm_timer(struct worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	int64_t ms = TICK_MS;

	if (w->greet_head) {
		int64_t d = w->greet_head->greet_at - w->now;

		if (d < ms)
			ms = d < 1 ? 1 : d;
	}
	w->tick_ts.tv_sec = ms / 1000;
	w->tick_ts.tv_nsec = (ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, UD(w, UD_TIMER));
}

static void arm_accept(struct worker *w)
{
	for (unsigned i = 0; i < w->nlst; i++) {
		struct listener *l = &w->lst[i];
		struct io_uring_sqe *sqe;

		if (l->armed || l->fd < 0)
			continue;
		sqe = get_sqe(w);
		io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
		io_uring_sqe_set_data64(sqe, UD(l, UD_ACCEPT));
		l->armed = 1;
	}
}

static void check_storage(struct worker *w)
{
	struct statvfs sv;
	bool low;

	if (fstatvfs(w->g->spool_dirfd, &sv) != 0)
		return;
	low = (uint64_t)sv.f_bavail * sv.f_frsize < w->g->conf->spool_min_free;
	if (low != w->storage_low)
		LOGW("worker %u: spool free space %s --spool-min-free (%llu bytes free): %s", w->id,
		     low ? "below" : "back above", (unsigned long long)sv.f_bavail * sv.f_frsize,
		     low ? "MAIL gets 452 4.3.1" : "accepting mail again");
	w->storage_low = low;
}

static void on_timer(struct worker *w)
{
	int64_t idle_ms = (int64_t)w->g->conf->idle_timeout * 1000;
	struct conn *c, *next;

	check_storage(w);
	overflow_retry(w);
	relay_tick(w);

	while ((c = w->greet_head) && c->greet_at <= w->now) {
		w->greet_head = c->greet_next;
		if (!w->greet_head)
			w->greet_tail = NULL;
		c->flags &= ~C_GREETQ;
		if (c->flags & C_CLOSING)
			conn_maybe_free(w, c);
		else
			conn_greet(w, c);
	}
	for (c = w->live.head; c && c->last_active + idle_ms <= w->now; c = next) {
		next = c->next;
		if (c->flags & (C_WRITE | C_QUEUED))
			continue; /* waiting for the disk, not for the client */
		LOGI("timeout: client=[%s]:%u after %us idle", c->s.peer.addr, c->port,
		     w->g->conf->idle_timeout);
		live_unlink(w, c);
		live_append(w, c);
		c->last_active = w->now; /* the 421 gets its own idle period */
		if (c->flags & C_BYE || (c->s.act & SMTP_ACT_CLOSE)) {
			conn_close(w, c);
			continue;
		}
		c->flags |= C_BYE;
		smtp_session_timeout(&c->s);
		mark_dirty(w, c);
	}
	if (w->g->tls) {
		for (c = w->live.head; c; c = next) {
			next = c->next;
			if ((c->flags & C_TLSHS) && c->hs_deadline <= w->now) {
				LOGI("tls: client=[%s]:%u handshake timeout after %us",
				     c->s.peer.addr, c->port, w->g->conf->tls_handshake_timeout);
				conn_close(w, c);
			}
		}
	}
	if (w->stopping && w->now >= w->grace_end) {
		relay_stop(w, true);
		for (c = w->live.head; c; c = c->next)
			if (!(c->flags & (C_WRITE | C_QUEUED)))
				say_bye(w, c);
	}
	if (w->rearm_accept && !w->stopping) {
		w->rearm_accept = false;
		arm_accept(w);
	}
	arm_timer(w);
}

static void begin_stop(struct worker *w)
{
	struct conn *c;

	if (w->stopping)
		return;
	w->stopping = true;
	w->grace_end = w->now + (int64_t)w->g->conf->grace * 1000;
	for (unsigned i = 0; i < w->nlst; i++) {
		struct io_uring_sqe *sqe;

		if (w->lst[i].armed) {
			sqe = get_sqe(w);
			io_uring_prep_cancel64(sqe, UD(&w->lst[i], UD_ACCEPT), 0);
			io_uring_sqe_set_data64(sqe, UD_NONE);
		}
	}
	for (c = w->live.head; c; c = c->next) {
		if (!(c->flags & C_GREETED))
			continue; /* greeted with 421 by the greeting timer */
		if (!smtp_session_in_tx(&c->s))
			say_bye(w, c);
	}
	relay_stop(w, false);
	LOGI("worker %u: stopping, %u sessions open", w->id, w->nconns);
}

static void arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_read(sqe, w->wakefd, &w->wakeval, sizeof(w->wakeval), 0);
	io_uring_sqe_set_data64(sqe, UD(w, UD_WAKE));
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	void *p = UD_PTR(ud);

	switch (UD_KIND(ud)) {
	case UD_NONE:
		break;
	case UD_ACCEPT:
		on_accept(w, p, cqe);
		break;
	case UD_RECV:
		if (*(const uint8_t *)p == OBJ_RELAY)
			relay_on_recv(w, p, cqe);
		else
			on_recv(w, p, cqe);
		break;
	case UD_SEND:
		if (*(const uint8_t *)p == OBJ_RELAY)
			relay_on_send(w, p, cqe);
		else
			on_send(w, p, cqe);
		break;
	case UD_WRITE:
		on_write(w, p, cqe);
		break;
	case UD_SYNC:
		on_sync(w, cqe);
		break;
	case UD_TIMER:
		if (p == &w->window_ts)
			w->window_armed = false; /* spool_flush() at the end of the round */
		else
			on_timer(w);
		break;
	case UD_WAKE:
		if (p == &w->mq_token)
			break; /* IORING_OP_MSG_RING from a producer; mq_drain() runs below */
		/* The eventfd: stop, or flush the deferred messages (SIGUSR1). */
		if (atomic_load(&w->g->stop)) {
			begin_stop(w);
			break;
		}
		if (atomic_load(&w->g->drop_gen) != w->drop_gen) {
			struct buf ids = BUF_INIT;

			w->drop_gen = atomic_load(&w->g->drop_gen);
			pthread_mutex_lock(&w->g->drop_mu);
			buf_append(&ids, w->g->drop.p, w->g->drop.len);
			pthread_mutex_unlock(&w->g->drop_mu);
			for (size_t o = 0; o < ids.len; o += strlen(ids.p + o) + 1)
				relay_drop(w, ids.p + o);
			buf_free(&ids);
		}
		if (atomic_load(&w->g->flush_gen) != w->flush_gen) {
			w->flush_gen = atomic_load(&w->g->flush_gen);
			LOGI("worker %u: retrying deferred messages now", w->id);
			relay_flush(w);
		}
		arm_wake(w);
		break;
	}
}

/* ---- set-up ---- */

static int listen_on(const struct conf_listen *cl)
{
	int fd, one = 1;

	fd = socket(cl->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (cl->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cl->addr, cl->addrlen) < 0)
		goto fail;
	if (listen(fd, 4096) < 0)
		goto fail;
	return fd;
fail:
	one = -errno;
	close(fd);
	return one;
}

/* SO_REUSEPORT lets any process of the same user bind the port too, and
 * the kernel would then split connections between the two. Before the
 * workers bind, a probe without SO_REUSEPORT fails if anything holds the
 * address already, so a second gateway (or an MTA) is refused at start. */
static int listen_probe(const struct conf_listen *cl)
{
	int fd, one = 1, err = 0;

	fd = socket(cl->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (cl->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cl->addr, cl->addrlen) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int ring_setup(struct worker *w)
{
	static const unsigned flagsets[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_SUBMIT_ALL,
	    0,
	};
	int err = -EINVAL;

	for (unsigned i = 0; i < sizeof(flagsets) / sizeof(flagsets[0]); i++) {
		struct io_uring_params p = {0};

		p.flags = flagsets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = RING_ENTRIES * 4;
		err = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
		if (err == 0) {
			if (w->id == 0)
				LOGI("io_uring flags 0x%x%s", p.flags,
				     i ? " (kernel lacks SINGLE_ISSUER/DEFER_TASKRUN)" : "");
			return 0;
		}
		if (err != -EINVAL)
			break;
	}
	return err;
}

static int bufring_setup(struct worker *w)
{
	struct io_uring_buf_reg reg = {0};
	size_t rsz = RX_BUF_COUNT * sizeof(struct io_uring_buf);
	int err;

	w->br = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (w->br == MAP_FAILED) {
		w->br = NULL;
		return -errno;
	}
	w->rx = mmap(NULL, (size_t)RX_BUF_COUNT * RX_BUF_SIZE, PROT_READ | PROT_WRITE,
	             MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (w->rx == MAP_FAILED) {
		w->rx = NULL;
		return -errno;
	}
	io_uring_buf_ring_init(w->br);
	reg.ring_addr = (uint64_t)(uintptr_t)w->br;
	reg.ring_entries = RX_BUF_COUNT;
	reg.bgid = RX_BGID;
	err = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (err)
		return err;
	for (unsigned i = 0; i < RX_BUF_COUNT; i++)
		io_uring_buf_ring_add(w->br, w->rx + (size_t)i * RX_BUF_SIZE, RX_BUF_SIZE,
		                      (unsigned short)i, io_uring_buf_ring_mask(RX_BUF_COUNT),
		                      (int)i);
	io_uring_buf_ring_advance(w->br, RX_BUF_COUNT);
	return 0;
}

static void worker_signal_ready(struct worker *w, int res)
{
	pthread_mutex_lock(&w->ready_mu);
	w->ready = res;
	pthread_cond_signal(&w->ready_cv);
	pthread_mutex_unlock(&w->ready_mu);
}

static bool worker_done(const struct worker *w)
{
	if (!w->stopping || w->nconns || w->flight || w->batch_head || relay_busy(w))
		return false;
	for (unsigned i = 0; i < w->nlst; i++)
		if (w->lst[i].armed)
			return false;
	return true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct conf *cf = w->g->conf;
	int err;

	err = ring_setup(w);
	if (err) {
		LOGE("worker %u: io_uring set-up: %s", w->id, strerror(-err));
		worker_signal_ready(w, err);
		return NULL;
	}
	err = bufring_setup(w);
	if (err) {
		LOGE("worker %u: provided buffer ring: %s", w->id, strerror(-err));
		worker_signal_ready(w, err);
		return NULL;
	}
	w->nlst = cf->nlisten;
	w->lst = calloc(w->nlst, sizeof(*w->lst));
	for (unsigned i = 0; i < w->nlst; i++) {
		w->lst[i].w = w;
		w->lst[i].cl = &cf->listen[i];
		w->lst[i].fd = w->g->lfds[w->id * cf->nlisten + i];
		w->g->lfds[w->id * cf->nlisten + i] = -1; /* the worker closes it */
	}
	w->now = clock_ms();
	check_storage(w);
	err = relay_init(w);
	if (err) {
		LOGE("worker %u: relay: %s", w->id, strerror(-err));
		worker_signal_ready(w, err);
		return NULL;
	}
	arm_accept(w);
	arm_wake(w);
	arm_timer(w);
	io_uring_submit(&w->ring);
	worker_signal_ready(w, 1);

	atomic_store_explicit(&w->g->ring_fds[w->id], w->ring.ring_fd, memory_order_release);
	overflow_retry(w); /* messages recovered at start are routed from here */
	while (!worker_done(w)) {
		struct io_uring_cqe *cqe;
		struct conn *c;
		unsigned head, n = 0;
		bool sleep;

		/* Sleep only if no ring into this worker holds descriptors; a
		 * producer that finds us announced wakes us with MSG_RING. */
		sleep = mq_prepare_sleep(&w->g->mq, w->id);
		err = sleep ? io_uring_submit_and_wait(&w->ring, 1) : io_uring_submit(&w->ring);
		if (sleep)
			mq_end_sleep(&w->g->mq, w->id);
		if (err < 0 && err != -EINTR && err != -EAGAIN && err != -EBUSY) {
			LOGE("worker %u: io_uring_enter: %s", w->id, strerror(-err));
			break;
		}
		w->now = clock_ms();
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		mq_drain(w);
		/* End of the round: one group commit, one send per session. */
		spool_flush(w);
		relay_round(w);
		while ((c = w->dirty)) {
			w->dirty = c->dirty_next;
			c->flags &= ~C_DIRTY;
			if (c->flags & C_CLOSING)
				conn_maybe_free(w, c);
			else
				send_out(w, c);
		}
	}
	for (unsigned i = 0; i < w->nlst; i++)
		if (w->lst[i].fd >= 0)
			close(w->lst[i].fd);
	relay_fini(w);
	if (w->seg_fd >= 0)
		close(w->seg_fd);
	if (w->lseg_fd >= 0)
		close(w->lseg_fd);
	io_uring_queue_exit(&w->ring);
	LOGI(
	    "worker %u: stopped; %llu messages in %llu group commits (%.1f per fdatasync, at most "
	    "%llu); queue: %llu routed, %llu received, %llu held for delivery, %llu wake-ups sent, "
	    "%zu waiting for ring space",
	    w->id, (unsigned long long)w->stat_msgs, (unsigned long long)w->stat_commits,
	    w->stat_commits ? (double)w->stat_msgs / (double)w->stat_commits : 0.0,
	    (unsigned long long)w->stat_max_batch, (unsigned long long)w->stat_routed,
	    (unsigned long long)w->stat_received,
	    (unsigned long long)(w->held.len / sizeof(struct mq_item)),
	    (unsigned long long)w->stat_wakes, w->overflow.len / sizeof(struct route));
	return NULL;
}

/* ---- the gateway ---- */

/* --user: the sockets are bound (a port under 1024 needs root), now give
 * root up for good: the spool directory is handed to the user, and nothing
 * the process does afterwards (sessions, spool, relay) runs as root. */
static int drop_privileges(const char *user, const char *dir)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		LOGE("--user %s: no such user", user);
		return -ENOENT;
	}
	if ((mkdir(dir, 0750) < 0 && errno != EEXIST) || chown(dir, pw->pw_uid, pw->pw_gid) < 0) {
		LOGE("--user %s: spool directory %s: %s", user, dir, strerror(errno));
		return -errno;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		LOGE("--user %s: %s", user, strerror(errno));
		return -errno;
	}
	if (setuid(0) == 0 || getuid() != pw->pw_uid) {
		LOGE("--user %s: root could not be given up", user);
		return -EPERM;
	}
	LOGI("running as %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

static int spool_prepare(struct gateway *g)
{
	const char *dir = g->conf->spool;

	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return -errno;
	g->spool_dirfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (g->spool_dirfd < 0)
		return -errno;
	return 0;
}

/* Recovery visitor: a message that survived a previous run, not yet done:
 * registered and routed to its owner when the workers start. */
static int on_recovered(void *arg, const struct spool_msg *m)
{
	struct gateway *g = arg;

	const char *rcpt = m->nrcpt ? m->rcpts : "";
	int segno;

	LOGD("recovered %s from %s at %llu", m->qid, m->segment, (unsigned long long)m->offset);
	if (!g->segs.n || memcmp(&g->recov_seg, &m->seg, sizeof(m->seg)) != 0) {
		segno = segreg_add(&g->segs, &m->seg);
		if (segno < 0)
			return 0; /* stays in the spool; routed after a restart */
		g->recov_seg = m->seg;
		g->recov_last_seg = (unsigned)segno;
	}
	struct mq_item d = QDESC(g->recov_last_seg, route_hash(rcpt), m->offset);
	return buf_append(&g->recov, &d, sizeof(d)) ? -ENOMEM : 0;
}

int gateway_run(struct gateway *g)
{
	struct spool_recovery rec;
	const struct conf *cf = g->conf;
	struct timespec ts;
	sigset_t set;
	int sig, err, rc = 0;
	unsigned started = 0;

	for (unsigned i = 0; i < cf->nlisten; i++) {
		/* A gateway killed a moment ago may hold the port for a few
		 * milliseconds more while its ring is torn down. */
		for (int tries = 0;
		     (err = listen_probe(&cf->listen[i])) == -EADDRINUSE && tries < 20; tries++)
			usleep(50000);
		if (err) {
			LOGE("listen on %s: %s%s", cf->listen[i].text, strerror(-err),
			     err == -EADDRINUSE ? " (another process holds it)" : "");
			return 1;
		}
	}
	/* Every worker's SO_REUSEPORT socket per address, bound here, before
	 * root is given up. */
	g->lfds = calloc((size_t)g->nworkers * cf->nlisten, sizeof(*g->lfds));
	if (!g->lfds)
		return 1;
	for (unsigned i = 0; i < g->nworkers * cf->nlisten; i++) {
		g->lfds[i] = listen_on(&cf->listen[i % cf->nlisten]);
		if (g->lfds[i] < 0) {
			LOGE("listen on %s: %s", cf->listen[i % cf->nlisten].text,
			     strerror(-g->lfds[i]));
			return 1;
		}
	}
	if (cf->user) {
		if (drop_privileges(cf->user, cf->spool))
			return 1;
	} else if (geteuid() == 0) {
		LOGW("running as root: give --user to run the gateway as an unprivileged user");
	}
	err = spool_prepare(g);
	if (err) {
		LOGE("spool directory %s: %s", cf->spool, strerror(-err));
		return 1;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	g->start_id = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	pthread_mutex_init(&g->segs.mu, NULL);
	for (unsigned i = 0; i < sizeof(g->ring_fds) / sizeof(g->ring_fds[0]); i++)
		atomic_init(&g->ring_fds[i], -1);
	err = mq_init(&g->mq, g->nworkers, cf->queue_capacity);
	if (err) {
		LOGE("message queue: %s", strerror(-err));
		return 1;
	}
	err = spool_recover(cf->spool, g->start_id, on_recovered, g, &rec);
	if (err) {
		LOGE("spool recovery in %s: %s", cf->spool, strerror(-err));
		return 1;
	}

	/* Workers inherit this mask: only the main thread takes the signals. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_mutex_init(&g->drop_mu, NULL);
	signal(SIGPIPE, SIG_IGN);

	g->workers = calloc(g->nworkers, sizeof(*g->workers));
	for (unsigned i = 0; i < g->nworkers; i++) {
		struct worker *w = calloc(1, sizeof(*w));

		g->workers[i] = w;
		w->g = g;
		w->id = i;
		w->seg_fd = -1;
		w->lseg_fd = -1;
		w->segno = -1;
		w->qid_ctr = (uint32_t)(ts.tv_nsec / 1000) * 2654435761u;
		w->wakefd = eventfd(0, EFD_CLOEXEC);
		w->outbox = calloc((size_t)g->nworkers * OUTBOX_MAX, sizeof(*w->outbox));
		w->outn = calloc(g->nworkers, sizeof(*w->outn));
		pthread_mutex_init(&w->ready_mu, NULL);
		pthread_cond_init(&w->ready_cv, NULL);
	}
	/* Recovered messages start in their owner's overflow list: the owner
	 * pushes them into its own ring as soon as it runs. */
	for (size_t k = 0; k < g->recov.len / sizeof(struct mq_item); k++) {
		struct mq_item d = ((struct mq_item *)g->recov.p)[k];
		struct route r = {(uint32_t)d.a % g->nworkers, d};

		buf_append(&g->workers[r.to]->overflow, &r, sizeof(r));
	}
	buf_free(&g->recov);
	for (unsigned i = 0; i < g->nworkers; i++) {
		struct worker *w = g->workers[i];

		if (pthread_create(&w->thread, NULL, worker_main, w)) {
			LOGE("cannot start worker %u", i);
			rc = 1;
			break;
		}
		started++;
		pthread_mutex_lock(&w->ready_mu);
		while (w->ready == 0)
			pthread_cond_wait(&w->ready_cv, &w->ready_mu);
		pthread_mutex_unlock(&w->ready_mu);
		if (w->ready < 0) {
			rc = 1;
			break;
		}
#ifdef __linux__
		if (g->nworkers > 1 && g->nworkers <= (unsigned)sysconf(_SC_NPROCESSORS_ONLN)) {
			cpu_set_t cpus;

			CPU_ZERO(&cpus);
			CPU_SET(i, &cpus);
			pthread_setaffinity_np(w->thread, sizeof(cpus), &cpus);
		}
#endif
	}
	if (rc == 0) {
		char pid[32];
		int pfd;

		for (unsigned i = 0; i < cf->nlisten; i++)
			LOGI("listening on %s (%u workers)", cf->listen[i].text, g->nworkers);
		/* For `ringmx queue --flush`. */
		pfd = openat(g->spool_dirfd, "ringmx.pid", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		             0644);
		if (pfd >= 0) {
			int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());

			if (write(pfd, pid, (size_t)n) != n)
				LOGW("cannot write %s/ringmx.pid", cf->spool);
			close(pfd);
		}
		for (;;) {
			if (sigwait(&set, &sig) != 0)
				continue;
			if (sig == SIGHUP) {
				LOGI("SIGHUP ignored (no reloadable configuration yet)");
				continue;
			}
			if (sig == SIGUSR2) {
				/* ringmx queue --delete: the ids are in ringmx.drop. */
				char line[64];
				FILE *f;
				int dfd =
				    openat(g->spool_dirfd, "ringmx.drop", O_RDONLY | O_CLOEXEC);

				f = dfd >= 0 ? fdopen(dfd, "r") : NULL;
				pthread_mutex_lock(&g->drop_mu);
				while (f && fgets(line, sizeof(line), f)) {
					line[strcspn(line, "\r\n")] = '\0';
					if (line[0])
						buf_append(&g->drop, line, strlen(line) + 1);
				}
				pthread_mutex_unlock(&g->drop_mu);
				if (f)
					fclose(f);
				unlinkat(g->spool_dirfd, "ringmx.drop", 0);
				atomic_fetch_add(&g->drop_gen, 1);
			} else if (sig == SIGUSR1) {
				/* ringmx queue --flush: retry deferred messages now. */
				atomic_fetch_add(&g->flush_gen, 1);
			}
			if (sig == SIGUSR1 || sig == SIGUSR2) {
				for (unsigned i = 0; i < started; i++) {
					uint64_t one = 1;

					if (write(g->workers[i]->wakefd, &one, sizeof(one)) < 0)
						LOGE("cannot wake worker %u", i);
				}
				continue;
			}
			break;
		}
		LOGI("signal %d: stopping; transactions in progress get %us", sig, cf->grace);
	}
	atomic_store(&g->stop, 1);
	for (unsigned i = 0; i < started; i++) {
		uint64_t one = 1;

		if (g->workers[i]->ready > 0 &&
		    write(g->workers[i]->wakefd, &one, sizeof(one)) != sizeof(one))
			LOGE("cannot wake worker %u", i);
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(g->workers[i]->thread, NULL);
	for (unsigned i = 0; i < g->nworkers && g->workers[i]; i++) {
		close(g->workers[i]->wakefd);
		free(g->workers[i]->lst);
		free(g->workers[i]->outbox);
		free(g->workers[i]->outn);
		buf_free(&g->workers[i]->overflow);
		buf_free(&g->workers[i]->held);
		while (g->workers[i]->free_conns) {
			struct conn *c = g->workers[i]->free_conns;

			g->workers[i]->free_conns = c->batch_next;
			free(c);
		}
		free(g->workers[i]);
	}
	free(g->workers);
	for (unsigned i = 0; g->lfds && i < g->nworkers * cf->nlisten; i++)
		if (g->lfds[i] >= 0)
			close(g->lfds[i]);
	free(g->lfds);
	unlinkat(g->spool_dirfd, "ringmx.pid", 0);
	buf_free(&g->drop);
	mq_fini(&g->mq);
	for (unsigned i = 0; i < SEGREG_CHUNKS && g->segs.chunk[i]; i++)
		free(g->segs.chunk[i]);
	close(g->spool_dirfd);
	if (rc == 0)
		LOGI("stopped");
	return rc;
}

/* ---- segment registry and routing ---- */

int segreg_add(struct seg_registry *r, const struct spool_seg_id *id)
{
	unsigned n, c;
	int res;

	pthread_mutex_lock(&r->mu);
	n = r->n;
	c = n / SEGREG_CHUNK;
	if (c >= SEGREG_CHUNKS) {
		res = -ENOSPC;
		goto out;
	}
	if (!r->chunk[c]) {
		r->chunk[c] = calloc(SEGREG_CHUNK, sizeof(*r->chunk[c]));
		if (!r->chunk[c]) {
			res = -ENOMEM;
			goto out;
		}
	}
	r->chunk[c][n % SEGREG_CHUNK] = *id;
	r->n = n + 1;
	res = (int)n;
out:
	pthread_mutex_unlock(&r->mu);
	return res;
}

const struct spool_seg_id *segreg_get(const struct seg_registry *r, unsigned i)
{
	/* Published to the reader by the queue push that carried <i>. */
	return &r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK];
}

uint32_t route_hash(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	const unsigned char *p = (const unsigned char *)(at ? at + 1 : "");
	uint32_t h = 2166136261u;

	for (; *p; p++) {
		unsigned char ch = *p >= 'A' && *p <= 'Z' ? (unsigned char)(*p + 32) : *p;

		h = (h ^ ch) * 16777619u;
	}
	return h;
}
