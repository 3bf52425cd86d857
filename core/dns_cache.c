/* dns_cache: a bounded cache with expiry times, and the TTL of a raw DNS
 * answer. See dns_cache.h.
 *
 * The entries are a ring: a new one takes the slot after the last one
 * written, and whatever was there (the oldest) goes; a hash table of
 * chains (slot numbers) finds a key. */
#include "core/dns_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

struct dc_entry {
	char *key; /* NULL: free slot */
	void *val;
	size_t vlen;
	int64_t expires;
	uint32_t hash;
	int next; /* next slot in its chain; -1: end */
};

struct dns_cache {
	unsigned cap, nbuckets, count, at;
	struct dc_entry *e;
	int *bucket; /* first slot of each chain; -1: empty */
};

static uint32_t dc_hash(const char *k)
{
	return fnv1a32(k, strlen(k));
}

struct dns_cache *dns_cache_new(unsigned cap)
{
	struct dns_cache *c;

	if (cap == 0 || cap > 10000000)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cap = cap;
	c->nbuckets = 1;
	while (c->nbuckets < cap)
		c->nbuckets <<= 1;
	c->e = calloc(cap, sizeof(*c->e));
	c->bucket = malloc(c->nbuckets * sizeof(*c->bucket));
	if (!c->e || !c->bucket) {
		dns_cache_free(c);
		return NULL;
	}
	for (unsigned i = 0; i < c->nbuckets; i++)
		c->bucket[i] = -1;
	return c;
}

void dns_cache_free(struct dns_cache *c)
{
	if (!c)
		return;
	if (c->e)
		for (unsigned i = 0; i < c->cap; i++) {
			free(c->e[i].key);
			free(c->e[i].val);
		}
	free(c->e);
	free(c->bucket);
	free(c);
}

static int dc_find(const struct dns_cache *c, const char *key, uint32_t h)
{
	for (int i = c->bucket[h & (c->nbuckets - 1)]; i >= 0; i = c->e[i].next)
		if (c->e[i].hash == h && strcmp(c->e[i].key, key) == 0)
			return i;
	return -1;
}

/* Takes slot <i> out of its chain and frees what it holds. */
static void dc_drop(struct dns_cache *c, int i)
{
	struct dc_entry *e = &c->e[i];
	int *pp = &c->bucket[e->hash & (c->nbuckets - 1)];

	while (*pp != i)
		pp = &c->e[*pp].next;
	*pp = e->next;
	free(e->key);
	free(e->val);
	*e = (struct dc_entry){.next = -1};
	c->count--;
}

const void *dns_cache_get(struct dns_cache *c, const char *key, int64_t now, size_t *vlen)
{
	int i = dc_find(c, key, dc_hash(key));

	if (i < 0 || c->e[i].expires <= now)
		return NULL;
	*vlen = c->e[i].vlen;
	return c->e[i].val;
}

int dns_cache_put(struct dns_cache *c, const char *key, const void *val, size_t vlen,
                  int64_t expires)
{
	uint32_t h = dc_hash(key);
	char *k = strdup(key);
	void *v = malloc(vlen ? vlen : 1);
	int i = dc_find(c, key, h);
	struct dc_entry *e;

	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	memcpy(v, val, vlen);
	if (i >= 0)
		dc_drop(c, i);
	i = (int)c->at;
	c->at = (c->at + 1) % c->cap;
	if (c->e[i].key)
		dc_drop(c, i); /* the oldest goes */
	e = &c->e[i];
	*e = (struct dc_entry){.key = k, .val = v, .vlen = vlen, .expires = expires, .hash = h};
	e->next = c->bucket[h & (c->nbuckets - 1)];
	c->bucket[h & (c->nbuckets - 1)] = i;
	c->count++;
	return 0;
}

unsigned dns_cache_count(const struct dns_cache *c)
{
	return c->count;
}

/* ---- raw answers ---- */

static unsigned get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Skips a (possibly compressed) name at *off; -1 if it runs past <len>. */
static int skip_name(const unsigned char *p, size_t len, size_t *off)
{
	size_t o = *off;

	for (unsigned labels = 0; labels < 128; labels++) {
		if (o >= len)
			return -1;
		if ((p[o] & 0xc0) == 0xc0) {
			if (o + 2 > len)
				return -1;
			*off = o + 2;
			return 0;
		}
		if (p[o] & 0xc0)
			return -1; /* the reserved label types */
		if (p[o] == 0) {
			*off = o + 1;
			return 0;
		}
		o += 1u + p[o];
	}
	return -1;
}

int dns_msg_info(const unsigned char *p, size_t len, struct dns_msg_info *out)
{
	unsigned qd, an, ns;
	size_t off = 12;
	uint32_t ttl = UINT32_MAX;
	bool neg;

	memset(out, 0, sizeof(*out));
	if (len < 12)
		return -1;
	out->rcode = p[3] & 0xf;
	out->truncated = p[2] & 0x2;
	qd = get16(p + 4);
	an = get16(p + 6);
	ns = get16(p + 8);
	out->ancount = an;
	for (unsigned i = 0; i < qd; i++) {
		if (skip_name(p, len, &off) < 0 || off + 4 > len)
			return -1;
		off += 4;
	}
	neg = out->rcode == 3 || (out->rcode == 0 && an == 0);
	for (unsigned i = 0; i < an + ns; i++) {
		unsigned type, rdlen;
		uint32_t rttl;

		if (skip_name(p, len, &off) < 0 || off + 10 > len)
			return -1;
		type = get16(p + off);
		rttl = get32(p + off + 4);
		rdlen = get16(p + off + 8);
		off += 10;
		if (off + rdlen > len)
			return -1;
		if (rttl > 0x7fffffffu)
			rttl = 0; /* RFC 2181 8: a TTL with the top bit set is zero */
		if (i < an && !neg && rttl < ttl)
			ttl = rttl;
		if (i >= an && neg && type == 6) { /* SOA: MNAME RNAME 5 x 32 bits */
			size_t so = off;
			uint32_t min;

			if (skip_name(p, len, &so) < 0 || skip_name(p, len, &so) < 0 ||
			    so + 20 > off + rdlen)
				return -1;
			min = get32(p + so + 16);
			if (min > 0x7fffffffu)
				min = 0;
			if (rttl < ttl)
				ttl = rttl;
			if (min < ttl)
				ttl = min;
		}
		off += rdlen;
	}
	out->ttl = ttl == UINT32_MAX ? 0 : ttl;
	return 0;
}
