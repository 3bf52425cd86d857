/* rb_report_test: ringmx-bench's reports. The JSON is checked by Python's
 * json module (a parser we did not write), the table by the figures it
 * must show, the plots by the files they leave and, where gnuplot is
 * installed, by the charts it draws. */
#include "bench/rb.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct rb_result *r;
static struct rb_second series[3];
static char dir[] = "/tmp/rb_report_test.XXXXXX";

static void setup(void)
{
	r = calloc(1, sizeof(*r));
	cr_assert(r);
	cr_assert(mkdtemp(dir));
	r->label = "nightly";
	r->server = "127.0.0.1:2525";
	r->threads = 2;
	r->sessions = 10;
	r->rcpts = 1;
	r->messages_asked = 1000;
	r->size_desc = "1024";
	r->tls = "starttls";
	r->pipelining = true;
	r->elapsed_s = 2.5;
	r->send_s = 2.0;
	r->messages = 1000;
	r->attempted = 1003;
	r->failed = 3;
	r->bytes = 1024000;
	r->errors = 3;
	r->err[RB_ERR_TIMEOUT] = 1;
	r->err[RB_ERR_REPLY] = 2;
	strcpy(r->first[RB_ERR_TIMEOUT], "no reply to DATA after 30 s");
	strcpy(r->first[RB_ERR_REPLY], "451 4.3.0 Try again later\r\n");
	r->replies[220] = 10;
	r->replies[250] = 3000;
	r->replies[451] = 2;
	r->err_code[451] = 2;
	r->opened = 10;
	r->peak_open = 9;
	for (uint64_t k = 0; k < 1000; k++)
		rb_hist_record(&r->msg_lat, 500 + k * 7);
	for (uint64_t k = 0; k < 10; k++)
		rb_hist_record(&r->phase[RB_PH_CONNECT], 100 + k);
	for (uint64_t k = 0; k < 10; k++)
		rb_hist_record(&r->phase[RB_PH_EHLO], 40 + k);
	for (uint64_t k = 0; k < 1000; k++) {
		rb_hist_record(&r->phase[RB_PH_PIPE_MAIL], 50 + k % 10);
		rb_hist_record(&r->phase[RB_PH_EOD], 400 + k * 5);
	}
	for (int i = 0; i < 3; i++)
		series[i] = (struct rb_second){.t = i + 1.0,
		                               .messages = 300 + 100 * (uint64_t)i,
		                               .bytes = 1024 * (300 + 100 * (uint64_t)i),
		                               .sessions = 10 - i,
		                               .p50_ms = 4,
		                               .p99_ms = 7.5};
	series[2].t = 2.5; /* the last slot is half a second */
	r->series = series;
	r->nseries = 3;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void teardown(void)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(r);
}

TestSuite(rb_report, .init = setup, .fini = teardown);

/* Reads a whole file (NUL-terminated); the caller frees it. NULL if absent. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *p;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	p = malloc((size_t)n + 1);
	cr_assert(p);
	cr_assert_eq(fread(p, 1, (size_t)n, f), (size_t)n);
	p[n] = '\0';
	fclose(f);
	return p;
}

static const char *in_dir(const char *name)
{
	static char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

/* Runs <script> with Python on the JSON file <json>: the script asserts
 * and prints "ok" as its last act. */
static void py_check(const char *json, const char *script)
{
	char cmd[PATH_MAX * 2], out[4096] = "";
	FILE *f, *p;

	/* Before in_dir(), whose buffer <json> may be. */
	snprintf(cmd, sizeof(cmd), "python3 %s/check.py %s 2>&1", dir, json);
	f = fopen(in_dir("check.py"), "w");
	cr_assert(f);
	fprintf(f,
	        "import json, sys\nd = json.load(open(sys.argv[1], encoding='utf-8'))\n%s\n"
	        "print('ok')\n",
	        script);
	fclose(f);
	p = popen(cmd, "r");
	cr_assert(p);
	fread(out, 1, sizeof(out) - 1, p);
	cr_assert_eq(pclose(p), 0, "python: %s", out);
	cr_assert_str_eq(out, "ok\n");
}

static bool have_gnuplot(void)
{
	return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

Test(rb_report, json_parses_with_documented_keys)
{
	char *text;

	cr_assert_eq(rb_report_json(in_dir("r.json"), r), 0);
	text = slurp(in_dir("r.json"));
	cr_assert(text);
	cr_assert(strstr(text, "\"messages\": 1000,"), "%s", text);
	free(text);
	py_check(in_dir("r.json"),
	         "assert d['messages'] == 1000 and d['attempted'] == 1003, d\n"
	         "assert d['failed'] == 3 and d['errors'] == 3\n"
	         "assert d['elapsed_s'] == 2.5\n"
	         "assert d['messages_per_s'] == 500 and d['mb_per_s'] == 0.512\n"
	         "assert d['aborted'] is None\n"
	         "c = d['config']\n"
	         "assert c['label'] == 'nightly' and c['server'] == '127.0.0.1:2525'\n"
	         "assert c['threads'] == 2 and c['sessions'] == 10 and c['rcpts'] == 1\n"
	         "assert c['tls'] == 'starttls' and c['pipelining'] is True\n"
	         "m = d['latency_ms']['message']\n"
	         "assert set(m) >= {'p50', 'p90', 'p99', 'p99.9', 'max', 'mean'}, m\n"
	         "assert m['p50'] <= m['p90'] <= m['p99'] <= m['p99.9'] <= m['max'] == 7.493\n"
	         "assert abs(m['p50'] - 3.993) <= 3.993 / 64, m\n"
	         "assert abs(m['mean'] - 3.9965) <= 0.001, m\n"
	         "g = d['latency_ms']['connect_greeting']\n"
	         "assert g['max'] == 0.109 and g['p50'] == 0.104, g\n"
	         "assert d['replies'] == {'220': 10, '250': 3000, '451': 2}\n"
	         "assert d['errors_by_kind']['timeout'] == 1\n"
	         "assert d['errors_by_kind']['reply'] == 2\n"
	         "assert d['errors_by_kind']['connect'] == 0\n"
	         "assert d['errors_by_code'] == {'451': 2}\n"
	         "assert d['first_error']['reply'] == '451 4.3.0 Try again later\\r\\n'\n"
	         "s = d['series']\n"
	         "assert len(s) == 3 and s[0]['t'] == 1 and s[2]['t'] == 2.5\n"
	         "assert s[1] == {'t': 2, 'messages': 400, 'errors': 0, 'mb': 0.41, "
	         "'sessions': 9, 'p50_ms': 4, 'p99_ms': 7.5}, s[1]");
}

Test(rb_report, json_phases_only_those_that_happened_in_session_order)
{
	cr_assert_eq(rb_report_json(in_dir("p.json"), r), 0);
	py_check(in_dir("p.json"),
	         "p = d['latency_ms']['phases']\n"
	         "assert list(p) == ['connect', 'ehlo', 'pipelined_mail', 'end_of_data'], list(p)\n"
	         "assert p['connect'] == d['latency_ms']['connect_greeting']\n"
	         "e = p['end_of_data']\n"
	         "assert set(e) >= {'p50', 'p90', 'p99', 'max', 'count'}, e\n"
	         "assert e['count'] == 1000 and e['max'] == 5.395, e\n"
	         "assert e['p50'] <= e['p90'] <= e['p99'] <= e['max'], e\n"
	         "assert p['ehlo'] == {'p50': 0.044, 'p90': 0.048, 'p99': 0.049, "
	         "'p99.9': 0.049, 'max': 0.049, 'mean': 0.044, 'count': 10}, p['ehlo']\n"
	         "assert p['pipelined_mail']['max'] == 0.059");
}

Test(rb_report, table_shows_each_phase_with_its_count)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	rb_report_table(f, r);
	fclose(f);
	cr_assert(strstr(text, "latency by phase (ms)    count       p50       p90       p99       "
	                       "max\n"),
	          "%s", text);
	cr_assert(strstr(text, "\n  connect                   10     0.104     0.108     0.109     "
	                       "0.109\n"
	                       "  ehlo                      10     0.044     0.048     0.049     "
	                       "0.049\n"
	                       "  pipelined_mail          1000"),
	          "%s", text);
	cr_assert(strstr(text, "\n  end_of_data             1000 "), "%s", text);
	cr_assert(strstr(text, "(pipelined_*: each reply timed from"), "%s", text);
	cr_assert_null(strstr(text, "  rcpt "), "no line for a phase that never happened");
	free(text);
}

Test(rb_report, json_escapes_strings)
{
	r->label = "say \"hi\"\\now";
	r->server = "host\twith\ncontrols\x01";
	r->aborted = "stopped by \"SIGINT\"";
	/* A server reply is arbitrary bytes: valid UTF-8 passes, a stray byte
	   is replaced, and the field's full 160 bytes need no NUL. */
	strcpy(r->first[RB_ERR_PROTOCOL], "550 \"bad\" caf\xc3\xa9 \xff end");
	memset(r->first[RB_ERR_IO], 'x', sizeof(r->first[RB_ERR_IO]));
	r->err[RB_ERR_PROTOCOL] = r->err[RB_ERR_IO] = 1;
	cr_assert_eq(rb_report_json(in_dir("e.json"), r), 0);
	py_check(in_dir("e.json"),
	         "assert d['config']['label'] == 'say \"hi\"\\\\now', d['config']\n"
	         "assert d['config']['server'] == 'host\\twith\\ncontrols\\x01'\n"
	         "assert d['aborted'] == 'stopped by \"SIGINT\"'\n"
	         "assert d['first_error']['protocol'] == '550 \"bad\" caf\\u00e9 \\ufffd end'\n"
	         "assert d['first_error']['io'] == 'x' * 160");
}

Test(rb_report, json_of_an_empty_run_is_valid)
{
	struct rb_result *e = calloc(1, sizeof(*e));

	cr_assert(e);
	e->elapsed_s = NAN; /* no JSON form */
	cr_assert_eq(rb_report_json(in_dir("z.json"), e), 0);
	py_check(in_dir("z.json"),
	         "assert d['messages'] == 0 and d['messages_per_s'] == 0\n"
	         "assert d['elapsed_s'] is None\n"
	         "assert d['config']['label'] == 'ringmx-bench'\n"
	         "assert d['latency_ms']['message']['p99'] == 0\n"
	         "assert d['series'] == [] and d['replies'] == {} and d['first_error'] == {}\n"
	         "assert d['latency_ms']['phases'] == {}");
	free(e);
}

Test(rb_report, json_dash_goes_to_stdout)
{
	int saved = dup(STDOUT_FILENO), fd = open(in_dir("out.json"), O_WRONLY | O_CREAT, 0600);
	char *text;

	cr_assert_geq(fd, 0);
	fflush(stdout);
	dup2(fd, STDOUT_FILENO);
	close(fd);
	cr_assert_eq(rb_report_json("-", r), 0);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	text = slurp(in_dir("out.json"));
	cr_assert(text && strstr(text, "\"messages\": 1000,"));
	free(text);
	py_check(in_dir("out.json"), "assert d['messages'] == 1000");
}

Test(rb_report, json_reports_write_errors)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/missing/r.json", dir);
	cr_assert_eq(rb_report_json(path, r), -ENOENT);
	cr_assert_eq(access(in_dir("missing"), F_OK), -1, "nothing left behind");
}

Test(rb_report, table_shows_the_figures)
{
	static const char *const must[] = {
	    "run 'nightly' against 127.0.0.1:2525\n",
	    "2 threads, 10 sessions, 1 rcpt/message, size 1024, tls starttls, pipelining on\n",
	    "closed loop, connect rate unlimited, 1000 messages\n",
	    "ABORTED: server went away\n",
	    "messages    1000 ok, 1003 attempted, 3 failed\n",
	    "elapsed     2.500 s (sending 2.000 s)\n",
	    "throughput  500.0 messages/s, 0.512 MB/s\n",
	    "sessions    10 opened, 9 peak\n",
	    "p50       p90       p99     p99.9       max      mean\n",
	    "replies     220: 10  250: 3000  451: 2\n",
	    "errors      3\n",
	    "timeout            1  first: no reply to DATA after 30 s\n",
	    /* the reply's CRLF is not printed */
	    "reply              2  first: 451 4.3.0 Try again later\n",
	    "error codes 451: 2\n",
	    "  message                3.999     6.847     7.423     7.487     7.493",
	};
	char *text = NULL, want[64];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert(f);
	r->aborted = "server went away";
	rb_report_table(f, r);
	fclose(f);
	for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
		cr_assert(strstr(text, must[i]), "no \"%s\" in:\n%s", must[i], text);
	/* The exact maximum, and the greeting's p50 (exact below 128 us)
	   first in its row. */
	cr_assert(strstr(text, "7.493"), "%s", text);
	cr_assert(strstr(text, "connect->greeting      0.104     0.108"), "%s", text);
	snprintf(want, sizeof(want), "%.3f", rb_hist_percentile(&r->msg_lat, 99) / 1000.0);
	cr_assert(strstr(text, want), "no p99 %s in:\n%s", want, text);
	cr_assert_null(strstr(text, "\r"), "control bytes from the server stay out");
	free(text);
}

Test(rb_report, table_of_a_clean_run_says_none)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	r->errors = 0;
	memset(r->err, 0, sizeof(r->err));
	rb_report_table(f, r);
	fclose(f);
	cr_assert(strstr(text, "errors      none"), "%s", text);
	cr_assert_null(strstr(text, "ABORTED"));
	free(text);
}

/* Counts the data lines (not comments) of a file. */
static int data_lines(const char *text)
{
	bool line_start = true;
	int n = 0;

	for (const char *p = text; *p; p++) {
		if (line_start && *p != '#' && *p != '\n')
			n++;
		line_start = *p == '\n';
	}
	return n;
}

Test(rb_report, plot_writes_data_and_charts)
{
	char err[256] = "", *s, *l, *svg;
	int rc = rb_report_plot(dir, r, err, sizeof(err));

	s = slurp(in_dir("nightly.series.dat"));
	l = slurp(in_dir("nightly.latency.dat"));
	cr_assert(s && l);
	cr_assert_eq(data_lines(s), 3);
	/* 500 messages in the last half second slot: 1000 per second. */
	cr_assert(strstr(s, "\n1.000 300.000 4.000 7.500 10\n"), "%s", s);
	cr_assert(strstr(s, "\n2.500 1000.000 4.000 7.500 8\n"), "%s", s);
	cr_assert(strstr(l, "\n0.000000 1.000 0.503\n"), "starts at 0%% and the minimum:\n%s", l);
	cr_assert(strstr(l, "\n100.000000 1000.000 7.493\n"), "ends at the maximum:\n%s", l);
	free(s);
	free(l);
	cr_assert_eq(access(in_dir("plots.gp"), R_OK), 0);
	if (!have_gnuplot()) {
		cr_assert_eq(rc, -ENOENT, "%s", err);
		return;
	}
	cr_assert_eq(rc, 0, "%s", err);
	svg = slurp(in_dir("throughput.svg"));
	cr_assert(svg && strstr(svg, "<svg") && strstr(svg, "nightly"));
	free(svg);
	svg = slurp(in_dir("latency.svg"));
	cr_assert(svg && strstr(svg, "<svg") && strstr(svg, "99.9%"));
	free(svg);
}

Test(rb_report, plot_puts_every_label_on_one_chart)
{
	char err[256] = "", *gp;
	int rc;

	r->label = "run-b";
	rc = rb_report_plot(dir, r, err, sizeof(err));
	cr_assert(rc == 0 || rc == -ENOENT, "%s", err);
	r->label = "run a/\"quoted\""; /* not a file name as it stands */
	rc = rb_report_plot(dir, r, err, sizeof(err));
	cr_assert(rc == 0 || rc == -ENOENT, "%s", err);
	cr_assert_eq(access(in_dir("run_a__quoted_.series.dat"), R_OK), 0);
	gp = slurp(in_dir("plots.gp"));
	cr_assert(gp);
	/* Both runs, in name order, on both charts. */
	cr_assert(strstr(gp, "'run-b.series.dat'"), "%s", gp);
	cr_assert(strstr(gp, "'run-b.latency.dat'"), "%s", gp);
	cr_assert(strstr(gp, "title 'run_a__quoted_'"), "%s", gp);
	cr_assert_lt(strstr(gp, "'run-b.series.dat'"), strstr(gp, "'run_a__quoted_.series.dat'"));
	cr_assert_lt(strstr(gp, "'run-b.latency.dat'"), strstr(gp, "'run_a__quoted_.latency.dat'"));
	free(gp);
	if (have_gnuplot()) {
		gp = slurp(in_dir("throughput.svg"));
		cr_assert(gp && strstr(gp, "run-b") && strstr(gp, "run_a__quoted_"));
		free(gp);
	}
}

Test(rb_report, plot_without_gnuplot_keeps_the_data)
{
	char err[256] = "";

	/* Each Criterion test runs in its own process: the PATH change stays here. */
	setenv("PATH", dir, 1);
	cr_assert_eq(rb_report_plot(dir, r, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "gnuplot"), "%s", err);
	cr_assert_eq(access(in_dir("nightly.series.dat"), R_OK), 0);
	cr_assert_eq(access(in_dir("nightly.latency.dat"), R_OK), 0);
	cr_assert_eq(access(in_dir("plots.gp"), R_OK), 0);
}

Test(rb_report, plot_makes_missing_directories)
{
	char sub[PATH_MAX], err[256] = "";
	struct stat st;
	int rc;

	snprintf(sub, sizeof(sub), "%s/a/b", dir);
	rc = rb_report_plot(sub, r, err, sizeof(err));
	cr_assert(rc == 0 || rc == -ENOENT, "%s", err);
	cr_assert_eq(stat(sub, &st), 0);
	cr_assert(S_ISDIR(st.st_mode));
	snprintf(sub, sizeof(sub), "%s/a/b/nightly.latency.dat", dir);
	cr_assert_eq(access(sub, R_OK), 0);
	/* A file where the directory should be is an error with a message. */
	snprintf(sub, sizeof(sub), "%s/a/b/nightly.latency.dat/x", dir);
	cr_assert_lt(rb_report_plot(sub, r, err, sizeof(err)), 0);
	cr_assert_neq(err[0], '\0');
}

/* A sweep of two session counts against two targets; the second target's
 * larger run was never made (interrupted). */
static struct rb_target sw_tg[2] = {
    {.label = "ringmx", .server = "127.0.0.1:2525"},
    {.label = "smtp-sink", .server = "127.0.0.1:2600"},
};
static const int sw_n[2] = {1, 10};

static struct rb_result *sw_cell_new(int sessions, uint64_t msgs, uint64_t eod_us)
{
	struct rb_result *c = calloc(1, sizeof(*c));

	cr_assert(c);
	c->sessions = c->threads = sessions;
	c->size_desc = "1024";
	c->tls = "none";
	c->pipelining = true;
	c->rcpts = 1;
	c->duration_asked = 5;
	c->messages = c->attempted = msgs;
	c->send_s = 1;
	c->elapsed_s = 1.25;
	for (uint64_t k = 0; k < msgs; k++)
		rb_hist_record(&c->phase[RB_PH_EOD], eod_us + k % 4);
	rb_hist_record(&c->phase[RB_PH_CONNECT], 300);
	return c;
}

Test(rb_report, sweep_table_and_json_side_by_side)
{
	struct rb_result *cells[4] = {sw_cell_new(1, 2000, 500), sw_cell_new(1, 10000, 40),
	                              sw_cell_new(10, 4000, 900), NULL};
	struct rb_sweep w = {.sessions = sw_n,
	                     .nsessions = 2,
	                     .targets = sw_tg,
	                     .ntargets = 2,
	                     .cells = cells,
	                     .phase = RB_PH_EOD};
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cells[2]->errors = 2;
	cells[2]->err[RB_ERR_TIMEOUT] = 2;
	strcpy(cells[2]->first[RB_ERR_TIMEOUT], "no answer to end of data within 30 s");
	rb_sweep_table(f, &w);
	fclose(f);
	cr_assert(strstr(text, "size 1024, 1 rcpt/message, tls none, pipelining on, 5 s per run\n"),
	          "%s", text);
	cr_assert(strstr(text, "p50, p99: end_of_data latency (ms)\n"), "%s", text);
	cr_assert(strstr(text,
	                 "\n          ringmx                        smtp-sink\n"
	                 "sessions       msg/s      p50      p99       msg/s      p50      p99\n"
	                 "       1        2000    0.503    0.503       10000    0.041    0.043\n"
	                 "      10       4000*    0.903    0.903           -        -        -\n"
	                 "* ringmx, 10 sessions: 2 errors, 0 failed; first timeout: no answer "
	                 "to end of data within 30 s\n"),
	          "%s", text);
	cr_assert(strstr(text, "\np50 by phase (ms), 1 session\n"
	                       "  phase               ringmx  smtp-sink\n"
	                       "  connect              0.300      0.300\n"
	                       "  end_of_data          0.503      0.041\n"),
	          "%s", text);
	cr_assert(strstr(text, "  end_of_data          0.903          -\n"), "%s", text);
	free(text);

	cr_assert_eq(rb_sweep_json(in_dir("s.json"), &w), 0);
	py_check(in_dir("s.json"),
	         "assert d['sweep']['sessions'] == [1, 10], d['sweep']\n"
	         "assert d['sweep']['targets'][1] == {'label': 'smtp-sink', 'server': "
	         "'127.0.0.1:2600'}\n"
	         "assert d['sweep']['latency_phase'] == 'end_of_data'\n"
	         "assert d['config']['size'] == '1024' and d['config']['pipelining'] is True\n"
	         "rows = d['rows']\n"
	         "assert [(r['target'], r['sessions']) for r in rows] == "
	         "[('ringmx', 1), ('smtp-sink', 1), ('ringmx', 10)], rows\n"
	         "assert rows[1]['messages_per_s'] == 10000 and rows[1]['server'] == "
	         "'127.0.0.1:2600'\n"
	         "e = rows[0]['latency_ms']['phases']['end_of_data']\n"
	         "assert e['count'] == 2000 and e['p50'] == 0.503, e\n"
	         "assert rows[2]['errors_by_kind']['timeout'] == 2\n"
	         "assert rows[2]['first_error']['timeout'].startswith('no answer')\n"
	         "assert rows[2]['aborted'] is None");
	for (int i = 0; i < 4; i++)
		free(cells[i]);
}
