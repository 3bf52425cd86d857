/* spill: the committer's second way in. A message larger than
 * --data-buffer is not held whole in memory: its content goes to the disk
 * while it arrives, into a segment of its own (one record, the ordinary
 * queue/spool format), and the message exists only once that record is
 * sealed and durable. Readers, the relay, recovery and reclamation see an
 * ordinary segment.
 *
 * The record's header and envelope come first in the file but are written
 * last: the content goes at its final offset as it comes, each write
 * carrying the crc on; at the end the tail of the content, then the header
 * (sealed with the body length and a crc combined from the header's and
 * the rest's, crc32c_combine()) and the envelope at offset 0, one
 * fdatasync and an fsync of the spool directory, linked in that order,
 * and only then is the owner answered. Until the header is there the file
 * starts with zeros, which recovery reads as a torn segment with nothing in
 * it, and deletes: a message cut off by a crash or a disconnect never
 * becomes one. Worker thread only. */
#ifndef RINGMX_IO_SPILL_H
#define RINGMX_IO_SPILL_H

#include <stdbool.h>

#include "io/types-t.h"

/* In place, before first use: no message. A write buffer keeps up to
 * <keep> bytes of memory between chunks. */
void spill_init(struct spill *sp, spill_fn *written, size_t keep);
/* True when no operation of <sp> is in flight (the owner may free it). */
static inline bool spill_idle(const struct spill *sp)
{
	return sp->inflight == 0;
}
/* True while a message streams (opened, not yet answered or abandoned). */
static inline bool spill_active(const struct spill *sp)
{
	return sp->fd >= 0 && !sp->aborted && !sp->fin;
}
/* Content bytes in memory on their way to the disk. */
size_t spill_held(const struct spill *sp);
/* Frees the write buffers' memory (no write in flight). */
void spill_fini(struct spill *sp);

/* Starts a message: creates its segment. <rec> holds what spool_rec_open()
 * made (header of zeros, envelope), <rcvd> the Received: header; both stay
 * the owner's, unchanged, until the message is answered or abandoned.
 * Returns 0 or -errno (nothing left behind). */
int spill_open(struct worker *w, struct spill *sp, const struct buf *rec, const struct buf *rcvd);
/* The same with the head not known yet (io/milter_stream: the filters
 * may still change the header block and the envelope): the content goes
 * at offset <at>, the record's start stays zeros, and spill_finish()'s
 * iov[0] and iov[1] (header and envelope, then the header block) must
 * fill [0, <at>) exactly. Returns 0 or -errno. */
int spill_open_body(struct worker *w, struct spill *sp, uint64_t at);
/* An empty write buffer, or NULL while SPILL_WRITES writes are in flight.
 * The owner moves content into it (smtp_session_body_take() swaps
 * buffers: no copy) and hands it to spill_write(), which writes it at its
 * place; sp->written is called when it completed and its memory is free. */
struct buf *spill_buf(struct spill *sp);
void spill_write(struct worker *w, struct spill *sp, struct buf *b);
/* The content is complete; its tail is in <tail> (possibly empty), the
 * owner's buffer, which it leaves alone until the answer: its bytes are
 * moved (swapped) into a write buffer once no write is in flight. <r>'s
 * iov[0] and iov[1] are <rec> and <rcvd> of spill_open() (the header in
 * iov[0] is filled here), r->done the answer, called from a completion
 * once everything is durable (r->segno and r->off name the record) or
 * failed (-errno; the segment is gone). */
void spill_finish(struct worker *w, struct spill *sp, struct buf *tail, struct commit_rec *r);
/* The transaction ended without a message (refused, reset, disconnected):
 * the segment is closed and unlinked once nothing is in flight. */
void spill_abort(struct worker *w, struct spill *sp);

/* Completions (see enum ud_op). */
void spill_on_write(struct worker *w, void *p, struct io_uring_cqe *cqe);
void spill_on_fin(struct worker *w, void *p, struct io_uring_cqe *cqe);

#endif
