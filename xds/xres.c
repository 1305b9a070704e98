/* xres.c - compactly kept xDS resources (see xres.h). */
#include "xres.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include "pb_json.h"
#include "../proxy/common.h"

struct xblob *xblob_from_pb(const uint8_t *data, size_t len)
{
	struct xblob *b;

	if (len > UINT32_MAX)
		die("xds: resource of %zu bytes", len);
	b = xmalloc(sizeof(*b) + (len ? len : 1));
	b->len = (uint32_t)len;
	b->kind = XBLOB_PB;
	if (len)
		memcpy(b->data, data, len);
	return b;
}

struct xblob *xblob_from_json(const json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	size_t len;
	struct xblob *b;

	if (!t)
		die("out of memory (json_dumps)");
	len = strlen(t);
	b = xmalloc(sizeof(*b) + len + 1);
	b->len = (uint32_t)len;
	b->kind = XBLOB_JSON;
	memcpy(b->data, t, len + 1);
	free(t);
	return b;
}

bool xblob_equal(const struct xblob *b, enum xblob_kind kind, const uint8_t *data, size_t len)
{
	return b && b->kind == kind && b->len == len && !memcmp(b->data, data, len);
}

json_t *xblob_to_json(const struct xblob *b, const char *type_url)
{
	json_t *j;

	if (!b)
		return NULL;
	if (b->kind == XBLOB_JSON)
		return json_loads((const char *)b->data, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	{
		struct pb_json_ctx pj = { .flags = PB_JSON_ALLOW_UNKNOWN };
		j = pb_any_to_json(&pj, type_url, b->data, b->len, "");
	}
	if (j)
		json_object_del(j, "@type");
	return j;
}

struct xmeta *xmeta_new(const char *version)
{
	size_t n = strlen(version ? version : "");
	struct xmeta *m = xmalloc(sizeof(*m) + n + 1);
	struct timespec ts;
	struct tm tm;
	size_t k;

	m->refcnt = 1;
	memcpy(m->version, version ? version : "", n + 1);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	k = strftime(m->last_updated, sizeof(m->last_updated), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(m->last_updated + k, sizeof(m->last_updated) - k, ".%03ldZ",
		 ts.tv_nsec / 1000000);
	return m;
}

struct xmeta *xmeta_ref(struct xmeta *m)
{
	if (m)
		m->refcnt++;
	return m;
}

void xmeta_unref(struct xmeta *m)
{
	if (m && --m->refcnt == 0)
		free(m);
}

/* A base-128 varint at *p (< end): 0 with *v, -1 if truncated or too long. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		uint8_t b;
		if (*p >= end)
			return -1;
		b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

int pb_scan_string(const uint8_t *data, size_t len, uint32_t field, const char **s,
		   size_t *slen)
{
	const uint8_t *p = data, *end = data + len;
	int found = 0;

	while (p < end) {
		uint64_t key, n;
		if (varint(&p, end, &key) || !(key >> 3) || (key >> 3) > UINT32_MAX)
			return -1;
		switch (key & 7) {
		case 0:   /* varint */
			if (varint(&p, end, &n))
				return -1;
			break;
		case 1:   /* 64-bit */
			if (end - p < 8)
				return -1;
			p += 8;
			break;
		case 2:   /* length-delimited */
			if (varint(&p, end, &n) || n > (uint64_t)(end - p))
				return -1;
			if ((key >> 3) == field) {
				*s = (const char *)p;
				*slen = (size_t)n;
				found = 1;
			}
			p += n;
			break;
		case 5:   /* 32-bit */
			if (end - p < 4)
				return -1;
			p += 4;
			break;
		default:  /* groups (3, 4) are not used by the xDS API */
			return -1;
		}
	}
	return found;
}

struct pb_arena_chunk {
	struct pb_arena_chunk *next;
	size_t size;                  /* of the mapping, this header included */
};

#define PB_ARENA_CHUNK (1u << 20)

static void *arena_alloc(void *data, size_t n)
{
	struct pb_arena *a = data;
	size_t need = (n + 15) & ~(size_t)15;
	char *p;

	if ((size_t)(a->end - a->cur) < need) {
		size_t size = sizeof(struct pb_arena_chunk) + 16 + need;
		struct pb_arena_chunk *c;
		if (size < PB_ARENA_CHUNK)
			size = PB_ARENA_CHUNK;
		c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c == MAP_FAILED)
			die("out of memory (xDS response arena of %zu bytes)", size);
		c->next = a->chunks;
		c->size = size;
		a->chunks = c;
		a->cur = (char *)c + ((sizeof(*c) + 15) & ~(size_t)15);
		a->end = (char *)c + size;
	}
	p = a->cur;
	a->cur += need;
	return p;
}

static void arena_free(void *data, void *p)
{
	(void)data;
	(void)p;   /* all at once, in pb_arena_release */
}

void pb_arena_init(struct pb_arena *a)
{
	memset(a, 0, sizeof(*a));
	a->alloc.alloc = arena_alloc;
	a->alloc.free = arena_free;
	a->alloc.allocator_data = a;
}

void pb_arena_release(struct pb_arena *a)
{
	while (a->chunks) {
		struct pb_arena_chunk *c = a->chunks;
		a->chunks = c->next;
		munmap(c, c->size);
	}
	pb_arena_init(a);
}
