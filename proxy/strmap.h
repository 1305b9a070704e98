/* strmap.h - an open-addressing hash map from a string to an object that
 * holds that string.
 *
 * The key is not copied: it is a `char *` member of the stored object, at a
 * fixed offset (key_off), so an entry costs one pointer and one 32-bit hash
 * (12 bytes a slot, the table kept at most 3/4 full).  At 10,000 xDS
 * clusters this replaces jansson objects used as indexes (~80 bytes an
 * entry plus a JSON value).  Linear probing, tombstones on removal, the
 * table grows (and drops its tombstones) when it is 3/4 used.  Not
 * thread-safe: one owner. */
#ifndef REMORA_STRMAP_H
#define REMORA_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct strmap {
	void **slots;                 /* owned [cap]: NULL empty, STRMAP_DELETED, or a value */
	uint32_t *hashes;             /* owned [cap] */
	size_t cap;                   /* 0 or a power of two */
	size_t n;                     /* values */
	size_t used;                  /* values + tombstones */
	size_t key_off;               /* offsetof(the value's struct, its char *key) */
};

extern char strmap_deleted_slot;
#define STRMAP_DELETED ((void *)&strmap_deleted_slot)

/* An empty map whose values hold their key (a char *) at key_off. */
void strmap_init(struct strmap *m, size_t key_off);
/* Frees the table (not the values). */
void strmap_fini(struct strmap *m);
/* The value whose key is key (key[0..len) for getn, not NUL-terminated), or
 * NULL. */
void *strmap_get(const struct strmap *m, const char *key);
void *strmap_getn(const struct strmap *m, const char *key, size_t len);
/* Add v (its key must not be in the map yet). */
void strmap_put(struct strmap *m, void *v);
/* Remove and return the value with that key (NULL if none). */
void *strmap_del(struct strmap *m, const char *key);

/* Iteration: for (size_t i = 0; i < m->cap; i++) if (strmap_live(m, i)) ...
 * m->slots[i]; removing the current value while iterating is allowed,
 * adding is not. */
static inline int strmap_live(const struct strmap *m, size_t i)
{
	return m->slots[i] && m->slots[i] != STRMAP_DELETED;
}

#endif
