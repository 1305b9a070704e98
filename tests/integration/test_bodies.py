"""Request and response bodies: chunked and content-length framing, 100 MB
transfers streamed with bounded proxy memory, Expect: 100-continue, HEAD,
trailers, truncated upstream answers."""

import hashlib
import os

from harness import (HttpConn, RssSampler, curl, pattern_sha256, sha256_file,
                     simple_http_config, write_pattern_file)

MB = 1 << 20
BIG = 100 * MB
# Peak RSS growth allowed while 100 MB flow through.  Generous on purpose (the
# ASan build inflates RSS); a proxy that buffers the whole body fails it.
RSS_GROWTH_LIMIT_KB = 64 * 1024
# ASan keeps freed memory in a quarantine (256 MB by default) which would show
# up as RSS growth that has nothing to do with the proxy's buffering.
ASAN_SMALL_QUARANTINE = "quarantine_size_mb=16:thread_local_quarantine_size_kb=256"


def _start(remora, upstream, ports, **kw):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), **kw)
    return r, f"http://127.0.0.1:{lport}", lport


def test_chunked_request_body_intact(remora, upstream, ports, tmp_path):
    r, base, _ = _start(remora, upstream, ports)
    data = os.urandom(300 * 1024 + 17)
    f = tmp_path / "chunked.bin"
    f.write_bytes(data)
    res = curl(base + "/upload", "-H", "Transfer-Encoding: chunked", "-H", "Expect:",
               "--data-binary", f"@{f}")
    assert res.status == 200, res
    echo = res.json()
    assert echo["method"] == "POST"
    assert echo["body_length"] == len(data)
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_content_length_request_body_intact(remora, upstream, ports, tmp_path):
    r, base, _ = _start(remora, upstream, ports)
    data = os.urandom(MB + 3)
    f = tmp_path / "cl.bin"
    f.write_bytes(data)
    res = curl(base + "/upload", "-H", "Content-Type: application/octet-stream",
               "--data-binary", f"@{f}")
    assert res.status == 200, res
    echo = res.json()
    assert echo["body_length"] == len(data)
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert echo["headers"].get("content-length") == str(len(data)) or echo["chunked_request"]


def test_large_response_streamed_with_bounded_memory(remora, upstream, ports):
    r, base, _ = _start(remora, upstream, ports, asan_options_extra=ASAN_SMALL_QUARANTINE)
    # warm up buffers and pools first, then measure growth from there
    res = curl(base + f"/warm?bytes={8 * MB}", keep_body=False, timeout=60)
    assert res.status == 200 and int(res.info["size_download"]) == 8 * MB, res
    baseline = r.rss_kb()
    with RssSampler(r) as s:
        res = curl(base + f"/big?bytes={BIG}", keep_body=False, timeout=90)
    assert res.rc == 0, res
    assert res.status == 200
    assert int(res.info["size_download"]) == BIG
    growth = s.peak_kb - baseline
    assert len(s.samples) >= 2
    assert growth < RSS_GROWTH_LIMIT_KB, \
        f"proxy RSS grew by {growth} kB (baseline {baseline} kB, peak {s.peak_kb} kB) during a 100 MB response"


def test_large_upload_streamed_with_bounded_memory(remora, upstream, ports, tmp_path):
    r, base, _ = _start(remora, upstream, ports, asan_options_extra=ASAN_SMALL_QUARANTINE)
    warm = tmp_path / "warm.bin"
    write_pattern_file(warm, 8 * MB)
    res = curl(base + "/warm", "-T", str(warm), "-X", "POST", timeout=60)
    assert res.status == 200 and res.json()["body_length"] == 8 * MB, res
    big = tmp_path / "big.bin"
    digest = write_pattern_file(big, BIG)
    baseline = r.rss_kb()
    with RssSampler(r) as s:
        res = curl(base + "/big", "-T", str(big), "-X", "POST", timeout=90)
    big.unlink()
    assert res.rc == 0, res
    assert res.status == 200, res
    echo = res.json()
    assert echo["body_length"] == BIG
    assert echo["body_sha256"] == digest
    growth = s.peak_kb - baseline
    assert growth < RSS_GROWTH_LIMIT_KB, \
        f"proxy RSS grew by {growth} kB (baseline {baseline} kB, peak {s.peak_kb} kB) during a 100 MB upload"


def test_large_chunked_response_intact(remora, upstream, ports, tmp_path):
    r, base, _ = _start(remora, upstream, ports)
    n = 20 * MB + 12345
    out = tmp_path / "resp.bin"
    res = curl(base + f"/c?bytes={n}&chunked=1", output=str(out), timeout=60)
    assert res.rc == 0 and res.status == 200, res
    assert os.path.getsize(out) == n
    assert sha256_file(out) == pattern_sha256(n)


def test_chunked_response_with_trailers(remora, upstream, ports):
    r, base, lport = _start(remora, upstream, ports)
    with HttpConn(lport) as c:
        c.request("GET", "/t?chunked=1&trailers=1&body=abcdefghijklmnopqrstuvwxyz")
        resp = c.read_response()
        assert resp.status == 200, resp
        assert resp.body == b"abcdefghijklmnopqrstuvwxyz"
        # the trailer section did not corrupt the framing: the connection is reusable
        c.request("GET", "/after")
        resp = c.read_response()
        assert resp.status == 200
        assert resp.json()["path"] == "/after"


def test_expect_100_continue(remora, upstream, ports):
    r, base, lport = _start(remora, upstream, ports)
    with HttpConn(lport, timeout=10) as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.read_response(allow_interim=True)
        assert interim.status == 100, interim
        c.send(b"hello world")
        resp = c.read_response()
        assert resp.status == 200, resp
        echo = resp.json()
        assert echo["body_length"] == 11
        assert echo["body"] == "hello world"


def test_expect_100_continue_with_curl(remora, upstream, ports, tmp_path):
    r, base, _ = _start(remora, upstream, ports)
    f = tmp_path / "e.bin"
    data = os.urandom(64 * 1024)
    f.write_bytes(data)
    res = curl(base + "/e", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
               "--data-binary", f"@{f}", "-v")
    assert res.status == 200, res
    assert "HTTP/1.1 100" in res.stderr, res.stderr
    assert res.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_proxy_100_continue_with_curl(remora, upstream, ports, tmp_path):
    """proxy_100_continue: "Expect: 100-continue" goes to the upstream and
    the upstream's own 100 comes back to curl (the proxy sends none of its
    own: an upstream that answers no 100 leaves curl to its expect
    timeout); without the option the proxy answers 100 itself and the
    upstream never sees the header."""
    f = tmp_path / "e.bin"
    data = os.urandom(64 * 1024)
    f.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    admin, lport = ports.get(), ports.get()
    remora(simple_http_config(admin, lport, upstream.port, proxy_100_continue=True))
    base = f"http://127.0.0.1:{lport}"

    res = curl(base + "/fwd", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
               "--data-binary", f"@{f}", "-v")
    assert res.status == 200, res
    assert "HTTP/1.1 100" in res.stderr, res.stderr
    echo = res.json()
    assert echo["expect_continue_seen"] and echo["body_sha256"] == digest, echo

    # the upstream sends no 100: neither does the proxy; curl sends the body
    # after its (short) expect timeout
    res = curl(base + "/quiet?continue=0", "-H", "Expect: 100-continue",
               "--expect100-timeout", "0.5", "--data-binary", f"@{f}", "-v")
    assert res.status == 200, res
    assert "HTTP/1.1 100" not in res.stderr, res.stderr
    echo = res.json()
    assert echo["expect_continue_seen"] and echo["body_sha256"] == digest, echo

    # HTTP/2 client: the upstream's 100 comes back as a :status 100 HEADERS
    res = curl(base + "/h2", "--http2-prior-knowledge", "-H", "Expect: 100-continue",
               "--expect100-timeout", "10", "--data-binary", f"@{f}", "-v")
    assert res.status == 200, res
    assert "HTTP/2 100" in res.stderr, res.stderr
    echo = res.json()
    assert echo["expect_continue_seen"] and echo["body_sha256"] == digest, echo


def test_expect_100_answered_locally_by_default(remora, upstream, ports, tmp_path):
    f = tmp_path / "e.bin"
    f.write_bytes(os.urandom(4096))
    r, base, _ = _start(remora, upstream, ports)
    res = curl(base + "/quiet?continue=0", "-H", "Expect: 100-continue",
               "--expect100-timeout", "10", "--data-binary", f"@{f}", "-v")
    assert res.status == 200, res
    assert "HTTP/1.1 100" in res.stderr, res.stderr   # from the proxy itself
    assert not res.json()["expect_continue_seen"]


def test_head_and_204_framing(remora, upstream, ports):
    r, base, lport = _start(remora, upstream, ports)
    with HttpConn(lport) as c:
        c.request("HEAD", "/h?bytes=1000")
        resp = c.read_response(method="HEAD")
        assert resp.status == 200, resp
        assert resp.headers.get("content-length") == "1000"
        c.request("GET", "/nc?status=204")
        resp = c.read_response()
        assert resp.status == 204
        # no stray body bytes: the next answer parses cleanly
        c.request("GET", "/next")
        resp = c.read_response()
        assert resp.status == 200 and resp.json()["path"] == "/next"


def test_truncated_upstream_response_is_not_completed(remora, upstream, ports):
    r, base, _ = _start(remora, upstream, ports)
    res = curl(base + "/t?action=truncate", timeout=20)
    # headers (content-length 1000) were forwarded, then the upstream vanished:
    # the client must see an incomplete transfer, not a clean one
    assert res.rc != 0, res
    assert len(res.body) < 1000
    # and the proxy keeps serving
    assert curl(base + "/ok").status == 200


def test_upstream_reset_before_headers(remora, upstream, ports):
    r, base, _ = _start(remora, upstream, ports)
    res = curl(base + "/r?action=reset")
    assert res.status == 503, res
    assert "upstream connect error or disconnect/reset before headers" in res.text()
    r.wait_stat("http.ingress_http.downstream_rq_5xx", lambda v: v >= 1)
    assert curl(base + "/ok").status == 200
