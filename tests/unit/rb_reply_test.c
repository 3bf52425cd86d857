/* rb_reply_test: ringmx-bench's own SMTP reply parser: finding a CRLF line
 * in a receive buffer (partial lines, bare CR or LF, the length limit) and
 * assembling lines into replies (codes, EHLO capabilities, the kept text,
 * syntax errors). Every input sits against a PROT_NONE page (testutil.h), so
 * reading past what was given crashes the test. */
#include "bench/rb.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* rb_reply_find_line on <len> octets of <s>, copied against a guard page.
 * *used is preset to a sentinel, so a test sees whether it was written. */
#define NOT_SET ((size_t)0xdeadbeef)

#define ALL_CAPS                                                                                   \
	(RB_CAP_PIPELINING | RB_CAP_STARTTLS | RB_CAP_CHUNKING | RB_CAP_8BITMIME | RB_CAP_SIZE)

static long find(const char *s, size_t len, size_t *used)
{
	*used = NOT_SET;
	return rb_reply_find_line(guarded(0, s, len), len, used);
}

static long find_str(const char *s, size_t *used)
{
	return find(s, strlen(s), used);
}

/* One reply line (no CRLF), against a guard page. */
static int feed(struct rb_reply *r, const char *s)
{
	size_t n = strlen(s);

	return rb_reply_line(r, guarded(1, s, n), n);
}

/* ---- rb_reply_find_line --------------------------------------------------- */

Test(rb_reply, find_complete_line)
{
	size_t used;

	cr_assert_eq(find_str("250 OK\r\n", &used), 6);
	cr_assert_eq(used, 8);
	cr_assert_eq(find_str("\r\n", &used), 0, "an empty line is a line");
	cr_assert_eq(used, 2);
}

Test(rb_reply, find_first_of_several_lines)
{
	size_t used;

	cr_assert_eq(find_str("250-a\r\n250 bb\r\n", &used), 5);
	cr_assert_eq(used, 7);
	/* A complete line followed by a partial one. */
	cr_assert_eq(find_str("220 x\r\n25", &used), 5);
	cr_assert_eq(used, 7);
	/* A complete line followed by garbage: the garbage is the next call's. */
	cr_assert_eq(find_str("220 x\r\n\n", &used), 5);
	cr_assert_eq(used, 7);
}

Test(rb_reply, find_partial_line)
{
	size_t used;

	cr_assert_eq(find_str("", &used), -1);
	cr_assert_eq(find_str("2", &used), -1);
	cr_assert_eq(find_str("250 OK", &used), -1);
	cr_assert_eq(used, NOT_SET, "used left alone without a line");
}

Test(rb_reply, find_cr_at_end_of_buffer_waits)
{
	size_t used;

	cr_assert_eq(find_str("250 OK\r", &used), -1, "the LF may still come");
	cr_assert_eq(find_str("\r", &used), -1);
	cr_assert_eq(used, NOT_SET);
	/* ... and once it came: */
	cr_assert_eq(find_str("250 OK\r\n", &used), 6);
	cr_assert_eq(used, 8);
}

Test(rb_reply, find_bare_lf)
{
	size_t used;

	cr_assert_eq(find_str("250 OK\n", &used), -2);
	cr_assert_eq(find_str("\n", &used), -2);
	cr_assert_eq(find_str("250\nOK\r\n", &used), -2, "LF before the CRLF");
	cr_assert_eq(find_str("250 OK\n\r\n", &used), -2);
}

Test(rb_reply, find_bare_cr_followed_by_something)
{
	size_t used;

	cr_assert_eq(find_str("250\rOK\r\n", &used), -2);
	cr_assert_eq(find_str("250 OK\r\r\n", &used), -2, "CR CR LF");
	cr_assert_eq(find_str("\rx", &used), -2);
	cr_assert_eq(find_str("250 OK\rx", &used), -2, "no need to wait for more");
}

Test(rb_reply, find_nul_is_an_ordinary_octet)
{
	size_t used;

	cr_assert_eq(find("25\0 x\r\n", 7, &used), 5);
	cr_assert_eq(used, 7);
}

Test(rb_reply, find_line_length_limit)
{
	size_t n = RB_REPLY_LINE_MAX + 64, used;
	char *p = malloc(n);

	cr_assert(p);
	memset(p, 'a', n);
	/* No end within RB_REPLY_LINE_MAX octets: refused, however much more. */
	cr_assert_eq(find(p, RB_REPLY_LINE_MAX, &used), -2);
	cr_assert_eq(find(p, RB_REPLY_LINE_MAX + 1, &used), -2);
	cr_assert_eq(find(p, n, &used), -2);
	cr_assert_eq(used, NOT_SET);
	/* One octet short of the limit: it may still end. */
	cr_assert_eq(find(p, RB_REPLY_LINE_MAX - 1, &used), -1);

	/* A line with its CRLF exactly RB_REPLY_LINE_MAX octets long is fine. */
	memcpy(p + RB_REPLY_LINE_MAX - 2, "\r\n", 2);
	cr_assert_eq(find(p, n, &used), RB_REPLY_LINE_MAX - 2);
	cr_assert_eq(used, RB_REPLY_LINE_MAX);
	cr_assert_eq(find(p, RB_REPLY_LINE_MAX, &used), RB_REPLY_LINE_MAX - 2);
	cr_assert_eq(used, RB_REPLY_LINE_MAX);

	/* RB_REPLY_LINE_MAX octets of text, then the CRLF: too long. */
	memset(p, 'a', n);
	memcpy(p + RB_REPLY_LINE_MAX, "\r\n", 2);
	cr_assert_eq(find(p, RB_REPLY_LINE_MAX + 2, &used), -2);
	free(p);
}

Test(rb_reply, find_used_lengths_walk_a_buffer)
{
	static const char buf[] = "220-a\r\n220-bcd\r\n\r\n220 efgh\r\n";
	static const long want_len[] = {5, 7, 0, 8};
	size_t off = 0, used;

	for (size_t i = 0; i < sizeof(want_len) / sizeof(want_len[0]); i++) {
		long n = find(buf + off, sizeof(buf) - 1 - off, &used);

		cr_assert_eq(n, want_len[i], "line %zu: %ld", i, n);
		cr_assert_eq(used, (size_t)n + 2, "line %zu", i);
		cr_assert_eq(memcmp(buf + off + n, "\r\n", 2), 0);
		off += used;
	}
	cr_assert_eq(off, sizeof(buf) - 1);
	cr_assert_eq(find(buf + off, 0, &used), -1);
}

/* ---- rb_reply_line -------------------------------------------------------- */

Test(rb_reply, single_line_reply)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "220 mx.example.org ESMTP ready"), 1);
	cr_assert_eq(r.code, 220);
	cr_assert_eq(r.caps, 0);
	cr_assert_str_eq(r.text, "mx.example.org ESMTP ready");
}

Test(rb_reply, code_alone)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "250"), 1);
	cr_assert_eq(r.code, 250);
	cr_assert_str_eq(r.text, "");
	cr_assert_eq(feed(&r, "354 "), 1, "code and a space, empty text");
	cr_assert_eq(r.code, 354);
	cr_assert_str_eq(r.text, "");
}

Test(rb_reply, every_first_digit_2_to_5)
{
	static const char *const ok[] = {"200 a", "354 b", "421 c", "554 d", "559 e", "250 f"};
	static const int codes[] = {200, 354, 421, 554, 559, 250};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct rb_reply r = {0};

		cr_assert_eq(feed(&r, ok[i]), 1, "%s", ok[i]);
		cr_assert_eq(r.code, codes[i], "%s", ok[i]);
	}
}

Test(rb_reply, ehlo_reply_with_caps)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "250-mx.example.org Hello client"), 0);
	cr_assert_eq(feed(&r, "250-pipelining"), 0);
	cr_assert_eq(feed(&r, "250-StartTLS"), 0);
	cr_assert_eq(feed(&r, "250-CHUNKING"), 0);
	cr_assert_eq(feed(&r, "250-8bitmime"), 0);
	cr_assert_eq(feed(&r, "250 Size 1000"), 1);
	cr_assert_eq(r.code, 250);
	cr_assert_eq(r.caps, ALL_CAPS, "caps %#x", r.caps);
	cr_assert_str_eq(r.text, "mx.example.org Hello client", "the first line's text");
}

Test(rb_reply, each_cap_alone)
{
	static const struct {
		const char *line;
		unsigned cap;
	} t[] = {
	    {"250 PIPELINING", RB_CAP_PIPELINING},
	    {"250 STARTTLS", RB_CAP_STARTTLS},
	    {"250 CHUNKING", RB_CAP_CHUNKING},
	    {"250 8BITMIME", RB_CAP_8BITMIME},
	    {"250 SIZE", RB_CAP_SIZE},
	    {"250 SIZE 35882577", RB_CAP_SIZE},
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct rb_reply r = {0};

		cr_assert_eq(feed(&r, "250-host"), 0);
		cr_assert_eq(feed(&r, t[i].line), 1, "%s", t[i].line);
		cr_assert_eq(r.caps, t[i].cap, "%s: caps %#x", t[i].line, r.caps);
	}
}

Test(rb_reply, unknown_and_near_miss_keywords_ignored)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "250-host"), 0);
	cr_assert_eq(feed(&r, "250-AUTH PLAIN LOGIN"), 0);
	cr_assert_eq(feed(&r, "250-ENHANCEDSTATUSCODES"), 0);
	cr_assert_eq(feed(&r, "250-SMTPUTF8"), 0);
	cr_assert_eq(feed(&r, "250-PIPELININGX"), 0, "a longer word is another keyword");
	cr_assert_eq(feed(&r, "250-PIPELIN"), 0, "so is a prefix");
	cr_assert_eq(feed(&r, "250-SIZES 10"), 0);
	cr_assert_eq(feed(&r, "250-X STARTTLS"), 0, "only the first word counts");
	cr_assert_eq(feed(&r, "250-"), 0, "an empty continuation line");
	cr_assert_eq(feed(&r, "250 DSN"), 1);
	cr_assert_eq(r.caps, 0, "caps %#x", r.caps);
}

Test(rb_reply, keyword_on_first_line_is_not_a_cap)
{
	struct rb_reply r = {0};

	/* The first line of an EHLO reply is the server's name. */
	cr_assert_eq(feed(&r, "250-PIPELINING"), 0);
	cr_assert_eq(feed(&r, "250 STARTTLS"), 1);
	cr_assert_eq(r.caps, RB_CAP_STARTTLS);
	cr_assert_eq(feed(&r, "250 CHUNKING"), 1);
	cr_assert_eq(r.caps, 0, "a single-line reply has no keyword lines");
}

Test(rb_reply, text_made_printable)
{
	struct rb_reply r = {0};
	static const char line[] = "550 bad\tuser\x01\x7f\x80\xff!";

	cr_assert_eq(rb_reply_line(&r, guarded(1, line, sizeof(line) - 1), sizeof(line) - 1), 1);
	cr_assert_eq(r.code, 550);
	cr_assert_str_eq(r.text, "bad?user?\?\?\?!");
}

Test(rb_reply, text_with_nul_made_printable)
{
	struct rb_reply r = {0};

	cr_assert_eq(rb_reply_line(&r, guarded(1, "250 a\0b", 7), 7), 1);
	cr_assert_eq(r.text[0], 'a');
	cr_assert_eq(r.text[1], '?', "a NUL does not cut the text");
	cr_assert_eq(r.text[2], 'b');
	cr_assert_eq(r.text[3], '\0');
}

Test(rb_reply, long_text_cut_to_buffer)
{
	struct rb_reply r;
	char line[4 + 500 + 1];

	memset(&r, 0x55, sizeof(r)); /* not zeroed: text must still end */
	r.lines = 0;
	memcpy(line, "554 ", 4);
	for (size_t i = 0; i < 500; i++)
		line[4 + i] = (char)('a' + i % 26);
	line[504] = '\0';
	cr_assert_eq(feed(&r, line), 1);
	cr_assert_eq(r.code, 554);
	cr_assert_eq(strlen(r.text), sizeof(r.text) - 1);
	cr_assert_eq(memcmp(r.text, line + 4, sizeof(r.text) - 1), 0);
}

Test(rb_reply, text_exactly_buffer_size_minus_one)
{
	struct rb_reply r = {0};
	char line[4 + sizeof(r.text)];

	memcpy(line, "250 ", 4);
	memset(line + 4, 'x', sizeof(r.text) - 1);
	line[4 + sizeof(r.text) - 1] = '\0';
	cr_assert_eq(feed(&r, line), 1);
	cr_assert_str_eq(r.text, line + 4);
}

Test(rb_reply, next_reply_starts_fresh)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "250-host greets you"), 0);
	cr_assert_eq(feed(&r, "250-STARTTLS"), 0);
	cr_assert_eq(feed(&r, "250 PIPELINING"), 1);
	cr_assert_eq(r.caps, RB_CAP_STARTTLS | RB_CAP_PIPELINING);
	/* A different code right after the completed reply is a new reply. */
	cr_assert_eq(feed(&r, "354 go ahead"), 1);
	cr_assert_eq(r.code, 354);
	cr_assert_eq(r.caps, 0, "caps reset");
	cr_assert_str_eq(r.text, "go ahead");
	/* And a multi-line one with other caps. */
	cr_assert_eq(feed(&r, "250-other"), 0);
	cr_assert_eq(r.code, 250);
	cr_assert_eq(feed(&r, "250 CHUNKING"), 1);
	cr_assert_eq(r.caps, RB_CAP_CHUNKING);
	cr_assert_str_eq(r.text, "other");
	/* The same code again is a new reply too, with the new text. */
	cr_assert_eq(feed(&r, "250"), 1);
	cr_assert_eq(r.caps, 0);
	cr_assert_str_eq(r.text, "");
}

Test(rb_reply, text_kept_from_first_line_not_last)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "421-first"), 0);
	cr_assert_str_eq(r.text, "first");
	cr_assert_eq(feed(&r, "421-second"), 0);
	cr_assert_eq(feed(&r, "421 third"), 1);
	cr_assert_str_eq(r.text, "first");
}

Test(rb_reply, code_change_mid_reply)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "250-host"), 0);
	cr_assert_eq(feed(&r, "251 other"), -1);
	cr_assert(strlen(r.text) > 0, "says why");
	/* After the error the next line starts a new reply. */
	cr_assert_eq(feed(&r, "220 hello"), 1);
	cr_assert_eq(r.code, 220);
	cr_assert_str_eq(r.text, "hello");

	cr_assert_eq(feed(&r, "250-a"), 0);
	cr_assert_eq(feed(&r, "550-b"), -1, "a continuation line too");
}

static void bad(const char *line)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, line), -1, "'%s' accepted", line);
	cr_assert(strlen(r.text) > 0, "'%s': no reason given", line);
	cr_assert_lt(strlen(r.text), sizeof(r.text));
}

Test(rb_reply, bad_first_digit)
{
	bad("150 x");
	bad("650 x");
	bad("050 x");
	bad("950 x");
	bad("150");
	bad("650-x");
}

Test(rb_reply, bad_other_digits)
{
	bad("2a0 x");
	bad("25a x");
	bad("abc");
	bad("x250 x");
	bad(" 250 x");
	bad("260 x"); /* RFC 5321 4.2: the second digit is 0-5 */
	bad("2:0 x");
	bad("25: x");
}

Test(rb_reply, bad_separator)
{
	bad("250x");
	bad("250xOK");
	bad("250\tOK");
	bad("250_OK");
	bad("2500");
}

Test(rb_reply, too_short)
{
	bad("");
	bad("2");
	bad("25");
}

Test(rb_reply, bad_line_in_middle_of_reply)
{
	struct rb_reply r = {0};

	cr_assert_eq(feed(&r, "250-host"), 0);
	cr_assert_eq(feed(&r, "25"), -1);
	cr_assert_eq(feed(&r, "250 fresh"), 1, "a new reply after the error");
	cr_assert_str_eq(r.text, "fresh");
}

Test(rb_reply, error_text_is_printable_and_cut)
{
	struct rb_reply r = {0};
	char line[300];

	memset(line, '\x01', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	cr_assert_eq(feed(&r, line), -1);
	cr_assert_lt(strlen(r.text), sizeof(r.text));
	for (const char *c = r.text; *c; c++)
		cr_assert(*c >= 0x20 && *c < 0x7f, "octet %#x in the reason", (unsigned char)*c);
}

Test(rb_reply, lines_split_by_find_line)
{
	/* The two together, as a session uses them. */
	static const char buf[] = "250-mx Hi\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
	                          "250-PIPELINING\r\n250-CHUNKING\r\n250 STARTTLS\r\n"
	                          "250 2.1.0 Ok\r\n";
	struct rb_reply r = {0};
	size_t off = 0, used;
	int replies = 0;
	unsigned caps[2] = {0};

	while (off < sizeof(buf) - 1) {
		long n = rb_reply_find_line(buf + off, sizeof(buf) - 1 - off, &used);
		int rc;

		cr_assert_geq(n, 0);
		rc = rb_reply_line(&r, buf + off, (size_t)n);
		cr_assert_geq(rc, 0);
		if (rc == 1) {
			cr_assert_lt(replies, 2);
			caps[replies++] = r.caps;
		}
		off += used;
	}
	cr_assert_eq(replies, 2);
	cr_assert_eq(caps[0], ALL_CAPS);
	cr_assert_eq(caps[1], 0);
	cr_assert_str_eq(r.text, "2.1.0 Ok");
}
