/* mq: the lock-free message queue between workers.
 *
 * Messages move between workers as 16-byte descriptors (struct mq_item)
 * through a mesh of bounded single-producer single-consumer rings, one ring
 * per (producer worker, consumer worker) pair, so that no two threads ever
 * write the same cache line. Push and pop are batched. A full ring is seen
 * at once by its producer (push takes fewer items than offered): there is
 * no blocking and no allocation after init; the caller turns that into
 * back-pressure (4xx).
 *
 * Wake-ups. A consumer with no work sleeps in io_uring_submit_and_wait();
 * producers wake it with IORING_OP_MSG_RING, but only when mq_push() says so,
 * and mq_push() says so at most once per sleep. The protocol (see mq.c for
 * the argument) is a Dekker handshake on two variables, all seq_cst:
 *
 *   consumer                                 producer
 *   sleeping[to] = 1                         tail = t + n   (publish items)
 *   any ring into <to> non-empty?            sleeping[to] == 1 ?
 *     yes: sleeping[to] = 0, don't sleep       yes: xchg(sleeping[to], 0) == 1 ?
 *     no:  sleep until woken                          yes: wake <to>
 *   sleeping[to] = 0 (mq_end_sleep)
 *
 * so either the consumer sees the items or the producer sees the flag, and
 * only the producer that takes the flag from 1 to 0 wakes it.
 *
 * A single ring also reports a narrower signal of its own (<was_empty> of
 * mq_push_spsc(), with mq_ring_prepare_sleep()): "the consumer had taken
 * everything before this push". It needs no shared flag but fires on every
 * empty -> non-empty transition, asleep or not; the mesh uses the flag.
 *
 * queue/ may include core/ and libc only. */
#ifndef RINGMX_QUEUE_MQ_H
#define RINGMX_QUEUE_MQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MQ_CAP_MAX (1u << 30) /* slots per ring, at most (free-running uint32 indices) */

/* Separation between the fields of different writers: two 64-byte lines,
 * because the L2 spatial prefetcher fetches lines in aligned pairs and would
 * otherwise pull the other side's line along with ours. */
#define MQ_ALIGN 128

/* A message descriptor. mq never looks inside: io/ stores e.g. a spool
 * segment id and offset in <a> and a pointer or queue-id hash in <b>. */
struct mq_item {
	uint64_t a;
	uint64_t b;
};

/* The producer's side of a ring: written by the producer only. */
struct mq_ring_prod {
	_Atomic uint32_t tail; /* next slot to fill, free-running; read by the consumer */
	uint32_t head_cache;   /* producer's last view of c.head: saves a read of that line */
	uint32_t mask;         /* capacity - 1, read-only after init (copy of c.mask) */
	struct mq_item *slots; /* read-only after init (copy of c.slots) */
};

/* The consumer's side of a ring: written by the consumer only. */
struct mq_ring_cons {
	_Atomic uint32_t head; /* next slot to read, free-running; read by the producer */
	uint32_t tail_cache;   /* consumer's last view of p.tail */
	uint32_t mask;
	struct mq_item *slots;
};

/* One bounded SPSC ring. Indices run free and wrap at 2^32; the ring holds
 * tail - head items (mod 2^32), at most mask + 1. The read-only fields are
 * copied into both halves so that each side touches only its own line and
 * the other side's index. Storage is a separate allocation. */
struct mq_ring {
	_Alignas(MQ_ALIGN) struct mq_ring_prod p;
	_Alignas(MQ_ALIGN) struct mq_ring_cons c;
};

/* Per-consumer state of the mesh, each half on its own line pair. */
struct mq_consumer {
	/* 1: the consumer announced it may sleep (mq_prepare_sleep); the
	 * producer that exchanges it back to 0 wakes it. Written by the
	 * consumer and (rarely) by producers; read by producers on each push. */
	_Alignas(MQ_ALIGN) _Atomic uint32_t sleeping;
	/* Ring mq_pop() starts at: consumer only. */
	_Alignas(MQ_ALIGN) unsigned rr;
};

/* The mesh: nworkers * nworkers rings. */
struct mq {
	unsigned nworkers;
	unsigned capacity;
	struct mq_ring *rings;    /* [to * nworkers + from]: a consumer's rings are adjacent */
	struct mq_consumer *cons; /* [to] */
};

/* Sets up <r> with <capacity> slots (a power of two, 1..MQ_CAP_MAX).
 * Returns 0, -EINVAL or -ENOMEM. Before any thread uses the ring; publishing
 * <r> to the two threads (pthread_create, a mutex) orders the set-up. */
int mq_ring_init(struct mq_ring *r, unsigned capacity);

/* mq_ring_init() with both indices starting at <start> instead of 0: tests
 * use it to cross the 2^32 wrap of the free-running indices. */
int mq_ring_init_at(struct mq_ring *r, unsigned capacity, uint32_t start);

/* Frees the storage of <r>; items still queued are dropped. Once neither
 * thread uses the ring. Safe on a zeroed or already finished ring. */
void mq_ring_fini(struct mq_ring *r);

/* Copies up to <n> items from <items> into <r> and publishes them. Returns
 * how many it took (0..n): fewer than <n> when the ring is full, which is
 * the caller's back-pressure. After it returns, the consumer owns them.
 *
 * <was_empty> may be NULL. If not, the publish is seq_cst and *was_empty is
 * set to whether the consumer had popped every earlier item when this push
 * published (a full-barrier read of its index): the consumer may be idle and
 * must be woken. That signal is race-free against a consumer that sleeps only
 * after mq_ring_prepare_sleep() returned true, provided every push to the
 * ring passes <was_empty>. Costs one locked instruction per call.
 * Producer thread of <r> only. */
unsigned mq_push_spsc(struct mq_ring *r, const struct mq_item *items, unsigned n, bool *was_empty);

/* Moves up to <max> items, oldest first, from <r> into <out>. Returns how
 * many (0 when empty). Consumer thread of <r> only. */
unsigned mq_pop_spsc(struct mq_ring *r, struct mq_item *out, unsigned max);

/* Consumer side of the ring-level wake signal: returns true if <r> is empty
 * after a full barrier, in which case the consumer may sleep and a producer
 * that publishes later sees was_empty. False: items arrived, pop them.
 * Consumer thread of <r> only. */
bool mq_ring_prepare_sleep(struct mq_ring *r);

/* Sets up a mesh for <nworkers> workers (1..65536), every ring with
 * <capacity> slots (a power of two), including each worker's ring to itself.
 * Returns 0, -EINVAL or -ENOMEM. Before the workers start. */
int mq_init(struct mq *q, unsigned nworkers, unsigned capacity);

/* Frees the mesh. After the workers have stopped. Safe on a zeroed mesh. */
void mq_fini(struct mq *q);

/* The ring from worker <from> to worker <to>. Any thread; <from> may push
 * to it and <to> pop from it with the _spsc functions, but a consumer that
 * sleeps by mq_prepare_sleep() must have its producers use mq_push(). */
static inline struct mq_ring *mq_ring_of(struct mq *q, unsigned from, unsigned to)
{
	return &q->rings[(size_t)to * q->nworkers + from];
}

/* Pushes up to <n> items from worker <from> to worker <to>; returns how many
 * it took (0..n, fewer when the ring is full). *wake is set to true when
 * this call is the one that must wake <to> (IORING_OP_MSG_RING): <to>
 * announced sleep and no other push has claimed the wake. At most one push
 * per announced sleep sees true, and a push that sees false needs no wake.
 * Worker <from>'s thread only. */
unsigned mq_push(struct mq *q, unsigned from, unsigned to, const struct mq_item *items, unsigned n,
                 bool *wake);

/* Pops up to <max> items for worker <to> from all its rings, round robin
 * (each call starts one ring further on, so no ring is starved), oldest
 * first within each ring. Returns how many; 0 means every ring was empty.
 * Worker <to>'s thread only. */
unsigned mq_pop(struct mq *q, unsigned to, struct mq_item *out, unsigned max);

/* Worker <to> announces that it is about to sleep, then re-checks its
 * rings. Returns true: every ring was empty, sleep now; a later push will
 * report wake (the wake may also land before the sleep starts: an io_uring
 * CQE or a semaphore count keeps it). Returns false: work arrived, the
 * announcement is withdrawn; pop and do not sleep (a wake may still arrive
 * from a producer that raced the withdrawal: harmless, spurious).
 * Worker <to>'s thread only, when mq_pop() returned 0. */
bool mq_prepare_sleep(struct mq *q, unsigned to);

/* Worker <to> woke up (for any reason, a wake from mq_push or not): withdraws
 * its announcement so that producers stop offering wakes. Worker <to>'s
 * thread only, after each sleep that followed mq_prepare_sleep() == true. */
void mq_end_sleep(struct mq *q, unsigned to);

#endif
