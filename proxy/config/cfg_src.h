/* cfg_src.h - the position table behind struct cfg_src (private to
 * proxy/config: cfg.c implements it, yaml_json.c fills it).
 *
 * Two open-addressing hash tables:
 *  - node positions keyed by node pointer, for every non-singleton node
 *    (json_true/false/null are shared singletons and never recorded);
 *  - key positions keyed by (object pointer, key string), for every member.
 * Positions are 1-based.  The table refers to nodes by address only, so the
 * tree must outlive it or be freed with it; objects that are not part of the
 * tree but whose addresses were recorded (e.g. an inline "<<" merge mapping)
 * are kept alive by `keep` so their addresses cannot be reused. */
#ifndef REMORA_CONFIG_CFG_SRC_H
#define REMORA_CONFIG_CFG_SRC_H

#include <jansson.h>
#include "../common.h"

struct cfg_src_node {
	const json_t *node; /* not owned; NULL = empty slot */
	int line, col;
};

struct cfg_src_key {
	const json_t *obj; /* not owned; NULL = empty slot */
	char *key;	   /* owned copy of the member key */
	int line, col;
};

struct cfg_src {
	struct cfg_src_node *nodes; /* owned; nodes_cap slots (power of two) */
	size_t nodes_len, nodes_cap;
	struct cfg_src_key *keys; /* owned; keys_cap slots (power of two) */
	size_t keys_len, keys_cap;
	json_t *keep; /* owned reference: array of nodes kept alive */
};

/* A new empty table; free with cfg_src_free (accepts NULL). */
struct cfg_src *cfg_src_new(void);
void cfg_src_free(struct cfg_src *src);
/* Record a node's position (first record wins; singletons ignored). */
void cfg_src_add_node(struct cfg_src *src, const json_t *node, int line, int col);
/* Record the position of member `key` of obj (first record wins). */
void cfg_src_add_key(struct cfg_src *src, const json_t *obj, const char *key, int line, int col);
/* Keep a (new) reference to node until the table is freed. */
void cfg_src_keep(struct cfg_src *src, json_t *node);

#endif
