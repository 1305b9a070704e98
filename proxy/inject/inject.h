/* inject.h - Kubernetes sidecar injection as a pure transformation on
 * jansson trees (no I/O), shared by `remora inject` (YAML files) and
 * `remora inject-webhook` (AdmissionReview JSON).  See docs/kubernetes.md.
 *
 * A document is one Kubernetes object.  Pod, Deployment, StatefulSet,
 * DaemonSet, ReplicaSet, Job, CronJob (spec.jobTemplate.spec.template) and
 * `kind: List` (every item) are handled; any other kind is left unchanged.
 * The pod template gets the remora-init init container, the remora-proxy
 * sidecar (native: an init container with restartPolicy Always, or with
 * legacy_sidecar the first regular container plus a postStart
 * `remora wait-ready`), prometheus.io annotations and the remora.io/status
 * annotation that records exactly what was added, so that injecting twice
 * changes nothing and uninject restores the input. */
#ifndef REMORA_INJECT_H
#define REMORA_INJECT_H

#include <stdbool.h>
#include <jansson.h>

#define INJECT_STATUS_ANNOTATION "remora.io/status"
#define INJECT_VERSION "0.1.0"

/* Where the injected sidecar's root certificate and token are mounted. */
#define INJECT_ROOT_CONFIGMAP "remora-ca-root-cert"
#define INJECT_ROOT_DIR "/var/run/secrets/remora"
#define INJECT_ROOT_CERT INJECT_ROOT_DIR "/root-cert.pem"
#define INJECT_TOKEN_DIR "/var/run/secrets/tokens"
#define INJECT_TOKEN_FILE INJECT_TOKEN_DIR "/remora-token"
#define INJECT_TOKEN_AUDIENCE "remora-ca"

struct inject_opts {
	const char *image;	   /* sidecar and init image (not owned) */
	const char *control_plane; /* host:port of the xDS control plane (not owned) */
	bool xds_plaintext;	   /* cleartext xDS (15010) instead of TLS verified
				      against the mounted root */
	const char *ca_address;	   /* host:port of the CA; NULL: no certificate client */
	const char *trust_domain;  /* of the SPIFFE identity the sidecar expects */
	const char *token_secret;  /* NULL: a projected service account token (needs a
				      TokenReview-capable CA); else a Secret whose key
				      "token" is listed in remora-cp's --ca-tokens */
	bool legacy_sidecar;	   /* regular first container instead of a native sidecar */
};

/* Defaults: image "remora:0.1.0", xDS over TLS to
 * "remora-cp.remora-system.svc:15012", the CA at the same address, trust
 * domain "cluster.local", native sidecar. */
void inject_opts_default(struct inject_opts *o);
/* A long option shared by `remora inject` and `remora inject-webhook`
 * (name without "--": xds-address, control-plane, xds-plaintext, ca-address,
 * trust-domain, ca-token-secret; value NULL for flags; value kept, not copied).  1 if the name
 * is not one of those, 0 done, -1 bad value (err says why). */
int inject_opts_set(struct inject_opts *o, const char *name, const char *value, char *err,
		    size_t errlen);

/* Outcome of one document. */
enum inject_result {
	INJECT_DONE = 0,     /* the document was changed */
	INJECT_SKIPPED = 1,  /* nothing to do: other kind, opted out, already
				(un)injected, hostNetwork */
	INJECT_FAILED = -1,  /* invalid input; err says why (with a path) */
};

/* Inject into `doc` in place.  On failure the document may be partly
 * changed: callers work on a copy (json_deep_copy) and discard it.  err
 * gets a one-line reason; for skipped documents it gets the reason too
 * ("opted out by remora.io/inject=false", ...). */
enum inject_result inject_doc(json_t *doc, const struct inject_opts *o, char *err, size_t errlen);

/* Remove what inject_doc added, using the remora.io/status record. */
enum inject_result uninject_doc(json_t *doc, char *err, size_t errlen);

/* The bootstrap the sidecar is started with (also printed by
 * `remora inject --print-bootstrap`).  New reference. */
json_t *inject_bootstrap(const struct inject_opts *o);

/* RFC 6902 JSON Patch turning `from` into `to` (objects compared member by
 * member, arrays and scalars replaced whole).  New reference (an array). */
json_t *json_patch_diff(const json_t *from, const json_t *to);

#endif
