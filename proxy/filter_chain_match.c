/* filter_chain_match.c - filter_chain_match parsing and chain selection. */
#include "filter_chain_match.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <strings.h>
#include <netinet/in.h>
#include "common.h"

/* ---- CIDR ranges ------------------------------------------------------------------ */

static void cidr_mask(uint8_t *a, unsigned len, unsigned nbytes)
{
	for (unsigned i = 0; i < nbytes; i++) {
		unsigned bits = len > i * 8 ? len - i * 8 : 0;
		if (bits < 8)
			a[i] &= (uint8_t)(0xff00u >> bits);
	}
}

int cidr_parse(const char *addr, uint32_t len, struct cidr *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		if (len > 32)
			return RM_ERROR;
		out->family = AF_INET;
		cidr_mask(out->addr, len, 4);
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		if (len > 128)
			return RM_ERROR;
		out->family = AF_INET6;
		cidr_mask(out->addr, len, 16);
	} else {
		return RM_ERROR;
	}
	out->len = (uint8_t)len;
	return RM_OK;
}

bool cidr_contains(const struct cidr *r, const struct sockaddr *sa)
{
	uint8_t a[16];
	if (!sa || sa->sa_family != r->family)
		return false;
	if (sa->sa_family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		cidr_mask(a, r->len, 4);
		return !memcmp(a, r->addr, 4);
	}
	memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	cidr_mask(a, r->len, 16);
	return !memcmp(a, r->addr, 16);
}

static bool cidr_equal(const struct cidr *a, const struct cidr *b)
{
	return a->family == b->family && a->len == b->len && !memcmp(a->addr, b->addr, 16);
}

/* ---- parsing ------------------------------------------------------------------------- */

static int parse_cidrs(struct cfg_ctx *c, const json_t *j, const char *field, struct cidr **out,
		       size_t *n)
{
	static const char *const f[] = { "address_prefix", "prefix_len", NULL };
	const json_t *arr = cfg_enter(c, j, field);
	if (!arr)
		return RM_OK;
	if (cfg_expect_array(c, arr))
		goto error;
	*out = xcalloc(json_array_size(arr) + 1, sizeof(**out));
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		const char *a = NULL;
		uint32_t len = 0;
		int rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, f) ||
			 cfg_string_req(c, e, "address_prefix", &a) || cfg_u32(c, e, "prefix_len", &len);
		if (!rc && cidr_parse(a, len, &(*out)[*n]))
			rc = cfg_fail(c, "invalid CIDR range '%s/%u'", a, len);
		cfg_leave(c);
		if (rc)
			goto error;
		(*n)++;
	}
	cfg_leave(c);
	return RM_OK;
error:
	cfg_leave(c);
	return RM_ERROR;
}

static int parse_strings(struct cfg_ctx *c, const json_t *j, const char *field, char ***out,
			 size_t *n, bool server_names)
{
	const json_t *arr = cfg_enter(c, j, field);
	if (!arr)
		return RM_OK;
	if (cfg_expect_array(c, arr))
		goto error;
	*out = xcalloc(json_array_size(arr) + 1, sizeof(**out));
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		const char *s = json_string_value(e);
		int rc = RM_OK;
		if (!s || !*s)
			rc = cfg_fail(c, "expected a non-empty string");
		else if (server_names && strchr(s, '*') && (strncmp(s, "*.", 2) || strchr(s + 1, '*')))
			rc = cfg_fail(c, "server name '%s': only a leading \"*.\" wildcard is supported", s);
		cfg_leave(c);
		if (rc)
			goto error;
		char *v = xstrdup(s);
		if (server_names)
			for (char *p = v; *p; p++)
				*p = (char)tolower((unsigned char)*p);
		(*out)[(*n)++] = v;
	}
	cfg_leave(c);
	return RM_OK;
error:
	cfg_leave(c);
	return RM_ERROR;
}

int fcm_parse(struct cfg_ctx *c, const json_t *j, struct fc_match *m)
{
	static const char *const f[] = { "destination_port", "prefix_ranges", "server_names",
					 "transport_protocol", "application_protocols",
					 "direct_source_prefix_ranges", "source_type",
					 "source_prefix_ranges", "source_ports", NULL };
	static const char *const types[] = { "ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL" };
	const char *tp = NULL;
	const json_t *ports;

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	    cfg_u32(c, j, "destination_port", &m->dst_port) ||
	    parse_cidrs(c, j, "prefix_ranges", &m->dst, &m->ndst) ||
	    parse_strings(c, j, "server_names", &m->server_names, &m->nsn, true) ||
	    cfg_string(c, j, "transport_protocol", &tp) ||
	    parse_strings(c, j, "application_protocols", &m->app_protocols, &m->nap, false) ||
	    parse_cidrs(c, j, "direct_source_prefix_ranges", &m->direct_src, &m->ndirect) ||
	    cfg_enum(c, j, "source_type", types, 3, &m->source_type) ||
	    parse_cidrs(c, j, "source_prefix_ranges", &m->src, &m->nsrc))
		return RM_ERROR;
	if (m->dst_port > 65535)
		return cfg_fail_field(c, j, "destination_port", "expected a port in 0..65535");
	if (tp && *tp)
		m->transport_protocol = xstrdup(tp);
	if ((ports = cfg_enter(c, j, "source_ports"))) {
		int rc = cfg_expect_array(c, ports);
		if (!rc)
			m->src_ports = xcalloc(json_array_size(ports) + 1, sizeof(*m->src_ports));
		for (size_t i = 0; !rc && i < json_array_size(ports); i++) {
			const json_t *e = cfg_enter_idx(c, ports, i);
			json_int_t v = json_is_integer(e) ? json_integer_value(e) : -1;
			if (json_is_string(e))   /* proto3 JSON may quote integers */
				v = strtol(json_string_value(e), NULL, 10);
			if (v < 1 || v > 65535)
				rc = cfg_fail(c, "expected a port in 1..65535");
			else
				m->src_ports[m->nsrc_ports++] = (uint32_t)v;
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	return RM_OK;
}

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void fcm_free(struct fc_match *m)
{
	if (!m)
		return;
	free(m->dst);
	free_strings(m->server_names, m->nsn);
	free(m->transport_protocol);
	free_strings(m->app_protocols, m->nap);
	free(m->direct_src);
	free(m->src);
	free(m->src_ports);
	memset(m, 0, sizeof(*m));
}

/* ---- overlap (config validation) ------------------------------------------------------ */

static bool cidrs_overlap(const struct cidr *a, size_t na, const struct cidr *b, size_t nb)
{
	if (!na || !nb)
		return !na && !nb;
	for (size_t i = 0; i < na; i++)
		for (size_t k = 0; k < nb; k++)
			if (cidr_equal(&a[i], &b[k]))
				return true;
	return false;
}

static bool strings_overlap(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (!na || !nb)
		return !na && !nb;
	for (size_t i = 0; i < na; i++)
		for (size_t k = 0; k < nb; k++)
			if (!strcmp(a[i], b[k]))
				return true;
	return false;
}

bool fcm_overlap(const struct fc_match *a, const struct fc_match *b)
{
	bool ports = !a->nsrc_ports && !b->nsrc_ports;
	for (size_t i = 0; i < a->nsrc_ports; i++)
		for (size_t k = 0; k < b->nsrc_ports; k++)
			ports |= a->src_ports[i] == b->src_ports[k];
	return a->dst_port == b->dst_port && cidrs_overlap(a->dst, a->ndst, b->dst, b->ndst) &&
	       strings_overlap(a->server_names, a->nsn, b->server_names, b->nsn) &&
	       (a->transport_protocol ? b->transport_protocol &&
				       !strcmp(a->transport_protocol, b->transport_protocol)
				 : !b->transport_protocol) &&
	       strings_overlap(a->app_protocols, a->nap, b->app_protocols, b->nap) &&
	       cidrs_overlap(a->direct_src, a->ndirect, b->direct_src, b->ndirect) &&
	       a->source_type == b->source_type && cidrs_overlap(a->src, a->nsrc, b->src, b->nsrc) &&
	       ports;
}

/* ---- selection ------------------------------------------------------------------------------ */

/* Each level scores a chain: -1 no match, else higher = more specific. */
enum fcm_level { L_DST_PORT, L_DST_IP, L_SNI, L_TRANSPORT, L_ALPN, L_DIRECT_SRC, L_SRC_TYPE,
		 L_SRC_IP, L_SRC_PORT, L_N };

static long score_cidrs(const struct cidr *r, size_t n, const struct sockaddr *sa)
{
	long best = -1;
	if (!n)
		return 0;   /* none configured: Envoy's 0.0.0.0/0 and ::/0 */
	for (size_t i = 0; i < n; i++)
		if (r[i].len >= best && cidr_contains(&r[i], sa))
			best = r[i].len;
	return best;
}

static long score_sni(const struct fc_match *m, const char *sni)
{
	long best = -1;
	if (!m->nsn)
		return 0;
	if (!sni || !*sni)
		return -1;
	size_t sl = strlen(sni);
	for (size_t i = 0; i < m->nsn; i++) {
		const char *p = m->server_names[i];
		if (p[0] != '*') {
			if (!strcasecmp(p, sni))
				return 100000;   /* exact beats any wildcard */
			continue;
		}
		/* "*.example.com" matches "a.example.com" and "a.b.example.com",
		 * not "example.com"; the longest suffix is the most specific */
		size_t pl = strlen(p + 1);   /* ".example.com" */
		if (sl > pl && !strcasecmp(sni + sl - pl, p + 1) && (long)pl > best)
			best = (long)pl;
	}
	return best;
}

static long score_alpn(const struct fc_match *m, const struct fcm_input *in)
{
	if (!m->nap)
		return 0;
	/* Envoy walks the connection's protocols in order: the first one any
	 * chain lists picks the chains; an earlier protocol scores higher. */
	long k = 0;
	for (size_t off = 0; off < in->alpn_len; k++) {
		size_t l = in->alpn[off];
		const char *p = (const char *)in->alpn + off + 1;
		if (off + 1 + l > in->alpn_len)
			break;
		for (size_t i = 0; i < m->nap; i++)
			if (strlen(m->app_protocols[i]) == l && !memcmp(m->app_protocols[i], p, l))
				return 100000 - k;
		off += 1 + l;
	}
	return -1;
}

static bool peer_is_local(const struct fcm_input *in)
{
	const struct sockaddr *p = in->peer, *l = in->local;
	if (!p)
		return false;
	if (p->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)p)->sin_addr.s_addr);
		if ((a >> 24) == 127)
			return true;
		return l && l->sa_family == AF_INET &&
		       ((const struct sockaddr_in *)l)->sin_addr.s_addr ==
			       ((const struct sockaddr_in *)p)->sin_addr.s_addr;
	}
	if (p->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)p)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127)
			return true;
		return l && l->sa_family == AF_INET6 &&
		       !memcmp(a, &((const struct sockaddr_in6 *)l)->sin6_addr, 16);
	}
	return false;
}

static uint16_t port_of(const struct sockaddr *sa)
{
	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

static long score(const struct fc_match *m, int level, const struct fcm_input *in, bool local)
{
	switch (level) {
	case L_DST_PORT:
		return !m->dst_port ? 0 : m->dst_port == port_of(in->local) ? 1 : -1;
	case L_DST_IP:
		return score_cidrs(m->dst, m->ndst, in->local);
	case L_SNI:
		return score_sni(m, in->server_name);
	case L_TRANSPORT:
		return !m->transport_protocol ? 0
		       : in->transport_protocol && !strcmp(m->transport_protocol, in->transport_protocol)
			       ? 1 : -1;
	case L_ALPN:
		return score_alpn(m, in);
	case L_DIRECT_SRC:
		return score_cidrs(m->direct_src, m->ndirect, in->peer);
	case L_SRC_TYPE:
		if (m->source_type == FCM_SRC_ANY)
			return 0;
		return (m->source_type == FCM_SRC_LOCAL) == local ? 1 : -1;
	case L_SRC_IP:
		return score_cidrs(m->src, m->nsrc, in->peer);
	default:
		if (!m->nsrc_ports)
			return 0;
		for (size_t i = 0; i < m->nsrc_ports; i++)
			if (m->src_ports[i] == port_of(in->peer))
				return 1;
		return -1;
	}
}

long fcm_select(const struct fc_match *m, size_t n, const struct fcm_input *in)
{
	uint16_t cand[FCM_MAX_CHAINS];
	size_t nc = 0;
	bool local = false, local_known = false;

	if (n > FCM_MAX_CHAINS)
		n = FCM_MAX_CHAINS;
	for (size_t i = 0; i < n; i++)
		cand[nc++] = (uint16_t)i;
	for (int level = 0; level < L_N && nc; level++) {
		long best = -1;
		size_t keep = 0;
		if (level == L_SRC_TYPE && !local_known) {
			local = peer_is_local(in);
			local_known = true;
		}
		for (size_t i = 0; i < nc; i++) {
			long s = score(&m[cand[i]], level, in, local);
			if (s > best)
				best = s;
		}
		if (best < 0)
			return -1;
		for (size_t i = 0; i < nc; i++)
			if (score(&m[cand[i]], level, in, local) == best)
				cand[keep++] = cand[i];
		nc = keep;
	}
	return nc ? cand[0] : -1;
}

/* ---- listener filter predicates ------------------------------------------------------------- */

#define LF_PRED_MAX_DEPTH 16

static int pred_parse(struct cfg_ctx *c, const json_t *j, struct lf_pred *p, int depth)
{
	static const char *const f[] = { "or_match", "and_match", "not_match", "any_match",
					  "destination_port_range", NULL };
	static const char *const setf[] = { "rules", NULL };
	static const char *const rangef[] = { "start", "end", NULL };
	const json_t *v;
	int n = 0;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f))
		return RM_ERROR;
	for (const char *const *k = f; *k; k++)
		n += cfg_get(j, *k) != NULL;
	if (n != 1)
		return cfg_fail(c, "exactly one of or_match, and_match, not_match, any_match, "
				   "destination_port_range is required");
	if (depth > LF_PRED_MAX_DEPTH)
		return cfg_fail(c, "predicate nested too deeply");
	if (cfg_get(j, "any_match")) {
		bool any = false;
		if (cfg_bool(c, j, "any_match", &any))
			return RM_ERROR;
		if (!any)
			return cfg_fail_field(c, j, "any_match", "must be true");
		p->kind = LFP_ANY;
		return RM_OK;
	}
	if ((v = cfg_enter(c, j, "not_match"))) {
		p->kind = LFP_NOT;
		p->subs = xcalloc(1, sizeof(*p->subs));
		p->nsubs = 1;
		int rc = pred_parse(c, v, p->subs, depth + 1);
		cfg_leave(c);
		return rc;
	}
	if ((v = cfg_enter(c, j, "destination_port_range"))) {
		int64_t start = 0, end = 0;
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, rangef);
		const json_t *sv = rc ? NULL : cfg_get(v, "start"), *ev = rc ? NULL : cfg_get(v, "end");
		/* Int64 in proto3 JSON: a number or a decimal string */
		if (!rc) {
			start = json_is_string(sv) ? strtoll(json_string_value(sv), NULL, 10)
						   : json_integer_value(sv);
			end = json_is_string(ev) ? strtoll(json_string_value(ev), NULL, 10)
						 : json_integer_value(ev);
			if (start < 0 || end > 65536 || start >= end)
				rc = cfg_fail(c, "expected 0 <= start < end <= 65536 (end exclusive)");
		}
		cfg_leave(c);
		p->kind = LFP_PORT_RANGE;
		p->start = (uint32_t)start;
		p->end = (uint32_t)end;
		return rc;
	}
	const char *set = cfg_get(j, "or_match") ? "or_match" : "and_match";
	p->kind = set[0] == 'o' ? LFP_OR : LFP_AND;
	v = cfg_enter(c, j, set);
	int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, setf);
	const json_t *rules = rc ? NULL : cfg_enter_req(c, v, "rules");
	if (!rc && !rules)
		rc = RM_ERROR;
	if (!rc) {
		rc = cfg_expect_array(c, rules);
		if (!rc && json_array_size(rules) < 2)
			rc = cfg_fail(c, "at least two rules are required");
		if (!rc) {
			p->subs = xcalloc(json_array_size(rules), sizeof(*p->subs));
			for (size_t i = 0; !rc && i < json_array_size(rules); i++) {
				rc = pred_parse(c, cfg_enter_idx(c, rules, i), &p->subs[i], depth + 1);
				p->nsubs = i + 1;
				cfg_leave(c);
			}
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

int lf_pred_parse(struct cfg_ctx *c, const json_t *j, struct lf_pred *p)
{
	return pred_parse(c, j, p, 0);
}

void lf_pred_free(struct lf_pred *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nsubs; i++)
		lf_pred_free(&p->subs[i]);
	free(p->subs);
	p->subs = NULL;
	p->nsubs = 0;
}

bool lf_pred_match(const struct lf_pred *p, uint16_t port)
{
	switch (p->kind) {
	case LFP_ANY:
		return true;
	case LFP_NOT:
		return !lf_pred_match(&p->subs[0], port);
	case LFP_PORT_RANGE:
		return port >= p->start && port < p->end;
	case LFP_OR:
		for (size_t i = 0; i < p->nsubs; i++)
			if (lf_pred_match(&p->subs[i], port))
				return true;
		return false;
	default:
		for (size_t i = 0; i < p->nsubs; i++)
			if (!lf_pred_match(&p->subs[i], port))
				return false;
		return true;
	}
}
