/* session-int: what io/session.c, io/session_proxy.c, io/session_limit.c
 * and io/session_dns.c share (the PROXY header comes before the session
 * starts, and hands it the bytes after; the per-client limits decide
 * whether it starts, and the rates' verdicts come back to it). */
#ifndef RINGMX_IO_SESSION_INT_H
#define RINGMX_IO_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/tables.h"
#include "io/types-t.h"

/* The options a reload may change (core/conf's live ones): the worker's
 * snapshot's, else the startup ones. */
static inline const struct conf *session_conf(const struct worker *w)
{
	return w->tables && w->tables->conf ? w->tables->conf : w->g->conf;
}

/* The TLS context new handshakes use: the snapshot's after a reload. */
static inline struct tls_ctx *session_tls(const struct worker *w)
{
	return w->tables && w->tables->has_tls ? (struct tls_ctx *)w->tables->tls : w->g->tls;
}

/* The per-client table (core/anvil): once there, it stays. */
static inline struct anvil *session_anvil(const struct worker *w)
{
	return w->tables ? w->tables->anvil : w->g->anvil;
}

/* Whether the client at <sa> is under the per-client limits, with its key. */
void session_limits_for(const struct worker *w, const struct sockaddr *sa, struct smtp_peer *peer);
/* The connection is ready for SMTP: TLS handshake or greeting. */
void session_start(struct worker *w, struct conn *c);
/* Plaintext from the transport (io/conn's callback); NULL: TLS is up. */
bool session_on_input(void *owner, const char *p, size_t n);
/* After session_start()'s limits: TLS handshake or greeting. */
void session_begin(struct worker *w, struct conn *c);
/* (io/session_limit.c) The per-client session limit and connection rate
 * of a new session (c->s.peer.limited): true, go on; false, it was refused
 * (421) or waits for the cluster's verdict (session_begin() follows). */
bool session_limit_start(struct worker *w, struct conn *c);
/* A 421 4.7.0 to a client over a per-client limit (<rate>: the connection
 * rate, else its sessions), or a close under implicit TLS. */
void session_limit_refuse(struct worker *w, struct conn *c, bool rate);
/* Every change of c->state (traced at debug). */
void conn_set_state(struct conn *c, enum conn_state st);
/* Feeds input to the session and acts on what it asks for; (NULL, 0):
 * what waited in c->pending. */
void conn_feed(struct worker *w, struct conn *c, const char *p, size_t n);
/* Bytes of a connection still waiting for its PROXY header (C_PROXYH). */
void session_proxy_input(struct worker *w, struct conn *c, const char *p, size_t n);

/* Feeds input to the session and acts on what it asks for (io/session). */
void session_feed(struct worker *w, struct conn *c, const char *p, size_t n);
/* The tarpit (io/session_delay): <c>'s replies are held s.delay_ms; the
 * lists' due sessions go (once a tick, and at the timer). */
void session_delay_start(struct worker *w, struct conn *c);
void session_delay_tick(struct worker *w);

/* io/milter's ends: the filters took the message as it is now in the
 * transaction (spooled, 250 once durable); they answered a command or the
 * message (the input that waited is fed). */
void session_commit(struct worker *w, struct conn *c);
void session_resume(struct worker *w, struct conn *c);
/* The filters took the body that waited (io/milter_stream): streams, pauses
 * or resumes <c>'s input as its content stands. */
void session_content_flow(struct worker *w, struct conn *c);

/* The DNS checks (io/session_dns.c): at connect (the --dnsbl scores, the
 * client's forward-confirmed name; the greeting waits for them, C_DNSQ,
 * or the verdict kept for the address applies at once); true, and the
 * greeting noted as due, while they run; at MAIL (SMTP_ACT_DNS: the
 * sender domain's questions go out, unless they are out); the conn is
 * freed. Settings from the session's snapshot (live). */
void session_dns_start(struct worker *w, struct conn *c);
bool session_dns_holds_greet(struct conn *c);
void session_dns_sender(struct worker *w, struct conn *c);
void session_dns_free(struct worker *w, struct conn *c);

#endif
