/* smtp_data: the streaming DATA parser (RFC 5321 4.1.1.4, 4.5.2). It is fed
 * the received buffers in order, of any size, and returns views of the
 * message content into those same buffers, with dot-stuffing removed by
 * splitting views, never by copying. End of data is CRLF "." CRLF and
 * nothing else (no bare-LF / bare-CR variant: SMTP smuggling,
 * CVE-2023-51764/5/6). libc only; no allocation. */
#ifndef RINGMX_CORE_SMTP_DATA_H
#define RINGMX_CORE_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* What to do with a bare CR or bare LF in the content. */
enum smtp_data_bare {
	SMTP_DATA_BARE_REJECT = 0, /* flag it; the session answers 550 5.6.0 */
	SMTP_DATA_BARE_NORMALIZE,  /* store it as CRLF (views of a static "\r\n") */
};

/* What to do with a text line longer than the limit. */
enum smtp_data_long {
	SMTP_DATA_LONG_REJECT = 0, /* flag it; the session answers 550 5.6.0 */
	SMTP_DATA_LONG_ACCEPT,     /* accept it as is (the default, as Postfix) */
};

#define SMTP_DATA_F_BARE_LF   0x1u  /* a LF not preceded by CR was seen */
#define SMTP_DATA_F_BARE_CR   0x2u  /* a CR not followed by LF was seen */
#define SMTP_DATA_F_TOO_BIG   0x4u  /* content exceeded max_size */
#define SMTP_DATA_F_LONG_LINE 0x8u  /* a line exceeded max_line octets (CRLF included) */
#define SMTP_DATA_F_DONE      0x10u /* CRLF.CRLF seen; the parser stops */

struct smtp_data {
	uint64_t size;     /* content octets so far (unstuffed, as stored) */
	uint64_t max_size; /* 0 = no limit */
	uint32_t linelen;  /* octets in the current line so far (kept only if max_line) */
	uint32_t max_line; /* 0 = no limit; counts CRLF, so 1000 per RFC 5321 */
	uint32_t flags;    /* SMTP_DATA_F_* */
	uint8_t state;     /* position in the terminator automaton; private */
	uint8_t bare;      /* enum smtp_data_bare */
	uint8_t longp;     /* enum smtp_data_long */
};

/* Starts a message. The parser begins at the start of a line (just after
 * the 354 reply), so an immediate ".\r\n" is the empty message. */
void smtp_data_init(struct smtp_data *d, uint64_t max_size, uint32_t max_line,
                    enum smtp_data_bare bare, enum smtp_data_long longp);

/* Scans <len> bytes at <p>, which follow the bytes of the previous call.
 * Stores up to <maxv> views of content in <v> and their number in *<nv>;
 * views point into <p> or at static memory, and are valid as long as <p>.
 * Returns the number of bytes consumed: all of them unless the end of data
 * was found (then d->flags has SMTP_DATA_F_DONE and the return value is the
 * offset just past the terminator, where a pipelined command may start) or
 * <v> filled up first (call again with the rest). Content past max_size is
 * still scanned and counted but its views are still returned; the caller
 * decides (SMTP_DATA_F_TOO_BIG). Never fails. Any thread; <d> is not shared.
 * <maxv> must be at least 3 for progress. Once SMTP_DATA_F_DONE is set,
 * returns 0 with no views. */
size_t smtp_data_scan(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                      unsigned maxv, unsigned *nv);

static inline bool smtp_data_done(const struct smtp_data *d)
{
	return d->flags & SMTP_DATA_F_DONE;
}

/* The scan has several implementations that give identical results (views,
 * flags, size, state, return value); smtp_data_scan() uses the best one the
 * CPU has. Naming one is for tests and benchmarks. */
enum smtp_data_impl {
	SMTP_DATA_IMPL_AUTO = 0, /* the best one this CPU supports */
	SMTP_DATA_IMPL_SCALAR,   /* portable: 64-bit words, no SIMD */
	SMTP_DATA_IMPL_SSE2,     /* x86-64 baseline */
	SMTP_DATA_IMPL_AVX2,     /* x86-64 with AVX2 */
	SMTP_DATA_IMPL_AVX512,   /* x86-64 with AVX-512BW */
	SMTP_DATA_IMPL_REF,      /* byte-at-a-time reference, written for clarity */
};

/* True if <impl> was built and this CPU can run it. Any thread. */
bool smtp_data_impl_supported(enum smtp_data_impl impl);

/* Name of <impl> ("avx2", ...); AUTO gives the one it resolves to. */
const char *smtp_data_impl_name(enum smtp_data_impl impl);

/* Makes smtp_data_scan() use <impl> from now on, process-wide. Returns 0, or
 * -ENOTSUP if !smtp_data_impl_supported(impl). For tests and benchmarks:
 * call it before other threads scan. */
int smtp_data_set_impl(enum smtp_data_impl impl);

/* smtp_data_scan() through <impl>, which must be supported (an unsupported
 * one runs as SCALAR). For differential tests and benchmarks. */
size_t smtp_data_scan_impl(enum smtp_data_impl impl, struct smtp_data *d, const char *p, size_t len,
                           struct iovec *v, unsigned maxv, unsigned *nv);

/* The reference: a byte-at-a-time automaton that defines the results the
 * fast paths must reproduce, including where a call stops when <v> fills:
 * before looking at each byte, the scan stops if fewer than 3 view slots are
 * left (so a call may return 0 bytes consumed with a static view, and
 * <maxv> < 3 makes no progress). */
size_t smtp_data_scan_ref(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
                          unsigned maxv, unsigned *nv);

#endif
