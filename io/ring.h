/* ring: io_uring plumbing: the submission queue, the provided receive
 * buffers, the clocks and the ring's set-up (struct ring: a worker's, or a
 * ringmx-bench thread's); the worker's log lines on its ring. The thread
 * that owns the ring only, set-up included. */
#ifndef RINGMX_IO_RING_H
#define RINGMX_IO_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "io/types-t.h"

/* Milliseconds, CLOCK_MONOTONIC_COARSE: the worker's round clock. */
int64_t ring_clock_ms(void);
/* Microseconds, CLOCK_MONOTONIC: the commit window. */
int64_t ring_clock_us(void);
/* A free SQE of <r>; submits what is queued when the ring is full. Never
 * NULL. */
struct io_uring_sqe *ring_sqe(struct ring *r);
/* A foreign library's timer and sockets on the ring (io/cluster's
 * hiredis, io/dns's c-ares, io/session_delay's tarpit): one oneshot
 * timeout armed for the earliest time a caller needs, one oneshot poll
 * per socket and direction, re-armed by the owner after each completion.
 * Which of several timeouts in flight fired is not known: the owner
 * looks at everything due, sets <armed_at> to 0 and arms again
 * (struct ring_timer: types-t.h). */
/* Arms <t> for worker ms <at> (0: nothing due) unless a timeout armed
 * already fires no later; its completion carries <ud>. */
void ring_timer_at(struct ring *r, struct ring_timer *t, int64_t now, int64_t at, uint64_t ud);
/* A oneshot poll of <fd> for <mask> (POLLIN, POLLOUT); completion <ud>. */
void ring_poll_fd(struct ring *r, int fd, unsigned mask, uint64_t ud);
/* Cancels the poll whose completion is <ud> (its completion still comes,
 * -ECANCELED); the cancel's own completion is UD_NONE. */
void ring_poll_cancel(struct ring *r, uint64_t ud);
/* Receive buffer <bid> of <r>'s provided buffer ring. */
const char *ring_rx(struct ring *r, unsigned bid);
/* Gives receive buffer <bid> back to the kernel. */
void ring_rx_recycle(struct ring *r, unsigned bid);
/* Sets up r->uring with <entries> submission and <cq_entries> completion
 * entries and the best flags the kernel has (r->uring.flags says which):
 * SUBMIT_ALL, and with <one_thread> (only the calling thread will ever
 * submit to it or reap it: a worker) SINGLE_ISSUER and DEFER_TASKRUN.
 * Returns 0 or -errno. */
int ring_setup(struct ring *r, unsigned entries, unsigned cq_entries, bool one_thread);
/* Maps and registers <r>'s provided receive buffers: <nbufs> (a power of
 * two, at most 32768) of RX_BUF_SIZE bytes, group RX_BGID. The memory is
 * touched only as receives use it. Returns 0 or -errno. */
int ring_bufs_setup(struct ring *r, unsigned nbufs);

/* Main thread, before the workers start: a regular file as stderr gets
 * O_APPEND, so that the workers' ring writes (which carry no shared file
 * position) append whole; a pipe or socket gets writes of at most PIPE_BUF
 * bytes that end at a line end, which the kernel never splits. */
void ring_log_prepare(void);
/* This thread's log lines go to w->log from now on. */
void ring_log_start(struct worker *w);
/* End of a round: the round's lines leave in one ring write. */
void ring_log_flush(struct worker *w);
void ring_log_on_write(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* True while a write of log lines is in flight. */
bool ring_log_busy(const struct worker *w);
/* Thread end (the ring is idle): what is left is written directly. */
void ring_log_stop(struct worker *w);

#endif
