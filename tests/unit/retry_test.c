/* retry_test: the retry schedule, expiry and duration parsing. */
#include "core/retry.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <math.h>

#define T0 1700000000 /* arrival */

static const struct retry_conf dflt = RETRY_CONF_INIT;

Test(retry, defaults_are_postfix_like)
{
	cr_expect_eq(dflt.min_backoff_s, 300);
	cr_expect_eq(dflt.max_backoff_s, 4000);
	cr_expect_eq(dflt.max_lifetime_s, 5 * 86400);
	cr_expect_eq(dflt.bounce_lifetime_s, 5 * 86400);
	cr_expect_eq(retry_conf_check(&dflt), 0);
}

Test(retry, schedule_doubles_up_to_the_cap)
{
	/* attempts 0..10: due now, then 300 doubling, capped at 4000. */
	static const unsigned want[] = {0,    300,  600,  1200, 2400, 4000,
	                                4000, 4000, 4000, 4000, 4000};
	time_t now = T0 + 100;
	unsigned i;

	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		cr_expect_eq(retry_delay(&dflt, i), want[i], "attempts %u: got %u, want %u", i,
		             retry_delay(&dflt, i), want[i]);
		cr_expect_eq(retry_next(&dflt, T0, now, i), now + want[i], "attempts %u", i);
	}
	cr_expect_eq(retry_delay(&dflt, UINT_MAX), 4000);
}

Test(retry, odd_bounds_do_not_overflow)
{
	struct retry_conf c = {.min_backoff_s = 7, .max_backoff_s = 100, .max_lifetime_s = 1000};
	struct retry_conf big = {.min_backoff_s = UINT_MAX / 2 + 1,
	                         .max_backoff_s = UINT_MAX,
	                         .max_lifetime_s = UINT_MAX};
	struct retry_conf flat = {.min_backoff_s = 60, .max_backoff_s = 60, .max_lifetime_s = 600};

	cr_expect_eq(retry_delay(&c, 1), 7);
	cr_expect_eq(retry_delay(&c, 4), 56);
	cr_expect_eq(retry_delay(&c, 5), 100); /* 112 is over the cap */
	cr_expect_eq(retry_delay(&big, 2), UINT_MAX);
	cr_expect_eq(retry_delay(&big, 64), UINT_MAX);
	cr_expect_eq(retry_delay(&flat, 1), 60);
	cr_expect_eq(retry_delay(&flat, 9), 60);
}

Test(retry, conf_check_refuses_bad_bounds)
{
	struct retry_conf c = dflt;

	c.min_backoff_s = 0;
	cr_expect_eq(retry_conf_check(&c), -EINVAL);
	c.min_backoff_s = 5000;
	cr_expect_eq(retry_conf_check(&c), -EINVAL);
	c.min_backoff_s = 4000;
	cr_expect_eq(retry_conf_check(&c), 0);
}

Test(retry, next_never_passes_expiry)
{
	time_t end = T0 + 432000;

	/* 4000 s before the end: the full delay still fits. */
	cr_expect_eq(retry_next(&dflt, T0, end - 4000, 9), end);
	/* Closer: the last attempt falls on the moment it expires. */
	cr_expect_eq(retry_next(&dflt, T0, end - 10, 9), end);
	cr_expect_eq(retry_next(&dflt, T0, end - 10, 1), end);
	cr_expect_eq(retry_next(&dflt, T0, end - 1000, 1), end - 700);
	/* Past it (the caller should have bounced): never before now. */
	cr_expect_eq(retry_next(&dflt, T0, end + 50, 3), end + 50);
}

Test(retry, expiry_boundary)
{
	struct retry_conf once = dflt;

	cr_expect_not(retry_expired(&dflt, T0, T0));
	cr_expect_not(retry_expired(&dflt, T0, T0 + 432000 - 1));
	cr_expect(retry_expired(&dflt, T0, T0 + 432000));
	cr_expect(retry_expired(&dflt, T0, T0 + 432001));
	cr_expect_not(retry_expired(&dflt, T0, T0 - 86400)); /* clock stepped back */
	/* Lifetime 0: one attempt, as Postfix's maximal_queue_lifetime = 0. */
	once.max_lifetime_s = 0;
	cr_expect(retry_expired(&once, T0, T0));
}

Test(retry, null_sender_uses_bounce_lifetime)
{
	struct retry_conf c = dflt, n;

	c.bounce_lifetime_s = 86400;
	n = retry_conf_null_sender(&c);
	cr_expect_eq(n.max_lifetime_s, 86400);
	cr_expect_eq(n.min_backoff_s, c.min_backoff_s);
	cr_expect(retry_expired(&n, T0, T0 + 86400));
	cr_expect_not(retry_expired(&c, T0, T0 + 86400));
	cr_expect_eq(retry_next(&n, T0, T0 + 86400 - 100, 5), T0 + 86400);
}

Test(retry, jitter_stays_within_a_quarter_earlier)
{
	time_t now = T0 + 1000;
	unsigned a, i;

	for (a = 1; a <= 10; a++) {
		unsigned d = retry_delay(&dflt, a);

		for (i = 0; i <= 100; i++) {
			double j = i / 100.0;
			time_t n = retry_next_jitter(&dflt, T0, now, a, j);

			cr_expect_leq(n, now + d, "attempts %u jitter %.2f", a, j);
			cr_expect_geq(n, now + d - d / 4, "attempts %u jitter %.2f", a, j);
		}
		cr_expect_eq(retry_next_jitter(&dflt, T0, now, a, 0.0), now + d);
		cr_expect_eq(retry_next_jitter(&dflt, T0, now, a, 1.0), now + d - d / 4);
		/* Out of range and NaN are clamped. */
		cr_expect_eq(retry_next_jitter(&dflt, T0, now, a, -3.0), now + d);
		cr_expect_eq(retry_next_jitter(&dflt, T0, now, a, 7.5), now + d - d / 4);
		cr_expect_eq(retry_next_jitter(&dflt, T0, now, a, NAN), now + d);
	}
	cr_expect_eq(retry_next_jitter(&dflt, T0, now, 1, 0.5), now + 300 - 37);
}

Test(retry, duration_parses_units)
{
	static const struct {
		const char *s;
		unsigned want;
	} ok[] = {
	    {"0", 0},
	    {"300", 300},
	    {"300s", 300},
	    {"5m", 300},
	    {"4h", 14400},
	    {"5d", 432000},
	    {"2w", 1209600},
	    {"007m", 420},
	    {"4294967295", UINT_MAX},
	    {"4294967295s", UINT_MAX},
	    {"71582788m", 4294967280u},
	};
	unsigned i, v;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 12345;
		cr_expect_eq(retry_parse_duration(ok[i].s, &v), 0, "'%s'", ok[i].s);
		cr_expect_eq(v, ok[i].want, "'%s': got %u, want %u", ok[i].s, v, ok[i].want);
	}
}

Test(retry, duration_refuses_bad_text)
{
	static const char *const bad[] = {"",   "m",   "-5",  "+5",   " 5",   "5 ",  "5x",
	                                  "5M", "5mm", "5m1", "1.5h", "0x10", "5d\n"};
	unsigned i, v = 777;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(retry_parse_duration(bad[i], &v), -EINVAL, "'%s'", bad[i]);
	cr_expect_eq(v, 777);
}

Test(retry, duration_refuses_overflow)
{
	static const char *const big[] = {
	    "4294967296", "4294967296s", "71582789m", "49711d", "99999999999999999999999", "7102w"};
	unsigned i, v = 777;

	for (i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		cr_expect_eq(retry_parse_duration(big[i], &v), -ERANGE, "'%s'", big[i]);
	cr_expect_eq(v, 777);
}
