/* grpc.c - see grpc.h. */
#include "grpc.h"
#include "../common.h"

bool grpc_is_request(const struct http_headers *h)
{
	static const char g[] = "application/grpc";
	size_t n, gl = sizeof(g) - 1;
	const char *ct = hdrs_get(h, "content-type", &n);
	return ct && n >= gl && mem_ieq(ct, g, gl) && (n == gl || ct[gl] == '+' || ct[gl] == ';');
}

int grpc_status_from_http(int status)
{
	switch (status) {
	case 400: return 13;   /* INTERNAL */
	case 401: return 16;   /* UNAUTHENTICATED */
	case 403: return 7;    /* PERMISSION_DENIED */
	case 404: return 12;   /* UNIMPLEMENTED */
	case 429: case 502: case 503: case 504: return 14;   /* UNAVAILABLE */
	default: return 2;     /* UNKNOWN */
	}
}
