/* tls: TLS for ringmx connections (STARTTLS, RFC 3207, and implicit TLS,
 * RFC 8314), as the server and as the relay's client, over OpenSSL 3,
 * driven without sockets. OpenSSL never sees a
 * file descriptor: the worker hands it the ciphertext its io_uring receives
 * completed with (tls_conn_feed()), takes plaintext out (tls_conn_read()),
 * puts replies in (tls_conn_write()) and collects the ciphertext to send
 * (tls_conn_take()). Nothing here blocks, sleeps or reads a clock; the
 * handshake timeout is the worker's.
 *
 * Threads: a struct tls_ctx is built once at startup and is then shared,
 * read-only, by every worker (SSL_CTX is thread-safe for SSL_new()). A
 * struct tls_conn belongs to one worker thread. OpenSSL's error queue is
 * per thread; every call here leaves it empty.
 *
 * How a worker drives one connection (the calls may come in any order; a
 * call that comes too early does nothing harmful):
 *
 *   STARTTLS: the session raised SMTP_ACT_STARTTLS. Send its "220 2.0.0
 *   Ready to start TLS" in clear, DISCARD every byte received after the
 *   STARTTLS line (the rest of that receive buffer and anything pending:
 *   CVE-2011-0411), then t = tls_conn_new(ctx). Implicit TLS: tls_conn_new()
 *   right after accept, and greet only once the handshake is done.
 *
 *   On each receive completion (p, n > 0):
 *       tls_conn_feed(t, p, n);                  copies: recycle p at once
 *       while ((r = tls_conn_read(t, plain, sizeof(plain))) > 0)
 *           smtp_session_feed(&s, plain, r);     (unconsumed: keep as now)
 *       if (r < 0) -> log tls_conn_error(t), send tls_conn_take() (the
 *                     alert), close. -ESHUTDOWN: the peer closed cleanly.
 *       if (tls_conn_established(t) and not yet told the session)
 *           smtp_session_tls_started(&s, tls_conn_version(t), tls_conn_cipher(t));
 *           implicit TLS: smtp_session_greet(&s) after it.
 *   Before each send (once per round):
 *       tls_conn_write(t, s.out.p, s.out.len); buf_reset(&s.out, ...);
 *       if (tls_conn_pending(t)) tls_conn_take(t, &sending) and send it;
 *   The handshake produces output on its own (ServerHello, tickets, alerts),
 *   so check tls_conn_pending() after every feed/read, not only after the
 *   session wrote something. Receive EOF (0) ends the connection as in
 *   clear; before closing after QUIT, tls_conn_shutdown() queues
 *   close_notify for the last send.
 *
 * The relay's client side (STARTTLS to a next hop) makes its connections
 * with tls_conn_new_client() on a tls_client_ctx_new() context; every
 * other call is the same. The client speaks first: the ClientHello is in
 * tls_conn_take() as soon as the connection exists. The relay sends
 * "STARTTLS" in clear; on the 220 (smtp_client raises SMTPC_ACT_STARTTLS)
 * it DISCARDS every byte received after that reply line, makes
 * t = tls_conn_new_client(cx, hop name), sends tls_conn_take(), then feeds
 * and reads as above; once tls_conn_established(t), it tells the client
 * session (smtp_client_tls_started()), whose EHLO goes through
 * tls_conn_write(). */
#ifndef RINGMX_IO_TLS_H
#define RINGMX_IO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"

#define TLS_MAX_CERTS 16 /* certificate/key pairs in one context */

/* TLS 1.2 cipher list when none is given: forward secrecy (ECDHE) with
 * AEAD only (AES-GCM, ChaCha20-Poly1305), ECDSA or RSA certificates.
 * TLS 1.3 suites are OpenSSL's defaults (all AEAD). */
#define TLS_DEFAULT_CIPHERS                                                                        \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* One certificate and its key, as file names (PEM). */
struct tls_cert_conf {
	const char *cert_file; /* the certificate, then its chain */
	const char *key_file;  /* the private key of that certificate */
};

struct tls_ctx;
struct tls_conn;

/* Loads OpenSSL and builds what every context shares. Idempotent and
 * thread-safe; tls_ctx_new() calls it too. Returns 0 or -ENOMEM. */
int tls_global_init(void);

/* Builds the server context from <ncerts> (1..TLS_MAX_CERTS) pairs: a
 * client's SNI picks the pair whose certificate names it (subjectAltName
 * DNS names and the subject CN; an exact name wins over a wildcard); the
 * first pair serves clients without SNI or with an unknown name. TLS 1.2
 * and 1.3 only; <ciphers> is the TLS 1.2 list (OpenSSL syntax), NULL =
 * TLS_DEFAULT_CIPHERS. Session tickets on, renegotiation off. Each key
 * must match its certificate. Returns 0 and sets *<out>, or -EINVAL /
 * -ENOMEM with one line (naming the file at fault) in <err>. Startup
 * only; the context is read-only afterwards and shared by all workers. */
int tls_ctx_new(struct tls_ctx **out, const struct tls_cert_conf *certs, unsigned ncerts,
                const char *ciphers, char *err, size_t errlen);
/* Frees <x> (NULL: no-op). Only after every tls_conn made from it is freed:
 * the SNI callback of a connection still in its handshake reads <x>. */
void tls_ctx_free(struct tls_ctx *x);

/* Builds the relay's client context: TLS 1.2 and 1.3, OpenSSL's default
 * TLS 1.2 ciphers (security level 1), renegotiation off, no session
 * resumption. The server's certificate is NOT verified: opportunistic TLS
 * (RFC 7435, Postfix's smtp_tls_security_level = may) encrypts against a
 * passive listener; tls_client_ctx_verify() adds authentication. Returns 0
 * and sets *<out>, or -EINVAL / -ENOMEM with one line in <err>. Startup
 * only; then read-only and shared by all workers; tls_ctx_free() frees it. */
int tls_client_ctx_new(struct tls_ctx **out, char *err, size_t errlen);
/* Client context <x> (startup only): from now on its connections fail the
 * handshake unless the server's certificate chains to a CA of <ca_file>
 * (PEM; NULL = OpenSSL's system default paths) and names the host given to
 * tls_conn_new_client() (subjectAltName DNS, else CN; wildcards for one
 * label). Returns 0, or -EINVAL with one line in <err>. */
int tls_client_ctx_verify(struct tls_ctx *x, const char *ca_file, char *err, size_t errlen);

/* A server-side connection over server context <x>, waiting for the
 * ClientHello. Returns NULL when out of memory or when <x> is a client
 * context. Owned by the calling worker thread. */
struct tls_conn *tls_conn_new(struct tls_ctx *x);
/* A client-side connection over client context <x> (NULL for a server
 * context). <sni> (may be NULL) is the next hop's host name, sent as SNI
 * (a trailing dot dropped; nothing sent for an address literal) and, with
 * tls_client_ctx_verify(), the name the certificate must carry. The
 * ClientHello is already in tls_conn_pending()/tls_conn_take() on return.
 * Returns NULL when out of memory (or, verifying, without a host name).
 * Owned by the calling worker thread. */
struct tls_conn *tls_conn_new_client(struct tls_ctx *x, const char *sni);
/* Frees <t> and everything it holds (NULL: no-op). No alert is sent. */
void tls_conn_free(struct tls_conn *t);

/* Hands <n> bytes of ciphertext received from the peer. They are copied:
 * the caller's buffer is free again on return. Runs the handshake as far as
 * the input allows. Returns 0, -EPROTO (fatal: see tls_conn_error(), an
 * alert may be waiting in tls_conn_take()) or -ENOMEM. */
int tls_conn_feed(struct tls_conn *t, const void *cipher, size_t n);

/* Decrypts into <plain> up to <cap> bytes (at most one record's worth per
 * call: call again until it returns 0). Returns the bytes written (> 0),
 * 0 = nothing more until more ciphertext is fed (the handshake may have
 * advanced: check tls_conn_established() and tls_conn_pending()),
 * -ESHUTDOWN = the peer sent close_notify, -EPROTO = fatal (bad record,
 * refused handshake...: tls_conn_error() says why), -ENOMEM. */
ssize_t tls_conn_read(struct tls_conn *t, void *plain, size_t cap);

/* Encrypts <n> bytes of plaintext into the pending output. Before the
 * handshake is done they are kept and encrypted as soon as it is (so an
 * early greeting is never sent in clear). Returns 0, -EPROTO (failed or
 * closed connection) or -ENOMEM. */
int tls_conn_write(struct tls_conn *t, const void *plain, size_t n);

/* Queues a close_notify alert (after the last write, e.g. 221 to QUIT).
 * Returns 0, or -EPROTO when the connection already failed. */
int tls_conn_shutdown(struct tls_conn *t);

/* Bytes of ciphertext waiting for tls_conn_take(). */
size_t tls_conn_pending(const struct tls_conn *t);

/* Appends all ciphertext ready to send (handshake records, application
 * data, alerts) to <cipher_out>; when <cipher_out> is empty its memory is
 * swapped with the connection's instead of copied. Afterwards the
 * connection holds no output memory. Returns the bytes added or -ENOMEM
 * (nothing is lost then). */
ssize_t tls_conn_take(struct tls_conn *t, struct buf *cipher_out);

/* The handshake finished (and the connection has not failed). */
bool tls_conn_established(const struct tls_conn *t);
/* The handshake resumed a session (a ticket). */
bool tls_conn_resumed(const struct tls_conn *t);
/* "TLSv1.3", "TLSv1.2"; "" before the handshake. Static strings. */
const char *tls_conn_version(const struct tls_conn *t);
/* The protocol version as far as the handshake got, up or not: "TLSv1.3",
 * or "unknown" when none was negotiated yet (counting failures). */
const char *tls_conn_protocol(const struct tls_conn *t);
/* "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES128-GCM-SHA256"; "" before the
 * handshake. Static strings. */
const char *tls_conn_cipher(const struct tls_conn *t);
/* The cipher's secret bits (256); 0 before the handshake. */
int tls_conn_cipher_bits(const struct tls_conn *t);
/* The server name the client asked for (SNI), or NULL (none, or not a
 * plain host name: safe to log). On a client connection: the name it sent.
 * Valid as long as <t>. */
const char *tls_conn_sni(const struct tls_conn *t);
/* Why the connection failed ("unsupported protocol", "decryption failed or
 * bad record mac", ...); "" while it has not. A static string. */
const char *tls_conn_error(const struct tls_conn *t);

#endif
