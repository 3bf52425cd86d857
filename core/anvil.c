/* anvil: per-client limits. See anvil.h.
 *
 * Shards of open-addressing tables (linear probing, backward-shift
 * deletion: no tombstones), each behind a test-and-set spinlock; the shard
 * is picked by the key's hash, the slot by the rest of it. */
#include "core/anvil.h"

#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

#define ANVIL_SHARDS 256u

struct anvil_win {
	int64_t win;   /* window number: time / period */
	uint32_t cur;  /* counted in that window */
	uint32_t prev; /* in the one before it */
};

struct anvil_ent {
	struct anvil_key k;
	bool used;
	uint32_t sessions;
	int64_t idle_at; /* no session, and every window over: may go */
	struct anvil_win w[3];
};

/* The limits, a copy in each shard, read and changed under its lock
 * (anvil_set_limits(): a reload changes them while sessions count). */
struct anvil_lim {
	uint32_t max_sessions;
	struct anvil_rate conn, msg, rcpt;
	int64_t keep_ms; /* how long an idle entry matters: twice the longest period */
};

struct anvil_shard {
	atomic_flag lock;
	struct anvil_lim lim;
	size_t n, cap; /* entries in use, at most <cap> */
	size_t hand;   /* where the search for an idle entry to evict goes on */
	size_t mask;   /* slots - 1 (slots a power of two >= 2 cap) */
	struct anvil_ent *v;
} __attribute__((aligned(64)));

struct anvil {
	unsigned prefix4, prefix6;
	unsigned nshards;
	struct anvil_shard *s;
};

enum { W_CONN, W_MSG, W_RCPT };

int anvil_rate_parse(const char *s, struct anvil_rate *r)
{
	char *end;
	unsigned long n = strtoul(s, &end, 10), p, mult;

	if (end == s || *end != '/' || n == 0 || n > UINT32_MAX || s[0] == '-')
		return -1;
	s = end + 1;
	p = strtoul(s, &end, 10);
	if (end == s || s[0] == '-' || p == 0)
		return -1;
	switch (*end) {
	case 's':
		mult = 1000;
		break;
	case 'm':
		mult = 60000;
		break;
	case 'h':
		mult = 3600000;
		break;
	case 'd':
		mult = 86400000;
		break;
	default:
		return -1;
	}
	if (end[1] != '\0' || p > 7 * 86400000ul / mult)
		return -1; /* a week at most */
	r->n = (uint32_t)n;
	r->period_ms = (uint32_t)(p * mult);
	return 0;
}

static uint64_t key_hash(const struct anvil_key *k)
{
	uint64_t h = fnv1a64(k->b, sizeof(k->b));

	h ^= h >> 31;
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

struct anvil *anvil_new(const struct anvil_conf *c)
{
	struct anvil *a = calloc(1, sizeof(*a));
	size_t per, slots = 4;

	if (!a)
		return NULL;
	a->prefix4 = c->prefix4;
	a->prefix6 = c->prefix6;
	a->nshards = c->max_entries >= ANVIL_SHARDS * 16 ? ANVIL_SHARDS : 1;
	per = (c->max_entries + a->nshards - 1) / a->nshards;
	if (per < 4)
		per = 4;
	while (slots < 2 * per)
		slots *= 2;
	a->s = aligned_alloc(64, a->nshards * sizeof(*a->s));
	if (!a->s) {
		free(a);
		return NULL;
	}
	for (unsigned i = 0; i < a->nshards; i++) {
		struct anvil_shard *sh = &a->s[i];

		memset(sh, 0, sizeof(*sh));
		atomic_flag_clear(&sh->lock);
		sh->cap = per;
		sh->mask = slots - 1;
		sh->v = calloc(slots, sizeof(*sh->v));
		if (!sh->v) {
			a->nshards = i;
			anvil_free(a);
			return NULL;
		}
	}
	anvil_set_limits(a, c);
	return a;
}

void anvil_free(struct anvil *a)
{
	if (!a)
		return;
	for (unsigned i = 0; i < a->nshards; i++)
		free(a->s[i].v);
	free(a->s);
	free(a);
}

int anvil_key_of(const struct anvil *a, const struct sockaddr *sa, struct anvil_key *k)
{
	const uint8_t *src;
	unsigned bits;
	size_t len;

	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET) {
		src = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		len = 4;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		src = a6->s6_addr;
		len = 16;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			src += 12;
			len = 4;
		}
	} else {
		return -1;
	}
	k->b[0] = len == 4 ? 4 : 6;
	bits = len == 4 ? a->prefix4 : a->prefix6;
	if (bits > len * 8)
		bits = (unsigned)len * 8;
	memcpy(k->b + 1, src, bits / 8);
	if (bits % 8)
		k->b[1 + bits / 8] = (uint8_t)(src[bits / 8] & (0xff00u >> (bits % 8)));
	return 0;
}

/* A spinlock that yields: held for a few dozen instructions, but its
 * holder may lose its CPU (more threads than cores), and spinning out a
 * whole time slice behind it would cost milliseconds. */
static void shard_acquire(struct anvil_shard *sh)
{
	for (unsigned spins = 0; atomic_flag_test_and_set_explicit(&sh->lock, memory_order_acquire);
	     spins++) {
		if (spins >= 64) {
			sched_yield();
			spins = 0;
		}
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
}

static struct anvil_shard *shard_lock(struct anvil *a, uint64_t h)
{
	struct anvil_shard *sh = &a->s[(h >> 56) % a->nshards];

	shard_acquire(sh);
	return sh;
}

static void shard_unlock(struct anvil_shard *sh)
{
	atomic_flag_clear_explicit(&sh->lock, memory_order_release);
}

void anvil_set_limits(struct anvil *a, const struct anvil_conf *c)
{
	struct anvil_lim l = {
	    .max_sessions = c->max_sessions, .conn = c->conn, .msg = c->msg, .rcpt = c->rcpt};
	uint32_t longest = 0;

	for (const struct anvil_rate *r = &c->conn; r <= &c->rcpt; r++)
		if (r->n && r->period_ms > longest)
			longest = r->period_ms;
	l.keep_ms = 2 * (int64_t)longest;
	for (unsigned i = 0; i < a->nshards; i++) {
		shard_acquire(&a->s[i]);
		a->s[i].lim = l;
		shard_unlock(&a->s[i]);
	}
}

static bool ent_idle(const struct anvil_ent *e, int64_t now)
{
	return e->sessions == 0 && now >= e->idle_at;
}

/* Removes slot <i> (backward shift: the entries after it that probed past
 * it move up, so no lookup ever stops short). */
static void slot_delete(struct anvil_shard *sh, size_t i)
{
	size_t j = i;

	sh->v[i].used = false;
	sh->n--;
	for (;;) {
		j = (j + 1) & sh->mask;
		if (!sh->v[j].used)
			return;
		size_t home = (size_t)key_hash(&sh->v[j].k) & sh->mask;

		/* Moves up when its home is not in (i, j] cyclically. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			sh->v[i] = sh->v[j];
			sh->v[j].used = false;
			i = j;
		}
	}
}

/* The entry of <k>, made if need be; NULL when the shard is full of busy
 * entries (then nobody is refused). Shard locked. */
static struct anvil_ent *ent_get(struct anvil_shard *sh, const struct anvil_key *k, uint64_t h,
                                 int64_t now)
{
	size_t i = (size_t)h & sh->mask;

	for (;; i = (i + 1) & sh->mask) {
		if (!sh->v[i].used)
			break;
		if (!memcmp(&sh->v[i].k, k, sizeof(*k)))
			return &sh->v[i];
	}
	if (sh->n >= sh->cap) {
		size_t victim = SIZE_MAX;

		/* A clock hand: each search starts where the last one ended. */
		for (size_t s = 0; s <= sh->mask; s++) {
			size_t at = (sh->hand + s) & sh->mask;

			if (sh->v[at].used && ent_idle(&sh->v[at], now)) {
				victim = at;
				sh->hand = (at + 1) & sh->mask;
				break;
			}
		}
		if (victim == SIZE_MAX)
			return NULL;
		slot_delete(sh, victim);
		for (i = (size_t)h & sh->mask; sh->v[i].used; i = (i + 1) & sh->mask)
			;
	}
	memset(&sh->v[i], 0, sizeof(sh->v[i]));
	sh->v[i].k = *k;
	sh->v[i].used = true;
	sh->n++;
	return &sh->v[i];
}

/* The sliding-window check of rate <r> in window <w>: true (and counted)
 * when one more fits. */
static bool rate_take(const struct anvil_rate *r, struct anvil_win *w, int64_t now)
{
	int64_t win, into;

	if (!r->n)
		return true;
	win = now / r->period_ms;
	if (w->win != win) {
		w->prev = w->win == win - 1 ? w->cur : 0;
		w->cur = 0;
		w->win = win;
	}
	into = now - win * r->period_ms;
	if (!anvil_rate_fits(r, w->prev, w->cur, into))
		return false;
	w->cur++;
	return true;
}

bool anvil_rate_fits(const struct anvil_rate *r, uint64_t prev, uint64_t cur, int64_t into_ms)
{
	uint64_t est;

	if (!r->n)
		return true;
	if (into_ms < 0)
		into_ms = 0;
	if (into_ms > r->period_ms)
		into_ms = r->period_ms;
	/* The previous window's share of the last <period>, plus this one's. */
	est = prev * (uint64_t)(r->period_ms - into_ms) / r->period_ms + cur;
	return est < r->n;
}

static void touch(const struct anvil_shard *sh, struct anvil_ent *e, int64_t now)
{
	e->idle_at = now + sh->lim.keep_ms;
}

static enum anvil_verdict connect_take(struct anvil *a, const struct anvil_key *k, int64_t now_ms,
                                       bool rate)
{
	uint64_t h = key_hash(k);
	struct anvil_shard *sh = shard_lock(a, h);
	struct anvil_ent *e = ent_get(sh, k, h, now_ms);
	enum anvil_verdict v = ANVIL_OK;

	if (e) {
		if (sh->lim.max_sessions && e->sessions >= sh->lim.max_sessions)
			v = ANVIL_SESSIONS;
		else if (rate && !rate_take(&sh->lim.conn, &e->w[W_CONN], now_ms))
			v = ANVIL_RATE;
		else
			e->sessions++;
		touch(sh, e, now_ms);
	}
	shard_unlock(sh);
	return v;
}

enum anvil_verdict anvil_connect(struct anvil *a, const struct anvil_key *k, int64_t now_ms)
{
	return connect_take(a, k, now_ms, true);
}

enum anvil_verdict anvil_connect_sessions(struct anvil *a, const struct anvil_key *k,
                                          int64_t now_ms)
{
	return connect_take(a, k, now_ms, false);
}

void anvil_disconnect(struct anvil *a, const struct anvil_key *k, int64_t now_ms)
{
	uint64_t h = key_hash(k);
	struct anvil_shard *sh = shard_lock(a, h);
	size_t i = (size_t)h & sh->mask;

	for (; sh->v[i].used; i = (i + 1) & sh->mask) {
		if (!memcmp(&sh->v[i].k, k, sizeof(*k))) {
			if (sh->v[i].sessions)
				sh->v[i].sessions--;
			touch(sh, &sh->v[i], now_ms);
			break;
		}
	}
	shard_unlock(sh);
}

static bool take(struct anvil *a, unsigned which, const struct anvil_key *k, int64_t now_ms)
{
	uint64_t h = key_hash(k);
	struct anvil_shard *sh = shard_lock(a, h);
	const struct anvil_rate *r = which == W_CONN  ? &sh->lim.conn
	                             : which == W_MSG ? &sh->lim.msg
	                                              : &sh->lim.rcpt;
	struct anvil_ent *e;
	bool ok = true;

	if (r->n && (e = ent_get(sh, k, h, now_ms))) {
		ok = rate_take(r, &e->w[which], now_ms);
		touch(sh, e, now_ms);
	}
	shard_unlock(sh);
	return ok;
}

bool anvil_connection(struct anvil *a, const struct anvil_key *k, int64_t now_ms)
{
	return take(a, W_CONN, k, now_ms);
}

bool anvil_message(struct anvil *a, const struct anvil_key *k, int64_t now_ms)
{
	return take(a, W_MSG, k, now_ms);
}

bool anvil_recipient(struct anvil *a, const struct anvil_key *k, int64_t now_ms)
{
	return take(a, W_RCPT, k, now_ms);
}

size_t anvil_sweep(struct anvil *a, unsigned from, unsigned n, int64_t now_ms)
{
	size_t gone = 0;

	if (!a->nshards)
		return 0;
	for (unsigned k = 0; k < n && k < a->nshards; k++) {
		struct anvil_shard *sh = &a->s[(from + k) % a->nshards];

		shard_acquire(sh);
		for (size_t i = 0; i <= sh->mask;) {
			if (sh->v[i].used && ent_idle(&sh->v[i], now_ms)) {
				slot_delete(sh, i); /* slot <i> may hold a moved entry now */
				gone++;
			} else {
				i++;
			}
		}
		shard_unlock(sh);
	}
	return gone;
}

unsigned anvil_shards(const struct anvil *a)
{
	return a->nshards;
}

size_t anvil_entries(const struct anvil *a)
{
	size_t n = 0;

	for (unsigned i = 0; i < a->nshards; i++)
		n += a->s[i].n; /* racy: a count for logs and tests */
	return n;
}

size_t anvil_memory(const struct anvil *a)
{
	size_t m = sizeof(*a) + a->nshards * sizeof(*a->s);

	for (unsigned i = 0; i < a->nshards; i++)
		m += (a->s[i].mask + 1) * sizeof(*a->s[i].v);
	return m;
}
