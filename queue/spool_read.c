/* spool_read: reading a spool directory back, for recovery
 * (queue/spool_recover.c) and `ringmx queue` (queue/spool_admin.c), on top
 * of the record format of queue/spool.c. Readers here use plain read(2) and
 * pread(2): they run at start-up or from the CLI, never on a worker. A
 * segment is read front to back through one window buffer; bodies are
 * streamed through it for their CRC unless the caller wants them. The first
 * record that fails a check ends its segment: a torn tail from a crash and
 * an append in progress look the same. Done records are loaded into a hash
 * set first, and hide the messages they name. The workers' defer logs
 * (text, one line per deferral) are loaded the same way for `ringmx queue`,
 * which shows the last deferral of each pending message. queue/ includes
 * core/ only. See spool.h and docs/spool.md. */
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

#define SPOOL_RD_WIN (256u * 1024) /* read window; grows to hold a header and envelope */

static bool seg_id_eq(const struct spool_seg_id *a, const struct spool_seg_id *b)
{
	return a->start == b->start && a->worker == b->worker && a->seq == b->seq;
}

/* Open-addressing tables: the done and defer sets. */

/* Puts the entry at <ent>, a slot of an old table, into its slot of the
 * table <v> of <cap> slots; does nothing when the slot is unused. */
typedef void set_move_fn(void *v, size_t cap, const void *ent);

/* Makes room for one more entry in the table <v> of *<cap> slots of <size>
 * bytes, <n> of them used, so that it stays at most half full and a probe
 * always ends: when it would pass that, a zeroed table of twice the slots
 * (<first> for the first) replaces it, every old slot goes through <move>,
 * and <v> is freed. Returns the table to use (<v> when it had room), or NULL
 * for -ENOMEM with <v> and *<cap> as they were. */
static void *set_grow(void *v, size_t *cap, size_t n, size_t size, size_t first, set_move_fn *move)
{
	size_t ncap;
	void *nv;

	if ((n + 1) * 2 <= *cap)
		return v;
	ncap = *cap ? *cap * 2 : first;
	nv = calloc(ncap, size);
	if (!nv)
		return NULL;
	for (size_t i = 0; i < *cap; i++)
		move(nv, ncap, (const char *)v + i * size);
	free(v);
	*cap = ncap;
	return nv;
}

/* The done set. */

static uint64_t done_hash(const char *qid, const struct spool_seg_id *seg, uint64_t off)
{
	uint64_t h = crc32c(0, qid, strnlen(qid, 32));

	h ^= seg->start * 0x9e3779b97f4a7c15ull;
	h ^= ((uint64_t)seg->worker << 32 | seg->seq) * 0xc2b2ae3d27d4eb4full;
	h ^= off * 0x165667b19e3779f9ull;
	/* splitmix64's finaliser: the low bits pick the slot. */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	return h ^ h >> 31;
}

/* The slot of (qid, seg, off) in table <v> of <cap> slots: its entry, or
 * the free slot it would take. The table is never full (load <= 1/2). */
static struct done_ent *done_slot(struct done_ent *v, size_t cap, const char *qid,
                                  const struct spool_seg_id *seg, uint64_t off)
{
	size_t i = (size_t)done_hash(qid, seg, off) & (cap - 1);
	struct done_ent *e;

	for (;; i = (i + 1) & (cap - 1)) {
		e = &v[i];
		if (!e->used || (e->d.offset == off && seg_id_eq(&e->d.seg, seg) &&
		                 !strncmp(e->d.qid, qid, sizeof(e->d.qid))))
			return e;
	}
}

static void done_move(void *v, size_t cap, const void *ent)
{
	const struct done_ent *e = ent;

	if (e->used)
		*done_slot(v, cap, e->d.qid, &e->d.seg, e->d.offset) = *e;
}

/* Adds <d>; a message already in the set keeps its first result. Returns
 * 0 or -ENOMEM. */
static int done_add(struct done_set *s, const struct spool_done *d)
{
	struct done_ent *e, *v;

	v = set_grow(s->v, &s->cap, s->n, sizeof(*v), 256, done_move);
	if (!v)
		return -ENOMEM;
	s->v = v;
	e = done_slot(s->v, s->cap, d->qid, &d->seg, d->offset);
	if (e->used) {
		s->dups++;
		return 0;
	}
	e->d = *d;
	e->used = true;
	e->matched = false;
	s->n++;
	return 0;
}

/* The copy set. */

static size_t copy_hash(const char *qid, uint32_t crc)
{
	return (size_t)(crc32c(crc, qid, strnlen(qid, 32)) * 0x9e3779b97f4a7c15ull >> 16);
}

static struct copy_ent *copy_slot(struct copy_ent *v, size_t cap, const char *qid, uint32_t crc)
{
	size_t i = copy_hash(qid, crc) & (cap - 1);

	for (;; i = (i + 1) & (cap - 1))
		if (!v[i].used || (v[i].crc == crc && !strncmp(v[i].qid, qid, sizeof(v[i].qid))))
			return &v[i];
}

static void copy_move(void *v, size_t cap, const void *ent)
{
	const struct copy_ent *e = ent;

	if (e->used)
		*copy_slot(v, cap, e->qid, e->crc) = *e;
}

/* Returns 1 when a pending record with <qid> and <crc> was seen before,
 * else records it and returns 0; -ENOMEM. */
static int copy_seen(struct copy_set *s, const char *qid, uint32_t crc)
{
	struct copy_ent *e, *v;

	v = set_grow(s->v, &s->cap, s->n, sizeof(*v), 256, copy_move);
	if (!v)
		return -ENOMEM;
	s->v = v;
	e = copy_slot(s->v, s->cap, qid, crc);
	if (e->used)
		return 1;
	snprintf(e->qid, sizeof(e->qid), "%s", qid);
	e->crc = crc;
	e->used = true;
	s->n++;
	return 0;
}

/* The state of message <m> (SPOOL_PENDING when no done record names it);
 * marks its done record as still needed. */
static enum spool_state done_find(struct done_set *s, const struct spool_msg *m)
{
	struct done_ent *e;

	if (!s || !s->n)
		return SPOOL_PENDING;
	e = done_slot(s->v, s->cap, m->qid, &m->seg, m->offset);
	if (!e->used)
		return SPOOL_PENDING;
	e->matched = true;
	return e->d.result;
}

void done_free(struct done_set *s)
{
	for (size_t i = 0; i < s->nlogs; i++)
		free(s->logs[i]);
	free(s->logs);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

size_t spool_log_scan(const unsigned char *p, size_t len, const char magic[4], size_t reclen,
                      int (*take)(void *arg, const unsigned char *rec), void *arg, int *err)
{
	const unsigned char *q;
	size_t off = 0, bad = 0, next;
	int rc;

	*err = 0;
	while (off < len) {
		if (len - off >= reclen && (rc = take(arg, p + off)) <= 0) {
			if (rc < 0) {
				*err = rc;
				return bad;
			}
			off += reclen;
			continue;
		}
		q = off + 1 < len ? memmem(p + off + 1, len - off - 1, magic, 4) : NULL;
		next = q ? (size_t)(q - p) : len;
		bad += next - off;
		off = next;
	}
	return bad;
}

/* One done record into the set (spool_log_scan's <take>). */
static int done_take(void *arg, const unsigned char *rec)
{
	struct spool_done d;

	return spool_done_decode(rec, &d) ? 1 : done_add(arg, &d);
}

/* Parses the done log <name> (its bytes in <p>, <len> of them) into <s>.
 * A record that fails a check is skipped, and the next one is looked for
 * at the next magic, so a torn or misaligned piece costs only itself. */
static int done_parse(struct done_set *s, const char *name, const unsigned char *p, size_t len)
{
	int err;
	size_t bad = spool_log_scan(p, len, "RMXD", SPOOL_DONE_LEN, done_take, s, &err);

	if (err)
		return err;
	if (bad)
		LOGW("spool: %s: %zu bytes hold no valid done record, ignored", name, bad);
	s->bad_bytes += bad;
	return 0;
}

int done_load(DIR *d, struct done_set *s)
{
	unsigned char *p = NULL;
	struct stat st;
	int n, fd, err = 0;

	n = list_names(d, is_done_name, &s->logs);
	if (n < 0)
		return n;
	s->nlogs = (size_t)n;
	for (size_t i = 0; i < s->nlogs && !err; i++) {
		fd = openat(dirfd(d), s->logs[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			/* Removed since readdir (compacted by a recovery). */
			if (errno != ENOENT)
				err = -errno;
			continue;
		}
		if (fstat(fd, &st) < 0) {
			err = -errno;
		} else if (S_ISREG(st.st_mode) && st.st_size > 0) {
			if ((uint64_t)st.st_size > SIZE_MAX)
				err = -EFBIG;
			else if (!(p = malloc((size_t)st.st_size)))
				err = -ENOMEM;
			/* Appends after the fstat are read next time. */
			else if (!(err = spool_pread(fd, p, (size_t)st.st_size, 0)))
				err = done_parse(s, s->logs[i], p, (size_t)st.st_size);
			else if (err == -ENODATA)
				err = 0; /* shrank under us: nothing here truncates logs */
			free(p);
			p = NULL;
		}
		close(fd);
	}
	return err;
}

/* The defer logs. */

/* The slot of <qid> in table <v> of <cap> slots: its entry, or the free
 * slot it would take. The table is never full (load <= 1/2). */
static struct defer_ent *defer_slot(struct defer_ent *v, size_t cap, const char *qid)
{
	size_t i = crc32c(0, qid, strlen(qid)) & (cap - 1);

	for (;; i = (i + 1) & (cap - 1))
		if (!v[i].used || !strcmp(v[i].qid, qid))
			return &v[i];
}

static void defer_move(void *v, size_t cap, const void *ent)
{
	const struct defer_ent *e = ent;

	if (e->used)
		*defer_slot(v, cap, e->qid) = *e;
}

struct defer_ent *defer_find(struct defer_set *s, const char *qid)
{
	struct defer_ent *e;

	if (!s || !s->n)
		return NULL;
	e = defer_slot(s->v, s->cap, qid);
	return e->used ? e : NULL;
}

/* Adds or replaces the entry of <in>'s queue id; takes <in>'s reply.
 * Returns 0 or -ENOMEM. */
static int defer_put(struct defer_set *s, struct defer_ent *in)
{
	struct defer_ent *e, *v;

	v = set_grow(s->v, &s->cap, s->n, sizeof(*v), 64, defer_move);
	if (!v)
		return -ENOMEM;
	s->v = v;
	e = defer_slot(s->v, s->cap, in->qid);
	if (e->used)
		free(e->reply);
	else
		s->n++;
	*e = *in;
	e->used = true;
	in->reply = NULL;
	return 0;
}

void defer_free(struct defer_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->v[i].reply);
	for (size_t i = 0; i < s->nlogs; i++)
		free(s->logs[i]);
	free(s->logs);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* The length of the tab-free field at <p> (up to <end>). */
static size_t field_len(const char *p, const char *end)
{
	const char *t = memchr(p, '\t', (size_t)(end - p));

	return t ? (size_t)(t - p) : (size_t)(end - p);
}

static size_t cut(size_t n)
{
	return n < DEFER_REPLY_MAX ? n : DEFER_REPLY_MAX;
}

/* Parses one line "<qid>\t<next>\t<attempts>\t<reply>[\t<states>[\t<rcpt
 * reply>]...]" (<len> bytes, its '\n' replaced by a NUL at p[len]) into
 * <e>, the replies copied (each cut to DEFER_REPLY_MAX) into one block.
 * Returns 0, -EINVAL (malformed) or -ENOMEM. */
int defer_line(const char *p, size_t len, struct defer_ent *e)
{
	const char *end = p + len, *tab = memchr(p, '\t', len), *states = NULL, *q;
	uint64_t next, attempts;
	size_t qlen, rlen, nrs = 0, nfields = 0, total;
	char *o;

	memset(e, 0, sizeof(*e));
	if (!tab || memchr(p, '\0', len))
		return -EINVAL;
	qlen = (size_t)(tab - p);
	if (!qlen || qlen > SPOOL_QID_MAX)
		return -EINVAL;
	for (size_t i = 0; i < qlen; i++)
		if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 0x7f)
			return -EINVAL;
	memcpy(e->qid, p, qlen);
	p = tab + 1;
	/* <end> is a '\0' written over the '\n', so parse_dec stops there. */
	if (parse_dec(&p, 1, INT64_MAX, &next) || *p++ != '\t' ||
	    parse_dec(&p, 1, UINT32_MAX, &attempts) || *p++ != '\t')
		return -EINVAL;
	e->next = (int64_t)next;
	e->attempts = (uint32_t)attempts;
	rlen = field_len(p, end);
	total = cut(rlen) + 1;
	if (p + rlen < end) {
		/* The recipients: their states, then as many replies. */
		states = p + rlen + 1;
		nrs = field_len(states, end);
		if (!nrs || nrs > 1u << 20 || strspn(states, "dsf") < nrs)
			return -EINVAL;
		total += nrs + 1;
		for (q = states + nrs; q < end; q += field_len(q, end)) {
			q++; /* the tab */
			if (++nfields > nrs)
				return -EINVAL;
			total += cut(field_len(q, end)) + 1;
		}
		total += nrs - nfields; /* recipients without a reply field */
	}
	o = e->reply = malloc(total);
	if (!o)
		return -ENOMEM;
	memcpy(o, p, cut(rlen));
	o += cut(rlen);
	*o++ = '\0';
	if (!states)
		return 0;
	e->rstates = o;
	e->nrs = nrs;
	memcpy(o, states, nrs);
	o += nrs;
	*o++ = '\0';
	for (q = states + nrs; q < end; q += field_len(q, end)) {
		size_t n = cut(field_len(++q, end));

		memcpy(o, q, n);
		o += n;
		*o++ = '\0';
	}
	for (; nfields < nrs; nfields++)
		*o++ = '\0';
	return 0;
}

char defer_rcpt(const struct defer_ent *e, unsigned i, const char **reply)
{
	const char *r;

	*reply = NULL;
	if (!e || !e->rstates || i >= e->nrs)
		return '\0';
	r = e->rstates + e->nrs + 1;
	for (unsigned k = 0; k < i; k++)
		r += strlen(r) + 1;
	*reply = *r ? r : NULL;
	return e->rstates[i];
}

/* Reads defer log <i> of <s>, open at <fd> (taken). A last line without
 * its '\n' is a write in progress or torn by a crash, and is ignored.
 * Returns 0 or -ENOMEM; a read error is logged and ends this log, whose
 * name is then dropped from s->logs (read in part: recovery keeps it). */
static int defer_read(struct defer_set *s, size_t i, int fd)
{
	struct defer_ent e;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int err = 0;

	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -errno;
	}
	while (!err && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] != '\n')
			break;
		line[--n] = '\0';
		err = defer_line(line, (size_t)n, &e);
		if (!err) {
			e.log = i;
			err = defer_put(s, &e);
			free(e.reply);
		} else if (err == -EINVAL) {
			s->bad++;
			err = 0;
		}
	}
	if (!err && ferror(f)) {
		err = errno == ENOMEM ? -ENOMEM : 0;
		LOGW("spool: %s: read error, rest of the defer log ignored", s->logs[i]);
		free(s->logs[i]);
		s->logs[i] = NULL;
	}
	free(line);
	fclose(f);
	return err;
}

int defer_load(DIR *d, struct defer_set *s)
{
	struct stat st;
	int n, fd, err = 0;

	n = list_names(d, is_defer_name, &s->logs);
	if (n < 0)
		return n;
	s->nlogs = (size_t)n;
	for (size_t i = 0; i < s->nlogs && !err; i++) {
		fd = openat(dirfd(d), s->logs[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			/* ENOENT: removed since readdir (by a recovery). */
			if (errno != ENOENT)
				LOGW("spool: %s: %s, defer log ignored", s->logs[i],
				     strerror(errno));
		} else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			LOGW("spool: %s: not a regular file, left alone", s->logs[i]);
			close(fd);
		} else {
			err = defer_read(s, i, fd);
			continue;
		}
		free(s->logs[i]);
		s->logs[i] = NULL;
	}
	if (s->bad)
		LOGW("spool: defer logs: %lu malformed lines ignored", s->bad);
	return err;
}

/* The reader window. */

/* Makes <n> bytes available at win + pos. Returns 0, -ENODATA when the file
 * ended first (it shrank under us) or -errno. */
static int rd_fill(struct spool_rd *rd, size_t n)
{
	ssize_t got;
	size_t want;

	if (rd->end - rd->pos >= n)
		return 0;
	if (rd->pos) {
		memmove(rd->win, rd->win + rd->pos, rd->end - rd->pos);
		rd->end -= rd->pos;
		rd->pos = 0;
	}
	if (n > rd->cap) {
		char *w = realloc(rd->win, n);

		if (!w)
			return -ENOMEM;
		rd->win = w;
		rd->cap = n;
	}
	while (rd->end < n) {
		want = rd->cap - rd->end;
		if (want > rd->left)
			want = (size_t)rd->left;
		if (!want)
			return -ENODATA;
		got = read(rd->fd, rd->win + rd->end, want);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -ENODATA;
		rd->end += (size_t)got;
		rd->left -= (uint64_t)got;
	}
	return 0;
}

/* Consumes the next <n> bytes into *<crc>, copying them to <dst> unless it
 * is NULL. Large copies bypass the window. Returns 0, -ENODATA or -errno. */
static int rd_stream(struct spool_rd *rd, uint64_t n, uint32_t *crc, char *dst)
{
	ssize_t got;
	size_t k;
	int err;

	while (n) {
		if (dst && rd->pos == rd->end && n >= rd->cap) {
			k = n > SSIZE_MAX ? SSIZE_MAX : (size_t)n;
			if (k > rd->left)
				return -ENODATA;
			got = read(rd->fd, dst, k);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				return -errno;
			if (got == 0)
				return -ENODATA;
			rd->left -= (uint64_t)got;
			*crc = crc32c(*crc, dst, (size_t)got);
			dst += got;
			n -= (uint64_t)got;
			continue;
		}
		err = rd_fill(rd, 1);
		if (err)
			return err;
		k = rd->end - rd->pos;
		if (k > n)
			k = (size_t)n;
		*crc = crc32c(*crc, rd->win + rd->pos, k);
		if (dst) {
			memcpy(dst, rd->win + rd->pos, k);
			dst += k;
		}
		rd->pos += k;
		n -= k;
	}
	return 0;
}

/* The walker. */

int walk_seg(struct spool_walker *w, const char *name, int fd, uint64_t size)
{
	unsigned char h[SPOOL_HDR_LEN];
	struct spool_rd *rd = &w->rd;
	uint64_t off = 0, body_len;
	uint32_t env_len, crc;
	struct spool_msg m;
	const char *why;
	int err;

	rd->fd = fd;
	rd->pos = rd->end = 0;
	rd->left = size;
	w->good = 0;
	w->nrec = w->ndone = w->nunreadable = 0;
	while (off < size) {
		w->good = off;
		why = "truncated";
		if (size - off < SPOOL_HDR_LEN)
			goto bad;
		err = rd_fill(rd, SPOOL_HDR_LEN);
		if (err == -ENODATA)
			goto bad;
		if (err)
			return err;
		memcpy(h, rd->win + rd->pos, sizeof(h));
		why = "bad header";
		if (hdr_check(h, &env_len, &body_len))
			goto bad;
		why = "truncated";
		if (SPOOL_HDR_LEN + env_len + body_len > size - off)
			goto bad;

		crc = spool_rec_crc_start(h);
		err = rd_fill(rd, SPOOL_HDR_LEN + env_len);
		if (err == -ENODATA)
			goto bad;
		if (err)
			return err;
		rd->pos += SPOOL_HDR_LEN;
		crc = crc32c(crc, rd->win + rd->pos, env_len);
		buf_reset(&w->env, 64 * 1024);
		buf_reset(&w->rcpts, 64 * 1024);
		if (buf_append(&w->env, rd->win + rd->pos, env_len) || buf_reserve(&w->env, 0) ||
		    buf_reserve(&w->rcpts, env_len))
			return -ENOMEM;
		rd->pos += env_len;
		if (w->with_body) {
			buf_reset(&w->body, 1024 * 1024);
			if (buf_reserve(&w->body, (size_t)body_len))
				return -ENOMEM;
			w->body.p[body_len] = '\0';
		}
		err = rd_stream(rd, body_len, &crc, w->with_body ? w->body.p : NULL);
		if (err == -ENODATA)
			goto bad;
		if (err)
			return err;
		why = "bad crc";
		if (spool_rec_verify(h, crc))
			goto bad;

		memset(&m, 0, sizeof(m));
		m.body_len = body_len;
		m.body = w->with_body ? w->body.p : NULL;
		m.segment = name;
		m.offset = off;
		m.seg = w->seg;
		m.rec_len = SPOOL_HDR_LEN + env_len + body_len;
		off += m.rec_len;
		w->good = off;
		if (env_parse(w->env.p, w->env.len, w->rcpts.p, &m)) {
			/* The frame is sound (crc), only its content is not:
			 * skip this record alone. */
			LOGW("spool: %s: offset %" PRIu64 ": unreadable envelope, record skipped",
			     name, m.offset);
			w->nunreadable++;
			continue;
		}
		w->nrec++;
		m.state = done_find(w->done, &m);
		if (m.state == SPOOL_PENDING && w->dedup) {
			err = copy_seen(&w->copies, m.qid, crc);
			if (err < 0)
				return err;
			if (err) {
				m.state = SPOOL_MOVED;
				w->ncopies++;
				LOGI("spool: %s: offset %" PRIu64 ": id=%s is a copy of a pending "
				     "record seen before: counted as moved",
				     name, m.offset, m.qid);
				if (w->mark_copies && w->done) {
					struct spool_done d = {.seg = m.seg,
					                       .offset = m.offset,
					                       .result = SPOOL_MOVED};

					snprintf(d.qid, sizeof(d.qid), "%s", m.qid);
					err = done_add(w->done, &d);
					if (err)
						return err;
					done_find(w->done, &m); /* matched: kept */
				}
			}
		}
		if (m.state != SPOOL_PENDING) {
			w->ndone++;
			if (!w->all)
				continue;
		} else if (w->defer) {
			struct defer_ent *de = defer_find(w->defer, m.qid);

			if (de)
				de->needed = true;
		}
		if (m.state == SPOOL_PENDING && w->hold) {
			struct hold_ent *he = hold_find(w->hold, m.qid);

			if (he) {
				he->needed = true;
				he->quarantined = *m.quarantine != '\0';
			}
		}
		err = w->fn ? w->fn(w->arg, &m) : 0;
		if (err)
			return err;
	}
	return 0;
bad:
	if (w->quiet)
		return 0;
	/* A tail cut short is what an append in progress looks like; anything
	 * else means the disk or a crash left garbage. */
	if (!strcmp(why, "truncated"))
		LOGD("spool: %s: offset %" PRIu64 ": %s tail, %" PRIu64 " bytes ignored", name, off,
		     why, size - off);
	else
		LOGW("spool: %s: offset %" PRIu64 ": %s, %" PRIu64 " bytes ignored", name, off, why,
		     size - off);
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void free_names(char **v, int n)
{
	while (n > 0)
		free(v[--n]);
	free(v);
}

int list_names(DIR *d, bool (*want)(const char *), char ***names)
{
	char **v = NULL, **nv;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int err = 0;

	rewinddir(d);
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			err = -errno;
			break;
		}
		if (!want(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				err = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n] = strdup(de->d_name);
		if (!v[n]) {
			err = -ENOMEM;
			break;
		}
		n++;
	}
	if (!err && n > INT32_MAX)
		err = -EOVERFLOW;
	if (err) {
		free_names(v, (int)n);
		return err;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_name);
	*names = v;
	return (int)n;
}

int walker_init(struct spool_walker *w)
{
	w->env = (struct buf)BUF_INIT;
	w->rcpts = (struct buf)BUF_INIT;
	w->body = (struct buf)BUF_INIT;
	w->rd.cap = SPOOL_RD_WIN;
	w->rd.win = malloc(w->rd.cap);
	return w->rd.win ? 0 : -ENOMEM;
}

void walker_fini(struct spool_walker *w)
{
	free(w->rd.win);
	w->rd.win = NULL;
	buf_free(&w->env);
	buf_free(&w->rcpts);
	buf_free(&w->body);
	free(w->copies.v);
	w->copies = (struct copy_set){0};
}

int walk_dir(const char *dir, struct spool_walker *w)
{
	struct done_set ds = {0};
	char **names = NULL;
	struct stat st;
	int n = 0, i, fd, err;
	DIR *d;

	d = opendir(dir);
	if (!d)
		return -errno;
	err = walker_init(w);
	if (!err)
		err = done_load(d, &ds);
	if (!err)
		n = list_names(d, is_seg_name, &names);
	if (n < 0)
		err = n;
	w->done = &ds;
	for (i = 0; i < n && !err; i++) {
		fd = openat(dirfd(d), names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			/* Removed since readdir (a finished segment). */
			if (errno != ENOENT)
				err = -errno;
			continue;
		}
		if (fstat(fd, &st) < 0)
			err = -errno;
		else if (S_ISREG(st.st_mode) && !spool_seg_parse(names[i], &w->seg))
			err = walk_seg(w, names[i], fd, (uint64_t)st.st_size);
		close(fd);
	}
	w->done = NULL;
	if (n > 0)
		free_names(names, n);
	done_free(&ds);
	walker_fini(w);
	closedir(d);
	return err;
}

int spool_walk(const char *dir, bool with_body, spool_visit_fn fn, void *arg)
{
	struct spool_walker w = {.with_body = with_body, .dedup = true, .fn = fn, .arg = arg};

	return walk_dir(dir, &w);
}
