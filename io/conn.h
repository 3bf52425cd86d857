/* conn: the plumbing every connection on a ring (struct ring, io/ring.h)
 * shares, the server session (io/session), the relay's connections to
 * next hops (io/relay) and ringmx-bench's client sessions (bench/rb_main.c)
 * alike: one multishot receive over the ring's provided buffers (or one
 * buffer at a time while the owner meters its input, and none while it
 * pauses it: back-pressure), one send at a time with the output
 * double-buffered, or the owner's own iovecs sent without a copy, partial
 * sends continued either way, and the transport, clear text or TLS over
 * memory BIOs (io/tls), behind a table of three functions (HAProxy's
 * xprt_ops, Redis's ConnectionType), so that the owner never branches on
 * TLS to move bytes. It knows rings, not workers. The ring's thread only. */
#ifndef RINGMX_IO_CONN_H
#define RINGMX_IO_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include "io/types-t.h"

/* Plaintext for the owner. p == NULL, n == 0: the TLS handshake is done
 * (once). Returns false to stop taking input (the owner is closing). */
typedef bool conn_input_fn(void *owner, const char *p, size_t n);

struct conn_xprt {
	const char *name;
	/* <n> received bytes at <p>: their plaintext goes to <in>. Returns 0,
	 * or -errno: the transport failed (-ESHUTDOWN: the peer closed TLS). */
	int (*recv)(struct ring_conn *c, const char *p, size_t n, conn_input_fn *in, void *owner);
	/* Moves the owner's output <out> (emptied) into c->sending, ready for
	 * the kernel; <last>: nothing follows (TLS: close_notify). Returns 0 or
	 * -errno. Called only while no send is in flight. */
	int (*send)(struct ring_conn *c, struct buf *out, bool last);
	/* The owner's iovecs <mh> (conn_send_iov()): clear text keeps <mh>
	 * in c->mh, to be sent as it is; TLS copies the bytes through the
	 * record layer into c->sending. Returns 0 or -errno. Called only
	 * while no send is in flight. */
	int (*sendv)(struct ring_conn *c, struct msghdr *mh);
};
extern const struct conn_xprt conn_xprt_clear, conn_xprt_tls;

struct smtp_client;
struct tls_ctx;

/* A client session's replies (<n> bytes at <p>) from <c>, fed to <cl>,
 * with <act>(<arg>) after each step (the relay's and the verification's
 * connections). After a 220 to STARTTLS nothing more of the clear text is
 * read (client-side CVE-2011-0411): TLS starts with context <tls> and
 * server name <sni>, the rest of the input is dropped. */
void conn_client_input(struct ring_conn *c, struct smtp_client *cl, struct tls_ctx *tls,
                       const char *sni, const char *p, size_t n, void (*act)(void *arg), void *arg);

/* In place: <fd> (owned from now on), the owner's ops, clear text. */
void conn_init(struct ring_conn *c, int fd, unsigned op_recv, unsigned op_send);
/* Closes the socket, frees the buffers and the TLS state. */
void conn_fini(struct ring_conn *c);
/* From now on the bytes go through TLS session <t> (owned). */
void conn_start_tls(struct ring_conn *c, struct tls_conn *t);

void conn_arm_recv(struct ring *r, struct ring_conn *c);
/* Back-pressure: conn_pause() stops reading (the receive is cancelled;
 * bytes already on their way still arrive, a few buffers at most), so the
 * kernel's socket buffer fills and TCP's window closes on the sender;
 * conn_resume() reads again. Idempotent. */
void conn_pause(struct ring *r, struct ring_conn *c);
void conn_resume(struct ring *r, struct ring_conn *c);
/* <on>: receive one buffer at a time (one receive per completion) instead
 * of the multishot receive, which takes as many buffers as the kernel has
 * data for: for an owner that takes much input and must be able to stop
 * it at once (a large message), so that what arrives after a pause is one
 * buffer, not a burst. A multishot receive armed is cancelled and the
 * next one is single. */
void conn_meter(struct ring *r, struct ring_conn *c, bool on);
/* Marks <c> closing and cancels its receive. */
void conn_close(struct ring *r, struct ring_conn *c);
/* What a receive completion came to. */
enum conn_rx {
	CONN_RX_OK,      /* input taken (or none); the receive stays armed */
	CONN_RX_CLOSING, /* <c> is closing: the owner frees it once nothing is in flight */
	CONN_RX_EOF,     /* the peer closed (*err 0) or the receive failed (*err -errno) */
	CONN_RX_XPRT,    /* the transport failed (*err -errno; -ESHUTDOWN: TLS closed by the
	                  * peer); RCONN_HANGUP is set: flush the alert, then close */
};
/* A receive completion: the bytes go through the transport to <in> (none
 * once closing or hanging up), the buffer goes back to the kernel, and the
 * receive is armed again if the kernel ended it. */
enum conn_rx conn_on_recv(struct ring *r, struct ring_conn *c, struct io_uring_cqe *cqe,
                          conn_input_fn *in, void *owner, int *err);
/* Sends what the transport makes of <out>, unless a send is in flight or
 * <c> is closing. Returns true when a send was submitted. */
bool conn_flush(struct ring *r, struct ring_conn *c, struct buf *out, bool last);
/* Sends the owner's bytes without copying them (ringmx-bench's message
 * content, which points into one shared, read-only buffer): <mh>'s
 * msg_iov and msg_iovlen name them (its other fields zero). In clear
 * text they leave in one sendmsg, and <mh>, its iovecs and the bytes
 * must stay valid and untouched until conn_on_send() returns 0 or an
 * error: a partial send moves mh->msg_iov and the iovecs forward and
 * sends the rest. Through TLS the bytes are copied into records at once.
 * Unless a send is in flight or <c> is closing; the transport's failure
 * sets RCONN_HANGUP. Returns true when a send was submitted. */
bool conn_send_iov(struct ring *r, struct ring_conn *c, struct msghdr *mh);
/* A send completion (of conn_flush() or conn_send_iov()). Returns 0 (all
 * sent), 1 (partly: the rest is on its way) or -errno. */
int conn_on_send(struct ring *r, struct ring_conn *c, struct io_uring_cqe *cqe);

#endif
