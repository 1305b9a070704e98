"""HTTP/1.1 proxying with curl: forwarding, routing, rewrites, local replies
and the failure answers (404 no route, 503 unknown cluster / connect failure,
504 route timeout)."""

import re

import pytest

from harness import (bootstrap, closed_port, curl, http_listener, route, route_config,
                     simple_http_config, static_cluster, virtual_host)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def env(remora, make_upstream, ports):
    """Two upstreams "a" and "b", a dead cluster, and a route table covering
    path/prefix/header matches, rewrites, weights and local replies."""
    a = make_upstream("a")
    b = make_upstream("b")
    admin, lport = ports.get(), ports.get()
    routes = [
        route({"path": "/exact"}, "a"),
        route({"prefix": "/hdr", "headers": [{"name": "x-pick",
                                              "string_match": {"exact": "b"}}]}, "b"),
        route({"prefix": "/hdr"}, "a"),
        route({"prefix": "/old/"}, "a", prefix_rewrite="/new/"),
        {"match": {"prefix": "/weighted"},
         "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 50},
                                                      {"name": "b", "weight": 50}]}}},
        {"match": {"prefix": "/direct"},
         "direct_response": {"status": 200, "body": {"inline_string": "hello from direct_response\n"}}},
        {"match": {"prefix": "/teapot"},
         "direct_response": {"status": 418}},
        {"match": {"prefix": "/redirect"},
         "redirect": {"host_redirect": "example.com", "path_redirect": "/moved"}},
        {"match": {"prefix": "/found"},
         "redirect": {"path_redirect": "/elsewhere", "response_code": "FOUND"}},
        route({"prefix": "/dead"}, "dead"),
        route({"prefix": "/slow"}, "a", timeout="0.5s"),
        route({"prefix": "/b/"}, "b"),
        route({"prefix": "/a/"}, "a"),
    ]
    rc = route_config([
        virtual_host([route({"prefix": "/"}, "b")], domains=["b.example"], name="vh_b"),
        virtual_host(routes, domains=["*"], name="vh_any"),
    ])
    cfg = bootstrap(admin, [http_listener(lport, rc=rc)], [
        static_cluster("a", a.port),
        static_cluster("b", b.port),
        static_cluster("dead", closed_port(), connect_timeout="1s"),
    ])
    r = remora(cfg)

    class Env:
        pass
    e = Env()
    e.r, e.a, e.b, e.port = r, a, b, lport
    e.url = lambda path: f"http://127.0.0.1:{lport}{path}"
    return e


def test_get_forwarded_with_headers(env):
    res = curl(env.url("/a/hello?x=1&y=two"), "-H", "X-Custom: custom-value",
               "-H", "User-Agent: remora-tests")
    assert res.rc == 0, res
    assert res.status == 200, res
    echo = res.json()
    assert echo["server"] == "a"
    assert echo["method"] == "GET"
    assert echo["path"] == "/a/hello?x=1&y=two"
    h = echo["headers"]
    assert h["host"] == f"127.0.0.1:{env.port}"
    assert h["x-custom"] == "custom-value"
    assert h["user-agent"] == "remora-tests"
    # generate_request_id defaults to true: a UUID x-request-id is added
    assert UUID_RE.match(h.get("x-request-id", "")), h
    assert h.get("x-forwarded-proto") == "http", h
    assert echo["body_length"] == 0


def test_request_ids_are_unique(env):
    ids = set()
    for _ in range(5):
        res = curl(env.url("/a/id"))
        assert res.status == 200, res
        ids.add(res.json()["headers"]["x-request-id"])
    assert len(ids) == 5


def test_post_body_forwarded(env):
    res = curl(env.url("/a/form"), "-d", "hello=world&n=42")
    assert res.status == 200, res
    echo = res.json()
    assert echo["method"] == "POST"
    assert echo["body"] == "hello=world&n=42"
    assert echo["body_length"] == 16
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"


def test_put_and_delete_methods(env):
    res = curl(env.url("/a/thing"), "-X", "PUT", "--data-binary", "xyz")
    assert res.status == 200, res
    assert res.json()["method"] == "PUT"
    assert res.json()["body"] == "xyz"
    res = curl(env.url("/a/thing"), "-X", "DELETE")
    assert res.status == 200, res
    assert res.json()["method"] == "DELETE"


def test_upstream_status_and_headers_returned(env):
    res = curl(env.url("/a/x?status=418&resp_header=x-from-upstream:yes&body=short%20and%20stout"))
    assert res.status == 418, res
    assert res.headers.get("x-from-upstream") == "yes", res.headers
    assert res.body == b"short and stout"
    res = curl(env.url("/a/x?status=503&body=upstream-says-no"))
    assert res.status == 503
    assert res.body == b"upstream-says-no"


def test_route_by_path_prefix_and_header(env):
    r = curl(env.url("/exact"))
    assert r.status == 200 and r.json()["server"] == "a", r
    # "path" is an exact match: /exact/more does not match it, and nothing else does
    r = curl(env.url("/exact/more"))
    assert r.status == 404, r
    r = curl(env.url("/hdr/x"), "-H", "x-pick: b")
    assert r.status == 200 and r.json()["server"] == "b", r
    r = curl(env.url("/hdr/x"), "-H", "x-pick: c")
    assert r.status == 200 and r.json()["server"] == "a", r
    r = curl(env.url("/hdr/x"))
    assert r.json()["server"] == "a", r
    r = curl(env.url("/b/anything"))
    assert r.json()["server"] == "b", r


def test_route_by_virtual_host(env):
    r = curl(env.url("/a/whatever"), "-H", "Host: b.example")
    assert r.status == 200, r
    assert r.json()["server"] == "b"
    assert r.json()["headers"]["host"] == "b.example"


def test_prefix_rewrite(env):
    r = curl(env.url("/old/path/item?q=1"))
    assert r.status == 200, r
    assert r.json()["path"] == "/new/path/item?q=1"


def test_weighted_clusters_reach_both(env):
    seen = {}
    for _ in range(40):
        r = curl(env.url("/weighted"))
        assert r.status == 200, r
        s = r.json()["server"]
        seen[s] = seen.get(s, 0) + 1
    # 50/50 over 40 requests: missing either side has probability 2^-39
    assert set(seen) == {"a", "b"}, seen


def test_direct_response(env):
    r = curl(env.url("/direct"))
    assert r.status == 200, r
    assert r.body == b"hello from direct_response\n"
    r = curl(env.url("/teapot"))
    assert r.status == 418, r
    assert env.a.request_count() == 0 and env.b.request_count() == 0


def test_redirect(env):
    r = curl(env.url("/redirect/some"))
    assert r.status == 301, r
    assert r.info.get("redirect_url") == "http://example.com/moved", r.info
    assert r.headers.get("location") == "http://example.com/moved"
    r = curl(env.url("/found"))
    assert r.status == 302, r
    assert r.info.get("redirect_url") == f"http://127.0.0.1:{env.port}/elsewhere", r.info


def test_no_route_404(env):
    r = curl(env.url("/nothing/here"))
    assert r.status == 404, r
    env.r.wait_stat("http.ingress_http.downstream_rq_4xx", lambda v: v >= 1)


def test_unknown_cluster_503(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    # a static route table naming an unknown cluster is a config error unless
    # validate_clusters is false (as in Envoy); then such requests get 503
    rc = route_config([virtual_host([route({"prefix": "/missing"}, "no_such_cluster"),
                                     route({"prefix": "/"}, "backend")])])
    rc["validate_clusters"] = False
    cfg = bootstrap(admin, [http_listener(lport, rc=rc)], [static_cluster("backend", upstream.port)])
    r = remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/missing")
    assert res.status == 503, res
    res = curl(f"http://127.0.0.1:{lport}/ok")
    assert res.status == 200, res
    r.wait_stat("http.ingress_http.downstream_rq_5xx", lambda v: v >= 1)


def test_connect_failure_503(env):
    r = curl(env.url("/dead/x"))
    assert r.status == 503, r
    body = r.text()
    assert "upstream connect error or disconnect/reset before headers" in body, body
    assert "connection failure" in body, body
    env.r.wait_stat("cluster.dead.upstream_cx_connect_fail", lambda v: v >= 1)
    env.r.wait_stat("http.ingress_http.downstream_rq_5xx", lambda v: v >= 1)


def test_upstream_closes_without_answer_503(env):
    r = curl(env.url("/a/x?action=close"))
    assert r.status == 503, r
    assert "disconnect/reset before headers" in r.text(), r
    # the proxy still works afterwards
    r = curl(env.url("/a/x"))
    assert r.status == 200, r


def test_route_timeout_504(env):
    r = curl(env.url("/slow?sleep_ms=3000"))
    assert r.status == 504, r
    assert "upstream request timeout" in r.text(), r
    env.r.wait_stat("cluster.a.upstream_rq_timeout", lambda v: v >= 1)


def test_stats_count_requests(env):
    for _ in range(3):
        assert curl(env.url("/a/s")).status == 200
    assert curl(env.url("/b/s")).status == 200
    r = env.r
    r.wait_stat("http.ingress_http.downstream_rq_total", lambda v: v == 4)
    r.wait_stat("http.ingress_http.downstream_rq_2xx", lambda v: v == 4)
    r.wait_stat("cluster.a.upstream_rq_total", lambda v: v == 3)
    r.wait_stat("cluster.a.upstream_rq_200", lambda v: v == 3)
    r.wait_stat("cluster.b.upstream_rq_total", lambda v: v == 1)
    st = r.stats()
    assert st.get("cluster.a.upstream_cx_total", 0) >= 1
    assert st.get("cluster.a.membership_total") == 1
    assert st.get("cluster.a.membership_healthy") == 1
    assert st.get(f"listener.127.0.0.1_{env.port}.downstream_cx_total") == 4
    assert "http.ingress_http.downstream_rq_time" in st


def test_use_remote_address_sets_xff(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    remora(simple_http_config(admin, lport, upstream.port, use_remote_address=True))
    res = curl(f"http://127.0.0.1:{lport}/")
    assert res.status == 200, res
    assert res.json()["headers"].get("x-forwarded-for") == "127.0.0.1", res.json()["headers"]


def test_hop_by_hop_headers_not_forwarded(env):
    r = curl(env.url("/a/hop"), "-H", "Connection: keep-alive, X-Hop-Nominated",
             "-H", "X-Hop-Nominated: 1", "-H", "Keep-Alive: timeout=5",
             "-H", "Proxy-Connection: keep-alive", "-H", "X-End-To-End: kept")
    assert r.status == 200, r
    h = r.json()["headers"]
    assert h.get("x-end-to-end") == "kept"
    for name in ("keep-alive", "proxy-connection", "x-hop-nominated"):
        assert name not in h, f"hop-by-hop header {name} forwarded: {h}"
    assert "x-hop-nominated" not in h.get("connection", "").lower()


def test_response_hop_by_hop_headers_not_returned(env):
    r = curl(env.url("/a/x?resp_header=keep-alive:timeout%3D99&resp_header=x-e2e:yes"))
    assert r.status == 200, r
    assert r.headers.get("x-e2e") == "yes"
    assert "timeout=99" not in r.headers.get("keep-alive", ""), r.headers
