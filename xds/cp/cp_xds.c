/* cp_xds.c - ADS (SotW and delta) and REST for remora-cp.
 *
 * Per stream and type the server remembers what the client has (names,
 * versions and bytes of what was last sent).  A push walks the types in
 * order CDS, EDS, SDS, LDS, RDS and sends a type whose desired set differs.
 * Make-before-break: while an LDS/RDS response is unacknowledged or about to
 * be sent, CDS/EDS keep the resources they would remove (with their old
 * bytes); the removals go out once LDS/RDS are acknowledged. */
#include "cp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../proxy/common.h"
#include "../../proxy/log.h"
#include "../pb_json.h"
#include "envoy/service/discovery/v3/subset.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/subset.pb-c.h"

#define ADS_SOTW "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define ADS_DELTA "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

struct sent {                  /* one resource as the client has it */
	char *name;
	char version[17];
	uint8_t *bytes;        /* owned copy (kept for deferred removals) */
	size_t len;
};

struct tstate {
	bool requested;        /* the client asked for this type */
	bool must_respond;     /* a request to answer even if nothing changed */
	bool wildcard;
	char **names;          /* explicit subscription (owned) */
	size_t nnames;
	struct sent *sent;     /* owned: what the client has */
	size_t nsent;
	char version[17];      /* SotW version_info last sent */
	char nonce[24];
	bool pending;          /* response not yet ACKed/NACKed */
	uint64_t sent_ns;
	char acked[17];        /* last ACKed version */
	char nack[512];        /* last NACK's error_detail ("" none) */
	unsigned long pushes, nacks;
};

struct xstream {
	struct xstream *prev, *next;
	struct cp_xds *x;
	struct cp_stream *st;
	bool delta;
	char *node_id, *node_cluster;   /* owned, from the first request */
	char peer[64];
	struct tstate t[CP_NTYPES];
	unsigned long nonce_seq;
};

#define LAT_BUCKETS 12
static const double lat_bounds[LAT_BUCKETS] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
						0.25, 0.5, 1, 2.5, 5 };

struct cp_xds {
	const struct cp_config *cfg;
	struct xstream *streams;
	unsigned nstreams;
	char last_error[1024];
	unsigned long pushes[CP_NTYPES], nacks[CP_NTYPES], acks[CP_NTYPES];
	unsigned long reloads, reload_failures, rest_requests[CP_NTYPES];
	unsigned long lat_count, lat_buckets[LAT_BUCKETS];
	double lat_sum;
};

static uint64_t cp_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- subscriptions ------------------------------------------------------- */

static int cmp_pstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_sent(const void *a, const void *b)
{
	return strcmp(((const struct sent *)a)->name, ((const struct sent *)b)->name);
}

/* Replace the explicit subscription (kept sorted and unique: lookups are
 * binary searches, EDS subscriptions can be large). */
static void set_names(struct tstate *ts, char **names, size_t n)
{
	for (size_t i = 0; i < ts->nnames; i++)
		free(ts->names[i]);
	free(ts->names);
	ts->names = n ? xmalloc(n * sizeof(char *)) : NULL;
	ts->nnames = 0;
	for (size_t i = 0; i < n; i++)
		ts->names[ts->nnames++] = xstrdup(names[i]);
	if (ts->nnames)
		qsort(ts->names, ts->nnames, sizeof(char *), cmp_pstr);
	size_t o = 0;
	for (size_t i = 0; i < ts->nnames; i++) {
		if (o && !strcmp(ts->names[o - 1], ts->names[i]))
			free(ts->names[i]);
		else
			ts->names[o++] = ts->names[i];
	}
	ts->nnames = o;
}

static char **name_find(const struct tstate *ts, const char *name)
{
	return ts->nnames ? bsearch(&name, ts->names, ts->nnames, sizeof(char *), cmp_pstr) : NULL;
}

static bool subscribed(const struct tstate *ts, const char *name)
{
	return ts->wildcard || name_find(ts, name);
}

/* ts->sent is sorted by name. */
static struct sent *sent_find(const struct tstate *ts, const char *name)
{
	struct sent key = { .name = (char *)name };
	return ts->nsent ? bsearch(&key, ts->sent, ts->nsent, sizeof(key), cmp_sent) : NULL;
}

static void sent_clear(struct tstate *ts)
{
	for (size_t i = 0; i < ts->nsent; i++) {
		free(ts->sent[i].name);
		free(ts->sent[i].bytes);
	}
	free(ts->sent);
	ts->sent = NULL;
	ts->nsent = 0;
}

/* The set to send for type t: what the config has for the node, filtered by
 * subscription, plus (keep_old) resources the client has that would go. */
struct want {
	struct sent *v;        /* borrowed pointers into config or ts->sent; not owned */
	size_t n;
	char version[17];
};

static void want_add(struct want *w, const char *name, const char *version, const uint8_t *bytes,
		     size_t len)
{
	w->v = xrealloc(w->v, (w->n + 1) * sizeof(*w->v));
	w->v[w->n].name = (char *)name;
	memcpy(w->v[w->n].version, version, 17);
	w->v[w->n].bytes = (uint8_t *)bytes;
	w->v[w->n].len = len;
	w->n++;
}

static void compute_want(struct xstream *s, enum cp_type t, bool keep_old, struct want *w)
{
	struct tstate *ts = &s->t[t];
	const struct cp_resource **res = NULL;
	char ver[17];
	size_t n = s->x->cfg ? cp_config_view(s->x->cfg, s->node_id, s->node_cluster, t, &res, ver) : 0;
	memset(w, 0, sizeof(*w));
	for (size_t i = 0; i < n; i++)
		if (subscribed(ts, res[i]->name))
			want_add(w, res[i]->name, res[i]->version, res[i]->bytes, res[i]->len);
	free(res);
	size_t sorted = w->n;   /* the view is sorted by name */
	if (keep_old) {
		for (size_t i = 0; i < ts->nsent; i++) {
			struct sent key = { .name = ts->sent[i].name };
			bool have = sorted && bsearch(&key, w->v, sorted, sizeof(key), cmp_sent);
			if (!have && subscribed(ts, ts->sent[i].name))
				want_add(w, ts->sent[i].name, ts->sent[i].version, ts->sent[i].bytes,
					 ts->sent[i].len);
		}
		if (w->n > sorted)
			qsort(w->v, w->n, sizeof(*w->v), cmp_sent);
	}
	/* version of the set: a hash over names and versions (order-independent) */
	unsigned long long h = 1469598103934665603ULL;
	for (size_t i = 0; i < w->n; i++) {
		unsigned long long e = 1469598103934665603ULL;
		for (const char *p = w->v[i].name; *p; p++)
			e = (e ^ (unsigned char)*p) * 1099511628211ULL;
		for (const char *p = w->v[i].version; *p; p++)
			e = (e ^ (unsigned char)*p) * 1099511628211ULL;
		h += e * 0x9E3779B97F4A7C15ULL;
	}
	snprintf(w->version, sizeof(w->version), "%016llx", h);
}

static bool want_differs(const struct tstate *ts, const struct want *w)
{
	if (w->n != ts->nsent)
		return true;
	for (size_t i = 0; i < w->n; i++) {
		const struct sent *s = sent_find(ts, w->v[i].name);
		if (!s || strcmp(s->version, w->v[i].version))
			return true;
	}
	return false;
}

/* ---- sending --------------------------------------------------------------- */

static void send_msg(struct xstream *s, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(m, buf);
	cp_stream_send(s->st, buf, n);
	free(buf);
}

static void record_sent(struct xstream *s, enum cp_type t, const struct want *w)
{
	struct tstate *ts = &s->t[t];
	struct sent *nv = xcalloc(w->n ? w->n : 1, sizeof(*nv));
	for (size_t i = 0; i < w->n; i++) {
		nv[i].name = xstrdup(w->v[i].name);
		memcpy(nv[i].version, w->v[i].version, 17);
		nv[i].bytes = xmalloc(w->v[i].len ? w->v[i].len : 1);
		memcpy(nv[i].bytes, w->v[i].bytes, w->v[i].len);
		nv[i].len = w->v[i].len;
	}
	sent_clear(ts);
	ts->sent = nv;
	ts->nsent = w->n;
	memcpy(ts->version, w->version, 17);
	snprintf(ts->nonce, sizeof(ts->nonce), "%lu", ++s->nonce_seq);
	ts->pending = true;
	ts->must_respond = false;
	ts->sent_ns = cp_now_ns();
	ts->pushes++;
	s->x->pushes[t]++;
	char names[512];
	size_t o = 0;
	names[0] = 0;
	for (size_t i = 0; i < w->n && o < sizeof(names) - 1; i++)
		o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s", i ? "," : "", w->v[i].name);
	log_debug("remora-cp: push %s to %s: [%s] version %s nonce %s", cp_type_short[t],
		  s->node_id ? s->node_id : "?", names, ts->version, ts->nonce);
}

static void send_sotw(struct xstream *s, enum cp_type t, const struct want *w)
{
	Envoy__Service__Discovery__V3__DiscoveryResponse r =
		ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
	Google__Protobuf__Any *anys = xcalloc(w->n ? w->n : 1, sizeof(*anys));
	Google__Protobuf__Any **ptrs = xcalloc(w->n ? w->n : 1, sizeof(*ptrs));
	record_sent(s, t, w);
	for (size_t i = 0; i < w->n; i++) {
		google__protobuf__any__init(&anys[i]);
		anys[i].type_url = (char *)cp_type_url[t];
		anys[i].value.data = w->v[i].bytes;
		anys[i].value.len = w->v[i].len;
		ptrs[i] = &anys[i];
	}
	r.version_info = s->t[t].version;
	r.type_url = (char *)cp_type_url[t];
	r.nonce = s->t[t].nonce;
	r.n_resources = w->n;
	r.resources = ptrs;
	send_msg(s, &r.base);
	free(anys);
	free(ptrs);
}

static void send_delta(struct xstream *s, enum cp_type t, const struct want *w)
{
	struct tstate *ts = &s->t[t];
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse r =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	size_t cap = w->n + ts->nsent + 1;
	Envoy__Service__Discovery__V3__Resource *res = xcalloc(cap, sizeof(*res));
	Envoy__Service__Discovery__V3__Resource **rp = xcalloc(cap, sizeof(*rp));
	Google__Protobuf__Any *anys = xcalloc(cap, sizeof(*anys));
	char **removed = xcalloc(cap, sizeof(*removed));
	size_t nres = 0, nrem = 0;
	for (size_t i = 0; i < w->n; i++) {
		const struct sent *have = sent_find(ts, w->v[i].name);
		if (have && !strcmp(have->version, w->v[i].version))
			continue;
		envoy__service__discovery__v3__resource__init(&res[nres]);
		google__protobuf__any__init(&anys[nres]);
		anys[nres].type_url = (char *)cp_type_url[t];
		anys[nres].value.data = w->v[i].bytes;
		anys[nres].value.len = w->v[i].len;
		res[nres].name = w->v[i].name;
		res[nres].version = w->v[i].version;
		res[nres].resource = &anys[nres];
		rp[nres] = &res[nres];
		nres++;
	}
	for (size_t i = 0; i < ts->nsent; i++) {
		struct sent key = { .name = ts->sent[i].name };
		if (!w->n || !bsearch(&key, w->v, w->n, sizeof(key), cmp_sent))
			removed[nrem++] = xstrdup(ts->sent[i].name);
	}
	record_sent(s, t, w);
	r.system_version_info = ts->version;
	r.type_url = (char *)cp_type_url[t];
	r.nonce = ts->nonce;
	r.n_resources = nres;
	r.resources = rp;
	r.n_removed_resources = nrem;
	r.removed_resources = removed;
	send_msg(s, &r.base);
	for (size_t i = 0; i < nrem; i++)
		free(removed[i]);
	free(removed);
	free(anys);
	free(rp);
	free(res);
}

/* Push everything that changed, in order (see the top of the file). */
static void push(struct xstream *s)
{
	struct want w[CP_NTYPES];
	bool send[CP_NTYPES];
	if (!s->x->cfg)
		return;
	/* LDS/RDS first (to know whether CDS/EDS removals must wait). */
	bool later_pending = false;
	for (int t = CP_LDS; t <= CP_RDS; t++) {
		compute_want(s, t, false, &w[t]);
		send[t] = s->t[t].requested && (s->t[t].must_respond || want_differs(&s->t[t], &w[t]));
		later_pending |= send[t] || s->t[t].pending;
	}
	for (int t = CP_CDS; t <= CP_SDS; t++) {
		compute_want(s, t, t != CP_SDS && later_pending, &w[t]);
		send[t] = s->t[t].requested && (s->t[t].must_respond || want_differs(&s->t[t], &w[t]));
	}
	for (int t = 0; t < CP_NTYPES; t++) {
		if (send[t]) {
			if (s->delta)
				send_delta(s, t, &w[t]);
			else
				send_sotw(s, t, &w[t]);
		}
		free(w[t].v);
	}
}

/* ---- requests -------------------------------------------------------------- */

static void ack_or_nack(struct xstream *s, enum cp_type t, const char *nonce,
			const Google__Rpc__Status *error)
{
	struct tstate *ts = &s->t[t];
	if (!nonce || !*nonce || strcmp(nonce, ts->nonce) || !ts->pending)
		return;   /* no nonce (first request) or a stale one */
	ts->pending = false;
	if (error && (error->code || (error->message && *error->message))) {
		snprintf(ts->nack, sizeof(ts->nack), "%s", error->message ? error->message : "");
		ts->nacks++;
		s->x->nacks[t]++;
		log_warn("remora-cp: %s NACK from %s (%s): %s", cp_type_short[t], s->node_id, s->peer,
			 ts->nack);
		return;
	}
	ts->nack[0] = 0;
	memcpy(ts->acked, ts->version, 17);
	s->x->acks[t]++;
	double sec = (double)(cp_now_ns() - ts->sent_ns) / 1e9;
	s->x->lat_count++;
	s->x->lat_sum += sec;
	for (int i = 0; i < LAT_BUCKETS; i++)
		if (sec <= lat_bounds[i])
			s->x->lat_buckets[i]++;
}

static void take_node(struct xstream *s, const Envoy__Config__Core__V3__Node *node)
{
	if (s->node_id || !node)
		return;
	s->node_id = xstrdup(node->id ? node->id : "");
	s->node_cluster = xstrdup(node->cluster ? node->cluster : "");
	log_info("remora-cp: node id=%s cluster=%s connected from %s (%s)", s->node_id,
		 s->node_cluster, s->peer, s->delta ? "delta" : "sotw");
}

static void on_sotw(struct xstream *s, const uint8_t *msg, size_t len)
{
	Envoy__Service__Discovery__V3__DiscoveryRequest *r =
		envoy__service__discovery__v3__discovery_request__unpack(NULL, len, msg);
	if (!r) {
		cp_stream_finish(s->st, 3, "malformed DiscoveryRequest");
		return;
	}
	take_node(s, r->node);
	int t = cp_type_by_url(r->type_url ? r->type_url : "");
	if (t < 0) {
		log_warn("remora-cp: request for unserved type '%s' ignored", r->type_url);
		envoy__service__discovery__v3__discovery_request__free_unpacked(r, NULL);
		return;
	}
	struct tstate *ts = &s->t[t];
	ack_or_nack(s, t, r->response_nonce, r->error_detail);
	if (!r->response_nonce || !*r->response_nonce)
		ts->must_respond = true;   /* a new subscription (or a reconnect) */
	ts->requested = true;
	bool wildcard = (t == CP_CDS || t == CP_LDS) && !r->n_resource_names;
	for (size_t i = 0; i < r->n_resource_names; i++)
		if (!strcmp(r->resource_names[i], "*"))
			wildcard = true;
	char **old = ts->names;
	size_t nold = ts->nnames;
	ts->names = NULL;
	ts->nnames = 0;
	set_names(ts, r->resource_names, r->n_resource_names);
	bool names_changed = wildcard != ts->wildcard || nold != ts->nnames;
	for (size_t i = 0; i < nold; i++) {
		names_changed = names_changed || strcmp(old[i], ts->names[i]);
		free(old[i]);
	}
	free(old);
	ts->wildcard = wildcard;
	if (names_changed && r->response_nonce && *r->response_nonce)
		ts->must_respond = true;
	envoy__service__discovery__v3__discovery_request__free_unpacked(r, NULL);
	push(s);
}

static void on_delta(struct xstream *s, const uint8_t *msg, size_t len)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r =
		envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, len, msg);
	if (!r) {
		cp_stream_finish(s->st, 3, "malformed DeltaDiscoveryRequest");
		return;
	}
	take_node(s, r->node);
	int t = cp_type_by_url(r->type_url ? r->type_url : "");
	if (t < 0) {
		envoy__service__discovery__v3__delta_discovery_request__free_unpacked(r, NULL);
		return;
	}
	struct tstate *ts = &s->t[t];
	ack_or_nack(s, t, r->response_nonce, r->error_detail);
	if (!ts->requested) {
		ts->requested = true;
		ts->must_respond = true;
		ts->wildcard = (t == CP_CDS || t == CP_LDS) && !r->n_resource_names_subscribe;
		/* what the client already has (after a reconnect) */
		for (size_t i = 0; i < r->n_initial_resource_versions; i++) {
			ts->sent = xrealloc(ts->sent, (ts->nsent + 1) * sizeof(*ts->sent));
			struct sent *e = &ts->sent[ts->nsent++];
			memset(e, 0, sizeof(*e));
			e->name = xstrdup(r->initial_resource_versions[i]->key);
			snprintf(e->version, sizeof(e->version), "%s",
				 r->initial_resource_versions[i]->value);
			e->bytes = xmalloc(1);
		}
		if (ts->nsent)
			qsort(ts->sent, ts->nsent, sizeof(*ts->sent), cmp_sent);
		for (size_t i = 1; i < ts->nsent; i++)   /* duplicates: keep one */
			if (!strcmp(ts->sent[i - 1].name, ts->sent[i].name)) {
				free(ts->sent[i].name);
				free(ts->sent[i].bytes);
				memmove(&ts->sent[i], &ts->sent[i + 1], (ts->nsent - i - 1) * sizeof(*ts->sent));
				ts->nsent--;
				i--;
			}
	}
	bool added = false;
	for (size_t i = 0; i < r->n_resource_names_subscribe; i++) {
		const char *n = r->resource_names_subscribe[i];
		if (!strcmp(n, "*")) {
			ts->wildcard = true;
		} else if (!name_find(ts, n)) {
			ts->names = xrealloc(ts->names, (ts->nnames + 1) * sizeof(char *));
			ts->names[ts->nnames++] = xstrdup(n);
			added = true;
		}
	}
	if (added)
		qsort(ts->names, ts->nnames, sizeof(char *), cmp_pstr);
	for (size_t i = 0; i < r->n_resource_names_unsubscribe; i++) {
		const char *n = r->resource_names_unsubscribe[i];
		if (!strcmp(n, "*"))
			ts->wildcard = false;
		char **np = name_find(ts, n);
		if (np) {
			size_t k = (size_t)(np - ts->names);
			free(*np);
			memmove(np, np + 1, (ts->nnames - k - 1) * sizeof(char *));
			ts->nnames--;
		}
		/* the client drops it: no removal to send */
		struct sent *sp = sent_find(ts, n);
		if (sp) {
			size_t k = (size_t)(sp - ts->sent);
			free(sp->name);
			free(sp->bytes);
			memmove(sp, sp + 1, (ts->nsent - k - 1) * sizeof(*sp));
			ts->nsent--;
		}
	}
	envoy__service__discovery__v3__delta_discovery_request__free_unpacked(r, NULL);
	push(s);
}

/* ---- stream glue --------------------------------------------------------------- */

static void *open_stream(void *arg, struct cp_stream *st, const struct cp_call *call, bool delta)
{
	struct cp_xds *x = arg;
	struct xstream *s = xcalloc(1, sizeof(*s));
	s->x = x;
	s->st = st;
	s->delta = delta;
	snprintf(s->peer, sizeof(s->peer), "%s", call->peer);
	s->next = x->streams;
	if (x->streams)
		x->streams->prev = s;
	x->streams = s;
	x->nstreams++;
	return s;
}

static void *open_sotw(void *arg, struct cp_stream *st, const struct cp_call *call)
{
	return open_stream(arg, st, call, false);
}

static void *open_delta(void *arg, struct cp_stream *st, const struct cp_call *call)
{
	return open_stream(arg, st, call, true);
}

static void on_message(void *state, const uint8_t *msg, size_t len)
{
	struct xstream *s = state;
	if (s->delta)
		on_delta(s, msg, len);
	else
		on_sotw(s, msg, len);
}

static void on_close(void *state)
{
	struct xstream *s = state;
	struct cp_xds *x = s->x;
	if (s->prev)
		s->prev->next = s->next;
	else
		x->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	x->nstreams--;
	for (int t = 0; t < CP_NTYPES; t++) {
		set_names(&s->t[t], NULL, 0);
		sent_clear(&s->t[t]);
	}
	if (s->node_id)
		log_info("remora-cp: node %s (%s) disconnected", s->node_id, s->peer);
	free(s->node_id);
	free(s->node_cluster);
	free(s);
}

static const struct cp_stream_ops sotw_ops = { open_sotw, on_message, on_close };
static const struct cp_stream_ops delta_ops = { open_delta, on_message, on_close };

struct cp_xds *cp_xds_new(struct cp_server **servers, size_t nservers)
{
	struct cp_xds *x = xcalloc(1, sizeof(*x));
	for (size_t i = 0; i < nservers; i++) {
		cp_server_register_stream(servers[i], ADS_SOTW, &sotw_ops, x);
		cp_server_register_stream(servers[i], ADS_DELTA, &delta_ops, x);
	}
	return x;
}

void cp_xds_set_config(struct cp_xds *x, const struct cp_config *c)
{
	x->cfg = c;
	x->reloads++;
	x->last_error[0] = 0;
	for (struct xstream *s = x->streams, *next; s; s = next) {
		next = s->next;   /* a push may end a stream (send error) */
		push(s);
	}
}

void cp_xds_set_error(struct cp_xds *x, const char *err)
{
	snprintf(x->last_error, sizeof(x->last_error), "%s", err);
	x->reload_failures++;
}

void cp_xds_free(struct cp_xds *x)
{
	free(x);
}

/* ---- admin ------------------------------------------------------------------- */

char *cp_xds_debug_json(struct cp_xds *x)
{
	json_t *root = json_object(), *nodes = json_array();
	json_object_set_new(root, "generation", json_integer(x->cfg ? x->cfg->generation : 0));
	json_object_set_new(root, "last_error", json_string(x->last_error));
	for (struct xstream *s = x->streams; s; s = s->next) {
		json_t *n = json_object(), *types = json_object();
		json_object_set_new(n, "node_id", json_string(s->node_id ? s->node_id : ""));
		json_object_set_new(n, "node_cluster", json_string(s->node_cluster ? s->node_cluster : ""));
		json_object_set_new(n, "peer", json_string(s->peer));
		json_object_set_new(n, "mode", json_string(s->delta ? "delta" : "sotw"));
		for (int t = 0; t < CP_NTYPES; t++) {
			const struct tstate *ts = &s->t[t];
			if (!ts->requested)
				continue;
			json_t *o = json_object(), *names = json_array();
			for (size_t i = 0; i < ts->nsent; i++)
				json_array_append_new(names, json_string(ts->sent[i].name));
			json_object_set_new(o, "version", json_string(ts->version));
			json_object_set_new(o, "resources", names);
			json_object_set_new(o, "acked_version", json_string(ts->acked));
			json_object_set_new(o, "pending", json_boolean(ts->pending));
			json_object_set_new(o, "last_nack", json_string(ts->nack));
			json_object_set_new(o, "pushes", json_integer((json_int_t)ts->pushes));
			json_object_set_new(o, "nacks", json_integer((json_int_t)ts->nacks));
			json_object_set_new(types, cp_type_key[t], o);
		}
		json_object_set_new(n, "types", types);
		json_array_append_new(nodes, n);
	}
	json_object_set_new(root, "proxies", nodes);
	char *out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	return out;
}

char *cp_xds_metrics(struct cp_xds *x)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	fprintf(f, "# HELP remora_cp_xds_pushes_total xDS responses sent, by type.\n"
		   "# TYPE remora_cp_xds_pushes_total counter\n");
	for (int t = 0; t < CP_NTYPES; t++)
		fprintf(f, "remora_cp_xds_pushes_total{type=\"%s\"} %lu\n", cp_type_short[t], x->pushes[t]);
	fprintf(f, "# HELP remora_cp_xds_acks_total xDS responses acknowledged, by type.\n"
		   "# TYPE remora_cp_xds_acks_total counter\n");
	for (int t = 0; t < CP_NTYPES; t++)
		fprintf(f, "remora_cp_xds_acks_total{type=\"%s\"} %lu\n", cp_type_short[t], x->acks[t]);
	fprintf(f, "# HELP remora_cp_xds_nacks_total xDS responses rejected (NACK), by type.\n"
		   "# TYPE remora_cp_xds_nacks_total counter\n");
	for (int t = 0; t < CP_NTYPES; t++)
		fprintf(f, "remora_cp_xds_nacks_total{type=\"%s\"} %lu\n", cp_type_short[t], x->nacks[t]);
	fprintf(f, "# HELP remora_cp_rest_requests_total REST discovery requests, by type.\n"
		   "# TYPE remora_cp_rest_requests_total counter\n");
	for (int t = 0; t < CP_NTYPES; t++)
		fprintf(f, "remora_cp_rest_requests_total{type=\"%s\"} %lu\n", cp_type_short[t],
			x->rest_requests[t]);
	fprintf(f, "# HELP remora_cp_connected_proxies ADS streams open.\n"
		   "# TYPE remora_cp_connected_proxies gauge\nremora_cp_connected_proxies %u\n",
		x->nstreams);
	fprintf(f, "# HELP remora_cp_config_reloads_total Successful loads of the config directory.\n"
		   "# TYPE remora_cp_config_reloads_total counter\nremora_cp_config_reloads_total %lu\n",
		x->reloads);
	fprintf(f, "# HELP remora_cp_config_reload_failures_total Loads that failed (the last good "
		   "config stays).\n# TYPE remora_cp_config_reload_failures_total counter\n"
		   "remora_cp_config_reload_failures_total %lu\n", x->reload_failures);
	fprintf(f, "# HELP remora_cp_config_generation Generation of the config being served.\n"
		   "# TYPE remora_cp_config_generation gauge\nremora_cp_config_generation %u\n",
		x->cfg ? x->cfg->generation : 0);
	fprintf(f, "# HELP remora_cp_push_ack_seconds Time from a response to its ACK.\n"
		   "# TYPE remora_cp_push_ack_seconds histogram\n");
	for (int i = 0; i < LAT_BUCKETS; i++)
		fprintf(f, "remora_cp_push_ack_seconds_bucket{le=\"%g\"} %lu\n", lat_bounds[i],
			x->lat_buckets[i]);
	fprintf(f, "remora_cp_push_ack_seconds_bucket{le=\"+Inf\"} %lu\n"
		   "remora_cp_push_ack_seconds_sum %.6f\nremora_cp_push_ack_seconds_count %lu\n",
		x->lat_count, x->lat_sum, x->lat_count);
	fclose(f);
	return buf;
}

int cp_xds_rest(struct cp_xds *x, const char *key, const char *body, size_t len, char **out)
{
	int t;
	for (t = 0; t < CP_NTYPES && strcmp(key, cp_type_key[t]); t++)
		;
	if (t == CP_NTYPES) {
		*out = xstrdup("unknown discovery type\n");
		return 404;
	}
	json_error_t je;
	json_t *req = json_loadb(body, len, 0, &je);
	if (!json_is_object(req)) {
		json_decref(req);
		*out = xstrdup("the body must be a DiscoveryRequest JSON object\n");
		return 400;
	}
	x->rest_requests[t]++;
	json_t *node = json_object_get(req, "node");
	const char *id = json_string_value(json_object_get(node, "id"));
	const char *cluster = json_string_value(json_object_get(node, "cluster"));
	const char *have = json_string_value(json_object_get(req, "version_info"));
	if (!have)
		have = json_string_value(json_object_get(req, "versionInfo"));
	json_t *names = json_object_get(req, "resource_names");
	if (!names)
		names = json_object_get(req, "resourceNames");
	const char *tu = json_string_value(json_object_get(req, "type_url"));
	if (tu && *tu && strcmp(tu, cp_type_url[t])) {
		json_decref(req);
		*out = xstrdup("type_url does not match the path\n");
		return 400;
	}
	const struct cp_resource **res = NULL;
	char ver[17];
	size_t n = x->cfg ? cp_config_view(x->cfg, id, cluster, t, &res, ver) : 0;
	json_t *arr = json_array();
	unsigned long long h = 0;
	for (size_t i = 0; i < n; i++) {
		bool want = !json_array_size(names);
		for (size_t k = 0; k < json_array_size(names) && !want; k++)
			want = !strcmp(json_string_value(json_array_get(names, k)) ?: "", res[i]->name) ||
			       !strcmp(json_string_value(json_array_get(names, k)) ?: "", "*");
		if (!want)
			continue;
		json_array_append(arr, res[i]->json);
		h = h * 31 + strtoull(res[i]->version, NULL, 16) + 7;
	}
	free(res);
	snprintf(ver, sizeof(ver), "%016llx", h);
	int status = 200;
	if (have && !strcmp(have, ver)) {
		*out = xstrdup("");
		status = 304;
	} else {
		json_t *resp = json_pack("{s:s, s:o, s:s}", "version_info", ver, "resources", arr,
					 "type_url", cp_type_url[t]);
		arr = NULL;
		*out = json_dumps(resp, JSON_COMPACT);
		json_decref(resp);
	}
	json_decref(arr);
	json_decref(req);
	return status;
}
