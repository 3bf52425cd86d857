/* session_limit: the per-client limits of a server session (core/anvil),
 * and the verdicts of the rates kept in Redis (io/cluster) coming back to
 * it. See session-int.h and cluster.h.
 *
 * The concurrent sessions of a client are always counted here: they are
 * this gateway's own. The rates are counted here too unless --limits-redis
 * keeps them and its link is up: then the session waits for Redis's count
 * (the greeting held, or MAIL / RCPT unanswered, with the input after it
 * kept back), at most --limits-redis-timeout. An event Redis let through
 * is counted in the local table as well, so that the table knows this
 * gateway's share when it has to decide alone. */
#include "io/session-int.h"

#include "core/anvil.h"
#include "core/log.h"
#include "io/cluster.h"
#include "io/session.h"

void session_limit_refuse(struct worker *w, struct conn *c, bool rate)
{
	w->stat_limited++;
	LOGI("reject: client=[%s]:%u too many %s from its address", c->s.peer.addr, c->port,
	     rate ? "connections per period" : "sessions");
	if (c->flags & C_ITLS) {
		session_close(w, c); /* a 421 in clear means nothing to TLS */
		return;
	}
	conn_set_state(c, CONN_S_OPEN);
	smtp_session_limited(&c->s, rate);
	session_mark_dirty(w, c);
}

bool session_limit_start(struct worker *w, struct conn *c)
{
	struct anvil *a = session_anvil(w);
	bool ask = cluster_asks(w, CLUSTER_RATE_CONN);
	enum anvil_verdict v = ask ? anvil_connect_sessions(a, &c->s.peer.key, w->now)
	                           : anvil_connect(a, &c->s.peer.key, w->now);

	if (v != ANVIL_OK) {
		session_limit_refuse(w, c, v == ANVIL_RATE);
		return false;
	}
	c->flags |= C_ANVIL;
	if (!ask)
		return true;
	cluster_ask(w, c, CLUSTER_RATE_CONN);
	return false;
}

void session_rate_answer(struct worker *w, struct conn *c, enum cluster_rate_kind kind, int v)
{
	struct anvil *a = session_anvil(w);
	const struct anvil_key *k = &c->s.peer.key;
	bool fits = false;

	if (v >= 0) {
		/* Redis's yes is counted here too; without its word, this decides. */
		bool local = kind == CLUSTER_RATE_CONN  ? anvil_connection(a, k, w->now)
		             : kind == CLUSTER_RATE_MSG ? anvil_message(a, k, w->now)
		                                        : anvil_recipient(a, k, w->now);

		fits = v > 0 || local;
	}
	if (c->state == CONN_S_CLOSING) {
		if (kind != CLUSTER_RATE_CONN)
			smtp_session_rate_done(&c->s, fits); /* the line it kept goes */
		session_maybe_free(w, c);
		return;
	}
	if (kind == CLUSTER_RATE_CONN) {
		if (fits)
			session_begin(w, c);
		else
			session_limit_refuse(w, c, true);
		return;
	}
	smtp_session_rate_done(&c->s, fits);
	c->last_active = w->now;
	session_feed(w, c, NULL, 0); /* the input that waited; marks it dirty */
}
