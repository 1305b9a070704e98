/* strmap_test.c - the string-keyed hash map: lookups (also by a key that is
 * not NUL-terminated), removal with and without tombstones, growth, and a
 * randomized run checked against a plain array. */
#include "test.h"
#include "proxy/common.h"
#include "proxy/strmap.h"

#include <stddef.h>
#include <stdlib.h>

struct item {
	int payload;
	char *key;
};

static struct item *item_new(const char *key, int payload)
{
	struct item *it = xcalloc(1, sizeof(*it));
	it->key = xstrdup(key);
	it->payload = payload;
	return it;
}

static void item_free(struct item *it)
{
	if (it) {
		free(it->key);
		free(it);
	}
}

TEST(strmap_basic)
{
	struct strmap m;
	struct item *a = item_new("alpha", 1), *b = item_new("beta", 2);

	strmap_init(&m, offsetof(struct item, key));
	CHECK(strmap_get(&m, "alpha") == NULL);       /* empty: no table yet */
	CHECK(strmap_del(&m, "alpha") == NULL);
	strmap_put(&m, a);
	strmap_put(&m, b);
	CHECK_INT(m.n, 2);
	CHECK(strmap_get(&m, "alpha") == a);
	CHECK(strmap_get(&m, "beta") == b);
	CHECK(strmap_get(&m, "gamma") == NULL);
	CHECK(strmap_get(&m, "alph") == NULL);        /* prefixes are other keys */
	CHECK(strmap_get(&m, "alphab") == NULL);
	CHECK(strmap_getn(&m, "alphabet", 5) == a);   /* key[0..len), not terminated */
	CHECK(strmap_getn(&m, "betamax", 4) == b);
	CHECK(strmap_getn(&m, "beta", 3) == NULL);
	CHECK(strmap_get(&m, "") == NULL);
	CHECK(strmap_del(&m, "alpha") == a);
	CHECK(strmap_get(&m, "alpha") == NULL);
	CHECK(strmap_get(&m, "beta") == b);
	CHECK_INT(m.n, 1);
	strmap_put(&m, a);                            /* back in */
	CHECK(strmap_get(&m, "alpha") == a);
	{
		size_t live = 0;
		for (size_t i = 0; i < m.cap; i++)
			live += strmap_live(&m, i) ? 1 : 0;
		CHECK_INT(live, 2);
	}
	strmap_fini(&m);
	item_free(a);
	item_free(b);
}

/* Keys that collide in the table (same slot modulo the size) still resolve,
 * and removing one in the middle of a probe run keeps the later ones
 * reachable (a tombstone), and it is reused by the next insertion. */
TEST(strmap_probe_runs_and_tombstones)
{
	struct strmap m;
	struct item *it[2000];
	char key[32];

	strmap_init(&m, offsetof(struct item, key));
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "c%d", i);
		it[i] = item_new(key, i);
		strmap_put(&m, it[i]);
	}
	CHECK_INT(m.n, 2000);
	CHECK(m.cap >= 2000 * 4 / 3);
	CHECK((m.cap & (m.cap - 1)) == 0);
	for (int i = 0; i < 2000; i += 2)
		CHECK(strmap_del(&m, it[i]->key) == it[i]);
	CHECK_INT(m.n, 1000);
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "c%d", i);
		CHECK(strmap_get(&m, key) == (i % 2 ? it[i] : NULL));
	}
	for (int i = 0; i < 2000; i += 2)
		strmap_put(&m, it[i]);
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "c%d", i);
		CHECK(strmap_get(&m, key) == it[i]);
	}
	/* removing while iterating */
	for (size_t i = 0; i < m.cap; i++)
		if (strmap_live(&m, i) && ((struct item *)m.slots[i])->payload % 3 == 0)
			strmap_del(&m, ((struct item *)m.slots[i])->key);
	CHECK_INT(m.n, 2000 - 667);
	for (int i = 0; i < 2000; i++)
		CHECK(strmap_get(&m, it[i]->key) == (i % 3 ? it[i] : NULL));
	strmap_fini(&m);
	for (int i = 0; i < 2000; i++)
		item_free(it[i]);
}

/* Random puts and deletes over a small key space, checked against an array:
 * the table never fills up with tombstones (it is rebuilt), lookups agree. */
TEST(strmap_random_against_array)
{
	struct strmap m;
	struct item *have[300] = { 0 };
	char key[32];
	unsigned seed = 12345;
	size_t maxcap = 0;

	strmap_init(&m, offsetof(struct item, key));
	for (int step = 0; step < 200000; step++) {
		int k;
		seed = seed * 1103515245u + 12345u;
		k = (int)((seed >> 8) % 300);
		snprintf(key, sizeof(key), "k%d", k);
		if (have[k]) {
			CHECK(strmap_get(&m, key) == have[k]);
			if ((seed >> 20) & 1) {
				CHECK(strmap_del(&m, key) == have[k]);
				item_free(have[k]);
				have[k] = NULL;
			}
		} else {
			CHECK(strmap_get(&m, key) == NULL);
			have[k] = item_new(key, k);
			strmap_put(&m, have[k]);
		}
		if (m.cap > maxcap)
			maxcap = m.cap;
		CHECK(m.used <= m.cap * 3 / 4 + 1);
	}
	CHECK(maxcap <= 1024);                        /* 300 keys: tombstones do not grow it */
	for (int k = 0; k < 300; k++) {
		snprintf(key, sizeof(key), "k%d", k);
		CHECK(strmap_get(&m, key) == have[k]);
		item_free(have[k]);
	}
	strmap_fini(&m);
}
