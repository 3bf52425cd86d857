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
#include <stdint.h>

#include "core/anvil.h"
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
/* The per-client limits of options <c> (core/anvil): its prefixes and
 * table size are <g>'s startup ones, and so are the rates when Redis
 * counts them (--limits-redis: restart only). */
struct anvil_conf reload_anvil_conf(const struct gateway *g, const struct conf *c);
/* Whether <c> sets any per-client limit. */
bool reload_limits_on(const struct anvil_conf *a);

/* The answer a reload leaves in the spool directory for `ringmx reload`
 * (io/control): "reloaded" or "failed, nothing changed: why" first. */
#define RELOAD_REPORT "ringmx.reload"

/* Reloads gateway <g>: the new snapshot is handed to its first <started>
 * workers (the caller wakes them). Returns whether the new settings are in
 * use. Main thread. */
bool reload_run(struct gateway *g, unsigned started);

/* Names of next hops are looked up again when their TTL runs out
 * (io/relay_dns); a lookup that fails keeps the running addresses and is
 * tried again after this. */
#define RELOAD_RELAY_RETRY_S 30u

/* At start: when the startup next hops' names are due again. */
void reload_relay_start(struct gateway *g);
/* Looks the next hops' names up again if they are due, and hands new
 * addresses to the first <started> workers (*<wake> set: the caller wakes
 * them). Returns the ms until the next lookup, -1 for never. Main thread
 * (io/control's wait). */
int64_t reload_relay_tick(struct gateway *g, unsigned started, bool *wake);

#endif
