/* xres.h - how the ADS client keeps accepted CDS and EDS resources: as
 * received, compactly, decoded again only when needed.
 *
 * A resource arriving over gRPC is kept as its protobuf payload (the Any's
 * value bytes, ~30-80 bytes for a small Cluster or ClusterLoadAssignment);
 * one arriving over REST as canonical JSON text.  An update is unchanged
 * when its bytes are equal (a memcmp, no decoding: a state-of-the-world
 * resend of 10,000 clusters costs a few ms); when the bytes differ the two
 * decoded JSON forms are compared, so a control plane that serialises map
 * fields in another order does not make a cluster look changed.
 * /config_dump and a cluster warming on stored endpoints decode the bytes
 * (xblob_to_json).
 *
 * xmeta: the version_info and time of the response a resource was accepted
 * in, shared by every resource of that response. */
#ifndef REMORA_XDS_XRES_H
#define REMORA_XDS_XRES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

enum xblob_kind { XBLOB_PB, XBLOB_JSON };

struct xblob {
	uint32_t len;                 /* bytes in data (without the JSON text's NUL) */
	uint8_t kind;                 /* enum xblob_kind */
	uint8_t data[];               /* protobuf payload, or NUL-terminated JSON text */
};

/* A copy of a protobuf payload (malloc'd, free() it). */
struct xblob *xblob_from_pb(const uint8_t *data, size_t len);
/* Canonical JSON text of j (compact, sorted keys: equal JSON values give
 * equal text), malloc'd. */
struct xblob *xblob_from_json(const json_t *j);
/* Same kind and bytes? (b may be NULL: false) */
bool xblob_equal(const struct xblob *b, enum xblob_kind kind, const uint8_t *data, size_t len);
/* The resource as proto3 JSON without "@type" (new reference), decoding a
 * protobuf payload of message type_url (unknown fields tolerated: it was
 * accepted).  NULL if it does not decode (not expected). */
json_t *xblob_to_json(const struct xblob *b, const char *type_url);

struct xmeta {
	int refcnt;
	char last_updated[32];        /* RFC 3339 UTC with milliseconds */
	char version[];               /* version_info */
};
struct xmeta *xmeta_new(const char *version);   /* stamped now, refcount 1 */
struct xmeta *xmeta_ref(struct xmeta *m);
void xmeta_unref(struct xmeta *m);             /* NULL ok */

/* A bump allocator for unpacking one xDS response with protobuf-c: its
 * thousands of small objects come from a few mmap'd chunks released at
 * once (pb_arena_release), never from the heap, so a large response
 * leaves no freed holes between long-lived objects, and nothing is freed
 * one by one (protobuf-c's free_unpacked need not be called). */
struct pb_arena {
	ProtobufCAllocator alloc;     /* pass &arena->alloc to *_unpack */
	struct pb_arena_chunk *chunks; /* owned, newest first */
	char *cur, *end;              /* free space of the newest chunk */
};
void pb_arena_init(struct pb_arena *a);
void pb_arena_release(struct pb_arena *a);   /* everything allocated; reusable */

/* The last occurrence of top-level string field `field` of a serialized
 * protobuf message (proto3: the last one wins), without unpacking it: 1
 * with *s / *slen pointing into data, 0 if absent, -1 if data is not a
 * well-formed message at the top level. */
int pb_scan_string(const uint8_t *data, size_t len, uint32_t field, const char **s,
		   size_t *slen);

#endif
