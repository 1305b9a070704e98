"""HTTP/2 flood limits (issue 4 section 6, Envoy's http2_protocol_options
max_outbound_frames, max_outbound_control_frames,
max_consecutive_inbound_frames_with_empty_payload,
max_inbound_priority_frames_per_stream,
max_inbound_window_update_frames_per_data_frame_sent), the CONTINUATION
limit and the runtime key http.max_requests_per_io_cycle.

Each flood is written raw (h2raw.py).  For each: the connection gets GOAWAY
ENHANCE_YOUR_CALM and is closed, its http2.*_flood counter is 1, the
proxy's memory stays bounded, and a well-behaved HTTP/2 client (curl
--http2-prior-knowledge) on another connection keeps getting 200s.  Each
inbound limit also has its control: a client just under the limit is
served."""

import re
import struct
import subprocess
import threading
import time

from advlib import GoodH2Client, check_unaffected, rss_kb
from h2raw import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, HEADERS,
                   NO_QUARANTINE, PING, PRIORITY, SETTINGS, WINDOW_UPDATE, Raw, frame)
from harness import bootstrap, http_listener, route, simple_http_config, static_cluster

FLOODS = ("outbound_flood", "outbound_control_flood", "inbound_empty_frames_flood",
          "inbound_priority_frames_flood", "inbound_window_update_frames_flood",
          "inbound_continuation_frames_flood")


def _start(remora, upstream, ports, concurrency=2, **hcm):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port, **hcm), concurrency=concurrency,
               asan_options_extra=NO_QUARANTINE)
    return r, lport


def _floods(r):
    st = r.stats()
    return {k: st.get(f"http2.{k}", 0) for k in FLOODS}


def _only(r, name):
    """Exactly one connection was cut, for this reason."""
    want = {k: (1 if k == name else 0) for k in FLOODS}
    r.wait_stat(f"http2.{name}", lambda v: v >= 1, timeout=10)
    assert _floods(r) == want


def _cut_calm(r, c, flood, last=None):
    """c was closed with GOAWAY(ENHANCE_YOUR_CALM) (last stream id last, when
    given) and flood is the only flood counter that moved."""
    assert c.closed.wait(10)
    assert c.goaway_code == ENHANCE_YOUR_CALM, c.goaway_code
    if last is not None:
        assert c.goaway_last == last, c.goaway_last
    c.close()
    _only(r, flood)


def _served(c, sid=1, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sid not in c.ended and not c.closed.is_set():
        time.sleep(0.02)
    return c.statuses.get(sid)


class _Attack:
    """Run an attack with the good HTTP/2 client sampled before and during."""

    def __init__(self, r, lport):
        self.r = r
        self.good = GoodH2Client(lport)
        self.before = self.good.sample(1.0)
        self.rss0 = rss_kb(r.pid)
        self.good.start()

    def done(self, what, rss_bound_kb=64 * 1024):
        during = self.good.stop()
        grown = rss_kb(self.r.pid) - self.rss0
        print(f"\n[{what}] RSS grew {grown} KiB")
        assert grown < rss_bound_kb, f"{what}: RSS grew {grown} KiB"
        check_unaffected(self.before, during, self.good.errors, what)


def _outbound_flood(r, lport, unit, what, max_units=400_000):
    """Send `unit` (some frames the proxy must answer) in batches from a
    client that does not read, until the proxy counts a flood; then read
    again and return the connection."""
    c = Raw(lport, rcvbuf=4096)
    c.read = False
    stop = threading.Event()
    sent = [0]

    def flood():
        batch = unit * 500
        while not stop.is_set() and sent[0] < max_units:
            if not c.send(batch):
                return
            sent[0] += 500

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        r.wait_stat(f"http2.{what}", lambda v: v >= 1, timeout=30)
    finally:
        stop.set()
        c.read = True
    assert c.closed.wait(15), f"{what}: the flooding connection was not closed"
    t.join(15)
    print(f"\n[{what}] {sent[0]} frames sent before the cut; "
          f"GOAWAY {c.goaway_code}, frames read {c.frames}")
    return c, sent[0]


def test_ping_flood_without_reading(remora, upstream, ports):
    """PINGs from a client that never reads the ACKs: once more than
    max_outbound_control_frames (1000) control frames wait for the socket,
    GOAWAY ENHANCE_YOUR_CALM and close; http2.outbound_control_flood."""
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    c, sent = _outbound_flood(r, lport, frame(PING, 0, 0, b"12345678"), "outbound_control_flood")
    assert c.goaway_code == ENHANCE_YOUR_CALM, c.goaway_code
    # the GOAWAY comes after whole frames: every ACK before it parsed
    assert c.frames.get(PING, 0) < sent
    c.close()
    _only(r, "outbound_control_flood")
    a.done("PING flood")


def test_settings_flood_without_reading(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    c, _ = _outbound_flood(r, lport, frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100)),
                           "outbound_control_flood")
    assert c.goaway_code == ENHANCE_YOUR_CALM, c.goaway_code
    c.close()
    _only(r, "outbound_control_flood")
    a.done("SETTINGS flood")


def test_reset_flood_without_reading(remora, upstream, ports):
    """Invalid requests the proxy answers with RST_STREAM (a header name in
    upper case: PROTOCOL_ERROR), from a client that does not read: the
    RST_STREAMs count as control frames."""
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    c = Raw(lport, rcvbuf=4096)
    c.read = False
    stop = threading.Event()

    def flood():
        sid = 1
        while not stop.is_set() and sid < 2 ** 31 - 1000:
            batch = []
            for _ in range(200):
                batch.append(frame(HEADERS, END_STREAM | END_HEADERS, sid,
                                   c.headers_block("/bad", extra=[("X-Bad", "1")])))
                sid += 2
            if not c.send(b"".join(batch)):
                return

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        r.wait_stat("http2.outbound_control_flood", lambda v: v >= 1, timeout=30)
    finally:
        stop.set()
        c.read = True
    assert c.closed.wait(15)
    t.join(15)
    assert c.goaway_code == ENHANCE_YOUR_CALM, c.goaway_code
    c.close()
    _only(r, "outbound_control_flood")
    assert not [q for q in upstream.requests if q["path"] == "/bad"]
    a.done("RST_STREAM flood")


def test_outbound_frames_flood(remora, upstream, ports):
    """Many requests from a client that does not read the responses:
    HEADERS and DATA frames pile up past max_outbound_frames (set to 200
    here) -> http2.outbound_flood.  Direct responses keep the upstream out
    of it."""
    admin, lport = ports.get(), ports.get()
    body = "x" * 2048
    rc_routes = [{"match": {"prefix": "/"},
                  "direct_response": {"status": 200, "body": {"inline_string": body}}}]
    r = remora(bootstrap(admin, [http_listener(lport, rc_routes,
                                               http2_protocol_options={"max_outbound_frames": 200})],
                         [static_cluster("backend", upstream.port)]),
               concurrency=2, asan_options_extra=NO_QUARANTINE)
    a = _Attack(r, lport)
    c = Raw(lport, rcvbuf=4096, initial_window=1 << 20)
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
    c.read = False
    sid = 1
    while r.stat("http2.outbound_flood") == 0 and sid < 200_000 and not c.closed.is_set():
        batch = []
        for _ in range(100):
            batch.append(frame(HEADERS, END_STREAM | END_HEADERS, sid, c.headers_block()))
            sid += 2
        if not c.send(b"".join(batch)):
            break
    c.read = True
    assert c.closed.wait(15)
    assert c.goaway_code == ENHANCE_YOUR_CALM, c.goaway_code
    c.close()
    _only(r, "outbound_flood")
    a.done("outbound frame flood")


def test_empty_data_frames(remora, upstream, ports):
    """max_consecutive_inbound_frames_with_empty_payload (default 1): one
    empty DATA frame is tolerated, a second in a row is a flood."""
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    ok = Raw(lport)
    ok.send(frame(HEADERS, END_HEADERS, 1, ok.headers_block(method="POST")) +
            frame(DATA, 0, 1) + frame(DATA, END_STREAM, 1, b"x"))
    assert _served(ok) == "200"
    ok.close()
    c = Raw(lport)
    c.send(frame(HEADERS, END_HEADERS, 1, c.headers_block(method="POST")) + frame(DATA, 0, 1) * 1000)
    _cut_calm(r, c, "inbound_empty_frames_flood", last=1)
    a.done("empty DATA flood")


def test_empty_headers_and_continuation_frames(remora, upstream, ports):
    """The same rule for HEADERS/CONTINUATION with an empty payload."""
    r, lport = _start(remora, upstream, ports)
    c = Raw(lport)
    c.send(frame(HEADERS, 0, 1) + frame(CONTINUATION, 0, 1) * 100)
    _cut_calm(r, c, "inbound_empty_frames_flood")


def test_empty_frame_limit_is_configurable(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports, http2_protocol_options={
        "max_consecutive_inbound_frames_with_empty_payload": 5})
    ok = Raw(lport)
    ok.send(frame(HEADERS, END_HEADERS, 1, ok.headers_block(method="POST")) +
            frame(DATA, 0, 1) * 5 + frame(DATA, END_STREAM, 1, b"x"))
    assert _served(ok) == "200"
    ok.send(frame(HEADERS, END_HEADERS, 3, ok.headers_block(method="POST")) + frame(DATA, 0, 3) * 6)
    _cut_calm(r, ok, "inbound_empty_frames_flood")


def test_priority_flood(remora, upstream, ports):
    """max_inbound_priority_frames_per_stream (100): more than
    100 * (1 + opened streams) PRIORITY frames close the connection."""
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    prio = frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15))
    ok = Raw(lport)
    ok.send(prio * 100 + frame(HEADERS, END_STREAM | END_HEADERS, 1, ok.headers_block()))
    assert _served(ok) == "200"
    # one stream opened: 200 in all are allowed, the 201st is not
    ok.send(prio * 100)
    time.sleep(0.3)
    assert not ok.closed.is_set()
    ok.send(prio)
    assert ok.closed.wait(10)
    assert ok.goaway_code == ENHANCE_YOUR_CALM
    ok.close()
    c = Raw(lport)
    c.send(prio * 100_000)
    assert c.closed.wait(10)
    assert c.goaway_code == ENHANCE_YOUR_CALM
    c.close()
    r.wait_stat("http2.inbound_priority_frames_flood", lambda v: v == 2)
    a.done("PRIORITY flood")


def test_window_update_flood(remora, upstream, ports):
    """max_inbound_window_update_frames_per_data_frame_sent (10): more than
    5 + 2 * (opened streams + 10 * DATA frames sent) WINDOW_UPDATEs close
    the connection."""
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    wu = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))
    ok = Raw(lport)
    ok.send(wu * 5)                                       # at the limit: still fine
    ok.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, ok.headers_block()))
    assert _served(ok) == "200"
    ok.close()
    c = Raw(lport)
    c.send(wu * 100_000)
    _cut_calm(r, c, "inbound_window_update_frames_flood")
    a.done("WINDOW_UPDATE flood")


def test_window_updates_of_a_large_download_are_fine(remora, upstream, ports):
    """A client acknowledging every DATA frame of a 4 MiB response (stream
    and connection WINDOW_UPDATE each, as most clients do) stays far below
    the WINDOW_UPDATE limit: nghttp with a 64 KiB window and curl."""
    r, lport = _start(remora, upstream, ports)
    url = f"http://127.0.0.1:{lport}/?bytes=4194304"
    p = subprocess.run(["nghttp", "-n", "-s", url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                        "%{http_code} %{size_download}", url],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout == "200 4194304", p.stdout
    assert _floods(r) == {k: 0 for k in FLOODS}


def test_continuation_flood_counted(remora, upstream, ports):
    """A header block in more CONTINUATION frames than nghttp2 accepts (8,
    or what max_request_headers_kb needs in 16 KiB frames): GOAWAY
    ENHANCE_YOUR_CALM and http2.inbound_continuation_frames_flood (a
    Remora counter; Envoy has none for it).  A block in 3 CONTINUATIONs is
    served."""
    r, lport = _start(remora, upstream, ports)
    a = _Attack(r, lport)
    ok = Raw(lport)
    blk = ok.headers_block(extra=[("x-a", "1" * 100)])
    q = len(blk) // 4
    ok.send(frame(HEADERS, END_STREAM, 1, blk[:q]) + frame(CONTINUATION, 0, 1, blk[q:2 * q]) +
            frame(CONTINUATION, 0, 1, blk[2 * q:3 * q]) +
            frame(CONTINUATION, END_HEADERS, 1, blk[3 * q:]))
    assert _served(ok) == "200"
    ok.close()
    c = Raw(lport)
    c.send(frame(HEADERS, END_STREAM, 1, c.headers_block()))
    chunk = frame(CONTINUATION, 0, 1, c.enc.encode([("x-flood", "a" * 100)]))
    total = 0
    while total < 1000 and not c.closed.is_set():
        if not c.send(chunk * 10):
            break
        total += 10
    _cut_calm(r, c, "inbound_continuation_frames_flood")
    a.done("CONTINUATION flood")


def test_flood_counters_in_prometheus(remora, upstream, ports):
    """Every flood counter is exported (also at 0) and promtool accepts it."""
    r, lport = _start(remora, upstream, ports)
    c = Raw(lport)
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) * 10)
    assert c.closed.wait(10)
    c.close()
    r.wait_stat("http2.inbound_window_update_frames_flood", lambda v: v == 1)
    st, _, body = r.admin_get("/stats/prometheus")
    assert st == 200
    text = body.decode()
    for k in FLOODS + ("requests_deferred",):
        m = re.search(rf"^envoy_http2_{k}(?:\{{\}})? (\d+)$", text, re.M)
        assert m, f"envoy_http2_{k} missing"
        assert int(m.group(1)) == (1 if k == "inbound_window_update_frames_flood" else 0)
    p = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode in (0, 3), out
    for line in out.splitlines():
        assert re.search(r"no help text|should have \"_total\" suffix|use base unit|"
                         r"should not have \"_(total|sum|count|bucket)\" suffix|"
                         r"should not contain abbreviated units", line), line


# ---- http.max_requests_per_io_cycle ---------------------------------------------------


def _io_cycle_config(admin, lport, upstream_port, limit):
    cfg = simple_http_config(admin, lport, upstream_port)
    if limit is not None:
        cfg["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {
            "http": {"max_requests_per_io_cycle": limit}}}]}
    return cfg


def _pipeline(lport, n, path):
    """n requests in one write, from a client whose windows fit every response."""
    c = Raw(lport, initial_window=1 << 24)
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)) + b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, c.headers_block(path))
                    for i in range(n)))
    return c


def _wait_all(c, n, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(c.ended) < n and not c.closed.is_set():
        time.sleep(0.02)


def test_max_requests_per_io_cycle(remora, upstream, ports):
    """Runtime key http.max_requests_per_io_cycle = 1 (in a static layer, as
    Envoy reads it): 100 streams pipelined in one write are all answered
    (the others wait for later loop iterations, not dropped), counted in
    http2.requests_deferred, and a second connection on the same worker is
    served while they are in flight."""
    admin, lport = ports.get(), ports.get()
    r = remora(_io_cycle_config(admin, lport, upstream.port, 1), concurrency=1)
    other = Raw(lport)
    c = _pipeline(lport, 100, "/?sleep_ms=300")
    t0 = time.monotonic()
    other.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, other.headers_block("/other")))
    assert _served(other) == "200"
    t_other = time.monotonic() - t0
    _wait_all(c, 100)
    t_all = time.monotonic() - t0
    assert len(c.ended) == 100, len(c.ended)
    assert set(c.statuses.values()) == {"200"}, set(c.statuses.values())
    assert not c.closed.is_set()
    print(f"\n[io cycle] other connection served after {t_other * 1000:.0f} ms, "
          f"100 pipelined after {t_all * 1000:.0f} ms")
    assert t_other < t_all
    deferred = r.stat("http2.requests_deferred")
    assert deferred >= 50, deferred          # one read starts 1, the rest wait
    assert r.stat("http.ingress_http.downstream_rq_2xx") == 101
    c.close()
    other.close()


def test_without_the_limit_nothing_waits(remora, upstream, ports):
    """Control: without the runtime key every pipelined request starts at once."""
    admin, lport = ports.get(), ports.get()
    r = remora(_io_cycle_config(admin, lport, upstream.port, None), concurrency=1)
    c = _pipeline(lport, 100, "/")
    _wait_all(c, 100)
    assert len(c.ended) == 100, (len(c.ended), c.closed.is_set(), c.goaway_code, _floods(r))
    assert r.stat("http2.requests_deferred") == 0
    c.close()
