"""Protocol detection on a listener: http_inspector and tls_inspector peek at
the client's first bytes, filter_chain_match picks the chain by application
protocol, transport protocol and SNI, and a server-first protocol (the client
waits for a banner) reaches the default chain once listener_filters_timeout
expires with continue_on_listener_filters_timeout."""

import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import (HCM_TYPE, ROUTER_FILTER, TCP_PROXY_TYPE, bootstrap, curl, route,
                     route_config, sockaddr, static_cluster, virtual_host, wait_until)

HTTP_INSPECTOR = {"name": "envoy.filters.listener.http_inspector", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}
TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}
BANNER = b"220 smtp.test ESMTP ready\r\n"


class BannerServer:
    """A server-first TCP service (SMTP/MySQL style): sends a banner on
    accept, then answers each line with "250 <line>"."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(20)
        try:
            s.sendall(BANNER)
            buf = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    s.sendall(b"250 " + line.strip() + b"\r\n")
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)
        self.lsock.close()


@pytest.fixture
def banner():
    b = BannerServer()
    yield b
    b.stop()


def _tcp_chain(cluster, prefix, match=None):
    fc = {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY_TYPE, "stat_prefix": prefix, "cluster": cluster}}]}
    if match:
        fc["filter_chain_match"] = match
    return fc


def _http_chain(cluster, match=None):
    fc = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM_TYPE, "stat_prefix": "detected_http",
        "route_config": route_config([virtual_host([route({"prefix": "/"}, cluster)])]),
        "http_filters": [ROUTER_FILTER]}}]}
    if match:
        fc["filter_chain_match"] = match
    return fc


def _detect_config(admin, lport, upstream_port, banner_port, continue_on_timeout=True,
                   timeout="1s"):
    """An "unusual port" listener: HTTP (by http_inspector) goes to the HTTP
    upstream, anything else to the server-first banner service."""
    lst = {
        "name": "detect",
        "address": sockaddr(lport),
        "listener_filters": [HTTP_INSPECTOR],
        "listener_filters_timeout": timeout,
        "continue_on_listener_filters_timeout": continue_on_timeout,
        "filter_chains": [_http_chain("web", {"application_protocols": ["http/1.1", "http/1.0", "h2c"]})],
        "default_filter_chain": _tcp_chain("smtp", "opaque"),
    }
    return bootstrap(admin, [lst], [static_cluster("web", upstream_port),
                                    static_cluster("smtp", banner_port)])


def _read_line(s, timeout=10):
    s.settimeout(timeout)
    buf = b""
    while b"\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf


def test_http_on_unusual_port_is_detected(remora, upstream, banner, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_detect_config(admin, lport, upstream.port, banner.port))
    res = curl(f"http://127.0.0.1:{lport}/hello")
    assert res.status == 200, res
    assert res.json()["path"] == "/hello"
    res = curl(f"http://127.0.0.1:{lport}/old", "--http1.0")
    # detected as HTTP/1.0 and served by the HCM, which (as Envoy without
    # accept_http_10) answers 426 itself
    assert res.status == 426, res
    res = curl(f"http://127.0.0.1:{lport}/h2", "--http2-prior-knowledge")
    assert res.status == 200, res
    assert res.info.get("http_version") == "2"
    st = r.stats()
    assert st["http_inspector.http11_found"] == 1
    assert st["http_inspector.http10_found"] == 1
    assert st["http_inspector.http2_found"] == 1
    assert st["http_inspector.http_not_found"] == 0
    assert st["http.detected_http.downstream_rq_total"] >= 2
    assert st.get("tcp.opaque.downstream_cx_total", 0) == 0
    assert banner.connections == 0
    assert st["listener.127.0.0.1_%d.downstream_pre_cx_timeout" % lport] == 0


def test_server_first_protocol_falls_through_after_timeout(remora, upstream, banner, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_detect_config(admin, lport, upstream.port, banner.port, timeout="1s"))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        # the client says nothing: it waits for the server's banner
        line = _read_line(s, timeout=15)
        waited = time.monotonic() - t0
        assert line == BANNER
        s.sendall(b"EHLO client.test\r\n")
        assert _read_line(s) == b"250 EHLO client.test\r\n"
    # the banner can only come after the 1 s detection timeout
    assert waited >= 0.9, waited
    st = r.stats()
    assert st["listener.127.0.0.1_%d.downstream_pre_cx_timeout" % lport] == 1
    assert st["http_inspector.http_not_found"] == 0
    assert st["http_inspector.http11_found"] == 0
    r.wait_stat("tcp.opaque.downstream_cx_total", lambda v: v == 1)


def test_client_first_non_http_goes_to_default_chain_at_once(remora, upstream, banner, ports):
    admin, lport = ports.get(), ports.get()
    # a long timeout: a non-HTTP first line must not wait for it
    r = remora(_detect_config(admin, lport, upstream.port, banner.port, timeout="30s"))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        s.sendall(b"\x00\x01binary hello\n")
        want = BANNER + b"250 \x00\x01binary hello\r\n"
        got = b""
        s.settimeout(10)
        while len(got) < len(want):
            d = s.recv(4096)
            if not d:
                break
            got += d
        assert got == want
    assert time.monotonic() - t0 < 15
    st = r.stats()
    assert st["http_inspector.http_not_found"] == 1
    assert st["listener.127.0.0.1_%d.downstream_pre_cx_timeout" % lport] == 0


def test_detection_timeout_closes_without_continue(remora, upstream, banner, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_detect_config(admin, lport, upstream.port, banner.port,
                              continue_on_timeout=False, timeout="0.5s"))
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        s.settimeout(10)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b""       # closed by the proxy, no banner
    r.wait_stat("listener.127.0.0.1_%d.downstream_pre_cx_timeout" % lport, lambda v: v == 1)
    assert banner.connections == 0
    # a slow but valid HTTP client within the timeout still works
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        s.sendall(b"GET /sl")
        time.sleep(0.1)
        s.sendall(b"ow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = b""
        s.settimeout(10)
        while True:
            d = s.recv(65536)
            if not d:
                break
            resp += d
    assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
    assert r.stats()["http_inspector.http11_found"] == 1


def _tls_hello(port, sni=None, alpn=None):
    """Send a real TLS ClientHello (Python's ssl) through the proxy; the
    upstream is a plain echo, so the handshake itself fails; only the
    proxy's choice of chain matters."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.settimeout(10)
        try:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass


def test_tls_inspector_sni_alpn_select_chains(remora, echo_server, upstream, ports):
    admin, lport = ports.get(), ports.get()
    lst = {
        "name": "mixed",
        "address": sockaddr(lport),
        "listener_filters": [TLS_INSPECTOR, HTTP_INSPECTOR],
        "filter_chains": [
            _tcp_chain("echo", "sni_exact", {"server_names": ["api.example.com"],
                                             "transport_protocol": "tls"}),
            _tcp_chain("echo", "sni_wild", {"server_names": ["*.example.com"],
                                            "transport_protocol": "tls"}),
            _tcp_chain("echo", "tls_h2", {"transport_protocol": "tls",
                                          "application_protocols": ["h2"]}),
            _tcp_chain("echo", "tls_other", {"transport_protocol": "tls"}),
            _http_chain("web", {"transport_protocol": "raw_buffer",
                                "application_protocols": ["http/1.1"]}),
        ],
    }
    r = remora(bootstrap(admin, [lst], [static_cluster("echo", echo_server.port),
                                        static_cluster("web", upstream.port)]))
    _tls_hello(lport, "api.example.com", ["h2"])
    r.wait_stat("tcp.sni_exact.downstream_cx_total", lambda v: v == 1)
    _tls_hello(lport, "www.Example.com")
    r.wait_stat("tcp.sni_wild.downstream_cx_total", lambda v: v == 1)
    _tls_hello(lport, "other.test", ["h2", "http/1.1"])
    r.wait_stat("tcp.tls_h2.downstream_cx_total", lambda v: v == 1)
    _tls_hello(lport, None, ["http/1.1"])
    r.wait_stat("tcp.tls_other.downstream_cx_total", lambda v: v == 1)
    # plaintext HTTP on the same port: http_inspector, raw_buffer chain
    res = curl(f"http://127.0.0.1:{lport}/plain")
    assert res.status == 200, res
    st = r.stats()
    assert st["tls_inspector.tls_found"] == 4
    assert st["tls_inspector.tls_not_found"] == 1
    assert st["tls_inspector.sni_found"] == 3
    assert st["tls_inspector.sni_not_found"] == 1
    assert st["tls_inspector.alpn_found"] == 3
    assert st["tls_inspector.alpn_not_found"] == 1
    assert st["http_inspector.http11_found"] == 1
    # http_inspector leaves TLS connections alone
    assert st["http_inspector.http_not_found"] == 0
    for p in ("sni_exact", "sni_wild", "tls_h2", "tls_other"):
        assert st[f"tcp.{p}.downstream_cx_total"] == 1, p
    # the ClientHello reached the upstream untouched (peeked, not consumed)
    assert echo_server.bytes_echoed > 4 * 100


def test_tls_passthrough_to_real_tls_server(remora, ports, tmp_path):
    """The peeked ClientHello is still in the socket: a real TLS server
    behind a tcp_proxy chain picked by SNI completes the handshake."""
    key, crt = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "1", "-subj", "/CN=secure.example.com"],
                   check=True, capture_output=True, timeout=60)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(crt, key)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    ls.settimeout(15)

    def serve():
        try:
            c, _ = ls.accept()
            with sctx.wrap_socket(c, server_side=True) as s:
                s.sendall(b"hello over tls " + s.recv(100))
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    admin, lport = ports.get(), ports.get()
    lst = {"name": "sni", "address": sockaddr(lport), "listener_filters": [TLS_INSPECTOR],
           "filter_chains": [_tcp_chain("tls_backend", "secure",
                                        {"server_names": ["secure.example.com"]})]}
    r = remora(bootstrap(admin, [lst], [static_cluster("tls_backend", ls.getsockname()[1])]))
    cctx = ssl.create_default_context(cafile=crt)
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as raw:
        with cctx.wrap_socket(raw, server_hostname="secure.example.com") as s:
            s.sendall(b"ping")
            got = b""
            s.settimeout(10)
            while len(got) < 19:
                d = s.recv(100)
                if not d:
                    break
                got += d
    assert got == b"hello over tls ping"
    t.join(timeout=10)
    ls.close()
    # an SNI no chain accepts: closed, counted
    _tls_hello(lport, "nobody.example.org")
    r.wait_stat("listener.127.0.0.1_%d.no_filter_chain_match" % lport, lambda v: v == 1)
    assert r.stats()["tcp.secure.downstream_cx_total"] == 1


def test_inspector_config_errors(tmp_path, ports):
    import yaml
    from harness import remora_bin
    base = _detect_config(ports.get(), ports.get(), 1, 2)
    lst = base["static_resources"]["listeners"][0]
    lst["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": TLS_INSPECTOR["typed_config"]["@type"], "enable_ja3_fingerprinting": True}}]
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(base))
    out = subprocess.run([remora_bin(), "--mode", "validate", "-c", str(p)], capture_output=True,
                         timeout=60)
    assert out.returncode != 0
    assert b"listener_filters[0].typed_config.enable_ja3_fingerprinting" in out.stderr, out.stderr
    lst["listener_filters"] = [{"name": "envoy.filters.listener.http_inspector", "typed_config": {
        "@type": HTTP_INSPECTOR["typed_config"]["@type"], "bogus": 1}}]
    p.write_text(yaml.safe_dump(base))
    out = subprocess.run([remora_bin(), "--mode", "validate", "-c", str(p)], capture_output=True,
                         timeout=60)
    assert out.returncode != 0
    assert b"listener_filters[0].typed_config.bogus" in out.stderr, out.stderr


def test_opaque_port_skips_detection(remora, upstream, banner, ports):
    """filter_disabled (Istio's way of declaring a port opaque): the
    inspector does not run for that destination port, so a server-first
    client gets its banner at once although the detection timeout is long."""
    admin, lport = ports.get(), ports.get()
    cfg = _detect_config(admin, lport, upstream.port, banner.port, timeout="30s")
    lst = cfg["static_resources"]["listeners"][0]
    lst["listener_filters"] = [dict(HTTP_INSPECTOR, filter_disabled={
        "destination_port_range": {"start": lport, "end": lport + 1}})]
    r = remora(cfg)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        assert _read_line(s, timeout=10) == BANNER
    assert time.monotonic() - t0 < 10     # far below the 30 s detection timeout
    st = r.stats()
    assert st["listener.127.0.0.1_%d.downstream_pre_cx_timeout" % lport] == 0
    assert st["http_inspector.http_not_found"] == 0
    assert st["http_inspector.http11_found"] == 0
    assert st["tcp.opaque.downstream_cx_total"] == 1
