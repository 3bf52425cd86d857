/* dns: an asynchronous resolver (c-ares) on one io_uring ring. c-ares
 * has no event thread in 1.18: its sockets are watched with oneshot poll
 * requests on the ring (re-armed), its timeouts with one ring timeout, so
 * a question never blocks the ring's thread and costs no thread of its
 * own. Answers are cached (core/dns_cache: TTLs, RFC 2308 negative
 * answers, bounded). Ring-agnostic: the owner (a worker; later the relay
 * thread) gives its ring and the two completion tags it dispatches to
 * dns_on_poll() and dns_on_timer(). Every failure of the DNS (timeout,
 * SERVFAIL, a malformed, truncated or foreign answer) reaches the caller
 * as a status, logged once per question, never as a crash or a stall.
 * The owning thread only; dns_library_init() on the main thread first. */
#ifndef RINGMX_IO_DNS_H
#define RINGMX_IO_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dnsbl.h"
#include "io/types-t.h"

struct dns;

/* What the resolver is given at start (restart-only). */
struct dns_conf {
	const char *const *servers; /* "ADDR[:PORT]" each (--dns-server); NULL/0: resolv.conf */
	unsigned nservers;
	unsigned timeout_ms; /* one try's wait; two tries per server */
	unsigned cache_size; /* answers kept; 0: no cache */
};

/* Main thread, once, before any dns_new(): c-ares's global set-up.
 * Returns 0 or -1. */
int dns_library_init(void);

/* A resolver on <r>, whose polls complete with tag <op_poll> and whose
 * timer with <op_timer> (enum ud_op). NULL with a reason in <err>. */
struct dns *dns_new(struct ring *r, unsigned op_poll, unsigned op_timer, const struct dns_conf *dc,
                    char *err, size_t errlen);
/* Ends it: the questions in flight are answered DNS_R_TEMP (status
 * ARES_EDESTRUCTION). Only once nothing more of the ring is dispatched
 * (the ring idle or gone): polls and timeouts in flight name it. NULL:
 * no-op. */
void dns_free(struct dns *d);

/* An answer: its c-ares status (ARES_SUCCESS, ARES_ENODATA,
 * ARES_ENOTFOUND, ARES_ETIMEOUT, ...) and the raw packet (NULL when none
 * came), valid during the call only. */
struct dns_answer {
	int status;
	const unsigned char *abuf;
	int alen;
	bool cached;
};
typedef void dns_fn(void *arg, const struct dns_answer *a);

/* Asks <name> (class IN) of <type> (1 A, 28 AAAA, 12 PTR, 15 MX, 16
 * TXT). <fn> is called exactly once: from the cache or at once for a bad
 * name (inside this call), else from a later dns_on_poll() or
 * dns_on_timer(). */
void dns_query(struct dns *d, const char *name, int type, dns_fn *fn, void *arg);
/* The completions of its tags. */
void dns_on_poll(void *p, struct io_uring_cqe *cqe);
void dns_on_timer(void *p, struct io_uring_cqe *cqe);
/* Questions asked and not answered yet. */
unsigned dns_inflight(const struct dns *d);
/* Counters: questions sent, answered from the cache, failed. */
struct dns_stats {
	uint64_t sent, cached, failed;
};
const struct dns_stats *dns_stats(const struct dns *d);

/* ---- answers, read with c-ares's parsers (any thread) ---- */

/* The status as the checks see it: DNS_R_OK, _NODATA, _NXDOMAIN, or
 * DNS_R_TEMP for every other status. */
enum dns_result dns_result_of(int status);
/* The A (<type> 1, 4 octets each) or AAAA (28, 16 octets) records of
 * <a>, at most <max>, into <out>; their count in *<n>. DNS_R_OK with
 * *<n> > 0, or why there are none (a packet c-ares cannot parse:
 * DNS_R_TEMP). */
enum dns_result dns_parse_addrs(const struct dns_answer *a, int type, uint8_t *out, unsigned max,
                                unsigned *n);
/* The PTR names of <a>, at most <max> of DNSBL_NAME_MAX + 1 bytes each. */
enum dns_result dns_parse_ptr(const struct dns_answer *a, char (*out)[DNSBL_NAME_MAX + 1],
                              unsigned max, unsigned *n);
/* The MX answer: DNS_R_OK if it has MX records; *<null_mx> when its only
 * one is RFC 7505's null MX ("." with preference 0). */
enum dns_result dns_parse_mx(const struct dns_answer *a, bool *null_mx);

#endif
