/* pb_encode_fuzz.c - libFuzzer target for the JSON -> protobuf encoder
 * (xds/pb_encode.c, remora-cp's resource loader).  The input is JSON text;
 * the first byte picks the default resource type for objects without
 * "@type".  Invariants: a failed encode names a path ("r..."); a successful
 * one decodes with protobuf-c through pb_json (strict) and, when that JSON
 * encodes again, to the same bytes (the encoding is canonical).
 * Seeds: tests/fuzz/corpus/pb_encode (resources as JSON). */
#include <stdlib.h>
#include <string.h>
#include "xds/pb_encode.h"
#include "xds/pb_json.h"
#include "proxy/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		__builtin_trap();
	}
}

static const char *const types[] = {
	"type.googleapis.com/envoy.config.cluster.v3.Cluster",
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	"type.googleapis.com/envoy.config.listener.v3.Listener",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		log_set_level_name("off");
		init = true;
	}
	if (size < 1)
		return 0;
	const char *def = types[data[0] % 5];
	json_error_t je;
	json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, &je);
	if (!j)
		return 0;
	struct pb_encode_ctx ec;
	char *url = NULL;
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (pb_encode_any_payload(&ec, j, def, "r", &url, &bytes, &len)) {
		check(ec.err[0] == 'r' || !strncmp(ec.err, "<root>", 6), "error without a path");
		json_decref(j);
		return 0;
	}
	struct pb_json_ctx dc = { 0 };
	json_t *back = pb_any_to_json(&dc, url, bytes, len, "r");
	check(back != NULL, "encoder output does not decode");
	char *url2 = NULL;
	uint8_t *bytes2 = NULL;
	size_t len2 = 0;
	if (!pb_encode_any_payload(&ec, back, NULL, "r", &url2, &bytes2, &len2)) {
		check(!strcmp(url, url2), "type URL changed");
		check(len == len2 && !memcmp(bytes, bytes2, len), "re-encoding differs");
	}
	free(url2);
	free(bytes2);
	json_decref(back);
	free(url);
	free(bytes);
	json_decref(j);
	return 0;
}
