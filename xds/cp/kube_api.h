/* kube_api.h - remora-cp's client of the Kubernetes API server: TokenReview.
 *
 * POST /apis/authentication.k8s.io/v1/tokenreviews over HTTPS (libevent's
 * evhttp on an OpenSSL bufferevent, one connection per review, so nothing
 * blocks the main loop), authenticated with remora-cp's own service-account
 * token (the file is re-read whenever its mtime or size changes: the
 * kubelet rotates it) and verifying the server against the CA bundle (the
 * pod's ca.crt) and the URL's host name or IP.  A review is accepted only
 * with status.authenticated true, the asked audience in status.audiences
 * and a user name system:serviceaccount:<ns>:<sa>.
 *
 * Main thread only (remora-cp is single-threaded). */
#ifndef REMORA_XDS_CP_KUBE_API_H
#define REMORA_XDS_CP_KUBE_API_H

#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>

struct kube_api;
struct kube_review;
struct evbuffer;

#define KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct kube_api_options {
	const char *url;          /* https://host:port (no path) */
	const char *token_path;   /* remora-cp's bearer token (NULL: KUBE_SA_DIR/token) */
	const char *ca_path;      /* the API server's CA bundle (NULL: KUBE_SA_DIR/ca.crt) */
	uint64_t timeout_ms;      /* per review (0: 5000) */
};

/* Parse the URL, resolve its host once (getaddrinfo, at start-up only),
 * load the CA bundle.  The token file is read per review (a missing one is
 * an error then, not now).  NULL with err. */
struct kube_api *kube_api_new(struct event_base *base, const struct kube_api_options *o,
			      char *err, size_t errlen);
/* Abort the reviews in flight (their callbacks do not run) and free.  NULL ok. */
void kube_api_free(struct kube_api *k);
const char *kube_api_url(const struct kube_api *k);
struct event_base *kube_api_base(const struct kube_api *k);

enum kube_review_result {
	KUBE_REVIEW_OK,       /* authenticated: ns/sa filled */
	KUBE_REVIEW_DENIED,   /* the API server answered: not this identity (msg says why) */
	KUBE_REVIEW_FAILED,   /* no usable answer (unreachable, TLS, 401/403 to remora-cp, ...) */
};

/* Called once, never from inside kube_token_review.  ns/sa are valid
 * during the call; msg is a human-readable reason for DENIED/FAILED. */
typedef void (*kube_review_cb)(void *arg, enum kube_review_result res, const char *ns,
			       const char *sa, const char *msg);

/* Start a TokenReview of token for audience.  The handle is valid until the
 * callback has run or kube_review_cancel. */
struct kube_review *kube_token_review(struct kube_api *k, const char *token, const char *audience,
				      kube_review_cb cb, void *arg);
/* The callback will not run; the request finishes (or fails) on its own. */
void kube_review_cancel(struct kube_review *r);

/* ---- GET (list, watch) ------------------------------------------------------- */
struct kube_call;
/* Body bytes of a 200 answer as they arrive (streaming: a watch); take them
 * all from data (what is left is dropped).  May cancel the call. */
typedef void (*kube_data_cb)(void *arg, struct evbuffer *data);
/* The end: code 0 with err when no answer came (connect, TLS, I/O, timeout),
 * else the HTTP status and the body (for a streamed 200: what data did not
 * take, i.e. nothing).  Called once, never from inside kube_get. */
typedef void (*kube_end_cb)(void *arg, int code, struct evbuffer *body, const char *err);

/* GET path (with query) from the API server with remora-cp's token.
 * data NULL: the body is collected (up to max_body bytes) for end.  idle_ms:
 * the read/write inactivity limit (0: the API's timeout).  The handle is
 * valid until end has run or kube_call_cancel. */
struct kube_call *kube_get(struct kube_api *k, const char *path, uint64_t idle_ms,
			   size_t max_body, kube_data_cb data, kube_end_cb end, void *arg);
/* Close the call; no callback runs after this (also fine inside data). */
void kube_call_cancel(struct kube_call *c);

/* The reasons a review fails, for the failed counter's label. */
#define KUBE_FAIL_REASONS(X) \
	X(unreachable)  /* connect, TLS handshake or I/O error, timeout */ \
	X(unauthorized) /* 401: remora-cp's own token refused */ \
	X(forbidden)    /* 403: remora-cp lacks RBAC for tokenreviews create */ \
	X(http_error)   /* another status */ \
	X(bad_response) /* not a TokenReview */ \
	X(no_credentials) /* remora-cp's token file unreadable */
#define KUBE_FAIL_ENUM(n) KUBE_FAIL_##n,
enum kube_fail_reason { KUBE_FAIL_REASONS(KUBE_FAIL_ENUM) KUBE_FAIL_N };

struct kube_api_stats {
	uint64_t reviews, denied, in_flight;
	uint64_t failed[KUBE_FAIL_N];
};
const struct kube_api_stats *kube_api_get_stats(const struct kube_api *k);
/* remora-cp's /metrics lines for them (Prometheus text, malloc'd). */
char *kube_api_metrics_text(const struct kube_api *k);

/* Helpers, exposed for the unit test. */
/* "system:serviceaccount:<ns>:<sa>" -> ns/sa (DNS-1123 names).  0 or -1. */
int kube_sa_username(const char *user, char *ns, size_t nslen, char *sa, size_t salen);
/* The "exp" claim of a JWT-shaped token (not verified), or 0. */
int64_t kube_jwt_exp(const char *token);

#endif
