/* kube_watch_test.c - xds/cp/kube_watch.c: Service port protocols, the
 * mapping of a Service and its EndpointSlices to catalog services (names per
 * port, ready/terminating/unknown endpoints, FQDN slices, UDP ports,
 * ExternalName, IPv6), and the merge of discovered services under the
 * catalog file's (xds/cp/cp_config.c). */
#include "test.h"

#include <stdlib.h>
#include <unistd.h>
#include "xds/cp/kube_watch.c"
#include "xds/cp/kube_api.c"
#include "xds/cp/cp_config.c"
#include "xds/cp/cp_catalog.c"
#include "xds/cp/cp_catalog_authz.c"

TEST(kube_port_protocols)
{
	CHECK_STR(kube_port_protocol("http", NULL), "http");
	CHECK_STR(kube_port_protocol("http-web", NULL), "http");
	CHECK_STR(kube_port_protocol("HTTP2-x", NULL), "http2");
	CHECK_STR(kube_port_protocol("grpc-api", NULL), "http2");
	CHECK_STR(kube_port_protocol("tcp-db", NULL), "tcp");
	CHECK_STR(kube_port_protocol("https", NULL), "tcp");
	CHECK(kube_port_protocol("web", NULL) == NULL);
	CHECK(kube_port_protocol("", NULL) == NULL);
	CHECK(kube_port_protocol(NULL, NULL) == NULL);
	CHECK(kube_port_protocol("httpx", NULL) == NULL);
	/* appProtocol wins over the name; it is not split at '-' */
	CHECK_STR(kube_port_protocol("http", "grpc"), "http2");
	CHECK_STR(kube_port_protocol("tcp", "kubernetes.io/h2c"), "http2");
	CHECK_STR(kube_port_protocol("grpc", "grpc-web"), "http");
	CHECK(kube_port_protocol("http", "example.com/custom") == NULL);
}

static json_t *map(const char *svc, const char *slices)
{
	json_error_t e;
	json_t *s = json_loads(svc, 0, &e), *sl = json_loads(slices, 0, &e), *out = json_array();
	if (!s || !sl)
		abort();
	kube_watch_map_service(s, sl, "cluster.local", out);
	json_decref(s);
	json_decref(sl);
	return out;
}

static char *dump(json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	return t;
}

TEST(kube_map_service)
{
	char *t = dump(map(
		"{\"metadata\":{\"name\":\"web\",\"namespace\":\"ns\"},\"spec\":{\"ports\":["
		"{\"name\":\"http\",\"port\":80},{\"name\":\"grpc\",\"port\":9090},"
		"{\"name\":\"dns\",\"port\":53,\"protocol\":\"UDP\"},{\"name\":\"x\",\"port\":7}]}}",
		"[{\"addressType\":\"IPv4\",\"ports\":[{\"name\":\"http\",\"port\":8080},"
		"{\"name\":\"grpc\",\"port\":9091}],\"endpoints\":["
		"{\"addresses\":[\"10.0.0.2\"],\"conditions\":{\"ready\":true}},"
		"{\"addresses\":[\"10.0.0.1\"]},"
		"{\"addresses\":[\"10.0.0.3\"],\"conditions\":{\"ready\":false}},"
		"{\"addresses\":[\"10.0.0.4\"],\"conditions\":{\"ready\":true,\"terminating\":true}},"
		"{\"addresses\":[\"not-an-ip\"]}]},"
		"{\"addressType\":\"IPv6\",\"ports\":[{\"name\":\"http\",\"port\":8080}],"
		"\"endpoints\":[{\"addresses\":[\"fd00::1\"]},{\"addresses\":[\"10.0.0.9\"]}]},"
		"{\"addressType\":\"FQDN\",\"ports\":[{\"name\":\"http\",\"port\":8080}],"
		"\"endpoints\":[{\"addresses\":[\"a.example.com\"]}]},"
		"{\"addressType\":\"IPv4\",\"ports\":[{\"name\":\"http\",\"port\":8080}],"
		"\"endpoints\":[{\"addresses\":[\"10.0.0.2\"]}]}]"));
	CHECK_STR(t, "[{\"endpoints\":[\"10.0.0.1:8080\",\"10.0.0.2:8080\",\"[fd00::1]:8080\"],"
		  "\"name\":\"web.ns.svc.cluster.local\",\"protocol\":\"http\"},"
		  "{\"endpoints\":[\"10.0.0.1:9091\",\"10.0.0.2:9091\"],\"http2\":true,"
		  "\"name\":\"web.ns.svc.cluster.local:9090\",\"protocol\":\"http\"},"
		  "{\"endpoints\":[],\"name\":\"web.ns.svc.cluster.local:7\"}]");
	free(t);
	/* ExternalName: nothing; no slices: a service without endpoints */
	t = dump(map("{\"metadata\":{\"name\":\"e\",\"namespace\":\"ns\"},\"spec\":{\"type\":"
		     "\"ExternalName\",\"ports\":[{\"name\":\"http\",\"port\":80}]}}", "[]"));
	CHECK_STR(t, "[]");
	free(t);
	t = dump(map("{\"metadata\":{\"name\":\"db\",\"namespace\":\"ns\"},\"spec\":{\"ports\":"
		     "[{\"port\":5432,\"appProtocol\":\"tcp\"}]}}", "[]"));
	CHECK_STR(t, "[{\"endpoints\":[],\"name\":\"db.ns.svc.cluster.local\",\"protocol\":\"tcp\"}]");
	free(t);
}

TEST(kube_discovered_merge_under_catalog)
{
	char dir[] = "/tmp/kw_test.XXXXXX", err[1024];
	if (!mkdtemp(dir))
		abort();
	char *cat = xasprintf("%s/catalog.yaml", dir);
	FILE *f = fopen(cat, "w");
	/* a file service of the same name keeps its own endpoints and protocol;
	 * one without endpoints gets the discovered ones; the route refers to a
	 * discovered-only service */
	fputs("services:\n"
	      "- name: a.ns.svc.cluster.local\n  endpoints: ['127.0.0.1:1']\n  protocol: tcp\n"
	      "- name: b.ns.svc.cluster.local\n  lb_policy: RANDOM\n"
	      "listeners:\n- name: l\n  port: 8000\n  routes:\n  - to: c.ns.svc.cluster.local\n", f);
	fclose(f);
	json_error_t je;
	json_t *disc = json_loads(
		"[{\"name\":\"a.ns.svc.cluster.local\",\"endpoints\":[\"10.0.0.1:80\"],\"http2\":true,"
		"\"protocol\":\"http\"},"
		"{\"name\":\"b.ns.svc.cluster.local\",\"endpoints\":[\"10.0.0.2:80\"],\"http2\":true,"
		"\"protocol\":\"http\"},"
		"{\"name\":\"c.ns.svc.cluster.local\",\"endpoints\":[\"10.0.0.3:80\"]}]", 0, &je);
	struct cp_config *c = cp_config_load(NULL, cat, err, sizeof(err));
	CHECK(c == NULL);   /* c is unknown without discovery */
	CHECK_CONTAINS(err, "unknown service 'c.ns.svc.cluster.local'");
	cp_config_set_discovered(disc);
	c = cp_config_load(NULL, cat, err, sizeof(err));
	CHECK(c != NULL);
	if (c) {
		CHECK_INT(c->base.n[CP_CDS], 3);
		CHECK_INT(c->base.n[CP_EDS], 3);
		char *eps = json_dumps(c->base.res[CP_EDS][0].json, JSON_COMPACT);
		CHECK_CONTAINS(eps, "127.0.0.1");   /* a: the file's endpoints */
		free(eps);
		eps = json_dumps(c->base.res[CP_EDS][1].json, JSON_COMPACT);
		CHECK_CONTAINS(eps, "10.0.0.2");    /* b: discovered */
		free(eps);
		char *b = json_dumps(c->base.res[CP_CDS][1].json, JSON_COMPACT);
		CHECK_CONTAINS(b, "RANDOM");
		CHECK_CONTAINS(b, "http2_protocol_options");
		free(b);
		char *a = json_dumps(c->base.res[CP_CDS][0].json, JSON_COMPACT);
		CHECK(!strstr(a, "http2_protocol_options"));   /* a: protocol tcp kept */
		free(a);
	}
	cp_config_free(c);
	/* no catalog file: the discovered services alone */
	c = cp_config_load(NULL, NULL, err, sizeof(err));
	CHECK(c != NULL);
	if (c)
		CHECK_INT(c->base.n[CP_CDS], 3);
	cp_config_free(c);
	cp_config_set_discovered(NULL);
	json_decref(disc);
	unlink(cat);
	rmdir(dir);
	free(cat);
}
