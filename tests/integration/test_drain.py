"""SIGTERM drains: the listener stops accepting at once, in-flight requests
finish (up to --drain-time-s), then the process exits 0."""

import json
import os
import signal
import subprocess
import time

from harness import connect_refused, simple_http_config, wait_until


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


def test_sigterm_drains_in_flight_request(remora, upstream, ports, tmp_path):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), drain_time_s=10)
    out = os.path.join(str(tmp_path), "slow.json")
    slow = _slow_curl(f"http://127.0.0.1:{lport}/slow?sleep_ms=4000", out)
    try:
        # the request is in flight once the upstream has it
        wait_until(lambda: upstream.started, 10, what="slow request reaching the upstream")
        time.sleep(0.3)
        r.send_signal(signal.SIGTERM)
        # new connections are refused while the old request is still running
        wait_until(lambda: connect_refused(lport, timeout=1), 2.5, interval=0.05,
                   what="listener refusing new connections after SIGTERM")
        assert slow.poll() is None, "the in-flight request ended before the listener closed"
        assert r.alive(), "remora exited without draining the in-flight request"
        stdout, stderr = slow.communicate(timeout=30)
        assert slow.returncode == 0, stderr
        assert stdout.decode() == "200"
        with open(out) as f:
            assert json.load(f)["path"] == "/slow?sleep_ms=4000"
        rc = r.wait_exit(15)
        assert rc == 0, r.log_tail()
        r.check_sanitizers()
    finally:
        _reap(slow)


def test_sigterm_without_traffic_exits_promptly(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), drain_time_s=30)
    # nothing in flight: no reason to wait for the drain time
    rc = r.stop(signal.SIGTERM, timeout=10)
    assert rc == 0


def test_drain_time_bounds_shutdown(remora, upstream, ports, tmp_path):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), drain_time_s=1)
    out = os.path.join(str(tmp_path), "slower.json")
    slow = _slow_curl(f"http://127.0.0.1:{lport}/slower?sleep_ms=20000", out, max_time=40)
    try:
        wait_until(lambda: upstream.started, 10, what="request reaching the upstream")
        r.send_signal(signal.SIGTERM)
        # the 20 s request cannot finish; after the 1 s drain time remora exits anyway
        rc = r.wait_exit(10)
        assert rc == 0, r.log_tail()
        r.check_sanitizers()
        stdout, _ = slow.communicate(timeout=15)
        assert stdout.decode() != "200"
    finally:
        _reap(slow)


def test_idle_keepalive_connection_does_not_block_exit(remora, upstream, ports):
    from harness import HttpConn
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), drain_time_s=30)
    with HttpConn(lport) as c:
        c.request("GET", "/one")
        assert c.read_response().status == 200
        # the client keeps the connection open and idle; SIGTERM must not wait
        # the full 30 s drain time for it
        r.send_signal(signal.SIGTERM)
        rc = r.wait_exit(10)
        assert rc == 0, r.log_tail()
        r.check_sanitizers()
