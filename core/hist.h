/* hist: a log-linear histogram of unsigned values (microseconds, batch
 * sizes), in the manner of HdrHistogram: HIST_SUB buckets per power of two,
 * so a value is known to within 1/HIST_SUB (12.5 %); values below HIST_SUB
 * are exact, values at or past 2^HIST_BITS go to the last bucket. Plain
 * counters: one thread records; a reader on another thread sees relaxed
 * loads (hist_load()). libc only. */
#ifndef RINGMX_CORE_HIST_H
#define RINGMX_CORE_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 3
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BITS     26 /* 2^26 us = 67 s */
#define HIST_BUCKETS  ((HIST_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t n[HIST_BUCKETS];
	uint64_t count, sum, max;
};

unsigned hist_index(uint64_t v);
/* The smallest and the largest value bucket <i> holds. */
uint64_t hist_low(unsigned i);
uint64_t hist_high(unsigned i);
/* Records <v>: written by one thread only. */
void hist_record(struct hist *h, uint64_t v);
/* Adds a relaxed snapshot of <from> (recorded by another thread) to <into>. */
void hist_load(const struct hist *from, struct hist *into);
/* The value at percentile <p> (0 < p <= 100): the highest value of the
 * bucket holding the ceil(p/100 * count)-th smallest, never above the
 * maximum. 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double p);

#endif
