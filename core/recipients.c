/* recipients: recipient tables (--recipients-file) as an immutable,
 * hash-indexed snapshot consulted at RCPT TO. Every string lives in one of
 * two arenas of records, and two open-addressing indexes (linear probing, at
 * most half full, so a miss ends at an empty slot after a probe or two)
 * point into them:
 *
 *   domain record:  u16 len, u8 flags, name[len]   (lower case, no root dot)
 *   address record: u32 dom, u16 len, local[len]   (folded unless exact)
 *
 * <dom> is the offset of the address's domain record, so a domain's name is
 * stored once however many users it has, and the domain records stay
 * together: a few hundred KB for ten thousand domains, which stay in cache
 * while the address records do not. A catch-all line ("@domain") is a flag
 * on the domain record: the answer is then KNOWN whatever the local part,
 * so the lookup returns before probing the addresses. Offset 0 is never a
 * record (an arena starts with a spare octet): an index slot with off 0 is
 * empty. Records are unaligned and read with memcpy().
 *
 * Hash: FNV-1a over the normalised octets, then the murmur3 finaliser so
 * that the low bits (the slot) depend on every octet; an address's FNV
 * starts from its domain's hash, so the domain is hashed once a lookup.
 * The tables' contents come from the operator, not the peer, so a fixed
 * hash is enough: a peer can only choose which of the existing probe runs
 * it walks. At a million entries the index and the records are far out of
 * cache: a hit costs two dependent misses (slot, then record), a miss one
 * (the slot's tag rules out the record), and for "user+ext" the slot of
 * "user" is prefetched while "user+ext" is probed.
 *
 * The builder appends records as lines are read (domains are indexed at
 * once, growing by doubling, to find a line's domain record); addresses are
 * indexed by recipients_build(), in one table sized for all of them, which
 * also drops duplicates. Built on the main thread, then read-only and
 * shared by every worker; freed at the last unref. libc only. See
 * recipients.h. */
#include "core/recipients.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/policy.h"

#define RCPT_DOMAIN_MAX 253u /* RFC 1035 2.3.4, the root dot not counted */
#define RCPT_DOM_HDR    3u   /* u16 len, u8 flags */
#define RCPT_ADDR_HDR   6u   /* u32 dom, u16 len */
#define RCPT_F_CATCHALL 0x1u /* domain record: an "@domain" line was read */
#define RCPT_MIN_SLOTS  16u  /* an index's smallest size */
#define RCPT_NO_CUT     SIZE_MAX

/* Octets read from a file at a time; the fuzzer builds with fewer, so that
 * lines straddle reads. A line and its CR must fit. */
#ifndef RCPT_READ_CHUNK
#define RCPT_READ_CHUNK 65536u
#endif
_Static_assert(RCPT_READ_CHUNK > RECIPIENTS_LINE_MAX + 2, "read buffer shorter than a line");

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

struct recipients {
	atomic_ulong refs;
	char *doms, *addrs;                 /* the records; owned */
	struct recipients_slot *dom, *addr; /* owned */
	size_t dom_mask, addr_mask;         /* slots - 1 (powers of two) */
	size_t nentries, ndomains;
	size_t memory;     /* octets allocated for all of it */
	uint64_t delim[4]; /* extension delimiters, a bitmap over octets */
	bool exact;        /* local parts stored and compared as written */
	bool delim_dash;   /* '-' is a delimiter: owner-* and *-request stay whole */
};

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool is_delim(const uint64_t *set, unsigned char c)
{
	return (set[c >> 6] >> (c & 63)) & 1;
}

static uint64_t fmix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * FNV_PRIME;
	return h;
}

/* The FNV state an address's local part starts from: its domain's hash,
 * so that a lookup knows where to look before it has found the domain. */
static uint64_t addr_seed(uint64_t hdom)
{
	return FNV_OFFSET ^ hdom;
}

static uint64_t dom_hash(const unsigned char *d, size_t len)
{
	return fmix64(fnv(FNV_OFFSET, d, len));
}

static uint16_t rd16(const char *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint32_t rd32(const char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* True when the domain record at <off> holds the <len> normalised octets at <d>. */
static bool dom_eq(const char *arena, uint32_t off, const unsigned char *d, size_t len)
{
	const char *r = arena + off;

	return rd16(r) == len && memcmp(r + RCPT_DOM_HDR, d, len) == 0;
}

static bool addr_eq(const char *arena, uint32_t off, uint32_t dom, const unsigned char *l,
                    size_t len)
{
	const char *r = arena + off;

	return rd32(r) == dom && rd16(r + 4) == len && memcmp(r + RCPT_ADDR_HDR, l, len) == 0;
}

/* Returns the slot holding the domain <d> (normalised, hash <h>), or the
 * empty slot where it would go. */
static struct recipients_slot *dom_probe(struct recipients_slot *tab, size_t mask,
                                         const char *arena, uint64_t h, const unsigned char *d,
                                         size_t len)
{
	uint32_t tag = (uint32_t)(h >> 32);

	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		struct recipients_slot *s = &tab[i];

		if (s->off == 0 || (s->tag == tag && dom_eq(arena, s->off, d, len)))
			return s;
	}
}

static struct recipients_slot *addr_probe(struct recipients_slot *tab, size_t mask,
                                          const char *arena, uint64_t h, uint32_t dom,
                                          const unsigned char *l, size_t len)
{
	uint32_t tag = (uint32_t)(h >> 32);

	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		struct recipients_slot *s = &tab[i];

		if (s->off == 0 || (s->tag == tag && addr_eq(arena, s->off, dom, l, len)))
			return s;
	}
}

/* Formats one line into <err>. Control characters (a path can hold any)
 * become '?' so the reason stays on one line. */
static void __attribute__((format(printf, 3, 0)))
rcpt_vfmt(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (!err || errlen == 0)
		return;
	vsnprintf(err, errlen, fmt, ap);
	for (char *q = err; *q; q++) {
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			*q = '?';
	}
}

static void __attribute__((format(printf, 3, 4)))
rcpt_fmt(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rcpt_vfmt(err, errlen, fmt, ap);
	va_end(ap);
}

/* Fails the builder for good with <rc> and the reason, and copies the
 * reason into <err>. Returns <rc>. */
static int __attribute__((format(printf, 5, 6)))
builder_fail(struct recipients_builder *b, char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rcpt_vfmt(b->err, sizeof(b->err), fmt, ap);
	va_end(ap);
	b->rc = rc;
	rcpt_fmt(err, errlen, "%s", b->err);
	return rc;
}

/* The error of a builder that failed before. */
static int builder_failed(const struct recipients_builder *b, char *err, size_t errlen)
{
	rcpt_fmt(err, errlen, "%s", b->err);
	return b->rc;
}

void recipients_builder_init(struct recipients_builder *b, const struct recipients_opts *o)
{
	const char *d = o && o->delimiters ? o->delimiters : "+";

	memset(b, 0, sizeof(*b));
	for (; *d; d++)
		b->delim[(unsigned char)*d >> 6] |= 1ull << ((unsigned char)*d & 63);
	b->exact = o && o->exact;
}

/* Empties <b>, keeping its options. */
static void builder_reset(struct recipients_builder *b)
{
	uint64_t delim[4];
	bool exact = b->exact;

	memcpy(delim, b->delim, sizeof(delim));
	free(b->doms.p);
	free(b->addrs.p);
	free(b->dom);
	free(b->addr);
	memset(b, 0, sizeof(*b));
	memcpy(b->delim, delim, sizeof(delim));
	b->exact = exact;
}

void recipients_builder_fini(struct recipients_builder *b)
{
	builder_reset(b);
}

/* Makes room for <n> more octets of records. Returns the offset they go at,
 * or 0: out of memory (-ENOMEM in <rc>) or past 4 GB of records (-E2BIG),
 * which u32 offsets cannot reach. */
static uint32_t arena_reserve(struct recipients_arena *a, size_t n, int *rc)
{
	if (a->len == 0)
		a->len = 1; /* offset 0 marks an empty slot */
	if (n > UINT32_MAX - a->len) {
		*rc = -E2BIG;
		return 0;
	}
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;
		char *p;

		while (cap < a->len + n)
			cap *= 2;
		p = realloc(a->p, cap);
		if (!p) {
			*rc = -ENOMEM;
			return 0;
		}
		a->p = p;
		a->cap = cap;
	}
	a->len += n;
	return (uint32_t)(a->len - n);
}

/* Doubles the domain index (or makes the first). Returns 0 or -ENOMEM. */
static int dom_grow(struct recipients_builder *b)
{
	size_t cap = b->dom_cap ? b->dom_cap * 2 : RCPT_MIN_SLOTS;
	struct recipients_slot *tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; i < b->dom_cap; i++) {
		struct recipients_slot s = b->dom[i];
		const unsigned char *d;
		size_t len;

		if (s.off == 0)
			continue;
		len = rd16(b->doms.p + s.off);
		d = (const unsigned char *)b->doms.p + s.off + RCPT_DOM_HDR;
		*dom_probe(tab, cap - 1, b->doms.p, dom_hash(d, len), d, len) = s;
	}
	free(b->dom);
	b->dom = tab;
	b->dom_cap = cap;
	return 0;
}

/* Returns the offset of the record of domain <d> (normalised), adding it if
 * new; 0 with -ENOMEM or -E2BIG in <rc>. */
static uint32_t dom_intern(struct recipients_builder *b, const unsigned char *d, size_t len,
                           int *rc)
{
	uint64_t h = dom_hash(d, len);
	struct recipients_slot *s;
	uint16_t len16 = (uint16_t)len;
	uint32_t off;

	if (b->dom_cap) {
		s = dom_probe(b->dom, b->dom_cap - 1, b->doms.p, h, d, len);
		if (s->off)
			return s->off;
	}
	if ((b->ndom + 1) * 2 > b->dom_cap) {
		*rc = dom_grow(b);
		if (*rc < 0)
			return 0;
	}
	off = arena_reserve(&b->doms, RCPT_DOM_HDR + len, rc);
	if (!off)
		return 0;
	memcpy(b->doms.p + off, &len16, sizeof(len16));
	b->doms.p[off + 2] = 0;
	memcpy(b->doms.p + off + RCPT_DOM_HDR, d, len);
	s = dom_probe(b->dom, b->dom_cap - 1, b->doms.p, h, d, len);
	s->tag = (uint32_t)(h >> 32);
	s->off = off;
	b->ndom++;
	return off;
}

static int addr_append(struct recipients_builder *b, uint32_t dom, struct sv local)
{
	uint16_t len16 = (uint16_t)local.len;
	uint32_t off;
	char *r;
	int rc = 0;

	if (b->naddr == b->addr_cap) {
		size_t cap = b->addr_cap ? b->addr_cap * 2 : 1024;
		uint32_t *v = realloc(b->addr, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		b->addr = v;
		b->addr_cap = cap;
	}
	off = arena_reserve(&b->addrs, RCPT_ADDR_HDR + local.len, &rc);
	if (!off)
		return rc;
	r = b->addrs.p + off;
	memcpy(r, &dom, sizeof(dom));
	memcpy(r + 4, &len16, sizeof(len16));
	for (size_t i = 0; i < local.len; i++)
		r[RCPT_ADDR_HDR + i] =
		    b->exact ? local.p[i] : (char)lower((unsigned char)local.p[i]);
	b->addr[b->naddr++] = off;
	return 0;
}

/* Reads one line (its LF removed) into the builder. Returns 0, or a negative
 * errno with the reason, without "FILE:LINE: ", in <why>. */
static int add_line(struct recipients_builder *b, struct sv l, char *why, size_t whylen)
{
	unsigned char dom[RCPT_DOMAIN_MAX + 1];
	struct sv local, domain;
	const char *bad;
	size_t i, at = 0, nat = 0;
	bool quoted = false;
	uint32_t doff;
	int rc = 0;

	if (l.len && l.p[l.len - 1] == '\r')
		l.len--; /* CRLF line ends */
	if (l.len > RECIPIENTS_LINE_MAX) {
		rcpt_fmt(why, whylen, "line longer than %u octets", RECIPIENTS_LINE_MAX);
		return -EINVAL;
	}
	/* Comments too: control characters mean this is not a table (a
	 * binary file, a NUL-padded one), which is worth saying. */
	for (i = 0; i < l.len; i++) {
		unsigned char c = (unsigned char)l.p[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			rcpt_fmt(why, whylen, "control character (0x%02x)", c);
			return -EINVAL;
		}
	}
	while (l.len && (l.p[0] == ' ' || l.p[0] == '\t'))
		l = sv_skip(l, 1);
	if (l.len == 0 || l.p[0] == '#')
		return 0;
	/* The address ends at white space outside a quoted string; the domain
	 * follows its '@' outside quotes (smtp_session.c reads RCPT TO so). */
	for (i = 0; i < l.len; i++) {
		char c = l.p[i];

		if (quoted) {
			if (c == '\\' && i + 1 < l.len)
				i++;
			else if (c == '"')
				quoted = false;
		} else if (c == ' ' || c == '\t') {
			break;
		} else if (c == '"') {
			quoted = true;
		} else if (c == '@') {
			at = i;
			nat++;
		}
	}
	if (quoted) {
		rcpt_fmt(why, whylen, "unterminated quoted string");
		return -EINVAL;
	}
	if (nat == 0) {
		rcpt_fmt(why, whylen, "no '@' in address");
		return -EINVAL;
	}
	if (nat > 1) {
		rcpt_fmt(why, whylen, "more than one '@' in address");
		return -EINVAL;
	}
	local = sv_make(l.p, at);
	domain = sv_make(l.p + at + 1, i - at - 1);
	bad = policy_domain_invalid(domain);
	if (bad) {
		rcpt_fmt(why, whylen, "bad domain: %s", bad);
		return -EINVAL;
	}
	/* "@domain" is the catch-all; '""' names no mailbox, and reading it as
	 * the catch-all would accept every user by surprise. */
	if (sv_eq(local, SV("\"\""))) {
		rcpt_fmt(why, whylen, "empty local part");
		return -EINVAL;
	}
	if (domain.p[domain.len - 1] == '.')
		domain.len--;
	for (i = 0; i < domain.len; i++)
		dom[i] = lower((unsigned char)domain.p[i]);
	doff = dom_intern(b, dom, domain.len, &rc);
	if (doff && local.len == 0) {
		if (!(b->doms.p[doff + 2] & RCPT_F_CATCHALL))
			b->ncatchall++;
		b->doms.p[doff + 2] |= RCPT_F_CATCHALL;
	} else if (doff) {
		rc = addr_append(b, doff, local);
	}
	if (rc == -E2BIG)
		rcpt_fmt(why, whylen, "tables larger than 4 GB");
	else if (rc < 0)
		rcpt_fmt(why, whylen, "out of memory");
	return rc;
}

int recipients_builder_add_buffer(struct recipients_builder *b, const char *name, const char *data,
                                  size_t len, char *err, size_t errlen)
{
	char why[128];
	unsigned long lineno = 0;
	size_t pos = 0;
	int rc;

	if (b->rc)
		return builder_failed(b, err, errlen);
	while (pos < len) {
		const char *nl = memchr(data + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (data + pos)) : len - pos;

		lineno++;
		rc = add_line(b, sv_make(data + pos, n), why, sizeof(why));
		if (rc < 0)
			return builder_fail(b, err, errlen, rc, "%s:%lu: %s", name, lineno, why);
		pos += n + 1;
	}
	return 0;
}

int recipients_builder_add_file(struct recipients_builder *b, const char *path, char *err,
                                size_t errlen)
{
	char why[128];
	unsigned long lineno = 0;
	size_t have = 0, n;
	char *buf;
	FILE *f;
	int rc = 0;

	if (b->rc)
		return builder_failed(b, err, errlen);
	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		return builder_fail(b, err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	buf = malloc(RCPT_READ_CHUNK);
	if (!buf) {
		rc = builder_fail(b, err, errlen, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	/* <buf> holds the start of the current line, then what fread() added.
	 * A line is read whole or, once it outgrows a line and its CR, judged
	 * on its first octets: a 10 MB line costs one buffer, not 10 MB. */
	do {
		size_t start = 0;
		const char *nl;

		errno = 0;
		n = fread(buf + have, 1, RCPT_READ_CHUNK - have, f);
		have += n;
		while ((nl = memchr(buf + start, '\n', have - start))) {
			lineno++;
			rc = add_line(b, sv_make(buf + start, (size_t)(nl - (buf + start))), why,
			              sizeof(why));
			if (rc < 0)
				goto bad_line;
			start = (size_t)(nl - buf) + 1;
		}
		have -= start;
		memmove(buf, buf + start, have);
		if (have > RECIPIENTS_LINE_MAX + 1 || (n == 0 && have && !ferror(f))) {
			/* Too long (add_line() says so), or the last line, unended. */
			lineno++;
			rc = add_line(b, sv_make(buf, have), why, sizeof(why));
			if (rc < 0)
				goto bad_line;
			have = 0;
		}
	} while (n);
	if (ferror(f)) {
		/* fread() left errno: EISDIR for a directory, EIO, ... */
		rc = errno ? -errno : -EIO;
		builder_fail(b, err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	goto out;
bad_line:
	builder_fail(b, err, errlen, rc, "%s:%lu: %s", path, lineno, why);
out:
	free(buf);
	fclose(f);
	return rc;
}

static void arena_trim(struct recipients_arena *a)
{
	char *p;

	if (a->len == a->cap)
		return;
	p = realloc(a->p, a->len ? a->len : 1);
	if (p) {
		a->p = p;
		a->cap = a->len;
	}
}

static size_t slots_for(size_t n)
{
	size_t cap = RCPT_MIN_SLOTS;

	while (cap < n * 2)
		cap *= 2;
	return cap;
}

struct recipients *recipients_build(struct recipients_builder *b, char *err, size_t errlen)
{
	struct recipients *r;
	uint64_t hdom = 0;
	uint32_t last_dom = 0;
	size_t cap;

	if (b->rc) {
		builder_failed(b, err, errlen);
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		goto nomem;
	cap = slots_for(b->naddr);
	r->addr = calloc(cap, sizeof(*r->addr));
	if (!r->addr)
		goto nomem_free;
	r->addr_mask = cap - 1;
	if (!b->dom_cap && dom_grow(b) < 0)
		goto nomem_free;
	for (size_t i = 0; i < b->naddr; i++) {
		const char *rec = b->addrs.p + b->addr[i];
		uint32_t dom = rd32(rec);
		size_t len = rd16(rec + 4);
		const unsigned char *l = (const unsigned char *)rec + RCPT_ADDR_HDR;
		struct recipients_slot *s;
		uint64_t h;

		/* A table lists a domain's users together, as a rule. */
		if (dom != last_dom) {
			last_dom = dom;
			hdom = dom_hash((const unsigned char *)b->doms.p + dom + RCPT_DOM_HDR,
			                rd16(b->doms.p + dom));
		}
		h = fmix64(fnv(addr_seed(hdom), l, len));
		s = addr_probe(r->addr, r->addr_mask, b->addrs.p, h, dom, l, len);

		if (s->off)
			continue; /* listed twice */
		s->tag = (uint32_t)(h >> 32);
		s->off = b->addr[i];
		r->nentries++;
	}
	r->nentries += b->ncatchall;
	r->ndomains = b->ndom;
	r->dom = b->dom;
	r->dom_mask = b->dom_cap - 1;
	b->dom = NULL;
	/* Up to half of an arena is room it grew into; give it back (a
	 * shrinking realloc() splits in place or remaps, it does not copy). */
	arena_trim(&b->doms);
	arena_trim(&b->addrs);
	r->memory = sizeof(*r) + (cap + b->dom_cap) * sizeof(struct recipients_slot) + b->doms.cap +
	            b->addrs.cap;
	r->doms = b->doms.p;
	b->doms.p = NULL;
	r->addrs = b->addrs.p;
	b->addrs.p = NULL;
	memcpy(r->delim, b->delim, sizeof(r->delim));
	r->delim_dash = is_delim(b->delim, '-');
	r->exact = b->exact;
	atomic_init(&r->refs, 1);
	builder_reset(b);
	return r;
nomem_free:
	free(r->addr);
	free(r);
nomem:
	rcpt_fmt(err, errlen, "recipient tables: out of memory");
	return NULL;
}

struct recipients *recipients_ref(struct recipients *r)
{
	/* Relaxed: the caller's own reference keeps <r> alive meanwhile. */
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
	return r;
}

void recipients_unref(struct recipients *r)
{
	if (!r)
		return;
	/* Release: this thread's reads of the snapshot happen before the
	 * free; the acquire fence orders the free after every other one. */
	if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_release) != 1)
		return;
	atomic_thread_fence(memory_order_acquire);
	free(r->doms);
	free(r->addrs);
	free(r->dom);
	free(r->addr);
	free(r);
}

size_t recipients_entries(const struct recipients *r)
{
	return r ? r->nentries : 0;
}

size_t recipients_domains(const struct recipients *r)
{
	return r ? r->ndomains : 0;
}

size_t recipients_memory(const struct recipients *r)
{
	return r ? r->memory : 0;
}

/* Postfix split_addr(): local parts that are never cut at a delimiter. */
static bool never_cut(const struct recipients *r, struct sv local)
{
	const char *s = local.p;
	size_t len = local.len;

	if ((len == 10 && strncasecmp(s, "postmaster", 10) == 0) ||
	    (len == 13 && strncasecmp(s, "mailer-daemon", 13) == 0))
		return true;
	/* Backwards compatibility with mailing lists (owner-list, list-request). */
	return r->delim_dash && ((len >= 6 && strncasecmp(s, "owner-", 6) == 0) ||
	                         (len > 8 && strncasecmp(s + len - 8, "-request", 8) == 0));
}

enum recipients_result recipients_lookup(const struct recipients *r, struct sv local,
                                         struct sv domain)
{
	unsigned char d[RCPT_DOMAIN_MAX], l[RECIPIENTS_LINE_MAX];
	size_t cut = RCPT_NO_CUT;
	uint64_t hdom, h, hcut = 0;
	const struct recipients_slot *s;
	uint32_t dom;
	size_t n;

	if (!r)
		return RECIPIENTS_NO_TABLE;
	if (domain.len && domain.p[domain.len - 1] == '.')
		domain.len--;
	if (domain.len == 0 || domain.len > RCPT_DOMAIN_MAX)
		return RECIPIENTS_NO_TABLE; /* no table can name it */
	hdom = FNV_OFFSET;
	for (size_t i = 0; i < domain.len; i++) {
		d[i] = lower((unsigned char)domain.p[i]);
		hdom = (hdom ^ d[i]) * FNV_PRIME;
	}
	hdom = fmix64(hdom);
	s = dom_probe(r->dom, r->dom_mask, r->doms, hdom, d, domain.len);
	if (!s->off)
		return RECIPIENTS_NO_TABLE;
	dom = s->off;
	/* "@domain" comes last in Postfix's order and answers KNOWN, as does
	 * any earlier hit: the answer is KNOWN whatever the local part. */
	if (r->doms[dom + 2] & RCPT_F_CATCHALL)
		return RECIPIENTS_KNOWN;
	/* One pass folds, hashes the local part and keeps the hash state at
	 * the first delimiter, which is the hash of the part before it. No
	 * record is longer than a line: past that only the cut can match. */
	n = local.len < RECIPIENTS_LINE_MAX ? local.len : RECIPIENTS_LINE_MAX;
	h = addr_seed(hdom);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)local.p[i];

		l[i] = r->exact ? c : lower(c);
		if (cut == RCPT_NO_CUT && is_delim(r->delim, c)) {
			cut = i;
			hcut = h;
		}
		h = (h ^ l[i]) * FNV_PRIME;
	}
	h = fmix64(h);
	if (cut == 0 || (cut != RCPT_NO_CUT && never_cut(r, local)))
		cut = RCPT_NO_CUT;
	/* At a million entries each slot is a cache miss: load the base
	 * address's slot while the full address's is probed. */
	if (cut != RCPT_NO_CUT) {
		hcut = fmix64(hcut);
		__builtin_prefetch(&r->addr[(size_t)hcut & r->addr_mask]);
	}
	/* An empty local part has no record ("@domain" is the flag). */
	if (n == local.len && n && addr_probe(r->addr, r->addr_mask, r->addrs, h, dom, l, n)->off)
		return RECIPIENTS_KNOWN;
	if (cut != RCPT_NO_CUT &&
	    addr_probe(r->addr, r->addr_mask, r->addrs, hcut, dom, l, cut)->off)
		return RECIPIENTS_KNOWN;
	return RECIPIENTS_UNKNOWN;
}
