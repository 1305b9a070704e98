/* ads.h - the xDS client: one ADS stream (gRPC, state of the world).
 *
 * Main thread only.  Subscribes to CDS and LDS (wildcard) and to the EDS and
 * RDS resources the accepted clusters and listeners name; ACKs/NACKs per
 * type URL; compiles resources with the same compiler as the bootstrap and
 * publishes new snapshots (server_xds_publish) once what they need has
 * warmed.  See docs/xds.md. */
#ifndef REMORA_XDS_ADS_H
#define REMORA_XDS_ADS_H

#include "xds_bootstrap.h"

struct server;
struct ads;

/* Start the client (srv->xds must be enabled).  The server's initial-fetch
 * hold is released through server_xds_initial_fetch_done(). */
struct ads *ads_start(struct server *srv);
void ads_free(struct ads *a);   /* accepts NULL */

/* /config_dump's dynamic sections (main thread), as Envoy names them:
 * dynamic_active_clusters / dynamic_warming_clusters [{version_info, cluster,
 * last_updated}], dynamic_listeners [{name, active_state, warming_state}],
 * dynamic_route_configs, dynamic_endpoint_configs (only with include_eds:
 * Envoy's ?include_eds; at 10,000 clusters they are the bulk of the dump),
 * dynamic_active_secrets (private keys redacted), cds_version_info /
 * lds_version_info.  An empty object for NULL.  New reference. */
#include <jansson.h>
#include <stdbool.h>
json_t *ads_config_dump(struct ads *a, bool include_eds);

#endif
