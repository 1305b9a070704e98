/* admin.c - admin endpoints (Envoy's paths and formats) on libevent's evhttp.
 *
 * Runs on the main thread only: it reads stats (summing worker shards),
 * cluster membership (main-thread owned) and the current snapshot. */
#include "access_log.h"
#include "admin.h"

#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include "stats.h"
#include "config_dump.h"
#include "../proxy/server.h"
#include "../proxy/log.h"
#include "../proxy/config/address.h"
#include "../proxy/upstream/cluster.h"
#include "../tls/tls.h"
#include "../xds/ads.h"

#define REMORA_VERSION "remora/0.1.0"

struct admin {
	struct server *srv;                  /* not owned */
	struct evhttp *http;                 /* owned */
	struct evhttp_bound_socket *sock;    /* owned by http */
	struct event *quit_ev;               /* owned */
};

static const char *state_name(int st)
{
	switch (st) {
	case SERVER_LIVE: return "LIVE";
	case SERVER_DRAINING: return "DRAINING";
	case SERVER_PRE_INITIALIZING: return "PRE_INITIALIZING";
	default: return "INITIALIZING";
	}
}

static void reply(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *body)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "content-type", ctype);
	evhttp_add_header(oh, "cache-control", "no-cache, max-age=0");
	evhttp_add_header(oh, "x-content-type-options", "nosniff");
	evhttp_send_reply(req, code, code == 200 ? "OK" : NULL, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *text)
{
	struct evbuffer *b = evbuffer_new();
	evbuffer_add_printf(b, "%s", text);
	reply(req, code, "text/plain; charset=UTF-8", b);
	evbuffer_free(b);
}

static void reply_json(struct evhttp_request *req, json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, s, strlen(s));
	evbuffer_add(b, "\n", 1);
	reply(req, 200, "application/json", b);
	evbuffer_free(b);
	free(s);
	json_decref(j);
}

/* ---- endpoints ------------------------------------------------------------ */

static void h_ready(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)q;
	char buf[32];
	snprintf(buf, sizeof(buf), "%s\n", state_name(a->srv->state));
	reply_text(req, a->srv->state == SERVER_LIVE ? 200 : 503, buf);
}

static void h_server_info(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct server *srv = a->srv;
	char up[32];
	(void)q;
	snprintf(up, sizeof(up), "%llus", (unsigned long long)((now_ms() - srv->start_ms) / 1000));
	json_t *opts = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}",
		"concurrency", (json_int_t)srv->nworkers,
		"config_path", srv->opt.config_path ? srv->opt.config_path : "",
		"mode", "Serve",
		"log_level", log_level_name(log_current_level),
		"drain_time", "",
		"service_node", srv->node_id ? srv->node_id : "",
		"service_cluster", srv->node_cluster ? srv->node_cluster : "");
	char dt[32];
	snprintf(dt, sizeof(dt), "%us", srv->opt.drain_time_s);
	json_object_set_new(opts, "drain_time", json_string(dt));
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:{s:s, s:s}}",
		"version", REMORA_VERSION,
		"state", state_name(srv->state),
		"hot_restart_version", "disabled",
		"uptime_current_epoch", up,
		"uptime_all_epochs", up,
		"command_line_options", opts,
		"node", "id", srv->node_id ? srv->node_id : "",
		"cluster", srv->node_cluster ? srv->node_cluster : "");
	reply_json(req, j);
}

static void h_stats(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *filter = evhttp_find_header(q, "filter");
	const char *format = evhttp_find_header(q, "format");
	bool used = evhttp_find_header(q, "usedonly") != NULL;
	struct evbuffer *b = evbuffer_new();
	char err[256] = "";
	int rc;
	const char *ctype = "text/plain; charset=UTF-8";

	if (filter && !*filter)
		filter = NULL;
	if (format && !strcmp(format, "json")) {
		rc = stats_render_json(a->srv->stats, b, filter, used, err, sizeof(err));
		ctype = "application/json";
	} else if (format && !strcmp(format, "prometheus")) {
		rc = stats_render_prometheus(a->srv->stats, b, filter, used, err, sizeof(err));
	} else if (!format || !strcmp(format, "text")) {
		rc = stats_render_text(a->srv->stats, b, filter, used, err, sizeof(err));
	} else {
		evbuffer_free(b);
		reply_text(req, 400, "usage: /stats?format=(text|json|prometheus)&filter=REGEX&usedonly\n");
		return;
	}
	if (rc) {
		evbuffer_free(b);
		char msg[320];
		snprintf(msg, sizeof(msg), "Invalid re2 regex: %s\n", err);
		reply_text(req, 400, msg);
		return;
	}
	reply(req, 200, ctype, b);
	evbuffer_free(b);
}

static void h_prometheus(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *filter = evhttp_find_header(q, "filter");
	bool used = evhttp_find_header(q, "usedonly") != NULL;
	struct evbuffer *b = evbuffer_new();
	char err[256] = "";
	if (filter && !*filter)
		filter = NULL;
	if (stats_render_prometheus(a->srv->stats, b, filter, used, err, sizeof(err))) {
		evbuffer_free(b);
		reply_text(req, 400, err);
		return;
	}
	reply(req, 200, "text/plain; version=0.0.4; charset=UTF-8", b);
	evbuffer_free(b);
}

static void h_clusters(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct evbuffer *b = evbuffer_new();
	(void)q;
	for (size_t i = 0; i < a->srv->snap->nclusters; i++)
		cluster_dump_admin(a->srv->snap->clusters[i], b);
	reply(req, 200, "text/plain; charset=UTF-8", b);
	evbuffer_free(b);
}

static void h_listeners(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *format = evhttp_find_header(q, "format");
	struct snapshot *s = a->srv->snap;
	if (format && !strcmp(format, "json")) {
		json_t *arr = json_array();
		for (size_t i = 0; i < s->nlisteners; i++) {
			char ip[64];
			struct listener_cfg *l = s->listeners[i];
			sockaddr_ip((struct sockaddr *)&l->addr, ip, sizeof(ip));
			json_array_append_new(arr, json_pack("{s:s, s:{s:{s:s, s:i}}}", "name", l->name,
				"local_address", "socket_address", "address", ip, "port_value",
				(int)sockaddr_port((struct sockaddr *)&l->addr)));
		}
		reply_json(req, json_pack("{s:o}", "listener_statuses", arr));
		return;
	}
	struct evbuffer *b = evbuffer_new();
	for (size_t i = 0; i < s->nlisteners; i++) {
		char addr[80];
		sockaddr_format((struct sockaddr *)&s->listeners[i]->addr, addr, sizeof(addr));
		evbuffer_add_printf(b, "%s::%s\n", s->listeners[i]->name, addr);
	}
	reply(req, 200, "text/plain; charset=UTF-8", b);
	evbuffer_free(b);
}

/* Envoy's /certs: {"certificates":[{"ca_cert":[...],"cert_chain":[...]}]} (tls/). */
static void h_certs(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)a;
	(void)q;
	reply_json(req, tls_certs_json());
}

static bool query_flag(struct evhttp_request *req, const char *name);

#define T_ADMIN "type.googleapis.com/envoy.admin.v3."
#define T_CLUSTER "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define T_LISTENER "type.googleapis.com/envoy.config.listener.v3.Listener"
#define T_ROUTE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define T_CLA "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define T_SECRET "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

/* The value of query parameter name ("name=value", %-decoded, '+' is a
 * space), "" for a bare "name", NULL if absent.  Caller frees. */
static char *query_value(struct evhttp_request *req, const char *name)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	size_t n = strlen(name);

	while (q && *q) {
		size_t len = strcspn(q, "&");

		if (len >= n && !strncmp(q, name, n) && (len == n || q[n] == '=')) {
			char *raw = len > n ? xstrndup(q + n + 1, len - n - 1) : xstrdup("");
			char *v = evhttp_uridecode(raw, 1, NULL);

			free(raw);
			if (!v)
				die("out of memory (uri decode)");
			return v;
		}
		q += len;
		if (*q == '&')
			q++;
	}
	return NULL;
}

/* {"@type": type, ...j} (a copy). */
static json_t *typed_copy(const char *type, const json_t *j)
{
	json_t *o = json_deep_copy(j);

	if (!json_is_object(o)) {
		json_decref(o);
		o = json_object();
	}
	json_object_set_new(o, "@type", json_string(type));
	return o;
}

/* A cluster's current hosts as a ClusterLoadAssignment (Envoy's endpoint
 * dump for clusters not fed by EDS). */
static json_t *hosts_cla(const struct cluster *cl)
{
	static const char *const health[] = { "HEALTHY", "DEGRADED", "UNHEALTHY" };
	const struct hostset *hs = cl->hs;
	json_t *lbs = json_array();

	for (size_t i = 0; hs && i < hs->n; i++) {
		const struct host *h = hs->hosts[i];
		int hf = __atomic_load_n(&h->health_flags, __ATOMIC_RELAXED);
		char ip[64];
		json_t *lb;

		sockaddr_ip((struct sockaddr *)&h->addr, ip, sizeof(ip));
		lb = json_pack("{s:{s:{s:{s:s, s:i}}}, s:s, s:i}", "endpoint", "address",
			       "socket_address", "address", ip, "port_value",
			       (int)sockaddr_port((struct sockaddr *)&h->addr), "health_status",
			       health[host_health_of(hf)], "load_balancing_weight", (int)h->weight);
		if (h->hostname)
			json_object_set_new(json_object_get(lb, "endpoint"), "hostname",
					    json_string(h->hostname));
		json_array_append_new(lbs, lb);
	}
	return json_pack("{s:s, s:s, s:[{s:o}]}", "@type", T_CLA, "cluster_name", cl->name,
			 "endpoints", "lb_endpoints", lbs);
}

/* The route configurations inline in a listener's HCMs, appended to out as
 * RoutesConfigDump.StaticRouteConfig (Envoy lists them there, whatever the
 * listener's origin). */
static void inline_routes(const json_t *lis, json_t *out)
{
	const json_t *chains[2] = { json_object_get(lis, "filter_chains"), NULL };
	json_t *one = json_array();

	if (json_object_get(lis, "default_filter_chain"))
		json_array_append(one, json_object_get(lis, "default_filter_chain"));
	chains[1] = one;
	for (int k = 0; k < 2; k++) {
		size_t i, m;
		const json_t *fc, *f;

		json_array_foreach(chains[k], i, fc)
			json_array_foreach(json_object_get(fc, "filters"), m, f) {
				const json_t *rc = json_object_get(json_object_get(f, "typed_config"),
								   "route_config");
				if (json_is_object(rc))
					json_array_append_new(out, json_pack("{s:o}", "route_config",
									     typed_copy(T_ROUTE, rc)));
			}
	}
	json_decref(one);
}

/* Envoy's layout, in Envoy's order: Bootstrap, Clusters (static_clusters,
 * dynamic_active_clusters, dynamic_warming_clusters), Endpoints (only with
 * ?include_eds), Listeners (static_listeners, dynamic_listeners with
 * active_state / warming_state), Routes (static_route_configs: the inline
 * ones; dynamic_route_configs) and Secrets (static_secrets,
 * dynamic_active_secrets); dynamic_* from the xDS client with version_info
 * and last_updated.  ?resource=, ?mask=, ?name_regex= (stats/config_dump.h). */
static void h_config_dump(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct snapshot *s = a->srv->snap;
	bool include_eds = query_flag(req, "include_eds");
	char *resource = query_value(req, "resource"), *mask = query_value(req, "mask");
	char *name_regex = query_value(req, "name_regex");
	json_t *bootstrap = s->bootstrap ? json_deep_copy(s->bootstrap) : json_object();
	json_t *listeners = json_array(), *clusters = json_array(), *routes = json_array();
	json_t *st_eps = json_array(), *dyn_eps = NULL, *secrets = json_array();
	json_t *dyn = ads_config_dump(a->srv->ads, include_eds);   /* {} without xDS */
	json_t *sr = json_object_get(s->bootstrap, "static_resources"), *v;
	json_t *cs = json_object_get(sr, "clusters");
	size_t i;
	(void)q;

	config_dump_redact(bootstrap);
	json_array_foreach(json_object_get(sr, "listeners"), i, v) {
		json_array_append_new(listeners, json_pack("{s:o}", "listener", typed_copy(T_LISTENER, v)));
		inline_routes(v, routes);
	}
	json_array_foreach(json_object_get(dyn, "dynamic_listeners"), i, v)
		inline_routes(json_object_get(json_object_get(v, "active_state"), "listener"), routes);
	json_array_foreach(json_object_get(sr, "secrets"), i, v) {
		json_t *sec = typed_copy(T_SECRET, v);

		config_dump_redact(sec);
		const char *sn = json_string_value(json_object_get(v, "name"));

		json_array_append_new(secrets, json_pack("{s:s, s:o}", "name", sn ? sn : "",
							 "secret", sec));
	}
	if (include_eds)
		dyn_eps = json_incref(json_object_get(dyn, "dynamic_endpoint_configs"));
	if (include_eds && !dyn_eps)
		dyn_eps = json_array();
	for (i = 0; i < s->nclusters; i++) {
		const struct cluster *cl = s->clusters[i];
		/* static: the bootstrap's (the snapshot also holds the dynamic ones) */
		bool is_static = !a->srv->ads;
		for (size_t k = 0; !is_static && k < json_array_size(cs); k++) {
			const char *n = json_string_value(json_object_get(json_array_get(cs, k), "name"));
			is_static = n && !strcmp(n, cl->name);
		}
		if (is_static) {
			json_t *c = cluster_config_json(cl);
			json_array_append_new(clusters, json_pack("{s:o}", "cluster", typed_copy(T_CLUSTER, c)));
			json_decref(c);
		}
		/* endpoints: EDS ones as received (from the xDS client, with their
		 * versions), the others from their current hosts */
		if (include_eds && cl->type != CLUSTER_EDS)
			json_array_append_new(is_static ? st_eps : dyn_eps,
					      json_pack("{s:o}", "endpoint_config", hosts_cla(cl)));
	}
	json_t *cd = json_pack("{s:s, s:o}", "@type", T_ADMIN "ClustersConfigDump",
			       "static_clusters", clusters);
	json_t *ld = json_pack("{s:s, s:o}", "@type", T_ADMIN "ListenersConfigDump",
			       "static_listeners", listeners);
	json_t *rd = json_pack("{s:s, s:o}", "@type", T_ADMIN "RoutesConfigDump",
			       "static_route_configs", routes);
	json_t *sd = json_pack("{s:s, s:o}", "@type", T_ADMIN "SecretsConfigDump",
			       "static_secrets", secrets);
	json_t *ed = include_eds ? json_pack("{s:s, s:o, s:o}", "@type", T_ADMIN "EndpointsConfigDump",
					     "static_endpoint_configs", st_eps,
					     "dynamic_endpoint_configs", dyn_eps)
				 : NULL;
	static const struct { const char *key; int dump; } place[] = {
		{ "cds_version_info", 0 }, { "dynamic_active_clusters", 0 }, { "dynamic_warming_clusters", 0 },
		{ "lds_version_info", 1 }, { "dynamic_listeners", 1 }, { "dynamic_route_configs", 2 },
		{ "dynamic_active_secrets", 3 },
	};
	json_t *dumps[] = { cd, ld, rd, sd };
	for (i = 0; i < ARRAY_SIZE(place); i++) {
		v = json_object_get(dyn, place[i].key);
		if (v)
			json_object_set(dumps[place[i].dump],
					!strncmp(place[i].key + 4, "version_info", 12) ? "version_info"
										: place[i].key, v);
	}
	json_decref(dyn);
	if (!include_eds)
		json_decref(st_eps);
	json_t *configs = json_pack("[{s:s, s:o}, o]",
		"@type", T_ADMIN "BootstrapConfigDump", "bootstrap", bootstrap, cd);
	if (ed)
		json_array_append_new(configs, ed);
	json_array_append_new(configs, ld);
	json_array_append_new(configs, rd);
	json_array_append_new(configs, sd);

	struct config_dump_query cq = { resource, mask, name_regex };
	json_t *out;
	char *msg;
	int code = config_dump_query(configs, &cq, &out, &msg);
	json_decref(configs);
	free(resource);
	free(mask);
	free(name_regex);
	if (code != 200) {
		char *text = xasprintf("%s\n", msg);
		reply_text(req, code, text);
		free(text);
		free(msg);
		return;
	}
	reply_json(req, out);
}

static void quit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct admin *a = arg;
	(void)fd;
	(void)what;
	server_quit(a->srv);
}

static void h_quit(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)q;
	reply_text(req, 200, "OK\n");
	struct timeval tv = { 0, 50 * 1000 };   /* let the reply go out first */
	evtimer_add(a->quit_ev, &tv);
}

static void h_hc_fail(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)q;
	a->srv->healthcheck_failed = true;
	reply_text(req, 200, "OK\n");
}

static void h_hc_ok(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)q;
	a->srv->healthcheck_failed = false;
	reply_text(req, 200, "OK\n");
}

/* Envoy's flags are bare names ("?inboundonly&graceful"); a value is ignored. */
static bool query_flag(struct evhttp_request *req, const char *name)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	size_t n = strlen(name);
	while (q && *q) {
		size_t len = strcspn(q, "&");
		if ((len == n || (len > n && q[n] == '=')) && !strncmp(q, name, n))
			return true;
		q += len;
		if (*q == '&')
			q++;
	}
	return false;
}

static void h_drain(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)q;
	server_drain_listeners(a->srv, query_flag(req, "inboundonly"), query_flag(req, "graceful"),
			       query_flag(req, "skip_exit"));
	reply_text(req, 200, "OK\n");
}

static void h_reset(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)q;
	stats_reset_counters(a->srv->stats);
	reply_text(req, 200, "OK\n");
}

/* Access-log files are reopened by the flusher before its next write
 * (rotation: mv the file, then POST /reopen_logs). */
static void h_reopen_logs(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	(void)a;
	(void)q;
	al_reopen_all();
	reply_text(req, 200, "OK\n");
}

static void h_logging(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *level = evhttp_find_header(q, "level");
	char buf[128];
	(void)a;
	if (level && log_set_level_name(level)) {
		reply_text(req, 400, "invalid level: use trace, debug, info, warning, error, critical, off\n");
		return;
	}
	snprintf(buf, sizeof(buf), "active loggers:\n  remora: %s\n", log_level_name(log_current_level));
	reply_text(req, 200, buf);
}

struct endpoint {
	const char *path;
	bool post;                            /* mutates state: POST only */
	bool raw_query;                       /* takes Envoy's bare flags ("?include_eds"),
						 not only key=value pairs: reads the raw query */
	void (*fn)(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q);
	const char *help;
};

static void h_help(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q);

static const struct endpoint endpoints[] = {
	{ "/", false, false, h_help, "print this help" },
	{ "/help", false, false, h_help, "print this help" },
	{ "/ready", false, false, h_ready, "print server state, 200 only when LIVE" },
	{ "/server_info", false, false, h_server_info, "print server version/status information" },
	{ "/stats", false, false, h_stats, "print server stats (filter=REGEX, format=json|prometheus, usedonly)" },
	{ "/stats/prometheus", false, false, h_prometheus, "print server stats in prometheus format" },
	{ "/clusters", false, false, h_clusters, "upstream cluster status" },
	{ "/listeners", false, false, h_listeners, "print listener info (format=json)" },
	{ "/config_dump", false, true, h_config_dump,
	  "dump current configuration (resource=, mask=, name_regex=, include_eds)" },
	{ "/certs", false, false, h_certs, "print certs on machine" },
	{ "/quitquitquit", true, false, h_quit, "drain every listener, then exit the server" },
	{ "/healthcheck/fail", true, false, h_hc_fail, "cause the server to fail health checks" },
	{ "/healthcheck/ok", true, false, h_hc_ok, "cause the server to pass health checks" },
	{ "/drain_listeners", true, true, h_drain,
	  "drain listeners (?inboundonly: INBOUND only; ?graceful: drain connections first)" },
	{ "/reset_counters", true, false, h_reset, "reset all counters to zero" },
	{ "/reopen_logs", true, false, h_reopen_logs, "reopen access logs" },
	{ "/logging", true, false, h_logging, "query/change logging levels (level=...)" },
};

static void h_help(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct evbuffer *b = evbuffer_new();
	(void)a;
	(void)q;
	evbuffer_add_printf(b, "admin commands are:\n");
	for (size_t i = 1; i < ARRAY_SIZE(endpoints); i++)
		evbuffer_add_printf(b, "  %s%s: %s\n", endpoints[i].path, endpoints[i].post ? " (POST)" : "",
				    endpoints[i].help);
	reply(req, 200, "text/plain; charset=UTF-8", b);
	evbuffer_free(b);
}

static void admin_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq q;

	TAILQ_INIT(&q);
	/* Envoy's bare flags ("/drain_listeners?inboundonly") are not
	 * key=value pairs: those endpoints read the raw query (query_flag) */
	bool raw = false;
	for (size_t i = 0; path && i < ARRAY_SIZE(endpoints); i++)
		if (!strcmp(path, endpoints[i].path))
			raw = endpoints[i].raw_query;
	if (query && evhttp_parse_query_str(query, &q) && !raw) {
		reply_text(req, 400, "bad query string\n");
		return;
	}
	if (!path || !*path)
		path = "/";
	for (size_t i = 0; i < ARRAY_SIZE(endpoints); i++) {
		if (strcmp(path, endpoints[i].path))
			continue;
		if (endpoints[i].post && cmd != EVHTTP_REQ_POST) {
			reply_text(req, 405, "This endpoint requires POST\n");
		} else if (!endpoints[i].post && cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD &&
			   cmd != EVHTTP_REQ_POST) {
			reply_text(req, 405, "method not allowed\n");
		} else {
			endpoints[i].fn(a, req, &q);
		}
		evhttp_clear_headers(&q);
		return;
	}
	evhttp_clear_headers(&q);
	reply_text(req, 404, "invalid path. use /help for the list of admin endpoints\n");
}

struct admin *admin_start(struct server *srv, char *err, size_t errlen)
{
	struct admin *a = xcalloc(1, sizeof(*a));
	char ip[64];
	a->srv = srv;
	a->http = evhttp_new(srv->base);
	if (!a->http)
		die("evhttp_new");
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
					     EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_gencb(a->http, admin_cb, a);
	evhttp_set_timeout(a->http, 30);
	sockaddr_ip((struct sockaddr *)&srv->admin_addr, ip, sizeof(ip));
	a->sock = evhttp_bind_socket_with_handle(a->http, ip,
						 sockaddr_port((struct sockaddr *)&srv->admin_addr));
	if (!a->sock) {
		snprintf(err, errlen, "cannot listen on %s:%u", ip,
			 sockaddr_port((struct sockaddr *)&srv->admin_addr));
		admin_free(a);
		return NULL;
	}
	a->quit_ev = evtimer_new(srv->base, quit_cb, a);
	return a;
}

unsigned admin_port(const struct admin *a)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(evhttp_bound_socket_get_fd(a->sock), (struct sockaddr *)&ss, &len))
		return 0;
	return sockaddr_port((struct sockaddr *)&ss);
}

void admin_free(struct admin *a)
{
	if (!a)
		return;
	if (a->quit_ev)
		event_free(a->quit_ev);
	if (a->http)
		evhttp_free(a->http);
	free(a);
}
