/* qtool: the sans-I/O pieces of the `ringmx queue` tool: durations
 * (--older-than), address selectors (--from, --to), JSON strings
 * (--json), the control requests the tool hands a running gateway
 * (<spool>/ringmx.req-*: "hold <qid>", "release <qid>", "requeue <qid>",
 * "delete <qid>"), and the qshape-like table (`ringmx queue shape`). No
 * I/O, no clock: the callers give <now> and ages. libc only. */
#ifndef RINGMX_CORE_QTOOL_H
#define RINGMX_CORE_QTOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/sv.h"

#define QTOOL_QID_MAX 31u /* as SPOOL_QID_MAX: a queue id is 1 to 31 bytes */

/* Parses a duration: decimal digits followed by nothing or s (seconds), m
 * (minutes), h (hours), d (days) or w (weeks): "90", "90s", "5m", "2h",
 * "3d". Sets *<secs>. Returns 0 or -EINVAL (empty, other characters, more
 * than 100 years). */
int qtool_duration(const char *s, uint64_t *secs);

/* Whether address <addr> ("" for the null sender) matches selector <pat>:
 * "<>" or "" matches only the null sender; "@dom" or "dom" (no '@')
 * matches the addresses whose domain is dom; "local@dom" matches that
 * address. Case-insensitive (ASCII). */
bool qtool_addr_match(const char *pat, const char *addr);

/* The domain of <addr>: after its last '@', or "" when it has none (the
 * null sender, "postmaster"). A view into <addr>. */
const char *qtool_domain(const char *addr);

/* Appends <s> (NUL-terminated) as a JSON string, between double quotes
 * (RFC 8259): '"', '\' and control bytes escaped, valid UTF-8 copied, each
 * byte of an invalid UTF-8 sequence written \ufffd, so that the output is
 * always valid JSON and valid UTF-8. Returns 0 or -ENOMEM. */
int qtool_json_str(struct buf *b, const char *s);

/* Whether <s> (<len> bytes) can be a queue id: 1 to QTOOL_QID_MAX bytes of
 * printable ASCII, no space. */
bool qtool_qid_ok(const char *s, size_t len);

/* Control requests, one per line in a request file. */
enum qtool_op {
	QTOOL_HOLD = 1, /* the hold log says so: the gateway reads it again */
	QTOOL_RELEASE,  /* the same, and the message is tried at once */
	QTOOL_REQUEUE,  /* deliver now: its next attempt is due at once */
	QTOOL_DELETE,   /* deleted (done record written): the gateway forgets it */
};

/* The request's word ("hold", ...), or NULL for another value. */
const char *qtool_op_name(enum qtool_op op);

/* Appends the line "<op> <qid>\n". Returns 0, -EINVAL (bad op or qid) or
 * -ENOMEM. */
int qtool_req_format(struct buf *b, enum qtool_op op, const char *qid);

/* Parses one request line at <line> (<len> bytes, without its '\n'; a
 * '\r' before it is allowed): "<op> <qid>". Sets *<op> and *<qid> (a view
 * into <line>). Returns 0 or -EINVAL. */
int qtool_req_parse(const char *line, size_t len, enum qtool_op *op, struct sv *qid);

/* The qshape table: counts of messages by domain and age. Columns, as
 * Postfix's qshape: T (all), then ages in minutes up to 5, 10, 20, 40, 80,
 * 160, 320, 640, 1280, and over 1280. */
#define QTOOL_SHAPE_BUCKETS 10u

struct qtool_shape_row {
	char *domain; /* malloc'd; lower case */
	uint64_t total;
	uint64_t n[QTOOL_SHAPE_BUCKETS];
};

struct qtool_shape {
	struct qtool_shape_row all; /* the TOTAL row (domain NULL) */
	struct qtool_shape_row *rows;
	size_t nrows, cap;
	size_t *idx; /* open addressing by domain: row index + 1, 0 free */
	size_t idx_cap;
};

/* The bucket of an age of <age_s> seconds (0 .. QTOOL_SHAPE_BUCKETS - 1). */
unsigned qtool_shape_bucket(int64_t age_s);

/* Counts one message of age <age_s> seconds: in the TOTAL row once, and
 * once in the row of each distinct domain of the <ndom> domains at <dom>
 * (a message to two users of one domain counts once there). Returns 0 or
 * -ENOMEM. */
int qtool_shape_add(struct qtool_shape *sh, const char *const *dom, size_t ndom, int64_t age_s);

/* Appends the table: a header line, the TOTAL row, then one row per
 * domain, by total (then name), right-aligned columns. Returns 0 or
 * -ENOMEM. */
int qtool_shape_format(const struct qtool_shape *sh, struct buf *out);

void qtool_shape_free(struct qtool_shape *sh);

#endif
