"""Outlier detection: consecutive 5xx ejects a host (it stops receiving
traffic), it comes back after the ejection time, and max_ejection_percent
holds.  Plus the healthy panic threshold, and locally originated errors
(split_external_local_origin_errors) from the router and tcp_proxy."""

import socket
import time

from harness import (bootstrap, curl, curl_multi, http_listener, route, static_cluster,
                     tcp_proxy_listener, wait_until)


def _cfg(admin, lport, ports_list, od, panic=None):
    extra = {"outlier_detection": od, "lb_policy": "ROUND_ROBIN"}
    if panic is not None:
        extra["common_lb_config"] = {"healthy_panic_threshold": {"value": panic}}
    return bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                     [static_cluster("backend", [("127.0.0.1", p) for p in ports_list], **extra)])


def _hits(lport, n):
    names = []
    for i in range(n):
        res = curl(f"http://127.0.0.1:{lport}/o{i}")
        names.append((res.status, res.json()["server"] if res.status == 200 else None))
    return names


# Bounds for waiting on a state (ejection seen in /stats, and so on): generous,
# since a loaded machine (load average > 10) stretches every step; a test that
# passes returns as soon as the state is there.
WAIT_S = 30


def test_consecutive_5xx_ejects_and_returns(remora, make_upstream, ports):
    good, bad = make_upstream("good"), make_upstream("bad")
    bad.force_status = 503
    admin, lport = ports.get(), ports.get()
    base = 3.0
    r = remora(_cfg(admin, lport, [good.port, bad.port],
                    {"consecutive_5xx": 3, "interval": "0.2s", "base_ejection_time": f"{base}s",
                     "max_ejection_percent": 50}), concurrency=1)
    # round robin alternates: after 3 consecutive 503s from "bad" it is ejected.
    # The ejection starts after the request that brought bad's third 503 was
    # sent, so bad is out of rotation at least until t_trigger + base: only
    # what happens before that is judged (a slow machine shortens the window,
    # it does not make the test fail).
    t_trigger = None
    for i in range(6):
        t = time.time()
        curl(f"http://127.0.0.1:{lport}/warm{i}")
        if t_trigger is None and len(bad.requests) >= 3:
            t_trigger = t
    assert t_trigger is not None, len(bad.requests)
    until = t_trigger + base
    r.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx",
                lambda v: v == 1, timeout=WAIT_S)
    active = r.stat("cluster.backend.outlier_detection.ejections_active")
    clusters = r.admin_get("/clusters")[2].decode()
    if time.time() < until:
        assert active == 1
        assert f"backend::127.0.0.1:{bad.port}::health_flags::/failed_outlier_check" in clusters
    before = len(bad.requests)
    hits = []
    while len(hits) < 10 and time.time() < until:
        res = curl(f"http://127.0.0.1:{lport}/o{len(hits)}")
        hits.append((time.time(), res.status, res.json()["server"] if res.status == 200 else None))
    judged = [h[1:] for h in hits if h[0] < until]
    assert judged, f"no request finished within the {base}s ejection (machine too slow?)"
    assert all(h == (200, "good") for h in judged), judged
    early = [q["path"] for q in bad.requests[before:] if q["time"] < until]
    assert not early, f"an ejected host must not get traffic: {early}"
    # after base_ejection_time the host is back in rotation
    wait_until(lambda: r.stat("cluster.backend.outlier_detection.ejections_active") == 0, WAIT_S,
               what="unejection")
    n = len(bad.requests)
    _hits(lport, 4)
    assert len(bad.requests) > n


def test_max_ejection_percent(remora, make_upstream, ports):
    good = make_upstream("good")
    bads = [make_upstream(f"bad{i}") for i in range(2)]
    for b in bads:
        b.force_status = 500
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [good.port] + [b.port for b in bads],
                    {"consecutive_5xx": 2, "interval": "1s", "base_ejection_time": "30s",
                     "max_ejection_percent": 40}), concurrency=1)
    for i in range(30):
        curl(f"http://127.0.0.1:{lport}/m{i}")
    r.wait_stat("cluster.backend.outlier_detection.ejections_overflow", lambda v: v >= 1,
                timeout=WAIT_S)
    # one of three hosts (33 %) may be ejected; a second (67 %) would exceed 40 %
    assert r.stat("cluster.backend.outlier_detection.ejections_active") == 1


def test_panic_threshold_uses_all_hosts(remora, make_upstream, ports):
    good, bad = make_upstream("good"), make_upstream("bad")
    bad.force_status = 503
    admin, lport = ports.get(), ports.get()
    # with one of two hosts ejected, 50 % healthy is below a 60 % panic threshold:
    # balance across all hosts again
    r = remora(_cfg(admin, lport, [good.port, bad.port],
                    {"consecutive_5xx": 2, "interval": "1s", "base_ejection_time": "30s",
                     "max_ejection_percent": 100}, panic=60), concurrency=1)
    for i in range(8):
        curl(f"http://127.0.0.1:{lport}/p{i}")
    r.wait_stat("cluster.backend.outlier_detection.ejections_active", lambda v: v == 1,
                timeout=WAIT_S)
    before = len(bad.requests)
    _hits(lport, 6)
    assert len(bad.requests) > before, "in panic mode ejected hosts still get traffic"
    assert r.stat("cluster.backend.lb_healthy_panic") > 0


def _five(make_upstream):
    ups = [make_upstream(f"u{i}") for i in range(5)]
    ups[0].force_status = 500
    return ups


def _drive_until(r, lport, stat, batch=50):
    """Send requests until stat moves (bounded by WAIT_S).  The success-rate and
    failure-percentage sweeps only judge an interval in which every host had
    the minimum volume, so the rate matters: batches of requests in one curl
    over one kept-alive connection (round robin spreads each batch evenly),
    not a process per request, which a loaded machine slows below the volume
    of an interval."""
    deadline = time.monotonic() + WAIT_S
    k = 0
    while not r.stat(stat):
        assert time.monotonic() < deadline, f"{stat} did not move within {WAIT_S}s of traffic"
        rc, err, res = curl_multi([f"http://127.0.0.1:{lport}/b{k}/{i}" for i in range(batch)])
        assert rc == 0 and len(res) == batch, (rc, err)
        k += 1


def test_success_rate_ejection(remora, make_upstream, ports):
    ups = _five(make_upstream)
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [u.port for u in ups],
                    {"consecutive_5xx": 0, "consecutive_gateway_failure": 0, "interval": "1s",
                     "base_ejection_time": "30s", "max_ejection_percent": 50,
                     "success_rate_request_volume": 5, "success_rate_minimum_hosts": 5}),
               concurrency=1)
    # 4 hosts at 100 %, one at 0 %: mean 80, stdev 40, limit 80 - 1.9 x 40 = 4
    # requests keep flowing until a sweep judges an interval in which every
    # host has the minimum volume
    _drive_until(r, lport, "cluster.backend.outlier_detection.ejections_enforced_success_rate")
    r.wait_stat("cluster.backend.outlier_detection.ejections_enforced_success_rate",
                lambda v: v == 1, timeout=WAIT_S)
    before = len(ups[0].requests)
    hits = _hits(lport, 12)
    assert all(h[0] == 200 for h in hits), hits
    assert len(ups[0].requests) == before


def test_failure_percentage_ejection(remora, make_upstream, ports):
    ups = _five(make_upstream)
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [u.port for u in ups],
                    {"consecutive_5xx": 0, "consecutive_gateway_failure": 0, "interval": "1s",
                     "base_ejection_time": "30s", "max_ejection_percent": 50,
                     "enforcing_success_rate": 0, "enforcing_failure_percentage": 100,
                     "failure_percentage_request_volume": 5, "failure_percentage_minimum_hosts": 5}),
               concurrency=1)
    _drive_until(r, lport, "cluster.backend.outlier_detection.ejections_enforced_failure_percentage")
    r.wait_stat("cluster.backend.outlier_detection.ejections_enforced_failure_percentage",
                lambda v: v == 1, timeout=WAIT_S)
    assert r.stat("cluster.backend.outlier_detection.ejections_enforced_success_rate") == 0
    before = len(ups[0].requests)
    _hits(lport, 12)
    assert len(ups[0].requests) == before


# ---- locally originated errors (split_external_local_origin_errors) -------------------

OD = "cluster.backend.outlier_detection."


def test_split_local_origin_ejects_refusing_host_not_500s(remora, make_upstream, ports):
    """Split on: a host that refuses connections is ejected by
    consecutive_local_origin_failure; a host answering 500s is not (its
    connections work), and consecutive_5xx is out of reach here."""
    good, errs = make_upstream("good"), make_upstream("errs")
    errs.force_status = 500
    dead = ports.get()   # nobody listens: connections are refused
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [good.port, errs.port, dead],
                    {"split_external_local_origin_errors": True,
                     "consecutive_local_origin_failure": 3, "consecutive_5xx": 1000,
                     "consecutive_gateway_failure": 1000, "interval": "0.2s",
                     "base_ejection_time": "60s", "max_ejection_percent": 100}), concurrency=1)
    statuses = [curl(f"http://127.0.0.1:{lport}/a{i}").status for i in range(9)]
    # round robin: three of each; the refused ones are 503s
    assert sorted(statuses) == [200] * 3 + [500] * 3 + [503] * 3, statuses
    r.wait_stat(OD + "ejections_enforced_consecutive_local_origin_failure", lambda v: v == 1,
                timeout=WAIT_S)
    assert r.stat(OD + "ejections_detected_consecutive_local_origin_failure") == 1
    assert r.stat(OD + "ejections_active") == 1
    clusters = r.admin_get("/clusters")[2].decode()
    assert f"backend::127.0.0.1:{dead}::health_flags::/failed_outlier_check" in clusters
    assert f"backend::127.0.0.1:{errs.port}::health_flags::healthy" in clusters
    # from now on only good and errs answer, alternately; errs stays in
    before = len(errs.requests)
    statuses = [curl(f"http://127.0.0.1:{lport}/b{i}").status for i in range(12)]
    assert sorted(statuses) == [200] * 6 + [500] * 6, statuses
    assert len(errs.requests) == before + 6
    assert r.stat(OD + "ejections_detected_consecutive_local_origin_failure") == 1
    assert r.stat(OD + "ejections_detected_consecutive_5xx") == 0
    assert r.stat(OD + "ejections_enforced_total") == 1
    assert r.stat(OD + "ejections_active") == 1


def test_split_off_connect_failures_count_as_5xx(remora, make_upstream, ports):
    good = make_upstream("good")
    dead = ports.get()
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [good.port, dead],
                    {"consecutive_5xx": 3, "consecutive_local_origin_failure": 1,
                     "interval": "0.2s", "base_ejection_time": "60s",
                     "max_ejection_percent": 100}), concurrency=1)
    statuses = [curl(f"http://127.0.0.1:{lport}/c{i}").status for i in range(6)]
    assert sorted(statuses) == [200] * 3 + [503] * 3, statuses
    r.wait_stat(OD + "ejections_enforced_consecutive_5xx", lambda v: v == 1, timeout=WAIT_S)
    # the local-origin detector does not run without the split
    assert r.stat(OD + "ejections_detected_consecutive_local_origin_failure") == 0
    statuses = [curl(f"http://127.0.0.1:{lport}/d{i}").status for i in range(6)]
    assert statuses == [200] * 6, statuses


def _tcp_roundtrip(port, payload=b"ping"):
    """True if the proxied connection echoes payload, False if it is closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            try:
                chunk = s.recv(64)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            got += chunk
        return got == payload


def test_tcp_proxy_connect_failures_eject(remora, echo_server, ports):
    """tcp_proxy reports connect failures (and successes) as local-origin
    results, as Envoy's does."""
    dead = ports.get()
    admin, lport = ports.get(), ports.get()
    cluster = static_cluster("backend", [("127.0.0.1", echo_server.port), ("127.0.0.1", dead)],
                             lb_policy="ROUND_ROBIN",
                             outlier_detection={"split_external_local_origin_errors": True,
                                                "consecutive_local_origin_failure": 2,
                                                "interval": "0.2s", "base_ejection_time": "60s",
                                                "max_ejection_percent": 100})
    r = remora(bootstrap(admin, [tcp_proxy_listener(lport, "backend")], [cluster]), concurrency=1)
    results = [_tcp_roundtrip(lport) for _ in range(4)]
    assert sorted(results) == [False, False, True, True], results
    r.wait_stat(OD + "ejections_enforced_consecutive_local_origin_failure", lambda v: v == 1,
                timeout=WAIT_S)
    results = [_tcp_roundtrip(lport) for _ in range(4)]
    assert results == [True] * 4, results
