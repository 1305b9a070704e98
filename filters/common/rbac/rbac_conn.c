/* rbac_conn.c - what the RBAC filters feed the engine about a downstream
 * connection (kept apart from the I/O-free policy engine in rbac.c). */
#include "rbac.h"
#include "rbac_conn.h"

#include "proxy/downstream.h"
#include "tls/tls.h"

void rbac_input_from_downstream(const struct downstream *d, struct rbac_input *in)
{
	struct tls_conn *tc = d->bev ? conn_tls(d->bev) : NULL;
	memset(in, 0, sizeof(*in));
	in->direct_remote = (const struct sockaddr *)&d->peer;
	in->remote = in->direct_remote;
	in->local = (const struct sockaddr *)&d->local;
	in->tls = d->bev && conn_is_tls(d->bev);
	if (tc) {
		in->principal = tls_conn_peer_principal(tc);
		in->sni = tls_conn_sni(tc);
	}
}
