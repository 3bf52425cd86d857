/* spool-int: what the spool's own files share, and nothing outside them may
 * use: queue/spool.c (record format, names, done codec, I/O helpers),
 * queue/spool_read.c (reader window, walker, done and defer sets),
 * queue/spool_recover.c and queue/spool_admin.c. The public contracts stay in
 * queue/spool.h, whose types this file uses: it does not include it, so that
 * the module's private half is no module of its own pointing back at spool
 * (the include graph stays a tree); include queue/spool.h first. */
#ifndef RINGMX_QUEUE_SPOOL_INT_H
#define RINGMX_QUEUE_SPOOL_INT_H

#ifndef RINGMX_QUEUE_SPOOL_H
#error "include queue/spool.h before queue/spool-int.h"
#endif

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* queue/spool.c: the format. */

/* Checks the record header at <h> (magic, version, limits; not the crc,
 * which covers the whole record) and gives its lengths. The one test of a
 * header: the walker, recovery and spool_rec_len() all use it. Returns 0 or
 * -EINVAL. */
int hdr_check(const unsigned char *h, uint32_t *env_len, uint64_t *body_len);

/* Parses the envelope at <env>: <len> bytes, writable, followed by a NUL.
 * Cuts it into C strings in place and points m's client, helo and from
 * into it; copies the recipients back to back into <rcpts>, which has room
 * for <len> bytes (each "rcpt <v>\n" line is longer than "<v>\0"). Fills
 * qid, arrival, client, helo, from, rcpts, nrcpt, body_8bit and smtputf8
 * only. Unknown keys are skipped, so that a later version may add lines.
 * Never allocates. The one envelope parser: the walker and
 * spool_rec_parse() both use it. Returns 0 or -EINVAL. */
int env_parse(char *env, size_t len, char *rcpts, struct spool_msg *m);

/* Reads a decimal number of at least <min> digits at *<pp>, at most <max>.
 * Returns 0 and moves *<pp> past it, or -EINVAL. */
int parse_dec(const char **pp, unsigned min, uint64_t max, uint64_t *v);

/* Whether <s> names a segment (spool_seg_parse() takes it), a done log
 * (spool_done_parse() takes it: a gateway's, a tool's or a recovered one)
 * or a defer log (exactly as spool_defer_name() writes it). */
bool is_seg_name(const char *s);
bool is_done_name(const char *s);
bool is_defer_name(const char *s);

/* The name of the log that recovery compacts the done logs into. */
void done_recovered_name(char *name, size_t len, uint64_t start_id);

/* Writes all <n> bytes at <p>. Returns 0, -errno or -EIO (no progress). */
int write_full(int fd, const void *p, size_t n);

/* queue/spool_read.c: the done set. */

/* The done set: every done record of the directory in an open-addressing
 * hash table keyed by (qid, segment, offset). Loaded once per walk or
 * recovery; a record names one message, so lookups are exact. */
struct done_ent {
	struct spool_done d;
	bool used;
	bool matched; /* a valid record of a segment answered to it */
};

struct done_set {
	struct done_ent *v;
	size_t cap; /* a power of two, or 0 */
	size_t n;
	unsigned long dups; /* records that named a message already in the set */
	uint64_t bad_bytes; /* bytes of done logs that held no valid record */
	char **logs;        /* names of the done logs read */
	size_t nlogs;
};

/* Loads every done log of <d> into <s> (empty on entry). Returns 0 or
 * -errno. */
int done_load(DIR *d, struct done_set *s);

/* Scans a log of fixed-size records (done and hold logs): at each offset
 * where <reclen> bytes remain, <take>(<arg>, record) returns 0 (taken:
 * the next record follows), 1 (not a valid record) or -errno (stop, into
 * *<err>). What is not a valid record is skipped to the next <magic>, so a
 * torn or misaligned piece costs only itself. Returns the bytes skipped. */
size_t spool_log_scan(const unsigned char *p, size_t len, const char magic[4], size_t reclen,
                      int (*take)(void *arg, const unsigned char *rec), void *arg, int *err);
void done_free(struct done_set *s);

/* queue/spool_read.c: the defer set. */

#define DEFER_REPLY_MAX 1024u /* bytes of a last reply kept; the rest is cut */

/* The last deferral of one queue id. */
struct defer_ent {
	char qid[SPOOL_QID_MAX + 1];
	bool used;
	bool needed;  /* a pending message has this queue id (recovery) */
	size_t log;   /* index in defer_set.logs of the log the line came from */
	int64_t next; /* next attempt, seconds since the epoch */
	uint32_t attempts;
	char *reply; /* NUL-terminated, at most DEFER_REPLY_MAX bytes; malloc'd with
	              * <rstates> and the recipients' replies (one free) */
	/* Per recipient, in envelope order, when the line has them (the
	 * fields after the fourth): <nrs> state letters, 'd' deferred, 's'
	 * sent, 'f' failed (to be bounced), NUL-terminated; after that NUL
	 * each recipient's last reply, NUL-terminated ("" for none), for the
	 * <nrs> recipients. NULL and 0 without. */
	char *rstates;
	size_t nrs;
};

/* The state letter of recipient <i> in <e> ('\0' when <e> has none for it)
 * and its last reply (NULL when it has none). */
char defer_rcpt(const struct defer_ent *e, unsigned i, const char **reply);

/* Every defer log of the directory in an open-addressing hash table keyed by
 * queue id: the last line of a queue id wins (logs in name order, lines in
 * file order). A queue id holds the gateway's clock and worker, so two
 * messages sharing one (across starts) is not expected; if they did, both
 * would show the later line. */
struct defer_set {
	struct defer_ent *v;
	size_t cap; /* a power of two, or 0 */
	size_t n;
	unsigned long bad; /* malformed lines skipped */
	char **logs;       /* names of the defer logs; NULL where one could not be read */
	size_t nlogs;
};

/* The entry of <qid>, or NULL. <s> may be NULL. */
struct defer_ent *defer_find(struct defer_set *s, const char *qid);

/* Loads every defer log of <d> into <s> (empty on entry). A log that cannot
 * be opened is logged and skipped (its name dropped from s->logs): the logs
 * only inform. Returns 0 or -errno (-ENOMEM, or reading <d> failed). */
int defer_load(DIR *d, struct defer_set *s);
void defer_free(struct defer_set *s);

/* queue/spool_hold.c: the hold set. */

struct hold_ent {
	struct spool_hold h; /* the record that wins */
	bool used;
	bool needed;      /* a pending message has this queue id (recovery) */
	bool quarantined; /* that message is a content filter's quarantine: a release is kept */
};

/* Whether pending message <m> is held: as the hold record that wins says
 * (<he>, NULL: none), else as its envelope says: a message a content
 * filter quarantined is held from the start, until a release. */
static inline bool spool_held(const struct hold_ent *he, const struct spool_msg *m)
{
	return he ? he->h.op == SPOOL_HOLD_ON : *m->quarantine != '\0';
}

/* Every hold log of a directory, by queue id (open addressing). */
struct hold_set {
	struct hold_ent *v;
	size_t cap; /* a power of two, or 0 */
	size_t n;
	size_t nheld;             /* entries whose winning record holds */
	unsigned long superseded; /* records that lost to a later one */
	uint64_t max_stamp;
	uint64_t bad_bytes; /* bytes of hold logs that held no valid record */
	char **logs;        /* names of the hold logs read */
	size_t nlogs;
};

/* Whether <s> names a hold log (spool_hold_name(), or a recovered one). */
bool is_hold_name(const char *s);
/* Loads every hold log of <d> into <s> (empty on entry). Returns 0 or
 * -errno. */
int hold_load(DIR *d, struct hold_set *s);
/* The entry of <qid>, or NULL. <s> may be NULL. */
struct hold_ent *hold_find(const struct hold_set *s, const char *qid);
void hold_free(struct hold_set *s);
/* Recovery: replaces the hold logs of <d> by "hold-<start_id>-recovered.rmx"
 * holding only the holds of pending messages (entries <needed>), when any
 * record is not needed or there is more than one log; none needed: the
 * logs are unlinked. Each step durable. Sets *<kept>. Returns 0 or -errno. */
int hold_compact(DIR *d, struct hold_set *s, uint64_t start_id, unsigned long *kept);

/* Parses one defer line (queue/spool_read.c; <len> bytes at <p>, its '\n'
 * replaced by a NUL at p[len]) into <e>, the reply malloc'd. Returns 0,
 * -EINVAL (malformed) or -ENOMEM. */
int defer_line(const char *p, size_t len, struct defer_ent *e);

/* queue/spool_read.c: the walker. */

/* One segment read front to back: win[pos, end) holds the file's bytes from
 * the current record on; <left> bytes of the file (as big as it was when
 * opened) are still unread. */
struct spool_rd {
	int fd;
	char *win;
	size_t cap, pos, end;
	uint64_t left;
};

/* State of one walk, reused from record to record so that a walk allocates
 * only when a record is larger than any before it. */
/* Pending records seen in a walk, by queue id and crc: a second pending
 * record with both equal is a copy of the first (a move, SPOOL_MOVED, whose
 * mark a crash kept from becoming durable). */
struct copy_ent {
	char qid[32];
	uint32_t crc;
	bool used;
};
struct copy_set {
	struct copy_ent *v;
	size_t cap; /* a power of two, or 0 */
	size_t n;
};

struct spool_walker {
	bool with_body;
	/* A pending record that is a copy of an earlier pending one counts as
	 * SPOOL_MOVED (done), so no message is listed or delivered twice.
	 * Not for `ringmx queue --delete`, which marks every copy. */
	bool dedup;
	/* With <dedup>: such a copy also gets a SPOOL_MOVED mark in <done>,
	 * matched, for recovery's compacted done log (so that it stays done
	 * once the first is delivered). */
	bool mark_copies;
	unsigned long ncopies; /* copies found, all segments walked */
	struct copy_set copies;
	bool all;   /* visit done records too (m->state says which) */
	bool quiet; /* the caller reports bad tails itself (recovery) */
	spool_visit_fn fn;
	void *arg;
	struct done_set *done;   /* NULL: nothing is done */
	struct defer_set *defer; /* NULL, or pending messages mark their entry needed */
	struct hold_set *hold;   /* the same */
	struct spool_seg_id seg;
	struct spool_rd rd;
	struct buf env;   /* the record's envelope, parsed in place */
	struct buf rcpts; /* recipients back to back */
	struct buf body;
	/* Of the segment last walked: */
	uint64_t good;             /* end of its last sound record */
	unsigned long nrec;        /* sound records with a readable envelope */
	unsigned long ndone;       /* of them, done */
	unsigned long nunreadable; /* sound records with an unreadable envelope */
};

/* Sets up <w>'s buffers (its other fields are the caller's). Returns 0 or
 * -ENOMEM; walker_fini() either way. */
int walker_init(struct spool_walker *w);
void walker_fini(struct spool_walker *w);

/* Walks one open segment. Returns 0 (its end, or its first bad record:
 * w->good says where the sound records end), the visitor's non-zero value
 * or -errno. */
int walk_seg(struct spool_walker *w, const char *name, int fd, uint64_t size);

/* Walks every segment of <dir> with <w>, done records loaded first. */
int walk_dir(const char *dir, struct spool_walker *w);

/* Collects the names of <d> that <want> accepts, sorted, into a malloc'd
 * array of malloc'd strings. Returns their number or -errno; free_names()
 * frees them. */
int list_names(DIR *d, bool (*want)(const char *), char ***names);
void free_names(char **v, int n);

/* queue/spool_admin.c: selections, for the tool's reports. */

/* A selected message: <state> its SPOOL_SEL_* (0 for a done one), <de>
 * its last deferral or NULL. */
typedef int query_fn(void *arg, const struct spool_msg *m, unsigned state,
                     const struct defer_ent *de);

#define QUERY_ALL      0x1u /* done messages too (no state selector then) */
#define QUERY_COPIES   0x2u /* every pending copy (no dedup) */
#define QUERY_NO_DEFER 0x4u /* the defer logs are not read (--count) */

/* Walks <dir> (defer and hold logs first) and calls <fn> for each message
 * <sel> (NULL: all) selects at <now>. Returns 0, <fn>'s value or -errno. */
int spool_query(const char *dir, const struct spool_select *sel, time_t now, unsigned flags,
                query_fn *fn, void *arg);
/* Ages as the listing writes them (42s, 5m, 3h, 2d), a reply quoted. */
void spool_put_age(FILE *out, long long age);
void spool_put_quoted(FILE *out, const char *s);
/* "held", "deferred", "active" (pending, by <sel_state>), or the done state. */
const char *spool_state_name(enum spool_state s, unsigned sel_state);

#endif
