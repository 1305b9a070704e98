"""Route idle_timeout (replaces the HCM stream idle timeout for the route)
and max_stream_duration.grpc_timeout_header_max (a grpc-timeout header
bounds the request).  Timings are measured with generous upper bounds."""

import time

from harness import bootstrap, curl, http_listener, route, static_cluster


def _cfg(admin, lport, up_port, **action):
    return bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend", **action)])],
                     [static_cluster("backend", up_port)])


def test_route_idle_timeout(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, idle_timeout="0.3s"))
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/slow?sleep_ms=3000", timeout=15)
    elapsed = time.monotonic() - t0
    assert res.status == 408, res
    assert 0.28 <= elapsed < 2.0, elapsed
    assert r.stat("http.ingress_http.downstream_rq_idle_timeout") == 1
    # activity keeps a stream alive: a quick answer is unaffected
    assert curl(f"http://127.0.0.1:{lport}/fast?sleep_ms=50").status == 200


def test_grpc_timeout_header_bounds_request(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, timeout="10s",
                    max_stream_duration={"grpc_timeout_header_max": "0.6s"}))
    # the header's 0.2 s applies
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/g?sleep_ms=3000", "-H", "grpc-timeout: 200m", timeout=15)
    e1 = time.monotonic() - t0
    assert res.status == 504, res
    assert 0.18 <= e1 < 1.5, e1
    # 5 s asked, capped at the route's 0.6 s
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/g?sleep_ms=3000", "-H", "grpc-timeout: 5S", timeout=15)
    e2 = time.monotonic() - t0
    assert res.status == 504, res
    assert 0.55 <= e2 < 2.0, e2
    # no header: the route timeout (10 s) leaves a 1 s answer alone
    assert curl(f"http://127.0.0.1:{lport}/g?sleep_ms=1000", timeout=15).status == 200
    assert r.stat("cluster.backend.upstream_rq_timeout") == 2


def test_grpc_timeout_ignored_without_route_setting(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    remora(_cfg(admin, lport, upstream.port, timeout="10s"))
    res = curl(f"http://127.0.0.1:{lport}/g?sleep_ms=600", "-H", "grpc-timeout: 100m", timeout=15)
    assert res.status == 200, res


def test_route_max_stream_duration(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, timeout="10s",
                    max_stream_duration={"max_stream_duration": "0.4s"}))
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/long?sleep_ms=3000", timeout=15)
    elapsed = time.monotonic() - t0
    assert res.status == 408, res          # the downstream duration limit, as Envoy
    assert 0.38 <= elapsed < 2.0, elapsed
    assert curl(f"http://127.0.0.1:{lport}/short?sleep_ms=50").status == 200
