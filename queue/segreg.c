/* segreg: the segment registry and the route hash. See segreg.h. */
#include "queue/segreg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void segreg_init(struct seg_registry *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
}

void segreg_fini(struct seg_registry *r)
{
	for (unsigned i = 0; i < SEGREG_CHUNKS && r->chunk[i]; i++) {
		free(r->chunk[i]);
		r->chunk[i] = NULL;
	}
	pthread_mutex_destroy(&r->mu);
}

int segreg_add(struct seg_registry *r, const struct spool_seg_id *id)
{
	unsigned n, c;
	int res;

	pthread_mutex_lock(&r->mu);
	n = r->n;
	c = n / SEGREG_CHUNK;
	if (c >= SEGREG_CHUNKS) {
		res = -ENOSPC;
		goto out;
	}
	if (!r->chunk[c]) {
		r->chunk[c] = calloc(SEGREG_CHUNK, sizeof(*r->chunk[c]));
		if (!r->chunk[c]) {
			res = -ENOMEM;
			goto out;
		}
	}
	r->chunk[c][n % SEGREG_CHUNK].id = *id;
	atomic_init(&r->chunk[c][n % SEGREG_CHUNK].live, 0);
	atomic_init(&r->chunk[c][n % SEGREG_CHUNK].held, 0);
	atomic_init(&r->chunk[c][n % SEGREG_CHUNK].gone, false);
	r->n = n + 1;
	res = (int)n;
out:
	pthread_mutex_unlock(&r->mu);
	return res;
}

const struct spool_seg_id *segreg_get(const struct seg_registry *r, unsigned i)
{
	/* Published to the reader by the queue push that carried <i>. */
	return &r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].id;
}

static _Atomic uint32_t *live_of(struct seg_registry *r, unsigned i)
{
	return &r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].live;
}

/* Relaxed is enough for the count: what the unlinker needs to have seen
 * (the done records, durable) it learnt from its own completions, and the
 * read-modify-writes on one word are totally ordered. */
void segreg_hold(struct seg_registry *r, unsigned i)
{
	atomic_fetch_add_explicit(live_of(r, i), 1, memory_order_relaxed);
	_Atomic uint32_t *held = &r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].held;

	if (atomic_load_explicit(held, memory_order_relaxed) != UINT32_MAX)
		atomic_fetch_add_explicit(held, 1, memory_order_relaxed);
}

uint64_t segreg_live_total(struct seg_registry *r)
{
	uint64_t sum = 0;
	unsigned n;

	/* The lock orders our read of <n> after the entries it counts were
	 * initialised; the counts themselves are read lock-free. */
	pthread_mutex_lock(&r->mu);
	n = r->n;
	pthread_mutex_unlock(&r->mu);
	for (unsigned i = 0; i < n; i++)
		sum += atomic_load_explicit(live_of(r, i), memory_order_relaxed) & ~SEGREG_SEALED;
	return sum;
}

bool segreg_release(struct seg_registry *r, unsigned i)
{
	return atomic_fetch_sub_explicit(live_of(r, i), 1, memory_order_relaxed) ==
	       (SEGREG_SEALED | 1u);
}

bool segreg_finished(struct seg_registry *r, unsigned i)
{
	return atomic_load_explicit(live_of(r, i), memory_order_relaxed) == SEGREG_SEALED;
}

bool segreg_mostly_dead(struct seg_registry *r, unsigned i, unsigned ratio)
{
	uint32_t live = atomic_load_explicit(live_of(r, i), memory_order_relaxed);
	uint32_t held = atomic_load_explicit(&r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].held,
	                                     memory_order_relaxed);

	if (!(live & SEGREG_SEALED))
		return false;
	live &= ~SEGREG_SEALED;
	return live && (uint64_t)live * ratio <= held;
}

void segreg_recovered(struct seg_registry *r, unsigned i)
{
	atomic_store_explicit(&r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].held, UINT32_MAX,
	                      memory_order_relaxed);
}

bool segreg_seal(struct seg_registry *r, unsigned i)
{
	return atomic_fetch_or_explicit(live_of(r, i), SEGREG_SEALED, memory_order_relaxed) == 0;
}

/* Release/acquire: whoever sees <gone> also sees what its setter did
 * before (the kernel has the unlink and the fsync already: they completed
 * before the store). */
void segreg_set_gone(struct seg_registry *r, unsigned i)
{
	atomic_store_explicit(&r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].gone, true,
	                      memory_order_release);
}

bool segreg_gone(struct seg_registry *r, unsigned i)
{
	return atomic_load_explicit(&r->chunk[i / SEGREG_CHUNK][i % SEGREG_CHUNK].gone,
	                            memory_order_acquire);
}

uint32_t route_hash(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	const unsigned char *p = (const unsigned char *)(at ? at + 1 : "");
	uint32_t h = 2166136261u;

	for (; *p; p++) {
		unsigned char ch = *p >= 'A' && *p <= 'Z' ? (unsigned char)(*p + 32) : *p;

		h = (h ^ ch) * 16777619u;
	}
	return h;
}
