/* verify_wait: a worker's coalescing table of the addresses its sessions
 * wait on. See verify_wait.h. */
#include "core/verify_wait.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

static uint64_t hash_of(const char *p, size_t n)
{
	uint64_t h = fnv1a64(p, n);

	return h ^ (h >> 31);
}

int verify_wait_init(struct verify_wait *t, unsigned nbuckets)
{
	unsigned nb = 1;

	while (nb < nbuckets && nb < (1u << 24))
		nb <<= 1;
	*t = (struct verify_wait){0};
	t->b = calloc(nb, sizeof(*t->b));
	if (!t->b)
		return -ENOMEM;
	t->nb = nb;
	return 0;
}

void verify_wait_fini(struct verify_wait *t)
{
	for (unsigned i = 0; t->b && i < t->nb; i++) {
		struct verify_wait_ent *e = t->b[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			for (struct verify_waiter *w = e->head; w; w = w->next)
				w->e = NULL;
			free(e);
		}
	}
	free(t->b);
	*t = (struct verify_wait){0};
}

struct verify_wait_ent *verify_wait_find(struct verify_wait *t, const char *key, size_t klen)
{
	uint64_t h = hash_of(key, klen);

	for (struct verify_wait_ent *e = t->b[h & (t->nb - 1)]; e; e = e->hnext)
		if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
			return e;
	return NULL;
}

struct verify_wait_ent *verify_wait_join(struct verify_wait *t, const char *key, size_t klen,
                                         struct verify_waiter *w, bool *created)
{
	struct verify_wait_ent *e = verify_wait_find(t, key, klen);

	*created = false;
	if (!e) {
		uint64_t h = hash_of(key, klen);

		e = calloc(1, sizeof(*e) + klen + 1);
		if (!e)
			return NULL;
		e->hash = h;
		e->klen = klen;
		memcpy(e->key, key, klen);
		e->hnext = t->b[h & (t->nb - 1)];
		t->b[h & (t->nb - 1)] = e;
		t->n++;
		*created = true;
	}
	w->e = e;
	w->next = NULL;
	w->prev = e->tail;
	if (e->tail)
		e->tail->next = w;
	else
		e->head = w;
	e->tail = w;
	e->nwait++;
	return e;
}

static void ent_free(struct verify_wait *t, struct verify_wait_ent *e)
{
	struct verify_wait_ent **pp = &t->b[e->hash & (t->nb - 1)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == e) {
			*pp = e->hnext;
			break;
		}
	}
	t->n--;
	free(e);
}

void verify_wait_leave(struct verify_wait *t, struct verify_waiter *w)
{
	struct verify_wait_ent *e = w->e;

	if (!e)
		return;
	if (w->prev)
		w->prev->next = w->next;
	else
		e->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		e->tail = w->prev;
	w->prev = w->next = NULL;
	w->e = NULL;
	e->nwait--;
	if (!e->nwait && !e->probing)
		ent_free(t, e);
}

struct verify_waiter *verify_wait_finish(struct verify_wait *t, struct verify_wait_ent *e)
{
	struct verify_waiter *first = e->head;

	for (struct verify_waiter *w = first; w; w = w->next) {
		w->e = NULL;
		w->prev = NULL;
	}
	ent_free(t, e);
	return first;
}

void verify_wait_each(struct verify_wait *t, void (*fn)(struct verify_wait_ent *e, void *arg),
                      void *arg)
{
	for (unsigned i = 0; i < t->nb; i++) {
		struct verify_wait_ent *e = t->b[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			fn(e, arg);
		}
	}
}
