/* dnsbl_test: the DNS list grammar (sites, filters, weights), the reverse
 * query names (IPv4, IPv6 nibbles), filters against answers, the score
 * and the sender domain's verdict. */
#include "core/dnsbl.h"

#include <criterion/criterion.h>
#include <string.h>

static struct dnsbl_site parse_ok(const char *s)
{
	struct dnsbl_site d;
	char err[200] = "";

	cr_assert_eq(dnsbl_site_parse(s, &d, err, sizeof(err)), 0, "%s: %s", s, err);
	return d;
}

static void parse_bad(const char *s)
{
	struct dnsbl_site d;
	char err[200] = "";

	cr_expect_eq(dnsbl_site_parse(s, &d, err, sizeof(err)), -1, "%s parsed", s);
	cr_expect_neq(err[0], '\0', "%s: no reason", s);
}

Test(dnsbl, site_weight_and_default)
{
	struct dnsbl_site d = parse_ok("Zen.Example*3");

	cr_expect_str_eq(d.domain, "zen.example");
	cr_expect_eq(d.weight, 3);
	cr_expect(!d.has_filter);
	d = parse_ok("bl.test");
	cr_expect_eq(d.weight, 1);
	d = parse_ok("list.dnswl.test=127.0.[0..255].[1..3]*-2");
	cr_expect_str_eq(d.domain, "list.dnswl.test");
	cr_expect_eq(d.weight, -2);
	cr_expect(d.has_filter);
}

Test(dnsbl, filters_match)
{
	struct dnsbl_site a = parse_ok("bl.test=127.0.0.2");
	struct dnsbl_site r = parse_ok("bl.test=127.0.0.[2..11]");
	struct dnsbl_site l = parse_ok("bl.test=127.0.0.[2;4;10]");
	struct dnsbl_site m = parse_ok("wl.test=127.0.[0..255].[1;3..5]*-1");
	struct dnsbl_site any = parse_ok("x.test");
	uint8_t q2[4] = {127, 0, 0, 2}, q3[4] = {127, 0, 0, 3}, q4[4] = {127, 0, 0, 4},
	        q11[4] = {127, 0, 0, 11}, q12[4] = {127, 0, 0, 12}, w[4] = {127, 0, 9, 4},
	        w2[4] = {127, 0, 9, 2}, pub[4] = {192, 0, 2, 1};

	cr_expect(dnsbl_match(&a, q2));
	cr_expect(!dnsbl_match(&a, q3));
	cr_expect(dnsbl_match(&r, q2) && dnsbl_match(&r, q11) && !dnsbl_match(&r, q12));
	cr_expect(dnsbl_match(&l, q4) && !dnsbl_match(&l, q3));
	cr_expect(dnsbl_match(&m, w) && !dnsbl_match(&m, w2));
	cr_expect(dnsbl_match(&any, q12));
	cr_expect(!dnsbl_match(&any, pub), "only 127/8 lists without a filter");
	uint8_t set[2][4] = {{127, 0, 0, 3}, {127, 0, 0, 10}};
	cr_expect(dnsbl_match_any(&l, (const uint8_t(*)[4])set, 2));
	cr_expect(!dnsbl_match_any(&a, (const uint8_t(*)[4])set, 2));
}

Test(dnsbl, bad_sites)
{
	parse_bad("");
	parse_bad("*3");
	parse_bad("bl..test");
	parse_bad(".bl.test");
	parse_bad("bl.test*");
	parse_bad("bl.test*0");
	parse_bad("bl.test*x");
	parse_bad("bl.test*3x");
	parse_bad("bl.test=127.0.0");
	parse_bad("bl.test=127.0.0.256");
	parse_bad("bl.test=127.0.0.[5..2]");
	parse_bad("bl.test=127.0.0.[2");
	parse_bad("bl.test=127.0.0.2x");
	parse_bad("bl test");
	parse_bad("bl.test=127.0.0.[1;2;3;4;5;6;7;8;9]");
}

Test(dnsbl, format_round_trip)
{
	const char *in[] = {"zen.example*3", "list.dnswl.test=127.0.[0..255].[1..3]*-2",
	                    "bl.test=127.0.0.[2;4;10]", "bl.test=127.0.0.2", "bl.test"};
	char out[300];

	for (unsigned i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		struct dnsbl_site d = parse_ok(in[i]);

		dnsbl_site_format(&d, out, sizeof(out));
		cr_expect_str_eq(out, in[i]);
	}
}

Test(dnsbl, reverse_names)
{
	char out[300];

	cr_assert_eq(dnsbl_reverse_name("192.0.2.99", "zen.example", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "99.2.0.192.zen.example");
	cr_assert_eq(dnsbl_ptr_name("127.0.0.1", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "1.0.0.127.in-addr.arpa");
	cr_assert_eq(dnsbl_reverse_name("2001:db8::567:89ab", "bl.test", out, sizeof(out)), 0);
	cr_expect_str_eq(out,
	                 "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test");
	cr_assert_eq(dnsbl_ptr_name("::1", out, sizeof(out)), 0);
	cr_expect_str_eq(
	    out, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa");
	/* A dual-stack listener's IPv4 client: its IPv4 names. */
	cr_assert_eq(dnsbl_reverse_name("::ffff:192.0.2.99", "zen.example", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "99.2.0.192.zen.example");
	cr_assert_eq(dnsbl_ptr_name("::FFFF:192.0.2.99", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "99.2.0.192.in-addr.arpa");
	cr_expect_str_eq(dnsbl_client_addr("::ffff:192.0.2.99"), "192.0.2.99");
	cr_expect_str_eq(dnsbl_client_addr("2001:db8::1"), "2001:db8::1");
	cr_expect_eq(dnsbl_reverse_name("unknown", "bl.test", out, sizeof(out)), -1);
	cr_expect_eq(dnsbl_reverse_name("192.0.2.1", "bl.test", out, 10), -1);
	cr_assert_eq(dnsbl_rhs_name("Example.COM.", "rhs.test", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "Example.COM.rhs.test");
	cr_expect_eq(dnsbl_rhs_name("[192.0.2.1]", "rhs.test", out, sizeof(out)), -1);
}

Test(dnsbl, score_weights_and_top)
{
	struct dnsbl_site s[3] = {parse_ok("a.test*1"), parse_ok("b.test*3"),
	                          parse_ok("w.test*-5")};
	struct dnsbl_score sc = {0, -1};

	dnsbl_score_add(&sc, s, 0);
	cr_expect_eq(sc.score, 1);
	cr_expect_eq(sc.top, 0);
	dnsbl_score_add(&sc, s, 1);
	cr_expect_eq(sc.score, 4);
	cr_expect_eq(sc.top, 1);
	dnsbl_score_add(&sc, s, 2);
	cr_expect_eq(sc.score, -1);
	cr_expect_eq(sc.top, 1, "an allowlist is never the one named");
}

Test(dnsbl, sender_verdicts)
{
	struct dns_sender d = {0};

	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_WAIT);
	d.mx = DNS_R_OK;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_OK);
	d.null_mx = true;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_NULL_MX);
	d = (struct dns_sender){.mx = DNS_R_NXDOMAIN};
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_UNKNOWN);
	d = (struct dns_sender){.mx = DNS_R_TEMP};
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_TEMP);
	d = (struct dns_sender){.mx = DNS_R_NODATA};
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_ASK_ADDR);
	d.a = DNS_R_NODATA;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_WAIT);
	d.aaaa = DNS_R_OK;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_OK);
	d.aaaa = DNS_R_NODATA;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_UNKNOWN);
	d.aaaa = DNS_R_TEMP;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_TEMP);
	d.a = DNS_R_OK;
	cr_expect_eq(dns_sender_verdict(&d), DNS_SENDER_OK);
}
