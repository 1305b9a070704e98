/* ca_client.h - Remora's workload certificate client (Istio's agent-side
 * CSR flow, in-process).
 *
 * With --ca-address, Remora generates an EC P-256 key (it never leaves the
 * process), sends a CSR to the CA's
 * istio.v1.auth.IstioCertificateService/CreateCertificate over gRPC
 * (xds/grpc_client.c, a unary call; TLS when --ca-root-cert names the root
 * the CA's serving certificate chains to — its SAN must be --ca-server-name
 * or the host of --ca-address, counted in remora.ca_client.ssl.* — else
 * h2c) authenticated by the bearer token read
 * from --ca-token-file at every request, and installs the answer in the
 * secret store as two in-process SDS secrets (tls_sds_local_set): the
 * identity secret (--identity-secret, default "default": key + chain) and
 * "ROOTCA" (the chain's last certificate, the trust bundle).  Contexts that
 * name them with any sds_config use them; new handshakes get a rotated
 * certificate, established connections keep theirs.
 *
 * It renews at half-life with a new key; failures retry with jittered
 * exponential backoff (1 s .. 30 s).  The server does not start its workers
 * (the initial-fetch hold; /ready 503) until the first certificate is
 * installed.  Everything runs on the main thread. */
#ifndef REMORA_TLS_CA_CLIENT_H
#define REMORA_TLS_CA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct server;

/* remora.ca_client.* */
#define CA_CLIENT_STATS(X)                                                        \
	X(COUNTER, cert_requests) X(COUNTER, cert_request_failures)               \
	X(COUNTER, certs_installed) X(GAUGE, cert_expiry_seconds)
#define CAC_ENUM(type, name) CAC_##name,
enum { CA_CLIENT_STATS(CAC_ENUM) CA_CLIENT_STATS_N };

/* A command-line flag (name without "--": ca-address, ca-token-file,
 * cert-ttl, identity-secret, ca-root-cert, ca-server-name).  RM_ERROR with err on a bad value. */
int ca_client_set_option(const char *flag, const char *value, char *err, size_t errlen);
/* After the flags: fill unset options from the environment
 * (REMORA_CA_ADDRESS, REMORA_CA_TOKEN_FILE, REMORA_CERT_TTL,
 * REMORA_IDENTITY_SECRET, REMORA_CA_ROOT_CERT, REMORA_CA_SERVER_NAME), check them and, when enabled, declare the
 * in-process secrets (before the bootstrap is compiled). */
int ca_client_configure(char *err, size_t errlen);
bool ca_client_enabled(void);
/* Main thread, event base running soon: start fetching.  The caller has
 * counted one initial-fetch hold for it; the client calls
 * server_init_release(srv) once, when the first certificate is installed. */
void ca_client_start(struct server *srv);
void ca_client_stop(void);   /* at exit; NULL-safe when never started */

/* Pure helpers, exposed for tests. */
/* "host:port" / "[v6]:port" -> host (malloc'd), port.  RM_ERROR if malformed. */
int ca_client_split_address(const char *addr, char **host, unsigned *port);
/* Seconds for --cert-ttl / REMORA_CERT_TTL: "24h", "90m", "6s", "3600". */
int ca_client_parse_ttl(const char *v, unsigned long *out_s);

#endif
