/* policy_test: domain list syntax, lookup, domains file, relay networks. */
#include "core/policy.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct policy pol;
static char err[256];

static void setup(void)
{
	policy_init(&pol);
	err[0] = '\0';
}

static void teardown(void)
{
	policy_fini(&pol);
}

TestSuite(policy, .init = setup, .fini = teardown);

static bool accepted(const char *d)
{
	return policy_domain_accepted(&pol, sv_cstr(d));
}

Test(policy, empty_policy_accepts_nothing)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};

	policy_finish(&pol);
	cr_assert_not(accepted("example.com"));
	cr_assert_not(policy_client_may_relay(&pol, (struct sockaddr *)&sin));
	cr_assert_not(policy_client_may_relay(&pol, NULL));
}

Test(policy, domains_lowercased_sorted_deduplicated)
{
	cr_assert_eq(policy_add_domains(&pol, "B.example, a.example\tb.EXAMPLE. ,c.example", err,
	                                sizeof(err)),
	             0, "%s", err);
	cr_assert_eq(policy_add_domains(&pol, "A.EXAMPLE.", err, sizeof(err)), 0, "%s", err);
	policy_finish(&pol);
	cr_assert_eq(pol.ndomains, 3);
	cr_assert_str_eq(pol.domains[0], "a.example");
	cr_assert_str_eq(pol.domains[1], "b.example");
	cr_assert_str_eq(pol.domains[2], "c.example");
	policy_finish(&pol); /* idempotent */
	cr_assert_eq(pol.ndomains, 3);
}

Test(policy, lookup_case_trailing_dot_literal_unknown)
{
	static const struct {
		const char *domain;
		bool want;
	} cases[] = {
	    {"example.com", true},
	    {"EXAMPLE.COM", true},
	    {"Example.Com.", true},
	    {"mx.example.org", true},
	    {"localhost", true},
	    {"example.co", false},
	    {"example.comm", false},
	    {"xample.com", false},
	    {"sub.example.com", false}, /* exact names only */
	    {"example.com..", false},
	    {".", false},
	    {"", false},
	    {"[127.0.0.1]", false},
	    {"[IPv6:::1]", false},
	    {"b\xc3\xbc"
	     "cher.example",
	     true}, /* UTF-8 stored as is */
	    {"B\xc3\xbc"
	     "CHER.example",
	     true},
	    {"zzz.example", false},
	    {"aaa", false},
	};

	cr_assert_eq(policy_add_domains(&pol,
	                                "example.com localhost mx.example.org "
	                                "b\xc3\xbc"
	                                "cher.example",
	                                err, sizeof(err)),
	             0, "%s", err);
	policy_finish(&pol);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(accepted(cases[i].domain), cases[i].want, "'%s': got %d want %d",
		             cases[i].domain, !cases[i].want, cases[i].want);
}

Test(policy, lookup_does_not_read_past_view)
{
	const char *s = "example.comXYZ";

	cr_assert_eq(policy_add_domains(&pol, "example.com", err, sizeof(err)), 0);
	policy_finish(&pol);
	cr_assert(policy_domain_accepted(&pol, sv_make(s, 11)));
	cr_assert_not(policy_domain_accepted(&pol, sv_make(s, 10)));
	cr_assert_not(policy_domain_accepted(&pol, sv_make("example.com\0", 12)));
}

Test(policy, lookup_many_domains)
{
	char name[64];

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "d%d.Example", 999 - i);
		cr_assert_eq(policy_add_domains(&pol, name, err, sizeof(err)), 0, "%s", err);
	}
	policy_finish(&pol);
	cr_assert_eq(pol.ndomains, 1000);
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "D%d.EXAMPLE", i);
		cr_assert(accepted(name), "%s", name);
	}
	cr_assert_not(accepted("d1000.example"));
}

Test(policy, domain_syntax)
{
	static const struct {
		const char *domain;
		const char *why; /* NULL: valid; else a word of the reason */
	} cases[] = {
	    {"example.com", NULL},
	    {"example.com.", NULL},
	    {"a", NULL},
	    {"xn--bcher-kva.example", NULL},
	    {"1.2.3.example", NULL},
	    {"a-b.c-d", NULL},
	    {"", "empty"},
	    {".", "empty"},
	    {"..", "empty label"},
	    {".example", "empty label"},
	    {"a..b", "empty label"},
	    {"-a.b", "starts with '-'"},
	    {"a-.b", "ends with '-'"},
	    {"a.b-", "ends with '-'"},
	    {"a_b.c", "invalid character"},
	    {"a b", "invalid character"},
	    {"user@example.com", "invalid character"},
	    {"[1.2.3.4]", "literal"},
	    {"a\x01", "invalid character"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = policy_domain_invalid(sv_cstr(cases[i].domain));

		if (!cases[i].why)
			cr_expect_null(why, "'%s': got '%s'", cases[i].domain, why);
		else
			cr_expect(why && strstr(why, cases[i].why), "'%s': got '%s' want '%s'",
			          cases[i].domain, why ? why : "(valid)", cases[i].why);
	}
}

Test(policy, domain_length_limits)
{
	char label[80], name[300];

	memset(label, 'a', 63);
	label[63] = '\0';
	cr_assert_null(policy_domain_invalid(sv_cstr(label)));
	label[63] = 'a';
	label[64] = '\0';
	cr_assert_not_null(policy_domain_invalid(sv_cstr(label)));

	/* 63+1+63+1+63+1+61 = 253 */
	memset(name, 'a', sizeof(name));
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	cr_assert_null(policy_domain_invalid(sv_cstr(name)));
	name[253] = '.'; /* the root dot does not count */
	name[254] = '\0';
	cr_assert_null(policy_domain_invalid(sv_cstr(name)));
	name[253] = 'a';
	cr_assert_not_null(policy_domain_invalid(sv_cstr(name)));
}

Test(policy, add_domains_rejects_garbage_with_reason)
{
	cr_assert_eq(policy_add_domains(&pol, "ok.example, bad..example", err, sizeof(err)),
	             -EINVAL);
	cr_assert(strstr(err, "bad..example"), "%s", err);
	cr_assert(strstr(err, "empty label"), "%s", err);
	cr_assert_eq(policy_add_domains(&pol, " , ,", err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "no domain"), "%s", err);
	cr_assert_eq(policy_add_domains(&pol, "a\nb\x7f", err, sizeof(err)), -EINVAL);
	cr_assert_null(strchr(err, '\x7f'), "%s", err);
}

static char *write_tmp(const char *content)
{
	char *path = strdup("/tmp/policy_test.XXXXXX");
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return path;
}

Test(policy, domains_file)
{
	char *path = write_tmp("# accepted domains\r\n"
	                       "Example.COM\r\n"
	                       "\r\n"
	                       "   \n"
	                       "mx.example.org.   # trailing comment\n"
	                       "a.example b.example\n"
	                       "last.example");

	cr_assert_eq(policy_load_domains_file(&pol, path, err, sizeof(err)), 0, "%s", err);
	policy_finish(&pol);
	cr_assert_eq(pol.ndomains, 5);
	cr_assert(accepted("example.com"));
	cr_assert(accepted("mx.example.org"));
	cr_assert(accepted("a.example"));
	cr_assert(accepted("last.example"));
	cr_assert_not(accepted("accepted"));
	unlink(path);
	free(path);
}

Test(policy, domains_file_error_names_file_and_line)
{
	char *path = write_tmp("good.example\n# c\nbad_domain\n");
	char want[300];

	cr_assert_eq(policy_load_domains_file(&pol, path, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:3: bad domain 'bad_domain'", path);
	cr_assert(strstr(err, want), "got '%s' want '%s'", err, want);
	unlink(path);
	free(path);
}

Test(policy, domains_file_missing)
{
	cr_assert_eq(
	    policy_load_domains_file(&pol, "/nonexistent/ringmx-domains", err, sizeof(err)),
	    -ENOENT);
	cr_assert(strstr(err, "/nonexistent/ringmx-domains"), "%s", err);
}

Test(policy, domains_file_is_a_directory)
{
	cr_assert_eq(policy_load_domains_file(&pol, "/tmp", err, sizeof(err)), -EISDIR);
	cr_assert(strstr(err, "/tmp: "), "%s", err);
}

Test(policy, domains_file_empty_is_no_domains)
{
	char *path = write_tmp("# nothing yet\n\n");

	cr_assert_eq(policy_load_domains_file(&pol, path, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(pol.ndomains, 0);
	unlink(path);
	free(path);
}

static bool relay4(const char *a)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};

	cr_assert_eq(inet_pton(AF_INET, a, &sin.sin_addr), 1, "%s", a);
	return policy_client_may_relay(&pol, (struct sockaddr *)&sin);
}

static bool relay6(const char *a)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};

	cr_assert_eq(inet_pton(AF_INET6, a, &sin6.sin6_addr), 1, "%s", a);
	return policy_client_may_relay(&pol, (struct sockaddr *)&sin6);
}

Test(policy, networks_ipv4)
{
	cr_assert_eq(
	    policy_add_networks(&pol, "10.0.0.0/8, 192.168.1.7 172.16.0.0/12", err, sizeof(err)), 0,
	    "%s", err);
	cr_assert_eq(pol.nnets, 3);
	cr_assert(relay4("10.0.0.0"));
	cr_assert(relay4("10.255.255.255"));
	cr_assert_not(relay4("11.0.0.0"));
	cr_assert_not(relay4("9.255.255.255"));
	cr_assert(relay4("192.168.1.7")); /* bare = /32 */
	cr_assert_not(relay4("192.168.1.6"));
	cr_assert_not(relay4("192.168.1.8"));
	cr_assert(relay4("172.31.255.255"));
	cr_assert_not(relay4("172.32.0.0"));
	cr_assert_not(relay6("::a00:1")); /* IPv4-compatible is not mapped */
	cr_assert(relay6("::ffff:10.1.2.3"));
	cr_assert_not(relay6("::ffff:11.1.2.3"));
}

Test(policy, networks_zero_prefix_matches_family)
{
	cr_assert_eq(policy_add_networks(&pol, "0.0.0.0/0", err, sizeof(err)), 0, "%s", err);
	cr_assert(relay4("1.2.3.4"));
	cr_assert(relay4("255.255.255.255"));
	cr_assert(relay6("::ffff:1.2.3.4"));
	cr_assert_not(relay6("2001:db8::1"));
	cr_assert_eq(policy_add_networks(&pol, "::/0", err, sizeof(err)), 0, "%s", err);
	cr_assert(relay6("2001:db8::1"));
}

Test(policy, networks_ipv6)
{
	cr_assert_eq(policy_add_networks(&pol, "::1, [2001:db8::]/32 [fe80::1] 2001:db8:ffff::/63",
	                                 err, sizeof(err)),
	             0, "%s", err);
	cr_assert(relay6("::1"));
	cr_assert_not(relay6("::2"));
	cr_assert(relay6("2001:db8:1234::5"));
	cr_assert_not(relay6("2001:db9::"));
	cr_assert(relay6("fe80::1"));
	cr_assert_not(relay6("fe80::1:1"));
	cr_assert(relay6("2001:db8:ffff:1:ffff::"));
	cr_assert_not(relay6("2001:db7:ffff:2::"));
	cr_assert_not(relay4("127.0.0.1"));
}

Test(policy, networks_odd_prefixes_and_host_bits_masked)
{
	cr_assert_eq(policy_add_networks(&pol, "10.1.2.3/9, 2001:db8::ff/121", err, sizeof(err)), 0,
	             "%s", err);
	cr_assert_eq(pol.nets[0].addr[0], 10);
	cr_assert_eq(pol.nets[0].addr[1], 0);
	cr_assert_eq(pol.nets[0].addr[2], 0);
	cr_assert_eq(pol.nets[0].prefix, 9);
	cr_assert(relay4("10.127.255.255"));
	cr_assert_not(relay4("10.128.0.0"));
	cr_assert_eq(pol.nets[1].addr[15], 0x80);
	cr_assert(relay6("2001:db8::80"));
	cr_assert(relay6("2001:db8::ff"));
	cr_assert_not(relay6("2001:db8::7f"));
}

Test(policy, networks_v4mapped_entry_is_ipv4)
{
	cr_assert_eq(policy_add_networks(&pol, "::ffff:192.0.2.0/120", err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_eq(pol.nets[0].family, AF_INET);
	cr_assert_eq(pol.nets[0].prefix, 24);
	cr_assert(relay4("192.0.2.200"));
	cr_assert(relay6("::ffff:192.0.2.1"));
	cr_assert_not(relay4("192.0.3.1"));
}

Test(policy, networks_full_length)
{
	cr_assert_eq(policy_add_networks(&pol, "203.0.113.9/32 2001:db8::9/128", err, sizeof(err)),
	             0, "%s", err);
	cr_assert(relay4("203.0.113.9"));
	cr_assert_not(relay4("203.0.113.8"));
	cr_assert(relay6("2001:db8::9"));
	cr_assert_not(relay6("2001:db8::8"));
}

Test(policy, networks_reject_garbage)
{
	static const char *const bad[] = {
	    "10.0.0.0/33", "::/129",     "10.0.0.0/",  "10.0.0.0/-1",  "10.0.0.0/8x",
	    "10.0.0",      "10.0.0.256", "[10.0.0.1]", "[::1",         "[::1]32",
	    "example.com", "/8",         "::1/1280",   "1.2.3.4/0008", "[::1]/",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_expect_eq(policy_add_networks(&pol, bad[i], err, sizeof(err)), -EINVAL, "%s",
		             bad[i]);
		cr_expect(strstr(err, bad[i]), "'%s': err '%s'", bad[i], err);
	}
	cr_assert_eq(pol.nnets, 0);
	cr_assert_eq(policy_add_networks(&pol, "", err, sizeof(err)), -EINVAL);
}

Test(policy, relay_ignores_other_families)
{
	struct sockaddr sa = {.sa_family = AF_UNIX};

	cr_assert_eq(policy_add_networks(&pol, "0.0.0.0/0 ::/0", err, sizeof(err)), 0);
	cr_assert_not(policy_client_may_relay(&pol, &sa));
}
