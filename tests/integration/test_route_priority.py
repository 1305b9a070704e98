"""Route `priority`: a HIGH route's requests are held against the cluster's
HIGH circuit-breaker thresholds (and counters), a DEFAULT route's against the
DEFAULT ones, as Envoy's per-priority resource managers.

The slow requests are sent on raw connections all at once (no process start
per request), and the upstream holds each for several seconds, so which
requests overflow depends only on the counts, not on timing."""

import threading

from harness import HttpConn, bootstrap, http_listener, route, static_cluster

HIGH_MAX, DEFAULT_MAX = 4, 2
SLOW_MS = 5000


def _env(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    routes = [route({"prefix": "/high"}, "backend", priority="HIGH"),
              route({"prefix": "/default"}, "backend", priority="DEFAULT"),
              route({"prefix": "/"}, "backend")]
    cfg = bootstrap(admin, [http_listener(lport, routes)], [
        static_cluster("backend", upstream.port, circuit_breakers={"thresholds": [
            {"priority": "DEFAULT", "max_requests": DEFAULT_MAX, "track_remaining": True},
            {"priority": "HIGH", "max_requests": HIGH_MAX, "track_remaining": True}]})])
    return remora(cfg, concurrency=2), lport


def _fire(lport, paths):
    """Send one GET per path, each on its own connection, then read every
    response: [(path, response)]."""
    conns = []
    try:
        for p in paths:
            c = HttpConn(lport, timeout=SLOW_MS / 1000 + 10)
            c.request("GET", p)
            conns.append((p, c))
        return [(p, c.read_response()) for p, c in conns]
    finally:
        for _, c in conns:
            c.close()


def _counts(results, prefix):
    st = [r.status for p, r in results if p.startswith(prefix)]
    return st.count(200), st.count(503)


def test_high_and_default_routes_use_their_own_max_requests(remora, upstream, ports):
    r, lport = _env(remora, upstream, ports)
    extra = 3
    paths = [f"/high/{i}?sleep_ms={SLOW_MS}" for i in range(HIGH_MAX + extra)] + \
            [f"/default/{i}?sleep_ms={SLOW_MS}" for i in range(DEFAULT_MAX + extra)]
    out = []
    t = threading.Thread(target=lambda: out.extend(_fire(lport, paths)))
    t.start()
    # while the admitted requests sleep, the HIGH breaker is open (1 s gauge tick)
    r.wait_stat("cluster.backend.circuit_breakers.high.rq_open", lambda v: v == 1,
                timeout=SLOW_MS / 1000 - 1)
    r.wait_stat("cluster.backend.circuit_breakers.default.rq_open", lambda v: v == 1,
                timeout=SLOW_MS / 1000 - 1)
    t.join(SLOW_MS / 1000 + 20)
    assert not t.is_alive()
    assert _counts(out, "/high") == (HIGH_MAX, extra), [(p, x.status) for p, x in out]
    assert _counts(out, "/default") == (DEFAULT_MAX, extra), [(p, x.status) for p, x in out]
    assert all(x.headers.get("x-envoy-overloaded") == "true" for _, x in out if x.status == 503)
    assert r.stat("cluster.backend.upstream_rq_pending_overflow") == 2 * extra
    # every slot is given back, per priority
    r.wait_stat("cluster.backend.circuit_breakers.high.remaining_rq", lambda v: v == HIGH_MAX)
    r.wait_stat("cluster.backend.circuit_breakers.default.remaining_rq",
                lambda v: v == DEFAULT_MAX)
    r.wait_stat("cluster.backend.circuit_breakers.high.rq_open", lambda v: v == 0)


def test_route_without_priority_is_default(remora, upstream, ports):
    r, lport = _env(remora, upstream, ports)
    out = _fire(lport, [f"/other/{i}?sleep_ms=2000" for i in range(DEFAULT_MAX + 2)])
    assert _counts(out, "/other") == (DEFAULT_MAX, 2)
    status, _, body = r.admin_get("/clusters")
    text = body.decode()
    assert f"backend::high_priority::max_requests::{HIGH_MAX}" in text
    assert f"backend::default_priority::max_requests::{DEFAULT_MAX}" in text
