/* kube_watch.h - remora-cp's service discovery from the Kubernetes API:
 * list+watch of v1 Services and discovery.k8s.io/v1 EndpointSlices (all
 * namespaces, or some), turned into catalog services the way Istio names
 * them (<name>.<namespace>.svc.cluster.local, endpoints = the ready
 * addresses of the slices labelled kubernetes.io/service-name).
 *
 * Each (kind, namespace) is one LIST (paged) then one WATCH
 * (?watch=1&resourceVersion=RV&allowWatchBookmarks=true) streamed over
 * kube_api's HTTPS client; 410 Gone / an ERROR event -> relist; a watch
 * that fails reconnects after a jittered exponential backoff (0.5 s .. 30
 * s); one that the server ends (timeoutSeconds) is resumed at once.  The
 * state in force is kept through all of that: a relist replaces it only
 * when the new list is complete.  Main thread only; never blocks.
 * Docs: docs/kubernetes.md "Service discovery". */
#ifndef REMORA_XDS_CP_KUBE_WATCH_H
#define REMORA_XDS_CP_KUBE_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct kube_api;
struct kube_watch;

/* The discovered services changed (or the first sync completed). */
typedef void (*kube_watch_change_cb)(void *arg);

struct kube_watch_options {
	const char *namespaces;   /* "a,b" or NULL: every namespace */
	const char *domain;       /* the cluster's DNS domain (NULL: cluster.local) */
	unsigned watch_timeout_s; /* timeoutSeconds of a watch (0: 300..600 at random) */
};

/* Start listing.  NULL with err (a bad namespace list). */
struct kube_watch *kube_watch_new(struct kube_api *api, const struct kube_watch_options *o,
				  kube_watch_change_cb cb, void *arg, char *err, size_t errlen);
void kube_watch_free(struct kube_watch *w);   /* NULL ok */
/* Every list has completed once. */
bool kube_watch_synced(const struct kube_watch *w);
/* The catalog `services` entries discovered (borrowed; a JSON array, sorted
 * by name; valid until the next change callback returns): {name,
 * endpoints: ["ip:port"...], protocol?, http2?}. */
const json_t *kube_watch_services(const struct kube_watch *w);
/* remora-cp's /metrics lines (Prometheus text, malloc'd). */
char *kube_watch_metrics_text(const struct kube_watch *w);

/* Helpers, exposed for the unit test. */
/* The catalog entries of one Service object given its EndpointSlice
 * objects (a JSON array), appended to out.  domain as above. */
void kube_watch_map_service(const json_t *svc, const json_t *slices, const char *domain,
			    json_t *out);
/* "http" | "http2" | "tcp" | NULL (unknown) for a Service port (appProtocol
 * first, else the port name's prefix before '-'). */
const char *kube_port_protocol(const char *name, const char *app_protocol);

#endif
