/* retry.c - RetryPolicy compilation and retry_on evaluation. */
#include "route.h"
#include "route-t.h"

static const struct {
	const char *name;
	uint32_t bit;
} retry_on_names[] = {
	{ "5xx", RETRY_ON_5XX },
	{ "gateway-error", RETRY_ON_GATEWAY_ERROR },
	{ "reset", RETRY_ON_RESET },
	{ "connect-failure", RETRY_ON_CONNECT_FAILURE },
	{ "refused-stream", RETRY_ON_REFUSED_STREAM },
	{ "retriable-4xx", RETRY_ON_RETRIABLE_4XX },
	{ "retriable-status-codes", RETRY_ON_RETRIABLE_CODES },
	{ "cancelled", RETRY_ON_GRPC_CANCELLED },
	{ "deadline-exceeded", RETRY_ON_GRPC_DEADLINE },
	{ "resource-exhausted", RETRY_ON_GRPC_RESOURCE },
	{ "internal", RETRY_ON_GRPC_INTERNAL },
	{ "unavailable", RETRY_ON_GRPC_UNAVAILABLE },
};

int retry_on_parse(const char *s, size_t len, uint32_t *out, const char **bad, size_t *badlen)
{
	const char *end = s + len;
	while (s < end) {
		const char *comma = memchr(s, ',', (size_t)(end - s));
		const char *e = comma ? comma : end;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		const char *te = e;
		while (te > s && (te[-1] == ' ' || te[-1] == '\t'))
			te--;
		size_t n = (size_t)(te - s);
		bool found = n == 0;
		for (size_t i = 0; !found && i < ARRAY_SIZE(retry_on_names); i++) {
			if (strlen(retry_on_names[i].name) == n && !memcmp(retry_on_names[i].name, s, n)) {
				*out |= retry_on_names[i].bit;
				found = true;
			}
		}
		if (!found) {
			if (bad) {
				*bad = s;
				*badlen = n;
			}
			return RM_ERROR;
		}
		s = comma ? comma + 1 : end;
	}
	return RM_OK;
}

bool retry_on_status(uint32_t on, const struct retry_policy *rp, int status, int grpc)
{
	if ((on & RETRY_ON_5XX) && status >= 500 && status < 600)
		return true;
	if ((on & RETRY_ON_GATEWAY_ERROR) && status >= 502 && status <= 504)
		return true;
	if ((on & RETRY_ON_RETRIABLE_4XX) && status == 409)
		return true;
	if ((on & RETRY_ON_RETRIABLE_CODES) && rp)
		for (uint32_t i = 0; i < rp->nstatus; i++)
			if (rp->status_codes[i] == status)
				return true;
	switch (grpc) {
	case 1: return on & RETRY_ON_GRPC_CANCELLED;
	case 4: return on & RETRY_ON_GRPC_DEADLINE;
	case 8: return on & RETRY_ON_GRPC_RESOURCE;
	case 13: return on & RETRY_ON_GRPC_INTERNAL;
	case 14: return on & RETRY_ON_GRPC_UNAVAILABLE;
	default: return false;
	}
}

void retry_policy_free(struct retry_policy *rp)
{
	if (!rp)
		return;
	free(rp->status_codes);
	free(rp);
}

#define PREVIOUS_HOSTS "envoy.retry_host_predicates.previous_hosts"
#define PREVIOUS_HOSTS_TYPE \
	"type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

static int host_predicates(struct cfg_ctx *c, const json_t *arr, struct retry_policy *rp)
{
	static const char *const f[] = { "name", "typed_config", NULL };
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *p = cfg_enter_idx(c, arr, i), *tc;
		const char *name = NULL, *type = NULL;
		int rc = cfg_expect_object(c, p) || cfg_check_fields(c, p, f) ||
			 cfg_string(c, p, "name", &name);
		if (!rc && (tc = cfg_get(p, "typed_config")) && json_is_object(tc))
			type = json_string_value(json_object_get(tc, "@type"));
		if (!rc && !(type ? !strcmp(type, PREVIOUS_HOSTS_TYPE)
				  : (name && !strcmp(name, PREVIOUS_HOSTS))))
			rc = cfg_fail(c, "unsupported retry host predicate '%s' (only %s)",
				      type ? type : (name ? name : ""), PREVIOUS_HOSTS);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		rp->previous_hosts = true;
	}
	return RM_OK;
}

struct retry_policy *retry_policy_compile(struct cfg_ctx *c, const json_t *j)
{
	static const char *const f[] = { "retry_on", "num_retries", "per_try_timeout",
					 "per_try_idle_timeout", "retry_host_predicate",
					 "host_selection_retry_max_attempts", "retriable_status_codes",
					 "retry_back_off", NULL };
	struct retry_policy *rp = xcalloc(1, sizeof(*rp));
	const char *on = NULL;
	const json_t *v;
	uint64_t hs = 1;

	rp->num_retries = 1;
	rp->backoff_base_ms = 25;
	rp->backoff_max_ms = 250;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) || cfg_string(c, j, "retry_on", &on) ||
	    cfg_u32(c, j, "num_retries", &rp->num_retries) ||
	    cfg_duration_ms(c, j, "per_try_timeout", &rp->per_try_timeout_ms) ||
	    cfg_duration_ms(c, j, "per_try_idle_timeout", &rp->per_try_idle_timeout_ms) ||
	    cfg_u64(c, j, "host_selection_retry_max_attempts", &hs))
		goto error;
	rp->host_selection_max_attempts = (uint32_t)MIN(MAX(hs, 1), 1000);   /* re-picks only on retries */
	if (on) {
		const char *bad = NULL;
		size_t badlen = 0;
		if (retry_on_parse(on, strlen(on), &rp->retry_on, &bad, &badlen)) {
			cfg_fail_field(c, j, "retry_on", "unsupported retry_on value '%.*s'", (int)badlen, bad);
			goto error;
		}
	}
	if ((v = cfg_enter(c, j, "retriable_status_codes"))) {
		int rc = cfg_expect_array(c, v);
		rp->nstatus = rc ? 0 : (uint32_t)json_array_size(v);
		rp->status_codes = xcalloc(rp->nstatus + 1, sizeof(uint16_t));
		for (uint32_t i = 0; !rc && i < rp->nstatus; i++) {
			const json_t *e = cfg_enter_idx(c, v, i);
			json_int_t code = json_is_integer(e) ? json_integer_value(e) : -1;
			if (code < 100 || code > 599)
				rc = cfg_fail(c, "expected an HTTP status code (100..599)");
			rp->status_codes[i] = (uint16_t)code;
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "retry_back_off"))) {
		static const char *const bf[] = { "base_interval", "max_interval", NULL };
		uint64_t base = 0, max = 0;
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, bf) ||
			 !cfg_enter_req(c, v, "base_interval");
		if (!rc) {
			cfg_leave(c);
			rc = cfg_duration_ms(c, v, "base_interval", &base) ||
			     cfg_duration_ms(c, v, "max_interval", &max);
		}
		if (!rc && !base) {
			rc = cfg_fail_field(c, v, "base_interval", "must be greater than zero");
		}
		if (!rc && max && max < base) {
			rc = cfg_fail_field(c, v, "max_interval", "must be at least base_interval");
		}
		cfg_leave(c);
		if (rc)
			goto error;
		rp->backoff_base_ms = base;
		rp->backoff_max_ms = max ? max : base * 10;
	}
	if ((v = cfg_enter(c, j, "retry_host_predicate"))) {
		int rc = host_predicates(c, v, rp);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	return rp;
error:
	retry_policy_free(rp);
	return NULL;
}

int grpc_timeout_parse(const char *v, size_t n, uint64_t *ms)
{
	uint64_t x = 0;
	if (n < 2 || n > 9)
		return RM_ERROR;
	for (size_t i = 0; i + 1 < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return RM_ERROR;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	switch (v[n - 1]) {
	case 'H': *ms = x * 3600000; break;
	case 'M': *ms = x * 60000; break;
	case 'S': *ms = x * 1000; break;
	case 'm': *ms = x; break;
	case 'u': *ms = (x + 999) / 1000; break;
	case 'n': *ms = (x + 999999) / 1000000; break;
	default: return RM_ERROR;
	}
	return RM_OK;
}
