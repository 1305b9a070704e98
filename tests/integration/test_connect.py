"""CONNECT tunnels through the HTTP connection manager: terminated by the
proxy (route upgrade_configs CONNECT + connect_config), driven by the real
curl --proxytunnel, and refused with 403 when the HCM does not allow CONNECT."""

import hashlib

from harness import (HttpConn, bootstrap, curl, http_listener, pattern_sha256, route,
                     static_cluster)


def _connect_config(admin, lport, up_port, allow=True):
    routes = [
        route({"connect_matcher": {}}, "backend",
              upgrade_configs=[{"upgrade_type": "CONNECT", "connect_config": {}}]),
        route({"prefix": "/"}, "backend"),
    ]
    extra = {"upgrade_configs": [{"upgrade_type": "CONNECT"}]} if allow else {}
    return bootstrap(admin, [http_listener(lport, routes, **extra)],
                     [static_cluster("backend", up_port)])


def test_connect_tunnel_with_curl(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_connect_config(admin, lport, upstream.port))
    n = 3 * 1024 * 1024
    # curl sends "CONNECT 127.0.0.1:<up> HTTP/1.1" to the proxy, then speaks
    # HTTP to the upstream through the tunnel.
    res = curl(f"http://127.0.0.1:{upstream.port}/?bytes={n}", "-p", "-x",
               f"http://127.0.0.1:{lport}", keep_body=True, timeout=20)
    assert res.rc == 0, res
    assert res.status == 200, res
    assert res.info.get("http_connect") == 200, res.info
    assert len(res.body) == n
    assert hashlib.sha256(res.body).hexdigest() == pattern_sha256(n)
    # the upstream saw the tunnelled GET, not the CONNECT
    assert upstream.requests and upstream.requests[-1]["method"] == "GET"
    r.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: v >= 1)
    r.wait_stat("cluster.backend.upstream_cx_total", lambda v: v >= 1)


def test_connect_refused_without_upgrade_config(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    remora(_connect_config(admin, lport, upstream.port, allow=False))
    with HttpConn(lport, timeout=10) as c:
        c.send(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{upstream.port}\r\n\r\n".encode())
        version, status, reason, headers = c.read_head()
        assert status == 403
    assert not upstream.requests


def test_connect_without_connect_route_is_404(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")],
                                          upgrade_configs=[{"upgrade_type": "CONNECT"}])],
                    [static_cluster("backend", upstream.port)])
    remora(cfg)
    with HttpConn(lport, timeout=10) as c:
        c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        version, status, reason, headers = c.read_head()
        assert status == 404
