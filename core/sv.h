/* sv: string views. A view points into memory it does not own; each field
 * that holds one says how long it stays valid. libc only. */
#ifndef RINGMX_CORE_SV_H
#define RINGMX_CORE_SV_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct sv {
	const char *p;
	size_t len;
};

#define SV_INIT(lit)                                                                               \
	{                                                                                          \
		(lit), sizeof(lit) - 1                                                             \
	}
#define SV(lit) ((struct sv)SV_INIT(lit))

static inline struct sv sv_make(const char *p, size_t len)
{
	return (struct sv){p, len};
}

static inline struct sv sv_cstr(const char *s)
{
	return (struct sv){s, strlen(s)};
}

static inline bool sv_eq(struct sv a, struct sv b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* ASCII case-insensitive comparison (SMTP verbs, domains). */
static inline bool sv_eq_ci(struct sv a, struct sv b)
{
	return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

static inline bool sv_starts_ci(struct sv a, struct sv prefix)
{
	return a.len >= prefix.len && strncasecmp(a.p, prefix.p, prefix.len) == 0;
}

static inline struct sv sv_skip(struct sv a, size_t n)
{
	if (n > a.len)
		n = a.len;
	return (struct sv){a.p + n, a.len - n};
}

/* Removes leading and trailing spaces and tabs. */
static inline struct sv sv_trim(struct sv a)
{
	while (a.len && (a.p[0] == ' ' || a.p[0] == '\t'))
		a.p++, a.len--;
	while (a.len && (a.p[a.len - 1] == ' ' || a.p[a.len - 1] == '\t'))
		a.len--;
	return a;
}

#endif
