/* spool: the on-disk format of accepted messages, and reading it back.
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
 * queue/ may include core/ only. */
#ifndef RINGMX_QUEUE_SPOOL_H
#define RINGMX_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>
#include <time.h>

#include "core/buf.h"

#define SPOOL_MAGIC   0x52584d52u /* "RMXR" little-endian */
#define SPOOL_VERSION 1u
#define SPOOL_HDR_LEN 32u /* sizeof(struct spool_rec_hdr) on disk */
#define SPOOL_ENV_MAX (1u << 20) /* envelope bytes per record, at most */
#define SPOOL_BODY_MAX (1ull << 30) /* body bytes per record, at most */
#define SPOOL_QID_MAX 31u /* queue id length, at most (spool_msg.qid holds it) */

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
	const char *from;   /* "" = null sender */
	const char *rcpts;  /* <nrcpt> NUL-terminated strings back to back */
	unsigned nrcpt;
	bool body_8bit;
	bool smtputf8;
};

/* A record read back: views into the reader's memory, valid during the
 * visit callback only. */
struct spool_msg {
	char qid[32];
	time_t arrival;
	const char *client, *helo, *from; /* NUL-terminated */
	const char *rcpts;                /* nrcpt strings back to back */
	unsigned nrcpt;
	uint64_t body_len;
	const char *body; /* NULL unless the visitor asked for bodies */
	const char *segment; /* file name of the segment */
	uint64_t offset;  /* of the record in the segment */
	bool body_8bit;   /* envelope said BODY=8BITMIME */
	bool smtputf8;    /* envelope said SMTPUTF8 */
};

/* CRC32C (Castagnoli), hardware (SSE4.2) when the CPU has it. <crc> is the
 * running value, 0 to start. Any thread. */
uint32_t crc32c(uint32_t crc, const void *p, size_t len);
/* The two paths behind crc32c(), for tests and benchmarks: the portable
 * slicing-by-8 one, and the SSE4.2 one (callable only when
 * crc32c_hw_available(); the portable one on other CPUs). */
uint32_t crc32c_sw(uint32_t crc, const void *p, size_t len);
uint32_t crc32c_hw(uint32_t crc, const void *p, size_t len);
bool crc32c_hw_available(void);

/* Builds the record header and envelope into <out> (appended) for a body
 * given as <nbody> iovecs; computes the crc over all of it. The caller
 * writes <out> followed by the body iovecs, in one writev. Returns 0 or
 * -ENOMEM / -EINVAL. Any thread. */
int spool_rec_build(struct buf *out, const struct spool_env *e, const struct iovec *body,
		    unsigned nbody);

/* Segment file name for <start_id> (unique per gateway start), <worker> and
 * <seq>, written into <name> (at least 64 bytes). */
void spool_seg_name(char *name, size_t len, uint64_t start_id, unsigned worker, unsigned seq);

typedef int (*spool_visit_fn)(void *arg, const struct spool_msg *m);

/* Reads every valid record of every segment in <dir> (segments in name
 * order, records in file order) and calls <fn> for each; a non-zero return
 * from <fn> stops the walk and is returned. <with_body>: also read bodies.
 * Returns 0, the visitor's value or -errno. Safe while the gateway runs
 * (appends in progress look like torn tails and are skipped). */
int spool_walk(const char *dir, bool with_body, spool_visit_fn fn, void *arg);

/* `ringmx queue`: prints one line per message (queue id, size, sender,
 * recipients, age) to <out>, or only their number when <count_only>.
 * <now> gives the ages. Returns 0 or -errno. */
int spool_list(const char *dir, bool count_only, FILE *out, time_t now);

#endif
