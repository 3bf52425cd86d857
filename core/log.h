/* log: one line per event worth an operator's eye, to stderr. Each call is
 * formatted into a stack buffer and leaves in one write(2), so lines from
 * different workers never interleave; or, on a thread that set a sink (the
 * workers), it is appended there and the thread writes the sink's lines
 * out itself (io/ring: one ring write per round). An error line is written
 * at once, after what the sink holds: it may precede an abort(). Any
 * thread. libc only. */
#ifndef RINGMX_CORE_LOG_H
#define RINGMX_CORE_LOG_H

#include <stddef.h>

enum log_level {
	LOG_ERR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
};

extern enum log_level log_threshold;

/* Parses "error", "warn", "info" or "debug". Returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lines gathered instead of written: <p> (malloc'd, grown by log_msg up to
 * LOG_SINK_MAX; past that a line is written directly) holds <len> bytes of
 * whole lines. The owner empties it. */
#define LOG_SINK_MAX ((size_t)1 << 20)
struct log_sink {
	char *p;
	size_t len, cap;
};
/* The calling thread's lines go to <s> from now on; NULL: to stderr again. */
void log_sink_set(struct log_sink *s);

#define log_enabled(l) ((l) <= log_threshold)
#define LOGE(...)      log_msg(LOG_ERR, __VA_ARGS__)
#define LOGW(...)      log_msg(LOG_WARN, __VA_ARGS__)
#define LOGI(...)                                                                                  \
	do {                                                                                       \
		if (log_enabled(LOG_INFO))                                                         \
			log_msg(LOG_INFO, __VA_ARGS__);                                            \
	} while (0)
#define LOGD(...)                                                                                  \
	do {                                                                                       \
		if (log_enabled(LOG_DEBUG))                                                        \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
	} while (0)

#endif
