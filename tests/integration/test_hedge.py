"""Request hedging (hedge_policy.hedge_on_per_try_timeout) against two real
upstreams, one slow (every answer waits SLOW_MS) and one fast.

Remora runs with one worker and ROUND_ROBIN, so consecutive requests start
on alternate hosts: of any two requests, one starts on the slow host, whose
per-try timeout then hedges (or, without hedging, retries) to the fast one.
"""

import re
import time

from harness import bootstrap, curl, http_listener, route, static_cluster, wait_until

SLOW_MS = 4000
PER_TRY = "0.2s"


def _cfg(admin, lport, slow, fast, hedge, vh_hedge=None, num_retries=1, per_try=PER_TRY):
    rp = {"retry_on": "5xx", "num_retries": num_retries, "per_try_timeout": per_try,
          "retry_back_off": {"base_interval": "0.01s"},
          "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
          "host_selection_retry_max_attempts": 5}
    action = {"retry_policy": rp, "timeout": "10s"}
    if hedge is not None:
        action["hedge_policy"] = {"hedge_on_per_try_timeout": hedge}
    vh = {"name": "local_service", "domains": ["*"],
          "include_attempt_count_in_response": True,
          "routes": [route({"prefix": "/"}, "backend", **action)]}
    if vh_hedge is not None:
        vh["hedge_policy"] = vh_hedge
    rc = {"name": "local_route", "virtual_hosts": [vh]}
    return bootstrap(admin, [http_listener(lport, rc=rc)],
                     [static_cluster("backend", [("127.0.0.1", slow.port), ("127.0.0.1", fast.port)],
                                     lb_policy="ROUND_ROBIN")])


def _host_stat(r, port, name):
    st, _, body = r.admin_get("/clusters")
    assert st == 200
    m = re.search(rf"^backend::127\.0\.0\.1:{port}::{name}::(\d+)$", body.decode(), re.M)
    assert m, body.decode()
    return int(m.group(1))


def _run(r, lport, n):
    """n sequential requests; returns [(response, seconds)]."""
    out = []
    for i in range(n):
        t0 = time.monotonic()
        res = curl(f"http://127.0.0.1:{lport}/h{i}", timeout=20)
        out.append((res, time.monotonic() - t0))
    return out


def _pair(make_upstream):
    slow, fast = make_upstream("slow"), make_upstream("fast")
    slow.force_sleep_ms = SLOW_MS
    return slow, fast


def test_hedging_returns_the_fast_copy(remora, make_upstream, ports):
    slow, fast = _pair(make_upstream)
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, slow, fast, hedge=True), concurrency=1)
    results = _run(r, lport, 4)
    for res, secs in results:
        assert res.status == 200, res
        assert res.json()["server"] == "fast", res
        # the slow copy would take 4 s; a hedge answers after ~0.2 s
        assert secs < SLOW_MS / 1000 / 2, (secs, res)
    hedged = len(slow.started)
    # round robin from the first endpoint; each hedge also takes a pick, so
    # every request here starts on the slow host (at least every other one would)
    assert hedged >= 2, slow.started
    assert sum(1 for res, _ in results
               if res.headers.get("x-envoy-attempt-count") == "2") == hedged
    s = r.stats()
    # Envoy: a hedged ("soft") per-try timeout is not upstream_rq_per_try_timeout;
    # each hedge is a retry
    assert s["cluster.backend.upstream_rq_per_try_timeout"] == 0
    assert s["cluster.backend.upstream_rq_retry"] == hedged
    assert s["cluster.backend.upstream_rq_total"] == 4 + hedged
    assert s["cluster.backend.upstream_rq_retry_success"] == hedged
    assert s["cluster.backend.upstream_rq_tx_reset"] == hedged   # the losers
    assert s["cluster.backend.upstream_rq_timeout"] == 0
    # the losers' connections were closed, not pooled: long before the slow
    # upstream would have answered, no connection to it is left open
    assert _host_stat(r, slow.port, "cx_active") == 0
    assert _host_stat(r, slow.port, "rq_active") == 0
    assert _host_stat(r, slow.port, "rq_error") == 0   # losing is not an error
    assert s["cluster.backend.upstream_rq_active"] == 0


def test_without_hedging_per_try_timeout_cancels_and_retries(remora, make_upstream, ports):
    slow, fast = _pair(make_upstream)
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, slow, fast, hedge=False,
                    vh_hedge={"hedge_on_per_try_timeout": True}),   # the route's policy wins
               concurrency=1)
    results = _run(r, lport, 4)
    for res, secs in results:
        assert res.status == 200 and res.json()["server"] == "fast", res
        assert secs < SLOW_MS / 1000 / 2, (secs, res)
    timed_out = len(slow.started)
    assert timed_out >= 2
    s = r.stats()
    assert s["cluster.backend.upstream_rq_per_try_timeout"] == timed_out
    assert s["cluster.backend.upstream_rq_retry"] == timed_out
    assert s["cluster.backend.upstream_rq_tx_reset"] == 0
    assert _host_stat(r, slow.port, "cx_active") == 0


def test_hedge_first_attempt_wins_when_it_answers_first(remora, make_upstream, ports):
    """Both hosts answer after 0.8 s; the per-try timeout is 0.5 s.  With
    hedging the first attempt is not cancelled and answers at ~0.8 s, well
    before the hedge (started at ~0.5 s, answering at ~1.3 s) - so the answer comes
    from the host that got the first attempt, and the other host's
    connection is reset."""
    a, b = make_upstream("a"), make_upstream("b")
    a.force_sleep_ms = b.force_sleep_ms = 800
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, a, b, hedge=None, vh_hedge={"hedge_on_per_try_timeout": True},
                    per_try="0.5s"), concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/first", timeout=20)
    assert res.status == 200, res
    # one worker, round robin from the first endpoint: the first attempt
    # went to a, the hedge to b.  Without hedging b would answer.
    assert res.json()["server"] == "a", res
    loser = b
    assert res.headers.get("x-envoy-attempt-count") == "2", res.headers
    assert len(loser.started) == 1, loser.started
    wait_until(lambda: _host_stat(r, loser.port, "cx_active") == 0, 5, what="loser closed")
    s = r.stats()
    assert s["cluster.backend.upstream_rq_per_try_timeout"] == 0
    assert s["cluster.backend.upstream_rq_retry"] == 1
    assert s["cluster.backend.upstream_rq_tx_reset"] == 1


def test_hedge_retries_exhausted_keeps_waiting(remora, make_upstream, ports):
    """num_retries 0: a hedged per-try timeout cannot start another attempt;
    Envoy keeps waiting for the first (soft timeout) instead of failing."""
    a = make_upstream("a")
    a.force_sleep_ms = 700
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, a, a, hedge=True, num_retries=0), concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/wait", timeout=20)
    assert res.status == 200 and res.json()["server"] == "a", res
    s = r.stats()
    assert s["cluster.backend.upstream_rq_per_try_timeout"] == 0
    assert s["cluster.backend.upstream_rq_retry"] == 0
    assert s["cluster.backend.upstream_rq_retry_limit_exceeded"] == 1
    assert len(a.requests) == 1


def test_hedge_bounded_by_route_timeout(remora, make_upstream, ports):
    slow, fast = _pair(make_upstream)
    fast.force_sleep_ms = SLOW_MS
    admin, lport = ports.get(), ports.get()
    cfg = _cfg(admin, lport, slow, fast, hedge=True)
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = "0.7s"
    r = remora(cfg, concurrency=1)
    t0 = time.monotonic()
    res = curl(f"http://127.0.0.1:{lport}/both-slow", timeout=20)
    secs = time.monotonic() - t0
    assert res.status == 504, res
    assert secs < SLOW_MS / 1000 / 2, secs
    s = r.stats()
    # both attempts (the first, hedged one and the retry) time out
    assert s["cluster.backend.upstream_rq_timeout"] == 2
    assert s["cluster.backend.upstream_rq_retry"] == 1
    wait_until(lambda: _host_stat(r, slow.port, "cx_active") == 0 and
               _host_stat(r, fast.port, "cx_active") == 0, 5, what="connections closed")


def test_hedged_attempt_retriable_answer_waits_for_the_other(remora, make_upstream, ports):
    """The first attempt (a) answers 503 at 0.5 s after the hedge to b
    started (0.2 s); a was already retried, so its 503 is dropped while b may
    still answer, and b's 200 (at ~0.9 s) is the response.  The POST body is
    replayed to the hedge."""
    a, b = make_upstream("a"), make_upstream("b")
    a.force_sleep_ms, a.force_status = 500, 503
    b.force_sleep_ms = 700
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, a, b, hedge=True), concurrency=1)
    body = "x" * 5000
    res = curl(f"http://127.0.0.1:{lport}/post", "-X", "POST", "--data-binary", body, timeout=20)
    assert res.status == 200, res
    j = res.json()
    assert j["server"] == "b" and j["body_length"] == len(body), j
    assert len(a.requests) == 1 and a.requests[0]["body_length"] == len(body)
    assert _host_stat(r, a.port, "rq_error") == 1
    s = r.stats()
    assert s["cluster.backend.upstream_rq_retry"] == 1
    assert s["cluster.backend.upstream_rq_per_try_timeout"] == 0
    assert s["cluster.backend.upstream_rq_tx_reset"] == 0   # nobody lost a race
    assert s["cluster.backend.upstream_rq_active"] == 0


def test_hedge_fails_fast_then_first_attempt_answers(remora, make_upstream, ports):
    """The hedge (to b) gets a 503 with no retries left while the first
    attempt (a) is still running: the 503 is dropped and a's late 200 wins."""
    a, b = make_upstream("a"), make_upstream("b")
    a.force_sleep_ms = 800
    b.force_status = 503
    admin, lport = ports.get(), ports.get()
    r = remora(_cfg(admin, lport, a, b, hedge=True), concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/late", timeout=20)
    assert res.status == 200 and res.json()["server"] == "a", res
    assert len(b.requests) == 1
    s = r.stats()
    assert s["cluster.backend.upstream_rq_retry"] == 1
    assert s["cluster.backend.upstream_rq_retry_limit_exceeded"] == 1
    assert s["cluster.backend.upstream_rq_retry_success"] == 1
    assert _host_stat(r, b.port, "rq_error") == 1
    assert _host_stat(r, a.port, "rq_success") == 1
