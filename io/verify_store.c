/* verify_store: the verification cache (core/verify_cache) on disk, so
 * that a restart does not probe every address again. A log-structured
 * file in the spool directory, "verify.cache": a magic line, then records
 * (core/verify_cache's format), appended once a second by a thread of its
 * own from the cache's journal, off the workers' hot path; no fdatasync
 * (a lost tail is a probe more, nothing else). At start it is read back
 * (expired records dropped, a torn tail cut) and written again compacted
 * (a new file renamed over the old one); while running it is compacted
 * the same way once it has grown to four times what it held then. */
#include "io/verify_store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/verify_cache.h"

#define STORE_FILE  "verify.cache"
#define STORE_TMP   "verify.cache.tmp"
#define STORE_MAGIC "ringmx verify cache 1\n"
#define STORE_MIN   (1u << 20) /* compacted no sooner than past this size */

struct verify_store {
	struct verify_cache *vc;
	int dirfd, fd;
	uint64_t size, compacted; /* bytes now, and right after the last compaction */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, started;
};

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Writes the cache's fresh entries to a new file and renames it over the
 * log, which is then appended to. */
static int compact(struct verify_store *st)
{
	struct buf b = BUF_INIT;
	ssize_t n;
	int fd, err;

	if (buf_append(&b, STORE_MAGIC, sizeof(STORE_MAGIC) - 1))
		return -ENOMEM;
	n = verify_cache_dump(st->vc, &b, (int64_t)time(NULL));
	if (n < 0) {
		buf_free(&b);
		return (int)n;
	}
	fd = openat(st->dirfd, STORE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		buf_free(&b);
		return -errno;
	}
	err = write_all(fd, b.p, b.len);
	if (!err && renameat(st->dirfd, STORE_TMP, st->dirfd, STORE_FILE) < 0)
		err = -errno;
	if (err) {
		close(fd);
		unlinkat(st->dirfd, STORE_TMP, 0);
		buf_free(&b);
		return err;
	}
	if (st->fd >= 0)
		close(st->fd);
	st->fd = fd;
	st->size = st->compacted = b.len;
	buf_free(&b);
	return (int)n;
}

/* Appends what the workers put since the last call; compacts when due. */
static void store_flush(struct verify_store *st)
{
	struct buf b = BUF_INIT;
	int err;

	if (verify_cache_journal_take(st->vc, &b) == 0 && b.len && st->fd >= 0) {
		err = write_all(st->fd, b.p, b.len);
		if (err)
			LOGW("verify: %s: %s", STORE_FILE, strerror(-err));
		else
			st->size += b.len;
	}
	buf_free(&b);
	if (st->size > STORE_MIN && st->size > 4 * st->compacted) {
		err = compact(st);
		if (err < 0)
			LOGW("verify: compacting %s: %s", STORE_FILE, strerror(-err));
	}
}

static void *store_run(void *arg)
{
	struct verify_store *st = arg;

	pthread_mutex_lock(&st->mu);
	while (!st->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&st->cv, &st->mu, &ts);
		pthread_mutex_unlock(&st->mu);
		store_flush(st);
		pthread_mutex_lock(&st->mu);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* Reads the log back into the cache. Returns the records taken or -errno
 * (-ENOENT: none yet). */
static ssize_t store_load(struct verify_store *st, size_t *fresh)
{
	struct stat sb;
	size_t used = 0, n;
	char *p;
	ssize_t got = 0;
	int fd = openat(st->dirfd, STORE_FILE, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0 || sb.st_size < 0) {
		close(fd);
		return -EIO;
	}
	p = malloc((size_t)sb.st_size + 1);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	while ((size_t)got < (size_t)sb.st_size) {
		ssize_t k = read(fd, p + got, (size_t)sb.st_size - (size_t)got);

		if (k <= 0)
			break;
		got += k;
	}
	close(fd);
	if ((size_t)got < sizeof(STORE_MAGIC) - 1 ||
	    memcmp(p, STORE_MAGIC, sizeof(STORE_MAGIC) - 1) != 0) {
		LOGW("verify: %s is not a verification cache: ignored", STORE_FILE);
		free(p);
		return 0;
	}
	n = verify_cache_load(st->vc, p + sizeof(STORE_MAGIC) - 1,
	                      (size_t)got - (sizeof(STORE_MAGIC) - 1), (int64_t)time(NULL), &used);
	if (used < (size_t)got - (sizeof(STORE_MAGIC) - 1))
		LOGW("verify: %s: %zu bytes after record %zu do not read as records (a torn "
		     "write): dropped",
		     STORE_FILE, (size_t)got - (sizeof(STORE_MAGIC) - 1) - used, n);
	free(p);
	*fresh = verify_cache_count(st->vc);
	return (ssize_t)n;
}

int verify_store_start(struct gateway *g)
{
	struct verify_store *st;
	size_t fresh = 0;
	ssize_t n;
	int err;

	if (!g->vcache)
		return 0;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->vc = g->vcache;
	st->dirfd = g->spool_dirfd;
	st->fd = -1;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	n = store_load(st, &fresh);
	if (n < 0 && n != -ENOENT)
		LOGW("verify: reading %s: %s (starting empty)", STORE_FILE, strerror((int)-n));
	else if (n > 0)
		LOGI("verify: %zu cached verdicts read back from %s (%zd records)", fresh,
		     STORE_FILE, n);
	err = compact(st);
	if (err < 0) {
		LOGE("verify: writing %s in the spool: %s", STORE_FILE, strerror(-err));
		free(st);
		return err;
	}
	err = pthread_create(&st->thread, NULL, store_run, st);
	if (err) {
		close(st->fd);
		free(st);
		return -err;
	}
	st->started = true;
	g->vstore = st;
	return 0;
}

void verify_store_stop(struct gateway *g)
{
	struct verify_store *st = g->vstore;

	if (!st)
		return;
	pthread_mutex_lock(&st->mu);
	st->stop = true;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->mu);
	if (st->started)
		pthread_join(st->thread, NULL);
	store_flush(st); /* what the workers put last */
	if (st->fd >= 0)
		close(st->fd);
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	free(st);
	g->vstore = NULL;
}
