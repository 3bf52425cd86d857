/* rb_reply: ringmx-bench's SMTP reply parser (RFC 5321 4.2, 4.5.3.1.5).
 * Written for the client alone, without the server's code: a reply is one
 * or more lines "ddd-text" ending with a line "ddd text" (or "ddd"), every
 * line with the same code, the first digit 2-5, lines ended by CRLF. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bench/rb.h"

long rb_reply_find_line(const char *p, size_t n, size_t *used)
{
	size_t lim = n < RB_REPLY_LINE_MAX ? n : RB_REPLY_LINE_MAX;
	for (size_t i = 0; i < lim; i++) {
		if (p[i] == '\n')
			return -2; /* LF without the CR before it */
		if (p[i] != '\r')
			continue;
		if (i + 1 == n)
			return -1; /* the LF may still come */
		if (p[i + 1] != '\n')
			return -2;
		*used = i + 2;
		return (long)i;
	}
	return n >= RB_REPLY_LINE_MAX ? -2 : -1;
}

static void keep_text(struct rb_reply *r, const char *p, size_t n)
{
	size_t k = n < sizeof(r->text) - 1 ? n : sizeof(r->text) - 1;
	for (size_t i = 0; i < k; i++) /* printable only: it ends up in reports */
		r->text[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
	r->text[k] = '\0';
}

static int violation(struct rb_reply *r, const char *why, const char *p, size_t n)
{
	char line[64];
	size_t k = n < 40 ? n : 40;
	for (size_t i = 0; i < k; i++)
		line[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
	line[k] = '\0';
	snprintf(r->text, sizeof(r->text), "%s: \"%s%s\"", why, line, n > k ? "..." : "");
	r->lines = 0;
	return -1;
}

/* EHLO keywords (RFC 5321 4.1.1.1): the first word of each line after the
 * first, case-insensitive. */
static unsigned ehlo_keyword(const char *p, size_t n)
{
	static const struct {
		const char *kw;
		unsigned cap;
	} kws[] = {
	    {"PIPELINING", RB_CAP_PIPELINING},
	    {"STARTTLS", RB_CAP_STARTTLS},
	    {"CHUNKING", RB_CAP_CHUNKING},
	    {"8BITMIME", RB_CAP_8BITMIME},
	    {"SIZE", RB_CAP_SIZE},
	};
	size_t w = 0;
	while (w < n && p[w] != ' ')
		w++;
	for (size_t i = 0; i < sizeof(kws) / sizeof(kws[0]); i++)
		if (strlen(kws[i].kw) == w && strncasecmp(p, kws[i].kw, w) == 0)
			return kws[i].cap;
	return 0;
}

int rb_reply_line(struct rb_reply *r, const char *p, size_t n)
{
	if (n < 3 || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '5' || p[2] < '0' ||
	    p[2] > '9')
		return violation(r, "not a reply line", p, n);
	if (n > 3 && p[3] != ' ' && p[3] != '-')
		return violation(r, "bad separator after the code", p, n);
	int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	if (r->lines == 0) {
		r->code = code;
		r->caps = 0;
		keep_text(r, p + (n > 4 ? 4 : n), n > 4 ? n - 4 : 0);
	} else if (code != r->code) {
		return violation(r, "code changed within a reply", p, n);
	} else if (n > 4) {
		r->caps |= ehlo_keyword(p + 4, n - 4);
	}
	r->lines++;
	if (n > 3 && p[3] == '-')
		return 0;
	r->lines = 0;
	return 1;
}
