/* cp_health.c - grpc.health.v1.Health/Check for remora-cp (a unary method
 * on the gRPC ports, for Kubernetes gRPC probes and load balancers).
 * HealthCheckRequest { string service = 1; } -> HealthCheckResponse
 * { ServingStatus status = 1; } (SERVING 1, NOT_SERVING 2), encoded by hand:
 * two fields do not need descriptors.  "" and the ADS service are known;
 * any other service is NOT_FOUND (5), as the gRPC health protocol says. */
#include "cp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../proxy/common.h"

#define ADS_SERVICE "envoy.service.discovery.v3.AggregatedDiscoveryService"

/* The "service" field of a HealthCheckRequest, or -1 if malformed. */
static int parse_service(const uint8_t *p, size_t len, char *out, size_t cap)
{
	size_t i = 0;
	out[0] = 0;
	while (i < len) {
		uint64_t tag = 0, v = 0;
		int shift = 0;
		do {
			if (i >= len || shift > 63)
				return -1;
			tag |= (uint64_t)(p[i] & 0x7f) << shift;
			shift += 7;
		} while (p[i++] & 0x80);
		unsigned wt = tag & 7;
		if (wt == 0) {
			shift = 0;
			do {
				if (i >= len || shift > 63)
					return -1;
				shift += 7;
			} while (p[i++] & 0x80);
			continue;
		}
		if (wt != 2)
			return -1;
		shift = 0;
		do {
			if (i >= len || shift > 63)
				return -1;
			v |= (uint64_t)(p[i] & 0x7f) << shift;
			shift += 7;
		} while (p[i++] & 0x80);
		if (v > len - i)
			return -1;
		if (tag >> 3 == 1)
			snprintf(out, cap, "%.*s", (int)(v < cap ? v : cap - 1), (const char *)p + i);
		i += v;
	}
	return 0;
}

static int health_check(void *arg, const struct cp_call *call, const uint8_t *req, size_t len,
			uint8_t **resp, size_t *resp_len, char *msg, size_t msglen)
{
	bool (*serving)(void) = (bool (*)(void))arg;
	char service[256];
	(void)call;
	if (parse_service(req, len, service, sizeof(service))) {
		snprintf(msg, msglen, "malformed HealthCheckRequest");
		return 3;   /* INVALID_ARGUMENT */
	}
	if (service[0] && strcmp(service, ADS_SERVICE)) {
		snprintf(msg, msglen, "unknown service '%s'", service);
		return 5;   /* NOT_FOUND */
	}
	*resp = xmalloc(2);
	(*resp)[0] = 0x08;
	(*resp)[1] = serving() ? 1 : 2;
	*resp_len = 2;
	return 0;
}

void cp_health_register(struct cp_server *s, bool (*serving)(void))
{
	cp_server_register_unary(s, "/grpc.health.v1.Health/Check", health_check, (void *)serving);
}
