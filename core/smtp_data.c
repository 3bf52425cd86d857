/* smtp_data: streaming end-of-data detection and dot-unstuffing for DATA
 * (RFC 5321 4.1.1.4, 4.5.2). It returns views into the caller's buffers and
 * never copies. See smtp_data.h for the contract and docs/data-parser.md for
 * the design.
 *
 * Two implementations live here. smtp_data_scan_ref() is a byte-at-a-time
 * automaton written for clarity; it defines the results. The fast path
 * classifies 64 bytes at a time into bitmasks of CR, LF and '.', from which
 * every event is a few bit operations away: a bare LF is an LF not preceded
 * by a CR, a bare CR is a CR not followed by an LF, a line start is the
 * position after a real CRLF. Blocks with nothing to do (almost all of
 * them) are recognised without the masks, by one vector test on the block
 * and the block one byte back (about 30 instructions per 64 bytes); the rare
 * events (a dot at a line start, a bare CR/LF) are handled one by one. The
 * vector code is AVX-512BW, AVX2, SSE2 or portable 64-bit word code, chosen
 * at run time; all share one body. */
#include "core/smtp_data.h"

#include <errno.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define DATA_X86 1
#include <immintrin.h>
#endif

enum {
	D_LINE_START = 0, /* after CRLF (or at the start of the content) */
	D_MID,            /* inside a line */
	D_CR,             /* inside a line, just after a CR (emitted) */
	D_DOT,            /* a '.' at the start of a line (dropped) */
	D_DOT_CR,         /* ".\r" at the start of a line (the CR held back) */
};

/* <c> ? <a> : <b>, where a branch would mispredict. Written in C, gcc 12
 * makes it a cmov in the hot loop but clang 14 makes it a branch (its cmov
 * conversion ignores __builtin_unpredictable), which halves its speed on
 * 10 MB messages. */
static inline __attribute__((always_inline)) int64_t data_cmov(bool c, int64_t a, int64_t b)
{
#ifdef DATA_X86
	__asm__("{testb %2, %2; cmovne %1, %0|test %2, %2; cmovne %0, %1}"
	        : "+r"(b)
	        : "r"(a), "q"(c)
	        : "cc");
	return b;
#else
	return c ? a : b;
#endif
}

/* Static memory for bytes that are not in the current buffer: the CR of a
 * ".\r" held back across a call, and the CRLF of a normalized bare CR/LF. */
static const char data_crlf[2] = {'\r', '\n'};

void smtp_data_init(struct smtp_data *d, uint64_t max_size, uint32_t max_line,
                    enum smtp_data_bare bare, enum smtp_data_long longp)
{
	/* The shortest line is "." CRLF: a limit under 3 octets would flag
	 * every line, so such a limit is taken as 3 (conf refuses it anyway). */
	if (max_line && max_line < 3)
		max_line = 3;
	*d = (struct smtp_data){
	    .max_size = max_size,
	    .max_line = max_line,
	    .state = D_LINE_START,
	    .bare = (uint8_t)bare,
	    .longp = (uint8_t)longp,
	};
}

/*
 * The reference. One byte at a time; p[run..i) is content not yet emitted.
 * Before each byte it stops if fewer than 3 view slots are left: one byte
 * emits at most two views (the run and a static) and the final run needs one.
 */

struct emitter {
	struct smtp_data *d;
	struct iovec *v;
	unsigned n;
};

static void emit(struct emitter *e, const char *p, size_t len)
{
	if (len == 0)
		return;
	e->v[e->n].iov_base = (void *)p;
	e->v[e->n].iov_len = len;
	e->n++;
	e->d->size += len;
	if (e->d->max_size && e->d->size > e->d->max_size)
		e->d->flags |= SMTP_DATA_F_TOO_BIG;
}

/* One received octet of the current line, other than its line ending. */
static void line_char(struct smtp_data *d)
{
	if (!d->max_line)
		return;
	if (d->linelen != UINT32_MAX)
		d->linelen++;
	/* RFC 5321 4.5.3.1.6: 1000 octets including the CRLF. */
	if ((uint64_t)d->linelen + 2 > d->max_line)
		d->flags |= SMTP_DATA_F_LONG_LINE;
}

size_t smtp_data_scan_ref(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                          unsigned maxv, unsigned *nv)
{
	struct emitter e = {d, v, 0};
	size_t i = 0, run = 0;
	bool normalize = d->bare == SMTP_DATA_BARE_NORMALIZE;

	*nv = 0;
	if (d->flags & SMTP_DATA_F_DONE)
		return 0;
	while (i < len) {
		char c = p[i];

		if (e.n + 3 > maxv)
			break;
		switch (d->state) {
		case D_LINE_START:
			if (c == '.') {
				/* RFC 5321 4.5.2: drop the leading dot. */
				emit(&e, p + run, i - run);
				run = ++i;
				d->state = D_DOT;
				continue;
			}
			d->state = D_MID;
			continue;
		case D_MID:
			if (c == '\r') {
				d->state = D_CR;
			} else if (c == '\n') {
				/* Bare LF: it ends the line for the length count,
				 * but never starts one for dots (smuggling). */
				d->flags |= SMTP_DATA_F_BARE_LF;
				if (normalize) {
					emit(&e, p + run, i - run);
					emit(&e, data_crlf, 2);
					run = i + 1;
				}
				d->linelen = 0;
			} else {
				line_char(d);
			}
			i++;
			continue;
		case D_CR:
			if (c == '\n') {
				d->linelen = 0;
				d->state = D_LINE_START;
				i++;
				continue;
			}
			/* Bare CR: the CR is already emitted or in the run. */
			d->flags |= SMTP_DATA_F_BARE_CR;
			if (normalize) {
				emit(&e, p + run, i - run);
				emit(&e, data_crlf + 1, 1);
				run = i;
				d->linelen = 0;
			} else {
				line_char(d);
			}
			d->state = D_MID;
			continue; /* look at <c> again, inside the line */
		case D_DOT:
			if (c == '\r') {
				/* Hold the CR back: ".\r\n" is the end. */
				d->state = D_DOT_CR;
				run = ++i;
				continue;
			}
			line_char(d); /* the dot counts as received */
			d->state = D_MID;
			continue;
		case D_DOT_CR:
			if (c == '\n') {
				d->flags |= SMTP_DATA_F_DONE;
				d->state = D_LINE_START;
				*nv = e.n;
				return i + 1;
			}
			line_char(d); /* the dot */
			if (i > 0) {
				/* The CR is in this buffer, just before the run:
				 * take it back and treat it as any bare CR. */
				run = i - 1;
				d->state = D_CR;
				continue;
			}
			/* The CR was held back from the previous call. */
			d->flags |= SMTP_DATA_F_BARE_CR;
			emit(&e, data_crlf, normalize ? 2 : 1);
			if (normalize)
				d->linelen = 0;
			else
				line_char(d);
			d->state = D_MID;
			continue;
		}
	}
	emit(&e, p + run, i - run);
	*nv = e.n;
	return i;
}

/*
 * The fast path. Positions are offsets in <p>. The line length is kept as the
 * position <ls> where the current line started (negative if it started in an
 * earlier buffer): a line ending with the LF at <e> has e - ls octets before
 * its line ending, less one if that LF follows a CR.
 */

struct data_scan {
	struct smtp_data *d;
	const char *p;
	size_t len;
	struct iovec *v;
	unsigned n;       /* views stored */
	unsigned maxv;    /* stop when fewer than 3 slots are left */
	uint32_t flags;   /* to OR into d->flags when the call ends */
	uint32_t ml;      /* d->max_line */
	uint64_t normask; /* ~0 to normalize bare CR/LF (events), 0 to flag them */
	size_t run;       /* p[run..) is content not yet emitted */
	int64_t ls;       /* start of the current line, for max_line */
	uint64_t c_cr;    /* after a block: its last byte is a CR */
	uint64_t c_ls;    /* after a block: its last bytes are a CRLF */
	uint64_t force;   /* ~0 to take the exact path for every block */
	uint64_t acc_lf;  /* OR of bare-LF masks of the blocks done */
	uint64_t acc_cr;  /* OR of bare-CR masks of the blocks done */
};

/* Bitmasks of one 64-byte block: bit b is p[b] == '\r', '\n', '.'. */
struct data_masks {
	uint64_t cr, lf, dot;
};

/* The bytes the vector quick tests (AVX2, AVX-512) look for, as values the
 * compiler cannot see (see data_scan_body()); the others ignore them. */
struct data_k {
	char cr, lf, dot;
};

typedef void data_masks_fn(const char *p, struct data_masks *m);
typedef bool data_quick_fn(const char *p, const struct data_k *k, bool *lf);
typedef bool data_quick_first_fn(const char *p, const struct data_k *k, char prev, bool *lf);

/* The quick test from masks, <prev> being the byte before them. */
static inline __attribute__((always_inline)) bool data_quick_masks(const struct data_masks *m,
                                                                   char prev, bool *lf)
{
	*lf = m->lf != 0;
	return (m->lf ^ (m->cr << 1 | (prev == '\r'))) | (m->dot & (m->lf << 1 | (prev == '\n')));
}

static inline void data_view(struct data_scan *s, const char *p, size_t len)
{
	s->v[s->n].iov_base = (void *)p;
	s->v[s->n].iov_len = len;
	s->n++;
	s->d->size += len;
}

/* Emits the run up to <end>, if it is not empty. */
static inline void data_run(struct data_scan *s, size_t end)
{
	if (end > s->run)
		data_view(s, s->p + s->run, end - s->run);
}

static inline bool data_full(const struct data_scan *s)
{
	return s->n + 3 > s->maxv;
}

/* A line of <l> octets before its line ending (or so far) is complete (or
 * the call ends in it). */
static inline void data_line(struct data_scan *s, int64_t l)
{
	/* RFC 5321 4.5.3.1.6: 1000 octets including the CRLF. As in the
	 * reference, a line with no octet before its ending is never long. */
	if (l > 0 && l + 2 > (int64_t)s->ml)
		s->flags |= SMTP_DATA_F_LONG_LINE;
}

/* Ends the call at <q> in state <st>, the current line having <l> octets;
 * emits the run up to <q>. Returns <q>. Inlined where the end of data is
 * the common case, called elsewhere (data_finish()). */
static inline __attribute__((always_inline)) size_t
data_finish_inline(struct data_scan *s, size_t q, unsigned st, int64_t l, unsigned *nv)
{
	struct smtp_data *d = s->d;

	data_run(s, q);
	if (s->ml && st != D_LINE_START) {
		data_line(s, l);
		d->linelen = l > UINT32_MAX ? UINT32_MAX : (uint32_t)l;
	} else if (s->ml) {
		d->linelen = 0;
	}
	if (s->acc_lf)
		s->flags |= SMTP_DATA_F_BARE_LF;
	if (s->acc_cr)
		s->flags |= SMTP_DATA_F_BARE_CR;
	if (d->max_size && d->size > d->max_size)
		s->flags |= SMTP_DATA_F_TOO_BIG;
	d->flags |= s->flags;
	d->state = (uint8_t)st;
	*nv = s->n;
	return q;
}

static size_t data_finish(struct data_scan *s, size_t q, unsigned st, int64_t l, unsigned *nv)
{
	return data_finish_inline(s, q, st, l, nv);
}

/* Octets at the end of the consumed input that state <st> holds unresolved:
 * a CR that may start a CRLF, a dot that may start the end of data. */
static inline int64_t data_pending(unsigned st)
{
	return st == D_DOT_CR ? 2 : st == D_CR || st == D_DOT ? 1 : 0;
}

/* Stops in the block at <base> at <q> (not after a CR): bare CR/LF flags
 * only for the positions consumed. Every stop follows an event, so the run
 * is empty. */
static size_t data_stop(struct data_scan *s, size_t base, uint64_t blf, uint64_t bcr, size_t q,
                        unsigned st, unsigned *nv)
{
	size_t k = q - base;
	uint64_t below = k >= 64 ? ~0ull : (1ull << k) - 1;

	s->acc_lf |= blf & below;
	s->acc_cr |= bcr & below;
	return data_finish(s, q, st, (int64_t)q - s->ls - data_pending(st), nv);
}

/* Line lengths for the lines ending at the LFs in <lf> (in the block at
 * <base>, after the current line start). Unless s->force, max_line is at
 * least 128 and lines that start in the block are short: only the first LF
 * counts. */
static void data_lines(struct data_scan *s, size_t base, uint64_t lf, uint64_t crlf)
{
	unsigned b;

	if (!lf)
		return;
	if (!s->force) {
		b = (unsigned)__builtin_ctzll(lf);
		data_line(s, (int64_t)(base + b) - s->ls - (int64_t)(crlf >> b & 1));
		s->ls = (int64_t)(base + 64) - __builtin_clzll(lf);
		return;
	}
	while (lf) {
		b = (unsigned)__builtin_ctzll(lf);
		data_line(s, (int64_t)(base + b) - s->ls - (int64_t)(crlf >> b & 1));
		s->ls = (int64_t)(base + b) + 1;
		lf &= lf - 1;
	}
}

/* A block with events (<ev>): walk them, and the LFs for the line length, in
 * order. Returns true if the call ends here (its result in *<ret>). */
static bool data_events(struct data_scan *s, size_t base, uint64_t lf, uint64_t crlf, uint64_t blf,
                        uint64_t bcr, uint64_t dls, uint64_t ev, size_t *ret, unsigned *nv)
{
	const char *p = s->p;
	uint64_t m = ev;

	if (!s->ml)
		lf = 0;
	while (m) {
		unsigned b = (unsigned)__builtin_ctzll(m);
		uint64_t bit = 1ull << b;
		size_t pos = base + b, q;

		m &= m - 1;
		/* First the lines ending up to here (this LF included). */
		data_lines(s, base, lf & ((bit << 1) - 1), crlf);
		lf &= ~((bit << 1) - 1);
		if (dls & bit) {
			/* RFC 5321 4.5.2: a dot at a line start is dropped. */
			data_run(s, pos);
			s->run = pos + 1;
			if (data_full(s) || pos + 1 == s->len) {
				*ret = data_stop(s, base, blf, bcr, pos + 1, D_DOT, nv);
				return true;
			}
			if (p[pos + 1] != '\r')
				continue;
			if (pos + 2 == s->len) {
				/* ".\r": hold the CR back, it may be the end. */
				s->run = s->len;
				*ret = data_stop(s, base, blf, bcr, s->len, D_DOT_CR, nv);
				return true;
			}
			if (p[pos + 2] != '\n')
				continue; /* ".\rx": a bare CR, in the masks */
			/* CRLF "." CRLF: the end of data. */
			s->run = pos + 3;
			s->flags |= SMTP_DATA_F_DONE;
			*ret = data_stop(s, base, blf, bcr, pos + 3, D_LINE_START, nv);
			return true;
		}
		if (blf & bit) {
			/* Normalize a bare LF: CRLF in its place. */
			s->flags |= SMTP_DATA_F_BARE_LF;
			data_run(s, pos);
			data_view(s, data_crlf, 2);
			s->run = pos + 1;
			q = pos + 1;
		} else {
			/* Normalize the bare CR at pos - 1: an LF after it. */
			s->flags |= SMTP_DATA_F_BARE_CR;
			if (s->ml) {
				data_line(s, (int64_t)pos - 1 - s->ls);
				s->ls = (int64_t)pos;
			}
			data_run(s, pos);
			data_view(s, data_crlf + 1, 1);
			s->run = pos;
			q = pos;
		}
		if (data_full(s)) {
			*ret = data_stop(s, base, blf, bcr, q, D_MID, nv);
			return true;
		}
	}
	data_lines(s, base, lf, crlf);
	s->acc_lf |= blf;
	s->acc_cr |= bcr;
	return false;
}

/* The states that hold unresolved octets from the previous call, resolved
 * byte by byte as the reference does. Returns true if the call ends here
 * (its result in *<ret>); else *<i> is where the block scan starts, in
 * state *<st> (D_LINE_START or D_MID), with *<ll> octets in the line. */
static bool data_prelude(struct data_scan *s, unsigned *st, size_t *i, uint64_t *ll, size_t *ret,
                         unsigned *nv)
{
	const char *p = s->p;
	bool normalize = s->normask != 0;

	while (*st >= D_CR) {
		char c;

		if (*i == s->len || data_full(s))
			goto stop;
		c = p[*i];
		switch (*st) {
		case D_CR:
			if (c == '\n') {
				*ll = 0;
				*st = D_LINE_START;
				++*i;
				break;
			}
			s->flags |= SMTP_DATA_F_BARE_CR;
			if (normalize) {
				data_run(s, *i);
				data_view(s, data_crlf + 1, 1);
				s->run = *i;
				*ll = 0;
			} else {
				++*ll;
			}
			*st = D_MID;
			break;
		case D_DOT:
			if (c == '\r') {
				*st = D_DOT_CR;
				s->run = ++*i;
				break;
			}
			++*ll;
			*st = D_MID;
			break;
		case D_DOT_CR:
			if (c == '\n') {
				s->flags |= SMTP_DATA_F_DONE;
				s->run = *i + 1;
				*ret = data_finish(s, *i + 1, D_LINE_START, 0, nv);
				return true;
			}
			++*ll;
			if (*i > 0) {
				s->run = *i - 1;
				*st = D_CR;
				break;
			}
			s->flags |= SMTP_DATA_F_BARE_CR;
			data_view(s, data_crlf, normalize ? 2 : 1);
			if (normalize)
				*ll = 0;
			else
				++*ll;
			*st = D_MID;
			break;
		}
		/* The reference checks at every increment; a reset may follow. */
		if (s->ml)
			data_line(s, (int64_t)*ll);
	}
	if (!data_full(s))
		return false;
stop:
	*ret = data_finish(s, *i, *st, (int64_t)*ll, nv);
	return true;
}

/* A block that may hold events, or any block when max_line is small:
 * everything computed exactly, from the masks of <nb> bytes at <base> (the
 * high bits zero if <nb> < 64) and the carries: <c_cr>, the byte before is a
 * CR; <c_ls>, <base> starts a line. Sets s->c_cr, s->c_ls for the next
 * block. Returns true if the call ends here (its result in *<ret>). */
static bool data_block_slow(struct data_scan *s, size_t base, const struct data_masks *m,
                            unsigned nb, uint64_t c_cr, uint64_t c_ls, size_t *ret, unsigned *nv)
{
	uint64_t crp = m->cr << 1 | c_cr; /* preceded by a CR */
	uint64_t crlf = m->lf & crp;
	uint64_t blf = m->lf & ~crp;
	uint64_t bcr = crp & ~m->lf; /* just after a bare CR */
	uint64_t dls = m->dot & (crlf << 1 | c_ls);
	uint64_t ev;

	if (nb < 64)
		bcr &= (1ull << nb) - 1; /* the byte after the last is unknown yet */
	s->c_cr = m->cr >> (nb - 1) & 1;
	s->c_ls = crlf >> (nb - 1) & 1;
	ev = dls | ((blf | bcr) & s->normask);
	if (ev)
		return data_events(s, base, m->lf, crlf, blf, bcr, dls, ev, ret, nv);
	s->acc_lf |= blf;
	s->acc_cr |= bcr;
	if (s->ml)
		data_lines(s, base, m->lf, crlf);
	return false;
}

/* The common case of the block that ends a message: its first event (bare
 * CR/LF or dot at a line start) is a dot at a line start followed by CRLF,
 * the end of data, and the views have room for the run before it. Then
 * nothing before it needs a cut or a flag, and the call ends there, with
 * the results data_block_slow() would give. <lines>: count the lines that
 * end in the block before the dot (the hot loop knows they are short).
 * Returns false, having changed nothing, in every other case. */
static inline __attribute__((always_inline)) bool
data_fast_end(struct data_scan *s, size_t base, const struct data_masks *m, uint64_t c_cr,
              uint64_t c_ls, bool lines, size_t *ret, unsigned *nv)
{
	uint64_t crp = m->cr << 1 | c_cr;
	uint64_t crlf = m->lf & crp;
	uint64_t dls = m->dot & (crlf << 1 | c_ls);
	uint64_t ev = (m->lf ^ crp) | dls; /* blf | bcr | dls */
	uint64_t first = ev & -ev;
	size_t pos = base + (size_t)__builtin_ctzll(first | 1ull << 63);

	if (!(dls & first) || pos + 3 > s->len || s->n + 4 > s->maxv || s->p[pos + 1] != '\r' ||
	    s->p[pos + 2] != '\n')
		return false;
	if (lines && s->ml)
		data_lines(s, base, m->lf & (first - 1), crlf);
	data_run(s, pos);
	s->run = pos + 3;
	s->flags |= SMTP_DATA_F_DONE;
	*ret = data_finish_inline(s, pos + 3, D_LINE_START, 0, nv);
	return true;
}

/* A block with carries (the first of a call, and the last if short): the
 * quick test on the masks, else data_block_slow(). */
static bool data_block_edge(struct data_scan *s, size_t base, const struct data_masks *m,
                            unsigned nb, uint64_t c_cr, uint64_t c_ls, size_t *ret, unsigned *nv)
{
	uint64_t valid = nb < 64 ? (1ull << nb) - 1 : ~0ull;
	uint64_t crp = m->cr << 1 | c_cr;

	/* Zero iff every LF follows a CR, every CR precedes an LF, and no
	 * dot starts a line. */
	if (((m->lf ^ crp) & valid) | (m->dot & (m->lf << 1 | c_ls)) | s->force) {
		if (data_fast_end(s, base, m, c_cr, c_ls, true, ret, nv))
			return true;
		return data_block_slow(s, base, m, nb, c_cr, c_ls, ret, nv);
	}
	s->c_cr = m->cr >> (nb - 1) & 1;
	s->c_ls = m->lf >> (nb - 1) & 1;
	if (s->ml)
		data_lines(s, base, m->lf, m->lf);
	return false;
}

/* Where the current line starts, after the hot loop: just after the last
 * LF of the block at <lb>, or <ls0> if <lb> is still <lb0> (no LF since). */
static inline __attribute__((always_inline)) int64_t
data_line_start(const char *p, int64_t lb, int64_t lb0, int64_t ls0, data_masks_fn *masks)
{
	struct data_masks m;

	if (lb == lb0)
		return ls0;
	masks(p + lb, &m); /* only m.lf is used: the rest is dead code */
	return lb + 64 - __builtin_clzll(m.lf);
}

/* The scan, around a block classifier: <quick>(p, k, &lf) says whether the 64
 * bytes at <p> may need work, looking at p[-1] too (false only if every LF
 * follows a CR, every CR precedes an LF and no dot follows an LF), and
 * whether they hold an LF; <quick_first>() does the same with <prev> in
 * place of p[-1] (which may not be readable); <masks>() gives the masks for
 * the exact path.
 *
 * The hot loop does not count line lengths: it keeps <lb>, the base of the
 * last block with an LF. A line ending in the block at <base> started after
 * an LF in the block at <lb>, so it has fewer than base - lb + 63 octets:
 * only when base - lb > max_line - 64 may it be long, and the exact path
 * counts. (The current line start is found again from <lb>.) The loop keeps
 * lb + max_line - 64 (<dl>), so that each block costs one compare.
 *
 * The exact path first tries data_fast_end(): the block that ends a message
 * almost never has an event before the end of data. */
static inline __attribute__((always_inline)) size_t
data_scan_body(struct smtp_data *d, const char *p, size_t len, struct iovec *v, unsigned maxv,
               unsigned *nv, data_masks_fn *masks, data_quick_fn *quick,
               data_quick_first_fn *quick_first)
{
	struct data_scan s = {
	    .d = d,
	    .p = p,
	    .len = len,
	    .v = v,
	    .maxv = maxv,
	    .ml = d->max_line,
	    .normask = d->bare == SMTP_DATA_BARE_NORMALIZE ? ~0ull : 0,
	    /* Below 128, lines inside a block may be long: count exactly. */
	    .force = d->max_line && d->max_line < 128 ? ~0ull : 0,
	};
	struct data_masks m;
	unsigned st = d->state;
	uint64_t ll = d->linelen, c_cr = 0, c_ls;
	size_t i = 0, base, ret;

	*nv = 0;
	if (d->flags & SMTP_DATA_F_DONE)
		return 0;
	if (st >= D_CR || data_full(&s)) {
		if (data_prelude(&s, &st, &i, &ll, &ret, nv))
			return ret;
	}
	s.ls = (int64_t)i - (int64_t)ll;
	c_ls = st == D_LINE_START;
	s.c_cr = c_cr;
	s.c_ls = c_ls;
	base = i;
	if (base + 64 <= len) {
		int64_t ls0 = s.ls, lb0 = ls0 - 64;
		/* Exact path when <thr> octets passed since the last LF: a
		 * line may be long (-1: always; never once one was, or
		 * without a limit: 2^62 is past any offset). */
		int64_t thr = !s.ml || (d->flags & SMTP_DATA_F_LONG_LINE) ? (int64_t)1 << 62
		              : s.force                                   ? -1
		                                                          : (int64_t)s.ml - 64;
		/* <lb> + <thr>: the last block the hot loop may take. */
		int64_t dl = lb0 + thr;
		size_t last = len - 64;
		/* Hidden from the optimizer: gcc 12 builds a splat of a
		 * known byte from a general register and rebuilds it in
		 * every pass of the loop (5 instructions a block); splats of
		 * unknown bytes are built once, before it. */
		struct data_k k = {'\r', '\n', '.'};
		bool lf, work;

		__asm__("" : "+r"(k.cr), "+r"(k.lf), "+r"(k.dot));

		/* The first block has carries from the state (c_cr is 0 after
		 * the prelude), not from the byte before. */
		work = quick_first(p + base, &k, c_ls ? '\n' : 0, &lf);
		for (;;) {
			/* The hot loop: almost every block has nothing to do.
			 * It makes no call, so its constants stay in
			 * registers. The deadline moves when the block has an
			 * LF, as a cmov: a branch here mispredicts on real
			 * text. */
			while (__builtin_expect(!work && (int64_t)base <= dl, 1)) {
				int64_t ndl = (int64_t)base + thr;

				dl = data_cmov(lf, ndl, dl);
				base += 64;
				if (base > last)
					goto hot_end;
				work = quick(p + base, &k, &lf);
			}
			if (base > i) {
				/* From the second block on, carries are
				 * bytes. */
				c_cr = p[base - 1] == '\r';
				c_ls = p[base - 1] == '\n' && p[base - 2] == '\r';
			}
			masks(p + base, &m);
			/* The block that ends the message, usually. Its lines
			 * are short, as in the hot loop. */
			if ((int64_t)base <= dl &&
			    data_fast_end(&s, base, &m, c_cr, c_ls, false, &ret, nv))
				return ret;
			s.ls = data_line_start(p, dl - thr, lb0, ls0, masks);
			if (data_block_slow(&s, base, &m, 64, c_cr, c_ls, &ret, nv))
				return ret;
			ls0 = s.ls;
			lb0 = ls0 - 64;
			/* The line so far, less a CR that may end it, is a
			 * lower bound: a long one stops here. */
			if (s.ml)
				data_line(&s, (int64_t)base + 63 - ls0);
			if (s.flags & SMTP_DATA_F_LONG_LINE)
				thr = (int64_t)1 << 62;
			dl = lb0 + thr;
			base += 64;
			if (base > last)
				break;
			work = quick(p + base, &k, &lf);
		}
	hot_end:
		s.ls = data_line_start(p, dl - thr, lb0, ls0, masks);
		c_cr = p[base - 1] == '\r';
		c_ls = p[base - 1] == '\n' && p[base - 2] == '\r';
		s.c_cr = c_cr;
		s.c_ls = c_ls;
	}
	if (base < len) {
		unsigned nb = (unsigned)(len - base);

		if (len >= 64) {
			/* Overlap the previous bytes and shift them out. */
			masks(p + len - 64, &m);
			m.cr >>= 64 - nb;
			m.lf >>= 64 - nb;
			m.dot >>= 64 - nb;
		} else {
			char blk[64] = {0};

			memcpy(blk, p + base, nb);
			masks(blk, &m);
			m.cr &= (1ull << nb) - 1;
			m.lf &= (1ull << nb) - 1;
			m.dot &= (1ull << nb) - 1;
		}
		if (data_block_edge(&s, base, &m, nb, c_cr, c_ls, &ret, nv))
			return ret;
	}
	st = s.c_cr ? D_CR : s.c_ls ? D_LINE_START : D_MID;
	return data_finish(&s, len, st, (int64_t)len - s.ls - (int64_t)s.c_cr, nv);
}

/*
 * Mask implementations.
 */

/* Bit j set where byte j of <w> equals the byte repeated in <c>. */
static inline uint64_t swar_eq(uint64_t w, uint64_t c)
{
	uint64_t x = w ^ c;
	uint64_t t = ~(((x & 0x7f7f7f7f7f7f7f7full) + 0x7f7f7f7f7f7f7f7full) | x);

	/* Gather the 8 high bits into one byte (no carries can meet). */
	return ((t & 0x8080808080808080ull) >> 7) * 0x0102040810204080ull >> 56;
}

static inline __attribute__((always_inline)) void data_masks_scalar(const char *p,
                                                                    struct data_masks *m)
{
	m->cr = m->lf = m->dot = 0;
	for (unsigned k = 0; k < 8; k++) {
		uint64_t w;

		memcpy(&w, p + 8 * k, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		w = __builtin_bswap64(w);
#endif
		m->cr |= swar_eq(w, 0x0d0d0d0d0d0d0d0dull) << 8 * k;
		m->lf |= swar_eq(w, 0x0a0a0a0a0a0a0a0aull) << 8 * k;
		m->dot |= swar_eq(w, 0x2e2e2e2e2e2e2e2eull) << 8 * k;
	}
}

static inline __attribute__((always_inline)) bool
data_quick_first_scalar(const char *p, const struct data_k *k, char prev, bool *lf)
{
	struct data_masks m;

	data_masks_scalar(p, &m);
	return data_quick_masks(&m, prev, lf);
}

static inline __attribute__((always_inline)) bool
data_quick_scalar(const char *p, const struct data_k *k, bool *lf)
{
	return data_quick_first_scalar(p, k, p[-1], lf);
}

static size_t data_scan_scalar(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                               unsigned maxv, unsigned *nv)
{
	return data_scan_body(d, p, len, v, maxv, nv, data_masks_scalar, data_quick_scalar,
	                      data_quick_first_scalar);
}

#ifdef DATA_X86
static inline __attribute__((always_inline)) uint64_t sse2_eq(const __m128i *b, __m128i c)
{
	uint64_t m0 = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b[0], c));
	uint64_t m1 = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b[1], c));
	uint64_t m2 = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b[2], c));
	uint64_t m3 = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b[3], c));

	return m0 | m1 << 16 | m2 << 32 | m3 << 48;
}

static inline __attribute__((always_inline)) void data_masks_sse2(const char *p,
                                                                  struct data_masks *m)
{
	__m128i b[4];

	for (unsigned k = 0; k < 4; k++)
		b[k] = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k));
	m->cr = sse2_eq(b, _mm_set1_epi8('\r'));
	m->lf = sse2_eq(b, _mm_set1_epi8('\n'));
	m->dot = sse2_eq(b, _mm_set1_epi8('.'));
}

/* Four movemasks per 16 bytes are cheaper here than a vector test on two
 * loads (measured): the quick test runs on the masks. */
static inline __attribute__((always_inline)) bool
data_quick_first_sse2(const char *p, const struct data_k *k, char prev, bool *lf)
{
	struct data_masks m;

	data_masks_sse2(p, &m);
	return data_quick_masks(&m, prev, lf);
}

static inline __attribute__((always_inline)) bool data_quick_sse2(const char *p,
                                                                  const struct data_k *k, bool *lf)
{
	return data_quick_first_sse2(p, k, p[-1], lf);
}

static size_t data_scan_sse2(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                             unsigned maxv, unsigned *nv)
{
	return data_scan_body(d, p, len, v, maxv, nv, data_masks_sse2, data_quick_sse2,
	                      data_quick_first_sse2);
}

__attribute__((target("avx2,bmi"))) static inline __attribute__((always_inline)) uint64_t
avx2_eq(__m256i lo, __m256i hi, __m256i c)
{
	uint64_t m0 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, c));
	uint64_t m1 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, c));

	return m0 | m1 << 32;
}

__attribute__((target("avx2,bmi"))) static inline __attribute__((always_inline)) void
data_masks_avx2(const char *p, struct data_masks *m)
{
	__m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)p);
	__m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));

	m->cr = avx2_eq(lo, hi, _mm256_set1_epi8('\r'));
	m->lf = avx2_eq(lo, hi, _mm256_set1_epi8('\n'));
	m->dot = avx2_eq(lo, hi, _mm256_set1_epi8('.'));
}

__attribute__((target("avx2,bmi"))) static inline __attribute__((always_inline)) __m256i
avx2_quick(__m256i b, __m256i a, const struct data_k *k, __m256i *l)
{
	__m256i vlf = _mm256_set1_epi8(k->lf);

	*l = _mm256_cmpeq_epi8(b, vlf);
	return _mm256_or_si256(_mm256_xor_si256(*l, _mm256_cmpeq_epi8(a, _mm256_set1_epi8(k->cr))),
	                       _mm256_and_si256(_mm256_cmpeq_epi8(b, _mm256_set1_epi8(k->dot)),
	                                        _mm256_cmpeq_epi8(a, vlf)));
}

/* <a0>: the 32 bytes from p - 1. */
__attribute__((target("avx2,bmi"))) static inline __attribute__((always_inline)) bool
avx2_quick64(const char *p, __m256i b0, __m256i a0, const struct data_k *k, bool *lf)
{
	__m256i l0, l1, l, q;

	q = _mm256_or_si256(avx2_quick(b0, a0, k, &l0),
	                    avx2_quick(_mm256_loadu_si256((const __m256i *)(const void *)(p + 32)),
	                               _mm256_loadu_si256((const __m256i *)(const void *)(p + 31)),
	                               k, &l1));
	l = _mm256_or_si256(l0, l1);
	*lf = !_mm256_testz_si256(l, l);
	return !_mm256_testz_si256(q, q);
}

__attribute__((target("avx2,bmi"))) static inline __attribute__((always_inline)) bool
data_quick_avx2(const char *p, const struct data_k *k, bool *lf)
{
	return avx2_quick64(p, _mm256_loadu_si256((const __m256i *)(const void *)p),
	                    _mm256_loadu_si256((const __m256i *)(const void *)(p - 1)), k, lf);
}

__attribute__((target("avx2,bmi"))) static inline __attribute__((always_inline)) bool
data_quick_first_avx2(const char *p, const struct data_k *k, char prev, bool *lf)
{
	__m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)p);
	/* [prev, p[0..30]]: across the two lanes, alignr on a permute. */
	__m256i hi = _mm256_permute2x128_si256(_mm256_set1_epi8(prev), b0, 0x21);

	return avx2_quick64(p, b0, _mm256_alignr_epi8(b0, hi, 15), k, lf);
}

__attribute__((target("avx2,bmi"))) static size_t data_scan_avx2(struct smtp_data *d, const char *p,
                                                                 size_t len, struct iovec *v,
                                                                 unsigned maxv, unsigned *nv)
{
	return data_scan_body(d, p, len, v, maxv, nv, data_masks_avx2, data_quick_avx2,
	                      data_quick_first_avx2);
}

__attribute__((target("avx512f,avx512bw,bmi"))) static inline __attribute__((always_inline)) void
data_masks_avx512(const char *p, struct data_masks *m)
{
	__m512i b = _mm512_loadu_si512((const void *)p);

	m->cr = _mm512_cmpeq_epi8_mask(b, _mm512_set1_epi8('\r'));
	m->lf = _mm512_cmpeq_epi8_mask(b, _mm512_set1_epi8('\n'));
	m->dot = _mm512_cmpeq_epi8_mask(b, _mm512_set1_epi8('.'));
}

__attribute__((target("avx512f,avx512bw,bmi"))) static inline __attribute__((always_inline)) bool
avx512_quick(__m512i b, __m512i a, const struct data_k *k, bool *lf)
{
	__m512i vlf = _mm512_set1_epi8(k->lf);
	uint64_t l = _mm512_cmpeq_epi8_mask(b, vlf);
	uint64_t crp = _mm512_cmpeq_epi8_mask(a, _mm512_set1_epi8(k->cr));
	uint64_t dls = _mm512_mask_cmpeq_epi8_mask(_mm512_cmpeq_epi8_mask(a, vlf), b,
	                                           _mm512_set1_epi8(k->dot));

	*lf = l != 0;
	return (l ^ crp) | dls;
}

__attribute__((target("avx512f,avx512bw,bmi"))) static inline __attribute__((always_inline)) bool
data_quick_avx512(const char *p, const struct data_k *k, bool *lf)
{
	return avx512_quick(_mm512_loadu_si512((const void *)p),
	                    _mm512_loadu_si512((const void *)(p - 1)), k, lf);
}

__attribute__((target("avx512f,avx512bw,bmi"))) static inline __attribute__((always_inline)) bool
data_quick_first_avx512(const char *p, const struct data_k *k, char prev, bool *lf)
{
	/* p[-1] may be unmapped: a masked load does not touch it. */
	__m512i a = _mm512_maskz_loadu_epi8(~1ull, p - 1);

	return avx512_quick(_mm512_loadu_si512((const void *)p), _mm512_mask_set1_epi8(a, 1, prev),
	                    k, lf);
}

__attribute__((target("avx512f,avx512bw,bmi"))) static size_t
data_scan_avx512(struct smtp_data *d, const char *p, size_t len, struct iovec *v, unsigned maxv,
                 unsigned *nv)
{
	return data_scan_body(d, p, len, v, maxv, nv, data_masks_avx512, data_quick_avx512,
	                      data_quick_first_avx512);
}
#endif

/*
 * Dispatch.
 */

typedef size_t data_scan_fn(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                            unsigned maxv, unsigned *nv);

static const char *const data_impl_names[] = {
    [SMTP_DATA_IMPL_AUTO] = "auto",     [SMTP_DATA_IMPL_SCALAR] = "scalar",
    [SMTP_DATA_IMPL_SSE2] = "sse2",     [SMTP_DATA_IMPL_AVX2] = "avx2",
    [SMTP_DATA_IMPL_AVX512] = "avx512", [SMTP_DATA_IMPL_REF] = "ref",
};

static enum smtp_data_impl data_impl_best(void)
{
#ifdef DATA_X86
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi"))
		return SMTP_DATA_IMPL_AVX2;
	return SMTP_DATA_IMPL_SSE2;
#else
	return SMTP_DATA_IMPL_SCALAR;
#endif
}

bool smtp_data_impl_supported(enum smtp_data_impl impl)
{
	switch (impl) {
	case SMTP_DATA_IMPL_AUTO:
	case SMTP_DATA_IMPL_SCALAR:
	case SMTP_DATA_IMPL_REF:
		return true;
#ifdef DATA_X86
	case SMTP_DATA_IMPL_SSE2:
		return true;
	case SMTP_DATA_IMPL_AVX2:
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi");
	case SMTP_DATA_IMPL_AVX512:
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("bmi");
#endif
	default:
		return false;
	}
}

const char *smtp_data_impl_name(enum smtp_data_impl impl)
{
	if (impl == SMTP_DATA_IMPL_AUTO)
		impl = data_impl_best();
	if ((unsigned)impl >= sizeof(data_impl_names) / sizeof(data_impl_names[0]))
		return "?";
	return data_impl_names[impl];
}

static data_scan_fn *data_impl_fn(enum smtp_data_impl impl)
{
	if (impl == SMTP_DATA_IMPL_AUTO)
		impl = data_impl_best();
	if (!smtp_data_impl_supported(impl))
		return data_scan_scalar;
	switch (impl) {
#ifdef DATA_X86
	case SMTP_DATA_IMPL_SSE2:
		return data_scan_sse2;
	case SMTP_DATA_IMPL_AVX2:
		return data_scan_avx2;
	case SMTP_DATA_IMPL_AVX512:
		return data_scan_avx512;
#endif
	case SMTP_DATA_IMPL_REF:
		return smtp_data_scan_ref;
	default:
		return data_scan_scalar;
	}
}

/* Resolved on first use; every thread computes the same value, so the
 * relaxed race on it is benign. */
static data_scan_fn *data_scan_cur;

int smtp_data_set_impl(enum smtp_data_impl impl)
{
	if (!smtp_data_impl_supported(impl))
		return -ENOTSUP;
	__atomic_store_n(&data_scan_cur, data_impl_fn(impl), __ATOMIC_RELAXED);
	return 0;
}

size_t smtp_data_scan_impl(enum smtp_data_impl impl, struct smtp_data *d, const char *p, size_t len,
                           struct iovec *v, unsigned maxv, unsigned *nv)
{
	return data_impl_fn(impl)(d, p, len, v, maxv, nv);
}

size_t smtp_data_scan(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                      unsigned maxv, unsigned *nv)
{
	data_scan_fn *fn = __atomic_load_n(&data_scan_cur, __ATOMIC_RELAXED);

	if (!fn) {
		fn = data_impl_fn(SMTP_DATA_IMPL_AUTO);
		__atomic_store_n(&data_scan_cur, fn, __ATOMIC_RELAXED);
	}
	return fn(d, p, len, v, maxv, nv);
}
