/* anvil: per-client limits shared by every worker (Postfix's anvil(8), in
 * process): concurrent sessions and connection, message and recipient
 * rates, keyed by the client's IPv4 address or IPv6 prefix. One table for
 * the gateway, cut into shards each behind its own spinlock (held for a
 * few dozen instructions), so that no lookup takes a global lock. Entries
 * are bounded (a full shard evicts its stalest idle entry, and refuses
 * nobody when none is idle) and expire once idle (anvil_sweep()). libc
 * only: no clocks (the caller passes the time), no threads of its own. */
#ifndef RINGMX_CORE_ANVIL_H
#define RINGMX_CORE_ANVIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "N/PERIOD": at most <n> in any <period_ms> (a sliding window estimated
 * from two fixed ones, as nginx and Cloudflare count); n == 0: no limit. */
struct anvil_rate {
	uint32_t n;
	uint32_t period_ms;
};

struct anvil_conf {
	unsigned prefix4, prefix6; /* key bits of an IPv4 / IPv6 address (32, 64) */
	unsigned max_sessions;     /* concurrent sessions per key; 0: no limit */
	struct anvil_rate conn, msg, rcpt;
	size_t max_entries; /* clients tracked at once (rounded to the shards) */
};

/* A client's key: its address cut to the prefix. */
struct anvil_key {
	uint8_t b[17]; /* [0]: 4 or 6, then the address, host bits zero */
};

enum anvil_verdict {
	ANVIL_OK = 0,
	ANVIL_SESSIONS, /* as many sessions open as max_sessions */
	ANVIL_RATE,     /* over the rate */
};

struct anvil;

/* Whether one more fits rate <r> <into_ms> into its current fixed window,
 * with <prev> counted in the window before and <cur> in this one: the
 * sliding-window estimate, prev x (period - into) / period + cur, is under
 * n. True when <r> is off. The local table and the cluster's counters
 * (core/cluster_rate) decide with it. */
bool anvil_rate_fits(const struct anvil_rate *r, uint64_t prev, uint64_t cur, int64_t into_ms);

/* Parses "N/PERIOD" (PERIOD: a number with s, m, h or d; "60/1m",
 * "1000/1h") into <r>. Returns 0 or -1. */
int anvil_rate_parse(const char *s, struct anvil_rate *r);

/* A table for <c> (copied), or NULL without memory. Main thread. */
struct anvil *anvil_new(const struct anvil_conf *c);
void anvil_free(struct anvil *a);
/* New limits (max_sessions and the rates of <c>; its prefixes and size
 * stay the table's): a reload. Counts and windows are kept; a window whose
 * period changed starts again. Main thread, while any thread counts. */
void anvil_set_limits(struct anvil *a, const struct anvil_conf *c);

/* The key of address <sa> (AF_INET, AF_INET6; an IPv4-mapped IPv6 address
 * counts as IPv4). Returns 0, or -1 for another family. Any thread. */
int anvil_key_of(const struct anvil *a, const struct sockaddr *sa, struct anvil_key *k);

/* A new session of <k> at <now_ms>: counted and ANVIL_OK, or refused
 * (ANVIL_SESSIONS, ANVIL_RATE: not counted). Any thread. */
enum anvil_verdict anvil_connect(struct anvil *a, const struct anvil_key *k, int64_t now_ms);
/* The same without the connection rate (another counter decides it:
 * io/cluster): only the session limit, and the session counted. */
enum anvil_verdict anvil_connect_sessions(struct anvil *a, const struct anvil_key *k,
                                          int64_t now_ms);
/* One connection of <k> against the connection rate alone: counted and
 * true, or false when over it (not counted). Any thread. */
bool anvil_connection(struct anvil *a, const struct anvil_key *k, int64_t now_ms);
/* A session of <k> that anvil_connect() counted has ended. */
void anvil_disconnect(struct anvil *a, const struct anvil_key *k, int64_t now_ms);
/* A message (MAIL) / a recipient (RCPT) of <k>: counted and true, or false
 * when over the rate (not counted). Any thread. */
bool anvil_message(struct anvil *a, const struct anvil_key *k, int64_t now_ms);
bool anvil_recipient(struct anvil *a, const struct anvil_key *k, int64_t now_ms);

/* Drops the entries of shards [<from>, <from> + <n>) (modulo the count)
 * with no session open and no rate window still running. Returns how
 * many went. Any thread (the workers share the shards out). */
size_t anvil_sweep(struct anvil *a, unsigned from, unsigned n, int64_t now_ms);
unsigned anvil_shards(const struct anvil *a);
/* Entries in use, and the bytes the table takes. Any thread (racy counts). */
size_t anvil_entries(const struct anvil *a);
size_t anvil_memory(const struct anvil *a);

#endif
