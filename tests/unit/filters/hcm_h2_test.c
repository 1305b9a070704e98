/* hcm_h2_test.c - pieces of the HTTP/2 downstream codec that need no socket:
 * preface detection (codec_type AUTO), Envoy's HTTP -> gRPC status mapping
 * for local replies, and the compiled http2_protocol_options. */
#include "test.h"
#include "proxy/http/grpc.h"
#include "bootstrap_helper.h"
#include "filters/network/http_connection_manager/hcm-t.h"

TEST(h2_preface_detection)
{
	static const char p[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	CHECK_INT(h2_preface_match(p, 24), 1);
	CHECK_INT(h2_preface_match(p, 1), -1);       /* could still be the preface */
	CHECK_INT(h2_preface_match(p, 23), -1);
	CHECK_INT(h2_preface_match("PRI * HTTP/1.1\r\n", 16), 0);
	CHECK_INT(h2_preface_match("GET / HTTP/1.1\r\n", 16), 0);
	CHECK_INT(h2_preface_match("P", 1), -1);
	CHECK_INT(h2_preface_match("POST", 4), 0);
}

TEST(grpc_status_mapping_is_envoys)
{
	CHECK_INT(grpc_status_from_http(400), 13);  /* INTERNAL */
	CHECK_INT(grpc_status_from_http(401), 16);  /* UNAUTHENTICATED */
	CHECK_INT(grpc_status_from_http(403), 7);   /* PERMISSION_DENIED */
	CHECK_INT(grpc_status_from_http(404), 12);  /* UNIMPLEMENTED */
	CHECK_INT(grpc_status_from_http(429), 14);  /* UNAVAILABLE */
	CHECK_INT(grpc_status_from_http(502), 14);
	CHECK_INT(grpc_status_from_http(503), 14);
	CHECK_INT(grpc_status_from_http(504), 14);
	CHECK_INT(grpc_status_from_http(500), 2);   /* UNKNOWN */
	CHECK_INT(grpc_status_from_http(408), 2);
	CHECK_INT(grpc_status_from_http(200), 2);
}

static const struct hcm_cfg *compile(const char *extra, struct snapshot **out, char *err, size_t n)
{
	*out = test_bootstrap_hcm("", extra, err, n);
	return *out ? (*out)->listeners[0]->chains[0].cfg : NULL;
}

TEST(http2_protocol_options_defaults_and_values)
{
	char err[1024];
	struct snapshot *s;
	const struct hcm_cfg *c = compile("generate_request_id: true", &s, err, sizeof(err));
	CHECK(c != NULL);
	if (c) {
		CHECK_INT(c->codec, HCM_CODEC_AUTO);
		CHECK_INT(c->h2.max_concurrent_streams, 2147483647);
		CHECK_INT(c->h2.initial_stream_window, 268435456);
		CHECK_INT(c->h2.initial_conn_window, 268435456);
		CHECK_INT(c->h2.hpack_table_size, 4096);
		CHECK_INT(c->h2.keepalive_interval_ms, 0);
		CHECK(!c->h2.allow_connect);
		CHECK(c->h2stats != NULL);
		test_bootstrap_done(s);
	}
	c = compile("codec_type: HTTP2\n          http2_protocol_options: {max_concurrent_streams: 9, "
		    "initial_stream_window_size: 70000, initial_connection_window_size: 80000, "
		    "hpack_table_size: 0, connection_keepalive: {interval: 2s, timeout: 0.5s, "
		    "interval_jitter: {value: 0}}, allow_connect: true}", &s, err, sizeof(err));
	CHECK(c != NULL);
	if (c) {
		CHECK_INT(c->codec, HCM_CODEC_HTTP2);
		CHECK_INT(c->h2.max_concurrent_streams, 9);
		CHECK_INT(c->h2.initial_stream_window, 70000);
		CHECK_INT(c->h2.initial_conn_window, 80000);
		CHECK_INT(c->h2.hpack_table_size, 0);
		CHECK_INT(c->h2.keepalive_interval_ms, 2000);
		CHECK_INT(c->h2.keepalive_timeout_ms, 500);
		CHECK_INT(c->h2.keepalive_jitter_pct, 0);
		CHECK(c->h2.allow_connect);
		test_bootstrap_done(s);
	}
	c = compile("codec_type: HTTP1", &s, err, sizeof(err));
	CHECK(c && c->codec == HCM_CODEC_HTTP1);
	if (c)
		test_bootstrap_done(s);
}

TEST(http2_protocol_options_errors_name_the_field)
{
	char err[1024];
	struct { const char *extra, *want; } cases[] = {
		{ "http2_protocol_options: {allow_metadata: true}",
		  "typed_config.http2_protocol_options.allow_metadata" },
		{ "http2_protocol_options: {custom_settings_parameters: []}",
		  "http2_protocol_options.custom_settings_parameters" },
		{ "http2_protocol_options: {initial_connection_window_size: 3000000000}",
		  "http2_protocol_options.initial_connection_window_size" },
		{ "http2_protocol_options: {connection_keepalive: {timeout: 1s, interval_jitter: {value: 101}}}",
		  "connection_keepalive.interval_jitter.value" },
		{ "http2_protocol_options: []", "typed_config.http2_protocol_options" },
		{ "http2_protocol_options: {allow_connect: 1}",
		  "typed_config.http2_protocol_options.allow_connect" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct snapshot *s = test_bootstrap_hcm("", cases[i].extra, err, sizeof(err));
		CHECK(s == NULL);
		if (s)
			test_bootstrap_done(s);
		CHECK_CONTAINS(err, cases[i].want);
	}
}
