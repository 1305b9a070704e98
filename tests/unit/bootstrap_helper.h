/* bootstrap_helper.h - unit-test helpers around the config compiler:
 *  - test_bootstrap*: compile an Envoy bootstrap given as YAML text (named
 *    "t.yaml" in errors) through the real compiler;
 *  - test_bootstrap_hcm: the same for a bootstrap of one HTTP connection
 *    manager listener with extra HCM fields;
 *  - test_yaml_enter / test_yaml_leave: run one section parser (overload_manager,
 *    dynamic_resources, ...) over a member of a YAML document;
 *  - test_json / test_cfg_json: JSON test text, and a walker for parsers
 *    called on a JSON object directly;
 *  - test_cluster_parse / test_cluster_start: a cluster from its JSON text on a
 *    shared stats store, started on worker 0. */
#ifndef REMORA_TEST_BOOTSTRAP_HELPER_H
#define REMORA_TEST_BOOTSTRAP_HELPER_H

#include <jansson.h>
#include "proxy/server.h"
#include "proxy/config/yaml_json.h"
#include "proxy/upstream/cluster.h"

static struct server test_srv __attribute__((unused));

/* A YAML document loaded for a section parser: the walker c is ready. */
struct test_yaml {
	struct cfg_src *src;
	json_t *root;
	struct cfg_ctx c;
	bool entered;
};

/* Load yaml; *node = its top-level member key (entered in t->c, NULL when
 * absent: the parser decides), or the whole document when key is NULL.  0, or -1 with the loader's message in err
 * (nothing to release then). */
static inline int test_yaml_enter(struct test_yaml *t, const char *yaml, const char *key,
				  const json_t **node, char *err, size_t errlen)
{
	char lerr[512];
	t->src = NULL;
	t->root = yaml_load_buffer("t.yaml", yaml, strlen(yaml), &t->src, lerr, sizeof(lerr));
	if (!t->root) {
		snprintf(err, errlen, "%.*s", (int)(errlen ? errlen - 1 : 0), lerr);
		return -1;
	}
	cfg_init(&t->c, t->src, "t.yaml");
	t->entered = key != NULL;
	*node = key ? cfg_enter(&t->c, t->root, key) : t->root;
	return 0;
}

/* After the parser: its message (or "") in err, the document released;
 * returns rc (the parser's result). */
static inline int test_yaml_leave(struct test_yaml *t, int rc, char *err, size_t errlen)
{
	if (t->entered)
		cfg_leave(&t->c);
	snprintf(err, errlen, "%.*s", (int)(errlen ? errlen - 1 : 0), t->c.err);
	json_decref(t->root);
	cfg_src_free(t->src);
	return rc;
}

/* JSON test text (new reference), or NULL after printing why to stderr. */
static inline json_t *test_json(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	if (!j)
		fprintf(stderr, "bad test json: %s: %s\n", je.text, text);
	return j;
}

static struct stats_store *test_cluster_store __attribute__((unused));

/* cluster_parse of the JSON text on a shared store (one worker); NULL with
 * the compiler's message in err (err may be NULL). */
static inline struct cluster *test_cluster_parse(const char *text, char *err, size_t errlen)
{
	json_t *j = test_json(text);
	if (!j) {
		if (err)
			snprintf(err, errlen, "bad test json");
		return NULL;
	}
	if (!test_cluster_store)
		test_cluster_store = stats_store_new(2);
	struct build_ctx b = { .stats = test_cluster_store, .nworkers = 1 };
	struct cfg_ctx c;
	cfg_init(&c, NULL, NULL);
	struct cluster *cl = cluster_parse(&c, j, &b);
	if (err)
		snprintf(err, errlen, "%.*s", (int)(errlen ? errlen - 1 : 0), c.err);
	json_decref(j);
	return cl;
}

static inline void test_cluster_publish(struct cluster *cl, struct hostset *hs)
{
	__atomic_add_fetch(&hs->refcnt, 1, __ATOMIC_RELAXED);
	cluster_worker_set_hostset(cl, 0, hs);
}

static inline void test_cluster_inited(struct cluster *cl, void *arg)
{
	(void)cl;
	(void)arg;
}

/* Start cl (on base, may be NULL) with its host sets published straight to
 * worker 0 (cl->workers[0].hs). */
static inline void test_cluster_start(struct cluster *cl, struct event_base *base)
{
	cluster_publish_hook = test_cluster_publish;
	cluster_start(cl, base, test_cluster_inited, NULL);
}

/* Release a snapshot from test_bootstrap() and the stats store behind it. */
static inline void test_bootstrap_done(struct snapshot *s)
{
	snapshot_unref(s);
	free(test_srv.node_id);
	free(test_srv.node_cluster);
	overload_cfg_free(&test_srv.overload);
	json_decref(test_srv.runtime);
	stats_store_free(test_srv.stats);
	memset(&test_srv, 0, sizeof(test_srv));
}

/* The live snapshot (release with test_bootstrap_done) or NULL; err gets the
 * compiler's message ("" on success). */
static inline struct snapshot *test_bootstrap(const char *yaml, char *err, size_t errlen)
{
	struct test_yaml t;
	const json_t *unused;
	memset(&test_srv, 0, sizeof(test_srv));
	test_srv.nworkers = 2;
	test_srv.stats = stats_store_new(3);
	if (test_yaml_enter(&t, yaml, NULL, &unused, err, errlen)) {
		test_bootstrap_done(NULL);
		return NULL;
	}
	struct snapshot *s = config_build_bootstrap(&t.c, t.root, &test_srv);
	test_yaml_leave(&t, 0, err, errlen);
	if (!s)
		test_bootstrap_done(NULL);
	return s;
}

/* Compile and release at once: true if the config compiled. */
static inline bool test_bootstrap_ok(const char *yaml, char *err, size_t errlen)
{
	struct snapshot *s = test_bootstrap(yaml, err, errlen);
	if (s)
		test_bootstrap_done(s);
	return s != NULL;
}

/* A bootstrap of pre (top-level YAML text, may be "") and one listener whose
 * HTTP connection manager has the extra fields hcm (YAML lines at its
 * indentation, may be "") besides an empty route table and the router:
 * listeners[0]->chains[0].cfg is its struct hcm_cfg.  Release with
 * test_bootstrap_done. */
static inline struct snapshot *test_bootstrap_hcm(const char *pre, const char *hcm, char *err,
						  size_t errlen)
{
	char y[8192];
	snprintf(y, sizeof(y),
		 "%s"
		 "static_resources:\n"
		 "  listeners:\n"
		 "  - name: l\n"
		 "    address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n"
		 "    filter_chains:\n"
		 "    - filters:\n"
		 "      - name: envoy.filters.network.http_connection_manager\n"
		 "        typed_config:\n"
		 "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
		 "          stat_prefix: a\n"
		 "          %s\n"
		 "          route_config: {virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]}\n"
		 "          http_filters:\n"
		 "          - name: envoy.filters.http.router\n"
		 "            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n",
		 pre, hcm);
	return test_bootstrap(y, err, errlen);
}

#endif
