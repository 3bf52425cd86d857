/* relay_dns: see relay_dns.h. One c-ares channel, driven to completion by
 * poll() on the sockets ares_getsock() names (no select(): the gateway's
 * descriptors go far past FD_SETSIZE). */
#include "io/relay_dns.h"

#include <arpa/nameser.h>
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dns_cache.h"

struct relay_dns {
	ares_channel ch;
	int64_t deadline; /* CLOCK_MONOTONIC ms: relay_dns_begin()'s bound */
};

/* One query's answer, copied out of c-ares's callback. */
struct answer {
	int status;
	unsigned char *abuf;
	int alen;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct relay_dns *relay_dns_new(const struct conf *c, char *err, size_t errlen)
{
	struct relay_dns *d = calloc(1, sizeof(*d));
	struct ares_options o = {.timeout = 1500, .tries = 2};
	int rc;

	if (!d) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc == ARES_SUCCESS)
		rc = ares_init_options(&d->ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "DNS resolver: %s", ares_strerror(rc));
		free(d);
		return NULL;
	}
	if (c->ndns_servers) {
		char csv[CONF_MAX_DNS_SERVERS * 64] = "";
		size_t len = 0;

		for (unsigned i = 0; i < c->ndns_servers && len < sizeof(csv); i++)
			len += (size_t)snprintf(csv + len, sizeof(csv) - len, "%s%s", i ? "," : "",
			                        c->dns_servers[i]);
		rc = ares_set_servers_ports_csv(d->ch, csv);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "--dns-server %s: %s", csv, ares_strerror(rc));
			relay_dns_free(d);
			return NULL;
		}
	}
	return d;
}

void relay_dns_begin(struct relay_dns *d)
{
	d->deadline = mono_ms() + RELAY_DNS_BUILD_MS;
}

void relay_dns_free(struct relay_dns *d)
{
	if (!d)
		return;
	ares_destroy(d->ch);
	ares_library_cleanup();
	free(d);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct answer *a = arg;

	(void)timeouts;
	a->status = status;
	if (status == ARES_SUCCESS && abuf && alen > 0 && (a->abuf = malloc((size_t)alen))) {
		memcpy(a->abuf, abuf, (size_t)alen);
		a->alen = alen;
	} else if (status == ARES_SUCCESS) {
		a->status = ARES_ENOMEM;
	}
}

/* Runs the channel's queries to their ends, RELAY_DNS_WAIT_MS at most
 * (then they are cancelled: ARES_ECANCELLED). */
static void run(struct relay_dns *d)
{
	int64_t deadline = mono_ms() + RELAY_DNS_WAIT_MS;

	if (d->deadline && d->deadline < deadline)
		deadline = d->deadline;

	for (;;) {
		ares_socket_t socks[ARES_GETSOCK_MAXNUM];
		struct pollfd pfd[ARES_GETSOCK_MAXNUM];
		int bits = ares_getsock(d->ch, socks, ARES_GETSOCK_MAXNUM), n = 0;
		struct timeval tv, *tvp;
		int64_t left = deadline - mono_ms(), ms;

		for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			/* ares.h's macros shift a signed 1 by up to 31: unsigned here. */
			unsigned ub = (unsigned)bits;
			short ev = (short)((ub & (1u << i) ? POLLIN : 0) |
			                   (ub & (1u << (i + ARES_GETSOCK_MAXNUM)) ? POLLOUT : 0));

			if (ev)
				pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
		}
		if (!n)
			return; /* nothing in flight */
		if (left <= 0) {
			ares_cancel(d->ch);
			return;
		}
		tvp = ares_timeout(d->ch, &(struct timeval){(time_t)(left / 1000), 0}, &tv);
		ms = (int64_t)tvp->tv_sec * 1000 + tvp->tv_usec / 1000;
		if (poll(pfd, (nfds_t)n, (int)(ms < left ? ms : left)) <= 0) {
			ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
			continue;
		}
		for (int i = 0; i < n; i++)
			if (pfd[i].revents)
				ares_process_fd(
				    d->ch,
				    pfd[i].revents & (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd
				                                                  : ARES_SOCKET_BAD,
				    pfd[i].revents & POLLOUT ? pfd[i].fd : ARES_SOCKET_BAD);
	}
}

static const char *why_of(int status)
{
	switch (status) {
	case ARES_ENOTFOUND:
		return "no such name (NXDOMAIN)";
	case ARES_ENODATA:
		return "no record of that type";
	case ARES_ESERVFAIL:
		return "server failure (SERVFAIL)";
	case ARES_ETIMEOUT:
	case ARES_ECANCELLED:
		return "no answer in time";
	default:
		return ares_strerror(status);
	}
}

static bool status_final(int status)
{
	return status == ARES_ENOTFOUND || status == ARES_ENODATA;
}

static void set_port(struct relay_addr *a, int family, const void *addr, unsigned port)
{
	memset(a, 0, sizeof(*a));
	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&a->sa;

		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		memcpy(&s->sin_addr, addr, sizeof(s->sin_addr));
		a->len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&a->sa;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		memcpy(&s->sin6_addr, addr, sizeof(s->sin6_addr));
		a->len = sizeof(*s);
	}
}

/* /etc/hosts, as the system's resolver reads it first. */
static int from_file(struct relay_dns *d, const char *host, unsigned port, struct relay_addr *out,
                     unsigned max)
{
	static const int fams[] = {AF_INET, AF_INET6};
	unsigned n = 0;

	for (unsigned f = 0; f < 2 && n < max; f++) {
		struct hostent *he = NULL;

		if (ares_gethostbyname_file(d->ch, host, fams[f], &he) != ARES_SUCCESS || !he)
			continue;
		for (char **p = he->h_addr_list; *p && n < max; p++)
			set_port(&out[n++], he->h_addrtype, *p, port);
		ares_free_hostent(he);
	}
	return (int)n;
}

int relay_dns_addrs(struct relay_dns *d, const char *host, unsigned port, struct relay_addr *out,
                    unsigned max, uint32_t *ttl, char *err, size_t errlen)
{
	struct answer a4 = {.status = ARES_ECANCELLED}, a6 = {.status = ARES_ECANCELLED};
	struct ares_addrttl t4[16];
	struct ares_addr6ttl t6[16];
	int n4 = 16, n6 = 16, n = from_file(d, host, port, out, max);
	uint32_t best = UINT32_MAX;

	if (n > 0) {
		*ttl = RELAY_DNS_FILE_TTL;
		return n;
	}
	ares_query(d->ch, host, ns_c_in, ns_t_a, on_answer, &a4);
	ares_query(d->ch, host, ns_c_in, ns_t_aaaa, on_answer, &a6);
	run(d);
	if (a4.status != ARES_SUCCESS ||
	    ares_parse_a_reply(a4.abuf, a4.alen, NULL, t4, &n4) != ARES_SUCCESS)
		n4 = 0;
	if (a6.status != ARES_SUCCESS ||
	    ares_parse_aaaa_reply(a6.abuf, a6.alen, NULL, t6, &n6) != ARES_SUCCESS)
		n6 = 0;
	for (int i = 0; i < n4 && (unsigned)n < max; i++) {
		set_port(&out[n++], AF_INET, &t4[i].ipaddr, port);
		if ((uint32_t)t4[i].ttl < best)
			best = (uint32_t)(t4[i].ttl < 0 ? 0 : t4[i].ttl);
	}
	for (int i = 0; i < n6 && (unsigned)n < max; i++) {
		set_port(&out[n++], AF_INET6, &t6[i].ip6addr, port);
		if ((uint32_t)t6[i].ttl < best)
			best = (uint32_t)(t6[i].ttl < 0 ? 0 : t6[i].ttl);
	}
	free(a4.abuf);
	free(a6.abuf);
	if (n > 0) {
		*ttl = best;
		return n;
	}
	/* No address: for good only when both say so. */
	if (status_final(a4.status) && status_final(a6.status)) {
		snprintf(err, errlen, "%s: %s", host,
		         a4.status == ARES_ENOTFOUND ? why_of(a4.status) : "no address (A, AAAA)");
		return -ENOENT;
	}
	snprintf(err, errlen, "%s: %s", host,
	         why_of(status_final(a4.status) ? a6.status : a4.status));
	return -EAGAIN;
}

static int by_pref(const void *a, const void *b)
{
	const struct relay_mx *x = a, *y = b;

	return x->pref < y->pref ? -1 : x->pref > y->pref;
}

int relay_dns_mx(struct relay_dns *d, const char *domain, struct relay_mx *out, unsigned max,
                 uint32_t *ttl, char *err, size_t errlen)
{
	struct answer a = {.status = ARES_ECANCELLED};
	struct ares_mx_reply *mx = NULL;
	struct dns_msg_info mi;
	unsigned n = 0;
	int rc;

	ares_query(d->ch, domain, ns_c_in, ns_t_mx, on_answer, &a);
	run(d);
	if (a.status == ARES_ENODATA) {
		*ttl = RELAY_DNS_FILE_TTL; /* no MX: the implicit one, asked again later */
		return 0;
	}
	if (a.status != ARES_SUCCESS) {
		snprintf(err, errlen, "MX of %s: %s", domain, why_of(a.status));
		return a.status == ARES_ENOTFOUND ? -ENOENT : -EAGAIN;
	}
	rc = ares_parse_mx_reply(a.abuf, a.alen, &mx);
	/* The TTL as core/dns_cache reads it (the smallest of the records). */
	*ttl = dns_msg_info(a.abuf, (size_t)a.alen, &mi) == 0 && mi.ancount ? mi.ttl
	                                                                    : RELAY_DNS_FILE_TTL;
	free(a.abuf);
	if (rc == ARES_ENODATA)
		return 0;
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "MX of %s: %s", domain, why_of(rc));
		return -EAGAIN;
	}
	for (struct ares_mx_reply *m = mx; m && n < max; m = m->next) {
		snprintf(out[n].host, sizeof(out[n].host), "%s", m->host);
		out[n++].pref = m->priority;
	}
	ares_free_data(mx);
	qsort(out, n, sizeof(*out), by_pref);
	/* RFC 7505: one MX, ".", says the domain takes no mail. */
	if (n == 1 && (!out[0].host[0] || !strcmp(out[0].host, "."))) {
		snprintf(err, errlen, "%s has a null MX: it takes no mail", domain);
		return -ENXIO;
	}
	return (int)n;
}
