/* relay: delivery of spooled messages to the next hops (SMTP or LMTP),
 * driven by each worker's ring: connections from a bounded pool per next
 * hop, the sans-I/O client session of core/smtp_client, retries with
 * exponential backoff, failover between next hops, bounces (RFC 3464). It
 * writes no file: bounces, done marks and defer notes go back to the loop
 * through struct relay_sink, which gives them to the committer. A worker
 * delivers the messages that the queue routed to it. io/ only. */
#ifndef RINGMX_IO_RELAY_H
#define RINGMX_IO_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/sv.h"
#include "io/relay_conf.h"
#include "queue/mq.h"

struct io_uring_cqe;
struct worker;

/* What the relay hands back to the worker loop, which gives it to the
 * committer (the relay writes no file itself). Worker thread only.
 * <bounce>: spool a DSN from <> to <rcpt>; 0 once queued, the answer then
 *           comes through relay_bounce_done(<token>), or -errno now.
 * <done>:   a done mark: delivery of that record (in registry segment
 *           <segno>) is over.
 * <defer>:  a line for the defer log (informational).
 * <move>:   write the record <rec> (read back whole) again, verbatim, into
 *           the current segment; 0 once queued, the answer then comes
 *           through relay_move_done(<token>), or -errno now. */
struct spool_done;
struct relay_sink {
	int (*bounce)(struct worker *w, const char *rcpt, struct sv body, bool body_8bit,
	              bool smtputf8, void *token);
	void (*done)(struct worker *w, const struct spool_done *d, int segno);
	void (*defer)(struct worker *w, const char *line, size_t len);
	int (*move)(struct worker *w, struct sv rec, void *token);
};
/* The bounce queued for <token> is durable as <bounce_qid> (<err> 0: the
 * message is marked done) or failed (-errno: the message is kept and
 * bounced again at its next retry). */
void relay_bounce_done(struct worker *w, void *token, int err, const char *bounce_qid);

/* The copy queued for <token> is durable in registry segment <segno> at
 * <off> (<err> 0), or failed (-errno: the message stays where it was). */
void relay_move_done(struct worker *w, void *token, int err, int segno, uint64_t off);

/* Per-worker delivery state. Worker thread only. */
int relay_init(struct worker *w, const struct relay_sink *sink);
void relay_fini(struct worker *w);
/* Takes descriptors the queue routed to this worker. */
void relay_take(struct worker *w, const struct mq_item *it, unsigned n);
/* Once a second: timeouts, deferred messages whose time has come. */
void relay_tick(struct worker *w);
/* Retry every deferred message now (ringmx queue --flush). */
void relay_flush(struct worker *w);
/* The operator's requests (io/control: control_requests_take()), <len>
 * bytes at <req> of "<op><qid>\0" entries, <op> an enum qtool_op:
 * QTOOL_DELETE forgets the message (the tool marked it done), QTOOL_RELEASE
 * tries a held one at once (the hold logs were read again: it is no longer
 * held), QTOOL_REQUEUE tries a deferred, not held, one at once. O(messages
 * deferred + requests). */
void relay_requests(struct worker *w, const char *req, size_t len);
/* The worker took a reload's snapshot: if its next hops differ, the relay
 * stops giving jobs to the old ones now, and moves once they are done
 * (relay_tick() looks again each second). Worker thread. */
void relay_reloaded(struct worker *w);
/* Completions of a relay connection's receive, send and connect. */
void relay_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe);
void relay_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe);
void relay_on_connect(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* A read of a record being loaded for delivery (struct rmsg), or of the
 * first body bytes a bounce returns. */
void relay_on_read(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* A read of the next body chunk of a relay connection's message (struct
 * relay_conn, UD_RELAY_BODY). */
void relay_on_body(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* End of a round: one send per relay connection with output. */
void relay_round(struct worker *w);
/* True while the relay still has connections open (shutdown waits). */
bool relay_busy(const struct worker *w);
/* The messages the relay holds (read back, being delivered or deferred)
 * and, in *<oldest>, the arrival of the oldest deferred one at the last
 * tick (0: none); 0 without --relay-to (*<oldest> untouched). */
unsigned relay_queued(const struct worker *w, time_t *oldest);
/* Shutdown: stop starting deliveries, QUIT idle connections; <hard>
 * (the grace period is over): close the busy ones too, their recipients
 * deferred (they stay in the spool). */
void relay_stop(struct worker *w, bool hard);

#endif
