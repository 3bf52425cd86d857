/* utc: see utc.h. The date part is Howard Hinnant's civil_from_days: a
 * proleptic Gregorian calendar counted in 400-year eras from 0000-03-01, so
 * the leap day ends each computed year and needs no special case. */
#include "core/utc.h"

#include <string.h>

void utc_tm(time_t t, struct tm *out)
{
	long long days = t / 86400, secs = t % 86400;

	if (secs < 0) { /* floor, not truncation, before 1970 */
		secs += 86400;
		days--;
	}
	long long z = days + 719468; /* days since 0000-03-01 */
	long long era = (z >= 0 ? z : z - 146096) / 146097;
	long long doe = z - era * 146097;                                      /* [0, 146096] */
	long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
	long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* from March 1 */
	long long mp = (5 * doy + 2) / 153;                                    /* March = 0 */
	long long mon = mp < 10 ? mp + 2 : mp - 10;                            /* January = 0 */
	long long year = yoe + era * 400 + (mon < 2);
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	memset(out, 0, sizeof(*out));
	out->tm_sec = (int)(secs % 60);
	out->tm_min = (int)(secs / 60 % 60);
	out->tm_hour = (int)(secs / 3600);
	out->tm_mday = (int)(doy - (153 * mp + 2) / 5 + 1);
	out->tm_mon = (int)mon;
	out->tm_year = (int)(year - 1900);
	out->tm_wday = (int)(((days + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
	out->tm_yday = (int)(mon < 2 ? doy - 306 : doy + 59 + leap);
}
