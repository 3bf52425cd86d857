/* relay_conf: --relay-to and --route, parsed into next hops whose names are
 * resolved with getaddrinfo() on the main thread at start, and the route of
 * a recipient's domain. See relay_conf.h. */
#include "io/relay_conf.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "io/tls.h"

static int parse_hop(struct relay_hop *h, const char *s, char *err, size_t errlen)
{
	char host[256], port[16];
	const char *p = s, *colon;
	struct addrinfo hints = {0}, *ai = NULL;
	size_t hl;
	int rc;

	memset(h, 0, sizeof(*h));
	snprintf(h->text, sizeof(h->text), "%s", s);
	if (strncmp(p, "lmtp:", 5) == 0) {
		h->lmtp = true;
		p += 5;
	} else if (strncmp(p, "smtp:", 5) == 0) {
		p += 5;
	}
	if (*p == '[') {
		const char *rb = strchr(p, ']');

		if (!rb || rb[1] != ':')
			goto bad;
		hl = (size_t)(rb - p - 1);
		if (hl == 0 || hl >= sizeof(host))
			goto bad;
		memcpy(host, p + 1, hl);
		colon = rb + 1;
	} else {
		colon = strrchr(p, ':');
		if (!colon || colon == p)
			goto bad;
		hl = (size_t)(colon - p);
		if (hl >= sizeof(host))
			goto bad;
		memcpy(host, p, hl);
	}
	host[hl] = '\0';
	snprintf(h->host, sizeof(h->host), "%s", host);
	if (strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(port) ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1))
		goto bad;
	snprintf(port, sizeof(port), "%s", colon + 1);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_family = AF_UNSPEC;
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc != 0 || !ai) {
		snprintf(err, errlen, "ringmx: next hop '%s': %s", s, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(&h->addr, ai->ai_addr, ai->ai_addrlen);
	h->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	{
		char a[INET6_ADDRSTRLEN] = "?";
		const void *in = h->addr.ss_family == AF_INET6
		                     ? (const void *)&((struct sockaddr_in6 *)&h->addr)->sin6_addr
		                     : (const void *)&((struct sockaddr_in *)&h->addr)->sin_addr;

		inet_ntop(h->addr.ss_family, in, a, sizeof(a));
		snprintf(h->name, sizeof(h->name), "%s[%s]:%s", host, a, port);
	}
	return 0;
bad:
	snprintf(err, errlen, "ringmx: next hop '%s' is not host:port or lmtp:host:port", s);
	return -EINVAL;
}

static int parse_hops(struct relay_route *r, const char *list, char *err, size_t errlen)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		struct relay_hop *n = realloc(r->hops, (r->nhops + 1) * sizeof(*n));

		if (!n) {
			rc = -ENOMEM;
			break;
		}
		r->hops = n;
		rc = parse_hop(&r->hops[r->nhops], tok, err, errlen);
		if (rc)
			break;
		r->nhops++;
	}
	free(copy);
	if (!rc && r->nhops == 0) {
		snprintf(err, errlen, "ringmx: empty list of next hops '%s'", list);
		rc = -EINVAL;
	}
	return rc;
}

int relay_conf_build(struct relay_conf *rc, const struct conf *c, char *err, size_t errlen)
{
	unsigned n = c->nroutes + (c->relay_to ? 1 : 0);
	int e;

	memset(rc, 0, sizeof(*rc));
	rc->def = -1;
	if (!n)
		return 0;
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
		e = parse_hops(r, eq + 1, err, errlen);
		if (e)
			return e;
	}
	if (c->relay_to) {
		rc->def = (int)rc->nroutes;
		e = parse_hops(&rc->routes[rc->nroutes++], c->relay_to, err, errlen);
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
