/* Tests for core/smtp_data: end of data, SMTP smuggling variants, dot-stuffing,
 * normalization, size and line limits, each input fed whole, cut in two and
 * three pieces at every position and byte by byte, through every
 * implementation; then a seeded differential test of the implementations
 * against each other and against a declarative oracle
 * (tests/fuzz/data_diff.h). RINGMX_SEED=<n> replays one seed. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/smtp_data.h"
#include "tests/fuzz/data_diff.h"

#define S(lit) (lit), sizeof(lit) - 1

/* Runs <in> with every cut in <cuts> through each implementation and the
 * oracle; they must all agree, and agree with <want> (content) and
 * <want_flags>/<want_end> (end 0: no end found). */
static void expect_cuts(const struct data_diff_cfg *c, const char *in, size_t n, const size_t *cuts,
                        size_t ncut, const char *want, size_t wlen, uint32_t want_flags,
                        size_t want_end)
{
	struct data_diff_out got, exp;
	char err[256];

	data_diff_out_init(&got, n);
	data_diff_out_init(&exp, n);
	data_diff_oracle(c, in, n, &exp);
	if (data_diff_run(c, SMTP_DATA_IMPL_AUTO, in, n, cuts, ncut, &got, err, sizeof(err)))
		cr_assert_fail("input %zu bytes, %zu cuts (first %zu): %s", n, ncut,
		               ncut ? cuts[0] : 0, err);
	if (data_diff_check(c, &got, &exp, err, sizeof(err)))
		cr_assert_fail("input %zu bytes, %zu cuts (first %zu): %s", n, ncut,
		               ncut ? cuts[0] : 0, err);
	cr_assert_eq(got.clen, wlen, "content length %zu, want %zu", got.clen, wlen);
	cr_assert(!memcmp(got.content, want, wlen), "content differs");
	cr_assert_eq(got.flags, want_flags, "flags %#x, want %#x", got.flags, want_flags);
	cr_assert_eq(got.end, want_end, "end %zu, want %zu", got.end, want_end);
	data_diff_out_fini(&got);
	data_diff_out_fini(&exp);
}

/* Whole, every cut in two, every cut in three, and byte by byte. */
static void expect_all_splits(const struct data_diff_cfg *c, const char *in, size_t n,
                              const char *want, size_t wlen, uint32_t flags, size_t end)
{
	size_t cuts[4096];

	expect_cuts(c, in, n, NULL, 0, want, wlen, flags, end);
	for (size_t i = 0; i <= n; i++) {
		cuts[0] = i;
		expect_cuts(c, in, n, cuts, 1, want, wlen, flags, end);
		for (size_t j = i; j <= n; j++) {
			cuts[1] = j;
			expect_cuts(c, in, n, cuts, 2, want, wlen, flags, end);
		}
	}
	cr_assert(n < 4096);
	for (size_t i = 0; i < n; i++)
		cuts[i] = i + 1;
	expect_cuts(c, in, n, cuts, n, want, wlen, flags, end);
}

static const struct data_diff_cfg cfg_reject = {0, 1000, SMTP_DATA_BARE_REJECT, DATA_DIFF_MAXV};
static const struct data_diff_cfg cfg_norm = {0, 1000, SMTP_DATA_BARE_NORMALIZE, DATA_DIFF_MAXV};

Test(smtp_data, end_found_at_every_split_with_pipelined_command)
{
	static const char in[] = "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";

	expect_all_splits(&cfg_reject, S(in), S("Subject: x\r\n\r\nhello\r\n"), SMTP_DATA_F_DONE,
	                  sizeof(in) - 1 - 6);
	expect_all_splits(&cfg_norm, S(in), S("Subject: x\r\n\r\nhello\r\n"), SMTP_DATA_F_DONE,
	                  sizeof(in) - 1 - 6);
}

Test(smtp_data, empty_message_is_dot_crlf_at_start)
{
	expect_all_splits(&cfg_reject, S(".\r\nQUIT\r\n"), "", 0, SMTP_DATA_F_DONE, 3);
	expect_all_splits(&cfg_reject, S(".\r\n"), "", 0, SMTP_DATA_F_DONE, 3);
	/* A blank line, then the end. */
	expect_all_splits(&cfg_reject, S("\r\n.\r\n"), S("\r\n"), SMTP_DATA_F_DONE, 5);
}

Test(smtp_data, dot_not_at_line_start_is_not_the_end)
{
	expect_all_splits(&cfg_reject, S("abc.\r\nx\r\n.\r\n"), S("abc.\r\nx\r\n"),
	                  SMTP_DATA_F_DONE, 12);
	/* No terminator at all: everything is content, no end. */
	expect_all_splits(&cfg_reject, S("abc\r\n.x\r\n"), S("abc\r\nx\r\n"), 0, 0);
}

/* SMTP smuggling (CVE-2023-51764/5/6): none of these is an end of data. */
struct smuggle_case {
	const char *in;
	size_t len;
	const char *reject;
	size_t rlen;
	const char *norm;
	size_t nlen;
	uint32_t flags;
};

#define SM(in, rej, nor, fl)                                                                       \
	{                                                                                          \
		S(in), S(rej), S(nor), (fl)                                                        \
	}
#define F_LF SMTP_DATA_F_BARE_LF
#define F_CR SMTP_DATA_F_BARE_CR

static const struct smuggle_case smuggle_cases[] = {
    /* LF.LF */
    SM("a\n.\nb\r\n.\r\nX", "a\n.\nb\r\n", "a\r\n.\r\nb\r\n", F_LF),
    /* LF.CRLF */
    SM("a\n.\r\nb\r\n.\r\nX", "a\n.\r\nb\r\n", "a\r\n.\r\nb\r\n", F_LF),
    /* CR.CR */
    SM("a\r.\rb\r\n.\r\nX", "a\r.\rb\r\n", "a\r\n.\r\nb\r\n", F_CR),
    /* CRLF.CR: the dot is at a line start, so dropped */
    SM("a\r\n.\rb\r\n.\r\nX", "a\r\n\rb\r\n", "a\r\n\r\nb\r\n", F_CR),
    /* CRLF.LF */
    SM("a\r\n.\nb\r\n.\r\nX", "a\r\n\nb\r\n", "a\r\n\r\nb\r\n", F_LF),
    /* CR.LF */
    SM("a\r.\nb\r\n.\r\nX", "a\r.\nb\r\n", "a\r\n.\r\nb\r\n", F_CR | F_LF),
    /* LF.CR */
    SM("a\n.\rb\r\n.\r\nX", "a\n.\rb\r\n", "a\r\n.\r\nb\r\n", F_CR | F_LF),
    /* CR.CRLF */
    SM("a\r.\r\nb\r\n.\r\nX", "a\r.\r\nb\r\n", "a\r\n.\r\nb\r\n", F_CR),
    /* CRLF.CRCRLF */
    SM("a\r\n.\r\r\nb\r\n.\r\nX", "a\r\n\r\r\nb\r\n", "a\r\n\r\n\r\nb\r\n", F_CR),
    /* at the content start */
    SM(".\nb\r\n.\r\nX", "\nb\r\n", "\r\nb\r\n", F_LF),
    SM(".\rb\r\n.\r\nX", "\rb\r\n", "\r\nb\r\n", F_CR),
    SM("\n.\r\nb\r\n.\r\nX", "\n.\r\nb\r\n", "\r\n.\r\nb\r\n", F_LF),
    /* a bare LF or CR just before the real end */
    SM("a\n\r\n.\r\nX", "a\n\r\n", "a\r\n\r\n", F_LF),
    SM("a\r\r\n.\r\nX", "a\r\r\n", "a\r\n\r\n", F_CR),
    /* many in a row */
    SM("\n\n\r\r.\r\n.\r\nX", "\n\n\r\r.\r\n", "\r\n\r\n\r\n\r\n.\r\n", F_CR | F_LF),
};

Test(smtp_data, smuggling_variants_are_never_the_end)
{
	for (size_t i = 0; i < sizeof(smuggle_cases) / sizeof(smuggle_cases[0]); i++) {
		const struct smuggle_case *t = &smuggle_cases[i];

		expect_all_splits(&cfg_reject, t->in, t->len, t->reject, t->rlen,
		                  t->flags | SMTP_DATA_F_DONE, t->len - 1);
		expect_all_splits(&cfg_norm, t->in, t->len, t->norm, t->nlen,
		                  t->flags | SMTP_DATA_F_DONE, t->len - 1);
	}
}

Test(smtp_data, smuggling_terminators_alone_do_not_end)
{
	static const char *const bad[] = {"a\n.\n",   "a\n.\r\n", "a\r.\r", "a\r\n.\rx",
	                                  "a\r\n.\n", "a\r.\n",   "a\n.\r", "a\r.\r\n"};
	struct data_diff_out got;
	char err[256];
	size_t cut;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (cut = 0; cut <= strlen(bad[i]); cut++) {
			data_diff_out_init(&got, strlen(bad[i]));
			cr_assert_eq(data_diff_run(&cfg_reject, SMTP_DATA_IMPL_AUTO, bad[i],
			                           strlen(bad[i]), &cut, 1, &got, err, sizeof(err)),
			             0, "%s", err);
			cr_assert(!got.done, "case %zu ended", i);
			cr_assert(got.flags & (F_LF | F_CR), "case %zu not flagged", i);
			data_diff_out_fini(&got);
		}
	}
}

Test(smtp_data, dot_stuffing_removed_at_buffer_edges)
{
	expect_all_splits(&cfg_reject, S("..a\r\n..\r\n...\r\nb.\r\n.\r\n"),
	                  S(".a\r\n.\r\n..\r\nb.\r\n"), SMTP_DATA_F_DONE, 21);
	/* A held-back ".\r" at the end of the input is not content (yet). */
	expect_all_splits(&cfg_reject, S("a\r\n.\r"), S("a\r\n"), 0, 0);
	expect_all_splits(&cfg_reject, S("a\r\n."), S("a\r\n"), 0, 0);
}

Test(smtp_data, views_point_into_buffers_without_copies)
{
	static const char in[] = "ab\r\n.cd\r\nef\r\n.\r\n";
	struct smtp_data d;
	struct iovec v[8];
	unsigned nv;

	smtp_data_init(&d, 0, 1000, SMTP_DATA_BARE_REJECT, SMTP_DATA_LONG_ACCEPT);
	cr_assert_eq(smtp_data_scan(&d, in, sizeof(in) - 1, v, 8, &nv), sizeof(in) - 1);
	cr_assert(smtp_data_done(&d));
	cr_assert_eq(nv, 2);
	cr_assert_eq(v[0].iov_base, (void *)in);
	cr_assert_eq(v[0].iov_len, 4);
	cr_assert_eq(v[1].iov_base, (void *)(in + 5));
	cr_assert_eq(v[1].iov_len, 8);
	cr_assert_eq(d.size, 12);
}

Test(smtp_data, normalize_stores_crlf_for_bare_cr_and_lf)
{
	expect_all_splits(&cfg_norm, S("a\nb\rc\r\n.\r\n"), S("a\r\nb\r\nc\r\n"),
	                  SMTP_DATA_F_DONE | F_LF | F_CR, 10);
	/* A line start made by normalizing is not a line start for dots. */
	expect_all_splits(&cfg_norm, S("a\n..b\r\n.\r\n"), S("a\r\n..b\r\n"),
	                  SMTP_DATA_F_DONE | F_LF, 10);
}

static char *repeat(char c, size_t n, const char *tail)
{
	size_t tl = strlen(tail);
	char *s = malloc(n + tl + 1);

	memset(s, c, n);
	memcpy(s + n, tail, tl + 1);
	return s;
}

static void expect_flags(const struct data_diff_cfg *c, const char *in, size_t n, uint32_t want)
{
	struct data_diff_out got, exp;
	size_t cuts[3] = {n / 3, n / 2, n - 1};
	char err[256];

	for (size_t nc = 0; nc <= 3; nc++) {
		data_diff_out_init(&got, n);
		data_diff_out_init(&exp, n);
		data_diff_oracle(c, in, n, &exp);
		cr_assert_eq(
		    data_diff_run(c, SMTP_DATA_IMPL_AUTO, in, n, cuts, nc, &got, err, sizeof(err)),
		    0, "%s", err);
		cr_assert_eq(data_diff_check(c, &got, &exp, err, sizeof(err)), 0, "%s", err);
		cr_assert_eq(got.flags, want, "flags %#x, want %#x (%zu cuts)", got.flags, want,
		             nc);
		data_diff_out_fini(&got);
		data_diff_out_fini(&exp);
	}
}

Test(smtp_data, long_line_flagged_over_max_line_with_crlf)
{
	struct data_diff_cfg c = cfg_reject;
	uint32_t done = SMTP_DATA_F_DONE, lng = SMTP_DATA_F_LONG_LINE;
	char *s;

	/* 998 octets + CRLF = 1000: fine; 999 + CRLF: too long. */
	s = repeat('x', 998, "\r\n.\r\n");
	expect_flags(&c, s, strlen(s), done);
	free(s);
	s = repeat('x', 999, "\r\n.\r\n");
	expect_flags(&c, s, strlen(s), done | lng);
	free(s);
	/* A received dot counts, though it is not stored. */
	s = repeat('.', 999, "\r\n.\r\n");
	expect_flags(&c, s, strlen(s), done | lng);
	free(s);
	/* Unfinished, and spanning many buffers. */
	s = repeat('x', 100000, "");
	expect_flags(&c, s, strlen(s), lng);
	free(s);
	/* No limit. */
	c.max_line = 0;
	s = repeat('x', 5000, "\r\n.\r\n");
	expect_flags(&c, s, strlen(s), done);
	free(s);
	/* Small limits take the exact per-LF path. */
	c.max_line = 10;
	expect_flags(&c, S("12345678\r\n.\r\n"), done);
	expect_flags(&c, S("123456789\r\n.\r\n"), done | lng);
	c.max_line = 130;
	s = repeat('y', 128, "\r\n.\r\n");
	expect_flags(&c, s, strlen(s), done);
	free(s);
	s = repeat('y', 129, "\r\n.\r\n");
	expect_flags(&c, s, strlen(s), done | lng);
	free(s);
}

Test(smtp_data, too_big_flagged_over_max_size)
{
	struct data_diff_cfg c = cfg_reject;

	c.max_size = 10;
	expect_flags(&c, S("12345678\r\n.\r\n"), SMTP_DATA_F_DONE);
	expect_flags(&c, S("123456789\r\n.\r\n"), SMTP_DATA_F_DONE | SMTP_DATA_F_TOO_BIG);
	/* Stuffing dots do not count. */
	expect_flags(&c, S("..345678\r\n.\r\n"), SMTP_DATA_F_DONE);
}

Test(smtp_data, small_maxv_consumes_partially)
{
	static const char in[] = "a\r\n.b\r\n.c\r\n.d\r\n..\r\n.\r\nNOOP\r\n";
	struct data_diff_cfg c = cfg_reject;
	struct smtp_data d;
	struct iovec v[3];
	unsigned nv, calls = 0;
	size_t off = 0;
	char out[64];
	size_t olen = 0;

	c.maxv = 3;
	expect_all_splits(&c, S(in), S("a\r\nb\r\nc\r\nd\r\n.\r\n"), SMTP_DATA_F_DONE,
	                  sizeof(in) - 1 - 6);
	c.bare = SMTP_DATA_BARE_NORMALIZE;
	expect_all_splits(&c, S("\n\n\n\r\r\r.\r\n"), S("\r\n\r\n\r\n\r\n\r\n\r\n.\r\n"),
	                  F_LF | F_CR, 0);
	/* By hand: several calls, each consuming part of the buffer. */
	smtp_data_init(&d, 0, 1000, SMTP_DATA_BARE_REJECT, SMTP_DATA_LONG_ACCEPT);
	while (!smtp_data_done(&d)) {
		off += smtp_data_scan(&d, in + off, sizeof(in) - 1 - off, v, 3, &nv);
		for (unsigned i = 0; i < nv; i++) {
			memcpy(out + olen, v[i].iov_base, v[i].iov_len);
			olen += v[i].iov_len;
		}
		calls++;
		cr_assert(calls < 20);
	}
	cr_assert_gt(calls, 1);
	cr_assert_eq(off, sizeof(in) - 1 - 6);
	cr_assert_eq(olen, 15);
	cr_assert(!memcmp(out, "a\r\nb\r\nc\r\nd\r\n.\r\n", 15));
}

Test(smtp_data, every_impl_available_agrees_on_names)
{
	cr_assert(smtp_data_impl_supported(SMTP_DATA_IMPL_SCALAR));
	cr_assert(smtp_data_impl_supported(SMTP_DATA_IMPL_REF));
	cr_assert_str_neq(smtp_data_impl_name(SMTP_DATA_IMPL_AUTO), "auto");
	cr_assert_eq(smtp_data_set_impl(SMTP_DATA_IMPL_SCALAR), 0);
	cr_assert_eq(smtp_data_set_impl(SMTP_DATA_IMPL_AUTO), 0);
}

/*
 * Differential: random and adversarial inputs, random cuts and settings.
 */

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static size_t rng_below(uint64_t *s, size_t n)
{
	return n ? (size_t)(rng_next(s) % n) : 0;
}

/* Fills <p> with <n> bytes heavy in CR, LF, '.' and 'a', sometimes built of
 * adversarial fragments, sometimes of long plain runs. */
static void gen_input(uint64_t *rs, char *p, size_t n)
{
	static const char *const frags[] = {"\r\n.\r\n", "\r\n.",   ".\r",     "\n.\n", "\r.\r",
	                                    "\r\n..",    "\r\n",    "\n",      "\r",    ".",
	                                    "a",         "\r\n.\n", "\n.\r\n", "\r\r\n"};
	size_t i = 0, mode = rng_below(rs, 4);

	while (i < n) {
		size_t k = rng_below(rs, 100);

		if (mode == 0 || (mode == 1 && k < 50)) {
			static const char alpha[] = "\r\n.a";

			p[i++] = k < 90 ? alpha[k % 4] : (char)rng_next(rs);
		} else if (mode == 1 || (mode == 2 && k < 30)) {
			const char *f = frags[rng_below(rs, sizeof(frags) / sizeof(frags[0]))];

			for (; *f && i < n; f++)
				p[i++] = *f;
		} else {
			/* A plain run, often ending near a 64-byte edge. */
			size_t run = k < 50 ? 60 + rng_below(rs, 10) : rng_below(rs, 300);

			for (; run && i < n; run--)
				p[i++] = 'a' + (char)(rng_below(rs, 26));
			if (i < n)
				p[i++] = '\r';
			if (i < n)
				p[i++] = '\n';
		}
	}
}

static int diff_one(uint64_t seed, char *err, size_t errlen)
{
	static const uint32_t mls[] = {0, 1, 3, 10, 64, 65, 66, 127, 128, 129, 200, 1000};
	uint64_t rs = seed;
	size_t n = rng_below(&rs, 8) == 0 ? rng_below(&rs, 5000) : rng_below(&rs, 300);
	char *p = malloc(n + 1);
	size_t cuts[64], ncut = rng_below(&rs, 8), last = 0;
	struct data_diff_cfg c;
	struct data_diff_out got, exp;
	int rc;

	gen_input(&rs, p, n);
	c.bare = rng_below(&rs, 2) ? SMTP_DATA_BARE_NORMALIZE : SMTP_DATA_BARE_REJECT;
	c.maxv = rng_below(&rs, 3) ? 3 + (unsigned)rng_below(&rs, 4) : DATA_DIFF_MAXV;
	c.max_line = mls[rng_below(&rs, sizeof(mls) / sizeof(mls[0]))];
	c.max_size = rng_below(&rs, 2) ? rng_below(&rs, n + 2) : 0;
	if (rng_below(&rs, 4) == 0)
		ncut = rng_below(&rs, 64);
	for (size_t i = 0; i < ncut; i++) {
		last += rng_below(&rs, 4) ? rng_below(&rs, 8) : rng_below(&rs, 200);
		cuts[i] = last < n ? last : n;
	}
	data_diff_out_init(&got, n);
	data_diff_out_init(&exp, n);
	data_diff_oracle(&c, p, n, &exp);
	rc = data_diff_run(&c, SMTP_DATA_IMPL_AUTO, p, n, cuts, ncut, &got, err, errlen);
	if (!rc)
		rc = data_diff_check(&c, &got, &exp, err, errlen);
	data_diff_out_fini(&got);
	data_diff_out_fini(&exp);
	free(p);
	return rc;
}

Test(smtp_data, differential_random_inputs_agree_across_impls, .timeout = 120)
{
	const char *env = getenv("RINGMX_SEED");
	uint64_t base = 0x5eed0000ull;
	unsigned iters = 30000;
	char err[512];

	if (env) {
		base = strtoull(env, NULL, 0);
		iters = 1;
	}
	for (unsigned i = 0; i < iters; i++) {
		uint64_t seed = base + i;

		if (diff_one(seed, err, sizeof(err)))
			cr_assert_fail("seed %#llx (RINGMX_SEED=%#llx to replay): %s",
			               (unsigned long long)seed, (unsigned long long)seed, err);
	}
}

Test(smtp_data, differential_realistic_mail_in_network_sized_buffers)
{
	uint64_t rs = 42;
	size_t n = 300000, i = 0;
	char *p = malloc(n + 5);
	struct data_diff_cfg c = cfg_reject;
	struct data_diff_out got, exp;
	size_t cuts[512], ncut = 0;
	char err[256];

	/* ~70-octet lines, some starting with a dot (stuffed). */
	while (i < n) {
		size_t len = 40 + rng_below(&rs, 60);

		if (rng_below(&rs, 20) == 0)
			p[i++] = '.';
		for (; len && i < n; len--)
			p[i++] = 'a' + (char)rng_below(&rs, 26);
		if (i + 2 <= n) {
			p[i++] = '\r';
			p[i++] = '\n';
		}
	}
	i = n - (p[n - 1] == '\r');
	memcpy(p + i, "\r\n.\r\n", 5);
	n = i + 5;
	for (size_t off = 0; off < n && ncut < 512; ncut++)
		cuts[ncut] = off += 1 + rng_below(&rs, 4096);
	cuts[ncut - 1] = n;
	data_diff_out_init(&got, n);
	data_diff_out_init(&exp, n);
	data_diff_oracle(&c, p, n, &exp);
	cr_assert_eq(
	    data_diff_run(&c, SMTP_DATA_IMPL_AUTO, p, n, cuts, ncut, &got, err, sizeof(err)), 0,
	    "%s", err);
	cr_assert_eq(data_diff_check(&c, &got, &exp, err, sizeof(err)), 0, "%s", err);
	cr_assert(got.done);
	data_diff_out_fini(&got);
	data_diff_out_fini(&exp);
	free(p);
}
