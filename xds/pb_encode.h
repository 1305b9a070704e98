/* pb_encode.h - proto3 JSON (jansson) -> protobuf wire bytes, the inverse of
 * pb_json.h, driven by the same descriptors (the xds/proto subset).
 *
 * Accepted JSON (the proto3 JSON mapping, as Envoy's YAML loader takes it):
 *  - keys: proto field names (snake_case) or lowerCamelCase; an unknown key
 *    is an error naming the field path; two members of one oneof are an
 *    error; null means "not set";
 *  - integers as JSON numbers or decimal strings (int64/uint64 too); floats
 *    as numbers, numeric strings, "NaN", "Infinity", "-Infinity";
 *  - enums by name or number; bytes as base64 (standard or URL-safe,
 *    padding optional); repeated fields as arrays; maps as objects;
 *  - google.protobuf.Duration "1.5s", Timestamp RFC 3339, wrappers as bare
 *    values, Struct/Value/ListValue as plain JSON, Empty as {};
 *  - google.protobuf.Any as {"@type": url, ...fields} (a well-known payload
 *    as {"@type": url, "value": ...}), the type resolved by
 *    pb_find_descriptor.
 * Output: fields in field-number order, proto3 defaults of implicit-presence
 * fields left out, repeated numeric fields packed, so equal JSON gives equal
 * bytes (remora-cp hashes them for versions). */
#ifndef REMORA_XDS_PB_ENCODE_H
#define REMORA_XDS_PB_ENCODE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include "json_path.h"

struct pb_encode_ctx {
	struct json_path path;   /* field path being encoded / of the error */
	char err[1024];          /* "<path>: <message>" of the first error */
	const json_t *err_obj;   /* with err_key: the object member at fault (for
				    file positions via cfg_src_key_pos), or NULL */
	char err_key[128];
	const json_t *err_node;  /* else the value at fault (cfg_src_node_pos), or NULL */
};

/* Encode j (an object) as message d.  root_path names j in errors, may be "".
 * 0 with *out (malloc'd, caller frees; non-NULL even when empty) / *len, or
 * -1 with ctx->err set. */
int pb_encode_json(struct pb_encode_ctx *c, const ProtobufCMessageDescriptor *d, const json_t *j,
		   const char *root_path, uint8_t **out, size_t *len);

/* Encode j as the payload of a google.protobuf.Any: its "@type" (required,
 * unless default_type is given: used when j has no "@type") names the
 * message.  0 with *type_url (malloc'd, "type.googleapis.com/<name>") and
 * *out / *len, or -1 with ctx->err set. */
int pb_encode_any_payload(struct pb_encode_ctx *c, const json_t *j, const char *default_type,
			  const char *root_path, char **type_url, uint8_t **out, size_t *len);

#endif
