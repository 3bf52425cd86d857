/* data_diff: the differential driver for core/smtp_data, shared by the unit
 * test (tests/unit/smtp_data_test.c) and the fuzzer (tests/fuzz/data_fuzz.c).
 *
 * data_diff_run() feeds one input, cut into pieces, to every implementation
 * the CPU supports in lockstep: each call starts all of them from the same
 * state and they must agree on the bytes consumed, the views (same pointers
 * and lengths) and the whole parser state. Each piece sits just before a
 * PROT_NONE page, so an over-read crashes. data_diff_oracle() computes the
 * expected outcome from the whole input at once, declaratively (no
 * streaming, no automaton): a third opinion for the reference itself. */
#ifndef RINGMX_TESTS_DATA_DIFF_H
#define RINGMX_TESTS_DATA_DIFF_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/smtp_data.h"

struct data_diff_cfg {
	uint64_t max_size;
	uint32_t max_line;
	enum smtp_data_bare bare;
	unsigned maxv; /* 3 to DATA_DIFF_MAXV */
};

#define DATA_DIFF_MAXV 64

struct data_diff_out {
	char *content; /* malloc'd, 2 * len + 1 bytes at least */
	size_t clen;
	uint64_t size;
	uint32_t flags;
	uint32_t linelen;
	bool done;
	size_t end; /* offset just past the terminator, if done */
};

static void data_diff_out_init(struct data_diff_out *o, size_t len)
{
	memset(o, 0, sizeof(*o));
	o->content = malloc(2 * len + 1);
	if (!o->content)
		abort();
}

static void data_diff_out_fini(struct data_diff_out *o)
{
	free(o->content);
	o->content = NULL;
}

static void data_diff_put(struct data_diff_out *o, const char *p, size_t n)
{
	memcpy(o->content + o->clen, p, n);
	o->clen += n;
}

/* The expected outcome of feeding the whole of <p> (a message from its
 * first byte), as plain rules over the input. */
static void data_diff_oracle(const struct data_diff_cfg *c, const char *p, size_t n,
                             struct data_diff_out *o)
{
	bool norm = c->bare == SMTP_DATA_BARE_NORMALIZE;
	size_t range = n, j, ls = 0;
	int64_t l;

#define LS(i)      ((i) == 0 || ((i) >= 2 && p[(i)-2] == '\r' && p[(i)-1] == '\n'))
#define BARE_LF(i) (p[i] == '\n' && ((i) == 0 || p[(i)-1] != '\r'))
#define BARE_CR(i) (p[i] == '\r' && (i) + 1 < n && p[(i) + 1] != '\n')
	o->clen = 0;
	o->flags = 0;
	o->done = false;
	o->end = 0;
	/* End of data: "." CRLF at a line start (after a real CRLF). */
	for (j = 0; j + 3 <= n; j++) {
		if (LS(j) && p[j] == '.' && p[j + 1] == '\r' && p[j + 2] == '\n') {
			range = j;
			o->done = true;
			o->end = j + 3;
			o->flags |= SMTP_DATA_F_DONE;
			break;
		}
	}
	for (j = 0; j < range; j++) {
		if (p[j] == '.' && LS(j))
			continue; /* dot-stuffing */
		if (!o->done && j == n - 1 && p[j] == '\r' && j >= 1 && p[j - 1] == '.' &&
		    LS(j - 1))
			continue; /* ".\r" at the very end: held back */
		if (BARE_LF(j))
			o->flags |= SMTP_DATA_F_BARE_LF;
		if (BARE_CR(j))
			o->flags |= SMTP_DATA_F_BARE_CR;
		if (norm && (BARE_LF(j) || BARE_CR(j)))
			data_diff_put(o, "\r\n", 2);
		else
			data_diff_put(o, p + j, 1);
	}
	o->size = o->clen;
	if (c->max_size && o->size > c->max_size)
		o->flags |= SMTP_DATA_F_TOO_BIG;
	o->linelen = 0;
	if (!c->max_line)
		return;
	/* smtp_data_init() takes a limit under 3 octets as 3. */
	const uint32_t ml = c->max_line < 3 ? 3 : c->max_line;
	/* Lines end at any LF, and at a bare CR when normalizing; a line's
	 * length counts the received octets before its ending. */
	for (j = 0; j < range; j++) {
		bool crlf = p[j] == '\n' && j > ls && p[j - 1] == '\r';

		if (p[j] == '\n' || (norm && BARE_CR(j))) {
			l = (int64_t)(j - ls) - crlf;
			if (l > 0 && l + 2 > ml)
				o->flags |= SMTP_DATA_F_LONG_LINE;
			ls = j + 1;
		}
	}
	if (o->done)
		return;
	/* The unfinished last line, less what is still unresolved. */
	l = (int64_t)(n - ls);
	if (n > ls && p[n - 1] == '\r') {
		l--;
		if (n - 1 > ls && p[n - 2] == '.' && LS(n - 2))
			l--;
	} else if (n > ls && p[n - 1] == '.' && LS(n - 1)) {
		l--;
	}
	if (l > 0 && l + 2 > ml)
		o->flags |= SMTP_DATA_F_LONG_LINE;
	o->linelen = (uint32_t)l;
#undef LS
#undef BARE_LF
#undef BARE_CR
}

/* Writes a message into <err> (if not NULL) and returns -1. */
__attribute__((format(printf, 3, 4))) static int data_diff_fail(char *err, size_t errlen,
                                                                const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* Memory for one piece, right before a PROT_NONE page. */
struct data_diff_mem {
	char *map;
	size_t maplen;
	size_t cap; /* bytes usable before the guard page */
};

static char *data_diff_place(struct data_diff_mem *m, const char *p, size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	if (!m->map || n > m->cap) {
		if (m->map)
			munmap(m->map, m->maplen);
		m->cap = (n + pg) / pg * pg;
		m->maplen = m->cap + pg;
		m->map = mmap(NULL, m->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		              -1, 0);
		if (m->map == MAP_FAILED)
			abort();
		if (mprotect(m->map + m->cap, pg, PROT_NONE))
			abort();
	}
	memcpy(m->map + m->cap - n, p, n);
	return m->map + m->cap - n;
}

static void data_diff_mem_fini(struct data_diff_mem *m)
{
	if (m->map)
		munmap(m->map, m->maplen);
	m->map = NULL;
	m->cap = 0;
}

static const enum smtp_data_impl data_diff_impls[] = {
    SMTP_DATA_IMPL_REF,  SMTP_DATA_IMPL_SCALAR, SMTP_DATA_IMPL_SSE2,
    SMTP_DATA_IMPL_AVX2, SMTP_DATA_IMPL_AVX512,
};
#define DATA_DIFF_NIMPL (sizeof(data_diff_impls) / sizeof(data_diff_impls[0]))

static bool data_diff_same_state(const struct smtp_data *a, const struct smtp_data *b)
{
	return a->size == b->size && a->max_size == b->max_size && a->linelen == b->linelen &&
	       a->max_line == b->max_line && a->flags == b->flags && a->state == b->state &&
	       a->bare == b->bare && a->longp == b->longp;
}

/* Feeds <p> cut at the <ncut> ascending offsets <cuts> to all supported
 * implementations in lockstep (or only <only>, if not AUTO), collecting the
 * reference's results into <o>. Returns 0, or -1 with a message in <err>. */
static int data_diff_run(const struct data_diff_cfg *c, enum smtp_data_impl only, const char *p,
                         size_t n, const size_t *cuts, size_t ncut, struct data_diff_out *o,
                         char *err, size_t errlen)
{
	struct data_diff_mem mem = {0};
	struct smtp_data d, dk[DATA_DIFF_NIMPL];
	struct iovec v[DATA_DIFF_NIMPL][DATA_DIFF_MAXV];
	unsigned nv[DATA_DIFF_NIMPL], nimpl = 0, maxv = c->maxv;
	enum smtp_data_impl impls[DATA_DIFF_NIMPL];
	size_t r[DATA_DIFF_NIMPL], a = 0, piece;
	int rc = 0;

	if (maxv > DATA_DIFF_MAXV)
		maxv = DATA_DIFF_MAXV;
	for (size_t k = 0; k < DATA_DIFF_NIMPL; k++) {
		if (only != SMTP_DATA_IMPL_AUTO && data_diff_impls[k] != only &&
		    data_diff_impls[k] != SMTP_DATA_IMPL_REF)
			continue;
		if (smtp_data_impl_supported(data_diff_impls[k]))
			impls[nimpl++] = data_diff_impls[k];
	}
	o->clen = 0;
	o->done = false;
	o->end = 0;
	smtp_data_init(&d, c->max_size, c->max_line, c->bare, SMTP_DATA_LONG_ACCEPT);
	for (piece = 0; piece <= ncut && !smtp_data_done(&d); piece++) {
		size_t b = piece < ncut ? cuts[piece] : n, off = 0, plen = b - a;
		const char *q = data_diff_place(&mem, p + a, plen);

		while (off < plen && !smtp_data_done(&d)) {
			for (unsigned k = 0; k < nimpl; k++) {
				dk[k] = d;
				r[k] = smtp_data_scan_impl(impls[k], &dk[k], q + off, plen - off,
				                           v[k], maxv, &nv[k]);
			}
			for (unsigned k = 1; k < nimpl; k++) {
				const char *name = smtp_data_impl_name(impls[k]);

				if (r[k] != r[0] || nv[k] != nv[0]) {
					rc = data_diff_fail(err, errlen,
					                    "piece %zu @%zu+%zu: %s consumed %zu "
					                    "views %u, ref %zu views %u",
					                    piece, a, off, name, r[k], nv[k], r[0],
					                    nv[0]);
					goto out;
				}
				if (memcmp(v[k], v[0], nv[0] * sizeof(v[0][0]))) {
					rc = data_diff_fail(err, errlen,
					                    "piece %zu @%zu+%zu: %s views differ",
					                    piece, a, off, name);
					goto out;
				}
				if (!data_diff_same_state(&dk[k], &dk[0])) {
					rc = data_diff_fail(
					    err, errlen,
					    "piece %zu @%zu+%zu: %s state: size %llu flags %#x "
					    "linelen %u state %u; ref %llu %#x %u %u",
					    piece, a, off, name, (unsigned long long)dk[k].size,
					    dk[k].flags, dk[k].linelen, dk[k].state,
					    (unsigned long long)dk[0].size, dk[0].flags,
					    dk[0].linelen, dk[0].state);
					goto out;
				}
			}
			for (unsigned j = 0; j < nv[0]; j++) {
				const char *vb = v[0][j].iov_base;
				size_t vl = v[0][j].iov_len;

				if (vl == 0) {
					rc = data_diff_fail(err, errlen, "empty view");
					goto out;
				}
				/* In this piece, or a static CR / LF / CRLF. */
				if (!(vb >= q + off && vb + vl <= q + off + r[0]) &&
				    !(vl <= 2 &&
				      (!memcmp(vb, "\r\n", vl) || (vl == 1 && *vb == '\n')))) {
					rc =
					    data_diff_fail(err, errlen, "view %u out of bounds", j);
					goto out;
				}
				data_diff_put(o, vb, vl);
			}
			if (r[0] == 0 && nv[0] == 0) {
				rc = data_diff_fail(err, errlen, "no progress at %zu+%zu", a, off);
				goto out;
			}
			d = dk[0];
			off += r[0];
		}
		if (smtp_data_done(&d)) {
			unsigned nv0;
			struct iovec v0[3];

			o->done = true;
			o->end = a + off;
			if (smtp_data_scan(&d, q + off, plen - off, v0, 3, &nv0) != 0 || nv0) {
				rc = data_diff_fail(err, errlen, "scan after the end consumed");
				goto out;
			}
		}
		a = b;
	}
	o->size = d.size;
	o->flags = d.flags;
	o->linelen = d.linelen;
out:
	data_diff_mem_fini(&mem);
	return rc;
}

/* Compares a streamed outcome with the oracle's. */
static int data_diff_check(const struct data_diff_cfg *c, const struct data_diff_out *got,
                           const struct data_diff_out *want, char *err, size_t errlen)
{
	if (got->clen != want->clen || memcmp(got->content, want->content, got->clen))
		return data_diff_fail(err, errlen, "content differs from the oracle (%zu vs %zu)",
		                      got->clen, want->clen);
	if (got->flags != want->flags)
		return data_diff_fail(err, errlen, "flags %#x, oracle %#x", got->flags,
		                      want->flags);
	if (got->size != want->size || got->done != want->done || got->end != want->end)
		return data_diff_fail(err, errlen, "size/done/end %llu/%d/%zu, oracle %llu/%d/%zu",
		                      (unsigned long long)got->size, got->done, got->end,
		                      (unsigned long long)want->size, want->done, want->end);
	if (c->max_line && got->linelen != want->linelen)
		return data_diff_fail(err, errlen, "linelen %u, oracle %u", got->linelen,
		                      want->linelen);
	return 0;
}

#endif
