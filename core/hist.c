/* hist: log-linear histogram. See hist.h. */
#include "core/hist.h"

#include <stddef.h>

unsigned hist_index(uint64_t v)
{
	unsigned top;

	if (v < HIST_SUB)
		return (unsigned)v;
	if (v >> HIST_BITS)
		return HIST_BUCKETS - 1;
	top = 63u - (unsigned)__builtin_clzll(v); /* HIST_SUB_BITS .. HIST_BITS-1 */
	/* Row top - HIST_SUB_BITS + 1, column: the HIST_SUB_BITS bits below the top. */
	return (top - HIST_SUB_BITS + 1) * HIST_SUB +
	       (unsigned)((v >> (top - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

uint64_t hist_low(unsigned i)
{
	unsigned row = i / HIST_SUB, col = i % HIST_SUB;

	if (row == 0)
		return col;
	return (uint64_t)(HIST_SUB + col) << (row - 1);
}

uint64_t hist_high(unsigned i)
{
	if (i + 1 >= HIST_BUCKETS)
		return UINT64_MAX;
	return hist_low(i + 1) - 1;
}

void hist_record(struct hist *h, uint64_t v)
{
	unsigned i = hist_index(v);

	/* Relaxed stores by the one writer: a reader's relaxed loads see
	 * whole values. */
	__atomic_store_n(&h->n[i], h->n[i] + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&h->sum, h->sum + v, __ATOMIC_RELAXED);
	if (v > h->max)
		__atomic_store_n(&h->max, v, __ATOMIC_RELAXED);
}

void hist_load(const struct hist *from, struct hist *into)
{
	uint64_t max = __atomic_load_n(&from->max, __ATOMIC_RELAXED);

	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->n[i] += __atomic_load_n(&from->n[i], __ATOMIC_RELAXED);
	into->count += __atomic_load_n(&from->count, __ATOMIC_RELAXED);
	into->sum += __atomic_load_n(&from->sum, __ATOMIC_RELAXED);
	if (max > into->max)
		into->max = max;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t total = 0, rank, seen = 0;

	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		total += h->n[i];
	if (!total)
		return 0;
	rank = (uint64_t)((p / 100.0) * (double)total + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > total)
		rank = total;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->n[i];
		if (seen >= rank) {
			uint64_t hi = hist_high(i);

			return hi < h->max ? hi : h->max;
		}
	}
	return h->max;
}
