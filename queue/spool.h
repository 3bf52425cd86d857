/* spool: the on-disk format of accepted messages, reading it back, the
 * done log and recovery at start-up.
 *
 * Each worker appends records to its own segment file in the spool
 * directory ("seg-<start>-<worker>-<seq>.rmx"); io/ writes them through its
 * ring and issues fdatasync before any 250. A record is:
 *
 *   struct spool_rec_hdr (little-endian, 32 bytes)
 *   envelope: <env_len> bytes of "key value\n" lines
 *   body:     <body_len> bytes (Received: header + content, CRLF lines)
 *
 * crc32c covers the header (with the crc field taken as 0), the envelope and
 * the body, so a torn or partial record is recognised and never read as a
 * message. Readers stop at the first bad record of a segment (a torn tail).
 *
 * A message leaves the queue by a done record (64 bytes, fixed size) in a
 * done log ("done-<start>-<worker>-<seq>.rmx" while the gateway runs; older
 * ones "done-<start>-<worker>.rmx"); readers hide done messages, and
 * spool_recover() deletes segments whose records are all done.
 *
 * The committer (io/commit) also appends one text line per deferral to the
 * worker's defer log ("defer-<start>-<worker>-<seq>.log"): "<qid>\t<next
 * attempt>\t<attempts>\t<last reply>\n", not synced; `ringmx queue` shows
 * the last one of each pending message. Formats and rules: docs/spool.md.
 * queue/ may include core/ only.
 *
 * Held messages (`ringmx queue hold`) are named in hold logs
 * ("hold-<start>.rmx", one per run of the tool): the relay never
 * dispatches them until released.
 *
 * The code: queue/spool.c (record format, names, done codec),
 * queue/spool_read.c (reader window, walker, done and defer sets),
 * queue/spool_recover.c (spool_recover()), queue/spool_hold.c (hold logs),
 * queue/spool_admin.c (selections, spool_list(), spool_mark(),
 * spool_delete(), the picks' actions), queue/spool_report.c (--json, show,
 * shape); queue/spool-int.h is what they share. */
#ifndef RINGMX_QUEUE_SPOOL_H
#define RINGMX_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>
#include <time.h>

#include "core/buf.h"
/* crc32c()'s prototypes were here before it had a header; users of this
 * header (tests) still find them through it. */
#include "queue/crc32c.h"

#define SPOOL_MAGIC    0x52584d52u /* "RMXR" little-endian */
#define SPOOL_VERSION  1u
#define SPOOL_HDR_LEN  32u          /* sizeof(struct spool_rec_hdr) on disk */
#define SPOOL_ENV_MAX  (1u << 20)   /* envelope bytes per record, at most */
#define SPOOL_BODY_MAX (1ull << 30) /* body bytes per record, at most */
#define SPOOL_QID_MAX  31u          /* queue id length, at most (spool_msg.qid holds it) */

#define SPOOL_DONE_MAGIC   0x44584d52u /* "RMXD" little-endian */
#define SPOOL_DONE_VERSION 1u
#define SPOOL_DONE_LEN     64u /* one done record on disk */

/* What became of a message; 0 (SPOOL_PENDING) means nothing yet. */
enum spool_state {
	SPOOL_PENDING = 0,
	SPOOL_DELIVERED = 1, /* accepted by the next hop */
	SPOOL_BOUNCED = 2,   /* failed for good; a DSN went out (or none was due) */
	SPOOL_DELETED = 3,   /* removed by an operator */
	/* Copied verbatim into a newer segment (a long-deferred survivor moved
	 * forward so that its old segment can go, docs/spool.md); the copy,
	 * same queue id and crc, is the pending one. Readers that find both
	 * pending (a crash between the copy and this mark) take the first and
	 * count the later as this state. */
	SPOOL_MOVED = 4,
};

/* spool_list() flags. */
#define SPOOL_LIST_COUNT 0x1u /* print only the number of messages */
#define SPOOL_LIST_ALL   0x2u /* done messages too (their state as the sixth field) */

/* A segment named by spool_seg_name(): the gateway start that wrote it, the
 * worker and the segment's number within that worker and start. */
struct spool_seg_id {
	uint64_t start;
	uint32_t worker; /* < 65536 (16 bits in a done record) */
	uint32_t seq;
};

struct spool_rec_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t env_len;
	uint32_t crc; /* crc32c of header (crc = 0), envelope, body */
	uint64_t body_len;
	uint64_t reserved; /* 0 */
};

/* The envelope of one message, as io/ hands it to spool_rec_build(). */
struct spool_env {
	const char *qid;
	time_t arrival;     /* seconds since the epoch */
	const char *client; /* peer address */
	const char *helo;
	const char *from;  /* "" = null sender */
	const char *rcpts; /* <nrcpt> NUL-terminated strings back to back */
	unsigned nrcpt;
	bool body_8bit;
	bool smtputf8;
	/* Held by a content filter (quarantine), with its reason: spooled
	 * held from the start, as a `ringmx queue hold` holds (listed "held
	 * reason=..."), until `ringmx queue release` (a hold log's record
	 * overrides it) or a delete. NULL: not held. */
	const char *quarantine;
	/* > 0: the envelope ends with a line "pad ....\n" of exactly <pad>
	 * octets (at least 5), which readers skip: a writer that placed the
	 * body before it knew the header block's length (io/milter_stream.c)
	 * fills the gap with it. */
	size_t pad;
};

/* A record read back: views into the reader's memory, valid during the
 * visit callback only (from spool_walk() and spool_recover()), or as long
 * as the record and the scratch buffer stay untouched (from
 * spool_rec_parse()). */
struct spool_msg {
	char qid[32];
	time_t arrival;
	const char *client, *helo, *from; /* NUL-terminated */
	const char *quarantine;           /* the reason it is held; "" = not held */
	const char *rcpts;                /* nrcpt strings back to back */
	unsigned nrcpt;
	uint64_t body_len;
	const char *body;        /* NULL unless the visitor asked for bodies; not
	                          * NUL-terminated from spool_rec_parse() */
	const char *segment;     /* file name of the segment (NULL from spool_rec_parse()) */
	uint64_t offset;         /* of the record in the segment */
	bool body_8bit;          /* envelope said BODY=8BITMIME */
	bool smtputf8;           /* envelope said SMTPUTF8 */
	struct spool_seg_id seg; /* the segment, by number */
	uint64_t rec_len;        /* the record is [offset, offset + rec_len) */
	enum spool_state state;  /* SPOOL_PENDING unless a done record names it */
};

/* One done record: the message is named by queue id, segment and offset,
 * so that a queue id seen twice (another start) can never hide the wrong
 * message. */
struct spool_done {
	char qid[32]; /* NUL-terminated, at most SPOOL_QID_MAX characters */
	struct spool_seg_id seg;
	uint64_t offset;
	enum spool_state result; /* SPOOL_DELIVERED, SPOOL_BOUNCED, SPOOL_DELETED or SPOOL_MOVED */
};

/* What spool_recover() found and did. */
struct spool_recovery {
	unsigned long segments;      /* segment files scanned */
	unsigned long records;       /* valid records (after cutting) */
	unsigned long done;          /* of them, named by a done record */
	unsigned long pending;       /* of them, not done: handed to the visitor */
	unsigned long unreadable;    /* sound frame, unreadable envelope: kept, never delivered */
	unsigned long torn;          /* segments whose tail was cut */
	uint64_t bytes_cut;          /* bytes cut from those tails */
	unsigned long damaged;       /* of the torn, tails with a valid record after the bad one:
	                              * copied to "<segment>.damaged[.N]" before the cut */
	unsigned long deleted;       /* segments removed: every record done (or none left) */
	unsigned long done_logs;     /* done logs read */
	unsigned long done_kept;     /* done records still needed (written to the compacted log) */
	unsigned long done_dropped;  /* done records dropped: their record is gone, duplicates */
	bool compacted;              /* the done logs were replaced by one */
	unsigned long defer_logs;    /* defer logs found */
	unsigned long defer_deleted; /* of them, deleted: no pending message needed one */
	unsigned long held;          /* pending messages on hold (hold logs compacted to them) */
};

/* Builds the record header and envelope into <out> (appended) for a body
 * given as <nbody> iovecs; computes the crc over all of it. The caller
 * writes <out> followed by the body iovecs, in one writev. Returns 0 or
 * -ENOMEM / -EINVAL. Any thread. */
int spool_rec_build(struct buf *out, const struct spool_env *e, const struct iovec *body,
                    unsigned nbody);

/* The same record in two steps, for a writer that streams the body to the
 * disk before it knows its length (io/spill.c): spool_rec_open() appends
 * a header of zeros and the envelope to <out> (the envelope is
 * out->len - SPOOL_HDR_LEN bytes after the header when <out> came empty).
 * Returns 0 or -ENOMEM / -EINVAL (<out> as it came). The writer computes
 * <crc_rest> = crc32c(0, envelope) carried on over every body byte, then
 * spool_rec_seal() fills the SPOOL_HDR_LEN header bytes at <rec> (body
 * length, crc over all of it, by crc32c_combine()), making it the header
 * spool_rec_build() would have written. Returns 0 or -EINVAL (a limit).
 * Any thread. */
int spool_rec_open(struct buf *out, const struct spool_env *e);
int spool_rec_seal(void *rec, size_t env_len, uint64_t body_len, uint32_t crc_rest);

/* Checks the SPOOL_HDR_LEN bytes of a record header at <hdr> (any
 * alignment): magic, version, envelope and body limits; the crc needs the
 * whole record (spool_rec_parse()). Sets *<total> to the length of the
 * whole record (header, envelope and body), so that a reader that read
 * the header at a known offset knows how much more to read. Returns 0 or
 * -EINVAL. Any thread. */
int spool_rec_len(const void *hdr, uint64_t *total);

/* The one record check, in two steps so that a reader can carry it over a
 * record it sees in pieces (the walker streams bodies through a window; a
 * reader on a ring gets chunks): spool_rec_crc_start() returns the crc32c
 * of the SPOOL_HDR_LEN header bytes at <hdr> (any alignment, left as they
 * are) with the crc field taken as 0. The reader carries it on with
 * crc32c(crc, p, n) over every byte after the header, the envelope then the
 * body, in order and once each; spool_rec_verify() then returns 0 when the
 * result <crc> equals the header's crc field, else -EINVAL. Checks no
 * limit: spool_rec_len() first, which also says how many bytes follow.
 * spool_rec_parse() does all of it for a record held whole. Any thread. */
uint32_t spool_rec_crc_start(const void *hdr);
int spool_rec_verify(const void *hdr, uint32_t crc);

/* Reads all <n> bytes at <off> of <fd>, retrying short reads and EINTR.
 * Returns 0, -ENODATA (end of file first) or -errno. Blocking: for
 * recovery at start-up, the `ringmx queue` tool and tests, never a worker
 * (the relay reads records back through its ring). */
int spool_pread(int fd, void *p, size_t n, uint64_t off);

/* Parses the one complete record at <rec> (<len> bytes from its header
 * on; bytes after the record are ignored: m->rec_len says where it ends).
 * Checks it exactly as the walker does (header, then crc32c over header,
 * envelope and body), then parses the envelope with the walker's parser.
 * Fills *<m>: qid, arrival, client, helo, from, rcpts, nrcpt, body_8bit,
 * smtputf8, body (a view into <rec>, not NUL-terminated), body_len,
 * rec_len, state (SPOOL_PENDING); segment is NULL, seg and offset are 0
 * (the caller knows them). <rec> is const, so the envelope is copied into
 * <scratch> (caller-owned, reused from call to call: it grows to twice
 * the largest envelope, 2 MiB at most) and m's strings point into it; the
 * views stay valid until <rec> or <scratch> changes.
 * Returns 0; -EAGAIN when <len> is shorter than the record (fewer than
 * SPOOL_HDR_LEN bytes, or fewer than the header announces: read
 * spool_rec_len() bytes and call again); -EINVAL for a bad record (header,
 * crc: what a walker takes for a torn tail; or a sound frame whose envelope
 * does not parse: what it counts as unreadable); -ENOMEM. *<m> is
 * undefined after an error. Never reads past <rec> + <len>. Any thread. */
int spool_rec_parse(const void *rec, size_t len, struct spool_msg *m, struct buf *scratch);

/* Checks the SPOOL_HDR_LEN header bytes at <hdr> (any alignment) as
 * spool_rec_len() does and sets *<body_at> to where the body starts in the
 * record: the header and envelope are its first *<body_at> bytes, which is
 * what spool_rec_parse_env() needs. Returns 0 or -EINVAL (*<body_at>
 * untouched). Any thread. */
int spool_rec_env_end(const void *hdr, uint64_t *body_at);

/* Parses the header and envelope of a record whose body is not in memory:
 * <rec> holds <len> bytes from the header on, at least the first
 * spool_rec_env_end() bytes; whatever follows them is ignored (the body
 * need not be there). For a reader that streams the body in chunks
 * (io/relay.c) instead of holding the record whole. Checks the header as
 * spool_rec_len() does, but the crc, which covers the body, cannot be
 * checked yet: *<crc> is set to the crc32c of the header (crc field as 0)
 * and the envelope, which the caller carries on with crc32c(crc, p, n) over
 * every body byte in order and checks with spool_rec_verify() before it
 * takes the record for sound (until then the envelope may be damaged too).
 * Fills *<m> as spool_rec_parse() does, with the strings in <scratch>
 * (same rules), except that body is NULL: the body is the body_len bytes
 * at offset rec_len - body_len of the record. Returns 0; -EAGAIN when
 * <len> is shorter than the header or the header and envelope (read
 * spool_rec_env_end() bytes and call again); -EINVAL for a bad header or
 * an envelope that does not parse; -ENOMEM. *<m> and *<crc> are undefined
 * after an error. Never reads past <rec> + <len>. Any thread. */
int spool_rec_parse_env(const void *rec, size_t len, struct spool_msg *m, struct buf *scratch,
                        uint32_t *crc);

/* Segment file name for <start_id> (unique per gateway start), <worker> and
 * <seq>, written into <name> (at least 64 bytes). */
void spool_seg_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq);

/* Parses a segment file name as spool_seg_name() writes it (exactly: any
 * other spelling is not a segment). Returns 0 or -EINVAL. */
int spool_seg_parse(const char *name, struct spool_seg_id *id);

/* Done log file name for <start_id> and <worker>, written into <name> (at
 * least 64 bytes): "done-<start>-<worker>.rmx". A tool that writes done
 * records uses its own start id (a CLOCK_REALTIME nanosecond stamp) so that
 * it never shares a file with a gateway. */
void spool_done_name(char *name, size_t len, uint64_t start_id, unsigned worker);

/* The done log of a running gateway's worker: "done-<start>-<worker>-<seq>.rmx"
 * into <name> (at least 64 bytes), <seq> (6 digits at least) counting the
 * worker's done logs of that start: the committer begins a new one past
 * --done-log-size (docs/spool.md, "The life of a done log"). */
void spool_done_log_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq);

/* What a done log's name says. */
struct spool_done_id {
	uint64_t start;
	uint32_t worker; /* 0 for a recovered log */
	uint32_t seq;    /* with <rotated> only */
	bool rotated;    /* "done-<start>-<worker>-<seq>.rmx" (spool_done_log_name()) */
	bool recovered;  /* "done-<start>-recovered.rmx" (recovery's compacted log) */
};

/* Parses a done log's name, spelled exactly as spool_done_name(),
 * spool_done_log_name() or recovery write it (any other spelling is not a
 * done log: readers and recovery leave it alone). Returns 0 or -EINVAL. */
int spool_done_parse(const char *name, struct spool_done_id *id);

/* Defer log file name for <start_id> and <worker>, written into <name> (at
 * least 64 bytes): "defer-<start>-<worker>.log". */
void spool_defer_name(char *name, size_t len, uint64_t start_id, unsigned worker);

/* The defer log of a running gateway's worker, "defer-<start>-<worker>-<seq>.log"
 * into <name> (at least 64 bytes): like the done log, it is rotated past
 * --done-log-size; an old one is deleted once older than
 * --max-queue-lifetime plus --retry-max (docs/spool.md, "Defer logs").
 * Readers take both spellings, in name order. */
void spool_defer_log_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq);

/* Encodes <d> into the SPOOL_DONE_LEN bytes at <buf> (any alignment), for
 * io/ to write through its ring. Returns 0 or -EINVAL (empty or long qid,
 * bad result, worker >= 65536). Any thread. */
int spool_done_encode(void *buf, const struct spool_done *d);

/* Decodes the SPOOL_DONE_LEN bytes at <buf>. Returns 0, or -EINVAL when
 * they are not a done record (magic, version, crc, content). */
int spool_done_decode(const void *buf, struct spool_done *d);

/* Appends <d> to the done log open at <fd> (O_WRONLY | O_APPEND) and
 * fdatasyncs it: the message is done once this returns 0. Returns 0 or
 * -errno (-EIO for a short write; readers skip the torn piece). Blocking:
 * for the `ringmx queue` tool and tests, never a worker (a worker's done
 * marks go through io/commit). */
int spool_done_append_fd(int fd, const struct spool_done *d);

typedef int (*spool_visit_fn)(void *arg, const struct spool_msg *m);

/* Reads every valid record of every segment in <dir> (segments in name
 * order, records in file order) and calls <fn> for each that no done
 * record names; a non-zero return from <fn> stops the walk and is
 * returned. <with_body>: also read bodies. Returns 0, the visitor's value
 * or -errno. Safe while the gateway runs (appends in progress look like
 * torn tails and are skipped). */
int spool_walk(const char *dir, bool with_body, spool_visit_fn fn, void *arg);

/* Recovery at start-up: makes <dir> consistent and hands every pending
 * message to <fn> (may be NULL; no bodies: m->offset and m->rec_len say
 * where the record lies). Per segment, in name order: the tail after the
 * last valid record is cut (ftruncate + fsync; a tail holding a valid
 * record after the bad one is first copied to "<segment>.damaged"); a
 * segment with no pending and no unreadable record is unlinked. Then the
 * done logs are compacted into "done-<start_id>-recovered.rmx" when any of
 * their records is no longer needed, and each defer log none of whose
 * winning lines names a pending message is unlinked (not synced: they only
 * inform; one that cannot be read is left alone). Fills <out> (may be
 * NULL). A non-zero return from <fn> stops the recovery and is returned; a
 * later call picks up from scratch. Returns 0, the visitor's value or
 * -errno.
 *
 * Precondition: nothing writes to <dir> meanwhile: no worker of this
 * gateway has started and no other gateway uses <dir> (every segment and
 * done log belongs to a previous run). Main thread, at start-up. */
int spool_recover(const char *dir, uint64_t start_id, spool_visit_fn fn, void *arg,
                  struct spool_recovery *out);

/* `ringmx queue`: prints one line per pending message to <out>, fields
 * separated by one space:
 *
 *   <qid> <size> <from> <age> <rcpts> active
 *   <qid> <size> <from> <age> <rcpts> deferred next=<in> attempts=<n> last="<reply>"
 *
 * <from> is "<>" for the null sender, <rcpts> the recipients joined by ","
 * ("-" for none), <age> the time since arrival (42s, 5m, 3h, 2d). The
 * sixth field is the state: "deferred" when a defer log names the message
 * (its last line wins), else "active". <in> is the time to the next attempt
 * written as ages are, or "now" once it is due; <reply> is the last reply
 * with '"' and '\' escaped by a backslash and control bytes as \xHH, so
 * "last=" is always the last field. SPOOL_LIST_ALL: done messages too,
 * their sixth and last field "delivered", "bounced" or "deleted".
 * SPOOL_LIST_COUNT: only the number of messages (defer logs are not read).
 * <now> gives the ages. Returns 0 or -errno (a defer log that cannot be
 * read is logged and skipped). Safe while the gateway runs. */
int spool_list(const char *dir, unsigned flags, FILE *out, time_t now);

struct spool_select;

/* spool_list() of the messages <sel> selects (NULL: all): with a state
 * selector, only pending messages (SPOOL_LIST_ALL adds none). */
int spool_list_sel(const char *dir, const struct spool_select *sel, unsigned flags, FILE *out,
                   time_t now);

/* Appends done record <d> to the done log of a tool, "done-<start_id>-00.rmx"
 * in <dir> (created if need be), fdatasyncs it and fsyncs <dir>: the
 * message <d> names is done once this returns 0. <start_id> is the tool's
 * own (a CLOCK_REALTIME nanosecond stamp), never a gateway's. <d> is
 * written as given: nothing checks that it names a message. Not while
 * spool_recover() runs on <dir> (its compaction could drop the record).
 * Returns 0 or -errno (-EINVAL: <d> does not encode). Any thread. */
int spool_mark(const char *dir, const struct spool_done *d, uint64_t start_id);

/* `ringmx queue --delete <qid>`: walks <dir> for the pending messages with
 * queue id <qid> and marks each SPOOL_DELETED with spool_mark()'s log and
 * durability, so that readers no longer list it and spool_recover() deletes
 * its segment once every message in it is done. Every pending message with
 * that id is deleted (an id can repeat across gateway starts; they look
 * alike in `ringmx queue`); nothing is written unless the walk succeeds.
 * Safe while the gateway runs (as spool_walk() is), but a running gateway
 * is not told: one that holds the message in memory sees the done record
 * only when it next reads the done logs (spool_recover(), at start-up).
 * Returns 0, -ENOENT (no pending message has that id; a second
 * delete of one id gets it too), -EINVAL (<qid> NULL) or -errno. */
int spool_delete(const char *dir, const char *qid, uint64_t start_id);

/* Hold logs (queue/spool_hold.c): which messages an operator put on hold.
 * A held message is never delivered or expired until released: the
 * gateway's relay does not dispatch it (docs/spool.md, "Hold logs"). A
 * hold record is 64 bytes, like a done record, but names a message by
 * queue id alone, so that the hold survives a move forward: */
#define SPOOL_HOLD_MAGIC   0x48584d52u /* "RMXH" little-endian */
#define SPOOL_HOLD_VERSION 1u
#define SPOOL_HOLD_LEN     64u

enum spool_hold_op {
	SPOOL_HOLD_ON = 1,  /* held */
	SPOOL_HOLD_OFF = 2, /* released */
};

struct spool_hold {
	char qid[32];   /* NUL-terminated, 1 to SPOOL_QID_MAX characters */
	uint64_t stamp; /* CLOCK_REALTIME ns, or later: the largest stamp of a qid wins */
	enum spool_hold_op op;
};

/* Encodes <h> into the SPOOL_HOLD_LEN bytes at <buf> (any alignment).
 * Returns 0 or -EINVAL (empty or long qid, bad op). Any thread. */
int spool_hold_encode(void *buf, const struct spool_hold *h);
/* Decodes the SPOOL_HOLD_LEN bytes at <buf>. Returns 0, or -EINVAL when
 * they are not a hold record (magic, version, crc, content). */
int spool_hold_decode(const void *buf, struct spool_hold *h);
/* A tool's hold log, "hold-<start_id>.rmx", into <name> (at least 64
 * bytes). Recovery compacts them into "hold-<start>-recovered.rmx". */
void spool_hold_name(char *name, size_t len, uint64_t start_id);

/* Appends the <n> records at <v> to the tool's own hold log in <dir>
 * (created if need be) in one write, fdatasyncs it and fsyncs <dir>: the
 * holds and releases are durable once this returns 0. Every record is
 * checked first. Not while spool_recover() runs on <dir>. Returns 0 or
 * -errno (-EINVAL: a record does not encode). Blocking: the tool. */
int spool_hold_write(const char *dir, const struct spool_hold *v, size_t n, uint64_t start_id);

/* Every hold log of a directory, loaded: for each queue id the record with
 * the largest stamp (of equal stamps, the one read last: logs in name
 * order). */
struct spool_holds;

/* Loads the hold logs of <dir> into a new *<out>. Returns 0 or -errno.
 * Blocking: the tool, start-up, the gateway's main thread. */
int spool_holds_load(const char *dir, struct spool_holds **out);
/* Whether <qid> is held. <h> may be NULL (nothing is). */
bool spool_holds_held(const struct spool_holds *h, const char *qid);
/* The same for a message a content filter quarantined (<quarantined>):
 * held unless a record releases it. */
bool spool_holds_held_q(const struct spool_holds *h, const char *qid, bool quarantined);
/* How many queue ids are held. */
size_t spool_holds_count(const struct spool_holds *h);
/* The largest stamp read (0: none): a new record gets a larger one, so
 * that it wins even when the clock stepped back. */
uint64_t spool_holds_stamp(const struct spool_holds *h);
void spool_holds_free(struct spool_holds *h);

/* `ringmx queue` selections (spool_pick(), spool_report()). A pending
 * message is in one state: held (a hold log says so), else deferred (a
 * defer log names it), else active. */
#define SPOOL_SEL_ACTIVE   0x1u
#define SPOOL_SEL_DEFERRED 0x2u
#define SPOOL_SEL_HELD     0x4u

struct spool_select {
	const char *from;       /* sender selector (core/qtool: qtool_addr_match()); NULL: any */
	const char *to;         /* a recipient must match; NULL: any */
	uint64_t older_than;    /* seconds since arrival, at least; 0: any */
	unsigned states;        /* SPOOL_SEL_* mask; 0: any */
	const char *const *ids; /* queue ids; NULL: any */
	size_t nids;
};

/* A pending message that a selection picked. */
struct spool_pick {
	char qid[32];
	struct spool_seg_id seg;
	uint64_t offset;
	unsigned state; /* one SPOOL_SEL_* */
};

/* Walks <dir> (defer and hold logs loaded first) and returns the pending
 * messages that <sel> selects at <now> in a malloc'd *<v> of *<n>.
 * <copies>: also every pending copy of a message (a move a crash cut
 * short: spool_delete_picks() marks them all). Returns 0 or -errno. Safe
 * while the gateway runs. */
int spool_pick(const char *dir, const struct spool_select *sel, time_t now, bool copies,
               struct spool_pick **v, size_t *n);

/* Marks the <n> picks SPOOL_DELETED in the tool's done log (spool_mark()'s
 * durability). Returns 0 or -errno. */
int spool_delete_picks(const char *dir, const struct spool_pick *v, size_t n, uint64_t start_id);

/* Holds (<on>) or releases the <n> picks: one record each in the tool's
 * hold log (spool_hold_write()), stamped past every stamp in the logs and
 * <now_ns>. Returns 0 or -errno. */
int spool_hold_picks(const char *dir, const struct spool_pick *v, size_t n, bool on,
                     uint64_t start_id, uint64_t now_ns);

/* spool_report() outputs. */
enum spool_report_kind {
	SPOOL_REPORT_TEXT = 0,     /* spool_list()'s lines */
	SPOOL_REPORT_JSON,         /* one JSON object per message per line (postqueue -j) */
	SPOOL_REPORT_SHAPE,        /* the qshape table by recipient domain */
	SPOOL_REPORT_SHAPE_SENDER, /* the same by sender domain */
	SPOOL_REPORT_SHOW,         /* everything about each message: envelope, headers, history */
};

/* Prints the messages <sel> selects in <dir> to <out>, as <kind> says, at
 * <now>. Returns 0 or -errno. Safe while the gateway runs. */
int spool_report(const char *dir, const struct spool_select *sel, enum spool_report_kind kind,
                 FILE *out, time_t now);

#endif
