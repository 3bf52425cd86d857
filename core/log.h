/* log: one line per event worth an operator's eye, to stderr, in a shape
 * that log tools parse. Text (the default) is a syslog line as Postfix
 * writes it, with an RFC 3339 time:
 *
 *   2026-12-07T12:08:47.123Z mx.example ringmx/smtpd[4242]: 7F3A...: client=unknown[192.0.2.1]
 *
 * so pflogsumm --syslog-name=ringmx and the usual greps work; the mail
 * events of core/maillog are keyed by queue id. JSON is one object per
 * line with the same fields (time, host, program, pid, level, then the
 * event's). Each line is formatted into a stack buffer and leaves in one
 * write(2), so lines from different workers never interleave; or, on a
 * thread that set a sink (the workers), it is appended there and the
 * thread writes the sink's lines out itself (io/ring: one ring write per
 * round). An error line is written at once, after what the sink holds: it
 * may precede an abort(). Any thread. libc only. */
#ifndef RINGMX_CORE_LOG_H
#define RINGMX_CORE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_ERR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
};

enum log_format {
	LOG_FMT_TEXT = 0, /* syslog-shaped, Postfix's words */
	LOG_FMT_JSON,     /* one JSON object per line */
};

/* The program a line names, after Postfix's daemons (pflogsumm counts
 * by them): "ringmx/smtpd[pid]". */
enum log_prog {
	LOG_P_MASTER = 0, /* start, stop, signals, configuration */
	LOG_P_SMTPD,      /* SMTP sessions: connect, client=, reject, disconnect */
	LOG_P_CLEANUP,    /* message-id= */
	LOG_P_QMGR,       /* from= (queue active), removed, spool */
	LOG_P_SMTP,       /* deliveries to next hops: to= ... status= */
	LOG_P_BOUNCE,     /* sender non-delivery notifications */
	LOG_P_N,
};

/* Written by a reload (main thread) while the workers log: atomic. */
extern _Atomic int log_threshold;
extern enum log_format log_format;

/* Parses "error", "warn", "info" or "debug". Returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);
/* Parses "text" or "json". Returns 0 or -EINVAL. */
int log_format_parse(const char *s, enum log_format *out);

/* The host a line names (<hostname>, copied, truncated, blanks made '-')
 * and <f>. Main thread, before other threads log; until then lines name
 * "localhost" and are text. The pid is read here too. */
void log_setup(const char *hostname, enum log_format f);

void log_msg(enum log_prog p, enum log_level l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A line built field by field (core/maillog): begun with the prefix (and,
 * in text, "<qid>: "), added to, ended. Text and JSON differ in more than
 * syntax (Postfix's text puts some fields in words), so a caller adds
 * each field for one form: log_line_text() only writes in text,
 * log_line_str()/_num()/_raw() only in JSON. Overlong lines are cut. */
#define LOG_LINE_MAX 1024
struct log_line {
	char p[LOG_LINE_MAX];
	size_t n;
	enum log_level l;
	bool json;
};
void log_line_begin(struct log_line *ln, enum log_prog p, enum log_level l, const char *qid,
                    const char *event);
void log_line_text(struct log_line *ln, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ,"<key>":"<v>" with <v> escaped; <len> bytes of it (or up to its NUL
 * when <len> is (size_t)-1). */
void log_line_strn(struct log_line *ln, const char *key, const char *v, size_t len);
#define log_line_str(ln, key, v) log_line_strn((ln), (key), (v), (size_t)-1)
void log_line_num(struct log_line *ln, const char *key, unsigned long long v);
/* ,"<key>":<json>: <json> is a JSON value the caller made. */
void log_line_raw(struct log_line *ln, const char *key, const char *json);
/* Ends and emits the line (to the sink or stderr, as log_msg()). */
void log_line_end(struct log_line *ln);

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

/* The program of a file's lines: LOG_P_MASTER unless the file, after its
 * includes, says otherwise (#undef LOG_PROG, #define LOG_PROG LOG_P_SMTP):
 * the macros below expand it where they are used. */
#ifndef LOG_PROG
#define LOG_PROG LOG_P_MASTER
#endif

#define log_enabled(l) ((int)(l) <= atomic_load_explicit(&log_threshold, memory_order_relaxed))
#define LOGE(...)      log_msg(LOG_PROG, LOG_ERR, __VA_ARGS__)
#define LOGW(...)      log_msg(LOG_PROG, LOG_WARN, __VA_ARGS__)
#define LOGI(...)                                                                                  \
	do {                                                                                       \
		if (log_enabled(LOG_INFO))                                                         \
			log_msg(LOG_PROG, LOG_INFO, __VA_ARGS__);                                  \
	} while (0)
#define LOGD(...)                                                                                  \
	do {                                                                                       \
		if (log_enabled(LOG_DEBUG))                                                        \
			log_msg(LOG_PROG, LOG_DEBUG, __VA_ARGS__);                                 \
	} while (0)

#endif
