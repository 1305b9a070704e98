"""Local rate limiting: envoy.filters.http.local_ratelimit (shared and
per-connection token buckets, filter_enabled / filter_enforced, 429 with
x-envoy-ratelimited and configured headers, x-ratelimit-* headers, stats)
and envoy.filters.network.local_ratelimit (connections beyond the bucket are
closed before the terminal filter sees them)."""

import http.client
import json
import socket
import threading
import time

from harness import (ROUTER_FILTER, bootstrap, http_listener, route, route_config,
                     static_cluster, tcp_proxy_listener, virtual_host)

LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
NLRL_TYPE = "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"
ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def lrl_filter(**cfg):
    return {"name": "envoy.filters.http.local_ratelimit",
            "typed_config": {"@type": LRL_TYPE, "stat_prefix": "rl", **cfg}}


def start(remora, ports, upstream, concurrency=2, **cfg):
    admin, lport = ports.get(), ports.get()
    listener = http_listener(lport, [route({"prefix": "/"}, "backend")],
                             http_filters=[lrl_filter(**cfg), ROUTER_FILTER])
    r = remora(bootstrap(admin, [listener], [static_cluster("backend", upstream.port)]),
               concurrency=concurrency)
    return r, lport


def get(conn, path="/"):
    conn.request("GET", path, headers={"host": "test.local"})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def new_conn(lport):
    return http.client.HTTPConnection("127.0.0.1", lport, timeout=10)


def test_accepted_rate_matches_bucket(remora, ports, upstream):
    """Hammer from 4 connections for 3 s: the accepted count is the initial
    burst plus one fill per interval (20 + 15 * 4 = 80), within 10 %."""
    max_tokens, per_fill, interval, window = 20, 4, 0.2, 3.0
    r, lport = start(remora, ports, upstream, concurrency=4,
                     token_bucket={"max_tokens": max_tokens, "tokens_per_fill": per_fill,
                                   "fill_interval": f"{interval}s"},
                     filter_enabled=ALL, filter_enforced=ALL)
    counts = {"ok": 0, "limited": 0, "other": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + window

    def client():
        c = new_conn(lport)
        mine = {"ok": 0, "limited": 0, "other": 0}
        try:
            while time.monotonic() < deadline:
                st, h, _ = get(c)
                if st == 200:
                    mine["ok"] += 1
                elif st == 429 and h.get("x-envoy-ratelimited") == "true":
                    mine["limited"] += 1
                else:
                    mine["other"] += 1
        finally:
            c.close()
            with lock:
                for k in mine:
                    counts[k] += mine[k]

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    expected = max_tokens + (window / interval) * per_fill
    assert counts["other"] == 0, counts
    assert counts["limited"] > 5 * expected, counts    # demand far above the rate
    assert abs(counts["ok"] - expected) <= 0.1 * expected, (counts, expected)
    total = counts["ok"] + counts["limited"]
    r.wait_stat("rl.http_local_rate_limit.enabled", lambda v: v == total)
    assert r.stat("rl.http_local_rate_limit.ok") == counts["ok"]
    assert r.stat("rl.http_local_rate_limit.rate_limited") == counts["limited"]
    assert r.stat("rl.http_local_rate_limit.enforced") == counts["limited"]
    assert r.stat("http.ingress_http.downstream_rq_429") == counts["limited"]


def test_limited_reply_headers_and_prometheus(remora, ports, upstream):
    r, lport = start(remora, ports, upstream,
                     token_bucket={"max_tokens": 2, "fill_interval": "60s"},
                     filter_enabled=ALL, filter_enforced=ALL,
                     response_headers_to_add=[{"header": {"key": "x-local-rate-limit",
                                                          "value": "true"}},
                                              {"header": {"key": "retry-after", "value": "60"}}])
    c = new_conn(lport)
    assert get(c)[0] == 200
    st, h, body = get(c)
    assert st == 200 and "x-envoy-ratelimited" not in h and "x-local-rate-limit" not in h
    st, h, body = get(c)
    assert st == 429
    assert h["x-envoy-ratelimited"] == "true"
    assert h["x-local-rate-limit"] == "true"
    assert h["retry-after"] == "60"
    assert body == b"local_rate_limited"
    assert "x-ratelimit-limit" not in h          # not enabled
    c.close()
    assert len(upstream.requests) == 2           # the limited one never left the proxy
    prom = r.admin_get("/stats/prometheus")[2].decode()
    assert 'envoy_http_local_rate_limit_rate_limited{envoy_local_http_ratelimit_prefix="rl"} 1' in prom
    assert 'envoy_http_local_rate_limit_ok{envoy_local_http_ratelimit_prefix="rl"} 2' in prom
    text = r.admin_get("/stats?filter=http_local_rate_limit")[2].decode()
    for line in ("rl.http_local_rate_limit.enabled: 3", "rl.http_local_rate_limit.enforced: 1",
                 "rl.http_local_rate_limit.ok: 2", "rl.http_local_rate_limit.rate_limited: 1"):
        assert line in text, text


def test_custom_status(remora, ports, upstream):
    r, lport = start(remora, ports, upstream, status={"code": 503},
                     token_bucket={"max_tokens": 1, "fill_interval": "60s"},
                     filter_enabled=ALL, filter_enforced=ALL)
    c = new_conn(lport)
    assert get(c)[0] == 200
    st, h, _ = get(c)
    assert st == 503 and h["x-envoy-ratelimited"] == "true"
    c.close()


def test_filter_enabled_default_off(remora, ports, upstream):
    """Without filter_enabled (0 % by default, as Envoy) nothing is limited
    or counted."""
    r, lport = start(remora, ports, upstream,
                     token_bucket={"max_tokens": 1, "fill_interval": "60s"},
                     filter_enforced=ALL)
    c = new_conn(lport)
    assert [get(c)[0] for _ in range(5)] == [200] * 5
    c.close()
    r.wait_stat("http.ingress_http.downstream_rq_2xx", lambda v: v == 5)
    assert r.stat("rl.http_local_rate_limit.enabled") == 0
    assert r.stat("rl.http_local_rate_limit.rate_limited") == 0


def test_filter_enforced_off_is_shadow_mode(remora, ports, upstream):
    """Enabled but not enforced: over-limit requests are counted and pass,
    carrying request_headers_to_add_when_not_enforced to the upstream."""
    r, lport = start(remora, ports, upstream,
                     token_bucket={"max_tokens": 2, "fill_interval": "60s"},
                     filter_enabled=ALL,
                     request_headers_to_add_when_not_enforced=[
                         {"header": {"key": "x-would-be-limited", "value": "yes"}}])
    c = new_conn(lport)
    results = [get(c) for _ in range(5)]
    c.close()
    assert [st for st, _, _ in results] == [200] * 5
    marks = [json.loads(b)["headers"].get("x-would-be-limited") for _, _, b in results]
    assert marks == [None, None, "yes", "yes", "yes"]
    r.wait_stat("rl.http_local_rate_limit.enabled", lambda v: v == 5)
    assert r.stat("rl.http_local_rate_limit.ok") == 2
    assert r.stat("rl.http_local_rate_limit.rate_limited") == 3
    assert r.stat("rl.http_local_rate_limit.enforced") == 0


def test_x_ratelimit_headers(remora, ports, upstream):
    r, lport = start(remora, ports, upstream,
                     token_bucket={"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "30s"},
                     filter_enabled=ALL, filter_enforced=ALL,
                     enable_x_ratelimit_headers="DRAFT_VERSION_03")
    c = new_conn(lport)
    seen = [get(c) for _ in range(4)]
    c.close()
    assert [st for st, _, _ in seen] == [200, 200, 200, 429]
    assert [h["x-ratelimit-remaining"] for _, h, _ in seen] == ["2", "1", "0", "0"]
    for _, h, _ in seen:
        assert h["x-ratelimit-limit"] == "3"
        assert 1 <= int(h["x-ratelimit-reset"]) <= 30


def test_per_connection_buckets(remora, ports, upstream):
    r, lport = start(remora, ports, upstream,
                     token_bucket={"max_tokens": 2, "fill_interval": "60s"},
                     filter_enabled=ALL, filter_enforced=ALL,
                     local_rate_limit_per_downstream_connection=True)
    for _ in range(3):
        c = new_conn(lport)
        assert [get(c)[0] for _ in range(4)] == [200, 200, 429, 429]
        c.close()
    r.wait_stat("rl.http_local_rate_limit.rate_limited", lambda v: v == 6)
    assert r.stat("rl.http_local_rate_limit.ok") == 6


def test_shared_bucket_across_workers(remora, ports, upstream):
    """One bucket for the process: 10 fresh connections (spread over 4
    workers) get exactly max_tokens successes in total."""
    r, lport = start(remora, ports, upstream, concurrency=4,
                     token_bucket={"max_tokens": 4, "fill_interval": "60s"},
                     filter_enabled=ALL, filter_enforced=ALL)
    statuses = []
    for _ in range(10):
        c = new_conn(lport)
        statuses.append(get(c)[0])
        c.close()
    assert statuses.count(200) == 4 and statuses.count(429) == 6, statuses


# ---- descriptors and route rate_limits ----------------------------------------------

def start_rc(remora, ports, upstream, rc, concurrency=2, **cfg):
    admin, lport = ports.get(), ports.get()
    listener = http_listener(lport, rc=rc, http_filters=[lrl_filter(**cfg), ROUTER_FILTER])
    r = remora(bootstrap(admin, [listener], [static_cluster("backend", upstream.port)]),
               concurrency=concurrency)
    return r, lport


def get_h(conn, path="/", **headers):
    conn.request("GET", path, headers={"host": "test.local", **headers})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


USER_ACTION = {"actions": [{"request_headers": {"header_name": "x-user",
                                                "descriptor_key": "user"}}]}


def test_descriptor_bucket_limits_only_matching_requests(remora, ports, upstream):
    """A descriptor bucket (2 tokens) for user=alice: alice's third request
    gets a 429 whose x-ratelimit-* headers describe that bucket; bob and
    header-less requests use only the large default bucket and pass."""
    rc = route_config([virtual_host([route({"prefix": "/"}, "backend",
                                           rate_limits=[USER_ACTION])])])
    r, lport = start_rc(
        remora, ports, upstream, rc, concurrency=2,
        token_bucket={"max_tokens": 1000, "fill_interval": "60s"},
        descriptors=[{"entries": [{"key": "user", "value": "alice"}],
                      "token_bucket": {"max_tokens": 2, "fill_interval": "60s"}}],
        filter_enabled=ALL, filter_enforced=ALL,
        enable_x_ratelimit_headers="DRAFT_VERSION_03")
    c = new_conn(lport)
    alice = [get_h(c, **{"x-user": "alice"}) for _ in range(4)]
    assert [st for st, _, _ in alice] == [200, 200, 429, 429]
    assert [h["x-ratelimit-limit"] for _, h, _ in alice] == ["2"] * 4
    assert [h["x-ratelimit-remaining"] for _, h, _ in alice] == ["1", "0", "0", "0"]
    assert alice[2][1]["x-envoy-ratelimited"] == "true"
    assert alice[2][2] == b"local_rate_limited"
    others = [get_h(c, **{"x-user": "bob"}) for _ in range(5)] + [get_h(c) for _ in range(5)]
    assert [st for st, _, _ in others] == [200] * 10
    assert all(h["x-ratelimit-limit"] == "1000" for _, h, _ in others)
    c.close()
    # a fresh connection (possibly another worker) sees the same shared bucket
    c = new_conn(lport)
    assert get_h(c, **{"x-user": "alice"})[0] == 429
    c.close()
    r.wait_stat("rl.http_local_rate_limit.rate_limited", lambda v: v == 3)
    assert r.stat("rl.http_local_rate_limit.ok") == 12


def test_descriptor_also_consumes_default_bucket(remora, ports, upstream):
    """always_consume_default_token_bucket (default true): a matched request
    takes from the default bucket too; with false it does not."""
    rc = route_config([virtual_host([route({"prefix": "/"}, "backend",
                                           rate_limits=[USER_ACTION])])])
    desc = [{"entries": [{"key": "user", "value": "alice"}],
             "token_bucket": {"max_tokens": 100, "fill_interval": "60s"}}]
    r, lport = start_rc(remora, ports, upstream, rc,
                        token_bucket={"max_tokens": 3, "fill_interval": "60s"},
                        descriptors=desc, filter_enabled=ALL, filter_enforced=ALL)
    c = new_conn(lport)
    assert [get_h(c, **{"x-user": "alice"})[0] for _ in range(4)] == [200, 200, 200, 429]
    assert get_h(c)[0] == 429                    # the default bucket is empty for all
    c.close()

    r2, lport2 = start_rc(remora, ports, upstream, rc,
                          token_bucket={"max_tokens": 3, "fill_interval": "60s"},
                          descriptors=desc, filter_enabled=ALL, filter_enforced=ALL,
                          always_consume_default_token_bucket=False)
    c = new_conn(lport2)
    assert [get_h(c, **{"x-user": "alice"})[0] for _ in range(6)] == [200] * 6
    assert [get_h(c)[0] for _ in range(4)] == [200, 200, 200, 429]
    c.close()


def test_virtual_host_rate_limits_and_vh_mode(remora, ports, upstream):
    """The virtual host's rate_limits apply to a route without its own
    (OVERRIDE, the default); IGNORE drops them."""
    vh = virtual_host([route({"prefix": "/"}, "backend")])
    vh["rate_limits"] = [{"actions": [{"generic_key": {"descriptor_value": "vh"}}]}]
    desc = [{"entries": [{"key": "generic_key", "value": "vh"}],
             "token_bucket": {"max_tokens": 1, "fill_interval": "60s"}}]
    r, lport = start_rc(remora, ports, upstream, route_config([vh]), descriptors=desc,
                        filter_enabled=ALL, filter_enforced=ALL)
    c = new_conn(lport)
    assert [get_h(c)[0] for _ in range(3)] == [200, 429, 429]
    c.close()
    r2, lport2 = start_rc(remora, ports, upstream, route_config([vh]), descriptors=desc,
                          filter_enabled=ALL, filter_enforced=ALL, vh_rate_limits="IGNORE")
    c = new_conn(lport2)
    assert [get_h(c)[0] for _ in range(3)] == [200] * 3
    c.close()


# ---- network filter --------------------------------------------------------------------

def _served(port):
    """Connect, send a line; True if it is echoed, False if the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        try:
            s.sendall(b"ping\n")
            data = b""
            while len(data) < 5:
                d = s.recv(64)
                if not d:
                    return False
                data += d
            return data == b"ping\n"
        except (ConnectionResetError, BrokenPipeError):
            return False


def test_network_filter_closes_connections_beyond_bucket(remora, ports, echo_server):
    admin, lport = ports.get(), ports.get()
    listener = tcp_proxy_listener(lport, "echo", stat_prefix="tcp_echo")
    listener["filter_chains"][0]["filters"].insert(0, {
        "name": "envoy.filters.network.local_ratelimit",
        "typed_config": {"@type": NLRL_TYPE, "stat_prefix": "conns",
                         "token_bucket": {"max_tokens": 3, "fill_interval": "60s"}}})
    r = remora(bootstrap(admin, [listener], [static_cluster("echo", echo_server.port)]),
               concurrency=2)
    served = [_served(lport) for _ in range(8)]
    assert served.count(True) == 3 and served.count(False) == 5, served
    assert served[:3] == [True] * 3
    r.wait_stat("local_rate_limit.conns.rate_limited", lambda v: v == 5)
    assert r.stat("tcp.tcp_echo.downstream_cx_total") == 3
    assert echo_server.connections == 3
    prom = r.admin_get("/stats/prometheus")[2].decode()
    assert ('envoy_local_rate_limit_rate_limited{envoy_local_network_ratelimit_prefix="conns"} 5'
            in prom)


def test_network_filter_refills(remora, ports, echo_server):
    admin, lport = ports.get(), ports.get()
    listener = tcp_proxy_listener(lport, "echo", stat_prefix="tcp_echo")
    listener["filter_chains"][0]["filters"].insert(0, {
        "name": "envoy.filters.network.local_ratelimit",
        "typed_config": {"@type": NLRL_TYPE, "stat_prefix": "conns",
                         "token_bucket": {"max_tokens": 1, "fill_interval": "0.3s"}}})
    r = remora(bootstrap(admin, [listener], [static_cluster("echo", echo_server.port)]))
    assert _served(lport)
    time.sleep(0.35)           # at least one fill since the first connection
    assert _served(lport)
    assert r.stat("local_rate_limit.conns.rate_limited") <= 1


def test_grpc_requests_get_trailers_only_status(remora, ports, upstream):
    """A rate-limited gRPC request (grpcio over HTTP/2) gets a trailers-only
    reply: UNAVAILABLE (Envoy's 429 mapping), or RESOURCE_EXHAUSTED with
    rate_limited_as_resource_exhausted."""
    import grpc
    for exhausted, want in ((False, grpc.StatusCode.UNAVAILABLE),
                            (True, grpc.StatusCode.RESOURCE_EXHAUSTED)):
        r, lport = start(remora, ports, upstream, rate_limited_as_resource_exhausted=exhausted,
                         token_bucket={"max_tokens": 1, "fill_interval": "60s"},
                         filter_enabled=ALL, filter_enforced=ALL)
        c = new_conn(lport)
        assert get(c)[0] == 200          # takes the only token
        c.close()
        with grpc.insecure_channel(f"127.0.0.1:{lport}") as ch:
            fn = ch.unary_unary("/svc.S/M", request_serializer=lambda x: x,
                                response_deserializer=lambda x: x)
            try:
                fn(b"", timeout=10)
                raise AssertionError("the call was not rate limited")
            except grpc.RpcError as e:
                assert e.code() == want, (exhausted, e)
        assert r.stat("rl.http_local_rate_limit.rate_limited") == 1
