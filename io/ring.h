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
