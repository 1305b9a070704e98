/* config_compile_fuzz.c - libFuzzer target for the bootstrap compiler: YAML
 * text -> yaml_load_buffer -> config_build_bootstrap (clusters, listeners,
 * filter chains, HCM and HTTP filters, routes, overload_manager,
 * layered_runtime, dynamic_resources), then the snapshot is released.
 *
 * No I/O beyond the input: documents naming files (TLS `filename`, access
 * logs, `watched_directory`) or secrets (a process-wide store) are skipped
 * before compiling.  Invariants: a failed compile leaves an error that names a
 * place in fuzz.yaml; a successful one is released without leaks (libFuzzer's
 * leak check).
 * Run: make fuzz-bins; sh tests/fuzz/run-one.sh build/fuzz/config_compile_fuzz
 *      tests/fuzz/corpus/config_compile 60 */
#include "proxy/server.h"
#include "proxy/config/yaml_json.h"
#include "proxy/log.h"
#include "stats/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		__builtin_trap();
	}
}

/* Would compiling j touch the file system or process-wide state? */
static bool touches_outside(const json_t *j, int depth)
{
	static const char *const keys[] = { "filename", "watched_directory", "secrets",
					    "access_log", "access_log_path", NULL };
	if (depth > 64)
		return true;
	if (json_is_object(j)) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)j, k, v) {
			for (size_t i = 0; keys[i]; i++)
				if (!strcmp(k, keys[i]))
					return true;
			if (touches_outside(v, depth + 1))
				return true;
		}
	} else if (json_is_array(j)) {
		for (size_t i = 0; i < json_array_size(j); i++)
			if (touches_outside(json_array_get(j, i), depth + 1))
				return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct cfg_src *src = NULL;
	struct cfg_ctx c;

	log_current_level = LOG_OFF;
	if (size > 64 * 1024)
		return 0;
	json_t *root = yaml_load_buffer("fuzz.yaml", (const char *)data, size, &src, err, sizeof(err));
	if (!root)
		return 0;
	if (!touches_outside(root, 0)) {
		struct server srv;
		memset(&srv, 0, sizeof(srv));
		srv.nworkers = 2;
		srv.stats = stats_store_new(3);
		cfg_init(&c, src, "fuzz.yaml");
		struct snapshot *s = config_build_bootstrap(&c, root, &srv);
		if (!s)
			check(c.err[0] != '\0', "a failed compile says why");
		snapshot_unref(s);
		xds_bootstrap_free(&srv.xds);
		overload_cfg_free(&srv.overload);
		json_decref(srv.runtime);
		free(srv.node_id);
		free(srv.node_cluster);
		stats_store_free(srv.stats);
	}
	cfg_src_free(src);
	json_decref(root);
	return 0;
}
