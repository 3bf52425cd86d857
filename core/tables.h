/* tables: the settings a reload (SIGHUP) changes in a running gateway, in
 * one snapshot: the options they came from (core/conf, the ones marked
 * live), the accepted domains (--domains, --domains-file), the recipient
 * tables (--recipients-file, core/recipients), the session limits
 * (smtp_server_conf) and the TLS certificates. Built on the main thread
 * into a reference-counted snapshot, immutable once published and read by
 * any thread without locks (RCU-like: one pointer handed to each worker);
 * a session holds the snapshot its transaction started with (io/session),
 * so a reload never changes the rules in the middle of a transaction.
 * libc only: the TLS context is io's, held as an opaque pointer with its
 * destructor. */
#ifndef RINGMX_CORE_TABLES_H
#define RINGMX_CORE_TABLES_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/conf.h"
#include "core/policy.h"
#include "core/recipients.h"
#include "core/smtp_conf-t.h"

struct tables {
	_Atomic unsigned refs;
	struct policy domains;         /* accepted domains (no networks) */
	struct recipients *recipients; /* NULL: no --recipients-file */
	/* The options the snapshot stands for: the gateway's own at start
	 * (not owned), a reload's (owned: <own_conf>, freed with it). */
	const struct conf *conf;
	struct conf *own_conf;
	struct smtp_server_conf scf; /* the session limits of <conf>; filled by io */
	/* A reload's TLS context (NULL: no certificate) and its destructor;
	 * <has_tls> false: the gateway's startup context applies. */
	bool has_tls;
	void *tls;
	void (*tls_free)(void *tls);
	/* The per-client table (core/anvil; not owned: the gateway's, made at
	 * start or by the first reload that sets a per-client limit, never
	 * freed before the workers stop); NULL: no limit was ever set. */
	struct anvil *anvil;
	/* A reload's --milter targets, resolved (io's struct milter_target,
	 * <nmilters> of them, one allocation freed with free()); <has_milters>
	 * false: the gateway's startup ones apply. A session's filters are
	 * those of the snapshot its first transaction with filters had. */
	bool has_milters;
	void *milters;
	unsigned nmilters;
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
