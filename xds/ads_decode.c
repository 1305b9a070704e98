/* ads_decode.c - decode one xDS resource to proto3 JSON (see ads_decode.h). */
#include "ads_decode.h"

#include <stdio.h>
#include <string.h>
#include "envoy/service/discovery/v3/subset.pb-c.h"

/* The name of a resource that failed to convert, for the NACK ("" if none). */
static void resource_name(const char *url, const uint8_t *data, size_t len, const char *field,
			  char *out, size_t outlen)
{
	const ProtobufCMessageDescriptor *d = pb_find_descriptor(url);
	ProtobufCMessage *m = d ? protobuf_c_message_unpack(d, NULL, len, data) : NULL;
	const ProtobufCFieldDescriptor *f =
		m ? protobuf_c_message_descriptor_get_field_by_name(d, field) : NULL;
	const char *v = f ? *(char *const *)((const char *)m + f->offset) : NULL;
	snprintf(out, outlen, "%s", v ? v : "");
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
}

json_t *ads_decode_resource(struct pb_json_ctx *pj, const char *want_url, const char *name_field,
			    const Google__Protobuf__Any *any, size_t idx, char *err, size_t errlen,
			    char *name, size_t namelen)
{
	char path[64];
	const char *url = any->type_url;
	const uint8_t *data = any->value.data;
	size_t len = any->value.len;
	Envoy__Service__Discovery__V3__Resource *wrap = NULL;
	json_t *j;

	snprintf(path, sizeof(path), "resources[%zu]", idx);
	if (url && !strcmp(url, XDS_TYPE_RESOURCE)) {   /* SotW TTL wrapper */
		wrap = envoy__service__discovery__v3__resource__unpack(NULL, len, data);
		if (!wrap || !wrap->resource) {
			snprintf(err, errlen, "%s: malformed Resource wrapper", path);
			if (wrap)
				envoy__service__discovery__v3__resource__free_unpacked(wrap, NULL);
			return NULL;
		}
		url = wrap->resource->type_url;
		data = wrap->resource->value.data;
		len = wrap->resource->value.len;
	}
	if (!url || strcmp(url, want_url)) {
		snprintf(err, errlen, "%s: %s does not match %s type URL in DiscoveryResponse", path,
			 url ? url : "(none)", want_url);
		j = NULL;
	} else {
		j = pb_any_to_json(pj, url, data, len, path);
		if (!j) {
			snprintf(err, errlen, "%s", pj->err);
			resource_name(url, data, len, name_field, name, namelen);
		} else {
			json_object_del(j, "@type");
		}
	}
	if (wrap)
		envoy__service__discovery__v3__resource__free_unpacked(wrap, NULL);
	return j;
}
