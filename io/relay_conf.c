/* relay_conf: --relay-to and --route, parsed into next hops whose names are
 * looked up on the main thread (io/relay_dns: at start, at a reload and
 * when their TTL runs out), and the route of a recipient's domain. See
 * relay_conf.h. */
#include "io/relay_conf.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "io/relay_dns.h"
#include "io/tls.h"

/* Appends a hop for address <a> of host <host> to <r>, configured as
 * <spec>. */
static int hop_add(struct relay_route *r, const char *spec, const char *host, bool lmtp,
                   const struct relay_addr *a)
{
	struct relay_hop *n = realloc(r->hops, (r->nhops + 1) * sizeof(*n)), *h;
	char txt[INET6_ADDRSTRLEN] = "?";
	const void *in;
	unsigned port;

	if (!n)
		return -ENOMEM;
	r->hops = n;
	h = &r->hops[r->nhops++];
	memset(h, 0, sizeof(*h));
	memcpy(&h->addr, &a->sa, a->len);
	h->addrlen = a->len;
	h->lmtp = lmtp;
	snprintf(h->text, sizeof(h->text), "%s", spec);
	snprintf(h->host, sizeof(h->host), "%s", host);
	if (a->sa.ss_family == AF_INET6) {
		in = &((const struct sockaddr_in6 *)&a->sa)->sin6_addr;
		port = ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
	} else {
		in = &((const struct sockaddr_in *)&a->sa)->sin_addr;
		port = ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
	}
	inet_ntop(a->sa.ss_family, in, txt, sizeof(txt));
	snprintf(h->name, sizeof(h->name), "%s[%s]:%u", host, txt, port);
	return 0;
}

static void ttl_min(struct relay_conf *rc, uint32_t ttl)
{
	if (ttl < RELAY_DNS_MIN_TTL)
		ttl = RELAY_DNS_MIN_TTL;
	if (ttl > RELAY_DNS_MAX_TTL)
		ttl = RELAY_DNS_MAX_TTL;
	if (!rc->ttl || ttl < rc->ttl)
		rc->ttl = ttl;
}

/* The hops of <host>:<port>: one for a numeric address, one per address
 * for a name (A, then AAAA). */
static int host_hops(struct relay_conf *rc, struct relay_route *r, struct relay_dns *dns,
                     const char *spec, const char *host, unsigned port, bool lmtp, char *err,
                     size_t errlen)
{
	struct relay_addr a[RELAY_ADDRS_PER_NAME];
	struct in6_addr a6;
	struct in_addr a4;
	uint32_t ttl;
	int n, e;

	if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
		                         .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV},
		                *ai = NULL;
		char ps[16];

		snprintf(ps, sizeof(ps), "%u", port);
		if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) {
			snprintf(err, errlen, "ringmx: next hop '%s': bad address", spec);
			return -EINVAL;
		}
		memcpy(&a[0].sa, ai->ai_addr, ai->ai_addrlen);
		a[0].len = ai->ai_addrlen;
		freeaddrinfo(ai);
		return hop_add(r, spec, host, lmtp, &a[0]);
	}
	if (!dns) {
		snprintf(err, errlen, "ringmx: next hop '%s': a name, and no resolver", spec);
		return -EINVAL;
	}
	n = relay_dns_addrs(dns, host, port, a, RELAY_ADDRS_PER_NAME, &ttl, err, errlen);
	if (n < 0) {
		char why[300];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "ringmx: next hop '%s': %s", spec, why);
		return -EINVAL;
	}
	ttl_min(rc, ttl);
	for (int i = 0; i < n; i++)
		if ((e = hop_add(r, spec, host, lmtp, &a[i])))
			return e;
	return 0;
}

/* The hops of "mx:NAME[:PORT]" (or "mx": the route's own domain): each
 * exchange's addresses in preference order; without MX records the
 * name's own addresses (RFC 5321 section 5.1). */
static int mx_hops(struct relay_conf *rc, struct relay_route *r, struct relay_dns *dns,
                   const char *spec, const char *name, unsigned port, char *err, size_t errlen)
{
	struct relay_mx mx[RELAY_MX_MAX];
	uint32_t ttl;
	char why[300];
	int n = relay_dns_mx(dns, name, mx, RELAY_MX_MAX, &ttl, why, sizeof(why)), e, got = 0;

	if (n < 0) {
		snprintf(err, errlen, "ringmx: next hop '%s': %s", spec, why);
		return -EINVAL;
	}
	ttl_min(rc, ttl);
	if (n == 0)
		return host_hops(rc, r, dns, spec, name, port, false, err, errlen);
	for (int i = 0; i < n; i++) {
		unsigned before = r->nhops;

		e = host_hops(rc, r, dns, spec, mx[i].host, port, false, err, errlen);
		if (e == -ENOMEM)
			return e;
		got += r->nhops > before; /* an exchange without an address is skipped */
	}
	if (!got) {
		snprintf(err, errlen, "ringmx: next hop '%s': no MX host of %s has an address",
		         spec, name);
		return -EINVAL;
	}
	err[0] = '\0';
	return 0;
}

/* One configured next hop: [smtp:|lmtp:]HOST:PORT, mx:NAME[:PORT] or mx
 * (<domain>'s MX). */
static int parse_hop(struct relay_conf *rc, struct relay_route *r, struct relay_dns *dns,
                     const char *s, char *err, size_t errlen)
{
	char host[256];
	const char *p = s, *colon;
	unsigned port = 25;
	bool lmtp = false, mx = false;
	size_t hl;

	if (strlen(s) >= sizeof(r->hops->text))
		goto bad;
	if (strncmp(p, "lmtp:", 5) == 0) {
		lmtp = true;
		p += 5;
	} else if (strncmp(p, "smtp:", 5) == 0) {
		p += 5;
	} else if (strcmp(p, "mx") == 0) {
		if (!r->domain) {
			snprintf(err, errlen,
			         "ringmx: next hop 'mx' needs a --route domain (or mx:NAME)");
			return -EINVAL;
		}
		return mx_hops(rc, r, dns, s, r->domain, 25, err, errlen);
	} else if (strncmp(p, "mx:", 3) == 0) {
		mx = true;
		p += 3;
	}
	if (*p == '[') {
		const char *rb = strchr(p, ']');

		if (!rb || (rb[1] != ':' && !(mx && rb[1] == '\0')))
			goto bad;
		hl = (size_t)(rb - p - 1);
		if (hl == 0 || hl >= sizeof(host))
			goto bad;
		memcpy(host, p + 1, hl);
		colon = rb[1] ? rb + 1 : NULL;
	} else {
		colon = strrchr(p, ':');
		if ((!colon && !mx) || colon == p)
			goto bad;
		hl = colon ? (size_t)(colon - p) : strlen(p);
		if (hl == 0 || hl >= sizeof(host))
			goto bad;
		memcpy(host, p, hl);
	}
	host[hl] = '\0';
	if (colon) {
		char *end;
		unsigned long v = strtoul(colon + 1, &end, 10);

		if (!colon[1] || *end || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		    v == 0 || v > 65535)
			goto bad;
		port = (unsigned)v;
	}
	if (mx)
		return mx_hops(rc, r, dns, s, host, port, err, errlen);
	return host_hops(rc, r, dns, s, host, port, lmtp, err, errlen);
bad:
	snprintf(err, errlen,
	         "ringmx: next hop '%s' is not host:port, lmtp:host:port, mx:NAME[:PORT] or mx", s);
	return -EINVAL;
}

static int parse_hops(struct relay_conf *rc, struct relay_route *r, struct relay_dns *dns,
                      const char *list, char *err, size_t errlen)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int e = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		if ((e = parse_hop(rc, r, dns, tok, err, errlen)))
			break;
	free(copy);
	if (!e && r->nhops == 0) {
		snprintf(err, errlen, "ringmx: empty list of next hops '%s'", list);
		e = -EINVAL;
	}
	return e;
}

int relay_conf_build(struct relay_conf *rc, const struct conf *c, struct relay_dns *dns, char *err,
                     size_t errlen)
{
	unsigned n = c->nroutes + (c->relay_to ? 1 : 0);
	int e;

	memset(rc, 0, sizeof(*rc));
	rc->def = -1;
	if (!n)
		return 0;
	if (dns)
		relay_dns_begin(dns);
	rc->routes = calloc(n, sizeof(*rc->routes));
	if (!rc->routes)
		return -ENOMEM;
	for (unsigned i = 0; i < c->nroutes; i++) {
		const char *eq = strchr(c->routes[i], '=');
		struct relay_route *r = &rc->routes[rc->nroutes++];

		r->domain = strndup(c->routes[i], (size_t)(eq - c->routes[i]));
		if (!r->domain)
			return -ENOMEM;
		for (char *d = r->domain; *d; d++)
			if (*d >= 'A' && *d <= 'Z')
				*d = (char)(*d + 32);
		e = parse_hops(rc, r, dns, eq + 1, err, errlen);
		if (e)
			return e;
	}
	if (c->relay_to) {
		rc->def = (int)rc->nroutes;
		e = parse_hops(rc, &rc->routes[rc->nroutes++], dns, c->relay_to, err, errlen);
		if (e)
			return e;
	}
	for (unsigned i = 0; i < rc->nroutes; i++)
		rc->nhops += rc->routes[i].nhops;
	if (c->relay_tls != CONF_RELAY_TLS_NONE) {
		e = tls_client_ctx_new(&rc->tls, err, errlen);
		if (e)
			return e;
		rc->require_tls = c->relay_tls == CONF_RELAY_TLS_ENCRYPT;
	}
	return 0;
}

void relay_conf_free(struct relay_conf *rc)
{
	for (unsigned i = 0; i < rc->nroutes; i++) {
		free(rc->routes[i].domain);
		free(rc->routes[i].hops);
	}
	free(rc->routes);
	tls_ctx_free(rc->tls);
	memset(rc, 0, sizeof(*rc));
	rc->def = -1;
}

void relay_conf_log(const struct relay_conf *rc)
{
	for (unsigned i = 0; i < rc->nroutes; i++)
		for (unsigned k = 0; k < rc->routes[i].nhops; k++)
			LOGI("relay: %s next hop %u: %s (%s)",
			     rc->routes[i].domain ? rc->routes[i].domain : "default route", k + 1,
			     rc->routes[i].hops[k].name, rc->routes[i].hops[k].text);
}

bool relay_conf_same(const struct relay_conf *a, const struct relay_conf *b)
{
	if (a->nroutes != b->nroutes || a->def != b->def)
		return false;
	for (unsigned i = 0; i < a->nroutes; i++) {
		const struct relay_route *x = &a->routes[i], *y = &b->routes[i];

		if (x->nhops != y->nhops || (x->domain == NULL) != (y->domain == NULL) ||
		    (x->domain && strcmp(x->domain, y->domain)))
			return false;
		for (unsigned k = 0; k < x->nhops; k++)
			if (x->hops[k].addrlen != y->hops[k].addrlen ||
			    memcmp(&x->hops[k].addr, &y->hops[k].addr, x->hops[k].addrlen) ||
			    x->hops[k].lmtp != y->hops[k].lmtp ||
			    strcmp(x->hops[k].host, y->hops[k].host))
				return false;
	}
	return true;
}

struct relay_conf *relay_conf_ref(struct relay_conf *rc)
{
	if (rc && atomic_load_explicit(&rc->refs, memory_order_relaxed))
		atomic_fetch_add_explicit(&rc->refs, 1, memory_order_relaxed);
	return rc;
}

void relay_conf_unref(struct relay_conf *rc)
{
	if (!rc || !atomic_load_explicit(&rc->refs, memory_order_relaxed))
		return;
	if (atomic_fetch_sub_explicit(&rc->refs, 1, memory_order_acq_rel) == 1) {
		relay_conf_free(rc);
		free(rc);
	}
}

int relay_hop_names_init(struct relay_hop_names *hn, const struct relay_conf *rc)
{
	hn->cap = rc->nhops + 256;
	atomic_init(&hn->n, 0);
	hn->v = calloc(hn->cap, sizeof(*hn->v));
	return hn->v ? 0 : -ENOMEM;
}

void relay_hop_names_fini(struct relay_hop_names *hn)
{
	free(hn->v);
	hn->v = NULL;
	hn->cap = 0;
}

int relay_conf_slots(struct relay_conf *rc, struct relay_hop_names *hn, char *err, size_t errlen)
{
	unsigned n = atomic_load_explicit(&hn->n, memory_order_relaxed);

	for (unsigned i = 0; i < rc->nroutes; i++) {
		struct relay_route *r = &rc->routes[i];
		const char *dom = r->domain ? r->domain : "*";

		for (unsigned k = 0; k < r->nhops; k++) {
			struct relay_hop *h = &r->hops[k];
			unsigned at = 0;

			while (at < n &&
			       (strcmp(hn->v[at].route, dom) || strcmp(hn->v[at].hop, h->text)))
				at++;
			if (at == n) {
				if (n == hn->cap) {
					snprintf(err, errlen,
					         "more next hops than the delivery counters have "
					         "room for "
					         "since the start (%u): restart to add %s",
					         hn->cap, h->text);
					return -ENOSPC;
				}
				snprintf(hn->v[n].route, sizeof(hn->v[n].route), "%s", dom);
				snprintf(hn->v[n].hop, sizeof(hn->v[n].hop), "%s", h->text);
				n++;
			}
			h->stat = at;
		}
	}
	/* The names first, then their count (the metrics thread reads both). */
	atomic_store_explicit(&hn->n, n, memory_order_release);
	return 0;
}

int relay_conf_route_of(const struct relay_conf *rc, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');

	if (at) {
		for (unsigned i = 0; i < rc->nroutes; i++)
			if (rc->routes[i].domain && strcasecmp(rc->routes[i].domain, at + 1) == 0)
				return (int)i;
	}
	return rc->def;
}
