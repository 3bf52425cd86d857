/* milter_fuzz: libFuzzer target for the milter client (core/milter.c):
 * the input is what a filter answers, the negotiation reply first, to a
 * conversation that goes through every stage (connect, helo, mail, rcpt,
 * data, a header, eoh, a body chunk, end of message) and again. Besides
 * memory safety it checks the contract: the decoder never claims more
 * than it was given, a conversation that failed stays failed, and the
 * message after the modifications a filter got through has CRLF line ends
 * only (a bare CR or LF stored would be smuggling material at the next
 * hop). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/milter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char msg_text[] = "Received: from x\r\n\tby y\r\nSubject: s\r\nX-A: 1\r\n\r\nbody\r\n";

static void check_crlf(const struct buf *b)
{
	for (size_t i = 0; i < b->len; i++) {
		if (b->p[i] == '\r' && (i + 1 == b->len || b->p[i + 1] != '\n'))
			abort();
		if (b->p[i] == '\n' && (i == 0 || b->p[i - 1] != '\r'))
			abort();
	}
}

/* The next command of the cycle; returns its milter_send_*() result. */
static int next_cmd(struct milter *m, unsigned step)
{
	static const struct milter_macro mv[] = {{"j", "mx"}, {"{client_addr}", "192.0.2.1"}};

	switch (step % 9) {
	case 0:
		milter_send_macros(m, MILTER_ST_CONNECT, mv, 2);
		return milter_send_connect(m, "c", '4', 25, "192.0.2.1");
	case 1:
		return milter_send_helo(m, "h");
	case 2:
		return milter_send_mail(m, "a@b", NULL, 0);
	case 3:
		return milter_send_rcpt(m, "c@d");
	case 4:
		return milter_send_data(m);
	case 5:
		return milter_send_header(m, SV("Subject"), SV("s"));
	case 6:
		return milter_send_eoh(m);
	case 7:
		return milter_send_body(m, "body\r\n", 6);
	default:
		return milter_send_eom(m);
	}
}

/* The input as message content: the header block's end found on a prefix
 * is the one the whole finds, and where milter_msg_load() puts the body. */
static void hdr_end_check(const char *p, size_t n, size_t split)
{
	struct milter_msg msg = {0};
	struct buf all = BUF_INIT;
	size_t whole, part;

	if (milter_hdr_end(p, n, true, &whole) != 1 || whole > n)
		abort();
	if (milter_hdr_end(p, split, false, &part) && part != whole)
		abort();
	if (buf_append_str(&all, "Received: x\r\n") || buf_append(&all, p, n) ||
	    milter_msg_load(&msg, all.p, all.len, SV(""), "", 0, 0))
		abort();
	/* An unterminated last line: the load takes it as a field, the
	 * stream as body (it never sees content without its final CRLF). */
	if (n && p[n - 1] == '\n' && n - msg.body.len != whole)
		abort();
	buf_free(&all);
	milter_msg_fini(&msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct milter m;
	struct milter_pkt k;
	const char *p = (const char *)data;
	unsigned step = 0;
	int r, len;

	len = milter_decode(p, size, &k);
	if (len > 0 && ((size_t)len > size || k.data.p + k.data.len != p + len))
		abort();
	milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
	/* The protocol version offered (--milter-protocol), as the last octet says. */
	if (size &&
	    milter_set_version(&m, (uint32_t) "2346"[data[size - 1] % 4] - '0', data[size - 1] & 4))
		abort();
	milter_send_optneg(&m);
	/* In two parts, split where the first octet says. */
	size_t split = size ? data[0] % (size + 1) : 0;
	hdr_end_check(p, size, split);
	r = milter_input(&m, p, split);
	if (r == MILTER_IN_WAIT)
		r = milter_input(&m, p + split, size - split);
	while (r == MILTER_IN_DONE && step < 64) {
		bool eom = m.await == MILTER_ST_EOM;

		if (eom) {
			struct milter_msg msg = {0};
			struct buf out = BUF_INIT;
			char why[128];

			if (milter_msg_load(&msg, msg_text, sizeof(msg_text) - 1, SV("a@b"), "c@d",
			                    4, 1) ||
			    milter_apply(&m, &msg, why, sizeof(why)) ||
			    milter_msg_write(&msg, &out))
				abort();
			check_crlf(&out);
			buf_free(&out);
			milter_msg_fini(&msg);
		}
		m.out.len = 0;
		/* Commands that are not answered: on to the next. */
		while (step < 64 && next_cmd(&m, step++) == 0)
			;
		r = milter_input(&m, NULL, 0);
	}
	if (r == MILTER_IN_ERROR && (m.state != MILTER_S_FAILED || !m.err[0] ||
	                             milter_input(&m, NULL, 0) != MILTER_IN_ERROR))
		abort();
	milter_fini(&m);
	return 0;
}
