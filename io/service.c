/* service: sd_notify and socket activation. See service.h.
 *
 * Every notification is one datagram that libsystemd's sd_notify() sends
 * from the main thread; the workers' part is one relaxed atomic store per
 * tick (their heartbeat), so nothing here touches a worker's hot path. The
 * watchdog is fed only when every worker's loop has come round recently:
 * a worker stuck in a system call or a loop stops the pings, and systemd
 * restarts the service (WatchdogSec=), which a ping from a healthy main
 * thread alone would never let happen. */
#include "io/service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "core/log.h"
#include "io/ring.h"
#include "queue/segreg.h"

static struct {
	bool on;          /* $NOTIFY_SOCKET is set: someone listens */
	int64_t wd_ms;    /* watchdog period; 0: off */
	int64_t stall_ms; /* a worker's beat older than this: stuck */
	int64_t next_ping, next_status;
	bool stalled;       /* pings withheld (logged once) */
	bool reload_failed; /* the last reload kept the old tables */
	char status[160];   /* the STATUS= last sent */
} svc;

static void send_state(const char *state)
{
#ifdef HAVE_SYSTEMD
	int err = sd_notify(0, state);

	if (err < 0)
		LOGW("sd_notify: %s", strerror(-err));
#else
	(void)state;
#endif
}

void service_init(void)
{
	memset(&svc, 0, sizeof(svc));
#ifdef HAVE_SYSTEMD
	uint64_t usec = 0;

	svc.on = getenv("NOTIFY_SOCKET") != NULL;
	/* > 0 only when $WATCHDOG_PID, if set, is this process. */
	if (svc.on && sd_watchdog_enabled(0, &usec) > 0 && usec >= 1000) {
		svc.wd_ms = (int64_t)(usec / 1000);
		svc.stall_ms = svc.wd_ms / 2 > SERVICE_STALL_MS ? svc.wd_ms / 2 : SERVICE_STALL_MS;
		LOGI("systemd watchdog: a ping every %lld ms while every worker has ticked in the "
		     "last %lld ms",
		     (long long)(svc.wd_ms / 2), (long long)svc.stall_ms);
	}
#else
	if (getenv("NOTIFY_SOCKET"))
		LOGW("$NOTIFY_SOCKET is set but ringmx was built without libsystemd: the service "
		     "manager hears nothing (use Type=simple)");
#endif
}

/* "STATUS=..." of the moment into <out>: open sessions and the messages
 * in the spool still to be delivered (the segment registry's live counts:
 * a walk over the segments, so not per event). */
static void status_line(struct gateway *g, char *out, size_t len)
{
	unsigned n = atomic_load_explicit(&g->nsessions, memory_order_relaxed);
	unsigned long long q = segreg_live_total(&g->segs);

	snprintf(out, len, "STATUS=%u session%s, %llu message%s queued, %u workers%s", n,
	         n == 1 ? "" : "s", q, q == 1 ? "" : "s", g->nworkers,
	         svc.reload_failed ? "; the last reload failed, old tables in use" : "");
}

/* Sends <state> (or nothing) followed by the STATUS= line when that has
 * changed since the last one sent, in one datagram. */
static void send_with_status(struct gateway *g, const char *state)
{
	char now[sizeof(svc.status)], msg[sizeof(svc.status) + 64];

	status_line(g, now, sizeof(now));
	if (strcmp(now, svc.status) == 0) {
		if (state)
			send_state(state);
		return;
	}
	snprintf(msg, sizeof(msg), "%s%s%s", state ? state : "", state ? "\n" : "", now);
	memcpy(svc.status, now, sizeof(now));
	send_state(msg);
}

void service_ready(struct gateway *g)
{
	if (!svc.on)
		return;
	send_with_status(g, "READY=1");
	svc.next_status = ring_clock_ms() + SERVICE_STATUS_MS;
}

void service_reloading(void)
{
	struct timespec ts;
	char msg[64];

	if (!svc.on)
		return;
	/* systemd compares it with its own CLOCK_MONOTONIC (systemd 253's
	 * Type=notify-reload needs it; 252 takes it as a plain RELOADING=1). */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	         (unsigned long long)ts.tv_sec * 1000000ull +
	             (unsigned long long)ts.tv_nsec / 1000ull);
	send_state(msg);
}

void service_reloaded(struct gateway *g, bool ok)
{
	svc.reload_failed = !ok;
	if (svc.on)
		send_with_status(g, "READY=1");
}

void service_stopping(struct gateway *g)
{
	if (svc.on)
		send_state("STOPPING=1\nSTATUS=stopping");
}

/* The worker whose heartbeat is older than the stall limit, or -1. */
static int stalled_worker(struct gateway *g, unsigned started, int64_t now, int64_t *age)
{
	for (unsigned i = 0; i < started; i++) {
		*age = now - atomic_load_explicit(&g->workers[i]->beat, memory_order_relaxed);
		if (*age > svc.stall_ms)
			return (int)i;
	}
	return -1;
}

int64_t service_tick(struct gateway *g, unsigned started)
{
	int64_t now, next, age = 0;
	int stuck;

	if (!svc.on)
		return -1;
	now = ring_clock_ms();
	if (svc.wd_ms && now >= svc.next_ping) {
		stuck = stalled_worker(g, started, now, &age);
		if (stuck < 0) {
			send_state("WATCHDOG=1");
			if (svc.stalled)
				LOGI("systemd watchdog: every worker makes progress again");
			svc.stalled = false;
		} else if (!svc.stalled) {
			LOGE("worker %d: its loop has not come round for %lld ms: no more "
			     "watchdog pings (systemd restarts a stuck gateway)",
			     stuck, (long long)age);
			svc.stalled = true;
		}
		svc.next_ping = now + svc.wd_ms / 2;
	}
	if (now >= svc.next_status) {
		send_with_status(g, NULL);
		svc.next_status = now + SERVICE_STATUS_MS;
	}
	next = svc.next_status;
	if (svc.wd_ms && svc.next_ping < next)
		next = svc.next_ping;
	return next > now ? next - now : 1;
}

int service_listen_fds(void)
{
#ifdef HAVE_SYSTEMD
	/* 0 when $LISTEN_PID is not this process: the sockets were meant
	 * for another (a parent that exec'd us without cleaning up). */
	return sd_listen_fds(1);
#else
	if (getenv("LISTEN_FDS"))
		LOGW("$LISTEN_FDS is set but ringmx was built without libsystemd: the passed "
		     "sockets are not used, the listeners are bound here");
	return 0;
#endif
}
