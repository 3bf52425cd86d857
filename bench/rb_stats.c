/* rb_stats: ringmx-bench's latency histograms and the small figures derived
 * from a run (rb.h). A sending thread records into its own histogram while
 * the main thread drains it once per tick, so everything here is relaxed
 * atomics and nothing blocks.
 *
 * Bucket layout, with S = RB_HIST_SUB_BITS: values below 2^(S+1) get one
 * bucket each; above that, every power of two [2^e, 2^(e+1)) is cut into
 * 2^S equal buckets of width 2^(e-S). Bucket i of value v is then
 * ((e - S) << S) + (v >> (e - S)) with e = max(msb(v), S), one count of
 * leading zeros and a shift, with no table and no branch. */
#include "bench/rb.h"

#include <math.h>

const char *const rb_err_names[RB_ERR__N] = {
    [RB_ERR_CONNECT] = "connect", [RB_ERR_TIMEOUT] = "timeout",
    [RB_ERR_CLOSED] = "closed",   [RB_ERR_PROTOCOL] = "protocol",
    [RB_ERR_TLS] = "tls",         [RB_ERR_REPLY] = "reply",
    [RB_ERR_IO] = "io",
};

const char *const rb_phase_names[RB_PH__N] = {
    [RB_PH_CONNECT] = "connect",
    [RB_PH_TLS] = "tls",
    [RB_PH_EHLO] = "ehlo",
    [RB_PH_STARTTLS] = "starttls",
    [RB_PH_MAIL] = "mail",
    [RB_PH_RCPT] = "rcpt",
    [RB_PH_DATA] = "data",
    [RB_PH_PIPE_MAIL] = "pipelined_mail",
    [RB_PH_PIPE_RCPT] = "pipelined_rcpt",
    [RB_PH_PIPE_DATA] = "pipelined_data",
    [RB_PH_EOD] = "end_of_data",
    [RB_PH_BDAT] = "bdat",
    [RB_PH_PIPE_BDAT] = "pipelined_bdat",
    [RB_PH_RSET] = "rset",
    [RB_PH_QUIT] = "quit",
};

/* <us> must be clamped already. Static so that rb_hist_record() inlines it:
 * the exported rb_hist_index() could be interposed in a PIC build. */
static inline unsigned hist_index(uint64_t us)
{
	unsigned shift;

	/* OR-ing in 2^S makes clz well defined at 0 and puts every value
	   below 2^(S+1) at shift 0, where the bucket is the value itself. */
	shift = (unsigned)(63 - __builtin_clzll(us | (UINT64_C(1) << RB_HIST_SUB_BITS))) -
	        RB_HIST_SUB_BITS;
	return (shift << RB_HIST_SUB_BITS) + (unsigned)(us >> shift);
}

unsigned rb_hist_index(uint64_t us)
{
	return hist_index(us < RB_HIST_MAX_US ? us : RB_HIST_MAX_US);
}

uint64_t rb_hist_low(unsigned i)
{
	unsigned shift;

	if (i >= RB_HIST_BUCKETS)
		i = RB_HIST_BUCKETS - 1;
	if (i < (2u << RB_HIST_SUB_BITS))
		return i;
	shift = (i >> RB_HIST_SUB_BITS) - 1;
	return (uint64_t)((i & ((1u << RB_HIST_SUB_BITS) - 1)) | (1u << RB_HIST_SUB_BITS)) << shift;
}

uint64_t rb_hist_high(unsigned i)
{
	if (i >= RB_HIST_BUCKETS)
		i = RB_HIST_BUCKETS - 1;
	if (i < (2u << RB_HIST_SUB_BITS))
		return i;
	return rb_hist_low(i) + (UINT64_C(1) << ((i >> RB_HIST_SUB_BITS) - 1)) - 1;
}

static void max_raise(_Atomic uint64_t *m, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(m, memory_order_relaxed);

	/* Only the rare new maximum pays for a CAS; a failed CAS reloads cur. */
	while (v > cur && !atomic_compare_exchange_weak_explicit(m, &cur, v, memory_order_relaxed,
	                                                         memory_order_relaxed))
		;
}

void rb_hist_record(struct rb_hist *h, uint64_t us)
{
	if (us > RB_HIST_MAX_US)
		us = RB_HIST_MAX_US;
	atomic_fetch_add_explicit(&h->n[hist_index(us)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
	max_raise(&h->max_us, us);
}

void rb_hist_drain(struct rb_hist *from, struct rb_hist *into)
{
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
		uint64_t x;

		/* Most buckets are empty: reading first keeps the drain from
		   writing (and stealing the cache lines of) all of them. A
		   count added after this read is still there next drain. */
		if (!atomic_load_explicit(&from->n[i], memory_order_relaxed))
			continue;
		x = atomic_exchange_explicit(&from->n[i], 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&into->n[i], x, memory_order_relaxed);
	}
	atomic_fetch_add_explicit(&into->count,
	                          atomic_exchange_explicit(&from->count, 0, memory_order_relaxed),
	                          memory_order_relaxed);
	atomic_fetch_add_explicit(&into->sum_us,
	                          atomic_exchange_explicit(&from->sum_us, 0, memory_order_relaxed),
	                          memory_order_relaxed);
	max_raise(&into->max_us, atomic_exchange_explicit(&from->max_us, 0, memory_order_relaxed));
}

void rb_hist_merge(const struct rb_hist *from, struct rb_hist *into)
{
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
		uint64_t x = atomic_load_explicit(&from->n[i], memory_order_relaxed);

		if (x)
			atomic_fetch_add_explicit(&into->n[i], x, memory_order_relaxed);
	}
	atomic_fetch_add_explicit(&into->count,
	                          atomic_load_explicit(&from->count, memory_order_relaxed),
	                          memory_order_relaxed);
	atomic_fetch_add_explicit(&into->sum_us,
	                          atomic_load_explicit(&from->sum_us, memory_order_relaxed),
	                          memory_order_relaxed);
	max_raise(&into->max_us, atomic_load_explicit(&from->max_us, memory_order_relaxed));
}

void rb_hist_reset(struct rb_hist *h)
{
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		atomic_store_explicit(&h->n[i], 0, memory_order_relaxed);
	atomic_store_explicit(&h->count, 0, memory_order_relaxed);
	atomic_store_explicit(&h->sum_us, 0, memory_order_relaxed);
	atomic_store_explicit(&h->max_us, 0, memory_order_relaxed);
}

uint64_t rb_hist_percentile(const struct rb_hist *h, double p)
{
	uint64_t total = 0, rank, seen = 0, max;
	double want;

	/* The total comes from the buckets themselves, not h->count, so that
	   the walk below always ends inside the histogram even when a record
	   is halfway through its adds. */
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		total += atomic_load_explicit(&h->n[i], memory_order_relaxed);
	if (!total)
		return 0;
	/* 99.9 is not exact in binary: 99.9 / 100 * 1000 comes out a hair
	   above 999, and a bare ceil() would then ask for the 1000th value.
	   Shaving a relative 1e-12 only matters for such representation
	   noise. */
	want = ceil(p / 100.0 * (double)total * (1.0 - 1e-12));
	rank = want < 1.0 ? 1 : want >= (double)total ? total : (uint64_t)want;
	max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
		seen += atomic_load_explicit(&h->n[i], memory_order_relaxed);
		if (seen >= rank) {
			uint64_t v = rb_hist_high(i);

			return v < max ? v : max;
		}
	}
	return max;
}

double rb_hist_mean(const struct rb_hist *h)
{
	uint64_t n = atomic_load_explicit(&h->count, memory_order_relaxed);

	if (!n)
		return 0;
	return (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / (double)n;
}

double rb_result_rate(const struct rb_result *r)
{
	if (r->send_s <= 0)
		return 0;
	return (double)r->messages / r->send_s;
}

double rb_result_mbps(const struct rb_result *r)
{
	if (r->send_s <= 0)
		return 0;
	return (double)r->bytes / 1e6 / r->send_s;
}
