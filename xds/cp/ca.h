/* ca.h - the certificate authority of remora-cp (Istio's
 * istio.v1.auth.IstioCertificateService/CreateCertificate).
 *
 * A workload sends a PEM CSR with a bearer token; the CA looks the token up
 * (--ca-tokens: token -> namespace + service account) or, with the
 * Kubernetes API (kube_api.h), has the API server review it (TokenReview,
 * audience remora-ca; positive answers cached briefly), verifies the CSR's
 * signature, ignores everything the CSR asks for (subject, SANs, extensions)
 * and issues a leaf whose only identity is the URI SAN
 * spiffe://<trust-domain>/ns/<ns>/sa/<sa>, valid for the requested lifetime
 * capped by max_ttl_s.  The reply is the chain [leaf, root].
 *
 * The root (EC P-256 key, self-signed) comes from cert/key files, or is
 * loaded from / generated into a directory so restarts keep it, or lives in
 * memory only.  Everything here is synchronous and free of network I/O
 * except ca_handle_async's TokenReview (the gRPC server calls it); OpenSSL 3. */
#ifndef REMORA_XDS_CP_CA_H
#define REMORA_XDS_CP_CA_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct ca;
struct kube_api;

struct ca_options {
	const char *cert_path, *key_path; /* --ca-cert / --ca-key: an existing root (both or none) */
	const char *dir;                  /* --ca-dir: root-cert.pem / root-key.pem, generated if absent */
	const char *tokens_path;          /* --ca-tokens: YAML, re-read when its mtime changes */
	const char *trust_domain;         /* --trust-domain (NULL: cluster.local) */
	uint64_t max_ttl_s;               /* --max-cert-ttl (0: 24 h) */
	struct kube_api *kube;            /* TokenReview (not owned), NULL: tokens file only */
	uint64_t review_cache_s;          /* --token-review-cache-ttl: keep a positive review
					   * this long, never past the token's exp (0: no cache) */
};

#define CA_TOKEN_AUDIENCE "remora-ca"   /* the projected token's audience */
#define CA_MAX_PENDING 512              /* TokenReviews in flight; more: UNAVAILABLE */

/* gRPC status codes the CA answers with. */
enum { CA_OK = 0, CA_INVALID_ARGUMENT = 3, CA_INTERNAL = 13, CA_UNAVAILABLE = 14,
       CA_UNAUTHENTICATED = 16 };

#define CA_METHOD_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define CA_ROOT_SECRET "ROOTCA"

/* Load or create the root and load the tokens.  NULL with err on failure
 * (unreadable files, key not matching the certificate, not a CA, bad
 * tokens file). */
struct ca *ca_new(const struct ca_options *o, char *err, size_t errlen);
void ca_free(struct ca *ca);                     /* NULL ok */

/* The root certificate (PEM, owned by ca), for the ROOTCA trust bundle. */
const char *ca_root_pem(const struct ca *ca);
/* The ROOTCA validation-context Secret in proto3 JSON ({"name": "ROOTCA",
 * "validation_context": {"trusted_ca": {"inline_string": ...}}}), a new
 * reference, for control-plane snapshots. */
json_t *ca_root_secret_json(const struct ca *ca);

/* The identity of a bearer token. */
struct ca_identity {
	char ns[128], sa[128];
};
/* Look up "Bearer <token>" (authorization may be NULL).  Re-reads the tokens
 * file if it changed.  CA_OK or CA_UNAUTHENTICATED (msg says why). */
int ca_authenticate(struct ca *ca, const char *authorization, struct ca_identity *id,
		    char *msg, size_t msglen);

/* Sign the PEM CSR for spiffe_id with lifetime ttl_s (<= 0 or above the cap:
 * the cap).  *leaf_pem: malloc'd PEM leaf.  CA_OK, CA_INVALID_ARGUMENT (bad
 * PEM, bad signature, weak key) or CA_INTERNAL, with msg. */
int ca_sign_csr(const struct ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
		int64_t ttl_s, char **leaf_pem, char *msg, size_t msglen);

/* One CreateCertificate call: authorization header, serialized
 * IstioCertificateRequest in; serialized IstioCertificateResponse out
 * (*resp malloc'd) on CA_OK, else a gRPC status with msg.  Counts in the
 * CA's stats (ca_stats). */
int ca_handle(struct ca *ca, const char *authorization, const char *peer, const uint8_t *req,
	      size_t len, uint8_t **resp, size_t *resp_len, char *msg, size_t msglen);

/* ca_handle without blocking: a token neither in the tokens file nor in the
 * review cache is sent to the API server (if any) and done runs when it
 * answered; UNAVAILABLE when it could not (down, TLS, 401/403 to remora-cp).
 * done runs exactly once unless the call is cancelled; resp is valid during
 * the call.  Returns NULL if done already ran, else a handle for
 * ca_pending_cancel (valid until done runs). */
typedef void (*ca_done_fn)(void *arg, int status, const uint8_t *resp, size_t resp_len,
			   const char *msg);
struct ca_pending;
struct ca_pending *ca_handle_async(struct ca *ca, const char *authorization, const char *peer,
				   const uint8_t *req, size_t len, ca_done_fn done, void *arg);
/* The caller went away: done will not run. */
void ca_pending_cancel(struct ca_pending *p);

/* A serving certificate for remora-cp's own TLS port (15012), issued by the
 * root: a new EC P-256 key, serverAuth, valid ttl_s, with the SANs of sans
 * (comma-separated: DNS names, "*.x" wildcards, IP addresses).  *cert and
 * *key are new references.  RM_ERROR with err on a bad name. */
struct x509_st;
struct evp_pkey_st;
int ca_issue_serving(const struct ca *ca, const char *sans, uint64_t ttl_s, struct x509_st **cert,
		     struct evp_pkey_st **key, char *err, size_t errlen);

/* Counters for the control plane's /metrics. */
struct ca_stats {
	uint64_t requests, issued, unauthenticated, invalid;
	uint64_t unavailable;                /* no answer from the API server */
	uint64_t review_cache_hits;          /* tokens accepted from the review cache */
};
const struct ca_stats *ca_get_stats(const struct ca *ca);
/* remora-cp's /metrics lines for them (Prometheus text, malloc'd). */
char *ca_metrics_text(const struct ca *ca);

/* Register CreateCertificate on a remora-cp gRPC server (the CA port). */
struct cp_server;
struct kube_api;
void ca_register(struct ca *ca, struct cp_server *s);

#endif
