/* anvil_bench: the per-client table (core/anvil) on the accept path: each
 * thread does anvil_connect() + anvil_disconnect() (and, with rates on,
 * anvil_message()) for clients drawn at random among 10,000, and the run
 * prints ns per operation with 1, 2 and N threads (N = argv[1], default
 * the cores online). A lookup costs one shard lock and one or two cache
 * misses; the figure to watch is how it holds as threads are added.
 * usage: anvil_bench [THREADS] */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/anvil.h"

#define CLIENTS 10000
#define OPS     2000000

static struct anvil *A;
static struct anvil_key keys[CLIENTS];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
	uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;

	for (int i = 0; i < OPS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		const struct anvil_key *k = &keys[x % CLIENTS];

		if (anvil_connect(A, k, 1000000 + i / 1000) == ANVIL_OK) {
			anvil_message(A, k, 1000000 + i / 1000);
			anvil_disconnect(A, k, 1000000 + i / 1000);
		}
	}
	return NULL;
}

static double one(unsigned nthreads)
{
	pthread_t t[256];
	double t0 = now_s();

	for (unsigned i = 0; i < nthreads; i++)
		pthread_create(&t[i], NULL, run, (void *)(uintptr_t)(i + 1));
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	/* Wall time per operation per thread: three calls an operation. */
	return (now_s() - t0) * 1e9 / OPS;
}

int main(int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : (unsigned)(ncpu > 0 ? ncpu : 2);
	struct anvil_conf c = {.prefix4 = 32,
	                       .prefix6 = 64,
	                       .max_sessions = 50,
	                       .msg = {1000000, 60000},
	                       .max_entries = 50000};
	unsigned counts[3] = {1, 2, n};

	if (n < 1 || n > 256)
		n = 2;
	A = anvil_new(&c);
	if (!A)
		return 1;
	for (unsigned i = 0; i < CLIENTS; i++) {
		struct sockaddr_in sin = {.sin_family = AF_INET};

		sin.sin_addr.s_addr = htonl(0xc0000000u + i * 7919u);
		anvil_key_of(A, (struct sockaddr *)&sin, &keys[i]);
	}
	printf("anvil_bench: %d clients, %d operations a thread (connect + message + "
	       "disconnect), %u shards\n",
	       CLIENTS, OPS, anvil_shards(A));
	for (unsigned i = 0; i < 3; i++) {
		if (i == 2 && (n == 1 || n == 2))
			break;
		printf("%3u thread(s): %6.1f ns per operation (each thread)\n", counts[i],
		       one(counts[i]));
	}
	anvil_free(A);
	return 0;
}
