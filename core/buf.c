/* buf: growable byte buffer. See buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int buf_reserve(struct buf *b, size_t n)
{
	size_t need, cap;
	char *p;

	if (n > SIZE_MAX / 2 - b->len - 1)
		return -ENOMEM;
	need = b->len + n + 1; /* room for a NUL */
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	int err;

	if (n == 0)
		return 0;
	err = buf_reserve(b, n);
	if (err)
		return err;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	size_t room = b->cap - b->len; /* the NUL's byte included */
	va_list ap2;
	int n;

	/* Format once into the room there is; only text that does not fit is
	   formatted a second time, into the grown buffer. */
	va_copy(ap2, ap);
	n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= room) {
		if (buf_reserve(b, (size_t)n)) {
			if (room)
				b->p[b->len] = '\0'; /* the content stays as it was */
			return -ENOMEM;
		}
		vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	}
	b->len += (size_t)n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return err;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->p, b->p + n, b->len - n);
		b->len -= n;
	}
	if (b->p)
		b->p[b->len] = '\0';
}

void buf_reset(struct buf *b, size_t keep)
{
	if (b->cap > keep) {
		buf_free(b);
		return;
	}
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
}

const char *buf_cstr(struct buf *b)
{
	if (!b->p && buf_reserve(b, 0))
		return "";
	b->p[b->len] = '\0';
	return b->p;
}
