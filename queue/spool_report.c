/* spool_report: the `ringmx queue` tool's reports on top of the
 * selections of queue/spool_admin.c: the listing as JSON (one object per
 * message per line, Postfix's `postqueue -j` fields), `show` (envelope,
 * headers, state and the deferral history of each message) and `shape`
 * (Postfix's qshape table, core/qtool). Blocking reads: a command-line
 * tool, never a worker; safe while a gateway runs. queue/ includes core/
 * only. See spool.h and docs/spool.md. */
#include "queue/spool.h"
#include "queue/spool-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/qtool.h"

#define SHOW_HEADERS_MAX (64u * 1024) /* header bytes `show` reads at most */

struct reporter {
	const char *dir;
	enum spool_report_kind kind;
	FILE *out;
	time_t now;
	struct buf line;
	struct qtool_shape shape;
	unsigned long shown;
};

/* postqueue -j's queue names: the state of a pending message, as Postfix
 * names its queues ("hold" for held); a done one (--all) by its state. */
static const char *queue_name(const struct spool_msg *m, unsigned state)
{
	if (m->state == SPOOL_PENDING && state == SPOOL_SEL_HELD)
		return "hold";
	return spool_state_name(m->state, state);
}

/* Recipient <i> of a pending message in state <st>: its own state ("sent"
 * in this run, "failed" and to be bounced, else the message's) and its last
 * reply (its own, else the message's; NULL: none). */
static const char *rcpt_state(const struct defer_ent *de, unsigned i, const char *st,
                              const char **why)
{
	char c = defer_rcpt(de, i, why);

	if (c == 's') {
		*why = NULL;
		return "sent";
	}
	if (!*why && de)
		*why = de->reply;
	return c == 'f' ? "failed" : st;
}

static int json_one(struct reporter *rp, const struct spool_msg *m, unsigned state,
                    const struct defer_ent *de)
{
	struct buf *b = &rp->line;
	const char *r = m->rcpts, *st = spool_state_name(m->state, state);
	int err;

	buf_reset(b, 1 << 16);
	err = buf_printf(b, "{\"queue_name\":\"%s\",\"queue_id\":", queue_name(m, state));
	err = err ? err : qtool_json_str(b, m->qid);
	err = err ? err
	          : buf_printf(b,
	                       ",\"state\":\"%s\",\"arrival_time\":%lld,\"message_size\":%" PRIu64
	                       ",\"forced_expire\":false,\"sender\":",
	                       st, (long long)m->arrival, m->body_len);
	err = err ? err : qtool_json_str(b, m->from);
	if (!err && de)
		err = buf_printf(b, ",\"attempts\":%" PRIu32 ",\"next_attempt\":%lld", de->attempts,
		                 (long long)de->next);
	err = err ? err : buf_append_str(b, ",\"recipients\":[");
	for (unsigned i = 0; !err && i < m->nrcpt; i++, r += strlen(r) + 1) {
		err = buf_append_str(b, i ? ",{\"address\":" : "{\"address\":");
		const char *why = NULL, *rst = st;

		if (m->state == SPOOL_PENDING)
			rst = rcpt_state(de, i, st, &why);
		err = err ? err : qtool_json_str(b, r);
		err = err ? err : buf_printf(b, ",\"state\":\"%s\"", rst);
		if (!err && why) {
			err = buf_append_str(b, ",\"delay_reason\":");
			err = err ? err : qtool_json_str(b, why);
		}
		err = err ? err : buf_append_str(b, "}");
	}
	err = err ? err : buf_append_str(b, "]}\n");
	if (!err && fwrite(b->p, 1, b->len, rp->out) != b->len)
		err = -EIO;
	return err;
}

static void put_time(FILE *out, time_t t, time_t now)
{
	struct tm tm;
	char s[32];

	gmtime_r(&t, &tm);
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(out, "%s (", s);
	if (t <= now) {
		spool_put_age(out, (long long)(now - t));
		fputs(" ago)", out);
	} else {
		fputs("in ", out);
		spool_put_age(out, (long long)(t - now));
		fputc(')', out);
	}
}

/* The deferrals of <qid> in every defer log, oldest first: its history. */
static int show_history(struct reporter *rp, const char *qid)
{
	struct defer_ent e;
	char **names = NULL, *line = NULL;
	size_t cap = 0, qlen = strlen(qid);
	unsigned long n = 0;
	int nn, err = 0;
	ssize_t got;
	DIR *d = opendir(rp->dir);

	if (!d)
		return -errno;
	nn = list_names(d, is_defer_name, &names);
	if (nn < 0) {
		closedir(d);
		return nn;
	}
	fputs("history:\n", rp->out);
	for (int i = 0; i < nn && !err; i++) {
		int fd = openat(dirfd(d), names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;

		if (!f) {
			if (fd >= 0)
				close(fd);
			continue; /* gone since readdir: the logs only inform */
		}
		while ((got = getline(&line, &cap, f)) > 0) {
			if (line[got - 1] != '\n')
				break; /* a write in progress */
			line[--got] = '\0';
			if ((size_t)got <= qlen || memcmp(line, qid, qlen) || line[qlen] != '\t')
				continue;
			err = defer_line(line, (size_t)got, &e);
			if (err == -EINVAL) {
				err = 0;
				continue;
			}
			if (err)
				break;
			fprintf(rp->out, "  attempt %" PRIu32 " deferred, next attempt ",
			        e.attempts);
			put_time(rp->out, (time_t)e.next, rp->now);
			fputs(": ", rp->out);
			spool_put_quoted(rp->out, e.reply);
			fputc('\n', rp->out);
			free(e.reply);
			n++;
		}
		fclose(f);
	}
	if (!err && !n)
		fputs("  no deferral logged (never tried yet, or being tried)\n", rp->out);
	free(line);
	free_names(names, nn);
	closedir(d);
	return err;
}

/* The header section of <m>'s body (the Received: header ringmx added
 * first), read from its segment: at most SHOW_HEADERS_MAX bytes. */
static int show_headers(struct reporter *rp, const struct spool_msg *m)
{
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t body_at;
	size_t n, i, ls;
	char *p = NULL, *end;
	int fd, err;
	DIR *d = opendir(rp->dir);

	if (!d)
		return -errno;
	fd = openat(dirfd(d), m->segment, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	closedir(d);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* delivered meanwhile */
	err = spool_pread(fd, h, sizeof(h), m->offset);
	if (!err)
		err = spool_rec_env_end(h, &body_at);
	n = m->body_len < SHOW_HEADERS_MAX ? (size_t)m->body_len : SHOW_HEADERS_MAX;
	if (!err && !(p = malloc(n + 1)))
		err = -ENOMEM;
	if (!err)
		err = spool_pread(fd, p, n, m->offset + body_at);
	close(fd);
	if (err) {
		free(p);
		return err == -ENODATA ? 0 : err;
	}
	fputs("headers:\n", rp->out);
	p[n] = '\0';
	end = p + n;
	for (i = 0; p + i < end;) {
		char *nl = memchr(p + i, '\n', (size_t)(end - p - i));

		ls = nl ? (size_t)(nl - p - i) : (size_t)(end - p - i);
		if (ls && p[i + ls - 1] == '\r')
			ls--;
		if (!ls)
			break; /* the empty line: the end of the header section */
		fputs("  ", rp->out);
		for (size_t k = 0; k < ls; k++) {
			unsigned char c = (unsigned char)p[i + k];

			if ((c < 0x20 && c != '\t') || c == 0x7f)
				fprintf(rp->out, "\\x%02x", c);
			else
				fputc(c, rp->out);
		}
		fputc('\n', rp->out);
		if (!nl)
			break;
		i = (size_t)(nl - p) + 1;
	}
	free(p);
	return 0;
}

static int show_one(struct reporter *rp, const struct spool_msg *m, unsigned state,
                    const struct defer_ent *de)
{
	const char *r = m->rcpts, *st = spool_state_name(m->state, state);
	FILE *out = rp->out;
	int err;

	if (rp->shown++)
		fputc('\n', out);
	fprintf(out, "queue id: %s\nstate: %s", m->qid, st);
	if (state == SPOOL_SEL_HELD)
		fputs(" (never delivered nor expired until released)", out);
	fputc('\n', out);
	if (de && m->state == SPOOL_PENDING) {
		fprintf(out, "attempts: %" PRIu32 "\n", de->attempts);
		if (state == SPOOL_SEL_DEFERRED) {
			fputs("next attempt: ", out);
			put_time(out, (time_t)de->next, rp->now);
			fputc('\n', out);
		}
		fputs("last reply: ", out);
		spool_put_quoted(out, de->reply);
		fputc('\n', out);
	}
	fputs("arrival: ", out);
	put_time(out, m->arrival, rp->now);
	fprintf(out, "\nsize: %" PRIu64 "\nclient: %s\nhelo: %s\nsender: <%s>\n", m->body_len,
	        m->client ? m->client : "", m->helo ? m->helo : "", m->from);
	if (m->body_8bit || m->smtputf8)
		fprintf(out, "options:%s%s\n", m->body_8bit ? " BODY=8BITMIME" : "",
		        m->smtputf8 ? " SMTPUTF8" : "");
	fputs("recipients:\n", out);
	for (unsigned i = 0; i < m->nrcpt; i++, r += strlen(r) + 1) {
		const char *why = NULL,
		           *rst = m->state == SPOOL_PENDING ? rcpt_state(de, i, st, &why) : st;

		fprintf(out, "  <%s> %s", r, rst);
		if (why) {
			fputs(": ", out);
			spool_put_quoted(out, why);
		}
		fputc('\n', out);
	}
	fprintf(out, "record: %s offset %" PRIu64 " (%" PRIu64 " bytes)\n", m->segment, m->offset,
	        m->rec_len);
	err = show_history(rp, m->qid);
	return err ? err : show_headers(rp, m);
}

static int shape_one(struct reporter *rp, const struct spool_msg *m)
{
	const char *dom[64] = {0}, **v = dom, *r = m->rcpts;
	size_t n = 0;
	int err;

	if (rp->kind == SPOOL_REPORT_SHAPE_SENDER) {
		dom[0] = qtool_domain(m->from);
		return qtool_shape_add(&rp->shape, dom, 1, (int64_t)rp->now - (int64_t)m->arrival);
	}
	if (m->nrcpt > 64 && !(v = malloc(m->nrcpt * sizeof(*v))))
		return -ENOMEM;
	for (unsigned i = 0; i < m->nrcpt; i++, r += strlen(r) + 1)
		v[n++] = qtool_domain(r);
	err = qtool_shape_add(&rp->shape, v, n, (int64_t)rp->now - (int64_t)m->arrival);
	if (v != dom)
		free(v);
	return err;
}

static int report_one(void *arg, const struct spool_msg *m, unsigned state,
                      const struct defer_ent *de)
{
	struct reporter *rp = arg;

	switch (rp->kind) {
	case SPOOL_REPORT_JSON:
		return json_one(rp, m, state, de);
	case SPOOL_REPORT_SHOW:
		return show_one(rp, m, state, de);
	case SPOOL_REPORT_SHAPE:
	case SPOOL_REPORT_SHAPE_SENDER:
		return shape_one(rp, m);
	case SPOOL_REPORT_TEXT:
		break;
	}
	return -EINVAL;
}

int spool_report(const char *dir, const struct spool_select *sel, enum spool_report_kind kind,
                 FILE *out, time_t now)
{
	struct reporter rp = {.dir = dir, .kind = kind, .out = out, .now = now};
	int err;

	if (kind == SPOOL_REPORT_TEXT)
		return spool_list_sel(dir, sel, 0, out, now);
	err = spool_query(dir, sel, now, 0, report_one, &rp);
	if (!err && (kind == SPOOL_REPORT_SHAPE || kind == SPOOL_REPORT_SHAPE_SENDER)) {
		buf_reset(&rp.line, 0);
		err = qtool_shape_format(&rp.shape, &rp.line);
		if (!err && rp.line.len && fwrite(rp.line.p, 1, rp.line.len, out) != rp.line.len)
			err = -EIO;
	}
	buf_free(&rp.line);
	qtool_shape_free(&rp.shape);
	if (!err && (fflush(out) == EOF || ferror(out)))
		err = -EIO;
	return err;
}
