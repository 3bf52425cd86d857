/* worker: the loop of one worker thread (liburing examples' shape:
 * prepare SQEs, submit once, reap CQEs in a batch, dispatch on the kind
 * encoded in user_data). See worker.h.
 *
 * A round: wait for completions (sleeping only when no ring of the mesh
 * holds descriptors for this worker), dispatch each to its room, take what
 * the mesh routed here, then end the round Redis-like: one group commit
 * (io/commit), one round of relay sends, one send per session with output.
 * The tick (once a second, sooner when a greeting is due) runs timeouts,
 * retries and the free-space check. */
#include "io/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/maillog.h"
#include "core/stats.h"
#include "core/tables.h"
#include "io/cluster.h"
#include "io/commit.h"
#include "io/control.h"
#include "io/metrics.h"
#include "io/milter.h"
#include "io/fault.h"
#include "io/relay.h"
#include "io/ring.h"
#include "io/route.h"
#include "io/session.h"
#include "io/spill.h"
#include "io/verify.h"

/* ---- the mesh ---- */

/* Takes what other workers (and this one) routed here: the relay delivers
 * them; without --relay-to they are only held (they stay in the spool). */
static void mesh_drain(struct worker *w)
{
	struct mq_item it[POP_MAX];
	unsigned n;

	while ((n = mq_pop(&w->g->mq, w->id, it, POP_MAX))) {
		w->stat_received += n;
		if (w->relay)
			relay_take(w, it, n);
		else if (buf_append(&w->held, it, n * sizeof(it[0])))
			LOGE("worker %u: out of memory holding descriptors", w->id);
	}
}

/* Retries what a full ring refused (and places the messages recovered at
 * start). Order between messages does not matter to delivery. A full ring
 * to this worker itself is drained on the spot; other full rings keep
 * their share for the next tick. */
static void overflow_retry(struct worker *w)
{
	struct route_item *r = (struct route_item *)w->overflow.p;
	size_t n = w->overflow.len / sizeof(*r);
	struct buf again = BUF_INIT;

	if (!n)
		return;
	w->overflow = again;
	for (size_t i = 0; i < n; i++) {
		bool wake = false;

		if (r[i].to != w->id) {
			route_push(w, r[i].to, &r[i].it, 1);
			continue;
		}
		if (!mq_push(&w->g->mq, w->id, w->id, &r[i].it, 1, &wake)) {
			mesh_drain(w);
			if (!mq_push(&w->g->mq, w->id, w->id, &r[i].it, 1, &wake)) {
				route_push(w, w->id, &r[i].it, 1); /* keeps it for later */
				continue;
			}
		}
		w->stat_routed++;
	}
	free(r);
}

/* ---- timers and shutdown ---- */

static void arm_timer(struct worker *w)
{
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);
	int64_t ms = TICK_MS;

	if (w->greet_head) {
		int64_t d = w->greet_head->greet_at - w->now;

		if (d < ms)
			ms = d < 1 ? 1 : d;
	}

	w->tick_ts.tv_sec = ms / 1000;
	w->tick_ts.tv_nsec = (ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, UD(w, UD_TICK));
}

static void arm_accept(struct worker *w)
{
	for (unsigned i = 0; i < w->nlst; i++) {
		struct listener *l = &w->lst[i];
		struct io_uring_sqe *sqe;

		if (l->armed || l->fd < 0)
			continue;
		sqe = ring_sqe(&w->ring);
		io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
		io_uring_sqe_set_data64(sqe, UD(l, UD_ACCEPT));
		l->armed = 1;
	}
}

/* The queue's gauges for the metrics thread, once a tick: what the relay
 * holds (or, without one, the descriptors held here) and what waits for
 * ring space. */
static void stats_tick(struct worker *w)
{
	time_t oldest = 0;
	uint64_t n =
	    w->held.len / sizeof(struct mq_item) + w->overflow.len / sizeof(struct route_item);

	n += relay_queued(w, &oldest);
	stats_set_local(&w->st.queue_msgs, n);
	stats_set_local(&w->st.queue_oldest, oldest > 0 ? (uint64_t)oldest : 0);
}

static void on_tick(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	static unsigned ticks0; /* worker 0's, for the fault point below */

	/* The heartbeat the main thread checks before each watchdog ping. */
	atomic_store_explicit(&w->beat, w->now, memory_order_relaxed);
	if (w->id == 0 && ++ticks0 == 1 && fault_at("worker-stall")) {
		LOGW("worker 0: fault: RINGMX_FAULT=worker-stall reached: the loop stops for 5 s");
		sleep(5);
	}
	commit_check_storage(w);
	commit_tick(w);
	overflow_retry(w);
	relay_tick(w);
	stats_tick(w);
	session_tick(w);
	milter_tick(w);
	verify_tick(w);
	if (w->stopping && w->now >= w->grace_end)
		relay_stop(w, true);
	if (w->rearm_accept && !w->stopping) {
		w->rearm_accept = false;
		arm_accept(w);
	}
	arm_timer(w);
}

static void begin_stop(struct worker *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	w->grace_end = w->now + (int64_t)w->g->conf->grace * 1000;
	for (unsigned i = 0; i < w->nlst; i++) {
		struct io_uring_sqe *sqe;

		if (w->lst[i].armed) {
			sqe = ring_sqe(&w->ring);
			io_uring_prep_cancel64(sqe, UD(&w->lst[i], UD_ACCEPT), 0);
			io_uring_sqe_set_data64(sqe, UD_NONE);
		}
	}
	session_stop(w);
	relay_stop(w, false);
	LOGI("worker %u: stopping, %u sessions open", w->id, w->nconns);
}

static void arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = ring_sqe(&w->ring);

	io_uring_prep_read(sqe, w->wakefd, &w->wakeval, sizeof(w->wakeval), 0);
	io_uring_sqe_set_data64(sqe, UD(w, UD_EVENTFD));
}

/* The eventfd: stop, or the operator's requests (SIGUSR2: delete, release,
 * requeue), or flush the deferred ones (SIGUSR1). */
static void on_eventfd(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	if (atomic_load(&w->g->stop)) {
		begin_stop(w);
		return;
	}
	struct tables *t = atomic_exchange(&w->tables_next, NULL);

	if (t) {
		/* A reload: sessions move over between transactions (io/session). */
		tables_unref(w->tables);
		w->tables = t;
	}
	struct relay_conf *rn = atomic_exchange(&w->relay_next, NULL);

	if (rn) {
		/* New next hops: the relay moves once its connections are done. */
		relay_conf_unref(w->relay_want);
		w->relay_want = rn;
		relay_reloaded(w);
	}
	if (atomic_load(&w->g->ctl_gen) != w->ctl_gen) {
		struct buf req = BUF_INIT;

		w->ctl_gen = atomic_load(&w->g->ctl_gen);
		control_requests_take(w, &req);
		relay_requests(w, req.p, req.len);
		buf_free(&req);
	}
	if (atomic_load(&w->g->flush_gen) != w->flush_gen) {
		w->flush_gen = atomic_load(&w->g->flush_gen);
		LOGI("worker %u: retrying deferred messages now", w->id);
		relay_flush(w);
	}
	arm_wake(w);
}

static void on_nothing(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	/* UD_NONE: cancels, MSG_RING sends. UD_MSGRING: a producer's wake-up;
	 * mesh_drain() runs at the end of the round anyway. */
}

typedef void ud_handler_fn(struct worker *w, void *p, struct io_uring_cqe *cqe);

static ud_handler_fn *const ud_handlers[UD_NOPS] = {
    [UD_NONE] = on_nothing,
    [UD_ACCEPT] = session_on_accept,
    [UD_RECV] = session_on_recv,
    [UD_SEND] = session_on_send,
    [UD_SEG_SYNC] = commit_on_sync,
    [UD_DIR_SYNC] = commit_on_dir_sync,
    [UD_LOG_WRITE] = commit_on_log_write,
    [UD_LOG_SYNC] = commit_on_log_sync,
    [UD_LOG_DIRSYNC] = commit_on_log_dirsync,
    [UD_SEG_UNLINK] = commit_on_unlink,
    [UD_UNLINK_SYNC] = commit_on_unlink_sync,
    [UD_LOG_UNLINK] = commit_on_log_unlink,
    [UD_STDERR] = ring_log_on_write,
    [UD_TICK] = on_tick,
    [UD_DELAY] = session_on_delay,
    [UD_WINDOW] = commit_on_window,
    [UD_EVENTFD] = on_eventfd,
    [UD_MSGRING] = on_nothing,
    [UD_RELAY_RECV] = relay_on_recv,
    [UD_RELAY_SEND] = relay_on_send,
    [UD_RELAY_CONNECT] = relay_on_connect,
    [UD_RELAY_READ] = relay_on_read,
    [UD_RELAY_BODY] = relay_on_body,
    [UD_SPILL_WRITE] = spill_on_write,
    [UD_SPILL_FIN] = spill_on_fin,
    [UD_MILTER_RECV] = milter_on_recv,
    [UD_MILTER_SEND] = milter_on_send,
    [UD_MILTER_CONNECT] = milter_on_connect,
    [UD_MILTER_NOP] = milter_on_nop,
    [UD_MILTER_READ] = milter_on_read,
    [UD_CLUSTER_POLL] = cluster_on_poll,
    [UD_CLUSTER_TIMER] = cluster_on_timer,
    [UD_DNS_POLL] = session_dns_on_poll,
    [UD_DNS_TIMER] = session_dns_on_timer,
    [UD_DNS_WAIT] = session_dns_on_wait,
    [UD_VERIFY_RECV] = verify_on_recv,
    [UD_VERIFY_SEND] = verify_on_send,
    [UD_VERIFY_CONNECT] = verify_on_connect,
    [UD_VERIFY_WAKE] = verify_on_wake,
};

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = UD_OP(ud);

	if (op >= UD_NOPS || !ud_handlers[op]) {
		LOGE("worker %u: completion with unknown op %u", w->id, op);
		abort(); /* broken invariant: every SQE is tagged by this code */
	}
	ud_handlers[op](w, UD_PTR(ud), cqe);
}

/* ---- messages made here (bounces) ---- */

struct local_msg {
	struct commit_rec cr; /* first: the committer's callback gets it */
	struct buf rec, body;
	char qid[SMTP_QID_MAX + 1];
	uint32_t hash;
	void *token; /* the relay's message this bounces */
};

static void on_local_committed(struct worker *w, struct commit_rec *r, int err)
{
	struct local_msg *m = (struct local_msg *)r;

	if (err == 0) {
		maillog_queued(m->qid, "", m->body.len, 1); /* no client=: not received */
		if (r->segno >= 0)
			route_outbox_add(w, QDESC(r->segno, m->hash, r->off));
	} else {
		LOGE("spool: id=%s (bounce) not written: %s", m->qid, strerror(-err));
	}
	relay_bounce_done(w, m->token, err, m->qid);
	buf_free(&m->rec);
	buf_free(&m->body);
	free(m);
}

/* A bounce from the relay: from the null sender to <rcpt>, written by the
 * committer into the worker's segment with the next group commit, and
 * routed like any accepted message once durable; the relay hears of it
 * then (relay_bounce_done). */
static int sink_bounce(struct worker *w, const char *rcpt, struct sv body, bool body_8bit,
                       bool smtputf8, void *token)
{
	struct local_msg *m = calloc(1, sizeof(*m));
	time_t now = time(NULL);
	struct spool_env env;
	struct iovec iov;
	int err;

	if (!m)
		return -ENOMEM;
	commit_qid(w, m->qid, now);
	env = (struct spool_env){
	    .qid = m->qid,
	    .arrival = now,
	    .client = "",
	    .helo = w->g->conf->hostname,
	    .from = "",
	    .rcpts = rcpt,
	    .nrcpt = 1,
	    .body_8bit = body_8bit,
	    .smtputf8 = smtputf8,
	};
	err = buf_append(&m->body, body.p, body.len);
	iov = (struct iovec){m->body.p, m->body.len};
	if (!err)
		err = spool_rec_build(&m->rec, &env, &iov, 1);
	if (err) {
		buf_free(&m->rec);
		buf_free(&m->body);
		free(m);
		return err;
	}
	m->hash = route_hash(rcpt);
	m->token = token;
	m->cr = (struct commit_rec){
	    .iov = {{m->rec.p, m->rec.len}, iov},
	    .niov = 2,
	    .done = on_local_committed,
	};
	commit_submit(w, &m->cr);
	return 0;
}

/* A record the relay moves forward (a long-deferred message), written
 * verbatim by the committer with the next group commit; not routed: the
 * relay keeps the message and hears where the copy is (relay_move_done). */
struct moved_rec {
	struct commit_rec cr; /* first: the committer's callback gets it */
	void *token;
};

static void on_moved(struct worker *w, struct commit_rec *r, int err)
{
	struct moved_rec *mv = (struct moved_rec *)r;

	relay_move_done(w, mv->token, err, r->segno, r->off);
	free(mv);
}

static int sink_move(struct worker *w, struct sv rec, void *token)
{
	struct moved_rec *mv = calloc(1, sizeof(*mv));

	if (!mv)
		return -ENOMEM;
	mv->token = token;
	mv->cr = (struct commit_rec){
	    .iov = {{(void *)rec.p, rec.len}},
	    .niov = 1,
	    .done = on_moved,
	};
	commit_submit(w, &mv->cr);
	return 0;
}

static const struct relay_sink relay_sink = {
    .bounce = sink_bounce,
    .done = commit_done_mark,
    .move = sink_move,
    .defer = commit_defer_note,
};

static void worker_signal_ready(struct worker *w, int res)
{
	pthread_mutex_lock(&w->ready_mu);
	w->ready = res;
	pthread_cond_signal(&w->ready_cv);
	pthread_mutex_unlock(&w->ready_mu);
}

static bool worker_done(const struct worker *w)
{
	if (!w->stopping || w->nconns || commit_busy(w) || relay_busy(w) || verify_busy(w) ||
	    ring_log_busy(w))
		return false;
	for (unsigned i = 0; i < w->nlst; i++)
		if (w->lst[i].armed)
			return false;
	return true;
}

/* The group commits' batch sizes and fdatasync times (the metrics'
 * histograms, io/metrics.c), for the log at stop: how well the batching
 * did. */
static void worker_log_commits(struct worker *w)
{
	const struct stats_hist *b = &w->st.batch, *y = &w->st.sync;
	uint64_t n = 0;
	char line[320];
	size_t len = 0;

	for (unsigned i = 0; i <= metrics_batch_bounds.n && len < sizeof(line) - 40; i++) {
		n += b->bucket[i];
		if (!b->bucket[i])
			continue;
		if (i < metrics_batch_bounds.n)
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s<=%llu:%llu",
			                        len ? " " : "",
			                        (unsigned long long)metrics_batch_bounds.le[i],
			                        (unsigned long long)b->bucket[i]);
		else
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s>%llu:%llu",
			                        len ? " " : "",
			                        (unsigned long long)metrics_batch_bounds.le[i - 1],
			                        (unsigned long long)b->bucket[i]);
	}
	if (!n)
		return;
	LOGI("worker %u: group commits by messages per batch: %s; fdatasync mean %llu us", w->id,
	     line, (unsigned long long)(y->sum / n));
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct conf *cf = w->g->conf;
	int err;

	ring_log_start(w);

	err = ring_setup(&w->ring, RING_ENTRIES, RING_ENTRIES * 4, true);
	if (err) {
		LOGE("worker %u: io_uring set-up: %s", w->id, strerror(-err));
		worker_signal_ready(w, err);
		goto out;
	}
	if (w->id == 0)
		LOGI("io_uring flags 0x%x%s", w->ring.uring.flags,
		     w->ring.uring.flags & IORING_SETUP_DEFER_TASKRUN
		         ? ""
		         : " (kernel lacks SINGLE_ISSUER/DEFER_TASKRUN)");
	err = ring_bufs_setup(&w->ring, RX_BUF_COUNT);
	if (err) {
		LOGE("worker %u: provided buffer ring: %s", w->id, strerror(-err));
		worker_signal_ready(w, err);
		goto out;
	}
	w->nlst = cf->nlisten;
	w->lst = calloc(w->nlst, sizeof(*w->lst));
	for (unsigned i = 0; i < w->nlst; i++) {
		w->lst[i].w = w;
		w->lst[i].cl = &cf->listen[i];
		w->lst[i].fd = w->g->lfds[w->id * cf->nlisten + i];
		w->g->lfds[w->id * cf->nlisten + i] = -1; /* the worker closes it */
	}
	w->now = ring_clock_ms();
	atomic_store_explicit(&w->beat, w->now, memory_order_relaxed);
	commit_check_storage(w);
	err = relay_init(w, &relay_sink);
	if (err) {
		LOGE("worker %u: relay: %s", w->id, strerror(-err));
		worker_signal_ready(w, err);
		goto out;
	}
	if (verify_init(w) < 0) {
		LOGE("worker %u: out of memory for recipient verification", w->id);
		worker_signal_ready(w, -ENOMEM);
		goto out;
	}
	if (w->g->cluster && cluster_start(w) < 0) {
		LOGE("worker %u: out of memory for the --limits-redis link", w->id);
		worker_signal_ready(w, -ENOMEM);
		goto out;
	}
	if (session_dns_init(w) < 0) {
		worker_signal_ready(w, -ENOMEM);
		goto out;
	}
	arm_accept(w);
	arm_wake(w);
	arm_timer(w);
	io_uring_submit(&w->ring.uring);
	worker_signal_ready(w, 1);

	atomic_store_explicit(&w->g->ring_fds[w->id], w->ring.uring.ring_fd, memory_order_release);
	overflow_retry(w); /* messages recovered at start are routed from here */
	while (!worker_done(w)) {
		struct io_uring_cqe *cqe;
		struct conn *c;
		unsigned head, n = 0;
		bool sleep;

		/* Sleep only if no ring into this worker holds descriptors; a
		 * producer that finds us announced wakes us with MSG_RING. */
		sleep = mq_prepare_sleep(&w->g->mq, w->id);
		err = sleep ? io_uring_submit_and_wait(&w->ring.uring, 1)
		            : io_uring_submit(&w->ring.uring);
		if (sleep)
			mq_end_sleep(&w->g->mq, w->id);
		if (err < 0 && err != -EINTR && err != -EAGAIN && err != -EBUSY) {
			LOGE("worker %u: io_uring_enter: %s", w->id, strerror(-err));
			break;
		}
		w->now = ring_clock_ms();
		io_uring_for_each_cqe(&w->ring.uring, head, cqe)
		{
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring.uring, n);
		mesh_drain(w);
		/* End of the round: one group commit, one send per session. */
		if (w->paused.head)
			session_resume_some(w);
		/* The rates' verdicts (Redis's, or the local table's while it is
		 * away), once every session fed this round has asked. */
		cluster_round(w);
		commit_flush(w);
		verify_round(w); /* results to sessions, before their sends */
		relay_round(w);
		while ((c = w->dirty)) {
			w->dirty = c->dirty_next;
			c->flags &= ~C_DIRTY;
			if (c->state == CONN_S_CLOSING)
				session_maybe_free(w, c);
			else
				session_flush(w, c);
		}
		cluster_flush(w);
		ring_log_flush(w);
		/* What the group commits of this round made durable, through the
		 * ring or written by the worker itself (io/commit): routed once
		 * their "queued" lines are on their way to the log, so that the
		 * worker that delivers them logs after. */
		route_outbox_flush(w);
	}
	for (unsigned i = 0; i < w->nlst; i++)
		if (w->lst[i].fd >= 0)
			close(w->lst[i].fd);
	relay_fini(w);
	verify_fini(w);
	commit_fini(w);
	cluster_stop(w);
	session_dns_fini(w); /* no completion is dispatched any more */
	io_uring_queue_exit(&w->ring.uring);
	LOGI(
	    "worker %u: stopped; %llu messages in %llu group commits (%.1f per fdatasync, at most "
	    "%llu); %llu finished segments unlinked; %llu done logs rotated, %llu unlinked; queue: "
	    "%llu routed, %llu received, %llu held for delivery, %llu wake-ups sent, "
	    "%zu waiting for ring space; %llu messages streamed to a segment of their own, input "
	    "paused %llu times, at most %llu bytes of content held",
	    w->id, (unsigned long long)w->cm.stat_msgs, (unsigned long long)w->cm.stat_commits,
	    w->cm.stat_commits ? (double)w->cm.stat_msgs / (double)w->cm.stat_commits : 0.0,
	    (unsigned long long)w->cm.stat_max_batch, (unsigned long long)w->cm.stat_unlinked,
	    (unsigned long long)w->cm.stat_done_rotated,
	    (unsigned long long)w->cm.stat_done_unlinked, (unsigned long long)w->stat_routed,
	    (unsigned long long)w->stat_received,
	    (unsigned long long)(w->held.len / sizeof(struct mq_item)),
	    (unsigned long long)w->stat_wakes, w->overflow.len / sizeof(struct route_item),
	    (unsigned long long)w->cm.stat_spilled, (unsigned long long)w->stat_paused,
	    (unsigned long long)w->stat_held_peak);
	worker_log_commits(w);
out:
	ring_log_stop(w);
	return NULL;
}
