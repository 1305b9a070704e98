"""Load-balancing policies against real upstreams, one worker so the
per-worker LB state is the only one:

- peak-EWMA (remora.load_balancers.peak_ewma): one upstream answers every
  request after 40 ms (force_sleep_ms), the other at once.  Over 200
  sequential requests the fast one must take the clear majority (a random or
  round-robin balancer gives ~50 %; peak-EWMA gives the slow host a request
  or two, then avoids it for tens of seconds).
- LEAST_REQUEST: while one upstream holds an outstanding request (it sleeps
  5 s), new requests go to the other one.  Draws are with replacement (as
  Envoy), so a pick lands on the busy host only if all choice_count draws hit
  it: choice_count 30 makes that 2^-30 per pick (with the default 2 it would
  be 1/4, and one such pick lets the next ones tie).
"""

import socket

from harness import HttpConn, bootstrap, http_listener, route, static_cluster, wait_until

PEAK_EWMA_TYPE = "type.googleapis.com/remora.extensions.load_balancers.peak_ewma.v1.PeakEwma"


def make_env(remora, make_upstream, ports, **cluster_extra):
    fast, slow = make_upstream("fast"), make_upstream("slow")
    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "lb")])], [
        static_cluster("lb", [("127.0.0.1", fast.port), ("127.0.0.1", slow.port)],
                       **cluster_extra),
    ])
    r = remora(cfg, concurrency=1)
    return r, lport, fast, slow


def count_servers(port, n, path="/x"):
    out = {}
    with HttpConn(port) as c:
        for _ in range(n):
            c.request("GET", path)
            res = c.read_response()
            assert res.status == 200, res
            name = res.json()["server"]
            out[name] = out.get(name, 0) + 1
    return out


def test_peak_ewma_prefers_the_fast_upstream(remora, make_upstream, ports):
    policy = {"policies": [{"typed_extension_config": {
        "name": "remora.load_balancers.peak_ewma",
        "typed_config": {"@type": PEAK_EWMA_TYPE, "decay_time": "10s", "default_rtt": "0.010s"}}}]}
    r, port, fast, slow = make_env(remora, make_upstream, ports,
                                   lb_policy="LOAD_BALANCING_POLICY_CONFIG",
                                   load_balancing_policy=policy)
    slow.force_sleep_ms = 40
    counts = count_servers(port, 200)
    assert counts.get("fast", 0) > 150, counts


def test_peak_ewma_policy_list_without_lb_policy(remora, make_upstream, ports):
    # an unknown entry first: skipped, as Envoy does
    policy = {"policies": [
        {"typed_extension_config": {"name": "x", "typed_config": {"@type": "type.googleapis.com/x.Unknown"}}},
        {"typed_extension_config": {"name": "remora.load_balancers.peak_ewma",
                                    "typed_config": {"@type": PEAK_EWMA_TYPE, "decay_time": "5s"}}}]}
    r, port, fast, slow = make_env(remora, make_upstream, ports, load_balancing_policy=policy)
    slow.force_sleep_ms = 40
    counts = count_servers(port, 100)
    assert counts.get("fast", 0) > 75, counts


def test_least_request_avoids_the_host_with_outstanding_requests(remora, make_upstream, ports):
    r, port, fast, slow = make_env(remora, make_upstream, ports, lb_policy="LEAST_REQUEST",
                                   least_request_lb_config={"choice_count": 30})
    slow.force_sleep_ms = 5000
    held = []
    try:
        # Park a request on "slow": with both hosts idle the first draw wins
        # the tie, so each attempt lands there with probability 1/2.
        for _ in range(40):
            before = len(fast.started) + len(slow.started)
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /park HTTP/1.1\r\nhost: t\r\n\r\n")
            held.append(s)
            wait_until(lambda: len(fast.started) + len(slow.started) > before, 5,
                       what="parked request reached an upstream")
            if slow.started:
                break
        assert len(slow.started) == 1, "no request reached the slow upstream"
        counts = count_servers(port, 40)
        assert counts.get("fast", 0) >= 38, counts
    finally:
        for s in held:
            s.close()
