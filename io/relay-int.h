/* relay-int.h: what the two rooms of the relay share, and nobody else:
 * io/relay.c (the messages: read back, dispatched, settled, bounced) and
 * io/relay_conn.c (the connections to the next hops that carry their jobs).
 * Include io/relay.h first. io/relay*.c only. */
#ifndef RINGMX_IO_RELAY_INT_H
#define RINGMX_IO_RELAY_INT_H

#ifndef RINGMX_IO_RELAY_H
#error "include io/relay.h before io/relay-int.h"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/retry.h"
#include "core/tables.h"
#include "core/smtp_client.h"
#include "io/types-t.h"
#include "queue/delivery.h"
#include "queue/spool.h"

/* What an rmsg is reading back (see "Records are read back through the
 * ring" below). */
enum rmsg_phase {
	RM_HDR = 0, /* the header, into <hdr> */
	RM_ENV,     /* header and envelope, into <rd> */
	RM_LOADED,  /* nothing: being delivered, or deferred */
	RM_DSN,     /* the body's first bytes, into <rd>, for the bounce */
	RM_MOVE,    /* the whole record, into <rd>, to copy it forward */
};

/* A message being delivered: its record's header and envelope, read back
 * from the spool, and its delivery state (queue/delivery), whose strings
 * point into them. The body stays on the disk: each connection sending it
 * streams it in chunks of its own (struct relay_conn), so that memory does
 * not grow with the size of the messages in the queue. */
struct rmsg {
	struct delivery_msg d;
	struct spool_msg m; /* envelope; strings in <scratch>; body NULL, body_len set */
	struct buf scratch;
	unsigned char hdr[SPOOL_HDR_LEN]; /* read first; kept: its crc checks every sending */
	uint32_t env_crc; /* crc32c of header and envelope: where a sending starts */
	uint64_t body_at; /* the body's offset in the record */
	enum rmsg_phase phase;
	unsigned char *rd; /* RM_ENV, RM_DSN: the read's buffer (<rd_len> bytes), else NULL */
	size_t rd_len;
	size_t got; /* bytes of the phase's read done so far (short reads continue) */
	int segno;
	int fd; /* the segment file of the read in flight */
	struct spool_seg_id seg;
	uint64_t offset;
	struct rmsg *next; /* in the deferred list, or the moving one */
	bool dispatching;  /* in msg_dispatch(): a job released meanwhile does not settle it */
	bool dropped;      /* deleted by the operator while it moved */
	bool held;         /* on hold (`ringmx queue hold`): in the deferred list, never
	                    * dispatched (nor expired) until released */
	unsigned gen;      /* the relay's <gen> its recipients were given routes in */
	time_t move_try;   /* no move before this (one failed) */
	/* When its jobs were last queued for connections (the log's delays=):
	 * the worker clock (ms) and the wall clock (s). */
	int64_t dispatched_ms;
	time_t dispatched_at;
};

static inline struct rmsg *rmsg_of(struct delivery_msg *d)
{
	return (struct rmsg *)((char *)d - offsetof(struct rmsg, d));
}

/* relay_conn flags (the connection's own are RCONN_*: io/conn) */
#define RC_CONN  0x4u  /* connecting (RCONN_SEND is set for the connect too) */
#define RC_DIRTY 0x10u /* on the relay's list of connections to flush */
#define RC_BODY  0x20u /* a body chunk read is in flight (UD_RELAY_BODY) */

/* Body bytes a connection holds at a time: read from the spool, then given
 * to the client, which stops at its own out_max (SMTPC_OUT_MAX, 64 KB). */
#define RELAY_CHUNK (64u * 1024)

struct relay_conn {
	struct ring_conn rc; /* first: user_data names both */
	struct worker *w;
	unsigned route;
	unsigned hop;     /* index in the route's hops: failover moves it on */
	unsigned flags;   /* RC_* */
	int64_t deadline; /* ms: connect or the next reply */
	struct smtp_client cl;
	struct smtp_client_conf ccf;
	struct delivery_job *job;
	int64_t connect_ms; /* worker clock: connect started (rc_connect()) */
	int64_t setup_ms;   /* connect to first READY, for its first job's delays=; then 0 */
	int64_t job_ms;     /* worker clock: <job> was taken */
	struct relay_conn *next, *dirty_next;
	struct relay_conn *route_next; /* in its route's list */
	/* The job's body, streamed from the spool (body_feed()): */
	uint64_t body_read;          /* body bytes read so far */
	uint32_t body_crc;           /* crc32c of the record up to there */
	unsigned body_seq;           /* bumped per body: a read for an earlier one is stale */
	unsigned read_seq;           /* <body_seq> when the read in flight was prepared */
	int read_fd;                 /* the segment file of the read in flight */
	size_t chunk_len, chunk_pos; /* bytes in <chunk>; of them, given to the client */
	/* Embedded rather than allocated per body, so that closing and
	 * freeing a connection (rc_close(), rc_free()) need not know of it;
	 * a connection lives only while its route has work. */
	unsigned char chunk[RELAY_CHUNK];
} __attribute__((aligned(8)));

/* Per route, so that opening connections for one route looks at its own
 * (at most --relay-pool) connections, not at every connection. */
struct relay_route_state {
	struct relay_conn *conns; /* linked by route_next */
	unsigned nconns;
};

struct relay {
	struct relay_conf *rc; /* the next hops it delivers with (a reference) */
	unsigned gen;   /* bumped when <rc> changes: messages routed before are routed again */
	bool switching; /* a reload changed the next hops: the connections finish their jobs,
	                 * take no more, and then the relay moves (relay_routes_check()) */
	struct retry_conf retry;
	struct relay_route_state *rs;
	struct delivery_queue q; /* per route: the jobs waiting for a connection */
	struct relay_conn *conns;
	struct relay_conn *dirty;
	struct rmsg *deferred;
	struct buf note;     /* defer_note()'s line, reused */
	struct rmsg *moving; /* being copied forward (see msg_move()) */
	unsigned nmoving;
	size_t moving_bytes;
	struct seg_file *segf; /* segments open for reads */
	unsigned nsegf;
	const struct relay_sink *sink; /* the loop: bounces, done marks, defer notes */
	unsigned nbouncing;            /* messages waiting for their bounce to be durable */
	unsigned nloading;             /* records being read back */
	unsigned nmsgs;                /* messages taken and not yet freed (struct rmsg) */
	time_t oldest;                 /* arrival of the oldest deferred one at the last tick; 0 */
	bool stopping;
	unsigned ndsn;
	uint64_t stat_sent, stat_deferred, stat_bounced, stat_moved;
};

/* An open segment for reads. An SQE names its file by number, and the
 * number is looked up when the ring submits it, later: a file with reads
 * prepared or in flight (<refs>) is never closed. */
struct seg_file {
	int segno, fd;
	unsigned refs;
};

/* The options the relay reads (a reload's live ones once published). */
static inline const struct conf *relay_cf(const struct worker *w)
{
	return w->tables && w->tables->conf ? w->tables->conf : w->g->conf;
}

/* The next hops the worker's snapshot asks for (the startup ones until a
 * reload changes them). */
static inline struct relay_conf *relay_conf_wanted(const struct worker *w)
{
	return w->relay_want ? w->relay_want : (struct relay_conf *)&w->g->relay;
}

/* ---- io/relay.c, for the connections ---- */

/* The open file of segment <segno> with one more reference, or -errno.
 * A file with reads prepared or in flight is never closed. */
int relay_seg_ref(struct worker *w, int segno);
void relay_seg_unref(struct worker *w, int fd);
/* Frees a job that came back; settles its message if it was the last. */
void relay_job_release(struct worker *w, struct delivery_job *j);
/* The results of job <j> from <c>'s client session; then releases it. */
void relay_job_results(struct worker *w, struct relay_conn *c, struct delivery_job *j);

/* ---- io/relay_conn.c, for the messages ---- */

/* Opens connections for the route's waiting jobs, up to the pool size. */
void relay_conn_kick(struct worker *w, unsigned route);
/* The route reached no next hop: its waiting jobs are deferred with <why>. */
void relay_conn_route_down(struct worker *w, unsigned route, const char *why);
/* Gives the job back (its recipients deferred with <why>) and closes. */
void relay_conn_close(struct worker *w, struct relay_conn *c, const char *why);
/* Frees <c> (nothing in flight). */
void relay_conn_free(struct worker *w, struct relay_conn *c);
/* Puts <c> on the list of connections to flush at the end of the round. */
void relay_conn_dirty(struct relay *r, struct relay_conn *c);

/* io/relay.c, for io/relay_ops.c: frees a message the relay held (closing
 * its segment reference); marks <m> <st> in the done log. Worker thread. */
void relay_msg_free(struct worker *w, struct rmsg *m);
void relay_done_record(struct worker *w, struct rmsg *m, enum spool_state st);
/* Queues one job per route for the message's pending recipients (routed
 * again first when the next hops changed since). */
void relay_msg_dispatch(struct worker *w, struct rmsg *m);

/* io/relay_ops.c, for relay_tick(): moves the relay to the next hops a
 * reload published, once the connections to the old ones are done. */
void relay_routes_check(struct worker *w);

#endif
