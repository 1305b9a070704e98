/* json_path.h - the field path of a JSON / protobuf walk, for error messages:
 * "resources[2].load_assignment.endpoints[0]", "metadata[\"k\"]".
 *
 * Shared by the JSON -> protobuf encoder (pb_encode.c) and the protobuf ->
 * JSON converter (pb_json.c).  A push returns a mark that json_path_pop
 * restores.  The pushes run for every field of every resource (10,000
 * clusters: ~10^5 calls), so they append with memcpy, not snprintf, and the
 * length is kept (no strlen).  A path that would not fit is cut: it only
 * appears in error messages. */
#ifndef REMORA_XDS_JSON_PATH_H
#define REMORA_XDS_JSON_PATH_H

#include <stddef.h>
#include <string.h>

#define JSON_PATH_MAX 512

struct json_path {
	size_t len;               /* strlen(s) */
	char s[JSON_PATH_MAX];
};

static inline void json_path_append(struct json_path *p, const char *a, size_t la)
{
	if (p->len + la >= sizeof(p->s))
		la = sizeof(p->s) - 1 - p->len;
	memcpy(p->s + p->len, a, la);
	p->len += la;
	p->s[p->len] = 0;
}

/* Start over at root (NULL or "": the empty path). */
static inline void json_path_set(struct json_path *p, const char *root)
{
	p->len = 0;
	p->s[0] = 0;
	if (root)
		json_path_append(p, root, strlen(root));
}

static inline void json_path_pop(struct json_path *p, size_t mark)
{
	p->len = mark;
	p->s[mark] = 0;
}

/* ".name" (no dot at the start). */
static inline size_t json_path_push(struct json_path *p, const char *name)
{
	size_t mark = p->len;
	if (mark)
		json_path_append(p, ".", 1);
	json_path_append(p, name, strlen(name));
	return mark;
}

/* "[i]" */
static inline size_t json_path_push_idx(struct json_path *p, size_t i)
{
	char b[24];
	size_t n = sizeof(b);
	size_t mark = p->len;
	b[--n] = ']';
	do
		b[--n] = (char)('0' + i % 10);
	while ((i /= 10));
	b[--n] = '[';
	json_path_append(p, b + n, sizeof(b) - n);
	return mark;
}

/* "[\"k\"]" (a map key) */
static inline size_t json_path_push_key(struct json_path *p, const char *k)
{
	size_t mark = p->len;
	json_path_append(p, "[\"", 2);
	json_path_append(p, k, strlen(k));
	json_path_append(p, "\"]", 2);
	return mark;
}

/* The path, or "<root>" when empty. */
static inline const char *json_path_str(const struct json_path *p)
{
	return p->len ? p->s : "<root>";
}

#endif
