"""Consistent-hash load balancing: RING_HASH and MAGLEV clusters of four
upstreams, with route hash_policy on a header, a query parameter and the
source IP.  The same key must always reach the same upstream (over many
requests, several connections and both workers); different keys must spread
over the hosts; without a hash the pick is random.

Host placement depends on the upstreams' (random) ports, so the spread checks
use bounds whose failure probability is below 1e-5 for a correct balancer."""

import subprocess

import pytest
import yaml

import harness
from harness import HttpConn, bootstrap, curl, http_listener, route, static_cluster

NHOSTS = 4


@pytest.fixture
def env(remora, make_upstream, ports):
    ups = [make_upstream(f"u{i}") for i in range(NHOSTS)]
    eps = [("127.0.0.1", u.port) for u in ups]
    admin, lport = ports.get(), ports.get()
    hdr = [{"header": {"header_name": "x-user"}}]
    routes = [
        route({"prefix": "/ring/hdr"}, "ring", hash_policy=hdr),
        route({"prefix": "/maglev/hdr"}, "maglev", hash_policy=hdr),
        route({"prefix": "/ring/ip"}, "ring",
              hash_policy=[{"connection_properties": {"source_ip": True}}]),
        route({"prefix": "/maglev/ip"}, "maglev",
              hash_policy=[{"connection_properties": {"source_ip": True}}]),
        route({"prefix": "/maglev/q"}, "maglev",
              hash_policy=[{"query_parameter": {"name": "user"}}]),
        # the header is absent on most requests: the source IP decides then
        route({"prefix": "/ring/terminal"}, "ring",
              hash_policy=[{"header": {"header_name": "x-user"}, "terminal": True},
                           {"connection_properties": {"source_ip": True}}]),
        route({"prefix": "/ring/none"}, "ring"),
    ]
    cfg = bootstrap(admin, [http_listener(lport, routes)], [
        static_cluster("ring", eps, lb_policy="RING_HASH",
                       ring_hash_lb_config={"minimum_ring_size": 1024,
                                            "maximum_ring_size": 65536}),
        static_cluster("maglev", eps, lb_policy="MAGLEV",
                       maglev_lb_config={"table_size": 65537}),
    ])
    r = remora(cfg, concurrency=2)

    class Env:
        pass
    e = Env()
    e.r, e.port, e.ups = r, lport, ups
    return e


def get_servers(port, paths_headers, conns=4):
    """Send each (path, headers) in order, round-robin over `conns` keep-alive
    connections; returns the list of upstream names that answered."""
    cs = [HttpConn(port) for _ in range(conns)]
    out = []
    try:
        for i, (path, headers) in enumerate(paths_headers):
            c = cs[i % conns]
            c.request("GET", path, headers=headers)
            res = c.read_response()
            assert res.status == 200, res
            out.append(res.json()["server"])
    finally:
        for c in cs:
            c.close()
    return out


def check_sticky(port, make_req, nkeys=20, repeats=5):
    """Each of nkeys keys, sent `repeats` times interleaved over several
    connections, always reaches one upstream; the keys use >= 3 of the 4."""
    reqs = [make_req(f"user-{k}") for _ in range(repeats) for k in range(nkeys)]
    servers = get_servers(port, reqs)
    by_key = {}
    for i, s in enumerate(servers):
        by_key.setdefault(i % nkeys, set()).add(s)
    for k, ss in by_key.items():
        assert len(ss) == 1, f"key user-{k} reached {ss}"
    used = {next(iter(ss)) for ss in by_key.values()}
    # P(20 uniform keys on <= 2 of 4 hosts) = 6 * 2^-20: about 6e-6
    assert len(used) >= 3, f"{nkeys} keys only reached {used}"
    return {k: next(iter(ss)) for k, ss in by_key.items()}


@pytest.mark.parametrize("cluster", ["ring", "maglev"])
def test_header_hash_is_sticky_and_spreads(env, cluster):
    m1 = check_sticky(env.port, lambda key: (f"/{cluster}/hdr", [("x-user", key)]))
    # fresh connections later (and possibly the other worker): same mapping
    m2 = check_sticky(env.port, lambda key: (f"/{cluster}/hdr/again", [("X-User", key)]))
    assert m1 == m2


def test_query_parameter_hash(env):
    mq = check_sticky(env.port, lambda key: (f"/maglev/q?a=1&user={key}&b=2", []))
    # the parameter hashes like a header with the same value (both xxHash64 of it)
    mh = check_sticky(env.port, lambda key: ("/maglev/hdr", [("x-user", key)]))
    assert mq == mh


@pytest.mark.parametrize("path", ["/ring/ip", "/maglev/ip", "/ring/terminal"])
def test_source_ip_hash(env, path):
    """Requests from 127.0.0.N (curl --interface) stick to one upstream per
    source address; 12 addresses reach more than one upstream."""
    by_ip = {}
    for n in range(2, 14):
        ip = f"127.0.0.{n}"
        for _ in range(3):
            res = curl(f"http://127.0.0.1:{env.port}{path}", "--interface", ip)
            assert res.rc == 0 and res.status == 200, res
            by_ip.setdefault(ip, set()).add(res.json()["server"])
    for ip, ss in by_ip.items():
        assert len(ss) == 1, f"{ip} reached {ss}"
    used = set().union(*by_ip.values())
    # P(12 uniform addresses on one of 4 hosts) = 4^-11: about 2e-7
    assert len(used) >= 2, by_ip


def test_terminal_header_wins_over_source_ip(env):
    """With x-user present the terminal header policy alone decides: the
    mapping equals that of the header-only route on the same cluster."""
    mt = check_sticky(env.port, lambda key: ("/ring/terminal", [("x-user", key)]))
    mh = check_sticky(env.port, lambda key: ("/ring/hdr", [("x-user", key)]))
    assert mt == mh


def test_no_hash_is_random(env):
    """No hash policy (or no header): Envoy picks a random host."""
    servers = get_servers(env.port, [("/ring/none", [("x-user", "same")])] * 40)
    # P(40 uniform picks on one of 4 hosts) = 4^-39
    assert len(set(servers)) >= 2, servers
    servers = get_servers(env.port, [("/maglev/hdr", [])] * 40)
    assert len(set(servers)) >= 2, servers


def test_bad_hash_config_is_rejected(ports, tmp_path):
    admin, lport = ports.get(), ports.get()
    for cluster, rt, msg in [
        (static_cluster("c", 1, lb_policy="MAGLEV", maglev_lb_config={"table_size": 1000}),
         route({"prefix": "/"}, "c"),
         "static_resources.clusters[0].maglev_lb_config.table_size: the table size of maglev "
         "must be a prime number below 5000011"),
        (static_cluster("c", 1, lb_policy="RING_HASH"),
         route({"prefix": "/"}, "c", hash_policy=[{"cookie": {
             "name": "s", "ttl": "60s", "attributes": [{"name": "a", "value": "x\r\ny: 1"}]}}]),
         "routes[0].route.hash_policy[0].cookie.attributes[0].value: must be at most 16384 "
         "bytes without CR or LF"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bootstrap(admin, [http_listener(lport, [rt])], [cluster])))
        p = subprocess.run([harness.remora_bin(), "-c", str(path)], capture_output=True,
                           timeout=30)
        assert p.returncode != 0
        assert msg in p.stderr.decode(), p.stderr.decode()
