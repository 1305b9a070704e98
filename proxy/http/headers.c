/* headers.c - codec-neutral HTTP header map (one byte arena + offsets).
 *
 * Every field owns its own bytes in the arena ("name\0value\0"); deleting or
 * replacing a field leaves its old bytes behind as garbage until hdrs_clear(),
 * which is fine for per-message maps and keeps every mutation cheap.
 * Pseudo-headers (names starting with ':') are kept in front of the regular
 * fields: adding one inserts it after the existing pseudo-headers. */
#include "headers.h"

/* ASCII lowercase by table lookup (the parser and the map are on the hot path). */
#define LC(c) ((c) >= 'A' && (c) <= 'Z' ? ((c) | 0x20) : (c))
#define LC4(b) LC(b), LC((b) + 1), LC((b) + 2), LC((b) + 3)
#define LC16(b) LC4(b), LC4((b) + 4), LC4((b) + 8), LC4((b) + 12)
#define LC64(b) LC16(b), LC16((b) + 16), LC16((b) + 32), LC16((b) + 48)
static const unsigned char lc_tab[256] = { LC64(0), LC64(64), LC64(128), LC64(192) };

/* Lowercasing copy, eight bytes at a time: for each byte below 0x80, bit 7
 * of (b + 0x3f) says b >= 'A' and bit 7 of (b + 0x25) says b > 'Z'; an
 * uppercase letter gets 0x20 added.  No byte carries into the next (each
 * sum stays below 0x100).  Bytes >= 0x80 are copied as they are, like
 * lc_tab does. */
static inline void lower_copy(char *d, const char *src, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x, lo;
		memcpy(&x, src + i, 8);
		lo = x & 0x7f7f7f7f7f7f7f7fULL;
		uint64_t up = (lo + 0x3f3f3f3f3f3f3f3fULL) & ~(lo + 0x2525252525252525ULL) & ~x &
			      0x8080808080808080ULL;
		x |= up >> 2;
		memcpy(d + i, &x, 8);
	}
	for (; i < n; i++)
		d[i] = (char)lc_tab[(unsigned char)src[i]];
}

#define ARENA_MIN 512
#define FIELDS_MIN 16

void hdrs_init(struct http_headers *h)
{
	memset(h, 0, sizeof(*h));
}

void hdrs_free(struct http_headers *h)
{
	if (!h)
		return;
	xfree(h->arena);
	xfree(h->f);
	memset(h, 0, sizeof(*h));
}

void hdrs_clear(struct http_headers *h)
{
	h->arena_len = 0;
	h->n = 0;
	h->bytes = 0;
}

/* Make room for need more arena bytes. Offsets survive the realloc. */
static void arena_reserve(struct http_headers *h, size_t need)
{
	size_t want = (size_t)h->arena_len + need;
	if (want <= h->arena_cap)
		return;
	if (want > UINT32_MAX)
		die("header arena over 4 GiB");
	size_t cap = h->arena_cap ? h->arena_cap : ARENA_MIN;
	while (cap < want)
		cap *= 2;
	if (cap > UINT32_MAX)
		cap = UINT32_MAX;
	h->arena = xrealloc(h->arena, cap);
	h->arena_cap = (uint32_t)cap;
}

static void fields_reserve(struct http_headers *h, uint32_t need)
{
	if ((uint64_t)h->n + need <= h->cap)
		return;
	uint64_t cap = h->cap ? h->cap : FIELDS_MIN;
	while (cap < (uint64_t)h->n + need)
		cap *= 2;
	if (cap > UINT32_MAX / sizeof(struct hdr_field))
		die("too many header fields");
	h->f = xrealloc(h->f, (size_t)cap * sizeof(*h->f));
	h->cap = (uint32_t)cap;
}

/* Pointers handed to us may point into our own arena (e.g. a value read with
 * hdrs_get()).  Remember them as offsets across a realloc. */
static bool in_arena(const struct http_headers *h, const char *p)
{
	return h->arena && p >= h->arena && p < h->arena + h->arena_cap;
}

static uint32_t arena_put_value(struct http_headers *h, const char *value, size_t vlen)
{
	if (in_arena(h, value)) {
		size_t off = (size_t)(value - h->arena);
		arena_reserve(h, vlen + 1);
		value = h->arena + off;
	} else {
		arena_reserve(h, vlen + 1);
	}
	uint32_t at = h->arena_len;
	memmove(h->arena + at, value, vlen);
	h->arena[at + vlen] = 0;
	h->arena_len = at + (uint32_t)vlen + 1;
	return at;
}

static inline bool field_is_pseudo(const struct http_headers *h, uint32_t i)
{
	return h->f[i].name_len && h->arena[h->f[i].name_off] == ':';
}

void hdrs_add(struct http_headers *h, const char *name, size_t nlen,
	      const char *value, size_t vlen)
{
	size_t noff = SIZE_MAX, voff = SIZE_MAX;
	if (in_arena(h, name))
		noff = (size_t)(name - h->arena);
	if (in_arena(h, value))
		voff = (size_t)(value - h->arena);
	if (nlen > UINT32_MAX || vlen > UINT32_MAX)
		die("header field over 4 GiB");
	arena_reserve(h, nlen + vlen + 2);
	fields_reserve(h, 1);
	if (noff != SIZE_MAX)
		name = h->arena + noff;
	if (voff != SIZE_MAX)
		value = h->arena + voff;

	uint32_t at = h->arena_len;
	char *d = h->arena + at;
	/* The source never overlaps the destination: it lies below arena_len. */
	lower_copy(d, name, nlen);
	d[nlen] = 0;
	memcpy(d + nlen + 1, value, vlen);
	d[nlen + 1 + vlen] = 0;
	h->arena_len = at + (uint32_t)(nlen + vlen + 2);

	struct hdr_field fld = {
		.name_off = at, .name_len = (uint32_t)nlen,
		.value_off = at + (uint32_t)nlen + 1, .value_len = (uint32_t)vlen,
	};
	uint32_t pos = h->n;
	if (nlen && name[0] == ':' && h->n && !field_is_pseudo(h, h->n - 1)) {
		/* Keep pseudo-headers in front: insert after the last leading one. */
		pos = 0;
		while (pos < h->n && field_is_pseudo(h, pos))
			pos++;
		memmove(&h->f[pos + 1], &h->f[pos], (h->n - pos) * sizeof(*h->f));
	}
	h->f[pos] = fld;
	h->n++;
	h->bytes += (uint32_t)(nlen + vlen);
}

int hdrs_find(const struct http_headers *h, const char *lname, size_t nlen, int start)
{
	if (start < 0)
		start = 0;
	for (uint32_t i = (uint32_t)start; i < h->n; i++) {
		const struct hdr_field *f = &h->f[i];
		if (f->name_len == nlen && memcmp(h->arena + f->name_off, lname, nlen) == 0)
			return (int)i;
	}
	return -1;
}

const char *hdrs_get(const struct http_headers *h, const char *lname, size_t *vlen)
{
	int i = hdrs_find(h, lname, strlen(lname), 0);
	if (i < 0)
		return NULL;
	if (vlen)
		*vlen = h->f[i].value_len;
	return h->arena + h->f[i].value_off;
}

/* Drop every field named lname at index >= from; returns how many. */
static unsigned del_from(struct http_headers *h, const char *lname, size_t nlen, uint32_t from)
{
	uint32_t w = from;
	unsigned removed = 0;
	for (uint32_t r = from; r < h->n; r++) {
		const struct hdr_field *f = &h->f[r];
		if (f->name_len == nlen && memcmp(h->arena + f->name_off, lname, nlen) == 0) {
			h->bytes -= f->name_len + f->value_len;
			removed++;
			continue;
		}
		if (w != r)
			h->f[w] = *f;
		w++;
	}
	h->n = w;
	return removed;
}

unsigned hdrs_del(struct http_headers *h, const char *lname)
{
	return del_from(h, lname, strlen(lname), 0);
}

void hdrs_set(struct http_headers *h, const char *lname, const char *value, size_t vlen)
{
	size_t nlen = strlen(lname);
	int i = hdrs_find(h, lname, nlen, 0);
	if (i < 0) {
		hdrs_add(h, lname, nlen, value, vlen);
		return;
	}
	if (vlen > UINT32_MAX)
		die("header field over 4 GiB");
	struct hdr_field *f = &h->f[i];
	uint32_t old = f->value_len;
	if (vlen <= old) {
		/* Fits in place; memmove because value may alias the old bytes. */
		memmove(h->arena + f->value_off, value, vlen);
		h->arena[f->value_off + vlen] = 0;
	} else {
		uint32_t off = arena_put_value(h, value, vlen);
		f = &h->f[i];
		f->value_off = off;
	}
	f->value_len = (uint32_t)vlen;
	h->bytes = h->bytes - old + (uint32_t)vlen;
	del_from(h, lname, nlen, (uint32_t)i + 1);
}

void hdrs_copy(struct http_headers *dst, const struct http_headers *src)
{
	if (dst == src)
		return;
	hdrs_clear(dst);
	arena_reserve(dst, src->arena_len);
	fields_reserve(dst, src->n);
	if (src->arena_len)
		memcpy(dst->arena, src->arena, src->arena_len);
	if (src->n)
		memcpy(dst->f, src->f, src->n * sizeof(*src->f));
	dst->arena_len = src->arena_len;
	dst->n = src->n;
	dst->bytes = src->bytes;
}
