/* dns_cache_test: expiry, replacement, the bound on entries (oldest out),
 * and the TTL of raw answers: the smallest record TTL, RFC 2308's SOA
 * rule for NXDOMAIN and NODATA, no SOA no caching, and malformed packets
 * refused without reading past them. */
#include "core/dns_cache.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Test(dns_cache, expiry_and_replace)
{
	struct dns_cache *c = dns_cache_new(4);
	size_t n;
	const char *v;

	cr_assert(c);
	cr_assert_eq(dns_cache_put(c, "a", "one", 4, 1000), 0);
	v = dns_cache_get(c, "a", 999, &n);
	cr_assert(v);
	cr_expect_str_eq(v, "one");
	cr_expect_eq(n, 4);
	cr_expect_null(dns_cache_get(c, "a", 1000, &n), "expired at its time");
	cr_expect_null(dns_cache_get(c, "b", 0, &n));
	cr_assert_eq(dns_cache_put(c, "a", "two", 4, 2000), 0);
	v = dns_cache_get(c, "a", 1500, &n);
	cr_expect_str_eq(v, "two");
	cr_expect_eq(dns_cache_count(c), 1);
	dns_cache_free(c);
	dns_cache_free(NULL);
}

Test(dns_cache, bounded_oldest_out)
{
	struct dns_cache *c = dns_cache_new(3);
	char k[16];
	size_t n;

	for (int i = 0; i < 10; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		cr_assert_eq(dns_cache_put(c, k, &i, sizeof(i), 1000), 0);
		cr_expect_leq(dns_cache_count(c), 3);
	}
	cr_expect_null(dns_cache_get(c, "k6", 0, &n));
	for (int i = 7; i < 10; i++) {
		const int *v;

		snprintf(k, sizeof(k), "k%d", i);
		v = dns_cache_get(c, k, 0, &n);
		cr_assert(v, "%s", k);
		cr_expect_eq(*v, i);
	}
	dns_cache_free(c);
}

/* A packet: header, question for "x.test" type <qtype>, then <nrr> RRs as
 * given raw. */
static size_t pkt(unsigned char *p, unsigned rcode, unsigned an, unsigned ns, const void *rrs,
                  size_t rrlen)
{
	static const unsigned char q[] = {1, 'x', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
	unsigned char h[12] = {0x12, 0x34,
	                       0x81, (unsigned char)(0x80 | rcode),
	                       0,    1,
	                       0,    (unsigned char)an,
	                       0,    (unsigned char)ns,
	                       0,    0};

	memcpy(p, h, 12);
	memcpy(p + 12, q, sizeof(q));
	memcpy(p + 12 + sizeof(q), rrs, rrlen);
	return 12 + sizeof(q) + rrlen;
}

/* An A record for the question's name (pointer to offset 12), TTL <t>. */
#define A_RR(t)                                                                                    \
	0xc0, 12, 0, 1, 0, 1, (t) >> 24, ((t) >> 16) & 0xff, ((t) >> 8) & 0xff, (t)&0xff, 0, 4,    \
	    127, 0, 0, 2
/* An SOA for "test" (offset 14), TTL <t>, MINIMUM <m>. */
#define SOA_RR(t, m)                                                                               \
	0xc0, 14, 0, 6, 0, 1, 0, 0, (t) >> 8, (t)&0xff, 0, 28, 1, 'n', 0xc0, 14, 1, 'h', 0xc0, 14, \
	    0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, (m) >> 8, (m)&0xff

Test(dns_cache, ttl_of_records)
{
	static const unsigned char rrs[] = {A_RR(300), A_RR(60)};
	unsigned char p[512];
	struct dns_msg_info mi;
	size_t len = pkt(p, 0, 2, 0, rrs, sizeof(rrs));

	cr_assert_eq(dns_msg_info(p, len, &mi), 0);
	cr_expect_eq(mi.rcode, 0);
	cr_expect_eq(mi.ancount, 2);
	cr_expect_eq(mi.ttl, 60);
	for (size_t k = 0; k < len; k++)
		cr_expect_eq(dns_msg_info(p, k, &mi), -1, "cut at %zu", k);
}

Test(dns_cache, negative_ttl_rfc2308)
{
	static const unsigned char soa_small_min[] = {SOA_RR(3600, 120)};
	static const unsigned char soa_small_ttl[] = {SOA_RR(30, 900)};
	unsigned char p[512];
	struct dns_msg_info mi;
	size_t len;

	len = pkt(p, 3, 0, 1, soa_small_min, sizeof(soa_small_min));
	cr_assert_eq(dns_msg_info(p, len, &mi), 0);
	cr_expect_eq(mi.rcode, 3);
	cr_expect_eq(mi.ttl, 120, "NXDOMAIN: the SOA's MINIMUM");
	len = pkt(p, 0, 0, 1, soa_small_ttl, sizeof(soa_small_ttl));
	cr_assert_eq(dns_msg_info(p, len, &mi), 0);
	cr_expect_eq(mi.ttl, 30, "NODATA: the SOA's own TTL when smaller");
	len = pkt(p, 3, 0, 0, "", 0);
	cr_assert_eq(dns_msg_info(p, len, &mi), 0);
	cr_expect_eq(mi.ttl, 0, "no SOA: not cached");
}

Test(dns_cache, garbage_is_refused)
{
	unsigned char p[64];

	srand(7);
	for (int round = 0; round < 20000; round++) {
		struct dns_msg_info mi;
		size_t len = (size_t)(rand() % 64);

		for (size_t i = 0; i < len; i++)
			p[i] = (unsigned char)rand();
		if (len > 12)
			p[5] = 1;                /* a question: parsing goes past the header */
		(void)dns_msg_info(p, len, &mi); /* ASan: never past <len> */
	}
	/* A compression loop cannot hang the name skipper: pointers are
	 * skipped, not followed. A label run past the end is refused. */
	unsigned char loop[] = {0, 0, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, 'a'};
	struct dns_msg_info mi;
	cr_expect_eq(dns_msg_info(loop, sizeof(loop), &mi), -1);
}
