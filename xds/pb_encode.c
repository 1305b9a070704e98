/* pb_encode.c - proto3 JSON -> protobuf wire bytes, driven by the descriptors. */
#include "pb_encode.h"
#include "pb_json.h"
#include "proxy/common.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../proxy/common.h"

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void buf_put(struct buf *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		while (cap < b->len + n)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void put_varint(struct buf *b, uint64_t v)
{
	uint8_t t[10];
	size_t n = 0;
	do {
		t[n] = v & 0x7f;
		v >>= 7;
		if (v)
			t[n] |= 0x80;
		n++;
	} while (v);
	buf_put(b, t, n);
}

static void put_tag(struct buf *b, uint32_t id, unsigned wt)
{
	put_varint(b, (uint64_t)id << 3 | wt);
}

static void put_fixed32(struct buf *b, uint32_t v)
{
	uint8_t t[4] = { v, v >> 8, v >> 16, v >> 24 };
	buf_put(b, t, 4);
}

static void put_fixed64(struct buf *b, uint64_t v)
{
	put_fixed32(b, (uint32_t)v);
	put_fixed32(b, (uint32_t)(v >> 32));
}

static void put_bytes(struct buf *b, uint32_t id, const void *d, size_t n)
{
	put_tag(b, id, 2);
	put_varint(b, n);
	buf_put(b, d, n);
}

static int fail(struct pb_encode_ctx *c, const json_t *node, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct pb_encode_ctx *c, const json_t *node, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	if (c->err[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, sizeof(c->err), "%.500s: %.500s", json_path_str(&c->path), msg);
	if (!c->err_obj)
		c->err_node = node;
	return -1;
}


/* ---- scalars ---------------------------------------------------------------- */

static int get_int(struct pb_encode_ctx *c, const json_t *j, bool is_unsigned, int64_t lo,
		   uint64_t hi, uint64_t *out)
{
	if (json_is_integer(j)) {
		json_int_t v = json_integer_value(j);
		if (v < lo || (v >= 0 && (uint64_t)v > hi))
			return fail(c, j, "integer %" JSON_INTEGER_FORMAT " out of range", v);
		*out = (uint64_t)v;
		return 0;
	}
	if (json_is_real(j)) {
		double d = json_real_value(j);
		/* (double)INT64_MAX and (double)UINT64_MAX round up to 2^63 and
		 * 2^64, which are out of range themselves */
		double top = hi == UINT64_MAX ? 0x1p64 : hi == INT64_MAX ? 0x1p63 : (double)hi + 1;
		if (d != floor(d) || d < (double)lo || d >= top)
			return fail(c, j, "%g is not an integer in range", d);
		*out = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
		return 0;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end;
		errno = 0;
		if (!*s || isspace((unsigned char)*s))
			goto bad;
		if (is_unsigned) {
			if (*s == '-')
				goto bad;
			unsigned long long v = strtoull(s, &end, 10);
			if (errno || *end || v > hi)
				goto bad;
			*out = v;
		} else {
			long long v = strtoll(s, &end, 10);
			if (errno || *end || v < lo || (v >= 0 && (uint64_t)v > hi))
				goto bad;
			*out = (uint64_t)v;
		}
		return 0;
bad:
		return fail(c, j, "'%s' is not an integer in range", s);
	}
	return fail(c, j, "expected an integer");
}

static int get_double(struct pb_encode_ctx *c, const json_t *j, double *out)
{
	if (json_is_number(j)) {
		*out = json_number_value(j);
		return 0;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end;
		if (!strcmp(s, "NaN")) {
			*out = NAN;
			return 0;
		}
		if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity")) {
			*out = *s == '-' ? -INFINITY : INFINITY;
			return 0;
		}
		errno = 0;
		*out = strtod(s, &end);
		if (*s && !errno && !*end && isfinite(*out))
			return 0;
		return fail(c, j, "'%s' is not a number", s);
	}
	return fail(c, j, "expected a number");
}

/* Base64 (standard or URL-safe, padding optional) into b. */
static int put_base64(struct pb_encode_ctx *c, const json_t *j, struct buf *b)
{
	if (!json_is_string(j))
		return fail(c, j, "expected a base64 string");
	size_t n;
	char *raw = base64_decode(json_string_value(j), &n);
	if (!raw)
		return fail(c, j, "invalid base64 (standard or URL-safe alphabet, padding optional)");
	buf_put(b, raw, n);
	free(raw);
	return 0;
}

static unsigned wire_type(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_FLOAT:
		return 5;
	case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
		return 1;
	case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_BYTES: case PROTOBUF_C_TYPE_MESSAGE:
		return 2;
	default:
		return 0;
	}
}

/* A numeric/bool/enum value without its tag; *is_default tells whether it is
 * the proto3 default. */
static int put_numeric(struct pb_encode_ctx *c, const ProtobufCFieldDescriptor *f, const json_t *j,
		       struct buf *b, bool *is_default)
{
	uint64_t u;
	double d;
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
		if (get_int(c, j, false, INT32_MIN, INT32_MAX, &u))
			return -1;
		put_varint(b, (uint64_t)(int64_t)(int32_t)u);
		break;
	case PROTOBUF_C_TYPE_SINT32:
		if (get_int(c, j, false, INT32_MIN, INT32_MAX, &u))
			return -1;
		put_varint(b, (uint32_t)(((int32_t)u << 1) ^ ((int32_t)u >> 31)));
		break;
	case PROTOBUF_C_TYPE_SFIXED32:
		if (get_int(c, j, false, INT32_MIN, INT32_MAX, &u))
			return -1;
		put_fixed32(b, (uint32_t)u);
		break;
	case PROTOBUF_C_TYPE_UINT32:
		if (get_int(c, j, true, 0, UINT32_MAX, &u))
			return -1;
		put_varint(b, u);
		break;
	case PROTOBUF_C_TYPE_FIXED32:
		if (get_int(c, j, true, 0, UINT32_MAX, &u))
			return -1;
		put_fixed32(b, (uint32_t)u);
		break;
	case PROTOBUF_C_TYPE_INT64:
		if (get_int(c, j, false, INT64_MIN, INT64_MAX, &u))
			return -1;
		put_varint(b, u);
		break;
	case PROTOBUF_C_TYPE_SINT64:
		if (get_int(c, j, false, INT64_MIN, INT64_MAX, &u))
			return -1;
		put_varint(b, (u << 1) ^ (uint64_t)((int64_t)u >> 63));
		break;
	case PROTOBUF_C_TYPE_SFIXED64:
		if (get_int(c, j, false, INT64_MIN, INT64_MAX, &u))
			return -1;
		put_fixed64(b, u);
		break;
	case PROTOBUF_C_TYPE_UINT64:
		if (get_int(c, j, true, 0, UINT64_MAX, &u))
			return -1;
		put_varint(b, u);
		break;
	case PROTOBUF_C_TYPE_FIXED64:
		if (get_int(c, j, true, 0, UINT64_MAX, &u))
			return -1;
		put_fixed64(b, u);
		break;
	case PROTOBUF_C_TYPE_FLOAT: {
		if (get_double(c, j, &d))
			return -1;
		float fl = (float)d;
		uint32_t bits;
		memcpy(&bits, &fl, 4);
		put_fixed32(b, bits);
		*is_default = bits == 0;
		return 0;
	}
	case PROTOBUF_C_TYPE_DOUBLE: {
		if (get_double(c, j, &d))
			return -1;
		uint64_t bits;
		memcpy(&bits, &d, 8);
		put_fixed64(b, bits);
		*is_default = bits == 0;
		return 0;
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(j))
			return fail(c, j, "expected true or false");
		u = json_is_true(j);
		put_varint(b, u);
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		if (json_is_string(j)) {
			const ProtobufCEnumValue *ev =
				protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
			if (!ev)
				return fail(c, j, "unknown value '%s' of enum %s", json_string_value(j),
					    ed->name);
			u = (uint64_t)(int64_t)ev->value;
		} else if (get_int(c, j, false, INT32_MIN, INT32_MAX, &u)) {
			return -1;
		}
		put_varint(b, (uint64_t)(int64_t)(int32_t)u);
		break;
	}
	default:
		return fail(c, j, "internal: not a numeric field");
	}
	*is_default = u == 0;
	return 0;
}

/* ---- messages ----------------------------------------------------------------- */

static int encode_message(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d,
			  const json_t *j, struct buf *b);

/* One field value (tag included).  skip_default: leave out a proto3 default. */
static int put_value(struct pb_encode_ctx *c, const ProtobufCFieldDescriptor *f, const json_t *j,
		     struct buf *b, bool skip_default)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		if (!json_is_string(j))
			return fail(c, j, "expected a string");
		size_t n = json_string_length(j);
		if (!n && skip_default)
			return 0;
		put_bytes(b, f->id, json_string_value(j), n);
		return 0;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		struct buf t = { 0 };
		if (put_base64(c, j, &t)) {
			free(t.p);
			return -1;
		}
		if (t.len || !skip_default)
			put_bytes(b, f->id, t.p, t.len);
		free(t.p);
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		struct buf t = { 0 };
		if (encode_message(c, f->descriptor, j, &t)) {
			free(t.p);
			return -1;
		}
		put_bytes(b, f->id, t.p, t.len);
		free(t.p);
		return 0;
	}
	default: {
		struct buf t = { 0 };
		bool def = false;
		if (put_numeric(c, f, j, &t, &def)) {
			free(t.p);
			return -1;
		}
		if (!def || !skip_default) {
			put_tag(b, f->id, wire_type(f->type));
			buf_put(b, t.p, t.len);
		}
		free(t.p);
		return 0;
	}
	}
}

static bool is_map_entry(const ProtobufCFieldDescriptor *f)
{
	const ProtobufCMessageDescriptor *d = f->descriptor;
	size_t n;
	if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED ||
	    d->n_fields != 2 || strcmp(d->fields[0].name, "key") || strcmp(d->fields[1].name, "value"))
		return false;
	n = strlen(d->name);
	return n > 5 && !strcmp(d->name + n - 5, "Entry");
}

static int put_map(struct pb_encode_ctx *c, const ProtobufCFieldDescriptor *f, const json_t *j,
		   struct buf *b)
{
	const ProtobufCFieldDescriptor *kf = &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[0];
	const ProtobufCFieldDescriptor *vf = &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[1];
	const char *k;
	json_t *v;
	if (!json_is_object(j))
		return fail(c, j, "expected an object (map)");
	json_object_foreach((json_t *)j, k, v) {
		struct buf e = { 0 };
		size_t mark = json_path_push_key(&c->path, k);
		json_t *kj;
		int rc;
		if (kf->type == PROTOBUF_C_TYPE_STRING)
			kj = json_string(k);
		else if (kf->type == PROTOBUF_C_TYPE_BOOL && (!strcmp(k, "true") || !strcmp(k, "false")))
			kj = json_boolean(!strcmp(k, "true"));
		else
			kj = json_string(k);   /* integer keys: parsed from the string */
		rc = put_value(c, kf, kj, &e, false);
		json_decref(kj);
		if (!rc && !json_is_null(v))
			rc = put_value(c, vf, v, &e, false);
		json_path_pop(&c->path, mark);
		if (!rc)
			put_bytes(b, f->id, e.p, e.len);
		free(e.p);
		if (rc)
			return -1;
	}
	return 0;
}

static bool packable(const ProtobufCFieldDescriptor *f)
{
	return wire_type(f->type) != 2;
}

static int put_field(struct pb_encode_ctx *c, const ProtobufCFieldDescriptor *f, const json_t *j,
		     struct buf *b)
{
	if (json_is_null(j) && !(f->type == PROTOBUF_C_TYPE_MESSAGE &&
				 !strcmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name,
					 "google.protobuf.Value")))
		return 0;   /* null: not set */
	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		if (is_map_entry(f))
			return put_map(c, f, j, b);
		if (!json_is_array(j))
			return fail(c, j, "expected an array");
		if (packable(f) && json_array_size(j)) {
			struct buf t = { 0 };
			for (size_t i = 0; i < json_array_size(j); i++) {
				size_t mark = json_path_push_idx(&c->path, i);
				bool def;
				int rc = put_numeric(c, f, json_array_get(j, i), &t, &def);
				json_path_pop(&c->path, mark);
				if (rc) {
					free(t.p);
					return -1;
				}
			}
			put_bytes(b, f->id, t.p, t.len);
			free(t.p);
			return 0;
		}
		for (size_t i = 0; i < json_array_size(j); i++) {
			size_t mark = json_path_push_idx(&c->path, i);
			int rc = put_value(c, f, json_array_get(j, i), b, false);
			json_path_pop(&c->path, mark);
			if (rc)
				return -1;
		}
		return 0;
	}
	bool implicit = f->label == PROTOBUF_C_LABEL_NONE && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF);
	return put_value(c, f, j, b, implicit);
}

/* "fooBar" -> "foo_bar" (the JSON name of a snake_case field). */
static void camel_to_snake(const char *in, char *out, size_t cap)
{
	size_t n = 0;
	for (; *in && n + 2 < cap; in++) {
		if (isupper((unsigned char)*in)) {
			out[n++] = '_';
			out[n++] = (char)tolower((unsigned char)*in);
		} else {
			out[n++] = *in;
		}
	}
	out[n] = 0;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d, const char *k)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, k);
	char snake[256];
	if (f)
		return f;
	camel_to_snake(k, snake, sizeof(snake));
	return strcmp(snake, k) ? protobuf_c_message_descriptor_get_field_by_name(d, snake) : NULL;
}

static int fail_key(struct pb_encode_ctx *c, const json_t *obj, const char *key, const char *fmt,
		    const char *a, const char *b2)
{
	char msg[400];
	if (c->err[0])
		return -1;
	snprintf(msg, sizeof(msg), fmt, a, b2);
	c->err_obj = obj;
	snprintf(c->err_key, sizeof(c->err_key), "%s", key);
	return fail(c, NULL, "%s", msg);
}

static int encode_wkt(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d, const json_t *j,
		      struct buf *b, bool *handled);

static int encode_message(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d,
			  const json_t *j, struct buf *b)
{
	bool wkt;
	int rc = encode_wkt(c, d, j, b, &wkt);
	if (wkt)
		return rc;
	if (!json_is_object(j))
		return fail(c, j, "expected an object (%s)", d->name);

	/* Fields are emitted in descriptor (field-number) order. */
	const json_t **vals = xcalloc(d->n_fields ? d->n_fields : 1, sizeof(*vals));
	const char **keys = xcalloc(d->n_fields ? d->n_fields : 1, sizeof(*keys));
	const char *k;
	json_t *v;
	rc = 0;
	json_object_foreach((json_t *)j, k, v) {
		const ProtobufCFieldDescriptor *f = find_field(d, k);
		if (!f) {
			size_t mark = json_path_push(&c->path, k);
			rc = fail_key(c, j, k, "unknown field '%s' in %s", k, d->name);
			json_path_pop(&c->path, mark);
			goto out;
		}
		size_t i = (size_t)(f - d->fields);
		if (vals[i]) {
			size_t mark = json_path_push(&c->path, f->name);
			rc = fail_key(c, j, k, "field given twice ('%s' and '%s')", keys[i], k);
			json_path_pop(&c->path, mark);
			goto out;
		}
		vals[i] = v;
		keys[i] = k;
	}
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (!vals[i] || json_is_null(vals[i]) || !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
			continue;
		for (unsigned o = i + 1; o < d->n_fields; o++)
			if (vals[o] && !json_is_null(vals[o]) &&
			    (d->fields[o].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    d->fields[o].quantifier_offset == f->quantifier_offset) {
				size_t mark = json_path_push(&c->path, d->fields[o].name);
				rc = fail_key(c, j, keys[o], "'%s' and '%s' are members of the same oneof",
					      f->name, d->fields[o].name);
				json_path_pop(&c->path, mark);
				goto out;
			}
	}
	for (unsigned i = 0; i < d->n_fields; i++) {
		if (!vals[i])
			continue;
		size_t mark = json_path_push(&c->path, d->fields[i].name);
		rc = put_field(c, &d->fields[i], vals[i], b);
		json_path_pop(&c->path, mark);
		if (rc)
			goto out;
	}
out:
	free(vals);
	free(keys);
	return rc;
}

/* ---- well-known types ------------------------------------------------------- */

/* *p at the '.' of "<seconds>.<fraction>": 1..9 digits -> nanoseconds in
 * *nanos, *p moved past them.  -1 without digits or with more than 9. */
static int parse_fraction(const char **p, int32_t *nanos)
{
	const char *q = *p + 1;
	int32_t nv = 0;
	int digits = 0;
	while (isdigit((unsigned char)*q)) {
		if (digits == 9)
			return -1;
		nv = nv * 10 + (*q++ - '0');
		digits++;
	}
	if (!digits)
		return -1;
	for (; digits < 9; digits++)
		nv *= 10;
	*nanos = nv;
	*p = q;
	return 0;
}

static int parse_duration(const char *s, int64_t *sec, int32_t *nanos)
{
	bool neg = *s == '-';
	const char *p = s + neg;
	int64_t sv = 0;
	int32_t nv = 0;
	if (!isdigit((unsigned char)*p))
		return -1;
	while (isdigit((unsigned char)*p)) {
		if (sv > 315576000000LL)
			return -1;
		sv = sv * 10 + (*p++ - '0');
	}
	if (*p == '.' && parse_fraction(&p, &nv))
		return -1;
	if (strcmp(p, "s") || sv > 315576000000LL)
		return -1;
	*sec = neg ? -sv : sv;
	*nanos = neg ? -nv : nv;
	return 0;
}

static int parse_timestamp(const char *s, int64_t *sec, int32_t *nanos)
{
	struct tm tm = { 0 };
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	int32_t nv = 0;
	int off = 0;
	if (!p)
		return -1;
	if (*p == '.' && parse_fraction(&p, &nv))
		return -1;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
		   isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
		   isdigit((unsigned char)p[5])) {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
		if (*p == '+')
			off = -off;
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	*sec = (int64_t)timegm(&tm) + off;
	*nanos = nv;
	return 0;
}

static void put_sec_nanos(struct buf *b, int64_t sec, int32_t nanos)
{
	if (sec) {
		put_tag(b, 1, 0);
		put_varint(b, (uint64_t)sec);
	}
	if (nanos) {
		put_tag(b, 2, 0);
		put_varint(b, (uint64_t)(int64_t)nanos);
	}
}

static int encode_value(struct pb_encode_ctx *c, const json_t *j, struct buf *b);

static int encode_struct(struct pb_encode_ctx *c, const json_t *j, struct buf *b)
{
	const char *k;
	json_t *v;
	if (!json_is_object(j))
		return fail(c, j, "expected an object (google.protobuf.Struct)");
	json_object_foreach((json_t *)j, k, v) {
		struct buf e = { 0 }, val = { 0 };
		size_t mark = json_path_push_key(&c->path, k);
		int rc = encode_value(c, v, &val);
		json_path_pop(&c->path, mark);
		if (!rc) {
			put_bytes(&e, 1, k, strlen(k));
			put_bytes(&e, 2, val.p, val.len);
			put_bytes(b, 1, e.p, e.len);
		}
		free(e.p);
		free(val.p);
		if (rc)
			return -1;
	}
	return 0;
}

static int encode_list(struct pb_encode_ctx *c, const json_t *j, struct buf *b)
{
	if (!json_is_array(j))
		return fail(c, j, "expected an array (google.protobuf.ListValue)");
	for (size_t i = 0; i < json_array_size(j); i++) {
		struct buf val = { 0 };
		size_t mark = json_path_push_idx(&c->path, i);
		int rc = encode_value(c, json_array_get(j, i), &val);
		json_path_pop(&c->path, mark);
		if (!rc)
			put_bytes(b, 1, val.p, val.len);
		free(val.p);
		if (rc)
			return -1;
	}
	return 0;
}

/* google.protobuf.Value: the kind follows the JSON type. */
static int encode_value(struct pb_encode_ctx *c, const json_t *j, struct buf *b)
{
	struct buf t = { 0 };
	int rc = 0;
	switch (json_typeof(j)) {
	case JSON_NULL:
		put_tag(b, 1, 0);
		put_varint(b, 0);
		return 0;
	case JSON_INTEGER:
	case JSON_REAL: {
		double d = json_number_value(j);
		uint64_t bits;
		memcpy(&bits, &d, 8);
		put_tag(b, 2, 1);
		put_fixed64(b, bits);
		return 0;
	}
	case JSON_STRING:
		put_bytes(b, 3, json_string_value(j), json_string_length(j));
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		put_tag(b, 4, 0);
		put_varint(b, json_is_true(j));
		return 0;
	case JSON_OBJECT:
		rc = encode_struct(c, j, &t);
		if (!rc)
			put_bytes(b, 5, t.p, t.len);
		break;
	case JSON_ARRAY:
		rc = encode_list(c, j, &t);
		if (!rc)
			put_bytes(b, 6, t.p, t.len);
		break;
	}
	free(t.p);
	return rc;
}

static bool has_special_json(const ProtobufCMessageDescriptor *d)
{
	return !strncmp(d->name, "google.protobuf.", 16);   /* Empty too: {"@type", "value": {}} */
}

/* The payload of an Any (j carries "@type"), into b (no Any wrapper). */
static int encode_any_payload(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d,
			      const json_t *j, struct buf *b)
{
	if (has_special_json(d)) {
		const char *k;
		json_t *v, *val = NULL;
		json_object_foreach((json_t *)j, k, v) {
			if (!strcmp(k, "@type"))
				continue;
			if (strcmp(k, "value"))
				return fail_key(c, j, k, "unknown field '%s' in the Any of %s", k, d->name);
			val = v;
		}
		if (!val)
			return fail(c, j, "an Any of %s needs \"value\"", d->name);
		size_t mark = json_path_push(&c->path, "value");
		int rc = encode_message(c, d, val, b);
		json_path_pop(&c->path, mark);
		return rc;
	}
	json_t *copy = json_copy((json_t *)j);   /* shallow: drop "@type" */
	json_object_del(copy, "@type");
	int rc = encode_message(c, d, copy, b);
	if (rc && c->err_obj == copy)
		c->err_obj = j;   /* same keys: positions of the original */
	json_decref(copy);
	return rc;
}

static const ProtobufCMessageDescriptor *any_type(struct pb_encode_ctx *c, const json_t *j,
						  const char *def, const char **url)
{
	const json_t *t = json_object_get(j, "@type");
	const ProtobufCMessageDescriptor *d;
	if (!t && def) {
		*url = def;
	} else if (!json_is_string(t)) {
		fail(c, t ? t : j, "an Any needs \"@type\" (a type URL string)");
		return NULL;
	} else {
		*url = json_string_value(t);
	}
	if (!strchr(*url, '/')) {
		fail(c, t ? t : j, "Any type URL '%s' has no '/'", *url);
		return NULL;
	}
	if (!(d = pb_find_descriptor(*url)))
		fail(c, t ? t : j, "unknown or unsupported type '%s'", *url);
	return d;
}

static int encode_any(struct pb_encode_ctx *c, const json_t *j, struct buf *b)
{
	const char *url;
	const ProtobufCMessageDescriptor *d;
	struct buf t = { 0 };
	if (!json_is_object(j))
		return fail(c, j, "expected an object with \"@type\" (google.protobuf.Any)");
	if (!json_object_size(j))
		return 0;
	if (!(d = any_type(c, j, NULL, &url)))
		return -1;
	if (encode_any_payload(c, d, j, &t)) {
		free(t.p);
		return -1;
	}
	put_bytes(b, 1, url, strlen(url));
	if (t.len)
		put_bytes(b, 2, t.p, t.len);
	free(t.p);
	return 0;
}

static int encode_wkt(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d, const json_t *j,
		      struct buf *b, bool *handled)
{
	const char *n = d->name;
	*handled = true;
	if (strncmp(n, "google.protobuf.", 16)) {
		*handled = false;
		return 0;
	}
	n += 16;
	if (!strcmp(n, "Duration") || !strcmp(n, "Timestamp")) {
		int64_t sec;
		int32_t ns;
		bool dur = *n == 'D';
		if (!json_is_string(j))
			return fail(c, j, dur ? "expected a duration string like \"1.5s\""
					      : "expected an RFC 3339 timestamp string");
		if ((dur ? parse_duration : parse_timestamp)(json_string_value(j), &sec, &ns))
			return fail(c, j, "invalid %s '%s'", dur ? "duration" : "timestamp",
				    json_string_value(j));
		put_sec_nanos(b, sec, ns);
		return 0;
	}
	if (!strcmp(n, "Struct"))
		return encode_struct(c, j, b);
	if (!strcmp(n, "Value"))
		return encode_value(c, j, b);
	if (!strcmp(n, "ListValue"))
		return encode_list(c, j, b);
	if (!strcmp(n, "Any"))
		return encode_any(c, j, b);
	size_t len = strlen(n);
	if (len > 5 && !strcmp(n + len - 5, "Value") && d->n_fields == 1)
		return put_value(c, &d->fields[0], j, b, true);   /* wrapper: bare value */
	*handled = false;   /* Empty and anything else: a plain message */
	return 0;
}

/* ---- entry points ------------------------------------------------------------- */

static void ctx_reset(struct pb_encode_ctx *c, const char *root_path)
{
	json_path_set(&c->path, root_path);
	c->err[0] = 0;
	c->err_obj = NULL;
	c->err_node = NULL;
	c->err_key[0] = 0;
}

int pb_encode_json(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d, const json_t *j,
		   const char *root_path, uint8_t **out, size_t *len)
{
	struct buf b = { 0 };
	ctx_reset(c, root_path);
	if (encode_message(c, d, j, &b)) {
		free(b.p);
		return -1;
	}
	if (!b.p)
		b.p = xmalloc(1);
	*out = b.p;
	*len = b.len;
	return 0;
}

int pb_encode_any_payload(struct pb_encode_ctx *c, const json_t *j, const char *default_type,
			  const char *root_path, char **type_url, uint8_t **out, size_t *len)
{
	struct buf b = { 0 };
	const char *url;
	const ProtobufCMessageDescriptor *d;
	ctx_reset(c, root_path);
	if (!json_is_object(j))
		return fail(c, j, "expected an object");
	if (!(d = any_type(c, j, default_type, &url)))
		return -1;
	if (encode_any_payload(c, d, j, &b)) {
		free(b.p);
		return -1;
	}
	if (!b.p)
		b.p = xmalloc(1);
	*type_url = xstrdup(url);
	*out = b.p;
	*len = b.len;
	return 0;
}
