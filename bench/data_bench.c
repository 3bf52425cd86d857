/* data_bench: throughput of the DATA parser (core/smtp_data) on realistic
 * mail text (~70-octet lines, some dot-stuffed), fed in 4 KB and 64 KB
 * buffers, for each implementation, next to a memchr line scan and a memcpy
 * of the same bytes measured in the same run. Prints a markdown table of
 * median GB/s (10^9 bytes/s) over several repetitions; the figures go to
 * docs/benchmarks.md.
 *
 * usage: data_bench [-r REPS] [-t MS] [-s SIZE,...] [-b BUF,...] [-c NAME,...] [-M] [-n MSGS]
 *   -r  repetitions per cell, median reported (default 9)
 *   -n  no timing: feed exactly MSGS messages per cell and print no figures
 *       (for callgrind: instructions per message = cost / MSGS)
 *   -M  report the best repetition instead of the median (on a busy machine)
 *   -c  columns to run (default all): avx512,avx2,sse2,scalar,ref,memchr,memcpy
 *   -t  minimum time per repetition in ms (default 10)
 *   -s  message sizes in bytes (default 1024,65536,10485760)
 *   -b  buffer sizes in bytes (default 4096,65536) */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/smtp_data.h"

#define MAX_LIST 8

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* A message of exactly <size> octets (at least 5) as sent on the wire: header lines, a
 * blank line, body lines of 50-90 octets made of words, one line in 50
 * starting with a dot (stuffed to ".."), then CRLF "." CRLF. */
static char *gen_message(size_t size, size_t *len)
{
	static const char *const hdr = "From: <alice@example.org>\r\n"
	                               "To: <bob@example.net>\r\n"
	                               "Subject: quarterly figures\r\n"
	                               "Message-ID: <1234.5678@example.org>\r\n\r\n";
	char *p = malloc(size + 256);
	size_t i = 0, body = size - 5;

	if (!p)
		exit(1);
	for (const char *h = hdr; *h && i < body; h++)
		p[i++] = *h;
	while (i + 2 < body) {
		size_t n = 50 + rng() % 41, w = 0;

		if (rng() % 50 == 0) {
			p[i++] = '.';
			p[i++] = '.';
		}
		for (; n && i + 2 < body; n--) {
			if (w > 2 && rng() % 6 == 0) {
				p[i++] = ' ';
				w = 0;
			} else {
				p[i++] = (char)('a' + rng() % 26);
				w++;
			}
		}
		p[i++] = '\r';
		p[i++] = '\n';
	}
	while (i < body)
		p[i++] = 'x';
	memcpy(p + i, "\r\n.\r\n", 5);
	*len = i + 5;
	return p;
}

enum kind { K_PARSER, K_MEMCHR, K_MEMCPY };

struct cell {
	const char *name;
	enum kind kind;
	enum smtp_data_impl impl;
};

static volatile size_t sink;

/* Several distinct messages of one size, used in turn: repeating one small
 * message would let the branch predictors learn its line lengths, which
 * real traffic never allows. */
struct corpus {
	char *msg[256];
	size_t len[256];
	unsigned n, next;
};

/* Feeds the next message once, <bufsz> at a time. */
static size_t run_once(const struct cell *c, struct corpus *co, size_t bufsz, char *dst)
{
	const char *msg = co->msg[co->next];
	size_t len = co->len[co->next];

	struct iovec v[64];
	struct smtp_data d;
	size_t off, acc = 0;
	unsigned nv;

	switch (c->kind) {
	case K_PARSER:
		/* The production entry point, as a session calls it. */
		smtp_data_init(&d, 0, 1000, SMTP_DATA_BARE_REJECT, SMTP_DATA_LONG_ACCEPT);
		for (off = 0; off < len && !smtp_data_done(&d);) {
			size_t n = len - off < bufsz ? len - off : bufsz, k = 0;

			while (k < n && !smtp_data_done(&d)) {
				k += smtp_data_scan(&d, msg + off + k, n - k, v, 64, &nv);
				acc += nv;
			}
			off += n;
		}
		if (!smtp_data_done(&d) || (d.flags & ~SMTP_DATA_F_DONE)) {
			fprintf(stderr, "%s: parse failed (flags %#x)\n", c->name, d.flags);
			exit(1);
		}
		return acc + d.size;
	case K_MEMCHR:
		/* The classic line reader: memchr for LF, line by line. */
		for (off = 0; off < len; off += bufsz) {
			const char *p = msg + off, *e = p + (len - off < bufsz ? len - off : bufsz);

			while ((p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
				p++;
				acc++;
			}
		}
		return acc;
	case K_MEMCPY:
		for (off = 0; off < len; off += bufsz)
			memcpy(dst + off, msg + off, len - off < bufsz ? len - off : bufsz);
		return (size_t)dst[len - 1];
	}
	return 0;
}

static size_t run_next(const struct cell *c, struct corpus *co, size_t bufsz, char *dst)
{
	size_t r = run_once(c, co, bufsz, dst);

	co->next = co->next + 1 == co->n ? 0 : co->next + 1;
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median GB/s over <reps> repetitions of at least <min_s> seconds each. */
static double measure(const struct cell *c, struct corpus *co, size_t bufsz, char *dst, int reps,
                      double min_s, bool best)
{
	size_t len = co->len[0];

	double r[64], t0, t;
	size_t iters = 1;

	/* Calibrate (and warm the caches). */
	for (;;) {
		t0 = now();
		for (size_t i = 0; i < iters; i++)
			sink += run_next(c, co, bufsz, dst);
		t = now() - t0;
		if (t >= min_s / 4)
			break;
		iters *= 2;
	}
	iters = (size_t)((double)iters * min_s / t) + 1;
	for (int k = 0; k < reps; k++) {
		t0 = now();
		for (size_t i = 0; i < iters; i++)
			sink += run_next(c, co, bufsz, dst);
		t = now() - t0;
		r[k] = (double)len * (double)iters / t / 1e9;
	}
	qsort(r, (size_t)reps, sizeof(r[0]), cmp_double);
	return best ? r[reps - 1] : r[reps / 2];
}

static bool selected(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *s = list; s && *s; s = strchr(s, ',') ? strchr(s, ',') + 1 : NULL)
		if (!strncmp(s, name, n) && (s[n] == ',' || s[n] == '\0'))
			return true;
	return !list;
}

static int parse_list(const char *s, size_t *out)
{
	int n = 0;

	while (*s && n < MAX_LIST) {
		char *end;

		out[n++] = strtoull(s, &end, 0);
		if (*end != ',' && *end)
			return -EINVAL;
		s = *end ? end + 1 : end;
	}
	return n;
}

static const char *size_name(size_t n, char *buf, size_t len)
{
	if (n >= 1 << 20 && n % (1 << 20) == 0)
		snprintf(buf, len, "%zu MB", n >> 20);
	else if (n >= 1024 && n % 1024 == 0)
		snprintf(buf, len, "%zu KB", n >> 10);
	else
		snprintf(buf, len, "%zu B", n);
	return buf;
}

int main(int argc, char **argv)
{
	static const struct cell cells[] = {
	    {"avx512", K_PARSER, SMTP_DATA_IMPL_AVX512},
	    {"avx2", K_PARSER, SMTP_DATA_IMPL_AVX2},
	    {"sse2", K_PARSER, SMTP_DATA_IMPL_SSE2},
	    {"scalar", K_PARSER, SMTP_DATA_IMPL_SCALAR},
	    {"ref", K_PARSER, SMTP_DATA_IMPL_REF},
	    {"memchr", K_MEMCHR, 0},
	    {"memcpy", K_MEMCPY, 0},
	};
	size_t sizes[MAX_LIST] = {1024, 65536, 10485760}, bufs[MAX_LIST] = {4096, 65536};
	int nsizes = 3, nbufs = 2, reps = 9, opt;
	double min_s = 0.01;
	const char *only = NULL;
	bool best = false;
	long count = 0;
	char sn[32], bn[32];

	while ((opt = getopt(argc, argv, "r:t:s:b:c:Mn:")) != -1) {
		switch (opt) {
		case 'r':
			reps = atoi(optarg);
			if (reps < 1 || reps > 64)
				reps = 9;
			break;
		case 't':
			min_s = atof(optarg) / 1e3;
			break;
		case 's':
			nsizes = parse_list(optarg, sizes);
			break;
		case 'b':
			nbufs = parse_list(optarg, bufs);
			break;
		case 'c':
			only = optarg;
			break;
		case 'M':
			best = true;
			break;
		case 'n':
			count = atol(optarg);
			break;
		default:
			fprintf(stderr,
			        "usage: %s [-r REPS] [-t MS] [-s SIZE,...] [-b BUF,...] [-c "
			        "NAME,...] [-M] [-n MSGS]\n",
			        argv[0]);
			return 2;
		}
	}
	if (nsizes <= 0 || nbufs <= 0)
		return 2;
	printf("auto = %s; %s of %d runs of >= %.0f ms; GB/s = 10^9 B/s\n\n",
	       smtp_data_impl_name(SMTP_DATA_IMPL_AUTO), best ? "best" : "median", reps,
	       min_s * 1e3);
	printf("| message | buffer |");
	for (size_t k = 0; k < sizeof(cells) / sizeof(cells[0]); k++)
		if (selected(only, cells[k].name) &&
		    (cells[k].kind != K_PARSER || smtp_data_impl_supported(cells[k].impl)))
			printf(" %s |", cells[k].name);
	printf(" avx2 / memchr |\n|---|---|");
	for (size_t k = 0; k < sizeof(cells) / sizeof(cells[0]); k++)
		if (selected(only, cells[k].name) &&
		    (cells[k].kind != K_PARSER || smtp_data_impl_supported(cells[k].impl)))
			printf("---|");
	printf("---|\n");
	for (int si = 0; si < nsizes; si++) {
		struct corpus co = {.n = 1};
		char *dst;

		/* 256 KB of distinct messages: they stay in L2 (the hot case). */
		if (sizes[si] < (256 << 10))
			co.n = (unsigned)((256 << 10) / sizes[si]);
		if (co.n > 256)
			co.n = 256;
		for (unsigned k = 0; k < co.n; k++)
			co.msg[k] = gen_message(sizes[si], &co.len[k]);
		dst = malloc(co.len[0] + 256);
		if (!dst)
			return 1;
		memset(dst, 0, co.len[0] + 256);
		for (int bi = 0; bi < nbufs; bi++) {
			double avx2 = 0, mc = 0;

			printf("| %s | %s |", size_name(sizes[si], sn, sizeof(sn)),
			       size_name(bufs[bi], bn, sizeof(bn)));
			for (size_t k = 0; k < sizeof(cells) / sizeof(cells[0]); k++) {
				const struct cell *c = &cells[k];
				double g;

				if (!selected(only, c->name) ||
				    (c->kind == K_PARSER && smtp_data_set_impl(c->impl)))
					continue;
				if (count > 0) {
					for (long i = 0; i < count; i++)
						sink += run_next(c, &co, bufs[bi], dst);
					printf(" %ld msgs |", count);
					continue;
				}
				g = measure(c, &co, bufs[bi], dst, reps, min_s, best);
				if (c->kind == K_PARSER && c->impl == SMTP_DATA_IMPL_AVX2)
					avx2 = g;
				if (c->kind == K_MEMCHR)
					mc = g;
				printf(" %.2f |", g);
				fflush(stdout);
			}
			printf(" %.2fx |\n", mc > 0 ? avx2 / mc : 0);
		}
		free(dst);
		for (unsigned k = 0; k < co.n; k++)
			free(co.msg[k]);
	}
	return 0;
}
