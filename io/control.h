/* control: how the operator talks to a running gateway, both ends in one
 * room. The gateway writes its pid to <spool>/ringmx.pid; `ringmx queue
 * --flush` sends it SIGUSR1 (every worker retries its deferred messages
 * now); `ringmx queue hold|release|requeue|delete` first makes its change
 * durable in the spool (hold log, done log), then writes its requests to
 * a file of its own, <spool>/ringmx.req-<ns>-<pid> (lines of core/qtool:
 * "hold <qid>"...), and sends SIGUSR2: the main thread reads the hold logs
 * again (held messages are not dispatched) and hands release, requeue and
 * delete to every worker; `ringmx reload` sends SIGHUP (the options and the
 * files they name are read again, io/reload). SIGTERM and SIGINT stop
 * it. */
#ifndef RINGMX_IO_CONTROL_H
#define RINGMX_IO_CONTROL_H

#include <signal.h>
#include <stdbool.h>

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
/* At start, after recovery: removes request files left while no gateway
 * ran and reads the hold logs. Main thread, before the workers start. */
void control_start(struct gateway *g);
/* Frees what control_start() loaded. Main thread, after the workers. */
void control_fini(struct gateway *g);
/* Whether the operator holds <qid> (the hold logs as last read); with
 * <quarantined> (a content filter quarantined it), unless the operator
 * released it. Any thread: a lock only while something may be held. */
bool control_held(struct gateway *g, const char *qid, bool quarantined);
/* Worker side of SIGUSR2: takes the worker's requests into <out> (empty
 * on entry; the caller frees it): "<op><qid>\0" each, <op> one byte of
 * enum qtool_op (QTOOL_RELEASE, QTOOL_REQUEUE, QTOOL_DELETE). The worker's
 * own thread. */
void control_requests_take(struct worker *w, struct buf *out);

/* The `ringmx queue` side. Asks the gateway running on <spool> to retry its
 * deferred messages now; returns the tool's exit status (1: none running). */
int control_request_flush(const char *spool);
/* `ringmx reload`: SIGHUP to the gateway running on <spool>, then waits
 * (at most 15 s) for its answer and prints it. Returns the tool's exit
 * status: 0 reloaded, 1 failed, none running or no answer. */
int control_request_reload(const char *spool);
/* Hands <lines> (request lines of core/qtool) to the gateway running on
 * <spool>, if any. Returns 1 (sent), 0 (no gateway runs there) or -errno. */
int control_request(const char *spool, const struct buf *lines);

#endif
