/* smtp_session_test: the ESMTP server session, driven by client transcripts.
 * Every transcript runs in one piece, byte by byte, and split in two at
 * every offset; all runs must give the same replies and message contents.
 * When a message is ready the runner records its content, answers with
 * msg_result(0, "QID1") and feeds the rest, as io/ does. When STARTTLS is
 * accepted it drops the rest of the cleartext input, "runs the handshake"
 * (smtp_session_tls_started()) and feeds what the client sends under TLS. */
#include "core/smtp_session.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/tables.h"
#include "core/verify_cache.h"
#include "tests/unit/testutil.h"

#define HOST      "mx.example.net"
#define GREETING  "220 " HOST " ESMTP ringmx\r\n"
#define EHLO_HEAD "250-" HOST "\r\n250-PIPELINING\r\n"
#define EHLO_TAIL "250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
#define EHLO_R    EHLO_HEAD "250-SIZE 1000\r\n" EHLO_TAIL
#define EHLO_R20  EHLO_HEAD "250-SIZE 20\r\n" EHLO_TAIL
#define HELO_R    "250 " HOST "\r\n"
#define OK        "250 2.0.0 Ok\r\n"
#define MAIL_OK   "250 2.1.0 Ok\r\n"
#define RCPT_OK   "250 2.1.5 Ok\r\n"
#define GO        "354 End data with <CR><LF>.<CR><LF>\r\n"
#define QUEUED    "250 2.0.0 Ok: queued as QID1\r\n"
#define BYE       "221 2.0.0 Bye\r\n"
#define EOM       "<EOM>"

/* Client side of an envelope with one accepted recipient, and the replies. */
#define ENV    "EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
#define ENV_R  EHLO_R MAIL_OK RCPT_OK
#define HENV   "HELO client.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
#define HENV_R HELO_R MAIL_OK RCPT_OK

#define E503(what) "503 5.5.1 Error: " what "\r\n"
#define SEQ_HELO   E503("send HELO/EHLO first")
#define SEQ_MAIL   E503("need MAIL command")
#define NESTED     E503("nested MAIL command")
#define NORCPT     "554 5.5.1 Error: no valid recipients\r\n"
#define UNKNOWN    "500 5.5.2 Error: command not recognized\r\n"
#define BADSYN     "500 5.5.2 Error: bad syntax\r\n"
#define TOOLONG    "500 5.5.6 Error: line too long\r\n"
#define BADFROM    "501 5.1.7 Bad sender address syntax\r\n"
#define BADRCPT    "501 5.1.3 Bad recipient address syntax\r\n"
#define MAILSYN    "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
#define RCPTSYN    "501 5.5.4 Syntax: RCPT TO:<address>\r\n"
#define BDATSYN    "501 5.5.4 Syntax: BDAT count [LAST]\r\n"
#define TOOBIG     "552 5.3.4 Message size exceeds fixed limit\r\n"
#define BARE       "550 5.6.0 Message contains bare CR or bare LF (RFC 5321 2.3.8)\r\n"
#define NONASCII   "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
#define PREGREET   E503("talked before greeting")
#define DENIED(a)  "554 5.7.1 <" a ">: Relay access denied\r\n"
#define UNSUPP(p)  "555 5.5.4 Unsupported option: " p "\r\n"
#define OCTETS(n)  "250 2.0.0 " #n " octets received\r\n"

/* STARTTLS (RFC 3207). */
#define EHLO_RT  EHLO_HEAD "250-SIZE 1000\r\n250-STARTTLS\r\n" EHLO_TAIL
#define READY    "220 2.0.0 Ready to start TLS\r\n"
#define TLS_ON   E503("TLS already active")
#define TLS_INTX E503("MAIL transaction in progress")
#define NOTLS    "454 4.7.0 TLS not available\r\n"
#define TLS_VER  "TLSv1.3"
#define TLS_CIPH "TLS_AES_256_GCM_SHA384"

enum cfv {
	CF_DEFAULT = 0, /* size 1000, 5 rcpts, 20 errors, bare CR/LF rejected */
	CF_SMALL,       /* size 20 */
	CF_NOSIZE,      /* no size limit */
	CF_RCPT2,       /* 2 recipients */
	CF_ERRS3,       /* 3 errors, 1 recipient */
	CF_NORMALIZE,   /* bare CR/LF become CRLF */
	CF_LONGREJ,     /* text lines of 20 octets at most, rejected beyond */
	CF_TLS,         /* a certificate is configured: STARTTLS offered */
	CF_ROUTING,     /* --allow-untrusted-routing */
	CF_TABLES,      /* recipient tables (test_tables), 3 unknown users, then 421 */
	CF_TARPIT,      /* those tables, 100 ms before each 550 5.1.1, no limit */
	CF_NULSTRIP,    /* --nul strip */
	CF_ERRDELAY,    /* 6 errors, each after the third delayed */
};

struct tcase {
	const char *name;
	const char *in;     /* client bytes after the greeting */
	size_t inlen;       /* 0: strlen(in) */
	const char *want;   /* replies after the greeting (all of them when <pre>) */
	const char *bodies; /* NULL: unchecked; else each message's content + EOM */
	const char *pre;    /* client bytes before the greeting */
	enum cfv cf;
	bool relay;         /* the peer may relay */
	bool closed;        /* SMTP_ACT_CLOSE at the end */
	unsigned delays;    /* SMTP_ACT_DELAY raised this many times */
	size_t clear;       /* STARTTLS accepted after this many bytes of <in>; 0: never */
	const char *tls_in; /* client bytes once TLS is up (only with <clear>) */
};

#define BIN(lit) .in = (lit), .inlen = sizeof(lit) - 1

struct result {
	struct buf out;
	struct buf bodies;
	bool closed;
	unsigned nmsgs;
	size_t clear; /* bytes of <in> consumed when STARTTLS was accepted; 0: it was not */
	unsigned delays;
};

static struct policy test_policy;
static bool test_policy_ready;

static void conf_for(enum cfv v, struct smtp_server_conf *cf)
{
	char err[128];

	if (!test_policy_ready) {
		policy_init(&test_policy);
		cr_assert_eq(
		    policy_add_domains(&test_policy, "example.com,localhost", err, sizeof(err)), 0,
		    "%s", err);
		policy_finish(&test_policy);
		test_policy_ready = true;
	}
	*cf = (struct smtp_server_conf){
	    .hostname = HOST,
	    .policy = &test_policy,
	    .max_message_size = 1000,
	    .max_recipients = 5,
	    .max_errors = 20,
	    .max_line = 1000,
	    .bare_policy = SMTP_DATA_BARE_REJECT,
	    .long_line_policy = SMTP_DATA_LONG_ACCEPT,
	};
	switch (v) {
	case CF_DEFAULT:
		break;
	case CF_SMALL:
		cf->max_message_size = 20;
		break;
	case CF_NOSIZE:
		cf->max_message_size = 0;
		break;
	case CF_RCPT2:
		cf->max_recipients = 2;
		break;
	case CF_ERRS3:
		cf->max_errors = 3;
		cf->max_recipients = 1;
		break;
	case CF_NORMALIZE:
		cf->bare_policy = SMTP_DATA_BARE_NORMALIZE;
		break;
	case CF_LONGREJ:
		cf->max_line = 20;
		cf->long_line_policy = SMTP_DATA_LONG_REJECT;
		break;
	case CF_TLS:
		cf->tls_available = true;
		break;
	case CF_ROUTING:
		cf->allow_untrusted_routing = true;
		break;
	case CF_TABLES:
		cf->max_unknown = 3;
		break;
	case CF_TARPIT:
		cf->unknown_delay_ms = 100;
		break;
	case CF_NULSTRIP:
		cf->nul_strip = true;
		break;
	case CF_ERRDELAY:
		cf->max_errors = 6;
		cf->error_delay_ms = 50;
		break;
	}
}

/* example.com has a table (its users, a+ extensions, "q u"); localhost
 * has none. */
static struct tables test_tables;
static bool test_tables_ready;

static struct tables *tables_for(enum cfv v)
{
	static const char table[] =
	    "bob@example.com\nAlice@Example.COM\tthe boss\n"
	    "\"q u\"@example.com\n# postmaster too\npostmaster@example.com\n";
	struct recipients_builder b;
	char err[256];

	if (v != CF_TABLES && v != CF_TARPIT)
		return NULL;
	if (!test_tables_ready) {
		atomic_init(&test_tables.refs, 1);
		policy_init(&test_tables.domains);
		cr_assert_eq(policy_add_domains(&test_tables.domains, "example.com,localhost", err,
		                                sizeof(err)),
		             0);
		policy_finish(&test_tables.domains);
		recipients_builder_init(&b, NULL);
		cr_assert_eq(recipients_builder_add_buffer(&b, "t", table, sizeof(table) - 1, err,
		                                           sizeof(err)),
		             0, "%s", err);
		test_tables.recipients = recipients_build(&b, err, sizeof(err));
		cr_assert_not_null(test_tables.recipients, "%s", err);
		recipients_builder_fini(&b);
		test_tables_ready = true;
	}
	return &test_tables;
}

static void peer_for(bool relay, struct smtp_peer *peer)
{
	*peer = (struct smtp_peer){.may_relay = relay};
	strcpy(peer->addr, relay ? "198.51.100.7" : "192.0.2.1");
}

/* Feeds <len> bytes at most <step> per call, as io/ would: a message that
 * is ready is recorded and answered, then the rest is fed again. Stops at
 * SMTP_ACT_STARTTLS. Returns the bytes consumed. */
static size_t feed_piece(struct smtp_session *s, const char *p, size_t len, size_t step,
                         struct result *r)
{
	size_t off = 0, k, n;

	while (off < len && !(s->act & (SMTP_ACT_CLOSE | SMTP_ACT_STARTTLS))) {
		k = len - off < step ? len - off : step;
		n = smtp_session_feed(s, guarded(0, p + off, k), k);
		cr_assert_leq(n, k);
		off += n;
		if (s->act & SMTP_ACT_MSG_READY) {
			cr_assert_eq(s->state, SMTP_S_SPOOL);
			cr_assert(smtp_session_in_tx(s));
			buf_append(&r->bodies, s->tx.body.p, s->tx.body.len);
			buf_append_str(&r->bodies, EOM);
			/* While spooling nothing is consumed. */
			if (off < len)
				cr_assert_eq(
				    smtp_session_feed(s, guarded(0, p + off, len - off), len - off),
				    0);
			smtp_session_msg_result(s, 0, "QID1");
			cr_assert_eq(s->act & SMTP_ACT_MSG_READY, 0);
			continue;
		}
		if (s->act & SMTP_ACT_DELAY) {
			/* Held: nothing is consumed until the delay is over. */
			cr_assert_gt(s->delay_ms, 0);
			if (off < len)
				cr_assert_eq(
				    smtp_session_feed(s, guarded(0, p + off, len - off), len - off),
				    0);
			r->delays++;
			smtp_session_delay_done(s);
			cr_assert_eq(s->act & SMTP_ACT_DELAY, 0);
			continue;
		}
		if (!(s->act & (SMTP_ACT_CLOSE | SMTP_ACT_STARTTLS)))
			cr_assert_eq(n, k, "consumed %zu of %zu without an action", n, k);
	}
	return off;
}

/* STARTTLS was accepted after <used> bytes of <in>: the rest is what the
 * client pipelined in clear, which io/ drops; then the handshake, then the
 * client's bytes under TLS. */
static void run_tls(const struct tcase *c, struct smtp_session *s, const char *in, size_t len,
                    size_t used, size_t step, struct result *r)
{
	r->clear = used;
	cr_assert(s->state == SMTP_S_READY || s->state == SMTP_S_GREET);
	/* While the action is pending nothing more is consumed. */
	if (used < len)
		cr_assert_eq(smtp_session_feed(s, guarded(0, in + used, len - used), len - used),
		             0);
	cr_assert_eq(smtp_session_feed(s, guarded(0, "NOOP\r\n", 6), 6), 0);
	smtp_session_tls_started(s, TLS_VER, TLS_CIPH);
	cr_assert_eq(s->act & SMTP_ACT_STARTTLS, 0);
	cr_assert(s->flags & SMTP_F_TLS);
	cr_assert_eq(s->state, SMTP_S_GREET, "%s: EHLO again after STARTTLS", c->name);
	cr_assert_str_eq(s->helo, "");
	cr_assert_eq(s->flags & SMTP_F_ESMTP, 0);
	if (c->tls_in)
		feed_piece(s, c->tls_in, strlen(c->tls_in), step, r);
}

/* Runs <c>: the first <split> bytes, then the rest, <step> bytes per call. */
static void run(const struct tcase *c, size_t split, size_t step, struct result *r)
{
	struct smtp_server_conf cf;
	struct smtp_peer peer;
	struct smtp_session s;
	size_t len = c->inlen ? c->inlen : strlen(c->in), used;

	conf_for(c->cf, &cf);
	peer_for(c->relay, &peer);
	smtp_session_init(&s, &cf, &peer);
	s.tables = tables_for(c->cf);
	if (c->pre) {
		size_t plen = strlen(c->pre);

		cr_assert_eq(smtp_session_feed(&s, guarded(0, c->pre, plen), plen), plen);
		cr_assert(s.flags & SMTP_F_PREGREET);
		cr_assert_eq(s.out.len, 0);
	}
	smtp_session_greet(&s);
	if (split > len)
		split = len;
	used = feed_piece(&s, c->in, split, step, r);
	if (!(s.act & SMTP_ACT_STARTTLS))
		used += feed_piece(&s, c->in + split, len - split, step, r);
	if (s.act & SMTP_ACT_STARTTLS)
		run_tls(c, &s, c->in, len, used, step, r);
	buf_append(&r->out, s.out.p, s.out.len);
	r->closed = s.act & SMTP_ACT_CLOSE;
	r->nmsgs = s.nmsgs;
	if (c->cf == CF_TARPIT) /* one delay for each unknown user */
		cr_assert_eq(s.counts.unknown, r->delays, "%s", c->name);
	if (!r->closed && s.state != SMTP_S_DATA && !(s.flags & SMTP_F_DISCARD))
		cr_assert_null(s.line.p, "%s: line memory kept between lines", c->name);
	smtp_session_fini(&s);
}

static void result_free(struct result *r)
{
	buf_free(&r->out);
	buf_free(&r->bodies);
}

static void check_case(const struct tcase *c)
{
	struct result whole = {0}, r;
	size_t len = c->inlen ? c->inlen : strlen(c->in);
	char want[16384];
	int saved;

	snprintf(want, sizeof(want), "%s%s", c->pre ? "" : GREETING, c->want);
	log_threshold = LOG_DEBUG;
	saved = stderr_quiet();
	run(c, 0, SIZE_MAX, &whole);
	stderr_restore(saved);
	log_threshold = LOG_ERR;
	cr_assert_str_eq(buf_cstr(&whole.out), want, "%s (one piece): got\n%s\nwant\n%s", c->name,
	                 buf_cstr(&whole.out), want);
	cr_assert_eq(whole.closed, c->closed, "%s: closed %d", c->name, whole.closed);
	cr_assert_eq(whole.delays, c->delays, "%s: %u delays", c->name, whole.delays);
	cr_assert_eq(whole.clear, c->clear, "%s: STARTTLS after %zu bytes, want %zu", c->name,
	             whole.clear, c->clear);
	if (c->bodies)
		cr_assert_str_eq(buf_cstr(&whole.bodies), c->bodies, "%s: bodies", c->name);

	r = (struct result){0};
	run(c, 0, 1, &r);
	cr_assert_str_eq(buf_cstr(&r.out), want, "%s (byte by byte): got\n%s\nwant\n%s", c->name,
	                 buf_cstr(&r.out), want);
	cr_assert_str_eq(buf_cstr(&r.bodies), buf_cstr(&whole.bodies),
	                 "%s (byte by byte): bodies %zu %zu\n%s\nwant\n%s", c->name, r.bodies.len,
	                 whole.bodies.len, buf_cstr(&r.bodies), buf_cstr(&whole.bodies));
	cr_assert_eq(r.closed, c->closed);
	cr_assert_eq(r.delays, c->delays, "%s (byte by byte): %u delays", c->name, r.delays);
	cr_assert_eq(r.clear, c->clear, "%s (byte by byte): STARTTLS after %zu", c->name, r.clear);
	result_free(&r);

	for (size_t k = 1; k < len; k++) {
		r = (struct result){0};
		run(c, k, SIZE_MAX, &r);
		cr_assert_str_eq(buf_cstr(&r.out), want, "%s (split at %zu): got\n%s\nwant\n%s",
		                 c->name, k, buf_cstr(&r.out), want);
		cr_assert_str_eq(buf_cstr(&r.bodies), buf_cstr(&whole.bodies), "%s (split at %zu)",
		                 c->name, k);
		cr_assert_eq(r.closed, c->closed);
		cr_assert_eq(r.clear, c->clear, "%s (split at %zu): STARTTLS after %zu", c->name, k,
		             r.clear);
		result_free(&r);
	}
	result_free(&whole);
}

static void check_cases(const struct tcase *cs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		check_case(&cs[i]);
}

#define CHECK_CASES(cs) check_cases((cs), sizeof(cs) / sizeof((cs)[0]))

static void suite_fini(void)
{
	if (test_policy_ready)
		policy_fini(&test_policy);
	test_policy_ready = false;
	if (test_tables_ready) {
		recipients_unref(test_tables.recipients);
		policy_fini(&test_tables.domains);
	}
	test_tables_ready = false;
}

static void suite_init(void)
{
	log_threshold = LOG_ERR; /* check_case() turns every level on, quietly */
}

TestSuite(smtp_session, .init = suite_init, .fini = suite_fini);

/* ---- Commands outside a transaction ---- */

static const struct tcase basic_cases[] = {
    {"ehlo_quit", "EHLO client.example.org\r\nQUIT\r\n", .want = EHLO_R BYE, .closed = true},
    {"helo", "HELO client.example.org\r\n", .want = HELO_R},
    {"ehlo_no_size_limit", "EHLO c\r\n", .cf = CF_NOSIZE,
     .want = EHLO_HEAD "250-SIZE\r\n" EHLO_TAIL},
    {"ehlo_without_argument", "EHLO\r\nEHLO   \r\nHELO\r\n",
     .want = "501 5.5.4 Syntax: EHLO hostname\r\n501 5.5.4 Syntax: EHLO hostname\r\n"
             "501 5.5.4 Syntax: HELO hostname\r\n"},
    {"verbs_case_insensitive", "ehlo c\r\nNoOp\r\nhelo c\r\nquit\r\n", .want = EHLO_R OK HELO_R BYE,
     .closed = true},
    {"quit_stops_consuming", "QUIT\r\nNOOP\r\n", .want = BYE, .closed = true},
    {"quit_before_helo_with_args", "QUIT now\r\n", .want = BYE, .closed = true},
    {"noop_with_argument", "NOOP hello there\r\n", .want = OK},
    {"rset", "RSET\r\nRSET now\r\n", .want = OK "501 5.5.4 Syntax: RSET\r\n"},
    {"vrfy", "VRFY bob\r\nVRFY\r\n",
     .want = "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
             "501 5.5.4 Syntax: VRFY address\r\n"},
    {"expn", "EXPN staff\r\n", .want = "502 5.5.1 Command not implemented\r\n"},
    {"help", "HELP\r\n",
     .want = "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"},
    {"starttls_not_offered", "STARTTLS\r\n", .want = "454 4.7.0 TLS not available\r\n"},
    {"unknown_verbs", "FOO\r\nMAILX FROM:<a@b>\r\nEHL\r\n", .want = UNKNOWN UNKNOWN UNKNOWN},
    {"empty_lines", "\r\n   \r\n\n", .want = BADSYN BADSYN BADSYN},
    {"nul_in_line", BIN("NO\0OP\r\nNOOP\r\n"), .want = BADSYN OK},
    {"cr_inside_line", "NOOP\rRSET\r\nNOOP\r\r\n", .want = BADSYN BADSYN},
    {"bare_lf_ends_command_lines", "EHLO c\nNOOP\nQUIT\n", .want = EHLO_R OK BYE, .closed = true},
    {"pipelined_batch", "EHLO c\r\nNOOP\r\nRSET\r\nVRFY x\r\nHELP\r\nNOOP\r\n",
     .want = EHLO_R OK OK "252 2.5.2 Cannot VRFY user, but will accept message and attempt "
                          "delivery\r\n"
                          "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT "
                          "VRFY HELP\r\n" OK},
};

Test(smtp_session, commands_outside_transactions)
{
	CHECK_CASES(basic_cases);
}

/* ---- Sequence: the table's allowed states ---- */

static const struct tcase seq_cases[] = {
    {"mail_before_helo", "MAIL FROM:<a@example.org>\r\n", .want = SEQ_HELO},
    {"rcpt_before_helo", "RCPT TO:<b@example.com>\r\n", .want = SEQ_MAIL},
    {"rcpt_before_mail", "EHLO c\r\nRCPT TO:<b@example.com>\r\n", .want = EHLO_R SEQ_MAIL},
    {"data_before_mail", "EHLO c\r\nDATA\r\n", .want = EHLO_R SEQ_MAIL},
    {"data_before_helo", "DATA\r\n", .want = SEQ_MAIL},
    {"data_without_rcpt", "EHLO c\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n",
     .want = EHLO_R MAIL_OK NORCPT},
    {"data_with_argument", ENV "DATA now\r\n", .want = ENV_R "501 5.5.4 Syntax: DATA\r\n"},
    {"nested_mail", ENV "MAIL FROM:<c@example.org>\r\n", .want = ENV_R NESTED},
    {"nested_mail_before_rcpt", "EHLO c\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n",
     .want = EHLO_R MAIL_OK NESTED},
    {"ehlo_resets_transaction", ENV "EHLO again\r\nRCPT TO:<b@example.com>\r\n",
     .want = ENV_R EHLO_R SEQ_MAIL},
    {"helo_resets_transaction", ENV "HELO again\r\nDATA\r\nMAIL FROM:<>\r\n",
     .want = ENV_R HELO_R SEQ_MAIL MAIL_OK},
    {"rset_resets_transaction", ENV "RSET\r\nRCPT TO:<b@example.com>\r\nMAIL FROM:<>\r\n",
     .want = ENV_R OK SEQ_MAIL MAIL_OK},
    {"rset_before_helo_keeps_greet", "RSET\r\nMAIL FROM:<>\r\n", .want = OK SEQ_HELO},
    {"failed_rcpt_keeps_mail", "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n",
     .want = EHLO_R MAIL_OK DENIED("x@example.org") NORCPT},
};

Test(smtp_session, commands_out_of_sequence)
{
	CHECK_CASES(seq_cases);
}

/* ---- MAIL ---- */

#define L64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define D63 "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
/* 64 + 1 + 189 = 254 octets between the brackets: a 256-octet path. */
#define D189                                                                                       \
	D63 "." D63 "."                                                                            \
	    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"

static const struct tcase mail_cases[] = {
    {"null_sender", "EHLO c\r\nMAIL FROM:<>\r\n", .want = EHLO_R MAIL_OK},
    {"lowercase_verb_and_from", "EHLO c\r\nmail from:<a@example.org>\r\n", .want = EHLO_R MAIL_OK},
    {"space_after_colon", "EHLO c\r\nMAIL FROM: <a@example.org>\r\n", .want = EHLO_R MAIL_OK},
    {"missing_brackets", "EHLO c\r\nMAIL FROM:a@example.org\r\n", .want = EHLO_R MAILSYN},
    {"missing_from", "EHLO c\r\nMAIL <a@example.org>\r\nMAIL\r\nMAIL TO:<a@b.c>\r\n",
     .want = EHLO_R MAILSYN MAILSYN MAILSYN},
    {"no_at", "EHLO c\r\nMAIL FROM:<alice>\r\n", .want = EHLO_R BADFROM},
    {"unbalanced", "EHLO c\r\nMAIL FROM:<a@example.org\r\nMAIL FROM:<<a@example.org>\r\n",
     .want = EHLO_R BADFROM BADFROM},
    {"junk_after_bracket", "EHLO c\r\nMAIL FROM:<a@example.org>x\r\n", .want = EHLO_R BADFROM},
    {"space_inside", "EHLO c\r\nMAIL FROM:<a @example.org>\r\n", .want = EHLO_R BADFROM},
    {"control_char", "EHLO c\r\nMAIL FROM:<a\x01@example.org>\r\n", .want = EHLO_R BADFROM},
    {"empty_local_or_domain", "EHLO c\r\nMAIL FROM:<@example.org>\r\nMAIL FROM:<a@>\r\n",
     .want = EHLO_R BADFROM BADFROM},
    {"bad_domain", "EHLO c\r\nMAIL FROM:<a@exa..mple>\r\nMAIL FROM:<a@ex(a)>\r\n",
     .want = EHLO_R BADFROM BADFROM},
    {"quoted_local_part", "EHLO c\r\nMAIL FROM:<\"a b>@c\"@example.org>\r\n",
     .want = EHLO_R MAIL_OK},
    {"local_part_64", "EHLO c\r\nMAIL FROM:<" L64 "@example.org>\r\n", .want = EHLO_R MAIL_OK},
    {"local_part_65", "EHLO c\r\nMAIL FROM:<" L64 "a@example.org>\r\n", .want = EHLO_R BADFROM},
    {"path_256", "EHLO c\r\nMAIL FROM:<" L64 "@" D189 ">\r\n", .want = EHLO_R MAIL_OK},
    {"path_257", "EHLO c\r\nMAIL FROM:<" L64 "@" D189 "x>\r\n", .want = EHLO_R BADFROM},
    {"source_route_stripped", "EHLO c\r\nMAIL FROM:<@r1.example,@r2.example:a@example.org>\r\n",
     .want = EHLO_R MAIL_OK},
    {"bad_source_route",
     "EHLO c\r\nMAIL FROM:<@r1.example,a@example.org>\r\n"
     "MAIL FROM:<@:a@example.org>\r\n",
     .want = EHLO_R BADFROM BADFROM},
    {"address_literal", "EHLO c\r\nMAIL FROM:<a@[192.0.2.9]>\r\n", .want = EHLO_R MAIL_OK},
    {"size_param", "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=1000\r\n", .want = EHLO_R MAIL_OK},
    {"size_over_limit", "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=1001\r\n", .want = EHLO_R TOOBIG},
    {"size_huge", "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=999999999999999999999999\r\n",
     .want = EHLO_R TOOBIG},
    {"size_unlimited", "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=999999999\r\n", .cf = CF_NOSIZE,
     .want = EHLO_HEAD "250-SIZE\r\n" EHLO_TAIL MAIL_OK},
    {"size_not_digits",
     "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=12k\r\n"
     "MAIL FROM:<a@example.org> SIZE=\r\n",
     .want = EHLO_R "501 5.5.4 Bad message size syntax\r\n"
                    "501 5.5.4 Bad message size syntax\r\n"},
    {"body_params", "EHLO c\r\nMAIL FROM:<> BODY=8bitmime\r\nRSET\r\nMAIL FROM:<> body=7BIT\r\n",
     .want = EHLO_R MAIL_OK OK MAIL_OK},
    {"body_binarymime_refused", "EHLO c\r\nMAIL FROM:<> BODY=BINARYMIME\r\n",
     .want = EHLO_R "501 5.5.4 Unsupported BODY type\r\n"},
    {"several_params", "EHLO c\r\nMAIL FROM:<a@example.org>  SIZE=10 BODY=8BITMIME smtputf8\r\n",
     .want = EHLO_R MAIL_OK},
    {"unknown_param",
     "EHLO c\r\nMAIL FROM:<a@example.org> FOO=bar\r\n"
     "MAIL FROM:<a@example.org> SMTPUTF8=yes\r\n",
     .want = EHLO_R UNSUPP("FOO=bar") UNSUPP("SMTPUTF8=yes")},
    {"params_after_helo", "HELO c\r\nMAIL FROM:<a@example.org> SIZE=10\r\n",
     .want = HELO_R UNSUPP("SIZE=10")},
    {"non_ascii_needs_smtputf8",
     "EHLO c\r\nMAIL FROM:<j\xc3\xb6rg@example.org>\r\n"
     "MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n",
     .want = EHLO_R NONASCII MAIL_OK},
};

Test(smtp_session, mail_from)
{
	CHECK_CASES(mail_cases);
}

/* ---- RCPT ---- */

#define MENV   "EHLO c\r\nMAIL FROM:<a@example.org>\r\n"
#define MENV_R EHLO_R MAIL_OK

static const struct tcase rcpt_cases[] = {
    {"accepted_domains",
     MENV "RCPT TO:<b@example.com>\r\nRCPT TO:<c@EXAMPLE.Com>\r\n"
          "RCPT TO:<d@localhost>\r\nRCPT TO:<e@example.com.>\r\n",
     .want = MENV_R RCPT_OK RCPT_OK RCPT_OK RCPT_OK},
    {"relay_denied", MENV "RCPT TO:<x@example.org>\r\nRCPT TO:<x@sub.example.com>\r\n",
     .want = MENV_R DENIED("x@example.org") DENIED("x@sub.example.com")},
    {"relay_allowed_for_relay_client", MENV "RCPT TO:<x@example.org>\r\n", .relay = true,
     .want = MENV_R RCPT_OK},
    {"address_literal_relay_only", MENV "RCPT TO:<x@[192.0.2.1]>\r\n",
     .want = MENV_R DENIED("x@[192.0.2.1]")},
    {"address_literal_for_relay_client", MENV "RCPT TO:<x@[IPv6:2001:db8::1]>\r\n", .relay = true,
     .want = MENV_R RCPT_OK},
    {"postmaster_without_domain", MENV "RCPT TO:<postmaster>\r\nRCPT TO:<PostMaster>\r\n",
     .want = MENV_R RCPT_OK RCPT_OK},
    {"no_domain", MENV "RCPT TO:<bob>\r\n", .want = MENV_R BADRCPT},
    {"null_recipient", MENV "RCPT TO:<>\r\n", .want = MENV_R BADRCPT},
    {"missing_brackets", MENV "RCPT TO:b@example.com\r\nRCPT b@example.com\r\nRCPT\r\n",
     .want = MENV_R RCPTSYN RCPTSYN RCPTSYN},
    {"bad_syntax", MENV "RCPT TO:<b@example.com\r\nRCPT TO:<b\t@example.com>\r\n",
     .want = MENV_R BADRCPT BADRCPT},
    {"space_after_colon", MENV "RCPT TO: <b@example.com>\r\n", .want = MENV_R RCPT_OK},
    {"params_unsupported", MENV "RCPT TO:<b@example.com> NOTIFY=NEVER\r\n",
     .want = MENV_R UNSUPP("NOTIFY=NEVER")},
    {"source_route_refused", MENV "RCPT TO:<@relay.example.org:b@example.com>\r\n",
     .want = MENV_R DENIED("@relay.example.org:b@example.com")},
    {"source_route_for_relay_client", MENV "RCPT TO:<@relay.example.org:b@example.com>\r\n",
     .relay = true, .want = MENV_R RCPT_OK},
    /* Sender-specified routing through an accepted domain (Postfix's
     * allow_untrusted_routing = no): a next hop with the percent hack or
     * bang paths would relay these on. */
    {"percent_hack", MENV "RCPT TO:<user%other.example@example.com>\r\n",
     .want = MENV_R DENIED("user%other.example@example.com")},
    {"bang_path", MENV "RCPT TO:<other.example!user@example.com>\r\n",
     .want = MENV_R DENIED("other.example!user@example.com")},
    {"quoted_at", MENV "RCPT TO:<\"user@other.example\"@example.com>\r\n",
     .want = MENV_R DENIED("\"user@other.example\"@example.com")},
    {"quoted_percent", MENV "RCPT TO:<\"user%other.example\"@example.com>\r\n",
     .want = MENV_R DENIED("\"user%other.example\"@example.com")},
    {"quoted_escaped_at", MENV "RCPT TO:<\"user\\@other.example\"@example.com>\r\n",
     .want = MENV_R DENIED("\"user\\@other.example\"@example.com")},
    {"routing_case_and_trailing_dot",
     MENV "RCPT TO:<USER%Other.Example@EXAMPLE.Com.>\r\nRCPT TO:<a!b@localhost.>\r\n",
     .want = MENV_R DENIED("USER%Other.Example@EXAMPLE.Com.") DENIED("a!b@localhost.")},
    {"routing_then_plain_recipient",
     MENV "RCPT TO:<u%o@example.com>\r\nRCPT TO:<u@example.com>\r\n",
     .want = MENV_R DENIED("u%o@example.com") RCPT_OK},
    {"routing_for_relay_client",
     MENV "RCPT TO:<user%other.example@example.com>\r\nRCPT TO:<o!u@example.com>\r\n",
     .relay = true, .want = MENV_R RCPT_OK RCPT_OK},
    {"routing_allowed",
     MENV "RCPT TO:<user%other.example@example.com>\r\nRCPT TO:<o!u@example.com>\r\n"
          "RCPT TO:<\"u@o\"@example.com>\r\nRCPT TO:<@r.example:u@example.com>\r\n",
     .cf = CF_ROUTING, .want = MENV_R RCPT_OK RCPT_OK RCPT_OK RCPT_OK},
    {"routing_allowed_still_no_foreign_domain", MENV "RCPT TO:<u%example.com@other.example>\r\n",
     .cf = CF_ROUTING, .want = MENV_R DENIED("u%example.com@other.example")},
    {"special_local_parts_are_not_routes",
     MENV "RCPT TO:<a+tag@example.com>\r\nRCPT TO:<o'brien@example.com>\r\n"
          "RCPT TO:<\"a b\"@example.com>\r\nRCPT TO:<x=y#z@example.com>\r\n",
     .want = MENV_R RCPT_OK RCPT_OK RCPT_OK RCPT_OK},
    {"non_ascii", MENV "RCPT TO:<j\xc3\xb6rg@example.com>\r\n", .want = MENV_R NONASCII},
    {"non_ascii_with_smtputf8",
     "EHLO c\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\nRCPT TO:<j\xc3\xb6rg@example.com>\r\n",
     .want = MENV_R RCPT_OK},
    {"too_many_recipients",
     MENV "RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
          "RCPT TO:<c@example.com>\r\nDATA\r\n.\r\n",
     .cf = CF_RCPT2,
     .want = MENV_R RCPT_OK RCPT_OK "452 4.5.3 Error: too many recipients\r\n" GO QUEUED,
     .bodies = EOM},
};

Test(smtp_session, rcpt_to)
{
	CHECK_CASES(rcpt_cases);
}

#define UNKNOWN_USER(a)  "550 5.1.1 <" a ">: Recipient address rejected: User unknown\r\n"
#define TOO_MANY_UNKNOWN "421 4.7.0 " HOST " Error: too many unknown recipients\r\n"

static const struct tcase table_cases[] = {
    {"known_and_unknown",
     MENV "RCPT TO:<bob@example.com>\r\nRCPT TO:<eve@example.com>\r\n"
          "RCPT TO:<BOB@EXAMPLE.COM.>\r\nRCPT TO:<alice+news@example.com>\r\n"
          "RCPT TO:<\"q u\"@example.com>\r\n",
     .cf = CF_TABLES,
     .want = MENV_R RCPT_OK UNKNOWN_USER("eve@example.com") RCPT_OK RCPT_OK RCPT_OK},
    {"domain_without_table_takes_anyone", MENV "RCPT TO:<anyone@localhost>\r\n", .cf = CF_TABLES,
     .want = MENV_R RCPT_OK},
    {"relay_denied_before_the_table", MENV "RCPT TO:<x@elsewhere.example>\r\n", .cf = CF_TABLES,
     .want = MENV_R DENIED("x@elsewhere.example")},
    {"unknown_then_data_needs_a_valid_one",
     MENV "RCPT TO:<eve@example.com>\r\nDATA\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n.\r\n",
     .cf = CF_TABLES, .want = MENV_R UNKNOWN_USER("eve@example.com") NORCPT RCPT_OK GO QUEUED,
     .bodies = EOM},
    /* A dictionary attack: after 3 unknown users, the next RCPT gets 421. */
    {"dictionary_attack_brake",
     MENV "RCPT TO:<u1@example.com>\r\nRCPT TO:<u2@example.com>\r\n"
          "RCPT TO:<bob@example.com>\r\nRCPT TO:<u3@example.com>\r\n"
          "RCPT TO:<bob@example.com>\r\nNOOP\r\n",
     .cf = CF_TABLES,
     .want = MENV_R UNKNOWN_USER("u1@example.com") UNKNOWN_USER("u2@example.com")
         RCPT_OK UNKNOWN_USER("u3@example.com") TOO_MANY_UNKNOWN,
     .closed = true},
    /* The tarpit: each 550 5.1.1 raises SMTP_ACT_DELAY; the rest waits. */
    {"tarpit_delays_each_unknown",
     MENV "RCPT TO:<u1@example.com>\r\nRCPT TO:<bob@example.com>\r\n"
          "RCPT TO:<u2@example.com>\r\nNOOP\r\n",
     .cf = CF_TARPIT,
     .want = MENV_R UNKNOWN_USER("u1@example.com") RCPT_OK UNKNOWN_USER("u2@example.com") OK,
     .delays = 2},
};

Test(smtp_session, recipient_tables)
{
	CHECK_CASES(table_cases);
}

/* ---- DATA ---- */

static const struct tcase data_cases[] = {
    {"simple", ENV "DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n", .want = ENV_R GO QUEUED BYE,
     .closed = true, .bodies = "Subject: hi\r\n\r\nbody\r\n" EOM},
    {"empty_message", ENV "DATA\r\n.\r\n", .want = ENV_R GO QUEUED, .bodies = EOM},
    {"dot_stuffing", ENV "DATA\r\n..leading\r\n...\r\nmid.dle\r\n..\r\n.\r\n",
     .want = ENV_R GO QUEUED, .bodies = ".leading\r\n..\r\nmid.dle\r\n.\r\n" EOM},
    {"commands_inside_content", ENV "DATA\r\nQUIT\r\nRSET\r\n.\r\nNOOP\r\n",
     .want = ENV_R GO QUEUED OK, .bodies = "QUIT\r\nRSET\r\n" EOM},
    {"two_pipelined_messages",
     ENV "DATA\r\none\r\n.\r\nMAIL FROM:<>\r\n"
         "RCPT TO:<postmaster@example.com>\r\nDATA\r\ntwo\r\n.\r\n"
         "QUIT\r\n",
     .want = ENV_R GO QUEUED MAIL_OK RCPT_OK GO QUEUED BYE, .closed = true,
     .bodies = "one\r\n" EOM "two\r\n" EOM},
    {"helo_client", HENV "DATA\r\nx\r\n.\r\n", .want = HENV_R GO QUEUED, .bodies = "x\r\n" EOM},
    {"size_after_data",
     "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
     "0123456789\r\n0123456789\r\n.\r\nNOOP\r\nRCPT TO:<b@example.com>\r\n",
     .cf = CF_SMALL, .want = HELO_R MAIL_OK RCPT_OK GO TOOBIG OK SEQ_MAIL, .bodies = ""},
    {"size_exactly_limit",
     "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
     "012345678901234567\r\n.\r\n",
     .cf = CF_SMALL, .want = HELO_R MAIL_OK RCPT_OK GO QUEUED,
     .bodies = "012345678901234567\r\n" EOM},
    {"declared_size_then_content",
     "EHLO c\r\nMAIL FROM:<> SIZE=21\r\nMAIL FROM:<> SIZE=20\r\n"
     "RCPT TO:<b@example.com>\r\nDATA\r\n0123456789abcdefghijk\r\n"
     ".\r\n",
     .cf = CF_SMALL, .want = EHLO_R20 TOOBIG MAIL_OK RCPT_OK GO TOOBIG, .bodies = ""},
    {"long_line_rejected", ENV "DATA\r\n0123456789012345678901234567890123456789\r\n.\r\n",
     .cf = CF_LONGREJ,
     .want = ENV_R GO "550 5.6.0 Message contains a line longer than 20 "
                      "octets\r\n"},
    {"line_at_limit", ENV "DATA\r\n012345678901234567\r\n.\r\n", .cf = CF_LONGREJ,
     .want = ENV_R GO QUEUED, .bodies = "012345678901234567\r\n" EOM},
    {"eight_bit_content", ENV "DATA\r\n\xc3\xa9t\xc3\xa9\r\n.\r\n", .want = ENV_R GO QUEUED,
     .bodies = "\xc3\xa9t\xc3\xa9\r\n" EOM},
};

Test(smtp_session, data)
{
	CHECK_CASES(data_cases);
}

/* ---- SMTP smuggling (CVE-2023-51764/5/6): only CRLF.CRLF ends data ---- */

/* Each smuggles a second message after a fake end of data; the fake is
 * content, the whole is refused once, after the real end, and nothing of
 * the smuggled commands is answered. */
#define SMUGGLE(fake)                                                                              \
	ENV "DATA\r\nhello" fake "MAIL FROM:<evil@example.org>\r\n"                                \
	    "RCPT TO:<b@example.com>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n"

static const struct tcase smuggle_cases[] = {
    {"lf_dot_lf", SMUGGLE("\n.\n"), .want = ENV_R GO BARE OK, .bodies = ""},
    {"lf_dot_crlf", SMUGGLE("\n.\r\n"), .want = ENV_R GO BARE OK, .bodies = ""},
    {"crlf_dot_lf", SMUGGLE("\r\n.\n"), .want = ENV_R GO BARE OK, .bodies = ""},
    {"cr_dot_cr", SMUGGLE("\r.\r"), .want = ENV_R GO BARE OK, .bodies = ""},
    {"crlf_dot_cr", SMUGGLE("\r\n.\r"), .want = ENV_R GO BARE OK, .bodies = ""},
    {"cr_dot_crlf", SMUGGLE("\r.\r\n"), .want = ENV_R GO BARE OK, .bodies = ""},
    {"normalized_lf", ENV "DATA\r\na\nb\r\n.\r\n", .cf = CF_NORMALIZE, .want = ENV_R GO QUEUED,
     .bodies = "a\r\nb\r\n" EOM},
    {"normalized_lf_dot_lf", ENV "DATA\r\na\n.\nb\r\n.\r\n", .cf = CF_NORMALIZE,
     .want = ENV_R GO QUEUED, .bodies = "a\r\n.\r\nb\r\n" EOM},
    {"normalized_cr", ENV "DATA\r\na\rb\r\n.\r\n", .cf = CF_NORMALIZE, .want = ENV_R GO QUEUED,
     .bodies = "a\r\nb\r\n" EOM},
    {"rejected_then_next_message",
     ENV "DATA\r\nx\ny\r\n.\r\nMAIL FROM:<>\r\n"
         "RCPT TO:<b@example.com>\r\nDATA\r\nok\r\n.\r\n",
     .want = ENV_R GO BARE MAIL_OK RCPT_OK GO QUEUED, .bodies = "ok\r\n" EOM},
};

Test(smtp_session, data_bare_cr_lf_smuggling)
{
	CHECK_CASES(smuggle_cases);
}

/* ---- BDAT (RFC 3030) ---- */

/* NUL octets: refused (a next hop that drops them would read
 * "\r\n\0.\r\n" as the end of data), or with --nul strip dropped. */
#define NUL550 "550 5.6.0 Message contains NUL octets (RFC 5321 2.3.8)\r\n"
static const struct tcase nul_cases[] = {
    {"nul_in_data_refused", BIN(ENV "DATA\r\na\0b\r\n.\r\nNOOP\r\n"), .want = ENV_R GO NUL550 OK,
     .bodies = ""},
    {"nul_dot_is_not_the_end", BIN(ENV "DATA\r\nx\r\n\0.\r\nMAIL FROM:<>\r\n.\r\nNOOP\r\n"),
     .want = ENV_R GO NUL550 OK, .bodies = ""},
    {"nul_in_bdat_refused", BIN(ENV "BDAT 3\r\na\0bBDAT 2 LAST\r\ncd"),
     .want = ENV_R OCTETS(3) NUL550, .bodies = ""},
    {"nul_stripped", BIN(ENV "DATA\r\n\0a\0\0b\r\n\0.\r\n.\r\n"), .cf = CF_NULSTRIP,
     .want = ENV_R GO QUEUED, .bodies = "ab\r\n.\r\n" EOM},
    {"nul_stripped_in_bdat", BIN(ENV "BDAT 4 LAST\r\n\0a\0b"), .cf = CF_NULSTRIP,
     .want = ENV_R QUEUED, .bodies = "ab" EOM},
    {"nul_only_message_stripped", BIN(ENV "DATA\r\n\0\0\0\r\n.\r\n"), .cf = CF_NULSTRIP,
     .want = ENV_R GO QUEUED, .bodies = "\r\n" EOM},
};

/* Errors after the third are held (SMTP_ACT_DELAY), the last one too. */
static const struct tcase errdelay_cases[] = {
    {"errors_slowed_then_closed", "FOO\r\nFOO\r\nFOO\r\nNOOP\r\nFOO\r\nFOO\r\nFOO\r\nNOOP\r\n",
     .cf = CF_ERRDELAY,
     .want = UNKNOWN UNKNOWN UNKNOWN OK UNKNOWN UNKNOWN UNKNOWN "421 4.7.0 " HOST
                                                                " Error: too many errors\r\n",
     .closed = true, .delays = 3},
    {"three_errors_are_free", "FOO\r\nFOO\r\nFOO\r\nNOOP\r\n", .cf = CF_ERRDELAY,
     .want = UNKNOWN UNKNOWN UNKNOWN OK},
};

Test(smtp_session, error_delay)
{
	CHECK_CASES(errdelay_cases);
}

Test(smtp_session, nul_octets)
{
	CHECK_CASES(nul_cases);
}

static const struct tcase bdat_cases[] = {
    {"two_chunks", ENV "BDAT 5\r\nhelloBDAT 0 LAST\r\n", .want = ENV_R OCTETS(5) QUEUED,
     .bodies = "hello" EOM},
    {"single_last_chunk", ENV "BDAT 8 LAST\r\nhi\r\nyo\r\nQUIT\r\n", .want = ENV_R QUEUED BYE,
     .closed = true, .bodies = "hi\r\nyo\r\n" EOM},
    {"last_case_insensitive", ENV "BDAT 2 last\r\nab", .want = ENV_R QUEUED, .bodies = "ab" EOM},
    {"chunk_holds_commands_and_dots", ENV "BDAT 13\r\nQUIT\r\n.\r\n..\r\nBDAT 0 LAST\r\n",
     .want = ENV_R OCTETS(13) QUEUED, .bodies = "QUIT\r\n.\r\n..\r\n" EOM},
    {"empty_message", ENV "BDAT 0 LAST\r\n", .want = ENV_R QUEUED, .bodies = EOM},
    {"crlf_across_chunks", ENV "BDAT 3\r\nab\rBDAT 5 LAST\r\n\ncd\r\n",
     .want = ENV_R OCTETS(3) QUEUED, .bodies = "ab\r\ncd\r\n" EOM},
    {"bare_lf_rejected", ENV "BDAT 4\r\na\nb\nBDAT 0 LAST\r\nNOOP\r\n",
     .want = ENV_R OCTETS(4) BARE OK, .bodies = ""},
    {"bare_cr_last_octet", ENV "BDAT 2 LAST\r\na\r", .want = ENV_R BARE, .bodies = ""},
    {"bare_cr_at_chunk_boundary", ENV "BDAT 2\r\na\rBDAT 3 LAST\r\nb\r\n",
     .want = ENV_R OCTETS(2) BARE, .bodies = ""},
    {"normalized", ENV "BDAT 4\r\na\nb\rBDAT 3 LAST\r\nc\rd", .cf = CF_NORMALIZE,
     .want = ENV_R OCTETS(4) QUEUED, .bodies = "a\r\nb\r\nc\r\nd" EOM},
    {"normalized_cr_last_octet", ENV "BDAT 2 LAST\r\na\r", .cf = CF_NORMALIZE, .want = ENV_R QUEUED,
     .bodies = "a\r\n" EOM},
    {"without_recipient", "EHLO c\r\nMAIL FROM:<>\r\nBDAT 4\r\nabcdBDAT 3 LAST\r\nxyzNOOP\r\n",
     .want = EHLO_R MAIL_OK NORCPT NORCPT OK},
    {"before_mail", "EHLO c\r\nBDAT 10 LAST\r\nNOOP\r\nNOOPNOOP\r\n", .want = EHLO_R SEQ_MAIL OK},
    {"before_helo", "BDAT 4\r\nQUITQUIT\r\n", .want = SEQ_MAIL BYE, .closed = true},
    {"bad_syntax",
     "EHLO c\r\nBDAT\r\nBDAT x\r\nBDAT 5 LASTX\r\nBDAT 5 LAST now\r\n"
     "BDAT 123456789012345678901\r\nBDAT -1\r\nBDAT 5x\r\n",
     .want = EHLO_R BDATSYN BDATSYN BDATSYN BDATSYN BDATSYN BDATSYN BDATSYN},
    {"data_after_bdat", ENV "BDAT 2\r\nabDATA\r\nBDAT 0 LAST\r\n",
     .want = ENV_R OCTETS(2) E503("DATA after BDAT") QUEUED, .bodies = "ab" EOM},
    {"over_size_limit",
     HENV "BDAT 15\r\n0123456789abcdeBDAT 10\r\n0123456789"
          "BDAT 1 LAST\r\nxRCPT TO:<b@example.com>\r\n",
     .cf = CF_SMALL, .want = HENV_R OCTETS(15) TOOBIG TOOBIG SEQ_MAIL, .bodies = ""},
    {"at_size_limit", HENV "BDAT 15\r\n0123456789abcdeBDAT 5 LAST\r\n01234", .cf = CF_SMALL,
     .want = HENV_R OCTETS(15) QUEUED, .bodies = "0123456789abcde01234" EOM},
    {"pipelined_after_last",
     ENV "BDAT 1 LAST\r\nxMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\n"
         "BDAT 1 LAST\r\ny",
     .want = ENV_R QUEUED MAIL_OK RCPT_OK QUEUED, .bodies = "x" EOM "y" EOM},
};

Test(smtp_session, bdat_chunking)
{
	CHECK_CASES(bdat_cases);
}

/* ---- Limits: command line length, errors; the greeting ---- */

static char line512[600], line513[600], line512lf[600], longline[6000], line513x3[2000];

static void make_lines(void)
{
	/* "NOOP " + x... + CRLF: 512 octets, then 513; and 512 with a bare LF. */
	snprintf(line512, sizeof(line512), "NOOP %0505d\r\nNOOP\r\n", 0);
	snprintf(line513, sizeof(line513), "NOOP %0506d\r\nNOOP\r\n", 0);
	snprintf(line512lf, sizeof(line512lf), "NOOP %0506d\nNOOP\r\n", 0);
	snprintf(line513x3, sizeof(line513x3), "NOOP %0506d\r\nNOOP %0507d\nFOO %0507d\r\nNOOP\r\n",
	         0, 0, 0);
	memset(longline, 'x', sizeof(longline));
	memcpy(longline + sizeof(longline) - 14, "\r\nQUIT\r\n", 9);
}

Test(smtp_session, command_line_limit)
{
	make_lines();
	cr_assert_eq(strlen(line512), 512 + 6);
	cr_assert_eq(strlen(line513), 513 + 6);
	cr_assert_eq(strlen(line512lf), 512 + 6);
	const struct tcase cases[] = {
	    {"line_512", line512, .want = OK OK},
	    {"line_513", line513, .want = TOOLONG OK},
	    {"line_512_bare_lf", line512lf, .want = OK OK},
	    {"line_5988", longline, .want = TOOLONG BYE, .closed = true},
	    {"long_lines_count_as_errors", line513x3, .cf = CF_ERRS3,
	     .want = TOOLONG TOOLONG TOOLONG "421 4.7.0 " HOST " Error: too many errors\r\n",
	     .closed = true},
	};

	CHECK_CASES(cases);
}

static const struct tcase error_cases[] = {
    {"error_limit", "FOO\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x>\r\nNOOP\r\n", .cf = CF_ERRS3,
     .want = UNKNOWN SEQ_HELO SEQ_MAIL "421 4.7.0 " HOST " Error: too many errors\r\n",
     .closed = true},
    {"error_limit_by_relay_denial",
     MENV "RCPT TO:<a@x.org>\r\nRCPT TO:<b@x.org>\r\n"
          "RCPT TO:<c@x.org>\r\nRCPT TO:<d@x.org>\r\n",
     .cf = CF_ERRS3,
     .want = MENV_R DENIED("a@x.org") DENIED("b@x.org")
         DENIED("c@x.org") "421 4.7.0 " HOST " Error: too many errors\r\n",
     .closed = true},
    {"too_many_recipients_not_counted",
     MENV "RCPT TO:<a@example.com>\r\n"
          "RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
          "RCPT TO:<d@example.com>\r\nFOO\r\nNOOP\r\n",
     .cf = CF_ERRS3,
     .want = MENV_R RCPT_OK "452 4.5.3 Error: too many recipients\r\n"
                            "452 4.5.3 Error: too many recipients\r\n"
                            "452 4.5.3 Error: too many recipients\r\n" UNKNOWN OK},
    {"content_rejections_not_counted", ENV "DATA\r\na\nb\r\n.\r\nFOO\r\nFOO\r\nMAIL FROM:<>\r\n",
     .cf = CF_ERRS3, .want = ENV_R GO BARE UNKNOWN UNKNOWN MAIL_OK, .bodies = ""},
};

Test(smtp_session, error_limit)
{
	CHECK_CASES(error_cases);
}

static const struct tcase pregreet_cases[] = {
    {"pregreet", "EHLO c\r\nMAIL FROM:<a@example.org>\r\nFOO\r\n\r\nQUIT\r\n", .pre = "EHLO c\r\n",
     .want = "554 5.7.1 " HOST
             " Protocol error: talked before greeting\r\n" PREGREET PREGREET PREGREET BADSYN BYE,
     .closed = true},
    {"pregreet_bdat_consumed", "BDAT 4\r\nQUITBDAT x\r\nQUIT\r\n", .pre = "x",
     .want = "554 5.7.1 " HOST " Protocol error: talked before greeting\r\n" PREGREET PREGREET BYE,
     .closed = true},
    {"pregreet_error_limit", "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n", .pre = "\r\n", .cf = CF_ERRS3,
     .want =
         "554 5.7.1 " HOST " Protocol error: talked before greeting\r\n" PREGREET PREGREET PREGREET
         "421 4.7.0 " HOST " Error: too many errors\r\n",
     .closed = true},
};

Test(smtp_session, pregreet)
{
	CHECK_CASES(pregreet_cases);
}

/* ---- STARTTLS (RFC 3207) ---- */

#define CLEAR(lit) .clear = sizeof(lit) - 1
#define EHLO_TLS   "EHLO c\r\nSTARTTLS\r\n"
#define MAIL_A     "MAIL FROM:<a@example.org>\r\n"

static const struct tcase starttls_cases[] = {
    {"ehlo_offers_starttls", "EHLO c\r\n", .cf = CF_TLS, .want = EHLO_RT},
    {"starttls_then_ehlo_again", EHLO_TLS, .cf = CF_TLS, CLEAR(EHLO_TLS),
     .tls_in = MAIL_A "EHLO c\r\n" MAIL_A, .want = EHLO_RT READY SEQ_HELO EHLO_R MAIL_OK},
    /* CVE-2011-0411: commands pipelined behind STARTTLS in clear are
     * never executed, whatever the split. */
    {"starttls_drops_pipelined_cleartext",
     EHLO_TLS MAIL_A "RCPT TO:<b@example.com>\r\nDATA\r\nx\r\n.\r\n", .cf = CF_TLS, CLEAR(EHLO_TLS),
     .tls_in = "EHLO c\r\nRCPT TO:<b@example.com>\r\n", .want = EHLO_RT READY EHLO_R SEQ_MAIL,
     .bodies = ""},
    {"starttls_drops_partial_line", EHLO_TLS "MAIL FR", .cf = CF_TLS, CLEAR(EHLO_TLS),
     .tls_in = "EHLO c\r\n", .want = EHLO_RT READY EHLO_R},
    {"starttls_second_time", EHLO_TLS, .cf = CF_TLS, CLEAR(EHLO_TLS),
     .tls_in = "EHLO c\r\nSTARTTLS\r\nNOOP\r\n", .want = EHLO_RT READY EHLO_R TLS_ON OK},
    {"starttls_before_ehlo", "starttls\r\n", .cf = CF_TLS, CLEAR("starttls\r\n"),
     .tls_in = "EHLO c\r\n", .want = READY EHLO_R},
    {"starttls_after_helo", "HELO c\r\nSTARTTLS\r\n", .cf = CF_TLS, CLEAR("HELO c\r\nSTARTTLS\r\n"),
     .tls_in = MAIL_A "HELO c\r\n" MAIL_A, .want = HELO_R READY SEQ_HELO HELO_R MAIL_OK},
    {"starttls_after_a_message", ENV "DATA\r\nx\r\n.\r\nSTARTTLS\r\n", .cf = CF_TLS,
     CLEAR(ENV "DATA\r\nx\r\n.\r\nSTARTTLS\r\n"), .tls_in = "EHLO c\r\n",
     .want = EHLO_RT MAIL_OK RCPT_OK GO QUEUED READY EHLO_R, .bodies = "x\r\n" EOM},
    {"starttls_with_argument", "EHLO c\r\nSTARTTLS now\r\nNOOP\r\n", .cf = CF_TLS,
     .want = EHLO_RT "501 5.5.4 Syntax: STARTTLS\r\n" OK},
    {"starttls_in_transaction", "EHLO c\r\n" MAIL_A "STARTTLS\r\nRCPT TO:<b@example.com>\r\n",
     .cf = CF_TLS, .want = EHLO_RT MAIL_OK TLS_INTX RCPT_OK},
    {"starttls_after_rcpt", "EHLO c\r\n" MAIL_A "RCPT TO:<b@example.com>\r\nSTARTTLS\r\n",
     .cf = CF_TLS, .want = EHLO_RT MAIL_OK RCPT_OK TLS_INTX},
    {"starttls_between_bdat_chunks",
     "EHLO c\r\n" MAIL_A "RCPT TO:<b@example.com>\r\nBDAT 3\r\nabcSTARTTLS\r\n", .cf = CF_TLS,
     .want = EHLO_RT MAIL_OK RCPT_OK OCTETS(3) TLS_INTX},
    {"starttls_unavailable_not_offered", "EHLO c\r\nSTARTTLS\r\nNOOP\r\n", .want = EHLO_R NOTLS OK},
    {"starttls_after_pregreet", "STARTTLS\r\n", .pre = "EHLO early\r\n", .cf = CF_TLS,
     .want = "554 5.7.1 " HOST " Protocol error: talked before greeting\r\n" PREGREET},
};

Test(smtp_session, starttls)
{
	CHECK_CASES(starttls_cases);
}

/* ---- Direct checks of the interface ---- */

struct fixture {
	struct smtp_server_conf cf;
	struct smtp_peer peer;
	struct smtp_session s;
};

static void fixture_start(struct fixture *f, enum cfv v, bool relay, const char *in)
{
	size_t len = strlen(in);

	conf_for(v, &f->cf);
	peer_for(relay, &f->peer);
	smtp_session_init(&f->s, &f->cf, &f->peer);
	smtp_session_greet(&f->s);
	cr_assert_eq(smtp_session_feed(&f->s, in, len), len);
}

static const char *out_since(struct smtp_session *s, size_t from)
{
	return buf_cstr(&s->out) + from;
}

Test(smtp_session, session_stays_small)
{
	cr_assert_lt(sizeof(struct smtp_session), 1024, "sizeof %zu", sizeof(struct smtp_session));
}

Test(smtp_session, envelope_is_stored)
{
	struct fixture f;
	size_t it = 0;

	fixture_start(&f, CF_DEFAULT, false,
	              "EHLO  client.example.org \r\n"
	              "MAIL FROM:<@r1.example,@r2.example:a@example.org> SIZE=100 BODY=8BITMIME "
	              "SMTPUTF8\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<Postmaster>\r\n"
	              "RCPT TO:<x@example.org>\r\n");
	cr_assert_str_eq(f.s.helo, "client.example.org");
	cr_assert(f.s.flags & SMTP_F_ESMTP);
	cr_assert_str_eq(buf_cstr(&f.s.tx.from), "a@example.org");
	cr_assert_eq(f.s.tx.size_decl, 100);
	cr_assert(f.s.tx.body_8bit);
	cr_assert(f.s.tx.smtputf8);
	cr_assert_eq(f.s.tx.nrcpt, 2);
	cr_assert_str_eq(smtp_tx_rcpt_next(&f.s.tx, &it), "b@example.com");
	cr_assert_str_eq(smtp_tx_rcpt_next(&f.s.tx, &it), "Postmaster");
	cr_assert_null(smtp_tx_rcpt_next(&f.s.tx, &it));
	cr_assert_eq(f.s.state, SMTP_S_RCPT);
	cr_assert(smtp_session_in_tx(&f.s));
	cr_assert_eq(f.s.nerrors, 1);
	smtp_session_fini(&f.s);
}

Test(smtp_session, helo_is_truncated)
{
	struct fixture f;
	char in[400];

	memcpy(in, "HELO ", 5);
	memset(in + 5, 'h', 300);
	memcpy(in + 305, "\r\n", 3);
	fixture_start(&f, CF_DEFAULT, false, in);
	cr_assert_eq(strlen(f.s.helo), sizeof(f.s.helo) - 1);
	cr_assert_eq(f.s.flags & SMTP_F_ESMTP, 0);
	smtp_session_fini(&f.s);
}

Test(smtp_session, null_sender_is_empty)
{
	struct fixture f;

	fixture_start(&f, CF_DEFAULT, false, "EHLO c\r\nMAIL FROM:<>\r\n");
	cr_assert_str_eq(buf_cstr(&f.s.tx.from), "");
	cr_assert_eq(f.s.state, SMTP_S_MAIL);
	smtp_session_fini(&f.s);
}

Test(smtp_session, spool_results)
{
	static const struct {
		int err;
		const char *want;
	} results[] = {
	    {0, "250 2.0.0 Ok: queued as 4AbC\r\n"},
	    {-ENOSPC, "452 4.3.1 Insufficient system storage\r\n"},
	    {-EDQUOT, "452 4.3.1 Insufficient system storage\r\n"},
	    {-EIO, "451 4.3.0 Error: queue file write error\r\n"},
	};

	for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
		struct fixture f;
		const char *in = ENV "DATA\r\nx\r\n.\r\nNOOP\r\n";
		size_t len = strlen(in), n, mark;
		char want[128];

		conf_for(CF_DEFAULT, &f.cf);
		peer_for(false, &f.peer);
		smtp_session_init(&f.s, &f.cf, &f.peer);
		smtp_session_greet(&f.s);
		n = smtp_session_feed(&f.s, in, len);
		cr_assert_eq(n, len - 6, "stops right after the terminator");
		cr_assert_eq(f.s.act, SMTP_ACT_MSG_READY);
		cr_assert_eq(f.s.state, SMTP_S_SPOOL);
		cr_assert_eq(smtp_session_feed(&f.s, in + n, len - n), 0);
		mark = f.s.out.len;
		smtp_session_msg_result(&f.s, results[i].err, "4AbC");
		cr_assert_str_eq(out_since(&f.s, mark), results[i].want);
		cr_assert_eq(f.s.state, SMTP_S_READY);
		cr_assert_eq(f.s.nmsgs, results[i].err == 0 ? 1u : 0u);
		cr_assert_eq(f.s.tx.nrcpt, 0);
		cr_assert_eq(f.s.tx.body.len, 0);
		cr_assert_not(smtp_session_in_tx(&f.s));
		cr_assert_eq(smtp_session_feed(&f.s, in + n, len - n), len - n);
		snprintf(want, sizeof(want), "%s%s", results[i].want, OK);
		cr_assert_str_eq(out_since(&f.s, mark), want);
		cr_assert_eq(f.s.nerrors, 0);
		smtp_session_fini(&f.s);
	}
}

Test(smtp_session, goodbyes)
{
	static const struct {
		void (*fn)(struct smtp_session *);
		const char *want;
	} byes[] = {
	    {smtp_session_timeout, "421 4.4.2 " HOST " Error: timeout exceeded\r\n"},
	    {smtp_session_shutdown, "421 4.3.2 " HOST " Service shutting down\r\n"},
	};

	for (size_t i = 0; i < sizeof(byes) / sizeof(byes[0]); i++) {
		struct fixture f;
		size_t mark;

		fixture_start(&f, CF_DEFAULT, false, ENV);
		mark = f.s.out.len;
		byes[i].fn(&f.s);
		cr_assert_str_eq(out_since(&f.s, mark), byes[i].want);
		cr_assert_eq(f.s.state, SMTP_S_CLOSED);
		cr_assert(f.s.act & SMTP_ACT_CLOSE);
		/* Once closed: no more replies, nothing consumed. */
		byes[i].fn(&f.s);
		cr_assert_eq(smtp_session_feed(&f.s, "NOOP\r\n", 6), 0);
		cr_assert_str_eq(out_since(&f.s, mark), byes[i].want);
		smtp_session_fini(&f.s);
	}
}

Test(smtp_session, busy_instead_of_greeting)
{
	struct smtp_server_conf cf;
	struct smtp_peer peer;
	struct smtp_session s;

	conf_for(CF_DEFAULT, &cf);
	peer_for(false, &peer);
	smtp_session_init(&s, &cf, &peer);
	cr_assert_null(s.out.p, "no allocation before bytes arrive");
	smtp_session_busy(&s);
	cr_assert_str_eq(buf_cstr(&s.out),
	                 "421 4.3.2 " HOST " Too many connections, try again later\r\n");
	cr_assert(s.act & SMTP_ACT_CLOSE);
	smtp_session_greet(&s);
	cr_assert_eq(smtp_session_feed(&s, "EHLO c\r\n", 8), 0);
	smtp_session_fini(&s);
}

Test(smtp_session, in_tx_during_bdat)
{
	struct fixture f;

	fixture_start(&f, CF_DEFAULT, false, "EHLO c\r\nBDAT 10\r\nabc");
	cr_assert(smtp_session_in_tx(&f.s), "mid-chunk");
	cr_assert_eq(smtp_session_feed(&f.s, "defghij", 7), 7);
	cr_assert_not(smtp_session_in_tx(&f.s));
	cr_assert_str_eq(out_since(&f.s, strlen(GREETING)), EHLO_R SEQ_MAIL);
	smtp_session_fini(&f.s);
}

Test(smtp_session, body_memory_kept_across_transactions)
{
	struct fixture f;
	char in[200];

	snprintf(in, sizeof(in), "%s", ENV "DATA\r\nhello\r\n.\r\n");
	conf_for(CF_DEFAULT, &f.cf);
	peer_for(false, &f.peer);
	smtp_session_init(&f.s, &f.cf, &f.peer);
	smtp_session_greet(&f.s);
	smtp_session_feed(&f.s, in, strlen(in));
	cr_assert_str_eq(buf_cstr(&f.s.tx.body), "hello\r\n");
	smtp_session_msg_result(&f.s, 0, "Q");
	cr_assert_not_null(f.s.tx.body.p, "small body memory is kept for reuse");
	cr_assert_eq(f.s.tx.body.len, 0);
	smtp_session_fini(&f.s);
}

/* Wed, 25 Nov 2026 08:44:45 +0000 */
#define NOW ((time_t)1795596285)

Test(smtp_session, received_header)
{
	static const struct {
		const char *in;
		bool relay;
		const char *addr;
		const char *want;
	} cases[] = {
	    {ENV, false, "192.0.2.1",
	     "Received: from client.example.org ([192.0.2.1])\r\n"
	     "\tby " HOST " (ringmx) with ESMTP id QID1\r\n"
	     "\tfor <b@example.com>; Wed, 25 Nov 2026 08:44:45 +0000\r\n"},
	    {HENV "RCPT TO:<c@example.com>\r\n", false, "2001:db8::1",
	     "Received: from client.example.org ([IPv6:2001:db8::1])\r\n"
	     "\tby " HOST " (ringmx) with SMTP id QID1;\r\n"
	     "\tWed, 25 Nov 2026 08:44:45 +0000\r\n"},
	    {"EHLO h\r\nMAIL FROM:<> SMTPUTF8\r\nRCPT TO:<p\xc3\xa9@example.com>\r\n", true,
	     "198.51.100.7",
	     "Received: from h ([198.51.100.7])\r\n"
	     "\tby " HOST " (ringmx) with UTF8SMTP id QID1\r\n"
	     "\tfor <p\xc3\xa9@example.com>; Wed, 25 Nov 2026 08:44:45 +0000\r\n"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture f;
		struct buf b = BUF_INIT;

		conf_for(CF_DEFAULT, &f.cf);
		peer_for(cases[i].relay, &f.peer);
		strcpy(f.peer.addr, cases[i].addr);
		smtp_session_init(&f.s, &f.cf, &f.peer);
		smtp_session_greet(&f.s);
		smtp_session_feed(&f.s, cases[i].in, strlen(cases[i].in));
		cr_assert_eq(smtp_session_received(&f.s, &b, "QID1", NOW), 0);
		cr_assert_str_eq(buf_cstr(&b), cases[i].want, "case %zu: got\n%s", i, buf_cstr(&b));
		buf_free(&b);
		smtp_session_fini(&f.s);
	}
}

Test(smtp_session, received_header_single_digit_day)
{
	struct fixture f;
	struct buf b = BUF_INIT;

	fixture_start(&f, CF_DEFAULT, false, ENV);
	/* Thu, 1 Jan 1970 00:00:00 */
	cr_assert_eq(smtp_session_received(&f.s, &b, "Q", 0), 0);
	cr_assert(strstr(buf_cstr(&b), "; Thu, 1 Jan 1970 00:00:00 +0000\r\n"), "%s", buf_cstr(&b));
	buf_free(&b);
	smtp_session_fini(&f.s);
}

/* ---- TLS, directly ---- */

Test(smtp_session, starttls_stops_right_after_its_line)
{
	struct fixture f;
	const char *in = "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@example.org>\r\n";
	size_t n;

	conf_for(CF_TLS, &f.cf);
	peer_for(false, &f.peer);
	smtp_session_init(&f.s, &f.cf, &f.peer);
	smtp_session_greet(&f.s);
	n = smtp_session_feed(&f.s, in, strlen(in));
	cr_assert_eq(n, strlen("EHLO c\r\nSTARTTLS\r\n"));
	cr_assert_eq(f.s.act, SMTP_ACT_STARTTLS);
	cr_assert_str_eq(out_since(&f.s, strlen(GREETING)), EHLO_RT READY);
	cr_assert_eq(smtp_session_feed(&f.s, in + n, strlen(in) - n), 0);
	cr_assert_eq(f.s.state, SMTP_S_READY, "nothing forgotten before the handshake");
	cr_assert_str_eq(f.s.helo, "c");

	smtp_session_tls_started(&f.s, TLS_VER, TLS_CIPH);
	cr_assert_eq(f.s.act, 0);
	cr_assert_eq(f.s.state, SMTP_S_GREET);
	cr_assert_str_eq(f.s.helo, "");
	cr_assert_eq(f.s.flags & SMTP_F_ESMTP, 0);
	cr_assert(f.s.flags & SMTP_F_TLS);
	cr_assert_str_eq(f.s.tls_version, TLS_VER);
	cr_assert_str_eq(f.s.tls_cipher, TLS_CIPH);
	cr_assert_null(f.s.line.p);
	smtp_session_fini(&f.s);
}

Test(smtp_session, implicit_tls_greets_without_starttls)
{
	struct fixture f;
	const char *in = "EHLO c\r\nSTARTTLS\r\n" MAIL_A;

	conf_for(CF_TLS, &f.cf);
	peer_for(false, &f.peer);
	smtp_session_init(&f.s, &f.cf, &f.peer);
	smtp_session_tls_started(&f.s, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256");
	cr_assert_eq(f.s.state, SMTP_S_INIT, "greeting still to come");
	cr_assert_eq(f.s.out.len, 0);
	smtp_session_greet(&f.s);
	cr_assert_eq(smtp_session_feed(&f.s, in, strlen(in)), strlen(in));
	cr_assert_str_eq(buf_cstr(&f.s.out), GREETING EHLO_R TLS_ON MAIL_OK);
	cr_assert_eq(f.s.act, 0);
	smtp_session_fini(&f.s);
}

Test(smtp_session, tls_strings_are_cleaned_and_truncated)
{
	struct fixture f;
	char longc[200];

	memset(longc, 'C', sizeof(longc) - 1);
	longc[sizeof(longc) - 1] = '\0';
	conf_for(CF_TLS, &f.cf);
	peer_for(false, &f.peer);
	smtp_session_init(&f.s, &f.cf, &f.peer);
	smtp_session_tls_started(&f.s, "TLS v1.3)\r\n\tX-Evil: (1)\\", longc);
	cr_assert_str_eq(f.s.tls_version, "TLSv1.3X-Evil:1"); /* 15 of 16 */
	cr_assert_eq(strlen(f.s.tls_cipher), sizeof(f.s.tls_cipher) - 1);
	smtp_session_tls_started(&f.s, NULL, NULL);
	cr_assert_str_eq(f.s.tls_version, "");
	cr_assert_str_eq(f.s.tls_cipher, "");
	smtp_session_fini(&f.s);
}

Test(smtp_session, tls_started_ignored_once_closed)
{
	struct fixture f;

	fixture_start(&f, CF_TLS, false, "QUIT\r\n");
	smtp_session_tls_started(&f.s, TLS_VER, TLS_CIPH);
	cr_assert_eq(f.s.flags & SMTP_F_TLS, 0);
	cr_assert_eq(f.s.state, SMTP_S_CLOSED);
	smtp_session_fini(&f.s);
}

Test(smtp_session, received_header_with_tls)
{
	static const struct {
		const char *in;
		const char *want;
	} cases[] = {
	    {ENV, "Received: from client.example.org ([192.0.2.1])\r\n"
	          "\t(using " TLS_VER " with cipher " TLS_CIPH ")\r\n"
	          "\tby " HOST " (ringmx) with ESMTPS id QID1\r\n"
	          "\tfor <b@example.com>; Wed, 25 Nov 2026 08:44:45 +0000\r\n"},
	    {"EHLO h\r\nMAIL FROM:<> SMTPUTF8\r\nRCPT TO:<b@example.com>\r\n",
	     "Received: from h ([192.0.2.1])\r\n"
	     "\t(using " TLS_VER " with cipher " TLS_CIPH ")\r\n"
	     "\tby " HOST " (ringmx) with UTF8SMTPS id QID1\r\n"
	     "\tfor <b@example.com>; Wed, 25 Nov 2026 08:44:45 +0000\r\n"},
	    /* No registered keyword for HELO under TLS: SMTP, and the comment. */
	    {HENV, "Received: from client.example.org ([192.0.2.1])\r\n"
	           "\t(using " TLS_VER " with cipher " TLS_CIPH ")\r\n"
	           "\tby " HOST " (ringmx) with SMTP id QID1\r\n"
	           "\tfor <b@example.com>; Wed, 25 Nov 2026 08:44:45 +0000\r\n"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture f;
		struct buf b = BUF_INIT;

		conf_for(CF_TLS, &f.cf);
		peer_for(false, &f.peer);
		smtp_session_init(&f.s, &f.cf, &f.peer);
		smtp_session_greet(&f.s);
		cr_assert_eq(smtp_session_feed(&f.s, "STARTTLS\r\n", 10), 10);
		cr_assert(f.s.act & SMTP_ACT_STARTTLS);
		smtp_session_tls_started(&f.s, TLS_VER, TLS_CIPH);
		smtp_session_feed(&f.s, cases[i].in, strlen(cases[i].in));
		cr_assert_eq(f.s.state, SMTP_S_RCPT);
		cr_assert_eq(smtp_session_received(&f.s, &b, "QID1", NOW), 0);
		cr_assert_str_eq(buf_cstr(&b), cases[i].want, "case %zu: got\n%s", i, buf_cstr(&b));
		buf_free(&b);
		smtp_session_fini(&f.s);
	}
}

/* struct smtp_stats: one final reply counted per command, by class; the
 * 250 after the content under DATA beside its 354; refusals by reason. */
Test(smtp_session, stats_count_replies_and_refusals)
{
	struct smtp_server_conf cf;
	struct smtp_session s;
	struct smtp_stats st = {0};
	static const char in[] = "EHLO client.example.org\r\n"
	                         "MAIL FROM:<a@example.org>\r\n"
	                         "RCPT TO:<x@elsewhere.test>\r\n"
	                         "RCPT TO:<b@example.com>\r\n"
	                         "DATA\r\nhello\r\n.\r\n";
	static const char more[] = "MAIL FROM:<a@example.org> SIZE=5000\r\nFOO\r\nQUIT\r\n";
	size_t n;

	conf_for(CF_DEFAULT, &cf);
	smtp_session_init(&s, &cf, &(struct smtp_peer){.addr = "192.0.2.1"});
	s.stats = &st;
	smtp_session_greet(&s);
	n = smtp_session_feed(&s, in, sizeof(in) - 1);
	cr_assert_eq(n, sizeof(in) - 1);
	cr_assert(s.act & SMTP_ACT_MSG_READY);
	smtp_session_msg_result(&s, 0, "QID1");
	cr_assert_eq(smtp_session_feed(&s, more, sizeof(more) - 1), sizeof(more) - 1);
	cr_assert_str_eq(smtp_stat_verb(0), "EHLO");
	cr_assert_eq(st.replies[0][0], 1);                   /* EHLO 2xx, once for its 9 lines */
	cr_assert_eq(st.replies[2][0], 1);                   /* MAIL 2xx */
	cr_assert_eq(st.replies[2][3], 1);                   /* MAIL 5xx: SIZE */
	cr_assert_eq(st.replies[3][0], 1);                   /* RCPT 2xx */
	cr_assert_eq(st.replies[3][3], 1);                   /* RCPT 5xx: relay denied */
	cr_assert_eq(st.replies[4][1], 1);                   /* DATA 3xx */
	cr_assert_eq(st.replies[4][0], 1);                   /* DATA 2xx: queued */
	cr_assert_eq(st.replies[8][0], 1);                   /* QUIT */
	cr_assert_eq(st.replies[SMTP_STAT_VERBS - 1][3], 1); /* FOO: 500 */
	cr_assert_eq(st.accepted, 1);
	cr_assert_eq(st.accepted_bytes, 7);
	cr_assert_eq(st.refused[SMTP_RF_RELAY_DENIED], 1);
	cr_assert_eq(st.refused[SMTP_RF_SIZE], 1);
	bool temp = true;
	cr_assert_str_eq(smtp_refusal_name(SMTP_RF_RELAY_DENIED, &temp), "relay_denied");
	cr_assert(!temp);
	cr_assert_str_eq(smtp_refusal_name(SMTP_RF_RATE_LIMIT, &temp), "rate_limit");
	cr_assert(temp);
	smtp_session_fini(&s);
}

/* ---- Content filters (cf->filters): MAIL and RCPT wait for their word ---- */

/* Feeds <in>; every SMTP_ACT_FILTER is answered with the next of <replies>
 * ("" = take it) and the rest fed, as io/milter and io/session do. */
static void filter_run(struct smtp_session *s, const char *in, const char *const *replies)
{
	size_t off = 0, len = strlen(in);

	while (off < len) {
		off += smtp_session_feed(s, in + off, len - off);
		if (s->act & SMTP_ACT_FILTER) {
			cr_assert_not_null(*replies, "more commands waited than replies given");
			smtp_session_filter_done(s, **replies ? *replies : NULL);
			replies++;
		} else if (s->act & SMTP_ACT_MSG_READY) {
			smtp_session_msg_reply(s, "550-5.7.1 not this\r\n550 5.7.1 message");
		} else {
			cr_assert_eq(off, len);
		}
	}
	cr_assert_null(*replies, "a reply was not used");
}

Test(smtp_session, filters_answer_mail_rcpt_and_the_message)
{
	struct smtp_server_conf cf;
	struct smtp_session s;
	static const char *const replies[] = {
	    "451 4.7.1 try later",              /* MAIL refused */
	    "",                                 /* MAIL taken */
	    "550 5.7.1 not him",                /* the first RCPT refused */
	    "",                                 /* the second taken */
	    "",                                 /* the third too */
	    "550-5.7.1 two\r\n550 5.7.1 lines", /* the fourth refused */
	    NULL,
	};
	size_t it = 0;

	conf_for(CF_DEFAULT, &cf);
	cf.filters = true;
	smtp_session_init(&s, &cf, NULL);
	smtp_session_greet(&s);
	s.out.len = 0;
	filter_run(
	    &s,
	    "EHLO c\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\n"
	    "RCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nRCPT TO:<z@example.com>\r\n"
	    "RCPT TO:<w@example.com>\r\n",
	    replies);
	cr_assert_eq(s.tx.nrcpt, 2);
	cr_assert_str_eq(smtp_tx_rcpt_next(&s.tx, &it), "y@example.com");
	cr_assert_str_eq(smtp_tx_rcpt_next(&s.tx, &it), "z@example.com");
	cr_assert_null(smtp_tx_rcpt_next(&s.tx, &it));
	static const char *const none[] = {NULL};
	filter_run(&s, "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n", none);
	cr_assert_str_eq(buf_cstr(&s.out), EHLO_R "451 4.7.1 try later\r\n" MAIL_OK
	                                          "550 5.7.1 not him\r\n" RCPT_OK RCPT_OK
	                                          "550-5.7.1 two\r\n550 5.7.1 lines\r\n" GO
	                                          "550-5.7.1 not this\r\n550 5.7.1 message\r\n" OK);
	cr_assert_eq(s.state, SMTP_S_READY);
	smtp_session_fini(&s);
}

Test(smtp_session, filters_refusing_the_only_recipient_back_to_mail)
{
	struct smtp_server_conf cf;
	struct smtp_session s;
	static const char *const replies[] = {"", "550 5.7.1 no", NULL};

	conf_for(CF_DEFAULT, &cf);
	cf.filters = true;
	smtp_session_init(&s, &cf, NULL);
	smtp_session_greet(&s);
	s.out.len = 0;
	filter_run(&s, "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n",
	           replies);
	cr_assert_eq(s.tx.nrcpt, 0);
	cr_assert_eq(s.tx.rcpts.len, 0);
	cr_assert_str_eq(buf_cstr(&s.out), EHLO_R MAIL_OK "550 5.7.1 no\r\n" NORCPT);
	smtp_session_fini(&s);
}

/* ---- Rates decided by the caller (--limits-redis: SMTP_ACT_RATE) ---- */

struct rate_fixture {
	struct fixture f;
	struct anvil *a;
};

/* Local rates of 1 message and 1 recipient a minute; both asked of the
 * caller while s.rate_remote. */
static void rate_start(struct rate_fixture *rf)
{
	struct anvil_conf ac = {.prefix4 = 32, .prefix6 = 64, .max_entries = 1000};
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0000201)};

	cr_assert_eq(anvil_rate_parse("1/1m", &ac.msg), 0);
	cr_assert_eq(anvil_rate_parse("1/1m", &ac.rcpt), 0);
	rf->a = anvil_new(&ac);
	cr_assert_not_null(rf->a);
	conf_for(CF_DEFAULT, &rf->f.cf);
	rf->f.cf.anvil = rf->a;
	rf->f.cf.rate_ask = SMTP_RATE_MSG | SMTP_RATE_RCPT;
	peer_for(false, &rf->f.peer);
	rf->f.peer.limited = true;
	cr_assert_eq(anvil_key_of(rf->a, (struct sockaddr *)&sin, &rf->f.peer.key), 0);
	smtp_session_init(&rf->f.s, &rf->f.cf, &rf->f.peer);
	smtp_session_greet(&rf->f.s);
	rf->f.s.now_ms = 1000;
	smtp_session_feed(&rf->f.s, "EHLO c.example.org\r\n", 20);
}

static void rate_end(struct rate_fixture *rf)
{
	smtp_session_fini(&rf->f.s);
	anvil_free(rf->a);
}

Test(smtp_session, rate_waits_for_the_callers_verdict)
{
	static const char in[] = "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
	                         "RCPT TO:<c@example.com>\r\nDATA\r\n";
	struct rate_fixture rf;
	struct smtp_session *s = &rf.f.s;
	size_t mark, used, off = 0;

	rate_start(&rf);
	s->rate_remote = true;
	mark = s->out.len;
	/* MAIL stops unanswered: only its line is taken, the rest waits. */
	used = smtp_session_feed(s, in, sizeof(in) - 1);
	cr_assert_eq(used, 27);
	cr_assert(s->act & SMTP_ACT_RATE);
	cr_assert_eq(s->rate_kind, SMTP_RATE_MSG);
	cr_assert_eq(s->out.len, mark);
	cr_assert_eq(smtp_session_feed(s, in + used, sizeof(in) - 1 - used), 0, "fed while asked");
	smtp_session_rate_done(s, true);
	cr_assert_not(s->act & SMTP_ACT_RATE);
	cr_assert_str_eq(out_since(s, mark), MAIL_OK);
	cr_assert_eq(s->state, SMTP_S_MAIL);
	off = used;
	/* The first RCPT fits, the second does not; DATA then goes on. */
	used = smtp_session_feed(s, in + off, sizeof(in) - 1 - off);
	cr_assert_eq(s->rate_kind, SMTP_RATE_RCPT);
	smtp_session_rate_done(s, true);
	off += used;
	used = smtp_session_feed(s, in + off, sizeof(in) - 1 - off);
	cr_assert(s->act & SMTP_ACT_RATE);
	smtp_session_rate_done(s, false);
	off += used;
	cr_assert_eq(smtp_session_feed(s, in + off, sizeof(in) - 1 - off), sizeof(in) - 1 - off);
	cr_assert_str_eq(out_since(s, mark),
	                 MAIL_OK RCPT_OK "452 4.7.0 Error: too many recipients from your address, "
	                                 "try again later\r\n" GO);
	cr_assert_eq(s->tx.nrcpt, 1);
	/* Nothing was counted locally: the caller's counter did it. */
	cr_assert(anvil_message(rf.a, &rf.f.peer.key, 1000));
	rate_end(&rf);
}

Test(smtp_session, rate_refused_by_the_caller_and_line_across_feeds)
{
	struct rate_fixture rf;
	struct smtp_session *s = &rf.f.s;
	size_t mark;

	rate_start(&rf);
	s->rate_remote = true;
	mark = s->out.len;
	/* A line that spans two feeds (it waits in s->line) runs again whole. */
	cr_assert_eq(smtp_session_feed(s, "MAIL FROM:<a@ex", 15), 15);
	cr_assert_not(s->act & SMTP_ACT_RATE);
	cr_assert_eq(smtp_session_feed(s, "ample.org>\r\nNOOP\r\n", 18), 12);
	cr_assert(s->act & SMTP_ACT_RATE);
	smtp_session_rate_done(s, false);
	cr_assert_eq(s->state, SMTP_S_READY);
	cr_assert_eq(smtp_session_feed(s, "NOOP\r\n", 6), 6);
	cr_assert_str_eq(out_since(s, mark),
	                 "452 4.7.0 Error: too many messages from your address, "
	                 "try again later\r\n" OK);
	cr_assert_eq(s->line.len, 0, "the kept line is gone");
	/* Without the caller (its link down), the local table decides. */
	s->rate_remote = false;
	mark = s->out.len;
	smtp_session_feed(s, "MAIL FROM:<a@example.org>\r\nRSET\r\nMAIL FROM:<a@example.org>\r\n",
	                  61);
	cr_assert_not(s->act & SMTP_ACT_RATE);
	cr_assert_str_eq(out_since(s, mark),
	                 MAIL_OK OK "452 4.7.0 Error: too many messages from your address, try "
	                            "again later\r\n");
	rate_end(&rf);
}

Test(smtp_session, rate_verdict_after_close_answers_nothing)
{
	struct rate_fixture rf;
	struct smtp_session *s = &rf.f.s;
	size_t mark;

	rate_start(&rf);
	s->rate_remote = true;
	smtp_session_feed(s, "MAIL FROM:<a@example.org>\r\n", 27);
	cr_assert(s->act & SMTP_ACT_RATE);
	smtp_session_shutdown(s);
	mark = s->out.len;
	smtp_session_rate_done(s, true);
	cr_assert_eq(s->out.len, mark);
	cr_assert_not(s->act & SMTP_ACT_RATE);
	cr_assert_eq(s->line.len, 0);
	/* A verdict nobody asked for changes nothing. */
	smtp_session_rate_done(s, true);
	cr_assert_eq(s->out.len, mark);
	rate_end(&rf);
}

/* ---- The sender domain checked in the DNS by the caller (SMTP_ACT_DNS) ---- */

Test(smtp_session, sender_dns_waits_keeps_order_and_refuses)
{
	struct smtp_server_conf cf;
	struct smtp_session s;
	const char *in = "EHLO c\r\nMAIL FROM:<a@bad.example>\r\nMAIL FROM:<a@good.example>\r\n"
	                 "MAIL FROM:<>\r\nRCPT TO:<x@example.com>\r\n";
	size_t off = 0, len = strlen(in);
	unsigned asked = 0;

	conf_for(CF_DEFAULT, &cf);
	cf.sender_dns = true;
	smtp_session_init(&s, &cf, NULL);
	smtp_session_greet(&s);
	s.out.len = 0;
	while (off < len) {
		size_t out0;

		off += smtp_session_feed(&s, in + off, len - off);
		if (!(s.act & SMTP_ACT_DNS))
			continue;
		/* Nothing answered while it waits, nothing more consumed. */
		out0 = s.out.len;
		cr_assert_eq(smtp_session_feed(&s, in + off, len - off), 0);
		cr_assert_eq(s.out.len, out0);
		asked++;
		if (asked == 1) {
			cr_assert_str_eq(s.dns_domain, "bad.example");
			smtp_session_dns_done(&s, "550 5.1.8 <bad.example>: Domain not found",
			                      SMTP_RF_SENDER_DOMAIN);
		} else {
			cr_assert_str_eq(s.dns_domain, "good.example");
			smtp_session_dns_done(&s, NULL, SMTP_RF_SENDER_DOMAIN);
		}
		cr_assert_not(s.act & SMTP_ACT_DNS);
	}
	/* The null sender has no domain: not asked. */
	cr_assert_eq(asked, 2);
	cr_assert_str_eq(buf_cstr(&s.out),
	                 EHLO_R "550 5.1.8 <bad.example>: Domain not found\r\n" MAIL_OK
	                        "503 5.5.1 Error: nested MAIL command\r\n" RCPT_OK);
	smtp_session_fini(&s);
}

Test(smtp_session, refuse_all_but_quit_and_the_client_name)
{
	struct smtp_server_conf cf;
	struct smtp_session s;
	struct buf b = BUF_INIT;

	conf_for(CF_DEFAULT, &cf);
	smtp_session_init(&s, &cf, NULL);
	snprintf(s.peer.addr, sizeof(s.peer.addr), "192.0.2.7");
	smtp_session_client_name(&s, "mail.example.org");
	smtp_session_greet(&s);
	s.out.len = 0;
	smtp_session_feed(&s, "EHLO c\r\n", 8);
	cr_assert_eq(smtp_session_feed(&s, "MAIL FROM:<a@b.example>\r\n", 25), 25);
	cr_assert_eq(smtp_session_received(&s, &b, "Q1", 0), 0);
	cr_assert(strstr(buf_cstr(&b), "Received: from c (mail.example.org [192.0.2.7])"), "%s",
	          buf_cstr(&b));
	buf_free(&b);
	smtp_session_refuse_all(&s,
	                        "554 5.7.1 Service unavailable; client [192.0.2.7] blocked "
	                        "using zen.example",
	                        SMTP_RF_DNSBL);
	s.out.len = 0;
	smtp_session_feed(&s, "RSET\r\nNOOP\r\nQUIT\r\n", 18);
	cr_assert_str_eq(
	    buf_cstr(&s.out),
	    "554 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.example\r\n"
	    "554 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.example\r\n"
	    "221 2.0.0 Bye\r\n");
	smtp_session_fini(&s);
}

/* ---- Next-hop verification (--verify-recipients: SMTP_ACT_VERIFY) ---- */

struct verify_fixture {
	struct fixture f;
	struct verify_cache *vc;
};

static void verify_start(struct verify_fixture *vf, bool fail_open)
{
	vf->vc = verify_cache_new(100);
	cr_assert_not_null(vf->vc);
	conf_for(CF_DEFAULT, &vf->f.cf);
	vf->f.cf.max_recipients = 100;
	vf->f.cf.vcache = vf->vc;
	vf->f.cf.verify_all = true;
	vf->f.cf.verify_fail_open = fail_open;
	peer_for(false, &vf->f.peer);
	smtp_session_init(&vf->f.s, &vf->f.cf, &vf->f.peer);
	smtp_session_greet(&vf->f.s);
	vf->f.s.now_s = 1000;
	smtp_session_feed(&vf->f.s, "EHLO c.example.org\r\n", 20);
}

static void verify_end(struct verify_fixture *vf)
{
	smtp_session_fini(&vf->f.s);
	verify_cache_free(vf->vc);
}

Test(smtp_session, verify_cached_verdicts_answer_at_once)
{
	static const char in[] = "MAIL FROM:<a@example.org>\r\nRCPT TO:<Known@EXAMPLE.com>\r\n"
	                         "RCPT TO:<gone@example.com>\r\nRCPT TO:<x@elsewhere.org>\r\n";
	struct verify_fixture vf;
	struct smtp_session *s = &vf.f.s;
	size_t mark;

	verify_start(&vf, false);
	verify_cache_put(vf.vc, "Known@example.com", 17, VERIFY_OK, NULL, 2000, 1000, NULL);
	verify_cache_put(vf.vc, "gone@example.com", 16, VERIFY_REJECT,
	                 "550 5.1.1 <gone@example.com>: User unknown", 2000, 1000, NULL);
	mark = s->out.len;
	cr_assert_eq(smtp_session_feed(s, in, sizeof(in) - 1), sizeof(in) - 1);
	cr_assert_not(s->act & SMTP_ACT_VERIFY);
	cr_assert_str_eq(out_since(s, mark), MAIL_OK RCPT_OK
	                 "550 5.1.1 <gone@example.com>: Recipient address rejected: "
	                 "undeliverable address: 550 5.1.1 <gone@example.com>: User "
	                 "unknown\r\n"
	                 "554 5.7.1 <x@elsewhere.org>: Relay access denied\r\n");
	cr_assert_eq(s->tx.nrcpt, 1);
	cr_assert_eq(s->counts.unknown, 1);
	verify_end(&vf);
}

Test(smtp_session, verify_miss_waits_and_keeps_the_pipeline_in_order)
{
	static const char in[] =
	    "MAIL FROM:<a@example.org>\r\nRCPT TO:<new@example.com>\r\n"
	    "RCPT TO:<bad@example.com>\r\nRCPT TO:<tmp@example.com>\r\nDATA\r\n";
	struct verify_fixture vf;
	struct smtp_session *s = &vf.f.s;
	size_t mark, used, off, klen;
	const char *key;

	verify_start(&vf, false);
	mark = s->out.len;
	used = smtp_session_feed(s, in, sizeof(in) - 1);
	cr_assert_eq(used, 27 + 27, "stopped after the first RCPT");
	cr_assert(s->act & SMTP_ACT_VERIFY);
	key = smtp_session_verify_key(s, &klen);
	cr_assert_eq(klen, 15);
	cr_assert_str_eq(key, "new@example.com");
	cr_assert_str_eq(smtp_session_verify_addr(s), "new@example.com");
	cr_assert_str_eq(out_since(s, mark), MAIL_OK, "the RCPT is not answered yet");
	cr_assert_eq(smtp_session_feed(s, in + used, sizeof(in) - 1 - used), 0, "fed while asked");
	smtp_session_verify_done(s, VERIFY_OK, NULL);
	cr_assert_not(s->act & SMTP_ACT_VERIFY);
	off = used;
	used = smtp_session_feed(s, in + off, sizeof(in) - 1 - off);
	cr_assert(s->act & SMTP_ACT_VERIFY);
	smtp_session_verify_done(s, VERIFY_REJECT, "550 5.1.1 no such user");
	off += used;
	used = smtp_session_feed(s, in + off, sizeof(in) - 1 - off);
	cr_assert(s->act & SMTP_ACT_VERIFY);
	smtp_session_verify_done(s, VERIFY_TEMP, "4.4.1 next hop down");
	off += used;
	cr_assert_eq(smtp_session_feed(s, in + off, sizeof(in) - 1 - off), sizeof(in) - 1 - off);
	cr_assert_str_eq(out_since(s, mark), MAIL_OK RCPT_OK
	                 "550 5.1.1 <bad@example.com>: Recipient address rejected: undeliverable "
	                 "address: 550 5.1.1 no such user\r\n"
	                 "450 4.1.1 <tmp@example.com>: Recipient address rejected: unverified "
	                 "address: 4.4.1 next hop down\r\n" GO);
	cr_assert_eq(s->tx.nrcpt, 1);
	cr_assert_str_eq(s->tx.rcpts.p, "new@example.com");
	cr_assert_null(s->verify.p, "no memory kept once answered");
	verify_end(&vf);
}

Test(smtp_session, verify_fail_open_takes_what_cannot_be_verified)
{
	struct verify_fixture vf;
	struct smtp_session *s = &vf.f.s;
	size_t mark;

	verify_start(&vf, true);
	mark = s->out.len;
	smtp_session_feed(s, "MAIL FROM:<a@example.org>\r\nRCPT TO:<t@example.com>\r\n", 52);
	cr_assert(s->act & SMTP_ACT_VERIFY);
	smtp_session_verify_done(s, VERIFY_TEMP, "4.4.2 timed out");
	cr_assert_str_eq(out_since(s, mark), MAIL_OK RCPT_OK);
	cr_assert_eq(s->tx.nrcpt, 1);
	/* A 5xx is still a 5xx. */
	smtp_session_feed(s, "RCPT TO:<u@example.com>\r\n", 25);
	smtp_session_verify_done(s, VERIFY_REJECT, "550 nope");
	cr_assert_eq(s->tx.nrcpt, 1);
	verify_end(&vf);
}

Test(smtp_session, verify_only_listed_domains)
{
	struct verify_fixture vf;
	struct smtp_session *s = &vf.f.s;
	struct policy only;
	char err[64];

	verify_start(&vf, false);
	policy_init(&only);
	cr_assert_eq(policy_add_domains(&only, "localhost", err, sizeof(err)), 0);
	policy_finish(&only);
	vf.f.cf.verify_all = false;
	vf.f.cf.verify_domains = &only;
	smtp_session_feed(s, "MAIL FROM:<a@example.org>\r\nRCPT TO:<t@example.com>\r\n", 52);
	cr_assert_not(s->act & SMTP_ACT_VERIFY, "example.com is not verified");
	smtp_session_feed(s, "RCPT TO:<t@localhost>\r\n", 23);
	cr_assert(s->act & SMTP_ACT_VERIFY, "%s", s->out.p);
	smtp_session_verify_done(s, VERIFY_OK, NULL);
	cr_assert_eq(s->tx.nrcpt, 2);
	policy_fini(&only);
	verify_end(&vf);
}
