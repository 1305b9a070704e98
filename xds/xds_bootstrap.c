/* xds_bootstrap.c - dynamic_resources and ConfigSources: ADS over gRPC (SotW
 * or delta), per-type gRPC streams, REST polling, mixed freely; the registry
 * of sources the xDS client opens transports for. */
#include "xds_bootstrap.h"

#include <ctype.h>

#include "../proxy/common.h"
#include "../proxy/config/cfg.h"
#include "../proxy/server.h"
#include "../proxy/snapshot.h"
#include "../proxy/upstream/cluster.h"

static const char *const versions[] = { "AUTO", "V2", "V3" };
static const char *const api_types[] = { "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "REST", "GRPC",
					 "DELTA_GRPC", "AGGREGATED_GRPC", "AGGREGATED_DELTA_GRPC" };
enum { AT_REST = 1, AT_GRPC, AT_DELTA, AT_AGG, AT_AGG_DELTA };

/* ---- the source registry ------------------------------------------------------ */

static json_t *registry;        /* key -> pointer (integer) to a struct xds_source */
static json_t *sds_sources;     /* secret name -> key */
static json_t *static_ok;       /* static non-EDS cluster names (after the bootstrap) */
/* per-resource sources met while compiling the bootstrap, checked at its
 * end: [{"path": "<where>", "cluster": name or null (ads), "agg": bool}] */
static json_t *pending;

static const char *intern(const struct xds_source *tmpl)
{
	if (!registry)
		registry = json_object();
	json_t *v = json_object_get(registry, tmpl->key);
	if (v)
		return ((struct xds_source *)(uintptr_t)json_integer_value(v))->key;
	struct xds_source *s = xcalloc(1, sizeof(*s));
	*s = *tmpl;
	s->key = xstrdup(tmpl->key);
	for (unsigned i = 0; i < s->nsvc; i++) {
		s->svc[i].cluster = xstrdup(tmpl->svc[i].cluster);
		s->svc[i].authority = xstrdup(tmpl->svc[i].authority);
		s->svc[i].md = json_incref(tmpl->svc[i].md);
	}
	if (s->nsvc) {   /* gRPC: the primary's, shared */
		s->cluster = s->svc[0].cluster;
		s->authority = s->svc[0].authority;
	} else {
		s->cluster = tmpl->cluster ? xstrdup(tmpl->cluster) : NULL;
		s->authority = tmpl->authority ? xstrdup(tmpl->authority) : NULL;
	}
	json_object_set_new(registry, s->key, json_integer((json_int_t)(uintptr_t)s));
	return s->key;
}

const struct xds_source *xds_source_get(const char *key)
{
	json_t *v = key ? json_object_get(registry, key) : NULL;
	const struct xds_bootstrap *x = &g_server.xds;
	if (!v && key && !strcmp(key, XDS_ADS_KEY) && x->cluster) {
		struct xds_source ads = { .key = XDS_ADS_KEY, .kind = XDS_ADS,
					  .delta = x->delta, .cluster = x->cluster,
					  .authority = x->authority,
					  .node_first_only = x->node_first_only, .nsvc = 1 };
		ads.svc[0] = (struct xds_grpc_svc){ x->cluster, x->authority, x->md };
		if (x->cluster2) {
			ads.svc[1] = (struct xds_grpc_svc){ x->cluster2, x->authority2, x->md2 };
			ads.nsvc = 2;
		}
		intern(&ads);
		v = json_object_get(registry, key);
	}
	return v ? (const struct xds_source *)(uintptr_t)json_integer_value(v) : NULL;
}

void xds_sources_free(void)
{
	const char *k;
	json_t *v;
	json_object_foreach(registry, k, v) {
		struct xds_source *s = (struct xds_source *)(uintptr_t)json_integer_value(v);
		free((char *)s->key);
		for (unsigned i = 0; i < s->nsvc; i++) {
			free((char *)s->svc[i].cluster);
			free((char *)s->svc[i].authority);
			json_decref(s->svc[i].md);
		}
		if (!s->nsvc) {
			free((char *)s->cluster);
			free((char *)s->authority);
		}
		free(s);
	}
	json_decref(registry);
	json_decref(sds_sources);
	json_decref(static_ok);
	json_decref(pending);
	registry = sds_sources = static_ok = pending = NULL;
}

/* The key of a parsed api_config_source (every option that tells two
 * transports apart). */
static const char *api_key(const struct xds_api_source *api)
{
	char buf[4096];
	struct xds_source s = { .key = buf, .cluster = api->cluster, .delta = api->delta,
				.node_first_only = api->node_first_only,
				.refresh_ms = api->refresh_ms, .timeout_ms = api->timeout_ms };
	if (api->rest) {
		s.kind = XDS_REST;
		s.authority = api->cluster;
		snprintf(buf, sizeof(buf), "rest|%s|%llu|%llu", api->cluster,
			 (unsigned long long)api->refresh_ms, (unsigned long long)api->timeout_ms);
	} else {
		s.kind = XDS_GRPC;
		s.authority = api->authority && *api->authority ? api->authority : api->cluster;
		s.nsvc = 1;
		s.svc[0] = (struct xds_grpc_svc){ api->cluster, s.authority, api->md };
		if (api->cluster2) {
			s.svc[1] = (struct xds_grpc_svc){ api->cluster2, api->authority2 &&
							  *api->authority2 ? api->authority2
							  : api->cluster2, api->md2 };
			s.nsvc = 2;
		}
		/* every option that tells two transports apart: the metadata and
		 * the failover server too */
		char *md = api->md ? json_dumps(api->md, JSON_COMPACT) : NULL;
		char *md2 = api->md2 ? json_dumps(api->md2, JSON_COMPACT) : NULL;
		snprintf(buf, sizeof(buf), "%s|%s|%s|%d|%s|%s|%s|%s", api->delta ? "delta_grpc" : "grpc",
			 api->cluster, s.authority, api->node_first_only, md ? md : "",
			 s.nsvc > 1 ? s.svc[1].cluster : "", s.nsvc > 1 ? s.svc[1].authority : "",
			 md2 ? md2 : "");
		free(md);
		free(md2);
	}
	return intern(&s);
}

void xds_sds_source_note(const char *secret, const json_t *sds_config)
{
	const char *key = xds_source_key(sds_config);
	if (!key)
		return;
	if (!sds_sources)
		sds_sources = json_object();
	json_object_set_new(sds_sources, secret, json_string(key));
}

const char *xds_sds_source(const char *secret)
{
	const char *k = json_string_value(json_object_get(sds_sources, secret));
	return k ? k : XDS_ADS_KEY;
}

/* ---- parsing ------------------------------------------------------------------ */

/* initial_metadata: HeaderValue {key, value} pairs sent as request headers
 * of the xDS stream (Envoy lowercases the keys).  *out: [[name, value], ...]
 * (new reference; NULL when empty). */
static int parse_metadata(struct cfg_ctx *c, const json_t *g, json_t **out)
{
	static const char *const hf[] = { "key", "value", "raw_value", NULL };
	static const char *const reserved[] = { "content-type", "te", "user-agent", "host",
						"connection", "keep-alive", "proxy-connection",
						"transfer-encoding", "upgrade", NULL };
	const json_t *md = cfg_enter(c, g, "initial_metadata"), *h;
	size_t i;
	int rc = RM_OK;

	*out = NULL;
	if (!md)
		return RM_OK;
	if (cfg_expect_array(c, md)) {
		cfg_leave(c);
		return RM_ERROR;
	}
	if (json_array_size(md) > XDS_MAX_METADATA) {
		cfg_fail(c, "at most %d entries", XDS_MAX_METADATA);
		cfg_leave(c);
		return RM_ERROR;
	}
	*out = json_array();
	for (i = 0; !rc && i < json_array_size(md); i++) {
		const char *key = NULL, *value = "";
		char name[256];
		size_t n;
		h = cfg_enter_idx(c, md, i);
		rc = cfg_expect_object(c, h) || cfg_check_fields(c, h, hf) ||
		     cfg_reject_fields(c, h, hf + 2, "not supported (use value)") ||
		     cfg_string_req(c, h, "key", &key) || cfg_string(c, h, "value", &value);
		if (!rc) {
			n = strlen(key);
			if (!n || n >= sizeof(name))
				rc = cfg_fail_field(c, h, "key", "must be 1 to %zu characters",
						    sizeof(name) - 1);
			else if (key[0] == ':')
				rc = cfg_fail_field(c, h, "key", "'%s': pseudo-headers cannot be set", key);
		}
		for (size_t k = 0; !rc && k < n; k++) {
			unsigned char ch = (unsigned char)key[k];
			/* RFC 9110 token characters */
			if (!(isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch)))
				rc = cfg_fail_field(c, h, "key", "'%s' is not a valid header name", key);
			name[k] = (char)tolower(ch);
		}
		if (!rc) {
			name[n] = 0;
			for (const char *const *r = reserved; !rc && *r; r++)
				if (!strcmp(name, *r))
					rc = cfg_fail_field(c, h, "key", "'%s' is set by the gRPC transport "
							    "itself", name);
			if (!rc && !strncmp(name, "grpc-", 5))
				rc = cfg_fail_field(c, h, "key", "'%s': grpc- headers are reserved by "
						    "gRPC", name);
			if (!rc && strpbrk(value, "\r\n"))
				rc = cfg_fail_field(c, h, "value", "must not contain CR or LF");
		}
		if (!rc)
			json_array_append_new(*out, json_pack("[s, s]", name, value));
		cfg_leave(c);
	}
	cfg_leave(c);
	if (rc || !json_array_size(*out)) {
		json_decref(*out);
		*out = NULL;
	}
	return rc ? RM_ERROR : RM_OK;
}

/* grpc_services: one, or two (the second is the failover server, as Envoy's
 * xDS failover); each envoy_grpc {cluster_name, authority} with
 * initial_metadata. */
static int parse_grpc_service(struct cfg_ctx *c, const json_t *a, struct xds_api_source *o)
{
	static const char *const gf[] = { "envoy_grpc", "initial_metadata", "google_grpc", "timeout",
					  "retry_policy", NULL };
	static const char *const ef[] = { "cluster_name", "authority", NULL };
	const json_t *gs, *g, *e;
	int rc = RM_OK;

	if (!(gs = cfg_enter_req(c, a, "grpc_services")))
		return RM_ERROR;
	if (cfg_expect_array(c, gs)) {
		cfg_leave(c);
		return RM_ERROR;
	}
	if (!json_array_size(gs) || json_array_size(gs) > XDS_MAX_GRPC_SERVICES) {
		cfg_fail(c, "one or two gRPC services are supported (the second is the failover "
			    "server), got %zu", json_array_size(gs));
		cfg_leave(c);
		return RM_ERROR;
	}
	for (size_t i = 0; !rc && i < json_array_size(gs); i++) {
		const char *cluster = NULL, *authority = NULL;
		json_t *md = NULL;
		rc = RM_ERROR;
		g = cfg_enter_idx(c, gs, i);
		if (cfg_expect_object(c, g) || cfg_check_fields(c, g, gf) ||
		    cfg_reject_fields(c, g, gf + 2, "not supported yet (envoy_grpc only)") ||
		    !(e = cfg_enter_req(c, g, "envoy_grpc"))) {
			cfg_leave(c);
			break;
		}
		if (!cfg_expect_object(c, e) && !cfg_check_fields(c, e, ef) &&
		    !cfg_string_req(c, e, "cluster_name", &cluster) &&
		    !cfg_string(c, e, "authority", &authority))
			rc = RM_OK;
		cfg_leave(c);
		if (!rc)
			rc = parse_metadata(c, g, &md);
		cfg_leave(c);
		if (rc)
			break;
		if (i == 0) {
			o->cluster = cluster;
			o->authority = authority;
			o->md = md;
		} else {
			o->cluster2 = cluster;
			o->authority2 = authority;
			o->md2 = md;
		}
	}
	cfg_leave(c);
	return rc;
}

void xds_api_source_done(struct xds_api_source *api)
{
	json_decref(api->md);
	json_decref(api->md2);
	api->md = api->md2 = NULL;
}

int xds_api_source_parse(struct cfg_ctx *c, const json_t *a, struct xds_api_source *o)
{
	static const char *const f[] = { "api_type", "transport_api_version", "grpc_services",
					 "cluster_names", "refresh_delay", "request_timeout",
					 "set_node_on_first_message_only", "rate_limit_settings",
					 "config_validators", NULL };
	const json_t *cn;
	int type = 0, ver = 2;

	memset(o, 0, sizeof(*o));
	o->refresh_ms = 1000;
	o->timeout_ms = 1000;
	if (cfg_expect_object(c, a) || cfg_check_fields(c, a, f) ||
	    cfg_reject_fields(c, a, f + 7, "not supported yet") ||
	    cfg_enum(c, a, "api_type", api_types, ARRAY_SIZE(api_types), &type) ||
	    cfg_enum(c, a, "transport_api_version", versions, 3, &ver) ||
	    cfg_bool(c, a, "set_node_on_first_message_only", &o->node_first_only) ||
	    cfg_duration_ms(c, a, "refresh_delay", &o->refresh_ms) ||
	    cfg_duration_ms(c, a, "request_timeout", &o->timeout_ms))
		return RM_ERROR;
	if (type == 0)
		return cfg_fail_field(c, a, "api_type", "must be REST, GRPC, DELTA_GRPC, "
				      "AGGREGATED_GRPC or AGGREGATED_DELTA_GRPC");
	if (ver != 2)
		return cfg_fail_field(c, a, "transport_api_version", "must be V3");
	o->rest = type == AT_REST;
	o->delta = type == AT_DELTA || type == AT_AGG_DELTA;
	o->aggregated = type == AT_AGG || type == AT_AGG_DELTA;
	if (!o->rest) {
		if (cfg_get(a, "cluster_names"))
			return cfg_fail_field(c, a, "cluster_names", "only for api_type REST (gRPC "
					      "uses grpc_services)");
		if (cfg_get(a, "refresh_delay") || cfg_get(a, "request_timeout"))
			return cfg_fail_field(c, a, cfg_get(a, "refresh_delay") ? "refresh_delay"
					      : "request_timeout", "only for api_type REST");
		return parse_grpc_service(c, a, o);
	}
	if (cfg_get(a, "grpc_services"))
		return cfg_fail_field(c, a, "grpc_services", "not for api_type REST (uses cluster_names)");
	if (cfg_get(a, "set_node_on_first_message_only"))
		return cfg_fail_field(c, a, "set_node_on_first_message_only", "only for gRPC api types "
				      "(REST sends node on every request)");
	if (!o->refresh_ms)
		return cfg_fail_field(c, a, "refresh_delay", "must be positive");
	if (!o->timeout_ms)
		return cfg_fail_field(c, a, "request_timeout", "must be positive");
	if (!(cn = cfg_enter_req(c, a, "cluster_names")))
		return RM_ERROR;
	int rc = cfg_expect_array(c, cn);
	if (!rc && json_array_size(cn) != 1)
		rc = cfg_fail(c, "exactly one cluster is supported");
	if (!rc && !(o->cluster = json_string_value(json_array_get(cn, 0))))
		rc = cfg_fail(c, "expected a list of cluster names");
	cfg_leave(c);
	return rc;
}

/* The source fields common to every ConfigSource; *has_api: api_config_source
 * (in *api), else ads. */
static int parse_config_source(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			       struct xds_api_source *api, bool *has_api)
{
	static const char *const f[] = { "ads", "initial_fetch_timeout", "resource_api_version",
					 "api_config_source", "path", "path_config_source", "self",
					 "authorities", NULL };
	static const char *const unsupported[] = { "path", "path_config_source", "self",
						   "authorities", NULL };
	static const char *const empty[] = { NULL };
	const json_t *a;
	int ver = 2, rc;
	memset(api, 0, sizeof(*api));
	if (cfg_expect_object(c, s) || cfg_check_fields(c, s, f) ||
	    cfg_duration_ms(c, s, "initial_fetch_timeout", timeout_ms) ||
	    cfg_enum(c, s, "resource_api_version", versions, 3, &ver))
		return RM_ERROR;
	if (ver == 1)
		return cfg_fail_field(c, s, "resource_api_version", "only V3 is supported");
	if (cfg_reject_fields(c, s, unsupported, "not supported yet: only ads or api_config_source "
			      "(files, self and xdstp authorities are not)"))
		return RM_ERROR;
	if (!!cfg_get(s, "ads") == !!cfg_get(s, "api_config_source"))
		return cfg_fail(c, "exactly one of ads, api_config_source is required");
	*has_api = false;
	if ((a = cfg_enter(c, s, "api_config_source"))) {
		rc = xds_api_source_parse(c, a, api);
		cfg_leave(c);
		*has_api = true;
		return rc;
	}
	a = cfg_enter(c, s, "ads");
	rc = cfg_expect_object(c, a) || cfg_check_fields(c, a, empty);
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

const char *xds_source_key(const json_t *cs)
{
	struct xds_api_source api;
	struct cfg_ctx c;
	const json_t *a = cs ? cfg_get(cs, "api_config_source") : NULL;
	if (!a)
		return cs && cfg_get(cs, "ads") ? XDS_ADS_KEY : NULL;
	cfg_init(&c, NULL, NULL);
	const char *key = NULL;
	if (!xds_api_source_parse(&c, a, &api))
		key = api.aggregated ? XDS_ADS_KEY : api_key(&api);
	xds_api_source_done(&api);
	return key;
}

/* What is wrong with a source given the bootstrap x (NULL: fine).  api NULL:
 * ads. */
static const char *source_problem(const struct xds_bootstrap *x, const char *cluster, bool ads,
				  bool aggregated, char *buf, size_t len)
{
	if (ads && !x->cluster)
		return "ads: {} needs dynamic_resources.ads_config";
	if (aggregated && !x->cluster)
		return "an AGGREGATED_* api_type is served on the ADS stream: it needs "
		       "dynamic_resources.ads_config (a stream of its own is api_type GRPC or DELTA_GRPC)";
	if (aggregated && strcmp(cluster, x->cluster)) {
		snprintf(buf, len, "cluster '%s': an AGGREGATED_* api_type is served on the ADS "
			 "stream, whose cluster is '%s' (a stream of its own is api_type GRPC or "
			 "DELTA_GRPC)", cluster, x->cluster);
		return buf;
	}
	if (!ads && !aggregated && static_ok && !json_object_get(static_ok, cluster)) {
		snprintf(buf, len, "unknown cluster '%s' (an xDS server must be a static cluster, "
			 "not of type EDS)", cluster);
		return buf;
	}
	return NULL;
}

int xds_resource_source_parse_shape(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms)
{
	struct xds_api_source api;
	bool has_api;
	*timeout_ms = 15000;
	int rc = parse_config_source(c, s, timeout_ms, &api, &has_api);
	xds_api_source_done(&api);
	return rc ? RM_ERROR : RM_OK;
}

int xds_resource_source_parse(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			      const char **api_cluster)
{
	struct xds_api_source api;
	bool has_api;
	char buf[512];
	const struct xds_bootstrap *x = &g_server.xds;
	*timeout_ms = 15000;
	if (parse_config_source(c, s, timeout_ms, &api, &has_api)) {
		xds_api_source_done(&api);
		return RM_ERROR;
	}
	xds_api_source_done(&api);   /* the strings stay (borrowed from s) */
	if (api_cluster)
		*api_cluster = has_api ? api.cluster : NULL;
	if (has_api && !api.aggregated)
		api_key(&api);   /* registered for the xDS client */
	if (!x->enabled) {
		/* the bootstrap's own resources: dynamic_resources comes later;
		 * remember where this source is, for the message */
		struct cfg_ctx *tmp = xmalloc(sizeof(*tmp));
		*tmp = *c;
		tmp->failed = false;
		tmp->err[0] = 0;
		cfg_fail_field(tmp, s, has_api ? "api_config_source" : "ads", "%s", "");
		size_t n = strlen(tmp->err);
		if (n >= 2 && !strcmp(tmp->err + n - 2, ": "))
			tmp->err[n - 2] = 0;
		if (!pending)
			pending = json_array();
		json_array_append_new(pending, json_pack("{s:s, s:o, s:b}", "path", tmp->err,
							 "cluster", has_api ? json_string(api.cluster)
									    : json_null(),
							 "agg", has_api && api.aggregated));
		if (has_api && !api.aggregated && api.cluster2)   /* the failover server too */
			json_array_append_new(pending, json_pack("{s:s, s:s, s:b}", "path", tmp->err,
								 "cluster", api.cluster2, "agg", 0));
		free(tmp);
		return RM_OK;
	}
	const char *why = source_problem(x, has_api ? api.cluster : NULL, !has_api,
					 has_api && api.aggregated, buf, sizeof(buf));
	if (!why && has_api && !api.aggregated && api.cluster2)
		why = source_problem(x, api.cluster2, false, false, buf, sizeof(buf));
	if (why)
		return cfg_fail_field(c, s, has_api ? "api_config_source" : "ads", "%s", why);
	return RM_OK;
}

static int parse_ads(struct cfg_ctx *c, const json_t *a, struct xds_bootstrap *x)
{
	struct xds_api_source api = { 0 };
	const char *t = json_string_value(cfg_get(a, "api_type"));
	if ((t && !strcmp(t, "REST")) || json_integer_value(cfg_get(a, "api_type")) == AT_REST ||
	    (!xds_api_source_parse(c, a, &api) && api.rest)) {
		xds_api_source_done(&api);
		return cfg_fail_field(c, a, "api_type", "ads_config must be a gRPC api_type (GRPC / "
				      "AGGREGATED_GRPC or DELTA_GRPC / AGGREGATED_DELTA_GRPC); for REST "
				      "polling put api_config_source in cds_config / lds_config");
	}
	if (c->failed) {
		xds_api_source_done(&api);
		return RM_ERROR;
	}
	x->delta = api.delta;
	x->node_first_only = api.node_first_only;
	x->cluster = xstrdup(api.cluster);
	x->authority = xstrdup(api.authority && *api.authority ? api.authority : api.cluster);
	x->md = api.md;   /* the references move */
	if (api.cluster2) {
		x->cluster2 = xstrdup(api.cluster2);
		x->authority2 = xstrdup(api.authority2 && *api.authority2 ? api.authority2
					: api.cluster2);
		x->md2 = api.md2;
	} else {
		json_decref(api.md2);
	}
	return RM_OK;
}

/* cds_config / lds_config: {ads: {}} (needs ads_config), or an
 * api_config_source: REST polling or a per-type gRPC stream of its own. */
static int parse_source(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			struct xds_bootstrap *x, const char **key)
{
	struct xds_api_source api;
	bool has_api;
	char buf[512];
	const char *why;
	if (parse_config_source(c, s, timeout_ms, &api, &has_api)) {
		xds_api_source_done(&api);
		return RM_ERROR;
	}
	why = source_problem(x, has_api ? api.cluster : NULL, !has_api, has_api && api.aggregated,
			     buf, sizeof(buf));
	if (!why && has_api && !api.aggregated && api.cluster2)
		why = source_problem(x, api.cluster2, false, false, buf, sizeof(buf));
	if (why) {
		xds_api_source_done(&api);
		return cfg_fail_field(c, s, has_api ? "api_config_source" : "ads", "%s", why);
	}
	*key = !has_api || api.aggregated ? XDS_ADS_KEY : api_key(&api);
	xds_api_source_done(&api);
	return RM_OK;
}

int xds_bootstrap_parse(struct cfg_ctx *c, const json_t *dr, struct xds_bootstrap *x)
{
	static const char *const f[] = { "ads_config", "cds_config", "lds_config",
					 "cds_resources_locator", "lds_resources_locator", NULL };
	const json_t *v;
	int rc;
	x->cds_timeout_ms = x->lds_timeout_ms = 15000;
	if (cfg_expect_object(c, dr) || cfg_check_fields(c, dr, f))
		return RM_ERROR;
	if (cfg_reject_fields(c, dr, f + 3, "not supported yet (xdstp:// locators)"))
		return RM_ERROR;
	if ((v = cfg_enter(c, dr, "ads_config"))) {
		rc = parse_ads(c, v, x);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	if ((v = cfg_enter(c, dr, "cds_config"))) {
		rc = parse_source(c, v, &x->cds_timeout_ms, x, &x->cds_key);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		x->cds = true;
	}
	if ((v = cfg_enter(c, dr, "lds_config"))) {
		rc = parse_source(c, v, &x->lds_timeout_ms, x, &x->lds_key);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		x->lds = true;
	}
	if (!x->cluster && !x->cds && !x->lds)
		return cfg_fail(c, "missing required field 'ads_config' (or a cds_config / lds_config "
				   "with an api_config_source)");
	x->enabled = true;
	return RM_OK;
}

/* One server cluster named by dynamic_resources: a static, non-EDS cluster. */
static int check_server_cluster(struct cfg_ctx *c, const struct snapshot *s, const char *cluster,
				const char *where)
{
	struct cluster *cl = snapshot_find_cluster(s, cluster);
	if (cl && cl->type != CLUSTER_EDS)
		return RM_OK;
	return cfg_fail(c, "%s: %s cluster '%s' (the xDS server must be a static cluster, not of "
			"type EDS)", where, cl ? "EDS" : "unknown", cluster);
}

int xds_bootstrap_check_sources(const struct xds_bootstrap *x, const struct snapshot *s,
				struct cfg_ctx *c)
{
	int rc = RM_OK;
	size_t i;
	json_t *v;
	char buf[512];
	if (s && x->enabled) {
		json_decref(static_ok);
		static_ok = json_object();
		for (i = 0; i < s->nclusters; i++)
			if (s->clusters[i]->type != CLUSTER_EDS)
				json_object_set_new(static_ok, s->clusters[i]->name, json_true());
		if (x->cluster)
			rc = check_server_cluster(c, s, x->cluster, "dynamic_resources.ads_config."
						  "grpc_services[0].envoy_grpc.cluster_name");
		if (!rc && x->cluster2)
			rc = check_server_cluster(c, s, x->cluster2, "dynamic_resources.ads_config."
						  "grpc_services[1].envoy_grpc.cluster_name");
		const char *keys[2] = { x->cds ? x->cds_key : NULL, x->lds ? x->lds_key : NULL };
		for (int k = 0; !rc && k < 2; k++) {
			const struct xds_source *src = keys[k] ? xds_source_get(keys[k]) : NULL;
			for (unsigned j = 0; src && src->kind != XDS_ADS && !rc &&
					    j < (src->nsvc ? src->nsvc : 1); j++)
				rc = check_server_cluster(c, s, src->nsvc ? src->svc[j].cluster : src->cluster,
							  k ? "dynamic_resources.lds_config."
							  "api_config_source" : "dynamic_resources."
							  "cds_config.api_config_source");
		}
		json_array_foreach(pending, i, v) {
			if (rc)
				break;
			const char *why = source_problem(x, json_string_value(json_object_get(v, "cluster")),
							 json_is_null(json_object_get(v, "cluster")),
							 json_is_true(json_object_get(v, "agg")), buf,
							 sizeof(buf));
			if (why) {
				snprintf(c->err, sizeof(c->err), "%s: %s",
					 json_string_value(json_object_get(v, "path")), why);
				c->failed = true;
				rc = RM_ERROR;
			}
		}
	}
	json_decref(pending);
	pending = NULL;
	return rc;
}

void xds_bootstrap_free(struct xds_bootstrap *x)
{
	free(x->cluster);
	free(x->authority);
	free(x->cluster2);
	free(x->authority2);
	json_decref(x->md);
	json_decref(x->md2);
	x->cluster = x->authority = x->cluster2 = x->authority2 = NULL;
	x->md = x->md2 = NULL;
	x->enabled = x->cds = x->lds = false;
	x->cds_key = x->lds_key = NULL;
}
