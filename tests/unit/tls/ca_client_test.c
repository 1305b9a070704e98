/* ca_client_test.c - tls/ca_client.c: --cert-ttl durations, --ca-address
 * parsing, and the option checks of ca_client_configure (flags and env). */
#include "test.h"

#include <stdlib.h>
#include "proxy/common.h"
#include "tls/ca_client.h"
#include "tls/tls.h"

TEST(ca_client_ttl)
{
	unsigned long s = 0;
	CHECK_INT(ca_client_parse_ttl("24h", &s), RM_OK);
	CHECK_INT(s, 86400);
	CHECK_INT(ca_client_parse_ttl("90m", &s), RM_OK);
	CHECK_INT(s, 5400);
	CHECK_INT(ca_client_parse_ttl("6s", &s), RM_OK);
	CHECK_INT(s, 6);
	CHECK_INT(ca_client_parse_ttl("3600", &s), RM_OK);
	CHECK_INT(s, 3600);
	CHECK_INT(ca_client_parse_ttl("0s", &s), RM_ERROR);
	CHECK_INT(ca_client_parse_ttl("-5", &s), RM_ERROR);
	CHECK_INT(ca_client_parse_ttl("1d", &s), RM_ERROR);
	CHECK_INT(ca_client_parse_ttl("h", &s), RM_ERROR);
	CHECK_INT(ca_client_parse_ttl("", &s), RM_ERROR);
	CHECK_INT(ca_client_parse_ttl("99999999h", &s), RM_ERROR);
}

TEST(ca_client_address)
{
	char *h = NULL;
	unsigned p = 0;
	CHECK_INT(ca_client_split_address("remora-cp.remora-system.svc:15012", &h, &p), RM_OK);
	CHECK_STR(h, "remora-cp.remora-system.svc");
	CHECK_INT(p, 15012);
	free(h);
	CHECK_INT(ca_client_split_address("[::1]:15012", &h, &p), RM_OK);
	CHECK_STR(h, "::1");
	free(h);
	CHECK_INT(ca_client_split_address("::1:15012", &h, &p), RM_ERROR);
	CHECK_INT(ca_client_split_address("host", &h, &p), RM_ERROR);
	CHECK_INT(ca_client_split_address("host:", &h, &p), RM_ERROR);
	CHECK_INT(ca_client_split_address(":80", &h, &p), RM_ERROR);
	CHECK_INT(ca_client_split_address("host:70000", &h, &p), RM_ERROR);
	CHECK_INT(ca_client_split_address("[::1]15012", &h, &p), RM_ERROR);
}

TEST(ca_client_configure_checks)
{
	char err[512] = "";
	unsetenv("REMORA_CA_ADDRESS");
	unsetenv("REMORA_CA_TOKEN_FILE");
	unsetenv("REMORA_CERT_TTL");
	unsetenv("REMORA_IDENTITY_SECRET");
	CHECK_INT(ca_client_configure(err, sizeof(err)), RM_OK);   /* nothing: disabled */
	CHECK(!ca_client_enabled());
	CHECK_INT(ca_client_set_option("cert-ttl", "2h", err, sizeof(err)), RM_OK);
	CHECK_INT(ca_client_configure(err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "need --ca-address");
	ca_client_stop();
	setenv("REMORA_CA_ADDRESS", "127.0.0.1:15012", 1);
	CHECK_INT(ca_client_configure(err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "--ca-token-file");
	setenv("REMORA_CA_TOKEN_FILE", "/var/run/secrets/tokens/remora-token", 1);
	setenv("REMORA_CERT_TTL", "soon", 1);
	CHECK_INT(ca_client_configure(err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "(from REMORA_CERT_TTL)");
	ca_client_stop();
	/* a flag wins over the environment */
	CHECK_INT(ca_client_set_option("cert-ttl", "30s", err, sizeof(err)), RM_OK);
	CHECK_INT(ca_client_set_option("identity-secret", "ROOTCA", err, sizeof(err)), RM_OK);
	CHECK_INT(ca_client_configure(err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "other than ROOTCA");
	ca_client_stop();
	unsetenv("REMORA_CERT_TTL");
	CHECK_INT(ca_client_configure(err, sizeof(err)), RM_OK);
	CHECK(ca_client_enabled());
	CHECK(tls_sds_is_local("default"));
	CHECK(tls_sds_is_local("ROOTCA"));
	CHECK(!tls_sds_is_local("other"));
	CHECK_INT(ca_client_set_option("ca-adress", "x", err, sizeof(err)), RM_ERROR);
	ca_client_stop();
	CHECK(!ca_client_enabled());
	CHECK(!tls_sds_is_local("default"));
	unsetenv("REMORA_CA_ADDRESS");
	unsetenv("REMORA_CA_TOKEN_FILE");
}
