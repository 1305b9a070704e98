/* address.h - Envoy core.v3.Address parsing and formatting. */
#ifndef REMORA_CONFIG_ADDRESS_H
#define REMORA_CONFIG_ADDRESS_H

#include <sys/socket.h>
#include "cfg.h"

/* Parse {"socket_address": {"address", "port_value", "protocol"}}, where address
 * must be an IP literal.  RM_OK or RM_ERROR (cfg_fail). */
int cfg_address(struct cfg_ctx *c, const json_t *addr, struct sockaddr_storage *ss, socklen_t *len);
/* Parse a socket_address whose address may be a DNS name: returns the name
 * (pointer into the tree) and the port. */
int cfg_socket_address_name(struct cfg_ctx *c, const json_t *addr, const char **host, uint16_t *port);
/* "127.0.0.1:80" or "[::1]:80". */
void sockaddr_format(const struct sockaddr *sa, char *buf, size_t len);
/* IP only, no port. */
void sockaddr_ip(const struct sockaddr *sa, char *buf, size_t len);
uint16_t sockaddr_port(const struct sockaddr *sa);
void sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port);
/* Parse an IP literal + port into ss. RM_OK / RM_ERROR. */
int sockaddr_parse_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);

#endif
