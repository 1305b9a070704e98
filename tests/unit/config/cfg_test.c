/* cfg_test.c - the config walker: paths, positions, getters, durations, enums.
 * Trees are built by hand with jansson; positions come from a hand-filled
 * cfg_src (the YAML loader's own tests check real file positions). */
#include "test.h"
#include "proxy/config/cfg.h"
#include "proxy/config/cfg_src.h"

#include <math.h>

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j)
		fprintf(stderr, "bad test JSON: %s: %s\n", text, e.text);
	return j;
}

/* {"static_resources":{"listeners":[{"address":{"socket_address":{"port_value":70000}}}]}} */
static json_t *listener_tree(void)
{
	return J("{\"static_resources\":{\"listeners\":[{\"address\":{\"socket_address\":"
		 "{\"port_value\":70000}}}]}}");
}

/* Enter static_resources.listeners[0].address.socket_address; returns it. */
static const json_t *enter_socket_address(struct cfg_ctx *c, const json_t *root)
{
	const json_t *sr = cfg_enter(c, root, "static_resources");
	const json_t *ls = cfg_enter(c, sr, "listeners");
	const json_t *l0 = cfg_enter_idx(c, ls, 0);
	const json_t *addr = cfg_enter(c, l0, "address");
	return cfg_enter(c, addr, "socket_address");
}

TEST(cfg_path_nested_keys_and_indices)
{
	json_t *root = listener_tree();
	struct cfg_ctx c;

	cfg_init(&c, NULL, "bad.yaml");
	const json_t *sa = enter_socket_address(&c, root);
	CHECK(sa != NULL);
	CHECK_INT(c.depth, 5);
	const json_t *pv = cfg_enter(&c, sa, "port_value");
	CHECK(json_is_integer(pv));
	CHECK_INT(cfg_fail(&c, "expected an integer in 0..%d", 65535), RM_ERROR);
	CHECK(c.failed);
	/* no positions known: the file name stays, line:col is omitted */
	CHECK_STR(c.err, "bad.yaml: static_resources.listeners[0].address.socket_address.port_value: "
			 "expected an integer in 0..65535");
	json_decref(root);
}

TEST(cfg_path_with_positions)
{
	json_t *root = listener_tree();
	struct cfg_src *src = cfg_src_new();
	const json_t *sa = json_object_get(
	    json_object_get(
		json_array_get(
		    json_object_get(json_object_get(root, "static_resources"), "listeners"), 0),
		"address"),
	    "socket_address");
	struct cfg_ctx c;

	cfg_src_add_key(src, sa, "port_value", 14, 13);
	cfg_init(&c, src, "bad.yaml");
	enter_socket_address(&c, root);
	cfg_enter(&c, sa, "port_value");
	cfg_fail(&c, "expected an integer in 0..65535");
	CHECK_STR(
	    c.err,
	    "bad.yaml:14:13: static_resources.listeners[0].address.socket_address.port_value: "
	    "expected an integer in 0..65535");
	/* leaving and failing again changes nothing: the first error wins */
	cfg_leave(&c);
	CHECK_INT(cfg_fail(&c, "second"), RM_ERROR);
	CHECK_CONTAINS(c.err, "0..65535");
	CHECK(!strstr(c.err, "second"));
	cfg_src_free(src);
	json_decref(root);
}

TEST(cfg_fail_falls_back_outward_to_known_position)
{
	json_t *root = J("{\"a\":{\"b\":[1,true,{\"c\":2}]}}");
	struct cfg_src *src = cfg_src_new();
	const json_t *a = json_object_get(root, "a");
	const json_t *b = json_object_get(a, "b");
	struct cfg_ctx c;

	cfg_src_add_key(src, root, "a", 1, 1);
	cfg_src_add_key(src, a, "b", 2, 3);
	cfg_src_add_node(src, json_array_get(b, 0), 3, 7);
	cfg_src_add_node(src, json_array_get(b, 1), 4, 7); /* singleton: ignored */

	cfg_init(&c, src, "f.yaml");
	cfg_enter(&c, cfg_enter(&c, root, "a"), "b");
	cfg_enter_idx(&c, b, 0);
	cfg_fail(&c, "x");
	CHECK_STR(c.err, "f.yaml:3:7: a.b[0]: x");

	/* element 1 is json_true(): a shared singleton has no position of its
	 * own, so the error uses the enclosing key's position */
	cfg_init(&c, src, "f.yaml");
	cfg_enter(&c, cfg_enter(&c, root, "a"), "b");
	cfg_enter_idx(&c, b, 1);
	cfg_fail(&c, "y");
	CHECK_STR(c.err, "f.yaml:2:3: a.b[1]: y");

	/* element 2's key "c" has no position and neither has the element */
	cfg_init(&c, src, NULL);
	cfg_enter(&c, cfg_enter(&c, root, "a"), "b");
	cfg_enter(&c, cfg_enter_idx(&c, b, 2), "c");
	cfg_fail(&c, "z");
	CHECK_STR(c.err, "2:3: a.b[2].c: z");

	int line = 0, col = 0;
	CHECK_INT(cfg_src_node_pos(src, json_array_get(b, 1), &line, &col), RM_ERROR);
	CHECK_INT(cfg_src_node_pos(src, json_array_get(b, 0), &line, &col), RM_OK);
	CHECK_INT(line, 3);
	CHECK_INT(col, 7);
	CHECK_INT(cfg_src_key_pos(src, a, "b", &line, &col), RM_OK);
	CHECK_INT(line * 100 + col, 203);
	CHECK_INT(cfg_src_key_pos(src, a, "bb", &line, &col), RM_ERROR);
	CHECK_INT(cfg_src_key_pos(NULL, a, "b", &line, &col), RM_ERROR);
	cfg_src_free(src);
	json_decref(root);
}

TEST(cfg_fail_root_path)
{
	struct cfg_ctx c;

	cfg_init(&c, NULL, "x.yaml");
	cfg_fail(&c, "expected an object");
	CHECK_STR(c.err, "x.yaml: <root>: expected an object");
}

TEST(cfg_src_table_grows)
{
	struct cfg_src *src = cfg_src_new();
	json_t *arr = json_array();
	json_t *obj = json_object();
	char key[32];
	int line, col, bad = 0;

	for (int i = 0; i < 2000; i++) {
		json_t *n = json_integer(i);
		json_array_append_new(arr, n);
		cfg_src_add_node(src, n, i + 1, 2);
		snprintf(key, sizeof(key), "k%d", i);
		cfg_src_add_key(src, obj, key, i + 1, 5);
	}
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		if (cfg_src_node_pos(src, json_array_get(arr, (size_t)i), &line, &col) ||
		    line != i + 1)
			bad++;
		if (cfg_src_key_pos(src, obj, key, &line, &col) || line != i + 1 || col != 5)
			bad++;
	}
	CHECK_INT(bad, 0);
	/* first record wins */
	cfg_src_add_node(src, json_array_get(arr, 0), 99, 99);
	CHECK_INT(cfg_src_node_pos(src, json_array_get(arr, 0), &line, &col), RM_OK);
	CHECK_INT(line, 1);
	cfg_src_free(src);
	cfg_src_free(NULL);
	json_decref(arr);
	json_decref(obj);
}

TEST(cfg_enter_req_missing_field)
{
	json_t *root = J("{\"cluster\":{\"name\":\"a\"}}");
	const json_t *cl = json_object_get(root, "cluster");
	struct cfg_src *src = cfg_src_new();
	struct cfg_ctx c;

	cfg_src_add_key(src, root, "cluster", 1, 1);
	cfg_src_add_node(src, cl, 2, 3);

	/* the object's own position */
	cfg_init(&c, src, "c.yaml");
	const json_t *v = cfg_enter_req(&c, cfg_enter(&c, root, "cluster"), "connect_timeout");
	CHECK(v == NULL);
	CHECK_INT(c.depth, 1); /* nothing pushed */
	CHECK_STR(c.err,
		  "c.yaml:2:3: cluster.connect_timeout: missing required field 'connect_timeout'");

	/* without the node position: the key position of the frame holding it */
	struct cfg_src *src2 = cfg_src_new();
	cfg_src_add_key(src2, root, "cluster", 1, 1);
	cfg_init(&c, src2, "c.yaml");
	cfg_enter_req(&c, cfg_enter(&c, root, "cluster"), "type");
	CHECK_STR(c.err, "c.yaml:1:1: cluster.type: missing required field 'type'");

	/* at the root without positions */
	cfg_init(&c, NULL, NULL);
	CHECK(cfg_enter_req(&c, root, "admin") == NULL);
	CHECK_STR(c.err, "admin: missing required field 'admin'");

	/* present: pushed */
	cfg_init(&c, src, "c.yaml");
	v = cfg_enter_req(&c, root, "cluster");
	CHECK(v == cl);
	CHECK_INT(c.depth, 1);
	CHECK(!c.failed);
	cfg_src_free(src);
	cfg_src_free(src2);
	json_decref(root);
}

TEST(cfg_camel_case_lookup)
{
	json_t *root =
	    J("{\"perConnectionBufferLimitBytes\":1024,\"name\":\"x\",\"drain_type\":null,"
	      "\"drainType\":\"MODIFY_ONLY\",\"a_1b\":3}");
	struct cfg_src *src = cfg_src_new();
	struct cfg_ctx c;
	uint32_t n = 0;

	cfg_src_add_key(src, root, "perConnectionBufferLimitBytes", 7, 3);
	CHECK(cfg_get(root, "per_connection_buffer_limit_bytes") ==
	      json_object_get(root, "perConnectionBufferLimitBytes"));
	CHECK(cfg_get(root, "name") != NULL);
	CHECK(cfg_get(root, "nam") == NULL);
	/* snake present but null: the camel one is used */
	CHECK_STR(json_string_value(cfg_get(root, "drain_type")), "MODIFY_ONLY");
	/* digits after '_' are kept as they are: "a_1b" has camel form "a1b" */
	CHECK(cfg_get(root, "a_1b") != NULL);
	CHECK(cfg_get(NULL, "name") == NULL);
	CHECK(cfg_get(json_object_get(root, "name"), "name") == NULL);

	cfg_init(&c, src, "p.yaml");
	CHECK_INT(cfg_u32(&c, root, "per_connection_buffer_limit_bytes", &n), RM_OK);
	CHECK_INT(n, 1024);
	/* the path prints the key as the user wrote it */
	cfg_enter(&c, root, "per_connection_buffer_limit_bytes");
	CHECK_STR(c.st[0].key, "perConnectionBufferLimitBytes");
	cfg_fail(&c, "too small");
	CHECK_STR(c.err, "p.yaml:7:3: perConnectionBufferLimitBytes: too small");
	cfg_src_free(src);
	json_decref(root);
}

TEST(cfg_enter_null_is_absent)
{
	json_t *root = J("{\"a\":null,\"b\":[]}");
	struct cfg_ctx c;
	uint32_t v = 77;

	cfg_init(&c, NULL, NULL);
	CHECK(cfg_enter(&c, root, "a") == NULL);
	CHECK(cfg_enter(&c, root, "zzz") == NULL);
	CHECK_INT(c.depth, 0);
	CHECK_INT(cfg_u32(&c, root, "a", &v), RM_OK);
	CHECK_INT(v, 77);
	CHECK_INT(cfg_u32(&c, root, "missing", &v), RM_OK);
	CHECK_INT(v, 77);
	CHECK(!c.failed);
	/* wrong container type behaves as absent for lookups */
	CHECK(cfg_enter(&c, json_object_get(root, "b"), "x") == NULL);
	json_decref(root);
}

TEST(cfg_expect_types)
{
	json_t *root = J("{\"l\":{},\"o\":[]}");
	struct cfg_ctx c;

	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_expect_array(&c, cfg_enter(&c, root, "l")), RM_ERROR);
	CHECK_STR(c.err, "l: expected a list");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_expect_object(&c, cfg_enter(&c, root, "o")), RM_ERROR);
	CHECK_STR(c.err, "o: expected an object");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_expect_object(&c, root), RM_OK);
	CHECK_INT(cfg_expect_array(&c, json_object_get(root, "o")), RM_OK);
	CHECK(!c.failed);
	json_decref(root);
}

static const char *const listener_fields[] = {"name", "address",
					      "per_connection_buffer_limit_bytes", NULL};

TEST(cfg_check_fields_unknown)
{
	json_t *root = J("{\"name\":\"l\",\"@type\":\"t\",\"perConnectionBufferLimitBytes\":1,"
			 "\"foo\":1,\"bar\":2}");
	struct cfg_src *src = cfg_src_new();
	struct cfg_ctx c;

	cfg_src_add_key(src, root, "foo", 5, 3);
	cfg_init(&c, src, "l.yaml");
	CHECK_INT(cfg_check_fields(&c, root, listener_fields), RM_ERROR);
	/* the first unknown key in document order, at its own path and position */
	CHECK_STR(c.err, "l.yaml:5:3: foo: unknown field 'foo'");
	CHECK_INT(c.depth, 0);

	/* nested: the path includes the enclosing members */
	json_t *outer = json_pack("{s:[O]}", "listeners", root);
	cfg_init(&c, src, "l.yaml");
	const json_t *l0 = cfg_enter_idx(&c, cfg_enter(&c, outer, "listeners"), 0);
	CHECK_INT(cfg_check_fields(&c, l0, listener_fields), RM_ERROR);
	CHECK_STR(c.err, "l.yaml:5:3: listeners[0].foo: unknown field 'foo'");
	CHECK_INT(c.depth, 2);

	/* allowed: warn and count every unknown key */
	unsigned long before = cfg_unknown_fields_seen;
	cfg_init(&c, src, "l.yaml");
	c.flags = CFG_F_ALLOW_UNKNOWN;
	CHECK_INT(cfg_check_fields(&c, root, listener_fields), RM_OK);
	CHECK_INT(cfg_unknown_fields_seen - before, 2);
	CHECK(!c.failed);

	/* all known (camel form, "@type") */
	json_t *ok =
	    J("{\"name\":\"l\",\"@type\":\"t\",\"@x\":1,\"perConnectionBufferLimitBytes\":1}");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_check_fields(&c, ok, listener_fields), RM_OK);
	CHECK(!c.failed);
	/* a near-miss of the camel form is unknown */
	json_t *near = J("{\"perConnectionbufferLimitBytes\":1}");
	CHECK_INT(cfg_check_fields(&c, near, listener_fields), RM_ERROR);
	CHECK_STR(c.err,
		  "perConnectionbufferLimitBytes: unknown field 'perConnectionbufferLimitBytes'");
	/* not an object */
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_check_fields(&c, json_object_get(ok, "name"), listener_fields), RM_ERROR);
	CHECK_STR(c.err, "<root>: expected an object");

	cfg_src_free(src);
	json_decref(near);
	json_decref(ok);
	json_decref(outer);
	json_decref(root);
}

TEST(cfg_check_fields_snake_and_camel_twice)
{
	json_t *root =
	    J("{\"per_connection_buffer_limit_bytes\":1,\"perConnectionBufferLimitBytes\":2}");
	struct cfg_ctx c;

	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_check_fields(&c, root, listener_fields), RM_ERROR);
	CHECK_STR(c.err, "perConnectionBufferLimitBytes: field 'per_connection_buffer_limit_bytes' "
			 "is given twice (as snake_case and lowerCamelCase)");
	json_decref(root);
}

TEST(cfg_u32_accepts)
{
	json_t *o =
	    J("{\"a\":5,\"b\":\"42\",\"c\":7.0,\"d\":4294967295,\"e\":\"4294967295\",\"f\":0}");
	struct cfg_ctx c;
	uint32_t v;

	cfg_init(&c, NULL, NULL);
	v = 0;
	CHECK_INT(cfg_u32(&c, o, "a", &v), RM_OK);
	CHECK_INT(v, 5);
	v = 0;
	CHECK_INT(cfg_u32(&c, o, "b", &v), RM_OK);
	CHECK_INT(v, 42);
	v = 0;
	CHECK_INT(cfg_u32(&c, o, "c", &v), RM_OK);
	CHECK_INT(v, 7);
	v = 0;
	CHECK_INT(cfg_u32(&c, o, "d", &v), RM_OK);
	CHECK_INT(v, 4294967295LL);
	v = 0;
	CHECK_INT(cfg_u32(&c, o, "e", &v), RM_OK);
	CHECK_INT(v, 4294967295LL);
	v = 9;
	CHECK_INT(cfg_u32(&c, o, "f", &v), RM_OK);
	CHECK_INT(v, 0);
	CHECK(!c.failed);
	CHECK_INT(c.depth, 0);
	json_decref(o);
}

TEST(cfg_u32_rejects)
{
	static const char *const bad[] = {
	    "-1",   "4294967296",    "true",   "false",		 "\"5x\"",
	    "\"\"", "\"-5\"",	     "\"+5\"", "\" 5\"",	 "5.5",
	    "-0.5", "{\"value\":5}", "[5]",    "\"4294967296\"", "1e300",
	};
	uint32_t v;
	char text[64];
	int wrong = 0;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct cfg_ctx c;
		snprintf(text, sizeof(text), "{\"n\":%s}", bad[i]);
		json_t *o = J(text);
		cfg_init(&c, NULL, NULL);
		v = 123;
		if (cfg_u32(&c, o, "n", &v) != RM_ERROR || v != 123 ||
		    strcmp(c.err, "n: expected an unsigned 32-bit integer") || c.depth != 0) {
			fprintf(stderr, "  accepted or wrong error for %s: %s\n", bad[i], c.err);
			wrong++;
		}
		json_decref(o);
	}
	CHECK_INT(wrong, 0);
}

TEST(cfg_u64_range)
{
	json_t *o =
	    J("{\"a\":\"18446744073709551615\",\"b\":\"18446744073709551616\","
	      "\"c\":9007199254740992.0,\"d\":18014398509481984.0,\"e\":9223372036854775807,"
	      "\"f\":-9223372036854775807}");
	struct cfg_ctx c;
	uint64_t v = 0;

	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_u64(&c, o, "a", &v), RM_OK);
	CHECK(v == UINT64_MAX);
	CHECK_INT(cfg_u64(&c, o, "c", &v), RM_OK);
	CHECK(v == 9007199254740992ULL);
	CHECK_INT(cfg_u64(&c, o, "e", &v), RM_OK);
	CHECK(v == 9223372036854775807ULL);
	CHECK(!c.failed);
	CHECK_INT(cfg_u64(&c, o, "b", &v), RM_ERROR);
	CHECK_STR(c.err, "b: expected an unsigned 64-bit integer");
	/* beyond 2^53 a real may not be the integer written: rejected */
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_u64(&c, o, "d", &v), RM_ERROR);
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_u64(&c, o, "f", &v), RM_ERROR);
	json_decref(o);
}

TEST(cfg_bool_getter)
{
	json_t *o = J("{\"t\":true,\"f\":false,\"s\":\"true\",\"i\":1}");
	struct cfg_ctx c;
	bool b = false;

	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_bool(&c, o, "t", &b), RM_OK);
	CHECK(b);
	CHECK_INT(cfg_bool(&c, o, "f", &b), RM_OK);
	CHECK(!b);
	CHECK_INT(cfg_bool(&c, o, "s", &b), RM_ERROR);
	CHECK_STR(c.err, "s: expected true or false");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_bool(&c, o, "i", &b), RM_ERROR);
	CHECK_STR(c.err, "i: expected true or false");
	json_decref(o);
}

TEST(cfg_double_getter)
{
	json_t *o = J("{\"i\":2,\"r\":0.25,\"s\":\"1.5e2\",\"nan\":\"NaN\",\"inf\":\"Infinity\","
		      "\"ninf\":\"-Infinity\",\"bad1\":\"inf\",\"bad2\":\"abc\",\"bad3\":true,"
		      "\"bad4\":\"0x10\",\"bad5\":\"\"}");
	struct cfg_ctx c;
	double d = 0;
	int wrong = 0;

	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_double(&c, o, "i", &d), RM_OK);
	CHECK(d == 2.0);
	CHECK_INT(cfg_double(&c, o, "r", &d), RM_OK);
	CHECK(d == 0.25);
	CHECK_INT(cfg_double(&c, o, "s", &d), RM_OK);
	CHECK(d == 150.0);
	CHECK_INT(cfg_double(&c, o, "nan", &d), RM_OK);
	CHECK(isnan(d));
	CHECK_INT(cfg_double(&c, o, "inf", &d), RM_OK);
	CHECK(isinf(d) && d > 0);
	CHECK_INT(cfg_double(&c, o, "ninf", &d), RM_OK);
	CHECK(isinf(d) && d < 0);
	CHECK(!c.failed);
	static const char *const bad[] = {"bad1", "bad2", "bad3", "bad4", "bad5"};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char want[64];
		cfg_init(&c, NULL, NULL);
		snprintf(want, sizeof(want), "%s: expected a number", bad[i]);
		if (cfg_double(&c, o, bad[i], &d) != RM_ERROR || strcmp(c.err, want))
			wrong++;
	}
	CHECK_INT(wrong, 0);
	json_decref(o);
}

TEST(cfg_string_getters)
{
	json_t *o = J("{\"name\":\"svc\",\"n\":3,\"nul\":null}");
	struct cfg_ctx c;
	const char *s = "unchanged";

	cfg_init(&c, NULL, "s.yaml");
	CHECK_INT(cfg_string(&c, o, "missing", &s), RM_OK);
	CHECK_STR(s, "unchanged");
	CHECK_INT(cfg_string(&c, o, "nul", &s), RM_OK);
	CHECK_STR(s, "unchanged");
	CHECK_INT(cfg_string(&c, o, "name", &s), RM_OK);
	CHECK_STR(s, "svc");
	CHECK(s == json_string_value(json_object_get(o, "name"))); /* points into the tree */
	CHECK_INT(cfg_string_req(&c, o, "name", &s), RM_OK);
	CHECK(!c.failed);
	CHECK_INT(cfg_string(&c, o, "n", &s), RM_ERROR);
	CHECK_STR(c.err, "s.yaml: n: expected a string");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_string_req(&c, o, "cluster_name", &s), RM_ERROR);
	CHECK_STR(c.err, "cluster_name: missing required field 'cluster_name'");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_string_req(&c, o, "nul", &s), RM_ERROR);
	CHECK_STR(c.err, "nul: missing required field 'nul'");
	json_decref(o);
}

TEST(cfg_parse_duration_strings)
{
	static const struct {
		const char *s;
		uint64_t ns;
	} good[] = {
	    {"1s", 1000000000ULL},	   {"0s", 0},
	    {"0.5s", 500000000ULL},	   {"1.000340012s", 1000340012ULL},
	    {"0.000000001s", 1},	   {"3.1s", 3100000000ULL},
	    {"86400s", 86400000000000ULL}, {"315576000000s", UINT64_MAX}, /* saturates */
	};
	static const char *const bad[] = {
	    "1.5", "-1s",	    "+1s", "1.0000000001s", "s",   ".5s",  "1.s",  "1m",   "1ms",
	    "",	   "315576000001s", "1 s", " 1s",	    "1s ", "1,5s", "0x1s", "1e3s",
	};
	int wrong = 0;
	uint64_t ns;

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		ns = 12345;
		if (cfg_parse_duration(good[i].s, &ns) != RM_OK || ns != good[i].ns) {
			fprintf(stderr, "  %s -> %" PRIu64 "\n", good[i].s, ns);
			wrong++;
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		ns = 12345;
		if (cfg_parse_duration(bad[i], &ns) != RM_ERROR || ns != 12345) {
			fprintf(stderr, "  accepted '%s'\n", bad[i]);
			wrong++;
		}
	}
	CHECK_INT(wrong, 0);
}

TEST(cfg_duration_ms_getter)
{
	json_t *o =
	    J("{\"a\":\"0.25s\",\"b\":\"0.0005s\",\"c\":\"1.0005s\",\"d\":\"0s\","
	      "\"e\":{\"seconds\":2,\"nanos\":500000000},\"f\":{\"seconds\":\"3\"},"
	      "\"g\":\"1.5\",\"h\":{\"seconds\":-1},\"i\":5,\"j\":{\"nanos\":1000000000},"
	      "\"k\":{\"secs\":1},\"l\":\"315576000000s\",\"m\":{\"nanos\":1},\"n\":0.1,\"p\":[]}");
	struct cfg_ctx c;
	uint64_t ms = 0;

	cfg_init(&c, NULL, "d.yaml");
	CHECK_INT(cfg_duration_ms(&c, o, "a", &ms), RM_OK);
	CHECK_INT(ms, 250);
	CHECK_INT(cfg_duration_ms(&c, o, "b", &ms), RM_OK);
	CHECK_INT(ms, 1); /* nonzero never becomes 0 ms */
	CHECK_INT(cfg_duration_ms(&c, o, "c", &ms), RM_OK);
	CHECK_INT(ms, 1000); /* otherwise truncated, as Envoy does */
	CHECK_INT(cfg_duration_ms(&c, o, "d", &ms), RM_OK);
	CHECK_INT(ms, 0);
	CHECK_INT(cfg_duration_ms(&c, o, "e", &ms), RM_OK);
	CHECK_INT(ms, 2500);
	CHECK_INT(cfg_duration_ms(&c, o, "f", &ms), RM_OK);
	CHECK_INT(ms, 3000);
	CHECK_INT(cfg_duration_ms(&c, o, "m", &ms), RM_OK);
	CHECK_INT(ms, 1);
	CHECK_INT(cfg_duration_ms(&c, o, "l", &ms), RM_OK);
	CHECK(ms == 315576000000000ULL);
	ms = 42;
	CHECK_INT(cfg_duration_ms(&c, o, "absent", &ms), RM_OK);
	CHECK_INT(ms, 42);
	CHECK(!c.failed);

	CHECK_INT(cfg_duration_ms(&c, o, "g", &ms), RM_ERROR);
	CHECK_STR(c.err, "d.yaml: g: invalid duration '1.5' (expected e.g. \"1.5s\")");
	CHECK_INT(ms, 42);
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_duration_ms(&c, o, "h", &ms), RM_ERROR);
	CHECK_STR(c.err, "h.seconds: expected an integer in 0..315576000000");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_duration_ms(&c, o, "i", &ms), RM_ERROR);
	CHECK_STR(c.err, "i: invalid duration '5' (expected e.g. \"1.5s\")");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_duration_ms(&c, o, "n", &ms), RM_ERROR);
	CHECK_STR(c.err, "n: invalid duration '0.1' (expected e.g. \"1.5s\")");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_duration_ms(&c, o, "p", &ms), RM_ERROR);
	CHECK_STR(c.err, "p: expected a duration (e.g. \"1.5s\")");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_duration_ms(&c, o, "j", &ms), RM_ERROR);
	CHECK_STR(c.err, "j.nanos: expected an integer in 0..999999999");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_duration_ms(&c, o, "k", &ms), RM_ERROR);
	CHECK_STR(c.err, "k.secs: unknown field 'secs'");
	CHECK_INT(c.depth, 0);
	json_decref(o);
}

static const char *const lb_names[] = {"ROUND_ROBIN", "LEAST_REQUEST", NULL, "RANDOM"};

TEST(cfg_enum_getter)
{
	json_t *o = J("{\"a\":\"LEAST_REQUEST\",\"b\":3,\"c\":\"FOO\",\"d\":2,\"e\":9,\"f\":true,"
		      "\"g\":-1,\"h\":\"round_robin\"}");
	struct cfg_ctx c;
	int v = -5;

	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_enum(&c, o, "a", lb_names, ARRAY_SIZE(lb_names), &v), RM_OK);
	CHECK_INT(v, 1);
	CHECK_INT(cfg_enum(&c, o, "b", lb_names, ARRAY_SIZE(lb_names), &v), RM_OK);
	CHECK_INT(v, 3);
	v = -5;
	CHECK_INT(cfg_enum(&c, o, "absent", lb_names, ARRAY_SIZE(lb_names), &v), RM_OK);
	CHECK_INT(v, -5);
	CHECK(!c.failed);
	CHECK_INT(cfg_enum(&c, o, "c", lb_names, ARRAY_SIZE(lb_names), &v), RM_ERROR);
	CHECK_STR(c.err,
		  "c: unknown value 'FOO' (expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM)");
	CHECK_INT(v, -5);
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_enum(&c, o, "d", lb_names, ARRAY_SIZE(lb_names), &v), RM_ERROR); /* a gap */
	CHECK_STR(c.err, "d: unknown value 2 (expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM)");
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_enum(&c, o, "e", lb_names, ARRAY_SIZE(lb_names), &v), RM_ERROR);
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_enum(&c, o, "g", lb_names, ARRAY_SIZE(lb_names), &v), RM_ERROR);
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_enum(&c, o, "h", lb_names, ARRAY_SIZE(lb_names), &v),
		  RM_ERROR); /* case matters */
	cfg_init(&c, NULL, NULL);
	CHECK_INT(cfg_enum(&c, o, "f", lb_names, ARRAY_SIZE(lb_names), &v), RM_ERROR);
	CHECK_STR(c.err, "f: expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM");
	json_decref(o);
}

TEST(cfg_depth_limit)
{
	json_t *root = json_object(), *cur = root;
	struct cfg_ctx c;
	const json_t *v = root;
	int entered = 0;

	for (int i = 0; i < CFG_MAX_DEPTH + 5; i++) {
		json_t *n = json_object();
		json_object_set_new(cur, "x", n);
		cur = n;
	}
	cfg_init(&c, NULL, NULL);
	while (v && (v = cfg_enter(&c, v, "x")))
		entered++;
	CHECK_INT(entered, CFG_MAX_DEPTH);
	CHECK(c.failed);
	CHECK_CONTAINS(c.err, "nesting deeper than 64 levels");
	for (int i = 0; i < entered; i++)
		cfg_leave(&c);
	cfg_leave(&c); /* one too many is harmless */
	CHECK_INT(c.depth, 0);
	json_decref(root);
}

TEST(cfg_enter_idx_out_of_range)
{
	json_t *arr = J("[1]");
	struct cfg_ctx c;

	cfg_init(&c, NULL, NULL);
	CHECK(cfg_enter_idx(&c, arr, 0) != NULL);
	cfg_leave(&c);
	CHECK(cfg_enter_idx(&c, arr, 1) == NULL);
	CHECK(c.failed);
	CHECK_INT(c.depth, 0);
	json_decref(arr);
}
