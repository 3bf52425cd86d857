/* cluster_rate: the sans-I/O half of the cluster-wide rate counters
 * (--limits-redis): the Redis key of a client's rate window, the commands
 * that count one event in it, and the verdict from the counts Redis
 * answers. io/cluster sends the commands over hiredis on the worker's ring.
 * libc only: the caller passes the (wall-clock) time.
 *
 * Keys: "ringmx:rate:<kind>:<client>:<window-start>", <kind> conn, msg or
 * rcpt, <client> the anvil key as text with its prefix ("192.0.2.7/32",
 * "2001:db8:1:2::/64"), <window-start> the first second of the fixed
 * window (Unix time, a multiple of the period). Each key lives two
 * periods and a little more from its first count (made with SET NX PX),
 * so that it still serves as the previous window through the whole next
 * one; the sliding estimate is anvil's (anvil_rate_fits()). */
#ifndef RINGMX_CORE_CLUSTER_RATE_H
#define RINGMX_CORE_CLUSTER_RATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/anvil.h"
#include "core/buf.h"

enum cluster_rate_kind {
	CLUSTER_RATE_CONN = 0, /* --client-connection-rate */
	CLUSTER_RATE_MSG,      /* --client-message-rate */
	CLUSTER_RATE_RCPT,     /* --client-recipient-rate */
	CLUSTER_RATE_N,
};

#define CLUSTER_RATE_CLIENT_MAX 48   /* an IPv6 address, "/128" and the NUL */
#define CLUSTER_RATE_KEY_MAX    96   /* "ringmx:rate:rcpt:" client ":" 20 digits, NUL */
#define CLUSTER_RATE_SLACK_MS   5000 /* kept past two periods: clocks of gateways differ */
#define CLUSTER_RATE_CMDS       3    /* SET NX, INCR, GET */

/* The fixed window of <r> that <now_ms> (ms since the epoch: the gateways
 * of a cluster must agree on the time, as NTP keeps them) falls in. */
struct cluster_rate_win {
	int64_t start_ms; /* its first ms: a multiple of the period */
	int64_t into_ms;  /* ms since then, < the period */
};
void cluster_rate_window(const struct anvil_rate *r, int64_t now_ms, struct cluster_rate_win *w);

/* "conn", "msg", "rcpt". */
const char *cluster_rate_kind_name(enum cluster_rate_kind kind);

/* <k> as text into <out> (CLUSTER_RATE_CLIENT_MAX bytes): its address (host
 * bits already zero) and the prefix of its family. Returns the length, or
 * -1 for a key of neither family. */
int cluster_rate_client(const struct anvil_key *k, unsigned prefix4, unsigned prefix6,
                        char out[CLUSTER_RATE_CLIENT_MAX]);

/* The key of <kind> for <client> in the window that starts at <start_ms>,
 * into <out> (CLUSTER_RATE_KEY_MAX bytes). Returns its length, or -1 when
 * it would not fit. */
int cluster_rate_key(enum cluster_rate_kind kind, const char *client, int64_t start_ms,
                     char out[CLUSTER_RATE_KEY_MAX]);

/* Appends to <out>, in RESP, the commands that count one event of <kind>
 * for <client> at <now_ms> against <r> (n > 0): SET of the current
 * window's key to 0 with a lifetime of 2 periods + CLUSTER_RATE_SLACK_MS
 * if it does not exist (NX), INCR of it, GET of the previous window's
 * key. <end>[i] is where command i ends in <out> (hiredis takes one
 * command per callback); the current window's key goes to <key> (for
 * cluster_rate_undo()), its place in the window to *<into_ms>. Returns 0,
 * -ENOMEM, or -EINVAL for a key that does not fit. */
int cluster_rate_build(struct buf *out, enum cluster_rate_kind kind, const char *client,
                       const struct anvil_rate *r, int64_t now_ms, size_t end[CLUSTER_RATE_CMDS],
                       char key[CLUSTER_RATE_KEY_MAX], int64_t *into_ms);

/* Appends "DECR <key>": an event that was counted but refused is taken
 * back, as the local table never counts a refused one. Returns 0 or
 * -ENOMEM. */
int cluster_rate_undo(struct buf *out, const char *key);

/* The verdict from the answers: <cur> the current window's count after
 * the INCR (this event included), <prev> the previous window's (0 when the
 * key is gone), <into_ms> from cluster_rate_build(). True: it fits. */
bool cluster_rate_fits(const struct anvil_rate *r, int64_t into_ms, int64_t cur, int64_t prev);

#endif
