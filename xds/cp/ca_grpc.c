/* ca_grpc.c - the CA on remora-cp's gRPC server (kept out of ca.c so that
 * the CA logic links without the server, e.g. in its unit test).
 * CreateCertificate is an asynchronous unary method: a TokenReview may be
 * in flight while the main loop serves everything else. */
#include "ca.h"
#include "cp_server.h"

static void on_done(void *arg, int status, const uint8_t *resp, size_t resp_len, const char *msg)
{
	cp_unary_reply(arg, status, resp, resp_len, msg);
}

static void on_abort(void *pending)
{
	ca_pending_cancel(pending);
}

static void create_certificate(void *arg, struct cp_stream *st, const struct cp_call *call,
			       const uint8_t *req, size_t len)
{
	struct ca_pending *p = ca_handle_async(arg, call->authorization, call->peer, req, len,
					       on_done, st);
	if (p)
		cp_stream_on_abort(st, on_abort, p);
}

void ca_register(struct ca *ca, struct cp_server *s)
{
	cp_server_register_unary_async(s, CA_METHOD_PATH, create_certificate, ca);
}
