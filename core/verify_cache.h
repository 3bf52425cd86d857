/* verify_cache: what next hops said about recipient addresses
 * (--verify-recipients, io/verify), shared by every worker. One table for
 * the gateway, bounded (--verify-cache-size entries, CLOCK eviction: a
 * hit sets a bit, the hand clears it and takes the first entry it finds
 * clear or expired), split in shards, each behind its own mutex: a probe
 * is rare next to a lookup, and a lookup holds the lock of one shard for
 * one hash chain walk. Entries:
 *   OK      the next hop took the address (2xx), for --verify-positive-ttl
 *   REJECT  it refused it (5xx), with its text, for --verify-negative-ttl
 *   TEMP    it could not say (4xx, down, timeout): not cached, only kept
 *           a few seconds for the RCPTs that waited on that probe
 *   PENDING a probe is in flight (its worker owns it), until a deadline;
 *           other workers that want the address note themselves in it and
 *           are woken when the result is put (coalescing across workers)
 * Times are wall-clock seconds (the results outlive a restart: the
 * persisted form is a log of records, verify_rec_*, which io/verify_store
 * writes off the hot path and reads back at start). libc only; any thread. */
#ifndef RINGMX_CORE_VERIFY_CACHE_H
#define RINGMX_CORE_VERIFY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"

#define VERIFY_KEY_MAX     512 /* address octets (the path has at most 256) */
#define VERIFY_TEXT_MAX    200 /* a next hop's reply kept for a rejection */
#define VERIFY_WORKERS     256 /* workers that can wait on a probe (conf's --threads max) */
#define VERIFY_WMASK_WORDS (VERIFY_WORKERS / 64)

enum verify_result {
	VERIFY_NONE = 0, /* nothing known: probe it */
	VERIFY_OK,       /* 2xx */
	VERIFY_REJECT,   /* 5xx */
	VERIFY_TEMP,     /* 4xx, timeout, next hop down */
	VERIFY_PENDING,  /* a probe is in flight */
};

struct verify_cache;

/* A cache of at most <max_entries> (>= 1) entries; NULL when out of
 * memory. Buckets are allocated now, entries as they come. */
struct verify_cache *verify_cache_new(size_t max_entries);
void verify_cache_free(struct verify_cache *vc);

/* The cache key of <addr> (<len> octets, no angle brackets): the domain
 * after the last '@' lower-cased (ASCII), the local part as written (only
 * the next hop knows whether its case matters). Returns its length, or 0
 * when it does not fit in <outlen> (no key: do not cache). */
size_t verify_key(char *out, size_t outlen, const char *addr, size_t len);

/* What is known of <key> at <now>: OK or REJECT while fresh; TEMP only
 * with <temp_ok> (a waiter of that probe); PENDING while its probe's
 * deadline is ahead; else NONE. For REJECT and TEMP the next hop's text
 * goes to <text> (NUL-terminated, truncated to <tlen>; may be NULL). A
 * hit marks the entry recently used. */
enum verify_result verify_cache_get(struct verify_cache *vc, const char *key, size_t klen,
                                    int64_t now, bool temp_ok, char *text, size_t tlen);

/* As verify_cache_get() (no TEMP), in one step with the claim: NONE means
 * "probe it": the entry is PENDING for the caller (worker <wid>) until
 * <pend_until>; PENDING means another probe is in flight and <wid> is
 * noted, to be woken by its verify_cache_put(). Out of room (every entry
 * PENDING) or memory: NONE without a claim, and the caller probes alone. */
enum verify_result verify_cache_claim(struct verify_cache *vc, const char *key, size_t klen,
                                      int64_t now, int64_t pend_until, unsigned wid, char *text,
                                      size_t tlen);

/* The result of a probe: <res> OK, REJECT or TEMP, with the next hop's
 * <text> (may be NULL), valid until <expires>. OK and REJECT are appended
 * to the journal (verify_cache_journal_take()). The workers that waited on
 * its PENDING entry are ORed into <woken> (VERIFY_WMASK_WORDS words; may
 * be NULL). Returns 0 or -ENOMEM (no room: nothing kept). */
int verify_cache_put(struct verify_cache *vc, const char *key, size_t klen, enum verify_result res,
                     const char *text, int64_t expires, int64_t now, uint64_t *woken);

/* Entries held (fresh or not). */
size_t verify_cache_count(struct verify_cache *vc);

/* The records put since the last call, appended to <out>. The journal
 * stops growing past <max> bytes (a writer that fell behind: the entries
 * are in the table anyway, and the next compaction writes them). */
int verify_cache_journal_take(struct verify_cache *vc, struct buf *out);
void verify_cache_journal_limit(struct verify_cache *vc, size_t max);

/* A record for every OK or REJECT entry still fresh at <now>, appended to
 * <out> (a compacted log). Returns the records written, or -ENOMEM. */
ssize_t verify_cache_dump(struct verify_cache *vc, struct buf *out, int64_t now);

/* ---- The persisted form: a log of records ----
 *
 * Each record, little-endian:
 *   u8 version (1) | u8 result (1 OK, 2 REJECT) | u16 key length |
 *   u16 text length | u16 zero | i64 expiry (epoch s) | key | text |
 *   u32 FNV-1a of everything before it
 * A later record for a key replaces an earlier one. A torn tail (a crash
 * mid-write) is a record that does not check: reading stops there. */
#define VERIFY_REC_HDR 16

struct verify_rec {
	enum verify_result res;
	int64_t expires;
	const char *key; /* into the bytes decoded */
	size_t klen;
	const char *text;
	size_t tlen;
};

/* Appends one record to <b>. Returns 0, -EINVAL (a key or text too long,
 * a result other than OK or REJECT) or -ENOMEM. */
int verify_rec_encode(struct buf *b, const char *key, size_t klen, enum verify_result res,
                      int64_t expires, const char *text);
/* Decodes the record at <p> (<len> octets). Returns its size, 0 when <len>
 * holds only part of one (a torn tail), -1 when it is not a record. */
ssize_t verify_rec_decode(const char *p, size_t len, struct verify_rec *r);

/* Puts the records of <p> (<len> octets) that are fresh at <now> into the
 * cache (nothing journaled). Returns the records read; *<used> the octets
 * they span (the rest, if any, is torn or garbage). */
size_t verify_cache_load(struct verify_cache *vc, const char *p, size_t len, int64_t now,
                         size_t *used);

#endif
