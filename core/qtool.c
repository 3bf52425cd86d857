/* qtool: the sans-I/O pieces of `ringmx queue` (durations, selectors, JSON
 * strings, control request lines, the qshape table). See qtool.h. The
 * callers are queue/spool_admin.c (selection, listing), io/queue_cli.c
 * (the command line) and io/control.c (request files, both ends). */
#include "core/qtool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int qtool_duration(const char *s, uint64_t *secs)
{
	const uint64_t max = 100ull * 366 * 86400;
	uint64_t v = 0, unit = 1;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > max)
			return -EINVAL;
	}
	switch (*s) {
	case '\0':
	case 's':
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	case 'w':
		unit = 7 * 86400;
		break;
	default:
		return -EINVAL;
	}
	if (*s && s[1])
		return -EINVAL;
	if (v > max / unit)
		return -EINVAL;
	*secs = v * unit;
	return 0;
}

const char *qtool_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at ? at + 1 : "";
}

bool qtool_addr_match(const char *pat, const char *addr)
{
	if (!*pat || !strcmp(pat, "<>"))
		return !*addr;
	if (!*addr)
		return false;
	if (*pat == '@')
		return !strcasecmp(pat + 1, qtool_domain(addr)) && strchr(addr, '@');
	if (!strchr(pat, '@'))
		return strchr(addr, '@') && !strcasecmp(pat, qtool_domain(addr));
	return !strcasecmp(pat, addr);
}

/* The length of the valid UTF-8 sequence at <p> (RFC 3629: no overlong
 * forms, no surrogates, at most U+10FFFF), or 0. <p> is NUL-terminated. */
static size_t utf8_len(const unsigned char *p)
{
	unsigned char c = p[0];
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

int qtool_json_str(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	int err = buf_append(b, "\"", 1);

	while (!err && *p) {
		size_t n = utf8_len(p);

		if (*p == '"' || *p == '\\') {
			char e[2] = {'\\', (char)*p};

			err = buf_append(b, e, 2);
			p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			err = buf_printf(b, "\\u%04x", *p);
			p++;
		} else if (!n) {
			err = buf_append_str(b, "\\ufffd");
			p++;
		} else {
			err = buf_append(b, p, n);
			p += n;
		}
	}
	return err ? err : buf_append(b, "\"", 1);
}

bool qtool_qid_ok(const char *s, size_t len)
{
	if (!len || len > QTOOL_QID_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

static const char *const op_names[] = {
    [QTOOL_HOLD] = "hold",
    [QTOOL_RELEASE] = "release",
    [QTOOL_REQUEUE] = "requeue",
    [QTOOL_DELETE] = "delete",
};

const char *qtool_op_name(enum qtool_op op)
{
	if ((unsigned)op < QTOOL_HOLD || (unsigned)op > QTOOL_DELETE)
		return NULL;
	return op_names[op];
}

int qtool_req_format(struct buf *b, enum qtool_op op, const char *qid)
{
	const char *name = qtool_op_name(op);

	if (!name || !qid || !qtool_qid_ok(qid, strlen(qid)))
		return -EINVAL;
	return buf_printf(b, "%s %s\n", name, qid);
}

int qtool_req_parse(const char *line, size_t len, enum qtool_op *op, struct sv *qid)
{
	const char *sp;

	if (len && line[len - 1] == '\r')
		len--;
	sp = memchr(line, ' ', len);
	if (!sp)
		return -EINVAL;
	for (unsigned o = QTOOL_HOLD; o <= QTOOL_DELETE; o++) {
		size_t n = strlen(op_names[o]);

		if ((size_t)(sp - line) != n || memcmp(line, op_names[o], n))
			continue;
		if (!qtool_qid_ok(sp + 1, len - n - 1))
			return -EINVAL;
		*op = (enum qtool_op)o;
		*qid = sv_make(sp + 1, len - n - 1);
		return 0;
	}
	return -EINVAL;
}

/* The upper bounds of the buckets, in minutes; the last has none. */
static const unsigned shape_minutes[QTOOL_SHAPE_BUCKETS - 1] = {5,   10,  20,  40,  80,
                                                                160, 320, 640, 1280};

unsigned qtool_shape_bucket(int64_t age_s)
{
	unsigned i;

	if (age_s < 0)
		age_s = 0;
	/* qshape: a message of age a minutes is in the first column whose
	 * bound it has not reached. */
	for (i = 0; i < QTOOL_SHAPE_BUCKETS - 1; i++)
		if (age_s < (int64_t)shape_minutes[i] * 60)
			break;
	return i;
}

/* FNV-1a over the lower-cased domain. */
static size_t dom_hash(const char *d)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *d; d++) {
		unsigned char c = (unsigned char)*d;

		h = (h ^ (c >= 'A' && c <= 'Z' ? c + 32u : c)) * 0x100000001b3ull;
	}
	return (size_t)(h ^ h >> 29);
}

/* The index slot of <dom>: its row's, or the free one it would take. */
static size_t *shape_slot(const struct qtool_shape *sh, const char *dom)
{
	size_t i = dom_hash(dom) & (sh->idx_cap - 1);

	while (sh->idx[i] && strcasecmp(sh->rows[sh->idx[i] - 1].domain, dom))
		i = (i + 1) & (sh->idx_cap - 1);
	return &sh->idx[i];
}

static int shape_row(struct qtool_shape *sh, const char *dom, struct qtool_shape_row **out)
{
	struct qtool_shape_row *v;
	size_t *slot;

	if ((sh->nrows + 1) * 2 > sh->idx_cap) {
		size_t ncap = sh->idx_cap ? sh->idx_cap * 2 : 32, *old = sh->idx;

		sh->idx = calloc(ncap, sizeof(*sh->idx));
		if (!sh->idx) {
			sh->idx = old;
			return -ENOMEM;
		}
		free(old);
		sh->idx_cap = ncap;
		for (size_t i = 0; i < sh->nrows; i++)
			*shape_slot(sh, sh->rows[i].domain) = i + 1;
	}
	slot = shape_slot(sh, dom);
	if (*slot) {
		*out = &sh->rows[*slot - 1];
		return 0;
	}
	if (sh->nrows == sh->cap) {
		size_t cap = sh->cap ? sh->cap * 2 : 16;

		v = realloc(sh->rows, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		sh->rows = v;
		sh->cap = cap;
	}
	v = &sh->rows[sh->nrows];
	memset(v, 0, sizeof(*v));
	v->domain = strdup(dom);
	if (!v->domain)
		return -ENOMEM;
	for (char *p = v->domain; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	*slot = ++sh->nrows;
	*out = v;
	return 0;
}

int qtool_shape_add(struct qtool_shape *sh, const char *const *dom, size_t ndom, int64_t age_s)
{
	unsigned b = qtool_shape_bucket(age_s);
	struct qtool_shape_row *r;
	int err;

	sh->all.total++;
	sh->all.n[b]++;
	for (size_t i = 0; i < ndom; i++) {
		bool seen = false;

		for (size_t k = 0; k < i && !seen; k++)
			seen = !strcasecmp(dom[k], dom[i]);
		if (seen)
			continue;
		err = shape_row(sh, dom[i], &r);
		if (err)
			return err;
		r->total++;
		r->n[b]++;
	}
	return 0;
}

static int row_cmp(const void *pa, const void *pb)
{
	const struct qtool_shape_row *a = pa, *b = pb;

	if (a->total != b->total)
		return a->total > b->total ? -1 : 1;
	return strcmp(a->domain, b->domain);
}

static int digits(uint64_t v)
{
	int n = 1;

	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

static int shape_line(struct buf *out, int wdom, const int *wcol, const char *name,
                      const struct qtool_shape_row *r)
{
	int err = buf_printf(out, "%*s %*llu", wdom, name, wcol[0], (unsigned long long)r->total);

	for (unsigned i = 0; !err && i < QTOOL_SHAPE_BUCKETS; i++)
		err = buf_printf(out, " %*llu", wcol[i + 1], (unsigned long long)r->n[i]);
	return err ? err : buf_append(out, "\n", 1);
}

int qtool_shape_format(const struct qtool_shape *sh, struct buf *out)
{
	static const char *const heads[QTOOL_SHAPE_BUCKETS + 1] = {
	    "T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"};
	int wcol[QTOOL_SHAPE_BUCKETS + 1], wdom = 5; /* "TOTAL" */
	struct qtool_shape_row *rows = NULL;
	int err;

	for (unsigned i = 0; i <= QTOOL_SHAPE_BUCKETS; i++) {
		uint64_t v = i ? sh->all.n[i - 1] : sh->all.total;
		int w = digits(v), h = (int)strlen(heads[i]);

		/* The TOTAL row holds each column's largest number. */
		wcol[i] = w > h ? w : h;
	}
	if (sh->nrows) {
		rows = malloc(sh->nrows * sizeof(*rows));
		if (!rows)
			return -ENOMEM;
		memcpy(rows, sh->rows, sh->nrows * sizeof(*rows));
		qsort(rows, sh->nrows, sizeof(*rows), row_cmp);
	}
	for (size_t i = 0; i < sh->nrows; i++) {
		int w = (int)strlen(rows[i].domain);

		/* A row counts each message at most once, so the TOTAL
		 * row's numbers are the widest. */
		if (!*rows[i].domain)
			w = 6; /* "(none)" */
		if (w > wdom)
			wdom = w;
	}
	err = buf_printf(out, "%*s", wdom, "");
	for (unsigned i = 0; !err && i <= QTOOL_SHAPE_BUCKETS; i++)
		err = buf_printf(out, " %*s", wcol[i], heads[i]);
	if (!err)
		err = buf_append(out, "\n", 1);
	if (!err)
		err = shape_line(out, wdom, wcol, "TOTAL", &sh->all);
	for (size_t i = 0; !err && i < sh->nrows; i++)
		err = shape_line(out, wdom, wcol, *rows[i].domain ? rows[i].domain : "(none)",
		                 &rows[i]);
	free(rows);
	return err;
}

void qtool_shape_free(struct qtool_shape *sh)
{
	for (size_t i = 0; i < sh->nrows; i++)
		free(sh->rows[i].domain);
	free(sh->rows);
	free(sh->idx);
	memset(sh, 0, sizeof(*sh));
}
