"""Connection reuse: downstream keep-alive, upstream connection pooling,
pipelining, and Connection: close on either side."""

import json

from harness import HttpConn, curl, curl_multi, simple_http_config

CONCURRENCY = 2


def _start(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), concurrency=CONCURRENCY)
    return r, lport


def test_sequential_requests_reuse_connections(remora, upstream, ports, tmp_path):
    r, lport = _start(remora, upstream, ports)
    urls = [f"http://127.0.0.1:{lport}/req{i}" for i in range(20)]
    rc, err, results = curl_multi(urls, workdir=str(tmp_path))
    assert rc == 0, err
    assert len(results) == 20
    for i, (info, body) in enumerate(results):
        assert info["http_code"] == 200, info
    # curl reused its one connection (the test's premise)
    assert sum(int(info["num_connects"]) for info, _ in results) == 1, \
        [info["num_connects"] for info, _ in results]
    paths = [json.loads(b)["path"] for _, b in results]
    assert paths == [f"/req{i}" for i in range(20)]
    conn_ids = upstream.conn_ids()
    assert upstream.request_count() == 20
    assert 1 <= len(conn_ids) <= CONCURRENCY, conn_ids
    assert upstream.connections <= CONCURRENCY
    r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 20)
    st = r.stats()
    assert 1 <= st["cluster.backend.upstream_cx_total"] <= CONCURRENCY, st["cluster.backend.upstream_cx_total"]
    assert st["cluster.backend.upstream_cx_total"] == upstream.connections
    assert st["http.ingress_http.downstream_cx_total"] == 1
    assert st[f"listener.127.0.0.1_{lport}.downstream_cx_total"] == 1
    assert st["http.ingress_http.downstream_rq_total"] == 20


def test_upstream_pool_shared_across_downstream_connections(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports)
    for i in range(10):
        res = curl(f"http://127.0.0.1:{lport}/sep{i}")
        assert res.status == 200, res
    # ten separate client connections, but each worker keeps (at most) one
    # idle upstream connection and reuses it
    assert upstream.request_count() == 10
    assert len(upstream.conn_ids()) <= CONCURRENCY, upstream.conn_ids()
    st = r.stats()
    assert st["cluster.backend.upstream_cx_total"] <= CONCURRENCY
    assert st["http.ingress_http.downstream_cx_total"] == 10


def test_upstream_connection_close_not_reused(remora, upstream, ports, tmp_path):
    r, lport = _start(remora, upstream, ports)
    urls = [f"http://127.0.0.1:{lport}/c{i}?close=1" for i in range(3)]
    rc, err, results = curl_multi(urls, workdir=str(tmp_path))
    assert rc == 0, err
    assert [info["http_code"] for info, _ in results] == [200, 200, 200]
    # the client connection survives the upstream's "connection: close"
    assert sum(int(info["num_connects"]) for info, _ in results) == 1
    # but every upstream connection was used once
    assert len(upstream.conn_ids()) == 3, upstream.conn_ids()
    r.wait_stat("cluster.backend.upstream_cx_total", lambda v: v == 3)


def test_pipelined_requests_answered_in_order(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports)
    with HttpConn(lport) as c:
        c.send(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /p2?sleep_ms=200 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"POST /p3 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        got = []
        for _ in range(3):
            resp = c.read_response()
            assert resp.status == 200, resp
            got.append(resp.json())
        assert [g["path"] for g in got] == ["/p1", "/p2?sleep_ms=200", "/p3"]
        assert got[2]["body"] == "hello"
        # and the connection is still usable
        c.request("GET", "/p4")
        assert c.read_response().json()["path"] == "/p4"
    r.wait_stat("http.ingress_http.downstream_rq_total", lambda v: v == 4)


def test_client_connection_close(remora, upstream, ports):
    r, lport = _start(remora, upstream, ports)
    with HttpConn(lport) as c:
        c.request("GET", "/bye", headers=[("Connection", "close")])
        resp = c.read_response()
        assert resp.status == 200
        assert "close" in resp.headers.get("connection", "").lower(), resp.headers
        assert c.wait_closed(5), "proxy kept the connection open after Connection: close"
    assert upstream.requests[0]["path"] == "/bye"


def test_http10_request_gets_answer_and_close(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    remora(simple_http_config(admin, lport, upstream.port,
                              http_protocol_options={"accept_http_10": True}))
    with HttpConn(lport) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200, resp
        assert resp.json()["path"] == "/old"
        assert c.wait_closed(5)


def test_http10_rejected_by_default(remora, upstream, ports):
    # Envoy answers HTTP/1.0 with 426 unless accept_http_10 is set
    r, lport = _start(remora, upstream, ports)
    with HttpConn(lport) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 426, resp
    assert upstream.request_count() == 0


def test_parallel_requests_each_get_their_own_answer(remora, upstream, ports, tmp_path):
    r, lport = _start(remora, upstream, ports)
    n = 60
    urls = [f"http://127.0.0.1:{lport}/par{i}?sleep_ms=50" for i in range(n)]
    rc, err, results = curl_multi(urls, "-Z", "--parallel-max", "30", workdir=str(tmp_path))
    assert rc == 0, err
    assert len(results) == n
    for i, (info, body) in enumerate(results):
        assert info.get("http_code") == 200, info
        assert json.loads(body)["path"] == f"/par{i}?sleep_ms=50"
    r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == n)
    r.wait_stat("http.ingress_http.downstream_rq_2xx", lambda v: v == n)
    # no request is left active and the pool holds no more connections than it opened
    r.wait_stat("cluster.backend.upstream_rq_active", lambda v: v == 0)
    st = r.stats()
    assert st["cluster.backend.upstream_cx_active"] <= st["cluster.backend.upstream_cx_total"]
    assert st["cluster.backend.upstream_cx_total"] == upstream.connections
