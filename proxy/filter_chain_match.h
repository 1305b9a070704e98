/* filter_chain_match.h - Envoy's filter_chain_match: parse the criteria of a
 * listener's filter chains and pick the chain for a new connection.
 *
 * Criteria are compared level by level in Envoy's order: destination port,
 * destination IP (prefix_ranges), server name (SNI), transport protocol,
 * application protocols (ALPN), direct source IP, source type, source IP,
 * source port.  At each level the most specific criterion that matches wins
 * (an exact port over no port, the longest prefix, an exact server name over
 * the longest "*." wildcard over none) and the chains that lost are never
 * reconsidered at a later level, as in Envoy: no backtracking.  No chain
 * left: the listener's default_filter_chain, else the connection is closed. */
#ifndef REMORA_FILTER_CHAIN_MATCH_H
#define REMORA_FILTER_CHAIN_MATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include "config/cfg.h"

struct cidr {
	int family;                          /* AF_INET / AF_INET6 */
	uint8_t addr[16];                    /* masked to len bits */
	uint8_t len;                         /* prefix length */
};

enum fcm_source_type { FCM_SRC_ANY = 0, FCM_SRC_LOCAL = 1, FCM_SRC_EXTERNAL = 2 };

/* One chain's criteria (all optional; absent = matches anything). */
struct fc_match {
	uint32_t dst_port;                   /* 0 = any */
	struct cidr *dst;                    /* owned [ndst]: prefix_ranges */
	size_t ndst;
	char **server_names;                 /* owned [nsn], lowercase; "*.x" wildcards */
	size_t nsn;
	char *transport_protocol;            /* owned, NULL = any */
	char **app_protocols;                /* owned [nap] */
	size_t nap;
	struct cidr *direct_src;             /* owned [ndirect]: direct_source_prefix_ranges */
	size_t ndirect;
	int source_type;                     /* enum fcm_source_type */
	struct cidr *src;                    /* owned [nsrc]: source_prefix_ranges */
	size_t nsrc;
	uint32_t *src_ports;                 /* owned [nsrc_ports] */
	size_t nsrc_ports;
};

/* What is known about a new connection when its chain is chosen. */
struct fcm_input {
	const struct sockaddr *local;        /* destination (restored original dst if any) */
	const struct sockaddr *peer;
	const char *server_name;             /* SNI, "" or NULL if none */
	const char *transport_protocol;      /* "raw_buffer" / "tls" */
	const uint8_t *alpn;                 /* ALPN wire format: len-prefixed strings */
	size_t alpn_len;
};

/* Parse a filter_chain_match object into m (zeroed by the caller). */
int fcm_parse(struct cfg_ctx *c, const json_t *j, struct fc_match *m);
void fcm_free(struct fc_match *m);
/* Parse "10.0.0.0" + prefix_len into a masked cidr.  RM_OK / RM_ERROR. */
int cidr_parse(const char *addr, uint32_t len, struct cidr *out);
/* Does sa (AF_INET/AF_INET6) fall in the range? */
bool cidr_contains(const struct cidr *r, const struct sockaddr *sa);
/* Would some connection match both a and b equally (Envoy rejects such
 * listeners: "multiple filter chains with the same matching rules")? */
bool fcm_overlap(const struct fc_match *a, const struct fc_match *b);

/* Pick among n chains with criteria m[0..n-1].  Returns the index or -1.
 * No allocation (n <= FCM_MAX_CHAINS, checked by the config). */
#define FCM_MAX_CHAINS 4096
long fcm_select(const struct fc_match *m, size_t n, const struct fcm_input *in);

/* listener_filters[].filter_disabled (ListenerFilterChainMatchPredicate):
 * skip the filter for connections the predicate matches.  Supported:
 * or_match, and_match, not_match, any_match, destination_port_range. */
enum lf_pred_kind { LFP_ANY, LFP_OR, LFP_AND, LFP_NOT, LFP_PORT_RANGE };
struct lf_pred {
	int kind;                            /* enum lf_pred_kind */
	struct lf_pred *subs;                /* owned [nsubs] (OR, AND: n; NOT: 1) */
	size_t nsubs;
	uint32_t start, end;                 /* PORT_RANGE: [start, end) */
};
/* Parse into *p (zeroed by the caller). */
int lf_pred_parse(struct cfg_ctx *c, const json_t *j, struct lf_pred *p);
void lf_pred_free(struct lf_pred *p);     /* frees what p owns, not p */
bool lf_pred_match(const struct lf_pred *p, uint16_t dst_port);

#endif
