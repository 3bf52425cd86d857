/* types-t.h: the types of a worker and of the gateway (HAProxy's -t.h
 * split): the rooms of io/ (ring, session, commit, route, control, gateway,
 * the loop in worker.c) share them. Types, constants and flags only: the
 * functions are declared in each room's own header. io/ only. */
#ifndef RINGMX_IO_TYPES_T_H
#define RINGMX_IO_TYPES_T_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <stdatomic.h>

#include "core/buf.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/smtp_session.h"
#include "core/stats.h"
#include "core/verify_wait.h"
#include "io/relay_conf.h"
#include "queue/mq.h"
#include "queue/segreg.h"
#include "queue/spool.h"

#define RX_BUF_SIZE  16384u /* one provided receive buffer */
#define RX_BUF_COUNT 512u   /* per worker; a power of two */
#define RX_BGID      1
#define RING_ENTRIES 4096u
#define BATCH_MAX    1024u        /* messages under one fdatasync */
#define BATCH_IOVS   1024u        /* views in one batch's writev (IOV_MAX) */
#define BATCH_BYTES  (256u << 20) /* one writev: far below a write's 2 GB cap */
#define TICK_MS      1000
#define OUT_KEEP     4096u      /* send buffer kept by an idle session */
#define PENDING_MAX  (1u << 20) /* input held while a message spools */
#define OUTBOX_MAX   64u        /* descriptors gathered per destination before a push */
#define POP_MAX      256u       /* descriptors taken per mq_pop() */

/* user_data: one operation code per kind of completion in the top byte,
 * the object it concerns in the low 56 bits (user-space pointers on x86-64
 * and arm64 fit in 48), as liburing's examples/proxy.c encodes them. The
 * loop (io/worker.c) dispatches through one handler table indexed by op. */
enum ud_op {
	UD_NONE = 0,      /* cancel requests, MSG_RING sends: nothing to do */
	UD_ACCEPT,        /* struct listener: multishot accept */
	UD_RECV,          /* struct conn: multishot receive */
	UD_SEND,          /* struct conn: a send */
	UD_SEG_SYNC,      /* struct commit: the batch's writev with RWF_DSYNC */
	UD_DIR_SYNC,      /* struct commit: fsync of the spool directory (a new file) */
	UD_LOG_WRITE,     /* struct commit_log: an append to the done or defer log */
	UD_LOG_SYNC,      /* struct commit_log: fdatasync of the done log */
	UD_LOG_DIRSYNC,   /* struct commit_log: fsync of the directory (a new log file) */
	UD_SEG_UNLINK,    /* struct seg_unlink (io/commit.c): a finished segment's unlink */
	UD_UNLINK_SYNC,   /* struct commit: fsync of the directory after unlinks */
	UD_LOG_UNLINK,    /* struct log_old (io/commit.c): an old done or defer log's unlink */
	UD_STDERR,        /* struct worker: the log lines of a round (core/log sink) */
	UD_TICK,          /* struct worker: the once-a-second timer */
	UD_DELAY,         /* struct worker: the tarpit's timer (io/session) */
	UD_WINDOW,        /* struct commit: the commit-window timeout */
	UD_EVENTFD,       /* struct worker: its eventfd (stop, flush, drop) */
	UD_MSGRING,       /* struct worker: IORING_OP_MSG_RING from a producer */
	UD_RELAY_RECV,    /* struct relay_conn: multishot receive */
	UD_RELAY_SEND,    /* struct relay_conn: a send */
	UD_RELAY_CONNECT, /* struct relay_conn: its connect */
	UD_RELAY_READ,    /* struct rmsg: a record read back for delivery */
	UD_RELAY_BODY,    /* struct relay_conn: the next chunk of the body it sends */
	UD_SPILL_WRITE,   /* struct spill: content of a streamed message, to its segment */
	UD_SPILL_FIN,   /* struct spill: one step of its end: tail, header, fdatasync, dir fsync */
	UD_MILTER_RECV, /* struct mfilt (io/milter.c): multishot receive */
	UD_MILTER_SEND, /* struct mfilt: a send */
	UD_MILTER_CONNECT, /* struct mfilt: its connect */
	UD_MILTER_NOP,     /* struct mchain: a filters' answer given in the next round */
	UD_MILTER_READ,    /* struct mchain: the body read back from its segment */
	UD_CLUSTER_POLL,   /* struct cluster_poll (io/cluster): the Redis socket is ready */
	UD_CLUSTER_TIMER,  /* struct cluster: overdue answers, connect deadline, reconnect */
	UD_DNS_POLL,       /* struct dns_poll (io/dns): a c-ares socket is ready */
	UD_DNS_TIMER,      /* struct dns: c-ares's next timeout */
	UD_DNS_WAIT,       /* struct sdns (io/session_dns): a session's DNS deadline */
	UD_VERIFY_RECV,    /* struct vconn (io/verify.c): multishot receive */
	UD_VERIFY_SEND,    /* struct vconn: a send */
	UD_VERIFY_CONNECT, /* struct vconn: its connect */
	UD_VERIFY_WAKE,    /* struct worker: MSG_RING, another worker put a result waited on */
	UD_NOPS
};
#define UD_SHIFT  56
#define UD(p, op) ((uint64_t)(uintptr_t)(p) | ((uint64_t)(op) << UD_SHIFT))
#define UD_OP(u)  ((unsigned)((u) >> UD_SHIFT))
#define UD_PTR(u) ((void *)(uintptr_t)((u) & ((1ull << UD_SHIFT) - 1)))

/* conn flags (the connection's own are RCONN_*, below) */
#define C_DIRTY  0x20u   /* on the worker's dirty list */
#define C_QUEUED 0x40u   /* its message is at the committer (gathering or on the disk) */
#define C_GREETQ 0x100u  /* on the worker's greeting list */
#define C_TLSHS  0x200u  /* TLS handshake running (implicit TLS or after STARTTLS) */
#define C_PAUSED 0x400u  /* input paused (memory): on the worker's pause list */
#define C_DELAYQ 0x800u  /* replies held (SMTP_ACT_DELAY): on the worker's delay list */
#define C_PROXYH 0x1000u /* a --listen-proxy connection waiting for its PROXY header */
#define C_ITLS   0x2000u /* accepted on an implicit-TLS listener */
#define C_ANVIL  0x4000u /* counted as a session of its client (core/anvil) */
#define C_FILTER 0x8000u /* a command or the message is with the filters (io/milter) */
/* The filters rebuilt the message: tx.body holds the Received: header,
 * and the queue id is given (io/milter) */
#define C_MILTERED 0x10000u
#define C_CONNLOG  0x20000u  /* its "connect from" line is out: "disconnect from" follows */
#define C_RATEQ    0x40000u  /* waiting for a rate's verdict from Redis (io/cluster) */
#define C_DNSQ     0x80000u  /* its connect checks' DNS answers are awaited (io/session_dns) */
#define C_VERIFYQ  0x100000u /* a RCPT waits for the next hop's probe (io/verify): on c->vw */

/* Where a server session is. Every change goes through conn_set_state() in
 * io/session.c, traced at --log-level debug, as core/ traces its own. */
enum conn_state {
	CONN_S_NEW = 0, /* accepted: the greeting waits (--greet-delay, implicit TLS) */
	CONN_S_OPEN,    /* greeted (or refused as busy): commands flow */
	CONN_S_BYE,     /* a 421 was given (shutdown, idle timeout): it closes after it */
	CONN_S_CLOSING, /* closing: no more input; freed once nothing is in flight */
};

struct worker;
struct commit_rec;
struct cluster;
struct cluster_req;
struct cluster_conf;
struct log_old;

/* Called once per record when its batch's fdatasync is done (or when it
 * could not be written): <err> 0 means durable at r->segno, r->off. */
typedef void commit_done_fn(struct worker *w, struct commit_rec *r, int err);

/* One record for the spool: header + envelope and the body, as views
 * that must stay valid until <done> is called. The owner embeds it. */
struct commit_rec {
	struct commit_rec *next; /* gathering, or in the batch on the disk */
	struct iovec iov[3];
	unsigned niov;
	int err;   /* the write's result; set before commit_submit(): answer with it */
	int segno; /* where it landed: registry number and offset */
	uint64_t off;
	size_t len; /* its bytes (commit's, while in the batch) */
	commit_done_fn *done;
};

/* A message too large to hold in memory, streamed into a segment of its
 * own while it arrives (io/spill.c). The owner embeds it and keeps it
 * until spill_idle(). */
#define SPILL_WRITES 2 /* content writes of one message on the disk at once */
struct spill;
typedef void spill_fn(struct worker *w, struct spill *sp);
struct spill_buf {
	struct spill *sp;
	struct buf b; /* content on its way to the disk; its memory is kept for the next */
	uint64_t at;  /* file offset it goes to */
	bool busy;    /* its write is in flight */
};
struct spill {
	int fd;            /* the segment; -1: no message is streaming */
	unsigned seq;      /* its sequence number (the worker's, shared with io/commit) */
	uint64_t at;       /* file offset of the next content byte */
	uint64_t content;  /* content bytes written or on their way */
	uint32_t crc;      /* crc32c(0, envelope) carried over Received: and the content */
	int err;           /* first failure: the message is refused at its end */
	unsigned inflight; /* SQEs in flight that name it */
	unsigned fin_left; /* of them, steps of the end still to complete */
	unsigned fin_step; /* steps of the end completed (they complete in order) */
	bool aborted;      /* the transaction is gone: close and unlink once idle */
	bool late;         /* spill_open_body(): the head (envelope, headers) comes at the end */
	uint64_t body_at;  /* with <late>: where the content starts; <crc> covers it alone */
	struct spill_buf wb[SPILL_WRITES];
	struct commit_rec *fin; /* set by spill_finish(): answered at the end */
	struct buf *tail;       /* the owner's last content, until it moves into wb[0] */
	spill_fn *written;      /* a content write completed (owner: go on) */
	size_t keep;            /* memory a write buffer keeps between chunks */
};

/* An append-only log the committer writes besides the segments (done
 * marks, defer notes): what a round appended leaves in one ring write. */
struct commit_log {
	int fd;                    /* -1 until first needed */
	const char *kind;          /* "done" or "defer", for names and logs */
	struct buf gather, flying; /* appended this round / on the disk */
	bool inflight;             /* a write or sync is in flight */
	bool unsynced;             /* written since the last fdatasync (done log only) */
} __attribute__((aligned(8)));

/* The worker's spool writer (io/commit.c); only it writes the spool. */
struct commit {
	int seg_fd;
	unsigned seg_seq;
	uint64_t seg_off;
	int segno;       /* registry number of the current segment */
	bool seg_broken; /* a write failed: next batch goes to a new segment */
	bool dir_sync;   /* a file was created: fsync the directory ahead of the batch */
	struct commit_rec *head, *tail; /* gathering */
	struct commit_rec *flight;      /* the batch on the disk */
	unsigned nflight;
	uint64_t flight_off;          /* where its writev starts (seg_off: where it ends) */
	int64_t last_sync_us;         /* how long the last batch's writev and sync took */
	int flight_err;               /* the directory fsync ahead of it failed with this */
	struct iovec iov[BATCH_IOVS]; /* the batch's writev: its records' views */
	uint32_t qid_ctr;
	struct __kernel_timespec window_ts;
	int64_t batch_since; /* us: when the gathering batch got its first message */
	bool window_armed;   /* a commit-window timeout is pending */
	struct commit_log done, defer;
	/* Reclaiming (queue/segreg's live counts): the segment numbers whose
	 * records' done marks are gathering / being written / written but not
	 * synced / in the sync in flight (unsigned each); released once the
	 * done log's fdatasync holds them. */
	struct buf rel_gather, rel_flying, rel_written, rel_syncing;
	unsigned nunlink; /* finished segments being unlinked */
	unsigned nspill;  /* operations of streamed messages in flight (io/spill.c) */
	bool dir_dirty;   /* unlinked since the last directory fsync */
	bool dir_syncing; /* that fsync is in flight */
	/* Registry numbers (unsigned each) of the segments whose unlink
	 * completed: waiting for a directory fsync / covered by the one in
	 * flight; gone (segreg_set_gone()) once it is done. */
	struct buf gone_wait, gone_syncing;
	/* The done log's rotation (docs/spool.md, "The life of a done log"):
	 * the current log's number and bytes written; the registry numbers its
	 * marks name (unsigned each); <done_keep>: a mark in it names no
	 * registered segment, so it stays until a restart; <done_keep_gather>:
	 * the same for a gathered mark. The logs rotated out, oldest first,
	 * each deleted once every segment it names is gone. */
	unsigned done_seq;
	uint64_t done_size;
	struct buf done_segs;
	bool done_keep, done_keep_gather;
	bool done_sync_err; /* the last fdatasync of the done log failed: retried at the tick */
	struct log_old *done_old;
	/* The defer log's rotation: the same sizes; an old one is deleted once
	 * older than --max-queue-lifetime plus --retry-max. */
	unsigned defer_seq;
	uint64_t defer_size;
	struct log_old *defer_old;
	unsigned nlog_unlink; /* old done and defer logs being unlinked */
	uint64_t stat_unlinked;
	uint64_t stat_done_rotated, stat_done_unlinked;
	uint64_t stat_msgs;    /* records made durable */
	uint64_t stat_spilled; /* of them, messages streamed into a segment of their own */
	uint64_t stat_commits; /* group commits (fdatasyncs) */
	uint64_t stat_max_batch;
	int64_t flight_since; /* us: when the batch on the disk was submitted */
} __attribute__((aligned(8)));

/* A ring (io/ring.c): the io_uring and the provided receive buffers its
 * connections' receives take from (an idle connection holds none). A
 * worker embeds one; so does each sending thread of ringmx-bench, which
 * runs its client sessions over io/conn too. */
struct ring {
	struct io_uring uring;
	struct io_uring_buf_ring *br; /* <nbufs> entries, buffer group RX_BGID */
	char *rx;                     /* <nbufs> buffers of RX_BUF_SIZE bytes */
	unsigned nbufs;               /* a power of two: RX_BUF_COUNT for a worker */
};

/* A timer on a ring for the earliest time its owner needs (io/ring's
 * ring_timer_at()). */
struct ring_timer {
	struct __kernel_timespec ts; /* copied by the kernel at submission */
	int64_t armed_at;            /* ms the one armed last fires at; 0: none known */
};

/* A connection on the worker's ring (io/conn.c): what the server session
 * and the relay's connections to next hops share. The owner embeds it
 * FIRST, so that user_data naming the owner names it too. */
#define RCONN_RECV     0x1u   /* multishot receive armed */
#define RCONN_SEND     0x2u   /* a send (or the relay's connect) is in flight */
#define RCONN_CLOSING  0x4u   /* closing: no more input; freed once nothing is in flight */
#define RCONN_TLS_UP   0x8u   /* TLS established and the owner was told */
#define RCONN_CLEARONE 0x10u  /* the next send leaves in clear (the STARTTLS 220) */
#define RCONN_HANGUP   0x20u  /* TLS failed or closed: flush the alert, then close */
#define RCONN_PAUSED   0x40u  /* input paused by the owner: the receive is not re-armed */
#define RCONN_CANCEL   0x80u  /* the receive is being cancelled (a pause, a change of mode) */
#define RCONN_ONESHOT  0x100u /* receive one buffer at a time: the owner meters its input */
#define RCONN_MULTI    0x200u /* the receive armed is a multishot one */

struct conn_xprt;
struct tls_conn;
struct msghdr;

struct ring_conn {
	int fd;
	unsigned flags;           /* RCONN_* */
	unsigned inflight;        /* SQEs (and records at the committer) that name the owner */
	uint8_t op_recv, op_send; /* the owner's enum ud_op for its receive and send */
	struct buf sending;       /* bytes handed to the kernel */
	struct msghdr *mh;        /* or the owner's iovecs in flight (conn_send_iov()) */
	struct tls_conn *tls;     /* set with xprt = &conn_xprt_tls */
	const struct conn_xprt *xprt;
};

/* The worker's log lines (core/log's sink), written by the ring: one
 * write per round (io/ring.c). */
struct ring_log {
	struct log_sink gather; /* this round's lines: the thread's sink */
	struct log_sink flying; /* on the ring */
	size_t off;             /* bytes of <flying> written */
	bool inflight;
} __attribute__((aligned(8)));

struct listener {
	int fd;
	struct worker *w;
	const struct conf_listen *cl;
	int armed;
} __attribute__((aligned(8)));

/* An SMTP server session: the ring connection (first: user_data names
 * both), the sans-I/O session, and its place on the worker's lists. */
struct conn {
	struct ring_conn rc;
	struct smtp_session s;
	struct worker *w;
	enum conn_state state;
	unsigned flags;           /* C_* */
	int64_t last_active;      /* worker clock, ms */
	int64_t greet_at;         /* ms; when the greeting is due */
	struct conn *prev, *next; /* the worker's list of live conns, oldest activity first */
	struct conn *greet_next;  /* waiting for the greeting */
	int64_t delay_at;         /* ms; when held replies may go (C_DELAYQ) */
	int64_t proxy_deadline;   /* ms; the PROXY header must be in by then (C_PROXYH) */
	struct conn *delay_next;  /* on the delay list */
	struct conn *dirty_next;  /* has output to flush this round */
	struct conn *free_next;   /* the worker's pool of free conns */
	struct buf pending;       /* input not fed yet (a message is spooling) */
	struct buf rec;           /* record header + envelope */
	struct buf rcvd;          /* Received: header */
	struct commit_rec cr;     /* the message's record, while it is committed */
	struct spill sp;          /* the message, when it streams to the disk as it comes */
	size_t held;              /* content bytes counted in the worker's data_held */
	uint32_t sp_serial;       /* tx.serial of the transaction <sp> streams */
	uint64_t msg_size;        /* the message's size (Received: and content), for the log */
	struct conn *pause_prev, *pause_next; /* on the worker's list of paused receivers */
	struct mchain *mch;                   /* its filters (io/milter); NULL: none yet */
	const char *quarantine;     /* the filters quarantined the message: why (io/milter) */
	int64_t hs_deadline;        /* ms: the TLS handshake must be done by then */
	struct tables *tls_snap;    /* holds the TLS context of <rc.tls> until the close */
	struct cluster_req *cl_req; /* the Redis request it waits on (C_RATEQ); NULL: none */
	struct conn *cl_next;       /* on the worker's list of verdicts given (io/cluster) */
	struct verify_waiter vw;    /* with C_VERIFYQ: on its address's entry (io/verify) */
	int8_t cl_verdict;          /* 1 fits, -1 over, 0 the local table decides */
	uint8_t cl_kind;            /* enum cluster_rate_kind of that verdict */
	struct sdns_conn *dq;       /* its DNS checks (io/session_dns); NULL: none yet */
	char qid[SMTP_QID_MAX + 1];
	uint16_t port;
	uint8_t lidx; /* its listener's index in conf->listen (metrics) */
} __attribute__((aligned(8)));

struct conn_list {
	struct conn *head, *tail;
};

/* TLS protocol versions counted apart (io/metrics.c names them). */
enum wstat_tls {
	WSTAT_TLS_1_0 = 0,
	WSTAT_TLS_1_1,
	WSTAT_TLS_1_2,
	WSTAT_TLS_1_3,
	WSTAT_TLS_OTHER, /* none negotiated yet (a failed handshake), or another */
	WSTAT_TLS_N,
};

/* Delivery results per next hop and recipient. */
enum wstat_dlv {
	WSTAT_DLV_SENT = 0, /* 2xx */
	WSTAT_DLV_DEFERRED, /* 4xx, timeout or connection failure: retried */
	WSTAT_DLV_BOUNCED,  /* 5xx: a bounce goes to the sender */
	WSTAT_DLV_N,
};

/* A worker's metrics (io/metrics.c reads them on another thread): written
 * only by the worker's own thread through core/stats (a relaxed load and
 * store: a plain add, no lock, no syscall), read with relaxed loads. The
 * worker is allocated 64-byte aligned and this starts and ends on a cache
 * line, so two workers never write the same line. */
struct worker_stats {
	struct smtp_stats smtp;              /* commands, refusals, messages accepted */
	uint64_t opened[CONF_MAX_LISTEN];    /* sessions accepted, per --listen* in order */
	uint64_t closed[CONF_MAX_LISTEN][2]; /* sessions ended; [1]: TLS was up */
	uint64_t rx_bytes;                   /* read from SMTP client sockets */
	uint64_t tls_ok[WSTAT_TLS_N];        /* server handshakes completed */
	uint64_t tls_fail[WSTAT_TLS_N];      /* failed or timed out */
	struct stats_hist batch;             /* messages per group commit */
	struct stats_hist sync;              /* us from a batch's writes to its fdatasync */
	struct stats_hist delivery;          /* ms from arrival to a recipient delivered */
	uint64_t mesh_full;                  /* descriptors a full mesh ring refused */
	uint64_t queue_msgs;                 /* gauge: messages held for delivery (tick) */
	uint64_t queue_oldest;               /* gauge: arrival (epoch s) of the oldest deferred */
	uint64_t *dlv; /* [hop slot][WSTAT_DLV_N] (g->hopnames); NULL without --relay-to */
} __attribute__((aligned(64)));

struct relay;
struct mfilt;
struct sdns;
struct sdns_conn;

struct worker {
	struct gateway *g;
	struct relay *relay; /* delivery to the next hops; NULL without --relay-to */
	unsigned id;
	pthread_t thread;
	struct ring ring; /* its io_uring and provided receive buffers */
	struct listener *lst;
	unsigned nlst;
	int wakefd;
	uint64_t wakeval;
	struct __kernel_timespec tick_ts;
	struct ring_timer delay_timer; /* the delay lists' timer (io/ring.h) */
	int64_t now;                   /* ms, CLOCK_MONOTONIC, refreshed per round */
	struct ring_log log;

	struct conn_list live; /* every open conn, least recently active first */
	struct conn *greet_head, *greet_tail;
	/* Sessions whose replies are held (io/session's tarpit): one FIFO per
	 * delay length (an unknown recipient's, an error's), so each is in
	 * order of due time, as the greeting list. */
	struct delay_queue {
		unsigned ms; /* the delay of its sessions; any while empty */
		struct conn *head, *tail;
	} delayq[2];
	struct conn *dirty;
	struct conn *free_conns;
	unsigned nconns;

	struct commit cm; /* the spool writer */
	/* Message content in memory (io/session.c): what the sessions hold
	 * that is not on the disk yet, against this worker's share of
	 * --data-memory; over it, sessions receiving content pause. */
	uint64_t data_held, data_cap;
	struct conn_list paused;
	uint64_t stat_paused;    /* times a session's input was paused */
	uint64_t stat_held_peak; /* most content bytes held at once */
	bool storage_low;        /* free space under --spool-min-free, or ENOSPC seen */

	/* queue: descriptors of spooled messages go to the worker that owns
	 * their route; see io/route.h */
	struct mq_item *outbox; /* [nworkers][OUTBOX_MAX], gathered per round */
	unsigned *outn;         /* [nworkers] */
	unsigned outbox_used;   /* descriptors added since the last flush: 0, nothing to do */
	struct buf overflow;    /* struct route_item: a ring was full; retried each tick */
	struct buf held;        /* struct mq_item owned by this worker, awaiting delivery */
	unsigned flush_gen;     /* last g->flush_gen acted on */
	unsigned ctl_gen;       /* last g->ctl_gen acted on */
	struct buf ctl; /* operator requests for this worker (io/control), under g->ctl_mu */
	uint64_t stat_routed, stat_wakes, stat_received;
	/* Recipient tables and domains (core/tables): the worker holds one
	 * reference to <tables>, each session one to the snapshot it uses. A
	 * reload puts the next one, referenced, in <tables_next> and wakes
	 * the worker, which takes it from there. */
	struct tables *tables;
	_Atomic(struct tables *) tables_next;
	/* The next hops its relay is to deliver with (io/relay_conf; a
	 * reference; NULL: the gateway's startup ones), handed over the same
	 * way by a reload or a lookup that found new addresses. */
	struct relay_conf *relay_want;
	_Atomic(struct relay_conf *) relay_next;
	struct smtp_counts rejected; /* RCPT refusals of the sessions ended */
	unsigned anvil_next;         /* the next shard of g->anvil this worker sweeps */
	uint64_t stat_limited;       /* connections refused by a per-client limit */
	struct mfilt *mfilts;        /* connections to filters (io/milter), for their timeouts */
	struct cluster *cluster;     /* its link to --limits-redis (io/cluster); NULL: none */
	struct sdns *sdns;           /* its resolver and DNS verdicts (io/session_dns) */
	struct verify *verify;       /* its probes of next hops (io/verify); NULL: none */

	/* Heartbeat: w->now at the worker's last tick (once a second), read by
	 * the main thread before it feeds systemd's watchdog (io/service). */
	_Atomic int64_t beat;
	struct worker_stats st; /* its metrics: this thread writes, the metrics thread reads */

	bool stopping;
	int64_t grace_end;
	bool rearm_accept;
	int ready; /* startup result, read by the main thread */
	pthread_mutex_t ready_mu;
	pthread_cond_t ready_cv;
};

/* A descriptor waiting for ring space, and the worker it goes to. */
struct route_item {
	unsigned to;
	struct mq_item it;
};

struct tls_ctx;
struct metrics;
struct spool_holds;

/* A --milter, resolved at start (io/milter.c). */
struct milter_target {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char text[128]; /* as given, for logs */
};

struct gateway {
	const struct conf *conf; /* the startup options; a reload's live ones are in <tables> */
	int argc;                /* the command line, parsed again at a reload (io/reload) */
	char **argv;
	struct tls_ctx *tls;             /* NULL: no certificate, no STARTTLS, no --listen-tls */
	struct relay_conf relay;         /* next hops at start; relay.nroutes == 0: no delivery
	                                  * (a reload's are in <tables>) */
	struct relay_hop_names hopnames; /* the per-hop counters' slots (io/relay_conf) */
	/* The next hops' names (main thread): the resolver, the next hops
	 * last handed to the workers (a reference; NULL: <relay>), and when
	 * their names are looked up again (CLOCK_MONOTONIC ms; 0: never). */
	struct relay_dns *dns;
	struct relay_conf *relay_cur;
	int64_t relay_due_ms;
	atomic_uint stop;          /* set before the workers are woken to stop */
	atomic_uint flush_gen;     /* bumped by SIGUSR1: retry deferred messages now */
	atomic_uint ctl_gen;       /* bumped by SIGUSR2: requests in the workers' <ctl> */
	pthread_mutex_t ctl_mu;    /* guards each worker's <ctl>, and <holds> */
	struct spool_holds *holds; /* the hold logs as last read: held messages are not
	                            * dispatched (main thread replaces it) */
	atomic_size_t nheld;       /* messages in <holds>: 0, nothing to look up */
	struct smtp_server_conf scf;
	struct tables *tables; /* the current snapshot (main thread); workers hold their own */
	unsigned nproxy;       /* --listen-proxy / --listen-tls-proxy listeners */
	struct anvil *anvil;   /* per-client limits; NULL: none configured */
	struct milter_target milters[CONF_MAX_MILTERS]; /* --milter, in order */
	unsigned nmilters;
	struct cluster_conf *cluster; /* --limits-redis: the rates kept there; NULL: none */
	/* --verify-recipients: the verdicts of the next hops, shared by the
	 * workers, and the thread that keeps them on disk (io/verify_store);
	 * NULL: verification was off at start (a reload cannot turn it on). */
	struct verify_cache *vcache;
	struct verify_store *vstore;
	atomic_bool overload; /* sessions over --overload-threshold (io/session) */
	unsigned nworkers;
	struct worker **workers;
	uint64_t start_id; /* unique per start: names this run's segments */
	int spool_dirfd;
	int *lfds; /* listening sockets, [worker * nlisten + listener], bound before any drop */
	bool activated;        /* the listening sockets came from systemd (socket activation) */
	atomic_uint nsessions; /* open sessions, all workers */
	struct mq mq;          /* descriptors between workers: a mesh of SPSC rings */
	struct seg_registry segs;
	struct buf recov;        /* struct mq_item of recovered messages, until workers start */
	unsigned recov_last_seg; /* registry number of the segment recovery is in */
	struct spool_seg_id recov_seg;
	_Atomic int ring_fds[256]; /* each worker's ring fd, for IORING_OP_MSG_RING; -1 until up */
	struct metrics *metrics;   /* --metrics-listen's server (io/metrics.c); NULL: none */
	int metrics_fd;            /* its socket, bound before privileges are dropped; -1 */
};

#endif
