"""HTTP/2 flood limits on UPSTREAM connections (issue 4: the cluster's
http2_protocol_options max_outbound_frames, max_outbound_control_frames,
max_consecutive_inbound_frames_with_empty_payload,
max_inbound_priority_frames_per_stream,
max_inbound_window_update_frames_per_data_frame_sent, and nghttp2's
CONTINUATION bound).

The upstream here is a raw HTTP/2 server (frames written as the wire
carries them, header blocks HPACK-encoded with python3-hpack) that
misbehaves in one way per connection, chosen when the connection is
accepted.  For each flood: cluster.backend.http2.<kind> is 1 and no other
flood counter moved, the client gets a 503 (the stream ended as a
connection reset: response flag UC), the upstream received GOAWAY
ENHANCE_YOUR_CALM, and the next request, on a fresh connection to the
same upstream now behaving, gets a 200.  A well-behaved upstream streaming
10,000 messages (and acknowledging every DATA frame it receives) is never
cut."""

import re
import socket
import struct
import threading

import hpack
import pytest

from harness import bootstrap, curl, http_listener, route, static_cluster, wait_until

HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTS_TYPE = "type.googleapis.com/" + HTTP_OPTS

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ENHANCE_YOUR_CALM = 11

FLOODS = ("outbound_flood", "outbound_control_flood", "inbound_empty_frames_flood",
          "inbound_priority_frames_flood", "inbound_window_update_frames_flood",
          "inbound_continuation_frames_flood")


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


class _Conn:
    """One accepted connection: reads Remora's frames (while `reading`),
    answers each request per its mode."""

    def __init__(self, srv, sock, mode):
        self.srv, self.sock, self.mode = srv, sock, mode
        self.enc = hpack.Encoder()
        self.reading = True
        self.goaway_code = None
        self.data_frames = 0
        self.wlock = threading.Lock()
        self.closed = threading.Event()

    def send(self, data):
        try:
            with self.wlock:
                self.sock.sendall(data)
            return True
        except OSError:
            return False

    def head(self, sid, end=False, flags=END_HEADERS):
        return frame(HEADERS, flags | (END_STREAM if end else 0), sid,
                     self.enc.encode([(":status", "200"), ("content-type", "text/plain")]))

    def run(self):
        buf = b""
        settings = b""
        if self.srv.max_streams is not None:
            settings += struct.pack(">HI", 3, self.srv.max_streams)
        if self.mode == "noread_big_window":
            # a window that lets Remora send as much as it likes
            settings += struct.pack(">HI", 4, 2 ** 31 - 1)
        self.send(frame(SETTINGS, 0, 0, settings) +
                  (frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2 ** 31 - 1 - 65535))
                   if self.mode == "noread_big_window" else b""))
        preface_seen = False
        try:
            while True:
                if not self.reading:
                    # a peer that stops reading: wait for the close
                    if self.closed.wait(0.05):
                        return
                    continue
                try:
                    d = self.sock.recv(65536)
                except OSError:
                    d = b""
                if not d:
                    return
                buf += d
                if not preface_seen:
                    if len(buf) < len(PREFACE):
                        continue
                    assert buf.startswith(PREFACE)
                    buf = buf[len(PREFACE):]
                    preface_seen = True
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7fffffff
                    payload = buf[9:9 + n]
                    buf = buf[9 + n:]
                    self.on_frame(ftype, flags, sid, payload)
                    if not self.reading:
                        break
        finally:
            self.closed.set()
            try:
                self.sock.close()
            except OSError:
                pass

    def on_frame(self, ftype, flags, sid, payload):
        if ftype == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            self.goaway_code = struct.unpack(">I", payload[4:8])[0]
            self.srv.goaways.append(self.goaway_code)
        elif ftype == DATA:
            self.data_frames += 1
            if payload:
                # acknowledge every DATA frame, stream and connection (as many
                # clients and servers do): legitimate WINDOW_UPDATEs
                inc = struct.pack(">I", len(payload))
                self.send(frame(WINDOW_UPDATE, 0, sid, inc) + frame(WINDOW_UPDATE, 0, 0, inc))
            if flags & END_STREAM and self.mode == "good":
                self.answer_good(sid)
        elif ftype == HEADERS:
            self.srv.requests += 1
            if self.mode == "good":
                if flags & END_STREAM:
                    self.answer_good(sid)
            elif self.mode == "hold":
                def later():
                    self.srv.release.wait(60)
                    self.answer_good(sid)
                threading.Thread(target=later, daemon=True).start()
            else:
                self.misbehave(sid)

    def answer_good(self, sid):
        # 10,000 streamed messages, one DATA frame each, a PING now and then
        out = [self.head(sid)]
        for i in range(self.srv.messages):
            out.append(frame(DATA, 0, sid, b"message %05d\n" % i))
            if i % 1000 == 999:
                out.append(frame(PING, 0, 0, b"%08d" % i))
        out.append(frame(DATA, END_STREAM, sid))
        self.send(b"".join(out))

    def misbehave(self, sid):
        m = self.mode
        if m == "empty_data":
            self.send(self.head(sid) + frame(DATA, 0, sid) * 1000)
        elif m == "priority":
            self.send(frame(PRIORITY, 0, sid, struct.pack(">IB", 0, 15)) * 100_000)
        elif m == "window_update":
            self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) * 10_000)
        elif m == "continuation":
            blk = self.enc.encode([(":status", "200")])
            cont = frame(CONTINUATION, 0, sid, self.enc.encode([("x-flood", "a" * 100)]))
            self.send(frame(HEADERS, 0, sid, blk) + cont * 100)
        elif m == "ping_noread":
            self.reading = False
            threading.Thread(target=self.ping_flood, daemon=True).start()
        elif m == "noread_big_window":
            self.reading = False   # the request body piles up at Remora

    def ping_flood(self):
        """PINGs in batches from a peer that never reads the ACKs."""
        batch = frame(PING, 0, 0, b"12345678") * 500
        sent = 0
        while not self.closed.is_set() and sent < 400_000:
            if not self.send(batch):
                break
            sent += 500
        self.srv.pings_sent = sent
        print(f"\n[ping flood] {sent} PINGs sent")


class FloodUpstream:
    """modes: one mode per accepted connection, in order; "good" once the
    list is used up.  rcvbuf: SO_RCVBUF of the accepted sockets (a small
    one makes Remora's output pile up at once when we stop reading)."""

    def __init__(self, modes, rcvbuf=4096, messages=10_000, max_streams=None):
        self.modes = list(modes)
        self.max_streams = max_streams        # SETTINGS_MAX_CONCURRENT_STREAMS, None: unlimited
        self.release = threading.Event()      # answers the "hold" connection's requests
        self.messages = messages
        self.requests = 0
        self.accepted = 0
        self.goaways = []
        self.pings_sent = 0
        self.conns = []
        self.lock = threading.Lock()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                mode = self.modes.pop(0) if self.modes else "good"
                self.accepted += 1
                c = _Conn(self, s, mode)
                self.conns.append(c)
            threading.Thread(target=c.run, daemon=True).start()

    def stop(self):
        self.stopping = True
        try:
            self.ls.close()
        except OSError:
            pass
        self.release.set()
        for c in list(self.conns):
            c.closed.set()
            try:
                c.sock.close()
            except OSError:
                pass


@pytest.fixture
def floodup():
    servers = []

    def make(*modes, **kw):
        s = FloodUpstream(modes, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def _start(remora, ports, up, h2=None, route_extra=None, concurrency=1):
    admin, lport = ports.get(), ports.get()
    opts = {HTTP_OPTS: {"@type": HTTP_OPTS_TYPE,
                        "explicit_http_config": {"http2_protocol_options": h2 or {}}}}
    cl = static_cluster("backend", up.port, typed_extension_protocol_options=opts)
    lst = http_listener(lport, [route({"prefix": "/"}, "backend", **(route_extra or {}))])
    r = remora(bootstrap(admin, [lst], [cl]), concurrency=concurrency)
    return r, lport


def _floods(r):
    st = r.stats(filter="cluster.backend.http2.")
    return {k: st.get(f"cluster.backend.http2.{k}", 0) for k in FLOODS}


def _only(r, name):
    """Exactly one upstream connection was cut, for this reason."""
    r.wait_stat(f"cluster.backend.http2.{name}", lambda v: v >= 1, timeout=20)
    assert _floods(r) == {k: (1 if k == name else 0) for k in FLOODS}


def _cut(r, lport, up, name, res=None, url="/flood"):
    """A request on the flooding connection ends in a 503 (a connection
    reset: UC); the flood is counted once; the upstream got GOAWAY
    ENHANCE_YOUR_CALM; the next request opens a fresh connection to the
    (now well-behaved) upstream and gets its 10,000 messages."""
    if res is None:
        res = curl(f"http://127.0.0.1:{lport}{url}", timeout=60)
    assert res.status == 503, res
    assert b"upstream connect error or disconnect/reset before headers" in res.body, res
    _only(r, name)
    assert r.stat("cluster.backend.upstream_cx_protocol_error") == 1
    assert r.stat("cluster.backend.http2.goaway_sent") == 1
    for c in up.conns:
        c.reading = True   # a peer that stopped reading sees the GOAWAY or the close
    wait_until(lambda: ENHANCE_YOUR_CALM in up.goaways or up.conns[0].closed.is_set(), 20,
               what="the flooding connection closed")
    _good(r, lport, up)
    assert up.accepted == 2
    # the cut connection is gone (its close lingers at most 1 s)
    r.wait_stat("cluster.backend.upstream_cx_destroy", lambda v: v >= 1, timeout=20)
    assert _floods(r) == {k: (1 if k == name else 0) for k in FLOODS}
    return res


def _good(r, lport, up):
    res = curl(f"http://127.0.0.1:{lport}/good", timeout=60)
    assert res.status == 200, res
    lines = res.body.split(b"\n")
    assert len(lines) == up.messages + 1 and lines[-2] == b"message %05d" % (up.messages - 1)
    return res


def test_empty_data_flood(remora, ports, floodup):
    """Response HEADERS, then empty DATA frames without END_STREAM:
    max_consecutive_inbound_frames_with_empty_payload (1) -> the second in a
    row cuts the connection."""
    up = floodup("empty_data")
    r, lport = _start(remora, ports, up)
    res = curl(f"http://127.0.0.1:{lport}/flood", timeout=60)
    # the response head may already be on its way: a 200 cut short, or a 503
    if res.status == 200:
        assert res.rc != 0, res
        _only(r, "inbound_empty_frames_flood")
        _good(r, lport, up)
    else:
        _cut(r, lport, up, "inbound_empty_frames_flood", res=res)
    assert ENHANCE_YOUR_CALM in up.goaways


def test_other_connections_of_the_pool_are_unaffected(remora, ports, floodup):
    """The upstream allows one stream per connection, so a second request
    opens a second connection of the same pool.  The first connection
    holds a good response while the second is cut for a PRIORITY flood:
    the held response then completes on its connection, untouched."""
    up = floodup("hold", "priority", max_streams=1)
    r, lport = _start(remora, ports, up)
    results = {}

    def held():
        results["held"] = curl(f"http://127.0.0.1:{lport}/held", timeout=120)

    t = threading.Thread(target=held)
    t.start()
    try:
        wait_until(lambda: up.requests >= 1, 30, what="the held request at the upstream")
        res = curl(f"http://127.0.0.1:{lport}/flood", timeout=60)
        assert res.status == 503, res
        _only(r, "inbound_priority_frames_flood")
        r.wait_stat("cluster.backend.upstream_cx_destroy", lambda v: v == 1, timeout=20)
        assert up.accepted == 2
        assert not up.conns[0].closed.is_set()
    finally:
        up.release.set()
        t.join(120)
    res = results["held"]
    assert res.status == 200, res
    assert len(res.body.split(b"\n")) == up.messages + 1
    assert r.stat("cluster.backend.upstream_cx_destroy") == 1
    assert _floods(r)["inbound_priority_frames_flood"] == 1


def test_priority_flood(remora, ports, floodup):
    """max_inbound_priority_frames_per_stream (100): more than
    100 * (1 + streams we opened) PRIORITY frames cut the connection."""
    up = floodup("priority")
    r, lport = _start(remora, ports, up)
    _cut(r, lport, up, "inbound_priority_frames_flood")


def test_window_update_flood_is_retried(remora, ports, floodup):
    """max_inbound_window_update_frames_per_data_frame_sent (10): more than
    5 + 2 * (streams opened + 10 * DATA frames sent) WINDOW_UPDATEs cut the
    connection.  The stream ends as a connection reset, which retry_on
    reset retries: the retry, on a fresh connection, gets the 200."""
    up = floodup("window_update")
    r, lport = _start(remora, ports, up,
                      route_extra={"retry_policy": {"retry_on": "reset", "num_retries": 1}})
    _good(r, lport, up)  # the first connection: the flood, then the retry
    _only(r, "inbound_window_update_frames_flood")
    assert r.stat("cluster.backend.upstream_rq_retry") == 1
    assert up.accepted == 2
    assert ENHANCE_YOUR_CALM in up.goaways


def test_continuation_flood(remora, ports, floodup):
    """A response header block in more CONTINUATION frames than nghttp2
    accepts (8): http2.inbound_continuation_frames_flood."""
    up = floodup("continuation")
    r, lport = _start(remora, ports, up)
    _cut(r, lport, up, "inbound_continuation_frames_flood")


def test_ping_flood_without_reading(remora, ports, floodup):
    """An upstream that sends PINGs and never reads the ACKs: past
    max_outbound_control_frames (1000) ACKs waiting, GOAWAY and close
    (http2.outbound_control_flood); the worker keeps serving."""
    up = floodup("ping_noread")
    r, lport = _start(remora, ports, up)
    res = curl(f"http://127.0.0.1:{lport}/flood", timeout=60)
    _cut(r, lport, up, "outbound_control_flood", res=res)


def test_outbound_frames_flood(remora, ports, floodup, tmp_path):
    """An upstream that opens its windows wide and stops reading: the
    request body's DATA frames pile up unwritten past max_outbound_frames
    (20 here) -> http2.outbound_flood."""
    up = floodup("noread_big_window")
    r, lport = _start(remora, ports, up, h2={"max_outbound_frames": 20})
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * (8 << 20))
    res = curl(f"http://127.0.0.1:{lport}/upload", "--data-binary", f"@{body}", timeout=60)
    # curl may still be sending when the 503 comes: a 503, or a reset
    if res.status == 503:
        _cut(r, lport, up, "outbound_flood", res=res)
    else:
        assert res.rc != 0, res
        _only(r, "outbound_flood")
        _good(r, lport, up)


def test_heavy_legitimate_load_is_not_cut(remora, ports, floodup, tmp_path):
    """A well-behaved upstream streaming 10,000 messages per response (one
    DATA frame each, a PING every 1,000) and acknowledging every DATA frame
    it receives: 20 requests, 10 of them with a 1 MiB body, none cut."""
    up = floodup()
    r, lport = _start(remora, ports, up, concurrency=2)
    body = tmp_path / "body.bin"
    body.write_bytes(b"y" * (1 << 20))
    for i in range(20):
        args = ("--data-binary", f"@{body}") if i % 2 else ()
        res = curl(f"http://127.0.0.1:{lport}/good?i={i}", *args, timeout=60)
        assert res.status == 200, res
        assert len(res.body.split(b"\n")) == up.messages + 1
    assert _floods(r) == {k: 0 for k in FLOODS}
    assert r.stat("cluster.backend.upstream_cx_protocol_error") == 0
    assert r.stat("cluster.backend.upstream_rq_200") == 20
    assert sum(c.data_frames for c in up.conns) >= 10 * 64   # 1 MiB in <= 16 KiB frames


def test_flood_counters_in_prometheus(remora, ports, floodup):
    """Every upstream flood counter is exported with the cluster tag."""
    up = floodup("window_update")
    r, lport = _start(remora, ports, up)
    curl(f"http://127.0.0.1:{lport}/flood", timeout=60)
    _only(r, "inbound_window_update_frames_flood")
    st, _, body = r.admin_get("/stats/prometheus")
    assert st == 200
    text = body.decode()
    for k in FLOODS:
        m = re.search(rf'^envoy_cluster_http2_{k}\{{envoy_cluster_name="backend"\}} (\d+)$',
                      text, re.M)
        assert m, f"envoy_cluster_http2_{k} missing"
        assert int(m.group(1)) == (1 if k == "inbound_window_update_frames_flood" else 0)
