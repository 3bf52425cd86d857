/* spool_recover: recovery at start-up, the one writer of a spool directory
 * besides io/ and the `ringmx queue` tool. The gateway (io/gateway.c) calls
 * spool_recover() from the main thread before any worker starts, so its
 * blocking reads, writes and fsyncs stall nobody. It walks
 * every segment with the walker of queue/spool_read.c, cuts torn tails, sets
 * damaged ones aside (a bad record with a sound one after it: never destroy
 * what may be data), deletes finished segments, compacts the done logs and
 * deletes the defer logs no pending message needs, each step made durable
 * before the next one relies on it. queue/ includes core/ only. See spool.h
 * and docs/spool.md. */
#include "queue/spool.h"
#include "queue/spool-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "queue/crc32c.h"

/* Its log lines name ringmx/qmgr (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_QMGR

static int seg_id_cmp(const void *pa, const void *pb)
{
	const struct spool_seg_id *a = pa, *b = pb;

	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	if (a->worker != b->worker)
		return a->worker < b->worker ? -1 : 1;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return 0;
}

/* Checks for a sound record at <at> of a segment of <size> bytes, reading
 * through <buf> (<cap> bytes). Returns 1 if there is one, 0 if not, or
 * -errno. */
static int rec_sound_at(int fd, uint64_t at, uint64_t size, unsigned char *buf, size_t cap)
{
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t left, pos, body_len;
	uint32_t env_len, crc;
	size_t k;
	int err;

	if (size - at < SPOOL_HDR_LEN)
		return 0;
	err = spool_pread(fd, h, sizeof(h), at);
	if (err)
		return err == -ENODATA ? 0 : err;
	if (hdr_check(h, &env_len, &body_len) || SPOOL_HDR_LEN + env_len + body_len > size - at)
		return 0;
	crc = spool_rec_crc_start(h);
	pos = at + SPOOL_HDR_LEN;
	for (left = env_len + body_len; left; left -= k, pos += k) {
		k = left < cap ? (size_t)left : cap;
		err = spool_pread(fd, buf, k, pos);
		if (err)
			return err == -ENODATA ? 0 : err;
		crc = crc32c(crc, buf, k);
	}
	return !spool_rec_verify(h, crc);
}

#define SCAN_WIN (1024u * 1024) /* tail scan window */

/* Looks for a sound record that starts in (<from>, <size>) of segment <fd>:
 * the sign that the bad record at <from> is damage in the middle, not a
 * torn tail. Returns 1 and sets *<at>, 0 if there is none, or -errno. */
static int find_sound_after(int fd, uint64_t from, uint64_t size, uint64_t *at)
{
	static const unsigned char magic[4] = {'R', 'M', 'X', 'R'};
	unsigned char *win, *crcbuf, *p, *q;
	uint64_t pos = from + 1;
	size_t k;
	int ret = 0;

	win = malloc(SCAN_WIN);
	crcbuf = malloc(64 * 1024);
	if (!win || !crcbuf) {
		ret = -ENOMEM;
		goto out;
	}
	while (!ret && pos < size && size - pos >= SPOOL_HDR_LEN) {
		k = size - pos < SCAN_WIN ? (size_t)(size - pos) : SCAN_WIN;
		ret = spool_pread(fd, win, k, pos);
		if (ret)
			break;
		for (p = win; !ret && (q = memmem(p, k - (size_t)(p - win), magic, 4)); p = q + 1) {
			ret = rec_sound_at(fd, pos + (uint64_t)(q - win), size, crcbuf, 64 * 1024);
			if (ret == 1)
				*at = pos + (uint64_t)(q - win);
		}
		/* The next window overlaps by 3 bytes: a magic across the
		 * boundary is found there. */
		if (k <= 3)
			break;
		pos += k - 3;
	}
out:
	free(win);
	free(crcbuf);
	return ret;
}

/* Copies [<from>, <size>) of segment <fd> (named <name>) to a new file
 * "<name>.damaged" (".damaged.1", ... if taken) and makes it durable.
 * Writes the chosen name into <aside>. Returns 0 or -errno. */
static int set_aside(int dfd, int fd, const char *name, uint64_t from, uint64_t size, char *aside,
                     size_t len)
{
	char tmp[PATH_MAX];
	unsigned char *buf;
	uint64_t pos;
	size_t k;
	int out, err = 0;

	snprintf(tmp, sizeof(tmp), "%s.damaged.tmp", name);
	buf = malloc(SCAN_WIN);
	if (!buf)
		return -ENOMEM;
	out = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (out < 0) {
		err = -errno;
		goto out_buf;
	}
	for (pos = from; !err && pos < size; pos += k) {
		k = size - pos < SCAN_WIN ? (size_t)(size - pos) : SCAN_WIN;
		err = spool_pread(fd, buf, k, pos);
		if (!err)
			err = write_full(out, buf, k);
	}
	if (!err && fsync(out) < 0)
		err = -errno;
	close(out);
	/* link(2), not rename(2): an earlier copy under the name is kept. */
	for (unsigned i = 0; !err; i++) {
		if (i)
			snprintf(aside, len, "%s.damaged.%u", name, i);
		else
			snprintf(aside, len, "%s.damaged", name);
		if (!linkat(dfd, tmp, dfd, aside, 0))
			break;
		if (errno != EEXIST || i == 999)
			err = -errno;
	}
	unlinkat(dfd, tmp, 0);
	if (!err && fsync(dfd) < 0)
		err = -errno;
out_buf:
	free(buf);
	return err;
}

/* The state of one recovery. */
struct recovery {
	struct spool_walker w;
	struct done_set done;
	struct defer_set defer;
	struct hold_set hold;
	struct spool_recovery r;
	DIR *d;
	struct spool_seg_id *gone; /* segments deleted */
	size_t ngone, capgone;
};

static int note_gone(struct recovery *rc, const struct spool_seg_id *id)
{
	struct spool_seg_id *v;

	if (rc->ngone == rc->capgone) {
		rc->capgone = rc->capgone ? rc->capgone * 2 : 16;
		v = realloc(rc->gone, rc->capgone * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rc->gone = v;
	}
	rc->gone[rc->ngone++] = *id;
	return 0;
}

/* Recovers segment <name>: walk, set aside and cut the tail, delete when
 * nothing in it is pending. Returns 0, the visitor's value or -errno. */
static int recover_seg(struct recovery *rc, const char *name)
{
	struct spool_walker *w = &rc->w;
	int dfd = dirfd(rc->d), fd, err, found;
	char aside[PATH_MAX];
	uint64_t size, at = 0;
	struct stat st;
	bool empty;

	if (spool_seg_parse(name, &w->seg))
		return 0;
	fd = openat(dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	err = 0;
	if (!S_ISREG(st.st_mode)) {
		LOGW("spool: %s: not a regular file, left alone", name);
		goto out;
	}
	size = (uint64_t)st.st_size;
	err = walk_seg(w, name, fd, size);
	if (err)
		goto out;
	rc->r.segments++;
	rc->r.records += w->nrec;
	rc->r.done += w->ndone;
	rc->r.pending += w->nrec - w->ndone;
	rc->r.unreadable += w->nunreadable;
	empty = w->nrec == w->ndone && !w->nunreadable;

	if (w->good < size) {
		/* Never destroy what may be data: if a sound record follows
		 * the bad one, the whole tail goes to a file of its own for an
		 * operator before the segment is cut. */
		found = find_sound_after(fd, w->good, size, &at);
		if (found < 0) {
			err = found;
			goto out;
		}
		if (found) {
			err = set_aside(dfd, fd, name, w->good, size, aside, sizeof(aside));
			if (err) {
				LOGE("spool: %s: cannot set aside its damaged tail: %s", name,
				     strerror(-err));
				goto out;
			}
			LOGE("spool: %s: bad record at offset %" PRIu64
			     " with a sound one at %" PRIu64 " after it: %" PRIu64
			     " bytes copied to %s for inspection",
			     name, w->good, at, size - w->good, aside);
			rc->r.damaged++;
		}
		if (!empty) {
			if (ftruncate(fd, (off_t)w->good) < 0 || fsync(fd) < 0) {
				err = -errno;
				goto out;
			}
		}
		LOGW("spool: %s: torn tail at offset %" PRIu64 ": %" PRIu64 " bytes cut", name,
		     w->good, size - w->good);
		rc->r.torn++;
		rc->r.bytes_cut += size - w->good;
	}
	if (empty) {
		/* Every message in it is done (or there is none): the
		 * directory fsync that makes this durable comes once, after
		 * the last segment, and before any done record is dropped. */
		if (unlinkat(dfd, name, 0) < 0) {
			err = -errno;
			goto out;
		}
		err = note_gone(rc, &w->seg);
		rc->r.deleted++;
		LOGD("spool: %s: all %lu messages done, deleted", name, w->ndone);
	}
out:
	close(fd);
	return err;
}

/* Replaces the done logs by one holding only the records still needed
 * (their message is in a segment that stays), when any record is not. */
static int done_compact(struct recovery *rc, uint64_t start_id)
{
	struct done_set *s = &rc->done;
	int dfd = dirfd(rc->d), fd = -1, err = 0;
	unsigned long kept = 0;
	char name[64], tmp[80];
	unsigned char *out = NULL, *p;
	bool keep;

	if (rc->ngone)
		qsort(rc->gone, rc->ngone, sizeof(*rc->gone), seg_id_cmp);
	for (size_t i = 0; i < s->cap; i++) {
		struct done_ent *e = &s->v[i];

		if (!e->used)
			continue;
		keep = e->matched && !(rc->ngone && bsearch(&e->d.seg, rc->gone, rc->ngone,
		                                            sizeof(*rc->gone), seg_id_cmp));
		e->matched = keep;
		kept += keep;
	}
	rc->r.done_logs = s->nlogs;
	rc->r.done_kept = kept;
	rc->r.done_dropped = (unsigned long)(s->n - kept) + s->dups;
	if (!rc->r.done_dropped && !s->bad_bytes && s->nlogs <= 1 && !rc->w.ncopies)
		return 0; /* (a copy's new mark must reach the disk) */

	done_recovered_name(name, sizeof(name), start_id);
	if (kept) {
		/* New log first, durable, then the old ones go: a crash in
		 * between leaves duplicates, which the next recovery drops. */
		snprintf(tmp, sizeof(tmp), "%s.tmp", name);
		out = malloc(kept * SPOOL_DONE_LEN);
		if (!out)
			return -ENOMEM;
		p = out;
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->v[i].used || !s->v[i].matched)
				continue;
			spool_done_encode(p, &s->v[i].d);
			p += SPOOL_DONE_LEN;
		}
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
		if (fd < 0) {
			err = -errno;
			goto out;
		}
		err = write_full(fd, out, (size_t)(p - out));
		if (!err && fsync(fd) < 0)
			err = -errno;
		close(fd);
		if (!err && renameat(dfd, tmp, dfd, name) < 0)
			err = -errno;
		if (err) {
			unlinkat(dfd, tmp, 0);
			goto out;
		}
		if (fsync(dfd) < 0) {
			err = -errno;
			goto out;
		}
	}
	for (size_t i = 0; i < s->nlogs; i++) {
		if (kept && !strcmp(s->logs[i], name))
			continue;
		if (unlinkat(dfd, s->logs[i], 0) < 0 && errno != ENOENT) {
			err = -errno;
			goto out;
		}
	}
	if (fsync(dfd) < 0)
		err = -errno;
	rc->r.compacted = !err;
	LOGI("spool: done logs: %zu compacted into %s, %lu records kept, %lu dropped", s->nlogs,
	     kept ? name : "none", kept, rc->r.done_dropped);
out:
	free(out);
	return err;
}

/* Deletes the defer logs that no pending message needs: those where no
 * line that wins (the last of its queue id) names a pending message. What
 * `ringmx queue` shows stays the same. Not synced: the logs only inform, and
 * a deletion lost to a crash is done again next time. */
static int defer_prune(struct recovery *rc)
{
	struct defer_set *s = &rc->defer;
	bool *keep;

	rc->r.defer_logs = s->nlogs;
	if (!s->nlogs)
		return 0;
	keep = calloc(s->nlogs, sizeof(*keep));
	if (!keep)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++)
		if (s->v[i].used && s->v[i].needed)
			keep[s->v[i].log] = true;
	for (size_t i = 0; i < s->nlogs; i++) {
		if (keep[i] || !s->logs[i])
			continue;
		if (unlinkat(dirfd(rc->d), s->logs[i], 0) < 0) {
			if (errno != ENOENT)
				LOGW("spool: %s: cannot delete: %s", s->logs[i], strerror(errno));
			continue;
		}
		rc->r.defer_deleted++;
		LOGD("spool: %s: no pending message needs it, deleted", s->logs[i]);
	}
	free(keep);
	return 0;
}

/* Leftovers of a recovery that crashed: copies not yet linked, logs not
 * yet renamed. */
static bool is_stale_tmp(const char *s)
{
	size_t n = strlen(s);

	return ((!strncmp(s, "done-", 5) || !strncmp(s, "hold-", 5)) && n > 8 &&
	        !strcmp(s + n - 8, ".rmx.tmp")) ||
	       (!strncmp(s, "seg-", 4) && n > 16 && !strcmp(s + n - 16, ".rmx.damaged.tmp"));
}

int spool_recover(const char *dir, uint64_t start_id, spool_visit_fn fn, void *arg,
                  struct spool_recovery *out)
{
	struct recovery rc = {
	    .w = {.fn = fn, .arg = arg, .quiet = true, .dedup = true, .mark_copies = true}};
	char **names = NULL;
	int n = 0, i, err;

	rc.d = opendir(dir);
	if (!rc.d)
		return -errno;
	n = list_names(rc.d, is_stale_tmp, &names);
	if (n < 0) {
		err = n;
		goto out_dir;
	}
	for (i = 0; i < n; i++)
		unlinkat(dirfd(rc.d), names[i], 0);
	free_names(names, n);
	names = NULL;

	err = walker_init(&rc.w);
	if (!err)
		err = done_load(rc.d, &rc.done);
	if (!err)
		err = defer_load(rc.d, &rc.defer);
	if (!err)
		err = hold_load(rc.d, &rc.hold);
	if (err)
		goto out;
	rc.w.done = &rc.done;
	rc.w.defer = &rc.defer;
	rc.w.hold = &rc.hold;
	n = list_names(rc.d, is_seg_name, &names);
	if (n < 0) {
		err = n;
		goto out;
	}
	for (i = 0; i < n && !err; i++)
		err = recover_seg(&rc, names[i]);
	free_names(names, n);
	if (!err && rc.r.deleted && fsync(dirfd(rc.d)) < 0)
		err = -errno;
	if (!err)
		err = done_compact(&rc, start_id);
	if (!err)
		err = defer_prune(&rc);
	/* Holds of messages no longer pending go; the others stay, with
	 * their stamps, so that a later release still wins. */
	if (!err)
		err = hold_compact(rc.d, &rc.hold, start_id, &rc.r.held);
	if (!err)
		LOGI("spool: recovered %lu segments: %lu messages pending, %lu done, %lu segments "
		     "deleted, %lu torn tails (%" PRIu64 " bytes) cut, %lu damaged",
		     rc.r.segments, rc.r.pending, rc.r.done, rc.r.deleted, rc.r.torn,
		     rc.r.bytes_cut, rc.r.damaged);
out:
	if (out)
		*out = rc.r;
	free(rc.gone);
	done_free(&rc.done);
	defer_free(&rc.defer);
	hold_free(&rc.hold);
	walker_fini(&rc.w);
out_dir:
	closedir(rc.d);
	return err;
}
