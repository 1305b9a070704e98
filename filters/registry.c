/* registry.c - the filters Remora knows, one line each. */
#include "proxy/filter.h"

extern const struct network_filter_ops tcp_proxy_filter_ops;
extern const struct network_filter_ops hcm_filter_ops;
extern const struct network_filter_ops network_local_ratelimit_filter_ops;
extern const struct http_filter_ops router_filter_ops;
extern const struct http_filter_ops local_ratelimit_filter_ops;
extern const struct http_filter_ops fault_filter_ops;
extern const struct http_filter_ops grpc_stats_filter_ops;
extern const struct http_filter_ops http_rbac_filter_ops;
extern const struct network_filter_ops network_rbac_filter_ops;
extern const struct listener_filter_ops original_dst_listener_filter_ops;
extern const struct listener_filter_ops http_inspector_listener_filter_ops;
extern const struct listener_filter_ops tls_inspector_listener_filter_ops;

static const struct network_filter_ops *const network_filters[] = {
	&tcp_proxy_filter_ops,
	&hcm_filter_ops,
	&network_local_ratelimit_filter_ops,
	&network_rbac_filter_ops,
};

static const struct http_filter_ops *const http_filters[] = {
	&router_filter_ops,
	&local_ratelimit_filter_ops,
	&fault_filter_ops,
	&grpc_stats_filter_ops,
	&http_rbac_filter_ops,
};

static const struct listener_filter_ops *const listener_filters[] = {
	&original_dst_listener_filter_ops,
	&http_inspector_listener_filter_ops,
	&tls_inspector_listener_filter_ops,
};

/* Match by @type URL if given (Envoy selects by type), else by name. */
const struct network_filter_ops *network_filter_find(const char *name, const char *type_url)
{
	for (size_t i = 0; i < ARRAY_SIZE(network_filters); i++) {
		if (type_url ? !strcmp(type_url, network_filters[i]->type_url)
			     : (name && !strcmp(name, network_filters[i]->name)))
			return network_filters[i];
	}
	return NULL;
}

const struct http_filter_ops *http_filter_find(const char *name, const char *type_url)
{
	for (size_t i = 0; i < ARRAY_SIZE(http_filters); i++) {
		if (type_url ? !strcmp(type_url, http_filters[i]->type_url)
			     : (name && !strcmp(name, http_filters[i]->name)))
			return http_filters[i];
	}
	return NULL;
}

const struct http_filter_ops *http_filter_find_per_route(const char *type_url)
{
	for (size_t i = 0; i < ARRAY_SIZE(http_filters); i++) {
		const char *t = http_filters[i]->per_route_type_url;
		if (!strcmp(type_url, t ? t : http_filters[i]->type_url))
			return http_filters[i];
	}
	return NULL;
}

const struct listener_filter_ops *listener_filter_find(const char *name, const char *type_url)
{
	for (size_t i = 0; i < ARRAY_SIZE(listener_filters); i++) {
		if (type_url ? !strcmp(type_url, listener_filters[i]->type_url)
			     : (name && !strcmp(name, listener_filters[i]->name)))
			return listener_filters[i];
	}
	return NULL;
}

void filters_thread_exit(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(network_filters); i++)
		if (network_filters[i]->thread_exit)
			network_filters[i]->thread_exit();
	for (size_t i = 0; i < ARRAY_SIZE(http_filters); i++)
		if (http_filters[i]->thread_exit)
			http_filters[i]->thread_exit();
}
