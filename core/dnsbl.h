/* dnsbl: the pure logic of the DNS checks (sans-I/O, libc only): the
 * postscreen grammar of a DNS list site (SITE[=FILTER][*WEIGHT]), the
 * reverse query names (IPv4 octets, IPv6 nibbles), a list's answer
 * against its filter, the score of a client, and the sender domain's
 * verdict from its MX and address answers (RFC 7505 null MX included).
 * io/session_dns.c asks the questions on the ring (io/dns) and brings the
 * answers here. Any thread. */
#ifndef RINGMX_CORE_DNSBL_H
#define RINGMX_CORE_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNSBL_NAME_MAX   254 /* a domain name in text, no trailing dot, NUL excluded */
#define DNSBL_RANGES_MAX 8   /* ranges per octet of a filter */
#define DNSBL_ANSWERS    16  /* A records of one list's answer looked at */

/* One octet of a filter: a set of ranges [lo, hi]. */
struct dnsbl_octet {
	uint8_t n; /* ranges; 0: any value */
	uint8_t lo[DNSBL_RANGES_MAX], hi[DNSBL_RANGES_MAX];
};

/* One --dnsbl or --rhsbl-sender entry: "zen.example*3",
 * "list.dnswl.test=127.0.[0..255].[1..3]*-2", "bl.test=127.0.0.[2;4;10]". */
struct dnsbl_site {
	char domain[DNSBL_NAME_MAX + 1]; /* the list's zone, lower case */
	bool has_filter;                 /* else any A record is a listing */
	struct dnsbl_octet filter[4];
	int weight; /* default 1; negative: an allowlist */
};

/* Parses <s> into <out>. Returns 0, or -1 with a reason in <err>. */
int dnsbl_site_parse(const char *s, struct dnsbl_site *out, char *err, size_t errlen);
/* <s> again in the grammar (for logs and `ringmx config`), into <out>. */
void dnsbl_site_format(const struct dnsbl_site *s, char *out, size_t outlen);

/* The query name of client <ip> (numeric IPv4 or IPv6 text) in <zone>:
 * "4.3.2.1.zone" or the 32 nibbles of an IPv6 address, low first.
 * <zone> "in-addr.arpa" / "ip6.arpa" give the PTR name (see
 * dnsbl_ptr_name()); an IPv4-mapped address as its IPv4 one. Returns 0,
 * or -1 (not an address, or too long). */
int dnsbl_reverse_name(const char *ip, const char *zone, char *out, size_t outlen);
/* <ip> itself, or its IPv4 part when it is an IPv4-mapped IPv6 address
 * ("::ffff:192.0.2.1", as a dual-stack listener sees an IPv4 client):
 * the address its DNS names are made of. */
const char *dnsbl_client_addr(const char *ip);
/* The PTR query name of <ip>: in-addr.arpa or ip6.arpa. */
int dnsbl_ptr_name(const char *ip, char *out, size_t outlen);
/* The RHSBL query name of <domain> in <zone>: "domain.zone". */
int dnsbl_rhs_name(const char *domain, const char *zone, char *out, size_t outlen);

/* Whether one A record <a> (network order octets) lists under <s>'s
 * filter. Only 127.0.0.0/8 answers count without a filter (RFC 5782
 * 2.3: anything else is an error of the list, not a listing). */
bool dnsbl_match(const struct dnsbl_site *s, const uint8_t a[4]);
/* Whether any of <n> A records lists under <s>. */
bool dnsbl_match_any(const struct dnsbl_site *s, const uint8_t (*a)[4], unsigned n);

/* The verdict on a client: the sum of the weights of the sites that list
 * it (each site once), and the site with the largest positive weight
 * among them (for the reply text; -1: none). */
struct dnsbl_score {
	int score;
	int top; /* index into the sites, or -1 */
};
/* Adds site <i> (listed) of <sites> to <sc>. */
void dnsbl_score_add(struct dnsbl_score *sc, const struct dnsbl_site *sites, unsigned i);

/* What a DNS question got, as the checks see it. Every failure of the
 * DNS (timeout, SERVFAIL, REFUSED, a malformed or foreign answer) is
 * DNS_R_TEMP: "no answer". */
enum dns_result {
	DNS_R_NONE = 0, /* not asked, or not answered yet */
	DNS_R_OK,       /* records of the type asked */
	DNS_R_NODATA,   /* the name exists, no records of that type */
	DNS_R_NXDOMAIN, /* the name does not exist */
	DNS_R_TEMP,     /* no answer: a timeout or any other failure */
};

/* The sender domain check (--reject-unknown-sender-domain, Postfix's
 * reject_unknown_sender_domain): what the MX question got (and whether
 * its one record is the null MX "."), then the A and AAAA questions,
 * asked when the MX one found no MX records. */
struct dns_sender {
	enum dns_result mx, a, aaaa;
	bool null_mx;
};
enum dns_sender_verdict {
	DNS_SENDER_ASK_ADDR = 0, /* the MX question found none: ask A and AAAA */
	DNS_SENDER_WAIT,         /* answers still missing */
	DNS_SENDER_OK,           /* an MX, an A or an AAAA: mail can go back */
	DNS_SENDER_NULL_MX,      /* RFC 7505: 550 5.1.8 (accepts no mail) */
	DNS_SENDER_UNKNOWN,      /* NXDOMAIN, or neither MX nor address: 550 5.1.8 */
	DNS_SENDER_TEMP,         /* no answer: 450 4.1.8 */
};
enum dns_sender_verdict dns_sender_verdict(const struct dns_sender *ds);

#endif
