/* config_dump_test.c - /config_dump's resource, mask and name_regex (Envoy's
 * admin semantics) over a hand-made dump. */
#include "test.h"
#include "stats/config_dump.h"
#include "proxy/common.h"

#define A "type.googleapis.com/envoy.admin.v3."
#define CL "type.googleapis.com/envoy.config.cluster.v3.Cluster"

static json_t *sample(void)
{
	json_error_t e;
	json_t *j = json_loads(
		"[{\"@type\": \"" A "BootstrapConfigDump\","
		"  \"bootstrap\": {\"node\": {\"id\": \"n1\", \"cluster\": \"c\"}, \"admin\": {}}},"
		" {\"@type\": \"" A "ClustersConfigDump\", \"version_info\": \"7\","
		"  \"static_clusters\": [{\"cluster\": {\"@type\": \"" CL "\", \"name\": \"xds\","
		"                         \"type\": \"STATIC\"}}],"
		"  \"dynamic_active_clusters\": ["
		"   {\"version_info\": \"7\", \"last_updated\": \"2026-11-22T10:00:00.000Z\","
		"    \"cluster\": {\"@type\": \"" CL "\", \"name\": \"backend\", \"type\": \"EDS\","
		"                  \"connect_timeout\": \"1s\"}},"
		"   {\"version_info\": \"6\", \"last_updated\": \"2026-11-22T09:00:00.000Z\","
		"    \"cluster\": {\"@type\": \"" CL "\", \"name\": \"backend2\", \"type\": \"EDS\"}}],"
		"  \"dynamic_warming_clusters\": []},"
		" {\"@type\": \"" A "ListenersConfigDump\", \"version_info\": \"3\","
		"  \"static_listeners\": [],"
		"  \"dynamic_listeners\": [{\"name\": \"ingress\", \"active_state\": {\"version_info\": \"3\","
		"     \"listener\": {\"name\": \"ingress\"}, \"last_updated\": \"x\"}},"
		"   {\"name\": \"egress\", \"warming_state\": {\"version_info\": \"3\"}}]},"
		" {\"@type\": \"" A "RoutesConfigDump\", \"static_route_configs\": [],"
		"  \"dynamic_route_configs\": [{\"version_info\": \"1\","
		"     \"route_config\": {\"name\": \"r1\", \"virtual_hosts\": [{\"name\": \"a\"}, {\"name\": \"b\"}]}}]},"
		" {\"@type\": \"" A "SecretsConfigDump\", \"static_secrets\": [],"
		"  \"dynamic_active_secrets\": [{\"name\": \"cert\", \"secret\": {\"name\": \"cert\"}}]}]",
		0, &e);

	if (!j)
		fprintf(stderr, "sample: %s at %d\n", e.text, e.line);
	return j;
}

static int run(const char *resource, const char *mask, const char *re, json_t **out, char **msg)
{
	json_t *c = sample();
	struct config_dump_query q = { resource, mask, re };
	int rc = config_dump_query(c, &q, out, msg);

	json_decref(c);
	return rc;
}

TEST(config_dump_all_without_parameters)
{
	json_t *out;
	char *msg;

	CHECK_INT(run(NULL, NULL, NULL, &out, &msg), 200);
	CHECK(msg == NULL);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 5);
	json_decref(out);
}

TEST(config_dump_resource_wraps_each_element)
{
	json_t *out, *c, *el;
	char *msg;

	CHECK_INT(run("dynamic_active_clusters", NULL, NULL, &out, &msg), 200);
	c = json_object_get(out, "configs");
	CHECK_INT(json_array_size(c), 2);
	el = json_array_get(c, 0);
	CHECK_STR(json_string_value(json_object_get(el, "@type")),
		  A "ClustersConfigDump.DynamicCluster");
	CHECK_STR(json_string_value(json_object_get(el, "version_info")), "7");
	CHECK_STR(json_string_value(json_object_get(json_object_get(el, "cluster"), "name")), "backend");
	json_decref(out);

	/* an empty repeated field: no configs, still 200 */
	CHECK_INT(run("dynamic_warming_clusters", NULL, NULL, &out, &msg), 200);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 0);
	json_decref(out);
	/* a field the dump has but did not fill (absent from the JSON) */
	CHECK_INT(run("dynamic_warming_secrets", NULL, NULL, &out, &msg), 200);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 0);
	json_decref(out);

	CHECK_INT(run("dynamic_listeners", NULL, NULL, &out, &msg), 200);
	el = json_array_get(json_object_get(out, "configs"), 1);
	CHECK_STR(json_string_value(json_object_get(el, "@type")),
		  A "ListenersConfigDump.DynamicListener");
	CHECK_STR(json_string_value(json_object_get(el, "name")), "egress");
	json_decref(out);
}

TEST(config_dump_resource_errors)
{
	json_t *out;
	char *msg;

	CHECK_INT(run("no_such_field", NULL, NULL, &out, &msg), 404);
	CHECK_STR(msg, "no_such_field not found in config dump");
	CHECK(out == NULL);
	xfree(msg);
	/* the first dump with the field decides: ClustersConfigDump.version_info */
	CHECK_INT(run("version_info", NULL, NULL, &out, &msg), 400);
	CHECK_STR(msg, "version_info is not a repeated field. Use ?mask=version_info to get only "
		       "this field");
	xfree(msg);
	CHECK_INT(run("bootstrap", NULL, NULL, &out, &msg), 400);
	xfree(msg);
}

TEST(config_dump_resource_mask_reaches_into_the_resource)
{
	json_t *out, *el, *cl;
	char *msg;

	CHECK_INT(run("dynamic_active_clusters", "cluster.name,last_updated", NULL, &out, &msg), 200);
	el = json_array_get(json_object_get(out, "configs"), 0);
	CHECK_INT(json_object_size(el), 3);                  /* @type, cluster, last_updated */
	CHECK(json_object_get(el, "version_info") == NULL);
	cl = json_object_get(el, "cluster");
	CHECK_INT(json_object_size(cl), 2);                  /* @type and name */
	CHECK_STR(json_string_value(json_object_get(cl, "@type")), CL);
	CHECK_STR(json_string_value(json_object_get(cl, "name")), "backend");
	json_decref(out);

	/* the whole Any field */
	CHECK_INT(run("dynamic_active_clusters", "cluster", NULL, &out, &msg), 200);
	el = json_array_get(json_object_get(out, "configs"), 0);
	CHECK_INT(json_object_size(json_object_get(el, "cluster")), 4);
	CHECK(json_object_get(el, "last_updated") == NULL);
	json_decref(out);

	/* a path naming no field of the element: 400 */
	CHECK_INT(run("dynamic_active_clusters", "cluster.name,bogus", NULL, &out, &msg), 400);
	CHECK_CONTAINS(msg, "could not be successfully used");
	CHECK_CONTAINS(msg, "paths: \"bogus\"");
	xfree(msg);
	/* not into a DynamicListener's listener (an Any under a message: Envoy's
	 * mask cannot reach it either) */
	CHECK_INT(run("dynamic_listeners", "active_state.listener.name", NULL, &out, &msg), 400);
	xfree(msg);
	CHECK_INT(run("dynamic_listeners", "name,active_state.version_info", NULL, &out, &msg), 200);
	el = json_array_get(json_object_get(out, "configs"), 0);
	CHECK_INT(json_object_size(json_object_get(el, "active_state")), 1);
	json_decref(out);
}

TEST(config_dump_mask_alone_trims_and_drops_dumps)
{
	json_t *out, *c, *d;
	char *msg;

	/* only the dumps with the field are kept, trimmed to it */
	CHECK_INT(run(NULL, "static_clusters", NULL, &out, &msg), 200);
	c = json_object_get(out, "configs");
	CHECK_INT(json_array_size(c), 1);
	d = json_array_get(c, 0);
	CHECK_STR(json_string_value(json_object_get(d, "@type")), A "ClustersConfigDump");
	CHECK_INT(json_object_size(d), 2);
	CHECK_INT(json_array_size(json_object_get(d, "static_clusters")), 1);
	json_decref(out);

	/* version_info is in two dumps */
	CHECK_INT(run(NULL, "version_info", NULL, &out, &msg), 200);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 2);
	json_decref(out);

	/* into the bootstrap (its fields are not checked) */
	CHECK_INT(run(NULL, "bootstrap.node.id", NULL, &out, &msg), 200);
	d = json_array_get(json_object_get(out, "configs"), 0);
	CHECK_INT(json_object_size(json_object_get(d, "bootstrap")), 1);
	CHECK_INT(json_object_size(json_object_get(json_object_get(d, "bootstrap"), "node")), 1);
	json_decref(out);

	/* repeated fields cannot be walked into: the path fits no dump */
	CHECK_INT(run(NULL, "dynamic_active_clusters.cluster", NULL, &out, &msg), 400);
	CHECK_STR(msg, "FieldMask dynamic_active_clusters.cluster could not be successfully applied "
		       "to any configs.");
	xfree(msg);
	CHECK_INT(run(NULL, "nope", NULL, &out, &msg), 400);
	xfree(msg);
}

TEST(config_dump_name_regex_full_match)
{
	json_t *out, *c, *d;
	char *msg;

	CHECK_INT(run(NULL, NULL, "backend", &out, &msg), 200);
	c = json_object_get(out, "configs");
	d = json_array_get(c, 1);
	CHECK_INT(json_array_size(json_object_get(d, "dynamic_active_clusters")), 1);  /* not backend2 */
	CHECK_INT(json_array_size(json_object_get(d, "static_clusters")), 0);
	CHECK_INT(json_array_size(json_object_get(json_array_get(c, 2), "dynamic_listeners")), 0);
	CHECK_INT(json_array_size(json_object_get(json_array_get(c, 3), "dynamic_route_configs")), 0);
	/* the bootstrap is not filtered */
	CHECK(json_object_get(json_object_get(json_array_get(c, 0), "bootstrap"), "node") != NULL);
	json_decref(out);

	CHECK_INT(run("dynamic_active_clusters", NULL, "back.*", &out, &msg), 200);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 2);
	json_decref(out);
	CHECK_INT(run("dynamic_listeners", NULL, "egr.ss", &out, &msg), 200);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 1);
	json_decref(out);
	CHECK_INT(run("dynamic_route_configs", NULL, "r1|x", &out, &msg), 200);
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 1);
	json_decref(out);
	CHECK_INT(run("dynamic_active_secrets", NULL, "ce", &out, &msg), 200);   /* not a prefix */
	CHECK_INT(json_array_size(json_object_get(out, "configs")), 0);
	json_decref(out);

	CHECK_INT(run(NULL, NULL, "(unclosed", &out, &msg), 400);
	CHECK_CONTAINS(msg, "Error while parsing name_regex from (unclosed");
	xfree(msg);
}

TEST(config_dump_redacts_secrets)
{
	json_t *j = json_pack("{s:{s:{s:s}, s:{s:s}, s:[{s:{s:s}}]}}", "tls_certificate",
			      "private_key", "inline_string", "KEY", "certificate_chain",
			      "inline_string", "CERT", "more", "password", "inline_string", "PW");
	char *s;

	config_dump_redact(j);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	CHECK(strstr(s, "KEY") == NULL && strstr(s, "PW") == NULL);
	CHECK_CONTAINS(s, "CERT");
	CHECK_CONTAINS(s, "[redacted]");
	free(s);
	json_decref(j);
}
