/* fault_test.c - envoy.filters.http.fault: HTTPFault parsing (exact errors),
 * percentage arithmetic and the header-controlled decisions (fault.h).
 *
 * Configs are JSON text written with single quotes (turned into double
 * quotes before parsing) so they stay readable in C strings. */
#include "test.h"

#include <event2/buffer.h>
#include "filters/http/fault/fault.h"
#include "proxy/snapshot.h"
#include "proxy/http/headers.h"

static char last_err[1024];
static struct stats_store *store;

static struct fault_cfg *parse(const char *text)
{
	char *s = strdup(text);
	json_error_t je;
	struct cfg_ctx c;
	struct build_ctx b;

	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_t *j = json_loads(s, 0, &je);
	free(s);
	if (!j) {
		fprintf(stderr, "  test bug: bad JSON: %s\n", je.text);
		return NULL;
	}
	if (!store)
		store = stats_store_new(2);
	memset(&b, 0, sizeof(b));
	b.stats = store;
	b.http_stat_prefix = "ingress";
	cfg_init(&c, NULL, NULL);
	struct fault_cfg *cfg = fault_filter_ops.parse_config(&c, j, &b);
	snprintf(last_err, sizeof(last_err), "%s", c.err);
	json_decref(j);
	return cfg;
}

static void expect_error(const char *text, const char *err)
{
	struct fault_cfg *cfg = parse(text);
	CHECK(cfg == NULL);
	CHECK_STR(last_err, err);
	fault_filter_ops.free_config(cfg);
}

TEST(fault_parse_full)
{
	struct fault_cfg *cfg = parse(
		"{'@type': '" FAULT_TYPE "',"
		" 'delay': {'fixed_delay': '0.25s', 'percentage': {'numerator': 5, 'denominator': 'TEN_THOUSAND'}},"
		" 'abort': {'http_status': 503, 'percentage': {'numerator': 50}},"
		" 'upstream_cluster': 'backend', 'maxActiveFaults': 7,"
		" 'headers': [{'name': 'x-chaos', 'exact_match': 'yes'}],"
		" 'delay_percent_runtime': 'a', 'abort_percent_runtime': 'b',"
		" 'delay_duration_runtime': 'c', 'abort_http_status_runtime': 'd',"
		" 'max_active_faults_runtime': 'e', 'response_rate_limit_percent_runtime': 'f',"
		" 'abort_grpc_status_runtime': 'g', 'disable_downstream_cluster_stats': true}");
	CHECK_STR(last_err, "");
	if (!cfg)
		return;
	CHECK_INT(cfg->delay, FAULT_DELAY_FIXED);
	CHECK_INT(cfg->delay_ms, 250);
	CHECK_INT(cfg->delay_pct.num, 5);
	CHECK_INT(cfg->delay_pct.denom, 10000);
	CHECK_INT(cfg->abort, FAULT_ABORT_HTTP);
	CHECK_INT(cfg->abort_http, 503);
	CHECK_INT(cfg->abort_pct.num, 50);
	CHECK_INT(cfg->abort_pct.denom, 100);
	CHECK_STR(cfg->upstream_cluster, "backend");
	CHECK(cfg->has_max_active);
	CHECK_INT(cfg->max_active, 7);
	CHECK(cfg->headers != NULL);
	CHECK_STR(cfg->stats->name, "http.ingress.fault");
	fault_filter_ops.free_config(cfg);
}

TEST(fault_parse_defaults)
{
	/* empty HTTPFault: injects nothing; absent percentage is 0% */
	struct fault_cfg *cfg = parse("{}");
	CHECK(cfg != NULL);
	if (cfg) {
		CHECK_INT(cfg->delay, FAULT_DELAY_NONE);
		CHECK_INT(cfg->abort, FAULT_ABORT_NONE);
		CHECK(!cfg->has_max_active);
		CHECK(cfg->upstream_cluster == NULL);
		fault_filter_ops.free_config(cfg);
	}
	cfg = parse("{'abort': {'grpc_status': 14}, 'delay': {'header_delay': {}}}");
	CHECK(cfg != NULL);
	if (cfg) {
		CHECK_INT(cfg->abort, FAULT_ABORT_GRPC);
		CHECK_INT(cfg->abort_grpc, 14);
		CHECK_INT(cfg->abort_pct.num, 0);
		CHECK_INT(cfg->delay, FAULT_DELAY_HEADER);
		CHECK_INT(cfg->delay_pct.num, 0);
		fault_filter_ops.free_config(cfg);
	}
}

TEST(fault_parse_errors)
{
	expect_error("{'abort': {'http_status': 600, 'percentage': {'numerator': 1}}}",
		     "abort.http_status: must be in 200..599");
	expect_error("{'abort': {'http_status': 199}}", "abort.http_status: must be in 200..599");
	expect_error("{'abort': {'percentage': {'numerator': 1}}}",
		     "abort: one of 'http_status', 'grpc_status' or 'header_abort' is required");
	expect_error("{'abort': {'http_status': 503, 'grpc_status': 2}}",
		     "abort: only one of 'http_status', 'grpc_status' or 'header_abort' may be set "
		     "('http_status' and 'grpc_status' are both set)");
	expect_error("{'abort': {'header_abort': {'x': 1}}}", "abort.header_abort.x: unknown field 'x'");
	expect_error("{'delay': {'fixed_delay': '0s'}}", "delay.fixed_delay: must be greater than 0s");
	expect_error("{'delay': {'percentage': {'numerator': 1}}}",
		     "delay: one of 'fixed_delay' or 'header_delay' is required");
	expect_error("{'delay': {'fixed_delay': '1s', 'type': 'FIXED'}}",
		     "delay.type: unknown field 'type'");
	expect_error("{'delay': {'fixed_delay': '1s', 'percentage': {'numerator': 1, 'denominator': 'THOUSAND'}}}",
		     "delay.percentage.denominator: unknown value 'THOUSAND' "
		     "(expected one of HUNDRED, TEN_THOUSAND, MILLION)");
	expect_error("{'downstream_nodes': ['a']}", "downstream_nodes: not supported yet");
	expect_error("{'response_rate_limit': {'fixed_limit': {'limit_kbps': 0}}}",
		     "response_rate_limit.fixed_limit.limit_kbps: must be in 1..2^40");
	expect_error("{'response_rate_limit': {'fixed_limit': {}}}",
		     "response_rate_limit.fixed_limit.limit_kbps: missing required field 'limit_kbps'");
	expect_error("{'response_rate_limit': {'percentage': {'numerator': 1}}}",
		     "response_rate_limit: one of 'fixed_limit' or 'header_limit' is required");
	expect_error("{'response_rate_limit': {'fixed_limit': {'limit_kbps': 1}, 'header_limit': {}}}",
		     "response_rate_limit: only one of 'fixed_limit' or 'header_limit' may be set "
		     "('fixed_limit' and 'header_limit' are both set)");
	expect_error("{'response_rate_limit': {'header_limit': {'kbps': 1}}}",
		     "response_rate_limit.header_limit.kbps: unknown field 'kbps'");
	expect_error("{'max_active_faults': -1}", "max_active_faults: expected an unsigned 32-bit integer");
	expect_error("{'headers': [{'name': 'x', 'bogus': 1}]}", "headers[0].bogus: unknown field 'bogus'");
	expect_error("{'fault': 1}", "fault: unknown field 'fault'");
}

static void set(struct http_headers *h, const char *name, const char *value)
{
	hdrs_set(h, name, value, strlen(value));
}

TEST(fault_percentage_arithmetic)
{
	struct fault_pct p = { 25, 100 };
	unsigned hits = 0;
	/* every residue class mod 100 once: exactly 25 hits */
	for (uint64_t r = 0; r < 100; r++)
		hits += fault_pct_hit(p, r + 100 * 12345);
	CHECK_INT(hits, 25);
	CHECK(fault_pct_hit(p, 24));
	CHECK(!fault_pct_hit(p, 25));
	CHECK(!fault_pct_hit((struct fault_pct){ 0, 100 }, 0));
	CHECK(fault_pct_hit((struct fault_pct){ 100, 100 }, 99));
	CHECK(fault_pct_hit((struct fault_pct){ 150, 100 }, UINT64_MAX));   /* num > denom: always */
	/* MILLION: 1 in a million */
	hits = 0;
	for (uint64_t r = 0; r < 2000000; r++)
		hits += fault_pct_hit((struct fault_pct){ 1, 1000000 }, r);
	CHECK_INT(hits, 2);
	CHECK(fault_pct_hit((struct fault_pct){ 5, 10000 }, 10000 * 7 + 4));
	CHECK(!fault_pct_hit((struct fault_pct){ 5, 10000 }, 10000 * 7 + 5));
}

TEST(fault_header_percentage)
{
	struct http_headers h;
	struct fault_pct base = { 50, 10000 }, p;
	hdrs_init(&h);
	p = fault_header_pct(base, &h, "x-envoy-fault-abort-request-percentage");
	CHECK_INT(p.num, 50);   /* absent: configured */
	set(&h, "x-envoy-fault-abort-request-percentage", "20");
	p = fault_header_pct(base, &h, "x-envoy-fault-abort-request-percentage");
	CHECK_INT(p.num, 20);
	CHECK_INT(p.denom, 10000);
	set(&h, "x-envoy-fault-abort-request-percentage", "80");
	p = fault_header_pct(base, &h, "x-envoy-fault-abort-request-percentage");
	CHECK_INT(p.num, 50);   /* min(header, configured) */
	set(&h, "x-envoy-fault-abort-request-percentage", "1x");
	p = fault_header_pct(base, &h, "x-envoy-fault-abort-request-percentage");
	CHECK_INT(p.num, 50);   /* malformed: configured */
	set(&h, "x-envoy-fault-abort-request-percentage", "-1");
	p = fault_header_pct(base, &h, "x-envoy-fault-abort-request-percentage");
	CHECK_INT(p.num, 50);
	set(&h, "x-envoy-fault-abort-request-percentage", " 0 ");
	p = fault_header_pct(base, &h, "x-envoy-fault-abort-request-percentage");
	CHECK_INT(p.num, 0);
	hdrs_free(&h);
}

TEST(fault_header_values)
{
	struct http_headers h;
	uint64_t v = 7;
	hdrs_init(&h);
	CHECK(!fault_header_u64(&h, "x", 100, &v));
	set(&h, "x", "100");
	CHECK(fault_header_u64(&h, "x", 100, &v) && v == 100);
	set(&h, "x", "101");
	CHECK(!fault_header_u64(&h, "x", 100, &v));
	set(&h, "x", "");
	CHECK(!fault_header_u64(&h, "x", 100, &v));
	set(&h, "x", "99999999999999999999999");
	CHECK(!fault_header_u64(&h, "x", UINT64_MAX, &v));
	set(&h, "x", "18446744073709551615");
	CHECK(fault_header_u64(&h, "x", UINT64_MAX, &v) && v == UINT64_MAX);
	/* only the first value counts */
	hdrs_del(&h, "x");
	hdrs_add_cstr(&h, "x", "3");
	hdrs_add_cstr(&h, "x", "4");
	CHECK(fault_header_u64(&h, "x", 100, &v) && v == 3);
	hdrs_free(&h);
}

TEST(fault_header_abort_and_delay)
{
	struct fault_cfg *cfg = parse("{'abort': {'header_abort': {}, 'percentage': {'numerator': 100}},"
				      " 'delay': {'header_delay': {}, 'percentage': {'numerator': 100}}}");
	struct http_headers h;
	int grpc;
	if (!cfg)
		return;
	hdrs_init(&h);
	/* no headers: nothing */
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 0);
	CHECK_INT(fault_delay_ms(cfg, &h, 0), 0);
	set(&h, "x-envoy-fault-abort-request", "429");
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 429);
	CHECK_INT(grpc, -1);
	set(&h, "x-envoy-fault-abort-request", "600");
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 0);
	set(&h, "x-envoy-fault-abort-request", "199");
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 0);
	hdrs_del(&h, "x-envoy-fault-abort-request");
	set(&h, "x-envoy-fault-abort-grpc-request", "14");
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 200);
	CHECK_INT(grpc, 14);
	/* the HTTP header wins over the gRPC one */
	set(&h, "x-envoy-fault-abort-request", "503");
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 503);
	/* percentage header 0: never */
	set(&h, "x-envoy-fault-abort-request-percentage", "0");
	CHECK_INT(fault_abort_status(cfg, &h, 0, &grpc), 0);
	set(&h, "x-envoy-fault-delay-request", "1500");
	CHECK_INT(fault_delay_ms(cfg, &h, 0), 1500);
	set(&h, "x-envoy-fault-delay-request-percentage", "10");
	CHECK_INT(fault_delay_ms(cfg, &h, 9), 1500);
	CHECK_INT(fault_delay_ms(cfg, &h, 10), 0);
	set(&h, "x-envoy-fault-delay-request", "0");
	CHECK_INT(fault_delay_ms(cfg, &h, 0), 0);
	set(&h, "x-envoy-fault-delay-request", "abc");
	CHECK_INT(fault_delay_ms(cfg, &h, 0), 0);
	hdrs_free(&h);
	fault_filter_ops.free_config(cfg);
}

TEST(fault_fixed_ignores_headers)
{
	struct fault_cfg *cfg = parse("{'abort': {'http_status': 418, 'percentage': {'numerator': 100}},"
				      " 'delay': {'fixed_delay': '2s', 'percentage': {'numerator': 30}}}");
	struct http_headers h;
	int grpc;
	if (!cfg)
		return;
	hdrs_init(&h);
	set(&h, "x-envoy-fault-abort-request", "503");
	set(&h, "x-envoy-fault-abort-request-percentage", "0");
	set(&h, "x-envoy-fault-delay-request", "10");
	set(&h, "x-envoy-fault-delay-request-percentage", "0");
	CHECK_INT(fault_abort_status(cfg, &h, 5, &grpc), 418);
	CHECK_INT(fault_delay_ms(cfg, &h, 29), 2000);
	CHECK_INT(fault_delay_ms(cfg, &h, 30), 0);
	hdrs_free(&h);
	fault_filter_ops.free_config(cfg);
}

TEST(fault_stats_prometheus_names)
{
	struct fault_cfg *cfg = parse("{'abort': {'http_status': 503}}");
	struct evbuffer *out = evbuffer_new();
	char err[128];
	if (!cfg)
		return;
	stats_inc(cfg->stats, 1, aborts_injected);
	stats_render_prometheus(store, out, NULL, false, err, sizeof(err));
	evbuffer_add(out, "", 1);
	const char *text = (const char *)evbuffer_pullup(out, -1);
	CHECK_CONTAINS(text, "envoy_http_fault_aborts_injected{envoy_http_conn_manager_prefix=\"ingress\"} 1");
	CHECK_CONTAINS(text, "# TYPE envoy_http_fault_active_faults gauge");
	evbuffer_drain(out, evbuffer_get_length(out));
	stats_render_text(store, out, NULL, false, err, sizeof(err));
	evbuffer_add(out, "", 1);
	text = (const char *)evbuffer_pullup(out, -1);
	CHECK_CONTAINS(text, "http.ingress.fault.aborts_injected: 1");
	evbuffer_free(out);
	fault_filter_ops.free_config(cfg);
}

TEST(fault_response_rate_limit_decision)
{
	struct http_headers h;
	struct fault_cfg *cfg = parse("{'response_rate_limit': {'fixed_limit': {'limit_kbps': 100},"
				      " 'percentage': {'numerator': 30}}}");
	CHECK(cfg != NULL);
	if (!cfg)
		return;
	hdrs_init(&h);
	CHECK_INT(cfg->rl, FAULT_RL_FIXED);
	CHECK_INT(fault_response_kbps(cfg, &h, 29), 100);
	CHECK_INT(fault_response_kbps(cfg, &h, 30), 0);
	set(&h, "x-envoy-fault-throughput-response", "5");   /* ignored: fixed */
	CHECK_INT(fault_response_kbps(cfg, &h, 129), 100);
	fault_filter_ops.free_config(cfg);
	hdrs_free(&h);

	/* absent percentage: 0 %, never */
	cfg = parse("{'response_rate_limit': {'fixed_limit': {'limit_kbps': 100}}}");
	hdrs_init(&h);
	CHECK_INT(fault_response_kbps(cfg, &h, 0), 0);
	fault_filter_ops.free_config(cfg);
	hdrs_free(&h);

	cfg = parse("{'response_rate_limit': {'header_limit': {}, 'percentage': {'numerator': 100}}}");
	hdrs_init(&h);
	CHECK_INT(cfg->rl, FAULT_RL_HEADER);
	CHECK_INT(fault_response_kbps(cfg, &h, 0), 0);          /* no header: none */
	set(&h, "x-envoy-fault-throughput-response", "250");
	CHECK_INT(fault_response_kbps(cfg, &h, 99), 250);
	set(&h, "x-envoy-fault-throughput-response-percentage", "10");
	CHECK_INT(fault_response_kbps(cfg, &h, 9), 250);
	CHECK_INT(fault_response_kbps(cfg, &h, 10), 0);
	hdrs_free(&h);
	hdrs_init(&h);
	set(&h, "x-envoy-fault-throughput-response", "fast");
	CHECK_INT(fault_response_kbps(cfg, &h, 0), 0);
	fault_filter_ops.free_config(cfg);
	hdrs_free(&h);
}
