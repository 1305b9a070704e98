/* xres_test.c - how the ADS client keeps CDS/EDS resources (xds/xres.c):
 * blobs from protobuf payloads and from JSON (canonical text), equality,
 * decoding back to JSON, the name scanner over protobuf bytes, and the
 * shared version/time records. */
#include "test.h"
#include <stdlib.h>
#include "xds/xres.h"
#include "xds/pb_encode.h"
#include "xds/pb_json.h"
#include "bootstrap_helper.h"

#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/* JSON -> protobuf bytes of message type_url (pb_encode). */
static uint8_t *encode(const char *type_url, const json_t *j, size_t *len)
{
	struct pb_encode_ctx c;
	uint8_t *out = NULL;

	memset(&c, 0, sizeof(c));
	if (pb_encode_json(&c, pb_find_descriptor(type_url), j, "", &out, len)) {
		fprintf(stderr, "encode: %s\n", c.err);
		return NULL;
	}
	return out;
}

TEST(xblob_json_is_canonical)
{
	json_t *a = test_json("{\"name\":\"web\",\"type\":\"EDS\",\"connect_timeout\":\"1s\"}");
	json_t *b = test_json("{\"connect_timeout\":\"1s\",\"type\":\"EDS\",\"name\":\"web\"}");
	json_t *c = test_json("{\"name\":\"web\",\"type\":\"EDS\",\"connect_timeout\":\"2s\"}");
	struct xblob *ba = xblob_from_json(a), *bb = xblob_from_json(b), *bc = xblob_from_json(c);
	json_t *back;

	CHECK_INT(ba->kind, XBLOB_JSON);
	CHECK(xblob_equal(ba, XBLOB_JSON, bb->data, bb->len));   /* key order does not matter */
	CHECK(!xblob_equal(ba, XBLOB_JSON, bc->data, bc->len));  /* a changed value does */
	CHECK(!xblob_equal(ba, XBLOB_PB, bb->data, bb->len));    /* nor another kind */
	CHECK(!xblob_equal(NULL, XBLOB_JSON, bb->data, bb->len));
	CHECK(strchr((const char *)ba->data, ' ') == NULL);      /* compact */
	CHECK_INT(strlen((const char *)ba->data), ba->len);
	back = xblob_to_json(ba, CDS);
	CHECK(back && json_equal(back, a));
	json_decref(back);
	CHECK(xblob_to_json(NULL, CDS) == NULL);
	free(ba);
	free(bb);
	free(bc);
	json_decref(a);
	json_decref(b);
	json_decref(c);
}

/* A protobuf payload is kept byte for byte, decodes back to the JSON it was
 * encoded from (without "@type"), and its name is found without unpacking. */
TEST(xblob_pb_round_trip_and_name_scan)
{
	json_t *cl = test_json("{\"name\":\"outbound|80||web.default.svc\",\"type\":\"EDS\","
			       "\"connect_timeout\":\"1s\",\"eds_cluster_config\":{\"eds_config\":"
			       "{\"ads\":{},\"resource_api_version\":\"V3\"},\"service_name\":\"svc-a\"}}");
	json_t *cla = test_json("{\"cluster_name\":\"svc-a\",\"endpoints\":[{\"lb_endpoints\":["
			        "{\"endpoint\":{\"address\":{\"socket_address\":{\"address\":\"10.0.0.1\","
			        "\"port_value\":8080}}}}]}]}");
	size_t n1 = 0, n2 = 0, slen = 0;
	uint8_t *p1 = encode(CDS, cl, &n1), *p2 = encode(EDS, cla, &n2);
	struct xblob *b1, *b2;
	const char *s = NULL;
	json_t *back;

	CHECK(p1 && p2);
	if (!p1 || !p2)
		return;
	b1 = xblob_from_pb(p1, n1);
	b2 = xblob_from_pb(p2, n2);
	CHECK_INT(b1->kind, XBLOB_PB);
	CHECK_INT(b1->len, n1);
	CHECK(xblob_equal(b1, XBLOB_PB, p1, n1));
	CHECK(!xblob_equal(b1, XBLOB_PB, p1, n1 - 1));
	CHECK(n1 < 120 && n2 < 60);                    /* what 10,000 clusters keep */
	back = xblob_to_json(b1, CDS);
	CHECK(back && json_equal(back, cl));
	json_decref(back);
	back = xblob_to_json(b2, EDS);
	CHECK(back && json_equal(back, cla));
	json_decref(back);

	CHECK_INT(pb_scan_string(p1, n1, 1, &s, &slen), 1);   /* Cluster.name */
	CHECK(slen == strlen("outbound|80||web.default.svc") &&
	      !memcmp(s, "outbound|80||web.default.svc", slen));
	CHECK_INT(pb_scan_string(p2, n2, 1, &s, &slen), 1);   /* cluster_name */
	CHECK(slen == 5 && !memcmp(s, "svc-a", 5));
	CHECK_INT(pb_scan_string(p2, n2, 9, &s, &slen), 0);   /* absent */
	CHECK_INT(pb_scan_string(p1, n1 - 1, 1, &s, &slen), -1);   /* truncated */
	{
		/* the last occurrence wins; other wire types are skipped */
		static const uint8_t m[] = { 0x0a, 0x01, 'a', 0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4,
					     5, 6, 7, 8, 0x25, 1, 2, 3, 4, 0x0a, 0x02, 'b', 'c' };
		CHECK_INT(pb_scan_string(m, sizeof(m), 1, &s, &slen), 1);
		CHECK(slen == 2 && !memcmp(s, "bc", 2));
		CHECK_INT(pb_scan_string(m, 3, 1, &s, &slen), 1);
		CHECK(slen == 1 && s[0] == 'a');
		static const uint8_t bad[] = { 0x0b, 0x00 };   /* group: not in the xDS API */
		CHECK_INT(pb_scan_string(bad, sizeof(bad), 1, &s, &slen), -1);
		static const uint8_t zero[] = { 0x02, 0x00 };  /* field 0 */
		CHECK_INT(pb_scan_string(zero, sizeof(zero), 1, &s, &slen), -1);
		static const uint8_t over[] = { 0x0a, 0x05, 'a' };   /* length past the end */
		CHECK_INT(pb_scan_string(over, sizeof(over), 1, &s, &slen), -1);
		CHECK_INT(pb_scan_string(m, 0, 1, &s, &slen), 0);
	}
	free(b1);
	free(b2);
	free(p1);
	free(p2);
	json_decref(cl);
	json_decref(cla);
}

TEST(xmeta_shared_and_stamped)
{
	struct xmeta *m = xmeta_new("v42"), *e = xmeta_new(NULL);

	CHECK_STR(m->version, "v42");
	CHECK_STR(e->version, "");
	CHECK_INT(strlen(m->last_updated), 24);           /* 2026-11-22T11:12:13.456Z */
	CHECK(m->last_updated[10] == 'T' && m->last_updated[23] == 'Z');
	CHECK(xmeta_ref(m) == m);
	CHECK_INT(m->refcnt, 2);
	xmeta_unref(m);
	CHECK_INT(m->refcnt, 1);
	xmeta_unref(m);                                    /* freed (ASan checks) */
	xmeta_unref(e);
	xmeta_unref(NULL);
	CHECK(xmeta_ref(NULL) == NULL);
}
