/* health_check.c - active HTTP/1.1 and TCP health checks (main thread). */
#include "health_check.h"

#include <ctype.h>
#include <event2/buffer.h>
#include "cluster.h"
#include "../conn.h"
#include "../log.h"
#include "../http/h1_parser.h"

const struct stat_desc hc_stat_desc[HC_STATS_N] = { HC_STATS(STATS_DESC) };

#define HC_MAX_HEAD  (16 * 1024)     /* response head limit */
#define HC_MAX_BODY  (64 * 1024)     /* body consumed for keep-alive; over it: close */
#define HC_MAX_RECV  (64 * 1024)     /* TCP receive buffer without a match: failure */

/* ---- config ---------------------------------------------------------------------- */

void hc_cfg_free(struct hc_cfg *cfg)
{
	if (!cfg)
		return;
	free(cfg->request);
	free(cfg->expected);
	free(cfg->retriable);
	free(cfg->send.data);
	for (size_t i = 0; i < cfg->nreceive; i++)
		free(cfg->receive[i].data);
	free(cfg->receive);
	free(cfg);
}

/* Standard or URL-safe base64, padding optional (proto3 JSON bytes). */
static int b64_decode(const char *s, struct hc_bytes *out)
{
	size_t n;
	char *d = base64_decode(s, &n);
	if (!d)
		return RM_ERROR;
	out->data = (uint8_t *)d;
	out->len = n;
	return RM_OK;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int parse_payload(struct cfg_ctx *c, const json_t *o, struct hc_bytes *out)
{
	static const char *const f[] = { "text", "binary", NULL };
	const char *text = NULL, *bin = NULL;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_string(c, o, "text", &text) || cfg_string(c, o, "binary", &bin))
		return RM_ERROR;
	if (!text == !bin)
		return cfg_fail(c, "exactly one of 'text', 'binary' is required");
	if (bin) {
		if (b64_decode(bin, out)) {
			cfg_fail_field(c, o, "binary", "invalid base64");
			return RM_ERROR;
		}
		return RM_OK;
	}
	size_t n = strlen(text);
	out->data = xmalloc(n / 2 + 1);
	out->len = n / 2;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hexval((unsigned char)text[i]);
		int lo = i + 1 < n ? hexval((unsigned char)text[i + 1]) : -1;
		if (hi < 0 || lo < 0) {
			cfg_fail_field(c, o, "text", "expected an even number of hex digits");
			return RM_ERROR;
		}
		out->data[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	return RM_OK;
}

static int parse_tcp(struct cfg_ctx *c, const json_t *o, struct hc_cfg *cfg)
{
	static const char *const f[] = { "send", "receive", "proxy_protocol_config", NULL };
	const json_t *v;
	cfg->kind = HC_TCP;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f))
		return RM_ERROR;
	if (cfg_get(o, "proxy_protocol_config"))
		return cfg_fail_field(c, o, "proxy_protocol_config", "not supported yet");
	if ((v = cfg_enter(c, o, "send"))) {
		int rc = parse_payload(c, v, &cfg->send);
		cfg_leave(c);
		if (rc)
			return rc;
	}
	if ((v = cfg_enter(c, o, "receive"))) {
		int rc = cfg_expect_array(c, v);
		size_t n = json_array_size(v);
		if (!rc && n)
			cfg->receive = xcalloc(n, sizeof(*cfg->receive));
		for (size_t i = 0; !rc && i < n; i++) {
			rc = parse_payload(c, cfg_enter_idx(c, v, i), &cfg->receive[cfg->nreceive++]);
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			return rc;
	}
	return RM_OK;
}

static int parse_ranges(struct cfg_ctx *c, const json_t *o, const char *name,
			struct hc_range **out, size_t *nout)
{
	static const char *const f[] = { "start", "end", NULL };
	const json_t *arr = cfg_enter(c, o, name);
	int rc;
	if (!arr)
		return RM_OK;
	rc = cfg_expect_array(c, arr);
	size_t n = json_array_size(arr);
	*out = xcalloc(n ? n : 1, sizeof(**out));
	for (size_t i = 0; !rc && i < n; i++) {
		const json_t *r = cfg_enter_idx(c, arr, i);
		uint64_t start = 0, end = 0;
		rc = cfg_expect_object(c, r) || cfg_check_fields(c, r, f) ||
		     cfg_u64(c, r, "start", &start) || cfg_u64(c, r, "end", &end);
		if (!rc && (start < 100 || start >= 600 || end <= 100 || end > 600 || start >= end))
			rc = cfg_fail(c, "expected 100 <= start < end <= 600");
		(*out)[i].start = (int64_t)start;
		(*out)[i].end = (int64_t)end;
		*nout = i + 1;
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

static bool token_char(int ch)
{
	return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* request_headers_to_add[i] (HeaderValueOption) applied to h. */
static int parse_add_header(struct cfg_ctx *c, const json_t *o, struct http_headers *h)
{
	static const char *const f[] = { "header", "append", "append_action", "keep_empty_value", NULL };
	static const char *const hf[] = { "key", "value", "raw_value", NULL };
	static const char *const actions[] = { "APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT",
					       "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS" };
	const json_t *hv;
	const char *key = NULL, *value = "";
	bool append = true, keep_empty = false;
	int action = 0;
	char lname[256];
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_bool(c, o, "append", &append) || cfg_bool(c, o, "keep_empty_value", &keep_empty) ||
	    cfg_enum(c, o, "append_action", actions, ARRAY_SIZE(actions), &action))
		return RM_ERROR;
	if (!(hv = cfg_enter_req(c, o, "header")))
		return RM_ERROR;
	int rc = cfg_expect_object(c, hv) || cfg_check_fields(c, hv, hf) ||
		 cfg_string_req(c, hv, "key", &key) || cfg_string(c, hv, "value", &value);
	if (!rc && cfg_get(hv, "raw_value")) {
		rc = cfg_fail_field(c, hv, "raw_value", "not supported yet");
	}
	if (!rc) {
		size_t kl = strlen(key);
		bool ok = kl && kl < sizeof(lname);
		for (size_t i = 0; ok && i < kl; i++)
			ok = token_char((unsigned char)key[i]);
		if (!ok) {
			rc = cfg_fail_field(c, hv, "key", "invalid header name '%s'", key);
		} else {
			for (size_t i = 0; i <= kl; i++)
				lname[i] = (char)tolower((unsigned char)key[i]);
			if (!strcmp(lname, "host") || !strcmp(lname, "connection") ||
			    !strcmp(lname, "content-length") || !strcmp(lname, "transfer-encoding")) {
				rc = cfg_fail_field(c, hv, "key", "setting '%s' on health check requests is not supported", key);
			}
		}
	}
	if (!rc) {
		for (const char *p = value; *p && !rc; p++) {
			if (*p == '%') {
				rc = cfg_fail_field(c, hv, "value", "header value formatters (%%...%%) are not supported yet");
			} else if ((unsigned char)*p < 0x20 && *p != '\t') {
				rc = cfg_fail_field(c, hv, "value", "invalid character in header value");
			}
		}
	}
	cfg_leave(c);
	if (rc)
		return RM_ERROR;
	if (!*value && !keep_empty)
		return RM_OK;
	if (!cfg_get(o, "append_action") && !append)
		action = 2;   /* append: false == OVERWRITE_IF_EXISTS_OR_ADD */
	bool exists = hdrs_find(h, lname, strlen(lname), 0) >= 0;
	switch (action) {
	case 1:   /* ADD_IF_ABSENT */
		if (!exists)
			hdrs_add_cstr(h, lname, value);
		break;
	case 2:   /* OVERWRITE_IF_EXISTS_OR_ADD */
		hdrs_set(h, lname, value, strlen(value));
		break;
	case 3:   /* OVERWRITE_IF_EXISTS */
		if (exists)
			hdrs_set(h, lname, value, strlen(value));
		break;
	default:
		hdrs_add_cstr(h, lname, value);
	}
	return RM_OK;
}

static int parse_http(struct cfg_ctx *c, const json_t *o, struct hc_cfg *cfg, const char *cluster_name)
{
	static const char *const f[] = { "host", "path", "send", "receive", "response_buffer_size",
					 "request_headers_to_add", "request_headers_to_remove",
					 "expected_statuses", "retriable_statuses", "codec_client_type",
					 "service_name_matcher", "method", NULL };
	static const char *const unsupported[] = { "send", "receive", "response_buffer_size",
						   "service_name_matcher", NULL };
	static const char *const codecs[] = { "HTTP1", "HTTP2", "HTTP3" };
	static const char *const methods[] = { "METHOD_UNSPECIFIED", "GET", "HEAD", "POST", "PUT",
					       "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH" };
	const char *host = NULL, *path = NULL;
	const json_t *v;
	int codec = 0, method = 0, rc;
	struct http_headers h;

	cfg->kind = HC_HTTP;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_string(c, o, "host", &host) || cfg_string_req(c, o, "path", &path) ||
	    cfg_enum(c, o, "codec_client_type", codecs, ARRAY_SIZE(codecs), &codec) ||
	    cfg_enum(c, o, "method", methods, ARRAY_SIZE(methods), &method))
		return RM_ERROR;
	if (cfg_reject_fields(c, o, unsupported, "not supported yet"))
		return RM_ERROR;
	if (codec != 0) {
		cfg_fail_field(c, o, "codec_client_type", "only HTTP1 health checks are supported yet");
		return RM_ERROR;
	}
	if (method > 1) {
		cfg_fail_field(c, o, "method", "only GET health checks are supported yet");
		return RM_ERROR;
	}
	bool bad_path = path[0] != '/';
	for (const char *p = path; *p && !bad_path; p++)
		bad_path = (unsigned char)*p <= 0x20 || *p == 0x7f;
	if (bad_path) {
		cfg_fail_field(c, o, "path", "expected an origin-form path ('/...') without spaces or controls");
		return RM_ERROR;
	}
	if (!host || !*host)
		host = cluster_name;
	for (const char *p = host; *p; p++) {
		if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			cfg_fail_field(c, o, "host", "invalid character in host");
			return RM_ERROR;
		}
	}
	if (parse_ranges(c, o, "expected_statuses", &cfg->expected, &cfg->nexpected) ||
	    parse_ranges(c, o, "retriable_statuses", &cfg->retriable, &cfg->nretriable))
		return RM_ERROR;
	if (!cfg->nexpected) {
		free(cfg->expected);
		cfg->expected = xmalloc(sizeof(*cfg->expected));
		cfg->expected[0] = (struct hc_range){ 200, 201 };
		cfg->nexpected = 1;
	}

	hdrs_init(&h);
	hdrs_add_cstr(&h, ":method", "GET");
	hdrs_add_cstr(&h, ":path", path);
	hdrs_add_cstr(&h, ":authority", host);
	hdrs_add_cstr(&h, "user-agent", "Envoy/HC");
	rc = RM_OK;
	/* Envoy removes before it adds. */
	if ((v = cfg_enter(c, o, "request_headers_to_remove"))) {
		rc = cfg_expect_array(c, v);
		for (size_t i = 0; !rc && i < json_array_size(v); i++) {
			const json_t *s = cfg_enter_idx(c, v, i);
			char lname[256];
			if (!json_is_string(s) || json_string_length(s) >= sizeof(lname)) {
				rc = cfg_fail(c, "expected a header name");
			} else if (json_string_value(s)[0] != ':') {
				const char *n = json_string_value(s);
				size_t k = 0;
				for (; n[k]; k++)
					lname[k] = (char)tolower((unsigned char)n[k]);
				lname[k] = 0;
				hdrs_del(&h, lname);
			}
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if (!rc && (v = cfg_enter(c, o, "request_headers_to_add"))) {
		rc = cfg_expect_array(c, v);
		for (size_t i = 0; !rc && i < json_array_size(v); i++) {
			rc = parse_add_header(c, cfg_enter_idx(c, v, i), &h);
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if (!rc) {
		struct evbuffer *b = evbuffer_new();
		h1_encode_request(b, &h, false, cfg->reuse_connection, false);
		cfg->request_len = evbuffer_get_length(b);
		cfg->request = xmalloc(cfg->request_len + 1);
		evbuffer_remove(b, cfg->request, cfg->request_len);
		cfg->request[cfg->request_len] = 0;
		evbuffer_free(b);
	}
	hdrs_free(&h);
	return rc ? RM_ERROR : RM_OK;
}

static int parse_one(struct cfg_ctx *c, const json_t *o, const char *cluster_name, struct hc_cfg *cfg)
{
	static const char *const f[] = {
		"timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent",
		"unhealthy_threshold", "healthy_threshold", "reuse_connection", "http_health_check",
		"tcp_health_check", "grpc_health_check", "custom_health_check", "no_traffic_interval",
		"no_traffic_healthy_interval", "unhealthy_interval", "unhealthy_edge_interval",
		"healthy_edge_interval", "event_log_path", "event_logger", "always_log_health_check_failures",
		"always_log_health_check_success", "tls_options", "transport_socket_match_criteria",
		"alt_port", "name", NULL };
	static const char *const unsupported[] = {
		"grpc_health_check", "custom_health_check", "no_traffic_healthy_interval",
		"event_log_path", "event_logger", "always_log_health_check_failures",
		"always_log_health_check_success", "tls_options", "transport_socket_match_criteria",
		"alt_port", NULL };
	static const char *const required[] = { "timeout", "interval", "unhealthy_threshold",
						"healthy_threshold", NULL };
	const json_t *v;

	cfg->reuse_connection = true;
	cfg->no_traffic_ms = 60000;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f))
		return RM_ERROR;
	if (cfg_reject_fields(c, o, unsupported, "not supported yet"))
		return RM_ERROR;
	for (size_t i = 0; required[i]; i++) {
		if (!cfg_enter_req(c, o, required[i]))
			return RM_ERROR;
		cfg_leave(c);
	}
	if (cfg_duration_ms(c, o, "timeout", &cfg->timeout_ms) ||
	    cfg_duration_ms(c, o, "interval", &cfg->interval_ms) ||
	    cfg_duration_ms(c, o, "initial_jitter", &cfg->initial_jitter_ms) ||
	    cfg_duration_ms(c, o, "interval_jitter", &cfg->interval_jitter_ms) ||
	    cfg_u32(c, o, "interval_jitter_percent", &cfg->interval_jitter_percent) ||
	    cfg_u32(c, o, "unhealthy_threshold", &cfg->unhealthy_threshold) ||
	    cfg_u32(c, o, "healthy_threshold", &cfg->healthy_threshold) ||
	    cfg_bool(c, o, "reuse_connection", &cfg->reuse_connection) ||
	    cfg_duration_ms(c, o, "no_traffic_interval", &cfg->no_traffic_ms) ||
	    cfg_duration_ms(c, o, "unhealthy_interval", &cfg->unhealthy_interval_ms) ||
	    cfg_duration_ms(c, o, "unhealthy_edge_interval", &cfg->unhealthy_edge_ms) ||
	    cfg_duration_ms(c, o, "healthy_edge_interval", &cfg->healthy_edge_ms))
		return RM_ERROR;
	static const char *const positive[] = { "timeout", "interval", NULL };
	for (size_t i = 0; positive[i]; i++) {
		uint64_t ms = i == 0 ? cfg->timeout_ms : cfg->interval_ms;
		if (!ms) {
			cfg_enter(c, o, positive[i]);
			cfg_fail(c, "must be greater than 0");
			cfg_leave(c);
			return RM_ERROR;
		}
	}
	/* Envoy treats a 0 threshold like 1 */
	if (!cfg->unhealthy_threshold)
		cfg->unhealthy_threshold = 1;
	if (!cfg->healthy_threshold)
		cfg->healthy_threshold = 1;
	if (!cfg->unhealthy_interval_ms)
		cfg->unhealthy_interval_ms = cfg->interval_ms;
	if (!cfg->unhealthy_edge_ms)
		cfg->unhealthy_edge_ms = cfg->unhealthy_interval_ms;
	if (!cfg->healthy_edge_ms)
		cfg->healthy_edge_ms = cfg->interval_ms;

	const json_t *hv = cfg_get(o, "http_health_check"), *tv = cfg_get(o, "tcp_health_check");
	if (hv && tv) {
		cfg_fail_field(c, o, "tcp_health_check", "only one of http_health_check, tcp_health_check may be set");
		return RM_ERROR;
	}
	if ((v = cfg_enter(c, o, "http_health_check"))) {
		int rc = parse_http(c, v, cfg, cluster_name);
		cfg_leave(c);
		return rc;
	}
	if ((v = cfg_enter(c, o, "tcp_health_check"))) {
		int rc = parse_tcp(c, v, cfg);
		cfg_leave(c);
		return rc;
	}
	return cfg_fail(c, "one of http_health_check, tcp_health_check is required");
}

int hc_parse(struct cfg_ctx *c, const json_t *list, const char *cluster_name, struct hc_cfg **out)
{
	*out = NULL;
	if (cfg_expect_array(c, list))
		return RM_ERROR;
	if (!json_array_size(list))
		return RM_OK;
	if (json_array_size(list) > 1) {
		cfg_enter_idx(c, list, 1);
		cfg_fail(c, "more than one health check per cluster is not supported yet");
		cfg_leave(c);
		return RM_ERROR;
	}
	struct hc_cfg *cfg = xcalloc(1, sizeof(*cfg));
	int rc = parse_one(c, cfg_enter_idx(c, list, 0), cluster_name, cfg);
	cfg_leave(c);
	if (rc) {
		hc_cfg_free(cfg);
		return RM_ERROR;
	}
	*out = cfg;
	return RM_OK;
}

/* ---- matchers ---------------------------------------------------------------------- */

bool hc_tcp_match(const struct hc_bytes *segs, size_t nsegs, const uint8_t *buf, size_t len)
{
	size_t pos = 0;
	for (size_t i = 0; i < nsegs; i++) {
		const struct hc_bytes *s = &segs[i];
		if (!s->len)
			continue;
		const uint8_t *p = s->len <= len - pos ? memmem(buf + pos, len - pos, s->data, s->len) : NULL;
		if (!p)
			return false;
		pos = (size_t)(p - buf) + s->len;
	}
	return true;
}

bool hc_status_in(const struct hc_range *r, size_t n, int64_t status)
{
	for (size_t i = 0; i < n; i++)
		if (status >= r[i].start && status < r[i].end)
			return true;
	return false;
}

/* ---- sessions ---------------------------------------------------------------------- */

enum hc_result { HC_OK, HC_FAIL_ACTIVE, HC_FAIL_RETRIABLE, HC_FAIL_NETWORK };
enum hc_phase { PH_IDLE, PH_HEAD, PH_BODY, PH_TCP };

struct hc_session {
	struct health_checker *hc;      /* not owned (parent) */
	struct host *h;                 /* ref */
	struct conn *conn;              /* owned, NULL when not connected */
	struct event *interval_ev;      /* owned */
	struct event *timeout_ev;       /* owned */
	enum hc_phase phase;
	bool first_check;               /* never had a result (Envoy first_check_) */
	bool warm_pending;              /* counts in hc->warm_pending */
	uint32_t nhealthy, nunhealthy;  /* consecutive results */
	/* HTTP response state */
	struct h1_scan scan;
	enum hc_result http_result;
	bool http_degraded;             /* the answer carried x-envoy-degraded */
	enum h1_body_kind body_kind;
	uint64_t body_left;
	size_t body_seen;
	bool keep_alive;
	struct h1_chunked chunked;
	bool chunked_init;
};

struct health_checker {
	struct cluster *cl;             /* not owned: the owner */
	const struct hc_cfg *cfg;       /* cl->hc_cfg */
	struct event_base *base;        /* not owned */
	struct hc_session **s;          /* owned [n] */
	size_t n;
	size_t warm_pending;            /* first-round checks not done */
	bool synced, warmed;
};

static void session_start_check(struct hc_session *s);

static void update_healthy_gauge(struct health_checker *hc)
{
	int64_t healthy = 0, degraded = 0;
	if (hc->cl->gauges_off)   /* a newer version of the cluster owns them */
		return;
	for (size_t i = 0; i < hc->n; i++) {
		int f = __atomic_load_n(&hc->s[i]->h->health_flags, __ATOMIC_RELAXED);
		if (!(f & HOST_FAILED_ACTIVE_HC)) {
			healthy++;
			degraded += !!(f & HOST_DEGRADED_ACTIVE_HC);
		}
	}
	stats_gauge_set(hc->cl->ext->hc_stats, HC_healthy, healthy);
	stats_gauge_set(hc->cl->ext->hc_stats, HC_degraded, degraded);
}

static void check_warmed(struct health_checker *hc)
{
	if (hc->warmed || !hc->synced || hc->warm_pending)
		return;
	hc->warmed = true;
	cluster_hc_warmed(hc->cl);
}

static void drop_conn(struct hc_session *s)
{
	conn_free(s->conn);
	s->conn = NULL;
	if (s->chunked_init) {
		h1_chunked_free(&s->chunked);
		s->chunked_init = false;
	}
}

static void arm(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(ev, &tv);
}

/* Envoy's interval choice: healthy hosts use interval, unhealthy ones
 * unhealthy_interval; a result that did not (yet) flip the state uses the
 * edge intervals.  Then jitter. */
static uint64_t next_interval(const struct hc_cfg *cfg, bool success, bool pending)
{
	uint64_t ms;
	if (success)
		ms = pending ? cfg->healthy_edge_ms : cfg->interval_ms;
	else
		ms = pending ? cfg->unhealthy_edge_ms : cfg->unhealthy_interval_ms;
	uint64_t pct = cfg->interval_jitter_percent * ms / 100;
	if (pct)
		ms += rand_u64() % pct;
	if (cfg->interval_jitter_ms)
		ms += rand_u64() % cfg->interval_jitter_ms;
	return ms;
}

/* One check ended: apply the result (Envoy's handleSuccess/handleFailure). */
static void session_done(struct hc_session *s, enum hc_result r, bool close)
{
	struct health_checker *hc = s->hc;
	const struct hc_cfg *cfg = hc->cfg;
	struct host *h = s->h;
	struct stats_scope *st = hc->cl->ext->hc_stats;
	bool failed = __atomic_load_n(&h->health_flags, __ATOMIC_RELAXED) & HOST_FAILED_ACTIVE_HC;
	bool pending = false, changed = false;

	evtimer_del(s->timeout_ev);
	s->phase = PH_IDLE;
	if (close || !cfg->reuse_connection)
		drop_conn(s);
	if (r == HC_OK) {
		s->nunhealthy = 0;
		stats_inc(st, 0, HC_success);
		/* Envoy: a passing answer with x-envoy-degraded marks the host
		 * degraded at once, one without it clears that (TCP: never). */
		bool was_degraded = __atomic_load_n(&h->health_flags, __ATOMIC_RELAXED) &
				    HOST_DEGRADED_ACTIVE_HC;
		bool degraded = cfg->kind == HC_HTTP && s->http_degraded;
		if (degraded != was_degraded) {
			if (degraded)
				__atomic_or_fetch(&h->health_flags, HOST_DEGRADED_ACTIVE_HC, __ATOMIC_RELAXED);
			else
				__atomic_and_fetch(&h->health_flags, ~HOST_DEGRADED_ACTIVE_HC,
						   __ATOMIC_RELAXED);
			changed = true;
			log_info("cluster '%s': host %s is %s (active health check)", hc->cl->name,
				 h->addr_str, degraded ? "degraded" : "no longer degraded");
		}
		if (failed) {
			if (s->first_check || ++s->nhealthy >= cfg->healthy_threshold) {
				__atomic_and_fetch(&h->health_flags, ~HOST_FAILED_ACTIVE_HC, __ATOMIC_RELAXED);
				s->nhealthy = 0;
				changed = true;
				log_info("cluster '%s': host %s is healthy (active health check)",
					 hc->cl->name, h->addr_str);
			} else {
				pending = true;
			}
		}
	} else {
		s->nhealthy = 0;
		stats_inc(st, 0, HC_failure);
		if (r == HC_FAIL_NETWORK)
			stats_inc(st, 0, HC_network_failure);
		if (!failed) {
			if (r == HC_FAIL_ACTIVE || ++s->nunhealthy >= cfg->unhealthy_threshold) {
				__atomic_or_fetch(&h->health_flags, HOST_FAILED_ACTIVE_HC, __ATOMIC_RELAXED);
				changed = true;
				log_warn("cluster '%s': host %s failed active health checking (%s)",
					 hc->cl->name, h->addr_str,
					 r == HC_FAIL_NETWORK ? "network failure or timeout" : "unexpected response");
			} else {
				pending = true;
			}
		}
	}
	s->first_check = false;
	arm(s->interval_ev, next_interval(cfg, r == HC_OK, pending));
	if (changed) {
		update_healthy_gauge(hc);
		cluster_republish(hc->cl);
	}
	if (s->warm_pending) {
		s->warm_pending = false;
		hc->warm_pending--;
		check_warmed(hc);
	}
}

/* HTTP: consume the response body; true when it is complete. */
static bool http_body(struct hc_session *s, struct evbuffer *in, bool *overflow)
{
	size_t avail = evbuffer_get_length(in);
	switch (s->body_kind) {
	case H1_BODY_NONE:
		return true;
	case H1_BODY_LENGTH: {
		size_t n = (size_t)MIN((uint64_t)avail, s->body_left);
		evbuffer_drain(in, n);
		s->body_left -= n;
		s->body_seen += n;
		return s->body_left == 0;
	}
	case H1_BODY_EOF:
		s->body_seen += avail;
		evbuffer_drain(in, avail);
		*overflow = s->body_seen > HC_MAX_BODY;
		return false;   /* ends at EOF */
	case H1_BODY_CHUNKED:
		while (avail && !s->chunked.done) {
			size_t n = MIN(avail, (size_t)4096), off, dlen;
			const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
			struct h1_error err;
			long used = h1_chunked_feed(&s->chunked, p, n, &off, &dlen, &err);
			if (used < 0) {
				*overflow = true;
				return false;
			}
			s->body_seen += dlen;
			evbuffer_drain(in, (size_t)used);
			avail -= (size_t)used;
			if (!used)
				break;
		}
		return s->chunked.done;
	}
	return true;
}

static void http_read(struct hc_session *s, struct evbuffer *in)
{
	if (s->phase == PH_HEAD) {
		size_t len = evbuffer_get_length(in);
		const char *p = (const char *)evbuffer_pullup(in, -1);
		long end = h1_head_end(&s->scan, p, len, HC_MAX_HEAD);
		if (end == 0)
			return;
		struct h1_head head = { 0 };
		struct h1_limits lim = { HC_MAX_HEAD, 100 };
		struct h1_error err;
		hdrs_init(&head.hdrs);
		if (end < 0 || h1_parse_head(H1_RESPONSE, p, (size_t)end, 0, &lim, &head, &err)) {
			hdrs_free(&head.hdrs);
			session_done(s, HC_FAIL_NETWORK, true);   /* protocol error */
			return;
		}
		s->http_degraded = hdrs_get(&head.hdrs, "x-envoy-degraded", NULL) != NULL;
		hdrs_free(&head.hdrs);
		evbuffer_drain(in, (size_t)end);
		if (head.status < 200) {   /* 1xx: wait for the final answer */
			memset(&s->scan, 0, sizeof(s->scan));
			if (evbuffer_get_length(in))
				http_read(s, in);
			return;
		}
		const struct hc_cfg *cfg = s->hc->cfg;
		if (hc_status_in(cfg->expected, cfg->nexpected, head.status))
			s->http_result = HC_OK;
		else if (hc_status_in(cfg->retriable, cfg->nretriable, head.status))
			s->http_result = HC_FAIL_RETRIABLE;
		else
			s->http_result = HC_FAIL_ACTIVE;
		s->keep_alive = head.keep_alive;
		s->body_kind = head.body;
		s->body_left = head.content_length;
		s->body_seen = 0;
		if (head.body == H1_BODY_CHUNKED) {
			struct h1_limits cl = { 4096, 100 };
			h1_chunked_init(&s->chunked, &cl);
			s->chunked_init = true;
		}
		if (head.body == H1_BODY_LENGTH && head.content_length > HC_MAX_BODY) {
			session_done(s, s->http_result, true);
			return;
		}
		s->phase = PH_BODY;
	}
	if (s->phase == PH_BODY) {
		bool overflow = false;
		bool complete = http_body(s, in, &overflow);
		if (overflow || s->body_seen > HC_MAX_BODY) {
			session_done(s, s->http_result, true);
		} else if (complete) {
			bool close = !s->keep_alive || evbuffer_get_length(in) > 0;
			if (s->chunked_init) {
				h1_chunked_free(&s->chunked);
				s->chunked_init = false;
			}
			session_done(s, s->http_result, close);
		}
	}
}

static void tcp_read(struct hc_session *s, struct evbuffer *in)
{
	const struct hc_cfg *cfg = s->hc->cfg;
	size_t len = evbuffer_get_length(in);
	if (s->phase != PH_TCP) {   /* bytes between checks are dropped */
		evbuffer_drain(in, len);
		return;
	}
	const uint8_t *p = evbuffer_pullup(in, -1);
	if (hc_tcp_match(cfg->receive, cfg->nreceive, p, len)) {
		evbuffer_drain(in, len);
		session_done(s, HC_OK, false);
	} else if (len > HC_MAX_RECV) {
		session_done(s, HC_FAIL_ACTIVE, true);
	}
}

static void on_read(struct conn *c, void *arg)
{
	struct hc_session *s = arg;
	struct evbuffer *in = conn_input(c);
	if (s->hc->cfg->kind == HC_TCP) {
		tcp_read(s, in);
	} else if (s->phase == PH_IDLE) {
		drop_conn(s);     /* unsolicited bytes on an idle HTTP connection */
	} else {
		http_read(s, in);
	}
}

static void on_event(struct conn *c, short what, void *arg)
{
	struct hc_session *s = arg;
	(void)c;
	if (what & CONN_CONNECTED) {
		if (s->hc->cfg->kind == HC_TCP && !s->hc->cfg->nreceive) {
			/* connect-only: success, and the connection is not kept (Envoy) */
			session_done(s, HC_OK, true);
		}
		return;
	}
	if (s->phase == PH_IDLE) {   /* an idle kept connection went away */
		drop_conn(s);
		return;
	}
	if ((what & CONN_EOF) && s->phase == PH_BODY && s->body_kind == H1_BODY_EOF) {
		session_done(s, s->http_result, true);
		return;
	}
	session_done(s, HC_FAIL_NETWORK, true);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct hc_session *s = arg;
	(void)fd;
	(void)what;
	session_done(s, HC_FAIL_NETWORK, true);
}

static void on_interval(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	session_start_check(arg);
}

static void session_start_check(struct hc_session *s)
{
	struct health_checker *hc = s->hc;
	const struct hc_cfg *cfg = hc->cfg;
	stats_inc(hc->cl->ext->hc_stats, 0, HC_attempt);
	arm(s->timeout_ev, cfg->timeout_ms);
	bool fresh = !s->conn;
	if (fresh) {
		s->conn = conn_new(hc->base, -1);
		conn_setcb(s->conn, on_read, NULL, on_event, s);
		conn_enable_read(s->conn);
		if (hc->cl->tls)   /* the cluster's transport socket, as Envoy */
			conn_set_tls(s->conn, hc->cl->tls, false, NULL);
		conn_connect(s->conn, (struct sockaddr *)&s->h->addr, s->h->addrlen);
	}
	if (cfg->kind == HC_HTTP) {
		s->phase = PH_HEAD;
		memset(&s->scan, 0, sizeof(s->scan));
		evbuffer_drain(conn_input(s->conn), evbuffer_get_length(conn_input(s->conn)));
		evbuffer_add(conn_output(s->conn), cfg->request, cfg->request_len);
	} else {
		s->phase = PH_TCP;
		evbuffer_drain(conn_input(s->conn), evbuffer_get_length(conn_input(s->conn)));
		if (cfg->send.len)
			evbuffer_add(conn_output(s->conn), cfg->send.data, cfg->send.len);
		if (!fresh && !cfg->nreceive)   /* cannot happen: connect-only never keeps */
			session_done(s, HC_OK, true);
	}
}

static struct hc_session *session_new(struct health_checker *hc, struct host *h)
{
	struct hc_session *s = xcalloc(1, sizeof(*s));
	s->hc = hc;
	s->h = host_ref(h);
	s->first_check = true;
	s->interval_ev = evtimer_new(hc->base, on_interval, s);
	s->timeout_ev = evtimer_new(hc->base, on_timeout, s);
	if (!s->interval_ev || !s->timeout_ev)
		die("evtimer_new");
	/* first check after initial_jitter (random in [0, initial_jitter)), never inline */
	arm(s->interval_ev, hc->cfg->initial_jitter_ms ? rand_u64() % hc->cfg->initial_jitter_ms : 0);
	return s;
}

static void session_free(struct hc_session *s)
{
	if (!s)
		return;
	drop_conn(s);
	event_free(s->interval_ev);
	event_free(s->timeout_ev);
	host_unref(s->h);
	free(s);
}

/* ---- checker ----------------------------------------------------------------------- */

struct health_checker *health_checker_new(struct cluster *cl, struct event_base *base)
{
	struct health_checker *hc = xcalloc(1, sizeof(*hc));
	hc->cl = cl;
	hc->cfg = cl->ext->hc_cfg;
	hc->base = base;
	return hc;
}

void health_checker_sync(struct health_checker *hc)
{
	const struct hostset *hs = hc->cl->hs;
	size_t n = hs ? hs->n : 0;
	struct hc_session **next = xcalloc(n ? n : 1, sizeof(*next));
	bool *kept = xcalloc(hc->n ? hc->n : 1, sizeof(*kept));

	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < hc->n && !next[i]; j++) {
			if (!kept[j] && hc->s[j]->h == hs->hosts[i]) {
				next[i] = hc->s[j];
				kept[j] = true;
			}
		}
		if (!next[i]) {
			next[i] = session_new(hc, hs->hosts[i]);
			if (!hc->warmed) {
				next[i]->warm_pending = true;
				hc->warm_pending++;
			}
		}
	}
	for (size_t j = 0; j < hc->n; j++) {
		if (kept[j])
			continue;
		if (hc->s[j]->warm_pending)
			hc->warm_pending--;
		session_free(hc->s[j]);
	}
	free(kept);
	free(hc->s);
	hc->s = next;
	hc->n = n;
	hc->synced = true;
	update_healthy_gauge(hc);
	check_warmed(hc);
}

bool health_checker_warmed(const struct health_checker *hc)
{
	return hc->warmed;
}

void health_checker_gauges(struct health_checker *hc)
{
	if (hc)
		update_healthy_gauge(hc);
}

void health_checker_free(struct health_checker *hc)
{
	if (!hc)
		return;
	for (size_t i = 0; i < hc->n; i++)
		session_free(hc->s[i]);
	free(hc->s);
	free(hc);
}
