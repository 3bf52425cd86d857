/* verify_bench: the verification cache (core/verify_cache) on the RCPT
 * path: verify_key() + verify_cache_get() for addresses drawn at random
 * among the ones cached, with 1 and N threads (N = argv[2], default the
 * cores online), for a cache of argv[1] entries (default 1,000,000, full).
 * Also: the time to fill it, to dump it in record form and to load that
 * back (a restart). Prints ns per lookup and ms per step.
 * usage: verify_bench [ENTRIES] [THREADS] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/verify_cache.h"

#define OPS 2000000

static struct verify_cache *VC;
static unsigned N;
static volatile unsigned sink;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int addr_of(char *out, size_t n, unsigned i)
{
	return snprintf(out, n, "User.%u@Domain%u.Example.COM", i, i % 1000);
}

static void *run(void *arg)
{
	uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	char a[96], k[VERIFY_KEY_MAX + 1], text[VERIFY_TEXT_MAX + 1];
	unsigned hits = 0;

	for (int i = 0; i < OPS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int len = addr_of(a, sizeof(a), (unsigned)(x % N));
		size_t kl = verify_key(k, sizeof(k), a, (size_t)len);

		hits += verify_cache_get(VC, k, kl, 1000, false, text, sizeof(text)) != VERIFY_NONE;
	}
	sink += hits;
	return NULL;
}

/* The address formatting alone, to subtract. */
static void *run_fmt(void *arg)
{
	uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	char a[96];
	unsigned h = 0;

	for (int i = 0; i < OPS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		h += (unsigned)addr_of(a, sizeof(a), (unsigned)(x % N));
	}
	sink += h;
	return NULL;
}

static double one(unsigned nthreads, void *(*fn)(void *))
{
	pthread_t t[64];
	double t0 = now_s();

	for (unsigned i = 0; i < nthreads; i++)
		pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)(i + 1));
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	return (now_s() - t0) * 1e9 / OPS; /* ns per lookup, per thread */
}

int main(int argc, char **argv)
{
	unsigned threads =
	    argc > 2 ? (unsigned)atoi(argv[2]) : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	char a[96], k[VERIFY_KEY_MAX + 1];
	struct buf b = BUF_INIT;
	double t0;
	size_t used;

	N = argc > 1 ? (unsigned)atoi(argv[1]) : 1000000;
	if (threads < 1 || threads > 64)
		threads = 2;
	VC = verify_cache_new(N);
	t0 = now_s();
	for (unsigned i = 0; i < N; i++) {
		int len = addr_of(a, sizeof(a), i);
		size_t kl = verify_key(k, sizeof(k), a, (size_t)len);

		verify_cache_put(VC, k, kl, i % 10 ? VERIFY_OK : VERIFY_REJECT,
		                 i % 10 ? NULL
		                        : "550 5.1.1 <x>: Recipient address rejected: User unknown",
		                 2000000000, 1000, NULL);
	}
	printf("fill %u entries: %.0f ms (%zu held)\n", N, (now_s() - t0) * 1e3,
	       verify_cache_count(VC));
	verify_cache_journal_take(VC, &b);
	printf("journal: %.1f MB\n", (double)b.len / 1e6);
	buf_free(&b);
	t0 = now_s();
	verify_cache_dump(VC, &b, 1000);
	printf("dump (compaction): %.0f ms, %.1f MB\n", (now_s() - t0) * 1e3, (double)b.len / 1e6);
	struct verify_cache *back = verify_cache_new(N);
	t0 = now_s();
	size_t n = verify_cache_load(back, b.p, b.len, 1000, &used);
	printf("load back (restart): %.0f ms, %zu records\n", (now_s() - t0) * 1e3, n);
	verify_cache_free(back);
	buf_free(&b);
	double fmt1 = one(1, run_fmt);
	printf("lookup (key + get), 1 thread: %.0f ns (formatting the address: %.0f ns, "
	       "subtracted)\n",
	       one(1, run) - fmt1, fmt1);
	double fmtn = one(threads, run_fmt);
	printf("lookup, %u threads at once: %.0f ns per lookup per thread\n", threads,
	       one(threads, run) - fmtn);
	verify_cache_free(VC);
	return sink == 0xdeadbeef;
}
