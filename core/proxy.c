/* proxy: the PROXY protocol header, v1 and v2. See proxy.h. */
#include "core/proxy.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#define V1_MAX                                                                                     \
	107u /* "PROXY TCP6 " + 2 x 39 + 2 x 5 + 3 spaces + CRLF, rounded as the spec does         \
	      */

static const char v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A decimal port, 0-65535, 1 to 5 digits. Returns 0 or -1. */
static int v1_port(const char *p, size_t n, uint16_t *out)
{
	unsigned v = 0;

	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* One address of family <af>, written as inet_pton() reads it. */
static int v1_addr(int af, const char *p, size_t n, uint8_t *out)
{
	char tmp[48];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	return inet_pton(af, tmp, out) == 1 ? 0 : -1;
}

/* The next field of <line> up to a space (<last>: up to its end). */
static int v1_field(const char **p, const char *end, bool last, const char **f, size_t *n)
{
	const char *sp = last ? end : memchr(*p, ' ', (size_t)(end - *p));

	if (!sp)
		return -1;
	*f = *p;
	*n = (size_t)(sp - *p);
	*p = sp + (last ? 0 : 1);
	return 0;
}

static int parse_v1(const char *p, size_t len, struct proxy_hdr *h)
{
	const char *lf = memchr(p, '\n', len < V1_MAX ? len : V1_MAX), *q, *end, *f;
	size_t n;

	if (!lf)
		return len < V1_MAX ? PROXY_AGAIN : PROXY_BAD;
	if (lf == p || lf[-1] != '\r')
		return PROXY_BAD;
	end = lf - 1; /* the CR */
	for (q = p; q < end; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
			return PROXY_BAD; /* CR, NUL, TAB, 8-bit: not in a v1 header */
	memset(h, 0, sizeof(*h));
	h->version = 1;
	q = p + sizeof(v1_sig);
	if (v1_field(&q, end, false, &f, &n) < 0) {
		/* "PROXY UNKNOWN\r\n": nothing follows the protocol. */
		if ((size_t)(end - q) == 7 && !memcmp(q, "UNKNOWN", 7)) {
			h->family = AF_UNSPEC;
			return (int)(lf - p + 1);
		}
		return PROXY_BAD;
	}
	if (n == 7 && !memcmp(f, "UNKNOWN", 7)) {
		h->family = AF_UNSPEC; /* the rest is to be ignored */
		return (int)(lf - p + 1);
	}
	if (n == 4 && !memcmp(f, "TCP4", 4))
		h->family = AF_INET;
	else if (n == 4 && !memcmp(f, "TCP6", 4))
		h->family = AF_INET6;
	else
		return PROXY_BAD;
	if (v1_field(&q, end, false, &f, &n) < 0 || v1_addr(h->family, f, n, h->src) < 0 ||
	    v1_field(&q, end, false, &f, &n) < 0 || v1_addr(h->family, f, n, h->dst) < 0 ||
	    v1_field(&q, end, false, &f, &n) < 0 || v1_port(f, n, &h->src_port) < 0 ||
	    v1_field(&q, end, true, &f, &n) < 0 || v1_port(f, n, &h->dst_port) < 0)
		return PROXY_BAD;
	return (int)(lf - p + 1);
}

static int parse_v2(const unsigned char *p, size_t len, struct proxy_hdr *h)
{
	size_t body, total;
	unsigned cmd, fam, proto;

	if (len < 16)
		return PROXY_AGAIN;
	if ((p[12] >> 4) != 2)
		return PROXY_BAD; /* version 2 only */
	cmd = p[12] & 0xf;
	fam = p[13] >> 4;
	proto = p[13] & 0xf;
	body = (size_t)p[14] << 8 | p[15];
	total = 16 + body;
	if (cmd > 1 || fam > 3 || proto > 2 || total > PROXY_MAX)
		return PROXY_BAD;
	if (len < total)
		return PROXY_AGAIN;
	memset(h, 0, sizeof(*h));
	h->version = 2;
	h->family = AF_UNSPEC;
	if (cmd == 0 || proto != 1)
		return (int)total; /* LOCAL (a health check), or not a TCP stream */
	if (fam == 1) {
		if (body < 12)
			return PROXY_BAD;
		h->family = AF_INET;
		memcpy(h->src, p + 16, 4);
		memcpy(h->dst, p + 20, 4);
		h->src_port = (uint16_t)(p[24] << 8 | p[25]);
		h->dst_port = (uint16_t)(p[26] << 8 | p[27]);
	} else if (fam == 2) {
		if (body < 36)
			return PROXY_BAD;
		h->family = AF_INET6;
		memcpy(h->src, p + 16, 16);
		memcpy(h->dst, p + 32, 16);
		h->src_port = (uint16_t)(p[48] << 8 | p[49]);
		h->dst_port = (uint16_t)(p[50] << 8 | p[51]);
	}
	/* UNSPEC and UNIX name no client; TLVs after the addresses are
	 * skipped whole (their length is inside <body>). */
	return (int)total;
}

int proxy_parse(const char *p, size_t len, struct proxy_hdr *h)
{
	size_t k;

	if (len == 0)
		return PROXY_AGAIN;
	if ((unsigned char)p[0] == v2_sig[0]) {
		k = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
		if (memcmp(p, v2_sig, k))
			return PROXY_BAD;
		return k < sizeof(v2_sig) ? PROXY_AGAIN
		                          : parse_v2((const unsigned char *)p, len, h);
	}
	k = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
	if (memcmp(p, v1_sig, k))
		return PROXY_BAD;
	return k < sizeof(v1_sig) ? PROXY_AGAIN : parse_v1(p, len, h);
}
