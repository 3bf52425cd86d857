/* rb_msg_test: ringmx-bench's message bodies: size specifications and
 * draws, the synthetic fill text and how a body is cut from it, the
 * transformation of real messages (CRLF, dot-stuffing, end of data), checked
 * against an RFC 5321 4.5.2 decoder, and loading a directory of .eml files. */
#include "bench/rb.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A deterministic generator (xorshift64*), so that a failure reproduces. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 0x2545f4914f6cdd1du;
}

/* ---- rb_size_parse -------------------------------------------------------- */

static void parses(const char *s, enum rb_size_kind kind, uint64_t a, uint64_t b)
{
	struct rb_size z;
	char err[128] = "";

	cr_assert_eq(rb_size_parse(s, &z, err, sizeof(err)), 0, "'%s': %s", s, err);
	cr_assert_eq(z.kind, kind, "'%s': kind %d", s, (int)z.kind);
	cr_assert_eq(z.a, a, "'%s': a %lu want %lu", s, (unsigned long)z.a, (unsigned long)a);
	cr_assert_eq(z.b, b, "'%s': b %lu want %lu", s, (unsigned long)z.b, (unsigned long)b);
	cr_assert_eq(rb_size_max(&z), b, "'%s': max", s);
}

Test(rb_msg, size_parse_fixed)
{
	parses("1024", RB_SIZE_FIXED, 1024, 1024);
	parses("1", RB_SIZE_FIXED, 1, 1);
	parses("64k", RB_SIZE_FIXED, 65536, 65536);
	parses("64K", RB_SIZE_FIXED, 65536, 65536);
	parses("1m", RB_SIZE_FIXED, 1048576, 1048576);
	parses("3M", RB_SIZE_FIXED, 3145728, 3145728);
	parses("007", RB_SIZE_FIXED, 7, 7);
}

Test(rb_msg, size_parse_range)
{
	parses("512-64k", RB_SIZE_UNIFORM, 512, 65536);
	parses("1k-2m", RB_SIZE_UNIFORM, 1024, 2097152);
	parses("100-100", RB_SIZE_UNIFORM, 100, 100);
	parses("1K-1024", RB_SIZE_UNIFORM, 1024, 1024);
}

Test(rb_msg, size_parse_exp)
{
	parses("exp:16k", RB_SIZE_EXP, 16384, 16 * 16384);
	parses("exp:1000", RB_SIZE_EXP, 1000, 16000);
	parses("exp:1m", RB_SIZE_EXP, 1048576, 16 * 1048576);
	parses("exp:1", RB_SIZE_EXP, 1, 16);
}

static void refused(const char *s)
{
	struct rb_size z;
	char err[128];

	memset(err, 0, sizeof(err));
	cr_assert_eq(rb_size_parse(s, &z, err, sizeof(err)), -1, "'%s' accepted", s);
	cr_assert_gt(strlen(err), 0, "'%s': no reason", s);
}

Test(rb_msg, size_parse_errors)
{
	refused("");
	refused("abc");
	refused("10-5");
	refused("64k-1k");
	refused("5x");
	refused("5kb");
	refused("1g");
	refused("k");
	refused("1kk");
	refused("-5");
	refused("5-");
	refused("-");
	refused("1-2-3");
	refused(" 5");
	refused("5 ");
	refused("+5");
	refused("1.5k");
	refused("exp:0");
	refused("exp:0k");
	refused("exp:");
	refused("exp:abc");
	refused("exp:5x");
	refused("exp:-5");
	refused("EXP:5");
	refused("exp 5");
}

Test(rb_msg, size_parse_overflow)
{
	refused("18446744073709551615"); /* UINT64_MAX: no room for a message */
	refused("18446744073709551616"); /* UINT64_MAX + 1 */
	refused("99999999999999999999999999");
	refused("18014398509481984k"); /* 2^64 once multiplied */
	refused("17592186044416m");    /* 2^64 */
	refused("1-18446744073709551617");
	refused("exp:2305843009213693952"); /* 2^61: 16x the mean wraps */
	refused("exp:18014398509481984k");
}

Test(rb_msg, size_parse_error_respects_errlen)
{
	struct rb_size z;
	char err[16];

	memset(err, 'Q', sizeof(err));
	cr_assert_eq(rb_size_parse("this is not a size at all", &z, err, 8), -1);
	cr_assert_eq(err[7], '\0', "cut and terminated");
	for (size_t i = 8; i < sizeof(err); i++)
		cr_assert_eq(err[i], 'Q', "written past errlen at %zu", i);
}

/* ---- rb_size_draw --------------------------------------------------------- */

Test(rb_msg, rand_is_deterministic_and_never_stuck)
{
	uint64_t s1 = 1, s2 = 1, a, b;

	for (int i = 0; i < 1000; i++) {
		a = rb_rand(&s1);
		b = rb_rand(&s2);
		cr_assert_eq(a, b);
		cr_assert_neq(s1, 0, "state went to 0");
	}
}

Test(rb_msg, draw_fixed)
{
	struct rb_size z;
	char err[128];
	uint64_t rng = 42;

	cr_assert_eq(rb_size_parse("12345", &z, err, sizeof(err)), 0);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(rb_size_draw(&z, &rng), 12345);
}

Test(rb_msg, draw_uniform_in_range_and_hits_both_ends)
{
	struct rb_size z;
	char err[128];
	uint64_t rng = 0x1234567, lo_hits = 0, hi_hits = 0;
	uint64_t seen[11] = {0};

	cr_assert_eq(rb_size_parse("100-110", &z, err, sizeof(err)), 0);
	for (int i = 0; i < 100000; i++) {
		uint64_t v = rb_size_draw(&z, &rng);

		cr_assert(v >= 100 && v <= 110, "drew %lu", (unsigned long)v);
		seen[v - 100]++;
		lo_hits += v == 100;
		hi_hits += v == 110;
	}
	cr_assert_gt(lo_hits, 0, "never drew the minimum");
	cr_assert_gt(hi_hits, 0, "never drew the maximum");
	/* Roughly even: each value about 1/11 of the draws. */
	for (int i = 0; i <= 10; i++)
		cr_assert(seen[i] > 8000 && seen[i] < 10200, "%d drawn %lu times", 100 + i,
		          (unsigned long)seen[i]);
}

Test(rb_msg, draw_uniform_wide_range)
{
	struct rb_size z;
	char err[128];
	uint64_t rng = 99, min = UINT64_MAX, max = 0;
	double sum = 0;

	cr_assert_eq(rb_size_parse("512-64k", &z, err, sizeof(err)), 0);
	for (int i = 0; i < 100000; i++) {
		uint64_t v = rb_size_draw(&z, &rng);

		cr_assert(v >= 512 && v <= 65536, "drew %lu", (unsigned long)v);
		min = v < min ? v : min;
		max = v > max ? v : max;
		sum += (double)v;
	}
	cr_assert_lt(min, 512 + 65536 / 100);
	cr_assert_gt(max, 65536 - 65536 / 100);
	cr_assert_float_eq(sum / 100000, (512 + 65536) / 2.0, 0.02 * 65536);
}

Test(rb_msg, draw_uniform_single_value)
{
	struct rb_size z;
	char err[128];
	uint64_t rng = 7;

	cr_assert_eq(rb_size_parse("4k-4k", &z, err, sizeof(err)), 0);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(rb_size_draw(&z, &rng), 4096);
}

static void exp_mean(const char *spec, uint64_t mean)
{
	enum { N = 200000 };
	struct rb_size z;
	char err[128];
	uint64_t rng = 0xfeedface, max = 0;
	double sum = 0;

	cr_assert_eq(rb_size_parse(spec, &z, err, sizeof(err)), 0);
	for (int i = 0; i < N; i++) {
		uint64_t v = rb_size_draw(&z, &rng);

		cr_assert_leq(v, z.b, "%s: drew %lu above the cap", spec, (unsigned long)v);
		max = v > max ? v : max;
		sum += (double)v;
	}
	cr_assert_float_eq(sum / N, (double)mean, 0.05 * (double)mean, "%s: mean %.1f", spec,
	                   sum / N);
	/* The tail reaches well past the mean: P(X > 8 mean) = e^-8, ~67 of N. */
	cr_assert_gt(max, 8 * mean, "%s: max %lu", spec, (unsigned long)max);
}

Test(rb_msg, draw_exp_mean_and_cap)
{
	exp_mean("exp:16k", 16384);
	exp_mean("exp:1000", 1000);
	exp_mean("exp:1m", 1048576);
}

Test(rb_msg, draw_exp_small_mean_stays_capped)
{
	struct rb_size z;
	char err[128];
	uint64_t rng = 3;

	cr_assert_eq(rb_size_parse("exp:2", &z, err, sizeof(err)), 0);
	for (int i = 0; i < 200000; i++)
		cr_assert_leq(rb_size_draw(&z, &rng), 32);
}

Test(rb_msg, draw_exp_cap_is_reached_and_kept)
{
	/* A cap of twice the mean (by hand: the parser always makes it 16x):
	   P(X >= 2 mean) = e^-2, so the cap is hit often and never passed. */
	struct rb_size z = {.kind = RB_SIZE_EXP, .a = 1000, .b = 2000};
	uint64_t rng = 11, at_cap = 0;
	enum { N = 100000 };

	for (int i = 0; i < N; i++) {
		uint64_t v = rb_size_draw(&z, &rng);

		cr_assert_leq(v, 2000, "drew %lu", (unsigned long)v);
		at_cap += v == 2000;
	}
	cr_assert_float_eq((double)at_cap / N, exp(-2.0), 0.01, "%lu at the cap",
	                   (unsigned long)at_cap);
}

/* ---- rb_fill_new ---------------------------------------------------------- */

/* The first <max> octets of a fill text are whole lines of RB_FILL_LINE
 * octets (the last possibly cut), each ending CRLF, none starting '.'. */
static void check_fill(const char *f, size_t max)
{
	for (size_t i = 0; i < max; i++) {
		size_t pos = i % RB_FILL_LINE;
		char c = f[i];

		if (pos == RB_FILL_LINE - 2)
			cr_assert_eq(c, '\r', "max %zu: octet %zu", max, i);
		else if (pos == RB_FILL_LINE - 1)
			cr_assert_eq(c, '\n', "max %zu: octet %zu", max, i);
		else
			cr_assert(c >= 0x21 && c < 0x7f, "max %zu: octet %zu is %#x", max, i,
			          (unsigned char)c);
		if (pos == 0)
			cr_assert_neq(c, '.', "max %zu: line at %zu starts with a dot", max, i);
	}
}

Test(rb_msg, fill_lines)
{
	static const size_t maxes[] = {0, 1, 2, 79, 80, 81, 159, 160, 161, 1000, 4096, 1 << 20};

	for (size_t k = 0; k < ARRAY_LEN(maxes); k++) {
		char *f = rb_fill_new(maxes[k]);

		cr_assert_not_null(f);
		check_fill(f, maxes[k]);
		free(f);
	}
}

/* ---- rb_fill_split -------------------------------------------------------- */

/* The body as sent: fill[0..prefix) then the tail, with the tail written to
 * a buffer of exactly RB_FILL_LINE + 8 octets followed by a canary. */
static void check_split(const char *fill, size_t fill_len, size_t len)
{
	enum { CAP = RB_FILL_LINE + 8 };
	char tail[CAP + 16];
	size_t prefix = (size_t)-1, t, want = len == 1 ? 2 : len;

	memset(tail, '#', sizeof(tail));
	t = rb_fill_split(len, &prefix, tail, CAP);
	for (size_t i = CAP; i < sizeof(tail); i++)
		cr_assert_eq(tail[i], '#', "len %zu: tail written past its cap", len);
	cr_assert_leq(t, CAP, "len %zu", len);
	cr_assert_geq(t, 3, "len %zu", len);
	cr_assert_eq(prefix % RB_FILL_LINE, 0, "len %zu: prefix %zu", len, prefix);
	cr_assert_leq(prefix, len, "len %zu: prefix %zu past the body", len, prefix);
	cr_assert_leq(prefix, fill_len);
	cr_assert_eq(prefix + t - 3, want, "len %zu: prefix %zu + tail %zu", len, prefix, t);
	cr_assert_eq(memcmp(tail + t - 3, ".\r\n", 3), 0, "len %zu", len);
	if (len == 0)
		cr_assert_eq(t, 3, "len 0: the tail is the end of data alone");
	else if (t > 3)
		cr_assert_eq(memcmp(tail + t - 5, "\r\n.\r\n", 5), 0, "len %zu", len);
	else
		cr_assert_gt(prefix, 0, "len %zu: no content at all", len);

	/* Walk the concatenation: CRLF lines only, none starting '.', except
	   the last, which is ".". */
	size_t total = prefix + t, line_start = 0, lines = 0;
	char *all = malloc(total);

	cr_assert_not_null(all);
	memcpy(all, fill, prefix);
	memcpy(all + prefix, tail, t);
	for (size_t i = 0; i < total; i++) {
		if (all[i] == '\r') {
			cr_assert(i + 1 < total && all[i + 1] == '\n', "len %zu: bare CR at %zu",
			          len, i);
			if (i + 2 < total)
				cr_assert_neq(all[line_start], '.',
				              "len %zu: line at %zu starts with a dot", len,
				              line_start);
			cr_assert_leq(i + 2 - line_start, 1000, "len %zu: line too long", len);
			i++;
			line_start = i + 1;
			lines++;
			continue;
		}
		cr_assert_neq(all[i], '\n', "len %zu: bare LF at %zu", len, i);
	}
	cr_assert_eq(line_start, total, "len %zu: unterminated last line", len);
	cr_assert_eq(memcmp(all + total - 3, ".\r\n", 3), 0);
	if (total > 3)
		cr_assert_eq(memcmp(all + total - 5, "\r\n.\r\n", 5), 0);
	cr_assert_geq(lines, 1);
	free(all);
}

Test(rb_msg, fill_split_every_small_length)
{
	size_t fill_len = 4 * RB_FILL_LINE;
	char *fill = rb_fill_new(fill_len);

	cr_assert_not_null(fill);
	for (size_t len = 0; len <= 3 * RB_FILL_LINE + 3; len++)
		check_split(fill, fill_len, len);
	free(fill);
}

Test(rb_msg, fill_split_large_lengths)
{
	/* Around round numbers, whole fill lines, and a few MiB: each -1..+2. */
	static const size_t bases[] = {1000,    4096,     65536,   1000 * RB_FILL_LINE,
	                               1000000, 1u << 20, 5u << 20};
	size_t fill_len = (5u << 20) + 4 * RB_FILL_LINE;
	char *fill = rb_fill_new(fill_len);

	cr_assert_not_null(fill);
	for (size_t k = 0; k < ARRAY_LEN(bases); k++)
		for (size_t len = bases[k] - 1; len <= bases[k] + 2; len++)
			check_split(fill, fill_len, len);
	free(fill);
}

Test(rb_msg, fill_split_random_lengths_within_fill)
{
	/* As the sender uses it: the fill made for the largest size, bodies of
	   any size up to it. */
	size_t fill_len = 70000;
	char *fill = rb_fill_new(fill_len);

	cr_assert_not_null(fill);
	for (int k = 0; k < 500; k++)
		check_split(fill, fill_len, (size_t)(rnd() % (fill_len + 1)));
	check_split(fill, fill_len, fill_len);
	free(fill);
}

Test(rb_msg, fill_split_exact_tails)
{
	char tail[RB_FILL_LINE + 8];
	size_t prefix, t;

	t = rb_fill_split(0, &prefix, tail, sizeof(tail));
	cr_assert_eq(prefix, 0);
	cr_assert_eq(t, 3);
	cr_assert_eq(memcmp(tail, ".\r\n", 3), 0);

	t = rb_fill_split(1, &prefix, tail, sizeof(tail));
	cr_assert_eq(prefix, 0);
	cr_assert_eq(t, 5);
	cr_assert_eq(memcmp(tail, "\r\n.\r\n", 5), 0);

	t = rb_fill_split(2, &prefix, tail, sizeof(tail));
	cr_assert_eq(prefix, 0);
	cr_assert_eq(t, 5);
	cr_assert_eq(memcmp(tail, "\r\n.\r\n", 5), 0);

	t = rb_fill_split(RB_FILL_LINE, &prefix, tail, sizeof(tail));
	cr_assert_eq(prefix, RB_FILL_LINE);
	cr_assert_eq(t, 3);

	/* 81: no one-octet line, so one line of 81 instead of 80 + 1. */
	t = rb_fill_split(RB_FILL_LINE + 1, &prefix, tail, sizeof(tail));
	cr_assert_eq(prefix, 0);
	cr_assert_eq(t, RB_FILL_LINE + 1 + 3);
	cr_assert_eq(memcmp(tail + RB_FILL_LINE - 1, "\r\n.\r\n", 5), 0);
}

/* ---- rb_corpus_encode ----------------------------------------------------- */

static void encodes(const char *in, size_t n, const char *want, size_t want_len)
{
	size_t out_len = (size_t)-1;
	char *o = rb_corpus_encode(guarded(0, in, n), n, &out_len);

	cr_assert_not_null(o);
	cr_assert_eq(out_len, want_len, "input %zu octets: length %zu want %zu", n, out_len,
	             want_len);
	cr_assert_eq(memcmp(o, want, want_len), 0, "input %zu octets: '%.*s'", n, (int)out_len, o);
	free(o);
}

#define ENC(in, want) encodes(in, sizeof(in) - 1, want, sizeof(want) - 1)

Test(rb_msg, encode_line_ends)
{
	ENC("a\nb\n", "a\r\nb\r\n.\r\n");
	ENC("a\rb\r", "a\r\nb\r\n.\r\n");
	ENC("a\r\nb\r\n", "a\r\nb\r\n.\r\n");
	ENC("a\r\nb\nc\rd\r\n", "a\r\nb\r\nc\r\nd\r\n.\r\n");
	ENC("\n", "\r\n.\r\n");
	ENC("\r", "\r\n.\r\n");
	ENC("\r\n", "\r\n.\r\n");
	ENC("\n\n", "\r\n\r\n.\r\n");
	ENC("\n\r", "\r\n\r\n.\r\n");   /* LF then CR: two line ends */
	ENC("\r\r\n", "\r\n\r\n.\r\n"); /* CR then CRLF */
	ENC("a\r\r\nb", "a\r\n\r\nb\r\n.\r\n");
}

Test(rb_msg, encode_adds_missing_final_newline)
{
	ENC("abc", "abc\r\n.\r\n");
	ENC("a\nb", "a\r\nb\r\n.\r\n");
	ENC("x", "x\r\n.\r\n");
}

Test(rb_msg, encode_empty_is_end_of_data_only)
{
	/* No line at all: the content is empty, as rb_fill_split(0) sends. */
	ENC("", ".\r\n");
}

Test(rb_msg, encode_dot_stuffing)
{
	ENC(".x\n", "..x\r\n.\r\n");
	ENC(".\n", "..\r\n.\r\n");
	ENC(".", "..\r\n.\r\n");
	ENC("..\n", "...\r\n.\r\n");
	ENC("a.b\n.c\n", "a.b\r\n..c\r\n.\r\n");
	ENC("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n");
	ENC("a\r.\rb", "a\r\n..\r\nb\r\n.\r\n");
	ENC("x.\n", "x.\r\n.\r\n");
}

Test(rb_msg, encode_keeps_other_octets)
{
	encodes("a\0b\tc\xff\n", 7, "a\0b\tc\xff\r\n.\r\n", 11);
}

/* RFC 5321 4.5.2, the receiver's side: lines up to the line ".", one
 * leading dot removed from each other line. Fails the test on anything but
 * CRLF lines, or octets after the end of data. Returns the content. */
static char *decode(const char *p, size_t n, size_t *out_len)
{
	char *o = malloc(n + 1);
	size_t j = 0, i = 0;
	bool ended = false;

	cr_assert_not_null(o);
	while (i < n) {
		size_t e = i;

		while (e < n && p[e] != '\r' && p[e] != '\n')
			e++;
		cr_assert(e + 1 < n && p[e] == '\r' && p[e + 1] == '\n',
		          "not a CRLF line at %zu of %zu", e, n);
		if (e - i == 1 && p[i] == '.') {
			ended = true;
			i = e + 2;
			break;
		}
		size_t s = p[i] == '.' ? i + 1 : i;

		memcpy(o + j, p + s, e - s);
		j += e - s;
		o[j++] = '\r';
		o[j++] = '\n';
		i = e + 2;
	}
	cr_assert(ended, "no end of data");
	cr_assert_eq(i, n, "%zu octets after the end of data", n - i);
	*out_len = j;
	return o;
}

/* The input with every CRLF, lone CR and lone LF made CRLF, and a CRLF
 * added to a last line that has none. */
static char *normalise(const char *p, size_t n, size_t *out_len)
{
	char *o = malloc(2 * n + 2);
	size_t j = 0;

	cr_assert_not_null(o);
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' || p[i] == '\n') {
			if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
				i++;
			o[j++] = '\r';
			o[j++] = '\n';
		} else {
			o[j++] = p[i];
		}
	}
	if (j > 0 && o[j - 1] != '\n') {
		o[j++] = '\r';
		o[j++] = '\n';
	}
	*out_len = j;
	return o;
}

Test(rb_msg, encode_round_trips_through_rfc5321_decoding)
{
	static const char alphabet[] = {'a', '.', '\r', '\n'};
	char in[96];

	for (int k = 0; k < 50000; k++) {
		size_t n = (size_t)(rnd() % sizeof(in)), enc_len, dec_len, norm_len;

		for (size_t i = 0; i < n; i++)
			in[i] = alphabet[rnd() % ARRAY_LEN(alphabet)];

		char *enc = rb_corpus_encode(guarded(0, in, n), n, &enc_len);

		cr_assert_not_null(enc);
		cr_assert_leq(enc_len, 2 * n + 8, "n %zu", n);
		char *dec = decode(enc, enc_len, &dec_len);
		char *norm = normalise(in, n, &norm_len);

		cr_assert_eq(dec_len, norm_len, "'%.*s': decoded %zu octets, want %zu", (int)n, in,
		             dec_len, norm_len);
		cr_assert_eq(memcmp(dec, norm, norm_len), 0, "'%.*s'", (int)n, in);
		free(enc);
		free(dec);
		free(norm);
	}
}

Test(rb_msg, unstuff_gives_back_the_content_for_bdat)
{
	static const char alphabet[] = {'a', '.', '\r', '\n'};
	char in[96];

	for (int k = 0; k < 50000; k++) {
		size_t n = (size_t)(rnd() % sizeof(in)), enc_len, norm_len;

		for (size_t i = 0; i < n; i++)
			in[i] = alphabet[rnd() % ARRAY_LEN(alphabet)];

		char *enc = rb_corpus_encode(in, n, &enc_len);
		char *norm = normalise(in, n, &norm_len);
		size_t len = rb_corpus_unstuff(enc, enc_len);

		cr_assert_eq(len, norm_len, "'%.*s': %zu octets, want %zu", (int)n, in, len,
		             norm_len);
		cr_assert_eq(memcmp(enc, norm, norm_len), 0, "'%.*s'", (int)n, in);
		free(enc);
		free(norm);
	}
}

Test(rb_msg, encode_worst_case_sizes)
{
	/* All dots on their own lines, all bare line ends: the largest output. */
	static const char *const in[] = {".\n.\n.\n.", "\n\n\n\n\n", "\r\r\r\r", "....", "."};

	for (size_t k = 0; k < ARRAY_LEN(in); k++) {
		size_t n = strlen(in[k]), enc_len, dec_len, norm_len;
		char *enc = rb_corpus_encode(guarded(0, in[k], n), n, &enc_len);

		cr_assert_not_null(enc);
		char *dec = decode(enc, enc_len, &dec_len);
		char *norm = normalise(in[k], n, &norm_len);

		cr_assert_eq(dec_len, norm_len);
		cr_assert_eq(memcmp(dec, norm, norm_len), 0);
		free(enc);
		free(dec);
		free(norm);
	}
}

/* ---- rb_corpus_load ------------------------------------------------------- */

static char tmpdir[64];

static void mktmp(void)
{
	strcpy(tmpdir, "/tmp/rb_msg_test.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rmtmp(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tmpdir[0] = '\0';
}

static void put(const char *name, const char *p, size_t n)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(p, 1, n, f), n);
	cr_assert_eq(fclose(f), 0);
}

#define PUT(name, s) put(name, s, sizeof(s) - 1)

static void is_empty(const struct rb_corpus *c)
{
	cr_assert_eq(c->n, 0);
	cr_assert_null(c->data);
	cr_assert_null(c->len);
	cr_assert_eq(c->bytes, 0);
}

static void same_as_encode(const struct rb_corpus *c, size_t i, const char *raw, size_t n)
{
	size_t want_len;
	char *want = rb_corpus_encode(raw, n, &want_len);

	cr_assert_not_null(want);
	cr_assert_eq(c->len[i], want_len, "message %zu: %zu octets, want %zu", i, c->len[i],
	             want_len);
	cr_assert_eq(memcmp(c->data[i], want, want_len), 0, "message %zu", i);
	free(want);
}

TestSuite(rb_corpus, .init = mktmp, .fini = rmtmp);

Test(rb_corpus, loads_only_eml_sorted)
{
	struct rb_corpus c;
	char err[256] = "";

	static const char a[] = "Subject: a\r\n\r\n.hidden\r\n", b[] = "Subject: b\n\nbody b\n.\n",
	                  cc[] = "no newline at the end";

	PUT("b.eml", b);
	PUT("a.eml", a);
	PUT("c.eml", cc);
	PUT("notes.txt", "not a message\n");
	PUT("d.eml.bak", "backup\n");
	PUT("README", "readme\n");
	PUT("e.EML.txt", "x\n");
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n, 3, "loaded %zu", c.n);
	same_as_encode(&c, 0, a, sizeof(a) - 1);
	same_as_encode(&c, 1, b, sizeof(b) - 1);
	same_as_encode(&c, 2, cc, sizeof(cc) - 1);
	cr_assert_eq(memcmp(c.data[0], "Subject: a\r\n\r\n..hidden\r\n.\r\n", c.len[0]), 0);
	cr_assert_eq(c.bytes, c.len[0] + c.len[1] + c.len[2]);
	rb_corpus_free(&c);
	is_empty(&c);
	rb_corpus_free(&c); /* twice is harmless */
}

Test(rb_corpus, sorted_by_name_not_by_creation)
{
	struct rb_corpus c;
	char err[256] = "";
	static const char *const names[] = {"10.eml", "2.eml", "z.eml", "A.eml", "1.eml"};
	static const char *const sorted[] = {"1.eml", "10.eml", "2.eml", "A.eml", "z.eml"};

	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		put(names[i], names[i], strlen(names[i]));
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n, ARRAY_LEN(names));
	for (size_t i = 0; i < c.n; i++)
		same_as_encode(&c, i, sorted[i], strlen(sorted[i]));
	rb_corpus_free(&c);
}

Test(rb_corpus, empty_file_is_an_empty_message)
{
	struct rb_corpus c;
	char err[256] = "";

	put("empty.eml", "", 0);
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n, 1);
	cr_assert_eq(c.len[0], 3);
	cr_assert_eq(memcmp(c.data[0], ".\r\n", 3), 0);
	cr_assert_eq(c.bytes, 3);
	rb_corpus_free(&c);
}

Test(rb_corpus, empty_dir)
{
	struct rb_corpus c;
	char err[256] = "";

	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), -1);
	cr_assert_gt(strlen(err), 0, "no message");
	cr_assert_not_null(strstr(err, tmpdir), "'%s' does not name the directory", err);
	is_empty(&c);
}

Test(rb_corpus, dir_without_eml)
{
	struct rb_corpus c;
	char err[256] = "";

	PUT("a.txt", "x\n");
	PUT("eml", "x\n");
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), -1);
	cr_assert_gt(strlen(err), 0, "no message");
	is_empty(&c);
}

Test(rb_corpus, missing_dir)
{
	struct rb_corpus c;
	char err[256] = "", path[128];

	snprintf(path, sizeof(path), "%s/nonexistent", tmpdir);
	cr_assert_eq(rb_corpus_load(&c, path, 1 << 20, err, sizeof(err)), -1);
	cr_assert_gt(strlen(err), 0, "no message");
	cr_assert_not_null(strstr(err, path), "'%s' does not name the directory", err);
	is_empty(&c);
}

Test(rb_corpus, not_a_dir)
{
	struct rb_corpus c;
	char err[256] = "", path[128];

	PUT("a.eml", "x\n");
	snprintf(path, sizeof(path), "%s/a.eml", tmpdir);
	cr_assert_eq(rb_corpus_load(&c, path, 1 << 20, err, sizeof(err)), -1);
	cr_assert_gt(strlen(err), 0);
	is_empty(&c);
}

Test(rb_corpus, file_over_max_refused)
{
	struct rb_corpus c;
	char err[256] = "";

	PUT("a.eml", "small\n");
	PUT("b.eml", "0123456789\n"); /* 11 octets */
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 10, err, sizeof(err)), -1);
	cr_assert_gt(strlen(err), 0, "no message");
	cr_assert_not_null(strstr(err, "b.eml"), "'%s' does not name the file", err);
	is_empty(&c);
	/* Exactly max is fine. */
	err[0] = '\0';
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 11, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n, 2);
	rb_corpus_free(&c);
}

Test(rb_corpus, unreadable_file_refused)
{
	/* A link to nowhere: unreadable even for root. */
	struct rb_corpus c;
	char err[256] = "", path[128];

	PUT("a.eml", "x\n");
	snprintf(path, sizeof(path), "%s/b.eml", tmpdir);
	cr_assert_eq(symlink("/nonexistent/rb_msg_test", path), 0);
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "b.eml"), "'%s' does not name the file", err);
	is_empty(&c);
}

Test(rb_corpus, subdirectory_named_eml_is_skipped)
{
	/* rb.h: "every regular file is read": a directory that happens to end
	   in .eml is not a message and must not fail the load. */
	struct rb_corpus c;
	char err[256] = "", path[128];

	PUT("a.eml", "x\n");
	snprintf(path, sizeof(path), "%s/sub.eml", tmpdir);
	cr_assert_eq(mkdir(path, 0700), 0);
	cr_assert_eq(rb_corpus_load(&c, tmpdir, 1 << 20, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n, 1);
	rb_corpus_free(&c);
}

Test(rb_corpus, large_file_round_trips)
{
	struct rb_corpus c;
	char err[256] = "";
	size_t n = 300000, dec_len, norm_len;
	char *raw = malloc(n);
	static const char alphabet[] = {'a', 'b', '.', '\r', '\n', ' '};

	cr_assert_not_null(raw);
	for (size_t i = 0; i < n; i++)
		raw[i] = alphabet[rnd() % ARRAY_LEN(alphabet)];
	put("big.eml", raw, n);
	cr_assert_eq(rb_corpus_load(&c, tmpdir, n, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n, 1);
	cr_assert_eq(c.bytes, c.len[0]);
	char *dec = decode(c.data[0], c.len[0], &dec_len);
	char *norm = normalise(raw, n, &norm_len);

	cr_assert_eq(dec_len, norm_len);
	cr_assert_eq(memcmp(dec, norm, norm_len), 0);
	free(dec);
	free(norm);
	free(raw);
	rb_corpus_free(&c);
}
