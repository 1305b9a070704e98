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
	{ "retriable-headers", RETRY_ON_RETRIABLE_HEADERS },
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

/* Is a header named name[0..n) (trimmed) present in h? */
static bool header_named(const struct http_headers *h, const char *name, size_t n)
{
	char low[128];
	while (n && (*name == ' ' || *name == '\t')) {
		name++;
		n--;
	}
	while (n && (name[n - 1] == ' ' || name[n - 1] == '\t'))
		n--;
	if (!n || n >= sizeof(low))
		return false;
	for (size_t i = 0; i < n; i++)
		low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
	return hdrs_find(h, low, n, 0) >= 0;
}

bool retry_on_headers(uint32_t on, const struct retry_policy *rp,
		      const struct http_headers *req, const struct http_headers *resp)
{
	if (!(on & RETRY_ON_RETRIABLE_HEADERS))
		return false;
	if (rp && header_match_list_any(rp->retriable_headers, resp))
		return true;
	size_t len;
	const char *v = req ? hdrs_get(req, "x-envoy-retriable-header-names", &len) : NULL;
	while (v && len) {
		const char *comma = memchr(v, ',', len);
		size_t n = comma ? (size_t)(comma - v) : len;
		if (header_named(resp, v, n))
			return true;
		if (!comma)
			break;
		len -= n + 1;
		v = comma + 1;
	}
	return false;
}

bool retry_request_allowed(const struct retry_policy *rp, const struct http_headers *req)
{
	return !rp || !rp->retriable_request_headers ||
	       header_match_list_any(rp->retriable_request_headers, req);
}

void retry_policy_free(struct retry_policy *rp)
{
	if (!rp)
		return;
	header_match_list_free(rp->retriable_headers);
	header_match_list_free(rp->retriable_request_headers);
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
					 "retry_back_off", "retriable_headers",
					 "retriable_request_headers", NULL };
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
	    cfg_u64(c, j, "host_selection_retry_max_attempts", &hs) ||
	    header_match_list_compile(c, j, "retriable_headers", &rp->retriable_headers) ||
	    header_match_list_compile(c, j, "retriable_request_headers",
				      &rp->retriable_request_headers))
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

/* HedgePolicy: only what Envoy's default behaviour needs is supported;
 * initial_requests > 1 and additional_request_chance > 0 are refused. */
int hedge_policy_compile(struct cfg_ctx *c, const json_t *obj, bool *present, bool *on_ptt)
{
	static const char *const f[] = { "initial_requests", "additional_request_chance",
					 "hedge_on_per_try_timeout", NULL };
	static const char *const rf[] = { "default_value", "runtime_key", NULL };
	static const char *const pf[] = { "numerator", "denominator", NULL };
	static const char *const dens[] = { "HUNDRED", "TEN_THOUSAND", "MILLION" };
	const json_t *j = cfg_enter(c, obj, "hedge_policy"), *arc, *dv;
	uint32_t initial = 1, num = 0;
	const char *key = NULL;
	int den = 0, rc;

	*present = false;
	*on_ptt = false;
	if (!j)
		return RM_OK;
	rc = cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	     cfg_u32(c, j, "initial_requests", &initial) ||
	     cfg_bool(c, j, "hedge_on_per_try_timeout", on_ptt);
	if (!rc && initial != 1)
		rc = cfg_fail_field(c, j, "initial_requests",
				    "initial_requests other than 1 is not supported yet");
	if (!rc && (arc = cfg_enter(c, j, "additional_request_chance"))) {
		rc = cfg_expect_object(c, arc) || cfg_check_fields(c, arc, rf) ||
		     cfg_string(c, arc, "runtime_key", &key);
		if (!rc && (dv = cfg_enter(c, arc, "default_value"))) {
			rc = cfg_expect_object(c, dv) || cfg_check_fields(c, dv, pf) ||
			     cfg_u32(c, dv, "numerator", &num) ||
			     cfg_enum(c, dv, "denominator", dens, ARRAY_SIZE(dens), &den);
			if (!rc && num)
				rc = cfg_fail_field(c, dv, "numerator",
						    "additional_request_chance above 0 is not supported yet");
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	if (rc)
		return RM_ERROR;
	*present = true;
	return RM_OK;
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
