/* dns: c-ares on an io_uring ring. See dns.h.
 *
 * c-ares tells which sockets it wants watched through its socket state
 * callback (ARES_OPT_SOCK_STATE_CB): here each socket gets a struct
 * dns_sock with one oneshot poll per direction (the pattern of
 * io/cluster's hiredis socket, through io/ring's ring_poll_fd()); a
 * poll's completion hands the socket to ares_process_fd() and is armed
 * again while c-ares still wants it. When c-ares closes a socket, its
 * polls are cancelled (the ring holds the file: a closed descriptor would
 * not end them) and the struct is freed once both have completed; a new
 * socket with the same number gets a struct of its own. ares_timeout()
 * says when c-ares next needs the clock: one ring timeout is armed for
 * it (ring_timer_at()), and its completion runs ares_process_fd() with
 * no socket, which retries or times questions out.
 *
 * The cache keeps the raw answers (positive ones for their smallest TTL,
 * NXDOMAIN and NODATA for their SOA's, RFC 2308; at most a day), so a hit
 * is parsed by the same code as a fresh answer. */
#include "io/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dns_cache.h"
#include "core/log.h"
#include "io/ring.h"

#define CACHE_TTL_MAX 86400u /* seconds an answer is kept at most */

struct dns_sock;

struct dns_poll {
	struct dns_sock *s;
	unsigned mask;
	bool want;  /* c-ares wants it */
	bool armed; /* a poll request is in flight */
};

struct dns_sock {
	struct dns *d;
	int fd;
	bool dead; /* c-ares closed it: freed once its polls are back */
	bool busy; /* ares_process_fd() runs for it: not freed meanwhile */
	struct dns_poll pin, pout;
	struct dns_sock *next; /* the live ones */
};

struct dns {
	struct ring *r;
	unsigned op_poll, op_timer;
	ares_channel ch;
	struct dns_sock *socks;
	struct ring_timer timer;
	struct dns_cache *cache;
	unsigned inflight;
	bool freeing;
	struct dns_stats st;
};

/* One question in flight. */
struct dns_q {
	struct dns *d;
	dns_fn *fn;
	void *arg;
	int type;
	char key[DNSBL_NAME_MAX + 16]; /* "type/name", the cache's key */
	const char *name;              /* into <key> */
};

int dns_library_init(void)
{
	return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -1;
}

/* ---- the sockets and the timer ---- */

static void dns_timer_sync(struct dns *d)
{
	struct timeval tv, *t;
	int64_t at;

	if (d->freeing)
		return;
	t = ares_timeout(d->ch, NULL, &tv);
	if (!t)
		return;
	at = ring_clock_ms() + (int64_t)t->tv_sec * 1000 + (t->tv_usec + 999) / 1000;
	ring_timer_at(d->r, &d->timer, ring_clock_ms(), at, UD(d, d->op_timer));
}

static void poll_arm(struct dns_poll *pl)
{
	struct dns_sock *s = pl->s;

	if (s->dead || !pl->want || pl->armed || s->d->freeing)
		return;
	ring_poll_fd(s->d->r, s->fd, pl->mask, UD(pl, s->d->op_poll));
	pl->armed = true;
}

static void sock_maybe_free(struct dns_sock *s)
{
	if (s->dead && !s->busy && !s->pin.armed && !s->pout.armed)
		free(s);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock *s, **pp;

	for (pp = &d->socks; (s = *pp); pp = &s->next)
		if (s->fd == fd)
			break;
	if (!readable && !writable) {
		if (!s)
			return;
		*pp = s->next; /* c-ares closes it after this */
		s->dead = true;
		if (!d->freeing) {
			if (s->pin.armed)
				ring_poll_cancel(d->r, UD(&s->pin, d->op_poll));
			if (s->pout.armed)
				ring_poll_cancel(d->r, UD(&s->pout, d->op_poll));
		} else {
			s->pin.armed = s->pout.armed = false; /* the ring is gone */
		}
		sock_maybe_free(s);
		return;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			/* Unwatched: its questions time out (the timer runs). */
			LOGW("dns: out of memory for a socket");
			return;
		}
		s->d = d;
		s->fd = fd;
		s->pin = (struct dns_poll){.s = s, .mask = POLLIN};
		s->pout = (struct dns_poll){.s = s, .mask = POLLOUT};
		s->next = d->socks;
		d->socks = s;
	}
	s->pin.want = readable;
	s->pout.want = writable;
	poll_arm(&s->pin);
	poll_arm(&s->pout);
}

void dns_on_poll(void *p, struct io_uring_cqe *cqe)
{
	struct dns_poll *pl = p;
	struct dns_sock *s = pl->s;
	struct dns *d = s->d;

	pl->armed = false;
	if (s->dead) {
		sock_maybe_free(s);
		return;
	}
	if (pl->want && cqe->res != -ECANCELED) {
		/* Ready, or an error c-ares learns of by reading or writing. */
		s->busy = true;
		if (pl == &s->pin)
			ares_process_fd(d->ch, s->fd, ARES_SOCKET_BAD);
		else
			ares_process_fd(d->ch, ARES_SOCKET_BAD, s->fd);
		/* <s> may be dead now (the sock state callback ran). */
		s->busy = false;
	}
	if (s->dead)
		sock_maybe_free(s);
	else
		poll_arm(pl);
	dns_timer_sync(d);
}

void dns_on_timer(void *p, struct io_uring_cqe *cqe)
{
	struct dns *d = p;

	d->timer.armed_at = 0;
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_sync(d);
}

/* ---- questions ---- */

static const char *type_name(int type)
{
	switch (type) {
	case 1:
		return "A";
	case 28:
		return "AAAA";
	case 12:
		return "PTR";
	case 15:
		return "MX";
	case 16:
		return "TXT";
	}
	return "?";
}

static void cache_put(struct dns *d, const struct dns_q *q, int status, const unsigned char *abuf,
                      int alen)
{
	struct dns_msg_info mi;
	unsigned char *v;
	uint32_t ttl;

	if (!d->cache || !abuf || alen <= 0 ||
	    (status != ARES_SUCCESS && status != ARES_ENODATA && status != ARES_ENOTFOUND))
		return;
	if (dns_msg_info(abuf, (size_t)alen, &mi) < 0 || mi.truncated || mi.ttl == 0)
		return;
	ttl = mi.ttl > CACHE_TTL_MAX ? CACHE_TTL_MAX : mi.ttl;
	v = malloc((size_t)alen + sizeof(int));
	if (!v)
		return;
	memcpy(v, &status, sizeof(int));
	memcpy(v + sizeof(int), abuf, (size_t)alen);
	(void)dns_cache_put(d->cache, q->key, v, (size_t)alen + sizeof(int),
	                    ring_clock_ms() + (int64_t)ttl * 1000);
	free(v);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_q *q = arg;
	struct dns *d = q->d;
	struct dns_answer a = {.status = status, .abuf = abuf, .alen = abuf ? alen : 0};

	d->inflight--;
	if (dns_result_of(status) == DNS_R_TEMP) {
		d->st.failed++;
		if (status != ARES_EDESTRUCTION && status != ARES_ECANCELLED)
			LOGI("dns: %s %s: %s; taken as no answer", q->name, type_name(q->type),
			     ares_strerror(status));
	} else {
		cache_put(d, q, status, abuf, alen);
	}
	q->fn(q->arg, &a);
	free(q);
}

void dns_query(struct dns *d, const char *name, int type, dns_fn *fn, void *arg)
{
	struct dns_q *q = malloc(sizeof(*q));
	size_t len = strlen(name);

	if (!q || len > DNSBL_NAME_MAX || d->freeing) {
		struct dns_answer a = {.status = !q ? ARES_ENOMEM : ARES_EBADNAME};

		free(q);
		d->st.failed++;
		fn(arg, &a);
		return;
	}
	*q = (struct dns_q){.d = d, .fn = fn, .arg = arg, .type = type};
	snprintf(q->key, sizeof(q->key), "%d/", type);
	q->name = q->key + strlen(q->key);
	for (size_t i = 0; i <= len; i++)
		q->key[(size_t)(q->name - q->key) + i] = (char)tolower((unsigned char)name[i]);
	if (d->cache) {
		size_t vlen;
		const unsigned char *v = dns_cache_get(d->cache, q->key, ring_clock_ms(), &vlen);

		if (v && vlen > sizeof(int)) {
			struct dns_answer a = {.abuf = v + sizeof(int),
			                       .alen = (int)(vlen - sizeof(int)),
			                       .cached = true};

			memcpy(&a.status, v, sizeof(int));
			d->st.cached++;
			free(q);
			fn(arg, &a);
			return;
		}
	}
	d->inflight++;
	d->st.sent++;
	ares_query(d->ch, q->name, 1 /* C_IN */, type, on_answer, q); /* may answer at once */
	dns_timer_sync(d);
}

unsigned dns_inflight(const struct dns *d)
{
	return d->inflight;
}

const struct dns_stats *dns_stats(const struct dns *d)
{
	return &d->st;
}

struct dns *dns_new(struct ring *r, unsigned op_poll, unsigned op_timer, const struct dns_conf *dc,
                    char *err, size_t errlen)
{
	struct ares_options o = {0};
	struct dns *d = calloc(1, sizeof(*d));
	int rc;

	if (!d) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->r = r;
	d->op_poll = op_poll;
	d->op_timer = op_timer;
	o.sock_state_cb = on_sock_state;
	o.sock_state_cb_data = d;
	o.timeout = (int)(dc->timeout_ms ? dc->timeout_ms : 2000);
	o.tries = 2;
	rc = ares_init_options(&d->ch, &o,
	                       ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(d);
		return NULL;
	}
	if (dc->nservers) {
		char csv[CONF_MAX_DNS_SERVERS * 64 + 1] = "";
		size_t len = 0;

		for (unsigned i = 0; i < dc->nservers && len < sizeof(csv) - 1; i++)
			len += (size_t)snprintf(csv + len, sizeof(csv) - len, "%s%s", i ? "," : "",
			                        dc->servers[i]);
		rc = ares_set_servers_ports_csv(d->ch, csv);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "--dns-server %s: %s", csv, ares_strerror(rc));
			ares_destroy(d->ch);
			free(d);
			return NULL;
		}
	}
	if (dc->cache_size && !(d->cache = dns_cache_new(dc->cache_size))) {
		snprintf(err, errlen, "out of memory for the DNS cache");
		ares_destroy(d->ch);
		free(d);
		return NULL;
	}
	return d;
}

void dns_free(struct dns *d)
{
	struct dns_sock *s, *next;

	if (!d)
		return;
	d->freeing = true;
	ares_destroy(d->ch); /* answers what is in flight; closes the sockets */
	for (s = d->socks; s; s = next) {
		next = s->next;
		free(s);
	}
	dns_cache_free(d->cache);
	free(d);
}
