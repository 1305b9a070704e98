/* ads_decode.h - one xDS resource of a DiscoveryResponse or
 * DeltaDiscoveryResponse (a google.protobuf.Any, possibly wrapped in
 * envoy.service.discovery.v3.Resource) -> proto3 JSON.
 *
 * The decode step of xds/ads.c, in its own file so the xds_response fuzz
 * target (tests/fuzz/xds_response_fuzz.c) runs exactly what the ADS client
 * runs without a server, a stream or an event loop.  No state, no I/O. */
#ifndef REMORA_XDS_ADS_DECODE_H
#define REMORA_XDS_ADS_DECODE_H

#include <stddef.h>
#include <jansson.h>
#include "pb_json.h"
#include "google/protobuf/any.pb-c.h"

#define XDS_TYPE_RESOURCE "type.googleapis.com/envoy.service.discovery.v3.Resource"

/* Decode resources[idx] (any) of a response whose type URL is want_url.  A
 * Resource wrapper (SotW TTL form) is unwrapped; the inner type URL must be
 * want_url.  pj->flags (PB_JSON_ALLOW_UNKNOWN) is used as set by the caller
 * and pj->unknown_seen counts what was skipped.  Returns a new reference
 * without "@type", or NULL with err ("resources[N]...: why") and, when the
 * payload could be unpacked, name = its name_field ("name", or
 * "cluster_name" for ClusterLoadAssignment; else ""). */
json_t *ads_decode_resource(struct pb_json_ctx *pj, const char *want_url, const char *name_field,
			    const Google__Protobuf__Any *any, size_t idx, char *err, size_t errlen,
			    char *name, size_t namelen);

#endif
