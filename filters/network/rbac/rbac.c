/* rbac.c - envoy.filters.network.rbac
 * (envoy.extensions.filters.network.rbac.v3.RBAC).
 *
 * A non-terminal network filter judging each connection once, when its
 * identity is known: on a plaintext filter chain when it is accepted
 * (on_new_connection: nothing is allocated for a denied one), on a TLS chain
 * right after the handshake (on_handshake: the peer certificate's SPIFFE
 * ID is there), before the terminal filter reads a byte.  A denied
 * connection is closed.  shadow_rules only count.  Header and url_path
 * matchers are refused (they need HTTP).
 *
 * Stats: <stat_prefix>.rbac.{allowed,denied} and
 * <stat_prefix>.rbac.<shadow_rules_stat_prefix>{shadow_allowed,shadow_denied}.
 * enforcement_type: ONE_TIME_ON_FIRST_BYTE only (the decision is made once
 * per connection); CONTINUOUS and delay_deny are refused. */
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/downstream.h"
#include "proxy/worker.h"
#include "filters/common/rbac/rbac.h"
#include "filters/common/rbac/rbac_conn.h"

#define NRBAC_TYPE "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"

struct nrbac_cfg {
	struct rbac_engine *rules;       /* owned, NULL: nothing enforced */
	struct rbac_engine *shadow;      /* owned, NULL: no shadow decision */
	struct rbac_stat_names names;    /* owned */
	struct stats_scope *stats;       /* owned: <stat_prefix>.rbac */
};

static void nrbac_free_config(void *v)
{
	struct nrbac_cfg *cfg = v;
	if (!cfg)
		return;
	rbac_engine_free(cfg->rules);
	rbac_engine_free(cfg->shadow);
	stats_scope_free(cfg->stats);
	rbac_stat_names_free(&cfg->names);
	free(cfg);
}

static void *nrbac_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "rules", "matcher", "shadow_rules", "shadow_matcher",
					 "shadow_rules_stat_prefix", "stat_prefix",
					 "enforcement_type", "delay_deny", NULL };
	static const char *const not_yet[] = { "matcher", "shadow_matcher", "delay_deny", NULL };
	static const char *const enforcement[] = { "ONE_TIME_ON_FIRST_BYTE", "CONTINUOUS" };
	struct nrbac_cfg *cfg = xcalloc(1, sizeof(*cfg));
	const char *prefix = NULL, *sp = NULL;
	int et = 0;

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	    cfg_reject_fields(c, j, not_yet, "not supported") ||
	    cfg_string_req(c, j, "stat_prefix", &prefix) ||
	    cfg_string(c, j, "shadow_rules_stat_prefix", &sp) ||
	    cfg_enum(c, j, "enforcement_type", enforcement, ARRAY_SIZE(enforcement), &et))
		goto error;
	if (!*prefix) {
		cfg_fail_field(c, j, "stat_prefix", "must not be empty");
		goto error;
	}
	if (et != 0) {
		cfg_fail_field(c, j, "enforcement_type", "only ONE_TIME_ON_FIRST_BYTE is supported");
		goto error;
	}
	if (rbac_engine_parse(c, j, "rules", false, &cfg->rules) ||
	    rbac_engine_parse(c, j, "shadow_rules", false, &cfg->shadow))
		goto error;
	{
		size_t n = strlen(prefix);
		if (prefix[n - 1] == '.')   /* "tcp." and "tcp" name the same scope */
			n--;
		char *scope = xasprintf("%.*s.rbac", (int)n, prefix);
		rbac_stat_names_init(&cfg->names, NULL, sp);
		/* the names are built per config: copied into the (shared) scope */
		struct stats_scope_spec spec = { .name = scope, .tag_prefix = scope,
						 .desc = cfg->names.desc, .ndesc = RBAC_STATS_N,
						 .flags = STATS_SCOPE_COPY_DESC };
		cfg->stats = stats_scope_get(b->stats, &spec);
		free(scope);
	}
	return cfg;
error:
	nrbac_free_config(cfg);
	return NULL;
}

static bool judge(const struct nrbac_cfg *cfg, unsigned shard, const struct rbac_input *in)
{
	if (cfg->shadow)
		stats_inc(cfg->stats, shard, rbac_engine_allowed(cfg->shadow, in, NULL)
						      ? RBAC_SHADOW_ALLOWED : RBAC_SHADOW_DENIED);
	if (!cfg->rules)
		return true;
	bool ok = rbac_engine_allowed(cfg->rules, in, NULL);
	stats_inc(cfg->stats, shard, ok ? RBAC_ALLOWED : RBAC_DENIED);
	return ok;
}

/* Plaintext chains: decide now.  TLS chains: wait for the handshake. */
static bool nrbac_on_new_connection(const struct accept_info *ai, const void *vcfg)
{
	if (ai->fc && ai->fc->tls)
		return true;
	struct rbac_input in = {
		.direct_remote = ai->peer,
		.remote = ai->peer,
		.local = (const struct sockaddr *)ai->local,
		.sni = ai->server_name,
	};
	return judge(vcfg, ai->w->shard, &in);
}

static bool nrbac_on_handshake(const struct downstream *d, const void *vcfg)
{
	struct rbac_input in;
	rbac_input_from_downstream(d, &in);
	return judge(vcfg, d->w->shard, &in);
}

const struct network_filter_ops network_rbac_filter_ops = {
	.name = "envoy.filters.network.rbac",
	.type_url = NRBAC_TYPE,
	.parse_config = nrbac_parse_config,
	.free_config = nrbac_free_config,
	.on_new_connection = nrbac_on_new_connection,
	.on_handshake = nrbac_on_handshake,
};
