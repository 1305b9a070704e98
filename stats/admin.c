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

/* Envoy's layout: Bootstrap, Clusters (static_clusters, dynamic_active_clusters,
 * dynamic_warming_clusters), Listeners (static_listeners, dynamic_listeners
 * with active_state / warming_state), Routes, Endpoints and Secrets
 * (dynamic_* from the xDS client, with version_info and last_updated). */
static void h_config_dump(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct snapshot *s = a->srv->snap;
	json_t *bootstrap = s->bootstrap ? json_deep_copy(s->bootstrap) : json_object();
	json_t *listeners = json_array(), *clusters = json_array();
	json_t *dyn = ads_config_dump(a->srv->ads);   /* {} without xDS */
	(void)q;
	json_t *sr = json_object_get(s->bootstrap, "static_resources");
	json_t *ls = sr ? json_object_get(sr, "listeners") : NULL;
	for (size_t i = 0; ls && i < json_array_size(ls); i++)
		json_array_append_new(listeners, json_pack("{s:O}", "listener", json_array_get(ls, i)));
	json_t *cs = sr ? json_object_get(sr, "clusters") : NULL;
	for (size_t i = 0; i < s->nclusters; i++) {
		/* static: the bootstrap's (the snapshot also holds the dynamic ones) */
		bool is_static = !a->srv->ads;
		for (size_t k = 0; !is_static && k < json_array_size(cs); k++)
			is_static = !strcmp(json_string_value(json_object_get(json_array_get(cs, k), "name"))
					    ? json_string_value(json_object_get(json_array_get(cs, k), "name"))
					    : "", s->clusters[i]->name);
		if (is_static)
			json_array_append_new(clusters, json_pack("{s:o}", "cluster", cluster_config_json(s->clusters[i])));
	}
	json_t *cd = json_pack("{s:s, s:o}", "@type", "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
			       "static_clusters", clusters);
	json_t *ld = json_pack("{s:s, s:o}", "@type", "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
			       "static_listeners", listeners);
	json_t *rd = json_pack("{s:s, s:[]}", "@type", "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
			       "static_route_configs");
	json_t *ed = json_pack("{s:s, s:[]}", "@type", "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
			       "static_endpoint_configs");
	json_t *sd = json_pack("{s:s}", "@type", "type.googleapis.com/envoy.admin.v3.SecretsConfigDump");
	static const struct { const char *key; int dump; } place[] = {
		{ "cds_version_info", 0 }, { "dynamic_active_clusters", 0 }, { "dynamic_warming_clusters", 0 },
		{ "lds_version_info", 1 }, { "dynamic_listeners", 1 }, { "dynamic_route_configs", 2 },
		{ "dynamic_endpoint_configs", 3 }, { "dynamic_active_secrets", 4 },
	};
	json_t *dumps[] = { cd, ld, rd, ed, sd };
	for (size_t i = 0; i < ARRAY_SIZE(place); i++) {
		json_t *v = json_object_get(dyn, place[i].key);
		if (v)
			json_object_set(dumps[place[i].dump],
					!strncmp(place[i].key + 4, "version_info", 12) ? "version_info"
										: place[i].key, v);
	}
	json_decref(dyn);
	json_t *j = json_pack("{s:[{s:s, s:o}, o, o, o, o, o]}", "configs",
		"@type", "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap", bootstrap,
		cd, ld, rd, ed, sd);
	reply_json(req, j);
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
	void (*fn)(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q);
	const char *help;
};

static void h_help(struct admin *a, struct evhttp_request *req, struct evkeyvalq *q);

static const struct endpoint endpoints[] = {
	{ "/", false, h_help, "print this help" },
	{ "/help", false, h_help, "print this help" },
	{ "/ready", false, h_ready, "print server state, 200 only when LIVE" },
	{ "/server_info", false, h_server_info, "print server version/status information" },
	{ "/stats", false, h_stats, "print server stats (filter=REGEX, format=json|prometheus, usedonly)" },
	{ "/stats/prometheus", false, h_prometheus, "print server stats in prometheus format" },
	{ "/clusters", false, h_clusters, "upstream cluster status" },
	{ "/listeners", false, h_listeners, "print listener info (format=json)" },
	{ "/config_dump", false, h_config_dump, "dump current configuration" },
	{ "/certs", false, h_certs, "print certs on machine" },
	{ "/quitquitquit", true, h_quit, "drain every listener, then exit the server" },
	{ "/healthcheck/fail", true, h_hc_fail, "cause the server to fail health checks" },
	{ "/healthcheck/ok", true, h_hc_ok, "cause the server to pass health checks" },
	{ "/drain_listeners", true, h_drain,
	  "drain listeners (?inboundonly: INBOUND only; ?graceful: drain connections first)" },
	{ "/reset_counters", true, h_reset, "reset all counters to zero" },
	{ "/reopen_logs", true, h_reopen_logs, "reopen access logs" },
	{ "/logging", true, h_logging, "query/change logging levels (level=...)" },
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
	if (query && evhttp_parse_query_str(query, &q) && strcmp(path ? path : "", "/drain_listeners")) {
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
