/* pb_json_fuzz.c - libFuzzer target for xDS decoding: protobuf-c unpacks the
 * input as a DiscoveryResponse and every resource goes through the
 * descriptor-driven converter (xds/pb_json.c), strict and lenient.  A failed
 * conversion must say where ("resources[N]...: ..."); a successful one must
 * be a JSON object carrying "@type" that jansson can serialize.
 * Seeds: tests/fuzz/corpus/pb_json (responses encoded by protoc from text). */
#include "xds/pb_json.h"
#include "envoy/service/discovery/v3/subset.pb-c.h"
#include "proxy/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		log_set_level_name("off");
		init = true;
	}
	Envoy__Service__Discovery__V3__DiscoveryResponse *r =
		envoy__service__discovery__v3__discovery_response__unpack(NULL, size, data);
	if (!r)
		return 0;
	for (size_t i = 0; i < r->n_resources; i++) {
		const Google__Protobuf__Any *a = r->resources[i];
		char path[32];
		snprintf(path, sizeof(path), "resources[%zu]", i);
		for (int lax = 0; lax < 2; lax++) {
			struct pb_json_ctx c = { .flags = lax ? PB_JSON_ALLOW_UNKNOWN : 0 };
			json_t *j = pb_any_to_json(&c, a->type_url ? a->type_url : "", a->value.data,
						   a->value.len, path);
			if (!j) {
				check(!strncmp(c.err, path, strlen(path)), "error names the resource");
				continue;
			}
			check(json_is_object(j) && json_object_get(j, "@type"), "object with @type");
			char *s = json_dumps(j, JSON_COMPACT);
			check(s != NULL, "serializable");
			free(s);
			json_decref(j);
		}
	}
	envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
	return 0;
}
