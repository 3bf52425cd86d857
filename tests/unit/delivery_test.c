/* delivery_test: the relay's delivery decisions without a socket: grouping
 * recipients by route into jobs, per-recipient results, settling (delivered,
 * deferred until the next retry, bounced, expired), failover between hops,
 * and the per-route queues. Each table row prints what it got and wanted. */
#include "queue/delivery.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW   1700000000
#define MAXR  8u /* recipients per case, at most */
#define NOHOP -1 /* a recipient without a route */

static const char *const addrs[MAXR] = {"a@one.example",   "b@two.example",  "c@one.example",
                                        "d@three.example", "e@two.example",  "f@one.example",
                                        "g@two.example",   "h@three.example"};
static const struct retry_conf dflt = RETRY_CONF_INIT;

/* A message from <from> that arrived at <arrival>, recipient i on route
 * routes[i] (NOHOP: none). */
static void msg_make(struct delivery_msg *m, const char *from, time_t arrival, unsigned n,
                     const int *routes)
{
	cr_assert_eq(delivery_msg_init(m, n), 0);
	m->qid = "4Xk1AbC";
	m->from = from;
	m->arrival = arrival;
	m->size = 1234;
	m->body_8bit = true;
	for (unsigned i = 0; i < n; i++) {
		m->rcpt[i].addr = addrs[i];
		if (routes[i] == NOHOP)
			delivery_rcpt_fail(m, i, "5.4.4 no route to the recipient's domain");
		else
			m->rcpt[i].route = (unsigned)routes[i];
	}
}

/* Kicks are recorded: the relay opens connections there. */
struct kicks {
	unsigned route[MAXR];
	unsigned n;
};

static void kick_rec(void *arg, unsigned route)
{
	struct kicks *k = arg;

	cr_assert_lt(k->n, MAXR);
	k->route[k->n++] = route;
}

/* ---- grouping recipients by route ---- */

struct group_case {
	const char *name;
	unsigned nroutes, nrcpt;
	int routes[MAXR];
	unsigned njobs;
	struct {
		unsigned route, n, idx[MAXR];
	} job[MAXR]; /* in route order */
};

static const struct group_case group_cases[] = {
    {"one route", 1, 3, {0, 0, 0}, 1, {{0, 3, {0, 1, 2}}}},
    {"three routes interleaved",
     3,
     5,
     {1, 0, 1, 2, 0},
     3,
     {{0, 2, {1, 4}}, {1, 2, {0, 2}}, {2, 1, {3}}}},
    {"some without a route", 2, 4, {NOHOP, 1, NOHOP, 1}, 1, {{1, 2, {1, 3}}}},
    {"none with a route", 2, 2, {NOHOP, NOHOP}, 0, {{0}}},
    {"a route left empty", 3, 3, {2, 0, 2}, 2, {{0, 1, {1}}, {2, 2, {0, 2}}}},
};

Test(delivery, dispatch_groups_recipients_by_route_in_order)
{
	for (size_t c = 0; c < sizeof(group_cases) / sizeof(group_cases[0]); c++) {
		const struct group_case *gc = &group_cases[c];
		struct delivery_queue q;
		struct delivery_msg m;
		struct kicks k = {{0}, 0};
		unsigned nj = 0;

		cr_assert_eq(delivery_queue_init(&q, gc->nroutes), 0);
		msg_make(&m, "s@example.org", NOW, gc->nrcpt, gc->routes);
		cr_assert_eq(delivery_dispatch(&q, &m, kick_rec, &k), 0, "%s", gc->name);
		cr_expect_eq(m.jobs, gc->njobs, "%s: jobs: got %u, want %u", gc->name, m.jobs,
		             gc->njobs);
		cr_expect_eq(k.n, gc->njobs, "%s: kicks: got %u, want %u", gc->name, k.n,
		             gc->njobs);
		for (unsigned rt = 0; rt < gc->nroutes; rt++) {
			struct delivery_job *j = delivery_take(&q, rt);

			if (!j)
				continue;
			cr_assert_lt(nj, gc->njobs, "%s: an extra job on route %u", gc->name, rt);
			cr_expect_eq(k.route[nj], rt, "%s: kick %u: got route %u, want %u",
			             gc->name, nj, k.route[nj], rt);
			cr_expect_eq(j->route, gc->job[nj].route, "%s", gc->name);
			cr_expect_eq(j->n, gc->job[nj].n,
			             "%s: route %u: got %u recipients, want %u", gc->name, rt, j->n,
			             gc->job[nj].n);
			cr_expect_eq(j->cm.nrcpt, j->n);
			cr_expect_eq(j->cm.rcpts, (const char *const *)j->rcpts);
			cr_expect_str_eq(j->cm.from, "s@example.org");
			cr_expect_eq(j->cm.size, 1234);
			cr_expect(j->cm.body_8bit);
			for (unsigned i = 0; i < j->n && i < gc->job[nj].n; i++) {
				cr_expect_eq(j->idx[i], gc->job[nj].idx[i],
				             "%s: route %u [%u]: got %u, want %u", gc->name, rt, i,
				             j->idx[i], gc->job[nj].idx[i]);
				cr_expect_eq(j->rcpts[i], addrs[j->idx[i]]);
				cr_expect_eq(m.rcpt[j->idx[i]].state, DELIVERY_BUSY);
			}
			cr_expect_null(delivery_take(&q, rt), "%s: one job per route", gc->name);
			delivery_job_release(j);
			nj++;
		}
		cr_expect_eq(nj, gc->njobs, "%s", gc->name);
		for (unsigned i = 0; i < gc->nrcpt; i++)
			if (gc->routes[i] == NOHOP) {
				cr_expect_eq(m.rcpt[i].state, DELIVERY_FAILED, "%s", gc->name);
				cr_expect_str_eq(m.rcpt[i].why,
				                 "5.4.4 no route to the recipient's domain");
			}
		delivery_msg_fini(&m);
		delivery_queue_fini(&q);
	}
}

Test(delivery, no_route_at_all_bounces_with_a_local_reason)
{
	static const int routes[] = {NOHOP, NOHOP};
	struct delivery_queue q;
	struct delivery_msg m;
	struct delivery_settlement s;
	struct dsn_rcpt dr[2];

	cr_assert_eq(delivery_queue_init(&q, 1), 0);
	msg_make(&m, "s@example.org", NOW, 2, routes);
	cr_assert_eq(delivery_dispatch(&q, &m, NULL, NULL), 0);
	cr_assert_eq(m.jobs, 0);
	s = delivery_settle(&m, &dflt, NOW);
	cr_expect_eq(s.outcome, DELIVERY_SETTLE_BOUNCE);
	cr_expect_eq(s.failed, 2);
	cr_expect_eq(s.expired, 0);
	cr_assert_eq(delivery_bounce_rcpts(&m, dr, NOW), 2);
	cr_expect_str_eq(dr[1].addr, addrs[1]);
	cr_expect_null(dr[1].remote_mta);
	cr_expect_str_eq(dr[1].diag_type, "X-Ringmx");
	cr_expect_str_eq(dr[1].diag, "5.4.4 no route to the recipient's domain");
	cr_expect_eq(dr[1].action, DSN_FAILED);
	cr_expect_eq(dr[1].last_attempt, NOW);
	delivery_msg_fini(&m);
	delivery_queue_fini(&q);
}

/* ---- per-recipient results and the verdict ---- */

#define NORES 99 /* the client gave no result for this recipient */

struct result_case {
	const char *name;
	unsigned nrcpt;
	int st[MAXR]; /* enum smtp_client_status, or NORES */
	enum delivery_outcome outcome;
	unsigned failed;
	enum delivery_state want[MAXR];
};

static const struct result_case result_cases[] = {
    {"all delivered",
     3,
     {SMTPC_OK, SMTPC_OK, SMTPC_OK},
     DELIVERY_SETTLE_DONE,
     0,
     {DELIVERY_SENT, DELIVERY_SENT, DELIVERY_SENT}},
    {"2xx 4xx 5xx",
     3,
     {SMTPC_OK, SMTPC_TEMP, SMTPC_PERM},
     DELIVERY_SETTLE_DEFER,
     0,
     {DELIVERY_SENT, DELIVERY_PENDING, DELIVERY_FAILED}},
    {"all deferred",
     2,
     {SMTPC_TEMP, SMTPC_TEMP},
     DELIVERY_SETTLE_DEFER,
     0,
     {DELIVERY_PENDING, DELIVERY_PENDING}},
    {"2xx and 5xx",
     2,
     {SMTPC_OK, SMTPC_PERM},
     DELIVERY_SETTLE_BOUNCE,
     1,
     {DELIVERY_SENT, DELIVERY_FAILED}},
    {"all 5xx",
     2,
     {SMTPC_PERM, SMTPC_PERM},
     DELIVERY_SETTLE_BOUNCE,
     2,
     {DELIVERY_FAILED, DELIVERY_FAILED}},
    {"no result is a deferral",
     2,
     {SMTPC_OK, NORES},
     DELIVERY_SETTLE_DEFER,
     0,
     {DELIVERY_SENT, DELIVERY_PENDING}},
};

static const char *text_of(int st)
{
	switch (st) {
	case SMTPC_OK:
		return "250 2.0.0 Ok: queued";
	case SMTPC_TEMP:
		return "451 4.3.0 try later";
	case SMTPC_PERM:
		return "550 5.1.1 User unknown";
	default:
		return "4.4.0 no result";
	}
}

Test(delivery, results_decide_the_message)
{
	static const int one_route[MAXR] = {0};

	for (size_t c = 0; c < sizeof(result_cases) / sizeof(result_cases[0]); c++) {
		const struct result_case *rc = &result_cases[c];
		struct delivery_queue q;
		struct delivery_msg m;
		struct delivery_job *j;
		struct delivery_settlement s;
		unsigned pending = 0;

		cr_assert_eq(delivery_queue_init(&q, 1), 0);
		msg_make(&m, "s@example.org", NOW - 10, rc->nrcpt, one_route);
		cr_assert_eq(delivery_dispatch(&q, &m, NULL, NULL), 0);
		j = delivery_take(&q, 0);
		cr_assert_not_null(j);
		for (unsigned k = 0; k < j->n; k++) {
			int st = rc->st[k];
			enum delivery_state got = delivery_job_result(
			    j, k, st == NORES ? SMTPC_PENDING : (enum smtp_client_status)st,
			    text_of(st), st == NORES ? NULL : "mx.example:25");

			cr_expect_eq(got, rc->want[k], "%s [%u]: got state %d, want %d", rc->name,
			             k, got, rc->want[k]);
			cr_expect_str_eq(m.rcpt[k].why, text_of(st));
			if (st == NORES)
				cr_expect_null(m.rcpt[k].mta);
			else
				cr_expect_str_eq(m.rcpt[k].mta, "mx.example:25");
			pending += got == DELIVERY_PENDING;
		}
		cr_assert_eq(delivery_job_release(j), &m, "%s: its last job", rc->name);
		s = delivery_settle(&m, &dflt, NOW);
		cr_expect_eq(s.outcome, rc->outcome, "%s: got outcome %d, want %d", rc->name,
		             s.outcome, rc->outcome);
		cr_expect_eq(s.failed, rc->failed, "%s: got %u failed, want %u", rc->name, s.failed,
		             rc->failed);
		if (rc->outcome == DELIVERY_SETTLE_DEFER) {
			struct kicks k = {{0}, 0};

			cr_expect_eq(m.attempts, 1, "%s", rc->name);
			cr_expect_eq(s.next_try, NOW + 300, "%s: got next try %lld", rc->name,
			             (long long)s.next_try);
			cr_expect_eq(m.next_try, s.next_try);
			cr_expect_not_null(delivery_defer_why(&m));
			/* the next attempt carries only what is still pending */
			cr_assert_eq(delivery_dispatch(&q, &m, kick_rec, &k), 0);
			cr_assert_eq(k.n, 1);
			j = delivery_take(&q, 0);
			cr_assert_not_null(j);
			cr_expect_eq(j->n, pending, "%s: got %u, want %u", rc->name, j->n, pending);
			for (unsigned i = 0; i < j->n; i++)
				cr_expect_eq(rc->want[j->idx[i]], DELIVERY_PENDING);
			delivery_job_release(j);
		} else {
			struct dsn_rcpt dr[MAXR];
			unsigned n = delivery_bounce_rcpts(&m, dr, NOW);

			cr_expect_eq(m.attempts, 0, "%s", rc->name);
			cr_expect_null(delivery_defer_why(&m));
			cr_expect_eq(n, rc->failed, "%s", rc->name);
			for (unsigned i = 0; i < n; i++) {
				cr_expect_str_eq(dr[i].remote_mta, "mx.example:25");
				cr_expect_null(dr[i].diag_type, "a remote reply is smtp");
				cr_expect_str_eq(dr[i].diag, "550 5.1.1 User unknown");
			}
		}
		delivery_msg_fini(&m);
		delivery_queue_fini(&q);
	}
}

Test(delivery, deferrals_follow_the_retry_schedule)
{
	/* attempt n fails at NOW + t: the next one is due after 300 doubling up
	 * to 4000 */
	static const unsigned want[] = {300, 600, 1200, 2400, 4000, 4000};
	static const int one_route[MAXR] = {0};
	struct delivery_queue q;
	struct delivery_msg m;
	time_t now = NOW;

	cr_assert_eq(delivery_queue_init(&q, 1), 0);
	msg_make(&m, "s@example.org", NOW, 2, one_route);
	for (unsigned a = 0; a < sizeof(want) / sizeof(want[0]); a++) {
		struct delivery_settlement s;
		struct delivery_job *j;

		cr_assert_eq(delivery_dispatch(&q, &m, NULL, NULL), 0);
		j = delivery_take(&q, 0);
		cr_assert_not_null(j);
		cr_assert_eq(j->n, 2);
		delivery_job_result(j, 0, SMTPC_TEMP, "451 4.3.0 try later", "mx.example:25");
		delivery_job_result(j, 1, SMTPC_TEMP, "421 4.4.2 closing", "mx.example:25");
		cr_assert_eq(delivery_job_release(j), &m);
		s = delivery_settle(&m, &dflt, now);
		cr_expect_eq(s.outcome, DELIVERY_SETTLE_DEFER);
		cr_expect_eq(m.attempts, a + 1);
		cr_expect_eq(s.next_try, now + (time_t)want[a], "attempt %u: got +%lld, want +%u",
		             a + 1, (long long)(s.next_try - now), want[a]);
		cr_expect_str_eq(delivery_defer_why(&m), "451 4.3.0 try later");
		now = s.next_try;
	}
	delivery_msg_fini(&m);
	delivery_queue_fini(&q);
}

struct expiry_case {
	const char *name;
	const char *from;
	time_t age;
	enum delivery_outcome outcome;
};

Test(delivery, expired_deferral_bounces)
{
	static const struct retry_conf rc = {.min_backoff_s = 300,
	                                     .max_backoff_s = 4000,
	                                     .max_lifetime_s = 10000,
	                                     .bounce_lifetime_s = 100};
	static const struct expiry_case cases[] = {
	    {"young", "s@example.org", 9999, DELIVERY_SETTLE_DEFER},
	    {"at its lifetime", "s@example.org", 10000, DELIVERY_SETTLE_BOUNCE},
	    {"null sender, young", "", 99, DELIVERY_SETTLE_DEFER},
	    {"null sender, past bounce_lifetime", "", 100, DELIVERY_SETTLE_BOUNCE},
	};
	static const int one_route[MAXR] = {0};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct delivery_queue q;
		struct delivery_msg m;
		struct delivery_job *j;
		struct delivery_settlement s;
		struct dsn_rcpt dr[3];

		cr_assert_eq(delivery_queue_init(&q, 1), 0);
		msg_make(&m, cases[c].from, NOW - cases[c].age, 3, one_route);
		cr_assert_eq(delivery_dispatch(&q, &m, NULL, NULL), 0);
		j = delivery_take(&q, 0);
		delivery_job_result(j, 0, SMTPC_OK, "250 ok", "mx.example:25");
		delivery_job_result(j, 1, SMTPC_TEMP, "451 4.3.0 try later", "mx.example:25");
		delivery_job_why(j, "unused"); /* a job that came back: replies overwritten */
		delivery_job_release(j);
		/* recipient 2 came back with a local reason only */
		s = delivery_settle(&m, &rc, NOW);
		cr_expect_eq(s.outcome, cases[c].outcome, "%s: got %d, want %d", cases[c].name,
		             s.outcome, cases[c].outcome);
		if (cases[c].outcome == DELIVERY_SETTLE_DEFER) {
			cr_expect_eq(s.expired, 0, "%s", cases[c].name);
			cr_expect_leq(s.next_try, m.arrival + (cases[c].from[0] ? 10000 : 100),
			              "%s: the last try falls on the expiry", cases[c].name);
			cr_expect_eq(m.rcpt[0].state, DELIVERY_SENT);
		} else {
			cr_expect_eq(s.expired, 2, "%s", cases[c].name);
			cr_expect_eq(s.failed, 2, "%s", cases[c].name);
			cr_expect_eq(m.rcpt[0].state, DELIVERY_SENT);
			cr_expect_eq(m.rcpt[0].flags & DELIVERY_R_EXPIRED, 0);
			for (unsigned i = 1; i < 3; i++) {
				cr_expect_eq(m.rcpt[i].state, DELIVERY_FAILED);
				cr_expect(m.rcpt[i].flags & DELIVERY_R_EXPIRED);
			}
			cr_assert_eq(delivery_bounce_rcpts(&m, dr, NOW), 2);
			cr_expect_str_eq(dr[0].diag, "unused");
			cr_expect_str_eq(dr[0].remote_mta, "mx.example:25",
			                 "the hop that last replied is kept");
			cr_expect_null(dr[1].remote_mta);
			cr_expect_str_eq(dr[1].diag_type, "X-Ringmx");
		}
		delivery_msg_fini(&m);
		delivery_queue_fini(&q);
	}
}

Test(delivery, message_settles_after_its_last_job)
{
	static const int routes[] = {0, 1, 0};
	struct delivery_queue q;
	struct delivery_msg m;
	struct delivery_job *j0, *j1;

	cr_assert_eq(delivery_queue_init(&q, 2), 0);
	msg_make(&m, "s@example.org", NOW, 3, routes);
	cr_assert_eq(delivery_dispatch(&q, &m, NULL, NULL), 0);
	cr_assert_eq(m.jobs, 2);
	j0 = delivery_take(&q, 0);
	j1 = delivery_take(&q, 1);
	delivery_job_result(j1, 0, SMTPC_OK, "250 ok", "b.example:25");
	cr_expect_null(delivery_job_release(j1), "one job still out");
	delivery_job_why(j0, "4.4.1 connection failed");
	cr_expect_eq(delivery_job_release(j0), &m);
	cr_expect_str_eq(m.rcpt[0].why, "4.4.1 connection failed");
	cr_expect_str_eq(m.rcpt[2].why, "4.4.1 connection failed");
	cr_expect_null(m.rcpt[0].mta);
	cr_expect_eq(delivery_settle(&m, &dflt, NOW).outcome, DELIVERY_SETTLE_DEFER);
	cr_expect_eq(m.rcpt[0].state, DELIVERY_PENDING, "BUSY comes back PENDING");
	cr_expect_eq(m.rcpt[1].state, DELIVERY_SENT);
	cr_expect_str_eq(delivery_defer_why(&m), "4.4.1 connection failed");
	delivery_msg_fini(&m);
	delivery_queue_fini(&q);
}

Test(delivery, unqueued_jobs_give_their_recipients_back_uncounted)
{
	static const int routes[] = {0, 1, 0};
	struct delivery_queue q, q2;
	struct delivery_msg m;
	struct delivery_job *j;

	cr_assert_eq(delivery_queue_init(&q, 2), 0);
	msg_make(&m, "s@example.org", NOW, 3, routes);
	cr_assert_eq(delivery_dispatch(&q, &m, NULL, NULL), 0);
	cr_assert_eq(m.rcpt[0].state, DELIVERY_BUSY);
	j = delivery_take(&q, 0);
	delivery_job_result(j, 0, SMTPC_OK, "250 ok", "a.example:25"); /* one went */
	cr_expect_null(delivery_job_release(j));
	/* The routes change: the waiting job comes back, no attempt counted. */
	cr_expect_eq(delivery_job_unqueue(delivery_take(&q, 1)), &m);
	cr_expect_eq(m.jobs, 0);
	cr_expect_eq(m.attempts, 0);
	cr_expect_eq(m.rcpt[1].state, DELIVERY_PENDING);
	cr_expect_eq(m.rcpt[0].state, DELIVERY_SENT);
	/* Queued again in other routes: one job, for those still pending. */
	cr_assert_eq(delivery_queue_init(&q2, 1), 0);
	m.rcpt[1].route = 0;
	m.rcpt[2].route = 0;
	cr_assert_eq(delivery_dispatch(&q2, &m, NULL, NULL), 0);
	j = delivery_take(&q2, 0);
	cr_assert_not_null(j);
	cr_expect_eq(j->n, 1, "the one already sent is not sent again: %u", j->n);
	cr_expect_eq(j->idx[0], 1);
	delivery_job_unqueue(j);
	delivery_msg_fini(&m);
	delivery_queue_fini(&q);
	delivery_queue_fini(&q2);
}

/* ---- failover ---- */

struct failover_case {
	const char *name;
	unsigned hop, nhops, nconns, failures;
	bool connect;
	enum delivery_failover want;
	unsigned hop_after, failures_after;
};

Test(delivery, failover_tries_the_next_hop_then_downs_the_route)
{
	static const struct failover_case cases[] = {
	    {"connect fails, a next hop", 0, 2, 1, 0, true, DELIVERY_FO_NEXT_HOP, 1, 0},
	    {"connect fails at the last hop", 1, 2, 1, 0, true, DELIVERY_FO_ROUTE_DOWN, 1, 1},
	    {"others still trying", 0, 1, 3, 0, true, DELIVERY_FO_CLOSE, 0, 1},
	    {"the last of the pool fails", 0, 1, 3, 2, true, DELIVERY_FO_ROUTE_DOWN, 0, 3},
	    {"refused, a next hop", 0, 3, 1, 0, false, DELIVERY_FO_NEXT_HOP, 1, 0},
	    {"refused at the last hop: down at once", 2, 3, 4, 0, false, DELIVERY_FO_ROUTE_DOWN, 2,
	     0},
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct failover_case *fc = &cases[c];
		struct delivery_queue q;
		unsigned hop = fc->hop;
		enum delivery_failover got;

		cr_assert_eq(delivery_queue_init(&q, 2), 0);
		q.routes[1].failures = fc->failures;
		got = delivery_failover(&q, 1, &hop, fc->nhops, fc->nconns, fc->connect);
		cr_expect_eq(got, fc->want, "%s: got %d, want %d", fc->name, got, fc->want);
		cr_expect_eq(hop, fc->hop_after, "%s: hop %u, want %u", fc->name, hop,
		             fc->hop_after);
		cr_expect_eq(q.routes[1].failures, fc->failures_after, "%s: failures %u, want %u",
		             fc->name, q.routes[1].failures, fc->failures_after);
		cr_expect_eq(q.routes[0].failures, 0, "%s: other routes untouched", fc->name);
		delivery_route_up(&q, 1);
		cr_expect_eq(q.routes[1].failures, 0);
		delivery_queue_fini(&q);
	}
}

/* ---- per-route queues ---- */

#define BEHIND 20000u /* jobs behind a route that is down */

Test(delivery, queues_count_jobs_per_route)
{
	static const int r0[] = {0}, r1[] = {1};
	struct delivery_queue q;
	struct delivery_msg *m = calloc(BEHIND + 1, sizeof(*m));
	struct delivery_job *j;

	cr_assert_not_null(m);
	cr_assert_eq(delivery_queue_init(&q, 2), 0);
	/* a route that is down: nothing takes its jobs */
	for (unsigned i = 0; i < BEHIND; i++) {
		msg_make(&m[i], "s@example.org", NOW, 1, r0);
		cr_assert_eq(delivery_dispatch(&q, &m[i], NULL, NULL), 0);
		cr_assert_eq(delivery_waiting(&q, 0), i + 1);
	}
	msg_make(&m[BEHIND], "s@example.org", NOW, 1, r1);
	cr_assert_eq(delivery_dispatch(&q, &m[BEHIND], NULL, NULL), 0);
	cr_expect_eq(delivery_waiting(&q, 0), BEHIND);
	cr_expect_eq(delivery_waiting(&q, 1), 1);
	j = delivery_take(&q, 1);
	cr_expect_eq(j->msg, &m[BEHIND]);
	cr_expect_eq(delivery_job_release(j), &m[BEHIND]);
	cr_expect_eq(delivery_waiting(&q, 1), 0);
	cr_expect_null(delivery_take(&q, 1));
	/* oldest first */
	for (unsigned i = 0; i < BEHIND / 2; i++) {
		j = delivery_take(&q, 0);
		cr_assert_eq(j->msg, &m[i]);
		cr_assert_eq(delivery_job_release(j), &m[i]);
	}
	cr_expect_eq(delivery_waiting(&q, 0), BEHIND / 2);
	delivery_queue_fini(&q); /* frees the jobs still queued */
	for (unsigned i = 0; i <= BEHIND; i++)
		delivery_msg_fini(&m[i]);
	free(m);
}

Test(delivery, fini_of_zeroed_state_is_a_no_op)
{
	struct delivery_queue q = {0};
	struct delivery_msg m = {0};

	delivery_queue_fini(&q);
	delivery_msg_fini(&m);
	cr_assert_eq(delivery_msg_init(&m, 0), 0, "no recipient still allocates");
	cr_expect_eq(m.nrcpt, 0);
	delivery_msg_fini(&m);
}
