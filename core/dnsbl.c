/* dnsbl: the pure logic of the DNS checks. See dnsbl.h. */
#include "core/dnsbl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int __attribute__((format(printf, 3, 4))) bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* A decimal 0-255 at *p; advances. */
static int octet_num(const char **p, unsigned *v)
{
	const char *q = *p;
	unsigned n = 0;

	if (*q < '0' || *q > '9')
		return -1;
	while (*q >= '0' && *q <= '9') {
		n = n * 10 + (unsigned)(*q - '0');
		if (n > 255)
			return -1;
		q++;
	}
	*v = n;
	*p = q;
	return 0;
}

/* One octet of a filter: "2", "[2..11]", "[2;4;10]", "[1;3..5]". */
static int octet_parse(const char **p, struct dnsbl_octet *o)
{
	const char *q = *p;
	unsigned lo, hi;

	o->n = 0;
	if (*q != '[') {
		if (octet_num(&q, &lo) < 0)
			return -1;
		o->lo[0] = o->hi[0] = (uint8_t)lo;
		o->n = 1;
		*p = q;
		return 0;
	}
	q++;
	for (;;) {
		if (o->n == DNSBL_RANGES_MAX || octet_num(&q, &lo) < 0)
			return -1;
		hi = lo;
		if (q[0] == '.' && q[1] == '.') {
			q += 2;
			if (octet_num(&q, &hi) < 0 || hi < lo)
				return -1;
		}
		o->lo[o->n] = (uint8_t)lo;
		o->hi[o->n] = (uint8_t)hi;
		o->n++;
		if (*q == ';') {
			q++;
			continue;
		}
		if (*q != ']')
			return -1;
		*p = q + 1;
		return 0;
	}
}

/* A host name: letters, digits, '-', '_' (some lists use them), dots
 * between labels of 1-63 octets. */
static bool name_ok(const char *s, size_t len)
{
	size_t lab = 0;

	if (len == 0 || len > DNSBL_NAME_MAX || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '.') {
			if (lab == 0)
				return false;
			lab = 0;
			continue;
		}
		if (!isalnum(ch) && ch != '-' && ch != '_')
			return false;
		if (++lab > 63)
			return false;
	}
	return true;
}

int dnsbl_site_parse(const char *s, struct dnsbl_site *out, char *err, size_t errlen)
{
	const char *eq = strchr(s, '='), *star = strrchr(s, '*');
	size_t dl;

	memset(out, 0, sizeof(*out));
	out->weight = 1;
	if (star && eq && star < eq)
		star = NULL; /* a '*' inside the filter is not one */
	dl = eq ? (size_t)(eq - s) : star ? (size_t)(star - s) : strlen(s);
	if (!name_ok(s, dl))
		return bad(err, errlen, "'%.100s': the site is not a domain name", s);
	for (size_t i = 0; i < dl; i++)
		out->domain[i] = (char)tolower((unsigned char)s[i]);
	out->domain[dl] = '\0';
	if (eq) {
		const char *q = eq + 1;

		for (unsigned i = 0; i < 4; i++) {
			if (octet_parse(&q, &out->filter[i]) < 0)
				return bad(
				    err, errlen,
				    "'%.100s': the filter is not d.d.d.d (each d a number 0-255, "
				    "[a..b] or [a;b;c])",
				    s);
			if (i < 3 && *q++ != '.')
				return bad(err, errlen, "'%.100s': the filter needs four octets",
				           s);
		}
		if (*q && *q != '*')
			return bad(err, errlen, "'%.100s': unexpected '%c' after the filter", s,
			           *q);
		out->has_filter = true;
	}
	if (star) {
		const char *q = star + 1;
		char *end;
		long w;

		if (!*q || !(*q == '-' || (*q >= '0' && *q <= '9')))
			return bad(err, errlen, "'%.100s': the weight is not a number", s);
		w = strtol(q, &end, 10);
		if (*end || w < -1000 || w > 1000 || w == 0)
			return bad(err, errlen, "'%.100s': the weight must be -1000..1000, not 0",
			           s);
		out->weight = (int)w;
	}
	return 0;
}

void dnsbl_site_format(const struct dnsbl_site *s, char *out, size_t outlen)
{
	size_t len = (size_t)snprintf(out, outlen, "%s", s->domain);

	if (s->has_filter) {
		for (unsigned i = 0; i < 4 && len < outlen; i++) {
			const struct dnsbl_octet *o = &s->filter[i];

			len += (size_t)snprintf(out + len, outlen - len, "%s", i ? "." : "=");
			if (o->n == 1 && o->lo[0] == o->hi[0]) {
				len += (size_t)snprintf(out + len, outlen - len, "%u", o->lo[0]);
				continue;
			}
			for (unsigned j = 0; j < o->n && len < outlen; j++) {
				len += (size_t)snprintf(out + len, outlen - len, "%s%u",
				                        j ? ";" : "[", o->lo[j]);
				if (o->hi[j] != o->lo[j] && len < outlen)
					len += (size_t)snprintf(out + len, outlen - len, "..%u",
					                        o->hi[j]);
			}
			if (len < outlen)
				len += (size_t)snprintf(out + len, outlen - len, "]");
		}
	}
	if (s->weight != 1 && len < outlen)
		snprintf(out + len, outlen - len, "*%d", s->weight);
}

const char *dnsbl_client_addr(const char *ip)
{
	struct in_addr a4;

	if (strncasecmp(ip, "::ffff:", 7) == 0 && inet_pton(AF_INET, ip + 7, &a4) == 1)
		return ip + 7;
	return ip;
}

int dnsbl_reverse_name(const char *ip, const char *zone, char *out, size_t outlen)
{
	unsigned char a[16];
	static const char hex[] = "0123456789abcdef";
	size_t len = 0;
	int n;

	ip = dnsbl_client_addr(ip);
	if (inet_pton(AF_INET, ip, a) == 1) {
		n = snprintf(out, outlen, "%u.%u.%u.%u.%s", a[3], a[2], a[1], a[0], zone);
		return n > 0 && (size_t)n < outlen && (size_t)n <= DNSBL_NAME_MAX ? 0 : -1;
	}
	if (inet_pton(AF_INET6, ip, a) != 1)
		return -1;
	if (outlen < 64 + strlen(zone) + 1 || 64 + strlen(zone) > DNSBL_NAME_MAX)
		return -1;
	for (int i = 15; i >= 0; i--) {
		out[len++] = hex[a[i] & 0xf];
		out[len++] = '.';
		out[len++] = hex[a[i] >> 4];
		out[len++] = '.';
	}
	memcpy(out + len, zone, strlen(zone) + 1);
	return 0;
}

int dnsbl_ptr_name(const char *ip, char *out, size_t outlen)
{
	ip = dnsbl_client_addr(ip);
	return dnsbl_reverse_name(ip, strchr(ip, ':') ? "ip6.arpa" : "in-addr.arpa", out, outlen);
}

int dnsbl_rhs_name(const char *domain, const char *zone, char *out, size_t outlen)
{
	size_t dl = strlen(domain);
	int n;

	while (dl && domain[dl - 1] == '.')
		dl--;
	if (!name_ok(domain, dl))
		return -1;
	n = snprintf(out, outlen, "%.*s.%s", (int)dl, domain, zone);
	return n > 0 && (size_t)n < outlen && (size_t)n <= DNSBL_NAME_MAX ? 0 : -1;
}

bool dnsbl_match(const struct dnsbl_site *s, const uint8_t a[4])
{
	if (!s->has_filter)
		return a[0] == 127;
	for (unsigned i = 0; i < 4; i++) {
		const struct dnsbl_octet *o = &s->filter[i];
		bool in = o->n == 0;

		for (unsigned j = 0; j < o->n && !in; j++)
			in = a[i] >= o->lo[j] && a[i] <= o->hi[j];
		if (!in)
			return false;
	}
	return true;
}

bool dnsbl_match_any(const struct dnsbl_site *s, const uint8_t (*a)[4], unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (dnsbl_match(s, a[i]))
			return true;
	return false;
}

void dnsbl_score_add(struct dnsbl_score *sc, const struct dnsbl_site *sites, unsigned i)
{
	sc->score += sites[i].weight;
	if (sites[i].weight > 0 && (sc->top < 0 || sites[i].weight > sites[sc->top].weight))
		sc->top = (int)i;
}

enum dns_sender_verdict dns_sender_verdict(const struct dns_sender *ds)
{
	switch (ds->mx) {
	case DNS_R_NONE:
		return DNS_SENDER_WAIT;
	case DNS_R_OK:
		return ds->null_mx ? DNS_SENDER_NULL_MX : DNS_SENDER_OK;
	case DNS_R_NXDOMAIN:
		return DNS_SENDER_UNKNOWN;
	case DNS_R_TEMP:
		return DNS_SENDER_TEMP;
	case DNS_R_NODATA:
		break;
	}
	/* No MX: the domain's address records are its implicit MX (RFC 5321 5.1). */
	if (ds->a == DNS_R_OK || ds->aaaa == DNS_R_OK)
		return DNS_SENDER_OK;
	if (ds->a == DNS_R_NONE && ds->aaaa == DNS_R_NONE)
		return DNS_SENDER_ASK_ADDR;
	if (ds->a == DNS_R_NONE || ds->aaaa == DNS_R_NONE)
		return DNS_SENDER_WAIT;
	if (ds->a == DNS_R_TEMP || ds->aaaa == DNS_R_TEMP)
		return DNS_SENDER_TEMP;
	return DNS_SENDER_UNKNOWN;
}
