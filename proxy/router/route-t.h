/* route-t.h - private types of the compiled route table (proxy/router only).
 *
 * route.c compiles a RouteConfiguration into these structs; route_match.c
 * reads them on the request path.  Everything here is immutable after
 * route_config_compile() returns, so one table is shared by every worker. */
#ifndef REMORA_ROUTER_ROUTE_T_H
#define REMORA_ROUTER_ROUTE_T_H

#include "route.h"
#include "route_regex.h"

/* StringMatcher (envoy.type.matcher.v3.StringMatcher). */
enum sm_kind { SM_EXACT, SM_PREFIX, SM_SUFFIX, SM_CONTAINS, SM_REGEX };

struct str_matcher {
	enum sm_kind kind;
	bool ignore_case;            /* exact/prefix/suffix/contains only */
	char *s;                     /* owned; NULL for SM_REGEX */
	uint32_t len;
	struct route_re *re;         /* owned; SM_REGEX only (full match) */
};

/* HeaderMatcher.  HM_ANY is the legacy `exact_match: ""`, which Envoy treats
 * as "any value" (HeaderMatchType::Value with an empty value). */
enum hm_kind { HM_PRESENT, HM_ANY, HM_STRING };

struct hdr_matcher {
	char *name;                  /* owned, lowercase */
	uint32_t name_len;
	enum hm_kind kind;
	bool present;                /* HM_PRESENT: the present_match value */
	bool invert;                 /* invert_match */
	bool missing_as_empty;       /* treat_missing_header_as_empty */
	struct str_matcher sm;       /* HM_STRING */
};

/* header_match_list (route.h): matchers outside a route. */
struct header_match_list {
	struct hdr_matcher *hm;      /* owned [nhm] */
	uint32_t nhm;
};

/* QueryParameterMatcher: has_sm false means "present". */
struct qp_matcher {
	char *name;                  /* owned */
	uint32_t name_len;
	bool has_sm;
	struct str_matcher sm;
};

/* QueryParameterMatcher lists outside a route (rate-limit actions): compile
 * list member name of obj (absent: *out NULL, *n 0), free, and match the
 * query of path (every matcher must match). */
int route_qp_list_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			  struct qp_matcher **out, uint32_t *n);
void route_qp_list_free(struct qp_matcher *qm, uint32_t n);
bool route_qp_list_match(const struct qp_matcher *qm, uint32_t n, const char *path, size_t len);

/* HeaderValueOption.append_action; values as in the proto enum. */
enum hdr_append_action {
	HDR_APPEND_IF_EXISTS_OR_ADD,
	HDR_ADD_IF_ABSENT,
	HDR_OVERWRITE_IF_EXISTS_OR_ADD,
	HDR_OVERWRITE_IF_EXISTS,
};

struct hdr_add {
	char *key;                   /* owned, lowercase */
	uint32_t key_len;
	char *value;                 /* owned, literal */
	uint32_t value_len;
	enum hdr_append_action action;
	bool keep_empty;             /* keep_empty_value */
};

/* One level's *_headers_to_remove then *_headers_to_add. */
struct hdr_ops {
	char **remove;               /* owned [nremove], each owned, lowercase */
	uint32_t nremove;
	struct hdr_add *add;         /* owned [nadd] */
	uint32_t nadd;
};

struct hdr_mutations {
	struct hdr_ops req, resp;
};

/* route.h's struct header_adds: one level of additions only. */
struct header_adds {
	struct hdr_ops ops;
};

/* Apply one level (route_match.c). */
void hdr_ops_apply(const struct hdr_ops *o, struct http_headers *h);

/* RouteAction.HashPolicy.  HP_NONE is connection_properties with source_ip
 * false, which Envoy accepts and never hashes. */
enum hp_kind { HP_NONE, HP_HEADER, HP_COOKIE, HP_QUERY, HP_SOURCE_IP };

struct hash_policy {
	enum hp_kind kind;
	char *name;                  /* owned; header (lowercase), cookie or query
	                                parameter name; NULL for HP_SOURCE_IP/NONE */
	uint32_t name_len;
	bool terminal;
	char *set_cookie_tail;       /* owned; HP_COOKIE with ttl: what follows the
	                                value in a generated Set-Cookie ("; Max-Age=N;
	                                Path=p; attr=v; HttpOnly"), else NULL */
	uint32_t set_cookie_tail_len;
};

enum path_kind { PM_PREFIX, PM_PATH, PM_REGEX, PM_SEP_PREFIX, PM_CONNECT };

struct route {
	struct route_entry e;        /* public part; route_match() returns &e */
	/* RouteMatch */
	enum path_kind pkind;
	char *pstr;                  /* owned; prefix/path/separated prefix */
	uint32_t plen;
	bool case_sensitive;
	struct route_re *pre;        /* owned; PM_REGEX (full match) */
	struct hdr_matcher *hm;      /* owned [nhm] */
	uint32_t nhm;
	struct qp_matcher *qm;       /* owned [nqm] */
	uint32_t nqm;
	/* ROUTE and REDIRECT: prefix_rewrite (NULL = none) */
	char *prefix_rewrite;        /* owned */
	uint32_t prefix_rewrite_len;
	/* ROUTE */
	struct route_re *rewrite_re; /* owned; regex_rewrite.pattern (unanchored) */
	char *rewrite_sub;           /* owned; regex_rewrite.substitution */
	char *host_rewrite;          /* owned; host_rewrite_literal or NULL */
	bool append_xfh;             /* append_x_forwarded_host */
	struct hash_policy *hp;      /* owned [nhp]; hash_policy, in order */
	uint32_t nhp;
	/* REDIRECT */
	char *scheme_redirect;       /* owned, lowercase; NULL = keep (https_redirect sets "https") */
	char *host_redirect;         /* owned or NULL */
	char *path_redirect;         /* owned or NULL */
	uint32_t port_redirect;      /* 0 = keep */
	bool path_redirect_has_query;
	bool strip_query;
	struct hdr_mutations hdrs;
	struct retry_policy *own_retry; /* owned: route.retry_policy (e.retry points here or at the vhost's) */
	struct route_filter_cfg *pfc; /* owned [rc->npf]: this route's typed_per_filter_config, or NULL */
	struct route_filter_cfg *merged; /* owned [rc->npf]: e.filter_cfgs (configs not owned), or NULL */
	bool has_buffer_limit;       /* per_request_buffer_limit_bytes set on the route */
	bool has_hedge;              /* route.hedge_policy set (wins over the vhost's) */
};

struct virtual_host {
	char *name;                  /* owned */
	struct route *routes;        /* owned [nroutes] */
	uint32_t nroutes;
	struct hdr_mutations hdrs;
	struct retry_policy *retry;  /* owned: virtual_host.retry_policy, may be NULL */
	bool has_hedge, hedge_ptt;   /* virtual_host.hedge_policy set / hedge_on_per_try_timeout */
	uint32_t buffer_limit;       /* per_request_buffer_limit_bytes, 0 = unset */
	bool attempt_req, attempt_resp; /* include_(request_)attempt_count... */
	struct route_filter_cfg *pfc; /* owned [rc->npf]: typed_per_filter_config, or NULL */
	struct rl_policy_list *rate_limits; /* owned: virtual_host.rate_limits, or NULL */
};

struct retry_policy *retry_policy_compile(struct cfg_ctx *c, const json_t *j);
void retry_policy_free(struct retry_policy *rp);
/* HedgePolicy at obj[field] (absent: RM_OK, *present false). */
int hedge_policy_compile(struct cfg_ctx *c, const json_t *obj, bool *present, bool *on_ptt);

/* Domain table: one open-addressing hash over (kind, lowercase string). */
enum dom_kind { DOM_EXACT, DOM_SUFFIX, DOM_PREFIX };

struct dom_slot {
	char *key;                   /* owned, lowercase; NULL = empty slot */
	uint32_t len;
	uint32_t hash;
	enum dom_kind kind;
	struct virtual_host *vh;     /* not owned */
};

struct dom_table {
	struct dom_slot *slots;      /* owned [cap], cap a power of two */
	uint32_t cap, n;
};

struct route_config {
	char *name;                  /* owned ("" when unnamed) */
	struct virtual_host *vhosts; /* owned [nvhosts] */
	uint32_t nvhosts;
	struct hdr_mutations hdrs;
	struct dom_table domains;
	uint32_t *suffix_lens;       /* owned: distinct "*suffix" lengths, descending */
	uint32_t nsuffix;
	uint32_t *prefix_lens;       /* owned: distinct "prefix*" lengths, descending */
	uint32_t nprefix;
	struct virtual_host *default_vh;  /* not owned: the "*" virtual host */
	/* Host matching uses the :authority as-is, port included (Envoy's
	 * default).  true = ignore_port_in_host_matching: drop the port first. */
	bool ignore_port;
	/* most_specific_header_mutations_wins: apply route config, virtual
	 * host, route (least specific first) instead of the default order. */
	bool most_specific_wins;
	uint32_t max_direct_body;    /* max_direct_response_body_size_bytes */
	/* typed_per_filter_config: slots per chain filter (route_filters) */
	const struct route_filters *filters; /* not owned; valid during compile only */
	const struct http_filter_ops **pf_ops; /* owned [npf]: frees the parsed configs */
	uint32_t npf;
	struct route_filter_cfg *pfc; /* owned [npf]: route-configuration level, or NULL */
};

/* per_filter.c: compile obj's typed_per_filter_config into *out (NULL when
 * absent, empty, or naming no filter of the chain); free one level. */
int route_pf_compile(struct cfg_ctx *c, const json_t *obj, struct route_config *rc,
		     struct route_filter_cfg **out);
void route_pf_free(const struct route_config *rc, struct route_filter_cfg *pfc);
/* Fill every route's e.filter_cfgs (route > virtual host > route config). */
void route_pf_merge(struct route_config *rc);

static inline const struct route *route_of(const struct route_entry *re)
{
	return container_of(re, const struct route, e);
}

/* Domain table (route.c). */
uint32_t route_dom_hash(enum dom_kind kind, const char *s, size_t len);
struct virtual_host *route_dom_find(const struct dom_table *t, enum dom_kind kind,
				    const char *s, size_t len);

#endif
