/* cp_server.h - the gRPC server of the reference control plane (remora-cp).
 *
 * HTTP/2 on nghttp2 — cleartext (h2c, prior knowledge), or TLS once
 * cp_server_set_tls gave it a context (libevent's OpenSSL bufferevents;
 * ALPN "h2") — on one libevent base
 * (remora-cp is single-threaded).  The server listens on one or more ports
 * (xDS 15010, CA 15012); every port serves the same method table.  Methods
 * are dispatched by exact :path:
 *  - unary methods registered with cp_server_register_unary (e.g. the CA's
 *    /istio.v1.auth.IstioCertificateService/CreateCertificate): one request
 *    message in, one reply message or a non-OK grpc-status out;
 *  - streaming methods (ADS) registered by the xDS code (cp_xds.h).
 * An unknown path is answered with grpc-status 12 (UNIMPLEMENTED).
 * Compressed messages are refused (grpc-status 12). */
#ifndef REMORA_XDS_CP_SERVER_H
#define REMORA_XDS_CP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>

struct cp_server;
struct cp_stream;

/* What a method sees of the call; valid only during the handler call. */
struct cp_call {
	const char *path;          /* ":path", e.g. "/pkg.Service/Method" */
	const char *authorization; /* "authorization" header or NULL */
	const char *peer;          /* "ip:port" of the client */
};

/* Returns a grpc-status (0 = OK); on OK *resp (malloc'd, freed by the server)
 * / *resp_len is the reply message; otherwise msg (NUL-terminated, at most
 * msglen bytes) is the grpc-message. */
typedef int (*cp_unary_fn)(void *arg, const struct cp_call *call, const uint8_t *req,
			   size_t len, uint8_t **resp, size_t *resp_len, char *msg,
			   size_t msglen);

/* Register a unary method for path (copied).  A later registration of the
 * same path replaces the earlier one. */
void cp_server_register_unary(struct cp_server *s, const char *path, cp_unary_fn fn,
			      void *arg);

/* An asynchronous unary method: fn gets the request message (valid during
 * the call only) and the call's stream, and answers exactly once, during the
 * call or later from any event callback, with cp_unary_reply.  If the stream
 * goes away first (client reset, connection closed, shutdown), the abort
 * hook set with cp_stream_on_abort runs instead and the stream handle is
 * invalid from then on. */
typedef void (*cp_unary_async_fn)(void *arg, struct cp_stream *st, const struct cp_call *call,
				  const uint8_t *req, size_t len);
void cp_server_register_unary_async(struct cp_server *s, const char *path, cp_unary_async_fn fn,
				    void *arg);
/* The answer to an asynchronous unary call: status 0 with the reply message
 * resp/len (copied), else a grpc-status with msg. */
void cp_unary_reply(struct cp_stream *st, int status, const uint8_t *resp, size_t len,
		    const char *msg);
/* fn(arg) runs once if st is freed before cp_unary_reply (NULL clears). */
void cp_stream_on_abort(struct cp_stream *st, void (*fn)(void *), void *arg);

/* A bidirectional streaming method.  on_open is called when the request
 * headers arrive and returns the method's per-stream state (NULL refuses the
 * stream with grpc-status 13); on_message once per request message; on_close
 * once when the stream ends for any reason (client half-close, reset,
 * connection closed, cp_stream_finish); the stream handle is invalid after
 * on_close. */
struct cp_stream_ops {
	void *(*on_open)(void *arg, struct cp_stream *st, const struct cp_call *call);
	void (*on_message)(void *state, const uint8_t *msg, size_t len);
	void (*on_close)(void *state);
};
void cp_server_register_stream(struct cp_server *s, const char *path,
			       const struct cp_stream_ops *ops, void *arg);

/* Queue one reply message on a stream (framed here).  0, or -1 if the stream
 * is already closed. */
int cp_stream_send(struct cp_stream *st, const uint8_t *msg, size_t len);
/* End a stream with a status (trailers); on_close follows. */
void cp_stream_finish(struct cp_stream *st, int status, const char *message);
/* "ip:port" of the stream's client. */
const char *cp_stream_peer(const struct cp_stream *st);

/* A server on base with no listener yet.  Never NULL (out of memory aborts). */
struct cp_server *cp_server_new(struct event_base *base);
/* Listen on addr ("0.0.0.0:15010", "127.0.0.1:0", "[::]:15012").  Returns
 * the bound port, or -1 with err filled. */
int cp_server_listen(struct cp_server *s, const char *addr, char *err, size_t errlen);
/* TLS for every connection accepted from now on (NULL: cleartext).  Takes a
 * reference to ctx; connections already open keep the context they started
 * with, so replacing it rotates the serving certificate. */
struct ssl_ctx_st;
struct x509_st;
struct evp_pkey_st;
void cp_server_set_tls(struct cp_server *s, struct ssl_ctx_st *ctx);
/* A server context for cert/key: TLS 1.2+, ALPN h2 selected when offered, no
 * client certificate asked.  New reference, NULL with err. */
struct ssl_ctx_st *cp_server_tls_ctx(struct x509_st *cert, struct evp_pkey_st *key, char *err,
				     size_t errlen);
/* TLS handshakes completed / failed on this server (failures are logged with
 * the peer and OpenSSL's reason). */
struct cp_tls_stats {
	uint64_t handshakes, handshake_errors;
};
const struct cp_tls_stats *cp_server_tls_stats(const struct cp_server *s);

/* Number of open HTTP/2 connections. */
unsigned cp_server_connections(const struct cp_server *s);
/* Close every connection and listener and free.  Accepts NULL. */
void cp_server_free(struct cp_server *s);

#endif
