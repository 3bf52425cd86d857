/* cluster_rate: keys, commands and verdicts of the cluster-wide rate
 * counters. See cluster_rate.h. */
#include "core/cluster_rate.h"

#include <arpa/inet.h>
#include <errno.h>
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

/* <v> in decimal at <p>; returns the digits written (at most 20). */
static size_t put_u64(char *p, uint64_t v)
{
	char t[20];
	size_t n = 0;

	do
		t[n++] = (char)('0' + v % 10);
	while ((v /= 10));
	for (size_t i = 0; i < n; i++)
		p[i] = t[n - 1 - i];
	return n;
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
	out[n++] = '/';
	n += put_u64(out + n, bits);
	out[n] = '\0';
	return (int)n;
}

/* An ask is on the path of every MAIL and RCPT: keys and commands are
 * put together by hand (printf would take most of the time it costs). */
int cluster_rate_key(enum cluster_rate_kind kind, const char *client, int64_t start_ms,
                     char out[CLUSTER_RATE_KEY_MAX])
{
	static const char pre[] = "ringmx:rate:";
	const char *kn = cluster_rate_kind_name(kind);
	size_t kl = strlen(kn), cl = strlen(client), n = 0;
	int64_t sec = start_ms / 1000;

	if (sizeof(pre) - 1 + kl + 1 + cl + 1 + 21 + 1 > CLUSTER_RATE_KEY_MAX)
		return -1;
	memcpy(out, pre, sizeof(pre) - 1);
	n = sizeof(pre) - 1;
	memcpy(out + n, kn, kl);
	n += kl;
	out[n++] = ':';
	memcpy(out + n, client, cl);
	n += cl;
	out[n++] = ':';
	if (sec < 0) {
		out[n++] = '-';
		sec = -sec;
	}
	n += put_u64(out + n, (uint64_t)sec);
	out[n] = '\0';
	return (int)n;
}

/* One command in RESP: *<argc> then $<len> <arg> for each. */
static int resp(struct buf *out, unsigned argc, const char *const *argv)
{
	size_t len[8], need = 16, n;
	char *p;
	int err;

	for (unsigned i = 0; i < argc; i++) {
		len[i] = strlen(argv[i]);
		need += 26 + len[i]; /* '$', 20 digits, 2 CRLFs, the argument */
	}
	err = buf_reserve(out, need);
	if (err)
		return err;
	p = out->p + out->len;
	n = 0;
	p[n++] = '*';
	n += put_u64(p + n, argc);
	p[n++] = '\r';
	p[n++] = '\n';
	for (unsigned i = 0; i < argc; i++) {
		p[n++] = '$';
		n += put_u64(p + n, len[i]);
		p[n++] = '\r';
		p[n++] = '\n';
		memcpy(p + n, argv[i], len[i]);
		n += len[i];
		p[n++] = '\r';
		p[n++] = '\n';
	}
	out->len += n;
	return 0;
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
	ttl[put_u64(ttl, 2 * (uint64_t)r->period_ms + CLUSTER_RATE_SLACK_MS)] = '\0';
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
