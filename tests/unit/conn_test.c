/* conn_test: io/conn on a real ring (struct ring) over a socket pair:
 * the multishot receive handing its bytes to the owner, the buffer send
 * (conn_flush()), and the iovec send (conn_send_iov()) continued across
 * partial sends until every byte is out, in order, with the owner's bytes
 * never copied. The peer reads slowly (a small socket buffer), so the
 * kernel takes the iovecs a piece at a time. */
#include "io/conn.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/ring.h"

enum { OP_RECV = 1, OP_SEND };

static struct ring r;
static int peer;
static struct ring_conn c;

static void setup(void)
{
	int sv[2], small = 4096;
	int err = ring_setup(&r, 64, 256, false);

	if (err == -ENOSYS || err == -EPERM)
		cr_skip_test("no io_uring here: %s", strerror(-err));
	cr_assert_eq(err, 0, "ring_setup: %s", strerror(-err));
	cr_assert_eq(ring_bufs_setup(&r, 16), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	conn_init(&c, sv[0], OP_RECV, OP_SEND);
	peer = sv[1];
}

static void teardown(void)
{
	conn_fini(&c);
	close(peer);
	io_uring_queue_exit(&r.uring);
}

/* Reads what the peer has into <got> (at most <cap>); returns the new length. */
static size_t peer_read(char *got, size_t len, size_t cap)
{
	ssize_t k;

	while (len < cap && (k = read(peer, got + len, cap - len < 1000 ? cap - len : 1000)) > 0)
		len += (size_t)k;
	return len;
}

/* Waits for one completion of <c>'s send; returns what conn_on_send() said. */
static int reap_send(void)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {0, 2000000};
	int res;

	for (;;) {
		int e = io_uring_submit_and_wait_timeout(&r.uring, &cqe, 1, &ts, NULL);

		if (e == 0 || e == 1)
			break;
		cr_assert(e == -ETIME || e == -EINTR, "wait: %s", strerror(-e));
		return 2; /* nothing yet: the caller reads and comes back */
	}
	cr_assert_eq(UD_OP(io_uring_cqe_get_data64(cqe)), OP_SEND);
	cr_assert_eq(UD_PTR(io_uring_cqe_get_data64(cqe)), &c);
	res = conn_on_send(&r, &c, cqe);
	io_uring_cqe_seen(&r.uring, cqe);
	return res;
}

Test(conn, send_iov_continues_partial_sends_without_copying, .init = setup, .fini = teardown)
{
	size_t sizes[3] = {100000, 7, 300001}, total = 0, got_len = 0;
	char *src[3], *got;
	struct iovec iov[3];
	struct msghdr mh = {0};
	unsigned partial = 0;
	int res;

	for (int i = 0; i < 3; i++) {
		src[i] = malloc(sizes[i]);
		for (size_t k = 0; k < sizes[i]; k++)
			src[i][k] = (char)(k * 7 + (size_t)i * 13);
		iov[i] = (struct iovec){src[i], sizes[i]};
		total += sizes[i];
	}
	got = malloc(total);
	mh.msg_iov = iov;
	mh.msg_iovlen = 3;
	cr_assert(conn_send_iov(&r, &c, &mh));
	cr_assert(c.flags & RCONN_SEND);
	cr_assert_not(conn_send_iov(&r, &c, &mh), "one send at a time");
	cr_assert_eq(c.sending.len, 0, "clear text is pointed at, not copied");
	do {
		got_len = peer_read(got, got_len, total);
		res = reap_send();
		if (res == 1)
			partial++;
		cr_assert_geq(res, 0, "send: %s", strerror(-res));
	} while (res != 0);
	got_len = peer_read(got, got_len, total);
	cr_assert_eq(got_len, total);
	cr_assert_gt(partial, 0, "the socket buffer is small: the kernel took pieces");
	cr_assert_eq(memcmp(got, src[0], sizes[0]), 0);
	cr_assert_eq(memcmp(got + sizes[0], src[1], sizes[1]), 0);
	cr_assert_eq(memcmp(got + sizes[0] + sizes[1], src[2], sizes[2]), 0);
	cr_assert_eq(c.mh, NULL);
	cr_assert_eq(c.inflight, 0);
	cr_assert_not(c.flags & RCONN_SEND);
	for (int i = 0; i < 3; i++)
		free(src[i]);
	free(got);
}

Test(conn, flush_sends_the_buffer_and_empties_it, .init = setup, .fini = teardown)
{
	struct buf out = BUF_INIT;
	char got[64];
	int res;

	cr_assert_eq(buf_append_str(&out, "250 ok\r\n"), 0);
	cr_assert(conn_flush(&r, &c, &out, false));
	cr_assert_eq(out.len, 0, "swapped into c.sending");
	while ((res = reap_send()) == 2)
		;
	cr_assert_eq(res, 0);
	cr_assert_eq(peer_read(got, 0, sizeof(got)), 8);
	cr_assert_eq(memcmp(got, "250 ok\r\n", 8), 0);
	buf_free(&out);
}

static char in_buf[256];
static size_t in_len;

static bool on_input(void *owner, const char *p, size_t n)
{
	cr_assert_eq(owner, &c);
	cr_assert_leq(in_len + n, sizeof(in_buf));
	memcpy(in_buf + in_len, p, n);
	in_len += n;
	return true;
}

Test(conn, multishot_receive_hands_bytes_to_the_owner, .init = setup, .fini = teardown)
{
	struct io_uring_cqe *cqe;
	int err;

	conn_arm_recv(&r, &c);
	cr_assert(c.flags & RCONN_RECV);
	for (int round = 0; round < 2; round++) {
		const char *msg = round ? "second\r\n" : "220 first\r\n";

		cr_assert_eq(write(peer, msg, strlen(msg)), (ssize_t)strlen(msg));
		cr_assert_geq(io_uring_submit_and_wait(&r.uring, 1), 0);
		cr_assert_eq(io_uring_peek_cqe(&r.uring, &cqe), 0);
		cr_assert_eq(UD_OP(io_uring_cqe_get_data64(cqe)), OP_RECV);
		cr_assert_eq(conn_on_recv(&r, &c, cqe, on_input, &c, &err), CONN_RX_OK);
		io_uring_cqe_seen(&r.uring, cqe);
	}
	cr_assert_eq(in_len, strlen("220 first\r\nsecond\r\n"));
	cr_assert_eq(memcmp(in_buf, "220 first\r\nsecond\r\n", in_len), 0);
	cr_assert(c.flags & RCONN_RECV, "still armed (multishot)");
	close(peer);
	peer = -1;
	cr_assert_geq(io_uring_submit_and_wait(&r.uring, 1), 0);
	cr_assert_eq(io_uring_peek_cqe(&r.uring, &cqe), 0);
	cr_assert_eq(conn_on_recv(&r, &c, cqe, on_input, &c, &err), CONN_RX_EOF);
	cr_assert_eq(err, 0, "the peer closed");
	io_uring_cqe_seen(&r.uring, cqe);
}
