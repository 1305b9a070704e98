"""Upstream HTTP/2 (h2c, prior knowledge): cluster protocol options, the
multiplexed pool (streams share connections up to the peer's
SETTINGS_MAX_CONCURRENT_STREAMS), GOAWAY draining, refused streams retried,
and the bridging matrix h1/h2 downstream x h1/h2 upstream with trailers."""

import concurrent.futures
import hashlib
import json
import subprocess
import threading
import time

import pytest

from harness import (remora_bin, bootstrap, curl, http_listener, pattern_bytes, route, static_cluster,
                     wait_until)
from upstreams_h2 import H2UpstreamServer

HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTS_TYPE = "type.googleapis.com/" + HTTP_OPTS


def h2_opts(**h2):
    return {HTTP_OPTS: {"@type": HTTP_OPTS_TYPE,
                        "explicit_http_config": {"http2_protocol_options": h2}}}


def downstream_opts():
    return {HTTP_OPTS: {"@type": HTTP_OPTS_TYPE,
                        "use_downstream_protocol_config": {
                            "http_protocol_options": {}, "http2_protocol_options": {}}}}


@pytest.fixture
def h2up():
    servers = []

    def make(**kw):
        s = H2UpstreamServer(**kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def config(ports, up_port, cluster_extra=None, route_extra=None, hcm_extra=None):
    admin, lport = ports.get(), ports.get()
    cl = static_cluster("backend", up_port, **(cluster_extra or {}))
    lst = http_listener(lport, [route({"prefix": "/"}, "backend", **(route_extra or {}))],
                        **(hcm_extra or {}))
    return bootstrap(admin, [lst], [cl]), lport


def test_h1_client_to_h2_upstream(remora, ports, h2up):
    up = h2up()
    cfg, lport = config(ports, up.port,
                        {"typed_extension_protocol_options": h2_opts()})
    r = remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/hello?x=1", "-H", "x-custom: abc",
               "-H", "connection: keep-alive", "-H", "te: gzip")
    assert res.status == 200, res.stderr
    echo = json.loads(res.body)
    assert echo["path"] == "/hello?x=1"
    assert echo["headers"][":authority"] == f"127.0.0.1:{lport}"
    assert echo["headers"][":scheme"] == "http"
    assert echo["headers"]["x-custom"] == "abc"
    # hop-by-hop headers never reach an HTTP/2 upstream, te only as "trailers"
    assert "connection" not in echo["headers"] and "te" not in echo["headers"]
    assert r.stat("cluster.backend.upstream_cx_http2_total") == 1
    assert r.stat("cluster.backend.upstream_cx_http1_total") == 0


def test_large_bodies_both_ways(remora, ports, h2up, tmp_path):
    up = h2up()
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts()})
    remora(cfg)
    body = pattern_bytes(3 * 1024 * 1024 + 7)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    res = curl(f"http://127.0.0.1:{lport}/post", "--data-binary", f"@{f}",
               "-H", "content-type: application/octet-stream")
    assert res.status == 200, res.stderr
    echo = json.loads(res.body)
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    # chunked request (no content-length) and a large response
    res = curl(f"http://127.0.0.1:{lport}/get?bytes=5000000", "--data-binary", f"@{f}",
               "-H", "transfer-encoding: chunked")
    assert res.status == 200, res.stderr
    assert len(res.body) == 5000000 and res.body == pattern_bytes(5000000)


def _held_burst(up, lport, n=20):
    """n concurrent requests the upstream holds open (hold=1) until every one
    has arrived there; then released.  The state under test (connections,
    streams per connection) is read while all n are open, so it does not
    depend on how fast the clients start (no sleep to outlast).  Returns the
    curl results."""
    urls = [f"http://127.0.0.1:{lport}/slow?hold=1&i={i}" for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(curl, u, timeout=120) for u in urls]
        try:
            wait_until(lambda: up.active_total == n or any(f.done() for f in futs), 90,
                       what=f"{n} streams open at the upstream")
            assert up.active_total == n, \
                f"a request ended before all {n} were open: {up.active_total} open"
        finally:
            up.release()
        return [f.result() for f in futs]


def test_multiplexing_and_max_concurrent_streams(remora, ports, h2up):
    """20 concurrent requests held open: the peer allows 5 streams per
    connection, so they need at least 4 connections and no connection ever
    carries more than 5; with 100 allowed, a few connections carry them all."""
    up = h2up(max_concurrent_streams=5)
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts()})
    r = remora(cfg, concurrency=1)
    results = _held_burst(up, lport)
    assert all(x.status == 200 for x in results), [x.status for x in results]
    assert up.max_active <= 5
    assert up.max_active_total == 20          # they did run concurrently
    assert 4 <= up.connections < 20
    assert r.stat("cluster.backend.upstream_cx_http2_total") == up.connections

    up2 = h2up(max_concurrent_streams=100)
    cfg, lport = config(ports, up2.port, {"typed_extension_protocol_options": h2_opts()})
    remora(cfg, concurrency=1)
    results = _held_burst(up2, lport)
    assert all(x.status == 200 for x in results), [x.status for x in results]
    assert up2.connections <= 2               # multiplexed
    assert up2.max_active >= 10


def test_cluster_max_concurrent_streams_option(remora, ports, h2up):
    up = h2up()
    cfg, lport = config(ports, up.port,
                        {"typed_extension_protocol_options": h2_opts(max_concurrent_streams=3)})
    remora(cfg, concurrency=1)
    urls = [f"http://127.0.0.1:{lport}/slow?sleep_ms=300&i={i}" for i in range(9)]
    with concurrent.futures.ThreadPoolExecutor(9) as ex:
        results = list(ex.map(lambda u: curl(u), urls))
    assert all(x.status == 200 for x in results)
    assert up.max_active <= 3
    assert up.connections >= 3


def test_deprecated_cluster_http2_protocol_options(remora, ports, h2up):
    up = h2up()
    cfg, lport = config(ports, up.port, {"http2_protocol_options": {}})
    r = remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/x")
    assert res.status == 200
    assert r.stat("cluster.backend.upstream_cx_http2_total") == 1


def test_refused_stream_retried(remora, ports, h2up):
    up = h2up()
    up.refuse_first_n = 1
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts()},
                        {"retry_policy": {"retry_on": "refused-stream", "num_retries": 2}})
    r = remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/x")
    assert res.status == 200, res.body
    assert len(up.requests) == 2
    assert r.stat("cluster.backend.upstream_rq_retry") == 1
    assert r.stat("cluster.backend.http2.refused_stream") == 1
    # without a retry policy a refused stream is a 503
    up.refuse_first_n = 3
    res = curl(f"http://127.0.0.1:{lport}/y", "-H", "x-envoy-retry-on: 5xx",
               "-H", "x-envoy-max-retries: 0")
    assert res.status == 503
    assert b"refused" in res.body


def test_stream_reset_and_content_length_mismatch(remora, ports, h2up):
    up = h2up()
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts()})
    r = remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/x?action=reset")
    assert res.status == 503
    assert r.stat("cluster.backend.http2.rx_reset") >= 1
    # content-length 100 with 10 bytes of DATA: the response cannot complete
    res = curl(f"http://127.0.0.1:{lport}/x?cl_mismatch=1")
    assert res.status != 200 or len(res.body) != 100
    res = curl(f"http://127.0.0.1:{lport}/after")
    assert res.status == 200


def test_goaway_drains_without_failures(remora, ports, h2up):
    """A graceful GOAWAY from the upstream mid-load: every client request
    still succeeds (in-flight streams finish, new ones use a new connection)."""
    up = h2up()
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts()},
                        {"retry_policy": {"retry_on": "reset,refused-stream", "num_retries": 3}})
    r = remora(cfg, concurrency=1)
    stop = threading.Event()
    failures, done = [], [0]

    def load():
        while not stop.is_set():
            res = curl(f"http://127.0.0.1:{lport}/x?sleep_ms=30")
            if res.status != 200:
                failures.append(res.status)
            done[0] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: done[0] >= 20, 20, what="some load")
    up.goaway_all()
    wait_until(lambda: up.connections >= 2, 20, what="a new upstream connection")
    n = done[0]
    wait_until(lambda: done[0] >= n + 20, 20, what="load after GOAWAY")
    stop.set()
    for t in threads:
        t.join(timeout=20)
    info = (up.connections, [c.goaway_sent for c in up.conns],
            {k: v for k, v in r.stats().items() if "http2" in k or "cx_" in k or "rq_" in k})
    if failures or not r.stat("cluster.backend.http2.goaway_received"):
        pytest.fail(f"failures {failures}: {info}")


def test_breakers_hold_for_h2(remora, ports, h2up):
    """max_requests caps outstanding streams; the excess gets 503 overflow."""
    up = h2up()
    cfg, lport = config(ports, up.port, {
        "typed_extension_protocol_options": h2_opts(),
        "circuit_breakers": {"thresholds": [{"max_requests": 3}]}})
    r = remora(cfg, concurrency=1)
    urls = [f"http://127.0.0.1:{lport}/slow?sleep_ms=600&i={i}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda u: curl(u), urls))
    codes = sorted(x.status for x in results)
    assert codes.count(200) >= 3 and codes.count(503) >= 1
    assert up.max_active_total <= 3
    assert r.stat("cluster.backend.upstream_rq_pending_overflow") >= 1


def validate(tmp_path, cfg):
    import yaml
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = subprocess.run([remora_bin(), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr + p.stdout


@pytest.mark.parametrize("opts,needle", [
    (h2_opts(max_concurrent_streams=0), "max_concurrent_streams"),
    (h2_opts(allow_connect=True), "allow_connect"),
    (h2_opts(initial_stream_window_size=10), "initial_stream_window_size"),
    ({HTTP_OPTS: {"@type": HTTP_OPTS_TYPE, "auto_config": {}}}, "auto_config"),
    ({HTTP_OPTS: {"@type": HTTP_OPTS_TYPE, "explicit_http_config": {
        "http_protocol_options": {}, "http2_protocol_options": {}}}}, "only one of"),
    ({HTTP_OPTS: {"@type": HTTP_OPTS_TYPE, "explicit_http_config": {
        "http2_protocol_options": {"bogus": 1}}}}, "bogus"),
])
def test_config_errors(tmp_path, ports, opts, needle):
    cfg, _ = config(ports, 1, {"typed_extension_protocol_options": opts})
    rc, out = validate(tmp_path, cfg)
    assert rc != 0 and needle in out, out
    assert "typed_extension_protocol_options" in out, out


def test_config_accepts_all_supported_fields(tmp_path, ports):
    cfg, _ = config(ports, 1, {"typed_extension_protocol_options": h2_opts(
        max_concurrent_streams=10, initial_stream_window_size=65535,
        initial_connection_window_size=1048576, hpack_table_size=0,
        connection_keepalive={"interval": "10s", "timeout": "1s"})})
    rc, out = validate(tmp_path, cfg)
    assert rc == 0, out
    cfg, _ = config(ports, 1, {"typed_extension_protocol_options": downstream_opts()})
    rc, out = validate(tmp_path, cfg)
    assert rc == 0, out


# ---------------------------------------------------------------------------
# bridging matrix: h1/h2 downstream x h1/h2 upstream, trailers both ways

@pytest.mark.parametrize("down", ["h1", "h2"])
@pytest.mark.parametrize("up_proto", ["h1", "h2"])
def test_bridging_matrix_with_trailers(remora, ports, h2up, make_upstream, down, up_proto):
    from harness import HttpConn
    from h2client import H2Client
    if up_proto == "h2":
        up = h2up()
        extra = {"typed_extension_protocol_options": downstream_opts()} if down == "h2" \
            else {"typed_extension_protocol_options": h2_opts()}
    else:
        up = make_upstream("h1up")
        extra = {"typed_extension_protocol_options": downstream_opts()} if down == "h1" else {}
    cfg, lport = config(ports, up.port, extra)
    r = remora(cfg)
    path = "/m?trailers=1&chunked=1"
    body = b"hello world"
    if down == "h1":
        with HttpConn(lport) as c:
            raw = (f"POST {path} HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n"
                   "Connection: keep-alive\r\nTE: trailers\r\n\r\n").encode() + \
                b"%x\r\n" % len(body) + body + b"\r\n0\r\nx-req-trailer: v\r\n\r\n"
            c.send(raw)
            resp = c.read_response()
        status, trailers = resp.status, dict(resp.trailers)
    else:
        with H2Client(lport) as c:
            sid = c.request(path, method="POST", headers=[("te", "trailers")], body=body, end=False)
            c.conn.send_headers(sid, [("x-req-trailer", "v")], end_stream=True)
            c.flush()
            hdrs, rbody, trailers, reset = c.response(sid)
        assert reset is None
        status = int(hdrs[":status"])
    assert status == 200
    assert trailers.get("x-trailer-one") == "1" and trailers.get("x-trailer-two") == "two"
    rec = up.requests[-1]
    assert rec["body_length"] == len(body)
    assert rec["trailers"].get("x-req-trailer") == "v"
    if up_proto == "h2":
        assert "connection" not in rec["headers"]
        assert rec["headers"].get("te") == "trailers"
        assert rec["headers"][":authority"] == "test.local"
        assert r.stat("cluster.backend.upstream_cx_http2_total") == 1
    else:
        assert rec["headers"]["host"] == "test.local"
        assert r.stat("cluster.backend.upstream_cx_http1_total") == 1


def test_slow_downstream_bounds_memory(remora, ports, h2up):
    """The client stops reading a 32 MB response from an HTTP/2 upstream:
    Remora consumes upstream DATA only as the downstream takes it, so the
    upstream stays blocked on its window and the proxy's memory does not
    grow with the body; once the client reads, everything arrives intact."""
    from harness import HttpConn, RssSampler
    big = 32 * 1024 * 1024
    up = h2up()
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts(
        initial_stream_window_size=65535, initial_connection_window_size=65535),
        "per_connection_buffer_limit_bytes": 65536}, {"timeout": "0s"})
    r = remora(cfg, asan_options_extra="quarantine_size_mb=16:thread_local_quarantine_size_kb=256")
    baseline = r.rss_kb()
    with HttpConn(lport, timeout=60) as c, RssSampler(r) as s:
        c.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
        c.request("GET", f"/big?bytes={big}")
        wait_until(lambda: up.pending_bytes() > 0, 10, what="upstream started sending")
        time.sleep(1.5)   # the client reads nothing meanwhile
        stalled = up.pending_bytes()
        peak_stalled = s.peak_kb
        resp = c.read_response()
    assert resp.status == 200
    assert len(resp.body) == big and resp.body == pattern_bytes(big)
    # the upstream could not push the body into the proxy
    assert stalled > big - 16 * 1024 * 1024, stalled
    assert peak_stalled - baseline < 32 * 1024, (baseline, peak_stalled)


def test_h2load_and_nghttp_h2c_to_h2_upstream(remora, ports, h2up):
    """Real HTTP/2 clients through an HTTP/2 upstream (h2<->h2): h2load runs
    400 requests over 4 connections x 10 streams; nghttp fetches 30 slow
    streams on one connection, which the upstream sees multiplexed."""
    import re
    up = h2up()
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": downstream_opts()})
    r = remora(cfg, concurrency=1)
    p = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10",
                        f"http://127.0.0.1:{lport}/load"], capture_output=True, timeout=120)
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded", out), out
    assert re.search(r"status codes: 400 2xx", out), out
    assert r.stat("cluster.backend.upstream_rq_2xx") == 400
    assert r.stat("cluster.backend.upstream_cx_http2_total") <= 4
    urls = [f"http://127.0.0.1:{lport}/s/{i}?sleep_ms=300" for i in range(30)]
    before = up.max_active_total
    p = subprocess.run(["nghttp", "-s"] + urls, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert p.stdout.decode().count('"server"') == 30
    assert up.max_active_total >= 10 and up.max_active_total >= before
    # every request of both runs reached the upstream over HTTP/2
    assert len(up.requests) == 430


# ---------------------------------------------------------------------------
# HTTP/2 over TLS to the upstream (UpstreamTlsContext, ALPN h2)

UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    import tls_pki
    return tls_pki.make_pki(tmp_path_factory.mktemp("pki"))


def tls_h2_server(h2up, pki, alpn=("h2",)):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server"], pki["server_key"])
    ctx.set_alpn_protocols(list(alpn))
    return h2up(ssl_context=ctx)


def upstream_tls_h2(pki, alpn=("h2",)):
    common = {"validation_context": {"trusted_ca": {"filename": pki["ca"]}}}
    if alpn:
        common["alpn_protocols"] = list(alpn)
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS_TYPE, "sni": "server.local",
                             "common_tls_context": common}}


def test_h2_upstream_over_tls_with_alpn(remora, ports, h2up, pki, tmp_path):
    """An h2 cluster with an UpstreamTlsContext (alpn_protocols [h2]): the
    connection is TLS (verified against the CA, ALPN h2 negotiated), requests
    from HTTP/1.1 and h2c clients share it multiplexed, trailers survive."""
    up = tls_h2_server(h2up, pki)
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts(),
                                         "transport_socket": upstream_tls_h2(pki)})
    r = remora(cfg, concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/tls-h1?x=1", "-H", "x-custom: abc")
    assert res.status == 200, res.stderr
    echo = json.loads(res.body)
    assert echo["path"] == "/tls-h1?x=1" and echo["headers"]["x-custom"] == "abc"
    res = curl(f"http://127.0.0.1:{lport}/tls-h2?bytes=100000", "--http2-prior-knowledge")
    assert res.status == 200, res.stderr
    assert res.body == pattern_bytes(100000)
    body = pattern_bytes(300000)
    f = tmp_path / "body"
    f.write_bytes(body)
    res = curl(f"http://127.0.0.1:{lport}/tls-post", "--http2-prior-knowledge",
               "--data-binary", f"@{f}", "-H", "content-type: application/octet-stream")
    assert res.status == 200, res.stderr
    echo = json.loads(res.body)
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert not up.errors, up.errors
    assert up.alpn and all(a == "h2" for a in up.alpn), up.alpn
    assert r.stat("cluster.backend.upstream_cx_http2_total") == 1
    assert r.stat("cluster.backend.ssl.handshake") == 1
    assert r.stat("cluster.backend.upstream_rq_2xx") == 3
    assert len(up.requests) == 3


def test_h2_upstream_tls_failures(remora, ports, h2up, pki):
    """Without the transport socket the h2c preface hits a TLS server: 503,
    a connect failure; with a TLS context whose CA does not match: 503 and
    a verification failure counted; neither gets to the upstream's streams."""
    up = tls_h2_server(h2up, pki)
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts(),
                                         "connect_timeout": "1s"})
    r = remora(cfg, concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/plain")
    assert res.status == 503, (res.status, res.body)
    r.stop()
    bad = upstream_tls_h2(pki)
    bad["typed_config"]["common_tls_context"]["validation_context"]["trusted_ca"] = {
        "filename": pki["foreign_ca"]}
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts(),
                                         "transport_socket": bad})
    r = remora(cfg, concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/badca")
    assert res.status == 503, (res.status, res.body)
    assert r.stat("cluster.backend.ssl.fail_verify_error") >= 1
    assert not up.requests


def test_response_flags_match_http1(remora, ports, h2up, tmp_path):
    """%RESPONSE_FLAGS% for an HTTP/2 upstream, as for HTTP/1 and with
    Envoy's reset-reason mapping: connection lost UC (before or after the
    response head), RST_STREAM or REFUSED_STREAM from the peer UR, retries
    used up URX beside the cause, route and per-try timeouts UT, connect
    failure UF (with its reason), a malformed response UPE."""
    up = h2up()
    log = tmp_path / "flags.log"
    dead = ports.get()   # nothing listens there
    admin, lport = ports.get(), ports.get()
    fast = {"base_interval": "0.001s"}
    routes = [
        route({"prefix": "/retry"}, "backend",
              retry_policy={"retry_on": "reset", "num_retries": 1, "retry_back_off": fast}),
        route({"prefix": "/slow"}, "backend", timeout="0.2s"),
        route({"prefix": "/pertry"}, "backend", timeout="5s",
              retry_policy={"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s",
                            "retry_back_off": fast}),
        route({"prefix": "/dead"}, "dead"),
        route({"prefix": "/"}, "backend"),
    ]
    fmt = "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %REQ(:PATH)%\n"
    al = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(log), "log_format": {"text_format_source": {"inline_string": fmt}}}}]
    lst = http_listener(lport, routes, access_log=al)
    opts = {"typed_extension_protocol_options": h2_opts()}
    clusters = [static_cluster("backend", up.port, **opts), static_cluster("dead", dead, **opts)]
    r = remora(bootstrap(admin, [lst], clusters))
    cases = {
        "/ok": "200 - -",
        "/x?action=reset": "503 UR -",
        "/x?action=refuse": "503 UR -",
        "/x?action=close": "503 UC -",
        "/x?action=close_after_head": "200 UC -",
        "/x?cl_mismatch=1": "200 UPE -",
        "/retry?action=reset": "503 UR,URX -",
        "/retry?action=close": "503 UC,URX -",
        "/slow?sleep_ms=3000": "504 UT -",
        "/pertry?sleep_ms=3000": "504 UT,URX -",
        "/dead": "503 UF connection failure",
    }
    for path in cases:
        curl(f"http://127.0.0.1:{lport}{path}")
    got = {}

    def all_logged():
        try:
            text = log.read_text()
        except OSError:
            return False
        for ln in text.splitlines():
            head, _, path = ln.rpartition(" ")
            got[path] = head
        return len(got) >= len(cases)
    wait_until(all_logged, 10, what="one access log line per request")
    assert got == cases
    r.stop()


def test_proxy_100_continue_from_h2_upstream(remora, ports, h2up, tmp_path):
    """proxy_100_continue with an HTTP/2 upstream: its :status 100 reaches an
    HTTP/1.1 curl as "100 Continue", the expect header reached it."""
    up = h2up()
    f = tmp_path / "e.bin"
    data = bytes(range(256)) * 256
    f.write_bytes(data)
    cfg, lport = config(ports, up.port, {"typed_extension_protocol_options": h2_opts()},
                        hcm_extra={"proxy_100_continue": True})
    remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/e", "-H", "Expect: 100-continue",
               "--expect100-timeout", "10", "--data-binary", f"@{f}", "-v")
    assert res.status == 200, res
    assert "HTTP/1.1 100" in res.stderr, res.stderr
    echo = res.json()
    assert echo["headers"].get("expect") == "100-continue", echo["headers"]
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()
