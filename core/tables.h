/* tables: what a recipient is checked against that SIGHUP reloads: the
 * accepted domains (--domains, --domains-file) and the recipient tables
 * (--recipients-file, core/recipients). Loaded on the main thread into a
 * reference-counted snapshot, immutable once loaded and read by any thread
 * without locks; a session holds the snapshot its transaction started with
 * (io/session), so a reload never changes the rules in the middle of a
 * transaction. The relay networks are not reloaded (they stay in struct
 * conf's policy). libc only. */
#ifndef RINGMX_CORE_TABLES_H
#define RINGMX_CORE_TABLES_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/conf.h"
#include "core/policy.h"
#include "core/recipients.h"

struct tables {
	_Atomic unsigned refs;
	struct policy domains;         /* accepted domains (no networks) */
	struct recipients *recipients; /* NULL: no --recipients-file */
};

/* Reads the domains and recipient files <c> names, as conf_parse() took
 * them, into a new snapshot holding one reference (*<out>). Returns 0, or
 * -errno with a one-line reason in <err> ("FILE:LINE: reason" for a bad
 * line) and *<out> untouched: nothing half-read is ever published. Main
 * thread. */
int tables_load(const struct conf *c, struct tables **out, char *err, size_t errlen);
/* One more reference to <t> (which the caller holds one of); returns <t>. */
struct tables *tables_ref(struct tables *t);
/* Drops one; the last frees the snapshot. NULL: no-op. Any thread. */
void tables_unref(struct tables *t);

#endif
