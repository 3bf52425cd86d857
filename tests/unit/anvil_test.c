/* anvil_test: per-client limits: keys cut to their prefix, the session
 * count, the sliding-window rates, expiry of idle entries, a bounded table
 * under a million distinct clients, and threads sharing it. */
#include "core/anvil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

static struct anvil_key key4(struct anvil *a, const char *ip)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct anvil_key k;

	cr_assert_eq(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
	cr_assert_eq(anvil_key_of(a, (struct sockaddr *)&sin, &k), 0);
	return k;
}

static struct anvil_key key6(struct anvil *a, const char *ip)
{
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct anvil_key k;

	cr_assert_eq(inet_pton(AF_INET6, ip, &s6.sin6_addr), 1);
	cr_assert_eq(anvil_key_of(a, (struct sockaddr *)&s6, &k), 0);
	return k;
}

static struct anvil *table(unsigned max_sessions, const char *conn, const char *msg, size_t entries)
{
	struct anvil_conf c = {
	    .prefix4 = 32, .prefix6 = 64, .max_sessions = max_sessions, .max_entries = entries};

	if (conn)
		cr_assert_eq(anvil_rate_parse(conn, &c.conn), 0);
	if (msg)
		cr_assert_eq(anvil_rate_parse(msg, &c.msg), 0);
	struct anvil *a = anvil_new(&c);
	cr_assert_not_null(a);
	return a;
}

Test(anvil, rate_syntax)
{
	struct anvil_rate r;

	cr_assert_eq(anvil_rate_parse("60/1m", &r), 0);
	cr_expect_eq(r.n, 60);
	cr_expect_eq(r.period_ms, 60000);
	cr_assert_eq(anvil_rate_parse("5/10s", &r), 0);
	cr_expect_eq(r.period_ms, 10000);
	cr_assert_eq(anvil_rate_parse("1000/1d", &r), 0);
	const char *bad[] = {"",     "60",    "60/",   "/1m",    "0/1m",  "60/0m",
	                     "60/1", "60/1x", "-1/1m", "60/1mm", "60/8d", "60 /1m"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(anvil_rate_parse(bad[i], &r), -1, "%s", bad[i]);
}

Test(anvil, keys_are_cut_to_their_prefix)
{
	struct anvil_conf c = {.prefix4 = 24, .prefix6 = 64, .max_entries = 100};
	struct anvil *a = anvil_new(&c);
	struct anvil_key x, y;

	x = key4(a, "192.0.2.1");
	y = key4(a, "192.0.2.200");
	cr_expect_eq(memcmp(&x, &y, sizeof(x)), 0);
	y = key4(a, "192.0.3.1");
	cr_expect_neq(memcmp(&x, &y, sizeof(x)), 0);
	x = key6(a, "2001:db8:1:2:aaaa::1");
	y = key6(a, "2001:db8:1:2:bbbb::9");
	cr_expect_eq(memcmp(&x, &y, sizeof(x)), 0);
	y = key6(a, "2001:db8:1:3::1");
	cr_expect_neq(memcmp(&x, &y, sizeof(x)), 0);
	/* An IPv4-mapped address is its IPv4 address. */
	x = key6(a, "::ffff:192.0.2.77");
	y = key4(a, "192.0.2.1");
	cr_expect_eq(memcmp(&x, &y, sizeof(x)), 0);
	anvil_free(a);
}

Test(anvil, sessions_counted_and_released)
{
	struct anvil *a = table(3, NULL, NULL, 1000);
	struct anvil_key k = key4(a, "192.0.2.1"), o = key4(a, "192.0.2.2");

	for (int i = 0; i < 3; i++)
		cr_assert_eq(anvil_connect(a, &k, 1000), ANVIL_OK);
	cr_expect_eq(anvil_connect(a, &k, 1000), ANVIL_SESSIONS);
	cr_expect_eq(anvil_connect(a, &o, 1000), ANVIL_OK); /* another client */
	anvil_disconnect(a, &k, 1001);
	cr_expect_eq(anvil_connect(a, &k, 1002), ANVIL_OK);
	cr_expect_eq(anvil_connect(a, &k, 1002), ANVIL_SESSIONS);
	anvil_free(a);
}

Test(anvil, limits_change_while_counting)
{
	struct anvil *a = table(2, NULL, "5/1m", 1000);
	struct anvil_key k = key4(a, "192.0.2.9");
	struct anvil_conf c = {.max_sessions = 3};

	cr_assert_eq(anvil_connect(a, &k, 1000), ANVIL_OK);
	cr_assert_eq(anvil_connect(a, &k, 1000), ANVIL_OK);
	cr_expect_eq(anvil_connect(a, &k, 1000), ANVIL_SESSIONS);
	for (int i = 0; i < 3; i++)
		cr_expect(anvil_message(a, &k, 1000));
	/* A reload: one more session, the counts kept; a tighter message
	 * rate that the three counted already use up; no connection rate. */
	cr_assert_eq(anvil_rate_parse("3/1m", &c.msg), 0);
	anvil_set_limits(a, &c);
	cr_expect_eq(anvil_connect(a, &k, 1001), ANVIL_OK);
	cr_expect_eq(anvil_connect(a, &k, 1001), ANVIL_SESSIONS);
	cr_expect_not(anvil_message(a, &k, 1001));
	/* Lifted: no limit at all. */
	anvil_set_limits(a, &(struct anvil_conf){0});
	for (int i = 0; i < 20; i++) {
		cr_expect_eq(anvil_connect(a, &k, 1002), ANVIL_OK);
		cr_expect(anvil_message(a, &k, 1002));
	}
	anvil_free(a);
}

Test(anvil, rates_slide)
{
	struct anvil *a = table(0, "10/10s", "2/1m", 1000);
	struct anvil_key k = key4(a, "198.51.100.1");
	int64_t t = 1000000; /* 100 windows in */
	int ok = 0;

	for (int i = 0; i < 15; i++)
		ok += anvil_connect(a, &k, t) == ANVIL_OK;
	cr_expect_eq(ok, 10);
	/* Half a window later, half the old window still counts: 5 more. */
	ok = 0;
	for (int i = 0; i < 15; i++)
		ok += anvil_connect(a, &k, t + 15000) == ANVIL_OK;
	cr_expect_eq(ok, 5, "%d", ok);
	/* Two windows later, all of it again. */
	ok = 0;
	for (int i = 0; i < 15; i++)
		ok += anvil_connect(a, &k, t + 40000) == ANVIL_OK;
	cr_expect_eq(ok, 10, "%d", ok);
	cr_expect(anvil_message(a, &k, t));
	cr_expect(anvil_message(a, &k, t));
	cr_expect_not(anvil_message(a, &k, t));
	cr_expect(anvil_recipient(a, &k, t)); /* no recipient rate: no limit */
	anvil_free(a);
}

Test(anvil, idle_entries_expire)
{
	struct anvil *a = table(5, "10/1s", NULL, 1000);
	struct anvil_key k = key4(a, "192.0.2.1"), o = key4(a, "192.0.2.2");
	unsigned n = anvil_shards(a);

	cr_assert_eq(anvil_connect(a, &k, 1000), ANVIL_OK);
	cr_assert_eq(anvil_connect(a, &o, 1000), ANVIL_OK);
	anvil_disconnect(a, &o, 1000);
	cr_expect_eq(anvil_entries(a), 2);
	cr_expect_eq(anvil_sweep(a, 0, n, 1500), 0); /* its rate window still counts */
	cr_expect_eq(anvil_sweep(a, 0, n, 3001), 1); /* o is idle; k has a session */
	cr_expect_eq(anvil_entries(a), 1);
	anvil_disconnect(a, &k, 3001);
	cr_expect_eq(anvil_sweep(a, 0, n, 5002), 1);
	cr_expect_eq(anvil_entries(a), 0);
	anvil_free(a);
}

Test(anvil, a_million_clients_stay_within_the_table)
{
	struct anvil *a = table(50, "100/1s", NULL, 10000);
	size_t mem = anvil_memory(a);
	struct anvil_key k;
	unsigned refused = 0;

	for (uint32_t i = 0; i < 1000000; i++) {
		struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};

		s6.sin6_addr.s6_addr[0] = 0x20;
		s6.sin6_addr.s6_addr[1] = 0x01;
		memcpy(&s6.sin6_addr.s6_addr[4], &i, 4); /* distinct /64s */
		anvil_key_of(a, (struct sockaddr *)&s6, &k);
		/* Clients come and go, 2 ms apart: the idle ones make room. */
		if (anvil_connect(a, &k, (int64_t)i * 2) != ANVIL_OK)
			refused++;
		anvil_disconnect(a, &k, (int64_t)i * 2);
		if (i % 1000 == 0)
			anvil_sweep(a, i / 1000, 16, (int64_t)i * 2);
	}
	cr_expect_eq(refused, 0);
	cr_expect_leq(anvil_entries(a), 10000 + anvil_shards(a));
	cr_expect_eq(anvil_memory(a), mem);
	anvil_free(a);
}

static struct anvil *shared;

static _Atomic int refused;

static void *hammer(void *arg)
{
	struct anvil_key k = *(struct anvil_key *)arg;

	for (int i = 0; i < 100000; i++) {
		if (anvil_connect(shared, &k, 1000) == ANVIL_OK)
			anvil_disconnect(shared, &k, 1000);
		else
			refused++;
	}
	return NULL;
}

Test(anvil, threads_share_one_count)
{
	pthread_t t[4];
	struct anvil_key k;

	/* Four threads, at most one session each open at a time, against a
	 * limit of four: a lost update would refuse one, or leave one open. */
	shared = table(4, NULL, NULL, 1000);
	k = key4(shared, "192.0.2.1");
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, &k);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cr_expect_eq(refused, 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(anvil_connect(shared, &k, 1000), ANVIL_OK);
	cr_assert_eq(anvil_connect(shared, &k, 1000), ANVIL_SESSIONS);
	anvil_free(shared);
}
