/* milter: the gateway's content filters (--milter) on the worker's ring.
 * Each SMTP session that starts a transaction gets one connection to each
 * filter (opened at its first MAIL, kept for the session's further
 * messages), which runs the sans-I/O client of core/milter over io/conn:
 * IORING_OP_CONNECT, the multishot receive, one send at a time, never a
 * blocking socket; a slow filter stalls only its own session. MAIL and
 * RCPT go through the filters in order before their 250; the message goes
 * to them at its end (headers, body in chunks of 64 KB, end of message),
 * each filter seeing what the ones before it changed, and is spooled as
 * they left it, or refused or discarded. A filter down, timing out or
 * breaking the protocol gives --milter-default-action. Worker thread
 * only, except milter_targets_resolve() (main thread, at start). */
#ifndef RINGMX_IO_MILTER_H
#define RINGMX_IO_MILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "io/types-t.h"

/* Resolves the --milter addresses of <cf> into g->milters. Returns 0 or
 * -EINVAL with a line in <err>. Main thread, at start. */
int milter_targets_resolve(struct gateway *g, const struct conf *cf, char *err, size_t errlen);
/* The same into <v> (cf->nmilters of them): a reload's (io/reload, main
 * thread), kept in its snapshot. */
int milter_targets_load(struct milter_target *v, const struct conf *cf, char *err, size_t errlen);

/* <c> raised SMTP_ACT_FILTER (a MAIL or RCPT): runs it through the
 * filters; their answer goes to smtp_session_filter_done() and the session
 * goes on (session_resume()) in a later completion, never inside this
 * call. */
void milter_command(struct worker *w, struct conn *c);
/* <c>'s message is complete (SMTP_ACT_MSG_READY): false when no filter is
 * configured (the caller spools it); true: the filters have it, and it is
 * spooled (session_commit()), refused or discarded later. */
bool milter_message(struct worker *w, struct conn *c);
/* (io/milter_stream.c) After input or a completion, before content is
 * taken from tx.body for the disk (io/session's content_flow): finds the
 * end of the header block (at most <hdr_max> octets are held for it),
 * then hands the filters what came of the body. */
void milter_stream(struct worker *w, struct conn *c, size_t hdr_max);
/* True while the content must stay in tx.body: filters are configured and
 * the header block is not complete yet. */
bool milter_stream_hold(const struct worker *w, const struct conn *c);
/* True while the filter the body streams to is that far behind that the
 * client's input should pause. */
bool milter_stream_full(const struct conn *c);
/* Opens the segment <c>'s body streams into with filters (the head is
 * written at the end, as the filters left it). Returns 0, -EAGAIN (not
 * now: the last message's segment is still busy) or -errno. */
int milter_stream_spill(struct worker *w, struct conn *c);
/* <c> is closing: its filter connections close (what runs is dropped:
 * nothing was answered to the client). */
void milter_session_end(struct worker *w, struct conn *c);

/* Completions (UD_MILTER_*). */
void milter_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe);
void milter_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe);
void milter_on_connect(struct worker *w, void *p, struct io_uring_cqe *cqe);
void milter_on_nop(struct worker *w, void *p, struct io_uring_cqe *cqe);
void milter_on_read(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* Once a second: filters past --milter-timeout. */
void milter_tick(struct worker *w);

#endif
