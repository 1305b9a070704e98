/* ca_grpc.c - the CA on remora-cp's gRPC server (kept out of ca.c so that
 * the CA logic links without the server, e.g. in its unit test). */
#include "ca.h"
#include "cp_server.h"

static int create_certificate(void *arg, const struct cp_call *call, const uint8_t *req, size_t len,
			      uint8_t **resp, size_t *resp_len, char *msg, size_t msglen)
{
	return ca_handle(arg, call->authorization, call->peer, req, len, resp, resp_len, msg, msglen);
}

void ca_register(struct ca *ca, struct cp_server *s)
{
	cp_server_register_unary(s, CA_METHOD_PATH, create_certificate, ca);
}
