/* route: the outbox, the mesh push and the MSG_RING wake-up. See route.h.
 * What a full ring cannot take waits in the worker's overflow list: the
 * messages are safe in the spool meanwhile, and order between messages
 * does not matter to delivery. */
#include "io/route.h"

#include <stdlib.h>

#include "core/log.h"
#include "io/ring.h"

static void msg_ring_wake(struct worker *w, unsigned to)
{
	struct worker *t = w->g->workers[to];
	int fd = atomic_load_explicit(&w->g->ring_fds[to], memory_order_acquire);
	struct io_uring_sqe *sqe;

	if (fd < 0)
		return; /* not up yet: it drains its rings before it first sleeps */
	sqe = ring_sqe(w);
	io_uring_prep_msg_ring(sqe, fd, 0, UD(t, UD_MSGRING), 0);
	io_uring_sqe_set_data64(sqe, UD_NONE);
	w->stat_wakes++;
}

/* Pushes <n> descriptors to worker <to>; what the ring cannot take waits in
 * the overflow list (the messages are safe in the spool meanwhile). */
static void route_push(struct worker *w, unsigned to, const struct mq_item *it, unsigned n)
{
	bool wake = false;
	unsigned k = mq_push(&w->g->mq, w->id, to, it, n, &wake);

	if (wake && to != w->id)
		msg_ring_wake(w, to);
	w->stat_routed += k;
	for (; k < n; k++) {
		struct route_item r = {to, it[k]};

		if (buf_append(&w->overflow, &r, sizeof(r)))
			LOGE("worker %u: out of memory routing a message (it stays in the spool)",
			     w->id);
	}
}

void route_outbox_flush(struct worker *w)
{
	for (unsigned to = 0; to < w->g->nworkers; to++) {
		if (w->outn[to])
			route_push(w, to, w->outbox + (size_t)to * OUTBOX_MAX, w->outn[to]);
		w->outn[to] = 0;
	}
}

void route_outbox_add(struct worker *w, struct mq_item it)
{
	unsigned to = (uint32_t)it.a % w->g->nworkers;

	w->outbox[(size_t)to * OUTBOX_MAX + w->outn[to]++] = it;
	if (w->outn[to] == OUTBOX_MAX) {
		route_push(w, to, w->outbox + (size_t)to * OUTBOX_MAX, OUTBOX_MAX);
		w->outn[to] = 0;
	}
}

/* Takes what other workers (and this one) routed here: the relay delivers
 * them; without --relay-to they are only held (they stay in the spool). */
void route_drain(struct worker *w)
{
	struct mq_item it[POP_MAX];
	unsigned n;

	while ((n = mq_pop(&w->g->mq, w->id, it, POP_MAX))) {
		w->stat_received += n;
		if (w->relay)
			relay_take(w, it, n);
		else if (buf_append(&w->held, it, n * sizeof(it[0])))
			LOGE("worker %u: out of memory holding descriptors", w->id);
	}
}

/* Retries what a full ring refused (and places the messages recovered at
 * start). Order between messages does not matter to delivery. A full ring
 * to this worker itself is drained on the spot; other full rings keep
 * their share for the next tick. */
void route_overflow_retry(struct worker *w)
{
	struct route_item *r = (struct route_item *)w->overflow.p;
	size_t n = w->overflow.len / sizeof(*r);
	struct buf again = BUF_INIT;

	if (!n)
		return;
	w->overflow = again;
	for (size_t i = 0; i < n; i++) {
		bool wake = false;

		if (r[i].to != w->id) {
			route_push(w, r[i].to, &r[i].it, 1);
			continue;
		}
		if (!mq_push(&w->g->mq, w->id, w->id, &r[i].it, 1, &wake)) {
			route_drain(w);
			if (!mq_push(&w->g->mq, w->id, w->id, &r[i].it, 1, &wake)) {
				route_push(w, w->id, &r[i].it, 1); /* keeps it for later */
				continue;
			}
		}
		w->stat_routed++;
	}
	free(r);
}
