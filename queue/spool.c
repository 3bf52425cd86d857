/* spool: the record format of accepted messages, and the readers that walk
 * segments back (recovery at start-up, `ringmx queue`). The writer side is
 * only spool_rec_build(): io/ appends its output and the body iovecs to the
 * worker's segment through the ring and fdatasyncs before the 250. Readers
 * here use plain read(2): they run at start-up or from the CLI, never on a
 * worker. A segment is read front to back through one window buffer; bodies
 * are streamed through it for their CRC unless the caller wants them. The
 * first record that fails a check ends its segment: a torn tail from a
 * crash and an append in progress look the same. queue/ includes core/ only.
 * See spool.h. */
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

/* Reading back. */

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
	spool_visit_fn fn;
	void *arg;
	struct spool_rd rd;
	struct buf env;   /* the record's envelope, parsed in place */
	struct buf rcpts; /* recipients back to back */
	struct buf body;
};

/* Parses the envelope in w->env (NUL-terminated by buf) into <m>, cutting
 * it into C strings in place. Unknown keys are skipped, so that a later
 * version may add lines. Returns 0 or -EINVAL. */
static int env_parse(struct spool_walker *w, struct spool_msg *m)
{
	char *p = w->env.p, *end = w->env.p + w->env.len, *nl, *sp, *v, *e;
	bool have_id = false, have_arrival = false, have_from = false;
	long long t;

	if (!w->env.len || end[-1] != '\n' || memchr(p, '\0', w->env.len))
		return -EINVAL;
	buf_reset(&w->rcpts, 64 * 1024);
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
			if (buf_append(&w->rcpts, v, (size_t)(nl - v) + 1))
				return -ENOMEM;
			m->nrcpt++;
		} else if (!strcmp(p, "body")) {
			m->body_8bit = !strcmp(v, "8BITMIME");
		} else if (!strcmp(p, "smtputf8")) {
			m->smtputf8 = !strcmp(v, "1");
		}
	}
	if (!have_id || !have_arrival || !have_from)
		return -EINVAL;
	m->rcpts = w->rcpts.p ? w->rcpts.p : "";
	return 0;
}

/* Walks one open segment. Returns 0 (its end, or its first bad record),
 * the visitor's non-zero value or -errno. */
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
	while (off < size) {
		why = "truncated";
		if (size - off < SPOOL_HDR_LEN)
			goto bad;
		err = rd_fill(rd, SPOOL_HDR_LEN);
		if (err == -ENODATA)
			goto bad;
		if (err)
			return err;
		memcpy(h, rd->win + rd->pos, sizeof(h));
		env_len = get_le32(h + HDR_ENV_LEN);
		body_len = get_le64(h + HDR_BODY_LEN);
		why = "bad header";
		if (get_le32(h + HDR_MAGIC) != SPOOL_MAGIC ||
		    get_le32(h + HDR_VERSION) != SPOOL_VERSION || env_len > SPOOL_ENV_MAX ||
		    body_len > SPOOL_BODY_MAX)
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
		if (buf_append(&w->env, rd->win + rd->pos, env_len) || buf_reserve(&w->env, 0))
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
		off += SPOOL_HDR_LEN + env_len + body_len;
		if (env_parse(w, &m)) {
			/* The frame is sound (crc), only its content is not:
			 * skip this record alone. */
			LOGW("spool: %s: offset %" PRIu64 ": unreadable envelope, record skipped",
			     name, m.offset);
			continue;
		}
		err = w->fn(w->arg, &m);
		if (err)
			return err;
	}
	return 0;
bad:
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
	size_t n = strlen(s);

	return n > 8 && !strncmp(s, "seg-", 4) && !strcmp(s + n - 4, ".rmx");
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the segment names of <d>, sorted, into a malloc'd array of
 * malloc'd strings. Returns their number or -errno. */
static int list_segs(DIR *d, char ***names)
{
	char **v = NULL, **nv;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int err = 0;

	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			err = -errno;
			break;
		}
		if (!is_seg_name(de->d_name))
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
		while (n)
			free(v[--n]);
		free(v);
		return err;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_name);
	*names = v;
	return (int)n;
}

int spool_walk(const char *dir, bool with_body, spool_visit_fn fn, void *arg)
{
	struct spool_walker w = {
	    .with_body = with_body,
	    .fn = fn,
	    .arg = arg,
	    .env = BUF_INIT,
	    .rcpts = BUF_INIT,
	    .body = BUF_INIT,
	};
	char **names = NULL;
	struct stat st;
	int n, i, fd, err;
	DIR *d;

	d = opendir(dir);
	if (!d)
		return -errno;
	n = list_segs(d, &names);
	if (n < 0) {
		err = n;
		goto out_dir;
	}
	w.rd.cap = SPOOL_RD_WIN;
	w.rd.win = malloc(w.rd.cap);
	if (!w.rd.win) {
		err = -ENOMEM;
		goto out_names;
	}
	err = 0;
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
		else if (S_ISREG(st.st_mode))
			err = walk_seg(&w, names[i], fd, (uint64_t)st.st_size);
		close(fd);
	}
	free(w.rd.win);
	buf_free(&w.env);
	buf_free(&w.rcpts);
	buf_free(&w.body);
out_names:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
out_dir:
	closedir(d);
	return err;
}

/* `ringmx queue`. */

struct spool_lister {
	FILE *out;
	time_t now;
	unsigned long count;
	bool count_only;
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

static int list_one(void *arg, const struct spool_msg *m)
{
	struct spool_lister *l = arg;
	const char *r = m->rcpts;

	l->count++;
	if (l->count_only)
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
	fputc('\n', l->out);
	return 0;
}

int spool_list(const char *dir, bool count_only, FILE *out, time_t now)
{
	struct spool_lister l = {.out = out, .now = now, .count_only = count_only};
	int err;

	err = spool_walk(dir, false, list_one, &l);
	if (err)
		return err;
	if (count_only)
		fprintf(out, "%lu\n", l.count);
	if (fflush(out) == EOF || ferror(out))
		return -EIO;
	return 0;
}
