/* config_dump.c - resource, mask and name_regex for /config_dump.
 *
 * The dumps are JSON (proto3 JSON of envoy.admin.v3.*ConfigDump), so the
 * field checks protobuf makes against descriptors are made here against a
 * small table of the admin messages Remora emits.  The resources inside the
 * Any fields (Cluster, Listener, ...) are not checked: a mask path into one
 * that names no field selects nothing (Envoy answers 400 for a path that is
 * not in the resource's schema). */
#include "config_dump.h"

#include "../proxy/common.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum cd_kind {
	CD_SCALAR,                  /* string, enum, Timestamp: no sub-paths */
	CD_MSG,                     /* a singular admin message (msg) */
	CD_ANY,                     /* google.protobuf.Any: a resource */
	CD_OPEN,                    /* a config message whose fields are not checked */
	CD_REPEATED,                /* repeated msg */
};

struct cd_msg;

struct cd_field {
	const char *name;
	enum cd_kind kind;
	const struct cd_msg *msg;   /* CD_MSG: its type; CD_REPEATED: the element type */
	const char *name_path;      /* CD_REPEATED: the element's name for name_regex
				       ("cluster.name"), NULL: not filtered */
};

struct cd_msg {
	const char *type;           /* full name, for "@type" */
	const struct cd_field *f;   /* terminated by a NULL name */
};

#define ADMIN "envoy.admin.v3."

static const struct cd_msg ufs = { ADMIN "UpdateFailureState", (const struct cd_field[]){
	{ "failed_configuration", CD_ANY, NULL, NULL }, { "last_update_attempt", CD_SCALAR, NULL, NULL },
	{ "details", CD_SCALAR, NULL, NULL }, { "version_info", CD_SCALAR, NULL, NULL }, { NULL } } };

#define STATIC_RES(T, any) { ADMIN T, (const struct cd_field[]){                          \
	{ any, CD_ANY, NULL, NULL }, { "last_updated", CD_SCALAR, NULL, NULL }, { NULL } } }
#define DYNAMIC_RES(T, any) { ADMIN T, (const struct cd_field[]){                         \
	{ "version_info", CD_SCALAR, NULL, NULL }, { any, CD_ANY, NULL, NULL },              \
	{ "last_updated", CD_SCALAR, NULL, NULL }, { "error_state", CD_MSG, &ufs, NULL },    \
	{ "client_status", CD_SCALAR, NULL, NULL }, { NULL } } }

static const struct cd_msg static_cluster = STATIC_RES("ClustersConfigDump.StaticCluster", "cluster");
static const struct cd_msg dynamic_cluster = DYNAMIC_RES("ClustersConfigDump.DynamicCluster", "cluster");
static const struct cd_msg static_endpoint =
	STATIC_RES("EndpointsConfigDump.StaticEndpointConfig", "endpoint_config");
static const struct cd_msg dynamic_endpoint =
	DYNAMIC_RES("EndpointsConfigDump.DynamicEndpointConfig", "endpoint_config");
static const struct cd_msg static_listener = STATIC_RES("ListenersConfigDump.StaticListener", "listener");
static const struct cd_msg listener_state = { ADMIN "ListenersConfigDump.DynamicListenerState",
	(const struct cd_field[]){ { "version_info", CD_SCALAR, NULL, NULL },
				   { "listener", CD_ANY, NULL, NULL },
				   { "last_updated", CD_SCALAR, NULL, NULL }, { NULL } } };
static const struct cd_msg dynamic_listener = { ADMIN "ListenersConfigDump.DynamicListener",
	(const struct cd_field[]){ { "name", CD_SCALAR, NULL, NULL },
				   { "active_state", CD_MSG, &listener_state, NULL },
				   { "warming_state", CD_MSG, &listener_state, NULL },
				   { "draining_state", CD_MSG, &listener_state, NULL },
				   { "error_state", CD_MSG, &ufs, NULL },
				   { "client_status", CD_SCALAR, NULL, NULL }, { NULL } } };
static const struct cd_msg static_route = STATIC_RES("RoutesConfigDump.StaticRouteConfig", "route_config");
static const struct cd_msg dynamic_route = DYNAMIC_RES("RoutesConfigDump.DynamicRouteConfig", "route_config");
static const struct cd_msg static_secret = { ADMIN "SecretsConfigDump.StaticSecret",
	(const struct cd_field[]){ { "name", CD_SCALAR, NULL, NULL },
				   { "last_updated", CD_SCALAR, NULL, NULL },
				   { "secret", CD_ANY, NULL, NULL }, { NULL } } };
static const struct cd_msg dynamic_secret = { ADMIN "SecretsConfigDump.DynamicSecret",
	(const struct cd_field[]){ { "name", CD_SCALAR, NULL, NULL },
				   { "version_info", CD_SCALAR, NULL, NULL },
				   { "last_updated", CD_SCALAR, NULL, NULL },
				   { "secret", CD_ANY, NULL, NULL },
				   { "error_state", CD_MSG, &ufs, NULL },
				   { "client_status", CD_SCALAR, NULL, NULL }, { NULL } } };

static const struct cd_msg dumps[] = {
	{ ADMIN "BootstrapConfigDump", (const struct cd_field[]){
		{ "bootstrap", CD_OPEN, NULL, NULL }, { "last_updated", CD_SCALAR, NULL, NULL },
		{ NULL } } },
	{ ADMIN "ClustersConfigDump", (const struct cd_field[]){
		{ "version_info", CD_SCALAR, NULL, NULL },
		{ "static_clusters", CD_REPEATED, &static_cluster, "cluster.name" },
		{ "dynamic_active_clusters", CD_REPEATED, &dynamic_cluster, "cluster.name" },
		{ "dynamic_warming_clusters", CD_REPEATED, &dynamic_cluster, "cluster.name" },
		{ NULL } } },
	{ ADMIN "EndpointsConfigDump", (const struct cd_field[]){
		{ "static_endpoint_configs", CD_REPEATED, &static_endpoint,
		  "endpoint_config.cluster_name" },
		{ "dynamic_endpoint_configs", CD_REPEATED, &dynamic_endpoint,
		  "endpoint_config.cluster_name" },
		{ NULL } } },
	{ ADMIN "ListenersConfigDump", (const struct cd_field[]){
		{ "version_info", CD_SCALAR, NULL, NULL },
		{ "static_listeners", CD_REPEATED, &static_listener, "listener.name" },
		{ "dynamic_listeners", CD_REPEATED, &dynamic_listener, "name" },
		{ NULL } } },
	{ ADMIN "RoutesConfigDump", (const struct cd_field[]){
		{ "static_route_configs", CD_REPEATED, &static_route, "route_config.name" },
		{ "dynamic_route_configs", CD_REPEATED, &dynamic_route, "route_config.name" },
		{ NULL } } },
	{ ADMIN "SecretsConfigDump", (const struct cd_field[]){
		{ "static_secrets", CD_REPEATED, &static_secret, "name" },
		{ "dynamic_active_secrets", CD_REPEATED, &dynamic_secret, "name" },
		{ "dynamic_warming_secrets", CD_REPEATED, &dynamic_secret, "name" },
		{ NULL } } },
};

#define TYPE_PREFIX "type.googleapis.com/"

static const struct cd_msg *dump_schema(const json_t *dump)
{
	const char *t = json_string_value(json_object_get(dump, "@type"));

	if (!t || strncmp(t, TYPE_PREFIX, strlen(TYPE_PREFIX)))
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(dumps); i++)
		if (!strcmp(t + strlen(TYPE_PREFIX), dumps[i].type))
			return &dumps[i];
	return NULL;
}

static const struct cd_field *find_field(const struct cd_msg *m, const char *name, size_t len)
{
	for (const struct cd_field *f = m->f; f->name; f++)
		if (strlen(f->name) == len && !strncmp(f->name, name, len))
			return f;
	return NULL;
}

/* ---- field masks ---- */

struct mask {
	char **p;                   /* owned [n]: the paths */
	size_t n;
};

static void mask_free(struct mask *m)
{
	for (size_t i = 0; i < m->n; i++)
		xfree(m->p[i]);
	xfree(m->p);
	m->p = NULL;
	m->n = 0;
}

static void mask_add(struct mask *m, const char *s, size_t len)
{
	m->p = xrealloc(m->p, (m->n + 1) * sizeof(*m->p));
	m->p[m->n++] = xstrndup(s, len);
}

/* FieldMask string form: paths separated by ','; empty ones dropped. */
static void mask_parse(struct mask *m, const char *s)
{
	while (s && *s) {
		size_t len = strcspn(s, ",");

		if (len)
			mask_add(m, s, len);
		s += len;
		if (*s == ',')
			s++;
	}
}

/* Does path name fields of m (protobuf's FieldMaskUtil::GetFieldDescriptors:
 * only singular messages may be walked into)? */
static bool path_valid(const struct cd_msg *m, const char *path)
{
	while (*path) {
		size_t len = strcspn(path, ".");
		const struct cd_field *f = find_field(m, path, len);

		if (!f || !len)
			return false;
		path += len;
		if (!*path)
			return true;
		path++;   /* the '.' */
		if (f->kind == CD_OPEN)
			return *path != 0;
		if (f->kind != CD_MSG)
			return false;
		m = f->msg;
	}
	return false;
}

static bool mask_valid(const struct cd_msg *m, const struct mask *k)
{
	for (size_t i = 0; i < k->n; i++)
		if (!path_valid(m, k->p[i]))
			return false;
	return true;
}

/* TrimMessage on proto3 JSON: keep the fields the paths name ("@type"
 * stays); a path naming a field keeps it whole, longer paths trim inside a
 * singular message; arrays (repeated fields) are kept whole. */
static void trim(json_t *obj, char *const *paths, size_t n)
{
	const char *k;
	json_t *v, *tmp;
	char **sub;

	if (!json_is_object(obj) || !n)
		return;
	sub = xcalloc(n, sizeof(*sub));
	json_object_foreach_safe(obj, tmp, k, v) {
		size_t kl = strlen(k), ns = 0;
		bool whole = false;

		if (!strcmp(k, "@type"))
			continue;
		for (size_t i = 0; i < n; i++) {
			if (strncmp(paths[i], k, kl))
				continue;
			if (!paths[i][kl])
				whole = true;
			else if (paths[i][kl] == '.')
				sub[ns++] = paths[i] + kl + 1;
		}
		if (!whole && !ns)
			json_object_del(obj, k);
		else if (!whole && json_is_object(v))
			trim(v, sub, ns);
	}
	xfree(sub);
}

/* Envoy's trimResourceMessage: the paths into the element's Any field trim
 * the resource inside it (not checked), the others the element (checked). */
static bool trim_resource(json_t *el, const struct cd_msg *m, const struct mask *k)
{
	struct mask outer = { 0 }, inner = { 0 };
	const char *any = NULL;
	bool ok;

	for (size_t i = 0; i < k->n; i++) {
		size_t len = strcspn(k->p[i], ".");
		const struct cd_field *f = find_field(m, k->p[i], len);

		if (f && f->kind == CD_ANY) {
			any = f->name;
			mask_add(&outer, k->p[i], len);
			if (k->p[i][len])
				mask_add(&inner, k->p[i] + len + 1, strlen(k->p[i] + len + 1));
		} else {
			mask_add(&outer, k->p[i], strlen(k->p[i]));
		}
	}
	ok = mask_valid(m, &outer);
	if (ok && any && inner.n)
		trim(json_object_get(el, any), inner.p, inner.n);
	if (ok)
		trim(el, outer.p, outer.n);
	mask_free(&outer);
	mask_free(&inner);
	return ok;
}

/* protobuf's FieldMask DebugString, as Envoy's error prints it. */
static char *mask_debug(const struct mask *k)
{
	char *s = xstrdup("");

	for (size_t i = 0; i < k->n; i++) {
		char *n = xasprintf("%spaths: \"%s\"\n", s, k->p[i]);

		xfree(s);
		s = n;
	}
	return s;
}

/* ---- name_regex ---- */

static const char *name_at(const json_t *el, const char *path)
{
	char buf[64];

	while (el && *path) {
		size_t len = strcspn(path, ".");

		snprintf(buf, sizeof(buf), "%.*s", (int)len, path);
		el = json_object_get(el, buf);
		path += len + (path[len] == '.');
	}
	return json_string_value(el) ? json_string_value(el) : "";
}

/* Drop the elements of every named repeated field whose name does not fully
 * match re. */
static void filter_names(json_t *configs, pcre2_code *re)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	size_t i;
	json_t *dump;

	if (!md)
		die("out of memory (pcre2 match data)");
	json_array_foreach(configs, i, dump) {
		const struct cd_msg *m = dump_schema(dump);

		for (const struct cd_field *f = m ? m->f : NULL; f && f->name; f++) {
			json_t *arr = json_object_get(dump, f->name), *kept;
			size_t j;
			json_t *el;

			if (f->kind != CD_REPEATED || !f->name_path || !json_is_array(arr))
				continue;
			kept = json_array();
			json_array_foreach(arr, j, el) {
				const char *n = name_at(el, f->name_path);

				if (pcre2_match(re, (PCRE2_SPTR)n, strlen(n), 0, 0, md, NULL) >= 0)
					json_array_append(kept, el);
			}
			json_object_set_new(dump, f->name, kept);
		}
	}
	pcre2_match_data_free(md);
}

/* ---- the query ---- */

static int resource_query(json_t *configs, const char *resource, const struct mask *k,
			  json_t **out, char **msg)
{
	size_t i;
	json_t *dump;

	json_array_foreach(configs, i, dump) {
		const struct cd_msg *m = dump_schema(dump);
		const struct cd_field *f = m ? find_field(m, resource, strlen(resource)) : NULL;
		json_t *res, *el;
		size_t j;

		if (!f)
			continue;
		if (f->kind != CD_REPEATED) {
			*msg = xasprintf("%s is not a repeated field. Use ?mask=%s to get only this field",
					 f->name, f->name);
			return 400;
		}
		res = json_array();
		json_array_foreach(json_object_get(dump, f->name), j, el) {
			json_t *c = json_deep_copy(el);

			if (k->n && !trim_resource(c, f->msg, k)) {
				char *d = mask_debug(k);

				*msg = xasprintf("FieldMask %s could not be successfully used.", d);
				xfree(d);
				json_decref(c);
				json_decref(res);
				return 400;
			}
			json_object_set_new(c, "@type", json_sprintf(TYPE_PREFIX "%s", f->msg->type));
			json_array_append_new(res, c);
		}
		*out = json_pack("{s:o}", "configs", res);
		return 200;
	}
	*msg = xasprintf("%s not found in config dump", resource);
	return 404;
}

int config_dump_query(json_t *configs, const struct config_dump_query *q, json_t **out,
		      char **msg)
{
	struct mask k = { 0 };
	int rc = 200;

	*out = NULL;
	*msg = NULL;
	if (q->name_regex && *q->name_regex) {
		int errcode;
		PCRE2_SIZE erroff;
		pcre2_code *re = pcre2_compile((PCRE2_SPTR)q->name_regex, PCRE2_ZERO_TERMINATED,
					       PCRE2_ANCHORED | PCRE2_ENDANCHORED, &errcode, &erroff,
					       NULL);
		if (!re) {
			PCRE2_UCHAR e[256];

			pcre2_get_error_message(errcode, e, sizeof(e));
			*msg = xasprintf("INVALID_ARGUMENT: Error while parsing name_regex from %s: %s "
					 "at offset %zu", q->name_regex, (const char *)e,
					 (size_t)erroff);
			return 400;
		}
		filter_names(configs, re);
		pcre2_code_free(re);
	}
	mask_parse(&k, q->mask);
	if (q->resource) {
		rc = resource_query(configs, q->resource, &k, out, msg);
		mask_free(&k);
		return rc;
	}
	if (k.n) {
		json_t *kept = json_array(), *dump;
		size_t i;

		json_array_foreach(configs, i, dump) {
			const struct cd_msg *m = dump_schema(dump);

			if (!m || !mask_valid(m, &k))
				continue;   /* Envoy: a dump the mask does not fit is left out */
			trim(dump, k.p, k.n);
			json_array_append(kept, dump);
		}
		if (!json_array_size(kept)) {
			*msg = xasprintf("FieldMask %s could not be successfully applied to any configs.",
					 q->mask);
			json_decref(kept);
			mask_free(&k);
			return 400;
		}
		configs = kept;
	} else {
		json_incref(configs);
	}
	*out = json_pack("{s:o}", "configs", configs);
	mask_free(&k);
	return rc;
}

void config_dump_redact(json_t *j)
{
	const char *k;
	json_t *v;

	if (json_is_array(j)) {
		size_t i;

		json_array_foreach(j, i, v)
			config_dump_redact(v);
		return;
	}
	json_object_foreach(j, k, v) {
		if (!strcmp(k, "private_key") || !strcmp(k, "password"))
			json_object_set_new(j, k, json_pack("{s:s}", "inline_string", "[redacted]"));
		else
			config_dump_redact(v);
	}
}
