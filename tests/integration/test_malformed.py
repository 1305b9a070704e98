"""Malformed and hostile HTTP/1.1 requests on raw sockets: each gets the
right error status and the connection is closed; nothing reaches the
upstream (request smuggling); the proxy keeps serving good requests."""

import pytest

from harness import HttpConn, curl, simple_http_config

H = b"Host: t\r\n"

# (id, raw bytes, expected status, upstream must see nothing)
CASES = [
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("two_different_cl", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, True),
    ("cl_not_a_number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 12abc\r\n\r\n", 400, True),
    ("cl_negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400, True),
    ("bad_chunk_size", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, False),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400, False),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-Folded: one\r\n two\r\n\r\n", 400, True),
    ("bare_lf", b"GET / HTTP/1.1\nHost: t\n\n", 400, True),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-Cr: a\rb\r\n\r\n", 400, True),
    ("invalid_header_name", b"GET / HTTP/1.1\r\n" + H + b"Bad@Name: x\r\n\r\n", 400, True),
    ("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-Space : x\r\n\r\n", 400, True),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-Nul: a\x00b\r\n\r\n", 400, True),
    ("garbage_request_line", b"HELLO THERE\r\n\r\n", 400, True),
    ("missing_host_http11", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, True),
    ("unsupported_transfer_encoding", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: gzip\r\n\r\n", 501, True),
    ("http_version_3", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505, True),
    ("huge_header", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431, True),
]


def _start(remora, upstream, ports, **hcm):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port, **hcm))
    return r, lport


def _error_counters(r):
    st = r.stats()
    return sum(st.get(f"http.ingress_http.{k}", 0) for k in
               ("downstream_rq_4xx", "downstream_rq_5xx", "downstream_cx_protocol_error"))


def _send_bad(lport, raw):
    with HttpConn(lport, timeout=10) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass                       # the proxy may answer before reading it all
        try:
            resp = c.read_response()
        except EOFError as e:
            raise AssertionError(f"connection closed without an HTTP answer ({e})")
        closed = c.wait_closed(5)
    return resp, closed


@pytest.mark.parametrize("name,raw,status,untouched", CASES, ids=[c[0] for c in CASES])
def test_malformed_request(remora, upstream, ports, name, raw, status, untouched):
    r, lport = _start(remora, upstream, ports)
    before = _error_counters(r)
    resp, closed = _send_bad(lport, raw)
    assert resp.status == status, resp
    assert closed, "connection not closed after the error answer"
    if untouched:
        assert upstream.started == [], f"upstream saw {upstream.started}"
    # a good request on a new connection still works
    good = curl(f"http://127.0.0.1:{lport}/good")
    assert good.status == 200, good
    r.wait_stat("http.ingress_http.downstream_rq_2xx", lambda v: v >= 1)
    assert _error_counters(r) > before


def test_too_many_headers_431(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports,
                      common_http_protocol_options={"max_headers_count": 20})
    raw = b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n"
    resp, closed = _send_bad(lport, raw)
    assert resp.status == 431, resp
    assert closed
    assert upstream.started == []
    # under the limit is fine
    ok = curl(f"http://127.0.0.1:{lport}/ok", *sum((["-H", f"X-H{i}: v"] for i in range(10)), []))
    assert ok.status == 200, ok
    assert _error_counters(r) >= 1


def test_max_request_headers_kb(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports, max_request_headers_kb=8)
    raw = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 10000 + b"\r\n\r\n"
    resp, closed = _send_bad(lport, raw)
    assert resp.status == 431, resp
    assert closed
    ok = curl(f"http://127.0.0.1:{lport}/ok", "-H", "X-Medium: " + "a" * 4000)
    assert ok.status == 200, ok


def test_bad_request_after_good_on_same_connection(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports)
    with HttpConn(lport, timeout=10) as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /second HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n")
        first = c.read_response()
        assert first.status == 200 and first.json()["path"] == "/first"
        second = c.read_response()
        assert second.status == 400, second
        assert c.wait_closed(5)
    assert [p for _, _, p in upstream.started] == ["/first"]


def test_smuggling_attempt_not_forwarded(remora, upstream, ports):
    # classic CL.TE: if a proxy honoured Content-Length here the upstream would
    # see a second request "GET /smuggled"
    r, lport = _start(remora, upstream, ports)
    raw = (b"POST /front HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    resp, closed = _send_bad(lport, raw)
    assert resp.status == 400
    assert closed
    assert all("/smuggled" not in p for _, _, p in upstream.started), upstream.started
