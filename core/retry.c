/* retry: the retry schedule of deferred messages and their expiry, as
 * Postfix's queue manager keeps them (minimal/maximal backoff, queue
 * lifetime), but with the delay doubling per failed attempt rather than
 * following the message's age. The relay asks retry_expired() after a
 * temporary failure (bounce or retry) and retry_next_jitter() for when to
 * try again. Pure arithmetic on the caller's times; libc only. */
#include "core/retry.h"

#include <errno.h>
#include <limits.h>

int retry_conf_check(const struct retry_conf *c)
{
	if (c->min_backoff_s == 0 || c->min_backoff_s > c->max_backoff_s)
		return -EINVAL;
	return 0;
}

unsigned retry_delay(const struct retry_conf *c, unsigned attempts)
{
	unsigned d = c->min_backoff_s;

	if (attempts == 0)
		return 0;
	/* Doubling stops at the cap, so it can neither overflow nor loop long. */
	while (--attempts && d < c->max_backoff_s)
		d = d > c->max_backoff_s / 2 ? c->max_backoff_s : d * 2;
	return d < c->max_backoff_s ? d : c->max_backoff_s;
}

time_t retry_next_jitter(const struct retry_conf *c, time_t arrival, time_t now, unsigned attempts,
                         double jitter)
{
	unsigned d = retry_delay(c, attempts), off;
	time_t next, end = arrival + (time_t)c->max_lifetime_s;

	if (!(jitter > 0.0)) /* NaN too */
		jitter = 0.0;
	else if (jitter > 1.0)
		jitter = 1.0;
	off = (unsigned)((double)(d / RETRY_JITTER_DIV) * jitter);
	next = now + (time_t)(d - off);
	if (next > end)
		next = end;
	return next < now ? now : next;
}

bool retry_expired(const struct retry_conf *c, time_t arrival, time_t now)
{
	return now - arrival >= (time_t)c->max_lifetime_s;
}

int retry_parse_duration(const char *s, unsigned *out)
{
	unsigned long long v = 0, mul = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > UINT_MAX)
			return -ERANGE;
	}
	switch (*p) {
	case '\0':
		break;
	case 's':
		break;
	case 'm':
		mul = 60;
		break;
	case 'h':
		mul = 3600;
		break;
	case 'd':
		mul = 86400;
		break;
	case 'w':
		mul = 604800;
		break;
	default:
		return -EINVAL;
	}
	if (*p && p[1])
		return -EINVAL;
	if (v * mul > UINT_MAX)
		return -ERANGE;
	*out = (unsigned)(v * mul);
	return 0;
}
