/* cr_standalone: Criterion, or a small in-process stand-in for the part of
 * it that the unit tests use, for builds where Criterion cannot run.
 *
 * Criterion runs each test in a child process that shares a memory arena
 * with the runner (BoxFort); that arena cannot be mapped under
 * ThreadSanitizer, whose shadow memory claims the address ranges BoxFort
 * picks from ("Could not initialize inheritable arena", Snaipe/Criterion
 * issue 274). So a test built with -DCR_STANDALONE gets, from this header,
 * TestSuite(), Test() with .timeout, the cr_assert/cr_expect forms used here
 * and cr_log_info(), and a main() that runs every test in one process, one
 * after the other, each under alarm(<timeout>) so that a hang (a lost
 * wake-up) kills the run. argv[1], if given, keeps only the tests whose
 * name contains it. A failed cr_assert ends the whole run.
 *
 * Without CR_STANDALONE it is just <criterion/criterion.h>. */
#ifndef RINGMX_TESTS_CR_STANDALONE_H
#define RINGMX_TESTS_CR_STANDALONE_H

#ifndef CR_STANDALONE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#else

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct cr_sa_test {
	const char *suite;
	const char *name;
	void (*fn)(void);
	double timeout; /* seconds, 0: none */
	int unused;     /* lets Test() take no options */
	struct cr_sa_test *next;
};

static struct cr_sa_test *cr_sa_tests, **cr_sa_tail = &cr_sa_tests;
static bool cr_sa_failed; /* the running test failed an expectation */

static inline void cr_sa_register(struct cr_sa_test *t)
{
	*cr_sa_tail = t;
	cr_sa_tail = &t->next;
}

__attribute__((format(printf, 6, 7))) static inline void
cr_sa_check(bool ok, bool fatal, const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	if (ok)
		return;
	fprintf(stderr, "[FAIL] %s:%d: %s:", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cr_sa_failed = true;
	if (fatal)
		exit(1);
}

#define TestSuite(suite) struct cr_sa_unused_##suite

#define Test(suite, name, ...)                                                                     \
	static void suite##_##name(void);                                                          \
	static struct cr_sa_test cr_sa_t_##suite##_##name = {#suite, #name, suite##_##name,        \
	                                                     .unused = 0, __VA_ARGS__};            \
	__attribute__((constructor)) static void cr_sa_reg_##suite##_##name(void)                  \
	{                                                                                          \
		cr_sa_register(&cr_sa_t_##suite##_##name);                                         \
	}                                                                                          \
	static void suite##_##name(void)

/* The message arguments, if any, start with a format string literal. */
#define cr_sa_cond(fatal, cond, ...)                                                               \
	cr_sa_check((cond), (fatal), __FILE__, __LINE__, #cond, " " __VA_ARGS__)

#define cr_assert(c, ...)          cr_sa_cond(true, c, __VA_ARGS__)
#define cr_expect(c, ...)          cr_sa_cond(false, c, __VA_ARGS__)
#define cr_expect_not(c, ...)      cr_sa_cond(false, !(c), __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_sa_cond(true, (p) != NULL, __VA_ARGS__)
#define cr_assert_eq(a, b, ...)    cr_sa_cond(true, (a) == (b), __VA_ARGS__)
#define cr_expect_eq(a, b, ...)    cr_sa_cond(false, (a) == (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...)    cr_sa_cond(true, (a) > (b), __VA_ARGS__)
#define cr_expect_gt(a, b, ...)    cr_sa_cond(false, (a) > (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...)   cr_sa_cond(true, (a) <= (b), __VA_ARGS__)
#define cr_expect_leq(a, b, ...)   cr_sa_cond(false, (a) <= (b), __VA_ARGS__)
#define cr_expect_lt(a, b, ...)    cr_sa_cond(false, (a) < (b), __VA_ARGS__)
#define cr_log_info(fmt, ...)      fprintf(stderr, "[----] " fmt "\n", __VA_ARGS__)

int main(int argc, char **argv)
{
	unsigned run = 0, failed = 0;

	for (struct cr_sa_test *t = cr_sa_tests; t; t = t->next) {
		struct timespec t0, t1;

		if (argc > 1 && !strstr(t->name, argv[1]))
			continue;
		cr_sa_failed = false;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		alarm((unsigned)t->timeout); /* SIGALRM's default action ends the run */
		t->fn();
		alarm(0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		run++;
		failed += cr_sa_failed;
		fprintf(stderr, "[%s] %s::%s: (%.2fs)\n", cr_sa_failed ? "FAIL" : "PASS", t->suite,
		        t->name,
		        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
	}
	fprintf(stderr, "[====] Synthesis: Tested: %u | Passing: %u | Failing: %u\n", run,
	        run - failed, failed);
	return failed || run == 0;
}

#endif /* CR_STANDALONE */
#endif
