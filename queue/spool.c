/* spool: the record format, the bottom of the spool's four files. It builds
 * records (spool_rec_build()) and done records (spool_done_encode()) for io/,
 * which appends them through its ring and fdatasyncs before the 250 (or
 * before it forgets a delivered message); it checks and parses them back for
 * the readers (hdr_check(), spool_rec_verify(), env_parse(),
 * spool_rec_parse(), spool_rec_parse_env(), spool_done_decode()); it names the files of a spool
 * directory (segments, done and defer logs) and tells them apart; and it
 * holds the small I/O helpers the other three share. It is the only file
 * that knows where a field lies on disk. Nothing here walks a directory:
 * that is queue/spool_read.c (the reader window, the walker, the done and
 * defer sets), queue/spool_recover.c (recovery at start-up) and
 * queue/spool_admin.c (`ringmx queue`), which share queue/spool-int.h.
 * queue/ includes core/ only. See spool.h and docs/spool.md. */
#include "queue/spool.h"
#include "queue/spool-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/crc32c.h"

_Static_assert(sizeof(struct spool_rec_hdr) == SPOOL_HDR_LEN, "record header is 32 bytes");

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

int hdr_check(const unsigned char *h, uint32_t *env_len, uint64_t *body_len)
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

int spool_rec_open(struct buf *out, const struct spool_env *e)
{
	static const unsigned char zero[SPOOL_HDR_LEN];
	size_t start = out->len;
	const char *r;
	int err;

	if (!e->qid || !*e->qid || strlen(e->qid) > SPOOL_QID_MAX || !env_value_ok(e->qid) ||
	    !env_value_ok(e->client) || !env_value_ok(e->helo) || !env_value_ok(e->from) ||
	    !env_value_ok(e->quarantine) || (e->nrcpt && !e->rcpts))
		return -EINVAL;
	r = e->rcpts;
	for (unsigned i = 0; i < e->nrcpt; i++, r += strlen(r) + 1)
		if (!env_value_ok(r))
			return -EINVAL;

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
	if (!err && e->quarantine) /* a key older readers skip */
		err = env_line(out, "quarantine", *e->quarantine ? e->quarantine : "-");
	if (!err && e->pad) { /* a key every reader skips */
		err = e->pad < 5 ? -EINVAL : buf_append(out, "pad ", 4);
		for (size_t i = 0; !err && i < e->pad - 5; i += 64)
			err = buf_append(
			    out, "................................................................",
			    e->pad - 5 - i < 64 ? e->pad - 5 - i : 64);
		if (!err)
			err = buf_append(out, "\n", 1);
	}
	if (!err && out->len - start - SPOOL_HDR_LEN > SPOOL_ENV_MAX)
		err = -EINVAL;
	if (!err)
		return 0;
fail:
	/* Leave <out> as it came: the caller may have other records in it. */
	out->len = start;
	if (out->p)
		out->p[start] = '\0';
	return err;
}

/* The header's fields, its crc field 0. */
static void hdr_fill(unsigned char *h, size_t env_len, uint64_t body_len)
{
	put_le32(h + HDR_MAGIC, SPOOL_MAGIC);
	put_le32(h + HDR_VERSION, SPOOL_VERSION);
	put_le32(h + HDR_ENV_LEN, (uint32_t)env_len);
	put_le32(h + HDR_CRC, 0);
	put_le64(h + HDR_BODY_LEN, body_len);
	put_le64(h + HDR_RESERVED, 0);
}

int spool_rec_seal(void *rec, size_t env_len, uint64_t body_len, uint32_t crc_rest)
{
	unsigned char *h = rec;

	if (env_len > SPOOL_ENV_MAX || body_len > SPOOL_BODY_MAX)
		return -EINVAL;
	hdr_fill(h, env_len, body_len);
	put_le32(h + HDR_CRC, crc32c_combine(crc32c(0, h, SPOOL_HDR_LEN), crc_rest,
	                                     (uint64_t)env_len + body_len));
	return 0;
}

int spool_rec_build(struct buf *out, const struct spool_env *e, const struct iovec *body,
                    unsigned nbody)
{
	size_t start = out->len, env_len;
	uint64_t body_len = 0;
	unsigned char *h;
	uint32_t crc;
	int err;

	for (unsigned i = 0; i < nbody; i++) {
		if (body[i].iov_len > SPOOL_BODY_MAX - body_len)
			return -EINVAL;
		body_len += body[i].iov_len;
	}
	err = spool_rec_open(out, e);
	if (err)
		return err;
	env_len = out->len - start - SPOOL_HDR_LEN;
	h = (unsigned char *)out->p + start;
	hdr_fill(h, env_len, body_len);
	crc = crc32c(0, h, SPOOL_HDR_LEN + env_len);
	for (unsigned i = 0; i < nbody; i++)
		crc = crc32c(crc, body[i].iov_base, body[i].iov_len);
	put_le32(h + HDR_CRC, crc);
	return 0;
}

/* Names. */

void spool_seg_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq)
{
	snprintf(name, len, "seg-%016llx-%02u-%06u.rmx", (unsigned long long)start_id, worker, seq);
}

int parse_dec(const char **pp, unsigned min, uint64_t max, uint64_t *v)
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

/* Reads the 16 lowercase hex digits of a start id, as the file names spell
 * it, at *<pp>. Returns 0 and moves *<pp> past them, or -EINVAL. */
static int parse_hex16(const char **pp, uint64_t *v)
{
	const char *p = *pp;
	uint64_t x = 0;

	for (int i = 0; i < 16; i++, p++) {
		if (*p >= '0' && *p <= '9')
			x = x << 4 | (uint64_t)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			x = x << 4 | (uint64_t)(*p - 'a' + 10);
		else
			return -EINVAL;
	}
	*v = x;
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
	if (parse_hex16(&p, &start) || *p++ != '-' || parse_dec(&p, 2, 0xffff, &worker) ||
	    *p++ != '-' || parse_dec(&p, 6, UINT32_MAX, &seq) || strcmp(p, ".rmx"))
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

bool is_seg_name(const char *s)
{
	struct spool_seg_id id;

	return !spool_seg_parse(s, &id);
}

void spool_done_name(char *name, size_t len, uint64_t start_id, unsigned worker)
{
	snprintf(name, len, "done-%016llx-%02u.rmx", (unsigned long long)start_id, worker);
}

void done_recovered_name(char *name, size_t len, uint64_t start_id)
{
	snprintf(name, len, "done-%016llx-recovered.rmx", (unsigned long long)start_id);
}

void spool_done_log_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq)
{
	snprintf(name, len, "done-%016llx-%02u-%06u.rmx", (unsigned long long)start_id, worker,
	         seq);
}

int spool_done_parse(const char *name, struct spool_done_id *id)
{
	const char *p = name;
	struct spool_done_id v = {0};
	uint64_t worker, seq;
	char canon[64];

	if (strncmp(p, "done-", 5))
		return -EINVAL;
	p += 5;
	if (parse_hex16(&p, &v.start) || *p++ != '-')
		return -EINVAL;
	if (!strcmp(p, "recovered.rmx")) {
		v.recovered = true;
		*id = v;
		return 0;
	}
	if (parse_dec(&p, 2, 0xffff, &worker))
		return -EINVAL;
	v.worker = (uint32_t)worker;
	if (*p == '-') {
		p++;
		if (parse_dec(&p, 6, UINT32_MAX, &seq))
			return -EINVAL;
		v.seq = (uint32_t)seq;
		v.rotated = true;
	}
	if (strcmp(p, ".rmx"))
		return -EINVAL;
	/* Only the spellings the naming functions give: no extra zeros. */
	if (v.rotated)
		spool_done_log_name(canon, sizeof(canon), v.start, v.worker, v.seq);
	else
		spool_done_name(canon, sizeof(canon), v.start, v.worker);
	if (strcmp(canon, name))
		return -EINVAL;
	*id = v;
	return 0;
}

bool is_done_name(const char *s)
{
	struct spool_done_id id;

	return !spool_done_parse(s, &id);
}

void spool_defer_name(char *name, size_t len, uint64_t start_id, unsigned worker)
{
	snprintf(name, len, "defer-%016llx-%02u.log", (unsigned long long)start_id, worker);
}

void spool_defer_log_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq)
{
	snprintf(name, len, "defer-%016llx-%02u-%06u.log", (unsigned long long)start_id, worker,
	         seq);
}

bool is_defer_name(const char *s)
{
	const char *p = s + 6;
	uint64_t start = 0, worker, seq = 0;
	bool rotated = false;
	char canon[64];

	if (strncmp(s, "defer-", 6))
		return false;
	if (parse_hex16(&p, &start) || *p++ != '-' || parse_dec(&p, 2, 0xffff, &worker))
		return false;
	if (*p == '-') {
		p++;
		if (parse_dec(&p, 6, UINT32_MAX, &seq))
			return false;
		rotated = true;
	}
	if (strcmp(p, ".log"))
		return false;
	if (rotated)
		spool_defer_log_name(canon, sizeof(canon), start, (unsigned)worker, (unsigned)seq);
	else
		spool_defer_name(canon, sizeof(canon), start, (unsigned)worker);
	return !strcmp(canon, s);
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

static bool state_ok(enum spool_state s)
{
	return s == SPOOL_DELIVERED || s == SPOOL_BOUNCED || s == SPOOL_DELETED || s == SPOOL_MOVED;
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

int write_full(int fd, const void *p, size_t n)
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

/* Reading back. */

int env_parse(char *env, size_t len, char *rcpts, struct spool_msg *m)
{
	char *p = env, *end = env + len, *nl, *sp, *v, *e, *r = rcpts;
	bool have_id = false, have_arrival = false, have_from = false;
	long long t;

	if (!len || end[-1] != '\n' || memchr(p, '\0', len))
		return -EINVAL;
	m->client = m->helo = m->from = "";
	m->nrcpt = 0;
	m->body_8bit = m->smtputf8 = false;
	m->quarantine = "";
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
		} else if (!strcmp(p, "quarantine")) {
			m->quarantine = *v ? v : "-";
		}
	}
	if (!have_id || !have_arrival || !have_from)
		return -EINVAL;
	m->rcpts = m->nrcpt ? rcpts : "";
	return 0;
}

uint32_t spool_rec_crc_start(const void *hdr)
{
	unsigned char h[SPOOL_HDR_LEN];

	memcpy(h, hdr, sizeof(h));
	put_le32(h + HDR_CRC, 0);
	return crc32c(0, h, sizeof(h));
}

int spool_rec_verify(const void *hdr, uint32_t crc)
{
	return crc == get_le32((const unsigned char *)hdr + HDR_CRC) ? 0 : -EINVAL;
}

/* hdr_check() of a header at any alignment. */
static int hdr_check_any(const void *hdr, uint32_t *env_len, uint64_t *body_len)
{
	unsigned char h[SPOOL_HDR_LEN];

	memcpy(h, hdr, sizeof(h));
	return hdr_check(h, env_len, body_len);
}

int spool_rec_len(const void *hdr, uint64_t *total)
{
	uint64_t body_len;
	uint32_t env_len;

	if (hdr_check_any(hdr, &env_len, &body_len))
		return -EINVAL;
	*total = SPOOL_HDR_LEN + (uint64_t)env_len + body_len;
	return 0;
}

int spool_rec_env_end(const void *hdr, uint64_t *body_at)
{
	uint64_t body_len;
	uint32_t env_len;

	if (hdr_check_any(hdr, &env_len, &body_len))
		return -EINVAL;
	*body_at = SPOOL_HDR_LEN + (uint64_t)env_len;
	return 0;
}

/* Parses the <env_len> envelope bytes at <env> of the record whose checked
 * header gave <env_len> and <body_len>: the part spool_rec_parse() and
 * spool_rec_parse_env() share. The body fields are left to the caller. */
static int env_load(const unsigned char *env, uint32_t env_len, uint64_t body_len,
                    struct spool_msg *m, struct buf *scratch)
{
	char *copy;
	int err;

	/* <env> is const and not NUL-terminated: parse a copy, the
	 * recipients right after it. */
	scratch->len = 0;
	if (buf_reserve(scratch, 2 * (size_t)env_len + 1))
		return -ENOMEM;
	copy = scratch->p;
	memcpy(copy, env, env_len);
	copy[env_len] = '\0';
	scratch->len = 2 * (size_t)env_len + 1;
	scratch->p[scratch->len] = '\0';
	memset(m, 0, sizeof(*m));
	err = env_parse(copy, env_len, copy + env_len + 1, m);
	if (err)
		return err;
	m->body_len = body_len;
	m->rec_len = SPOOL_HDR_LEN + env_len + body_len;
	m->state = SPOOL_PENDING;
	return 0;
}

int spool_rec_parse(const void *rec, size_t len, struct spool_msg *m, struct buf *scratch)
{
	const unsigned char *r = rec;
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t body_len;
	uint32_t env_len, crc;
	int err;

	if (len < SPOOL_HDR_LEN)
		return -EAGAIN;
	memcpy(h, r, sizeof(h));
	if (hdr_check(h, &env_len, &body_len))
		return -EINVAL;
	if (SPOOL_HDR_LEN + env_len + body_len > len)
		return -EAGAIN;
	crc = crc32c(spool_rec_crc_start(h), r + SPOOL_HDR_LEN, env_len + (size_t)body_len);
	if (spool_rec_verify(h, crc))
		return -EINVAL;
	err = env_load(r + SPOOL_HDR_LEN, env_len, body_len, m, scratch);
	if (err)
		return err;
	m->body = (const char *)r + SPOOL_HDR_LEN + env_len;
	return 0;
}

int spool_rec_parse_env(const void *rec, size_t len, struct spool_msg *m, struct buf *scratch,
                        uint32_t *crc)
{
	const unsigned char *r = rec;
	unsigned char h[SPOOL_HDR_LEN];
	uint64_t body_len;
	uint32_t env_len;
	int err;

	if (len < SPOOL_HDR_LEN)
		return -EAGAIN;
	memcpy(h, r, sizeof(h));
	if (hdr_check(h, &env_len, &body_len))
		return -EINVAL;
	if (SPOOL_HDR_LEN + (size_t)env_len > len)
		return -EAGAIN;
	err = env_load(r + SPOOL_HDR_LEN, env_len, body_len, m, scratch);
	if (err)
		return err;
	*crc = crc32c(spool_rec_crc_start(h), r + SPOOL_HDR_LEN, env_len);
	return 0;
}
