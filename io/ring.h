/* ring: a worker's io_uring plumbing: the submission queue, the provided
 * receive buffers, the clocks and the ring's set-up. Worker thread only,
 * except set-up, which runs on the worker before its loop. */
#ifndef RINGMX_IO_RING_H
#define RINGMX_IO_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "io/types-t.h"

/* Milliseconds, CLOCK_MONOTONIC_COARSE: the worker's round clock. */
int64_t ring_clock_ms(void);
/* Microseconds, CLOCK_MONOTONIC: the commit window. */
int64_t ring_clock_us(void);
/* A free SQE; submits what is queued when the ring is full. Never NULL. */
struct io_uring_sqe *ring_sqe(struct worker *w);
/* Receive buffer <bid> of the worker's provided buffer ring. */
const char *ring_rx(struct worker *w, unsigned bid);
/* Gives receive buffer <bid> back to the kernel. */
void ring_rx_recycle(struct worker *w, unsigned bid);
/* Sets up w->ring with the best flags the kernel has. Returns 0 or -errno. */
int ring_setup(struct worker *w);
/* Maps and registers the provided receive buffers. Returns 0 or -errno. */
int ring_bufs_setup(struct worker *w);

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
