/* mq_bench: throughput of the inter-worker queue (queue/mq) against the
 * two usual alternatives, measured in the same run: Vyukov's bounded MPMC
 * array queue (one CAS per operation on a shared index) and a mutex +
 * condvar queue. Cases: 1 producer 1 consumer (the SPSC ring with batches
 * of 1, 16 and 64; the mesh path mq_push/mq_pop, which adds the wake
 * handshake; Vyukov; mutex with the same batches), and 2 producers 1
 * consumer (a mesh of 2 SPSC rings against one shared Vyukov queue and one
 * mutex queue). Every queue has the same capacity; producer and consumer
 * spin on a full or empty queue and yield after a while (except the mutex
 * queue, which blocks on its condvars, as such a queue would). In the 1x1
 * cases the producer runs on CPU 0 and the consumer on CPU 1 (cross-core,
 * as between workers). Prints a markdown table of M items/s (10^6 16-byte
 * descriptors per second), median of several runs; the figures go to
 * docs/benchmarks.md.
 *
 * usage: mq_bench [-r RUNS] [-n MILLIONS] [-c CAPACITY] [-u]
 *   -r  runs per cell, median reported (default 5)
 *   -n  items per run for the lock-free queues, in millions (default 20;
 *       the mutex queue moves a tenth of it)
 *   -c  capacity of every queue, a power of two (default 1024)
 *   -u  do not pin threads to CPUs */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue/mq.h"

#define MAX_RUNS   15
#define MAX_BATCH  64
#define SPIN_YIELD 256 /* failed tries before sched_yield() */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
	fprintf(stderr, "mq_bench: %s\n", what);
	exit(1);
}

/* Vyukov's bounded MPMC queue: a cell's sequence number says whose turn it
 * is (pos: a producer's, pos + 1: a consumer's). */

struct vy_cell {
	_Atomic size_t seq;
	struct mq_item data;
};

struct vy_queue {
	_Alignas(MQ_ALIGN) struct vy_cell *cells;
	size_t mask;
	_Alignas(MQ_ALIGN) _Atomic size_t enq;
	_Alignas(MQ_ALIGN) _Atomic size_t deq;
};

static void vy_init(struct vy_queue *q, size_t cap)
{
	void *mem;

	if (posix_memalign(&mem, 64, cap * sizeof(*q->cells)))
		die("out of memory");
	q->cells = mem;
	for (size_t i = 0; i < cap; i++)
		atomic_init(&q->cells[i].seq, i);
	q->mask = cap - 1;
	atomic_init(&q->enq, 0);
	atomic_init(&q->deq, 0);
}

static bool vy_push(struct vy_queue *q, const struct mq_item *it)
{
	size_t pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
	struct vy_cell *c;

	for (;;) {
		c = &q->cells[pos & q->mask];
		/* Acquire: the consumer that freed the cell is done reading. */
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)pos;

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(
			        &q->enq, &pos, pos + 1, memory_order_relaxed, memory_order_relaxed))
				break;
		} else if (dif < 0) {
			return false; /* full */
		} else {
			pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
		}
	}
	c->data = *it;
	/* Release: publishes data to the consumer's acquire of seq. */
	atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
	return true;
}

static bool vy_pop(struct vy_queue *q, struct mq_item *it)
{
	size_t pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
	struct vy_cell *c;

	for (;;) {
		c = &q->cells[pos & q->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(
			        &q->deq, &pos, pos + 1, memory_order_relaxed, memory_order_relaxed))
				break;
		} else if (dif < 0) {
			return false; /* empty */
		} else {
			pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
		}
	}
	*it = c->data;
	atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
	return true;
}

/* A mutex + condvar bounded queue; batches move under one lock. Signals
 * only when the other side waits. */

struct mx_queue {
	pthread_mutex_t mu;
	pthread_cond_t not_empty, not_full;
	unsigned waiting_empty, waiting_full;
	struct mq_item *buf;
	size_t mask, head, tail;
};

static void mx_init(struct mx_queue *q, size_t cap)
{
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->not_empty, NULL);
	pthread_cond_init(&q->not_full, NULL);
	q->buf = malloc(cap * sizeof(*q->buf));
	if (!q->buf)
		die("out of memory");
	q->mask = cap - 1;
	q->head = q->tail = 0;
	q->waiting_empty = q->waiting_full = 0;
}

static unsigned mx_push(struct mx_queue *q, const struct mq_item *it, unsigned n)
{
	size_t room;

	pthread_mutex_lock(&q->mu);
	while ((room = q->mask + 1 - (q->tail - q->head)) == 0) {
		q->waiting_full++;
		pthread_cond_wait(&q->not_full, &q->mu);
		q->waiting_full--;
	}
	if (n > room)
		n = (unsigned)room;
	for (unsigned k = 0; k < n; k++)
		q->buf[(q->tail + k) & q->mask] = it[k];
	q->tail += n;
	if (q->waiting_empty)
		pthread_cond_signal(&q->not_empty);
	pthread_mutex_unlock(&q->mu);
	return n;
}

static unsigned mx_pop(struct mx_queue *q, struct mq_item *out, unsigned max)
{
	size_t avail;

	pthread_mutex_lock(&q->mu);
	while ((avail = q->tail - q->head) == 0) {
		q->waiting_empty++;
		pthread_cond_wait(&q->not_empty, &q->mu);
		q->waiting_empty--;
	}
	if (max > avail)
		max = (unsigned)avail;
	for (unsigned k = 0; k < max; k++)
		out[k] = q->buf[(q->head + k) & q->mask];
	q->head += max;
	if (q->waiting_full)
		pthread_cond_signal(&q->not_full);
	pthread_mutex_unlock(&q->mu);
	return max;
}

/* One run: <np> producers, one consumer. */

enum kind {
	K_RING, /* mq_push_spsc / mq_pop_spsc, one ring (np == 1) */
	K_MESH, /* mq_push / mq_pop: one SPSC ring per producer, wake handshake */
	K_VY,
	K_MX,
};

struct bench {
	enum kind kind;
	unsigned np, batch, pop_batch;
	uint64_t per_producer;
	bool pin;
	struct mq_ring ring;
	struct mq mesh;
	struct vy_queue vy;
	struct mx_queue mx;
	_Atomic unsigned ready;
	_Atomic bool go;
	uint64_t sum; /* consumer's checksum of item.a */
	double t0, t1;
};

struct worker {
	struct bench *b;
	unsigned id;
	pthread_t tid;
};

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void start_line(struct bench *b)
{
	atomic_fetch_add(&b->ready, 1);
	while (!atomic_load_explicit(&b->go, memory_order_acquire))
		sched_yield();
}

/* A polite spin: pause (so a spinning side does not hammer the line the
 * other side is writing), then yield now and then (2 cores, 3 threads). */
static void backoff(unsigned *spins)
{
	__builtin_ia32_pause();
	if (++*spins >= SPIN_YIELD) {
		*spins = 0;
		sched_yield();
	}
}

static void *producer(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	struct mq_item batch[MAX_BATCH];
	uint64_t sent = 0;
	unsigned spins = 0;

	if (b->pin && b->np == 1)
		pin(0);
	start_line(b);
	while (sent < b->per_producer) {
		unsigned n = b->batch, k = 0;
		bool wake;

		if (n > b->per_producer - sent)
			n = (unsigned)(b->per_producer - sent);
		for (unsigned i = 0; i < n; i++)
			batch[i] = (struct mq_item){sent + i + 1, w->id};
		while (k < n) {
			unsigned got;

			switch (b->kind) {
			case K_RING:
				got = mq_push_spsc(&b->ring, batch + k, n - k, NULL);
				break;
			case K_MESH:
				got = mq_push(&b->mesh, w->id, 0, batch + k, n - k, &wake);
				break;
			case K_VY:
				got = vy_push(&b->vy, batch + k);
				break;
			default:
				got = mx_push(&b->mx, batch + k, n - k);
				break;
			}
			if (got)
				k += got;
			else
				backoff(&spins);
		}
		sent += n;
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	struct mq_item out[MAX_BATCH];
	uint64_t got = 0, want = b->per_producer * b->np, sum = 0;
	unsigned spins = 0;

	if (b->pin && b->np == 1)
		pin(1);
	start_line(b);
	while (got < want) {
		unsigned n;

		switch (b->kind) {
		case K_RING:
			n = mq_pop_spsc(&b->ring, out, b->pop_batch);
			break;
		case K_MESH:
			n = mq_pop(&b->mesh, 0, out, b->pop_batch);
			break;
		case K_VY:
			n = vy_pop(&b->vy, out);
			break;
		default:
			n = mx_pop(&b->mx, out, b->pop_batch);
			break;
		}
		if (!n) {
			backoff(&spins);
			continue;
		}
		for (unsigned i = 0; i < n; i++)
			sum += out[i].a;
		got += n;
	}
	b->t1 = now();
	b->sum = sum;
	return NULL;
}

/* Returns M items/s for one run. */
static double run_once(enum kind kind, unsigned np, unsigned batch, unsigned pop_batch,
                       uint64_t items, unsigned cap, bool pinned)
{
	struct bench *b = calloc(1, sizeof(*b));
	struct worker w[4];
	uint64_t want;
	double rate;

	if (!b)
		die("out of memory");
	b->kind = kind;
	b->np = np;
	b->batch = batch;
	b->pop_batch = pop_batch;
	b->per_producer = items / np;
	b->pin = pinned;
	switch (kind) {
	case K_RING:
		if (mq_ring_init(&b->ring, cap) < 0)
			die("mq_ring_init");
		break;
	case K_MESH:
		if (mq_init(&b->mesh, np, cap) < 0)
			die("mq_init");
		break;
	case K_VY:
		vy_init(&b->vy, cap);
		break;
	case K_MX:
		mx_init(&b->mx, cap);
		break;
	}
	for (unsigned i = 0; i <= np; i++) {
		w[i] = (struct worker){b, i, 0};
		if (pthread_create(&w[i].tid, NULL, i == np ? consumer : producer, &w[i]))
			die("pthread_create");
	}
	while (atomic_load(&b->ready) < np + 1)
		sched_yield();
	b->t0 = now();
	atomic_store_explicit(&b->go, true, memory_order_release);
	for (unsigned i = 0; i <= np; i++)
		pthread_join(w[i].tid, NULL);
	/* Each producer sends 1..per_producer. */
	want = np * (b->per_producer * (b->per_producer + 1) / 2);
	if (b->sum != want)
		die("checksum mismatch: items lost or duplicated");
	rate = (double)(b->per_producer * np) / (b->t1 - b->t0) / 1e6;
	switch (kind) {
	case K_RING:
		mq_ring_fini(&b->ring);
		break;
	case K_MESH:
		mq_fini(&b->mesh);
		break;
	case K_VY:
		free(b->vy.cells);
		break;
	case K_MX:
		free(b->mx.buf);
		break;
	}
	free(b);
	return rate;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* <batch>: items per push; <pop_batch>: items per pop, at most (0: = batch). */
static void cell(const char *name, const char *batch_label, enum kind kind, unsigned np,
                 unsigned batch, unsigned pop_batch, uint64_t items, unsigned cap, unsigned runs,
                 bool pinned)
{
	double r[MAX_RUNS], sorted[MAX_RUNS];

	for (unsigned i = 0; i < runs; i++)
		r[i] = run_once(kind, np, batch, pop_batch ? pop_batch : batch, items, cap, pinned);
	memcpy(sorted, r, runs * sizeof(r[0]));
	qsort(sorted, runs, sizeof(double), cmp_double);
	printf("| %ux1 | %s | %s |", np, name, batch_label);
	for (unsigned i = 0; i < runs; i++)
		printf(" %.1f", r[i]);
	printf(" | **%.1f** |\n", sorted[runs / 2]);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	unsigned runs = 5, cap = 1024;
	double millions = 20;
	bool pinned = true;
	uint64_t n, nmx;
	int opt;

	while ((opt = getopt(argc, argv, "r:n:c:u")) != -1) {
		switch (opt) {
		case 'r':
			runs = (unsigned)atoi(optarg);
			break;
		case 'n':
			millions = atof(optarg);
			break;
		case 'c':
			cap = (unsigned)atoi(optarg);
			break;
		case 'u':
			pinned = false;
			break;
		default:
			fprintf(stderr, "usage: mq_bench [-r RUNS] [-n MILLIONS] [-c CAP] [-u]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > MAX_RUNS || cap < 2 || (cap & (cap - 1)) || millions <= 0) {
		fprintf(stderr, "mq_bench: bad argument\n");
		return 2;
	}
	n = (uint64_t)(millions * 1e6);
	nmx = n / 10;
	printf("capacity %u, %.1f M items per run (mutex: %.1f M), %u runs, %s\n\n", cap,
	       (double)n / 1e6, (double)nmx / 1e6, runs,
	       pinned ? "1x1 pinned to CPUs 0/1" : "unpinned");
	printf("| P x C | queue | batch | runs (M items/s) | median |\n");
	printf("|---|---|---|---|---|\n");
	cell("mq SPSC ring (mq_push_spsc)", "1", K_RING, 1, 1, 0, n, cap, runs, pinned);
	cell("mq SPSC ring (mq_push_spsc)", "16", K_RING, 1, 16, 0, n, cap, runs, pinned);
	cell("mq SPSC ring (mq_push_spsc)", "64", K_RING, 1, 64, 0, n, cap, runs, pinned);
	cell("mq mesh (mq_push, wake handshake)", "1", K_MESH, 1, 1, 0, n, cap, runs, pinned);
	cell("mq mesh (mq_push, wake handshake)", "16", K_MESH, 1, 16, 0, n, cap, runs, pinned);
	cell("mq mesh (mq_push, wake handshake)", "64", K_MESH, 1, 64, 0, n, cap, runs, pinned);
	cell("mq SPSC ring (mq_push_spsc)", "push 1, pop <=64", K_RING, 1, 1, 64, n, cap, runs,
	     pinned);
	cell("mq mesh (mq_push, wake handshake)", "push 1, pop <=64", K_MESH, 1, 1, 64, n, cap,
	     runs, pinned);
	cell("Vyukov MPMC", "1 (per item)", K_VY, 1, 1, 0, n, cap, runs, pinned);
	cell("mutex+condvar", "1", K_MX, 1, 1, 0, nmx, cap, runs, pinned);
	cell("mutex+condvar", "16", K_MX, 1, 16, 0, nmx, cap, runs, pinned);
	cell("mutex+condvar", "64", K_MX, 1, 64, 0, nmx, cap, runs, pinned);
	cell("mq mesh, 2 SPSC rings", "1", K_MESH, 2, 1, 0, n, cap, runs, pinned);
	cell("mq mesh, 2 SPSC rings", "16", K_MESH, 2, 16, 0, n, cap, runs, pinned);
	cell("mq mesh, 2 SPSC rings", "64", K_MESH, 2, 64, 0, n, cap, runs, pinned);
	cell("mq mesh, 2 SPSC rings", "push 1, pop <=64", K_MESH, 2, 1, 64, n, cap, runs, pinned);
	cell("Vyukov MPMC (shared)", "1 (per item)", K_VY, 2, 1, 0, n, cap, runs, pinned);
	cell("mutex+condvar (shared)", "16", K_MX, 2, 16, 0, nmx, cap, runs, pinned);
	return 0;
}
