/* segreg_test: the segment registry's numbers and ids, the live count and
 * its sealed bit (exactly one caller sees a segment finish, whichever of
 * seal and the last release comes last), and the gone state that lets a
 * done log go (io/commit.c): set once, for good, and independent of the
 * count. Also route_hash(). */
#include "queue/segreg.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>

static struct seg_registry reg;

static void setup(void)
{
	segreg_init(&reg);
}

static void teardown(void)
{
	segreg_fini(&reg);
}

TestSuite(segreg, .init = setup, .fini = teardown);

static unsigned add(uint64_t start, unsigned worker, unsigned seq)
{
	struct spool_seg_id id = {start, worker, seq};
	int n = segreg_add(&reg, &id);

	cr_assert_geq(n, 0);
	return (unsigned)n;
}

Test(segreg, numbers_name_their_ids_across_chunks)
{
	for (unsigned i = 0; i < SEGREG_CHUNK + 10; i++)
		cr_assert_eq(add(7, i % 3, i), i);
	for (unsigned i = 0; i < SEGREG_CHUNK + 10; i++) {
		const struct spool_seg_id *id = segreg_get(&reg, i);

		cr_expect_eq(id->start, 7);
		cr_expect_eq(id->worker, i % 3);
		cr_expect_eq(id->seq, i);
		cr_expect_not(segreg_gone(&reg, i));
		cr_expect_not(segreg_finished(&reg, i));
	}
}

Test(segreg, the_last_of_seal_and_release_sees_the_segment_finish)
{
	unsigned a = add(1, 0, 1), b = add(1, 0, 2);

	/* Sealed last: the releases see nothing, the seal sees it finished. */
	segreg_hold(&reg, a);
	segreg_hold(&reg, a);
	cr_expect_not(segreg_release(&reg, a));
	cr_expect_not(segreg_release(&reg, a));
	cr_expect(segreg_seal(&reg, a));
	cr_expect(segreg_finished(&reg, a));
	/* Released last. */
	segreg_hold(&reg, b);
	cr_expect_not(segreg_seal(&reg, b));
	cr_expect_not(segreg_finished(&reg, b));
	cr_expect(segreg_release(&reg, b));
	cr_expect(segreg_finished(&reg, b));
}

Test(segreg, live_total_counts_pending_records_across_chunks_not_the_sealed_bit)
{
	unsigned a = add(2, 0, 1), b;

	cr_expect_eq(segreg_live_total(&reg), 0);
	segreg_hold(&reg, a);
	segreg_hold(&reg, a);
	segreg_seal(&reg, a); /* the sealed bit is no record */
	cr_expect_eq(segreg_live_total(&reg), 2);
	for (unsigned i = 0; i < SEGREG_CHUNK; i++)
		add(2, 1, i + 2);
	b = add(2, 1, 9999); /* in the second chunk */
	segreg_hold(&reg, b);
	cr_expect_eq(segreg_live_total(&reg), 3);
	segreg_release(&reg, a);
	segreg_release(&reg, b);
	cr_expect_eq(segreg_live_total(&reg), 1);
}

Test(segreg, mostly_dead_needs_sealed_and_few_live)
{
	unsigned a = add(1, 0, 1), b = add(1, 0, 2), c = add(1, 0, 3);

	for (int i = 0; i < 8; i++)
		segreg_hold(&reg, a);
	cr_expect_not(segreg_mostly_dead(&reg, a, 4)); /* not sealed */
	segreg_seal(&reg, a);
	cr_expect_not(segreg_mostly_dead(&reg, a, 4)); /* 8 of 8 live */
	for (int i = 0; i < 6; i++)
		segreg_release(&reg, a);
	cr_expect(segreg_mostly_dead(&reg, a, 4)); /* 2 of 8 */
	cr_expect_not(segreg_mostly_dead(&reg, a, 5));
	segreg_release(&reg, a);
	segreg_release(&reg, a);
	cr_expect_not(segreg_mostly_dead(&reg, a, 4)); /* finished: nothing to move */
	/* A segment of one record (a large message's) never is. */
	segreg_hold(&reg, b);
	segreg_seal(&reg, b);
	cr_expect_not(segreg_mostly_dead(&reg, b, 4));
	/* A recovered one always is, while something in it is live. */
	segreg_hold(&reg, c);
	segreg_hold(&reg, c);
	segreg_seal(&reg, c);
	segreg_recovered(&reg, c);
	segreg_hold(&reg, c);
	cr_expect(segreg_mostly_dead(&reg, c, 4));
}

Test(segreg, gone_is_set_once_for_good_and_leaves_the_count_alone)
{
	unsigned a = add(1, 0, 1), b = add(1, 1, 1);

	cr_assert(segreg_seal(&reg, a));
	cr_expect_not(segreg_gone(&reg, a));
	segreg_set_gone(&reg, a);
	cr_expect(segreg_gone(&reg, a));
	/* Still finished: the relay closes its files of finished segments. */
	cr_expect(segreg_finished(&reg, a));
	cr_expect_not(segreg_gone(&reg, b), "another segment is not gone");
	segreg_set_gone(&reg, a);
	cr_expect(segreg_gone(&reg, a));
	/* Segments added later start not gone. */
	cr_expect_not(segreg_gone(&reg, add(2, 0, 1)));
}

#define RACE_THREADS 4
#define RACE_ROUNDS  2000

struct race {
	unsigned segno;
	atomic_uint finished; /* how many callers saw it finish */
	pthread_barrier_t *bar;
	bool sealer;
};

static void *race_main(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(r->bar);
	if (r->sealer ? segreg_seal(&reg, r->segno) : segreg_release(&reg, r->segno))
		atomic_fetch_add(&r->finished, 1);
	return NULL;
}

Test(segreg, exactly_one_caller_sees_a_segment_finish_under_threads)
{
	pthread_barrier_t bar;

	pthread_barrier_init(&bar, NULL, RACE_THREADS + 1);
	for (unsigned round = 0; round < RACE_ROUNDS / 10; round++) {
		struct race rs[RACE_THREADS + 1];
		pthread_t t[RACE_THREADS + 1];
		unsigned segno = add(3, 0, round);
		atomic_uint seen = 0;

		for (unsigned i = 0; i < RACE_THREADS; i++)
			segreg_hold(&reg, segno);
		for (unsigned i = 0; i <= RACE_THREADS; i++) {
			rs[i] = (struct race){.segno = segno, .bar = &bar, .sealer = i == 0};
			atomic_init(&rs[i].finished, 0);
			cr_assert_eq(pthread_create(&t[i], NULL, race_main, &rs[i]), 0);
		}
		for (unsigned i = 0; i <= RACE_THREADS; i++) {
			pthread_join(t[i], NULL);
			seen += atomic_load(&rs[i].finished);
		}
		cr_assert_eq(seen, 1, "round %u: %u callers saw it finish", round, seen);
		cr_assert(segreg_finished(&reg, segno));
	}
	pthread_barrier_destroy(&bar);
}

Test(segreg, route_hash_is_the_domain_case_insensitive)
{
	cr_expect_eq(route_hash("a@Example.COM"), route_hash("b@example.com"));
	cr_expect_neq(route_hash("a@example.com"), route_hash("a@example.net"));
	cr_expect_eq(route_hash("nodomain"), route_hash(NULL));
}
