/* control: pid and drop files and the signals, both ends. See control.h. */
#include "io/control.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/tables.h"
#include "io/reload.h"
#include "io/service.h"

void control_block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void control_pid_write(struct gateway *g)
{
	char pid[32];
	int pfd =
	    openat(g->spool_dirfd, "ringmx.pid", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (pfd >= 0) {
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());

		/* Main thread, at start: a direct write. */
		if (write(pfd, pid, (size_t)n) != n)
			LOGW("cannot write %s/ringmx.pid", g->conf->spool);
		close(pfd);
	}
}

void control_pid_remove(struct gateway *g)
{
	unlinkat(g->spool_dirfd, "ringmx.pid", 0);
}

/* ringmx queue --delete: the ids are in ringmx.drop. */
static void drops_read(struct gateway *g)
{
	char line[64];
	FILE *f;
	int dfd = openat(g->spool_dirfd, "ringmx.drop", O_RDONLY | O_CLOEXEC);

	f = dfd >= 0 ? fdopen(dfd, "r") : NULL;
	pthread_mutex_lock(&g->drop_mu);
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0])
			buf_append(&g->drop, line, strlen(line) + 1);
	}
	pthread_mutex_unlock(&g->drop_mu);
	if (f)
		fclose(f);
	unlinkat(g->spool_dirfd, "ringmx.drop", 0);
	atomic_fetch_add(&g->drop_gen, 1);
}

/* Main thread, which has no ring of its own: a write to each worker's
 * eventfd, which the worker's ring reads. */
void control_wake(struct gateway *g, unsigned started)
{
	for (unsigned i = 0; i < started; i++) {
		uint64_t one = 1;

		if (g->workers[i]->ready > 0 &&
		    write(g->workers[i]->wakefd, &one, sizeof(one)) != sizeof(one))
			LOGE("cannot wake worker %u", i);
	}
}

int control_wait(struct gateway *g, const sigset_t *set, unsigned started)
{
	int sig;

	for (;;) {
		/* Woken by a signal, or when io/service has something due (a
		 * watchdog ping, a status line); -1: nothing ever is. */
		int64_t ms = service_tick(g, started);
		struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

		sig = ms < 0 ? sigwaitinfo(set, NULL) : sigtimedwait(set, NULL, &ts);
		if (sig < 0)
			continue; /* EAGAIN: the timeout; EINTR */
		if (sig == SIGHUP) {
			service_reloading();
			bool ok = reload_run(g, started);

			if (ok)
				control_wake(g, started);
			service_reloaded(g, ok);
			continue;
		}
		if (sig == SIGUSR2)
			drops_read(g);
		else if (sig == SIGUSR1)
			atomic_fetch_add(&g->flush_gen, 1); /* retry deferred messages now */
		if (sig == SIGUSR1 || sig == SIGUSR2) {
			control_wake(g, started);
			continue;
		}
		return sig;
	}
}

void control_drops_copy(struct gateway *g, struct buf *out)
{
	pthread_mutex_lock(&g->drop_mu);
	buf_append(out, g->drop.p, g->drop.len);
	pthread_mutex_unlock(&g->drop_mu);
}

/* Sends <sig> to the gateway whose pid is in <spool>/ringmx.pid; <tool>
 * names the command in errors, <what> the request. Returns the exit
 * status (1: none running). */
static int request_signal(const char *spool, int sig, const char *tool, const char *what)
{
	char path[4096], buf[32];
	FILE *f;
	long pid;

	snprintf(path, sizeof(path), "%s/ringmx.pid", spool);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f) || (pid = strtol(buf, NULL, 10)) <= 1) {
		fprintf(stderr, "%s: no running gateway on %s (%s)\n", tool, spool, path);
		if (f)
			fclose(f);
		return 1;
	}
	fclose(f);
	if (kill((pid_t)pid, sig) < 0) {
		fprintf(stderr, "%s: gateway pid %ld: %s\n", tool, pid, strerror(errno));
		return 1;
	}
	printf("%s requested from the gateway (pid %ld)\n", what, pid);
	return 0;
}

/* The running gateway writes its pid into the spool directory; --flush
 * sends it SIGUSR1, on which every worker retries its deferred messages. */
int control_request_flush(const char *spool)
{
	return request_signal(spool, SIGUSR1, "ringmx queue", "flush");
}

/* `ringmx reload`: SIGHUP, on which the gateway reads its options and
 * files again (io/reload), then its answer from <spool>/ringmx.reload. */
#define RELOAD_WAIT_MS 15000

int control_request_reload(const char *spool)
{
	char path[4096], text[8192];
	FILE *f;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", spool, RELOAD_REPORT);
	if (unlink(path) < 0 && errno != ENOENT) {
		fprintf(stderr, "ringmx reload: %s: %s\n", path, strerror(errno));
		return 1;
	}
	rc = request_signal(spool, SIGHUP, "ringmx reload", "reload");
	if (rc)
		return rc;
	for (int waited = 0; waited < RELOAD_WAIT_MS; waited += 50) {
		struct timespec ts = {0, 50 * 1000000L};
		size_t n;

		f = fopen(path, "r");
		if (!f) {
			nanosleep(&ts, NULL);
			continue;
		}
		n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = '\0';
		fputs(text, stdout);
		return strncmp(text, "reloaded", 8) == 0 ? 0 : 1;
	}
	fprintf(stderr, "ringmx reload: no answer from the gateway in %d s (see its log)\n",
	        RELOAD_WAIT_MS / 1000);
	return 1;
}

/* A running gateway may hold the message for delivery: it forgets it on
 * SIGUSR2, reading the queue ids from ringmx.drop. */
void control_request_drop(const char *spool, const char *qid)
{
	char path[4096], buf[32];
	FILE *f;
	long pid;

	snprintf(path, sizeof(path), "%s/ringmx.pid", spool);
	f = fopen(path, "r");
	if (!f)
		return; /* not running */
	pid = fgets(buf, sizeof(buf), f) ? strtol(buf, NULL, 10) : 0;
	fclose(f);
	if (pid <= 1)
		return;
	snprintf(path, sizeof(path), "%s/ringmx.drop", spool);
	f = fopen(path, "a");
	if (!f)
		return;
	fprintf(f, "%s\n", qid);
	fclose(f);
	kill((pid_t)pid, SIGUSR2);
}
