/* hist_test: the log-linear histogram: every value falls in the bucket
 * whose bounds hold it, the buckets tile the range without gaps,
 * percentiles against a sorted array, and the overflow bucket. */
#include "core/hist.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

Test(hist, buckets_tile_the_range)
{
	cr_assert_eq(hist_low(0), 0);
	for (unsigned i = 0; i + 1 < HIST_BUCKETS; i++) {
		cr_assert_leq(hist_low(i), hist_high(i), "bucket %u", i);
		cr_assert_eq(hist_high(i) + 1, hist_low(i + 1), "bucket %u", i);
	}
	cr_assert_eq(hist_high(HIST_BUCKETS - 1), UINT64_MAX);
}

Test(hist, values_in_their_bucket)
{
	uint64_t v;

	for (v = 0; v < 100000; v++) {
		unsigned i = hist_index(v);

		cr_assert(hist_low(i) <= v && v <= hist_high(i), "%llu in %u",
		          (unsigned long long)v, i);
	}
	for (unsigned b = 0; b < 64; b++) {
		unsigned i = hist_index((uint64_t)1 << b);

		cr_assert_lt(i, HIST_BUCKETS);
		if (b < HIST_BITS)
			cr_assert_eq(hist_low(i), (uint64_t)1 << b);
		else
			cr_assert_eq(i, HIST_BUCKETS - 1);
	}
	/* Within 1/HIST_SUB of the value. */
	v = 1000000;
	cr_assert_leq(hist_high(hist_index(v)) - hist_low(hist_index(v)), v / HIST_SUB);
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

Test(hist, percentiles_near_the_sorted_values)
{
	enum { N = 10001 };
	static uint64_t v[N];
	static struct hist h, sum;
	double ps[] = {1, 50, 90, 99, 99.9, 100};

	srand(7);
	for (unsigned i = 0; i < N; i++) {
		v[i] = (uint64_t)(rand() % 5000) * (uint64_t)(rand() % 100 + 1);
		hist_record(&h, v[i]);
	}
	qsort(v, N, sizeof(v[0]), cmp);
	cr_assert_eq(h.count, N);
	cr_assert_eq(h.max, v[N - 1]);
	for (unsigned k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		uint64_t exact = v[(size_t)((ps[k] / 100.0) * N + 0.999999) - 1];
		uint64_t got = hist_percentile(&h, ps[k]);

		cr_assert_geq(got, exact, "p%g", ps[k]);
		cr_assert_leq(got, exact + exact / HIST_SUB, "p%g: %llu vs %llu", ps[k],
		              (unsigned long long)got, (unsigned long long)exact);
	}
	hist_load(&h, &sum);
	hist_load(&h, &sum);
	cr_assert_eq(sum.count, 2 * N);
	cr_assert_eq(hist_percentile(&sum, 50), hist_percentile(&h, 50));
}

Test(hist, empty_and_overflow)
{
	static struct hist h;

	cr_assert_eq(hist_percentile(&h, 50), 0);
	hist_record(&h, UINT64_MAX / 2);
	cr_assert_eq(hist_index(UINT64_MAX / 2), HIST_BUCKETS - 1);
	cr_assert_eq(hist_percentile(&h, 50), UINT64_MAX / 2); /* the exact maximum */
}
