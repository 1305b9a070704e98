/* ads_decode_test.c - one xDS resource -> proto3 JSON (xds/ads_decode.c):
 * plain Any, the Resource (TTL) wrapper, type URL mismatches, malformed
 * payloads and the name recovered for the NACK. */
#include "test.h"
#include <stdlib.h>
#include "xds/ads_decode.h"
#include "envoy/config/cluster/v3/subset.pb-c.h"
#include "envoy/service/discovery/v3/subset.pb-c.h"

#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define LDS "type.googleapis.com/envoy.config.listener.v3.Listener"

static size_t pack(const ProtobufCMessage *m, uint8_t **out)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	*out = malloc(n ? n : 1);
	protobuf_c_message_pack(m, *out);
	return n;
}

/* A Cluster named name as an Any. */
static void cluster_any(Google__Protobuf__Any *a, const char *name)
{
	Envoy__Config__Cluster__V3__Cluster cl = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
	google__protobuf__any__init(a);
	cl.name = (char *)name;
	a->type_url = CDS;
	a->value.len = pack(&cl.base, &a->value.data);
}

static json_t *decode(const Google__Protobuf__Any *a, const char *url, char *err, char *name)
{
	struct pb_json_ctx pj = { 0 };
	err[0] = name[0] = '\0';
	return ads_decode_resource(&pj, url, "name", a, 3, err, 512, name, 64);
}

TEST(ads_decode_plain_and_wrapped)
{
	Google__Protobuf__Any a, outer;
	Envoy__Service__Discovery__V3__Resource r = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
	char err[512], name[64];
	cluster_any(&a, "backend");

	json_t *j = decode(&a, CDS, err, name);
	CHECK(j != NULL);
	CHECK_STR(json_string_value(json_object_get(j, "name")), "backend");
	CHECK(json_object_get(j, "@type") == NULL);   /* the compilers do not take @type */
	json_decref(j);

	r.name = "backend";
	r.resource = &a;
	google__protobuf__any__init(&outer);
	outer.type_url = XDS_TYPE_RESOURCE;
	outer.value.len = pack(&r.base, &outer.value.data);
	j = decode(&outer, CDS, err, name);
	CHECK(j != NULL);
	CHECK_STR(json_string_value(json_object_get(j, "name")), "backend");
	json_decref(j);

	/* the wrapped resource's own type URL must match the response's */
	j = decode(&outer, LDS, err, name);
	CHECK(j == NULL);
	CHECK_CONTAINS(err, "resources[3]: " CDS " does not match " LDS);
	free(outer.value.data);
	free(a.value.data);
}

TEST(ads_decode_malformed)
{
	static uint8_t junk[] = { 0x0a, 0xff, 0xff };   /* field 1, length past the end */
	Google__Protobuf__Any a;
	char err[512], name[64];

	google__protobuf__any__init(&a);
	a.type_url = XDS_TYPE_RESOURCE;
	a.value.data = junk;
	a.value.len = sizeof(junk);
	CHECK(decode(&a, CDS, err, name) == NULL);
	CHECK_STR(err, "resources[3]: malformed Resource wrapper");

	/* a Resource without a resource */
	Envoy__Service__Discovery__V3__Resource r = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
	r.name = "x";
	a.value.len = pack(&r.base, &a.value.data);
	CHECK(decode(&a, CDS, err, name) == NULL);
	CHECK_STR(err, "resources[3]: malformed Resource wrapper");
	free(a.value.data);

	a.type_url = NULL;
	a.value.data = junk;
	a.value.len = 0;
	CHECK(decode(&a, CDS, err, name) == NULL);
	CHECK_CONTAINS(err, "resources[3]: (none) does not match");

	a.type_url = CDS;
	a.value.len = sizeof(junk);
	CHECK(decode(&a, CDS, err, name) == NULL);
	CHECK_CONTAINS(err, "resources[3]");
	CHECK_STR(name, "");   /* could not be unpacked: no name */
}
