/* session: the SMTP server connection on a worker's ring: accept, receive
 * into the sans-I/O session of core/smtp_session, TLS over memory BIOs,
 * one send per round, greeting delay, idle and handshake timeouts, and the
 * answer after the group commit. Worker thread only. */
#ifndef RINGMX_IO_SESSION_H
#define RINGMX_IO_SESSION_H

#include "io/types-t.h"

/* Completions of a listener's multishot accept, a conn's multishot receive
 * and its send. */
void session_on_accept(struct worker *w, void *listener, struct io_uring_cqe *cqe);
void session_on_recv(struct worker *w, void *conn, struct io_uring_cqe *cqe);
void session_on_send(struct worker *w, void *conn, struct io_uring_cqe *cqe);
/* End of a round: sends what the session has for the client (one send per
 * conn per round), or closes it when it is done. */
void session_flush(struct worker *w, struct conn *c);
/* Puts <c> on the worker's list of conns to flush at the end of the round. */
void session_mark_dirty(struct worker *w, struct conn *c);
/* Frees a closing conn once nothing is in flight and no list holds it. */
void session_maybe_free(struct worker *w, struct conn *c);
/* Starts closing: no more input is read. */
void session_close(struct worker *w, struct conn *c);
/* Sends the greeting (or the 421 when stopping). */
void session_greet(struct worker *w, struct conn *c);
/* Shutdown: a 421 to a session not in a transaction. */
void session_bye(struct worker *w, struct conn *c);
/* Once a second (or when a greeting is due): greetings, idle timeouts,
 * TLS handshake deadlines, the end of the shutdown grace period. */
void session_tick(struct worker *w);
/* The tarpit's timer (UD_DELAY): held replies whose time has come go. */
void session_on_delay(struct worker *w, void *p, struct io_uring_cqe *cqe);
/* End of a round, while sessions are paused: those whose reason to wait
 * is gone read again (the worker is under its share of --data-memory). */
void session_resume_some(struct worker *w);
/* The gateway is stopping: 421 to every session not in a transaction. */
void session_stop(struct worker *w);
/* Frees the pooled conns of a stopped worker. */
void session_pool_free(struct worker *w);

/* The DNS checks (io/session_dns.c): the worker's resolver and verdict
 * cache (w->sdns; 0, or -1 logged), gone after the loop (nothing more is
 * dispatched); the completions of the resolver's socket polls and timer
 * and of the checks' deadlines. */
int session_dns_init(struct worker *w);
void session_dns_fini(struct worker *w);
void session_dns_on_poll(struct worker *w, void *p, struct io_uring_cqe *cqe);
void session_dns_on_timer(struct worker *w, void *p, struct io_uring_cqe *cqe);
void session_dns_on_wait(struct worker *w, void *p, struct io_uring_cqe *cqe);

#endif
