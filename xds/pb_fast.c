/* pb_fast.c - common Cluster / ClusterLoadAssignment shapes read straight
 * from the protobuf (see pb_fast.h).  Every check here answers "is this
 * the simple shape?"; a "no" is never an error, the general path decides. */
#include "pb_fast.h"

#include <string.h>
#include "pb_json.h"
#include "xds_bootstrap.h"
#include "../proxy/common.h"
#include "../proxy/server.h"
#include "../proxy/config/address.h"
#include "../proxy/upstream/cluster.h"
#include "envoy/config/cluster/v3/subset.pb-c.h"
#include "envoy/config/endpoint/v3/subset.pb-c.h"

#define DURATION_MAX_SECONDS 315576000000LL   /* what the config walker accepts */

/* A Duration as cfg_duration_ms reads its JSON form ("1.5s"): false for the
 * ones it rejects (negative, out of range). */
static bool duration_ms(const Google__Protobuf__Duration *d, uint64_t *ms)
{
	static const char *const f[] = { "seconds", "nanos", NULL };

	if (!pb_only_fields(&d->base, f) || d->seconds < 0 || d->nanos < 0 ||
	    d->nanos >= 1000000000 || d->seconds > DURATION_MAX_SECONDS)
		return false;
	*ms = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
	if (!*ms && d->nanos)
		*ms = 1;
	return true;
}

/* eds_config {ads {}, resource_api_version AUTO/V3, initial_fetch_timeout}:
 * what xds_resource_source_parse accepts for an ADS bootstrap. */
static bool eds_source(const Envoy__Config__Core__V3__ConfigSource *s, uint64_t *timeout_ms)
{
	static const char *const f[] = { "ads", "initial_fetch_timeout", "resource_api_version",
					 NULL };
	static const char *const none[] = { NULL };

	if (!pb_only_fields(&s->base, f) ||
	    s->config_source_specifier_case != ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS ||
	    !s->ads || !pb_only_fields(&s->ads->base, none) ||
	    (s->resource_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__AUTO &&
	     s->resource_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3))
		return false;
	if (!g_server.xds.enabled || !g_server.xds.cluster)   /* ads {} needs ads_config */
		return false;
	*timeout_ms = 15000;
	return !s->initial_fetch_timeout || duration_ms(s->initial_fetch_timeout, timeout_ms);
}

bool pb_fast_cluster(const uint8_t *data, size_t len, struct build_ctx *b, struct cluster **out)
{
	static const char *const f[] = { "name", "type", "lb_policy", "connect_timeout",
					 "eds_cluster_config", NULL };
	static const char *const ef[] = { "eds_config", "service_name", NULL };
	Envoy__Config__Cluster__V3__Cluster *m =
		envoy__config__cluster__v3__cluster__unpack(NULL, len, data);
	uint64_t connect_ms = 5000, fetch_ms = 15000;
	enum lb_policy lb;
	bool ok = false;

	if (!m)
		return false;
	if (!pb_only_fields(&m->base, f) || !*m->name ||
	    m->cluster_discovery_type_case !=
		    ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE ||
	    m->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS ||
	    !m->eds_cluster_config || !pb_only_fields(&m->eds_cluster_config->base, ef) ||
	    !m->eds_cluster_config->eds_config ||
	    !eds_source(m->eds_cluster_config->eds_config, &fetch_ms) ||
	    (m->connect_timeout && !duration_ms(m->connect_timeout, &connect_ms)))
		goto out;
	switch (m->lb_policy) {
	case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN: lb = LB_ROUND_ROBIN; break;
	case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST: lb = LB_LEAST_REQUEST; break;
	case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM: lb = LB_RANDOM; break;
	default: goto out;
	}
	*out = cluster_new_eds(b, m->name, lb, connect_ms, m->eds_cluster_config->service_name,
			       fetch_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)fetch_ms);
	ok = true;
out:
	envoy__config__cluster__v3__cluster__free_unpacked(m, NULL);
	return ok;
}

/* One lb_endpoints[] entry, appended to eps[*n]. */
static bool lb_endpoint(const Envoy__Config__Endpoint__V3__LbEndpoint *le,
			struct endpoint_cfg *eps, size_t *n)
{
	static const char *const lf[] = { "endpoint", "load_balancing_weight", "health_status", NULL };
	static const char *const ef[] = { "address", NULL };
	static const char *const af[] = { "socket_address", NULL };
	static const char *const sf[] = { "address", "port_value", "protocol", "ipv4_compat", NULL };
	static const char *const wf[] = { "value", NULL };
	/* HealthStatus as cluster.c applies it: UNHEALTHY, DRAINING, TIMEOUT
	 * fail the host, DEGRADED degrades it */
	static const int flags[] = { 0, 0, HOST_FAILED_EDS_HEALTH, HOST_FAILED_EDS_HEALTH,
				     HOST_FAILED_EDS_HEALTH, HOST_DEGRADED_EDS_HEALTH };
	const Envoy__Config__Endpoint__V3__Endpoint *ep;
	const Envoy__Config__Core__V3__SocketAddress *sa;
	struct sockaddr_storage ss;
	socklen_t sl;
	uint32_t port = 0, weight = 1;

	if (!pb_only_fields(&le->base, lf) ||
	    le->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT ||
	    !(ep = le->endpoint) || !pb_only_fields(&ep->base, ef) || !ep->address ||
	    !pb_only_fields(&ep->address->base, af) ||
	    ep->address->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS ||
	    !(sa = ep->address->socket_address) || !pb_only_fields(&sa->base, sf) ||
	    sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP || !*sa->address ||
	    (unsigned)le->health_status >= ARRAY_SIZE(flags))
		return false;
	if (sa->port_specifier_case == ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
		port = sa->port_value;
	else if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER__NOT_SET)
		return false;
	if (port > 65535 || sockaddr_parse_ip(sa->address, (uint16_t)port, &ss, &sl))
		return false;
	if (le->load_balancing_weight) {
		if (!pb_only_fields(&le->load_balancing_weight->base, wf) ||
		    !le->load_balancing_weight->value)
			return false;
		weight = le->load_balancing_weight->value;
	}
	eps[*n].address = xstrdup(sa->address);
	eps[*n].port = (uint16_t)port;
	eps[*n].weight = weight;
	eps[*n].eds_flags = flags[le->health_status];
	(*n)++;
	return true;
}

bool pb_fast_cla(const uint8_t *data, size_t len, struct endpoint_cfg **out, size_t *nout)
{
	static const char *const f[] = { "cluster_name", "endpoints", NULL };
	static const char *const lf[] = { "locality", "lb_endpoints", NULL };
	static const char *const locf[] = { "region", "zone", "sub_zone", NULL };
	Envoy__Config__Endpoint__V3__ClusterLoadAssignment *m =
		envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, len, data);
	struct endpoint_cfg *eps = NULL;
	size_t total = 0, n = 0;
	bool ok = false;

	if (!m)
		return false;
	if (!pb_only_fields(&m->base, f) || !*m->cluster_name)
		goto out;
	for (size_t i = 0; i < m->n_endpoints; i++) {
		const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *l = m->endpoints[i];
		if (!pb_only_fields(&l->base, lf) ||
		    (l->locality && !pb_only_fields(&l->locality->base, locf)))
			goto out;
		total += l->n_lb_endpoints;
	}
	eps = xcalloc(total ? total : 1, sizeof(*eps));
	for (size_t i = 0; i < m->n_endpoints; i++)
		for (size_t k = 0; k < m->endpoints[i]->n_lb_endpoints; k++)
			if (!lb_endpoint(m->endpoints[i]->lb_endpoints[k], eps, &n))
				goto out;
	*out = eps;
	*nout = n;
	eps = NULL;
	ok = true;
out:
	for (size_t i = 0; eps && i < n; i++)
		free(eps[i].address);
	free(eps);
	envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(m, NULL);
	return ok;
}
