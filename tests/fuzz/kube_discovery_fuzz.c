/* kube_discovery_fuzz.c - libFuzzer target for remora-cp's mapping of
 * Kubernetes objects to catalog services (xds/cp/kube_watch.c): each input
 * is JSON text [Service, [EndpointSlice...]] as the API server (or anything
 * answering in its place) sends them.  kube_watch_map_service must never
 * crash or leak on any shape, and every entry it makes must be a catalog
 * service: a name and an array of "ip:port" strings, with protocol "http"
 * or "tcp" when present.  kube_port_protocol is fed the port names too.
 *
 * Run: make fuzz (or build/fuzz/kube_discovery_fuzz tests/fuzz/corpus/kube_discovery). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "xds/cp/kube_watch.c"
#include "xds/cp/kube_api.c"   /* kube_watch runs over the API client */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entry(const json_t *e)
{
	const json_t *eps = json_object_get(e, "endpoints"), *v;
	const char *p = json_string_value(json_object_get(e, "protocol"));
	size_t i;
	if (!json_is_string(json_object_get(e, "name")) || !json_is_array(eps))
		abort();
	json_array_foreach(eps, i, v) {
		const char *s = json_string_value(v);
		if (!s || !strrchr(s, ':'))
			abort();
	}
	if (json_object_get(e, "protocol") && (!p || (strcmp(p, "http") && strcmp(p, "tcp"))))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!in)
		return 0;
	const json_t *svc = json_array_get(in, 0), *slices = json_array_get(in, 1);
	json_t *out = json_array(), *e, *p;
	size_t i;
	kube_watch_map_service(svc ? svc : in, slices, "cluster.local", out);
	json_array_foreach(out, i, e)
		check_entry(e);
	json_array_foreach(json_object_get(json_object_get(svc, "spec"), "ports"), i, p)
		(void)kube_port_protocol(json_string_value(json_object_get(p, "name")),
					 json_string_value(json_object_get(p, "appProtocol")));
	json_decref(out);
	json_decref(in);
	return 0;
}
