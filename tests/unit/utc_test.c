/* Unit tests for core/utc: every answer must be gmtime_r()'s. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <time.h>

#include "core/utc.h"

static void same_as_libc(time_t t)
{
	struct tm want, got;

	cr_assert_not_null(gmtime_r(&t, &want));
	utc_tm(t, &got);
	cr_assert(want.tm_year == got.tm_year && want.tm_mon == got.tm_mon &&
	              want.tm_mday == got.tm_mday && want.tm_hour == got.tm_hour &&
	              want.tm_min == got.tm_min && want.tm_sec == got.tm_sec &&
	              want.tm_wday == got.tm_wday && want.tm_yday == got.tm_yday &&
	              got.tm_isdst == 0,
	          "t=%lld: libc %d-%d-%d %d:%d:%d wday %d yday %d, utc_tm %d-%d-%d %d:%d:%d "
	          "wday %d yday %d",
	          (long long)t, want.tm_year, want.tm_mon, want.tm_mday, want.tm_hour, want.tm_min,
	          want.tm_sec, want.tm_wday, want.tm_yday, got.tm_year, got.tm_mon, got.tm_mday,
	          got.tm_hour, got.tm_min, got.tm_sec, got.tm_wday, got.tm_yday);
}

Test(utc, every_day_from_1600_to_2500)
{
	/* each day at a second that moves through the day, leap years and
	   century rules included (1700, 1800, 1900, 2100 are not leap years) */
	for (long long d = -135140; d < 193000; d++)
		same_as_libc((time_t)(d * 86400 + (d * 7919) % 86400));
}

Test(utc, edges_of_days_and_the_epoch)
{
	static const long long ts[] = {0,          -1,         86399,      86400,
	                               -86400,     -86401,     951782400,  951868799,
	                               1709164800, 2147483647, 4102444800, 253402300799};

	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
		same_as_libc((time_t)ts[i]);
}

Test(utc, random_seconds)
{
	uint64_t x = 88172645463325252ull;

	for (int i = 0; i < 200000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		same_as_libc((time_t)(x % 20000000000ull) - 5000000000ll);
	}
}
