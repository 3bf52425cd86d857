/* buf_test: append, printf growth, consume, reset with keep, cstr. */
#include "core/buf.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static struct buf b = BUF_INIT;

static void teardown(void)
{
	buf_free(&b);
}

TestSuite(buf, .fini = teardown);

/* The invariants every operation keeps: len < cap once allocated, and a NUL
 * just past the data. */
static void check(const char *want, size_t wantlen)
{
	cr_assert_eq(b.len, wantlen, "len %zu want %zu", b.len, wantlen);
	if (!b.p) {
		cr_assert_eq(wantlen, 0);
		cr_assert_eq(b.cap, 0);
		return;
	}
	cr_assert_lt(b.len, b.cap);
	cr_assert_eq(b.p[b.len], '\0');
	cr_assert_eq(memcmp(b.p, want, wantlen), 0);
}

Test(buf, starts_empty_without_memory)
{
	cr_assert_null(b.p);
	cr_assert_eq(buf_append(&b, "x", 0), 0);
	cr_assert_null(b.p, "an empty append allocates nothing");
	check("", 0);
	cr_assert_eq(buf_sv(&b).len, 0);
}

Test(buf, append_and_helpers)
{
	cr_assert_eq(buf_append(&b, "abc", 3), 0);
	check("abc", 3);
	cr_assert_eq(buf_append_str(&b, "def"), 0);
	cr_assert_eq(buf_append_sv(&b, SV("ghi")), 0);
	check("abcdefghi", 9);
	cr_assert(sv_eq(buf_sv(&b), SV("abcdefghi")));
}

Test(buf, append_binary_with_nul)
{
	cr_assert_eq(buf_append(&b, "a\0b", 3), 0);
	cr_assert_eq(buf_append(&b, "\0", 1), 0);
	check("a\0b\0", 4);
}

Test(buf, append_grows_across_many_doublings)
{
	char chunk[37];
	size_t total = 0;

	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (char)('A' + i % 26);
	for (int i = 0; i < 1000; i++) {
		size_t n = (size_t)i % sizeof(chunk);

		cr_assert_eq(buf_append(&b, chunk, n), 0);
		total += n;
		cr_assert_eq(b.len, total);
		if (b.p) /* the first append is empty and allocates nothing */
			cr_assert_lt(b.len, b.cap);
	}
	/* Capacity is a power of two from 64 (the growth rule in buf.c). */
	cr_assert_eq(b.cap & (b.cap - 1), 0, "cap %zu", b.cap);
	cr_assert_eq(b.p[b.len], '\0');
	for (size_t off = 0, i = 0; i < 1000; i++) {
		size_t n = i % sizeof(chunk);

		cr_assert_eq(memcmp(b.p + off, chunk, n), 0, "chunk %zu", i);
		off += n;
	}
}

Test(buf, printf_appends_and_grows)
{
	char want[4096];
	size_t wl = 0;

	cr_assert_eq(buf_printf(&b, "%d-%s", 250, "ok"), 0);
	check("250-ok", 6);
	/* Longer than the first allocation, then many more. */
	cr_assert_eq(buf_printf(&b, "%0100d", 7), 0);
	cr_assert_eq(b.len, 106);
	cr_assert_eq(b.p[105], '7');
	cr_assert_eq(b.p[6], '0');
	cr_assert_eq(b.p[b.len], '\0');
	buf_reset(&b, 0);
	for (int i = 0; i < 300; i++) {
		int n = snprintf(want + wl, sizeof(want) - wl, "%d,", i);

		wl += (size_t)n;
		cr_assert_eq(buf_printf(&b, "%d,", i), 0);
	}
	check(want, wl);
}

Test(buf, printf_empty_result)
{
	cr_assert_eq(buf_printf(&b, "%s", ""), 0);
	check("", 0);
	cr_assert_str_eq(buf_cstr(&b), "");
	cr_assert_eq(buf_append_str(&b, "x"), 0);
	cr_assert_eq(buf_printf(&b, "%.0s", "ignored"), 0);
	check("x", 1);
}

static int vwrap(struct buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vwrap(struct buf *o, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(o, fmt, ap);
	va_end(ap);
	return rc;
}

Test(buf, vprintf)
{
	cr_assert_eq(vwrap(&b, "%s %u %c", "five", 5u, '!'), 0);
	check("five 5 !", 8);
}

Test(buf, consume_front)
{
	cr_assert_eq(buf_append_str(&b, "HELO a\r\nMAIL b\r\n"), 0);
	buf_consume(&b, 8);
	check("MAIL b\r\n", 8);
	buf_consume(&b, 0);
	check("MAIL b\r\n", 8);
	buf_consume(&b, 7);
	check("\n", 1);
	buf_consume(&b, 1);
	check("", 0);
	cr_assert_not_null(b.p, "consume keeps the memory");
	cr_assert_eq(buf_append_str(&b, "next"), 0);
	check("next", 4);
}

Test(buf, consume_more_than_len_empties)
{
	cr_assert_eq(buf_append_str(&b, "abc"), 0);
	buf_consume(&b, 10);
	check("", 0);
}

Test(buf, consume_on_unallocated_is_safe)
{
	buf_consume(&b, 0);
	check("", 0);
	cr_assert_null(b.p);
}

Test(buf, reset_keeps_small_memory)
{
	char *p;
	size_t cap;

	cr_assert_eq(buf_append_str(&b, "hello"), 0);
	p = b.p;
	cap = b.cap;
	buf_reset(&b, cap);
	cr_assert_eq(b.p, p, "memory within <keep> is kept");
	cr_assert_eq(b.cap, cap);
	check("", 0);
	cr_assert_str_eq(buf_cstr(&b), "");
	cr_assert_eq(buf_append_str(&b, "again"), 0);
	check("again", 5);
}

Test(buf, reset_frees_large_memory)
{
	char big[1000];

	memset(big, 'z', sizeof(big));
	cr_assert_eq(buf_append(&b, big, sizeof(big)), 0);
	cr_assert_gt(b.cap, 512);
	buf_reset(&b, 512);
	cr_assert_null(b.p, "memory over <keep> is released");
	check("", 0);
	cr_assert_eq(buf_append_str(&b, "reuse"), 0);
	check("reuse", 5);
	buf_reset(&b, 0);
	cr_assert_null(b.p);
}

Test(buf, reset_unallocated)
{
	buf_reset(&b, 0);
	buf_reset(&b, 4096);
	check("", 0);
}

Test(buf, cstr_terminates_without_counting)
{
	const char *s = buf_cstr(&b);

	cr_assert_str_eq(s, "", "empty buffer gives an empty string");
	cr_assert_eq(b.len, 0);
	cr_assert_eq(buf_append(&b, "abcdef", 6), 0);
	buf_consume(&b, 2);
	s = buf_cstr(&b);
	cr_assert_str_eq(s, "cdef");
	cr_assert_eq(b.len, 4);
	cr_assert_eq(s, b.p);
}

Test(buf, reserve_makes_room)
{
	char *p;

	cr_assert_eq(buf_append_str(&b, "x"), 0);
	cr_assert_eq(buf_reserve(&b, 500), 0);
	cr_assert_geq(b.cap, b.len + 500 + 1);
	p = b.p;
	for (int i = 0; i < 500; i++)
		cr_assert_eq(buf_append(&b, "y", 1), 0);
	cr_assert_eq(b.p, p, "no reallocation within the reservation");
	cr_assert_eq(b.len, 501);
	cr_assert_eq(buf_reserve(&b, 0), 0);
}

Test(buf, huge_requests_fail_cleanly)
{
	cr_assert_eq(buf_append_str(&b, "keep"), 0);
	cr_assert_eq(buf_reserve(&b, SIZE_MAX), -ENOMEM);
	cr_assert_eq(buf_reserve(&b, SIZE_MAX / 2), -ENOMEM);
	cr_assert_eq(buf_append(&b, "x", SIZE_MAX - 2), -ENOMEM);
	check("keep", 4);
}

Test(buf, free_then_reuse)
{
	buf_free(&b);
	check("", 0);
	cr_assert_eq(buf_append_str(&b, "abc"), 0);
	buf_free(&b);
	cr_assert_null(b.p);
	cr_assert_eq(b.cap, 0);
	buf_free(&b); /* twice is harmless */
	cr_assert_eq(buf_printf(&b, "%s", "new"), 0);
	check("new", 3);
}
