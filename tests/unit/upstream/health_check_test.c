/* health_check_test.c - health_checks config parsing (exact error paths), the
 * TCP payload matcher and status ranges (proxy/upstream/health_check.h). */
#include "test.h"

#include "proxy/upstream/health_check.h"

/* Parse {"health_checks": <list>} (JSON text); returns the config or NULL
 * with the error in err. */
static struct hc_cfg *parse(const char *json, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_loads(json, 0, &je);
	struct cfg_ctx c;
	struct hc_cfg *cfg = NULL;
	if (!root) {
		snprintf(err, errlen, "bad test json: %s", je.text);
		return NULL;
	}
	cfg_init(&c, NULL, NULL);
	const json_t *l = cfg_enter(&c, root, "health_checks");
	int rc = hc_parse(&c, l, "backend", &cfg);
	cfg_leave(&c);
	snprintf(err, errlen, "%s", c.err);
	json_decref(root);
	if (rc) {
		CHECK(cfg == NULL);
		return NULL;
	}
	return cfg;
}

#define BASE "\"timeout\": \"1s\", \"interval\": \"0.5s\", \"unhealthy_threshold\": 3, " \
	     "\"healthy_threshold\": 2"

static void expect_error(const char *json, const char *msg)
{
	char err[1024];
	struct hc_cfg *cfg = parse(json, err, sizeof(err));
	CHECK(cfg == NULL);
	CHECK_STR(err, msg);
	hc_cfg_free(cfg);
}

TEST(hc_parse_http_defaults)
{
	char err[1024];
	struct hc_cfg *cfg = parse("{\"health_checks\": [{" BASE ", \"http_health_check\": "
				   "{\"path\": \"/healthz\"}}]}", err, sizeof(err));
	CHECK(cfg != NULL);
	if (!cfg)
		return;
	CHECK_INT(cfg->kind, HC_HTTP);
	CHECK_INT(cfg->timeout_ms, 1000);
	CHECK_INT(cfg->interval_ms, 500);
	CHECK_INT(cfg->unhealthy_interval_ms, 500);
	CHECK_INT(cfg->unhealthy_edge_ms, 500);
	CHECK_INT(cfg->healthy_edge_ms, 500);
	CHECK_INT(cfg->unhealthy_threshold, 3);
	CHECK_INT(cfg->healthy_threshold, 2);
	CHECK(cfg->reuse_connection);
	CHECK_INT(cfg->nexpected, 1);
	CHECK(hc_status_in(cfg->expected, cfg->nexpected, 200));
	CHECK(!hc_status_in(cfg->expected, cfg->nexpected, 201));
	CHECK(!hc_status_in(cfg->expected, cfg->nexpected, 503));
	CHECK_STR(cfg->request, "GET /healthz HTTP/1.1\r\nhost: backend\r\nuser-agent: Envoy/HC\r\n\r\n");
	hc_cfg_free(cfg);
}

TEST(hc_parse_http_headers_and_ranges)
{
	char err[1024];
	struct hc_cfg *cfg = parse(
		"{\"health_checks\": [{" BASE ", \"reuse_connection\": false, "
		"\"unhealthy_interval\": \"2s\", \"unhealthy_edge_interval\": \"3s\", "
		"\"healthy_edge_interval\": \"4s\", \"no_traffic_interval\": \"10s\", "
		"\"interval_jitter\": \"0.1s\", \"interval_jitter_percent\": 10, \"initial_jitter\": \"1s\", "
		"\"http_health_check\": {\"path\": \"/h\", \"host\": \"svc.local\", "
		"\"request_headers_to_remove\": [\"User-Agent\"], "
		"\"request_headers_to_add\": [{\"header\": {\"key\": \"X-A\", \"value\": \"1\"}}, "
		"{\"header\": {\"key\": \"x-a\", \"value\": \"2\"}, \"append\": false}, "
		"{\"header\": {\"key\": \"x-b\", \"value\": \"3\"}, \"append_action\": \"ADD_IF_ABSENT\"}, "
		"{\"header\": {\"key\": \"x-b\", \"value\": \"4\"}, \"append_action\": \"ADD_IF_ABSENT\"}], "
		"\"expected_statuses\": [{\"start\": 200, \"end\": 300}, {\"start\": \"404\", \"end\": 405}], "
		"\"retriable_statuses\": [{\"start\": 503, \"end\": 504}]}}]}", err, sizeof(err));
	CHECK(cfg != NULL);
	if (!cfg) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	CHECK(!cfg->reuse_connection);
	CHECK_INT(cfg->unhealthy_interval_ms, 2000);
	CHECK_INT(cfg->unhealthy_edge_ms, 3000);
	CHECK_INT(cfg->healthy_edge_ms, 4000);
	CHECK_INT(cfg->interval_jitter_ms, 100);
	CHECK_INT(cfg->interval_jitter_percent, 10);
	CHECK_INT(cfg->initial_jitter_ms, 1000);
	CHECK(hc_status_in(cfg->expected, cfg->nexpected, 299));
	CHECK(hc_status_in(cfg->expected, cfg->nexpected, 404));
	CHECK(!hc_status_in(cfg->expected, cfg->nexpected, 300));
	CHECK(!hc_status_in(cfg->expected, cfg->nexpected, 405));
	CHECK(hc_status_in(cfg->retriable, cfg->nretriable, 503));
	/* no user-agent; x-a overwritten; x-b added once; connection: close
	 * because the connection is not reused */
	CHECK_STR(cfg->request, "GET /h HTTP/1.1\r\nhost: svc.local\r\nx-a: 2\r\nx-b: 3\r\n"
		  "connection: close\r\n\r\n");
	hc_cfg_free(cfg);
}

TEST(hc_parse_tcp_payloads)
{
	char err[1024];
	struct hc_cfg *cfg = parse("{\"health_checks\": [{" BASE ", \"tcp_health_check\": "
				   "{\"send\": {\"text\": \"0001FFab\"}, \"receive\": "
				   "[{\"binary\": \"aGVsbG8=\"}, {\"binary\": \"d29ybGQ\"}]}}]}",
				   err, sizeof(err));
	CHECK(cfg != NULL);
	if (!cfg)
		return;
	CHECK_INT(cfg->kind, HC_TCP);
	CHECK_INT(cfg->send.len, 4);
	CHECK(!memcmp(cfg->send.data, "\x00\x01\xff\xab", 4));
	CHECK_INT(cfg->nreceive, 2);
	CHECK_INT(cfg->receive[0].len, 5);
	CHECK(!memcmp(cfg->receive[0].data, "hello", 5));
	CHECK_INT(cfg->receive[1].len, 5);
	CHECK(!memcmp(cfg->receive[1].data, "world", 5));
	hc_cfg_free(cfg);
	/* connect-only */
	cfg = parse("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {}}]}", err, sizeof(err));
	CHECK(cfg && cfg->nreceive == 0 && cfg->send.len == 0);
	hc_cfg_free(cfg);
	/* empty list: no checker */
	cfg = parse("{\"health_checks\": []}", err, sizeof(err));
	CHECK(cfg == NULL);
	CHECK_STR(err, "");
}

TEST(hc_parse_errors)
{
	expect_error("{\"health_checks\": {}}", "health_checks: expected a list");
	expect_error("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {}}, {}]}",
		     "health_checks[1]: more than one health check per cluster is not supported yet");
	expect_error("{\"health_checks\": [{\"interval\": \"1s\", \"unhealthy_threshold\": 1, "
		     "\"healthy_threshold\": 1, \"tcp_health_check\": {}}]}",
		     "health_checks[0].timeout: missing required field 'timeout'");
	expect_error("{\"health_checks\": [{\"timeout\": \"1s\", \"interval\": \"1s\", "
		     "\"unhealthy_threshold\": 1, \"tcp_health_check\": {}}]}",
		     "health_checks[0].healthy_threshold: missing required field 'healthy_threshold'");
	expect_error("{\"health_checks\": [{" BASE "}]}",
		     "health_checks[0]: one of http_health_check, tcp_health_check is required");
	expect_error("{\"health_checks\": [{" BASE ", \"grpc_health_check\": {}}]}",
		     "health_checks[0].grpc_health_check: not supported yet");
	expect_error("{\"health_checks\": [{" BASE ", \"event_log_path\": \"/tmp/x\", \"tcp_health_check\": {}}]}",
		     "health_checks[0].event_log_path: not supported yet");
	expect_error("{\"health_checks\": [{" BASE ", \"bogus\": 1, \"tcp_health_check\": {}}]}",
		     "health_checks[0].bogus: unknown field 'bogus'");
	expect_error("{\"health_checks\": [{\"timeout\": \"0s\", \"interval\": \"1s\", "
		     "\"unhealthy_threshold\": 1, \"healthy_threshold\": 1, \"tcp_health_check\": {}}]}",
		     "health_checks[0].timeout: must be greater than 0");
	expect_error("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {}, "
		     "\"http_health_check\": {\"path\": \"/\"}}]}",
		     "health_checks[0].tcp_health_check: only one of http_health_check, tcp_health_check may be set");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {}}]}",
		     "health_checks[0].http_health_check.path: missing required field 'path'");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"a b\"}}]}",
		     "health_checks[0].http_health_check.path: expected an origin-form path ('/...') "
		     "without spaces or controls");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"/\", "
		     "\"codec_client_type\": \"HTTP2\"}}]}",
		     "health_checks[0].http_health_check.codec_client_type: only HTTP1 health checks "
		     "are supported yet");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"/\", "
		     "\"receive\": [{\"text\": \"00\"}]}}]}",
		     "health_checks[0].http_health_check.receive: not supported yet");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"/\", "
		     "\"expected_statuses\": [{\"start\": 300, \"end\": 200}]}}]}",
		     "health_checks[0].http_health_check.expected_statuses[0]: expected 100 <= start "
		     "< end <= 600");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"/\", "
		     "\"request_headers_to_add\": [{\"header\": {\"key\": \"bad key\", \"value\": \"v\"}}]}}]}",
		     "health_checks[0].http_health_check.request_headers_to_add[0].header.key: "
		     "invalid header name 'bad key'");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"/\", "
		     "\"request_headers_to_add\": [{\"header\": {\"key\": \"x\", \"value\": \"a\\r\\nb\"}}]}}]}",
		     "health_checks[0].http_health_check.request_headers_to_add[0].header.value: "
		     "invalid character in header value");
	expect_error("{\"health_checks\": [{" BASE ", \"http_health_check\": {\"path\": \"/\", "
		     "\"request_headers_to_add\": [{\"header\": {\"key\": \"Host\", \"value\": \"x\"}}]}}]}",
		     "health_checks[0].http_health_check.request_headers_to_add[0].header.key: "
		     "setting 'Host' on health check requests is not supported");
	expect_error("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {\"send\": {\"text\": \"abc\"}}}]}",
		     "health_checks[0].tcp_health_check.send.text: expected an even number of hex digits");
	expect_error("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {\"send\": {\"text\": \"zz\"}}}]}",
		     "health_checks[0].tcp_health_check.send.text: expected an even number of hex digits");
	expect_error("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {\"receive\": [{}, "
		     "{\"binary\": \"!!\"}]}}]}",
		     "health_checks[0].tcp_health_check.receive[0]: exactly one of 'text', 'binary' is required");
	expect_error("{\"health_checks\": [{" BASE ", \"tcp_health_check\": {\"receive\": [{\"binary\": \"!!\"}]}}]}",
		     "health_checks[0].tcp_health_check.receive[0].binary: invalid base64");
}

static struct hc_bytes seg(const char *s)
{
	return (struct hc_bytes){ (uint8_t *)s, strlen(s) };
}

TEST(hc_tcp_matcher)
{
	struct hc_bytes two[2] = { seg("hel"), seg("lo") };
	const uint8_t *buf = (const uint8_t *)"xxhelloyy";
	CHECK(hc_tcp_match(two, 2, buf, 9));
	CHECK(hc_tcp_match(two, 0, buf, 0));                  /* nothing expected */
	CHECK(!hc_tcp_match(two, 2, (const uint8_t *)"hel", 3));      /* incomplete */
	CHECK(!hc_tcp_match(two, 2, (const uint8_t *)"lohel", 5));    /* wrong order */
	/* each segment is searched after the end of the previous match */
	struct hc_bytes overlap[2] = { seg("abc"), seg("cd") };
	CHECK(!hc_tcp_match(overlap, 2, (const uint8_t *)"abcd", 4));
	CHECK(hc_tcp_match(overlap, 2, (const uint8_t *)"abccd", 5));
	/* repeated segment needs two occurrences */
	struct hc_bytes rep[2] = { seg("ok"), seg("ok") };
	CHECK(!hc_tcp_match(rep, 2, (const uint8_t *)"ok", 2));
	CHECK(hc_tcp_match(rep, 2, (const uint8_t *)"ok-ok", 5));
	/* binary with NULs */
	struct hc_bytes bin[1] = { { (uint8_t *)"\x00\x01", 2 } };
	CHECK(hc_tcp_match(bin, 1, (const uint8_t *)"\xff\x00\x01", 3));
	CHECK(!hc_tcp_match(bin, 1, (const uint8_t *)"\x00\x02", 2));
}
