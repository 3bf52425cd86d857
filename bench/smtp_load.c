/* smtp_load: the project's own SMTP load generator, for the figures in
 * docs/benchmarks.md that smtp-source(1) cannot produce because it speaks
 * no TLS: messages per second in plain text, over STARTTLS (RFC 3207) and
 * over implicit TLS (port 465 style, RFC 8314), and TLS handshakes per
 * second, full or resumed.
 *
 * One thread per session, each with a blocking socket (and an SSL over its
 * fd); the sessions share the message (or handshake) budget through one
 * atomic counter, so a slow session simply takes fewer of them. Every wait
 * is bounded by SO_RCVTIMEO/SO_SNDTIMEO (30 s; on Linux SO_SNDTIMEO bounds
 * connect() too), so the program always ends. It prints one summary line of
 * key=value pairs to stdout and a count per kind of error (with the first
 * example) to stderr; it exits 0 only if every message got its 250 (or
 * every handshake connection completed).
 *
 * usage: smtp_load [options] HOST:PORT      (see usage() below) */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define LOAD_IO_TIMEOUT_S  30    /* SO_RCVTIMEO/SO_SNDTIMEO of every socket */
#define LOAD_RBUF          4096  /* per-session receive buffer */
#define LOAD_WBUF          16384 /* per-session send buffer: one write per batch */
#define LOAD_LINE          1024  /* longest reply line kept (longer ones are cut) */
#define LOAD_TEXT          200   /* error detail / first reply line kept */
#define LOAD_LINE_LEN      70    /* body line length, without CRLF */
#define LOAD_MAX_ERR_KINDS 64    /* distinct error kinds counted */
#define LOAD_THREAD_STACK  (256 * 1024)

#define SMTP_CAP_PIPELINING 0x1u /* EHLO reply lists PIPELINING (RFC 2920) */
#define SMTP_CAP_STARTTLS   0x2u /* EHLO reply lists STARTTLS (RFC 3207) */

enum load_tls { LOAD_TLS_NONE, LOAD_TLS_STARTTLS, LOAD_TLS_IMPLICIT };

static const char *const load_tls_names[] = {
    [LOAD_TLS_NONE] = "none",
    [LOAD_TLS_STARTTLS] = "starttls",
    [LOAD_TLS_IMPLICIT] = "implicit",
};

/* Everything the sessions read; set up by main() before any thread starts
 * and never written afterwards. */
struct load_conf {
	const char *target; /* HOST:PORT as given */
	struct addrinfo *ai;
	int sessions;
	long messages;
	long body_len;
	bool reuse; /* -d: messages back to back on one connection */
	enum load_tls tls;
	const char *sni; /* NULL: no SNI */
	long handshakes; /* > 0: handshake mode */
	bool resume;
	bool pipelining;
	int tls_max; /* 0 or TLS1_2_VERSION / TLS1_3_VERSION */
	const char *from;
	const char *to;
	int rcpts;
	SSL_CTX *ctx;
	char *mail_cmd; /* "MAIL FROM:<...>\r\n" */
	size_t mail_len;
	char *rcpt_cmds; /* every "RCPT TO:<...>\r\n", one after another */
	size_t rcpt_len;
	char **rcpt_one; /* each RCPT line alone (no pipelining) */
	char *hdr_fixed; /* From/To/Date headers */
	size_t hdr_len;
	char *body; /* body_len bytes of text lines, then ".\r\n" */
	size_t body_size;
	long pid; /* for Message-IDs */
};

static struct load_conf conf;

/* Shared counters. next is the budget counter the sessions take from. */
static atomic_long load_next;
static atomic_long load_ok;
static atomic_long load_failed;
static atomic_long load_tls_done;    /* TLS handshakes completed */
static atomic_long load_tls_resumed; /* of which resumed */
static atomic_long load_conns;       /* TCP connections established */

/* Error kinds: "<stage> <code or 'io'>" with a count and the first
 * example. Errors are rare, so one mutex is fine. */
struct load_err {
	char key[48];
	long count;
	char first[LOAD_TEXT];
};

static pthread_mutex_t load_err_lock = PTHREAD_MUTEX_INITIALIZER;
static struct load_err load_errs[LOAD_MAX_ERR_KINDS];
static int load_nerrs;
static long load_errs_dropped;

/* One connection: socket, optional TLS, buffered reads and writes. */
struct conn {
	int fd;
	SSL *ssl;
	unsigned caps;       /* SMTP_CAP_* of the last EHLO reply */
	size_t rpos, rlen;   /* unread bytes are rbuf[rpos..rlen) */
	size_t wlen;         /* bytes waiting in wbuf */
	char err[LOAD_TEXT]; /* what the last failing I/O call said */
	char rbuf[LOAD_RBUF];
	char wbuf[LOAD_WBUF];
};

struct load_session {
	pthread_t tid;
	int id;
	SSL_SESSION *tls_sess; /* --resume: last session of this thread */
	struct conn c;
};

struct smtp_reply {
	int code;
	char text[LOAD_TEXT]; /* first line, for error reports */
};

static pthread_barrier_t load_start;

/* Protocol version and cipher of the first TLS handshake, for the summary:
 * written by the thread that wins the flag, read by main() after the joins. */
static atomic_flag load_tls_seen_flag = ATOMIC_FLAG_INIT;
static char load_tls_seen[80] = "-";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("smtp_load: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Counts one error of kind <stage> <what> (e.g. "rcpt", "550"), keeping
 * <detail> if it is the first of its kind. Any thread. */
static void load_err_note(const char *stage, const char *what, const char *detail)
{
	char key[sizeof(load_errs[0].key)];
	int i;

	snprintf(key, sizeof(key), "%s %s", stage, what);
	pthread_mutex_lock(&load_err_lock);
	for (i = 0; i < load_nerrs; i++)
		if (!strcmp(load_errs[i].key, key))
			break;
	if (i == load_nerrs) {
		if (load_nerrs == LOAD_MAX_ERR_KINDS) {
			load_errs_dropped++;
			goto out;
		}
		load_nerrs++;
		snprintf(load_errs[i].key, sizeof(load_errs[i].key), "%s", key);
		snprintf(load_errs[i].first, sizeof(load_errs[i].first), "%s", detail);
	}
	load_errs[i].count++;
out:
	pthread_mutex_unlock(&load_err_lock);
}

/* An I/O failure (err < 0) or an unexpected reply (r->code). */
static void load_err_reply(struct conn *c, const char *stage, int err, const struct smtp_reply *r)
{
	char code[8];

	if (err < 0) {
		load_err_note(stage, "io", c->err);
		return;
	}
	snprintf(code, sizeof(code), "%d", r->code);
	load_err_note(stage, code, r->text);
}

/* ---- connection I/O ------------------------------------------------- */

/* Describes why an SSL call returned <ret> into c->err; returns -EIO. */
static int conn_ssl_err(struct conn *c, const char *op, int ret)
{
	int e = SSL_get_error(c->ssl, ret);
	unsigned long le;
	char buf[160];

	switch (e) {
	case SSL_ERROR_ZERO_RETURN:
		snprintf(c->err, sizeof(c->err), "%s: peer sent close_notify", op);
		break;
	case SSL_ERROR_SYSCALL:
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			snprintf(c->err, sizeof(c->err), "%s: timeout", op);
		else if (errno == 0)
			snprintf(c->err, sizeof(c->err), "%s: unexpected EOF", op);
		else
			snprintf(c->err, sizeof(c->err), "%s: %s", op, strerror(errno));
		break;
	case SSL_ERROR_SSL:
		le = ERR_get_error();
		ERR_error_string_n(le, buf, sizeof(buf));
		snprintf(c->err, sizeof(c->err), "%s: %s", op, buf);
		break;
	default:
		snprintf(c->err, sizeof(c->err), "%s: SSL error %d", op, e);
		break;
	}
	ERR_clear_error();
	return -EIO;
}

static int conn_errno(struct conn *c, const char *op, int err)
{
	if (err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS)
		snprintf(c->err, sizeof(c->err), "%s: timeout", op);
	else
		snprintf(c->err, sizeof(c->err), "%s: %s", op, strerror(err));
	return -err;
}

/* Writes all <len> bytes at <p>, bypassing wbuf. Returns 0 or < 0. */
static int conn_write_raw(struct conn *c, const char *p, size_t len)
{
	size_t n;
	ssize_t w;
	int ret;

	while (len > 0) {
		if (c->ssl) {
			ERR_clear_error();
			ret = SSL_write_ex(c->ssl, p, len, &n);
			if (ret <= 0)
				return conn_ssl_err(c, "tls write", ret);
		} else {
			w = send(c->fd, p, len, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return conn_errno(c, "send", errno);
			}
			n = (size_t)w;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static int conn_flush(struct conn *c)
{
	int err;

	if (c->wlen == 0)
		return 0;
	err = conn_write_raw(c, c->wbuf, c->wlen);
	c->wlen = 0;
	return err;
}

/* Queues <len> bytes at <p> for the next conn_flush(); writes through when
 * they do not fit. Returns 0 or < 0. */
static int conn_out(struct conn *c, const char *p, size_t len)
{
	int err;

	if (c->wlen + len <= sizeof(c->wbuf)) {
		memcpy(c->wbuf + c->wlen, p, len);
		c->wlen += len;
		return 0;
	}
	err = conn_flush(c);
	if (err < 0)
		return err;
	if (len >= sizeof(c->wbuf))
		return conn_write_raw(c, p, len);
	memcpy(c->wbuf, p, len);
	c->wlen = len;
	return 0;
}

static int conn_outs(struct conn *c, const char *s)
{
	return conn_out(c, s, strlen(s));
}

/* Refills rbuf (which must be empty). Returns 0 or < 0 (EOF is -EPIPE). */
static int conn_fill(struct conn *c)
{
	size_t n;
	ssize_t r;
	int ret;

	c->rpos = c->rlen = 0;
	if (c->ssl) {
		ERR_clear_error();
		ret = SSL_read_ex(c->ssl, c->rbuf, sizeof(c->rbuf), &n);
		if (ret <= 0)
			return conn_ssl_err(c, "tls read", ret);
	} else {
		do
			r = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			return conn_errno(c, "recv", errno);
		if (r == 0) {
			snprintf(c->err, sizeof(c->err), "recv: connection closed by peer");
			return -EPIPE;
		}
		n = (size_t)r;
	}
	c->rlen = n;
	return 0;
}

/* Reads one line into <line> (NUL-terminated, CRLF stripped, cut at <cap>
 * - 1 bytes, the rest of a long line is skipped). Returns its length or
 * < 0. */
static int conn_getline(struct conn *c, char *line, size_t cap)
{
	size_t n = 0, avail, take, cp;
	const char *p, *lf;
	int err;

	for (;;) {
		if (c->rpos == c->rlen) {
			err = conn_fill(c);
			if (err < 0)
				return err;
		}
		p = c->rbuf + c->rpos;
		avail = c->rlen - c->rpos;
		lf = memchr(p, '\n', avail);
		take = lf ? (size_t)(lf - p) + 1 : avail;
		cp = take < cap - 1 - n ? take : cap - 1 - n;
		memcpy(line + n, p, cp);
		n += cp;
		c->rpos += take;
		if (lf)
			break;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	line[n] = '\0';
	return (int)n;
}

/* Opens a TCP connection with bounded waits and TCP_NODELAY. */
static int conn_connect(struct conn *c)
{
	struct timeval tv = {.tv_sec = LOAD_IO_TIMEOUT_S};
	const struct addrinfo *ai = conf.ai;
	int one = 1, fd;

	c->ssl = NULL;
	c->rpos = c->rlen = c->wlen = 0;
	c->caps = 0;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return conn_errno(c, "socket", errno);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		conn_errno(c, "setsockopt", errno);
		goto fail;
	}
	while (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno == EINTR)
			continue;
		conn_errno(c, "connect", errno);
		goto fail;
	}
	c->fd = fd;
	atomic_fetch_add_explicit(&load_conns, 1, memory_order_relaxed);
	return 0;
fail:
	close(fd);
	return -EIO;
}

/* TLS client handshake over c->fd, resuming <s>'s session if it has one. */
static int conn_tls(struct conn *c, struct load_session *s)
{
	int ret;

	/* RFC 3207 5: nothing the server sent before the handshake may be
	 * used afterwards; data already buffered here is an injection. */
	if (c->rpos != c->rlen) {
		snprintf(c->err, sizeof(c->err), "plaintext data after 220 to STARTTLS");
		return -EPROTO;
	}
	c->ssl = SSL_new(conf.ctx);
	if (!c->ssl) {
		snprintf(c->err, sizeof(c->err), "SSL_new failed");
		return -ENOMEM;
	}
	if (!SSL_set_fd(c->ssl, c->fd) ||
	    (conf.sni && !SSL_set_tlsext_host_name(c->ssl, conf.sni)) ||
	    (s->tls_sess && !SSL_set_session(c->ssl, s->tls_sess))) {
		snprintf(c->err, sizeof(c->err), "SSL setup failed");
		return -EIO;
	}
	ERR_clear_error();
	ret = SSL_connect(c->ssl);
	if (ret != 1)
		return conn_ssl_err(c, "tls handshake", ret);
	atomic_fetch_add_explicit(&load_tls_done, 1, memory_order_relaxed);
	if (!atomic_flag_test_and_set_explicit(&load_tls_seen_flag, memory_order_relaxed))
		snprintf(load_tls_seen, sizeof(load_tls_seen), "%s/%s", SSL_get_version(c->ssl),
		         SSL_get_cipher_name(c->ssl));
	if (SSL_session_reused(c->ssl))
		atomic_fetch_add_explicit(&load_tls_resumed, 1, memory_order_relaxed);
	return 0;
}

/* Closes the connection. With TLS, keeps the session for --resume first
 * (with TLS 1.3 the ticket comes after the handshake; the caller read a
 * reply since, which processed it) and sends close_notify without waiting
 * for the peer's. */
static void conn_close(struct conn *c, struct load_session *s, bool clean)
{
	SSL_SESSION *sess;

	if (c->ssl) {
		if (conf.resume && clean) {
			sess = SSL_get1_session(c->ssl);
			if (sess && SSL_SESSION_is_resumable(sess)) {
				SSL_SESSION_free(s->tls_sess);
				s->tls_sess = sess;
			} else {
				SSL_SESSION_free(sess);
			}
		}
		if (clean)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	close(c->fd);
	c->fd = -1;
}

/* ---- SMTP ------------------------------------------------------------ */

static bool smtp_is_cap(const char *kw, const char *cap)
{
	size_t n = strlen(cap);

	return !strncasecmp(kw, cap, n) && (kw[n] == '\0' || kw[n] == ' ');
}

/* Reads one (possibly multi-line, "250-") reply. With <caps>, records the
 * EHLO keywords it knows there. Returns the reply code or < 0. */
static int smtp_read_reply_caps(struct conn *c, struct smtp_reply *r, unsigned *caps)
{
	char line[LOAD_LINE];
	bool first = true;
	int n;

	if (caps)
		*caps = 0;
	for (;;) {
		n = conn_getline(c, line, sizeof(line));
		if (n < 0)
			return n;
		if (n < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
		    line[2] < '0' || line[2] > '9' || (n > 3 && line[3] != ' ' && line[3] != '-')) {
			snprintf(c->err, sizeof(c->err), "malformed reply: %.100s", line);
			return -EPROTO;
		}
		if (first) {
			r->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
			snprintf(r->text, sizeof(r->text), "%.*s", (int)sizeof(r->text) - 1, line);
			first = false;
		}
		if (caps && n > 4) {
			if (smtp_is_cap(line + 4, "PIPELINING"))
				*caps |= SMTP_CAP_PIPELINING;
			else if (smtp_is_cap(line + 4, "STARTTLS"))
				*caps |= SMTP_CAP_STARTTLS;
		}
		if (n == 3 || line[3] == ' ')
			return r->code;
	}
}

static int smtp_read_reply(struct conn *c, struct smtp_reply *r)
{
	return smtp_read_reply_caps(c, r, NULL);
}

/* Sends <cmd> and reads its reply. Returns the code or < 0. */
static int smtp_cmd(struct conn *c, const char *cmd, struct smtp_reply *r)
{
	int err;

	err = conn_outs(c, cmd);
	if (!err)
		err = conn_flush(c);
	if (err < 0)
		return err;
	return smtp_read_reply(c, r);
}

/* EHLO; keeps the keywords of its reply in c->caps (RFC 3207 4.2: after
 * STARTTLS, only those of the new EHLO count). Returns the code or < 0. */
static int smtp_ehlo(struct conn *c, struct smtp_reply *r)
{
	int err;

	c->caps = 0;
	err = conn_outs(c, "EHLO load.test\r\n");
	if (!err)
		err = conn_flush(c);
	if (err < 0)
		return err;
	return smtp_read_reply_caps(c, r, &c->caps);
}

/* Connects and gets to the point where MAIL may be sent: greeting, EHLO,
 * TLS (and EHLO again after STARTTLS, RFC 3207 4.2, unless <hs_only>, the
 * handshake mode). Returns 0, or < 0 after noting the error and closing. */
static int smtp_open(struct load_session *s, bool hs_only)
{
	struct conn *c = &s->c;
	struct smtp_reply r;
	int code;

	if (conn_connect(c) < 0) {
		load_err_note("connect", "io", c->err);
		return -1;
	}
	if (conf.tls == LOAD_TLS_IMPLICIT && conn_tls(c, s) < 0) {
		load_err_note("tls", "handshake", c->err);
		goto fail;
	}
	code = smtp_read_reply(c, &r);
	if (code != 220) {
		load_err_reply(c, "greeting", code, &r);
		goto fail;
	}
	code = smtp_ehlo(c, &r);
	if (code != 250) {
		load_err_reply(c, "ehlo", code, &r);
		goto fail;
	}
	if (conf.tls != LOAD_TLS_STARTTLS)
		return 0;
	if (!(c->caps & SMTP_CAP_STARTTLS)) {
		load_err_note("starttls", "not offered", r.text);
		goto fail;
	}
	code = smtp_cmd(c, "STARTTLS\r\n", &r);
	if (code != 220) {
		load_err_reply(c, "starttls", code, &r);
		goto fail;
	}
	if (conn_tls(c, s) < 0) {
		load_err_note("tls", "handshake", c->err);
		goto fail;
	}
	if (hs_only)
		return 0;
	code = smtp_ehlo(c, &r);
	if (code != 250) {
		load_err_reply(c, "ehlo-tls", code, &r);
		goto fail;
	}
	return 0;
fail:
	conn_close(c, s, false);
	return -1;
}

/* QUIT, then close. Returns true if the server answered 221 (or any 2xx). */
static bool smtp_quit(struct load_session *s)
{
	struct smtp_reply r;
	int code;

	code = smtp_cmd(&s->c, "QUIT\r\n", &r);
	if (code < 200 || code > 299)
		load_err_reply(&s->c, "quit", code, &r);
	conn_close(&s->c, s, code >= 200 && code <= 299);
	return code >= 200 && code <= 299;
}

/* RSET after a failed transaction. Returns 0 if the session is usable. */
static int smtp_rset(struct conn *c)
{
	struct smtp_reply r;
	int code;

	code = smtp_cmd(c, "RSET\r\n", &r);
	if (code != 250) {
		load_err_reply(c, "rset", code, &r);
		return -1;
	}
	return 0;
}

/* Sends the message content: per-message headers, the fixed ones, the body
 * and the final dot, in as few writes as the buffer allows. */
static int smtp_content(struct load_session *s, long msgno)
{
	struct conn *c = &s->c;
	char hdr[160];
	int n, err;

	n = snprintf(hdr, sizeof(hdr),
	             "Message-ID: <%ld.%d.%ld@load.test>\r\n"
	             "Subject: smtp_load test message %ld\r\n",
	             msgno, s->id, conf.pid, msgno);
	err = conn_out(c, hdr, (size_t)n);
	if (!err)
		err = conn_out(c, conf.hdr_fixed, conf.hdr_len);
	if (!err)
		err = conn_out(c, conf.body, conf.body_size);
	if (!err)
		err = conn_flush(c);
	return err;
}

/* One transaction. Returns 0 when the message got 250, 1 when it failed
 * but the session can go on, -1 when the connection is unusable. */
static int smtp_send_msg(struct load_session *s, long msgno)
{
	bool pipe = conf.pipelining && (s->c.caps & SMTP_CAP_PIPELINING);
	struct conn *c = &s->c;
	struct smtp_reply r;
	bool bad = false;
	int i, code, err;

	if (pipe) {
		/* RFC 2920 3.1: MAIL, RCPT... and DATA in one write; the
		 * replies then come in order. */
		err = conn_out(c, conf.mail_cmd, conf.mail_len);
		if (!err)
			err = conn_out(c, conf.rcpt_cmds, conf.rcpt_len);
		if (!err)
			err = conn_outs(c, "DATA\r\n");
		if (!err)
			err = conn_flush(c);
		if (err < 0) {
			load_err_note("mail", "io", c->err);
			return -1;
		}
		code = smtp_read_reply(c, &r);
		if (code != 250) {
			load_err_reply(c, "mail", code, &r);
			if (code < 0)
				return -1;
			bad = true;
		}
		for (i = 0; i < conf.rcpts; i++) {
			code = smtp_read_reply(c, &r);
			if (code != 250 && code != 251) {
				load_err_reply(c, "rcpt", code, &r);
				if (code < 0)
					return -1;
				bad = true;
			}
		}
		code = smtp_read_reply(c, &r);
		if (code != 354) {
			load_err_reply(c, "data", code, &r);
			if (code < 0)
				return -1;
			return smtp_rset(c) < 0 ? -1 : 1;
		}
		if (bad) {
			/* RFC 2920 3.1: the server took DATA although the
			 * transaction failed; end it with an empty message. */
			code = smtp_cmd(c, ".\r\n", &r);
			if (code < 0)
				return -1;
			return smtp_rset(c) < 0 ? -1 : 1;
		}
	} else {
		code = smtp_cmd(c, conf.mail_cmd, &r);
		if (code != 250) {
			load_err_reply(c, "mail", code, &r);
			goto reset;
		}
		for (i = 0; i < conf.rcpts; i++) {
			code = smtp_cmd(c, conf.rcpt_one[i], &r);
			if (code != 250 && code != 251) {
				load_err_reply(c, "rcpt", code, &r);
				goto reset;
			}
		}
		code = smtp_cmd(c, "DATA\r\n", &r);
		if (code != 354) {
			load_err_reply(c, "data", code, &r);
			goto reset;
		}
	}
	if (smtp_content(s, msgno) < 0) {
		load_err_note("content", "io", c->err);
		return -1;
	}
	code = smtp_read_reply(c, &r);
	if (code != 250) {
		load_err_reply(c, "dot", code, &r);
		return code < 0 ? -1 : 1;
	}
	return 0;
reset:
	if (code < 0)
		return -1;
	return smtp_rset(c) < 0 ? -1 : 1;
}

/* ---- sessions --------------------------------------------------------- */

/* Takes the next message (or handshake) number; -1 once <budget> is spent. */
static long load_take(long budget)
{
	long n = atomic_fetch_add_explicit(&load_next, 1, memory_order_relaxed);

	return n < budget ? n : -1;
}

static void load_count(bool ok)
{
	atomic_fetch_add_explicit(ok ? &load_ok : &load_failed, 1, memory_order_relaxed);
}

/* Message mode: take messages from the shared budget until it is empty. A
 * message whose connection could not be opened counts as failed. */
static void load_messages(struct load_session *s)
{
	bool open = false;
	long msgno;
	int ret;

	while ((msgno = load_take(conf.messages)) >= 0) {
		if (!open) {
			if (smtp_open(s, false) < 0) {
				load_count(false);
				continue;
			}
			open = true;
		}
		ret = smtp_send_msg(s, msgno);
		load_count(ret == 0);
		if (ret < 0) {
			conn_close(&s->c, s, false);
			open = false;
		} else if (!conf.reuse) {
			smtp_quit(s);
			open = false;
		}
	}
	if (open)
		smtp_quit(s);
}

/* Handshake mode: connect, greeting, EHLO, TLS, QUIT. The 221 to QUIT
 * proves the TLS channel works and, with TLS 1.3, makes OpenSSL read the
 * session ticket the server sent after the handshake. */
static void load_handshakes(struct load_session *s)
{
	while (load_take(conf.handshakes) >= 0) {
		if (smtp_open(s, true) < 0) {
			load_count(false);
			continue;
		}
		load_count(smtp_quit(s));
	}
}

static void *load_session_main(void *arg)
{
	struct load_session *s = arg;

	pthread_barrier_wait(&load_start);
	if (conf.handshakes > 0)
		load_handshakes(s);
	else
		load_messages(s);
	SSL_SESSION_free(s->tls_sess);
	s->tls_sess = NULL;
	return NULL;
}

/* ---- set-up ------------------------------------------------------------ */

static char *xstrdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xstrdup_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("out of memory");
	return s;
}

/* Recipient <i> of <n>: the -t address itself when n == 1, else the local
 * part with i + 1 appended (dst@example.com -> dst1@, dst2@, ...). */
static char *load_rcpt(int i, int n)
{
	const char *at = strchr(conf.to, '@');

	if (n == 1)
		return xstrdup_printf("%s", conf.to);
	if (!at)
		return xstrdup_printf("%s%d", conf.to, i + 1);
	return xstrdup_printf("%.*s%d%s", (int)(at - conf.to), conf.to, i + 1, at);
}

/* Builds the commands, the fixed headers and a body of exactly
 * conf.body_len bytes of text lines of about LOAD_LINE_LEN characters plus
 * CRLF (none starting with a dot, so no dot-stuffing is needed). */
static void load_build_message(void)
{
	static const char words[] =
	    "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
	    "incididunt ut labore et dolore magna aliqua Ut enim ad minim veniam quis "
	    "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat ";
	size_t nw = sizeof(words) - 1, rem, len, off = 0, pos = 0, k;
	char date[64], *rc;
	time_t t = time(NULL);
	struct tm tm;
	int i;

	conf.mail_cmd = xstrdup_printf("MAIL FROM:<%s>\r\n", conf.from);
	conf.mail_len = strlen(conf.mail_cmd);
	conf.rcpt_one = calloc((size_t)conf.rcpts, sizeof(*conf.rcpt_one));
	conf.rcpt_cmds = strdup("");
	if (!conf.rcpt_one || !conf.rcpt_cmds)
		die("out of memory");
	for (i = 0; i < conf.rcpts; i++) {
		rc = load_rcpt(i, conf.rcpts);
		conf.rcpt_one[i] = xstrdup_printf("RCPT TO:<%s>\r\n", rc);
		free(rc);
		rc = xstrdup_printf("%s%s", conf.rcpt_cmds, conf.rcpt_one[i]);
		free(conf.rcpt_cmds);
		conf.rcpt_cmds = rc;
	}
	conf.rcpt_len = strlen(conf.rcpt_cmds);

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	rc = load_rcpt(0, conf.rcpts);
	conf.hdr_fixed = xstrdup_printf("From: smtp_load <%s>\r\nTo: <%s>\r\nDate: %s\r\n"
	                                "MIME-Version: 1.0\r\nContent-Type: text/plain; "
	                                "charset=us-ascii\r\n\r\n",
	                                conf.from, rc, date);
	free(rc);
	conf.hdr_len = strlen(conf.hdr_fixed);

	conf.body_size = (size_t)conf.body_len + 3;
	conf.body = malloc(conf.body_size);
	if (!conf.body)
		die("out of memory");
	for (rem = (size_t)conf.body_len; rem >= 2; rem -= len + 2) {
		len = rem - 2 < LOAD_LINE_LEN ? rem - 2 : LOAD_LINE_LEN;
		if (rem - (len + 2) == 1)
			len--; /* leave no single byte: it could not be a line */
		for (k = 0; k < len; k++)
			conf.body[pos + k] = words[(off + k) % nw];
		if (len > 0 && (conf.body[pos] == '.' || conf.body[pos] == ' '))
			conf.body[pos] = 'x';
		off = (off + len + 7) % nw;
		conf.body[pos + len] = '\r';
		conf.body[pos + len + 1] = '\n';
		pos += len + 2;
	}
	if (rem == 1)
		conf.body[pos++] = 'x'; /* -l 1: the only way to get one byte */
	if (pos > 0 && conf.body[pos - 1] != '\n') {
		conf.body[pos++] = '\r'; /* end the last line (-l 1 only) */
		conf.body[pos++] = '\n';
	}
	memcpy(conf.body + pos, ".\r\n", 3);
	conf.body_size = pos + 3;
}

static void load_resolve(const char *target)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	char *host, *port, *end;
	int err;

	host = strdup(target);
	if (!host)
		die("out of memory");
	port = strrchr(host, ':');
	if (!port || port == host || !port[1])
		die("target must be HOST:PORT, got '%s'", target);
	*port++ = '\0';
	if (host[0] == '[') {
		end = strchr(host, ']');
		if (!end || end[1])
			die("bad IPv6 target '%s'", target);
		*end = '\0';
		memmove(host, host + 1, strlen(host));
	}
	err = getaddrinfo(host, port, &hints, &conf.ai);
	if (err)
		die("%s: %s", target, gai_strerror(err));
	free(host);
}

static void load_tls_init(void)
{
	conf.ctx = SSL_CTX_new(TLS_client_method());
	if (!conf.ctx)
		die("SSL_CTX_new failed");
	if (!SSL_CTX_set_min_proto_version(conf.ctx, TLS1_2_VERSION) ||
	    (conf.tls_max && !SSL_CTX_set_max_proto_version(conf.ctx, conf.tls_max)))
		die("cannot set TLS versions");
	/* A benchmark: the peer's certificate is not verified. */
	SSL_CTX_set_verify(conf.ctx, SSL_VERIFY_NONE, NULL);
	/* Sessions are kept per thread by hand (--resume), not in the
	 * context's cache, so that no two threads share one. */
	SSL_CTX_set_session_cache_mode(conf.ctx, SSL_SESS_CACHE_OFF);
}

static void usage(FILE *f)
{
	fputs("usage: smtp_load [options] HOST:PORT\n"
	      "  -s N              concurrent sessions, one thread each (default 100)\n"
	      "  -m N              total messages, shared by the sessions (default 10000)\n"
	      "  -l N              body size in bytes, text lines of ~70 chars (default 1024)\n"
	      "  -d                send messages back to back over one connection; without\n"
	      "                    it every message gets a fresh connection\n"
	      "  -f FROM           envelope sender (default src@load.test)\n"
	      "  -t TO             envelope recipient (default dst@example.com)\n"
	      "  -r N              recipients per message: TO, or dst1@.. dstN@ (default 1)\n"
	      "  --tls MODE        none, starttls (RFC 3207) or implicit (465 style)\n"
	      "  --sni NAME        send NAME as TLS server name indication\n"
	      "  --tls-max V       highest TLS version, 1.2 or 1.3 (default: 1.3)\n"
	      "  --handshakes N    instead of messages, N connections that only do greeting,\n"
	      "                    EHLO, TLS handshake and QUIT (plain: EHLO and QUIT)\n"
	      "  --resume          resume TLS sessions across the connections of a session\n"
	      "  --pipelining      send MAIL, RCPT and DATA in one write (if offered)\n"
	      "Prints one line of key=value figures to stdout, error counts to stderr;\n"
	      "exits 0 only if every message got 250 (every handshake completed).\n",
	      f);
}

static long parse_num(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		die("%s: expected a number in %ld..%ld, got '%s'", opt, min, max, s);
	return v;
}

enum { OPT_TLS = 256, OPT_SNI, OPT_HANDSHAKES, OPT_RESUME, OPT_PIPELINING, OPT_TLS_MAX };

static void load_parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"tls", required_argument, NULL, OPT_TLS},
	    {"sni", required_argument, NULL, OPT_SNI},
	    {"tls-max", required_argument, NULL, OPT_TLS_MAX},
	    {"handshakes", required_argument, NULL, OPT_HANDSHAKES},
	    {"resume", no_argument, NULL, OPT_RESUME},
	    {"pipelining", no_argument, NULL, OPT_PIPELINING},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	unsigned i;
	int opt;

	conf.sessions = 100;
	conf.messages = 10000;
	conf.body_len = 1024;
	conf.from = "src@load.test";
	conf.to = "dst@example.com";
	conf.rcpts = 1;
	while ((opt = getopt_long(argc, argv, "s:m:l:df:t:r:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			conf.sessions = (int)parse_num("-s", optarg, 1, 10000);
			break;
		case 'm':
			conf.messages = parse_num("-m", optarg, 0, LONG_MAX / 2);
			break;
		case 'l':
			conf.body_len = parse_num("-l", optarg, 0, 1L << 30);
			break;
		case 'd':
			conf.reuse = true;
			break;
		case 'f':
			conf.from = optarg;
			break;
		case 't':
			conf.to = optarg;
			break;
		case 'r':
			conf.rcpts = (int)parse_num("-r", optarg, 1, 10000);
			break;
		case OPT_TLS:
			for (i = 0; i < sizeof(load_tls_names) / sizeof(load_tls_names[0]); i++)
				if (!strcmp(optarg, load_tls_names[i]))
					break;
			if (i == sizeof(load_tls_names) / sizeof(load_tls_names[0]))
				die("--tls: expected none, starttls or implicit, got '%s'", optarg);
			conf.tls = (enum load_tls)i;
			break;
		case OPT_SNI:
			conf.sni = optarg;
			break;
		case OPT_TLS_MAX:
			if (!strcmp(optarg, "1.2"))
				conf.tls_max = TLS1_2_VERSION;
			else if (!strcmp(optarg, "1.3"))
				conf.tls_max = TLS1_3_VERSION;
			else
				die("--tls-max: expected 1.2 or 1.3, got '%s'", optarg);
			break;
		case OPT_HANDSHAKES:
			conf.handshakes = parse_num("--handshakes", optarg, 1, LONG_MAX / 2);
			break;
		case OPT_RESUME:
			conf.resume = true;
			break;
		case OPT_PIPELINING:
			conf.pipelining = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		exit(2);
	}
	conf.target = argv[optind];
	if (conf.resume && conf.tls == LOAD_TLS_NONE)
		die("--resume needs --tls starttls or implicit");
}

static void load_report(double secs)
{
	long ok = atomic_load(&load_ok), failed = atomic_load(&load_failed);
	long hs = atomic_load(&load_tls_done);
	bool hs_mode = conf.handshakes > 0;
	int i;

	/* In handshake mode ok/failed count connections; "handshakes" counts
	 * TLS handshakes, or with --tls none the completed EHLO+QUIT
	 * connections. */
	if (hs_mode && conf.tls == LOAD_TLS_NONE)
		hs = ok;
	printf("mode=%s test=%s sessions=%d messages=%ld ok=%ld failed=%ld seconds=%.3f "
	       "msgs_per_s=%.0f handshakes=%ld hs_per_s=%.0f resumed=%ld connections=%ld "
	       "reuse=%d pipelining=%d size=%ld tls=%s\n",
	       load_tls_names[conf.tls], hs_mode ? "handshakes" : "messages", conf.sessions,
	       hs_mode ? 0 : conf.messages, ok, failed, secs, hs_mode ? 0.0 : (double)ok / secs, hs,
	       (double)hs / secs, atomic_load(&load_tls_resumed), atomic_load(&load_conns),
	       conf.reuse, conf.pipelining, hs_mode ? 0 : conf.body_len, load_tls_seen);
	fflush(stdout);
	for (i = 0; i < load_nerrs; i++)
		fprintf(stderr, "smtp_load: error %s: %ld, first: %s\n", load_errs[i].key,
		        load_errs[i].count, load_errs[i].first);
	if (load_errs_dropped)
		fprintf(stderr, "smtp_load: %ld more errors of other kinds\n", load_errs_dropped);
}

int main(int argc, char **argv)
{
	struct load_session *ss;
	pthread_attr_t attr;
	double t0, t1;
	long budget;
	int i, err;

	load_parse_args(argc, argv);
	load_resolve(conf.target);
	if (conf.tls != LOAD_TLS_NONE)
		load_tls_init();
	load_build_message();
	conf.pid = (long)getpid();
	signal(SIGPIPE, SIG_IGN); /* SSL writes with write(2), not MSG_NOSIGNAL */

	ss = calloc((size_t)conf.sessions, sizeof(*ss));
	if (!ss)
		die("out of memory");
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, LOAD_THREAD_STACK);
	pthread_barrier_init(&load_start, NULL, (unsigned)conf.sessions + 1);
	for (i = 0; i < conf.sessions; i++) {
		ss[i].id = i;
		ss[i].c.fd = -1;
		err = pthread_create(&ss[i].tid, &attr, load_session_main, &ss[i]);
		if (err)
			die("pthread_create: %s", strerror(err));
	}
	/* The clock starts when every thread is ready to go. */
	pthread_barrier_wait(&load_start);
	t0 = now();
	for (i = 0; i < conf.sessions; i++)
		pthread_join(ss[i].tid, NULL);
	t1 = now();

	load_report(t1 - t0);
	budget = conf.handshakes > 0 ? conf.handshakes : conf.messages;
	pthread_barrier_destroy(&load_start);
	pthread_attr_destroy(&attr);
	free(ss);
	SSL_CTX_free(conf.ctx);
	freeaddrinfo(conf.ai);
	return atomic_load(&load_ok) == budget && atomic_load(&load_failed) == 0 ? 0 : 1;
}
