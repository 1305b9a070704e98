/* inject_test.c - the injector's pure parts: the YAML emitter's quoting
 * (round trip through the loader), the JSON Patch diff, inject/uninject on
 * trees, the generated bootstrap. */
#include "test.h"
#include "proxy/common.h"
#include "proxy/config/yaml_json.h"
#include "proxy/inject/inject.h"
#include "proxy/inject/yaml_emit.h"

static json_t *Y(const char *text)
{
	char err[256];
	json_t *j = yaml_load_buffer("t.yaml", text, strlen(text), NULL, err, sizeof(err));
	if (!j)
		fprintf(stderr, "  load: %s\n", err);
	return j;
}

static char *emit1(const json_t *doc)
{
	json_t *docs = json_array();
	json_array_append(docs, (json_t *)doc);
	char *s = yaml_emit_docs(docs, NULL);
	json_decref(docs);
	return s;
}

TEST(yaml_emit_round_trips_ambiguous_scalars)
{
	static const char *const strs[] = {"true", "on", "Off", "yes", "n", "null", "~", "",
					   "0777", "1e3", "0x1f", "-1", "+.5", ".inf", "1:20",
					   "a: b", "- x", "#c", "x #y", "multi\nline\n", "trailing ",
					   "'q'", "\"dq\"", "{a}", "[b]", "*star", "&anchor", "!tag",
					   "%pct", "@at", "`bt", "|", ">", "ünï", "tab\there", "<<"};
	json_t *o = json_object();
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%zu", i);
		json_object_set_new(o, key, json_string(strs[i]));
		json_object_set_new(o, strs[i], json_integer((json_int_t)i)); /* as keys too */
	}
	json_object_set_new(o, "int", json_integer(-42));
	json_object_set_new(o, "real", json_real(0.1));
	json_object_set_new(o, "whole", json_real(3.0));
	json_object_set_new(o, "t", json_true());
	json_object_set_new(o, "nul", json_null());
	json_object_set_new(o, "empty_map", json_object());
	json_object_set_new(o, "empty_list", json_array());
	char *text = emit1(o);
	CHECK(text != NULL);
	json_t *back = text ? Y(text) : NULL;
	CHECK(back && json_equal(o, back));
	if (back && !json_equal(o, back))
		fprintf(stderr, "%s\n", text);
	CHECK_CONTAINS(text, "k1: \"on\"");
	CHECK_CONTAINS(text, "k8: \"0777\"");
	CHECK_CONTAINS(text, "whole: 3.0");
	CHECK_CONTAINS(text, "k19: |");
	json_decref(back);
	json_decref(o);
	free(text);
}

TEST(yaml_emit_multi_documents_keep_order)
{
	json_t *docs = json_array();
	json_array_append_new(docs, json_pack("{s:i,s:i,s:i}", "z", 1, "a", 2, "m", 3));
	json_array_append_new(docs, json_null());
	json_array_append_new(docs, json_pack("{s:[i,i]}", "b", 1, 2));
	char *s = yaml_emit_docs(docs, NULL);
	CHECK_STR(s, "z: 1\na: 2\nm: 3\n---\nb:\n- 1\n- 2\n");
	free(s);
	json_decref(docs);
}

TEST(json_patch_diff_escapes_and_replaces)
{
	json_t *a = json_pack("{s:{s:s,s:s},s:[i],s:i}", "meta", "x/y", "1", "t~z", "2", "arr", 1,
			      "gone", 5);
	json_t *b = json_pack("{s:{s:s,s:s,s:s},s:[i,i]}", "meta", "x/y", "1", "t~z", "3", "n/w",
			      "4", "arr", 1, 2);
	json_t *p = json_patch_diff(a, b);
	char *s = json_dumps(p, JSON_COMPACT);
	CHECK_STR(s, "[{\"op\":\"replace\",\"path\":\"/meta/t~0z\",\"value\":\"3\"},"
		     "{\"op\":\"add\",\"path\":\"/meta/n~1w\",\"value\":\"4\"},"
		     "{\"op\":\"replace\",\"path\":\"/arr\",\"value\":[1,2]},"
		     "{\"op\":\"remove\",\"path\":\"/gone\"}]");
	free(s);
	json_decref(p);
	p = json_patch_diff(a, a);
	CHECK_INT(json_array_size(p), 0);
	json_decref(p);
	json_decref(a);
	json_decref(b);
}

static const char *pod_yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"
			      "spec:\n  containers:\n  - name: app\n    image: app:1\n";

TEST(inject_uninject_round_trip_on_trees)
{
	struct inject_opts o;
	char err[256];
	inject_opts_default(&o);
	for (int legacy = 0; legacy < 2; legacy++) {
		o.legacy_sidecar = legacy;
		json_t *orig = Y(pod_yaml), *doc = json_deep_copy(orig);
		CHECK_INT(inject_doc(doc, &o, err, sizeof(err)), INJECT_DONE);
		json_t *spec = json_object_get(doc, "spec");
		CHECK_INT(json_array_size(json_object_get(spec, "initContainers")), legacy ? 1 : 2);
		CHECK_INT(json_array_size(json_object_get(spec, "containers")), legacy ? 2 : 1);
		json_t *again = json_deep_copy(doc);
		CHECK_INT(inject_doc(again, &o, err, sizeof(err)), INJECT_SKIPPED);
		CHECK(json_equal(again, doc));
		CHECK_INT(uninject_doc(doc, err, sizeof(err)), INJECT_DONE);
		CHECK(json_equal(doc, orig));
		CHECK_INT(uninject_doc(doc, err, sizeof(err)), INJECT_SKIPPED);
		json_decref(again);
		json_decref(doc);
		json_decref(orig);
	}
}

TEST(inject_opt_out_and_errors)
{
	struct inject_opts o;
	char err[256];
	inject_opts_default(&o);
	json_t *d = Y("kind: Pod\nmetadata:\n  annotations:\n    sidecar.istio.io/inject: \"false\"\n"
		      "spec:\n  containers: []\n");
	CHECK_INT(inject_doc(d, &o, err, sizeof(err)), INJECT_SKIPPED);
	CHECK_CONTAINS(err, "opted out");
	json_decref(d);
	d = Y("kind: Deployment\nspec:\n  template:\n    spec: {}\n");
	CHECK_INT(inject_doc(d, &o, err, sizeof(err)), INJECT_FAILED);
	CHECK_CONTAINS(err, "spec.template.spec.containers");
	json_decref(d);
	d = Y("kind: List\nitems:\n- kind: ConfigMap\n- kind: Pod\n  metadata:\n    annotations:\n"
	      "      remora.io/proxy-cpu: \"1 core\"\n  spec:\n    containers: []\n");
	CHECK_INT(inject_doc(d, &o, err, sizeof(err)), INJECT_FAILED);
	CHECK_CONTAINS(err, "remora.io/proxy-cpu");
	json_decref(d);
	d = Y("kind: Service\nspec: {}\n");
	CHECK_INT(inject_doc(d, &o, err, sizeof(err)), INJECT_SKIPPED);
	json_decref(d);
}

TEST(inject_bootstrap_control_plane_address)
{
	struct inject_opts o;
	inject_opts_default(&o);
	o.control_plane = "[::1]:15010";
	json_t *b = inject_bootstrap(&o);
	json_t *sa = json_object_get(
	    json_object_get(
		json_object_get(
		    json_array_get(
			json_object_get(
			    json_array_get(
				json_object_get(
				    json_object_get(
					json_array_get(
					    json_object_get(json_object_get(b, "static_resources"),
							    "clusters"),
					    0),
					"load_assignment"),
				    "endpoints"),
				0),
			    "lb_endpoints"),
			0),
		    "endpoint"),
		"address"),
	    "socket_address");
	CHECK_STR(json_string_value(json_object_get(sa, "address")), "::1");
	CHECK_INT(json_integer_value(json_object_get(sa, "port_value")), 15010);
	json_decref(b);
}

TEST(inject_volumes_and_ca_options)
{
	struct inject_opts o;
	char err[256];
	inject_opts_default(&o);
	CHECK_INT(inject_opts_set(&o, "ca-address", "none", err, sizeof(err)), 0);
	CHECK(o.ca_address == NULL);
	CHECK_INT(inject_opts_set(&o, "ca-address", "ca:1", err, sizeof(err)), 0);
	CHECK_STR(o.ca_address, "ca:1");
	CHECK_INT(inject_opts_set(&o, "ca-address", "ca", err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "HOST:PORT");
	CHECK_INT(inject_opts_set(&o, "trust-domain", "a/b", err, sizeof(err)), -1);
	CHECK_INT(inject_opts_set(&o, "xds-address", "[::1]:15012", err, sizeof(err)), 0);
	CHECK_INT(inject_opts_set(&o, "image", "x", err, sizeof(err)), 1);
	inject_opts_default(&o);
	/* existing volumes stay, ours are appended and removed again */
	json_t *orig = Y("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n"
			 "  volumes: [{name: data, emptyDir: {}}]\n");
	json_t *doc = json_deep_copy(orig);
	CHECK_INT(inject_doc(doc, &o, err, sizeof(err)), INJECT_DONE);
	json_t *vols = json_object_get(json_object_get(doc, "spec"), "volumes");
	CHECK_INT(json_array_size(vols), 3);
	CHECK_STR(json_string_value(json_object_get(json_array_get(vols, 2), "name")), "remora-token");
	CHECK_INT(uninject_doc(doc, err, sizeof(err)), INJECT_DONE);
	CHECK(json_equal(doc, orig));
	json_decref(doc);
	json_decref(orig);
	/* volumes: null is put back as null */
	orig = Y("kind: Pod\nspec:\n  containers: [{name: a, image: b}]\n  volumes: null\n");
	doc = json_deep_copy(orig);
	CHECK_INT(inject_doc(doc, &o, err, sizeof(err)), INJECT_DONE);
	CHECK_INT(json_array_size(json_object_get(json_object_get(doc, "spec"), "volumes")), 2);
	CHECK_INT(uninject_doc(doc, err, sizeof(err)), INJECT_DONE);
	CHECK(json_equal(doc, orig));
	json_decref(doc);
	json_decref(orig);
	/* a name clash */
	doc = Y("kind: Pod\nspec:\n  containers: [{name: a, image: b}]\n"
		"  volumes: [{name: remora-ca-root, emptyDir: {}}]\n");
	CHECK_INT(inject_doc(doc, &o, err, sizeof(err)), INJECT_FAILED);
	CHECK_CONTAINS(err, "spec.volumes");
	json_decref(doc);
}
