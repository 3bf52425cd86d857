/* Unit tests for core/qtool: the sans-I/O pieces of `ringmx queue`. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qtool.h"

Test(qtool, durations_parse_with_their_units)
{
	static const struct {
		const char *s;
		int ret;
		uint64_t secs;
	} cases[] = {
	    {"0", 0, 0},
	    {"90", 0, 90},
	    {"90s", 0, 90},
	    {"5m", 0, 300},
	    {"2h", 0, 7200},
	    {"3d", 0, 259200},
	    {"1w", 0, 604800},
	    {"", -EINVAL, 0},
	    {"m", -EINVAL, 0},
	    {"5x", -EINVAL, 0},
	    {"5mm", -EINVAL, 0},
	    {"-5", -EINVAL, 0},
	    {" 5", -EINVAL, 0},
	    {"5 ", -EINVAL, 0},
	    {"1.5h", -EINVAL, 0},
	    {"99999999999999999999", -EINVAL, 0},
	    {"36600d", 0, 36600ull * 86400},
	    {"36601d", -EINVAL, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;
		int ret = qtool_duration(cases[i].s, &v);

		cr_expect_eq(ret, cases[i].ret, "'%s': got %d want %d", cases[i].s, ret,
		             cases[i].ret);
		if (!ret)
			cr_expect_eq(v, cases[i].secs, "'%s': got %llu want %llu", cases[i].s,
			             (unsigned long long)v, (unsigned long long)cases[i].secs);
		else
			cr_expect_eq(v, 12345, "'%s': changed on error", cases[i].s);
	}
	cr_expect_eq(qtool_duration(NULL, &(uint64_t){0}), -EINVAL);
}

Test(qtool, address_selectors_match_address_domain_or_null_sender)
{
	static const struct {
		const char *pat, *addr;
		bool match;
	} cases[] = {
	    {"a@b.test", "a@b.test", true},
	    {"A@B.Test", "a@b.test", true},
	    {"a@b.test", "aa@b.test", false},
	    {"a@b.test", "a@b.test.org", false},
	    {"@b.test", "x@b.test", true},
	    {"@b.test", "x@B.TEST", true},
	    {"@b.test", "x@c.b.test", false},
	    {"b.test", "x@b.test", true},
	    {"b.test", "b.test", false},
	    {"b.test", "", false},
	    {"<>", "", true},
	    {"", "", true},
	    {"<>", "a@b.test", false},
	    {"@b.test", "", false},
	    {"postmaster", "postmaster", false},
	    {"a@b.test", "", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(qtool_addr_match(cases[i].pat, cases[i].addr), cases[i].match,
		             "'%s' vs '%s': want %d", cases[i].pat, cases[i].addr, cases[i].match);
	cr_expect_str_eq(qtool_domain("a@b@c.test"), "c.test");
	cr_expect_str_eq(qtool_domain("postmaster"), "");
	cr_expect_str_eq(qtool_domain(""), "");
}

static char *json(const char *s)
{
	struct buf b = BUF_INIT;

	cr_assert_eq(qtool_json_str(&b, s), 0);
	return (char *)buf_cstr(&b);
}

Test(qtool, json_strings_escape_controls_and_keep_only_valid_utf8)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", "\"\""},
	    {"plain", "\"plain\""},
	    {"q\"b\\", "\"q\\\"b\\\\\""},
	    {"tab\there\r\n", "\"tab\\u0009here\\u000d\\u000a\""},
	    {"\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""},
	    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7",
	     "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\""},
	    {"\xc3", "\"\\ufffd\""},                                  /* truncated */
	    {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                       /* overlong '/' */
	    {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},            /* a surrogate */
	    {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* past U+10FFFF */
	    {"\xff"
	     "a",
	     "\"\\ufffda\""},
	    {"\xe2\x82"
	     "x",
	     "\"\\ufffd\\ufffdx\""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = json(cases[i].in);

		cr_expect_str_eq(got, cases[i].out, "case %zu: got %s want %s", i, got,
		                 cases[i].out);
		free(got);
	}
}

Test(qtool, requests_format_and_parse_back)
{
	static const enum qtool_op ops[] = {QTOOL_HOLD, QTOOL_RELEASE, QTOOL_REQUEUE, QTOOL_DELETE};
	struct buf b = BUF_INIT;
	enum qtool_op op;
	struct sv qid;

	for (size_t i = 0; i < 4; i++) {
		buf_reset(&b, 0);
		cr_assert_eq(qtool_req_format(&b, ops[i], "6B16A2C0002ABE5F"), 0);
		cr_assert_eq(b.p[b.len - 1], '\n');
		cr_assert_eq(qtool_req_parse(b.p, b.len - 1, &op, &qid), 0, "%s", b.p);
		cr_expect_eq(op, ops[i]);
		cr_expect(sv_eq(qid, SV("6B16A2C0002ABE5F")));
		/* Every shorter cut but the qid's own is refused. */
		for (size_t n = 0; n < b.len - 1; n++) {
			int ret = qtool_req_parse(b.p, n, &op, &qid);
			size_t head = strlen(qtool_op_name(ops[i])) + 1;

			cr_expect_eq(ret, n > head ? 0 : -EINVAL, "'%.*s': %d", (int)n, b.p, ret);
		}
	}
	cr_expect_eq(qtool_req_parse("hold X\r", 7, &op, &qid), 0);
	cr_expect(sv_eq(qid, SV("X")));
	cr_expect_eq(qtool_req_parse("hold  X", 7, &op, &qid), -EINVAL);
	cr_expect_eq(qtool_req_parse("hold X Y", 8, &op, &qid), -EINVAL);
	cr_expect_eq(qtool_req_parse("HOLD X", 6, &op, &qid), -EINVAL);
	cr_expect_eq(qtool_req_parse("flush X", 7, &op, &qid), -EINVAL);
	cr_expect_eq(qtool_req_parse("hold 0123456789012345678901234567890", 36, &op, &qid), 0);
	cr_expect_eq(qtool_req_parse("hold 01234567890123456789012345678901", 37, &op, &qid),
	             -EINVAL);
	cr_expect_eq(qtool_req_parse("hold \x01", 6, &op, &qid), -EINVAL);
	cr_expect_eq(qtool_req_format(&b, QTOOL_HOLD, ""), -EINVAL);
	cr_expect_eq(qtool_req_format(&b, QTOOL_HOLD, "a b"), -EINVAL);
	cr_expect_eq(qtool_req_format(&b, (enum qtool_op)0, "a"), -EINVAL);
	cr_expect_eq(qtool_req_format(&b, (enum qtool_op)9, "a"), -EINVAL);
	buf_free(&b);
}

Test(qtool, shape_buckets_are_qshapes_minutes)
{
	static const struct {
		int64_t age;
		unsigned bucket;
	} cases[] = {
	    {-5, 0},    {0, 0},     {299, 0},   {300, 1},        {599, 1},  {600, 2},
	    {1199, 2},  {1200, 3},  {2400, 4},  {4800, 5},       {9600, 6}, {19200, 7},
	    {38400, 8}, {76799, 8}, {76800, 9}, {1000000000, 9},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(qtool_shape_bucket(cases[i].age), cases[i].bucket, "age %lld",
		             (long long)cases[i].age);
}

Test(qtool, shape_table_counts_a_message_once_per_domain)
{
	struct qtool_shape sh = {0};
	struct buf out = BUF_INIT;
	const char *two[] = {"b.test", "B.TEST", "a.test"};
	const char *one[] = {"a.test"};

	cr_assert_eq(qtool_shape_add(&sh, two, 3, 30), 0);     /* 5 */
	cr_assert_eq(qtool_shape_add(&sh, one, 1, 700), 0);    /* 20 */
	cr_assert_eq(qtool_shape_add(&sh, one, 1, 100000), 0); /* 1280+ */
	cr_assert_eq(qtool_shape_add(&sh, NULL, 0, 0), 0);     /* no recipient */
	cr_assert_eq(qtool_shape_format(&sh, &out), 0);
	cr_expect_str_eq(buf_cstr(&out),
	                 "       T 5 10 20 40 80 160 320 640 1280 1280+\n"
	                 " TOTAL 4 2  0  1  0  0   0   0   0    0     1\n"
	                 "a.test 3 1  0  1  0  0   0   0   0    0     1\n"
	                 "b.test 1 1  0  0  0  0   0   0   0    0     0\n",
	                 "%s", out.p);
	qtool_shape_free(&sh);
	buf_free(&out);
}

Test(qtool, shape_table_holds_many_domains)
{
	struct qtool_shape sh = {0};
	char name[32];
	const char *d[1] = {name};

	for (unsigned round = 0; round < 3; round++)
		for (unsigned i = 0; i < 5000; i++) {
			snprintf(name, sizeof(name), round == 1 ? "D%u.TEST" : "d%u.test", i);
			cr_assert_eq(qtool_shape_add(&sh, d, 1, (int64_t)i * 60), 0);
		}
	cr_expect_eq(sh.nrows, 5000);
	cr_expect_eq(sh.all.total, 15000);
	for (size_t i = 0; i < sh.nrows; i++)
		cr_expect_eq(sh.rows[i].total, 3, "%s", sh.rows[i].domain);
	qtool_shape_free(&sh);
}
