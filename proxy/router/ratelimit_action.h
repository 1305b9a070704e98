/* ratelimit_action.h - route rate_limits (envoy.config.route.v3.RateLimit)
 * and the descriptors they produce for a request.  Pure: no I/O, no
 * allocation on the request path; the compiled list is immutable and shared
 * by every worker (it lives in the route table or a filter config).
 *
 * Supported: RateLimit {stage (0..10), disable_key (accepted; no runtime
 * layer), actions[]}; actions: source_cluster {}, destination_cluster {},
 * request_headers {header_name, descriptor_key, skip_if_absent},
 * remote_address {}, generic_key {descriptor_value, descriptor_key},
 * header_value_match {descriptor_key, descriptor_value, expect_match,
 * headers}, masked_remote_address {v4_prefix_mask_len, v6_prefix_mask_len},
 * query_parameter_value_match {descriptor_key, descriptor_value,
 * expect_match, query_parameters}.  Anything else (RateLimit.limit,
 * apply_on_stream_done, hits_addend, the metadata / extension / mask
 * actions) is an error "not supported yet" with its field path.
 *
 * Envoy semantics: the actions of one RateLimit are applied in order; each
 * appends one (key, value) entry.  If an action cannot produce its entry
 * (header absent without skip_if_absent, a header_value_match whose result
 * differs from expect_match, no destination cluster, ...) the RateLimit
 * yields no descriptor at all.  request_headers with skip_if_absent just
 * adds nothing.  A RateLimit whose actions all added nothing yields nothing. */
#ifndef REMORA_ROUTER_RATELIMIT_ACTION_H
#define REMORA_ROUTER_RATELIMIT_ACTION_H

#include "../config/cfg.h"
#include "../http/headers.h"

/* Bounds checked at compile time, so a descriptor fits on the stack. */
#define RL_MAX_ACTIONS 16          /* actions per RateLimit */
#define RL_MAX_STAGE 10

struct rl_policy_list;    /* opaque, immutable */

/* One descriptor entry.  key is config-owned; value points into the request
 * headers, the config or the descriptor's own buffer: valid only during the
 * callback. */
struct rl_entry {
	const char *key;
	uint32_t key_len;
	const char *value;
	uint32_t value_len;
};

struct rl_descriptor {
	uint32_t n;                               /* entries, >= 1 */
	struct rl_entry e[RL_MAX_ACTIONS];
	char buf[2][64];                          /* remote-address texts */
};

/* What the actions read from the request. */
struct rl_input {
	const struct http_headers *req;           /* request headers (":path" with query) */
	const char *peer_ip;                      /* downstream address text, or NULL */
	const char *local_cluster;                /* --service-cluster / node.cluster, or NULL */
	const char *dest_cluster;                 /* the route's single cluster, or NULL */
};

/* Compile list member `field` of obj (repeated RateLimit).  RM_OK with *out
 * (NULL when absent or empty), RM_ERROR after cfg_fail.  Caller frees. */
int rl_policy_list_compile(struct cfg_ctx *c, const json_t *obj, const char *field,
			   struct rl_policy_list **out);
void rl_policy_list_free(struct rl_policy_list *l);                 /* NULL ok */
uint32_t rl_policy_list_size(const struct rl_policy_list *l);       /* NULL: 0 */

/* For each RateLimit of l whose stage is `stage` and that yields a
 * descriptor for in, in order, call fn(d, arg); fn returns false to stop.
 * Returns the number of descriptors produced (up to a stop).  Does not
 * allocate; d lives on the caller's stack. */
unsigned rl_policy_list_descriptors(const struct rl_policy_list *l, uint32_t stage,
				    const struct rl_input *in,
				    bool (*fn)(const struct rl_descriptor *d, void *arg), void *arg);

#endif
