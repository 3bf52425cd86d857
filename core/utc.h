/* utc: seconds since the epoch to a UTC calendar date, by arithmetic.
 * glibc's gmtime_r() takes the process-wide tzset lock on every call; the
 * gateway formats a date for every message (Received:) and every log line,
 * from every worker at once, so it converts without the C library. libc
 * only; any thread. */
#ifndef RINGMX_CORE_UTC_H
#define RINGMX_CORE_UTC_H

#include <time.h>

/* Fills <out> as gmtime_r() would (tm_isdst 0, no tm_gmtoff/tm_zone
 * guarantees) for any <t> whose year fits an int. */
void utc_tm(time_t t, struct tm *out);

#endif
