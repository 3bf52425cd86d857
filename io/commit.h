/* commit: the worker's spool writer. Messages that completed in one round
 * of completions are written with one writev each into the worker's
 * segment, linked to ONE fdatasync (group commit); their answers are given
 * only when that fdatasync is done. While a batch is on the disk the next
 * one gathers. Worker thread only. */
#ifndef RINGMX_IO_COMMIT_H
#define RINGMX_IO_COMMIT_H

#include <stdbool.h>

#include "core/sv.h"
#include "io/worker-t.h"

/* Queues <c>'s complete message for the next group commit. */
void commit_enqueue(struct worker *w, struct conn *c);
/* End of a round: submits the gathered batch (when none is on the disk and
 * the commit window, if any, has passed). */
void commit_flush(struct worker *w);
/* Completions: one message's record write, the batch's fdatasync. */
void commit_on_write(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void commit_on_sync(struct worker *w, struct io_uring_cqe *cqe);
/* Free space against --spool-min-free: sets w->storage_low. */
void commit_check_storage(struct worker *w);
/* Spools a message generated here (a bounce: from the null sender to
 * <rcpt>) in the worker's own segment for local mail, durably, and routes
 * it like any accepted message. Returns 0 or -errno. */
int worker_spool_local(struct worker *w, const char *rcpt, struct sv body, bool body_8bit,
                       bool smtputf8);

#endif
