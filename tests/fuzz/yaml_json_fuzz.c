/* yaml_json_fuzz.c - libFuzzer target for the YAML loader and the cfg walker.
 *
 * Every input is loaded with yaml_load_buffer and yaml_load_all_buffer.  A
 * failed load must say where ("fuzz.yaml:<line>:<col>: ...").  A successful
 * load is walked with the cfg helpers (every getter on every member, field
 * checks with and without CFG_F_ALLOW_UNKNOWN, errors at every depth), and
 * the position table is checked: every member of every object has a key
 * position and every non-singleton node a node position.  The walk has a
 * node budget because aliases make a small document a large tree.
 *
 * Build: clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I.
 *          tests/fuzz/yaml_json_fuzz.c proxy/config/yaml_json.c proxy/config/cfg.c
 *          proxy/common.c proxy/log.c $(pkg-config --cflags --libs jansson yaml-0.1) -lm
 * Run:   ./yaml_json_fuzz -max_total_time=20 tests/fuzz/corpus/yaml_json */
#include "proxy/config/yaml_json.h"
#include "proxy/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WALK_BUDGET 20000

static const char *const allowed[] = {
    "name", "address", "port_value", "timeout", "per_connection_buffer_limit_bytes",
    "type", "a",       "b",	     NULL};
static const char *const enum_names[] = {"STATIC", "STRICT_DNS", NULL, "EDS"};

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		__builtin_trap();
	}
}

static bool is_singleton(const json_t *v)
{
	return v == json_true() || v == json_false() || v == json_null();
}

static void walk(struct cfg_ctx *c, const json_t *v, int *budget);

static void walk_member(struct cfg_ctx *c, const json_t *obj, const char *key, int *budget)
{
	uint32_t u32;
	uint64_t u64, ms;
	bool b;
	double d;
	const char *s;
	int e, line, col;

	check(cfg_src_key_pos(c->src, obj, key, &line, &col) == RM_OK && line > 0 && col > 0,
	      "every member has a key position");
	cfg_u32(c, obj, key, &u32);
	cfg_u64(c, obj, key, &u64);
	cfg_bool(c, obj, key, &b);
	cfg_double(c, obj, key, &d);
	cfg_string(c, obj, key, &s);
	cfg_duration_ms(c, obj, key, &ms);
	cfg_enum(c, obj, key, enum_names, 4, &e);
	c->failed = false; /* keep formatting errors all the way down */
	const json_t *child = cfg_enter(c, obj, key);
	if (child) {
		walk(c, child, budget);
		cfg_leave(c);
	}
	cfg_enter_req(c, obj, key); /* pushes if present */
	if (cfg_get(obj, key))
		cfg_leave(c);
	c->failed = false;
}

static void walk(struct cfg_ctx *c, const json_t *v, int *budget)
{
	int line, col;

	if (--*budget < 0)
		return;
	if (!is_singleton(v))
		check(cfg_src_node_pos(c->src, v, &line, &col) == RM_OK,
		      "every node has a position");
	cfg_fail(c, "x");
	check(c->err[0] != '\0', "an error is formatted");
	c->failed = false;

	if (json_is_object(v)) {
		const char *key;
		json_t *m;

		c->flags = (unsigned)*budget & CFG_F_ALLOW_UNKNOWN;
		cfg_check_fields(c, v, allowed);
		c->flags = 0;
		c->failed = false;
		json_object_foreach((json_t *)v, key, m)
		{
			if (*budget < 0)
				break;
			walk_member(c, v, key, budget);
		}
		cfg_enter_req(c, v, "missing_field");
		c->failed = false;
	} else if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v) && *budget >= 0; i++) {
			const json_t *el = cfg_enter_idx(c, v, i);
			if (el) {
				walk(c, el, budget);
				cfg_leave(c);
			}
			c->failed = false;
		}
	}
}

static void check_error(const char *err)
{
	check(!strncmp(err, "fuzz.yaml:", 10), "errors start with the name");
	const char *p = err + 10;
	int line = 0, col = 0, n = 0;
	check(sscanf(p, "%d:%d: %n", &line, &col, &n) == 2 && n > 0 && line > 0 && col > 0,
	      "errors have a 1-based position");
	check(p[n] != '\0', "errors have a message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct cfg_src *src = NULL;
	struct cfg_ctx c;
	int budget = WALK_BUDGET;

	log_current_level = LOG_OFF;
	json_t *j = yaml_load_buffer("fuzz.yaml", (const char *)data, size, &src, err, sizeof(err));
	if (!j) {
		check(src == NULL, "no table on failure");
		check_error(err);
	} else {
		cfg_init(&c, src, "fuzz.yaml");
		walk(&c, j, &budget);
		check(c.depth == 0, "the walk leaves the stack empty");
		cfg_src_free(src);
		json_decref(j);
	}

	src = NULL;
	j = yaml_load_all_buffer("fuzz.yaml", (const char *)data, size, &src, err, sizeof(err));
	if (!j) {
		check_error(err);
	} else {
		check(json_is_array(j), "documents come as an array");
		budget = WALK_BUDGET;
		cfg_init(&c, src, NULL);
		for (size_t i = 0; i < json_array_size(j) && budget >= 0; i++)
			walk(&c, json_array_get(j, i), &budget);
		cfg_src_free(src);
		json_decref(j);
	}
	return 0;
}
