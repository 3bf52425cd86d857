/* milter_addr: the --milter addresses, inet:HOST:PORT (a name is resolved
 * with getaddrinfo()) or unix:/PATH, into the gateway's targets on the main
 * thread at start. See milter.h. */
#include "io/milter.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

static int target_parse(struct milter_target *t, const char *s, char *err, size_t errlen)
{
	struct addrinfo hints = {0}, *ai = NULL;
	char host[256], port[16];
	const char *p, *colon;
	size_t hl;
	int rc;

	memset(t, 0, sizeof(*t));
	snprintf(t->text, sizeof(t->text), "%s", s);
	if (strncmp(s, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)&t->addr;

		if (strlen(s + 5) >= sizeof(un->sun_path)) {
			snprintf(err, errlen, "ringmx: --milter %s: path too long", s);
			return -EINVAL;
		}
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, s + 5, strlen(s + 5) + 1);
		t->addrlen = (socklen_t)sizeof(*un);
		return 0;
	}
	p = s + 5; /* "inet:" (core/conf checked) */
	if (*p == '[') {
		const char *rb = strchr(p, ']');

		if (!rb || rb[1] != ':')
			goto bad;
		hl = (size_t)(rb - p - 1);
		p++;
		colon = rb + 1;
	} else {
		colon = strrchr(p, ':');
		hl = colon ? (size_t)(colon - p) : 0;
	}
	if (!colon || !hl || hl >= sizeof(host) || strlen(colon + 1) >= sizeof(port))
		goto bad;
	memcpy(host, p, hl);
	host[hl] = '\0';
	snprintf(port, sizeof(port), "%s", colon + 1);
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc != 0 || !ai) {
		snprintf(err, errlen, "ringmx: --milter %s: %s", s, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
	t->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
bad:
	snprintf(err, errlen, "ringmx: --milter %s is not inet:HOST:PORT or unix:/PATH", s);
	return -EINVAL;
}

int milter_targets_load(struct milter_target *v, const struct conf *cf, char *err, size_t errlen)
{
	for (unsigned i = 0; i < cf->nmilters; i++)
		if (target_parse(&v[i], cf->milters[i], err, errlen))
			return -EINVAL;
	return 0;
}

int milter_targets_resolve(struct gateway *g, const struct conf *cf, char *err, size_t errlen)
{
	if (milter_targets_load(g->milters, cf, err, errlen))
		return -EINVAL;
	g->nmilters = cf->nmilters;
	return 0;
}
