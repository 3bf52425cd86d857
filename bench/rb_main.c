/* ringmx-bench: an io_uring SMTP load generator (see usage() and
 * docs/load-testing.md).
 *
 * Shape: --threads sending threads, each with its own io_uring and its
 * share of the --sessions SMTP client sessions; the main thread only starts
 * them, draws the live progress line and the per-second series, and writes
 * the reports. A session is a state machine driven by completions: one
 * connect (its own), then io/conn, as the gateway's sessions and relay
 * connections: one multishot receive over the thread's provided buffers,
 * always armed while connected (so a server that closes or talks out of
 * turn is seen at once), at most one send in flight, clear text or TLS
 * behind io/conn's transport table. Plaintext sends are iovecs pointing at
 * shared, read-only buffers (conn_send_iov(): never copied). Replies are
 * parsed only while no send is in flight, so a reply can never make us
 * reuse a buffer the kernel is still reading.
 *
 * Work: closed loop takes messages from one shared budget (--messages) or
 * until --duration is over; open loop (--rate) gives each message a due
 * time on a fixed schedule and measures its latency from then, so a server
 * that stalls is charged for the messages it kept waiting (no coordinated
 * omission). Every wait has a deadline (--timeout), swept every 50 ms; a
 * session that misses one is cancelled and counted. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "bench/rb.h"
#include "core/buf.h"
#include "io/conn.h"
#include "io/ring.h"
#include "io/tls.h"

#define RB_RBUF       (RB_REPLY_LINE_MAX + 2) /* a reply line is looked for in this much */
#define RB_IN_MAX     (64u * 1024)            /* replies held during a send: then pause */
#define RB_RX_BUFS    4096u                   /* provided receive buffers per thread, at most */
#define RB_SWEEP_NS   (50 * 1000000ull)       /* deadline sweep period */
#define RB_TICK_NS    (250 * 1000000ull)      /* progress line / series tick */
#define RB_BACKOFF_NS (50 * 1000000ull)       /* reconnect after a failed session */
#define RB_MAX_RCPTS  1000

/* user_data: UD(session, op) (io/types-t.h's encoding); the receive and
 * the send are io/conn's, tagged with these ops; cancels carry OP_NONE. */
enum op { OP_NONE = UD_NONE, OP_CONNECT, OP_RECV, OP_SEND, OP__N };

enum st {
	ST_IDLE, /* no connection: waiting in the connect queue, or done */
	ST_CONNECT,
	ST_HANDSHAKE, /* TLS */
	ST_GREET,
	ST_EHLO,
	ST_STARTTLS,
	ST_READY, /* connected, no command outstanding */
	ST_MAIL,
	ST_RCPT,
	ST_DATA,
	ST_BODY,
	ST_RSET,
	ST_QUIT,
};

static const char *const st_names[] = {
    [ST_IDLE] = "idle",      [ST_CONNECT] = "connect",  [ST_HANDSHAKE] = "TLS handshake",
    [ST_GREET] = "greeting", [ST_EHLO] = "EHLO",        [ST_STARTTLS] = "STARTTLS",
    [ST_READY] = "ready",    [ST_MAIL] = "MAIL",        [ST_RCPT] = "RCPT",
    [ST_DATA] = "DATA",      [ST_BODY] = "end of data", [ST_RSET] = "RSET",
    [ST_QUIT] = "QUIT",
};

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };

/* ---- configuration (set by main before any thread starts) ---- */
static struct {
	const char *server; /* of the run going on: HOST:PORT */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *host;
	int threads, sessions, rcpts; /* of the run going on */
	int threads_asked;            /* --threads, 0: one per CPU */
	bool label_set, sessions_set;
	/* targets[0]: --server; then each --peer. A run goes to one of them. */
	struct target {
		struct rb_target t;
		struct sockaddr_storage addr;
		socklen_t addrlen;
	} targets[1 + RB_PEER_MAX];
	int ntargets;
	int sweep[RB_SWEEP_MAX]; /* --sweep; nsweep 0: one run */
	int nsweep;
	long messages;    /* 0: by duration */
	double duration;  /* 0: by messages */
	double rate;      /* 0: closed loop */
	double conn_rate; /* 0: unlimited */
	long per_conn;    /* messages per connection, 0 = no limit */
	double timeout;
	long max_errors;
	bool pipelining, idle, bdat;
	enum tls_mode tls;
	const char *sni, *sni_arg;
	const char *from, *to, *helo;
	const char *size_arg, *eml_dir, *json, *plot, *label;
	const char *size_desc; /* for the reports */
	int progress;          /* -1 auto (a terminal), 0 off, 1 on */
	struct rb_size size;
	struct rb_corpus corpus;
	char *fill;
	char *ehlo; /* "EHLO name" CRLF, the same for every session */
	size_t ehlo_len;
	char *group; /* pipelined MAIL + RCPTs + DATA */
	size_t group_len;
	size_t mail_len;  /* the MAIL line at the start of group */
	size_t *rcpt_off; /* offsets of each RCPT line in group, +1 for DATA */
	size_t hdr_cap;
	struct tls_ctx *tls_ctx;
} C;

/* ---- state shared by all threads ---- */
static _Atomic long g_budget;     /* messages left to start (closed loop, by count) */
static _Atomic int g_stop;        /* 1: finish what is in flight, 2: drop everything */
static _Atomic int g_interrupted; /* a signal came: no more runs after this one */
static _Atomic int g_greeted;     /* some session was greeted */
static _Atomic long g_conn_fail;  /* connects that failed */
static _Atomic long g_errors;
static _Atomic int64_t g_open, g_peak;
static _Atomic int g_threads_done;
static char g_abort_buf[256]; /* why the run stopped early, once g_abort_set */
static _Atomic int g_abort_set;
static uint64_t g_t0, g_end; /* ns; g_end: duration over (0 = none) */

struct thr;

/* A client session. The connection (io/conn) comes first, so that the
 * user_data naming the session names it too; its fd, its operations in
 * flight (rc.inflight, the connect included), its TLS and its send slot
 * (RCONN_SEND) are io/conn's. */
struct sess {
	struct ring_conn rc;
	struct thr *t;
	uint8_t st;
	bool dead, error, in_msg, msg_ok, use_pipe;
	bool connecting; /* its connect is in flight */
	bool on_ready;   /* has an entry in its thread's ready stack */
	bool tls_eof;    /* the server sent close_notify */
	bool close_after_send;
	unsigned caps;
	int rcpt_left, rcpt_ok, rcpt_next;
	long on_conn;
	uint64_t t_start, t_msg, deadline;
	uint64_t t_sent; /* when the command now answered was queued (wait_for()):
	                    for a pipelined group, when the group was */
	uint64_t msg_bytes;
	struct rb_reply rep;
	struct buf in; /* plaintext from the server: replies, parsed from <in_off> */
	size_t in_off;
	struct iovec piov[6]; /* output waiting for the send slot */
	int npiov;
	struct iovec siov[6]; /* in flight (clear text: io/conn moves them on) */
	struct msghdr mh;
	char tail[RB_FILL_LINE + 8];
	char bdat_cmd[40];
	char hdr[]; /* message header, C.hdr_cap */
};

struct thr {
	int id;
	pthread_t tid;
	struct ring ring; /* its io_uring and provided receive buffers (io/ring) */
	struct rb_live live;
	int nsess;
	char *mem; /* the sessions, stride bytes apart */
	size_t stride;
	int live_sess; /* sessions not finished for good */
	int *connq;    /* FIFO of sessions waiting to connect */
	uint64_t *connq_at;
	int cq_head, cq_len;
	int *ready; /* sessions connected and waiting for a message (open loop, idle) */
	int nready;
	uint64_t *due; /* open loop: due times of messages not yet started */
	int due_head, due_len, due_cap;
	uint64_t next_due, next_conn;
	uint64_t last_done; /* when its last message got its 250 */
	double rate, conn_rate;
	uint64_t rng;
	long seq;
};

static struct thr *T;

static inline struct sess *sess_at(struct thr *t, int i)
{
	return (struct sess *)(t->mem + (size_t)i * t->stride);
}

static inline int sess_idx(struct sess *s)
{
	return (int)(((char *)s - s->t->mem) / s->t->stride);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void set_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_abort(const char *fmt, ...)
{
	int expect = 0;
	if (atomic_compare_exchange_strong(&g_abort_set, &expect, 1)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(g_abort_buf, sizeof(g_abort_buf), fmt, ap);
		va_end(ap);
	}
	atomic_store(&g_stop, 2);
}

/* ---- output (io/conn) ---- */

static void sess_kill(struct sess *s);
static void sess_fail(struct sess *s, enum rb_err k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sess_process(struct sess *s);
static void emit_content(struct sess *s);
static void sess_next(struct sess *s);

static bool sending(const struct sess *s)
{
	return s->rc.flags & RCONN_SEND;
}

/* Bytes of <in> not parsed yet. */
static size_t in_left(const struct sess *s)
{
	return s->in.len - s->in_off;
}

/* Sends what is waiting, if the send slot is free: the pieces as they are
 * (clear text: one sendmsg pointing at them; TLS: copied into records),
 * or what TLS has to say on its own (the handshake). */
static void flush(struct sess *s)
{
	struct ring *r = &s->t->ring;

	if (sending(s) || s->dead)
		return;
	if (s->npiov > 0) {
		memcpy(s->siov, s->piov, sizeof(s->piov[0]) * (size_t)s->npiov);
		s->mh = (struct msghdr){.msg_iov = s->siov, .msg_iovlen = (size_t)s->npiov};
		s->npiov = 0;
		conn_send_iov(r, &s->rc, &s->mh);
	} else if (s->rc.tls) {
		struct buf none = BUF_INIT;

		conn_flush(r, &s->rc, &none, false);
	}
	if ((s->rc.flags & RCONN_HANGUP) && !s->tls_eof)
		sess_fail(s, RB_ERR_TLS, "TLS: %s", tls_conn_error(s->rc.tls));
}

/* Queues output. It is only pointed at until flush(), and in clear text
 * until the send completes: the buffers stay untouched until then. */
static void emit(struct sess *s, const void *p, size_t n)
{
	if (n == 0 || s->dead)
		return;
	if (s->npiov == (int)(sizeof(s->piov) / sizeof(s->piov[0]))) {
		set_abort("internal: too many output pieces");
		return;
	}
	s->piov[s->npiov++] = (struct iovec){(void *)p, n};
}

/* ---- accounting ---- */

static void err_note(struct sess *s, enum rb_err k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_note(struct sess *s, enum rb_err k, const char *fmt, ...)
{
	struct rb_live *l = &s->t->live;
	atomic_fetch_add_explicit(&l->err[k], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&l->errors, 1, memory_order_relaxed);
	int expect = 0;
	if (atomic_compare_exchange_strong(&l->first_set[k], &expect, 1)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(l->first[k], sizeof(l->first[k]), fmt, ap);
		va_end(ap);
	}
	long e = atomic_fetch_add(&g_errors, 1) + 1;
	if (C.max_errors > 0 && e >= C.max_errors)
		set_abort("stopped after %ld errors (--max-errors)", e);
}

static void count_reply(struct sess *s, int code)
{
	atomic_fetch_add_explicit(&s->t->live.replies[code], 1, memory_order_relaxed);
}

static void unexpected(struct sess *s, int code)
{
	atomic_fetch_add_explicit(&s->t->live.err_code[code], 1, memory_order_relaxed);
	err_note(s, RB_ERR_REPLY, "%d %s (to %s)", code, s->rep.text, st_names[s->st]);
}

/* <now>: the clock reading of the 250 that ends it (ok only). */
static void msg_end(struct sess *s, bool ok, uint64_t now)
{
	if (!s->in_msg)
		return;
	s->in_msg = false;
	struct rb_live *l = &s->t->live;
	if (ok) {
		atomic_fetch_add_explicit(&l->messages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&l->bytes, s->msg_bytes, memory_order_relaxed);
		rb_hist_record(&l->msg_lat, (now - s->t_msg) / 1000);
		s->t->last_done = now; /* read by main after the join */
	} else {
		atomic_fetch_add_explicit(&l->failed, 1, memory_order_relaxed);
	}
}

/* ---- sessions ---- */

/* The session waits for the reply to what it just queued: the one clock
 * reading sets both the deadline and the start of the reply's phase. */
static void wait_for(struct sess *s, enum st st)
{
	uint64_t now = now_ns();

	s->st = st;
	s->t_sent = now;
	s->deadline = now + (uint64_t)(C.timeout * 1e9);
}

static void connq_push(struct thr *t, int i, uint64_t at)
{
	int pos = (t->cq_head + t->cq_len) % t->nsess;
	t->connq[pos] = i;
	t->connq_at[pos] = at;
	t->cq_len++;
}

static void ready_push(struct thr *t, struct sess *s)
{
	if (!s->on_ready) {
		s->on_ready = true;
		t->ready[t->nready++] = sess_idx(s);
	}
}

/* The next session of the ready stack that is still ready (a session that
 * lost its connection keeps its entry until it is popped). */
static struct sess *ready_pop(struct thr *t)
{
	while (t->nready > 0) {
		struct sess *s = sess_at(t, t->ready[--t->nready]);
		s->on_ready = false;
		if (s->st == ST_READY && !s->dead)
			return s;
	}
	return NULL;
}

static bool more_work(void);

/* This thread still has messages to start: new ones, or due ones queued. */
static bool thr_has_work(struct thr *t)
{
	if (atomic_load_explicit(&g_stop, memory_order_relaxed))
		return false;
	if (t->due_len > 0 || more_work())
		return true;
	return C.rate > 0 && C.duration > 0 && t->next_due < g_end; /* not queued yet */
}

static bool more_work(void)
{
	if (atomic_load_explicit(&g_stop, memory_order_relaxed))
		return false;
	if (C.idle || C.duration > 0)
		return now_ns() < g_end;
	return atomic_load_explicit(&g_budget, memory_order_relaxed) > 0;
}

/* Everything in flight has completed: close, then reconnect or finish. */
static void sess_closed(struct sess *s)
{
	struct thr *t = s->t;
	conn_fini(&s->rc); /* the socket, the TLS state, the send buffer */
	if (s->st != ST_CONNECT && s->st != ST_IDLE)
		atomic_fetch_sub(&g_open, 1);
	msg_end(s, false, 0);
	bool failed = s->error;
	s->st = ST_IDLE;
	s->dead = s->error = s->tls_eof = s->close_after_send = false;
	s->deadline = 0;
	buf_reset(&s->in, RB_RBUF);
	s->in_off = 0;
	s->npiov = 0;
	if (thr_has_work(t)) {
		connq_push(t, sess_idx(s), failed ? now_ns() + RB_BACKOFF_NS : 0);
		return;
	}
	t->live_sess--;
}

/* Ends the connection: in-flight operations are made to complete (a
 * connect is cancelled; otherwise io/conn marks the connection closing and
 * cancels its receive, and the socket is shut down, which ends a send in
 * flight too). The session is recycled only by sess_settle(), after the
 * last of them and never in the middle of a handler that still looks at
 * it. */
static void sess_kill(struct sess *s)
{
	if (s->dead)
		return;
	s->dead = true;
	if (s->connecting) {
		struct io_uring_sqe *sqe = ring_sqe(&s->t->ring);
		io_uring_prep_cancel64(sqe, UD(s, OP_CONNECT), 0);
		io_uring_sqe_set_data64(sqe, UD(NULL, OP_NONE));
	} else if (s->rc.fd >= 0) {
		conn_close(&s->t->ring, &s->rc);
		shutdown(s->rc.fd, SHUT_RDWR);
	}
}

static void sess_settle(struct sess *s)
{
	if (s->dead && s->rc.inflight == 0)
		sess_closed(s);
}

static void sess_fail(struct sess *s, enum rb_err k, const char *fmt, ...)
{
	if (s->dead)
		return;
	char msg[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_note(s, k, "%s", msg);
	s->error = true;
	sess_kill(s);
}

static void sess_quit(struct sess *s)
{
	emit(s, "QUIT\r\n", 6);
	wait_for(s, ST_QUIT);
	flush(s);
}

static void sess_connect(struct sess *s)
{
	struct thr *t = s->t;
	int fd = socket(C.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		set_abort("socket: %s", strerror(errno));
		t->live_sess--;
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_init(&s->rc, fd, OP_RECV, OP_SEND); /* clear text */
	s->caps = 0;
	s->tls_eof = false;
	s->on_conn = 0;
	s->rcpt_left = 0;
	memset(&s->rep, 0, sizeof(s->rep));
	s->t_start = now_ns();
	wait_for(s, ST_CONNECT);
	/* The connect is the bench's own, as the relay's is (io/conn starts
	 * at a connected socket); it counts in rc.inflight all the same. */
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&C.addr, C.addrlen);
	io_uring_sqe_set_data64(sqe, UD(s, OP_CONNECT));
	s->connecting = true;
	s->rc.inflight++;
}

/* From now on the bytes go through TLS (io/conn's TLS transport, our
 * client side of io/tls); the ClientHello leaves at once. */
static void start_tls(struct sess *s)
{
	wait_for(s, ST_HANDSHAKE); /* before any failure: the session is open */
	struct tls_conn *tls = tls_conn_new_client(C.tls_ctx, C.sni);
	if (!tls) {
		set_abort("out of memory");
		sess_kill(s);
		return;
	}
	conn_start_tls(&s->rc, tls);
	flush(s);
}

static void send_ehlo(struct sess *s)
{
	emit(s, C.ehlo, C.ehlo_len);
	wait_for(s, ST_EHLO);
	flush(s);
}

/* Starts one message; <due> is its scheduled time in open loop, 0 in
 * closed loop (latency from now). */
static void start_msg(struct sess *s, uint64_t due)
{
	struct thr *t = s->t;
	struct rb_live *l = &t->live;
	atomic_fetch_add_explicit(&l->attempted, 1, memory_order_relaxed);
	s->in_msg = true;
	s->msg_ok = true;
	s->on_conn++;
	s->t_msg = due ? due : now_ns();
	s->rcpt_left = C.rcpts;
	s->rcpt_ok = 0;
	s->rcpt_next = 0;
	s->use_pipe = C.pipelining && (s->caps & RB_CAP_PIPELINING);
	if (s->use_pipe && C.bdat) { /* RFC 3030: BDAT may follow RCPT unanswered */
		emit(s, C.group, C.rcpt_off[C.rcpts]);
		emit_content(s);
	} else if (s->use_pipe) {
		emit(s, C.group, C.group_len);
	} else {
		emit(s, C.group, C.mail_len);
	}
	wait_for(s, ST_MAIL);
	flush(s);
}

/* Queues the message content: after the 354 (dot-stuffed, ending with
 * CRLF.CRLF) or, with --bdat, as one "BDAT n LAST" chunk (as is). */
static void emit_content(struct sess *s)
{
	struct thr *t = s->t;
	if (C.corpus.n) {
		size_t i = (size_t)(rb_rand(&t->rng) % C.corpus.n);
		/* the content, not the final "." line of DATA */
		s->msg_bytes = C.corpus.len[i] - (C.bdat ? 0 : 3);
		if (C.bdat) {
			int n = snprintf(s->bdat_cmd, sizeof(s->bdat_cmd), "BDAT %zu LAST\r\n",
			                 C.corpus.len[i]);
			emit(s, s->bdat_cmd, (size_t)n);
		}
		emit(s, C.corpus.data[i], C.corpus.len[i]);
	} else {
		long seq = t->seq++;
		int h = snprintf(s->hdr, C.hdr_cap,
		                 "From: <%s>\r\nTo: <%s>\r\nSubject: ringmx-bench %d.%ld\r\n"
		                 "Message-ID: <%d.%ld.%llu@ringmx-bench.invalid>\r\n\r\n",
		                 C.from, C.to, t->id, seq, t->id, seq,
		                 (unsigned long long)(g_t0 / 1000));
		uint64_t size = rb_size_draw(&C.size, &t->rng);
		size_t body = size > (uint64_t)h ? (size_t)(size - (uint64_t)h) : 0, prefix;
		size_t tl = rb_fill_split(body, &prefix, s->tail, sizeof(s->tail));
		if (C.bdat) { /* a chunk is not dot-terminated */
			tl -= 3;
			int n = snprintf(s->bdat_cmd, sizeof(s->bdat_cmd), "BDAT %zu LAST\r\n",
			                 (size_t)h + prefix + tl);
			emit(s, s->bdat_cmd, (size_t)n);
		}
		emit(s, s->hdr, (size_t)h);
		emit(s, C.fill, prefix);
		emit(s, s->tail, tl);
		s->msg_bytes = (size_t)h + prefix + tl - (C.bdat ? 0 : 3);
	}
}

static void send_body(struct sess *s)
{
	emit_content(s);
	wait_for(s, ST_BODY);
	flush(s);
}

/* The session has no command outstanding: give it the next message. */
static void sess_next(struct sess *s)
{
	struct thr *t = s->t;
	s->st = ST_READY;
	s->deadline = 0;
	if (C.per_conn > 0 && s->on_conn >= C.per_conn) {
		sess_quit(s);
		return;
	}
	if (C.idle) {
		if (now_ns() >= g_end || atomic_load(&g_stop))
			sess_quit(s);
		else
			ready_push(t, s);
		return;
	}
	if (C.rate > 0) {
		if (atomic_load_explicit(&g_stop, memory_order_relaxed)) {
			sess_quit(s);
		} else if (t->due_len > 0) {
			uint64_t due = t->due[t->due_head];
			t->due_head = (t->due_head + 1) % t->due_cap;
			t->due_len--;
			start_msg(s, due);
		} else if (more_work()) {
			ready_push(t, s);
		} else {
			sess_quit(s);
		}
		return;
	}
	if (atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		sess_quit(s);
	} else if (C.duration > 0) {
		if (now_ns() < g_end)
			start_msg(s, 0);
		else
			sess_quit(s);
	} else if (atomic_fetch_sub(&g_budget, 1) > 0) {
		start_msg(s, 0);
	} else {
		sess_quit(s);
	}
}

/* The phase that the reply now complete answers, RB_PH__N for none. */
static enum rb_phase reply_phase(const struct sess *s)
{
	switch (s->st) {
	case ST_GREET:
		return RB_PH_CONNECT;
	case ST_EHLO:
		return RB_PH_EHLO;
	case ST_STARTTLS:
		return RB_PH_STARTTLS;
	case ST_MAIL:
		return s->use_pipe ? RB_PH_PIPE_MAIL : RB_PH_MAIL;
	case ST_RCPT:
		return s->use_pipe ? RB_PH_PIPE_RCPT : RB_PH_RCPT;
	case ST_DATA:
		return s->use_pipe ? RB_PH_PIPE_DATA : RB_PH_DATA;
	case ST_BODY:
		return !C.bdat ? RB_PH_EOD : s->use_pipe ? RB_PH_PIPE_BDAT : RB_PH_BDAT;
	case ST_RSET:
		return RB_PH_RSET;
	case ST_QUIT:
		return RB_PH_QUIT;
	default:
		return RB_PH__N;
	}
}

static void on_reply(struct sess *s, int code)
{
	uint64_t now = now_ns(); /* the one clock reading of this reply */
	enum rb_phase ph = reply_phase(s);

	count_reply(s, code);
	if (code == 421 && s->st != ST_QUIT) { /* the server is going away */
		unexpected(s, code);
		s->error = true;
		sess_kill(s);
		return;
	}
	if (ph != RB_PH__N)
		rb_hist_record(&s->t->live.phase[ph],
		               (now - (ph == RB_PH_CONNECT ? s->t_start : s->t_sent)) / 1000);
	switch (s->st) {
	case ST_GREET:
		if (code != 220) {
			unexpected(s, code);
			sess_quit(s);
			return;
		}
		atomic_store_explicit(&g_greeted, 1, memory_order_relaxed);
		send_ehlo(s);
		return;
	case ST_EHLO:
		if (code != 250) {
			unexpected(s, code);
			sess_quit(s);
			return;
		}
		s->caps = s->rep.caps;
		if (C.tls == TLS_STARTTLS && !s->rc.tls) {
			if (!(s->caps & RB_CAP_STARTTLS)) {
				set_abort("%s does not offer STARTTLS", C.server);
				sess_kill(s);
				return;
			}
			emit(s, "STARTTLS\r\n", 10);
			wait_for(s, ST_STARTTLS);
			flush(s);
			return;
		}
		if (C.bdat && !(s->caps & RB_CAP_CHUNKING)) {
			set_abort("%s does not offer CHUNKING (--bdat)", C.server);
			sess_kill(s);
			return;
		}
		sess_next(s);
		return;
	case ST_STARTTLS:
		if (code != 220) {
			unexpected(s, code);
			sess_quit(s);
			return;
		}
		if (in_left(s) > 0) { /* CVE-2011-0411 in reverse: nothing may follow */
			sess_fail(s, RB_ERR_PROTOCOL, "data after the 220 to STARTTLS");
			return;
		}
		start_tls(s);
		return;
	case ST_MAIL:
		if (code / 100 != 2) {
			unexpected(s, code);
			s->msg_ok = false;
		}
		if (s->use_pipe) {
			s->st = ST_RCPT;
			return;
		}
		if (!s->msg_ok) {
			msg_end(s, false, 0);
			emit(s, "RSET\r\n", 6);
			wait_for(s, ST_RSET);
			flush(s);
			return;
		}
		emit(s, C.group + C.rcpt_off[0], C.rcpt_off[1] - C.rcpt_off[0]);
		s->rcpt_next = 1;
		wait_for(s, ST_RCPT);
		flush(s);
		return;
	case ST_RCPT:
		if (code / 100 == 2)
			s->rcpt_ok++;
		else if (s->msg_ok) /* after a refused MAIL the 5xx here is no news */
			unexpected(s, code);
		if (--s->rcpt_left > 0) {
			if (!s->use_pipe) {
				int k = s->rcpt_next++;
				emit(s, C.group + C.rcpt_off[k], C.rcpt_off[k + 1] - C.rcpt_off[k]);
				wait_for(s, ST_RCPT);
				flush(s);
			}
			return;
		}
		if (s->rcpt_ok == 0)
			s->msg_ok = false;
		if (s->use_pipe) {
			s->st = C.bdat ? ST_BODY : ST_DATA;
			return;
		}
		if (!s->msg_ok) {
			msg_end(s, false, 0);
			emit(s, "RSET\r\n", 6);
			wait_for(s, ST_RSET);
			flush(s);
			return;
		}
		if (C.bdat) {
			send_body(s);
			return;
		}
		emit(s, "DATA\r\n", 6);
		wait_for(s, ST_DATA);
		flush(s);
		return;
	case ST_DATA:
		if (code == 354) {
			if (s->msg_ok) {
				send_body(s);
			} else { /* 354 with no valid recipient: end it empty */
				sess_fail(s, RB_ERR_PROTOCOL,
				          "354 to DATA without a valid recipient");
			}
			return;
		}
		if (s->msg_ok)
			unexpected(s, code);
		msg_end(s, false, 0);
		emit(s, "RSET\r\n", 6);
		wait_for(s, ST_RSET);
		flush(s);
		return;
	case ST_BODY:
		if (code == 250 && s->msg_ok) {
			msg_end(s, true, now);
		} else {
			if (s->msg_ok)
				unexpected(s, code);
			msg_end(s, false, 0);
			if (C.bdat) { /* a refused chunk may leave the transaction open */
				emit(s, "RSET\r\n", 6);
				wait_for(s, ST_RSET);
				flush(s);
				return;
			}
		}
		sess_next(s);
		return;
	case ST_RSET:
		if (code != 250) {
			unexpected(s, code);
			sess_quit(s);
			return;
		}
		sess_next(s);
		return;
	case ST_QUIT:
		if (code != 221)
			unexpected(s, code);
		if (s->rc.tls) {
			/* close_notify (RFC 8446 6.1), then close once it is sent */
			struct buf none = BUF_INIT;
			s->close_after_send = true;
			if (conn_flush(&s->t->ring, &s->rc, &none, true))
				return;
		}
		sess_kill(s);
		return;
	default:
		sess_fail(s, RB_ERR_PROTOCOL, "unsolicited reply %d %s (%s)", code, s->rep.text,
		          st_names[s->st]);
		return;
	}
}

/* The TLS handshake is done (io/conn set RCONN_TLS_UP). Returns false
 * when the session died. */
static bool tls_established(struct sess *s)
{
	if (C.tls == TLS_IMPLICIT) {
		wait_for(s, ST_GREET);
	} else if (in_left(s) > 0) { /* the server spoke before our EHLO */
		sess_fail(s, RB_ERR_PROTOCOL, "data after the TLS handshake, before EHLO");
		return false;
	} else {
		s->caps = 0;
		send_ehlo(s);
	}
	return true;
}

/* Parses whatever complete reply lines <in> holds, while no send is in
 * flight. */
static void sess_process(struct sess *s)
{
	while (!s->dead && !sending(s)) {
		if (s->st == ST_HANDSHAKE && (s->rc.flags & RCONN_TLS_UP)) {
			rb_hist_record(&s->t->live.phase[RB_PH_TLS], (now_ns() - s->t_sent) / 1000);
			if (!tls_established(s))
				return;
			continue;
		}
		size_t left = in_left(s);
		if (left == 0)
			break;
		/* a line is looked for in RB_RBUF octets at most, as the
		   receive buffer of one line used to be */
		const char *p = s->in.p + s->in_off;
		size_t used;
		long n = rb_reply_find_line(p, left < RB_RBUF ? left : RB_RBUF, &used);
		if (n == -1 && left < RB_RBUF)
			break;
		if (n < 0) {
			sess_fail(s, RB_ERR_PROTOCOL, "%s in a reply (%s)",
			          n == -1 ? "a line too long"
			                  : "a bare CR or LF, or a line too long",
			          st_names[s->st]);
			return;
		}
		int r = rb_reply_line(&s->rep, p, (size_t)n);
		s->in_off += used;
		if (r < 0) {
			sess_fail(s, RB_ERR_PROTOCOL, "%s (%s)", s->rep.text, st_names[s->st]);
			return;
		}
		if (r == 1)
			on_reply(s, s->rep.code);
	}
	if (s->in_off == s->in.len) {
		s->in.len = s->in_off = 0;
	} else if (s->in_off > 0) {
		buf_consume(&s->in, s->in_off);
		s->in_off = 0;
	}
	if (s->tls_eof && !s->dead && !sending(s)) {
		if (s->st == ST_QUIT)
			sess_kill(s);
		else
			sess_fail(s, RB_ERR_CLOSED, "TLS close_notify from the server (%s)",
			          st_names[s->st]);
		return;
	}
	if (!s->dead)
		flush(s);
	if (!s->dead && (s->rc.flags & RCONN_PAUSED) && in_left(s) <= RB_IN_MAX)
		conn_resume(&s->t->ring, &s->rc);
}

/* ---- completions ---- */

/* Plaintext from io/conn, into <in>: parsed by sess_process() once the
 * receive completion is through (and no send is in flight). NULL: the TLS
 * handshake is done, which sess_process() sees in RCONN_TLS_UP. */
static bool sess_input(void *owner, const char *p, size_t n)
{
	struct sess *s = owner;
	if (!p || s->dead)
		return !s->dead;
	if (buf_append(&s->in, p, n) < 0) {
		set_abort("out of memory");
		sess_kill(s);
		return false;
	}
	/* replies wait while a send is in flight: a server that talks on and
	   on meets TCP's window, as it did when each receive had its room */
	if (sending(s) && in_left(s) > RB_IN_MAX)
		conn_pause(&s->t->ring, &s->rc);
	return true;
}

typedef void op_fn(struct thr *t, struct sess *s, struct io_uring_cqe *cqe);

static void on_connect(struct thr *t, struct sess *s, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	s->connecting = false;
	s->rc.inflight--;
	if (s->dead)
		return;
	if (res < 0) {
		atomic_fetch_add(&g_conn_fail, 1);
		sess_fail(s, RB_ERR_CONNECT, "connect to %s: %s", C.server, strerror(-res));
		return;
	}
	atomic_fetch_add_explicit(&t->live.opened, 1, memory_order_relaxed);
	int64_t o = atomic_fetch_add(&g_open, 1) + 1, p = atomic_load(&g_peak);
	while (o > p && !atomic_compare_exchange_weak(&g_peak, &p, o))
		;
	if (C.tls == TLS_IMPLICIT) {
		start_tls(s);
	} else {
		wait_for(s, ST_GREET);
	}
	if (!s->dead)
		conn_arm_recv(&t->ring, &s->rc);
}

static void on_recv(struct thr *t, struct sess *s, struct io_uring_cqe *cqe)
{
	int err;
	switch (conn_on_recv(&t->ring, &s->rc, cqe, sess_input, s, &err)) {
	case CONN_RX_CLOSING:
		return;
	case CONN_RX_EOF:
		if (s->dead)
			return;
		if (err == 0 && s->st == ST_QUIT)
			sess_kill(s);
		else if (err == 0 || err == -ECONNRESET)
			sess_fail(s, RB_ERR_CLOSED, "connection %s by the server (%s)",
			          err ? "reset" : "closed", st_names[s->st]);
		else
			sess_fail(s, RB_ERR_IO, "recv: %s (%s)", strerror(-err), st_names[s->st]);
		return;
	case CONN_RX_XPRT:
		if (s->dead)
			return;
		if (err != -ESHUTDOWN) {
			sess_fail(s, RB_ERR_TLS, "TLS: %s", tls_conn_error(s->rc.tls));
			return;
		}
		s->tls_eof = true; /* replies before it are still read */
		break;
	case CONN_RX_OK:
		if (s->dead)
			return;
		break;
	}
	sess_process(s);
}

static void on_send(struct thr *t, struct sess *s, struct io_uring_cqe *cqe)
{
	int res = conn_on_send(&t->ring, &s->rc, cqe);
	if (res == -ECANCELED || s->dead)
		return;
	if (res < 0) {
		if (res == -EPIPE || res == -ECONNRESET)
			sess_fail(s, RB_ERR_CLOSED, "connection closed by the server (%s)",
			          st_names[s->st]);
		else
			sess_fail(s, RB_ERR_IO, "send: %s", strerror(-res));
		return;
	}
	if (res == 1)
		return; /* a short send: io/conn sends the rest */
	if (s->close_after_send) {
		sess_kill(s);
		return;
	}
	sess_process(s);
}

/* One handler per op, as the gateway's loop dispatches (io/worker.c). */
static op_fn *const op_handlers[OP__N] = {
    [OP_CONNECT] = on_connect,
    [OP_RECV] = on_recv,
    [OP_SEND] = on_send,
};

static void on_cqe(struct thr *t, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = UD_OP(ud);
	if (op == OP_NONE)
		return; /* a cancel's own completion */
	if (op >= OP__N)
		abort(); /* broken invariant: an op nobody tagged */
	struct sess *s = UD_PTR(ud);
	op_handlers[op](t, s, cqe);
	sess_settle(s);
}

/* ---- the sending threads ---- */

static void sweep(struct thr *t, uint64_t now)
{
	bool hard = atomic_load(&g_stop) == 2;
	for (int i = 0; i < t->nsess; i++) {
		struct sess *s = sess_at(t, i);
		if (s->dead)
			sess_settle(s);
		if (s->st == ST_IDLE || s->dead)
			continue;
		if (hard) {
			s->error = false;
			sess_kill(s);
		} else if (s->deadline && now > s->deadline) {
			sess_fail(s, RB_ERR_TIMEOUT, "no answer to %s within %g s", st_names[s->st],
			          C.timeout);
		}
		sess_settle(s);
	}
	if (hard) { /* nothing waiting to connect gets to */
		t->live_sess -= t->cq_len;
		t->cq_len = 0;
	}
}

static void schedule(struct thr *t, uint64_t now)
{
	/* open loop: messages become due on a fixed schedule */
	if (C.rate > 0) {
		/* by due time, not by the clock now: a thread that wakes after the
		   end still owes the messages that fell due before it */
		while (t->next_due <= now && t->due_len < t->due_cap &&
		       !atomic_load_explicit(&g_stop, memory_order_relaxed)) {
			if (C.duration > 0 ? t->next_due >= g_end
			                   : atomic_fetch_sub(&g_budget, 1) <= 0)
				break;
			t->due[(t->due_head + t->due_len) % t->due_cap] = t->next_due;
			t->due_len++;
			t->next_due += (uint64_t)(1e9 / t->rate);
		}
		struct sess *s;
		while (t->due_len > 0 && (s = ready_pop(t)))
			sess_next(s);
	}
	/* ready sessions that will get nothing more */
	if (t->nready > 0 && !thr_has_work(t)) {
		struct sess *s;
		while ((s = ready_pop(t)))
			sess_quit(s);
	}
	/* connections, at --connect-rate */
	while (t->cq_len > 0) {
		if (t->connq_at[t->cq_head] > now)
			break;
		if (t->conn_rate > 0 && t->next_conn > now)
			break;
		int i = t->connq[t->cq_head];
		t->cq_head = (t->cq_head + 1) % t->nsess;
		t->cq_len--;
		if (!thr_has_work(t)) {
			t->live_sess--;
			continue;
		}
		if (t->conn_rate > 0) {
			/* a pause earns no burst afterwards: at most one slot of credit */
			uint64_t gap = (uint64_t)(1e9 / t->conn_rate);
			if (t->next_conn < now - gap)
				t->next_conn = now - gap;
			t->next_conn += gap;
		}
		sess_connect(sess_at(t, i));
	}
}

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	uint64_t last_sweep = 0;
	struct io_uring_cqe *cqe;
	while (t->live_sess > 0) {
		uint64_t now = now_ns();
		schedule(t, now);
		if (now - last_sweep >= RB_SWEEP_NS) {
			sweep(t, now);
			last_sweep = now;
		}
		if (t->live_sess <= 0)
			break;
		uint64_t wait = RB_SWEEP_NS;
		if (C.rate > 0 && t->next_due > now && t->next_due - now < wait)
			wait = t->next_due - now;
		if (t->cq_len > 0) {
			uint64_t at = t->connq_at[t->cq_head];
			if (t->conn_rate > 0 && t->next_conn > at)
				at = t->next_conn;
			wait = at > now ? (at - now < wait ? at - now : wait) : 0;
		}
		if (wait < 100000)
			wait = 100000;
		struct __kernel_timespec ts = {.tv_sec = (long long)(wait / 1000000000ull),
		                               .tv_nsec = (long long)(wait % 1000000000ull)};
		int r = io_uring_submit_and_wait_timeout(&t->ring.uring, &cqe, 1, &ts, NULL);
		if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
			set_abort("io_uring: %s", strerror(-r));
		}
		unsigned head, n = 0;
		io_uring_for_each_cqe(&t->ring.uring, head, cqe)
		{
			on_cqe(t, cqe);
			n++;
		}
		io_uring_cq_advance(&t->ring.uring, n);
	}
	io_uring_submit(&t->ring.uring);
	atomic_fetch_add(&g_threads_done, 1);
	return NULL;
}

/* ---- setup ---- */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: ringmx-bench [options]\n"
	    "Sends SMTP load to a server and reports messages/s, latency and errors.\n"
	    "\n"
	    "  --server [LABEL=]HOST:PORT\n"
	    "                        the server (default 127.0.0.1:2525; [v6addr]:port);\n"
	    "                        LABEL names it in a --sweep table\n"
	    "  --peer [LABEL=]HOST:PORT\n"
	    "                        another server for the same runs (up to 16): each\n"
	    "                        session count runs against --server, then each peer\n"
	    "                        in turn, side by side in one table (a sweep of\n"
	    "                        --sessions alone without --sweep)\n"
	    "  --sweep N,N,...       one run per session count (e.g. 1,10,100,500), each for\n"
	    "                        --duration or --messages; prints one table: msg/s and\n"
	    "                        end-of-data p50/p99 per target, then p50 by phase\n"
	    "                        (no --sessions; --json writes the sweep's document)\n"
	    "  --threads N           sending threads, each with its own io_uring (default:\n"
	    "                        the number of CPUs, at most --sessions)\n"
	    "  --sessions N          concurrent SMTP sessions (default 100)\n"
	    "  --messages M          messages to send in all (default 10000 when no\n"
	    "                        --duration)\n"
	    "  --duration S          send for S seconds instead (fractions allowed)\n"
	    "  --size SPEC           message size in octets, headers included: BYTES,\n"
	    "                        MIN-MAX (uniform) or exp:MEAN; k and m suffixes\n"
	    "                        (default 1024)\n"
	    "  --eml-dir DIR         send the *.eml files of DIR instead, picked at random\n"
	    "  --rcpts N             recipients per message (default 1)\n"
	    "  --from ADDR           envelope sender (default bench@ringmx-bench.invalid)\n"
	    "  --to ADDR             recipient (default bench@example.com); with --rcpts N\n"
	    "                        the others are LOCAL+i@DOMAIN\n"
	    "  --helo NAME           EHLO name (default ringmx-bench.invalid)\n"
	    "  --no-pipelining       one command per round trip (default: pipeline MAIL,\n"
	    "                        RCPT and DATA when the server offers PIPELINING)\n"
	    "  --bdat                send the content as one BDAT chunk (RFC 3030 CHUNKING)\n"
	    "                        instead of DATA, pipelined with MAIL and RCPT\n"
	    "  --tls MODE            none | starttls | implicit (default none)\n"
	    "  --sni NAME            TLS server name (default: the host of --server)\n"
	    "  --msgs-per-conn N     QUIT and reconnect after N messages (default 0: never)\n"
	    "  --connect-rate N      open at most N connections per second (default: all\n"
	    "                        at once)\n"
	    "  --rate N              open loop: N messages per second on a fixed schedule,\n"
	    "                        latency counted from each message's due time\n"
	    "  --idle                open the sessions, EHLO, hold them for --duration (default\n"
	    "                        10 s), QUIT: for memory checks\n"
	    "  --timeout S           limit on every wait: connect, each reply (default 30)\n"
	    "  --max-errors N        stop after N errors (default 1000; 0 = never)\n"
	    "  --json FILE           write the results as JSON (- = stdout)\n"
	    "  --plot DIR            write plot data and SVG charts (needs gnuplot)\n"
	    "  --label NAME          name of this run in JSON and plots (default\n"
	    "                        ringmx-bench)\n"
	    "  --progress, --no-progress\n"
	    "                        the live progress line (default: when stderr is a\n"
	    "                        terminal)\n"
	    "  -h, --help            this text\n"
	    "\n"
	    "The summary gives latency per phase (connect, ehlo, mail, rcpt, data,\n"
	    "end_of_data, quit, ...; pipelined_*: the replies to one pipelined MAIL..DATA\n"
	    "write, each timed from it; --no-pipelining for per-command round trips).\n"
	    "\n"
	    "Exit status: 0 every message got its 250 and nothing failed (in every run of\n"
	    "a sweep); 1 errors (see the summary); 2 bad options or the run could not\n"
	    "start.\n");
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ringmx-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see --help)\n", stderr);
	va_end(ap);
	exit(2);
}

static long num(const char *opt, const char *s, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		die_usage("%s: '%s' is not a number from %ld to %ld", opt, s, min, max);
	return v;
}

static double fnum(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min && v <= max))
		die_usage("%s: '%s' is not a number from %g to %g", opt, s, min, max);
	return v;
}

/* An address goes between <> in MAIL/RCPT as given: no brackets, spaces
 * or line ends that would make it a second command. */
static void check_addr(const char *opt, const char *a)
{
	if (strpbrk(a, "<> \r\n"))
		die_usage("%s: '%s' is not a bare address", opt, a);
}

/* Looks up the address of <tg> (exits 2 when there is none). */
static void resolve(struct target *tg)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	int r = getaddrinfo(tg->t.host, tg->t.port, &hints, &ai);
	if (r != 0) {
		fprintf(stderr, "ringmx-bench: %s: %s\n", tg->t.host, gai_strerror(r));
		exit(2);
	}
	memcpy(&tg->addr, ai->ai_addr, ai->ai_addrlen);
	tg->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void target_arg(const char *opt, const char *arg, struct target *tg)
{
	char err[256];

	if (rb_target_parse(arg, &tg->t, err, sizeof(err)) < 0)
		die_usage("%s: %s", opt, err);
}

static void parse_args(int argc, char **argv)
{
	enum {
		O_SERVER = 256,
		O_THREADS,
		O_SESSIONS,
		O_MESSAGES,
		O_DURATION,
		O_SIZE,
		O_EML,
		O_RCPTS,
		O_FROM,
		O_TO,
		O_HELO,
		O_NOPIPE,
		O_TLS,
		O_SNI,
		O_PERCONN,
		O_CRATE,
		O_RATE,
		O_IDLE,
		O_BDAT,
		O_TIMEOUT,
		O_MAXERR,
		O_JSON,
		O_PLOT,
		O_LABEL,
		O_PROGRESS,
		O_NOPROGRESS,
		O_PEER,
		O_SWEEP,
	};
	static const struct option opts[] = {
	    {"server", 1, 0, O_SERVER},
	    {"threads", 1, 0, O_THREADS},
	    {"sessions", 1, 0, O_SESSIONS},
	    {"messages", 1, 0, O_MESSAGES},
	    {"duration", 1, 0, O_DURATION},
	    {"size", 1, 0, O_SIZE},
	    {"eml-dir", 1, 0, O_EML},
	    {"rcpts", 1, 0, O_RCPTS},
	    {"from", 1, 0, O_FROM},
	    {"to", 1, 0, O_TO},
	    {"helo", 1, 0, O_HELO},
	    {"no-pipelining", 0, 0, O_NOPIPE},
	    {"tls", 1, 0, O_TLS},
	    {"sni", 1, 0, O_SNI},
	    {"msgs-per-conn", 1, 0, O_PERCONN},
	    {"connect-rate", 1, 0, O_CRATE},
	    {"rate", 1, 0, O_RATE},
	    {"idle", 0, 0, O_IDLE},
	    {"bdat", 0, 0, O_BDAT},
	    {"timeout", 1, 0, O_TIMEOUT},
	    {"max-errors", 1, 0, O_MAXERR},
	    {"json", 1, 0, O_JSON},
	    {"plot", 1, 0, O_PLOT},
	    {"label", 1, 0, O_LABEL},
	    {"progress", 0, 0, O_PROGRESS},
	    {"no-progress", 0, 0, O_NOPROGRESS},
	    {"peer", 1, 0, O_PEER},
	    {"sweep", 1, 0, O_SWEEP},
	    {"help", 0, 0, 'h'},
	    {0, 0, 0, 0},
	};
	const char *server = "127.0.0.1:2525", *sweep = NULL;
	C.ntargets = 1;
	C.sessions = 100;
	C.rcpts = 1;
	C.timeout = 30;
	C.max_errors = 1000;
	C.pipelining = true;
	C.from = "bench@ringmx-bench.invalid";
	C.to = "bench@example.com";
	C.helo = "ringmx-bench.invalid";
	C.size_arg = "1024";
	C.label = "ringmx-bench";
	C.progress = -1;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_SERVER:
			server = optarg;
			break;
		case O_PEER:
			if (C.ntargets == 1 + RB_PEER_MAX)
				die_usage("--peer: at most %d", RB_PEER_MAX);
			target_arg("--peer", optarg, &C.targets[C.ntargets++]);
			break;
		case O_SWEEP:
			sweep = optarg;
			break;
		case O_THREADS:
			C.threads_asked = (int)num("--threads", optarg, 1, 256);
			break;
		case O_SESSIONS:
			C.sessions = (int)num("--sessions", optarg, 1, 1000000);
			C.sessions_set = true;
			break;
		case O_MESSAGES:
			C.messages = num("--messages", optarg, 1, 1L << 40);
			break;
		case O_DURATION:
			C.duration = fnum("--duration", optarg, 0.01, 1e7);
			break;
		case O_SIZE:
			C.size_arg = optarg;
			break;
		case O_EML:
			C.eml_dir = optarg;
			break;
		case O_RCPTS:
			C.rcpts = (int)num("--rcpts", optarg, 1, RB_MAX_RCPTS);
			break;
		case O_FROM:
			C.from = optarg;
			break;
		case O_TO:
			C.to = optarg;
			break;
		case O_HELO:
			C.helo = optarg;
			break;
		case O_NOPIPE:
			C.pipelining = false;
			break;
		case O_TLS:
			if (!strcmp(optarg, "none"))
				C.tls = TLS_NONE;
			else if (!strcmp(optarg, "starttls"))
				C.tls = TLS_STARTTLS;
			else if (!strcmp(optarg, "implicit"))
				C.tls = TLS_IMPLICIT;
			else
				die_usage("--tls: '%s' is not none, starttls or implicit", optarg);
			break;
		case O_SNI:
			C.sni_arg = optarg;
			break;
		case O_PERCONN:
			C.per_conn = num("--msgs-per-conn", optarg, 0, 1L << 40);
			break;
		case O_CRATE:
			C.conn_rate = fnum("--connect-rate", optarg, 0, 1e7);
			break;
		case O_RATE:
			C.rate = fnum("--rate", optarg, 0.001, 1e8);
			break;
		case O_BDAT:
			C.bdat = true;
			break;
		case O_IDLE:
			C.idle = true;
			break;
		case O_TIMEOUT:
			C.timeout = fnum("--timeout", optarg, 0.01, 86400);
			break;
		case O_MAXERR:
			C.max_errors = num("--max-errors", optarg, 0, 1L << 40);
			break;
		case O_JSON:
			C.json = optarg;
			break;
		case O_PLOT:
			C.plot = optarg;
			break;
		case O_LABEL:
			C.label = optarg;
			C.label_set = true;
			break;
		case O_PROGRESS:
			C.progress = 1;
			break;
		case O_NOPROGRESS:
			C.progress = 0;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (C.messages && C.duration > 0)
		die_usage("--messages and --duration exclude each other");
	if (C.idle && C.messages)
		die_usage("--idle sends no messages: use --duration");
	if (C.idle && C.duration <= 0)
		C.duration = 10;
	if (!C.messages && C.duration <= 0)
		C.messages = 10000;
	if (C.threads_asked == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		C.threads_asked = n > 0 ? (int)n : 1;
	}
	char err[256];
	target_arg("--server", server, &C.targets[0]);
	if (sweep) {
		if (C.sessions_set)
			die_usage("--sweep and --sessions exclude each other");
		C.nsweep = rb_sweep_parse(sweep, C.sweep, 1000000, err, sizeof(err));
		if (C.nsweep < 0)
			die_usage("--sweep: %s", err);
	} else if (C.ntargets > 1) {
		C.sweep[0] = C.sessions; /* the same run against each target */
		C.nsweep = 1;
	}
	if (C.nsweep && C.idle)
		die_usage("--idle sends no messages: no --sweep or --peer");
	if (C.nsweep && C.plot)
		die_usage("--plot draws one run: not with --sweep or --peer");
	check_addr("--from", C.from);
	check_addr("--to", C.to);
	if (C.rcpts > 1 && !strchr(C.to, '@'))
		die_usage("--to: '%s' needs a domain for --rcpts > 1", C.to);
	for (const char *p = C.helo; *p; p++)
		if (*p <= ' ' || *p >= 0x7f)
			die_usage("--helo: '%s' is not a name", C.helo);
	if (rb_size_parse(C.size_arg, &C.size, err, sizeof(err)) < 0)
		die_usage("--size: %s", err);
	for (int i = 0; i < C.ntargets; i++)
		resolve(&C.targets[i]);
	if (!C.label_set && strchr(server, '='))
		C.label = C.targets[0].t.label;
}

/* The pipelined group MAIL, RCPT..., DATA, built once: every message sends
 * the same bytes, and without pipelining each line is a slice of it. */
static void build_group(void)
{
	struct buf b = BUF_INIT;
	C.rcpt_off = calloc((size_t)C.rcpts + 2, sizeof(*C.rcpt_off));
	if (!C.rcpt_off)
		goto oom;
	if (buf_printf(&b, "MAIL FROM:<%s>\r\n", C.from) < 0)
		goto oom;
	C.mail_len = b.len;
	const char *at = strchr(C.to, '@');
	for (int i = 0; i < C.rcpts; i++) {
		C.rcpt_off[i] = b.len;
		int r = i == 0 ? buf_printf(&b, "RCPT TO:<%s>\r\n", C.to)
		               : buf_printf(&b, "RCPT TO:<%.*s+%d%s>\r\n", (int)(at - C.to), C.to,
		                            i, at);
		if (r < 0)
			goto oom;
	}
	C.rcpt_off[C.rcpts] = b.len;
	if (buf_append_str(&b, "DATA\r\n") < 0)
		goto oom;
	C.rcpt_off[C.rcpts + 1] = b.len;
	C.group = b.p;
	C.group_len = b.len;
	C.hdr_cap = 256 + strlen(C.from) + strlen(C.to);
	struct buf e = BUF_INIT;
	if (buf_printf(&e, "EHLO %s\r\n", C.helo) < 0)
		goto oom;
	C.ehlo = e.p;
	C.ehlo_len = e.len;
	return;
oom:
	fprintf(stderr, "ringmx-bench: out of memory\n");
	exit(2);
}

static void raise_nofile(void)
{
	struct rlimit rl;
	int most = C.sessions;
	for (int i = 0; i < C.nsweep; i++)
		most = C.sweep[i] > most ? C.sweep[i] : most;
	rlim_t need = (rlim_t)most + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur >= need)
		return;
	if (rl.rlim_max < need) {
		fprintf(stderr,
		        "ringmx-bench: %d sessions need %lu open files; the hard limit is %lu "
		        "(raise it: ulimit -Hn, or LimitNOFILE=)\n",
		        most, (unsigned long)need, (unsigned long)rl.rlim_max);
		exit(2);
	}
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fprintf(stderr, "ringmx-bench: setrlimit(NOFILE, %lu): %s\n", (unsigned long)need,
		        strerror(errno));
		exit(2);
	}
}

static void thr_init(struct thr *t, int id, int nsess)
{
	memset(t, 0, sizeof(*t));
	t->id = id;
	t->nsess = nsess;
	t->live_sess = nsess;
	t->stride = (sizeof(struct sess) + C.hdr_cap + 63) & ~(size_t)63;
	t->mem = aligned_alloc(64, t->stride * (size_t)nsess);
	t->connq = calloc((size_t)nsess, sizeof(int));
	t->connq_at = calloc((size_t)nsess, sizeof(uint64_t));
	t->ready = calloc((size_t)nsess, sizeof(int));
	t->due_cap = 1 << 16;
	t->due = C.rate > 0 ? calloc((size_t)t->due_cap, sizeof(uint64_t)) : NULL;
	if (!t->mem || !t->connq || !t->connq_at || !t->ready || (C.rate > 0 && !t->due)) {
		fprintf(stderr, "ringmx-bench: out of memory for %d sessions\n", nsess);
		exit(2);
	}
	memset(t->mem, 0, t->stride * (size_t)nsess);
	for (int i = 0; i < nsess; i++) {
		struct sess *s = sess_at(t, i);
		s->t = t;
		conn_init(&s->rc, -1, OP_RECV, OP_SEND);
		connq_push(t, i, 0);
	}
	t->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1) ^ now_ns();
	if (!t->rng)
		t->rng = 1;
	t->rate = C.rate / C.threads;
	t->conn_rate = C.conn_rate / C.threads;
	/* a session has at most a connect or a recv, a send and a cancel in
	   flight; the SQ is flushed whenever it fills. The ring is set up here
	   and used by the sending thread alone, one at a time: no
	   SINGLE_ISSUER. */
	unsigned cq = (unsigned)nsess * 4 + 64;
	int r = ring_setup(&t->ring, 1024, cq < 2048 ? 2048 : cq > 65536 ? 65536 : cq, false);
	if (r < 0) {
		fprintf(stderr, "ringmx-bench: io_uring_queue_init: %s\n", strerror(-r));
		exit(2);
	}
	/* receive buffers for the multishot receives: about one a session, as
	   each had its own receive before (more replies than buffers at once:
	   ENOBUFS, and io/conn arms the receive again), 16 at least and
	   RB_RX_BUFS at most. A buffer goes back to the kernel as soon as its
	   bytes are copied into the session's reply buffer, and only the part
	   a receive wrote is ever touched. */
	unsigned nbufs = 16;
	while (nbufs < (unsigned)nsess && nbufs < RB_RX_BUFS)
		nbufs *= 2;
	r = ring_bufs_setup(&t->ring, nbufs);
	if (r < 0) {
		fprintf(stderr, "ringmx-bench: provided buffer ring: %s\n", strerror(-r));
		exit(2);
	}
}

/* After the thread is joined: gives back what thr_init() took, so that
 * the next run of a sweep starts from nothing. Every session is closed by
 * now (conn_fini()); only their reply buffers are left. The provided
 * buffers are unmapped here with the sizes ring_bufs_setup() mapped: io/
 * has no teardown of its own, as a worker's ring lives as long as the
 * process. */
static void thr_fini(struct thr *t)
{
	for (int i = 0; i < t->nsess; i++)
		buf_free(&sess_at(t, i)->in);
	io_uring_queue_exit(&t->ring.uring);
	if (t->ring.br)
		munmap(t->ring.br, t->ring.nbufs * sizeof(struct io_uring_buf));
	if (t->ring.rx)
		munmap(t->ring.rx, (size_t)t->ring.nbufs * RX_BUF_SIZE);
	free(t->mem);
	free(t->connq);
	free(t->connq_at);
	free(t->ready);
	free(t->due);
}

/* ---- the main thread: progress, series, reports ---- */

static struct rb_result R;
static struct rb_hist sec_hist;
static size_t series_cap;

static void collect(double t)
{
	uint64_t msgs = 0, errs = 0, bytes = 0;
	rb_hist_reset(&sec_hist);
	for (int i = 0; i < C.threads; i++) {
		struct rb_live *l = &T[i].live;
		msgs += atomic_load(&l->messages);
		errs += atomic_load(&l->errors);
		bytes += atomic_load(&l->bytes);
		rb_hist_drain(&l->msg_lat, &sec_hist);
		for (int p = 0; p < RB_PH__N; p++)
			rb_hist_drain(&l->phase[p], &R.phase[p]);
	}
	rb_hist_merge(&sec_hist, &R.msg_lat);
	if (R.nseries == series_cap) {
		series_cap = series_cap ? series_cap * 2 : 256;
		struct rb_second *n = realloc(R.series, series_cap * sizeof(*n));
		if (!n)
			return;
		R.series = n;
	}
	struct rb_second *sec = &R.series[R.nseries++];
	sec->t = t;
	sec->messages = msgs - R.messages;
	sec->errors = errs - R.errors;
	sec->bytes = bytes - R.bytes;
	sec->sessions = atomic_load(&g_open);
	sec->p50_ms = rb_hist_percentile(&sec_hist, 50) / 1000.0;
	sec->p99_ms = rb_hist_percentile(&sec_hist, 99) / 1000.0;
	R.messages = msgs;
	R.errors = errs;
	R.bytes = bytes;
}

static void progress_line(double t)
{
	const struct rb_second *last = R.nseries ? &R.series[R.nseries - 1] : NULL;
	double slot = last ? (R.nseries > 1 ? last->t - R.series[R.nseries - 2].t : last->t) : 1;
	fprintf(stderr,
	        "\r\033[K%7.1fs  %9.0f msg/s now  %9.0f avg  sessions %6lld  errors %llu  "
	        "p50 %.2f ms  p99 %.2f ms",
	        t, last && slot > 0 ? last->messages / slot : 0.0, t > 0 ? R.messages / t : 0.0,
	        (long long)atomic_load(&g_open), (unsigned long long)R.errors,
	        last ? last->p50_ms : 0.0, last ? last->p99_ms : 0.0);
	fflush(stderr);
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&g_interrupted, 1);
	int st = atomic_load(&g_stop);
	atomic_store(&g_stop, st ? 2 : 1);
}

/* One run: <sessions> sessions against <tg>, with everything else as the
 * options say. Fills R (the caller owns its series and its aborted text
 * from then on) and returns whether it went clean. Main thread; the
 * sending threads are started and joined here. */
static bool run_one(const struct target *tg, int sessions, bool progress)
{
	C.server = tg->t.server;
	C.host = tg->t.host;
	memcpy(&C.addr, &tg->addr, tg->addrlen);
	C.addrlen = tg->addrlen;
	C.sni = C.sni_arg ? C.sni_arg : C.host;
	C.sessions = sessions;
	C.threads = C.threads_asked < sessions ? C.threads_asked : sessions;

	memset(&R, 0, sizeof(R));
	series_cap = 0;
	atomic_store(&g_stop, 0);
	atomic_store(&g_greeted, 0);
	atomic_store(&g_conn_fail, 0);
	atomic_store(&g_errors, 0);
	atomic_store(&g_open, 0);
	atomic_store(&g_peak, 0);
	atomic_store(&g_threads_done, 0);
	atomic_store(&g_abort_set, 0);
	g_abort_buf[0] = '\0';
	if (atomic_load(&g_interrupted))
		atomic_store(&g_stop, 1); /* a signal came before the reset */

	R.label = C.nsweep ? tg->t.label : C.label;
	R.server = C.server;
	R.threads = C.threads;
	R.sessions = C.sessions;
	R.rcpts = C.rcpts;
	R.messages_asked = C.messages;
	R.duration_asked = C.duration;
	R.size_desc = C.size_desc;
	R.tls = C.tls == TLS_STARTTLS ? "starttls" : C.tls == TLS_IMPLICIT ? "implicit" : "none";
	R.pipelining = C.pipelining;
	R.rate_asked = C.rate;
	R.connect_rate = C.conn_rate;

	atomic_store(&g_budget, C.messages);
	T = calloc((size_t)C.threads, sizeof(*T));
	if (!T) {
		fprintf(stderr, "ringmx-bench: out of memory\n");
		exit(2);
	}
	for (int i = 0; i < C.threads; i++)
		thr_init(&T[i], i, C.sessions / C.threads + (i < C.sessions % C.threads));
	g_t0 = now_ns();
	g_end = C.duration > 0 ? g_t0 + (uint64_t)(C.duration * 1e9) : 0;
	for (int i = 0; i < C.threads; i++) {
		T[i].next_due = g_t0;
		T[i].next_conn = g_t0;
		if (pthread_create(&T[i].tid, NULL, thr_main, &T[i]) != 0) {
			fprintf(stderr, "ringmx-bench: pthread_create failed\n");
			exit(2);
		}
	}

	uint64_t next_sec = g_t0 + 1000000000ull;
	bool unreachable_checked = false;
	uint64_t stop_at = 0;
	while (atomic_load(&g_threads_done) < C.threads) {
		struct timespec ts = {0, (long)RB_TICK_NS};
		nanosleep(&ts, NULL);
		uint64_t now = now_ns();
		if (now >= next_sec) {
			collect((double)(next_sec - g_t0) / 1e9);
			next_sec += 1000000000ull;
		}
		/* a server that nobody reaches, or that never greets anyone: say
		   so instead of retrying until --max-errors */
		if (!unreachable_checked && !atomic_load(&g_greeted) &&
		    atomic_load(&g_errors) >= (C.sessions < 20 ? C.sessions : 20)) {
			unreachable_checked = true;
			bool refused = atomic_load(&g_conn_fail) > 0;
			enum rb_err k = refused ? RB_ERR_CONNECT : RB_ERR__N;
			for (int e = 0; e < RB_ERR__N && k == RB_ERR__N; e++)
				for (int i = 0; i < C.threads; i++)
					if (atomic_load(&T[i].live.first_set[e]))
						k = (enum rb_err)e;
			char first[160] = "";
			for (int i = 0; k != RB_ERR__N && i < C.threads; i++)
				if (atomic_load(&T[i].live.first_set[k])) {
					snprintf(first, sizeof(first), "%s", T[i].live.first[k]);
					break;
				}
			set_abort("%s: %s",
			          refused ? "cannot reach the server" : "no session got a greeting",
			          first);
		}
		/* every wait is bounded, but bound the whole too: a stop asked for
		   (or the end of --duration) drops what is still busy after
		   --timeout more */
		if (!stop_at && (atomic_load(&g_stop) || (g_end && now >= g_end)))
			stop_at = now + (uint64_t)(C.timeout * 1e9) + 1000000000ull;
		if (stop_at && now >= stop_at && atomic_load(&g_stop) < 2) {
			set_abort("sessions still busy %g s after the end", C.timeout + 1);
		}
		if (progress)
			progress_line((double)(now - g_t0) / 1e9);
	}
	for (int i = 0; i < C.threads; i++)
		pthread_join(T[i].tid, NULL);
	uint64_t t_end = now_ns();
	collect((double)(t_end - g_t0) / 1e9);
	if (progress)
		fputs("\r\033[K", stderr);

	R.elapsed_s = (double)(t_end - g_t0) / 1e9;
	uint64_t last = 0;
	for (int i = 0; i < C.threads; i++)
		last = T[i].last_done > last ? T[i].last_done : last;
	R.send_s = last > g_t0 ? (double)(last - g_t0) / 1e9 : R.elapsed_s;
	for (int i = 0; i < C.threads; i++) {
		struct rb_live *l = &T[i].live;
		R.attempted += atomic_load(&l->attempted);
		R.failed += atomic_load(&l->failed);
		R.opened += atomic_load(&l->opened);
		for (int k = 0; k < RB_ERR__N; k++) {
			R.err[k] += atomic_load(&l->err[k]);
			if (!R.first[k][0] && atomic_load(&l->first_set[k]))
				snprintf(R.first[k], sizeof(R.first[k]), "%s", l->first[k]);
		}
		for (int c = 0; c < 1000; c++) {
			R.replies[c] += atomic_load(&l->replies[c]);
			R.err_code[c] += atomic_load(&l->err_code[c]);
		}
		thr_fini(&T[i]);
	}
	free(T);
	T = NULL;
	R.peak_open = (uint64_t)atomic_load(&g_peak);
	/* the threads are joined: g_abort_buf is still */
	char why[sizeof(g_abort_buf)] = "";
	if (atomic_load(&g_abort_set))
		snprintf(why, sizeof(why), "%s", g_abort_buf);
	else if (atomic_load(&g_stop))
		snprintf(why, sizeof(why), "interrupted");
	else if (C.messages > 0 && R.attempted < (uint64_t)C.messages)
		/* a bug or a corner nobody planned for must not pass as a full run */
		snprintf(why, sizeof(why), "%llu of the %ld messages were never started",
		         (unsigned long long)((uint64_t)C.messages - R.attempted), C.messages);
	R.aborted = why[0] ? strdup(why) : NULL;
	if (why[0] && !R.aborted)
		R.aborted = "out of memory";
	return !R.aborted && R.errors == 0 && R.failed == 0 && (C.idle || R.messages > 0);
}

/* The phase whose p50/p99 a sweep's table shows: the 250 to the content. */
static enum rb_phase content_phase(void)
{
	if (!C.bdat)
		return RB_PH_EOD;
	return C.pipelining ? RB_PH_PIPE_BDAT : RB_PH_BDAT;
}

/* --sweep / --peer: every session count, the targets in turn within
 * each; one table and one JSON document at the end. */
static int run_sweep(bool progress)
{
	size_t ncells = (size_t)C.nsweep * (size_t)C.ntargets;
	struct rb_result **cells = calloc(ncells, sizeof(*cells));
	struct rb_target tgs[1 + RB_PEER_MAX];
	bool all_ok = true;
	int rc = 0;

	if (!cells) {
		fprintf(stderr, "ringmx-bench: out of memory\n");
		return 2;
	}
	for (int j = 0; j < C.ntargets; j++)
		tgs[j] = C.targets[j].t;
	enum rb_phase ph = content_phase();
	for (int i = 0; i < C.nsweep && !atomic_load(&g_interrupted); i++) {
		for (int j = 0; j < C.ntargets && !atomic_load(&g_interrupted); j++) {
			struct rb_result *c = malloc(sizeof(*c));

			if (!c) {
				fprintf(stderr, "ringmx-bench: out of memory\n");
				return 2;
			}
			all_ok &= run_one(&C.targets[j], C.sweep[i], progress);
			memcpy(c, &R, sizeof(*c));
			cells[(size_t)i * (size_t)C.ntargets + (size_t)j] = c;
			if (progress)
				fprintf(
				    stderr,
				    "sweep: %s, %d sessions: %.0f msg/s, %s p50 %.3f ms, "
				    "p99 %.3f ms%s%s\n",
				    tgs[j].label, C.sweep[i], rb_result_rate(c), rb_phase_names[ph],
				    rb_hist_percentile(&c->phase[ph], 50) / 1e3,
				    rb_hist_percentile(&c->phase[ph], 99) / 1e3,
				    c->aborted ? ", aborted: " : "", c->aborted ? c->aborted : "");
		}
	}
	if (atomic_load(&g_interrupted))
		all_ok = false;
	struct rb_sweep w = {
	    .sessions = C.sweep,
	    .nsessions = (size_t)C.nsweep,
	    .targets = tgs,
	    .ntargets = (size_t)C.ntargets,
	    .cells = cells,
	    .phase = ph,
	};
	rb_sweep_table(stdout, &w);
	if (C.json && rb_sweep_json(C.json, &w) < 0) {
		fprintf(stderr, "ringmx-bench: --json %s: %s\n", C.json, strerror(errno));
		rc = 1;
	}
	if (atomic_load(&g_interrupted))
		fprintf(stderr, "ringmx-bench: interrupted\n");
	for (size_t k = 0; k < ncells; k++) {
		if (cells[k])
			free(cells[k]->series);
		free(cells[k]);
	}
	free(cells);
	return all_ok ? rc : 1;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	raise_nofile();
	char err[512];
	static char size_desc[300];
	if (C.eml_dir) {
		if (rb_corpus_load(&C.corpus, C.eml_dir, 64u << 20, err, sizeof(err)) < 0) {
			fprintf(stderr, "ringmx-bench: --eml-dir: %s\n", err);
			return 2;
		}
		if (C.bdat) {
			C.corpus.bytes = 0;
			for (size_t i = 0; i < C.corpus.n; i++) {
				C.corpus.len[i] =
				    rb_corpus_unstuff(C.corpus.data[i], C.corpus.len[i]);
				C.corpus.bytes += C.corpus.len[i];
			}
		}
		snprintf(size_desc, sizeof(size_desc), "eml:%s (%zu files, mean %zu octets)",
		         C.eml_dir, C.corpus.n, C.corpus.bytes / C.corpus.n);
	} else {
		C.fill = rb_fill_new((size_t)rb_size_max(&C.size));
		if (!C.fill) {
			fprintf(stderr, "ringmx-bench: out of memory for %s octet messages\n",
			        C.size_arg);
			return 2;
		}
		snprintf(size_desc, sizeof(size_desc), "%s", C.size_arg);
	}
	C.size_desc = size_desc;
	if (C.tls != TLS_NONE) {
		if (tls_client_ctx_new(&C.tls_ctx, err, sizeof(err)) < 0) {
			fprintf(stderr, "ringmx-bench: TLS: %s\n", err);
			return 2;
		}
	}
	build_group();
	bool progress = C.progress == 1 || (C.progress == -1 && isatty(STDERR_FILENO));
	if (C.nsweep)
		return run_sweep(progress);

	bool ok = run_one(&C.targets[0], C.sessions, progress);
	rb_report_table(stdout, &R);
	int rc = 0;
	if (C.json && rb_report_json(C.json, &R) < 0) {
		fprintf(stderr, "ringmx-bench: --json %s: %s\n", C.json, strerror(errno));
		rc = 1;
	}
	if (C.plot) {
		int r = rb_report_plot(C.plot, &R, err, sizeof(err));
		if (r == -ENOENT)
			fprintf(stderr,
			        "ringmx-bench: --plot: gnuplot is not installed (apt-get "
			        "install gnuplot-nox); the data files are in %s\n",
			        C.plot);
		else if (r < 0)
			fprintf(stderr, "ringmx-bench: --plot: %s\n", err);
		if (r < 0)
			rc = 1;
	}
	if (R.aborted)
		fprintf(stderr, "ringmx-bench: %s\n", R.aborted);
	return ok ? rc : 1;
}
