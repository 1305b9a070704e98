"""WebSocket upgrade through the HTTP connection manager (upgrade_configs),
frames echoed both ways by the upstream."""

import base64
import os

from harness import (HttpConn, simple_http_config, ws_accept_key, ws_encode, ws_read_frame)

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def _handshake(c, path="/ws"):
    key = base64.b64encode(os.urandom(16)).decode()
    c.send((f"GET {path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    version, status, reason, headers = c.read_head()
    return key, status, {k.lower(): v for k, v in headers}


def test_websocket_echo(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port,
                                  upgrade_configs=[{"upgrade_type": "websocket"}]))
    with HttpConn(lport, timeout=10) as c:
        key, status, h = _handshake(c)
        assert status == 101, (status, h)
        assert h.get("upgrade", "").lower() == "websocket", h
        assert "upgrade" in h.get("connection", "").lower(), h
        assert h.get("sec-websocket-accept") == ws_accept_key(key), h

        frames = [(TEXT, b"hello"), (BINARY, os.urandom(300)), (TEXT, "żółw ☃".encode()),
                  (BINARY, os.urandom(70000))]       # 16-bit and 64-bit length forms
        for op, payload in frames:
            c.send(ws_encode(op, payload))
            fin, rop, rpayload = ws_read_frame(c)
            assert fin and rop == op
            assert rpayload == payload
        # several frames in one write come back in order
        c.send(b"".join(ws_encode(TEXT, f"m{i}".encode()) for i in range(10)))
        for i in range(10):
            assert ws_read_frame(c)[2] == f"m{i}".encode()
        c.send(ws_encode(PING, b"are you there"))
        fin, op, payload = ws_read_frame(c)
        assert (op, payload) == (PONG, b"are you there")
        c.send(ws_encode(CLOSE, b"\x03\xe8bye"))
        fin, op, payload = ws_read_frame(c)
        assert op == CLOSE and payload == b"\x03\xe8bye"
        assert c.wait_closed(5), "proxy kept the downstream open after the upstream closed"

    req = upstream.requests[0]
    assert req.get("websocket")
    assert req["headers"].get("upgrade", "").lower() == "websocket"
    assert "upgrade" in req["headers"].get("connection", "").lower()
    assert req["headers"].get("sec-websocket-key") == key
    assert upstream.ws_frames == 4 + 10 + 2
    r.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: v >= 1)


def test_websocket_upstream_closes_first(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    remora(simple_http_config(admin, lport, upstream.port,
                              upgrade_configs=[{"upgrade_type": "websocket"}]))
    with HttpConn(lport, timeout=10) as c:
        _, status, _ = _handshake(c)
        assert status == 101
        c.send(ws_encode(TEXT, b"x"))
        assert ws_read_frame(c)[2] == b"x"
        upstream.stop()          # hangs up every upstream connection
        assert c.wait_closed(5), "downstream not closed after the upstream went away"


def test_websocket_rejected_without_upgrade_config(remora, upstream, ports):
    # Envoy answers an upgrade the route/HCM does not allow with 403
    admin, lport = ports.get(), ports.get()
    remora(simple_http_config(admin, lport, upstream.port))
    with HttpConn(lport, timeout=10) as c:
        _, status, h = _handshake(c)
        assert status == 403, (status, h)
    assert not any(r.get("websocket") for r in upstream.requests)
