/* wait_ready.c - `remora wait-ready`: poll the admin /ready endpoint until
 * the proxy is LIVE (exit 0) or the timeout passes (exit 1).  Meant for a
 * Kubernetes postStart hook on the sidecar container, so the application
 * container starts only once the proxy can carry its traffic (Istio's
 * `pilot-agent wait`).  Plain blocking sockets: this runs before, and apart
 * from, any proxy. */
#include "wait_ready.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>
#include "common.h"

/* One GET /ready; 200 -> true.  Every step bounded by ms. */
static bool ready_once(const struct addrinfo *ai, int ms)
{
	char buf[256];
	size_t got = 0;
	bool ok = false;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	struct pollfd p = { fd, POLLOUT, 0 };
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)
		goto out;
	int err = 0;
	socklen_t el = sizeof(err);
	if (poll(&p, 1, ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err)
		goto out;
	static const char req[] = "GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n";
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1))
		goto out;
	p.events = POLLIN;
	while (got < sizeof(buf) - 1 && poll(&p, 1, ms) == 1) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = '\0';
		if (strchr(buf, '\n'))
			break;
	}
	buf[got] = '\0';
	/* "HTTP/1.x 200 ..." */
	ok = got >= 12 && !strncmp(buf, "HTTP/1.", 7) && !strncmp(buf + 8, " 200", 4);
out:
	close(fd);
	return ok;
}

/* "127.0.0.1:15000", "[::1]:15000", "localhost:15000" or a bare port. */
static int split_addr(const char *s, char *host, size_t hl, char *port, size_t pl)
{
	const char *colon;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return RM_ERROR;
		snprintf(host, hl, "%.*s", (int)(end - s - 1), s + 1);
		snprintf(port, pl, "%s", end + 2);
	} else if ((colon = strrchr(s, ':'))) {
		snprintf(host, hl, "%.*s", (int)(colon - s), s);
		snprintf(port, pl, "%s", colon + 1);
	} else {
		snprintf(host, hl, "127.0.0.1");
		snprintf(port, pl, "%s", s);
	}
	return *port && strspn(port, "0123456789") == strlen(port) ? RM_OK : RM_ERROR;
}

int wait_ready_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "admin", required_argument, NULL, 'a' },
		{ "period-ms", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *admin = "127.0.0.1:15000";
	double timeout_s = 60;
	long period_ms = 100;
	char host[256], port[16], *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "t:a:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			timeout_s = strtod(optarg, &end);
			if (*end || timeout_s < 0) {
				fprintf(stderr, "remora wait-ready: --timeout takes seconds\n");
				return 2;
			}
			break;
		case 'a':
			admin = optarg;
			break;
		case 'p':
			period_ms = strtol(optarg, &end, 10);
			if (*end || period_ms < 1 || period_ms > 60000) {
				fprintf(stderr, "remora wait-ready: --period-ms must be 1..60000\n");
				return 2;
			}
			break;
		case 'h':
			printf("usage: remora wait-ready [--timeout S] [--admin ADDR] [--period-ms N]\n"
			       "  poll http://ADDR/ready (default 127.0.0.1:15000) until it answers 200;\n"
			       "  exit 0 when ready, 1 after --timeout seconds (default 60)\n");
			return 0;
		default:
			return 2;
		}
	}
	if (split_addr(admin, host, sizeof(host), port, sizeof(port))) {
		fprintf(stderr, "remora wait-ready: bad --admin address '%s' (HOST:PORT)\n", admin);
		return 2;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai) {
		fprintf(stderr, "remora wait-ready: %s: %s\n", admin, gai_strerror(gai));
		return 2;
	}
	uint64_t deadline = now_ms() + (uint64_t)(timeout_s * 1000);
	int rc = 1;
	for (;;) {
		uint64_t now = now_ms();
		int ms = now >= deadline ? 1 : (int)MIN(deadline - now, (uint64_t)1000);
		if (ready_once(res, ms)) {
			printf("remora is ready (%s)\n", admin);
			rc = 0;
			break;
		}
		if (now_ms() >= deadline) {
			fprintf(stderr, "remora wait-ready: %s/ready not 200 within %g s\n", admin,
				timeout_s);
			break;
		}
		now = now_ms();
		uint64_t left = now < deadline ? deadline - now : 0;
		usleep((useconds_t)MIN((uint64_t)period_ms, left + 1) * 1000);
	}
	freeaddrinfo(res);
	return rc;
}
