/* ring: io_uring plumbing (liburing's examples/io_uring-udp.c shape):
 * get_sqe that submits when full, one provided buffer ring shared by the
 * ring's multishot receives (an idle connection holds no receive buffer),
 * and the ring's set-up with SINGLE_ISSUER | DEFER_TASKRUN where the kernel
 * has them and the owner allows. A struct ring is a worker's or a
 * ringmx-bench thread's; the log lines further down are the worker's.
 * See ring.h. */
#include "io/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

int64_t ring_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ring_clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct io_uring_sqe *ring_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);

	if (!sqe) {
		io_uring_submit(&r->uring);
		sqe = io_uring_get_sqe(&r->uring);
	}
	if (!sqe) {
		/* Cannot happen with SUBMIT_ALL and a large CQ; broken invariant. */
		LOGE("ring: submission queue full");
		abort();
	}
	return sqe;
}

void ring_timer_at(struct ring *r, struct ring_timer *t, int64_t now, int64_t at, uint64_t ud)
{
	struct io_uring_sqe *sqe;
	int64_t ms;

	if (!at || (t->armed_at && t->armed_at <= at))
		return;
	ms = at - now;
	if (ms < 1)
		ms = 1;
	t->ts.tv_sec = ms / 1000;
	t->ts.tv_nsec = (ms % 1000) * 1000000;
	sqe = ring_sqe(r);
	io_uring_prep_timeout(sqe, &t->ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud);
	t->armed_at = now + ms;
}

void ring_poll_fd(struct ring *r, int fd, unsigned mask, uint64_t ud)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_poll_add(sqe, fd, mask);
	io_uring_sqe_set_data64(sqe, ud);
}

void ring_poll_cancel(struct ring *r, uint64_t ud)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_poll_remove(sqe, ud);
	io_uring_sqe_set_data64(sqe, 0); /* UD_NONE */
}

const char *ring_rx(struct ring *r, unsigned bid)
{
	return r->rx + (size_t)bid * RX_BUF_SIZE;
}

void ring_rx_recycle(struct ring *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, r->rx + (size_t)bid * RX_BUF_SIZE, RX_BUF_SIZE,
	                      (unsigned short)bid, io_uring_buf_ring_mask(r->nbufs), 0);
	io_uring_buf_ring_advance(r->br, 1);
}

int ring_setup(struct ring *r, unsigned entries, unsigned cq_entries, bool one_thread)
{
	static const unsigned flagsets[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_SUBMIT_ALL,
	    0,
	};
	int err = -EINVAL;

	for (unsigned i = one_thread ? 0 : 2; i < sizeof(flagsets) / sizeof(flagsets[0]); i++) {
		struct io_uring_params p = {0};

		p.flags = flagsets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
		err = io_uring_queue_init_params(entries, &r->uring, &p);
		if (err != -EINVAL)
			break;
	}
	return err;
}

int ring_bufs_setup(struct ring *r, unsigned nbufs)
{
	struct io_uring_buf_reg reg = {0};
	size_t rsz = nbufs * sizeof(struct io_uring_buf);
	int err;

	r->br = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->br == MAP_FAILED) {
		r->br = NULL;
		return -errno;
	}
	r->rx = mmap(NULL, (size_t)nbufs * RX_BUF_SIZE, PROT_READ | PROT_WRITE,
	             MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->rx == MAP_FAILED) {
		r->rx = NULL;
		return -errno;
	}
	r->nbufs = nbufs;
	io_uring_buf_ring_init(r->br);
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = nbufs;
	reg.bgid = RX_BGID;
	err = io_uring_register_buf_ring(&r->uring, &reg, 0);
	if (err)
		return err;
	for (unsigned i = 0; i < nbufs; i++)
		io_uring_buf_ring_add(r->br, r->rx + (size_t)i * RX_BUF_SIZE, RX_BUF_SIZE,
		                      (unsigned short)i, io_uring_buf_ring_mask(nbufs), (int)i);
	io_uring_buf_ring_advance(r->br, (int)nbufs);
	return 0;
}

/* ---- log lines ---- */

static bool log_stream; /* stderr is a pipe, a socket or a terminal */
static bool log_ring;   /* the workers' lines go through their rings */

void ring_log_prepare(void)
{
	struct stat st;
	int fl;

	if (fstat(STDERR_FILENO, &st) != 0)
		return; /* log_ring stays false: every line is written directly */
	log_stream = !S_ISREG(st.st_mode);
	fl = fcntl(STDERR_FILENO, F_GETFL);
	if (fl < 0)
		return;
	if (!log_stream && !(fl & O_APPEND) && fcntl(STDERR_FILENO, F_SETFL, fl | O_APPEND) < 0)
		return; /* a ring write at offset 0 would overwrite the file's start */
	log_ring = true;
}

void ring_log_start(struct worker *w)
{
	if (log_ring)
		log_sink_set(&w->log.gather);
}

static void log_submit(struct worker *w)
{
	struct ring_log *l = &w->log;
	size_t n = l->flying.len - l->off;
	struct io_uring_sqe *sqe;

	if (log_stream && n > PIPE_BUF) {
		/* Lines are at most 1 KB: a line end is in the first PIPE_BUF. */
		const char *p = l->flying.p + l->off;

		n = PIPE_BUF;
		while (n > 1 && p[n - 1] != '\n')
			n--;
	}
	sqe = ring_sqe(&w->ring);
	io_uring_prep_write(sqe, STDERR_FILENO, l->flying.p + l->off, (unsigned)n, 0);
	io_uring_sqe_set_data64(sqe, UD(w, UD_STDERR));
	l->inflight = true;
}

void ring_log_flush(struct worker *w)
{
	struct ring_log *l = &w->log;
	struct log_sink t;

	if (l->inflight || !l->gather.len)
		return;
	t = l->flying;
	l->flying = l->gather;
	l->gather = t;
	l->gather.len = 0;
	l->off = 0;
	log_submit(w);
}

void ring_log_on_write(struct worker *w, void *p, struct io_uring_cqe *cqe)
{
	struct ring_log *l = &w->log;

	l->inflight = false;
	if (cqe->res > 0)
		l->off += (size_t)cqe->res;
	else
		l->off = l->flying.len; /* stderr is gone: nowhere to say so */
	if (l->off < l->flying.len) {
		log_submit(w);
		return;
	}
	l->flying.len = 0;
	l->off = 0;
}

bool ring_log_busy(const struct worker *w)
{
	return w->log.inflight;
}

void ring_log_stop(struct worker *w)
{
	struct ring_log *l = &w->log;

	log_sink_set(NULL);
	/* The thread's last lines, after its ring is idle: a direct write is
	 * all there is at this point. */
	for (size_t o = 0; o < l->gather.len;) {
		ssize_t k = write(STDERR_FILENO, l->gather.p + o, l->gather.len - o);

		if (k <= 0 && errno != EINTR)
			break;
		o += k > 0 ? (size_t)k : 0;
	}
	free(l->gather.p);
	free(l->flying.p);
	memset(l, 0, sizeof(*l));
}
