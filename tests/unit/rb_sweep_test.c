/* rb_sweep_test: the options of a ringmx-bench sweep: --sweep's list of
 * session counts and the [LABEL=]HOST:PORT of --server and --peer, table
 * driven, every bad form with the reason it gets. */
#include "bench/rb.h"

#include <criterion/criterion.h>
#include <string.h>

Test(rb_sweep, list_kept_in_the_order_given)
{
	int v[RB_SWEEP_MAX];
	char err[128] = "";

	cr_assert_eq(rb_sweep_parse("1,10,100,500", v, 1000000, err, sizeof(err)), 4, "%s", err);
	cr_assert(v[0] == 1 && v[1] == 10 && v[2] == 100 && v[3] == 500);
	cr_assert_eq(rb_sweep_parse("500,1,1", v, 1000000, err, sizeof(err)), 3);
	cr_assert(v[0] == 500 && v[1] == 1 && v[2] == 1);
	cr_assert_eq(rb_sweep_parse("7", v, 7, err, sizeof(err)), 1);
	cr_assert_eq(v[0], 7);
}

Test(rb_sweep, list_bad_forms_refused)
{
	static const struct {
		const char *in, *why;
	} cases[] = {
	    {"", "not a list"},     {",", "not a list"},         {"1,", "not a list"},
	    {",1", "not a list"},   {"1,,2", "not a list"},      {"1;2", "not a list"},
	    {"1 ,2", "not a list"}, {" 1", "not a list"},        {"+1", "not a list"},
	    {"-1", "not a list"},   {"0", "0 is not a session"}, {"1,0", "0 is not"},
	    {"1x", "not a list"},   {"1001", "1001 is not"},     {"99999999999999999999", "is not"},
	    {"1.5", "not a list"},
	};
	int v[RB_SWEEP_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[128] = "";

		cr_assert_eq(rb_sweep_parse(cases[i].in, v, 1000, err, sizeof(err)), -1,
		             "'%s' accepted", cases[i].in);
		cr_assert(strstr(err, cases[i].why), "'%s': got \"%s\", want \"%s\"", cases[i].in,
		          err, cases[i].why);
	}
}

Test(rb_sweep, list_at_most_sweep_max)
{
	char in[RB_SWEEP_MAX * 2 + 8], err[128] = "";
	int v[RB_SWEEP_MAX];
	size_t n = 0;

	for (int i = 0; i < RB_SWEEP_MAX; i++)
		n += (size_t)snprintf(in + n, sizeof(in) - n, "%s1", i ? "," : "");
	cr_assert_eq(rb_sweep_parse(in, v, 10, err, sizeof(err)), RB_SWEEP_MAX, "%s", err);
	snprintf(in + n, sizeof(in) - n, ",1");
	cr_assert_eq(rb_sweep_parse(in, v, 10, err, sizeof(err)), -1);
	cr_assert(strstr(err, "more than"), "%s", err);
}

Test(rb_sweep, target_forms)
{
	static const struct {
		const char *in, *label, *server, *host, *port;
	} cases[] = {
	    {"127.0.0.1:2525", "127.0.0.1:2525", "127.0.0.1:2525", "127.0.0.1", "2525"},
	    {"smtp-sink=127.0.0.1:2600", "smtp-sink", "127.0.0.1:2600", "127.0.0.1", "2600"},
	    {"[::1]:25", "[::1]:25", "[::1]:25", "::1", "25"},
	    {"v6=[fe80::1%lo]:65535", "v6", "[fe80::1%lo]:65535", "fe80::1%lo", "65535"},
	    {"mx.example.com:587", "mx.example.com:587", "mx.example.com:587", "mx.example.com",
	     "587"},
	    {"a=b=c:1", "a", "b=c:1", "b=c", "1"}, /* the first '=' ends the label */
	    {"postfix(smtpd)=localhost:25", "postfix(smtpd)", "localhost:25", "localhost", "25"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rb_target t;
		char err[128] = "";

		cr_assert_eq(rb_target_parse(cases[i].in, &t, err, sizeof(err)), 0, "'%s': %s",
		             cases[i].in, err);
		cr_assert_str_eq(t.label, cases[i].label, "'%s'", cases[i].in);
		cr_assert_str_eq(t.server, cases[i].server, "'%s'", cases[i].in);
		cr_assert_str_eq(t.host, cases[i].host, "'%s'", cases[i].in);
		cr_assert_str_eq(t.port, cases[i].port, "'%s'", cases[i].in);
	}
}

Test(rb_sweep, target_bad_forms_refused)
{
	static const struct {
		const char *in, *why;
	} cases[] = {
	    {"", "is not HOST:PORT"},
	    {"nohostport", "is not HOST:PORT"},
	    {"=127.0.0.1:25", "label before '=' is empty"},
	    {"a b=127.0.0.1:25", "not printable"},
	    {"\x01=127.0.0.1:25", "not printable"},
	    {"x=", "is not HOST:PORT"},
	    {":25", "no host"},
	    {"host:", "port is not"},
	    {"host:0", "port is not"},
	    {"host:65536", "port is not"},
	    {"host:25x", "port is not"},
	    {"host:+25", "port is not"},
	    {"host:000025", "port is not"},
	    {"[::1]25", "is not [ADDR]:PORT"},
	    {"[::1", "is not [ADDR]:PORT"},
	    {"[]:25", "no host"},
	    {"label_of_sixty_four_characters_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=h:1",
	     "over 63 characters"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rb_target t;
		char err[128] = "";

		cr_assert_eq(rb_target_parse(cases[i].in, &t, err, sizeof(err)), -1,
		             "'%s' accepted", cases[i].in);
		cr_assert(strstr(err, cases[i].why), "'%s': got \"%s\", want \"%s\"", cases[i].in,
		          err, cases[i].why);
	}
}

Test(rb_sweep, target_label_cut_to_its_field_when_none_given)
{
	char in[300];
	struct rb_target t;

	memset(in, 'h', 200);
	strcpy(in + 200, ":25");
	cr_assert_eq(rb_target_parse(in, &t, NULL, 0), 0);
	cr_assert_eq(strlen(t.label), sizeof(t.label) - 1);
	cr_assert_str_eq(t.server, in);
	cr_assert_eq(strlen(t.host), 200);
}
