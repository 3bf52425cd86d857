/* log_bench: what the log lines of one accepted message cost the worker
 * that formats them (core/log, core/maillog), into a log sink as a
 * worker's lines go (the ring write that empties it is not counted: one
 * per round, shared by every line of the round).
 *
 *   build-rel/bench/log_bench [N]     (N messages, default 2,000,000)
 *
 * Prints ns per message, thread CPU time, the median of 5 rounds, for:
 *   before   the one line of before issue 17 ("queued: id=... size=...
 *            from=<...> nrcpt=... client=[...]", the old prefix)
 *   text     client=, message-id=, from= (queue active): three lines
 *   text-2   client=, from=: a message without a Message-ID
 *   json     the three in --log-format json
 *   off      the three at --log-level warn (left out) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/maillog.h"
#include "core/utc.h"

static struct log_sink sink;

static double cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The line of before: its prefix and one snprintf, as log_msg() was. */
static void before(const char *qid)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	int k, n;

	clock_gettime(CLOCK_REALTIME, &ts);
	utc_tm(ts.tv_sec, &tm);
	k = snprintf(line, sizeof(line),
	             "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringmx %s: ", tm.tm_year + 1900,
	             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	             ts.tv_nsec / 1000000, "info");
	n = snprintf(line + k, sizeof(line) - (size_t)k - 1,
	             "queued: id=%s size=%llu from=<%s> nrcpt=%u client=[%s]", qid, 1234ull,
	             "sender@example.org", 1u, "192.0.2.7");
	line[k + n] = '\n';
	if (sink.len + (size_t)(k + n + 1) <= sink.cap) {
		memcpy(sink.p + sink.len, line, (size_t)(k + n + 1));
		sink.len += (size_t)(k + n + 1);
	}
}

static void three(const char *qid)
{
	maillog_client(qid, "192.0.2.7");
	maillog_message_id(qid, SV("<20261207121801.1234@client.example.org>"));
	maillog_queued(qid, "sender@example.org", 1234, 1);
}

static void two(const char *qid)
{
	maillog_client(qid, "192.0.2.7");
	maillog_queued(qid, "sender@example.org", 1234, 1);
}

static double round_ns(void (*fn)(const char *), unsigned n)
{
	char qid[32];
	double t0 = cpu_ns();

	for (unsigned i = 0; i < n; i++) {
		snprintf(qid, sizeof(qid), "6B16A3F9%08X", i);
		fn(qid);
		if (sink.len > LOG_SINK_MAX / 2)
			sink.len = 0; /* the ring write of a round */
	}
	return (cpu_ns() - t0) / n;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void run(const char *name, void (*fn)(const char *), unsigned n)
{
	double r[5];

	for (int i = 0; i < 5; i++)
		r[i] = round_ns(fn, n);
	qsort(r, 5, sizeof(r[0]), cmp);
	printf("%-8s %8.1f ns/message (rounds %.1f-%.1f)\n", name, r[2], r[0], r[4]);
}

static void qid_only(const char *qid)
{
	(void)qid;
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 2000000;

	sink.cap = LOG_SINK_MAX;
	sink.p = malloc(sink.cap);
	if (!sink.p)
		return 1;
	log_setup("mx.example.org", LOG_FMT_TEXT);
	log_sink_set(&sink);
	run("qid", qid_only, n); /* the loop and the queue id alone */
	run("before", before, n);
	run("text", three, n);
	run("text-2", two, n);
	log_setup("mx.example.org", LOG_FMT_JSON);
	run("json", three, n);
	log_threshold = LOG_WARN;
	run("off", three, n);
	log_sink_set(NULL);
	free(sink.p);
	return 0;
}
