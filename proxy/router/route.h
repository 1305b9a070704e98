/* route.h - RouteConfiguration: compile once into an immutable table, match
 * requests against it.  Pure: no I/O, no globals, safe to share read-only
 * between workers (it lives in the config snapshot).
 *
 * Supported (Envoy v3 envoy.config.route.v3.*):
 *  RouteConfiguration: name, virtual_hosts, request_headers_to_add,
 *    request_headers_to_remove, response_headers_to_add,
 *    response_headers_to_remove.
 *  RouteConfiguration also: ignore_port_in_host_matching,
 *    most_specific_header_mutations_wins, max_direct_response_body_size_bytes.
 *  typed_per_filter_config on RouteConfiguration, VirtualHost and Route
 *    (per_filter.c; see route_config_compile and struct route_filters).
 *  VirtualHost: name, domains (exact, "*suffix", "prefix*", "*"; matched
 *    against :authority as-is, port included, as Envoy does by default;
 *    ignore_port_in_host_matching strips the port), routes, the four
 *    *_headers_to_add/remove lists.
 *  Route: name, match, route | redirect | direct_response, the four header
 *    lists.
 *  RouteMatch: prefix | path | safe_regex {regex} | path_separated_prefix |
 *    connect_matcher {} (CONNECT requests match only connect_matcher routes),
 *    case_sensitive (default true), headers[] (HeaderMatcher:
 *    string_match {exact,prefix,suffix,contains,safe_regex,ignore_case},
 *    exact_match, prefix_match, suffix_match, contains_match,
 *    safe_regex_match, present_match, invert_match, treat_missing_header_as_empty),
 *    query_parameters[] (name, string_match, present_match).
 *  RouteAction: cluster | weighted_clusters {clusters[{name, weight,
 *    request/response header lists}], total_weight(ignored/validated)},
 *    prefix_rewrite, regex_rewrite {pattern{regex}, substitution},
 *    host_rewrite_literal, append_x_forwarded_host, timeout (default 15 s;
 *    0 = none), idle_timeout, upgrade_configs[] {upgrade_type, enabled,
 *    connect_config {}}, hash_policy[] (header, cookie {name, ttl, path,
 *    attributes}, query_parameter, connection_properties, terminal),
 *    priority (DEFAULT | HIGH).
 *  RedirectAction: scheme_redirect / https_redirect, host_redirect,
 *    port_redirect, path_redirect | prefix_rewrite, response_code
 *    (MOVED_PERMANENTLY 301 default, FOUND 302, SEE_OTHER 303,
 *    TEMPORARY_REDIRECT 307, PERMANENT_REDIRECT 308), strip_query.
 *  RouteAction.rate_limits and VirtualHost.rate_limits (ratelimit_action.h).
 *  DirectResponseAction: status, body {inline_string | inline_bytes}.
 *  HeaderValueOption: header {key, value}, append (deprecated bool),
 *    append_action (APPEND_IF_EXISTS_OR_ADD default,
 *    ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS),
 *    keep_empty_value.  Values are literal (no %VAR% formatting yet).
 * Regexes: RE2 syntax subset, compiled with PCRE2 (+JIT where available),
 *   anchored full-match as Envoy's safe_regex requires; match limits set so a
 *   pathological pattern is bounded. */
#ifndef REMORA_ROUTER_ROUTE_H
#define REMORA_ROUTER_ROUTE_H

#include "../config/cfg.h"
#include "../http/headers.h"

struct route_config;      /* opaque; immutable after compile */
struct rl_policy_list;    /* ratelimit_action.h */

/* retry_on conditions (RetryPolicy.retry_on, x-envoy-retry-on). */
#define RETRY_ON_5XX                 (1u << 0)
#define RETRY_ON_GATEWAY_ERROR       (1u << 1)  /* 502, 503, 504 */
#define RETRY_ON_RESET               (1u << 2)
#define RETRY_ON_CONNECT_FAILURE     (1u << 3)
#define RETRY_ON_REFUSED_STREAM      (1u << 4)
#define RETRY_ON_RETRIABLE_4XX       (1u << 5)  /* 409 */
#define RETRY_ON_RETRIABLE_CODES     (1u << 6)  /* retriable_status_codes */
#define RETRY_ON_GRPC_CANCELLED      (1u << 7)
#define RETRY_ON_GRPC_DEADLINE       (1u << 8)
#define RETRY_ON_GRPC_RESOURCE       (1u << 9)
#define RETRY_ON_GRPC_INTERNAL       (1u << 10)
#define RETRY_ON_GRPC_UNAVAILABLE    (1u << 11)
#define RETRY_ON_RETRIABLE_HEADERS   (1u << 12) /* retriable_headers, x-envoy-retriable-header-names */

struct header_match_list;

/* RetryPolicy (route.retry_policy, or its virtual host's). Immutable. */
struct retry_policy {
	uint32_t retry_on;                /* RETRY_ON_* */
	uint32_t num_retries;             /* default 1 */
	uint64_t per_try_timeout_ms;      /* 0 = none */
	uint64_t per_try_idle_timeout_ms; /* 0 = none */
	uint64_t backoff_base_ms;         /* retry_back_off.base_interval, default 25 */
	uint64_t backoff_max_ms;          /* default 10 x base */
	uint16_t *status_codes;           /* owned [nstatus]: retriable_status_codes */
	uint32_t nstatus;
	bool previous_hosts;              /* retry_host_predicate previous_hosts */
	uint32_t host_selection_max_attempts; /* default 1 */
	/* retriable_headers: a response matching any of them is retriable
	 * (retry_on retriable-headers); owned, NULL = none */
	struct header_match_list *retriable_headers;
	/* retriable_request_headers: retry at all only if the request matches
	 * any of them; owned, NULL = no condition */
	struct header_match_list *retriable_request_headers;
};

/* Parse a gRPC "grpc-timeout" header value ("100m", "5S", 8 digits max and
 * a unit H M S m u n) into milliseconds (rounded up).  RM_OK / RM_ERROR. */
int grpc_timeout_parse(const char *v, size_t n, uint64_t *ms);

/* Parse a comma-separated retry_on list.  Unknown tokens: RM_ERROR with
 * *bad pointing at it (the header form ignores them). */
int retry_on_parse(const char *s, size_t len, uint32_t *out, const char **bad, size_t *badlen);
/* Does a response status (and grpc-status, -1 if none) call for a retry? */
bool retry_on_status(uint32_t retry_on, const struct retry_policy *rp, int status, int grpc_status);
/* retry_on retriable-headers: does the response match one of the policy's
 * retriable_headers, or carry a header named in the request's
 * x-envoy-retriable-header-names (comma list; names only, as Envoy)?
 * req may be NULL. */
bool retry_on_headers(uint32_t retry_on, const struct retry_policy *rp,
		      const struct http_headers *req, const struct http_headers *resp);
/* retriable_request_headers: may this request be retried at all? */
bool retry_request_allowed(const struct retry_policy *rp, const struct http_headers *req);
struct virtual_host;      /* opaque */

enum route_action_kind { ROUTE_ACTION_ROUTE, ROUTE_ACTION_REDIRECT, ROUTE_ACTION_DIRECT };

struct weighted_cluster {
	char *name;                       /* owned */
	uint32_t weight;
	void *headers;                    /* owned, private: per-cluster header mutations */
};

/* typed_per_filter_config, resolved against the HCM's HTTP filter chain
 * (route_config_compile's `filters`).  One slot per chain filter. */
enum route_filter_state {
	ROUTE_FILTER_UNSET = 0,           /* this level says nothing about the filter */
	ROUTE_FILTER_ENABLED,             /* configured (cfg may be NULL: FilterConfig
	                                     with an empty config only enables it) */
	ROUTE_FILTER_DISABLED,            /* FilterConfig {disabled: true} */
};

struct route_filter_cfg {
	void *cfg;                        /* the filter's parse_per_route result, or NULL;
	                                     owned by the route table */
	enum route_filter_state state;
};

struct http_filter_ops;
struct build_ctx;

/* The HTTP filter chain a route table is compiled for: per-filter configs
 * are keyed by http_filters[].name and parsed by the filter of the Any's
 * @type (Envoy's rule).  Arrays have n entries, in chain order. */
struct route_filters {
	const char *const *names;                   /* http_filters[i].name */
	const struct http_filter_ops *const *ops;   /* http_filters[i]'s filter */
	uint32_t n;
	struct build_ctx *b;                        /* passed to parse_per_route */
};

/* Public view of a matched route (the rest is private to route.c). */
struct route_entry {
	char *name;                       /* owned, may be NULL */
	enum route_action_kind kind;
	/* ROUTE */
	char *cluster;                    /* owned; NULL when weighted */
	struct weighted_cluster *wclusters;  /* owned [nwclusters] */
	uint32_t nwclusters, total_weight;
	uint64_t timeout_ms;              /* 0 = no timeout; default 15000 */
	uint64_t idle_timeout_ms;         /* 0 = unset */
	bool connect_terminate;           /* upgrade_configs CONNECT with connect_config:
	                                     the proxy answers 200 and tunnels raw TCP */
	const struct retry_policy *retry; /* route's or virtual host's; NULL = none */
	bool hedge_on_per_try_timeout;    /* hedge_policy (route's, else virtual host's) */
	int64_t grpc_timeout_max_ms;      /* max_stream_duration.grpc_timeout_header_max:
	                                     -1 unset (grpc-timeout ignored), 0 no cap */
	uint64_t grpc_timeout_offset_ms;  /* max_stream_duration.grpc_timeout_header_offset */
	uint64_t max_stream_duration_ms;  /* max_stream_duration.max_stream_duration, 0 = HCM's */
	uint32_t per_request_buffer_limit; /* per_request_buffer_limit_bytes, 0 = unset */
	bool attempt_count_in_request;    /* vhost include_request_attempt_count */
	bool attempt_count_in_response;   /* vhost include_attempt_count_in_response */
	uint8_t priority;                 /* RouteAction.priority: 0 DEFAULT, 1 HIGH (the
	                                     cluster's circuit-breaker thresholds used) */
	/* DIRECT */
	uint16_t direct_status;
	char *direct_body;                /* owned, may be NULL */
	size_t direct_body_len;
	/* REDIRECT: see route_redirect_location() */
	uint16_t redirect_status;
	/* typed_per_filter_config merged over route > virtual host > route
	 * configuration: [filters->n] slots indexed by chain position, or NULL
	 * when no level configures any filter.  Owned by the table. */
	const struct route_filter_cfg *filter_cfgs;
	/* rate_limits (ratelimit_action.h): the route action's (owned) and its
	 * virtual host's (not owned); NULL when none. */
	struct rl_policy_list *rate_limits;
	const struct rl_policy_list *vh_rate_limits;
};

/* Compile a RouteConfiguration object (the value of HCM route_config).
 * Returns NULL with the error recorded in c (cfg_fail) on invalid input;
 * unsupported fields are errors (cfg_check_fields).  The caller owns the
 * result; the json tree is not referenced afterwards.
 *
 * filters is the HTTP filter chain the table serves (NULL: none, and any
 * typed_per_filter_config is an error).  Each typed_per_filter_config
 * entry is parsed here, at its own path, by the filter its Any's @type
 * names (FilterConfig {disabled, config, is_optional} is unwrapped); the
 * result is kept in the slot of the chain filter with that name.  Names
 * not in the chain are validated and dropped, as Envoy accepts them (route
 * tables are shared by listeners with different chains).  The table frees
 * the parsed configs with ops->free_per_route. */
struct route_config *route_config_compile(struct cfg_ctx *c, const json_t *rc,
					  const struct route_filters *filters);
void route_config_free(struct route_config *rc);       /* NULL ok */
/* Compiled route tables not yet freed, process-wide (any thread; for the
 * server.route_tables_active gauge: old tables held by streams and
 * connections show up here). */
long route_config_live(void);
const char *route_config_name(const struct route_config *rc);

/* Cluster names the table references (for validation that they exist).
 * Calls fn(name, arg) once per reference, in order. */
void route_config_for_each_cluster(const struct route_config *rc,
				   void (*fn)(const char *name, void *arg), void *arg);

/* Select the virtual host by :authority and the first matching route.
 * req holds ":authority", ":path" (with query), ":method" and headers.
 * Returns NULL if no virtual host or no route matches (*vh_out is set to the
 * matched virtual host or NULL either way). */
const struct route_entry *route_match(const struct route_config *rc,
				      const struct http_headers *req,
				      const struct virtual_host **vh_out);

/* Pick the upstream cluster of a ROUTE entry; for weighted clusters uses
 * rnd (uniform 64-bit) to choose by weight.  Returns the cluster name and,
 * if wc_out != NULL, the chosen weighted entry (or NULL). */
const char *route_pick_cluster(const struct route_entry *re, uint64_t rnd,
			       const struct weighted_cluster **wc_out);

#define ROUTE_HASH_POLICIES_MAX 64   /* hash_policy entries per route */

/* Cookies that cookie hash policies with a ttl generated for a request
 * that lacked them (Envoy's Router::Filter::addDownstreamSetCookie). */
struct route_cookies {
	uint64_t policies;                /* bit k: hash_policy[k] generated its cookie */
	uint64_t value;                   /* the value (the same for every policy) */
};

struct sockaddr;
/* The downstream connection a request came on: its peer IP text (source_ip
 * policies) and both socket addresses (generated cookie values). */
struct route_hash_conn {
	const char *peer_ip;              /* "10.0.0.1", "::1" */
	const struct sockaddr *peer, *local;
};

/* RouteAction.hash_policy: the request's hash for RING_HASH/MAGLEV
 * clusters, computed as Envoy does: each policy that yields a hash (header
 * present, cookie present and non-empty, query parameter present, peer IP
 * known) is combined as hash = rotl(hash, 1) ^ policy_hash; a terminal
 * policy that leaves a hash stops the walk.  Each policy hashes with
 * xxHash64 (seed 0): header values all of the field's values, sorted and
 * chained; cookie and query parameter values raw (no decoding); source IP
 * peer_ip's text ("10.0.0.1", "::1").  A cookie policy with a ttl whose
 * cookie is absent generates one, as Envoy: the value is the 16 lowercase
 * hex digits of xxHash64 of the connection's peer then local address
 * ("10.0.0.1:5000" / "[::1]:5000" each), so every request of a connection
 * gets the same one; the value's hash is used and the policy is recorded
 * in *gen (route_add_set_cookies).  gen == NULL or conn->peer/local NULL:
 * nothing is generated.  Returns false (hash_out untouched) when no policy
 * applies or the route has none.  Does not allocate. */
bool route_hash(const struct route_entry *re, const struct http_headers *req,
		const struct route_hash_conn *conn, struct route_cookies *gen, uint64_t *hash_out);

/* Add one "set-cookie: name=\"value\"; Max-Age=N; Path=p; attrs; HttpOnly"
 * to resp per cookie route_hash generated (gen->policies == 0: none). */
void route_add_set_cookies(const struct route_entry *re, const struct route_cookies *gen,
			   struct http_headers *resp);

/* Apply request-side transformations for a ROUTE entry to req, in Envoy's
 * order: header removals/additions for weighted cluster, route, virtual
 * host, route config (later levels win unless
 * most_specific_header_mutations_wins), then host_rewrite_literal (the
 * original host goes to x-forwarded-host only with append_x_forwarded_host),
 * then path rewrites (prefix_rewrite / regex_rewrite). */
void route_apply_request(const struct route_config *rc, const struct virtual_host *vh,
			 const struct route_entry *re, const struct weighted_cluster *wc,
			 struct http_headers *req);
/* Response-side header removals/additions (any action kind; vh/re may be NULL). */
void route_apply_response(const struct route_config *rc, const struct virtual_host *vh,
			  const struct route_entry *re, const struct weighted_cluster *wc,
			  struct http_headers *resp);

/* A standalone HeaderValueOption list (the same rules as the route table's
 * *_headers_to_add), for filters that add headers, e.g. local_ratelimit's
 * response_headers_to_add.  compile: member field of obj; absent or empty
 * gives *out = NULL and RM_OK.  The list is immutable and shareable. */
struct header_adds;
int header_adds_compile(struct cfg_ctx *c, const json_t *obj, const char *field,
			struct header_adds **out);
void header_adds_apply(const struct header_adds *a, struct http_headers *h); /* NULL ok */
void header_adds_free(struct header_adds *a);                                /* NULL ok */

/* A standalone list of HeaderMatchers (a filter's `headers` field, e.g. the
 * fault filter), compiled with the same rules as RouteMatch.headers and
 * matched as Envoy's HeaderUtility::matchHeaders: every matcher must match.
 * header_match_list_compile compiles member `name` of obj: RM_OK with *out
 * set (NULL when the member is absent or empty), RM_ERROR after cfg_fail.
 * The caller owns *out (header_match_list_free, NULL ok).  Matching a NULL
 * list is true. */
struct header_match_list;
int header_match_list_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			      struct header_match_list **out);
void header_match_list_free(struct header_match_list *l);
bool header_match_list_match(const struct header_match_list *l, const struct http_headers *req);
/* Any matcher matches (Envoy's retriable_headers rule); a NULL list is false. */
bool header_match_list_any(const struct header_match_list *l, const struct http_headers *h);

/* One HeaderMatcher object: member `name` of obj (required), compiled as
 * above into a one-element list (RBAC's header principal/permission). */
int header_match_one_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			     struct header_match_list **out);

/* One StringMatcher (envoy.type.matcher.v3.StringMatcher) outside a route,
 * with the route compiler's rules: member `name` of obj (required).  The
 * caller owns *out (string_matcher_free, NULL ok).  Matching never
 * allocates. */
struct str_matcher;
int string_matcher_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			   struct str_matcher **out);
bool string_matcher_match(const struct str_matcher *m, const char *v, size_t n);
void string_matcher_free(struct str_matcher *m);

/* For a REDIRECT entry: build the Location value for req into buf (NUL
 * terminated).  Returns its length, or -1 if it does not fit. */
int route_redirect_location(const struct route_entry *re, const struct http_headers *req,
			    bool req_is_tls, char *buf, size_t buflen);

#endif
