/* verify_wait_test: a worker's coalescing table: one entry per address
 * however many wait, waiters answered in arrival order, an entry kept
 * while its probe is in flight even when every waiter left. */
#include "core/verify_wait.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define K(s) (s), strlen(s)

Test(verify_wait, hundred_waiters_one_entry)
{
	struct verify_wait t;
	struct verify_waiter w[100] = {0};
	struct verify_wait_ent *e0 = NULL;
	unsigned created = 0;

	cr_assert_eq(verify_wait_init(&t, 16), 0);
	for (int i = 0; i < 100; i++) {
		bool c;
		struct verify_wait_ent *e = verify_wait_join(&t, K("a@x.test"), &w[i], &c);

		cr_assert_not_null(e);
		created += c;
		if (!e0)
			e0 = e;
		cr_assert_eq(e, e0);
	}
	cr_assert_eq(created, 1, "one probe for a hundred RCPTs");
	cr_assert_eq(t.n, 1);
	cr_assert_eq(e0->nwait, 100);
	e0->probing = true;
	verify_wait_leave(&t, &w[50]); /* that client went away */
	cr_assert_null(w[50].e);
	int n = 0;
	for (struct verify_waiter *x = verify_wait_finish(&t, e0), *next; x; x = next, n++) {
		next = x->next;
		cr_assert_eq(x, &w[n < 50 ? n : n + 1], "arrival order");
		cr_assert_null(x->e);
	}
	cr_assert_eq(n, 99);
	cr_assert_eq(t.n, 0);
	cr_assert_null(verify_wait_find(&t, K("a@x.test")));
	verify_wait_fini(&t);
}

Test(verify_wait, entry_outlives_its_waiters_while_probing)
{
	struct verify_wait t;
	struct verify_waiter a = {0}, b = {0};
	bool c;

	cr_assert_eq(verify_wait_init(&t, 4), 0);
	struct verify_wait_ent *e = verify_wait_join(&t, K("p@x.test"), &a, &c);
	e->probing = true;
	verify_wait_leave(&t, &a);
	cr_assert_eq(verify_wait_find(&t, K("p@x.test")), e, "its probe is in flight");
	cr_assert_eq(verify_wait_finish(&t, e), NULL, "nobody to answer");
	cr_assert_eq(t.n, 0);
	/* Without a probe, the last one out frees it. */
	e = verify_wait_join(&t, K("q@x.test"), &b, &c);
	cr_assert(c);
	verify_wait_leave(&t, &b);
	cr_assert_null(verify_wait_find(&t, K("q@x.test")));
	verify_wait_leave(&t, &b); /* twice: nothing */
	verify_wait_fini(&t);
}

static void count_ent(struct verify_wait_ent *e, void *arg)
{
	(void)e;
	++*(unsigned *)arg;
}

Test(verify_wait, many_addresses_share_buckets)
{
	struct verify_wait t;
	static struct verify_waiter w[500];
	char k[32];
	unsigned n = 0;
	bool c;

	cr_assert_eq(verify_wait_init(&t, 8), 0);
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof(k), "u%d@x.test", i % 250);
		cr_assert_not_null(verify_wait_join(&t, K(k), &w[i], &c));
		cr_assert_eq(c, i < 250);
	}
	cr_assert_eq(t.n, 250);
	verify_wait_each(&t, count_ent, &n);
	cr_assert_eq(n, 250);
	for (int i = 0; i < 500; i++)
		verify_wait_leave(&t, &w[i]);
	cr_assert_eq(t.n, 0);
	verify_wait_fini(&t);
}
