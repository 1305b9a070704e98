/* cfg.h - walking a proto3-JSON config tree with precise errors.
 *
 * Every config source (bootstrap YAML, REST-JSON, protobuf via pb->json)
 * becomes a jansson json_t in the proto3 JSON mapping, and one compiler walks
 * it with these helpers.  The walker keeps a stack of (container, key|index)
 * so an error names the full field path, e.g.
 *   quickstart.yaml:14:13: static_resources.listeners[0].address.socket_address.port_value: expected an integer in 0..65535
 * and, for YAML sources, the file:line:col of the innermost element (the
 * key's position for object members, the element's position for arrays).
 *
 * Field lookup accepts the proto name (snake_case) and its lowerCamelCase
 * JSON name; callers always pass the snake_case name.  Paths print the key
 * as the user wrote it. */
#ifndef REMORA_CONFIG_CFG_H
#define REMORA_CONFIG_CFG_H

#include <jansson.h>
#include "../common.h"

struct cfg_src;   /* positions of nodes in a source file; see yaml_json.h */

#define CFG_MAX_DEPTH 64

struct cfg_frame {
	const json_t *container;   /* object or array */
	const char *key;           /* member key as written (NULL for array index) */
	size_t index;
};

struct cfg_ctx {
	const struct cfg_src *src;        /* may be NULL (no positions) */
	const char *file;                 /* name printed before positions, may be NULL */
	struct cfg_frame st[CFG_MAX_DEPTH];
	int depth;
	char err[1024];                   /* the first error, formatted */
	bool failed;
	unsigned flags;                   /* CFG_F_* */
};

#define CFG_F_ALLOW_UNKNOWN 0x1   /* unknown fields warn instead of failing */
#define CFG_F_SNAKE_KEYS 0x2      /* the input's field names are all snake_case (xDS
				     resources from pb_json / pb_json_snake_keys): the
				     cfg_* readers taking c skip the lowerCamelCase
				     lookup of an absent field (half of a compile's
				     lookups at 10,000 clusters) */

void cfg_init(struct cfg_ctx *c, const struct cfg_src *src, const char *file);

/* Record an error at the current path (first error wins).  Always returns
 * RM_ERROR so callers can `return cfg_fail(c, "...")`.  Format of c->err:
 *   "<file>:<line>:<col>: <path>: <message>"   ("<file>: <path>: ..." if the
 *   position is unknown; no prefix at all without a file name)
 * where <path> is the dotted path of the stack ("a.b[2].c"); empty stack: "<root>". */
int cfg_fail(struct cfg_ctx *c, const char *fmt, ...) PRINTF(2, 3);

/* cfg_fail at the path of member snake_name of obj (as cfg_enter would
 * push it; at obj's path if the member is absent), keeping the stack
 * balanced.  Always returns RM_ERROR. */
int cfg_fail_field(struct cfg_ctx *c, const json_t *obj, const char *snake_name,
		   const char *fmt, ...) PRINTF(4, 5);
/* The first member of names[] (NULL-terminated) present in obj is an
 * error "<msg>" at its path (RM_ERROR); RM_OK when none is.  For fields
 * that are known but not implemented. */
int cfg_reject_fields(struct cfg_ctx *c, const json_t *obj, const char *const *names,
		      const char *msg);

/* Look up member snake_name (or its lowerCamel form) in obj.  If present,
 * push it on the path stack and return its value; the caller must
 * cfg_leave() after.  If absent (or JSON null), push nothing, return NULL. */
const json_t *cfg_enter(struct cfg_ctx *c, const json_t *obj, const char *snake_name);
/* As cfg_enter, but absent is an error "missing required field '<name>'"
 * reported at the path of obj (the name appended to the printed path).
 * Returns NULL on error (nothing pushed). */
const json_t *cfg_enter_req(struct cfg_ctx *c, const json_t *obj, const char *snake_name);
/* Push array element i of arr (must exist) and return it. */
const json_t *cfg_enter_idx(struct cfg_ctx *c, const json_t *arr, size_t i);
void cfg_leave(struct cfg_ctx *c);

/* Lookup without touching the path (snake or lowerCamel). NULL if absent. */
const json_t *cfg_get(const json_t *obj, const char *snake_name);

/* The node is an object/array, or fail "expected an object"/"expected a list". */
int cfg_expect_object(struct cfg_ctx *c, const json_t *v);
int cfg_expect_array(struct cfg_ctx *c, const json_t *v);

/* Every key of obj must be in allowed (NULL-terminated snake_case names,
 * camelCase forms accepted).  "@type" is always allowed.  The first unknown
 * key fails with "unknown field '<key>'" at the key's path/position, unless
 * CFG_F_ALLOW_UNKNOWN, where it logs a warning and counts it in the global
 * cfg_unknown_fields_seen (main thread only; not atomic). */
int cfg_check_fields(struct cfg_ctx *c, const json_t *obj, const char *const *allowed);
extern unsigned long cfg_unknown_fields_seen;

/* Typed getters for member name of obj.  Absent (or null): return RM_OK and
 * leave *out unchanged.  Wrong type/range: fail at the member's path.
 *  - strings: JSON string; *out points into the tree (valid while it lives)
 *  - integers: JSON integer, or a decimal string (proto3 int64 form),
 *    range-checked; {"value": N} wrapper objects are rejected (proto3 JSON
 *    wrappers are bare values)
 *  - bool: true/false
 *  - double: integer or real
 *  - durations: "1.5s" / "0.250s" / "3s" (proto3 form, 's' required,
 *    up to 9 fractional digits, non-negative) or {"seconds":N,"nanos":N};
 *    stored in milliseconds (rounded up if nonzero) by cfg_duration_ms
 *  - enums: the name (from names[], index = value) or the integer value */
int cfg_string(struct cfg_ctx *c, const json_t *obj, const char *name, const char **out);
int cfg_string_req(struct cfg_ctx *c, const json_t *obj, const char *name, const char **out);
int cfg_u32(struct cfg_ctx *c, const json_t *obj, const char *name, uint32_t *out);
int cfg_u64(struct cfg_ctx *c, const json_t *obj, const char *name, uint64_t *out);
int cfg_bool(struct cfg_ctx *c, const json_t *obj, const char *name, bool *out);
int cfg_double(struct cfg_ctx *c, const json_t *obj, const char *name, double *out);
int cfg_duration_ms(struct cfg_ctx *c, const json_t *obj, const char *name, uint64_t *out_ms);
int cfg_enum(struct cfg_ctx *c, const json_t *obj, const char *name,
	     const char *const *names, size_t nnames, int *out);

/* Parse a proto3 duration string; RM_OK/RM_ERROR. Exposed for tests. */
int cfg_parse_duration(const char *s, uint64_t *out_ns);

/* Position of a node / of an object's member key (1-based).  RM_OK if known. */
int cfg_src_node_pos(const struct cfg_src *src, const json_t *node, int *line, int *col);
int cfg_src_key_pos(const struct cfg_src *src, const json_t *obj, const char *key, int *line, int *col);

#endif
