/* cp_catalog_authz.c - the catalog's authorization: a service's `allow`
 * (namespace / service account shortcut) and `rules` (the shape of an Istio
 * AuthorizationPolicy's rules: action, from, to, when) compiled into the
 * `rules` of two RBAC filters, as istiod does: a DENY filter evaluated
 * first, then an ALLOW filter.  A service without ALLOW rules (and without
 * `allow`) gets no ALLOW filter, so whatever no DENY rule matches passes.
 *
 * Istio's semantics: the entries of `from` (and of `to`) are alternatives;
 * the fields of one entry and the conditions of `when` must all hold; the
 * values of one field are alternatives; `not_*` fields must match none.
 * Value forms as Istio's: "exact", "prefix*", "*suffix", "*" (any). */
#include "cp_catalog.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../proxy/common.h"

/* field paths for error messages are built by nesting snprintf into fixed
 * buffers: a path cut short in a message is harmless */
#pragma GCC diagnostic ignored "-Wformat-truncation"

typedef json_t *conv_fn(struct cat *c, const json_t *v, const char *path, const char *arg);

static json_t *any_node(void)
{
	return json_pack("{s:b}", "any", 1);
}

/* All of list (stolen): `any` for none, the node itself for one. */
static json_t *all_of(json_t *list, bool perm)
{
	size_t n = json_array_size(list);
	if (n <= 1) {
		json_t *x = n ? json_incref(json_array_get(list, 0)) : any_node();
		json_decref(list);
		return x;
	}
	return perm ? json_pack("{s:{s:o}}", "and_rules", "rules", list)
		    : json_pack("{s:{s:o}}", "and_ids", "ids", list);
}

/* Any of list (stolen, at least one entry). */
static json_t *any_of(json_t *list, bool perm)
{
	if (json_array_size(list) == 1) {
		json_t *x = json_incref(json_array_get(list, 0));
		json_decref(list);
		return x;
	}
	return perm ? json_pack("{s:{s:o}}", "or_rules", "rules", list)
		    : json_pack("{s:{s:o}}", "or_ids", "ids", list);
}

static json_t *not_of(json_t *x, bool perm)
{
	return json_pack("{s:o}", perm ? "not_rule" : "not_id", x);
}

/* An Istio value form s (at node, for positions) -> a StringMatcher (new
 * reference) with pfx in front of exact and prefix forms; "*" sets *any and
 * returns NULL; a bad form sets *err (c->err). */
static json_t *wild(struct cat *c, const char *s, const json_t *node, const char *path,
		    const char *pfx, bool *any, bool *err)
{
	*any = *err = false;
	if (!s || !*s) {
		*err = true;
		cat_bad(c, NULL, NULL, node, path, "expected a non-empty string");
		return NULL;
	}
	if (!strcmp(s, "*")) {
		*any = true;
		return NULL;
	}
	size_t n = strlen(s);
	const char *star = strchr(s, '*');
	if (star && ((star != s && star != s + n - 1) || strchr(star + 1, '*'))) {
		*err = true;
		cat_bad(c, NULL, NULL, node, path, "'*' may only start or end a value "
			"(\"prefix*\", \"*suffix\", \"*\")");
		return NULL;
	}
	if (s[0] == '*')
		return json_pack("{s:s}", "suffix", s + 1);
	char *full = xasprintf("%s%.*s", pfx, (int)(star ? n - 1 : n), s);
	json_t *sm = json_pack("{s:s}", star ? "prefix" : "exact", full);
	free(full);
	return sm;
}

/* ---- converters: one value -> a Principal or Permission node -------------------- */

static json_t *conv_principal(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	(void)arg;
	const char *s = json_string_value(v);
	bool any, err;
	if (s && !strncmp(s, "spiffe://", 9))   /* Istio's form has no scheme; accept both */
		s += 9;
	json_t *sm = wild(c, s, v, path, "spiffe://", &any, &err);
	if (err)
		return NULL;
	if (any)   /* any authenticated peer (a certificate of the mesh CA) */
		return json_pack("{s:{}}", "authenticated");
	return json_pack("{s:{s:o}}", "authenticated", "principal_name", sm);
}

static json_t *conv_namespace(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	(void)arg;
	const char *s = json_string_value(v);
	if (!s || !*s || strchr(s, '/') || (strchr(s, '*') && strcmp(s, "*"))) {
		cat_bad(c, NULL, NULL, v, path, "expected a namespace name or \"*\"");
		return NULL;
	}
	if (!strcmp(s, "*"))
		return json_pack("{s:{}}", "authenticated");
	char *pfx = xasprintf("spiffe://%s/ns/%s/sa/", c->td, s);
	json_t *n = json_pack("{s:{s:{s:s}}}", "authenticated", "principal_name", "prefix", pfx);
	free(pfx);
	return n;
}

/* "10.0.0.0/8", "192.168.1.7", "fd00::/8" -> direct_remote_ip (the peer). */
static json_t *conv_ip(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	(void)arg;
	const char *s = json_string_value(v);
	char addr[64];
	unsigned char buf[16];
	long len = -1;
	if (s && strlen(s) < sizeof(addr)) {
		const char *sl = strchr(s, '/');
		snprintf(addr, sizeof(addr), "%.*s", (int)(sl ? (size_t)(sl - s) : strlen(s)), s);
		bool v6 = strchr(addr, ':') != NULL;
		int max = v6 ? 128 : 32;
		char *end = NULL;
		len = sl ? strtol(sl + 1, &end, 10) : max;
		if ((sl && (!sl[1] || *end)) || len < 0 || len > max ||
		    inet_pton(v6 ? AF_INET6 : AF_INET, addr, buf) != 1)
			len = -1;
	}
	if (len < 0) {
		cat_bad(c, NULL, NULL, v, path, "expected an address or a CIDR block "
			"(\"10.0.0.0/8\", \"fd00::1\")");
		return NULL;
	}
	return json_pack("{s:{s:s, s:I}}", "direct_remote_ip", "address_prefix", addr, "prefix_len",
			 (json_int_t)len);
}

static json_t *conv_method(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	(void)arg;
	const char *s = json_string_value(v);
	for (const char *p = s; p && *p; p++)
		if (!isgraph((unsigned char)*p))
			s = NULL;
	if (!s || !*s) {
		cat_bad(c, NULL, NULL, v, path, "expected an HTTP method (GET, POST, ...)");
		return NULL;
	}
	return json_pack("{s:{s:s, s:{s:s}}}", "header", "name", ":method", "string_match", "exact",
			 s);
}

static json_t *conv_path(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	(void)arg;
	const char *s = json_string_value(v);
	bool any, err;
	if (s && *s && s[0] != '/' && s[0] != '*') {
		cat_bad(c, NULL, NULL, v, path, "a path starts with '/' (or is \"*suffix\", \"*\")");
		return NULL;
	}
	json_t *sm = wild(c, json_string_value(v), v, path, "", &any, &err);
	if (err)
		return NULL;
	return any ? any_node() : json_pack("{s:{s:o}}", "url_path", "path", sm);
}

static json_t *conv_port(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	(void)arg;
	long port = -1;
	if (json_is_integer(v))
		port = (long)json_integer_value(v);
	else if (json_is_string(v) && *json_string_value(v)) {
		char *end;
		port = strtol(json_string_value(v), &end, 10);
		if (*end)
			port = -1;
	}
	if (port <= 0 || port > 65535) {
		cat_bad(c, NULL, NULL, v, path, "expected a port number");
		return NULL;
	}
	return json_pack("{s:I}", "destination_port", (json_int_t)port);
}

/* A request header (arg: its lowercase name) with an Istio value form. */
static json_t *conv_header(struct cat *c, const json_t *v, const char *path, const char *arg)
{
	bool any, err;
	json_t *sm = wild(c, json_string_value(v), v, path, "", &any, &err);
	if (err)
		return NULL;
	if (any)
		return json_pack("{s:{s:s, s:b}}", "header", "name", arg, "present_match", 1);
	return json_pack("{s:{s:s, s:o}}", "header", "name", arg, "string_match", sm);
}

/* ---- clauses ---------------------------------------------------------------------- */

/* A conv_fn and its argument, as cat_map's argument. */
struct conv_call {
	conv_fn *fn;
	const char *arg;
};

static json_t *conv_elem(struct cat *c, const json_t *v, const char *path, const void *arg)
{
	const struct conv_call *k = arg;
	return k->fn(c, v, path, k->arg);
}

/* obj[key]: a non-empty list, every value converted: any of them (new
 * reference), NULL with c->err. */
static json_t *values(struct cat *c, const json_t *obj, const char *key, const char *path,
		      conv_fn *fn, const char *arg, bool perm)
{
	const json_t *l = json_object_get(obj, key);
	char p[400];
	snprintf(p, sizeof(p), "%s.%s", path, key);
	if (!json_is_array(l) || !json_array_size(l)) {
		cat_bad(c, obj, key, NULL, p, "'%s' must be a non-empty list", key);
		return NULL;
	}
	const struct conv_call call = { fn, arg };
	json_t *out = cat_map(c, l, p, conv_elem, &call);
	return out ? any_of(out, perm) : NULL;
}

struct field {
	const char *key;      /* "principals"; "not_principals" is its negation */
	conv_fn *fn;
	bool http;            /* HTTP services only */
};

static const struct field source_fields[] = {
	{ "principals", conv_principal, false },
	{ "namespaces", conv_namespace, false },
	{ "ip_blocks", conv_ip, false },
	{ NULL, NULL, false },
};

static const struct field operation_fields[] = {
	{ "methods", conv_method, true },
	{ "paths", conv_path, true },
	{ "ports", conv_port, false },
	{ NULL, NULL, false },
};

/* One source or operation: all of its fields (new reference). */
static json_t *clause(struct cat *c, const json_t *obj, const char *path,
		      const struct field *fields, bool perm, bool tcp)
{
	const char *keys[16];
	size_t nk = 0;
	char notk[8][32];
	for (size_t i = 0; fields[i].key; i++) {
		snprintf(notk[i], sizeof(notk[i]), "not_%s", fields[i].key);
		keys[nk++] = fields[i].key;
		keys[nk++] = notk[i];
	}
	keys[nk] = NULL;
	if (cat_check_keys(c, obj, path, keys))
		return NULL;
	if (!json_object_size(obj)) {
		cat_bad(c, NULL, NULL, obj, path, "an empty entry (give at least one of %s, ...)",
			fields[0].key);
		return NULL;
	}
	json_t *all = json_array();
	for (size_t i = 0; fields[i].key; i++)
		for (int neg = 0; neg < 2; neg++) {
			const char *k = neg ? notk[i] : fields[i].key;
			if (!json_object_get(obj, k))
				continue;
			if (tcp && fields[i].http) {
				char p[400];
				snprintf(p, sizeof(p), "%s.%s", path, k);
				cat_bad(c, obj, k, NULL, p, "'%s' needs an HTTP service (this one is "
					"protocol: tcp)", k);
				goto fail;
			}
			json_t *n = values(c, obj, k, path, fields[i].fn, NULL, perm);
			if (!n)
				goto fail;
			json_array_append_new(all, neg ? not_of(n, perm) : n);
		}
	return all_of(all, perm);
fail:
	json_decref(all);
	return NULL;
}

/* clause()'s arguments but the entry, as cat_map's argument. */
struct clause_call {
	const struct field *fields;
	bool perm, tcp;
};

static json_t *clause_elem(struct cat *c, const json_t *v, const char *path, const void *arg)
{
	const struct clause_call *k = arg;
	return clause(c, v, path, k->fields, k->perm, k->tcp);
}

/* `from` / `to`: one entry or a list of alternatives (new reference). */
static json_t *alternatives(struct cat *c, const json_t *r, const char *key, const char *path,
			    const struct field *fields, bool perm, bool tcp)
{
	const json_t *v = json_object_get(r, key);
	char p[400];
	snprintf(p, sizeof(p), "%s.%s", path, key);
	if (json_is_object(v))
		return clause(c, v, p, fields, perm, tcp);
	if (!json_is_array(v) || !json_array_size(v)) {
		cat_bad(c, r, key, NULL, p, "'%s' must be a mapping or a non-empty list of them", key);
		return NULL;
	}
	const struct clause_call call = { fields, perm, tcp };
	json_t *out = cat_map(c, v, p, clause_elem, &call);
	return out ? any_of(out, perm) : NULL;
}

/* when: [{key, values, not_values}]: each condition goes to the
 * permissions (request.headers[..], destination.port) or the principals
 * (source.*) of the policy. */
static int conditions(struct cat *c, const json_t *r, const char *path, bool tcp, json_t *perms,
		      json_t *princs)
{
	static const char *const keys[] = { "key", "values", "not_values", NULL };
	const json_t *w = json_object_get(r, "when");
	char p[400];
	snprintf(p, sizeof(p), "%s.when", path);
	if (!json_is_array(w) || !json_array_size(w))
		return cat_bad(c, r, "when", NULL, p, "'when' must be a non-empty list of "
			       "{key, values, not_values}");
	for (size_t i = 0; i < json_array_size(w); i++) {
		const json_t *cond = json_array_get(w, i);
		char pi[480], hdr[128];
		int rc = 0;
		snprintf(pi, sizeof(pi), "%s[%zu]", p, i);
		if (cat_check_keys(c, cond, pi, keys))
			return -1;
		const char *key = cat_get_str(c, cond, "key", pi, NULL, &rc);
		if (rc)
			return -1;
		conv_fn *fn = NULL;
		const char *arg = NULL;
		bool perm = true;
		size_t kl = strlen(key);
		if (!strncmp(key, "request.headers[", 16) && kl > 17 && key[kl - 1] == ']' &&
		    kl - 17 < sizeof(hdr)) {
			for (size_t k = 0; k < kl - 17; k++)
				hdr[k] = (char)tolower((unsigned char)key[16 + k]);
			hdr[kl - 17] = 0;
			if (tcp)
				return cat_bad(c, cond, "key", NULL, pi, "'%s' needs an HTTP service "
					       "(this one is protocol: tcp)", key);
			fn = conv_header;
			arg = hdr;
		} else if (!strcmp(key, "source.ip")) {
			fn = conv_ip;
			perm = false;
		} else if (!strcmp(key, "source.principal")) {
			fn = conv_principal;
			perm = false;
		} else if (!strcmp(key, "source.namespace")) {
			fn = conv_namespace;
			perm = false;
		} else if (!strcmp(key, "destination.port")) {
			fn = conv_port;
		} else {
			return cat_bad(c, cond, "key", NULL, pi, "unsupported key '%s' (supported: "
				       "request.headers[NAME], source.ip, source.principal, "
				       "source.namespace, destination.port)", key);
		}
		if (!json_object_get(cond, "values") && !json_object_get(cond, "not_values"))
			return cat_bad(c, NULL, NULL, cond, pi, "'values' or 'not_values' is required");
		json_t *dst = perm ? perms : princs;
		if (json_object_get(cond, "values")) {
			json_t *n = values(c, cond, "values", pi, fn, arg, perm);
			if (!n)
				return -1;
			json_array_append_new(dst, n);
		}
		if (json_object_get(cond, "not_values")) {
			json_t *n = values(c, cond, "not_values", pi, fn, arg, perm);
			if (!n)
				return -1;
			json_array_append_new(dst, not_of(n, perm));
		}
	}
	return 0;
}

/* One rule -> an RBAC Policy (new reference); its action in *deny. */
static json_t *rule(struct cat *c, const json_t *r, const char *path, bool tcp, bool *deny)
{
	static const char *const keys[] = { "action", "from", "to", "when", NULL };
	int rc = 0;
	if (cat_check_keys(c, r, path, keys))
		return NULL;
	const char *action = cat_get_str(c, r, "action", path, "ALLOW", &rc);
	if (rc)
		return NULL;
	if (strcmp(action, "ALLOW") && strcmp(action, "DENY")) {
		cat_bad(c, r, "action", NULL, path, "'action' must be ALLOW or DENY (%s is not "
			"supported)", action);
		return NULL;
	}
	*deny = !strcmp(action, "DENY");
	json_t *perms = json_array(), *princs = json_array();
	if (json_object_get(r, "to")) {
		json_t *n = alternatives(c, r, "to", path, operation_fields, true, tcp);
		if (!n)
			goto fail;
		json_array_append_new(perms, n);
	}
	if (json_object_get(r, "from")) {
		json_t *n = alternatives(c, r, "from", path, source_fields, false, tcp);
		if (!n)
			goto fail;
		json_array_append_new(princs, n);
	}
	if (json_object_get(r, "when") && conditions(c, r, path, tcp, perms, princs))
		goto fail;
	return json_pack("{s:[o], s:[o]}", "permissions", all_of(perms, true), "principals",
			 all_of(princs, false));
fail:
	json_decref(perms);
	json_decref(princs);
	return NULL;
}

/* allow: [{from: {namespace, serviceAccount?}}] -> the principals of the
 * `catalog-allow` policy (new reference; empty for `allow: []`). */
static json_t *allow_principals(struct cat *c, const json_t *svc, const json_t *allow,
				const char *path)
{
	static const char *const keys[] = { "from", NULL };
	if (!json_is_array(allow)) {
		cat_bad(c, svc, "allow", NULL, path, "'allow' must be a list of {from: {namespace, "
			"serviceAccount}}");
		return NULL;
	}
	json_t *out = json_array();
	for (size_t i = 0; i < json_array_size(allow); i++) {
		const json_t *a = json_array_get(allow, i), *from;
		char p[128], id[512];
		snprintf(p, sizeof(p), "%s[%zu]", path, i);
		if (cat_check_keys(c, a, p, keys))
			goto fail;
		if (!(from = json_object_get(a, "from"))) {
			cat_bad(c, NULL, NULL, a, p, "'from' is required");
			goto fail;
		}
		strcat(p, ".from");
		if (cat_spiffe(c, from, p, false, id, sizeof(id)))
			goto fail;
		bool prefix = id[strlen(id) - 1] == '/';
		json_array_append_new(out, json_pack("{s:{s:{s:s}}}", "authenticated", "principal_name",
						     prefix ? "prefix" : "exact", id));
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}

int cat_authz_compile(struct cat *c, const json_t *svc, const char *path, bool tcp,
		      json_t **deny, json_t **allow)
{
	json_t *dp = json_object(), *ap = json_object();
	bool has_allow = false;
	char p[400];
	*deny = *allow = NULL;
	const json_t *al = json_object_get(svc, "allow");
	if (al) {
		snprintf(p, sizeof(p), "%s.allow", path);
		json_t *pr = allow_principals(c, svc, al, p);
		if (!pr)
			goto fail;
		has_allow = true;
		if (json_array_size(pr))
			json_object_set_new(ap, "catalog-allow", json_pack(
				"{s:[{s:b}], s:[{s:{s:o}}]}", "permissions", "any", 1,
				"principals", "or_ids", "ids", pr));
		else
			json_decref(pr);   /* allow: [] -- an ALLOW filter without policies: nobody */
	}
	const json_t *rules = json_object_get(svc, "rules");
	if (rules && !json_is_array(rules)) {
		snprintf(p, sizeof(p), "%s.rules", path);
		cat_bad(c, svc, "rules", NULL, p, "'rules' must be a list of {action, from, to, when}");
		goto fail;
	}
	for (size_t i = 0; i < json_array_size(rules); i++) {
		bool is_deny = false;
		snprintf(p, sizeof(p), "%s.rules[%zu]", path, i);
		json_t *pol = rule(c, json_array_get(rules, i), p, tcp, &is_deny);
		if (!pol)
			goto fail;
		char name[32];
		snprintf(name, sizeof(name), "rules[%zu]", i);
		json_object_set_new(is_deny ? dp : ap, name, pol);
		has_allow |= !is_deny;
	}
	if (json_object_size(dp))
		*deny = json_pack("{s:s, s:O}", "action", "DENY", "policies", dp);
	if (has_allow)
		*allow = json_pack("{s:s, s:O}", "action", "ALLOW", "policies", ap);
	json_decref(dp);
	json_decref(ap);
	return 0;
fail:
	json_decref(dp);
	json_decref(ap);
	return -1;
}
