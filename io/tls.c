/* tls: TLS for ringmx connections, both sides (the server for SMTP clients,
 * the client for the relay's next hops), OpenSSL 3 over memory, never over
 * a socket. io/ receives and sends through io_uring; this module
 * only turns ciphertext into plaintext and back. See tls.h for the calls a
 * worker makes per receive and per send.
 *
 * The transport is one custom BIO per connection instead of a pair of
 * BIO_s_mem: its read side copies from what tls_conn_feed() stored and its
 * write side appends to a struct buf that tls_conn_take() hands over whole.
 * So the ciphertext is copied once in each direction (as a mem BIO would
 * too), and a connection between bursts holds no transport memory at all: a
 * mem BIO keeps the largest buffer it ever held, and a BIO pair allocates
 * both of its ring buffers up front. With SSL_MODE_RELEASE_BUFFERS OpenSSL
 * frees its own record buffers when idle as well.
 *
 * Certificates: one SSL_CTX per certificate/key pair, all set up alike; the
 * first is the one every SSL starts on and holds the SNI callback, which
 * moves a connection to the SSL_CTX whose certificate names the SNI host.
 * Session tickets are encrypted with the first context's keys (OpenSSL uses
 * the "session_ctx" for them), so resumption works whichever certificate
 * was chosen. The contexts are built at startup and shared read-only by all
 * workers; a tls_conn is single-threaded.
 *
 * The client context is one SSL_CTX in cert[0] with no certificate, marked
 * TLS_X_CLIENT. Its connections share everything below tls_conn_new*():
 * the transport, the early-write buffer, the error handling. */
#include "io/tls.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Key exchange groups: no finite-field DH, whose big groups (ffdhe8192)
 * would let a client make each handshake cost the server tens of ms. */
#define TLS_GROUPS "X25519:P-256:X448:P-384:P-521"
/* TLS 1.3 tickets per full handshake: an MTA keeps one session per next
 * hop, and each ticket costs an encryption and ~200 bytes on the wire. */
#define TLS_NUM_TICKETS 1
#define TLS_SID_CTX     "ringmx"

/* Connection flags (struct tls_conn <flags>). */
#define TLS_C_UP     0x1u  /* handshake finished */
#define TLS_C_FAILED 0x2u  /* fatal error: every later call fails with -EPROTO */
#define TLS_C_CLOSED 0x4u  /* the peer sent close_notify */
#define TLS_C_SHUT   0x8u  /* our close_notify is queued: no more writes */
#define TLS_C_NOMEM  0x10u /* the transport BIO could not store output */

/* Context flags (struct tls_ctx <flags>). */
#define TLS_X_CLIENT 0x1u /* a client context: tls_conn_new_client() only */
#define TLS_X_VERIFY 0x2u /* client: the server's certificate must verify */

/* The client's TLS 1.2 list. Opportunistic TLS (RFC 7435): anything a next
 * hop accepts is better than the plaintext a failed handshake falls back
 * to, so OpenSSL's defaults (no anonymous or null ciphers) rather than the
 * server's strict list; TLS 1.0/1.1 stay refused all the same. */
#define TLS_CLIENT_CIPHERS "DEFAULT"

struct tls_cert {
	SSL_CTX *ctx;
	X509 *leaf; /* borrowed from <ctx>: the names SNI is matched against */
};

struct tls_ctx {
	unsigned n;
	unsigned flags;                      /* TLS_X_* */
	struct tls_cert cert[TLS_MAX_CERTS]; /* [0]: the default, and the session ctx */
};

struct tls_conn {
	SSL *ssl;
	struct buf in; /* ciphertext fed; OpenSSL has read in.p[0..in_off) */
	size_t in_off;
	struct buf out;    /* ciphertext for tls_conn_take() */
	struct buf early;  /* plaintext written before the handshake finished */
	unsigned long err; /* the OpenSSL error that failed the connection, or 0 */
	const char *why;   /* otherwise what failed it */
	unsigned flags;    /* TLS_C_* */
};

static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *tls_bio_meth;

/* ---- The transport BIO: reads what was fed, writes into <out> ---- */

static int tls_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static int tls_bio_read(BIO *b, char *p, int len)
{
	struct tls_conn *t = BIO_get_data(b);
	size_t avail = t->in.len - t->in_off, n = (size_t)len;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (avail == 0) {
		BIO_set_retry_read(b); /* "want read": more must be fed */
		return -1;
	}
	if (n > avail)
		n = avail;
	memcpy(p, t->in.p + t->in_off, n);
	t->in_off += n;
	if (t->in_off == t->in.len) {
		/* All read: an idle connection keeps no input memory. */
		buf_free(&t->in);
		t->in_off = 0;
	}
	return (int)n;
}

static int tls_bio_write(BIO *b, const char *p, int len)
{
	struct tls_conn *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (buf_append(&t->out, p, (size_t)len)) {
		/* No retry flag: OpenSSL treats this as fatal (SSL_ERROR_SYSCALL). */
		t->flags |= TLS_C_NOMEM;
		return -1;
	}
	return len;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_conn *t = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1; /* every write is already "sent" into <out> */
	case BIO_CTRL_PENDING:
		return t ? (long)(t->in.len - t->in_off) : 0;
	case BIO_CTRL_WPENDING:
	case BIO_CTRL_EOF:
	default:
		return 0;
	}
}

static void tls_init_once(void)
{
	BIO_METHOD *m;

	/* NO_ATEXIT: no global teardown racing workers when the process exits
	 * without joining them (die()); the OS takes the memory back. */
	if (!OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS |
	                          OPENSSL_INIT_NO_ATEXIT,
	                      NULL))
		return;
	m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringmx-ring");
	if (!m)
		return;
	if (!BIO_meth_set_create(m, tls_bio_create) || !BIO_meth_set_read(m, tls_bio_read) ||
	    !BIO_meth_set_write(m, tls_bio_write) || !BIO_meth_set_ctrl(m, tls_bio_ctrl)) {
		BIO_meth_free(m);
		return;
	}
	tls_bio_meth = m;
}

int tls_global_init(void)
{
	pthread_once(&tls_once, tls_init_once);
	ERR_clear_error();
	return tls_bio_meth ? 0 : -ENOMEM;
}

/* ---- The context ---- */

/* The first queued OpenSSL error (the root cause; later ones only say which
 * call failed) as text; empties the queue. */
static const char *tls_err_text(void)
{
	unsigned long e = ERR_get_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return r ? r : "unknown error";
}

static int __attribute__((format(printf, 4, 5)))
tls_ctx_err(int rc, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	ERR_clear_error();
	return rc;
}

/* Index of the certificate that names <host>: exact names first, then
 * wildcards ("*.example.com" covers one label only); 0 when none does. */
static unsigned tls_pick(const struct tls_ctx *x, const char *host)
{
	static const unsigned pass[2] = {X509_CHECK_FLAG_NO_WILDCARDS, 0};
	const unsigned common =
	    X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

	for (unsigned p = 0; p < 2; p++) {
		for (unsigned i = 0; i < x->n; i++) {
			if (X509_check_host(x->cert[i].leaf, host, 0, common | pass[p], NULL) == 1)
				return i;
		}
	}
	return 0;
}

/* SNI (RFC 6066 3): an unknown name gets the default certificate rather
 * than an alert; mail clients seldom check names, and a refusal would only
 * push them back to plaintext. */
static int tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	const struct tls_ctx *x = arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	unsigned i;

	if (!host || x->n < 2)
		return SSL_TLSEXT_ERR_OK;
	i = tls_pick(x, host);
	if (i != 0 && !SSL_set_SSL_CTX(ssl, x->cert[i].ctx)) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* Builds the SSL_CTX of one pair. */
static int tls_cert_load(struct tls_cert *c, const struct tls_cert_conf *cc, const char *ciphers,
                         char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	unsigned long e;

	if (!ctx)
		return tls_ctx_err(-ENOMEM, err, errlen, "TLS: cannot create a context: %s",
		                   tls_err_text());
	c->ctx = ctx;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
		return tls_ctx_err(-EINVAL, err, errlen, "TLS: cannot limit versions: %s",
		                   tls_err_text());
	/* Renegotiation: a CPU sink and a source of attacks (CVE-2009-3555),
	 * useless to SMTP. Server preference: our list is ordered by strength;
	 * ChaCha20 wins only when the client prefers it (no AES hardware). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	                             SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Level 2: refuses keys under 112 bits of strength (RSA < 2048) at
	 * load, and SHA-1 signatures. */
	SSL_CTX_set_security_level(ctx, 2);
	if (!SSL_CTX_set_cipher_list(ctx, ciphers))
		return tls_ctx_err(-EINVAL, err, errlen, "TLS cipher list '%.100s': %s", ciphers,
		                   tls_err_text());
	if (!SSL_CTX_set1_groups_list(ctx, TLS_GROUPS))
		return tls_ctx_err(-EINVAL, err, errlen, "TLS groups: %s", tls_err_text());
	/* Resumption by tickets only: stateless, so no session cache shared
	 * (and locked) between the workers, and no memory per session. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, TLS_NUM_TICKETS);
	if (!SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CTX,
	                                    sizeof(TLS_SID_CTX) - 1))
		return tls_ctx_err(-ENOMEM, err, errlen, "TLS: %s", tls_err_text());

	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, cc->cert_file) != 1)
		return tls_ctx_err(-EINVAL, err, errlen, "TLS certificate %s: %s", cc->cert_file,
		                   tls_err_text());
	if (SSL_CTX_use_PrivateKey_file(ctx, cc->key_file, SSL_FILETYPE_PEM) != 1) {
		e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
		     ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
			return tls_ctx_err(-EINVAL, err, errlen,
			                   "TLS key %s does not match certificate %s", cc->key_file,
			                   cc->cert_file);
		return tls_ctx_err(-EINVAL, err, errlen, "TLS key %s: %s", cc->key_file,
		                   tls_err_text());
	}
	/* A key of another type than the certificate's is accepted above
	 * and fails only here. */
	if (SSL_CTX_check_private_key(ctx) != 1)
		return tls_ctx_err(-EINVAL, err, errlen, "TLS key %s does not match certificate %s",
		                   cc->key_file, cc->cert_file);
	c->leaf = SSL_CTX_get0_certificate(ctx);
	if (!c->leaf)
		return tls_ctx_err(-EINVAL, err, errlen, "TLS certificate %s: no certificate",
		                   cc->cert_file);
	return 0;
}

int tls_ctx_new(struct tls_ctx **out, const struct tls_cert_conf *certs, unsigned ncerts,
                const char *ciphers, char *err, size_t errlen)
{
	struct tls_ctx *x;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (ncerts == 0 || ncerts > TLS_MAX_CERTS)
		return tls_ctx_err(-EINVAL, err, errlen, "TLS: 1 to %d certificates, not %u",
		                   TLS_MAX_CERTS, ncerts);
	if (tls_global_init() < 0)
		return tls_ctx_err(-ENOMEM, err, errlen, "TLS: cannot initialize OpenSSL");
	x = calloc(1, sizeof(*x));
	if (!x)
		return tls_ctx_err(-ENOMEM, err, errlen, "TLS: out of memory");
	for (unsigned i = 0; i < ncerts; i++) {
		x->n = i + 1; /* so that tls_ctx_free() frees what was built */
		rc = tls_cert_load(&x->cert[i], &certs[i], ciphers ? ciphers : TLS_DEFAULT_CIPHERS,
		                   err, errlen);
		if (rc < 0)
			goto fail;
	}
	SSL_CTX_set_tlsext_servername_callback(x->cert[0].ctx, tls_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(x->cert[0].ctx, x);
	*out = x;
	return 0;
fail:
	tls_ctx_free(x);
	return rc;
}

void tls_ctx_free(struct tls_ctx *x)
{
	if (!x)
		return;
	for (unsigned i = 0; i < x->n; i++)
		SSL_CTX_free(x->cert[i].ctx);
	free(x);
}

int tls_client_ctx_new(struct tls_ctx **out, char *err, size_t errlen)
{
	struct tls_ctx *x;
	SSL_CTX *ctx;
	int rc = -EINVAL;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (tls_global_init() < 0)
		return tls_ctx_err(-ENOMEM, err, errlen, "TLS: cannot initialize OpenSSL");
	x = calloc(1, sizeof(*x));
	if (!x)
		return tls_ctx_err(-ENOMEM, err, errlen, "TLS: out of memory");
	x->flags = TLS_X_CLIENT;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		rc = tls_ctx_err(-ENOMEM, err, errlen, "TLS: cannot create a client context: %s",
		                 tls_err_text());
		goto fail;
	}
	x->cert[0].ctx = ctx;
	x->n = 1;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
		rc = tls_ctx_err(-EINVAL, err, errlen, "TLS: cannot limit versions: %s",
		                 tls_err_text());
		goto fail;
	}
	/* No tickets asked for (TLS 1.2): nothing resumes client sessions. */
	SSL_CTX_set_options(ctx,
	                    SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* Level 1 (80 bits: RSA >= 1024) whatever the system's openssl.cnf
	 * says: an old next hop's key still beats plaintext. */
	SSL_CTX_set_security_level(ctx, 1);
	if (!SSL_CTX_set_cipher_list(ctx, TLS_CLIENT_CIPHERS)) {
		rc =
		    tls_ctx_err(-EINVAL, err, errlen, "TLS client cipher list: %s", tls_err_text());
		goto fail;
	}
	/* Opportunistic (Postfix's smtp_tls_security_level = may): encrypt
	 * without authenticating; tls_client_ctx_verify() turns checks on. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	*out = x;
	return 0;
fail:
	tls_ctx_free(x);
	return rc;
}

int tls_client_ctx_verify(struct tls_ctx *x, const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = x->cert[0].ctx;
	int ok;

	if (err && errlen)
		err[0] = '\0';
	if (!(x->flags & TLS_X_CLIENT))
		return tls_ctx_err(-EINVAL, err, errlen, "TLS: not a client context");
	ERR_clear_error();
	ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
	             : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1)
		return tls_ctx_err(-EINVAL, err, errlen, "TLS CA file %s: %s",
		                   ca_file ? ca_file : "(system default)", tls_err_text());
	x->flags |= TLS_X_VERIFY;
	return 0;
}

/* ---- Connections ---- */

/* A connection on <ctx> with its transport BIO, in neither role yet. */
static struct tls_conn *tls_conn_alloc(SSL_CTX *ctx)
{
	struct tls_conn *t;
	BIO *bio;

	if (!tls_bio_meth)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->in = (struct buf)BUF_INIT;
	t->out = (struct buf)BUF_INIT;
	t->early = (struct buf)BUF_INIT;
	t->ssl = SSL_new(ctx);
	bio = BIO_new(tls_bio_meth);
	if (!t->ssl || !bio) {
		BIO_free(bio);
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	BIO_set_data(bio, t);
	SSL_set_bio(t->ssl, bio, bio); /* one BIO both ways: SSL owns its one reference */
	return t;
}

struct tls_conn *tls_conn_new(struct tls_ctx *x)
{
	struct tls_conn *t;

	if (x->flags & TLS_X_CLIENT)
		return NULL;
	t = tls_conn_alloc(x->cert[0].ctx);
	if (t)
		SSL_set_accept_state(t->ssl);
	return t;
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees the BIO */
	buf_free(&t->in);
	buf_free(&t->out);
	buf_free(&t->early);
	free(t);
	ERR_clear_error();
}

/* After an SSL call returned <ret>: 0 when it only wants more input,
 * -ESHUTDOWN on close_notify, else marks <t> failed and returns -EPROTO or
 * -ENOMEM. Empties the thread's error queue. */
static int tls_status(struct tls_conn *t, int ret)
{
	int rc = -EPROTO;

	switch (SSL_get_error(t->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		ERR_clear_error();
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		t->flags |= TLS_C_CLOSED;
		return -ESHUTDOWN;
	case SSL_ERROR_SSL:
		t->err = ERR_peek_error();
		if (!t->err)
			t->why = "TLS protocol error";
		break;
	case SSL_ERROR_WANT_WRITE:
		/* The BIO never refuses a write; seen only if that changes. */
		t->why = "TLS write blocked";
		break;
	default: /* SSL_ERROR_SYSCALL: the BIO failed */
		t->err = ERR_peek_error();
		if (t->flags & TLS_C_NOMEM) {
			t->err = 0;
			t->why = "out of memory";
			rc = -ENOMEM;
		} else if (!t->err) {
			t->why = "TLS transport error";
		}
		break;
	}
	ERR_clear_error();
	t->flags |= TLS_C_FAILED;
	return rc;
}

/* Out of memory for bytes of the stream: the connection cannot go on. */
static int tls_nomem(struct tls_conn *t)
{
	t->flags |= TLS_C_FAILED | TLS_C_NOMEM;
	t->err = 0;
	t->why = "out of memory";
	return -ENOMEM;
}

/* Encrypts <n> bytes into <out>. The BIO takes every write whole, so
 * anything short of all of it is fatal. Returns 0 or a tls_status() error. */
static int tls_write_all(struct tls_conn *t, const void *p, size_t n)
{
	size_t w = 0;
	int r;

	ERR_clear_error();
	r = SSL_write_ex(t->ssl, p, n, &w);
	if (r == 1 && w == n)
		return 0;
	r = tls_status(t, r);
	if (r == 0) {
		t->flags |= TLS_C_FAILED;
		t->why = "TLS write incomplete";
		r = -EPROTO;
	}
	return r;
}

/* The handshake step: runs it as far as the input allows; once it is done,
 * encrypts what was written early. Returns 0 or a tls_status() error. */
static int tls_handshake(struct tls_conn *t)
{
	struct buf early;
	int r;

	if (t->flags & TLS_C_UP)
		return 0;
	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r != 1)
		return tls_status(t, r);
	t->flags |= TLS_C_UP;
	if (t->early.len == 0)
		return 0;
	early = t->early;
	t->early = (struct buf)BUF_INIT;
	r = tls_write_all(t, early.p, early.len);
	buf_free(&early);
	return r;
}

/* RFC 6066 3: SNI is a DNS host name, without the trailing dot, never an
 * address literal. Copies <sni> into <host> (<cap> octets) that way;
 * false when there is nothing to send. */
static bool tls_sni_host(const char *sni, char *host, size_t cap)
{
	size_t n = sni ? strlen(sni) : 0;
	bool alpha = false;

	if (n && sni[n - 1] == '.')
		n--;
	if (n == 0 || n >= cap || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)sni[i];

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_')
			alpha = true;
		else if (!(ch >= '0' && ch <= '9') && ch != '.')
			return false; /* ':' of IPv6, '[', a space...: not a host name */
	}
	if (!alpha)
		return false; /* dotted quad */
	memcpy(host, sni, n);
	host[n] = '\0';
	return true;
}

struct tls_conn *tls_conn_new_client(struct tls_ctx *x, const char *sni)
{
	struct tls_conn *t;
	char host[256];
	bool named;

	if (!(x->flags & TLS_X_CLIENT))
		return NULL;
	t = tls_conn_alloc(x->cert[0].ctx);
	if (!t)
		return NULL;
	SSL_set_connect_state(t->ssl);
	named = tls_sni_host(sni, host, sizeof(host));
	if (named && !SSL_set_tlsext_host_name(t->ssl, host))
		goto fail;
	if (x->flags & TLS_X_VERIFY) {
		/* Without a name there is nothing to check the certificate
		 * against: the handshake fails rather than trust any. */
		if (!named || !SSL_set1_host(t->ssl, host))
			goto fail;
		SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
	}
	/* The ClientHello now, so that tls_conn_pending()/tls_conn_take()
	 * have it before anything is fed. */
	if (tls_handshake(t) < 0)
		goto fail;
	return t;
fail:
	tls_conn_free(t);
	return NULL;
}

int tls_conn_feed(struct tls_conn *t, const void *cipher, size_t n)
{
	if (t->flags & TLS_C_FAILED)
		return t->flags & TLS_C_NOMEM ? -ENOMEM : -EPROTO;
	if (t->flags & TLS_C_CLOSED)
		return 0; /* after close_notify nothing more counts */
	if (n == 0)
		return 0;
	if (t->in_off) {
		/* What is left is less than a record: cheap to move. */
		buf_consume(&t->in, t->in_off);
		t->in_off = 0;
	}
	if (buf_append(&t->in, cipher, n))
		return tls_nomem(t); /* a hole in the stream: no way on */
	return tls_handshake(t);
}

ssize_t tls_conn_read(struct tls_conn *t, void *plain, size_t cap)
{
	size_t got = 0;
	int r;

	if (t->flags & TLS_C_FAILED)
		return t->flags & TLS_C_NOMEM ? -ENOMEM : -EPROTO;
	if (t->flags & TLS_C_CLOSED)
		return -ESHUTDOWN;
	r = tls_handshake(t);
	if (r < 0 || !(t->flags & TLS_C_UP) || cap == 0)
		return r;
	if (cap > INT_MAX)
		cap = INT_MAX;
	ERR_clear_error();
	if (SSL_read_ex(t->ssl, plain, cap, &got) == 1)
		return (ssize_t)got;
	return tls_status(t, 0);
}

int tls_conn_write(struct tls_conn *t, const void *plain, size_t n)
{
	if (t->flags & TLS_C_FAILED)
		return t->flags & TLS_C_NOMEM ? -ENOMEM : -EPROTO;
	if (t->flags & (TLS_C_SHUT | TLS_C_CLOSED))
		return -EPROTO;
	if (n == 0)
		return 0;
	if (!(t->flags & TLS_C_UP))
		return buf_append(&t->early, plain, n) ? tls_nomem(t) : 0;
	return tls_write_all(t, plain, n);
}

int tls_conn_shutdown(struct tls_conn *t)
{
	if (t->flags & TLS_C_FAILED)
		return -EPROTO;
	if (t->flags & TLS_C_SHUT)
		return 0;
	t->flags |= TLS_C_SHUT;
	if (!(t->flags & TLS_C_UP))
		return 0; /* nothing to close yet; OpenSSL refuses mid-handshake */
	ERR_clear_error();
	/* 0 = our close_notify is out, the peer's not seen: we do not wait. */
	if (SSL_shutdown(t->ssl) < 0 && (t->flags & TLS_C_NOMEM))
		return tls_status(t, -1);
	ERR_clear_error();
	return 0;
}

size_t tls_conn_pending(const struct tls_conn *t)
{
	return t->out.len;
}

ssize_t tls_conn_take(struct tls_conn *t, struct buf *cipher_out)
{
	size_t n = t->out.len;

	if (n == 0)
		return 0;
	if (cipher_out->len == 0) {
		struct buf old = *cipher_out;

		*cipher_out = t->out;
		t->out = old;
	} else if (buf_append(cipher_out, t->out.p, n)) {
		return -ENOMEM;
	}
	buf_free(&t->out);
	return (ssize_t)n;
}

bool tls_conn_established(const struct tls_conn *t)
{
	return (t->flags & (TLS_C_UP | TLS_C_FAILED)) == TLS_C_UP;
}

bool tls_conn_resumed(const struct tls_conn *t)
{
	return (t->flags & TLS_C_UP) && SSL_session_reused(t->ssl);
}

const char *tls_conn_version(const struct tls_conn *t)
{
	return (t->flags & TLS_C_UP) ? SSL_get_version(t->ssl) : "";
}

const char *tls_conn_protocol(const struct tls_conn *t)
{
	return t && t->ssl ? SSL_get_version(t->ssl) : "unknown";
}

const char *tls_conn_cipher(const struct tls_conn *t)
{
	const char *c = (t->flags & TLS_C_UP) ? SSL_get_cipher_name(t->ssl) : NULL;

	return c ? c : "";
}

int tls_conn_cipher_bits(const struct tls_conn *t)
{
	return (t->flags & TLS_C_UP) ? SSL_get_cipher_bits(t->ssl, NULL) : 0;
}

const char *tls_conn_sni(const struct tls_conn *t)
{
	const char *h = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
	size_t n = 0;

	if (!h)
		return NULL;
	/* The peer's bytes (OpenSSL only refuses NUL): a host name or nothing,
	 * so that logs get no control characters. */
	for (; h[n]; n++) {
		unsigned char ch = (unsigned char)h[n];

		if (n == 253 || !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
			return NULL;
	}
	return n ? h : NULL;
}

const char *tls_conn_error(const struct tls_conn *t)
{
	const char *r;

	if (!(t->flags & TLS_C_FAILED))
		return "";
	if (t->why)
		return t->why;
	r = ERR_reason_error_string(t->err);
	return r ? r : "TLS error";
}
