/* route: hands descriptors of spooled messages to the worker that owns
 * their route (route_hash of the first recipient's domain % workers)
 * through the SPSC mesh of queue/mq: gathered per destination in an outbox
 * during a round, pushed in batches, with an IORING_OP_MSG_RING wake-up
 * only when the consumer announced that it is going to sleep (mq_push()'s
 * <wake>). Worker thread only. */
#ifndef RINGMX_IO_ROUTE_H
#define RINGMX_IO_ROUTE_H

#include "io/types-t.h"

/* Gathers <it> for its owner; pushes when that outbox is full. */
void route_outbox_add(struct worker *w, struct mq_item it);
/* Pushes every gathered outbox. */
void route_outbox_flush(struct worker *w);
/* Pushes <n> descriptors to worker <to> now; what its ring cannot take
 * waits in w->overflow (the loop retries it each tick). */
void route_push(struct worker *w, unsigned to, const struct mq_item *it, unsigned n);

#endif
