/* verify_cache_test: the shared cache of next-hop verdicts (TTLs, the
 * claim that coalesces probes across workers, CLOCK eviction within the
 * bound) and its persisted records (round trip, torn tails, garbage, a
 * later record replacing an earlier one, expired records dropped). */
#include "core/verify_cache.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define K(s) (s), strlen(s)

Test(verify_cache, key_lowercases_the_domain_only)
{
	char k[64];

	cr_assert_eq(verify_key(k, sizeof(k), K("John.Doe@Example.ORG")), 20);
	cr_assert_str_eq(k, "John.Doe@example.org");
	cr_assert_eq(verify_key(k, sizeof(k), K("Postmaster")), 10);
	cr_assert_str_eq(k, "Postmaster");
	cr_assert_eq(verify_key(k, 8, K("long@example.org")), 0, "no room: no key");
}

Test(verify_cache, results_live_for_their_ttl)
{
	struct verify_cache *vc = verify_cache_new(100);
	char text[VERIFY_TEXT_MAX + 1];

	cr_assert_eq(verify_cache_get(vc, K("a@x.test"), 1000, false, text, sizeof(text)),
	             VERIFY_NONE);
	cr_assert_eq(verify_cache_put(vc, K("a@x.test"), VERIFY_OK, NULL, 1100, 1000, NULL), 0);
	cr_assert_eq(verify_cache_put(vc, K("b@x.test"), VERIFY_REJECT, "550 5.1.1 no such user",
	                              1050, 1000, NULL),
	             0);
	cr_assert_eq(verify_cache_get(vc, K("a@x.test"), 1099, false, text, sizeof(text)),
	             VERIFY_OK);
	cr_assert_eq(verify_cache_get(vc, K("a@x.test"), 1100, false, text, sizeof(text)),
	             VERIFY_NONE, "expired at its ttl");
	cr_assert_eq(verify_cache_get(vc, K("b@x.test"), 1049, false, text, sizeof(text)),
	             VERIFY_REJECT);
	cr_assert_str_eq(text, "550 5.1.1 no such user");
	cr_assert_eq(verify_cache_get(vc, K("b@x.test"), 1050, false, text, sizeof(text)),
	             VERIFY_NONE);
	verify_cache_free(vc);
}

Test(verify_cache, temporary_results_only_reach_the_waiters)
{
	struct verify_cache *vc = verify_cache_new(100);
	char text[64];

	cr_assert_eq(verify_cache_put(vc, K("t@x.test"), VERIFY_TEMP, "4.4.1 next hop down", 1005,
	                              1000, NULL),
	             0);
	cr_assert_eq(verify_cache_get(vc, K("t@x.test"), 1001, false, text, sizeof(text)),
	             VERIFY_NONE, "not cached for new lookups");
	cr_assert_eq(verify_cache_get(vc, K("t@x.test"), 1001, true, text, sizeof(text)),
	             VERIFY_TEMP);
	cr_assert_str_eq(text, "4.4.1 next hop down");
	/* A new lookup probes again. */
	cr_assert_eq(verify_cache_claim(vc, K("t@x.test"), 1001, 1011, 0, text, sizeof(text)),
	             VERIFY_NONE);
	/* Temporary results are never journaled. */
	struct buf j = BUF_INIT;
	cr_assert_eq(verify_cache_journal_take(vc, &j), 0);
	cr_assert_eq(j.len, 0);
	buf_free(&j);
	verify_cache_free(vc);
}

Test(verify_cache, claim_coalesces_probes_across_workers)
{
	struct verify_cache *vc = verify_cache_new(100);
	uint64_t woken[VERIFY_WMASK_WORDS] = {0};
	char text[64];

	cr_assert_eq(verify_cache_claim(vc, K("c@x.test"), 1000, 1010, 0, text, sizeof(text)),
	             VERIFY_NONE, "worker 0 probes");
	cr_assert_eq(verify_cache_claim(vc, K("c@x.test"), 1000, 1010, 1, text, sizeof(text)),
	             VERIFY_PENDING);
	cr_assert_eq(verify_cache_claim(vc, K("c@x.test"), 1001, 1011, 70, text, sizeof(text)),
	             VERIFY_PENDING);
	cr_assert_eq(verify_cache_claim(vc, K("c@x.test"), 1001, 1011, 1, text, sizeof(text)),
	             VERIFY_PENDING);
	cr_assert_eq(verify_cache_get(vc, K("c@x.test"), 1001, false, text, sizeof(text)),
	             VERIFY_PENDING);
	cr_assert_eq(
	    verify_cache_put(vc, K("c@x.test"), VERIFY_REJECT, "550 unknown", 2000, 1002, woken),
	    0);
	cr_assert_eq(woken[0], 1ull << 1, "worker 1, once");
	cr_assert_eq(woken[1], 1ull << 6, "worker 70");
	cr_assert_eq(woken[2] | woken[3], 0);
	cr_assert_eq(verify_cache_claim(vc, K("c@x.test"), 1003, 1013, 2, text, sizeof(text)),
	             VERIFY_REJECT, "answered from the cache now");
	cr_assert_str_eq(text, "550 unknown");
	verify_cache_free(vc);
}

Test(verify_cache, stale_pending_is_taken_over)
{
	struct verify_cache *vc = verify_cache_new(10);

	cr_assert_eq(verify_cache_claim(vc, K("p@x.test"), 1000, 1010, 0, NULL, 0), VERIFY_NONE);
	cr_assert_eq(verify_cache_claim(vc, K("p@x.test"), 1009, 1019, 1, NULL, 0), VERIFY_PENDING);
	cr_assert_eq(verify_cache_claim(vc, K("p@x.test"), 1010, 1020, 1, NULL, 0), VERIFY_NONE,
	             "its worker overran the deadline: worker 1 probes");
	verify_cache_free(vc);
}

Test(verify_cache, bounded_with_clock_eviction)
{
	struct verify_cache *vc = verify_cache_new(8);
	char k[32];

	for (int i = 0; i < 8; i++) {
		snprintf(k, sizeof(k), "u%d@x.test", i);
		cr_assert_eq(verify_cache_put(vc, K(k), VERIFY_OK, NULL, 5000, 1000, NULL), 0);
	}
	cr_assert_eq(verify_cache_count(vc), 8);
	/* A full sweep clears every bit; u3 is used again after it. */
	cr_assert_eq(verify_cache_put(vc, K("n0@x.test"), VERIFY_OK, NULL, 5000, 1000, NULL), 0);
	cr_assert_eq(verify_cache_get(vc, K("u3@x.test"), 1000, false, NULL, 0), VERIFY_OK);
	for (int i = 1; i < 20; i++) {
		snprintf(k, sizeof(k), "n%d@x.test", i);
		cr_assert_eq(verify_cache_put(vc, K(k), VERIFY_OK, NULL, 5000, 1000, NULL), 0);
		cr_assert_leq(verify_cache_count(vc), 8, "never past the bound");
		if (i < 6)
			cr_assert_eq(verify_cache_get(vc, K("u3@x.test"), 1000, false, NULL, 0),
			             VERIFY_OK, "a recently used entry stays (%d)", i);
	}
	cr_assert_eq(verify_cache_get(vc, K("n19@x.test"), 1000, false, NULL, 0), VERIFY_OK);
	cr_assert_eq(verify_cache_get(vc, K("u0@x.test"), 1000, false, NULL, 0), VERIFY_NONE);
	verify_cache_free(vc);
}

Test(verify_cache, probes_in_flight_are_never_evicted)
{
	struct verify_cache *vc = verify_cache_new(2);

	cr_assert_eq(verify_cache_claim(vc, K("a@x.test"), 1000, 1010, 0, NULL, 0), VERIFY_NONE);
	cr_assert_eq(verify_cache_claim(vc, K("b@x.test"), 1000, 1010, 0, NULL, 0), VERIFY_NONE);
	/* Full of probes: a third is probed without a claim. */
	cr_assert_eq(verify_cache_claim(vc, K("c@x.test"), 1000, 1010, 0, NULL, 0), VERIFY_NONE);
	cr_assert_eq(verify_cache_get(vc, K("c@x.test"), 1000, false, NULL, 0), VERIFY_NONE);
	cr_assert_eq(verify_cache_get(vc, K("a@x.test"), 1000, false, NULL, 0), VERIFY_PENDING);
	cr_assert_eq(verify_cache_put(vc, K("c@x.test"), VERIFY_OK, NULL, 2000, 1000, NULL),
	             -ENOMEM);
	verify_cache_free(vc);
}

Test(verify_cache, records_round_trip)
{
	struct buf b = BUF_INIT;
	struct verify_rec r;

	cr_assert_eq(verify_rec_encode(&b, K("a@x.test"), VERIFY_OK, 1700000000, NULL), 0);
	cr_assert_eq(verify_rec_encode(&b, K("b@x.test"), VERIFY_REJECT, -5, "550 5.1.1 nope"), 0);
	cr_assert_eq(verify_rec_encode(&b, K("c@x.test"), VERIFY_TEMP, 1, NULL), -EINVAL);
	cr_assert_eq(b.len, (VERIFY_REC_HDR + 8 + 4) * 2 + 14);
	cr_assert_eq(verify_rec_decode(b.p, b.len, &r), VERIFY_REC_HDR + 8 + 4);
	cr_assert_eq(r.res, VERIFY_OK);
	cr_assert_eq(r.expires, 1700000000);
	cr_assert_eq(r.klen, 8);
	cr_assert_eq(memcmp(r.key, "a@x.test", 8), 0);
	cr_assert_eq(r.tlen, 0);
	size_t off = VERIFY_REC_HDR + 8 + 4;
	cr_assert_eq(verify_rec_decode(b.p + off, b.len - off, &r), b.len - off);
	cr_assert_eq(r.res, VERIFY_REJECT);
	cr_assert_eq(r.expires, -5);
	cr_assert_eq(r.tlen, 14);
	cr_assert_eq(memcmp(r.text, "550 5.1.1 nope", 14), 0);
	/* Every prefix of a record is torn, never a record. */
	for (size_t n = 0; n < off; n++)
		cr_assert_eq(verify_rec_decode(b.p, n, &r), 0, "prefix %zu", n);
	/* Any flipped octet is refused. */
	for (size_t i = 0; i < off; i++) {
		b.p[i] ^= 0x20;
		cr_assert_neq(verify_rec_decode(b.p, b.len, &r), (ssize_t)off, "octet %zu", i);
		b.p[i] ^= 0x20;
	}
	buf_free(&b);
}

Test(verify_cache, load_keeps_fresh_records_and_stops_at_garbage)
{
	struct verify_cache *vc = verify_cache_new(100), *back = verify_cache_new(100);
	struct buf b = BUF_INIT;
	char text[64];
	size_t used, whole;

	verify_cache_put(vc, K("ok@x.test"), VERIFY_OK, NULL, 5000, 1000, NULL);
	verify_cache_put(vc, K("no@x.test"), VERIFY_REJECT, "550 5.1.1 unknown", 5000, 1000, NULL);
	verify_cache_put(vc, K("old@x.test"), VERIFY_OK, NULL, 1500, 1000, NULL);
	verify_cache_put(vc, K("flip@x.test"), VERIFY_OK, NULL, 9000, 1000, NULL);
	verify_cache_put(vc, K("flip@x.test"), VERIFY_REJECT, "550 gone", 1800, 1000, NULL);
	cr_assert_eq(verify_cache_journal_take(vc, &b), 0);
	whole = b.len;
	buf_append(&b, "\x01\x01garbage after a torn write", 28);
	cr_assert_eq(verify_cache_load(back, b.p, b.len, 2000, &used), 5);
	cr_assert_eq(used, whole);
	cr_assert_eq(verify_cache_get(back, K("ok@x.test"), 2000, false, NULL, 0), VERIFY_OK);
	cr_assert_eq(verify_cache_get(back, K("no@x.test"), 2000, false, text, sizeof(text)),
	             VERIFY_REJECT);
	cr_assert_str_eq(text, "550 5.1.1 unknown");
	cr_assert_eq(verify_cache_get(back, K("old@x.test"), 2000, false, NULL, 0), VERIFY_NONE,
	             "expired records are dropped");
	cr_assert_eq(verify_cache_get(back, K("flip@x.test"), 2000, false, NULL, 0), VERIFY_NONE,
	             "the later record wins, even expired");
	/* A compacted dump holds only what is fresh. */
	struct buf d = BUF_INIT;
	cr_assert_eq(verify_cache_dump(back, &d, 2000), 2);
	cr_assert_eq(verify_cache_load(vc, d.p, d.len, 2000, &used), 2);
	cr_assert_eq(used, d.len);
	buf_free(&d);
	buf_free(&b);
	verify_cache_free(vc);
	verify_cache_free(back);
}

/* Many threads on one cache: every lookup sees a whole verdict. */
struct hammer {
	struct verify_cache *vc;
	int id;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	char k[32], text[64];

	for (int i = 0; i < 20000; i++) {
		snprintf(k, sizeof(k), "u%d@x.test", (i * 7 + h->id) % 5000);
		if (i % 3 == 0)
			verify_cache_put(h->vc, K(k), VERIFY_REJECT, "550 x", 9000, 1000, NULL);
		else if (verify_cache_get(h->vc, K(k), 1000, false, text, sizeof(text)) ==
		         VERIFY_REJECT)
			cr_assert_str_eq(text, "550 x");
	}
	return NULL;
}

Test(verify_cache, threads_share_it)
{
	struct verify_cache *vc = verify_cache_new(1u << 14);
	pthread_t t[4];
	struct hammer h[4];

	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){vc, i};
		pthread_create(&t[i], NULL, hammer_run, &h[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cr_assert_leq(verify_cache_count(vc), 1u << 14);
	verify_cache_free(vc);
}

Test(verify_cache, long_and_short_keys_side_by_side)
{
	struct verify_cache *vc = verify_cache_new(4);
	char k[VERIFY_KEY_MAX + 2];
	struct buf b = BUF_INIT;

	memset(k, 'a', sizeof(k));
	memcpy(k + VERIFY_KEY_MAX - 10, "@x.test", 7);
	cr_assert_eq(verify_cache_put(vc, k, VERIFY_KEY_MAX - 3, VERIFY_OK, NULL, 2000, 1000, NULL),
	             0, "a key as long as an address can be");
	cr_assert_eq(verify_cache_put(vc, k, VERIFY_KEY_MAX + 1, VERIFY_OK, NULL, 2000, 1000, NULL),
	             -ENOMEM, "longer: not kept");
	for (size_t n = 29; n <= 34; n++) /* either side of the inline size */
		cr_assert_eq(verify_cache_put(vc, k + VERIFY_KEY_MAX - 3 - n, n, VERIFY_REJECT,
		                              "550 x", 2000, 1000, NULL),
		             0);
	cr_assert_eq(verify_cache_count(vc), 4, "evicted to the bound, long keys freed");
	for (size_t n = 31; n <= 34; n++)
		cr_assert_eq(
		    verify_cache_get(vc, k + VERIFY_KEY_MAX - 3 - n, n, 1000, false, NULL, 0),
		    VERIFY_REJECT, "%zu", n);
	cr_assert_eq(verify_cache_dump(vc, &b, 1000), 4);
	buf_free(&b);
	verify_cache_free(vc);
}
