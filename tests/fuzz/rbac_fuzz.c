/* rbac_fuzz.c - libFuzzer target for the RBAC policy engine
 * (filters/common/rbac): each input is an RBAC message as JSON text (what a
 * control plane or a bootstrap hands the filters).  It is parsed for HTTP and
 * for network RBAC; every engine that parses is evaluated against a few
 * fixed connections and requests (plaintext / TLS with a SPIFFE ID, IPv4 /
 * IPv6, with and without headers).  Parsing must never crash or leak and
 * must leave the config walker balanced; evaluation never allocates.
 *
 * Run: make fuzz (or build/fuzz/rbac_fuzz tests/fuzz/corpus/rbac). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <jansson.h>

#include "filters/common/rbac/rbac.h"
#include "proxy/http/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void evaluate(const struct rbac_engine *e)
{
	struct sockaddr_in p4 = { .sin_family = AF_INET, .sin_port = htons(40000) };
	struct sockaddr_in l4 = { .sin_family = AF_INET, .sin_port = htons(8080) };
	struct sockaddr_in6 p6 = { .sin6_family = AF_INET6, .sin6_port = htons(40001) };
	struct http_headers h;
	const char *policy;
	inet_pton(AF_INET, "10.1.2.3", &p4.sin_addr);
	inet_pton(AF_INET, "10.0.0.7", &l4.sin_addr);
	inet_pton(AF_INET6, "fd00::1", &p6.sin6_addr);
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":method", "GET");
	hdrs_add_cstr(&h, ":path", "/admin/x?q=1#f");
	hdrs_add_cstr(&h, ":authority", "svc.local");
	hdrs_add_cstr(&h, "x-user", "alice");
	hdrs_add_cstr(&h, "x-user", "bob");
	struct rbac_input in[] = {
		{ (struct sockaddr *)&p4, (struct sockaddr *)&p4, (struct sockaddr *)&l4, NULL, false,
		  NULL, &h },
		{ (struct sockaddr *)&p6, (struct sockaddr *)&p6, (struct sockaddr *)&l4, "a.example",
		  true, "spiffe://cluster.local/ns/default/sa/client", &h },
		{ (struct sockaddr *)&p4, NULL, NULL, "", true, NULL, NULL },
		{ NULL, NULL, NULL, NULL, false, NULL, NULL },
	};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
		(void)rbac_engine_allowed(e, &in[i], &policy);
	hdrs_free(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *msg = json_loadb((const char *)data, size, 0, &je);
	if (!msg)
		return 0;
	json_t *root = json_pack("{sO}", "rules", msg);
	for (int http = 0; http < 2; http++) {
		struct cfg_ctx c;
		struct rbac_engine *e = NULL;
		cfg_init(&c, NULL, NULL);
		if (rbac_engine_parse(&c, root, "rules", http, &e) == RM_OK && e)
			evaluate(e);
		if (c.depth != 0)
			__builtin_trap();   /* the walker must be balanced either way */
		rbac_engine_free(e);
	}
	json_decref(root);
	json_decref(msg);
	return 0;
}
