/* tracer_test.c - HCM tracing config, the request-path decision and
 * header rewrite, and the rendered Zipkin / OTLP spans. */
#include <jansson.h>
#include <event2/buffer.h>
#include "test.h"
#include "proxy/config/cfg.h"
#include "proxy/snapshot.h"
#include "proxy/http/headers.h"
#include "stats/stats.h"
#include "stats/tracer.h"

static struct stats_store *store;

static struct trace_cfg *parse(const char *hcm_json, char *err, size_t errlen)
{
	struct cfg_ctx c;
	struct build_ctx b = { .stats = store, .nworkers = 1 };
	json_t *j = json_loads(hcm_json, 0, NULL);
	struct trace_cfg *tc = NULL;
	cfg_init(&c, NULL, NULL);
	if (!store)
		store = stats_store_new(2);
	b.stats = store;
	int rc = trace_cfg_parse(&c, j, &b, "ingress", &tc);
	if (rc && err)
		snprintf(err, errlen, "%s", c.err);
	json_decref(j);
	return rc ? NULL : tc;
}

#define ZIPKIN "\"provider\":{\"name\":\"envoy.tracers.zipkin\",\"typed_config\":{" \
	"\"@type\":\"type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\"," \
	"\"collector_cluster\":\"zipkin\",\"collector_endpoint\":\"/api/v2/spans\"}}"

static json_t *render(struct trace_cfg *tc, size_t *n)
{
	struct evbuffer *o = evbuffer_new();
	evbuffer_add(o, "[", 1);
	*n = tracer_render_pending(tc, o);
	evbuffer_add(o, "]", 1);
	size_t len = evbuffer_get_length(o);
	char *txt = (char *)evbuffer_pullup(o, -1);
	json_error_t e;
	json_t *j = json_loadb(txt, len, 0, &e);
	if (!j)
		fprintf(stderr, "  not JSON: %s: %.*s\n", e.text, (int)len, txt);
	evbuffer_free(o);
	return j;
}

static struct trace_end end_of(const struct http_headers *h, int status)
{
	struct trace_end e = { .req = h, .protocol = "HTTP/1.1", .status = status,
			       .up_cluster = "backend", .up_host = "127.0.0.1:9",
			       .start_ns = now_ns() - 2000000 };
	return e;
}

TEST(tracer_continues_b3_shared_span)
{
	struct trace_cfg *tc = parse("{\"tracing\":{" ZIPKIN ",\"custom_tags\":[{\"tag\":\"t\","
				     "\"request_header\":{\"name\":\"X-T\",\"default_value\":\"d\"}}]}}",
				     NULL, 0);
	CHECK(tc != NULL);
	if (!tc)
		return;
	struct http_headers h;
	struct trace_state ts = { 0 };
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":method", "GET");
	hdrs_add_cstr(&h, ":authority", "svc");
	hdrs_add_cstr(&h, ":path", "/a?b=\"c\"");
	hdrs_add_cstr(&h, "x-request-id", "rid-1");
	hdrs_add_cstr(&h, "x-b3-traceid", "463ac35c9f6413ad");
	hdrs_add_cstr(&h, "x-b3-spanid", "a2fb4a1d1a96d312");
	hdrs_add_cstr(&h, "x-b3-sampled", "1");
	trace_begin(tc, &ts, &h, false, true, 0);
	CHECK(ts.active && ts.sampled && ts.shared);
	CHECK(ts.span_id == 0xa2fb4a1d1a96d312ull && ts.parent_id == 0);
	CHECK_STR(hdrs_get(&h, "x-b3-spanid", NULL), "a2fb4a1d1a96d312");
	CHECK(hdrs_get(&h, "x-b3-parentspanid", NULL) == NULL);
	struct trace_end e = end_of(&h, 503);
	trace_finish(tc, &ts, &e, 0, 0);
	size_t n = 0;
	json_t *j = render(tc, &n);
	CHECK_INT(n, 1);
	json_t *s = json_array_get(j, 0);
	CHECK_STR(json_string_value(json_object_get(s, "traceId")), "463ac35c9f6413ad");
	CHECK_STR(json_string_value(json_object_get(s, "id")), "a2fb4a1d1a96d312");
	CHECK_STR(json_string_value(json_object_get(s, "kind")), "SERVER");
	CHECK(json_is_true(json_object_get(s, "shared")));
	CHECK(json_integer_value(json_object_get(s, "duration")) >= 2000);
	json_t *tags = json_object_get(s, "tags");
	CHECK_STR(json_string_value(json_object_get(tags, "http.url")), "http://svc/a?b=\"c\"");
	CHECK_STR(json_string_value(json_object_get(tags, "http.status_code")), "503");
	CHECK_STR(json_string_value(json_object_get(tags, "error")), "true");
	CHECK_STR(json_string_value(json_object_get(tags, "t")), "d");
	CHECK_STR(json_string_value(json_object_get(tags, "guid:x-request-id")), "rid-1");
	CHECK_STR(json_string_value(json_object_get(s, "name")), "svc/a");
	json_decref(j);
	hdrs_free(&h);
	trace_cfg_free(tc);
}

TEST(tracer_sampling_zero_propagates_not_sampled)
{
	struct trace_cfg *tc = parse("{\"tracing\":{" ZIPKIN ",\"random_sampling\":{\"value\":0}}}", NULL, 0);
	CHECK(tc != NULL);
	if (!tc)
		return;
	struct http_headers h;
	struct trace_state ts = { 0 };
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":path", "/");
	hdrs_add_cstr(&h, "b3", "0");   /* sampling-only b3: rewritten with ids */
	trace_begin(tc, &ts, &h, false, false, 0);
	CHECK(ts.active && !ts.sampled && !ts.shared && ts.parent_id == 0);
	CHECK_STR(hdrs_get(&h, "x-b3-sampled", NULL), "0");
	size_t bn;
	const char *b3 = hdrs_get(&h, "b3", &bn);
	CHECK(b3 && bn == 16 + 1 + 16 + 2 && b3[bn - 1] == '0');
	struct trace_end e = end_of(&h, 200);
	trace_finish(tc, &ts, &e, 0, 0);
	size_t n = 1;
	json_t *j = render(tc, &n);
	CHECK_INT(n, 0);
	json_decref(j);
	hdrs_free(&h);
	trace_cfg_free(tc);
}

TEST(tracer_otlp_render)
{
	struct trace_cfg *tc = parse("{\"tracing\":{\"provider\":{\"name\":\"envoy.tracers.opentelemetry\","
				     "\"typed_config\":{\"@type\":\"type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\","
				     "\"http_service\":{\"http_uri\":{\"uri\":\"http://c:4318/v1/traces\",\"cluster\":\"c\","
				     "\"timeout\":\"1s\"}}}},\"spawn_upstream_span\":true}}", NULL, 0);
	CHECK(tc != NULL);
	if (!tc)
		return;
	struct http_headers h;
	struct trace_state ts = { 0 };
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":path", "/x");
	hdrs_add_cstr(&h, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	trace_begin(tc, &ts, &h, false, true, 0);
	CHECK(ts.parent_id == 0x00f067aa0ba902b7ull && ts.up_span_id && !ts.shared);
	const char *tp = hdrs_get(&h, "traceparent", NULL);
	char want[17];
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)ts.up_span_id);
	CHECK(tp && !strncmp(tp + 36, want, 16));
	trace_upstream_start(&ts);
	struct trace_end e = end_of(&h, 200);
	trace_finish(tc, &ts, &e, 0, 0);
	size_t n = 0;
	json_t *j = render(tc, &n);
	CHECK_INT(n, 2);
	json_t *s = json_array_get(j, 0), *u = json_array_get(j, 1);
	CHECK_STR(json_string_value(json_object_get(s, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK_STR(json_string_value(json_object_get(s, "parentSpanId")), "00f067aa0ba902b7");
	CHECK_INT(json_integer_value(json_object_get(s, "kind")), 2);
	CHECK_INT(json_integer_value(json_object_get(u, "kind")), 3);
	CHECK_STR(json_string_value(json_object_get(u, "parentSpanId")),
		  json_string_value(json_object_get(s, "spanId")));
	CHECK(json_is_string(json_object_get(s, "startTimeUnixNano")));
	json_decref(j);
	hdrs_free(&h);
	trace_cfg_free(tc);
}

TEST(tracer_config_errors)
{
	char err[1024];
	CHECK(!parse("{\"tracing\":{" ZIPKIN ",\"bogus\":1}}", err, sizeof(err)));
	CHECK_CONTAINS(err, "tracing.bogus: unknown field");
	CHECK(!parse("{\"tracing\":{" ZIPKIN ",\"verbose\":true}}", err, sizeof(err)));
	CHECK_CONTAINS(err, "tracing.verbose");
	CHECK(!parse("{\"tracing\":{" ZIPKIN ",\"overall_sampling\":{\"value\":-1}}}", err, sizeof(err)));
	CHECK_CONTAINS(err, "overall_sampling.value: must be in 0..100");
	CHECK(!parse("{\"tracing\":{\"provider\":{\"name\":\"envoy.tracers.datadog\",\"typed_config\":{}}}}",
		     err, sizeof(err)));
	CHECK_CONTAINS(err, "unsupported tracer");
	/* no provider: no tracing */
	err[0] = 0;
	CHECK(parse("{\"tracing\":{}}", err, sizeof(err)) == NULL);
	CHECK_STR(err, "");   /* accepted, nothing to trace */
	stats_store_free(store);
	store = NULL;
}

/* No incoming context (the common case: headers added, not searched for),
 * standard and custom tags through their encodings, escaping of quotes,
 * control and high bytes, and a span whose strings overflow the record
 * (tags that do not fit are left out; the rest stays valid JSON). */
TEST(tracer_fresh_context_tags_and_full_record)
{
	struct trace_cfg *tc = parse("{\"tracing\":{" ZIPKIN ",\"custom_tags\":[{\"tag\":\"q\\\"k\","
				     "\"literal\":{\"value\":\"v\\\\1\"}},{\"tag\":\"h\","
				     "\"request_header\":{\"name\":\"x-h\"}}]}}", NULL, 0);
	CHECK(tc != NULL);
	if (!tc)
		return;
	for (int round = 0; round < 2; round++) {
		struct http_headers h;
		struct trace_state ts = { 0 };
		char big[1200];
		hdrs_init(&h);
		hdrs_add_cstr(&h, ":method", "POST");
		hdrs_add_cstr(&h, ":authority", "svc");
		hdrs_add_cstr(&h, ":path", "/p");
		hdrs_add_cstr(&h, "user-agent", "ua\x01\xc3\xa9\"x\"");
		if (round == 1) {   /* fills the 1 KiB record before the custom tags */
			memset(big, 'a', sizeof(big) - 1);
			big[sizeof(big) - 1] = 0;
			hdrs_add_cstr(&h, "x-request-id", big + 269);   /* 930 bytes */
		}
		hdrs_add_cstr(&h, "x-h", "hv");
		trace_begin(tc, &ts, &h, false, true, 0);
		CHECK(ts.active && ts.sampled && !ts.shared && ts.parent_id == 0 && ts.span_id);
		size_t n;
		CHECK(hdrs_get(&h, "x-b3-traceid", &n) && n == 16);
		CHECK(hdrs_get(&h, "x-b3-spanid", &n) && n == 16);
		CHECK_STR(hdrs_get(&h, "x-b3-sampled", NULL), "1");
		CHECK(hdrs_get(&h, "x-b3-parentspanid", NULL) == NULL);
		CHECK(hdrs_get(&h, "traceparent", NULL) == NULL);
		CHECK(hdrs_get(&h, "b3", NULL) == NULL);
		struct trace_end e = end_of(&h, 0);   /* no response: error, status "" */
		trace_finish(tc, &ts, &e, 0, 0);
		json_t *j = render(tc, &n);
		CHECK_INT(n, 1);
		json_t *tags = json_object_get(json_array_get(j, 0), "tags");
		CHECK(tags != NULL);
		CHECK_STR(json_string_value(json_object_get(tags, "http.method")), "POST");
		CHECK_STR(json_string_value(json_object_get(tags, "user_agent")), "ua\x01??\"x\"");
		CHECK_STR(json_string_value(json_object_get(tags, "http.status_code")), "");
		if (round == 0) {
			CHECK_STR(json_string_value(json_object_get(tags, "error")), "true");
			CHECK_STR(json_string_value(json_object_get(tags, "component")), "proxy");
			CHECK_STR(json_string_value(json_object_get(tags, "response_flags")), "-");
			CHECK_STR(json_string_value(json_object_get(tags, "upstream_cluster")), "backend");
			CHECK_STR(json_string_value(json_object_get(tags, "q\"k")), "v\\1");
			CHECK_STR(json_string_value(json_object_get(tags, "h")), "hv");
		} else {
			const char *rid = json_string_value(json_object_get(tags, "guid:x-request-id"));
			CHECK_INT(rid ? strlen(rid) : 0, 930);
			/* the record is full: the later tags did not fit */
			CHECK(json_object_get(tags, "upstream_cluster") == NULL);
			CHECK(json_object_get(tags, "h") == NULL);
			CHECK(json_object_get(tags, "error") == NULL);
		}
		json_decref(j);
		hdrs_free(&h);
	}
	trace_cfg_free(tc);
}
