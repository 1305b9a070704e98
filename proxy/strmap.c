/* strmap.c - string-keyed open-addressing hash map (see strmap.h). */
#include "strmap.h"

#include <string.h>
#include <xxhash.h>
#include "common.h"

char strmap_deleted_slot;

static inline const char *key_of(const struct strmap *m, const void *v)
{
	return *(const char *const *)((const char *)v + m->key_off);
}

static inline uint32_t hash_of(const char *key, size_t len)
{
	return (uint32_t)XXH3_64bits(key, len);
}

void strmap_init(struct strmap *m, size_t key_off)
{
	memset(m, 0, sizeof(*m));
	m->key_off = key_off;
}

void strmap_fini(struct strmap *m)
{
	free(m->slots);
	free(m->hashes);
	m->slots = NULL;
	m->hashes = NULL;
	m->cap = m->n = m->used = 0;
}

/* The slot holding key, or (insert) the first free or deleted slot on its
 * probe path; SIZE_MAX if not found and not inserting. */
static size_t find(const struct strmap *m, const char *key, size_t len, uint32_t h, int insert)
{
	size_t mask = m->cap - 1, i = h & mask, tomb = SIZE_MAX;

	if (!m->cap)
		return SIZE_MAX;
	for (;;) {
		void *v = m->slots[i];
		if (!v)
			return insert ? (tomb != SIZE_MAX ? tomb : i) : SIZE_MAX;
		if (v == STRMAP_DELETED) {
			if (tomb == SIZE_MAX)
				tomb = i;
		} else if (m->hashes[i] == h) {
			const char *k = key_of(m, v);
			if (!strncmp(k, key, len) && k[len] == '\0')
				return i;
		}
		i = (i + 1) & mask;
	}
}

static void grow(struct strmap *m)
{
	size_t ocap = m->cap, cap = 16;
	void **os = m->slots;
	uint32_t *oh = m->hashes;

	while (cap / 2 < m->n + 1)   /* the live values at half load or less; tombstones go */
		cap *= 2;
	m->slots = xcalloc(cap, sizeof(*m->slots));
	m->hashes = xmalloc(cap * sizeof(*m->hashes));
	m->cap = cap;
	m->used = m->n;
	for (size_t i = 0; i < ocap; i++) {
		void *v = os[i];
		size_t k;
		if (!v || v == STRMAP_DELETED)
			continue;
		for (k = oh[i] & (cap - 1); m->slots[k]; k = (k + 1) & (cap - 1))
			;
		m->slots[k] = v;
		m->hashes[k] = oh[i];
	}
	free(os);
	free(oh);
}

void *strmap_getn(const struct strmap *m, const char *key, size_t len)
{
	size_t i = find(m, key, len, hash_of(key, len), 0);

	return i == SIZE_MAX ? NULL : m->slots[i];
}

void *strmap_get(const struct strmap *m, const char *key)
{
	return strmap_getn(m, key, strlen(key));
}

void strmap_put(struct strmap *m, void *v)
{
	const char *key = key_of(m, v);
	size_t len = strlen(key), i;
	uint32_t h = hash_of(key, len);

	if ((m->used + 1) * 4 > m->cap * 3)
		grow(m);
	i = find(m, key, len, h, 1);
	if (m->slots[i] && m->slots[i] != STRMAP_DELETED)
		die("strmap: duplicate key '%s'", key);
	if (!m->slots[i])
		m->used++;
	m->slots[i] = v;
	m->hashes[i] = h;
	m->n++;
}

void *strmap_del(struct strmap *m, const char *key)
{
	size_t len = strlen(key), i = find(m, key, len, hash_of(key, len), 0);
	void *v;

	if (i == SIZE_MAX)
		return NULL;
	v = m->slots[i];
	/* a free slot after this one ends every probe path through it: no
	 * tombstone needed */
	if (!m->slots[(i + 1) & (m->cap - 1)]) {
		m->slots[i] = NULL;
		m->used--;
	} else {
		m->slots[i] = STRMAP_DELETED;
	}
	m->n--;
	return v;
}
