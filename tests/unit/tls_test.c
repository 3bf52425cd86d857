/* tls_test: the memory-BIO TLS server (io/tls.c) against a plain OpenSSL
 * client, entirely in memory. Certificates are made at test time with the
 * openssl command line. Bytes move between the two ends in random-sized
 * pieces (a fixed seed, printed on failure), as receives would cut them.
 * Covered: handshakes (TLS 1.3 and 1.2), data both ways, SNI choosing the
 * certificate, the default certificate, old protocol versions refused, a
 * corrupted record, resumption with tickets, close_notify, load errors,
 * calls in any order, and the memory an idle connection holds. Then our
 * client (tls_conn_new_client()) against our server: the ClientHello at
 * creation, data both ways, SNI picking the certificate, verification. */
#include "io/tls.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define PIECE_MAX 700 /* largest piece moved at once; records are cut across pieces */

static char dir[64];
static char path_buf[16][128];
static unsigned npaths;

/* <dir>/<name>, kept for the whole test. */
static const char *path(const char *name)
{
	char *p;

	cr_assert_lt(npaths, 16);
	p = path_buf[npaths++];
	snprintf(p, sizeof(path_buf[0]), "%s/%s", dir, name);
	return p;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	cr_assert_eq(rc, 0, "command failed (%d): %s", rc, cmd);
}

/* A self-signed EC P-256 certificate <name>.crt with key <name>.key. */
static void make_cert(const char *name, const char *cn, const char *san)
{
	sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	   "-subj /CN=%s -addext subjectAltName=%s -days 2 -keyout %s.key -out %s.crt "
	   ">/dev/null 2>&1",
	   dir, cn, san, name, name);
}

/* a: the default (mx.test, *.wild.test); b: other.test, *.b.test;
 * c: CN exact.wild.test (named only by its CN) and SAN c.test;
 * x.key: an EC key of no certificate; r.key: an RSA key. */
static void suite_init(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tls_test.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	npaths = 0;
	make_cert("a", "mx.test", "DNS:mx.test,DNS:*.wild.test");
	make_cert("b", "other.test", "DNS:other.test,DNS:*.b.test");
	make_cert("c", "exact.wild.test", "DNS:c.test");
	sh("cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out x.key "
	   ">/dev/null 2>&1",
	   dir);
	sh("cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out r.key "
	   ">/dev/null 2>&1",
	   dir);
	srand(20240601);
}

static void suite_fini(void)
{
	if (dir[0])
		sh("rm -rf %s", dir);
}

TestSuite(tls, .init = suite_init, .fini = suite_fini, .timeout = 60);

/* ---- The two ends ---- */

static struct tls_ctx *server_ctx(const char *const *names, unsigned n)
{
	struct tls_cert_conf cc[TLS_MAX_CERTS];
	struct tls_ctx *x = NULL;
	char err[256], crt[16], key[16];

	for (unsigned i = 0; i < n; i++) {
		snprintf(crt, sizeof(crt), "%s.crt", names[i]);
		snprintf(key, sizeof(key), "%s.key", names[i]);
		cc[i].cert_file = path(crt);
		cc[i].key_file = path(key);
	}
	cr_assert_eq(tls_ctx_new(&x, cc, n, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(x);
	return x;
}

struct end {
	SSL_CTX *cctx;
	SSL *cl;
	BIO *c_in, *c_out; /* the client's network side: in = from server */
	struct tls_conn *sv;
	struct buf sv_plain; /* what the server decrypted */
	struct buf cl_plain; /* what the client decrypted */
	int sv_err;          /* first error from the server side, 0 if none */
	bool cl_closed;      /* client saw close_notify */
};

static SSL_CTX *client_ctx(int minv, int maxv)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(c);
	if (minv < TLS1_2_VERSION)
		SSL_CTX_set_security_level(c, 0); /* let the client offer old versions */
	cr_assert(SSL_CTX_set_min_proto_version(c, minv));
	cr_assert(SSL_CTX_set_max_proto_version(c, maxv));
	SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	/* No client cache: a session freed unshut would be dropped from it. */
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	return c;
}

static void end_start(struct end *e, struct tls_ctx *x, SSL_CTX *cctx, const char *sni,
                      SSL_SESSION *resume)
{
	*e = (struct end){.cctx = cctx, .sv_plain = BUF_INIT, .cl_plain = BUF_INIT};
	e->cl = SSL_new(cctx);
	cr_assert_not_null(e->cl);
	e->c_in = BIO_new(BIO_s_mem());
	e->c_out = BIO_new(BIO_s_mem());
	SSL_set_bio(e->cl, e->c_in, e->c_out);
	SSL_set_connect_state(e->cl);
	if (sni)
		cr_assert(SSL_set_tlsext_host_name(e->cl, sni));
	if (resume)
		cr_assert(SSL_set_session(e->cl, resume));
	e->sv = tls_conn_new(x);
	cr_assert_not_null(e->sv);
}

static void end_free(struct end *e)
{
	SSL_free(e->cl);
	tls_conn_free(e->sv);
	buf_free(&e->sv_plain);
	buf_free(&e->cl_plain);
}

static size_t piece(size_t left)
{
	size_t k = 1 + (size_t)rand() % PIECE_MAX;

	return k < left ? k : left;
}

/* Server side of one receive: feed, then read until nothing more. */
static void server_recv(struct end *e, const char *p, size_t n)
{
	char plain[4096];
	ssize_t r;
	int rc;

	if (e->sv_err)
		return;
	rc = tls_conn_feed(e->sv, p, n);
	if (rc < 0) {
		e->sv_err = rc;
		return;
	}
	/* Small reads too: a record may come out in several. */
	while ((r = tls_conn_read(e->sv, plain, 1 + (size_t)rand() % sizeof(plain))) > 0)
		buf_append(&e->sv_plain, plain, (size_t)r);
	if (r < 0)
		e->sv_err = (int)r;
}

static void client_drive(struct end *e)
{
	char plain[4096];
	size_t got;
	int r;

	if (!SSL_is_init_finished(e->cl)) {
		r = SSL_do_handshake(e->cl);
		if (r != 1 && SSL_get_error(e->cl, r) != SSL_ERROR_WANT_READ)
			return;
	}
	while (SSL_read_ex(e->cl, plain, sizeof(plain), &got) == 1)
		buf_append(&e->cl_plain, plain, got);
	if (SSL_get_error(e->cl, 0) == SSL_ERROR_ZERO_RETURN)
		e->cl_closed = true;
	ERR_clear_error();
}

/* Moves bytes both ways, in random pieces, until neither end has any. */
static void pump(struct end *e)
{
	char tmp[PIECE_MAX];
	struct buf out = BUF_INIT;

	client_drive(e);
	for (int round = 0; round < 10000; round++) {
		bool moved = false;
		size_t n;

		while ((n = (size_t)BIO_ctrl_pending(e->c_out)) > 0) {
			size_t k = piece(n);

			cr_assert_eq(BIO_read(e->c_out, tmp, (int)k), (int)k);
			server_recv(e, tmp, k);
			moved = true;
		}
		if (tls_conn_pending(e->sv)) {
			cr_assert_gt(tls_conn_take(e->sv, &out), 0);
			cr_assert_eq(tls_conn_pending(e->sv), 0);
			for (size_t off = 0; off < out.len;) {
				size_t k = piece(out.len - off);

				cr_assert_eq(BIO_write(e->c_in, out.p + off, (int)k), (int)k);
				off += k;
				client_drive(e);
			}
			buf_reset(&out, 0);
			moved = true;
		}
		client_drive(e);
		if (!moved && BIO_ctrl_pending(e->c_out) == 0)
			break;
	}
	buf_free(&out);
}

static void handshake(struct end *e)
{
	pump(e);
	cr_assert_eq(e->sv_err, 0, "server: %d %s", e->sv_err, tls_conn_error(e->sv));
	cr_assert(SSL_is_init_finished(e->cl), "client handshake unfinished");
	cr_assert(tls_conn_established(e->sv));
}

static void peer_cn(const struct end *e, char *cn, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(e->cl);

	cr_assert_not_null(peer);
	cr_assert_gt(
	    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, (int)len),
	    0);
}

static void fill(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)rand();
}

/* ---- Handshakes and data ---- */

Test(tls, handshake_and_data_both_ways)
{
	static const char *const names[] = {"a", "b"};
	struct tls_ctx *x = server_ctx(names, 2);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	static char up[200000], down[150000];
	struct end e;
	char cn[64];

	fill(up, sizeof(up));
	fill(down, sizeof(down));
	end_start(&e, x, cctx, NULL, NULL);
	cr_assert_not(tls_conn_established(e.sv));
	cr_assert_str_eq(tls_conn_version(e.sv), "");
	cr_assert_str_eq(tls_conn_cipher(e.sv), "");
	/* An implicit-TLS greeting written before the handshake: kept, and
	 * sent encrypted once it is done. */
	cr_assert_eq(tls_conn_write(e.sv, "220 hi\r\n", 8), 0);
	handshake(&e);
	cr_assert_str_eq(tls_conn_version(e.sv), "TLSv1.3");
	cr_assert_str_eq(tls_conn_cipher(e.sv), SSL_get_cipher_name(e.cl));
	cr_assert_null(tls_conn_sni(e.sv));
	cr_assert_not(tls_conn_resumed(e.sv));
	peer_cn(&e, cn, sizeof(cn));
	cr_assert_str_eq(cn, "mx.test", "no SNI: the first certificate");
	cr_assert_eq(e.cl_plain.len, 8);
	cr_assert_eq(memcmp(e.cl_plain.p, "220 hi\r\n", 8), 0);

	/* Client to server. */
	for (size_t off = 0; off < sizeof(up);) {
		size_t k = 1 + (size_t)rand() % 20000, w;

		if (k > sizeof(up) - off)
			k = sizeof(up) - off;
		cr_assert(SSL_write_ex(e.cl, up + off, k, &w) && w == k);
		off += k;
		if (rand() % 3 == 0)
			pump(&e);
	}
	pump(&e);
	cr_assert_eq(e.sv_err, 0, "%s", tls_conn_error(e.sv));
	cr_assert_eq(e.sv_plain.len, sizeof(up));
	cr_assert_eq(memcmp(e.sv_plain.p, up, sizeof(up)), 0);

	/* Server to client, in writes of every size. */
	buf_reset(&e.cl_plain, 0);
	for (size_t off = 0; off < sizeof(down);) {
		size_t k = 1 + (size_t)rand() % 40000;

		if (k > sizeof(down) - off)
			k = sizeof(down) - off;
		cr_assert_eq(tls_conn_write(e.sv, down + off, k), 0);
		off += k;
		if (rand() % 2)
			pump(&e);
	}
	pump(&e);
	cr_assert_eq(e.cl_plain.len, sizeof(down));
	cr_assert_eq(memcmp(e.cl_plain.p, down, sizeof(down)), 0);
	end_free(&e);
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}

Test(tls, tls12_handshake_uses_ecdhe_aead)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x = server_ctx(names, 1);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
	struct end e;

	end_start(&e, x, cctx, "mx.test", NULL);
	handshake(&e);
	cr_assert_str_eq(tls_conn_version(e.sv), "TLSv1.2");
	cr_assert(strncmp(tls_conn_cipher(e.sv), "ECDHE-ECDSA-", 12) == 0, "%s",
	          tls_conn_cipher(e.sv));
	cr_assert(strstr(tls_conn_cipher(e.sv), "GCM") || strstr(tls_conn_cipher(e.sv), "CHACHA"),
	          "%s", tls_conn_cipher(e.sv));
	cr_assert_eq(tls_conn_write(e.sv, "250 ok\r\n", 8), 0);
	cr_assert(SSL_write(e.cl, "EHLO x\r\n", 8) == 8);
	pump(&e);
	cr_assert_str_eq(buf_cstr(&e.sv_plain), "EHLO x\r\n");
	cr_assert_str_eq(buf_cstr(&e.cl_plain), "250 ok\r\n");
	end_free(&e);
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}

/* ---- SNI ---- */

static void expect_cert(struct tls_ctx *x, SSL_CTX *cctx, const char *sni, const char *want_cn)
{
	struct end e;
	char cn[64];

	end_start(&e, x, cctx, sni, NULL);
	handshake(&e);
	peer_cn(&e, cn, sizeof(cn));
	cr_assert_str_eq(cn, want_cn, "SNI %s: got %s, want %s", sni ? sni : "(none)", cn, want_cn);
	if (sni)
		cr_assert_str_eq(tls_conn_sni(e.sv), sni);
	end_free(&e);
}

Test(tls, sni_chooses_certificate)
{
	static const char *const abc[] = {"a", "b", "c"};
	static const char *const ba[] = {"b", "a"};
	static const char *const ac[] = {"a", "c"};
	SSL_CTX *c13 = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	SSL_CTX *c12 = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
	struct tls_ctx *x = server_ctx(abc, 3);

	for (int v = 0; v < 2; v++) {
		SSL_CTX *cc = v ? c12 : c13;

		expect_cert(x, cc, NULL, "mx.test");
		expect_cert(x, cc, "mx.test", "mx.test");
		expect_cert(x, cc, "other.test", "other.test");
		expect_cert(x, cc, "OTHER.Test", "other.test");
		expect_cert(x, cc, "x.b.test", "other.test");    /* wildcard */
		expect_cert(x, cc, "y.x.b.test", "mx.test");     /* one label only */
		expect_cert(x, cc, "b.test", "mx.test");         /* not the bare domain */
		expect_cert(x, cc, "c.test", "exact.wild.test"); /* SAN */
		expect_cert(x, cc, "exact.wild.test",
		            "exact.wild.test"); /* exact CN beats *.wild */
		expect_cert(x, cc, "any.wild.test", "mx.test");
		expect_cert(x, cc, "unknown.example", "mx.test"); /* unknown: the default */
	}
	/* Not a host name: the default certificate, and no SNI to log. */
	{
		struct end e;
		char cn[64];

		end_start(&e, x, c13, "other.test\r\nX: y", NULL);
		handshake(&e);
		peer_cn(&e, cn, sizeof(cn));
		cr_assert_str_eq(cn, "mx.test");
		cr_assert_null(tls_conn_sni(e.sv));
		end_free(&e);
	}
	tls_ctx_free(x);

	x = server_ctx(ba, 2);
	expect_cert(x, c13, NULL, "other.test");
	expect_cert(x, c13, "q.wild.test", "mx.test");
	tls_ctx_free(x);

	x = server_ctx(ac, 2);
	expect_cert(x, c13, "exact.wild.test", "exact.wild.test");
	tls_ctx_free(x);
	SSL_CTX_free(c13);
	SSL_CTX_free(c12);
}

/* ---- Refusals and errors ---- */

Test(tls, old_protocol_versions_refused)
{
	static const char *const names[] = {"a"};
	static const int versions[] = {TLS1_1_VERSION, TLS1_VERSION};
	struct tls_ctx *x = server_ctx(names, 1);

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		SSL_CTX *cctx = client_ctx(versions[i], versions[i]);
		struct end e;

		end_start(&e, x, cctx, NULL, NULL);
		pump(&e);
		cr_assert_eq(e.sv_err, -EPROTO);
		cr_assert_not(tls_conn_established(e.sv));
		cr_assert_not(SSL_is_init_finished(e.cl));
		cr_assert_str_eq(tls_conn_error(e.sv), "unsupported protocol");
		/* Sticky. */
		cr_assert_eq(tls_conn_feed(e.sv, "x", 1), -EPROTO);
		cr_assert_eq(tls_conn_read(e.sv, (char[8]){0}, 8), -EPROTO);
		cr_assert_eq(tls_conn_write(e.sv, "x", 1), -EPROTO);
		end_free(&e);
		SSL_CTX_free(cctx);
	}
	tls_ctx_free(x);
}

Test(tls, corrupted_record_is_fatal)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x = server_ctx(names, 1);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	struct buf alert = BUF_INIT;
	char rec[256], plain[64];
	struct end e;
	int n;

	end_start(&e, x, cctx, NULL, NULL);
	handshake(&e);
	cr_assert(SSL_write(e.cl, "MAIL FROM:<a@b>\r\n", 17) == 17);
	n = BIO_read(e.c_out, rec, sizeof(rec));
	cr_assert_gt(n, 5 + 17);
	rec[n - 3] ^= 0x40; /* in the AEAD tag */
	cr_assert_eq(tls_conn_feed(e.sv, rec, (size_t)n), 0);
	cr_assert_eq(tls_conn_read(e.sv, plain, sizeof(plain)), -EPROTO);
	cr_assert(strstr(tls_conn_error(e.sv), "bad record mac"), "%s", tls_conn_error(e.sv));
	cr_assert_not(tls_conn_established(e.sv));
	/* The alert reaches the client, which fails with it. */
	cr_assert_gt(tls_conn_pending(e.sv), 0, "an alert to send");
	cr_assert_gt(tls_conn_take(e.sv, &alert), 0);
	cr_assert_eq(BIO_write(e.c_in, alert.p, (int)alert.len), (int)alert.len);
	cr_assert_leq(SSL_read(e.cl, plain, sizeof(plain)), 0);
	cr_assert_eq(ERR_GET_REASON(ERR_peek_error()), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC, "%s",
	             ERR_reason_error_string(ERR_peek_error()));
	ERR_clear_error();
	cr_assert_eq(tls_conn_read(e.sv, plain, sizeof(plain)), -EPROTO);
	cr_assert_eq(tls_conn_write(e.sv, "x", 1), -EPROTO);
	cr_assert_eq(tls_conn_shutdown(e.sv), -EPROTO);
	buf_free(&alert);
	end_free(&e);
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}

Test(tls, garbage_instead_of_client_hello)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x = server_ctx(names, 1);
	struct tls_conn *t = tls_conn_new(x);
	const char *smtp = "EHLO plaintext.example\r\nMAIL FROM:<a@b>\r\n";

	cr_assert_eq(tls_conn_feed(t, smtp, strlen(smtp)), -EPROTO);
	cr_assert_neq(tls_conn_error(t)[0], '\0');
	cr_assert_not(tls_conn_established(t));
	tls_conn_free(t);
	tls_ctx_free(x);
}

Test(tls, load_errors_name_the_file)
{
	struct tls_cert_conf cc[2];
	struct tls_ctx *x = (struct tls_ctx *)1;
	char err[512], want[400];

	/* A key of the same type but another certificate's. */
	cc[0] = (struct tls_cert_conf){path("a.crt"), path("x.key")};
	cr_assert_eq(tls_ctx_new(&x, cc, 1, NULL, err, sizeof(err)), -EINVAL);
	cr_assert_null(x);
	snprintf(want, sizeof(want), "TLS key %s does not match certificate %s", cc[0].key_file,
	         cc[0].cert_file);
	cr_assert_str_eq(err, want);
	/* A key of another type (RSA for an EC certificate). */
	cc[0].key_file = path("r.key");
	cr_assert_eq(tls_ctx_new(&x, cc, 1, NULL, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "TLS key %s does not match certificate %s", cc[0].key_file,
	         cc[0].cert_file);
	cr_assert_str_eq(err, want);
	/* The mismatch in the second pair is found too. */
	cc[0] = (struct tls_cert_conf){path("a.crt"), path("a.key")};
	cc[1] = (struct tls_cert_conf){path("b.crt"), path("a.key")};
	cr_assert_eq(tls_ctx_new(&x, cc, 2, NULL, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "b.crt"), "%s", err);
	/* Missing files, and a key where the certificate should be. */
	cc[0].cert_file = path("missing.crt");
	cr_assert_eq(tls_ctx_new(&x, cc, 1, NULL, err, sizeof(err)), -EINVAL);
	cr_assert(strncmp(err, "TLS certificate ", 16) == 0 && strstr(err, "missing.crt"), "%s",
	          err);
	cc[0] = (struct tls_cert_conf){path("a.crt"), path("missing.key")};
	cr_assert_eq(tls_ctx_new(&x, cc, 1, NULL, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "TLS key ") && strstr(err, "missing.key"), "%s", err);
	cc[0] = (struct tls_cert_conf){path("a.key"), path("a.key")};
	cr_assert_eq(tls_ctx_new(&x, cc, 1, NULL, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "TLS certificate ") && strstr(err, "a.key"), "%s", err);
	/* A cipher list with nothing OpenSSL knows. */
	cc[0] = (struct tls_cert_conf){path("a.crt"), path("a.key")};
	cr_assert_eq(tls_ctx_new(&x, cc, 1, "NOT-A-CIPHER", err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "NOT-A-CIPHER"), "%s", err);
	cr_assert_eq(tls_ctx_new(&x, cc, 0, NULL, err, sizeof(err)), -EINVAL);
	cr_assert_eq(ERR_peek_error(), 0, "the error queue is left empty");
	/* And a good one. */
	cr_assert_eq(tls_ctx_new(&x, cc, 1, "ECDHE-ECDSA-AES256-GCM-SHA384", err, sizeof(err)), 0,
	             "%s", err);
	tls_ctx_free(x);
	tls_ctx_free(NULL);
}

/* Client-initiated renegotiation (a CPU sink, CVE-2011-1473) gets a
 * no_renegotiation warning; OpenSSL's client then gives up with a fatal
 * alert, which ends the connection. */
Test(tls, renegotiation_refused)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x = server_ctx(names, 1);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
	struct end e;

	end_start(&e, x, cctx, NULL, NULL);
	handshake(&e);
	cr_assert(SSL_renegotiate(e.cl));
	cr_assert_leq(SSL_do_handshake(e.cl), 0);
	pump(&e);
	cr_assert_eq(e.sv_err, -EPROTO);
	cr_assert(strstr(tls_conn_error(e.sv), "handshake failure"), "%s", tls_conn_error(e.sv));
	cr_assert_eq(e.sv_plain.len, 0);
	ERR_clear_error();
	end_free(&e);
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}

/* ---- Resumption ---- */

static SSL_SESSION *full_then_ticket(struct tls_ctx *x, SSL_CTX *cctx, const char *sni)
{
	SSL_SESSION *sess;
	struct end e;

	end_start(&e, x, cctx, sni, NULL);
	handshake(&e);
	cr_assert_not(tls_conn_resumed(e.sv));
	/* TLS 1.3 tickets come after the handshake: the client reads them. */
	pump(&e);
	sess = SSL_get1_session(e.cl);
	cr_assert_not_null(sess);
	cr_assert(SSL_SESSION_has_ticket(sess), "the server issued a ticket");
	SSL_shutdown(e.cl); /* a session ended without close_notify is not resumed */
	end_free(&e);
	return sess;
}

Test(tls, session_resumption_with_ticket)
{
	static const char *const names[] = {"a", "b"};
	struct tls_ctx *x = server_ctx(names, 2);
	static const int maxv[] = {TLS1_3_VERSION, TLS1_2_VERSION};
	static const char *const snis[] = {NULL, "other.test"};

	for (size_t v = 0; v < 2; v++) {
		for (size_t s = 0; s < 2; s++) {
			SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, maxv[v]);
			SSL_SESSION *sess = full_then_ticket(x, cctx, snis[s]);
			struct end e;
			char cn[64];

			end_start(&e, x, cctx, snis[s], sess);
			handshake(&e);
			cr_assert(SSL_session_reused(e.cl), "version %zu sni %zu: not resumed", v,
			          s);
			cr_assert(tls_conn_resumed(e.sv));
			peer_cn(&e, cn, sizeof(cn));
			cr_assert_str_eq(cn, s ? "other.test" : "mx.test");
			cr_assert(SSL_write(e.cl, "QUIT\r\n", 6) == 6);
			pump(&e);
			cr_assert_str_eq(buf_cstr(&e.sv_plain), "QUIT\r\n");
			end_free(&e);
			SSL_SESSION_free(sess);
			SSL_CTX_free(cctx);
		}
	}
	tls_ctx_free(x);
}

Test(tls, ticket_from_another_gateway_gives_full_handshake)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x1 = server_ctx(names, 1), *x2 = server_ctx(names, 1);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	SSL_SESSION *sess = full_then_ticket(x1, cctx, NULL);
	struct end e;

	end_start(&e, x2, cctx, NULL, sess);
	handshake(&e);
	cr_assert_not(SSL_session_reused(e.cl));
	cr_assert_not(tls_conn_resumed(e.sv));
	end_free(&e);
	SSL_SESSION_free(sess);
	SSL_CTX_free(cctx);
	tls_ctx_free(x1);
	tls_ctx_free(x2);
}

/* ---- Order of calls, closing ---- */

Test(tls, calls_in_any_order)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x = server_ctx(names, 1);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	struct buf b = BUF_INIT;
	char plain[16];
	struct end e;

	end_start(&e, x, cctx, NULL, NULL);
	/* Nothing fed yet: nothing to read, nothing to send. */
	cr_assert_eq(tls_conn_read(e.sv, plain, sizeof(plain)), 0);
	cr_assert_eq(tls_conn_pending(e.sv), 0);
	cr_assert_eq(tls_conn_take(e.sv, &b), 0);
	cr_assert_null(b.p);
	cr_assert_eq(tls_conn_feed(e.sv, "", 0), 0);
	cr_assert_eq(tls_conn_write(e.sv, "", 0), 0);
	cr_assert_eq(tls_conn_read(e.sv, plain, 0), 0);
	handshake(&e);
	/* take() appends to what the caller already has. */
	buf_append_str(&b, "head");
	cr_assert_eq(tls_conn_write(e.sv, "abc", 3), 0);
	cr_assert_gt(tls_conn_pending(e.sv), 3);
	cr_assert_eq(tls_conn_take(e.sv, &b), (ssize_t)b.len - 4);
	cr_assert_eq(memcmp(b.p, "head", 4), 0);
	cr_assert_eq(b.p[4], 23, "application data record");
	cr_assert_eq(BIO_write(e.c_in, b.p + 4, (int)b.len - 4), (int)b.len - 4);
	client_drive(&e);
	cr_assert_str_eq(buf_cstr(&e.cl_plain), "abc");
	buf_free(&b);
	end_free(&e);
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}

Test(tls, close_notify_both_ways)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *x = server_ctx(names, 1);
	SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	char plain[16];
	struct end e;

	/* Ours: after the last reply. */
	end_start(&e, x, cctx, NULL, NULL);
	handshake(&e);
	cr_assert_eq(tls_conn_write(e.sv, "221 bye\r\n", 9), 0);
	cr_assert_eq(tls_conn_shutdown(e.sv), 0);
	cr_assert_eq(tls_conn_shutdown(e.sv), 0);
	cr_assert_eq(tls_conn_write(e.sv, "x", 1), -EPROTO);
	pump(&e);
	cr_assert_str_eq(buf_cstr(&e.cl_plain), "221 bye\r\n");
	cr_assert(e.cl_closed);
	end_free(&e);

	/* The peer's. */
	end_start(&e, x, cctx, NULL, NULL);
	handshake(&e);
	cr_assert(SSL_write(e.cl, "QUIT\r\n", 6) == 6);
	SSL_shutdown(e.cl);
	pump(&e);
	cr_assert_str_eq(buf_cstr(&e.sv_plain), "QUIT\r\n");
	cr_assert_eq(e.sv_err, -ESHUTDOWN);
	cr_assert_eq(tls_conn_read(e.sv, plain, sizeof(plain)), -ESHUTDOWN);
	cr_assert_eq(tls_conn_feed(e.sv, "junk", 4), 0, "ignored after close_notify");
	cr_assert_str_eq(tls_conn_error(e.sv), "");
	end_free(&e);
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}

/* ---- Our client against our server ---- */

struct pair {
	struct tls_conn *cl, *sv;
	struct buf cl_plain, sv_plain; /* what each end decrypted */
	int cl_err, sv_err;            /* first error of each end, 0 if none */
};

static struct tls_ctx *client_tls_ctx(const char *ca)
{
	struct tls_ctx *x = NULL;
	char err[256];

	cr_assert_eq(tls_client_ctx_new(&x, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(x);
	if (ca)
		cr_assert_eq(tls_client_ctx_verify(x, path(ca), err, sizeof(err)), 0, "%s", err);
	return x;
}

static void pair_start(struct pair *p, struct tls_ctx *cx, struct tls_ctx *sx, const char *sni)
{
	*p = (struct pair){.cl_plain = BUF_INIT, .sv_plain = BUF_INIT};
	p->cl = tls_conn_new_client(cx, sni);
	cr_assert_not_null(p->cl);
	p->sv = tls_conn_new(sx);
	cr_assert_not_null(p->sv);
}

static void pair_free(struct pair *p)
{
	tls_conn_free(p->cl);
	tls_conn_free(p->sv);
	buf_free(&p->cl_plain);
	buf_free(&p->sv_plain);
}

/* One receive at <to>: feed, then read until nothing more. */
static void conn_recv(struct tls_conn *to, const char *p, size_t n, struct buf *plain, int *err)
{
	char tmp[4096];
	ssize_t r;
	int rc;

	if (*err)
		return;
	rc = tls_conn_feed(to, p, n);
	if (rc < 0) {
		*err = rc;
		return;
	}
	while ((r = tls_conn_read(to, tmp, 1 + (size_t)rand() % sizeof(tmp))) > 0)
		buf_append(plain, tmp, (size_t)r);
	if (r < 0)
		*err = (int)r;
}

/* What <from> has to send, to <to> in random pieces. */
static bool conn_move(struct tls_conn *from, struct tls_conn *to, struct buf *plain, int *err)
{
	struct buf out = BUF_INIT;

	if (!tls_conn_pending(from))
		return false;
	cr_assert_gt(tls_conn_take(from, &out), 0);
	cr_assert_eq(tls_conn_pending(from), 0);
	for (size_t off = 0; off < out.len;) {
		size_t k = piece(out.len - off);

		conn_recv(to, out.p + off, k, plain, err);
		off += k;
	}
	buf_free(&out);
	return true;
}

static void pair_pump(struct pair *p)
{
	for (int round = 0; round < 10000; round++) {
		bool moved = conn_move(p->cl, p->sv, &p->sv_plain, &p->sv_err);

		moved |= conn_move(p->sv, p->cl, &p->cl_plain, &p->cl_err);
		if (!moved)
			return;
	}
	cr_assert_fail("pump: no end to the exchange");
}

static void pair_handshake(struct pair *p)
{
	pair_pump(p);
	cr_assert_eq(p->cl_err, 0, "client: %d %s", p->cl_err, tls_conn_error(p->cl));
	cr_assert_eq(p->sv_err, 0, "server: %d %s", p->sv_err, tls_conn_error(p->sv));
	cr_assert(tls_conn_established(p->cl));
	cr_assert(tls_conn_established(p->sv));
}

Test(tls, client_hello_at_creation)
{
	struct tls_ctx *cx = client_tls_ctx(NULL);
	struct buf b = BUF_INIT;
	struct tls_conn *t = tls_conn_new_client(cx, "mx.test");
	char plain[16];

	cr_assert_not_null(t);
	cr_assert_not(tls_conn_established(t));
	cr_assert_str_eq(tls_conn_version(t), "");
	cr_assert_str_eq(tls_conn_error(t), "");
	cr_assert_gt(tls_conn_pending(t), 5);
	cr_assert_eq(tls_conn_take(t, &b), (ssize_t)b.len);
	cr_assert_eq(b.p[0], 22, "handshake record");
	cr_assert_eq(b.p[5], 1, "ClientHello");
	/* Nothing more until the server answers. */
	cr_assert_eq(tls_conn_pending(t), 0);
	cr_assert_eq(tls_conn_read(t, plain, sizeof(plain)), 0);
	cr_assert_eq(tls_conn_pending(t), 0);
	cr_assert_eq(tls_conn_shutdown(t), 0, "before the handshake: nothing to close");
	tls_conn_free(t);
	buf_free(&b);
	tls_ctx_free(cx);
}

Test(tls, client_handshake_and_data_both_ways)
{
	static const char *const names[] = {"a", "b"};
	struct tls_ctx *sx = server_ctx(names, 2), *cx = client_tls_ctx(NULL);
	static char up[200000], down[150000];
	struct pair p;

	fill(up, sizeof(up));
	fill(down, sizeof(down));
	pair_start(&p, cx, sx, "other.test");
	/* After STARTTLS the client speaks first: EHLO written at once is
	 * kept and sent encrypted once the handshake is done. */
	cr_assert_eq(tls_conn_write(p.cl, "EHLO gw\r\n", 9), 0);
	pair_handshake(&p);
	cr_assert_str_eq(tls_conn_version(p.cl), "TLSv1.3");
	cr_assert_str_eq(tls_conn_version(p.sv), "TLSv1.3");
	cr_assert_str_eq(tls_conn_cipher(p.cl), tls_conn_cipher(p.sv));
	cr_assert_str_eq(tls_conn_sni(p.sv), "other.test");
	cr_assert_str_eq(tls_conn_sni(p.cl), "other.test");
	cr_assert_not(tls_conn_resumed(p.cl));
	cr_assert_str_eq(buf_cstr(&p.sv_plain), "EHLO gw\r\n");

	buf_reset(&p.sv_plain, 0);
	for (size_t off = 0; off < sizeof(up);) {
		size_t k = 1 + (size_t)rand() % 20000;

		if (k > sizeof(up) - off)
			k = sizeof(up) - off;
		cr_assert_eq(tls_conn_write(p.cl, up + off, k), 0);
		off += k;
		if (rand() % 3 == 0)
			pair_pump(&p);
	}
	for (size_t off = 0; off < sizeof(down);) {
		size_t k = 1 + (size_t)rand() % 40000;

		if (k > sizeof(down) - off)
			k = sizeof(down) - off;
		cr_assert_eq(tls_conn_write(p.sv, down + off, k), 0);
		off += k;
		if (rand() % 2)
			pair_pump(&p);
	}
	pair_pump(&p);
	cr_assert_eq(p.cl_err, 0, "%s", tls_conn_error(p.cl));
	cr_assert_eq(p.sv_err, 0, "%s", tls_conn_error(p.sv));
	cr_assert_eq(p.sv_plain.len, sizeof(up));
	cr_assert_eq(memcmp(p.sv_plain.p, up, sizeof(up)), 0);
	cr_assert_eq(p.cl_plain.len, sizeof(down));
	cr_assert_eq(memcmp(p.cl_plain.p, down, sizeof(down)), 0);

	/* QUIT, 221, close_notify from the server, then from the client. */
	buf_reset(&p.sv_plain, 0);
	buf_reset(&p.cl_plain, 0);
	cr_assert_eq(tls_conn_write(p.cl, "QUIT\r\n", 6), 0);
	pair_pump(&p);
	cr_assert_eq(tls_conn_write(p.sv, "221 bye\r\n", 9), 0);
	cr_assert_eq(tls_conn_shutdown(p.sv), 0);
	pair_pump(&p);
	cr_assert_str_eq(buf_cstr(&p.sv_plain), "QUIT\r\n");
	cr_assert_str_eq(buf_cstr(&p.cl_plain), "221 bye\r\n");
	cr_assert_eq(p.cl_err, -ESHUTDOWN);
	cr_assert_eq(tls_conn_shutdown(p.cl), 0);
	pair_pump(&p);
	cr_assert_eq(p.sv_err, -ESHUTDOWN);
	pair_free(&p);
	tls_ctx_free(cx);
	tls_ctx_free(sx);
}

/* The SNI the client sends picks the server's certificate: a client that
 * trusts only that certificate's CA (each is self-signed) gets through. */
Test(tls, client_sni_chooses_certificate)
{
	static const char *const abc[] = {"a", "b", "c"};
	static const struct {
		const char *sni, *ca, *seen; /* seen: the server's tls_conn_sni() */
		bool ok;
	} cs[] = {
	    {"other.test", "b.crt", "other.test", true},
	    {"other.test.", "b.crt", "other.test", true}, /* trailing dot dropped */
	    {"x.b.test", "b.crt", "x.b.test", true},
	    {"c.test", "c.crt", "c.test", true},
	    {"mx.test", "a.crt", "mx.test", true},
	    {"x.wild.test", "a.crt", "x.wild.test", true},
	    {"other.test", "a.crt", "other.test", false},     /* b's, not trusted */
	    {"unknown.test", "a.crt", "unknown.test", false}, /* a's, not naming it */
	};
	struct tls_ctx *sx = server_ctx(abc, 3);

	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
		struct tls_ctx *cx = client_tls_ctx(cs[i].ca);
		struct pair p;

		pair_start(&p, cx, sx, cs[i].sni);
		pair_pump(&p);
		cr_assert_str_eq(tls_conn_sni(p.sv), cs[i].seen, "%s", cs[i].sni);
		if (cs[i].ok) {
			cr_assert_eq(p.cl_err, 0, "%s: %s", cs[i].sni, tls_conn_error(p.cl));
			cr_assert(tls_conn_established(p.cl), "%s", cs[i].sni);
			cr_assert(tls_conn_established(p.sv), "%s", cs[i].sni);
		} else {
			cr_assert_eq(p.cl_err, -EPROTO, "%s", cs[i].sni);
			cr_assert_not(tls_conn_established(p.cl));
			cr_assert_str_eq(tls_conn_error(p.cl), "certificate verify failed",
			                 "%s: %s", cs[i].sni, tls_conn_error(p.cl));
			cr_assert_eq(p.sv_err, -EPROTO, "the server got the alert");
			cr_assert_eq(tls_conn_write(p.cl, "x", 1), -EPROTO);
		}
		pair_free(&p);
		tls_ctx_free(cx);
	}
	tls_ctx_free(sx);
}

Test(tls, client_without_sni)
{
	static const char *const names[] = {"a", "b"};
	static const char *const snis[] = {
	    NULL, "", ".", "192.0.2.25", "2001:db8::25", "[192.0.2.25]", "bad name"};
	struct tls_ctx *sx = server_ctx(names, 2), *cx = client_tls_ctx(NULL),
	               *vx = client_tls_ctx("a.crt");

	for (size_t i = 0; i < sizeof(snis) / sizeof(snis[0]); i++) {
		struct pair p;

		pair_start(&p, cx, sx, snis[i]);
		pair_handshake(&p);
		cr_assert_null(tls_conn_sni(p.sv), "%s", snis[i] ? snis[i] : "NULL");
		cr_assert_null(tls_conn_sni(p.cl));
		pair_free(&p);
		/* Verifying needs a name to check the certificate against. */
		cr_assert_null(tls_conn_new_client(vx, snis[i]));
	}
	tls_ctx_free(vx);
	tls_ctx_free(cx);
	tls_ctx_free(sx);
}

Test(tls, client_and_server_contexts_do_not_mix)
{
	static const char *const names[] = {"a"};
	struct tls_ctx *sx = server_ctx(names, 1), *cx = client_tls_ctx(NULL);
	char err[256];

	cr_assert_null(tls_conn_new(cx));
	cr_assert_null(tls_conn_new_client(sx, "mx.test"));
	cr_assert_eq(tls_client_ctx_verify(sx, NULL, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "TLS: not a client context");
	cr_assert_eq(tls_client_ctx_verify(cx, path("missing.crt"), err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "missing.crt"), "%s", err);
	tls_ctx_free(cx);
	tls_ctx_free(sx);
}

/* Our client refuses what the server side refuses too: TLS 1.1. */
Test(tls, client_refuses_old_server)
{
	struct tls_ctx *cx = client_tls_ctx(NULL);
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
	struct tls_conn *t = tls_conn_new_client(cx, "mx.test");
	BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
	struct buf b = BUF_INIT;
	char tmp[4096];
	SSL *sv;
	int n;

	cr_assert_not_null(sctx);
	SSL_CTX_set_security_level(sctx, 0);
	cr_assert(SSL_CTX_set_min_proto_version(sctx, TLS1_VERSION));
	cr_assert(SSL_CTX_set_max_proto_version(sctx, TLS1_1_VERSION));
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(sctx, path("a.crt")), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(sctx, path("a.key"), SSL_FILETYPE_PEM), 1);
	sv = SSL_new(sctx);
	SSL_set_bio(sv, in, out);
	SSL_set_accept_state(sv);
	cr_assert_gt(tls_conn_take(t, &b), 0);
	cr_assert_eq(BIO_write(in, b.p, (int)b.len), (int)b.len);
	SSL_do_handshake(sv); /* fails: no common version; an alert goes out */
	ERR_clear_error();
	n = BIO_read(out, tmp, sizeof(tmp));
	cr_assert_gt(n, 0, "the server's alert");
	cr_assert_eq(tls_conn_feed(t, tmp, (size_t)n), -EPROTO);
	cr_assert_not(tls_conn_established(t));
	cr_assert_str_eq(tls_conn_error(t), "tlsv1 alert protocol version");
	SSL_free(sv);
	SSL_CTX_free(sctx);
	tls_conn_free(t);
	buf_free(&b);
	tls_ctx_free(cx);
}

/* ---- Memory ---- */

/* Bytes in use on the heap (glibc; OpenSSL allocates with malloc). The
 * sanitizers' allocator does not report it: the test is skipped there. */
static size_t heap_used(void)
{
	return mallinfo2().uordblks;
}

#define NCONN 32

Test(tls, idle_connection_memory)
{
	static const char *const names[] = {"a", "b"};
	static struct end e[NCONN];
	struct tls_ctx *x;
	SSL_CTX *cctx;
	size_t base, fresh, idle;

	if (heap_used() == 0)
		cr_skip_test("no heap statistics (sanitizer allocator)");
	x = server_ctx(names, 2);
	cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	/* The client ends are made first, outside the measure. */
	for (int i = 0; i < NCONN; i++) {
		end_start(&e[i], x, cctx, "other.test", NULL);
		tls_conn_free(e[i].sv);
	}
	base = heap_used();
	for (int i = 0; i < NCONN; i++)
		e[i].sv = tls_conn_new(x);
	fresh = heap_used() - base;
	for (int i = 0; i < NCONN; i++) {
		handshake(&e[i]);
		cr_assert(SSL_write(e[i].cl, "EHLO x\r\n", 8) == 8);
		cr_assert_eq(tls_conn_write(e[i].sv, "250 ok\r\n", 8), 0);
		pump(&e[i]);
		cr_assert_str_eq(buf_cstr(&e[i].sv_plain), "EHLO x\r\n");
	}
	/* What freeing the idle server ends gives back is what they held
	 * (the client ends' memory is in both measures). */
	idle = heap_used();
	for (int i = 0; i < NCONN; i++) {
		tls_conn_free(e[i].sv);
		e[i].sv = NULL;
	}
	idle -= heap_used();
	fprintf(stderr,
	        "tls: OpenSSL memory per server connection: %zu B new, %zu B idle after "
	        "handshake and one exchange (struct tls_conn and malloc overhead included)\n",
	        fresh / NCONN, idle / NCONN);
	/* ~14 KB measured with OpenSSL 3.0 (~47 KB without
	 * SSL_MODE_RELEASE_BUFFERS): two record buffers would be 34 KB more. */
	cr_assert_lt(idle / NCONN, 24 * 1024, "an idle connection holds its record buffers");
	for (int i = 0; i < NCONN; i++) {
		SSL_free(e[i].cl);
		buf_free(&e[i].sv_plain);
		buf_free(&e[i].cl_plain);
	}
	SSL_CTX_free(cctx);
	tls_ctx_free(x);
}
