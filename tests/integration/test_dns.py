"""STRICT_DNS clusters resolved through a real dnsmasq on loopback: the
proxy follows record changes (dns_refresh_rate 1s) and membership_total
tracks the number of A records."""

import os
import signal
import socket
import struct

import pytest

from harness import (bootstrap, curl, free_port, http_listener, route, spawn, stop_process,
                     strict_dns_cluster, wait_until)

DNSMASQ = "/usr/sbin/dnsmasq"
NAME = "backend.remora.test"


def dns_query_a(port, name, timeout=1.0):
    """Ask 127.0.0.1:port for name's A records; returns a sorted list of IPs."""
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, ("127.0.0.1", port))
        resp = s.recv(4096)
    finally:
        s.close()
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", resp[:12])
    assert rid == qid
    i = 12
    for _ in range(qd):               # skip the question
        while resp[i]:
            i += resp[i] + 1
        i += 5
    ips = []
    for _ in range(an):
        if resp[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while resp[i]:
                i += resp[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", resp[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            ips.append(socket.inet_ntoa(resp[i:i + 4]))
        i += rdlen
    return sorted(ips)


class Dnsmasq:
    def __init__(self, workdir):
        self.port = free_port(udp=True)
        self.hosts = os.path.join(workdir, "dns.hosts")
        self.log = os.path.join(workdir, "dnsmasq.log")
        self.pidfile = os.path.join(workdir, "dnsmasq.pid")
        self.proc = None

    def set_records(self, ips):
        tmp = self.hosts + ".tmp"
        with open(tmp, "w") as f:
            for ip in ips:
                f.write(f"{ip} {NAME}\n")
        os.replace(tmp, self.hosts)

    def start(self, ips):
        self.set_records(ips)
        self.proc = spawn([DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null",
                           f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                           "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts}",
                           "--local-ttl=0", "--no-negcache", "--user=root", "--group=root",
                           f"--pid-file={self.pidfile}", f"--log-facility={self.log}",
                           "--log-queries"])
        wait_until(lambda: dns_query_a(self.port, NAME) == sorted(ips), 10,
                   what="dnsmasq answering")

    def change(self, ips):
        """Rewrite the hosts file and make dnsmasq re-read it (SIGHUP)."""
        self.set_records(ips)
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: dns_query_a(self.port, NAME) == sorted(ips), 10,
                   what="dnsmasq serving the new records")

    def stop(self):
        if self.proc:
            stop_process(self.proc, signal.SIGTERM, 5)


@pytest.fixture
def dnsmasq(tmp_path):
    if not os.access(DNSMASQ, os.X_OK):
        pytest.fail(f"{DNSMASQ} missing: apt-get install dnsmasq-base")
    d = Dnsmasq(str(tmp_path))
    yield d
    d.stop()


def test_strict_dns_follows_record_changes(remora, make_upstream, dnsmasq, ports):
    port = free_port(hosts=("127.0.0.1", "127.0.0.2"))
    one = make_upstream("one", host="127.0.0.1", port=port)
    two = make_upstream("two", host="127.0.0.2", port=port)
    dnsmasq.start(["127.0.0.1"])

    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                    [strict_dns_cluster("backend", NAME, port, dnsmasq.port, refresh="1s")])
    r = remora(cfg)
    url = f"http://127.0.0.1:{lport}/dns"

    r.wait_stat("cluster.backend.membership_total", lambda v: v == 1, timeout=15)
    res = curl(url)
    assert res.status == 200, res
    assert res.json()["server"] == "one"

    # move the name to the second upstream
    dnsmasq.change(["127.0.0.2"])
    recent = []

    def switched():
        res = curl(url, timeout=5)
        recent.append(res.json()["server"] if res.status == 200 else res.status)
        return recent[-5:] == ["two"] * 5
    wait_until(switched, 15, interval=0.1, what="requests reaching the new address")
    assert r.stats()["cluster.backend.membership_total"] == 1
    assert one.request_count() >= 1 and two.request_count() >= 5

    # two records: both hosts become members and both get traffic
    dnsmasq.change(["127.0.0.1", "127.0.0.2"])
    r.wait_stat("cluster.backend.membership_total", lambda v: v == 2, timeout=15)
    r.wait_stat("cluster.backend.membership_healthy", lambda v: v == 2, timeout=5)
    seen = set()
    for _ in range(20):
        res = curl(url)
        assert res.status == 200, res
        seen.add(res.json()["server"])
    assert seen == {"one", "two"}, seen

    # back to one record
    dnsmasq.change(["127.0.0.1"])
    r.wait_stat("cluster.backend.membership_total", lambda v: v == 1, timeout=15)


def test_strict_dns_initial_resolution_with_two_records(remora, make_upstream, dnsmasq, ports):
    port = free_port(hosts=("127.0.0.1", "127.0.0.2"))
    one = make_upstream("one", host="127.0.0.1", port=port)
    two = make_upstream("two", host="127.0.0.2", port=port)
    dnsmasq.start(["127.0.0.1", "127.0.0.2"])
    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                    [strict_dns_cluster("backend", NAME, port, dnsmasq.port, refresh="1s")])
    r = remora(cfg)
    r.wait_stat("cluster.backend.membership_total", lambda v: v == 2, timeout=15)
    st, _, body = r.admin_get("/clusters")
    assert st == 200
    text = body.decode()
    assert f"backend::127.0.0.1:{port}::health_flags::healthy" in text, text
    assert f"backend::127.0.0.2:{port}::health_flags::healthy" in text, text
    seen = {curl(f"http://127.0.0.1:{lport}/").json()["server"] for _ in range(10)}
    assert seen == {one.name, two.name}, seen


def test_strict_dns_health_checks_follow_membership(remora, make_upstream, dnsmasq, ports):
    """Active health checks stop for a host that left the DNS answer and
    start for one that (re)appears."""
    import time
    port = free_port(hosts=("127.0.0.1", "127.0.0.2"))
    make_upstream("one", host="127.0.0.1", port=port)
    two = make_upstream("two", host="127.0.0.2", port=port)
    dnsmasq.start(["127.0.0.1", "127.0.0.2"])
    admin, lport = ports.get(), ports.get()
    hc = {"timeout": "1s", "interval": "0.1s", "unhealthy_threshold": 2, "healthy_threshold": 1,
          "http_health_check": {"path": "/healthz"}}
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                    [strict_dns_cluster("backend", NAME, port, dnsmasq.port, refresh="1s",
                                        health_checks=[hc])])
    r = remora(cfg)
    r.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 2, timeout=15)

    def checks_of_two():
        with two.lock:
            return len([q for q in two.requests if q["path"] == "/healthz"])
    wait_until(lambda: checks_of_two() >= 3, 5, what="checks of 127.0.0.2")

    dnsmasq.change(["127.0.0.1"])
    r.wait_stat("cluster.backend.membership_total", lambda v: v == 1, timeout=15)
    assert r.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 1) == 1
    time.sleep(0.3)                        # a check in flight may still land
    n = checks_of_two()
    time.sleep(1.0)                        # ten intervals
    assert checks_of_two() == n, "a host that left the set is still checked"

    dnsmasq.change(["127.0.0.1", "127.0.0.2"])
    r.wait_stat("cluster.backend.membership_total", lambda v: v == 2, timeout=15)
    wait_until(lambda: checks_of_two() > n, 5, what="checks of the returning host")
    r.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 2, timeout=5)
