/* worker: the gateway's threads. One worker per core, each with its own
 * io_uring ring, its own SO_REUSEPORT listening sockets, its own sessions,
 * receive buffers and spool segment: workers share nothing but the
 * read-only configuration and one session counter. */
#ifndef RINGMX_IO_WORKER_H
#define RINGMX_IO_WORKER_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/smtp_session.h"
#include "io/relay.h"
#include "queue/mq.h"
#include "queue/spool.h"

#include <pthread.h>

/* Segments of this run and of earlier runs get a small number, so that a
 * queue descriptor (struct mq_item: 16 bytes) can name one. Entries never
 * move once added (chunked), so readers need no lock; adding takes one
 * (only when a segment is opened or recovered: rare). */
#define SEGREG_CHUNK  4096u
#define SEGREG_CHUNKS 1024u
struct seg_registry {
	pthread_mutex_t mu;
	struct spool_seg_id *chunk[SEGREG_CHUNKS];
	unsigned n;
};

/* A message descriptor on the queue: a = segment number << 32 | route hash
 * (the first recipient's domain, which picks the owning worker), b = offset
 * of the record in its segment. */
#define QDESC(segno, hash, off)                                                                    \
	((struct mq_item){((uint64_t)(segno) << 32) | (uint32_t)(hash), (off)})

struct worker;

struct tls_ctx;

struct gateway {
	const struct conf *conf;
	struct tls_ctx *tls;     /* NULL: no certificate, no STARTTLS, no --listen-tls */
	struct relay_conf relay; /* next hops; relay.nroutes == 0: no delivery */
	atomic_uint stop;        /* set before the workers are woken to stop */
	atomic_uint flush_gen;   /* bumped by SIGUSR1: retry deferred messages now */
	atomic_uint drop_gen;    /* bumped by SIGUSR2: forget the messages in <drop> */
	pthread_mutex_t drop_mu;
	struct buf drop; /* queue ids deleted by the operator, NUL-separated */
	struct smtp_server_conf scf;
	unsigned nworkers;
	struct worker **workers;
	uint64_t start_id; /* unique per start: names this run's segments */
	int spool_dirfd;
	int *lfds; /* listening sockets, [worker * nlisten + listener], bound before any drop */
	atomic_uint nsessions; /* open sessions, all workers */
	struct mq mq;          /* descriptors between workers: a mesh of SPSC rings */
	struct seg_registry segs;
	struct buf recov;        /* struct mq_item of recovered messages, until workers start */
	unsigned recov_last_seg; /* registry number of the segment recovery is in */
	struct spool_seg_id recov_seg;
	_Atomic int ring_fds[256]; /* each worker's ring fd, for IORING_OP_MSG_RING; -1 until up */
};

/* Adds a segment to the registry; returns its number or -ENOSPC. Any thread. */
int segreg_add(struct seg_registry *r, const struct spool_seg_id *id);
/* Segment number <i>: valid once a descriptor naming it was received. */
const struct spool_seg_id *segreg_get(const struct seg_registry *r, unsigned i);
/* Route hash of an address's domain (case-insensitive FNV-1a). */
uint32_t route_hash(const char *addr);

/* Creates the spool directory if needed, starts the workers (they bind
 * and listen before this returns, so the caller may report readiness),
 * waits for SIGTERM or SIGINT, drains and joins them. Returns the process
 * exit status. Main thread only. */
int gateway_run(struct gateway *g);

#endif
