/* yaml_json.c - YAML (libyaml events) to jansson, with positions (yaml_json.h).
 *
 * Decisions worth knowing:
 *  - Plain integers beyond int64 (decimal, 0x, 0o) become reals; the cfg
 *    integer getters reject reals above 2^53, so such a value only works
 *    where a double is wanted (quote it for a uint64 field: "184467...").
 *  - .inf/.nan (and floats that overflow, 1e999) become the proto3 JSON
 *    strings "Infinity", "-Infinity", "NaN": JSON reals must be finite.
 *  - Keys are the scalar's text ("1", "true", "~" are string keys).
 *  - An alias to a node still being built (`&a [*a]`) is an error: JSON
 *    trees cannot be cyclic.  Alias expansion is bounded: a document may not
 *    exceed YJ_MAX_NODES nodes counting every alias as a copy, so "billion
 *    laughs" input cannot make the config compiler walk forever.
 *  - Unknown tags are errors rather than ignored.
 *  - yaml_load_* fail with "empty document" when there is no document or the
 *    first one is empty ("---" alone); an explicit `null`/`~` loads as null.
 *    yaml_load_all_* return [] for no documents and null for empty ones. */
#include "yaml_json.h"
#include "cfg_src.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <yaml.h>

#define YJ_MAX_DEPTH 256
#define YJ_MAX_NODES (1u << 22)
#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

struct anchor {
	char *name;	 /* owned */
	json_t *value;	 /* owned reference; NULL while the node is being built */
	uint64_t weight; /* nodes in the value, aliases expanded */
};

struct loader {
	yaml_parser_t parser;
	const char *name; /* not owned: printed in errors */
	const char *buf;  /* not owned: the input (for reader errors) */
	size_t len;
	struct cfg_src *src;	/* owned until returned; NULL if not wanted */
	struct anchor *anchors; /* owned array (this document's anchors) */
	size_t nanchors, anchors_cap;
	char *err; /* caller's buffer */
	size_t errlen;
	bool failed;
	int depth;
};

static int PRINTF(4, 5) ld_fail_at(struct loader *ld, size_t line, size_t col, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (ld->failed)
		return RM_ERROR;
	ld->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ld->err && ld->errlen)
		snprintf(ld->err, ld->errlen, "%s:%zu:%zu: %s", ld->name, line, col, msg);
	return RM_ERROR;
}

/* libyaml marks are 0-based */
#define ld_fail(ld, mark, ...) ld_fail_at((ld), (mark).line + 1, (mark).column + 1, __VA_ARGS__)

/* Reader errors (bad encoding) carry a byte offset, not a mark. */
static void offset_to_pos(const struct loader *ld, size_t off, size_t *line, size_t *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && i < ld->len; i++) {
		unsigned char ch = (unsigned char)ld->buf[i];
		if (ch == '\n' || (ch == '\r' && (i + 1 >= ld->len || ld->buf[i + 1] != '\n'))) {
			(*line)++;
			*col = 1;
		} else if ((ch & 0xc0) != 0x80 && ch != '\r') {
			(*col)++; /* count characters, not UTF-8 continuation bytes */
		}
	}
}

static int parser_error(struct loader *ld)
{
	const yaml_parser_t *p = &ld->parser;
	const char *problem = p->problem ? p->problem : "invalid YAML";

	if (p->error == YAML_MEMORY_ERROR)
		die("out of memory in libyaml");
	if (p->error == YAML_READER_ERROR) {
		size_t line, col;
		offset_to_pos(ld, p->problem_offset, &line, &col);
		if (p->problem_value != -1)
			return ld_fail_at(ld, line, col, "%s (#%X)", problem,
					  (unsigned)p->problem_value);
		return ld_fail_at(ld, line, col, "%s", problem);
	}
	if (p->context)
		return ld_fail(ld, p->problem_mark, "%s (%s at %zu:%zu)", problem, p->context,
			       p->context_mark.line + 1, p->context_mark.column + 1);
	return ld_fail(ld, p->problem_mark, "%s", problem);
}

static int next_event(struct loader *ld, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&ld->parser, ev))
		return parser_error(ld);
	return RM_OK;
}

/* ------------------------------------------------------------------------
 * Anchors */

static void anchors_reset(struct loader *ld)
{
	for (size_t i = 0; i < ld->nanchors; i++) {
		xfree(ld->anchors[i].name);
		json_decref(ld->anchors[i].value);
	}
	ld->nanchors = 0;
}

/* Register a pending anchor; returns its index or -1 if name is NULL. */
static long anchor_begin(struct loader *ld, const yaml_char_t *name)
{
	if (!name)
		return -1;
	if (ld->nanchors == ld->anchors_cap) {
		ld->anchors_cap = ld->anchors_cap ? ld->anchors_cap * 2 : 16;
		ld->anchors = xrealloc(ld->anchors, ld->anchors_cap * sizeof(*ld->anchors));
	}
	struct anchor *a = &ld->anchors[ld->nanchors];
	a->name = xstrdup((const char *)name);
	a->value = NULL;
	a->weight = 0;
	return (long)ld->nanchors++;
}

static void anchor_end(struct loader *ld, long idx, json_t *value, uint64_t weight)
{
	if (idx < 0)
		return;
	ld->anchors[idx].value = json_incref(value);
	ld->anchors[idx].weight = weight;
}

/* The latest definition wins (YAML allows redefining an anchor). */
static const struct anchor *anchor_find(const struct loader *ld, const char *name)
{
	for (size_t i = ld->nanchors; i-- > 0;)
		if (!strcmp(ld->anchors[i].name, name))
			return &ld->anchors[i];
	return NULL;
}

static const struct anchor *alias_target(struct loader *ld, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	const struct anchor *a = anchor_find(ld, name);

	if (!a) {
		ld_fail(ld, ev->start_mark, "unknown anchor '%s'", name);
		return NULL;
	}
	if (!a->value) {
		ld_fail(ld, ev->start_mark, "alias '*%s' refers to a node that contains it", name);
		return NULL;
	}
	return a;
}

/* ------------------------------------------------------------------------
 * Scalars (YAML 1.2 core schema) */

static json_t *xjson(json_t *j)
{
	if (!j)
		die("out of memory");
	return j;
}

static bool is_digit_in(char ch, int base)
{
	if (base == 8)
		return ch >= '0' && ch <= '7';
	if (base == 16)
		return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
		       (ch >= 'A' && ch <= 'F');
	return ch >= '0' && ch <= '9';
}

static unsigned digit_val(char ch)
{
	if (ch >= 'a')
		return (unsigned)(ch - 'a' + 10);
	if (ch >= 'A')
		return (unsigned)(ch - 'A' + 10);
	return (unsigned)(ch - '0');
}

/* JSON reals must be finite: non-finite values take their proto3 spelling. */
static json_t *real_value(double d)
{
	if (isnan(d))
		return xjson(json_string("NaN"));
	if (isinf(d))
		return xjson(json_string(d > 0 ? "Infinity" : "-Infinity"));
	return xjson(json_real(d));
}

/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+; beyond int64 -> real. */
static json_t *core_int(const char *s, size_t len)
{
	size_t i = 0;
	int base = 10;
	bool neg = false;

	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
		base = s[1] == 'x' ? 16 : 8;
		i = 2;
	} else if (len && (s[0] == '-' || s[0] == '+')) {
		neg = s[0] == '-';
		i = 1;
	}
	if (i == len)
		return NULL;
	for (size_t j = i; j < len; j++)
		if (!is_digit_in(s[j], base))
			return NULL;

	uint64_t n = 0;
	double d = 0;
	bool over = false;
	for (; i < len; i++) {
		unsigned v = digit_val(s[i]);
		d = d * base + v;
		if (n > (UINT64_MAX - v) / (unsigned)base)
			over = true;
		else
			n = n * (unsigned)base + v;
	}
	if (!over && !neg && n <= (uint64_t)INT64_MAX)
		return xjson(json_integer((json_int_t)n));
	if (!over && neg && n <= (uint64_t)INT64_MAX + 1)
		return xjson(
		    json_integer(n == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(json_int_t)n));
	if (base == 10)
		return real_value(strtod(s, NULL)); /* correctly rounded */
	if (!over)
		return real_value((double)n);
	return real_value(d);
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? | [-+]?\.inf | \.nan
 * (s is NUL-terminated at len, as libyaml values are). */
static json_t *core_float(const char *s, size_t len)
{
	size_t i = 0, before = 0, after = 0;

	if (len && (s[0] == '-' || s[0] == '+'))
		i = 1;
	if (len - i == 4 &&
	    (!strcmp(s + i, ".inf") || !strcmp(s + i, ".Inf") || !strcmp(s + i, ".INF")))
		return xjson(json_string(s[0] == '-' ? "-Infinity" : "Infinity"));
	if (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN"))
		return xjson(json_string("NaN"));
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		before++;
	if (i < len && s[i] == '.')
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			after++;
	if (!before && !after)
		return NULL;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t exp = 0;
		i++;
		if (i < len && (s[i] == '-' || s[i] == '+'))
			i++;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			exp++;
		if (!exp)
			return NULL;
	}
	if (i != len)
		return NULL;
	return real_value(strtod(s, NULL));
}

static bool is_one_of(const char *s, const char *const *words)
{
	for (; *words; words++)
		if (!strcmp(s, *words))
			return true;
	return false;
}

static const char *const null_words[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"true", "True", "TRUE", NULL};
static const char *const false_words[] = {"false", "False", "FALSE", NULL};

static json_t *core_bool(const char *s)
{
	if (is_one_of(s, true_words))
		return json_true();
	if (is_one_of(s, false_words))
		return json_false();
	return NULL;
}

/* An untagged plain scalar.  NULL only for invalid UTF-8. */
static json_t *resolve_plain(const char *s, size_t len)
{
	json_t *v;

	if (strlen(s) == len) {
		if (is_one_of(s, null_words))
			return json_null();
		if ((v = core_bool(s)) || (v = core_int(s, len)) || (v = core_float(s, len)))
			return v;
	}
	return json_stringn(s, len);
}

/* A scalar with an explicit tag.  NULL on error (reported). */
static json_t *resolve_tagged(struct loader *ld, const yaml_event_t *ev)
{
	const char *tag = (const char *)ev->data.scalar.tag;
	const char *s = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	bool clean = strlen(s) == len; /* no NUL bytes */
	json_t *v = NULL;

	if (!strcmp(tag, "!") || !strcmp(tag, YAML_TAG_PREFIX "str")) {
		v = json_stringn(s, len);
		if (!v)
			ld_fail(ld, ev->start_mark, "invalid UTF-8 in string");
		return v;
	}
	if (strncmp(tag, YAML_TAG_PREFIX, strlen(YAML_TAG_PREFIX))) {
		ld_fail(ld, ev->start_mark, "unsupported tag '%s'", tag);
		return NULL;
	}
	const char *t = tag + strlen(YAML_TAG_PREFIX);
	if (!strcmp(t, "int")) {
		v = clean ? core_int(s, len) : NULL;
	} else if (!strcmp(t, "float")) {
		v = clean ? core_float(s, len) : NULL;
		if (!v && clean && (v = core_int(s, len)) && json_is_integer(v)) {
			json_t *r = real_value((double)json_integer_value(v));
			json_decref(v);
			v = r;
		}
	} else if (!strcmp(t, "bool")) {
		v = clean ? core_bool(s) : NULL;
	} else if (!strcmp(t, "null")) {
		v = clean && is_one_of(s, null_words) ? json_null() : NULL;
	} else {
		ld_fail(ld, ev->start_mark, "unsupported tag '!!%s'", t);
		return NULL;
	}
	if (!v)
		ld_fail(ld, ev->start_mark, "invalid !!%s value '%.60s'", t, s);
	return v;
}

static int parse_scalar(struct loader *ld, const yaml_event_t *ev, json_t **out)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	json_t *v;

	if (ev->data.scalar.tag)
		v = resolve_tagged(ld, ev);
	else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
		v = resolve_plain(s, len);
	else
		v = json_stringn(s, len);
	if (!v)
		return ld_fail(ld, ev->start_mark, "invalid UTF-8 in string");
	anchor_end(ld, anchor_begin(ld, ev->data.scalar.anchor), v, 1);
	cfg_src_add_node(ld->src, v, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1);
	*out = v;
	return RM_OK;
}

/* ------------------------------------------------------------------------
 * Nodes */

static int parse_node(struct loader *ld, yaml_event_t *ev, json_t **out, uint64_t *weight);

static int add_weight(struct loader *ld, uint64_t *w, uint64_t add, yaml_mark_t mark)
{
	*w += add;
	if (*w > YJ_MAX_NODES)
		return ld_fail(ld, mark,
			       "document too large (more than %u nodes with aliases expanded)",
			       YJ_MAX_NODES);
	return RM_OK;
}

static int check_container_tag(struct loader *ld, const yaml_event_t *ev, const yaml_char_t *tag,
			       const char *want)
{
	if (!tag || !strcmp((const char *)tag, "!") || !strcmp((const char *)tag, want))
		return RM_OK;
	return ld_fail(ld, ev->start_mark, "unsupported tag '%s'", (const char *)tag);
}

static int enter_container(struct loader *ld, const yaml_event_t *ev)
{
	if (ld->depth >= YJ_MAX_DEPTH)
		return ld_fail(ld, ev->start_mark, "nesting deeper than %d levels", YJ_MAX_DEPTH);
	ld->depth++;
	return RM_OK;
}

static int parse_sequence(struct loader *ld, const yaml_event_t *start, json_t **out,
			  uint64_t *weight)
{
	json_t *arr = NULL;
	uint64_t w = 1;
	long anchor;

	if (check_container_tag(ld, start, start->data.sequence_start.tag, YAML_TAG_PREFIX "seq") ||
	    enter_container(ld, start))
		return RM_ERROR;
	arr = xjson(json_array());
	anchor = anchor_begin(ld, start->data.sequence_start.anchor);
	cfg_src_add_node(ld->src, arr, (int)start->start_mark.line + 1,
			 (int)start->start_mark.column + 1);
	for (;;) {
		yaml_event_t ev;
		json_t *child;
		uint64_t cw;

		if (next_event(ld, &ev))
			goto error;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		yaml_mark_t mark = ev.start_mark;
		if (parse_node(ld, &ev, &child, &cw))
			goto error;
		if (json_array_append_new(arr, child))
			die("out of memory");
		if (add_weight(ld, &w, cw, mark))
			goto error;
	}
	ld->depth--;
	anchor_end(ld, anchor, arr, w);
	*out = arr;
	*weight = w;
	return RM_OK;
error:
	ld->depth--;
	json_decref(arr);
	return RM_ERROR;
}

static void merge_one(struct loader *ld, json_t *obj, json_t *from)
{
	const char *k;
	json_t *v;
	int line, col;

	json_object_foreach(from, k, v)
	{
		if (json_object_get(obj, k))
			continue; /* explicit keys, then earlier merged mappings, win */
		if (json_object_set(obj, k, v))
			die("out of memory");
		if (cfg_src_key_pos(ld->src, from, k, &line, &col) == RM_OK)
			cfg_src_add_key(ld->src, obj, k, line, col);
	}
}

static int apply_merge(struct loader *ld, json_t *obj, json_t *val, yaml_mark_t mark)
{
	if (json_is_object(val)) {
		merge_one(ld, obj, val);
		return RM_OK;
	}
	if (json_is_array(val)) {
		for (size_t i = 0; i < json_array_size(val); i++) {
			if (!json_is_object(json_array_get(val, i)))
				goto bad;
		}
		for (size_t i = 0; i < json_array_size(val); i++)
			merge_one(ld, obj, json_array_get(val, i));
		return RM_OK;
	}
bad:
	return ld_fail(ld, mark, "merge key '<<' expects a mapping or a list of mappings");
}

/* The key event as a string (owned); NULL on error (reported).  *merge is
 * set for the plain "<<" merge key. */
static char *mapping_key(struct loader *ld, const yaml_event_t *ev, bool *merge)
{
	const char *s;
	size_t len;

	*merge = false;
	if (ev->type == YAML_SCALAR_EVENT) {
		const char *tag = (const char *)ev->data.scalar.tag;
		s = (const char *)ev->data.scalar.value;
		len = ev->data.scalar.length;
		*merge = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !strcmp(s, "<<") &&
			 (!tag || !strcmp(tag, YAML_TAG_PREFIX "merge"));
	} else if (ev->type == YAML_ALIAS_EVENT) {
		const struct anchor *a = alias_target(ld, ev);
		if (!a)
			return NULL;
		if (!json_is_string(a->value)) {
			ld_fail(ld, ev->start_mark,
				"alias '*%s' used as a key must refer to a string",
				(const char *)ev->data.alias.anchor);
			return NULL;
		}
		s = json_string_value(a->value);
		len = json_string_length(a->value);
	} else {
		ld_fail(ld, ev->start_mark, "mapping keys must be scalars");
		return NULL;
	}
	if (strlen(s) != len) {
		ld_fail(ld, ev->start_mark, "mapping key contains a NUL character");
		return NULL;
	}
	return xstrndup(s, len);
}

static int parse_mapping(struct loader *ld, const yaml_event_t *start, json_t **out,
			 uint64_t *weight)
{
	json_t *obj = NULL, *merge = NULL;
	yaml_mark_t merge_mark = start->start_mark;
	char *key = NULL;
	uint64_t w = 1;
	long anchor;

	if (check_container_tag(ld, start, start->data.mapping_start.tag, YAML_TAG_PREFIX "map") ||
	    enter_container(ld, start))
		return RM_ERROR;
	obj = xjson(json_object());
	anchor = anchor_begin(ld, start->data.mapping_start.anchor);
	cfg_src_add_node(ld->src, obj, (int)start->start_mark.line + 1,
			 (int)start->start_mark.column + 1);
	for (;;) {
		yaml_event_t kev, vev;
		yaml_mark_t kmark, vmark;
		json_t *val;
		uint64_t vw;
		bool is_merge;

		if (next_event(ld, &kev))
			goto error;
		if (kev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&kev);
			break;
		}
		kmark = kev.start_mark;
		key = mapping_key(ld, &kev, &is_merge);
		yaml_event_delete(&kev);
		if (!key)
			goto error;
		if ((is_merge && merge) || (!is_merge && json_object_get(obj, key))) {
			ld_fail(ld, kmark, "duplicate key '%.100s'", key);
			goto error;
		}
		if (next_event(ld, &vev))
			goto error;
		vmark = vev.start_mark;
		if (parse_node(ld, &vev, &val, &vw))
			goto error;
		if (is_merge) {
			merge = val;
			merge_mark = vmark;
		} else {
			if (json_object_set_new(obj, key, val)) {
				ld_fail(ld, kmark, "invalid UTF-8 in key");
				goto error;
			}
			cfg_src_add_key(ld->src, obj, key, (int)kmark.line + 1,
					(int)kmark.column + 1);
		}
		xfree(key);
		key = NULL;
		if (add_weight(ld, &w, 1 + vw, kmark))
			goto error;
	}
	if (merge) {
		if (apply_merge(ld, obj, merge, merge_mark))
			goto error;
		/* its address is in the position table: keep it from being reused */
		cfg_src_keep(ld->src, merge);
		json_decref(merge);
		merge = NULL;
	}
	ld->depth--;
	anchor_end(ld, anchor, obj, w);
	*out = obj;
	*weight = w;
	return RM_OK;
error:
	ld->depth--;
	xfree(key);
	json_decref(merge);
	json_decref(obj);
	return RM_ERROR;
}

/* Consumes (deletes) ev. */
static int parse_node(struct loader *ld, yaml_event_t *ev, json_t **out, uint64_t *weight)
{
	const struct anchor *a;
	int rc;

	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		a = alias_target(ld, ev);
		rc = a ? RM_OK : RM_ERROR;
		if (a) {
			*out = json_incref(a->value);
			*weight = a->weight;
		}
		break;
	case YAML_SCALAR_EVENT:
		rc = parse_scalar(ld, ev, out);
		*weight = 1;
		break;
	case YAML_SEQUENCE_START_EVENT:
		rc = parse_sequence(ld, ev, out, weight);
		break;
	case YAML_MAPPING_START_EVENT:
		rc = parse_mapping(ld, ev, out, weight);
		break;
	default:
		rc = ld_fail(ld, ev->start_mark, "unexpected YAML event %d", (int)ev->type);
		break;
	}
	yaml_event_delete(ev);
	return rc;
}

/* ------------------------------------------------------------------------
 * Documents */

static bool empty_root(const yaml_event_t *ev)
{
	return ev->type == YAML_SCALAR_EVENT && !ev->data.scalar.tag && !ev->data.scalar.anchor &&
	       ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && ev->data.scalar.length == 0;
}

/* One document after DOCUMENT-START; *empty if it has no content. */
static int parse_document(struct loader *ld, json_t **out, bool *empty)
{
	yaml_event_t ev;
	uint64_t w;

	anchors_reset(ld);
	if (next_event(ld, &ev))
		return RM_ERROR;
	*empty = empty_root(&ev);
	if (parse_node(ld, &ev, out, &w))
		return RM_ERROR;
	if (next_event(ld, &ev)) {
		json_decref(*out);
		return RM_ERROR;
	}
	yaml_event_delete(&ev); /* DOCUMENT-END */
	return RM_OK;
}

static json_t *load(const char *name, const char *buf, size_t len, bool all,
		    struct cfg_src **src_out, char *err, size_t errlen)
{
	struct loader ld;
	json_t *result = NULL, *doc;
	yaml_event_t ev;
	bool empty;

	memset(&ld, 0, sizeof(ld));
	ld.name = name ? name : "<input>";
	ld.buf = buf;
	ld.len = len;
	ld.err = err;
	ld.errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
	if (src_out) {
		*src_out = NULL;
		ld.src = cfg_src_new();
	}
	if (!yaml_parser_initialize(&ld.parser))
		die("out of memory");
	yaml_parser_set_input_string(&ld.parser, (const unsigned char *)(buf ? buf : ""),
				     buf ? len : 0);
	if (all)
		result = xjson(json_array());

	for (;;) {
		if (next_event(&ld, &ev))
			goto error;
		yaml_event_type_t type = ev.type;
		yaml_mark_t mark = ev.start_mark;
		yaml_event_delete(&ev);
		if (type == YAML_STREAM_START_EVENT)
			continue;
		if (type == YAML_STREAM_END_EVENT) {
			if (!all) {
				ld_fail(&ld, mark, "empty document");
				goto error;
			}
			break;
		}
		if (type != YAML_DOCUMENT_START_EVENT) {
			ld_fail(&ld, mark, "unexpected YAML event %d", (int)type);
			goto error;
		}
		if (parse_document(&ld, &doc, &empty))
			goto error;
		if (!all) {
			if (empty) {
				ld_fail(&ld, mark, "empty document");
				goto error;
			}
			result = doc; /* later documents are not read */
			break;
		}
		if (json_array_append_new(result, doc))
			die("out of memory");
	}
	anchors_reset(&ld);
	xfree(ld.anchors);
	yaml_parser_delete(&ld.parser);
	if (src_out)
		*src_out = ld.src;
	return result;
error:
	anchors_reset(&ld);
	xfree(ld.anchors);
	yaml_parser_delete(&ld.parser);
	json_decref(result);
	cfg_src_free(ld.src);
	if (err && errlen && !err[0])
		snprintf(err, errlen, "%s: invalid YAML", ld.name);
	return NULL;
}

json_t *yaml_load_buffer(const char *name, const char *buf, size_t len, struct cfg_src **src_out,
			 char *err, size_t errlen)
{
	return load(name, buf, len, false, src_out, err, errlen);
}

json_t *yaml_load_all_buffer(const char *name, const char *buf, size_t len,
			     struct cfg_src **src_out, char *err, size_t errlen)
{
	return load(name, buf, len, true, src_out, err, errlen);
}

/* Whole file into memory (works for pipes too).  NULL with err set. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 8192, n = 0;
	char *buf;

	if (!f) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = xmalloc(cap);
	for (;;) {
		if (n == cap)
			buf = xrealloc(buf, cap *= 2);
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f)) {
		if (err && errlen)
			snprintf(err, errlen, "%s: read error", path);
		fclose(f);
		xfree(buf);
		return NULL;
	}
	fclose(f);
	*len = n;
	return buf;
}

json_t *yaml_load_file(const char *path, struct cfg_src **src_out, char *err, size_t errlen)
{
	size_t len;
	char *buf = read_file(path, &len, err, errlen);
	json_t *j;

	if (src_out)
		*src_out = NULL;
	if (!buf)
		return NULL;
	j = yaml_load_buffer(path, buf, len, src_out, err, errlen);
	xfree(buf);
	return j;
}

json_t *json_load_config_file(const char *path, char *err, size_t errlen)
{
	json_error_t e;
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);

	if (!j && err && errlen) {
		if (e.line > 0)
			snprintf(err, errlen, "%s:%d:%d: %s", path, e.line,
				 e.column > 0 ? e.column : 1, e.text);
		else
			snprintf(err, errlen, "%s: %s", path, e.text);
	}
	return j;
}
