/* route: the outbox, the mesh push and the MSG_RING wake-up. See route.h.
 * What a full ring cannot take waits in the worker's overflow list: the
 * messages are safe in the spool meanwhile, and order between messages
 * does not matter to delivery. */
#include "io/route.h"

#include <stdlib.h>

#include "core/log.h"
#include "core/stats.h"
#include "io/ring.h"

/* Its log lines name ringmx/smtp (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTP

static void msg_ring_wake(struct worker *w, unsigned to)
{
	struct worker *t = w->g->workers[to];
	int fd = atomic_load_explicit(&w->g->ring_fds[to], memory_order_acquire);
	struct io_uring_sqe *sqe;

	if (fd < 0)
		return; /* not up yet: it drains its rings before it first sleeps */
	sqe = ring_sqe(&w->ring);
	io_uring_prep_msg_ring(sqe, fd, 0, UD(t, UD_MSGRING), 0);
	io_uring_sqe_set_data64(sqe, UD_NONE);
	w->stat_wakes++;
}

/* Pushes <n> descriptors to worker <to>; what the ring cannot take waits in
 * the overflow list (the messages are safe in the spool meanwhile). */
void route_push(struct worker *w, unsigned to, const struct mq_item *it, unsigned n)
{
	bool wake = false;
	unsigned k = mq_push(&w->g->mq, w->id, to, it, n, &wake);

	if (wake && to != w->id)
		msg_ring_wake(w, to);
	w->stat_routed += k;
	if (k < n)
		stats_add_local(&w->st.mesh_full, n - k);
	for (; k < n; k++) {
		struct route_item r = {to, it[k]};

		if (buf_append(&w->overflow, &r, sizeof(r)))
			LOGE("worker %u: out of memory routing a message (it stays in the spool)",
			     w->id);
	}
}

void route_outbox_flush(struct worker *w)
{
	if (!w->outbox_used)
		return; /* the loop calls this every round */
	w->outbox_used = 0;
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
	w->outbox_used++;
	if (w->outn[to] == OUTBOX_MAX) {
		route_push(w, to, w->outbox + (size_t)to * OUTBOX_MAX, OUTBOX_MAX);
		w->outn[to] = 0;
	}
}
