"""Adversarial HTTP/2 clients (issue 10): rapid reset, CONTINUATION flood,
SETTINGS / PING floods without reading, HPACK bombs, a stream flood beyond
max_concurrent_streams, and a zero-window stall.  Frames are written raw
(only header blocks are HPACK-encoded with python3-hpack), so the attacks
are exactly what the wire carries.  For each: the offender is reset or
disconnected and counted, memory stays bounded, and a well-behaved client
on another connection keeps being served."""

import socket
import struct
import time

from advlib import GoodClient, check_unaffected, rss_kb
from h2raw import (CONTINUATION, END_HEADERS, END_STREAM, HEADERS, NO_QUARANTINE, PING,
                   RST_STREAM, SETTINGS, Raw, frame)
from harness import bootstrap, http_listener, route, simple_http_config, static_cluster


def _start(remora, upstream, ports, **hcm):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port, **hcm), concurrency=2,
               asan_options_extra=NO_QUARANTINE)
    return r, lport


def test_rapid_reset_closes_the_connection(remora, upstream, make_upstream, ports):
    """HEADERS + RST_STREAM in a loop (CVE-2023-44487): as Envoy, once
    premature resets reach half of 500 streams the connection is closed
    (GOAWAY ENHANCE_YOUR_CALM) and
    http.<prefix>.downstream_rq_too_many_premature_resets counts it.  The
    good client uses another upstream: the attack's streams each start an
    upstream request, and the single-threaded-per-connection test upstream
    they hit is not what is being measured; the proxy is."""
    other = make_upstream("other")
    admin, lport = ports.get(), ports.get()
    r = remora(bootstrap(admin, [http_listener(lport, [route({"prefix": "/good"}, "other"),
                                                       route({"prefix": "/"}, "backend")])],
                         [static_cluster("backend", upstream.port),
                          static_cluster("other", other.port)]),
               concurrency=2, asan_options_extra=NO_QUARANTINE)
    good = GoodClient(lport, path="/good")
    before = good.sample(1.0)
    good.start()
    c = Raw(lport)
    sent = 0
    batch = []
    for i in range(5000):
        sid = 2 * i + 1
        batch.append(frame(HEADERS, END_STREAM | END_HEADERS, sid, c.headers_block()) +
                     frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))   # CANCEL
        if len(batch) == 50:
            if not c.send(b"".join(batch)):
                break
            sent += 50
            batch = []
    assert c.closed.wait(10), "the rapid-reset connection was not closed"
    assert c.goaway_code == 11, c.goaway_code          # GOAWAY ENHANCE_YOUR_CALM
    c.close()
    during = good.stop()
    # what the client managed to write says little (the kernel buffers all
    # 5000 pairs): the proxy must have stopped processing them
    begun = r.stat("http.ingress_http.downstream_rq_http2_total")
    assert begun < 1000, f"the proxy processed {begun} of {sent} reset streams"
    assert r.wait_stat("http.ingress_http.downstream_rq_too_many_premature_resets",
                       lambda v: v == 1) == 1
    check_unaffected(before, during, good.errors, "rapid reset")


def test_legitimate_resets_do_not_trip_the_defence(remora, upstream, ports):
    """A client that resets a few long-running streams is not disconnected."""
    r, lport = _start(remora, upstream, ports)
    c = Raw(lport)
    for i in range(40):
        sid = 2 * i + 1
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, c.headers_block("/?sleep_ms=50")))
    time.sleep(1.5)
    for i in range(40, 60):
        sid = 2 * i + 1
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, c.headers_block()) +
               frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    time.sleep(1.0)
    assert not c.closed.is_set()
    c.close()
    assert r.stat("http.ingress_http.downstream_rq_too_many_premature_resets") == 0


def test_continuation_flood_is_cut(remora, upstream, ports):
    """HEADERS without END_HEADERS followed by endless CONTINUATION frames
    (CVE-2024-27316 class): the proxy must not buffer them without bound;
    the connection is closed (GOAWAY) long before 64 MiB were accepted."""
    r, lport = _start(remora, upstream, ports)
    good = GoodClient(lport)
    before = good.sample(1.0)
    rss0 = rss_kb(r.pid)
    good.start()
    c = Raw(lport)
    c.send(frame(HEADERS, 0, 1, c.headers_block()))
    chunk = frame(CONTINUATION, 0, 1, c.enc.encode([("x-flood", "a" * 8000)]))
    total = 0
    while total < 64 * 1024 * 1024 and not c.closed.is_set():
        if not c.send(chunk * 16):
            break
        total += len(chunk) * 16
    assert c.closed.wait(10), "CONTINUATION flood connection still open"
    assert c.goaway_code is not None, "no GOAWAY before the close"
    c.close()
    during = good.stop()
    assert total < 64 * 1024 * 1024
    assert rss_kb(r.pid) - rss0 < 64 * 1024
    check_unaffected(before, during, good.errors, "CONTINUATION flood")


def test_settings_and_ping_floods_without_reading(remora, upstream, ports):
    """Thousands of SETTINGS and PING frames from a client that never reads
    the ACKs: the queued ACKs are bounded (max_outbound_control_frames,
    test_h2_flood.py) and the connection is closed; the proxy's memory
    stays bounded."""
    r, lport = _start(remora, upstream, ports)
    good = GoodClient(lport)
    before = good.sample(1.0)
    rss0 = rss_kb(r.pid)
    good.start()
    for flood in (frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100)),
                  frame(PING, 0, 0, b"12345678")):
        c = Raw(lport)
        c.read = False                       # never read the ACKs
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        while sent < 200000:
            if not c.send(flood * 1000):
                break
            sent += 1000
        c.read = True
        assert c.closed.wait(10), f"flood of frame type {flood[3]} not cut"
        c.close()
    during = good.stop()
    assert rss_kb(r.pid) - rss0 < 64 * 1024
    assert r.stat("http2.outbound_control_flood") == 2
    check_unaffected(before, during, good.errors, "SETTINGS/PING flood")


def test_hpack_bomb_is_refused(remora, upstream, ports):
    """A header that decodes to far more than max_request_headers_kb
    (an indexed 4 KiB header repeated): the stream is reset (or the
    connection closed) and counted; nothing reaches the upstream."""
    r, lport = _start(remora, upstream, ports)
    c = Raw(lport)
    enc = c.enc
    first = enc.encode([(":method", "GET"), (":path", "/bomb"), (":scheme", "http"),
                        (":authority", "t"), ("x-bomb", "b" * 4000)])
    # every further reference to the dynamic-table entry is one byte on the wire
    block = first + enc.encode([("x-bomb", "b" * 4000)]) * 200
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (c.rst or c.closed.is_set()):
        time.sleep(0.05)
    assert c.rst or c.closed.is_set()
    c.close()
    assert not [q for q in upstream.requests if q["path"] == "/bomb"]
    st = r.stats()
    assert st.get("http2.header_overflow", 0) + \
        st.get("http.ingress_http.downstream_cx_protocol_error", 0) >= 1, \
        {k: v for k, v in st.items() if "http2" in k or "protocol" in k}


def test_stream_flood_beyond_max_concurrent_streams(remora, upstream, ports):
    """A client opening 1,000 slow streams on a listener that advertises
    max_concurrent_streams 100: streams beyond the limit are refused
    (RST_STREAM REFUSED_STREAM), at most 100 reach the upstream at once."""
    r, lport = _start(remora, upstream, ports,
                      http2_protocol_options={"max_concurrent_streams": 100})
    c = Raw(lport)
    time.sleep(0.3)                      # let the SETTINGS arrive (the flood ignores them)
    out = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1,
                         c.headers_block("/?sleep_ms=2000")) for i in range(1000))
    c.send(out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.rst < 900 and not c.closed.is_set():
        time.sleep(0.05)
    assert c.rst >= 900 or c.closed.is_set(), c.rst
    time.sleep(0.5)
    assert r.stat("cluster.backend.upstream_rq_active") <= 100
    c.close()


def test_zero_window_stall_is_bounded(remora, upstream, ports):
    """A client that advertises a zero stream window and asks for 8 MiB on
    20 streams: the proxy holds a bounded amount, other connections are
    served, and the stall ends when the client goes away."""
    r, lport = _start(remora, upstream, ports)
    good = GoodClient(lport)
    before = good.sample(1.0)
    rss0 = rss_kb(r.pid)
    c = Raw(lport, initial_window=0)
    good.start()
    for i in range(20):
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1,
                     c.headers_block("/?bytes=8388608")))
    time.sleep(3.0)
    grown = rss_kb(r.pid) - rss0
    during = good.stop()
    c.close()
    print(f"\n[zero window] RSS grew {grown} KiB for 20 stalled 8 MiB streams")
    assert grown < 96 * 1024
    check_unaffected(before, during, good.errors, "zero-window stall")
    r.wait_stat("cluster.backend.upstream_rq_active", lambda v: v == 0, timeout=10)
