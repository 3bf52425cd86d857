/* session_proxy: the PROXY protocol header in front of a session
 * (--listen-proxy, --listen-tls-proxy), on the worker's ring. See
 * session-int.h. */
#include "io/session-int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/maillog.h"
#include "core/policy.h"
#include "core/proxy.h"
#include "io/conn.h"
#include "io/session.h"

/* Its log lines name ringmx/smtpd (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTPD

/* ---- PROXY protocol (--listen-proxy) ----
 *
 * A connection from a --proxy-networks balancer sends a PROXY header
 * first (core/proxy); until it is complete nothing else happens: no
 * greeting, no TLS. Then the client it names is the session's peer (for
 * the logs, Received:, --relay-networks), and the connection starts as
 * one accepted directly would, the bytes after the header being the
 * client's first ones (a TLS ClientHello on --listen-tls-proxy). A
 * malformed header, one that does not come within --proxy-timeout, or
 * a connection from elsewhere is closed without a word. */

static void sockaddr_of(const struct proxy_hdr *h, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (h->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, h->src, 4);
		sin->sin_port = htons(h->src_port);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, h->src, 16);
		s6->sin6_port = htons(h->src_port);
	}
}

static void proxy_apply(struct worker *w, struct conn *c, const struct proxy_hdr *h)
{
	struct smtp_peer peer = c->s.peer;
	struct sockaddr_storage ss;
	char via[64];

	snprintf(via, sizeof(via), "%s", c->s.peer.addr);
	if (h->family == AF_UNSPEC) {
		/* A health check, or a client the balancer does not name: the
		 * balancer's address stands, but it is nobody's relay client. */
		peer.may_relay = false;
		peer.limited = false; /* the balancer itself, checking */
		LOGD("proxy: client=[%s]:%u header names no client (v%d)", via, c->port,
		     h->version);
	} else {
		sockaddr_of(h, &ss);
		inet_ntop(h->family, h->src, peer.addr, sizeof(peer.addr));
		peer.may_relay =
		    policy_client_may_relay(&session_conf(w)->policy, (const struct sockaddr *)&ss);
		session_limits_for(w, (const struct sockaddr *)&ss, &peer);
		LOGI("proxy: client=[%s]:%u via [%s]:%u (v%d)", peer.addr, h->src_port, via,
		     c->port, h->version);
		c->port = h->src_port;
	}
	c->s.peer = peer;
}

void session_proxy_input(struct worker *w, struct conn *c, const char *p, size_t n)
{
	struct proxy_hdr h;
	struct buf rest = BUF_INIT;
	int r;

	if (buf_append(&c->pending, p, n)) {
		session_close(w, c);
		return;
	}
	r = proxy_parse(c->pending.p, c->pending.len, &h);
	if (r == PROXY_AGAIN)
		return;
	if (r == PROXY_BAD) {
		LOGI("proxy: client=[%s]:%u bad PROXY header: closed", c->s.peer.addr, c->port);
		session_close(w, c);
		return;
	}
	c->flags &= ~C_PROXYH;
	proxy_apply(w, c, &h);
	maillog_connect(c->s.peer.addr); /* the client the balancer names */
	c->flags |= C_CONNLOG;
	/* What followed the header is the client's: kept aside while the
	 * session starts, then fed as if it had just arrived. */
	if (c->pending.len > (size_t)r && buf_append(&rest, c->pending.p + r, c->pending.len - r)) {
		session_close(w, c);
		return;
	}
	buf_reset(&c->pending, 0);
	session_start(w, c);
	if (rest.len && c->state != CONN_S_CLOSING) {
		if (c->rc.tls) {
			if (c->rc.xprt->recv(&c->rc, rest.p, rest.len, session_on_input, c) < 0) {
				c->rc.flags |= RCONN_HANGUP;
				session_mark_dirty(w, c);
			}
		} else {
			session_on_input(c, rest.p, rest.len);
		}
	}
	buf_free(&rest);
}
