/* xds_response_fuzz.c - libFuzzer target for xDS response handling: the
 * input is one response the control plane could send, each resource goes
 * through the decode step of the ADS client (xds/ads_decode.c: Resource
 * unwrap, type URL check, pb_json) and then through the same per-type
 * compile/validation function xds/ads.c applies it with:
 *   Cluster                cluster_parse (then released)
 *                          (STATIC and EDS ones started, as ads.c does:
 *                          host set and load balancer built)
 *   ClusterLoadAssignment  cluster_eds_update on started harness EDS
 *                          clusters, one per LB policy (round robin, least
 *                          request, ring hash, Maglev, random), and the
 *                          removal (an empty assignment)
 *   Listener               listener_parse over a view of harness clusters,
 *                          RDS names resolved to empty route tables (what
 *                          ads.c compiles after the RDS fetch timeout)
 *   RouteConfiguration     listener_parse of a harness HCM listener whose
 *                          rds lookup returns the resource (how ads.c
 *                          validates a route table before it ACKs it)
 *   Secret                 tls_sds_apply, as the harness cluster's SDS
 *                          certificate and as its SDS validation context
 *                          (a TLS context uses both: the secrets are in use)
 *
 * First input byte b, the rest is the message:
 *   b % 3 == 0  envoy.service.discovery.v3.DiscoveryResponse (SotW)
 *   b % 3 == 1  envoy.service.discovery.v3.DeltaDiscoveryResponse
 *   b % 3 == 2  the REST form: the same response as proto3 JSON (resources
 *               as {"@type": url, ...}, Resource wrappers as
 *               {"@type": ".../Resource", "resource": {...}})
 *   (b / 3) & 1 allow_unknown_fields (PB_JSON_ALLOW_UNKNOWN, CFG_F_ALLOW_UNKNOWN)
 *
 * No network, no event loop: the server is g_server with a stats store and
 * xDS "enabled" (so sds_config/rds {ads: {}} are accepted as under ADS) and
 * no workers; clusters that would resolve DNS or health check are not started
 * and no timer ever fires (the event base never runs).  Invariants: a decode failure
 * names its resource ("resources[N]"); a failed compile says why; whatever
 * compiled is released without leaks (libFuzzer's leak check).  Secrets
 * accepted stay in the process-wide store between inputs (as in the proxy).
 * Seeds: tests/fuzz/corpus/xds_response (tests/fuzz/gen_xds_response_seeds.js).
 * Run: make fuzz-bins; bash tests/fuzz/cpu-budget.sh 600 xds_response */
#include "xds/ads_decode.h"
#include "xds/pb_fast.h"
#include "proxy/server.h"
#include "proxy/log.h"
#include "proxy/upstream/cluster.h"
#include "tls/tls.h"
#include "stats/stats.h"
#include "envoy/service/discovery/v3/subset.pb-c.h"
#include <event2/event.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { T_CDS, T_EDS, T_LDS, T_RDS, T_SDS, T_N };
static const char *const type_urls[T_N] = {
	"type.googleapis.com/envoy.config.cluster.v3.Cluster",
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	"type.googleapis.com/envoy.config.listener.v3.Listener",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
};

#define ADS_SRC "\"config_source\":{\"ads\":{},\"resource_api_version\":\"V3\"}"
#define EDS_CL(name, lb) \
	" {\"name\":\"" name "\",\"type\":\"EDS\",\"connect_timeout\":\"1s\",\"lb_policy\":\"" lb "\"," \
	"  \"eds_cluster_config\":{\"eds_config\":{\"ads\":{}},\"service_name\":\"svc\"}},"
static const char harness_clusters[] =
	"[{\"name\":\"backend\",\"type\":\"STATIC\",\"connect_timeout\":\"1s\","
	"  \"load_assignment\":{\"cluster_name\":\"backend\",\"endpoints\":[{\"lb_endpoints\":["
	"   {\"endpoint\":{\"address\":{\"socket_address\":{\"address\":\"127.0.0.1\","
	"    \"port_value\":9}}}}]}]}},"
	" {\"name\":\"fuzz-tls\",\"type\":\"STATIC\",\"connect_timeout\":\"1s\","
	"  \"transport_socket\":{\"name\":\"envoy.transport_sockets.tls\",\"typed_config\":{"
	"   \"@type\":\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\","
	"   \"common_tls_context\":{"
	"    \"tls_certificate_sds_secret_configs\":[{\"name\":\"fuzz-cert\",\"sds_config\":{\"ads\":{}}}],"
	"    \"validation_context_sds_secret_config\":{\"name\":\"fuzz-ca\",\"sds_config\":{\"ads\":{}}}}}}},"
	EDS_CL("svc-eds", "ROUND_ROBIN") EDS_CL("eds-lr", "LEAST_REQUEST")
	EDS_CL("eds-ring", "RING_HASH") EDS_CL("eds-maglev", "MAGLEV")
	" {\"name\":\"eds-random\",\"type\":\"EDS\",\"connect_timeout\":\"1s\",\"lb_policy\":\"RANDOM\","
	"  \"eds_cluster_config\":{\"eds_config\":{\"ads\":{}},\"service_name\":\"svc\"}}]";
#define NCL 7          /* harness clusters */
#define FIRST_EDS 2    /* cl[FIRST_EDS..]: the started EDS clusters every assignment goes to */
static const char harness_rds_listener[] =
	"{\"name\":\"fuzz-rds\",\"address\":{\"socket_address\":{\"address\":\"127.0.0.1\","
	" \"port_value\":10000}},\"filter_chains\":[{\"filters\":[{"
	" \"name\":\"envoy.filters.network.http_connection_manager\",\"typed_config\":{"
	"  \"@type\":\"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\","
	"  \"stat_prefix\":\"fuzz\",\"rds\":{\"route_config_name\":\"fuzz-routes\"," ADS_SRC "},"
	"  \"http_filters\":[{\"name\":\"envoy.filters.http.router\",\"typed_config\":{"
	"   \"@type\":\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}]}]}";

static struct {
	struct cluster *cl[NCL];      /* backend, fuzz-tls (never started), then EDS
				       * clusters of each LB policy, started */
	struct event_base *base;      /* for cluster_start's timers; never run */
	struct snapshot *view;        /* the clusters a listener may reference */
	json_t *rds_listener;
	bool lax;
	bool verbose;                 /* XDS_FUZZ_VERBOSE set: say what each resource did */
} h;

/* With XDS_FUZZ_VERBOSE (seed maintenance: are the seeds accepted?). */
static void say(const char *type, const char *name, const char *err)
{
	if (h.verbose)
		fprintf(stderr, "%s '%s': %s\n", type, name ? name : "", err && *err ? err : "ok");
}

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		__builtin_trap();
	}
}

static void setup(void)
{
	json_error_t je;
	struct cfg_ctx c;
	log_current_level = LOG_OFF;
	h.verbose = getenv("XDS_FUZZ_VERBOSE") != NULL;
	g_server.nworkers = 2;
	g_server.stats = stats_store_new(3);
	g_server.xds.enabled = true;
	g_server.xds.cluster = xstrdup("xds_cluster");
	json_t *cls = json_loads(harness_clusters, 0, &je);
	h.rds_listener = json_loads(harness_rds_listener, 0, &je);
	check(cls && h.rds_listener, "harness JSON parses");
	struct build_ctx b = { .srv = &g_server, .stats = g_server.stats, .nworkers = 2 };
	h.base = event_base_new();
	for (size_t i = 0; i < NCL; i++) {
		cfg_init(&c, NULL, NULL);
		h.cl[i] = cluster_parse(&c, json_array_get(cls, i), &b);
		if (!h.cl[i])
			fprintf(stderr, "harness cluster %zu: %s\n", i, c.err);
		check(h.cl[i] != NULL, "harness clusters compile");
	}
	json_decref(cls);
	for (size_t i = FIRST_EDS; i < NCL; i++)
		cluster_start(h.cl[i], h.base, NULL, NULL);
	h.view = snapshot_compose(h.cl, NCL, NULL, 0, NULL);
}

static void cfg_setup(struct cfg_ctx *c)
{
	cfg_init(c, NULL, NULL);
	if (h.lax)
		c->flags |= CFG_F_ALLOW_UNKNOWN;
}

/* rds_lookup for a fuzzed Listener: every name resolves to an empty table,
 * kept in arg (a JSON object) until the listener is released. */
static const json_t *empty_routes(void *arg, const char *name)
{
	json_t *used = arg;
	if (!json_object_get(used, name))
		json_object_set_new(used, name, json_pack("{s:s}", "name", name));
	return json_object_get(used, name);
}

static const json_t *this_route(void *arg, const char *name)
{
	(void)name;
	return arg;
}

static void compile_listener(const json_t *j, const json_t *route)
{
	json_t *used = json_object();
	struct build_ctx b = { .srv = &g_server, .snap = h.view, .stats = g_server.stats,
			       .nworkers = 2, .rds_lookup = route ? this_route : empty_routes,
			       .rds_arg = route ? (void *)route : used };
	struct cfg_ctx c;
	cfg_setup(&c);
	struct listener_cfg *l = listener_parse(&c, j, &b);
	check(l || c.err[0], "a rejected Listener/RouteConfiguration says why");
	say(route ? "RouteConfiguration" : "Listener", json_string_value(json_object_get(route ? route : j, "name")),
	    l ? NULL : c.err);
	listener_unref(l);
	json_decref(used);
}

/* One decoded resource (proto3 JSON, no "@type") through its compiler. */
static void compile(int t, const char *name, const json_t *j)
{
	struct cfg_ctx c;
	char err[1024];
	switch (t) {
	case T_CDS: {
		struct build_ctx b = { .srv = &g_server, .stats = g_server.stats, .nworkers = 2 };
		cfg_setup(&c);
		struct cluster *cl = cluster_parse(&c, j, &b);
		check(cl || c.err[0], "a rejected Cluster says why");
		say("Cluster", name, cl ? NULL : c.err);
		/* ads.c starts what it accepted (start_warming); here only what
		 * needs no DNS, health checker or socket: STATIC and EDS (which
		 * waits for its assignment) publish a host set and build the LB */
		if (cl && (cl->type == CLUSTER_STATIC || cl->type == CLUSTER_EDS) && !cl->ext->hc_cfg)
			cluster_start(cl, h.base, NULL, NULL);
		if (cl)
			cluster_unref(cl);
		break;
	}
	case T_EDS:   /* as eds_apply_one: every (started) user of the assignment */
		for (size_t i = FIRST_EDS; i < NCL; i++) {
			cfg_init(&c, NULL, NULL);
			if (cluster_eds_update(h.cl[i], &c, j))
				check(c.err[0], "a rejected ClusterLoadAssignment says why");
			say("ClusterLoadAssignment", name, c.err);
		}
		break;
	case T_LDS:
		compile_listener(j, NULL);
		break;
	case T_RDS:
		compile_listener(h.rds_listener, j);
		break;
	case T_SDS:
		for (int k = 0; k < 2; k++) {
			err[0] = '\0';
			if (tls_sds_apply(k ? "fuzz-ca" : "fuzz-cert", j, "v", err, sizeof(err)) < 0)
				check(err[0], "a rejected Secret says why");
			say(k ? "Secret (as fuzz-ca)" : "Secret (as fuzz-cert)", name, err);
		}
		break;
	}
}

static void removed(int t, const char *name)
{
	if (t == T_EDS && name) {   /* an assignment removed: its users get no hosts */
		json_t *empty = json_pack("{s:s}", "cluster_name", name);
		compile(T_EDS, name, empty);
		json_decref(empty);
	}
}

static int type_index(const char *url)
{
	for (int t = 0; t < T_N; t++)
		if (url && !strcmp(url, type_urls[t]))
			return t;
	return -1;
}

/* The protobuf fast path (xds/pb_fast.c) must agree with the general path:
 * whatever it accepts, cluster_parse / cluster_eds_update accept too, with
 * the same result. */
static void fast_agrees(int t, const Google__Protobuf__Any *any, const json_t *j)
{
	struct build_ctx b = { .srv = &g_server, .stats = g_server.stats, .nworkers = 2 };
	struct cfg_ctx c;

	if (t == T_CDS) {
		struct cluster *f = NULL, *s;
		if (!pb_fast_cluster(any->value.data, any->value.len, &b, &f))
			return;
		cfg_init(&c, NULL, NULL);
		s = cluster_parse(&c, j, &b);
		check(s != NULL, "a fast-path Cluster compiles on the general path");
		check(!strcmp(f->name, s->name) && f->type == s->type && f->lb == s->lb &&
		      f->connect_timeout_ms == s->connect_timeout_ms &&
		      !strcmp(f->eds_service_name, s->eds_service_name) &&
		      f->eds_fetch_timeout_ms == s->eds_fetch_timeout_ms &&
		      f->buffer_limit == s->buffer_limit && f->ext == s->ext &&
		      !memcmp(f->cb, s->cb, sizeof(f->cb)), "fast and general Cluster agree");
		say("Cluster (protobuf fast path)", f->name, NULL);
		cluster_unref(f);
		cluster_unref(s);
	} else if (t == T_EDS) {
		struct endpoint_cfg *eps = NULL;
		size_t n = 0;
		struct cluster *s;
		if (!pb_fast_cla(any->value.data, any->value.len, &eps, &n))
			return;
		s = cluster_new_eds(&b, "fast", LB_ROUND_ROBIN, 1000, NULL, 15000);   /* not started */
		cfg_init(&c, NULL, NULL);
		check(!cluster_eds_update(s, &c, j), "a fast-path assignment applies on the general path");
		check(s->nendpoints == n, "fast and general endpoint counts agree");
		for (size_t i = 0; i < n && i < s->nendpoints; i++)
			check(!strcmp(eps[i].address, s->endpoints[i].address) &&
			      eps[i].port == s->endpoints[i].port &&
			      eps[i].weight == s->endpoints[i].weight &&
			      eps[i].eds_flags == s->endpoints[i].eds_flags, "fast and general endpoints agree");
		say("ClusterLoadAssignment (protobuf fast path)", NULL, NULL);
		for (size_t i = 0; i < n; i++)
			free(eps[i].address);
		free(eps);
		cluster_unref(s);
	}
}

/* Decode resources[idx] the way ads.c does (take_resource) and compile it.
 * want_name: the delta Resource wrapper's name, or NULL. */
static void take(int t, const Google__Protobuf__Any *any, size_t idx, const char *want_name)
{
	char err[1024] = "", bad_name[256] = "", path[32];
	struct pb_json_ctx pj = { .flags = h.lax ? PB_JSON_ALLOW_UNKNOWN : 0 };
	const char *field = t == T_EDS ? "cluster_name" : "name";
	if (!any)
		return;   /* ads.c: "no resource (removals go in removed_resources)" */
	json_t *j = ads_decode_resource(&pj, type_urls[t], field, any, idx, err, sizeof(err),
					bad_name, sizeof(bad_name));
	snprintf(path, sizeof(path), "resources[%zu]", idx);
	if (!j) {
		check(!strncmp(err, path, strlen(path)), "a decode error names the resource");
		say("decode", bad_name, err);
		return;
	}
	check(json_is_object(j) && !json_object_get(j, "@type"), "an object without @type");
	const char *name = json_string_value(json_object_get(j, field));
	if (name && *name && (!want_name || !*want_name || !strcmp(want_name, name))) {
		compile(t, name, j);
		if (any->type_url && !strcmp(any->type_url, type_urls[t]))
			fast_agrees(t, any, j);
	}
	json_decref(j);
}

static void sotw(const uint8_t *data, size_t size)
{
	Envoy__Service__Discovery__V3__DiscoveryResponse *r =
		envoy__service__discovery__v3__discovery_response__unpack(NULL, size, data);
	if (!r)
		return;
	int t = type_index(r->type_url);
	for (size_t i = 0; t >= 0 && i < r->n_resources; i++)
		take(t, r->resources[i], i, NULL);
	envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void delta(const uint8_t *data, size_t size)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r =
		envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, size, data);
	if (!r)
		return;
	int t = type_index(r->type_url);
	for (size_t i = 0; t >= 0 && i < r->n_resources; i++) {
		const Envoy__Service__Discovery__V3__Resource *res = r->resources[i];
		const char *want = res->name && *res->name ? res->name
				   : res->resource_name ? res->resource_name->name : NULL;
		take(t, res->resource, i, want);
	}
	for (size_t i = 0; t >= 0 && i < r->n_removed_resources; i++)
		removed(t, r->removed_resources[i]);
	for (size_t i = 0; t >= 0 && i < r->n_removed_resource_names; i++)
		removed(t, r->removed_resource_names[i]->name);
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

/* The REST form: resources are already proto3 JSON; the same type URL check
 * and Resource unwrap as the binary path, then the same compilers. */
static void rest(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return;
	json_t *url = json_object_get(root, "type_url");
	int t = type_index(json_string_value(url ? url : json_object_get(root, "typeUrl")));
	json_t *res = json_object_get(root, "resources"), *v;
	size_t i;
	if (t < 0)
		res = NULL;
	json_array_foreach(res, i, v) {
		const char *ty = json_string_value(json_object_get(v, "@type"));
		if (ty && !strcmp(ty, XDS_TYPE_RESOURCE)) {
			v = json_object_get(v, "resource");
			ty = json_string_value(json_object_get(v, "@type"));
		}
		if (!ty || strcmp(ty, type_urls[t]))
			continue;   /* "does not match the type URL": NACKed */
		json_t *j = json_copy(v);
		json_object_del(j, "@type");
		const char *name = json_string_value(json_object_get(j, t == T_EDS ? "cluster_name"
										  : "name"));
		if (name && *name)
			compile(t, name, j);
		json_decref(j);
	}
	json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		setup();
		init = true;
	}
	if (size < 1 || size > 256 * 1024)
		return 0;
	h.lax = (data[0] / 3) & 1;
	g_server.opt.allow_unknown_fields = h.lax;
	switch (data[0] % 3) {
	case 0:
		sotw(data + 1, size - 1);
		break;
	case 1:
		delta(data + 1, size - 1);
		break;
	default:
		rest(data + 1, size - 1);
		break;
	}
	return 0;
}
