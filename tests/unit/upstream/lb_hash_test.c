/* lb_hash_test.c - ring hash and Maglev tables (proxy/upstream/lb_hash.h).
 *
 * Keys are 10,000 request hashes (xxHash64 of "key-<i>"); statistical bounds
 * are generous, and the tables are deterministic, so these do not flake. */
#include "test.h"

#include <stdbool.h>
#include <stdlib.h>

#include "proxy/common.h"
#include "proxy/upstream/lb_hash.h"

#define NKEYS 10000

static const struct lb_hash_cfg ring_cfg = {
	.kind = LB_HASH_RING, .ring_min = LB_RING_MIN_DEFAULT, .ring_max = LB_RING_MAX_DEFAULT,
};
static const struct lb_hash_cfg maglev_cfg = {
	.kind = LB_HASH_MAGLEV, .maglev_size = LB_MAGLEV_SIZE_DEFAULT,
};

static char key_buf[16][32];
static const char *keys[16];

/* n host keys "10.0.0.<i>:80". */
static void make_keys(size_t n)
{
	for (size_t i = 0; i < n; i++) {
		snprintf(key_buf[i], sizeof(key_buf[i]), "10.0.0.%zu:80", i + 1);
		keys[i] = key_buf[i];
	}
}

static uint64_t req_hash(int i)
{
	char k[32];
	int n = snprintf(k, sizeof(k), "key-%d", i);
	return lb_xxhash64(k, (size_t)n, 0);
}

/* Share of NKEYS per host into share[n]. */
static void shares(const struct lb_hash_table *t, size_t n, double *share)
{
	for (size_t i = 0; i < n; i++)
		share[i] = 0;
	for (int k = 0; k < NKEYS; k++)
		share[lb_hash_lookup(t, req_hash(k))] += 1.0 / NKEYS;
}

TEST(lb_hash_xxhash64_known_values)
{
	/* Reference values of XXH64 (seed 0) from the xxHash test vectors. */
	CHECK(lb_xxhash64("", 0, 0) == 0xEF46DB3751D8E999ull);
	CHECK(lb_xxhash64("a", 1, 0) == 0xD24EC4F1A98C6E5Bull);
	CHECK(lb_xxhash64("abc", 3, 0) == 0x44BC2CF5AD770999ull);
	CHECK(lb_is_prime(65537) && lb_is_prime(2) && lb_is_prime(5000011));
	CHECK(!lb_is_prime(65536) && !lb_is_prime(1) && !lb_is_prime(0) && !lb_is_prime(9));
}

TEST(lb_hash_empty_and_single)
{
	make_keys(1);
	uint32_t w = 1;
	CHECK(lb_hash_build(&ring_cfg, keys, &w, 0) == NULL);
	CHECK(lb_hash_build(&maglev_cfg, keys, &w, 0) == NULL);
	lb_hash_free(NULL);
	struct lb_hash_table *r = lb_hash_build(&ring_cfg, keys, &w, 1);
	struct lb_hash_table *m = lb_hash_build(&maglev_cfg, keys, &w, 1);
	CHECK_INT(r->size, 1024);
	CHECK_INT(m->size, 65537);
	for (int k = 0; k < 100; k++) {
		CHECK_INT(lb_hash_lookup(r, req_hash(k)), 0);
		CHECK_INT(lb_hash_lookup(m, req_hash(k)), 0);
	}
	CHECK_INT(lb_hash_lookup(r, 0), 0);
	CHECK_INT(lb_hash_lookup(r, UINT64_MAX), 0);
	lb_hash_free(r);
	lb_hash_free(m);
}

TEST(lb_hash_ring_sizes)
{
	uint32_t w[4] = { 1, 1, 1, 1 };
	make_keys(4);
	/* equal weights: scale = ceil(1024 / 3) * 3 = 1026 */
	struct lb_hash_table *t = lb_hash_build(&ring_cfg, keys, w, 3);
	CHECK_INT(t->size, 1026);
	CHECK_INT(t->min_per_host, 342);
	CHECK_INT(t->max_per_host, 342);
	for (size_t i = 1; i < t->size; i++)
		CHECK(t->hashes[i - 1] <= t->hashes[i]);
	/* first entry >= hash, wrapping past the last */
	CHECK_INT(lb_hash_lookup(t, 0), t->host[0]);
	CHECK_INT(lb_hash_lookup(t, t->hashes[5]), t->host[5]);
	CHECK_INT(lb_hash_lookup(t, t->hashes[5] + 1), t->host[6]);
	CHECK_INT(lb_hash_lookup(t, t->hashes[t->size - 1] + 1), t->host[0]);
	lb_hash_free(t);

	/* weights 1:3: the light host gets ceil(0.25 * 1024) = 256 entries */
	w[1] = 3;
	t = lb_hash_build(&ring_cfg, keys, w, 2);
	CHECK_INT(t->size, 1024);
	CHECK_INT(t->min_per_host, 256);
	CHECK_INT(t->max_per_host, 768);
	lb_hash_free(t);

	/* maximum_ring_size caps the ring */
	struct lb_hash_cfg capped = { .kind = LB_HASH_RING, .ring_min = 4096, .ring_max = 100 };
	t = lb_hash_build(&capped, keys, w, 2);
	CHECK_INT(t->size, 100);
	CHECK_INT(t->min_per_host, 25);
	lb_hash_free(t);
}

TEST(lb_hash_maglev_sizes)
{
	uint32_t w[3] = { 1, 1, 1 };
	struct lb_hash_cfg small = { .kind = LB_HASH_MAGLEV, .maglev_size = 307 };
	make_keys(3);
	struct lb_hash_table *t = lb_hash_build(&small, keys, w, 3);
	CHECK_INT(t->size, 307);
	CHECK_INT(t->min_per_host, 102);   /* equal turns: 103 + 102 + 102 */
	CHECK_INT(t->max_per_host, 103);
	for (size_t i = 0; i < t->size; i++)
		CHECK(t->host[i] < 3);
	lb_hash_free(t);
}

/* Same key, same host: across lookups and across rebuilds of the same set. */
static void check_stable(const struct lb_hash_cfg *cfg)
{
	uint32_t w[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
	make_keys(8);
	struct lb_hash_table *a = lb_hash_build(cfg, keys, w, 8);
	struct lb_hash_table *b = lb_hash_build(cfg, keys, w, 8);
	int same = 0;
	for (int k = 0; k < NKEYS; k++) {
		uint32_t h = lb_hash_lookup(a, req_hash(k));
		same += h == lb_hash_lookup(a, req_hash(k)) && h == lb_hash_lookup(b, req_hash(k));
	}
	CHECK_INT(same, NKEYS);
	double share[8];
	shares(a, 8, share);
	for (int i = 0; i < 8; i++)   /* spread: each of 8 hosts gets 1/8 +- a lot */
		CHECK(share[i] > 0.125 * 0.5 && share[i] < 0.125 * 1.5);
	lb_hash_free(a);
	lb_hash_free(b);
}

TEST(lb_hash_same_key_same_host)
{
	check_stable(&ring_cfg);
	check_stable(&maglev_cfg);
}

/* Remove host `gone` of n: about 1/n of keys move (at most max_moved/n), and
 * at most max_other_moved of the keys that were on other hosts move.
 * Maglev keeps nearly all of those.  Envoy's ring sizing spreads
 * minimum_ring_size over the remaining hosts, which then get more entries
 * each, so some of their keys move between them as well. */
static void check_removal(const struct lb_hash_cfg *cfg, size_t n, size_t gone,
			  double max_moved, double max_other_moved)
{
	uint32_t w[16];
	const char *keys2[16];
	size_t m = 0;

	make_keys(n);
	for (size_t i = 0; i < n; i++)
		w[i] = 1;
	for (size_t i = 0; i < n; i++)
		if (i != gone)
			keys2[m++] = keys[i];
	struct lb_hash_table *a = lb_hash_build(cfg, keys, w, n);
	struct lb_hash_table *b = lb_hash_build(cfg, keys2, w, m);
	int moved = 0, other_moved = 0, on_gone = 0;
	for (int k = 0; k < NKEYS; k++) {
		const char *ha = keys[lb_hash_lookup(a, req_hash(k))];
		const char *hb = keys2[lb_hash_lookup(b, req_hash(k))];
		if (ha == hb)
			continue;
		moved++;
		if (ha == keys[gone])
			on_gone++;
		else
			other_moved++;
	}
	double frac = (double)moved / NKEYS, expect = 1.0 / (double)n;
	if (!(frac > expect * 0.5 && frac < expect * max_moved) ||
	    (double)other_moved / NKEYS > max_other_moved)
		fprintf(stderr, "  moved %.4f of keys (expected about %.4f), %.4f from other hosts\n",
			frac, expect, (double)other_moved / NKEYS);
	CHECK(frac > expect * 0.5 && frac < expect * max_moved);
	CHECK(on_gone > 0);
	CHECK((double)other_moved / NKEYS <= max_other_moved);
	lb_hash_free(a);
	lb_hash_free(b);
}

TEST(lb_hash_removal_remaps_about_one_nth)
{
	check_removal(&ring_cfg, 10, 3, 2.5, 0.1);
	check_removal(&ring_cfg, 5, 0, 2.5, 0.2);
	check_removal(&maglev_cfg, 10, 3, 1.6, 0.03);
	check_removal(&maglev_cfg, 5, 4, 1.6, 0.03);
}

/* Weights 1:2:3:4 give shares 0.1:0.2:0.3:0.4. */
static void check_weights(const struct lb_hash_cfg *cfg, double tol)
{
	uint32_t w[4] = { 1, 2, 3, 4 };
	double share[4];
	make_keys(4);
	struct lb_hash_table *t = lb_hash_build(cfg, keys, w, 4);
	shares(t, 4, share);
	for (int i = 0; i < 4; i++) {
		double expect = w[i] / 10.0;
		if (!(share[i] > expect * (1 - tol) && share[i] < expect * (1 + tol)))
			fprintf(stderr, "  host %d share %.4f, expected about %.4f\n", i, share[i], expect);
		CHECK(share[i] > expect * (1 - tol) && share[i] < expect * (1 + tol));
	}
	lb_hash_free(t);
}

TEST(lb_hash_weights_shift_shares)
{
	struct lb_hash_cfg big_ring = { .kind = LB_HASH_RING, .ring_min = 65536,
					.ring_max = LB_RING_MAX_DEFAULT };
	check_weights(&big_ring, 0.25);
	check_weights(&ring_cfg, 0.5);
	check_weights(&maglev_cfg, 0.15);

	/* Maglev slot counts follow the weights closely */
	uint32_t w[2] = { 1, 4 };
	make_keys(2);
	struct lb_hash_table *t = lb_hash_build(&maglev_cfg, keys, w, 2);
	CHECK(t->min_per_host > 65537 / 5 - 100 && t->min_per_host < 65537 / 5 + 100);
	lb_hash_free(t);
}
