/* commit: the worker's spool writer and group commit. See commit.h.
 *
 * Each worker appends to a segment of its own (queue/spool's record
 * format). spool_flush runs once per round, and only when no batch is on
 * the disk: the gathered messages get one writev each, linked in order,
 * and one fdatasync at the end of the chain, so a failed write never leaves
 * a hole that a later, acknowledged record would sit behind; a failed
 * batch sends the next one to a new segment. */
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
#include "io/ring.h"
#include "io/route.h"
#include "io/session.h"

static int seg_open(struct worker *w)
{
	char name[96];
	int fd;

	if (w->seg_fd >= 0)
		close(w->seg_fd);
	w->seg_fd = -1;
	spool_seg_name(name, sizeof(name), w->g->start_id, w->id, ++w->seg_seq);
	fd = openat(w->g->spool_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	/* The new name must be durable before a record in it is acknowledged. */
	if (fsync(w->g->spool_dirfd) < 0) {
		int err = -errno;

		close(fd);
		unlinkat(w->g->spool_dirfd, name, 0);
		return err;
	}
	w->seg_fd = fd;
	w->seg_off = 0;
	w->seg_broken = false;
	{
		struct spool_seg_id id = {w->g->start_id, w->id, w->seg_seq};

		w->segno = segreg_add(&w->g->segs, &id);
		if (w->segno < 0)
			LOGE("worker %u: segment registry full: messages are not routed", w->id);
	}
	LOGD("worker %u: spool segment %s", w->id, name);
	return 0;
}

static void make_qid(struct worker *w, char *qid, time_t now)
{
	/* seconds | worker | counter: unique within a start (the counter starts
	 * at a random value so restarts in the same second differ). */
	snprintf(qid, SMTP_QID_MAX + 1, "%08X%02X%06X", (unsigned)now, w->id & 0xffu,
	         w->qid_ctr++ & 0xffffffu);
}

void commit_enqueue(struct worker *w, struct conn *c)
{
	c->flags |= C_QUEUED;
	c->inflight++; /* until session_committed() */
	c->batch_next = NULL;
	if (!w->batch_head && w->g->conf->commit_window_us)
		w->batch_since = ring_clock_us(); /* read only with a commit window */
	if (w->batch_tail)
		w->batch_tail->batch_next = c;
	else
		w->batch_head = c;
	w->batch_tail = c;
}

/* Bounces go to a segment of their own per worker ("worker" number + 128
 * in its name), written synchronously with their own fdatasync: never
 * interleaved with a group-commit batch, so they can never sit behind a
 * torn record of one. They are rare. */
int worker_spool_local(struct worker *w, const char *rcpt, struct sv body, bool body_8bit,
                       bool smtputf8)
{
	struct buf rec = BUF_INIT;
	char qid[SMTP_QID_MAX + 1], name[96];
	time_t now = time(NULL);
	struct iovec iov[2];
	struct spool_env env;
	ssize_t k;
	int err;

	if (w->lseg_fd < 0) {
		struct spool_seg_id id = {w->g->start_id, w->id + 128, 1};

		spool_seg_name(name, sizeof(name), id.start, id.worker, id.seq);
		w->lseg_fd = openat(w->g->spool_dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
		if (w->lseg_fd < 0)
			return -errno;
		fsync(w->g->spool_dirfd);
		w->lsegno = segreg_add(&w->g->segs, &id);
		w->lseg_off = 0;
	}
	if (w->lsegno < 0)
		return -ENOSPC;
	make_qid(w, qid, now);
	env = (struct spool_env){
	    .qid = qid,
	    .arrival = now,
	    .client = "",
	    .helo = w->g->conf->hostname,
	    .from = "",
	    .rcpts = rcpt,
	    .nrcpt = 1,
	    .body_8bit = body_8bit,
	    .smtputf8 = smtputf8,
	};
	iov[1] = (struct iovec){(void *)body.p, body.len};
	err = spool_rec_build(&rec, &env, &iov[1], 1);
	if (err)
		goto out;
	iov[0] = (struct iovec){rec.p, rec.len};
	k = pwritev(w->lseg_fd, iov, 2, (off_t)w->lseg_off);
	if (k != (ssize_t)(rec.len + body.len) || fdatasync(w->lseg_fd) < 0) {
		err = k < 0 ? -errno : -EIO;
		/* A new file for the next one: nothing behind a torn record. */
		close(w->lseg_fd);
		w->lseg_fd = -1;
		goto out;
	}
	LOGI("queued: id=%s size=%zu from=<> nrcpt=1 client=[local] (bounce)", qid, body.len);
	route_outbox_add(w, QDESC(w->lsegno, route_hash(rcpt), w->lseg_off));
	route_outbox_flush(w);
	w->lseg_off += rec.len + body.len;
out:
	buf_free(&rec);
	return err;
}

/* Submits the gathered messages: one writev each, linked in order, and one
 * fdatasync at the end of the chain. Runs once per round, and only when no
 * batch is on the disk, so a failed write never leaves a hole that a later,
 * acknowledged record would sit behind. */
void commit_flush(struct worker *w)
{
	struct io_uring_sqe *sqe;
	struct conn *c, *last = NULL;
	time_t now;
	unsigned n = 0, room;
	int err;

	if (w->flight || !w->batch_head)
		return;
	if (w->g->conf->commit_window_us && !w->stopping) {
		/* Group-commit window: give other sessions a moment to finish
		 * their messages so that one fdatasync covers them too. */
		int64_t wait = w->batch_since + w->g->conf->commit_window_us - ring_clock_us();

		if (wait > 0) {
			if (!w->window_armed) {
				sqe = ring_sqe(w);
				w->window_ts.tv_sec = wait / 1000000;
				w->window_ts.tv_nsec = (wait % 1000000) * 1000;
				io_uring_prep_timeout(sqe, &w->window_ts, 0, 0);
				io_uring_sqe_set_data64(sqe, UD(&w->window_ts, UD_TIMER));
				w->window_armed = true;
			}
			return;
		}
	}
	if (w->seg_fd < 0 || w->seg_broken || w->seg_off >= w->g->conf->segment_size) {
		err = seg_open(w);
		if (err) {
			LOGE("worker %u: cannot open a spool segment: %s", w->id, strerror(-err));
			while ((c = w->batch_head)) {
				w->batch_head = c->batch_next;
				session_committed(w, c, err);
			}
			w->batch_tail = NULL;
			return;
		}
	}
	room = io_uring_sq_space_left(&w->ring);
	if (room < 8) {
		io_uring_submit(&w->ring);
		room = io_uring_sq_space_left(&w->ring);
	}
	room = room > BATCH_MAX + 1 ? BATCH_MAX + 1 : room;
	now = time(NULL);
	while ((c = w->batch_head) && n + 1 < room) {
		struct spool_env env;
		struct iovec body[2];
		size_t total;

		w->batch_head = c->batch_next;
		if (!w->batch_head)
			w->batch_tail = NULL;
		make_qid(w, c->qid, now);
		env = (struct spool_env){
		    .qid = c->qid,
		    .arrival = now,
		    .client = c->s.peer.addr,
		    .helo = c->s.helo,
		    .from = c->s.tx.from.len ? buf_cstr(&c->s.tx.from) : "", /* <> */
		    .rcpts = c->s.tx.rcpts.p,
		    .nrcpt = c->s.tx.nrcpt,
		    .body_8bit = c->s.tx.body_8bit,
		    .smtputf8 = c->s.tx.smtputf8,
		};
		err = smtp_session_received(&c->s, &c->rcvd, c->qid, now);
		body[0] = (struct iovec){c->rcvd.p, c->rcvd.len};
		body[1] = (struct iovec){c->s.tx.body.p, c->s.tx.body.len};
		if (!err)
			err = spool_rec_build(&c->rec, &env, body, 2);
		if (err) {
			session_committed(w, c, err);
			continue;
		}
		c->rec_off = w->seg_off;
		c->iov[0] = (struct iovec){c->rec.p, c->rec.len};
		c->iov[1] = body[0];
		c->iov[2] = body[1];
		total = c->rec.len + c->rcvd.len + c->s.tx.body.len;
		c->spool_err = -ECANCELED;
		c->flags |= C_WRITE;
		sqe = ring_sqe(w);
		io_uring_prep_writev(sqe, w->seg_fd, c->iov, c->s.tx.body.len ? 3 : 2, w->seg_off);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, UD(c, UD_WRITE));
		w->seg_off += total;
		c->batch_next = NULL;
		if (last)
			last->batch_next = c;
		else
			w->flight = c;
		last = c;
		n++;
	}
	if (!n)
		return;
	w->nflight = n;
	sqe = ring_sqe(w);
	if (w->g->conf->durability_none)
		io_uring_prep_nop(sqe); /* --durability none: benchmarks only */
	else
		io_uring_prep_fsync(sqe, w->seg_fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data64(sqe, UD(w, UD_SYNC));
}

void commit_on_write(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
	size_t want = c->iov[0].iov_len + c->iov[1].iov_len + c->iov[2].iov_len;

	if (cqe->res >= 0 && (size_t)cqe->res == want) {
		c->spool_err = 0;
		return;
	}
	/* A short write means the disk filled up. */
	c->spool_err = cqe->res < 0 ? cqe->res : -ENOSPC;
	if (cqe->res != -ECANCELED && !w->flight_err)
		w->flight_err = c->spool_err;
	if (c->spool_err == -ENOSPC || c->spool_err == -EDQUOT)
		w->storage_low = true; /* until the next free-space check says otherwise */
	if (cqe->res != -ECANCELED)
		LOGW("worker %u: spool write: %s", w->id, strerror(-c->spool_err));
	w->seg_broken = true;
}

void commit_on_sync(struct worker *w, struct io_uring_cqe *cqe)
{
	struct conn *c, *next;
	int err = cqe->res;

	if (err < 0) {
		if (err != -ECANCELED)
			LOGE("worker %u: spool fdatasync: %s", w->id, strerror(-err));
		w->seg_broken = true;
	}
	LOGD("worker %u: group commit of %u messages", w->id, w->nflight);
	w->stat_commits++;
	w->stat_msgs += w->nflight;
	if (w->nflight > w->stat_max_batch)
		w->stat_max_batch = w->nflight;
	for (c = w->flight; c; c = next) {
		int e = c->spool_err;

		next = c->batch_next;
		if (e == 0 && err < 0)
			e = err; /* written but not known durable */
		/* A write cancelled behind a failed one failed for the same reason. */
		if (e == -ECANCELED)
			e = w->flight_err ? w->flight_err : -EIO;
		session_committed(w, c, e);
	}
	w->flight = NULL;
	w->nflight = 0;
	w->flight_err = 0;
	route_outbox_flush(w);
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
