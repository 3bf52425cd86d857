/* dns_cache: a bounded cache of DNS answers and verdicts with expiry times
 * (sans-I/O, libc only; the caller gives the clock), and the TTL of a raw
 * DNS answer as RFC 1035 and RFC 2308 give it. io/dns keeps one per
 * resolver for raw answers; io/session_dns one per worker for the DNSBL
 * verdicts of clients. One thread per cache. */
#ifndef RINGMX_CORE_DNS_CACHE_H
#define RINGMX_CORE_DNS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dns_cache;

/* A cache of at most <cap> entries (1-10^7): past it, the oldest entry
 * goes first. NULL: out of memory. */
struct dns_cache *dns_cache_new(unsigned cap);
/* NULL: no-op. */
void dns_cache_free(struct dns_cache *c);
/* The value stored under <key> (a C string) that has not expired at <now>
 * (ms, the caller's clock), its length in *<vlen>; NULL: none. Valid until
 * the next put. */
const void *dns_cache_get(struct dns_cache *c, const char *key, int64_t now, size_t *vlen);
/* Stores a copy of <vlen> bytes at <val> under <key>, until <expires>
 * (ms), replacing what was there. Returns 0 or -ENOMEM (nothing stored). */
int dns_cache_put(struct dns_cache *c, const char *key, const void *val, size_t vlen,
                  int64_t expires);
/* Entries held (expired ones included until they are replaced). */
unsigned dns_cache_count(const struct dns_cache *c);

/* What a raw DNS answer (<len> bytes at <p>) says for caching: its RCODE,
 * the number of answer records, and how long it may be kept (seconds):
 * for records, the smallest TTL among them; for a negative answer
 * (NXDOMAIN, or NOERROR with no records), RFC 2308 section 5: the SOA of
 * the authority section, the smaller of its TTL and its MINIMUM; 0 when
 * there is none (not to be cached). Returns 0, or -1 for a malformed
 * packet (never reads past <len>). */
struct dns_msg_info {
	unsigned rcode;
	unsigned ancount;
	uint32_t ttl;
	bool truncated;
};
int dns_msg_info(const unsigned char *p, size_t len, struct dns_msg_info *out);

#endif
