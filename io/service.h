/* service: what the gateway and its service manager (systemd) tell each
 * other. Out: the sd_notify protocol over $NOTIFY_SOCKET (READY=1 once the
 * listeners are up and recovery is done, RELOADING=1 and READY=1 around a
 * SIGHUP reload, STOPPING=1, a STATUS= line now and then, WATCHDOG=1 while
 * every worker's loop makes progress). In: the listening sockets of socket
 * activation ($LISTEN_FDS). Built without libsystemd (-Dsystemd=disabled)
 * every notification is a no-op and no socket is taken over.
 *
 * Main thread only: a worker never sends anything to the service manager;
 * it only stores its heartbeat (struct worker's <beat>) at its tick. */
#ifndef RINGMX_IO_SERVICE_H
#define RINGMX_IO_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "io/types-t.h"

/* The first descriptor of socket activation (SD_LISTEN_FDS_START). */
#define SERVICE_LISTEN_FDS_START 3
/* How often the STATUS= line is looked at (sent only when it changed). */
#define SERVICE_STATUS_MS 2000
/* A worker whose tick (once a second) is older than this, or than half
 * the watchdog period when that is longer, is stuck: no ping. */
#define SERVICE_STALL_MS 3000

/* Reads $NOTIFY_SOCKET and $WATCHDOG_USEC/$WATCHDOG_PID (the watchdog is
 * on only when the pid is this process's). Before the workers start. */
void service_init(void);
/* The listeners are up, recovery is done, the pid file is written:
 * READY=1 with the first STATUS=. */
void service_ready(struct gateway *g);
/* Around the SIGHUP reload: RELOADING=1 with MONOTONIC_USEC=<now>, then
 * READY=1 (<ok> false: the old tables stayed; STATUS= says so). */
void service_reloading(void);
void service_reloaded(struct gateway *g, bool ok);
/* The stop has begun: STOPPING=1. */
void service_stopping(struct gateway *g);
/* Called whenever the main thread wakes: sends WATCHDOG=1 when a ping is
 * due and each of the first <started> workers has ticked recently, and
 * STATUS= when it is due and changed. Returns the milliseconds until it
 * wants to be called again, or -1 when nothing is ever due (no service
 * manager listening). */
int64_t service_tick(struct gateway *g, unsigned started);
/* Socket activation: how many listening sockets the service manager
 * passed (descriptors SERVICE_LISTEN_FDS_START and up), 0 when none (or
 * when built without libsystemd), -errno on a malformed $LISTEN_FDS. The
 * variables are removed from the environment. Start-up. */
int service_listen_fds(void);

#endif
