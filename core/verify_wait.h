/* verify_wait: one worker's table of the recipient addresses its sessions
 * wait on (--verify-recipients, io/verify): one entry per address, with
 * the list of waiters (each a struct verify_waiter embedded in whatever
 * waits: a session), so that a hundred RCPTs for one address are one
 * probe, and its result answers them all. An entry lives while someone
 * waits on it or its probe is in flight (<probing>), whichever is longer.
 * The fields after the list are the caller's (io/verify's probe queue).
 * Sans-I/O, libc only; one thread (the worker's). */
#ifndef RINGMX_CORE_VERIFY_WAIT_H
#define RINGMX_CORE_VERIFY_WAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/verify_cache.h"

struct verify_wait_ent;

struct verify_waiter {
	struct verify_waiter *prev, *next; /* on its entry's list */
	struct verify_wait_ent *e;         /* NULL: not waiting */
};

struct verify_wait_ent {
	struct verify_wait_ent *hnext; /* in its bucket */
	uint64_t hash;
	struct verify_waiter *head, *tail; /* in arrival order */
	unsigned nwait;
	/* The caller's: */
	bool probing;                  /* this worker's probe for it is queued or in flight */
	bool foreign;                  /* another worker probes it (woken by verify_cache_put) */
	struct verify_wait_ent *qnext; /* on a probe queue */
	unsigned route;                /* the next hop's route */
	int64_t deadline;              /* worker clock, ms */
	struct verify_wait_ent *dnext; /* on the list of results to give */
	int res;                       /* enum verify_result, once known */
	char text[VERIFY_TEXT_MAX + 1];
	size_t klen;
	char key[]; /* <klen> octets, NUL after */
};

struct verify_wait {
	struct verify_wait_ent **b; /* [nb] */
	unsigned nb;                /* a power of two */
	unsigned n;                 /* entries */
};

/* An empty table of <nbuckets> (rounded up to a power of two). Returns 0
 * or -ENOMEM. */
int verify_wait_init(struct verify_wait *t, unsigned nbuckets);
/* Frees every entry; waiters still on them are left pointing nowhere
 * (their e is set to NULL). */
void verify_wait_fini(struct verify_wait *t);

struct verify_wait_ent *verify_wait_find(struct verify_wait *t, const char *key, size_t klen);

/* Puts <w> (not waiting) at the end of <key>'s list, creating the entry
 * (*<created> true) when there is none. Returns the entry, or NULL when
 * out of memory (<w> not waiting). */
struct verify_wait_ent *verify_wait_join(struct verify_wait *t, const char *key, size_t klen,
                                         struct verify_waiter *w, bool *created);

/* Takes <w> off its entry's list (no-op when not waiting). The entry is
 * freed when nobody waits and it is not probing. */
void verify_wait_leave(struct verify_wait *t, struct verify_waiter *w);

/* The probe of <e> is over: takes every waiter off it, in arrival order
 * (each one's e NULL, linked by next), frees the entry, and returns the
 * first of that chain (NULL: nobody waited). */
struct verify_waiter *verify_wait_finish(struct verify_wait *t, struct verify_wait_ent *e);

/* Calls <fn> for every entry (which may finish it). */
void verify_wait_each(struct verify_wait *t, void (*fn)(struct verify_wait_ent *e, void *arg),
                      void *arg);

#endif
