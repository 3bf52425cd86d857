/* reload: SIGHUP and `ringmx reload`, both ends. The gateway parses its
 * command line and configuration file again (core/conf), builds a new
 * snapshot off the workers (core/tables: domains, recipient tables, session
 * limits, TLS certificates, the live options), and publishes it with one
 * pointer swap per worker; a session moves to it between transactions.
 * Anything that fails keeps the old snapshot whole. Options a running
 * gateway cannot change (listeners, threads, spool, ...: those conf.c
 * does not mark live) are named as needing a restart. The outcome goes to
 * the log and to <spool>/ringmx.reload, which `ringmx reload` prints. */
#ifndef RINGMX_IO_RELOAD_H
#define RINGMX_IO_RELOAD_H

#include <stdbool.h>

#include "core/conf.h"
#include "core/smtp_session.h"
#include "io/types-t.h"

/* Fills what the options leave to the machine: threads (one per core), the
 * host name (into c->host_buf), the spool's minimum free space. Main
 * thread. */
void reload_resolve(struct conf *c);
/* The session limits of options <c> for gateway <g> (its host name and
 * per-client table stay the startup ones); <tls>: a certificate is there. */
void reload_scf(const struct gateway *g, const struct conf *c, bool tls,
                struct smtp_server_conf *out);
/* Reloads gateway <g>, whose first <started> workers run. Returns whether
 * the new settings are in use. Main thread. */
bool reload_run(struct gateway *g, unsigned started);
/* `ringmx reload`: SIGHUP to the gateway running on <spool>, then waits
 * (at most 15 s) for its answer and prints it. Returns the tool's exit
 * status: 0 reloaded, 1 failed, not running or no answer. */
int reload_request(const char *spool);

#endif
