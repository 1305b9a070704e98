/* headers.h - codec-neutral HTTP header map.
 *
 * Filters and the router see only this: lowercase names, no hop-by-hop
 * headers, no HTTP/1 or HTTP/2 framing.  Request line and status travel as
 * HTTP/2-style pseudo-headers kept at the front of the map:
 *   requests:  ":method", ":path", ":authority" (from Host), ":scheme"
 *   responses: ":status"
 * Storage: one growable byte arena plus an array of offsets, so adding a
 * header is amortised O(1) and a realloc never invalidates stored fields.
 * Pointers returned by the getters are valid until the next mutation. */
#ifndef REMORA_HTTP_HEADERS_H
#define REMORA_HTTP_HEADERS_H

#include "../common.h"

struct hdr_field {
	uint32_t name_off, name_len;   /* name bytes in arena (lowercase) */
	uint32_t value_off, value_len; /* value bytes in arena */
};

struct http_headers {
	char *arena;             /* owned; name/value bytes, NUL after each */
	uint32_t arena_len, arena_cap;
	struct hdr_field *f;     /* owned; live fields in order */
	uint32_t n, cap;
	uint32_t bytes;          /* sum of name_len + value_len, for limits */
};

void hdrs_init(struct http_headers *h);
void hdrs_free(struct http_headers *h);           /* accepts zeroed/freed maps */
void hdrs_clear(struct http_headers *h);          /* keep storage, drop fields */
void hdrs_copy(struct http_headers *dst, const struct http_headers *src); /* dst must be init'd */

/* Append a field. name is lowercased on copy. */
void hdrs_add(struct http_headers *h, const char *name, size_t nlen,
	      const char *value, size_t vlen);
static inline void hdrs_add_cstr(struct http_headers *h, const char *name, const char *value)
{
	hdrs_add(h, name, strlen(name), value, strlen(value));
}
/* Replace every field named lname (lowercase) by a single one with value,
 * placed where the first one was (or appended). */
void hdrs_set(struct http_headers *h, const char *lname, const char *value, size_t vlen);
/* Remove every field named lname (lowercase). Returns how many were removed. */
unsigned hdrs_del(struct http_headers *h, const char *lname);

/* Index of the first field named lname at or after start, or -1. */
int hdrs_find(const struct http_headers *h, const char *lname, size_t nlen, int start);
/* Value of the first field named lname (NUL-terminated), or NULL. */
const char *hdrs_get(const struct http_headers *h, const char *lname, size_t *vlen);

static inline const char *hdrs_name(const struct http_headers *h, uint32_t i) { return h->arena + h->f[i].name_off; }
static inline const char *hdrs_value(const struct http_headers *h, uint32_t i) { return h->arena + h->f[i].value_off; }

#endif
