/* spool_hold: the hold logs, the spool's durable record of which messages
 * an operator put on hold (`ringmx queue hold`) and released. Like the done
 * logs they are files of fixed 64-byte records with a crc, appended and
 * fdatasync'd by their one writer, never shared: each run of the tool
 * writes a log of its own ("hold-<its start>.rmx"), and recovery compacts
 * them into "hold-<start>-recovered.rmx". Unlike a done record, a hold
 * record names a message by queue id alone, so that a held message stays
 * held when it is moved forward (same id, new segment). The record with
 * the largest stamp of a queue id wins. Readers: `ringmx queue` (the held
 * state), the gateway at start and on each request (io/control.c: its
 * relay never dispatches a held message), recovery (compaction). Blocking
 * calls: the tool, start-up and the main thread, never a worker. queue/
 * includes core/ only. See spool.h and docs/spool.md. */
#include "queue/spool.h"
#include "queue/spool-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "queue/crc32c.h"

/* Offsets in a hold record. */
#define HOLD_MAGIC   0
#define HOLD_CRC     4
#define HOLD_STAMP   8
#define HOLD_OP      16
#define HOLD_VERSION 17
#define HOLD_QID     32

static void le32_put(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void le64_put(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t le_get(const unsigned char *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int spool_hold_encode(void *buf, const struct spool_hold *h)
{
	unsigned char *p = buf;
	size_t qlen = strnlen(h->qid, sizeof(h->qid));

	if (!qlen || qlen > SPOOL_QID_MAX || (h->op != SPOOL_HOLD_ON && h->op != SPOOL_HOLD_OFF))
		return -EINVAL;
	memset(p, 0, SPOOL_HOLD_LEN);
	le32_put(p + HOLD_MAGIC, SPOOL_HOLD_MAGIC);
	le64_put(p + HOLD_STAMP, h->stamp);
	p[HOLD_OP] = (unsigned char)h->op;
	p[HOLD_VERSION] = SPOOL_HOLD_VERSION;
	memcpy(p + HOLD_QID, h->qid, qlen);
	le32_put(p + HOLD_CRC, crc32c(0, p, SPOOL_HOLD_LEN));
	return 0;
}

int spool_hold_decode(const void *buf, struct spool_hold *h)
{
	unsigned char r[SPOOL_HOLD_LEN];
	size_t qlen;

	memcpy(r, buf, sizeof(r));
	if (le_get(r + HOLD_MAGIC, 4) != SPOOL_HOLD_MAGIC || r[HOLD_VERSION] != SPOOL_HOLD_VERSION)
		return -EINVAL;
	le32_put(r + HOLD_CRC, 0);
	if (crc32c(0, r, sizeof(r)) != (uint32_t)le_get((const unsigned char *)buf + HOLD_CRC, 4))
		return -EINVAL;
	qlen = strnlen((const char *)r + HOLD_QID, 32);
	if (!qlen || qlen > SPOOL_QID_MAX ||
	    (r[HOLD_OP] != SPOOL_HOLD_ON && r[HOLD_OP] != SPOOL_HOLD_OFF))
		return -EINVAL;
	/* Reserved bytes and padding are zero: one spelling on disk. */
	for (size_t i = HOLD_VERSION + 1; i < HOLD_QID; i++)
		if (r[i])
			return -EINVAL;
	for (size_t i = qlen; i < 32; i++)
		if (r[HOLD_QID + i])
			return -EINVAL;
	memset(h, 0, sizeof(*h));
	memcpy(h->qid, r + HOLD_QID, qlen);
	h->stamp = le_get(r + HOLD_STAMP, 8);
	h->op = (enum spool_hold_op)r[HOLD_OP];
	return 0;
}

void spool_hold_name(char *name, size_t len, uint64_t start_id)
{
	snprintf(name, len, "hold-%016llx.rmx", (unsigned long long)start_id);
}

static void hold_recovered_name(char *name, size_t len, uint64_t start_id)
{
	snprintf(name, len, "hold-%016llx-recovered.rmx", (unsigned long long)start_id);
}

bool is_hold_name(const char *s)
{
	size_t n = strlen(s);

	if (strncmp(s, "hold-", 5) || n < 5 + 16 + 4)
		return false;
	for (size_t i = 5; i < 21; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return !strcmp(s + 21, ".rmx") || !strcmp(s + 21, "-recovered.rmx");
}

/* The hold set. */

static size_t hold_hash(const char *qid)
{
	return (size_t)((uint64_t)crc32c(0, qid, strlen(qid)) * 0x9e3779b97f4a7c15ull >> 20);
}

static struct hold_ent *hold_slot(struct hold_ent *v, size_t cap, const char *qid)
{
	size_t i = hold_hash(qid) & (cap - 1);

	for (;; i = (i + 1) & (cap - 1))
		if (!v[i].used || !strcmp(v[i].h.qid, qid))
			return &v[i];
}

struct hold_ent *hold_find(const struct hold_set *s, const char *qid)
{
	struct hold_ent *e;

	if (!s || !s->n)
		return NULL;
	e = hold_slot(s->v, s->cap, qid);
	return e->used ? e : NULL;
}

/* Adds <h>, or replaces its queue id's entry when <h>'s stamp is not
 * smaller (the later of two records with one stamp wins). Returns 0 or
 * -ENOMEM. */
static int hold_put(struct hold_set *s, const struct spool_hold *h)
{
	struct hold_ent *e;

	if ((s->n + 1) * 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		struct hold_ent *nv = calloc(ncap, sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++)
			if (s->v[i].used)
				*hold_slot(nv, ncap, s->v[i].h.qid) = s->v[i];
		free(s->v);
		s->v = nv;
		s->cap = ncap;
	}
	e = hold_slot(s->v, s->cap, h->qid);
	if (e->used) {
		s->superseded++;
		if (h->stamp < e->h.stamp)
			return 0;
		s->nheld -= e->h.op == SPOOL_HOLD_ON;
	} else {
		s->n++;
	}
	e->h = *h;
	e->used = true;
	s->nheld += h->op == SPOOL_HOLD_ON;
	if (h->stamp > s->max_stamp)
		s->max_stamp = h->stamp;
	return 0;
}

/* One hold record into the set (spool_log_scan's <take>). */
static int hold_take(void *arg, const unsigned char *rec)
{
	struct spool_hold h;

	return spool_hold_decode(rec, &h) ? 1 : hold_put(arg, &h);
}

/* Parses hold log <name> (<len> bytes at <p>): a record that fails a check
 * is skipped to the next magic, as in a done log. */
static int hold_parse(struct hold_set *s, const char *name, const unsigned char *p, size_t len)
{
	int err;
	size_t bad = spool_log_scan(p, len, "RMXH", SPOOL_HOLD_LEN, hold_take, s, &err);

	if (err)
		return err;
	if (bad)
		LOGW("spool: %s: %zu bytes hold no valid hold record, ignored", name, bad);
	s->bad_bytes += bad;
	return 0;
}

int hold_load(DIR *d, struct hold_set *s)
{
	unsigned char *p;
	struct stat st;
	int n, fd, err = 0;

	n = list_names(d, is_hold_name, &s->logs);
	if (n < 0)
		return n;
	s->nlogs = (size_t)n;
	for (size_t i = 0; i < s->nlogs && !err; i++) {
		fd = openat(dirfd(d), s->logs[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			if (errno != ENOENT) /* ENOENT: compacted by a recovery since */
				err = -errno;
			continue;
		}
		if (fstat(fd, &st) < 0) {
			err = -errno;
		} else if (S_ISREG(st.st_mode) && st.st_size > 0) {
			p = malloc((size_t)st.st_size);
			if (!p)
				err = -ENOMEM;
			else if (!(err = spool_pread(fd, p, (size_t)st.st_size, 0)))
				err = hold_parse(s, s->logs[i], p, (size_t)st.st_size);
			else if (err == -ENODATA)
				err = 0;
			free(p);
		}
		close(fd);
	}
	return err;
}

void hold_free(struct hold_set *s)
{
	for (size_t i = 0; i < s->nlogs; i++)
		free(s->logs[i]);
	free(s->logs);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* Writes <n> records at <r> to a new file <name> in <dfd> through
 * "<name>.tmp" (fsync, rename, directory fsync). Returns 0 or -errno. */
static int write_new(int dfd, const char *name, const unsigned char *r, size_t n)
{
	char tmp[96];
	int fd, err;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return -errno;
	err = write_full(fd, r, n * SPOOL_HOLD_LEN);
	if (!err && fsync(fd) < 0)
		err = -errno;
	close(fd);
	if (!err && renameat(dfd, tmp, dfd, name) < 0)
		err = -errno;
	if (err) {
		unlinkat(dfd, tmp, 0);
		return err;
	}
	return fsync(dfd) < 0 ? -errno : 0;
}

static bool hold_kept(const struct hold_ent *e)
{
	return e->used && e->needed && (e->h.op == SPOOL_HOLD_ON || e->quarantined);
}

int hold_compact(DIR *d, struct hold_set *s, uint64_t start_id, unsigned long *kept)
{
	int dfd = dirfd(d), err = 0;
	unsigned char *out = NULL, *p;
	char name[64];
	size_t keep = 0, held = 0;

	*kept = 0;
	/* Needed: the holds of pending messages, and the releases of
	 * quarantined ones (their envelope would hold them again). */
	for (size_t i = 0; i < s->cap; i++) {
		keep += hold_kept(&s->v[i]);
		held += hold_kept(&s->v[i]) && s->v[i].h.op == SPOOL_HOLD_ON;
	}
	/* Nothing to drop: a single log of needed holds stays as it is. */
	if (keep == s->n && !s->superseded && !s->bad_bytes && s->nlogs <= 1) {
		*kept = held;
		return 0;
	}
	hold_recovered_name(name, sizeof(name), start_id);
	if (keep) {
		/* New log first, durable, then the old ones go: a crash in
		 * between leaves both, which read the same. */
		out = malloc(keep * SPOOL_HOLD_LEN);
		if (!out)
			return -ENOMEM;
		p = out;
		for (size_t i = 0; i < s->cap; i++) {
			const struct hold_ent *e = &s->v[i];

			if (hold_kept(e)) {
				spool_hold_encode(p, &e->h);
				p += SPOOL_HOLD_LEN;
			}
		}
		err = write_new(dfd, name, out, keep);
		free(out);
		if (err)
			return err;
	}
	for (size_t i = 0; i < s->nlogs; i++) {
		if (keep && !strcmp(s->logs[i], name))
			continue;
		if (unlinkat(dfd, s->logs[i], 0) < 0 && errno != ENOENT)
			return -errno;
	}
	if (fsync(dfd) < 0)
		return -errno;
	*kept = held;
	LOGI("spool: hold logs: %zu compacted into %s, %zu messages held", s->nlogs,
	     keep ? name : "none", held);
	return 0;
}

/* The public face: a loaded hold set. */

struct spool_holds {
	struct hold_set s;
};

int spool_holds_load(const char *dir, struct spool_holds **out)
{
	struct spool_holds *h = calloc(1, sizeof(*h));
	DIR *d;
	int err;

	if (!h)
		return -ENOMEM;
	d = opendir(dir);
	if (!d) {
		free(h);
		return -errno;
	}
	err = hold_load(d, &h->s);
	closedir(d);
	if (err) {
		spool_holds_free(h);
		return err;
	}
	*out = h;
	return 0;
}

bool spool_holds_held(const struct spool_holds *h, const char *qid)
{
	const struct hold_ent *e = h ? hold_find(&h->s, qid) : NULL;

	return e && e->h.op == SPOOL_HOLD_ON;
}

bool spool_holds_held_q(const struct spool_holds *h, const char *qid, bool quarantined)
{
	const struct hold_ent *e = h ? hold_find(&h->s, qid) : NULL;

	return e ? e->h.op == SPOOL_HOLD_ON : quarantined;
}

size_t spool_holds_count(const struct spool_holds *h)
{
	return h ? h->s.nheld : 0;
}

uint64_t spool_holds_stamp(const struct spool_holds *h)
{
	return h ? h->s.max_stamp : 0;
}

void spool_holds_free(struct spool_holds *h)
{
	if (!h)
		return;
	hold_free(&h->s);
	free(h);
}

int spool_hold_write(const char *dir, const struct spool_hold *v, size_t n, uint64_t start_id)
{
	unsigned char *r;
	char name[64];
	int dfd, fd, err = 0;

	if (!n)
		return 0;
	r = malloc(n * SPOOL_HOLD_LEN);
	if (!r)
		return -ENOMEM;
	for (size_t i = 0; i < n && !err; i++)
		err = spool_hold_encode(r + i * SPOOL_HOLD_LEN, &v[i]);
	if (err)
		goto out;
	dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0) {
		err = -errno;
		goto out;
	}
	spool_hold_name(name, sizeof(name), start_id);
	fd = openat(dfd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0) {
		err = -errno;
	} else {
		/* One write: the records are whole or torn together (a torn
		 * piece costs only itself to a reader). */
		err = write_full(fd, r, n * SPOOL_HOLD_LEN);
		if (!err && fdatasync(fd) < 0)
			err = -errno;
		close(fd);
	}
	/* The log's name must survive a crash too. */
	if (!err && fsync(dfd) < 0)
		err = -errno;
	close(dfd);
out:
	free(r);
	return err;
}
