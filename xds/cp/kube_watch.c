/* kube_watch.c - Services + EndpointSlices from the Kubernetes API into
 * catalog services (see kube_watch.h). */
#include "kube_watch.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include "kube_api.h"
#include "../../proxy/common.h"
#include "../../proxy/log.h"

#define KW_LIST_MAX (64u << 20)     /* one LIST page's body */
#define KW_EVENT_MAX (16u << 20)    /* one watch event */
#define KW_PAGE 500                 /* ?limit= */
#define KW_BACKOFF_MIN_MS 500
#define KW_BACKOFF_MAX_MS 30000

enum kw_kind { KW_SVC, KW_SLICE, KW_NKINDS };
static const char *const kind_name[KW_NKINDS] = { "services", "endpointslices" };
static const char *const kind_prefix[KW_NKINDS] = { "/api/v1", "/apis/discovery.k8s.io/v1" };

#define KW_EVENT_TYPES(X) X(added, "ADDED") X(modified, "MODIFIED") X(deleted, "DELETED") \
	X(bookmark, "BOOKMARK") X(error, "ERROR")
#define KW_EV_ENUM(n, s) KW_EV_##n,
enum kw_ev { KW_EVENT_TYPES(KW_EV_ENUM) KW_EV_N };

struct kw_stats {
	uint64_t events[KW_NKINDS][KW_EV_N];
	uint64_t lists[KW_NKINDS];      /* LISTs completed (all pages) */
	uint64_t relists[KW_NKINDS];    /* of which after the first */
	uint64_t errors[KW_NKINDS];     /* failed LIST/WATCH requests, bad events */
	uint64_t watches[KW_NKINDS];    /* WATCH requests started */
};

/* One kind in one namespace (or all): a LIST then a WATCH. */
struct kw_res {
	struct kube_watch *w;
	enum kw_kind kind;
	char *ns;                  /* owned; NULL: every namespace */
	json_t *objs;              /* owned: {"ns/name": trimmed object} in force */
	json_t *pending;           /* owned: the pages of a LIST being read, else NULL */
	char *rv;                  /* owned: resourceVersion to watch from, NULL before a LIST */
	bool synced;               /* a LIST has completed */
	bool need_list;            /* the next step is a LIST (else a WATCH from rv) */
	unsigned failures;         /* in a row: the backoff */
	struct kube_call *call;    /* the request running, or NULL */
	struct evbuffer *line;     /* owned: the start of a watch event */
	struct event *timer;       /* owned: the next step after a backoff */
};

struct kube_watch {
	struct kube_api *api;          /* not owned */
	char *domain;                  /* owned */
	unsigned watch_timeout_s;
	struct kw_res *res;            /* owned [nres] */
	size_t nres;
	json_t *services;              /* owned: the catalog entries in force (array) */
	size_t nendpoints;
	bool synced;
	struct event *recompute;       /* owned: rebuild services once per loop turn */
	kube_watch_change_cb cb;
	void *arg;
	struct kw_stats st;
};

static void kw_step(struct kw_res *r);

/* ---- mapping ---------------------------------------------------------------------- */

const char *kube_port_protocol(const char *name, const char *app)
{
	static const struct { const char *p, *proto; } map[] = {
		{ "http", "http" }, { "http2", "http2" }, { "grpc", "http2" }, { "h2c", "http2" },
		{ "grpc-web", "http" }, { "kubernetes.io/h2c", "http2" }, { "kubernetes.io/ws", "http" },
		{ "kubernetes.io/wss", "tcp" }, { "tcp", "tcp" }, { "tls", "tcp" }, { "https", "tcp" },
		{ "mongo", "tcp" }, { "mysql", "tcp" }, { "redis", "tcp" },
	};
	char pfx[64];
	const char *v = app && *app ? app : name;
	if (!v || !*v)
		return NULL;
	if (v == name) {   /* Istio: <protocol>[-<suffix>] */
		size_t n = strcspn(v, "-");
		snprintf(pfx, sizeof(pfx), "%.*s", (int)(n < sizeof(pfx) ? n : sizeof(pfx) - 1), v);
		v = pfx;
	}
	for (size_t i = 0; i < ARRAY_SIZE(map); i++)
		if (!strcasecmp(map[i].p, v))
			return map[i].proto;
	return NULL;
}

static const char *kw_str(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static int kw_cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* The ready addresses of slices for the Service port named pname, as
 * sorted unique "ip:port" strings (new array). */
static json_t *kw_endpoints_of(const json_t *slices, const char *pname)
{
	json_t *set = json_object(), *slice;
	size_t i;
	json_array_foreach(slices, i, slice) {
		const char *at = kw_str(slice, "addressType");
		int af = at && !strcmp(at, "IPv4") ? AF_INET : at && !strcmp(at, "IPv6") ? AF_INET6 : 0;
		if (!af)   /* FQDN slices are not followed */
			continue;
		json_t *sp, *ep;
		size_t k;
		json_int_t port = 0;
		json_array_foreach(json_object_get(slice, "ports"), k, sp) {
			const char *n = kw_str(sp, "name");
			if (!strcmp(n ? n : "", pname) && json_is_integer(json_object_get(sp, "port")))
				port = json_integer_value(json_object_get(sp, "port"));
		}
		if (port <= 0 || port > 65535)
			continue;
		json_array_foreach(json_object_get(slice, "endpoints"), k, ep) {
			json_t *cond = json_object_get(ep, "conditions"), *a;
			/* ready unset means unknown, which consumers treat as ready */
			if (json_is_false(json_object_get(cond, "ready")) ||
			    json_is_true(json_object_get(cond, "terminating")))
				continue;
			size_t m;
			json_array_foreach(json_object_get(ep, "addresses"), m, a) {
				unsigned char bin[16];
				const char *ip = json_string_value(a);
				if (!ip || inet_pton(af, ip, bin) != 1)
					continue;
				char hp[80];
				snprintf(hp, sizeof(hp), af == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, (int)port);
				json_object_set_new(set, hp, json_true());
			}
		}
	}
	size_t n = json_object_size(set), at = 0;
	json_t **v = xmalloc((n ? n : 1) * sizeof(*v));
	const char *key;
	json_t *val;
	json_object_foreach(set, key, val)
		v[at++] = json_string(key);
	if (n)
		qsort(v, n, sizeof(*v), kw_cmp_json_str);
	json_t *out = json_array();
	for (size_t k = 0; k < n; k++)
		json_array_append_new(out, v[k]);
	free(v);
	json_decref(set);
	return out;
}

void kube_watch_map_service(const json_t *svc, const json_t *slices, const char *domain,
			    json_t *out)
{
	json_t *md = json_object_get(svc, "metadata"), *spec = json_object_get(svc, "spec"), *p;
	const char *name = kw_str(md, "name"), *ns = kw_str(md, "namespace"), *type = kw_str(spec, "type");
	size_t i;
	if (!name || !ns || (type && !strcmp(type, "ExternalName")))
		return;
	json_array_foreach(json_object_get(spec, "ports"), i, p) {
		const char *proto = kw_str(p, "protocol"), *pname = kw_str(p, "name");
		json_t *port = json_object_get(p, "port");
		if ((proto && strcmp(proto, "TCP")) || !json_is_integer(port))
			continue;
		char cname[600];
		if (i == 0)
			snprintf(cname, sizeof(cname), "%s.%s.svc.%s", name, ns, domain);
		else
			snprintf(cname, sizeof(cname), "%s.%s.svc.%s:%lld", name, ns, domain,
				 (long long)json_integer_value(port));
		json_t *e = json_pack("{s:s, s:o}", "name", cname, "endpoints",
				      kw_endpoints_of(slices, pname ? pname : ""));
		const char *lp = kube_port_protocol(pname, kw_str(p, "appProtocol"));
		if (lp) {
			json_object_set_new(e, "protocol", json_string(!strcmp(lp, "tcp") ? "tcp" : "http"));
			if (!strcmp(lp, "http2"))
				json_object_set_new(e, "http2", json_true());
		}
		json_array_append_new(out, e);
	}
}

/* What is kept of an object (the fields the mapping reads). */
static json_t *kw_trim(enum kw_kind kind, const json_t *o)
{
	json_t *md = json_object_get(o, "metadata");
	json_t *t = json_pack("{s:{s:O?, s:O?}}", "metadata", "name", json_object_get(md, "name"),
			      "namespace", json_object_get(md, "namespace"));
	if (kind == KW_SVC) {
		json_t *spec = json_object_get(o, "spec");
		json_object_set_new(t, "spec", json_pack("{s:O?, s:O?}", "type",
							 json_object_get(spec, "type"), "ports",
							 json_object_get(spec, "ports")));
	} else {
		json_t *lbl = json_object_get(json_object_get(md, "labels"), "kubernetes.io/service-name");
		json_object_set_new(json_object_get(t, "metadata"), "service", json_incref(lbl) ?: json_null());
		json_object_set(t, "addressType", json_object_get(o, "addressType") ?: json_null());
		json_object_set(t, "ports", json_object_get(o, "ports") ?: json_null());
		json_object_set(t, "endpoints", json_object_get(o, "endpoints") ?: json_null());
	}
	return t;
}

static int kw_cmp_entry(const void *a, const void *b)
{
	return strcmp(kw_str(*(json_t *const *)a, "name"), kw_str(*(json_t *const *)b, "name"));
}

static void on_recompute(evutil_socket_t fd, short what, void *arg)
{
	struct kube_watch *w = arg;
	(void)fd;
	(void)what;
	/* the slices of each service: {"ns/service": [slices]} */
	json_t *idx = json_object(), *o, *out = json_array();
	const char *key;
	for (size_t i = 0; i < w->nres; i++) {
		if (w->res[i].kind != KW_SLICE)
			continue;
		json_object_foreach(w->res[i].objs, key, o) {
			json_t *md = json_object_get(o, "metadata");
			const char *svc = kw_str(md, "service"), *ns = kw_str(md, "namespace");
			if (!svc || !ns)
				continue;
			char k[600];
			snprintf(k, sizeof(k), "%s/%s", ns, svc);
			json_t *a = json_object_get(idx, k);
			if (!a)
				json_object_set_new(idx, k, a = json_array());
			json_array_append(a, o);
		}
	}
	json_t *none = json_array();
	for (size_t i = 0; i < w->nres; i++) {
		if (w->res[i].kind != KW_SVC)
			continue;
		json_object_foreach(w->res[i].objs, key, o) {
			json_t *sl = json_object_get(idx, key);   /* the same "ns/name" key */
			kube_watch_map_service(o, sl ? sl : none, w->domain, out);
		}
	}
	json_decref(none);
	json_decref(idx);
	size_t n = json_array_size(out);
	json_t **v = xmalloc((n ? n : 1) * sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(out, i));
	if (n)
		qsort(v, n, sizeof(*v), kw_cmp_entry);
	json_array_clear(out);
	size_t neps = 0;
	for (size_t i = 0; i < n; i++) {
		neps += json_array_size(json_object_get(v[i], "endpoints"));
		json_array_append_new(out, v[i]);
	}
	free(v);
	bool all = true;
	for (size_t i = 0; i < w->nres; i++)
		all &= w->res[i].synced;
	bool first = all && !w->synced;
	if (!first && json_equal(out, w->services)) {
		json_decref(out);
		return;
	}
	json_decref(w->services);
	w->services = out;
	w->nendpoints = neps;
	if (!all)
		return;   /* no partial state for the proxies: wait for every first LIST */
	if (first)
		log_info("kube-watch: initial sync: %zu services, %zu endpoints", n, neps);
	w->synced = true;
	w->cb(w->arg);
}

static void kw_dirty(struct kube_watch *w)
{
	event_active(w->recompute, EV_TIMEOUT, 1);
}

/* ---- requests ------------------------------------------------------------------------ */

static char *kw_base_path(const struct kw_res *r)
{
	if (r->ns)
		return xasprintf("%s/namespaces/%s/%s", kind_prefix[r->kind], r->ns, kind_name[r->kind]);
	return xasprintf("%s/%s", kind_prefix[r->kind], kind_name[r->kind]);
}

static const char *kw_where(const struct kw_res *r)
{
	return r->ns ? r->ns : "*";
}

/* Try again later: a jittered exponential backoff. */
static void kw_retry(struct kw_res *r)
{
	unsigned f = r->failures < 6 ? r->failures : 6;
	uint64_t ms = (uint64_t)KW_BACKOFF_MIN_MS << f;
	if (ms > KW_BACKOFF_MAX_MS)
		ms = KW_BACKOFF_MAX_MS;
	ms = ms / 2 + (uint64_t)random() % (ms / 2 + 1);
	r->failures++;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(r->timer, &tv);
}

static void kw_now(struct kw_res *r)
{
	struct timeval tv = { 0, 0 };
	evtimer_add(r->timer, &tv);
}

static void kw_fail(struct kw_res *r, bool relist, const char *fmt, ...) PRINTF(3, 4);
static void kw_fail(struct kw_res *r, bool relist, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r->w->st.errors[r->kind]++;
	r->need_list |= relist;
	log_warn("kube-watch: %s in %s: %s (%s after a backoff)", kind_name[r->kind], kw_where(r), msg,
		 r->need_list ? "relisting" : "watching again");
	kw_retry(r);
}

/* The message of a v1 Status, or "". */
static const char *kw_status_msg(const json_t *s)
{
	const char *m = kw_str(s, "message");
	return m ? m : "";
}

static void kw_list_page(struct kw_res *r, const char *cont);

static void on_list_end(void *arg, int code, struct evbuffer *body, const char *err)
{
	struct kw_res *r = arg;
	r->call = NULL;
	json_t *j = body ? json_loadb((const char *)evbuffer_pullup(body, -1),
				      evbuffer_get_length(body), 0, NULL) : NULL;
	if (code != 200) {
		json_decref(r->pending);
		r->pending = NULL;
		if (code)
			kw_fail(r, true, "LIST answered %d: %s", code, j ? kw_status_msg(j) : "");
		else
			kw_fail(r, true, "LIST: %s", err);
		json_decref(j);
		return;
	}
	json_t *items = json_object_get(j, "items"), *it;
	const char *kind = kw_str(j, "kind");
	if (!json_is_array(items) || !kind || strlen(kind) < 5 ||
	    strcmp(kind + strlen(kind) - 4, "List")) {
		json_decref(r->pending);
		r->pending = NULL;
		kw_fail(r, true, "LIST answered something else than a list");
		json_decref(j);
		return;
	}
	if (!r->pending)
		r->pending = json_object();
	size_t i;
	json_array_foreach(items, i, it) {
		json_t *md = json_object_get(it, "metadata");
		const char *n = kw_str(md, "name"), *ns = kw_str(md, "namespace");
		if (!n || !ns)
			continue;
		char k[600];
		snprintf(k, sizeof(k), "%s/%s", ns, n);
		json_object_set_new(r->pending, k, kw_trim(r->kind, it));
	}
	json_t *lmd = json_object_get(j, "metadata");
	const char *cont = kw_str(lmd, "continue"), *rv = kw_str(lmd, "resourceVersion");
	if (cont && *cont) {
		kw_list_page(r, cont);
		json_decref(j);
		return;
	}
	if (!rv || !*rv) {
		json_decref(r->pending);
		r->pending = NULL;
		kw_fail(r, true, "LIST without metadata.resourceVersion");
		json_decref(j);
		return;
	}
	/* complete: it replaces the state in force */
	json_decref(r->objs);
	r->objs = r->pending;
	r->pending = NULL;
	free(r->rv);
	r->rv = xstrdup(rv);
	r->w->st.lists[r->kind]++;
	if (r->synced) {
		r->w->st.relists[r->kind]++;
		log_info("kube-watch: relisted %s in %s: %zu objects at resourceVersion %s",
			 kind_name[r->kind], kw_where(r), json_object_size(r->objs), rv);
	}
	r->synced = true;
	r->need_list = false;
	r->failures = 0;
	json_decref(j);
	kw_dirty(r->w);
	kw_step(r);
}

static void kw_list_page(struct kw_res *r, const char *cont)
{
	char *base = kw_base_path(r), *path;
	if (cont) {
		char *enc = evhttp_encode_uri(cont);
		path = xasprintf("%s?limit=%d&continue=%s", base, KW_PAGE, enc);
		free(enc);
	} else {
		path = xasprintf("%s?limit=%d", base, KW_PAGE);
	}
	r->call = kube_get(r->w->api, path, 0, KW_LIST_MAX, NULL, on_list_end, r);
	free(path);
	free(base);
}

/* One watch event; false: stop this watch (relist). */
static bool kw_on_event(struct kw_res *r, const char *text, size_t len)
{
	struct kw_stats *st = &r->w->st;
	json_t *ev = json_loadb(text, len, 0, NULL);
	const char *type = kw_str(ev, "type");
	json_t *obj = json_object_get(ev, "object");
	static const char *const types[] = {
#define KW_EV_STR(n, s) s,
		KW_EVENT_TYPES(KW_EV_STR)
	};
	int t;
	for (t = 0; type && t < KW_EV_N && strcmp(types[t], type); t++)
		;
	if (!type || t == KW_EV_N || !json_is_object(obj)) {
		kw_fail(r, true, "a watch event that is not one: %.100s", text);
		json_decref(ev);
		return false;
	}
	st->events[r->kind][t]++;
	if (t == KW_EV_error) {
		json_t *code = json_object_get(obj, "code");
		bool gone = json_integer_value(code) == 410;
		if (gone) {   /* the resourceVersion is compacted away: relist at once */
			log_info("kube-watch: %s in %s: %s: relisting", kind_name[r->kind], kw_where(r),
				 kw_status_msg(obj));
			r->need_list = true;
			kw_now(r);
		} else {
			kw_fail(r, true, "watch ERROR event %lld: %s", (long long)json_integer_value(code),
			     kw_status_msg(obj));
		}
		json_decref(ev);
		return false;
	}
	json_t *md = json_object_get(obj, "metadata");
	const char *rv = kw_str(md, "resourceVersion");
	if (t != KW_EV_bookmark) {
		const char *n = kw_str(md, "name"), *ns = kw_str(md, "namespace");
		if (n && ns) {
			char k[600];
			snprintf(k, sizeof(k), "%s/%s", ns, n);
			if (t == KW_EV_deleted)
				json_object_del(r->objs, k);
			else
				json_object_set_new(r->objs, k, kw_trim(r->kind, obj));
			kw_dirty(r->w);
		}
	}
	if (rv && *rv) {
		free(r->rv);
		r->rv = xstrdup(rv);
	}
	json_decref(ev);
	return true;
}

static void on_watch_data(void *arg, struct evbuffer *data)
{
	struct kw_res *r = arg;
	evbuffer_add_buffer(r->line, data);
	for (;;) {
		struct evbuffer_ptr eol = evbuffer_search(r->line, "\n", 1, NULL);
		if (eol.pos < 0)
			break;
		size_t n = (size_t)eol.pos;
		char *text = (char *)evbuffer_pullup(r->line, (ev_ssize_t)n + 1);
		bool go = n == 0 || kw_on_event(r, text, n);
		evbuffer_drain(r->line, n + 1);
		if (!go) {
			kube_call_cancel(r->call);
			r->call = NULL;
			evbuffer_drain(r->line, evbuffer_get_length(r->line));
			return;
		}
		r->failures = 0;   /* a working watch */
	}
	if (evbuffer_get_length(r->line) > KW_EVENT_MAX) {
		kube_call_cancel(r->call);
		r->call = NULL;
		evbuffer_drain(r->line, evbuffer_get_length(r->line));
		kw_fail(r, true, "a watch event larger than %u bytes", KW_EVENT_MAX);
	}
}

static void on_watch_end(void *arg, int code, struct evbuffer *body, const char *err)
{
	struct kw_res *r = arg;
	r->call = NULL;
	evbuffer_drain(r->line, evbuffer_get_length(r->line));
	if (code == 200) {   /* the server ended it (timeoutSeconds): resume */
		kw_now(r);
		return;
	}
	json_t *j = body && code ? json_loadb((const char *)evbuffer_pullup(body, -1),
					      evbuffer_get_length(body), 0, NULL) : NULL;
	if (code == 410) {
		log_info("kube-watch: %s in %s: 410 Gone %s: relisting", kind_name[r->kind], kw_where(r),
			 j ? kw_status_msg(j) : "");
		r->need_list = true;
		kw_now(r);
	} else if (code) {
		kw_fail(r, false, "WATCH answered %d: %s", code, j ? kw_status_msg(j) : "");
	} else {
		kw_fail(r, false, "WATCH: %s", err);
	}
	json_decref(j);
}

static void kw_watch(struct kw_res *r)
{
	struct kube_watch *w = r->w;
	unsigned to = w->watch_timeout_s ? w->watch_timeout_s : 300 + (unsigned)(random() % 300);
	char *base = kw_base_path(r), *enc = evhttp_encode_uri(r->rv);
	char *path = xasprintf("%s?watch=1&resourceVersion=%s&allowWatchBookmarks=true&"
			       "timeoutSeconds=%u", base, enc, to);
	/* the server sends bookmarks about every minute; silence beyond the
	 * watch's own end means the connection is dead */
	r->call = kube_get(w->api, path, (uint64_t)(to + 60) * 1000, 0, on_watch_data, on_watch_end, r);
	w->st.watches[r->kind]++;
	free(enc);
	free(path);
	free(base);
}

static void kw_step(struct kw_res *r)
{
	if (r->call)
		return;
	if (r->need_list || !r->rv)
		kw_list_page(r, NULL);
	else
		kw_watch(r);
}

static void kw_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	kw_step(arg);
}

/* ---- life cycle -------------------------------------------------------------------- */

static bool kw_dns1123_label(const char *s, size_t n)
{
	if (!n || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return false;
	return true;
}

static void kw_add_res(struct kube_watch *w, enum kw_kind kind, const char *ns, size_t nslen)
{
	w->res = xrealloc(w->res, (w->nres + 1) * sizeof(*w->res));
	struct kw_res *r = &w->res[w->nres++];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->ns = ns ? xstrndup(ns, nslen) : NULL;
	r->objs = json_object();
	r->need_list = true;
}

struct kube_watch *kube_watch_new(struct kube_api *api, const struct kube_watch_options *o,
				  kube_watch_change_cb cb, void *arg, char *err, size_t errlen)
{
	struct kube_watch *w = xcalloc(1, sizeof(*w));
	w->api = api;
	w->cb = cb;
	w->arg = arg;
	w->domain = xstrdup(o->domain ? o->domain : "cluster.local");
	w->watch_timeout_s = o->watch_timeout_s;
	w->services = json_array();
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());   /* the backoff's jitter */
	for (int kind = 0; kind < KW_NKINDS; kind++) {
		if (!o->namespaces) {
			kw_add_res(w, (enum kw_kind)kind, NULL, 0);
			continue;
		}
		for (const char *p = o->namespaces; *p;) {
			size_t n = strcspn(p, ",");
			if (!kw_dns1123_label(p, n)) {
				snprintf(err, errlen, "--kube-namespaces: '%.*s' is not a namespace name",
					 (int)n, p);
				kube_watch_free(w);
				return NULL;
			}
			kw_add_res(w, (enum kw_kind)kind, p, n);
			p += n + (p[n] == ',');
		}
	}
	struct event_base *base = kube_api_base(api);
	w->recompute = event_new(base, -1, 0, on_recompute, w);
	for (size_t i = 0; i < w->nres; i++) {   /* w->res is final: pointers are stable */
		struct kw_res *r = &w->res[i];
		r->w = w;
		r->line = evbuffer_new();
		r->timer = evtimer_new(base, kw_on_timer, r);
		kw_now(r);
	}
	return w;
}

void kube_watch_free(struct kube_watch *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->nres; i++) {
		struct kw_res *r = &w->res[i];
		kube_call_cancel(r->call);
		json_decref(r->objs);
		json_decref(r->pending);
		free(r->rv);
		free(r->ns);
		if (r->line)
			evbuffer_free(r->line);
		if (r->timer)
			event_free(r->timer);
	}
	free(w->res);
	if (w->recompute)
		event_free(w->recompute);
	json_decref(w->services);
	free(w->domain);
	free(w);
}

bool kube_watch_synced(const struct kube_watch *w)
{
	return w->synced;
}

const json_t *kube_watch_services(const struct kube_watch *w)
{
	return w->services;
}

char *kube_watch_metrics_text(const struct kube_watch *w)
{
	static const char *const tnames[] = {
#define KW_EV_NAME(n, s) #n,
		KW_EVENT_TYPES(KW_EV_NAME)
	};
	const struct kw_stats *st = &w->st;
	char *out = xasprintf("# TYPE remora_cp_kube_discovered_services gauge\n"
			      "remora_cp_kube_discovered_services %zu\n"
			      "# TYPE remora_cp_kube_discovered_endpoints gauge\n"
			      "remora_cp_kube_discovered_endpoints %zu\n"
			      "# TYPE remora_cp_kube_synced gauge\n"
			      "remora_cp_kube_synced %d\n",
			      json_array_size(w->services), w->nendpoints, w->synced ? 1 : 0);
	static const char *const heads[] = {
		"# TYPE remora_cp_kube_watch_events_total counter\n",
		"# TYPE remora_cp_kube_lists_total counter\n",
		"# TYPE remora_cp_kube_relists_total counter\n",
		"# TYPE remora_cp_kube_watches_total counter\n",
		"# TYPE remora_cp_kube_errors_total counter\n",
	};
	for (size_t h = 0; h < ARRAY_SIZE(heads); h++) {
		char *more = xasprintf("%s%s", out, heads[h]);
		free(out);
		out = more;
		for (int k = 0; k < KW_NKINDS; k++) {
			for (int t = 0; t < (h == 0 ? KW_EV_N : 1); t++) {
				char *line;
				if (h == 0)
					line = xasprintf("remora_cp_kube_watch_events_total{kind=\"%s\","
							 "type=\"%s\"} %llu\n", kind_name[k], tnames[t],
							 (unsigned long long)st->events[k][t]);
				else
					line = xasprintf("%.*s{kind=\"%s\"} %llu\n",
							 (int)strcspn(heads[h] + 7, " "), heads[h] + 7,
							 kind_name[k], (unsigned long long)(
							 h == 1 ? st->lists[k] : h == 2 ? st->relists[k] :
							 h == 3 ? st->watches[k] : st->errors[k]));
				more = xasprintf("%s%s", out, line);
				free(line);
				free(out);
				out = more;
			}
		}
	}
	return out;
}
