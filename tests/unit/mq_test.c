/* mq_test: the SPSC ring (capacity, back-pressure, FIFO, the 2^32 wrap of
 * its free-running indices, the was_empty signal) and the mesh (layout,
 * round-robin pop, the sleep/wake handshake), then threads: producers and
 * consumers over the mesh moving millions of items, each carrying (producer,
 * consumer, sequence) and a checksum; every item must arrive exactly once,
 * in order per producer, and consumers really sleep (on a condvar) whenever
 * mq_prepare_sleep() allows, woken only when mq_push() says so. A lost
 * wake-up hangs the test, which the Criterion timeout turns into a failure.
 *
 * MQ_TEST_ITEMS sets the items moved per threaded test (default 2,000,000;
 * 1,000,000 under ThreadSanitizer). Under ThreadSanitizer build it with
 * -DCR_STANDALONE (see tests/unit/cr_standalone.h: Criterion's runner cannot
 * start under TSan). */
#include "queue/mq.h"

#include "tests/unit/cr_standalone.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define MQ_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MQ_TEST_TSAN 1
#endif
#endif
#ifndef MQ_TEST_TSAN
#define MQ_TEST_TSAN 0
#endif

#define ITEMS_DEFAULT (MQ_TEST_TSAN ? 1000000ull : 2000000ull)
#define MAXW          4  /* threads per side, at most */
#define MAX_BATCH     64 /* items per push or pop, at most */
#define TIMEOUT_S     60 /* a lost wake-up hangs: fail instead */

TestSuite(mq);

static uint64_t items_total(void)
{
	const char *s = getenv("MQ_TEST_ITEMS");
	uint64_t n = s ? strtoull(s, NULL, 10) : 0;

	return n ? n : ITEMS_DEFAULT;
}

/* splitmix64 finaliser: the checksum of an item. */
static uint64_t mix(uint64_t x)
{
	x ^= 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* a: producer (16 bits) | consumer (8 bits) | sequence (40 bits). */
static struct mq_item item_make(unsigned prod, unsigned cons, uint64_t seq)
{
	uint64_t a = (uint64_t)prod << 48 | (uint64_t)cons << 40 | seq;

	return (struct mq_item){a, mix(a)};
}

static struct mq_item seq_item(uint64_t seq)
{
	return item_make(0, 0, seq);
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* Single thread: the ring */

Test(mq, ring_init_rejects_bad_capacity)
{
	static const unsigned bad[] = {0, 3, 6, 100, MQ_CAP_MAX + 1u, 0x80000000u, 0xffffffffu};
	struct mq_ring r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(mq_ring_init(&r, bad[i]), -EINVAL, "capacity %u", bad[i]);
	cr_assert_eq(mq_ring_init(&r, 1), 0);
	mq_ring_fini(&r);
	mq_ring_fini(&r); /* twice: a no-op */
}

Test(mq, ring_fills_to_capacity_then_takes_nothing)
{
	struct mq_item in[20], out[20];
	struct mq_ring r;

	for (unsigned i = 0; i < 20; i++)
		in[i] = seq_item(i);
	cr_assert_eq(mq_ring_init(&r, 16), 0);
	cr_expect_eq(mq_push_spsc(&r, in, 20, NULL), 16, "a full ring takes what fits");
	cr_expect_eq(mq_push_spsc(&r, in + 16, 4, NULL), 0, "full: nothing");
	cr_expect_eq(mq_pop_spsc(&r, out, 20), 16);
	for (unsigned i = 0; i < 16; i++)
		cr_expect_eq(out[i].a, in[i].a, "slot %u: got %lu want %lu", i,
		             (unsigned long)out[i].a, (unsigned long)in[i].a);
	cr_expect_eq(mq_pop_spsc(&r, out, 20), 0, "empty");
	mq_ring_fini(&r);
}

Test(mq, ring_partial_push_returns_count_taken)
{
	struct mq_item in[10], out[10];
	struct mq_ring r;

	for (unsigned i = 0; i < 10; i++)
		in[i] = seq_item(i);
	cr_assert_eq(mq_ring_init(&r, 8), 0);
	cr_assert_eq(mq_push_spsc(&r, in, 3, NULL), 3);
	cr_expect_eq(mq_push_spsc(&r, in + 3, 7, NULL), 5);
	cr_expect_eq(mq_pop_spsc(&r, out, 2), 2, "pop takes at most max");
	cr_expect_eq(mq_push_spsc(&r, in + 8, 2, NULL), 2, "room again after a pop");
	cr_expect_eq(mq_pop_spsc(&r, out + 2, 10), 8);
	for (unsigned i = 0; i < 10; i++)
		cr_expect_eq(out[i].a, in[i].a, "FIFO at %u", i);
	mq_ring_fini(&r);
}

/* Run over indices starting at each <start>, so that head and tail cross
 * 2^32 (and the slot index crosses the end of the storage) many times, in
 * batches of every size 1..cap+1. */
Test(mq, ring_fifo_across_index_wrap)
{
	static const uint32_t starts[] = {0, UINT32_MAX - 5, UINT32_MAX, 0x80000000u - 3};
	struct mq_item in[17], out[17];

	for (size_t s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		uint64_t pushed = 0, popped = 0;
		struct mq_ring r;

		cr_assert_eq(mq_ring_init_at(&r, 16, starts[s]), 0);
		for (unsigned round = 0; round < 200; round++) {
			unsigned want = 1 + round % 17, got, n;

			for (unsigned i = 0; i < want; i++)
				in[i] = seq_item(pushed + i);
			got = mq_push_spsc(&r, in, want, NULL);
			cr_assert_eq(got,
			             want < 16 - (pushed - popped) ? want : 16 - (pushed - popped),
			             "start %u round %u", starts[s], round);
			pushed += got;
			n = mq_pop_spsc(&r, out, 1 + (round * 7) % 17);
			for (unsigned i = 0; i < n; i++) {
				cr_assert_eq(out[i].a, seq_item(popped).a, "start %u round %u",
				             starts[s], round);
				cr_assert_eq(out[i].b, mix(out[i].a));
				popped++;
			}
		}
		while ((popped < pushed)) {
			unsigned n = mq_pop_spsc(&r, out, 5);

			cr_assert_gt(n, 0);
			for (unsigned i = 0; i < n; i++)
				cr_assert_eq(out[i].a, seq_item(popped++).a);
		}
		cr_expect_gt(pushed, 1000);
		mq_ring_fini(&r);
	}
}

Test(mq, ring_was_empty_on_empty_to_nonempty_only)
{
	struct mq_item it = seq_item(1), out[4];
	struct mq_ring r;
	bool e = false;

	cr_assert_eq(mq_ring_init_at(&r, 2, UINT32_MAX), 0);
	cr_expect(mq_ring_prepare_sleep(&r), "empty: may sleep");
	cr_expect_eq(mq_push_spsc(&r, &it, 1, &e), 1);
	cr_expect(e, "first push into an empty ring");
	cr_expect_not(mq_ring_prepare_sleep(&r), "an item is queued");
	cr_expect_eq(mq_push_spsc(&r, &it, 1, &e), 1);
	cr_expect_not(e, "ring already had an item");
	e = true;
	cr_expect_eq(mq_push_spsc(&r, &it, 1, &e), 0);
	cr_expect_not(e, "full ring: no transition");
	cr_expect_eq(mq_pop_spsc(&r, out, 1), 1);
	cr_expect_eq(mq_push_spsc(&r, &it, 1, &e), 1);
	cr_expect_not(e, "one item still queued");
	cr_expect_eq(mq_pop_spsc(&r, out, 4), 2);
	cr_expect(mq_ring_prepare_sleep(&r));
	cr_expect_eq(mq_push_spsc(&r, &it, 1, &e), 1);
	cr_expect(e, "drained, then pushed");
	mq_ring_fini(&r);
}

/* Single thread: the mesh */

Test(mq, mesh_init_rejects_bad_arguments)
{
	struct mq q;

	cr_expect_eq(mq_init(&q, 0, 16), -EINVAL);
	cr_expect_eq(mq_init(&q, 2, 12), -EINVAL);
	mq_fini(&q); /* zeroed by the failed init: a no-op */
	cr_assert_eq(mq_init(&q, 3, 4), 0);
	for (unsigned f = 0; f < 3; f++)
		for (unsigned t = 0; t < 3; t++)
			for (unsigned f2 = 0; f2 < 3; f2++)
				for (unsigned t2 = 0; t2 < 3; t2++)
					cr_expect((f == f2 && t == t2) == (mq_ring_of(&q, f, t) ==
					                                   mq_ring_of(&q, f2, t2)),
					          "one ring per pair");
	cr_expect_eq((uintptr_t)mq_ring_of(&q, 1, 2) % MQ_ALIGN, 0);
	mq_fini(&q);
}

Test(mq, mesh_pop_is_round_robin_and_fifo_per_producer)
{
	struct mq_item in[10], out[64];
	uint64_t next[3] = {0};
	unsigned first[6];
	bool wake;
	struct mq q;

	cr_assert_eq(mq_init(&q, 3, 16), 0);
	for (unsigned p = 0; p < 3; p++) {
		for (unsigned i = 0; i < 10; i++)
			in[i] = item_make(p, 1, i);
		cr_assert_eq(mq_push(&q, p, 1, in, 10, &wake), 10);
		cr_expect_not(wake, "consumer never announced sleep");
	}
	for (unsigned call = 0; call < 6; call++) {
		unsigned n = mq_pop(&q, 1, out, 4);

		cr_assert_eq(n, 4, "call %u", call);
		first[call] = (unsigned)(out[0].a >> 48);
		for (unsigned i = 0; i < n; i++) {
			unsigned p = (unsigned)(out[i].a >> 48);

			cr_assert_eq(out[i].a & 0xffffffffffull, next[p], "producer %u", p);
			next[p]++;
		}
	}
	for (unsigned call = 0; call < 3; call++)
		cr_expect_eq(first[call], call, "call %u starts at ring %u", call, call);
	cr_expect_eq(mq_pop(&q, 1, out, 64), 6);
	cr_expect_eq(mq_pop(&q, 1, out, 64), 0);
	cr_expect_eq(mq_pop(&q, 0, out, 64), 0, "nothing was sent to worker 0");
	mq_fini(&q);
}

Test(mq, mesh_wake_once_per_announced_sleep)
{
	struct mq_item it = item_make(0, 1, 0), out[8];
	bool wake;
	struct mq q;

	cr_assert_eq(mq_init(&q, 2, 4), 0);
	/* Awake consumer: no wake. */
	cr_expect_eq(mq_push(&q, 0, 1, &it, 1, &wake), 1);
	cr_expect_not(wake);
	/* Work queued: announcement withdrawn, still no wake. */
	cr_expect_not(mq_prepare_sleep(&q, 1));
	cr_expect_eq(mq_push(&q, 0, 1, &it, 1, &wake), 1);
	cr_expect_not(wake, "a withdrawn announcement wakes no one");
	cr_expect_eq(mq_pop(&q, 1, out, 8), 2);
	/* Empty: sleeps; the first push from either producer wakes, once. */
	cr_expect(mq_prepare_sleep(&q, 1));
	cr_expect_eq(mq_push(&q, 1, 1, &it, 1, &wake), 1);
	cr_expect(wake, "first push after the announcement");
	cr_expect_eq(mq_push(&q, 0, 1, &it, 1, &wake), 1);
	cr_expect_not(wake, "second push: already claimed");
	mq_end_sleep(&q, 1);
	cr_expect_eq(mq_pop(&q, 1, out, 8), 2);
	/* Woken by something else: mq_end_sleep() withdraws. */
	cr_expect(mq_prepare_sleep(&q, 1));
	mq_end_sleep(&q, 1);
	cr_expect_eq(mq_push(&q, 0, 1, &it, 1, &wake), 1);
	cr_expect_not(wake, "consumer said it is awake");
	/* A full ring takes nothing and wakes no one. */
	cr_expect_eq(mq_push(&q, 0, 1, (struct mq_item[4]){0}, 4, &wake), 3);
	cr_expect(mq_prepare_sleep(&q, 0), "worker 0's own rings are empty");
	cr_expect_eq(mq_push(&q, 0, 1, &it, 1, &wake), 0);
	cr_expect_not(wake);
	mq_fini(&q);
}

/* Threads */

/* A counting semaphore on a condvar: what an io_uring CQE is to a worker. A
 * post before the wait is kept, like a MSG_RING completion. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned pending;
};

static void waiter_post(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	w->pending++;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->pending == 0)
		pthread_cond_wait(&w->cv, &w->mu);
	w->pending--;
	pthread_mutex_unlock(&w->mu);
}

struct run {
	struct mq q;
	struct mq_ring ring;   /* the ring-protocol test uses this alone */
	unsigned np, nc;       /* producer threads, consumer threads */
	bool duplex;           /* np workers, each producing and consuming */
	bool bursty;           /* producers pause now and then, so consumers sleep */
	uint64_t per_pair;     /* items each producer sends each consumer */
	struct waiter w[MAXW]; /* per consumer */
	_Atomic uint64_t wakes, sleeps, withdrawn, full, errors;
	_Atomic uint64_t received;
	char err[160];
	pthread_mutex_t err_mu;
};

struct thread_arg {
	struct run *run;
	unsigned id;
	pthread_t tid;
};

static void fail(struct run *run, const char *what, uint64_t got, uint64_t want)
{
	if (atomic_fetch_add(&run->errors, 1) == 0) {
		pthread_mutex_lock(&run->err_mu);
		snprintf(run->err, sizeof(run->err), "%s: got %llu want %llu", what,
		         (unsigned long long)got, (unsigned long long)want);
		pthread_mutex_unlock(&run->err_mu);
	}
}

/* Checks a batch popped by consumer <me>: checksum, destination, and the
 * next sequence number of its producer. */
static void check_items(struct run *run, unsigned me, const struct mq_item *it, unsigned n,
                        uint64_t *next)
{
	for (unsigned i = 0; i < n; i++) {
		unsigned p = (unsigned)(it[i].a >> 48), c = (unsigned)(it[i].a >> 40) & 0xff;
		uint64_t seq = it[i].a & 0xffffffffffull;

		if (it[i].b != mix(it[i].a))
			fail(run, "checksum", it[i].b, mix(it[i].a));
		else if (c != me)
			fail(run, "destination", c, me);
		else if (p >= MAXW)
			fail(run, "producer id", p, MAXW);
		else if (seq != next[p])
			fail(run, "sequence (lost, duplicated or reordered)", seq, next[p]);
		else
			next[p]++;
	}
}

static void pause_a_little(uint64_t *rng)
{
	struct timespec ts = {0, (long)(rng_next(rng) % 20000)};

	nanosleep(&ts, NULL);
}

/* Pushes <n> items from worker <me> to <to>, retrying on back-pressure;
 * wakes <to> when mq_push() says so. */
static void push_all(struct run *run, unsigned me, unsigned to, const struct mq_item *it,
                     unsigned n)
{
	while (n) {
		bool wake;
		unsigned k = mq_push(&run->q, me, to, it, n, &wake);

		if (wake) {
			atomic_fetch_add_explicit(&run->wakes, 1, memory_order_relaxed);
			waiter_post(&run->w[to]);
		}
		if (k < n) {
			atomic_fetch_add_explicit(&run->full, 1, memory_order_relaxed);
			sched_yield();
		}
		it += k;
		n -= k;
	}
}

/* The consumer's idle step: sleep if the protocol allows it. */
static void idle(struct run *run, unsigned me)
{
	if (!mq_prepare_sleep(&run->q, me)) {
		atomic_fetch_add_explicit(&run->withdrawn, 1, memory_order_relaxed);
		return;
	}
	atomic_fetch_add_explicit(&run->sleeps, 1, memory_order_relaxed);
	waiter_wait(&run->w[me]);
	mq_end_sleep(&run->q, me);
}

static void *producer(void *arg)
{
	struct thread_arg *ta = arg;
	struct run *run = ta->run;
	uint64_t sent[MAXW] = {0}, rng = 0x1234567ull + ta->id * 0x9e3779b97f4a7c15ull;
	unsigned left = run->nc;
	struct mq_item batch[MAX_BATCH];

	while (left) {
		unsigned to = (unsigned)(rng_next(&rng) % run->nc);
		unsigned n = 1 + (unsigned)(rng_next(&rng) % MAX_BATCH);

		if (sent[to] == run->per_pair)
			continue;
		if (n > run->per_pair - sent[to])
			n = (unsigned)(run->per_pair - sent[to]);
		for (unsigned i = 0; i < n; i++)
			batch[i] = item_make(ta->id, to, sent[to] + i);
		push_all(run, ta->id, to, batch, n);
		sent[to] += n;
		if (sent[to] == run->per_pair)
			left--;
		if (run->bursty && rng_next(&rng) % 64 == 0)
			pause_a_little(&rng);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct thread_arg *ta = arg;
	struct run *run = ta->run;
	uint64_t next[MAXW] = {0}, got = 0, want = run->np * run->per_pair;
	struct mq_item out[MAX_BATCH];

	while (got < want && !atomic_load(&run->errors)) {
		unsigned n = mq_pop(&run->q, ta->id, out, MAX_BATCH);

		if (n == 0) {
			idle(run, ta->id);
			continue;
		}
		check_items(run, ta->id, out, n, next);
		got += n;
	}
	for (unsigned p = 0; p < run->np; p++)
		if (next[p] != run->per_pair)
			fail(run, "items from a producer", next[p], run->per_pair);
	atomic_fetch_add(&run->received, got);
	return NULL;
}

/* A worker as in io/: sends to every worker (itself included) and drains
 * its own rings in the same loop; sleeps only with nothing left to send. */
static void *worker(void *arg)
{
	struct thread_arg *ta = arg;
	struct run *run = ta->run;
	uint64_t sent[MAXW] = {0}, next[MAXW] = {0}, got = 0, want = run->np * run->per_pair;
	uint64_t rng = 0xabcdefull + ta->id * 0x9e3779b97f4a7c15ull;
	unsigned left = run->np;
	struct mq_item batch[MAX_BATCH], out[MAX_BATCH];

	while ((got < want || left) && !atomic_load(&run->errors)) {
		unsigned n;
		bool moved = false;

		if (left) {
			unsigned to = (unsigned)(rng_next(&rng) % run->np);
			unsigned k = 1 + (unsigned)(rng_next(&rng) % MAX_BATCH);
			bool wake;

			if (k > run->per_pair - sent[to])
				k = (unsigned)(run->per_pair - sent[to]);
			for (unsigned i = 0; i < k; i++)
				batch[i] = item_make(ta->id, to, sent[to] + i);
			/* Back-pressure: keep what did not fit for a later turn. */
			k = mq_push(&run->q, ta->id, to, batch, k, &wake);
			if (wake) {
				atomic_fetch_add_explicit(&run->wakes, 1, memory_order_relaxed);
				waiter_post(&run->w[to]);
			}
			if (k && (sent[to] += k) == run->per_pair)
				left--;
			moved = k > 0;
		}
		n = mq_pop(&run->q, ta->id, out, MAX_BATCH);
		if (n) {
			check_items(run, ta->id, out, n, next);
			got += n;
		} else if (!left && got < want) {
			idle(run, ta->id);
		} else if (!moved) {
			sched_yield(); /* the other side is full and busy */
		}
	}
	atomic_fetch_add(&run->received, got);
	/* Others may still be pushing to us after we are done: nothing. */
	return NULL;
}

static void run_mesh(unsigned np, unsigned nc, unsigned capacity, bool duplex, bool bursty)
{
	struct run *run = calloc(1, sizeof(*run));
	struct thread_arg ta[2 * MAXW];
	unsigned nw = duplex ? np : (np > nc ? np : nc), nt = 0;
	uint64_t total = items_total();
	struct timespec t0, t1;
	double secs;

	cr_assert_not_null(run);
	cr_assert_leq(np, MAXW);
	cr_assert_leq(nc, MAXW);
	run->np = np;
	run->nc = duplex ? np : nc;
	run->duplex = duplex;
	run->bursty = bursty;
	run->per_pair = total / ((uint64_t)run->np * run->nc);
	pthread_mutex_init(&run->err_mu, NULL);
	for (unsigned i = 0; i < MAXW; i++) {
		pthread_mutex_init(&run->w[i].mu, NULL);
		pthread_cond_init(&run->w[i].cv, NULL);
	}
	cr_assert_eq(mq_init(&run->q, nw, capacity), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (duplex) {
		for (unsigned i = 0; i < np; i++, nt++) {
			ta[nt] = (struct thread_arg){run, i, 0};
			cr_assert_eq(pthread_create(&ta[nt].tid, NULL, worker, &ta[nt]), 0);
		}
	} else {
		for (unsigned i = 0; i < nc; i++, nt++) {
			ta[nt] = (struct thread_arg){run, i, 0};
			cr_assert_eq(pthread_create(&ta[nt].tid, NULL, consumer, &ta[nt]), 0);
		}
		for (unsigned i = 0; i < np; i++, nt++) {
			ta[nt] = (struct thread_arg){run, i, 0};
			cr_assert_eq(pthread_create(&ta[nt].tid, NULL, producer, &ta[nt]), 0);
		}
	}
	for (unsigned i = 0; i < nt; i++)
		pthread_join(ta[i].tid, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;

	cr_log_info("mq %ux%u%s%s cap %u: %llu items in %.2f s; %llu sleeps, %llu wakes "
	            "(1 per %.0f items), %llu withdrawn, %llu full",
	            np, run->nc, duplex ? " duplex" : "", bursty ? " bursty" : "", capacity,
	            (unsigned long long)run->received, secs, (unsigned long long)run->sleeps,
	            (unsigned long long)run->wakes,
	            run->wakes ? (double)run->received / (double)run->wakes : 0.0,
	            (unsigned long long)run->withdrawn, (unsigned long long)run->full);
	cr_expect_eq(run->errors, 0, "%s", run->err);
	cr_expect_eq(run->received, run->per_pair * run->np * run->nc);
	/* Each wake takes a 1 that one announcement wrote. */
	cr_expect_leq(run->wakes, run->sleeps + run->withdrawn);
	/* A wake per message would defeat the design. */
	cr_expect_lt(run->wakes, run->received / 4);
	mq_fini(&run->q);
	free(run);
}

Test(mq, threads_2x2_every_item_once_in_order, .timeout = TIMEOUT_S)
{
	run_mesh(2, 2, 256, false, false);
}

Test(mq, threads_3x1_every_item_once_in_order, .timeout = TIMEOUT_S)
{
	run_mesh(3, 1, 256, false, false);
}

Test(mq, threads_1x3_every_item_once_in_order, .timeout = TIMEOUT_S)
{
	run_mesh(1, 3, 256, false, false);
}

Test(mq, threads_2x2_small_rings_bursty_no_lost_wakeup, .timeout = TIMEOUT_S)
{
	run_mesh(2, 2, 8, false, true);
}

Test(mq, threads_duplex_workers_every_item_once, .timeout = TIMEOUT_S)
{
	run_mesh(2, 2, 64, true, false);
}

/* One ring, the <was_empty> protocol: the consumer sleeps when
 * mq_ring_prepare_sleep() allows, the producer wakes it on was_empty. */

static void *ring_producer(void *arg)
{
	struct thread_arg *ta = arg;
	struct run *run = ta->run;
	uint64_t sent = 0, rng = 42;
	struct mq_item batch[MAX_BATCH];

	while (sent < run->per_pair) {
		unsigned n = 1 + (unsigned)(rng_next(&rng) % MAX_BATCH), off = 0;

		if (n > run->per_pair - sent)
			n = (unsigned)(run->per_pair - sent);
		for (unsigned i = 0; i < n; i++)
			batch[i] = item_make(0, 0, sent + i);
		while (off < n) {
			bool was_empty;
			unsigned k = mq_push_spsc(&run->ring, batch + off, n - off, &was_empty);

			if (was_empty) {
				atomic_fetch_add_explicit(&run->wakes, 1, memory_order_relaxed);
				waiter_post(&run->w[0]);
			}
			if (k < n - off)
				sched_yield();
			off += k;
		}
		sent += n;
		if (rng_next(&rng) % 64 == 0)
			pause_a_little(&rng);
	}
	return NULL;
}

static void *ring_consumer(void *arg)
{
	struct thread_arg *ta = arg;
	struct run *run = ta->run;
	uint64_t next[MAXW] = {0}, got = 0;
	struct mq_item out[MAX_BATCH];

	while (got < run->per_pair && !atomic_load(&run->errors)) {
		unsigned n = mq_pop_spsc(&run->ring, out, MAX_BATCH);

		if (n) {
			check_items(run, 0, out, n, next);
			got += n;
		} else if (mq_ring_prepare_sleep(&run->ring)) {
			atomic_fetch_add_explicit(&run->sleeps, 1, memory_order_relaxed);
			waiter_wait(&run->w[0]);
		}
	}
	atomic_fetch_add(&run->received, got);
	return NULL;
}

Test(mq, threads_ring_was_empty_protocol_no_lost_wakeup, .timeout = TIMEOUT_S)
{
	struct run *run = calloc(1, sizeof(*run));
	struct thread_arg p, c;

	cr_assert_not_null(run);
	run->np = run->nc = 1;
	run->per_pair = items_total() / 2;
	pthread_mutex_init(&run->err_mu, NULL);
	pthread_mutex_init(&run->w[0].mu, NULL);
	pthread_cond_init(&run->w[0].cv, NULL);
	cr_assert_eq(mq_ring_init_at(&run->ring, 32, UINT32_MAX - 1000), 0);
	c = (struct thread_arg){run, 0, 0};
	p = (struct thread_arg){run, 0, 0};
	cr_assert_eq(pthread_create(&c.tid, NULL, ring_consumer, &c), 0);
	cr_assert_eq(pthread_create(&p.tid, NULL, ring_producer, &p), 0);
	pthread_join(p.tid, NULL);
	pthread_join(c.tid, NULL);
	cr_log_info("mq ring was_empty: %llu items; %llu sleeps, %llu wakes",
	            (unsigned long long)run->received, (unsigned long long)run->sleeps,
	            (unsigned long long)run->wakes);
	cr_expect_eq(run->errors, 0, "%s", run->err);
	cr_expect_eq(run->received, run->per_pair);
	mq_ring_fini(&run->ring);
	free(run);
}
