/* conf_test: defaults, every option valid and invalid, listen syntax, the
 * domains file, size suffixes, overflow, --help and --version. */
#include "core/conf.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 80

static struct conf conf;
static char err[512];
static char *outp;
static size_t outlen;

/* Runs conf_parse() on "ringmx" + <args> (NULL-terminated). */
static int parse(const char *const *args)
{
	char *argv[MAX_ARGS];
	FILE *out;
	int argc = 0, rc;

	argv[argc++] = (char *)"ringmx";
	while (*args) {
		cr_assert_lt(argc, MAX_ARGS - 1);
		argv[argc++] = (char *)*args++;
	}
	argv[argc] = NULL;
	free(outp);
	outp = NULL;
	out = open_memstream(&outp, &outlen);
	cr_assert_not_null(out);
	memset(err, 'X', sizeof(err) - 1); /* a stale message must not survive */
	err[sizeof(err) - 1] = '\0';
	rc = conf_parse(&conf, argc, argv, out, err, sizeof(err));
	fclose(out);
	return rc;
}

#define PARSE(...) parse((const char *const[]){__VA_ARGS__, NULL})
#define PARSE0()   parse((const char *const[]){NULL})

static void teardown(void)
{
	conf_fini(&conf);
	free(outp);
	outp = NULL;
}

TestSuite(conf, .fini = teardown);

static bool accepts(const char *d)
{
	return policy_domain_accepted(&conf.policy, sv_cstr(d));
}

static bool relays4(const char *a)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};

	inet_pton(AF_INET, a, &sin.sin_addr);
	return policy_client_may_relay(&conf.policy, (struct sockaddr *)&sin);
}

Test(conf, defaults)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&conf.listen[0].addr;

	cr_assert_eq(PARSE0(), CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, 1);
	cr_assert_str_eq(conf.listen[0].text, CONF_DEF_LISTEN);
	cr_assert_eq(sin->sin_family, AF_INET);
	cr_assert_eq(ntohs(sin->sin_port), 2525);
	cr_assert_eq(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
	cr_assert_eq(conf.listen[0].addrlen, sizeof(struct sockaddr_in));
	cr_assert_eq(conf.threads, 0);
	cr_assert_str_eq(conf.spool, "./spool");
	cr_assert_null(conf.hostname);
	cr_assert_eq(conf.policy.ndomains, 1);
	cr_assert(accepts("localhost"));
	cr_assert(accepts("LOCALHOST."));
	cr_assert_eq(conf.policy.nnets, 0);
	cr_assert_eq(conf.max_message_size, CONF_DEF_MAX_MESSAGE_SIZE);
	cr_assert_eq(conf.max_recipients, CONF_DEF_MAX_RECIPIENTS);
	cr_assert_eq(conf.max_sessions, CONF_DEF_MAX_SESSIONS);
	cr_assert_eq(conf.idle_timeout, CONF_DEF_IDLE_TIMEOUT);
	cr_assert_eq(conf.max_errors, CONF_DEF_MAX_ERRORS);
	cr_assert_eq(conf.grace, CONF_DEF_GRACE);
	cr_assert_eq(conf.greet_delay_ms, CONF_DEF_GREET_DELAY_MS);
	cr_assert_eq(conf.max_line_length, CONF_DEF_MAX_LINE_LENGTH);
	cr_assert_eq(conf.bare_policy, SMTP_DATA_BARE_REJECT);
	cr_assert_eq(conf.long_line_policy, SMTP_DATA_LONG_ACCEPT);
	cr_assert_eq(conf.log_level, LOG_INFO);
	cr_assert_eq(conf.log_format, LOG_FMT_TEXT);
	cr_assert_not(conf.check);
	cr_assert_not(conf.allow_untrusted_routing);
	cr_assert_not(conf.nul_strip);
	cr_assert_eq(conf.spool_compact_age, CONF_DEF_SPOOL_COMPACT_AGE);
	cr_assert_eq(outlen, 0);
	cr_assert_eq(conf.metrics_listen.addrlen, 0); /* no metrics server by default */
}

Test(conf, metrics_listen)
{
	cr_assert_eq(PARSE("--metrics-listen", "[::1]:9425"), CONF_OK, "%s", err);
	cr_assert_str_eq(conf.metrics_listen.text, "[::1]:9425");
	cr_assert_eq(conf.metrics_listen.addrlen, sizeof(struct sockaddr_in6));
	cr_assert_eq(conf.nlisten, 1); /* not an SMTP listener */
	conf_fini(&conf);
}

Test(conf, every_option_valid)
{
	cr_assert_eq(PARSE("--listen", "10.1.2.3:25", "--threads", "8", "--spool", "/var/spool/rx",
	                   "--hostname", "mx1.example.org", "--domains", "example.org",
	                   "--relay-networks", "10.0.0.0/8", "--max-message-size", "1m",
	                   "--max-recipients", "50", "--max-sessions", "20", "--idle-timeout", "60",
	                   "--max-errors", "0", "--grace", "5", "--greet-delay", "1500",
	                   "--max-line-length", "998", "--bare-lf", "normalize", "--long-lines",
	                   "reject", "--log-level", "debug", "--allow-untrusted-routing",
	                   "--spool-compact-age", "600", "--nul", "strip", "--check"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, 1);
	cr_assert_str_eq(conf.listen[0].text, "10.1.2.3:25");
	cr_assert_eq(conf.threads, 8);
	cr_assert_str_eq(conf.spool, "/var/spool/rx");
	cr_assert_str_eq(conf.hostname, "mx1.example.org");
	cr_assert(accepts("example.org"));
	cr_assert_not(accepts("localhost"));
	cr_assert(relays4("10.9.9.9"));
	cr_assert_eq(conf.max_message_size, 1048576);
	cr_assert_eq(conf.max_recipients, 50);
	cr_assert_eq(conf.max_sessions, 20);
	cr_assert_eq(conf.idle_timeout, 60);
	cr_assert_eq(conf.max_errors, 0);
	cr_assert_eq(conf.grace, 5);
	cr_assert_eq(conf.greet_delay_ms, 1500);
	cr_assert_eq(conf.max_line_length, 998);
	cr_assert_eq(conf.bare_policy, SMTP_DATA_BARE_NORMALIZE);
	cr_assert_eq(conf.long_line_policy, SMTP_DATA_LONG_REJECT);
	cr_assert_eq(conf.log_level, LOG_DEBUG);
	cr_assert(conf.allow_untrusted_routing);
	cr_assert_eq(conf.spool_compact_age, 600);
	cr_assert(conf.nul_strip);
	cr_assert(conf.check);
}

Test(conf, log_format_json)
{
	cr_assert_eq(PARSE("--log-format", "json"), CONF_OK, "%s", err);
	cr_assert_eq(conf.log_format, LOG_FMT_JSON);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--log-format=text"), CONF_OK, "%s", err);
	cr_assert_eq(conf.log_format, LOG_FMT_TEXT);
}

Test(conf, equals_form_and_unique_prefix)
{
	cr_assert_eq(PARSE("--max-recipients=7", "--max-mess=2k", "--bare=reject", "--long=accept",
	                   "--log-level=warning"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.max_recipients, 7);
	cr_assert_eq(conf.max_message_size, 2048);
	cr_assert_eq(conf.bare_policy, SMTP_DATA_BARE_REJECT);
	cr_assert_eq(conf.long_line_policy, SMTP_DATA_LONG_ACCEPT);
	cr_assert_eq(conf.log_level, LOG_WARN);
}

Test(conf, numeric_bounds_accepted)
{
	static const struct {
		const char *opt, *val;
		size_t off;
		unsigned want;
	} cases[] = {
	    {"--threads", "0", offsetof(struct conf, threads), 0},
	    {"--threads", "256", offsetof(struct conf, threads), 256},
	    {"--threads", "007", offsetof(struct conf, threads), 7},
	    {"--max-recipients", "1", offsetof(struct conf, max_recipients), 1},
	    {"--max-recipients", "1000000", offsetof(struct conf, max_recipients), 1000000},
	    {"--max-sessions", "1", offsetof(struct conf, max_sessions), 1},
	    {"--idle-timeout", "1", offsetof(struct conf, idle_timeout), 1},
	    {"--idle-timeout", "86400", offsetof(struct conf, idle_timeout), 86400},
	    {"--max-errors", "0", offsetof(struct conf, max_errors), 0},
	    {"--grace", "0", offsetof(struct conf, grace), 0},
	    {"--greet-delay", "0", offsetof(struct conf, greet_delay_ms), 0},
	    {"--greet-delay", "60000", offsetof(struct conf, greet_delay_ms), 60000},
	    {"--max-line-length", "3", offsetof(struct conf, max_line_length), 3},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(PARSE(cases[i].opt, cases[i].val), CONF_OK, "%s %s: %s", cases[i].opt,
		             cases[i].val, err);
		cr_expect_eq(*(unsigned *)(void *)((char *)&conf + cases[i].off), cases[i].want,
		             "%s %s", cases[i].opt, cases[i].val);
		conf_fini(&conf);
	}
}

Test(conf, size_suffixes)
{
	static const struct {
		const char *val;
		uint64_t want;
	} cases[] = {
	    {"0", 0},
	    {"1", 1},
	    {"10240000", 10240000},
	    {"10k", 10240},
	    {"10K", 10240},
	    {"2m", 2u << 20},
	    {"2M", 2u << 20},
	    {"3g", 3ull << 30},
	    {"3G", 3ull << 30},
	    {"0k", 0},
	    {"18446744073709551615", UINT64_MAX},
	    {"17179869183g", 17179869183ull << 30},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(PARSE("--max-message-size", cases[i].val), CONF_OK, "%s: %s",
		             cases[i].val, err);
		cr_expect_eq(conf.max_message_size, cases[i].want, "%s: got %llu", cases[i].val,
		             (unsigned long long)conf.max_message_size);
		conf_fini(&conf);
	}
}

/* Each bad command line fails with CONF_ERR and one line that starts with
 * "ringmx: " and names what was wrong. */
Test(conf, invalid_options)
{
	static const struct {
		const char *args[4];
		const char *want;
	} cases[] = {
	    {{"--listen", "1.2.3.4"}, "--listen: '1.2.3.4'"},
	    {{"--metrics-listen", "1.2.3.4"}, "--metrics-listen: '1.2.3.4' is not ADDR:PORT"},
	    {{"--metrics-listen", "127.0.0.1:2525"}, "--metrics-listen: '127.0.0.1:2525' is also"},
	    {{"--listen", "1.2.3.4:0"}, "--listen"},
	    {{"--listen", "1.2.3.4:65536"}, "--listen"},
	    {{"--listen", "1.2.3.4:-1"}, "--listen"},
	    {{"--listen", "1.2.3.4:+25"}, "--listen"},
	    {{"--listen", "1.2.3.4:"}, "--listen"},
	    {{"--listen", "1.2.3.4:25x"}, "--listen"},
	    {{"--listen", ":25"}, "--listen"},
	    {{"--listen", "::1:25"}, "--listen"},
	    {{"--listen", "[::1]25"}, "--listen"},
	    {{"--listen", "[::1:25"}, "--listen"},
	    {{"--listen", "[1.2.3.4]:25"}, "--listen"},
	    {{"--listen", "1.2.3:25"}, "--listen"},
	    {{"--listen", "localhost:25"}, "--listen: 'localhost:25'"},
	    {{"--listen", ""}, "--listen"},
	    {{"--listen", "1.2.3.4:25", "--listen", "1.2.3.4:25"}, "given twice"},
	    {{"--threads", "257"}, "--threads: '257' is out of range (0-256)"},
	    {{"--threads", "-1"}, "--threads: '-1' is not a number"},
	    {{"--threads", " 1"}, "--threads"},
	    {{"--threads", "+1"}, "--threads"},
	    {{"--threads", "1 "}, "--threads"},
	    {{"--threads", "0x10"}, "--threads"},
	    {{"--threads", ""}, "--threads"},
	    {{"--spool", ""}, "--spool"},
	    {{"--hostname", "a..b"}, "--hostname: 'a..b'"},
	    {{"--hostname", "-mx.example"}, "--hostname"},
	    {{"--hostname", "[192.0.2.1]"}, "--hostname"},
	    {{"--hostname", ""}, "--hostname"},
	    {{"--domains", ""}, "--domains"},
	    {{"--domains", "ok.example,bad_domain"}, "--domains: bad domain 'bad_domain'"},
	    {{"--domains-file", "/nonexistent/ringmx"}, "--domains-file: /nonexistent/ringmx"},
	    {{"--relay-networks", "10.0.0.0/33"}, "--relay-networks: bad network '10.0.0.0/33'"},
	    {{"--relay-networks", "example.com"}, "--relay-networks"},
	    {{"--relay-networks", ""}, "--relay-networks"},
	    {{"--max-message-size", "10x"}, "--max-message-size: '10x'"},
	    {{"--max-message-size", "10mm"}, "--max-message-size"},
	    {{"--max-message-size", "k"}, "--max-message-size"},
	    {{"--max-message-size", "-1"}, "--max-message-size"},
	    {{"--max-message-size", "1.5m"}, "--max-message-size"},
	    {{"--max-message-size", "18446744073709551616"},
	     "--max-message-size: "
	     "'18446744073709551616' is too "
	     "large"},
	    {{"--max-message-size", "17179869184g"}, "too large"},
	    {{"--max-message-size", "18014398509481984k"}, "too large"},
	    {{"--max-recipients", "abc"}, "--max-recipients: 'abc' is not a number"},
	    {{"--max-recipients", "0"}, "--max-recipients: '0' is out of range"},
	    {{"--max-recipients", "1000001"}, "--max-recipients"},
	    {{"--max-recipients", "99999999999999999999999"}, "--max-recipients"},
	    {{"--max-recipients", "4294967297"}, "--max-recipients"},
	    {{"--max-sessions", "0"}, "--max-sessions"},
	    {{"--idle-timeout", "0"}, "--idle-timeout"},
	    {{"--idle-timeout", "86401"}, "--idle-timeout"},
	    {{"--max-errors", "x"}, "--max-errors"},
	    {{"--max-errors", "1000001"}, "--max-errors"},
	    {{"--grace", "-1"}, "--grace"},
	    {{"--grace", "86401"}, "--grace"},
	    {{"--greet-delay", "60001"}, "--greet-delay"},
	    {{"--recipients-file", ""}, "--recipients-file: the file name is empty"},
	    {{"--recipient-delimiter", "+@"}, "--recipient-delimiter: '+@'"},
	    {{"--recipient-delimiter", "a b"}, "--recipient-delimiter"},
	    {{"--max-unknown-recipients", "x"}, "--max-unknown-recipients"},
	    {{"--verify-recipients", "example.com"},
	     "--verify-recipients needs a next hop to ask (--relay-to or --route)"},
	    {{"--verify-recipients", "bad_domain", "--relay-to", "127.0.0.1:25"},
	     "--verify-recipients: bad domain"},
	    {{"--verify-recipients", ", ", "--relay-to", "127.0.0.1:25"},
	     "--verify-recipients: a domain or 'all', none given"},
	    {{"--verify-positive-ttl", "0"}, "--verify-positive-ttl"},
	    {{"--verify-cache-size", "15"}, "--verify-cache-size"},
	    {{"--verify-pool", "101"}, "--verify-pool"},
	    {{"--unknown-recipient-delay", "60001"}, "--unknown-recipient-delay"},
	    {{"--max-line-length", "2"}, "--max-line-length"},
	    {{"--max-line-length", "1000001"}, "--max-line-length"},
	    {{"--bare-lf", "maybe"}, "--bare-lf: 'maybe'"},
	    {{"--bare-lf", "REJECT"}, "--bare-lf"},
	    {{"--error-delay", "60001"}, "--error-delay"},
	    {{"--listen-proxy", "127.0.0.1:2526"},
	     "--listen-proxy 127.0.0.1:2526 needs --proxy-networks"},
	    {{"--listen-tls-proxy", "127.0.0.1:465", "--proxy-networks", "10.0.0.1"},
	     "--listen-tls-proxy needs --tls-cert"},
	    {{"--proxy-networks", "10.0.0.0/40"}, "--proxy-networks: bad network"},
	    {{"--proxy-timeout", "0"}, "--proxy-timeout"},
	    {{"--nul", "keep"}, "--nul: 'keep' is not reject or strip"},
	    {{"--long-lines", "maybe"}, "--long-lines: 'maybe'"},
	    {{"--log-level", "loud"}, "--log-level: 'loud'"},
	    {{"--log-format", "xml"}, "--log-format: 'xml' is not text or json"},
	    {{"--check=yes"}, "option '--check' takes no argument"},
	    {{"--help=1"}, "option '--help' takes no argument"},
	    {{"--spool"}, "option '--spool' needs an argument"},
	    {{"--check", "--max-recipients"}, "option '--max-recipients' needs an argument"},
	    {{"--foo"}, "unknown option '--foo'"},
	    {{"--foo=bar"}, "unknown option '--foo'"},
	    {{"--max"}, "option '--max' is ambiguous"},
	    {{"-x"}, "unknown option '-x'"},
	    {{"-t", "4"}, "unknown option '-t'"},
	    {{"queue"}, "unexpected argument 'queue'"},
	    {{"--check", "extra"}, "unexpected argument 'extra'"},
	    {{"--", "extra"}, "unexpected argument 'extra'"},
	    {{"--max-recipients", "1\n2"}, "--max-recipients: '1?2'"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const *a = cases[i].args;
		int rc = parse(a);

		cr_expect_eq(rc, CONF_ERR, "%s %s: rc %d", a[0], a[1] ? a[1] : "", rc);
		cr_expect(strncmp(err, "ringmx: ", 8) == 0, "%s: '%s'", a[0], err);
		cr_expect(strstr(err, cases[i].want), "%s %s: got '%s' want '%s'", a[0],
		          a[1] ? a[1] : "", err, cases[i].want);
		cr_expect_null(strchr(err, '\n'), "%s: two lines: '%s'", a[0], err);
		cr_expect_eq(outlen, 0);
		conf_fini(&conf); /* safe after CONF_ERR */
	}
}

Test(conf, listen_ipv6)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&conf.listen[0].addr;

	cr_assert_eq(PARSE("--listen", "[::1]:25"), CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, 1);
	cr_assert_eq(sin6->sin6_family, AF_INET6);
	cr_assert_eq(ntohs(sin6->sin6_port), 25);
	cr_assert(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	cr_assert_eq(conf.listen[0].addrlen, sizeof(struct sockaddr_in6));
	cr_assert_str_eq(conf.listen[0].text, "[::1]:25");
}

Test(conf, listen_wildcards)
{
	struct conf_listen l;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&l.addr;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l.addr;

	cr_assert_eq(conf_parse_listen(&l, "*:25"), 0);
	cr_assert_eq(sin->sin_family, AF_INET);
	cr_assert_eq(sin->sin_addr.s_addr, htonl(INADDR_ANY));
	cr_assert_eq(ntohs(sin->sin_port), 25);
	cr_assert_str_eq(l.text, "*:25");
	cr_assert_eq(conf_parse_listen(&l, "0.0.0.0:65535"), 0);
	cr_assert_eq(sin->sin_addr.s_addr, htonl(INADDR_ANY));
	cr_assert_eq(ntohs(sin->sin_port), 65535);
	cr_assert_eq(conf_parse_listen(&l, "[::]:1"), 0);
	cr_assert_eq(sin6->sin6_family, AF_INET6);
	cr_assert(IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr));
	cr_assert_eq(ntohs(sin6->sin6_port), 1);
	cr_assert_eq(conf_parse_listen(&l, "[2001:db8::ffff:192.0.2.1]:587"), 0);
	cr_assert_eq(conf_parse_listen(&l, "[*]:25"), -EINVAL);
	cr_assert_eq(conf_parse_listen(&l, "[::1]:25:25"), -EINVAL);
	cr_assert_eq(conf_parse_listen(&l, "1.2.3.4:25:25"), -EINVAL);
	cr_assert_eq(conf_parse_listen(&l, "[fe80::1%eth0]:25"), -EINVAL);
}

Test(conf, listen_repeated_replaces_default)
{
	cr_assert_eq(PARSE("--listen", "127.0.0.1:25", "--listen", "[::1]:25", "--listen", "*:587"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, 3);
	cr_assert_str_eq(conf.listen[0].text, "127.0.0.1:25");
	cr_assert_str_eq(conf.listen[1].text, "[::1]:25");
	cr_assert_str_eq(conf.listen[2].text, "*:587");
	for (unsigned i = 0; i < conf.nlisten; i++)
		cr_assert_str_neq(conf.listen[i].text, CONF_DEF_LISTEN);
}

Test(conf, listen_limit)
{
	const char *args[2 * (CONF_MAX_LISTEN + 1) + 1];
	char addr[CONF_MAX_LISTEN + 1][32];

	for (int i = 0; i <= CONF_MAX_LISTEN; i++) {
		snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", 2000 + i);
		args[2 * i] = "--listen";
		args[2 * i + 1] = addr[i];
	}
	args[2 * CONF_MAX_LISTEN] = NULL;
	cr_assert_eq(parse(args), CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, CONF_MAX_LISTEN);
	conf_fini(&conf);
	args[2 * CONF_MAX_LISTEN] = "--listen";
	args[2 * CONF_MAX_LISTEN + 2] = NULL;
	cr_assert_eq(parse(args), CONF_ERR);
	cr_assert(strstr(err, "--listen: at most 16"), "%s", err);
}

Test(conf, domains_repeatable_and_replace_default)
{
	cr_assert_eq(PARSE("--domains", "a.example,B.example", "--domains", "c.example d.example",
	                   "--domains", "a.example"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.policy.ndomains, 4);
	cr_assert(accepts("b.example"));
	cr_assert(accepts("d.example"));
	cr_assert_not(accepts("localhost"));
}

Test(conf, domains_file)
{
	char path[] = "/tmp/conf_test.XXXXXX";
	const char *text = "# domains\r\nfile.example\r\n\r\nOther.Example.  # x\n";
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cr_assert_eq(PARSE("--domains-file", path, "--domains", "cli.example"), CONF_OK, "%s", err);
	cr_assert_eq(conf.policy.ndomains, 3);
	cr_assert(accepts("file.example"));
	cr_assert(accepts("other.example"));
	cr_assert(accepts("cli.example"));
	cr_assert_not(accepts("localhost"));
	conf_fini(&conf);

	cr_assert_eq(PARSE("--domains-file", path), CONF_OK, "%s", err);
	cr_assert_eq(conf.policy.ndomains, 2);
	cr_assert_not(accepts("localhost"));
	unlink(path);
}

Test(conf, domains_file_error_names_file_and_line)
{
	char path[] = "/tmp/conf_test.XXXXXX";
	const char *text = "ok.example\n\nnot a_domain\n";
	char want[128];
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cr_assert_eq(PARSE("--domains-file", path), CONF_ERR);
	snprintf(want, sizeof(want), "ringmx: --domains-file: %s:3: bad domain 'a_domain'", path);
	cr_assert(strstr(err, want), "got '%s' want '%s'", err, want);
	unlink(path);
}

Test(conf, recipient_options)
{
	cr_assert_eq(conf.nrecipients_files, 0);
	cr_assert_eq(PARSE("--recipients-file", "/a", "--recipients-file=/b",
	                   "--recipient-delimiter", "+-", "--recipients-exact-case",
	                   "--max-unknown-recipients", "0", "--unknown-recipient-delay", "250"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.nrecipients_files, 2);
	cr_assert_str_eq(conf.recipients_files[0], "/a");
	cr_assert_str_eq(conf.recipients_files[1], "/b");
	cr_assert_str_eq(conf.recipient_delimiter, "+-");
	cr_assert(conf.recipients_exact_case);
	cr_assert_eq(conf.max_unknown_recipients, 0);
	cr_assert_eq(conf.unknown_recipient_delay_ms, 250);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--recipient-delimiter", ""), CONF_OK, "%s", err);
	cr_assert_str_eq(conf.recipient_delimiter, "");
	cr_assert_eq(conf.max_unknown_recipients, CONF_DEF_MAX_UNKNOWN_RCPTS);
	cr_assert_not(conf.recipients_exact_case);
}

Test(conf, verify_options)
{
	struct sv d = SV_INIT("Example.COM");

	cr_assert_eq(PARSE("--relay-to", "127.0.0.1:25"), CONF_OK, "%s", err);
	cr_assert_not(conf.verify_all);
	cr_assert_eq(conf.verify_domains.ndomains, 0);
	cr_assert_eq(conf.verify_positive_ttl, 604800);
	cr_assert_eq(conf.verify_negative_ttl, 10800);
	cr_assert_eq(conf.verify_cache_size, 1000000);
	cr_assert_eq(conf.verify_timeout, 10);
	cr_assert_eq(conf.verify_pool, 2);
	cr_assert_not(conf.verify_fail_open);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--relay-to", "127.0.0.1:25", "--verify-recipients",
	                   "example.com, b.test", "--verify-recipients", "c.test",
	                   "--verify-fail-open", "--verify-positive-ttl", "60",
	                   "--verify-negative-ttl", "30", "--verify-cache-size", "5000",
	                   "--verify-pool", "3"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.verify_domains.ndomains, 3);
	cr_assert(policy_domain_accepted(&conf.verify_domains, d));
	cr_assert_not(conf.verify_all);
	cr_assert(conf.verify_fail_open);
	cr_assert_eq(conf.verify_positive_ttl, 60);
	cr_assert_eq(conf.verify_negative_ttl, 30);
	cr_assert_eq(conf.verify_cache_size, 5000);
	cr_assert_eq(conf.verify_pool, 3);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--route", "x.test=127.0.0.1:25", "--verify-recipients", "ALL"), CONF_OK,
	             "%s", err);
	cr_assert(conf.verify_all);
	cr_assert_eq(conf.verify_domains.ndomains, 0);
}

Test(conf, domain_sources_kept_in_order_for_reload)
{
	cr_assert_eq(
	    PARSE("--domains", "a.example", "--domains-file", "/etc/x", "--domains", "b.example"),
	    CONF_ERR);
	cr_assert_eq(PARSE("--domains", "a.example", "--domains", "b.example c.example"), CONF_OK,
	             "%s", err);
	cr_assert_eq(conf.ndomain_srcs, 2);
	cr_assert_str_eq(conf.domain_srcs[1].arg, "b.example c.example");
	cr_assert_not(conf.domain_srcs[1].file);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--check"), CONF_OK, "%s", err);
	cr_assert_eq(conf.ndomain_srcs, 1); /* the default */
	cr_assert_str_eq(conf.domain_srcs[0].arg, CONF_DEF_DOMAINS);
}

Test(conf, proxy_listeners)
{
	cr_assert_eq(PARSE("--listen-proxy", "127.0.0.1:2526", "--listen", "127.0.0.1:2525",
	                   "--proxy-networks", "10.0.0.0/8, ::1", "--proxy-timeout", "2"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, 2);
	cr_assert(conf.listen[0].proxy);
	cr_assert_not(conf.listen[0].tls);
	cr_assert_not(conf.listen[1].proxy);
	cr_assert_eq(conf.proxy_nets.nnets, 2);
	cr_assert_eq(conf.proxy_timeout, 2);
	cr_assert_eq(conf.policy.nnets, 0); /* balancers are not relay clients */
}

Test(conf, relay_networks_repeatable)
{
	cr_assert_eq(PARSE("--relay-networks", "10.0.0.0/8", "--relay-networks",
	                   "192.0.2.1, [2001:db8::]/32"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.policy.nnets, 3);
	cr_assert(relays4("10.1.1.1"));
	cr_assert(relays4("192.0.2.1"));
	cr_assert_not(relays4("192.0.2.2"));
}

Test(conf, help_prints_every_option)
{
	static const char *const lines[] = {
	    "Usage: ringmx [OPTIONS]\n",
	    "       ringmx queue --spool DIR [--count] [--all] [--json]\n",
	    "  --listen ADDR:PORT          address to listen on (default: 127.0.0.1:2525)\n",
	    "  --threads N ",
	    "  --spool DIR ",
	    "(default: ./spool)",
	    "  --hostname NAME ",
	    "  --domains LIST ",
	    "(default: localhost)",
	    "  --domains-file FILE ",
	    "  --relay-networks CIDRS ",
	    "  --allow-untrusted-routing ",
	    "  --recipients-file FILE ",
	    "  --listen-proxy ADDR:PORT ",
	    "  --listen-tls-proxy ADDR:PORT ",
	    "  --proxy-networks CIDRS ",
	    "  --proxy-timeout SECONDS ",
	    "  --error-delay MS ",
	    "  --nul reject|strip ",
	    "  --recipient-delimiter CHARS ",
	    "  --recipients-exact-case ",
	    "  --max-unknown-recipients N ",
	    "  --unknown-recipient-delay MS ",
	    "  --spool-compact-age SECONDS ",
	    "(default: 3600)",
	    "  --max-message-size BYTES ",
	    "(default: 10240000)",
	    "  --max-recipients N          recipients per message, 1-1000000 (default: 1000)\n",
	    "  --max-sessions N ",
	    "(default: 10000)",
	    "  --idle-timeout SECONDS ",
	    "(default: 300)",
	    "  --max-errors N ",
	    "(default: 20)",
	    "  --grace SECONDS ",
	    "(default: 30)",
	    "  --greet-delay MS ",
	    "  --max-line-length N ",
	    "(default: 1000)\n",
	    "  --bare-lf reject|normalize ",
	    "(default: reject)",
	    "  --long-lines accept|reject ",
	    "(default: accept)",
	    "  --log-level LEVEL ",
	    "(default: info)",
	    "  --log-format text|json ",
	    "(default: text)",
	    "  --check ",
	    "  -h, --help ",
	    "  -V, --version ",
	    "ringmx queue --spool DIR",
	    "--count ",
	    "--all ",
	};

	cr_assert_eq(PARSE("--help"), CONF_EXIT);
	cr_assert_not_null(outp);
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		cr_expect(strstr(outp, lines[i]), "missing '%s'", lines[i]);
	for (const char *l = outp; *l;) {
		const char *nl = strchr(l, '\n');

		cr_assert_not_null(nl);
		cr_expect_leq(nl - l, 100, "line over 100 columns: %.*s", (int)(nl - l), l);
		cr_expect_null(memchr(l, '\t', (size_t)(nl - l)));
		l = nl + 1;
	}
	cr_assert_eq(PARSE("-h"), CONF_EXIT);
	cr_assert(strncmp(outp, "Usage: ringmx [OPTIONS]\n", 24) == 0);
}

Test(conf, help_stops_before_later_options)
{
	cr_assert_eq(PARSE("--help", "--bogus"), CONF_EXIT);
	cr_assert_eq(PARSE("--bogus", "--help"), CONF_ERR);
	cr_assert_eq(outlen, 0);
}

Test(conf, version)
{
	cr_assert_eq(PARSE("--version"), CONF_EXIT);
	cr_assert(strncmp(outp, "ringmx ", 7) == 0, "%s", outp);
	cr_assert_eq(outp[outlen - 1], '\n');
	cr_assert_eq(strchr(outp, '\n'), outp + outlen - 1, "one line: %s", outp);
	cr_assert_eq(PARSE("-V"), CONF_EXIT);
	cr_assert(strncmp(outp, "ringmx ", 7) == 0);
}

Test(conf, parse_again_in_one_process)
{
	/* getopt state must be reset each time; run past the first option. */
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(PARSE("--max-recipients", "5", "--domains", "a.example b.example"),
		             CONF_OK, "%s", err);
		cr_assert_eq(conf.max_recipients, 5);
		cr_assert_eq(conf.policy.ndomains, 2);
		conf_fini(&conf);
		cr_assert_eq(PARSE("--max-recipients", "0"), CONF_ERR);
		conf_fini(&conf);
		cr_assert_eq(PARSE0(), CONF_OK);
		cr_assert_eq(conf.max_recipients, CONF_DEF_MAX_RECIPIENTS);
		conf_fini(&conf);
	}
	conf_fini(&conf); /* twice is harmless */
}

Test(conf, err_truncates_safely)
{
	char small[12];
	char *argv[] = {(char *)"ringmx", (char *)"--max-recipients", (char *)"abc", NULL};

	cr_assert_eq(conf_parse(&conf, 3, argv, stdout, small, sizeof(small)), CONF_ERR);
	cr_assert_eq(strlen(small), sizeof(small) - 1);
	cr_assert(strncmp(small, "ringmx: --m", 11) == 0);
}

Test(conf, spool_options)
{
	cr_assert_eq(PARSE("--segment-size", "1m", "--commit-window", "500", "--durability", "none",
	                   "--queue-capacity", "1024", "--spool-min-free", "10m"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.segment_size, 1u << 20);
	cr_assert_eq(conf.commit_window_us, 500);
	cr_assert(conf.durability_none);
	cr_assert_eq(conf.queue_capacity, 1024);
	cr_assert_eq(conf.spool_min_free, 10u << 20);
	conf_fini(&conf);

	cr_assert_eq(PARSE("--segment-size", "1k"), CONF_ERR);
	cr_assert(strstr(err, "--segment-size") && strstr(err, "too small"), "%s", err);
	cr_assert_eq(PARSE("--done-log-size", "16k"), CONF_OK, "%s", err);
	cr_assert_eq(conf.done_log_size, 16u << 10);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--done-log-size", "1k"), CONF_ERR);
	cr_assert(strstr(err, "--done-log-size") && strstr(err, "too small"), "%s", err);
	cr_assert_eq(PARSE("--durability", "maybe"), CONF_ERR);
	cr_assert(strstr(err, "--durability"), "%s", err);
	cr_assert_eq(PARSE("--commit-window", "2000000"), CONF_ERR);
	cr_assert_eq(PARSE("--queue-capacity", "3"), CONF_ERR);
	cr_assert_eq(PARSE("--spool-min-free", "5x"), CONF_ERR);
	cr_assert(strstr(err, "--spool-min-free"), "%s", err);
}

Test(conf, data_memory_options)
{
	cr_assert_eq(PARSE("--data-buffer", "1m", "--data-memory", "32m"), CONF_OK, "%s", err);
	cr_assert_eq(conf.data_buffer, 1u << 20);
	cr_assert_eq(conf.data_memory, 32u << 20);
	conf_fini(&conf);
	cr_assert_eq(PARSE0(), CONF_OK, "%s", err);
	cr_assert_eq(conf.data_buffer, 256u << 10);
	cr_assert_eq(conf.data_memory, 256u << 20);
	conf_fini(&conf);

	cr_assert_eq(PARSE("--data-buffer", "1k"), CONF_ERR);
	cr_assert(strstr(err, "--data-buffer") && strstr(err, "too small"), "%s", err);
	cr_assert_eq(PARSE("--data-memory", "100k"), CONF_ERR);
	cr_assert(strstr(err, "--data-memory") && strstr(err, "too small"), "%s", err);
	cr_assert_eq(PARSE("--data-memory", "lots"), CONF_ERR);
	cr_assert(strstr(err, "--data-memory"), "%s", err);
}

Test(conf, spool_defaults)
{
	cr_assert_eq(PARSE0(), CONF_OK, "%s", err);
	cr_assert_eq(conf.segment_size, CONF_DEF_SEGMENT_SIZE);
	cr_assert_eq(conf.done_log_size, CONF_DEF_DONE_LOG_SIZE);
	cr_assert_eq(conf.commit_window_us, CONF_DEF_COMMIT_WINDOW_US);
	cr_assert_not(conf.durability_none);
	cr_assert_eq(conf.spool_min_free, CONF_DEF_SPOOL_MIN_FREE);
	conf_fini(&conf);
}

/* ---- TLS ---- */

Test(conf, tls_defaults)
{
	cr_assert_eq(PARSE0(), CONF_OK, "%s", err);
	cr_assert_eq(conf.ntls_certs, 0);
	cr_assert_null(conf.tls_ciphers);
	cr_assert_eq(conf.tls_handshake_timeout, CONF_DEF_TLS_HANDSHAKE_TIMEOUT);
	cr_assert_eq(conf.tls_handshake_timeout, 10);
	cr_assert_not(conf.listen[0].tls);
}

Test(conf, tls_options)
{
	cr_assert_eq(PARSE("--tls-cert", "/etc/a.crt", "--tls-cert", "/etc/b.crt", "--tls-key",
	                   "/etc/a.key", "--listen", "127.0.0.1:25", "--listen-tls", "[::1]:465",
	                   "--tls-key", "/etc/b.key", "--listen-tls", "*:465", "--tls-ciphers",
	                   "ECDHE-RSA-AES128-GCM-SHA256", "--tls-handshake-timeout", "30"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.ntls_certs, 2);
	cr_assert_eq(conf.ntls_keys, 2);
	cr_assert_str_eq(conf.tls_certs[0].cert, "/etc/a.crt");
	cr_assert_str_eq(conf.tls_certs[0].key, "/etc/a.key");
	cr_assert_str_eq(conf.tls_certs[1].cert, "/etc/b.crt");
	cr_assert_str_eq(conf.tls_certs[1].key, "/etc/b.key");
	cr_assert_eq(conf.nlisten, 3);
	cr_assert_str_eq(conf.listen[0].text, "127.0.0.1:25");
	cr_assert_not(conf.listen[0].tls);
	cr_assert_str_eq(conf.listen[1].text, "[::1]:465");
	cr_assert(conf.listen[1].tls);
	cr_assert_eq(conf.listen[1].addr.ss_family, AF_INET6);
	cr_assert_str_eq(conf.listen[2].text, "*:465");
	cr_assert(conf.listen[2].tls);
	cr_assert_str_eq(conf.tls_ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
	cr_assert_eq(conf.tls_handshake_timeout, 30);
}

Test(conf, tls_cert_without_listen_tls_keeps_default_listener)
{
	cr_assert_eq(PARSE("--tls-cert", "c.pem", "--tls-key", "k.pem"), CONF_OK, "%s", err);
	cr_assert_eq(conf.ntls_certs, 1);
	cr_assert_eq(conf.nlisten, 1);
	cr_assert_str_eq(conf.listen[0].text, CONF_DEF_LISTEN);
	cr_assert_not(conf.listen[0].tls);
}

Test(conf, listen_tls_alone_replaces_default)
{
	cr_assert_eq(
	    PARSE("--listen-tls", "127.0.0.1:4650", "--tls-cert", "c.pem", "--tls-key", "k.pem"),
	    CONF_OK, "%s", err);
	cr_assert_eq(conf.nlisten, 1);
	cr_assert_str_eq(conf.listen[0].text, "127.0.0.1:4650");
	cr_assert(conf.listen[0].tls);
}

Test(conf, tls_invalid)
{
	static const struct {
		const char *args[8];
		const char *want;
	} bad[] = {
	    {{"--tls-cert", "a.crt"}, "ringmx: 1 --tls-cert but 0 --tls-key: they go in pairs"},
	    {{"--tls-key", "a.key"}, "ringmx: 0 --tls-cert but 1 --tls-key: they go in pairs"},
	    {{"--tls-cert", "a", "--tls-key", "k", "--tls-cert", "b"},
	     "ringmx: 2 --tls-cert but 1 --tls-key: they go in pairs"},
	    {{"--listen-tls", "127.0.0.1:465"},
	     "ringmx: --listen-tls needs --tls-cert and --tls-key"},
	    {{"--listen-tls", "127.0.0.1:25", "--listen", "127.0.0.1:25", "--tls-cert", "c",
	      "--tls-key", "k"},
	     "ringmx: --listen: '127.0.0.1:25' is given twice"},
	    {{"--listen", "127.0.0.1:25", "--listen-tls", "127.0.0.1:25"},
	     "ringmx: --listen-tls: '127.0.0.1:25' is given twice"},
	    {{"--listen-tls", "465"}, "ringmx: --listen-tls: '465' is not ADDR:PORT"},
	    {{"--tls-cert", ""}, "ringmx: --tls-cert: the file name is empty"},
	    {{"--tls-key", ""}, "ringmx: --tls-key: the file name is empty"},
	    {{"--tls-ciphers", ""}, "ringmx: --tls-ciphers: the list is empty"},
	    {{"--tls-handshake-timeout", "0"},
	     "ringmx: --tls-handshake-timeout: '0' is out of range"},
	    {{"--tls-handshake-timeout", "3601"},
	     "--tls-handshake-timeout: '3601' is out of range"},
	    {{"--tls-handshake-timeout", "10s"}, "--tls-handshake-timeout: '10s' is not a number"},
	    {{"--tls-cert"}, "option '--tls-cert' needs an argument"},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(parse(bad[i].args), CONF_ERR, "case %zu", i);
		cr_assert(strstr(err, bad[i].want), "case %zu: got '%s' want '%s'", i, err,
		          bad[i].want);
		cr_assert_null(strchr(err, '\n'), "one line");
	}
}

Test(conf, tls_cert_limit)
{
	const char *args[4 * (CONF_MAX_TLS_CERTS + 1) + 1];
	int n = 0;

	for (int i = 0; i < CONF_MAX_TLS_CERTS; i++) {
		args[n++] = "--tls-cert";
		args[n++] = "c.pem";
		args[n++] = "--tls-key";
		args[n++] = "k.pem";
	}
	args[n] = NULL;
	cr_assert_eq(parse(args), CONF_OK, "%s", err);
	cr_assert_eq(conf.ntls_certs, CONF_MAX_TLS_CERTS);
	conf_fini(&conf);
	args[n++] = "--tls-cert";
	args[n++] = "c.pem";
	args[n] = NULL;
	cr_assert_eq(parse(args), CONF_ERR);
	cr_assert(strstr(err, "--tls-cert: at most 16"), "%s", err);
}

Test(conf, help_lists_tls_options)
{
	static const char *const lines[] = {
	    "  --listen-tls ADDR:PORT      implicit TLS listener, as on port 465 (default: none)\n",
	    "  --tls-cert FILE ",
	    "  --tls-key FILE ",
	    "  --tls-ciphers LIST ",
	    "(default: ECDHE + AES-GCM/ChaCha20)\n",
	    "  --tls-handshake-timeout SECONDS  time a TLS handshake may take, 1-3600 (default: "
	    "10)\n",
	};

	cr_assert_eq(PARSE("--help"), CONF_EXIT);
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		cr_expect(strstr(outp, lines[i]), "missing '%s'", lines[i]);
}

/* The configuration file (--config): written to a temporary file. */
static char cfg_path[64];

static const char *write_cfg(const char *text)
{
	FILE *f;
	int fd;

	snprintf(cfg_path, sizeof(cfg_path), "/tmp/ringmx-conf-test-XXXXXX");
	fd = mkstemp(cfg_path);
	cr_assert_geq(fd, 0);
	f = fdopen(fd, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	return cfg_path;
}

/* conf_print() of the parsed <conf> into a malloc'd string. */
static char *printed(bool changed_only)
{
	char *s = NULL, why[256];
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	cr_assert_eq(conf_print(&conf, f, changed_only, NULL, 0, why, sizeof(why)), 0);
	fclose(f);
	return s;
}

Test(conf, file_sets_keys_lists_and_continuations)
{
	const char *p = write_cfg("# a comment\n"
	                          "max-sessions = 500\n"
	                          "\n"
	                          "domains = a.test,\n"
	                          "  b.test c.test\n"
	                          "listen = 127.0.0.1:2600, 127.0.0.1:2601\n"
	                          "bare-lf=normalize\n"
	                          "allow-untrusted-routing = yes\n"
	                          "max-message-size = 20m\n"
	                          "recipient-delimiter =\n"
	                          "route = example.org=10.0.0.1:25,10.0.0.2:25\n");

	cr_assert_eq(PARSE("--config", p), CONF_OK, "%s", err);
	cr_assert_eq(conf.max_sessions, 500);
	cr_assert(accepts("a.test") && accepts("b.test") && accepts("c.test"));
	cr_assert_not(accepts("localhost"), "the file's domains replace the default");
	cr_assert_eq(conf.nlisten, 2);
	cr_assert_str_eq(conf.listen[1].text, "127.0.0.1:2601");
	cr_assert_eq(conf.bare_policy, SMTP_DATA_BARE_NORMALIZE);
	cr_assert(conf.allow_untrusted_routing);
	cr_assert_eq(conf.max_message_size, 20u << 20);
	cr_assert_str_eq(conf.recipient_delimiter, "");
	cr_assert_eq(conf.nroutes, 1);
	cr_assert_str_eq(conf.routes[0], "example.org=10.0.0.1:25,10.0.0.2:25");
	cr_assert_str_eq(conf.config_file, p);
	unlink(p);
}

Test(conf, command_line_overrides_the_file)
{
	const char *p = write_cfg("max-sessions = 500\n"
	                          "max-errors = 3\n"
	                          "domains = a.test\n"
	                          "domains-file = /nonexistent/but/overridden\n"
	                          "listen = 127.0.0.1:2600\n");

	/* domains-file from the file would fail: replaced on the command line. */
	cr_assert_eq(PARSE("--config", p, "--max-sessions", "7", "--domains-file", "/dev/null",
	                   "--listen", "127.0.0.1:2700"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.max_sessions, 7);
	cr_assert_eq(conf.max_errors, 3);
	cr_assert(accepts("a.test"));
	cr_assert_eq(conf.nlisten, 1, "the command line's --listen replaces the file's");
	cr_assert_str_eq(conf.listen[0].text, "127.0.0.1:2700");
	unlink(p);
}

Test(conf, file_errors_name_file_line_and_key)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
	    {"max-sessionz = 5\n", ":1: unknown key 'max-sessionz'"},
	    {"\n# c\nmax-sessions = x\n", ":3: max-sessions: 'x' is not a number"},
	    {"max-sessions = 5\nmax-sessions = 6\n",
	     ":2: 'max-sessions' is given twice (first at line 1)"},
	    {"max-sessions 5\n", ":1: 'max-sessions 5' is not \"key = value\""},
	    {"  max-sessions = 5\n", ":1: a continuation line"},
	    {"check = yes\n", ":1: 'check' is a command-line option only"},
	    {"config = /x\n", ":1: 'config' is a command-line option only"},
	    {"max-sessions =\n", ":1: 'max-sessions' needs a value"},
	    {"bare-lf = maybe\n", ":1: bare-lf: 'maybe' is not reject or normalize"},
	    {"allow-untrusted-routing = perhaps\n", ":1: allow-untrusted-routing: 'perhaps'"},
	    {"listen = 127.0.0.1:1, nonsense\n", ":1: listen: 'nonsense' is not ADDR:PORT"},
	    {"domains-file = /nonexistent/d\n", ":1: domains-file: "},
	    {"a = 1\nmax-recipients = 0\n", ":1: unknown key 'a'"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = write_cfg(cases[i].text);
		char want[256];

		cr_expect_eq(PARSE("--config", p), CONF_ERR, "%s", cases[i].text);
		snprintf(want, sizeof(want), "ringmx: %s%s", p, cases[i].want);
		cr_expect(strstr(err, want), "got '%s' want '%s'", err, want);
		cr_expect_null(strchr(err, '\n'));
		conf_fini(&conf);
		unlink(p);
	}
	cr_expect_eq(PARSE("--config", "/nonexistent/ringmx.conf"), CONF_ERR);
	cr_expect(strstr(err, "/nonexistent/ringmx.conf: No such file"), "%s", err);
	cr_expect_eq(PARSE("--config", "/tmp"), CONF_ERR);
	cr_expect(strstr(err, "not a regular file"), "%s", err);
}

Test(conf, file_with_nul_byte_refused)
{
	const char *p = write_cfg("");
	FILE *f = fopen(p, "w");

	fwrite("max-sessions = 5\0\n", 1, 18, f);
	fclose(f);
	cr_assert_eq(PARSE("--config", p), CONF_ERR);
	cr_assert(strstr(err, "NUL"), "%s", err);
	unlink(p);
}

Test(conf, changed_only_output_round_trips)
{
	char *full, *changed, *again;
	const char *p;

	cr_assert_eq(PARSE("--max-sessions", "77", "--domains", "x.test, y.test", "--listen",
	                   "127.0.0.1:2600", "--listen-tls", "127.0.0.1:2601", "--tls-cert",
	                   "/c.pem", "--tls-key", "/k.pem", "--data-buffer", "512k",
	                   "--client-message-rate", "10/1m", "--nul", "strip", "--log-level",
	                   "debug", "--recipients-exact-case", "--spool-min-free", "1g", "--route",
	                   "a.test=10.0.0.1:25,10.0.0.2:25"),
	             CONF_OK, "%s", err);
	full = printed(false);
	changed = printed(true);
	cr_assert(strstr(changed, "max-sessions = 77\n"), "%s", changed);
	cr_assert(strstr(changed, "data-buffer = 512k\n"), "%s", changed);
	cr_assert_null(strstr(changed, "max-recipients"), "%s", changed);
	conf_fini(&conf);
	p = write_cfg(changed);
	cr_assert_eq(PARSE("--config", p), CONF_OK, "%s\n%s", err, changed);
	again = printed(false);
	cr_assert_str_eq(again, full);
	free(again);
	again = printed(true);
	cr_assert_str_eq(again, changed);
	free(again);
	free(full);
	free(changed);
	unlink(p);
}

Test(conf, example_file_is_the_defaults)
{
	char *ex = NULL, *lines, *defaults, *got;
	size_t n = 0, m = 0;
	FILE *f = open_memstream(&ex, &n);
	const char *p;

	conf_example(f);
	fclose(f);
	cr_assert(strstr(ex, "\n#max-sessions = 10000\n"), "%s", ex);
	cr_assert(strstr(ex, "\n#listen = 127.0.0.1:2525\n"), "%s", ex);
	/* Uncomment every key line: the file then says what the defaults are. */
	lines = calloc(1, n + 1);
	for (const char *l = ex; *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l + 1) : strlen(l);

		if (l[0] == '#' && l[1] >= 'a' && l[1] <= 'z' && memchr(l, '=', len)) {
			memcpy(lines + m, l + 1, len - 1);
			m += len - 1;
		}
		l += len;
	}
	cr_assert_eq(PARSE0(), CONF_OK);
	defaults = printed(false);
	conf_fini(&conf);
	p = write_cfg(lines);
	cr_assert_eq(PARSE("--config", p), CONF_OK, "%s", err);
	got = printed(false);
	cr_assert_str_eq(got, defaults);
	free(got);
	got = printed(true);
	cr_assert_str_eq(got, "", "the example changes nothing: %s", got);
	free(got);
	free(defaults);
	free(lines);
	free(ex);
	unlink(p);
}

Test(conf, changed_keys_say_whether_live)
{
	static struct conf other;
	const char *names[8];
	bool live[8];
	char *argv[] = {(char *)"ringmx", (char *)"--max-sessions",
	                (char *)"9",      (char *)"--threads",
	                (char *)"3",      NULL};
	size_t n;

	cr_assert_eq(PARSE0(), CONF_OK);
	cr_assert_eq(conf_parse(&other, 5, argv, stdout, err, sizeof(err)), CONF_OK);
	n = conf_changed(&conf, &other, names, live, 8);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(names[0], "threads");
	cr_assert_not(live[0]);
	cr_assert_str_eq(names[1], "max-sessions");
	cr_assert(live[1]);
	conf_fini(&other);
}

Test(conf, milters)
{
	cr_assert_eq(PARSE0(), CONF_OK, "%s", err);
	cr_assert_eq(conf.nmilters, 0);
	cr_assert_eq(conf.milter_timeout, CONF_DEF_MILTER_TIMEOUT);
	cr_assert_eq(conf.milter_default_action, CONF_MILTER_TEMPFAIL);
	cr_assert_eq(conf.milter_version, 6);
	cr_assert_not(conf.milter_no_header_reply);
	conf_fini(&conf);
	static const struct {
		const char *arg;
		unsigned v;
		bool nhr;
	} protos[] = {
	    {"2", 2, false},
	    {"3", 3, false},
	    {"4 no_header_reply", 4, true},
	    {"no_header_reply,2", 2, true},
	    {" 6 ", 6, false},
	};
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		cr_assert_eq(PARSE("--milter-protocol", protos[i].arg), CONF_OK, "%s", err);
		cr_assert_eq(conf.milter_version, protos[i].v, "%s", protos[i].arg);
		cr_assert_eq(conf.milter_no_header_reply, protos[i].nhr, "%s", protos[i].arg);
		cr_assert_str_eq(conf.milter_protocol, protos[i].arg);
		conf_fini(&conf);
	}
	cr_assert_eq(PARSE("--milter", "inet:127.0.0.1:11332", "--milter", "unix:/run/f.sock",
	                   "--milter-timeout", "5", "--milter-default-action", "accept"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.nmilters, 2);
	cr_assert_str_eq(conf.milters[0], "inet:127.0.0.1:11332");
	cr_assert_str_eq(conf.milters[1], "unix:/run/f.sock");
	cr_assert_eq(conf.milter_timeout, 5);
	cr_assert_eq(conf.milter_default_action, CONF_MILTER_ACCEPT);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--milter-default-action", "reject"), CONF_OK, "%s", err);
	cr_assert_eq(conf.milter_default_action, CONF_MILTER_REJECT);
	conf_fini(&conf);
	static const char *const bad[][2] = {
	    {"--milter", "127.0.0.1:11332"}, {"--milter", "inet:host"},
	    {"--milter", "inet:host:"},      {"--milter", "unix:relative"},
	    {"--milter-timeout", "0"},       {"--milter-default-action", "discard"},
	    {"--milter-protocol", "5"},      {"--milter-protocol", "2 6"},
	    {"--milter-protocol", ""},       {"--milter-protocol", "no_header_reply"},
	    {"--milter-protocol", "6 nhr"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(PARSE(bad[i][0], bad[i][1]), CONF_ERR, "%s %s", bad[i][0], bad[i][1]);
		cr_assert_not_null(strstr(err, bad[i][0]), "%s", err);
		conf_fini(&conf);
	}
	const char *nine[19] = {NULL};
	for (unsigned i = 0; i < 9; i++) {
		nine[2 * i] = "--milter";
		nine[2 * i + 1] = "unix:/f";
	}
	cr_assert_eq(parse(nine), CONF_ERR);
	cr_assert_not_null(strstr(err, "more than 8"), "%s", err);
}

Test(conf, limits_redis)
{
	static const char *const good[][3] = {
	    {"127.0.0.1:6379", "127.0.0.1", "6379"},
	    {"redis.example:1", "redis.example", "1"},
	    {"[2001:db8::5]:65535", "2001:db8::5", "65535"},
	};
	static const char *const bad[] = {
	    "",         "127.0.0.1",        "127.0.0.1:",
	    ":6379",    "host:0",           "host:65536",
	    "host:63x", "2001:db8::5:6379", "[2001:db8::5:6379",
	    "[]:6379",  "a b:6379",         "host:-1",
	};
	char host[256];
	unsigned port;

	cr_assert_eq(PARSE0(), CONF_OK);
	cr_assert_null(conf.limits_redis);
	cr_assert_eq(conf.limits_redis_timeout_ms, CONF_DEF_REDIS_TIMEOUT_MS);
	conf_fini(&conf);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cr_assert_eq(PARSE("--limits-redis", good[i][0]), CONF_OK, "%s: %s", good[i][0],
		             err);
		cr_assert_str_eq(conf.limits_redis, good[i][0]);
		cr_assert_eq(conf_split_hostport(good[i][0], host, sizeof(host), &port), 0);
		cr_assert_str_eq(host, good[i][1]);
		cr_assert_eq(port, (unsigned)atoi(good[i][2]));
		conf_fini(&conf);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(PARSE("--limits-redis", bad[i]), CONF_ERR, "'%s' taken", bad[i]);
		cr_assert(strstr(err, "--limits-redis:") && strstr(err, "HOST:PORT"), "%s", err);
		conf_fini(&conf);
	}
	cr_assert_eq(PARSE("--limits-redis-timeout", "200"), CONF_OK);
	cr_assert_eq(conf.limits_redis_timeout_ms, 200);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--limits-redis-timeout", "0"), CONF_ERR);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--limits-redis-timeout", "10001"), CONF_ERR);
}

Test(conf, dns_options)
{
	cr_assert_eq(PARSE("--dns-server", "127.0.0.1:5353", "--dns-server", "[::1]:53",
	                   "--dns-server", "192.0.2.53", "--dnsbl", "zen.example*3", "--dnsbl",
	                   "list.dnswl.test=127.0.[0..255].[1..3]*-2", "--dnsbl-threshold", "4",
	                   "--dnsbl-action", "tempfail", "--dnsbl-timeout", "500",
	                   "--dnsbl-cache-ttl", "0", "--rhsbl-sender", "dbl.example*2",
	                   "--peername-lookup", "--reject-unknown-client-hostname",
	                   "--reject-unknown-sender-domain"),
	             CONF_OK, "%s", err);
	cr_assert_eq(conf.ndns_servers, 3);
	cr_assert_str_eq(conf.dns_servers[1], "[::1]:53");
	cr_assert_eq(conf.ndnsbl, 2);
	cr_assert_str_eq(conf.dnsbl[0].domain, "zen.example");
	cr_assert_eq(conf.dnsbl[0].weight, 3);
	cr_assert_eq(conf.dnsbl[1].weight, -2);
	cr_assert(conf.dnsbl[1].has_filter);
	cr_assert_eq(conf.dnsbl_threshold, 4);
	cr_assert_eq(conf.dnsbl_action, CONF_DNSBL_TEMPFAIL);
	cr_assert_eq(conf.dnsbl_timeout_ms, 500);
	cr_assert_eq(conf.dnsbl_cache_ttl, 0);
	cr_assert_eq(conf.nrhsbl, 1);
	cr_assert_eq(conf.rhsbl[0].weight, 2);
	cr_assert(conf.peername_lookup && conf.reject_unknown_client_hostname &&
	          conf.reject_unknown_sender_domain);
	conf_fini(&conf);
	cr_assert_eq(PARSE0(), CONF_OK, "%s", err);
	cr_assert_eq(conf.ndnsbl, 0);
	cr_assert_eq(conf.dnsbl_threshold, 1);
	cr_assert_eq(conf.dnsbl_action, CONF_DNSBL_REJECT);
	cr_assert_eq(conf.dnsbl_timeout_ms, 2000);
	cr_assert_eq(conf.dnsbl_cache_ttl, 3600);
	conf_fini(&conf);
	cr_assert_eq(PARSE("--dnsbl", "zen..example"), CONF_ERR);
	cr_assert(strstr(err, "--dnsbl"), "%s", err);
	cr_assert_eq(PARSE("--dnsbl", "bl.test=127.0.0.[9..2]"), CONF_ERR);
	cr_assert_eq(PARSE("--dns-server", "dns.example:53"), CONF_ERR);
	cr_assert(strstr(err, "--dns-server"), "%s", err);
	cr_assert_eq(PARSE("--dnsbl-action", "drop"), CONF_ERR);
	cr_assert_eq(PARSE("--dnsbl-threshold", "0"), CONF_ERR);
}
