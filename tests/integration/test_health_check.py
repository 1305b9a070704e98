"""Active health checking (cluster.health_checks): HTTP checks take a host out
of rotation when its health endpoint fails and bring it back when it
recovers; non-retriable statuses act at once; network failures and timeouts
count; TCP checks with send/receive payloads; stats and /clusters flags.

Intervals are short (0.1-0.3 s); waits are bounded by
interval x threshold plus generous slack, never asserted as exact times."""

import base64
import time

from harness import (bootstrap, closed_port, curl, http_listener, route, static_cluster,
                     tcp_proxy_listener, wait_until)

SLACK = 3.0   # seconds on top of interval x threshold (sanitizer build, loaded CI)


def _http_hc(interval="0.2s", unhealthy=2, healthy=2, timeout="1s", **http):
    return {"timeout": timeout, "interval": interval, "unhealthy_threshold": unhealthy,
            "healthy_threshold": healthy, "http_health_check": {"path": "/healthz", **http}}


def _cfg(admin, lport, hosts, hc, name="backend"):
    return bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, name)])],
                     [static_cluster(name, [("127.0.0.1", p) for p in hosts],
                                     lb_policy="ROUND_ROBIN", health_checks=[hc])])


def _servers(lport, n):
    out = []
    for i in range(n):
        res = curl(f"http://127.0.0.1:{lport}/t{i}")
        assert res.status == 200, res
        out.append(res.json()["server"])
    return out


def _flags(r, cluster, port):
    text = r.admin_get("/clusters")[2].decode()
    key = f"{cluster}::127.0.0.1:{port}::health_flags::"
    for line in text.splitlines():
        if line.startswith(key):
            return line[len(key):]
    raise AssertionError(f"{key} not in /clusters:\n{text}")


def test_http_check_removes_and_restores_host(remora, make_upstream, ports):
    a, b, c = make_upstream("a"), make_upstream("b"), make_upstream("c")
    admin, lport = ports.get(), ports.get()
    hc = _http_hc(interval="0.2s", unhealthy=2, healthy=2,
                  retriable_statuses=[{"start": 503, "end": 504}],
                  request_headers_to_add=[{"header": {"key": "x-hc", "value": "yes"}}])
    r = remora(_cfg(admin, lport, [a.port, b.port, c.port], hc), concurrency=1)
    # the first check round completes before the listeners start
    assert r.stat("cluster.backend.health_check.healthy") == 3
    assert r.stat("cluster.backend.health_check.attempt") >= 3
    for s in (a, b, c):
        assert _flags(r, "backend", s.port) == "healthy"
    hreq = [q for q in b.requests if q["path"] == "/healthz"]
    assert hreq, "b got no health check"
    assert hreq[0]["method"] == "GET"
    assert hreq[0]["headers"]["host"] == "backend"            # default: the cluster name
    assert hreq[0]["headers"]["user-agent"] == "Envoy/HC"
    assert hreq[0]["headers"]["x-hc"] == "yes"
    # keep-alive: checks reuse one connection (reuse_connection defaults to true)
    wait_until(lambda: len([q for q in a.requests if q["path"] == "/healthz"]) >= 3, 5,
               what="three checks of a")
    hc_conns = {q["conn_id"] for q in a.requests if q["path"] == "/healthz"}
    assert len(hc_conns) == 1, hc_conns

    assert sorted(set(_servers(lport, 9))) == ["a", "b", "c"]

    # b's health endpoint fails (503, retriable): out after 2 consecutive failures
    b.health_status = 503
    t0 = time.monotonic()
    wait_until(lambda: "failed_active_hc" in _flags(r, "backend", b.port), 0.2 * 2 + SLACK,
               what="b marked unhealthy")
    assert r.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 2) == 2
    assert r.stat("cluster.backend.health_check.failure") >= 2
    assert r.stat("cluster.backend.health_check.network_failure") == 0
    before = len([q for q in b.requests if q["path"] != "/healthz"])
    got = _servers(lport, 20)
    assert set(got) == {"a", "c"}, got
    assert len([q for q in b.requests if q["path"] != "/healthz"]) == before
    assert time.monotonic() - t0 >= 0.2, "ejected faster than two checks allow"

    # restored: back in rotation after 2 consecutive successes
    b.health_status = None
    wait_until(lambda: _flags(r, "backend", b.port) == "healthy", 0.2 * 2 + SLACK,
               what="b healthy again")
    assert r.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 3) == 3
    assert "b" in _servers(lport, 9)
    assert r.stat("cluster.backend.health_check.success") > r.stat(
        "cluster.backend.health_check.failure")
    prom = r.admin_get("/stats/prometheus")[2].decode()
    assert 'envoy_cluster_health_check_healthy{envoy_cluster_name="backend"} 3' in prom


def test_unexpected_status_is_immediately_unhealthy(remora, make_upstream, ports):
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    # a status outside expected/retriable ignores unhealthy_threshold (Envoy)
    hc = _http_hc(interval="0.3s", unhealthy=5, healthy=1,
                  expected_statuses=[{"start": 200, "end": 300}])
    r = remora(_cfg(admin, lport, [a.port, b.port], hc), concurrency=1)
    assert r.stat("cluster.backend.health_check.healthy") == 2
    f0 = r.stat("cluster.backend.health_check.failure")
    b.health_status = 500
    wait_until(lambda: "failed_active_hc" in _flags(r, "backend", b.port), 0.3 + SLACK,
               what="b marked unhealthy")
    # far fewer than unhealthy_threshold (5) failures were needed
    assert r.stat("cluster.backend.health_check.failure") - f0 < 5
    assert set(_servers(lport, 8)) == {"a"}
    # 204 is inside expected_statuses [200, 300): healthy again after one success
    b.health_status = 204
    wait_until(lambda: _flags(r, "backend", b.port) == "healthy", 0.3 + SLACK,
               what="b healthy with 204")


def test_network_failure_and_timeout(remora, make_upstream, ports):
    good, slow = make_upstream("good"), make_upstream("slow")
    dead = closed_port()
    admin, lport = ports.get(), ports.get()
    hc = _http_hc(interval="0.1s", unhealthy=2, healthy=1)
    slow_hc = _http_hc(interval="0.1s", unhealthy=2, healthy=1, timeout="0.2s")
    slow_hc["http_health_check"]["path"] = "/healthz?sleep_ms=1500"
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                    [static_cluster("backend", [("127.0.0.1", good.port), ("127.0.0.1", dead)],
                                    health_checks=[hc]),
                     static_cluster("slowc", [("127.0.0.1", slow.port)], health_checks=[slow_hc])])
    r = remora(cfg, concurrency=1)
    # a refused host stays unhealthy from its first check
    assert "failed_active_hc" in _flags(r, "backend", dead)
    assert _flags(r, "backend", good.port) == "healthy"
    assert r.stat("cluster.backend.health_check.healthy") == 1
    r.wait_stat("cluster.backend.health_check.network_failure", lambda v: v >= 3)
    assert set(_servers(lport, 6)) == {"good"}
    # timeouts are network failures too
    assert "failed_active_hc" in _flags(r, "slowc", slow.port)
    r.wait_stat("cluster.slowc.health_check.network_failure", lambda v: v >= 2)
    assert r.stat("cluster.slowc.health_check.success") == 0
    assert r.stat("cluster.slowc.health_check.healthy") == 0


def _tcp_cfg(admin, clusters):
    return bootstrap(admin, [], clusters)


def test_tcp_health_check_send_receive(remora, echo_server, ports):
    admin = ports.get()
    lport = ports.get()
    dead = closed_port()

    def tcp_hc(**tcp):
        return {"timeout": "0.3s", "interval": "0.1s", "unhealthy_threshold": 2,
                "healthy_threshold": 1, "tcp_health_check": tcp}
    # hex payloads chosen so an unquoted YAML scalar stays a string (see docs)
    hello = "68656c6c6f"   # "hello"
    clusters = [
        # echo answers "hello": "hel" then "lo" are found in order
        static_cluster("echo_ok", echo_server.port,
                       health_checks=[tcp_hc(send={"text": hello},
                                             receive=[{"text": "68656C"}, {"text": "6c6f"}])]),
        # base64 payloads
        static_cluster("echo_b64", echo_server.port,
                       health_checks=[tcp_hc(send={"binary": base64.b64encode(b"hello").decode()},
                                             receive=[{"binary": base64.b64encode(b"ell").decode()}])]),
        # "pong" never comes back: timeout -> failure
        static_cluster("echo_bad", echo_server.port,
                       health_checks=[tcp_hc(send={"text": hello}, receive=[{"text": "706f6e67"}])]),
        # connect-only
        static_cluster("connect_ok", echo_server.port, health_checks=[tcp_hc()]),
        static_cluster("connect_dead", dead, health_checks=[tcp_hc()]),
    ]
    r = remora(bootstrap(admin, [tcp_proxy_listener(lport, "echo_ok")], clusters), concurrency=1)
    for name in ("echo_ok", "echo_b64", "connect_ok"):
        assert _flags(r, name, echo_server.port) == "healthy", name
        assert r.stat(f"cluster.{name}.health_check.healthy") == 1
    assert "failed_active_hc" in _flags(r, "echo_bad", echo_server.port)
    assert "failed_active_hc" in _flags(r, "connect_dead", dead)
    r.wait_stat("cluster.echo_ok.health_check.success", lambda v: v >= 5)
    r.wait_stat("cluster.echo_bad.health_check.failure", lambda v: v >= 3)
    r.wait_stat("cluster.connect_dead.health_check.network_failure", lambda v: v >= 3)
    assert r.stat("cluster.echo_ok.health_check.failure") == 0
    assert r.stat("cluster.connect_ok.health_check.failure") == 0
    # echo_ok reuses one connection; connect-only checks open one per check
    wait_until(lambda: echo_server.connections >= 8, 5, what="connect-only checks")
    assert r.stat("cluster.echo_ok.health_check.degraded") == 0


def _share(lport, n, name):
    return sum(1 for s in _servers(lport, n) if s == name) / n


def test_http_check_degraded_host(remora, make_upstream, ports):
    """A passing check answered with x-envoy-degraded marks the host degraded
    (Envoy): with 1 healthy + 1 degraded host the healthy one takes
    min(100, 1.4 x 50) = 70 % of the traffic and the degraded one the rest;
    when the header goes away the host is healthy again."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [a.port, b.port], _http_hc(interval="0.1s")), concurrency=1)
    assert r.stat("cluster.backend.health_check.degraded") == 0
    b.health_headers = [("x-envoy-degraded", "")]
    wait_until(lambda: _flags(r, "backend", b.port) == "/degraded_active_hc", 0.1 + SLACK,
               what="b degraded")
    assert r.wait_stat("cluster.backend.health_check.degraded", lambda v: v == 1) == 1
    assert r.wait_stat("cluster.backend.membership_degraded", lambda v: v == 1) == 1
    assert r.stat("cluster.backend.membership_healthy") == 1
    assert r.stat("cluster.backend.health_check.healthy") == 2   # degraded still passes
    share = _share(lport, 400, "b")
    assert 0.20 < share < 0.40, share     # 0.30, sd 0.023
    b.health_headers = []
    wait_until(lambda: _flags(r, "backend", b.port) == "healthy", 0.1 + SLACK, what="b healthy")
    assert r.wait_stat("cluster.backend.membership_degraded", lambda v: v == 0) == 0
    share = _share(lport, 400, "b")
    assert 0.40 < share < 0.60, share     # round robin: 0.5


def test_endpoint_health_status(remora, make_upstream, ports):
    """load_assignment health_status: UNHEALTHY/DRAINING/TIMEOUT hosts get no
    traffic, DEGRADED ones only what the healthy cannot carry; /clusters shows
    the EDS flags."""
    ups = [make_upstream(n) for n in ("a", "b", "c", "d")]
    admin, lport = ports.get(), ports.get()
    statuses = ["HEALTHY", "DRAINING", "DEGRADED", "UNKNOWN"]
    cl = static_cluster("backend", [("127.0.0.1", u.port) for u in ups])
    for ep, st in zip(cl["load_assignment"]["endpoints"][0]["lb_endpoints"], statuses):
        ep["health_status"] = st
    r = remora(bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])], [cl]),
               concurrency=1)
    assert _flags(r, "backend", ups[1].port) == "/failed_eds_health"
    assert _flags(r, "backend", ups[2].port) == "/degraded_eds_health"
    assert _flags(r, "backend", ups[0].port) == "healthy"
    assert r.stat("cluster.backend.membership_healthy") == 2
    assert r.stat("cluster.backend.membership_degraded") == 1
    # 2 of 4 healthy: 1.4 x 50 = 70 % healthy, 30 % to the degraded host
    got = _servers(lport, 400)
    assert got.count("b") == 0
    assert 0.20 < got.count("c") / 400 < 0.40, got.count("c")
