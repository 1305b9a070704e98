"""Sidecar lifecycle: SIGTERM stops inbound first while outbound keeps
serving, --exit-on-zero-active-connections, POST /quitquitquit (drain, then
exit 0), /drain_listeners?inboundonly, and `remora wait-ready` for a
postStart hook."""

import json
import os
import signal
import subprocess
import time

from harness import (bootstrap, connect_refused, curl, http_listener, remora_bin, route,
                     spawn, static_cluster, wait_until)


def _sidecar_config(admin, inbound, outbound, upstream_port):
    """An inbound listener (app-facing service port) and an outbound one
    (the app's calls out), both to the same upstream."""
    lin = http_listener(inbound, [route({"prefix": "/"}, "backend")], name="inbound",
                        stat_prefix="inbound_http")
    lin["traffic_direction"] = "INBOUND"
    lout = http_listener(outbound, [route({"prefix": "/"}, "backend")], name="outbound",
                         stat_prefix="outbound_http")
    lout["traffic_direction"] = "OUTBOUND"
    return bootstrap(admin, [lin, lout], [static_cluster("backend", upstream_port)])


def _slow_curl(url, out_path, max_time=30):
    return subprocess.Popen(["curl", "-sS", "--max-time", str(max_time), "-o", out_path,
                             "-w", "%{http_code}", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _reap(p):
    if p.poll() is None:
        p.kill()
    try:
        p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def test_sigterm_inbound_first_outbound_serves_until_drain_time(remora, upstream, ports, tmp_path):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    drain_s = 6
    r = remora(_sidecar_config(admin, lin, lout, upstream.port), drain_time_s=drain_s)
    out = os.path.join(str(tmp_path), "slow.json")
    slow = _slow_curl(f"http://127.0.0.1:{lin}/slow?sleep_ms=2500", out)
    try:
        wait_until(lambda: upstream.started, 10, what="slow request reaching the upstream")
        t_term = time.monotonic()
        r.send_signal(signal.SIGTERM)
        # inbound refuses new connections while its old request runs on
        wait_until(lambda: connect_refused(lin, timeout=1), 3, interval=0.05,
                   what="inbound listener refusing after SIGTERM")
        assert slow.poll() is None, "the in-flight inbound request ended early"
        # the application can still call out
        res = curl(f"http://127.0.0.1:{lout}/call-out")
        assert res.status == 200, res
        st, _, body = r.admin_get("/ready")
        assert st == 503 and b"DRAINING" in body
        stdout, stderr = slow.communicate(timeout=30)
        assert slow.returncode == 0, stderr
        assert stdout.decode() == "200"
        with open(out) as f:
            assert json.load(f)["path"] == "/slow?sleep_ms=2500"
        # no connection is left, but outbound stays up for the drain time
        time.sleep(0.5)
        assert r.alive(), "exited before the drain time although outbound listeners exist"
        res = curl(f"http://127.0.0.1:{lout}/still-there")
        assert res.status == 200, res
        rc = r.wait_exit(drain_s + 15)
        elapsed = time.monotonic() - t_term
        assert rc == 0, r.log_tail()
        assert elapsed >= drain_s - 0.5, elapsed
        r.check_sanitizers()
    finally:
        _reap(slow)


def test_exit_on_zero_active_connections(remora, upstream, ports, tmp_path):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    r = remora(_sidecar_config(admin, lin, lout, upstream.port), drain_time_s=60,
               extra_args=["--exit-on-zero-active-connections"])
    out = os.path.join(str(tmp_path), "slow.json")
    slow = _slow_curl(f"http://127.0.0.1:{lout}/slow-out?sleep_ms=1500", out)
    try:
        wait_until(lambda: upstream.started, 10, what="outbound request reaching the upstream")
        t_term = time.monotonic()
        r.send_signal(signal.SIGTERM)
        stdout, _ = slow.communicate(timeout=30)
        assert stdout.decode() == "200"     # the outbound call in flight completed
        rc = r.wait_exit(20)                # far less than the 60 s drain time
        assert rc == 0, r.log_tail()
        assert time.monotonic() - t_term < 30
        r.check_sanitizers()
    finally:
        _reap(slow)


def test_second_sigterm_exits_at_once(remora, upstream, ports):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    r = remora(_sidecar_config(admin, lin, lout, upstream.port), drain_time_s=60)
    r.send_signal(signal.SIGTERM)
    wait_until(lambda: connect_refused(lin, timeout=1), 5, what="inbound closed")
    time.sleep(0.3)
    assert r.alive()
    r.send_signal(signal.SIGTERM)
    assert r.wait_exit(15) == 0, r.log_tail()
    r.check_sanitizers()


def test_quitquitquit_drains_in_flight_then_exits(remora, upstream, ports, tmp_path):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    r = remora(_sidecar_config(admin, lin, lout, upstream.port), drain_time_s=20)
    out = os.path.join(str(tmp_path), "slow.json")
    slow = _slow_curl(f"http://127.0.0.1:{lout}/job?sleep_ms=2000", out)
    try:
        wait_until(lambda: upstream.started, 10, what="request reaching the upstream")
        t0 = time.monotonic()
        st, _, _ = r.admin_post("/quitquitquit")
        assert st == 200
        # every listener stops, inbound and outbound
        wait_until(lambda: connect_refused(lout, timeout=1) and connect_refused(lin, timeout=1),
                   3, what="listeners closed after /quitquitquit")
        stdout, _ = slow.communicate(timeout=30)
        assert stdout.decode() == "200"
        rc = r.wait_exit(15)
        assert rc == 0, r.log_tail()
        assert time.monotonic() - t0 < 15   # idle after the request: no need for 20 s
        r.check_sanitizers()
    finally:
        _reap(slow)


def test_drain_listeners_inboundonly(remora, upstream, ports):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    r = remora(_sidecar_config(admin, lin, lout, upstream.port))
    st, _, body = r.admin_post("/drain_listeners?inboundonly")
    assert st == 200, body
    wait_until(lambda: connect_refused(lin, timeout=1), 5, what="inbound closed")
    res = curl(f"http://127.0.0.1:{lout}/out")
    assert res.status == 200, res
    st, _, _ = r.admin_get("/ready")
    assert st == 200                     # draining listeners is not shutting down
    st, _, _ = r.admin_post("/drain_listeners")
    assert st == 200
    wait_until(lambda: connect_refused(lout, timeout=1), 5, what="outbound closed")
    assert r.alive()


def test_drain_listeners_graceful(remora, upstream, ports):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    r = remora(_sidecar_config(admin, lin, lout, upstream.port), drain_time_s=2)
    from harness import HttpConn
    with HttpConn(lin) as c, HttpConn(lin) as idle:
        idle.request("GET", "/idle")
        assert idle.read_response().status == 200
        c.request("GET", "/slow?sleep_ms=1000")
        wait_until(lambda: any(p == "/slow?sleep_ms=1000" for _, _, p in upstream.started), 10,
                   what="slow request reaching the upstream")
        st, _, _ = r.admin_post("/drain_listeners?graceful&inboundonly")
        assert st == 200
        # the request in flight completes and is told the connection closes
        resp = c.read_response()
        assert resp.status == 200
        assert resp.headers.get("connection", "").lower() == "close"
        # the idle keep-alive connection is closed by the proxy
        idle.sock.settimeout(5)
        assert idle.sock.recv(10) == b""
    # the listener itself still accepts during the graceful period...
    res = curl(f"http://127.0.0.1:{lin}/grace")
    assert res.status == 200, res
    # ...and stops after the drain time
    wait_until(lambda: connect_refused(lin, timeout=1), 10, what="inbound closed after graceful drain")
    assert curl(f"http://127.0.0.1:{lout}/out").status == 200


def test_wait_ready(remora, upstream, ports):
    admin, lin, lout = ports.get(), ports.get(), ports.get()
    # nobody listens yet: times out with status 1 after about --timeout
    t0 = time.monotonic()
    p = subprocess.run([remora_bin(), "wait-ready", "--timeout", "1", "--admin",
                        f"127.0.0.1:{admin}"], capture_output=True, timeout=30)
    assert p.returncode == 1, p
    assert time.monotonic() - t0 >= 0.9
    # started before the proxy: it polls until /ready is 200
    waiter = spawn([remora_bin(), "wait-ready", "--timeout", "60", "--admin",
                    f"127.0.0.1:{admin}"], stdout=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert waiter.poll() is None, "wait-ready returned before the proxy existed"
        r = remora(_sidecar_config(admin, lin, lout, upstream.port), wait_ready=False)
        assert waiter.wait(timeout=60) == 0
        st, _, _ = r.admin_get("/ready")
        assert st == 200
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(timeout=10)
    # bad usage
    p = subprocess.run([remora_bin(), "wait-ready", "--admin", "nope:"], capture_output=True,
                       timeout=30)
    assert p.returncode == 2
