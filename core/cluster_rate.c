/* cluster_rate: keys, commands and verdicts of the cluster-wide rate
 * counters. See cluster_rate.h. */
#include "core/cluster_rate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const char *const kind_names[CLUSTER_RATE_N] = {"conn", "msg", "rcpt"};

void cluster_rate_window(const struct anvil_rate *r, int64_t now_ms, struct cluster_rate_win *w)
{
	int64_t p = r->period_ms ? (int64_t)r->period_ms : 1;
	int64_t win = now_ms / p;

	if (now_ms < 0 && now_ms % p)
		win--; /* floor, not truncation: a clock before 1970 still gets a window */
	w->start_ms = win * p;
	w->into_ms = now_ms - w->start_ms;
}

const char *cluster_rate_kind_name(enum cluster_rate_kind kind)
{
	return kind < CLUSTER_RATE_N ? kind_names[kind] : "?";
}

int cluster_rate_client(const struct anvil_key *k, unsigned prefix4, unsigned prefix6,
                        char out[CLUSTER_RATE_CLIENT_MAX])
{
	int af = k->b[0] == 4 ? AF_INET : k->b[0] == 6 ? AF_INET6 : 0;
	unsigned bits = af == AF_INET ? prefix4 : prefix6;
	size_t n;

	if (!af || !inet_ntop(af, k->b + 1, out, CLUSTER_RATE_CLIENT_MAX))
		return -1;
	if (bits > (af == AF_INET ? 32u : 128u))
		bits = af == AF_INET ? 32u : 128u;
	n = strlen(out);
	return n + snprintf(out + n, CLUSTER_RATE_CLIENT_MAX - n, "/%u", bits);
}

int cluster_rate_key(enum cluster_rate_kind kind, const char *client, int64_t start_ms,
                     char out[CLUSTER_RATE_KEY_MAX])
{
	int n = snprintf(out, CLUSTER_RATE_KEY_MAX, "ringmx:rate:%s:%s:%lld",
	                 cluster_rate_kind_name(kind), client, (long long)(start_ms / 1000));

	return n < 0 || n >= CLUSTER_RATE_KEY_MAX ? -1 : n;
}

/* One command in RESP: *<argc> then $<len> <arg> for each. */
static int resp(struct buf *out, unsigned argc, const char *const *argv)
{
	int err = buf_printf(out, "*%u\r\n", argc);

	for (unsigned i = 0; !err && i < argc; i++)
		err = buf_printf(out, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
	return err;
}

int cluster_rate_build(struct buf *out, enum cluster_rate_kind kind, const char *client,
                       const struct anvil_rate *r, int64_t now_ms, size_t end[CLUSTER_RATE_CMDS],
                       char key[CLUSTER_RATE_KEY_MAX], int64_t *into_ms)
{
	struct cluster_rate_win w;
	char prev[CLUSTER_RATE_KEY_MAX], ttl[24];
	size_t start = out->len;
	int err;

	cluster_rate_window(r, now_ms, &w);
	if (cluster_rate_key(kind, client, w.start_ms, key) < 0 ||
	    cluster_rate_key(kind, client, w.start_ms - r->period_ms, prev) < 0)
		return -EINVAL;
	snprintf(ttl, sizeof(ttl), "%lld",
	         2 * (long long)r->period_ms + (long long)CLUSTER_RATE_SLACK_MS);
	/* The key is made with its lifetime before it is counted, so that no
	 * counter is ever left without one (a connection cut between two
	 * commands leaves at most an empty key that expires), and without a
	 * MULTI that a cut could leave open. A key is made at its window's
	 * first event: it lives through the window and the next one. */
	err = resp(out, 6, (const char *const[]){"SET", key, "0", "PX", ttl, "NX"});
	end[0] = out->len;
	if (!err)
		err = resp(out, 2, (const char *const[]){"INCR", key});
	end[1] = out->len;
	if (!err)
		err = resp(out, 2, (const char *const[]){"GET", prev});
	end[2] = out->len;
	if (err) {
		out->len = start;
		return err;
	}
	*into_ms = w.into_ms;
	return 0;
}

int cluster_rate_undo(struct buf *out, const char *key)
{
	size_t start = out->len;
	int err = resp(out, 2, (const char *const[]){"DECR", key});

	if (err)
		out->len = start;
	return err;
}

bool cluster_rate_fits(const struct anvil_rate *r, int64_t into_ms, int64_t cur, int64_t prev)
{
	/* <cur> includes this event: the others are cur - 1. */
	return anvil_rate_fits(r, prev > 0 ? (uint64_t)prev : 0, cur > 1 ? (uint64_t)(cur - 1) : 0,
	                       into_ms);
}
