"""Downstream HTTP/2 (h2c with prior knowledge) bridged to the HTTP/1.1
upstream: real clients (curl, nghttp, h2load, grpcio) and protocol-level
cases driven with python3-h2 (forbidden headers, content-length, SETTINGS,
PING keepalive, flow control, trailers, GOAWAY on drain)."""

import hashlib
import json
import re
import signal
import subprocess
import tempfile
import time

import h2.events
import h2.settings
import pytest

from h2client import H2Client
from harness import (bootstrap, closed_port, curl, http_listener, pattern_bytes,
                     route, route_config, simple_http_config, static_cluster, virtual_host,
                     wait_until)


@pytest.fixture
def h2env(remora, upstream, ports):
    def start(**hcm_extra):
        admin, lport = ports.get(), ports.get()
        r = remora(simple_http_config(admin, lport, upstream.port, **hcm_extra))
        return r, lport
    return start


def h2stat(r, name):
    return r.stats().get(name, 0)


# ---------------------------------------------------------------------------
# real clients

def test_curl_prior_knowledge_get_and_post(h2env, upstream):
    r, port = h2env()
    res = curl(f"http://127.0.0.1:{port}/hello?x=1", "--http2-prior-knowledge",
               "-H", "x-custom: 1")
    assert res.status == 200, res
    assert res.info.get("http_version") in ("2", "2.0"), res.info
    echo = res.json()
    assert echo["path"] == "/hello?x=1"
    assert echo["version"] == "HTTP/1.1"        # bridged to the HTTP/1.1 upstream
    assert echo["headers"]["host"] == f"127.0.0.1:{port}"   # :authority -> Host
    assert echo["headers"]["x-custom"] == "1"
    body = bytes(range(256)) * 1000
    # POST with a body of known content (curl reads it from a file)
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        res = curl(f"http://127.0.0.1:{port}/post", "--http2-prior-knowledge",
                   "--data-binary", f"@{f.name}")
    assert res.status == 200, res
    echo = res.json()
    assert echo["method"] == "POST"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    st = r.stats()
    assert st["http.ingress_http.downstream_cx_http2_total"] == 2
    assert st["http.ingress_http.downstream_rq_http2_total"] == 2
    assert st["http.ingress_http.downstream_rq_http1_total"] == 0
    # the same listener (codec_type AUTO) still speaks HTTP/1.1
    res = curl(f"http://127.0.0.1:{port}/h1")
    assert res.status == 200 and res.json()["path"] == "/h1"
    assert r.stat("http.ingress_http.downstream_cx_http1_total") == 1


def test_codec_type_http1_and_http2_only(h2env):
    r1, p1 = h2env(codec_type="HTTP1")
    res = curl(f"http://127.0.0.1:{p1}/", "--http2-prior-knowledge")
    assert res.status != 200        # the preface is not an HTTP/1 request
    assert r1.stat("http.ingress_http.downstream_cx_http2_total") == 0
    assert curl(f"http://127.0.0.1:{p1}/").status == 200
    r2, p2 = h2env(codec_type="HTTP2")
    assert curl(f"http://127.0.0.1:{p2}/", "--http2-prior-knowledge").status == 200
    res = curl(f"http://127.0.0.1:{p2}/")
    assert res.status != 200        # an HTTP/1 request is a protocol error
    assert r2.stat("http.ingress_http.downstream_cx_http1_total") == 0
    assert r2.stat("http.ingress_http.downstream_cx_protocol_error") >= 1


def test_nghttp_many_concurrent_streams(h2env, upstream):
    r, port = h2env()
    n = 60
    urls = [f"http://127.0.0.1:{port}/stream/{i}?sleep_ms={(i * 7) % 50}" for i in range(n)]
    p = subprocess.run(["nghttp", "-s"] + urls, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    out = p.stdout.decode()
    dec = json.JSONDecoder()
    paths, i = [], 0
    while True:
        i = out.find("{", i)
        if i < 0:
            break
        try:
            obj, end = dec.raw_decode(out, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict) and "path" in obj:
            paths.append(obj["path"].split("?")[0])
        i = end
    assert sorted(paths) == sorted(f"/stream/{i}" for i in range(n))
    st = r.stats()
    assert st["http.ingress_http.downstream_cx_http2_total"] == 1   # one connection
    assert st["http.ingress_http.downstream_rq_http2_total"] == n
    assert st["http.ingress_http.downstream_rq_2xx"] == n


def test_h2load_short_run_all_2xx(h2env):
    r, port = h2env()
    p = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "16",
                        f"http://127.0.0.1:{port}/load"], capture_output=True, timeout=120)
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded", out), out
    assert re.search(r"status codes: 2000 2xx", out), out
    assert r.stat("http.ingress_http.downstream_rq_http2_total") == 2000


# ---------------------------------------------------------------------------
# protocol level (python3-h2)

def test_settings_advertised(h2env):
    r, port = h2env(http2_protocol_options={"max_concurrent_streams": 7,
                                            "initial_stream_window_size": 131072,
                                            "initial_connection_window_size": 1048576})
    with H2Client(port) as c:
        c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged), what="SETTINGS")
        s = c.remote_settings
        assert s[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
        assert s[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 131072
        # the connection window was raised by a WINDOW_UPDATE on stream 0
        c.wait_for(lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0,
                   what="connection WINDOW_UPDATE")
        assert c.conn.outbound_flow_control_window >= 1048576 - 65535


def test_default_settings_are_envoys(h2env):
    r, port = h2env()
    with H2Client(port) as c:
        c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged), what="SETTINGS")
        assert c.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 2147483647
        assert c.remote_settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 268435456


@pytest.mark.parametrize("bad", [("connection", "keep-alive"), ("transfer-encoding", "chunked"),
                                 ("upgrade", "h2c"), ("keep-alive", "5"), ("te", "gzip")])
def test_forbidden_connection_headers_reset_stream(h2env, bad):
    r, port = h2env()
    with H2Client(port, validate=False) as c:
        sid = c.request("/bad", headers=[bad])
        _, _, _, reset = c.response(sid)
        assert reset is not None and reset.error_code == 1, reset   # PROTOCOL_ERROR
        # the connection stays usable
        hdrs, body, _, reset2 = c.response(c.request("/good"))
        assert reset2 is None and hdrs[":status"] == "200"
        assert json.loads(body)["path"] == "/good"
    assert r.stat("http2.rx_messaging_error") >= 1
    assert r.stat("http2.tx_reset") >= 1
    assert r.stat("http.ingress_http.downstream_rq_http2_total") == 1   # /bad never started


def test_te_trailers_is_allowed(h2env):
    r, port = h2env()
    with H2Client(port) as c:
        hdrs, body, _, reset = c.response(c.request("/te", headers=[("te", "trailers")]))
        assert reset is None and hdrs[":status"] == "200"
        assert json.loads(body)["headers"].get("te") == "trailers"


def test_content_length_mismatch_resets(h2env, upstream):
    r, port = h2env()
    with H2Client(port, validate=False) as c:
        sid = c.request("/cl", method="POST", headers=[("content-length", "10")], body=b"12345")
        _, _, _, reset = c.response(sid)
        assert reset is not None and reset.error_code == 1, reset
        hdrs, _, _, reset2 = c.response(c.request("/after"))
        assert reset2 is None and hdrs[":status"] == "200"
    assert r.stat("http2.rx_messaging_error") >= 1
    # the upstream never got a complete /cl request
    assert all(q["path"] != "/cl" or q["body_length"] != 10 for q in upstream.requests)


def test_header_overflow_resets_stream(h2env):
    r, port = h2env(max_request_headers_kb=1)
    with H2Client(port) as c:
        sid = c.request("/big", headers=[("x-big", "a" * 2000)])
        _, _, _, reset = c.response(sid)
        assert reset is not None
        hdrs, _, _, reset2 = c.response(c.request("/small"))
        assert reset2 is None and hdrs[":status"] == "200"
    assert r.stat("http2.header_overflow") == 1


def test_host_without_authority_and_cookies_joined(h2env):
    r, port = h2env()
    with H2Client(port, validate=False) as c:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":path", "/h"), (":scheme", "http"),
                                  ("host", "example.org"), ("cookie", "a=1"), ("cookie", "b=2")],
                            end_stream=True)
        c.flush()
        hdrs, body, _, reset = c.response(sid)
        assert reset is None and hdrs[":status"] == "200"
        echo = json.loads(body)
        assert echo["headers"]["host"] == "example.org"
        assert echo["headers"]["cookie"] == "a=1; b=2"


def test_request_and_response_trailers(h2env, upstream):
    r, port = h2env()
    with H2Client(port) as c:
        sid = c.request("/tr", method="POST", body=b"payload", end=False)
        c.conn.send_headers(sid, [("x-req-trailer", "yes")], end_stream=True)
        c.flush()
        hdrs, body, _, reset = c.response(sid)
        assert reset is None and hdrs[":status"] == "200"
        echo = json.loads(body)
        assert echo["body"] == "payload" and echo["chunked_request"]
        assert echo["trailers"] == {"x-req-trailer": "yes"}
        # response trailers from a chunked upstream answer arrive as HEADERS
        hdrs, body, trailers, reset = c.response(c.request("/rt?chunked=1&trailers=1&bytes=1000"))
        assert reset is None and hdrs[":status"] == "200"
        assert body == pattern_bytes(1000)
        assert trailers.get("x-trailer-one") and trailers.get("x-trailer-two"), trailers
    assert r.stat("http2.trailers") == 1


def test_client_reset_is_counted_and_connection_survives(h2env):
    r, port = h2env()
    with H2Client(port) as c:
        sid = c.request("/slow?sleep_ms=3000")
        time.sleep(0.2)
        c.conn.reset_stream(sid, error_code=8)   # CANCEL
        c.flush()
        hdrs, _, _, reset = c.response(c.request("/next"))
        assert reset is None and hdrs[":status"] == "200"
    wait_until(lambda: r.stat("http.ingress_http.downstream_rq_rx_reset") == 1, 5,
               what="rx_reset counted")
    assert r.stat("http2.rx_reset") == 1
    wait_until(lambda: r.stat("http.ingress_http.downstream_rq_active") == 0, 5,
               what="no active request")


def test_keepalive_ping_timeout_closes(h2env):
    r, port = h2env(http2_protocol_options={
        "connection_keepalive": {"interval": "0.2s", "timeout": "0.3s",
                                 "interval_jitter": {"value": 0}}})
    # a client that answers PINGs stays connected over many intervals
    with H2Client(port) as c:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            c.pump(0.1)
        assert not c.closed
        pings = [e for e in c.events if isinstance(e, h2.events.PingReceived)]
        assert len(pings) >= 2
        hdrs, _, _, reset = c.response(c.request("/alive"))
        assert hdrs[":status"] == "200"
    # a client that never answers gets GOAWAY and a close within a bounded time
    with H2Client(port) as c:
        deadline = time.monotonic() + 10
        while not c.closed and time.monotonic() < deadline:
            c.pump(0.2, auto_flush=False)
        assert c.closed
    assert r.stat("http2.keepalive_timeout") == 1


def test_flow_control_slow_reader_is_bounded(h2env, upstream):
    """A client that never opens stream 1's window gets at most that window;
    the proxy stops reading the upstream (memory stays bounded) and other
    streams on the connection are served meanwhile."""
    r, port = h2env(http2_protocol_options={"initial_connection_window_size": 16777216})
    total = 48 * 1024 * 1024
    with H2Client(port) as c:
        # raise the connection window a lot, keep stream windows at 65535
        c.conn.increment_flow_control_window(256 * 1024 * 1024)
        c.flush()
        rss0 = r.rss_kb()
        sid = c.request(f"/big?bytes={total}")
        got = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for e in c.pump(0.2):
                if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    got += len(e.data)
        assert 0 < got <= 65535
        rss1 = r.rss_kb()
        assert rss1 - rss0 < 32 * 1024, (rss0, rss1)   # not the 48 MiB body
        # another stream is served while stream 1 is stalled
        hdrs, body, _, reset = c.response(c.request("/other"))
        assert reset is None and json.loads(body)["path"] == "/other"
        # open the window: the whole body arrives intact
        h = hashlib.sha256()
        first = b"".join(e.data for e in c.events
                         if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
        h.update(first)
        got = len(first)
        c.conn.increment_flow_control_window(total, stream_id=sid)
        c.flush()
        deadline = time.monotonic() + 60
        ended = False
        while not ended and time.monotonic() < deadline:
            for e in c.pump(0.5):
                if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    h.update(e.data)
                    got += len(e.data)
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    ended = True
        assert ended and got == total
        assert h.hexdigest() == hashlib.sha256(pattern_bytes(total)).hexdigest()


def test_request_body_flow_control_follows_upstream(h2env, upstream):
    """A large request body streams through to the upstream: the stream
    window is reopened as the upstream takes the bytes."""
    r, port = h2env(http2_protocol_options={"initial_stream_window_size": 65535})
    body = pattern_bytes(4 * 1024 * 1024)
    with H2Client(port) as c:
        sid = c.request("/upload", method="POST", end=False)
        sent = 0
        deadline = time.monotonic() + 60
        while sent < len(body) and time.monotonic() < deadline:
            win = min(c.conn.local_flow_control_window(sid), 16384, len(body) - sent)
            if win <= 0:
                c.pump(0.2)
                continue
            c.conn.send_data(sid, body[sent:sent + win], end_stream=sent + win == len(body))
            sent += win
            c.flush()
        assert sent == len(body)
        hdrs, resp, _, reset = c.response(sid, timeout=30)
        assert reset is None and hdrs[":status"] == "200"
        echo = json.loads(resp)
        assert echo["body_length"] == len(body)
        assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_held_headers_stop_the_request_window(remora, upstream, ports):
    """While the fault filter delays a request (decode_headers STOP), its body
    is not consumed: the stream's window stays closed until the delay ends,
    then the whole body reaches the upstream."""
    from test_fault import fault_filter, pct
    from harness import ROUTER_FILTER
    admin, lport = ports.get(), ports.get()
    lst = http_listener(lport, [route({"prefix": "/"}, "backend")],
                        http_filters=[fault_filter(delay={"fixed_delay": "1.5s",
                                                          "percentage": pct(100)}),
                                      ROUTER_FILTER],
                        http2_protocol_options={"initial_stream_window_size": 65535})
    r = remora(bootstrap(admin, [lst], [static_cluster("backend", upstream.port)]))
    body = pattern_bytes(300000)
    with H2Client(lport) as c:
        c.conn.increment_flow_control_window(1 << 24)   # connection window: not the limit
        sid = c.request("/held", method="POST", end=False)
        sent = 0
        while c.conn.local_flow_control_window(sid) > 0:
            n = min(c.conn.local_flow_control_window(sid), 16384, c.conn.max_outbound_frame_size)
            c.conn.send_data(sid, body[sent:sent + n])
            sent += n
        c.flush()
        assert sent <= 65535
        # during the delay no WINDOW_UPDATE opens the stream again
        t_end = time.monotonic() + 0.7
        while time.monotonic() < t_end:
            c.pump(0.1)
        assert c.conn.local_flow_control_window(sid) == 0
        deadline = time.monotonic() + 30
        while sent < len(body) and time.monotonic() < deadline:
            n = min(c.conn.local_flow_control_window(sid), 16384, len(body) - sent)
            if n <= 0:
                c.pump(0.1)
                continue
            c.conn.send_data(sid, body[sent:sent + n], end_stream=sent + n == len(body))
            sent += n
            c.flush()
        assert sent == len(body)
        hdrs, resp, _, reset = c.response(sid, timeout=30)
        assert reset is None and hdrs[":status"] == "200"
        echo = json.loads(resp)
        assert echo["body_length"] == len(body)
        assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert r.stat("http.ingress_http.fault.delays_injected") == 1


def test_slow_stream_does_not_block_others(h2env):
    r, port = h2env()
    with H2Client(port) as c:
        slow = c.request("/slow?sleep_ms=4000")
        fast = [c.request(f"/fast/{i}") for i in range(10)]
        for i, sid in enumerate(fast):
            hdrs, body, _, reset = c.response(sid)
            assert reset is None and json.loads(body)["path"] == f"/fast/{i}"
        # the slow one is still running when all the fast ones are done
        assert not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == slow
                       for e in c.events)
        hdrs, body, _, reset = c.response(slow)
        assert reset is None and hdrs[":status"] == "200"


def test_goaway_on_drain(h2env):
    r, port = h2env()
    with H2Client(port) as c:
        hdrs, _, _, _ = c.response(c.request("/before"))
        assert hdrs[":status"] == "200"
        r.send_signal(signal.SIGTERM)
        c.wait_for(lambda e: isinstance(e, h2.events.ConnectionTerminated), timeout=10,
                   what="GOAWAY")
        assert c.goaway.error_code == 0
        assert c.goaway.last_stream_id == 1


def test_drain_lets_in_flight_streams_finish(remora, upstream, ports):
    """SIGTERM: GOAWAY at once, the in-flight stream still completes, then the
    connection closes and the process exits 0.  (nghttp as the client:
    python3-h2 treats a GOAWAY as the end of the connection.)"""
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), drain_time_s=10)
    p = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{lport}/inflight?sleep_ms=1500"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: any(q["path"].startswith("/inflight") for q in upstream.requests)
                   or None, 10, what="request at the upstream")
        r.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode(errors="replace")
    assert p.returncode == 0, text[-3000:]
    assert "recv GOAWAY frame" in text and "NO_ERROR" in text, text[-3000:]
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", text), text[-3000:]
    assert '"/inflight?sleep_ms=1500"' in text      # the body arrived
    assert r.wait_exit(15) == 0


def test_idle_timeout_sends_goaway(h2env):
    r, port = h2env(common_http_protocol_options={"idle_timeout": "0.3s"})
    with H2Client(port) as c:
        c.response(c.request("/x"))
        c.wait_for(lambda e: isinstance(e, h2.events.ConnectionTerminated), timeout=10,
                   what="GOAWAY")
        deadline = time.monotonic() + 10
        while not c.closed and time.monotonic() < deadline:
            c.pump(0.2)
        assert c.closed
    assert r.stat("http.ingress_http.downstream_cx_idle_timeout") == 1


# ---------------------------------------------------------------------------
# gRPC local replies (trailers-only), on HTTP/2 and HTTP/1

@pytest.fixture
def grpc_env(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    rc = route_config([virtual_host([
        route({"prefix": "/dead."}, "dead"),
        {"match": {"prefix": "/limited."}, "direct_response": {"status": 429}},
        route({"prefix": "/ok"}, "backend"),
    ])])
    cfg = bootstrap(admin, [http_listener(lport, rc=rc)], [
        static_cluster("backend", upstream.port),
        static_cluster("dead", closed_port()),
    ])
    return remora(cfg), lport


def test_grpcio_local_reply_status(grpc_env):
    import grpc
    r, port = grpc_env
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        def call(method):
            fn = ch.unary_unary(method, request_serializer=lambda x: x,
                                response_deserializer=lambda x: x)
            with pytest.raises(grpc.RpcError) as ei:
                fn(b"\x08\x01", timeout=10)
            return ei.value
        e = call("/nosuch.Service/Method")            # no route: 404 -> UNIMPLEMENTED
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
        e = call("/dead.Service/Method")              # connect failure: 503 -> UNAVAILABLE
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        e = call("/limited.Service/Method")           # 429 -> UNAVAILABLE
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
    assert r.stat("http.ingress_http.downstream_rq_http2_total") >= 3


def test_grpc_local_reply_on_http1_and_h2_headers(grpc_env):
    r, port = grpc_env
    res = curl(f"http://127.0.0.1:{port}/nosuch.S/M", "-X", "POST",
               "-H", "content-type: application/grpc", "--data-binary", "x")
    assert res.status == 200
    assert res.headers.get("grpc-status") == "12", res
    assert res.headers.get("content-type") == "application/grpc"
    with H2Client(port) as c:
        hdrs, body, trailers, reset = c.response(c.request(
            "/dead.S/M", method="POST", headers=[("content-type", "application/grpc+proto"),
                                                 ("te", "trailers")], body=b"\0\0\0\0\0"))
        assert reset is None
        assert hdrs[":status"] == "200" and hdrs["grpc-status"] == "14", hdrs
        assert body == b"" and not trailers      # trailers-only: one HEADERS frame
    # a non-gRPC request keeps the plain local reply
    res = curl(f"http://127.0.0.1:{port}/nosuch", "--http2-prior-knowledge")
    assert res.status == 404


# ---------------------------------------------------------------------------
# configuration

HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"


@pytest.mark.parametrize("extra,path,msg", [
    ("http2_protocol_options: {allow_metadata: true}",
     "http2_protocol_options.allow_metadata", "not supported yet"),
    ("http2_protocol_options: {max_concurrent_streams: 0}",
     "http2_protocol_options.max_concurrent_streams", "1..2147483647"),
    ("http2_protocol_options: {initial_stream_window_size: 1000}",
     "http2_protocol_options.initial_stream_window_size", "65535"),
    ("http2_protocol_options: {bogus: 1}", "http2_protocol_options.bogus", "unknown field"),
    ("http2_protocol_options: {connection_keepalive: {interval: 1s}}",
     "http2_protocol_options.connection_keepalive", "timeout is required"),
    ("http2_protocol_options: {connection_keepalive: {timeout: 1s, connection_idle_interval: 1s}}",
     "http2_protocol_options.connection_keepalive.connection_idle_interval", "not supported yet"),
    ("codec_type: HTTP3", "codec_type", "not supported"),
])
def test_http2_options_config_errors(tmp_path, extra, path, msg):
    from test_config import GOOD, validate, write_config
    text = GOOD.replace("          stat_prefix: ingress_http\n",
                        "          stat_prefix: ingress_http\n          " + extra + "\n")
    p, _ = write_config(tmp_path, text)
    rc, err, _ = validate(p)
    assert rc != 0
    assert f"{HCM_PATH}.{path}" in err, err
    assert msg in err, err


def test_http2_options_config_accepted(tmp_path):
    from test_config import GOOD, validate, write_config
    extra = ("codec_type: HTTP2\n          http2_protocol_options: {maxConcurrentStreams: 100, "
             "initial_stream_window_size: 65536, initialConnectionWindowSize: 1048576, "
             "hpack_table_size: 0, connection_keepalive: {interval: 10s, timeout: 2s, "
             "interval_jitter: {value: 5}}}")
    text = GOOD.replace("          stat_prefix: ingress_http\n",
                        "          stat_prefix: ingress_http\n          " + extra + "\n")
    p, _ = write_config(tmp_path, text)
    rc, err, _ = validate(p)
    assert rc == 0, err


def test_expect_100_continue_answered_by_remora(h2env, upstream):
    """Envoy's default (proxy_100_continue off): an h2 request with `expect:
    100-continue` and a body to follow gets a 100 HEADERS from Remora before
    it sends the body; the header does not reach the upstream; a request
    without a body (END_STREAM on HEADERS) gets no 100."""
    r, port = h2env()
    with H2Client(port) as c:
        sid = c.request("/exp", method="POST", headers=[("expect", "100-continue")], end=False)
        info = c.wait_for(lambda e: isinstance(e, h2.events.InformationalResponseReceived) and
                          e.stream_id == sid, what="100 continue")
        assert dict(info.headers)[":status"] == "100"
        # nothing final before the body was sent
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in c.events)
        c.conn.send_data(sid, b"the body", end_stream=True)
        c.flush()
        hdrs, body, _, reset = c.response(sid)
        assert reset is None and hdrs[":status"] == "200"
        echo = json.loads(body)
        assert echo["body"] == "the body"
        assert "expect" not in echo["headers"]
        sid2 = c.request("/exp-nobody", headers=[("expect", "100-continue")])
        hdrs, body, _, reset = c.response(sid2)
        assert reset is None and hdrs[":status"] == "200"
        assert not any(isinstance(e, h2.events.InformationalResponseReceived) and e.stream_id == sid2
                       for e in c.events)
        assert "expect" not in json.loads(body)["headers"]
