/* server.h - the process: main thread, workers, lifecycle. */
#ifndef REMORA_SERVER_H
#define REMORA_SERVER_H

#include <pthread.h>
#include <sys/socket.h>
#include <event2/event.h>
#include "snapshot.h"
#include "../xds/xds_bootstrap.h"
#include "overload.h"

#define SERVER_STATS(X)                                                          \
	X(GAUGE, live) X(GAUGE, state) X(GAUGE, uptime) X(GAUGE, concurrency)    \
	X(GAUGE, total_connections) X(GAUGE, memory_allocated)                   \
	X(GAUGE, memory_heap_size) X(GAUGE, hot_restart_epoch)                   \
	X(GAUGE, days_until_first_cert_expiring) X(COUNTER, envoy_bug_failures)   \
	X(COUNTER, debug_assertion_failures) X(GAUGE, parent_connections)        \
	X(GAUGE, version) X(COUNTER, dynamic_unknown_fields) X(COUNTER, static_unknown_fields) \
	X(GAUGE, route_tables_active)
#define SRV_ENUM(type, name) SRV_##name,
enum { SERVER_STATS(SRV_ENUM) SERVER_STATS_N };

enum server_state { SERVER_LIVE = 0, SERVER_DRAINING = 1, SERVER_PRE_INITIALIZING = 2,
		    SERVER_INITIALIZING = 3 };

struct worker;
struct admin;
struct ads;

struct server_options {
	const char *config_path;
	const char *config_yaml;          /* --config-yaml: the bootstrap inline (not owned) */
	unsigned concurrency;             /* 0 = auto */
	bool validate_only;
	unsigned drain_time_s;            /* --drain-time-s (default 600 in Envoy; we use 5) */
	const char *service_node, *service_cluster;
	const char *log_level;
	bool allow_unknown_fields;
	bool exit_on_zero_active;         /* --exit-on-zero-active-connections */
	char *argv_line;                  /* owned; for /server_info */
};

struct server {
	struct server_options opt;
	struct event_base *base;          /* main thread */
	pthread_t main_thread;
	unsigned nworkers;
	struct worker *workers;           /* owned [nworkers] */
	struct stats_store *stats;        /* owned */
	struct stats_scope *server_stats; /* owned */
	struct stats_scope *lm_stats;     /* listener_manager.* */
	struct snapshot *snap;            /* current (ref) */
	struct admin *admin;              /* owned */
	char *node_id, *node_cluster;     /* owned */
	struct sockaddr_storage admin_addr;
	socklen_t admin_addrlen;
	bool has_admin;
	volatile int state;               /* enum server_state */
	volatile bool healthcheck_failed;
	uint64_t start_ms;
	struct event *sigterm_ev, *sigint_ev, *sigpipe_ev, *tick_ev, *drain_timer;
	struct event *snap_free_ev;          /* frees snapshots released by workers */
	uint64_t drain_deadline_ms;
	bool drain_wait_outbound;         /* SIGTERM drain keeps outbound listeners open: wait
					     for the deadline unless exit_on_zero_active */
	struct event *graceful_timer;     /* /drain_listeners?graceful: stop listeners later */
	unsigned graceful_flags;          /* WDRAIN_* for graceful_timer */
	size_t clusters_pending;          /* clusters not yet initialized (+1 for the xDS
					     initial fetch) */
	struct xds_bootstrap xds;         /* dynamic_resources */
	struct ads *ads;                  /* owned: the ADS client, NULL without xDS */
	struct overload_cfg overload;     /* owned: Bootstrap.overload_manager */
	json_t *runtime;                  /* owned, may be NULL: layered_runtime, flattened */
	int exit_code;
};

extern struct server g_server;

unsigned server_default_concurrency(void);
/* CPU quota of the process's cgroup (and ancestors) in whole CPUs, rounded
 * up; 0 = no quota.  root: the cgroup mount ("/sys/fs/cgroup"); self_cgroup:
 * the text of /proc/self/cgroup.  Exposed for tests. */
unsigned cgroup_cpu_quota(const char *root, const char *self_cgroup);
int server_run(struct server *srv);
/* SIGTERM (main thread): INBOUND and UNSPECIFIED listeners stop accepting
 * and their connections drain; OUTBOUND listeners keep serving (the
 * application may still call out while it shuts down).  Exit 0 when no
 * connection is left (at once if there are no outbound listeners, or with
 * --exit-on-zero-active-connections), else at --drain-time-s.  immediate:
 * exit now. */
void server_begin_drain(struct server *srv, bool immediate);
/* POST /quitquitquit: every listener stops, connections drain, exit 0 when
 * none is left or at --drain-time-s. */
void server_quit(struct server *srv);
/* POST /drain_listeners: stop accepting on all listeners (inbound_only: the
 * INBOUND ones); connections stay.  graceful: drain their connections first
 * and stop the listeners after --drain-time-s (not at all with skip_exit).
 * The process keeps running. */
void server_drain_listeners(struct server *srv, bool inbound_only, bool graceful, bool skip_exit);
void server_free(struct server *srv);

/* xDS (main thread): make s (a reference, taken over) the current snapshot:
 * bind sockets for its new listeners, hand it to the workers. */
void server_xds_publish(struct server *srv, struct snapshot *s);
/* The xDS initial fetch completed (or timed out): workers may start. */
void server_xds_initial_fetch_done(struct server *srv);
/* One initial-fetch hold counted by the caller (clusters_pending) ends, e.g.
 * the certificate client's first certificate (tls/ca_client.c). */
void server_init_release(struct server *srv);
bool server_workers_running(void);
/* Total downstream connections across workers. */
long server_active_connections(const struct server *srv);

#endif
