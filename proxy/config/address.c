/* address.c - Envoy core.v3.Address helpers. */
#include "address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

int sockaddr_parse_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
		return RM_OK;
	}
	if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
		return RM_OK;
	}
	return RM_ERROR;
}

static const char *const addr_fields[] = { "socket_address", NULL };
static const char *const sa_fields[] = { "address", "port_value", "protocol", "ipv4_compat", NULL };
static const char *const protocols[] = { "TCP", "UDP" };

static int parse_sa(struct cfg_ctx *c, const json_t *addr, const char **host, uint16_t *port)
{
	const json_t *sa;
	uint32_t p = 0;
	int proto = 0;

	if (cfg_expect_object(c, addr) || cfg_check_fields(c, addr, addr_fields))
		return RM_ERROR;
	if (!(sa = cfg_enter_req(c, addr, "socket_address")))
		return RM_ERROR;
	if (cfg_expect_object(c, sa) || cfg_check_fields(c, sa, sa_fields) ||
	    cfg_string_req(c, sa, "address", host) || cfg_u32(c, sa, "port_value", &p) ||
	    cfg_enum(c, sa, "protocol", protocols, 2, &proto))
		goto error;
	if (proto != 0) {
		cfg_fail_field(c, sa, "protocol", "only TCP is supported");
		goto error;
	}
	if (p > 65535) {
		cfg_fail_field(c, sa, "port_value", "expected an integer in 0..65535");
		goto error;
	}
	*port = (uint16_t)p;
	cfg_leave(c);
	return RM_OK;
error:
	cfg_leave(c);
	return RM_ERROR;
}

int cfg_socket_address_name(struct cfg_ctx *c, const json_t *addr, const char **host, uint16_t *port)
{
	return parse_sa(c, addr, host, port);
}

int cfg_address(struct cfg_ctx *c, const json_t *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *host;
	uint16_t port;
	if (parse_sa(c, addr, &host, &port))
		return RM_ERROR;
	if (sockaddr_parse_ip(host, port, ss, len)) {
		const json_t *sa = cfg_enter(c, addr, "socket_address");
		cfg_fail_field(c, sa, "address", "'%s' is not an IP address", host);
		cfg_leave(c);
		return RM_ERROR;
	}
	return RM_OK;
}

void sockaddr_ip(const struct sockaddr *sa, char *buf, size_t len)
{
	if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
	else if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
	else
		snprintf(buf, len, "unknown");
}

uint16_t sockaddr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	return 0;
}

void sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(port);
}

void sockaddr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	sockaddr_ip(sa, ip, sizeof(ip));
	if (sa->sa_family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip, sockaddr_port(sa));
	else
		snprintf(buf, len, "%s:%u", ip, sockaddr_port(sa));
}
