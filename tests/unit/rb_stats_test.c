/* rb_stats_test: ringmx-bench's latency histogram (bucket layout,
 * percentiles against a sorted-array oracle, drain and merge, a drain racing
 * a recording thread) and the rate helpers. */
#include "bench/rb.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ~16 KiB each: on the heap rather than a test's stack. */
static struct rb_hist *h, *h2;

static void setup(void)
{
	h = calloc(1, sizeof(*h));
	h2 = calloc(1, sizeof(*h2));
	cr_assert(h && h2);
}

static void teardown(void)
{
	free(h);
	free(h2);
}

TestSuite(rb_stats, .init = setup, .fini = teardown);

/* A deterministic generator (xorshift64*), so that a failure reproduces. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 0x2545f4914f6cdd1du;
}

/* Spread evenly over orders of magnitude, like real latencies: 0 .. 2^bits. */
static uint64_t rnd_log(unsigned bits)
{
	unsigned e = (unsigned)(rnd() % (bits + 1));

	return rnd() & ((UINT64_C(1) << e) - 1);
}

static uint64_t total(const struct rb_hist *x)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		t += atomic_load(&x->n[i]);
	return t;
}

Test(rb_stats, small_values_have_exact_buckets)
{
	for (uint64_t v = 0; v < (2u << RB_HIST_SUB_BITS); v++) {
		unsigned i = rb_hist_index(v);

		cr_assert_eq(i, v, "index(%lu) = %u", (unsigned long)v, i);
		cr_assert_eq(rb_hist_low(i), v);
		cr_assert_eq(rb_hist_high(i), v);
	}
}

Test(rb_stats, buckets_tile_the_range_without_gaps)
{
	cr_assert_eq(rb_hist_low(0), 0);
	cr_assert_eq(rb_hist_high(RB_HIST_BUCKETS - 1), RB_HIST_MAX_US);
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
		uint64_t lo = rb_hist_low(i), hi = rb_hist_high(i);

		cr_assert_leq(lo, hi, "bucket %u", i);
		cr_assert_eq(rb_hist_index(lo), i, "index(low(%u))", i);
		cr_assert_eq(rb_hist_index(hi), i, "index(high(%u))", i);
		if (i + 1 < RB_HIST_BUCKETS)
			cr_assert_eq(rb_hist_low(i + 1), hi + 1, "bucket %u ends at %lu", i,
			             (unsigned long)hi);
	}
}

Test(rb_stats, bucket_width_within_precision)
{
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
		uint64_t lo = rb_hist_low(i), hi = rb_hist_high(i);

		if (lo < 64)
			continue;
		cr_assert_leq((double)(hi - lo) / (double)lo, 1.0 / (1 << RB_HIST_SUB_BITS),
		              "bucket %u: %lu..%lu", i, (unsigned long)lo, (unsigned long)hi);
	}
}

Test(rb_stats, index_is_monotonic_and_round_trips)
{
	uint64_t prev_v = 0;
	unsigned prev_i = 0;

	/* Every power of two and its neighbours, then random values. */
	for (unsigned b = 0; b <= RB_HIST_MAX_BITS; b++) {
		for (int d = -1; d <= 1; d++) {
			uint64_t v = (UINT64_C(1) << b) + (uint64_t)(int64_t)d;
			unsigned i = rb_hist_index(v);

			if (v > RB_HIST_MAX_US)
				continue;
			cr_assert_leq(rb_hist_low(i), v, "v %lu", (unsigned long)v);
			cr_assert_geq(rb_hist_high(i), v, "v %lu", (unsigned long)v);
		}
	}
	for (int k = 0; k < 200000; k++) {
		uint64_t v = rnd_log(RB_HIST_MAX_BITS);
		unsigned i = rb_hist_index(v);

		cr_assert_lt(i, RB_HIST_BUCKETS);
		cr_assert_leq(rb_hist_low(i), v, "v %lu", (unsigned long)v);
		cr_assert_geq(rb_hist_high(i), v, "v %lu", (unsigned long)v);
		if (v >= prev_v)
			cr_assert_geq(i, prev_i, "index(%lu) < index(%lu)", (unsigned long)v,
			              (unsigned long)prev_v);
		else
			cr_assert_leq(i, prev_i, "index(%lu) > index(%lu)", (unsigned long)v,
			              (unsigned long)prev_v);
		prev_v = v;
		prev_i = i;
	}
}

Test(rb_stats, values_above_max_are_clamped)
{
	cr_assert_eq(rb_hist_index(RB_HIST_MAX_US), RB_HIST_BUCKETS - 1);
	cr_assert_eq(rb_hist_index(RB_HIST_MAX_US + 1), RB_HIST_BUCKETS - 1);
	cr_assert_eq(rb_hist_index(UINT64_MAX), RB_HIST_BUCKETS - 1);
	rb_hist_record(h, UINT64_MAX);
	cr_assert_eq(atomic_load(&h->n[RB_HIST_BUCKETS - 1]), 1);
	cr_assert_eq(atomic_load(&h->max_us), RB_HIST_MAX_US);
	cr_assert_eq(atomic_load(&h->sum_us), RB_HIST_MAX_US);
	cr_assert_eq(rb_hist_percentile(h, 100), RB_HIST_MAX_US);
}

Test(rb_stats, record_counts_sum_max_mean)
{
	cr_assert_eq(rb_hist_percentile(h, 50), 0, "empty");
	cr_assert_eq(rb_hist_mean(h), 0, "empty");
	rb_hist_record(h, 10);
	rb_hist_record(h, 30);
	rb_hist_record(h, 5);
	cr_assert_eq(atomic_load(&h->count), 3);
	cr_assert_eq(atomic_load(&h->sum_us), 45);
	cr_assert_eq(atomic_load(&h->max_us), 30);
	cr_assert_float_eq(rb_hist_mean(h), 15.0, 1e-9);
	cr_assert_eq(rb_hist_percentile(h, 1), 5);
	cr_assert_eq(rb_hist_percentile(h, 50), 10);
	cr_assert_eq(rb_hist_percentile(h, 100), 30);
}

Test(rb_stats, percentile_never_exceeds_max)
{
	/* 1000 falls in a bucket 1000..1007: the exact maximum caps it. */
	rb_hist_record(h, 1000);
	cr_assert_gt(rb_hist_high(rb_hist_index(1000)), 1000);
	cr_assert_eq(rb_hist_percentile(h, 50), 1000);
	cr_assert_eq(rb_hist_percentile(h, 100), 1000);
}

Test(rb_stats, percentile_rank_is_exact_at_round_percentages)
{
	/* 1..1000 exactly once each (all in buckets of width <= 8): p99.9 must
	   be the 999th value's bucket, not the 1000th, however 99.9 rounds. */
	for (uint64_t v = 1; v <= 1000; v++)
		rb_hist_record(h, v);
	cr_assert_eq(rb_hist_percentile(h, 99.9), rb_hist_high(rb_hist_index(999)));
	cr_assert_eq(rb_hist_percentile(h, 99), rb_hist_high(rb_hist_index(990)));
	cr_assert_eq(rb_hist_percentile(h, 50), rb_hist_high(rb_hist_index(500)));
	cr_assert_eq(rb_hist_percentile(h, 0.1), 1);
	cr_assert_eq(rb_hist_percentile(h, 100), 1000);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

Test(rb_stats, percentiles_match_sorted_oracle)
{
	static const double ps[] = {0.1, 1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100};
	enum { N = 20000 };
	uint64_t *v = malloc(N * sizeof(*v)), max = 0;

	cr_assert(v);
	for (int round = 0; round < 5; round++) {
		int n = round == 0 ? 1 : round == 1 ? 7 : N / (4 - round + 1);

		rb_hist_reset(h);
		max = 0;
		for (int k = 0; k < n; k++) {
			v[k] = rnd_log(round == 4 ? RB_HIST_MAX_BITS : 24);
			rb_hist_record(h, v[k]);
			if (v[k] > max)
				max = v[k];
		}
		qsort(v, (size_t)n, sizeof(*v), cmp_u64);
		for (size_t j = 0; j < sizeof(ps) / sizeof(ps[0]); j++) {
			size_t rank = (size_t)ceil(ps[j] / 100 * n - 1e-9);
			uint64_t want = v[rank ? rank - 1 : 0], got = rb_hist_percentile(h, ps[j]);
			uint64_t hi = rb_hist_high(rb_hist_index(want));

			/* The oracle value's bucket, reported by its top (never
			   past the maximum): at most 1/64 above the truth. */
			cr_assert_eq(got, hi < max ? hi : max, "n %d p%g: got %lu, oracle %lu", n,
			             ps[j], (unsigned long)got, (unsigned long)want);
			cr_assert_geq(got, want);
			cr_assert_leq((double)(got - want), (double)want / 64 + 1e-9,
			              "p%g: got %lu, oracle %lu", ps[j], (unsigned long)got,
			              (unsigned long)want);
		}
		cr_assert_eq(atomic_load(&h->max_us), max);
	}
	free(v);
}

Test(rb_stats, drain_moves_counts_and_zeroes_source)
{
	static uint64_t before[RB_HIST_BUCKETS];
	uint64_t sum = 0;

	for (int k = 0; k < 5000; k++) {
		uint64_t x = rnd_log(30);

		rb_hist_record(h, x);
		sum += x;
	}
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		before[i] = atomic_load(&h->n[i]);
	rb_hist_record(h2, 7);
	rb_hist_drain(h, h2);
	cr_assert_eq(total(h), 0);
	cr_assert_eq(atomic_load(&h->count), 0);
	cr_assert_eq(atomic_load(&h->sum_us), 0);
	cr_assert_eq(atomic_load(&h->max_us), 0);
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		cr_assert_eq(atomic_load(&h2->n[i]), before[i] + (i == 7), "bucket %u", i);
	cr_assert_eq(atomic_load(&h2->count), 5001);
	cr_assert_eq(atomic_load(&h2->sum_us), sum + 7);
	/* Draining an empty histogram changes nothing. */
	rb_hist_drain(h, h2);
	cr_assert_eq(atomic_load(&h2->count), 5001);
	cr_assert_eq(total(h2), 5001);
}

Test(rb_stats, merge_adds_and_keeps_source)
{
	for (uint64_t v = 0; v < 3000; v += 3)
		rb_hist_record(h, v);
	rb_hist_record(h2, 5000);
	rb_hist_merge(h, h2);
	cr_assert_eq(atomic_load(&h->count), 1000, "source unchanged");
	cr_assert_eq(total(h), 1000);
	cr_assert_eq(atomic_load(&h2->count), 1001);
	cr_assert_eq(total(h2), 1001);
	cr_assert_eq(atomic_load(&h2->max_us), 5000, "the larger maximum wins");
	cr_assert_eq(atomic_load(&h2->sum_us), 5000 + 3 * (999 * 1000 / 2));
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		cr_assert_eq(atomic_load(&h2->n[i]),
		             atomic_load(&h->n[i]) + (i == rb_hist_index(5000)), "bucket %u", i);
	rb_hist_reset(h2);
	cr_assert_eq(total(h2), 0);
	cr_assert_eq(atomic_load(&h2->count) + atomic_load(&h2->sum_us) + atomic_load(&h2->max_us),
	             0);
}

/* A sending thread records while the main thread drains it, as rb_main does
 * every tick: every value must end up counted exactly once. */
enum { RACE_N = 2000000 };
static atomic_bool race_done;

static void *recorder(void *arg)
{
	struct rb_hist *live = arg;

	for (uint64_t k = 0; k < RACE_N; k++)
		rb_hist_record(live, k % 5000);
	atomic_store(&race_done, true);
	return NULL;
}

Test(rb_stats, concurrent_record_and_drain_lose_nothing)
{
	pthread_t t;
	uint64_t sum = 0;
	int drains = 0;

	cr_assert_eq(pthread_create(&t, NULL, recorder, h), 0);
	while (!atomic_load(&race_done)) {
		rb_hist_drain(h, h2);
		drains++;
	}
	cr_assert_eq(pthread_join(t, NULL), 0);
	rb_hist_drain(h, h2);
	for (uint64_t k = 0; k < RACE_N; k++)
		sum += k % 5000;
	cr_assert_eq(total(h2), RACE_N, "after %d drains", drains);
	cr_assert_eq(atomic_load(&h2->count), RACE_N);
	cr_assert_eq(atomic_load(&h2->sum_us), sum);
	cr_assert_eq(atomic_load(&h2->max_us), 4999);
	for (uint64_t v = 0; v < 5000; v++)
		cr_assert_eq(atomic_load(&h2->n[rb_hist_index(v)]) > 0, true, "value %lu",
		             (unsigned long)v);
	cr_assert_eq(total(h), 0);
}

Test(rb_stats, error_names)
{
	static const char *const want[RB_ERR__N] = {"connect", "timeout", "closed", "protocol",
	                                            "tls",     "reply",   "io"};

	for (int k = 0; k < RB_ERR__N; k++)
		cr_assert_str_eq(rb_err_names[k], want[k]);
}

Test(rb_stats, rates_divide_by_send_time)
{
	struct rb_result *r = calloc(1, sizeof(*r));

	cr_assert(r);
	r->messages = 5000;
	r->bytes = 25000000;
	cr_assert_eq(rb_result_rate(r), 0, "no send time yet");
	cr_assert_eq(rb_result_mbps(r), 0);
	r->send_s = -1;
	cr_assert_eq(rb_result_rate(r), 0);
	r->send_s = 2.5;
	r->elapsed_s = 10; /* not the denominator */
	cr_assert_float_eq(rb_result_rate(r), 2000.0, 1e-9);
	cr_assert_float_eq(rb_result_mbps(r), 10.0, 1e-9);
	free(r);
}
