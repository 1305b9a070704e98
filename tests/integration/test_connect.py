"""CONNECT tunnels through the HTTP connection manager: terminated by the
proxy (route upgrade_configs CONNECT + connect_config), driven by the real
curl --proxytunnel, and refused with 403 when the HCM does not allow CONNECT."""

import hashlib
import time

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


def test_connect_tunnel_upload_is_flow_controlled(remora, ports):
    """HTTP/1.1 CONNECT (terminated) to an upstream that does not read: the
    proxy stops reading the client once the cluster's buffer limit is
    reached, so the client cannot push the whole upload into the proxy."""
    import select
    import socket
    import threading

    from harness import RssSampler, pattern_bytes

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    accepted, release = [], threading.Event()

    def sink():                      # accepts, reads nothing until released
        ls.settimeout(30)
        try:
            s, _ = ls.accept()
        except OSError:
            return
        accepted.append(s)
        release.wait(60)
        s.settimeout(30)
        try:
            while s.recv(262144):
                pass
        except OSError:
            pass
        s.close()

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    admin, lport = ports.get(), ports.get()
    cfg = _connect_config(admin, lport, ls.getsockname()[1])
    cfg["static_resources"]["clusters"][0]["per_connection_buffer_limit_bytes"] = 65536
    r = remora(cfg)
    total = 64 * 1024 * 1024
    data = pattern_bytes(1 << 20)
    try:
        with HttpConn(lport, timeout=10) as c:
            c.send(b"CONNECT sink:1 HTTP/1.1\r\nHost: sink:1\r\n\r\n")
            assert c.read_head()[1] == 200
            c.sock.setblocking(False)
            rss0 = r.rss_kb()
            sent, last = 0, time.monotonic()
            with RssSampler(r) as rss:
                while sent < total and time.monotonic() - last < 2.0:
                    _, w, _ = select.select([], [c.sock], [], 0.1)
                    if not w:
                        continue
                    try:
                        n = c.sock.send(data[sent % len(data):])
                    except BlockingIOError:
                        continue
                    sent += n
                    last = time.monotonic()
            assert sent < total // 2, f"client pushed {sent} bytes into a tunnel nobody reads"
            assert rss.peak_kb - rss0 < 32 * 1024, (rss0, rss.peak_kb, sent)
    finally:
        release.set()
        ls.close()
        t.join(timeout=10)
