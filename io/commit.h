/* commit: the worker's spool writer, the only one. Records that completed
 * in one round of completions (accepted messages, bounces) are written
 * into the worker's segment with ONE writev with RWF_DSYNC (group commit:
 * one fdatasync for the batch), by the ring, or by the worker thread itself
 * while it has at most one session; each is answered through its callback
 * only once that write is done. While a batch is on the disk the next one
 * gathers. It also appends the done and defer logs. It knows no session
 * and no relay. Worker thread only. */
#ifndef RINGMX_IO_COMMIT_H
#define RINGMX_IO_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "io/types-t.h"

/* In place, at worker start; <qid_seed> starts the queue-id counter. */
void commit_init(struct worker *w, uint32_t qid_seed);
/* Closes the files. Nothing may be in flight (commit_busy() false). */
void commit_fini(struct worker *w);
/* True while records or log appends are gathering or on the disk. */
bool commit_busy(const struct worker *w);

/* A new queue id in <qid> (SMTP_QID_MAX + 1 bytes), unique within a start. */
void commit_qid(struct worker *w, char *qid, time_t now);
/* Queues <r> for the next group commit; r->iov, r->niov and r->done set by
 * the caller, who keeps <r> and what its views point at until r->done is
 * called (from a later completion: never from inside this call). r->err
 * non-zero: not written, answered with that error at the next flush. */
void commit_submit(struct worker *w, struct commit_rec *r);
/* Appends a done mark (delivery of that record, in registry segment
 * <segno>, is over). Durable at the next tick's fdatasync of the done
 * log; then the record leaves its segment's live count, and a sealed
 * segment left with none is unlinked. The done log it lands in is deleted
 * once that segment is gone (<segno> < 0: it stays until a restart). */
void commit_done_mark(struct worker *w, const struct spool_done *d, int segno);
/* A record of segment <segno> whose done record is durable already (the
 * `ringmx queue --delete` tool wrote it) leaves the live count now. */
void commit_release(struct worker *w, int segno);
/* Unlinks spool file <name> through the ring (a finished segment, or a
 * message abandoned while it streamed: io/spill); the spool directory is
 * fsync'd at the next tick. */
void commit_unlink(struct worker *w, const char *name);
/* Appends <len> bytes of <line> to the defer log (informational; rotated
 * as the done log is, an old one deleted once older than
 * --max-queue-lifetime plus --retry-max). */
void commit_defer_note(struct worker *w, const char *line, size_t len);

/* End of a round: submits the gathered batch (when none is on the disk and
 * the commit window, if any, has passed) and the log appends. */
void commit_flush(struct worker *w);
/* Once a second: the done log's fdatasync, the unlinks of old done logs
 * whose segments are all gone and of old defer logs past their time, the
 * directory fsync after unlinks. */
void commit_tick(struct worker *w);
/* Free space against --spool-min-free: sets w->storage_low. */
void commit_check_storage(struct worker *w);

/* Completions (see enum ud_op). */
void commit_on_sync(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_dir_sync(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_window(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_log_write(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_log_sync(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_log_dirsync(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_unlink(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_unlink_sync(struct worker *w, void *p, struct io_uring_cqe *cqe);
void commit_on_log_unlink(struct worker *w, void *p, struct io_uring_cqe *cqe);

#endif
