/* admin.h - the admin HTTP server (loopback by default), on the main thread. */
#ifndef REMORA_STATS_ADMIN_H
#define REMORA_STATS_ADMIN_H

#include <stddef.h>

struct server;
struct admin;

/* Listen on srv->admin_addr.  NULL with err on failure. */
struct admin *admin_start(struct server *srv, char *err, size_t errlen);
void admin_free(struct admin *a);   /* NULL ok */
/* The bound port (useful with port 0). */
unsigned admin_port(const struct admin *a);

#endif
