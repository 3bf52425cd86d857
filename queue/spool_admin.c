/* spool_admin: the `ringmx queue` tool's side of the spool, called from
 * io/main.c: spool_list() prints the queue through the walker and the defer
 * set of queue/spool_read.c; spool_mark() and spool_delete() take messages
 * out of it by appending done records to the tool's own done log (never a
 * gateway's), made durable before they return, with blocking calls: this
 * is a command-line tool, never a worker. All of it is safe while a
 * gateway runs on the same directory. queue/ includes core/ only. See
 * spool.h and docs/spool.md. */
#include "queue/spool.h"
#include "queue/spool-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/qtool.h"

/* Selection: every report and action of the tool walks through here. */

struct query {
	const struct spool_select *sel;
	time_t now;
	struct defer_set defer;
	struct hold_set hold;
	query_fn *fn;
	void *arg;
};

static bool id_wanted(const struct spool_select *sel, const char *qid)
{
	if (!sel->ids)
		return true;
	for (size_t i = 0; i < sel->nids; i++)
		if (!strcmp(sel->ids[i], qid))
			return true;
	return false;
}

static bool selected(const struct spool_select *sel, const struct spool_msg *m, unsigned state,
                     time_t now)
{
	const char *r = m->rcpts;
	bool to = !sel->to;

	if (sel->states && !(sel->states & state))
		return false;
	if (sel->older_than && (int64_t)now - (int64_t)m->arrival < (int64_t)sel->older_than)
		return false;
	if (sel->from && !qtool_addr_match(sel->from, m->from))
		return false;
	for (unsigned i = 0; !to && i < m->nrcpt; i++, r += strlen(r) + 1)
		to = qtool_addr_match(sel->to, r);
	return to && id_wanted(sel, m->qid);
}

static int query_visit(void *arg, const struct spool_msg *m)
{
	struct query *q = arg;
	struct defer_ent *de = NULL;
	struct hold_ent *he;
	unsigned state = 0;

	if (m->state == SPOOL_PENDING) {
		he = hold_find(&q->hold, m->qid);
		de = defer_find(&q->defer, m->qid);
		if (spool_held(he, m))
			state = SPOOL_SEL_HELD;
		else
			state = de ? SPOOL_SEL_DEFERRED : SPOOL_SEL_ACTIVE;
		if (q->sel && !selected(q->sel, m, state, q->now))
			return 0;
	} else if (q->sel && (q->sel->states || !id_wanted(q->sel, m->qid))) {
		return 0; /* a done message has none of the pending states */
	}
	return q->fn(q->arg, m, state, de);
}

int spool_query(const char *dir, const struct spool_select *sel, time_t now, unsigned flags,
                query_fn *fn, void *arg)
{
	struct query q = {.sel = sel, .now = now, .fn = fn, .arg = arg};
	struct spool_walker w = {
	    .all = flags & QUERY_ALL,
	    .dedup = !(flags & QUERY_COPIES),
	    .fn = query_visit,
	    .arg = &q,
	};
	DIR *d;
	int err = 0;

	/* Loaded before the segments are walked: a message deferred or held
	 * meanwhile shows as it was a moment earlier. */
	d = opendir(dir);
	if (!d)
		return -errno;
	if (!(flags & QUERY_NO_DEFER))
		err = defer_load(d, &q.defer);
	if (!err)
		err = hold_load(d, &q.hold);
	closedir(d);
	if (!err)
		err = walk_dir(dir, &w);
	defer_free(&q.defer);
	hold_free(&q.hold);
	return err;
}

struct spool_lister {
	FILE *out;
	time_t now;
	unsigned long count;
	unsigned flags;
};

void spool_put_age(FILE *out, long long age)
{
	if (age < 0)
		age = 0;
	if (age < 60)
		fprintf(out, "%llds", age);
	else if (age < 3600)
		fprintf(out, "%lldm", age / 60);
	else if (age < 86400)
		fprintf(out, "%lldh", age / 3600);
	else
		fprintf(out, "%lldd", age / 86400);
}

void spool_put_quoted(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* The state of a pending message: " active"; " deferred" with when the
 * next attempt is due ("now" once due), the attempts so far and the last
 * reply; " held", with the attempts and last reply of a deferral before. */
static void put_pending(struct spool_lister *l, unsigned state, const struct defer_ent *e)
{
	if (state == SPOOL_SEL_HELD) {
		fputs(" held", l->out);
		if (e) {
			fprintf(l->out, " attempts=%" PRIu32 " last=", e->attempts);
			spool_put_quoted(l->out, e->reply);
		}
		return;
	}
	if (!e) {
		fputs(" active", l->out);
		return;
	}
	fputs(" deferred next=", l->out);
	if (e->next > (int64_t)l->now)
		spool_put_age(l->out, (long long)(e->next - (int64_t)l->now));
	else
		fputs("now", l->out);
	fprintf(l->out, " attempts=%" PRIu32 " last=", e->attempts);
	spool_put_quoted(l->out, e->reply);
}

const char *spool_state_name(enum spool_state s, unsigned sel_state)
{
	switch (s) {
	case SPOOL_PENDING:
		return sel_state == SPOOL_SEL_HELD       ? "held"
		       : sel_state == SPOOL_SEL_DEFERRED ? "deferred"
		                                         : "active";
	case SPOOL_DELIVERED:
		return "delivered";
	case SPOOL_BOUNCED:
		return "bounced";
	case SPOOL_DELETED:
		return "deleted";
	case SPOOL_MOVED:
		return "moved";
	}
	return "unknown";
}

static int list_one(void *arg, const struct spool_msg *m, unsigned state,
                    const struct defer_ent *de)
{
	struct spool_lister *l = arg;
	const char *r = m->rcpts;

	l->count++;
	if (l->flags & SPOOL_LIST_COUNT)
		return 0;
	/* One message per line, single spaces, a fixed number of fields, so
	 * that grep, cut and awk work on it. */
	fprintf(l->out, "%s %" PRIu64 " %s ", m->qid, m->body_len, *m->from ? m->from : "<>");
	spool_put_age(l->out, (long long)l->now - (long long)m->arrival);
	fputc(' ', l->out);
	if (!m->nrcpt)
		fputc('-', l->out);
	for (unsigned i = 0; i < m->nrcpt; i++, r += strlen(r) + 1)
		fprintf(l->out, "%s%s", i ? "," : "", r);
	if (m->state == SPOOL_PENDING && state == SPOOL_SEL_HELD && *m->quarantine) {
		fputs(" held reason=", l->out); /* a content filter's quarantine */
		spool_put_quoted(l->out, m->quarantine);
	} else if (m->state == SPOOL_PENDING)
		put_pending(l, state, de);
	else
		fprintf(l->out, " %s", spool_state_name(m->state, 0));
	fputc('\n', l->out);
	return 0;
}

int spool_list_sel(const char *dir, const struct spool_select *sel, unsigned flags, FILE *out,
                   time_t now)
{
	struct spool_lister l = {.out = out, .now = now, .flags = flags};
	int err;

	err = spool_query(
	    dir, sel, now,
	    (flags & SPOOL_LIST_ALL ? QUERY_ALL : 0) |
	        (flags & SPOOL_LIST_COUNT && !(sel && sel->states) ? QUERY_NO_DEFER : 0),
	    list_one, &l);
	if (err)
		return err;
	if (flags & SPOOL_LIST_COUNT)
		fprintf(out, "%lu\n", l.count);
	if (fflush(out) == EOF || ferror(out))
		return -EIO;
	return 0;
}

int spool_list(const char *dir, unsigned flags, FILE *out, time_t now)
{
	return spool_list_sel(dir, NULL, flags, out, now);
}

/* Picks: what an action applies to. */

struct picker {
	struct spool_pick *v;
	size_t n, cap;
};

static int pick_one(void *arg, const struct spool_msg *m, unsigned state,
                    const struct defer_ent *de)
{
	struct picker *p = arg;
	struct spool_pick *v;

	(void)de;
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		v = realloc(p->v, p->cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		p->v = v;
	}
	v = &p->v[p->n++];
	memset(v, 0, sizeof(*v));
	memcpy(v->qid, m->qid, sizeof(v->qid));
	v->seg = m->seg;
	v->offset = m->offset;
	v->state = state;
	return 0;
}

int spool_pick(const char *dir, const struct spool_select *sel, time_t now, bool copies,
               struct spool_pick **v, size_t *n)
{
	struct picker p = {0};
	int err = spool_query(dir, sel, now, copies ? QUERY_COPIES : 0, pick_one, &p);

	if (err) {
		free(p.v);
		return err;
	}
	*v = p.v;
	*n = p.n;
	return 0;
}

int spool_hold_picks(const char *dir, const struct spool_pick *v, size_t n, bool on,
                     uint64_t start_id, uint64_t now_ns)
{
	struct spool_holds *h;
	struct spool_hold *r;
	uint64_t stamp;
	int err;

	if (!n)
		return 0;
	err = spool_holds_load(dir, &h);
	if (err)
		return err;
	stamp = spool_holds_stamp(h) + 1;
	spool_holds_free(h);
	if (stamp < now_ns)
		stamp = now_ns;
	r = calloc(n, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		memcpy(r[i].qid, v[i].qid, sizeof(r[i].qid));
		r[i].stamp = stamp + i;
		r[i].op = on ? SPOOL_HOLD_ON : SPOOL_HOLD_OFF;
	}
	err = spool_hold_write(dir, r, n, start_id);
	free(r);
	return err;
}

/* Tools: done records written from the CLI (`ringmx queue --delete`). */

/* Appends the <n> done records at <d> to the tool's own done log
 * "done-<start_id>-00.rmx" in <dir> (created if need be) and makes them
 * durable: each record is fdatasync'd, then the directory is fsync'd so
 * that the log's name survives a crash too. All records are checked before
 * the first is written. Returns 0 or -errno. */
static int tool_done_append(const char *dir, uint64_t start_id, const struct spool_done *d,
                            size_t n)
{
	unsigned char r[SPOOL_DONE_LEN];
	int dfd, fd, err = 0;
	char name[64];

	for (size_t i = 0; i < n; i++)
		if (spool_done_encode(r, &d[i]))
			return -EINVAL;
	dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	spool_done_name(name, sizeof(name), start_id, 0);
	fd = openat(dfd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0) {
		err = -errno;
		goto out_dir;
	}
	for (size_t i = 0; i < n && !err; i++)
		err = spool_done_append_fd(fd, &d[i]);
	close(fd);
	/* Every time, not only when the log was created: a run that crashed
	 * between creating it and this fsync leaves a name not yet durable. */
	if (!err && fsync(dfd) < 0)
		err = -errno;
out_dir:
	close(dfd);
	return err;
}

int spool_mark(const char *dir, const struct spool_done *d, uint64_t start_id)
{
	return tool_done_append(dir, start_id, d, 1);
}

/* The pending messages a delete found. */
struct spool_deleter {
	const char *qid;
	struct spool_done *v;
	size_t n, cap;
};

static int delete_match(void *arg, const struct spool_msg *m)
{
	struct spool_deleter *dl = arg;
	struct spool_done *v;

	if (strcmp(m->qid, dl->qid))
		return 0;
	if (dl->n == dl->cap) {
		dl->cap = dl->cap ? dl->cap * 2 : 4;
		v = realloc(dl->v, dl->cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		dl->v = v;
	}
	v = &dl->v[dl->n++];
	memset(v, 0, sizeof(*v));
	memcpy(v->qid, m->qid, sizeof(v->qid));
	v->seg = m->seg;
	v->offset = m->offset;
	v->result = SPOOL_DELETED;
	return 0;
}

int spool_delete_picks(const char *dir, const struct spool_pick *v, size_t n, uint64_t start_id)
{
	struct spool_done *d;
	int err;

	if (!n)
		return 0;
	d = calloc(n, sizeof(*d));
	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		memcpy(d[i].qid, v[i].qid, sizeof(d[i].qid));
		d[i].seg = v[i].seg;
		d[i].offset = v[i].offset;
		d[i].result = SPOOL_DELETED;
	}
	err = tool_done_append(dir, start_id, d, n);
	free(d);
	return err;
}

int spool_delete(const char *dir, const char *qid, uint64_t start_id)
{
	struct spool_deleter dl = {.qid = qid};
	struct spool_walker w = {.fn = delete_match, .arg = &dl};
	int err;

	if (!qid)
		return -EINVAL;
	/* An id no record can hold (empty, too long) names no message. */
	if (!*qid || strlen(qid) > SPOOL_QID_MAX)
		return -ENOENT;
	/* Find first, write after: a walk that fails writes nothing. */
	err = walk_dir(dir, &w);
	if (!err && !dl.n)
		err = -ENOENT;
	if (!err)
		err = tool_done_append(dir, start_id, dl.v, dl.n);
	free(dl.v);
	return err;
}
