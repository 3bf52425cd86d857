/* session_dns: the DNS checks of a server session, on the worker's
 * resolver (io/dns). Declared in session-int.h and session.h.
 *
 * At connect (session_begin(), after the PROXY header and the per-client
 * limits): every --dnsbl site's question and the PTR question go out at
 * once; each PTR name is then forward-confirmed (A for an IPv4 client,
 * AAAA for an IPv6 one). The session is C_DNSQ meanwhile: its greeting
 * (after --greet-delay, or after an implicit-TLS handshake) waits for the
 * last answer or --dnsbl-timeout, whichever comes first; a list that did
 * not answer by then counts as not listing the client. The verdict (the
 * score, the site named, the verified name) is then kept per worker for
 * --dnsbl-cache-ttl under the client's address, unless an answer was
 * missing.
 *
 * At MAIL (SMTP_ACT_DNS, core/smtp_session): the sender domain's MX,
 * then (none) its A and AAAA, and each --rhsbl-sender site, at once; the
 * command waits unanswered, the input after it kept back, so PIPELINING
 * keeps its order, at most --dnsbl-timeout, then the verdict (no answer:
 * 450 4.1.8).
 *
 * A session that closes while its questions are out stays allocated until
 * their answers (c->rc.inflight counts them; c-ares's own timeout bounds
 * them). Nothing here blocks: the answers come as ring completions. */

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dns_cache.h"
#include "core/dnsbl.h"
#include "core/log.h"
#include "io/dns.h"
#include "io/ring.h"
#include "io/session-int.h"
#include "io/session.h"

#define PTR_NAMES    4    /* PTR names forward-confirmed at most */
#define VERDICTS_MAX 8192 /* clients' verdicts kept per worker */
#define ANSWERS_MAX  4096 /* raw answers kept per worker */
#define RESOLVER_TRY 2000 /* ms, c-ares's wait per try when --dnsbl-timeout is not set */

enum slot_kind { SK_SITE, SK_PTR, SK_FWD, SK_MX, SK_A, SK_AAAA, SK_RHS };

struct sdns_conn;
/* One question's context (its phase's generation: an answer of an
 * earlier phase is ignored). */
struct slot {
	struct sdns_conn *q;
	uint8_t kind, idx;
	unsigned gen;
};

/* A client's verdict, as kept. */
struct verdict {
	int score, top;
	bool named;
	char site[DNSBL_NAME_MAX + 1];
	char name[DNSBL_NAME_MAX + 1];
};

struct sdns_conn {
	struct conn *c;
	struct tables *snap; /* the options of the checks running (a reference) */
	const struct conf *cf;
	unsigned pending;  /* questions out */
	bool issuing;      /* questions are being asked: no verdict yet */
	bool conn_active;  /* the connect checks run (C_DNSQ) */
	bool greet_wanted; /* the greeting is due once they are done */
	bool sender_active;
	bool temp;   /* an answer was missing: the verdict is not kept */
	bool linked; /* on the worker's deadline list */
	int64_t deadline;
	struct sdns_conn *prev, *next;
	struct dnsbl_score sc;
	char names[PTR_NAMES][DNSBL_NAME_MAX + 1];
	unsigned nnames;
	char name[DNSBL_NAME_MAX + 1]; /* forward-confirmed; "" none */
	struct dns_sender ds;
	struct dnsbl_score rsc;
	unsigned gen; /* bumped by each phase: an answer of an earlier one is ignored */
};

struct sdns {
	struct worker *w;
	struct dns *dns;
	struct dns_cache *verdicts;
	const struct tables *verdicts_of; /* the snapshot they were made under */
	struct sdns_conn *head, *tail;    /* waiting, by deadline (one timeout per snapshot) */
	struct ring_timer timer;
	uint64_t stat_listed, stat_unnamed, stat_verdict_hits;
};

/* ---- the deadline list ---- */

static void wait_arm(struct sdns *sd)
{
	if (sd->head)
		ring_timer_at(&sd->w->ring, &sd->timer, sd->w->now, sd->head->deadline,
		              UD(sd, UD_DNS_WAIT));
}

static void wait_link(struct sdns *sd, struct sdns_conn *q, unsigned ms)
{
	struct sdns_conn *at = sd->tail;

	q->deadline = sd->w->now + ms;
	/* From the tail: a reload may shorten the timeout, else it is last. */
	while (at && at->deadline > q->deadline)
		at = at->prev;
	q->prev = at;
	q->next = at ? at->next : sd->head;
	if (q->next)
		q->next->prev = q;
	else
		sd->tail = q;
	if (at)
		at->next = q;
	else
		sd->head = q;
	q->linked = true;
	wait_arm(sd);
}

static void wait_unlink(struct sdns *sd, struct sdns_conn *q)
{
	if (!q->linked)
		return;
	if (q->prev)
		q->prev->next = q->next;
	else
		sd->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		sd->tail = q->prev;
	q->prev = q->next = NULL;
	q->linked = false;
}

/* ---- the connect checks ---- */

static void connect_apply(struct worker *w, struct conn *c, const struct conf *cf,
                          const struct verdict *v)
{
	struct smtp_session *s = &c->s;
	char reply[DNSBL_NAME_MAX + 160];

	if (cf->peername_lookup || cf->reject_unknown_client_hostname) {
		smtp_session_client_name(s, v->named ? v->name : NULL);
		LOGI("dns: client=%s[%s]:%u %s", v->named ? v->name : "unknown", s->peer.addr,
		     c->port, v->named ? "name forward-confirmed" : "no forward-confirmed name");
	}
	if (cf->ndnsbl && v->score >= (int)cf->dnsbl_threshold) {
		w->sdns->stat_listed++;
		LOGI("dnsbl: client=[%s]:%u listed: score %d (threshold %u), by %s; %s",
		     s->peer.addr, c->port, v->score, cf->dnsbl_threshold,
		     v->site[0] ? v->site : "-",
		     cf->dnsbl_action == CONF_DNSBL_REJECT     ? "rejected"
		     : cf->dnsbl_action == CONF_DNSBL_TEMPFAIL ? "tempfailed"
		                                               : "logged only");
		if (cf->dnsbl_action != CONF_DNSBL_LOG) {
			bool temp = cf->dnsbl_action == CONF_DNSBL_TEMPFAIL;

			snprintf(reply, sizeof(reply),
			         "%s Service unavailable; client [%s] blocked using %s",
			         temp ? "450 4.7.1" : "554 5.7.1", s->peer.addr,
			         v->site[0] ? v->site : "a DNS list");
			smtp_session_refuse_all(s, reply,
			                        temp ? SMTP_RF_DNSBL_TEMP : SMTP_RF_DNSBL);
			return;
		}
	} else if (cf->ndnsbl) {
		LOGD("dnsbl: client=[%s]:%u score %d", s->peer.addr, c->port, v->score);
	}
	if (cf->reject_unknown_client_hostname && !v->named) {
		w->sdns->stat_unnamed++;
		snprintf(reply, sizeof(reply),
		         "450 4.7.25 Client host rejected: cannot find your hostname, [%s]",
		         s->peer.addr);
		smtp_session_refuse_all(s, reply, SMTP_RF_UNKNOWN_CLIENT);
	}
}

static void snap_drop(struct sdns_conn *q)
{
	if (!q->conn_active && !q->sender_active) {
		tables_unref(q->snap);
		q->snap = NULL;
		q->cf = NULL;
	}
}

static void connect_finish(struct worker *w, struct sdns_conn *q)
{
	struct conn *c = q->c;
	const struct conf *cf = q->cf;
	struct verdict v = {.score = q->sc.score, .top = q->sc.top};

	wait_unlink(w->sdns, q);
	q->conn_active = false;
	q->gen++;
	c->flags &= ~C_DNSQ;
	if (q->sc.top >= 0)
		snprintf(v.site, sizeof(v.site), "%s", cf->dnsbl[q->sc.top].domain);
	if (q->name[0]) {
		v.named = true;
		snprintf(v.name, sizeof(v.name), "%s", q->name);
	}
	if (!q->temp && q->pending == 0 && cf->dnsbl_cache_ttl && w->sdns->verdicts)
		(void)dns_cache_put(w->sdns->verdicts, c->s.peer.addr, &v, sizeof(v),
		                    w->now + (int64_t)cf->dnsbl_cache_ttl * 1000);
	if (c->state != CONN_S_CLOSING) {
		connect_apply(w, c, cf, &v);
		if (q->greet_wanted) {
			q->greet_wanted = false;
			session_greet(w, c);
		}
	}
	snap_drop(q);
}

/* ---- the sender checks ---- */

static void sender_finish(struct worker *w, struct sdns_conn *q)
{
	struct conn *c = q->c;
	const struct conf *cf = q->cf;
	const char *dom = c->s.dns_domain ? c->s.dns_domain : "";
	enum smtp_refusal why = SMTP_RF_SENDER_DOMAIN;
	char reply[2 * DNSBL_NAME_MAX + 120];
	const char *r = NULL;

	wait_unlink(w->sdns, q);
	q->sender_active = false;
	q->gen++;
	if (cf->nrhsbl && q->rsc.score >= (int)cf->dnsbl_threshold && q->rsc.top >= 0) {
		snprintf(reply, sizeof(reply),
		         "554 5.7.1 <%s>: Sender address rejected: domain listed at %s", dom,
		         cf->rhsbl[q->rsc.top].domain);
		r = reply;
		why = SMTP_RF_RHSBL;
	} else if (cf->reject_unknown_sender_domain) {
		struct dns_sender ds = q->ds;
		enum dns_sender_verdict v;

		/* The deadline: what did not answer is "no answer". */
		if (ds.mx == DNS_R_NONE)
			ds.mx = DNS_R_TEMP;
		v = dns_sender_verdict(&ds);
		if (v == DNS_SENDER_ASK_ADDR || v == DNS_SENDER_WAIT)
			v = DNS_SENDER_TEMP;
		if (v == DNS_SENDER_NULL_MX) {
			snprintf(reply, sizeof(reply),
			         "550 5.1.8 <%s>: Sender address rejected: domain accepts no mail "
			         "(null MX)",
			         dom);
			r = reply;
		} else if (v == DNS_SENDER_UNKNOWN) {
			snprintf(reply, sizeof(reply),
			         "550 5.1.8 <%s>: Sender address rejected: Domain not found", dom);
			r = reply;
		} else if (v == DNS_SENDER_TEMP) {
			snprintf(
			    reply, sizeof(reply),
			    "450 4.1.8 <%s>: Sender address rejected: Domain not found (no DNS "
			    "answer)",
			    dom);
			r = reply;
			why = SMTP_RF_SENDER_DNS;
		}
	}
	snap_drop(q);
	if (c->state == CONN_S_CLOSING)
		return; /* freed by the caller once nothing is in flight */
	smtp_session_dns_done(&c->s, r, why);
	c->last_active = w->now;
	session_feed(w, c, NULL, 0); /* the input that waited; marks it dirty */
}

/* ---- answers ---- */

static void ask(struct worker *w, struct sdns_conn *q, enum slot_kind kind, unsigned idx,
                const char *name, int type);

static bool addr_is(const char *ip, const uint8_t *a, bool v6)
{
	uint8_t b[16];

	return inet_pton(v6 ? AF_INET6 : AF_INET, ip, b) == 1 && !memcmp(a, b, v6 ? 16 : 4);
}

static void on_answer(void *arg, const struct dns_answer *a)
{
	struct slot slot = *(struct slot *)arg, *sl = &slot;
	struct sdns_conn *q = sl->q;
	struct conn *c = q->c;
	struct worker *w = c->w;
	const char *ip = dnsbl_client_addr(c->s.peer.addr);
	bool v6 = strchr(ip, ':') != NULL;
	uint8_t addrs[DNSBL_ANSWERS][16];
	unsigned n = 0;
	enum dns_result r;

	free(arg);
	c->rc.inflight--;
	q->pending--;
	if (sl->gen != q->gen || !q->cf) {
		/* The phase it was asked in is over (its deadline passed). */
		if (c->state == CONN_S_CLOSING)
			session_maybe_free(w, c);
		return;
	}
	switch (sl->kind) {
	case SK_SITE:
	case SK_RHS: {
		const struct dnsbl_site *site =
		    sl->kind == SK_SITE ? &q->cf->dnsbl[sl->idx] : &q->cf->rhsbl[sl->idx];
		uint8_t a4[DNSBL_ANSWERS][4];

		r = dns_parse_addrs(a, 1, &a4[0][0], DNSBL_ANSWERS, &n);
		if (r == DNS_R_TEMP)
			q->temp = true;
		if (r == DNS_R_OK && dnsbl_match_any(site, (const uint8_t(*)[4])a4, n))
			dnsbl_score_add(sl->kind == SK_SITE ? &q->sc : &q->rsc,
			                sl->kind == SK_SITE ? q->cf->dnsbl : q->cf->rhsbl, sl->idx);
		break;
	}
	case SK_PTR:
		r = dns_parse_ptr(a, q->names, PTR_NAMES, &q->nnames);
		if (r == DNS_R_TEMP)
			q->temp = true;
		for (unsigned i = 0; i < q->nnames && c->state != CONN_S_CLOSING; i++)
			ask(w, q, SK_FWD, i, q->names[i], v6 ? 28 : 1);
		break;
	case SK_FWD:
		r = dns_parse_addrs(a, v6 ? 28 : 1, &addrs[0][0], DNSBL_ANSWERS, &n);
		if (r == DNS_R_TEMP)
			q->temp = true;
		for (unsigned i = 0; i < n && !q->name[0]; i++)
			if (addr_is(ip, addrs[i], v6))
				snprintf(q->name, sizeof(q->name), "%s", q->names[sl->idx]);
		break;
	case SK_MX:
		q->ds.mx = dns_parse_mx(a, &q->ds.null_mx);
		if (dns_sender_verdict(&q->ds) == DNS_SENDER_ASK_ADDR &&
		    c->state != CONN_S_CLOSING && c->s.dns_domain) {
			q->ds.a = q->ds.aaaa = DNS_R_NONE;
			ask(w, q, SK_A, 0, c->s.dns_domain, 1);
			ask(w, q, SK_AAAA, 0, c->s.dns_domain, 28);
		}
		break;
	case SK_A:
	case SK_AAAA:
		r = dns_parse_addrs(a, sl->kind == SK_A ? 1 : 28, &addrs[0][0], DNSBL_ANSWERS, &n);
		*(sl->kind == SK_A ? &q->ds.a : &q->ds.aaaa) = r;
		break;
	}
	if (!q->pending && !q->issuing) {
		if (q->conn_active)
			connect_finish(w, q);
		else if (q->sender_active)
			sender_finish(w, q);
	}
	if (c->state == CONN_S_CLOSING)
		session_maybe_free(w, c); /* last: it may free <c> and <q> */
}

static void ask(struct worker *w, struct sdns_conn *q, enum slot_kind kind, unsigned idx,
                const char *name, int type)
{
	struct slot *sl = malloc(sizeof(*sl));
	bool issuing = q->issuing;

	if (!sl) {
		q->temp = true; /* no memory: no answer */
		return;
	}
	*sl = (struct slot){.q = q, .kind = (uint8_t)kind, .idx = (uint8_t)idx, .gen = q->gen};
	q->pending++;
	q->c->rc.inflight++;
	q->issuing = true; /* an answer from the cache comes inside dns_query() */
	dns_query(w->sdns->dns, name, type, on_answer, sl);
	q->issuing = issuing;
}

static struct sdns_conn *dq_get(struct worker *w, struct conn *c)
{
	struct sdns_conn *q = c->dq;

	if (q)
		return q;
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->c = c;
	c->dq = q;
	return q;
}

static void snap_take(struct worker *w, struct sdns_conn *q)
{
	if (!q->cf) {
		q->snap = w->tables ? tables_ref(w->tables) : NULL;
		q->cf = session_conf(w);
	}
}

/* The questions are out (some may be answered already): done if all are. */
static void issued(struct worker *w, struct sdns_conn *q)
{
	q->issuing = false;
	if (q->pending)
		return;
	if (q->conn_active)
		connect_finish(w, q);
	else if (q->sender_active)
		sender_finish(w, q);
}

/* ---- the session's hooks ---- */

void session_dns_start(struct worker *w, struct conn *c)
{
	const struct conf *cf = session_conf(w);
	struct sdns *sd = w->sdns;
	bool named = cf->peername_lookup || cf->reject_unknown_client_hostname;
	struct sdns_conn *q;
	char qn[DNSBL_NAME_MAX + 1];
	size_t vlen;

	if (!sd || (!cf->ndnsbl && !named))
		return;
	if (sd->verdicts_of != w->tables) {
		/* A reload: the verdicts of other lists or weights go. */
		dns_cache_free(sd->verdicts);
		sd->verdicts = dns_cache_new(VERDICTS_MAX);
		sd->verdicts_of = w->tables;
	}
	if (sd->verdicts && cf->dnsbl_cache_ttl) {
		const struct verdict *v =
		    dns_cache_get(sd->verdicts, c->s.peer.addr, w->now, &vlen);

		if (v && vlen == sizeof(*v)) {
			sd->stat_verdict_hits++;
			connect_apply(w, c, cf, v);
			return;
		}
	}
	q = dq_get(w, c);
	if (!q || dnsbl_ptr_name(c->s.peer.addr, qn, sizeof(qn)) < 0)
		return; /* no memory, or no address (a PROXY "UNKNOWN"): nothing to look up */
	snap_take(w, q);
	cf = q->cf;
	q->gen++;
	q->conn_active = true;
	q->temp = false;
	q->sc = (struct dnsbl_score){0, -1};
	q->name[0] = '\0';
	q->nnames = 0;
	c->flags |= C_DNSQ;
	wait_link(sd, q, cf->dnsbl_timeout_ms);
	q->issuing = true;
	if (named)
		ask(w, q, SK_PTR, 0, qn, 12);
	for (unsigned i = 0; i < cf->ndnsbl && c->state != CONN_S_CLOSING; i++)
		if (dnsbl_reverse_name(c->s.peer.addr, cf->dnsbl[i].domain, qn, sizeof(qn)) == 0)
			ask(w, q, SK_SITE, i, qn, 1);
	issued(w, q);
}

bool session_dns_holds_greet(struct conn *c)
{
	if (!(c->flags & C_DNSQ) || !c->dq)
		return false;
	c->dq->greet_wanted = true;
	return true;
}

void session_dns_sender(struct worker *w, struct conn *c)
{
	struct sdns_conn *q;
	const struct conf *cf;
	char qn[DNSBL_NAME_MAX + 1];

	if (!(c->s.act & SMTP_ACT_DNS) || (c->dq && c->dq->sender_active))
		return;
	q = w->sdns ? dq_get(w, c) : NULL;
	if (!q) {
		smtp_session_dns_done(&c->s,
		                      "451 4.3.0 <sender>: Sender address rejected: no resolver "
		                      "(out of memory)",
		                      SMTP_RF_SENDER_DNS);
		return;
	}
	snap_take(w, q);
	cf = q->cf;
	q->gen++;
	q->sender_active = true;
	q->ds = (struct dns_sender){0};
	q->rsc = (struct dnsbl_score){0, -1};
	wait_link(w->sdns, q, cf->dnsbl_timeout_ms);
	q->issuing = true;
	if (cf->reject_unknown_sender_domain)
		ask(w, q, SK_MX, 0, c->s.dns_domain, 15);
	for (unsigned i = 0; i < cf->nrhsbl && c->state != CONN_S_CLOSING; i++)
		if (dnsbl_rhs_name(c->s.dns_domain, cf->rhsbl[i].domain, qn, sizeof(qn)) == 0)
			ask(w, q, SK_RHS, i, qn, 1);
	issued(w, q);
}

void session_dns_free(struct worker *w, struct conn *c)
{
	struct sdns_conn *q = c->dq;

	if (!q)
		return;
	if (w->sdns)
		wait_unlink(w->sdns, q);
	tables_unref(q->snap);
	free(q);
	c->dq = NULL;
}

void session_dns_on_wait(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct sdns *sd = p;
	struct sdns_conn *q;

	sd->timer.armed_at = 0;
	while ((q = sd->head) && q->deadline <= w->now) {
		struct conn *c = q->c;

		q->temp = true;
		if (q->conn_active)
			connect_finish(w, q);
		else if (q->sender_active)
			sender_finish(w, q);
		else
			wait_unlink(sd, q);
		if (c->state == CONN_S_CLOSING)
			session_maybe_free(w, c);
	}
	wait_arm(sd);
}

void session_dns_on_poll(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	dns_on_poll(p, cqe);
}

void session_dns_on_timer(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	dns_on_timer(p, cqe);
}

int session_dns_init(struct worker *w)
{
	const struct conf *cf = w->g->conf;
	struct dns_conf dc = {
	    .servers = cf->dns_servers,
	    .nservers = cf->ndns_servers,
	    .timeout_ms = cf->dnsbl_timeout_ms ? cf->dnsbl_timeout_ms : RESOLVER_TRY,
	    .cache_size = ANSWERS_MAX,
	};
	struct sdns *sd = calloc(1, sizeof(*sd));
	char err[256];

	if (!sd)
		return -1;
	sd->w = w;
	sd->dns = dns_new(&w->ring, UD_DNS_POLL, UD_DNS_TIMER, &dc, err, sizeof(err));
	if (!sd->dns) {
		LOGE("worker %u: DNS resolver: %s", w->id, err);
		free(sd);
		return -1;
	}
	sd->verdicts = dns_cache_new(VERDICTS_MAX);
	sd->verdicts_of = w->tables;
	w->sdns = sd;
	return 0;
}

void session_dns_fini(struct worker *w)
{
	struct sdns *sd = w->sdns;

	if (!sd)
		return;
	if (sd->dns) {
		const struct dns_stats *st = dns_stats(sd->dns);

		if (st->sent || st->cached || sd->stat_verdict_hits)
			LOGI("worker %u: dns: %llu questions sent, %llu answered from the cache, "
			     "%llu without an answer; %llu client verdicts from the cache, %llu "
			     "listed, %llu without a confirmed name",
			     w->id, (unsigned long long)st->sent, (unsigned long long)st->cached,
			     (unsigned long long)st->failed,
			     (unsigned long long)sd->stat_verdict_hits,
			     (unsigned long long)sd->stat_listed,
			     (unsigned long long)sd->stat_unnamed);
	}
	dns_free(sd->dns);
	dns_cache_free(sd->verdicts);
	free(sd);
	w->sdns = NULL;
}
