/* delivery_bench: the work of one dispatch round in the relay when many
 * jobs wait behind a route that is down (its connections are still
 * connecting, or failing one after another), before and after the
 * per-route counts and connection lists. Each message queued calls the
 * relay's dispatcher (io/relay.c conn_kick) for its route, which asks how
 * many jobs wait there and how many of the route's connections are idle.
 *
 *   before: the dispatcher walked the route's whole job queue to count it,
 *           then every connection of every route, picking the route's;
 *   after:  delivery_waiting() (a counter) and the route's own connection
 *           list (at most --relay-pool entries).
 *
 * Both dispatchers run here over the real queue/delivery queues with the
 * same connection layout (<routes> x <pool> connections, all connecting:
 * none idle-free); only the counting differs, as in the relay. Prints a
 * markdown table: per dispatch, the nodes visited (jobs + connections)
 * and the time, measured over the last 1,000 dispatches, when about N jobs
 * already wait; and the wall time to queue all N.
 *
 * usage: delivery_bench [-p POOL] [-r ROUTES] [N...]
 *   -p  connections per route (default 4, --relay-pool's default)
 *   -r  routes (default 8); every message goes to route 0
 *   N   jobs queued behind route 0 (default 1000 5000 20000) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "queue/delivery.h"

#define TAIL 1000u /* dispatches measured at the end */

static volatile unsigned sink; /* keeps the dispatchers' result live */

/* An emulated relay connection: only what the dispatcher reads. */
struct bconn {
	unsigned route;
	bool busy; /* has a job, is closing or quitting */
	struct bconn *next, *route_next;
};

struct bench {
	struct delivery_queue q;
	struct bconn *conns;        /* every route's, one list */
	struct bconn **route_conns; /* [routes] */
	uint64_t visits;
	unsigned opened; /* what the dispatcher would open: keeps the result live */
	unsigned pool;
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* io/relay.c conn_kick before: count the queue, scan every connection. */
static void kick_before(void *arg, unsigned route)
{
	struct bench *b = arg;
	unsigned waiting = 0, nconns = 0;

	for (const struct delivery_job *j = b->q.routes[route].head; j; j = j->next, b->visits++)
		waiting++;
	for (const struct bconn *c = b->conns; c && waiting; c = c->next, b->visits++) {
		if (c->route != route)
			continue;
		nconns++;
		if (!c->busy)
			waiting--;
	}
	b->opened += waiting && nconns < b->pool;
}

/* conn_kick after: the counter, then the route's own connections. */
static void kick_after(void *arg, unsigned route)
{
	struct bench *b = arg;
	unsigned waiting = delivery_waiting(&b->q, route), nconns = 0;

	b->visits++;
	for (const struct bconn *c = b->route_conns[route]; c && waiting;
	     c = c->route_next, b->visits++) {
		nconns++;
		if (!c->busy)
			waiting--;
	}
	b->opened += waiting && nconns < b->pool;
}

struct result {
	double visits, ns, total_ms;
};

static struct result run(unsigned n, unsigned routes, unsigned pool, delivery_kick_fn *kick)
{
	static const char *addr = "rcpt@down.example";
	struct bench b = {.pool = pool};
	struct delivery_msg *m = calloc(n, sizeof(*m));
	struct bconn *conns = calloc((size_t)routes * pool, sizeof(*conns));
	struct result res = {0};
	double t0, tail0 = 0;
	uint64_t v0 = 0;

	b.route_conns = calloc(routes, sizeof(*b.route_conns));
	if (!m || !conns || !b.route_conns || delivery_queue_init(&b.q, routes)) {
		fprintf(stderr, "delivery_bench: out of memory\n");
		exit(1);
	}
	/* connections created route after route, as the relay would */
	for (unsigned i = 0; i < routes * pool; i++) {
		conns[i].route = i / pool;
		conns[i].next = b.conns;
		b.conns = &conns[i];
		conns[i].route_next = b.route_conns[conns[i].route];
		b.route_conns[conns[i].route] = &conns[i];
	}
	for (unsigned i = 0; i < n; i++) {
		if (delivery_msg_init(&m[i], 1)) {
			fprintf(stderr, "delivery_bench: out of memory\n");
			exit(1);
		}
		m[i].from = "s@example.org";
		m[i].rcpt[0].addr = addr;
	}
	t0 = now_ns();
	for (unsigned i = 0; i < n; i++) {
		if (i == n - TAIL) {
			tail0 = now_ns();
			v0 = b.visits;
		}
		delivery_dispatch(&b.q, &m[i], kick, &b);
	}
	res.ns = (now_ns() - tail0) / TAIL;
	res.total_ms = (now_ns() - t0) / 1e6;
	res.visits = (double)(b.visits - v0) / TAIL;
	sink += b.opened;
	delivery_queue_fini(&b.q);
	for (unsigned i = 0; i < n; i++)
		delivery_msg_fini(&m[i]);
	free(m);
	free(conns);
	free(b.route_conns);
	return res;
}

int main(int argc, char **argv)
{
	static const unsigned dflt[] = {1000, 5000, 20000};
	unsigned routes = 8, pool = 4;
	int opt;

	while ((opt = getopt(argc, argv, "p:r:")) != -1) {
		switch (opt) {
		case 'p':
			pool = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'r':
			routes = (unsigned)strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: delivery_bench [-p POOL] [-r ROUTES] [N...]\n");
			return 2;
		}
	}
	if (!routes || !pool) {
		fprintf(stderr, "delivery_bench: -p and -r must be >= 1\n");
		return 2;
	}
	printf("%u routes x %u connections; N jobs behind route 0, which is down\n\n", routes,
	       pool);
	printf("| N jobs | before: visits/dispatch | before: ns/dispatch | before: queue all, ms "
	       "| after: visits/dispatch | after: ns/dispatch | after: queue all, ms |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = optind; i < argc || (optind == argc && i - optind < 3); i++) {
		unsigned n =
		    optind < argc ? (unsigned)strtoul(argv[i], NULL, 10) : dflt[i - optind];
		struct result bf, af;

		if (n < TAIL)
			n = TAIL;
		bf = run(n, routes, pool, kick_before);
		af = run(n, routes, pool, kick_after);
		printf("| %u | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f |\n", n, bf.visits, bf.ns,
		       bf.total_ms, af.visits, af.ns, af.total_ms);
	}
	return 0;
}
