/* milter_test: the milter protocol client (core/milter): packets encoded
 * byte for byte as libmilter reads them, the decoder's bounds, the
 * negotiation (actions, steps left out or unanswered, macro lists), every
 * reply a filter can give (each also fed one octet at a time and split at
 * every offset), the modifications collected at end of message and carried
 * out on a message, and what a filter must not send. */
#include "core/milter.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "testutil.h"

/* A packet as a filter sends it: length, command, data. */
static size_t pkt(char *out, char cmd, const void *data, size_t n)
{
	uint32_t len = (uint32_t)n + 1;

	out[0] = (char)(len >> 24);
	out[1] = (char)(len >> 16);
	out[2] = (char)(len >> 8);
	out[3] = (char)len;
	out[4] = cmd;
	if (n)
		memcpy(out + 5, data, n);
	return n + 5;
}

static void put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

/* A filter's negotiation reply. */
static size_t optneg_reply(char *out, uint32_t ver, uint32_t act, uint32_t proto)
{
	char d[12];

	put32(d, ver);
	put32(d + 4, act);
	put32(d + 8, proto);
	return pkt(out, 'O', d, 12);
}

/* What negotiated() offers. */
static uint32_t offer_proto = MILTER_P_OFFER;

/* <m> negotiated with <act> and <proto>. */
static void negotiated(struct milter *m, uint32_t act, uint32_t proto)
{
	char r[32];
	size_t n;

	milter_init(m, MILTER_A_ALL, offer_proto);
	cr_assert_eq(milter_send_optneg(m), 1);
	n = optneg_reply(r, 6, act, proto);
	cr_assert_eq(milter_input(m, guarded(0, r, n), n), MILTER_IN_DONE);
	cr_assert_eq(m->state, MILTER_S_READY);
	m->out.len = 0;
}

Test(milter, optneg_encoded_as_libmilter_reads_it)
{
	struct milter m;
	const char want[] = "\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xf7\xff";

	milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
	cr_assert_eq(milter_send_optneg(&m), 1);
	cr_assert_eq(m.out.len, sizeof(want) - 1);
	cr_assert_eq(memcmp(m.out.p, want, m.out.len), 0);
	cr_assert_eq(m.state, MILTER_S_WAIT);
	milter_fini(&m);
}

/* --milter-protocol: the version offered, the steps and actions cut to
 * what it has (Postfix's milter8.c masks), a filter answering higher
 * refused, and the steps the version lacks never sent. */
Test(milter, protocol_version_offers_what_that_version_has)
{
	static const struct {
		uint32_t v;
		bool nhr;
		uint32_t act, proto;
		bool data;
	} cases[] = {
	    {2, false, 0x3f, 0x7f, false},  {2, true, 0x3f, 0xff, false},
	    {3, false, 0x3f, 0x17f, false}, {4, false, 0x3f, 0x37f, true},
	    {4, true, 0x3f, 0x3ff, true},   {6, false, 0x1ff, MILTER_P_OFFER, true},
	};
	struct milter m;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[17] = "\0\0\0\x0dO", r[32];
		size_t n;

		put32(want + 5, cases[i].v);
		put32(want + 9, cases[i].act);
		put32(want + 13, cases[i].proto);
		milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
		cr_assert_eq(milter_set_version(&m, cases[i].v, cases[i].nhr), 0);
		cr_assert_eq(milter_send_optneg(&m), 1);
		cr_assert_eq(m.out.len, 17);
		cr_assert_eq(memcmp(m.out.p, want, 17), 0, "case %zu", i);
		m.out.len = 0;
		/* A filter that chooses nothing: every step as the version has it. */
		n = optneg_reply(r, cases[i].v, 0, 0);
		cr_assert_eq(milter_input(&m, r, n), MILTER_IN_DONE, "case %zu: %s", i, m.err);
		cr_assert_eq(m.version, cases[i].v);
		cr_assert_eq(milter_wants(&m, MILTER_ST_DATA), cases[i].data, "case %zu", i);
		cr_assert_eq(milter_send_data(&m), cases[i].data ? 1 : 0, "case %zu", i);
		cr_assert_eq(m.out.len, cases[i].data ? 5u : 0u, "case %zu", i);
		cr_assert(milter_wants(&m, MILTER_ST_HEADER));
		milter_fini(&m);
		if (cases[i].v == 6)
			continue;
		/* Answered with a higher version, or asking for what the version
		 * lacks: a protocol error. */
		milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
		milter_set_version(&m, cases[i].v, cases[i].nhr);
		milter_send_optneg(&m);
		n = optneg_reply(r, 6, 0, 0);
		cr_assert_eq(milter_input(&m, r, n), MILTER_IN_ERROR, "case %zu", i);
		milter_fini(&m);
		milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
		milter_set_version(&m, cases[i].v, cases[i].nhr);
		milter_send_optneg(&m);
		n = optneg_reply(r, cases[i].v, MILTER_A_CHGFROM, 0);
		cr_assert_eq(milter_input(&m, r, n), MILTER_IN_ERROR, "case %zu", i);
		milter_fini(&m);
	}
	milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
	cr_assert_eq(milter_set_version(&m, 5, false), -EINVAL);
	cr_assert_eq(milter_set_version(&m, 1, false), -EINVAL);
	milter_fini(&m);
}

Test(milter, decoder_bounds)
{
	struct milter_pkt k;
	char b[16] = {0, 0, 0, 2, 'y', 'z', 'q'};

	for (size_t i = 0; i < 6; i++)
		cr_assert_eq(milter_decode(guarded(0, b, i), i, &k), MILTER_AGAIN, "prefix %zu", i);
	cr_assert_eq(milter_decode(guarded(0, b, 7), 7, &k), 6);
	cr_assert_eq(k.cmd, 'y');
	cr_assert_eq(k.data.len, 1);
	cr_assert_eq(k.data.p[0], 'z');
	memset(b, 0, 4);
	cr_assert_eq(milter_decode(b, 5, &k), MILTER_BAD); /* length 0 */
	put32(b, MILTER_PKT_MAX + 1);
	cr_assert_eq(milter_decode(b, 5, &k), MILTER_BAD);
	put32(b, MILTER_PKT_MAX);
	cr_assert_eq(milter_decode(b, 16, &k), MILTER_AGAIN);
	put32(b, 0xffffffffu);
	cr_assert_eq(milter_decode(b, 16, &k), MILTER_BAD);
}

Test(milter, negotiation_keeps_what_the_filter_chose)
{
	struct milter m;

	negotiated(&m, MILTER_A_ADDHDRS, MILTER_P_NOCONNECT | MILTER_P_NR_HDR);
	cr_assert_eq(m.version, 6);
	cr_assert_eq(m.actions, MILTER_A_ADDHDRS);
	cr_assert_not(milter_wants(&m, MILTER_ST_CONNECT));
	/* Left out: nothing sent, nothing awaited. */
	cr_assert_eq(milter_send_connect(&m, "h", '4', 25, "192.0.2.1"), 0);
	cr_assert_eq(m.out.len, 0);
	/* Unanswered: sent, nothing awaited. */
	cr_assert_eq(milter_send_header(&m, SV("Subject"), SV("hi")), 0);
	cr_assert_eq(m.out.len, 5 + 8 + 3);
	cr_assert_eq(m.state, MILTER_S_READY);
	cr_assert_eq(milter_send_eoh(&m), 1);
	milter_fini(&m);
}

Test(milter, negotiation_refuses_what_was_not_offered)
{
	static const uint32_t cases[][3] = {
	    {6, 0x200, 0},             /* an action not offered */
	    {6, 0, MILTER_P_RCPT_REJ}, /* a step not offered */
	    {1, 0, 0},                 /* too old */
	    {7, 0, 0},                 /* newer than known */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct milter m;
		char r[32];
		size_t n = optneg_reply(r, cases[i][0], cases[i][1], cases[i][2]);

		milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
		milter_send_optneg(&m);
		cr_assert_eq(milter_input(&m, r, n), MILTER_IN_ERROR, "case %zu", i);
		cr_assert_eq(m.state, MILTER_S_FAILED);
		cr_assert_neq(m.err[0], '\0');
		milter_fini(&m);
	}
}

Test(milter, connect_and_macros_encoded)
{
	struct milter m;
	const struct milter_macro mv[] = {{"j", "mx.example"}, {"{client_addr}", "192.0.2.1"}};
	const char want[] = "\0\0\0\x27"
	                    "DCj\0mx.example\0{client_addr}\0"
	                    "192.0.2.1\0"
	                    "\0\0\0\x1d"
	                    "Cclient.example\0"
	                    "4\x01\x00"
	                    "192.0.2.1\0";

	negotiated(&m, 0, 0);
	cr_assert_eq(milter_send_macros(&m, MILTER_ST_CONNECT, mv, 2), 0);
	cr_assert_eq(milter_send_connect(&m, "client.example", '4', 256, "192.0.2.1"), 1);
	cr_assert_eq(m.out.len, sizeof(want) - 1, "got %zu", m.out.len);
	cr_assert_eq(memcmp(m.out.p, want, m.out.len), 0);
	milter_fini(&m);
}

Test(milter, setsymlist_limits_the_macros_sent)
{
	struct milter m;
	char d[64], r[80];
	size_t n;
	const struct milter_macro mv[] = {{"j", "mx"}, {"{client_addr}", "192.0.2.1"}, {"_", "x"}};

	put32(d, 6);
	put32(d + 4, MILTER_A_SETSYMLIST);
	put32(d + 8, 0);
	put32(d + 12, MILTER_ST_CONNECT);
	memcpy(d + 16, "{client_addr} _", 16);
	n = pkt(r, 'O', d, 32);
	milter_init(&m, MILTER_A_ALL, MILTER_P_OFFER);
	milter_send_optneg(&m);
	cr_assert_eq(milter_input(&m, r, n), MILTER_IN_DONE);
	m.out.len = 0;
	milter_send_macros(&m, MILTER_ST_CONNECT, mv, 3);
	cr_assert_eq(m.out.len, 5 + 1 + 14 + 10 + 2 + 2);
	cr_assert_null(memmem(m.out.p, m.out.len, "j\0", 2));
	m.out.len = 0;
	/* Other stages: everything. */
	milter_send_macros(&m, MILTER_ST_HELO, mv, 1);
	cr_assert_eq(m.out.len, 5 + 1 + 2 + 3);
	milter_fini(&m);
}

Test(milter, mail_rcpt_header_body_encoded)
{
	struct milter m;
	const char *args[] = {"SIZE=10", "BODY=8BITMIME"};
	const char want[] = "\0\0\0\x25M<a@b.example>\0SIZE=10\0BODY=8BITMIME\0"
	                    "\0\0\0\x07R<c@d>\0"
	                    "\0\0\0\x0cLSubject\0hi\0"
	                    "\0\0\0\x01N"
	                    "\0\0\0\x04"
	                    "Babc"
	                    "\0\0\0\x01"
	                    "E";

	negotiated(&m, 0, 0);
	cr_assert_eq(milter_send_mail(&m, "a@b.example", args, 2), 1);
	m.state = MILTER_S_READY;
	cr_assert_eq(milter_send_rcpt(&m, "c@d"), 1);
	m.state = MILTER_S_READY;
	cr_assert_eq(milter_send_header(&m, SV("Subject"), SV("hi")), 1);
	m.state = MILTER_S_READY;
	cr_assert_eq(milter_send_eoh(&m), 1);
	m.state = MILTER_S_READY;
	cr_assert_eq(milter_send_body(&m, "abc", 3), 1);
	m.state = MILTER_S_READY;
	cr_assert_eq(milter_send_eom(&m), 1);
	cr_assert_eq(m.out.len, sizeof(want) - 1, "got %zu", m.out.len);
	cr_assert_eq(memcmp(m.out.p, want, m.out.len), 0);
	milter_fini(&m);
}

Test(milter, body_chunk_at_most_64k)
{
	struct milter m;
	static char big[MILTER_CHUNK + 100];

	negotiated(&m, 0, 0);
	cr_assert_eq(milter_send_body(&m, big, sizeof(big)), 1);
	cr_assert_eq(m.out.len, 5 + MILTER_CHUNK);
	milter_fini(&m);
}

/* Feeds <n> octets at <p> to a fresh conversation awaiting end of message,
 * whole, one octet at a time, and split at every offset; each time the
 * result must be <want> and <check> must hold. */
static void feed_all_ways(const char *p, size_t n, uint32_t act, uint32_t proto,
                          enum milter_stage st, int want, void (*check)(struct milter *))
{
	for (size_t split = 0; split <= n + 1; split++) {
		struct milter m;
		int r = MILTER_IN_WAIT;

		negotiated(&m, act, proto);
		switch (st) {
		case MILTER_ST_BODY:
			milter_send_body(&m, "x", 1);
			break;
		case MILTER_ST_RCPT:
			milter_send_rcpt(&m, "a@b");
			break;
		default:
			milter_send_eom(&m);
			break;
		}
		if (split == n + 1) {
			for (size_t i = 0; i < n && r == MILTER_IN_WAIT; i++)
				r = milter_input(&m, guarded(0, p + i, 1), 1);
		} else {
			r = milter_input(&m, guarded(0, p, split), split);
			if (r == MILTER_IN_WAIT)
				r = milter_input(&m, guarded(1, p + split, n - split), n - split);
		}
		cr_assert_eq(r, want, "split %zu: got %d (%s)", split, r, m.err);
		if (check)
			check(&m);
		milter_fini(&m);
	}
}

static void is_continue(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_CONTINUE);
}

static void is_accept(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_ACCEPT);
}

static void is_reject(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_REJECT);
	cr_assert_eq(m->reply.len, 0);
}

static void is_tempfail(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_TEMPFAIL);
}

static void is_discard(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_DISCARD);
}

static void is_skip(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_SKIP);
}

Test(milter, simple_replies)
{
	static const struct {
		char cmd;
		void (*check)(struct milter *);
	} cases[] = {
	    {'c', is_continue}, {'a', is_accept},  {'r', is_reject},
	    {'t', is_tempfail}, {'d', is_discard},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char b[8];
		size_t n = pkt(b, cases[i].cmd, NULL, 0);

		feed_all_ways(b, n, 0, 0, MILTER_ST_RCPT, MILTER_IN_DONE, cases[i].check);
	}
}

static void is_multiline(struct milter *m)
{
	static const char want[] = "550-5.7.1 first line\r\n550 5.7.1 second line";

	cr_assert_eq(m->verdict, MILTER_V_REJECT);
	cr_assert_eq(m->reply.len, sizeof(want) - 1);
	cr_assert_eq(memcmp(m->reply.p, want, m->reply.len), 0);
}

Test(milter, replycode_multiline)
{
	static const char t[] = "550-5.7.1 first line\r\n550 5.7.1 second line";
	char b[128];
	size_t n = pkt(b, 'y', t, sizeof(t));

	feed_all_ways(b, n, 0, 0, MILTER_ST_EOM, MILTER_IN_DONE, is_multiline);
}

static void is_tempfail_text(struct milter *m)
{
	cr_assert_eq(m->verdict, MILTER_V_TEMPFAIL);
	cr_assert_str_eq(buf_cstr(&m->reply), "451 4.7.1 later");
}

Test(milter, replycode_4xx_is_tempfail)
{
	char b[64];
	size_t n = pkt(b, 'y', "451 4.7.1 later", 16);

	feed_all_ways(b, n, 0, 0, MILTER_ST_RCPT, MILTER_IN_DONE, is_tempfail_text);
}

Test(milter, replycode_malformed_is_an_error)
{
	static const char *const bad[] = {
	    "250 2.0.0 fine",             /* not 4xx/5xx */
	    "55",                         /* too short */
	    "550-5.7.1 a\r\n451 4.7.1 b", /* two codes */
	    "550 5.7.1 a\r\n550 5.7.1 b", /* no '-' on the first */
	    "550 5.7.1 a\nb",             /* bare LF */
	    "550-5.7.1 a\r\n550-5.7.1 b", /* '-' on the last */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char b[128];
		size_t n = pkt(b, 'y', bad[i], strlen(bad[i]) + 1);

		feed_all_ways(b, n, 0, 0, MILTER_ST_EOM, MILTER_IN_ERROR, NULL);
	}
	/* No NUL at the end. */
	{
		char b[32];
		size_t n = pkt(b, 'y', "550 5.7.1 x", 11);

		feed_all_ways(b, n, 0, 0, MILTER_ST_EOM, MILTER_IN_ERROR, NULL);
	}
}

static void progressed_then_continue(struct milter *m)
{
	cr_assert_eq(m->progress, 2);
	cr_assert_eq(m->verdict, MILTER_V_CONTINUE);
}

Test(milter, progress_is_not_final)
{
	char b[32];
	size_t n = pkt(b, 'p', NULL, 0);

	n += pkt(b + n, 'p', NULL, 0);
	n += pkt(b + n, 'c', NULL, 0);
	feed_all_ways(b, n, 0, 0, MILTER_ST_EOM, MILTER_IN_DONE, progressed_then_continue);
}

Test(milter, skip_only_in_the_body_and_offered)
{
	char b[8];
	size_t n = pkt(b, 's', NULL, 0);

	/* libmilter sends SKIP when it was offered, without echoing the bit. */
	feed_all_ways(b, n, 0, 0, MILTER_ST_BODY, MILTER_IN_DONE, is_skip);
	feed_all_ways(b, n, 0, MILTER_P_SKIP, MILTER_ST_RCPT, MILTER_IN_ERROR, NULL);
	offer_proto = MILTER_P_OFFER & ~MILTER_P_SKIP;
	feed_all_ways(b, n, 0, 0, MILTER_ST_BODY, MILTER_IN_ERROR, NULL);
	offer_proto = MILTER_P_OFFER;
}

Test(milter, unknown_or_unasked_packets_are_errors)
{
	struct milter m;
	char b[16];
	size_t n = pkt(b, 'Z', NULL, 0);

	feed_all_ways(b, n, 0, 0, MILTER_ST_EOM, MILTER_IN_ERROR, NULL);
	/* A modification outside end of message. */
	n = pkt(b, 'h', "X\0y", 4);
	feed_all_ways(b, n, MILTER_A_ALL, 0, MILTER_ST_RCPT, MILTER_IN_ERROR, NULL);
	/* A modification not negotiated. */
	feed_all_ways(b, n, MILTER_A_CHGBODY, 0, MILTER_ST_EOM, MILTER_IN_ERROR, NULL);
	/* Something while nothing was asked. */
	negotiated(&m, 0, 0);
	n = pkt(b, 'c', NULL, 0);
	cr_assert_eq(milter_input(&m, b, n), MILTER_IN_ERROR);
	milter_fini(&m);
	/* An oversized length. */
	negotiated(&m, 0, 0);
	milter_send_eom(&m);
	put32(b, MILTER_PKT_MAX + 1);
	cr_assert_eq(milter_input(&m, b, 8), MILTER_IN_ERROR);
	milter_fini(&m);
	/* Octets after the final reply: an error at the next call. */
	negotiated(&m, 0, 0);
	milter_send_eom(&m);
	n = pkt(b, 'c', NULL, 0);
	n += pkt(b + n, 'c', NULL, 0);
	cr_assert_eq(milter_input(&m, b, n), MILTER_IN_DONE);
	cr_assert_eq(milter_input(&m, NULL, 0), MILTER_IN_ERROR);
	milter_fini(&m);
}

Test(milter, malformed_modifications_are_errors)
{
	static const struct {
		char cmd;
		const char *d;
		size_t n;
	} bad[] = {
	    {'h', "X-A\0v", 5},           /* value not terminated */
	    {'h', "X A\0v\0", 6},         /* space in the name */
	    {'h', "\0v\0", 3},            /* empty name */
	    {'h', "X-A\0v\rw\0", 8},      /* bare CR */
	    {'h', "X-A\0v\0extra\0", 12}, /* a third string */
	    {'i', "\0\0", 2},             /* no index */
	    {'+', "", 0},                 /* no address */
	    {'+', "\0", 1},               /* empty address */
	    {'-', "a\nb\0", 4},           /* control octet */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char b[64];
		size_t n = pkt(b, bad[i].cmd, bad[i].d, bad[i].n);

		feed_all_ways(b, n, MILTER_A_ALL, 0, MILTER_ST_EOM, MILTER_IN_ERROR, NULL);
	}
}

/* ---- modifications carried out ---- */

static const char msg_text[] = "Received: from x\r\n\tby y\r\n"
                               "Subject: hello\r\n"
                               "X-Old: 1\r\n"
                               "X-Old: 2\r\n"
                               "\r\n"
                               "body line\r\n";

static void load(struct milter_msg *msg)
{
	static const char rcpts[] = "a@x\0b@x";

	memset(msg, 0, sizeof(*msg));
	cr_assert_eq(milter_msg_load(msg, msg_text, sizeof(msg_text) - 1, SV("s@x"), rcpts,
	                             sizeof(rcpts), 2),
	             0);
}

Test(milter, message_written_back_byte_exact)
{
	static const char *const texts[] = {
	    msg_text,
	    "Subject: no body\r\n",
	    "Subject: empty body\r\n\r\n",
	    "not a header line\r\nSubject: x\r\n",
	    "From mbox line\r\n\r\nx\r\n",
	    "",
	    " leading fold\r\n",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct milter_msg msg = {0};
		struct buf out = BUF_INIT;

		cr_assert_eq(milter_msg_load(&msg, texts[i], strlen(texts[i]), SV(""), "", 0, 0),
		             0);
		cr_assert_eq(milter_msg_write(&msg, &out), 0);
		cr_assert_eq(out.len, strlen(texts[i]), "case %zu", i);
		cr_assert(out.len == 0 || memcmp(out.p, texts[i], out.len) == 0, "case %zu", i);
		buf_free(&out);
		milter_msg_fini(&msg);
	}
}

/* The header block's end found on any prefix of the content is where
 * milter_msg_load() puts the body (after a Received: header), and a prefix
 * that cannot tell says so. */
Test(milter, header_end_found_on_any_prefix_as_the_load_finds_it)
{
	static const char *const texts[] = {
	    msg_text,
	    "Subject: no body\r\n",
	    "Subject: empty body\r\n\r\n",
	    "Subject: a\r\n folded\r\nX: y\r\n\r\nbody\r\n\r\nmore\r\n",
	    "not a header line\r\nSubject: x\r\n",
	    "Subject: x\r\n: no name\r\nbody\r\n",
	    "From mbox line\r\n\r\nx\r\n",
	    "",
	    " leading fold\r\n\r\nb\r\n",
	    "\r\nbody only\r\n",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		const char *t = texts[i];
		size_t n = strlen(t), want, got;
		struct milter_msg msg = {0};
		struct buf all = BUF_INIT;

		buf_append_str(&all, "Received: x\r\n");
		buf_append(&all, t, n);
		cr_assert_eq(milter_msg_load(&msg, all.p, all.len, SV(""), "", 0, 0), 0);
		want = msg.hdrs.len - 13 + (msg.has_sep ? 2 : 0);
		cr_assert_eq(milter_hdr_end(t, n, true, &got), 1);
		cr_assert_eq(got, want, "case %zu: %zu, the load %zu", i, got, want);
		for (size_t k = 0; k <= n; k++) {
			size_t h = 0;

			if (milter_hdr_end(t, k, false, &h))
				cr_assert_eq(h, want, "case %zu at %zu: %zu, not %zu", i, k, h,
				             want);
		}
		buf_free(&all);
		milter_msg_fini(&msg);
	}
}

Test(milter, fields_as_sent_to_a_filter)
{
	struct milter_msg msg;
	struct buf tmp = BUF_INIT;
	struct sv name, value;

	load(&msg);
	cr_assert_eq(milter_msg_nfields(&msg), 4);
	cr_assert_eq(milter_msg_field(&msg, 0, false, &tmp, &name, &value), 0);
	cr_assert(sv_eq(name, SV("Received")));
	cr_assert(sv_eq(value, SV("from x\n\tby y")));
	cr_assert_eq(milter_msg_field(&msg, 1, true, &tmp, &name, &value), 0);
	cr_assert(sv_eq(name, SV("Subject")));
	cr_assert(sv_eq(value, SV(" hello")));
	cr_assert(
	    sv_eq(msg.body.p ? sv_make(msg.body.p, msg.body.len) : SV(""), SV("body line\r\n")));
	buf_free(&tmp);
	milter_msg_fini(&msg);
}

/* Runs packets <p>,<n> as end-of-message replies with every action, then
 * applies them to the test message; the content must become <want>. */
static void applied(const char *p, size_t n, const char *want, struct milter_msg *msg)
{
	struct milter m;
	struct buf out = BUF_INIT;
	char why[128];

	negotiated(&m, MILTER_A_ALL, 0);
	milter_send_eom(&m);
	cr_assert_eq(milter_input(&m, p, n), MILTER_IN_DONE, "%s", m.err);
	load(msg);
	cr_assert_eq(milter_apply(&m, msg, why, sizeof(why)), 0);
	cr_assert_eq(milter_msg_write(msg, &out), 0);
	cr_assert_eq(out.len, strlen(want), "got [%.*s]", (int)out.len, out.p);
	cr_assert_eq(memcmp(out.p, want, out.len), 0, "got [%.*s]", (int)out.len, out.p);
	buf_free(&out);
	milter_fini(&m);
}

Test(milter, header_modifications)
{
	struct milter_msg msg;
	char b[512], d[64];
	size_t n = 0;

	n += pkt(b + n, 'h', "X-Spam\0yes\n\tfolded\0", 19);
	put32(d, 0);
	memcpy(d + 4, "X-Top\0t\0", 8);
	n += pkt(b + n, 'i', d, 12);
	put32(d, 2);
	memcpy(d + 4, "x-old\0two\0", 10);
	n += pkt(b + n, 'm', d, 14);
	put32(d, 1);
	memcpy(d + 4, "Subject\0\0", 9);
	n += pkt(b + n, 'm', d, 13); /* delete */
	put32(d, 1);
	memcpy(d + 4, "X-New\0n\0", 8);
	n += pkt(b + n, 'm', d, 12); /* none of that name: added */
	n += pkt(b + n, 'a', NULL, 0);
	applied(b, n,
	        "X-Top: t\r\n"
	        "Received: from x\r\n\tby y\r\n"
	        "X-Old: 1\r\n"
	        "x-old: two\r\n"
	        "X-Spam: yes\r\n\tfolded\r\n"
	        "X-New: n\r\n"
	        "\r\n"
	        "body line\r\n",
	        &msg);
	milter_msg_fini(&msg);
}

Test(milter, envelope_body_and_quarantine)
{
	struct milter_msg msg;
	char b[512];
	size_t n = 0;
	size_t it = 0;

	n += pkt(b + n, 'e', "<new@x>\0SIZE=1\0", 15);
	n += pkt(b + n, '+', "<c@x>\0", 6);
	n += pkt(b + n, '2', "d@x\0NOTIFY=NEVER\0", 17);
	n += pkt(b + n, '-', "<A@x>\0", 6);
	n += pkt(b + n, 'b', "new\nbody", 8);
	n += pkt(b + n, 'b', " more\r", 6);
	n += pkt(b + n, 'q', "held for review\0", 16);
	n += pkt(b + n, 'c', NULL, 0);
	applied(b, n,
	        "Received: from x\r\n\tby y\r\nSubject: hello\r\nX-Old: 1\r\nX-Old: 2\r\n\r\n"
	        "new\r\nbody more\r\n",
	        &msg);
	cr_assert_str_eq(buf_cstr(&msg.from), "new@x");
	cr_assert_eq(msg.nrcpt, 3);
	cr_assert_str_eq(msg.rcpts.p + it, "b@x");
	it += 4;
	cr_assert_str_eq(msg.rcpts.p + it, "c@x");
	it += 4;
	cr_assert_str_eq(msg.rcpts.p + it, "d@x");
	cr_assert(msg.quarantined);
	cr_assert_str_eq(buf_cstr(&msg.reason), "held for review");
	milter_msg_fini(&msg);
}

Test(milter, every_recipient_deleted_leaves_none)
{
	struct milter_msg msg;
	char b[64];
	size_t n = 0;

	n += pkt(b + n, '-', "a@x\0", 4);
	n += pkt(b + n, '-', "b@x\0", 4);
	n += pkt(b + n, 'c', NULL, 0);
	applied(b, n, msg_text, &msg);
	cr_assert_eq(msg.nrcpt, 0);
	milter_msg_fini(&msg);
}

Test(milter, leadspc_keeps_values_as_they_are)
{
	struct milter m;
	struct milter_msg msg;
	struct buf out = BUF_INIT;
	char b[64], why[64];
	size_t n = pkt(b, 'h', "X-A\0 v\0", 7);

	n += pkt(b + n, 'c', NULL, 0);
	negotiated(&m, MILTER_A_ALL, MILTER_P_HDR_LEADSPC);
	milter_send_eom(&m);
	cr_assert_eq(milter_input(&m, b, n), MILTER_IN_DONE);
	memset(&msg, 0, sizeof(msg));
	cr_assert_eq(milter_msg_load(&msg, "S: x\r\n\r\nb\r\n", 11, SV(""), "r\0", 2, 1), 0);
	cr_assert_eq(milter_apply(&m, &msg, why, sizeof(why)), 0);
	milter_msg_write(&msg, &out);
	cr_assert_str_eq(buf_cstr(&out), "S: x\r\nX-A: v\r\n\r\nb\r\n");
	buf_free(&out);
	milter_msg_fini(&msg);
	milter_fini(&m);
}

Test(milter, nr_steps_and_no_steps)
{
	struct milter m;

	negotiated(&m, 0,
	           MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL | MILTER_P_NR_RCPT |
	               MILTER_P_NR_DATA | MILTER_P_NR_EOH | MILTER_P_NR_BODY | MILTER_P_NOHDRS);
	cr_assert_eq(milter_send_connect(&m, "h", 'U', 0, ""), 0);
	cr_assert_eq(milter_send_helo(&m, "h"), 0);
	cr_assert_eq(milter_send_mail(&m, "a", NULL, 0), 0);
	cr_assert_eq(milter_send_rcpt(&m, "a"), 0);
	cr_assert_eq(milter_send_data(&m), 0);
	size_t before = m.out.len;
	cr_assert_eq(milter_send_header(&m, SV("A"), SV("b")), 0);
	cr_assert_eq(m.out.len, before); /* left out */
	cr_assert_eq(milter_send_eoh(&m), 0);
	cr_assert_eq(milter_send_body(&m, "x", 1), 0);
	cr_assert_eq(milter_send_eom(&m), 1); /* always answered */
	milter_fini(&m);
}
