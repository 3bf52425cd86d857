/* smtp_client_test: the SMTP/LMTP client session, driven by next-hop
 * transcripts. Every transcript runs in one piece, byte by byte, and split
 * in two at every offset; all runs must send the same commands and give the
 * same results. The runner acts as io/ does: on READY it sends the next
 * message (or QUIT), on BODY it streams the content in views, on DONE it
 * records each recipient's result, on STARTTLS it drops the rest of the
 * clear stream, notes "[TLS]" in what was sent and goes on with the
 * stream the next hop sends over TLS (as plaintext: the TLS is io/'s). */
#include "core/smtp_client.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "tests/unit/testutil.h"

#define HOST "gw.example.org"

/* ---- What the next hop says ---- */
#define GREET "220 mx.example.net ESMTP Postfix\r\n"
#define EHLO_R                                                                                     \
	"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ETRN\r\n"                \
	"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"                   \
	"250-SMTPUTF8\r\n250 CHUNKING\r\n"
/* No PIPELINING, no 8BITMIME, no SMTPUTF8; SIZE without a limit. */
#define EHLO_NP  "250-mx.example.net\r\n250-SIZE\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_MIN "250 mx.example.net\r\n"
#define MAIL_OK  "250 2.1.0 Ok\r\n"
#define RCPT_OK  "250 2.1.5 Ok\r\n"
#define GO       "354 End data with <CR><LF>.<CR><LF>\r\n"
#define QUEUED   "250 2.0.0 Ok: queued as 4Xk1\r\n"
#define BYE      "221 2.0.0 Bye\r\n"
#define RSET_OK  "250 2.0.0 Ok\r\n"
#define UNKNOWN  "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown\r\n"
#define GREYLIST "451 4.7.1 <d@example.com>: Recipient address rejected: Greylisted\r\n"
#define NORCPT   "554 5.5.1 Error: no valid recipients\r\n"
#define NEEDRCPT "503 5.5.1 Error: need RCPT command\r\n"
#define NEEDMAIL "503 5.5.1 Error: need MAIL command\r\n"
#define SHUT     "421 4.3.2 mx.example.net Service shutting down\r\n"

/* ---- What the client sends ---- */
#define C_EHLO       "EHLO " HOST "\r\n"
#define C_LHLO       "LHLO " HOST "\r\n"
#define C_HELO       "HELO " HOST "\r\n"
#define C_MAIL(prms) "MAIL FROM:<a@example.org>" prms "\r\n"
#define C_RCPT(x)    "RCPT TO:<" x "@example.com>\r\n"
#define C_DATA       "DATA\r\n"
#define C_RSET       "RSET\r\n"
#define C_QUIT       "QUIT\r\n"
#define BODY         "Subject: hi\r\n\r\nhello\r\n"
#define C_BODY       BODY ".\r\n"
#define SZ           " SIZE=22"

/* One result line: rcpt|status|stage|code|text */
#define R(who, st, stage, code, text) who "@example.com|" st "|" stage "|" #code "|" text "\n"
#define DONE                          "--\n"

struct tmsg {
	const char *from; /* NULL: "a@example.org" */
	const char *rcpts[4];
	uint64_t size; /* 0: the body's length */
	bool b8, utf8;
	const char *body; /* NULL: BODY */
	bool probe;       /* a recipient check: no DATA, RSET after the RCPTs */
};

struct tcase {
	const char *name;
	const char *server; /* all the next hop says */
	const char *want;   /* all the client sends */
	const char *res;    /* results: a line per recipient, DONE after each message */
	struct tmsg msgs[2];
	unsigned nmsgs;
	bool lmtp;
	bool closed;      /* SMTPC_ACT_CLOSE at the end */
	const char *fail; /* smtp_client_fail() after the transcript */
	const char *err;  /* smtp_client_error() at the end; NULL: "" */
	size_t out_max;   /* 0: the default */
	bool starttls, require_tls;
	const char *inject; /* sent in clear right after <server>: must never be read */
	const char *tls;    /* said over TLS after the handshake; NULL: the handshake fails */
};

struct result {
	struct buf out;
	struct buf res;
	bool closed;
	struct smtp_client_msg m[2];
	unsigned next, cur;
	size_t step;
	const struct tcase *tc;
	size_t clear_used; /* clear stream octets consumed */
	bool tls_on;       /* SMTPC_ACT_STARTTLS came: the clear stream is over */
};

#define TLS_MARK "[TLS]" /* in the sent stream: where the handshake went */

/* What io/ does with <out>: sends it (here: keeps it) and empties it. */
static void drain(struct smtp_client *c, struct result *r)
{
	buf_append(&r->out, c->out.p, c->out.len);
	buf_reset(&c->out, 1u << 20);
}

static const char *tmsg_body(const struct tmsg *t)
{
	return t->body ? t->body : BODY;
}

static void record(struct smtp_client *c, struct result *r)
{
	const struct smtp_client_result *x;

	cr_assert_null(smtp_client_result(c, r->m[r->cur].nrcpt));
	for (unsigned i = 0; i < r->m[r->cur].nrcpt; i++) {
		x = smtp_client_result(c, i);
		cr_assert_not_null(x);
		cr_assert_neq(x->status, SMTPC_PENDING, "%s: recipient %u undecided at DONE",
		              r->tc->name, i);
		buf_printf(&r->res, "%s|%s|%s|%u|%s\n", r->m[r->cur].rcpts[i],
		           smtp_client_status_name(x->status), smtp_client_stage_name(x->stage),
		           x->code, smtp_client_result_text(c, x));
		if (x->code)
			cr_assert_eq(strtoul(smtp_client_result_text(c, x), NULL, 10), x->code);
	}
	buf_append_str(&r->res, DONE);
}

/* Streams the content in views of r->step octets, draining <out> whenever
 * smtp_client_body() stops short, as io/ would after a send. */
static void stream_body(struct smtp_client *c, struct result *r, const char *body)
{
	size_t len = strlen(body), off = 0, k, n;

	while (off < len) {
		k = len - off < r->step ? len - off : r->step;
		n = smtp_client_body(c, guarded(1, body + off, k), k);
		cr_assert_leq(c->out.len, c->out_max, "%s: out over its bound", r->tc->name);
		cr_assert_leq(n, k);
		if (n < k) {
			cr_assert(c->out.len + 1 >= c->out_max, "%s: short without a full out",
			          r->tc->name);
			drain(c, r);
		}
		off += n;
	}
	smtp_client_body_end(c);
}

/* Carries out the client's actions until it waits for the next hop. */
static void act(struct smtp_client *c, struct result *r)
{
	const struct tcase *tc = r->tc;

	for (;;) {
		drain(c, r);
		if (c->act & SMTPC_ACT_DONE) {
			c->act &= ~SMTPC_ACT_DONE;
			record(c, r);
			cr_assert_null(c->msg);
		}
		if (c->act & SMTPC_ACT_BODY) {
			c->act &= ~SMTPC_ACT_BODY;
			cr_assert_eq(c->state, SMTPC_S_BODY);
			stream_body(c, r, tmsg_body(&tc->msgs[r->cur]));
			continue;
		}
		if ((c->act & SMTPC_ACT_STARTTLS) && !r->tls_on) {
			cr_assert_eq(c->state, SMTPC_S_TLS);
			cr_assert_not(c->act &
			              (SMTPC_ACT_READY | SMTPC_ACT_BODY | SMTPC_ACT_CLOSE));
			buf_append_str(&r->out, TLS_MARK);
			r->tls_on = true;
			if (!tc->tls)
				return; /* the handshake fails: see tc->fail */
			cr_assert_eq(smtp_client_tls_started(c), 0);
			cr_assert_not(c->act & SMTPC_ACT_STARTTLS);
			cr_assert(c->tls);
			cr_assert_eq(c->caps, 0, "capabilities learnt in clear forgotten");
			continue;
		}
		if (c->act & SMTPC_ACT_READY) {
			c->act &= ~SMTPC_ACT_READY;
			cr_assert_eq(c->state, SMTPC_S_READY);
			cr_assert_eq(c->tls, tc->tls != NULL && r->tls_on);
			if (tc->require_tls)
				cr_assert(c->tls, "%s: READY in clear with require_tls", tc->name);
			if (r->next < tc->nmsgs) {
				r->cur = r->next++;
				cr_assert_eq(smtp_client_send(c, &r->m[r->cur]), 0);
			} else {
				smtp_client_quit(c);
			}
			continue;
		}
		return;
	}
}

/* Feeds a piece of the clear stream (<clear>) or of the TLS one. */
static void feed_piece(struct smtp_client *c, const char *p, size_t len, bool clear,
                       struct result *r)
{
	size_t off = 0, k, n;
	unsigned had;

	while (off < len && !(c->act & SMTPC_ACT_CLOSE) && !(clear && r->tls_on)) {
		k = len - off < r->step ? len - off : r->step;
		n = smtp_client_feed(c, guarded(0, p + off, k), k);
		cr_assert_leq(n, k);
		had = c->act &
		      (SMTPC_ACT_READY | SMTPC_ACT_BODY | SMTPC_ACT_CLOSE | SMTPC_ACT_STARTTLS);
		off += n;
		if (clear)
			r->clear_used += n;
		if (c->act & SMTPC_ACT_STARTTLS) {
			/* Not an octet past the 220, now or later. */
			cr_assert(clear, "%s: STARTTLS twice", r->tc->name);
			cr_assert_eq(r->clear_used, strlen(r->tc->server), "%s: read past the 220",
			             r->tc->name);
			if (off < len)
				cr_assert_eq(
				    smtp_client_feed(c, guarded(0, p + off, len - off), len - off),
				    0, "%s: fed in state TLS", r->tc->name);
		}
		act(c, r);
		if (n < k)
			cr_assert(had, "%s: consumed %zu of %zu without an action", r->tc->name, n,
			          k);
	}
}

static void run(const struct tcase *tc, size_t split, size_t step, struct result *r)
{
	struct smtp_client_conf cf = {.hostname = HOST,
	                              .lmtp = tc->lmtp,
	                              .out_max = tc->out_max,
	                              .starttls = tc->starttls,
	                              .require_tls = tc->require_tls};
	struct buf clear = BUF_INIT;
	size_t len, tlen = tc->tls ? strlen(tc->tls) : 0;
	struct smtp_client c;

	r->tc = tc;
	r->step = step;
	for (unsigned i = 0; i < tc->nmsgs; i++) {
		const struct tmsg *t = &tc->msgs[i];
		unsigned n = 0;

		while (n < 4 && t->rcpts[n])
			n++;
		r->m[i] = (struct smtp_client_msg){
		    .from = t->from ? t->from : "a@example.org",
		    .rcpts = t->rcpts,
		    .nrcpt = n,
		    .size = t->size ? t->size : strlen(tmsg_body(t)),
		    .body_8bit = t->b8,
		    .smtputf8 = t->utf8,
		    .probe = t->probe,
		};
	}
	smtp_client_init(&c, &cf, "192.0.2.25");
	buf_append_str(&clear, tc->server);
	if (tc->inject)
		buf_append_str(&clear, tc->inject);
	len = clear.len;
	/* The same split in both streams: k covers every offset of each. */
	feed_piece(&c, clear.p, split < len ? split : len, true, r);
	feed_piece(&c, clear.p + (split < len ? split : len), len - (split < len ? split : len),
	           true, r);
	buf_free(&clear);
	cr_assert_eq(r->tls_on, strstr(tc->want, TLS_MARK) != NULL, "%s: STARTTLS action",
	             tc->name);
	if (r->tls_on && tc->tls) {
		feed_piece(&c, tc->tls, split < tlen ? split : tlen, false, r);
		feed_piece(&c, tc->tls + (split < tlen ? split : tlen),
		           tlen - (split < tlen ? split : tlen), false, r);
	}
	if (tc->fail && !(c.act & SMTPC_ACT_CLOSE)) {
		smtp_client_fail(&c, tc->fail);
		act(&c, r);
	}
	drain(&c, r);
	r->closed = c.act & SMTPC_ACT_CLOSE;
	if (r->closed)
		cr_assert_eq(c.state, SMTPC_S_CLOSED);
	cr_assert_str_eq(smtp_client_error(&c), tc->err ? tc->err : "", "%s: error", tc->name);
	if (!r->closed && c.state != SMTPC_S_BODY)
		cr_assert_null(c.line.p, "%s: line memory kept between replies", tc->name);
	smtp_client_fini(&c);
}

static void result_free(struct result *r)
{
	buf_free(&r->out);
	buf_free(&r->res);
}

static void check_one(const struct tcase *tc, struct result *r, const char *how, size_t k)
{
	cr_assert_str_eq(buf_cstr(&r->out), tc->want, "%s (%s %zu): sent\n%s\nwant\n%s", tc->name,
	                 how, k, buf_cstr(&r->out), tc->want);
	cr_assert_str_eq(buf_cstr(&r->res), tc->res, "%s (%s %zu): results\n%s\nwant\n%s", tc->name,
	                 how, k, buf_cstr(&r->res), tc->res);
	cr_assert_eq(r->closed, tc->closed, "%s (%s %zu): closed %d", tc->name, how, k, r->closed);
}

static void check_case(const struct tcase *tc)
{
	size_t len = strlen(tc->server) + (tc->inject ? strlen(tc->inject) : 0);
	struct result r = {0};
	int saved;

	if (tc->tls && strlen(tc->tls) > len)
		len = strlen(tc->tls);

	log_threshold = LOG_DEBUG;
	saved = stderr_quiet();
	run(tc, 0, SIZE_MAX, &r);
	stderr_restore(saved);
	log_threshold = LOG_ERR;
	check_one(tc, &r, "one piece", 0);
	result_free(&r);

	r = (struct result){0};
	run(tc, 0, 1, &r);
	check_one(tc, &r, "byte by byte", 1);
	result_free(&r);

	for (size_t k = 1; k < len; k++) {
		r = (struct result){0};
		run(tc, k, SIZE_MAX, &r);
		check_one(tc, &r, "split at", k);
		result_free(&r);
	}
}

static void check_cases(const struct tcase *cs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		check_case(&cs[i]);
}

#define CHECK_CASES(cs) check_cases((cs), sizeof(cs) / sizeof((cs)[0]))

static void suite_init(void)
{
	log_threshold = LOG_ERR; /* check_case() turns every level on, quietly */
}

TestSuite(smtp_client, .init = suite_init);

/* ---- Greeting and EHLO ---- */

#define M_B                                                                                        \
	{                                                                                          \
		.rcpts = { "b@example.com" }                                                       \
	}
#define RES_OK R("b", "ok", "end of data", 250, "250 2.0.0 Ok: queued as 4Xk1") DONE

static const struct tcase greet_cases[] = {
    {"ehlo_then_quit", GREET EHLO_R BYE, C_EHLO C_QUIT, "", .closed = true},
    {"multi_line_greeting",
     "220-mx.example.net ESMTP\r\n220-no UCE\r\n220 welcome\r\n" EHLO_MIN BYE, C_EHLO C_QUIT, "",
     .closed = true},
    {"bare_lf_replies", "220 mx\n250 mx\n221 bye\n", C_EHLO C_QUIT, "", .closed = true},
    {"greeting_554", "554 5.7.1 mx.example.net go away\r\n" BYE, C_QUIT, "", .closed = true,
     .err = "554 5.7.1 mx.example.net go away", .nmsgs = 1, .msgs = {M_B}},
    {"greeting_421", "421 4.3.2 mx.example.net busy\r\n", "", "", .closed = true,
     .err = "421 4.3.2 mx.example.net busy"},
    {"helo_fallback",
     GREET "502 5.5.2 Error: command not recognized\r\n250 mx.example.net\r\n" MAIL_OK RCPT_OK GO
         QUEUED BYE,
     C_EHLO C_HELO C_MAIL("") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .nmsgs = 1, .msgs = {M_B},
     .closed = true},
    {"ehlo_4xx_gives_up", GREET "451 4.3.0 try later\r\n" BYE, C_EHLO C_QUIT, "", .closed = true,
     .err = "451 4.3.0 try later"},
    {"helo_refused_too", GREET "500 no\r\n501 no either\r\n" BYE, C_EHLO C_HELO C_QUIT, "",
     .closed = true, .err = "501 no either"},
    {"lhlo_5xx_no_helo", GREET "500 5.5.1 no\r\n" BYE, C_LHLO C_QUIT, "", .lmtp = true,
     .closed = true, .err = "500 5.5.1 no"},
    {"server_closes_after_quit_without_221", GREET EHLO_MIN, C_EHLO C_QUIT, "",
     .fail = "4.4.2 lost connection", .closed = true, .err = "4.4.2 lost connection"},
};

Test(smtp_client, greeting_and_ehlo)
{
	CHECK_CASES(greet_cases);
}

Test(smtp_client, ehlo_capabilities_are_parsed)
{
	static const struct {
		const char *ehlo;
		unsigned caps;
		uint64_t max_size;
	} cs[] = {
	    {EHLO_R,
	     SMTPC_CAP_PIPELINING | SMTPC_CAP_SIZE | SMTPC_CAP_8BITMIME | SMTPC_CAP_SMTPUTF8 |
	         SMTPC_CAP_CHUNKING | SMTPC_CAP_STARTTLS | SMTPC_CAP_ENHANCED,
	     10240000},
	    {EHLO_NP, SMTPC_CAP_SIZE | SMTPC_CAP_ENHANCED, 0},
	    {EHLO_MIN, 0, 0},
	    {"250-mx\r\n250-pipelining\r\n250-size  52428800 \r\n250 8bitmime\r\n",
	     SMTPC_CAP_PIPELINING | SMTPC_CAP_SIZE | SMTPC_CAP_8BITMIME, 52428800},
	    {"250-mx\r\n250-SIZE 99999999999999999999999\r\n250-PIPELININGX\r\n250 X-STARTTLS\r\n",
	     SMTPC_CAP_SIZE, 0},
	    /* The first line is the server's name, never a keyword. */
	    {"250-PIPELINING\r\n250 SIZE 10\r\n", SMTPC_CAP_SIZE, 10},
	};
	struct smtp_client_conf cf = {.hostname = HOST};

	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
		struct smtp_client c;
		char in[512];
		size_t n = (size_t)snprintf(in, sizeof(in), "%s%s", GREET, cs[i].ehlo);

		smtp_client_init(&c, &cf, NULL);
		cr_assert_eq(smtp_client_feed(&c, in, n), n);
		cr_assert_eq(c.state, SMTPC_S_READY);
		cr_assert(c.act & SMTPC_ACT_READY);
		cr_assert_eq(c.caps, cs[i].caps, "case %zu: caps %#x", i, c.caps);
		cr_assert_eq(c.max_size, cs[i].max_size, "case %zu", i);
		smtp_client_fini(&c);
	}
}

/* ---- Transactions ---- */

#define M_BCD                                                                                      \
	{                                                                                          \
		.rcpts = { "b@example.com", "c@example.com", "d@example.com" }                     \
	}
#define R_MIXED                                                                                    \
	R("b", "ok", "end of data", 250, "250 2.0.0 Ok: queued as 4Xk1")                           \
	R("c", "perm", "RCPT TO", 550,                                                             \
	  "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown")                   \
	R("d", "temp", "RCPT TO", 451,                                                             \
	  "451 4.7.1 <d@example.com>: Recipient address rejected: Greylisted")                     \
	DONE
#define C_BCD C_RCPT("b") C_RCPT("c") C_RCPT("d")

static const struct tcase tx_cases[] = {
    {"pipelined_one_recipient", GREET EHLO_R MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .nmsgs = 1, .msgs = {M_B},
     .closed = true},
    {"without_pipelining", GREET EHLO_NP MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .nmsgs = 1, .msgs = {M_B},
     .closed = true},
    {"pipelined_mixed_recipients", GREET EHLO_R MAIL_OK RCPT_OK UNKNOWN GREYLIST GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_BCD C_DATA C_BODY C_QUIT, R_MIXED, .nmsgs = 1, .msgs = {M_BCD},
     .closed = true},
    {"unpipelined_mixed_recipients", GREET EHLO_NP MAIL_OK RCPT_OK UNKNOWN GREYLIST GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_BCD C_DATA C_BODY C_QUIT, R_MIXED, .nmsgs = 1, .msgs = {M_BCD},
     .closed = true},
    {"pipelined_no_recipient_accepted", GREET EHLO_R MAIL_OK UNKNOWN GREYLIST NORCPT RSET_OK BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_RCPT("d") C_DATA C_RSET C_QUIT,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown")
         R("d", "temp", "RCPT TO", 451,
           "451 4.7.1 <d@example.com>: Recipient address rejected: Greylisted") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"c@example.com", "d@example.com"}}}, .closed = true},
    {"unpipelined_no_recipient_accepted_no_data", GREET EHLO_NP MAIL_OK UNKNOWN RSET_OK BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_RSET C_QUIT,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"c@example.com"}}}, .closed = true},
    {"pipelined_mail_refused",
     GREET EHLO_R
     "553 5.7.1 <a@example.org>: Sender rejected\r\n" NEEDMAIL NEEDMAIL NEEDMAIL RSET_OK BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_RCPT("c") C_DATA C_RSET C_QUIT,
     R("b", "perm", "MAIL FROM", 553, "553 5.7.1 <a@example.org>: Sender rejected")
         R("c", "perm", "MAIL FROM", 553, "553 5.7.1 <a@example.org>: Sender rejected") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}}, .closed = true},
    {"unpipelined_mail_deferred",
     GREET EHLO_NP "452 4.3.1 Insufficient system storage\r\n" RSET_OK BYE,
     C_EHLO C_MAIL(SZ) C_RSET C_QUIT,
     R("b", "temp", "MAIL FROM", 452, "452 4.3.1 Insufficient system storage")
         R("c", "temp", "MAIL FROM", 452, "452 4.3.1 Insufficient system storage") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}}, .closed = true},
    {"data_refused", GREET EHLO_NP MAIL_OK RCPT_OK UNKNOWN "554 5.7.0 no thanks\r\n" RSET_OK BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_RCPT("c") C_DATA C_RSET C_QUIT,
     R("b", "perm", "DATA", 554, "554 5.7.0 no thanks")
         R("c", "perm", "RCPT TO", 550,
           "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}}, .closed = true},
    {"end_of_data_deferred_no_rset",
     GREET EHLO_R MAIL_OK RCPT_OK RCPT_OK GO "452 4.3.1 Insufficient system storage\r\n" BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_RCPT("c") C_DATA C_BODY C_QUIT,
     R("b", "temp", "end of data", 452, "452 4.3.1 Insufficient system storage")
         R("c", "temp", "end of data", 452, "452 4.3.1 Insufficient system storage") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}}, .closed = true},
    {"rset_refused_quits", GREET EHLO_R MAIL_OK UNKNOWN NORCPT "500 what\r\n" BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_DATA C_RSET C_QUIT,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"c@example.com"}}}, .closed = true, .err = "500 what"},
    {"multi_line_reply_joined",
     GREET EHLO_R MAIL_OK "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                          "550-5.1.1 Please try double-checking the address.\r\n"
                          "550 5.1.1 Learn more\r\n" NORCPT RSET_OK BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_DATA C_RSET C_QUIT,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 The email account that you tried to reach does not exist. Please try "
       "double-checking the address. Learn more") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"c@example.com"}}}, .closed = true},
    {"control_octets_in_reply_text",
     GREET EHLO_R MAIL_OK "550 5.1.1 bad\tone\x01\r\n" NORCPT RSET_OK,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_DATA C_RSET C_QUIT,
     R("c", "perm", "RCPT TO", 550, "550 5.1.1 bad?one?") DONE, .nmsgs = 1,
     .msgs = {{.rcpts = {"c@example.com"}}}},
    {"two_messages_on_one_connection",
     GREET EHLO_R MAIL_OK RCPT_OK GO QUEUED MAIL_OK UNKNOWN RCPT_OK GO
     "250 2.0.0 Ok: queued as 4Xk2\r\n" BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY "MAIL FROM:<> SIZE=3\r\n" C_RCPT("c") C_RCPT("d")
         C_DATA "x\r\n.\r\n" C_QUIT,
     RES_OK R("c", "perm", "RCPT TO", 550,
              "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown")
         R("d", "ok", "end of data", 250, "250 2.0.0 Ok: queued as 4Xk2") DONE,
     .nmsgs = 2,
     .msgs = {M_B, {.from = "", .rcpts = {"c@example.com", "d@example.com"}, .body = "x\r\n"}},
     .closed = true},
    {"reuse_after_aborted_message",
     GREET EHLO_NP MAIL_OK UNKNOWN RSET_OK MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_RSET C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE RES_OK,
     .nmsgs = 2, .msgs = {{.rcpts = {"c@example.com"}}, M_B}, .closed = true},
};

Test(smtp_client, transactions)
{
	CHECK_CASES(tx_cases);
}

/* ---- MAIL parameters ---- */

#define M_8U                                                                                       \
	{                                                                                          \
		.rcpts = {"b@example.com"}, .size = 1234, .b8 = true, .utf8 = true                 \
	}
#define NOUTF8 "5.6.7 SMTPUTF8 is required, but was not offered by the next hop"

static const struct tcase param_cases[] = {
    {"size_8bitmime_smtputf8", GREET EHLO_R MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(" SIZE=1234 BODY=8BITMIME SMTPUTF8") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK,
     .nmsgs = 1, .msgs = {M_8U}, .closed = true},
    {"8bit_without_8bitmime_sent_plain", GREET EHLO_NP MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(" SIZE=5") C_RCPT("b") C_DATA "caf\xc3\xa9\r\n.\r\n" C_QUIT, RES_OK, .nmsgs = 1,
     .msgs = {{.rcpts = {"b@example.com"}, .size = 5, .b8 = true, .body = "caf\xc3\xa9"}},
     .closed = true},
    {"no_parameters_after_helo", GREET "550 no\r\n250 mx\r\n" MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_HELO C_MAIL("") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .nmsgs = 1,
     .msgs = {{.rcpts = {"b@example.com"}, .b8 = true}}, .closed = true},
    {"smtputf8_not_offered_fails_permanently", GREET EHLO_NP MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT,
     R("b", "perm", "connection", 0, NOUTF8) R("c", "perm", "connection", 0, NOUTF8) DONE RES_OK,
     .nmsgs = 2, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}, .utf8 = true}, M_B},
     .closed = true},
    {"non_ascii_address_needs_smtputf8", GREET EHLO_NP BYE, C_EHLO C_QUIT,
     "j\xc3\xb6rg@example.com|perm|connection|0|" NOUTF8 "\n" DONE, .nmsgs = 1,
     .msgs = {{.rcpts = {"j\xc3\xb6rg@example.com"}}}, .closed = true},
    {"non_ascii_address_gets_smtputf8", GREET EHLO_R MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(SZ " SMTPUTF8") "RCPT TO:<j\xc3\xb6rg@example.com>\r\n" C_DATA C_BODY C_QUIT,
     "j\xc3\xb6rg@example.com|ok|end of data|250|250 2.0.0 Ok: queued as 4Xk1\n" DONE, .nmsgs = 1,
     .msgs = {{.rcpts = {"j\xc3\xb6rg@example.com"}}}, .closed = true},
    {"over_the_size_limit", GREET "250-mx\r\n250 SIZE 1000\r\n" BYE, C_EHLO C_QUIT,
     R("b", "perm", "connection", 0, "5.3.4 message size 1001 exceeds the next hop's limit of 1000")
         DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com"}, .size = 1001}}, .closed = true},
};

Test(smtp_client, mail_parameters)
{
	CHECK_CASES(param_cases);
}

/* ---- Recipient checks (io/verify's callouts): never DATA ---- */

#define C_MAIL0 "MAIL FROM:<>\r\n"
#define PROBE(...)                                                                                 \
	{                                                                                          \
		.from = "", .rcpts = {__VA_ARGS__}, .size = 0, .probe = true                       \
	}

static const struct tcase probe_cases[] = {
    {"pipelined_probe_ends_with_rset", GREET EHLO_R MAIL_OK RCPT_OK UNKNOWN RSET_OK BYE,
     C_EHLO C_MAIL0 C_RCPT("b") C_RCPT("c") C_RSET C_QUIT,
     R("b", "ok", "RCPT TO", 250, "250 2.1.5 Ok")
         R("c", "perm", "RCPT TO", 550,
           "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .nmsgs = 1, .msgs = {PROBE("b@example.com", "c@example.com")}, .closed = true},
    {"probe_without_pipelining_one_by_one", GREET EHLO_NP MAIL_OK RCPT_OK GREYLIST RSET_OK BYE,
     C_EHLO C_MAIL0 C_RCPT("b") C_RCPT("d") C_RSET C_QUIT,
     R("b", "ok", "RCPT TO", 250, "250 2.1.5 Ok")
         R("d", "temp", "RCPT TO", 451,
           "451 4.7.1 <d@example.com>: Recipient address rejected: Greylisted") DONE,
     .nmsgs = 1, .msgs = {PROBE("b@example.com", "d@example.com")}, .closed = true},
    {"two_probes_on_one_connection",
     GREET EHLO_R MAIL_OK RCPT_OK RSET_OK MAIL_OK UNKNOWN RSET_OK BYE,
     C_EHLO C_MAIL0 C_RCPT("b") C_RSET C_MAIL0 C_RCPT("c") C_RSET C_QUIT,
     R("b", "ok", "RCPT TO", 250, "250 2.1.5 Ok")
         DONE R("c", "perm", "RCPT TO", 550,
                "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .nmsgs = 2, .msgs = {PROBE("b@example.com"), PROBE("c@example.com")}, .closed = true},
    {"probe_mail_refused_pipelined", GREET EHLO_R "451 4.3.0 try later\r\n" NEEDMAIL RSET_OK BYE,
     C_EHLO C_MAIL0 C_RCPT("b") C_RSET C_QUIT,
     R("b", "temp", "MAIL FROM", 451, "451 4.3.0 try later") DONE, .nmsgs = 1,
     .msgs = {PROBE("b@example.com")}, .closed = true},
};

Test(smtp_client, probes_never_send_data)
{
	CHECK_CASES(probe_cases);
}

Test(smtp_client, transaction_notes)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	const char *rcpts[] = {"b@example.com"};
	struct smtp_client_msg m = {
	    .from = "a@example.org", .rcpts = rcpts, .nrcpt = 1, .body_8bit = true};
	struct smtp_client c;

	smtp_client_init(&c, &cf, NULL);
	smtp_client_feed(&c, GREET EHLO_NP, strlen(GREET EHLO_NP));
	cr_assert_eq(smtp_client_send(&c, &m), 0);
	cr_assert_eq(c.tx_flags, SMTPC_TX_8BIT_PLAIN);
	smtp_client_fini(&c);

	smtp_client_init(&c, &cf, NULL);
	smtp_client_feed(&c, GREET EHLO_R, strlen(GREET EHLO_R));
	m.smtputf8 = true;
	cr_assert_eq(smtp_client_send(&c, &m), 0);
	cr_assert_eq(c.tx_flags, SMTPC_TX_PIPELINED | SMTPC_TX_SMTPUTF8);
	smtp_client_fini(&c);
}

/* ---- LMTP (RFC 2033) ---- */

#define LHLO_R                                                                                     \
	"250-mail.example.net\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"

static const struct tcase lmtp_cases[] = {
    {"one_accepted_one_rejected",
     GREET LHLO_R MAIL_OK RCPT_OK UNKNOWN GO "250 2.0.0 <b@example.com> Saved\r\n" BYE,
     C_LHLO C_MAIL("") C_RCPT("b") C_RCPT("c") C_DATA C_BODY C_QUIT,
     R("b", "ok", "end of data", 250, "250 2.0.0 <b@example.com> Saved")
         R("c", "perm", "RCPT TO", 550,
           "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .lmtp = true, .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}},
     .closed = true},
    {"a_reply_per_recipient_after_data",
     GREET LHLO_R MAIL_OK RCPT_OK UNKNOWN RCPT_OK GO
     "250 2.0.0 <b@example.com> Saved\r\n"
     "552-5.2.2 <d@example.com> Quota exceeded\r\n552 5.2.2 (mailbox full)\r\n" BYE,
     C_LHLO C_MAIL("") C_BCD C_DATA C_BODY C_QUIT,
     R("b", "ok", "end of data", 250, "250 2.0.0 <b@example.com> Saved")
         R("c", "perm", "RCPT TO", 550,
           "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown")
             R("d", "perm", "end of data", 552,
               "552 5.2.2 <d@example.com> Quota exceeded (mailbox full)") DONE,
     .lmtp = true, .nmsgs = 1, .msgs = {M_BCD}, .closed = true},
    {"421_between_recipient_replies",
     GREET LHLO_R MAIL_OK RCPT_OK RCPT_OK GO "250 2.0.0 <b@example.com> Saved\r\n" SHUT,
     C_LHLO C_MAIL("") C_RCPT("b") C_RCPT("c") C_DATA C_BODY,
     R("b", "ok", "end of data", 250, "250 2.0.0 <b@example.com> Saved")
         R("c", "temp", "end of data", 421, "421 4.3.2 mx.example.net Service shutting down") DONE,
     .lmtp = true, .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}},
     .closed = true, .err = "421 4.3.2 mx.example.net Service shutting down"},
};

Test(smtp_client, lmtp)
{
	CHECK_CASES(lmtp_cases);
}

/* ---- STARTTLS ---- */

#define TLS_GO "220 2.0.0 Ready to start TLS\r\n"
#define TLS_NO "454 4.7.0 TLS not available due to local problem\r\n"
#define INJECT "250-mx.example.net\r\n250 AUTH PLAIN\r\n" /* after the 220, in clear */
/* Over TLS: no STARTTLS any more, and no SIZE (so MAIL shows which EHLO
 * reply the client went by). */
#define EHLO_T     "250-mx.example.net\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
#define C_STARTTLS "STARTTLS\r\n"
#define TLS_REQ    "4.7.0 TLS required but not offered by the next hop"
#define TLS_REFUSED                                                                                \
	"4.7.0 TLS required but STARTTLS refused by the next hop: 454 4.7.0 TLS not available "    \
	"due "                                                                                     \
	"to local problem"

static const struct tcase tls_cases[] = {
    {"starttls_then_ehlo_again", GREET EHLO_R TLS_GO, C_EHLO C_STARTTLS TLS_MARK C_EHLO C_QUIT, "",
     .starttls = true, .tls = EHLO_T BYE, .closed = true},
    {"starttls_then_message", GREET EHLO_R TLS_GO,
     C_EHLO C_STARTTLS TLS_MARK C_EHLO C_MAIL("") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK,
     .starttls = true, .tls = EHLO_T MAIL_OK RCPT_OK GO QUEUED BYE, .nmsgs = 1, .msgs = {M_B},
     .closed = true},
    /* Replies slipped in after the 220 are never read (CVE-2011-0411). */
    {"bytes_after_220_dropped", GREET EHLO_R TLS_GO,
     C_EHLO C_STARTTLS TLS_MARK C_EHLO C_MAIL("") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK,
     .starttls = true, .inject = INJECT, .tls = EHLO_T MAIL_OK RCPT_OK GO QUEUED BYE, .nmsgs = 1,
     .msgs = {M_B}, .closed = true},
    {"multi_line_220", GREET EHLO_R "220-2.0.0 Ready\r\n220 2.0.0 go ahead\r\n",
     C_EHLO C_STARTTLS TLS_MARK C_EHLO C_QUIT, "", .starttls = true, .inject = "junk\r\n",
     .tls = EHLO_T BYE, .closed = true},
    {"require_tls_offered", GREET EHLO_R TLS_GO,
     C_EHLO C_STARTTLS TLS_MARK C_EHLO C_MAIL("") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK,
     .require_tls = true, .tls = EHLO_T MAIL_OK RCPT_OK GO QUEUED BYE, .nmsgs = 1, .msgs = {M_B},
     .closed = true},
    /* A next hop offering STARTTLS again over TLS is not asked twice. */
    {"no_second_starttls", GREET EHLO_R TLS_GO,
     C_EHLO C_STARTTLS TLS_MARK C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK,
     .require_tls = true, .tls = EHLO_R MAIL_OK RCPT_OK GO QUEUED BYE, .nmsgs = 1, .msgs = {M_B},
     .closed = true},
    {"ehlo_refused_over_tls_helo", GREET EHLO_R TLS_GO,
     C_EHLO C_STARTTLS TLS_MARK C_EHLO C_HELO C_MAIL("") C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK,
     .require_tls = true,
     .tls = "500 5.5.1 no\r\n250 mx.example.net\r\n" MAIL_OK RCPT_OK GO QUEUED BYE, .nmsgs = 1,
     .msgs = {M_B}, .closed = true},
    {"lmtp_starttls_after_lhlo",
     GREET "250-mail.example.net\r\n250-STARTTLS\r\n250 PIPELINING\r\n" TLS_GO,
     C_LHLO C_STARTTLS TLS_MARK C_LHLO C_MAIL("") C_RCPT("b") C_RCPT("c") C_DATA C_BODY C_QUIT,
     R("b", "ok", "end of data", 250, "250 2.0.0 <b@example.com> Saved")
         R("c", "temp", "end of data", 452, "452 4.2.2 <c@example.com> Over quota") DONE,
     .lmtp = true, .starttls = true, .inject = "250 2.0.0 fake\r\n",
     .tls = LHLO_R MAIL_OK RCPT_OK RCPT_OK GO "250 2.0.0 <b@example.com> Saved\r\n"
                                              "452 4.2.2 <c@example.com> Over quota\r\n" BYE,
     .nmsgs = 1, .msgs = {{.rcpts = {"b@example.com", "c@example.com"}}}, .closed = true},

    /* Not offered. */
    {"not_offered_in_clear", GREET EHLO_NP MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .starttls = true, .nmsgs = 1,
     .msgs = {M_B}, .closed = true},
    {"not_offered_required", GREET EHLO_NP BYE, C_EHLO C_QUIT, "", .require_tls = true, .nmsgs = 1,
     .msgs = {M_B}, .closed = true, .err = TLS_REQ},
    {"not_offered_required_lmtp", GREET LHLO_R BYE, C_LHLO C_QUIT, "", .lmtp = true,
     .require_tls = true, .starttls = true, .nmsgs = 1, .msgs = {M_B}, .closed = true,
     .err = TLS_REQ},
    {"helo_has_no_starttls", GREET "502 5.5.2 no\r\n250 mx.example.net\r\n" BYE,
     C_EHLO C_HELO C_QUIT, "", .require_tls = true, .nmsgs = 1, .msgs = {M_B}, .closed = true,
     .err = TLS_REQ},
    {"required_but_no_221", GREET EHLO_MIN, C_EHLO C_QUIT, "", .require_tls = true,
     .fail = "4.4.2 lost connection", .closed = true, .err = TLS_REQ},
    /* Off: offered, not used. */
    {"starttls_off", GREET EHLO_R BYE, C_EHLO C_QUIT, "", .closed = true},

    /* Refused. */
    {"refused_in_clear", GREET EHLO_R TLS_NO MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_STARTTLS C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .starttls = true,
     .nmsgs = 1, .msgs = {M_B}, .closed = true},
    {"refused_5xx_in_clear", GREET EHLO_R "502 5.5.1 not here\r\n" MAIL_OK RCPT_OK GO QUEUED BYE,
     C_EHLO C_STARTTLS C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY C_QUIT, RES_OK, .starttls = true,
     .nmsgs = 1, .msgs = {M_B}, .closed = true},
    {"refused_required", GREET EHLO_R TLS_NO BYE, C_EHLO C_STARTTLS C_QUIT, "", .require_tls = true,
     .nmsgs = 1, .msgs = {M_B}, .closed = true, .err = TLS_REFUSED},
    {"421_to_starttls", GREET EHLO_R SHUT, C_EHLO C_STARTTLS, "", .starttls = true, .closed = true,
     .err = "421 4.3.2 mx.example.net Service shutting down"},
    {"250_to_starttls", GREET EHLO_R "250 2.0.0 ok\r\n", C_EHLO C_STARTTLS, "", .starttls = true,
     .closed = true, .err = "4.5.0 protocol error: unexpected STARTTLS reply: \"250 2.0.0 ok\""},

    /* The handshake fails: io/ says so. */
    {"handshake_fails", GREET EHLO_R TLS_GO, C_EHLO C_STARTTLS TLS_MARK, "", .starttls = true,
     .inject = INJECT, .fail = "4.7.5 TLS handshake failed: certificate verify failed", .nmsgs = 1,
     .msgs = {M_B}, .closed = true, .err = "4.7.5 TLS handshake failed: certificate verify failed"},
};

Test(smtp_client, starttls)
{
	CHECK_CASES(tls_cases);
}

Test(smtp_client, starttls_calls_out_of_turn)
{
	struct smtp_client_conf cf = {.hostname = HOST, .starttls = true};
	static const char in[] = GREET EHLO_R TLS_GO INJECT;
	size_t upto = sizeof(in) - 1 - strlen(INJECT);
	struct smtp_client c;

	smtp_client_init(&c, &cf, NULL);
	cr_assert_eq(smtp_client_tls_started(&c), -EBUSY);
	cr_assert_eq(smtp_client_feed(&c, in, sizeof(in) - 1), upto);
	cr_assert_eq(c.act, SMTPC_ACT_STARTTLS);
	cr_assert_eq(c.state, SMTPC_S_TLS);
	cr_assert_not(c.tls);
	cr_assert_eq(smtp_client_feed(&c, in + upto, sizeof(in) - 1 - upto), 0);
	cr_assert_eq(smtp_client_send(&c,
	                              &(struct smtp_client_msg){
	                                  .from = "", .nrcpt = 1, .rcpts = (const char *[]){"x"}}),
	             -EBUSY);
	/* Quitting while TLS starts: no QUIT in clear after STARTTLS. */
	buf_reset(&c.out, 0);
	smtp_client_quit(&c);
	cr_assert_eq(c.out.len, 0);
	cr_assert_eq(c.state, SMTPC_S_CLOSED);
	cr_assert_eq(c.act, SMTPC_ACT_CLOSE, "STARTTLS action cleared by the close");
	cr_assert_eq(smtp_client_tls_started(&c), -EBUSY);
	smtp_client_fini(&c);

	/* Quitting with the STARTTLS reply due: the same. */
	smtp_client_init(&c, &cf, NULL);
	cr_assert_eq(smtp_client_feed(&c, GREET EHLO_R, strlen(GREET EHLO_R)),
	             strlen(GREET EHLO_R));
	cr_assert_eq(c.state, SMTPC_S_STARTTLS);
	cr_assert_eq(c.act, 0, "no READY before the STARTTLS dance");
	buf_reset(&c.out, 0);
	smtp_client_quit(&c);
	cr_assert_eq(c.out.len, 0);
	cr_assert_eq(c.state, SMTPC_S_CLOSED);
	smtp_client_fini(&c);
}

/* ---- Connection-level failures ---- */

#define R_SHUT(who, stage)                                                                         \
	R(who, "temp", stage, 421, "421 4.3.2 mx.example.net Service shutting down")
#define SHUT_ERR "421 4.3.2 mx.example.net Service shutting down"
#define M_BC                                                                                       \
	{                                                                                          \
		.rcpts = { "b@example.com", "c@example.com" }                                      \
	}

static const struct tcase fail_cases[] = {
    {"421_after_first_rcpt", GREET EHLO_R MAIL_OK RCPT_OK SHUT "250 ignored\r\n",
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_RCPT("c") C_DATA,
     R_SHUT("b", "RCPT TO") R_SHUT("c", "RCPT TO") DONE, .nmsgs = 1, .msgs = {M_BC}, .closed = true,
     .err = SHUT_ERR},
    {"421_keeps_decided_results", GREET EHLO_R MAIL_OK UNKNOWN RCPT_OK SHUT,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_RCPT("d") C_DATA,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") R_SHUT("d", "DATA")
         DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"c@example.com", "d@example.com"}}}, .closed = true,
     .err = SHUT_ERR},
    {"421_to_mail", GREET EHLO_NP SHUT, C_EHLO C_MAIL(SZ), R_SHUT("b", "MAIL FROM") DONE,
     .nmsgs = 1, .msgs = {M_B}, .closed = true, .err = SHUT_ERR},
    {"421_at_end_of_data", GREET EHLO_R MAIL_OK RCPT_OK GO SHUT,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY, R_SHUT("b", "end of data") DONE, .nmsgs = 1,
     .msgs = {M_B}, .closed = true, .err = SHUT_ERR},
    {"timeout_waiting_for_data_reply", GREET EHLO_R MAIL_OK RCPT_OK,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA,
     R("b", "temp", "DATA", 0, "4.4.2 conversation timed out") DONE, .nmsgs = 1, .msgs = {M_B},
     .fail = "4.4.2 conversation timed out", .closed = true, .err = "4.4.2 conversation timed out"},
    {"timeout_after_end_of_data", GREET EHLO_R MAIL_OK RCPT_OK GO,
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA C_BODY,
     R("b", "temp", "end of data", 0, "4.4.2 conversation timed out") DONE, .nmsgs = 1,
     .msgs = {M_B}, .fail = "4.4.2 conversation timed out", .closed = true,
     .err = "4.4.2 conversation timed out"},
};

Test(smtp_client, connection_failures)
{
	CHECK_CASES(fail_cases);
}

/* ---- Malformed replies: protocol errors ---- */

#define PE(what, snip)               "4.5.0 protocol error: " what ": \"" snip "\""
#define R_PE(who, stage, what, snip) R(who, "temp", stage, 0, PE(what, snip))

static const struct tcase malformed_cases[] = {
    {"not_three_digits", GREET EHLO_R MAIL_OK "25 ok\r\n", C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA,
     R_PE("b", "RCPT TO", "malformed reply", "25 ok") DONE, .nmsgs = 1, .msgs = {M_B},
     .closed = true, .err = PE("malformed reply", "25 ok")},
    {"letter_in_code", GREET EHLO_NP "2x0 ok\r\n", C_EHLO C_MAIL(SZ),
     R_PE("b", "MAIL FROM", "malformed reply", "2x0 ok") DONE, .nmsgs = 1, .msgs = {M_B},
     .closed = true, .err = PE("malformed reply", "2x0 ok")},
    {"four_digits", GREET "2200 hi\r\n", C_EHLO, "", .closed = true,
     .err = PE("malformed reply", "2200 hi")},
    {"code_1xx", GREET EHLO_R MAIL_OK RCPT_OK "150 go\r\n", C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA,
     R_PE("b", "DATA", "malformed reply", "150 go") DONE, .nmsgs = 1, .msgs = {M_B}, .closed = true,
     .err = PE("malformed reply", "150 go")},
    {"empty_line", GREET "\r\n", C_EHLO, "", .closed = true, .err = PE("malformed reply", "")},
    {"inconsistent_multi_line", GREET EHLO_R "250-ok\r\n550 no\r\n",
     C_EHLO C_MAIL(SZ) C_RCPT("b") C_DATA,
     R_PE("b", "MAIL FROM", "inconsistent codes in a multi-line reply", "550 no") DONE, .nmsgs = 1,
     .msgs = {M_B}, .closed = true,
     .err = PE("inconsistent codes in a multi-line reply", "550 no")},
    {"data_354_without_recipients", GREET EHLO_R MAIL_OK UNKNOWN GO,
     C_EHLO C_MAIL(SZ) C_RCPT("c") C_DATA,
     R("c", "perm", "RCPT TO", 550,
       "550 5.1.1 <c@example.com>: Recipient address rejected: User unknown") DONE,
     .nmsgs = 1, .msgs = {{.rcpts = {"c@example.com"}}}, .closed = true,
     .err = PE("DATA accepted without recipients", "354 End data with <CR><LF>.<CR><LF>")},
};

Test(smtp_client, malformed_replies)
{
	CHECK_CASES(malformed_cases);
}

Test(smtp_client, reply_line_limit)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	static char in[2 * SMTPC_LINE_MAX];
	struct smtp_client c;
	size_t n;

	/* A reply line of SMTPC_LINE_MAX octets, CRLF included, is fine. */
	memset(in, 'x', sizeof(in));
	memcpy(in, "220 ", 4);
	memcpy(in + SMTPC_LINE_MAX - 2, "\r\n", 2);
	for (size_t step = 1; step <= SMTPC_LINE_MAX; step = step * 3 + 1) {
		smtp_client_init(&c, &cf, NULL);
		for (size_t off = 0; off < SMTPC_LINE_MAX; off += n) {
			n = SMTPC_LINE_MAX - off < step ? SMTPC_LINE_MAX - off : step;
			cr_assert_eq(smtp_client_feed(&c, in + off, n), n);
		}
		cr_assert_eq(c.state, SMTPC_S_EHLO);
		smtp_client_fini(&c);
	}
	/* One more octet: protocol error, whichever way it comes. */
	memcpy(in + SMTPC_LINE_MAX - 2, "x\r\n", 3);
	for (size_t step = 1; step <= SMTPC_LINE_MAX + 1; step = step * 3 + 1) {
		smtp_client_init(&c, &cf, NULL);
		for (size_t off = 0; off < SMTPC_LINE_MAX + 1 && c.state != SMTPC_S_CLOSED;
		     off += n) {
			n = SMTPC_LINE_MAX + 1 - off < step ? SMTPC_LINE_MAX + 1 - off : step;
			smtp_client_feed(&c, in + off, n);
		}
		cr_assert_eq(c.state, SMTPC_S_CLOSED, "step %zu", step);
		cr_assert(c.act & SMTPC_ACT_CLOSE);
		cr_assert(strstr(smtp_client_error(&c), "reply line too long"));
		cr_assert_null(c.line.p);
		smtp_client_fini(&c);
	}
}

/* ---- Content: dot-stuffing and streaming ---- */

/* A client in state BODY with one accepted recipient; <out> is empty. */
static void client_in_body(struct smtp_client *c, const struct smtp_client_conf *cf,
                           struct smtp_client_msg *m)
{
	static const char *rcpts[] = {"b@example.com"};
	static const char replies[] = MAIL_OK RCPT_OK GO;
	size_t n;

	*m = (struct smtp_client_msg){.from = "a@example.org", .rcpts = rcpts, .nrcpt = 1};
	smtp_client_init(c, cf, NULL);
	n = smtp_client_feed(c, GREET EHLO_R, strlen(GREET EHLO_R));
	cr_assert_eq(n, strlen(GREET EHLO_R));
	cr_assert_eq(smtp_client_send(c, m), 0);
	cr_assert_eq(smtp_client_feed(c, replies, strlen(replies)), strlen(replies));
	cr_assert_eq(c->state, SMTPC_S_BODY);
	cr_assert(c->act & SMTPC_ACT_BODY);
	c->act = 0;
	buf_reset(&c->out, 0);
}

/* Sends <len> octets at <p> through smtp_client_body(), draining into
 * <got> whenever it stops short; checks the bound on <out>. */
static void body_through(struct smtp_client *c, const char *p, size_t len, struct buf *got)
{
	size_t n;

	while (len) {
		n = smtp_client_body(c, p, len);
		cr_assert_leq(c->out.len, c->out_max);
		if (n < len) {
			cr_assert_geq(c->out.len + 1, c->out_max, "short of %zu with room",
			              len - n);
			buf_append(got, c->out.p, c->out.len);
			buf_reset(&c->out, 1u << 20);
		}
		p += n;
		len -= n;
	}
}

static const struct {
	const char *in, *want;
} stuff_cases[] = {
    {"", ".\r\n"},
    {"a", "a\r\n.\r\n"},
    {"a\r\n", "a\r\n.\r\n"},
    {".", "..\r\n.\r\n"},
    {".\r\n", "..\r\n.\r\n"},
    {"\r\n", "\r\n.\r\n"},
    {"..a\r\n.b\r\nc.\r\n", "...a\r\n..b\r\nc.\r\n.\r\n"},
    /* An end of data inside the content is stuffed, never sent. */
    {"a\r\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n"},
    {"x.\r\n..", "x.\r\n...\r\n.\r\n"},
    /* After a bare LF too: a lenient next hop must not end there. */
    {"a\n.\nb\r\n", "a\n..\nb\r\n.\r\n"},
    {"a\r", "a\r\r\n.\r\n"},
    /* "a\n.\r\n" is no end of data to a strict next hop: it would wait. */
    {"a\n", "a\n\r\n.\r\n"},
    {"a\r\n\r\n", "a\r\n\r\n.\r\n"},
    {"\r\n.\r\n.\r\n", "\r\n..\r\n..\r\n.\r\n"},
};

/* Every case, cut into three views at every pair of offsets, with <out>
 * bounds from the smallest allowed up. */
Test(smtp_client, body_dot_stuffing_split_everywhere)
{
	static const size_t bounds[] = {2, 3, 5, 0};
	struct smtp_client_msg m;
	struct smtp_client c;
	struct buf got = BUF_INIT;

	for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
		struct smtp_client_conf cf = {.hostname = HOST, .out_max = bounds[b]};

		for (size_t t = 0; t < sizeof(stuff_cases) / sizeof(stuff_cases[0]); t++) {
			const char *in = stuff_cases[t].in;
			size_t len = strlen(in);

			for (size_t i = 0; i <= len; i++) {
				for (size_t j = i; j <= len; j++) {
					client_in_body(&c, &cf, &m);
					buf_reset(&got, 0);
					body_through(&c, guarded(1, in, i), i, &got);
					body_through(&c, guarded(1, in + i, j - i), j - i, &got);
					body_through(&c, guarded(1, in + j, len - j), len - j,
					             &got);
					smtp_client_body_end(&c);
					cr_assert_eq(c.state, SMTPC_S_DOT);
					buf_append(&got, c.out.p, c.out.len);
					cr_assert_str_eq(buf_cstr(&got), stuff_cases[t].want,
					                 "case %zu views %zu/%zu bound %zu", t, i,
					                 j, bounds[b]);
					smtp_client_fini(&c);
				}
			}
		}
	}
	buf_free(&got);
}

/* Removes dot-stuffing and the terminator (RFC 5321 4.5.2, the receiver's
 * side), checking the terminator comes once, at the very end. */
static void unstuff(const char *p, size_t len, struct buf *b)
{
	size_t i = 0;

	while (i < len) {
		const char *lf = memchr(p + i, '\n', len - i);
		size_t n;

		cr_assert_not_null(lf, "output ends without a line end");
		n = (size_t)(lf - (p + i)) + 1;
		if (n == 3 && p[i] == '.' && p[i + 1] == '\r') {
			cr_assert_eq(i + 3, len, "terminator before the end");
			return;
		}
		if (p[i] == '.')
			buf_append(b, p + i + 1, n - 1);
		else
			buf_append(b, p + i, n);
		i += n;
	}
	cr_assert_fail("no terminator");
}

Test(smtp_client, large_body_streams_in_bounded_chunks)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	const size_t size = 10u * 1024 * 1024;
	struct buf body = BUF_INIT, got = BUF_INIT, back = BUF_INIT;
	struct smtp_client_msg m;
	struct smtp_client c;
	uint64_t rnd = 88172645463325252ull;
	size_t off = 0, calls = 0, peak = 0;

	/* Lines of 0-199 octets, a fifth starting with '.', some ".". */
	while (body.len < size) {
		size_t n;

		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
		n = rnd % 200;
		if (rnd % 5 == 0)
			buf_append(&body, ".", 1);
		for (size_t i = 0; i < n; i++)
			buf_append(&body, &"abcdefghij.klmnop"[(rnd >> (i % 40)) % 17], 1);
		buf_append(&body, "\r\n", 2);
	}
	client_in_body(&c, &cf, &m);
	cr_assert_eq(c.out_max, SMTPC_OUT_MAX);
	/* Views of odd sizes, as received buffers or spool pieces come. */
	while (off < body.len) {
		size_t k, n;

		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
		k = 1 + rnd % (200 * 1024);
		if (k > body.len - off)
			k = body.len - off;
		while (k) {
			n = smtp_client_body(&c, body.p + off, k);
			calls++;
			if (c.out.len > peak)
				peak = c.out.len;
			cr_assert_leq(c.out.len, SMTPC_OUT_MAX);
			if (n < k) {
				buf_append(&got, c.out.p, c.out.len);
				buf_reset(&c.out, 1u << 20);
			}
			off += n;
			k -= n;
		}
	}
	smtp_client_body_end(&c);
	cr_assert(c.out.len <= SMTPC_OUT_MAX + 5);
	cr_assert(c.out.cap <= 2 * SMTPC_OUT_MAX + 64, "out grew to %zu", c.out.cap);
	buf_append(&got, c.out.p, c.out.len);
	cr_assert_eq(peak, SMTPC_OUT_MAX);
	cr_assert_gt(got.len, body.len);
	cr_assert_gt(calls, got.len / SMTPC_OUT_MAX);
	unstuff(got.p, got.len, &back);
	cr_assert_eq(back.len, body.len);
	cr_assert(memcmp(back.p, body.p, body.len) == 0);
	cr_assert_eq(c.body_len, body.len);
	smtp_client_fini(&c);
	buf_free(&body);
	buf_free(&got);
	buf_free(&back);
}

Test(smtp_client, body_calls_outside_body_do_nothing)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	struct smtp_client c;

	smtp_client_init(&c, &cf, NULL);
	cr_assert_eq(smtp_client_body(&c, "x", 1), 0);
	smtp_client_body_end(&c);
	cr_assert_eq(c.out.len, 0);
	cr_assert_eq(c.state, SMTPC_S_GREET);
	smtp_client_fini(&c);
}

Test(smtp_client, reply_during_body_fails_temporarily)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	static const char early[] = "552 5.3.4 Message too big\r\n";
	const struct smtp_client_result *r;
	struct smtp_client_msg m;
	struct smtp_client c;

	client_in_body(&c, &cf, &m);
	cr_assert_eq(smtp_client_body(&c, "abc\r\n", 5), 5);
	cr_assert_leq(c.out.cap, 64, "a small body reserves little");
	cr_assert_eq(smtp_client_feed(&c, early, strlen(early)), strlen(early));
	cr_assert_eq(c.state, SMTPC_S_CLOSED);
	cr_assert_eq(c.act, SMTPC_ACT_DONE | SMTPC_ACT_CLOSE);
	r = smtp_client_result(&c, 0);
	cr_assert_eq(r->status, SMTPC_TEMP);
	cr_assert_eq(r->stage, SMTPC_STAGE_BODY);
	cr_assert_str_eq(smtp_client_result_text(&c, r), "552 5.3.4 Message too big");
	/* Too late to stream more. */
	cr_assert_eq(smtp_client_body(&c, "x", 1), 0);
	smtp_client_fini(&c);
}

/* ---- The API's guards ---- */

Test(smtp_client, send_checks_state_and_envelope)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	const char *good[] = {"b@example.com"};
	const char *crlf[] = {"b@example.com>\r\nRCPT TO:<evil@example.net"};
	const char *empty[] = {""};
	struct smtp_client_msg m = {.from = "a@example.org", .rcpts = good, .nrcpt = 1};
	struct smtp_client c;

	smtp_client_init(&c, &cf, NULL);
	cr_assert_eq(smtp_client_send(&c, &m), -EBUSY); /* before the greeting */
	smtp_client_feed(&c, GREET EHLO_R, strlen(GREET EHLO_R));
	m.rcpts = crlf;
	cr_assert_eq(smtp_client_send(&c, &m), -EINVAL);
	m.rcpts = empty;
	cr_assert_eq(smtp_client_send(&c, &m), -EINVAL);
	m.rcpts = good;
	m.nrcpt = 0;
	cr_assert_eq(smtp_client_send(&c, &m), -EINVAL);
	m.nrcpt = 1;
	m.from = "a@example.org\n";
	cr_assert_eq(smtp_client_send(&c, &m), -EINVAL);
	cr_assert_eq(c.out.len, strlen(C_EHLO), "nothing sent by refused calls");
	cr_assert_eq(c.state, SMTPC_S_READY);
	m.from = "a@example.org";
	cr_assert_eq(smtp_client_send(&c, &m), 0);
	cr_assert_eq(smtp_client_send(&c, &m), -EBUSY); /* one message at a time */
	smtp_client_fini(&c);
}

Test(smtp_client, quit_mid_transaction_abandons_without_quit)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	struct smtp_client_msg m;
	struct smtp_client c;

	client_in_body(&c, &cf, &m);
	smtp_client_quit(&c);
	cr_assert_eq(c.state, SMTPC_S_CLOSED);
	cr_assert_eq(c.out.len, 0, "QUIT would be content here");
	cr_assert_eq(smtp_client_result(&c, 0)->status, SMTPC_TEMP);
	cr_assert_eq(c.act, SMTPC_ACT_DONE | SMTPC_ACT_CLOSE);
	smtp_client_fini(&c);
}

Test(smtp_client, quit_while_rset_pending)
{
	struct smtp_client_conf cf = {.hostname = HOST};
	static const char in[] = GREET EHLO_R MAIL_OK UNKNOWN NORCPT;
	const char *rcpts[] = {"c@example.com"};
	struct smtp_client_msg m = {.from = "a@example.org", .rcpts = rcpts, .nrcpt = 1};
	struct smtp_client c;
	size_t n;

	smtp_client_init(&c, &cf, NULL);
	n = smtp_client_feed(&c, in, strlen(in));
	cr_assert_eq(smtp_client_send(&c, &m), 0);
	cr_assert_eq(smtp_client_feed(&c, in + n, strlen(in) - n), strlen(in) - n);
	cr_assert_eq(c.state, SMTPC_S_RSET);
	smtp_client_quit(&c);
	cr_assert_eq(c.state, SMTPC_S_QUIT);
	smtp_client_feed(&c, RSET_OK, strlen(RSET_OK));
	cr_assert_eq(c.state, SMTPC_S_QUIT);
	smtp_client_feed(&c, BYE, strlen(BYE));
	cr_assert_eq(c.state, SMTPC_S_CLOSED);
	cr_assert_str_eq(buf_cstr(&c.out),
	                 C_EHLO C_MAIL(" SIZE=0") C_RCPT("c") C_DATA C_RSET C_QUIT);
	smtp_client_fini(&c);
}

Test(smtp_client, client_stays_small)
{
	/* Per-connection state, memory apart: a few hundred octets. */
	cr_assert_leq(sizeof(struct smtp_client), 320);
}

/* Nothing was asked: a 421 closes quietly, anything else is a protocol
 * error; a NUL in a reply is text, shown as '?'. */
Test(smtp_client, unexpected_while_idle)
{
	static const struct {
		const char *in;
		size_t len;
		const char *err;
	} cs[] = {
	    {SHUT, sizeof(SHUT) - 1, SHUT_ERR},
	    {"250 what\r\n", 10, PE("unexpected reply", "250 what")},
	    {"250 a\0b\r\n", 9, PE("unexpected reply", "250 a?b")},
	};
	struct smtp_client_conf cf = {.hostname = HOST};
	struct smtp_client c;

	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
		smtp_client_init(&c, &cf, NULL);
		smtp_client_feed(&c, GREET EHLO_R, strlen(GREET EHLO_R));
		cr_assert_eq(c.state, SMTPC_S_READY);
		cr_assert_eq(smtp_client_feed(&c, cs[i].in, cs[i].len), cs[i].len);
		cr_assert_eq(c.state, SMTPC_S_CLOSED);
		cr_assert_eq(c.act & (SMTPC_ACT_CLOSE | SMTPC_ACT_DONE), SMTPC_ACT_CLOSE);
		cr_assert_str_eq(smtp_client_error(&c), cs[i].err);
		cr_assert_str_eq(buf_cstr(&c.out), C_EHLO);
		smtp_client_fini(&c);
	}
}
