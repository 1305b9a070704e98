/* cp_catalog.h - internals shared by the service catalog's compiler
 * (cp_catalog.c: services, listeners, routes, mTLS) and its authorization
 * part (cp_catalog_authz.c: rules -> RBAC policies).  Not a public API:
 * remora-cp's entry point is cp_catalog_compile() in cp.h. */
#ifndef REMORA_XDS_CP_CP_CATALOG_H
#define REMORA_XDS_CP_CP_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct cfg_src;

/* One compilation of a catalog file. */
struct cat {
	const char *file;             /* shown in errors ("catalog.yaml") */
	const struct cfg_src *src;    /* positions of the catalog's nodes; may be NULL */
	char *err;                    /* caller's buffer: the first error */
	size_t errlen;
	const char *td;               /* trust_domain (SPIFFE IDs); points into the tree */
	json_t *nodes;                /* borrowed: {node name: {listeners, routes}} of the doc */
	json_t *inbound;              /* owned: the sidecar's virtualInbound listener, or NULL */
	json_t *authz;                /* owned: {service name: compiled service_authz} */
	bool inbound_tls_inspector;   /* virtualInbound has a PERMISSIVE chain */
};

enum cat_mtls { CAT_MTLS_STRICT, CAT_MTLS_PERMISSIVE, CAT_MTLS_DISABLE };

/* Fill c->err with "file:line:col: path: msg" (position of obj's key, else
 * of node, else none); returns -1. */
int cat_bad(struct cat *c, const json_t *obj, const char *key, const json_t *node,
	    const char *path, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Every key of obj must be in allowed (NULL-terminated); 0 or -1. */
int cat_check_keys(struct cat *c, const json_t *obj, const char *path,
		   const char *const *allowed);
/* Each element of the array l converted by fn(c, element, "path[i]", arg):
 * a new array of the results (new reference), or NULL when fn fails (c->err
 * set by fn). */
typedef json_t *cat_map_fn(struct cat *c, const json_t *v, const char *path, const void *arg);
json_t *cat_map(struct cat *c, const json_t *l, const char *path, cat_map_fn *fn, const void *arg);
/* obj[key] as a string (borrowed), def when absent (an error when def is
 * NULL); on error *rc = -1 and def is returned. */
const char *cat_get_str(struct cat *c, const json_t *obj, const char *key, const char *path,
			const char *def, int *rc);

/* The authorization of service svc (at path "services[i]"): its `allow`
 * and `rules` compiled to RBAC `rules` objects.  *deny / *allow become new
 * references (NULL: no filter of that action: no DENY rule; no `allow`
 * key and no ALLOW rule, i.e. everyone is allowed).  tcp: the service is
 * `protocol: tcp` (HTTP-only conditions are errors).  0, or -1 with c->err. */
int cat_authz_compile(struct cat *c, const json_t *svc, const char *path, bool tcp,
		      json_t **deny, json_t **allow);

/* {namespace, serviceAccount} at path -> its SPIFFE ID in out (sa may be
 * omitted when want_sa is false: then the prefix ".../sa/"). */
int cat_spiffe(struct cat *c, const json_t *id, const char *path, bool want_sa, char *out,
	       size_t outlen);

#endif
