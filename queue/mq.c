/* mq: bounded SPSC rings, and the mesh of them that carries message
 * descriptors between workers, with the sleep/wake handshake that lets a
 * consumer worker block in its io_uring and be woken (IORING_OP_MSG_RING)
 * once per sleep rather than once per message. Lock-free, no allocation
 * after init. Sits in queue/ between the spool (which produces descriptors
 * of stored messages) and delivery; io/ drives it. libc only. See mq.h.
 *
 * Memory ordering, in one place:
 *
 * (1) Items. The producer writes slots, then stores tail (release or
 *     seq_cst); the consumer loads tail (acquire), then reads the slots: the
 *     release/acquire pair makes the slot writes visible. Symmetrically the
 *     consumer reads slots, then stores head (release); the producer loads
 *     head (acquire) before it writes those slots again, so it never
 *     overwrites a slot still being read. Each index has a single writer, so
 *     its own side reads it relaxed.
 *
 * (2) Mesh wake-up (mq_push / mq_prepare_sleep / mq_end_sleep). Every access
 *     to cons[to].sleeping is seq_cst, and so are mq_push()'s store of tail
 *     and mq_prepare_sleep()'s loads of tail. Take a sleep that happens: its
 *     mq_prepare_sleep() stored sleeping = 1 (W), then loaded every tail
 *     (L) and found each ring empty. Take any push that published items (T,
 *     its tail store) into one of those rings, then loaded sleeping (R). All
 *     four are in the single total order S of seq_cst operations, which
 *     agrees with program order: W < L and T < R.
 *       - If T < L in S, L reads T's tail (or a later one: one writer), so
 *         the consumer sees the items and does not sleep: contradiction.
 *       - So L < T, hence W < L < T < R: R reads W's 1 or a later store to
 *         sleeping (S agrees with the modification order of an object whose
 *         stores are all seq_cst). Later stores are: a producer's exchange
 *         to 0 (that producer got 1 and sends the wake), or the consumer's
 *         own mq_end_sleep()/next announcement (then it is awake already).
 *         If R reads 1, the producer exchanges: the exchange is atomic, so
 *         exactly one producer gets the 1 that W wrote, and it reports wake.
 *     So every sleep is ended by a wake, or by the consumer itself; and a
 *     push reports wake only when it took a 1 from the flag, at most once
 *     per announcement. A withdrawn announcement (work seen) may still be
 *     taken by a racing producer: one spurious wake, never a lost one.
 *
 * (3) Ring wake-up (<was_empty> / mq_ring_prepare_sleep) is the same
 *     handshake with head in the role of the flag: the producer stores tail
 *     then loads head (both seq_cst); the consumer stores head (its own
 *     value again, seq_cst) then loads tail (seq_cst). Either the consumer
 *     sees the new tail, or the producer sees head == its old tail, i.e.
 *     the ring was empty, and reports was_empty.
 *
 * On x86-64 a seq_cst store is an xchg (the full barrier the handshake
 * needs), a seq_cst load a plain mov. Standalone fences are avoided: they
 * would do the same, but ThreadSanitizer does not model them. */
#include "queue/mq.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int mq_ring_init_at(struct mq_ring *r, unsigned capacity, uint32_t start)
{
	void *mem;

	memset(r, 0, sizeof(*r));
	if (capacity == 0 || capacity > MQ_CAP_MAX || (capacity & (capacity - 1)))
		return -EINVAL;
	/* Slots on whole cache lines: 4 items per line, none shared with
	 * another allocation. */
	if (posix_memalign(&mem, 64, (size_t)capacity * sizeof(struct mq_item)))
		return -ENOMEM;
	r->p.slots = r->c.slots = mem;
	r->p.mask = r->c.mask = capacity - 1;
	r->p.head_cache = r->c.tail_cache = start;
	atomic_init(&r->p.tail, start);
	atomic_init(&r->c.head, start);
	return 0;
}

int mq_ring_init(struct mq_ring *r, unsigned capacity)
{
	return mq_ring_init_at(r, capacity, 0);
}

void mq_ring_fini(struct mq_ring *r)
{
	free(r->p.slots);
	r->p.slots = r->c.slots = NULL;
}

/* Copies up to <n> items in and publishes them with <order> (release, or
 * seq_cst for a wake handshake). Returns how many; *old_tail is the tail
 * before. Producer only. */
static inline unsigned ring_push(struct mq_ring *r, const struct mq_item *items, unsigned n,
                                 memory_order order, uint32_t *old_tail)
{
	struct mq_ring_prod *p = &r->p;
	/* Relaxed: only this thread stores tail. */
	uint32_t t = atomic_load_explicit(&p->tail, memory_order_relaxed);
	uint32_t cap = p->mask + 1;
	uint32_t room = cap - (t - p->head_cache);

	*old_tail = t;
	if (room < n) {
		/* Acquire, pairs with the release store of head in ring_pop():
		 * the consumer's reads of the slots we may now reuse happen
		 * before our writes to them. */
		p->head_cache = atomic_load_explicit(&r->c.head, memory_order_acquire);
		room = cap - (t - p->head_cache);
		if (n > room)
			n = room;
		if (n == 0)
			return 0;
	}
	for (unsigned k = 0; k < n; k++)
		p->slots[(t + k) & p->mask] = items[k];
	/* Release (at least): publishes the slot writes above to the
	 * consumer's acquire load of tail. */
	atomic_store_explicit(&p->tail, t + n, order);
	return n;
}

/* Copies up to <max> items out and releases their slots. Consumer only. */
static inline unsigned ring_pop(struct mq_ring *r, struct mq_item *out, unsigned max)
{
	struct mq_ring_cons *c = &r->c;
	/* Relaxed: only this thread stores head. */
	uint32_t h = atomic_load_explicit(&c->head, memory_order_relaxed);
	uint32_t avail = c->tail_cache - h;

	if (avail < max) {
		/* Acquire, pairs with the store of tail in ring_push(): the
		 * slot contents up to the new tail are visible. Only when the
		 * cached view cannot fill the batch, so a busy consumer reads
		 * the producer's line once per batch, not per item. */
		c->tail_cache = atomic_load_explicit(&r->p.tail, memory_order_acquire);
		avail = c->tail_cache - h;
		if (avail == 0)
			return 0;
	}
	if (max > avail)
		max = avail;
	for (unsigned k = 0; k < max; k++)
		out[k] = c->slots[(h + k) & c->mask];
	/* Release: our reads of these slots happen before the producer's
	 * acquire load of head, and so before it refills them. */
	atomic_store_explicit(&c->head, h + max, memory_order_release);
	return max;
}

unsigned mq_push_spsc(struct mq_ring *r, const struct mq_item *items, unsigned n, bool *was_empty)
{
	uint32_t t;
	unsigned k;

	if (!was_empty)
		return ring_push(r, items, n, memory_order_release, &t);
	/* Handshake (3) in the file comment: seq_cst store of tail, then
	 * seq_cst load of head. */
	k = ring_push(r, items, n, memory_order_seq_cst, &t);
	if (k == 0) {
		*was_empty = false; /* full, or nothing offered: no transition */
		return 0;
	}
	r->p.head_cache = atomic_load_explicit(&r->c.head, memory_order_seq_cst);
	*was_empty = r->p.head_cache == t;
	return k;
}

unsigned mq_pop_spsc(struct mq_ring *r, struct mq_item *out, unsigned max)
{
	return ring_pop(r, out, max);
}

bool mq_ring_prepare_sleep(struct mq_ring *r)
{
	uint32_t h = atomic_load_explicit(&r->c.head, memory_order_relaxed);

	/* Handshake (3): a seq_cst store of head (same value) ordered
	 * before the seq_cst load of tail in S. */
	atomic_store_explicit(&r->c.head, h, memory_order_seq_cst);
	r->c.tail_cache = atomic_load_explicit(&r->p.tail, memory_order_seq_cst);
	return r->c.tail_cache == h;
}

int mq_init(struct mq *q, unsigned nworkers, unsigned capacity)
{
	size_t nrings = (size_t)nworkers * nworkers;
	void *mem;
	size_t i;
	int err;

	memset(q, 0, sizeof(*q));
	if (nworkers == 0 || nworkers > 65536)
		return -EINVAL;
	if (posix_memalign(&mem, MQ_ALIGN, nrings * sizeof(struct mq_ring)))
		return -ENOMEM;
	q->rings = mem;
	if (posix_memalign(&mem, MQ_ALIGN, nworkers * sizeof(struct mq_consumer))) {
		err = -ENOMEM;
		goto fail_rings;
	}
	q->cons = mem;
	for (i = 0; i < nworkers; i++) {
		atomic_init(&q->cons[i].sleeping, 0);
		q->cons[i].rr = 0;
	}
	for (i = 0; i < nrings; i++) {
		err = mq_ring_init(&q->rings[i], capacity);
		if (err < 0)
			goto fail_ring_init;
	}
	q->nworkers = nworkers;
	q->capacity = capacity;
	return 0;
fail_ring_init:
	while (i-- > 0)
		mq_ring_fini(&q->rings[i]);
	free(q->cons);
	q->cons = NULL;
fail_rings:
	free(q->rings);
	q->rings = NULL;
	return err;
}

void mq_fini(struct mq *q)
{
	size_t nrings = (size_t)q->nworkers * q->nworkers;

	for (size_t i = 0; i < nrings; i++)
		mq_ring_fini(&q->rings[i]);
	free(q->rings);
	free(q->cons);
	q->rings = NULL;
	q->cons = NULL;
	q->nworkers = 0;
}

unsigned mq_push(struct mq *q, unsigned from, unsigned to, const struct mq_item *items, unsigned n,
                 bool *wake)
{
	struct mq_consumer *c = &q->cons[to];
	uint32_t t;
	unsigned k;

	/* Handshake (2) in the file comment: seq_cst store of tail ... */
	k = ring_push(mq_ring_of(q, from, to), items, n, memory_order_seq_cst, &t);
	/* ... then seq_cst load of the flag. A full ring (k == 0) needs no
	 * wake: its items were published by earlier pushes, which either were
	 * seen by the consumer or claimed the wake. The plain load first keeps
	 * the flag's line shared (no RMW) while the consumer is awake. */
	*wake = k && atomic_load_explicit(&c->sleeping, memory_order_seq_cst) &&
	        atomic_exchange_explicit(&c->sleeping, 0, memory_order_seq_cst);
	return k;
}

unsigned mq_pop(struct mq *q, unsigned to, struct mq_item *out, unsigned max)
{
	struct mq_consumer *c = &q->cons[to];
	unsigned n = q->nworkers, from = c->rr, got = 0;

	for (unsigned k = 0; k < n && got < max; k++) {
		got += ring_pop(mq_ring_of(q, from, to), out + got, max - got);
		if (++from == n)
			from = 0;
	}
	/* Start one ring further on next time: a producer that always fills
	 * the batch cannot starve the rings after it. */
	c->rr = c->rr + 1 == n ? 0 : c->rr + 1;
	return got;
}

bool mq_prepare_sleep(struct mq *q, unsigned to)
{
	struct mq_consumer *c = &q->cons[to];
	unsigned n = q->nworkers;

	/* Handshake (2): the seq_cst store of the flag precedes, in S, the
	 * seq_cst loads of every tail below. */
	atomic_store_explicit(&c->sleeping, 1, memory_order_seq_cst);
	for (unsigned from = 0; from < n; from++) {
		struct mq_ring *r = mq_ring_of(q, from, to);
		uint32_t t = atomic_load_explicit(&r->p.tail, memory_order_seq_cst);

		if (t != atomic_load_explicit(&r->c.head, memory_order_relaxed)) {
			/* Withdraw. A producer may have taken the 1 already
			 * and will send a wake: a spurious one, harmless. */
			atomic_store_explicit(&c->sleeping, 0, memory_order_seq_cst);
			return false;
		}
	}
	return true;
}

void mq_end_sleep(struct mq *q, unsigned to)
{
	/* seq_cst like every store to the flag, so that the argument in (2)
	 * can read the flag's modification order off S. */
	atomic_store_explicit(&q->cons[to].sleeping, 0, memory_order_seq_cst);
}
