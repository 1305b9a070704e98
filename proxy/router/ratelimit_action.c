/* ratelimit_action.c - RateLimit actions -> descriptors (ratelimit_action.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include "ratelimit_action.h"
#include "route-t.h"

enum rla_kind {
	RLA_SOURCE_CLUSTER,
	RLA_DEST_CLUSTER,
	RLA_REQUEST_HEADERS,
	RLA_REMOTE_ADDRESS,
	RLA_GENERIC_KEY,
	RLA_HEADER_VALUE_MATCH,
	RLA_MASKED_REMOTE_ADDRESS,
	RLA_QUERY_VALUE_MATCH,
};

struct rl_action {
	enum rla_kind kind;
	char *key;                        /* owned: descriptor key */
	uint32_t key_len;
	char *value;                      /* owned: descriptor value (generic / match kinds) */
	uint32_t value_len;
	char *header;                     /* owned, lowercase: REQUEST_HEADERS */
	bool skip_if_absent;              /* REQUEST_HEADERS */
	bool expect_match;                /* *_MATCH, default true */
	struct header_match_list *hm;     /* owned: HEADER_VALUE_MATCH */
	struct qp_matcher *qm;            /* owned [nqm]: QUERY_VALUE_MATCH */
	uint32_t nqm;
	uint8_t v4_mask, v6_mask;         /* MASKED_REMOTE_ADDRESS */
};

struct rl_policy {
	uint32_t stage;
	struct rl_action *a;              /* owned [na], 1..RL_MAX_ACTIONS */
	uint32_t na;
};

struct rl_policy_list {
	struct rl_policy *p;              /* owned [n] */
	uint32_t n;
};

/* ---- compile ------------------------------------------------------------------ */

static const char *const action_kinds[] = {
	"source_cluster", "destination_cluster", "request_headers", "remote_address",
	"generic_key", "header_value_match", "masked_remote_address",
	"query_parameter_value_match",
	/* Envoy's other actions: accepted names, rejected as not supported */
	"dynamic_metadata", "metadata", "extension", NULL,
};
#define N_SUPPORTED 8

static void set_str(char **dst, uint32_t *len, const char *s)
{
	*dst = xstrdup(s);
	*len = (uint32_t)strlen(s);
}

static bool valid_value(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n' || *s == '\0')
			return false;
	return true;
}

/* Optional descriptor_key (default def) and, if value_req, a required
 * non-empty descriptor_value. */
static int key_value(struct cfg_ctx *c, const json_t *o, struct rl_action *a, const char *def,
		     bool value_req)
{
	const char *k = NULL, *v = NULL;
	if (cfg_string(c, o, "descriptor_key", &k))
		return RM_ERROR;
	set_str(&a->key, &a->key_len, k && *k ? k : def);
	if (!value_req)
		return RM_OK;
	if (cfg_string_req(c, o, "descriptor_value", &v))
		return RM_ERROR;
	if (!*v || !valid_value(v))
		return cfg_fail_field(c, o, "descriptor_value", "must be a non-empty string");
	set_str(&a->value, &a->value_len, v);
	return RM_OK;
}

static int one_action(struct cfg_ctx *c, const json_t *o, struct rl_action *a)
{
	static const char *const none[] = { NULL };
	static const char *const rhf[] = { "header_name", "descriptor_key", "skip_if_absent", NULL };
	static const char *const gkf[] = { "descriptor_value", "descriptor_key", NULL };
	static const char *const hvf[] = { "descriptor_key", "descriptor_value", "expect_match",
					   "headers", NULL };
	static const char *const qvf[] = { "descriptor_key", "descriptor_value", "expect_match",
					   "query_parameters", NULL };
	static const char *const mrf[] = { "v4_prefix_mask_len", "v6_prefix_mask_len", NULL };
	const json_t *v;
	int which = -1, rc;

	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, action_kinds))
		return RM_ERROR;
	for (int i = 0; action_kinds[i]; i++) {
		if (!cfg_get(o, action_kinds[i]))
			continue;
		if (which >= 0)
			return cfg_fail(c, "only one action may be set ('%s' and '%s' are both set)",
					action_kinds[which], action_kinds[i]);
		which = i;
	}
	if (which < 0)
		return cfg_fail(c, "an action is required (one of source_cluster, "
				"destination_cluster, request_headers, remote_address, generic_key, "
				"header_value_match, masked_remote_address, "
				"query_parameter_value_match)");
	v = cfg_enter(c, o, action_kinds[which]);
	if (which >= N_SUPPORTED)
		return cfg_fail(c, "not supported yet");
	a->kind = (enum rla_kind)which;
	a->expect_match = true;
	rc = cfg_expect_object(c, v);
	switch (a->kind) {
	case RLA_SOURCE_CLUSTER:
		rc = rc || cfg_check_fields(c, v, none);
		if (!rc)
			set_str(&a->key, &a->key_len, "source_cluster");
		break;
	case RLA_DEST_CLUSTER:
		rc = rc || cfg_check_fields(c, v, none);
		if (!rc)
			set_str(&a->key, &a->key_len, "destination_cluster");
		break;
	case RLA_REMOTE_ADDRESS:
		rc = rc || cfg_check_fields(c, v, none);
		if (!rc)
			set_str(&a->key, &a->key_len, "remote_address");
		break;
	case RLA_REQUEST_HEADERS: {
		const char *h = NULL, *k = NULL;
		rc = rc || cfg_check_fields(c, v, rhf) || cfg_string_req(c, v, "header_name", &h) ||
		     cfg_string_req(c, v, "descriptor_key", &k) ||
		     cfg_bool(c, v, "skip_if_absent", &a->skip_if_absent);
		if (!rc && !*h)
			rc = cfg_fail_field(c, v, "header_name", "must not be empty");
		if (!rc && !*k)
			rc = cfg_fail_field(c, v, "descriptor_key", "must not be empty");
		if (!rc) {
			uint32_t hl;
			set_str(&a->header, &hl, h);
			for (char *p = a->header; *p; p++)
				*p = (char)tolower((unsigned char)*p);
			set_str(&a->key, &a->key_len, k);
		}
		break;
	}
	case RLA_GENERIC_KEY:
		rc = rc || cfg_check_fields(c, v, gkf) || key_value(c, v, a, "generic_key", true);
		break;
	case RLA_HEADER_VALUE_MATCH:
		rc = rc || cfg_check_fields(c, v, hvf) || key_value(c, v, a, "header_match", true) ||
		     cfg_bool(c, v, "expect_match", &a->expect_match);
		if (!rc && !cfg_get(v, "headers"))
			rc = (cfg_enter_req(c, v, "headers"), RM_ERROR);
		rc = rc || header_match_list_compile(c, v, "headers", &a->hm);
		if (!rc && !a->hm)
			rc = cfg_fail_field(c, v, "headers", "at least one header matcher is required");
		break;
	case RLA_QUERY_VALUE_MATCH:
		rc = rc || cfg_check_fields(c, v, qvf) || key_value(c, v, a, "query_match", true) ||
		     cfg_bool(c, v, "expect_match", &a->expect_match);
		if (!rc && !cfg_get(v, "query_parameters"))
			rc = (cfg_enter_req(c, v, "query_parameters"), RM_ERROR);
		rc = rc || route_qp_list_compile(c, v, "query_parameters", &a->qm, &a->nqm);
		if (!rc && !a->nqm)
			rc = cfg_fail_field(c, v, "query_parameters",
					    "at least one query parameter matcher is required");
		break;
	case RLA_MASKED_REMOTE_ADDRESS: {
		uint32_t m4 = 32, m6 = 128;
		rc = rc || cfg_check_fields(c, v, mrf) || cfg_u32(c, v, "v4_prefix_mask_len", &m4) ||
		     cfg_u32(c, v, "v6_prefix_mask_len", &m6);
		if (!rc && m4 > 32)
			rc = cfg_fail_field(c, v, "v4_prefix_mask_len", "must be at most 32");
		if (!rc && m6 > 128)
			rc = cfg_fail_field(c, v, "v6_prefix_mask_len", "must be at most 128");
		a->v4_mask = (uint8_t)m4;
		a->v6_mask = (uint8_t)m6;
		if (!rc)
			set_str(&a->key, &a->key_len, "masked_remote_address");
		break;
	}
	}
	if (rc)
		return RM_ERROR;
	cfg_leave(c);
	return RM_OK;
}

static void action_free(struct rl_action *a)
{
	xfree(a->key);
	xfree(a->value);
	xfree(a->header);
	header_match_list_free(a->hm);
	route_qp_list_free(a->qm, a->nqm);
}

static int one_policy(struct cfg_ctx *c, const json_t *o, struct rl_policy *p)
{
	static const char *const f[] = { "stage", "disable_key", "actions", "limit",
					 "apply_on_stream_done", "hits_addend", NULL };
	static const char *const not_yet[] = { "limit", "apply_on_stream_done", "hits_addend", NULL };
	const json_t *arr;
	const char *dk = NULL;

	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_u32(c, o, "stage", &p->stage) || cfg_string(c, o, "disable_key", &dk))
		return RM_ERROR;
	for (int i = 0; not_yet[i]; i++)
		if (cfg_get(o, not_yet[i]))
			return cfg_fail_field(c, o, not_yet[i], "not supported yet");
	if (p->stage > RL_MAX_STAGE)
		return cfg_fail_field(c, o, "stage", "must be at most %d", RL_MAX_STAGE);
	if (!(arr = cfg_enter_req(c, o, "actions")))
		return RM_ERROR;
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t n = json_array_size(arr);
	if (!n)
		return cfg_fail(c, "at least one action is required");
	if (n > RL_MAX_ACTIONS)
		return cfg_fail(c, "at most %d actions are supported", RL_MAX_ACTIONS);
	p->a = xcalloc(n, sizeof(*p->a));
	p->na = (uint32_t)n;
	unsigned nmasked = 0;
	for (size_t i = 0; i < n; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		if (!e || one_action(c, e, &p->a[i]))
			return RM_ERROR;
		if (p->a[i].kind == RLA_MASKED_REMOTE_ADDRESS && ++nmasked > 2)
			return cfg_fail(c, "at most two masked_remote_address actions per rate limit");
		cfg_leave(c);
	}
	cfg_leave(c);
	return RM_OK;
}

void rl_policy_list_free(struct rl_policy_list *l)
{
	if (!l)
		return;
	for (uint32_t i = 0; i < l->n; i++) {
		for (uint32_t j = 0; j < l->p[i].na; j++)
			action_free(&l->p[i].a[j]);
		xfree(l->p[i].a);
	}
	xfree(l->p);
	xfree(l);
}

uint32_t rl_policy_list_size(const struct rl_policy_list *l)
{
	return l ? l->n : 0;
}

int rl_policy_list_compile(struct cfg_ctx *c, const json_t *obj, const char *field,
			   struct rl_policy_list **out)
{
	int depth = c->depth;
	const json_t *arr;
	struct rl_policy_list *l;

	*out = NULL;
	if (!(arr = cfg_enter(c, obj, field)))
		return c->failed ? RM_ERROR : RM_OK;
	if (cfg_expect_array(c, arr)) {
		cfg_leave(c);
		return RM_ERROR;
	}
	size_t n = json_array_size(arr);
	if (!n) {
		cfg_leave(c);
		return RM_OK;
	}
	l = xcalloc(1, sizeof(*l));
	l->p = xcalloc(n, sizeof(*l->p));
	l->n = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		if (!e || one_policy(c, e, &l->p[i])) {
			while (c->depth > depth)
				cfg_leave(c);
			rl_policy_list_free(l);
			return RM_ERROR;
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	*out = l;
	return RM_OK;
}

/* ---- per request ---------------------------------------------------------------- */

/* ip text masked to its prefix, as "a.b.c.d/len" or "x::/len".  false if
 * ip is not an address. */
static bool masked(const char *ip, unsigned m4, unsigned m6, char *buf, size_t bufsz)
{
	unsigned char a[16];
	int af = strchr(ip, ':') ? AF_INET6 : AF_INET;
	unsigned bytes = af == AF_INET ? 4 : 16, bits = af == AF_INET ? m4 : m6;
	char txt[INET6_ADDRSTRLEN];

	if (inet_pton(af, ip, a) != 1)
		return false;
	for (unsigned i = 0; i < bytes; i++) {
		unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
		a[i] &= (unsigned char)(keep ? 0xffu << (8 - keep) : 0);
	}
	if (!inet_ntop(af, a, txt, sizeof(txt)))
		return false;
	return snprintf(buf, bufsz, "%s/%u", txt, bits) < (int)bufsz;
}

/* Apply one action: true if it produced its entry (or was skipped). */
static bool apply(const struct rl_action *a, const struct rl_input *in, struct rl_descriptor *d)
{
	struct rl_entry *e = &d->e[d->n];
	const char *v = NULL, *path;
	size_t n = 0, plen;

	switch (a->kind) {
	case RLA_SOURCE_CLUSTER:
		v = in->local_cluster;
		break;
	case RLA_DEST_CLUSTER:
		v = in->dest_cluster;
		break;
	case RLA_REMOTE_ADDRESS:
		v = in->peer_ip;
		break;
	case RLA_REQUEST_HEADERS:
		v = hdrs_get(in->req, a->header, &n);
		if (!v)
			return a->skip_if_absent;
		break;
	case RLA_GENERIC_KEY:
		v = a->value;
		n = a->value_len;
		break;
	case RLA_HEADER_VALUE_MATCH:
		if (header_match_list_match(a->hm, in->req) != a->expect_match)
			return false;
		v = a->value;
		n = a->value_len;
		break;
	case RLA_QUERY_VALUE_MATCH:
		path = hdrs_get(in->req, ":path", &plen);
		if (route_qp_list_match(a->qm, a->nqm, path ? path : "", path ? plen : 0) !=
		    a->expect_match)
			return false;
		v = a->value;
		n = a->value_len;
		break;
	case RLA_MASKED_REMOTE_ADDRESS: {
		/* at most two per descriptor use the buffers; more reuse the last */
		unsigned slot = 0;
		for (uint32_t i = 0; i < d->n; i++)
			if (d->e[i].value == d->buf[0])
				slot = 1;
		if (!in->peer_ip ||
		    !masked(in->peer_ip, a->v4_mask, a->v6_mask, d->buf[slot], sizeof(d->buf[0])))
			return false;
		v = d->buf[slot];
		break;
	}
	}
	if (!v)
		return false;
	if (a->kind == RLA_SOURCE_CLUSTER || a->kind == RLA_DEST_CLUSTER ||
	    a->kind == RLA_REMOTE_ADDRESS || a->kind == RLA_MASKED_REMOTE_ADDRESS)
		n = strlen(v);
	if (!n && (a->kind == RLA_SOURCE_CLUSTER || a->kind == RLA_DEST_CLUSTER ||
		   a->kind == RLA_REMOTE_ADDRESS))
		return false;
	e->key = a->key;
	e->key_len = a->key_len;
	e->value = v;
	e->value_len = (uint32_t)n;
	d->n++;
	return true;
}

unsigned rl_policy_list_descriptors(const struct rl_policy_list *l, uint32_t stage,
				    const struct rl_input *in,
				    bool (*fn)(const struct rl_descriptor *d, void *arg), void *arg)
{
	struct rl_descriptor d;
	unsigned produced = 0;

	if (!l)
		return 0;
	for (uint32_t i = 0; i < l->n; i++) {
		const struct rl_policy *p = &l->p[i];
		bool ok = true;
		if (p->stage != stage)
			continue;
		d.n = 0;
		for (uint32_t j = 0; ok && j < p->na; j++)
			ok = apply(&p->a[j], in, &d);
		if (!ok || !d.n)
			continue;
		produced++;
		if (!fn(&d, arg))
			break;
	}
	return produced;
}
