/* gateway: start-up and shutdown. See gateway.h.
 *
 * Order at start: probe every --listen address (a second gateway is
 * refused), bind one SO_REUSEPORT socket per worker per address, give up
 * root (--user), open the spool directory, recover it (the messages that
 * survived a previous run are routed to their owners once the workers
 * run), start the workers one by one (each sets up its ring and reports),
 * tell systemd READY=1 (io/service), then wait for signals in io/control.
 * Under socket activation the listening sockets are systemd's, taken over
 * instead of bound (listen_passed()). */
#include "io/gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/tables.h"
#include "io/commit.h"
#include "io/control.h"
#include "io/metrics.h"
#include "io/ring.h"
#include "io/service.h"
#include "io/verify_store.h"
#include "io/session.h"
#include "io/worker.h"

static int listen_on(const struct conf_listen *cl)
{
	int fd, one = 1;

	fd = socket(cl->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (cl->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cl->addr, cl->addrlen) < 0)
		goto fail;
	if (listen(fd, 4096) < 0)
		goto fail;
	return fd;
fail:
	one = -errno;
	close(fd);
	return one;
}

/* SO_REUSEPORT lets any process of the same user bind the port too, and
 * the kernel would then split connections between the two. Before the
 * workers bind, a probe without SO_REUSEPORT fails if anything holds the
 * address already, so a second gateway (or an MTA) is refused at start. */
static int listen_probe(const struct conf_listen *cl)
{
	int fd, one = 1, err = 0;

	fd = socket(cl->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (cl->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cl->addr, cl->addrlen) < 0)
		err = -errno;
	close(fd);
	return err;
}

/* `mkdir -p`: <path> with its missing parents (mode 0755, less the umask,
 * as mkdir -p makes them), and <path> itself with <mode>. An existing one
 * is left as it is. Start-up, main thread: never on a worker, since it
 * blocks on the file system. Returns 0 or -errno. */
static int mkdir_parents(const char *path, mode_t mode)
{
	char p[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0)
		return -ENOENT;
	if (len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, len + 1);
	while (len > 1 && p[len - 1] == '/')
		p[--len] = '\0';
	for (char *s = p + 1; *s; s++) {
		if (*s != '/' || s[-1] == '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* --user: the sockets are bound (a port under 1024 needs root), now give
 * root up for good: the spool directory is handed to the user, and nothing
 * the process does afterwards (sessions, spool, relay) runs as root. */
static int drop_privileges(const char *user, const char *dir)
{
	struct passwd *pw = getpwnam(user);
	int err;

	if (!pw) {
		LOGE("--user %s: no such user", user);
		return -ENOENT;
	}
	err = mkdir_parents(dir, 0750);
	if (!err && chown(dir, pw->pw_uid, pw->pw_gid) < 0)
		err = -errno;
	if (err) {
		LOGE("--user %s: spool directory %s: %s", user, dir, strerror(-err));
		return err;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		LOGE("--user %s: %s", user, strerror(errno));
		return -errno;
	}
	if (setuid(0) == 0 || getuid() != pw->pw_uid) {
		LOGE("--user %s: root could not be given up", user);
		return -EPERM;
	}
	LOGI("running as %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

static int spool_prepare(struct gateway *g)
{
	const char *dir = g->conf->spool;
	int err = mkdir_parents(dir, 0750);

	if (err)
		return err;
	g->spool_dirfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (g->spool_dirfd < 0)
		return -errno;
	return 0;
}

/* Recovery visitor: a message that survived a previous run, not yet done:
 * registered and routed to its owner when the workers start. */
static int on_recovered(void *arg, const struct spool_msg *m)
{
	struct gateway *g = arg;

	const char *rcpt = m->nrcpt ? m->rcpts : "";
	int segno;

	LOGD("recovered %s from %s at %llu", m->qid, m->segment, (unsigned long long)m->offset);
	if (!g->segs.n || memcmp(&g->recov_seg, &m->seg, sizeof(m->seg)) != 0) {
		segno = segreg_add(&g->segs, &m->seg);
		if (segno < 0)
			return 0; /* stays in the spool; routed after a restart */
		g->recov_seg = m->seg;
		g->recov_last_seg = (unsigned)segno;
	}
	struct mq_item d = QDESC(g->recov_last_seg, route_hash(rcpt), m->offset);
	segreg_hold(&g->segs, g->recov_last_seg); /* released when it is delivered */
	if (*m->quarantine) /* held by the relay unless released (control_held()) */
		LOGI("recovered %s: quarantined (%s)", m->qid, m->quarantine);
	return buf_append(&g->recov, &d, sizeof(d)) ? -ENOMEM : 0;
}

/* Closes the listening sockets the workers did not take over. */
static void listen_close(struct gateway *g)
{
	for (unsigned i = 0; g->lfds && i < g->nworkers * g->conf->nlisten; i++)
		if (g->lfds[i] >= 0)
			close(g->lfds[i]);
	free(g->lfds);
	g->lfds = NULL;
}

/* Whether listening socket <fd> is bound to <cl>'s address: the same
 * family, port and address (a wildcard matches only a wildcard). */
static bool listen_matches(int fd, const struct conf_listen *cl)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 || ss.ss_family != cl->addr.ss_family)
		return false;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&ss, *b = (const void *)&cl->addr;

		return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
	}
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&ss, *b = (const void *)&cl->addr;

		return a->sin6_port == b->sin6_port &&
		       memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
	}
	return false;
}

/* Socket activation: the <n> listening sockets systemd passed (fds 3 and
 * up) are the listeners, none is bound here, so port 25 needs no root and
 * no capability. The rule: each passed socket must be a listening TCP
 * socket whose address (getsockname) is that of exactly one --listen,
 * --listen-tls, --listen-proxy or --listen-tls-proxy, and each of those
 * must have its socket; anything else stops the start (exit 1), since a
 * listener bound here beside them, or a passed one left unused, is
 * surely not what the unit meant. The workers share each socket (a dup
 * each): their multishot accepts take turns on it, where a bound
 * listener has one SO_REUSEPORT socket per worker. */
static int listen_passed(struct gateway *g, int n)
{
	const struct conf *cf = g->conf;
	int type, acc, fd_of[CONF_MAX_LISTEN];
	socklen_t len;

	for (unsigned i = 0; i < cf->nlisten; i++)
		fd_of[i] = -1;
	for (int k = 0; k < n; k++) {
		int fd = SERVICE_LISTEN_FDS_START + k;
		unsigned i;

		len = sizeof(type);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &(socklen_t){sizeof(acc)}) <
		        0 ||
		    !acc) {
			LOGE("socket activation: descriptor %d is not a listening TCP socket", fd);
			return -1;
		}
		for (i = 0; i < cf->nlisten && !listen_matches(fd, &cf->listen[i]); i++)
			;
		if (i == cf->nlisten) {
			LOGE("socket activation: descriptor %d is bound to an address no --listen "
			     "option names (each ListenStream= needs its --listen, --listen-tls or "
			     "--listen-proxy)",
			     fd);
			return -1;
		}
		if (fd_of[i] >= 0) {
			LOGE("socket activation: descriptors %d and %d are both %s", fd_of[i], fd,
			     cf->listen[i].text);
			return -1;
		}
		fd_of[i] = fd;
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	for (unsigned i = 0; i < cf->nlisten; i++) {
		if (fd_of[i] < 0) {
			LOGE("socket activation: systemd passed no socket for %s (add a "
			     "ListenStream= for it to the .socket unit)",
			     cf->listen[i].text);
			return -1;
		}
	}
	g->lfds = calloc((size_t)g->nworkers * cf->nlisten, sizeof(*g->lfds));
	if (!g->lfds)
		return -1;
	for (unsigned i = 0; i < g->nworkers * cf->nlisten; i++)
		g->lfds[i] = -1;
	for (unsigned w = 0; w < g->nworkers; w++) {
		for (unsigned i = 0; i < cf->nlisten; i++) {
			int fd = w == 0 ? fd_of[i] : fcntl(fd_of[i], F_DUPFD_CLOEXEC, 0);

			if (fd < 0) {
				LOGE("socket activation: %s: %s", cf->listen[i].text,
				     strerror(errno));
				listen_close(g);
				return -1;
			}
			g->lfds[w * cf->nlisten + i] = fd;
		}
	}
	g->activated = true;
	return 0;
}

/* Probes every --listen address (a second gateway is refused), then binds
 * one SO_REUSEPORT socket per worker per address, before root is given up;
 * or takes the sockets systemd passed (listen_passed()). Returns 0, or -1
 * with what it opened closed again (g->lfds NULL). */
static int listen_all(struct gateway *g)
{
	const struct conf *cf = g->conf;
	unsigned n = g->nworkers * cf->nlisten;
	int err, npassed = service_listen_fds();

	if (npassed < 0) {
		LOGE("socket activation: $LISTEN_FDS: %s", strerror(-npassed));
		return -1;
	}
	if (npassed > 0) /* on failure the process exits, and the sockets with it */
		return listen_passed(g, npassed);
	for (unsigned i = 0; i < cf->nlisten; i++) {
		/* A gateway killed a moment ago may hold the port for a few
		 * milliseconds more while its ring is torn down. */
		for (int tries = 0;
		     (err = listen_probe(&cf->listen[i])) == -EADDRINUSE && tries < 20; tries++)
			usleep(50000);
		if (err) {
			LOGE("listen on %s: %s%s", cf->listen[i].text, strerror(-err),
			     err == -EADDRINUSE ? " (another process holds it)" : "");
			return -1;
		}
	}
	g->lfds = calloc(n, sizeof(*g->lfds));
	if (!g->lfds)
		return -1;
	for (unsigned i = 0; i < n; i++)
		g->lfds[i] = -1;
	for (unsigned i = 0; i < n; i++) {
		g->lfds[i] = listen_on(&cf->listen[i % cf->nlisten]);
		if (g->lfds[i] < 0) {
			LOGE("listen on %s: %s", cf->listen[i % cf->nlisten].text,
			     strerror(-g->lfds[i]));
			listen_close(g);
			return -1;
		}
	}
	return 0;
}

/* The workers' state, before their threads start. 0 or -ENOMEM. */
static int workers_new(struct gateway *g, uint32_t qid_seed)
{
	g->workers = calloc(g->nworkers, sizeof(*g->workers));
	if (!g->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < g->nworkers; i++) {
		/* Aligned: its metrics (w->st) keep to cache lines of their own. */
		struct worker *w = aligned_alloc(_Alignof(struct worker), sizeof(*w));

		if (!w)
			return -ENOMEM;
		memset(w, 0, sizeof(*w));
		g->workers[i] = w;
		w->g = g;
		w->id = i;
		w->tables = g->tables ? tables_ref(g->tables) : NULL;
		if (g->anvil) /* the workers start their sweeps apart */
			w->anvil_next =
			    (unsigned)((uint64_t)i * anvil_shards(g->anvil) / g->nworkers);
		atomic_init(&w->tables_next, NULL);
		atomic_init(&w->relay_next, NULL);
		/* Each worker's share of --data-memory: sessions spread over the
		 * workers (SO_REUSEPORT), and no counter is shared. */
		w->data_cap = g->conf->data_memory / g->nworkers;
		commit_init(w, qid_seed);
		w->wakefd = eventfd(0, EFD_CLOEXEC);
		w->outbox = calloc((size_t)g->nworkers * OUTBOX_MAX, sizeof(*w->outbox));
		w->outn = calloc(g->nworkers, sizeof(*w->outn));
		pthread_mutex_init(&w->ready_mu, NULL);
		pthread_cond_init(&w->ready_cv, NULL);
		if (w->wakefd < 0 || !w->outbox || !w->outn || metrics_worker_init(w))
			return -ENOMEM;
	}
	/* Recovered messages start in their owner's overflow list: the owner
	 * pushes them into its own ring as soon as it runs. */
	for (size_t k = 0; k < g->recov.len / sizeof(struct mq_item); k++) {
		struct mq_item d = ((struct mq_item *)g->recov.p)[k];
		struct route_item r = {(uint32_t)d.a % g->nworkers, d};

		if (buf_append(&g->workers[r.to]->overflow, &r, sizeof(r)))
			return -ENOMEM;
	}
	return 0;
}

static void workers_free(struct gateway *g)
{
	for (unsigned i = 0; g->workers && i < g->nworkers && g->workers[i]; i++) {
		struct worker *w = g->workers[i];

		if (w->wakefd >= 0)
			close(w->wakefd);
		tables_unref(w->tables);
		tables_unref(atomic_exchange(&w->tables_next, NULL));
		relay_conf_unref(w->relay_want);
		relay_conf_unref(atomic_exchange(&w->relay_next, NULL));
		if (w->stat_limited)
			LOGI("worker %u: %llu connections refused by per-client limits", i,
			     (unsigned long long)w->stat_limited);
		if (w->rejected.unknown || w->rejected.relay_denied)
			LOGI("worker %u: recipients refused: %u unknown users, %u relay access "
			     "denied "
			     "(%u of them routes through an accepted domain)",
			     i, w->rejected.unknown, w->rejected.relay_denied, w->rejected.routing);
		free(w->lst);
		free(w->outbox);
		free(w->outn);
		buf_free(&w->overflow);
		buf_free(&w->held);
		buf_free(&w->ctl);
		session_pool_free(w);
		metrics_worker_fini(w);
		free(w);
	}
	free(g->workers);
	g->workers = NULL;
}

/* Starts the worker threads one by one, each reporting its set-up. Returns
 * how many were started; *<ok> false when one could not start. */
static unsigned workers_start(struct gateway *g, bool *ok)
{
	unsigned started = 0;

	*ok = true;
	for (unsigned i = 0; i < g->nworkers; i++) {
		struct worker *w = g->workers[i];

		if (pthread_create(&w->thread, NULL, worker_main, w)) {
			LOGE("cannot start worker %u", i);
			*ok = false;
			break;
		}
		started++;
		pthread_mutex_lock(&w->ready_mu);
		while (w->ready == 0)
			pthread_cond_wait(&w->ready_cv, &w->ready_mu);
		pthread_mutex_unlock(&w->ready_mu);
		if (w->ready < 0) {
			*ok = false;
			break;
		}
#ifdef __linux__
		if (g->nworkers > 1 && g->nworkers <= (unsigned)sysconf(_SC_NPROCESSORS_ONLN)) {
			cpu_set_t cpus;

			CPU_ZERO(&cpus);
			CPU_SET(i, &cpus);
			pthread_setaffinity_np(w->thread, sizeof(cpus), &cpus);
		}
#endif
	}
	return started;
}

int gateway_run(struct gateway *g)
{
	struct spool_recovery rec;
	const struct conf *cf = g->conf;
	struct timespec ts;
	sigset_t set;
	unsigned started;
	int sig, err, rc = 1;
	bool ok;

	ring_log_prepare();
	service_init();
	if (metrics_bind(g))
		return 1;
	if (listen_all(g)) {
		metrics_stop(g);
		return 1;
	}
	if (cf->user) {
		if (drop_privileges(cf->user, cf->spool))
			goto out_listen;
	} else if (geteuid() == 0) {
		LOGW("running as root: give --user to run the gateway as an unprivileged user");
	}
	err = spool_prepare(g);
	if (err) {
		LOGE("spool directory %s: %s", cf->spool, strerror(-err));
		goto out_listen;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	g->start_id = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	segreg_init(&g->segs);
	for (unsigned i = 0; i < sizeof(g->ring_fds) / sizeof(g->ring_fds[0]); i++)
		atomic_init(&g->ring_fds[i], -1);
	err = mq_init(&g->mq, g->nworkers, cf->queue_capacity);
	if (err) {
		LOGE("message queue: %s", strerror(-err));
		goto out_spool;
	}
	err = spool_recover(cf->spool, g->start_id, on_recovered, g, &rec);
	if (err) {
		LOGE("spool recovery in %s: %s", cf->spool, strerror(-err));
		goto out_recov;
	}
	/* Recovered segments take no more records: once their messages are
	 * delivered they are unlinked while running. */
	for (unsigned i = 0; i < g->segs.n; i++) {
		segreg_seal(&g->segs, i);
		segreg_recovered(&g->segs, i);
	}
	err = verify_store_start(g); /* before any worker looks at the cache */
	if (err)
		goto out_recov;
	pthread_mutex_init(&g->ctl_mu, NULL);
	control_start(g); /* the hold logs, after recovery compacted them */
	control_block_signals(&set);
	err = workers_new(g, (uint32_t)(ts.tv_nsec / 1000) * 2654435761u);
	buf_free(&g->recov);
	if (err) {
		LOGE("workers: %s", strerror(-err));
		goto out_workers;
	}
	started = workers_start(g, &ok);
	if (ok && metrics_start(g)) /* after the workers: it reads them */
		ok = false;
	if (ok) {
		for (unsigned i = 0; i < cf->nlisten; i++)
			LOGI("listening on %s (%u workers%s)", cf->listen[i].text, g->nworkers,
			     g->activated ? ", socket from systemd" : "");
		control_pid_write(g); /* for `ringmx queue --flush` */
		service_ready(g);     /* listeners up, recovery done */
		sig = control_wait(g, &set, started);
		service_stopping(g);
		LOGI("signal %d: stopping; transactions in progress get %us", sig, cf->grace);
		rc = 0;
	}
	atomic_store(&g->stop, 1);
	control_wake(g, started);
	for (unsigned i = 0; i < started; i++)
		pthread_join(g->workers[i]->thread, NULL);
	metrics_stop(g); /* before the workers it reads are freed */
	verify_store_stop(g);
	if (ok)
		control_pid_remove(g);
out_workers:
	verify_store_stop(g);
	workers_free(g);
	control_fini(g);
out_recov:
	buf_free(&g->recov);
	mq_fini(&g->mq);
out_spool:
	segreg_fini(&g->segs);
	close(g->spool_dirfd);
out_listen:
	metrics_stop(g);
	listen_close(g);
	if (rc == 0)
		LOGI("stopped");
	return rc;
}
