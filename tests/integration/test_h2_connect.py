"""CONNECT and WebSocket over downstream HTTP/2 (http2_protocol_options.allow_connect).

The client is python3-h2: neither curl nor nghttp can send an RFC 8441
extended CONNECT (":protocol").  Upstreams: the harness's HTTP/1.1 server
(real RFC 6455 handshake and frame echo for "upgrade: websocket", JSON echo
otherwise), the TCP echo server, and a small-buffer echo server here for the
flow-control test."""

import base64
import hashlib
import json
import os
import socket
import threading
import time

import h2.errors
import h2.events
import h2.settings
import pytest

from h2client import H2Client
from harness import (RssSampler, bootstrap, http_listener, pattern_bytes, route, static_cluster,
                     wait_until, ws_accept_key, ws_encode, ws_read_frame)
from upstreams import TcpEchoServer

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
ECP = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL


class H2(H2Client):
    """One h2c connection without header validation (plain CONNECT has no
    :path / :scheme, and the malformed-request tests send what h2 would
    refuse) that collects each stream's DATA in data[sid] and acknowledges
    it as it arrives unless ack is False."""

    recv_size = 262144

    def __init__(self, port, timeout=10.0):
        self.data = {}            # stream id -> bytearray (data not yet taken)
        self.ack = True           # acknowledge DATA as it arrives (opens our windows)
        self.unacked = {}         # stream id -> bytes received but not acknowledged
        super().__init__(port, timeout=timeout, validate=False)

    def _received(self, e):
        if isinstance(e, h2.events.DataReceived):
            self.data.setdefault(e.stream_id, bytearray()).extend(e.data)
            if self.ack:
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            else:
                self.unacked[e.stream_id] = (self.unacked.get(e.stream_id, 0) +
                                             e.flow_controlled_length)

    def pump(self, timeout=0.2):
        return super().pump(timeout)

    def ack_all(self):
        self.ack = True
        for sid, n in self.unacked.items():
            if n:
                self.conn.acknowledge_received_data(n, sid)
        self.unacked = {}
        self.flush()

    def wait_settings(self):
        self.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged), what="SETTINGS")

    def open(self, headers, end=False):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def response(self, sid, timeout=10.0):
        """The response HEADERS of sid, or the RST_STREAM that ended it."""
        return self.wait_for(lambda e: isinstance(e, (h2.events.ResponseReceived,
                                                      h2.events.StreamReset)) and
                             e.stream_id == sid, timeout, what=f"response on stream {sid}")

    def ended(self, sid):
        return self.find(lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                         and e.stream_id == sid)

    def send(self, sid, data, end=False):
        """Send all of data as the stream's windows allow."""
        off = 0
        deadline = time.monotonic() + 30
        while off < len(data) or end:
            win = min(self.conn.local_flow_control_window(sid), 16384, len(data) - off)
            if win > 0 or off == len(data):
                last = end and off + win == len(data)
                self.conn.send_data(sid, data[off:off + win], end_stream=last)
                off += win
                self.flush()
                if last:
                    break
                continue
            assert time.monotonic() < deadline, "stream window never reopened"
            self.pump(0.1)

    def read(self, sid, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.data.get(sid, b"")) < n:
            assert time.monotonic() < deadline, \
                f"timed out reading {n} bytes (have {len(self.data.get(sid, b''))})"
            assert not self.closed, "connection closed"
            self.pump(0.2)
        buf = self.data[sid]
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def request(self, path):
        sid = self.open([(":method", "GET"), (":path", path), (":scheme", "http"),
                         (":authority", "test.local")], end=True)
        hdrs = dict(self.response(sid).headers)
        self.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                      what=f"end of stream {sid}")
        return hdrs, bytes(self.data.pop(sid, b""))


class _StreamReader:
    """read_exact over one stream's tunnel bytes (for ws_read_frame)."""

    def __init__(self, c, sid):
        self.c, self.sid = c, sid

    def read_exact(self, n):
        return self.c.read(self.sid, n)


def _ws_connect_headers(path="/ws", key=None, protocol="websocket", authority="ws.test"):
    key = key or base64.b64encode(os.urandom(16)).decode()
    return key, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                 (":path", path), (":authority", authority),
                 ("sec-websocket-version", "13"), ("sec-websocket-key", key)]


def _plain_connect_headers(authority):
    return [(":method", "CONNECT"), (":authority", authority)]


def _config(admin, lport, up_port, allow_connect=True, upgrades=("websocket", "CONNECT"),
            connect_config=True, h2opts=None, listener_extra=None, cluster_extra=None):
    upgrade = [{"upgrade_type": "CONNECT", "connect_config": {}}] if connect_config else []
    routes = [route({"connect_matcher": {}}, "backend", upgrade_configs=upgrade),
              route({"prefix": "/"}, "backend")]
    opts = {"allow_connect": allow_connect, **(h2opts or {})}
    lst = http_listener(lport, routes, codec_type="HTTP2", http2_protocol_options=opts,
                        upgrade_configs=[{"upgrade_type": u} for u in upgrades])
    lst.update(listener_extra or {})
    return bootstrap(admin, [lst], [static_cluster("backend", up_port, **(cluster_extra or {}))])


def _stat_settles(r, name, value):
    r.wait_stat(name, lambda v: v == value, timeout=15)


# ---------------------------------------------------------------------------
# WebSocket (RFC 8441 extended CONNECT) to an HTTP/1.1 upstream


def test_settings_advertise_extended_connect(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    remora(_config(admin, lport, upstream.port))
    with H2(lport) as c:
        c.wait_settings()
        assert c.remote_settings.get(ECP) == 1, c.remote_settings


def test_websocket_over_h2_echo_and_client_close(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, upstream.port))
    with H2(lport) as c:
        key, hdrs = _ws_connect_headers("/chat?room=1")
        sid = c.open(hdrs)
        resp = dict(c.response(sid).headers)
        assert resp[":status"] == "200", resp           # the upstream's 101
        assert "upgrade" not in resp and "connection" not in resp, resp
        assert resp.get("sec-websocket-accept") == ws_accept_key(key), resp
        rd = _StreamReader(c, sid)
        frames = [(TEXT, b"hello"), (BINARY, os.urandom(300)), (TEXT, "żółw ☃".encode()),
                  (BINARY, os.urandom(70000))]
        for op, payload in frames:
            c.send(sid, ws_encode(op, payload))
            fin, rop, rpayload = ws_read_frame(rd)
            assert fin and rop == op and rpayload == payload
        # several frames in one DATA frame come back in order
        c.send(sid, b"".join(ws_encode(TEXT, f"m{i}".encode()) for i in range(10)))
        for i in range(10):
            assert ws_read_frame(rd)[2] == f"m{i}".encode()
        # an ordinary request on another stream of the same connection
        h, body = c.request("/plain")
        assert h[":status"] == "200" and json.loads(body)["path"] == "/plain"
        c.send(sid, ws_encode(PING, b"there?"))
        assert ws_read_frame(rd)[1:] == (PONG, b"there?")
        r.wait_stat("http.ingress_http.downstream_cx_upgrades_active", lambda v: v == 1)
        # the client closes: close frame and END_STREAM; the server echoes
        # the close and hangs up, which ends the stream towards the client
        c.send(sid, ws_encode(CLOSE, b"\x03\xe8bye"), end=True)
        fin, op, payload = ws_read_frame(rd)
        assert op == CLOSE and payload == b"\x03\xe8bye"
        c.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                   what="END_STREAM after the close")
        assert not c.find(lambda e: isinstance(e, h2.events.StreamReset))

    ws = [q for q in upstream.requests if q.get("websocket")]
    assert len(ws) == 1
    q = ws[0]
    # sent upstream as the HTTP/1.1 upgrade it stands for
    assert q["method"] == "GET" and q["path"] == "/chat?room=1", q
    assert q["headers"].get("upgrade", "").lower() == "websocket"
    assert "upgrade" in q["headers"].get("connection", "").lower()
    assert q["headers"].get("sec-websocket-key") == key
    assert q["headers"].get("host") == "ws.test"
    assert upstream.ws_frames == 4 + 10 + 2
    r.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: v == 1)
    _stat_settles(r, "http.ingress_http.downstream_cx_upgrades_active", 0)


def test_websocket_over_h2_upstream_closes_first(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, upstream.port))
    with H2(lport) as c:
        _, hdrs = _ws_connect_headers()
        sid = c.open(hdrs)
        assert dict(c.response(sid).headers)[":status"] == "200"
        c.send(sid, ws_encode(TEXT, b"x"))
        assert ws_read_frame(_StreamReader(c, sid))[2] == b"x"
        upstream.stop()          # hangs up every upstream connection
        c.wait_for(lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                   and e.stream_id == sid, what="the tunnel ending")
        # the connection itself goes on
        c.conn.ping(b"12345678")
        c.flush()
        c.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived), what="PING ACK")
    _stat_settles(r, "http.ingress_http.downstream_cx_upgrades_active", 0)


def test_websocket_over_h2_client_reset_closes_upstream(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, upstream.port))
    with H2(lport) as c:
        _, hdrs = _ws_connect_headers()
        sid = c.open(hdrs)
        assert dict(c.response(sid).headers)[":status"] == "200"
        c.send(sid, ws_encode(TEXT, b"x"))
        assert ws_read_frame(_StreamReader(c, sid))[2] == b"x"
        r.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 1)
        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        # RST_STREAM closes the upstream connection; the h2 connection stays
        _stat_settles(r, "cluster.backend.upstream_cx_active", 0)
        _stat_settles(r, "http.ingress_http.downstream_cx_upgrades_active", 0)
        h, body = c.request("/after")
        assert h[":status"] == "200"


# ---------------------------------------------------------------------------
# plain CONNECT


def test_connect_terminated_tunnel_and_half_close(remora, echo_server, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, echo_server.port))
    with H2(lport) as c:
        sid = c.open(_plain_connect_headers(f"127.0.0.1:{echo_server.port}"))
        resp = dict(c.response(sid).headers)
        assert resp[":status"] == "200", resp
        assert "content-length" not in resp
        for msg in (b"ping", os.urandom(100000), b"\x00\r\n\r\nGET / HTTP/1.1\r\n\r\n"):
            c.send(sid, msg)
            assert c.read(sid, len(msg)) == msg
        # half close: END_STREAM reaches the echo server as FIN; bytes sent
        # with it still come back, then the server's FIN ends the stream
        c.send(sid, b"last words", end=True)
        assert c.read(sid, 10) == b"last words"
        c.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                   what="END_STREAM from the echo server's FIN")
        assert not c.find(lambda e: isinstance(e, h2.events.StreamReset))
    wait_until(lambda: echo_server.closed_connections >= 1, 10, what="upstream closed")
    r.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: v == 1)
    _stat_settles(r, "http.ingress_http.downstream_cx_upgrades_active", 0)


def test_connect_upstream_reset_is_connect_error(remora, ports):
    """RFC 9113 8.5: a tunnel whose TCP connection is reset is reset with
    CONNECT_ERROR; the HTTP/2 connection goes on."""
    import struct
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    ls.settimeout(30)

    def resetter():              # reads one message, then closes with RST
        try:
            s, _ = ls.accept()
            s.settimeout(30)
            s.recv(100)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass

    t = threading.Thread(target=resetter, daemon=True)
    t.start()
    admin, lport = ports.get(), ports.get()
    remora(_config(admin, lport, ls.getsockname()[1]))
    try:
        with H2(lport) as c:
            sid = c.open(_plain_connect_headers("reset.test:1"))
            assert dict(c.response(sid).headers)[":status"] == "200"
            c.send(sid, b"hello")
            e = c.wait_for(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid,
                           what="RST_STREAM")
            assert e.error_code == h2.errors.ErrorCodes.CONNECT_ERROR, e
            c.conn.ping(b"after-rs")
            c.flush()
            c.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived), what="PING ACK")
    finally:
        ls.close()
        t.join(timeout=10)


def test_connect_forwarded_to_http1_upstream(remora, upstream, ports):
    """Without connect_config the CONNECT goes to the HTTP/1.1 upstream; its
    2xx opens the tunnel (here the harness upstream answers 200 with a JSON
    body and then reads the next request from the same connection)."""
    admin, lport = ports.get(), ports.get()
    remora(_config(admin, lport, upstream.port, connect_config=False))
    with H2(lport) as c:
        sid = c.open(_plain_connect_headers("example.com:443"))
        resp = dict(c.response(sid).headers)
        assert resp[":status"] == "200", resp
        assert "content-length" not in resp
        c.send(sid, b"GET /inside HTTP/1.1\r\nhost: inner\r\n\r\n")
        deadline = time.monotonic() + 10
        while b'"/inside"' not in c.data.get(sid, b""):
            assert time.monotonic() < deadline, c.data.get(sid)
            c.pump(0.2)
        got = bytes(c.data[sid])
        # the body of the CONNECT's 200 (tunnel bytes now), then the answer
        # to the request sent through the tunnel
        assert got.index(b'"CONNECT"') < got.index(b"HTTP/1.1 200") < got.index(b'"/inside"')
    assert [(q["method"], q["path"]) for q in upstream.requests] == \
        [("CONNECT", "example.com:443"), ("GET", "/inside")]


@pytest.fixture
def slow_echo():
    """A TCP echo server with 64 KiB socket buffers (no autotuning): it holds
    little, so the proxy's flow control is what bounds the tunnel."""
    s = TcpEchoServer(bufsize=65536).start()
    yield s
    s.stop()


def test_connect_tunnel_flow_control_slow_reader(remora, slow_echo, ports):
    """A client that does not read stops the echo upstream (the proxy stops
    reading it), which stops taking bytes, which closes the client's send
    window: the client cannot push the whole transfer and the proxy's memory
    stays bounded.  Once it reads, everything arrives intact."""
    admin, lport = ports.get(), ports.get()
    total = 64 * 1024 * 1024
    r = remora(_config(admin, lport, slow_echo.port,
                       h2opts={"initial_stream_window_size": 65535,
                               "initial_connection_window_size": 65535},
                       listener_extra={"per_connection_buffer_limit_bytes": 65536},
                       cluster_extra={"per_connection_buffer_limit_bytes": 65536}))
    data = pattern_bytes(total)
    with H2(lport) as c:
        sid = c.open(_plain_connect_headers(f"127.0.0.1:{slow_echo.port}"))
        assert dict(c.response(sid).headers)[":status"] == "200"
        rss0 = r.rss_kb()
        c.ack = False            # stop opening our windows: we "do not read"
        sent, last_progress = 0, time.monotonic()
        deadline = time.monotonic() + 60
        with RssSampler(r) as rss:
            # push until no byte could be sent for 2 s (the windows stay closed)
            while sent < total and time.monotonic() - last_progress < 2.0:
                assert time.monotonic() < deadline
                win = min(c.conn.local_flow_control_window(sid), 16384, total - sent)
                if win > 0:
                    c.conn.send_data(sid, data[sent:sent + win])
                    c.flush()
                    sent += win
                    last_progress = time.monotonic()
                else:
                    c.pump(0.1)
        assert sent < total // 2, f"client pushed {sent} of {total} bytes without reading"
        assert rss.peak_kb - rss0 < 32 * 1024, (rss0, rss.peak_kb, sent)
        # now read: the rest goes through, the echo is intact
        c.ack_all()
        h = hashlib.sha256()
        got = 0
        deadline = time.monotonic() + 120
        while got < total:
            assert time.monotonic() < deadline, f"echoed {got} of {total}"
            if sent < total:
                win = min(c.conn.local_flow_control_window(sid), 65536, total - sent)
                while win > 0:
                    n = min(win, 16384)
                    c.conn.send_data(sid, data[sent:sent + n], end_stream=sent + n == total)
                    sent += n
                    win -= n
                c.flush()
            c.pump(0.05)
            buf = c.data.get(sid)
            if buf:
                h.update(buf)
                got += len(buf)
                buf.clear()
        assert got == total
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
        c.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                   what="END_STREAM after the echo")


# ---------------------------------------------------------------------------
# refusals and malformed requests


def test_allow_connect_false_refuses(remora, upstream, echo_server, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, echo_server.port, allow_connect=False))
    with H2(lport) as c:
        c.wait_settings()
        assert not c.remote_settings.get(ECP), c.remote_settings
        # plain CONNECT: 403, as before allow_connect existed
        sid = c.open(_plain_connect_headers(f"127.0.0.1:{echo_server.port}"))
        e = c.response(sid)
        assert isinstance(e, h2.events.ResponseReceived) and dict(e.headers)[":status"] == "403"
        # extended CONNECT without SETTINGS_ENABLE_CONNECT_PROTOCOL: the
        # stream is reset (PROTOCOL_ERROR), the connection goes on
        _, hdrs = _ws_connect_headers()
        sid = c.open(hdrs)
        e = c.response(sid)
        assert isinstance(e, h2.events.StreamReset), e
        assert e.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        c.conn.ping(b"abcdefgh")
        c.flush()
        c.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived), what="PING ACK")
    assert echo_server.connections == 0
    r.wait_stat("http2.rx_messaging_error", lambda v: v >= 1)
    assert r.stat("http.ingress_http.downstream_cx_upgrades_total") == 0


def test_upgrade_not_in_upgrade_configs_is_403(remora, upstream, echo_server, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, echo_server.port, upgrades=("websocket",)))
    with H2(lport) as c:
        _, hdrs = _ws_connect_headers(protocol="something-else")
        e = c.response(c.open(hdrs))
        assert isinstance(e, h2.events.ResponseReceived) and dict(e.headers)[":status"] == "403"
        # CONNECT is not listed either
        e = c.response(c.open(_plain_connect_headers(f"127.0.0.1:{echo_server.port}")))
        assert isinstance(e, h2.events.ResponseReceived) and dict(e.headers)[":status"] == "403"
    assert echo_server.connections == 0
    assert not any(q.get("websocket") for q in upstream.requests)
    r.wait_stat("http.ingress_http.downstream_rq_4xx", lambda v: v == 2)
    assert r.stat("http.ingress_http.downstream_cx_upgrades_total") == 0


@pytest.mark.parametrize("drop", [":path", ":scheme", ":authority"])
def test_malformed_extended_connect_is_reset(remora, upstream, ports, drop):
    admin, lport = ports.get(), ports.get()
    r = remora(_config(admin, lport, upstream.port))
    with H2(lport) as c:
        c.wait_settings()
        _, hdrs = _ws_connect_headers()
        sid = c.open([h for h in hdrs if h[0] != drop])
        e = c.response(sid)
        assert isinstance(e, h2.events.StreamReset), e
        assert e.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        # plain CONNECT must not carry :path
        sid = c.open(_plain_connect_headers("example.com:443") + [(":path", "/")])
        e = c.response(sid)
        assert isinstance(e, h2.events.StreamReset), e
        h, body = c.request("/still-fine")
        assert h[":status"] == "200"
    r.wait_stat("http2.rx_messaging_error", lambda v: v >= 2)
    assert not any(q.get("websocket") for q in upstream.requests)
