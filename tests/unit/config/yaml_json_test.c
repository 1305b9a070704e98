/* yaml_json_test.c - YAML to jansson: scalar typing, anchors/merge, errors
 * with positions, multi-document input, and cfg errors on loaded YAML. */
#include "test.h"
#include "proxy/config/yaml_json.h"
#include "proxy/config/cfg_src.h"

#include <unistd.h>

static json_t *Y(const char *name, const char *text, struct cfg_src **src, char *err, size_t errlen)
{
	return yaml_load_buffer(name, text, strlen(text), src, err, errlen);
}

/* The compact JSON of member "v" of the loaded text, or "ERR <error>". */
static char *value_of(const char *text)
{
	char err[256];
	json_t *j = Y("v.yaml", text, NULL, err, sizeof(err));

	if (!j)
		return xasprintf("ERR %s", err);
	char *s = json_dumps(json_object_get(j, "v"), JSON_ENCODE_ANY | JSON_COMPACT);
	json_decref(j);
	return s ? s : xstrdup("(absent)");
}

TEST(yaml_scalar_typing)
{
	static const struct {
		const char *yaml, *json;
	} cases[] = {
	    {"v: 1", "1"},
	    {"v: -12", "-12"},
	    {"v: +3", "3"},
	    {"v: 0777", "777"}, /* YAML 1.2: decimal, not octal */
	    {"v: 0x1f", "31"},
	    {"v: 0xFF", "255"},
	    {"v: 0o17", "15"},
	    {"v: 0b101", "\"0b101\""},
	    {"v: -0x10", "\"-0x10\""},
	    {"v: 0x", "\"0x\""},
	    {"v: 1_000", "\"1_000\""},
	    {"v: 9223372036854775807", "9223372036854775807"},
	    {"v: -9223372036854775808", "-9223372036854775808"},
	    {"v: 9223372036854775808", "9.2233720368547758e18"}, /* beyond int64: real */
	    {"v: 1e3", "1000.0"},
	    {"v: 1.5", "1.5"},
	    {"v: .5", "0.5"},
	    {"v: -2.", "-2.0"},
	    {"v: 1.5E+2", "150.0"},
	    {"v: 18446744073709551616", "1.8446744073709552e19"},
	    {"v: 0x10000000000000000", "1.8446744073709552e19"},
	    {"v: 1e", "\"1e\""},
	    {"v: 1e999", "\"Infinity\""},
	    {"v: .inf", "\"Infinity\""},
	    {"v: -.Inf", "\"-Infinity\""},
	    {"v: +.INF", "\"Infinity\""},
	    {"v: .nan", "\"NaN\""},
	    {"v: .NaN", "\"NaN\""},
	    {"v: true", "true"},
	    {"v: True", "true"},
	    {"v: TRUE", "true"},
	    {"v: false", "false"},
	    {"v: FALSE", "false"},
	    {"v: tRUE", "\"tRUE\""},
	    {"v: yes", "\"yes\""},
	    {"v: no", "\"no\""},
	    {"v: on", "\"on\""},
	    {"v: off", "\"off\""},
	    {"v: null", "null"},
	    {"v: Null", "null"},
	    {"v: ~", "null"},
	    {"v:", "null"},
	    {"v: nil", "\"nil\""},
	    {"v: 12abc", "\"12abc\""},
	    {"v: 10.0.0.1", "\"10.0.0.1\""},
	    {"v: 1:2", "\"1:2\""},
	    {"v: '1'", "\"1\""},
	    {"v: \"true\"", "\"true\""},
	    {"v: 'null'", "\"null\""},
	    {"v: \"\"", "\"\""},
	    {"v: |\n  a\n  b\n", "\"a\\nb\\n\""},
	    {"v: |-\n  42\n", "\"42\""},
	    {"v: >\n  a\n  b\n", "\"a b\\n\""},
	    {"v: \"a\\tb\\u00e9\"", "\"a\\tbé\""},
	    {"v: \"x\\0y\"", "\"x\\u0000y\""},
	    {"v: !!str 12", "\"12\""},
	    {"v: !!str true", "\"true\""},
	    {"v: !!int \"12\"", "12"},
	    {"v: !!int 0x10", "16"},
	    {"v: !!float 1", "1.0"},
	    {"v: !!float '2.5'", "2.5"},
	    {"v: !!bool 'true'", "true"},
	    {"v: !!null ''", "null"},
	    {"v: ! 12", "\"12\""},
	    {"v: [1, a, true, ~]", "[1,\"a\",true,null]"},
	    {"v: {a: 1, b: [x]}", "{\"a\":1,\"b\":[\"x\"]}"},
	    {"v: !!seq [1]", "[1]"},
	    {"v: !!map {a: 1}", "{\"a\":1}"},
	};
	int wrong = 0;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *got = value_of(cases[i].yaml);
		if (strcmp(got, cases[i].json)) {
			fprintf(stderr, "  %s: got %s, expected %s\n", cases[i].yaml, got,
				cases[i].json);
			wrong++;
		}
		free(got);
	}
	CHECK_INT(wrong, 0);
}

TEST(yaml_bad_tags)
{
	static const struct {
		const char *yaml, *err;
	} cases[] = {
	    {"v: !!int abc", "v.yaml:1:4: invalid !!int value 'abc'"},
	    {"v: !!int 1.5", "v.yaml:1:4: invalid !!int value '1.5'"},
	    {"v: !!bool yes", "v.yaml:1:4: invalid !!bool value 'yes'"},
	    {"v: !!float x", "v.yaml:1:4: invalid !!float value 'x'"},
	    {"v: !!null 0", "v.yaml:1:4: invalid !!null value '0'"},
	    {"v: !foo x", "v.yaml:1:4: unsupported tag '!foo'"},
	    {"v: !!binary aGk=", "v.yaml:1:4: unsupported tag '!!binary'"},
	    {"v: !!map [1]", "v.yaml:1:4: unsupported tag 'tag:yaml.org,2002:map'"},
	};
	int wrong = 0;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *got = value_of(cases[i].yaml);
		if (strncmp(got, "ERR ", 4) || strcmp(got + 4, cases[i].err)) {
			fprintf(stderr, "  %s: got %s, expected ERR %s\n", cases[i].yaml, got,
				cases[i].err);
			wrong++;
		}
		free(got);
	}
	CHECK_INT(wrong, 0);
}

TEST(yaml_keys_are_scalar_text)
{
	char err[256];
	json_t *j = Y("k.yaml", "1: a\ntrue: b\n~: c\n'q': d\nx: &k name\n*k : 5\n", NULL, err,
		      sizeof(err));

	CHECK(j != NULL);
	CHECK_STR(json_string_value(json_object_get(j, "1")), "a");
	CHECK_STR(json_string_value(json_object_get(j, "true")), "b");
	CHECK_STR(json_string_value(json_object_get(j, "~")), "c");
	CHECK_STR(json_string_value(json_object_get(j, "q")), "d");
	CHECK_INT(json_integer_value(json_object_get(j, "name")), 5);
	json_decref(j);

	CHECK(Y("k.yaml", "? [a]\n: 1\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "k.yaml:1:3: mapping keys must be scalars");
	CHECK(Y("k.yaml", "x: {{a: 1}: 2}\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "k.yaml:1:5: mapping keys must be scalars");
	CHECK(Y("k.yaml", "n: &n 5\n*n : 1\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "k.yaml:2:1: alias '*n' used as a key must refer to a string");
	CHECK(Y("k.yaml", "\"a\\0b\": 1\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "k.yaml:1:1: mapping key contains a NUL character");
}

TEST(yaml_duplicate_keys)
{
	char err[256];

	CHECK(Y("d.yaml", "a: 1\nb: 2\na: 3\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "d.yaml:3:1: duplicate key 'a'");
	CHECK(Y("d.yaml", "top:\n  x: 1\n  y:\n    - {p: 1, p: 2}\n", NULL, err, sizeof(err)) ==
	      NULL);
	CHECK_STR(err, "d.yaml:4:14: duplicate key 'p'");
	/* two merge keys are duplicates too; a quoted "<<" is an ordinary key */
	CHECK(Y("d.yaml", "b: &b {x: 1}\nc:\n  <<: *b\n  <<: *b\n", NULL, err, sizeof(err)) ==
	      NULL);
	CHECK_STR(err, "d.yaml:4:3: duplicate key '<<'");
	json_t *j = Y("d.yaml", "b: &b {x: 1}\nc:\n  <<: *b\n  '<<': 2\n", NULL, err, sizeof(err));
	CHECK(j != NULL);
	CHECK_INT(json_integer_value(json_object_get(json_object_get(j, "c"), "<<")), 2);
	CHECK_INT(json_integer_value(json_object_get(json_object_get(j, "c"), "x")), 1);
	json_decref(j);
}

TEST(yaml_anchors_and_aliases)
{
	static const char text[] = "defs:\n"
				   "  timeout: &t 5s\n"
				   "  addr: &addr {host: h, port: 80}\n"
				   "a: *t\n"
				   "b: *addr\n"
				   "c: [*addr, *addr]\n"
				   "redef: &t 7s\n"
				   "d: *t\n";
	char err[256];
	struct cfg_src *src = NULL;
	json_t *j = Y("a.yaml", text, &src, err, sizeof(err));
	int line = 0, col = 0;

	CHECK(j != NULL);
	if (!j)
		return;
	json_t *addr = json_object_get(json_object_get(j, "defs"), "addr");
	CHECK_STR(json_string_value(json_object_get(j, "a")), "5s");
	CHECK(json_object_get(j, "b") == addr); /* shared, not copied */
	CHECK(json_array_get(json_object_get(j, "c"), 1) == addr);
	CHECK_STR(json_string_value(json_object_get(j, "d")), "7s"); /* latest definition wins */
	/* a shared node keeps the anchored node's position */
	CHECK_INT(
	    cfg_src_node_pos(src, json_object_get(json_object_get(j, "b"), "port"), &line, &col),
	    RM_OK);
	CHECK_INT(line, 3);
	CHECK_INT(col, 31);
	cfg_src_free(src);
	json_decref(j);

	CHECK(Y("a.yaml", "a: 1\nb: *nope\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "a.yaml:2:4: unknown anchor 'nope'");
	CHECK(Y("a.yaml", "a: &x\n  - *x\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "a.yaml:2:5: alias '*x' refers to a node that contains it");
}

TEST(yaml_merge_keys)
{
	static const char text[] = "base: &base\n"
				   "  connect_timeout: 1s\n"
				   "  type: STATIC\n"
				   "extra: &extra\n"
				   "  type: STRICT_DNS\n"
				   "  lb_policy: RANDOM\n"
				   "one:\n"
				   "  <<: *base\n"
				   "  name: one\n"
				   "two:\n"
				   "  connect_timeout: 2s\n"
				   "  <<: [*extra, *base]\n"
				   "three:\n"
				   "  <<: {x: 1}\n";
	char err[256];
	struct cfg_src *src = NULL;
	json_t *j = Y("m.yaml", text, &src, err, sizeof(err));
	int line = 0, col = 0;

	CHECK(j != NULL);
	if (!j)
		return;
	json_t *one = json_object_get(j, "one"), *two = json_object_get(j, "two");
	CHECK_STR(json_string_value(json_object_get(one, "connect_timeout")), "1s");
	CHECK_STR(json_string_value(json_object_get(one, "type")), "STATIC");
	CHECK_STR(json_string_value(json_object_get(one, "name")), "one");
	CHECK(json_object_get(one, "<<") == NULL);
	CHECK_INT(json_object_size(one), 3);
	/* explicit keys win even before "<<"; earlier mappings in the list win */
	CHECK_STR(json_string_value(json_object_get(two, "connect_timeout")), "2s");
	CHECK_STR(json_string_value(json_object_get(two, "type")), "STRICT_DNS");
	CHECK_STR(json_string_value(json_object_get(two, "lb_policy")), "RANDOM");
	CHECK_INT(json_object_size(two), 3);
	CHECK_INT(json_integer_value(json_object_get(json_object_get(j, "three"), "x")), 1);
	/* a merged member's key position is where the user wrote it */
	CHECK_INT(cfg_src_key_pos(src, one, "type", &line, &col), RM_OK);
	CHECK_INT(line, 3);
	CHECK_INT(col, 3);
	CHECK_INT(cfg_src_key_pos(src, one, "name", &line, &col), RM_OK);
	CHECK_INT(line, 9);
	CHECK_INT(cfg_src_key_pos(src, two, "connect_timeout", &line, &col), RM_OK);
	CHECK_INT(line, 11);
	cfg_src_free(src);
	json_decref(j);

	CHECK(Y("m.yaml", "a:\n  <<: 5\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "m.yaml:2:7: merge key '<<' expects a mapping or a list of mappings");
	CHECK(Y("m.yaml", "b: &b {x: 1}\na:\n  <<: [*b, 3]\n", NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "m.yaml:3:7: merge key '<<' expects a mapping or a list of mappings");
}

TEST(yaml_syntax_errors_have_positions)
{
	static const struct {
		const char *yaml, *err;
	} cases[] = {
	    {"a: b: c\n", "s.yaml:1:5: mapping values are not allowed in this context"},
	    {"x: 1\n  y: 2\n", "s.yaml:2:4: mapping values are not allowed in this context"},
	    {"a: [1, 2\n",
	     "s.yaml:2:1: did not find expected ',' or ']' (while parsing a flow sequence at 1:4)"},
	    {"a:\n\tb: 1\n", "s.yaml:2:1: found character that cannot start any token "
			     "(while scanning for the next token at 2:1)"},
	    {"a: 'x\n",
	     "s.yaml:2:1: found unexpected end of stream (while scanning a quoted scalar at 1:4)"},
	    {"ok: 1\nbad: \"\\q\"\n", "s.yaml:2:7: found unknown escape character "
				      "(while parsing a quoted scalar at 2:6)"},
	    /* reader errors carry a byte offset; it is turned into line:col */
	    {"a: 1\nb: \xff\n", "s.yaml:2:4: invalid leading UTF-8 octet (#FF)"},
	    {"", "s.yaml:1:1: empty document"},
	    {"# only a comment\n", "s.yaml:2:1: empty document"},
	    {"---\n", "s.yaml:1:1: empty document"},
	};
	int wrong = 0;
	char err[256];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct cfg_src *src = (struct cfg_src *)1;
		json_t *j = yaml_load_buffer("s.yaml", cases[i].yaml, strlen(cases[i].yaml), &src,
					     err, sizeof(err));
		if (j || src || strcmp(err, cases[i].err)) {
			fprintf(stderr, "  %s: got %s, expected %s\n", cases[i].yaml,
				j ? "success" : err, cases[i].err);
			wrong++;
		}
		json_decref(j);
	}
	CHECK_INT(wrong, 0);
	/* an explicit null document is not empty */
	json_t *j = Y("n.yaml", "~\n", NULL, err, sizeof(err));
	CHECK(json_is_null(j));
	json_decref(j);
}

TEST(yaml_limits)
{
	char err[256];
	size_t n = 300, len = 0;
	char *deep = xmalloc(2 * n + 8);

	/* nesting */
	len += (size_t)sprintf(deep, "v: ");
	for (size_t i = 0; i < n; i++)
		deep[len++] = '[';
	for (size_t i = 0; i < n; i++)
		deep[len++] = ']';
	deep[len] = '\0';
	CHECK(Y("l.yaml", deep, NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "l.yaml:1:259: nesting deeper than 256 levels");
	xfree(deep);

	/* "billion laughs": 10 levels of 10 aliases each */
	char text[2048];
	len = (size_t)sprintf(text, "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
	for (int i = 1; i < 10; i++) {
		len += (size_t)sprintf(text + len, "l%d: &l%d [", i, i);
		for (int k = 0; k < 10; k++)
			len += (size_t)sprintf(text + len, "%s*l%d", k ? ", " : "", i - 1);
		len += (size_t)sprintf(text + len, "]\n");
	}
	CHECK(Y("l.yaml", text, NULL, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "document too large (more than 4194304 nodes with aliases expanded)");
	/* a few levels are fine */
	text[0] = '\0';
	len = (size_t)sprintf(text, "l0: &l0 [x, x]\nl1: &l1 [*l0, *l0]\nl2: [*l1, *l1]\n");
	json_t *j = Y("l.yaml", text, NULL, err, sizeof(err));
	CHECK(j != NULL);
	json_decref(j);
}

TEST(yaml_multi_document)
{
	static const char text[] = "a: 1\n---\nb: 2\nc: [x]\n---\n---\nd: 4\n";
	char err[256];
	struct cfg_src *src = NULL;
	int line = 0, col = 0;

	json_t *all = yaml_load_all_buffer("m.yaml", text, strlen(text), &src, err, sizeof(err));
	CHECK(json_is_array(all));
	CHECK_INT(json_array_size(all), 4);
	CHECK_INT(json_integer_value(json_object_get(json_array_get(all, 0), "a")), 1);
	CHECK_INT(json_integer_value(json_object_get(json_array_get(all, 1), "b")), 2);
	CHECK(json_is_null(json_array_get(all, 2))); /* an empty document */
	CHECK_INT(json_integer_value(json_object_get(json_array_get(all, 3), "d")), 4);
	CHECK_INT(cfg_src_key_pos(src, json_array_get(all, 1), "c", &line, &col), RM_OK);
	CHECK_INT(line, 4);
	CHECK_INT(col, 1);
	CHECK_INT(cfg_src_key_pos(src, json_array_get(all, 3), "d", &line, &col), RM_OK);
	CHECK_INT(line, 7);
	cfg_src_free(src);
	json_decref(all);

	/* yaml_load_buffer uses the first document only */
	json_t *first = Y("m.yaml", text, NULL, err, sizeof(err));
	CHECK_INT(json_object_size(first), 1);
	CHECK_INT(json_integer_value(json_object_get(first, "a")), 1);
	json_decref(first);

	/* anchors do not cross documents */
	static const char t2[] = "a: &x 1\n---\nb: *x\n";
	CHECK(yaml_load_all_buffer("m.yaml", t2, strlen(t2), NULL, err, sizeof(err)) == NULL);
	CHECK_STR(err, "m.yaml:3:4: unknown anchor 'x'");
	/* an error in a later document fails the whole load */
	static const char t3[] = "a: 1\n---\nb: [\n";
	CHECK(yaml_load_all_buffer("m.yaml", t3, strlen(t3), NULL, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "m.yaml:4:1: ");
	/* no documents at all */
	json_t *none = yaml_load_all_buffer("m.yaml", "", 0, NULL, err, sizeof(err));
	CHECK(json_is_array(none));
	CHECK_INT(json_array_size(none), 0);
	json_decref(none);
}

/* The shape of the brief's example: port_value at line 14, column 13. */
/* clang-format off */
static const char bootstrap[] =
	"admin:\n"                                            /* 1 */
	"  address:\n"                                        /* 2 */
	"    socket_address: {address: 127.0.0.1, port_value: 9901}\n"
	"static_resources:\n"                                 /* 4 */
	"  clusters: []\n"                                    /* 5 */
	"  listeners:\n"                                      /* 6 */
	"  - name: listener_0\n"                              /* 7 */
	"    perConnectionBufferLimitBytes: 32768\n"          /* 8 */
	"    enabled: [true, 5]\n"                            /* 9 */
	"    timeout: 1.5\n"                                  /* 10 */
	"    address:\n"                                      /* 11 */
	"      socket_address:\n"                             /* 12 */
	"            address: 0.0.0.0\n"                      /* 13 */
	"            port_value: 70000\n";                    /* 14 */
/* clang-format on */

static const json_t *enter_path(struct cfg_ctx *c, const json_t *root)
{
	const json_t *sr = cfg_enter(c, root, "static_resources");
	const json_t *l0 = cfg_enter_idx(c, cfg_enter(c, sr, "listeners"), 0);
	return l0;
}

TEST(yaml_cfg_errors_with_positions)
{
	char err[256];
	struct cfg_src *src = NULL;
	json_t *root = Y("bad.yaml", bootstrap, &src, err, sizeof(err));
	struct cfg_ctx c;
	uint32_t port = 0, limit = 0;

	CHECK(root != NULL);
	if (!root)
		return;
	cfg_init(&c, src, "bad.yaml");
	const json_t *l0 = enter_path(&c, root);
	CHECK_INT(cfg_u32(&c, l0, "per_connection_buffer_limit_bytes", &limit), RM_OK);
	CHECK_INT(limit, 32768);
	const json_t *sa = cfg_enter(&c, cfg_enter(&c, l0, "address"), "socket_address");
	CHECK_INT(cfg_u32(&c, sa, "port_value", &port), RM_OK);
	CHECK_INT(port, 70000);
	if (port > 65535) {
		cfg_enter(&c, sa, "port_value");
		cfg_fail(&c, "expected an integer in 0..65535");
		cfg_leave(&c);
	}
	CHECK_STR(
	    c.err,
	    "bad.yaml:14:13: static_resources.listeners[0].address.socket_address.port_value: "
	    "expected an integer in 0..65535");

	/* a getter's own error is at the member's key */
	cfg_init(&c, src, "bad.yaml");
	l0 = enter_path(&c, root);
	uint64_t ms = 0;
	CHECK_INT(cfg_duration_ms(&c, l0, "timeout", &ms), RM_ERROR);
	CHECK_STR(c.err, "bad.yaml:10:5: static_resources.listeners[0].timeout: "
			 "invalid duration '1.5' (expected e.g. \"1.5s\")");

	/* unknown field at the key's line:col (the camel key is allowed) */
	static const char *const listener_fields[] = {
	    "name", "address", "per_connection_buffer_limit_bytes", "timeout", NULL};
	cfg_init(&c, src, "bad.yaml");
	l0 = enter_path(&c, root);
	CHECK_INT(cfg_check_fields(&c, l0, listener_fields), RM_ERROR);
	CHECK_STR(c.err,
		  "bad.yaml:9:5: static_resources.listeners[0].enabled: unknown field 'enabled'");

	/* list elements: an element's own position, or (for true/false/null,
	 * which have none) the enclosing key's */
	cfg_init(&c, src, "bad.yaml");
	l0 = enter_path(&c, root);
	const json_t *en = cfg_enter(&c, l0, "enabled");
	cfg_enter_idx(&c, en, 1);
	cfg_fail(&c, "five");
	CHECK_STR(c.err, "bad.yaml:9:21: static_resources.listeners[0].enabled[1]: five");
	cfg_init(&c, src, "bad.yaml");
	l0 = enter_path(&c, root);
	en = cfg_enter(&c, l0, "enabled");
	cfg_enter_idx(&c, en, 0);
	cfg_fail(&c, "true");
	CHECK_STR(c.err, "bad.yaml:9:5: static_resources.listeners[0].enabled[0]: true");

	/* missing required field: the object's position */
	cfg_init(&c, src, "bad.yaml");
	l0 = enter_path(&c, root);
	sa = cfg_enter(&c, cfg_enter(&c, l0, "address"), "socket_address");
	CHECK(cfg_enter_req(&c, sa, "protocol") == NULL);
	CHECK_STR(c.err,
		  "bad.yaml:13:13: static_resources.listeners[0].address.socket_address.protocol: "
		  "missing required field 'protocol'");
	cfg_init(&c, src, "bad.yaml");
	CHECK(cfg_enter_req(&c, root, "node") == NULL);
	CHECK_STR(c.err, "bad.yaml:1:1: node: missing required field 'node'");
	/* a listener element's position is its first key */
	cfg_init(&c, src, "bad.yaml");
	enter_path(&c, root);
	cfg_fail(&c, "bad listener");
	CHECK_STR(c.err, "bad.yaml:7:5: static_resources.listeners[0]: bad listener");

	cfg_src_free(src);
	json_decref(root);
}

static char *write_tmp(const char *text)
{
	char *path = xstrdup("/tmp/yaml_json_test_XXXXXX");
	int fd = mkstemp(path);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fprintf(stderr, "cannot write %s\n", path);
	if (fd >= 0)
		close(fd);
	return path;
}

TEST(yaml_and_json_files)
{
	char err[512], want[600];
	struct cfg_src *src = NULL;
	char *p = write_tmp("a:\n  b: [1, 2]\n");

	json_t *j = yaml_load_file(p, &src, err, sizeof(err));
	CHECK(j != NULL);
	CHECK(src != NULL);
	CHECK_INT(
	    json_integer_value(json_array_get(json_object_get(json_object_get(j, "a"), "b"), 1)),
	    2);
	json_decref(j);
	cfg_src_free(src);
	unlink(p);
	free(p);

	p = write_tmp("a: [\n");
	CHECK(yaml_load_file(p, NULL, err, sizeof(err)) == NULL);
	snprintf(want, sizeof(want), "%s:2:1: ", p);
	CHECK(!strncmp(err, want, strlen(want)));
	unlink(p);
	free(p);

	CHECK(yaml_load_file("/nonexistent/x.yaml", &src, err, sizeof(err)) == NULL);
	CHECK(src == NULL);
	CHECK_STR(err, "/nonexistent/x.yaml: No such file or directory");

	p = write_tmp("{\"a\": {\"b\": 1}}");
	j = json_load_config_file(p, err, sizeof(err));
	CHECK_INT(json_integer_value(json_object_get(json_object_get(j, "a"), "b")), 1);
	json_decref(j);
	unlink(p);
	free(p);

	p = write_tmp("{\"a\": 1,\n \"a\": 2}");
	CHECK(json_load_config_file(p, err, sizeof(err)) == NULL);
	snprintf(want, sizeof(want), "%s:2:", p);
	CHECK(!strncmp(err, want, strlen(want)));
	CHECK_CONTAINS(err, "duplicate object key");
	unlink(p);
	free(p);

	p = write_tmp("{\"a\": [1,\n  2,,]}");
	CHECK(json_load_config_file(p, err, sizeof(err)) == NULL);
	snprintf(want, sizeof(want), "%s:2:5: ", p);
	CHECK(!strncmp(err, want, strlen(want)));
	unlink(p);
	free(p);
}
