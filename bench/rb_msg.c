/* rb_msg: the messages ringmx-bench sends: sizes drawn from a distribution
 * over one shared synthetic text, or real .eml files from a directory. All
 * of it is built before the first connection, so sending a message never
 * copies its body: a session points its iovec at the shared text. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/rb.h"

uint64_t rb_rand(uint64_t *rng)
{
	/* xorshift64*: plenty for picking sizes, one per thread */
	uint64_t x = *rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*rng = x;
	return x * UINT64_C(2685821657736338717);
}

static int parse_num(const char *s, const char *end, uint64_t *out)
{
	if (s == end)
		return -1;
	uint64_t v = 0;
	const char *p = s;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		if (v > UINT64_MAX / 10 - 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (p == s)
		return -1;
	uint64_t mul = 1;
	if (p < end) {
		if (*p == 'k' || *p == 'K')
			mul = 1024;
		else if (*p == 'm' || *p == 'M')
			mul = 1024 * 1024;
		else
			return -1;
		p++;
	}
	if (p != end || v > (UINT64_C(1) << 40) / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int rb_size_parse(const char *s, struct rb_size *out, char *err, size_t errlen)
{
	const char *end = s + strlen(s);
	memset(out, 0, sizeof(*out));
	if (strncmp(s, "exp:", 4) == 0) {
		out->kind = RB_SIZE_EXP;
		if (parse_num(s + 4, end, &out->a) < 0 || out->a == 0)
			goto bad;
		out->b = out->a * 16;
		return 0;
	}
	const char *dash = strchr(s, '-');
	if (dash) {
		out->kind = RB_SIZE_UNIFORM;
		if (parse_num(s, dash, &out->a) < 0 || parse_num(dash + 1, end, &out->b) < 0 ||
		    out->b < out->a)
			goto bad;
		return 0;
	}
	out->kind = RB_SIZE_FIXED;
	if (parse_num(s, end, &out->a) < 0)
		goto bad;
	out->b = out->a;
	return 0;
bad:
	snprintf(err, errlen, "bad size '%s' (use BYTES, MIN-MAX or exp:MEAN; suffixes k and m)",
	         s);
	return -1;
}

uint64_t rb_size_max(const struct rb_size *z)
{
	return z->b;
}

uint64_t rb_size_draw(const struct rb_size *z, uint64_t *rng)
{
	switch (z->kind) {
	case RB_SIZE_UNIFORM:
		return z->a + rb_rand(rng) % (z->b - z->a + 1);
	case RB_SIZE_EXP: {
		/* inverse transform; u in (0, 1] so log() stays finite */
		double u = ((double)(rb_rand(rng) >> 11) + 1.0) / 9007199254740992.0;
		double v = -log(u) * (double)z->a;
		return v >= (double)z->b ? z->b : (uint64_t)v;
	}
	case RB_SIZE_FIXED:
		break;
	}
	return z->a;
}

char *rb_fill_new(size_t max)
{
	size_t lines = max / RB_FILL_LINE + 1;
	char *p = malloc(lines * RB_FILL_LINE);
	if (!p)
		return NULL;
	for (size_t l = 0; l < lines; l++) {
		char *q = p + l * RB_FILL_LINE;
		for (size_t i = 0; i < RB_FILL_LINE - 2; i++)
			q[i] = (char)('a' + (l + i) % 26);
		q[RB_FILL_LINE - 2] = '\r';
		q[RB_FILL_LINE - 1] = '\n';
	}
	return p;
}

size_t rb_fill_split(size_t len, size_t *prefix, char *tail, size_t cap)
{
	size_t k = len / RB_FILL_LINE, r = len % RB_FILL_LINE;
	if (r == 1) { /* no line is one octet long: trade a whole line for a longer one */
		if (k > 0) {
			k--;
			r += RB_FILL_LINE;
		} else {
			r = 2;
		}
	}
	*prefix = k * RB_FILL_LINE;
	size_t t = 0;
	if (r >= 2 && r - 2 + 5 <= cap) {
		memset(tail, 'z', r - 2);
		t = r - 2;
		tail[t++] = '\r';
		tail[t++] = '\n';
	}
	memcpy(tail + t, ".\r\n", 3);
	return t + 3;
}

char *rb_corpus_encode(const char *p, size_t n, size_t *out_len)
{
	/* worst case: every octet a line end turned into CRLF, or a stuffed dot */
	char *o = malloc(2 * n + 8);
	if (!o)
		return NULL;
	size_t j = 0;
	bool bol = true;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '\r' || c == '\n') {
			if (c == '\r' && i + 1 < n && p[i + 1] == '\n')
				i++;
			o[j++] = '\r';
			o[j++] = '\n';
			bol = true;
			continue;
		}
		if (bol && c == '.')
			o[j++] = '.';
		o[j++] = c;
		bol = false;
	}
	if (!bol) {
		o[j++] = '\r';
		o[j++] = '\n';
	}
	memcpy(o + j, ".\r\n", 3);
	*out_len = j + 3;
	return o;
}

size_t rb_corpus_unstuff(char *p, size_t n)
{
	if (n >= 3 && memcmp(p + n - 3, ".\r\n", 3) == 0)
		n -= 3;
	size_t j = 0;
	bool bol = true;
	for (size_t i = 0; i < n; i++) {
		if (bol && p[i] == '.') { /* every line starting with a dot was stuffed */
			bol = false;
			continue;
		}
		bol = p[i] == '\n';
		p[j++] = p[i];
	}
	return j;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_file(const char *path, size_t max, size_t *len, int *err)
{
	/* O_NONBLOCK: a FIFO swapped in after the stat() must not hang us */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		*err = errno;
		return NULL;
	}
	struct stat st;
	char *p = NULL;
	if (fstat(fd, &st) < 0) {
		*err = errno;
	} else if (!S_ISREG(st.st_mode)) {
		*err = EINVAL;
	} else if ((uint64_t)st.st_size > max) {
		*err = EFBIG;
	} else if (!(p = malloc((size_t)st.st_size + 1))) {
		*err = ENOMEM;
	} else {
		size_t got = 0;
		while (got < (size_t)st.st_size) {
			ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
			if (r <= 0) {
				*err = r < 0 ? errno : EIO;
				free(p);
				p = NULL;
				break;
			}
			got += (size_t)r;
		}
		*len = got;
	}
	close(fd);
	return p;
}

int rb_corpus_load(struct rb_corpus *c, const char *dir, size_t max, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	DIR *d = opendir(dir);
	if (!d) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	char **names = NULL;
	size_t nn = 0, cap = 0;
	struct dirent *e;
	int rc = -1;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 5 || strcmp(e->d_name + l - 4, ".eml") != 0)
			continue;
		if (nn == cap) {
			cap = cap ? cap * 2 : 64;
			char **nv = realloc(names, cap * sizeof(*nv));
			if (!nv)
				goto oom;
			names = nv;
		}
		if (!(names[nn] = strdup(e->d_name)))
			goto oom;
		nn++;
	}
	if (nn == 0) {
		snprintf(err, errlen, "%s: no .eml files", dir);
		goto out;
	}
	qsort(names, nn, sizeof(*names), cmp_names);
	c->data = calloc(nn, sizeof(*c->data));
	c->len = calloc(nn, sizeof(*c->len));
	if (!c->data || !c->len)
		goto oom;
	for (size_t i = 0; i < nn; i++) {
		char path[4096];
		size_t len = 0;
		int e2 = 0;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		struct stat st;
		if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
			continue; /* a directory or a pipe named *.eml: not a message */
		char *raw = read_file(path, max, &len, &e2);
		if (!raw) {
			snprintf(err, errlen, "%s: %s", path, strerror(e2));
			goto out;
		}
		c->data[c->n] = rb_corpus_encode(raw, len, &c->len[c->n]);
		free(raw);
		if (!c->data[c->n])
			goto oom;
		c->bytes += c->len[c->n];
		c->n++;
	}
	if (c->n == 0) {
		snprintf(err, errlen, "%s: no .eml files", dir);
		goto out;
	}
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "%s: out of memory", dir);
out:
	for (size_t i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	closedir(d);
	if (rc < 0)
		rb_corpus_free(c);
	return rc;
}

void rb_corpus_free(struct rb_corpus *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->data[i]);
	free(c->data);
	free(c->len);
	memset(c, 0, sizeof(*c));
}
