/* buf: a growable byte buffer that owns its memory (Postfix's VSTRING in
 * spirit): replies, envelopes and message bodies are built in one instead of
 * raw char* arithmetic. libc only; allocation goes through malloc, which the
 * ringmx binary takes from jemalloc. */
#ifndef RINGMX_CORE_BUF_H
#define RINGMX_CORE_BUF_H

#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>

#include "core/sv.h"

struct buf {
	char *p;    /* NULL until the first append */
	size_t len; /* bytes in use */
	size_t cap; /* bytes allocated */
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

/* Makes room for <n> more bytes. Returns 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
/* Appends <n> bytes. Returns 0 or -ENOMEM (the buffer is unchanged then). */
int buf_append(struct buf *b, const void *p, size_t n);
static inline int buf_append_sv(struct buf *b, struct sv v)
{
	return buf_append(b, v.p, v.len);
}
static inline int buf_append_str(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}
/* Appends formatted text (no terminating NUL counted in len, but one is
 * kept after the data). Returns 0 or -ENOMEM. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drops the first <n> bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Empties the buffer; keeps the memory unless it is larger than <keep>. */
void buf_reset(struct buf *b, size_t keep);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* NUL-terminates the content (not counted in len) and returns it. */
const char *buf_cstr(struct buf *b);

static inline struct sv buf_sv(const struct buf *b)
{
	return (struct sv){b->p, b->len};
}

#endif
