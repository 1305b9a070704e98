/* access_log_format_test.c - the access-log format compiler and renderer,
 * the response flag strings and the access_log[] config (filters, errors). */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include "test.h"
#include "proxy/config/cfg.h"
#include "proxy/http/headers.h"
#include "stats/access_log.h"
#include "bootstrap_helper.h"

static char *render(const struct al_format *f, const struct al_record *r)
{
	struct al_buf b = { 0 };
	al_format_render(f, r, &b);
	char *s = xmalloc(b.len + 1);
	if (b.len)
		memcpy(s, b.p, b.len);
	s[b.len] = 0;
	al_buf_free(&b);
	return s;
}

static char *render_text(const char *fmt, bool omit, const struct al_record *r)
{
	char err[256];
	struct al_format *f = al_format_text(fmt, omit, err, sizeof(err));
	if (!f) {
		fprintf(stderr, "  compile error: %s\n", err);
		return xstrdup("<error>");
	}
	char *s = render(f, r);
	al_format_free(f);
	return s;
}

static struct http_headers req, resp, trl;
static struct sockaddr_in peer, local;

static struct al_record sample(void)
{
	hdrs_init(&req);
	hdrs_init(&resp);
	hdrs_init(&trl);
	hdrs_add_cstr(&req, ":method", "GET");
	hdrs_add_cstr(&req, ":path", "/a/b?c=d");
	hdrs_add_cstr(&req, ":authority", "svc.local");
	hdrs_add_cstr(&req, "user-agent", "curl/8");
	hdrs_add_cstr(&req, "x-request-id", "rid");
	hdrs_add_cstr(&resp, "x-envoy-upstream-service-time", "12");
	hdrs_add_cstr(&resp, "content-type", "text/plain");
	hdrs_add_cstr(&trl, "grpc-status", "0");
	peer.sin_family = AF_INET;
	peer.sin_port = htons(40000);
	inet_pton(AF_INET, "10.1.2.3", &peer.sin_addr);
	local.sin_family = AF_INET;
	local.sin_port = htons(10000);
	inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
	struct al_record r = {
		.req = &req, .resp = &resp, .trailers = &trl, .protocol = "HTTP/1.1",
		.response_code = 200, .details = "via_upstream", .flags = 0,
		.bytes_received = 5, .bytes_sent = 1234,
		/* 2016-04-15T20:17:00.310Z */
		.start_wall_ns = 1460751420ull * 1000000000ull + 310123456ull,
		.duration_ns = 15900000, .request_duration_ns = 1000000, .response_duration_ns = -1,
		.upstream_host = "127.0.0.1:8080", .upstream_cluster = "backend",
		.downstream_remote = (const struct sockaddr *)&peer,
		.downstream_local = (const struct sockaddr *)&local,
		.route_name = "r1", .connection_id = 42, .attempts = 2,
	};
	return r;
}

static void done(void)
{
	hdrs_free(&req);
	hdrs_free(&resp);
	hdrs_free(&trl);
}

TEST(default_format_exact)
{
	struct al_record r = sample();
	char *s = render_text(AL_DEFAULT_FORMAT, false, &r);
	CHECK_STR(s, "[2016-04-15T20:17:00.310Z] \"GET /a/b?c=d HTTP/1.1\" 200 - 5 1234 15 12 \"-\" "
		     "\"curl/8\" \"rid\" \"svc.local\" \"127.0.0.1:8080\"\n");
	free(s);
	done();
}

TEST(operators)
{
	struct al_record r = sample();
	char *s = render_text("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):4%|%RESP(CONTENT-TYPE)%|%TRAILER(GRPC-STATUS)%|"
			      "%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|"
			      "%DOWNSTREAM_LOCAL_ADDRESS%|%UPSTREAM_CLUSTER%|%ROUTE_NAME%|%CONNECTION_ID%|"
			      "%UPSTREAM_REQUEST_ATTEMPT_COUNT%|%REQUEST_DURATION%|%RESPONSE_DURATION%|"
			      "%RESPONSE_CODE_DETAILS%|%DOWNSTREAM_PEER_URI_SAN%|%REQUESTED_SERVER_NAME%|"
			      "%UPSTREAM_LOCAL_ADDRESS%|100%|%%",
			      false, &r);
	CHECK_STR(s, "/a/b|text/plain|0|10.1.2.3:40000|10.1.2.3|127.0.0.1:10000|backend|r1|42|2|1|-|"
		     "via_upstream|-|-|-|100%|%%");
	free(s);
	hdrs_add_cstr(&req, "x-empty", "");
	s = render_text("%REQ(X-EMPTY)%", false, &r);   /* empty value into an empty buffer */
	CHECK_STR(s, "");
	free(s);
	s = render_text("%REQ(X-NOPE)%/%RESP(X-NOPE)%", true, &r);
	CHECK_STR(s, "/");   /* omit_empty_values: unset is empty, not "-" */
	free(s);
	done();
}

TEST(start_time_formats)
{
	struct al_record r = sample();
	char *s = render_text("%START_TIME(%Y/%m/%d %H:%M:%S)%|%START_TIME(%s)%|%START_TIME(%s.%3f)%|"
			      "%START_TIME(%6f)%|%START_TIME(%f)%|%START_TIME(%E3S)%|%START_TIME(100%%)%",
			      false, &r);
	CHECK_STR(s, "2016/04/15 20:17:00|1460751420|1460751420.310|310123|310123456|00.310|100%");
	free(s);
	done();
}

/* START_TIME is cached per thread per second and format: within a second
 * only the fraction digits change; a new second, a new format (same text
 * at another address too) and more formats than cache slots render right. */
TEST(start_time_cache)
{
	struct al_record r = sample();
	const char *fmt = "%START_TIME%|%START_TIME(%s.%3f %9f)%|%START_TIME(%H:%M:%E6S)%";
	char *s = render_text(fmt, false, &r);
	CHECK_STR(s, "2016-04-15T20:17:00.310Z|1460751420.310 310123456|20:17:00.310123");
	free(s);
	r.start_wall_ns += 5000001;   /* same second, +5 ms */
	s = render_text(fmt, false, &r);
	CHECK_STR(s, "2016-04-15T20:17:00.315Z|1460751420.315 315123457|20:17:00.315123");
	free(s);
	r.start_wall_ns += 3600ull * 1000000000ull - 315123457ull;   /* an hour on, .000 */
	s = render_text(fmt, false, &r);
	CHECK_STR(s, "2016-04-15T21:17:00.000Z|1460755020.000 000000000|21:17:00.000000");
	free(s);
	/* more distinct formats than cache slots, rendered twice each */
	static const char *const many[] = { "%START_TIME(%Y)%", "%START_TIME(%m)%", "%START_TIME(%d)%",
					    "%START_TIME(%H)%", "%START_TIME(%M)%", "%START_TIME(%3f)%" };
	static const char *const want[] = { "2016", "04", "15", "21", "17", "000" };
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < ARRAY_SIZE(many); i++) {
			s = render_text(many[i], false, &r);
			CHECK_STR(s, want[i]);
			free(s);
		}
	}
	/* a format longer than the cache key is rendered every time */
	char longfmt[200];
	snprintf(longfmt, sizeof(longfmt), "%%START_TIME(%s%%3f)%%", "..........................."
		 "..................................................");
	s = render_text(longfmt, false, &r);
	CHECK_CONTAINS(s, ".000");
	free(s);
	r.start_wall_ns += 7000000;
	s = render_text(longfmt, false, &r);
	CHECK_CONTAINS(s, ".007");
	free(s);
	done();
}

/* The word-at-a-time JSON escaping against a bytewise reference, with the
 * special byte at every position of strings longer than a word. */
static void json_ref(const char *v, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c == '\r') {
			out[o++] = '\\';
			out[o++] = 'r';
		} else if (c == '\t') {
			out[o++] = '\\';
			out[o++] = 't';
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)sprintf(out + o, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = 0;
}

TEST(json_escape_word_at_a_time)
{
	static const unsigned char specials[] = { '"', '\\', '\n', 0x01, 0x1f, 0x7f, 0x80, 0xff, ' ', '~' };
	char err[256];
	json_error_t je;
	json_t *j = json_loads("{\"v\": \"%REQ(X-V)%\"}", 0, &je);
	struct al_format *f = al_format_json(j, false, err, sizeof(err));
	CHECK(f != NULL);
	int bad = 0;
	for (size_t len = 1; len <= 27 && f; len++) {
		for (size_t pos = 0; pos < len; pos++) {
			for (size_t k = 0; k < sizeof(specials); k++) {
				char v[32], want[256], line[300];
				for (size_t i = 0; i < len; i++)
					v[i] = (char)('a' + i % 26);
				v[pos] = (char)specials[k];
				struct al_record r = sample();
				hdrs_add(&req, "x-v", 3, v, len);
				json_ref(v, len, want);
				snprintf(line, sizeof(line), "{\"v\":\"%s\"}\n", want);
				char *s = render(f, &r);
				if (strcmp(s, line) && bad++ < 3)
					fprintf(stderr, "  len %zu pos %zu byte %02x: %s != %s", len, pos,
						specials[k], s, line);
				free(s);
				done();
			}
		}
	}
	CHECK(bad == 0);
	al_format_free(f);
	json_decref(j);
}

TEST(response_flags_strings)
{
	char buf[512];
	CHECK_INT(al_flags_string(0, false, buf, sizeof(buf)), 1);
	CHECK_STR(buf, "-");
	al_flags_string(RF_BIT(RF_URX) | RF_BIT(RF_UC), false, buf, sizeof(buf));
	CHECK_STR(buf, "UC,URX");   /* Envoy's order, not the order they were set */
	al_flags_string(RF_BIT(RF_UH) | RF_BIT(RF_NR), true, buf, sizeof(buf));
	CHECK_STR(buf, "NoHealthyUpstream,NoRouteFound");
	CHECK_INT(al_response_flag_parse("RL"), RF_RL);
	CHECK_INT(al_response_flag_parse("XX"), -1);
	struct al_record r = sample();
	r.flags = RF_BIT(RF_UT) | RF_BIT(RF_LR);
	char *s = render_text("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", false, &r);
	CHECK_STR(s, "UT,LR UpstreamRequestTimeout,LocalReset");
	free(s);
	done();
}

TEST(text_errors_name_the_operator)
{
	char err[256];
	struct {
		const char *fmt, *needle;
	} bad[] = {
		{ "%FOO%", "'%FOO%'" },
		{ "x %REQ% y", "needs a header name" },
		{ "%REQ()%", "needs a header name" },
		{ "%REQ(a", "missing ')'" },
		{ "%DURATION(x)%", "takes no parameters" },
		{ "%PROTOCOL%:3", NULL },   /* ":3" after the closing % is literal */
		{ "%BYTES_SENT:3%", "no length limit" },
		{ "%REQ(a?)%", "empty header name" },
		{ "%REQ(a):x%", "expected a length" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct al_format *f = al_format_text(bad[i].fmt, false, err, sizeof(err));
		if (!bad[i].needle) {
			CHECK(f != NULL);
		} else {
			CHECK(f == NULL);
			if (!f)
				CHECK_CONTAINS(err, bad[i].needle);
		}
		al_format_free(f);
	}
}

TEST(json_typed_values)
{
	struct al_record r = sample();
	char err[256];
	json_error_t je;
	json_t *j = json_loads("{\"code\": \"%RESPONSE_CODE%\", \"path\": \"%REQ(:PATH)%\","
			       " \"none\": \"%REQ(X-NOPE)%\", \"mixed\": \"%RESPONSE_CODE% %REQ(X-NOPE)%\","
			       " \"n\": {\"dur\": \"%DURATION%\", \"lit\": [1, 2]}, \"t\": true,"
			       " \"q\": \"a\\\"%REQ(:METHOD)%\\n\"}", 0, &je);
	struct al_format *f = al_format_json(j, false, err, sizeof(err));
	CHECK(f && al_format_is_json(f));
	char *s = f ? render(f, &r) : xstrdup("");
	CHECK_STR(s, "{\"code\":200,\"path\":\"/a/b?c=d\",\"none\":null,\"mixed\":\"200 -\","
		     "\"n\":{\"dur\":15,\"lit\":[1,2]},\"t\":true,\"q\":\"a\\\"GET\\n\"}\n");
	json_t *back = json_loads(s, 0, &je);
	CHECK(back != NULL);
	json_decref(back);
	free(s);
	al_format_free(f);
	f = al_format_json(j, true, err, sizeof(err));
	s = render(f, &r);
	CHECK_STR(s, "{\"code\":200,\"path\":\"/a/b?c=d\",\"mixed\":\"200 \","
		     "\"n\":{\"dur\":15,\"lit\":[1,2]},\"t\":true,\"q\":\"a\\\"GET\\n\"}\n");
	free(s);
	al_format_free(f);
	json_decref(j);
	j = json_loads("{\"a\": {\"b\": \"%NOPE%\"}}", 0, &je);
	CHECK(al_format_json(j, false, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "json_format.b: unknown or unsupported command operator '%NOPE%'");
	json_decref(j);
	done();
}

/* ---- access_log[] config ---- */

static struct al_list *parse(const char *text, char *err, size_t errlen)
{
	struct cfg_ctx c;
	struct al_list *l = NULL;
	json_t *j = test_json(text);
	if (!j) {
		snprintf(err, errlen, "bad test json");
		return NULL;
	}
	cfg_init(&c, NULL, NULL);
	if (al_list_parse(&c, j, NULL, false, &l))
		snprintf(err, errlen, "%.*s", (int)(errlen ? errlen - 1 : 0), c.err);
	json_decref(j);
	return l;
}

#define STDOUT_AL "\"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\"}"

TEST(config_filters)
{
	char err[512] = "";
	struct al_list *l = parse(
		"{\"access_log\": [{\"name\": \"x\", " STDOUT_AL ", \"filter\": {\"or_filter\": {\"filters\": ["
		" {\"and_filter\": {\"filters\": ["
		"   {\"status_code_filter\": {\"comparison\": {\"op\": \"GE\", \"value\": {\"default_value\": 500, \"runtime_key\": \"k\"}}}},"
		"   {\"not_health_check_filter\": {}}]}},"
		" {\"duration_filter\": {\"comparison\": {\"op\": \"GE\", \"value\": {\"default_value\": 1000}}}},"
		" {\"response_flag_filter\": {\"flags\": [\"UH\", \"NR\"]}},"
		" {\"header_filter\": {\"header\": {\"name\": \"x-debug\", \"present_match\": true}}}]}}}]}",
		err, sizeof(err));
	CHECK(l != NULL);
	if (!l) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	struct al_record r = sample();
	CHECK(!al_list_filter_pass(l, 0, &r));           /* 200, 15 ms, no flag, no header */
	r.response_code = 503;
	CHECK(al_list_filter_pass(l, 0, &r));
	r.response_code = 200;
	r.duration_ns = 1500000000;
	CHECK(al_list_filter_pass(l, 0, &r));
	r.duration_ns = 1000;
	r.flags = RF_BIT(RF_UT);
	CHECK(!al_list_filter_pass(l, 0, &r));            /* not one of UH, NR */
	r.flags = RF_BIT(RF_NR);
	CHECK(al_list_filter_pass(l, 0, &r));
	r.flags = 0;
	hdrs_add_cstr(&req, "x-debug", "1");
	CHECK(al_list_filter_pass(l, 0, &r));
	al_list_free(l);
	done();
}

TEST(config_errors_have_paths)
{
	struct {
		const char *json, *needle;
	} bad[] = {
		{ "{\"access_log\": [{\"name\": \"envoy.access_loggers.nope\"}]}",
		  "access_log[0].name: unknown or unsupported access logger" },
		{ "{\"access_log\": [{\"name\": \"x\", " STDOUT_AL ", \"filter\": {\"runtime_filter\": {}}}]}",
		  "access_log[0].filter.runtime_filter: runtime_filter is not supported" },
		{ "{\"access_log\": [{\"name\": \"x\", " STDOUT_AL ", \"filter\": {\"response_flag_filter\": {\"flags\": [\"ZZ\"]}}}]}",
		  "access_log[0].filter.response_flag_filter.flags[0]: unknown response flag" },
		{ "{\"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\","
		  " \"log_format\": {\"text_format_source\": {\"inline_string\": \"%BAD_OP%\"}}}}]}",
		  "access_log[0].typed_config.log_format.text_format_source.inline_string: unknown or unsupported command operator '%BAD_OP%'" },
		{ "{\"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\","
		  " \"log_format\": {\"text_format\": \"a\", \"json_format\": {}}}}]}",
		  "only one of text_format, json_format, text_format_source" },
		{ "{\"access_log\": [{\"name\": \"x\", " STDOUT_AL ", \"bogus\": 1}]}",
		  "access_log[0].bogus: unknown field" },
		{ "{\"access_log\": [{\"name\": \"x\", " STDOUT_AL ", \"filter\": {\"and_filter\": {\"filters\": [{\"not_health_check_filter\": {}}]}}}]}",
		  "needs at least two filters" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char err[512] = "";
		struct al_list *l = parse(bad[i].json, err, sizeof(err));
		CHECK(l == NULL);
		CHECK_CONTAINS(err, bad[i].needle);
		al_list_free(l);
	}
}
