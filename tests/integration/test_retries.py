"""Retries (route/virtual-host retry_policy, x-envoy-retry-on), per-try
timeouts, and the max_requests / max_retries circuit breakers, against the
controllable upstream (status / reset / sleep per request) and real curl."""

import threading
import time

from harness import (HttpConn, bootstrap, closed_port, curl, http_listener, route,
                     static_cluster)


def _cfg(admin, lport, endpoints, retry_policy=None, cluster_extra=None, vh_extra=None,
         route_extra=None):
    action = {}
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    action.update(route_extra or {})
    rc = {"name": "local_route", "virtual_hosts": [dict({
        "name": "local_service", "domains": ["*"],
        "routes": [route({"prefix": "/"}, "backend", **action)]}, **(vh_extra or {}))]}
    return bootstrap(admin, [http_listener(lport, rc=rc)],
                     [static_cluster("backend", endpoints, **(cluster_extra or {}))])


def test_retries_exhausted_on_persistent_5xx(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 2,
                     "retry_back_off": {"base_interval": "0.01s"}},
                    vh_extra={"include_attempt_count_in_response": True}))
    res = curl(f"http://127.0.0.1:{lport}/fail?status=503")
    assert res.status == 503, res
    assert res.headers.get("x-envoy-attempt-count") == "3", res.headers
    # num_retries + 1 attempts reached the upstream
    assert len([q for q in upstream.requests if q["path"].startswith("/fail")]) == 3
    s = r.stats()
    assert s["cluster.backend.upstream_rq_retry"] == 2
    assert s["cluster.backend.upstream_rq_retry_limit_exceeded"] == 1
    assert s["cluster.backend.upstream_rq_retry_success"] == 0


def test_no_retry_for_non_retriable_status(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, {"retry_on": "5xx", "num_retries": 3}))
    res = curl(f"http://127.0.0.1:{lport}/nf?status=404")
    assert res.status == 404
    assert len(upstream.requests) == 1
    assert r.stat("cluster.backend.upstream_rq_retry") == 0


def test_retriable_status_codes_and_header_policy(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port))   # no route policy
    # x-envoy-retry-on / x-envoy-max-retries from the request
    res = curl(f"http://127.0.0.1:{lport}/h?status=502", "-H", "x-envoy-retry-on: gateway-error",
               "-H", "x-envoy-max-retries: 1")
    assert res.status == 502
    assert len(upstream.requests) == 2
    res = curl(f"http://127.0.0.1:{lport}/h2?status=418", "-H",
               "x-envoy-retry-on: retriable-status-codes")
    # retriable-status-codes without codes configured: nothing matches
    assert res.status == 418 and len(upstream.requests) == 3
    assert r.stat("cluster.backend.upstream_rq_retry") == 1


def test_retry_moves_to_another_host_with_previous_hosts(remora, make_upstream, ports):
    good, bad = make_upstream("good"), make_upstream("bad")
    bad.force_status = 503
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, [("127.0.0.1", bad.port), ("127.0.0.1", good.port)],
                    {"retry_on": "5xx", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.005s"},
                     "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
                     # RANDOM over 2 hosts: 50 re-picks make a repeat of the failed
                     # host a 2^-50 event, so the test cannot flake
                     "host_selection_retry_max_attempts": 50},
                    cluster_extra={"lb_policy": "RANDOM"}))
    n = 40
    for i in range(n):
        res = curl(f"http://127.0.0.1:{lport}/p{i}")
        # one retry is always enough: the retry never picks the failed host again
        assert res.status == 200, (i, res)
        assert res.json()["server"] == "good"
    s = r.stats()
    assert s["cluster.backend.upstream_rq_retry"] == len(bad.requests) > 0
    assert s["cluster.backend.upstream_rq_retry_success"] == len(bad.requests)
    assert len(good.requests) == n


def test_connect_failure_retry(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    dead = closed_port()
    r = remora(_cfg(admin, lport, [("127.0.0.1", dead), ("127.0.0.1", upstream.port)],
                    {"retry_on": "connect-failure", "num_retries": 2,
                     "retry_back_off": {"base_interval": "0.005s"},
                     "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}]}))
    for i in range(10):
        res = curl(f"http://127.0.0.1:{lport}/c{i}")
        assert res.status == 200, res
    s = r.stats()
    assert s["cluster.backend.upstream_cx_connect_fail"] >= 1
    assert s["cluster.backend.upstream_rq_retry"] == s["cluster.backend.upstream_cx_connect_fail"]


def test_reset_before_headers_is_retried(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "reset", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.005s"}}))
    res = curl(f"http://127.0.0.1:{lport}/r?action=reset")
    assert res.status == 503, res
    assert len(upstream.requests) == 2
    assert r.stat("cluster.backend.upstream_rq_retry") == 1


def test_body_replayed_and_limit(remora, upstream, ports, tmp_path):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.005s"}},
                    route_extra=None, vh_extra={"per_request_buffer_limit_bytes": 4096}))
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    res = curl(f"http://127.0.0.1:{lport}/small?status=503", "--data-binary", f"@{small}")
    assert res.status == 503
    reqs = [q for q in upstream.requests if q["path"].startswith("/small")]
    assert len(reqs) == 2
    assert all(q["body_length"] == 1000 for q in reqs), reqs   # replayed in full
    big = tmp_path / "big"
    big.write_bytes(b"y" * 20000)
    res = curl(f"http://127.0.0.1:{lport}/big?status=503", "--data-binary", f"@{big}")
    assert res.status == 503
    reqs = [q for q in upstream.requests if q["path"].startswith("/big")]
    assert len(reqs) == 1, "a body over per_request_buffer_limit_bytes must not be retried"
    assert reqs[0]["body_length"] == 20000
    # chunked upload (no content-length) is replayed too
    res = curl(f"http://127.0.0.1:{lport}/chunked?status=503", "-H", "Transfer-Encoding: chunked",
               "--data-binary", f"@{small}")
    reqs = [q for q in upstream.requests if q["path"].startswith("/chunked")]
    assert len(reqs) == 2 and all(q["body_length"] == 1000 for q in reqs), reqs


def test_per_try_timeout(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.3s",
                     "retry_back_off": {"base_interval": "0.001s"}}))
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/slow?sleep_ms=3000", timeout=15)
    elapsed = time.monotonic() - t0
    assert res.status == 504, res
    # two tries of 0.3 s each: measured, with a generous upper bound
    assert 0.55 <= elapsed < 2.5, elapsed
    s = r.stats()
    assert s["cluster.backend.upstream_rq_per_try_timeout"] == 2
    assert s["cluster.backend.upstream_rq_retry"] == 1


def test_max_requests_breaker(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    n_allowed, extra = 3, 4
    r = remora(_cfg(admin, lport, upstream.port, cluster_extra={
        "circuit_breakers": {"thresholds": [{"max_requests": n_allowed, "track_remaining": True}]}}))
    results = []
    lock = threading.Lock()

    def one(i):
        res = curl(f"http://127.0.0.1:{lport}/slow{i}?sleep_ms=1500", timeout=15)
        with lock:
            results.append(res)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n_allowed + extra)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(20)
    overflowed = [x for x in results if x.status == 503]
    assert len(results) == n_allowed + extra
    assert len(overflowed) == extra, [x.status for x in results]
    assert all(x.headers.get("x-envoy-overloaded") == "true" for x in overflowed)
    assert sum(1 for x in results if x.status == 200) == n_allowed
    assert r.stat("cluster.backend.upstream_rq_pending_overflow") == extra
    r.wait_stat("cluster.backend.circuit_breakers.default.remaining_rq",
                lambda v: v == n_allowed, timeout=5)


def test_max_retries_breaker(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, {"retry_on": "5xx", "num_retries": 3},
                    cluster_extra={"circuit_breakers": {"thresholds": [{"max_retries": 0}]}}))
    res = curl(f"http://127.0.0.1:{lport}/x?status=503")
    assert res.status == 503
    assert len(upstream.requests) == 1
    assert r.stat("cluster.backend.upstream_rq_retry_overflow") == 1


def test_max_connections_and_pending_queue(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, cluster_extra={
        "circuit_breakers": {"thresholds": [{"max_connections": 2, "max_pending_requests": 2}]}}),
        concurrency=1)
    results = {}
    lock = threading.Lock()

    def one(i):
        res = curl(f"http://127.0.0.1:{lport}/q{i}?sleep_ms=800", timeout=15)
        with lock:
            results[i] = res

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.08)
    for t in threads:
        t.join(20)
    statuses = sorted(x.status for x in results.values())
    # 2 connections serve 2 requests at once, 2 more wait in the queue and are
    # served on the same connections, the last 2 overflow
    assert statuses == [200, 200, 200, 200, 503, 503], statuses
    assert all(x.headers.get("x-envoy-overloaded") == "true"
               for x in results.values() if x.status == 503)
    assert upstream.connections <= 2, upstream.connections
    s = r.stats()
    assert s["cluster.backend.upstream_rq_pending_total"] == 2
    assert s["cluster.backend.upstream_rq_pending_overflow"] == 2
    assert s["cluster.backend.upstream_cx_overflow"] >= 4
    assert s["cluster.backend.upstream_rq_pending_active"] == 0


def test_retry_budget_caps_concurrent_retries(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.001s"}},
                    cluster_extra={"circuit_breakers": {"thresholds": [{
                        "retry_budget": {"budget_percent": {"value": 20.0},
                                         "min_retry_concurrency": 1}}]}}))
    n = 5
    threads = []
    for i in range(n):
        # every attempt fails slowly, so all five want to retry at about the
        # same time while the one retry allowed (20 % of 5) is in flight
        t = threading.Thread(target=curl, args=(f"http://127.0.0.1:{lport}/b{i}?status=503&sleep_ms=700",),
                             kwargs={"timeout": 15})
        threads.append(t)
        t.start()
    for t in threads:
        t.join(20)
    s = r.stats()
    assert s["cluster.backend.upstream_rq_retry"] == 1, s["cluster.backend.upstream_rq_retry"]
    assert s["cluster.backend.upstream_rq_retry_overflow"] == n - 1
    assert len(upstream.requests) == n + 1


def test_per_try_idle_timeout(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 1, "per_try_idle_timeout": "0.3s",
                     "retry_back_off": {"base_interval": "0.001s"}}))
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/idle?sleep_ms=3000", timeout=15)
    elapsed = time.monotonic() - t0
    assert res.status == 504, res
    assert 0.55 <= elapsed < 2.5, elapsed        # two idle tries of 0.3 s
    s = r.stats()
    assert s["cluster.backend.upstream_rq_per_try_idle_timeout"] == 2
    assert s["cluster.backend.upstream_rq_retry"] == 1
    # a prompt answer is not affected
    assert curl(f"http://127.0.0.1:{lport}/ok?sleep_ms=50").status == 200


def test_per_host_max_connections(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port, cluster_extra={
        "circuit_breakers": {"per_host_thresholds": [{"max_connections": 1}]}}), concurrency=1)
    results = []
    lock = threading.Lock()

    def one(i):
        res = curl(f"http://127.0.0.1:{lport}/ph{i}?sleep_ms=400", timeout=15)
        with lock:
            results.append(res.status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(20)
    assert results == [200, 200, 200], results
    assert upstream.connections == 1, upstream.connections   # queued, then reused
    s = r.stats()
    assert s["cluster.backend.upstream_rq_pending_total"] == 2
    assert s["cluster.backend.upstream_cx_overflow"] >= 2


def _attempts(upstream, prefix):
    return len([q for q in upstream.requests if q["path"].startswith(prefix)])


def test_retriable_headers(remora, upstream, ports):
    """retry_on retriable-headers: a response matching any retriable_headers
    matcher is retried (here every attempt matches, so num_retries + 1
    attempts); other responses are not."""
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "retriable-headers", "num_retries": 2,
                     "retry_back_off": {"base_interval": "0.005s"},
                     "retriable_headers": [
                         {"name": "x-upstream-pushback"},
                         {"name": "x-state", "string_match": {"prefix": "busy"}}]}))
    res = curl(f"http://127.0.0.1:{lport}/pb?resp_header=x-upstream-pushback:1")
    assert res.status == 200 and res.headers.get("x-upstream-pushback") == "1", res
    assert _attempts(upstream, "/pb") == 3
    res = curl(f"http://127.0.0.1:{lport}/st?resp_header=x-state:busy-now")
    assert res.status == 200 and _attempts(upstream, "/st") == 3
    res = curl(f"http://127.0.0.1:{lport}/idle?resp_header=x-state:idle")
    assert res.status == 200 and _attempts(upstream, "/idle") == 1
    # a 5xx without a matching header is not retriable under this policy
    res = curl(f"http://127.0.0.1:{lport}/err?status=503")
    assert res.status == 503 and _attempts(upstream, "/err") == 1
    s = r.stats()
    assert s["cluster.backend.upstream_rq_retry"] == 4
    assert s["cluster.backend.upstream_rq_retry_limit_exceeded"] == 2


def test_retriable_header_names_from_the_request(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.005s"}}))
    hdr = ("-H", "x-envoy-retriable-header-names: x-one, X-Two")
    # names only count when retriable-headers is in retry_on
    res = curl(f"http://127.0.0.1:{lport}/a?resp_header=x-two:v", *hdr)
    assert res.status == 200 and _attempts(upstream, "/a") == 1
    on = ("-H", "x-envoy-retry-on: retriable-headers")
    res = curl(f"http://127.0.0.1:{lport}/b?resp_header=x-two:v", *hdr, *on)
    assert res.status == 200 and _attempts(upstream, "/b") == 2
    res = curl(f"http://127.0.0.1:{lport}/c?resp_header=x-three:v", *hdr, *on)
    assert res.status == 200 and _attempts(upstream, "/c") == 1
    assert r.stat("cluster.backend.upstream_rq_retry") == 1


def test_retriable_request_headers(remora, upstream, ports):
    """retriable_request_headers: a request matching none of them is never
    retried (nor hedged), whatever the response."""
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, upstream.port,
                    {"retry_on": "5xx", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.005s"},
                     "retriable_request_headers": [
                         {"name": "x-idempotent", "present_match": True},
                         {"name": ":method", "string_match": {"exact": "PUT"}}]}))
    res = curl(f"http://127.0.0.1:{lport}/no?status=503")
    assert res.status == 503 and _attempts(upstream, "/no") == 1
    res = curl(f"http://127.0.0.1:{lport}/yes?status=503", "-H", "x-idempotent: 1")
    assert res.status == 503 and _attempts(upstream, "/yes") == 2
    res = curl(f"http://127.0.0.1:{lport}/put?status=503", "-X", "PUT")
    assert res.status == 503 and _attempts(upstream, "/put") == 2
    assert r.stat("cluster.backend.upstream_rq_retry") == 2
