/* recipients_bench: the cost of the recipient tables (core/recipients) at
 * the size of a large site. Writes a table of N lines (default 1,000,000)
 * into a temporary directory, like an operator's export: mixed-case
 * addresses, 100 users a domain, one line in ten with a TAB comment, a few
 * comment lines. Then times the load (add_file + build, median of -r runs)
 * and the lookups, in a random order over the whole table so that the
 * indexes are not in cache (the case at RCPT TO):
 *
 *   hit        user@domain, listed (the query in lower case)
 *   miss       an unlisted user at a domain with a table
 *   ext hit    user+tag@domain: the full address misses, the base hits
 *   ext miss   unlisted+tag@domain: three probes' worth of work
 *   no table   a domain no table names
 *
 * Prints a markdown table of ns/lookup (median of -r runs of Q lookups),
 * back to back and one at a time (each lookup's query depends on the
 * answer before: the latency a session sees), and the load figures; they
 * go to docs/benchmarks.md. The last column is
 * the machine's own price of one random memory access (a pointer chase
 * over 32 MB, about the snapshot's size) measured in the same run: a hit
 * costs two dependent accesses (index slot, then record), a miss one, and
 * on a shared VM that price moves from one minute to the next.
 *
 * usage: recipients_bench [-n ENTRIES] [-q QUERIES] [-r REPS] [-k]
 *   -n  lines in the table (default 1000000)
 *   -q  lookups per run and kind (default 1000000)
 *   -r  repetitions, median reported (default 5)
 *   -k  keep the table file (its path is printed) */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/recipients.h"

#define USERS_PER_DOMAIN 100u

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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Entry <i>: "First.Last<i>" at "Dom<i / 100>.Example". */
static int write_table(const char *path, unsigned long n, size_t *bytes)
{
	FILE *f = fopen(path, "we");
	struct stat st;

	if (!f)
		return -errno;
	fprintf(f, "# recipients exported for the benchmark\n#\n");
	for (unsigned long i = 0; i < n; i++) {
		fprintf(f, "First.Last%lu@Dom%lu.Example", i, i / USERS_PER_DOMAIN);
		if (i % 10 == 0)
			fprintf(f, "\tuid %lu, a comment", i);
		fputc('\n', f);
	}
	if (fclose(f) != 0)
		return -errno;
	if (stat(path, &st) != 0)
		return -errno;
	*bytes = (size_t)st.st_size;
	return 0;
}

/* ns per dependent random access over <mb> MB: Sattolo's single cycle of
 * 64-octet cells, walked <steps> times. */
static double chase(size_t mb, size_t steps)
{
	size_t n = (mb << 20) / 64, *cell = malloc(n * 64), j = 0;
	double t0, t;

	if (!cell) {
		fprintf(stderr, "recipients_bench: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		cell[i * 8] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t k = (size_t)(rng() % i), x = cell[i * 8];

		cell[i * 8] = cell[k * 8];
		cell[k * 8] = x;
	}
	t0 = now();
	for (size_t i = 0; i < steps; i++)
		j = cell[j * 8];
	t = now() - t0;
	free(cell);
	if (j == SIZE_MAX)
		printf("\n"); /* keeps the walk */
	return t * 1e9 / (double)steps;
}

struct queries {
	char *text; /* local parts and domains back to back */
	struct sv *local, *domain;
	size_t n;
	enum recipients_result want;
};

enum kind { K_HIT, K_MISS, K_EXT_HIT, K_EXT_MISS, K_NO_TABLE, K_N };

static const char *const kind_name[K_N] = {"hit", "miss", "ext hit", "ext miss", "no table"};

static void make_queries(struct queries *q, enum kind k, unsigned long n, size_t count)
{
	size_t cap = count * 64, len = 0;
	char *p;

	q->text = malloc(cap);
	q->local = malloc(count * sizeof(*q->local));
	q->domain = malloc(count * sizeof(*q->domain));
	if (!q->text || !q->local || !q->domain) {
		fprintf(stderr, "recipients_bench: out of memory\n");
		exit(1);
	}
	q->n = count;
	q->want = k == K_HIT || k == K_EXT_HIT ? RECIPIENTS_KNOWN
	          : k == K_NO_TABLE            ? RECIPIENTS_NO_TABLE
	                                       : RECIPIENTS_UNKNOWN;
	/* 64 octets a query hold the longest; <text> never moves. */
	for (size_t j = 0; j < count; j++) {
		unsigned long i = rng() % n, dom = i / USERS_PER_DOMAIN;
		size_t ll, dl;
		int w;

		p = q->text + len;
		switch (k) {
		case K_HIT:
			w = sprintf(p, "first.last%lu", i);
			break;
		case K_MISS:
			w = sprintf(p, "first.last%lu", i + n);
			break;
		case K_EXT_HIT:
			w = sprintf(p, "first.last%lu+news", i);
			break;
		case K_EXT_MISS:
			w = sprintf(p, "first.last%lu+news", i + n);
			break;
		default:
			w = sprintf(p, "first.last%lu", i);
			break;
		}
		ll = (size_t)w;
		if (k == K_NO_TABLE)
			w = sprintf(p + ll, "dom%lu.example.net", dom);
		else
			w = sprintf(p + ll, "dom%lu.example", dom);
		dl = (size_t)w;
		q->local[j] = sv_make(p, ll);
		q->domain[j] = sv_make(p + ll, dl);
		len += ll + dl;
	}
}

static void free_queries(struct queries *q)
{
	free(q->text);
	free(q->local);
	free(q->domain);
}

/* Runs the lookups of <q>; returns ns/lookup, or exits on a wrong answer.
 * Back to back, the CPU overlaps one lookup's cache misses with the next
 * one's; <chained>, each query's index depends on the previous answer, so
 * that each lookup waits for the one before, as a session's RCPT does. */
static double run_queries(const struct recipients *r, const struct queries *q, const char *name,
                          bool chained)
{
	size_t right = 0, j = 0;
	double t0 = now(), t;

	if (chained) {
		for (size_t i = 0; i < q->n; i++) {
			enum recipients_result x = recipients_lookup(r, q->local[j], q->domain[j]);

			right += x == q->want;
			j = (j + 1 + ((unsigned)x >> 8)) % q->n; /* (x >> 8) == 0 */
		}
	} else {
		for (j = 0; j < q->n; j++)
			right += recipients_lookup(r, q->local[j], q->domain[j]) == q->want;
	}
	t = now() - t0;
	if (right != q->n) {
		fprintf(stderr, "recipients_bench: %s: %zu of %zu lookups wrong\n", name,
		        q->n - right, q->n);
		exit(1);
	}
	return t * 1e9 / (double)q->n;
}

int main(int argc, char **argv)
{
	unsigned long n = 1000000;
	size_t nq = 1000000, bytes = 0;
	unsigned reps = 5;
	bool keep = false;
	char dir[] = "/tmp/recipients_bench.XXXXXX", path[sizeof(dir) + 16], err[512];
	double load[64], ns[K_N][64], lat[K_N][64], mem[64], t0;
	struct queries q[K_N];
	struct recipients *r = NULL;
	struct rusage ru;
	int opt, rc;

	while ((opt = getopt(argc, argv, "n:q:r:k")) != -1) {
		switch (opt) {
		case 'n':
			n = strtoul(optarg, NULL, 10);
			break;
		case 'q':
			nq = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			reps = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'k':
			keep = true;
			break;
		default:
			fprintf(stderr, "usage: %s [-n ENTRIES] [-q QUERIES] [-r REPS] [-k]\n",
			        argv[0]);
			return 2;
		}
	}
	if (n < USERS_PER_DOMAIN || nq == 0 || reps == 0 || reps > 64) {
		fprintf(stderr, "recipients_bench: want -n >= %u, -q >= 1, 1 <= -r <= 64\n",
		        USERS_PER_DOMAIN);
		return 2;
	}
	if (!mkdtemp(dir)) {
		perror("recipients_bench: mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/users", dir);
	t0 = now();
	rc = write_table(path, n, &bytes);
	if (rc < 0) {
		fprintf(stderr, "recipients_bench: %s: %s\n", path, strerror(-rc));
		return 1;
	}
	printf("table: %lu lines, %.1f MB, written in %.0f ms (%s)\n", n, (double)bytes / 1e6,
	       (now() - t0) * 1e3, path);

	for (unsigned i = 0; i < reps; i++) {
		struct recipients_builder b;

		recipients_unref(r);
		t0 = now();
		recipients_builder_init(&b, NULL);
		if (recipients_builder_add_file(&b, path, err, sizeof(err)) < 0 ||
		    !(r = recipients_build(&b, err, sizeof(err)))) {
			fprintf(stderr, "recipients_bench: %s\n", err);
			return 1;
		}
		recipients_builder_fini(&b);
		load[i] = now() - t0;
	}
	getrusage(RUSAGE_SELF, &ru);
	printf("load: %.0f ms median of %u (%.0f ns/line): %zu entries, %zu domains, "
	       "%.1f MB (%.0f octets an entry); max RSS %ld MB\n\n",
	       median(load, reps) * 1e3, reps, median(load, reps) * 1e9 / (double)n,
	       recipients_entries(r), recipients_domains(r), (double)recipients_memory(r) / 1e6,
	       (double)recipients_memory(r) / (double)recipients_entries(r), ru.ru_maxrss / 1024);

	for (int k = 0; k < K_N; k++)
		make_queries(&q[k], (enum kind)k, n, nq);
	for (unsigned i = 0; i < reps; i++) {
		for (int k = 0; k < K_N; k++)
			ns[k][i] = run_queries(r, &q[k], kind_name[k], false);
		for (int k = 0; k < K_N; k++)
			lat[k][i] = run_queries(r, &q[k], kind_name[k], true);
		mem[i] = chase(32, nq);
	}
	printf("| lookups (%zu, random order) |", nq);
	for (int k = 0; k < K_N; k++)
		printf(" %s |", kind_name[k]);
	printf(" memory access (ref) |\n|---|");
	for (int k = 0; k <= K_N; k++)
		printf("---:|");
	printf("\n| ns/lookup, back to back |");
	for (int k = 0; k < K_N; k++)
		printf(" %.0f |", median(ns[k], reps));
	printf(" |\n| ns/lookup, one at a time |");
	for (int k = 0; k < K_N; k++)
		printf(" %.0f |", median(lat[k], reps));
	printf(" %.0f |\n\nmedians of %u runs\n", median(mem, reps), reps);

	for (int k = 0; k < K_N; k++)
		free_queries(&q[k]);
	recipients_unref(r);
	if (keep) {
		printf("kept %s\n", path);
	} else {
		unlink(path);
		rmdir(dir);
	}
	return 0;
}
