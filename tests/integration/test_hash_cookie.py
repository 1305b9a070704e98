"""Cookie hash policy with cookie generation (Envoy's `cookie.ttl`), and the
ring_hash_lb / maglev_lb gauges.

A RING_HASH (and a MAGLEV) cluster of four upstreams.  A request without the
cookie gets a Set-Cookie whose value Envoy derives from the downstream
connection (hex of xxHash64 of "peer:port" + "local:port", checked here with
the system libxxhash through ctypes); the request is hashed on that value, so
replaying the cookie from any connection reaches the same upstream."""

import ctypes
import ctypes.util
import re

import pytest

from harness import HttpConn, bootstrap, http_listener, route, static_cluster

NHOSTS = 4

_lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_lib.XXH64.restype = ctypes.c_uint64
_lib.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def xxh64(b):
    return _lib.XXH64(b, len(b), 0)


@pytest.fixture
def env(remora, make_upstream, ports):
    ups = [make_upstream(f"u{i}") for i in range(NHOSTS)]
    eps = [("127.0.0.1", u.port) for u in ups]
    admin, lport = ports.get(), ports.get()
    sticky = [{"cookie": {"name": "sticky", "ttl": "3600s", "path": "/",
                          "attributes": [{"name": "SameSite", "value": "Strict"},
                                         {"name": "Secure"}]}}]
    routes = [
        route({"prefix": "/ring"}, "ring", hash_policy=sticky),
        route({"prefix": "/maglev"}, "maglev", hash_policy=sticky),
        route({"prefix": "/session"}, "ring",
              hash_policy=[{"cookie": {"name": "sess", "ttl": "0s"}}]),
        # no ttl: never generated, the pick is random without the cookie
        route({"prefix": "/nottl"}, "ring", hash_policy=[{"cookie": {"name": "sticky"}}]),
        route({"prefix": "/rr"}, "rr", hash_policy=sticky),
    ]
    cfg = bootstrap(admin, [http_listener(lport, routes)], [
        static_cluster("ring", eps, lb_policy="RING_HASH",
                       ring_hash_lb_config={"minimum_ring_size": 1024}),
        static_cluster("maglev", eps, lb_policy="MAGLEV",
                       maglev_lb_config={"table_size": 65537}),
        static_cluster("rr", eps),
    ])
    r = remora(cfg, concurrency=2)

    class Env:
        pass
    e = Env()
    e.r, e.port = r, lport
    return e


def one(port, path, headers=()):
    """One request on a new connection: (response, client "ip:port")."""
    with HttpConn(port) as c:
        ip, cport = c.sock.getsockname()[:2]
        c.request("GET", path, headers=list(headers))
        res = c.read_response()
        assert res.status == 200, res
        return res, f"{ip}:{cport}"


def set_cookies(res):
    return [v for k, v in res.header_list if k.lower() == "set-cookie"]


@pytest.mark.parametrize("cluster", ["ring", "maglev"])
def test_generated_cookie_is_envoys_and_sticky(env, cluster):
    hosts = set()
    for _ in range(8):
        res, peer = one(env.port, f"/{cluster}/a")
        sc = set_cookies(res)
        assert len(sc) == 1, res
        m = re.fullmatch(r'sticky="([0-9a-f]{16})"; Max-Age=3600; Path=/; '
                         r'SameSite=Strict; Secure; HttpOnly', sc[0])
        assert m, sc
        want = "%016x" % xxh64(f"{peer}127.0.0.1:{env.port}".encode())
        assert m.group(1) == want
        first = res.json()["server"]
        # the first request was hashed on the generated value: replaying the
        # cookie (quoted as set, or bare) from new connections lands there too
        for i in range(6):
            v = f'"{m.group(1)}"' if i % 2 else m.group(1)
            again, _ = one(env.port, f"/{cluster}/b", [("Cookie", f"x=1; sticky={v}")])
            assert again.json()["server"] == first
            assert not set_cookies(again)
        hosts.add(first)
    # 8 connections' cookies: P(all on one of 4 hosts) = 4^-7, about 6e-5
    assert len(hosts) >= 2, hosts


def test_cookie_same_for_requests_of_one_connection(env):
    with HttpConn(env.port) as c:
        vals = []
        for _ in range(3):
            c.request("GET", "/ring/x")
            res = c.read_response()
            assert res.status == 200
            vals.append(set_cookies(res)[0])
        assert len(set(vals)) == 1, vals


def test_session_cookie_and_no_ttl(env):
    res, peer = one(env.port, "/session")
    want = "%016x" % xxh64(f"{peer}127.0.0.1:{env.port}".encode())
    assert set_cookies(res) == [f'sess="{want}"; HttpOnly']
    res, _ = one(env.port, "/nottl")
    assert not set_cookies(res)
    # not a hash cluster: the hash (and so the cookie) is never computed, as Envoy
    res, _ = one(env.port, "/rr")
    assert not set_cookies(res)


def test_hash_lb_gauges(env):
    s = env.r.stats()
    size = s["cluster.ring.ring_hash_lb.size"]
    lo = s["cluster.ring.ring_hash_lb.min_hashes_per_host"]
    hi = s["cluster.ring.ring_hash_lb.max_hashes_per_host"]
    # four equal hosts, minimum_ring_size 1024: 256 hashes each
    assert (size, lo, hi) == (1024, 256, 256)
    lo = s["cluster.maglev.maglev_lb.min_entries_per_host"]
    hi = s["cluster.maglev.maglev_lb.max_entries_per_host"]
    assert 16384 - 2 <= lo <= hi <= 16384 + 2, (lo, hi)   # 65537 / 4 slots each
    assert not any(k.startswith("cluster.rr.ring_hash_lb") or k.startswith("cluster.rr.maglev")
                   for k in s)
    status, _, body = env.r.admin_get("/stats/prometheus")
    text = body.decode()
    assert status == 200
    assert 'envoy_cluster_ring_hash_lb_size{envoy_cluster_name="ring"} 1024' in text
