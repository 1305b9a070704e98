/* snapshot.h - the immutable, refcounted configuration the workers run on.
 *
 * Built on the main thread by config.c from the bootstrap (later from xDS),
 * published to workers by message; a connection and each of its streams
 * hold a reference to the snapshot they started with, so a new snapshot never
 * changes a request mid-flight. */
#ifndef REMORA_SNAPSHOT_H
#define REMORA_SNAPSHOT_H

#include <sys/socket.h>
#include "config/cfg.h"
#include "../stats/stats.h"

struct cluster;
struct fc_match;
struct lf_pred;
struct tls_ctx;
struct network_filter_ops;
struct listener_filter_ops;
struct server;

#define LISTENER_STATS(X)                                                        \
	X(COUNTER, downstream_cx_total) X(GAUGE, downstream_cx_active)          \
	X(COUNTER, downstream_cx_destroy) X(COUNTER, no_filter_chain_match)     \
	X(COUNTER, downstream_cx_overflow) X(HISTOGRAM, downstream_cx_length_ms)   \
	X(COUNTER, downstream_pre_cx_timeout) X(GAUGE, downstream_pre_cx_active)  \
	X(COUNTER, downstream_listener_filter_remote_close)                     \
	X(COUNTER, downstream_global_cx_overflow) X(COUNTER, downstream_cx_overload_reject)
#define LS_ENUM(type, name) LS_##name,
enum { LISTENER_STATS(LS_ENUM) LISTENER_STATS_N };

struct net_filter {
	const struct network_filter_ops *ops;
	void *cfg;                           /* owned via ops->free_config */
};

struct filter_chain {
	uint32_t dst_port;                   /* filter_chain_match.destination_port, 0 = any */
	struct net_filter *pre;              /* owned [npre]: non-terminal filters, in order */
	size_t npre;
	const struct network_filter_ops *ops; /* terminal network filter */
	void *cfg;                           /* owned via ops->free_config */
	struct tls_ctx *tls;                 /* owned (tls_ctx_free): transport_socket
						envoy.transport_sockets.tls, NULL = raw */
};

enum listener_direction { LISTENER_UNSPECIFIED = 0, LISTENER_INBOUND = 1, LISTENER_OUTBOUND = 2 };

struct listener_filter {                   /* one listener_filters[] entry */
	const struct listener_filter_ops *ops;
	void *cfg;                           /* owned via ops->free_config */
	struct lf_pred *disabled;            /* owned, NULL: always runs (filter_disabled) */
};

struct listener_cfg {
	int refcnt;                          /* atomic: snapshots sharing it (xDS updates keep
						unchanged listeners) */
	uint64_t lds_id;                     /* xDS: same id = same LDS resource (only its
					      * RDS changed): its connections stay; 0 static */
	json_t *json;                        /* owned ref: what it was compiled from (xDS:
						unchanged resources are not recompiled) */
	char *name;                          /* owned */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char addr_str[80];                   /* "127.0.0.1_10000" (stat name form) */
	uint32_t buffer_limit;               /* per_connection_buffer_limit_bytes */
	int backlog;
	struct filter_chain *chains;         /* owned [nchains] */
	size_t nchains;
	struct fc_match *chain_match;        /* owned [nchains]: filter_chain_match of chains[i] */
	struct filter_chain *default_chain;  /* owned, may be NULL (default_filter_chain) */
	struct stats_scope *stats;           /* owned */
	struct listener_filter *lfilters;    /* owned [nlfilters]: run on accept, in order */
	size_t nlfilters;
	uint64_t lf_timeout_ms;              /* listener_filters_timeout (15 s; for inspectors) */
	bool lf_continue_on_timeout;         /* continue_on_listener_filters_timeout */
	bool use_original_dst;               /* hand restored connections to the listener of
						their original destination */
	bool bind_to_port;                   /* false: no socket, only a hand-off target */
	int direction;                       /* traffic_direction: enum listener_direction */
	int *fds;                            /* owned [nfds]: SO_REUSEPORT sockets, -1 after handoff */
	uint64_t cx_limit;                   /* runtime envoy.resource_limits.listener.<name>.
						connection_limit, 0 = none */
	long cx_open;                        /* atomic: connections admitted under cx_limit
						(all workers; only counted when cx_limit) */
	unsigned nfds;
};

struct event;

struct snapshot {
	int refcnt;                          /* atomic */
	uint64_t version;
	json_t *bootstrap;                   /* owned ref; for /config_dump */
	struct listener_cfg **listeners;     /* owned [nlisteners] */
	size_t nlisteners;
	struct cluster **clusters;           /* refs [nclusters] */
	size_t nclusters;
	struct cluster **cl_hash;            /* owned open-addressing table [cl_hash_size] */
	size_t cl_hash_size;
	struct listener_cfg **l_hash;        /* owned: listeners by address [l_hash_size] */
	size_t l_hash_size;
	struct snapshot *defer_next;         /* deferred-free list (snapshot_unref off main) */
};

/* What a filter's parse_config may need while a snapshot is built. */
struct build_ctx {
	struct server *srv;
	struct snapshot *snap;               /* being built; clusters are parsed first */
	struct stats_store *stats;
	unsigned nworkers;
	const char *http_stat_prefix;        /* set by the HCM while its http_filters are
	                                        parsed ("ingress_http"), NULL otherwise */
	/* RDS: the RouteConfiguration (proto3 JSON) named by an HCM's
	 * rds.route_config_name, or NULL when not (yet) received.  Set by the
	 * xDS client (xds/ads.c); NULL for the bootstrap. */
	const json_t *(*rds_lookup)(void *arg, const char *name);
	void *rds_arg;
};

struct snapshot *snapshot_ref(struct snapshot *s);
/* Any thread.  The last reference dropped on the main thread frees at once;
 * dropped on a worker (a stream that outlived its configuration), the free
 * is handed to the main thread, which owns what a snapshot holds (health
 * checkers, DNS queries, timers on the main base, stats scopes the admin
 * renders). */
void snapshot_unref(struct snapshot *s);
/* Main thread: after this, a last reference dropped on another thread
 * activates ev (an event on the main base, activated with event_active,
 * which is thread-safe) whose callback calls snapshot_free_deferred().
 * ev NULL: back to freeing inline (shutdown, after the workers joined). */
void snapshot_defer_frees_to(struct event *ev);
void snapshot_free_deferred(void);
struct cluster *snapshot_find_cluster(const struct snapshot *s, const char *name);
void snapshot_index_clusters(struct snapshot *s);
/* use_original_dst hand-off target for a restored destination: the listener
 * bound to exactly that address:port, else the wildcard (0.0.0.0 / ::)
 * listener of that port, else NULL.  O(1), no allocation (worker). */
struct listener_cfg *snapshot_find_listener_by_addr(const struct snapshot *s,
						    const struct sockaddr *sa);
void snapshot_index_listeners(struct snapshot *s);

/* Compile a bootstrap tree.  Returns NULL with c->err set. */
struct snapshot *config_build_bootstrap(struct cfg_ctx *c, const json_t *root, struct server *srv);

/* ---- dynamic configuration (xDS) ---- */

/* Compile one Listener (proto3 JSON); NULL with c->err set.  b->snap must
 * hold the clusters its filters may reference. */
struct listener_cfg *listener_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b);
struct listener_cfg *listener_ref(struct listener_cfg *l);
void listener_unref(struct listener_cfg *l);   /* main thread (closes unused fds) */
/* A new snapshot (refcount 1) sharing the given clusters and listeners (each
 * gets a reference), indexed; version is set by the caller. */
struct snapshot *snapshot_compose(struct cluster *const *clusters, size_t nclusters,
				  struct listener_cfg *const *listeners, size_t nlisteners,
				  const json_t *bootstrap);

#endif
