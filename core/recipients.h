/* recipients: the recipient tables consulted at RCPT TO (--recipients-file).
 * A builder reads one or more tables into a snapshot; the snapshot is then
 * immutable, read by any thread without locks, and freed at its last unref,
 * so that a reload (SIGHUP) can publish a new one while sessions still hold
 * the old. libc only.
 *
 * Table format, one address a line:
 *   user@example.com	optional comment after a TAB or spaces
 *   "john doe"@example.com	quoted local parts and UTF-8 octets as written
 *   @example.org	catch-all: any user at example.org
 *   # a comment line; blank lines are ignored; CRLF line ends are tolerated
 * A domain named by any line "has a table": lookups for it answer KNOWN or
 * UNKNOWN, lookups for any other domain NO_TABLE. */
#ifndef RINGMX_CORE_RECIPIENTS_H
#define RINGMX_CORE_RECIPIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sv.h"

#define RECIPIENTS_LINE_MAX 1000u /* octets a line, its LF or CR LF not counted */
#define RECIPIENTS_ERR_MAX  512u  /* the builder's copy of its first error */

enum recipients_result {
	RECIPIENTS_NO_TABLE, /* no table names the domain: the gateway's old rules apply */
	RECIPIENTS_KNOWN,    /* listed: the address, its base address or the domain's catch-all */
	RECIPIENTS_UNKNOWN,  /* the domain has a table and it lists none of those */
};

struct recipients_opts {
	const char *delimiters; /* address extension delimiters, a set of characters
	                         * ("+-"); NULL: "+"; "": no extensions */
	bool exact;             /* local parts compared as written (default: ASCII
	                         * letters compared case-insensitively) */
};

/* An index slot: <off> of a record in its arena (0: empty), <tag> the upper
 * half of the record's hash. Private to recipients.c. */
struct recipients_slot {
	uint32_t tag;
	uint32_t off;
};

/* Records back to back (recipients.c). Private to recipients.c. */
struct recipients_arena {
	char *p; /* owned */
	size_t len, cap;
};

/* The builder holds what the adds read until recipients_build() indexes it.
 * Its fields are private to recipients.c. */
struct recipients_builder {
	struct recipients_arena doms, addrs; /* domain and address records */
	struct recipients_slot *dom;         /* index of the domain records; owned */
	size_t dom_cap, ndom;                /* dom_cap: a power of two, or 0 */
	uint32_t *addr;                      /* offsets of the address records, duplicates too */
	size_t naddr, addr_cap;
	size_t ncatchall;             /* domains with a catch-all line */
	uint64_t delim[4];            /* the delimiters as a bitmap over octets */
	bool exact;                   /* recipients_opts.exact */
	int rc;                       /* 0, or the first error: every later call fails with it */
	char err[RECIPIENTS_ERR_MAX]; /* that error's text */
};

struct recipients; /* a snapshot (opaque) */

/* Prepares an empty builder; <o> NULL means the defaults. Main thread (any
 * one thread per builder). */
void recipients_builder_init(struct recipients_builder *b, const struct recipients_opts *o);
/* Frees what the builder still holds; a built or failed builder too. */
void recipients_builder_fini(struct recipients_builder *b);

/* Adds the table in file <path>. Returns 0, or on the first bad line, a
 * missing or unreadable file or lack of memory a negative errno (-EINVAL for
 * a bad line, -ENOENT, -EISDIR, -ENOMEM, ...) with a one-line reason in
 * <err>: "PATH:LINE: reason" for a line, "PATH: strerror" for the file.
 * A failed builder stays failed: later adds and recipients_build() return
 * the same error, so that no half-read table is ever published. */
int recipients_builder_add_file(struct recipients_builder *b, const char *path, char *err,
                                size_t errlen);
/* As recipients_builder_add_file() for the <len> bytes at <data> (which may
 * hold NUL bytes and need not end in a line end); <name> stands for the file
 * name in errors. The builder copies what it keeps. */
int recipients_builder_add_buffer(struct recipients_builder *b, const char *name, const char *data,
                                  size_t len, char *err, size_t errlen);

/* Indexes what was added into a new snapshot holding one reference, and
 * leaves the builder empty (its options kept). Returns NULL with a reason
 * in <err> if the builder failed earlier or memory ran out. */
struct recipients *recipients_build(struct recipients_builder *b, char *err, size_t errlen);

/* Takes one more reference to <r> and returns <r>. Any thread, but only on a
 * snapshot the caller already holds a reference to: swapping a shared
 * pointer takes its own care (hand the new snapshot to each worker, which
 * unrefs the old one), as a reader could otherwise ref one being freed. */
struct recipients *recipients_ref(struct recipients *r);
/* Drops one reference; the last frees the snapshot. NULL: no-op. Any thread. */
void recipients_unref(struct recipients *r);

/* Distinct addresses (catch-alls included) and distinct domains with a
 * table, for "recipient tables: N entries, M domains". Any thread. */
size_t recipients_entries(const struct recipients *r);
size_t recipients_domains(const struct recipients *r);
/* Octets of memory the snapshot holds (records and indexes). Any thread. */
size_t recipients_memory(const struct recipients *r);

/* Looks up <local>@<domain> (the local part as written, quotes included;
 * the domain without brackets). The domain is compared ASCII
 * case-insensitively and a trailing dot ignored; the local part the same
 * way unless the snapshot is exact; octets >= 0x80 are compared as they are.
 * With delimiters, "user+ext" is looked up, then "user" (cut at the first
 * delimiter), then the domain's catch-all, as Postfix does; like Postfix's
 * split_addr() it never cuts to an empty local part, nor postmaster or
 * MAILER-DAEMON, nor owner-* and *-request when '-' is a delimiter. <r> NULL: no
 * tables (NO_TABLE). Never allocates. Any thread. */
enum recipients_result recipients_lookup(const struct recipients *r, struct sv local,
                                         struct sv domain);

#endif
