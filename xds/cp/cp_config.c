/* cp_config.c - remora-cp resources from a directory of YAML files. */
#include "cp.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>
#include "../../proxy/common.h"
#include "../../proxy/config/cfg.h"
#include "../../proxy/config/yaml_json.h"
#include "../pb_encode.h"
#include "../pb_json.h"

const char *const cp_type_url[CP_NTYPES] = {
	[CP_CDS] = "type.googleapis.com/envoy.config.cluster.v3.Cluster",
	[CP_EDS] = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	[CP_SDS] = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
	[CP_LDS] = "type.googleapis.com/envoy.config.listener.v3.Listener",
	[CP_RDS] = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
};
const char *const cp_type_key[CP_NTYPES] = {
	[CP_CDS] = "clusters", [CP_EDS] = "endpoints", [CP_SDS] = "secrets",
	[CP_LDS] = "listeners", [CP_RDS] = "routes",
};
const char *const cp_type_short[CP_NTYPES] = {
	[CP_CDS] = "cds", [CP_EDS] = "eds", [CP_SDS] = "sds", [CP_LDS] = "lds", [CP_RDS] = "rds",
};

int cp_type_by_url(const char *url)
{
	for (int t = 0; t < CP_NTYPES; t++)
		if (!strcmp(url, cp_type_url[t]))
			return t;
	return -1;
}

static void resource_clear(struct cp_resource *r)
{
	free(r->name);
	free(r->bytes);
	json_decref(r->json);
}

static void layer_clear(struct cp_layer *l)
{
	free(l->name);
	for (int t = 0; t < CP_NTYPES; t++) {
		for (size_t i = 0; i < l->n[t]; i++)
			resource_clear(&l->res[t][i]);
		free(l->res[t]);
	}
}

void cp_config_free(struct cp_config *c)
{
	if (!c)
		return;
	layer_clear(&c->base);
	for (size_t i = 0; i < c->nnodes; i++)
		layer_clear(&c->nodes[i]);
	free(c->nodes);
	free(c);
}

/* "file:line:col" of a node / member, or just "file". */
static void where(char *out, size_t len, const char *file, const struct cfg_src *src,
		  const json_t *obj, const char *key, const json_t *node)
{
	int line = 0, col = 0;
	if ((obj && !cfg_src_key_pos(src, obj, key, &line, &col)) ||
	    (node && !cfg_src_node_pos(src, node, &line, &col)))
		snprintf(out, len, "%s:%d:%d", file, line, col);
	else
		snprintf(out, len, "%s", file);
}

static int add_resource(struct cp_layer *l, int t, const char *file, const struct cfg_src *src,
			const json_t *j, const char *path, char *err, size_t errlen)
{
	struct pb_encode_ctx ec;
	struct pb_json_ctx dc = { 0 };
	char *url = NULL, pos[600];
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (t >= 0 && json_is_object(j) && json_object_get(j, "@type") &&
	    cp_type_by_url(json_string_value(json_object_get(j, "@type")) ?: "") != t) {
		where(pos, sizeof(pos), file, src, j, "@type", NULL);
		snprintf(err, errlen, "%s: %s: \"@type\" must be %s under \"%s\"", pos, path,
			 cp_type_url[t], cp_type_key[t]);
		return -1;
	}
	if (pb_encode_any_payload(&ec, j, t >= 0 ? cp_type_url[t] : NULL, path, &url, &bytes, &len)) {
		where(pos, sizeof(pos), file, src, ec.err_obj, ec.err_key, ec.err_node);
		snprintf(err, errlen, "%s: %s", pos, ec.err);
		return -1;
	}
	if (t < 0 && (t = cp_type_by_url(url)) < 0) {
		where(pos, sizeof(pos), file, src, j, "@type", NULL);
		snprintf(err, errlen, "%s: %s: type %s is not served (want a Cluster, "
			 "ClusterLoadAssignment, Listener, RouteConfiguration or Secret)", pos, path, url);
		goto fail;
	}
	/* Decode back: the canonical JSON, and proof that the subset takes it. */
	json_t *canon = pb_any_to_json(&dc, url, bytes, len, path);
	if (!canon) {
		where(pos, sizeof(pos), file, src, NULL, NULL, j);
		snprintf(err, errlen, "%s: %s", pos, dc.err);
		goto fail;
	}
	const char *name = json_string_value(json_object_get(canon, t == CP_EDS ? "cluster_name" : "name"));
	if (!name || !*name) {
		where(pos, sizeof(pos), file, src, NULL, NULL, j);
		snprintf(err, errlen, "%s: %s: a resource needs \"%s\"", pos, path,
			 t == CP_EDS ? "cluster_name" : "name");
		json_decref(canon);
		goto fail;
	}
	for (size_t i = 0; i < l->n[t]; i++)
		if (!strcmp(l->res[t][i].name, name)) {
			where(pos, sizeof(pos), file, src, NULL, NULL, j);
			snprintf(err, errlen, "%s: %s: %s '%s' is defined twice", pos, path,
				 cp_type_key[t], name);
			json_decref(canon);
			goto fail;
		}
	l->res[t] = xrealloc(l->res[t], (l->n[t] + 1) * sizeof(*l->res[t]));
	struct cp_resource *r = &l->res[t][l->n[t]++];
	r->name = xstrdup(name);
	r->bytes = bytes;
	r->len = len;
	r->json = canon;
	snprintf(r->version, sizeof(r->version), "%016llx", (unsigned long long)XXH64(bytes, len, 0));
	free(url);
	return 0;
fail:
	free(url);
	free(bytes);
	return -1;
}

static int load_doc(struct cp_layer *l, const char *file, const struct cfg_src *src, const json_t *doc,
		    size_t di, char *err, size_t errlen)
{
	const char *k;
	json_t *v;
	char pos[600], path[96];
	if (json_is_null(doc))
		return 0;
	if (!json_is_object(doc)) {
		where(pos, sizeof(pos), file, src, NULL, NULL, doc);
		snprintf(err, errlen, "%s: a document must be a mapping with keys clusters, endpoints, "
			 "listeners, routes, secrets or resources", pos);
		return -1;
	}
	json_object_foreach((json_t *)doc, k, v) {
		int t = -1;
		if (strcmp(k, "resources")) {
			for (t = 0; t < CP_NTYPES && strcmp(k, cp_type_key[t]); t++)
				;
			if (t == CP_NTYPES) {
				where(pos, sizeof(pos), file, src, doc, k, NULL);
				snprintf(err, errlen, "%s: unknown key '%s' (want clusters, endpoints, "
					 "listeners, routes, secrets or resources)", pos, k);
				return -1;
			}
		}
		if (json_is_null(v))
			continue;
		if (!json_is_array(v)) {
			where(pos, sizeof(pos), file, src, doc, k, NULL);
			snprintf(err, errlen, "%s: '%s' must be a list", pos, k);
			return -1;
		}
		for (size_t i = 0; i < json_array_size(v); i++) {
			if (di)
				snprintf(path, sizeof(path), "[doc %zu] %s[%zu]", di, k, i);
			else
				snprintf(path, sizeof(path), "%s[%zu]", k, i);
			if (add_resource(l, t, file, src, json_array_get(v, i), path, err, errlen))
				return -1;
		}
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_res(const void *a, const void *b)
{
	return strcmp(((const struct cp_resource *)a)->name, ((const struct cp_resource *)b)->name);
}

/* Sorted names of dir's entries that are regular YAML/JSON files (want_dirs:
 * subdirectories instead). */
static size_t list_dir(const char *dir, bool want_dirs, char ***out)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;
	size_t n = 0;
	*out = NULL;
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char p[4096];
		struct stat st;
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (stat(p, &st))
			continue;
		size_t len = strlen(e->d_name);
		if (want_dirs ? !S_ISDIR(st.st_mode)
			      : (!S_ISREG(st.st_mode) ||
				 !((len > 5 && !strcmp(e->d_name + len - 5, ".yaml")) ||
				   (len > 4 && !strcmp(e->d_name + len - 4, ".yml")) ||
				   (len > 5 && !strcmp(e->d_name + len - 5, ".json")))))
			continue;
		v = xrealloc(v, (n + 1) * sizeof(*v));
		v[n++] = xstrdup(e->d_name);
	}
	closedir(d);
	if (n)   /* qsort(NULL, 0) is UB */
		qsort(v, n, sizeof(*v), cmp_str);
	*out = v;
	return n;
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int load_layer(struct cp_layer *l, const char *dir, const char *shown, char *err, size_t errlen)
{
	char **files;
	size_t n = list_dir(dir, false, &files);
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		char p[4096], name[4096], e[1024];
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		snprintf(name, sizeof(name), "%s%s", shown, files[i]);
		FILE *f = fopen(p, "rb");
		char *buf = NULL;
		size_t len = 0;
		if (!f) {
			snprintf(err, errlen, "%s: cannot open", name);
			rc = -1;
			break;
		}
		FILE *m = open_memstream(&buf, &len);
		char chunk[8192];
		size_t got;
		while ((got = fread(chunk, 1, sizeof(chunk), f)))
			fwrite(chunk, 1, got, m);
		fclose(f);
		fclose(m);
		struct cfg_src *src = NULL;
		json_t *docs = yaml_load_all_buffer(name, buf, len, &src, e, sizeof(e));
		free(buf);
		if (!docs) {
			snprintf(err, errlen, "%s", e);
			rc = -1;
			break;
		}
		for (size_t d = 0; d < json_array_size(docs) && !rc; d++)
			rc = load_doc(l, name, src, json_array_get(docs, d), d, err, errlen);
		json_decref(docs);
		cfg_src_free(src);
	}
	free_list(files, n);
	for (int t = 0; t < CP_NTYPES; t++)
		if (l->n[t])
			qsort(l->res[t], l->n[t], sizeof(*l->res[t]), cmp_res);
	return rc;
}

/* Resources every load adds to the base layer (the CA's ROOTCA Secret). */
static json_t *builtins[CP_NTYPES];   /* owned arrays */

void cp_config_add_builtin(enum cp_type t, const json_t *res)
{
	if (!builtins[t])
		builtins[t] = json_array();
	json_array_append_new(builtins[t], json_deep_copy(res));
}

void cp_config_clear_builtins(void)
{
	for (int t = 0; t < CP_NTYPES; t++) {
		json_decref(builtins[t]);
		builtins[t] = NULL;
	}
}

static int add_builtins(struct cp_layer *l, char *err, size_t errlen)
{
	for (int t = 0; t < CP_NTYPES; t++) {
		size_t i;
		json_t *r;
		bool added = false;
		json_array_foreach(builtins[t], i, r) {
			const char *name = json_string_value(json_object_get(r, "name"));
			bool dup = false;
			for (size_t k = 0; name && k < l->n[t]; k++)
				dup |= !strcmp(l->res[t][k].name, name);
			if (dup)   /* the directory's own resource of that name wins */
				continue;
			char path[300];
			snprintf(path, sizeof(path), "%s[%s]", cp_type_key[t], name ? name : "");
			if (add_resource(l, t, "<built-in>", NULL, r, path, err, errlen))
				return -1;
			added = true;
		}
		if (added)
			qsort(l->res[t], l->n[t], sizeof(*l->res[t]), cmp_res);
	}
	return 0;
}

/* The layer of nodes/<name> (or of the catalog's per-node listeners),
 * created empty on first use. */
static struct cp_layer *node_layer_get(struct cp_config *c, const char *name)
{
	for (size_t i = 0; i < c->nnodes; i++)
		if (!strcmp(c->nodes[i].name, name))
			return &c->nodes[i];
	c->nodes = xrealloc(c->nodes, (c->nnodes + 1) * sizeof(*c->nodes));
	memset(&c->nodes[c->nnodes], 0, sizeof(*c->nodes));
	c->nodes[c->nnodes].name = xstrdup(name);
	return &c->nodes[c->nnodes++];
}

/* Services discovered from the Kubernetes API (kube_watch.c), or NULL. */
static json_t *discovered;   /* owned */

void cp_config_set_discovered(const json_t *services)
{
	json_decref(discovered);
	discovered = services ? json_deep_copy(services) : NULL;
}

/* The discovered services under the catalog's own: a service the file
 * defines too keeps its fields and gets the discovered endpoints (unless it
 * lists its own) and protocol (unless it sets protocol or http2). */
static void merge_discovered(json_t *cat)
{
	if (!json_array_size(discovered) || !json_is_object(cat))
		return;
	json_t *svcs = json_object_get(cat, "services"), *d, *mine = json_object();
	if (!svcs)
		json_object_set_new(cat, "services", svcs = json_array());
	if (!json_is_array(svcs)) {   /* the compiler reports it */
		json_decref(mine);
		return;
	}
	size_t i;
	json_array_foreach(svcs, i, d) {
		const char *n = json_string_value(json_object_get(d, "name"));
		if (n)
			json_object_set(mine, n, d);
	}
	json_array_foreach(discovered, i, d) {
		json_t *own = json_object_get(mine, json_string_value(json_object_get(d, "name")));
		if (!own) {
			json_array_append_new(svcs, json_deep_copy(d));
			continue;
		}
		if (!json_object_get(own, "endpoints"))
			json_object_set(own, "endpoints", json_object_get(d, "endpoints"));
		if (!json_object_get(own, "protocol") && !json_object_get(own, "http2")) {
			if (json_object_get(d, "protocol"))
				json_object_set(own, "protocol", json_object_get(d, "protocol"));
			if (json_object_get(d, "http2"))
				json_object_set(own, "http2", json_object_get(d, "http2"));
		}
	}
	json_decref(mine);
}

/* file NULL: the discovered services alone. */
static int load_catalog(struct cp_config *c, const char *file, char *err, size_t errlen)
{
	struct cfg_src *src = NULL;
	const char *slash = file ? strrchr(file, '/') : NULL;
	const char *shown = slash ? slash + 1 : file ? file : "<kubernetes>";
	json_t *cat = file ? yaml_load_file(file, &src, err, errlen) : json_object();
	if (!cat)
		return -1;
	merge_discovered(cat);
	json_t *doc = cp_catalog_compile(cat, src, shown, err, errlen);
	int rc = -1;
	if (doc) {
		/* listeners placed on some nodes only: their node layers */
		json_t *nodes = json_object_get(doc, "nodes"), *nd;
		const char *name;
		json_incref(nodes);
		json_object_del(doc, "nodes");
		rc = load_doc(&c->base, shown, src, doc, 0, err, errlen);
		json_object_foreach(nodes, name, nd) {
			if (rc)
				break;
			rc = load_doc(node_layer_get(c, name), shown, src, nd, 0, err, errlen);
		}
		json_decref(nodes);
	}
	json_decref(doc);
	json_decref(cat);
	cfg_src_free(src);
	return rc;
}

static void sort_layer(struct cp_layer *l)
{
	for (int t = 0; t < CP_NTYPES; t++)
		if (l->n[t])
			qsort(l->res[t], l->n[t], sizeof(*l->res[t]), cmp_res);
}

struct cp_config *cp_config_load(const char *dir, const char *catalog, char *err, size_t errlen)
{
	static unsigned generation;
	struct cp_config *c = xcalloc(1, sizeof(*c));
	char ndir[4096], **names;
	struct stat st;
	c->base.name = xstrdup("");
	if ((catalog || json_array_size(discovered)) && load_catalog(c, catalog, err, errlen))
		goto fail;
	if (!dir)
		goto done;
	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: not a directory", dir);
		goto fail;
	}
	if (load_layer(&c->base, dir, "", err, errlen))
		goto fail;
	snprintf(ndir, sizeof(ndir), "%s/nodes", dir);
	size_t n = list_dir(ndir, true, &names);
	for (size_t i = 0; i < n; i++) {
		char sub[8400], shown[600];
		snprintf(sub, sizeof(sub), "%s/%s", ndir, names[i]);
		snprintf(shown, sizeof(shown), "nodes/%.500s/", names[i]);
		if (load_layer(node_layer_get(c, names[i]), sub, shown, err, errlen)) {
			free_list(names, n);
			goto fail;
		}
	}
	free_list(names, n);
done:
	sort_layer(&c->base);
	for (size_t i = 0; i < c->nnodes; i++)
		sort_layer(&c->nodes[i]);
	if (add_builtins(&c->base, err, errlen))
		goto fail;
	c->generation = ++generation;
	return c;
fail:
	cp_config_free(c);
	return NULL;
}

static const struct cp_layer *node_layer(const struct cp_config *c, const char *name)
{
	if (!name || !*name)
		return NULL;
	for (size_t i = 0; i < c->nnodes; i++)
		if (!strcmp(c->nodes[i].name, name))
			return &c->nodes[i];
	return NULL;
}

size_t cp_config_view(const struct cp_config *c, const char *node_id, const char *node_cluster,
		      enum cp_type t, const struct cp_resource ***out, char *version)
{
	const struct cp_layer *layers[3] = { &c->base, node_layer(c, node_cluster),
					     node_layer(c, node_id) };
	if (layers[1] == layers[2])
		layers[1] = NULL;
	size_t cap = 0, n = 0, at[3] = { 0, 0, 0 };
	for (int i = 0; i < 3; i++)
		cap += layers[i] ? layers[i]->n[t] : 0;
	const struct cp_resource **v = xmalloc((cap ? cap : 1) * sizeof(*v));
	/* merge the sorted layers; on equal names the later layer wins */
	for (;;) {
		const struct cp_resource *best = NULL;
		for (int i = 0; i < 3; i++) {
			if (!layers[i] || at[i] >= layers[i]->n[t])
				continue;
			const struct cp_resource *r = &layers[i]->res[t][at[i]];
			if (!best || strcmp(r->name, best->name) <= 0)
				best = r;
		}
		if (!best)
			break;
		for (int i = 0; i < 3; i++)   /* consume that name in every layer */
			if (layers[i] && at[i] < layers[i]->n[t] &&
			    !strcmp(layers[i]->res[t][at[i]].name, best->name))
				at[i]++;
		v[n++] = best;
	}
	XXH64_state_t *h = XXH64_createState();
	XXH64_reset(h, 0);
	for (size_t i = 0; i < n; i++) {
		XXH64_update(h, v[i]->name, strlen(v[i]->name) + 1);
		XXH64_update(h, v[i]->version, 16);
	}
	snprintf(version, 17, "%016llx", (unsigned long long)XXH64_digest(h));
	XXH64_freeState(h);
	*out = v;
	return n;
}
