/* control: how the operator talks to a running gateway, both ends in one
 * room. The gateway writes its pid to <spool>/ringmx.pid; `ringmx queue
 * --flush` sends it SIGUSR1 (every worker retries its deferred messages
 * now), `ringmx queue --delete` appends queue ids to <spool>/ringmx.drop
 * and sends SIGUSR2 (the workers forget them); `ringmx reload` sends SIGHUP
 * (the options and the files they name are read again, io/reload). SIGTERM
 * and SIGINT stop it. */
#ifndef RINGMX_IO_CONTROL_H
#define RINGMX_IO_CONTROL_H

#include <signal.h>

#include "core/buf.h"
#include "io/types-t.h"

/* Blocks the control signals in the calling thread (the workers started
 * after this inherit the mask, so only the main thread takes them) and
 * fills <set> for control_wait(). Main thread, before the workers start. */
void control_block_signals(sigset_t *set);
/* Writes <spool>/ringmx.pid. Main thread. */
void control_pid_write(struct gateway *g);
/* Removes it. Main thread, at the end. */
void control_pid_remove(struct gateway *g);
/* Takes the signals in <set>: SIGHUP reloads the tables (between
 * RELOADING=1 and READY=1 to systemd), SIGUSR1 and SIGUSR2 are passed to
 * the first <started> workers through their eventfds; between signals it
 * lets io/service ping the watchdog and update the status. Returns the
 * signal that stops the gateway. Main thread. */
int control_wait(struct gateway *g, const sigset_t *set, unsigned started);
/* Wakes the first <started> workers' eventfds (stop, flush, drop). */
void control_wake(struct gateway *g, unsigned started);
/* Worker side of SIGUSR2: a copy of the dropped queue ids (NUL-separated)
 * in <out>. Any worker thread. */
void control_drops_copy(struct gateway *g, struct buf *out);

/* The `ringmx queue` side. Asks the gateway running on <spool> to retry its
 * deferred messages now; returns the tool's exit status (1: none running). */
int control_request_flush(const char *spool);
/* `ringmx reload`: SIGHUP to the gateway running on <spool>, then waits
 * (at most 15 s) for its answer and prints it. Returns the tool's exit
 * status: 0 reloaded, 1 failed, none running or no answer. */
int control_request_reload(const char *spool);
/* Tells the gateway running on <spool>, if any, to forget <qid>. */
void control_request_drop(const char *spool, const char *qid);

#endif
