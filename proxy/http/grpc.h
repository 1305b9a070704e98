/* grpc.h - gRPC facts shared by the connection manager and filters. */
#ifndef REMORA_HTTP_GRPC_H
#define REMORA_HTTP_GRPC_H

#include <stdbool.h>
#include "headers.h"

/* Envoy's Grpc::Common::hasGrpcContentType: content-type "application/grpc",
 * optionally followed by "+suffix" or ";params". */
bool grpc_is_request(const struct http_headers *h);

/* Envoy's Grpc::Utility::httpToGrpcStatus (grpc's HTTP to gRPC status
 * mapping): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
 * 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN. */
int grpc_status_from_http(int http_status);

#endif
