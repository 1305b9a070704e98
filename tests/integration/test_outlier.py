"""Outlier detection: consecutive 5xx ejects a host (it stops receiving
traffic), it comes back after the ejection time, and max_ejection_percent
holds.  Plus the healthy panic threshold."""

import time

from harness import bootstrap, curl, http_listener, route, static_cluster, wait_until


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


def test_consecutive_5xx_ejects_and_returns(remora, make_upstream, ports):
    good, bad = make_upstream("good"), make_upstream("bad")
    bad.force_status = 503
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [good.port, bad.port],
                    {"consecutive_5xx": 3, "interval": "0.2s", "base_ejection_time": "1.5s",
                     "max_ejection_percent": 50}), concurrency=1)
    # round robin alternates: after 3 consecutive 503s from "bad" it is ejected
    for i in range(6):
        curl(f"http://127.0.0.1:{lport}/warm{i}")
    r.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx",
                lambda v: v == 1, timeout=5)
    assert r.stat("cluster.backend.outlier_detection.ejections_active") == 1
    clusters = r.admin_get("/clusters")[2].decode()
    assert f"backend::127.0.0.1:{bad.port}::health_flags::/failed_outlier_check" in clusters
    before = len(bad.requests)
    hits = _hits(lport, 10)
    assert all(h == (200, "good") for h in hits), hits
    assert len(bad.requests) == before, "an ejected host must not get traffic"
    # after base_ejection_time the host is back in rotation
    wait_until(lambda: r.stat("cluster.backend.outlier_detection.ejections_active") == 0, 6,
               what="unejection")
    _hits(lport, 4)
    assert len(bad.requests) > before


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
    r.wait_stat("cluster.backend.outlier_detection.ejections_overflow", lambda v: v >= 1, timeout=5)
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
    r.wait_stat("cluster.backend.outlier_detection.ejections_active", lambda v: v == 1, timeout=5)
    before = len(bad.requests)
    _hits(lport, 6)
    assert len(bad.requests) > before, "in panic mode ejected hosts still get traffic"
    assert r.stat("cluster.backend.lb_healthy_panic") > 0


def _five(make_upstream):
    ups = [make_upstream(f"u{i}") for i in range(5)]
    ups[0].force_status = 500
    return ups


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
    for i in range(400):
        curl(f"http://127.0.0.1:{lport}/s{i}")
        if r.stat("cluster.backend.outlier_detection.ejections_enforced_success_rate"):
            break
    r.wait_stat("cluster.backend.outlier_detection.ejections_enforced_success_rate",
                lambda v: v == 1, timeout=5)
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
    for i in range(400):
        curl(f"http://127.0.0.1:{lport}/f{i}")
        if r.stat("cluster.backend.outlier_detection.ejections_enforced_failure_percentage"):
            break
    r.wait_stat("cluster.backend.outlier_detection.ejections_enforced_failure_percentage",
                lambda v: v == 1, timeout=5)
    assert r.stat("cluster.backend.outlier_detection.ejections_enforced_success_rate") == 0
    before = len(ups[0].requests)
    _hits(lport, 12)
    assert len(ups[0].requests) == before
