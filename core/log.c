/* log: stderr logging in text (syslog-shaped) or JSON, one write(2) per
 * line, or into the thread's sink. See log.h. */
#include "core/log.h"
#include "core/utc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int log_threshold = LOG_INFO;
enum log_format log_format = LOG_FMT_TEXT;

static char log_host[64] = "localhost";
static unsigned long log_pid;

static __thread struct log_sink *log_sink;

/* The time to the second, formatted once a second per thread: utc_tm()
 * and the digits cost more than the rest of a short line. */
static __thread time_t log_ts_sec = -1;
static __thread char log_ts[64]; /* "2026-12-07T12:08:47" */

static const char *const log_progs[LOG_P_N] = {
    [LOG_P_MASTER] = "ringmx/master",   [LOG_P_SMTPD] = "ringmx/smtpd",
    [LOG_P_CLEANUP] = "ringmx/cleanup", [LOG_P_QMGR] = "ringmx/qmgr",
    [LOG_P_SMTP] = "ringmx/smtp",       [LOG_P_BOUNCE] = "ringmx/bounce",
};

/* Postfix's words before a line's text; info has none. */
static const char *const log_words[] = {"error: ", "warning: ", "", "debug: "};

void log_sink_set(struct log_sink *s)
{
	log_sink = s;
}

void log_setup(const char *hostname, enum log_format f)
{
	size_t i;

	for (i = 0; hostname && hostname[i] && i < sizeof(log_host) - 1; i++)
		log_host[i] = (hostname[i] <= ' ' || hostname[i] == 0x7f) ? '-' : hostname[i];
	if (i)
		log_host[i] = '\0';
	log_pid = (unsigned long)getpid();
	log_format = f;
}

static void write_all(const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(STDERR_FILENO, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return; /* stderr is gone: nowhere to say so */
		p += k;
		n -= (size_t)k;
	}
}

/* Appends to the thread's sink; false when it cannot take the line. */
static bool sink_put(struct log_sink *s, const char *line, size_t n)
{
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 16384;
		char *p;

		while (cap < s->len + n)
			cap *= 2;
		if (cap > LOG_SINK_MAX || !(p = realloc(s->p, cap)))
			return false;
		s->p = p;
		s->cap = cap;
	}
	memcpy(s->p + s->len, line, n);
	s->len += n;
	return true;
}

static const char *const log_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
		if (strcasecmp(s, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

const char *log_level_name(enum log_level l)
{
	return (unsigned)l < 4 ? log_names[l] : "?";
}

int log_format_parse(const char *s, enum log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_FMT_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FMT_JSON;
	else
		return -EINVAL;
	return 0;
}

/* ---- building a line ---- */

/* Room kept at the end of a line for what closes it: '"', '}', '\n'. */
#define LOG_RESERVE 4u
#define LOG_ROOM    (LOG_LINE_MAX - LOG_RESERVE)

static void put(struct log_line *ln, const char *s, size_t n)
{
	if (n > LOG_ROOM - ln->n)
		n = LOG_ROOM - ln->n;
	memcpy(ln->p + ln->n, s, n);
	ln->n += n;
}

#define PUT_LIT(ln, lit) put((ln), (lit), sizeof(lit) - 1)

static void put_str(struct log_line *ln, const char *s)
{
	put(ln, s, strlen(s));
}

/* The length of the well-formed UTF-8 sequence at <s> (<n> bytes left),
 * or 0 (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t k;
	unsigned lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		k = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		k = 3, lo = s[0] == 0xe0 ? 0xa0 : 0x80, hi = s[0] == 0xed ? 0x9f : 0xbf;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		k = 4, lo = s[0] == 0xf0 ? 0x90 : 0x80, hi = s[0] == 0xf4 ? 0x8f : 0xbf;
	else
		return 0;
	if (n < k || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < k; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return k;
}

/* <s> as the inside of a JSON string (RFC 8259 7), cut at LOG_ROOM on a
 * character boundary of the escaping. UTF-8 passes as it is; a byte that
 * is not part of well-formed UTF-8 (a next hop's reply can hold any)
 * becomes U+FFFD, so that a JSON reader never fails on a line. */
static void put_json(struct log_line *ln, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len && s[i];) {
		unsigned char c = (unsigned char)s[i];
		char e[6];
		size_t k = 0, used = 1;

		if (c == '"' || c == '\\') {
			e[k++] = '\\';
			e[k++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			e[k++] = '\\';
			e[k++] = 'u';
			e[k++] = '0';
			e[k++] = '0';
			e[k++] = hex[c >> 4];
			e[k++] = hex[c & 15];
		} else if (c < 0x80) {
			e[k++] = (char)c;
		} else {
			size_t rest = len == (size_t)-1 ? strnlen(s + i, 4) : len - i;

			used = utf8_len((const unsigned char *)s + i, rest);
			if (used) {
				memcpy(e, s + i, used);
				k = used;
			} else {
				memcpy(e, "\xef\xbf\xbd", 3); /* U+FFFD */
				k = 3;
				used = 1;
			}
		}
		if (k > LOG_ROOM - ln->n)
			return;
		memcpy(ln->p + ln->n, e, k);
		ln->n += k;
		i += used;
	}
}

/* Control characters in text become '?' (as Postfix prints them): a CR or
 * LF from a peer must not start a line of its own. */
static void text_clean(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			p[i] = '?';
}

static void put_time(struct log_line *ln)
{
	struct timespec ts;
	char ms[8];

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != log_ts_sec) {
		struct tm tm;

		utc_tm(ts.tv_sec, &tm);
		snprintf(log_ts, sizeof(log_ts), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		log_ts_sec = ts.tv_sec;
	}
	put_str(ln, log_ts);
	unsigned v = (unsigned)(ts.tv_nsec / 1000000);

	ms[0] = '.';
	ms[1] = (char)('0' + v / 100);
	ms[2] = (char)('0' + v / 10 % 10);
	ms[3] = (char)('0' + v % 10);
	ms[4] = 'Z';
	put(ln, ms, 5);
}

static void put_uint(struct log_line *ln, unsigned long long v)
{
	char d[24];
	int k = snprintf(d, sizeof(d), "%llu", v);

	put(ln, d, (size_t)k);
}

void log_line_begin(struct log_line *ln, enum log_prog p, enum log_level l, const char *qid,
                    const char *event)
{
	ln->n = 0;
	ln->l = l;
	ln->json = log_format == LOG_FMT_JSON;
	if (!log_pid)
		log_pid = (unsigned long)getpid();
	if ((unsigned)p >= LOG_P_N)
		p = LOG_P_MASTER;
	if (ln->json) {
		PUT_LIT(ln, "{\"time\":\"");
		put_time(ln);
		PUT_LIT(ln, "\",\"host\":\"");
		put_json(ln, log_host, sizeof(log_host));
		PUT_LIT(ln, "\",\"program\":\"");
		put_str(ln, log_progs[p]);
		PUT_LIT(ln, "\",\"pid\":");
		put_uint(ln, log_pid);
		PUT_LIT(ln, ",\"level\":\"");
		put_str(ln, log_names[l]);
		PUT_LIT(ln, "\"");
		if (qid)
			log_line_str(ln, "qid", qid);
		if (event)
			log_line_str(ln, "event", event);
		return;
	}
	put_time(ln);
	PUT_LIT(ln, " ");
	put_str(ln, log_host);
	PUT_LIT(ln, " ");
	put_str(ln, log_progs[p]);
	PUT_LIT(ln, "[");
	put_uint(ln, log_pid);
	PUT_LIT(ln, "]: ");
	if (qid) {
		put_str(ln, qid);
		PUT_LIT(ln, ": ");
	}
}

static void line_vtext(struct log_line *ln, const char *fmt, va_list ap)
{
	size_t room = LOG_ROOM - ln->n;
	int k;

	if (!room)
		return;
	k = vsnprintf(ln->p + ln->n, room + 1, fmt, ap); /* its NUL may take a reserved byte */
	if (k <= 0)
		return;
	if ((size_t)k > room)
		k = (int)room;
	text_clean(ln->p + ln->n, (size_t)k);
	ln->n += (size_t)k;
}

void log_line_text(struct log_line *ln, const char *fmt, ...)
{
	va_list ap;

	if (ln->json)
		return;
	va_start(ap, fmt);
	line_vtext(ln, fmt, ap);
	va_end(ap);
}

/* ,"<key>": */
static bool put_key(struct log_line *ln, const char *key)
{
	size_t kl = strlen(key);

	if (kl + 5 > LOG_ROOM - ln->n)
		return false; /* no room for the field: it is left out whole */
	ln->p[ln->n++] = ',';
	ln->p[ln->n++] = '"';
	memcpy(ln->p + ln->n, key, kl);
	ln->n += kl;
	ln->p[ln->n++] = '"';
	ln->p[ln->n++] = ':';
	return true;
}

void log_line_strn(struct log_line *ln, const char *key, const char *v, size_t len)
{
	if (!ln->json || !put_key(ln, key))
		return;
	ln->p[ln->n++] = '"'; /* put_key() left a byte of LOG_ROOM for it */
	put_json(ln, v ? v : "", len);
	ln->p[ln->n++] = '"'; /* from LOG_RESERVE */
}

void log_line_num(struct log_line *ln, const char *key, unsigned long long v)
{
	if (!ln->json || LOG_ROOM - ln->n < strlen(key) + 4 + 20 || !put_key(ln, key))
		return;
	put_uint(ln, v);
}

void log_line_raw(struct log_line *ln, const char *key, const char *json)
{
	size_t n = strlen(json);

	if (!ln->json || LOG_ROOM - ln->n < strlen(key) + 4 + n || !put_key(ln, key))
		return;
	put(ln, json, n);
}

static void emit(enum log_level l, const char *line, size_t n)
{
	if (log_sink && l != LOG_ERR && sink_put(log_sink, line, n))
		return;
	if (log_sink && log_sink->len) {
		/* An error may come right before an abort() (a broken invariant):
		 * it and the lines gathered since the last ring write leave now,
		 * directly (that write, if still in flight, may land after them).
		 * Errors are rare; so is a full sink (LOG_SINK_MAX in a round). */
		write_all(log_sink->p, log_sink->len);
		log_sink->len = 0;
	}
	/* One write: lines from different workers never interleave. */
	write_all(line, n);
}

void log_line_end(struct log_line *ln)
{
	/* LOG_RESERVE holds these whatever came before; every JSON value
	 * was closed where it was added. */
	if (ln->json)
		ln->p[ln->n++] = '}';
	ln->p[ln->n++] = '\n';
	emit(ln->l, ln->p, ln->n);
}

void log_msg(enum log_prog p, enum log_level l, const char *fmt, ...)
{
	struct log_line ln;
	va_list ap;

	if (!log_enabled(l))
		return;
	log_line_begin(&ln, p, l, NULL, NULL);
	if (ln.json) {
		char msg[LOG_LINE_MAX];

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		log_line_str(&ln, "message", msg);
	} else {
		put_str(&ln, log_words[l]);
		va_start(ap, fmt);
		line_vtext(&ln, fmt, ap);
		va_end(ap);
	}
	log_line_end(&ln);
}
