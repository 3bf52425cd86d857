/* dns_fuzz: libFuzzer target for what ringmx does with a DNS answer: the
 * first byte picks the question's type (A, AAAA, PTR, MX) and the c-ares
 * status it came with, the rest is the packet, read by io/dns_parse.c
 * (c-ares's parsers and ours) and core/dns_cache.c (TTLs, RFC 2308),
 * then kept in and read back from the cache. Besides memory safety: no
 * more records than room, every name NUL-terminated within its bound,
 * every result one of enum dns_result, a null MX only with MX records,
 * and the cache gives back the bytes it was given. */
#include <ares.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dns_cache.h"
#include "io/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_result(enum dns_result r)
{
	if (r != DNS_R_OK && r != DNS_R_NODATA && r != DNS_R_NXDOMAIN && r != DNS_R_TEMP)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int statuses[] = {ARES_SUCCESS, ARES_ENODATA, ARES_ENOTFOUND, ARES_ETIMEOUT};
	static struct dns_cache *cache;
	struct dns_answer a;
	struct dns_msg_info mi;
	uint8_t addrs[DNSBL_ANSWERS * 16];
	char names[4][DNSBL_NAME_MAX + 1];
	unsigned n = 0;
	bool null_mx;
	enum dns_result r;
	const void *v;
	size_t vlen;

	if (size < 1)
		return 0;
	if (!cache && !(cache = dns_cache_new(64)))
		abort();
	a = (struct dns_answer){.status = statuses[(data[0] >> 2) & 3],
	                        .abuf = size > 1 ? data + 1 : NULL,
	                        .alen = (int)(size - 1)};
	switch (data[0] & 3) {
	case 0:
	case 1:
		r = dns_parse_addrs(&a, data[0] & 1 ? 28 : 1, addrs, DNSBL_ANSWERS, &n);
		check_result(r);
		if (n > DNSBL_ANSWERS || (r == DNS_R_OK) != (n > 0))
			abort();
		break;
	case 2:
		memset(names, 'x', sizeof(names));
		r = dns_parse_ptr(&a, names, 4, &n);
		check_result(r);
		if (n > 4 || (r == DNS_R_OK) != (n > 0))
			abort();
		for (unsigned i = 0; i < n; i++)
			if (!memchr(names[i], '\0', sizeof(names[i])))
				abort();
		break;
	case 3:
		r = dns_parse_mx(&a, &null_mx);
		check_result(r);
		if (null_mx && r != DNS_R_OK)
			abort();
		break;
	}
	if (dns_msg_info(data + 1, size - 1, &mi) == 0 && mi.ttl > 0x7fffffffu)
		abort(); /* RFC 2181 8: never more than 2^31 - 1 */
	if (dns_cache_put(cache, "k", data, size, 1000) == 0) {
		v = dns_cache_get(cache, "k", 0, &vlen);
		if (!v || vlen != size || memcmp(v, data, size))
			abort();
	}
	return 0;
}
