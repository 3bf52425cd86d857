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

struct spool_lister {
	FILE *out;
	time_t now;
	unsigned long count;
	unsigned flags;
	struct defer_set defer;
};

/* Writes <age> seconds the way mailq users read it: 42s, 5m, 3h, 2d. */
static void put_age(FILE *out, long long age)
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

/* Writes <s> between double quotes, so that the reply is one token for a
 * shell-like reader: '"' and '\' get a backslash, control bytes are
 * written \xHH; other bytes (UTF-8 included) go as they are. */
static void put_quoted(FILE *out, const char *s)
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

/* The state of a pending message: " active", or " deferred" with when the
 * next attempt is due ("now" once due), the attempts so far and the last
 * reply. */
static void put_pending(struct spool_lister *l, const struct spool_msg *m)
{
	struct defer_ent *e = defer_find(&l->defer, m->qid);

	if (!e) {
		fputs(" active", l->out);
		return;
	}
	fputs(" deferred next=", l->out);
	if (e->next > (int64_t)l->now)
		put_age(l->out, (long long)(e->next - (int64_t)l->now));
	else
		fputs("now", l->out);
	fprintf(l->out, " attempts=%" PRIu32 " last=", e->attempts);
	put_quoted(l->out, e->reply);
}

static const char *state_name(enum spool_state s)
{
	switch (s) {
	case SPOOL_PENDING:
		return "pending";
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

static int list_one(void *arg, const struct spool_msg *m)
{
	struct spool_lister *l = arg;
	const char *r = m->rcpts;

	l->count++;
	if (l->flags & SPOOL_LIST_COUNT)
		return 0;
	/* One message per line, single spaces, a fixed number of fields, so
	 * that grep, cut and awk work on it. */
	fprintf(l->out, "%s %" PRIu64 " %s ", m->qid, m->body_len, *m->from ? m->from : "<>");
	put_age(l->out, (long long)l->now - (long long)m->arrival);
	fputc(' ', l->out);
	if (!m->nrcpt)
		fputc('-', l->out);
	for (unsigned i = 0; i < m->nrcpt; i++, r += strlen(r) + 1)
		fprintf(l->out, "%s%s", i ? "," : "", r);
	if (m->state == SPOOL_PENDING && *m->quarantine) {
		fputs(" held reason=", l->out); /* a content filter's quarantine */
		put_quoted(l->out, m->quarantine);
	} else if (m->state == SPOOL_PENDING)
		put_pending(l, m);
	else
		fprintf(l->out, " %s", state_name(m->state));
	fputc('\n', l->out);
	return 0;
}

int spool_list(const char *dir, unsigned flags, FILE *out, time_t now)
{
	struct spool_lister l = {.out = out, .now = now, .flags = flags};
	struct spool_walker w = {
	    .all = flags & SPOOL_LIST_ALL,
	    .dedup = true,
	    .fn = list_one,
	    .arg = &l,
	};
	DIR *d;
	int err = 0;

	if (!(flags & SPOOL_LIST_COUNT)) {
		/* Loaded before the segments are walked: a message deferred
		 * meanwhile shows as active, as it would a moment earlier. */
		d = opendir(dir);
		if (!d)
			return -errno;
		err = defer_load(d, &l.defer);
		closedir(d);
	}
	if (!err)
		err = walk_dir(dir, &w);
	defer_free(&l.defer);
	if (err)
		return err;
	if (flags & SPOOL_LIST_COUNT)
		fprintf(out, "%lu\n", l.count);
	if (fflush(out) == EOF || ferror(out))
		return -EIO;
	return 0;
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
