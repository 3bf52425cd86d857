/* control: the pid and request files and the signals, both ends. See
 * control.h. */
#include "io/control.h"

#include <dirent.h>
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
#include "core/qtool.h"
#include "core/tables.h"
#include "io/reload.h"
#include "io/service.h"
#include "queue/spool.h"

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

/* The operator's requests: `ringmx queue` writes each batch as a file of
 * its own, "ringmx.req-<ns>-<pid>", complete before it appears (written
 * as ".tmp", then renamed), so that no request is read half-written or
 * lost between a read and an unlink, and then sends SIGUSR2. */
#define REQ_PREFIX "ringmx.req-"

/* A request file: complete ones only, or with <tmp> also those a tool was
 * writing (left by one that died, at start). */
static bool is_request(const char *name, bool tmp)
{
	size_t n = strlen(name);

	return !strncmp(name, REQ_PREFIX, sizeof(REQ_PREFIX) - 1) && n > sizeof(REQ_PREFIX) - 1 &&
	       (tmp || strcmp(name + n - 4, ".tmp"));
}

/* Reads the hold logs again into g->holds. Main thread. */
static void holds_reload(struct gateway *g)
{
	struct spool_holds *h = NULL, *old;
	int err = spool_holds_load(g->conf->spool, &h);

	if (err) {
		/* The old set stays: a held message stays held; a release
		 * is read at the next request or start. */
		LOGE("spool: cannot read the hold logs: %s; the holds read before stay",
		     strerror(-err));
		return;
	}
	pthread_mutex_lock(&g->ctl_mu);
	old = g->holds;
	g->holds = h;
	atomic_store(&g->nheld, spool_holds_count(h));
	pthread_mutex_unlock(&g->ctl_mu);
	spool_holds_free(old);
}

/* Reads and removes every complete request file; the holds first, then
 * the requests for the workers (a release finds the hold gone). Without
 * <apply> they are only removed. Main thread. */
static void requests_read(struct gateway *g, unsigned started, bool apply)
{
	struct buf req = BUF_INIT;
	bool holds = false;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(g->spool_dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		LOGE("spool: cannot read the directory for requests: %s", strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		FILE *f;
		int rfd;

		if (!is_request(de->d_name, !apply))
			continue;
		rfd = openat(g->spool_dirfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		f = rfd >= 0 ? fdopen(rfd, "r") : NULL;
		if (!f) {
			if (rfd >= 0)
				close(rfd);
			continue;
		}
		while (apply && (n = getline(&line, &cap, f)) > 0) {
			enum qtool_op op;
			struct sv qid;

			if (line[n - 1] == '\n')
				n--;
			if (qtool_req_parse(line, (size_t)n, &op, &qid)) {
				LOGW("%s: request not understood, ignored: %.*s", de->d_name,
				     (int)(n > 80 ? 80 : n), line);
				continue;
			}
			LOGI("operator: %s %.*s", qtool_op_name(op), (int)qid.len, qid.p);
			if (op == QTOOL_HOLD || op == QTOOL_RELEASE)
				holds = true;
			if (op != QTOOL_HOLD) {
				char o = (char)op;

				if (buf_append(&req, &o, 1) || buf_append(&req, qid.p, qid.len) ||
				    buf_append(&req, "", 1))
					LOGE("out of memory for the operator's requests");
			}
		}
		fclose(f);
		unlinkat(g->spool_dirfd, de->d_name, 0);
	}
	closedir(d);
	free(line);
	if (holds)
		holds_reload(g);
	if (req.len) {
		pthread_mutex_lock(&g->ctl_mu);
		for (unsigned i = 0; i < started; i++)
			if (buf_append(&g->workers[i]->ctl, req.p, req.len))
				LOGE("out of memory for the operator's requests (worker %u)", i);
		pthread_mutex_unlock(&g->ctl_mu);
		atomic_fetch_add(&g->ctl_gen, 1);
	}
	buf_free(&req);
}

void control_start(struct gateway *g)
{
	/* Requests left by tools while no gateway ran: what they changed is
	 * in the logs (holds, deletes), and a requeue is moot at start. */
	requests_read(g, 0, false);
	holds_reload(g);
	if (atomic_load(&g->nheld))
		LOGI("spool: %zu messages on hold (ringmx queue release)", atomic_load(&g->nheld));
}

void control_fini(struct gateway *g)
{
	spool_holds_free(g->holds);
	g->holds = NULL;
}

bool control_held(struct gateway *g, const char *qid, bool quarantined)
{
	bool held;

	if (!quarantined && !atomic_load_explicit(&g->nheld, memory_order_relaxed))
		return false;
	pthread_mutex_lock(&g->ctl_mu);
	held = spool_holds_held_q(g->holds, qid, quarantined);
	pthread_mutex_unlock(&g->ctl_mu);
	return held;
}

void control_requests_take(struct worker *w, struct buf *out)
{
	pthread_mutex_lock(&w->g->ctl_mu);
	*out = w->ctl;
	w->ctl = (struct buf)BUF_INIT;
	pthread_mutex_unlock(&w->g->ctl_mu);
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
		bool wake = false;
		int64_t ms = service_tick(g, started), rms = reload_relay_tick(g, started, &wake);

		if (wake)
			control_wake(g, started); /* new next hops' addresses */
		if (rms >= 0 && (ms < 0 || rms < ms))
			ms = rms; /* next hops' names due (io/relay_dns) */
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
			requests_read(g, started, true);
		else if (sig == SIGUSR1)
			atomic_fetch_add(&g->flush_gen, 1); /* retry deferred messages now */
		if (sig == SIGUSR1 || sig == SIGUSR2) {
			control_wake(g, started);
			continue;
		}
		return sig;
	}
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

/* The pid in <spool>/ringmx.pid of a gateway that runs, or 0. */
static long running_pid(const char *spool)
{
	char path[4096], buf[32];
	FILE *f;
	long pid;

	snprintf(path, sizeof(path), "%s/ringmx.pid", spool);
	f = fopen(path, "r");
	if (!f)
		return 0;
	pid = fgets(buf, sizeof(buf), f) ? strtol(buf, NULL, 10) : 0;
	fclose(f);
	if (pid <= 1 || (kill((pid_t)pid, 0) < 0 && errno == ESRCH))
		return 0;
	return pid;
}

int control_request(const char *spool, const struct buf *lines)
{
	char name[4096], tmp[4200];
	struct timespec ts;
	long pid = running_pid(spool);
	int fd, err = 0;

	if (!pid)
		return 0;
	if (!lines->len)
		return 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(name, sizeof(name), "%s/" REQ_PREFIX "%016llx-%ld", spool,
	         (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec,
	         (long)getpid());
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	/* Not synced: what must survive a crash is in the spool's logs
	 * already; this only tells the gateway now. */
	if (write(fd, lines->p, lines->len) != (ssize_t)lines->len)
		err = errno ? -errno : -EIO;
	close(fd);
	if (!err && rename(tmp, name) < 0)
		err = -errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	if (kill((pid_t)pid, SIGUSR2) < 0)
		return -errno; /* it stopped since: the next start removes the file */
	return 1;
}
