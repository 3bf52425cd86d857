/* rb: shared types of ringmx-bench, the project's io_uring SMTP load
 * generator (bench/rb_main.c). It is a client only: nothing here includes
 * or links the server's SMTP code (core/smtp_*), so a bug in the server's
 * parser cannot hide behind the same bug in the client.
 *
 * Threads: the sending threads (one io_uring each) only ever do relaxed
 * atomic adds into their own struct rb_live; the main thread reads and
 * drains those once per tick and owns everything else (struct rb_result,
 * the series, the total histograms). */
#ifndef RINGMX_BENCH_RB_H
#define RINGMX_BENCH_RB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- latency histogram (rb_stats.c) -------------------------------------
 * Log-linear buckets in the manner of HdrHistogram: values in microseconds,
 * 2^RB_HIST_SUB_BITS buckets per power of two, so any recorded value is
 * known to within 1/2^RB_HIST_SUB_BITS (1.6 %). Values 0..2^RB_HIST_SUB_BITS-1
 * are exact; values above RB_HIST_MAX_US are recorded as RB_HIST_MAX_US.
 * Counters are atomic: one thread records while another drains. */
#define RB_HIST_SUB_BITS 6
#define RB_HIST_MAX_BITS 36 /* 2^36 us = 19 hours */
#define RB_HIST_MAX_US   ((UINT64_C(1) << RB_HIST_MAX_BITS) - 1)
#define RB_HIST_BUCKETS  ((RB_HIST_MAX_BITS - RB_HIST_SUB_BITS + 1) << RB_HIST_SUB_BITS)

struct rb_hist {
	_Atomic uint64_t n[RB_HIST_BUCKETS];
	_Atomic uint64_t count;
	_Atomic uint64_t sum_us; /* for the mean */
	_Atomic uint64_t max_us; /* exact maximum */
};

/* Bucket index of <us> (clamped to RB_HIST_MAX_US). */
unsigned rb_hist_index(uint64_t us);
/* Smallest and largest value that bucket <i> holds. */
uint64_t rb_hist_low(unsigned i);
uint64_t rb_hist_high(unsigned i);
/* Records one value. Lock-free, relaxed: safe against a concurrent drain
 * (a value racing a drain is counted in the next drain, never lost). */
void rb_hist_record(struct rb_hist *h, uint64_t us);
/* Moves every count of <from> into <into> (from is zeroed by atomic
 * exchange; <into> must not be recorded into concurrently). */
void rb_hist_drain(struct rb_hist *from, struct rb_hist *into);
/* Adds <from> to <into> without changing <from>. */
void rb_hist_merge(const struct rb_hist *from, struct rb_hist *into);
void rb_hist_reset(struct rb_hist *h);
/* The value at percentile <p> (0 < p <= 100): the highest value of the
 * bucket holding the ceil(p/100 * count)-th smallest value, never above the
 * exact maximum. 0 when the histogram is empty. */
uint64_t rb_hist_percentile(const struct rb_hist *h, double p);
double rb_hist_mean(const struct rb_hist *h);

/* ---- phases of a session (rb_stats.c names them) ------------------------
 * One histogram per phase: from the clock reading taken when the command
 * was queued for sending (the one that also sets its --timeout deadline)
 * to the reading taken when its complete reply was parsed. Both are the
 * client's view: the client's own loop and the kernel's loopback are in
 * them. Every reply is counted in its phase, whatever its code. */
enum rb_phase {
	RB_PH_CONNECT,   /* connect() submitted -> greeting (implicit TLS: the
	                    handshake included); JSON also "connect_greeting" */
	RB_PH_TLS,       /* TLS handshake: ClientHello queued -> handshake done
	                    (after the 220 to STARTTLS, or after the connect) */
	RB_PH_EHLO,      /* EHLO -> 250 (with STARTTLS: both EHLOs) */
	RB_PH_STARTTLS,  /* STARTTLS -> 220 */
	RB_PH_MAIL,      /* one command per round trip (no PIPELINING): */
	RB_PH_RCPT,      /* each RCPT -> its reply */
	RB_PH_DATA,      /* DATA -> 354 */
	RB_PH_PIPE_MAIL, /* PIPELINING: MAIL, RCPTs and DATA (or BDAT) leave in
	                    one write; each reply is measured from that write */
	RB_PH_PIPE_RCPT, /* group sent -> each RCPT's reply */
	RB_PH_PIPE_DATA, /* group sent -> 354 */
	RB_PH_EOD,       /* content and its final "." sent -> 250 */
	RB_PH_BDAT,      /* BDAT LAST chunk sent -> 250 (--no-pipelining) */
	RB_PH_PIPE_BDAT, /* group sent (with the chunk) -> the chunk's 250 */
	RB_PH_RSET,      /* RSET -> 250 (after a refused transaction) */
	RB_PH_QUIT,      /* QUIT -> 221 */
	RB_PH__N
};
/* JSON keys and table names: "connect", "tls", "ehlo", "starttls", "mail",
 * "rcpt", "data", "pipelined_mail", "pipelined_rcpt", "pipelined_data",
 * "end_of_data", "bdat", "pipelined_bdat", "rset", "quit". */
extern const char *const rb_phase_names[RB_PH__N];

/* ---- what went wrong ---------------------------------------------------- */
enum rb_err {
	RB_ERR_CONNECT,  /* connect() failed (refused, unreachable, ...) */
	RB_ERR_TIMEOUT,  /* a wait passed --timeout */
	RB_ERR_CLOSED,   /* the server closed the connection unasked */
	RB_ERR_PROTOCOL, /* the server broke the protocol (bad reply syntax,
	                    unsolicited data, wrong greeting) */
	RB_ERR_TLS,      /* handshake or record failure */
	RB_ERR_REPLY,    /* a reply other than the one expected: also counted
	                    by its code in rb_result.err_code */
	RB_ERR_IO,       /* send/recv failed with an errno */
	RB_ERR__N
};
extern const char *const rb_err_names[RB_ERR__N]; /* "connect", "timeout", ... */

/* ---- live counters, one per sending thread ------------------------------ */
struct rb_live {
	_Atomic uint64_t messages;  /* messages that got their 250 */
	_Atomic uint64_t attempted; /* messages whose MAIL FROM was sent */
	_Atomic uint64_t failed;    /* attempted and refused / lost */
	_Atomic uint64_t bytes;     /* message bytes (as sent, after DATA) of
	                               the messages counted in <messages> */
	_Atomic uint64_t errors;    /* sum of err[] */
	_Atomic uint64_t err[RB_ERR__N];
	_Atomic uint64_t replies[1000];  /* every reply received, by code */
	_Atomic uint64_t err_code[1000]; /* unexpected replies, by code */
	_Atomic uint64_t opened;         /* connections established */
	struct rb_hist msg_lat;          /* per message: due (open loop) or MAIL
	                                    sent (closed loop) -> 250 after DATA */
	struct rb_hist phase[RB_PH__N];  /* per command (enum rb_phase) */
	/* first example of each error kind, written once by the thread that
	   sets first_set[k] from 0 to 1, read by main after the run */
	_Atomic int first_set[RB_ERR__N];
	char first[RB_ERR__N][160];
};

/* ---- the run's result (owned by the main thread) ----------------------- */
struct rb_second {
	double t;          /* seconds since start at the end of this slot */
	uint64_t messages; /* 250s in this slot */
	uint64_t errors;
	uint64_t bytes;
	int64_t sessions;      /* open at the end of the slot */
	double p50_ms, p99_ms; /* message latency within the slot (0: none) */
};

struct rb_result {
	/* what was asked (echoed into the JSON and the table) */
	const char *label;  /* --label, default "ringmx-bench" */
	const char *server; /* HOST:PORT */
	int threads, sessions, rcpts;
	long messages_asked;   /* --messages, 0 = by duration */
	double duration_asked; /* --duration, 0 = by message count */
	const char *size_desc; /* "1024", "512-65536", "eml:DIR (12 files)" */
	const char *tls;       /* "none", "starttls", "implicit" */
	bool pipelining;
	double rate_asked;   /* --rate, 0 = closed loop */
	double connect_rate; /* --connect-rate, 0 = unlimited */
	/* what happened */
	double elapsed_s; /* first connect -> last session closed */
	double send_s;    /* first connect -> last message finished: the
	                     denominator of messages/s */
	uint64_t messages, attempted, failed, bytes, errors;
	uint64_t err[RB_ERR__N];
	char first[RB_ERR__N][160];
	uint64_t replies[1000], err_code[1000];
	uint64_t opened, peak_open;
	struct rb_hist msg_lat;         /* whole run */
	struct rb_hist phase[RB_PH__N]; /* whole run; [RB_PH_CONNECT] is the
	                                   connect->greeting line */
	struct rb_second *series;       /* one per second of the run */
	size_t nseries;
	const char *aborted; /* NULL, or why the run stopped early */
};

/* ---- reports (rb_report.c) ---------------------------------------------- */
/* The end-of-run summary table (human readable) to <f>. */
void rb_report_table(FILE *f, const struct rb_result *r);
/* Writes the JSON document to <path> ("-" = stdout). Top-level keys:
 * "messages" (= r->messages, the 250s), "attempted", "failed", "errors",
 * "elapsed_s", "messages_per_s", "mb_per_s", "config" {...}, "latency_ms"
 * {"message": {p50,p90,p99,p99.9,max,mean,count}, "connect_greeting": {...},
 * "phases": {"ehlo": {...}, ...: each phase with a count, rb_phase_names}},
 * "replies" {"250": n, ...}, "errors_by_kind" {...}, "errors_by_code"
 * {...}, "series" [{t, messages, errors, mb, sessions, p50_ms, p99_ms}].
 * Returns 0 or -errno. */
int rb_report_json(const char *path, const struct rb_result *r);
/* Writes <dir>/<label>.series.dat and <dir>/<label>.latency.dat, then
 * (re)draws <dir>/throughput.svg and <dir>/latency.svg with gnuplot over
 * every *.series.dat / *.latency.dat in <dir>, one line per label: runs
 * sent to the same directory end up on one chart. Returns 0; -ENOENT when
 * gnuplot is missing (the .dat and .gp files are kept); other -errno with
 * one line in <err>. */
int rb_report_plot(const char *dir, const struct rb_result *r, char *err, size_t errlen);

/* ---- sweeps (rb_sweep.c: options; rb_report.c: the table and JSON) ----
 * --sweep 1,10,100: the same workload once per session count, against the
 * --server and every --peer in turn within each count. */
#define RB_SWEEP_MAX 64 /* session counts in one sweep */
#define RB_PEER_MAX  16 /* --peer options */

/* Parses a comma-separated list of session counts from 1 to <max> ("1,10,
 * 100,500"), kept in the order given, into <out> (RB_SWEEP_MAX entries).
 * Returns how many, or -1 with a reason in <err>. */
int rb_sweep_parse(const char *s, int *out, int max, char *err, size_t errlen);

/* Splits "HOST:PORT" or "[V6ADDR]:PORT" (port 1..65535) into <host> (the
 * brackets dropped) and <port>. Returns 0, or -1 with a reason in <err>. */
int rb_hostport_split(const char *s, char *host, size_t hostlen, char *port, size_t portlen,
                      char *err, size_t errlen);

struct rb_target {
	char label[64];   /* LABEL of "LABEL=HOST:PORT", else the HOST:PORT (cut) */
	char server[320]; /* HOST:PORT as given */
	char host[256];   /* without [] */
	char port[8];
};
/* Parses "[LABEL=]HOST:PORT" (--server, --peer): a label is printable
 * ASCII without spaces, up to 63 characters, before the first '='.
 * Returns 0, or -1 with a reason in <err>. */
int rb_target_parse(const char *s, struct rb_target *t, char *err, size_t errlen);

/* What a sweep ran: cells[i * ntargets + j] is sessions[i] against
 * targets[j] (NULL: not run, the sweep was interrupted). <phase> names the
 * latency columns of the table: RB_PH_EOD, or the BDAT phase in use. */
struct rb_sweep {
	const int *sessions;
	size_t nsessions;
	const struct rb_target *targets;
	size_t ntargets;
	struct rb_result *const *cells;
	enum rb_phase phase;
};
/* The sweep's table to <f>: one row per session count, for each target
 * messages/s and the p50 and p99 of <phase>, side by side; cells with
 * errors are marked and explained below; then, per session count, the
 * p50 of every phase by target. */
void rb_sweep_table(FILE *f, const struct rb_sweep *w);
/* The sweep as JSON to <path> ("-" = stdout): "sweep" {"sessions": [...],
 * "targets": [{label, server}], "latency_phase"}, "config" {...} (as a
 * run's, without label, server, threads and sessions) and "rows": one per
 * cell run, in the order run: {"target", "server", "sessions", "threads",
 * "messages", "attempted", "failed", "errors", "elapsed_s", "send_s",
 * "messages_per_s", "mb_per_s", "aborted", "latency_ms" (as a run's, with
 * "phases"), "replies", "errors_by_kind", "first_error"}. Returns 0 or
 * -errno. */
int rb_sweep_json(const char *path, const struct rb_sweep *w);

/* Messages per second and MB per second (10^6 bytes) of a result. */
double rb_result_rate(const struct rb_result *r);
double rb_result_mbps(const struct rb_result *r);

/* ---- SMTP replies (rb_reply.c) ------------------------------------------
 * The client's own reply parser (RFC 5321 4.2): one line at a time, so a
 * session keeps only a partial line between receives. Strict on purpose:
 * a load generator that forgives a broken server hides the breakage. */
#define RB_CAP_PIPELINING 0x01u /* RFC 2920 */
#define RB_CAP_STARTTLS   0x02u /* RFC 3207 */
#define RB_CAP_CHUNKING   0x04u /* RFC 3030 */
#define RB_CAP_8BITMIME   0x08u
#define RB_CAP_SIZE       0x10u
#define RB_REPLY_LINE_MAX 2048 /* RFC 5321 says 512; tolerate up to this */

struct rb_reply {
	int code;      /* of the reply being read / just completed */
	unsigned caps; /* EHLO keywords seen in this reply's lines 2.. */
	unsigned lines;
	char text[120]; /* first line after the code, cut, for error reports */
};

/* Feeds one line <p>,<n> WITHOUT its CRLF. Returns 1 when it completed a
 * reply (r->code, r->caps, r->text hold it; the next call starts a new
 * reply), 0 when the reply goes on, -1 when the line breaks the syntax
 * (r->text says how). */
int rb_reply_line(struct rb_reply *r, const char *p, size_t n);

/* Finds the end of the first line in <p>,<n>: returns its length without
 * the CRLF and sets *<used> to the length with it; returns -1 when no
 * complete line is there yet, -2 on a bare LF or bare CR (a server must end
 * lines with CRLF) or when <n> reaches RB_REPLY_LINE_MAX without an end. */
long rb_reply_find_line(const char *p, size_t n, size_t *used);

/* ---- message bodies (rb_msg.c) ------------------------------------------ */
enum rb_size_kind { RB_SIZE_FIXED, RB_SIZE_UNIFORM, RB_SIZE_EXP };
struct rb_size {
	enum rb_size_kind kind;
	uint64_t a, b; /* fixed: a; uniform: a..b; exp: mean a, capped at b */
};
/* Parses "1024", "64k", "1m", "512-64k" (uniform), "exp:16k" (exponential,
 * mean 16 KiB, capped at 16x the mean). k = 1024. Returns 0, or -1 with a
 * reason in <err>. */
int rb_size_parse(const char *s, struct rb_size *out, char *err, size_t errlen);
/* The largest size the distribution can draw. */
uint64_t rb_size_max(const struct rb_size *z);
/* Draws a size with the xorshift state *<rng> (never 0 state). */
uint64_t rb_size_draw(const struct rb_size *z, uint64_t *rng);
uint64_t rb_rand(uint64_t *rng);

/* The synthetic body text: lines of RB_FILL_LINE octets (CRLF included),
 * none starting with '.', up to <max> octets. */
#define RB_FILL_LINE 80
char *rb_fill_new(size_t max);
/* Splits a body of <len> octets into a prefix of the fill text (whole
 * lines) and a short last line written to <tail> (cap >= RB_FILL_LINE + 8)
 * followed by the end of data ".\r\n". Returns the tail's length; sets
 * *<prefix> to the octets to take from the fill. The DATA content is
 * exactly <len> octets (len 1 becomes 2: a line needs its CRLF). */
size_t rb_fill_split(size_t len, size_t *prefix, char *tail, size_t cap);

/* Real messages from a directory: every regular file named *.eml is read
 * (symbolic links followed; other entries skipped), its line
 * ends made CRLF, dot-stuffed, and ended with CRLF "." CRLF: data[i] is
 * ready to send after the 354. */
struct rb_corpus {
	char **data;
	size_t *len;
	size_t n;
	size_t bytes; /* all of them */
};
/* Loads <dir> (files larger than <max> octets are refused). Returns 0, or
 * -1 with one line in <err> (no files, unreadable). */
int rb_corpus_load(struct rb_corpus *c, const char *dir, size_t max, char *err, size_t errlen);
/* Transforms one message as rb_corpus_load() does. Returns a malloc'd
 * buffer and its length in *<out_len>, or NULL when out of memory. */
char *rb_corpus_encode(const char *p, size_t n, size_t *out_len);
/* Turns one message as rb_corpus_encode() made it back into the content
 * itself (the dot-stuffing and the final "." line removed), in place, for
 * BDAT, which sends content as is. Returns the new length. */
size_t rb_corpus_unstuff(char *p, size_t n);
void rb_corpus_free(struct rb_corpus *c);

#endif
