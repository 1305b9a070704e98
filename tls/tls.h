/* tls.h - TLS transport sockets (envoy.transport_sockets.tls) on OpenSSL 3.
 *
 * A struct tls_ctx is one DownstreamTlsContext (a listener filter chain) or
 * UpstreamTlsContext (a cluster): parsed once from config, it owns the
 * OpenSSL SSL_CTX that new handshakes use.  Certificates and validation
 * contexts come from the secret store (tls/secrets.c): inline ones are
 * anonymous secrets, static_resources.secrets are named.  When a secret
 * changes (a watched file was rewritten; later SDS), every context using it
 * builds a new SSL_CTX on the main thread and posts it to each worker, which
 * swaps its slot: new handshakes use the new certificate, established
 * connections keep theirs (an SSL holds a reference to its SSL_CTX).
 * Workers read only their own slot, so the handshake path takes no lock.
 *
 * Per-connection state (struct tls_conn) lives behind struct conn
 * (proxy/conn.c drives the non-blocking I/O through tls_io_*). */
#ifndef REMORA_TLS_TLS_H
#define REMORA_TLS_TLS_H

#include <sys/socket.h>
#include <jansson.h>
#include "../proxy/config/cfg.h"
#include "../stats/stats.h"

struct build_ctx;
struct event_base;
struct evbuffer;
struct tls_ctx;
struct tls_conn;
struct ssl_st;
struct ssl_ctx_st;

#define TLS_TRANSPORT_NAME "envoy.transport_sockets.tls"
#define TLS_DOWNSTREAM_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define TLS_UPSTREAM_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define RAW_BUFFER_NAME "envoy.transport_sockets.raw_buffer"

/* <listener|cluster>.<name>.ssl.* (Envoy's names). */
#define TLS_STATS(X)                                                                   \
	X(COUNTER, handshake) X(COUNTER, connection_error) X(COUNTER, fail_verify_error) \
	X(COUNTER, fail_verify_san) X(COUNTER, fail_verify_cert_hash)                  \
	X(COUNTER, fail_verify_no_cert) X(COUNTER, no_certificate)                     \
	X(COUNTER, session_reused)
enum { TLS_STATS(STATS_ENUM) TLS_STATS_N };

/* ---- configuration (main thread) ---- */

/* Parse the transport_socket object {name, typed_config} at the walker's
 * position.  server: DownstreamTlsContext expected, else UpstreamTlsContext.
 * stat_scope: "listener.<addr>" / "cluster.<name>" (the "ssl" scope goes
 * under it); tag_*: the scope's tag as for stats_scope_new.  *out = NULL for
 * raw_buffer.  Every certificate and key is loaded and checked here, so a
 * missing or unreadable file fails naming the field path and the file. */
int tls_transport_socket_parse(struct cfg_ctx *c, const json_t *ts, bool server,
			       struct build_ctx *b, const char *stat_scope, const char *tag_prefix,
			       const char *tag_name, const char *tag_value, struct tls_ctx **out);
void tls_ctx_free(struct tls_ctx *t);              /* main thread; NULL ok */

/* static_resources.secrets (called by the bootstrap compiler before
 * listeners and clusters). */
int tls_secrets_parse(struct cfg_ctx *c, const json_t *arr);

/* Main thread, once the event base exists: start watching certificate files
 * (inotify) and the 60 s expiry gauge refresh.  tls_secrets_stop frees the
 * store at exit. */
void tls_secrets_start(struct event_base *base);
void tls_secrets_stop(void);
/* Re-read every file-backed secret now and rebuild contexts whose inputs
 * changed (what the inotify handler does after its debounce). */
void tls_secrets_reload_all(void);

/* Admin /certs (Envoy's JSON shape) and the earliest expiry in days
 * (INT64_MAX when no certificate is loaded).  Main thread. */
json_t *tls_certs_json(void);
int64_t tls_days_until_first_expiry(void);

/* ---- data path (worker) ---- */

/* A new SSL for a connection on fd, using this worker's SSL_CTX; sni for
 * clients (NULL: the context's configured sni).  Never NULL (OOM aborts). */
struct tls_conn *tls_conn_new(struct tls_ctx *t, int fd, bool server, const char *sni,
			      const struct sockaddr *peer);
void tls_conn_free(struct tls_conn *tc);           /* sends close_notify; NULL ok */

enum tls_io { TLS_IO_OK, TLS_IO_WANT_READ, TLS_IO_WANT_WRITE, TLS_IO_EOF, TLS_IO_ERROR };

/* Drive the handshake.  On OK the stats are counted and the peer identity
 * captured; on ERROR the failure is counted, logged with the peer address. */
enum tls_io tls_io_handshake(struct tls_conn *tc);
/* Read decrypted bytes into in, up to about max.  *n: bytes appended.
 * OK: more may follow (call again or check tls_io_pending). */
enum tls_io tls_io_read(struct tls_conn *tc, struct evbuffer *in, size_t max, size_t *n);
/* Encrypt and send out until it is empty (OK) or the socket is full. */
enum tls_io tls_io_write(struct tls_conn *tc, struct evbuffer *out);
/* Decrypted or buffered record bytes wait inside OpenSSL (no socket event
 * will announce them). */
bool tls_io_pending(const struct tls_conn *tc);
void tls_io_shutdown(struct tls_conn *tc);         /* send close_notify */

/* ---- identity (worker, after the handshake) ---- */

/* Negotiated ALPN protocol (not NUL-terminated), NULL if none. */
const char *tls_conn_alpn(const struct tls_conn *tc, unsigned *len);
/* The peer's principal: its first URI SAN (the SPIFFE ID), else its first
 * DNS SAN, else its subject (RFC 2253), NULL without a peer certificate
 * (Envoy's RBAC authenticated.principal_name input). */
const char *tls_conn_peer_principal(const struct tls_conn *tc);
/* The peer's first URI SAN, NULL if none. */
const char *tls_conn_peer_uri_san(const struct tls_conn *tc);
bool tls_conn_peer_cert_presented(const struct tls_conn *tc);
/* Client, before the handshake: verify the server certificate against host
 * (DNS SANs, X509_check_host) instead of the context's SAN matchers
 * (auto_san_validation).  The chain is still verified against trusted_ca. */
void tls_conn_set_verify_host(struct tls_conn *tc, const char *host);
/* The server name the client sent (SNI), NULL if none. */
const char *tls_conn_sni(const struct tls_conn *tc);

/* set_current_client_cert_details flags. */
#define TLS_XFCC_SUBJECT 0x1
#define TLS_XFCC_CERT    0x2
#define TLS_XFCC_CHAIN   0x4
#define TLS_XFCC_DNS     0x8
#define TLS_XFCC_URI     0x10
/* This connection's element of x-forwarded-client-cert
 * ("By=...;Hash=...;Subject=\"...\";URI=..."), computed once per connection
 * and cached (owned by tc). */
const char *tls_conn_xfcc(struct tls_conn *tc, unsigned details, size_t *len);

/* ---- SDS (secrets over xDS; main thread) ---- */

/* sds.<name>.* (Envoy's subscription stat names). */
#define SDS_STATS(X) X(COUNTER, update_attempt) X(COUNTER, update_success)             \
	X(COUNTER, update_rejected) X(COUNTER, init_fetch_timeout) X(GAUGE, version)         \
	X(COUNTER, update_failure) X(GAUGE, update_time) X(GAUGE, retired_contexts)
#define SDS_ENUM(type, name) SDS_##name,
enum { SDS_STATS(SDS_ENUM) SDS_STATS_N };

/* Called (main thread) whenever the set of SDS secret names in use changes
 * or a pending secret becomes usable (arrived, or its initial_fetch_timeout
 * passed).  The xDS client registers one. */
void tls_sds_set_notify(void (*fn)(void *arg), void *arg);
/* The names of the SDS secrets in use, as a JSON set {name: true} (new ref). */
json_t *tls_sds_names(void);
/* Some SDS secret in use has not arrived yet (nor timed out). */
bool tls_sds_waiting(void);
/* Apply one Secret (proto3 JSON) received over SDS.  Returns 1 applied,
 * 0 unchanged or not in use (ignored), -1 rejected (err: "<field path>:
 * <reason>"; the previous version keeps serving).  Contexts using it build
 * a new SSL_CTX for new handshakes; established connections keep theirs. */
int tls_sds_apply(const char *name, const json_t *secret, const char *version, char *err,
		  size_t errlen);
/* Subscription events the xDS client reports for sds.<name>.*: the stream
 * (or a REST poll) failed: update_attempt + update_failure on every secret
 * subscribed over xDS; a Secret named name could not be decoded:
 * update_attempt + update_rejected (if it is subscribed). */
void tls_sds_stream_failed(void);
void tls_sds_reject(const char *name);
/* The context's secrets are all usable (or timed out); NULL ok. */
bool tls_ctx_ready(const struct tls_ctx *t);
/* Bootstrap check: every sds_config names the ADS cluster (ads_cluster NULL:
 * no ADS configured).  Returns -1 with err. */
int tls_sds_check_sources(const char *ads_cluster, char *err, size_t errlen);

/* Secrets provided in-process (the certificate client, tls/ca_client.c,
 * Istio's agent-side SDS): an SDS reference to a declared name (any
 * sds_config) is served from here, never subscribed over ADS, and does not
 * hold the xDS initial fetch (the provider holds the server instead).
 * Declare before the bootstrap is compiled. */
void tls_sds_local_declare(const char *name);
bool tls_sds_is_local(const char *name);
/* New data for a declared secret (a Secret in proto3 JSON): applied now if
 * contexts use it (as tls_sds_apply: new handshakes get it), and to contexts
 * created later.  RM_ERROR with err if rejected (the previous data stays). */
int tls_sds_local_set(const char *name, const json_t *secret, const char *version, char *err,
		      size_t errlen);
void tls_sds_local_clear(void);   /* at exit */

/* Main thread: (re)build every context from its current secrets; returns
 * the number that failed (the old SSL_CTX stays in force for those). */
unsigned tls_ctx_rebuild_all(void);

#endif
