/* commit: the only writer of the spool. See commit.h.
 *
 * Each worker appends to a segment of its own (queue/spool's record
 * format): the messages its sessions accepted and the bounces its relay
 * made, in one stream. commit_flush() runs once per round, and only when no
 * batch is on the disk: the gathered records go out as one writev with
 * RWF_DSYNC (one fdatasync for all of them), preceded by an fsync of the
 * spool directory, linked, when the segment is new, so that its name is
 * durable before a record in it is acknowledged. A worker with one session
 * or none makes that call itself (commit_alone()). A failed or short write
 * never leaves a hole that a later, acknowledged record would sit behind:
 * the next batch goes to a new segment, whose name is never reused
 * (O_EXCL, a sequence number per worker).
 *
 * Besides the segments it appends the done log (a mark per message whose
 * delivery is over; synced once a tick: a mark lost in a crash only means
 * the message is delivered again) and the defer log (informational, for
 * `ringmx queue`), each with one ring write per round. The done log is
 * rotated past --done-log-size, and an old one is unlinked once every
 * segment its marks name is gone for good (unlinked, and that unlink made
 * durable by a directory fsync): docs/spool.md, "The life of a done log".
 *
 * Every write here goes through the worker's ring but a lone worker's
 * batch; the only other direct calls are openat() for a new file, close()
 * (of a segment left, a done log rotated out: files with nothing in
 * flight), and fstatvfs() for the free-space check once a tick. The
 * committer knows no session or relay: each record carries the callback
 * that answers it. */
#include "io/commit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/stats.h"
#include "io/fault.h"
#include "io/metrics.h"
#include "io/ring.h"

/* Its log lines name ringmx/qmgr (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_QMGR

/* A log rotated out: closed, with nothing in flight on it. A done log
 * (every mark in it durable) goes once every segment in <segs> is gone
 * (segreg_gone()); a defer log once the worker's clock passes <expires>. */
struct log_old {
	struct log_old *next;
	struct buf segs; /* done log: registry numbers (unsigned each), sorted, not seen gone */
	int64_t expires; /* defer log: ms, worker clock (w->now) */
	bool defer;      /* on the list of old defer logs, else of old done logs */
	bool unlinking;  /* its unlinkat is in flight */
	char name[64];   /* the unlinkat's path: valid until it completes */
};

void commit_init(struct worker *w, uint32_t qid_seed)
{
	struct commit *cm = &w->cm;

	memset(cm, 0, sizeof(*cm));
	cm->seg_fd = -1;
	cm->segno = -1;
	cm->qid_ctr = qid_seed;
	cm->done = (struct commit_log){.fd = -1, .kind = "done"};
	cm->defer = (struct commit_log){.fd = -1, .kind = "defer"};
}

void commit_fini(struct worker *w)
{
	struct commit *cm = &w->cm;

	if (cm->seg_fd >= 0)
		close(cm->seg_fd);
	cm->seg_fd = -1;
	for (struct commit_log *l = &cm->done; l; l = l == &cm->done ? &cm->defer : NULL) {
		if (l->fd >= 0)
			close(l->fd);
		l->fd = -1;
		buf_free(&l->gather);
		buf_free(&l->flying);
	}
	buf_free(&cm->rel_gather);
	buf_free(&cm->rel_flying);
	buf_free(&cm->rel_written);
	buf_free(&cm->rel_syncing);
	buf_free(&cm->gone_wait);
	buf_free(&cm->gone_syncing);
	buf_free(&cm->done_segs);
	/* What is left goes at the next start: recovery drops the marks and
	 * the defer lines nobody needs. */
	for (struct log_old **list = &cm->done_old; list;
	     list = list == &cm->done_old ? &cm->defer_old : NULL) {
		while (*list) {
			struct log_old *o = *list;

			*list = o->next;
			buf_free(&o->segs);
			free(o);
		}
	}
}

bool commit_busy(const struct worker *w)
{
	const struct commit *cm = &w->cm;

	return cm->flight || cm->head || cm->nspill || cm->done.inflight || cm->defer.inflight ||
	       cm->done.gather.len || cm->defer.gather.len || cm->done.unsynced || cm->nunlink ||
	       cm->dir_syncing || cm->nlog_unlink;
}

/* ---- reclaiming finished segments ---- */

struct seg_unlink {
	int segno;
	char name[96]; /* the unlinkat's path: valid until it completes */
};

/* <segno>: the registry number of the segment, gone once the unlink is
 * durable; -1 for a file no done mark names (never registered). */
static void unlink_file(struct worker *w, const char *name, int segno)
{
	struct seg_unlink *u = malloc(sizeof(*u));
	struct io_uring_sqe *sqe;

	if (!u) {
		LOGW("worker %u: out of memory: spool file %s stays until a restart", w->id, name);
		return;
	}
	u->segno = segno;
	snprintf(u->name, sizeof(u->name), "%s", name);
	sqe = ring_sqe(&w->ring);
	io_uring_prep_unlinkat(sqe, w->g->spool_dirfd, u->name, 0);
	io_uring_sqe_set_data64(sqe, UD(u, UD_SEG_UNLINK));
	w->cm.nunlink++;
}

void commit_unlink(struct worker *w, const char *name)
{
	unlink_file(w, name, -1);
}

/* Segment <segno> is sealed and every record in it is done, with its done
 * record durable: it goes. Its name may come back after a power loss
 * until the directory fsync at the next tick; recovery then finds every
 * record in it done and deletes it again. */
static void seg_unlink(struct worker *w, int segno)
{
	const struct spool_seg_id *id = segreg_get(&w->g->segs, (unsigned)segno);
	char name[96];

	spool_seg_name(name, sizeof(name), id->start, id->worker, id->seq);
	unlink_file(w, name, segno);
}

void commit_on_unlink(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct seg_unlink *u = p;

	w->cm.nunlink--;
	if (cqe->res < 0 && cqe->res != -ENOENT)
		LOGW("worker %u: spool segment %s: unlink: %s (it goes at the next start)", w->id,
		     u->name, strerror(-cqe->res));
	else {
		unsigned segno = (unsigned)u->segno;

		LOGD("worker %u: spool segment %s %s: unlinked", w->id, u->name,
		     u->segno >= 0 ? "finished" : "abandoned");
		w->cm.dir_dirty = true;
		if (u->segno < 0) {
			free(u); /* never registered: no done mark names it */
			return;
		}
		w->cm.stat_unlinked++;
		if (fault_at("seg-unlinked"))
			fault_kill("seg-unlinked");
		/* Gone once the directory fsync after this is done. */
		if (buf_append(&w->cm.gone_wait, &segno, sizeof(segno)))
			LOGW("worker %u: out of memory: the done logs naming %s stay until a "
			     "restart",
			     w->id, u->name);
	}
	free(u);
}

void commit_on_unlink_sync(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct commit *cm = &w->cm;
	const unsigned *v = (const unsigned *)cm->gone_syncing.p;

	cm->dir_syncing = false;
	if (cqe->res < 0) {
		/* Tried again at the next tick, with what it covered. */
		LOGW("worker %u: spool directory fsync after unlinks: %s", w->id,
		     strerror(-cqe->res));
		cm->dir_dirty = true;
		if (buf_append(&cm->gone_wait, cm->gone_syncing.p, cm->gone_syncing.len))
			LOGW("worker %u: out of memory: some done logs stay until a restart",
			     w->id);
		cm->gone_syncing.len = 0;
		return;
	}
	/* The unlinks this fsync covered are durable: no crash brings those
	 * segments back, so no done mark naming them is needed any more. */
	for (size_t i = 0; i < cm->gone_syncing.len / sizeof(*v); i++)
		segreg_set_gone(&w->g->segs, v[i]);
	cm->gone_syncing.len = 0;
}

void commit_release(struct worker *w, int segno)
{
	if (segno >= 0 && segreg_release(&w->g->segs, (unsigned)segno))
		seg_unlink(w, segno);
}

/* The done marks in <rel> are durable: their records leave their
 * segments' live counts. */
static void release_all(struct worker *w, struct buf *rel)
{
	const unsigned *v = (const unsigned *)rel->p;

	for (size_t i = 0; i < rel->len / sizeof(*v); i++)
		commit_release(w, (int)v[i]);
	rel->len = 0;
}

static int seg_open(struct worker *w)
{
	struct commit *cm = &w->cm;
	struct spool_seg_id id;
	char name[96];
	int fd;

	if (cm->seg_fd >= 0)
		close(cm->seg_fd);
	cm->seg_fd = -1;
	/* No batch is on the disk (commit_flush() waits for it): every record
	 * of the old segment is answered and held, and none comes after. */
	if (cm->segno >= 0 && segreg_seal(&w->g->segs, (unsigned)cm->segno))
		seg_unlink(w, cm->segno);
	cm->segno = -1;
	spool_seg_name(name, sizeof(name), w->g->start_id, w->id, ++cm->seg_seq);
	fd = openat(w->g->spool_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	cm->seg_fd = fd;
	cm->seg_off = 0;
	cm->seg_broken = false;
	cm->dir_sync = true; /* the new name must be durable: ahead of the batch */
	id = (struct spool_seg_id){w->g->start_id, w->id, cm->seg_seq};
	cm->segno = segreg_add(&w->g->segs, &id);
	if (cm->segno < 0) {
		/* A record the registry cannot name could not be routed: 452
		 * instead of a 250 for a message nobody would deliver. */
		LOGE("worker %u: segment registry full (%u segments this run): messages get 452 "
		     "until a restart",
		     w->id, SEGREG_CHUNK * SEGREG_CHUNKS);
		close(fd);
		cm->seg_fd = -1;
		cm->segno = -1;
		commit_unlink(w, name);
		return -ENOSPC;
	}
	LOGD("worker %u: spool segment %s", w->id, name);
	return 0;
}

void commit_qid(struct worker *w, char *qid, time_t now)
{
	/* seconds | worker | counter: unique within a start (the counter starts
	 * at a random value so restarts in the same second differ). */
	snprintf(qid, SMTP_QID_MAX + 1, "%08X%02X%06X", (unsigned)now, w->id & 0xffu,
	         w->cm.qid_ctr++ & 0xffffffu);
}

void commit_submit(struct worker *w, struct commit_rec *r)
{
	struct commit *cm = &w->cm;

	r->next = NULL;
	if (!cm->head && w->g->conf->commit_window_us)
		cm->batch_since = ring_clock_us(); /* read only with a commit window */
	if (cm->tail)
		cm->tail->next = r;
	else
		cm->head = r;
	cm->tail = r;
}

static void answer(struct worker *w, struct commit_rec *r, int err)
{
	r->err = err;
	r->done(w, r, err);
}

/* ---- the done and defer logs ---- */

static void log_sync(struct worker *w, struct commit_log *l);

static int cmp_unsigned(const void *pa, const void *pb)
{
	unsigned a = *(const unsigned *)pa, b = *(const unsigned *)pb;

	return a < b ? -1 : a > b;
}

/* The done log is past --done-log-size, with nothing in flight on it and
 * every mark in it durable (so every one of them has left its segment's
 * live count): it is closed, and the next append opens the next one. It
 * waits on the list of old logs until every segment its marks name is
 * gone (log_reap()). One holding a mark for no registered segment, or
 * whose list could not be kept, stays until a restart, whose recovery
 * drops the marks nobody needs. */
static void log_old_add(struct log_old **list, struct log_old *o)
{
	while (*list)
		list = &(*list)->next;
	*list = o;
}

static void done_rotate(struct worker *w)
{
	struct commit *cm = &w->cm;
	unsigned *v = (unsigned *)cm->done_segs.p;
	size_t n = cm->done_segs.len / sizeof(*v), k = 0;
	struct log_old *o;

	close(cm->done.fd); /* directly, as it was opened: nothing is in flight on it */
	cm->done.fd = -1;
	o = cm->done_keep ? NULL : calloc(1, sizeof(*o));
	if (o) {
		if (n)
			qsort(v, n, sizeof(*v), cmp_unsigned);
		for (size_t i = 0; i < n; i++)
			if (!k || v[k - 1] != v[i])
				v[k++] = v[i];
		cm->done_segs.len = k * sizeof(*v);
		o->segs = cm->done_segs;
		cm->done_segs = (struct buf)BUF_INIT;
		spool_done_log_name(o->name, sizeof(o->name), w->g->start_id, w->id, cm->done_seq);
		log_old_add(&cm->done_old, o);
	} else {
		char name[64];

		spool_done_log_name(name, sizeof(name), w->g->start_id, w->id, cm->done_seq);
		LOGW("worker %u: done log %s stays until the next start: %s", w->id, name,
		     cm->done_keep ? "a mark in it names an unregistered segment"
		                   : "out of memory");
		cm->done_segs.len = 0;
	}
	cm->done_keep = false;
	cm->done_size = 0;
	cm->done_seq++;
	cm->stat_done_rotated++;
}

static void log_old_unlink(struct worker *w, struct log_old *o)
{
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);

	io_uring_prep_unlinkat(sqe, w->g->spool_dirfd, o->name, 0);
	io_uring_sqe_set_data64(sqe, UD(o, UD_LOG_UNLINK));
	o->unlinking = true;
	w->cm.nlog_unlink++;
}

/* The defer log is past --done-log-size (nothing in flight on it): it is
 * closed, and the next line opens the next one. Its lines name messages
 * that arrived before it was closed, each of which is done once
 * --max-queue-lifetime from its arrival is over: its last try is due then
 * at the latest (retry_next() caps it there) and bounces it; --retry-max
 * more is the margin for that try. Past that time from now no line in it
 * can be the one the listing shows for a pending message, and it goes. (A
 * try held up longer, all connections busy, may outlive it: the listing
 * then shows that message active, which is all a defer line informs.) */
static void defer_rotate(struct worker *w)
{
	struct commit *cm = &w->cm;
	const struct conf *cf = w->g->conf;
	struct log_old *o;

	close(cm->defer.fd); /* directly, as it was opened: nothing is in flight on it */
	cm->defer.fd = -1;
	o = calloc(1, sizeof(*o));
	if (o) {
		o->defer = true;
		o->expires =
		    w->now + ((int64_t)cf->max_queue_lifetime + (int64_t)cf->retry_max) * 1000;
		spool_defer_log_name(o->name, sizeof(o->name), w->g->start_id, w->id,
		                     cm->defer_seq);
		log_old_add(&cm->defer_old, o);
	} else {
		LOGW("worker %u: out of memory: a defer log stays until the next start", w->id);
	}
	cm->defer_size = 0;
	cm->defer_seq++;
}

/* At the tick: an old done log every segment of which is gone (its unlink
 * durable, segreg_gone()) holds no mark anybody needs, now or after a
 * crash, and an old defer log past its time no line the listing would
 * show: they are unlinked through the ring. */
static void log_reap(struct worker *w)
{
	struct commit *cm = &w->cm;

	for (struct log_old *o = cm->defer_old; o && w->now >= o->expires; o = o->next)
		if (!o->unlinking)
			log_old_unlink(w, o); /* oldest first: the first not due ends it */
	for (struct log_old *o = cm->done_old; o; o = o->next) {
		unsigned *v = (unsigned *)o->segs.p;
		size_t n = o->segs.len / sizeof(*v), k = 0;

		if (o->unlinking)
			continue;
		/* Gone is for good: those are not looked at again. */
		for (size_t i = 0; i < n; i++)
			if (!segreg_gone(&w->g->segs, v[i]))
				v[k++] = v[i];
		o->segs.len = k * sizeof(*v);
		if (!k)
			log_old_unlink(w, o);
	}
}

void commit_on_log_unlink(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct log_old *o = p, **pp;
	const char *kind = o->defer ? "defer" : "done";

	w->cm.nlog_unlink--;
	for (pp = o->defer ? &w->cm.defer_old : &w->cm.done_old; *pp != o; pp = &(*pp)->next)
		;
	*pp = o->next;
	if (cqe->res < 0 && cqe->res != -ENOENT) {
		LOGW("worker %u: %s log %s: unlink: %s (it goes at the next start)", w->id, kind,
		     o->name, strerror(-cqe->res));
	} else {
		LOGD("worker %u: old %s log %s unlinked", w->id, kind, o->name);
		if (!o->defer)
			w->cm.stat_done_unlinked++;
		w->cm.dir_dirty = true; /* not needed for safety: nothing needs it any more */
	}
	buf_free(&o->segs);
	free(o);
}

/* The segments the gathered done marks name now belong to the current
 * done log, which they are about to be written to. */
static void done_note_segs(struct commit *cm)
{
	const unsigned *v = (const unsigned *)cm->rel_gather.p;

	for (size_t i = 0; i < cm->rel_gather.len / sizeof(*v) && !cm->done_keep; i++) {
		size_t n = cm->done_segs.len / sizeof(*v);

		if (n && ((const unsigned *)cm->done_segs.p)[n - 1] == v[i])
			continue; /* runs of one segment are common: sorted at rotation */
		if (buf_append(&cm->done_segs, &v[i], sizeof(v[i])))
			cm->done_keep = true; /* a log we cannot account for stays */
	}
	if (cm->done_keep_gather)
		cm->done_keep = true;
	cm->done_keep_gather = false;
}

static void log_flush(struct worker *w, struct commit_log *l)
{
	struct commit *cm = &w->cm;
	struct io_uring_sqe *sqe;
	struct buf t;

	if (l->inflight)
		return;
	if (l == &cm->done && l->fd >= 0 && cm->done_size >= w->g->conf->done_log_size) {
		/* Past its size: synced now rather than at the tick (unless that
		 * just failed), rotated out once that is done; what gathered
		 * meanwhile goes to the next log. */
		if (l->unsynced) {
			if (!cm->done_sync_err)
				log_sync(w, l);
			return;
		}
		done_rotate(w);
	} else if (l == &cm->defer && l->fd >= 0 && cm->defer_size >= w->g->conf->done_log_size) {
		defer_rotate(w); /* never synced: nothing to wait for */
	}
	if (!l->gather.len)
		return;
	if (l->fd < 0) {
		char name[96];

		if (l == &cm->done)
			spool_done_log_name(name, sizeof(name), w->g->start_id, w->id,
			                    cm->done_seq);
		else
			spool_defer_log_name(name, sizeof(name), w->g->start_id, w->id,
			                     cm->defer_seq);
		l->fd = openat(w->g->spool_dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
		               0640);
		if (l->fd < 0) {
			/* Dropped as a failed write drops them (commit_on_log_write). */
			LOGE("worker %u: %s log %s: %s", w->id, l->kind, name, strerror(errno));
			buf_reset(&l->gather, 0);
			if (l == &cm->done) {
				cm->rel_gather.len = 0;
				cm->done_keep_gather = false;
			}
			return;
		}
		/* The name is made durable ahead of the first append. */
		sqe = ring_sqe(&w->ring);
		io_uring_prep_fsync(sqe, w->g->spool_dirfd, 0);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, UD(l, UD_LOG_DIRSYNC));
	}
	t = l->flying;
	l->flying = l->gather;
	l->gather = t;
	l->gather.len = 0;
	if (l == &w->cm.done) {
		done_note_segs(cm);
		t = w->cm.rel_flying;
		w->cm.rel_flying = w->cm.rel_gather;
		w->cm.rel_gather = t;
		w->cm.rel_gather.len = 0;
	}
	sqe = ring_sqe(&w->ring);
	io_uring_prep_write(sqe, l->fd, l->flying.p, (unsigned)l->flying.len, 0); /* O_APPEND */
	io_uring_sqe_set_data64(sqe, UD(l, UD_LOG_WRITE));
	l->inflight = true;
}

void commit_on_log_dirsync(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct commit_log *l = p;

	if (cqe->res < 0)
		LOGE("worker %u: %s log: directory fsync: %s", w->id, l->kind, strerror(-cqe->res));
}

void commit_on_log_write(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct commit_log *l = p;
	struct io_uring_sqe *sqe;

	if (cqe->res > 0)
		*(l == &w->cm.done ? &w->cm.done_size : &w->cm.defer_size) += (uint64_t)cqe->res;
	if (cqe->res > 0 && (size_t)cqe->res < l->flying.len) {
		buf_consume(&l->flying, (size_t)cqe->res);
		sqe = ring_sqe(&w->ring);
		io_uring_prep_write(sqe, l->fd, l->flying.p, (unsigned)l->flying.len, 0);
		io_uring_sqe_set_data64(sqe, UD(l, UD_LOG_WRITE));
		return;
	}
	if (cqe->res < 0) {
		/* The marks are lost: those messages are delivered again after a
		 * restart, and their segments stay until then. */
		LOGE("worker %u: %s log write: %s", w->id, l->kind, strerror(-cqe->res));
		if (l == &w->cm.done)
			w->cm.rel_flying.len = 0;
	} else if (l == &w->cm.done) { /* the defer log is never synced */
		l->unsynced = true;
		if (buf_append(&w->cm.rel_written, w->cm.rel_flying.p, w->cm.rel_flying.len))
			LOGW("worker %u: out of memory: finished segments stay until a restart",
			     w->id);
		w->cm.rel_flying.len = 0;
	}
	l->inflight = false;
	buf_reset(&l->flying, 4096);
}

void commit_on_log_sync(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct commit_log *l = p;

	l->inflight = false;
	w->cm.done_sync_err = cqe->res < 0;
	if (cqe->res < 0) {
		/* Tried again at the next tick, with what it covered. */
		LOGE("worker %u: %s log fdatasync: %s", w->id, l->kind, strerror(-cqe->res));
		l->unsynced = true;
		if (buf_append(&w->cm.rel_written, w->cm.rel_syncing.p, w->cm.rel_syncing.len))
			LOGW("worker %u: out of memory: finished segments stay until a restart",
			     w->id);
		w->cm.rel_syncing.len = 0;
		return;
	}
	release_all(w, &w->cm.rel_syncing);
}

static void log_sync(struct worker *w, struct commit_log *l)
{
	struct io_uring_sqe *sqe;

	if (l->inflight || !l->unsynced)
		return;
	l->unsynced = false;
	l->inflight = true;
	/* What this sync covers: the marks written so far. */
	if (buf_append(&w->cm.rel_syncing, w->cm.rel_written.p, w->cm.rel_written.len))
		LOGW("worker %u: out of memory: finished segments stay until a restart", w->id);
	w->cm.rel_written.len = 0;
	sqe = ring_sqe(&w->ring);
	io_uring_prep_fsync(sqe, l->fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data64(sqe, UD(l, UD_LOG_SYNC));
}

void commit_done_mark(struct worker *w, const struct spool_done *d, int segno)
{
	struct commit_log *l = &w->cm.done;
	unsigned char rec[SPOOL_DONE_LEN];
	unsigned u = (unsigned)segno;

	if (spool_done_encode(rec, d) || buf_append(&l->gather, rec, sizeof(rec))) {
		LOGE("worker %u: out of memory for the done log", w->id);
		return;
	}
	/* A mark whose segment the done log cannot name keeps its log until a
	 * restart (done_rotate()). */
	if (segno < 0) {
		w->cm.done_keep_gather = true;
	} else if (buf_append(&w->cm.rel_gather, &u, sizeof(u))) {
		LOGW("worker %u: out of memory: a finished segment stays until a restart", w->id);
		w->cm.done_keep_gather = true;
	}
}

void commit_defer_note(struct worker *w, const char *line, size_t len)
{
	if (buf_append(&w->cm.defer.gather, line, len))
		LOGD("worker %u: defer log: out of memory", w->id);
}

void commit_tick(struct worker *w)
{
	struct io_uring_sqe *sqe;
	struct buf t;

	log_sync(w, &w->cm.done);
	log_reap(w);
	if (w->cm.dir_dirty && !w->cm.dir_syncing) {
		/* What this fsync makes durable: the unlinks completed so far. */
		t = w->cm.gone_syncing;
		w->cm.gone_syncing = w->cm.gone_wait;
		w->cm.gone_wait = t;
		w->cm.gone_wait.len = 0;
		w->cm.dir_dirty = false;
		w->cm.dir_syncing = true;
		sqe = ring_sqe(&w->ring);
		io_uring_prep_fsync(sqe, w->g->spool_dirfd, 0);
		io_uring_sqe_set_data64(sqe, UD(&w->cm, UD_UNLINK_SYNC));
	}
}

/* ---- the group commit ---- */

/* A sync slower than this (us) sends the batches after it through the
 * ring, until one is faster again: a disk that stalls holds no worker. */
#define ALONE_SYNC_MAX_US 20000

/* The batch may be written and synced by the worker thread itself: it has
 * at most one client session, the last batch's sync was quick, no new
 * file's directory fsync has to go ahead of it, and no log write is in
 * flight (else the lines of this round, its messages' "queued" among them,
 * would wait behind the sync for that write's completion, while the worker
 * that delivers them may log their delivery first). */
static bool commit_alone(const struct worker *w)
{
	const struct commit *cm = &w->cm;

	return w->nconns <= 1 && !cm->dir_sync && cm->last_sync_us < ALONE_SYNC_MAX_US &&
	       !ring_log_busy(w);
}

void commit_flush(struct worker *w)
{
	struct commit *cm = &w->cm;
	struct io_uring_sqe *sqe;
	struct commit_rec *r, *last = NULL;
	unsigned n, niov, room;
	uint64_t off;
	int err;

	log_flush(w, &cm->done);
	log_flush(w, &cm->defer);
	if (w->stopping)
		log_sync(w, &cm->done);
again:
	if (cm->flight || !cm->head)
		return;
	n = niov = 0;
	last = NULL;
	if (w->g->conf->commit_window_us && !w->stopping) {
		/* Group-commit window: give other sessions a moment to finish
		 * their messages so that one fdatasync covers them too. */
		int64_t wait = cm->batch_since + w->g->conf->commit_window_us - ring_clock_us();

		if (wait > 0) {
			if (!cm->window_armed) {
				sqe = ring_sqe(&w->ring);
				cm->window_ts.tv_sec = wait / 1000000;
				cm->window_ts.tv_nsec = (wait % 1000000) * 1000;
				io_uring_prep_timeout(sqe, &cm->window_ts, 0, 0);
				io_uring_sqe_set_data64(sqe, UD(cm, UD_WINDOW));
				cm->window_armed = true;
			}
			return;
		}
	}
	if (cm->seg_fd < 0 || cm->seg_broken || cm->seg_off >= w->g->conf->segment_size) {
		err = seg_open(w);
		if (err) {
			LOGE("worker %u: cannot open a spool segment: %s", w->id, strerror(-err));
			while ((r = cm->head)) {
				cm->head = r->next;
				if (!cm->head)
					cm->tail = NULL;
				answer(w, r, err);
			}
			return;
		}
	}
	room = io_uring_sq_space_left(&w->ring.uring);
	if (room < 2) {
		io_uring_submit(&w->ring.uring);
		room = io_uring_sq_space_left(&w->ring.uring);
		if (room < 2)
			return; /* at the next round */
	}
	off = cm->seg_off;
	while ((r = cm->head) && n < BATCH_MAX) {
		if (r->err) {
			cm->head = r->next;
			if (!cm->head)
				cm->tail = NULL;
			answer(w, r, r->err); /* could not be built */
			continue;
		}
		r->len = 0;
		for (unsigned i = 0; i < r->niov; i++)
			r->len += r->iov[i].iov_len;
		/* The next batch takes it, right after this one. */
		if (n && (niov + r->niov > BATCH_IOVS || off - cm->seg_off + r->len > BATCH_BYTES))
			break;
		cm->head = r->next;
		if (!cm->head)
			cm->tail = NULL;
		for (unsigned i = 0; i < r->niov; i++)
			cm->iov[niov++] = r->iov[i];
		r->segno = cm->segno;
		r->off = off;
		off += r->len;
		r->next = NULL;
		if (last)
			last->next = r;
		else
			cm->flight = r;
		last = r;
		n++;
	}
	if (!n)
		return;
	cm->nflight = n;
	cm->flight_off = cm->seg_off;
	cm->seg_off = off;
	cm->flight_since = ring_clock_us(); /* vDSO: no syscall, once per batch */
	if (commit_alone(w)) {
		/* The worker serves nobody else: it writes and syncs the batch
		 * itself and answers it in this round. Handing the same call to
		 * one of io_uring's worker threads costs two wake-ups (about 20
		 * us on the benchmark machine: docs/benchmarks.md), which only
		 * pay while other sessions have work for this thread. */
		struct io_uring_cqe done = {0};
		ssize_t k = pwritev2(cm->seg_fd, cm->iov, (int)niov, (off_t)cm->flight_off,
		                     w->g->conf->durability_none ? 0 : RWF_DSYNC);

		done.res = k < 0 ? -errno : (int)k;
		commit_on_sync(w, cm, &done);
		goto again; /* what the answers gathered (a pipelined next message) */
	}
	if (cm->dir_sync) {
		/* Ahead of the write, linked: the segment's name is durable
		 * before a record in it is acknowledged. */
		sqe = ring_sqe(&w->ring);
		io_uring_prep_fsync(sqe, w->g->spool_dirfd, 0);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, UD(cm, UD_DIR_SYNC));
		cm->dir_sync = false;
	}
	/* One operation for the whole batch: the writev and its fdatasync
	 * (RWF_DSYNC: the kernel syncs what it wrote before it completes), so
	 * io_uring hands it to one of its worker threads once and gets it back
	 * once. A chain of writes linked to an fsync went there and back for
	 * each link. */
	sqe = ring_sqe(&w->ring);
	io_uring_prep_writev2(sqe, cm->seg_fd, cm->iov, niov, cm->flight_off,
	                      w->g->conf->durability_none ? 0 : RWF_DSYNC);
	io_uring_sqe_set_data64(sqe, UD(cm, UD_SEG_SYNC));
}

void commit_on_window(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	w->cm.window_armed = false; /* commit_flush() at the end of the round */
}

void commit_on_dir_sync(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct commit *cm = p;

	if (cqe->res >= 0)
		return;
	/* The writes linked behind it are cancelled: the batch fails with this. */
	LOGE("worker %u: spool directory fsync: %s", w->id, strerror(-cqe->res));
	if (!cm->flight_err)
		cm->flight_err = cqe->res;
	cm->seg_broken = true;
}

/* The batch's writev (and fdatasync) completed: each record wholly within
 * the bytes written is durable; a short write means the disk filled up. */
void commit_on_sync(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct commit *cm = &w->cm;
	struct commit_rec *r, *next;
	int err = cqe->res < 0 ? cqe->res : 0;
	uint64_t written = cqe->res < 0 ? 0 : (uint64_t)cqe->res, at = 0;

	if (err == -ECANCELED) /* behind the directory fsync, which failed */
		err = cm->flight_err ? cm->flight_err : -EIO;
	else if (err < 0)
		LOGE("worker %u: spool write and fdatasync: %s", w->id, strerror(-err));
	LOGD("worker %u: group commit of %u messages", w->id, cm->nflight);
	stats_hist_observe_local(&w->st.batch, &metrics_batch_bounds, cm->nflight);
	cm->last_sync_us = ring_clock_us() - cm->flight_since;
	stats_hist_observe_local(&w->st.sync, &metrics_sync_bounds, (uint64_t)cm->last_sync_us);
	cm->stat_commits++;
	cm->stat_msgs += cm->nflight;
	if (cm->nflight > cm->stat_max_batch)
		cm->stat_max_batch = cm->nflight;
	r = cm->flight;
	cm->flight = NULL;
	cm->nflight = 0;
	if (!err && written < cm->seg_off - cm->flight_off) {
		LOGW("worker %u: spool write: %llu of %llu bytes written: %s", w->id,
		     (unsigned long long)written,
		     (unsigned long long)(cm->seg_off - cm->flight_off), strerror(ENOSPC));
		w->storage_low = true; /* until the next free-space check says otherwise */
	}
	if (err == -ENOSPC || err == -EDQUOT)
		w->storage_low = true;
	if (err || written < cm->seg_off - cm->flight_off)
		cm->seg_broken = true; /* no later record behind a hole: a new segment */
	for (; r; r = next) {
		int e = err;

		next = r->next;
		at += r->len;
		if (!e && at > written)
			e = -ENOSPC; /* not wholly written */
		/* Held before it is routed: the worker that delivers it may
		 * release it at once. */
		if (e == 0 && r->segno >= 0)
			segreg_hold(&w->g->segs, (unsigned)r->segno);
		answer(w, r, e);
	}
	cm->flight_err = 0;
}

void commit_check_storage(struct worker *w)
{
	struct statvfs sv;
	bool low;

	if (fstatvfs(w->g->spool_dirfd, &sv) != 0)
		return;
	low = (uint64_t)sv.f_bavail * sv.f_frsize < w->g->conf->spool_min_free;
	if (low != w->storage_low)
		LOGW("worker %u: spool free space %s --spool-min-free (%llu bytes free): %s", w->id,
		     low ? "below" : "back above", (unsigned long long)sv.f_bavail * sv.f_frsize,
		     low ? "MAIL gets 452 4.3.1" : "accepting mail again");
	w->storage_low = low;
}
