/* rbac.c - RBAC policies: parse (no I/O) and evaluate (no allocation). */
#include "rbac.h"

#include <netinet/in.h>
#include "proxy/filter_chain_match.h"
#include "proxy/http/headers.h"
#include "proxy/router/route.h"

enum rbac_kind {
	K_ANY, K_AND, K_OR, K_NOT,
	K_HEADER, K_URL_PATH,                           /* HTTP only */
	K_DST_IP, K_DST_PORT, K_DST_PORT_RANGE, K_SNI,  /* permissions */
	K_AUTH, K_SRC_IP, K_DIRECT_IP, K_REMOTE_IP,     /* principals */
};

struct rbac_node {
	enum rbac_kind kind;
	struct rbac_node *kids;          /* owned [nkids]: AND / OR children, NOT's one */
	uint32_t nkids;
	struct header_match_list *hm;    /* owned: K_HEADER */
	struct str_matcher *sm;          /* owned: K_URL_PATH, K_SNI, K_AUTH (NULL: any TLS peer) */
	struct cidr cidr;                /* K_*_IP */
	uint32_t lo, hi;                 /* K_DST_PORT: lo; K_DST_PORT_RANGE: [lo, hi) */
};

struct rbac_policy {
	char *name;                      /* owned */
	struct rbac_node perms;          /* K_OR over permissions */
	struct rbac_node princs;         /* K_OR over principals */
};

struct rbac_engine {
	bool deny;                       /* action DENY (else ALLOW) */
	struct rbac_policy *p;           /* owned [np] */
	uint32_t np;
};

static void node_free(struct rbac_node *n)
{
	for (uint32_t i = 0; i < n->nkids; i++)
		node_free(&n->kids[i]);
	xfree(n->kids);
	header_match_list_free(n->hm);
	string_matcher_free(n->sm);
	memset(n, 0, sizeof(*n));
}

void rbac_engine_free(struct rbac_engine *e)
{
	if (!e)
		return;
	for (uint32_t i = 0; i < e->np; i++) {
		xfree(e->p[i].name);
		node_free(&e->p[i].perms);
		node_free(&e->p[i].princs);
	}
	xfree(e->p);
	xfree(e);
}

/* ---- parsing ---------------------------------------------------------------------- */

typedef int (*node_parse_fn)(struct cfg_ctx *c, const json_t *j, bool http, struct rbac_node *n);

/* A list (member `name` of obj, or obj itself when name is NULL) of nodes
 * parsed with fn into n (kind set by the caller).  min1: at least one. */
static int parse_list(struct cfg_ctx *c, const json_t *obj, const char *name, bool http,
		      node_parse_fn fn, bool min1, struct rbac_node *n)
{
	const json_t *arr = cfg_enter_req(c, obj, name);
	if (!arr)
		return RM_ERROR;
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t cnt = json_array_size(arr);
	if (min1 && !cnt)
		return cfg_fail(c, "at least one entry is required");
	n->kids = xcalloc(cnt ? cnt : 1, sizeof(*n->kids));
	for (size_t i = 0; i < cnt; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		n->nkids++;
		if (fn(c, e, http, &n->kids[i]))
			return RM_ERROR;
		cfg_leave(c);
	}
	cfg_leave(c);
	return RM_OK;
}

/* The one rule a Permission / Principal sets (names: every field it
 * has): its snake_case name, or fail. */
static const char *only_member(struct cfg_ctx *c, const json_t *j, const char *const *names,
			       const char *what)
{
	const char *found = NULL;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, names))
		return NULL;
	for (size_t i = 0; names[i]; i++) {
		if (!cfg_get(j, names[i]))
			continue;
		if (found) {
			cfg_fail(c, "a %s sets exactly one rule ('%s' and '%s' given)", what, found,
				 names[i]);
			return NULL;
		}
		found = names[i];
	}
	if (!found)
		cfg_fail(c, "a %s must set one rule", what);
	return found;
}

static int parse_any(struct cfg_ctx *c, const json_t *j, struct rbac_node *n)
{
	bool any = false;
	if (cfg_bool(c, j, "any", &any))
		return RM_ERROR;
	if (!any)
		return cfg_fail_field(c, j, "any", "must be true");
	n->kind = K_ANY;
	return RM_OK;
}

/* CidrRange member `name` of obj. */
static int parse_cidr(struct cfg_ctx *c, const json_t *obj, const char *name, struct rbac_node *n)
{
	static const char *const f[] = { "address_prefix", "prefix_len", NULL };
	const json_t *v = cfg_enter(c, obj, name);
	const char *pfx = NULL;
	uint32_t len = 0;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    cfg_string_req(c, v, "address_prefix", &pfx) || cfg_u32(c, v, "prefix_len", &len))
		return RM_ERROR;
	if (cidr_parse(pfx, len, &n->cidr))
		return cfg_fail(c, "'%s/%u' is not an IP address with a prefix length that fits it",
				pfx, len);
	cfg_leave(c);
	return RM_OK;
}

/* PathMatcher {path: StringMatcher} member `name` of obj. */
static int parse_path(struct cfg_ctx *c, const json_t *obj, const char *name, struct rbac_node *n)
{
	static const char *const f[] = { "path", NULL };
	const json_t *v = cfg_enter(c, obj, name);
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    string_matcher_compile(c, v, "path", &n->sm))
		return RM_ERROR;
	cfg_leave(c);
	n->kind = K_URL_PATH;
	return RM_OK;
}

static int http_only(struct cfg_ctx *c, const json_t *j, const char *key, bool http)
{
	if (http)
		return RM_OK;
	return cfg_fail_field(c, j, key, "only the HTTP RBAC filter can match '%s'", key);
}

/* The combinators shared by permissions and principals: "and_rules" /
 * "or_rules" ({rules: [...]}) or "and_ids" / "or_ids" ({ids: [...]}) at key k
 * with its list under list, and "not_rule" / "not_id" (one node). */
static int parse_set(struct cfg_ctx *c, const json_t *j, const char *k, const char *list,
		     bool http, node_parse_fn fn, struct rbac_node *n)
{
	const char *const f[] = { list, NULL };
	const json_t *v;

	n->kind = k[0] == 'a' ? K_AND : K_OR;
	v = cfg_enter(c, j, k);
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    parse_list(c, v, list, http, fn, true, n))
		return RM_ERROR;
	cfg_leave(c);
	return RM_OK;
}

static int parse_not(struct cfg_ctx *c, const json_t *j, const char *k, bool http,
		     node_parse_fn fn, struct rbac_node *n)
{
	n->kind = K_NOT;
	n->kids = xcalloc(1, sizeof(*n->kids));
	n->nkids = 1;
	if (fn(c, cfg_enter(c, j, k), http, n->kids))
		return RM_ERROR;
	cfg_leave(c);
	return RM_OK;
}

static int parse_permission(struct cfg_ctx *c, const json_t *j, bool http, struct rbac_node *n)
{
	static const char *const names[] = { "any", "and_rules", "or_rules", "not_rule", "header",
					     "url_path", "destination_ip", "destination_port",
					     "destination_port_range", "requested_server_name",
					     "metadata", "matcher", "uri_template", NULL };
	static const char *const not_yet[] = { "metadata", "matcher", "uri_template", NULL };
	const char *k = only_member(c, j, names, "permission");
	const json_t *v;
	if (!k)
		return RM_ERROR;
	if (cfg_reject_fields(c, j, not_yet, "not supported"))
		return RM_ERROR;
	if (!strcmp(k, "any"))
		return parse_any(c, j, n);
	if (!strcmp(k, "and_rules") || !strcmp(k, "or_rules"))
		return parse_set(c, j, k, "rules", http, parse_permission, n);
	if (!strcmp(k, "not_rule"))
		return parse_not(c, j, k, http, parse_permission, n);
	if (!strcmp(k, "header")) {
		n->kind = K_HEADER;
		return (http_only(c, j, k, http) || header_match_one_compile(c, j, k, &n->hm)) ? RM_ERROR
											  : RM_OK;
	}
	if (!strcmp(k, "url_path"))
		return (http_only(c, j, k, http) || parse_path(c, j, k, n)) ? RM_ERROR : RM_OK;
	if (!strcmp(k, "destination_ip")) {
		n->kind = K_DST_IP;
		return parse_cidr(c, j, k, n);
	}
	if (!strcmp(k, "destination_port")) {
		n->kind = K_DST_PORT;
		if (cfg_u32(c, j, k, &n->lo))
			return RM_ERROR;
		if (n->lo > 65535)
			return cfg_fail_field(c, j, k, "must be at most 65535");
		return RM_OK;
	}
	if (!strcmp(k, "destination_port_range")) {
		static const char *const f[] = { "start", "end", NULL };
		n->kind = K_DST_PORT_RANGE;
		v = cfg_enter(c, j, k);
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
		    cfg_u32(c, v, "start", &n->lo) || cfg_u32(c, v, "end", &n->hi))
			return RM_ERROR;
		if (n->hi < n->lo || n->hi > 65536)
			return cfg_fail(c, "expected start <= end <= 65536 (end is exclusive)");
		cfg_leave(c);
		return RM_OK;
	}
	if (!strcmp(k, "requested_server_name")) {
		n->kind = K_SNI;
		return string_matcher_compile(c, j, k, &n->sm);
	}
	return cfg_fail_field(c, j, k, "unknown permission rule '%s'", k);
}

static int parse_principal(struct cfg_ctx *c, const json_t *j, bool http, struct rbac_node *n)
{
	static const char *const not_yet[] = { "metadata", "filter_state", "sourced_metadata",
					       "custom", NULL };
	static const char *const names[] = { "any", "and_ids", "or_ids", "not_id", "authenticated",
					     "source_ip", "direct_remote_ip", "remote_ip", "header",
					     "url_path", "metadata", "filter_state", "sourced_metadata",
					     "custom", NULL };
	const char *k = only_member(c, j, names, "principal");
	const json_t *v;
	if (!k)
		return RM_ERROR;
	if (cfg_reject_fields(c, j, not_yet, "not supported"))
		return RM_ERROR;
	if (!strcmp(k, "any"))
		return parse_any(c, j, n);
	if (!strcmp(k, "and_ids") || !strcmp(k, "or_ids"))
		return parse_set(c, j, k, "ids", http, parse_principal, n);
	if (!strcmp(k, "not_id"))
		return parse_not(c, j, k, http, parse_principal, n);
	if (!strcmp(k, "authenticated")) {
		static const char *const f[] = { "principal_name", NULL };
		n->kind = K_AUTH;
		v = cfg_enter(c, j, k);
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f))
			return RM_ERROR;
		if (cfg_get(v, "principal_name") &&
		    string_matcher_compile(c, v, "principal_name", &n->sm))
			return RM_ERROR;
		cfg_leave(c);
		return RM_OK;
	}
	if (!strcmp(k, "source_ip") || !strcmp(k, "direct_remote_ip") || !strcmp(k, "remote_ip")) {
		n->kind = k[0] == 's' ? K_SRC_IP : k[0] == 'd' ? K_DIRECT_IP : K_REMOTE_IP;
		return parse_cidr(c, j, k, n);
	}
	if (!strcmp(k, "header")) {
		n->kind = K_HEADER;
		return (http_only(c, j, k, http) || header_match_one_compile(c, j, k, &n->hm)) ? RM_ERROR
											  : RM_OK;
	}
	if (!strcmp(k, "url_path"))
		return (http_only(c, j, k, http) || parse_path(c, j, k, n)) ? RM_ERROR : RM_OK;
	return cfg_fail_field(c, j, k, "unknown principal rule '%s'", k);
}

static int parse_policy(struct cfg_ctx *c, const json_t *j, bool http, struct rbac_policy *p)
{
	static const char *const f[] = { "permissions", "principals", "condition",
					 "checked_condition", NULL };
	static const char *const not_yet[] = { "condition", "checked_condition", NULL };
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	    cfg_reject_fields(c, j, not_yet, "CEL conditions are not supported"))
		return RM_ERROR;
	p->perms.kind = K_OR;
	p->princs.kind = K_OR;
	if (parse_list(c, j, "permissions", http, parse_permission, true, &p->perms) ||
	    parse_list(c, j, "principals", http, parse_principal, true, &p->princs))
		return RM_ERROR;
	return RM_OK;
}

static int parse_rbac(struct cfg_ctx *c, const json_t *r, bool http, struct rbac_engine *e)
{
	static const char *const f[] = { "action", "policies", "audit_logging_options", NULL };
	static const char *const actions[] = { "ALLOW", "DENY", "LOG" };
	static const char *const not_yet[] = { "audit_logging_options", NULL };
	int action = 0;
	const json_t *pol;
	if (cfg_expect_object(c, r) || cfg_check_fields(c, r, f) ||
	    cfg_reject_fields(c, r, not_yet, "not supported") ||
	    cfg_enum(c, r, "action", actions, ARRAY_SIZE(actions), &action))
		return RM_ERROR;
	if (action == 2)
		return cfg_fail_field(c, r, "action", "LOG is not supported (use shadow_rules to "
				      "count decisions without enforcing them)");
	e->deny = action == 1;
	if (!(pol = cfg_enter(c, r, "policies")))
		return RM_OK;
	if (cfg_expect_object(c, pol))
		return RM_ERROR;
	e->p = xcalloc(json_object_size(pol) + 1, sizeof(*e->p));
	const char *name;
	const json_t *v;
	json_object_foreach((json_t *)pol, name, v) {
		struct rbac_policy *p = &e->p[e->np++];
		p->name = xstrdup(name);
		cfg_enter(c, pol, name);
		if (parse_policy(c, v, http, p))
			return RM_ERROR;
		cfg_leave(c);
	}
	cfg_leave(c);
	return RM_OK;
}

int rbac_engine_parse(struct cfg_ctx *c, const json_t *obj, const char *name, bool http,
		      struct rbac_engine **out)
{
	int depth = c->depth;
	const json_t *r = cfg_enter(c, obj, name);
	*out = NULL;
	if (!r)
		return RM_OK;
	struct rbac_engine *e = xcalloc(1, sizeof(*e));
	if (parse_rbac(c, r, http, e)) {
		c->depth = depth;   /* unwind what a failed member left entered */
		rbac_engine_free(e);
		return RM_ERROR;
	}
	cfg_leave(c);
	*out = e;
	return RM_OK;
}

/* ---- evaluation ------------------------------------------------------------------- */

static int sa_port(const struct sockaddr *sa)
{
	if (!sa)
		return -1;
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return -1;
}

static bool path_matches(const struct str_matcher *sm, const struct http_headers *h)
{
	size_t n = 0;
	const char *p = h ? hdrs_get(h, ":path", &n) : NULL;
	if (!p)
		return false;
	size_t end = 0;
	while (end < n && p[end] != '?' && p[end] != '#')
		end++;
	return string_matcher_match(sm, p, end);
}

static bool node_match(const struct rbac_node *n, const struct rbac_input *in)
{
	int port;
	switch (n->kind) {
	case K_ANY:
		return true;
	case K_AND:
		for (uint32_t i = 0; i < n->nkids; i++)
			if (!node_match(&n->kids[i], in))
				return false;
		return true;
	case K_OR:
		for (uint32_t i = 0; i < n->nkids; i++)
			if (node_match(&n->kids[i], in))
				return true;
		return false;
	case K_NOT:
		return !node_match(n->kids, in);
	case K_HEADER:
		return in->headers && header_match_list_match(n->hm, in->headers);
	case K_URL_PATH:
		return path_matches(n->sm, in->headers);
	case K_DST_IP:
		return cidr_contains(&n->cidr, in->local);
	case K_DST_PORT:
		return sa_port(in->local) == (int)n->lo;
	case K_DST_PORT_RANGE:
		port = sa_port(in->local);
		return port >= (int)n->lo && port < (int)n->hi;
	case K_SNI: {
		const char *s = in->sni ? in->sni : "";
		return string_matcher_match(n->sm, s, strlen(s));
	}
	case K_AUTH: {
		if (!in->tls)
			return false;
		if (!n->sm)
			return true;
		const char *p = in->principal ? in->principal : "";
		return string_matcher_match(n->sm, p, strlen(p));
	}
	case K_SRC_IP:
	case K_DIRECT_IP:
		return cidr_contains(&n->cidr, in->direct_remote);
	case K_REMOTE_IP:
		return cidr_contains(&n->cidr, in->remote ? in->remote : in->direct_remote);
	}
	return false;
}

bool rbac_engine_allowed(const struct rbac_engine *e, const struct rbac_input *in,
			 const char **policy)
{
	if (policy)
		*policy = NULL;
	for (uint32_t i = 0; i < e->np; i++) {
		const struct rbac_policy *p = &e->p[i];
		if (node_match(&p->perms, in) && node_match(&p->princs, in)) {
			if (policy)
				*policy = p->name;
			return !e->deny;
		}
	}
	return e->deny;
}

/* ---- stats ------------------------------------------------------------------------ */

void rbac_stat_names_init(struct rbac_stat_names *n, const char *rules_prefix,
			  const char *shadow_prefix)
{
	static const char *const leaf[RBAC_STATS_N] = { "allowed", "denied", "shadow_allowed",
							"shadow_denied" };
	n->desc = xcalloc(RBAC_STATS_N, sizeof(*n->desc));
	for (int i = 0; i < RBAC_STATS_N; i++) {
		const char *pfx = i < RBAC_SHADOW_ALLOWED ? rules_prefix : shadow_prefix;
		n->desc[i].name = xasprintf("%s%s", pfx ? pfx : "", leaf[i]);
		n->desc[i].type = STAT_COUNTER;
	}
}

void rbac_stat_names_free(struct rbac_stat_names *n)
{
	if (!n->desc)
		return;
	for (int i = 0; i < RBAC_STATS_N; i++)
		xfree((char *)n->desc[i].name);
	xfree(n->desc);
	n->desc = NULL;
}
