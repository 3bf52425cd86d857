/* recipients_test: the table parser (comments, CRLF, catch-all, quoted and
 * UTF-8 local parts, bad lines with their "file:line: reason"), the lookup
 * rules (case, exact, extensions, catch-all, trailing dot, NO_TABLE), files
 * (long lines, binary, missing, several merged) and the reference count. */
#include "core/recipients.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/testutil.h"

static struct recipients_builder bld;
static struct recipients *snap;
static char err[RECIPIENTS_ERR_MAX];
static char *tmp[8];
static size_t ntmp;

static void setup(void)
{
	recipients_builder_init(&bld, NULL);
	snap = NULL;
	err[0] = '\0';
}

static void teardown(void)
{
	recipients_unref(snap);
	recipients_builder_fini(&bld);
	for (size_t i = 0; i < ntmp; i++) {
		unlink(tmp[i]);
		free(tmp[i]);
	}
	ntmp = 0;
}

TestSuite(recipients, .init = setup, .fini = teardown);

/* Restarts the builder with options <o>. */
static void reinit(const struct recipients_opts *o)
{
	recipients_builder_fini(&bld);
	recipients_builder_init(&bld, o);
}

/* Adds <text> (the parser reads it against a guard page) and builds. */
static void build_from(const char *text)
{
	size_t len = strlen(text);

	cr_assert_eq(
	    recipients_builder_add_buffer(&bld, "t", guarded(0, text, len), len, err, sizeof(err)),
	    0, "%s", err);
	snap = recipients_build(&bld, err, sizeof(err));
	cr_assert_not_null(snap, "%s", err);
}

/* Looks <addr> up, split at its last '@', with both views against guard pages. */
static enum recipients_result look(const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t ll = (size_t)(at - addr), dl = strlen(at + 1);

	cr_assert_not_null(at, "%s", addr);
	return recipients_lookup(snap, sv_make(guarded(0, addr, ll), ll),
	                         sv_make(guarded(1, at + 1, dl), dl));
}

static const char *res_name(enum recipients_result r)
{
	return r == RECIPIENTS_KNOWN ? "KNOWN" : r == RECIPIENTS_UNKNOWN ? "UNKNOWN" : "NO_TABLE";
}

struct look_case {
	const char *addr;
	enum recipients_result want;
};

static void check_cases(const struct look_case *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		enum recipients_result got = look(c[i].addr);

		cr_expect_eq(got, c[i].want, "'%s': got %s want %s", c[i].addr, res_name(got),
		             res_name(c[i].want));
	}
}

#define CHECK(cases) check_cases((cases), sizeof(cases) / sizeof((cases)[0]))

static const char *write_tmp(const void *content, size_t len)
{
	char *path = strdup("/tmp/recipients_test.XXXXXX");
	int fd = mkstemp(path);
	const char *p = content;
	size_t done = 0;

	cr_assert_geq(fd, 0);
	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);

		cr_assert_gt(n, 0);
		done += (size_t)n;
	}
	close(fd);
	cr_assert_lt(ntmp, sizeof(tmp) / sizeof(tmp[0]));
	tmp[ntmp++] = path;
	return path;
}

static const char *write_tmp_str(const char *content)
{
	return write_tmp(content, strlen(content));
}

Test(recipients, empty_snapshot_has_no_tables)
{
	build_from("");
	cr_assert_eq(recipients_entries(snap), 0);
	cr_assert_eq(recipients_domains(snap), 0);
	cr_assert_eq(look("user@example.com"), RECIPIENTS_NO_TABLE);
	cr_assert_eq(recipients_lookup(NULL, SV("user"), SV("example.com")), RECIPIENTS_NO_TABLE);
	cr_assert_eq(recipients_entries(NULL), 0);
	cr_assert_eq(recipients_domains(NULL), 0);
	cr_assert_gt(recipients_memory(snap), 0);
	cr_assert_eq(recipients_memory(NULL), 0);
	recipients_unref(NULL);
}

Test(recipients, comments_blank_lines_and_crlf)
{
	static const struct look_case cases[] = {
	    {"alice@example.com", RECIPIENTS_KNOWN},     {"bob@example.com", RECIPIENTS_KNOWN},
	    {"carol@example.com", RECIPIENTS_KNOWN},     {"dave@example.com", RECIPIENTS_KNOWN},
	    {"erin@example.com", RECIPIENTS_KNOWN},      {"frank@example.com", RECIPIENTS_KNOWN},
	    {"ghost@example.com", RECIPIENTS_UNKNOWN},   {"#not@example.com", RECIPIENTS_UNKNOWN},
	    {"mallory@example.com", RECIPIENTS_UNKNOWN}, {"ok@example.com", RECIPIENTS_UNKNOWN},
	};

	build_from("# recipient table\n"
	           "   # indented comment: #not@example.com\n"
	           "\t#not@example.com\n"
	           "alice@example.com\n"
	           "bob@example.com\tBob, room 12 mallory@example.com\n"
	           "carol@example.com    several spaces OK\n"
	           "\r\n"
	           "   \t \n"
	           "dave@example.com\r\n"
	           "  erin@example.com\t\r\n"
	           "frank@example.com"); /* no line end */
	CHECK(cases);
	cr_assert_eq(recipients_entries(snap), 6);
	cr_assert_eq(recipients_domains(snap), 1);
}

Test(recipients, catch_all_any_user_of_its_domain)
{
	static const struct look_case cases[] = {
	    {"anyone@example.org", RECIPIENTS_KNOWN},
	    {"ANYONE@Example.ORG.", RECIPIENTS_KNOWN},
	    {"a+b@example.org", RECIPIENTS_KNOWN},
	    {"\"quoted one\"@example.org", RECIPIENTS_KNOWN},
	    {"@example.org", RECIPIENTS_KNOWN},
	    {"listed@example.com", RECIPIENTS_KNOWN},
	    {"other@example.com", RECIPIENTS_UNKNOWN},
	    {"user@sub.example.org", RECIPIENTS_NO_TABLE},
	};

	build_from("@example.org\n"
	           "listed@example.org\n"
	           "listed@example.com\n"
	           "@EXAMPLE.org.\n");
	CHECK(cases);
	/* @example.org (once), listed@example.org, listed@example.com */
	cr_assert_eq(recipients_entries(snap), 3);
	cr_assert_eq(recipients_domains(snap), 2);
}

Test(recipients, quoted_local_parts_stored_as_written)
{
	static const struct look_case cases[] = {
	    {"\"john doe\"@example.com", RECIPIENTS_KNOWN},
	    {"\"JOHN Doe\"@example.com", RECIPIENTS_KNOWN},
	    {"john doe@example.com", RECIPIENTS_UNKNOWN},
	    {"\"john  doe\"@example.com", RECIPIENTS_UNKNOWN},
	    {"\"a@b\"@example.com", RECIPIENTS_KNOWN},
	    {"\"say \\\"hi\\\" x\"@example.com", RECIPIENTS_KNOWN},
	    {"\"tab\there\"@example.com", RECIPIENTS_KNOWN},
	};

	build_from("\"john doe\"@example.com\tquoted, with a space\n"
	           "\"a@b\"@example.com\n"
	           "\"say \\\"hi\\\" x\"@example.com comment\n"
	           "\"tab\there\"@example.com\n");
	CHECK(cases);
	cr_assert_eq(recipients_entries(snap), 4);
}

Test(recipients, utf8_local_parts_compared_as_octets)
{
	static const struct look_case cases[] = {
	    {"j\xc3\xb6rg@example.com", RECIPIENTS_KNOWN},
	    {"J\xc3\xb6RG@EXAMPLE.com", RECIPIENTS_KNOWN},   /* ASCII letters fold */
	    {"j\xc3\x96rg@example.com", RECIPIENTS_UNKNOWN}, /* U+00D6 is not U+00F6 */
	    {"jorg@example.com", RECIPIENTS_UNKNOWN},
	    {"\xe7\x94\xa8\xe6\x88\xb7@b\xc3\xbc"
	     "cher.example",
	     RECIPIENTS_KNOWN},
	    {"x@B\xc3\xbc"
	     "CHER.example",
	     RECIPIENTS_UNKNOWN},
	    {"x@b\xc3\x9c"
	     "cher.example",
	     RECIPIENTS_NO_TABLE},
	};

	build_from("j\xc3\xb6rg@example.com\n"
	           "\xe7\x94\xa8\xe6\x88\xb7@b\xc3\xbc"
	           "cher.example\n");
	CHECK(cases);
}

Test(recipients, case_folded_by_default)
{
	static const struct look_case cases[] = {
	    {"john.smith@example.com", RECIPIENTS_KNOWN},
	    {"JOHN.SMITH@EXAMPLE.COM", RECIPIENTS_KNOWN},
	    {"jOhN.SmItH@eXaMpLe.CoM", RECIPIENTS_KNOWN},
	    {"mixed@example.com", RECIPIENTS_KNOWN},
	    {"john.smit@example.com", RECIPIENTS_UNKNOWN},
	    {"john.smithh@example.com", RECIPIENTS_UNKNOWN},
	};

	build_from("John.Smith@Example.COM\nMIXED@example.com\n");
	CHECK(cases);
}

Test(recipients, exact_option_keeps_local_case_not_domain_case)
{
	static const struct recipients_opts o = {.exact = true};
	static const struct look_case cases[] = {
	    {"John.Smith@example.com", RECIPIENTS_KNOWN},
	    {"John.Smith@EXAMPLE.COM.", RECIPIENTS_KNOWN},
	    {"john.smith@example.com", RECIPIENTS_UNKNOWN},
	    {"JOHN.SMITH@example.com", RECIPIENTS_UNKNOWN},
	    {"lower@example.com", RECIPIENTS_KNOWN},
	    {"Lower@example.com", RECIPIENTS_UNKNOWN},
	    {"John.Smith+tag@example.com", RECIPIENTS_KNOWN},
	    {"john.smith+tag@example.com", RECIPIENTS_UNKNOWN},
	};

	reinit(&o);
	build_from("John.Smith@Example.COM\nlower@example.com\n");
	CHECK(cases);
}

Test(recipients, extension_cut_at_default_delimiter)
{
	static const struct look_case cases[] = {
	    {"user@example.com", RECIPIENTS_KNOWN},
	    {"user+tag@example.com", RECIPIENTS_KNOWN},
	    {"USER+Tag@example.com", RECIPIENTS_KNOWN},
	    {"user+@example.com", RECIPIENTS_KNOWN},
	    {"user+a+b@example.com", RECIPIENTS_KNOWN}, /* cut at the first '+' */
	    {"user-tag@example.com", RECIPIENTS_UNKNOWN},
	    {"usertag@example.com", RECIPIENTS_UNKNOWN},
	    {"+user@example.com", RECIPIENTS_UNKNOWN}, /* never cut to "" */
	    {"listed+only@example.com", RECIPIENTS_KNOWN},
	    {"listed@example.com", RECIPIENTS_UNKNOWN},
	    {"listed+other@example.com", RECIPIENTS_UNKNOWN},
	    {"use+tag@example.com", RECIPIENTS_UNKNOWN},
	};

	build_from("user@example.com\nlisted+only@example.com\n");
	CHECK(cases);
}

Test(recipients, extension_longer_than_a_line_still_cut)
{
	char l[3000];

	build_from("user@example.com\n");
	memset(l, 'x', sizeof(l));
	memcpy(l, "USER+", 5);
	cr_assert_eq(recipients_lookup(snap, sv_make(l, sizeof(l)), SV("example.com")),
	             RECIPIENTS_KNOWN);
	l[4] = 'x'; /* no delimiter: nothing to cut */
	cr_assert_eq(recipients_lookup(snap, sv_make(l, sizeof(l)), SV("example.com")),
	             RECIPIENTS_UNKNOWN);
	memcpy(l + 1500, "+", 1); /* the first delimiter lies past a line */
	cr_assert_eq(recipients_lookup(snap, sv_make(l, sizeof(l)), SV("example.com")),
	             RECIPIENTS_UNKNOWN);
}

Test(recipients, extension_with_several_delimiters)
{
	static const struct recipients_opts o = {.delimiters = "+-="};
	static const struct look_case cases[] = {
	    {"user+tag@example.com", RECIPIENTS_KNOWN},
	    {"user-tag@example.com", RECIPIENTS_KNOWN},
	    {"user=tag@example.com", RECIPIENTS_KNOWN},
	    {"user-a+b@example.com", RECIPIENTS_KNOWN},
	    {"user_tag@example.com", RECIPIENTS_UNKNOWN},
	    /* The first delimiter of any kind cuts: "a+b-c" is tried as
	     * itself, then "a", never "a+b". */
	    {"a+b-c@example.com", RECIPIENTS_UNKNOWN},
	    {"a+b@example.com", RECIPIENTS_KNOWN},
	    /* Postfix split_addr(): with '-' a delimiter, owner-* and
	     * *-request stay whole; MAILER-DAEMON always does. */
	    {"owner-list@example.com", RECIPIENTS_UNKNOWN},
	    {"list-request@example.com", RECIPIENTS_UNKNOWN},
	    {"list-other@example.com", RECIPIENTS_KNOWN},
	    {"mailer-daemon@example.com", RECIPIENTS_UNKNOWN},
	    {"MAILER-DAEMON@example.com", RECIPIENTS_UNKNOWN},
	    {"mailer-x@example.com", RECIPIENTS_KNOWN},
	};

	reinit(&o);
	build_from("user@example.com\na+b@example.com\nowner@example.com\nlist@example.com\n"
	           "mailer@example.com\n");
	CHECK(cases);
}

Test(recipients, owner_and_request_cut_when_dash_is_no_delimiter)
{
	static const struct recipients_opts o = {.delimiters = "+"};
	static const struct look_case cases[] = {
	    {"owner+x@example.com", RECIPIENTS_KNOWN},
	    {"owner-list+x@example.com", RECIPIENTS_KNOWN},
	    {"owner-list@example.com", RECIPIENTS_KNOWN},
	    {"list-request+x@example.com", RECIPIENTS_KNOWN},
	};

	reinit(&o);
	build_from("owner@example.com\nowner-list@example.com\nlist-request@example.com\n");
	CHECK(cases);
}

Test(recipients, empty_delimiter_set_means_no_extensions)
{
	static const struct recipients_opts o = {.delimiters = ""};
	static const struct look_case cases[] = {
	    {"user@example.com", RECIPIENTS_KNOWN},
	    {"user+tag@example.com", RECIPIENTS_UNKNOWN},
	    {"user+tag@example.org", RECIPIENTS_KNOWN}, /* catch-all still answers */
	};

	reinit(&o);
	build_from("user@example.com\n@example.org\n");
	CHECK(cases);
}

Test(recipients, catch_all_after_user_and_extension_miss)
{
	static const struct look_case cases[] = {
	    {"user@example.com", RECIPIENTS_KNOWN},
	    {"user+x@example.com", RECIPIENTS_KNOWN},
	    {"nobody+x@example.com", RECIPIENTS_KNOWN},
	    {"nobody@example.com", RECIPIENTS_KNOWN},
	};

	build_from("user@example.com\n@example.com\n");
	CHECK(cases);
	cr_assert_eq(recipients_entries(snap), 2);
}

Test(recipients, trailing_dot_ignored_and_other_domains_have_no_table)
{
	static const struct look_case cases[] = {
	    {"a@example.com", RECIPIENTS_KNOWN},
	    {"a@example.com.", RECIPIENTS_KNOWN},
	    {"b@example.net", RECIPIENTS_KNOWN},
	    {"b@example.net.", RECIPIENTS_KNOWN},
	    {"a@example.com..", RECIPIENTS_NO_TABLE},
	    {"a@sub.example.com", RECIPIENTS_NO_TABLE},
	    {"a@example.co", RECIPIENTS_NO_TABLE},
	    {"a@example.comm", RECIPIENTS_NO_TABLE},
	    {"a@com", RECIPIENTS_NO_TABLE},
	    {"a@", RECIPIENTS_NO_TABLE},
	    {"a@.", RECIPIENTS_NO_TABLE},
	    {"a@[192.0.2.1]", RECIPIENTS_NO_TABLE},
	    {"b@example.com", RECIPIENTS_UNKNOWN},
	    {"a@example.net", RECIPIENTS_UNKNOWN},
	};

	build_from("a@example.com.\nb@example.net\n");
	CHECK(cases);
	cr_assert_eq(recipients_domains(snap), 2);
}

Test(recipients, lookup_reads_only_its_views)
{
	const char *s = "userX@example.comXYZ";
	char longl[RECIPIENTS_LINE_MAX + 10];

	build_from("user@example.com\n");
	cr_assert_eq(recipients_lookup(snap, sv_make(s, 4), sv_make(s + 6, 11)), RECIPIENTS_KNOWN);
	cr_assert_eq(recipients_lookup(snap, sv_make(s, 5), sv_make(s + 6, 11)),
	             RECIPIENTS_UNKNOWN);
	cr_assert_eq(recipients_lookup(snap, sv_make(s, 4), sv_make(s + 6, 10)),
	             RECIPIENTS_NO_TABLE);
	cr_assert_eq(recipients_lookup(snap, sv_make("user\0", 5), SV("example.com")),
	             RECIPIENTS_UNKNOWN);
	cr_assert_eq(recipients_lookup(snap, SV("user"), sv_make("example.com\0", 12)),
	             RECIPIENTS_NO_TABLE);
	cr_assert_eq(recipients_lookup(snap, sv_make(NULL, 0), SV("example.com")),
	             RECIPIENTS_UNKNOWN);
	memset(longl, 'u', sizeof(longl));
	cr_assert_eq(recipients_lookup(snap, sv_make(longl, sizeof(longl)), SV("example.com")),
	             RECIPIENTS_UNKNOWN);
}

Test(recipients, duplicates_counted_once)
{
	build_from("a@example.com\nA@EXAMPLE.COM.\na@example.com # again\nb@example.com\n");
	cr_assert_eq(recipients_entries(snap), 2);
	cr_assert_eq(recipients_domains(snap), 1);
}

Test(recipients, longest_line_accepted_one_more_refused)
{
	char line[RECIPIENTS_LINE_MAX + 8];
	size_t n = RECIPIENTS_LINE_MAX - strlen("@example.com");

	memset(line, 'a', n);
	strcpy(line + n, "@example.com\r\n"); /* 1000 octets and CR LF */
	build_from(line);
	cr_assert_eq(recipients_entries(snap), 1);
	line[RECIPIENTS_LINE_MAX] = '\0';
	cr_assert_eq(look(line), RECIPIENTS_KNOWN);

	recipients_unref(snap);
	snap = NULL;
	line[0] = 'b';
	memmove(line + 1, line, RECIPIENTS_LINE_MAX + 1); /* 1001 octets */
	cr_assert_eq(recipients_builder_add_buffer(&bld, "t", line, strlen(line), err, sizeof(err)),
	             -EINVAL);
	cr_assert_str_eq(err, "t:1: line longer than 1000 octets");
}

struct bad_case {
	const char *text;
	const char *want; /* the reason after "NAME:" */
};

static const struct bad_case bad_cases[] = {
    {"nobody\n", "1: no '@' in address"},
    {"ok@example.com\n# c\n\nnobody  # no domain\n", "4: no '@' in address"},
    {"\"a@b\"\n", "1: no '@' in address"},
    {"a@b@example.com\n", "1: more than one '@' in address"},
    {"\"a b@example.com\n", "1: unterminated quoted string"},
    {"user@\n", "1: bad domain: empty domain name"},
    {"user@bad_domain.example\n",
     "1: bad domain: invalid character (letters, digits, '-' and '.' only)"},
    {"user@a..example\n", "1: bad domain: empty label"},
    {"user@-a.example\n", "1: bad domain: label starts with '-'"},
    {"user@[192.0.2.1]\n", "1: bad domain: address literals are not domains"},
    {"user@example.com;x\n",
     "1: bad domain: invalid character (letters, digits, '-' and '.' only)"},
    {"\"\"@example.com\n", "1: empty local part"},
    {"ok@example.com\nus\x01r@example.com\n", "2: control character (0x01)"},
    {"a@example.com\r\r\n", "1: control character (0x0d)"},
    {"a@example.com\rb@example.com\n", "1: control character (0x0d)"},
    {"# comment \x7f\n", "1: control character (0x7f)"},
    {"a@example.com\tcomment\x1b[31m\n", "1: control character (0x1b)"},
};

Test(recipients, bad_lines_name_buffer_and_line)
{
	char want[RECIPIENTS_ERR_MAX];

	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const char *t = bad_cases[i].text;

		reinit(NULL);
		err[0] = '\0';
		snprintf(want, sizeof(want), "/etc/rx/users:%s", bad_cases[i].want);
		cr_expect_eq(recipients_builder_add_buffer(&bld, "/etc/rx/users",
		                                           guarded(0, t, strlen(t)), strlen(t), err,
		                                           sizeof(err)),
		             -EINVAL, "case %zu", i);
		cr_expect_str_eq(err, want, "case %zu: got '%s' want '%s'", i, err, want);
	}
}

Test(recipients, bad_lines_name_file_and_line)
{
	char want[RECIPIENTS_ERR_MAX];

	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const char *path = write_tmp_str(bad_cases[i].text);

		reinit(NULL);
		err[0] = '\0';
		snprintf(want, sizeof(want), "%s:%s", path, bad_cases[i].want);
		cr_expect_eq(recipients_builder_add_file(&bld, path, err, sizeof(err)), -EINVAL,
		             "case %zu", i);
		cr_expect_str_eq(err, want, "case %zu: got '%s' want '%s'", i, err, want);
		unlink(tmp[--ntmp]);
		free(tmp[ntmp]);
	}
}

Test(recipients, failed_builder_stays_failed_and_publishes_nothing)
{
	char first[RECIPIENTS_ERR_MAX];

	cr_assert_eq(
	    recipients_builder_add_buffer(&bld, "a", "x@example.com\n", 14, err, sizeof(err)), 0);
	cr_assert_eq(
	    recipients_builder_add_buffer(&bld, "b", "y@example.com\nbad\n", 18, err, sizeof(err)),
	    -EINVAL);
	cr_assert_str_eq(err, "b:2: no '@' in address");
	strcpy(first, err);
	err[0] = '\0';
	cr_assert_eq(
	    recipients_builder_add_buffer(&bld, "c", "z@example.com\n", 14, err, sizeof(err)),
	    -EINVAL);
	cr_assert_str_eq(err, first);
	err[0] = '\0';
	cr_assert_eq(recipients_builder_add_file(&bld, "/nonexistent/x", err, sizeof(err)),
	             -EINVAL);
	cr_assert_str_eq(err, first);
	err[0] = '\0';
	cr_assert_null(recipients_build(&bld, err, sizeof(err)));
	cr_assert_str_eq(err, first);
}

/* A <len>-octet line of 'a' between two good lines, in a file. */
static const char *long_line_file(size_t len)
{
	const char *head = "first@example.com\n", *tail = "\nlast@example.com\n";
	size_t hl = strlen(head), tl = strlen(tail);
	char *p = malloc(hl + len + tl);
	const char *path;

	cr_assert_not_null(p);
	memcpy(p, head, hl);
	memset(p + hl, 'a', len);
	memcpy(p + hl + len, tail, tl);
	path = write_tmp(p, hl + len + tl);
	free(p);
	return path;
}

Test(recipients, ten_megabyte_line_refused_cleanly)
{
	size_t len = 10u << 20;
	const char *path = long_line_file(len);
	char want[RECIPIENTS_ERR_MAX];
	char *p;

	snprintf(want, sizeof(want), "%s:2: line longer than 1000 octets", path);
	cr_assert_eq(recipients_builder_add_file(&bld, path, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, want);
	/* What was kept of the file: its first line, not the long one. */
	cr_assert_lt(bld.addrs.cap, 1u << 20, "arena %zu", bld.addrs.cap);

	reinit(NULL);
	p = malloc(len);
	cr_assert_not_null(p);
	memset(p, 'x', len);
	cr_assert_eq(recipients_builder_add_buffer(&bld, "big", p, len, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "big:1: line longer than 1000 octets");
	free(p);
}

Test(recipients, long_line_at_end_of_file_without_line_end)
{
	const char *path;
	char want[RECIPIENTS_ERR_MAX];
	char line[RECIPIENTS_LINE_MAX + 2];

	memset(line, 'a', sizeof(line));
	line[0] = '\n';
	path = write_tmp(line, sizeof(line)); /* a blank line, then 1001 octets */
	snprintf(want, sizeof(want), "%s:2: line longer than 1000 octets", path);
	cr_assert_eq(recipients_builder_add_file(&bld, path, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, want);
}

Test(recipients, binary_garbage_is_a_control_character)
{
	static const unsigned char elf[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, '\n'};
	static const char nul[] = "ok@example.com\nab\0cd@example.com\nz@example.com\n";
	char want[RECIPIENTS_ERR_MAX];
	const char *path;

	path = write_tmp(nul, sizeof(nul) - 1);
	snprintf(want, sizeof(want), "%s:2: control character (0x00)", path);
	cr_assert_eq(recipients_builder_add_file(&bld, path, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, want);

	reinit(NULL);
	path = write_tmp(elf, sizeof(elf));
	snprintf(want, sizeof(want), "%s:1: control character (0x7f)", path);
	cr_assert_eq(recipients_builder_add_file(&bld, path, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, want);

	reinit(NULL);
	cr_assert_eq(
	    recipients_builder_add_buffer(&bld, "nul", nul, sizeof(nul) - 1, err, sizeof(err)),
	    -EINVAL);
	cr_assert_str_eq(err, "nul:2: control character (0x00)");
}

Test(recipients, random_bytes_never_crash)
{
	unsigned char buf[4096];
	uint32_t x = 12345;

	for (int round = 0; round < 200; round++) {
		int rc;

		for (size_t i = 0; i < sizeof(buf); i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = (unsigned char)x;
		}
		reinit(NULL);
		rc = recipients_builder_add_buffer(&bld, "rnd", (const char *)buf, sizeof(buf), err,
		                                   sizeof(err));
		cr_assert_eq(rc, -EINVAL);
		cr_assert(strncmp(err, "rnd:", 4) == 0, "%s", err);
	}
}

Test(recipients, missing_file_and_directory_say_why)
{
	cr_assert_eq(
	    recipients_builder_add_file(&bld, "/nonexistent/ringmx-recipients", err, sizeof(err)),
	    -ENOENT);
	cr_assert_str_eq(err, "/nonexistent/ringmx-recipients: No such file or directory");
	cr_assert_null(recipients_build(&bld, err, sizeof(err)));

	reinit(NULL);
	cr_assert_eq(recipients_builder_add_file(&bld, "/tmp", err, sizeof(err)), -EISDIR);
	cr_assert_str_eq(err, "/tmp: Is a directory");
}

Test(recipients, several_files_merged)
{
	static const struct look_case cases[] = {
	    {"a@one.example", RECIPIENTS_KNOWN},      {"b@one.example", RECIPIENTS_KNOWN},
	    {"c@one.example", RECIPIENTS_KNOWN},      {"d@one.example", RECIPIENTS_UNKNOWN},
	    {"anyone@two.example", RECIPIENTS_KNOWN}, {"x@three.example", RECIPIENTS_KNOWN},
	    {"y@three.example", RECIPIENTS_UNKNOWN},  {"a@four.example", RECIPIENTS_NO_TABLE},
	};
	const char *f1 = write_tmp_str("a@one.example\nb@one.example\n@two.example\n");
	const char *f2 = write_tmp_str("# second table\r\nA@ONE.example\r\nc@one.example\r\n"
	                               "x@three.example\r\n");

	cr_assert_eq(recipients_builder_add_file(&bld, f1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(recipients_builder_add_file(&bld, f2, err, sizeof(err)), 0, "%s", err);
	snap = recipients_build(&bld, err, sizeof(err));
	cr_assert_not_null(snap, "%s", err);
	CHECK(cases);
	cr_assert_eq(recipients_entries(snap), 5); /* a, b, c, @two, x */
	cr_assert_eq(recipients_domains(snap), 3);
}

/* Files larger than the read buffer, shifted by a comment of <pad> octets,
 * so that lines and CR LF pairs straddle every kind of chunk boundary. */
Test(recipients, file_larger_than_read_buffer)
{
	enum { N = 8000 };
	char *text = malloc(N * 48 + 128), line[64];

	cr_assert_not_null(text);
	for (size_t pad = 0; pad < 24; pad++) {
		const char *path;
		size_t len = 0;

		text[len++] = '#';
		for (size_t i = 0; i < pad; i++)
			text[len++] = 'p';
		text[len++] = '\n';
		for (int i = 0; i < N; i++)
			len += (size_t)sprintf(text + len, "User%d@D%d.example%s\r\n", i, i % 97,
			                       i % 3 ? "" : "\tcomment");
		path = write_tmp(text, len);
		reinit(NULL);
		cr_assert_eq(recipients_builder_add_file(&bld, path, err, sizeof(err)), 0, "%s",
		             err);
		snap = recipients_build(&bld, err, sizeof(err));
		cr_assert_not_null(snap, "%s", err);
		cr_assert_eq(recipients_entries(snap), N);
		cr_assert_eq(recipients_domains(snap), 97);
		cr_assert_lt(recipients_memory(snap), (size_t)N * 64, "%zu",
		             recipients_memory(snap));
		for (int i = 0; i < N; i++) {
			snprintf(line, sizeof(line), "user%d+x@d%d.example", i, i % 97);
			cr_assert_eq(look(line), RECIPIENTS_KNOWN, "pad %zu %s", pad, line);
			snprintf(line, sizeof(line), "user%d@d%d.example", i + N, i % 97);
			cr_assert_eq(look(line), RECIPIENTS_UNKNOWN, "pad %zu %s", pad, line);
		}
		recipients_unref(snap);
		snap = NULL;
		unlink(tmp[--ntmp]);
		free(tmp[ntmp]);
	}
	free(text);
}

Test(recipients, many_domains_grow_the_domain_index)
{
	char line[64];
	int n;

	for (int i = 0; i < 5000; i++) {
		n = snprintf(line, sizeof(line), "u@d%d.example\n", i);
		cr_assert_eq(
		    recipients_builder_add_buffer(&bld, "t", line, (size_t)n, err, sizeof(err)), 0,
		    "%s", err);
	}
	snap = recipients_build(&bld, err, sizeof(err));
	cr_assert_not_null(snap, "%s", err);
	cr_assert_eq(recipients_domains(snap), 5000);
	for (int i = 0; i < 5000; i++) {
		snprintf(line, sizeof(line), "U@D%d.EXAMPLE", i);
		cr_assert_eq(look(line), RECIPIENTS_KNOWN, "%s", line);
	}
	cr_assert_eq(look("u@d5000.example"), RECIPIENTS_NO_TABLE);
}

Test(recipients, build_empties_builder_keeps_options)
{
	static const struct recipients_opts o = {.delimiters = "-", .exact = true};
	struct recipients *second;

	reinit(&o);
	build_from("User@example.com\n");
	/* The builder is empty again, with the same options. */
	cr_assert_eq(
	    recipients_builder_add_buffer(&bld, "t", "Other@example.org\n", 18, err, sizeof(err)),
	    0);
	second = recipients_build(&bld, err, sizeof(err));
	cr_assert_not_null(second);
	cr_assert_eq(recipients_entries(second), 1);
	cr_assert_eq(recipients_lookup(second, SV("Other-x"), SV("example.org")), RECIPIENTS_KNOWN);
	cr_assert_eq(recipients_lookup(second, SV("other"), SV("example.org")), RECIPIENTS_UNKNOWN);
	cr_assert_eq(recipients_lookup(second, SV("User"), SV("example.com")), RECIPIENTS_NO_TABLE);
	cr_assert_eq(look("User-x@example.com"), RECIPIENTS_KNOWN);
	recipients_unref(second);
}

Test(recipients, ref_unref_frees_at_last)
{
	build_from("a@example.com\n");
	cr_assert_eq(recipients_ref(snap), snap);
	cr_assert_eq(recipients_ref(snap), snap);
	recipients_unref(snap);
	recipients_unref(snap);
	cr_assert_eq(look("a@example.com"), RECIPIENTS_KNOWN); /* one reference left */
	recipients_unref(snap);
	snap = NULL; /* freed: ASan and LeakSanitizer check both ways */
}

static void *reader(void *arg)
{
	struct recipients *r = arg;
	char l[32];
	int known = 0;

	for (int i = 0; i < 20000; i++) {
		int n = snprintf(l, sizeof(l), "u%d", i % 200);

		known += recipients_lookup(r, sv_make(l, (size_t)n), SV("example.com")) ==
		         RECIPIENTS_KNOWN;
	}
	recipients_unref(r);
	return (void *)(intptr_t)known;
}

Test(recipients, readers_on_threads_outlive_the_publisher)
{
	pthread_t t[4];
	char text[200 * 20];
	size_t len = 0;

	for (int i = 0; i < 100; i++)
		len += (size_t)sprintf(text + len, "u%d@example.com\n", i);
	build_from(text);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, reader, recipients_ref(snap)), 0);
	recipients_unref(snap); /* a reload: the publisher lets go first */
	snap = NULL;
	for (int i = 0; i < 4; i++) {
		void *known;

		cr_assert_eq(pthread_join(t[i], &known), 0);
		cr_assert_eq((intptr_t)known, 10000);
	}
}
