/* route_match.c - the request path of the route table: virtual host and
 * route selection, cluster picking, request/response transformations and
 * redirect Locations (route.h).
 *
 * Matching runs for every request, so the common cases (exact/wildcard
 * domains, prefix/path routes, single-valued header matchers, query
 * parameters) neither allocate nor copy: comparisons lowercase on the fly.
 * Only joining a multi-valued header for a matcher, regex rewrites and host
 * rewrites with x-forwarded-host may allocate. */
#include "route-t.h"

#include <xxhash.h>
#include "../config/address.h"

#define JOIN_STACK 1024   /* joined multi-value headers up to this size stay on the stack */

static inline unsigned char lc(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') ? ch + 32 : ch;
}

static bool eq_case(const char *a, const char *b, size_t n, bool icase)
{
	return icase ? mem_ieq(a, b, n) : memcmp(a, b, n) == 0;
}

/* Length of the path part of :path (before '?' or '#'). */
static size_t path_only_len(const char *path, size_t len)
{
	const char *q = memchr(path, '?', len);

	if (q)
		len = (size_t)(q - path);
	q = memchr(path, '#', len);
	return q ? (size_t)(q - path) : len;
}

/* ------------------------------------------------------------------------
 * Virtual host selection */

/* Envoy's HeaderUtility::getPortStart: the ':' before a port, or len. */
static size_t host_port_start(const char *h, size_t len)
{
	size_t colon = len, bracket = len;

	for (size_t i = len; i-- > 0;) {
		if (h[i] == ':' && colon == len)
			colon = i;
		if (h[i] == ']') {
			bracket = i;
			break;
		}
	}
	if (colon == len)
		return len;
	if (bracket == len || bracket < colon)
		return colon;
	return len;
}

static const struct virtual_host *find_vhost(const struct route_config *rc,
					     const struct http_headers *req)
{
	const struct virtual_host *vh;
	int i;

	if (!rc->domains.n)
		return rc->default_vh;   /* only "*" (or nothing): no need for a host */
	if ((i = hdrs_find(req, ":authority", 10, 0)) < 0)
		return NULL;
	const char *host = hdrs_value(req, (uint32_t)i);
	size_t len = req->f[i].value_len;
	if (rc->ignore_port)
		len = host_port_start(host, len);

	if ((vh = route_dom_find(&rc->domains, DOM_EXACT, host, len)))
		return vh;
	/* Longest wildcard first; the '*' must cover at least one character. */
	for (uint32_t k = 0; k < rc->nsuffix; k++) {
		uint32_t l = rc->suffix_lens[k];
		if (l < len && (vh = route_dom_find(&rc->domains, DOM_SUFFIX, host + len - l, l)))
			return vh;
	}
	for (uint32_t k = 0; k < rc->nprefix; k++) {
		uint32_t l = rc->prefix_lens[k];
		if (l < len && (vh = route_dom_find(&rc->domains, DOM_PREFIX, host, l)))
			return vh;
	}
	return rc->default_vh;
}

/* ------------------------------------------------------------------------
 * Route matching */

static bool contains_icase(const char *h, size_t hn, const char *n, size_t nn)
{
	if (nn > hn)
		return false;
	for (size_t i = 0; i + nn <= hn; i++)
		if (lc((unsigned char)h[i]) == lc((unsigned char)n[0]) && mem_ieq(h + i, n, nn))
			return true;
	return false;
}

static bool sm_match(const struct str_matcher *sm, const char *v, size_t n)
{
	bool ic = sm->ignore_case;

	switch (sm->kind) {
	case SM_EXACT:
		return n == sm->len && eq_case(v, sm->s, n, ic);
	case SM_PREFIX:
		return n >= sm->len && eq_case(v, sm->s, sm->len, ic);
	case SM_SUFFIX:
		return n >= sm->len && eq_case(v + n - sm->len, sm->s, sm->len, ic);
	case SM_CONTAINS:
		return ic ? contains_icase(v, n, sm->s, sm->len)
			  : memmem(v, n, sm->s, sm->len) != NULL;
	case SM_REGEX:
		return route_re_match(sm->re, v, n);
	}
	return false;
}

bool string_matcher_match(const struct str_matcher *m, const char *v, size_t n)
{
	return sm_match(m, v, n);
}

/* Envoy's HeaderUtility::matchHeaders for one matcher; several fields of
 * the same name are matched as their values joined with ",". */
static bool hm_match(const struct hdr_matcher *m, const struct http_headers *h)
{
	int i = hdrs_find(h, m->name, m->name_len, 0);
	const char *v = "";
	size_t n = 0;
	char stackbuf[JOIN_STACK], *heap = NULL;
	bool match;

	if (i < 0) {
		if (!m->missing_as_empty)
			return m->kind == HM_PRESENT && (m->invert ? m->present : !m->present);
	} else {
		v = hdrs_value(h, (uint32_t)i);
		n = h->f[i].value_len;
		int j = hdrs_find(h, m->name, m->name_len, i + 1);
		if (j >= 0 && m->kind == HM_STRING) {
			size_t total = n;
			for (int k = j; k >= 0; k = hdrs_find(h, m->name, m->name_len, k + 1))
				total += 1 + h->f[k].value_len;
			char *buf = total <= sizeof(stackbuf) ? stackbuf : (heap = xmalloc(total));
			memcpy(buf, v, n);
			for (int k = j; k >= 0; k = hdrs_find(h, m->name, m->name_len, k + 1)) {
				buf[n++] = ',';
				memcpy(buf + n, hdrs_value(h, (uint32_t)k), h->f[k].value_len);
				n += h->f[k].value_len;
			}
			v = buf;
		}
	}
	switch (m->kind) {
	case HM_PRESENT:
		match = m->present;
		break;
	case HM_ANY:
		match = true;
		break;
	default:
		match = sm_match(&m->sm, v, n);
		break;
	}
	xfree(heap);
	return match != m->invert;
}

bool header_match_list_match(const struct header_match_list *l, const struct http_headers *req)
{
	if (!l)
		return true;
	for (uint32_t i = 0; i < l->nhm; i++)
		if (!hm_match(&l->hm[i], req))
			return false;
	return true;
}

bool header_match_list_any(const struct header_match_list *l, const struct http_headers *h)
{
	if (!l)
		return false;
	for (uint32_t i = 0; i < l->nhm; i++)
		if (hm_match(&l->hm[i], h))
			return true;
	return false;
}

/* First value of query parameter name in path (no percent-decoding, as
 * Envoy's route matching does not decode either). */
static bool query_param(const char *path, size_t len, const char *name, size_t nlen,
			const char **val, size_t *vlen)
{
	const char *q = memchr(path, '?', len);
	const char *end = path + len;

	if (!q)
		return false;
	for (const char *p = q + 1; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		if (!amp)
			amp = end;
		const char *eq = memchr(p, '=', (size_t)(amp - p));
		const char *nend = eq ? eq : amp;
		if ((size_t)(nend - p) == nlen && memcmp(p, name, nlen) == 0) {
			*val = eq ? eq + 1 : amp;
			*vlen = eq ? (size_t)(amp - eq - 1) : 0;
			return true;
		}
		p = amp + 1;
	}
	return false;
}

static bool path_match(const struct route *r, const char *p, size_t n)
{
	bool ic = !r->case_sensitive;

	switch (r->pkind) {
	case PM_PREFIX:
		return n >= r->plen && eq_case(p, r->pstr, r->plen, ic);
	case PM_PATH:
		return n == r->plen && eq_case(p, r->pstr, n, ic);
	case PM_SEP_PREFIX:
		return n >= r->plen && eq_case(p, r->pstr, r->plen, ic) &&
		       (n == r->plen || p[r->plen] == '/');
	case PM_REGEX:
		return route_re_match(r->pre, p, n);
	case PM_CONNECT:
		return false;   /* only CONNECT requests, which have no :path */
	}
	return false;
}

static bool route_matches(const struct route *r, const struct http_headers *req,
			  const char *path, size_t len, size_t just)
{
	if (!path_match(r, path, just))
		return false;
	for (uint32_t i = 0; i < r->nhm; i++)
		if (!hm_match(&r->hm[i], req))
			return false;
	for (uint32_t i = 0; i < r->nqm; i++) {
		const struct qp_matcher *q = &r->qm[i];
		const char *v;
		size_t vn;
		if (!query_param(path, len, q->name, q->name_len, &v, &vn))
			return false;
		if (q->has_sm && !sm_match(&q->sm, v, vn))
			return false;
	}
	return true;
}

const struct route_entry *route_match(const struct route_config *rc,
				      const struct http_headers *req,
				      const struct virtual_host **vh_out)
{
	const struct virtual_host *vh = find_vhost(rc, req);
	int i;

	if (vh_out)
		*vh_out = vh;
	if (!vh)
		return NULL;
	if ((i = hdrs_find(req, ":path", 5, 0)) < 0) {
		/* CONNECT (authority-form): only connect_matcher routes apply. */
		size_t ml;
		const char *m = hdrs_get(req, ":method", &ml);
		if (!m || ml != 7 || memcmp(m, "CONNECT", 7))
			return NULL;
		for (uint32_t k = 0; k < vh->nroutes; k++) {
			const struct route *r = &vh->routes[k];
			bool ok = r->pkind == PM_CONNECT;
			for (uint32_t h = 0; ok && h < r->nhm; h++)
				ok = hm_match(&r->hm[h], req);
			if (ok)
				return &r->e;
		}
		return NULL;
	}
	const char *path = hdrs_value(req, (uint32_t)i);
	size_t len = req->f[i].value_len;
	size_t just = path_only_len(path, len);
	for (uint32_t k = 0; k < vh->nroutes; k++)
		if (route_matches(&vh->routes[k], req, path, len, just))
			return &vh->routes[k].e;
	return NULL;
}

const char *route_pick_cluster(const struct route_entry *re, uint64_t rnd,
			       const struct weighted_cluster **wc_out)
{
	if (wc_out)
		*wc_out = NULL;
	if (re->kind != ROUTE_ACTION_ROUTE)
		return NULL;
	if (re->cluster || !re->nwclusters || !re->total_weight)
		return re->cluster;
	/* Envoy: intervals [0,w1), [w1,w1+w2), ... over rnd % total. */
	uint64_t sel = rnd % re->total_weight, end = 0;
	for (uint32_t i = 0; i < re->nwclusters; i++) {
		end += re->wclusters[i].weight;
		if (sel < end) {
			if (wc_out)
				*wc_out = &re->wclusters[i];
			return re->wclusters[i].name;
		}
	}
	return NULL;   /* unreachable: the weights add up to total_weight */
}

/* ------------------------------------------------------------------------
 * Hash policies (consistent-hash load balancing) */

#define HASH_MAX_VALUES 32   /* header values sorted on the stack; more are hashed in order */

struct sv {
	const char *p;
	size_t n;
};

/* absl::string_view ordering: bytes, then the shorter first. */
static int sv_cmp(const struct sv *a, const struct sv *b)
{
	int r = memcmp(a->p, b->p, MIN(a->n, b->n));
	return r ? r : (a->n > b->n) - (a->n < b->n);
}

/* Envoy's HeaderHashMethod: all values of the header, sorted (so the order
 * they came in does not matter), hashed in a chain (each value's xxHash64
 * seeded with the previous result, starting at 0). */
static bool hash_header(const struct hash_policy *p, const struct http_headers *h, uint64_t *out)
{
	struct sv v[HASH_MAX_VALUES];
	size_t n = 0;
	uint64_t rest = 0;
	bool extra = false;
	int i = hdrs_find(h, p->name, p->name_len, 0);

	if (i < 0)
		return false;
	for (; i >= 0; i = hdrs_find(h, p->name, p->name_len, i + 1)) {
		if (n == HASH_MAX_VALUES) {   /* pathological: hash the rest unsorted */
			rest = XXH64(hdrs_value(h, (uint32_t)i), h->f[i].value_len, rest);
			extra = true;
			continue;
		}
		struct sv x = { hdrs_value(h, (uint32_t)i), h->f[i].value_len };
		size_t k = n++;
		for (; k > 0 && sv_cmp(&v[k - 1], &x) > 0; k--)   /* insertion sort */
			v[k] = v[k - 1];
		v[k] = x;
	}
	uint64_t sorted = 0;
	for (size_t k = 0; k < n; k++)
		sorted = XXH64(v[k].p, v[k].n, sorted);
	*out = extra ? XXH64(&rest, sizeof(rest), sorted) : sorted;
	return true;
}

/* Envoy's Utility::parseCookieValue: the first `name=value` among the
 * ';'-separated pairs of every cookie header; surrounding double quotes
 * are removed.  An empty value counts as absent. */
static bool hash_cookie(const struct hash_policy *p, const struct http_headers *h, uint64_t *out)
{
	for (int i = hdrs_find(h, "cookie", 6, 0); i >= 0; i = hdrs_find(h, "cookie", 6, i + 1)) {
		const char *s = hdrs_value(h, (uint32_t)i), *end = s + h->f[i].value_len;
		while (s < end) {
			const char *semi = memchr(s, ';', (size_t)(end - s));
			const char *pe = semi ? semi : end;
			while (s < pe && (*s == ' ' || *s == '\t'))
				s++;
			const char *eq = memchr(s, '=', (size_t)(pe - s));
			if (eq && (size_t)(eq - s) == p->name_len && !memcmp(s, p->name, p->name_len)) {
				const char *v = eq + 1;
				size_t n = (size_t)(pe - v);
				if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
					v++;
					n -= 2;
				}
				if (!n)
					return false;
				*out = XXH64(v, n, 0);
				return true;
			}
			s = pe + 1;
		}
	}
	return false;
}

/* Envoy's generated cookie value: Hex::uint64ToHex(xxHash64(peer + local))
 * over the addresses' asString() forms. */
static uint64_t cookie_value(const struct route_hash_conn *conn)
{
	char buf[160];
	sockaddr_format(conn->peer, buf, 80);
	size_t n = strlen(buf);
	sockaddr_format(conn->local, buf + n, sizeof(buf) - n);
	return XXH64(buf, strlen(buf), 0);
}

bool route_hash(const struct route_entry *re, const struct http_headers *req,
		const struct route_hash_conn *conn, struct route_cookies *gen, uint64_t *hash_out)
{
	const struct route *r = route_of(re);
	const char *peer_ip = conn ? conn->peer_ip : NULL;
	bool have = false, can_gen = gen && conn && conn->peer && conn->local;
	uint64_t hash = 0;

	if (gen)
		gen->policies = 0;
	for (uint32_t k = 0; k < r->nhp; k++) {
		const struct hash_policy *p = &r->hp[k];
		uint64_t h = 0;
		bool got = false;
		switch (p->kind) {
		case HP_HEADER:
			got = hash_header(p, req, &h);
			break;
		case HP_COOKIE:
			got = hash_cookie(p, req, &h);
			if (!got && p->set_cookie_tail && can_gen) {
				char hex[17];
				if (!gen->policies)
					gen->value = cookie_value(conn);
				gen->policies |= 1ull << k;   /* k < ROUTE_HASH_POLICIES_MAX */
				snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)gen->value);
				h = XXH64(hex, 16, 0);
				got = true;
			}
			break;
		case HP_QUERY: {
			int i = hdrs_find(req, ":path", 5, 0);
			const char *v;
			size_t vn;
			if (i >= 0 && query_param(hdrs_value(req, (uint32_t)i), req->f[i].value_len,
						  p->name, p->name_len, &v, &vn)) {
				h = XXH64(v, vn, 0);
				got = true;
			}
			break;
		}
		case HP_SOURCE_IP:
			if (peer_ip && *peer_ip) {
				h = XXH64(peer_ip, strlen(peer_ip), 0);
				got = true;
			}
			break;
		case HP_NONE:
			break;
		}
		if (got) {
			/* Envoy: rotate the running hash so that equal policies do not
			 * cancel each other out, then mix in the new one. */
			hash = (have ? (hash << 1) | (hash >> 63) : 0) ^ h;
			have = true;
		}
		if (p->terminal && have)
			break;
	}
	if (have)
		*hash_out = hash;
	return have;
}

void route_add_set_cookies(const struct route_entry *re, const struct route_cookies *gen,
			   struct http_headers *resp)
{
	const struct route *r = route_of(re);
	char buf[512];

	for (uint64_t m = gen ? gen->policies : 0; m; m &= m - 1) {
		const struct hash_policy *p = &r->hp[__builtin_ctzll(m)];
		size_t need = p->name_len + 20 + p->set_cookie_tail_len + 1;
		char *v = need <= sizeof(buf) ? buf : xmalloc(need);   /* long attributes only */
		int n = snprintf(v, need, "%s=\"%016llx\"%s", p->name, (unsigned long long)gen->value,
				 p->set_cookie_tail);
		hdrs_add(resp, "set-cookie", 10, v, (size_t)n);
		if (v != buf)
			free(v);
	}
}

/* ------------------------------------------------------------------------
 * Header mutations */

/* Envoy's HeaderParser::evaluateHeaders: removals, then additions whose
 * conditions are all judged against the map as it was before this level
 * added anything; overwrites are applied before appends. */
void hdr_ops_apply(const struct hdr_ops *o, struct http_headers *h)
{
	enum { SKIP, OVERWRITE, ADD };
	uint8_t small[32], *what = small;

	for (uint32_t i = 0; i < o->nremove; i++)
		hdrs_del(h, o->remove[i]);
	if (!o->nadd)
		return;
	if (o->nadd > sizeof(small))
		what = xmalloc(o->nadd);
	for (uint32_t i = 0; i < o->nadd; i++) {
		const struct hdr_add *a = &o->add[i];
		bool exists;
		what[i] = SKIP;
		if (!a->value_len && !a->keep_empty)
			continue;
		switch (a->action) {
		case HDR_APPEND_IF_EXISTS_OR_ADD:
			what[i] = ADD;
			break;
		case HDR_ADD_IF_ABSENT:
			what[i] = hdrs_find(h, a->key, a->key_len, 0) < 0 ? ADD : SKIP;
			break;
		case HDR_OVERWRITE_IF_EXISTS:
			exists = hdrs_find(h, a->key, a->key_len, 0) >= 0;
			what[i] = exists ? OVERWRITE : SKIP;
			break;
		case HDR_OVERWRITE_IF_EXISTS_OR_ADD:
			what[i] = OVERWRITE;
			break;
		}
	}
	for (uint32_t i = 0; i < o->nadd; i++)
		if (what[i] == OVERWRITE)
			hdrs_set(h, o->add[i].key, o->add[i].value, o->add[i].value_len);
	for (uint32_t i = 0; i < o->nadd; i++)
		if (what[i] == ADD)
			hdrs_add(h, o->add[i].key, o->add[i].key_len, o->add[i].value,
				 o->add[i].value_len);
	if (what != small)
		xfree(what);
}

void header_adds_apply(const struct header_adds *a, struct http_headers *h)
{
	if (a)
		hdr_ops_apply(&a->ops, h);
}

/* The weighted cluster's level first, then route, virtual host, route
 * configuration (Envoy's default: later levels win), or the reverse of the
 * last three with most_specific_header_mutations_wins. */
static void apply_levels(const struct route_config *rc, const struct virtual_host *vh,
			 const struct route_entry *re, const struct weighted_cluster *wc,
			 struct http_headers *h, bool request)
{
	const struct hdr_mutations *lv[3] = {
		re ? &route_of(re)->hdrs : NULL, vh ? &vh->hdrs : NULL, rc ? &rc->hdrs : NULL,
	};

	if (wc && wc->headers) {
		const struct hdr_mutations *m = wc->headers;
		hdr_ops_apply(request ? &m->req : &m->resp, h);
	}
	for (int k = 0; k < 3; k++) {
		const struct hdr_mutations *m = lv[rc && rc->most_specific_wins ? 2 - k : k];
		if (m)
			hdr_ops_apply(request ? &m->req : &m->resp, h);
	}
}

/* Length of the :path prefix a prefix_rewrite replaces. */
static size_t matched_len(const struct route *r, size_t just)
{
	if (r->pkind == PM_PREFIX || r->pkind == PM_SEP_PREFIX)
		return MIN((size_t)r->plen, just);
	return just;   /* path and regex routes replace the whole path */
}

/* Envoy's Utility::updateAuthority with append_x_forwarded_host. */
static void rewrite_host(const struct route *r, struct http_headers *req)
{
	size_t hlen = 0, xlen = 0;
	const char *host = hdrs_get(req, ":authority", &hlen);

	if (r->append_xfh && host && hlen) {
		const char *xfh = hdrs_get(req, "x-forwarded-host", &xlen);
		if (!xfh) {
			hdrs_set(req, "x-forwarded-host", host, hlen);
		} else {
			const char *last = xfh + xlen;
			while (last > xfh && last[-1] != ',')
				last--;
			/* the last element, trimmed of whitespace */
			const char *le = xfh + xlen;
			while (last < le && (*last == ' ' || *last == '\t'))
				last++;
			while (le > last && (le[-1] == ' ' || le[-1] == '\t'))
				le--;
			if ((size_t)(le - last) != hlen || memcmp(last, host, hlen)) {
				char *v = xmalloc(xlen + 1 + hlen);
				memcpy(v, xfh, xlen);
				v[xlen] = ',';
				memcpy(v + xlen + 1, host, hlen);
				hdrs_set(req, "x-forwarded-host", v, xlen + 1 + hlen);
				xfree(v);
			}
		}
	}
	hdrs_set(req, ":authority", r->host_rewrite, strlen(r->host_rewrite));
}

static void rewrite_path(const struct route *r, struct http_headers *req)
{
	size_t len = 0, nlen;
	const char *path = hdrs_get(req, ":path", &len);
	char *np;

	if (!path)
		return;
	size_t just = path_only_len(path, len);
	if (r->prefix_rewrite) {
		size_t m = matched_len(r, just);
		nlen = r->prefix_rewrite_len + (len - m);
		np = xmalloc(nlen + 1);
		memcpy(np, r->prefix_rewrite, r->prefix_rewrite_len);
		memcpy(np + r->prefix_rewrite_len, path + m, len - m);
	} else {
		size_t rlen;
		char *rw = route_re_replace_all(r->rewrite_re, path, just, r->rewrite_sub, &rlen);
		nlen = rlen + (len - just);
		np = xrealloc(rw, nlen + 1);
		memcpy(np + rlen, path + just, len - just);
	}
	np[nlen] = '\0';
	hdrs_set(req, ":path", np, nlen);
	xfree(np);
}

void route_apply_request(const struct route_config *rc, const struct virtual_host *vh,
			 const struct route_entry *re, const struct weighted_cluster *wc,
			 struct http_headers *req)
{
	/* Envoy's RouteEntryImplBase::finalizeRequestHeaders order: header
	 * mutations, then host rewrite, then path rewrite.  Mutations can
	 * touch neither :authority nor :path, so the order of the two halves
	 * is only visible in x-forwarded-host. */
	apply_levels(rc, vh, re, wc, req, true);
	if (!re || re->kind != ROUTE_ACTION_ROUTE)
		return;
	const struct route *r = route_of(re);
	if (r->host_rewrite)
		rewrite_host(r, req);
	if (r->prefix_rewrite || r->rewrite_re)
		rewrite_path(r, req);
}

void route_apply_response(const struct route_config *rc, const struct virtual_host *vh,
			  const struct route_entry *re, const struct weighted_cluster *wc,
			  struct http_headers *resp)
{
	apply_levels(rc, vh, re, wc, resp, false);
}

/* ------------------------------------------------------------------------
 * Redirects */

struct wbuf {
	char *p;                     /* not owned: the caller's buffer */
	size_t cap, len;
	bool overflow;
};

static void wb_put(struct wbuf *b, const char *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* Envoy's RouteEntryImplBase::processRequestHost: the request host with its
 * port dropped when a new port is set, or when the scheme changes and the
 * port was the old scheme's default. */
static size_t redirect_host_len(const char *host, size_t len, const char *new_scheme,
				bool port_redirect, bool req_is_tls)
{
	size_t end = len;

	if (!len)
		return 0;
	if (host[0] == '[') {
		for (size_t i = len - 1; i > 0; i--)
			if (host[i] == ':' && host[i - 1] == ']') {
				end = i;
				break;
			}
	} else {
		const char *c = memrchr(host, ':', len);
		if (c)
			end = (size_t)(c - host);
	}
	if (end == len)
		return len;
	const char *port = host + end;
	size_t plen = len - end;
	const char *req_scheme = req_is_tls ? "https" : "http";
	bool remove = port_redirect;
	if (strcmp(new_scheme, req_scheme) != 0) {
		remove |= req_is_tls && plen == 4 && !memcmp(port, ":443", 4);
		remove |= !req_is_tls && plen == 3 && !memcmp(port, ":80", 3);
	}
	return remove ? end : len;
}

int route_redirect_location(const struct route_entry *re, const struct http_headers *req,
			    bool req_is_tls, char *buf, size_t buflen)
{
	const struct route *r = route_of(re);
	struct wbuf b = { buf, buflen ? buflen - 1 : 0, 0, buflen == 0 };
	const char *scheme = r->scheme_redirect ? r->scheme_redirect
						: req_is_tls ? "https" : "http";
	size_t alen = 0, plen = 0;
	const char *auth = hdrs_get(req, ":authority", &alen);
	const char *path = hdrs_get(req, ":path", &plen);
	char port[8];

	if (!auth)
		auth = "";
	if (!path)
		path = "";
	wb_put(&b, scheme, strlen(scheme));
	wb_put(&b, "://", 3);
	if (r->host_redirect) {
		size_t hl = strlen(r->host_redirect);
		/* with port_redirect, a port in host_redirect is replaced too */
		if (r->port_redirect)
			hl = host_port_start(r->host_redirect, hl);
		wb_put(&b, r->host_redirect, hl);
	} else {
		wb_put(&b, auth, redirect_host_len(auth, alen, scheme, r->port_redirect != 0,
						     req_is_tls));
	}
	if (r->port_redirect) {
		int n = snprintf(port, sizeof(port), ":%u", r->port_redirect);
		wb_put(&b, port, (size_t)n);
	}

	size_t path_at = b.len;
	const char *q = memchr(path, '?', plen);
	if (r->path_redirect) {
		/* A query in path_redirect replaces the request's (and is kept
		 * even with strip_query); otherwise the request's is kept. */
		wb_put(&b, r->path_redirect, strlen(r->path_redirect));
		if (!r->path_redirect_has_query && q)
			wb_put(&b, q, plen - (size_t)(q - path));
	} else if (r->prefix_rewrite) {
		size_t m = matched_len(r, path_only_len(path, plen));
		wb_put(&b, r->prefix_rewrite, r->prefix_rewrite_len);
		wb_put(&b, path + m, plen - m);
	} else {
		wb_put(&b, path, plen);
	}
	if (b.overflow)
		return -1;
	if (b.len == path_at || buf[path_at] != '/') {
		if (b.len >= b.cap)
			return -1;
		memmove(buf + path_at + 1, buf + path_at, b.len - path_at);
		buf[path_at] = '/';
		b.len++;
	}
	if (r->strip_query && !r->path_redirect_has_query) {
		char *qq = memchr(buf + path_at, '?', b.len - path_at);
		if (qq)
			b.len = (size_t)(qq - buf);
	}
	buf[b.len] = '\0';
	return (int)b.len;
}

bool route_qp_list_match(const struct qp_matcher *qm, uint32_t n, const char *path, size_t len)
{
	for (uint32_t i = 0; i < n; i++) {
		const char *v;
		size_t vn;
		if (!query_param(path, len, qm[i].name, qm[i].name_len, &v, &vn))
			return false;
		if (qm[i].has_sm && !sm_match(&qm[i].sm, v, vn))
			return false;
	}
	return true;
}
