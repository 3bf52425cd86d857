/* session_delay: the tarpit of io/session (SMTP_ACT_DELAY): replies held
 * on the worker's delay lists, with one ring timeout for the earliest. */
#include "io/session.h"
#include "io/session-int.h"

#include <liburing.h>

#include "io/ring.h"

/* The tarpit:
 * A refusal the session wants delayed (SMTP_ACT_DELAY: an unknown
 * recipient with --unknown-recipient-delay) holds the session's replies
 * and its further input, which waits in c->pending, on the worker's delay
 * lists: nothing blocks, other sessions go on, and the replies keep their
 * PIPELINING order. A list holds sessions of one delay length, so it is in
 * order of due time; a ring timeout is armed for the earliest head (the
 * kernel copies its time at submission: io/ring's ring_timer_at()). */
static void delay_arm(struct worker *w)
{
	int64_t at = 0;

	for (unsigned i = 0; i < 2; i++)
		if (w->delayq[i].head && (!at || w->delayq[i].head->delay_at < at))
			at = w->delayq[i].head->delay_at;
	ring_timer_at(&w->ring, &w->delay_timer, w->now, at, UD(w, UD_DELAY));
}

void session_delay_start(struct worker *w, struct conn *c)
{
	struct delay_queue *q = &w->delayq[0];

	/* The list of this delay length, or an empty one; a third length
	 * (none today) shares the second list and may fire late, never early. */
	if (q->head && q->ms != c->s.delay_ms)
		q = &w->delayq[1];
	if (!q->head)
		q->ms = c->s.delay_ms;
	c->flags |= C_DELAYQ;
	c->delay_at = w->now + c->s.delay_ms;
	c->delay_next = NULL;
	if (q->tail)
		q->tail->delay_next = c;
	else
		q->head = c;
	q->tail = c;
	delay_arm(w);
}

static void delay_over(struct worker *w, struct conn *c);

void session_delay_tick(struct worker *w)
{
	struct conn *c;

	for (unsigned i = 0; i < 2; i++) {
		struct delay_queue *q = &w->delayq[i];

		while ((c = q->head) && c->delay_at <= w->now) {
			q->head = c->delay_next;
			if (!q->head)
				q->tail = NULL;
			delay_over(w, c);
		}
	}
	delay_arm(w);
}

static void delay_over(struct worker *w, struct conn *c)
{
	c->flags &= ~C_DELAYQ;
	if (c->state == CONN_S_CLOSING) {
		session_maybe_free(w, c);
		return;
	}
	smtp_session_delay_done(&c->s);
	c->last_active = w->now;
	if (c->pending.len)
		session_feed(w, c, NULL, 0); /* what came meanwhile */
	session_mark_dirty(w, c);
}

void session_on_delay(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	/* Which timer this was is not known: the next one is armed afresh
	 * (one more in flight at most, never a late one). */
	w->delay_timer.armed_at = 0;
	session_delay_tick(w);
}
