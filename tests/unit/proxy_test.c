/* proxy_test: the PROXY protocol header parser, v1 and v2: each form
 * HAProxy sends, every strict prefix of a valid header is PROXY_AGAIN,
 * the SMTP stream starts right after it, and malformed, oversized or
 * foreign input is PROXY_BAD. */
#include "core/proxy.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>
#include <sys/socket.h>

/* Every strict prefix of the <n> bytes at <p> asks for more. */
static void prefixes_again(const char *p, size_t n)
{
	struct proxy_hdr h;

	for (size_t k = 0; k < n; k++)
		cr_assert_eq(proxy_parse(p, k, &h), PROXY_AGAIN, "prefix %zu of %zu", k, n);
}

static void expect_v4(const struct proxy_hdr *h, const char *src, const char *dst, unsigned sport,
                      unsigned dport)
{
	uint8_t a[4];

	cr_assert_eq(h->family, AF_INET);
	inet_pton(AF_INET, src, a);
	cr_expect_eq(memcmp(h->src, a, 4), 0);
	inet_pton(AF_INET, dst, a);
	cr_expect_eq(memcmp(h->dst, a, 4), 0);
	cr_expect_eq(h->src_port, sport);
	cr_expect_eq(h->dst_port, dport);
}

Test(proxy, v1_tcp4_and_the_stream_after_it)
{
	static const char in[] = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
	size_t hl = strlen("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n");
	struct proxy_hdr h;

	prefixes_again(in, hl);
	cr_assert_eq(proxy_parse(in, sizeof(in) - 1, &h), (int)hl);
	cr_expect_eq(h.version, 1);
	expect_v4(&h, "192.0.2.7", "198.51.100.1", 56324, 25);
}

Test(proxy, v1_tcp6_and_unknown)
{
	static const char v6[] = "PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
	static const char unk[] = "PROXY UNKNOWN\r\n";
	static const char unk2[] = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
	struct proxy_hdr h;
	uint8_t a[16];

	cr_assert_eq(proxy_parse(v6, sizeof(v6) - 1, &h), (int)sizeof(v6) - 1);
	cr_assert_eq(h.family, AF_INET6);
	inet_pton(AF_INET6, "2001:db8::7", a);
	cr_expect_eq(memcmp(h.src, a, 16), 0);
	cr_expect_eq(h.src_port, 65535);
	cr_expect_eq(h.dst_port, 0);
	cr_assert_eq(proxy_parse(unk, sizeof(unk) - 1, &h), (int)sizeof(unk) - 1);
	cr_expect_eq(h.family, AF_UNSPEC);
	cr_assert_eq(proxy_parse(unk2, sizeof(unk2) - 1, &h), (int)sizeof(unk2) - 1);
	cr_expect_eq(h.family, AF_UNSPEC);
}

Test(proxy, v1_malformed_is_bad)
{
	static const char *const bad[] = {
	    "EHLO client.example\r\n",
	    "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",    /* no CR */
	    "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", /* two spaces */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
	    "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
	    "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", /* family and address disagree */
	    "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
	    "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
	    "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
	    "PROXY \r\n",
	};
	struct proxy_hdr h;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(proxy_parse(bad[i], strlen(bad[i]), &h), PROXY_BAD, "%s", bad[i]);
	/* A line that never ends is refused at 107 octets, not buffered. */
	char longl[200];
	memcpy(longl, "PROXY UNKNOWN ", 14);
	memset(longl + 14, 'x', sizeof(longl) - 14);
	cr_expect_eq(proxy_parse(longl, 106, &h), PROXY_AGAIN);
	cr_expect_eq(proxy_parse(longl, 107, &h), PROXY_BAD);
	cr_expect_eq(proxy_parse(longl, sizeof(longl), &h), PROXY_BAD);
}

static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                      0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A v2 header: version/command, family/protocol, <body> of <n> bytes. */
static size_t v2(unsigned char *out, unsigned vc, unsigned fp, const void *body, size_t n)
{
	memcpy(out, sig, 12);
	out[12] = (unsigned char)vc;
	out[13] = (unsigned char)fp;
	out[14] = (unsigned char)(n >> 8);
	out[15] = (unsigned char)n;
	memcpy(out + 16, body, n);
	return 16 + n;
}

Test(proxy, v2_tcp4_with_tlvs_and_tcp6)
{
	unsigned char b4[12 + 12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0, 25,
	                             /* TLVs: ALPN "h2", NOOP of 3 */
	                             0x01, 0, 2, 'h', '2', 0x04, 0, 3, 0, 0, 0, 0};
	unsigned char b6[36] = {0};
	unsigned char buf[256];
	struct proxy_hdr h;
	size_t n = v2(buf, 0x21, 0x11, b4, sizeof(b4));

	memcpy(buf + n, "EHLO", 4);
	prefixes_again((const char *)buf, n);
	cr_assert_eq(proxy_parse((const char *)buf, n + 4, &h), (int)n);
	cr_expect_eq(h.version, 2);
	expect_v4(&h, "192.0.2.7", "198.51.100.1", 0xdc04, 25);

	b6[0] = 0x20;
	b6[1] = 0x01;
	b6[15] = 7;
	b6[32] = 0x01;
	b6[33] = 0x02;
	n = v2(buf, 0x21, 0x21, b6, sizeof(b6));
	cr_assert_eq(proxy_parse((const char *)buf, n, &h), (int)n);
	cr_assert_eq(h.family, AF_INET6);
	cr_expect_eq(h.src[0], 0x20);
	cr_expect_eq(h.src[15], 7);
	cr_expect_eq(h.src_port, 0x0102);
}

Test(proxy, v2_local_unspec_unix_name_no_client)
{
	unsigned char buf[512], body[216] = {0};
	struct proxy_hdr h;
	size_t n;

	n = v2(buf, 0x20, 0x00, body, 0); /* LOCAL: a health check */
	cr_assert_eq(proxy_parse((const char *)buf, n, &h), (int)n);
	cr_expect_eq(h.family, AF_UNSPEC);
	n = v2(buf, 0x20, 0x11, body, 12); /* LOCAL with addresses: ignored */
	cr_assert_eq(proxy_parse((const char *)buf, n, &h), (int)n);
	cr_expect_eq(h.family, AF_UNSPEC);
	n = v2(buf, 0x21, 0x00, body, 0);
	cr_assert_eq(proxy_parse((const char *)buf, n, &h), (int)n);
	cr_expect_eq(h.family, AF_UNSPEC);
	n = v2(buf, 0x21, 0x31, body, 216); /* UNIX */
	cr_assert_eq(proxy_parse((const char *)buf, n, &h), (int)n);
	cr_expect_eq(h.family, AF_UNSPEC);
	n = v2(buf, 0x21, 0x12, body, 12); /* UDP */
	cr_assert_eq(proxy_parse((const char *)buf, n, &h), (int)n);
	cr_expect_eq(h.family, AF_UNSPEC);
}

Test(proxy, v2_malformed_is_bad)
{
	unsigned char buf[PROXY_MAX + 64], body[64] = {0};
	struct proxy_hdr h;
	size_t n;

	n = v2(buf, 0x11, 0x11, body, 12); /* version 1 in a v2 header */
	cr_expect_eq(proxy_parse((const char *)buf, n, &h), PROXY_BAD);
	n = v2(buf, 0x22, 0x11, body, 12); /* command 2 */
	cr_expect_eq(proxy_parse((const char *)buf, n, &h), PROXY_BAD);
	n = v2(buf, 0x21, 0x41, body, 12); /* family 4 */
	cr_expect_eq(proxy_parse((const char *)buf, n, &h), PROXY_BAD);
	n = v2(buf, 0x21, 0x11, body, 11); /* too short for TCP4 */
	cr_expect_eq(proxy_parse((const char *)buf, n, &h), PROXY_BAD);
	n = v2(buf, 0x21, 0x21, body, 35); /* too short for TCP6 */
	cr_expect_eq(proxy_parse((const char *)buf, n, &h), PROXY_BAD);
	/* Larger than PROXY_MAX: refused from its first 16 bytes. */
	v2(buf, 0x21, 0x11, body, 12);
	buf[14] = 0xff;
	buf[15] = 0xff;
	cr_expect_eq(proxy_parse((const char *)buf, 16, &h), PROXY_BAD);
	/* A damaged signature. */
	n = v2(buf, 0x21, 0x11, body, 12);
	for (size_t i = 0; i < 12; i++) {
		buf[i] ^= 0x20;
		cr_expect_eq(proxy_parse((const char *)buf, n, &h), PROXY_BAD, "byte %zu", i);
		buf[i] ^= 0x20;
	}
	/* The largest taken. */
	static unsigned char big[PROXY_MAX];
	n = v2(big, 0x21, 0x11, body, 0);
	big[14] = (unsigned char)((PROXY_MAX - 16) >> 8);
	big[15] = (unsigned char)(PROXY_MAX - 16);
	cr_expect_eq(proxy_parse((const char *)big, PROXY_MAX, &h), (int)PROXY_MAX);
	cr_expect_eq(proxy_parse((const char *)big, PROXY_MAX - 1, &h), PROXY_AGAIN);
}
