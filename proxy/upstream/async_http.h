/* async_http.h - a small HTTP/1.1 client for the main thread.
 *
 * For control-plane style calls that must never run on a worker: trace
 * exports (stats/tracer.c), later REST xDS.  One request per connection
 * (Connection: close): connect to a host of a cluster (round robin over the
 * cluster's usable hosts, looked up by name in the current snapshot when
 * the request starts), send the request, read the status line and headers,
 * then the body (Content-Length, chunked: decoded, or until close) up to
 * ASYNC_HTTP_MAX_BODY bytes, and call back once.  The
 * whole exchange is bounded by a timeout.  A cluster with a TLS
 * transport_socket is spoken to over TLS with its UpstreamTlsContext (SNI,
 * server verification, a client certificate for mTLS), as the data path
 * does; the handshake counts in cluster.<name>.ssl.*.
 *
 * Main thread only.  The request takes copies of everything it is given. */
#ifndef REMORA_ASYNC_HTTP_H
#define REMORA_ASYNC_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>

struct evbuffer;
struct async_http;

#define ASYNC_HTTP_MAX_BODY (1u << 20)

enum async_http_result {
	ASYNC_HTTP_OK = 0,          /* a response arrived: see status */
	ASYNC_HTTP_NO_HOST,         /* unknown cluster, or no host */
	ASYNC_HTTP_CONNECT_FAIL,    /* connect or I/O error, or closed before a response */
	ASYNC_HTTP_TIMEOUT,
	ASYNC_HTTP_BAD_RESPONSE,    /* unparsable response head */
};

/* Called once per request (never from inside async_http_post).  body: the
 * response body read so far (valid during the call only), NULL if none. */
typedef void (*async_http_cb)(void *arg, enum async_http_result res, int status,
			      struct evbuffer *body);

struct async_http_req {
	const char *cluster;        /* collector cluster name */
	const char *method;         /* "POST" */
	const char *path;           /* "/api/v2/spans" */
	const char *host;           /* Host header value */
	const char *content_type;   /* may be NULL */
	const char *extra_headers;  /* "name: value\r\n..." or NULL */
	uint64_t timeout_ms;
};

/* Start a request; body is drained (moved) into the request.  The callback
 * always runs later on base, also for immediate failures.  Returns a handle
 * valid until the callback has run (for async_http_cancel). */
struct async_http *async_http_send(struct event_base *base, const struct async_http_req *rq,
				   struct evbuffer *body, async_http_cb cb, void *arg);
/* Abort a request without calling its callback (owner going away).
 * Returns the callback argument (for the owner to free), NULL for NULL. */
void *async_http_cancel(struct async_http *a);

/* Split an http:// URI into authority and path (for http_uri.uri).  Returns
 * 0 and two malloc'd strings (path "/" when absent), -1 if not http://. */
int async_http_split_uri(const char *uri, char **authority, char **path);

#endif
