/* spool: the record format of accepted messages, the done log, and the
 * readers that walk segments back (recovery at start-up, `ringmx queue`).
 * The writer side is only spool_rec_build() and spool_done_encode(): io/
 * appends their output through the ring and fdatasyncs before the 250 (or
 * before it forgets a delivered message). Readers here use plain read(2):
 * they run at start-up or from the CLI, never on a worker. A segment is
 * read front to back through one window buffer; bodies are streamed
 * through it for their CRC unless the caller wants them. The first record
 * that fails a check ends its segment: a torn tail from a crash and an
 * append in progress look the same. Done records are loaded into a hash set
 * first, and hide the messages they name. The relay's defer logs (text, one
 * line per deferral) are loaded the same way for `ringmx queue`, which shows
 * the last deferral of each pending message. spool_recover() cuts torn
 * tails, sets damaged ones aside, deletes finished segments, compacts the
 * done logs and deletes the defer logs no pending message needs. queue/
 * includes core/ only. See spool.h and docs/spool.md. */
#include "queue/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

_Static_assert(sizeof(struct spool_rec_hdr) == SPOOL_HDR_LEN, "record header is 32 bytes");

#define SPOOL_RD_WIN (256u * 1024) /* read window; grows to hold a header and envelope */

/* Byte offsets of the header fields on disk (little-endian). */
#define HDR_MAGIC    0
#define HDR_VERSION  4
#define HDR_ENV_LEN  8
#define HDR_CRC      12
#define HDR_BODY_LEN 16
#define HDR_RESERVED 24

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* Checks the record header at <h> (magic, version, limits; not the crc,
 * which covers the whole record) and gives its lengths. The one test of a
 * header: the walker, recovery and spool_rec_len() all use it. Returns 0 or
 * -EINVAL. */
static int hdr_check(const unsigned char *h, uint32_t *env_len, uint64_t *body_len)
{
	*env_len = get_le32(h + HDR_ENV_LEN);
	*body_len = get_le64(h + HDR_BODY_LEN);
	if (get_le32(h + HDR_MAGIC) != SPOOL_MAGIC || get_le32(h + HDR_VERSION) != SPOOL_VERSION ||
	    *env_len > SPOOL_ENV_MAX || *body_len > SPOOL_BODY_MAX)
		return -EINVAL;
	return 0;
}

/* A value may hold anything but the line end; NULL stands for "". */
static bool env_value_ok(const char *v)
{
	return !v || !strchr(v, '\n');
}

static int env_line(struct buf *out, const char *key, const char *v)
{
	return buf_printf(out, "%s %s\n", key, v ? v : "");
}

int spool_rec_build(struct buf *out, const struct spool_env *e, const struct iovec *body,
                    unsigned nbody)
{
	static const unsigned char zero[SPOOL_HDR_LEN];
	size_t start = out->len, env_len;
	uint64_t body_len = 0;
	const char *r;
	unsigned char *h;
	uint32_t crc;
	int err;

	if (!e->qid || !*e->qid || strlen(e->qid) > SPOOL_QID_MAX || !env_value_ok(e->qid) ||
	    !env_value_ok(e->client) || !env_value_ok(e->helo) || !env_value_ok(e->from) ||
	    (e->nrcpt && !e->rcpts))
		return -EINVAL;
	r = e->rcpts;
	for (unsigned i = 0; i < e->nrcpt; i++, r += strlen(r) + 1)
		if (!env_value_ok(r))
			return -EINVAL;
	for (unsigned i = 0; i < nbody; i++) {
		if (body[i].iov_len > SPOOL_BODY_MAX - body_len)
			return -EINVAL;
		body_len += body[i].iov_len;
	}

	err = buf_append(out, zero, sizeof(zero));
	if (err)
		goto fail;
	err = buf_printf(out, "id %s\narrival %lld\n", e->qid, (long long)e->arrival);
	if (!err)
		err = env_line(out, "client", e->client);
	if (!err)
		err = env_line(out, "helo", e->helo);
	if (!err)
		err = env_line(out, "from", e->from);
	r = e->rcpts;
	for (unsigned i = 0; !err && i < e->nrcpt; i++, r += strlen(r) + 1)
		err = env_line(out, "rcpt", r);
	if (!err)
		err = buf_printf(out, "body %s\nsmtputf8 %d\n", e->body_8bit ? "8BITMIME" : "7BIT",
		                 e->smtputf8 ? 1 : 0);
	if (err)
		goto fail;
	env_len = out->len - start - SPOOL_HDR_LEN;
	if (env_len > SPOOL_ENV_MAX) {
		err = -EINVAL;
		goto fail;
	}

	h = (unsigned char *)out->p + start;
	put_le32(h + HDR_MAGIC, SPOOL_MAGIC);
	put_le32(h + HDR_VERSION, SPOOL_VERSION);
	put_le32(h + HDR_ENV_LEN, (uint32_t)env_len);
	put_le32(h + HDR_CRC, 0);
	put_le64(h + HDR_BODY_LEN, body_len);
	put_le64(h + HDR_RESERVED, 0);
	crc = crc32c(0, h, SPOOL_HDR_LEN + env_len);
	for (unsigned i = 0; i < nbody; i++)
		crc = crc32c(crc, body[i].iov_base, body[i].iov_len);
	put_le32(h + HDR_CRC, crc);
	return 0;
fail:
	/* Leave <out> as it came: the caller may have other records in it. */
	out->len = start;
	if (out->p)
		out->p[start] = '\0';
	return err;
}

void spool_seg_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq)
{
	snprintf(name, len, "seg-%016llx-%02u-%06u.rmx", (unsigned long long)start_id, worker, seq);
}

/* Reads a decimal number of at least <min> digits at *<pp>, at most <max>.
 * Returns 0 and moves *<pp> past it, or -EINVAL. */
static int parse_dec(const char **pp, unsigned min, uint64_t max, uint64_t *v)
{
	const char *p = *pp;
	unsigned n = 0;

	*v = 0;
	for (; *p >= '0' && *p <= '9'; p++, n++) {
		if (*v > (max - (uint64_t)(*p - '0')) / 10)
			return -EINVAL;
		*v = *v * 10 + (uint64_t)(*p - '0');
	}
	if (n < min)
		return -EINVAL;
	*pp = p;
	return 0;
}

int spool_seg_parse(const char *name, struct spool_seg_id *id)
{
	const char *p = name;
	uint64_t start = 0, worker, seq;
	char canon[64];

	if (strncmp(p, "seg-", 4))
		return -EINVAL;
	p += 4;
	for (int i = 0; i < 16; i++, p++) {
		if (*p >= '0' && *p <= '9')
			start = start << 4 | (uint64_t)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			start = start << 4 | (uint64_t)(*p - 'a' + 10);
		else
			return -EINVAL;
	}
	if (*p++ != '-' || parse_dec(&p, 2, 0xffff, &worker) || *p++ != '-' ||
	    parse_dec(&p, 6, UINT32_MAX, &seq) || strcmp(p, ".rmx"))
		return -EINVAL;
	/* Only the spelling spool_seg_name() gives: no extra leading zeros. */
	spool_seg_name(canon, sizeof(canon), start, (unsigned)worker, (unsigned)seq);
	if (strcmp(canon, name))
		return -EINVAL;
	id->start = start;
	id->worker = (uint32_t)worker;
	id->seq = (uint32_t)seq;
	return 0;
}

static bool seg_id_eq(const struct spool_seg_id *a, const struct spool_seg_id *b)
{
	return a->start == b->start && a->worker == b->worker && a->seq == b->seq;
}

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

/* The done log. */

/* Byte offsets of the done record fields on disk (little-endian). */
#define DONE_MAGIC      0
#define DONE_CRC        4 /* crc32c of the 64 bytes with this field 0 */
#define DONE_SEG_START  8
#define DONE_OFFSET     16
#define DONE_SEG_SEQ    24
#define DONE_SEG_WORKER 28 /* 16 bits */
#define DONE_RESULT     30 /* 8 bits: enum spool_state */
#define DONE_VERSION    31 /* 8 bits */
#define DONE_QID        32 /* 32 bytes, NUL-padded */

_Static_assert(DONE_QID + 32 == SPOOL_DONE_LEN, "done record is 64 bytes");

void spool_done_name(char *name, size_t len, uint64_t start_id, unsigned worker)
{
	snprintf(name, len, "done-%016llx-%02u.rmx", (unsigned long long)start_id, worker);
}

/* The name of the log that recovery compacts the done logs into. */
static void done_recovered_name(char *name, size_t len, uint64_t start_id)
{
	snprintf(name, len, "done-%016llx-recovered.rmx", (unsigned long long)start_id);
}

static bool state_ok(enum spool_state s)
{
	return s == SPOOL_DELIVERED || s == SPOOL_BOUNCED || s == SPOOL_DELETED;
}

int spool_done_encode(void *buf, const struct spool_done *d)
{
	unsigned char *p = buf;
	size_t qlen = strnlen(d->qid, sizeof(d->qid));

	if (!qlen || qlen > SPOOL_QID_MAX || !state_ok(d->result) || d->seg.worker > 0xffff)
		return -EINVAL;
	memset(p, 0, SPOOL_DONE_LEN);
	put_le32(p + DONE_MAGIC, SPOOL_DONE_MAGIC);
	put_le64(p + DONE_SEG_START, d->seg.start);
	put_le64(p + DONE_OFFSET, d->offset);
	put_le32(p + DONE_SEG_SEQ, d->seg.seq);
	p[DONE_SEG_WORKER] = (unsigned char)d->seg.worker;
	p[DONE_SEG_WORKER + 1] = (unsigned char)(d->seg.worker >> 8);
	p[DONE_RESULT] = (unsigned char)d->result;
	p[DONE_VERSION] = SPOOL_DONE_VERSION;
	memcpy(p + DONE_QID, d->qid, qlen);
	put_le32(p + DONE_CRC, crc32c(0, p, SPOOL_DONE_LEN));
	return 0;
}

int spool_done_decode(const void *buf, struct spool_done *d)
{
	unsigned char r[SPOOL_DONE_LEN];
	size_t qlen;

	memcpy(r, buf, sizeof(r));
	if (get_le32(r + DONE_MAGIC) != SPOOL_DONE_MAGIC || r[DONE_VERSION] != SPOOL_DONE_VERSION)
		return -EINVAL;
	put_le32(r + DONE_CRC, 0);
	if (crc32c(0, r, sizeof(r)) != get_le32((const unsigned char *)buf + DONE_CRC))
		return -EINVAL;
	qlen = strnlen((const char *)r + DONE_QID, 32);
	if (!qlen || qlen > SPOOL_QID_MAX || !state_ok((enum spool_state)r[DONE_RESULT]))
		return -EINVAL;
	/* The padding is zero: one message has one spelling on disk. */
	for (size_t i = qlen; i < 32; i++)
		if (r[DONE_QID + i])
			return -EINVAL;
	memset(d, 0, sizeof(*d));
	memcpy(d->qid, r + DONE_QID, qlen);
	d->seg.start = get_le64(r + DONE_SEG_START);
	d->seg.worker = (uint32_t)r[DONE_SEG_WORKER] | (uint32_t)r[DONE_SEG_WORKER + 1] << 8;
	d->seg.seq = get_le32(r + DONE_SEG_SEQ);
	d->offset = get_le64(r + DONE_OFFSET);
	d->result = (enum spool_state)r[DONE_RESULT];
	return 0;
}

/* Writes all <n> bytes at <p>. Returns 0, -errno or -EIO (no progress). */
static int write_full(int fd, const void *p, size_t n)
{
	const char *c = p;
	ssize_t got;

	while (n) {
		got = write(fd, c, n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EIO;
		c += got;
		n -= (size_t)got;
	}
	return 0;
}

/* Reads all <n> bytes at <off>. Returns 0, -ENODATA (end of file first)
 * or -errno. */
int spool_pread(int fd, void *p, size_t n, uint64_t off)
{
	char *c = p;
	ssize_t got;

	while (n) {
		got = pread(fd, c, n, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -ENODATA;
		c += got;
		n -= (size_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

int spool_done_append_fd(int fd, const struct spool_done *d)
{
	unsigned char r[SPOOL_DONE_LEN];
	int err;

	err = spool_done_encode(r, d);
	if (err)
		return err;
	/* One write of 64 bytes; if it is cut short the reader skips the
	 * piece and finds the next record by its magic. */
	err = write_full(fd, r, sizeof(r));
	if (err)
		return err;
	if (fdatasync(fd) < 0)
		return -errno;
	return 0;
}

/* The done set: every done record of the directory in an open-addressing
 * hash table keyed by (qid, segment, offset). Loaded once per walk or
 * recovery; a record names one message, so lookups are exact. */
struct done_ent {
	struct spool_done d;
	bool used;
	bool matched; /* a valid record of a segment answered to it */
};

struct done_set {
	struct done_ent *v;
	size_t cap; /* a power of two, or 0 */
	size_t n;
	unsigned long dups; /* records that named a message already in the set */
	uint64_t bad_bytes; /* bytes of done logs that held no valid record */
	char **logs;        /* names of the done logs read */
	size_t nlogs;
};

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

/* The slot of (qid, seg, off): its entry, or the free slot it would take.
 * The table is never full (load <= 1/2). */
static struct done_ent *done_slot(struct done_set *s, const char *qid,
                                  const struct spool_seg_id *seg, uint64_t off)
{
	size_t i = (size_t)done_hash(qid, seg, off) & (s->cap - 1);
	struct done_ent *e;

	for (;; i = (i + 1) & (s->cap - 1)) {
		e = &s->v[i];
		if (!e->used || (e->d.offset == off && seg_id_eq(&e->d.seg, seg) &&
		                 !strncmp(e->d.qid, qid, sizeof(e->d.qid))))
			return e;
	}
}

/* Adds <d>; a message already in the set keeps its first result. Returns
 * 0 or -ENOMEM. */
static int done_add(struct done_set *s, const struct spool_done *d)
{
	struct done_ent *e, *old = s->v;
	size_t oldcap = s->cap;

	if ((s->n + 1) * 2 > s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->v = calloc(s->cap, sizeof(*s->v));
		if (!s->v) {
			s->v = old;
			s->cap = oldcap;
			return -ENOMEM;
		}
		for (size_t i = 0; i < oldcap; i++)
			if (old[i].used)
				*done_slot(s, old[i].d.qid, &old[i].d.seg, old[i].d.offset) =
				    old[i];
		free(old);
	}
	e = done_slot(s, d->qid, &d->seg, d->offset);
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

/* The state of message <m> (SPOOL_PENDING when no done record names it);
 * marks its done record as still needed. */
static enum spool_state done_find(struct done_set *s, const struct spool_msg *m)
{
	struct done_ent *e;

	if (!s || !s->n)
		return SPOOL_PENDING;
	e = done_slot(s, m->qid, &m->seg, m->offset);
	if (!e->used)
		return SPOOL_PENDING;
	e->matched = true;
	return e->d.result;
}

static void done_free(struct done_set *s)
{
	for (size_t i = 0; i < s->nlogs; i++)
		free(s->logs[i]);
	free(s->logs);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* Parses the done log <name> (its bytes in <p>, <len> of them) into <s>.
 * A record that fails a check is skipped, and the next one is looked for
 * at the next magic, so a torn or misaligned piece costs only itself. */
static int done_parse(struct done_set *s, const char *name, const unsigned char *p, size_t len)
{
	static const unsigned char magic[4] = {'R', 'M', 'X', 'D'};
	struct spool_done d;
	const unsigned char *q;
	size_t off = 0, bad = 0, next;
	int err;

	while (off < len) {
		if (len - off >= SPOOL_DONE_LEN && !spool_done_decode(p + off, &d)) {
			err = done_add(s, &d);
			if (err)
				return err;
			off += SPOOL_DONE_LEN;
			continue;
		}
		q = off + 1 < len ? memmem(p + off + 1, len - off - 1, magic, sizeof(magic)) : NULL;
		next = q ? (size_t)(q - p) : len;
		bad += next - off;
		off = next;
	}
	if (bad)
		LOGW("spool: %s: %zu bytes hold no valid done record, ignored", name, bad);
	s->bad_bytes += bad;
	return 0;
}

static bool is_done_name(const char *s)
{
	size_t n = strlen(s);

	return n > 9 && !strncmp(s, "done-", 5) && !strcmp(s + n - 4, ".rmx");
}

static int list_names(DIR *d, bool (*want)(const char *), char ***names);

/* Loads every done log of <d> into <s> (empty on entry). Returns 0 or
 * -errno. */
static int done_load(DIR *d, struct done_set *s)
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

#define DEFER_REPLY_MAX 1024u /* bytes of a last reply kept; the rest is cut */

void spool_defer_name(char *name, size_t len, uint64_t start_id, unsigned worker)
{
	snprintf(name, len, "defer-%016llx-%02u.log", (unsigned long long)start_id, worker);
}

/* Whether <s> is a defer log name exactly as spool_defer_name() writes it. */
static bool is_defer_name(const char *s)
{
	const char *p = s + 6;
	uint64_t start = 0, worker;
	char canon[64];

	if (strncmp(s, "defer-", 6))
		return false;
	for (int i = 0; i < 16; i++, p++) {
		if (*p >= '0' && *p <= '9')
			start = start << 4 | (uint64_t)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			start = start << 4 | (uint64_t)(*p - 'a' + 10);
		else
			return false;
	}
	if (*p++ != '-' || parse_dec(&p, 2, 0xffff, &worker) || strcmp(p, ".log"))
		return false;
	spool_defer_name(canon, sizeof(canon), start, (unsigned)worker);
	return !strcmp(canon, s);
}

/* The last deferral of one queue id. */
struct defer_ent {
	char qid[SPOOL_QID_MAX + 1];
	bool used;
	bool needed;  /* a pending message has this queue id (recovery) */
	size_t log;   /* index in defer_set.logs of the log the line came from */
	int64_t next; /* next attempt, seconds since the epoch */
	uint32_t attempts;
	char *reply; /* NUL-terminated, at most DEFER_REPLY_MAX bytes */
};

/* Every defer log of the directory in an open-addressing hash table keyed by
 * queue id: the last line of a queue id wins (logs in name order, lines in
 * file order). A queue id holds the gateway's clock and worker, so two
 * messages sharing one (across starts) is not expected; if they did, both
 * would show the later line. */
struct defer_set {
	struct defer_ent *v;
	size_t cap; /* a power of two, or 0 */
	size_t n;
	unsigned long bad; /* malformed lines skipped */
	char **logs;       /* names of the defer logs; NULL where one could not be read */
	size_t nlogs;
};

/* The slot of <qid>: its entry, or the free slot it would take. The table is
 * never full (load <= 1/2). */
static struct defer_ent *defer_slot(struct defer_set *s, const char *qid)
{
	size_t i = crc32c(0, qid, strlen(qid)) & (s->cap - 1);

	for (;; i = (i + 1) & (s->cap - 1))
		if (!s->v[i].used || !strcmp(s->v[i].qid, qid))
			return &s->v[i];
}

static struct defer_ent *defer_find(struct defer_set *s, const char *qid)
{
	struct defer_ent *e;

	if (!s || !s->n)
		return NULL;
	e = defer_slot(s, qid);
	return e->used ? e : NULL;
}

/* Adds or replaces the entry of <in>'s queue id; takes <in>'s reply.
 * Returns 0 or -ENOMEM. */
static int defer_put(struct defer_set *s, struct defer_ent *in)
{
	struct defer_ent *e, *old = s->v;
	size_t oldcap = s->cap;

	if ((s->n + 1) * 2 > s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = calloc(s->cap, sizeof(*s->v));
		if (!s->v) {
			s->v = old;
			s->cap = oldcap;
			return -ENOMEM;
		}
		for (size_t i = 0; i < oldcap; i++)
			if (old[i].used)
				*defer_slot(s, old[i].qid) = old[i];
		free(old);
	}
	e = defer_slot(s, in->qid);
	if (e->used)
		free(e->reply);
	else
		s->n++;
	*e = *in;
	e->used = true;
	in->reply = NULL;
	return 0;
}

static void defer_free(struct defer_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->v[i].reply);
	for (size_t i = 0; i < s->nlogs; i++)
		free(s->logs[i]);
	free(s->logs);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* Parses one line "<qid>\t<next>\t<attempts>\t<reply>" (<len> bytes, its
 * '\n' replaced by a NUL at p[len]) into <e>, the reply copied (cut to
 * DEFER_REPLY_MAX). Returns 0, -EINVAL (malformed) or -ENOMEM. */
static int defer_line(const char *p, size_t len, struct defer_ent *e)
{
	const char *end = p + len, *tab = memchr(p, '\t', len);
	uint64_t next, attempts;
	size_t qlen;

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
	    parse_dec(&p, 1, UINT32_MAX, &attempts) || *p++ != '\t' ||
	    memchr(p, '\t', (size_t)(end - p)))
		return -EINVAL;
	e->next = (int64_t)next;
	e->attempts = (uint32_t)attempts;
	e->reply =
	    strndup(p, (size_t)(end - p) < DEFER_REPLY_MAX ? (size_t)(end - p) : DEFER_REPLY_MAX);
	return e->reply ? 0 : -ENOMEM;
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

/* Loads every defer log of <d> into <s> (empty on entry). A log that cannot
 * be opened is logged and skipped (its name dropped from s->logs): the logs
 * only inform. Returns 0 or -errno (-ENOMEM, or reading <d> failed). */
static int defer_load(DIR *d, struct defer_set *s)
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

/* Reading back. */

/* Parses the envelope at <env>: <len> bytes, writable, followed by a NUL.
 * Cuts it into C strings in place and points m's client, helo and from
 * into it; copies the recipients back to back into <rcpts>, which has room
 * for <len> bytes (each "rcpt <v>\n" line is longer than "<v>\0"). Fills
 * qid, arrival, client, helo, from, rcpts, nrcpt, body_8bit and smtputf8
 * only. Unknown keys are skipped, so that a later version may add lines.
 * Never allocates. The one envelope parser: the walker and
 * spool_rec_parse() both use it. Returns 0 or -EINVAL. */
static int env_parse(char *env, size_t len, char *rcpts, struct spool_msg *m)
{
	char *p = env, *end = env + len, *nl, *sp, *v, *e, *r = rcpts;
	bool have_id = false, have_arrival = false, have_from = false;
	long long t;

	if (!len || end[-1] != '\n' || memchr(p, '\0', len))
		return -EINVAL;
	m->client = m->helo = m->from = "";
	m->nrcpt = 0;
	m->body_8bit = m->smtputf8 = false;
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		*nl = '\0';
		sp = strchr(p, ' ');
		if (sp) {
			*sp = '\0';
			v = sp + 1;
		} else {
			v = nl;
		}
		if (!strcmp(p, "id")) {
			if (!*v || (size_t)(nl - v) > SPOOL_QID_MAX)
				return -EINVAL;
			memcpy(m->qid, v, (size_t)(nl - v) + 1);
			have_id = true;
		} else if (!strcmp(p, "arrival")) {
			errno = 0;
			t = strtoll(v, &e, 10);
			if (e == v || *e || errno)
				return -EINVAL;
			m->arrival = (time_t)t;
			have_arrival = true;
		} else if (!strcmp(p, "client")) {
			m->client = v;
		} else if (!strcmp(p, "helo")) {
			m->helo = v;
		} else if (!strcmp(p, "from")) {
			m->from = v;
			have_from = true;
		} else if (!strcmp(p, "rcpt")) {
			memcpy(r, v, (size_t)(nl - v) + 1);
			r += (nl - v) + 1;
			m->nrcpt++;
		} else if (!strcmp(p, "body")) {
			m->body_8bit = !strcmp(v, "8BITMIME");
		} else if (!strcmp(p, "smtputf8")) {
			m->smtputf8 = !strcmp(v, "1");
		}
	}
	if (!have_id || !have_arrival || !have_from)
		return -EINVAL;
	m->rcpts = m->nrcpt ? rcpts : "";
	return 0;
}

int spool_rec_len(const void *hdr, uint64_t *total)
{
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t body_len;
	uint32_t env_len;

	memcpy(h, hdr, sizeof(h));
	if (hdr_check(h, &env_len, &body_len))
		return -EINVAL;
	*total = SPOOL_HDR_LEN + (uint64_t)env_len + body_len;
	return 0;
}

int spool_rec_parse(const void *rec, size_t len, struct spool_msg *m, struct buf *scratch)
{
	const unsigned char *r = rec;
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t body_len;
	uint32_t env_len, crc;
	char *env;
	int err;

	if (len < SPOOL_HDR_LEN)
		return -EAGAIN;
	memcpy(h, r, sizeof(h));
	if (hdr_check(h, &env_len, &body_len))
		return -EINVAL;
	if (SPOOL_HDR_LEN + env_len + body_len > len)
		return -EAGAIN;
	put_le32(h + HDR_CRC, 0);
	crc = crc32c(0, h, sizeof(h));
	crc = crc32c(crc, r + SPOOL_HDR_LEN, env_len + (size_t)body_len);
	if (crc != get_le32(r + HDR_CRC))
		return -EINVAL;

	/* <rec> is const and its envelope is not NUL-terminated: parse a
	 * copy, the recipients right after it. */
	scratch->len = 0;
	if (buf_reserve(scratch, 2 * (size_t)env_len + 1))
		return -ENOMEM;
	env = scratch->p;
	memcpy(env, r + SPOOL_HDR_LEN, env_len);
	env[env_len] = '\0';
	scratch->len = 2 * (size_t)env_len + 1;
	scratch->p[scratch->len] = '\0';
	memset(m, 0, sizeof(*m));
	err = env_parse(env, env_len, env + env_len + 1, m);
	if (err)
		return err;
	m->body = (const char *)r + SPOOL_HDR_LEN + env_len;
	m->body_len = body_len;
	m->rec_len = SPOOL_HDR_LEN + env_len + body_len;
	m->state = SPOOL_PENDING;
	return 0;
}

/* One segment read front to back: win[pos, end) holds the file's bytes from
 * the current record on; <left> bytes of the file (as big as it was when
 * opened) are still unread. */
struct spool_rd {
	int fd;
	char *win;
	size_t cap, pos, end;
	uint64_t left;
};

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
/* State of one walk, reused from record to record so that a walk allocates
 * only when a record is larger than any before it. */
struct spool_walker {
	bool with_body;
	bool all;   /* visit done records too (m->state says which) */
	bool quiet; /* the caller reports bad tails itself (recovery) */
	spool_visit_fn fn;
	void *arg;
	struct done_set *done;   /* NULL: nothing is done */
	struct defer_set *defer; /* NULL, or pending messages mark their entry needed */
	struct spool_seg_id seg;
	struct spool_rd rd;
	struct buf env;   /* the record's envelope, parsed in place */
	struct buf rcpts; /* recipients back to back */
	struct buf body;
	/* Of the segment last walked: */
	uint64_t good;             /* end of its last sound record */
	unsigned long nrec;        /* sound records with a readable envelope */
	unsigned long ndone;       /* of them, done */
	unsigned long nunreadable; /* sound records with an unreadable envelope */
};

/* Walks one open segment. Returns 0 (its end, or its first bad record:
 * w->good says where the sound records end), the visitor's non-zero value
 * or -errno. */
static int walk_seg(struct spool_walker *w, const char *name, int fd, uint64_t size)
{
	unsigned char h[SPOOL_HDR_LEN];
	struct spool_rd *rd = &w->rd;
	uint64_t off = 0, body_len;
	uint32_t env_len, crc, want;
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

		want = get_le32(h + HDR_CRC);
		put_le32(h + HDR_CRC, 0);
		crc = crc32c(0, h, sizeof(h));
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
		if (crc != want)
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
		if (m.state != SPOOL_PENDING) {
			w->ndone++;
			if (!w->all)
				continue;
		} else if (w->defer) {
			struct defer_ent *de = defer_find(w->defer, m.qid);

			if (de)
				de->needed = true;
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

static bool is_seg_name(const char *s)
{
	struct spool_seg_id id;

	return !spool_seg_parse(s, &id);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, int n)
{
	while (n > 0)
		free(v[--n]);
	free(v);
}

/* Collects the names of <d> that <want> accepts, sorted, into a malloc'd
 * array of malloc'd strings. Returns their number or -errno. */
static int list_names(DIR *d, bool (*want)(const char *), char ***names)
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

static int walker_init(struct spool_walker *w)
{
	w->env = (struct buf)BUF_INIT;
	w->rcpts = (struct buf)BUF_INIT;
	w->body = (struct buf)BUF_INIT;
	w->rd.cap = SPOOL_RD_WIN;
	w->rd.win = malloc(w->rd.cap);
	return w->rd.win ? 0 : -ENOMEM;
}

static void walker_fini(struct spool_walker *w)
{
	free(w->rd.win);
	w->rd.win = NULL;
	buf_free(&w->env);
	buf_free(&w->rcpts);
	buf_free(&w->body);
}

/* Walks every segment of <dir> with <w>, done records loaded first. */
static int walk_dir(const char *dir, struct spool_walker *w)
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
	struct spool_walker w = {.with_body = with_body, .fn = fn, .arg = arg};

	return walk_dir(dir, &w);
}

/* Recovery. */

/* Checks for a sound record at <at> of a segment of <size> bytes, reading
 * through <buf> (<cap> bytes). Returns 1 if there is one, 0 if not, or
 * -errno. */
static int rec_sound_at(int fd, uint64_t at, uint64_t size, unsigned char *buf, size_t cap)
{
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t left, pos, body_len;
	uint32_t env_len, want, crc;
	size_t k;
	int err;

	if (size - at < SPOOL_HDR_LEN)
		return 0;
	err = spool_pread(fd, h, sizeof(h), at);
	if (err)
		return err == -ENODATA ? 0 : err;
	if (hdr_check(h, &env_len, &body_len) || SPOOL_HDR_LEN + env_len + body_len > size - at)
		return 0;
	want = get_le32(h + HDR_CRC);
	put_le32(h + HDR_CRC, 0);
	crc = crc32c(0, h, sizeof(h));
	pos = at + SPOOL_HDR_LEN;
	for (left = env_len + body_len; left; left -= k, pos += k) {
		k = left < cap ? (size_t)left : cap;
		err = spool_pread(fd, buf, k, pos);
		if (err)
			return err == -ENODATA ? 0 : err;
		crc = crc32c(crc, buf, k);
	}
	return crc == want;
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
	if (!rc->r.done_dropped && !s->bad_bytes && s->nlogs <= 1)
		return 0;

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

	return (!strncmp(s, "done-", 5) && n > 8 && !strcmp(s + n - 8, ".rmx.tmp")) ||
	       (!strncmp(s, "seg-", 4) && n > 16 && !strcmp(s + n - 16, ".rmx.damaged.tmp"));
}

int spool_recover(const char *dir, uint64_t start_id, spool_visit_fn fn, void *arg,
                  struct spool_recovery *out)
{
	struct recovery rc = {.w = {.fn = fn, .arg = arg, .quiet = true}};
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
	if (err)
		goto out;
	rc.w.done = &rc.done;
	rc.w.defer = &rc.defer;
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
	walker_fini(&rc.w);
out_dir:
	closedir(rc.d);
	return err;
}

/* `ringmx queue`. */

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
	if (m->state == SPOOL_PENDING)
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
