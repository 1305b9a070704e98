/* dns_test.c - the c-ares/libevent resolver against a real DNS server.
 *
 * dnsmasq (Debian's dnsmasq-base, /usr/sbin/dnsmasq) is started once on a
 * random loopback port, answering only from a hosts file the test writes; it
 * re-reads that file on SIGHUP.  If dnsmasq is missing the tests that need it
 * fail. */
#include "test.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxy/common.h"
#include "proxy/upstream/dns.h"

#ifndef DNSMASQ
#define DNSMASQ "/usr/sbin/dnsmasq"
#endif
#define LOCAL_TTL 30

static const char base_hosts[] = "127.0.0.10 ready.test\n"
				 "127.0.0.2 dual.test\n"
				 "2001:db8::2 dual.test\n"
				 "127.0.0.3 v4only.test\n"
				 "2001:db8::3 v6only.test\n"
				 "127.0.0.4 multi.test\n"
				 "127.0.0.5 multi.test\n"
				 "127.0.0.6 multi.test\n"
				 "2001:db8::4 multi6.test\n"
				 "2001:db8::5 multi6.test\n"
				 "127.0.0.7 change.test\n";

/* The shared dnsmasq instance. */
static struct {
	bool tried;	/* dm_ensure() ran once */
	bool ok;	/* dnsmasq is up and answering */
	bool ipv6;	/* it also listens on [::1] */
	pid_t pid;	/* dnsmasq */
	pid_t watchdog; /* kills dnsmasq if we die; see dm_spawn() */
	int watch_fd;	/* write end of the watchdog's pipe */
	uint16_t port;
	char dir[64];	 /* temp dir holding the files below */
	char hosts[128]; /* the addn-hosts file */
	char log[128];	 /* dnsmasq's stderr */
} dm;

/* ---- result capture and loop helpers ---- */

struct cap {
	int calls;
	int status;
	bool error_null;
	char error[128];
	size_t naddrs;
	uint32_t ttl;
	int family0;	  /* family of the first address */
	char addrs[512];  /* "ip:port,[ip6]:port" in delivered order */
	char sorted[512]; /* the same, sorted */
	int sync_calls;	  /* calls seen while dns_resolve() was still running */
};

static bool in_resolve; /* set around dns_resolve() calls to catch re-entrancy */

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(out, outlen, "?family=%d", ss->ss_family);
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void cap_cb(const struct dns_result *res, void *arg)
{
	struct cap *c = arg;
	char one[16][80];
	const char *ptrs[16];
	size_t n = MIN(res->naddrs, ARRAY_SIZE(one));

	c->calls++;
	if (in_resolve)
		c->sync_calls++;
	c->status = res->status;
	c->error_null = res->error == NULL;
	snprintf(c->error, sizeof(c->error), "%s", res->error ? res->error : "");
	c->naddrs = res->naddrs;
	c->ttl = res->min_ttl_s;
	c->family0 = res->naddrs ? res->addrs[0].ss_family : 0;
	c->addrs[0] = c->sorted[0] = 0;
	for (size_t i = 0; i < n; i++) {
		fmt_addr(&res->addrs[i], one[i], sizeof(one[i]));
		ptrs[i] = one[i];
		snprintf(c->addrs + strlen(c->addrs), sizeof(c->addrs) - strlen(c->addrs), "%s%s",
			 i ? "," : "", one[i]);
	}
	qsort(ptrs, n, sizeof(ptrs[0]), cmp_str);
	for (size_t i = 0; i < n; i++)
		snprintf(c->sorted + strlen(c->sorted), sizeof(c->sorted) - strlen(c->sorted),
			 "%s%s", i ? "," : "", ptrs[i]);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* Run b until *calls >= want (calls NULL: for the whole time) or timeout_ms
 * pass.  Returns the number of loop iterations, to catch busy loops. */
static int run_until(struct event_base *b, const int *calls, int want, int timeout_ms)
{
	bool expired = false;
	struct event *t = evtimer_new(b, deadline_cb, &expired);
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	int iters = 0;

	evtimer_add(t, &tv);
	while (!expired && (!calls || *calls < want)) {
		event_base_loop(b, EVLOOP_ONCE);
		iters++;
	}
	event_free(t);
	return iters;
}

static struct dns_query *start(struct dns_resolver *r, const char *name, uint16_t port,
			       enum dns_family fam, struct cap *c)
{
	struct dns_query *q;

	in_resolve = true;
	q = dns_resolve(r, name, port, fam, cap_cb, c);
	in_resolve = false;
	return q;
}

/* Resolve and wait up to 5 s for the answer. */
static void resolve_wait(struct dns_resolver *r, struct event_base *b, const char *name,
			 uint16_t port, enum dns_family fam, struct cap *c)
{
	memset(c, 0, sizeof(*c));
	start(r, name, port, fam, c);
	run_until(b, &c->calls, 1, 5000);
}

static struct sockaddr_storage loopback(int af, uint16_t port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_loopback;
	}
	return ss;
}

static struct dns_resolver *resolver_at(struct event_base *b, int af, uint16_t port, int timeout_ms,
					int tries)
{
	struct sockaddr_storage ss = loopback(af, port);
	char err[256] = "";
	struct dns_resolver *r = dns_resolver_new(b, &ss, 1, err, sizeof(err));

	if (!r) {
		fprintf(stderr, "  dns_resolver_new: %s\n", err);
		return NULL;
	}
	if (dns_resolver_set_timeouts(r, timeout_ms, tries) != RM_OK) {
		fprintf(stderr, "  dns_resolver_set_timeouts failed\n");
		dns_resolver_free(r);
		return NULL;
	}
	return r;
}

/* A UDP socket bound on 127.0.0.1 that never answers; returns its fd. */
static int blackhole(uint16_t *port)
{
	struct sockaddr_storage ss = loopback(AF_INET, 0);
	socklen_t len = sizeof(ss);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		die("blackhole socket: %s", strerror(errno));
	*port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* ---- dnsmasq ---- */

static bool write_hosts(const char *text)
{
	char tmp[160];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", dm.hosts);
	f = fopen(tmp, "w");
	if (!f)
		return false;
	fputs(text, f);
	if (fclose(f) != 0)
		return false;
	return rename(tmp, dm.hosts) == 0;
}

/* Stop dnsmasq and its watchdog (the watchdog first, so it cannot signal a
 * recycled pid). */
static void dm_kill(void)
{
	if (dm.watchdog > 0) {
		kill(dm.watchdog, SIGKILL);
		waitpid(dm.watchdog, NULL, 0);
		dm.watchdog = 0;
	}
	if (dm.watch_fd >= 0) {
		close(dm.watch_fd);
		dm.watch_fd = -1;
	}
	if (dm.pid > 0) {
		kill(dm.pid, SIGTERM);
		waitpid(dm.pid, NULL, 0);
		dm.pid = 0;
	}
}

static void dm_stop(void)
{
	dm_kill();
	if (dm.dir[0]) {
		unlink(dm.hosts);
		unlink(dm.log);
		rmdir(dm.dir);
		dm.dir[0] = 0;
	}
}

static bool can_bind_ipv6_loopback(void)
{
	struct sockaddr_storage ss = loopback(AF_INET6, 0);
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in6)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* Start dnsmasq on port, setting dm.pid, dm.watchdog and dm.watch_fd. */
static void dm_spawn(uint16_t port)
{
	char a_port[32], a_hosts[200], a_ttl[32];
	char *argv[32];
	int n = 0, p[2];
	pid_t pid;

	snprintf(a_port, sizeof(a_port), "--port=%u", port);
	snprintf(a_hosts, sizeof(a_hosts), "--addn-hosts=%s", dm.hosts);
	snprintf(a_ttl, sizeof(a_ttl), "--local-ttl=%d", LOCAL_TTL);
	argv[n++] = DNSMASQ;
	argv[n++] = "--keep-in-foreground";
	argv[n++] = "--log-facility=-";
	argv[n++] = a_port;
	argv[n++] = "--listen-address=127.0.0.1";
	if (dm.ipv6)
		argv[n++] = "--listen-address=::1";
	argv[n++] = "--bind-interfaces";
	argv[n++] = "--no-resolv";
	argv[n++] = "--no-hosts";
	argv[n++] = a_hosts;
	argv[n++] = "--conf-file=/dev/null";
	argv[n++] = "--user=root";
	argv[n++] = "--pid-file=";
	argv[n++] = "--local=/test/"; /* answer .test from the hosts file only */
	argv[n++] = "--address=/#/";  /* NXDOMAIN for everything else (search domains) */
	argv[n++] = a_ttl;
	argv[n] = NULL;

	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(dm.log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(DNSMASQ, argv);
		_exit(127);
	}
	dm.pid = pid;

	/* dnsmasq drops capabilities, which clears PR_SET_PDEATHSIG, so a
	 * watchdog kills it if this process dies without running dm_stop()
	 * (a crash, a sanitizer abort), and removes the temp files: it blocks
	 * reading a pipe whose write end only we hold, and sees EOF when we
	 * are gone. */
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	dm.watchdog = fork();
	if (dm.watchdog < 0)
		die("fork: %s", strerror(errno));
	if (dm.watchdog == 0) {
		char c;

		close(p[1]);
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
		kill(pid, SIGTERM);
		unlink(dm.hosts);
		unlink(dm.log);
		rmdir(dm.dir);
		_exit(0);
	}
	close(p[0]);
	dm.watch_fd = p[1];
}

/* Start dnsmasq once; true when it answers. */
static bool dm_ensure(void)
{
	struct event_base *b;

	if (dm.tried)
		return dm.ok;
	dm.tried = true;
	dm.watch_fd = -1;
	if (access(DNSMASQ, X_OK) != 0) {
		fprintf(stderr, "  %s not found: install dnsmasq-base\n", DNSMASQ);
		return false;
	}
	snprintf(dm.dir, sizeof(dm.dir), "/tmp/remora-dns-XXXXXX");
	if (!mkdtemp(dm.dir))
		die("mkdtemp: %s", strerror(errno));
	snprintf(dm.hosts, sizeof(dm.hosts), "%s/hosts", dm.dir);
	snprintf(dm.log, sizeof(dm.log), "%s/dnsmasq.log", dm.dir);
	atexit(dm_stop);
	if (!write_hosts(base_hosts))
		die("cannot write %s", dm.hosts);
	dm.ipv6 = can_bind_ipv6_loopback();

	b = event_base_new();
	for (int attempt = 0; attempt < 8 && !dm.ok; attempt++) {
		uint16_t port = (uint16_t)(20000 + rand_below(40000));
		uint64_t deadline = now_ms() + 5000;

		dm_spawn(port);
		while (now_ms() < deadline) {
			struct dns_resolver *r = resolver_at(b, AF_INET, port, 100, 1);
			struct cap c;

			if (!r)
				break;
			resolve_wait(r, b, "ready.test", 1, DNS_V4_ONLY, &c);
			dns_resolver_free(r);
			if (c.calls == 1 && c.status == 0) {
				dm.ok = true;
				dm.port = port;
				break;
			}
			if (waitpid(dm.pid, NULL, WNOHANG) == dm.pid) {
				dm.pid = 0; /* exited: port taken? try another */
				break;
			}
			usleep(20000);
		}
		if (!dm.ok)
			dm_kill();
	}
	event_base_free(b);
	if (!dm.ok) {
		FILE *f = fopen(dm.log, "r");
		char line[256];

		fprintf(stderr, "  dnsmasq did not start; its output:\n");
		while (f && fgets(line, sizeof(line), f))
			fprintf(stderr, "    %s", line);
		if (f)
			fclose(f);
	}
	return dm.ok;
}

#define NEED_DNSMASQ()                                                                             \
	do {                                                                                       \
		bool ok_ = dm_ensure();                                                            \
		CHECK(ok_);                                                                        \
		if (!ok_)                                                                          \
			return;                                                                    \
	} while (0)

/* ---- numeric addresses (no server needed) ---- */

TEST(dns_literal_ipv4_async)
{
	struct event_base *b = event_base_new();
	char err[256];
	struct dns_resolver *r = dns_resolver_new(b, NULL, 0, err, sizeof(err));
	struct cap c = {0};
	struct dns_query *q;

	CHECK(r);
	if (!r)
		goto out;
	q = start(r, "127.0.0.1", 8080, DNS_AUTO, &c);
	CHECK(q != NULL);
	CHECK_INT(c.calls, 0); /* never from inside dns_resolve() */
	CHECK_INT(dns_resolver_pending(r), 1);
	run_until(b, &c.calls, 1, 1000);
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.sync_calls, 0);
	CHECK_INT(c.status, 0);
	CHECK(c.error_null);
	CHECK_STR(c.addrs, "127.0.0.1:8080");
	CHECK_INT(c.family0, AF_INET);
	CHECK_INT(c.ttl, 0);
	CHECK_INT(dns_resolver_pending(r), 0);
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_literal_ipv6_async)
{
	struct event_base *b = event_base_new();
	char err[256];
	struct dns_resolver *r = dns_resolver_new(b, NULL, 0, err, sizeof(err));
	struct cap c = {0};

	CHECK(r);
	if (!r)
		goto out;
	start(r, "::1", 443, DNS_AUTO, &c);
	CHECK_INT(c.calls, 0);
	run_until(b, &c.calls, 1, 1000);
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "[::1]:443");
	CHECK_INT(c.family0, AF_INET6);

	resolve_wait(r, b, "2001:db8::7", 9, DNS_V6_ONLY, &c);
	CHECK_INT(c.sync_calls, 0);
	CHECK_STR(c.addrs, "[2001:db8::7]:9");
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_literal_family_mismatch)
{
	struct event_base *b = event_base_new();
	char err[256];
	struct dns_resolver *r = dns_resolver_new(b, NULL, 0, err, sizeof(err));
	struct cap c;

	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "::1", 80, DNS_V4_ONLY, &c);
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.status, ARES_ENODATA);
	CHECK_INT(c.naddrs, 0);
	CHECK(!c.error_null && c.error[0]);
	resolve_wait(r, b, "127.0.0.1", 80, DNS_V6_ONLY, &c);
	CHECK_INT(c.status, ARES_ENODATA);
	resolve_wait(r, b, "127.0.0.1", 80, DNS_V4_PREFERRED, &c);
	CHECK_STR(c.addrs, "127.0.0.1:80");
	resolve_wait(r, b, "::1", 80, DNS_V4_PREFERRED, &c);
	CHECK_STR(c.addrs, "[::1]:80");
	resolve_wait(r, b, "::1", 80, DNS_ALL, &c);
	CHECK_STR(c.addrs, "[::1]:80");
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_bad_resolver_family)
{
	struct event_base *b = event_base_new();
	struct sockaddr_storage ss[2] = {loopback(AF_INET, 53)};
	char err[256] = "";

	ss[1].ss_family = AF_UNIX;
	CHECK(dns_resolver_new(b, ss, 2, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "resolvers[1]");
	event_base_free(b);
}

/* ---- against dnsmasq ---- */

TEST(dns_several_a_records_and_ttl)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "multi.test", 80, DNS_V4_ONLY, &c);
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.sync_calls, 0);
	CHECK_INT(c.status, 0);
	CHECK_INT(c.naddrs, 3);
	CHECK_STR(c.sorted, "127.0.0.4:80,127.0.0.5:80,127.0.0.6:80");
	CHECK_INT(c.ttl, LOCAL_TTL);

	/* ALL on a v4-only name: the three A records, nothing else. */
	resolve_wait(r, b, "multi.test", 81, DNS_ALL, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.sorted, "127.0.0.4:81,127.0.0.5:81,127.0.0.6:81");

	resolve_wait(r, b, "multi6.test", 82, DNS_V6_ONLY, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.sorted, "[2001:db8::4]:82,[2001:db8::5]:82");
	CHECK_INT(c.ttl, LOCAL_TTL);
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_family_v4_only_and_v6_only)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "dual.test", 80, DNS_V4_ONLY, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "127.0.0.2:80");
	resolve_wait(r, b, "dual.test", 80, DNS_V6_ONLY, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "[2001:db8::2]:80");
	/* The name exists, but not in the family asked for. */
	resolve_wait(r, b, "v4only.test", 80, DNS_V6_ONLY, &c);
	CHECK_INT(c.calls, 1);
	CHECK(c.status != 0);
	CHECK_INT(c.naddrs, 0);
	CHECK(c.error[0] != 0);
	resolve_wait(r, b, "v6only.test", 80, DNS_V4_ONLY, &c);
	CHECK_INT(c.calls, 1);
	CHECK(c.status != 0);
	CHECK_INT(c.naddrs, 0);
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_family_auto_prefers_v6_falls_back_to_v4)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "dual.test", 80, DNS_AUTO, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "[2001:db8::2]:80");
	resolve_wait(r, b, "v4only.test", 80, DNS_AUTO, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "127.0.0.3:80");
	resolve_wait(r, b, "v6only.test", 80, DNS_AUTO, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "[2001:db8::3]:80");
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_family_v4_preferred)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "dual.test", 80, DNS_V4_PREFERRED, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "127.0.0.2:80");
	resolve_wait(r, b, "v6only.test", 80, DNS_V4_PREFERRED, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "[2001:db8::3]:80");
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_family_all_v4_then_v6)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	/* A and AAAA answers may arrive in either order; ours must not vary. */
	for (int i = 0; i < 5; i++) {
		resolve_wait(r, b, "dual.test", 8000, DNS_ALL, &c);
		CHECK_INT(c.status, 0);
		CHECK_STR(c.addrs, "127.0.0.2:8000,[2001:db8::2]:8000");
		CHECK_INT(c.ttl, LOCAL_TTL);
	}
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_nxdomain_error_text)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "missing.test", 80, DNS_AUTO, &c);
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.status, ARES_ENOTFOUND);
	CHECK_CONTAINS(c.error, "not found");
	CHECK_INT(c.naddrs, 0);
	resolve_wait(r, b, "missing.test", 80, DNS_V4_ONLY, &c);
	CHECK_INT(c.status, ARES_ENOTFOUND);
	CHECK_STR(c.error, ares_strerror(ARES_ENOTFOUND));
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_reresolve_sees_hosts_change_after_sighup)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;
	char changed[sizeof(base_hosts) + 64];
	uint64_t deadline;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "change.test", 80, DNS_AUTO, &c);
	CHECK_STR(c.addrs, "127.0.0.7:80");

	snprintf(changed, sizeof(changed), "%s127.0.0.8 change.test\n2001:db8::8 change.test\n",
		 base_hosts);
	/* Drop the old line so the new addresses are the only ones. */
	*strstr(changed, "127.0.0.7 change.test\n") = '#';
	CHECK(write_hosts(changed));
	CHECK(kill(dm.pid, SIGHUP) == 0);
	deadline = now_ms() + 3000;
	do {
		resolve_wait(r, b, "change.test", 80, DNS_ALL, &c);
		if (!strcmp(c.addrs, "127.0.0.8:80,[2001:db8::8]:80"))
			break;
		usleep(20000);
	} while (now_ms() < deadline);
	CHECK_STR(c.addrs, "127.0.0.8:80,[2001:db8::8]:80");

	CHECK(write_hosts(base_hosts));
	CHECK(kill(dm.pid, SIGHUP) == 0);
	deadline = now_ms() + 3000;
	do {
		resolve_wait(r, b, "change.test", 80, DNS_ALL, &c);
		if (!strcmp(c.addrs, "127.0.0.7:80"))
			break;
		usleep(20000);
	} while (now_ms() < deadline);
	CHECK_STR(c.addrs, "127.0.0.7:80");
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_ipv6_resolver_address)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c;

	NEED_DNSMASQ();
	if (!dm.ipv6) {
		printf("# no IPv6 loopback here: IPv6 resolver address not tested\n");
		return;
	}
	b = event_base_new();
	r = resolver_at(b, AF_INET6, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	resolve_wait(r, b, "dual.test", 80, DNS_ALL, &c);
	CHECK_INT(c.status, 0);
	CHECK_STR(c.addrs, "127.0.0.2:80,[2001:db8::2]:80");
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_many_concurrent_queries)
{
	static const struct {
		const char *name;
		enum dns_family fam;
		const char *want; /* sorted */
	} cases[] = {
	    {"dual.test", DNS_V4_ONLY, "127.0.0.2:53"},
	    {"dual.test", DNS_AUTO, "[2001:db8::2]:53"},
	    {"multi.test", DNS_ALL, "127.0.0.4:53,127.0.0.5:53,127.0.0.6:53"},
	    {"v6only.test", DNS_V4_PREFERRED, "[2001:db8::3]:53"},
	    {"10.1.2.3", DNS_AUTO, "10.1.2.3:53"},
	    {"missing.test", DNS_AUTO, ""},
	};
	struct cap caps[60];
	struct event_base *b;
	struct dns_resolver *r;
	int total = 0;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	memset(caps, 0, sizeof(caps));
	for (size_t i = 0; i < ARRAY_SIZE(caps); i++)
		start(r, cases[i % ARRAY_SIZE(cases)].name, 53, cases[i % ARRAY_SIZE(cases)].fam,
		      &caps[i]);
	CHECK_INT(dns_resolver_pending(r), ARRAY_SIZE(caps));
	for (uint64_t deadline = now_ms() + 5000; now_ms() < deadline;) {
		total = 0;
		for (size_t i = 0; i < ARRAY_SIZE(caps); i++)
			total += caps[i].calls;
		if (total == (int)ARRAY_SIZE(caps))
			break;
		run_until(b, NULL, 0, 10);
	}
	CHECK_INT(total, ARRAY_SIZE(caps));
	for (size_t i = 0; i < ARRAY_SIZE(caps); i++) {
		CHECK_INT(caps[i].calls, 1);
		CHECK_INT(caps[i].sync_calls, 0);
		CHECK_STR(caps[i].sorted, cases[i % ARRAY_SIZE(cases)].want);
	}
	CHECK_INT(dns_resolver_pending(r), 0);
	/* Idle: c-ares closed its sockets and no timer is left armed. */
	CHECK_INT(event_base_get_num_events(b, EVENT_BASE_COUNT_ADDED), 0);
	dns_resolver_free(r);
out:
	event_base_free(b);
}

/* ---- cancel and free ---- */

TEST(dns_cancel_before_completion)
{
	struct event_base *b;
	struct dns_resolver *r;
	struct cap c1 = {0}, c2 = {0}, c3 = {0};
	struct dns_query *q1, *q3;

	NEED_DNSMASQ();
	b = event_base_new();
	r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	CHECK(r);
	if (!r)
		goto out;
	q1 = start(r, "dual.test", 80, DNS_ALL, &c1); /* sent to dnsmasq */
	q3 = start(r, "127.0.0.1", 80, DNS_ALL, &c3); /* done, not yet delivered */
	start(r, "dual.test", 80, DNS_ALL, &c2);
	CHECK_INT(dns_resolver_pending(r), 3);
	dns_cancel(q1);
	dns_cancel(q3);
	dns_cancel(NULL);
	CHECK_INT(dns_resolver_pending(r), 1);
	run_until(b, &c2.calls, 1, 5000);
	CHECK_INT(c2.calls, 1);
	CHECK_STR(c2.addrs, "127.0.0.2:80,[2001:db8::2]:80");
	/* dnsmasq answered q1 as well by now (it was sent first); give any
	 * stray delivery a chance to show up. */
	run_until(b, NULL, 0, 200);
	CHECK_INT(c1.calls, 0);
	CHECK_INT(c3.calls, 0);
	CHECK_INT(dns_resolver_pending(r), 0);
	/* c-ares has let go of q1: the timeouts can be changed again. */
	CHECK_INT(dns_resolver_set_timeouts(r, 500, 2), RM_OK);
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_free_with_queries_pending)
{
	struct event_base *b = event_base_new();
	struct dns_resolver *r;
	struct cap c1 = {0}, c2 = {0}, c3 = {0};
	uint16_t port;
	int hole = blackhole(&port);
	char buf[512];

	/* In flight with sockets open (the server never answers), plus one
	 * completed but not yet delivered. */
	r = resolver_at(b, AF_INET, port, 5000, 3);
	CHECK(r);
	if (!r)
		goto out;
	start(r, "dual.test", 80, DNS_ALL, &c1);
	start(r, "::1", 80, DNS_ALL, &c2);
	run_until(b, NULL, 0, 50);
	CHECK_INT(c1.calls, 0);
	CHECK_INT(c2.calls, 1);
	start(r, "::1", 80, DNS_ALL, &c3);
	CHECK(recv(hole, buf, sizeof(buf), MSG_DONTWAIT) > 0); /* really was sent */
	dns_resolver_free(r);
	run_until(b, NULL, 0, 200);
	CHECK_INT(c1.calls, 0);
	CHECK_INT(c2.calls, 1);
	CHECK_INT(c3.calls, 0);
	/* Nothing of the resolver is left registered on the base. */
	CHECK_INT(event_base_get_num_events(b, EVENT_BASE_COUNT_ADDED), 0);

	if (dm_ensure()) {
		/* And with a live server, freeing right after sending. */
		memset(&c1, 0, sizeof(c1));
		r = resolver_at(b, AF_INET, dm.port, 1000, 3);
		CHECK(r);
		if (r) {
			start(r, "multi.test", 80, DNS_ALL, &c1);
			dns_resolver_free(r);
			run_until(b, NULL, 0, 200);
			CHECK_INT(c1.calls, 0);
		}
	}
out:
	close(hole);
	event_base_free(b);
}

struct free_ctx {
	struct dns_resolver *r; /* freed by the first callback */
	int calls;
};

static void free_in_cb(const struct dns_result *res, void *arg)
{
	struct free_ctx *f = arg;

	f->calls++;
	dns_resolver_free(f->r);
	f->r = NULL;
}

TEST(dns_free_from_callback)
{
	struct event_base *b = event_base_new();
	char err[256];
	struct free_ctx f = {0};

	f.r = dns_resolver_new(b, NULL, 0, err, sizeof(err));
	CHECK(f.r);
	if (!f.r)
		goto out;
	/* Three completed in the same loop pass: only the first is delivered. */
	for (int i = 0; i < 3; i++)
		dns_resolve(f.r, "127.0.0.1", 80, DNS_AUTO, free_in_cb, &f);
	run_until(b, NULL, 0, 100);
	CHECK_INT(f.calls, 1);
	CHECK(f.r == NULL);
out:
	event_base_free(b);
}

struct chain_ctx {
	struct dns_resolver *r;
	struct cap inner; /* the query started from the callback */
	struct cap inner2;
	int calls;
};

static void chain_cb(const struct dns_result *res, void *arg)
{
	struct chain_ctx *x = arg;

	x->calls++;
	start(x->r, "10.9.8.7", 1, DNS_V4_ONLY, &x->inner);
	if (dm.ok)
		start(x->r, "v4only.test", 2, DNS_AUTO, &x->inner2);
	/* A literal still must not be delivered inside dns_resolve(). */
	CHECK_INT(x->inner.calls, 0);
}

TEST(dns_resolve_from_callback)
{
	struct event_base *b = event_base_new();
	struct chain_ctx x;

	memset(&x, 0, sizeof(x));
	if (dm_ensure())
		x.r = resolver_at(b, AF_INET, dm.port, 1000, 3);
	else
		CHECK(!"dnsmasq");
	if (!x.r)
		goto out;
	dns_resolve(x.r, "127.0.0.1", 80, DNS_AUTO, chain_cb, &x);
	run_until(b, &x.calls, 1, 1000);
	CHECK_INT(x.calls, 1);
	run_until(b, &x.inner.calls, 1, 1000);
	CHECK_INT(x.inner.calls, 1);
	CHECK_INT(x.inner.sync_calls, 0);
	CHECK_STR(x.inner.addrs, "10.9.8.7:1");
	run_until(b, &x.inner2.calls, 1, 5000);
	CHECK_INT(x.inner2.calls, 1);
	CHECK_STR(x.inner2.addrs, "127.0.0.3:2");
	dns_resolver_free(x.r);
out:
	event_base_free(b);
}

/* ---- unreachable servers ---- */

TEST(dns_closed_port_fails_fast)
{
	struct event_base *b = event_base_new();
	struct dns_resolver *r;
	struct cap c;
	uint16_t port;
	int hole = blackhole(&port);
	uint64_t t0, took;

	close(hole); /* now nothing listens on port */
	r = resolver_at(b, AF_INET, port, 200, 2);
	CHECK(r);
	if (!r)
		goto out;
	t0 = now_ms();
	resolve_wait(r, b, "dual.test", 80, DNS_AUTO, &c);
	took = now_ms() - t0;
	CHECK_INT(c.calls, 1);
	CHECK(c.status != 0);
	CHECK(c.error[0] != 0);
	CHECK_INT(c.naddrs, 0);
	CHECK(took < 3000);
	dns_resolver_free(r);
out:
	event_base_free(b);
}

TEST(dns_silent_server_times_out)
{
	struct event_base *b = event_base_new();
	struct dns_resolver *r;
	struct cap c = {0};
	uint16_t port;
	int hole = blackhole(&port);
	uint64_t t0, took;
	int iters;
	char buf[512];

	r = resolver_at(b, AF_INET, port, 200, 2);
	CHECK(r);
	if (!r)
		goto out;
	CHECK_INT(dns_resolver_set_timeouts(r, 150, 2), RM_OK);
	t0 = now_ms();
	start(r, "dual.test", 80, DNS_V4_ONLY, &c);
	/* Not while the query is in flight. */
	CHECK_INT(dns_resolver_set_timeouts(r, 1000, 1), RM_ERROR);
	iters = run_until(b, &c.calls, 1, 5000);
	took = now_ms() - t0;
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.status, ARES_ETIMEOUT);
	CHECK_STR(c.error, ares_strerror(ARES_ETIMEOUT));
	/* Two tries of >= 150 ms each, well under the 5 s default. */
	CHECK(took >= 250);
	CHECK(took < 3000);
	/* Timer driven: a handful of wake-ups, not a spin. */
	CHECK(iters < 20);
	printf("# silent server: %d loop iterations, %llu ms\n", iters, (unsigned long long)took);
	CHECK(recv(hole, buf, sizeof(buf), MSG_DONTWAIT) > 0);
	CHECK(recv(hole, buf, sizeof(buf), MSG_DONTWAIT) > 0); /* the retry */
	dns_resolver_free(r);
out:
	close(hole);
	event_base_free(b);
}
