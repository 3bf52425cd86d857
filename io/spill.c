/* spill: a large message streamed into a segment of its own while it
 * arrives. See spill.h.
 *
 * Every write goes through the worker's ring; the direct calls are the
 * openat() that creates the segment and the close() at the end, as in
 * io/commit.c. The content writes of one message, at most SPILL_WRITES
 * on the disk at once (the owner gathers the next chunk meanwhile), each
 * go at their final offset; the end is one linked chain, so the header can only be
 * on the disk after all of the content, and the owner hears of the
 * message only once the chain's last step, the directory fsync, is done. */
#include "io/spill.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "io/commit.h"
#include "io/ring.h"
#include "queue/crc32c.h"

/* Its log lines name ringmx/qmgr (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_QMGR

void spill_init(struct spill *sp, spill_fn *written, size_t keep)
{
	*sp = (struct spill){.fd = -1, .written = written, .keep = keep};
	for (unsigned i = 0; i < SPILL_WRITES; i++)
		sp->wb[i].sp = sp;
}

void spill_fini(struct spill *sp)
{
	for (unsigned i = 0; i < SPILL_WRITES; i++)
		buf_free(&sp->wb[i].b);
}

size_t spill_held(const struct spill *sp)
{
	size_t n = 0;

	for (unsigned i = 0; i < SPILL_WRITES; i++)
		n += sp->wb[i].b.len;
	return n;
}

static void seg_name(const struct worker *w, const struct spill *sp, char *name, size_t len)
{
	spool_seg_name(name, len, w->g->start_id, w->id, sp->seq);
}

/* Creates the segment; read and write (io/milter_stream reads the content
 * back for a second filter). <sp> starts afresh: no content, no error, no
 * end in progress. */
static int seg_create(struct worker *w, struct spill *sp, uint64_t at)
{
	char name[96];
	unsigned seq = ++w->cm.seg_seq; /* never reused: the committer's sequence */
	int fd;

	spool_seg_name(name, sizeof(name), w->g->start_id, w->id, seq);
	fd = openat(w->g->spool_dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	sp->fd = fd;
	sp->seq = seq;
	sp->at = at;
	sp->content = 0;
	sp->late = false;
	sp->body_at = 0;
	sp->crc = 0;
	sp->err = 0;
	sp->fin_left = 0;
	sp->aborted = false;
	sp->fin = NULL;
	sp->tail = NULL;
	LOGD("worker %u: spool segment %s: a message streams into it", w->id, name);
	return 0;
}

int spill_open_body(struct worker *w, struct spill *sp, uint64_t at)
{
	int err = seg_create(w, sp, at);

	if (err)
		return err;
	sp->late = true;
	sp->body_at = at;
	return 0;
}

int spill_open(struct worker *w, struct spill *sp, const struct buf *rec, const struct buf *rcvd)
{
	int err = seg_create(w, sp, rec->len + rcvd->len);

	if (err)
		return err;
	sp->crc =
	    crc32c(crc32c(0, rec->p + SPOOL_HDR_LEN, rec->len - SPOOL_HDR_LEN), rcvd->p, rcvd->len);
	return 0;
}

static void fail(struct worker *w, struct spill *sp, int err)
{
	if (sp->err)
		return;
	sp->err = err;
	if (err == -ENOSPC || err == -EDQUOT)
		w->storage_low = true; /* until the next free-space check says otherwise */
	LOGW("worker %u: spool write (streamed message): %s", w->id, strerror(-err));
}

/* The message is over (answered or abandoned) and nothing is in flight:
 * the write buffers give their memory back. */
static void bufs_release(struct spill *sp)
{
	for (unsigned i = 0; i < SPILL_WRITES; i++)
		buf_reset(&sp->wb[i].b, 0);
}

/* Nothing in flight: the segment goes, with whatever reached it. */
static void discard(struct worker *w, struct spill *sp)
{
	char name[96];

	seg_name(w, sp, name, sizeof(name));
	close(sp->fd);
	sp->fd = -1;
	sp->aborted = false;
	bufs_release(sp);
	commit_unlink(w, name);
}

static void submit(struct worker *w, struct spill *sp, struct io_uring_sqe *sqe, void *p,
                   unsigned op)
{
	io_uring_sqe_set_data64(sqe, UD(p, op));
	sp->inflight++;
	w->cm.nspill++;
}

/* A content write is in flight. */
static bool writing(const struct spill *sp)
{
	for (unsigned i = 0; i < SPILL_WRITES; i++)
		if (sp->wb[i].busy)
			return true;
	return false;
}

struct buf *spill_buf(struct spill *sp)
{
	for (unsigned i = 0; i < SPILL_WRITES; i++)
		if (!sp->wb[i].busy)
			return &sp->wb[i].b;
	return NULL;
}

void spill_write(struct worker *w, struct spill *sp, struct buf *b)
{
	struct spill_buf *wb = (struct spill_buf *)((char *)b - offsetof(struct spill_buf, b));
	struct io_uring_sqe *sqe;

	if (!b->len)
		return;
	if (sp->err) {
		b->len = 0; /* the message is refused at its end anyway */
		return;
	}
	sp->crc = crc32c(sp->crc, b->p, b->len);
	wb->at = sp->at;
	wb->busy = true;
	sqe = ring_sqe(&w->ring);
	io_uring_prep_write(sqe, sp->fd, b->p, (unsigned)b->len, wb->at);
	submit(w, sp, sqe, wb, UD_SPILL_WRITE);
	sp->at += b->len;
	sp->content += b->len;
}

/* The end: tail, header and envelope, fdatasync, directory fsync, linked. */
static void fin_submit(struct worker *w, struct spill *sp)
{
	struct commit_rec *r = sp->fin;
	struct buf *tail = &sp->wb[0].b; /* free: no write is in flight */
	struct io_uring_sqe *sqe;
	uint64_t body_len;
	int err;

	sp->fin_left = 0;
	sp->fin_step = 0;
	if (sp->tail) {
		struct buf t = *tail;

		*tail = *sp->tail;
		*sp->tail = t;
		sp->tail->len = 0;
		sp->tail = NULL;
	}
	if (sp->err)
		goto refuse;
	if (tail->len)
		sp->crc = crc32c(sp->crc, tail->p, tail->len);
	body_len = r->iov[1].iov_len + sp->content + tail->len;
	if (sp->late) {
		/* The head, known only now, before the content's crc. */
		uint32_t head = crc32c(crc32c(0, (const char *)r->iov[0].iov_base + SPOOL_HDR_LEN,
		                              r->iov[0].iov_len - SPOOL_HDR_LEN),
		                       r->iov[1].iov_base, r->iov[1].iov_len);

		if (r->iov[0].iov_len + r->iov[1].iov_len != sp->body_at) {
			fail(w, sp, -EINVAL);
			goto refuse;
		}
		sp->crc = crc32c_combine(head, sp->crc, sp->content + tail->len);
	}
	err = spool_rec_seal(r->iov[0].iov_base, r->iov[0].iov_len - SPOOL_HDR_LEN, body_len,
	                     sp->crc);
	if (err) {
		fail(w, sp, err);
		goto refuse;
	}
	/* The chain must leave in one submission: a link whose rest went in
	 * a later one would let the fdatasync run ahead of the header. */
	if (io_uring_sq_space_left(&w->ring.uring) < 4)
		io_uring_submit(&w->ring.uring);
	if (tail->len) {
		sqe = ring_sqe(&w->ring);
		io_uring_prep_write(sqe, sp->fd, tail->p, (unsigned)tail->len, sp->at);
		sqe->flags |= IOSQE_IO_LINK;
		submit(w, sp, sqe, sp, UD_SPILL_FIN);
		sp->fin_left++;
	}
	sqe = ring_sqe(&w->ring);
	io_uring_prep_writev(sqe, sp->fd, r->iov, 2, 0);
	sqe->flags |= IOSQE_IO_LINK;
	submit(w, sp, sqe, sp, UD_SPILL_FIN);
	sp->fin_left++;
	sqe = ring_sqe(&w->ring);
	if (w->g->conf->durability_none)
		io_uring_prep_nop(sqe); /* --durability none: benchmarks only */
	else
		io_uring_prep_fsync(sqe, sp->fd, IORING_FSYNC_DATASYNC);
	sqe->flags |= IOSQE_IO_LINK;
	submit(w, sp, sqe, sp, UD_SPILL_FIN);
	sp->fin_left++;
	sqe = ring_sqe(&w->ring);
	if (w->g->conf->durability_none)
		io_uring_prep_nop(sqe);
	else
		io_uring_prep_fsync(sqe, w->g->spool_dirfd, 0); /* the segment's name */
	submit(w, sp, sqe, sp, UD_SPILL_FIN);
	sp->fin_left++;
	return;
refuse:
	/* The answer still comes from a completion, never from inside the
	 * owner's call (as io/commit answers). */
	tail->len = 0;
	sqe = ring_sqe(&w->ring);
	io_uring_prep_nop(sqe);
	submit(w, sp, sqe, sp, UD_SPILL_FIN);
	sp->fin_left = 1;
}

void spill_finish(struct worker *w, struct spill *sp, struct buf *tail, struct commit_rec *r)
{
	sp->fin = r;
	sp->tail = tail;
	if (!writing(sp))
		fin_submit(w, sp);
	/* else: when the last write in flight completes (spill_on_write()) */
}

void spill_abort(struct worker *w, struct spill *sp)
{
	if (sp->fd < 0 || sp->aborted)
		return;
	sp->aborted = true;
	if (!sp->inflight)
		discard(w, sp);
}

void spill_on_write(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct spill_buf *wb = p;
	struct spill *sp = wb->sp;
	int res = cqe->res;

	sp->inflight--;
	w->cm.nspill--;
	if (res > 0 && (size_t)res < wb->b.len && !sp->aborted && !sp->err) {
		/* A short write: the rest goes on from where it stopped. */
		struct io_uring_sqe *sqe = ring_sqe(&w->ring);

		buf_consume(&wb->b, (size_t)res);
		wb->at += (uint64_t)res;
		io_uring_prep_write(sqe, sp->fd, wb->b.p, (unsigned)wb->b.len, wb->at);
		submit(w, sp, sqe, wb, UD_SPILL_WRITE);
		return;
	}
	if (res < 0)
		fail(w, sp, res);
	else if ((size_t)res < wb->b.len && !sp->aborted)
		fail(w, sp, -ENOSPC); /* no progress: the disk is full */
	wb->busy = false;
	/* Memory kept for the next chunk, up to one chunk's worth: a burst that
	 * grew the buffer gives the rest back. */
	buf_reset(&wb->b, sp->keep);
	if (sp->aborted) {
		if (!sp->inflight)
			discard(w, sp);
	} else if (sp->fin) {
		if (!writing(sp))
			fin_submit(w, sp);
		return; /* the owner hears at the end */
	}
	sp->written(w, sp); /* last: the owner may free <sp> */
}

void spill_on_fin(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct spill *sp = p;
	struct commit_rec *r = sp->fin;
	const struct buf *tail = &sp->wb[0].b;
	unsigned step = sp->fin_step++;
	int res = cqe->res, err;

	sp->inflight--;
	w->cm.nspill--;
	sp->fin_left--;
	/* Completions of a chain come in its order: [tail], header, sync, dir. */
	if (res < 0) {
		fail(w, sp, res == -ECANCELED ? -EIO : res);
	} else if (tail->len && step == 0) {
		if ((size_t)res != tail->len)
			fail(w, sp, -ENOSPC);
	} else if (step == (tail->len ? 1u : 0u)) {
		if ((size_t)res != r->iov[0].iov_len + r->iov[1].iov_len)
			fail(w, sp, -ENOSPC);
	}
	if (sp->fin_left)
		return;
	err = sp->err;
	if (!err) {
		struct spool_seg_id id = {w->g->start_id, w->id, sp->seq};
		int segno = segreg_add(&w->g->segs, &id);

		if (segno < 0) {
			LOGE("worker %u: segment registry full: a streamed message gets 452",
			     w->id);
			err = -ENOSPC;
		} else {
			/* One record, durable: held, and sealed at once. */
			segreg_hold(&w->g->segs, (unsigned)segno);
			segreg_seal(&w->g->segs, (unsigned)segno);
			r->segno = segno;
			r->off = 0;
			w->cm.stat_spilled++;
			close(sp->fd);
			sp->fd = -1;
			bufs_release(sp);
		}
	}
	sp->fin = NULL;
	if (err)
		discard(w, sp);
	r->err = err;
	r->done(w, r, err); /* last: the owner may free <sp> */
}
