/* rb_sweep: the command-line pieces of a ringmx-bench sweep (rb.h): the
 * list of session counts of --sweep and the targets of --server and
 * --peer. Pure string work, so that tests/unit/rb_sweep_test.c can take
 * every odd input to it; the runs themselves are rb_main.c's and their
 * table and JSON rb_report.c's. */
#include "bench/rb.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

int rb_sweep_parse(const char *s, int *out, int max, char *err, size_t errlen)
{
	int n = 0;

	for (const char *p = s;; p++) {
		char *end;
		long v;

		if (*p < '0' || *p > '9')
			return fail(err, errlen, "'%s' is not a list of session counts (1,10,100)",
			            s);
		errno = 0;
		v = strtol(p, &end, 10);
		if (errno || v < 1 || v > max)
			return fail(err, errlen, "%.*s is not a session count from 1 to %d",
			            (int)(end - p), p, max);
		if (n == RB_SWEEP_MAX)
			return fail(err, errlen, "more than %d session counts", RB_SWEEP_MAX);
		out[n++] = (int)v;
		p = end;
		if (*p == '\0')
			return n;
		if (*p != ',')
			return fail(err, errlen, "'%s' is not a list of session counts (1,10,100)",
			            s);
	}
}

int rb_hostport_split(const char *s, char *host, size_t hostlen, char *port, size_t portlen,
                      char *err, size_t errlen)
{
	const char *colon, *h = s;
	size_t hl;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':')
			return fail(err, errlen, "'%s' is not [ADDR]:PORT", s);
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return fail(err, errlen, "'%s' is not HOST:PORT", s);
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen)
		return fail(err, errlen, "'%s': no host, or one too long", s);
	const char *p = colon + 1;
	size_t pl = strlen(p);
	long v = 0;

	if (pl == 0 || pl >= portlen || pl > 5 || strspn(p, "0123456789") != pl ||
	    (v = strtol(p, NULL, 10)) < 1 || v > 65535)
		return fail(err, errlen, "'%s': the port is not a number from 1 to 65535", s);
	memcpy(host, h, hl);
	host[hl] = '\0';
	memcpy(port, p, pl + 1);
	return 0;
}

int rb_target_parse(const char *s, struct rb_target *t, char *err, size_t errlen)
{
	const char *eq = strchr(s, '=');
	const char *spec = eq ? eq + 1 : s;

	memset(t, 0, sizeof(*t));
	if (eq) {
		size_t n = (size_t)(eq - s);

		if (n == 0 || n >= sizeof(t->label))
			return fail(err, errlen,
			            "'%s': the label before '=' is empty or over %zu "
			            "characters",
			            s, sizeof(t->label) - 1);
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
				return fail(err, errlen,
				            "'%s': the label is not printable ASCII "
				            "without spaces",
				            s);
		memcpy(t->label, s, n);
		t->label[n] = '\0';
	}
	if (rb_hostport_split(spec, t->host, sizeof(t->host), t->port, sizeof(t->port), err,
	                      errlen) < 0)
		return -1;
	if (strlen(spec) >= sizeof(t->server))
		return fail(err, errlen, "'%s' is too long", s);
	strcpy(t->server, spec);
	if (!eq) { /* cut to the field: a label is for the reader */
		size_t n = strnlen(spec, sizeof(t->label) - 1);

		memcpy(t->label, spec, n);
		t->label[n] = '\0';
	}
	return 0;
}
