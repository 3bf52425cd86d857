/* libFuzzer target for core/recipients: the table parser on arbitrary
 * bytes, read both ways, and the snapshot's lookups. Checks that
 *   - recipients_builder_add_buffer() and recipients_builder_add_file() (on a
 *     memfd, with the small read buffer this target is built with, so that
 *     lines straddle reads) agree: the same result, the same reason, the
 *     same counts;
 *   - a failure names the buffer and a line that exists;
 *   - after a build, every plain line's address is KNOWN, in another case
 *     too unless exact, and with an extension when '+' is the delimiter;
 *   - lookups of arbitrary views of the input never crash (ASan, UBSan).
 *
 * Input: 1 option byte, then the table.
 *   [0] bit 0: exact; bits 1-2: delimiters "+", "+-", "", "-=+"
 * Build and run: tests/fuzz/run.sh [SECONDS] (with -DRCPT_READ_CHUNK=1100). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/recipients.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, "recipients_fuzz: " __VA_ARGS__);                                  \
		fputc('\n', stderr);                                                               \
		abort();                                                                           \
	} while (0)

/* Reads the table at <p> through a memfd, as a file. Returns what
 * add_file() returned; the reason, from its "PATH:", in <why>. */
static int via_file(struct recipients_builder *b, const char *p, size_t n, char *why, size_t len)
{
	char path[64], err[RECIPIENTS_ERR_MAX];
	int fd = memfd_create("recipients_fuzz", MFD_CLOEXEC), rc;
	size_t plen;

	if (fd < 0)
		FAIL("memfd_create: %s", strerror(errno));
	if (n && write(fd, p, n) != (ssize_t)n)
		FAIL("write: %s", strerror(errno));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	err[0] = '\0';
	rc = recipients_builder_add_file(b, path, err, sizeof(err));
	close(fd);
	plen = strlen(path);
	if (rc < 0 && (strncmp(err, path, plen) != 0 || err[plen] != ':'))
		FAIL("add_file error does not name the file: '%s'", err);
	snprintf(why, len, "%s", rc < 0 ? err + plen : "");
	return rc;
}

static size_t count_lines(const char *p, size_t n)
{
	size_t lines = 0;

	for (size_t i = 0; i < n; i++)
		lines += p[i] == '\n';
	return lines + (n && p[n - 1] != '\n');
}

static void expect_known(const struct recipients *r, struct sv local, struct sv domain,
                         const char *what)
{
	if (recipients_lookup(r, local, domain) != RECIPIENTS_KNOWN)
		FAIL("%s '%.*s@%.*s' not KNOWN", what, (int)local.len, local.p, (int)domain.len,
		     domain.p);
}

/* Every line without a quote: its address must be KNOWN. */
static void check_lines(const struct recipients *r, const char *p, size_t n, bool exact, bool plus)
{
	char alt[RECIPIENTS_LINE_MAX + 8];

	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) : n, i = 0, end, at = SIZE_MAX;
		struct sv line = sv_make(p, len), local, domain;

		p += len + (nl != NULL);
		n -= len + (nl != NULL);
		while (i < line.len && (line.p[i] == ' ' || line.p[i] == '\t'))
			i++;
		if (i == line.len || line.p[i] == '#' || line.p[i] == '\r' ||
		    memchr(line.p, '"', line.len))
			continue;
		for (end = i; end < line.len && !strchr(" \t\r", line.p[end]); end++)
			if (line.p[end] == '@')
				at = end;
		if (at == SIZE_MAX)
			FAIL("built, yet a line has no '@'");
		local = sv_make(line.p + i, at - i);
		domain = sv_make(line.p + at + 1, end - at - 1);
		expect_known(r, local, domain, "listed");
		if (local.len == 0)
			continue;
		if (!exact) {
			for (size_t k = 0; k < local.len; k++) {
				char c = local.p[k];

				alt[k] = c >= 'a' && c <= 'z'   ? (char)(c - 32)
				         : c >= 'A' && c <= 'Z' ? (char)(c + 32)
				                                : c;
			}
			expect_known(r, sv_make(alt, local.len), domain, "case-swapped");
		}
		if (plus && !memchr(local.p, '+', local.len)) {
			memcpy(alt, local.p, local.len);
			memcpy(alt + local.len, "+ext", 4);
			expect_known(r, sv_make(alt, local.len + 4), domain, "extended");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const delims[] = {"+", "+-", "", "-=+"};
	struct recipients_opts o;
	struct recipients_builder a, b;
	struct recipients *ra = NULL, *rb = NULL;
	char erra[RECIPIENTS_ERR_MAX], whyb[RECIPIENTS_ERR_MAX];
	const char *p;
	size_t n;
	int rca, rcb;

	if (size < 1)
		return 0;
	o.exact = data[0] & 1;
	o.delimiters = delims[(data[0] >> 1) & 3];
	p = (const char *)data + 1;
	n = size - 1;
	recipients_builder_init(&a, &o);
	recipients_builder_init(&b, &o);
	erra[0] = '\0';
	rca = recipients_builder_add_buffer(&a, "fuzz", p, n, erra, sizeof(erra));
	rcb = via_file(&b, p, n, whyb, sizeof(whyb));
	if (rca != rcb)
		FAIL("add_buffer %d, add_file %d ('%s' / '%s')", rca, rcb, erra, whyb);
	if (rca < 0) {
		unsigned long line;
		char *end;

		if (rca != -EINVAL || strncmp(erra, "fuzz:", 5) != 0)
			FAIL("bad error %d '%s'", rca, erra);
		if (strcmp(erra + 4, whyb) != 0)
			FAIL("reasons differ: '%s' / '%s'", erra + 4, whyb);
		line = strtoul(erra + 5, &end, 10);
		if (end == erra + 5 || strncmp(end, ": ", 2) != 0 || line == 0 ||
		    line > count_lines(p, n))
			FAIL("bad line number in '%s' (%zu lines)", erra, count_lines(p, n));
		if (recipients_build(&a, erra, sizeof(erra)) != NULL)
			FAIL("a failed builder built");
		goto out;
	}
	ra = recipients_build(&a, erra, sizeof(erra));
	rb = recipients_build(&b, whyb, sizeof(whyb));
	if (!ra || !rb)
		FAIL("build failed: '%s' / '%s'", erra, whyb);
	if (recipients_entries(ra) != recipients_entries(rb) ||
	    recipients_domains(ra) != recipients_domains(rb))
		FAIL("counts differ: %zu/%zu entries, %zu/%zu domains", recipients_entries(ra),
		     recipients_entries(rb), recipients_domains(ra), recipients_domains(rb));
	if (recipients_domains(ra) > recipients_entries(ra) ||
	    recipients_entries(ra) > count_lines(p, n))
		FAIL("%zu entries, %zu domains from %zu lines", recipients_entries(ra),
		     recipients_domains(ra), count_lines(p, n));
	check_lines(ra, p, n, o.exact, !strcmp(o.delimiters, "+"));
	/* Arbitrary views: every split of a prefix into local and domain. */
	for (size_t k = 0; k <= n && k < 64; k++) {
		size_t dl = n - k < 300 ? n - k : 300;
		enum recipients_result x = recipients_lookup(ra, sv_make(p, k), sv_make(p + k, dl));

		if (x != recipients_lookup(rb, sv_make(p, k), sv_make(p + k, dl)))
			FAIL("snapshots disagree on a view");
	}
out:
	if (ra)
		recipients_unref(recipients_ref(ra));
	recipients_unref(ra);
	recipients_unref(rb);
	recipients_builder_fini(&a);
	recipients_builder_fini(&b);
	return 0;
}
