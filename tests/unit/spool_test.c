/* spool_test: crc32c (both paths), the record format, segment walking
 * (order, torn tails, corruption), the done log, recovery at start-up
 * (torn and damaged tails, deletion, compaction) and the `ringmx queue`
 * listing. Segments
 * are written the way io/ writes them: header and envelope from
 * spool_rec_build(), then the body iovecs, in one writev. */
#include "queue/spool.h"
#include "queue/spool-int.h" /* defer_line(), defer_rcpt() */

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* Corruption tests would log a warning per walk. */
static void quiet(void)
{
	log_threshold = LOG_ERR;
}

TestSuite(spool, .init = quiet);

/* crc32c */

Test(spool, crc32c_known_vectors)
{
	/* RFC 3720 B.4 and the usual check value. */
	static const struct {
		unsigned char data[32];
		size_t len;
		uint32_t want;
	} cases[] = {
	    {"123456789", 9, 0xE3069283u},
	    {{0}, 32, 0x8A9136AAu},
	    {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	     32,
	     0x62A8AB43u},
	    {{0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
	      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
	     32,
	     0x46DD794Eu},
	    {"", 0, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_expect_eq(crc32c(0, cases[i].data, cases[i].len), cases[i].want,
		             "case %zu: got %08x want %08x", i,
		             crc32c(0, cases[i].data, cases[i].len), cases[i].want);
		cr_expect_eq(crc32c_sw(0, cases[i].data, cases[i].len), cases[i].want,
		             "sw case %zu", i);
		if (crc32c_hw_available())
			cr_expect_eq(crc32c_hw(0, cases[i].data, cases[i].len), cases[i].want,
			             "hw case %zu", i);
	}
}

Test(spool, crc32c_combine_matches_the_whole)
{
	static unsigned char b[70000];
	uint32_t whole;
	/* Every split of a short buffer, and splits of a long one (lengths
	 * with many bits set exercise the square-and-multiply). */
	static const size_t long_splits[] = {0, 1, 32, 4095, 32768, 65535, 69999, 70000};

	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (unsigned char)(i * 131 + (i >> 8));
	whole = crc32c(0, b, 100);
	for (size_t k = 0; k <= 100; k++)
		cr_assert_eq(crc32c_combine(crc32c(0, b, k), crc32c(0, b + k, 100 - k), 100 - k),
		             whole, "split %zu", k);
	whole = crc32c(0, b, sizeof(b));
	for (size_t i = 0; i < sizeof(long_splits) / sizeof(long_splits[0]); i++) {
		size_t k = long_splits[i];

		cr_assert_eq(
		    crc32c_combine(crc32c(0, b, k), crc32c(0, b + k, sizeof(b) - k), sizeof(b) - k),
		    whole, "split %zu", k);
	}
	/* Nothing after A leaves crc(A). */
	cr_assert_eq(crc32c_combine(0x12345678u, 0, 0), 0x12345678u);
}

Test(spool, crc32c_chains_at_every_split)
{
	unsigned char b[100];
	uint32_t whole;

	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (unsigned char)(i * 7 + 3);
	whole = crc32c(0, b, sizeof(b));
	for (size_t k = 0; k <= sizeof(b); k++) {
		cr_assert_eq(crc32c(crc32c(0, b, k), b + k, sizeof(b) - k), whole, "split %zu", k);
		cr_assert_eq(crc32c_sw(crc32c_sw(0, b, k), b + k, sizeof(b) - k), whole,
		             "sw split %zu", k);
	}
}

Test(spool, crc32c_hw_matches_sw_on_random_buffers)
{
	unsigned char *b = malloc(4096 + 8);
	unsigned seed = 12345;

	if (!crc32c_hw_available())
		cr_skip_test("no SSE4.2 on this CPU");
	cr_assert_not_null(b);
	for (size_t i = 0; i < 4096 + 8; i++)
		b[i] = (unsigned char)rand_r(&seed);
	for (int n = 0; n < 5000; n++) {
		size_t align = (size_t)rand_r(&seed) % 8, len = (size_t)rand_r(&seed) % 4097;
		uint32_t init = (uint32_t)rand_r(&seed) * 2654435761u;

		cr_assert_eq(crc32c_hw(init, b + align, len), crc32c_sw(init, b + align, len),
		             "align %zu len %zu init %08x", align, len, init);
	}
	free(b);
}

/* Helpers: temporary spool directories and segments. */

static char *tmp_dir(void)
{
	char *d = strdup("/tmp/spool_test.XXXXXX");

	cr_assert_not_null(d);
	cr_assert_not_null(mkdtemp(d));
	return d;
}

static void rm_dir(char *d)
{
	DIR *dd = opendir(d);
	struct dirent *de;

	cr_assert_not_null(dd);
	while ((de = readdir(dd)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(dd), de->d_name, 0);
	closedir(dd);
	rmdir(d);
	free(d);
}

static int seg_open(const char *dir, const char *name)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	return fd;
}

/* Appends one record as io/ does; returns its offset in the segment. */
static off_t seg_append(int fd, const struct spool_env *e, const struct iovec *body, unsigned nbody)
{
	struct buf rec = BUF_INIT;
	struct iovec iov[16];
	size_t total;
	off_t off;

	cr_assert_lt(nbody, 16);
	cr_assert_eq(spool_rec_build(&rec, e, body, nbody), 0);
	iov[0] = (struct iovec){rec.p, rec.len};
	total = rec.len;
	for (unsigned i = 0; i < nbody; i++) {
		iov[i + 1] = body[i];
		total += body[i].iov_len;
	}
	off = lseek(fd, 0, SEEK_END);
	cr_assert_eq(writev(fd, iov, (int)nbody + 1), (ssize_t)total);
	buf_free(&rec);
	return off;
}

/* A copy of everything a visit saw. */
struct got {
	char qid[32];
	time_t arrival;
	char *client, *helo, *from, *rcpts;
	size_t rcpts_len;
	unsigned nrcpt;
	uint64_t body_len;
	char *body;
	char segment[64];
	uint64_t offset;
	bool body_8bit, smtputf8;
};

struct got_list {
	struct got v[64];
	unsigned n;
	unsigned stop_after; /* 0: never */
};

static int collect(void *arg, const struct spool_msg *m)
{
	struct got_list *l = arg;
	struct got *g;
	const char *r = m->rcpts;

	cr_assert_lt(l->n, 64);
	g = &l->v[l->n++];
	memcpy(g->qid, m->qid, sizeof(g->qid));
	g->arrival = m->arrival;
	g->client = strdup(m->client);
	g->helo = strdup(m->helo);
	g->from = strdup(m->from);
	for (unsigned i = 0; i < m->nrcpt; i++)
		r += strlen(r) + 1;
	g->rcpts_len = (size_t)(r - m->rcpts);
	g->rcpts = malloc(g->rcpts_len + 1);
	memcpy(g->rcpts, m->rcpts, g->rcpts_len);
	g->nrcpt = m->nrcpt;
	g->body_len = m->body_len;
	g->body = NULL;
	if (m->body) {
		g->body = malloc(m->body_len + 1);
		memcpy(g->body, m->body, m->body_len);
	}
	snprintf(g->segment, sizeof(g->segment), "%s", m->segment);
	g->offset = m->offset;
	g->body_8bit = m->body_8bit;
	g->smtputf8 = m->smtputf8;
	if (l->stop_after && l->n == l->stop_after)
		return 42;
	return 0;
}

static void got_free(struct got_list *l)
{
	for (unsigned i = 0; i < l->n; i++) {
		free(l->v[i].client);
		free(l->v[i].helo);
		free(l->v[i].from);
		free(l->v[i].rcpts);
		free(l->v[i].body);
	}
	l->n = 0;
}

static struct spool_env env_n(const char *qid)
{
	return (struct spool_env){
	    .qid = qid,
	    .arrival = 1700000000,
	    .client = "192.0.2.7",
	    .helo = "mx.example.net",
	    .from = "alice@example.net",
	    .rcpts = "bob@example.org\0carol@example.org",
	    .nrcpt = 2,
	};
}

static const char body1[] = "Received: from mx.example.net\r\nSubject: hi\r\n\r\nhello\r\n";

/* Records and walking back. */

Test(spool, seg_name_is_fixed_width_and_sortable)
{
	char a[64], b[64], c[64];

	spool_seg_name(a, sizeof(a), 0x1234, 3, 42);
	cr_assert_str_eq(a, "seg-0000000000001234-03-000042.rmx");
	spool_seg_name(b, sizeof(b), 0x1234, 3, 100);
	spool_seg_name(c, sizeof(c), 0x1235, 0, 0);
	cr_assert_lt(strcmp(a, b), 0);
	cr_assert_lt(strcmp(b, c), 0);
}

Test(spool, rec_header_is_little_endian_on_disk)
{
	struct spool_env e = env_n("Q1");
	struct iovec body = {(void *)body1, sizeof(body1) - 1};
	struct buf rec = BUF_INIT;
	const unsigned char *h;
	uint32_t crc, env_len;

	cr_assert_eq(spool_rec_build(&rec, &e, &body, 1), 0);
	h = (const unsigned char *)rec.p;
	cr_assert_eq(memcmp(h, "RMXR", 4), 0);
	cr_assert_eq(h[4], 1);
	cr_assert_eq(h[5] | h[6] | h[7], 0);
	env_len =
	    (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
	cr_assert_eq(env_len, rec.len - SPOOL_HDR_LEN);
	cr_assert_eq(h[16], sizeof(body1) - 1);
	for (int i = 17; i < 32; i++)
		cr_assert_eq(h[i], 0, "byte %d", i);
	cr_assert_eq(memcmp(rec.p + SPOOL_HDR_LEN,
	                    "id Q1\narrival 1700000000\nclient 192.0.2.7\nhelo mx.example.net\n"
	                    "from alice@example.net\nrcpt bob@example.org\nrcpt carol@example.org\n"
	                    "body 7BIT\nsmtputf8 0\n",
	                    env_len),
	             0);
	/* crc: header with crc = 0, envelope, body. */
	crc =
	    (uint32_t)h[12] | (uint32_t)h[13] << 8 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 24;
	memset(rec.p + 12, 0, 4);
	cr_assert_eq(crc32c(crc32c(0, rec.p, rec.len), body1, sizeof(body1) - 1), crc);
	buf_free(&rec);
}

Test(spool, rec_open_then_seal_writes_what_build_writes)
{
	struct spool_env e = env_n("Q7");
	struct iovec body = {(void *)body1, sizeof(body1) - 1};
	struct buf whole = BUF_INIT, rec = BUF_INIT;
	struct spool_msg m;
	struct buf scratch = BUF_INIT;
	uint32_t crc;
	size_t env_len;

	cr_assert_eq(spool_rec_build(&whole, &e, &body, 1), 0);
	cr_assert_eq(spool_rec_open(&rec, &e), 0);
	env_len = rec.len - SPOOL_HDR_LEN;
	cr_assert_eq(rec.len, whole.len);
	for (size_t i = 0; i < SPOOL_HDR_LEN; i++)
		cr_assert_eq(rec.p[i], 0, "header byte %zu before the seal", i);
	/* The body in two pieces, as a streaming writer sees it. */
	crc = crc32c(0, rec.p + SPOOL_HDR_LEN, env_len);
	crc = crc32c(crc, body1, 10);
	crc = crc32c(crc, body1 + 10, sizeof(body1) - 1 - 10);
	cr_assert_eq(spool_rec_seal(rec.p, env_len, sizeof(body1) - 1, crc), 0);
	cr_assert_eq(memcmp(rec.p, whole.p, whole.len), 0);
	cr_assert_eq(buf_append(&rec, body1, sizeof(body1) - 1), 0);
	cr_assert_eq(spool_rec_parse(rec.p, rec.len, &m, &scratch), 0);
	cr_assert_str_eq(m.qid, "Q7");
	cr_assert_eq(spool_rec_seal(rec.p, SPOOL_ENV_MAX + 1, 0, 0), -EINVAL);
	buf_free(&whole);
	buf_free(&rec);
	buf_free(&scratch);
}

/* A pad line makes the envelope exactly as long as asked, every reader
 * skips it, and a pad too short to be a line is refused. */
Test(spool, pad_fills_the_envelope_to_the_octet_and_is_skipped)
{
	struct spool_env e = env_n("Q8");
	struct buf plain = BUF_INIT, rec = BUF_INIT, scratch = BUF_INIT;
	struct spool_msg m;
	size_t pads[] = {5, 6, 70, 129, 4000};

	cr_assert_eq(spool_rec_open(&plain, &e), 0);
	for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]); i++) {
		size_t env_len;

		e.pad = pads[i];
		rec.len = 0;
		cr_assert_eq(spool_rec_open(&rec, &e), 0);
		cr_assert_eq(rec.len, plain.len + pads[i], "pad %zu", pads[i]);
		env_len = rec.len - SPOOL_HDR_LEN;
		cr_assert_eq(spool_rec_seal(rec.p, env_len, sizeof(body1) - 1,
		                            crc32c(crc32c(0, rec.p + SPOOL_HDR_LEN, env_len), body1,
		                                   sizeof(body1) - 1)),
		             0);
		cr_assert_eq(buf_append(&rec, body1, sizeof(body1) - 1), 0);
		cr_assert_eq(spool_rec_parse(rec.p, rec.len, &m, &scratch), 0);
		cr_assert_str_eq(m.qid, "Q8");
		cr_assert_eq(m.nrcpt, 2);
		cr_assert_str_eq(m.quarantine, "");
		cr_assert_eq(m.body_len, sizeof(body1) - 1);
	}
	e.pad = 4;
	rec.len = 0;
	cr_assert_eq(spool_rec_open(&rec, &e), -EINVAL);
	buf_free(&plain);
	buf_free(&rec);
	buf_free(&scratch);
}

Test(spool, rec_open_refuses_what_build_refuses)
{
	struct spool_env e = env_n("Q\n1");
	struct buf rec = BUF_INIT;

	cr_assert_eq(spool_rec_open(&rec, &e), -EINVAL);
	cr_assert_eq(rec.len, 0);
	e = env_n("");
	cr_assert_eq(spool_rec_open(&rec, &e), -EINVAL);
	buf_free(&rec);
}

Test(spool, rec_build_appends_after_existing_content)
{
	struct spool_env e = env_n("Q1");
	struct buf rec = BUF_INIT;
	size_t one;

	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), 0);
	one = rec.len;
	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), 0);
	cr_assert_eq(rec.len, 2 * one);
	cr_assert_eq(memcmp(rec.p, rec.p + one, one), 0);
	buf_free(&rec);
}

Test(spool, roundtrip_keeps_every_field_and_the_body)
{
	char *dir = tmp_dir(), name[64];
	struct got_list l = {0};
	struct spool_env e1 = env_n("1A2B3C");
	struct spool_env e2 = {
	    .qid = "QID-NULLSENDER",
	    .arrival = 1700000123,
	    .client = "2001:db8::1",
	    .helo = "[2001:db8::1]",
	    .from = "",
	    .rcpts = "postmaster@example.org",
	    .nrcpt = 1,
	    .body_8bit = true,
	    .smtputf8 = true,
	};
	struct spool_env e3 = {
	    .qid = "Q3",
	    .arrival = 5,
	    .client = "198.51.100.1",
	    .helo = "helo with spaces and \r inside",
	    .from = "j\xc3\xb6rg@b\xc3\xbc cher.example",
	    .rcpts = "a@x\0b@x\0c@x\0d@x",
	    .nrcpt = 4,
	};
	struct iovec b1[] = {{(void *)body1, 10}, {(void *)(body1 + 10), sizeof(body1) - 11}};
	struct iovec b2 = {(void *)"x\r\n", 3};
	off_t o1, o2, o3;
	int fd;

	spool_seg_name(name, sizeof(name), 77, 1, 0);
	fd = seg_open(dir, name);
	o1 = seg_append(fd, &e1, b1, 2);
	o2 = seg_append(fd, &e2, &b2, 1);
	o3 = seg_append(fd, &e3, NULL, 0); /* empty body */
	close(fd);

	cr_assert_eq(spool_walk(dir, true, collect, &l), 0);
	cr_assert_eq(l.n, 3);

	cr_expect_str_eq(l.v[0].qid, "1A2B3C");
	cr_expect_eq(l.v[0].arrival, 1700000000);
	cr_expect_str_eq(l.v[0].client, "192.0.2.7");
	cr_expect_str_eq(l.v[0].helo, "mx.example.net");
	cr_expect_str_eq(l.v[0].from, "alice@example.net");
	cr_expect_eq(l.v[0].nrcpt, 2);
	cr_expect_eq(l.v[0].rcpts_len, sizeof("bob@example.org\0carol@example.org"));
	cr_expect_eq(memcmp(l.v[0].rcpts, "bob@example.org\0carol@example.org", l.v[0].rcpts_len),
	             0);
	cr_expect_eq(l.v[0].body_len, sizeof(body1) - 1);
	cr_expect_eq(memcmp(l.v[0].body, body1, sizeof(body1) - 1), 0);
	cr_expect_str_eq(l.v[0].segment, name);
	cr_expect_eq(l.v[0].offset, (uint64_t)o1);
	cr_expect(!l.v[0].body_8bit);
	cr_expect(!l.v[0].smtputf8);

	cr_expect_str_eq(l.v[1].qid, "QID-NULLSENDER");
	cr_expect_eq(l.v[1].arrival, 1700000123);
	cr_expect_str_eq(l.v[1].client, "2001:db8::1");
	cr_expect_str_eq(l.v[1].helo, "[2001:db8::1]");
	cr_expect_str_eq(l.v[1].from, "");
	cr_expect_eq(l.v[1].nrcpt, 1);
	cr_expect_str_eq(l.v[1].rcpts, "postmaster@example.org");
	cr_expect_eq(l.v[1].body_len, 3);
	cr_expect_eq(memcmp(l.v[1].body, "x\r\n", 3), 0);
	cr_expect_eq(l.v[1].offset, (uint64_t)o2);
	cr_expect(l.v[1].body_8bit);
	cr_expect(l.v[1].smtputf8);

	cr_expect_str_eq(l.v[2].qid, "Q3");
	cr_expect_eq(l.v[2].arrival, 5);
	cr_expect_str_eq(l.v[2].helo, "helo with spaces and \r inside");
	cr_expect_str_eq(l.v[2].from, "j\xc3\xb6rg@b\xc3\xbc cher.example");
	cr_expect_eq(l.v[2].nrcpt, 4);
	cr_expect_eq(memcmp(l.v[2].rcpts, "a@x\0b@x\0c@x\0d@x", sizeof("a@x\0b@x\0c@x\0d@x")), 0);
	cr_expect_eq(l.v[2].body_len, 0);
	cr_expect_not_null(l.v[2].body);
	cr_expect_eq(l.v[2].offset, (uint64_t)o3);
	got_free(&l);

	/* Without bodies: same records, no body pointer. */
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 3);
	for (unsigned i = 0; i < 3; i++)
		cr_expect_null(l.v[i].body);
	cr_expect_eq(l.v[0].body_len, sizeof(body1) - 1);
	got_free(&l);
	rm_dir(dir);
}

Test(spool, large_bodies_stream_past_the_read_window)
{
	static const size_t sizes[] = {5u << 20, 300000, 100, 3u << 20};
	char *dir = tmp_dir(), name[64], qid[32];
	struct got_list l = {0};
	struct spool_env e = env_n("");
	char *big = malloc(5u << 20);
	unsigned seed = 7;
	int fd;

	cr_assert_not_null(big);
	for (size_t i = 0; i < (5u << 20); i++)
		big[i] = (char)rand_r(&seed);
	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	for (unsigned i = 0; i < 4; i++) {
		/* A different slice each time, so that mixed-up bodies show. */
		struct iovec iov = {big + i, sizes[i] - i};

		snprintf(qid, sizeof(qid), "BIG%u", i);
		e.qid = qid;
		seg_append(fd, &e, &iov, 1);
	}
	close(fd);

	for (int with_body = 0; with_body < 2; with_body++) {
		cr_assert_eq(spool_walk(dir, with_body, collect, &l), 0);
		cr_assert_eq(l.n, 4);
		for (unsigned i = 0; i < 4; i++) {
			snprintf(qid, sizeof(qid), "BIG%u", i);
			cr_expect_str_eq(l.v[i].qid, qid);
			cr_expect_eq(l.v[i].body_len, sizes[i] - i);
			if (with_body)
				cr_expect_eq(memcmp(l.v[i].body, big + i, sizes[i] - i), 0,
				             "body %u", i);
		}
		got_free(&l);
	}
	free(big);
	rm_dir(dir);
}

Test(spool, segments_walk_in_name_order_and_others_are_ignored)
{
	char *dir = tmp_dir(), name[64], qid[32];
	struct got_list l = {0};
	struct spool_env e = env_n("");
	/* Created out of order; name order is (start, worker, seq). */
	static const struct {
		uint64_t start;
		unsigned worker, seq;
	} segs[] = {{2, 0, 0}, {1, 1, 0}, {1, 0, 10}, {1, 0, 9}, {0x10, 0, 0}};
	static const char *const want[] = {"1-0-9", "1-0-10", "1-1-0", "2-0-0", "16-0-0"};
	int fd;

	for (unsigned i = 0; i < 5; i++) {
		spool_seg_name(name, sizeof(name), segs[i].start, segs[i].worker, segs[i].seq);
		fd = seg_open(dir, name);
		for (unsigned k = 0; k < 2; k++) {
			snprintf(qid, sizeof(qid), "%llu-%u-%u", (unsigned long long)segs[i].start,
			         segs[i].worker, segs[i].seq);
			e.qid = qid;
			e.arrival = k;
			seg_append(fd, &e, NULL, 0);
		}
		close(fd);
	}
	/* Not segments: must not be read. */
	e.qid = "NOPE";
	close(fd = seg_open(dir, "done.log"));
	fd = seg_open(dir, "seg-0000000000000001-00-000000.tmp");
	seg_append(fd, &e, NULL, 0);
	close(fd);

	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 10);
	for (unsigned i = 0; i < 10; i++) {
		cr_expect_str_eq(l.v[i].qid, want[i / 2], "record %u", i);
		cr_expect_eq(l.v[i].arrival, (time_t)(i % 2), "record %u", i);
	}
	got_free(&l);
	rm_dir(dir);
}

Test(spool, visitor_return_value_stops_the_walk)
{
	char *dir = tmp_dir(), name[64];
	struct got_list l = {.stop_after = 2};
	struct spool_env e = env_n("S");
	int fd;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	for (int i = 0; i < 5; i++) {
		char qid[8];

		/* Distinct ids: equal id and crc would be copies of one. */
		snprintf(qid, sizeof(qid), "S%d", i);
		e.qid = qid;
		seg_append(fd, &e, NULL, 0);
	}
	close(fd);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 42);
	cr_assert_eq(l.n, 2);
	got_free(&l);
	rm_dir(dir);
}

/* Writes three records to segment (1,0,0) and one to (1,0,1); returns the
 * first segment's fd, the offsets of its records and its length. */
static int three_and_one(const char *dir, off_t off[3], off_t *len)
{
	char name[64], path[512];
	struct spool_env e = env_n("");
	struct iovec b = {(void *)body1, sizeof(body1) - 1};
	int fd, fd2;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	e.qid = "R0";
	off[0] = seg_append(fd, &e, &b, 1);
	e.qid = "R1";
	off[1] = seg_append(fd, &e, &b, 1);
	e.qid = "R2";
	off[2] = seg_append(fd, &e, &b, 1);
	*len = lseek(fd, 0, SEEK_END);
	close(fd);
	/* Reopen without O_APPEND: Linux pwrite() would append. */
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	spool_seg_name(name, sizeof(name), 1, 0, 1);
	fd2 = seg_open(dir, name);
	e.qid = "NEXT";
	seg_append(fd2, &e, &b, 1);
	close(fd2);
	return fd;
}

Test(spool, torn_tail_hides_the_record_at_every_cut)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	off_t off[3], len;
	int fd = three_and_one(dir, off, &len);

	/* A crash or an append in progress can leave any prefix. */
	for (off_t cut = len - 1; cut >= off[2]; cut--) {
		cr_assert_eq(ftruncate(fd, cut), 0);
		cr_assert_eq(spool_walk(dir, cut % 2, collect, &l), 0);
		cr_assert_eq(l.n, 3, "cut at %lld: %u records", (long long)cut, l.n);
		cr_assert_str_eq(l.v[0].qid, "R0");
		cr_assert_str_eq(l.v[1].qid, "R1");
		cr_assert_str_eq(l.v[2].qid, "NEXT", "cut at %lld", (long long)cut);
		got_free(&l);
	}
	close(fd);
	rm_dir(dir);
}

Test(spool, any_flipped_byte_ends_its_segment_there)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	off_t off[3], len;
	int fd = three_and_one(dir, off, &len);
	unsigned char c;

	/* Every byte of R1: header, envelope and body. R2 is sound but must
	 * not be seen: nothing after a bad record is trusted. */
	for (off_t at = off[1]; at < off[2]; at++) {
		cr_assert_eq(pread(fd, &c, 1, at), 1);
		c ^= 0x20;
		cr_assert_eq(pwrite(fd, &c, 1, at), 1);
		cr_assert_eq(spool_walk(dir, at % 2, collect, &l), 0);
		cr_assert_eq(l.n, 2, "flip at %lld: %u records", (long long)at, l.n);
		cr_assert_str_eq(l.v[0].qid, "R0");
		cr_assert_str_eq(l.v[1].qid, "NEXT");
		got_free(&l);
		c ^= 0x20;
		cr_assert_eq(pwrite(fd, &c, 1, at), 1);
	}
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 4);
	got_free(&l);
	close(fd);
	rm_dir(dir);
}

Test(spool, sound_frame_with_bad_envelope_skips_that_record_only)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	off_t off[3], len;
	int fd = three_and_one(dir, off, &len);
	unsigned char rec[512];
	size_t n = (size_t)(off[2] - off[1]);
	uint32_t crc;
	char *id;

	/* Rewrite R1's "id" key and give it a matching crc: the frame is
	 * sound, the envelope lacks its queue id. */
	cr_assert_leq(n, sizeof(rec));
	cr_assert_eq(pread(fd, rec, n, off[1]), (ssize_t)n);
	id = memmem(rec + SPOOL_HDR_LEN, n - SPOOL_HDR_LEN, "id R1\n", 6);
	cr_assert_not_null(id);
	id[1] = 'x';
	memset(rec + 12, 0, 4);
	crc = crc32c(0, rec, n);
	for (int i = 0; i < 4; i++)
		rec[12 + i] = (unsigned char)(crc >> (8 * i));
	cr_assert_eq(pwrite(fd, rec, n, off[1]), (ssize_t)n);
	close(fd);

	cr_assert_eq(spool_walk(dir, true, collect, &l), 0);
	cr_assert_eq(l.n, 3);
	cr_expect_str_eq(l.v[0].qid, "R0");
	cr_expect_str_eq(l.v[1].qid, "R2");
	cr_expect_str_eq(l.v[2].qid, "NEXT");
	got_free(&l);
	rm_dir(dir);
}

Test(spool, rec_build_rejects_newline_in_any_value)
{
	struct buf rec = BUF_INIT;
	struct spool_env e;
	static const char *const bad = "a\nb";

	cr_assert_eq(buf_append_str(&rec, "earlier"), 0);
	for (int field = 0; field < 6; field++) {
		e = env_n("Q");
		switch (field) {
		case 0:
			e.qid = bad;
			break;
		case 1:
			e.client = bad;
			break;
		case 2:
			e.helo = bad;
			break;
		case 3:
			e.from = bad;
			break;
		case 4:
			e.rcpts = "ok@x\0a\nb";
			break;
		case 5:
			e.rcpts = "a\n";
			e.nrcpt = 1;
			break;
		}
		cr_expect_eq(spool_rec_build(&rec, &e, NULL, 0), -EINVAL, "field %d", field);
		cr_expect_eq(rec.len, 7, "field %d: buffer changed", field);
		cr_expect_str_eq(rec.p, "earlier");
	}
	buf_free(&rec);
}

Test(spool, rec_build_rejects_bad_qid_and_oversized_envelope)
{
	struct buf rec = BUF_INIT;
	struct spool_env e = env_n("");
	char *huge = malloc(SPOOL_ENV_MAX + 1);

	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), -EINVAL); /* empty qid */
	e.qid = NULL;
	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), -EINVAL);
	e.qid = "0123456789012345678901234567890"; /* 31: fits */
	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), 0);
	buf_reset(&rec, 0);
	e.qid = "01234567890123456789012345678901"; /* 32: too long */
	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), -EINVAL);
	e.qid = "Q";
	cr_assert_not_null(huge);
	memset(huge, 'a', SPOOL_ENV_MAX);
	huge[SPOOL_ENV_MAX] = '\0';
	e.rcpts = huge;
	e.nrcpt = 1;
	cr_assert_eq(spool_rec_build(&rec, &e, NULL, 0), -EINVAL);
	cr_assert_eq(rec.len, 0);
	free(huge);
	buf_free(&rec);
}

/* Listing. */

static char *list(const char *dir, unsigned flags, time_t now, int *ret)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	cr_assert_not_null(f);
	*ret = spool_list(dir, flags, f, now);
	fclose(f);
	return s;
}

Test(spool, list_prints_one_grep_friendly_line_per_message)
{
	char *dir = tmp_dir(), name[64], *s;
	struct spool_env e = env_n("AAA");
	struct iovec b = {(void *)body1, sizeof(body1) - 1};
	time_t now = 1700100000;
	int fd, ret;

	spool_seg_name(name, sizeof(name), 9, 0, 0);
	fd = seg_open(dir, name);
	e.arrival = now - 3;
	seg_append(fd, &e, &b, 1);
	e = (struct spool_env){
	    .qid = "BBB", .arrival = now - 300, .from = "", .rcpts = "x@y", .nrcpt = 1};
	seg_append(fd, &e, NULL, 0);
	e.qid = "CCC";
	e.arrival = now - 7201;
	seg_append(fd, &e, NULL, 0);
	e.qid = "DDD";
	e.arrival = now - 3 * 86400 - 5;
	e.nrcpt = 0;
	seg_append(fd, &e, NULL, 0);
	e.qid = "EEE";
	e.arrival = now + 10; /* clock went back: no negative age */
	e.nrcpt = 1;
	seg_append(fd, &e, NULL, 0);
	close(fd);

	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "AAA 53 alice@example.net 3s bob@example.org,carol@example.org active\n"
	                    "BBB 0 <> 5m x@y active\n"
	                    "CCC 0 <> 2h x@y active\n"
	                    "DDD 0 <> 3d - active\n"
	                    "EEE 0 <> 0s x@y active\n");
	free(s);
	s = list(dir, SPOOL_LIST_COUNT, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "5\n");
	free(s);
	rm_dir(dir);
}

Test(spool, empty_dir_has_no_messages)
{
	char *dir = tmp_dir(), *s;
	struct got_list l = {0};
	int ret;

	cr_assert_eq(spool_walk(dir, true, collect, &l), 0);
	cr_assert_eq(l.n, 0);
	s = list(dir, SPOOL_LIST_COUNT, 0, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "0\n");
	free(s);
	s = list(dir, 0, 0, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "");
	free(s);
	rm_dir(dir);
}

Test(spool, empty_segment_and_garbage_segment_are_harmless)
{
	char *dir = tmp_dir(), name[64];
	struct got_list l = {0};
	struct spool_env e = env_n("OK");
	int fd;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	close(seg_open(dir, name));
	spool_seg_name(name, sizeof(name), 1, 0, 1);
	fd = seg_open(dir, name);
	cr_assert_eq(write(fd, "this is not a spool segment at all, just text\n", 46), 46);
	close(fd);
	spool_seg_name(name, sizeof(name), 1, 0, 2);
	fd = seg_open(dir, name);
	seg_append(fd, &e, NULL, 0);
	close(fd);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 1);
	cr_expect_str_eq(l.v[0].qid, "OK");
	got_free(&l);
	rm_dir(dir);
}

Test(spool, missing_dir_is_enoent)
{
	struct got_list l = {0};
	char *s;
	int ret;

	cr_assert_eq(spool_walk("/nonexistent/ringmx-spool", false, collect, &l), -ENOENT);
	s = list("/nonexistent/ringmx-spool", 0, 0, &ret);
	cr_assert_eq(ret, -ENOENT);
	cr_expect_str_eq(s, "");
	free(s);
}

/* Segment names and done records. */

Test(spool, seg_parse_accepts_only_the_seg_name_spelling)
{
	static const char *const bad[] = {
	    "seg-0000000000001234-03-42.rmx",      /* seq too short */
	    "seg-0000000000001234-3-000042.rmx",   /* worker too short */
	    "seg-000000000000123-03-000042.rmx",   /* start too short */
	    "seg-000000000000ABCD-03-000042.rmx",  /* upper case */
	    "seg-0000000000001234-003-000042.rmx", /* not canonical */
	    "seg-0000000000001234-03-000042.rmx.damaged",
	    "seg-0000000000001234-03-000042.tmp",
	    "seg-0000000000001234-65536-000042.rmx", /* worker over 16 bits */
	    "seg-0000000000001234-03-4294967296.rmx",
	    "seg-0000000000001234-03--00042.rmx",
	    "done-0000000000001234-03.rmx",
	    "",
	};
	struct spool_seg_id id;
	char name[64];

	spool_seg_name(name, sizeof(name), 0xfedcba9876543210ull, 65535, 4294967295u);
	cr_assert_eq(spool_seg_parse(name, &id), 0, "%s", name);
	cr_expect_eq(id.start, 0xfedcba9876543210ull);
	cr_expect_eq(id.worker, 65535);
	cr_expect_eq(id.seq, 4294967295u);
	spool_seg_name(name, sizeof(name), 0x1234, 3, 42);
	cr_assert_eq(spool_seg_parse(name, &id), 0);
	cr_expect_eq(id.start, 0x1234);
	cr_expect_eq(id.worker, 3);
	cr_expect_eq(id.seq, 42);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(spool_seg_parse(bad[i], &id), -EINVAL, "%s", bad[i]);
}

Test(spool, done_parse_accepts_exactly_the_done_log_spellings)
{
	static const char *const bad[] = {
	    "done-0000000000001234-3.rmx",          /* worker too short */
	    "done-0000000000001234-003.rmx",        /* not canonical */
	    "done-0000000000001234-03-42.rmx",      /* seq too short */
	    "done-0000000000001234-03-0000042.rmx", /* not canonical */
	    "done-000000000000123-03.rmx",          /* start too short */
	    "done-000000000000ABCD-03.rmx",         /* upper case */
	    "done-0000000000001234-65536.rmx",      /* worker over 16 bits */
	    "done-0000000000001234-03-4294967296.rmx",
	    "done-0000000000001234-03-000042.rmx.tmp", /* a compaction in progress */
	    "done-0000000000001234-recovered.rmx.tmp",
	    "done-0000000000001234-Recovered.rmx",
	    "done-0000000000001234-03-.rmx",
	    "done-0000000000001234-03.log",
	    "done-x.rmx",
	    "done-.rmx",
	    "seg-0000000000001234-03-000042.rmx",
	    "",
	};
	struct spool_done_id id;
	char name[64];

	spool_done_log_name(name, sizeof(name), 0x1234, 3, 42);
	cr_assert_str_eq(name, "done-0000000000001234-03-000042.rmx");
	cr_assert_eq(spool_done_parse(name, &id), 0);
	cr_expect(id.rotated && !id.recovered);
	cr_expect_eq(id.start, 0x1234);
	cr_expect_eq(id.worker, 3);
	cr_expect_eq(id.seq, 42);
	spool_done_log_name(name, sizeof(name), 0xfedcba9876543210ull, 65535, 4294967295u);
	cr_assert_eq(spool_done_parse(name, &id), 0, "%s", name);
	cr_expect_eq(id.start, 0xfedcba9876543210ull);
	cr_expect_eq(id.worker, 65535);
	cr_expect_eq(id.seq, 4294967295u);
	/* The names before rotation, a tool's, and recovery's. */
	spool_done_name(name, sizeof(name), 0x1234, 3);
	cr_assert_eq(spool_done_parse(name, &id), 0);
	cr_expect(!id.rotated && !id.recovered);
	cr_expect_eq(id.worker, 3);
	cr_assert_eq(spool_done_parse("done-0000000000001234-00.rmx", &id), 0);
	cr_assert_eq(spool_done_parse("done-0000000000001234-recovered.rmx", &id), 0);
	cr_expect(id.recovered && !id.rotated);
	cr_expect_eq(id.start, 0x1234);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(spool_done_parse(bad[i], &id), -EINVAL, "%s", bad[i]);
}

static struct spool_done done_of(const char *qid, const char *seg, uint64_t off,
                                 enum spool_state result)
{
	struct spool_done d = {.offset = off, .result = result};

	cr_assert_lt(strlen(qid), sizeof(d.qid));
	strcpy(d.qid, qid);
	cr_assert_eq(spool_seg_parse(seg, &d.seg), 0, "%s", seg);
	return d;
}

Test(spool, done_record_roundtrips_and_any_flipped_bit_is_refused)
{
	struct spool_done d = done_of("0123456789012345678901234567890", /* 31 */
	                              "seg-00000000000000ff-07-000009.rmx", 123456789012ull,
	                              SPOOL_BOUNCED),
	                  back;
	unsigned char r[SPOOL_DONE_LEN + 1];

	cr_assert_eq(spool_done_encode(r + 1, &d), 0); /* unaligned on purpose */
	cr_expect_eq(memcmp(r + 1, "RMXD", 4), 0);
	cr_expect_eq(memcmp(r + 1 + 32, d.qid, 31), 0);
	cr_expect_eq(r[1 + 63], 0);
	cr_assert_eq(spool_done_decode(r + 1, &back), 0);
	cr_expect_str_eq(back.qid, d.qid);
	cr_expect_eq(back.seg.start, 0xff);
	cr_expect_eq(back.seg.worker, 7);
	cr_expect_eq(back.seg.seq, 9);
	cr_expect_eq(back.offset, 123456789012ull);
	cr_expect_eq(back.result, SPOOL_BOUNCED);
	for (unsigned i = 0; i < SPOOL_DONE_LEN * 8; i++) {
		r[1 + i / 8] ^= (unsigned char)(1u << (i % 8));
		cr_expect_eq(spool_done_decode(r + 1, &back), -EINVAL, "bit %u", i);
		r[1 + i / 8] ^= (unsigned char)(1u << (i % 8));
	}

	d.result = SPOOL_PENDING;
	cr_expect_eq(spool_done_encode(r, &d), -EINVAL);
	d.result = SPOOL_MOVED + 1;
	cr_expect_eq(spool_done_encode(r, &d), -EINVAL);
	d.result = SPOOL_DELETED;
	d.seg.worker = 65536;
	cr_expect_eq(spool_done_encode(r, &d), -EINVAL);
	d.seg.worker = 1;
	memset(d.qid, 'a', sizeof(d.qid)); /* 32, no NUL */
	cr_expect_eq(spool_done_encode(r, &d), -EINVAL);
	d.qid[0] = '\0';
	cr_expect_eq(spool_done_encode(r, &d), -EINVAL);
}

/* Helpers for the done log and recovery. */

#define SEG0 "seg-0000000000000001-00-000000.rmx" /* three_and_one's first segment */
#define SEG1 "seg-0000000000000001-00-000001.rmx" /* and its second */

/* Appends a done record to the done log of (<start>, <worker>) in <dir>. */
static void mark_done(const char *dir, uint64_t start, unsigned worker, const char *qid,
                      const char *seg, uint64_t off, enum spool_state result)
{
	struct spool_done d = done_of(qid, seg, off, result);
	char name[64];
	int fd;

	spool_done_name(name, sizeof(name), start, worker);
	fd = seg_open(dir, name);
	cr_assert_eq(spool_done_append_fd(fd, &d), 0);
	close(fd);
}

/* The size of <dir>/<name>, or -1 when it does not exist. */
static off_t fsize(const char *dir, const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (stat(path, &st) < 0) {
		cr_assert_eq(errno, ENOENT);
		return -1;
	}
	return st.st_size;
}

/* The number of entries of <dir> whose name starts with <prefix>. */
static unsigned count_files(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d)))
		n += !strncmp(de->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

static void append_bytes(const char *dir, const char *name, const void *p, size_t n)
{
	int fd = seg_open(dir, name);

	cr_assert_eq(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static void read_bytes(const char *dir, const char *name, void *p, size_t n, off_t off)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(pread(fd, p, n, off), (ssize_t)n);
	close(fd);
}

/* Recovery visitor: collects, and checks what every pending message must
 * be. */
static int collect_pending(void *arg, const struct spool_msg *m)
{
	cr_assert_eq(m->state, SPOOL_PENDING);
	cr_assert_null(m->body);
	cr_assert_geq(m->rec_len, SPOOL_HDR_LEN + m->body_len);
	return collect(arg, m);
}

/* Recovery. */

Test(spool, recover_cuts_a_torn_tail_at_every_offset_of_the_last_record)
{
	off_t off[3], len, cut;

	for (cut = 1;; cut++) {
		char *dir = tmp_dir();
		struct got_list l = {0};
		struct spool_recovery r;
		int fd = three_and_one(dir, off, &len);

		if (off[2] + cut >= len) {
			close(fd);
			rm_dir(dir);
			break;
		}
		/* Any prefix of R2 may survive a crash. */
		cr_assert_eq(ftruncate(fd, off[2] + cut), 0);
		close(fd);
		cr_assert_eq(spool_recover(dir, 99, collect_pending, &l, &r), 0);
		cr_assert_eq(fsize(dir, SEG0), off[2], "cut %lld", (long long)cut);
		cr_assert_eq(r.segments, 2);
		cr_assert_eq(r.records, 3);
		cr_assert_eq(r.pending, 3);
		cr_assert_eq(r.done, 0);
		cr_assert_eq(r.torn, 1);
		cr_assert_eq(r.bytes_cut, (uint64_t)cut);
		cr_assert_eq(r.damaged, 0);
		cr_assert_eq(r.deleted, 0);
		cr_assert_eq(l.n, 3);
		cr_assert_str_eq(l.v[0].qid, "R0");
		cr_assert_eq(l.v[0].offset, (uint64_t)off[0]);
		cr_assert_str_eq(l.v[0].segment, SEG0);
		cr_assert_str_eq(l.v[1].qid, "R1");
		cr_assert_eq(l.v[1].offset, (uint64_t)off[1]);
		cr_assert_str_eq(l.v[2].qid, "NEXT");
		cr_assert_str_eq(l.v[2].segment, SEG1);
		got_free(&l);

		/* A second recovery finds nothing to do. */
		cr_assert_eq(spool_recover(dir, 100, collect_pending, &l, &r), 0);
		cr_assert_eq(fsize(dir, SEG0), off[2]);
		cr_assert_eq(r.pending, 3);
		cr_assert_eq(r.torn, 0);
		cr_assert_eq(r.bytes_cut, 0);
		cr_assert(!r.compacted);
		cr_assert_eq(count_files(dir, ""), 4); /* ".", "..", two segments */
		got_free(&l);
		rm_dir(dir);
	}
	cr_assert_gt(cut, 100);
}

Test(spool, recover_reports_record_extents_that_read_back)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;
	unsigned char h[SPOOL_HDR_LEN];

	close(three_and_one(dir, off, &len));
	cr_assert_eq(spool_recover(dir, 1, collect_pending, &l, &r), 0);
	cr_assert_eq(l.n, 4);
	cr_expect_eq(l.v[0].offset + (uint64_t)(off[1] - off[0]), l.v[1].offset);
	for (unsigned i = 0; i < 3; i++) {
		read_bytes(dir, SEG0, h, sizeof(h), (off_t)l.v[i].offset);
		cr_expect_eq(memcmp(h, "RMXR", 4), 0);
	}
	/* rec_len covers the record exactly: the last one ends the file. */
	cr_expect_eq(l.v[2].offset + (off[1] - off[0]), (uint64_t)len);
	got_free(&l);
	rm_dir(dir);
}

Test(spool, recover_cuts_a_zero_filled_tail)
{
	static const char zeros[8192];
	char *dir = tmp_dir();
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	/* What ext4 may show after a crash: blocks allocated, never written. */
	append_bytes(dir, SEG0, zeros, sizeof(zeros));
	cr_assert_eq(spool_recover(dir, 1, collect_pending, &l, &r), 0);
	cr_expect_eq(fsize(dir, SEG0), len);
	cr_expect_eq(r.torn, 1);
	cr_expect_eq(r.bytes_cut, sizeof(zeros));
	cr_expect_eq(r.damaged, 0);
	cr_expect_eq(r.pending, 4);
	cr_expect_eq(count_files(dir, SEG0 ".damaged"), 0);
	got_free(&l);
	rm_dir(dir);
}

Test(spool, recover_sets_a_damaged_middle_aside_before_cutting)
{
	char *dir = tmp_dir(), *orig;
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;
	unsigned char c, *aside;
	int fd = three_and_one(dir, off, &len);

	/* R1 rots; R2 after it is sound: not a torn tail. */
	orig = malloc((size_t)len);
	aside = malloc((size_t)len);
	cr_assert_eq(pread(fd, &c, 1, off[1] + 40), 1);
	c ^= 1;
	cr_assert_eq(pwrite(fd, &c, 1, off[1] + 40), 1);
	cr_assert_eq(pread(fd, orig, (size_t)len, 0), len);
	close(fd);

	cr_assert_eq(spool_recover(dir, 1, collect_pending, &l, &r), 0);
	cr_expect_eq(r.damaged, 1);
	cr_expect_eq(r.torn, 1);
	cr_expect_eq(r.bytes_cut, (uint64_t)(len - off[1]));
	cr_expect_eq(r.pending, 2);
	cr_expect_eq(l.n, 2);
	cr_expect_str_eq(l.v[0].qid, "R0");
	cr_expect_str_eq(l.v[1].qid, "NEXT");
	got_free(&l);
	/* Nothing is lost: the segment keeps its sound head, and the tail
	 * (bad R1, sound R2) is in the .damaged file, byte for byte. */
	cr_expect_eq(fsize(dir, SEG0), off[1]);
	cr_assert_eq(fsize(dir, SEG0 ".damaged"), len - off[1]);
	read_bytes(dir, SEG0 ".damaged", aside, (size_t)(len - off[1]), 0);
	cr_expect_eq(memcmp(aside, orig + off[1], (size_t)(len - off[1])), 0);
	read_bytes(dir, SEG0, aside, (size_t)off[1], 0);
	cr_expect_eq(memcmp(aside, orig, (size_t)off[1]), 0);

	/* Set aside files are not segments, and a second recovery leaves
	 * everything as it is. */
	cr_assert_eq(spool_recover(dir, 2, collect_pending, &l, &r), 0);
	cr_expect_eq(r.pending, 2);
	cr_expect_eq(r.torn, 0);
	cr_expect_eq(r.damaged, 0);
	cr_expect_eq(count_files(dir, SEG0 ".damaged"), 1);
	got_free(&l);

	/* A second damage later does not overwrite the first copy. */
	fd = seg_open(dir, SEG0);
	{
		struct spool_env e = env_n("LATE");
		char path[512];

		seg_append(fd, &e, NULL, 0);
		seg_append(fd, &e, NULL, 0);
		close(fd);
		/* Without O_APPEND: Linux pwrite() would append. */
		snprintf(path, sizeof(path), "%s/%s", dir, SEG0);
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "Z", 1, off[1]), 1); /* LATE's magic */
	close(fd);
	cr_assert_eq(spool_recover(dir, 3, collect_pending, &l, &r), 0);
	cr_expect_eq(r.damaged, 1);
	cr_expect_eq(fsize(dir, SEG0), off[1]);
	cr_expect_eq(fsize(dir, SEG0 ".damaged"), len - off[1]);
	cr_expect_gt(fsize(dir, SEG0 ".damaged.1"), 0);
	got_free(&l);
	free(orig);
	free(aside);
	rm_dir(dir);
}

Test(spool, done_records_hide_messages_from_walk_and_list)
{
	char *dir = tmp_dir(), *s;
	struct got_list l = {0};
	off_t off[3], len;
	time_t now = 1700000000 + 60;
	int ret;

	close(three_and_one(dir, off, &len));
	mark_done(dir, 5, 0, "R1", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	/* Near misses name no message: another offset, segment, queue id. */
	mark_done(dir, 5, 1, "R2", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	mark_done(dir, 5, 1, "R0", SEG1, (uint64_t)off[0], SPOOL_DELIVERED);
	mark_done(dir, 5, 1, "R00", SEG0, (uint64_t)off[0], SPOOL_DELIVERED);
	mark_done(dir, 6, 0, "NEXT", SEG1, 0, SPOOL_BOUNCED);

	cr_assert_eq(spool_walk(dir, true, collect, &l), 0);
	cr_assert_eq(l.n, 2);
	cr_expect_str_eq(l.v[0].qid, "R0");
	cr_expect_str_eq(l.v[1].qid, "R2");
	got_free(&l);

	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s,
	                 "R0 53 alice@example.net 1m bob@example.org,carol@example.org active\n"
	                 "R2 53 alice@example.net 1m bob@example.org,carol@example.org active\n");
	free(s);
	s = list(dir, SPOOL_LIST_ALL, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(
	    s, "R0 53 alice@example.net 1m bob@example.org,carol@example.org active\n"
	       "R1 53 alice@example.net 1m bob@example.org,carol@example.org delivered\n"
	       "R2 53 alice@example.net 1m bob@example.org,carol@example.org active\n"
	       "NEXT 53 alice@example.net 1m bob@example.org,carol@example.org bounced\n");
	free(s);
	s = list(dir, SPOOL_LIST_COUNT, now, &ret);
	cr_expect_str_eq(s, "2\n");
	free(s);
	s = list(dir, SPOOL_LIST_COUNT | SPOOL_LIST_ALL, now, &ret);
	cr_expect_str_eq(s, "4\n");
	free(s);
	rm_dir(dir);
}

/* Defer logs. */

/* Appends <len> bytes of <text> (0: all of it) to the defer log of
 * (<start>, 0) in <dir>. */
static void defer_bytes(const char *dir, uint64_t start, const char *text, size_t len)
{
	char name[64];

	spool_defer_name(name, sizeof(name), start, 0);
	append_bytes(dir, name, text, len ? len : strlen(text));
}

#define defer_lines(dir, start, text) defer_bytes(dir, start, text, 0)

/* The same for a string literal, NULs included. */
#define defer_lit(dir, start, lit) defer_bytes(dir, start, lit, sizeof(lit) - 1)

#define RCPTS " 53 alice@example.net 1m bob@example.org,carol@example.org"

Test(spool, list_shows_deferred_messages_from_the_defer_logs)
{
	char *dir = tmp_dir(), name[64], *s;
	time_t now = 1700000000 + 60;
	off_t off[3], len;
	int ret;

	spool_defer_name(name, sizeof(name), 0x1234, 3);
	cr_expect_str_eq(name, "defer-0000000000001234-03.log");

	close(three_and_one(dir, off, &len));
	mark_done(dir, 5, 0, "R1", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	defer_lit(dir, 5,
	          "R0\t1700000400\t1\t451 4.7.1 first\n"
	          "R0\t1700000500\t2\t451 4.7.1 second\n"
	          "R1\t1700000100\t2\t450 done anyway\n" /* done: stays delivered */
	          "GHOST\t1700000100\t1\tno such message\n"
	          /* Malformed: each would make R2 deferred. */
	          "R2\tabc\t1\tx\n"
	          "R2\t1700000100\t1\n"
	          "R2 1700000100 1 x\n"
	          "\n"
	          "\t1700000100\t1\tx\n"
	          "R2\t-5\t1\tx\n"
	          "R2\t\t1\tx\n"
	          "R2\t1700000100\t1\tx\ty\n"
	          "R2\t1700000100\t4294967296\tx\n"
	          "R2\t99999999999999999999\t1\tx\n"
	          "R2 \t1700000100\t1\tx\n"
	          "0123456789012345678901234567890123\t1700000100\t1\tx\n"
	          "R2\t1700000100\t1\tx\0y\n"
	          /* Torn: a write in progress. */
	          "R2\t1700000100\t7\t451 torn");
	/* A later log wins over an earlier one, a later line over an earlier. */
	defer_lines(dir, 6,
	            "NEXT\t1700000150\t1\t421 4.4.2 first\n"
	            "NEXT\t1700000000\t2\t4.4.1 timed out\n"
	            "R0\t1700003660\t3\t421 \"busy\" \\ \x01here\n");
	/* Not a defer log name: ignored. */
	append_bytes(dir, "defer-0000000000000007-0.log", "R2\t1\t1\tx\n", 9);
	append_bytes(dir, "defer-0000000000000007-00.log.tmp", "R2\t1\t1\tx\n", 9);

	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s,
	                 "R0" RCPTS " deferred next=1h attempts=3 last=\"421 \\\"busy\\\" \\\\ "
	                 "\\x01here\"\n"
	                 "R2" RCPTS " active\n"
	                 "NEXT" RCPTS " deferred next=now attempts=2 last=\"4.4.1 timed out\"\n");
	free(s);
	s = list(dir, SPOOL_LIST_ALL, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s,
	                 "R0" RCPTS " deferred next=1h attempts=3 last=\"421 \\\"busy\\\" \\\\ "
	                 "\\x01here\"\n"
	                 "R1" RCPTS " delivered\n"
	                 "R2" RCPTS " active\n"
	                 "NEXT" RCPTS " deferred next=now attempts=2 last=\"4.4.1 timed out\"\n");
	free(s);
	s = list(dir, SPOOL_LIST_COUNT, now, &ret);
	cr_expect_str_eq(s, "3\n");
	free(s);
	s = list(dir, SPOOL_LIST_COUNT | SPOOL_LIST_ALL, now, &ret);
	cr_expect_str_eq(s, "4\n");
	free(s);

	/* The torn line completed: now it counts, and it is the last of R2. */
	defer_lines(dir, 5, " again\n");
	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_not_null(strstr(s, "R2" RCPTS " deferred next=40s attempts=7 last=\"451 torn "
	                             "again\"\n"),
	                   "%s", s);
	free(s);
	rm_dir(dir);
}

static void append_str(const char *dir, const char *name, const char *text)
{
	append_bytes(dir, name, text, strlen(text));
}

Test(spool, rotated_defer_logs_are_read_in_order_and_a_later_one_wins)
{
	char *dir = tmp_dir(), name[64], *s;
	time_t now = 1700000000 + 60;
	off_t off[3], len;
	int ret;

	spool_defer_log_name(name, sizeof(name), 0x1234, 3, 42);
	cr_expect_str_eq(name, "defer-0000000000001234-03-000042.log");
	close(three_and_one(dir, off, &len));
	spool_defer_log_name(name, sizeof(name), 5, 0, 0);
	append_str(dir, name, "R0\t1700000400\t1\told\nR1\t1700000400\t1\tonly\n");
	spool_defer_log_name(name, sizeof(name), 5, 0, 1);
	append_str(dir, name, "R0\t1700000500\t2\tnew\n");
	/* Not spelled as the naming functions write them: not read. */
	append_str(dir, "defer-0000000000000005-00-2.log", "R2\t1700000500\t9\tx\n");
	append_str(dir, "defer-0000000000000005-00-000003.log.tmp", "R2\t1700000500\t9\tx\n");
	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "R0" RCPTS " deferred next=7m attempts=2 last=\"new\"\n"
	                    "R1" RCPTS " deferred next=5m attempts=1 last=\"only\"\n"
	                    "R2" RCPTS " active\n"
	                    "NEXT" RCPTS " active\n");
	free(s);
	rm_dir(dir);
}

Test(spool, list_next_attempt_reads_like_an_age)
{
	static const struct {
		long long in;
		const char *want;
	} cases[] = {
	    {-100, "now"}, {0, "now"},   {1, "1s"},     {59, "59s"},           {60, "1m"},
	    {3599, "59m"}, {3600, "1h"}, {86400, "1d"}, {5 * 86400 + 1, "5d"},
	};
	char *dir = tmp_dir(), line[128], want[128], *s;
	time_t now = 1700000000 + 60;
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(line, sizeof(line), "R1\t%lld\t%zu\t\n", (long long)now + cases[i].in, i);
		defer_lines(dir, 5, line);
		s = list(dir, 0, now, &ret);
		cr_assert_eq(ret, 0);
		snprintf(want, sizeof(want),
		         "R1" RCPTS " deferred next=%s attempts=%zu last=\"\"\n", cases[i].want, i);
		cr_expect_not_null(strstr(s, want), "case %zu: %s", i, s);
		free(s);
	}
	rm_dir(dir);
}

Test(spool, list_defer_logs_with_many_messages)
{
	char *dir = tmp_dir(), name[64], qid[16], line[64], *s, *p;
	struct spool_env e = env_n("");
	time_t now = 1700000000;
	unsigned n = 0;
	int fd, ret;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	for (unsigned i = 0; i < 300; i++) {
		snprintf(qid, sizeof(qid), "M%03u", i);
		e.qid = qid;
		seg_append(fd, &e, NULL, 0);
		if (i % 3)
			continue;
		snprintf(line, sizeof(line), "M%03u\t%u\t%u\tr%u\n", i, 1700000000 + i, i, i);
		defer_lines(dir, 1 + i % 2, line);
	}
	close(fd);
	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	p = s;
	for (unsigned i = 0; i < 300; i++) {
		char *nl = strchr(p, '\n');

		cr_assert_not_null(nl);
		*nl = '\0';
		snprintf(qid, sizeof(qid), "M%03u ", i);
		cr_assert_eq(strncmp(p, qid, 5), 0, "%s", p);
		if (i % 3 == 0) {
			snprintf(line, sizeof(line), " attempts=%u last=\"r%u\"", i, i);
			cr_expect_not_null(strstr(p, line), "%s", p);
			n++;
		} else {
			cr_expect_not_null(strstr(p, " active"), "%s", p);
		}
		p = nl + 1;
	}
	cr_expect_eq(n, 100);
	cr_expect_str_eq(p, "");
	free(s);
	rm_dir(dir);
}

/* Enough done records that the done set grows past its first tables: each
 * still hides exactly its message. */
Test(spool, many_done_records_hide_exactly_their_messages)
{
	char *dir = tmp_dir(), name[64], qid[16], *s, *p;
	static unsigned char recs[300 * SPOOL_DONE_LEN];
	struct spool_env e = env_n("");
	struct spool_done d;
	off_t off;
	int fd, ret;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	for (unsigned i = 0; i < 600; i++) {
		snprintf(qid, sizeof(qid), "D%03u", i);
		e.qid = qid;
		off = seg_append(fd, &e, NULL, 0);
		if (i % 2)
			continue;
		d = done_of(qid, name, (uint64_t)off, SPOOL_DELIVERED);
		cr_assert_eq(spool_done_encode(recs + i / 2 * SPOOL_DONE_LEN, &d), 0);
	}
	close(fd);
	spool_done_name(name, sizeof(name), 1, 0);
	append_bytes(dir, name, recs, sizeof(recs));
	s = list(dir, 0, 1700000000, &ret);
	cr_assert_eq(ret, 0);
	p = s;
	for (unsigned i = 1; i < 600; i += 2) {
		char *nl = strchr(p, '\n');

		cr_assert_not_null(nl);
		snprintf(qid, sizeof(qid), "D%03u ", i);
		cr_assert_eq(strncmp(p, qid, 5), 0, "want %s, got %.20s", qid, p);
		p = nl + 1;
	}
	cr_expect_str_eq(p, "");
	free(s);
	s = list(dir, SPOOL_LIST_COUNT | SPOOL_LIST_ALL, 1700000000, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "600\n");
	free(s);
	rm_dir(dir);
}

Test(spool, recover_deletes_the_defer_logs_no_pending_message_needs)
{
	char *dir = tmp_dir(), name[64], *before, *after;
	struct spool_recovery r;
	time_t now = 1700000000 + 60;
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	mark_done(dir, 5, 0, "R1", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	defer_lines(dir, 5, "R1\t1700000100\t1\tdelivered since\n");         /* done: goes */
	defer_lines(dir, 6, "R0\t1700000100\t1\t451 wait\n");                /* stays */
	defer_lines(dir, 7, "R2\t1700000100\t1\t451 old\n");                 /* overridden: goes */
	defer_lines(dir, 8, "R2\t1700000200\t2\t451 new\nGHOST\t1\t1\tx\n"); /* stays */
	defer_lines(dir, 9, "GHOST\t1\t1\tx\nbad line\nR0\t1\t1\ttorn");     /* goes */
	append_bytes(dir, "defer-9-0.log", "R0\t1\t1\tx\n", 9);              /* not a log: stays */

	before = list(dir, SPOOL_LIST_ALL, now, &ret);
	cr_assert_eq(ret, 0);
	cr_assert_eq(spool_recover(dir, 0x100, NULL, NULL, &r), 0);
	cr_expect_eq(r.defer_logs, 5);
	cr_expect_eq(r.defer_deleted, 3);
	for (uint64_t start = 5; start <= 9; start++) {
		spool_defer_name(name, sizeof(name), start, 0);
		cr_expect_eq(fsize(dir, name) >= 0, start == 6 || start == 8, "%s", name);
	}
	cr_expect_eq(fsize(dir, "defer-9-0.log"), 9);
	after = list(dir, SPOOL_LIST_ALL, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(after, before);
	cr_expect_not_null(strstr(after, "R2" RCPTS " deferred next=2m attempts=2"), "%s", after);
	free(before);
	free(after);

	/* Again: nothing more to delete. */
	cr_assert_eq(spool_recover(dir, 0x101, NULL, NULL, &r), 0);
	cr_expect_eq(r.defer_logs, 2);
	cr_expect_eq(r.defer_deleted, 0);

	/* Every message done: every defer log goes. */
	mark_done(dir, 5, 0, "R0", SEG0, (uint64_t)off[0], SPOOL_DELIVERED);
	mark_done(dir, 5, 0, "R2", SEG0, (uint64_t)off[2], SPOOL_BOUNCED);
	cr_assert_eq(spool_recover(dir, 0x102, NULL, NULL, &r), 0);
	cr_expect_eq(r.defer_deleted, 2);
	cr_expect_eq(count_files(dir, "defer-0"), 0);
	rm_dir(dir);
}

Test(spool, recover_deletes_segments_whose_records_are_all_done)
{
	char *dir = tmp_dir(), name[64];
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	mark_done(dir, 5, 0, "R0", SEG0, (uint64_t)off[0], SPOOL_DELIVERED);
	mark_done(dir, 5, 1, "R1", SEG0, (uint64_t)off[1], SPOOL_BOUNCED);
	mark_done(dir, 5, 0, "NEXT", SEG1, 0, SPOOL_DELIVERED);
	/* Seen twice (a retry after a crash): one is enough. */
	mark_done(dir, 6, 0, "NEXT", SEG1, 0, SPOOL_DELIVERED);

	/* SEG0 still holds R2: it stays. */
	cr_assert_eq(spool_recover(dir, 7, collect_pending, &l, &r), 0);
	cr_expect_eq(r.segments, 2);
	cr_expect_eq(r.records, 4);
	cr_expect_eq(r.done, 3);
	cr_expect_eq(r.pending, 1);
	cr_expect_eq(r.deleted, 1);
	cr_expect_eq(r.done_logs, 3);
	cr_expect_eq(r.done_kept, 2);
	cr_expect_eq(r.done_dropped, 2); /* NEXT's two */
	cr_expect(r.compacted);
	cr_assert_eq(l.n, 1);
	cr_expect_str_eq(l.v[0].qid, "R2");
	got_free(&l);
	cr_expect_eq(fsize(dir, SEG0), len);
	cr_expect_eq(fsize(dir, SEG1), -1);
	/* One log left, with the two records still needed. */
	cr_expect_eq(count_files(dir, "done-"), 1);
	cr_expect_eq(fsize(dir, "done-0000000000000007-recovered.rmx"), 2 * SPOOL_DONE_LEN);
	spool_done_name(name, sizeof(name), 5, 0);
	cr_expect_eq(fsize(dir, name), -1);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 1);
	cr_expect_str_eq(l.v[0].qid, "R2");
	got_free(&l);

	/* Nothing changed: nothing to do. */
	cr_assert_eq(spool_recover(dir, 8, collect_pending, &l, &r), 0);
	cr_expect(!r.compacted);
	cr_expect_eq(r.deleted, 0);
	cr_expect_eq(r.done_kept, 2);
	cr_expect_eq(r.done_dropped, 0);
	cr_expect_eq(fsize(dir, "done-0000000000000007-recovered.rmx"), 2 * SPOOL_DONE_LEN);
	got_free(&l);

	/* R2 done too: the last segment and the last done log go. */
	mark_done(dir, 8, 0, "R2", SEG0, (uint64_t)off[2], SPOOL_DELETED);
	cr_assert_eq(spool_recover(dir, 9, collect_pending, &l, &r), 0);
	cr_expect_eq(r.deleted, 1);
	cr_expect_eq(r.pending, 0);
	cr_expect_eq(r.done_kept, 0);
	cr_expect_eq(r.done_dropped, 3);
	cr_expect_eq(l.n, 0);
	cr_expect_eq(count_files(dir, ""), 2); /* "." and ".." */
	rm_dir(dir);
}

/* A moved message (io/relay): its record copied verbatim into a later
 * segment; SEG0's R1 copied to the end of SEG1. */
static off_t copy_r1(const char *dir, const off_t off[3])
{
	unsigned char rec[4096];
	size_t n = (size_t)(off[2] - off[1]);
	char path[512];
	off_t at;
	int fd;

	cr_assert_leq(n, sizeof(rec));
	read_bytes(dir, SEG0, rec, n, off[1]);
	snprintf(path, sizeof(path), "%s/%s", dir, SEG1);
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	at = lseek(fd, 0, SEEK_END);
	cr_assert_eq(write(fd, rec, n), (ssize_t)n);
	close(fd);
	return at;
}

Test(spool, a_moved_record_is_pending_once_whether_or_not_its_mark_is_durable)
{
	char *dir = tmp_dir(), *s;
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	copy_r1(dir, off);

	/* The crash came before the SPOOL_MOVED mark: two pending records
	 * with R1's id and crc. The listing shows one, the first. */
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 4);
	cr_expect_str_eq(l.v[1].qid, "R1");
	cr_expect_str_eq(l.v[1].segment, SEG0);
	cr_expect_str_eq(l.v[3].qid, "NEXT");
	got_free(&l);
	s = list(dir, SPOOL_LIST_COUNT, 1700000060, &ret);
	cr_expect_str_eq(s, "4\n");
	free(s);
	s = list(dir, SPOOL_LIST_ALL, 1700000060, &ret);
	cr_expect(strstr(s, "R1 53 alice@example.net 1m bob@example.org,carol@example.org moved\n"),
	          "%s", s);
	free(s);

	/* Recovery hands R1 over once and marks the copy moved, durably. */
	cr_assert_eq(spool_recover(dir, 7, collect_pending, &l, &r), 0);
	cr_expect_eq(r.pending, 4);
	cr_expect_eq(r.done, 1);
	cr_expect(r.compacted);
	cr_assert_eq(l.n, 4);
	cr_expect_eq(l.v[1].offset, (uint64_t)off[1]);
	got_free(&l);
	/* R1 delivered from SEG0: the copy stays done, nothing comes back. */
	mark_done(dir, 8, 0, "R1", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	cr_assert_eq(spool_recover(dir, 9, collect_pending, &l, &r), 0);
	cr_expect_eq(r.pending, 3);
	for (size_t i = 0; i < l.n; i++)
		cr_expect_str_neq(l.v[i].qid, "R1");
	got_free(&l);
	rm_dir(dir);
}

Test(spool, a_moved_record_with_its_mark_is_pending_at_the_copy)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len, at;

	close(three_and_one(dir, off, &len));
	at = copy_r1(dir, off);
	mark_done(dir, 5, 0, "R1", SEG0, (uint64_t)off[1], SPOOL_MOVED);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 4);
	cr_expect_str_eq(l.v[3].qid, "R1");
	cr_expect_str_eq(l.v[3].segment, SEG1);
	cr_expect_eq(l.v[3].offset, (uint64_t)at);
	got_free(&l);
	cr_assert_eq(spool_recover(dir, 7, collect_pending, &l, &r), 0);
	cr_expect_eq(r.pending, 4);
	cr_expect_eq(r.done, 1);
	got_free(&l);
	rm_dir(dir);
}

/* `ringmx queue --delete` marks every pending copy: with one left
 * unmarked, it would come back once the other is done. */
Test(spool, delete_marks_both_copies_of_a_moved_record)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	copy_r1(dir, off);
	cr_assert_eq(spool_delete(dir, "R1", 0x50), 0);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 3);
	for (size_t i = 0; i < l.n; i++)
		cr_expect_str_neq(l.v[i].qid, "R1");
	got_free(&l);
	rm_dir(dir);
}

/* Appends a done record to the rotated done log <seq> of (<start>,
 * <worker>) in <dir>, as a running gateway's committer names them. */
static void mark_done_rotated(const char *dir, uint64_t start, unsigned worker, unsigned seq,
                              const char *qid, const char *seg, uint64_t off)
{
	struct spool_done d = done_of(qid, seg, off, SPOOL_DELIVERED);
	char name[64];
	int fd;

	spool_done_log_name(name, sizeof(name), start, worker, seq);
	fd = seg_open(dir, name);
	cr_assert_eq(spool_done_append_fd(fd, &d), 0);
	close(fd);
}

Test(spool, rotated_done_logs_are_read_and_compacted_with_the_others)
{
	char *dir = tmp_dir(), *s;
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;
	time_t now = 1700000000 + 60;
	int ret;

	close(three_and_one(dir, off, &len));
	/* One message in each kind of name, and a stray name that is no done
	 * log: its record is not read. */
	mark_done_rotated(dir, 5, 1, 0, "R0", SEG0, (uint64_t)off[0]);
	mark_done_rotated(dir, 5, 1, 7, "R1", SEG0, (uint64_t)off[1]);
	mark_done(dir, 4, 0, "NEXT", SEG1, 0, SPOOL_DELIVERED);
	{
		struct spool_done d = done_of("R2", SEG0, (uint64_t)off[2], SPOOL_DELIVERED);
		int fd = seg_open(dir, "done-0000000000000005-01-7.rmx");

		cr_assert_eq(spool_done_append_fd(fd, &d), 0);
		close(fd);
	}
	s = list(dir, SPOOL_LIST_COUNT, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(s, "1\n");
	free(s);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 1);
	cr_expect_str_eq(l.v[0].qid, "R2");
	got_free(&l);

	cr_assert_eq(spool_recover(dir, 9, collect_pending, &l, &r), 0);
	cr_expect_eq(r.done_logs, 3);
	cr_expect_eq(r.done, 3);
	cr_expect_eq(r.pending, 1);
	cr_expect_eq(r.deleted, 1); /* SEG1 */
	cr_expect(r.compacted);
	got_free(&l);
	/* The rotated logs went into the compacted one; the stray name stays. */
	cr_expect_eq(count_files(dir, "done-"), 2);
	cr_expect_eq(fsize(dir, "done-0000000000000009-recovered.rmx"), 2 * SPOOL_DONE_LEN);
	cr_expect_eq(fsize(dir, "done-0000000000000005-01-000000.rmx"), -1);
	cr_expect_eq(fsize(dir, "done-0000000000000005-01-000007.rmx"), -1);
	cr_expect_eq(fsize(dir, "done-0000000000000005-01-7.rmx"), SPOOL_DONE_LEN);
	rm_dir(dir);
}

Test(spool, done_log_torn_and_garbage_records_are_ignored)
{
	static const char zeros[20];
	char *dir = tmp_dir(), name[64];
	struct got_list l = {0};
	struct spool_recovery r;
	struct spool_done d;
	unsigned char rec[SPOOL_DONE_LEN];
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	spool_done_name(name, sizeof(name), 5, 0);
	/* R0's record, then R1's torn after 30 bytes (a short write), then
	 * R2's whole (now misaligned), then a zero-filled tail and half a
	 * record of NEXT. */
	mark_done(dir, 5, 0, "R0", SEG0, (uint64_t)off[0], SPOOL_DELIVERED);
	d = done_of("R1", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	cr_assert_eq(spool_done_encode(rec, &d), 0);
	append_bytes(dir, name, rec, 30);
	mark_done(dir, 5, 0, "R2", SEG0, (uint64_t)off[2], SPOOL_DELIVERED);
	append_bytes(dir, name, zeros, sizeof(zeros));
	d = done_of("NEXT", SEG1, 0, SPOOL_DELIVERED);
	cr_assert_eq(spool_done_encode(rec, &d), 0);
	append_bytes(dir, name, rec, SPOOL_DONE_LEN / 2);

	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 2);
	cr_expect_str_eq(l.v[0].qid, "R1");
	cr_expect_str_eq(l.v[1].qid, "NEXT");
	got_free(&l);

	/* Recovery rewrites the log without the junk. */
	cr_assert_eq(spool_recover(dir, 9, collect_pending, &l, &r), 0);
	cr_expect(r.compacted);
	cr_expect_eq(r.done, 2);
	cr_expect_eq(r.pending, 2);
	cr_expect_eq(r.done_kept, 2);
	cr_expect_eq(fsize(dir, name), -1);
	cr_expect_eq(fsize(dir, "done-0000000000000009-recovered.rmx"), 2 * SPOOL_DONE_LEN);
	got_free(&l);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 2);
	got_free(&l);
	rm_dir(dir);
}

Test(spool, recover_counts_every_kind_of_segment)
{
	static const char text[] = "this is not a spool segment at all, just text\n";
	char *dir = tmp_dir(), name[64];
	struct got_list l = {0};
	struct spool_recovery r;
	struct spool_env e = env_n("OK");
	off_t off[3], len, o;
	unsigned char rec[512];
	uint32_t crc;
	size_t n;
	char *id;
	int fd;

	close(three_and_one(dir, off, &len)); /* 4 pending */
	/* An empty segment (created, then a crash): deleted. */
	spool_seg_name(name, sizeof(name), 2, 0, 0);
	close(seg_open(dir, name));
	/* Garbage only: cut to nothing and deleted. */
	spool_seg_name(name, sizeof(name), 2, 0, 1);
	append_bytes(dir, name, text, sizeof(text) - 1);
	/* A sound frame with an unreadable envelope next to a done record:
	 * kept, since nothing may deliver it, but never handed out. */
	spool_seg_name(name, sizeof(name), 2, 0, 2);
	fd = seg_open(dir, name);
	o = seg_append(fd, &e, NULL, 0);
	close(fd);
	mark_done(dir, 5, 0, "OK", name, (uint64_t)o, SPOOL_DELIVERED);
	fd = seg_open(dir, name);
	e.qid = "BROKEN";
	o = seg_append(fd, &e, NULL, 0);
	close(fd);
	n = (size_t)fsize(dir, name) - (size_t)o;
	read_bytes(dir, name, rec, n, o);
	id = memmem(rec + SPOOL_HDR_LEN, n - SPOOL_HDR_LEN, "id BROKEN\n", 10);
	cr_assert_not_null(id);
	id[1] = 'x';
	memset(rec + 12, 0, 4);
	crc = crc32c(0, rec, n);
	for (int i = 0; i < 4; i++)
		rec[12 + i] = (unsigned char)(crc >> (8 * i));
	{
		char path[512];

		snprintf(path, sizeof(path), "%s/%s", dir, name);
		fd = open(path, O_RDWR | O_CLOEXEC);
		cr_assert_eq(pwrite(fd, rec, n, o), (ssize_t)n);
		close(fd);
	}
	/* Not segments: never touched. */
	append_bytes(dir, "seg-0000000000000002-00-000003.tmp", text, 5);
	append_bytes(dir, "notes.txt", text, 5);
	/* Leftovers of a crashed recovery: removed. */
	append_bytes(dir, "done-0000000000000003-recovered.rmx.tmp", text, 5);
	append_bytes(dir, SEG0 ".damaged.tmp", text, 5);

	cr_assert_eq(spool_recover(dir, 10, collect_pending, &l, &r), 0);
	cr_expect_eq(r.segments, 5);
	cr_expect_eq(r.records, 5);
	cr_expect_eq(r.done, 1);
	cr_expect_eq(r.pending, 4);
	cr_expect_eq(r.unreadable, 1);
	cr_expect_eq(r.torn, 1);
	cr_expect_eq(r.bytes_cut, sizeof(text) - 1);
	cr_expect_eq(r.damaged, 0);
	cr_expect_eq(r.deleted, 2);
	cr_expect_eq(r.done_logs, 1);
	cr_expect_eq(r.done_kept, 1);
	cr_expect_eq(r.done_dropped, 0);
	cr_expect(!r.compacted);
	cr_expect_eq(l.n, 4);
	got_free(&l);
	spool_seg_name(name, sizeof(name), 2, 0, 0);
	cr_expect_eq(fsize(dir, name), -1);
	spool_seg_name(name, sizeof(name), 2, 0, 1);
	cr_expect_eq(fsize(dir, name), -1);
	spool_seg_name(name, sizeof(name), 2, 0, 2);
	cr_expect_gt(fsize(dir, name), 0);
	cr_expect_eq(fsize(dir, "seg-0000000000000002-00-000003.tmp"), 5);
	cr_expect_eq(fsize(dir, "notes.txt"), 5);
	cr_expect_eq(fsize(dir, "done-0000000000000003-recovered.rmx.tmp"), -1);
	cr_expect_eq(fsize(dir, SEG0 ".damaged.tmp"), -1);
	rm_dir(dir);
}

static int stop_at_two(void *arg, const struct spool_msg *m)
{
	unsigned *n = arg;

	return ++*n == 2 ? 7 : 0;
}

Test(spool, recover_stops_when_the_visitor_says_so)
{
	char *dir = tmp_dir();
	struct spool_recovery r;
	off_t off[3], len;
	unsigned n = 0;

	close(three_and_one(dir, off, &len));
	cr_assert_eq(spool_recover(dir, 1, stop_at_two, &n, &r), 7);
	cr_expect_eq(n, 2);
	cr_assert_eq(spool_recover("/nonexistent/ringmx-spool", 1, NULL, NULL, &r), -ENOENT);
	rm_dir(dir);
}

/* Parsing one record in memory: spool_rec_len(), spool_rec_parse(). */

/* <n> bytes copied to the end of a mapping whose next page is PROT_NONE,
 * so that a read past them crashes (picohttpparser's test.c). */
struct guard {
	char *base;
	size_t len;
	unsigned char *p;
};

static struct guard guarded(const void *p, size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), data = (n + pg - 1) / pg * pg;
	struct guard g;

	if (!data)
		data = pg;
	g.len = data + pg;
	g.base = mmap(NULL, g.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(g.base, MAP_FAILED);
	cr_assert_eq(mprotect(g.base + data, pg, PROT_NONE), 0);
	g.p = (unsigned char *)g.base + data - n;
	if (n)
		memcpy(g.p, p, n);
	return g;
}

static void unguard(struct guard *g)
{
	munmap(g->base, g->len);
	g->base = NULL;
}

/* One whole record (header, envelope, body) in a malloc'd buffer. */
static unsigned char *rec_of(const struct spool_env *e, const void *body, size_t body_len,
                             size_t *len)
{
	struct buf rec = BUF_INIT;
	struct iovec b = {(void *)body, body_len};

	cr_assert_eq(spool_rec_build(&rec, e, &b, 1), 0);
	cr_assert_eq(buf_append(&rec, body, body_len), 0);
	*len = rec.len;
	return (unsigned char *)rec.p;
}

static void set_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void set_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Recomputes the crc of the <n>-byte record at <r>. */
static void fix_crc(unsigned char *r, size_t n)
{
	set_le32(r + 12, 0);
	set_le32(r + 12, crc32c(0, r, n));
}

Test(spool, rec_parse_roundtrips_every_field_and_views_the_body)
{
	static const struct spool_env envs[] = {
	    {
	        .qid = "1A2B3C",
	        .arrival = 1700000000,
	        .client = "192.0.2.7",
	        .helo = "mx.example.net",
	        .from = "alice@example.net",
	        .rcpts = "bob@example.org\0carol@example.org",
	        .nrcpt = 2,
	    },
	    {
	        .qid = "QID-NULLSENDER",
	        .arrival = -5,
	        .client = "2001:db8::1",
	        .helo = "helo with spaces and \r inside",
	        .from = "",
	        .rcpts = "j\xc3\xb6rg@b\xc3\xbc cher.example",
	        .nrcpt = 1,
	        .body_8bit = true,
	        .smtputf8 = true,
	    },
	    {
	        .qid = "0123456789012345678901234567890", /* 31: the longest */
	        .arrival = 0,
	        .from = "x@y", /* NULL client and helo: "" */
	        .nrcpt = 0,
	        .body_8bit = true,
	    },
	};
	static const char *const bodies[] = {body1, "x\r\n", ""};
	struct buf scratch = BUF_INIT;
	struct spool_msg m;

	/* One scratch buffer for all: each parse replaces the last. */
	for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
		const struct spool_env *e = &envs[i];
		size_t n, blen = strlen(bodies[i]), rlen;
		unsigned char *rec = rec_of(e, bodies[i], blen, &n);
		struct guard g = guarded(rec, n);
		uint32_t env_len = (uint32_t)g.p[8] | (uint32_t)g.p[9] << 8 |
		                   (uint32_t)g.p[10] << 16 | (uint32_t)g.p[11] << 24;

		memset(&m, 0xa5, sizeof(m));
		cr_assert_eq(spool_rec_parse(g.p, n, &m, &scratch), 0, "record %zu", i);
		cr_expect_str_eq(m.qid, e->qid);
		cr_expect_eq(m.arrival, e->arrival);
		cr_expect_str_eq(m.client, e->client ? e->client : "");
		cr_expect_str_eq(m.helo, e->helo ? e->helo : "");
		cr_expect_str_eq(m.from, e->from);
		cr_expect_eq(m.nrcpt, e->nrcpt);
		rlen = 0;
		for (unsigned k = 0; k < e->nrcpt; k++)
			rlen += strlen(e->rcpts + rlen) + 1;
		cr_expect_eq(memcmp(m.rcpts, e->nrcpt ? e->rcpts : "", rlen ? rlen : 1), 0);
		cr_expect_eq(m.body_8bit, e->body_8bit);
		cr_expect_eq(m.smtputf8, e->smtputf8);
		/* The body is a view into the record, right after the envelope. */
		cr_expect_eq((const unsigned char *)m.body, g.p + SPOOL_HDR_LEN + env_len);
		cr_expect_eq(m.body_len, blen);
		cr_expect_eq(memcmp(m.body, bodies[i], blen), 0);
		cr_expect_eq(m.rec_len, n);
		cr_expect_eq(m.state, SPOOL_PENDING);
		cr_expect_null(m.segment);
		cr_expect_eq(m.offset, 0);
		cr_expect_eq(m.seg.start, 0);
		/* The strings live in scratch, not in the (read-only) record. */
		cr_expect(m.from >= scratch.p && m.from < scratch.p + scratch.len);
		unguard(&g);
		free(rec);
	}
	buf_free(&scratch);
}

Test(spool, rec_parse_reads_one_record_and_ignores_what_follows)
{
	struct spool_env e = env_n("FIRST");
	struct buf two = BUF_INIT, scratch = BUF_INIT;
	struct spool_msg m;
	unsigned char *r;
	size_t n1, n2;
	struct guard g;

	r = rec_of(&e, body1, sizeof(body1) - 1, &n1);
	cr_assert_eq(buf_append(&two, r, n1), 0);
	free(r);
	e.qid = "SECOND";
	r = rec_of(&e, "y\r\n", 3, &n2);
	cr_assert_eq(buf_append(&two, r, n2), 0);
	free(r);
	g = guarded(two.p, two.len);

	cr_assert_eq(spool_rec_parse(g.p, two.len, &m, &scratch), 0);
	cr_expect_str_eq(m.qid, "FIRST");
	cr_expect_eq(m.rec_len, n1);
	cr_assert_eq(spool_rec_parse(g.p + m.rec_len, two.len - n1, &m, &scratch), 0);
	cr_expect_str_eq(m.qid, "SECOND");
	cr_expect_eq(m.rec_len, n2);
	cr_expect_eq(memcmp(m.body, "y\r\n", 3), 0);
	unguard(&g);
	buf_free(&two);
	buf_free(&scratch);
}

Test(spool, rec_parse_every_short_length_is_eagain)
{
	struct spool_env e = env_n("SHORT");
	struct buf scratch = BUF_INIT;
	struct spool_msg m;
	size_t n;
	unsigned char *rec = rec_of(&e, body1, sizeof(body1) - 1, &n);

	/* Each prefix sits against the guard page: nothing past <len> is
	 * read, whatever the header announces. */
	for (size_t len = 0; len < n; len++) {
		struct guard g = guarded(rec, len);

		cr_assert_eq(spool_rec_parse(g.p, len, &m, &scratch), -EAGAIN, "len %zu", len);
		unguard(&g);
	}
	free(rec);
	buf_free(&scratch);
}

Test(spool, rec_parse_refuses_any_flipped_byte)
{
	struct spool_env e = env_n("FLIP");
	struct buf scratch = BUF_INIT;
	struct spool_msg m;
	size_t n;
	unsigned char *rec = rec_of(&e, body1, sizeof(body1) - 1, &n);
	struct guard g = guarded(rec, n);
	int ret;

	for (size_t at = 0; at < n; at++) {
		g.p[at] ^= 0x20;
		ret = spool_rec_parse(g.p, n, &m, &scratch);
		/* A flip in a length field can make the record look longer
		 * than the bytes given (-EAGAIN: read spool_rec_len() bytes,
		 * and the crc refuses it then); any other flip is -EINVAL. */
		if ((at >= 8 && at < 12) || (at >= 16 && at < 24))
			cr_assert(ret == -EINVAL || ret == -EAGAIN, "flip at %zu: %d", at, ret);
		else
			cr_assert_eq(ret, -EINVAL, "flip at %zu: %d", at, ret);
		g.p[at] ^= 0x20;
	}
	cr_assert_eq(spool_rec_parse(g.p, n, &m, &scratch), 0);
	unguard(&g);
	free(rec);
	buf_free(&scratch);
}

Test(spool, rec_parse_refuses_a_sound_frame_with_a_bad_envelope)
{
	/* Each edit keeps the envelope length, and the crc is made to match:
	 * only the envelope is wrong. */
	static const struct {
		const char *from, *to;
	} edits[] = {
	    {"id IDX\n", "xd IDX\n"},                         /* no id */
	    {"arrival 1700000000\n", "arrival 17000000x0\n"}, /* bad number */
	    {"arrival", "arriva_"},                           /* no arrival */
	    {"from alice", "frob alice"},                     /* no from */
	    {"id IDX\n", "id \0DX\n"},                        /* a NUL inside */
	};
	struct spool_env e = env_n("IDX");
	struct buf scratch = BUF_INIT;
	struct spool_msg m;
	size_t n;
	unsigned char *rec = rec_of(&e, body1, sizeof(body1) - 1, &n);

	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		size_t k = strlen(edits[i].from);
		unsigned char *at = memmem(rec, n, edits[i].from, k);

		cr_assert_not_null(at, "edit %zu", i);
		memcpy(at, edits[i].to, k);
		fix_crc(rec, n);
		cr_expect_eq(spool_rec_parse(rec, n, &m, &scratch), -EINVAL, "edit %zu", i);
		memcpy(at, edits[i].from, k);
		fix_crc(rec, n);
		cr_assert_eq(spool_rec_parse(rec, n, &m, &scratch), 0);
	}
	/* An envelope without its last newline. */
	rec[SPOOL_HDR_LEN + strlen("id IDX\narrival 1700000000\nclient 192.0.2.7\nhelo "
	                           "mx.example.net\nfrom alice@example.net\nrcpt "
	                           "bob@example.org\nrcpt carol@example.org\nbody 7BIT\nsmtputf8 "
	                           "0")] = 'x';
	fix_crc(rec, n);
	cr_expect_eq(spool_rec_parse(rec, n, &m, &scratch), -EINVAL);
	free(rec);
	buf_free(&scratch);
}

Test(spool, rec_len_gives_the_record_length_and_refuses_bad_headers)
{
	struct spool_env e = env_n("LEN");
	unsigned char h[SPOOL_HDR_LEN + 1], *rec;
	uint64_t total;
	size_t n;

	rec = rec_of(&e, body1, sizeof(body1) - 1, &n);
	memcpy(h + 1, rec, SPOOL_HDR_LEN); /* unaligned on purpose */
	free(rec);
	cr_assert_eq(spool_rec_len(h + 1, &total), 0);
	cr_expect_eq(total, n);
	/* Only the header is checked: the crc needs the whole record. */
	h[1 + 12] ^= 1;
	cr_expect_eq(spool_rec_len(h + 1, &total), 0);
	h[1 + 12] ^= 1;

	/* The limits themselves pass. */
	set_le32(h + 1 + 8, SPOOL_ENV_MAX);
	set_le64(h + 1 + 16, SPOOL_BODY_MAX);
	cr_assert_eq(spool_rec_len(h + 1, &total), 0);
	cr_expect_eq(total, SPOOL_HDR_LEN + SPOOL_ENV_MAX + SPOOL_BODY_MAX);

	total = 12345;
	set_le32(h + 1 + 8, SPOOL_ENV_MAX + 1);
	cr_expect_eq(spool_rec_len(h + 1, &total), -EINVAL);
	set_le32(h + 1 + 8, SPOOL_ENV_MAX);
	set_le64(h + 1 + 16, SPOOL_BODY_MAX + 1);
	cr_expect_eq(spool_rec_len(h + 1, &total), -EINVAL);
	set_le64(h + 1 + 16, UINT64_MAX);
	cr_expect_eq(spool_rec_len(h + 1, &total), -EINVAL);
	set_le64(h + 1 + 16, 0);
	set_le32(h + 1 + 4, SPOOL_VERSION + 1);
	cr_expect_eq(spool_rec_len(h + 1, &total), -EINVAL);
	set_le32(h + 1 + 4, SPOOL_VERSION);
	for (int i = 0; i < 4; i++) {
		h[1 + i] ^= 0x01;
		cr_expect_eq(spool_rec_len(h + 1, &total), -EINVAL, "magic byte %d", i);
		h[1 + i] ^= 0x01;
	}
	memset(h, 0, sizeof(h)); /* a zero-filled block */
	cr_expect_eq(spool_rec_len(h + 1, &total), -EINVAL);
	cr_expect_eq(total, 12345); /* untouched on error */
}

/* spool_rec_crc_start() + crc32c() + spool_rec_verify(): the check a reader
 * carries over a record it sees in pieces. */
Test(spool, rec_verify_holds_at_every_split_and_refuses_any_flipped_byte)
{
	struct spool_env e = env_n("VERIFY");
	unsigned char h[SPOOL_HDR_LEN + 1], *rec;
	uint32_t crc;
	size_t n;

	rec = rec_of(&e, body1, sizeof(body1) - 1, &n);
	memcpy(h + 1, rec, SPOOL_HDR_LEN); /* unaligned on purpose */
	for (size_t at = SPOOL_HDR_LEN; at <= n; at++) {
		crc = crc32c(spool_rec_crc_start(h + 1), rec + SPOOL_HDR_LEN, at - SPOOL_HDR_LEN);
		crc = crc32c(crc, rec + at, n - at);
		cr_assert_eq(spool_rec_verify(h + 1, crc), 0, "split at %zu", at);
	}
	/* The header is read, never written (the crc field stays). */
	cr_expect_eq(memcmp(h + 1, rec, SPOOL_HDR_LEN), 0);
	for (size_t at = 0; at < n; at++) {
		rec[at] ^= 0x01;
		crc = crc32c(spool_rec_crc_start(rec), rec + SPOOL_HDR_LEN, n - SPOOL_HDR_LEN);
		cr_expect_eq(spool_rec_verify(rec, crc), -EINVAL, "flip at %zu", at);
		rec[at] ^= 0x01;
	}
	free(rec);
}

/* What the io layer does: read the header at a known offset, then the
 * rest, and parse. The same messages come out as from the walker. */
Test(spool, rec_parse_of_each_record_read_at_its_offset_matches_the_walk)
{
	char *dir = tmp_dir(), path[512];
	struct buf scratch = BUF_INIT;
	struct got_list l = {0};
	unsigned char h[SPOOL_HDR_LEN], *rec;
	struct spool_msg m;
	off_t off[3], len;
	uint64_t total;
	int fd = three_and_one(dir, off, &len);

	close(fd);
	cr_assert_eq(spool_walk(dir, true, collect, &l), 0);
	cr_assert_eq(l.n, 4);
	snprintf(path, sizeof(path), "%s/%s", dir, SEG0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(pread(fd, h, sizeof(h), off[i]), (ssize_t)sizeof(h));
		cr_assert_eq(spool_rec_len(h, &total), 0);
		cr_assert_eq(total, (uint64_t)((i < 2 ? off[i + 1] : len) - off[i]));
		rec = malloc(total);
		memcpy(rec, h, sizeof(h));
		cr_assert_eq(pread(fd, rec + sizeof(h), total - sizeof(h), off[i] + SPOOL_HDR_LEN),
		             (ssize_t)(total - sizeof(h)));
		cr_assert_eq(spool_rec_parse(rec, total, &m, &scratch), 0);
		cr_expect_str_eq(m.qid, l.v[i].qid);
		cr_expect_eq(m.arrival, l.v[i].arrival);
		cr_expect_str_eq(m.client, l.v[i].client);
		cr_expect_str_eq(m.helo, l.v[i].helo);
		cr_expect_str_eq(m.from, l.v[i].from);
		cr_expect_eq(m.nrcpt, l.v[i].nrcpt);
		cr_expect_eq(memcmp(m.rcpts, l.v[i].rcpts, l.v[i].rcpts_len), 0);
		cr_expect_eq(m.body_len, l.v[i].body_len);
		cr_expect_eq(memcmp(m.body, l.v[i].body, m.body_len), 0);
		free(rec);
	}
	close(fd);
	got_free(&l);
	buf_free(&scratch);
	rm_dir(dir);
}

/* spool_rec_env_end() + spool_rec_parse_env(): what io/relay.c does, which
 * streams the body in chunks and never holds it whole. */

Test(spool, rec_env_end_says_where_the_body_starts_and_refuses_bad_headers)
{
	struct spool_env e = env_n("ENVEND");
	unsigned char h[SPOOL_HDR_LEN + 1], *rec;
	uint64_t at = 777, total;
	size_t n;

	rec = rec_of(&e, body1, sizeof(body1) - 1, &n);
	memcpy(h + 1, rec, SPOOL_HDR_LEN); /* unaligned on purpose */
	cr_assert_eq(spool_rec_env_end(h + 1, &at), 0);
	cr_assert_eq(spool_rec_len(h + 1, &total), 0);
	cr_expect_eq(at, n - (sizeof(body1) - 1));
	cr_expect_eq(total - at, sizeof(body1) - 1);
	cr_expect_eq(memcmp(rec + at, body1, sizeof(body1) - 1), 0);
	free(rec);
	at = 777;
	h[1] ^= 0x01; /* magic */
	cr_expect_eq(spool_rec_env_end(h + 1, &at), -EINVAL);
	h[1] ^= 0x01;
	set_le32(h + 1 + 8, SPOOL_ENV_MAX + 1);
	cr_expect_eq(spool_rec_env_end(h + 1, &at), -EINVAL);
	cr_expect_eq(at, 777); /* untouched on error */
}

Test(spool, rec_parse_env_matches_rec_parse_from_the_envelope_alone)
{
	static const struct spool_env envs[] = {
	    {
	        .qid = "ENV1",
	        .arrival = 1700000000,
	        .client = "192.0.2.7",
	        .helo = "mx.example.net",
	        .from = "alice@example.net",
	        .rcpts = "bob@example.org\0carol@example.org",
	        .nrcpt = 2,
	        .body_8bit = true,
	    },
	    {
	        .qid = "ENV2",
	        .arrival = -5,
	        .from = "",
	        .rcpts = "j\xc3\xb6rg@b\xc3\xbc cher.example",
	        .nrcpt = 1,
	        .smtputf8 = true,
	    },
	};
	static const char *const bodies[] = {body1, ""};
	struct buf scratch = BUF_INIT, sc2 = BUF_INIT;
	struct spool_msg m, whole;

	for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
		size_t n, blen = strlen(bodies[i]);
		unsigned char *rec = rec_of(&envs[i], bodies[i], blen, &n);
		uint64_t at;
		uint32_t crc;

		cr_assert_eq(spool_rec_env_end(rec, &at), 0);
		/* Only the header and envelope, against the guard page: the
		 * body is never looked at. */
		struct guard g = guarded(rec, (size_t)at);

		memset(&m, 0xa5, sizeof(m));
		cr_assert_eq(spool_rec_parse_env(g.p, (size_t)at, &m, &scratch, &crc), 0, "rec %zu",
		             i);
		cr_assert_eq(spool_rec_parse(rec, n, &whole, &sc2), 0);
		cr_expect_str_eq(m.qid, whole.qid);
		cr_expect_eq(m.arrival, whole.arrival);
		cr_expect_str_eq(m.client, whole.client);
		cr_expect_str_eq(m.helo, whole.helo);
		cr_expect_str_eq(m.from, whole.from);
		cr_expect_eq(m.nrcpt, whole.nrcpt);
		cr_expect_eq(memcmp(m.rcpts, whole.rcpts, strlen(whole.rcpts) + 1), 0);
		cr_expect_eq(m.body_8bit, whole.body_8bit);
		cr_expect_eq(m.smtputf8, whole.smtputf8);
		cr_expect_null(m.body);
		cr_expect_eq(m.body_len, blen);
		cr_expect_eq(m.rec_len, n);
		cr_expect_eq(m.rec_len - m.body_len, at);
		cr_expect_eq(m.state, SPOOL_PENDING);
		cr_expect_null(m.segment);
		cr_expect(m.from >= scratch.p && m.from < scratch.p + scratch.len);
		/* The crc so far, carried over the body, is the record's. */
		cr_expect_eq(spool_rec_verify(rec, crc32c(crc, rec + at, blen)), 0);
		unguard(&g);
		/* Bytes after the envelope (the body, or anything) are ignored. */
		cr_assert_eq(spool_rec_parse_env(rec, n, &m, &scratch, &crc), 0);
		cr_expect_null(m.body);
		free(rec);
	}
	buf_free(&scratch);
	buf_free(&sc2);
}

Test(spool, rec_parse_env_every_short_length_is_eagain)
{
	struct spool_env e = env_n("ENVSHORT");
	struct buf scratch = BUF_INIT;
	struct spool_msg m;
	uint64_t at;
	uint32_t crc;
	size_t n;
	unsigned char *rec = rec_of(&e, body1, sizeof(body1) - 1, &n);

	cr_assert_eq(spool_rec_env_end(rec, &at), 0);
	for (size_t len = 0; len < at; len++) {
		struct guard g = guarded(rec, len);

		cr_assert_eq(spool_rec_parse_env(g.p, len, &m, &scratch, &crc), -EAGAIN, "len %zu",
		             len);
		unguard(&g);
	}
	free(rec);
	buf_free(&scratch);
}

Test(spool, rec_parse_env_leaves_body_damage_to_the_streamed_crc)
{
	struct spool_env e = env_n("ENVFLIP");
	struct buf scratch = BUF_INIT;
	struct spool_msg m;
	uint64_t at;
	uint32_t crc;
	size_t n;
	unsigned char *rec = rec_of(&e, body1, sizeof(body1) - 1, &n);

	cr_assert_eq(spool_rec_env_end(rec, &at), 0);
	/* A flip anywhere after the header: the envelope may still parse,
	 * but the crc carried over the rest refuses the record, whichever
	 * way the body is split into chunks. */
	for (size_t k = SPOOL_HDR_LEN; k < n; k++) {
		rec[k] ^= 0x20;
		if (spool_rec_parse_env(rec, (size_t)at, &m, &scratch, &crc) == 0) {
			size_t half = (size_t)(n - at) / 2;

			crc = crc32c(crc, rec + at, half);
			crc = crc32c(crc, rec + at + half, n - at - half);
			cr_expect_eq(spool_rec_verify(rec, crc), -EINVAL, "flip at %zu", k);
		}
		rec[k] ^= 0x20;
	}
	/* A sound frame whose envelope does not parse. */
	{
		unsigned char *id = memmem(rec, n, "id ENVFLIP\n", 11);

		cr_assert_not_null(id);
		id[0] = 'x';
		fix_crc(rec, n);
		cr_expect_eq(spool_rec_parse_env(rec, (size_t)at, &m, &scratch, &crc), -EINVAL);
		id[0] = 'i';
		fix_crc(rec, n);
	}
	/* A bad header. */
	rec[0] ^= 0x01;
	cr_expect_eq(spool_rec_parse_env(rec, (size_t)at, &m, &scratch, &crc), -EINVAL);
	rec[0] ^= 0x01;
	cr_assert_eq(spool_rec_parse_env(rec, (size_t)at, &m, &scratch, &crc), 0);
	cr_expect_eq(spool_rec_verify(rec, crc32c(crc, rec + at, n - at)), 0);
	free(rec);
	buf_free(&scratch);
}

/* Deleting from the CLI: spool_delete(), spool_mark(). */

Test(spool, delete_hides_the_message_and_a_second_delete_is_enoent)
{
	char *dir = tmp_dir(), *s, name[64];
	struct got_list l = {0};
	struct spool_done d;
	unsigned char r[SPOOL_DONE_LEN];
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	cr_assert_eq(spool_delete(dir, "R1", 0x50), 0);

	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 3);
	cr_expect_str_eq(l.v[0].qid, "R0");
	cr_expect_str_eq(l.v[1].qid, "R2");
	cr_expect_str_eq(l.v[2].qid, "NEXT");
	got_free(&l);
	s = list(dir, SPOOL_LIST_ALL, 1700000000, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_not_null(strstr(s, "R1 "));
	cr_expect_not_null(strstr(s, " deleted\n"));
	free(s);
	s = list(dir, SPOOL_LIST_COUNT, 1700000000, &ret);
	cr_expect_str_eq(s, "3\n");
	free(s);

	/* Written to the tool's own log, naming the record exactly. */
	spool_done_name(name, sizeof(name), 0x50, 0);
	cr_assert_eq(fsize(dir, name), SPOOL_DONE_LEN);
	read_bytes(dir, name, r, sizeof(r), 0);
	cr_assert_eq(spool_done_decode(r, &d), 0);
	cr_expect_str_eq(d.qid, "R1");
	cr_expect_eq(d.result, SPOOL_DELETED);
	cr_expect_eq(d.offset, (uint64_t)off[1]);
	cr_expect_eq(d.seg.start, 1);
	cr_expect_eq(d.seg.worker, 0);
	cr_expect_eq(d.seg.seq, 0);

	/* No longer pending: nothing to delete, nothing written. */
	cr_expect_eq(spool_delete(dir, "R1", 0x50), -ENOENT);
	cr_expect_eq(spool_delete(dir, "R1", 0x51), -ENOENT);
	cr_expect_eq(fsize(dir, name), SPOOL_DONE_LEN);
	cr_expect_eq(count_files(dir, "done-"), 1);
	rm_dir(dir);
}

Test(spool, delete_of_an_unknown_id_is_enoent_and_writes_nothing)
{
	char *dir = tmp_dir(), long_id[40];
	off_t off[3], len;

	cr_expect_eq(spool_delete(dir, "R0", 1), -ENOENT); /* empty spool */
	close(three_and_one(dir, off, &len));
	memset(long_id, 'R', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	cr_expect_eq(spool_delete(dir, "R9", 1), -ENOENT);
	cr_expect_eq(spool_delete(dir, "R", 1), -ENOENT); /* a prefix is not the id */
	cr_expect_eq(spool_delete(dir, "R0 ", 1), -ENOENT);
	cr_expect_eq(spool_delete(dir, "", 1), -ENOENT);
	cr_expect_eq(spool_delete(dir, long_id, 1), -ENOENT);
	cr_expect_eq(spool_delete(dir, NULL, 1), -EINVAL);
	cr_expect_eq(count_files(dir, "done-"), 0);
	cr_expect_eq(spool_delete("/nonexistent/ringmx-spool", "R0", 1), -ENOENT);
	rm_dir(dir);
}

Test(spool, delete_of_a_repeated_id_deletes_every_pending_copy)
{
	char *dir = tmp_dir(), name[64];
	struct spool_env e = env_n("SAME");
	struct iovec b = {(void *)body1, sizeof(body1) - 1};
	struct got_list l = {0};
	int fd;

	/* Two gateway starts gave out the same id. */
	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	seg_append(fd, &e, &b, 1);
	close(fd);
	spool_seg_name(name, sizeof(name), 2, 3, 0);
	fd = seg_open(dir, name);
	e.qid = "OTHER";
	seg_append(fd, &e, &b, 1);
	e.qid = "SAME";
	seg_append(fd, &e, &b, 1);
	close(fd);

	cr_assert_eq(spool_delete(dir, "SAME", 9), 0);
	spool_done_name(name, sizeof(name), 9, 0);
	cr_expect_eq(fsize(dir, name), 2 * SPOOL_DONE_LEN);
	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 1);
	cr_expect_str_eq(l.v[0].qid, "OTHER");
	got_free(&l);
	cr_expect_eq(spool_delete(dir, "SAME", 9), -ENOENT);
	rm_dir(dir);
}

Test(spool, recover_after_deleting_every_message_of_a_segment_deletes_it)
{
	char *dir = tmp_dir();
	struct got_list l = {0};
	struct spool_recovery r;
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	/* Separate tool runs, separate logs. */
	cr_assert_eq(spool_delete(dir, "R0", 100), 0);
	cr_assert_eq(spool_delete(dir, "R2", 101), 0);
	cr_assert_eq(spool_delete(dir, "R1", 101), 0);
	cr_expect_eq(count_files(dir, "done-"), 2);

	cr_assert_eq(spool_recover(dir, 200, collect_pending, &l, &r), 0);
	cr_expect_eq(r.segments, 2);
	cr_expect_eq(r.done, 3);
	cr_expect_eq(r.pending, 1);
	cr_expect_eq(r.deleted, 1);
	cr_expect_eq(r.done_logs, 2);
	cr_expect_eq(r.done_kept, 0);
	cr_expect_eq(r.done_dropped, 3);
	cr_assert_eq(l.n, 1);
	cr_expect_str_eq(l.v[0].qid, "NEXT");
	got_free(&l);
	cr_expect_eq(fsize(dir, SEG0), -1);
	cr_expect_eq(fsize(dir, SEG1) > 0, true);
	/* No done record is needed any more: no log is left. */
	cr_expect_eq(count_files(dir, "done-"), 0);

	/* The last one too: the spool is empty. */
	cr_assert_eq(spool_delete(dir, "NEXT", 300), 0);
	cr_assert_eq(spool_recover(dir, 301, collect_pending, &l, &r), 0);
	cr_expect_eq(r.deleted, 1);
	cr_expect_eq(l.n, 0);
	cr_expect_eq(count_files(dir, ""), 2); /* "." and ".." */
	rm_dir(dir);
}

Test(spool, mark_writes_a_durable_done_record_as_given)
{
	char *dir = tmp_dir(), name[64];
	struct got_list l = {0};
	struct spool_done d;
	off_t off[3], len;
	int ret;
	char *s;

	close(three_and_one(dir, off, &len));
	d = done_of("R2", SEG0, (uint64_t)off[2], SPOOL_DELIVERED);
	d.result = SPOOL_PENDING; /* not a result: nothing is written */
	cr_expect_eq(spool_mark(dir, &d, 4), -EINVAL);
	cr_expect_eq(count_files(dir, "done-"), 0);
	d.result = SPOOL_DELIVERED;
	cr_assert_eq(spool_mark(dir, &d, 4), 0);
	/* A record that names no message (wrong offset) hides nothing. */
	d = done_of("R0", SEG0, (uint64_t)off[0] + 1, SPOOL_DELETED);
	cr_assert_eq(spool_mark(dir, &d, 4), 0);
	spool_done_name(name, sizeof(name), 4, 0);
	cr_expect_eq(fsize(dir, name), 2 * SPOOL_DONE_LEN);

	cr_assert_eq(spool_walk(dir, false, collect, &l), 0);
	cr_assert_eq(l.n, 3);
	cr_expect_str_eq(l.v[0].qid, "R0");
	cr_expect_str_eq(l.v[1].qid, "R1");
	cr_expect_str_eq(l.v[2].qid, "NEXT");
	got_free(&l);
	s = list(dir, SPOOL_LIST_ALL, 1700000000, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_not_null(strstr(s, " delivered\n"));
	free(s);
	cr_expect_eq(spool_mark("/nonexistent/ringmx-spool", &d, 4), -ENOENT);
	rm_dir(dir);
}

Test(spool, quarantine_reason_round_trips_and_defaults_to_none)
{
	struct spool_env e = env_n("Q8");
	struct iovec body = {(void *)body1, sizeof(body1) - 1};
	struct buf rec = BUF_INIT, scratch = BUF_INIT;
	struct spool_msg m;

	cr_assert_eq(spool_rec_build(&rec, &e, &body, 1), 0);
	cr_assert_eq(buf_append(&rec, body1, sizeof(body1) - 1), 0); /* (the body goes as is) */
	cr_assert_eq(spool_rec_parse(rec.p, rec.len, &m, &scratch), 0);
	cr_assert_str_eq(m.quarantine, ""); /* not held */
	rec.len = 0;
	e.quarantine = "held by the filter";
	cr_assert_eq(spool_rec_build(&rec, &e, &body, 1), 0);
	cr_assert_eq(buf_append(&rec, body1, sizeof(body1) - 1), 0); /* (the body goes as is) */
	cr_assert_eq(spool_rec_parse(rec.p, rec.len, &m, &scratch), 0);
	cr_assert_str_eq(m.quarantine, "held by the filter");
	rec.len = 0;
	e.quarantine = "two\nlines"; /* would forge an envelope line */
	cr_assert_eq(spool_rec_build(&rec, &e, &body, 1), -EINVAL);
	buf_free(&rec);
	buf_free(&scratch);
}

/* Hold logs (`ringmx queue hold`, queue/spool_hold.c). */

static void hold(const char *dir, uint64_t start, const char *qid, uint64_t stamp, bool on)
{
	struct spool_hold h = {.stamp = stamp, .op = on ? SPOOL_HOLD_ON : SPOOL_HOLD_OFF};

	snprintf(h.qid, sizeof(h.qid), "%s", qid);
	cr_assert_eq(spool_hold_write(dir, &h, 1, start), 0);
}

static bool held(const char *dir, const char *qid)
{
	struct spool_holds *h;
	bool v;

	cr_assert_eq(spool_holds_load(dir, &h), 0);
	v = spool_holds_held(h, qid);
	spool_holds_free(h);
	return v;
}

Test(spool, hold_record_roundtrips_and_any_flipped_bit_is_refused)
{
	struct spool_hold h = {.qid = "6B16A2C0002ABE5F",
	                       .stamp = 0x0102030405060708ull,
	                       .op = SPOOL_HOLD_ON},
	                  got;
	unsigned char r[SPOOL_HOLD_LEN], c[SPOOL_HOLD_LEN];

	cr_assert_eq(spool_hold_encode(r, &h), 0);
	cr_expect_eq(memcmp(r, "RMXH", 4), 0);
	cr_expect_eq(r[8], 0x08); /* little-endian stamp */
	cr_assert_eq(spool_hold_decode(r, &got), 0);
	cr_expect_str_eq(got.qid, h.qid);
	cr_expect_eq(got.stamp, h.stamp);
	cr_expect_eq(got.op, SPOOL_HOLD_ON);
	for (size_t bit = 0; bit < SPOOL_HOLD_LEN * 8; bit++) {
		memcpy(c, r, sizeof(c));
		c[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		cr_expect_eq(spool_hold_decode(c, &got), -EINVAL, "bit %zu", bit);
	}
	h.op = (enum spool_hold_op)3;
	cr_expect_eq(spool_hold_encode(r, &h), -EINVAL);
	h.op = SPOOL_HOLD_OFF;
	h.qid[0] = '\0';
	cr_expect_eq(spool_hold_encode(r, &h), -EINVAL);
}

Test(spool, the_hold_record_with_the_largest_stamp_wins)
{
	char *dir = tmp_dir(), *s;
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	cr_expect_not(held(dir, "R0"));
	hold(dir, 10, "R0", 100, true);
	hold(dir, 10, "R2", 100, true);
	hold(dir, 11, "R2", 200, false);
	/* An older stamp in a later log (a clock stepped back) loses. */
	hold(dir, 12, "R0", 50, false);
	/* Equal stamps: the one read last wins. */
	hold(dir, 12, "R1", 300, true);
	hold(dir, 13, "R1", 300, false);
	/* Torn and garbage bytes cost only themselves. */
	append_bytes(dir, "hold-000000000000000d.rmx", "RMXHgarbage", 11);
	hold(dir, 13, "NEXT", 400, true);
	cr_expect(held(dir, "R0"));
	cr_expect_not(held(dir, "R1"));
	cr_expect_not(held(dir, "R2"));
	cr_expect(held(dir, "NEXT"));
	/* Not a hold log's name: ignored. */
	append_bytes(dir, "hold-0e.rmx", "", 0);
	s = list(dir, 0, 1700000060, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_not_null(strstr(s, "R0" RCPTS " held\n"), "%s", s);
	cr_expect_not_null(strstr(s, "R1" RCPTS " active\n"), "%s", s);
	cr_expect_not_null(strstr(s, "NEXT" RCPTS " held\n"), "%s", s);
	free(s);
	rm_dir(dir);
}

static size_t pick(const char *dir, const struct spool_select *sel, char *out, size_t cap)
{
	struct spool_pick *v = NULL;
	size_t n = 0;

	cr_assert_eq(spool_pick(dir, sel, 1700000000 + 3600, false, &v, &n), 0);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		strncat(out, v[i].qid, cap - strlen(out) - 2);
		strcat(out, " ");
	}
	free(v);
	return n;
}

Test(spool, selectors_pick_by_sender_recipient_age_state_and_id)
{
	char *dir = tmp_dir(), name[64], got[256];
	struct iovec b = {(void *)body1, sizeof(body1) - 1};
	struct spool_env e = env_n("A");
	const char *ids[] = {"B", "D", "NONE"};
	int fd;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	seg_append(fd, &e, &b, 1); /* A: alice -> bob, carol @example.org, an hour old */
	e.qid = "B";
	e.from = "";
	e.rcpts = "dave@other.test";
	e.nrcpt = 1;
	seg_append(fd, &e, &b, 1); /* B: <> -> other.test */
	e.qid = "C";
	e.from = "Eve@Example.NET";
	e.arrival = 1700000000 + 3600 - 60;
	seg_append(fd, &e, &b, 1); /* C: a minute old */
	e.qid = "D";
	e.arrival = 1700000000;
	seg_append(fd, &e, &b, 1);
	close(fd);
	defer_lines(dir, 5, "B\t1700009999\t2\t451 later\n");
	hold(dir, 9, "D", 1, true);

	cr_expect_eq(pick(dir, &(struct spool_select){0}, got, sizeof(got)), 4);
	cr_expect_str_eq(got, "A B C D ");
	pick(dir, &(struct spool_select){.from = "<>"}, got, sizeof(got));
	cr_expect_str_eq(got, "B ");
	pick(dir, &(struct spool_select){.from = "example.net"}, got, sizeof(got));
	cr_expect_str_eq(got, "A C D ");
	pick(dir, &(struct spool_select){.from = "eve@example.net"}, got, sizeof(got));
	cr_expect_str_eq(got, "C D ");
	pick(dir, &(struct spool_select){.to = "carol@example.org"}, got, sizeof(got));
	cr_expect_str_eq(got, "A ");
	pick(dir, &(struct spool_select){.to = "@other.test"}, got, sizeof(got));
	cr_expect_str_eq(got, "B C D ");
	pick(dir, &(struct spool_select){.older_than = 600}, got, sizeof(got));
	cr_expect_str_eq(got, "A B D ");
	pick(dir, &(struct spool_select){.states = SPOOL_SEL_DEFERRED}, got, sizeof(got));
	cr_expect_str_eq(got, "B ");
	pick(dir, &(struct spool_select){.states = SPOOL_SEL_HELD}, got, sizeof(got));
	cr_expect_str_eq(got, "D ");
	pick(dir, &(struct spool_select){.states = SPOOL_SEL_ACTIVE | SPOOL_SEL_HELD}, got,
	     sizeof(got));
	cr_expect_str_eq(got, "A C D ");
	pick(dir, &(struct spool_select){.ids = ids, .nids = 3}, got, sizeof(got));
	cr_expect_str_eq(got, "B D ");
	pick(dir,
	     &(struct spool_select){.ids = ids,
	                            .nids = 3,
	                            .to = "other.test",
	                            .older_than = 60,
	                            .states = SPOOL_SEL_HELD},
	     got, sizeof(got));
	cr_expect_str_eq(got, "D ");
	rm_dir(dir);
}

Test(spool, hold_picks_stamp_past_every_stamp_read)
{
	char *dir = tmp_dir();
	struct spool_pick p = {.qid = "R0"};
	struct spool_holds *h;
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	hold(dir, 10, "R0", 1000000, true);
	/* A release at an earlier clock than the hold still wins. */
	cr_assert_eq(spool_hold_picks(dir, &p, 1, false, 11, 5), 0);
	cr_expect_not(held(dir, "R0"));
	cr_assert_eq(spool_holds_load(dir, &h), 0);
	cr_expect_eq(spool_holds_stamp(h), 1000001);
	cr_expect_eq(spool_holds_count(h), 0);
	spool_holds_free(h);
	cr_assert_eq(spool_hold_picks(dir, &p, 1, true, 12, 2000000), 0);
	cr_expect(held(dir, "R0"));
	rm_dir(dir);
}

Test(spool, recover_keeps_the_holds_of_pending_messages_only)
{
	char *dir = tmp_dir(), *before, *after;
	struct spool_recovery r;
	time_t now = 1700000000 + 60;
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	hold(dir, 10, "R0", 100, true);
	hold(dir, 10, "R1", 100, true);
	hold(dir, 11, "R2", 100, true);
	hold(dir, 11, "R2", 200, false);
	hold(dir, 11, "GHOST", 200, true);
	append_bytes(dir, "hold-000000000000000b.rmx", "torn", 4);
	mark_done(dir, 5, 0, "R1", SEG0, (uint64_t)off[1], SPOOL_DELIVERED);
	before = list(dir, SPOOL_LIST_ALL, now, &ret);
	cr_assert_eq(ret, 0);
	cr_assert_eq(spool_recover(dir, 0x100, NULL, NULL, &r), 0);
	cr_expect_eq(r.held, 1);
	cr_expect_eq(count_files(dir, "hold-"), 1);
	cr_expect_eq(fsize(dir, "hold-0000000000000100-recovered.rmx"), SPOOL_HOLD_LEN);
	after = list(dir, SPOOL_LIST_ALL, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_str_eq(after, before);
	cr_expect_not_null(strstr(after, "R0" RCPTS " held\n"), "%s", after);
	free(before);
	free(after);

	/* Again: nothing changes. */
	cr_assert_eq(spool_recover(dir, 0x101, NULL, NULL, &r), 0);
	cr_expect_eq(r.held, 1);
	cr_expect_eq(fsize(dir, "hold-0000000000000100-recovered.rmx"), SPOOL_HOLD_LEN);

	/* A release after recovery wins over the kept hold (its stamp). */
	hold(dir, 0x200, "R0", 101, false);
	cr_expect_not(held(dir, "R0"));
	cr_assert_eq(spool_recover(dir, 0x102, NULL, NULL, &r), 0);
	cr_expect_eq(r.held, 0);
	cr_expect_eq(count_files(dir, "hold-"), 0);
	rm_dir(dir);
}

/* A message a content filter quarantined is held like one the operator
 * held: listed held with its reason, until a release (a hold record) lets
 * it go; recovery keeps that release (the envelope would hold it again),
 * and a hold after it holds it again. */
Test(spool, quarantined_message_is_held_until_released)
{
	char *dir = tmp_dir(), *s;
	char name[64];
	struct spool_env e = env_n("Q0");
	struct iovec b = {(void *)body1, sizeof(body1) - 1};
	struct spool_recovery r;
	time_t now = 1700000000 + 60;
	int fd, ret;

	spool_seg_name(name, sizeof(name), 1, 0, 0);
	fd = seg_open(dir, name);
	e.quarantine = "spam \"score\" 20";
	seg_append(fd, &e, &b, 1);
	e.qid = "Q1";
	e.quarantine = NULL;
	seg_append(fd, &e, &b, 1);
	close(fd);
	s = list(dir, 0, now, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_not_null(strstr(s, "Q0" RCPTS " held reason=\"spam \\\"score\\\" 20\"\n"), "%s",
	                   s);
	cr_expect_not_null(strstr(s, "Q1" RCPTS " active\n"), "%s", s);
	free(s);
	hold(dir, 10, "Q0", 100, false);
	s = list(dir, 0, now, &ret);
	cr_expect_not_null(strstr(s, "Q0" RCPTS " active\n"), "%s", s);
	free(s);
	cr_assert_eq(spool_recover(dir, 0x100, NULL, NULL, &r), 0);
	cr_expect_eq(r.held, 0);
	cr_expect_eq(count_files(dir, "hold-"), 1); /* the release, kept */
	s = list(dir, 0, now, &ret);
	cr_expect_not_null(strstr(s, "Q0" RCPTS " active\n"), "%s", s);
	free(s);
	hold(dir, 0x200, "Q0", 101, true);
	s = list(dir, 0, now, &ret);
	cr_expect_not_null(strstr(s, "Q0" RCPTS " held reason="), "%s", s);
	free(s);
	rm_dir(dir);
}

static char *report(const char *dir, const struct spool_select *sel, enum spool_report_kind k)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	cr_assert_not_null(f);
	cr_assert_eq(spool_report(dir, sel, k, f, 1700000000 + 60), 0);
	fclose(f);
	return s;
}

Test(spool, reports_json_show_and_shape)
{
	char *dir = tmp_dir(), *s;
	const char *id[] = {"R2"};
	off_t off[3], len;

	close(three_and_one(dir, off, &len));
	defer_lines(dir, 5, "R2\t1700000100\t3\t451 4.7.1 \"slow\" down\n");
	hold(dir, 9, "R0", 1, true);
	s = report(dir, &(struct spool_select){.ids = id, .nids = 1}, SPOOL_REPORT_JSON);
	cr_expect_str_eq(
	    s,
	    "{\"queue_name\":\"deferred\",\"queue_id\":\"R2\",\"state\":\"deferred\","
	    "\"arrival_time\":1700000000,\"message_size\":53,\"forced_expire\":false,"
	    "\"sender\":\"alice@example.net\",\"attempts\":3,\"next_attempt\":1700000100,"
	    "\"recipients\":[{\"address\":\"bob@example.org\",\"state\":\"deferred\","
	    "\"delay_reason\":\"451 4.7.1 \\\"slow\\\" down\"},{\"address\":\"carol@example.org\","
	    "\"state\":\"deferred\",\"delay_reason\":\"451 4.7.1 \\\"slow\\\" down\"}]}\n");
	free(s);
	s = report(dir, &(struct spool_select){.states = SPOOL_SEL_HELD}, SPOOL_REPORT_JSON);
	cr_expect_not_null(
	    strstr(s, "{\"queue_name\":\"hold\",\"queue_id\":\"R0\",\"state\":\"held\""), "%s", s);
	cr_expect_null(strchr(s, '\n') + 1 == s + strlen(s) ? NULL : s, "one line: %s", s);
	free(s);
	s = report(dir, &(struct spool_select){.ids = id, .nids = 1}, SPOOL_REPORT_SHOW);
	cr_expect_not_null(strstr(s, "queue id: R2\nstate: deferred\nattempts: 3\n"), "%s", s);
	cr_expect_not_null(strstr(s, "sender: <alice@example.net>\n"), "%s", s);
	cr_expect_not_null(
	    strstr(s, "  <carol@example.org> deferred: \"451 4.7.1 \\\"slow\\\" down\"\n"), "%s",
	    s);
	cr_expect_not_null(strstr(s, "history:\n  attempt 3 deferred, next attempt "
	                             "2023-11-14T22:15:00Z (in 40s): "),
	                   "%s", s);
	cr_expect_not_null(strstr(s, "headers:\n  Received: from mx.example.net\n  Subject: hi\n"),
	                   "%s", s);
	cr_expect_null(strstr(s, "hello"), "the body is not shown: %s", s);
	free(s);
	s = report(dir, NULL, SPOOL_REPORT_SHAPE);
	cr_expect_str_eq(s, "            T 5 10 20 40 80 160 320 640 1280 1280+\n"
	                    "      TOTAL 4 4  0  0  0  0   0   0   0    0     0\n"
	                    "example.org 4 4  0  0  0  0   0   0   0    0     0\n");
	free(s);
	s = report(dir, NULL, SPOOL_REPORT_SHAPE_SENDER);
	cr_expect_not_null(strstr(s, "example.net 4 4"), "%s", s);
	free(s);
	rm_dir(dir);
}

Test(spool, defer_lines_with_recipient_states_give_each_recipient_its_own)
{
	char *dir = tmp_dir(), *s;
	const char *id[] = {"R2"};
	off_t off[3], len;
	int ret;

	close(three_and_one(dir, off, &len));
	/* bob sent, carol deferred with her own reply. */
	defer_lines(dir, 5, "R2\t1700000100\t3\t452 full\tsd\t\t452 4.2.2 carol is full\n");
	/* Malformed recipients' part: the line counts for nothing (the last
	 * good line of R0 stays). */
	defer_lines(dir, 6,
	            "R0\t1700000100\t1\tfirst\n"
	            "R0\t1700000100\t2\tx\tdx\n"
	            "R0\t1700000100\t2\tx\td\ta\tb\n"
	            "R0\t1700000100\t2\tx\t\n"
	            "R1\t1700000100\t2\twhole\tfd\n");
	s = report(dir, &(struct spool_select){.ids = id, .nids = 1}, SPOOL_REPORT_JSON);
	cr_expect_not_null(strstr(s,
	                          "\"recipients\":[{\"address\":\"bob@example.org\",\"state\":"
	                          "\"sent\"},{\"address\":\"carol@example.org\",\"state\":"
	                          "\"deferred\",\"delay_reason\":\"452 4.2.2 carol is full\"}]}\n"),
	                   "%s", s);
	free(s);
	s = report(dir, &(struct spool_select){.ids = id, .nids = 1}, SPOOL_REPORT_SHOW);
	cr_expect_not_null(strstr(s, "  <bob@example.org> sent\n  <carol@example.org> deferred: "
	                             "\"452 4.2.2 carol is full\"\n"),
	                   "%s", s);
	free(s);
	s = list(dir, 0, 1700000060, &ret);
	cr_assert_eq(ret, 0);
	cr_expect_not_null(strstr(s, "R0" RCPTS " deferred next=40s attempts=1 last=\"first\"\n"),
	                   "%s", s);
	cr_expect_not_null(strstr(s, "R1" RCPTS " deferred next=40s attempts=2 last=\"whole\"\n"),
	                   "%s", s);
	cr_expect_not_null(
	    strstr(s, "R2" RCPTS " deferred next=40s attempts=3 last=\"452 full\"\n"), "%s", s);
	free(s);
	/* A recipient with a state and no reply field takes the message's. */
	id[0] = "R1";
	s = report(dir, &(struct spool_select){.ids = id, .nids = 1}, SPOOL_REPORT_JSON);
	cr_expect_not_null(strstr(s, "{\"address\":\"bob@example.org\",\"state\":\"failed\","
	                             "\"delay_reason\":\"whole\"}"),
	                   "%s", s);
	free(s);
	rm_dir(dir);
}

Test(spool, defer_line_every_cut_parses_or_is_refused_within_its_bytes)
{
	static const char line[] = "Q1\t1700000100\t3\t451 x\tsdf\t\t452 y\t550 z";
	struct defer_ent e;
	const char *why;

	for (size_t n = 0; n <= sizeof(line) - 1; n++) {
		/* Exactly n bytes and the NUL the reader writes over the '\n'. */
		char *p = malloc(n + 1);
		int ret;

		memcpy(p, line, n);
		p[n] = '\0';
		ret = defer_line(p, n, &e);
		cr_assert(ret == 0 || ret == -EINVAL, "cut %zu: %d", n, ret);
		if (!ret) {
			cr_expect_eq(e.attempts, 3);
			cr_expect_leq(e.nrs, 3);
			for (unsigned i = 0; i < 4; i++)
				defer_rcpt(&e, i, &why);
			free(e.reply);
		}
		free(p);
	}
	cr_assert_eq(defer_line(line, sizeof(line) - 1, &e), 0);
	cr_expect_str_eq(e.reply, "451 x");
	cr_expect_eq(defer_rcpt(&e, 0, &why), 's');
	cr_expect_null(why);
	cr_expect_eq(defer_rcpt(&e, 1, &why), 'd');
	cr_expect_str_eq(why, "452 y");
	cr_expect_eq(defer_rcpt(&e, 2, &why), 'f');
	cr_expect_str_eq(why, "550 z");
	cr_expect_eq(defer_rcpt(&e, 3, &why), '\0');
	free(e.reply);
}
