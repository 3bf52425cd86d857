/* testutil: helpers shared by the Criterion transcript tests (session and
 * client): input against a PROT_NONE guard page, and quiet logs. */
#ifndef RINGMX_TESTS_TESTUTIL_H
#define RINGMX_TESTS_TESTUTIL_H

#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_SPAN  (64u * 1024) /* longest single input; a multiple of the page size */
#define GUARD_SLOTS 2u           /* inputs that must stay valid at the same time */

/* Copies <len> bytes to the end of mapping <slot>, followed by a PROT_NONE
 * page, so that reading past what was given crashes (picohttpparser's
 * test.c). The copy stays valid until the next call for the same slot. */
static inline const char *guarded(unsigned slot, const char *p, size_t len)
{
	static char *end[GUARD_SLOTS];

	cr_assert_lt(slot, GUARD_SLOTS);
	if (!end[slot]) {
		long pg = sysconf(_SC_PAGESIZE);
		char *m = mmap(NULL, GUARD_SPAN + (size_t)pg, PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		cr_assert_neq(m, MAP_FAILED);
		cr_assert_eq(mprotect(m + GUARD_SPAN, (size_t)pg, PROT_NONE), 0);
		end[slot] = m + GUARD_SPAN;
	}
	cr_assert_leq(len, GUARD_SPAN);
	if (len)
		memcpy(end[slot] - len, p, len);
	return end[slot] - len;
}

/* Logs go to /dev/null between these two, with every level on, so that the
 * log formatting runs too (under the sanitizers) without noise. */
static inline int stderr_quiet(void)
{
	int saved = dup(STDERR_FILENO), fd = open("/dev/null", O_WRONLY);

	cr_assert_geq(saved, 0);
	cr_assert_geq(fd, 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	return saved;
}

static inline void stderr_restore(int saved)
{
	dup2(saved, STDERR_FILENO);
	close(saved);
}

#endif
