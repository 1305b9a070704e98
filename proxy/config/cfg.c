/* cfg.c - walking a proto3-JSON config tree with precise errors (cfg.h), and
 * the position table behind struct cfg_src (cfg_src.h).
 *
 * Decisions worth knowing:
 *  - JSON null counts as absent everywhere (proto3: null = default value).
 *  - Integer getters accept JSON integers, decimal strings ("123", proto3
 *    int64 form) and reals with a zero fraction up to 2^53 (beyond that a
 *    double no longer holds every integer, so the value may not be what the
 *    user wrote; the YAML loader turns plain integers beyond int64 into
 *    reals, and this is where they get rejected).
 *  - cfg_duration_ms truncates to milliseconds like Envoy does, except that a
 *    nonzero duration never becomes 0 ms (0 usually means "disabled").
 *  - cfg_parse_duration saturates at UINT64_MAX ns (~584 years): proto3
 *    allows up to 315576000000 s, which does not fit in 64-bit nanoseconds. */
#include "cfg.h"
#include "cfg_src.h"
#include "../log.h"

#include <math.h>
#include <stdarg.h>

unsigned long cfg_unknown_fields_seen;

#define DURATION_MAX_SECONDS 315576000000ULL
#define EXACT_DOUBLE_MAX 9007199254740992.0 /* 2^53 */

/* ------------------------------------------------------------------------
 * Position table */

static size_t hash_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return (size_t)x;
}

static size_t hash_node(const json_t *node)
{
	return hash_mix((uint64_t)(uintptr_t)node);
}

static size_t hash_key(const json_t *obj, const char *key)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (const unsigned char *s = (const unsigned char *)key; *s; s++) {
		h ^= *s;
		h *= 1099511628211ULL;
	}
	return hash_mix(h ^ (uint64_t)(uintptr_t)obj);
}

static bool is_singleton(const json_t *node)
{
	return node == json_true() || node == json_false() || node == json_null();
}

struct cfg_src *cfg_src_new(void)
{
	struct cfg_src *src = xcalloc(1, sizeof(*src));

	src->nodes_cap = 64;
	src->nodes = xcalloc(src->nodes_cap, sizeof(*src->nodes));
	src->keys_cap = 64;
	src->keys = xcalloc(src->keys_cap, sizeof(*src->keys));
	return src;
}

void cfg_src_free(struct cfg_src *src)
{
	if (!src)
		return;
	for (size_t i = 0; i < src->keys_cap; i++)
		xfree(src->keys[i].key);
	xfree(src->keys);
	xfree(src->nodes);
	json_decref(src->keep);
	xfree(src);
}

static struct cfg_src_node *node_slot(struct cfg_src_node *tab, size_t cap, const json_t *node)
{
	size_t i = hash_node(node) & (cap - 1);

	while (tab[i].node && tab[i].node != node)
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

static struct cfg_src_key *key_slot(struct cfg_src_key *tab, size_t cap, const json_t *obj,
				    const char *key)
{
	size_t i = hash_key(obj, key) & (cap - 1);

	while (tab[i].obj && (tab[i].obj != obj || strcmp(tab[i].key, key)))
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

void cfg_src_add_node(struct cfg_src *src, const json_t *node, int line, int col)
{
	if (!src || !node || is_singleton(node))
		return;
	if ((src->nodes_len + 1) * 2 > src->nodes_cap) {
		size_t ncap = src->nodes_cap * 2;
		struct cfg_src_node *ntab = xcalloc(ncap, sizeof(*ntab));

		for (size_t i = 0; i < src->nodes_cap; i++)
			if (src->nodes[i].node)
				*node_slot(ntab, ncap, src->nodes[i].node) = src->nodes[i];
		xfree(src->nodes);
		src->nodes = ntab;
		src->nodes_cap = ncap;
	}
	struct cfg_src_node *s = node_slot(src->nodes, src->nodes_cap, node);
	if (s->node)
		return; /* first record wins (an alias shares its anchor's node) */
	s->node = node;
	s->line = line;
	s->col = col;
	src->nodes_len++;
}

void cfg_src_add_key(struct cfg_src *src, const json_t *obj, const char *key, int line, int col)
{
	if (!src || !obj || !key)
		return;
	if ((src->keys_len + 1) * 2 > src->keys_cap) {
		size_t ncap = src->keys_cap * 2;
		struct cfg_src_key *ntab = xcalloc(ncap, sizeof(*ntab));

		for (size_t i = 0; i < src->keys_cap; i++)
			if (src->keys[i].obj)
				*key_slot(ntab, ncap, src->keys[i].obj, src->keys[i].key) =
				    src->keys[i];
		xfree(src->keys);
		src->keys = ntab;
		src->keys_cap = ncap;
	}
	struct cfg_src_key *s = key_slot(src->keys, src->keys_cap, obj, key);
	if (s->obj)
		return;
	s->obj = obj;
	s->key = xstrdup(key);
	s->line = line;
	s->col = col;
	src->keys_len++;
}

void cfg_src_keep(struct cfg_src *src, json_t *node)
{
	if (!src || !node)
		return;
	if (!src->keep)
		src->keep = json_array();
	if (!src->keep || json_array_append(src->keep, node))
		die("out of memory");
}

int cfg_src_node_pos(const struct cfg_src *src, const json_t *node, int *line, int *col)
{
	if (!src || !node || is_singleton(node))
		return RM_ERROR;
	const struct cfg_src_node *s = node_slot(src->nodes, src->nodes_cap, node);
	if (!s->node)
		return RM_ERROR;
	*line = s->line;
	*col = s->col;
	return RM_OK;
}

int cfg_src_key_pos(const struct cfg_src *src, const json_t *obj, const char *key, int *line,
		    int *col)
{
	if (!src || !obj || !key)
		return RM_ERROR;
	const struct cfg_src_key *s = key_slot(src->keys, src->keys_cap, obj, key);
	if (!s->obj)
		return RM_ERROR;
	*line = s->line;
	*col = s->col;
	return RM_OK;
}

/* ------------------------------------------------------------------------
 * Error formatting */

struct sbuf {
	char *p; /* not owned */
	size_t size, len;
};

static void sb_vprintf(struct sbuf *b, const char *fmt, va_list ap)
{
	if (b->len + 1 >= b->size)
		return;
	int n = vsnprintf(b->p + b->len, b->size - b->len, fmt, ap);
	if (n > 0)
		b->len = MIN(b->len + (size_t)n, b->size - 1);
}

static void PRINTF(2, 3) sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sb_vprintf(b, fmt, ap);
	va_end(ap);
}

void cfg_init(struct cfg_ctx *c, const struct cfg_src *src, const char *file)
{
	memset(c, 0, sizeof(*c));
	c->src = src;
	c->file = file;
}

static bool frame_pos(const struct cfg_ctx *c, int i, int *line, int *col)
{
	const struct cfg_frame *f = &c->st[i];

	if (f->key)
		return cfg_src_key_pos(c->src, f->container, f->key, line, col) == RM_OK;
	return cfg_src_node_pos(c->src, json_array_get(f->container, f->index), line, col) == RM_OK;
}

/* "<file>:<line>:<col>: <path>" into b.  The position is at_node's if known
 * (for errors about an object as a whole), else the innermost frame's that
 * has one.  extra is appended to the path as one more member. */
static void format_where(const struct cfg_ctx *c, const json_t *at_node, const char *extra,
			 struct sbuf *b)
{
	int line = 0, col = 0;
	bool have = at_node && cfg_src_node_pos(c->src, at_node, &line, &col) == RM_OK;

	for (int i = c->depth - 1; !have && i >= 0; i--)
		have = frame_pos(c, i, &line, &col);
	if (have)
		sb_printf(b, "%s%s%d:%d: ", c->file ? c->file : "", c->file ? ":" : "", line, col);
	else if (c->file)
		sb_printf(b, "%s: ", c->file);   /* e.g. JSON sources: no positions */
	for (int i = 0; i < c->depth; i++) {
		const struct cfg_frame *f = &c->st[i];
		if (f->key)
			sb_printf(b, "%s%s", i ? "." : "", f->key);
		else
			sb_printf(b, "[%zu]", f->index);
	}
	if (extra)
		sb_printf(b, "%s%s", c->depth ? "." : "", extra);
	else if (!c->depth)
		sb_printf(b, "<root>");
}

static int vfail_at(struct cfg_ctx *c, const json_t *at_node, const char *extra, const char *fmt,
		    va_list ap)
{
	if (c->failed)
		return RM_ERROR;
	struct sbuf b = {c->err, sizeof(c->err), 0};
	c->err[0] = '\0';
	format_where(c, at_node, extra, &b);
	sb_printf(&b, ": ");
	sb_vprintf(&b, fmt, ap);
	c->failed = true;
	return RM_ERROR;
}

static int PRINTF(4, 5)
    fail_at(struct cfg_ctx *c, const json_t *at_node, const char *extra, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail_at(c, at_node, extra, fmt, ap);
	va_end(ap);
	return RM_ERROR;
}

int cfg_fail(struct cfg_ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail_at(c, NULL, NULL, fmt, ap);
	va_end(ap);
	return RM_ERROR;
}

int cfg_fail_field(struct cfg_ctx *c, const json_t *obj, const char *snake_name,
		   const char *fmt, ...)
{
	va_list ap;
	const json_t *v = cfg_enter(c, obj, snake_name);

	va_start(ap, fmt);
	vfail_at(c, NULL, NULL, fmt, ap);
	va_end(ap);
	if (v)
		cfg_leave(c);
	return RM_ERROR;
}

int cfg_reject_fields(struct cfg_ctx *c, const json_t *obj, const char *const *names,
		      const char *msg)
{
	for (size_t i = 0; names[i]; i++)
		if (cfg_get(obj, names[i]))
			return cfg_fail_field(c, obj, names[i], "%s", msg);
	return RM_OK;
}

/* ------------------------------------------------------------------------
 * Lookup and the path stack */

/* protoc's ToJsonName: drop '_' and upper-case the next character. */
static bool camel_matches(const char *key, const char *snake)
{
	bool up = false;

	for (const char *s = snake; *s; s++) {
		if (*s == '_') {
			up = true;
			continue;
		}
		char want = (up && *s >= 'a' && *s <= 'z') ? (char)(*s - 'a' + 'A') : *s;
		up = false;
		if (*key++ != want)
			return false;
	}
	return *key == '\0';
}

static bool name_matches(const char *key, const char *snake)
{
	return !strcmp(key, snake) || camel_matches(key, snake);
}

/* Member iterator for snake_name (or its camel form); NULL if absent or null. */
static void *lookup_iter(const json_t *obj, const char *snake_name)
{
	if (!json_is_object(obj) || !snake_name)
		return NULL;
	void *it = json_object_iter_at((json_t *)obj, snake_name);
	if (it && !json_is_null(json_object_iter_value(it)))
		return it;
	if (!strchr(snake_name, '_'))
		return NULL;

	char small[128], *camel = small;
	size_t n = strlen(snake_name);
	if (n >= sizeof(small))
		camel = xmalloc(n + 1);
	size_t j = 0;
	bool up = false;
	for (size_t i = 0; i < n; i++) {
		char ch = snake_name[i];
		if (ch == '_') {
			up = true;
			continue;
		}
		camel[j++] = (up && ch >= 'a' && ch <= 'z') ? (char)(ch - 'a' + 'A') : ch;
		up = false;
	}
	camel[j] = '\0';
	it = json_object_iter_at((json_t *)obj, camel);
	if (camel != small)
		xfree(camel);
	if (it && !json_is_null(json_object_iter_value(it)))
		return it;
	return NULL;
}

/* lookup_iter for a reader with a context: snake_case only under
 * CFG_F_SNAKE_KEYS. */
static void *lookup_iter_c(const struct cfg_ctx *c, const json_t *obj, const char *snake_name)
{
	void *it;

	if (!(c->flags & CFG_F_SNAKE_KEYS))
		return lookup_iter(obj, snake_name);
	if (!json_is_object(obj) || !snake_name)
		return NULL;
	it = json_object_iter_at((json_t *)obj, snake_name);
	return it && !json_is_null(json_object_iter_value(it)) ? it : NULL;
}

const json_t *cfg_get(const json_t *obj, const char *snake_name)
{
	void *it = lookup_iter(obj, snake_name);

	return it ? json_object_iter_value(it) : NULL;
}

static int push(struct cfg_ctx *c, const json_t *container, const char *key, size_t index)
{
	if (c->depth >= CFG_MAX_DEPTH)
		return cfg_fail(c, "nesting deeper than %d levels", CFG_MAX_DEPTH);
	c->st[c->depth].container = container;
	c->st[c->depth].key = key;
	c->st[c->depth].index = index;
	c->depth++;
	return RM_OK;
}

/* RM_OK: pushed, *out is the value; RM_DECLINED: absent; RM_ERROR: too deep. */
static int enter_member(struct cfg_ctx *c, const json_t *obj, const char *name, const json_t **out)
{
	void *it = lookup_iter_c(c, obj, name);

	if (!it)
		return RM_DECLINED;
	if (push(c, obj, json_object_iter_key(it), 0) != RM_OK)
		return RM_ERROR;
	*out = json_object_iter_value(it);
	return RM_OK;
}

const json_t *cfg_enter(struct cfg_ctx *c, const json_t *obj, const char *snake_name)
{
	const json_t *v = NULL;

	return enter_member(c, obj, snake_name, &v) == RM_OK ? v : NULL;
}

const json_t *cfg_enter_req(struct cfg_ctx *c, const json_t *obj, const char *snake_name)
{
	const json_t *v = NULL;
	int rc = enter_member(c, obj, snake_name, &v);

	if (rc == RM_DECLINED)
		fail_at(c, obj, snake_name, "missing required field '%s'", snake_name);
	return rc == RM_OK ? v : NULL;
}

const json_t *cfg_enter_idx(struct cfg_ctx *c, const json_t *arr, size_t i)
{
	const json_t *v = json_array_get(arr, i);

	if (!v) {
		cfg_fail(c, "no element [%zu] (internal error)", i);
		return NULL;
	}
	if (push(c, arr, NULL, i) != RM_OK)
		return NULL;
	return v;
}

void cfg_leave(struct cfg_ctx *c)
{
	if (c->depth > 0)
		c->depth--;
}

int cfg_expect_object(struct cfg_ctx *c, const json_t *v)
{
	return json_is_object(v) ? RM_OK : cfg_fail(c, "expected an object");
}

int cfg_expect_array(struct cfg_ctx *c, const json_t *v)
{
	return json_is_array(v) ? RM_OK : cfg_fail(c, "expected a list");
}

static int unknown_field(struct cfg_ctx *c, const json_t *obj, const char *key)
{
	if (push(c, obj, key, 0) != RM_OK)
		return RM_ERROR;
	if (!(c->flags & CFG_F_ALLOW_UNKNOWN)) {
		cfg_fail(c, "unknown field '%s'", key);
		cfg_leave(c);
		return RM_ERROR;
	}
	char where[512];
	struct sbuf b = {where, sizeof(where), 0};
	where[0] = '\0';
	format_where(c, NULL, NULL, &b);
	log_warn("%s: unknown field '%s' ignored", where, key);
	cfg_unknown_fields_seen++;
	cfg_leave(c);
	return RM_OK;
}

int cfg_check_fields(struct cfg_ctx *c, const json_t *obj, const char *const *allowed)
{
	bool seen_small[64], *seen = seen_small;
	size_t n = 0;
	const char *key;
	json_t *val;
	int rc = RM_OK;

	if (!json_is_object(obj))
		return cfg_expect_object(c, obj);
	while (allowed && allowed[n])
		n++;
	if (n > ARRAY_SIZE(seen_small))
		seen = xcalloc(n, sizeof(*seen));
	else
		memset(seen_small, 0, sizeof(seen_small));

	json_object_foreach((json_t *)obj, key, val)
	{
		size_t j;

		if (key[0] == '@')
			continue;
		for (j = 0; j < n; j++)
			if ((c->flags & CFG_F_SNAKE_KEYS) ? !strcmp(key, allowed[j])
							  : name_matches(key, allowed[j]))
				break;
		if (j == n) {
			if (unknown_field(c, obj, key) != RM_OK) {
				rc = RM_ERROR;
				goto out;
			}
			continue;
		}
		if (seen[j]) {
			/* both "foo_bar" and "fooBar": protobuf's JSON parser rejects it too */
			if (push(c, obj, key, 0) == RM_OK) {
				cfg_fail(
				    c,
				    "field '%s' is given twice (as snake_case and lowerCamelCase)",
				    allowed[j]);
				cfg_leave(c);
			}
			rc = RM_ERROR;
			goto out;
		}
		seen[j] = true;
	}
out:
	if (seen != seen_small)
		xfree(seen);
	return rc;
}

/* ------------------------------------------------------------------------
 * Typed getters */

/* v as an unsigned integer <= max (see the top of the file for what counts). */
static bool uint_value(const json_t *v, uint64_t max, uint64_t *out)
{
	if (json_is_integer(v)) {
		json_int_t n = json_integer_value(v);
		if (n < 0 || (uint64_t)n > max)
			return false;
		*out = (uint64_t)n;
		return true;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (!isfinite(d) || d < 0 || d != floor(d) || d > EXACT_DOUBLE_MAX ||
		    (uint64_t)d > max)
			return false;
		*out = (uint64_t)d;
		return true;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t len = json_string_length(v);
		uint64_t n = 0;
		if (!len)
			return false;
		for (size_t i = 0; i < len; i++) {
			if (s[i] < '0' || s[i] > '9')
				return false;
			unsigned d = (unsigned)(s[i] - '0');
			if (n > (UINT64_MAX - d) / 10)
				return false;
			n = n * 10 + d;
		}
		if (n > max)
			return false;
		*out = n;
		return true;
	}
	return false;
}

int cfg_string(struct cfg_ctx *c, const json_t *obj, const char *name, const char **out)
{
	const json_t *v = NULL;
	int rc = enter_member(c, obj, name, &v);

	if (rc != RM_OK)
		return rc == RM_DECLINED ? RM_OK : RM_ERROR;
	if (json_is_string(v))
		*out = json_string_value(v);
	else
		rc = cfg_fail(c, "expected a string");
	cfg_leave(c);
	return rc;
}

int cfg_string_req(struct cfg_ctx *c, const json_t *obj, const char *name, const char **out)
{
	if (!lookup_iter_c(c, obj, name))
		return fail_at(c, obj, name, "missing required field '%s'", name);
	return cfg_string(c, obj, name, out);
}

static int get_uint(struct cfg_ctx *c, const json_t *obj, const char *name, uint64_t max,
		    const char *what, uint64_t *out)
{
	const json_t *v = NULL;
	int rc = enter_member(c, obj, name, &v);

	if (rc != RM_OK)
		return rc == RM_DECLINED ? RM_DECLINED : RM_ERROR;
	if (!uint_value(v, max, out))
		rc = cfg_fail(c, "expected %s", what);
	cfg_leave(c);
	return rc;
}

int cfg_u32(struct cfg_ctx *c, const json_t *obj, const char *name, uint32_t *out)
{
	uint64_t v;
	int rc = get_uint(c, obj, name, UINT32_MAX, "an unsigned 32-bit integer", &v);

	if (rc == RM_OK)
		*out = (uint32_t)v;
	return rc == RM_ERROR ? RM_ERROR : RM_OK;
}

int cfg_u64(struct cfg_ctx *c, const json_t *obj, const char *name, uint64_t *out)
{
	uint64_t v;
	int rc = get_uint(c, obj, name, UINT64_MAX, "an unsigned 64-bit integer", &v);

	if (rc == RM_OK)
		*out = v;
	return rc == RM_ERROR ? RM_ERROR : RM_OK;
}

int cfg_bool(struct cfg_ctx *c, const json_t *obj, const char *name, bool *out)
{
	const json_t *v = NULL;
	int rc = enter_member(c, obj, name, &v);

	if (rc != RM_OK)
		return rc == RM_DECLINED ? RM_OK : RM_ERROR;
	if (json_is_boolean(v))
		*out = json_is_true(v);
	else
		rc = cfg_fail(c, "expected true or false");
	cfg_leave(c);
	return rc;
}

/* proto3 JSON doubles: numbers, "NaN", "Infinity", "-Infinity", or a number
 * in a string. */
static bool double_value(const json_t *v, double *out)
{
	if (json_is_number(v)) {
		*out = json_number_value(v);
		return true;
	}
	if (!json_is_string(v))
		return false;
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	if (!strcmp(s, "NaN")) {
		*out = NAN;
		return true;
	}
	if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity")) {
		*out = s[0] == '-' ? -INFINITY : INFINITY;
		return true;
	}
	if (!len || strspn(s, "0123456789+-.eE") != len)
		return false; /* keeps strtod's "inf", "nan", hex floats and spaces out */
	char *end;
	double d = strtod(s, &end);
	if (end != s + len || !isfinite(d))
		return false;
	*out = d;
	return true;
}

int cfg_double(struct cfg_ctx *c, const json_t *obj, const char *name, double *out)
{
	const json_t *v = NULL;
	int rc = enter_member(c, obj, name, &v);

	if (rc != RM_OK)
		return rc == RM_DECLINED ? RM_OK : RM_ERROR;
	if (!double_value(v, out))
		rc = cfg_fail(c, "expected a number");
	cfg_leave(c);
	return rc;
}

/* "<digits>[.<1-9 digits>]s" -> seconds and nanoseconds. */
static int parse_duration(const char *s, uint64_t *sec, uint32_t *nanos)
{
	uint64_t n = 0;
	uint32_t ns = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return RM_ERROR; /* also rejects "-1s", "+1s", ".5s", "" */
	for (; *p >= '0' && *p <= '9'; p++) {
		n = n * 10 + (uint64_t)(*p - '0');
		if (n > DURATION_MAX_SECONDS)
			return RM_ERROR;
	}
	if (*p == '.') {
		int digits = 0;
		for (p++; *p >= '0' && *p <= '9'; p++) {
			if (++digits > 9)
				return RM_ERROR;
			ns = ns * 10 + (uint32_t)(*p - '0');
		}
		if (!digits)
			return RM_ERROR;
		for (; digits < 9; digits++)
			ns *= 10;
	}
	if (p[0] != 's' || p[1] != '\0')
		return RM_ERROR;
	*sec = n;
	*nanos = ns;
	return RM_OK;
}

int cfg_parse_duration(const char *s, uint64_t *out_ns)
{
	uint64_t sec;
	uint32_t ns;

	if (!s || parse_duration(s, &sec, &ns) != RM_OK)
		return RM_ERROR;
	if (sec > (UINT64_MAX - ns) / 1000000000ULL)
		*out_ns = UINT64_MAX;
	else
		*out_ns = sec * 1000000000ULL + ns;
	return RM_OK;
}

/* The shortest text that reads back as the same number. */
static void number_text(const json_t *v, char *buf, size_t size)
{
	if (json_is_integer(v)) {
		snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return;
	}
	double d = json_real_value(v);
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

static const char *const duration_fields[] = {"seconds", "nanos", NULL};

/* {"seconds": N, "nanos": N} */
static int duration_object(struct cfg_ctx *c, const json_t *v, uint64_t *sec, uint32_t *nanos)
{
	uint64_t n;
	int rc;

	if (cfg_check_fields(c, v, duration_fields) != RM_OK)
		return RM_ERROR;
	*sec = 0;
	*nanos = 0;
	rc = get_uint(c, v, "seconds", DURATION_MAX_SECONDS, "an integer in 0..315576000000", &n);
	if (rc == RM_ERROR)
		return RM_ERROR;
	if (rc == RM_OK)
		*sec = n;
	rc = get_uint(c, v, "nanos", 999999999, "an integer in 0..999999999", &n);
	if (rc == RM_ERROR)
		return RM_ERROR;
	if (rc == RM_OK)
		*nanos = (uint32_t)n;
	return RM_OK;
}

int cfg_duration_ms(struct cfg_ctx *c, const json_t *obj, const char *name, uint64_t *out_ms)
{
	const json_t *v = NULL;
	uint64_t sec = 0;
	uint32_t nanos = 0;
	int rc = enter_member(c, obj, name, &v);

	if (rc != RM_OK)
		return rc == RM_DECLINED ? RM_OK : RM_ERROR;
	if (json_is_string(v)) {
		if (parse_duration(json_string_value(v), &sec, &nanos) != RM_OK)
			rc = cfg_fail(c, "invalid duration '%.80s' (expected e.g. \"1.5s\")",
				      json_string_value(v));
	} else if (json_is_object(v)) {
		rc = duration_object(c, v, &sec, &nanos);
	} else if (json_is_number(v)) {
		/* YAML "timeout: 1.5" arrives as a number: say what was written */
		char num[40];
		number_text(v, num, sizeof(num));
		rc = cfg_fail(c, "invalid duration '%s' (expected e.g. \"1.5s\")", num);
	} else {
		rc = cfg_fail(c, "expected a duration (e.g. \"1.5s\")");
	}
	cfg_leave(c);
	if (rc != RM_OK)
		return RM_ERROR;
	uint64_t ms = sec * 1000 + nanos / 1000000;
	if (!ms && nanos)
		ms = 1;
	*out_ms = ms;
	return RM_OK;
}

static void enum_names(struct sbuf *b, const char *const *names, size_t nnames)
{
	bool first = true;

	for (size_t i = 0; i < nnames; i++) {
		if (!names[i])
			continue;
		sb_printf(b, "%s%s", first ? "" : ", ", names[i]);
		first = false;
	}
}

int cfg_enum(struct cfg_ctx *c, const json_t *obj, const char *name, const char *const *names,
	     size_t nnames, int *out)
{
	const json_t *v = NULL;
	char list[400];
	struct sbuf b = {list, sizeof(list), 0};
	int rc = enter_member(c, obj, name, &v);

	if (rc != RM_OK)
		return rc == RM_DECLINED ? RM_OK : RM_ERROR;
	if (json_is_string(v)) {
		for (size_t i = 0; i < nnames; i++) {
			if (names[i] && !strcmp(names[i], json_string_value(v))) {
				*out = (int)i;
				goto out;
			}
		}
	} else if (json_is_integer(v)) {
		json_int_t n = json_integer_value(v);
		if (n >= 0 && (uint64_t)n < nnames && names[n]) {
			*out = (int)n;
			goto out;
		}
	}
	list[0] = '\0';
	enum_names(&b, names, nnames);
	if (json_is_string(v))
		rc = cfg_fail(c, "unknown value '%.80s' (expected one of %s)", json_string_value(v),
			      list);
	else if (json_is_integer(v))
		rc = cfg_fail(c, "unknown value %" JSON_INTEGER_FORMAT " (expected one of %s)",
			      json_integer_value(v), list);
	else
		rc = cfg_fail(c, "expected one of %s", list);
out:
	cfg_leave(c);
	return rc;
}
