"""Adversarial HTTP/1.1 clients (issue 10): slowloris, slow readers of large
responses, header floods, Transfer-Encoding obfuscation, absolute-form and
invalid targets, half-open connections.  For each: memory stays bounded,
the offender is answered or disconnected and counted, and a concurrent
well-behaved client keeps being served."""

import socket
import threading
import time

import pytest

from advlib import GoodClient, check_unaffected, rss_kb
from harness import HttpConn, simple_http_config


# RSS is compared in the sanitizer build: without ASan's quarantine, freed
# memory is reused, so RSS follows what the proxy really holds at its peak.
NO_QUARANTINE = "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"


def _start(remora, upstream, ports, **hcm):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port, **hcm), concurrency=2,
               asan_options_extra=NO_QUARANTINE)
    return r, lport


def test_slowloris_is_cut_by_request_headers_timeout(remora, upstream, ports):
    """100 connections trickling headers one byte every 200 ms: with
    request_headers_timeout 2 s each is answered 408 and closed, counted in
    downstream_rq_header_timeout; memory stays flat; a good client is served."""
    r, lport = _start(remora, upstream, ports, request_headers_timeout="2s")
    good = GoodClient(lport)
    before = good.sample(1.0)
    rss0 = rss_kb(r.pid)
    n = 100
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", lport), timeout=10)
        s.setblocking(False)
        socks.append(s)
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
    closed = [False] * n
    good.start()
    t0 = time.monotonic()
    i = 0
    while not all(closed) and time.monotonic() - t0 < 15:
        for k, s in enumerate(socks):
            if closed[k]:
                continue
            try:
                s.send(head[i:i + 1] if i < len(head) else b"a")
                d = s.recv(4096)
                if d == b"" or d.startswith(b"HTTP/1.1 408"):
                    closed[k] = True
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed[k] = True
        i += 1
        time.sleep(0.2)
    during = good.stop()
    for s in socks:
        s.close()
    assert all(closed), f"{closed.count(False)} slowloris connections still open after 15 s"
    assert time.monotonic() - t0 < 10      # well before the trickle would end
    assert r.wait_stat("http.ingress_http.downstream_rq_header_timeout", lambda v: v == n) == n
    assert rss_kb(r.pid) - rss0 < 32 * 1024
    check_unaffected(before, during, good.errors, "slowloris")


def test_slow_reader_of_large_responses_is_bounded(remora, upstream, ports):
    """20 clients ask for 16 MiB each and never read: the proxy holds at
    most its buffer limits per connection (it stops reading the upstream),
    so its RSS grows far less than the 320 MiB requested."""
    r, lport = _start(remora, upstream, ports)
    good = GoodClient(lport)
    before = good.sample(1.0)
    rss0 = rss_kb(r.pid)
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", lport), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /?bytes=16777216 HTTP/1.1\r\nHost: t\r\n\r\n")
        socks.append(s)
    good.start()
    time.sleep(3.0)
    grown = rss_kb(r.pid) - rss0
    print(f"\n[slow reader] RSS grew {grown} KiB for 20 stalled 16 MiB responses")
    during = good.stop()
    # the readers are still there and get the bytes when they read
    socks[0].settimeout(10)
    assert socks[0].recv(65536).startswith(b"HTTP/1.1 200")
    for s in socks:
        s.close()
    assert grown < 64 * 1024, f"RSS grew {grown} KiB with 20 stalled 16 MiB responses"
    check_unaffected(before, during, good.errors, "slow reader")


TE_CASES = [
    ("te_chunked_identity", b"Transfer-Encoding: chunked, identity\r\n"),
    ("te_identity_chunked_list", b"Transfer-Encoding: identity, chunked\r\n"),
    ("te_xchunked", b"Transfer-Encoding: xchunked\r\n"),
    ("te_tab_value", b"Transfer-Encoding:\tchunked\r\nTransfer-Encoding: gzip\r\n"),
    ("te_twice_chunked", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
    ("te_vertical_tab", b"Transfer-Encoding:\x0bchunked\r\n"),
    ("te_quoted", b'Transfer-Encoding: "chunked"\r\n'),
]


@pytest.mark.parametrize("name,te", TE_CASES, ids=[c[0] for c in TE_CASES])
def test_te_te_obfuscation_is_refused(remora, upstream, ports, name, te):
    """TE.TE: obfuscated or repeated Transfer-Encoding must not be read as
    something the upstream could parse differently: 400/501, connection
    closed, nothing forwarded (or, for an exact duplicate 'chunked', a
    consistent parse that a smuggled second request cannot ride on)."""
    r, lport = _start(remora, upstream, ports)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    raw = (b"POST / HTTP/1.1\r\nHost: t\r\n" + te + b"Content-Length: 4\r\n\r\n" +
           b"0\r\n\r\n" + smuggled)
    with HttpConn(lport, timeout=10) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = c.read_response()
        assert resp.status in (400, 501), resp
        assert c.wait_closed(5)
    assert not [q for q in upstream.requests if q["path"] == "/smuggled"]
    assert r.stat("http.ingress_http.downstream_cx_protocol_error") + \
        r.stat("http.ingress_http.downstream_rq_4xx") + r.stat("http.ingress_http.downstream_rq_5xx") >= 1


TARGETS = [
    ("absolute_form", b"http://good.example/abs?x=1", True),
    ("asterisk_on_get", b"*", False),              # asterisk-form only for OPTIONS
    ("relative", b"relative/no/slash", False),
    ("scheme_only", b"http://", False),
    ("del_char", b"/\x7fpath", False),
    ("space", b"/a b", False),
    ("oversized", b"//" + b"a" * 70000, False),     # request line over the header limit
]


@pytest.mark.parametrize("target,ok", [t[1:] for t in TARGETS], ids=[t[0] for t in TARGETS])
def test_request_targets(remora, upstream, ports, target, ok):
    r, lport = _start(remora, upstream, ports)
    with HttpConn(lport, timeout=10) as c:
        try:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = c.read_response()
    if ok:
        assert resp.status == 200, resp
        q = upstream.requests[-1]
        assert q["path"] == "/abs?x=1" and q["headers"]["host"] == "good.example", q
    else:
        assert 400 <= resp.status < 500, resp


def test_half_open_and_idle_connections_are_closed(remora, upstream, ports):
    """Connections that send nothing (or half a request line) and then go
    quiet are closed by the idle timeout; a client that half-closes after a
    complete request still gets its answer."""
    r, lport = _start(remora, upstream, ports,
                      common_http_protocol_options={"idle_timeout": "1s"},
                      request_headers_timeout="1s")
    quiet = [socket.create_connection(("127.0.0.1", lport), timeout=10) for _ in range(50)]
    for s in quiet[:25]:
        s.sendall(b"GET /par")
    t0 = time.monotonic()
    for s in quiet:
        s.settimeout(10)
        try:
            d = s.recv(4096)
        except ConnectionResetError:
            d = b""
        assert d == b"" or d.startswith(b"HTTP/1.1 408"), d[:40]
        s.close()
    assert time.monotonic() - t0 < 8
    s = socket.create_connection(("127.0.0.1", lport), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:60]


def test_connection_flood_then_recovery(remora, upstream, ports):
    """1,000 connections opened at once and dropped: no crash, descriptors
    return to the baseline, and the proxy serves normally afterwards."""
    import os
    r, lport = _start(remora, upstream, ports)
    fds0 = len(os.listdir(f"/proc/{r.pid}/fd"))
    socks = []
    for _ in range(1000):
        try:
            socks.append(socket.create_connection(("127.0.0.1", lport), timeout=10))
        except OSError:
            break
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(os.listdir(f"/proc/{r.pid}/fd")) > fds0 + 5:
        time.sleep(0.1)
    assert len(os.listdir(f"/proc/{r.pid}/fd")) <= fds0 + 5
    good = GoodClient(lport)
    n, p99 = good.sample(0.5)
    assert n > 0 and not good.errors, good.errors
