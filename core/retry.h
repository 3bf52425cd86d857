/* retry: when to try a deferred message again, and when to give up on it.
 * Postfix's model and defaults (minimal_backoff_time, maximal_backoff_time,
 * maximal_queue_lifetime, bounce_queue_lifetime), with the backoff doubling
 * per attempt. Pure arithmetic: the times, the attempt count and any jitter
 * come from the caller. libc only. */
#ifndef RINGMX_CORE_RETRY_H
#define RINGMX_CORE_RETRY_H

#include <stdbool.h>
#include <time.h>

#define RETRY_MIN_BACKOFF_S   300u    /* --retry-min: first retry after 5 minutes */
#define RETRY_MAX_BACKOFF_S   4000u   /* --retry-max: never wait longer between attempts */
#define RETRY_MAX_LIFETIME_S  432000u /* --max-queue-lifetime: 5 days, then bounce */
#define RETRY_BOUNCE_LIFETIME 432000u /* the same for a message with the null sender (a DSN) */
#define RETRY_JITTER_DIV      4u      /* jitter takes up to 1/4 off a delay */

/* Read-only after startup; any thread. */
struct retry_conf {
	unsigned min_backoff_s;     /* delay after the first failed attempt, > 0 */
	unsigned max_backoff_s;     /* delays double up to this, >= min_backoff_s */
	unsigned max_lifetime_s;    /* a message this old is given up (bounced); 0: one attempt */
	unsigned bounce_lifetime_s; /* the same for a null-sender message, which no DSN
	                             * can report: it is dropped (Postfix's
	                             * bounce_queue_lifetime) */
};

#define RETRY_CONF_INIT                                                                            \
	{                                                                                          \
		RETRY_MIN_BACKOFF_S, RETRY_MAX_BACKOFF_S, RETRY_MAX_LIFETIME_S,                    \
		    RETRY_BOUNCE_LIFETIME                                                          \
	}

/* Returns 0 if <c> is usable, -EINVAL if not (min 0, min > max). */
int retry_conf_check(const struct retry_conf *c);

/* The conf for a message with the null sender: <c> with max_lifetime_s
 * taken from bounce_lifetime_s. retry_next() and retry_expired() read
 * max_lifetime_s only. */
static inline struct retry_conf retry_conf_null_sender(const struct retry_conf *c)
{
	struct retry_conf n = *c;

	n.max_lifetime_s = c->bounce_lifetime_s;
	return n;
}

/* The delay after <attempts> failed attempts (>= 1): min_backoff_s doubled
 * attempts - 1 times, at most max_backoff_s (300, 600, 1200, 2400, 4000...).
 * 0 for attempts == 0 (never tried: due now). */
unsigned retry_delay(const struct retry_conf *c, unsigned attempts);

/* When to try a message that arrived at <arrival> again, at <now>, after
 * its <attempts>-th failed attempt: now + retry_delay(), less up to a
 * quarter of it by <jitter> (a fraction in [0, 1] the caller draws, to
 * spread retries that an outage lined up; clamped, NaN counts as 0), so
 * that jitter never makes a message wait longer than the schedule. Never
 * later than the moment it expires (arrival + max_lifetime_s: the last try
 * falls on it), never earlier than <now>. Call retry_expired() first: an
 * expired message is bounced, not retried. For a null-sender message pass
 * retry_conf_null_sender(). */
time_t retry_next_jitter(const struct retry_conf *c, time_t arrival, time_t now, unsigned attempts,
                         double jitter);

static inline time_t retry_next(const struct retry_conf *c, time_t arrival, time_t now,
                                unsigned attempts)
{
	return retry_next_jitter(c, arrival, now, attempts, 0.0);
}

/* True when a message that arrived at <arrival> is max_lifetime_s old or
 * older at <now>: a temporary failure now is final. */
bool retry_expired(const struct retry_conf *c, time_t arrival, time_t now);

/* Parses a duration: digits with an optional unit, s (seconds, the
 * default), m, h, d or w ("300", "5m", "4h", "5d"), as Postfix's time
 * parameters; no sign, no space. Stores the seconds in <*out>. Returns 0,
 * -EINVAL (empty, bad unit, trailing text) or -ERANGE (over UINT_MAX
 * seconds); <*out> is unchanged on error. */
int retry_parse_duration(const char *s, unsigned *out);

#endif
