/* policy: accepted recipient domains and relay networks. The domain list is
 * a sorted array of lower-case names searched with bsearch(), comparing the
 * caller's view case-insensitively in place, so a lookup never copies or
 * allocates. Networks are a short array scanned linearly (a handful of
 * entries, as Postfix's mynetworks). Built at startup by conf, then
 * read-only and shared by every worker. libc only. See policy.h. */
#include "core/policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_DOMAIN_MAX 253u /* RFC 1035 2.3.4, without the trailing dot */
#define POLICY_LABEL_MAX  63u  /* RFC 1035 2.3.4 */
#define POLICY_SHOW_MAX   80   /* characters of a bad token quoted in <err> */

void policy_init(struct policy *p)
{
	memset(p, 0, sizeof(*p));
}

void policy_fini(struct policy *p)
{
	for (size_t i = 0; i < p->ndomains; i++)
		free(p->domains[i]);
	free(p->domains);
	p->domains = NULL;
	p->ndomains = 0;
	free(p->nets);
	p->nets = NULL;
	p->nnets = 0;
}

/* Formats one line into <err>. Control characters from the input become '?'
 * so the reason stays on one line whatever the operator typed. */
static void __attribute__((format(printf, 3, 4)))
policy_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	for (char *q = err; *q; q++) {
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			*q = '?';
	}
}

static bool is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Drops one trailing dot: "example.com." is the same name (RFC 1034 3.1). */
static struct sv strip_root(struct sv d)
{
	if (d.len && d.p[d.len - 1] == '.')
		d.len--;
	return d;
}

const char *policy_domain_invalid(struct sv d)
{
	size_t label = 0;

	d = strip_root(d);
	if (d.len == 0)
		return "empty domain name";
	if (d.p[0] == '[')
		return "address literals are not domains";
	if (d.len > POLICY_DOMAIN_MAX)
		return "longer than 253 characters";
	for (size_t i = 0; i < d.len; i++) {
		unsigned char c = (unsigned char)d.p[i];

		if (c == '.') {
			if (label == 0)
				return "empty label";
			if (d.p[i - 1] == '-')
				return "label ends with '-'";
			label = 0;
			continue;
		}
		/* Octets >= 0x80: a UTF-8 IDN as written by SMTPUTF8 clients
		 * (RFC 6531); their byte form is compared, not normalized. */
		if (!is_ldh(c) && c < 0x80)
			return "invalid character (letters, digits, '-' and '.' only)";
		if (label == 0 && c == '-')
			return "label starts with '-'";
		if (++label > POLICY_LABEL_MAX)
			return "label longer than 63 characters";
	}
	if (d.p[d.len - 1] == '-')
		return "label ends with '-'";
	return NULL;
}

static int add_domain(struct policy *p, struct sv d, char *err, size_t errlen)
{
	const char *why = policy_domain_invalid(d);
	char **v;
	char *s;

	if (why) {
		policy_err(err, errlen, "bad domain '%.*s': %s",
		           (int)(d.len > POLICY_SHOW_MAX ? POLICY_SHOW_MAX : d.len), d.p, why);
		return -EINVAL;
	}
	d = strip_root(d);
	/* The array holds 8, then the next power of two: grow when full. */
	if (p->ndomains == 0 || (p->ndomains >= 8 && (p->ndomains & (p->ndomains - 1)) == 0)) {
		size_t cap = p->ndomains ? p->ndomains * 2 : 8;

		v = realloc(p->domains, cap * sizeof(*v));
		if (!v)
			goto nomem;
		p->domains = v;
	}
	s = malloc(d.len + 1);
	if (!s)
		goto nomem;
	for (size_t i = 0; i < d.len; i++)
		s[i] = (char)lower((unsigned char)d.p[i]);
	s[d.len] = '\0';
	p->domains[p->ndomains++] = s;
	return 0;
nomem:
	policy_err(err, errlen, "out of memory");
	return -ENOMEM;
}

static bool is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Splits <list> at commas and white space and calls <fn> for each token.
 * Returns the number of tokens or the first error. */
static int for_each_token(struct policy *p, struct sv list,
                          int (*fn)(struct policy *, struct sv, char *, size_t), char *err,
                          size_t errlen)
{
	size_t i = 0;
	int n = 0, rc;

	while (i < list.len) {
		size_t start;

		while (i < list.len && is_sep(list.p[i]))
			i++;
		if (i == list.len)
			break;
		start = i;
		while (i < list.len && !is_sep(list.p[i]))
			i++;
		rc = fn(p, sv_make(list.p + start, i - start), err, errlen);
		if (rc < 0)
			return rc;
		n++;
	}
	return n;
}

int policy_add_domains(struct policy *p, const char *list, char *err, size_t errlen)
{
	int n = for_each_token(p, sv_cstr(list), add_domain, err, errlen);

	if (n == 0) {
		policy_err(err, errlen, "no domain in the list");
		return -EINVAL;
	}
	return n < 0 ? n : 0;
}

int policy_load_domains_file(struct policy *p, const char *path, char *err, size_t errlen)
{
	char reason[256];
	unsigned long lineno = 0;
	size_t cap = 0;
	char *line = NULL;
	ssize_t n;
	FILE *f;
	int rc = 0;

	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		policy_err(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	errno = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		struct sv l = sv_make(line, (size_t)n);
		const char *hash = memchr(l.p, '#', l.len);

		lineno++;
		if (hash)
			l.len = (size_t)(hash - l.p);
		/* Commas and white space (CR of a CRLF file included) separate
		 * names, so "a.example b.example" on one line is two domains. */
		rc = for_each_token(p, l, add_domain, reason, sizeof(reason));
		if (rc < 0) {
			policy_err(err, errlen, "%s:%lu: %s", path, lineno, reason);
			goto out;
		}
	}
	rc = 0;
	if (ferror(f)) {
		/* getline() left errno: EISDIR for a directory, EIO, ... */
		rc = errno ? -errno : -EIO;
		policy_err(err, errlen, "%s: %s", path, strerror(-rc));
	}
out:
	free(line);
	fclose(f);
	return rc;
}

/* Parses a prefix length "0".."<max>" (decimal, no sign). */
static int parse_prefix(struct sv s, unsigned max, unsigned *out)
{
	unsigned v = 0;

	if (s.len == 0 || s.len > 3)
		return -EINVAL;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s.p[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static void mask_host_bits(struct policy_net *n)
{
	unsigned bytes = n->family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < bytes; i++) {
		unsigned bit = i * 8;

		if (bit >= n->prefix)
			n->addr[i] = 0;
		else if (n->prefix - bit < 8)
			n->addr[i] &= (uint8_t)(0xff00u >> (n->prefix - bit));
	}
}

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int add_network(struct policy *p, struct sv tok, char *err, size_t errlen)
{
	struct policy_net net = {0};
	char addr[INET6_ADDRSTRLEN + 1];
	struct sv a = tok, pfx = {NULL, 0};
	bool bracket = false, has_pfx = false;
	const char *slash;
	struct policy_net *v;

	if (tok.p[0] == '[') {
		const char *close = memchr(tok.p, ']', tok.len);

		if (!close)
			goto bad;
		bracket = true;
		a = sv_make(tok.p + 1, (size_t)(close - tok.p - 1));
		pfx = sv_make(close + 1, tok.len - (size_t)(close + 1 - tok.p));
		if (pfx.len) {
			if (pfx.p[0] != '/')
				goto bad;
			has_pfx = true;
			pfx = sv_skip(pfx, 1);
		}
	} else {
		slash = memchr(tok.p, '/', tok.len);
		if (slash) {
			a = sv_make(tok.p, (size_t)(slash - tok.p));
			pfx = sv_make(slash + 1, tok.len - a.len - 1);
			has_pfx = true;
		}
	}
	if (a.len == 0 || a.len >= sizeof(addr))
		goto bad;
	memcpy(addr, a.p, a.len);
	addr[a.len] = '\0';
	if (!bracket && inet_pton(AF_INET, addr, net.addr) == 1) {
		net.family = AF_INET;
		net.prefix = 32;
	} else if (inet_pton(AF_INET6, addr, net.addr) == 1) {
		net.family = AF_INET6;
		net.prefix = 128;
	} else {
		goto bad;
	}
	if (has_pfx && parse_prefix(pfx, net.prefix, &net.prefix) < 0) {
		policy_err(err, errlen, "bad network '%.*s': prefix length must be 0-%u",
		           (int)(tok.len > POLICY_SHOW_MAX ? POLICY_SHOW_MAX : tok.len), tok.p,
		           net.family == AF_INET ? 32 : 128);
		return -EINVAL;
	}
	/* ::ffff:a.b.c.d/96+ is an IPv4 network; store it as one so that it
	 * matches clients whichever way the kernel reports them. */
	if (net.family == AF_INET6 && net.prefix >= 96 &&
	    memcmp(net.addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
		memmove(net.addr, net.addr + 12, 4);
		memset(net.addr + 4, 0, 12);
		net.family = AF_INET;
		net.prefix -= 96;
	}
	/* Host bits are cleared silently: 10.1.2.3/8 means 10.0.0.0/8. */
	mask_host_bits(&net);
	v = realloc(p->nets, (p->nnets + 1) * sizeof(*v));
	if (!v) {
		policy_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	p->nets = v;
	p->nets[p->nnets++] = net;
	return 0;
bad:
	policy_err(err, errlen,
	           "bad network '%.*s': want ADDRESS or ADDRESS/PREFIX (IPv6 may be in [])",
	           (int)(tok.len > POLICY_SHOW_MAX ? POLICY_SHOW_MAX : tok.len), tok.p);
	return -EINVAL;
}

int policy_add_networks(struct policy *p, const char *list, char *err, size_t errlen)
{
	int n = for_each_token(p, sv_cstr(list), add_network, err, errlen);

	if (n == 0) {
		policy_err(err, errlen, "no network in the list");
		return -EINVAL;
	}
	return n < 0 ? n : 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void policy_finish(struct policy *p)
{
	size_t j = 0;

	if (p->ndomains == 0)
		return;
	qsort(p->domains, p->ndomains, sizeof(*p->domains), cmp_str);
	for (size_t i = 1; i < p->ndomains; i++) {
		if (strcmp(p->domains[i], p->domains[j]) == 0)
			free(p->domains[i]);
		else
			p->domains[++j] = p->domains[i];
	}
	p->ndomains = j + 1;
}

/* bsearch() key against a stored lower-case name, in strcmp() order. */
static int cmp_key(const void *k, const void *e)
{
	const struct sv *key = k;
	const unsigned char *s = *(const unsigned char *const *)e;
	size_t i;

	for (i = 0; i < key->len; i++) {
		unsigned char c = lower((unsigned char)key->p[i]);

		if (c != s[i]) /* s[i] == '\0' too: the key is longer */
			return (int)c - (int)s[i];
	}
	return s[i] == '\0' ? 0 : -1;
}

bool policy_domain_accepted(const struct policy *p, struct sv domain)
{
	domain = strip_root(domain);
	/* A NUL inside the view would compare equal to a stored name's end. */
	if (domain.len == 0 || domain.p[0] == '[' || memchr(domain.p, '\0', domain.len))
		return false;
	if (p->ndomains == 0)
		return false;
	return bsearch(&domain, p->domains, p->ndomains, sizeof(*p->domains), cmp_key) != NULL;
}

static bool net_match(const struct policy_net *n, int family, const uint8_t *addr)
{
	unsigned full = n->prefix / 8, rest = n->prefix % 8;

	if (n->family != family)
		return false;
	if (memcmp(n->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((addr[full] ^ n->addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

bool policy_client_may_relay(const struct policy *p, const struct sockaddr *sa)
{
	const uint8_t *addr;
	int family;

	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		family = AF_INET;
		addr = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		addr = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		family = AF_INET6;
		/* A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d. */
		if (memcmp(addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
			family = AF_INET;
			addr += 12;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < p->nnets; i++) {
		if (net_match(&p->nets[i], family, addr))
			return true;
	}
	return false;
}
