/* dsn_test: delivery status notifications. Every DSN built here is parsed
 * back as a receiving MUA would: CRLF lines of at most 998 octets, the
 * header section unfolded, the multipart/report split at its boundary,
 * the delivery-status part split into its field groups. */
#include "core/dsn.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOST  "gw.example.org"
#define TOKEN "4Xk1AbC.1700000000"
#define NOW   1700000000 /* Tue, 14 Nov 2023 22:13:20 +0000 */

#define ORIG_HDR                                                                                   \
	"Received: from client.example.com ([192.0.2.7])\r\n"                                      \
	"\tby gw.example.org (ringmx) with ESMTP id 4Xk1AbC\r\n"                                   \
	"From: Alice <alice@example.com>\r\n"                                                      \
	"To: Carol <c@example.net>\r\n"                                                            \
	"Subject: lunch\r\n"
#define ORIG_BODY "Shall we meet at noon?\r\n\r\n-- \r\nAlice\r\n"
#define ORIG      ORIG_HDR "\r\n" ORIG_BODY

/* ---- A small MIME reader ---- */

struct part {
	char *hdr;  /* header section, CRLF lines, NUL-terminated */
	char *body; /* everything after the empty line */
};

struct parsed {
	char *hdr;
	char *body;
	char bnd[128];
	unsigned nparts;
	struct part parts[8];
	bool closed; /* the close delimiter was found */
};

static char *dup_range(const char *p, size_t n)
{
	char *s = malloc(n + 1);

	cr_assert(s);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* CRLF only, no line over 998 octets (RFC 5322 2.1.1, 2.3). */
static void check_lines(const char *p, size_t len)
{
	size_t i, col = 0;

	for (i = 0; i < len; i++) {
		if (p[i] == '\r') {
			cr_assert(i + 1 < len && p[i + 1] == '\n', "bare CR at %zu", i);
			cr_assert_leq(col, 998, "line of %zu octets before %zu", col, i);
			col = 0;
			i++;
		} else {
			cr_assert_neq(p[i], '\n', "bare LF at %zu", i);
			col++;
		}
	}
	cr_assert_eq(col, 0, "no CRLF at the end");
}

/* The unfolded value of the first field <name> in <hdr>, NULL if none. */
static char *field(const char *hdr, const char *name)
{
	size_t nl = strlen(name), n = 0;
	const char *p = hdr, *e;
	char *v;

	while (*p) {
		e = strstr(p, "\r\n");
		cr_assert(e);
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			v = malloc(strlen(p) + 1);
			cr_assert(v);
			p += nl + 1;
			while (*p == ' ')
				p++;
			for (;;) {
				e = strstr(p, "\r\n");
				memcpy(v + n, p, (size_t)(e - p));
				n += (size_t)(e - p);
				p = e + 2;
				if (*p != ' ' && *p != '\t')
					break;
			}
			v[n] = '\0';
			return v;
		}
		p = e + 2;
	}
	return NULL;
}

static void expect_field(const char *hdr, const char *name, const char *want)
{
	char *v = field(hdr, name);

	cr_assert(v, "no %s field in:\n%s", name, hdr);
	cr_expect_str_eq(v, want, "%s", name);
	free(v);
}

static void split_hdr(const char *p, char **hdr, char **body)
{
	const char *e;

	if (strncmp(p, "\r\n", 2) == 0) {
		*hdr = dup_range("", 0);
		*body = dup_range(p + 2, strlen(p + 2));
		return;
	}
	e = strstr(p, "\r\n\r\n");
	cr_assert(e, "no end of header section");
	*hdr = dup_range(p, (size_t)(e - p) + 2);
	*body = dup_range(e + 4, strlen(e + 4));
}

/* RFC 2046 5.1.1: delimiter lines are "--<bnd>" and "--<bnd>--"; the CRLF
 * before a delimiter belongs to it. */
static void parse(struct parsed *m, const struct buf *b)
{
	const char *p, *q, *start = NULL;
	char *ct, *bp;
	size_t bl;

	memset(m, 0, sizeof(*m));
	cr_assert_eq(strlen(b->p), b->len, "NUL in output");
	check_lines(b->p, b->len);
	split_hdr(b->p, &m->hdr, &m->body);
	ct = field(m->hdr, "Content-Type");
	cr_assert(ct);
	bp = strstr(ct, "boundary=\"");
	cr_assert(bp, "%s", ct);
	bp += 10;
	bl = strcspn(bp, "\"");
	cr_assert_leq(bl, 70);
	cr_assert_gt(bl, 0);
	memcpy(m->bnd, bp, bl);
	m->bnd[bl] = '\0';
	free(ct);
	/* Walk the lines of the body. */
	for (p = m->body; *p; p = q + 2) {
		q = strstr(p, "\r\n");
		cr_assert(q);
		if (p[0] == '-' && p[1] == '-' && strncmp(p + 2, m->bnd, bl) == 0) {
			const char *rest = p + 2 + bl;
			bool close = strncmp(rest, "--", 2) == 0;

			cr_assert(rest == q || (close && rest + 2 == q), "odd delimiter line");
			cr_assert(!m->closed, "text after the close delimiter");
			if (start) {
				char *txt = dup_range(start, (size_t)(p - 2 - start));
				struct part *pt = &m->parts[m->nparts++];

				cr_assert(p - 2 >= start && p[-2] == '\r');
				split_hdr(txt, &pt->hdr, &pt->body);
				free(txt);
			}
			if (close)
				m->closed = true;
			start = q + 2;
			cr_assert_lt(m->nparts, 8);
		}
	}
	cr_assert(m->closed, "no close delimiter");
}

static void parsed_free(struct parsed *m)
{
	unsigned i;

	free(m->hdr);
	free(m->body);
	for (i = 0; i < m->nparts; i++) {
		free(m->parts[i].hdr);
		free(m->parts[i].body);
	}
}

/* Field groups of the delivery-status part, split at empty lines. */
static unsigned groups(const char *body, char **g, unsigned max)
{
	const char *p = body, *e;
	unsigned n = 0;

	while (*p && n < max) {
		e = strstr(p, "\r\n\r\n");
		if (!e) {
			g[n++] = dup_range(p, strlen(p));
			break;
		}
		g[n++] = dup_range(p, (size_t)(e - p) + 2);
		p = e + 4;
	}
	return n;
}

static void free_groups(char **g, unsigned n)
{
	while (n--)
		free(g[n]);
}

/* ---- Fixtures ---- */

static struct dsn_rcpt r_unknown(void)
{
	return (struct dsn_rcpt){
	    .addr = "c@example.net",
	    .orcpt = "carol@example.net",
	    .action = DSN_FAILED,
	    .remote_mta = "mx.example.net",
	    .diag = "550 5.1.1 <c@example.net>: Recipient address rejected: User unknown",
	    .in_reply_to = "RCPT TO",
	    .last_attempt = NOW - 5,
	};
}

static struct dsn_msg msg(const struct dsn_rcpt *r, unsigned n)
{
	return (struct dsn_msg){
	    .hostname = HOST,
	    .sender = "alice@example.com",
	    .qid = "4Xk1AbC",
	    .arrival = NOW - 3600,
	    .now = NOW,
	    .token = TOKEN,
	    .rcpts = r,
	    .nrcpt = n,
	    .content = ORIG,
	    .content_len = sizeof(ORIG) - 1,
	};
}

static int build(struct buf *b, const struct dsn_msg *m, struct parsed *p)
{
	int r = dsn_build(b, m);

	cr_assert_geq(r, 0, "dsn_build: %d", r);
	parse(p, b);
	return r;
}

/* ---- Structure ---- */

Test(dsn, failed_bounce_has_rfc3464_structure)
{
	struct dsn_rcpt r[2] = {r_unknown(),
	                        {.addr = "d@example.org",
	                         .action = DSN_FAILED,
	                         .diag = "5.4.4 Host not found: example.org",
	                         .diag_type = "X-Ringmx",
	                         .last_attempt = NOW - 1}};
	struct dsn_msg m = msg(r, 2);
	struct buf b = BUF_INIT;
	struct parsed p;
	char *g[8], *v;
	unsigned ng;
	int f;

	f = build(&b, &m, &p);
	cr_expect_eq(f, 0);
	expect_field(p.hdr, "From", "MAILER-DAEMON@" HOST " (Mail Delivery System)");
	expect_field(p.hdr, "To", "<alice@example.com>");
	expect_field(p.hdr, "Subject", "Undelivered Mail Returned to Sender");
	expect_field(p.hdr, "Date", "Tue, 14 Nov 2023 22:13:20 +0000");
	expect_field(p.hdr, "Message-ID", "<" TOKEN "@" HOST ">");
	expect_field(p.hdr, "Auto-Submitted", "auto-replied");
	expect_field(p.hdr, "MIME-Version", "1.0");
	expect_field(p.hdr, "Content-Transfer-Encoding", "7bit");
	v = field(p.hdr, "Content-Type");
	cr_expect(strncmp(v, "multipart/report; report-type=delivery-status;", 46) == 0, "%s", v);
	free(v);
	cr_expect_str_eq(p.bnd, TOKEN "/" HOST);

	cr_assert_eq(p.nparts, 3);
	expect_field(p.parts[0].hdr, "Content-Type", "text/plain; charset=us-ascii");
	expect_field(p.parts[1].hdr, "Content-Type", "message/delivery-status");
	expect_field(p.parts[2].hdr, "Content-Type", "text/rfc822-headers");

	/* The human-readable part names each recipient and its reason. */
	cr_expect(strstr(p.parts[0].body, "<c@example.net>: host mx.example.net said: 550 5.1.1"));
	cr_expect(strstr(p.parts[0].body, "(in reply to RCPT TO command)"));
	cr_expect(strstr(p.parts[0].body, "<d@example.org>: 5.4.4 Host not found"));

	ng = groups(p.parts[1].body, g, 8);
	cr_assert_eq(ng, 3, "%u groups", ng);
	expect_field(g[0], "Reporting-MTA", "dns; " HOST);
	expect_field(g[0], "X-Ringmx-Queue-ID", "4Xk1AbC");
	expect_field(g[0], "X-Ringmx-Sender", "rfc822; alice@example.com");
	expect_field(g[0], "Arrival-Date", "Tue, 14 Nov 2023 21:13:20 +0000");
	cr_expect_null(field(g[0], "Original-Envelope-Id"));

	expect_field(g[1], "Original-Recipient", "rfc822; carol@example.net");
	expect_field(g[1], "Final-Recipient", "rfc822; c@example.net");
	expect_field(g[1], "Action", "failed");
	expect_field(g[1], "Status", "5.1.1");
	expect_field(g[1], "Remote-MTA", "dns; mx.example.net");
	expect_field(g[1], "Diagnostic-Code",
	             "smtp; 550 5.1.1 <c@example.net>: Recipient address rejected: User unknown");
	expect_field(g[1], "Last-Attempt-Date", "Tue, 14 Nov 2023 22:13:15 +0000");
	cr_expect_null(field(g[1], "Will-Retry-Until"));

	cr_expect_null(field(g[2], "Original-Recipient"));
	expect_field(g[2], "Final-Recipient", "rfc822; d@example.org");
	expect_field(g[2], "Action", "failed");
	expect_field(g[2], "Status", "5.4.4");
	cr_expect_null(field(g[2], "Remote-MTA"));
	expect_field(g[2], "Diagnostic-Code", "X-Ringmx; 5.4.4 Host not found: example.org");

	/* Headers only, by default: the body stays home. */
	cr_expect_str_eq(p.parts[2].body, ORIG_HDR);
	cr_expect_null(strstr(b.p, "Shall we meet"));

	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, envid_comes_first_when_given)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;

	m.envid = "QQ314159";
	build(&b, &m, &p);
	cr_expect(
	    strncmp(p.parts[1].body, "Original-Envelope-Id: QQ314159\r\nReporting-MTA: ", 47) == 0,
	    "%s", p.parts[1].body);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, appends_to_buffer_and_keeps_it_on_error)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;

	buf_append_str(&b, "PREFIX");
	cr_assert_geq(dsn_build(&b, &m), 0);
	cr_expect(strncmp(b.p, "PREFIXFrom: ", 12) == 0);
	buf_reset(&b, 0);
	buf_append_str(&b, "PREFIX");
	m.token = "bad token";
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	cr_expect_eq(b.len, 6);
	cr_expect_str_eq(b.p, "PREFIX");
	buf_free(&b);
}

/* ---- What remote servers and originals may hold ---- */

Test(dsn, remote_reply_control_octets_are_sanitized)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;
	char *g[4];
	unsigned ng;

	r.diag = "550 5.7.1 bad\r\nInjected: yes\r\n\x01\x7f\xff more\n.\r\n\r\n--x\t\tz \r";
	r.remote_mta = "mx.example.net\r\nX-Evil: 1";
	r.in_reply_to = "end of\r\nDATA";
	build(&b, &m, &p);
	cr_expect_null(strstr(b.p, "\r\nInjected"));
	cr_expect_null(strstr(b.p, "\r\nX-Evil"));
	cr_expect_null(strstr(b.p, "\r\n."));
	cr_expect_null(strstr(b.p, "\x7f"));
	cr_expect_null(strstr(b.p, "\xff"));
	ng = groups(p.parts[1].body, g, 4);
	cr_assert_eq(ng, 2);
	expect_field(g[1], "Diagnostic-Code", "smtp; 550 5.7.1 bad Injected: yes ??? more . --x z");
	expect_field(g[1], "Remote-MTA", "dns; mx.example.net X-Evil: 1");
	expect_field(g[1], "Status", "5.7.1");
	cr_expect(strstr(p.parts[0].body, "(in reply to end of DATA command)"));
	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, long_diagnostic_is_folded_under_998)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT, d = BUF_INIT;
	struct parsed p;
	char *g[4], *v;
	unsigned ng, i;

	/* Words, then one 3000-octet word with no space to fold at. */
	buf_append_str(&d, "550 5.2.2 mailbox full:");
	for (i = 0; i < 100; i++)
		buf_printf(&d, " word%u", i);
	buf_append_str(&d, " ");
	for (i = 0; i < 3000; i++)
		buf_append(&d, "x", 1);
	r.diag = buf_cstr(&d);
	build(&b, &m, &p); /* parse() checks every line */
	ng = groups(p.parts[1].body, g, 4);
	cr_assert_eq(ng, 2);
	v = field(g[1], "Diagnostic-Code");
	cr_assert(v);
	cr_expect(strncmp(v, "smtp; 550 5.2.2 mailbox full: word0 word1", 40) == 0);
	cr_expect(strstr(v, "word99 xxxx"));
	expect_field(g[1], "Status", "5.2.2");
	free(v);
	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);
	buf_free(&d);
}

Test(dsn, boundary_in_returned_content_is_avoided)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;
	static const char evil[] = "Subject: x\r\n\r\n--" TOKEN "/" HOST "\r\n"
	                           "Content-Type: text/html\r\n\r\n<b>forged part</b>\r\n"
	                           "--" TOKEN "/" HOST ".1--\r\n";

	m.content = evil;
	m.content_len = sizeof(evil) - 1;
	m.return_full = true;
	build(&b, &m, &p);
	cr_expect_str_eq(p.bnd, TOKEN "/" HOST ".2");
	cr_assert_eq(p.nparts, 3);
	expect_field(p.parts[2].hdr, "Content-Type", "message/rfc822");
	cr_expect_str_eq(p.parts[2].body, evil, "the original comes back whole");
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, boundary_in_remote_reply_is_avoided)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;

	r.diag = "550 5.7.1 see --" TOKEN "/" HOST "--";
	build(&b, &m, &p);
	cr_expect_str_eq(p.bnd, TOKEN "/" HOST ".1");
	cr_expect_eq(p.nparts, 3);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, long_token_and_host_keep_boundary_short)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;
	char tok[DSN_TOKEN_MAX + 1];

	memset(tok, 'T', DSN_TOKEN_MAX);
	tok[DSN_TOKEN_MAX] = '\0';
	m.token = tok;
	m.hostname = "a-very-long-host-name.in.a.deep.subdomain.tree.example.org";
	build(&b, &m, &p); /* parse() checks <= 70 */
	cr_expect_eq(p.nparts, 3);
	parsed_free(&p);
	buf_free(&b);
}

/* ---- Rules ---- */

Test(dsn, null_sender_is_refused)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;

	m.sender = "";
	cr_expect_eq(dsn_build(&b, &m), -EDESTADDRREQ);
	m.sender = "<>";
	cr_expect_eq(dsn_build(&b, &m), -EDESTADDRREQ);
	cr_expect_eq(b.len, 0);
	buf_free(&b);
}

Test(dsn, bad_arguments_are_refused)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m;
	struct buf b = BUF_INIT;
	static const char *const bad_tokens[] = {"", ".a", "a.", "a..b", "a b", "a@b", "a/b"};
	unsigned i;

	for (i = 0; i < sizeof(bad_tokens) / sizeof(bad_tokens[0]); i++) {
		m = msg(&r, 1);
		m.token = bad_tokens[i];
		cr_expect_eq(dsn_build(&b, &m), -EINVAL, "token '%s'", bad_tokens[i]);
	}
	m = msg(&r, 1);
	m.hostname = "gw.example.org\r\nBcc: x";
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	m = msg(&r, 1);
	m.sender = "a@b>\r\nBcc: <x@y";
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	m = msg(&r, 0);
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	m = msg(&r, 1);
	r.addr = "c@example.net\r\nX: y";
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	r = r_unknown();
	r.diag_type = "smtp; x";
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	r = r_unknown();
	r.action = (enum dsn_action)7;
	cr_expect_eq(dsn_build(&b, &m), -EINVAL);
	cr_expect_eq(b.len, 0);
	buf_free(&b);
}

Test(dsn, delayed_notice_differs_from_failure)
{
	struct dsn_rcpt r = {.addr = "e@example.com",
	                     .action = DSN_DELAYED,
	                     .remote_mta = "mx.example.com",
	                     .diag = "451 Greylisted, try later",
	                     .last_attempt = NOW - 60};
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;
	char *g[4];
	unsigned ng;
	int f;

	m.arrival = NOW - 4 * 3600;
	m.retry_until = NOW - 4 * 3600 + 432000;
	f = build(&b, &m, &p);
	cr_expect_eq(f, DSN_F_DELAYED);
	expect_field(p.hdr, "Subject", "Delayed Mail (still being retried)");
	cr_expect(strstr(p.parts[0].body, "THIS IS A WARNING ONLY"));
	cr_expect(strstr(p.parts[0].body, "could not be delivered for 4 hours"));
	cr_expect(strstr(p.parts[0].body, "retried until Sun, 19 Nov 2023 18:13:20 +0000"));
	ng = groups(p.parts[1].body, g, 4);
	cr_assert_eq(ng, 2);
	expect_field(g[1], "Action", "delayed");
	expect_field(g[1], "Status", "4.0.0"); /* the reply had no enhanced code */
	expect_field(g[1], "Will-Retry-Until", "Sun, 19 Nov 2023 18:13:20 +0000");
	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, mixed_notice_is_a_failure_listing_both)
{
	struct dsn_rcpt r[2] = {{.addr = "e@example.com", .action = DSN_DELAYED},
	                        {.addr = "f@example.com", .action = DSN_FAILED}};
	struct dsn_msg m = msg(r, 2);
	struct buf b = BUF_INIT;
	struct parsed p;
	char *g[4];
	unsigned ng;
	int f;

	f = build(&b, &m, &p);
	cr_expect_eq(f & DSN_F_DELAYED, 0);
	expect_field(p.hdr, "Subject", "Undelivered Mail Returned to Sender");
	cr_expect(strstr(p.parts[0].body, "<f@example.com>: delivery failed (status 5.0.0)"));
	cr_expect(strstr(p.parts[0].body, "still being retried:\r\n\r\n<e@example.com>: not "
	                                  "delivered yet (status 4.0.0)"));
	ng = groups(p.parts[1].body, g, 4);
	cr_assert_eq(ng, 3);
	expect_field(g[1], "Action", "delayed");
	expect_field(g[1], "Status", "4.0.0");
	cr_expect_null(field(g[1], "Diagnostic-Code"));
	cr_expect_null(field(g[1], "Last-Attempt-Date"));
	expect_field(g[2], "Action", "failed");
	expect_field(g[2], "Status", "5.0.0");
	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);
}

/* ---- What comes back ---- */

Test(dsn, full_return_when_it_fits)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;

	m.return_full = true;
	cr_expect_eq(build(&b, &m, &p), 0);
	expect_field(p.parts[2].hdr, "Content-Type", "message/rfc822");
	expect_field(p.parts[2].hdr, "Content-Description", "Undelivered Message");
	cr_expect_str_eq(p.parts[2].body, ORIG);
	cr_expect(strstr(p.parts[0].body, "It is attached below."));
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, full_return_over_cap_gives_headers_only)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT, big = BUF_INIT;
	struct parsed p;
	unsigned i;

	buf_append_str(&big, ORIG_HDR "\r\n");
	for (i = 0; i < 2000; i++)
		buf_printf(&big, "line %u of a long message body that goes on\r\n", i);
	cr_assert_gt(big.len, DSN_RETURN_MAX);
	m.content = big.p;
	m.content_len = big.len;
	m.return_full = true;
	cr_expect_eq(build(&b, &m, &p), DSN_F_TRUNCATED);
	expect_field(p.parts[2].hdr, "Content-Type", "text/rfc822-headers");
	cr_expect_str_eq(p.parts[2].body, ORIG_HDR);
	cr_expect(strstr(p.parts[0].body, "larger than 65536 octets"));
	cr_expect_lt(b.len, 8192);
	parsed_free(&p);
	buf_free(&b);

	/* A cap that the whole message fits. */
	m.return_max = big.len;
	cr_expect_eq(build(&b, &m, &p), 0);
	expect_field(p.parts[2].hdr, "Content-Type", "message/rfc822");
	cr_expect_eq(strlen(p.parts[2].body), big.len);
	parsed_free(&p);
	buf_free(&b);
	buf_free(&big);
}

Test(dsn, header_section_over_cap_is_cut_at_a_field)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;

	/* "Received:" (2 lines, 101 octets) fits; "From:" would pass 120. */
	m.return_max = 120;
	cr_expect_eq(build(&b, &m, &p), DSN_F_TRUNCATED);
	cr_expect_str_eq(p.parts[2].body, "Received: from client.example.com ([192.0.2.7])\r\n"
	                                  "\tby gw.example.org (ringmx) with ESMTP id 4Xk1AbC\r\n");
	parsed_free(&p);
	buf_free(&b);

	/* Not even the first field fits: no third part. */
	m.return_max = 10;
	build(&b, &m, &p);
	cr_expect_eq(p.nparts, 2);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, returned_content_is_made_crlf_and_short_lined)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT, c = BUF_INIT, want = BUF_INIT;
	struct parsed p;
	unsigned i;

	buf_append_str(&c, "Subject: bare\nX-A: cr\rX-Long: ");
	for (i = 0; i < 2500; i++)
		buf_append(&c, "y", 1);
	buf_append_str(&c, "\n\nbody\n");
	m.content = c.p;
	m.content_len = c.len;
	m.return_full = true;
	build(&b, &m, &p); /* parse() checks every line */
	buf_append_str(&want, "Subject: bare\r\nX-A: cr\r\nX-Long: ");
	for (i = 0; i < 2500; i++) {
		if (i == 998 - 8 || i == 998 - 8 + 997)
			buf_append_str(&want, "\r\n ");
		buf_append(&want, "y", 1);
	}
	buf_append_str(&want, "\r\n\r\nbody\r\n");
	cr_expect_str_eq(p.parts[2].body, want.p);
	parsed_free(&p);
	buf_free(&b);
	buf_free(&c);
	buf_free(&want);
}

Test(dsn, eight_bit_content_is_flagged)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;
	static const char c8[] = "Subject: caf\xc3\xa9\r\n\r\nd\xc3\xa9j\xc3\xa0 vu\r\n";

	m.content = c8;
	m.content_len = sizeof(c8) - 1;
	m.return_full = true;
	cr_expect_eq(build(&b, &m, &p), DSN_F_8BIT);
	expect_field(p.hdr, "Content-Transfer-Encoding", "8bit");
	expect_field(p.parts[2].hdr, "Content-Transfer-Encoding", "8bit");
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, utf8_sender_is_flagged)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;

	m.sender = "j\xc3\xb6rg@example.de";
	cr_expect_eq(build(&b, &m, &p), DSN_F_UTF8);
	expect_field(p.hdr, "To", "<j\xc3\xb6rg@example.de>");
	expect_field(p.parts[0].hdr, "Content-Type", "text/plain; charset=utf-8");
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, no_content_gives_two_parts)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;

	m.content = NULL;
	m.content_len = 0;
	build(&b, &m, &p);
	cr_expect_eq(p.nparts, 2);
	parsed_free(&p);
	buf_free(&b);
}

/* ---- Helpers ---- */

Test(dsn, status_is_taken_or_derived)
{
	static const struct {
		const char *reply;
		enum dsn_action a;
		const char *want;
	} t[] = {
	    {"550 5.1.1 User unknown", DSN_FAILED, "5.1.1"},
	    {"550-5.7.26 unauthenticated", DSN_FAILED, "5.7.26"},
	    {"451 4.7.1 Greylisted", DSN_DELAYED, "4.7.1"},
	    {"451 4.7.1 Greylisted", DSN_FAILED, "4.7.1"}, /* expired: the reply's class stays */
	    {"550 4.1.1 mismatched", DSN_FAILED, "5.1.1"}, /* RFC 3463: the reply code's class */
	    {"550 User unknown", DSN_FAILED, "5.0.0"},
	    {"421 closing", DSN_FAILED, "4.0.0"},
	    {"554", DSN_FAILED, "5.0.0"},
	    {"4.4.1 connection refused", DSN_DELAYED, "4.4.1"},
	    {"5.3.4 message too big", DSN_DELAYED, "5.3.4"},
	    {"250 2.0.0 Ok", DSN_FAILED, "5.0.0"},
	    {"2.0.0 odd", DSN_DELAYED, "4.0.0"},
	    {"550 5.1.1234 too long", DSN_FAILED, "5.0.0"},
	    {"550 5.1. x", DSN_FAILED, "5.0.0"},
	    {"550 5.1.1x", DSN_FAILED, "5.0.0"},
	    {"connection timed out", DSN_DELAYED, "4.0.0"},
	    {"", DSN_FAILED, "5.0.0"},
	    {NULL, DSN_DELAYED, "4.0.0"},
	};
	char st[DSN_STATUS_MAX];
	unsigned i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		dsn_status(st, t[i].reply, t[i].a);
		cr_expect_str_eq(st, t[i].want, "'%s': got %s, want %s", t[i].reply, st, t[i].want);
	}
}

Test(dsn, explicit_status_wins_when_well_formed)
{
	struct dsn_rcpt r = r_unknown();
	struct dsn_msg m = msg(&r, 1);
	struct buf b = BUF_INIT;
	struct parsed p;
	char *g[4];
	unsigned ng;

	r.status = "5.1.10";
	build(&b, &m, &p);
	ng = groups(p.parts[1].body, g, 4);
	cr_assert_eq(ng, 2);
	expect_field(g[1], "Status", "5.1.10");
	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);

	r.status = "5.1.1\r\nX: y";
	build(&b, &m, &p);
	ng = groups(p.parts[1].body, g, 4);
	cr_assert_eq(ng, 2);
	expect_field(g[1], "Status", "5.1.1"); /* derived from the reply */
	free_groups(g, ng);
	parsed_free(&p);
	buf_free(&b);
}

Test(dsn, date_is_rfc5322_utc)
{
	char d[40];

	cr_assert_eq(dsn_date(d, sizeof(d), 0), 0);
	cr_expect_str_eq(d, "Thu, 01 Jan 1970 00:00:00 +0000");
	cr_assert_eq(dsn_date(d, sizeof(d), NOW), 0);
	cr_expect_str_eq(d, "Tue, 14 Nov 2023 22:13:20 +0000");
	cr_assert_eq(dsn_date(d, sizeof(d), 951782400), 0); /* leap day */
	cr_expect_str_eq(d, "Tue, 29 Feb 2000 00:00:00 +0000");
	cr_expect_eq(dsn_date(d, 10, NOW), -EINVAL);
	cr_expect_eq(dsn_date(d, sizeof(d), (time_t)1 << 60), -EINVAL);
}
