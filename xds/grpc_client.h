/* grpc_client.h - one gRPC bidirectional stream over HTTP/2 on nghttp2, on
 * the main thread's event base: cleartext (h2c, prior knowledge), or TLS with
 * a cluster's UpstreamTlsContext (grpc_client_new_tls; gRPC servers want
 * ALPN "h2": the context's alpn_protocols).
 *
 * Used by the ADS client (xds/ads.c) and, for unary calls, the certificate
 * client (tls/ca_client.c).  One connection carries one stream; the
 * owner reconnects (with backoff) by creating a new client after on_close.
 * Messages are gRPC length-prefixed (1-byte compressed flag, 4-byte length);
 * compressed messages are refused.  Keepalive: a PING every keepalive_ms; no
 * frame at all for 2 x keepalive_ms closes the stream (UNAVAILABLE). */
#ifndef REMORA_XDS_GRPC_CLIENT_H
#define REMORA_XDS_GRPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <event2/event.h>

struct grpc_client;
struct tls_ctx;

struct grpc_client_cbs {
	/* The HTTP/2 connection is up and the request headers are sent. */
	void (*on_open)(void *arg);
	/* One complete message (data valid during the call). */
	void (*on_message)(void *arg, const uint8_t *data, size_t len);
	/* The stream ended: grpc-status (14 UNAVAILABLE for transport errors) and
	 * grpc-message.  Called once; the client must then be freed (not from
	 * inside this callback: the owner defers it, e.g. with a timer). */
	void (*on_close)(void *arg, int status, const char *message);
};

/* Connect to addr and open POST path (":authority" authority).  Never NULL:
 * a failed connect (or TLS handshake) arrives as on_close (14 UNAVAILABLE). */
struct grpc_client *grpc_client_new(struct event_base *base, const struct sockaddr *addr,
				    socklen_t addrlen, const char *authority, const char *path,
				    uint64_t keepalive_ms, const struct grpc_client_cbs *cbs,
				    void *arg);
/* The same over TLS with context tls (not owned: it must outlive the client;
 * NULL: cleartext). */
struct grpc_client *grpc_client_new_tls(struct event_base *base, const struct sockaddr *addr,
					socklen_t addrlen, struct tls_ctx *tls,
					const char *authority, const char *path,
					uint64_t keepalive_ms, const struct grpc_client_cbs *cbs,
					void *arg);
/* Queue one message (framed here).  RM_ERROR if the stream is closed. */
int grpc_client_send(struct grpc_client *g, const uint8_t *msg, size_t len);
/* Add a request header (e.g. "authorization"), before the connection opens
 * (right after grpc_client_new); at most 16.  Sent never-indexed (HPACK). */
void grpc_client_add_metadata(struct grpc_client *g, const char *name, const char *value);
/* Half-close: END_STREAM once the queued messages are sent (a unary call is
 * one grpc_client_send and this).  RM_ERROR if the stream is closed. */
int grpc_client_close_send(struct grpc_client *g);
/* Close and free; no callback afterwards.  Accepts NULL. */
void grpc_client_free(struct grpc_client *g);

#endif
