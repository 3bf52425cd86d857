/* dns_parse: the answers of io/dns, read with c-ares's parsers; no
 * state, any thread (tests/fuzz/dns_fuzz.c feeds it garbage). See dns.h. */
#include "io/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

enum dns_result dns_result_of(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_R_OK;
	case ARES_ENODATA:
		return DNS_R_NODATA;
	case ARES_ENOTFOUND:
		return DNS_R_NXDOMAIN;
	}
	return DNS_R_TEMP;
}

enum dns_result dns_parse_addrs(const struct dns_answer *a, int type, uint8_t *out, unsigned max,
                                unsigned *n)
{
	enum dns_result r = dns_result_of(a->status);
	int cnt = DNSBL_ANSWERS;
	int rc;

	*n = 0;
	if (r != DNS_R_OK)
		return r;
	if (!a->abuf)
		return DNS_R_TEMP;
	if (type == 1) {
		struct ares_addrttl t[DNSBL_ANSWERS];

		rc = ares_parse_a_reply(a->abuf, a->alen, NULL, t, &cnt);
		for (int i = 0; rc == ARES_SUCCESS && i < cnt && *n < max; i++)
			memcpy(out + 4 * (*n)++, &t[i].ipaddr, 4);
	} else {
		struct ares_addr6ttl t[DNSBL_ANSWERS];

		rc = ares_parse_aaaa_reply(a->abuf, a->alen, NULL, t, &cnt);
		for (int i = 0; rc == ARES_SUCCESS && i < cnt && *n < max; i++)
			memcpy(out + 16 * (*n)++, &t[i].ip6addr, 16);
	}
	if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && *n == 0))
		return DNS_R_NODATA; /* a CNAME alone, say */
	return rc == ARES_SUCCESS ? DNS_R_OK : DNS_R_TEMP;
}

enum dns_result dns_parse_ptr(const struct dns_answer *a, char (*out)[DNSBL_NAME_MAX + 1],
                              unsigned max, unsigned *n)
{
	enum dns_result r = dns_result_of(a->status);
	unsigned char dummy[16] = {0};
	struct hostent *h = NULL;
	int rc;

	*n = 0;
	if (r != DNS_R_OK)
		return r;
	if (!a->abuf)
		return DNS_R_TEMP;
	rc = ares_parse_ptr_reply(a->abuf, a->alen, dummy, 4, AF_INET, &h);
	if (rc != ARES_SUCCESS) {
		if (h)
			ares_free_hostent(h);
		return rc == ARES_ENODATA ? DNS_R_NODATA : DNS_R_TEMP;
	}
	if (h->h_name && *n < max && strlen(h->h_name) <= DNSBL_NAME_MAX)
		snprintf(out[(*n)++], DNSBL_NAME_MAX + 1, "%s", h->h_name);
	for (char **al = h->h_aliases; al && *al && *n < max; al++)
		if (strlen(*al) <= DNSBL_NAME_MAX && (!h->h_name || strcmp(*al, h->h_name)))
			snprintf(out[(*n)++], DNSBL_NAME_MAX + 1, "%s", *al);
	ares_free_hostent(h);
	return *n ? DNS_R_OK : DNS_R_NODATA;
}

enum dns_result dns_parse_mx(const struct dns_answer *a, bool *null_mx)
{
	enum dns_result r = dns_result_of(a->status);
	struct ares_mx_reply *mx = NULL;
	unsigned cnt = 0;
	int rc;

	*null_mx = false;
	if (r != DNS_R_OK)
		return r;
	if (!a->abuf)
		return DNS_R_TEMP;
	rc = ares_parse_mx_reply(a->abuf, a->alen, &mx);
	if (rc != ARES_SUCCESS) {
		if (mx)
			ares_free_data(mx);
		return rc == ARES_ENODATA ? DNS_R_NODATA : DNS_R_TEMP;
	}
	for (struct ares_mx_reply *m = mx; m; m = m->next) {
		cnt++;
		if (!m->host || !m->host[0] || !strcmp(m->host, "."))
			*null_mx = true;
	}
	/* RFC 7505 3: a null MX is the domain's only MX; one among others
	 * is ignored. */
	if (cnt > 1)
		*null_mx = false;
	ares_free_data(mx);
	return cnt ? DNS_R_OK : DNS_R_NODATA;
}
