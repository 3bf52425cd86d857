/* conn: connection plumbing on the worker's ring and the two transports.
 * See conn.h.
 *
 * The receive is one multishot recv over the worker's provided buffer ring
 * (an idle connection holds no receive buffer); the kernel may end it
 * (ENOBUFS when the buffers ran out, or at its own choice), and it is armed
 * again here. Output is double-buffered: the owner writes its next bytes
 * into its own buffer while the kernel reads c->sending; a partial send is
 * continued from here, so the owner sees one completion per flush. Or the
 * owner's iovecs leave as they are (conn_send_iov(): bytes it keeps
 * untouched until the send is done), continued the same way. */
#include "io/conn.h"

#include <errno.h>
#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/smtp_client.h"
#include "io/ring.h"
#include "io/tls.h"

/* ---- transports ---- */

static int clear_recv(struct ring_conn *c, const char *p, size_t n, conn_input_fn *in, void *owner)
{
	in(owner, p, n);
	return 0;
}

static int clear_send(struct ring_conn *c, struct buf *out, bool last)
{
	struct buf t;

	if (!out->len)
		return 0;
	/* Swap: the owner writes its next bytes into the other buffer while
	 * the kernel reads this one (c->sending is empty: no send in flight). */
	t = c->sending;
	c->sending = *out;
	*out = t;
	out->len = 0;
	return 0;
}

static int tls_recv(struct ring_conn *c, const char *p, size_t n, conn_input_fn *in, void *owner)
{
	char plain[RX_BUF_SIZE];
	ssize_t r = tls_conn_feed(c->tls, p, n);

	while (r >= 0) {
		r = tls_conn_read(c->tls, plain, sizeof(plain));
		if (!(c->flags & RCONN_TLS_UP) && tls_conn_established(c->tls)) {
			c->flags |= RCONN_TLS_UP;
			if (!in(owner, NULL, 0))
				return 0;
		}
		if (r <= 0)
			break;
		if (!in(owner, plain, (size_t)r))
			return 0;
	}
	return r < 0 ? (int)r : 0;
}

static int tls_send(struct ring_conn *c, struct buf *out, bool last)
{
	int err = 0;

	if (out->len && !(c->flags & RCONN_HANGUP) && tls_conn_write(c->tls, out->p, out->len) < 0)
		err = -EPROTO;
	buf_reset(out, OUT_KEEP);
	if (last && !(c->flags & RCONN_HANGUP)) {
		tls_conn_shutdown(c->tls); /* close_notify after the last bytes */
		c->flags |= RCONN_HANGUP;
	}
	/* The handshake writes on its own (ServerHello, tickets, alerts). */
	if (tls_conn_pending(c->tls) && tls_conn_take(c->tls, &c->sending) < 0 && !err)
		err = -ENOMEM;
	return err;
}

static int clear_sendv(struct ring_conn *c, struct msghdr *mh)
{
	if (mh->msg_iovlen)
		c->mh = mh; /* pointed at, not copied: conn_send_iov() */
	return 0;
}

static int tls_sendv(struct ring_conn *c, struct msghdr *mh)
{
	int err = 0;

	for (size_t i = 0; i < mh->msg_iovlen && !err && !(c->flags & RCONN_HANGUP); i++)
		if (mh->msg_iov[i].iov_len &&
		    tls_conn_write(c->tls, mh->msg_iov[i].iov_base, mh->msg_iov[i].iov_len) < 0)
			err = -EPROTO;
	if (tls_conn_pending(c->tls) && tls_conn_take(c->tls, &c->sending) < 0 && !err)
		err = -ENOMEM;
	return err;
}

const struct conn_xprt conn_xprt_clear = {"clear", clear_recv, clear_send, clear_sendv};
const struct conn_xprt conn_xprt_tls = {"tls", tls_recv, tls_send, tls_sendv};

/* ---- the connection ---- */

void conn_init(struct ring_conn *c, int fd, unsigned op_recv, unsigned op_send)
{
	*c = (struct ring_conn){
	    .fd = fd,
	    .op_recv = (uint8_t)op_recv,
	    .op_send = (uint8_t)op_send,
	    .xprt = &conn_xprt_clear,
	};
}

void conn_fini(struct ring_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_free(&c->sending);
	c->mh = NULL;
	tls_conn_free(c->tls);
	c->tls = NULL;
	c->xprt = &conn_xprt_clear;
}

void conn_start_tls(struct ring_conn *c, struct tls_conn *t)
{
	c->tls = t;
	c->xprt = &conn_xprt_tls;
}

void conn_client_input(struct ring_conn *c, struct smtp_client *cl, struct tls_ctx *tls,
                       const char *sni, const char *p, size_t n, void (*act)(void *arg), void *arg)
{
	size_t off = 0;

	while (off < n && !(cl->act & SMTPC_ACT_CLOSE)) {
		size_t k = smtp_client_feed(cl, p + off, n - off);

		off += k;
		if (cl->act & SMTPC_ACT_STARTTLS) {
			struct tls_conn *t = tls_conn_new_client(tls, sni);

			cl->act &= ~SMTPC_ACT_STARTTLS;
			if (t)
				conn_start_tls(c,
				               t); /* the ClientHello leaves with the next flush */
			else
				smtp_client_fail(cl, "4.3.0 cannot start TLS");
			act(arg);
			return;
		}
		act(arg);
		if (!k)
			break;
	}
}

void conn_arm_recv(struct ring *r, struct ring_conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	if (c->flags & RCONN_ONESHOT) {
		io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
		c->flags &= ~RCONN_MULTI;
	} else {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		c->flags |= RCONN_MULTI;
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RX_BGID;
	io_uring_sqe_set_data64(sqe, UD(c, c->op_recv));
	c->flags |= RCONN_RECV;
	c->inflight++;
}

/* Ends the multishot receive armed, if any; conn_on_recv() re-arms. */
static void cancel_multi(struct ring *r, struct ring_conn *c)
{
	struct io_uring_sqe *sqe;

	if ((c->flags & (RCONN_RECV | RCONN_MULTI)) != (RCONN_RECV | RCONN_MULTI) ||
	    (c->flags & RCONN_CANCEL))
		return;
	c->flags |= RCONN_CANCEL;
	sqe = ring_sqe(r);
	io_uring_prep_cancel64(sqe, UD(c, c->op_recv), 0);
	io_uring_sqe_set_data64(sqe, UD_NONE);
}

void conn_pause(struct ring *r, struct ring_conn *c)
{
	if (c->flags & (RCONN_PAUSED | RCONN_CLOSING))
		return;
	c->flags |= RCONN_PAUSED;
	cancel_multi(r, c); /* a single receive in flight brings one buffer: let it */
}

void conn_meter(struct ring *r, struct ring_conn *c, bool on)
{
	if (on == !!(c->flags & RCONN_ONESHOT))
		return;
	if (!on) {
		c->flags &= ~RCONN_ONESHOT; /* the next receive armed is a multishot one */
		return;
	}
	c->flags |= RCONN_ONESHOT;
	if (!(c->flags & RCONN_CLOSING))
		cancel_multi(r, c);
}

void conn_resume(struct ring *r, struct ring_conn *c)
{
	if (!(c->flags & RCONN_PAUSED))
		return;
	c->flags &= ~RCONN_PAUSED;
	/* A receive still armed (its cancel not yet completed) is re-armed
	 * when its last completion comes. */
	if (!(c->flags & (RCONN_RECV | RCONN_CLOSING)))
		conn_arm_recv(r, c);
}

void conn_close(struct ring *r, struct ring_conn *c)
{
	struct io_uring_sqe *sqe;

	c->flags |= RCONN_CLOSING;
	if (c->flags & RCONN_RECV) {
		sqe = ring_sqe(r);
		io_uring_prep_cancel64(sqe, UD(c, c->op_recv), 0);
		io_uring_sqe_set_data64(sqe, UD_NONE);
	}
}

enum conn_rx conn_on_recv(struct ring *r, struct ring_conn *c, struct io_uring_cqe *cqe,
                          conn_input_fn *in, void *owner, int *err)
{
	int res = cqe->res, xerr = 0;

	*err = 0;
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->flags &= ~RCONN_RECV;
		c->inflight--;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0 && !(c->flags & (RCONN_CLOSING | RCONN_HANGUP)))
			xerr = c->xprt->recv(c, ring_rx(r, bid), (size_t)res, in, owner);
		ring_rx_recycle(r, bid);
	}
	if (c->flags & RCONN_CLOSING)
		return CONN_RX_CLOSING;
	if (!(c->flags & RCONN_RECV) && (c->flags & RCONN_CANCEL)) {
		c->flags &= ~RCONN_CANCEL;
		if (res == -ECANCELED)
			res = -ENOBUFS; /* our own pause: not the peer's doing */
	}
	if (res == 0 || (res < 0 && res != -ENOBUFS)) {
		*err = res; /* peer closed or reset */
		return CONN_RX_EOF;
	}
	if (!(c->flags & (RCONN_RECV | RCONN_PAUSED)))
		conn_arm_recv(r, c); /* ENOBUFS, the kernel ended the multishot, a resume */
	if (xerr < 0) {
		c->flags |= RCONN_HANGUP;
		*err = xerr;
		return CONN_RX_XPRT;
	}
	return CONN_RX_OK;
}

static void submit_send(struct ring *r, struct ring_conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_send(sqe, c->fd, c->sending.p, c->sending.len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, UD(c, c->op_send));
	c->flags |= RCONN_SEND;
	c->inflight++;
}

static void submit_sendmsg(struct ring *r, struct ring_conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_sendmsg(sqe, c->fd, c->mh, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, UD(c, c->op_send));
	c->flags |= RCONN_SEND;
	c->inflight++;
}

/* The transport of the next send. */
static const struct conn_xprt *xprt_next(struct ring_conn *c)
{
	if (c->flags & RCONN_CLEARONE) {
		c->flags &= ~RCONN_CLEARONE;
		return &conn_xprt_clear; /* the STARTTLS 220; what follows is encrypted */
	}
	return c->xprt;
}

bool conn_flush(struct ring *r, struct ring_conn *c, struct buf *out, bool last)
{
	if (c->flags & (RCONN_SEND | RCONN_CLOSING))
		return false;
	if (xprt_next(c)->send(c, out, last) < 0)
		c->flags |= RCONN_HANGUP;
	if (!c->sending.len)
		return false;
	submit_send(r, c);
	return true;
}

bool conn_send_iov(struct ring *r, struct ring_conn *c, struct msghdr *mh)
{
	if (c->flags & (RCONN_SEND | RCONN_CLOSING))
		return false;
	if (xprt_next(c)->sendv(c, mh) < 0)
		c->flags |= RCONN_HANGUP;
	if (c->mh) {
		submit_sendmsg(r, c);
		return true;
	}
	if (!c->sending.len)
		return false;
	submit_send(r, c);
	return true;
}

/* <n> bytes of c->mh went out: true when some are left, and c->mh then
 * names them. */
static bool iov_advance(struct msghdr *mh, size_t n)
{
	struct iovec *v = mh->msg_iov;
	size_t nv = mh->msg_iovlen;

	while (nv && n >= v->iov_len) {
		n -= v->iov_len;
		v++;
		nv--;
	}
	if (nv) {
		v->iov_base = (char *)v->iov_base + n;
		v->iov_len -= n;
	}
	mh->msg_iov = v;
	mh->msg_iovlen = nv;
	return nv > 0;
}

int conn_on_send(struct ring *r, struct ring_conn *c, struct io_uring_cqe *cqe)
{
	struct msghdr *mh = c->mh;

	c->inflight--;
	c->flags &= ~RCONN_SEND;
	c->mh = NULL;
	if (c->flags & RCONN_CLOSING)
		return -ECANCELED;
	if (cqe->res < 0)
		return cqe->res;
	if (mh) {
		if (!iov_advance(mh, (size_t)cqe->res))
			return 0;
		c->mh = mh; /* a short send: the rest, as conn_flush()'s below */
		submit_sendmsg(r, c);
		return 1;
	}
	if ((size_t)cqe->res < c->sending.len) {
		buf_consume(&c->sending, (size_t)cqe->res);
		submit_send(r, c);
		return 1;
	}
	buf_reset(&c->sending, OUT_KEEP);
	return 0;
}
