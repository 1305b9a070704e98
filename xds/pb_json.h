/* pb_json.h - decoded protobuf (protobuf-c) -> proto3 JSON (jansson).
 *
 * One descriptor-driven walk turns any message of the compiled .proto subset
 * (xds/proto) into the json_t form the config compiler (proxy/config/cfg.h)
 * reads, so xDS resources and the YAML bootstrap go through the same code:
 *  - keys are the proto field names (snake_case);
 *  - proto3 defaults are omitted (a oneof member that is set is always
 *    written); enums by name (an unknown number stays a number);
 *  - int64/uint64 as JSON integers (uint64 above INT64_MAX as a decimal
 *    string), bytes as base64, NaN/Infinity as strings;
 *  - google.protobuf.Duration as "1.5s", wrappers as bare values,
 *    Struct/Value/ListValue as plain JSON, Empty as {}, Timestamp RFC 3339;
 *  - google.protobuf.Any as {"@type": url, ...fields} (WKT payloads as
 *    {"@type": url, "value": ...}), resolved through pb_registry.
 * Unknown fields (numbers the subset does not know: unsupported by Remora)
 * are an error naming the field path and number, or with
 * PB_JSON_ALLOW_UNKNOWN a warning counted in *unknown_seen. */
#ifndef REMORA_XDS_PB_JSON_H
#define REMORA_XDS_PB_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include "json_path.h"

#define PB_JSON_ALLOW_UNKNOWN 0x1

struct pb_json_ctx {
	unsigned flags;               /* PB_JSON_* */
	unsigned long unknown_seen;   /* unknown fields skipped (ALLOW_UNKNOWN) */
	struct json_path path;        /* field path of the error (or being walked) */
	char err[1024];               /* "<path>: <message>" of the first error */
};

/* Message descriptor by full name ("envoy.config.cluster.v3.Cluster") or
 * type URL ("type.googleapis.com/envoy..."); NULL if not in the subset. */
const ProtobufCMessageDescriptor *pb_find_descriptor(const char *name_or_url);

/* Convert msg.  root_path names msg in errors ("resources[2]"), may be "".
 * Returns a new reference, or NULL with ctx->err set. */
json_t *pb_to_json(struct pb_json_ctx *ctx, const ProtobufCMessage *msg, const char *root_path);

/* Decode the serialized Any payload (type_url + value) and convert it.  The
 * result carries "@type".  NULL with ctx->err set on an unknown type or a
 * malformed payload. */
json_t *pb_any_to_json(struct pb_json_ctx *ctx, const char *type_url, const uint8_t *data,
		       size_t len, const char *root_path);

/* Does m set no field but those named in allowed (NULL-terminated), and
 * carry no unknown field?  "Set" as pb_to_json decides (proto3 defaults
 * are unset).  Lets a caller read m directly when it has a simple shape. */
bool pb_only_fields(const ProtobufCMessage *m, const char *const *allowed);

/* REST: a resource in canonical proto3 JSON (lowerCamelCase keys) of message
 * type_url (or full name) -> the snake_case keys the compiler and the xDS
 * client read, walking the descriptors (Any payloads by their @type; map
 * keys, Struct contents and unknown keys are left alone).  In place. */
void pb_json_snake_keys(json_t *j, const char *type_url);

#endif
