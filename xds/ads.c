/* ads.c - ADS client (state of the world or delta): subscriptions, ACK/NACK,
 * applying updates.
 *
 * State per type URL: the last accepted version, the newest nonce, and the
 * accepted resources as proto3 JSON (name -> JSON).  Clusters are compiled
 * when CDS accepts them (unchanged ones keep their object, host set and
 * pools); an updated or new cluster is "warming" until it is initialized
 * (EDS clusters: their ClusterLoadAssignment, or initial_fetch_timeout) and
 * the previous version stays in use meanwhile.  Listeners are compiled once
 * every RouteConfiguration their HCMs name (rds) arrived, or the
 * subscription's own initial_fetch_timeout passed (struct rds_sub; then an
 * empty route table: 404s, as Envoy); until then they are
 * warming and not published.  Every accepted change builds a new snapshot
 * from the static resources plus the active dynamic ones.
 *
 * CDS and EDS resources are applied one at a time as they are decoded
 * (cds_one, eds_one; both protocols and REST), and kept compactly (xres.h):
 * the payload as received, compared byte for byte with the next version,
 * so an unchanged resource is neither decoded nor compiled again; a
 * changed one is decoded to proto3 JSON, compiled and the JSON freed at
 * once, so a response's transient memory is one resource's.  Dynamic
 * clusters and EDS names are found through hash indexes (strmap), EDS users
 * through a lazily rebuilt array grouped by service name, and the EDS
 * subscription set is recomputed only after a cluster change.  LDS, RDS and
 * SDS decode into a "got" set (name -> JSON) applied with the listener
 * rebuild; SotW adds full-state removal for CDS/LDS, delta adds
 * removed_resources.  A delta apply costs O(changed resources). */
#include "ads.h"
#include "ads_decode.h"

#include <malloc.h>
#include <math.h>
#include <event2/buffer.h>
#include "grpc_client.h"
#include "pb_json.h"
#include "xres.h"
#include "pb_fast.h"
#include "../proxy/strmap.h"
#include "../proxy/server.h"
#include "../proxy/log.h"
#include "../proxy/upstream/cluster.h"
#include "../proxy/upstream/async_http.h"
#include "../tls/tls.h"
#include "../stats/config_dump.h"
#include "envoy/service/discovery/v3/subset.pb-c.h"

#define TYPE_CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define TYPE_EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define TYPE_LDS "type.googleapis.com/envoy.config.listener.v3.Listener"
#define TYPE_RDS "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define TYPE_SDS "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define DELTA_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS 30000
#define KEEPALIVE_MS 30000
#define NACK_DELAY_BASE_MS 100
#define NACK_DELAY_MAX_MS 10000

enum { T_CDS, T_EDS, T_LDS, T_RDS, T_SDS, T_N };
static const char *const type_urls[T_N] = { TYPE_CDS, TYPE_EDS, TYPE_LDS, TYPE_RDS, TYPE_SDS };
static const char *const type_names[T_N] = { "Cluster", "ClusterLoadAssignment", "Listener",
					      "RouteConfiguration", "Secret" };
/* REST: POST /v3/discovery:<rest_paths[t]> */
static const char *const rest_paths[T_N] = { "/v3/discovery:clusters", "/v3/discovery:endpoints",
					     "/v3/discovery:listeners", "/v3/discovery:routes",
					     "/v3/discovery:secrets" };

/* Subscription stats (Envoy's names), main-thread-only scopes:
 * cluster_manager.cds.*, listener_manager.lds.* (XDS_UPDATE_STATS) and
 * http.<stat_prefix>.rds.<route_config_name>.* (RDS_STATS) share the first
 * eight; EDS counts the same events in cluster.<name>.* (CLUSTER_STATS) and
 * SDS in sds.<name>.* (tls/secrets.c). */
#define SUB_STATS(X) X(COUNTER, update_attempt) X(COUNTER, update_success) \
	X(COUNTER, update_rejected) X(COUNTER, update_failure) X(COUNTER, update_empty) \
	X(GAUGE, version) X(COUNTER, init_fetch_timeout) X(GAUGE, update_time)
#define XDS_UPDATE_STATS(X) SUB_STATS(X) X(HISTOGRAM, update_duration)
#define RDS_STATS(X) SUB_STATS(X) X(COUNTER, config_reload) X(GAUGE, config_reload_time_ms)
#define XU_ENUM(type, name) XU_##name,
enum { XDS_UPDATE_STATS(XU_ENUM) XU_N };
#define RS_ENUM(type, name) RS_##name,
enum { RDS_STATS(RS_ENUM) RS_N };
_Static_assert((int)RS_update_time == (int)XU_update_time, "RDS_STATS starts with SUB_STATS");
static const struct stat_desc xu_desc[] = { XDS_UPDATE_STATS(STATS_DESC) };
static const struct stat_desc rds_desc[] = { RDS_STATS(STATS_DESC) };

/* What happened to one subscription (one resource name, or CDS/LDS). */
enum sub_ev {
	SE_SUCCESS,                 /* accepted (unchanged included) */
	SE_EMPTY,                   /* accepted, no resource for it (update_empty too) */
	SE_REJECTED,                /* invalid: NACKed */
	SE_FAILURE,                 /* the stream failed / a REST poll failed */
	SE_TIMEOUT,                 /* initial_fetch_timeout */
};
/* The stat indices a scope counts sub_ev in: attempt, success, rejected,
 * failure, empty, init_fetch_timeout, version, update_time. */
struct sub_idx {
	unsigned attempt, success, rejected, failure, empty, timeout, version, time;
};
static const struct sub_idx xu_idx = { XU_update_attempt, XU_update_success, XU_update_rejected,
				       XU_update_failure, XU_update_empty, XU_init_fetch_timeout,
				       XU_version, XU_update_time };
static const struct sub_idx eds_idx = { update_attempt, update_success, CL_update_rejected,
					update_failure, CL_update_empty, CL_init_fetch_timeout,
					CL_version, CL_update_time };

struct ads;
/* One RDS subscription, as Envoy's: http.<prefix>.rds.<name>, one per (HCM
 * stat_prefix, route_config_name) of the accepted listeners, individually
 * allocated (its timer points to it).  Its initial_fetch_timeout runs from
 * its creation until the route configuration first arrives; a later update
 * or a listener update keeping the pair does not restart it. */
struct rds_sub {
	struct ads *a;
	char *prefix;               /* owned */
	char *name;                 /* owned */
	struct stats_scope *stats;  /* owned (a reference: shared by name) */
	struct event *timer;        /* owned: initial_fetch_timeout; NULL if it is 0 or
				     * the configuration was there at creation */
	uint64_t timeout_ms;        /* rds.config_source.initial_fetch_timeout (0: none) */
	bool fetched;               /* the configuration arrived once: the timer is over */
	bool timed_out;             /* the timer fired first: while the configuration
				     * is missing, the listeners use an empty table */
};
#define CP_STATS(X) X(GAUGE, connected_state) X(COUNTER, stream_reconnects) \
	X(GAUGE, pending_requests)
#define CP_ENUM(type, name) CP_##name,
enum { CP_STATS(CP_ENUM) CP_N };
static const struct stat_desc cp_desc[] = { CP_STATS(STATS_DESC) };
#define CM_STATS(X) X(GAUGE, active_clusters) X(GAUGE, warming_clusters)
#define CM_ENUM(type, name) CM_##name,
enum { CM_STATS(CM_ENUM) CM_N };
static const struct stat_desc cm_desc[] = { CM_STATS(STATS_DESC) };

/* The state of one resource type, whatever transports carry it. */
struct xtype {
	char *version;              /* owned: last accepted version_info from any source
				     * ("" none; /config_dump, the version gauge) */
	json_t *res;                /* owned: accepted resources, name -> JSON (LDS, RDS,
				     * SDS; CDS and EDS: a->dc, a->eds_map) */
	bool got_first;             /* a response arrived (initial fetch) */
	json_t *rver;               /* owned, delta: name -> version of the accepted resources
				     * (CDS, EDS: in their entries) */
	struct ads *owner;
	int type;
	struct stats_scope *stats;  /* owned for CDS/LDS, else NULL */
	json_t *meta;               /* owned: name -> {version_info, last_updated} of the
				     * accepted version (/config_dump) */
	json_t *errors;             /* owned, NULL if none: name -> UpdateFailureState of its
				     * last rejected update (/config_dump error_state) */
};

struct xchan;

/* A sorted list of distinct names in one allocation (the pointers, then the
 * strings): a subscription of 10,000 EDS names costs ~14 bytes a name, not
 * a jansson string and its array slot (~60 with malloc's overhead). */
struct namelist {
	size_t n;
	const char *v[];            /* [n], sorted (strcmp), pointing after v[n - 1] */
};

/* One type on one transport: its protocol state.  A source's versions and
 * nonces are its own (Envoy: one subscription per (config source, type)). */
struct xsub {
	struct xchan *ch;           /* the transport */
	int type;
	bool wildcard;              /* CDS/LDS of dynamic_resources: subscribed to all */
	char *version;              /* owned: last version_info accepted from this source */
	char *nonce;                /* owned: newest nonce on this stream */
	struct namelist *sent_names; /* owned: resource_names last requested (SotW, REST) */
	struct namelist *subs;      /* owned, delta: the subscribed names */
	bool sent_first;            /* delta: this type's first request went on this stream */
	char *nacked_version;       /* owned: last version NACKed (log once) */
	unsigned nack_repeats;      /* the same version NACKed again in a row */
	struct event *nack_ev;      /* owned: a delayed repeat NACK */
	char *nack_err;             /* owned: its error_detail */
	/* REST polling */
	struct async_http *rest_req; /* the request in flight, or NULL */
	struct event *rest_ev;      /* owned: the next poll (refresh_delay) */
	char *rest_err;             /* owned: error_detail for the next request (after a NACK) */
	bool rest_again;            /* poll again as soon as the request in flight ends */
	bool rest_failing;          /* the last poll failed (logged once) */
};

/* One transport: the ADS stream (every type), a per-type gRPC stream, or the
 * REST polling of one type, for one source (xds_bootstrap.h). */
struct xchan {
	struct ads *a;
	const struct xds_source *src; /* interned (xds_source_get) */
	int only;                   /* T_* of a per-type transport; -1: ADS */
	bool delta;                 /* Delta* RPCs */
	struct grpc_client *g;      /* owned, NULL while disconnected (gRPC) */
	struct grpc_client *dead;   /* closed client waiting for free_ev */
	struct event *retry_ev;     /* owned: reconnect (backoff) */
	struct event *free_ev;      /* owned: frees a closed client outside its callback */
	uint64_t backoff_ms;
	bool node_sent, got_response, connected;
	/* xDS failover (src->nsvc == 2), Envoy's policy: see reconnect_next */
	unsigned cur;               /* the grpc_services[] entry of this stream / the next
				     * attempt: 0 primary, 1 failover */
	int answered;               /* the server whose response was last received on this
				     * transport: -1 none yet, else 0 / 1 */
	bool primary_answered;      /* the primary has ever responded: no failover after */
	unsigned primary_fails;     /* primary attempts in a row without a response */
	struct xsub s[T_N];
	struct xchan *next;         /* owned: the next transport */
};

struct dyn_cluster {                /* one CDS resource (individually allocated) */
	char *name;                 /* in this allocation, after the struct; the key in
				     * a->dc_map */
	struct cluster *active;     /* ref, in snapshots; NULL until first warmed */
	struct cluster *warming;    /* ref, started, not initialized yet; or NULL */
	struct event *timer;        /* owned: EDS initial_fetch_timeout of warming */
	struct xmeta *meta;         /* ref: the response the accepted version (warming,
				     * else active) came in */
	struct xmeta *ameta;        /* ref: the same for active */
	char *rver;                 /* owned, delta: the accepted version's resource version */
	uint64_t seen;              /* the last apply (a->gen) that named it */
	uint32_t pos;               /* its index in a->dc */
	bool sds_wait;              /* warming is not started: an SDS secret it uses
				     * has not arrived (tls_ctx_ready) */
	const char *akey, *wkey;    /* interned: the EDS sources of active / warming */
};

struct dyn_eds {                    /* one EDS name, subscribed and/or received */
	char *name;                 /* in this allocation, after the struct; the key in
				     * a->eds_map (the service name) */
	struct xblob *src;          /* owned: the accepted ClusterLoadAssignment; NULL
				     * while only subscribed */
	struct xmeta *meta;         /* ref: the response src came in, or NULL */
	char *rver;                 /* owned, delta: src's resource version */
	uint64_t seen;              /* the last apply (a->gen) that named it */
	uint32_t first_user, nusers; /* its users: a->eds_user[first_user ..] (while
				      * !a->eds_users_dirty) */
	bool subscribed;            /* in the subscription last sent */
	bool wanted;                /* scratch of update_eds_subscription */
};

struct dyn_listener {               /* one LDS resource */
	char *name;                 /* owned */
	struct listener_cfg *l;     /* ref: compiled, published; NULL while warming */
	json_t *rds_used;           /* owned: {name: RouteConfiguration} it was compiled with */
	struct listener_cfg *wl;    /* ref: compiled, waiting for SDS secrets; or NULL */
	json_t *wl_rds;             /* owned: the routes wl was compiled with */
	json_t *ameta;              /* owned: {version_info, last_updated} of l */
};

struct ads {
	struct server *srv;
	struct event *init_ev;      /* owned: initial fetch timeout */
	struct event *publish_ev;   /* owned: coalesced snapshot publication */
	struct event *sds_ev;       /* owned: SDS secrets in use or usable changed */
	const char *applying_version; /* version_info of the response being applied */
	bool initial_done;
	struct xtype t[T_N];
	struct xchan *chans;        /* owned: every transport, created as sources appear */
	struct xchan *ads_ch;       /* the ADS stream (in chans), NULL without ads_config */
	int64_t pending;            /* REST requests in flight (control_plane.pending_requests) */
	bool eds_dirty;             /* clusters changed: recompute the EDS subscription */
	bool tcp_dirty;             /* cluster objects changed: recompile tcp_proxy listeners
				     * before the next publication (refresh_tcp_now) */
	struct dyn_cluster **dc;    /* owned [ndc], capacity capdc; order is not meaningful */
	size_t ndc, capdc;
	size_t nwarming;            /* dc[] entries with a warming version (check_initial
				     * is called per warmed cluster: O(1), not a scan) */
	struct strmap dc_map;       /* cluster name -> dyn_cluster */
	struct strmap eds_map;      /* EDS service name -> dyn_eds (owned) */
	struct dyn_cluster **eds_user; /* owned [neds_user]: the clusters using each EDS name,
					* grouped by name (dyn_eds.first_user/nusers) */
	size_t neds_user;
	bool eds_users_dirty;       /* clusters changed: rebuild eds_user before use */
	uint64_t gen;               /* apply generation (dyn_*.seen) */
	struct dyn_listener *dl;    /* owned [ndl] */
	size_t ndl;
	struct cluster **scl;       /* refs [nscl]: the bootstrap's clusters */
	size_t nscl;
	struct listener_cfg **sl;   /* refs [nsl]: the bootstrap's listeners */
	size_t nsl;
	json_t *bootstrap;          /* ref */
	struct stats_scope *cp_stats, *cm_stats; /* owned */
	struct rds_sub **rsub;      /* owned [nrsub]: the RDS subscriptions */
	size_t nrsub;
	json_t *rsub_index;         /* owned: route config name -> [positions in rsub] */
	bool rsub_dirty;            /* LDS changed: rds_subs_sync */
	json_t *eds_rejected;       /* owned: the ClusterLoadAssignments the response being
				     * applied had rejected (name -> true; count_resources) */
	uint64_t apply_start_us;    /* the response being applied arrived (update_duration) */
	struct pb_json_ctx pj;
};

static void chan_connect(struct xchan *ch);
static void send_ack(struct xsub *s, const char *error);
static void try_publish(struct ads *a);
static void check_initial(struct ads *a);
static void refresh_tcp_listeners(struct ads *a);

/* ---- helpers ------------------------------------------------------------------ */

static void set_str(char **p, const char *v)
{
	free(*p);
	*p = v ? xstrdup(v) : NULL;
}

static int64_t version_gauge(const char *v)
{
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	if (*v && !*end)
		return (int64_t)n;
	uint64_t h = 1469598103934665603ull;
	while (*v)
		h = (h ^ (unsigned char)*v++) * 1099511628211ull;
	return (int64_t)(h >> 12);
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Count ev in one subscription's scope (main thread: shard 0, or the block
 * of lazily stored stats, stats_main_add).  attempt:
 * also update_attempt (not for REST CDS/LDS, counted when the poll went
 * out).  version: of the accepted response (SE_SUCCESS, SE_EMPTY). */
static void sub_count(struct stats_scope *s, const struct sub_idx *ix, enum sub_ev ev,
		      bool attempt, const char *version)
{
	if (!s)
		return;
	if (attempt)
		stats_main_add(s, ix->attempt, 1);
	switch (ev) {
	case SE_EMPTY:
		stats_main_add(s, ix->empty, 1);
		/* fall through */
	case SE_SUCCESS:
		stats_main_add(s, ix->success, 1);
		stats_gauge_set(s, ix->version, version_gauge(version ? version : ""));
		stats_gauge_set(s, ix->time, wall_ms());
		break;
	case SE_REJECTED:	/* (the cluster scope stores these lazily) */
		stats_main_add(s, ix->rejected, 1);
		break;
	case SE_FAILURE:
		stats_main_add(s, ix->failure, 1);
		break;
	case SE_TIMEOUT:
		stats_main_add(s, ix->timeout, 1);
		break;
	}
}

/* Names in strcmp order (qsort/bsearch over arrays of char *). */
static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The keys of a set object (consumed) as a namelist (stable subscriptions). */
static struct namelist *namelist_of_set(json_t *set)
{
	size_t n = json_object_size(set), i = 0, bytes = 0;
	const char *k;
	json_t *v;
	struct namelist *l;
	char *p;

	json_object_foreach(set, k, v)
		bytes += strlen(k) + 1;
	l = xmalloc(sizeof(*l) + n * sizeof(l->v[0]) + bytes);
	p = (char *)&l->v[n];
	json_object_foreach(set, k, v) {
		size_t len = strlen(k) + 1;
		memcpy(p, k, len);
		l->v[i++] = p;
		p += len;
	}
	l->n = n;
	qsort(l->v, n, sizeof(l->v[0]), cmp_str);
	json_decref(set);
	return l;
}

static size_t namelist_size(const struct namelist *l)
{
	return l ? l->n : 0;
}

static bool namelist_has(const struct namelist *l, const char *name)
{
	return l && bsearch(&name, l->v, l->n, sizeof(l->v[0]), cmp_str);
}

static bool namelist_equal(const struct namelist *x, const struct namelist *y)
{
	if (namelist_size(x) != namelist_size(y))
		return false;
	for (size_t i = 0; i < namelist_size(x); i++)
		if (strcmp(x->v[i], y->v[i]))
			return false;
	return true;
}

/* A new JSON array of the names (REST requests, delta resubscription). */
static json_t *namelist_json(const struct namelist *l)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < namelist_size(l); i++)
		json_array_append_new(arr, json_string(l->v[i]));
	return arr;
}

static struct dyn_listener *find_dl(struct ads *a, const char *name)
{
	for (size_t i = 0; i < a->ndl; i++)
		if (a->dl[i].name && !strcmp(a->dl[i].name, name))
			return &a->dl[i];
	return NULL;
}

static void dc_free(struct dyn_cluster *d)
{
	if (d->timer)
		event_free(d->timer);
	/* removed: a version still draining leaves the gauges (a cluster of
	 * that name added again owns them) */
	cluster_set_gauges_owner(d->active, false);
	cluster_set_gauges_owner(d->warming, false);
	cluster_unref(d->active);
	cluster_unref(d->warming);
	xmeta_unref(d->meta);
	xmeta_unref(d->ameta);
	free(d->rver);
	free(d);   /* and its name */
}

static void dl_clear(struct dyn_listener *d)
{
	listener_unref(d->wl);
	json_decref(d->wl_rds);
	listener_unref(d->l);
	json_decref(d->rds_used);
	json_decref(d->ameta);
	free(d->name);
}

static struct dyn_cluster *find_dc(struct ads *a, const char *name)
{
	return strmap_get(&a->dc_map, name);
}

static struct dyn_cluster *dc_append(struct ads *a, const char *name)
{
	size_t len = strlen(name) + 1;
	struct dyn_cluster *d = xcalloc(1, sizeof(*d) + len);   /* the name follows */

	if (a->ndc == a->capdc) {
		a->capdc = a->capdc ? a->capdc * 2 : 16;
		a->dc = xrealloc(a->dc, a->capdc * sizeof(*a->dc));
	}
	d->name = memcpy(d + 1, name, len);
	d->pos = (uint32_t)a->ndc;
	a->dc[a->ndc++] = d;
	strmap_put(&a->dc_map, d);
	a->eds_users_dirty = true;
	a->eds_dirty = true;
	return d;
}

/* Remove a dynamic cluster: the last one takes its place (O(1)). */
static void dc_remove_at(struct ads *a, size_t pos)
{
	struct dyn_cluster *d = a->dc[pos];
	log_info("xds: cluster '%s' removed", d->name);
	strmap_del(&a->dc_map, d->name);
	if (d->warming)
		a->nwarming--;
	dc_free(d);
	if (pos != a->ndc - 1) {
		a->dc[pos] = a->dc[a->ndc - 1];
		a->dc[pos]->pos = (uint32_t)pos;
	}
	a->ndc--;
	a->eds_users_dirty = true;
	a->eds_dirty = true;
}

static struct dyn_eds *find_eds(struct ads *a, const char *name)
{
	return strmap_get(&a->eds_map, name);
}

static struct dyn_eds *eds_entry(struct ads *a, const char *name)
{
	struct dyn_eds *e = find_eds(a, name);

	if (!e) {
		size_t len = strlen(name) + 1;
		e = xcalloc(1, sizeof(*e) + len);   /* the name follows */
		e->name = memcpy(e + 1, name, len);
		strmap_put(&a->eds_map, e);
		/* no users: every name a cluster uses got its entry when the
		 * index was built, and a cluster change marks it dirty */
	}
	return e;
}

/* Forget what was received for e (src, versions); the entry itself goes
 * unless it is subscribed. */
static void eds_drop(struct ads *a, struct dyn_eds *e)
{
	free(e->src);
	e->src = NULL;
	xmeta_unref(e->meta);
	e->meta = NULL;
	free(e->rver);
	e->rver = NULL;
	if (e->subscribed)
		return;
	if (e->nusers)   /* the index lists them under this entry */
		a->eds_users_dirty = true;
	strmap_del(&a->eds_map, e->name);
	free(e);
}

/* The per-resource errors of the response being applied, for /config_dump's
 * error_state: add_error notes those written into the response's own NACK
 * buffer (resp.buf; inner buffers are wrapped by their caller), and
 * finish_response moves them to a->t[].errors.  Main thread only. */
static struct {
	const char *buf;            /* the response's error buffer; NULL outside one */
	json_t *errs;               /* owned: type name -> {resource name: detail} */
	json_t *seen;               /* owned: names the response carried (count_resources;
				     * only while errors exist), name -> failed config or true */
	json_t *gone;               /* owned: names it removed (set) */
} resp;

static void resp_begin(const char *buf)
{
	resp.buf = buf;
	json_decref(resp.errs);
	json_decref(resp.seen);
	json_decref(resp.gone);
	resp.errs = resp.seen = resp.gone = NULL;
}

static void resp_note_error(const char *type, const char *name, const char *detail)
{
	char d[4096];
	if (!name || !*name)
		return;   /* no name to show it under */
	if (!resp.errs)
		resp.errs = json_object();
	json_t *m = json_object_get(resp.errs, type);
	if (!m) {
		m = json_object();
		json_object_set_new(resp.errs, type, m);
	}
	const char *prev = json_string_value(json_object_get(m, name));
	snprintf(d, sizeof(d), "%s%s%s '%s': %s", prev ? prev : "", prev ? "; " : "", type, name,
		 detail);
	json_object_set_new(m, name, json_string(d));
}

/* Append "<resource>: <error>" to the NACK detail. */
static void add_error(char *buf, size_t size, const char *type, const char *name, const char *err)
{
	if (buf == resp.buf)
		resp_note_error(type, name, err);
	size_t n = strlen(buf);
	if (n + 8 >= size)
		return;
	snprintf(buf + n, size - n, "%s%s '%s': %s", n ? "; " : "", type, name ? name : "?", err);
}

/* ---- clusters (CDS, EDS) -------------------------------------------------------- */

static void cluster_warmed(struct cluster *cl, void *arg)
{
	struct ads *a = arg;
	struct dyn_cluster *d = find_dc(a, cl->name);
	if (d && d->warming == cl) {
		if (d->timer)
			event_free(d->timer);
		d->timer = NULL;
		if (d->active && (d->active->type == CLUSTER_EDS) &&
		    (cl->type != CLUSTER_EDS || strcmp(d->active->eds_service_name, cl->eds_service_name))) {
			a->eds_dirty = true;   /* the old version's EDS name may go */
			a->eds_users_dirty = true;
		}
		/* the new version is in force: it writes the shared gauges, the
		 * previous one (draining) no longer does */
		cluster_set_gauges_owner(d->active, false);
		cluster_set_gauges_owner(cl, true);
		cluster_unref(d->active);
		d->active = d->warming;
		d->akey = d->wkey;
		d->warming = NULL;
		a->nwarming--;
		xmeta_unref(d->ameta);
		d->ameta = xmeta_ref(d->meta);
		log_debug("xds: cluster '%s' warmed", d->name);
		refresh_tcp_listeners(a);
	}
	try_publish(a);
	check_initial(a);
}

static void eds_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cluster *cl = arg;
	(void)fd;
	(void)what;
	if (!cl->initialized)
		sub_count(cl->stats, &eds_idx, SE_TIMEOUT, true, NULL);
	cluster_eds_fetch_timeout(cl);   /* the warming cluster; calls cluster_warmed */
}

static void launch_warming(struct ads *a, struct dyn_cluster *d);

/* Start a compiled cluster warming; EDS data already received is applied.
 * A cluster whose SDS secrets have not arrived waits (sds_wait). */
static void start_warming(struct ads *a, struct dyn_cluster *d, struct cluster *cl,
			  const char *eds_key)
{
	struct cluster *prev = d->warming ? d->warming : d->active;
	if (cl->type == CLUSTER_EDS &&
	    (!prev || prev->type != CLUSTER_EDS || strcmp(prev->eds_service_name, cl->eds_service_name)))
		a->eds_users_dirty = true;   /* a new service name for this cluster */
	if (!d->warming)
		a->nwarming++;
	cluster_set_gauges_owner(d->warming, false);
	cluster_unref(d->warming);
	/* while the version in force serves, it keeps the gauges (the first
	 * version of a cluster owns them at once) */
	cl->gauges_off = d->active != NULL;
	if (d->timer)
		event_free(d->timer);
	d->timer = NULL;
	d->warming = cl;
	d->wkey = eds_key;
	a->eds_dirty = true;
	d->sds_wait = cl->tls && !tls_ctx_ready(cl->tls);
	if (d->sds_wait) {
		log_info("xds: cluster '%s' warming: waiting for its SDS secrets", d->name);
		return;
	}
	launch_warming(a, d);
}

/* Start the warming cluster d->warming (its secrets are there). */
static void launch_warming(struct ads *a, struct dyn_cluster *d)
{
	struct cluster *cl = d->warming;
	if (cl->type == CLUSTER_EDS) {
		const struct dyn_eds *e = find_eds(a, cl->eds_service_name);
		if (e && e->src) {
			json_t *cla = xblob_to_json(e->src, type_urls[T_EDS]);
			struct cfg_ctx c;
			cfg_init(&c, NULL, NULL);
			c.flags |= CFG_F_SNAKE_KEYS;
			if (!cla || cluster_eds_update(cl, &c, cla))
				log_warn("xds: cluster '%s': stored endpoints rejected: %s", d->name,
					 cla ? c.err : "undecodable");
			json_decref(cla);
		} else if (cl->eds_fetch_timeout_ms) {
			uint64_t ms = cl->eds_fetch_timeout_ms;
			struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
			d->timer = evtimer_new(a->srv->base, eds_timeout_cb, cl);
			event_add(d->timer, &tv);
		}
	}
	cluster_start(cl, a->srv->base, cluster_warmed, a);
}

/* wants[key][name] = true: name is wanted from source key (NULL: ADS). */
static void want_add(json_t *wants, const char *key, const char *name)
{
	if (!key)
		key = XDS_ADS_KEY;
	json_t *set = json_object_get(wants, key);
	if (!set)
		json_object_set_new(wants, key, set = json_object());
	json_object_set_new(set, name, json_true());
}

/* EDS subscriptions: the service names of the EDS clusters (active or
 * warming), by the source of their eds_config: {key: {name: true}}; the
 * dyn_eds of every name wanted is marked wanted (update_eds_subscription).
 * O(clusters): called only after a cluster change. */
static json_t *eds_wants(struct ads *a)
{
	json_t *wants;

	/* Two passes: the long-lived entries first, then the short-lived set.
	 * Interleaved, each freed set member left a hole between two entries
	 * that the heap could not give back (~80 B a cluster at 10,000). */
	for (int pass = 0; pass < 2; pass++) {
		wants = pass ? json_object() : NULL;
		for (size_t i = 0; i < a->ndc; i++) {
			struct cluster *cls[2] = { a->dc[i]->active, a->dc[i]->warming };
			const char *keys[2] = { a->dc[i]->akey, a->dc[i]->wkey };
			for (int k = 0; k < 2; k++) {
				if (!cls[k] || cls[k]->type != CLUSTER_EDS)
					continue;
				if (pass)
					want_add(wants, keys[k], cls[k]->eds_service_name);
				else
					eds_entry(a, cls[k]->eds_service_name)->wanted = true;
			}
		}
	}
	return wants;
}

/* The EDS clusters (active, and warming unless waiting for secrets) of d
 * using service name; up to two. */
static size_t dc_eds_versions(const struct dyn_cluster *d, const char *service, bool warming_too,
			      struct cluster **out)
{
	struct cluster *two[2] = { d->active, warming_too && !d->sds_wait ? d->warming : NULL };
	size_t n = 0;
	for (int k = 0; k < 2; k++)
		if (two[k] && two[k]->type == CLUSTER_EDS &&
		    (!service || !strcmp(two[k]->eds_service_name, service)))
			out[n++] = two[k];
	return n;
}

/* Rebuild the users index: every dyn_eds gets the clusters (active or
 * warming) using its name, in one array grouped by name.  O(clusters),
 * after a cluster change only. */
static void eds_users_rebuild(struct ads *a)
{
	size_t total = 0, next = 0;
	struct cluster *cls[2];

	for (size_t i = 0; i < a->eds_map.cap; i++)
		if (strmap_live(&a->eds_map, i))
			((struct dyn_eds *)a->eds_map.slots[i])->nusers = 0;
	for (size_t i = 0; i < a->ndc; i++) {   /* count (an entry for every name used) */
		size_t n = dc_eds_versions(a->dc[i], NULL, true, cls);
		for (size_t k = 0; k < n; k++) {
			if (k == 1 && !strcmp(cls[0]->eds_service_name, cls[1]->eds_service_name))
				break;   /* both versions on one name: one user */
			eds_entry(a, cls[k]->eds_service_name)->nusers++;
			total++;
		}
	}
	for (size_t i = 0; i < a->eds_map.cap; i++) {   /* place */
		if (strmap_live(&a->eds_map, i)) {
			struct dyn_eds *e = a->eds_map.slots[i];
			e->first_user = (uint32_t)next;
			next += e->nusers;
			e->nusers = 0;
		}
	}
	free(a->eds_user);
	a->eds_user = xmalloc((total ? total : 1) * sizeof(*a->eds_user));
	a->neds_user = total;
	for (size_t i = 0; i < a->ndc; i++) {   /* fill */
		size_t n = dc_eds_versions(a->dc[i], NULL, true, cls);
		for (size_t k = 0; k < n; k++) {
			struct dyn_eds *e;
			if (k == 1 && !strcmp(cls[0]->eds_service_name, cls[1]->eds_service_name))
				break;
			e = find_eds(a, cls[k]->eds_service_name);
			a->eds_user[e->first_user + e->nusers++] = a->dc[i];
		}
	}
	a->eds_users_dirty = false;
}

/* The dynamic clusters using EDS service name: *n of them (the index is
 * rebuilt first if clusters changed). */
static struct dyn_cluster **eds_users_of(struct ads *a, const char *service, size_t *n)
{
	struct dyn_eds *e;

	if (a->eds_users_dirty)
		eds_users_rebuild(a);
	e = find_eds(a, service);
	*n = e ? e->nusers : 0;
	return e && e->nusers ? &a->eds_user[e->first_user] : NULL;
}

/* The stats of the dynamic cluster d if it uses EDS service name (NULL:
 * any), else NULL.  Its versions share the scope (by name). */
static struct stats_scope *eds_scope(const struct dyn_cluster *d, const char *service)
{
	struct cluster *two[2] = { d->warming, d->active };

	for (int k = 0; k < 2; k++)
		if (two[k] && two[k]->type == CLUSTER_EDS &&
		    (!service || !strcmp(two[k]->eds_service_name, service)))
			return two[k]->stats;
	return NULL;
}

/* ev in cluster.<name>.* of every EDS cluster using service (NULL: all of
 * them; Envoy roots each EDS cluster's subscription stats there). */
static void eds_count(struct ads *a, const char *service, enum sub_ev ev, const char *version)
{
	size_t i, n;
	struct dyn_cluster **users;

	if (!service) {
		for (i = 0; i < a->ndc; i++)
			sub_count(eds_scope(a->dc[i], NULL), &eds_idx, ev, true, version);
		return;
	}
	users = eds_users_of(a, service, &n);
	for (i = 0; i < n; i++)
		sub_count(eds_scope(users[i], service), &eds_idx, ev, true, version);
}

/* A static snapshot of the current clusters for compiling listeners (route
 * and tcp_proxy cluster references). */
static struct snapshot *cluster_view(struct ads *a)
{
	size_t n = 0;
	struct cluster **cl = xcalloc(a->nscl + a->ndc + 1, sizeof(*cl));
	for (size_t i = 0; i < a->nscl; i++)
		cl[n++] = a->scl[i];
	for (size_t i = 0; i < a->ndc; i++)
		if (a->dc[i]->active || a->dc[i]->warming)
			cl[n++] = a->dc[i]->active ? a->dc[i]->active : a->dc[i]->warming;
	struct snapshot *s = snapshot_compose(cl, n, NULL, 0, NULL);
	free(cl);
	return s;
}

/* Is j (a decoded LDS/RDS/SDS resource) what is in force for name? */
static bool res_same(struct ads *a, int t, const char *name, const json_t *j)
{
	const json_t *in_force = json_object_get(a->t[t].res, name);
	return in_force && (in_force == j || json_equal(in_force, j));
}

/* Is got (name -> resource) exactly the accepted state?  (LDS, RDS, SDS) */
static bool res_all_same(struct ads *a, int t, const json_t *got)
{
	if (!a->t[t].res || json_object_size(a->t[t].res) != json_object_size(got))
		return false;
	return json_equal(a->t[t].res, got);
}

/* ---- CDS and EDS: one resource at a time ---------------------------------------- */

/* One CDS or EDS resource of a response, before it is compared and applied:
 * its name and payload (gRPC) or JSON (REST), decoded to JSON only when it
 * differs from what is stored. */
struct xin {
	int t;
	size_t idx;                 /* resources[idx] */
	char *name;                 /* owned */
	const uint8_t *pb;          /* gRPC: the payload (in the response), else NULL */
	size_t pblen;
	json_t *j;                  /* owned: decoded (REST: given), NULL until needed */
	Envoy__Service__Discovery__V3__Resource *wrap; /* owned: an unwrapped SotW Resource */
};

/* What one response applies to CDS or EDS. */
struct xbatch {
	int t;
	uint64_t gen;               /* a->gen of this response */
	bool full_state;            /* SotW CDS: dynamic clusters not named are removed */
	struct xmeta *meta;         /* owned ref: the response's version_info and time */
	const char *rver;           /* delta: the resource version of the current one */
	json_t *failed;             /* owned, may be NULL: names rejected before they had an
				     * entry (to report duplicates) */
	struct cluster **start;     /* owned [nstart]: compiled, started once all are applied */
	const char **keys;          /* owned [nstart]: their EDS sources (interned; NULL: ADS) */
	size_t nstart, capstart;
	char *got;                  /* owned [ngot]: EDS names taken (valid name; xobs's
				     * stats), each "<c><name>\0", c '1' when the assignment
				     * was applied anew, else '0'.  One block, not JSON sets
				     * built while the hosts are: their freed members were
				     * holes between long-lived hosts (~80 B a cluster) */
	size_t ngot, capgot;
	json_t *bad;                /* owned: EDS names that could not be used (rejected) */
	struct build_ctx b;
};

static void xin_done(struct xin *in)
{
	free(in->name);
	json_decref(in->j);
	if (in->wrap)
		envoy__service__discovery__v3__resource__free_unpacked(in->wrap, NULL);
	memset(in, 0, sizeof(*in));
}

static const char *name_field(int t)
{
	return t == T_EDS ? "cluster_name" : "name";
}

/* The JSON of in, decoding the payload if not done yet.  NULL with the
 * error added to err. */
static json_t *xin_json(struct ads *a, struct xin *in, char *err, size_t errlen)
{
	char e[1024] = "", path[64];

	if (in->j)
		return in->j;
	snprintf(path, sizeof(path), "resources[%zu]", in->idx);
	a->pj.flags = a->srv->opt.allow_unknown_fields ? PB_JSON_ALLOW_UNKNOWN : 0;
	a->pj.unknown_seen = 0;
	in->j = pb_any_to_json(&a->pj, type_urls[in->t], in->pb, in->pblen, path);
	if (a->pj.unknown_seen)
		stats_add(a->srv->server_stats, 0, SRV_dynamic_unknown_fields,
			  (int64_t)a->pj.unknown_seen);
	if (!in->j) {
		snprintf(e, sizeof(e), "%s", a->pj.err);
		add_error(err, errlen, type_names[in->t], in->name, e);
		return NULL;
	}
	json_object_del(in->j, "@type");
	return in->j;
}

/* Is in what b holds?  Byte for byte (no decoding) when both are protobuf;
 * else (different bytes, or REST) by their JSON. */
static bool xin_same(struct ads *a, struct xin *in, const struct xblob *b, bool *decode_failed,
		     char *err, size_t errlen)
{
	json_t *old, *j;
	bool same;

	*decode_failed = false;
	if (!b)
		return false;
	if (in->pb && xblob_equal(b, XBLOB_PB, in->pb, in->pblen))
		return true;
	if (!(j = xin_json(a, in, err, errlen))) {
		*decode_failed = true;
		return false;
	}
	if (!in->pb && b->kind == XBLOB_JSON) {   /* REST: canonical text */
		struct xblob *nb = xblob_from_json(j);
		same = xblob_equal(b, XBLOB_JSON, nb->data, nb->len);
		free(nb);
		return same;
	}
	old = xblob_to_json(b, type_urls[in->t]);
	same = old && json_equal(old, j);
	json_decref(old);
	return same;
}

/* The blob to keep for an accepted in. */
static struct xblob *xin_blob(const struct xin *in)
{
	return in->pb ? xblob_from_pb(in->pb, in->pblen) : xblob_from_json(in->j);
}

/* A resource of the response (j, a REST resource, consumed; or the payload
 * pb of a gRPC one): its name and the checks common to all of them.  false
 * (error added) if it cannot be applied. */
static bool xin_init(struct ads *a, struct xbatch *bt, struct xin *in, size_t idx,
		     const char *want_name, char *err, size_t errlen)
{
	char e[1024] = "";
	const char *s;
	size_t slen;
	bool dup;

	in->t = bt->t;
	in->idx = idx;
	if (!in->j && in->pb && pb_scan_string(in->pb, in->pblen, 1, &s, &slen) == 1 && slen &&
	    !memchr(s, 0, slen)) {
		in->name = xstrndup(s, slen);   /* Cluster.name, ClusterLoadAssignment.cluster_name */
	} else {
		/* no readable name: decode for the error (or the name) */
		const json_t *n;
		if (!xin_json(a, in, err, errlen))
			return false;
		n = json_object_get(in->j, name_field(bt->t));
		if (json_string_value(n) && *json_string_value(n))
			in->name = xstrdup(json_string_value(n));
	}
	if (!in->name)
		snprintf(e, sizeof(e), "resources[%zu]: missing %s", idx, name_field(bt->t));
	else if (want_name && *want_name && strcmp(want_name, in->name))
		snprintf(e, sizeof(e), "resources[%zu]: the resource's name '%s' differs from its "
			 "Resource wrapper's name '%s'", idx, in->name, want_name);
	if (!e[0] && in->name) {
		if (bt->t == T_CDS) {
			const struct dyn_cluster *d = find_dc(a, in->name);
			dup = d && d->seen == bt->gen;
		} else {
			const struct dyn_eds *ed = find_eds(a, in->name);
			dup = ed && ed->seen == bt->gen;
		}
		if (dup || json_object_get(bt->failed, in->name))
			snprintf(e, sizeof(e), "resources[%zu]: duplicate name", idx);
	}
	if (e[0]) {
		const char *n = in->name ? in->name : want_name;
		add_error(err, errlen, type_names[bt->t], n, e);
		if (bt->t == T_EDS && n && *n)   /* counted update_rejected */
			json_object_set_new(bt->bad, n, json_true());
		return false;
	}
	return true;
}

static void batch_failed(struct xbatch *bt, const char *name)
{
	if (!bt->failed)
		bt->failed = json_object();
	json_object_set_new(bt->failed, name, json_true());
}

static void set_rver(char **slot, const char *v)
{
	free(*slot);
	*slot = v ? xstrdup(v) : NULL;
}

/* One CDS resource: unchanged (kept), or compiled and queued to start once
 * the whole response is applied; rejected: the previous version stays. */
static void cds_one(struct ads *a, struct xbatch *bt, struct xin *in, char *err, size_t errlen)
{
	const char *name = in->name;
	struct dyn_cluster *d;
	struct cluster *cur, *cl;
	struct cfg_ctx c;
	const char *eds_key = NULL;   /* the source of its eds_config (NULL: ADS, the only
				       * one the protobuf fast path accepts) */
	bool bad = false;

	for (size_t i = 0; i < a->nscl; i++)
		if (!strcmp(a->scl[i]->name, name)) {
			add_error(err, errlen, "Cluster", name, "a static cluster has that name");
			batch_failed(bt, name);
			return;
		}
	d = find_dc(a, name);
	cur = d ? (d->warming ? d->warming : d->active) : NULL;
	if (cur && xin_same(a, in, cur->src, &bad, err, errlen)) {   /* unchanged: keep it */
		d->seen = bt->gen;
		if (bt->rver)
			set_rver(&d->rver, bt->rver);
		if (in->pb && cur->src->kind == XBLOB_PB &&
		    !xblob_equal(cur->src, XBLOB_PB, in->pb, in->pblen)) {
			free(cur->src);   /* same JSON, other bytes: compare with these next time */
			cur->src = xblob_from_pb(in->pb, in->pblen);
		}
		return;
	}
	if (bad) {   /* undecodable: as if absent */
		batch_failed(bt, name);
		return;
	}
	/* the common shape straight from the protobuf; else proto3 JSON and
	 * the config walker (which also has every error message) */
	if (!in->pb || !pb_fast_cluster(in->pb, in->pblen, &bt->b, &cl)) {
		if (!xin_json(a, in, err, errlen)) {
			batch_failed(bt, name);
			return;
		}
		if (d)
			d->seen = bt->gen;
		cfg_init(&c, NULL, NULL);
		c.flags |= CFG_F_SNAKE_KEYS;   /* pb_json / pb_json_snake_keys output */
		if (a->srv->opt.allow_unknown_fields)
			c.flags |= CFG_F_ALLOW_UNKNOWN;
		cl = cluster_parse(&c, in->j, &bt->b);
		if (!cl) {
			add_error(err, errlen, "Cluster", name, c.err);
			if (!d)
				batch_failed(bt, name);
			return;
		}
		if (cl->type == CLUSTER_EDS)
			eds_key = xds_source_key(cfg_get(cfg_get(in->j, "eds_cluster_config"),
							 "eds_config"));
	}
	if (d)
		d->seen = bt->gen;
	cl->src = xin_blob(in);
	if (!d) {
		d = dc_append(a, name);
		d->seen = bt->gen;
	}
	xmeta_unref(d->meta);
	d->meta = xmeta_ref(bt->meta);
	if (bt->rver)
		set_rver(&d->rver, bt->rver);
	if (bt->nstart == bt->capstart) {
		bt->capstart = bt->capstart ? bt->capstart * 2 : 16;
		bt->start = xrealloc(bt->start, bt->capstart * sizeof(*bt->start));
		bt->keys = xrealloc(bt->keys, bt->capstart * sizeof(*bt->keys));
	}
	bt->keys[bt->nstart] = eds_key;
	bt->start[bt->nstart++] = cl;
}

/* One ClusterLoadAssignment (cla NULL and no eps: removed, the users get no
 * hosts; or eps[neps], already parsed, each user getting a copy) to every
 * cluster using name.  Returns false if one of them rejected it. */
static bool eds_apply_eps(struct ads *a, const char *name, const json_t *cla,
			  const struct endpoint_cfg *eps, size_t neps, char *err, size_t errlen)
{
	struct dyn_eds *e;
	struct cluster *cls[16], **many = NULL, **list = cls;
	json_t *empty = NULL;
	size_t n = 0, i, nusers;
	bool ok = true;

	if (a->eds_users_dirty)
		eds_users_rebuild(a);
	e = find_eds(a, name);
	nusers = e ? e->nusers : 0;
	/* collect (with refs) first: updating a warming cluster may warm it,
	 * which replaces the active one */
	if (nusers * 2 > ARRAY_SIZE(cls))
		list = many = xcalloc(nusers * 2, sizeof(*many));
	for (i = 0; i < nusers; i++) {
		struct cluster *two[2];
		size_t k = dc_eds_versions(a->eds_user[e->first_user + i], name, true, two);
		for (size_t m = 0; m < k; m++)
			list[n++] = cluster_ref(two[m]);
	}
	if (!cla && !eps)
		cla = empty = json_pack("{s:s}", "cluster_name", name);
	for (i = 0; i < n; i++) {
		struct cfg_ctx c;
		if (eps) {
			struct endpoint_cfg *copy = xmalloc((neps ? neps : 1) * sizeof(*copy));
			for (size_t k = 0; k < neps; k++) {
				copy[k] = eps[k];
				copy[k].address = xstrdup(eps[k].address);
			}
			cluster_eds_set(list[i], copy, neps);
			cluster_unref(list[i]);
			continue;
		}
		cfg_init(&c, NULL, NULL);
		c.flags |= CFG_F_SNAKE_KEYS;
		if (cluster_eds_update(list[i], &c, cla)) {
			add_error(err, errlen, "ClusterLoadAssignment", name, c.err);
			ok = false;
		}
		cluster_unref(list[i]);
	}
	json_decref(empty);
	free(many);
	return ok;
}

static bool eds_apply_one(struct ads *a, const char *name, const json_t *cla, char *err,
			  size_t errlen)
{
	return eds_apply_eps(a, name, cla, NULL, 0, err, errlen);
}

/* Record an EDS name taken (bt->got); returns its offset there. */
static size_t batch_got(struct xbatch *bt, const char *name)
{
	size_t len = strlen(name) + 1, off = bt->ngot;

	if (bt->ngot + len + 1 > bt->capgot) {
		bt->capgot = MAX(bt->capgot * 2, bt->ngot + len + 1 + 4096);
		bt->got = xrealloc(bt->got, bt->capgot);
	}
	bt->got[off] = '0';
	memcpy(bt->got + off + 1, name, len);
	bt->ngot += len + 1;
	return off;
}

/* One EDS resource: unchanged, or applied to its clusters and kept; one a
 * cluster rejected is not kept (retried when resent). */
static void eds_one(struct ads *a, struct xbatch *bt, struct xin *in, char *err, size_t errlen)
{
	struct dyn_eds *e = find_eds(a, in->name);
	bool bad = false;

	size_t got = batch_got(bt, in->name);
	if (e && xin_same(a, in, e->src, &bad, err, errlen)) {
		e->seen = bt->gen;
		if (bt->rver)
			set_rver(&e->rver, bt->rver);
		if (in->pb && e->src->kind == XBLOB_PB &&
		    !xblob_equal(e->src, XBLOB_PB, in->pb, in->pblen)) {
			free(e->src);
			e->src = xblob_from_pb(in->pb, in->pblen);
		}
		return;
	}
	if (e && bad) {
		batch_failed(bt, in->name);
		json_object_set_new(a->eds_rejected, in->name, json_true());
		return;
	}
	struct endpoint_cfg *eps = NULL;
	size_t neps = 0;
	bool applied;
	if (in->pb && pb_fast_cla(in->pb, in->pblen, &eps, &neps)) {   /* the common shape */
		applied = eds_apply_eps(a, in->name, NULL, eps, neps, err, errlen);
		for (size_t k = 0; k < neps; k++)
			free(eps[k].address);
		free(eps);
	} else if (!xin_json(a, in, err, errlen)) {
		batch_failed(bt, in->name);
		json_object_set_new(a->eds_rejected, in->name, json_true());
		return;
	} else {
		applied = eds_apply_one(a, in->name, in->j, err, errlen);
	}
	if (!applied) {
		if (e)
			e->seen = bt->gen;
		else
			batch_failed(bt, in->name);
		json_object_set_new(a->eds_rejected, in->name, json_true());
		return;
	}
	bt->got[got] = '1';   /* changed */
	e = eds_entry(a, in->name);
	e->seen = bt->gen;
	free(e->src);
	e->src = xin_blob(in);   /* pb: the payload; REST: in->j's text */
	xmeta_unref(e->meta);
	e->meta = xmeta_ref(bt->meta);
	if (bt->rver)
		set_rver(&e->rver, bt->rver);
}

static void batch_init(struct ads *a, struct xbatch *bt, int t, const char *version,
		       bool full_state)
{
	memset(bt, 0, sizeof(*bt));
	bt->t = t;
	bt->gen = ++a->gen;
	bt->full_state = full_state;
	bt->meta = xmeta_new(version);
	bt->bad = json_object();
	bt->b = (struct build_ctx){ .srv = a->srv, .stats = a->srv->stats,
				    .nworkers = a->srv->nworkers };
}

static void batch_apply(struct ads *a, struct xbatch *bt, struct xin *in, char *err, size_t errlen)
{
	if (bt->t == T_CDS)
		cds_one(a, bt, in, err, errlen);
	else
		eds_one(a, bt, in, err, errlen);
}

/* After the last resource: SotW CDS removes the clusters not named, delta
 * the removed names; then the compiled clusters start (after the changes:
 * a cluster may initialize synchronously).  Frees bt. */
static void count_resources(struct ads *a, int t, const json_t *got, const json_t *bad,
			    const json_t *removed, const json_t *changed, size_t n_resources);

static void batch_finish(struct ads *a, struct xbatch *bt, const json_t *removed,
			 size_t n_resources)
{
	bool gone = false;
	size_t i;
	json_t *v;

	if (bt->t == T_CDS) {
		if (bt->full_state) {
			for (i = a->ndc; i-- > 0;)   /* backwards: removal moves the last one here */
				if (a->dc[i]->seen != bt->gen) {
					dc_remove_at(a, i);
					gone = true;
				}
		}
		json_array_foreach(removed, i, v) {
			struct dyn_cluster *d = find_dc(a, json_string_value(v));
			if (d) {
				dc_remove_at(a, d->pos);
				gone = true;
			}
		}
		if (gone)
			refresh_tcp_listeners(a);
		for (i = 0; i < bt->nstart; i++) {
			struct dyn_cluster *d = find_dc(a, bt->start[i]->name);
			if (d)
				start_warming(a, d, bt->start[i], bt->keys[i]);
			else   /* also in removed_resources of the same response */
				cluster_unref(bt->start[i]);
		}
	} else {
		char e2[256] = "";
		json_array_foreach(removed, i, v) {
			struct dyn_eds *e = find_eds(a, json_string_value(v));
			if (!e || !e->src)
				continue;
			eds_apply_one(a, e->name, NULL, e2, sizeof(e2));   /* users: no hosts */
			eds_drop(a, e);
		}
		json_t *got = json_object(), *changed = json_object();
		for (size_t off = 0; off < bt->ngot; off += strlen(bt->got + off) + 1) {
			json_object_set_new(got, bt->got + off + 1, json_true());
			if (bt->got[off] == '1')
				json_object_set_new(changed, bt->got + off + 1, json_true());
		}
		count_resources(a, T_EDS, got, bt->bad, removed, changed, n_resources);
		json_decref(got);
		json_decref(changed);
	}
	free(bt->start);
	free(bt->keys);
	json_decref(bt->failed);
	free(bt->got);
	json_decref(bt->bad);
	xmeta_unref(bt->meta);
}

/* ---- listeners (LDS, RDS) -------------------------------------------------------- */

/* Call fn for each HCM typed_config of an LDS resource that names a
 * route_config_name (filter_chains[] and default_filter_chain). */
static void listener_foreach_rds(const json_t *l,
				 void (*fn)(const json_t *hcm, const char *rn, void *arg), void *arg)
{
	const json_t *chains[2] = { json_object_get(l, "filter_chains"), NULL };
	json_t *one = json_array();

	if (json_object_get(l, "default_filter_chain"))
		json_array_append(one, json_object_get(l, "default_filter_chain"));
	chains[1] = one;
	for (int k = 0; k < 2; k++) {
		size_t i, m;
		const json_t *fc, *f;

		json_array_foreach(chains[k], i, fc) {
			json_array_foreach(json_object_get(fc, "filters"), m, f) {
				const json_t *tc = json_object_get(f, "typed_config");
				const char *rn = json_string_value(json_object_get(
					json_object_get(tc, "rds"), "route_config_name"));

				if (rn)
					fn(tc, rn, arg);
			}
		}
	}
	json_decref(one);
}

struct rds_names {
	json_t *names;              /* the route_config_names, in order */
	json_t *wants;              /* NULL, or also added there (want_add) */
};

static void add_rds_name(const json_t *hcm, const char *rn, void *arg)
{
	struct rds_names *r = arg;

	json_array_append_new(r->names, json_string(rn));
	if (r->wants)
		want_add(r->wants, xds_source_key(cfg_get(cfg_get(hcm, "rds"), "config_source")), rn);
}

/* The RDS names an LDS resource's HCMs reference (filter_chains[].filters[]
 * and default_filter_chain), as a JSON array; with wants, also added there
 * by the source of their config_source (want_add). */
static json_t *listener_rds_names(const json_t *l, json_t *wants)
{
	struct rds_names r = { json_array(), wants };

	listener_foreach_rds(l, add_rds_name, &r);
	return r.names;
}

/* rds.config_source.initial_fetch_timeout of an HCM (15 s if absent; the
 * listener compiler validated it). */
static uint64_t hcm_rds_timeout_ms(const json_t *hcm)
{
	const json_t *cs = cfg_get(cfg_get(hcm, "rds"), "config_source");
	uint64_t ms = 15000;
	struct cfg_ctx c;

	cfg_init(&c, NULL, NULL);
	if (cs && cfg_duration_ms(&c, cs, "initial_fetch_timeout", &ms))
		ms = 15000;
	return ms;
}

static void add_pair(const json_t *hcm, const char *rn, void *arg)
{
	const char *sp = json_string_value(json_object_get(hcm, "stat_prefix"));

	if (sp)
		json_array_append_new(arg, json_pack("[s,s,I]", sp, rn,
						     (json_int_t)hcm_rds_timeout_ms(hcm)));
}

/* The RDS HCMs of an LDS resource, appended to pairs as [stat_prefix,
 * route_config_name, initial_fetch_timeout ms] arrays. */
static void listener_rds_pairs(const json_t *l, json_t *pairs)
{
	listener_foreach_rds(l, add_pair, pairs);
}

static void rds_sub_timeout_cb(evutil_socket_t fd, short what, void *arg);

/* A new subscription: its timer starts unless the configuration is there. */
static struct rds_sub *rds_sub_new(struct ads *a, const char *sp, const char *rn, uint64_t ms)
{
	struct rds_sub *s = xcalloc(1, sizeof(*s));
	char *scope = xasprintf("http.%s.rds.%s", sp, rn);
	struct stats_scope_spec spec = {
		.name = scope, .tag_prefix = "http.rds",
		.tag_name = "envoy_http_conn_manager_prefix", .tag_value = sp,
		.tag2_name = "envoy_rds_route_config", .tag2_value = rn,
		.desc = rds_desc, .ndesc = RS_N, .flags = STATS_SCOPE_MAIN,
	};

	s->a = a;
	s->prefix = xstrdup(sp);
	s->name = xstrdup(rn);
	s->stats = stats_scope_get(a->srv->stats, &spec);
	s->timeout_ms = ms;
	free(scope);
	if (json_object_get(a->t[T_RDS].res, rn)) {
		s->fetched = true;
	} else if (ms) {
		struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

		s->timer = evtimer_new(a->srv->base, rds_sub_timeout_cb, s);
		evtimer_add(s->timer, &tv);
	}
	return s;
}

static void rds_sub_free(struct rds_sub *s)
{
	if (!s)
		return;
	if (s->timer)
		event_free(s->timer);
	free(s->prefix);
	free(s->name);
	stats_scope_free(s->stats);
	free(s);
}

/* Bring the RDS subscriptions in line with the accepted listeners: one for
 * each (stat_prefix, route_config_name) in use (O(pairs + subs), after an
 * LDS change only).  A pair kept by a listener update keeps its
 * subscription (counts, timer state); several HCMs with the same pair share
 * it, with the initial_fetch_timeout of the first (in LDS order). */
static void rds_subs_sync(struct ads *a)
{
	json_t *pairs = json_array(), *want = json_object(), *p, *l, *tmp;
	const char *n;
	size_t i, k;

	a->rsub_dirty = false;
	json_object_foreach(a->t[T_LDS].res, n, l)
		listener_rds_pairs(l, pairs);
	json_array_foreach(pairs, i, p) {   /* "<prefix>\x1f<name>" -> the first pair */
		char *key = xasprintf("%s\x1f%s", json_string_value(json_array_get(p, 0)),
				      json_string_value(json_array_get(p, 1)));
		if (!json_object_get(want, key))
			json_object_set(want, key, p);
		free(key);
	}
	for (k = a->nrsub; k-- > 0;) {
		char *key = xasprintf("%s\x1f%s", a->rsub[k]->prefix, a->rsub[k]->name);
		bool keep = json_object_get(want, key) != NULL;

		json_object_del(want, key);   /* kept: nothing to create */
		free(key);
		if (keep)
			continue;
		rds_sub_free(a->rsub[k]);
		a->rsub[k] = a->rsub[--a->nrsub];
	}
	json_object_foreach_safe(want, tmp, n, p) {
		a->rsub = xrealloc(a->rsub, (a->nrsub + 1) * sizeof(*a->rsub));
		a->rsub[a->nrsub++] = rds_sub_new(a, json_string_value(json_array_get(p, 0)),
						  json_string_value(json_array_get(p, 1)),
						  (uint64_t)json_integer_value(json_array_get(p, 2)));
	}
	json_decref(a->rsub_index);
	a->rsub_index = json_object();
	for (k = 0; k < a->nrsub; k++) {
		json_t *pos = json_object_get(a->rsub_index, a->rsub[k]->name);

		if (!pos)
			json_object_set_new(a->rsub_index, a->rsub[k]->name, pos = json_array());
		json_array_append_new(pos, json_integer((json_int_t)k));
	}
	json_decref(want);
	json_decref(pairs);
}

/* The subscription (prefix, name), or NULL. */
static struct rds_sub *rds_sub_find(struct ads *a, const char *prefix, const char *name)
{
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(a->rsub_index, name), i, v) {
		struct rds_sub *s = a->rsub[json_integer_value(v)];
		if (!strcmp(s->prefix, prefix))
			return s;
	}
	return NULL;
}

/* Route configuration name was accepted: its subscriptions' first fetch is
 * over (their timers stop for good). */
static void rds_arrived(struct ads *a, const char *name)
{
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(a->rsub_index, name), i, v) {
		struct rds_sub *s = a->rsub[json_integer_value(v)];
		s->fetched = true;
		if (s->timer)
			evtimer_del(s->timer);
	}
}

struct missing_check {
	struct ads *a;
	const char *name;
	bool ok;
};

static void check_missing(const json_t *hcm, const char *rn, void *arg)
{
	struct missing_check *m = arg;
	const char *sp = json_string_value(json_object_get(hcm, "stat_prefix"));
	const struct rds_sub *s;

	if (strcmp(rn, m->name) || !sp)   /* no stat_prefix: the compiler says so */
		return;
	s = rds_sub_find(m->a, sp, rn);
	if (!s || !s->timed_out)
		m->ok = false;
}

/* May LDS resource l compile with an empty table for the missing route
 * configuration name?  When every subscription of its HCMs naming it timed
 * out (Envoy: the listener waits for all its init targets). */
static bool rds_missing_ok(struct ads *a, const json_t *l, const char *name)
{
	struct missing_check m = { a, name, true };

	listener_foreach_rds(l, check_missing, &m);
	return m.ok;
}

/* ev for every RDS subscription of route configuration name (NULL: all). */
static void rds_count(struct ads *a, const char *name, enum sub_ev ev, const char *version)
{
	json_t *v;
	size_t i;

	if (!name) {
		for (i = 0; i < a->nrsub; i++)
			sub_count(a->rsub[i]->stats, &xu_idx, ev, true, version);
		return;
	}
	json_array_foreach(json_object_get(a->rsub_index, name), i, v)
		sub_count(a->rsub[json_integer_value(v)]->stats, &xu_idx, ev, true, version);
}

/* A tcp_proxy filter holds references to the cluster objects it was compiled
 * with: such listeners are recompiled when a cluster object changes. */
static bool listener_has_tcp_proxy(const json_t *l)
{
	size_t i, m;
	const json_t *fc, *f;
	json_array_foreach(json_object_get(l, "filter_chains"), i, fc) {
		json_array_foreach(json_object_get(fc, "filters"), m, f) {
			const char *t = json_string_value(json_object_get(json_object_get(f, "typed_config"),
									  "@type"));
			const char *n = json_string_value(json_object_get(f, "name"));
			if ((t && strstr(t, ".tcp_proxy.")) || (n && strstr(n, "tcp_proxy")))
				return true;
		}
	}
	return false;
}

static bool listener_tls_ready(const struct listener_cfg *l)
{
	for (size_t i = 0; i < l->nchains; i++)
		if (!tls_ctx_ready(l->chains[i].tls))
			return false;
	return !l->default_chain || tls_ctx_ready(l->default_chain->tls);
}

static const json_t *rds_lookup(void *arg, const char *name)
{
	json_t *used = arg;   /* name -> RouteConfiguration, filled by compile_listener */
	return json_object_get(used, name);
}

/* compile_listener results.  A listener waiting for its routes is released
 * by its RDS subscriptions' initial_fetch_timeouts; one waiting for its SDS
 * secrets by the secret's own (its sds_config). */
enum { CL_ERROR = -1, CL_WAIT_ROUTES = 0, CL_OK = 1, CL_WAIT_SECRETS = 2 };

/* Compile LDS resource j if its routes are there.  Returns CL_OK compiled
 * (or unchanged), CL_WAIT_ROUTES / CL_WAIT_SECRETS warming, CL_ERROR (err
 * set). */
static int compile_listener(struct ads *a, struct dyn_listener *d, const json_t *j,
			    struct snapshot *view, char *err, size_t errlen, const char *blame,
			    bool clusters_changed)
{
	json_t *names = listener_rds_names(j, NULL), *used = json_object();
	size_t i;
	json_t *n;
	int rc = 1;
	json_array_foreach(names, i, n) {
		const char *rn = json_string_value(n);
		json_t *r = json_object_get(a->t[T_RDS].res, rn);
		if (!r && rds_missing_ok(a, j, rn))
			r = json_pack("{s:s}", "name", rn);   /* empty table: 404s (Envoy) */
		else if (r)
			json_incref(r);
		if (!r) {
			rc = 0;
			break;
		}
		json_object_set_new(used, rn, r);
	}
	json_decref(names);
	if (rc == 1 && d->wl && json_equal(d->wl->json, j) && json_equal(d->wl_rds, used) &&
	    !(clusters_changed && listener_has_tcp_proxy(j))) {
		if (!listener_tls_ready(d->wl)) {   /* still waiting for its secrets */
			json_decref(used);
			return CL_WAIT_SECRETS;
		}
		log_info("xds: listener '%s': its SDS secrets arrived", d->name);
		listener_unref(d->l);
		json_decref(d->ameta);
		d->ameta = json_incref(json_object_get(a->t[T_LDS].meta, d->name));
		d->l = d->wl;
		d->wl = NULL;
		json_decref(d->wl_rds);
		d->wl_rds = NULL;
		json_decref(d->rds_used);
		d->rds_used = used;
		return 1;
	}
	if (rc == 0 || (d->l && json_equal(d->l->json, j) && json_equal(d->rds_used, used) &&
			!(clusters_changed && listener_has_tcp_proxy(j)))) {
		if (rc == 1 && d->wl) {   /* back to the version in force */
			listener_unref(d->wl);
			d->wl = NULL;
			json_decref(d->wl_rds);
			d->wl_rds = NULL;
		}
		json_decref(used);
		return rc;
	}
	struct build_ctx b = { .srv = a->srv, .snap = view, .stats = a->srv->stats,
			       .nworkers = a->srv->nworkers, .rds_lookup = rds_lookup,
			       .rds_arg = used };
	struct cfg_ctx c;
	cfg_init(&c, NULL, NULL);
	if (a->srv->opt.allow_unknown_fields)
		c.flags |= CFG_F_ALLOW_UNKNOWN;
	struct listener_cfg *l = listener_parse(&c, j, &b);
	if (!l) {
		add_error(err, errlen, blame ? "RouteConfiguration" : "Listener",
			  blame ? blame : d->name, c.err);
		json_decref(used);
		return -1;
	}
	for (size_t k = 0; k < a->nsl; k++)
		if ((a->sl[k]->addrlen == l->addrlen && !memcmp(&a->sl[k]->addr, &l->addr, l->addrlen)) ||
		    !strcmp(a->sl[k]->name, l->name)) {
			add_error(err, errlen, "Listener", d->name,
				  "a static listener has that name or address");
			listener_unref(l);
			json_decref(used);
			return -1;
		}
	if (!blame) {   /* an LDS update: a listener that cannot bind is NACKed */
		char be[320];
		if (server_xds_bind_listener(a->srv, l, be, sizeof(be))) {
			add_error(err, errlen, "Listener", d->name, be);
			listener_unref(l);
			json_decref(used);
			return -1;
		}
	}
	listener_unref(d->wl);
	json_decref(d->wl_rds);
	d->wl = NULL;
	d->wl_rds = NULL;
	if (!listener_tls_ready(l)) {   /* warm until its SDS secrets arrive */
		log_info("xds: listener '%s' warming: waiting for its SDS secrets", d->name);
		d->wl = l;
		d->wl_rds = used;
		return CL_WAIT_SECRETS;
	}
	listener_unref(d->l);
	d->l = l;
	json_decref(d->ameta);
	d->ameta = json_incref(json_object_get(a->t[T_LDS].meta, d->name));
	json_decref(d->rds_used);
	d->rds_used = used;
	return 1;
}

/* Recompile the listeners of the accepted LDS state; blame_rds: the RDS
 * resource being applied (its errors NACK RDS), or NULL (LDS update). */
static void rebuild_listeners_ex(struct ads *a, char *err, size_t errlen, const char *blame_rds,
				 bool clusters_changed)
{
	struct snapshot *view = cluster_view(a);
	struct dyn_listener *nd = xcalloc(json_object_size(a->t[T_LDS].res) + 1, sizeof(*nd));
	size_t nn = 0;
	const char *name;
	json_t *j;
	json_t *drop = json_array();
	json_object_foreach(a->t[T_LDS].res, name, j) {
		struct dyn_listener *old = find_dl(a, name);
		if (old) {
			nd[nn] = *old;
			memset(old, 0, sizeof(*old));
		} else {
			nd[nn].name = xstrdup(name);
		}
		int rc = compile_listener(a, &nd[nn], j, view, err, errlen, blame_rds, clusters_changed);
		for (size_t k = 0; rc == CL_OK && k < nn; k++) {
			const struct listener_cfg *o = nd[k].l, *l = nd[nn].l;
			if (o && o->addrlen == l->addrlen && !memcmp(&o->addr, &l->addr, l->addrlen)) {
				/* SO_REUSEPORT would let both bind and split the traffic */
				add_error(err, errlen, "Listener", name, "another listener has that address");
				rc = -1;
				listener_unref(nd[nn].l);
				nd[nn].l = NULL;
				json_decref(nd[nn].rds_used);
				nd[nn].rds_used = NULL;
				break;
			}
		}
		if (rc < 0 && !blame_rds) {
			/* rejected: the accepted state keeps the previous version (or
			 * nothing), so a later RDS update does not retry it */
			if (nd[nn].l) {
				json_object_set(a->t[T_LDS].res, name, nd[nn].l->json);
			} else {
				json_array_append_new(drop, json_string(name));
				dl_clear(&nd[nn]);
				memset(&nd[nn], 0, sizeof(nd[nn]));
				continue;
			}
		}
		nn++;
	}
	size_t di;
	json_t *dn;
	json_array_foreach(drop, di, dn)
		json_object_del(a->t[T_LDS].res, json_string_value(dn));
	json_decref(drop);
	for (size_t i = 0; i < a->ndl; i++) {
		if (a->dl[i].name)
			log_info("xds: listener '%s' removed", a->dl[i].name);
		dl_clear(&a->dl[i]);
	}
	free(a->dl);
	a->dl = nd;
	a->ndl = nn;
	snapshot_unref(view);
}

static void rebuild_listeners(struct ads *a, char *err, size_t errlen, const char *blame_rds)
{
	rebuild_listeners_ex(a, err, errlen, blame_rds, false);
}

/* Cluster objects changed (warmed or removed): recompile tcp_proxy listeners
 * before the next publication.  Deferred to it (publish_cb, flush_publish),
 * so a response that warms 10,000 clusters rebuilds the listeners once, not
 * once per cluster (each rebuild is O(clusters)). */
static void refresh_tcp_listeners(struct ads *a)
{
	if (!a->ndl)
		return;
	a->tcp_dirty = true;
	try_publish(a);
}

static void refresh_tcp_now(struct ads *a)
{
	char err[2048] = "";
	if (!a->tcp_dirty)
		return;
	a->tcp_dirty = false;
	if (!a->ndl)
		return;
	rebuild_listeners_ex(a, err, sizeof(err), NULL, true);
	if (err[0])
		log_warn("xds: after a cluster change: %s (the previous listener version stays)", err);
}

/* RDS subscriptions by source: {key: {name: true}}. */
static json_t *rds_wants(struct ads *a)
{
	json_t *wants = json_object();
	const char *name;
	json_t *j;
	json_object_foreach(a->t[T_LDS].res, name, j)
		json_decref(listener_rds_names(j, wants));
	return wants;
}

struct timeout_note {
	const struct rds_sub *s;
	const char *listener;
};

static void note_timeout(const json_t *hcm, const char *rn, void *arg)
{
	struct timeout_note *t = arg;
	const char *sp = json_string_value(json_object_get(hcm, "stat_prefix"));

	if (sp && !strcmp(rn, t->s->name) && !strcmp(sp, t->s->prefix))
		log_warn("xds: RDS initial_fetch_timeout (%llu ms): listener '%s' (stat_prefix '%s') "
			 "uses an empty route table for RouteConfiguration '%s' (404 until it "
			 "arrives)", (unsigned long long)t->s->timeout_ms, t->listener, sp, rn);
}

/* A subscription's first fetch timed out: its listeners stop waiting for it. */
static void rds_sub_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rds_sub *s = arg;
	struct ads *a = s->a;
	char err[2048] = "";
	const char *name;
	json_t *j;
	(void)fd;
	(void)what;
	if (s->fetched || json_object_get(a->t[T_RDS].res, s->name))
		return;   /* (rds_arrived deletes the timer) */
	s->timed_out = true;
	sub_count(s->stats, &xu_idx, SE_TIMEOUT, true, NULL);
	json_object_foreach(a->t[T_LDS].res, name, j) {
		struct timeout_note t = { s, name };
		listener_foreach_rds(j, note_timeout, &t);
	}
	rebuild_listeners(a, err, sizeof(err), NULL);
	if (err[0])
		log_warn("xds: %s", err);
	try_publish(a);
	check_initial(a);
}

/* ---- publishing ------------------------------------------------------------------ */

/* Compose and publish now (see try_publish). */
static void do_publish(struct ads *a)
{
	size_t nc = 0, nl = 0, warming = 0;
	struct cluster **cl = xcalloc(a->nscl + a->ndc + 1, sizeof(*cl));
	struct listener_cfg **l = xcalloc(a->nsl + a->ndl + 1, sizeof(*l));
	for (size_t i = 0; i < a->nscl; i++)
		cl[nc++] = a->scl[i];
	for (size_t i = 0; i < a->ndc; i++) {
		if (a->dc[i]->active)
			cl[nc++] = a->dc[i]->active;
		warming += a->dc[i]->warming != NULL;
	}
	for (size_t i = 0; i < a->nsl; i++)
		l[nl++] = a->sl[i];
	for (size_t i = 0; i < a->ndl; i++)
		if (a->dl[i].l)
			l[nl++] = a->dl[i].l;
	/* unchanged? (same objects as the current snapshot) */
	struct snapshot *cur = a->srv->snap;
	bool same = cur && cur->nclusters == nc && cur->nlisteners == nl;
	for (size_t i = 0; same && i < nc; i++)
		same = cur->clusters[i] == cl[i];
	for (size_t i = 0; same && i < nl; i++)
		same = cur->listeners[i] == l[i];
	if (!same) {
		struct snapshot *s = snapshot_compose(cl, nc, l, nl, a->bootstrap);
		server_xds_publish(a->srv, s);
		log_info("xds: published configuration %llu: %zu cluster(s) (%zu warming), "
			 "%zu listener(s)", (unsigned long long)s->version, nc, warming, nl);
	}
	stats_gauge_set(a->cm_stats, CM_active_clusters, (int64_t)nc);
	stats_gauge_set(a->cm_stats, CM_warming_clusters, (int64_t)warming);
	free(cl);
	free(l);
}

static void publish_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	refresh_tcp_now(arg);
	do_publish(arg);
	check_initial(arg);   /* a listener may have compiled in the refresh */
}

/* Publish once the current event is handled: a response that warms many
 * clusters (each EDS assignment, each cluster_warmed) builds one snapshot,
 * not one per cluster. */
static void try_publish(struct ads *a)
{
	struct timeval zero = { 0, 0 };
	if (!evtimer_pending(a->publish_ev, NULL))
		evtimer_add(a->publish_ev, &zero);
}

static void flush_publish(struct ads *a)
{
	refresh_tcp_now(a);
	if (evtimer_pending(a->publish_ev, NULL)) {
		evtimer_del(a->publish_ev);
		do_publish(a);
	}
}

static void check_initial(struct ads *a)
{
	const struct xds_bootstrap *x = &a->srv->xds;
	if (a->initial_done)
		return;
	if ((x->cds && !a->t[T_CDS].got_first) || (x->lds && !a->t[T_LDS].got_first))
		return;
	if (a->nwarming)
		return;
	refresh_tcp_now(a);   /* listeners waiting for the clusters that just warmed */
	for (size_t i = 0; i < a->ndl; i++)
		if (!a->dl[i].l)
			return;
	if (tls_sds_waiting())   /* static listeners / clusters using SDS secrets */
		return;
	a->initial_done = true;
	evtimer_del(a->init_ev);
	flush_publish(a);   /* the workers start on the complete configuration */
	log_info("xds: initial fetch complete");
	server_xds_initial_fetch_done(a->srv);
}

/* Whether type t's wildcard subscription (CDS, LDS) polls over REST: its
 * update_attempt was counted when the poll went out. */
static bool type_rest(struct ads *a, int t)
{
	const char *key = t == T_CDS ? a->srv->xds.cds_key : t == T_LDS ? a->srv->xds.lds_key : NULL;
	const struct xds_source *src = key && strcmp(key, XDS_ADS_KEY) ? xds_source_get(key) : NULL;
	return src && src->kind == XDS_REST;
}

static void init_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ads *a = arg;
	(void)fd;
	(void)what;
	if (a->initial_done)
		return;
	log_warn("xds: initial fetch timed out; serving what arrived");
	for (int t = T_CDS; t < T_N; t++)
		if (!a->t[t].got_first)
			sub_count(a->t[t].stats, &xu_idx, SE_TIMEOUT, !type_rest(a, t), NULL);
	a->initial_done = true;
	flush_publish(a);
	server_xds_initial_fetch_done(a->srv);
}

/* ---- the protocol ------------------------------------------------------------------ */

static void fill_node(struct xchan *ch, Envoy__Config__Core__V3__Node *node,
		      Envoy__Config__Core__V3__Node **slot)
{
	struct server *srv = ch->a->srv;
	if (ch->node_sent && ch->src->node_first_only)
		return;
	node->id = srv->node_id;
	node->cluster = srv->node_cluster;
	node->user_agent_name = "remora";
	node->user_agent_version_type_case =
		ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
	node->user_agent_version = "0.1.0";
	*slot = node;
	ch->node_sent = true;
}

static void send_packed(struct xchan *ch, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xmalloc(len ? len : 1);
	protobuf_c_message_pack(m, buf);
	grpc_client_send(ch->g, buf, len);
	free(buf);
}

/* The stream (gRPC) or a poll of type t (REST) failed: update_failure in
 * every subscription of t (CDS/LDS over REST counted their attempt when the
 * poll went out). */
static void count_failure(struct ads *a, int t, bool rest)
{
	switch (t) {
	case T_EDS:
		eds_count(a, NULL, SE_FAILURE, NULL);
		break;
	case T_RDS:
		rds_count(a, NULL, SE_FAILURE, NULL);
		break;
	case T_SDS:
		tls_sds_stream_failed();
		break;
	default:
		sub_count(a->t[t].stats, &xu_idx, SE_FAILURE, !rest, NULL);
	}
}

/* ---- REST-JSON polling ---------------------------------------------------------------- */

static void rest_poll(struct xsub *s);
static int handle_json_response(struct xsub *s, const json_t *r);

static void rest_schedule(struct xsub *s, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(s->rest_ev, &tv);
}

static void rest_failed(struct xsub *s, const char *why)
{
	struct ads *a = s->ch->a;
	if (!s->rest_failing)
		log_warn("xds: REST %s poll of '%s' failed: %s (the last configuration keeps serving)",
			 type_names[s->type], s->ch->src->cluster, why);
	s->rest_failing = true;
	count_failure(a, s->type, true);
}

static void rest_done(void *arg, enum async_http_result res, int status, struct evbuffer *body)
{
	struct xsub *s = arg;
	struct ads *a = s->ch->a;
	int t = s->type;
	char why[256];
	s->rest_req = NULL;
	stats_gauge_set(a->cp_stats, CP_pending_requests, --a->pending);
	if (res == ASYNC_HTTP_OK && status == 200) {
		json_error_t je;
		size_t len = body ? evbuffer_get_length(body) : 0;
		const char *p = len ? (const char *)evbuffer_pullup(body, -1) : "";
		json_t *r = json_loadb(p, len, 0, &je);
		if (!r || handle_json_response(s, r) < 0) {
			snprintf(why, sizeof(why), "%s", r ? "not a DiscoveryResponse of this type"
							      : je.text);
			rest_failed(s, why);
		} else {
			s->rest_failing = false;
		}
		json_decref(r);
	} else if (res == ASYNC_HTTP_OK && status == 304) {
		s->rest_failing = false;   /* unchanged */
		log_debug("xds: REST %s: 304 not modified", type_names[t]);
	} else {
		static const char *const names[] = { "ok", "no host in the xDS cluster",
						     "connection failed", "timed out",
						     "malformed response" };
		if (res == ASYNC_HTTP_OK)
			snprintf(why, sizeof(why), "HTTP status %d", status);
		else
			snprintf(why, sizeof(why), "%s", names[res]);
		rest_failed(s, why);
	}
	if (s->rest_again) {
		s->rest_again = false;
		rest_poll(s);
	} else if (!s->rest_req && !evtimer_pending(s->rest_ev, NULL)) {
		rest_schedule(s, s->ch->src->refresh_ms);
	}
}

/* POST the DiscoveryRequest of this type now (or once the request in flight
 * ends).  EDS/RDS/SDS are polled only while some resource of theirs is
 * wanted from this source. */
static void rest_poll(struct xsub *s)
{
	struct xchan *ch = s->ch;
	struct ads *a = ch->a;
	int t = s->type;
	struct xtype *x = &a->t[t];
	if (s->rest_req) {
		s->rest_again = true;
		return;
	}
	evtimer_del(s->rest_ev);
	if (!s->wildcard && !namelist_size(s->sent_names))
		return;
	json_t *rq = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s}}",
			       "versionInfo", s->version ? s->version : "",
			       "typeUrl", type_urls[t],
			       "responseNonce", s->nonce ? s->nonce : "",
			       "node", "id", a->srv->node_id, "cluster", a->srv->node_cluster,
			       "userAgentName", "remora", "userAgentVersion", "0.1.0");
	if (s->sent_names)
		json_object_set_new(rq, "resourceNames", namelist_json(s->sent_names));
	if (s->rest_err)
		json_object_set_new(rq, "errorDetail", json_pack("{s:i, s:s}", "code", 13,
								  "message", s->rest_err));
	char *txt = json_dumps(rq, JSON_COMPACT);
	json_decref(rq);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, txt, strlen(txt));
	free(txt);
	struct async_http_req req = {
		.cluster = ch->src->cluster, .method = "POST", .path = rest_paths[t],
		.host = ch->src->authority, .content_type = "application/json",
		.timeout_ms = ch->src->timeout_ms,
	};
	s->rest_req = async_http_send(a->srv->base, &req, b, rest_done, s);
	evbuffer_free(b);
	stats_gauge_set(a->cp_stats, CP_pending_requests, ++a->pending);
	if (x->stats)
		stats_inc(x->stats, 0, XU_update_attempt);
	log_debug("xds: REST %s poll of '%s' version '%s'%s", type_names[t], ch->src->cluster,
		  s->version ? s->version : "", s->rest_err ? " (with error_detail)" : "");
}

static void rest_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rest_poll(arg);
}

/* Delta: name -> version of the accepted resources of type t (new ref; for
 * initial_resource_versions on a new stream). */
static json_t *resource_versions(struct ads *a, int t)
{
	json_t *o;
	if (t == T_CDS) {
		o = json_object();
		for (size_t i = 0; i < a->ndc; i++)
			if (a->dc[i]->rver)
				json_object_set_new(o, a->dc[i]->name, json_string(a->dc[i]->rver));
		return o;
	}
	if (t == T_EDS) {
		o = json_object();
		for (size_t i = 0; i < a->eds_map.cap; i++) {
			const struct dyn_eds *e = strmap_live(&a->eds_map, i) ? a->eds_map.slots[i]
									      : NULL;
			if (e && e->src && e->rver)
				json_object_set_new(o, e->name, json_string(e->rver));
		}
		return o;
	}
	return json_incref(a->t[t].rver);
}

/* SotW DiscoveryRequest: ACK (error NULL) or NACK of the newest response, or
 * a (re)subscription.  REST: a subscription change polls at once.  Nothing
 * while the stream is down: on_open sends the state. */
static void send_sotw(struct xsub *s, const char *error)
{
	Envoy__Service__Discovery__V3__DiscoveryRequest rq =
		ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
	Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	struct xchan *ch = s->ch;
	int t = s->type;

	if (ch->src->kind == XDS_REST) {
		rest_poll(s);
		return;
	}
	if (!ch->g || !ch->connected)
		return;
	rq.type_url = (char *)type_urls[t];
	rq.version_info = s->version ? s->version : "";
	rq.response_nonce = s->nonce ? s->nonce : "";
	fill_node(ch, &node, &rq.node);
	if (s->sent_names) {
		rq.n_resource_names = s->sent_names->n;
		rq.resource_names = (char **)s->sent_names->v;
	}
	if (error) {
		st.code = 13;   /* INTERNAL, as Envoy */
		st.message = (char *)error;
		rq.error_detail = &st;
	}
	send_packed(ch, &rq.base);
	log_debug("xds: sent %s request to '%s' version '%s' nonce '%s'%s", type_names[t],
		  ch->src->cluster, rq.version_info, rq.response_nonce, error ? " (NACK)" : "");
}

static char **names_of(const json_t *arr, size_t *n)
{
	size_t i;
	json_t *v;
	char **out = xcalloc(json_array_size(arr) + 1, sizeof(*out));
	*n = 0;
	json_array_foreach(arr, i, v)
		out[(*n)++] = (char *)json_string_value(v);
	return out;
}

/* DeltaDiscoveryRequest.  ack: answers the newest response (response_nonce,
 * error_detail if error); else a spontaneous request (no nonce) carrying
 * subscription changes (sub/unsub: arrays of names, may be NULL).  The first
 * request of a type on a stream carries initial_resource_versions (of the
 * resources this stream subscribes: all for a wildcard type). */
static void send_delta(struct xsub *s, bool ack, const char *error, const json_t *sub,
		       const json_t *unsub)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest rq =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *ents = NULL;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry **eptr = NULL;
	struct xchan *ch = s->ch;
	int t = s->type;

	if (!ch->g || !ch->connected)
		return;
	rq.type_url = (char *)type_urls[t];
	fill_node(ch, &node, &rq.node);
	if (ack)
		rq.response_nonce = s->nonce ? s->nonce : "";
	rq.resource_names_subscribe = names_of(sub, &rq.n_resource_names_subscribe);
	rq.resource_names_unsubscribe = names_of(unsub, &rq.n_resource_names_unsubscribe);
	/* with a failover server, the versions held are sent only to the server
	 * they came from (Envoy) */
	json_t *rver = !s->sent_first && (ch->src->nsvc < 2 || ch->answered == (int)ch->cur)
		       ? resource_versions(ch->a, t) : NULL;
	if (json_object_size(rver)) {
		size_t n = json_object_size(rver), i = 0;
		const char *k;
		json_t *v;
		ents = xcalloc(n, sizeof(*ents));
		eptr = xcalloc(n, sizeof(*eptr));
		json_object_foreach(rver, k, v) {
			if (!s->wildcard && !namelist_has(s->subs, k))
				continue;   /* another source's */
			Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry e =
				ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
			e.key = (char *)k;
			e.value = (char *)json_string_value(v);
			ents[i] = e;
			eptr[i] = &ents[i];
			i++;
		}
		rq.n_initial_resource_versions = i;
		rq.initial_resource_versions = eptr;
	}
	s->sent_first = true;
	if (error) {
		st.code = 13;
		st.message = (char *)error;
		rq.error_detail = &st;
	}
	send_packed(ch, &rq.base);
	log_debug("xds: sent delta %s request to '%s' nonce '%s' +%zu -%zu%s", type_names[t],
		  ch->src->cluster, rq.response_nonce, rq.n_resource_names_subscribe,
		  rq.n_resource_names_unsubscribe, error ? " (NACK)" : "");
	free(rq.resource_names_subscribe);
	free(rq.resource_names_unsubscribe);
	free(ents);
	free(eptr);
	json_decref(rver);
}

/* ACK (error NULL) or NACK the newest response of this type on its stream. */
static void send_ack(struct xsub *s, const char *error)
{
	if (s->ch->src->kind == XDS_REST)   /* no ACK message: the next poll carries the
					     * version (and the error) */
		set_str(&s->rest_err, error);
	else if (s->ch->delta)
		send_delta(s, true, error, NULL, NULL);
	else
		send_sotw(s, error);
}

/* Is name (type t) subscribed on a transport other than except? */
static bool wanted_elsewhere(struct ads *a, int t, const char *name, const struct xchan *except)
{
	for (struct xchan *ch = a->chans; ch; ch = ch->next) {
		const struct xsub *s = &ch->s[t];
		if (ch == except)
			continue;
		if (namelist_has(s->subs, name) || namelist_has(s->sent_names, name))
			return true;
	}
	return false;
}

/* EDS/RDS/SDS: the names wanted from this source (set, consumed) changed?
 * SotW requests the whole list again (never an empty first request: that
 * would be a wildcard); delta sends what to subscribe and unsubscribe, and
 * forgets the unsubscribed resources (unless another source still serves
 * them). */
static void update_subscription(struct xsub *s, json_t *want)
{
	struct ads *a = s->ch->a;
	struct xtype *x = &a->t[s->type];
	if (!s->ch->delta) {
		if (!s->sent_names && !json_object_size(want)) {
			json_decref(want);
			return;
		}
		struct namelist *names = namelist_of_set(want);
		if (s->sent_names && namelist_equal(s->sent_names, names)) {
			free(names);
			return;
		}
		free(s->sent_names);
		s->sent_names = names;
		send_sotw(s, NULL);
		return;
	}
	json_t *sub = json_array(), *unsub = json_array(), *v;
	struct namelist *names = namelist_of_set(want);
	for (size_t i = 0; i < names->n; i++)
		if (!namelist_has(s->subs, names->v[i]))
			json_array_append_new(sub, json_string(names->v[i]));
	for (size_t i = 0; i < namelist_size(s->subs); i++)
		if (!namelist_has(names, s->subs->v[i]))
			json_array_append_new(unsub, json_string(s->subs->v[i]));
	if (json_array_size(sub) || json_array_size(unsub)) {
		size_t i;
		free(s->subs);
		s->subs = names;
		names = NULL;
		json_array_foreach(unsub, i, v) {
			if (wanted_elsewhere(a, s->type, json_string_value(v), s->ch))
				continue;
			json_object_del(x->res, json_string_value(v));
			json_object_del(x->rver, json_string_value(v));
		}
		send_delta(s, false, NULL, sub, unsub);
	}
	free(names);
	json_decref(sub);
	json_decref(unsub);
}

static struct xchan *chan_get(struct ads *a, const char *key, int t);

/* Route the wanted names of type t ({source key: {name: true}}, consumed) to
 * the transports of their sources; transports that no longer have any get
 * an empty subscription. */
static void route_wants(struct ads *a, int t, json_t *wants)
{
	const char *k;
	json_t *set;
	json_object_foreach(wants, k, set) {
		struct xchan *ch = chan_get(a, k, t);
		if (ch)
			update_subscription(&ch->s[t], json_incref(set));
		else
			log_warn("xds: %s resources from an unknown source '%s' are not fetched",
				 type_names[t], k);
	}
	for (struct xchan *ch = a->chans; ch; ch = ch->next)
		if ((ch->only < 0 || ch->only == t) && !json_object_get(wants, ch->src->key))
			update_subscription(&ch->s[t], json_object());
	json_decref(wants);
}

/* EDS: the service names of the EDS clusters (active or warming), routed
 * to the transports of their eds_config sources (route_wants).  What was
 * received for names no longer wanted is forgotten.  O(clusters): only after
 * a cluster change. */
static void update_eds_subscription(struct ads *a)
{
	json_t *wants;

	for (size_t i = 0; i < a->eds_map.cap; i++)
		if (strmap_live(&a->eds_map, i))
			((struct dyn_eds *)a->eds_map.slots[i])->wanted = false;
	wants = eds_wants(a);
	for (size_t i = 0; i < a->eds_map.cap; i++) {
		struct dyn_eds *e = strmap_live(&a->eds_map, i) ? a->eds_map.slots[i] : NULL;
		if (!e)
			continue;
		e->subscribed = e->wanted;
		if (!e->wanted)
			eds_drop(a, e);   /* frees e */
	}
	route_wants(a, T_EDS, wants);
}

static void update_subscriptions(struct ads *a)
{
	if (a->eds_dirty) {   /* O(clusters): only after a cluster change */
		a->eds_dirty = false;
		update_eds_subscription(a);
	}
	if (a->srv->xds.lds)
		route_wants(a, T_RDS, rds_wants(a));
	if (a->rsub_dirty)
		rds_subs_sync(a);
	json_t *sds = tls_sds_names(), *wants = json_object(), *v, *tmp;
	struct xtype *x = &a->t[T_SDS];
	const char *k;
	json_object_foreach(sds, k, v)
		want_add(wants, xds_sds_source(k), k);
	json_object_foreach_safe(x->res, tmp, k, v)   /* forget what is no longer used */
		if (!json_object_get(sds, k))
			json_object_del(x->res, k);
	json_decref(sds);
	route_wants(a, T_SDS, wants);
}

/* Decode one resource to JSON; NULL with err (and name if it could be read). */
static json_t *decode_resource(struct ads *a, int t, const Google__Protobuf__Any *any, size_t idx,
			       char *err, size_t errlen, char *name, size_t namelen)
{
	a->pj.flags = a->srv->opt.allow_unknown_fields ? PB_JSON_ALLOW_UNKNOWN : 0;
	a->pj.unknown_seen = 0;
	json_t *j = ads_decode_resource(&a->pj, type_urls[t], t == T_EDS ? "cluster_name" : "name",
					any, idx, err, errlen, name, namelen);
	if (a->pj.unknown_seen)
		stats_add(a->srv->server_stats, 0, SRV_dynamic_unknown_fields,
			  (int64_t)a->pj.unknown_seen);
	return j;
}

/* Decode resource idx into got (name -> JSON); errors go to err.  want_name:
 * the name the delta Resource wrapper gives (NULL in SotW).  Returns the
 * name stored, or NULL. */
static const char *store_resource(int t, json_t *j, size_t idx, const char *want_name,
				  const char *bad_name, char *e, size_t elen, json_t *got, json_t *bad,
				  char *err, size_t errlen);

static const char *take_resource(struct ads *a, int t, const Google__Protobuf__Any *any, size_t idx,
				 const char *want_name, json_t *got, json_t *bad, char *err,
				 size_t errlen)
{
	char e[1024] = "", bad_name[256] = "";
	json_t *j = any ? decode_resource(a, t, any, idx, e, sizeof(e), bad_name, sizeof(bad_name))
			: NULL;
	if (!any)
		snprintf(e, sizeof(e), "resources[%zu]: no resource (removals go in removed_resources)",
			 idx);
	return store_resource(t, j, idx, want_name, bad_name, e, sizeof(e), got, bad, err, errlen);
}

/* resources[idx] of a REST (proto3 JSON) response of type t ({"@type", ...},
 * or a Resource wrapper {"@type": ".../Resource", "name", "resource"}: *want
 * is its name): a copy with snake_case keys and no "@type", or NULL with the
 * reason in e. */
static json_t *json_resource_copy(int t, const json_t *r, size_t idx, const char **want, char *e,
				  size_t elen)
{
	const char *url = json_string_value(json_object_get(r, "@type"));
	*want = NULL;
	if (url && !strcmp(url, XDS_TYPE_RESOURCE)) {
		*want = json_string_value(json_object_get(r, "name"));
		r = json_object_get(r, "resource");
		url = json_string_value(json_object_get(r, "@type"));
	}
	if (!json_is_object(r)) {
		snprintf(e, elen, "resources[%zu]: expected an object", idx);
		return NULL;
	}
	if (!url || strcmp(url, type_urls[t])) {
		snprintf(e, elen, "resources[%zu]: %s does not match %s type URL in "
			 "DiscoveryResponse", idx, url ? url : "(none)", type_urls[t]);
		return NULL;
	}
	json_t *j = json_deep_copy(r);
	json_object_del(j, "@type");
	pb_json_snake_keys(j, url);
	return j;
}

/* REST: one resource of a SotW DiscoveryResponse. */
static const char *take_json_resource(int t, const json_t *r, size_t idx, json_t *got, json_t *bad,
				      char *err, size_t errlen)
{
	char e[1024] = "";
	const char *want;
	json_t *j = json_resource_copy(t, r, idx, &want, e, sizeof(e));
	return store_resource(t, j, idx, want, "", e, sizeof(e), got, bad, err, errlen);
}

/* The checks common to both encodings; stores j (consumed) in got, or the
 * name of a resource that cannot be used (if known) in the set bad. */
static const char *store_resource(int t, json_t *j, size_t idx, const char *want_name,
				  const char *bad_name, char *e, size_t elen, json_t *got, json_t *bad,
				  char *err, size_t errlen)
{
	const char *name = j ? json_string_value(json_object_get(j, t == T_EDS ? "cluster_name"
									       : "name"))
			     : bad_name[0] ? bad_name : want_name;
	if (j && (!name || !*name))
		snprintf(e, elen, "resources[%zu]: missing %s", idx,
			 t == T_EDS ? "cluster_name" : "name");
	else if (j && want_name && *want_name && strcmp(want_name, name))
		snprintf(e, elen, "resources[%zu]: the resource's name '%s' differs from its "
			 "Resource wrapper's name '%s'", idx, name, want_name);
	else if (j && json_object_get(got, name))
		snprintf(e, elen, "resources[%zu]: duplicate name", idx);
	if (e[0]) {
		add_error(err, errlen, type_names[t], name, e);
		if (name && *name)
			json_object_set_new(bad, name, json_true());
		json_decref(j);
		return NULL;
	}
	json_object_set_new(got, name, j);
	return json_string_value(json_object_get(j, t == T_EDS ? "cluster_name" : "name"));
}

static void apply_resources_now(struct ads *a, int t, json_t *got, const json_t *removed,
				bool full_state, char *err, size_t errlen);

/* RFC 3339 UTC with milliseconds (Envoy's last_updated). */
static void now_rfc3339(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Apply the decoded resources of one response (shared by SotW and delta),
 * keeping each accepted resource's {version_info, last_updated} for
 * /config_dump.  full_state: SotW (CDS/LDS responses are complete); removed:
 * delta's removed_resources (array of names, may be empty). */
static void apply_resources(struct ads *a, int t, json_t *got, const json_t *removed,
			    bool full_state, json_t *changed, char *err, size_t errlen)
{
	struct xtype *x = &a->t[t];
	char ts[40];
	const char *n;
	json_t *v, *tmp, *prev = json_object();
	size_t i;
	if (!x->meta)
		x->meta = json_object();
	json_object_clear(a->eds_rejected);
	now_rfc3339(ts, sizeof(ts));
	json_t *m = json_pack("{s:s, s:s}", "version_info", a->applying_version ? a->applying_version : "",
			      "last_updated", ts);
	/* changed resources get the new meta first (compiling a listener copies it) */
	json_object_foreach(got, n, v) {
		if (x->res && res_same(a, t, n, v))
			continue;
		json_t *old = json_object_get(x->meta, n);
		json_object_set(prev, n, old ? old : json_null());
		json_object_set(x->meta, n, m);
		json_object_set_new(changed, n, json_true());
	}
	apply_resources_now(a, t, got, removed, full_state, err, errlen);
	json_object_foreach(prev, n, v) {   /* rejected: the previous meta again */
		if (x->res && res_same(a, t, n, json_object_get(got, n)))
			continue;
		if (json_is_null(v))
			json_object_del(x->meta, n);
		else
			json_object_set(x->meta, n, v);
	}
	json_array_foreach(removed, i, v)
		json_object_del(x->meta, json_string_value(v));
	if (full_state)
		json_object_foreach_safe(x->meta, tmp, n, v)
			if (!x->res || !json_object_get(x->res, n))
				json_object_del(x->meta, n);
	json_decref(prev);
	json_decref(m);
}

static void apply_resources_now(struct ads *a, int t, json_t *got, const json_t *removed,
				bool full_state, char *err, size_t errlen)
{
	struct xtype *x = &a->t[t];
	const char *n;
	json_t *v;
	size_t i;

	switch (t) {
	case T_CDS:
	case T_EDS:   /* applied one at a time (cds_one, eds_one) */
		break;
	case T_LDS: {
		json_t *prev = x->res;
		if (full_state) {
			x->res = json_incref(got);
		} else {   /* delta: changed in place */
			x->res = prev ? json_incref(prev) : json_object();
			json_object_update(x->res, got);
			json_array_foreach(removed, i, v)
				json_object_del(x->res, json_string_value(v));
		}
		rebuild_listeners(a, err, errlen, NULL);
		json_decref(prev);
		a->rsub_dirty = true;
		break;
	}
	case T_RDS: {
		bool gone = false;
		if (!x->res)
			x->res = json_object();
		json_object_foreach(got, n, v) {
			json_t *old = json_incref(json_object_get(x->res, n));
			char e2[2048] = "";
			json_object_set(x->res, n, v);
			rebuild_listeners(a, e2, sizeof(e2), n);
			if (e2[0]) {   /* reject this route table: keep the old one */
				add_error(err, errlen, "RouteConfiguration", n, e2);
				if (old)
					json_object_set(x->res, n, old);
				else
					json_object_del(x->res, n);
				char e3[256] = "";
				rebuild_listeners(a, e3, sizeof(e3), NULL);
			} else {
				rds_arrived(a, n);
			}
			json_decref(old);
		}
		/* a removed route table: listeners compiled with it keep it */
		json_array_foreach(removed, i, v)
			gone |= !json_object_del(x->res, json_string_value(v));
		if (gone) {
			char e3[256] = "";
			rebuild_listeners(a, e3, sizeof(e3), NULL);
		}
		break;
	}
	case T_SDS:
		/* each secret replaces the store's (the contexts using it rebuild);
		 * a rejected one leaves the previous version serving */
		if (!x->res)
			x->res = json_object();
		json_object_foreach(got, n, v) {
			char e[1024] = "";
			if (tls_sds_apply(n, v, a->applying_version, e, sizeof(e)) < 0)
				add_error(err, errlen, "Secret", n, e);
			else
				json_object_set(x->res, n, v);
		}
		/* a removed secret: its last version keeps serving (Envoy) */
		json_array_foreach(removed, i, v)
			json_object_del(x->res, json_string_value(v));
		break;
	}
}

/* The per-resource subscription stats of one applied response of type t:
 * EDS (cluster.<name>.*), RDS (http.<prefix>.rds.<name>.*) and the SDS
 * secrets that could not be decoded (tls_sds_apply counts the others).
 * got: the decoded resources; bad: names that could not be decoded;
 * removed: delta's removed names (may be NULL); changed: names whose
 * resource differed from the accepted one; n_resources: in the response.
 * Each resource counts in the subscriptions of its name: update_success if
 * it is in force now (an unchanged resend too), else update_rejected; a
 * response with no resource at all counts update_empty in every
 * subscription of the type, a removed ClusterLoadAssignment update_empty in
 * its clusters (Envoy's EDS), a removed RouteConfiguration update_success. */
/* The names a response of type t carried (got: name -> resource JSON, or
 * true for EDS) and removed, kept only while type t has errors to set or
 * clear; a rejected listener's or route table's JSON is kept as its
 * failed_configuration. */
static void resp_note_names(struct ads *a, int t, const json_t *got, const json_t *removed)
{
	const char *n;
	json_t *v;
	size_t i;
	if (!resp.buf || (!json_object_size(a->t[t].errors) &&
			  !json_object_get(resp.errs, type_names[t])))
		return;
	if (!resp.seen)
		resp.seen = json_object();
	if (!resp.gone)
		resp.gone = json_object();
	json_object_foreach((json_t *)got, n, v)
		json_object_set(resp.seen, n, (t == T_LDS || t == T_RDS) ? v : json_true());
	json_array_foreach(removed, i, v)
		json_object_set(resp.gone, json_string_value(v), json_true());
}

static void count_resources(struct ads *a, int t, const json_t *got, const json_t *bad,
			    const json_t *removed, const json_t *changed, size_t n_resources)
{
	const char *ver = a->applying_version, *n;
	json_t *v;
	size_t i;

	resp_note_names(a, t, got, removed);
	if (t == T_SDS) {
		json_object_foreach((json_t *)bad, n, v)
			tls_sds_reject(n);
		return;
	}
	if (t != T_EDS && t != T_RDS)
		return;
	if (!n_resources && !json_array_size(removed)) {
		if (t == T_EDS)
			eds_count(a, NULL, SE_EMPTY, ver);
		else
			rds_count(a, NULL, SE_EMPTY, ver);
		json_object_clear(a->eds_rejected);
		return;
	}
	json_object_foreach((json_t *)got, n, v) {
		/* EDS: apply_eds noted what it rejected (res_same would re-serialize
		 * every assignment); RDS: the table in force is this one */
		bool ok = t == T_EDS ? !json_object_get(a->eds_rejected, n) : res_same(a, t, n, v);
		bool diff = json_object_get(changed, n) != NULL;

		if (t == T_RDS) {
			rds_count(a, n, ok ? SE_SUCCESS : SE_REJECTED, ver);
			if (!ok || !diff)
				continue;
			json_t *pos;
			json_array_foreach(json_object_get(a->rsub_index, n), i, pos) {
				struct stats_scope *sc = a->rsub[json_integer_value(pos)]->stats;
				stats_inc(sc, 0, RS_config_reload);
				stats_gauge_set(sc, RS_config_reload_time_ms, wall_ms());
			}
			continue;
		}
		eds_count(a, n, ok ? SE_SUCCESS : SE_REJECTED, ver);
		if (ok && !diff) {   /* the same assignment again: no host set rebuilt */
			size_t nu;
			struct dyn_cluster **users = eds_users_of(a, n, &nu);
			for (size_t u = 0; u < nu; u++) {
				struct stats_scope *sc = eds_scope(users[u], n);
				if (sc)
					stats_inc(sc, 0, update_no_rebuild);
			}
		}
	}
	json_object_foreach((json_t *)bad, n, v) {
		if (t == T_EDS)
			eds_count(a, n, SE_REJECTED, NULL);
		else
			rds_count(a, n, SE_REJECTED, NULL);
	}
	json_array_foreach(removed, i, v) {
		if (t == T_EDS)
			eds_count(a, json_string_value(v), SE_EMPTY, ver);
		else
			rds_count(a, json_string_value(v), SE_SUCCESS, ver);
	}
	json_object_clear(a->eds_rejected);   /* this response's only */
}

/* After a response was applied: ACK, or NACK (repeats of the same rejected
 * version delayed), stats, subscriptions, publication. */
/* After a response of type t (errors noted in resp): set the error_state of
 * the resources it rejected, clear it for those it carried and accepted or
 * removed (a full state of the world: for all others too).  Envoy: "set if
 * the last update failed, cleared after the next successful update". */
static void update_error_states(struct ads *a, int t, const char *version, bool full_state)
{
	struct xtype *x = &a->t[t];
	const json_t *errs = json_object_get(resp.errs, type_names[t]);
	const char *n;
	json_t *v, *tmp;
	char ts[40];

	if (x->errors) {
		json_object_foreach_safe(x->errors, tmp, n, v) {
			bool clear;
			if (json_object_get(errs, n))
				continue;
			if (full_state || json_object_get(resp.gone, n) || json_object_get(resp.seen, n))
				clear = true;
			else if (t == T_CDS) {   /* named by this response and accepted */
				const struct dyn_cluster *d = find_dc(a, n);
				clear = d && d->seen == a->gen;
			} else
				clear = false;
			if (clear)
				json_object_del(x->errors, n);
		}
	}
	if (!json_object_size(errs))
		return;
	if (!x->errors)
		x->errors = json_object();
	now_rfc3339(ts, sizeof(ts));
	json_object_foreach((json_t *)errs, n, v) {
		json_t *st = json_pack("{s:O, s:s, s:s}", "details", v, "last_update_attempt", ts,
				       "version_info", version);
		json_t *cfg = json_object_get(resp.seen, n);
		if (json_is_object(cfg)) {   /* a listener / route table that did not compile */
			json_t *any = json_pack("{s:s}", "@type", type_urls[t]);
			json_object_update(any, cfg);
			json_object_set_new(st, "failed_configuration", any);
		}
		json_object_set_new(x->errors, n, st);
	}
}

static void finish_response(struct xsub *s, const char *version, bool empty, const char *err)
{
	struct ads *a = s->ch->a;
	int t = s->type;
	struct xtype *x = &a->t[t];
	x->got_first = true;
	if (resp.buf == err) {
		update_error_states(a, t, version, !s->ch->delta && (t == T_CDS || t == T_LDS));
		resp_begin(NULL);
	}
	if (err[0]) {
		bool again = s->nacked_version && !strcmp(s->nacked_version, version);
		if (!again)
			log_warn("xds: rejecting %s version '%s' from '%s': %s", type_names[t], version,
				 s->ch->src->cluster, err);
		set_str(&s->nacked_version, version);
		sub_count(x->stats, &xu_idx, SE_REJECTED, s->ch->src->kind != XDS_REST, NULL);
		s->nack_repeats = again ? s->nack_repeats + 1 : 0;
		if (!s->nack_repeats) {
			send_ack(s, err);
		} else {
			/* A server resending the rejected version at once (e.g.
			 * go-control-plane answers every NACK with its snapshot)
			 * would make a busy loop: repeat NACKs are delayed
			 * 100 ms, doubling up to 10 s; a new response cancels. */
			uint64_t ms = NACK_DELAY_BASE_MS << (s->nack_repeats > 8 ? 7 : s->nack_repeats - 1);
			if (ms > NACK_DELAY_MAX_MS)
				ms = NACK_DELAY_MAX_MS;
			struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
			set_str(&s->nack_err, err);
			evtimer_add(s->nack_ev, &tv);
		}
	} else {
		s->nack_repeats = 0;
		set_str(&s->version, version);
		set_str(&x->version, version);
		sub_count(x->stats, &xu_idx, empty ? SE_EMPTY : SE_SUCCESS,
			  s->ch->src->kind != XDS_REST, x->version);
		if (x->stats)
			stats_hist_record(x->stats, 0, XU_update_duration,
					  (double)(mono_us() - a->apply_start_us) / 1000.0);
		send_ack(s, NULL);
	}
	update_subscriptions(a);
	try_publish(a);
	check_initial(a);
}

/* CDS/EDS: resources[idx] (a protobuf Any, possibly in a Resource wrapper)
 * checked and applied at once; errors go to err. */
static void take_xres(struct ads *a, struct xbatch *bt, const Google__Protobuf__Any *any,
		      size_t idx, const char *want_name, char *err, size_t errlen)
{
	struct xin in = { 0 };
	const char *url;
	char e[512] = "";

	if (!any) {
		snprintf(e, sizeof(e), "resources[%zu]: no resource (removals go in removed_resources)",
			 idx);
		add_error(err, errlen, type_names[bt->t], want_name, e);
		return;
	}
	url = any->type_url;
	in.pb = any->value.data;
	in.pblen = any->value.len;
	if (url && !strcmp(url, XDS_TYPE_RESOURCE)) {   /* SotW TTL wrapper */
		in.wrap = envoy__service__discovery__v3__resource__unpack(NULL, in.pblen, in.pb);
		if (!in.wrap || !in.wrap->resource) {
			snprintf(e, sizeof(e), "resources[%zu]: malformed Resource wrapper", idx);
			add_error(err, errlen, type_names[bt->t], want_name, e);
			xin_done(&in);
			return;
		}
		url = in.wrap->resource->type_url;
		in.pb = in.wrap->resource->value.data;
		in.pblen = in.wrap->resource->value.len;
	}
	if (!url || strcmp(url, type_urls[bt->t])) {
		snprintf(e, sizeof(e), "resources[%zu]: %s does not match %s type URL in "
			 "DiscoveryResponse", idx, url ? url : "(none)", type_urls[bt->t]);
		add_error(err, errlen, type_names[bt->t], want_name, e);
	} else if (xin_init(a, bt, &in, idx, want_name, err, errlen)) {
		batch_apply(a, bt, &in, err, errlen);
	}
	xin_done(&in);
}

/* REST CDS/EDS: one resource in proto3 JSON, applied at once. */
static void take_json_xres(struct ads *a, struct xbatch *bt, const json_t *r, size_t idx,
			   char *err, size_t errlen)
{
	char e[1024] = "";
	const char *want;
	struct xin in = { 0 };

	in.j = json_resource_copy(bt->t, r, idx, &want, e, sizeof(e));
	if (!in.j) {
		add_error(err, errlen, type_names[bt->t], want, e);
		return;
	}
	if (xin_init(a, bt, &in, idx, want, err, errlen))
		batch_apply(a, bt, &in, err, errlen);
	xin_done(&in);
}

/* A decoded state-of-the-world DiscoveryResponse. */
struct ads_sotw_response {
	int type;                   /* T_* */
	const char *version;        /* version_info */
	json_t *got;                /* the valid resources: name -> snake_case JSON */
	size_t n_resources;         /* resources in the response (valid or not) */
	json_t *bad;                /* names of the resources that could not be decoded */
	char *err;                  /* the NACK detail so far ("" none); appended to */
	size_t errlen;
};

static void ads_apply_sotw(struct xsub *s, struct ads_sotw_response *d);

static int type_index(const char *url)
{
	for (int t = 0; t < T_N; t++)
		if (url && !strcmp(url, type_urls[t]))
			return t;
	return -1;
}

/* The subscription a gRPC response of type_url belongs to on ch, or NULL
 * (logged): an unknown type, or another type than a per-type stream's. */
static struct xsub *response_sub(struct xchan *ch, const char *type_url, const char *what)
{
	int t = type_index(type_url);
	if (t < 0 || (ch->only >= 0 && t != ch->only)) {
		log_warn("xds: %s for %s type '%s' on the %s stream to '%s' ignored", what,
			 t < 0 ? "unsupported" : "another", type_url ? type_url : "",
			 ch->only < 0 ? "ADS" : type_names[ch->only], ch->src->cluster);
		return NULL;
	}
	return &ch->s[t];
}

static void handle_response(struct xchan *ch,
			    const Envoy__Service__Discovery__V3__DiscoveryResponse *r)
{
	struct xsub *s = response_sub(ch, r->type_url, "response");
	char err[4096] = "";
	if (!s)
		return;
	struct ads *a = ch->a;
	int t = s->type;
	set_str(&s->nonce, r->nonce);   /* always echo the newest nonce */
	evtimer_del(s->nack_ev);        /* a delayed NACK is superseded */
	a->apply_start_us = mono_us();
	resp_begin(err);
	if (t == T_CDS || t == T_EDS) {
		const char *version = r->version_info ? r->version_info : "";
		struct xbatch bt;
		a->applying_version = version;
		batch_init(a, &bt, t, version, t == T_CDS);
		for (size_t i = 0; i < r->n_resources; i++)
			take_xres(a, &bt, r->resources[i], i, NULL, err, sizeof(err));
		batch_finish(a, &bt, NULL, r->n_resources);
		finish_response(s, version, !r->n_resources, err);
		return;
	}

	json_t *got = json_object(), *bad = json_object();
	for (size_t i = 0; i < r->n_resources; i++)
		take_resource(a, t, r->resources[i], i, NULL, got, bad, err, sizeof(err));
	struct ads_sotw_response d = { t, r->version_info ? r->version_info : "", got,
				       r->n_resources, bad, err, sizeof(err) };
	ads_apply_sotw(s, &d);
	json_decref(got);
	json_decref(bad);
}

/* REST: a DiscoveryResponse in proto3 JSON (camelCase or snake_case keys).
 * Returns -1 (nothing applied) if it is not one for this type. */
static int handle_json_response(struct xsub *s, const json_t *r)
{
	char err[4096] = "";
	int t = s->type;
	const char *url = json_string_value(cfg_get(r, "type_url"));
	const json_t *res = cfg_get(r, "resources"), *v;
	const char *version = json_string_value(cfg_get(r, "version_info"));
	size_t i;
	if (!json_is_object(r) || (url && strcmp(url, type_urls[t])) || (res && !json_is_array(res)))
		return -1;
	struct ads *a = s->ch->a;
	set_str(&s->nonce, json_string_value(cfg_get(r, "nonce")));
	a->apply_start_us = mono_us();
	resp_begin(err);
	if (t == T_CDS || t == T_EDS) {
		struct xbatch bt;
		a->applying_version = version ? version : "";
		batch_init(a, &bt, t, version ? version : "", t == T_CDS);
		json_array_foreach(res, i, v)
			take_json_xres(a, &bt, v, i, err, sizeof(err));
		batch_finish(a, &bt, NULL, json_array_size(res));
		finish_response(s, version ? version : "", !json_array_size(res), err);
		return 0;
	}
	json_t *got = json_object(), *bad = json_object();
	json_array_foreach(res, i, v)
		take_json_resource(t, v, i, got, bad, err, sizeof(err));
	struct ads_sotw_response d = { t, version ? version : "", got, json_array_size(res), bad,
				       err, sizeof(err) };
	ads_apply_sotw(s, &d);
	json_decref(got);
	json_decref(bad);
	return 0;
}

/* Apply one decoded state-of-the-world DiscoveryResponse (ADS, a per-type
 * stream or REST: every transport ends here): the valid resources are
 * applied (CDS/LDS as the full state), then ACK or NACK on the transport it
 * came from (d->err: the decode errors so far, extended here). */
static void ads_apply_sotw(struct xsub *s, struct ads_sotw_response *d)
{
	struct ads *a = s->ch->a;
	struct xtype *x = &a->t[d->type];
	int t = d->type;
	/* unchanged resend of the accepted state: ACK without re-applying */
	bool unchanged = !d->err[0] && x->res && res_all_same(a, t, d->got) &&
			 (t == T_CDS || t == T_LDS || json_object_size(d->got)) && t != T_SDS;
	json_t *changed = json_object();
	a->applying_version = d->version;
	if (!unchanged)
		apply_resources(a, t, d->got, NULL, t == T_CDS || t == T_LDS, changed, d->err,
				d->errlen);
	count_resources(a, t, d->got, d->bad, NULL, changed, d->n_resources);
	json_decref(changed);
	finish_response(s, d->version, !d->n_resources, d->err);
}

static void handle_delta(struct xchan *ch,
			 const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r)
{
	struct xsub *s = response_sub(ch, r->type_url, "delta response");
	char err[4096] = "", vkey[160];
	if (!s)
		return;
	struct ads *a = ch->a;
	int t = s->type;
	struct xtype *x = &a->t[t];
	set_str(&s->nonce, r->nonce);
	evtimer_del(s->nack_ev);
	a->apply_start_us = mono_us();
	resp_begin(err);
	if (!x->rver)
		x->rver = json_object();
	if (t == T_CDS || t == T_EDS) {
		json_t *removed = json_array();
		struct xbatch bt;
		for (size_t i = 0; i < r->n_removed_resources; i++)
			json_array_append_new(removed, json_string(r->removed_resources[i]));
		for (size_t i = 0; i < r->n_removed_resource_names; i++)
			if (r->removed_resource_names[i]->name)
				json_array_append_new(removed,
						      json_string(r->removed_resource_names[i]->name));
		a->applying_version = r->system_version_info ? r->system_version_info : "";
		batch_init(a, &bt, t, a->applying_version, false);
		for (size_t i = 0; i < r->n_resources; i++) {
			const Envoy__Service__Discovery__V3__Resource *res = r->resources[i];
			const char *want = res->name && *res->name ? res->name
					   : res->resource_name ? res->resource_name->name : NULL;
			bt.rver = res->version ? res->version : "";
			take_xres(a, &bt, res->resource, i, want, err, sizeof(err));
		}
		batch_finish(a, &bt, removed, r->n_resources);
		snprintf(vkey, sizeof(vkey), "%s", r->system_version_info && *r->system_version_info
						     ? r->system_version_info : r->nonce ? r->nonce : "");
		finish_response(s, vkey, !r->n_resources && !json_array_size(removed), err);
		json_decref(removed);
		return;
	}

	json_t *got = json_object(), *vers = json_object(), *removed = json_array();
	json_t *bad = json_object(), *changed = json_object();
	for (size_t i = 0; i < r->n_resources; i++) {
		const Envoy__Service__Discovery__V3__Resource *res = r->resources[i];
		const char *want = res->name && *res->name ? res->name
				   : res->resource_name ? res->resource_name->name : NULL;
		const char *name = take_resource(a, t, res->resource, i, want, got, bad, err,
						 sizeof(err));
		if (name)
			json_object_set_new(vers, name, json_string(res->version ? res->version : ""));
	}
	for (size_t i = 0; i < r->n_removed_resources; i++)
		json_array_append_new(removed, json_string(r->removed_resources[i]));
	for (size_t i = 0; i < r->n_removed_resource_names; i++)
		if (r->removed_resource_names[i]->name)
			json_array_append_new(removed, json_string(r->removed_resource_names[i]->name));
	a->applying_version = r->system_version_info ? r->system_version_info : "";
	apply_resources(a, t, got, removed, false, changed, err, sizeof(err));
	count_resources(a, t, got, bad, removed, changed, r->n_resources);
	json_decref(bad);
	json_decref(changed);

	/* per-resource versions of what is now in force (a rejected resource
	 * keeps the version of its previous state) */
	const char *n;
	json_t *v;
	size_t i;
	json_object_foreach(got, n, v) {
		if (res_same(a, t, n, v))
			json_object_set(x->rver, n, json_object_get(vers, n));
	}
	json_array_foreach(removed, i, v)
		json_object_del(x->rver, json_string_value(v));
	json_decref(got);
	json_decref(vers);
	/* repeat-NACK detection keys on system_version_info, else each response
	 * is new (its nonce) */
	snprintf(vkey, sizeof(vkey), "%s", r->system_version_info && *r->system_version_info
					     ? r->system_version_info : r->nonce ? r->nonce : "");
	finish_response(s, vkey, !r->n_resources && !json_array_size(removed), err);
	json_decref(removed);
}

/* ---- the streams ------------------------------------------------------------------ */

/* Per-type gRPC services (transport_api_version V3), [type][delta]. */
static const char *const type_paths[T_N][2] = {
	{ "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
	  "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters" },
	{ "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
	  "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints" },
	{ "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
	  "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners" },
	{ "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
	  "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes" },
	{ "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
	  "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets" },
};

static const char *chan_name(const struct xchan *ch)
{
	return ch->only < 0 ? "ADS" : type_names[ch->only];
}

/* control_plane.connected_state: 1 while every gRPC stream is up. */
static void update_connected(struct ads *a)
{
	int n = 0, up = 0;
	for (struct xchan *ch = a->chans; ch; ch = ch->next)
		if (ch->src->kind != XDS_REST) {
			n++;
			up += ch->connected;
		}
	stats_gauge_set(a->cp_stats, CP_connected_state, n && up == n);
}

static void on_open(void *arg)
{
	struct xchan *ch = arg;
	struct ads *a = ch->a;
	ch->connected = true;
	update_connected(a);
	log_info("xds: %s stream to '%s' connected%s%s", chan_name(ch),
		 ch->src->svc[ch->cur].cluster ? ch->src->svc[ch->cur].cluster : ch->src->cluster,
		 ch->delta ? " (delta)" : "", ch->cur ? " (failover server)" : "");
	/* (re)subscribe: nonces do not survive a stream; versions do */
	ch->node_sent = false;
	for (int t = 0; t < T_N; t++) {
		set_str(&ch->s[t].nonce, NULL);
		evtimer_del(ch->s[t].nack_ev);
		ch->s[t].nack_repeats = 0;
		ch->s[t].sent_first = false;
	}
	for (int t = 0; t < T_N; t++) {
		struct xsub *s = &ch->s[t];
		if (ch->delta) {
			/* wildcard types: an empty first subscription; by-name
			 * types: the names subscribed before; each with the
			 * versions held */
			if (s->wildcard) {
				send_delta(s, false, NULL, NULL, NULL);
			} else if (namelist_size(s->subs)) {
				json_t *sub = namelist_json(s->subs);
				send_delta(s, false, NULL, sub, NULL);
				json_decref(sub);
			}
		} else if (s->wildcard || namelist_size(s->sent_names)) {
			send_sotw(s, NULL);
		}
	}
	update_subscriptions(a);   /* names that appeared while the stream was down */
}

/* A large response (the full set of 10,000 clusters) decodes into tens of
 * MB of short-lived protobuf and JSON objects, freed again once it is
 * applied; glibc keeps those pages (they sit between the long-lived
 * clusters, so the heap top cannot shrink).  Give the free pages back
 * after such a response (glibc's malloc_trim also releases whole free pages
 * inside the heap): a few ms per large response.  64 KB: a push of 2,000
 * clusters (~100 KB of CDS) kept ~0.3 KB a cluster of such pages at 256 KB. */
#define ADS_TRIM_BYTES (64u << 10)

/* A response arrived on ch's stream: its server is reachable (Envoy counts
 * a server as connected from its first response). */
static void chan_answered(struct xchan *ch)
{
	if (!ch->got_response && ch->src->nsvc > 1) {
		if (ch->cur == 0) {
			ch->primary_answered = true;
			ch->primary_fails = 0;
		}
		if (ch->answered != (int)ch->cur)
			log_info("xds: %s stream: configuration now from the %s server '%s'",
				 chan_name(ch), ch->cur ? "failover" : "primary",
				 ch->src->svc[ch->cur].cluster);
		ch->answered = (int)ch->cur;
	}
	ch->got_response = true;
}

static void on_message_decoded(struct xchan *ch, const uint8_t *data, size_t len)
{
	struct pb_arena arena;   /* the response's objects: released at once, off the heap */

	pb_arena_init(&arena);
	if (ch->delta) {
		Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *d =
			envoy__service__discovery__v3__delta_discovery_response__unpack(&arena.alloc,
											len, data);
		if (!d) {
			log_warn("xds: malformed DeltaDiscoveryResponse (%zu bytes) ignored", len);
		} else {
			chan_answered(ch);
			handle_delta(ch, d);
		}
		pb_arena_release(&arena);
		return;
	}
	Envoy__Service__Discovery__V3__DiscoveryResponse *r =
		envoy__service__discovery__v3__discovery_response__unpack(&arena.alloc, len, data);
	if (!r) {
		log_warn("xds: malformed DiscoveryResponse (%zu bytes) ignored", len);
	} else {
		chan_answered(ch);
		handle_response(ch, r);
	}
	pb_arena_release(&arena);
}

static void on_message(void *arg, const uint8_t *data, size_t len)
{
	on_message_decoded(arg, data, len);
	if (len >= ADS_TRIM_BYTES)
		malloc_trim(0);   /* not arg: the callback may have freed it */
}

static void free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xchan *ch = arg;
	(void)fd;
	(void)what;
	grpc_client_free(ch->dead);
	ch->dead = NULL;
}

/* Each stream has its own jittered exponential backoff, reset after a stream
 * that got a response. */
static void schedule_reconnect(struct xchan *ch)
{
	if (ch->got_response)
		ch->backoff_ms = 0;
	ch->got_response = false;
	ch->backoff_ms = ch->backoff_ms ? ch->backoff_ms * 2 : BACKOFF_BASE_MS;
	if (ch->backoff_ms > BACKOFF_MAX_MS)
		ch->backoff_ms = BACKOFF_MAX_MS;
	uint64_t ms = ch->backoff_ms / 2 + rand_u64() % (ch->backoff_ms / 2 + 1);
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(ch->retry_ev, &tv);
	log_info("xds: %s stream to '%s': reconnecting in %llu ms", chan_name(ch), ch->src->cluster,
		 (unsigned long long)ms);
}

/* After a stream ended: the next attempt.  One server: the backoff.  With a
 * failover server (grpc_services[1]), Envoy's policy
 * (envoy.restart_features.xds_failover_support with
 * xds_failover_to_primary_enabled): while the primary has never responded,
 * its second attempt in a row without a response switches to the failover
 * at once; a failover stream that ends (before or after responses) goes
 * back to the primary after the backoff; once the primary has responded,
 * only the primary is retried. */
static void reconnect_next(struct xchan *ch)
{
	if (ch->src->nsvc < 2) {
		schedule_reconnect(ch);
		return;
	}
	if (ch->cur == 0 && !ch->got_response && !ch->primary_answered &&
	    ++ch->primary_fails >= 2) {
		struct timeval zero = { 0, 0 };
		ch->cur = 1;
		log_warn("xds: %s stream: primary server '%s' did not respond (%u attempts): "
			 "trying the failover server '%s'", chan_name(ch), ch->src->svc[0].cluster,
			 ch->primary_fails, ch->src->svc[1].cluster);
		evtimer_add(ch->retry_ev, &zero);
		return;
	}
	ch->cur = 0;   /* the failover's stream ended: the primary next */
	schedule_reconnect(ch);
}

static void on_close(void *arg, int status, const char *message)
{
	struct xchan *ch = arg;
	struct ads *a = ch->a;
	log_warn("xds: %s stream to '%s' closed: grpc-status %d %s", chan_name(ch),
		 ch->src->svc[ch->cur].cluster ? ch->src->svc[ch->cur].cluster : ch->src->cluster,
		 status, message ? message : "");
	ch->connected = false;
	update_connected(a);
	for (int t = 0; t < T_N; t++)   /* Envoy: a stream failure is an update failure */
		if (ch->only < 0 || ch->only == t)
			count_failure(a, t, false);
	ch->dead = ch->g;
	ch->g = NULL;
	struct timeval zero = { 0, 0 };
	evtimer_add(ch->free_ev, &zero);
	reconnect_next(ch);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct xchan *ch = arg;
	stats_inc(ch->a->cp_stats, 0, CP_stream_reconnects);
	chan_connect(ch);
}

static void nack_delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xsub *s = arg;
	(void)fd;
	(void)what;
	send_ack(s, s->nack_err);
}

static void chan_connect(struct xchan *ch)
{
	static const struct grpc_client_cbs cbs = { on_open, on_message, on_close };
	struct ads *a = ch->a;
	const struct xds_grpc_svc *svc = &ch->src->svc[ch->cur];
	struct cluster *cl = snapshot_find_cluster(a->srv->snap, svc->cluster);
	struct hostset *hs = cl ? cl->hs : NULL;
	if (!hs || !hs->n) {
		log_warn("xds: cluster '%s' has no host yet", svc->cluster);
		ch->got_response = false;
		reconnect_next(ch);   /* an attempt that failed */
		return;
	}
	struct host *h = hs->hosts[rand_u64() % hs->n];
	const char *path = ch->only < 0 ? (ch->delta ? DELTA_PATH : ADS_PATH)
					: type_paths[ch->only][ch->delta];
	/* a cluster with a TLS transport_socket: TLS (mTLS with a certificate) */
	ch->g = grpc_client_new_tls(a->srv->base, (struct sockaddr *)&h->addr, h->addrlen, cl->tls,
				    svc->authority, path, KEEPALIVE_MS, &cbs, ch);
	if (!ch->g) {
		schedule_reconnect(ch);
		return;
	}
	/* initial_metadata: request headers of the stream (checked at parse) */
	for (size_t i = 0; i < json_array_size(svc->md); i++) {
		const json_t *kv = json_array_get(svc->md, i);
		grpc_client_add_metadata(ch->g, json_string_value(json_array_get(kv, 0)),
					 json_string_value(json_array_get(kv, 1)));
	}
}

/* A new transport for src (only: its type, -1 for ADS); gRPC streams
 * connect at once. */
static struct xchan *chan_new(struct ads *a, const struct xds_source *src, int only)
{
	struct xchan *ch = xcalloc(1, sizeof(*ch));
	ch->a = a;
	ch->src = src;
	ch->only = only;
	ch->delta = src->delta;
	ch->answered = -1;
	ch->retry_ev = evtimer_new(a->srv->base, retry_cb, ch);
	ch->free_ev = evtimer_new(a->srv->base, free_cb, ch);
	for (int t = 0; t < T_N; t++) {
		ch->s[t].ch = ch;
		ch->s[t].type = t;
		ch->s[t].nack_ev = evtimer_new(a->srv->base, nack_delayed_cb, &ch->s[t]);
		if (src->kind == XDS_REST)
			ch->s[t].rest_ev = evtimer_new(a->srv->base, rest_timer_cb, &ch->s[t]);
	}
	struct xchan **tail = &a->chans;
	while (*tail)
		tail = &(*tail)->next;
	*tail = ch;
	if (src->kind == XDS_REST)
		log_info("xds: polling %s over REST from '%s' every %llu ms", type_names[only],
			 src->cluster, (unsigned long long)src->refresh_ms);
	else
		chan_connect(ch);
	return ch;
}

static void chan_free(struct xchan *ch)
{
	grpc_client_free(ch->g);
	grpc_client_free(ch->dead);
	event_free(ch->retry_ev);
	event_free(ch->free_ev);
	for (int t = 0; t < T_N; t++) {
		struct xsub *s = &ch->s[t];
		free(s->version);
		free(s->nonce);
		free(s->nacked_version);
		free(s->nack_err);
		event_free(s->nack_ev);
		if (async_http_cancel(s->rest_req))
			ch->a->pending--;
		if (s->rest_ev)
			event_free(s->rest_ev);
		free(s->rest_err);
		free(s->sent_names);
		free(s->subs);
	}
	free(ch);
}

/* The transport of source key for type t (created on first use); NULL for
 * a source that is not known (or ads without ads_config). */
static struct xchan *chan_get(struct ads *a, const char *key, int t)
{
	if (!key || !strcmp(key, XDS_ADS_KEY))
		return a->ads_ch;
	for (struct xchan *ch = a->chans; ch; ch = ch->next)
		if (ch->only == t && !strcmp(ch->src->key, key))
			return ch;
	const struct xds_source *src = xds_source_get(key);
	return src && src->kind != XDS_ADS ? chan_new(a, src, t) : NULL;
}

/* SDS secrets in use changed, or one became usable: start the clusters and
 * listeners that waited for them, update the subscription. */
static void sds_changed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ads *a = arg;
	char err[2048] = "";
	(void)fd;
	(void)what;
	for (size_t i = 0; i < a->ndc; i++) {
		struct dyn_cluster *d = a->dc[i];
		if (d->sds_wait && d->warming && tls_ctx_ready(d->warming->tls)) {
			d->sds_wait = false;
			log_info("xds: cluster '%s': its SDS secrets arrived", d->name);
			launch_warming(a, d);
		}
	}
	if (a->ndl)
		rebuild_listeners(a, err, sizeof(err), NULL);
	if (err[0])
		log_warn("xds: after an SDS update: %s", err);
	update_subscriptions(a);
	try_publish(a);
	check_initial(a);
}

static void sds_notify(void *arg)
{
	struct ads *a = arg;
	struct timeval zero = { 0, 0 };
	if (!evtimer_pending(a->sds_ev, NULL))
		evtimer_add(a->sds_ev, &zero);
}

/* CDS or LDS of dynamic_resources: wildcard on the transport of its source. */
static void subscribe_wildcard(struct ads *a, const char *key, int t)
{
	struct xchan *ch = chan_get(a, key, t);
	if (!ch) {
		log_warn("xds: %s source '%s' unknown: not subscribed", type_names[t], key);
		return;
	}
	ch->s[t].wildcard = true;
	if (ch->src->kind == XDS_REST)
		rest_schedule(&ch->s[t], 0);   /* the first poll on the next loop turn */
	else if (ch->connected)
		send_sotw(&ch->s[t], NULL);   /* delta: on_open subscribes */
}

struct ads *ads_start(struct server *srv)
{
	struct ads *a = xcalloc(1, sizeof(*a));

	/* Responses of several MB arrive whole (grpc_client's contiguous
	 * message buffer): keep such buffers in their own mappings, returned
	 * when freed, instead of letting glibc raise its mmap threshold after
	 * the first one and carve the next from the heap between long-lived
	 * clusters. */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	struct snapshot *s = srv->snap;
	a->srv = srv;
	strmap_init(&a->dc_map, offsetof(struct dyn_cluster, name));
	strmap_init(&a->eds_map, offsetof(struct dyn_eds, name));
	a->eds_rejected = json_object();
	a->bootstrap = json_incref(s->bootstrap);
	a->scl = xcalloc(s->nclusters + 1, sizeof(*a->scl));
	for (size_t i = 0; i < s->nclusters; i++)
		a->scl[a->nscl++] = cluster_ref(s->clusters[i]);
	a->sl = xcalloc(s->nlisteners + 1, sizeof(*a->sl));
	for (size_t i = 0; i < s->nlisteners; i++)
		a->sl[a->nsl++] = listener_ref(s->listeners[i]);
	a->cp_stats = stats_scope_new(srv->stats, "control_plane", "control_plane", NULL, NULL,
				      cp_desc, CP_N);
	a->cm_stats = stats_scope_new(srv->stats, "cluster_manager", "cluster_manager", NULL, NULL,
				      cm_desc, CM_N);
	a->t[T_CDS].stats = stats_scope_new_main(srv->stats, "cluster_manager.cds",
						 "cluster_manager.cds", NULL, NULL, xu_desc, XU_N);
	a->t[T_LDS].stats = stats_scope_new_main(srv->stats, "listener_manager.lds",
						 "listener_manager.lds", NULL, NULL, xu_desc, XU_N);
	a->init_ev = evtimer_new(srv->base, init_timeout_cb, a);
	a->publish_ev = evtimer_new(srv->base, publish_cb, a);
	a->sds_ev = evtimer_new(srv->base, sds_changed_cb, a);
	tls_sds_set_notify(sds_notify, a);
	for (int t = 0; t < T_N; t++) {
		a->t[t].owner = a;
		a->t[t].type = t;
	}
	uint64_t ms = srv->xds.cds_timeout_ms > srv->xds.lds_timeout_ms ? srv->xds.cds_timeout_ms
									 : srv->xds.lds_timeout_ms;
	if (ms && srv->xds.cds && srv->xds.lds && (!srv->xds.cds_timeout_ms || !srv->xds.lds_timeout_ms))
		ms = 0;   /* one of them waits forever */
	if (ms) {
		/* EDS and RDS have their own timeouts after CDS/LDS: allow for both */
		struct timeval tv = { (time_t)(2 * ms / 1000), (suseconds_t)(2 * ms % 1000) * 1000 };
		evtimer_add(a->init_ev, &tv);
	}
	if (!srv->xds.cds && !srv->xds.lds && !tls_sds_waiting()) {
		a->initial_done = true;
		server_xds_initial_fetch_done(srv);
	}
	if (srv->xds.cluster)
		a->ads_ch = chan_new(a, xds_source_get(XDS_ADS_KEY), -1);
	if (srv->xds.cds)
		subscribe_wildcard(a, srv->xds.cds_key, T_CDS);
	if (srv->xds.lds)
		subscribe_wildcard(a, srv->xds.lds_key, T_LDS);
	update_subscriptions(a);   /* secrets named by the bootstrap */
	return a;
}

void ads_free(struct ads *a)
{
	if (!a)
		return;
	while (a->chans) {
		struct xchan *next = a->chans->next;
		chan_free(a->chans);
		a->chans = next;
	}
	event_free(a->init_ev);
	event_free(a->publish_ev);
	tls_sds_set_notify(NULL, NULL);
	event_free(a->sds_ev);
	for (size_t i = 0; i < a->ndc; i++)
		dc_free(a->dc[i]);
	free(a->dc);
	strmap_fini(&a->dc_map);
	for (size_t i = 0; i < a->eds_map.cap; i++) {
		struct dyn_eds *e = strmap_live(&a->eds_map, i) ? a->eds_map.slots[i] : NULL;
		if (!e)
			continue;
		free(e->src);
		xmeta_unref(e->meta);
		free(e->rver);
		free(e);
	}
	strmap_fini(&a->eds_map);
	free(a->eds_user);
	for (size_t i = 0; i < a->ndl; i++)
		dl_clear(&a->dl[i]);
	free(a->dl);
	for (size_t i = 0; i < a->nscl; i++)
		cluster_unref(a->scl[i]);
	free(a->scl);
	for (size_t i = 0; i < a->nsl; i++)
		listener_unref(a->sl[i]);
	free(a->sl);
	for (int t = 0; t < T_N; t++) {
		free(a->t[t].version);
		json_decref(a->t[t].res);
		json_decref(a->t[t].rver);
		json_decref(a->t[t].meta);
		json_decref(a->t[t].errors);
		stats_scope_free(a->t[t].stats);
		resp_begin(NULL);
	}
	stats_scope_free(a->cp_stats);
	stats_scope_free(a->cm_stats);
	for (size_t k = 0; k < a->nrsub; k++)
		rds_sub_free(a->rsub[k]);
	free(a->rsub);
	json_decref(a->rsub_index);
	json_decref(a->eds_rejected);
	json_decref(a->bootstrap);
	free(a);
}

/* ---- /config_dump -------------------------------------------------------------------- */

static json_t *with_meta(const json_t *meta, const char *key, const json_t *res)
{
	json_t *o = json_object();
	const json_t *v = json_object_get(meta, "version_info");
	const json_t *u = json_object_get(meta, "last_updated");
	json_object_set_new(o, "version_info", json_string(v ? json_string_value(v) : ""));
	json_object_set(o, key, (json_t *)res);
	if (u)
		json_object_set(o, "last_updated", (json_t *)u);
	return o;
}

/* The same from an xmeta (CDS, EDS). */
static json_t *with_xmeta(const struct xmeta *m, const char *key, const json_t *res)
{
	json_t *o = json_object();
	json_object_set_new(o, "version_info", json_string(m ? m->version : ""));
	json_object_set(o, key, (json_t *)res);
	if (m)
		json_object_set_new(o, "last_updated", json_string(m->last_updated));
	return o;
}

/* The Any form of a resource (compiled JSON) for the dump. */
static json_t *typed(int t, const json_t *j)
{
	json_t *o = json_object();
	json_object_set_new(o, "@type", json_string(type_urls[t]));
	if (j)
		json_object_update(o, (json_t *)j);
	return o;
}

/* The Any form of a kept CDS/EDS resource (decoded from its blob). */
static json_t *typed_blob(int t, const struct xblob *b)
{
	json_t *j = xblob_to_json(b, type_urls[t]), *o = typed(t, j);
	json_decref(j);
	return o;
}

/* error_state onto the dump entries of type t in arr: the entry whose name
 * (at path, two levels at most) is the resource's, else a new entry {error_state}
 * (with "name" when name_key: listeners and secrets, as Envoy's listener
 * dump does for a listener never accepted). */
static void dump_errors(const json_t *errors, json_t *arr, const char *obj, const char *field,
			bool name_key)
{
	const char *n;
	json_t *st, *el, *byname;
	size_t i;
	if (!json_object_size(errors))
		return;
	byname = json_object();
	json_array_foreach(arr, i, el) {
		const json_t *o = obj ? json_object_get(el, obj) : el;
		const char *en = json_string_value(json_object_get(o, field));
		if (en)
			json_object_set(byname, en, el);
	}
	json_object_foreach((json_t *)errors, n, st) {
		el = json_object_get(byname, n);
		if (!el) {
			el = json_object();
			if (name_key)
				json_object_set_new(el, "name", json_string(n));
			json_array_append_new(arr, el);
		}
		json_object_set(el, "error_state", st);
	}
	json_decref(byname);
}

json_t *ads_config_dump(struct ads *a, bool include_eds)
{
	if (!a)
		return json_object();
	json_t *out = json_object(), *active = json_array(), *warming = json_array(),
	       *lis = json_array(), *rc = json_array(), *eps = json_array(), *sec = json_array();
	const char *n;
	json_t *v;
	for (size_t i = 0; i < a->ndc; i++) {
		const struct dyn_cluster *d = a->dc[i];
		if (d->active) {
			json_t *c = typed_blob(T_CDS, d->active->src);
			json_array_append_new(active, with_xmeta(d->ameta, "cluster", c));
			json_decref(c);
		}
		if (d->warming) {
			json_t *c = typed_blob(T_CDS, d->warming->src);
			json_array_append_new(warming, with_xmeta(d->meta, "cluster", c));
			json_decref(c);
		}
	}
	json_object_foreach(a->t[T_LDS].res, n, v) {
		struct dyn_listener *d = find_dl(a, n);
		json_t *o = json_pack("{s:s}", "name", n), *l;
		if (d && d->l) {
			l = typed(T_LDS, d->l->json);
			json_object_set_new(o, "active_state", with_meta(d->ameta, "listener", l));
			json_decref(l);
		}
		if (!d || !d->l || !json_equal(d->l->json, v)) {   /* waiting for routes or secrets */
			l = typed(T_LDS, v);
			json_object_set_new(o, "warming_state",
					    with_meta(json_object_get(a->t[T_LDS].meta, n), "listener", l));
			json_decref(l);
		}
		json_array_append_new(lis, o);
	}
	json_object_foreach(a->t[T_RDS].res, n, v) {
		json_t *r = typed(T_RDS, v);
		json_array_append_new(rc, with_meta(json_object_get(a->t[T_RDS].meta, n),
						    "route_config", r));
		json_decref(r);
	}
	for (size_t i = 0; include_eds && i < a->eds_map.cap; i++) {
		const struct dyn_eds *e = strmap_live(&a->eds_map, i) ? a->eds_map.slots[i] : NULL;
		json_t *r;
		if (!e || !e->src)
			continue;
		r = typed_blob(T_EDS, e->src);
		json_array_append_new(eps, with_xmeta(e->meta, "endpoint_config", r));
		json_decref(r);
	}
	json_object_foreach(a->t[T_SDS].res, n, v) {
		json_t *r = typed(T_SDS, v);
		config_dump_redact(r);   /* private keys are never dumped */
		json_t *o = with_meta(json_object_get(a->t[T_SDS].meta, n), "secret", r);
		json_object_set_new(o, "name", json_string(n));
		json_array_append_new(sec, o);
		json_decref(r);
	}
	dump_errors(a->t[T_CDS].errors, active, "cluster", "name", false);
	dump_errors(a->t[T_LDS].errors, lis, NULL, "name", true);
	dump_errors(a->t[T_RDS].errors, rc, "route_config", "name", false);
	if (include_eds)
		dump_errors(a->t[T_EDS].errors, eps, "endpoint_config", "cluster_name", false);
	dump_errors(a->t[T_SDS].errors, sec, NULL, "name", true);
	json_object_set_new(out, "dynamic_active_clusters", active);
	json_object_set_new(out, "dynamic_warming_clusters", warming);
	json_object_set_new(out, "dynamic_listeners", lis);
	json_object_set_new(out, "dynamic_route_configs", rc);
	json_object_set_new(out, "dynamic_endpoint_configs", eps);
	json_object_set_new(out, "dynamic_active_secrets", sec);
	for (int t = T_CDS; t < T_N; t++)
		if (a->t[t].version && (t == T_CDS || t == T_LDS))
			json_object_set_new(out, t == T_CDS ? "cds_version_info" : "lds_version_info",
					    json_string(a->t[t].version));
	return out;
}
