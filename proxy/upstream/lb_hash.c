/* lb_hash.c - ring hash and Maglev table construction (lb_hash.h). */
#include "lb_hash.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>
#include "../common.h"

uint64_t lb_xxhash64(const void *p, size_t n, uint64_t seed)
{
	return XXH64(p, n, seed);
}

int lb_is_prime(uint64_t n)
{
	if (n < 2)
		return 0;
	for (uint64_t d = 2; d * d <= n; d++)
		if (n % d == 0)
			return 0;
	return 1;
}

void lb_hash_free(struct lb_hash_table *t)
{
	if (!t)
		return;
	free(t->hashes);
	free(t->host);
	free(t);
}

/* Fill min/max entries per host from t->host[]. */
static void count_per_host(struct lb_hash_table *t, size_t n)
{
	uint32_t *cnt = xcalloc(n, sizeof(*cnt));

	for (size_t i = 0; i < t->size; i++)
		cnt[t->host[i]]++;
	t->min_per_host = UINT32_MAX;
	t->max_per_host = 0;
	for (size_t i = 0; i < n; i++) {
		t->min_per_host = MIN(t->min_per_host, cnt[i]);
		t->max_per_host = MAX(t->max_per_host, cnt[i]);
	}
	free(cnt);
}

struct ring_entry {
	uint64_t hash;
	uint32_t host;
};

static int ring_cmp(const void *a, const void *b)
{
	const struct ring_entry *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return x->host < y->host ? -1 : x->host > y->host;   /* deterministic ties */
}

/* Envoy's RingHashLoadBalancer::Ring: the lightest host gets at least
 * ceil(min_normalized_weight * ring_min) entries (the scale), capped so the
 * ring has at most ring_max entries; every host gets scale * its normalized
 * weight entries, rounded by carrying the fraction to the next host. */
static struct lb_hash_table *ring_build(const struct lb_hash_cfg *cfg, const char *const *keys,
					const uint32_t *weights, size_t n)
{
	double total = 0, min_w = 1.0;
	char buf[320];

	for (size_t i = 0; i < n; i++)
		total += weights[i];
	for (size_t i = 0; i < n; i++)
		min_w = fmin(min_w, weights[i] / total);
	double scale = fmin(ceil(min_w * (double)cfg->ring_min) / min_w, (double)cfg->ring_max);
	size_t cap = (size_t)ceil(scale) + n;   /* + n: fractional carry slack */
	struct ring_entry *ring = xmalloc(cap * sizeof(*ring));
	double current = 0, target = 0;
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		int off = snprintf(buf, sizeof(buf), "%s_", keys[i]);
		if (off < 0 || (size_t)off >= sizeof(buf) - 24)
			off = (int)sizeof(buf) - 24;   /* keys are addresses; cannot happen */
		target += scale * (weights[i] / total);
		for (uint64_t k = 0; current < target && len < cap; k++, current += 1) {
			int kl = snprintf(buf + off, sizeof(buf) - (size_t)off, "%llu",
					  (unsigned long long)k);
			ring[len].hash = XXH64(buf, (size_t)off + (size_t)kl, 0);
			ring[len++].host = (uint32_t)i;
		}
	}
	qsort(ring, len, sizeof(*ring), ring_cmp);

	struct lb_hash_table *t = xcalloc(1, sizeof(*t));
	t->kind = LB_HASH_RING;
	t->size = len;
	t->hashes = xmalloc(len * sizeof(*t->hashes));
	t->host = xmalloc(len * sizeof(*t->host));
	for (size_t i = 0; i < len; i++) {
		t->hashes[i] = ring[i].hash;
		t->host[i] = ring[i].host;
	}
	free(ring);
	count_per_host(t, n);
	return t;
}

struct maglev_entry {
	uint64_t offset, skip, next;
	uint64_t target;             /* turn threshold, in units of weight */
};

/* Envoy's weighted Maglev (MaglevTable): in iteration k a host of weight w
 * takes a turn when k * w >= its target, which then grows by the largest
 * weight, so the heaviest host claims a slot every iteration and a host of
 * a third of its weight every third iteration. */
static struct lb_hash_table *maglev_build(const struct lb_hash_cfg *cfg, const char *const *keys,
					  const uint32_t *weights, size_t n)
{
	uint64_t m = cfg->maglev_size, wmax = 0;
	struct maglev_entry *e = xcalloc(n, sizeof(*e));
	struct lb_hash_table *t = xcalloc(1, sizeof(*t));

	t->kind = LB_HASH_MAGLEV;
	t->size = m;
	t->host = xmalloc(m * sizeof(*t->host));
	memset(t->host, 0xff, m * sizeof(*t->host));
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(keys[i]);
		e[i].offset = XXH64(keys[i], kl, 0) % m;
		e[i].skip = XXH64(keys[i], kl, 1) % (m - 1) + 1;
		wmax = MAX(wmax, weights[i]);
	}
	size_t filled = 0;
	for (uint64_t iter = 0; filled < m; iter++) {
		for (size_t i = 0; i < n && filled < m; i++) {
			if (iter * weights[i] < e[i].target)
				continue;
			e[i].target += wmax;
			/* m is prime and 0 < skip < m, so the walk visits every slot
			 * and finds a free one while filled < m. */
			uint64_t c = (e[i].offset + e[i].skip * (e[i].next % m)) % m;
			while (t->host[c] != UINT32_MAX) {
				e[i].next++;
				c = (e[i].offset + e[i].skip * (e[i].next % m)) % m;
			}
			t->host[c] = (uint32_t)i;
			e[i].next++;
			filled++;
		}
	}
	free(e);
	count_per_host(t, n);
	return t;
}

struct lb_hash_table *lb_hash_build(const struct lb_hash_cfg *cfg, const char *const *keys,
				    const uint32_t *weights, size_t n)
{
	if (!n)
		return NULL;
	return cfg->kind == LB_HASH_MAGLEV ? maglev_build(cfg, keys, weights, n)
					   : ring_build(cfg, keys, weights, n);
}
