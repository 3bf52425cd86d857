/* rb_report: what ringmx-bench prints and writes once a run is over (rb.h):
 * the summary table for a terminal, the JSON document for scripts, and the
 * gnuplot data and charts. The main thread calls these once the sending
 * threads have stopped, so the histograms' relaxed loads race with nothing.
 *
 * Every file goes through a temporary name and rename(): several runs may
 * share a plot directory, and a reader (the next run's gnuplot, a script
 * polling the JSON) must never see half a file. */
#include "bench/rb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LABEL_MAX   200 /* leaves room for ".latency.dat" and the temp suffix in NAME_MAX */
#define FIRST_LEN   sizeof(((struct rb_result *)0)->first[0])
#define NCODES      (sizeof(((struct rb_result *)0)->replies) / sizeof(uint64_t))
#define PERCENTILES 4

static const double pcts[PERCENTILES] = {50, 90, 99, 99.9};
static const char *const pct_names[PERCENTILES] = {"p50", "p90", "p99", "p99.9"};

/* Writes the body of a file to <f>; errors are picked up by ferror(). */
typedef void rb_writer_fn(FILE *f, const void *arg);

static const char *str_or(const char *s, const char *dflt)
{
	return s && *s ? s : dflt;
}

static double us_ms(uint64_t us)
{
	return (double)us / 1000.0;
}

/* ---- table --------------------------------------------------------------- */

/* The histogram knows a value to 1.6 %: three significant digits say all
 * there is, and whole microseconds (three decimals) below 10 ms. */
static void fmt_ms(char *b, size_t n, double ms)
{
	int prec = ms < 10 ? 3 : ms < 100 ? 2 : ms < 1000 ? 1 : 0;

	snprintf(b, n, "%.*f", prec, ms);
}

/* The first-error texts come from the server: keep control bytes out of the
 * terminal, and drop the line end the reply brought along. */
static void put_text(FILE *f, const char *s, size_t max)
{
	size_t len = strnlen(s, max);

	while (len && (s[len - 1] == '\r' || s[len - 1] == '\n' || s[len - 1] == ' '))
		len--;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		putc(c < 0x20 || c == 0x7f ? '?' : c, f);
	}
}

static void table_latency_row(FILE *f, const char *name, const struct rb_hist *h)
{
	char b[32];

	fprintf(f, "  %-18s", name);
	if (!atomic_load_explicit(&h->count, memory_order_relaxed)) {
		fprintf(f, "%10s\n", "-");
		return;
	}
	for (int i = 0; i < PERCENTILES; i++) {
		fmt_ms(b, sizeof(b), us_ms(rb_hist_percentile(h, pcts[i])));
		fprintf(f, "%10s", b);
	}
	fmt_ms(b, sizeof(b), us_ms(atomic_load_explicit(&h->max_us, memory_order_relaxed)));
	fprintf(f, "%10s", b);
	fmt_ms(b, sizeof(b), rb_hist_mean(h) / 1000.0);
	fprintf(f, "%10s\n", b);
}

/* The phases that happened, one line each, in the order a session goes
 * through them. */
static void table_phases(FILE *f, const struct rb_result *r)
{
	static const char *const hdr[] = {"count", "p50", "p90", "p99", "max"};
	char b[32];

	fprintf(f, "\nlatency by phase (ms)");
	for (size_t i = 0; i < sizeof(hdr) / sizeof(hdr[0]); i++)
		fprintf(f, "%*s", i ? 10 : 9, hdr[i]);
	fputc('\n', f);
	for (int p = 0; p < RB_PH__N; p++) {
		const struct rb_hist *h = &r->phase[p];
		uint64_t n = atomic_load_explicit(&h->count, memory_order_relaxed);

		if (!n)
			continue;
		fprintf(f, "  %-18s%10" PRIu64, rb_phase_names[p], n);
		for (int i = 0; i < 3; i++) {
			fmt_ms(b, sizeof(b), us_ms(rb_hist_percentile(h, pcts[i])));
			fprintf(f, "%10s", b);
		}
		fmt_ms(b, sizeof(b), us_ms(atomic_load_explicit(&h->max_us, memory_order_relaxed)));
		fprintf(f, "%10s\n", b);
	}
	if (atomic_load_explicit(&r->phase[RB_PH_PIPE_MAIL].count, memory_order_relaxed))
		fprintf(
		    f,
		    "  (pipelined_*: each reply timed from the one write of MAIL, RCPT, DATA)\n");
}

/* Prints the non-zero entries of a by-code array, several to a line. */
static void table_codes(FILE *f, const char *title, const uint64_t *by_code)
{
	int on_line = 0;

	fprintf(f, "%-12s", title);
	for (unsigned c = 0; c < NCODES; c++) {
		if (!by_code[c])
			continue;
		if (on_line == 6) {
			fprintf(f, "\n%-12s", "");
			on_line = 0;
		}
		fprintf(f, "%s%03u: %" PRIu64, on_line ? "  " : "", c, by_code[c]);
		on_line++;
	}
	fprintf(f, "%s\n", on_line ? "" : "none");
}

void rb_report_table(FILE *f, const struct rb_result *r)
{
	fprintf(f, "ringmx-bench run '%s' against %s\n", str_or(r->label, "ringmx-bench"),
	        str_or(r->server, "?"));
	fprintf(f, "  %d threads, %d sessions, %d rcpt%s/message, size %s, tls %s, pipelining %s\n",
	        r->threads, r->sessions, r->rcpts, r->rcpts == 1 ? "" : "s",
	        str_or(r->size_desc, "?"), str_or(r->tls, "none"), r->pipelining ? "on" : "off");
	if (r->rate_asked > 0)
		fprintf(f, "  open loop at %g messages/s", r->rate_asked);
	else
		fprintf(f, "  closed loop");
	if (r->connect_rate > 0)
		fprintf(f, ", connect rate %g/s", r->connect_rate);
	else
		fprintf(f, ", connect rate unlimited");
	if (r->messages_asked > 0 && r->duration_asked > 0)
		fprintf(f, ", %ld messages or %g s\n", r->messages_asked, r->duration_asked);
	else if (r->messages_asked > 0)
		fprintf(f, ", %ld messages\n", r->messages_asked);
	else if (r->duration_asked > 0)
		fprintf(f, ", for %g s\n", r->duration_asked);
	else
		fprintf(f, ", until stopped\n");
	if (r->aborted)
		fprintf(f, "ABORTED: %s\n", r->aborted);

	fprintf(f, "\nmessages    %" PRIu64 " ok, %" PRIu64 " attempted, %" PRIu64 " failed\n",
	        r->messages, r->attempted, r->failed);
	fprintf(f, "elapsed     %.3f s (sending %.3f s)\n", r->elapsed_s, r->send_s);
	fprintf(f, "throughput  %.1f messages/s, %.3f MB/s\n", rb_result_rate(r),
	        rb_result_mbps(r));
	fprintf(f, "sessions    %" PRIu64 " opened, %" PRIu64 " peak\n", r->opened, r->peak_open);

	fprintf(f, "\nlatency (ms)        ");
	for (int i = 0; i < PERCENTILES; i++)
		fprintf(f, "%10s", pct_names[i]);
	fprintf(f, "%10s%10s\n", "max", "mean");
	table_latency_row(f, "connect->greeting", &r->phase[RB_PH_CONNECT]);
	table_latency_row(f, "message", &r->msg_lat);
	table_phases(f, r);

	fputc('\n', f);
	table_codes(f, "replies", r->replies);
	if (!r->errors) {
		fprintf(f, "errors      none\n");
		return;
	}
	fprintf(f, "errors      %" PRIu64 "\n", r->errors);
	for (int k = 0; k < RB_ERR__N; k++) {
		if (!r->err[k])
			continue;
		fprintf(f, "  %-10s%10" PRIu64, rb_err_names[k], r->err[k]);
		if (r->first[k][0]) {
			fprintf(f, "  first: ");
			put_text(f, r->first[k], FIRST_LEN);
		}
		fputc('\n', f);
	}
	table_codes(f, "error codes", r->err_code);
}

/* ---- files --------------------------------------------------------------- */

static int write_file(const char *path, rb_writer_fn *fn, const void *arg)
{
	char tmp[PATH_MAX];
	struct stat st;
	/* Not a regular file (/dev/null, /dev/stdout, a pipe): written into as
	 * it is; a rename() would put a regular file in its place. */
	bool direct = stat(path, &st) == 0 && !S_ISREG(st.st_mode);
	FILE *f;
	int err = 0;

	if (!direct &&
	    snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(direct ? path : tmp, "we");
	if (!f)
		return -errno;
	errno = 0;
	fn(f, arg);
	if (ferror(f))
		err = errno ? -errno : -EIO;
	/* fclose() flushes the buffer: most write errors (ENOSPC) show here. */
	if (fclose(f) != 0 && !err)
		err = -errno;
	if (direct)
		return err;
	if (!err && rename(tmp, path) != 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_num(FILE *f, double v)
{
	/* JSON has no NaN or infinity. */
	if (isfinite(v))
		fprintf(f, "%.3f", v);
	else
		fputs("null", f);
}

/* Length of the well-formed UTF-8 sequence at <s> (at most <n> bytes), or
 * 0 when it is not one: overlong forms, surrogates and values past
 * U+10FFFF are refused, as RFC 3629 asks. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* A JSON string from at most <max> bytes of <s>. The error texts are
 * whatever the server sent, so bytes that are not UTF-8 become U+FFFD
 * rather than make the document invalid. */
static void json_str(FILE *f, const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	/* strlen() for "no bound": GCC -O3 clones this for max = SIZE_MAX and
	   then refuses a strnlen() bound past PTRDIFF_MAX */
	size_t n = max == SIZE_MAX ? strlen((const char *)p) : strnlen((const char *)p, max);

	putc('"', f);
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		size_t len;

		if (c == '"' || c == '\\') {
			fprintf(f, "\\%c", c);
		} else if (c == '\n') {
			fputs("\\n", f);
		} else if (c == '\r') {
			fputs("\\r", f);
		} else if (c == '\t') {
			fputs("\\t", f);
		} else if (c < 0x20) {
			fprintf(f, "\\u%04x", c);
		} else if (c >= 0x80) {
			len = utf8_len(p + i, n - i);
			if (!len) {
				fputs("\\ufffd", f);
				i++;
				continue;
			}
			fwrite(p + i, 1, len, f);
			i += len;
			continue;
		} else {
			putc(c, f);
		}
		i++;
	}
	putc('"', f);
}

/* The end of a "config" object: what the workload was, from
 * "duration_asked_s"'s value on (a run's and a sweep's documents). */
static void json_workload(FILE *f, const struct rb_result *r)
{
	json_num(f, r->duration_asked);
	fputs(",\n    \"size\": ", f);
	json_str(f, r->size_desc, SIZE_MAX);
	fputs(",\n    \"tls\": ", f);
	json_str(f, str_or(r->tls, "none"), SIZE_MAX);
	fprintf(f, ",\n    \"pipelining\": %s,\n    \"rate_asked\": ",
	        r->pipelining ? "true" : "false");
	json_num(f, r->rate_asked);
	fputs(",\n    \"connect_rate\": ", f);
	json_num(f, r->connect_rate);
	fputs("\n  },\n", f);
}

static void json_latency(FILE *f, const char *ind, const char *name, const struct rb_hist *h,
                         bool last)
{
	fprintf(f, "%s\"%s\": {", ind, name);
	for (int i = 0; i < PERCENTILES; i++) {
		fprintf(f, "\"%s\": ", pct_names[i]);
		json_num(f, us_ms(rb_hist_percentile(h, pcts[i])));
		fputs(", ", f);
	}
	fputs("\"max\": ", f);
	json_num(f, us_ms(atomic_load_explicit(&h->max_us, memory_order_relaxed)));
	fputs(", \"mean\": ", f);
	json_num(f, rb_hist_mean(h) / 1000.0);
	fprintf(f, ", \"count\": %" PRIu64 "}%s\n",
	        atomic_load_explicit(&h->count, memory_order_relaxed), last ? "" : ",");
}

/* "latency_ms": {...}, with a comma after it; <ind> is the indent of the
 * key. The phases' keys are in the order a session goes through them,
 * only those with a count. */
static void json_latencies(FILE *f, const char *ind, const struct rb_result *r)
{
	char in2[32], in3[32];
	int last = -1;

	snprintf(in2, sizeof(in2), "%s  ", ind);
	snprintf(in3, sizeof(in3), "%s    ", ind);
	fprintf(f, "%s\"latency_ms\": {\n", ind);
	json_latency(f, in2, "message", &r->msg_lat, false);
	json_latency(f, in2, "connect_greeting", &r->phase[RB_PH_CONNECT], false);
	for (int p = 0; p < RB_PH__N; p++)
		if (atomic_load_explicit(&r->phase[p].count, memory_order_relaxed))
			last = p;
	fprintf(f, "%s\"phases\": {%s", in2, last < 0 ? "" : "\n");
	for (int p = 0; p <= last; p++)
		if (atomic_load_explicit(&r->phase[p].count, memory_order_relaxed))
			json_latency(f, in3, rb_phase_names[p], &r->phase[p], p == last);
	fprintf(f, "%s}\n%s},\n", last < 0 ? "" : in2, ind);
}

static void json_codes(FILE *f, const char *ind, const char *key, const uint64_t *by_code)
{
	const char *sep = "";

	fprintf(f, "%s\"%s\": {", ind, key);
	for (unsigned c = 0; c < NCODES; c++) {
		if (!by_code[c])
			continue;
		fprintf(f, "%s\"%u\": %" PRIu64, sep, c, by_code[c]);
		sep = ", ";
	}
	fputs("},\n", f);
}

/* "errors_by_kind" and "first_error", each with a comma after it. */
static void json_errors(FILE *f, const char *ind, const struct rb_result *r)
{
	const char *sep = "";

	fprintf(f, "%s\"errors_by_kind\": {", ind);
	for (int k = 0; k < RB_ERR__N; k++)
		fprintf(f, "%s\"%s\": %" PRIu64, k ? ", " : "", rb_err_names[k], r->err[k]);
	fprintf(f, "},\n%s\"first_error\": {", ind);
	for (int k = 0; k < RB_ERR__N; k++) {
		if (!r->first[k][0])
			continue;
		fprintf(f, "%s\"%s\": ", sep, rb_err_names[k]);
		json_str(f, r->first[k], FIRST_LEN);
		sep = ", ";
	}
	fputs("},\n", f);
}

static void json_write(FILE *f, const void *arg)
{
	const struct rb_result *r = arg;

	fprintf(f,
	        "{\n  \"messages\": %" PRIu64 ",\n  \"attempted\": %" PRIu64
	        ",\n  \"failed\": %" PRIu64 ",\n  \"errors\": %" PRIu64 ",\n  \"bytes\": %" PRIu64
	        ",\n",
	        r->messages, r->attempted, r->failed, r->errors, r->bytes);
	fputs("  \"elapsed_s\": ", f);
	json_num(f, r->elapsed_s);
	fputs(",\n  \"send_s\": ", f);
	json_num(f, r->send_s);
	fputs(",\n  \"messages_per_s\": ", f);
	json_num(f, rb_result_rate(r));
	fputs(",\n  \"mb_per_s\": ", f);
	json_num(f, rb_result_mbps(r));
	fprintf(f, ",\n  \"sessions_opened\": %" PRIu64 ",\n  \"sessions_peak\": %" PRIu64 ",\n",
	        r->opened, r->peak_open);
	fputs("  \"aborted\": ", f);
	if (r->aborted)
		json_str(f, r->aborted, SIZE_MAX);
	else
		fputs("null", f);

	fputs(",\n  \"config\": {\n    \"label\": ", f);
	json_str(f, str_or(r->label, "ringmx-bench"), SIZE_MAX);
	fputs(",\n    \"server\": ", f);
	json_str(f, r->server, SIZE_MAX);
	fprintf(f,
	        ",\n    \"threads\": %d,\n    \"sessions\": %d,\n    \"rcpts\": %d,\n"
	        "    \"messages_asked\": %ld,\n    \"duration_asked_s\": ",
	        r->threads, r->sessions, r->rcpts, r->messages_asked);
	json_workload(f, r);

	json_latencies(f, "  ", r);

	json_codes(f, "  ", "replies", r->replies);
	json_errors(f, "  ", r);
	json_codes(f, "  ", "errors_by_code", r->err_code);

	fputs("  \"series\": [", f);
	for (size_t i = 0; i < r->nseries; i++) {
		const struct rb_second *s = &r->series[i];

		fputs(i ? ",\n    {\"t\": " : "\n    {\"t\": ", f);
		json_num(f, s->t);
		fprintf(f, ", \"messages\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"mb\": ",
		        s->messages, s->errors);
		json_num(f, (double)s->bytes / 1e6);
		fprintf(f, ", \"sessions\": %" PRId64 ", \"p50_ms\": ", s->sessions);
		json_num(f, s->p50_ms);
		fputs(", \"p99_ms\": ", f);
		json_num(f, s->p99_ms);
		putc('}', f);
	}
	fputs(r->nseries ? "\n  ]\n}\n" : "]\n}\n", f);
}

int rb_report_json(const char *path, const struct rb_result *r)
{
	if (strcmp(path, "-") != 0)
		return write_file(path, json_write, r);
	errno = 0;
	json_write(stdout, r);
	if (fflush(stdout) != 0 || ferror(stdout))
		return errno ? -errno : -EIO;
	return 0;
}

/* ---- sweeps -------------------------------------------------------------- */

#define SW_GROUP 30 /* columns of one target in the sweep table */

static const struct rb_result *sw_cell(const struct rb_sweep *w, size_t i, size_t j)
{
	return w->cells[i * w->ntargets + j];
}

/* The first cell that ran: what was asked is the same in all of them. */
static const struct rb_result *sw_first(const struct rb_sweep *w)
{
	for (size_t k = 0; k < w->nsessions * w->ntargets; k++)
		if (w->cells[k])
			return w->cells[k];
	return NULL;
}

static bool cell_bad(const struct rb_result *c)
{
	return c->aborted || c->errors || c->failed;
}

static void sw_hist_ms(FILE *f, int width, const struct rb_hist *h, double p)
{
	char b[32];

	if (!atomic_load_explicit(&h->count, memory_order_relaxed)) {
		fprintf(f, "%*s", width, "-");
		return;
	}
	fmt_ms(b, sizeof(b), us_ms(rb_hist_percentile(h, p)));
	fprintf(f, "%*s", width, b);
}

/* Per session count: the p50 of each phase that happened, one column per
 * target (as wide as its label). */
static void sw_phase_block(FILE *f, const struct rb_sweep *w, size_t i)
{
	bool any[RB_PH__N] = {false}, some = false;

	for (size_t j = 0; j < w->ntargets; j++) {
		const struct rb_result *c = sw_cell(w, i, j);

		for (int p = 0; c && p < RB_PH__N; p++)
			if (atomic_load_explicit(&c->phase[p].count, memory_order_relaxed))
				any[p] = some = true;
	}
	if (!some)
		return;
	fprintf(f, "\np50 by phase (ms), %d session%s\n  %-16s", w->sessions[i],
	        w->sessions[i] == 1 ? "" : "s", "phase");
	for (size_t j = 0; j < w->ntargets; j++) {
		int wd = (int)strlen(w->targets[j].label) + 2;

		fprintf(f, "%*s", wd < 10 ? 10 : wd, w->targets[j].label);
	}
	fputc('\n', f);
	for (int p = 0; p < RB_PH__N; p++) {
		if (!any[p])
			continue;
		fprintf(f, "  %-16s", rb_phase_names[p]);
		for (size_t j = 0; j < w->ntargets; j++) {
			const struct rb_result *c = sw_cell(w, i, j);
			int wd = (int)strlen(w->targets[j].label) + 2;

			wd = wd < 10 ? 10 : wd;
			if (c)
				sw_hist_ms(f, wd, &c->phase[p], 50);
			else
				fprintf(f, "%*s", wd, "-");
		}
		fputc('\n', f);
	}
}

void rb_sweep_table(FILE *f, const struct rb_sweep *w)
{
	const struct rb_result *c0 = sw_first(w);
	const char *ph = rb_phase_names[w->phase];
	bool notes = false;

	fprintf(f, "ringmx-bench sweep");
	if (c0) {
		fprintf(f, ": size %s, %d rcpt%s/message, tls %s, pipelining %s, ",
		        str_or(c0->size_desc, "?"), c0->rcpts, c0->rcpts == 1 ? "" : "s",
		        str_or(c0->tls, "none"), c0->pipelining ? "on" : "off");
		if (c0->rate_asked > 0)
			fprintf(f, "open loop at %g messages/s, ", c0->rate_asked);
		if (c0->messages_asked > 0)
			fprintf(f, "%ld messages per run", c0->messages_asked);
		else
			fprintf(f, "%g s per run", c0->duration_asked);
	}
	fprintf(f, "\nmsg/s: 250s per second of sending; p50, p99: %s latency (ms)\n\n%-8s", ph,
	        "");
	for (size_t j = 0; j < w->ntargets; j++) /* over its own columns, cut to them */
		fprintf(f, "  %-*.*s", j + 1 < w->ntargets ? SW_GROUP - 2 : 0, SW_GROUP - 2,
		        w->targets[j].label);
	fprintf(f, "\n%-8s", "sessions");
	for (size_t j = 0; j < w->ntargets; j++)
		fprintf(f, "%12s%9s%9s", "msg/s", "p50", "p99");
	fputc('\n', f);
	for (size_t i = 0; i < w->nsessions; i++) {
		fprintf(f, "%8d", w->sessions[i]);
		for (size_t j = 0; j < w->ntargets; j++) {
			const struct rb_result *c = sw_cell(w, i, j);
			char b[32];

			if (!c) {
				fprintf(f, "%12s%9s%9s", "-", "-", "-");
				continue;
			}
			snprintf(b, sizeof(b), "%.0f%s", rb_result_rate(c), cell_bad(c) ? "*" : "");
			fprintf(f, "%12s", b);
			sw_hist_ms(f, 9, &c->phase[w->phase], 50);
			sw_hist_ms(f, 9, &c->phase[w->phase], 99);
			notes |= cell_bad(c);
		}
		fputc('\n', f);
	}
	for (size_t i = 0; notes && i < w->nsessions; i++) {
		for (size_t j = 0; j < w->ntargets; j++) {
			const struct rb_result *c = sw_cell(w, i, j);

			if (!c || !cell_bad(c))
				continue;
			fprintf(f, "* %s, %d sessions: %" PRIu64 " errors, %" PRIu64 " failed",
			        w->targets[j].label, w->sessions[i], c->errors, c->failed);
			for (int k = 0; k < RB_ERR__N; k++) {
				if (!c->err[k] || !c->first[k][0])
					continue;
				fprintf(f, "; first %s: ", rb_err_names[k]);
				put_text(f, c->first[k], FIRST_LEN);
				break;
			}
			if (c->aborted) {
				fputs("; aborted: ", f);
				put_text(f, c->aborted, 200);
			}
			fputc('\n', f);
		}
	}
	for (size_t i = 0; i < w->nsessions; i++)
		sw_phase_block(f, w, i);
}

static void sw_json_write(FILE *f, const void *arg)
{
	const struct rb_sweep *w = arg;
	const struct rb_result *c0 = sw_first(w);
	const char *sep = "";

	fputs("{\n  \"sweep\": {\n    \"sessions\": [", f);
	for (size_t i = 0; i < w->nsessions; i++)
		fprintf(f, "%s%d", i ? ", " : "", w->sessions[i]);
	fputs("],\n    \"targets\": [", f);
	for (size_t j = 0; j < w->ntargets; j++) {
		fputs(j ? ", {\"label\": " : "{\"label\": ", f);
		json_str(f, w->targets[j].label, SIZE_MAX);
		fputs(", \"server\": ", f);
		json_str(f, w->targets[j].server, SIZE_MAX);
		putc('}', f);
	}
	fprintf(f, "],\n    \"latency_phase\": \"%s\"\n  },\n", rb_phase_names[w->phase]);
	if (c0) {
		fprintf(f,
		        "  \"config\": {\n    \"rcpts\": %d,\n    \"messages_asked\": %ld,\n"
		        "    \"duration_asked_s\": ",
		        c0->rcpts, c0->messages_asked);
		json_workload(f, c0);
	}
	fputs("  \"rows\": [", f);
	for (size_t i = 0; i < w->nsessions; i++) {
		for (size_t j = 0; j < w->ntargets; j++) {
			const struct rb_result *c = sw_cell(w, i, j);

			if (!c)
				continue;
			fprintf(f, "%s\n    {\n      \"target\": ", sep);
			json_str(f, w->targets[j].label, SIZE_MAX);
			fputs(",\n      \"server\": ", f);
			json_str(f, w->targets[j].server, SIZE_MAX);
			fprintf(f,
			        ",\n      \"sessions\": %d,\n      \"threads\": %d,\n"
			        "      \"messages\": %" PRIu64 ",\n      \"attempted\": %" PRIu64
			        ",\n      \"failed\": %" PRIu64 ",\n      \"errors\": %" PRIu64
			        ",\n      \"bytes\": %" PRIu64 ",\n      \"elapsed_s\": ",
			        c->sessions, c->threads, c->messages, c->attempted, c->failed,
			        c->errors, c->bytes);
			json_num(f, c->elapsed_s);
			fputs(",\n      \"send_s\": ", f);
			json_num(f, c->send_s);
			fputs(",\n      \"messages_per_s\": ", f);
			json_num(f, rb_result_rate(c));
			fputs(",\n      \"mb_per_s\": ", f);
			json_num(f, rb_result_mbps(c));
			fputs(",\n      \"aborted\": ", f);
			if (c->aborted)
				json_str(f, c->aborted, SIZE_MAX);
			else
				fputs("null", f);
			fputs(",\n", f);
			json_latencies(f, "      ", c);
			json_codes(f, "      ", "replies", c->replies);
			json_errors(f, "      ", c);
			fputs("      \"sessions_opened\": ", f);
			fprintf(f, "%" PRIu64 "\n    }", c->opened);
			sep = ",";
		}
	}
	fputs(*sep ? "\n  ]\n}\n" : "]\n}\n", f);
}

int rb_sweep_json(const char *path, const struct rb_sweep *w)
{
	if (strcmp(path, "-") != 0)
		return write_file(path, sw_json_write, w);
	errno = 0;
	sw_json_write(stdout, w);
	if (fflush(stdout) != 0 || ferror(stdout))
		return errno ? -errno : -EIO;
	return 0;
}

/* ---- plots --------------------------------------------------------------- */

#define SERIES_SUFFIX  ".series.dat"
#define LATENCY_SUFFIX ".latency.dat"

struct names {
	char **v;
	size_t n, cap;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* The label becomes a file name and a gnuplot string: nothing in it may
 * need quoting in either. */
static void label_sanitize(char *out, const char *label)
{
	size_t i;

	label = str_or(label, "ringmx-bench");
	for (i = 0; label[i] && i < LABEL_MAX; i++)
		out[i] = label_char(label[i]) ? label[i] : '_';
	out[i] = '\0';
}

static int mkdir_p(const char *dir)
{
	char p[PATH_MAX];
	size_t len = strlen(dir);

	if (len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		p[i] = '\0';
		if (mkdir(p, 0777) != 0 && errno != EEXIST)
			return -errno;
		p[i] = dir[i];
	}
	return 0;
}

/* <dir>/<name><suffix> into <path> (PATH_MAX bytes). */
static int dir_path(char *path, const char *dir, const char *name, const char *suffix)
{
	if (snprintf(path, PATH_MAX, "%s/%s%s", dir, name, suffix) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

static void series_write(FILE *f, const void *arg)
{
	const struct rb_result *r = arg;
	double prev = 0;

	/* No label here: the file name has it, already made safe. */
	fprintf(f, "# ringmx-bench per-second series\n");
	fprintf(f, "# t messages_per_s p50_ms p99_ms sessions\n");
	for (size_t i = 0; i < r->nseries; i++) {
		const struct rb_second *s = &r->series[i];
		/* The last slot ends with the run and is usually shorter. Under
		   half a second it holds only the messages still in flight when the
		   run ended: as a rate that is a cliff, not the server's speed, so
		   the chart leaves it out (the JSON keeps it). */
		double dt = s->t - prev;

		if (i > 0 && i + 1 == r->nseries && dt < 0.5)
			break;

		fprintf(f, "%.3f %.3f %.3f %.3f %" PRId64 "\n", s->t,
		        dt > 0 ? (double)s->messages / dt : 0.0, s->p50_ms, s->p99_ms, s->sessions);
		prev = s->t;
	}
}

/* The percentile distribution as HdrHistogram prints it, for a chart whose
 * x axis is 1/(1-p) so that 90 %, 99 %, 99.9 % ... are equally spaced. One
 * point where each bucket starts: drawn "with steps", the line holds the
 * bucket's value from there to the next bucket. The last point sits at
 * p = 1 - 1/count, the last percentile the samples can tell apart from
 * 100 % (whose 1/(1-p) is infinite). */
static void latency_write(FILE *f, const void *arg)
{
	const struct rb_hist *h = arg;
	uint64_t total = 0, seen = 0, max = atomic_load_explicit(&h->max_us, memory_order_relaxed);

	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
		total += atomic_load_explicit(&h->n[i], memory_order_relaxed);
	fprintf(f, "# ringmx-bench message latency distribution, %" PRIu64 " messages\n", total);
	fprintf(f, "# percentile 1/(1-p) latency_ms\n");
	if (!total)
		return;
	for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
		uint64_t n = atomic_load_explicit(&h->n[i], memory_order_relaxed), v;
		double p;

		if (!n)
			continue;
		p = (double)seen / (double)total;
		v = rb_hist_high(i) < max ? rb_hist_high(i) : max;
		fprintf(f, "%.6f %.3f %.3f\n", 100 * p, 1 / (1 - p), us_ms(v));
		seen += n;
		if (seen == total) {
			fprintf(f, "%.6f %.3f %.3f\n", 100.0, (double)total, us_ms(v));
			break;
		}
	}
}

/* Whether a .dat file holds at least one point: gnuplot stops with an
 * error on a plot whose every file is empty. */
static bool has_data(const char *path)
{
	FILE *f = fopen(path, "re");
	bool line_start = true, data = false;
	int c;

	if (!f)
		return false;
	while ((c = getc(f)) != EOF) {
		if (line_start && c != '#' && c != '\n') {
			data = true;
			break;
		}
		line_start = c == '\n';
	}
	fclose(f);
	return data;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	ns->v = NULL;
	ns->n = ns->cap = 0;
}

/* Collects the labels of every <label><suffix> in <dir> that has data,
 * sorted so that a chart's lines (and their colours) do not depend on
 * readdir() order. Names that rb_report_plot() could not have written are
 * left out. */
static int scan(const char *dir, const char *suffix, struct names *ns)
{
	size_t slen = strlen(suffix);
	struct dirent *de;
	DIR *d = opendir(dir);
	int err = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name), i;
		char path[PATH_MAX];

		if (len <= slen || strcmp(de->d_name + len - slen, suffix) != 0)
			continue;
		for (i = 0; i < len - slen && label_char(de->d_name[i]); i++)
			;
		if (i < len - slen)
			continue;
		if (dir_path(path, dir, de->d_name, "") < 0 || !has_data(path))
			continue;
		if (ns->n == ns->cap) {
			size_t cap = ns->cap ? 2 * ns->cap : 8;
			char **v = realloc(ns->v, cap * sizeof(*v));

			if (!v) {
				err = -ENOMEM;
				break;
			}
			ns->v = v;
			ns->cap = cap;
		}
		ns->v[ns->n] = strndup(de->d_name, len - slen);
		if (!ns->v[ns->n]) {
			err = -ENOMEM;
			break;
		}
		ns->n++;
	}
	closedir(d);
	if (ns->n)
		qsort(ns->v, ns->n, sizeof(*ns->v), cmp_str);
	return err;
}

struct gp_args {
	const struct names *series, *latency;
};

static void gp_plot(FILE *f, const struct names *ns, const char *suffix, const char *using,
                    const char *style)
{
	fputs("plot ", f);
	for (size_t i = 0; i < ns->n; i++)
		fprintf(f, "%s'%s%s' using %s with %s lw 2 title '%s'", i ? ", \\\n     " : "",
		        ns->v[i], suffix, using, style, ns->v[i]);
	fputc('\n', f);
}

/* The script names its files relative to the plot directory and gnuplot
 * runs there, so the directory can be moved and the script rerun by hand. */
static void gp_write(FILE *f, const void *arg)
{
	const struct gp_args *a = arg;

	fputs("# Written by ringmx-bench from every *.series.dat and *.latency.dat in this\n"
	      "# directory; redraw with: gnuplot plots.gp (run in this directory).\n"
	      "set terminal svg size 960,540 dynamic noenhanced font 'sans,12'\n"
	      "set grid\n"
	      "set key below\n",
	      f);
	if (a->series->n) {
		fputs("\nset output 'throughput.svg'\n"
		      "set title 'SMTP throughput'\n"
		      "set xlabel 'time (s)'\n"
		      "set ylabel 'messages/s'\n"
		      "set xrange [0:*]\n"
		      "set yrange [0:*]\n",
		      f);
		gp_plot(f, a->series, SERIES_SUFFIX, "1:2", "lines");
	}
	if (a->latency->n) {
		/* A log axis cannot show 0 ms: 1/0 makes gnuplot skip the point. */
		fputs("\nset output 'latency.svg'\n"
		      "set title 'message latency by percentile'\n"
		      "set xlabel 'percentile'\n"
		      "set ylabel 'latency (ms)'\n"
		      "set logscale x 10\n"
		      "set logscale y 10\n"
		      "set xrange [1:*]\n"
		      "set yrange [*:*]\n"
		      "set format y '%g'\n"
		      "set xtics ('0%%' 1, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, "
		      "'99.999%%' 100000, '99.9999%%' 1000000)\n",
		      f);
		gp_plot(f, a->latency, LATENCY_SUFFIX, "2:($3 > 0 ? $3 : 1/0)", "steps");
	}
	fputs("set output\n", f);
}

static int run_gnuplot(const char *dir, char *err, size_t errlen)
{
	char *argv[] = {"gnuplot", "plots.gp", NULL};
	posix_spawn_file_actions_t fa;
	int rc, status;
	pid_t pid;

	/* posix_spawnp() rather than fork(): the bench is threaded, and the
	   spawn reports a missing gnuplot as its return value (ENOENT). The
	   directory exists by now, so ENOENT cannot come from the chdir. */
	rc = posix_spawn_file_actions_init(&fa);
	if (rc)
		goto fail;
	rc = posix_spawn_file_actions_addchdir_np(&fa, dir);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "gnuplot.log",
		                                      O_WRONLY | O_CREAT | O_TRUNC, 0666);
	if (!rc)
		rc = posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
	if (!rc)
		rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc == ENOENT) {
		set_err(err, errlen, "gnuplot not found: data and %s/plots.gp kept", dir);
		return -ENOENT;
	}
	if (rc)
		goto fail;
	while (waitpid(pid, &status, 0) == -1) {
		if (errno != EINTR) {
			rc = errno;
			goto fail;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	set_err(err, errlen, "gnuplot failed (%s %d), see %s/gnuplot.log",
	        WIFEXITED(status) ? "exit" : "signal",
	        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), dir);
	return -EIO;
fail:
	set_err(err, errlen, "gnuplot: %s", strerror(rc));
	return -rc;
}

int rb_report_plot(const char *dir, const struct rb_result *r, char *err, size_t errlen)
{
	struct names series = {0}, latency = {0};
	struct gp_args gp = {&series, &latency};
	char label[LABEL_MAX + 1], path[PATH_MAX];
	int rc;

	label_sanitize(label, r->label);
	rc = mkdir_p(dir);
	if (rc < 0) {
		set_err(err, errlen, "mkdir %s: %s", dir, strerror(-rc));
		return rc;
	}
	rc = dir_path(path, dir, label, SERIES_SUFFIX);
	if (rc == 0)
		rc = write_file(path, series_write, r);
	if (rc == 0)
		rc = dir_path(path, dir, label, LATENCY_SUFFIX);
	if (rc == 0)
		rc = write_file(path, latency_write, &r->msg_lat);
	if (rc < 0) {
		set_err(err, errlen, "%s/%s: %s", dir, label, strerror(-rc));
		return rc;
	}
	rc = scan(dir, SERIES_SUFFIX, &series);
	if (rc == 0)
		rc = scan(dir, LATENCY_SUFFIX, &latency);
	if (rc == 0)
		rc = dir_path(path, dir, "plots", ".gp");
	if (rc == 0)
		rc = write_file(path, gp_write, &gp);
	names_free(&series);
	names_free(&latency);
	if (rc < 0) {
		set_err(err, errlen, "%s: %s", dir, strerror(-rc));
		return rc;
	}
	return run_gnuplot(dir, err, errlen);
}
