/* route.c - compiling a RouteConfiguration (route.h) into the immutable
 * table of route-t.h.  Matching and request/response transformations live in
 * route_match.c.
 *
 * Every object is checked with cfg_check_fields, so a field this file does
 * not implement is an error naming its path.  On error the half-built table
 * is freed by route_config_free (arrays are allocated zeroed and their counts
 * set before they are filled), and the walker's path stack is restored to
 * where it was on entry. */
#include "route-t.h"
#include "ratelimit_action.h"

#include <ctype.h>

#define HDR_MAX_LEN 16384           /* Envoy's HeaderValue key/value limit */
#define DIRECT_BODY_MAX_DEFAULT 4096   /* max_direct_response_body_size_bytes */
#define DEFAULT_TIMEOUT_MS 15000

/* ------------------------------------------------------------------------
 * Domain table */

/* ASCII-lowercase 8 bytes at once: a byte in 'A'..'Z' gets 0x20 added. */
static inline uint64_t lower8(uint64_t x)
{
	const uint64_t hi = 0x8080808080808080ull;
	uint64_t low7 = x & ~hi;
	uint64_t ge_a = low7 + 0x3f3f3f3f3f3f3f3full;    /* high bit set if byte >= 'A' */
	uint64_t gt_z = low7 + 0x2525252525252525ull;    /* high bit set if byte > 'Z' */
	uint64_t upper = (ge_a ^ gt_z) & ~x & hi;

	return x | (upper >> 2);
}

/* Up to 8 bytes of s as a word, zero-padded (same layout for equal input). */
static inline uint64_t load8(const char *s, size_t n)
{
	uint64_t w = 0;

	if (n >= 8) {
		memcpy(&w, s, 8);
		return w;
	}
	for (size_t i = 0; i < n; i++)
		w |= (uint64_t)(unsigned char)s[i] << (8 * i);
	return w;
}

/* Case-insensitive hash of s, 8 bytes per step (hosts are hashed on every
 * request, once per distinct wildcard length). */
uint32_t route_dom_hash(enum dom_kind kind, const char *s, size_t len)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)kind << 56) ^ len;

	for (size_t i = 0; i < len; i += 8) {
		h = (h ^ lower8(load8(s + i, len - i))) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	return (uint32_t)h;
}

/* key is stored lowercase; s is compared lowercased. */
static inline bool dom_eq(const char *key, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i += 8)
		if (load8(key + i, len - i) != lower8(load8(s + i, len - i)))
			return false;
	return true;
}

struct virtual_host *route_dom_find(const struct dom_table *t, enum dom_kind kind,
				    const char *s, size_t len)
{
	if (!t->n)
		return NULL;
	uint32_t h = route_dom_hash(kind, s, len);
	for (uint32_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		const struct dom_slot *sl = &t->slots[i];
		if (!sl->key)
			return NULL;
		if (sl->hash == h && sl->kind == kind && sl->len == len && dom_eq(sl->key, s, len))
			return sl->vh;
	}
}

static void dom_put_slot(struct dom_slot *slots, uint32_t cap, const struct dom_slot *src)
{
	uint32_t i = src->hash & (cap - 1);

	while (slots[i].key)
		i = (i + 1) & (cap - 1);
	slots[i] = *src;
}

/* Insert lowercase key (copied); RM_DECLINED if (kind, key) is present. */
static int dom_insert(struct dom_table *t, enum dom_kind kind, const char *key, size_t len,
		      struct virtual_host *vh)
{
	if (route_dom_find(t, kind, key, len))
		return RM_DECLINED;
	if ((t->n + 1) * 2 > t->cap) {
		uint32_t cap = t->cap ? t->cap * 2 : 16;
		struct dom_slot *slots = xcalloc(cap, sizeof(*slots));
		for (uint32_t i = 0; i < t->cap; i++)
			if (t->slots[i].key)
				dom_put_slot(slots, cap, &t->slots[i]);
		xfree(t->slots);
		t->slots = slots;
		t->cap = cap;
	}
	struct dom_slot sl = {
		.key = xstrndup(key, len), .len = (uint32_t)len,
		.hash = route_dom_hash(kind, key, len), .kind = kind, .vh = vh,
	};
	dom_put_slot(t->slots, t->cap, &sl);
	t->n++;
	return RM_OK;
}

/* Add len to a descending list of distinct lengths. */
static void add_len(uint32_t **lens, uint32_t *n, uint32_t len)
{
	uint32_t i = 0;

	while (i < *n && (*lens)[i] > len)
		i++;
	if (i < *n && (*lens)[i] == len)
		return;
	*lens = xrealloc(*lens, (*n + 1) * sizeof(**lens));
	memmove(*lens + i + 1, *lens + i, (*n - i) * sizeof(**lens));
	(*lens)[i] = len;
	(*n)++;
}

/* ------------------------------------------------------------------------
 * Freeing (accepts half-built tables) */

static void sm_free(struct str_matcher *sm)
{
	xfree(sm->s);
	route_re_free(sm->re);
}

static void hdr_ops_free(struct hdr_ops *o)
{
	for (uint32_t i = 0; i < o->nremove; i++)
		xfree(o->remove[i]);
	xfree(o->remove);
	for (uint32_t i = 0; i < o->nadd; i++) {
		xfree(o->add[i].key);
		xfree(o->add[i].value);
	}
	xfree(o->add);
}

static void hdr_mut_free(struct hdr_mutations *m)
{
	if (!m)
		return;
	hdr_ops_free(&m->req);
	hdr_ops_free(&m->resp);
}

static void route_free_one(struct route *r)
{
	struct route_entry *e = &r->e;

	xfree(e->name);
	xfree(e->cluster);
	for (uint32_t i = 0; i < e->nwclusters; i++) {
		xfree(e->wclusters[i].name);
		hdr_mut_free(e->wclusters[i].headers);
		xfree(e->wclusters[i].headers);
	}
	xfree(e->wclusters);
	xfree(e->direct_body);
	xfree(r->pstr);
	route_re_free(r->pre);
	for (uint32_t i = 0; i < r->nhm; i++) {
		xfree(r->hm[i].name);
		sm_free(&r->hm[i].sm);
	}
	xfree(r->hm);
	for (uint32_t i = 0; i < r->nqm; i++) {
		xfree(r->qm[i].name);
		sm_free(&r->qm[i].sm);
	}
	xfree(r->qm);
	xfree(r->prefix_rewrite);
	route_re_free(r->rewrite_re);
	xfree(r->rewrite_sub);
	xfree(r->host_rewrite);
	for (uint32_t i = 0; i < r->nhp; i++) {
		xfree(r->hp[i].name);
		xfree(r->hp[i].set_cookie_tail);
	}
	xfree(r->hp);
	xfree(r->scheme_redirect);
	xfree(r->host_redirect);
	xfree(r->path_redirect);
	hdr_mut_free(&r->hdrs);
	retry_policy_free(r->own_retry);
	rl_policy_list_free(e->rate_limits);
}

static long live_tables;   /* atomic */

long route_config_live(void)
{
	return __atomic_load_n(&live_tables, __ATOMIC_RELAXED);
}

void route_config_free(struct route_config *rc)
{
	if (!rc)
		return;
	__atomic_sub_fetch(&live_tables, 1, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < rc->nvhosts; i++) {
		struct virtual_host *vh = &rc->vhosts[i];
		for (uint32_t j = 0; j < vh->nroutes; j++) {
			route_pf_free(rc, vh->routes[j].pfc);
			xfree(vh->routes[j].merged);
			route_free_one(&vh->routes[j]);
		}
		route_pf_free(rc, vh->pfc);
		xfree(vh->routes);
		xfree(vh->name);
		retry_policy_free(vh->retry);
		rl_policy_list_free(vh->rate_limits);
		hdr_mut_free(&vh->hdrs);
	}
	xfree(rc->vhosts);
	route_pf_free(rc, rc->pfc);
	xfree(rc->pf_ops);
	hdr_mut_free(&rc->hdrs);
	for (uint32_t i = 0; i < rc->domains.cap; i++)
		xfree(rc->domains.slots[i].key);
	xfree(rc->domains.slots);
	xfree(rc->suffix_lens);
	xfree(rc->prefix_lens);
	xfree(rc->name);
	xfree(rc);
}

/* ------------------------------------------------------------------------
 * Small compile helpers */

/* Exactly one (required) or at most one of names[] may be set in obj.
 * *which = its index, or -1 if none. */
static int oneof(struct cfg_ctx *c, const json_t *obj, const char *const *names, bool required,
		 int *which)
{
	char list[256];
	size_t len = 0;

	list[0] = '\0';
	for (int i = 0; names[i] && len < sizeof(list) - 1; i++) {
		int n = snprintf(list + len, sizeof(list) - len, "%s'%s'",
				 !i ? "" : names[i + 1] ? ", " : " or ", names[i]);
		len = n > 0 ? MIN(len + (size_t)n, sizeof(list) - 1) : len;
	}
	*which = -1;
	for (int i = 0; names[i]; i++) {
		if (!cfg_get(obj, names[i]))
			continue;
		if (*which >= 0)
			return cfg_fail(c, "only one of %s may be set ('%s' and '%s' are both set)",
					list, names[*which], names[i]);
		*which = i;
	}
	if (required && *which < 0)
		return cfg_fail(c, "one of %s is required", list);
	return RM_OK;
}

/* Enter member name as a list: RM_OK (entered, *arr set), RM_DECLINED
 * (absent), RM_ERROR (not a list). */
static int enter_list(struct cfg_ctx *c, const json_t *obj, const char *name, const json_t **arr)
{
	*arr = cfg_enter(c, obj, name);
	if (!*arr)
		return c->failed ? RM_ERROR : RM_DECLINED;
	return cfg_expect_array(c, *arr);
}

/* Enter member name as an object: as enter_list. */
static int enter_obj(struct cfg_ctx *c, const json_t *obj, const char *name, const json_t **out,
		     const char *const *fields)
{
	*out = cfg_enter(c, obj, name);
	if (!*out)
		return c->failed ? RM_ERROR : RM_DECLINED;
	return cfg_check_fields(c, *out, fields);
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return true;
	return false;
}

/* A string field that ends up in a header value: no CR/LF, bounded. */
static int string_hv(struct cfg_ctx *c, const json_t *obj, const char *name, const char **out)
{
	const char *s = NULL;

	if (cfg_string(c, obj, name, &s) != RM_OK)
		return RM_ERROR;
	if (!s)
		return RM_OK;
	if (has_ctl(s) || strlen(s) > HDR_MAX_LEN) {
		cfg_enter(c, obj, name);
		return cfg_fail(c, "must be a valid header value (no CR or LF, at most %d bytes)",
				HDR_MAX_LEN);
	}
	*out = s;
	return RM_OK;
}

/* RFC 7230 tchar, plus a leading ':' for pseudo-headers. */
static bool header_name_ok(const char *s)
{
	if (*s == ':')
		s++;
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (!(isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch)))
			return false;
	}
	return true;
}

static char *lower_dup(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return d;
}

/* A required header-name string member, lowercased. */
static int header_name(struct cfg_ctx *c, const json_t *obj, const char *field, char **out,
		       uint32_t *len)
{
	const char *s = NULL;

	if (cfg_string_req(c, obj, field, &s) != RM_OK)
		return RM_ERROR;
	if (!header_name_ok(s) || strlen(s) > HDR_MAX_LEN) {
		cfg_enter(c, obj, field);
		return cfg_fail(c, "invalid header name '%.100s'", s);
	}
	*out = lower_dup(s);
	*len = (uint32_t)strlen(*out);
	return RM_OK;
}

/* ------------------------------------------------------------------------
 * Regex and string matchers */

static const char *const regex_fields[] = { "google_re2", "regex", NULL };
static const char *const google_re2_fields[] = { "max_program_size", NULL };

/* RegexMatcher member `name` of obj (which must be present). */
static int regex_matcher(struct cfg_ctx *c, const json_t *obj, const char *name, unsigned flags,
			 struct route_re **out)
{
	const json_t *m, *g;
	const char *pattern = NULL;
	uint32_t ignored;

	if (enter_obj(c, obj, name, &m, regex_fields) != RM_OK)
		return RM_ERROR;
	int rc = enter_obj(c, m, "google_re2", &g, google_re2_fields);
	if (rc == RM_ERROR || (rc == RM_OK && cfg_u32(c, g, "max_program_size", &ignored)))
		return RM_ERROR;
	if (rc == RM_OK)
		cfg_leave(c);
	if (cfg_string_req(c, m, "regex", &pattern) != RM_OK)
		return RM_ERROR;
	cfg_enter(c, m, "regex");
	if (!*pattern)
		return cfg_fail(c, "must not be empty");
	*out = route_re_compile(c, pattern, flags);
	if (!*out)
		return RM_ERROR;
	cfg_leave(c);
	cfg_leave(c);
	return RM_OK;
}

static const char *const sm_fields[] = {
	"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case", NULL,
};
static const char *const sm_oneof[] = {
	"exact", "prefix", "suffix", "contains", "safe_regex", NULL,
};

/* StringMatcher object m (the walker is inside it). */
static int str_matcher(struct cfg_ctx *c, const json_t *m, struct str_matcher *sm)
{
	const char *s = NULL;
	int which;

	if (cfg_check_fields(c, m, sm_fields) || oneof(c, m, sm_oneof, true, &which) ||
	    cfg_bool(c, m, "ignore_case", &sm->ignore_case))
		return RM_ERROR;
	sm->kind = (enum sm_kind)which;
	if (sm->kind == SM_REGEX) {
		if (sm->ignore_case)
			return cfg_fail(c, "ignore_case has no effect for safe_regex");
		return regex_matcher(c, m, "safe_regex", ROUTE_RE_FULL, &sm->re);
	}
	if (cfg_string(c, m, sm_oneof[which], &s) != RM_OK)
		return RM_ERROR;
	if (!*s && sm->kind != SM_EXACT) {
		cfg_enter(c, m, sm_oneof[which]);
		return cfg_fail(c, "must not be empty");
	}
	sm->s = xstrdup(s);
	sm->len = (uint32_t)strlen(s);
	return RM_OK;
}

/* StringMatcher member `name` of obj. */
static int str_matcher_member(struct cfg_ctx *c, const json_t *obj, const char *name,
			      struct str_matcher *sm)
{
	const json_t *m = cfg_enter(c, obj, name);

	if (!m || str_matcher(c, m, sm) != RM_OK)
		return RM_ERROR;
	cfg_leave(c);
	return RM_OK;
}

static const char *const hm_fields[] = {
	"name", "exact_match", "safe_regex_match", "present_match", "prefix_match",
	"suffix_match", "contains_match", "string_match", "invert_match",
	"treat_missing_header_as_empty", NULL,
};
static const char *const hm_oneof[] = {
	"exact_match", "safe_regex_match", "present_match", "prefix_match", "suffix_match",
	"contains_match", "string_match", NULL,
};

static int hdr_matcher(struct cfg_ctx *c, const json_t *m, struct hdr_matcher *hm)
{
	static const enum sm_kind legacy_kind[] = {
		[0] = SM_EXACT, [3] = SM_PREFIX, [4] = SM_SUFFIX, [5] = SM_CONTAINS,
	};
	const char *s = NULL;
	int which;

	if (cfg_check_fields(c, m, hm_fields) || header_name(c, m, "name", &hm->name, &hm->name_len) ||
	    oneof(c, m, hm_oneof, false, &which) || cfg_bool(c, m, "invert_match", &hm->invert) ||
	    cfg_bool(c, m, "treat_missing_header_as_empty", &hm->missing_as_empty))
		return RM_ERROR;
	hm->kind = HM_STRING;
	switch (which) {
	case -1:   /* no specifier: Envoy checks for presence */
		hm->kind = HM_PRESENT;
		hm->present = true;
		return RM_OK;
	case 1:
		hm->sm.kind = SM_REGEX;
		return regex_matcher(c, m, "safe_regex_match", ROUTE_RE_FULL, &hm->sm.re);
	case 2:
		hm->kind = HM_PRESENT;
		return cfg_bool(c, m, "present_match", &hm->present);
	case 6:
		return str_matcher_member(c, m, "string_match", &hm->sm);
	default:
		if (cfg_string(c, m, hm_oneof[which], &s) != RM_OK)
			return RM_ERROR;
		if (!*s && which == 0) {
			hm->kind = HM_ANY;
			return RM_OK;
		}
		if (!*s) {
			cfg_enter(c, m, hm_oneof[which]);
			return cfg_fail(c, "must not be empty");
		}
		hm->sm.kind = legacy_kind[which];
		hm->sm.s = xstrdup(s);
		hm->sm.len = (uint32_t)strlen(s);
		return RM_OK;
	}
}

static const char *const qp_fields[] = { "name", "string_match", "present_match", NULL };
static const char *const qp_oneof[] = { "string_match", "present_match", NULL };

static int qp_matcher(struct cfg_ctx *c, const json_t *m, struct qp_matcher *qm)
{
	const char *name = NULL;
	bool present = false;
	int which;

	if (cfg_check_fields(c, m, qp_fields) || cfg_string_req(c, m, "name", &name) ||
	    oneof(c, m, qp_oneof, false, &which) || cfg_bool(c, m, "present_match", &present))
		return RM_ERROR;
	if (!*name || strlen(name) > 1024) {
		return cfg_fail_field(c, m, "name", "must be 1 to 1024 bytes long");
	}
	qm->name = xstrdup(name);
	qm->name_len = (uint32_t)strlen(name);
	if (which == 0) {
		qm->has_sm = true;
		return str_matcher_member(c, m, "string_match", &qm->sm);
	}
	return RM_OK;
}

/* Compile list member `name` of obj with fn(c, element, &out[i]). */
#define COMPILE_LIST(c, obj, name, out, nout, fn)                                   \
	({                                                                         \
		const json_t *arr_;                                                \
		int rc_ = enter_list((c), (obj), (name), &arr_);                   \
		if (rc_ == RM_OK) {                                                \
			size_t n_ = json_array_size(arr_);                         \
			(out) = xcalloc(n_, sizeof(*(out)));                       \
			(nout) = (uint32_t)n_;                                     \
			for (size_t i_ = 0; i_ < n_ && rc_ == RM_OK; i_++) {       \
				const json_t *el_ = cfg_enter_idx((c), arr_, i_); \
				if (!el_ || fn((c), el_, &(out)[i_]) != RM_OK)     \
					rc_ = RM_ERROR;                            \
				else                                               \
					cfg_leave(c);                              \
			}                                                          \
			if (rc_ == RM_OK)                                          \
				cfg_leave(c);                                      \
		}                                                                  \
		rc_ == RM_ERROR ? RM_ERROR : RM_OK;                                \
	})

void header_match_list_free(struct header_match_list *l)
{
	if (!l)
		return;
	for (uint32_t i = 0; i < l->nhm; i++) {
		xfree(l->hm[i].name);
		sm_free(&l->hm[i].sm);
	}
	xfree(l->hm);
	xfree(l);
}

int header_match_list_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			      struct header_match_list **out)
{
	struct header_match_list *l = xcalloc(1, sizeof(*l));
	int depth = c->depth;

	*out = NULL;
	if (COMPILE_LIST(c, obj, name, l->hm, l->nhm, hdr_matcher) != RM_OK) {
		while (c->depth > depth)
			cfg_leave(c);
		header_match_list_free(l);
		return RM_ERROR;
	}
	if (!l->nhm)
		header_match_list_free(l);
	else
		*out = l;
	return RM_OK;
}

int header_match_one_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			     struct header_match_list **out)
{
	const json_t *m = cfg_enter_req(c, obj, name);
	struct header_match_list *l;

	*out = NULL;
	if (!m)
		return RM_ERROR;
	l = xcalloc(1, sizeof(*l));
	l->hm = xcalloc(1, sizeof(*l->hm));
	l->nhm = 1;
	if (cfg_expect_object(c, m) || hdr_matcher(c, m, l->hm) != RM_OK) {
		header_match_list_free(l);
		return RM_ERROR;   /* the caller unwinds the walker */
	}
	cfg_leave(c);
	*out = l;
	return RM_OK;
}

int string_matcher_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			   struct str_matcher **out)
{
	const json_t *m = cfg_enter_req(c, obj, name);
	struct str_matcher *sm;

	*out = NULL;
	if (!m)
		return RM_ERROR;
	sm = xcalloc(1, sizeof(*sm));
	if (cfg_expect_object(c, m) || str_matcher(c, m, sm) != RM_OK) {
		string_matcher_free(sm);
		return RM_ERROR;   /* the caller unwinds the walker */
	}
	cfg_leave(c);
	*out = sm;
	return RM_OK;
}

void string_matcher_free(struct str_matcher *m)
{
	if (!m)
		return;
	sm_free(m);
	xfree(m);
}

/* ------------------------------------------------------------------------
 * Header mutations */

static const char *const hvo_fields[] = {
	"header", "append", "append_action", "keep_empty_value", NULL,
};
static const char *const hv_fields[] = { "key", "value", NULL };
static const char *const append_actions[] = {
	"APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD",
	"OVERWRITE_IF_EXISTS",
};

static bool header_modifiable(const char *lname)
{
	return lname[0] != ':' && strcmp(lname, "host") != 0;
}

/* HeaderValueOption. */
static int hdr_add(struct cfg_ctx *c, const json_t *o, struct hdr_add *a)
{
	const json_t *h;
	const char *value = "";
	bool append = true;
	int action = HDR_APPEND_IF_EXISTS_OR_ADD;

	if (cfg_check_fields(c, o, hvo_fields))
		return RM_ERROR;
	if (cfg_get(o, "append") && cfg_get(o, "append_action"))
		return cfg_fail(c, "Both append and append_action are set and it's not allowed");
	if (cfg_bool(c, o, "append", &append) ||
	    cfg_enum(c, o, "append_action", append_actions, ARRAY_SIZE(append_actions), &action) ||
	    cfg_bool(c, o, "keep_empty_value", &a->keep_empty))
		return RM_ERROR;
	if (cfg_get(o, "append"))
		action = append ? HDR_APPEND_IF_EXISTS_OR_ADD : HDR_OVERWRITE_IF_EXISTS_OR_ADD;
	a->action = (enum hdr_append_action)action;

	if (!(h = cfg_enter_req(c, o, "header")) || cfg_check_fields(c, h, hv_fields) ||
	    header_name(c, h, "key", &a->key, &a->key_len) || string_hv(c, h, "value", &value))
		return RM_ERROR;
	if (!header_modifiable(a->key)) {
		return cfg_fail_field(c, h, "key", ":-prefixed or host headers may not be modified");
	}
	a->value = xstrdup(value);
	a->value_len = (uint32_t)strlen(value);
	cfg_leave(c);
	return RM_OK;
}

static int hdr_remove(struct cfg_ctx *c, const json_t *v, char **out)
{
	if (!json_is_string(v))
		return cfg_fail(c, "expected a string");
	const char *s = json_string_value(v);
	if (!header_name_ok(s) || strlen(s) > HDR_MAX_LEN)
		return cfg_fail(c, "invalid header name '%.100s'", s);
	*out = lower_dup(s);
	if (!header_modifiable(*out))
		return cfg_fail(c, ":-prefixed or host headers may not be removed");
	return RM_OK;
}

/* The four *_headers_to_add/remove lists of obj. */
static int hdr_mutations(struct cfg_ctx *c, const json_t *obj, struct hdr_mutations *m)
{
	if (COMPILE_LIST(c, obj, "request_headers_to_add", m->req.add, m->req.nadd, hdr_add) ||
	    COMPILE_LIST(c, obj, "request_headers_to_remove", m->req.remove, m->req.nremove,
			 hdr_remove) ||
	    COMPILE_LIST(c, obj, "response_headers_to_add", m->resp.add, m->resp.nadd, hdr_add) ||
	    COMPILE_LIST(c, obj, "response_headers_to_remove", m->resp.remove, m->resp.nremove,
			 hdr_remove))
		return RM_ERROR;
	return RM_OK;
}

int header_adds_compile(struct cfg_ctx *c, const json_t *obj, const char *field,
			struct header_adds **out)
{
	struct header_adds *a = xcalloc(1, sizeof(*a));
	*out = NULL;
	if (COMPILE_LIST(c, obj, field, a->ops.add, a->ops.nadd, hdr_add)) {
		header_adds_free(a);
		return RM_ERROR;
	}
	if (!a->ops.nadd)
		header_adds_free(a);
	else
		*out = a;
	return RM_OK;
}

void header_adds_free(struct header_adds *a)
{
	if (!a)
		return;
	hdr_ops_free(&a->ops);
	free(a);
}

/* ------------------------------------------------------------------------
 * Route */

static const char *const match_fields[] = {
	"prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher",
	"case_sensitive", "headers", "query_parameters", NULL,
};
static const char *const path_oneof[] = {
	"prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher", NULL,
};

static int route_match_cfg(struct cfg_ctx *c, const json_t *m, struct route *r)
{
	static const enum path_kind kinds[] = { PM_PREFIX, PM_PATH, PM_REGEX, PM_SEP_PREFIX,
						PM_CONNECT };
	const char *s = NULL;
	int which;

	r->case_sensitive = true;
	if (cfg_check_fields(c, m, match_fields) || oneof(c, m, path_oneof, true, &which) ||
	    cfg_bool(c, m, "case_sensitive", &r->case_sensitive))
		return RM_ERROR;
	r->pkind = kinds[which];
	if (r->pkind == PM_CONNECT) {
		static const char *const none[] = { NULL };
		const json_t *cm = cfg_enter(c, m, "connect_matcher");
		int rc = cm ? (cfg_expect_object(c, cm) || cfg_check_fields(c, cm, none)) : RM_OK;
		if (cm)
			cfg_leave(c);
		if (rc)
			return RM_ERROR;
	} else if (r->pkind == PM_REGEX) {
		if (regex_matcher(c, m, "safe_regex", ROUTE_RE_FULL, &r->pre) != RM_OK)
			return RM_ERROR;
	} else {
		if (cfg_string(c, m, path_oneof[which], &s) != RM_OK)
			return RM_ERROR;
		if (r->pkind == PM_SEP_PREFIX &&
		    (strlen(s) < 2 || strpbrk(s, "?#") || s[strlen(s) - 1] == '/')) {
			return cfg_fail_field(c, m, "path_separated_prefix", "'%.100s' is not a valid separated prefix (it must not "
					"contain '?' or '#' nor end with '/')", s);
		}
		r->pstr = xstrdup(s);
		r->plen = (uint32_t)strlen(s);
	}
	if (COMPILE_LIST(c, m, "headers", r->hm, r->nhm, hdr_matcher) ||
	    COMPILE_LIST(c, m, "query_parameters", r->qm, r->nqm, qp_matcher))
		return RM_ERROR;
	return RM_OK;
}

static const char *const wc_fields[] = { "clusters", "total_weight", NULL };
static const char *const cw_fields[] = {
	"name", "weight", "request_headers_to_add", "request_headers_to_remove",
	"response_headers_to_add", "response_headers_to_remove", NULL,
};

static int cluster_weight(struct cfg_ctx *c, const json_t *o, struct weighted_cluster *wc)
{
	const char *name = NULL;
	struct hdr_mutations *m;

	if (cfg_check_fields(c, o, cw_fields) || cfg_string_req(c, o, "name", &name))
		return RM_ERROR;
	if (!*name) {
		return cfg_fail_field(c, o, "name", "must not be empty");
	}
	wc->name = xstrdup(name);
	if (!cfg_get(o, "weight")) {
		cfg_enter_req(c, o, "weight");
		return RM_ERROR;
	}
	if (cfg_u32(c, o, "weight", &wc->weight) != RM_OK)
		return RM_ERROR;
	wc->headers = m = xcalloc(1, sizeof(*m));
	return hdr_mutations(c, o, m);
}

static int weighted_clusters(struct cfg_ctx *c, const json_t *a, struct route_entry *e)
{
	const json_t *w;
	uint32_t total = 0;
	uint64_t sum = 0;

	if (enter_obj(c, a, "weighted_clusters", &w, wc_fields) != RM_OK ||
	    cfg_u32(c, w, "total_weight", &total))
		return RM_ERROR;
	if (!cfg_get(w, "clusters")) {
		cfg_enter_req(c, w, "clusters");
		return RM_ERROR;
	}
	if (COMPILE_LIST(c, w, "clusters", e->wclusters, e->nwclusters, cluster_weight))
		return RM_ERROR;
	if (!e->nwclusters) {
		return cfg_fail_field(c, w, "clusters", "at least one cluster is required");
	}
	for (uint32_t i = 0; i < e->nwclusters; i++)
		sum += e->wclusters[i].weight;
	if (sum == 0)
		return cfg_fail(c, "Sum of weights in the weighted_cluster must be greater than 0.");
	if (sum > UINT32_MAX)
		return cfg_fail(c, "Sum of weights in the weighted_cluster must not exceed %u",
				UINT32_MAX);
	if (total && total != sum) {
		return cfg_fail_field(c, w, "total_weight", "Sum of weights in the weighted_cluster should add up to %u "
				"(they add up to %llu)", total, (unsigned long long)sum);
	}
	e->total_weight = (uint32_t)sum;
	cfg_leave(c);
	return RM_OK;
}

static const char *const ra_fields[] = {
	"cluster", "weighted_clusters", "prefix_rewrite", "regex_rewrite", "host_rewrite_literal",
	"append_x_forwarded_host", "timeout", "idle_timeout", "upgrade_configs", "retry_policy", "hedge_policy",
	"max_stream_duration",
	"hash_policy", "priority",
	"rate_limits",
	NULL,
};

static const char *const hp_fields[] = {
	"header", "cookie", "connection_properties", "query_parameter", "filter_state", "terminal",
	NULL,
};
static const char *const hp_oneof[] = {
	"header", "cookie", "connection_properties", "query_parameter", "filter_state", NULL,
};

/* A non-empty name member of a hash policy, copied (lowercased if lower). */
static int hp_name(struct cfg_ctx *c, const json_t *o, const char *field, bool lower,
		   struct hash_policy *p)
{
	const char *s = NULL;

	if (cfg_string_req(c, o, field, &s) != RM_OK)
		return RM_ERROR;
	if (!*s || strlen(s) > HDR_MAX_LEN) {
		cfg_enter(c, o, field);
		return cfg_fail(c, "must be 1 to %d bytes long", HDR_MAX_LEN);
	}
	p->name = lower ? lower_dup(s) : xstrdup(s);
	p->name_len = (uint32_t)strlen(s);
	return RM_OK;
}

/* "not supported yet" at member field of o, when it is present. */
static int hp_unsupported(struct cfg_ctx *c, const json_t *o, const char *field, const char *why)
{
	if (!cfg_get(o, field))
		return RM_OK;
	cfg_enter(c, o, field);
	return cfg_fail(c, "not supported yet%s", why);
}

/* Cookie.attributes[] {name, value}: appended to a generated Set-Cookie as
 * "; name=value" ("; name" when the value is empty), as Envoy's
 * makeSetCookieValue.  Appends to *tail (a growing string). */
static int cookie_attributes(struct cfg_ctx *c, const json_t *v, char **tail)
{
	static const char *const af[] = { "name", "value", NULL };
	const json_t *arr = cfg_enter(c, v, "attributes");
	int rc;
	if (!arr)
		return RM_OK;
	rc = cfg_expect_array(c, arr);
	for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
		const json_t *a = cfg_enter_idx(c, arr, i);
		const char *name = NULL, *value = "";
		rc = cfg_expect_object(c, a) || cfg_check_fields(c, a, af) ||
		     cfg_string_req(c, a, "name", &name) || cfg_string(c, a, "value", &value);
		if (!rc && (!*name || has_ctl(name) || strlen(name) > 16384))
			rc = cfg_fail_field(c, a, "name", "must be 1 to 16384 bytes without CR or LF");
		if (!rc && (has_ctl(value) || strlen(value) > 16384))
			rc = cfg_fail_field(c, a, "value", "must be at most 16384 bytes without CR or LF");
		if (!rc) {
			char *t = *value ? xasprintf("%s; %s=%s", *tail, name, value)
					 : xasprintf("%s; %s", *tail, name);
			xfree(*tail);
			*tail = t;
		}
		if (!rc)
			cfg_leave(c);
	}
	if (!rc)
		cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

/* HashPolicy.cookie.  With ttl, a request without the cookie gets one
 * generated (route_hash); everything after the value of its Set-Cookie is
 * fixed by the config, so it is built here: "; Max-Age=N" (ttl in whole
 * seconds, none when 0: a session cookie), "; Path=p", the attributes, then
 * "; HttpOnly" (Envoy's order). */
static int hash_policy_cookie(struct cfg_ctx *c, const json_t *v, struct hash_policy *p)
{
	const char *path = NULL;
	uint64_t ttl_ms = 0;

	p->kind = HP_COOKIE;
	if (hp_name(c, v, "name", false, p) != RM_OK || cfg_string(c, v, "path", &path) != RM_OK ||
	    cfg_duration_ms(c, v, "ttl", &ttl_ms) != RM_OK)
		return RM_ERROR;
	if (has_ctl(p->name))   /* it goes into a Set-Cookie header */
		return cfg_fail_field(c, v, "name", "must not contain CR or LF");
	if (path && (has_ctl(path) || strlen(path) > 16384))
		return cfg_fail_field(c, v, "path", "must be at most 16384 bytes without CR or LF");
	if (!cfg_get(v, "ttl")) {
		/* without ttl nothing is generated, so path and attributes are unused
		 * (Envoy too); attributes are still validated */
		char *tail = xstrdup("");
		int rc = cookie_attributes(c, v, &tail);
		xfree(tail);
		return rc;
	}
	char *tail = ttl_ms >= 1000 ? xasprintf("; Max-Age=%llu", (unsigned long long)(ttl_ms / 1000))
				    : xstrdup("");
	if (path && *path) {
		char *t = xasprintf("%s; Path=%s", tail, path);
		xfree(tail);
		tail = t;
	}
	if (cookie_attributes(c, v, &tail) != RM_OK) {
		xfree(tail);
		return RM_ERROR;
	}
	p->set_cookie_tail = xasprintf("%s; HttpOnly", tail);
	p->set_cookie_tail_len = (uint32_t)strlen(p->set_cookie_tail);
	xfree(tail);
	return RM_OK;
}

/* RouteAction.HashPolicy. */
static int hash_policy(struct cfg_ctx *c, const json_t *o, struct hash_policy *p)
{
	static const char *const hf[] = { "header_name", "regex_rewrite", NULL };
	static const char *const cf[] = { "name", "ttl", "path", "attributes", NULL };
	static const char *const pf[] = { "source_ip", NULL };
	static const char *const qf[] = { "name", NULL };
	static const char *const ff[] = { "key", NULL };
	const json_t *v;
	int which, rc;
	bool src = false;

	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, hp_fields) ||
	    oneof(c, o, hp_oneof, true, &which) || cfg_bool(c, o, "terminal", &p->terminal))
		return RM_ERROR;
	switch (which) {
	case 0:
		if (enter_obj(c, o, "header", &v, hf) != RM_OK ||
		    hp_unsupported(c, v, "regex_rewrite", "") != RM_OK)
			return RM_ERROR;
		p->kind = HP_HEADER;
		if (header_name(c, v, "header_name", &p->name, &p->name_len) != RM_OK)
			return RM_ERROR;
		break;
	case 1:
		if (enter_obj(c, o, "cookie", &v, cf) != RM_OK || hash_policy_cookie(c, v, p) != RM_OK)
			return RM_ERROR;
		break;
	case 2:
		if (enter_obj(c, o, "connection_properties", &v, pf) != RM_OK ||
		    cfg_bool(c, v, "source_ip", &src) != RM_OK)
			return RM_ERROR;
		p->kind = src ? HP_SOURCE_IP : HP_NONE;
		break;
	case 3:
		if (enter_obj(c, o, "query_parameter", &v, qf) != RM_OK)
			return RM_ERROR;
		p->kind = HP_QUERY;
		if (hp_name(c, v, "name", false, p) != RM_OK)
			return RM_ERROR;
		break;
	default:
		rc = enter_obj(c, o, "filter_state", &v, ff);
		if (rc == RM_OK)
			cfg_fail(c, "not supported yet");
		return RM_ERROR;
	}
	cfg_leave(c);
	return RM_OK;
}

/* RouteAction.upgrade_configs: only CONNECT's connect_config changes what the
 * router does (terminate CONNECT); other entries are validated. */
static int route_upgrades(struct cfg_ctx *c, const json_t *a, struct route *r)
{
	static const char *const uf[] = { "upgrade_type", "enabled", "connect_config", NULL };
	static const char *const ccf[] = { NULL };
	const json_t *arr = cfg_enter(c, a, "upgrade_configs");
	int rc = RM_OK;
	if (!arr)
		return RM_OK;
	if (cfg_expect_array(c, arr)) {
		cfg_leave(c);
		return RM_ERROR;
	}
	for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
		const json_t *u = cfg_enter_idx(c, arr, i), *cc;
		const char *type = NULL;
		bool enabled = true;
		rc = cfg_expect_object(c, u) || cfg_check_fields(c, u, uf) ||
		     cfg_string_req(c, u, "upgrade_type", &type) || cfg_bool(c, u, "enabled", &enabled);
		if (!rc && (cc = cfg_enter(c, u, "connect_config"))) {
			rc = cfg_expect_object(c, cc) || cfg_check_fields(c, cc, ccf);
			if (!rc && strcasecmp(type, "CONNECT"))
				rc = cfg_fail(c, "connect_config is only valid with upgrade_type CONNECT");
			cfg_leave(c);
			if (!rc && enabled)
				r->e.connect_terminate = true;
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}
static const char *const cluster_oneof[] = { "cluster", "weighted_clusters", NULL };
static const char *const rewrite_oneof[] = { "prefix_rewrite", "regex_rewrite", NULL };
static const char *const rr_fields[] = { "pattern", "substitution", NULL };

static int regex_rewrite(struct cfg_ctx *c, const json_t *a, struct route *r)
{
	const json_t *rr;
	const char *sub = NULL;

	if (enter_obj(c, a, "regex_rewrite", &rr, rr_fields) != RM_OK)
		return RM_ERROR;
	if (!cfg_get(rr, "pattern")) {
		cfg_enter_req(c, rr, "pattern");
		return RM_ERROR;
	}
	if (regex_matcher(c, rr, "pattern", 0, &r->rewrite_re) ||
	    cfg_string_req(c, rr, "substitution", &sub))
		return RM_ERROR;
	cfg_enter(c, rr, "substitution");
	if (has_ctl(sub))
		return cfg_fail(c, "must not contain CR or LF");
	if (route_re_check_rewrite(c, r->rewrite_re, sub) != RM_OK)
		return RM_ERROR;
	cfg_leave(c);
	r->rewrite_sub = xstrdup(sub);
	cfg_leave(c);
	return RM_OK;
}

static int route_action(struct cfg_ctx *c, const json_t *a, struct route *r)
{
	static const char *const routing_priorities[] = { "DEFAULT", "HIGH" };
	struct route_entry *e = &r->e;
	const char *s = NULL;
	int which, rw, prio = 0;

	e->kind = ROUTE_ACTION_ROUTE;
	e->timeout_ms = DEFAULT_TIMEOUT_MS;
	if (cfg_check_fields(c, a, ra_fields) || oneof(c, a, cluster_oneof, true, &which) ||
	    oneof(c, a, rewrite_oneof, false, &rw) ||
	    cfg_duration_ms(c, a, "timeout", &e->timeout_ms) ||
	    cfg_duration_ms(c, a, "idle_timeout", &e->idle_timeout_ms) ||
	    cfg_bool(c, a, "append_x_forwarded_host", &r->append_xfh) ||
	    COMPILE_LIST(c, a, "hash_policy", r->hp, r->nhp, hash_policy) ||
	    rl_policy_list_compile(c, a, "rate_limits", &e->rate_limits) ||
	    cfg_enum(c, a, "priority", routing_priorities, ARRAY_SIZE(routing_priorities), &prio))
		return RM_ERROR;
	e->priority = (uint8_t)prio;
	if (r->nhp > ROUTE_HASH_POLICIES_MAX)
		return cfg_fail_field(c, a, "hash_policy", "at most %d entries are supported",
				      ROUTE_HASH_POLICIES_MAX);
	if (which == 0) {
		if (cfg_string(c, a, "cluster", &s) != RM_OK)
			return RM_ERROR;
		if (!*s) {
			return cfg_fail_field(c, a, "cluster", "must not be empty");
		}
		e->cluster = xstrdup(s);
	} else if (weighted_clusters(c, a, e) != RM_OK) {
		return RM_ERROR;
	}
	s = NULL;
	if (string_hv(c, a, "prefix_rewrite", &s) != RM_OK)
		return RM_ERROR;
	if (s && *s) {   /* proto3: "" is the same as unset */
		r->prefix_rewrite = xstrdup(s);
		r->prefix_rewrite_len = (uint32_t)strlen(s);
	}
	if (rw == 1 && regex_rewrite(c, a, r) != RM_OK)
		return RM_ERROR;
	s = NULL;
	if (string_hv(c, a, "host_rewrite_literal", &s) != RM_OK)
		return RM_ERROR;
	if (s && *s)
		r->host_rewrite = xstrdup(s);
	e->grpc_timeout_max_ms = -1;
	const json_t *msd = cfg_enter(c, a, "max_stream_duration");
	if (msd) {
		static const char *const mf[] = { "grpc_timeout_header_max", "grpc_timeout_header_offset",
						  "max_stream_duration", NULL };
		uint64_t max = 0;
		int rc = cfg_expect_object(c, msd) || cfg_check_fields(c, msd, mf) ||
			 cfg_duration_ms(c, msd, "grpc_timeout_header_max", &max) ||
			 cfg_duration_ms(c, msd, "grpc_timeout_header_offset", &e->grpc_timeout_offset_ms) ||
			 cfg_duration_ms(c, msd, "max_stream_duration", &e->max_stream_duration_ms);
		if (!rc && cfg_get(msd, "grpc_timeout_header_max"))
			e->grpc_timeout_max_ms = (int64_t)max;
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	const json_t *rp = cfg_enter(c, a, "retry_policy");
	if (rp) {
		r->own_retry = retry_policy_compile(c, rp);
		cfg_leave(c);
		if (!r->own_retry)
			return RM_ERROR;
		e->retry = r->own_retry;
	}
	if (hedge_policy_compile(c, a, &r->has_hedge, &e->hedge_on_per_try_timeout))
		return RM_ERROR;
	return route_upgrades(c, a, r);
}

static const char *const redir_fields[] = {
	"https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
	"prefix_rewrite", "response_code", "strip_query", NULL,
};
static const char *const scheme_oneof[] = { "https_redirect", "scheme_redirect", NULL };
static const char *const redir_path_oneof[] = { "path_redirect", "prefix_rewrite", NULL };
static const char *const redirect_codes[] = {
	"MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT",
};
static const uint16_t redirect_status[] = { 301, 302, 303, 307, 308 };

static int redirect_action(struct cfg_ctx *c, const json_t *a, struct route *r)
{
	const char *scheme = NULL, *host = NULL, *path = NULL, *prefix = NULL;
	bool https = false;
	int which, code = 0;

	r->e.kind = ROUTE_ACTION_REDIRECT;
	if (cfg_check_fields(c, a, redir_fields) || oneof(c, a, scheme_oneof, false, &which) ||
	    oneof(c, a, redir_path_oneof, false, &which) ||
	    cfg_bool(c, a, "https_redirect", &https) || string_hv(c, a, "scheme_redirect", &scheme) ||
	    string_hv(c, a, "host_redirect", &host) ||
	    cfg_u32(c, a, "port_redirect", &r->port_redirect) ||
	    string_hv(c, a, "path_redirect", &path) || string_hv(c, a, "prefix_rewrite", &prefix) ||
	    cfg_enum(c, a, "response_code", redirect_codes, ARRAY_SIZE(redirect_codes), &code) ||
	    cfg_bool(c, a, "strip_query", &r->strip_query))
		return RM_ERROR;
	if (r->port_redirect > 65535) {
		return cfg_fail_field(c, a, "port_redirect", "expected a port in 0..65535");
	}
	if (https)
		r->scheme_redirect = xstrdup("https");
	else if (scheme && *scheme)
		r->scheme_redirect = lower_dup(scheme);
	if (host && *host)
		r->host_redirect = xstrdup(host);
	if (path && *path) {
		r->path_redirect = xstrdup(path);
		r->path_redirect_has_query = strchr(path, '?') != NULL;
	}
	if (prefix && *prefix) {
		r->prefix_rewrite = xstrdup(prefix);
		r->prefix_rewrite_len = (uint32_t)strlen(prefix);
	}
	r->e.redirect_status = redirect_status[code];
	return RM_OK;
}

static const char *const dr_fields[] = { "status", "body", NULL };
static const char *const ds_fields[] = { "inline_string", "inline_bytes", NULL };

static int direct_response(struct cfg_ctx *c, const json_t *a, struct route *r,
			   const struct route_config *rc)
{
	struct route_entry *e = &r->e;
	const json_t *b;
	uint32_t status = 0;
	const char *s = NULL;
	int which, brc;

	e->kind = ROUTE_ACTION_DIRECT;
	if (cfg_check_fields(c, a, dr_fields))
		return RM_ERROR;
	if (!cfg_get(a, "status")) {
		cfg_enter_req(c, a, "status");
		return RM_ERROR;
	}
	if (cfg_u32(c, a, "status", &status) != RM_OK)
		return RM_ERROR;
	if (status < 200 || status > 599) {
		return cfg_fail_field(c, a, "status", "expected an HTTP status in 200..599");
	}
	e->direct_status = (uint16_t)status;
	brc = enter_obj(c, a, "body", &b, ds_fields);
	if (brc == RM_ERROR)
		return RM_ERROR;
	if (brc == RM_DECLINED)
		return RM_OK;
	if (oneof(c, b, ds_fields, true, &which) != RM_OK ||
	    cfg_string(c, b, ds_fields[which], &s) != RM_OK)
		return RM_ERROR;
	if (which == 0) {
		e->direct_body = xstrdup(s);
		e->direct_body_len = strlen(s);
	} else if (!(e->direct_body = base64_decode(s, &e->direct_body_len))) {
		return cfg_fail_field(c, b, "inline_bytes", "invalid base64");
	}
	if (e->direct_body_len > rc->max_direct_body)
		return cfg_fail(c, "response body size is %zu bytes; maximum is %u",
				e->direct_body_len, rc->max_direct_body);
	cfg_leave(c);
	return RM_OK;
}

static const char *const route_fields[] = {
	"name", "match", "route", "redirect", "direct_response", "request_headers_to_add",
	"request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
	"per_request_buffer_limit_bytes", "typed_per_filter_config", NULL,
};
static const char *const action_oneof[] = { "route", "redirect", "direct_response", NULL };

static int route_cfg(struct cfg_ctx *c, const json_t *o, struct route *r,
		     struct route_config *rc)
{
	const json_t *m, *a;
	const char *name = NULL;
	int which, arc;

	if (cfg_check_fields(c, o, route_fields) || cfg_string(c, o, "name", &name) ||
	    cfg_u32(c, o, "per_request_buffer_limit_bytes", &r->e.per_request_buffer_limit))
		return RM_ERROR;
	r->has_buffer_limit = cfg_get(o, "per_request_buffer_limit_bytes") != NULL;
	if (name)
		r->e.name = xstrdup(name);
	if (!(m = cfg_enter_req(c, o, "match")) || route_match_cfg(c, m, r))
		return RM_ERROR;
	cfg_leave(c);
	if (oneof(c, o, action_oneof, true, &which) != RM_OK)
		return RM_ERROR;
	if (!(a = cfg_enter(c, o, action_oneof[which])))
		return RM_ERROR;
	switch (which) {
	case 0:
		arc = route_action(c, a, r);
		break;
	case 1:
		arc = redirect_action(c, a, r);
		break;
	default:
		arc = direct_response(c, a, r, rc);
		break;
	}
	if (arc != RM_OK)
		return RM_ERROR;
	cfg_leave(c);
	if (route_pf_compile(c, o, rc, &r->pfc) != RM_OK)
		return RM_ERROR;
	return hdr_mutations(c, o, &r->hdrs);
}

/* ------------------------------------------------------------------------
 * Virtual host and route configuration */

static const char *const vh_fields[] = {
	"name", "domains", "routes", "request_headers_to_add", "request_headers_to_remove",
	"response_headers_to_add", "response_headers_to_remove", "retry_policy", "hedge_policy",
	"include_request_attempt_count", "include_attempt_count_in_response",
	"per_request_buffer_limit_bytes", "typed_per_filter_config",
	"rate_limits",
	NULL,
};

static int vh_domain(struct cfg_ctx *c, const json_t *v, struct virtual_host *vh,
		     struct route_config *rc)
{
	if (!json_is_string(v))
		return cfg_fail(c, "expected a string");
	const char *d = json_string_value(v);
	size_t len = strlen(d);
	enum dom_kind kind = DOM_EXACT;
	int irc;

	for (const char *p = d; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return cfg_fail(c, "invalid domain: control characters are not allowed");
	if (!strcmp(d, "*")) {
		if (rc->default_vh)
			return cfg_fail(c, "only a single wildcard domain '*' is permitted in route "
					"configuration '%s'", rc->name);
		rc->default_vh = vh;
		return RM_OK;
	}
	if (len && d[0] == '*') {
		kind = DOM_SUFFIX;
		d++;
		len--;
		add_len(&rc->suffix_lens, &rc->nsuffix, (uint32_t)len);
	} else if (len && d[len - 1] == '*') {
		kind = DOM_PREFIX;
		len--;
		add_len(&rc->prefix_lens, &rc->nprefix, (uint32_t)len);
	}
	char *low = lower_dup(json_string_value(v));
	irc = dom_insert(&rc->domains, kind, low + (kind == DOM_SUFFIX), len, vh);
	xfree(low);
	if (irc == RM_DECLINED)
		return cfg_fail(c, "only unique values for domains are permitted: duplicate entry "
				"of domain '%s' in route configuration '%s'", json_string_value(v),
				rc->name);
	return RM_OK;
}

static int vhost_cfg(struct cfg_ctx *c, const json_t *o, struct virtual_host *vh,
		     struct route_config *rc)
{
	const json_t *arr;
	const char *name = NULL;

	if (cfg_check_fields(c, o, vh_fields) || cfg_string_req(c, o, "name", &name) ||
	    cfg_bool(c, o, "include_request_attempt_count", &vh->attempt_req) ||
	    cfg_bool(c, o, "include_attempt_count_in_response", &vh->attempt_resp) ||
	    cfg_u32(c, o, "per_request_buffer_limit_bytes", &vh->buffer_limit))
		return RM_ERROR;
	if (route_pf_compile(c, o, rc, &vh->pfc) != RM_OK ||
	    rl_policy_list_compile(c, o, "rate_limits", &vh->rate_limits) != RM_OK)
		return RM_ERROR;
	const json_t *vrp = cfg_enter(c, o, "retry_policy");
	if (vrp) {
		vh->retry = retry_policy_compile(c, vrp);
		cfg_leave(c);
		if (!vh->retry)
			return RM_ERROR;
	}
	if (hedge_policy_compile(c, o, &vh->has_hedge, &vh->hedge_ptt))
		return RM_ERROR;
	if (!*name) {
		return cfg_fail_field(c, o, "name", "must not be empty");
	}
	vh->name = xstrdup(name);
	if (!cfg_get(o, "domains")) {
		cfg_enter_req(c, o, "domains");
		return RM_ERROR;
	}
	if (enter_list(c, o, "domains", &arr) != RM_OK)
		return RM_ERROR;
	if (!json_array_size(arr))
		return cfg_fail(c, "at least one domain is required");
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *d = cfg_enter_idx(c, arr, i);
		if (!d || vh_domain(c, d, vh, rc) != RM_OK)
			return RM_ERROR;
		cfg_leave(c);
	}
	cfg_leave(c);

	int lrc = enter_list(c, o, "routes", &arr);
	if (lrc == RM_ERROR)
		return RM_ERROR;
	if (lrc == RM_OK) {
		size_t n = json_array_size(arr);
		vh->routes = xcalloc(n, sizeof(*vh->routes));
		vh->nroutes = (uint32_t)n;
		for (size_t i = 0; i < n; i++) {
			const json_t *r = cfg_enter_idx(c, arr, i);
			if (!r || route_cfg(c, r, &vh->routes[i], rc) != RM_OK)
				return RM_ERROR;
			cfg_leave(c);
			/* virtual-host settings a route does not override */
			struct route_entry *e = &vh->routes[i].e;
			if (!e->retry && e->kind == ROUTE_ACTION_ROUTE)
				e->retry = vh->retry;
			if (!vh->routes[i].has_hedge)
				e->hedge_on_per_try_timeout = vh->hedge_ptt;
			if (!vh->routes[i].has_buffer_limit)
				e->per_request_buffer_limit = vh->buffer_limit;
			e->attempt_count_in_request = vh->attempt_req;
			e->attempt_count_in_response = vh->attempt_resp;
			e->vh_rate_limits = vh->rate_limits;
		}
		cfg_leave(c);
	}
	return hdr_mutations(c, o, &vh->hdrs);
}

static const char *const rc_fields[] = {
	"name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
	"response_headers_to_add", "response_headers_to_remove", "ignore_port_in_host_matching",
	"most_specific_header_mutations_wins", "max_direct_response_body_size_bytes",
	"typed_per_filter_config", NULL,
};

struct route_config *route_config_compile(struct cfg_ctx *c, const json_t *j,
					  const struct route_filters *filters)
{
	struct route_config *rc = xcalloc(1, sizeof(*rc));
	int depth0 = c->depth;

	__atomic_add_fetch(&live_tables, 1, __ATOMIC_RELAXED);
	const json_t *arr;
	const char *name = "";

	rc->max_direct_body = DIRECT_BODY_MAX_DEFAULT;
	rc->filters = filters;
	if (filters && filters->n) {
		rc->npf = filters->n;
		rc->pf_ops = xcalloc(rc->npf, sizeof(*rc->pf_ops));
		memcpy(rc->pf_ops, filters->ops, rc->npf * sizeof(*rc->pf_ops));
	}
	if (cfg_check_fields(c, j, rc_fields) || cfg_string(c, j, "name", &name) ||
	    cfg_bool(c, j, "ignore_port_in_host_matching", &rc->ignore_port) ||
	    cfg_bool(c, j, "most_specific_header_mutations_wins", &rc->most_specific_wins) ||
	    cfg_u32(c, j, "max_direct_response_body_size_bytes", &rc->max_direct_body))
		goto error;
	rc->name = xstrdup(name);
	if (route_pf_compile(c, j, rc, &rc->pfc) != RM_OK)
		goto error;

	int lrc = enter_list(c, j, "virtual_hosts", &arr);
	if (lrc == RM_ERROR)
		goto error;
	if (lrc == RM_OK) {
		size_t n = json_array_size(arr);
		rc->vhosts = xcalloc(n, sizeof(*rc->vhosts));
		rc->nvhosts = (uint32_t)n;
		for (size_t i = 0; i < n; i++) {
			const json_t *v = cfg_enter_idx(c, arr, i);
			if (!v || vhost_cfg(c, v, &rc->vhosts[i], rc) != RM_OK)
				goto error;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if (hdr_mutations(c, j, &rc->hdrs) != RM_OK)
		goto error;
	route_pf_merge(rc);
	rc->filters = NULL;
	return rc;
error:
	c->depth = depth0;
	if (!c->failed)
		cfg_fail(c, "invalid route configuration");
	route_config_free(rc);
	return NULL;
}

const char *route_config_name(const struct route_config *rc)
{
	return rc->name;
}

void route_config_for_each_cluster(const struct route_config *rc,
				   void (*fn)(const char *name, void *arg), void *arg)
{
	for (uint32_t i = 0; i < rc->nvhosts; i++) {
		const struct virtual_host *vh = &rc->vhosts[i];
		for (uint32_t j = 0; j < vh->nroutes; j++) {
			const struct route_entry *e = &vh->routes[j].e;
			if (e->kind != ROUTE_ACTION_ROUTE)
				continue;
			if (e->cluster)
				fn(e->cluster, arg);
			for (uint32_t k = 0; k < e->nwclusters; k++)
				fn(e->wclusters[k].name, arg);
		}
	}
}

/* ------------------------------------------------------------------------
 * QueryParameterMatcher lists outside a route (ratelimit_action.c) */

int route_qp_list_compile(struct cfg_ctx *c, const json_t *obj, const char *name,
			  struct qp_matcher **out, uint32_t *n)
{
	int depth = c->depth;

	*out = NULL;
	*n = 0;
	if (COMPILE_LIST(c, obj, name, *out, *n, qp_matcher) != RM_OK) {
		while (c->depth > depth)
			cfg_leave(c);
		route_qp_list_free(*out, *n);
		*out = NULL;
		*n = 0;
		return RM_ERROR;
	}
	return RM_OK;
}

void route_qp_list_free(struct qp_matcher *qm, uint32_t n)
{
	for (uint32_t i = 0; qm && i < n; i++) {
		xfree(qm[i].name);
		sm_free(&qm[i].sm);
	}
	xfree(qm);
}
