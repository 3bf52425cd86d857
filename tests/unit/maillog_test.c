/* Unit tests for core/maillog and the line building of core/log: the exact
 * text of each event (the words pflogsumm matches), the JSON form of the
 * same fields, escaping, cutting, and the helpers. Lines are caught in a
 * log sink, as the workers' are. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/maillog.h"

static struct log_sink sink;

static void setup_text(void)
{
	log_setup("mx.test", LOG_FMT_TEXT);
	log_threshold = LOG_INFO;
	sink.len = 0;
	log_sink_set(&sink);
}

static void setup_json(void)
{
	setup_text();
	log_setup("mx.test", LOG_FMT_JSON);
}

static void teardown(void)
{
	log_sink_set(NULL);
	free(sink.p);
	sink = (struct log_sink){0};
	log_setup("mx.test", LOG_FMT_TEXT);
}

/* The one line in the sink, without its time, checked for the syslog
 * prefix: "<RFC 3339 time> mx.test <prog>[<pid>]: " ("" if it is not). */
static const char *text_line(const char *prog)
{
	static char out[2048];
	char want[128];
	size_t n = sink.len;

	cr_assert(n > 25 && sink.p[n - 1] == '\n' && !memchr(sink.p, '\n', n - 1),
	          "not one line: %.*s", (int)n, sink.p);
	/* 2026-12-07T12:08:47.123Z */
	cr_assert(sink.p[4] == '-' && sink.p[10] == 'T' && sink.p[19] == '.' && sink.p[23] == 'Z',
	          "%.*s", (int)n, sink.p);
	snprintf(want, sizeof(want), " mx.test %s[%ld]: ", prog, (long)getpid());
	cr_assert(strncmp(sink.p + 24, want, strlen(want)) == 0, "%.*s", (int)n, sink.p);
	snprintf(out, sizeof(out), "%.*s", (int)(n - 24 - strlen(want) - 1),
	         sink.p + 24 + strlen(want));
	sink.len = 0;
	return out;
}

static const char *json_line(void)
{
	static char out[2048];
	size_t n = sink.len;

	cr_assert(n > 2 && sink.p[0] == '{' && sink.p[n - 2] == '}' && sink.p[n - 1] == '\n',
	          "%.*s", (int)n, sink.p);
	snprintf(out, sizeof(out), "%.*s", (int)(n - 1), sink.p);
	sink.len = 0;
	return out;
}

#define EXPECT_HAS(line, part) cr_expect(strstr((line), (part)), "no '%s' in %s", (part), (line))

TestSuite(maillog, .init = setup_text, .fini = teardown);

Test(maillog, session_lines_in_postfix_words)
{
	static const char *const names[] = {"ehlo", "mail", "rcpt", "data", "quit", "noop"};
	static const uint32_t ok[] = {1, 1, 1, 1, 1, 0}, sent[] = {1, 1, 2, 1, 1, 0};
	const struct maillog_cmds mc = {names, ok, sent, 6};

	maillog_connect("192.0.2.1");
	cr_expect_str_eq(text_line("ringmx/smtpd"), "connect from unknown[192.0.2.1]");
	maillog_client("7F3A", "2001:db8::1");
	cr_expect_str_eq(text_line("ringmx/smtpd"), "7F3A: client=unknown[2001:db8::1]");
	maillog_message_id("7F3A", SV("<x@y>"));
	cr_expect_str_eq(text_line("ringmx/cleanup"), "7F3A: message-id=<x@y>");
	maillog_queued("7F3A", "a@b", 1234, 2);
	cr_expect_str_eq(text_line("ringmx/qmgr"),
	                 "7F3A: from=<a@b>, size=1234, nrcpt=2 (queue active)");
	maillog_queued("7F3B", "", 10, 1);
	cr_expect_str_eq(text_line("ringmx/qmgr"),
	                 "7F3B: from=<>, size=10, nrcpt=1 (queue active)");
	maillog_disconnect("192.0.2.1", &mc);
	cr_expect_str_eq(text_line("ringmx/smtpd"), "disconnect from unknown[192.0.2.1] ehlo=1 "
	                                            "mail=1 rcpt=1/2 data=1 quit=1 commands=5/6");
	maillog_removed("7F3A");
	cr_expect_str_eq(text_line("ringmx/qmgr"), "7F3A: removed");
	maillog_bounce("7F3A", "7F3C");
	cr_expect_str_eq(text_line("ringmx/bounce"),
	                 "7F3A: sender non-delivery notification: 7F3C");
}

Test(maillog, delivery_line)
{
	struct maillog_dlv d = {
	    .qid = "7F3A",
	    .to = "x@y",
	    .relay = "mx.y[192.0.2.9]:25",
	    .status = "sent",
	    .reply = "250 2.0.0 Ok: queued as Z",
	    .delay_s = 3,
	    .delays_ms = {2000, 5, 120, 1234},
	    .attempt = 2,
	};

	maillog_delivery(&d);
	cr_expect_str_eq(text_line("ringmx/smtp"),
	                 "7F3A: to=<x@y>, relay=mx.y[192.0.2.9]:25, delay=3, delays=2/0/0.12/1.23, "
	                 "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as Z)");
	d.status = "deferred";
	d.relay = "none";
	d.reply = "connect to mx: Connection refused";
	maillog_delivery(&d);
	cr_expect_str_eq(text_line("ringmx/smtp"),
	                 "7F3A: to=<x@y>, relay=none, delay=3, delays=2/0/0.12/1.23, dsn=4.0.0, "
	                 "status=deferred (connect to mx: Connection refused)");
}

Test(maillog, reject_line)
{
	struct maillog_reject r = {
	    .verb = "RCPT",
	    .addr = "192.0.2.1",
	    .reply = SV("550 5.1.1 <x@y>: Recipient address rejected: User unknown"),
	    .from = SV("a@b"),
	    .to = SV("x@y"),
	    .proto = "ESMTP",
	    .helo = "h.test",
	};

	maillog_reject(&r);
	cr_expect_str_eq(
	    text_line("ringmx/smtpd"),
	    "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <x@y>: Recipient "
	    "address rejected: User unknown; from=<a@b> to=<x@y> proto=ESMTP "
	    "helo=<h.test>");
	r.verb = "MAIL";
	r.to = (struct sv){0};
	r.proto = "SMTP";
	r.reply = SV("552 5.3.4 Message size exceeds fixed limit");
	maillog_reject(&r);
	cr_expect_str_eq(text_line("ringmx/smtpd"),
	                 "NOQUEUE: reject: MAIL from unknown[192.0.2.1]: 552 5.3.4 Message size "
	                 "exceeds fixed limit; from=<a@b> proto=SMTP helo=<h.test>");
}

Test(maillog, levels_in_postfix_words_and_control_characters_made_visible)
{
	log_msg(LOG_P_MASTER, LOG_INFO, "listening on %s", "x");
	cr_expect_str_eq(text_line("ringmx/master"), "listening on x");
	log_msg(LOG_P_SMTP, LOG_WARN, "relay: %s", "a\r\nb\x7f");
	cr_expect_str_eq(text_line("ringmx/smtp"), "warning: relay: a??b?");
	log_threshold = LOG_DEBUG;
	log_msg(LOG_P_QMGR, LOG_DEBUG, "d");
	cr_expect_str_eq(text_line("ringmx/qmgr"), "debug: d");
	log_threshold = LOG_WARN; /* info lines are left out */
	maillog_removed("7F3A");
	log_msg(LOG_P_MASTER, LOG_INFO, "x");
	cr_expect_eq(sink.len, 0);
}

Test(maillog, overlong_text_line_is_cut_to_one_line)
{
	char big[3000];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_msg(LOG_P_MASTER, LOG_INFO, "%s", big);
	cr_assert_leq(sink.len, LOG_LINE_MAX);
	(void)text_line("ringmx/master");
}

Test(maillog, json_has_the_same_fields, .init = setup_json)
{
	struct maillog_dlv d = {
	    .qid = "7F3A",
	    .to = "x\"q@y",
	    .relay = "mx.y[192.0.2.9]:25",
	    .status = "bounced",
	    .reply = "550 5.1.1 no\tsuch \\ user",
	    .delay_s = 3,
	    .delays_ms = {2000, 5, 120, 1234},
	    .attempt = 1,
	};
	const char *l;

	maillog_delivery(&d);
	l = json_line();
	EXPECT_HAS(l, "{\"time\":\"20");
	EXPECT_HAS(l, "\",\"host\":\"mx.test\",\"program\":\"ringmx/smtp\",\"pid\":");
	EXPECT_HAS(
	    l, ",\"level\":\"info\",\"qid\":\"7F3A\",\"event\":\"delivery\",\"to\":\"x\\\"q@y\"");
	EXPECT_HAS(l, ",\"relay\":\"mx.y[192.0.2.9]:25\",\"delay\":3,\"delays\":\"2/0/0.12/1.23\"");
	EXPECT_HAS(l, ",\"delays_ms\":[2000,5,120,1234],\"dsn\":\"5.1.1\",\"status\":\"bounced\"");
	EXPECT_HAS(l, ",\"reply\":\"550 5.1.1 no\\u0009such \\\\ user\",\"attempt\":1}");
	maillog_queued("7F3A", "", 10, 1);
	l = json_line();
	EXPECT_HAS(l, "\"program\":\"ringmx/qmgr\"");
	EXPECT_HAS(l,
	           "\"qid\":\"7F3A\",\"event\":\"queued\",\"from\":\"\",\"size\":10,\"nrcpt\":1}");
	log_msg(LOG_P_MASTER, LOG_WARN, "a \"b\"");
	l = json_line();
	EXPECT_HAS(l, "\"level\":\"warn\",\"message\":\"a \\\"b\\\"\"}");
}

Test(maillog, json_utf8_passes_and_bad_bytes_become_replacement, .init = setup_json)
{
	const char *l;

	/* é, €, U+1F600; then a lone continuation byte, an overlong "/", a
	 * surrogate, a cut sequence at the end */
	log_msg(LOG_P_SMTP, LOG_INFO, "%s",
	        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80|\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82");
	l = json_line();
	EXPECT_HAS(l, "\"message\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80|\xef\xbf\xbd|"
	              "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
	              "\xef\xbf\xbd\xef\xbf\xbd\"}");
}

Test(maillog, json_overlong_value_is_cut_inside_its_string, .init = setup_json)
{
	static char big[3000];
	const char *l;

	memset(big, '"', sizeof(big) - 1); /* each takes two bytes escaped */
	log_msg(LOG_P_MASTER, LOG_INFO, "%s", big);
	cr_assert_leq(sink.len, LOG_LINE_MAX);
	l = json_line();
	/* whole escapes only, and the string and the object closed */
	cr_expect(strstr(l, "\\\"\"}") && l[strlen(l) - 1] == '}', "%s", l + strlen(l) - 20);
}

Test(maillog, dsn_of)
{
	static const struct {
		const char *reply, *want;
	} cases[] = {
	    {"250 2.0.0 Ok", "2.0.0"},
	    {"451 4.3.0 try later", "4.3.0"},
	    {"4.4.1 connect to x: refused", "4.4.1"},
	    {"550 5.7.123 nope", "5.7.123"},
	    {"550 no code here", "D"},
	    {"550 5.7.1234 too long", "D"},
	    {"", "D"},
	    {"250-2.1.5 Ok", "2.1.5"},
	};
	char out[16];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		maillog_dsn_of(cases[i].reply, "D", out, sizeof(out));
		cr_expect_str_eq(out, cases[i].want, "'%s': got %s", cases[i].reply, out);
	}
}

Test(maillog, message_id_in_the_header_section_only)
{
	static const char m1[] = "Subject: x\r\nMessage-ID:  <a@b> \r\nFrom: y\r\n\r\nbody\r\n";
	static const char m2[] = "Subject: x\r\n\r\nMessage-ID: <in@body>\r\n";
	static const char m3[] = "message-id:<c@d>"; /* no line end at all */
	struct sv v;

	v = maillog_message_id_find(m1, sizeof(m1) - 1);
	cr_assert_not_null(v.p);
	cr_expect(v.len == 5 && memcmp(v.p, "<a@b>", 5) == 0, "%.*s", (int)v.len, v.p);
	cr_expect_null(maillog_message_id_find(m2, sizeof(m2) - 1).p);
	v = maillog_message_id_find(m3, sizeof(m3) - 1);
	cr_expect(v.len == 5 && memcmp(v.p, "<c@d>", 5) == 0);
	cr_expect_null(maillog_message_id_find(NULL, 0).p);
	cr_expect_null(maillog_message_id_find("Message-ID:\r\n\r\n", 15).p);
}
