/* cluster_rate_test: the sans-I/O half of --limits-redis: fixed windows
 * on the wall clock, the client's text, the keys, the RESP commands (cut
 * where hiredis needs them) and the verdict from Redis's counts. */
#include "core/cluster_rate.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>

static struct anvil_rate rate(const char *s)
{
	struct anvil_rate r;

	cr_assert_eq(anvil_rate_parse(s, &r), 0, "%s", s);
	return r;
}

Test(cluster_rate, window_is_a_multiple_of_the_period)
{
	static const struct {
		const char *rate;
		int64_t now, start, into;
	} cases[] = {
	    {"10/1m", 0, 0, 0},
	    {"10/1m", 59999, 0, 59999},
	    {"10/1m", 60000, 60000, 0},
	    {"10/1m", 1796645761234, 1796645760000, 1234},
	    {"5/1h", 1796645761234, 1796644800000, 961234},
	    {"5/1d", 86400000 * 3 + 5, 86400000 * 3, 5},
	    {"10/1m", -1, -60000, 59999}, /* floor, not truncation */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct anvil_rate r = rate(cases[i].rate);
		struct cluster_rate_win w;

		cluster_rate_window(&r, cases[i].now, &w);
		cr_expect_eq(w.start_ms, cases[i].start, "case %zu: start %lld", i,
		             (long long)w.start_ms);
		cr_expect_eq(w.into_ms, cases[i].into, "case %zu: into %lld", i,
		             (long long)w.into_ms);
	}
}

static struct anvil_key key_of(const char *ip, unsigned p4, unsigned p6)
{
	struct anvil_conf c = {.prefix4 = p4, .prefix6 = p6, .max_entries = 16};
	struct anvil *a = anvil_new(&c);
	struct sockaddr_storage ss = {0};
	struct anvil_key k;

	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	cr_assert_eq(anvil_key_of(a, (struct sockaddr *)&ss, &k), 0);
	anvil_free(a);
	return k;
}

Test(cluster_rate, client_text_carries_the_prefix)
{
	static const struct {
		const char *ip;
		unsigned p4, p6;
		const char *want;
	} cases[] = {
	    {"192.0.2.7", 32, 64, "192.0.2.7/32"},
	    {"192.0.2.7", 24, 64, "192.0.2.0/24"},
	    {"2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"},
	    {"2001:db8:1:2:3:4:5:6", 32, 128, "2001:db8:1:2:3:4:5:6/128"},
	    {"::ffff:192.0.2.9", 32, 64, "192.0.2.9/32"}, /* mapped: counts as IPv4 */
	    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 32, 128,
	     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
	};
	char out[CLUSTER_RATE_CLIENT_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct anvil_key k = key_of(cases[i].ip, cases[i].p4, cases[i].p6);
		int n = cluster_rate_client(&k, cases[i].p4, cases[i].p6, out);

		cr_expect_eq(n, (int)strlen(cases[i].want), "case %zu: %d", i, n);
		cr_expect_str_eq(out, cases[i].want, "case %zu", i);
	}
	struct anvil_key bad = {{0}};
	cr_expect_eq(cluster_rate_client(&bad, 32, 64, out), -1);
}

Test(cluster_rate, keys_name_kind_client_and_window_start)
{
	char key[CLUSTER_RATE_KEY_MAX], big[CLUSTER_RATE_KEY_MAX];

	cr_assert_eq(cluster_rate_key(CLUSTER_RATE_MSG, "192.0.2.7/32", 1796645760000, key), 39);
	cr_assert_str_eq(key, "ringmx:rate:msg:192.0.2.7/32:1796645760");
	cluster_rate_key(CLUSTER_RATE_CONN, "2001:db8::/64", 60000, key);
	cr_assert_str_eq(key, "ringmx:rate:conn:2001:db8::/64:60");
	cluster_rate_key(CLUSTER_RATE_RCPT, "x/1", 0, key);
	cr_assert_str_eq(key, "ringmx:rate:rcpt:x/1:0");
	/* The longest client fits with a 20-digit start. */
	cr_assert_gt(cluster_rate_key(CLUSTER_RATE_RCPT,
	                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
	                              INT64_MAX / 1000 * 1000, key),
	             0);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(cluster_rate_key(CLUSTER_RATE_MSG, big, 0, key), -1);
}

Test(cluster_rate, commands_are_resp_cut_per_command)
{
	struct anvil_rate r = rate("10/1m");
	struct buf b = BUF_INIT;
	size_t end[CLUSTER_RATE_CMDS];
	char key[CLUSTER_RATE_KEY_MAX];
	int64_t into = -1;
	static const char want[] =
	    "*6\r\n$3\r\nSET\r\n$39\r\nringmx:rate:msg:192.0.2.7/32:1796645760\r\n$1\r\n0\r\n"
	    "$2\r\nPX\r\n$6\r\n125000\r\n$2\r\nNX\r\n"
	    "*2\r\n$4\r\nINCR\r\n$39\r\nringmx:rate:msg:192.0.2.7/32:1796645760\r\n"
	    "*2\r\n$3\r\nGET\r\n$39\r\nringmx:rate:msg:192.0.2.7/32:1796645700\r\n";

	buf_append(&b, "x", 1); /* appended after what is there */
	cr_assert_eq(cluster_rate_build(&b, CLUSTER_RATE_MSG, "192.0.2.7/32", &r, 1796645761234,
	                                end, key, &into),
	             0);
	cr_assert_eq(b.len, 1 + sizeof(want) - 1);
	cr_assert_eq(memcmp(b.p + 1, want, sizeof(want) - 1), 0, "%.*s", (int)b.len, b.p);
	cr_assert_str_eq(key, "ringmx:rate:msg:192.0.2.7/32:1796645760");
	cr_assert_eq(into, 1234);
	/* Each command ends where the next one's '*' is. */
	cr_assert_eq(end[CLUSTER_RATE_CMDS - 1], b.len);
	for (unsigned i = 0; i + 1 < CLUSTER_RATE_CMDS; i++) {
		cr_assert_lt(end[i], end[i + 1]);
		cr_assert_eq(b.p[end[i]], '*', "command %u", i);
	}
	cr_assert_eq(memcmp(b.p + end[1], "*2\r\n$3\r\nGET\r\n", 13), 0);
	b.len = 0;
	cr_assert_eq(cluster_rate_undo(&b, key), 0);
	cr_assert_eq(b.len, strlen("*2\r\n$4\r\nDECR\r\n$39\r\n\r\n") + 39);
	cr_assert_eq(memcmp(b.p, "*2\r\n$4\r\nDECR\r\n$39\r\nringmx:rate:msg:", 34), 0);
	buf_free(&b);
}

Test(cluster_rate, verdict_is_the_sliding_estimate)
{
	struct anvil_rate r = rate("10/1m");

	/* <cur> includes the event asked about. */
	cr_assert(cluster_rate_fits(&r, 0, 1, 0));
	cr_assert(cluster_rate_fits(&r, 0, 10, 0));
	cr_assert_not(cluster_rate_fits(&r, 0, 11, 0));
	/* At the window's start the previous one counts whole, halfway half. */
	cr_assert_not(cluster_rate_fits(&r, 0, 1, 10));
	cr_assert(cluster_rate_fits(&r, 30000, 5, 10));     /* 5 + 4 < 10 */
	cr_assert_not(cluster_rate_fits(&r, 30000, 6, 10)); /* 5 + 5 */
	cr_assert(cluster_rate_fits(&r, 59999, 10, 1000));  /* 1000 x 1/60000 = 0 */
	/* Odd answers never refuse more than the counts say. */
	cr_assert(cluster_rate_fits(&r, 0, 0, -5));
	/* The same estimate as the local table's. */
	for (int64_t into = 0; into < 60000; into += 7919)
		for (uint64_t prev = 0; prev < 25; prev += 3)
			for (uint64_t cur = 0; cur < 12; cur++)
				cr_assert_eq(
				    cluster_rate_fits(&r, into, (int64_t)cur + 1, (int64_t)prev),
				    anvil_rate_fits(&r, prev, cur, into));
}
