/* segreg: the segment registry and the route hash. Segments of this run
 * and of earlier runs get a small number, so that a queue descriptor
 * (struct mq_item: 16 bytes) can name one; the route hash of a message's
 * first recipient picks the worker that delivers it. Any thread. */
#ifndef RINGMX_QUEUE_SEGREG_H
#define RINGMX_QUEUE_SEGREG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "queue/mq.h"
#include "queue/spool.h"

/* Entries never move once added (chunked), so readers need no lock; adding
 * takes one (only when a segment is opened or recovered: rare). */
#define SEGREG_CHUNK  4096u
#define SEGREG_CHUNKS 1024u
/* The SEALED bit of <live>: nothing more is appended to the segment. */
#define SEGREG_SEALED 0x80000000u
struct segreg_ent {
	struct spool_seg_id id;
	/* Records of the segment still to be delivered (made durable and not
	 * yet done), plus SEGREG_SEALED: a sealed segment at 0 is finished. */
	_Atomic uint32_t live;
	/* Records ever held (segreg_hold()): with <live>, how dead it is. */
	_Atomic uint32_t held;
	/* Set once the segment's unlink is durable (the unlinking worker's
	 * directory fsync after it completed): never cleared. */
	_Atomic bool gone;
};
struct seg_registry {
	pthread_mutex_t mu;
	struct segreg_ent *chunk[SEGREG_CHUNKS];
	unsigned n;
};

/* A message descriptor on the queue: a = segment number << 32 | route hash
 * (the first recipient's domain, which picks the owning worker), b = offset
 * of the record in its segment. */
#define QDESC(segno, hash, off)                                                                    \
	((struct mq_item){((uint64_t)(segno) << 32) | (uint32_t)(hash), (off)})
#define QDESC_SEGNO(it) ((unsigned)((it).a >> 32))

void segreg_init(struct seg_registry *r);
/* Frees the chunks. No other thread may use <r> any more. */
void segreg_fini(struct seg_registry *r);
/* Adds a segment to the registry; returns its number or -ENOSPC/-ENOMEM.
 * Any thread. */
int segreg_add(struct seg_registry *r, const struct spool_seg_id *id);
/* Segment number <i>: valid once a descriptor naming it was received. */
const struct spool_seg_id *segreg_get(const struct seg_registry *r, unsigned i);
/* Live accounting, for reclaiming finished segments while running. The
 * one who sees a segment become sealed with nothing live (exactly one
 * caller does, whichever comes last) unlinks it. Any thread, lock-free.
 * segreg_hold(): a record of segment <i> is durable and will be delivered.
 * segreg_release(): its delivery is over and its done record durable;
 * true when that made the sealed segment finished.
 * segreg_seal(): the segment takes no more records; true when it is
 * finished already. */
void segreg_hold(struct seg_registry *r, unsigned i);
bool segreg_release(struct seg_registry *r, unsigned i);
bool segreg_seal(struct seg_registry *r, unsigned i);
/* True when segment <i> is sealed and has nothing live (it is, or is about
 * to be, unlinked). */
bool segreg_finished(struct seg_registry *r, unsigned i);
/* True when segment <i> is sealed and at most one in <ratio> of the
 * records it ever held is still live (but at least one is): a long-deferred
 * survivor in it is worth moving forward (io/relay). */
bool segreg_mostly_dead(struct seg_registry *r, unsigned i, unsigned ratio);
/* Segment <i> came from an earlier run (recovery): how many records it held
 * then is not known, only its pending ones are, so it counts as mostly dead
 * whatever is live in it. Before the workers start. */
void segreg_recovered(struct seg_registry *r, unsigned i);
/* segreg_set_gone(): finished segment <i> is out of the directory for good
 * (its unlink completed and a directory fsync after it did too). Only the
 * worker that unlinked it calls it, once. segreg_gone(): whether that
 * happened; a done mark naming a gone segment is needed by nobody, and the
 * done log holding it may go (io/commit.c). Any thread, lock-free. */
void segreg_set_gone(struct seg_registry *r, unsigned i);
bool segreg_gone(struct seg_registry *r, unsigned i);

/* Records still to be delivered in all the segments together (the live
 * counts, sealed bits aside): the queue's size of the moment. Walks every
 * segment: for a status line now and then, not per event. Any thread. */
uint64_t segreg_live_total(struct seg_registry *r);

/* Route hash of an address's domain (case-insensitive FNV-1a). */
uint32_t route_hash(const char *addr);

#endif
