/* verify_cache: the shared, bounded cache of next-hop verdicts on
 * recipient addresses, and their persisted record form. See
 * verify_cache.h. */
#include "core/verify_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

/* How long a TEMP entry, or an expired one, counts as nothing: never
 * fresh for a plain lookup. */
#define NIL UINT32_MAX

/* Keys up to this long live in the entry itself: one cache miss less per
 * lookup, and no allocation (most addresses are shorter). */
#define KEY_INLINE 32 /* with the fields before and after it: 64 octets */

/* One cache line (the array is 64-byte aligned): a lookup's hit reads the
 * bucket head and this line, nothing else; the text of a rejection and
 * the waiters of a probe in flight are behind a pointer. */
struct vc_ent {
	uint64_t hash;
	uint32_t next; /* in its bucket's chain; NIL ends it */
	uint16_t klen;
	uint8_t res; /* enum verify_result */
	uint8_t ref; /* CLOCK: used since the hand last passed */
	union {
		char *p;             /* klen >= KEY_INLINE: owned, NUL after */
		char in[KEY_INLINE]; /* shorter: here, NUL after */
	} key;
	int64_t expires; /* epoch s: fresh while now < expires (PENDING: its deadline) */
	/* Owned; which one by <res>: a probe in flight has no text yet, a
	 * result no waiters any more. */
	union {
		char *text;        /* not PENDING: NUL-terminated; NULL: none */
		uint64_t *waiting; /* PENDING: workers to wake, VERIFY_WMASK_WORDS words */
	} aux;
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct vc_ent) == 64, "a cache entry is one cache line");

struct vc_shard {
	pthread_mutex_t mu;
	uint32_t *heads; /* [nbuckets] */
	uint32_t nbuckets;
	struct vc_ent *ents; /* [cap], <n> used */
	uint32_t n, cap, max;
	uint32_t hand;
} __attribute__((aligned(64)));

struct verify_cache {
	struct vc_shard *s;
	unsigned nshards; /* a power of two */
	pthread_mutex_t jmu;
	struct buf journal;
	size_t journal_max;
};

static const char *ent_key(const struct vc_ent *e)
{
	return e->klen < KEY_INLINE ? e->key.in : e->key.p;
}

static void key_free(struct vc_ent *e)
{
	if (e->klen >= KEY_INLINE)
		free(e->key.p);
}

/* Frees the text or the waiters, whichever <e> holds. */
static void aux_free(struct vc_ent *e)
{
	if (e->res == VERIFY_PENDING)
		free(e->aux.waiting);
	else
		free(e->aux.text);
	e->aux.text = NULL;
}

static uint64_t fnv64(const char *p, size_t n)
{
	uint64_t h = fnv1a64(p, n);

	return h ^ (h >> 29);
}

static uint32_t pow2_at_least(size_t n)
{
	uint32_t v = 1;

	while (v < n && v < (1u << 30))
		v <<= 1;
	return v;
}

struct verify_cache *verify_cache_new(size_t max_entries)
{
	struct verify_cache *vc = calloc(1, sizeof(*vc));
	size_t per;

	if (!vc)
		return NULL;
	if (max_entries < 1)
		max_entries = 1;
	/* Small caches (tests, tiny gateways) in one shard, so that the bound
	 * is exact; large ones in 64, so that workers rarely meet on a lock. */
	vc->nshards = max_entries >= 64 * 64 ? 64 : 1;
	per = (max_entries + vc->nshards - 1) / vc->nshards;
	if (per > UINT32_MAX / 2)
		per = UINT32_MAX / 2;
	vc->s = aligned_alloc(64, vc->nshards * sizeof(*vc->s));
	if (!vc->s) {
		free(vc);
		return NULL;
	}
	memset(vc->s, 0, vc->nshards * sizeof(*vc->s));
	for (unsigned i = 0; i < vc->nshards; i++) {
		struct vc_shard *sh = &vc->s[i];

		pthread_mutex_init(&sh->mu, NULL);
		sh->max = (uint32_t)per;
		sh->nbuckets = pow2_at_least(per);
		sh->heads = malloc(sh->nbuckets * sizeof(*sh->heads));
		if (!sh->heads) {
			vc->nshards = i + 1;
			verify_cache_free(vc);
			return NULL;
		}
		memset(sh->heads, 0xff, sh->nbuckets * sizeof(*sh->heads));
	}
	pthread_mutex_init(&vc->jmu, NULL);
	vc->journal = (struct buf)BUF_INIT;
	vc->journal_max = 16u << 20;
	return vc;
}

void verify_cache_free(struct verify_cache *vc)
{
	if (!vc)
		return;
	for (unsigned i = 0; i < vc->nshards; i++) {
		struct vc_shard *sh = &vc->s[i];

		for (uint32_t k = 0; k < sh->n; k++) {
			key_free(&sh->ents[k]);
			aux_free(&sh->ents[k]);
		}
		free(sh->ents);
		free(sh->heads);
		pthread_mutex_destroy(&sh->mu);
	}
	free(vc->s);
	pthread_mutex_destroy(&vc->jmu);
	buf_free(&vc->journal);
	free(vc);
}

size_t verify_key(char *out, size_t outlen, const char *addr, size_t len)
{
	const char *at = NULL;

	if (len == 0 || len >= outlen || len > VERIFY_KEY_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (addr[i] == '@')
			at = addr + i;
	for (size_t i = 0; i < len; i++) {
		char ch = addr[i];

		if (at && addr + i > at && ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		out[i] = ch;
	}
	out[len] = '\0';
	return len;
}

static struct vc_shard *shard_of(struct verify_cache *vc, uint64_t h)
{
	return &vc->s[(h >> 58) & (vc->nshards - 1)];
}

static uint32_t *bucket_of(struct vc_shard *sh, uint64_t h)
{
	return &sh->heads[h & (sh->nbuckets - 1)];
}

static struct vc_ent *find(struct vc_shard *sh, uint64_t h, const char *key, size_t klen)
{
	for (uint32_t i = *bucket_of(sh, h); i != NIL; i = sh->ents[i].next) {
		struct vc_ent *e = &sh->ents[i];

		if (e->hash == h && e->klen == klen && memcmp(ent_key(e), key, klen) == 0)
			return e;
	}
	return NULL;
}

static void copy_text(const struct vc_ent *e, char *text, size_t tlen)
{
	if (!text || !tlen)
		return;
	text[0] = '\0';
	if (e->res != VERIFY_PENDING && e->aux.text) {
		size_t n = strlen(e->aux.text);

		if (n >= tlen)
			n = tlen - 1;
		memcpy(text, e->aux.text, n);
		text[n] = '\0';
	}
}

/* What <e> says at <now> to a plain lookup (<temp_ok> false) or a waiter. */
static enum verify_result ent_state(const struct vc_ent *e, int64_t now, bool temp_ok)
{
	if (now >= e->expires)
		return VERIFY_NONE;
	if (e->res == VERIFY_TEMP && !temp_ok)
		return VERIFY_NONE;
	return (enum verify_result)e->res;
}

static void unlink_ent(struct vc_shard *sh, uint32_t idx)
{
	struct vc_ent *e = &sh->ents[idx];

	for (uint32_t *pp = bucket_of(sh, e->hash); *pp != NIL; pp = &sh->ents[*pp].next) {
		if (*pp == idx) {
			*pp = e->next;
			return;
		}
	}
}

/* A slot for a new entry: a fresh one while below the bound, else the
 * CLOCK victim (expired or not used since the hand passed; a probe in
 * flight is never taken). NIL when there is none (all in flight) or no
 * memory. The victim is unlinked and emptied. */
static uint32_t slot_new(struct vc_shard *sh, int64_t now)
{
	if (sh->n < sh->max) {
		if (sh->n == sh->cap) {
			uint32_t cap = sh->cap ? sh->cap * 2 : 16;
			struct vc_ent *ne;

			if (cap > sh->max)
				cap = sh->max;
			ne = aligned_alloc(64, (size_t)cap * sizeof(*ne));
			if (!ne)
				return NIL;
			if (sh->n)
				memcpy(ne, sh->ents, (size_t)sh->n * sizeof(*ne));
			free(sh->ents);
			sh->ents = ne;
			sh->cap = cap;
		}
		return sh->n++;
	}
	for (uint32_t steps = 0; steps < 2 * sh->n + 1; steps++) {
		uint32_t i = sh->hand;
		struct vc_ent *e = &sh->ents[i];
		bool stale = now >= e->expires;

		sh->hand = (sh->hand + 1) % sh->n;
		if (e->res == VERIFY_PENDING && !stale)
			continue;
		if (e->ref && !stale) {
			e->ref = 0;
			continue;
		}
		unlink_ent(sh, i);
		key_free(e);
		aux_free(e);
		return i;
	}
	return NIL;
}

/* Sets the text of <e> (not PENDING) to <text> (NULL: none). false: no
 * memory. */
static bool set_text(struct vc_ent *e, const char *text)
{
	char *t = NULL;

	if (text && text[0]) {
		size_t n = strnlen(text, VERIFY_TEXT_MAX);

		t = malloc(n + 1);
		if (!t)
			return false;
		memcpy(t, text, n);
		t[n] = '\0';
	}
	free(e->aux.text);
	e->aux.text = t;
	return true;
}

/* The entry of <key>, created (empty, NONE, expired) when absent. NULL:
 * no room or memory. Shard locked. */
static struct vc_ent *find_or_add(struct vc_shard *sh, uint64_t h, const char *key, size_t klen,
                                  int64_t now)
{
	struct vc_ent *e = find(sh, h, key, klen);
	char *k = NULL;
	uint32_t i;

	if (e)
		return e;
	if (klen > VERIFY_KEY_MAX)
		return NULL;
	if (klen >= KEY_INLINE) {
		k = malloc(klen + 1);
		if (!k)
			return NULL;
		memcpy(k, key, klen);
		k[klen] = '\0';
	}
	i = slot_new(sh, now);
	if (i == NIL) {
		free(k);
		return NULL;
	}
	e = &sh->ents[i];
	*e = (struct vc_ent){.hash = h, .klen = (uint16_t)klen, .res = VERIFY_NONE};
	if (k) {
		e->key.p = k;
	} else {
		memcpy(e->key.in, key, klen);
		e->key.in[klen] = '\0';
	}
	e->next = *bucket_of(sh, h);
	*bucket_of(sh, h) = i;
	return e;
}

enum verify_result verify_cache_get(struct verify_cache *vc, const char *key, size_t klen,
                                    int64_t now, bool temp_ok, char *text, size_t tlen)
{
	uint64_t h = fnv64(key, klen);
	struct vc_shard *sh = shard_of(vc, h);
	enum verify_result r = VERIFY_NONE;
	struct vc_ent *e;

	pthread_mutex_lock(&sh->mu);
	e = find(sh, h, key, klen);
	if (e) {
		r = ent_state(e, now, temp_ok);
		if (r != VERIFY_NONE)
			e->ref = 1;
		if (r == VERIFY_REJECT || r == VERIFY_TEMP)
			copy_text(e, text, tlen);
	}
	pthread_mutex_unlock(&sh->mu);
	return r;
}

enum verify_result verify_cache_claim(struct verify_cache *vc, const char *key, size_t klen,
                                      int64_t now, int64_t pend_until, unsigned wid, char *text,
                                      size_t tlen)
{
	uint64_t h = fnv64(key, klen);
	struct vc_shard *sh = shard_of(vc, h);
	enum verify_result r;
	struct vc_ent *e;

	pthread_mutex_lock(&sh->mu);
	e = find_or_add(sh, h, key, klen, now);
	if (!e) {
		pthread_mutex_unlock(&sh->mu);
		return VERIFY_NONE;
	}
	r = ent_state(e, now, false);
	if (r == VERIFY_OK || r == VERIFY_REJECT) {
		e->ref = 1;
		if (r == VERIFY_REJECT)
			copy_text(e, text, tlen);
	} else if (r == VERIFY_PENDING) {
		if (!e->aux.waiting)
			e->aux.waiting = calloc(VERIFY_WMASK_WORDS, sizeof(*e->aux.waiting));
		if (e->aux.waiting && wid < VERIFY_WORKERS)
			e->aux.waiting[wid / 64] |= 1ull << (wid % 64);
	} else {
		/* Nothing fresh: ours to probe. A stale PENDING (its worker
		 * went away, or it overran) is taken over, its waiters kept. */
		if (e->res != VERIFY_PENDING)
			aux_free(e); /* its old text; no waiters yet */
		e->res = VERIFY_PENDING;
		e->expires = pend_until;
		e->ref = 1;
	}
	pthread_mutex_unlock(&sh->mu);
	return r;
}

int verify_cache_put(struct verify_cache *vc, const char *key, size_t klen, enum verify_result res,
                     const char *text, int64_t expires, int64_t now, uint64_t *woken)
{
	uint64_t h = fnv64(key, klen);
	struct vc_shard *sh = shard_of(vc, h);
	struct vc_ent *e;
	int err = 0;

	if (res != VERIFY_OK && res != VERIFY_REJECT && res != VERIFY_TEMP)
		return -EINVAL;
	pthread_mutex_lock(&sh->mu);
	e = find_or_add(sh, h, key, klen, now);
	if (!e) {
		pthread_mutex_unlock(&sh->mu);
		return -ENOMEM;
	}
	if (e->res == VERIFY_PENDING) {
		if (woken && e->aux.waiting)
			for (unsigned i = 0; i < VERIFY_WMASK_WORDS; i++)
				woken[i] |= e->aux.waiting[i];
		aux_free(e);
	}
	e->res = (uint8_t)res;
	e->expires = expires;
	e->ref = 1;
	if (!set_text(e, res == VERIFY_OK ? NULL : text))
		err = -ENOMEM; /* the verdict stands; its text is lost */
	pthread_mutex_unlock(&sh->mu);
	if (res == VERIFY_TEMP)
		return err;
	pthread_mutex_lock(&vc->jmu);
	if (vc->journal.len < vc->journal_max)
		verify_rec_encode(&vc->journal, key, klen, res, expires,
		                  res == VERIFY_REJECT ? text : NULL);
	pthread_mutex_unlock(&vc->jmu);
	return err;
}

size_t verify_cache_count(struct verify_cache *vc)
{
	size_t n = 0;

	for (unsigned i = 0; i < vc->nshards; i++) {
		pthread_mutex_lock(&vc->s[i].mu);
		n += vc->s[i].n;
		pthread_mutex_unlock(&vc->s[i].mu);
	}
	return n;
}

int verify_cache_journal_take(struct verify_cache *vc, struct buf *out)
{
	int err = 0;

	pthread_mutex_lock(&vc->jmu);
	if (vc->journal.len) {
		err = buf_append(out, vc->journal.p, vc->journal.len);
		buf_reset(&vc->journal, 64u << 10);
	}
	pthread_mutex_unlock(&vc->jmu);
	return err;
}

void verify_cache_journal_limit(struct verify_cache *vc, size_t max)
{
	pthread_mutex_lock(&vc->jmu);
	vc->journal_max = max;
	pthread_mutex_unlock(&vc->jmu);
}

ssize_t verify_cache_dump(struct verify_cache *vc, struct buf *out, int64_t now)
{
	ssize_t n = 0;

	for (unsigned i = 0; i < vc->nshards; i++) {
		struct vc_shard *sh = &vc->s[i];
		int err = 0;

		pthread_mutex_lock(&sh->mu);
		for (uint32_t k = 0; k < sh->n && !err; k++) {
			const struct vc_ent *e = &sh->ents[k];

			if ((e->res != VERIFY_OK && e->res != VERIFY_REJECT) || now >= e->expires)
				continue;
			err =
			    verify_rec_encode(out, ent_key(e), e->klen, (enum verify_result)e->res,
			                      e->expires, e->aux.text);
			n++;
		}
		pthread_mutex_unlock(&sh->mu);
		if (err)
			return err;
	}
	return n;
}

/* ---- Records ---- */

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static unsigned get16(const unsigned char *p)
{
	return p[0] | (unsigned)p[1] << 8;
}

int verify_rec_encode(struct buf *b, const char *key, size_t klen, enum verify_result res,
                      int64_t expires, const char *text)
{
	size_t tlen = text ? strnlen(text, VERIFY_TEXT_MAX) : 0, start = b->len, total;
	unsigned char *p;
	uint64_t x = (uint64_t)expires;
	uint32_t sum;

	if ((res != VERIFY_OK && res != VERIFY_REJECT) || klen == 0 || klen > VERIFY_KEY_MAX)
		return -EINVAL;
	total = VERIFY_REC_HDR + klen + tlen + 4;
	if (buf_reserve(b, total))
		return -ENOMEM;
	p = (unsigned char *)b->p + start;
	p[0] = 1;
	p[1] = (unsigned char)res;
	put16(p + 2, (unsigned)klen);
	put16(p + 4, (unsigned)tlen);
	put16(p + 6, 0);
	for (int i = 0; i < 8; i++)
		p[8 + i] = (unsigned char)(x >> (8 * i));
	memcpy(p + VERIFY_REC_HDR, key, klen);
	if (tlen)
		memcpy(p + VERIFY_REC_HDR + klen, text, tlen);
	sum = fnv1a32(p, total - 4);
	for (int i = 0; i < 4; i++)
		p[total - 4 + i] = (unsigned char)(sum >> (8 * i));
	b->len = start + total;
	return 0;
}

ssize_t verify_rec_decode(const char *p0, size_t len, struct verify_rec *r)
{
	const unsigned char *p = (const unsigned char *)p0;
	size_t klen, tlen, total;
	uint64_t x = 0;
	uint32_t sum = 0;

	if (len < VERIFY_REC_HDR)
		return 0;
	if (p[0] != 1 || (p[1] != VERIFY_OK && p[1] != VERIFY_REJECT) || get16(p + 6) != 0)
		return -1;
	klen = get16(p + 2);
	tlen = get16(p + 4);
	if (klen == 0 || klen > VERIFY_KEY_MAX || tlen > VERIFY_TEXT_MAX)
		return -1;
	total = VERIFY_REC_HDR + klen + tlen + 4;
	if (len < total)
		return 0;
	for (int i = 0; i < 4; i++)
		sum |= (uint32_t)p[total - 4 + i] << (8 * i);
	if (sum != fnv1a32(p, total - 4))
		return -1;
	for (int i = 0; i < 8; i++)
		x |= (uint64_t)p[8 + i] << (8 * i);
	*r = (struct verify_rec){
	    .res = (enum verify_result)p[1],
	    .expires = (int64_t)x,
	    .key = p0 + VERIFY_REC_HDR,
	    .klen = klen,
	    .text = p0 + VERIFY_REC_HDR + klen,
	    .tlen = tlen,
	};
	return (ssize_t)total;
}

size_t verify_cache_load(struct verify_cache *vc, const char *p, size_t len, int64_t now,
                         size_t *used)
{
	size_t off = 0, n = 0;
	struct verify_rec r;
	ssize_t k;
	char text[VERIFY_TEXT_MAX + 1];

	while (off < len && (k = verify_rec_decode(p + off, len - off, &r)) > 0) {
		uint64_t h = fnv64(r.key, r.klen);
		struct vc_shard *sh = shard_of(vc, h);
		struct vc_ent *e;

		off += (size_t)k;
		n++;
		memcpy(text, r.text, r.tlen);
		text[r.tlen] = '\0';
		pthread_mutex_lock(&sh->mu);
		if (now >= r.expires) {
			/* Expired: not taken, but it still replaces an earlier
			 * record of the key (a 5xx after a 2xx). */
			e = find(sh, h, r.key, r.klen);
			if (e && e->res != VERIFY_PENDING)
				e->expires = 0;
			pthread_mutex_unlock(&sh->mu);
			continue;
		}
		e = find_or_add(sh, h, r.key, r.klen, now);
		if (e && e->res != VERIFY_PENDING) {
			e->res = (uint8_t)r.res;
			e->expires = r.expires;
			set_text(e, r.tlen ? text : NULL);
		}
		pthread_mutex_unlock(&sh->mu);
	}
	if (used)
		*used = off;
	return n;
}
