/* lb_hash.h - consistent-hash lookup tables: Envoy's ring hash (ketama) and
 * Maglev load balancers.
 *
 * A table maps a 64-bit request hash to the index of a host in the host set
 * it was built for.  It is built once per host-set change on the main thread
 * (O(hosts x table size)) and is immutable afterwards, so every worker reads
 * it without locks; lookups do not allocate.
 *
 * Hosts are placed by hashing their key (the "ip:port" string, as Envoy's
 * address()->asString()) with xxHash64 (libxxhash), so for the same hosts,
 * weights and sizes the tables are laid out as Envoy lays out its own:
 *  - ring: host i gets hashes of "<key>_<n>" for n = 0.. ; the number of
 *    entries per host is proportional to its weight; the ring has at least
 *    minimum_ring_size and at most maximum_ring_size entries; lookup is the
 *    first entry whose hash is >= the request hash (wrapping to the first);
 *  - Maglev: each host has a permutation of the slots given by
 *    offset = xxh64(key, 0) % M and skip = xxh64(key, 1) % (M - 1) + 1; hosts
 *    take turns claiming their next free preferred slot, a host of weight w
 *    taking a turn w/max_weight as often as the heaviest one; lookup is
 *    table[hash % M]. */
#ifndef REMORA_UPSTREAM_LB_HASH_H
#define REMORA_UPSTREAM_LB_HASH_H

#include <stddef.h>
#include <stdint.h>

#define LB_RING_MIN_DEFAULT 1024u
#define LB_RING_MAX_DEFAULT (8u * 1024 * 1024)   /* also the largest allowed */
#define LB_MAGLEV_SIZE_DEFAULT 65537u            /* must be prime */
#define LB_MAGLEV_SIZE_MAX 5000011u              /* Envoy's limit (lt 5000011) */

enum lb_hash_kind { LB_HASH_RING, LB_HASH_MAGLEV };

/* Cluster-level configuration (ring_hash_lb_config / maglev_lb_config). */
struct lb_hash_cfg {
	enum lb_hash_kind kind;
	uint64_t ring_min;           /* minimum_ring_size */
	uint64_t ring_max;           /* maximum_ring_size */
	uint64_t maglev_size;        /* table_size, prime */
};

struct lb_hash_table {
	enum lb_hash_kind kind;
	size_t size;                 /* ring entries or Maglev slots */
	uint64_t *hashes;            /* owned; ring only: sorted ascending [size] */
	uint32_t *host;              /* owned; host index of each entry/slot [size] */
	uint32_t min_per_host;       /* entries of the least / most represented */
	uint32_t max_per_host;       /* host (Envoy's *_hashes/entries_per_host) */
};

/* Build a table for n hosts with keys[i] and weights[i] (>= 1).  Returns NULL
 * when n == 0.  The caller owns the result (lb_hash_free). */
struct lb_hash_table *lb_hash_build(const struct lb_hash_cfg *cfg, const char *const *keys,
				    const uint32_t *weights, size_t n);
void lb_hash_free(struct lb_hash_table *t);     /* NULL ok */

/* Index of the host that owns hash (t must be non-NULL). */
static inline uint32_t lb_hash_lookup(const struct lb_hash_table *t, uint64_t hash)
{
	if (t->kind == LB_HASH_MAGLEV)
		return t->host[hash % t->size];
	/* lower bound: first entry with hashes[i] >= hash; past the end wraps */
	size_t lo = 0, hi = t->size;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->hashes[mid] < hash)
			lo = mid + 1;
		else
			hi = mid;
	}
	return t->host[lo == t->size ? 0 : lo];
}

/* xxHash64 of n bytes with seed (the hash Envoy uses for hash policies). */
uint64_t lb_xxhash64(const void *p, size_t n, uint64_t seed);

/* Whether n is prime (Maglev table sizes must be). */
int lb_is_prime(uint64_t n);

#endif
