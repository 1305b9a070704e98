/* per_filter.c - typed_per_filter_config of routes, virtual hosts and route
 * configurations (Envoy's Router::PerFilterConfigs).
 *
 * The map is keyed by an HTTP filter's name (http_filters[].name); each value
 * is an Any parsed by the filter its @type names, or a
 * envoy.config.route.v3.FilterConfig {config, disabled, is_optional}:
 *  - disabled: true      the filter is off for this route (config ignored);
 *  - config: {}          (no @type) the filter is explicitly enabled, with
 *                        its filter-level config (for http_filters[].disabled);
 *  - config: Any         as a bare Any; is_optional: an unknown @type or a
 *                        filter without per-route config is skipped.
 * Envoy finds the parser by @type and never checks the name against the
 * chain, so a name no chain filter has is validated and dropped (a route
 * table may serve listeners with different chains).  Remora's one extra
 * check: a name of the chain must be configured with that filter's own type
 * (Envoy would hand the filter a config it cannot use and ignore it). */
#include "route-t.h"
#include "proxy/filter.h"
#include "proxy/log.h"

#define FILTER_CONFIG_TYPE "type.googleapis.com/envoy.config.route.v3.FilterConfig"

static int chain_index(const struct route_filters *f, const char *name)
{
	for (uint32_t i = 0; i < f->n; i++)
		if (f->names[i] && !strcmp(f->names[i], name))
			return (int)i;
	return -1;
}

void route_pf_free(const struct route_config *rc, struct route_filter_cfg *pfc)
{
	if (!pfc)
		return;
	for (uint32_t i = 0; i < rc->npf; i++)
		if (pfc[i].cfg && rc->pf_ops[i]->free_per_route)
			rc->pf_ops[i]->free_per_route(pfc[i].cfg);
	xfree(pfc);
}

/* Parse Any `a` (the value itself, or FilterConfig.config) for chain slot
 * idx (-1: not in the chain).  The walker is at the map key (and .config). */
static int parse_any(struct cfg_ctx *c, const json_t *a, const struct route_filters *f,
		     const char *name, int idx, bool optional, struct route_filter_cfg *slot)
{
	const char *type = json_string_value(json_object_get(a, "@type"));
	const struct http_filter_ops *ops;
	void *p;

	if (!type)
		return cfg_fail(c, "missing '@type' (an Any with the filter's config)");
	ops = http_filter_find_per_route(type);
	if (!ops) {
		if (optional) {
			log_warn("typed_per_filter_config: no registered HTTP filter for '%s' with "
				 "type URL '%s' (is_optional: ignored)", name, type);
			return RM_OK;
		}
		return cfg_fail(c, "no registered HTTP filter for '%s' with type URL '%s'", name,
				type);
	}
	if (!ops->parse_per_route) {
		if (optional)
			return RM_OK;
		return cfg_fail(c, "the HTTP filter %s does not support virtual host or route "
				"specific configuration", ops->name);
	}
	if (idx >= 0 && f->ops[idx] != ops)
		return cfg_fail(c, "the HTTP filter named '%s' is %s, not %s", name,
				f->ops[idx]->name, ops->name);
	if (!(p = ops->parse_per_route(c, a, f->b)))
		return c->failed ? RM_ERROR : cfg_fail(c, "invalid per-route configuration");
	if (idx < 0) {
		ops->free_per_route(p);   /* valid, but no filter of this chain uses it */
		return RM_OK;
	}
	slot->cfg = p;
	slot->state = ROUTE_FILTER_ENABLED;
	return RM_OK;
}

static int parse_filter_config(struct cfg_ctx *c, const json_t *v, const struct route_filters *f,
			       const char *name, int idx, struct route_filter_cfg *slot)
{
	static const char *const fields[] = { "config", "disabled", "is_optional", NULL };
	bool disabled = false, optional = false;
	const json_t *cv;
	int rc;

	if (cfg_check_fields(c, v, fields) || cfg_bool(c, v, "disabled", &disabled) ||
	    cfg_bool(c, v, "is_optional", &optional))
		return RM_ERROR;
	if (disabled) {
		if (idx >= 0 && f->ops[idx]->terminal)
			return cfg_fail(c, "the terminal filter %s cannot be disabled", name);
		if (idx >= 0)
			slot->state = ROUTE_FILTER_DISABLED;
		return RM_OK;
	}
	if (!(cv = cfg_enter(c, v, "config")))
		return cfg_fail(c, "empty per-route configuration for filter '%s' (set config, "
				"or disabled: true)", name);
	if (cfg_expect_object(c, cv)) {
		cfg_leave(c);
		return RM_ERROR;
	}
	if (!json_object_get(cv, "@type")) {
		/* an empty Any: the filter is enabled explicitly */
		rc = cfg_check_fields(c, cv, (const char *const[]){ NULL });
		if (!rc && idx >= 0)
			slot->state = ROUTE_FILTER_ENABLED;
	} else {
		rc = parse_any(c, cv, f, name, idx, optional, slot);
	}
	if (!rc)
		cfg_leave(c);
	return rc;
}

int route_pf_compile(struct cfg_ctx *c, const json_t *obj, struct route_config *rc,
		     struct route_filter_cfg **out)
{
	const struct route_filters *f = rc->filters;
	struct route_filter_cfg *arr = NULL;
	const json_t *m, *v;
	const char *key;
	bool any = false;

	*out = NULL;
	if (!(m = cfg_enter(c, obj, "typed_per_filter_config")))
		return RM_OK;
	if (cfg_expect_object(c, m))
		return RM_ERROR;
	if (!json_object_size(m)) {
		cfg_leave(c);
		return RM_OK;
	}
	if (!f)
		return cfg_fail(c, "not supported here (no HTTP filter chain)");
	arr = xcalloc(f->n ? f->n : 1, sizeof(*arr));
	json_object_foreach((json_t *)m, key, v)
	{
		int idx = chain_index(f, key), prc;
		struct route_filter_cfg *slot = idx >= 0 ? &arr[idx] : NULL;
		struct route_filter_cfg scratch = { NULL, ROUTE_FILTER_UNSET };
		const char *type;

		cfg_enter(c, m, key);
		if (cfg_expect_object(c, v))
			goto error;
		type = json_string_value(json_object_get(v, "@type"));
		if (type && !strcmp(type, FILTER_CONFIG_TYPE))
			prc = parse_filter_config(c, v, f, key, idx, slot ? slot : &scratch);
		else
			prc = parse_any(c, v, f, key, idx, false, slot ? slot : &scratch);
		if (prc)
			goto error;
		any |= slot && slot->state != ROUTE_FILTER_UNSET;
		cfg_leave(c);
	}
	cfg_leave(c);
	if (!any) {
		xfree(arr);
		return RM_OK;
	}
	*out = arr;
	return RM_OK;
error:
	route_pf_free(rc, arr);
	return RM_ERROR;
}

/* Most specific first: route, then its virtual host, then the table. */
void route_pf_merge(struct route_config *rc)
{
	for (uint32_t i = 0; i < rc->nvhosts; i++) {
		struct virtual_host *vh = &rc->vhosts[i];
		for (uint32_t j = 0; j < vh->nroutes; j++) {
			struct route *r = &vh->routes[j];
			const struct route_filter_cfg *lv[3] = { r->pfc, vh->pfc, rc->pfc };
			if (!lv[0] && !lv[1] && !lv[2])
				continue;
			r->merged = xcalloc(rc->npf, sizeof(*r->merged));
			for (uint32_t k = 0; k < rc->npf; k++) {
				for (int l = 0; l < 3; l++) {
					if (lv[l] && lv[l][k].state != ROUTE_FILTER_UNSET) {
						r->merged[k] = lv[l][k];
						break;
					}
				}
			}
			r->e.filter_cfgs = r->merged;
		}
	}
}
