/* log: stderr logging, one write(2) per line, or into the thread's sink.
 * See log.h. */
#include "core/log.h"
#include "core/utc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static __thread struct log_sink *log_sink;

void log_sink_set(struct log_sink *s)
{
	log_sink = s;
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

void log_msg(enum log_level l, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;
	int k;

	if (!log_enabled(l))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	utc_tm(ts.tv_sec, &tm);
	k = snprintf(line, sizeof(line),
	             "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringmx %s: ", tm.tm_year + 1900,
	             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	             ts.tv_nsec / 1000000, log_names[l]);
	n = k > 0 ? (size_t)k : 0;
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (k > 0)
		n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
	line[n++] = '\n';
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
