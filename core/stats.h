/* stats: counters and histograms that one thread writes and another reads
 * (the workers' metrics, read by the metrics thread: io/metrics.c). The
 * owner adds with a relaxed load and store, which compiles to a plain add
 * (no lock prefix, no fence); the reader takes relaxed loads. Each counter
 * is monotonic on its own; counters read one after another are not a
 * snapshot, and need not be. Keep each thread's counters on cache lines of
 * their own (io/types-t.h: struct worker_stats). libc only. */
#ifndef RINGMX_CORE_STATS_H
#define RINGMX_CORE_STATS_H

#include <stdint.h>

/* Adds <n> to <c>. Only the thread that owns <c> may call it. */
static inline void stats_add_local(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* Sets gauge <c> to <v>. Only the owner. */
static inline void stats_set_local(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, v, __ATOMIC_RELAXED);
}

/* Reads <c>. Any thread. */
static inline uint64_t stats_read(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

#define STATS_HIST_MAX 20 /* finite bounds of a histogram at most */

/* A histogram's bucket bounds, in the unit its values are observed in
 * (microseconds, messages, ...), increasing; dividing by <div> gives the
 * exported unit (1e6: microseconds into seconds; a division, not a
 * multiplication by 1e-6, so that 100 us is exactly the double 0.0001). */
struct stats_bounds {
	unsigned n;
	uint64_t le[STATS_HIST_MAX];
	double div;
};

/* Observations per bucket (not cumulative: bucket[i] counts values in
 * (le[i-1], le[i]], bucket[n] those above le[n-1]) and their sum. */
struct stats_hist {
	uint64_t bucket[STATS_HIST_MAX + 1];
	uint64_t sum;
};

/* Counts <v> in <h>. Only the owner. */
static inline void stats_hist_observe_local(struct stats_hist *h, const struct stats_bounds *b,
                                            uint64_t v)
{
	unsigned i = 0;

	while (i < b->n && v > b->le[i])
		i++;
	stats_add_local(&h->bucket[i], 1);
	stats_add_local(&h->sum, v);
}

/* Adds what <h> holds now into <acc> (a reader's total over threads). */
static inline void stats_hist_sum(struct stats_hist *acc, const struct stats_hist *h,
                                  const struct stats_bounds *b)
{
	for (unsigned i = 0; i <= b->n; i++)
		acc->bucket[i] += stats_read(&h->bucket[i]);
	acc->sum += stats_read(&h->sum);
}

#endif
