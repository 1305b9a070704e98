/* yaml_emit.c - jansson to YAML (yaml_emit.h). */
#include "yaml_emit.h"
#include "proxy/common.h"

#include <ctype.h>
#include <math.h>
#include <strings.h>
#include <yaml.h>

struct outbuf {
	char *p;
	size_t len, cap;
};

static int write_cb(void *data, unsigned char *buf, size_t size)
{
	struct outbuf *o = data;
	if (o->len + size + 1 > o->cap) {
		o->cap = (o->len + size + 1) * 2;
		o->p = xrealloc(o->p, o->cap);
	}
	memcpy(o->p + o->len, buf, size);
	o->len += size;
	o->p[o->len] = '\0';
	return 1;
}

/* Would a YAML 1.1 or 1.2 core-schema reader resolve this plain scalar to
 * something other than a string? (Conservative: anything number-like.) */
static bool needs_quotes(const char *s)
{
	static const char *const words[] = {"y", "n", "yes", "no", "on", "off", "true", "false",
					    "null", "~", ".inf", "-.inf", "+.inf", ".nan", "<<", "="};
	if (!*s)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(words); i++)
		if (!strcasecmp(s, words[i]))
			return true;
	if (isdigit((unsigned char)s[0]) || ((s[0] == '-' || s[0] == '+' || s[0] == '.') &&
					     (isdigit((unsigned char)s[1]) || s[1] == '.'))) {
		for (const char *p = s; *p; p++)
			if (!isxdigit((unsigned char)*p) && !strchr("xXoObB.+-_:", *p))
				return false;
		return true;
	}
	return false;
}

static int scalar(yaml_emitter_t *em, const char *s, size_t len, bool is_string)
{
	yaml_event_t ev;
	yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;

	if (is_string) {
		if (memchr(s, '\n', len))
			style = YAML_LITERAL_SCALAR_STYLE;
		else if (needs_quotes(s) || strlen(s) != len)
			style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
	}
	/* plain_implicit only for plain strings and non-strings: libyaml then
	 * falls back to quotes when plain style cannot carry the text */
	if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, 1, 1, style))
		return -1;
	return yaml_emitter_emit(em, &ev) ? 0 : -1;
}

static void format_real(double d, char *buf, size_t len)
{
	if (isnan(d)) {
		snprintf(buf, len, ".nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, len, d < 0 ? "-.inf" : ".inf");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	if (!strpbrk(buf, ".eEn"))
		snprintf(buf + strlen(buf), len - strlen(buf), ".0");
}

static int node(yaml_emitter_t *em, const json_t *v, int depth)
{
	yaml_event_t ev;
	char buf[64];

	if (depth > 512)
		return -1;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *val;
		yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
		if (!yaml_emitter_emit(em, &ev))
			return -1;
		json_object_foreach((json_t *)v, key, val)
		{
			if (scalar(em, key, strlen(key), true) || node(em, val, depth + 1))
				return -1;
		}
		yaml_mapping_end_event_initialize(&ev);
		return yaml_emitter_emit(em, &ev) ? 0 : -1;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *val;
		yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
		if (!yaml_emitter_emit(em, &ev))
			return -1;
		json_array_foreach(v, i, val)
		{
			if (node(em, val, depth + 1))
				return -1;
		}
		yaml_sequence_end_event_initialize(&ev);
		return yaml_emitter_emit(em, &ev) ? 0 : -1;
	}
	case JSON_STRING:
		return scalar(em, json_string_value(v), json_string_length(v), true);
	case JSON_INTEGER:
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return scalar(em, buf, strlen(buf), false);
	case JSON_REAL:
		format_real(json_real_value(v), buf, sizeof(buf));
		return scalar(em, buf, strlen(buf), false);
	case JSON_TRUE:
		return scalar(em, "true", 4, false);
	case JSON_FALSE:
		return scalar(em, "false", 5, false);
	case JSON_NULL:
		return scalar(em, "null", 4, false);
	}
	return -1;
}

char *yaml_emit_docs(const json_t *docs, size_t *len)
{
	yaml_emitter_t em;
	yaml_event_t ev;
	struct outbuf out = {xmalloc(256), 0, 256};
	size_t i;
	json_t *doc;
	bool first = true, ok = true;

	out.p[0] = '\0';
	yaml_emitter_initialize(&em);
	yaml_emitter_set_output(&em, write_cb, &out);
	yaml_emitter_set_unicode(&em, 1);
	yaml_emitter_set_width(&em, -1);
	yaml_emitter_set_indent(&em, 2);
	yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
	ok = yaml_emitter_emit(&em, &ev);
	json_array_foreach(docs, i, doc)
	{
		if (!ok)
			break;
		if (json_is_null(doc))
			continue;
		yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, first);
		ok = yaml_emitter_emit(&em, &ev) && !node(&em, doc, 0);
		if (ok) {
			yaml_document_end_event_initialize(&ev, 1);
			ok = yaml_emitter_emit(&em, &ev);
		}
		first = false;
	}
	if (ok) {
		yaml_stream_end_event_initialize(&ev);
		ok = yaml_emitter_emit(&em, &ev) && yaml_emitter_flush(&em);
	}
	yaml_emitter_delete(&em);
	if (!ok) {
		free(out.p);
		return NULL;
	}
	if (len)
		*len = out.len;
	return out.p;
}
