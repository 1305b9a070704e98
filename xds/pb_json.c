/* pb_json.c - protobuf-c message -> proto3 JSON, driven by the descriptors. */
#include "pb_json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "../proxy/common.h"
#include "../proxy/log.h"

extern const ProtobufCMessageDescriptor *const pb_registry[];   /* build/gen/pb_registry.c */

#define TYPE_PREFIX "type.googleapis.com/"

const ProtobufCMessageDescriptor *pb_find_descriptor(const char *name)
{
	const char *slash = strrchr(name, '/');
	if (slash)
		name = slash + 1;
	for (size_t i = 0; pb_registry[i]; i++)
		if (!strcmp(pb_registry[i]->name, name))
			return pb_registry[i];
	return NULL;
}

static int fail(struct pb_json_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct pb_json_ctx *c, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	if (c->err[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	const char *path = json_path_str(&c->path);
	size_t n = strlen(path);
	memcpy(c->err, path, n + 1);
	snprintf(c->err + n, sizeof(c->err) - n, ": %.*s", (int)(sizeof(c->err) - n - 3), msg);
	return -1;
}


static const ProtobufCFieldDescriptor *field_by_name(const ProtobufCMessageDescriptor *d,
						     const char *name)
{
	return protobuf_c_message_descriptor_get_field_by_name(d, name);
}

#define FIELD_PTR(msg, f) ((const char *)(msg) + (f)->offset)

static json_t *message_to_json(struct pb_json_ctx *c, const ProtobufCMessage *m);

static json_t *double_json(double v)
{
	if (isnan(v))
		return json_string("NaN");
	if (isinf(v))
		return json_string(v > 0 ? "Infinity" : "-Infinity");
	return json_real(v);
}

static json_t *base64_json(const uint8_t *p, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = xmalloc(4 * ((n + 2) / 3) + 1), *o = out;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < n ? p[i + 2] : 0);
		*o++ = t[v >> 18 & 63];
		*o++ = t[v >> 12 & 63];
		*o++ = i + 1 < n ? t[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? t[v & 63] : '=';
	}
	*o = 0;
	json_t *j = json_string(out);
	free(out);
	return j;
}

/* One scalar/enum/string/bytes/message value at p. */
static json_t *value_to_json(struct pb_json_ctx *c, const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_integer(*(const int64_t *)p);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: {
		uint64_t v = *(const uint64_t *)p;
		if (v > INT64_MAX) {
			char b[32];
			snprintf(b, sizeof(b), "%" PRIu64, v);
			return json_string(b);
		}
		return json_integer((json_int_t)v);
	}
	case PROTOBUF_C_TYPE_FLOAT:
		return double_json(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return double_json(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		return ev ? json_string(ev->name) : json_integer(v);
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		json_t *j = json_string(s ? s : "");
		if (!j)
			fail(c, "string is not valid UTF-8");
		return j;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		return base64_json(b->data, b->len);
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
		if (!m)
			return json_object();
		return message_to_json(c, m);
	}
	}
	fail(c, "unsupported field type %d", (int)f->type);
	return NULL;
}

static bool is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_ENUM:
		return *(const uint32_t *)p == 0;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		return *(const uint64_t *)p == 0;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)p == 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)p == 0;
	case PROTOBUF_C_TYPE_BOOL:
		return !*(const protobuf_c_boolean *)p;
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return !s || !*s;
	}
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)p)->len == 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(void *const *)p == NULL;
	}
	return true;
}

/* Is field f of m set, as message_to_json decides (proto3: a default
 * value is not set; a oneof member or an explicit-presence field is set
 * when present)? */
static bool field_set(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
	const void *p = (const char *)m + f->offset;

	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return *(const size_t *)((const char *)m + f->quantifier_offset) != 0;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		return *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
	    f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING)
		return *(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset);
	return !is_default(f, p);
}

bool pb_only_fields(const ProtobufCMessage *m, const char *const *allowed)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;

	if (m->n_unknown_fields)
		return false;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		size_t k;
		if (!field_set(m, f))
			continue;
		for (k = 0; allowed[k] && strcmp(allowed[k], f->name); k++)
			;
		if (!allowed[k])
			return false;
	}
	return true;
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

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	default:
		return 4;
	}
}

/* ---- well-known types ------------------------------------------------------ */

static const void *wkt_field(const ProtobufCMessage *m, const char *name,
			     const ProtobufCFieldDescriptor **fo)
{
	const ProtobufCFieldDescriptor *f = field_by_name(m->descriptor, name);
	*fo = f;
	return f ? FIELD_PTR(m, f) : NULL;
}

static json_t *duration_json(const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f;
	int64_t s = *(const int64_t *)wkt_field(m, "seconds", &f);
	int32_t ns = *(const int32_t *)wkt_field(m, "nanos", &f);
	char b[64];
	bool neg = s < 0 || ns < 0;
	uint64_t us = (uint64_t)(s < 0 ? -s : s);
	uint32_t un = (uint32_t)(ns < 0 ? -ns : ns);
	int n = snprintf(b, sizeof(b), "%s%" PRIu64, neg ? "-" : "", us);
	if (un) {
		if (un % 1000000 == 0)
			snprintf(b + n, sizeof(b) - n, ".%03u", un / 1000000);
		else if (un % 1000 == 0)
			snprintf(b + n, sizeof(b) - n, ".%06u", un / 1000);
		else
			snprintf(b + n, sizeof(b) - n, ".%09u", un);
	}
	strcat(b, "s");
	return json_string(b);
}

static json_t *timestamp_json(const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f;
	int64_t s = *(const int64_t *)wkt_field(m, "seconds", &f);
	int32_t ns = *(const int32_t *)wkt_field(m, "nanos", &f);
	time_t t = (time_t)s;
	struct tm tm;
	char b[64];
	gmtime_r(&t, &tm);
	size_t n = strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	if (ns > 0)
		n += (size_t)snprintf(b + n, sizeof(b) - n, ".%09d", ns);
	snprintf(b + n, sizeof(b) - n, "Z");
	return json_string(b);
}

static json_t *struct_value_json(struct pb_json_ctx *c, const ProtobufCMessage *m);

static json_t *struct_json(struct pb_json_ctx *c, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f;
	const void *p = wkt_field(m, "fields", &f);
	size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
	ProtobufCMessage *const *ents = *(ProtobufCMessage *const *const *)p;
	json_t *o = json_object();
	for (size_t i = 0; i < n; i++) {
		const ProtobufCFieldDescriptor *kf, *vf;
		const char *k = *(char *const *)wkt_field(ents[i], "key", &kf);
		const ProtobufCMessage *v = *(ProtobufCMessage *const *)wkt_field(ents[i], "value", &vf);
		size_t mark = json_path_push_key(&c->path, k ? k : "");
		json_t *j = v ? struct_value_json(c, v) : json_null();
		json_path_pop(&c->path, mark);
		if (!j) {
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, k ? k : "", j);
	}
	return o;
}

static json_t *list_json(struct pb_json_ctx *c, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f;
	const void *p = wkt_field(m, "values", &f);
	size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
	ProtobufCMessage *const *vals = *(ProtobufCMessage *const *const *)p;
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		size_t mark = json_path_push_idx(&c->path, i);
		json_t *j = struct_value_json(c, vals[i]);
		json_path_pop(&c->path, mark);
		if (!j) {
			json_decref(a);
			return NULL;
		}
		json_array_append_new(a, j);
	}
	return a;
}

/* google.protobuf.Value: whichever kind is set. */
static json_t *struct_value_json(struct pb_json_ctx *c, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		uint32_t which = *(const uint32_t *)((const char *)m + f->quantifier_offset);
		if (which != f->id)
			continue;
		const void *p = FIELD_PTR(m, f);
		if (!strcmp(f->name, "null_value"))
			return json_null();
		if (!strcmp(f->name, "struct_value"))
			return struct_json(c, *(ProtobufCMessage *const *)p);
		if (!strcmp(f->name, "list_value"))
			return list_json(c, *(ProtobufCMessage *const *)p);
		return value_to_json(c, f, p);
	}
	return json_null();
}

static json_t *any_json(struct pb_json_ctx *c, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f;
	const char *url = *(char *const *)wkt_field(m, "type_url", &f);
	const ProtobufCBinaryData *v = wkt_field(m, "value", &f);
	if (!url || !*url)
		return json_object();
	return pb_any_to_json(c, url, v->data, v->len, NULL);
}

/* A well-known type with a special JSON form, or NULL with *handled false. */
static json_t *wkt_json(struct pb_json_ctx *c, const ProtobufCMessage *m, bool *handled)
{
	const char *n = m->descriptor->name;
	*handled = true;
	if (strncmp(n, "google.protobuf.", 16)) {
		*handled = false;
		return NULL;
	}
	n += 16;
	if (!strcmp(n, "Duration"))
		return duration_json(m);
	if (!strcmp(n, "Timestamp"))
		return timestamp_json(m);
	if (!strcmp(n, "Struct"))
		return struct_json(c, m);
	if (!strcmp(n, "Value"))
		return struct_value_json(c, m);
	if (!strcmp(n, "ListValue"))
		return list_json(c, m);
	if (!strcmp(n, "Any"))
		return any_json(c, m);
	if (!strcmp(n, "Empty"))
		return json_object();
	size_t len = strlen(n);
	if (len > 5 && !strcmp(n + len - 5, "Value") && m->descriptor->n_fields == 1) {
		const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
		return value_to_json(c, f, FIELD_PTR(m, f));   /* wrapper: bare value */
	}
	*handled = false;
	return NULL;
}

/* Envoy fields the subset leaves out (unsupported): named in errors. */
static const struct dropped_field {
	const char *msg;
	uint32_t num;
	const char *name;
} dropped_fields[] = {
#define X(m, n, f) { m, n, f },
#include "proto/dropped_fields.def"
#undef X
};

static const char *dropped_name(const char *msg, uint32_t num)
{
	for (size_t i = 0; i < sizeof(dropped_fields) / sizeof(dropped_fields[0]); i++)
		if (dropped_fields[i].num == num && !strcmp(dropped_fields[i].msg, msg))
			return dropped_fields[i].name;
	return NULL;
}

static int check_unknown(struct pb_json_ctx *c, const ProtobufCMessage *m)
{
	for (unsigned i = 0; i < m->n_unknown_fields; i++) {
		uint32_t tag = m->unknown_fields[i].tag;
		const char *name = dropped_name(m->descriptor->name, tag);
		char what[160];
		if (name)
			snprintf(what, sizeof(what), "field '%s' (number %u) of %s is not supported yet",
				 name, tag, m->descriptor->name);
		else
			snprintf(what, sizeof(what), "unknown field number %u in %s", tag,
				 m->descriptor->name);
		if (c->flags & PB_JSON_ALLOW_UNKNOWN) {
			c->unknown_seen++;
			log_warn("%s: %s: ignored (--allow-unknown-fields)",
				 json_path_str(&c->path), what);
			continue;
		}
		return fail(c, "%s", what);
	}
	return 0;
}

static json_t *message_to_json(struct pb_json_ctx *c, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	bool wkt;
	json_t *o = wkt_json(c, m, &wkt);
	if (wkt)
		return o;
	if (check_unknown(c, m))
		return NULL;
	o = json_object();
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = FIELD_PTR(m, f);
		json_t *j = NULL;
		size_t mark = json_path_push(&c->path, f->name);

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
			const char *arr = *(const char *const *)p;
			if (!n)
				goto next;
			if (is_map_entry(f)) {
				j = json_object();
				for (size_t k = 0; k < n && j; k++) {
					const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
					const ProtobufCFieldDescriptor *kf = &e->descriptor->fields[0];
					const ProtobufCFieldDescriptor *vf = &e->descriptor->fields[1];
					json_t *kj = value_to_json(c, kf, FIELD_PTR(e, kf));
					char kb[64];
					const char *key = kb;
					if (json_is_string(kj))
						key = json_string_value(kj);
					else
						snprintf(kb, sizeof(kb), "%" JSON_INTEGER_FORMAT,
							 json_integer_value(kj));
					size_t km = json_path_push_key(&c->path, key);
					json_t *vj = value_to_json(c, vf, FIELD_PTR(e, vf));
					json_path_pop(&c->path, km);
					if (!vj) {
						json_decref(kj);
						json_decref(j);
						j = NULL;
						break;
					}
					json_object_set_new(j, key, vj);
					json_decref(kj);
				}
			} else {
				size_t es = elem_size(f);
				j = json_array();
				for (size_t k = 0; k < n; k++) {
					size_t im = json_path_push_idx(&c->path, k);
					json_t *e = value_to_json(c, f, arr + k * es);
					json_path_pop(&c->path, im);
					if (!e) {
						json_decref(j);
						j = NULL;
						break;
					}
					json_array_append_new(j, e);
				}
			}
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t which = *(const uint32_t *)((const char *)m + f->quantifier_offset);
			if (which != f->id)
				goto next;
			j = value_to_json(c, f, p);
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
			   f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
			if (!*(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset))
				goto next;
			j = value_to_json(c, f, p);
		} else {
			if (is_default(f, p))
				goto next;
			j = value_to_json(c, f, p);
		}
		if (!j) {
			json_path_pop(&c->path, mark);
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, f->name, j);
next:
		json_path_pop(&c->path, mark);
	}
	return o;
}

json_t *pb_to_json(struct pb_json_ctx *c, const ProtobufCMessage *msg, const char *root_path)
{
	if (root_path) {
		json_path_set(&c->path, root_path);
		c->err[0] = 0;
	}
	json_t *j = message_to_json(c, msg);
	if (!j && !c->err[0])
		fail(c, "cannot convert %s", msg->descriptor->name);
	return j;
}

json_t *pb_any_to_json(struct pb_json_ctx *c, const char *url, const uint8_t *data, size_t len,
		       const char *root_path)
{
	const ProtobufCMessageDescriptor *d;
	ProtobufCMessage *m;
	json_t *j, *o;
	bool wkt;

	if (root_path) {
		json_path_set(&c->path, root_path);
		c->err[0] = 0;
	}
	if (strncmp(url, TYPE_PREFIX, strlen(TYPE_PREFIX)) && !strchr(url, '/')) {
		fail(c, "Any type URL '%s' has no '/'", url);
		return NULL;
	}
	json_t *type = json_string(url);
	if (!type) {
		fail(c, "Any type URL is not valid UTF-8");
		return NULL;
	}
	json_decref(type);
	if (!(d = pb_find_descriptor(url))) {
		fail(c, "unknown or unsupported type '%s'", url);
		return NULL;
	}
	if (!(m = protobuf_c_message_unpack(d, NULL, len, data))) {
		fail(c, "malformed %s payload", d->name);
		return NULL;
	}
	json_t *special = wkt_json(c, m, &wkt);
	if (wkt) {
		if (!special) {
			protobuf_c_message_free_unpacked(m, NULL);
			return NULL;
		}
		o = json_object();
		json_object_set_new(o, "@type", json_string(url));
		json_object_set_new(o, "value", special);
		protobuf_c_message_free_unpacked(m, NULL);
		return o;
	}
	j = message_to_json(c, m);
	protobuf_c_message_free_unpacked(m, NULL);
	if (!j)
		return NULL;
	/* "@type" first, then the message's fields. */
	o = json_object();
	json_object_set_new(o, "@type", json_string(url));
	json_object_update(o, j);
	json_decref(j);
	return o;
}

/* ---- proto3 JSON (REST) -> the snake_case form --------------------------------------- */

/* Does key k spell field name n in lowerCamelCase ("route_config_name" ->
 * "routeConfigName")? */
static bool camel_matches(const char *n, const char *k)
{
	bool up = false;
	for (; *n; n++) {
		if (*n == '_') {
			up = true;
			continue;
		}
		char want = up && *n >= 'a' && *n <= 'z' ? (char)(*n - 'a' + 'A') : *n;
		up = false;
		if (*k++ != want)
			return false;
	}
	return !*k;
}

static const ProtobufCFieldDescriptor *field_by_json_name(const ProtobufCMessageDescriptor *d,
							  const char *k)
{
	const ProtobufCFieldDescriptor *f = field_by_name(d, k);
	if (f)
		return f;
	for (unsigned i = 0; i < d->n_fields; i++)
		if (camel_matches(d->fields[i].name, k))
			return &d->fields[i];
	return NULL;
}

static void snake_message(json_t *j, const ProtobufCMessageDescriptor *d, int depth);

static void snake_field(json_t *v, const ProtobufCFieldDescriptor *f, int depth)
{
	if (f->type != PROTOBUF_C_TYPE_MESSAGE)
		return;
	if (is_map_entry(f)) {
		const ProtobufCMessageDescriptor *e = f->descriptor;
		const ProtobufCFieldDescriptor *vf = !strcmp(e->fields[1].name, "value") ? &e->fields[1]
											  : &e->fields[0];
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x)
			snake_field(x, vf, depth);
		return;
	}
	if (json_is_array(v)) {
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x)
			snake_message(x, f->descriptor, depth + 1);
		return;
	}
	snake_message(v, f->descriptor, depth + 1);
}

static void snake_message(json_t *j, const ProtobufCMessageDescriptor *d, int depth)
{
	if (!json_is_object(j) || !d || depth > 100)
		return;
	if (!strncmp(d->name, "google.protobuf.", 16)) {
		/* an Any's payload is a message of its @type (WKT payloads are
		 * {"@type", "value"}: left alone); other WKTs have no field keys */
		const ProtobufCMessageDescriptor *inner;
		if (!strcmp(d->name, "google.protobuf.Any") &&
		    (inner = pb_find_descriptor(json_string_value(json_object_get(j, "@type")))) &&
		    strncmp(inner->name, "google.protobuf.", 16))
			snake_message(j, inner, depth + 1);
		return;
	}
	const char *k;
	json_t *v, *tmp, *renames = json_object();
	json_object_foreach_safe(j, tmp, k, v) {
		if (k[0] == '@')
			continue;
		const ProtobufCFieldDescriptor *f = field_by_json_name(d, k);
		if (!f)
			continue;   /* unknown: the compiler names it */
		snake_field(v, f, depth);
		if (strcmp(f->name, k) && !json_object_get(j, f->name)) {
			json_object_set(renames, f->name, v);
			json_object_del(j, k);
		}
	}
	json_object_update(j, renames);
	json_decref(renames);
}

void pb_json_snake_keys(json_t *j, const char *type_url)
{
	snake_message(j, pb_find_descriptor(type_url), 0);
}
