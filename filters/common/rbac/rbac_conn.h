/* rbac_conn.h - an RBAC input from a downstream connection. */
#ifndef REMORA_FILTERS_COMMON_RBAC_CONN_H
#define REMORA_FILTERS_COMMON_RBAC_CONN_H

struct downstream;
struct rbac_input;

/* Addresses, TLS state, peer principal and SNI of d (headers NULL).  The
 * pointers stay valid while d lives.  No allocation. */
void rbac_input_from_downstream(const struct downstream *d, struct rbac_input *in);

#endif
