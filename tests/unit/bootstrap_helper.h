/* bootstrap_helper.h - unit-test helper: compile an Envoy bootstrap given as
 * YAML text (named "t.yaml" in errors) through the real compiler. */
#ifndef REMORA_TEST_BOOTSTRAP_HELPER_H
#define REMORA_TEST_BOOTSTRAP_HELPER_H

#include "proxy/server.h"
#include "proxy/config/yaml_json.h"

static struct server test_srv;

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
	struct cfg_src *src = NULL;
	struct cfg_ctx c;
	char lerr[512];
	memset(&test_srv, 0, sizeof(test_srv));
	test_srv.nworkers = 2;
	test_srv.stats = stats_store_new(3);
	json_t *root = yaml_load_buffer("t.yaml", yaml, strlen(yaml), &src, lerr, sizeof(lerr));
	if (!root) {
		snprintf(err, errlen, "%.*s", (int)(errlen ? errlen - 1 : 0), lerr);
		test_bootstrap_done(NULL);
		return NULL;
	}
	cfg_init(&c, src, "t.yaml");
	struct snapshot *s = config_build_bootstrap(&c, root, &test_srv);
	snprintf(err, errlen, "%.*s", (int)(errlen ? errlen - 1 : 0), c.err);
	json_decref(root);
	cfg_src_free(src);
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

#endif
