/* yaml_json.h - YAML (libyaml) to jansson, remembering where each node was.
 *
 * Mapping: mappings -> objects, sequences -> arrays, scalars by the YAML 1.2
 * core schema when plain (null/~/empty -> null, true/false -> bool,
 * decimal/0x/0o ints -> integer, floats incl. .inf/.nan -> real, else
 * string); quoted and block scalars are always strings; "!!str" etc. tags
 * are honoured.  Anchors and aliases are supported (an alias shares the
 * anchored value), and "<<" merge keys are applied.  Duplicate keys and
 * non-scalar keys are errors.  Multiple documents: only the first is used
 * by yaml_load_*; yaml_load_all_* return an array of documents.
 *
 * Positions of nodes and of object keys are kept in a struct cfg_src that the
 * compiler uses for "file:line:col" in errors (cfg.h). */
#ifndef REMORA_CONFIG_YAML_JSON_H
#define REMORA_CONFIG_YAML_JSON_H

#include <jansson.h>
#include "cfg.h"

/* Load a file / a buffer.  On success returns a new reference and, if src_out
 * is non-NULL, a position table (free with cfg_src_free) that refers to the
 * returned tree's nodes (keep both alive together).  On failure returns NULL
 * and writes "<name>:<line>:<col>: <problem>" into err. */
json_t *yaml_load_file(const char *path, struct cfg_src **src_out, char *err, size_t errlen);
json_t *yaml_load_buffer(const char *name, const char *buf, size_t len,
			 struct cfg_src **src_out, char *err, size_t errlen);
/* Every document as an array (for multi-document files). */
json_t *yaml_load_all_buffer(const char *name, const char *buf, size_t len,
			     struct cfg_src **src_out, char *err, size_t errlen);

void cfg_src_free(struct cfg_src *src);

/* JSON config text (e.g. a .json bootstrap): parsed with jansson, positions
 * from jansson's error info only.  Same contract as yaml_load_file. */
json_t *json_load_config_file(const char *path, char *err, size_t errlen);

#endif
