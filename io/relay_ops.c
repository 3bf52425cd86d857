/* relay_ops: the operator's requests to the relay (`ringmx queue release`,
 * `requeue`, `delete` through io/control, and `--flush`), applied to the
 * worker's deferred and moving messages; and a reload's new next hops,
 * which the relay moves to once its connections to the old ones are done.
 * See relay.h. */
#include "io/relay.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/qtool.h"
#include "io/relay-int.h"
#include "io/relay_conf.h"
#include "io/types-t.h"
#include "queue/crc32c.h"
#include "queue/spool.h"

#undef LOG_PROG
#define LOG_PROG LOG_P_SMTP

/* The operator's requests of one batch, by queue id: one pass over the
 * deferred and moving messages, however many ids (a `delete --all` of a
 * large queue names every one). Of two requests for one id, a delete
 * wins; else the later. */
struct req_ent {
	const char *qid; /* into the batch */
	char op;         /* enum qtool_op */
};

static struct req_ent *req_slot(struct req_ent *v, size_t cap, const char *qid)
{
	size_t i = (size_t)(crc32c(0, qid, strlen(qid)) * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);

	while (v[i].qid && strcmp(v[i].qid, qid))
		i = (i + 1) & (cap - 1);
	return &v[i];
}

/* Forgets a deferred message the operator deleted (the tool marked it done:
 * this mark names where it is now, moved meanwhile or not; twice the same
 * is harmless). */
static void msg_deleted(struct worker *w, struct rmsg *m)
{
	LOGI("relay: id=%s deleted by the operator", m->m.qid);
	relay_done_record(w, m, SPOOL_DELETED);
	relay_msg_free(w, m);
}

void relay_requests(struct worker *w, const char *req, size_t len)
{
	struct relay *r = w->relay;
	struct req_ent *v, *e;
	struct rmsg **pp, *m;
	size_t n = 0, cap = 16;
	bool due = false;

	if (!r || !len)
		return;
	for (size_t o = 0; o < len; o += strlen(req + o) + 1)
		n++;
	while (cap < 2 * n)
		cap *= 2;
	v = calloc(cap, sizeof(*v));
	if (!v) {
		LOGE("relay: out of memory for the operator's requests: they apply at the next "
		     "start");
		return;
	}
	for (size_t o = 0; o < len; o += strlen(req + o) + 1) {
		e = req_slot(v, cap, req + o + 1);
		if (e->op != QTOOL_DELETE)
			e->op = req[o];
		e->qid = req + o + 1;
	}
	for (pp = &r->deferred; (m = *pp);) {
		e = req_slot(v, cap, m->m.qid);
		if (e->qid && e->op == QTOOL_DELETE) {
			*pp = m->next;
			msg_deleted(w, m);
			continue;
		}
		if (e->qid && e->op == QTOOL_RELEASE && m->held) {
			LOGI("relay: id=%s released by the operator: tried now", m->m.qid);
			m->held = false;
			m->d.next_try = 0;
			due = true;
		} else if (e->qid && e->op == QTOOL_REQUEUE && !m->held) {
			LOGI("relay: id=%s requeued by the operator: tried now", m->m.qid);
			m->d.next_try = 0;
			due = true;
		}
		pp = &m->next;
	}
	for (m = r->moving; m; m = m->next) {
		e = req_slot(v, cap, m->m.qid);
		if (e->qid && e->op == QTOOL_DELETE && !m->dropped) {
			LOGI("relay: id=%s deleted by the operator (while it moved)", m->m.qid);
			m->dropped = true; /* relay_move_done() finishes it */
		}
	}
	free(v);
	if (due)
		relay_tick(w);
}

void relay_flush(struct worker *w)
{
	struct relay *r = w->relay;

	if (!r)
		return;
	for (struct rmsg *m = r->deferred; m; m = m->next)
		m->d.next_try = 0;
	relay_tick(w);
}

/* ---- next hops changed by a reload ---- */

void relay_routes_check(struct worker *w)
{
	struct relay *r = w->relay;
	struct relay_conf *want = relay_conf_wanted(w);
	struct relay_route_state *rs;
	struct delivery_queue q;
	struct rmsg *again = NULL, **tail = &again, *m;
	struct delivery_job *j;

	if (r->stopping)
		return;
	if (want == r->rc) {
		if (r->switching) { /* reloaded back before the move: carry on */
			r->switching = false;
			for (unsigned rt = 0; rt < r->rc->nroutes; rt++)
				if (delivery_waiting(&r->q, rt))
					relay_conn_kick(w, rt);
		}
		return;
	}
	if (!r->switching) {
		/* The connections to the old next hops finish the message they
		 * carry and take no other; the idle ones go now. Jobs wait. */
		r->switching = true;
		for (struct relay_conn *c = r->conns, *next; c; c = next) {
			next = c->next;
			if (c->job || (c->rc.flags & RCONN_CLOSING))
				continue;
			if (c->cl.state == SMTPC_S_READY) {
				smtp_client_quit(&c->cl);
				relay_conn_dirty(r, c);
			} else if (c->cl.state != SMTPC_S_QUIT) {
				relay_conn_close(w, c, "4.3.0 next hops changed");
			}
		}
	}
	if (r->conns)
		return; /* the next tick looks again */
	rs = calloc(want->nroutes, sizeof(*rs));
	if (!rs || delivery_queue_init(&q, want->nroutes)) {
		free(rs);
		LOGE("relay: out of memory for the new next hops: trying again in a second");
		return;
	}
	/* The waiting jobs go back to their messages, which are routed and
	 * queued again in the new next hops, in the order they came. */
	for (unsigned rt = 0; rt < r->rc->nroutes; rt++) {
		while ((j = delivery_take(&r->q, rt))) {
			struct delivery_msg *d = delivery_job_unqueue(j);

			if (d) {
				*tail = rmsg_of(d);
				tail = &rmsg_of(d)->next;
			}
		}
	}
	*tail = NULL;
	delivery_queue_fini(&r->q);
	free(r->rs);
	r->q = q;
	r->rs = rs;
	relay_conf_unref(r->rc);
	r->rc = relay_conf_ref(want);
	r->gen++;
	r->switching = false;
	LOGI("relay: worker %u delivers to the new next hops: %u routes, %u hops", w->id,
	     want->nroutes, want->nhops);
	while ((m = again)) {
		again = m->next;
		m->next = NULL;
		relay_msg_dispatch(w, m);
	}
}

void relay_reloaded(struct worker *w)
{
	if (w->relay)
		relay_routes_check(w);
}
