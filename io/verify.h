/* verify: next-hop recipient verification (--verify-recipients), the
 * worker's side. A RCPT the shared cache (core/verify_cache) cannot answer
 * stops its session (SMTP_ACT_VERIFY, io/session) and waits here, on the
 * worker's ring, for a probe of the recipient's next hop: MAIL FROM:<>,
 * RCPT TO:<addr>, RSET, over a connection kept open for the next probes
 * (the same next hops, routes and failover as the relay's, io/relay_conf;
 * the sans-I/O client core/smtp_client in probe mode; io/conn's plumbing).
 *
 * Where the probe runs: on the worker that needs it, with its own small
 * pool of connections per next hop (--verify-pool). The waiting session
 * and the probe are then events of one ring, so a result is given to the
 * session without a hand-off or a lock; a probe is rare (a miss per
 * address and cache period), so a few idle connections per worker cost
 * less than a MSG_RING round trip to a relay thread and back for every
 * miss. Workers still coalesce through the shared cache: the first to
 * claim an address probes it (its entry PENDING), the others note
 * themselves in that entry and are woken by MSG_RING (UD_VERIFY_WAKE) when
 * the result is put, so a hundred RCPTs for one address on any number of
 * workers are one probe. io/ only; the worker's thread. */
#ifndef RINGMX_IO_VERIFY_H
#define RINGMX_IO_VERIFY_H

#include "io/types-t.h"

/* At the worker's start: its probe state when the gateway verifies
 * (g->vcache), else nothing. Returns 0 or -ENOMEM. */
int verify_init(struct worker *w);
/* At its end: the connections closed, the waiters forgotten. */
void verify_fini(struct worker *w);

/* Session <c> stopped with SMTP_ACT_VERIFY: its RCPT waits for the word
 * on smtp_session_verify_addr(); it is answered (smtp_session_verify_done()
 * and the input it kept fed) in a later round. Sets C_VERIFYQ. */
void verify_ask(struct worker *w, struct conn *c);
/* <c> is closing: it waits no more (its probe goes on for the others). */
void verify_session_end(struct worker *w, struct conn *c);

/* End of a round: results to the sessions that waited, then one send per
 * probe connection that has output. */
void verify_round(struct worker *w);
/* Once a second: overdue probes and waits, idle connections. */
void verify_tick(struct worker *w);
/* Whether probe connections are still open (the loop waits at stop). */
bool verify_busy(const struct worker *w);

void verify_on_recv(struct worker *w, void *p, struct io_uring_cqe *cqe);
void verify_on_send(struct worker *w, void *p, struct io_uring_cqe *cqe);
void verify_on_connect(struct worker *w, void *p, struct io_uring_cqe *cqe);
void verify_on_wake(struct worker *w, void *p, struct io_uring_cqe *cqe);

#endif
