/* Unit tests for core/prom: the exposition text, byte for byte, and the
 * counters of core/stats it prints. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/prom.h"
#include "core/stats.h"

static void expect(struct prom *p, const char *want)
{
	cr_assert_eq(p->err, 0, "err %d", p->err);
	cr_assert_str_eq(buf_cstr(&p->b), want);
	buf_free(&p->b);
}

Test(prom, family_writes_help_and_type)
{
	struct prom p = {BUF_INIT, 0};

	prom_family(&p, "ringmx_x_total", "counter", "Things counted.");
	expect(&p, "# HELP ringmx_x_total Things counted.\n# TYPE ringmx_x_total counter\n");
}

Test(prom, help_escapes_backslash_and_newline_not_quote)
{
	struct prom p = {BUF_INIT, 0};

	prom_family(&p, "a", "gauge", "x\\y\nz \"q\"");
	expect(&p, "# HELP a x\\\\y\\nz \"q\"\n# TYPE a gauge\n");
}

Test(prom, sample_without_labels)
{
	struct prom p = {BUF_INIT, 0};

	prom_sample_u64(&p, "ringmx_up", NULL, 0, 18446744073709551615ull);
	expect(&p, "ringmx_up 18446744073709551615\n");
}

Test(prom, label_values_escaped)
{
	struct prom p = {BUF_INIT, 0};
	const struct prom_label l[] = {{"a", "1"}, {"b", "q\"\\\nx"}};

	prom_sample_u64(&p, "m", l, 2, 7);
	expect(&p, "m{a=\"1\",b=\"q\\\"\\\\\\nx\"} 7\n");
}

Test(prom, floats_shortest_and_special)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
	    {0.1, "0.1"},
	    {1.0, "1"},
	    {2.5e-05, "2.5e-05"},
	    {1e21, "1e+21"},
	    {1.0 / 3.0, "0.333333333333333315"},
	    {-0.0, "-0"},
	    {INFINITY, "+Inf"},
	    {-INFINITY, "-Inf"},
	    {NAN, "NaN"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct prom p = {BUF_INIT, 0};
		char want[64];

		prom_sample(&p, "f", NULL, 0, cases[i].v);
		snprintf(want, sizeof(want), "f %s\n", cases[i].want);
		cr_assert_eq(p.err, 0);
		/* 1/3 needs 17 digits to read back; what matters is that it does. */
		if (i == 4) {
			cr_assert_eq(strtod(buf_cstr(&p.b) + 2, NULL), cases[i].v);
		} else {
			cr_assert_str_eq(buf_cstr(&p.b), want, "case %zu", i);
		}
		buf_free(&p.b);
	}
}

Test(prom, histogram_cumulative_with_inf_sum_count)
{
	static const struct stats_bounds bd = {3, {100, 1000, 10000}, 1e6};
	struct stats_hist h = {0};
	struct prom p = {BUF_INIT, 0};
	const struct prom_label l[] = {{"w", "0"}};

	stats_hist_observe_local(&h, &bd, 50);     /* first bucket */
	stats_hist_observe_local(&h, &bd, 100);    /* le is inclusive */
	stats_hist_observe_local(&h, &bd, 101);    /* second */
	stats_hist_observe_local(&h, &bd, 250000); /* above the last bound */
	prom_histogram(&p, "d_seconds", l, 1, &bd, &h);
	expect(&p, "d_seconds_bucket{w=\"0\",le=\"0.0001\"} 2\n"
	           "d_seconds_bucket{w=\"0\",le=\"0.001\"} 3\n"
	           "d_seconds_bucket{w=\"0\",le=\"0.01\"} 3\n"
	           "d_seconds_bucket{w=\"0\",le=\"+Inf\"} 4\n"
	           "d_seconds_sum{w=\"0\"} 0.250251\n"
	           "d_seconds_count{w=\"0\"} 4\n");
}

Test(prom, histogram_without_labels_has_only_le)
{
	static const struct stats_bounds bd = {1, {1}, 1};
	struct stats_hist h = {0};
	struct prom p = {BUF_INIT, 0};

	prom_histogram(&p, "b", NULL, 0, &bd, &h);
	expect(&p, "b_bucket{le=\"1\"} 0\nb_bucket{le=\"+Inf\"} 0\nb_sum 0\nb_count 0\n");
}

Test(prom, hist_sum_adds_threads)
{
	static const struct stats_bounds bd = {2, {1, 2}, 1};
	struct stats_hist a = {0}, b = {0}, acc = {0};

	stats_hist_observe_local(&a, &bd, 1);
	stats_hist_observe_local(&b, &bd, 2);
	stats_hist_observe_local(&b, &bd, 9);
	stats_hist_sum(&acc, &a, &bd);
	stats_hist_sum(&acc, &b, &bd);
	cr_assert(acc.bucket[0] == 1 && acc.bucket[1] == 1 && acc.bucket[2] == 1);
	cr_assert_eq(acc.sum, 12);
}

Test(prom, bad_names_fail_sticky)
{
	struct prom p = {BUF_INIT, 0};
	const struct prom_label bad[] = {{"__reserved", "x"}};

	cr_assert(prom_metric_name_ok("ringmx:x_total"));
	cr_assert(!prom_metric_name_ok("9x"));
	cr_assert(!prom_metric_name_ok("a-b"));
	cr_assert(!prom_metric_name_ok(""));
	cr_assert(prom_label_name_ok("le"));
	cr_assert(!prom_label_name_ok("a:b"));
	prom_sample_u64(&p, "ok", bad, 1, 1);
	cr_assert_eq(p.err, -EINVAL);
	prom_family(&p, "x", "gauge", "y");
	cr_assert_eq(p.err, -EINVAL);
	buf_free(&p.b);
}

Test(prom, counter_add_and_read)
{
	uint64_t c = 0;

	stats_add_local(&c, 3);
	stats_add_local(&c, 4);
	cr_assert_eq(stats_read(&c), 7);
	stats_set_local(&c, 1);
	cr_assert_eq(stats_read(&c), 1);
}
