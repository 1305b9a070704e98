#!/usr/bin/python3
"""Soak: fixed-rate mixed traffic through one Remora for N seconds while the
control plane pushes config and upstreams restart (issue 10).

    soak.py --seconds N [--bin build/remora] [--h1-rps 40] [--h2-rps 20]
            [--grpc-rps 20] [--tcp-cps 10]

Traffic, each paced at a fixed rate (a late request is sent at once, never
skipped, so the rate is an average over the run):
  HTTP/1.1  own paced client, keep-alive, through an xDS listener (LDS+RDS,
            EDS cluster of two upstreams, retry on connect-failure/reset)
  HTTP/2    h2load --rps over h2c, in 10 s runs, same listener
  gRPC      python grpcio unary calls through a static listener
  TCP       connect, echo 1 KiB, close, through a tcp_proxy listener
Perturbations:
  every 20 s  an xDS push: EDS alternates {A, B} / {A} / {B, A}, RDS bumps a
              response header; every 3rd push also re-sends the listener (LDS)
  every 45 s  upstream B restarts (stopped for 2 s, then listening again on
              its port).  Errors from 1 s before a restart to 4 s after it
              are "provoked" (reported, not failed on); every other error fails.
Every 10 s one line: requests and errors per kind, RSS and open fds of the
proxy.  Fails on unprovoked errors; with --seconds >= 120 also on RSS growth
over 5 % from the end of the warm-up (the first 20 %, at least 30 s) to the
end, and on fd growth (last sample vs. the largest in the warm-up + 16).
Exit status 0 = pass."""

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402
from upstreams import TcpEchoServer, UpstreamServer  # noqa: E402
from test_xds import (ControlPlane, cla, eds_cluster, rds_listener, routes,  # noqa: E402
                      xds_bootstrap)

try:
    import grpc  # noqa: E402
    from test_grpc import HTTP_OPTS, Service, start_server  # noqa: E402
except ImportError:                       # python3-grpcio missing: no gRPC leg
    grpc = None


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.err = {}
        self.provoked = {}
        self.samples = []                  # unprovoked error descriptions (first 20)

    def add(self, kind, ok, what=None, provoked=False):
        with self.lock:
            if ok:
                self.ok[kind] = self.ok.get(kind, 0) + 1
            elif provoked:
                self.provoked[kind] = self.provoked.get(kind, 0) + 1
            else:
                self.err[kind] = self.err.get(kind, 0) + 1
                if len(self.samples) < 20:
                    self.samples.append(f"{time.strftime('%H:%M:%S')} {kind}: {what}")


class Provocations:
    """Time windows in which errors are expected (upstream restarts)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.windows = []                  # [start, end] monotonic

    def open(self, before=1.0):
        with self.lock:
            self.windows.append([time.monotonic() - before, float("inf")])

    def close(self, after=4.0):
        with self.lock:
            self.windows[-1][1] = time.monotonic() + after

    def covers(self, t0, t1):
        with self.lock:
            return any(s <= t1 and t0 <= e for s, e in self.windows)


def paced(rate, stop, fn):
    """Call fn() rate times a second until stop is set."""
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        fn()
        nxt += period
        d = nxt - time.monotonic()
        if d > 0:
            stop.wait(d)


def h1_leg(port, rate, stop, cnt, prov):
    conn = [None]

    def one():
        t0 = time.monotonic()
        try:
            if conn[0] is None:
                conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn[0].request("GET", "/soak/h1")
            r = conn[0].getresponse()
            r.read()
            ok = r.status == 200
            what = f"status {r.status}"
            if r.getheader("connection", "").lower() == "close":
                conn[0].close()
                conn[0] = None
        except (OSError, http.client.HTTPException) as e:
            ok, what = False, repr(e)
            if conn[0] is not None:
                conn[0].close()
            conn[0] = None
        cnt.add("h1", ok, what, prov.covers(t0, time.monotonic()))
    paced(rate, stop, one)


def h2_leg(port, rate, stop, cnt, prov):
    """h2load in 10 s runs (so errors show up in the 10 s reports)."""
    while not stop.is_set():
        t0 = time.monotonic()
        p = subprocess.run(["h2load", "-c", "2", "--rps", str(max(1, rate // 2)), "-D", "10",
                            "--warm-up-time", "0", f"http://127.0.0.1:{port}/soak/h2"],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored", p.stdout)
        st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", p.stdout)
        provoked = prov.covers(t0, time.monotonic())
        if not m:
            cnt.add("h2", False, "h2load output: " + (p.stdout + p.stderr)[-300:], provoked)
            continue
        ok2xx = int(st.group(1)) if st else int(m.group(1))
        bad = int(m.group(2)) + int(m.group(3)) + (int(m.group(1)) - ok2xx)
        for _ in range(ok2xx):
            cnt.add("h2", True)
        for _ in range(bad):
            cnt.add("h2", False, "h2load failed/errored/non-2xx", provoked)


def grpc_leg(port, rate, stop, cnt, prov):
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    echo = ch.unary_unary("/test.Echo/Echo", request_serializer=lambda b: b,
                          response_deserializer=lambda b: b)

    def one():
        t0 = time.monotonic()
        try:
            ok = echo(b"soak", timeout=10) == b"soak"
            what = "bad echo"
        except grpc.RpcError as e:
            ok, what = False, f"{e.code()} {e.details()}"
        cnt.add("grpc", ok, what, prov.covers(t0, time.monotonic()))
    try:
        paced(rate, stop, one)
    finally:
        ch.close()


def tcp_leg(port, rate, stop, cnt, prov):
    payload = bytes(range(256)) * 4

    def one():
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
            ok, what = got == payload, f"echoed {len(got)} bytes"
        except OSError as e:
            ok, what = False, repr(e)
        cnt.add("tcp", ok, what, prov.covers(t0, time.monotonic()))
    paced(rate, stop, one)


def proc_sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "remora"))
    ap.add_argument("--h1-rps", type=int, default=40)
    ap.add_argument("--h2-rps", type=int, default=20)
    ap.add_argument("--grpc-rps", type=int, default=20)
    ap.add_argument("--tcp-cps", type=int, default=10)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    os.environ["REMORA_BIN"] = os.path.abspath(a.bin)
    work = a.workdir or tempfile.mkdtemp(prefix="remora-soak-")
    print(f"soak: {a.seconds} s, binary {a.bin}, logs in {work}", flush=True)

    cp = ControlPlane()
    up_a, up_b = UpstreamServer("a").start(), UpstreamServer("b").start()
    b_port = up_b.port
    echo = TcpEchoServer().start()
    grpc_server = None
    if grpc:
        grpc_server, grpc_port = start_server(Service())
    admin, lport, tport, gport = (harness.free_port() for _ in range(4))

    retry = {"retry_on": "connect-failure,reset,refused-stream", "num_retries": {"value": 3}}

    def rds(v):
        rc = routes("r1", [("/", "ca")])
        rc["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"] = retry
        rc["response_headers_to_add"] = [{"header": {"key": "x-soak-version", "value": str(v)}}]
        return rc

    cp.set("cds", "1", [eds_cluster("ca")])
    cp.set("eds", "0", [cla("ca", [up_a.port, b_port])])
    cp.set("rds", "0", [rds(0)])
    cp.set("lds", "0", [rds_listener("ingress", lport, "r1")])
    cfg = xds_bootstrap(admin, cp.grpc_port)
    cfg["static_resources"]["listeners"].append(
        harness.tcp_proxy_listener(tport, "echo", stat_prefix="soak_tcp"))
    cfg["static_resources"]["clusters"].append(harness.static_cluster("echo", echo.port))
    if grpc:
        cfg["static_resources"]["listeners"].append(harness.http_listener(
            gport, [harness.route({"prefix": "/"}, "grpc_backend", timeout="10s")],
            name="grpc", stat_prefix="soak_grpc"))
        cfg["static_resources"]["clusters"].append(harness.static_cluster(
            "grpc_backend", grpc_port, typed_extension_protocol_options={
                HTTP_OPTS: {"@type": "type.googleapis.com/" + HTTP_OPTS,
                            "explicit_http_config": {"http2_protocol_options": {}}}}))
    r = harness.Remora(work, cfg, concurrency=2, log_level="warning")
    r.start()
    pid = r.pid

    cnt, prov, stop = Counters(), Provocations(), threading.Event()
    legs = []
    leg_specs = [("h1", h1_leg, lport, a.h1_rps), ("h2", h2_leg, lport, a.h2_rps),
                 ("tcp", tcp_leg, tport, a.tcp_cps)]
    if grpc:
        leg_specs.append(("grpc", grpc_leg, gport, a.grpc_rps))
    for _, fn, port, rate in leg_specs:
        if rate > 0:           # a rate of 0 leaves that kind out
            legs.append(threading.Thread(target=fn, args=(port, rate, stop, cnt, prov), daemon=True))
    for t in legs:
        t.start()

    t_start = time.monotonic()
    warm = max(30.0, a.seconds * 0.2) if a.seconds >= 120 else a.seconds
    samples = []                          # (t, rss_kb, fds)
    next_report, next_push, next_restart = 10.0, 20.0, 45.0
    pushes = restarts = 0
    failed = []
    try:
        while True:
            el = time.monotonic() - t_start
            if el >= a.seconds:
                break
            if el >= next_push:
                pushes += 1
                eps = [[up_a.port, b_port], [up_a.port], [b_port, up_a.port]][pushes % 3]
                cp.set("eds", str(pushes), [cla("ca", eps)])
                cp.set("rds", str(pushes), [rds(pushes)])
                if pushes % 3 == 0:
                    lis = rds_listener("ingress", lport, "r1")
                    lis["filter_chains"][0]["filters"][0]["typed_config"][
                        "common_http_protocol_options"] = {"idle_timeout": {"seconds": 100 + pushes}}
                    cp.set("lds", str(pushes), [lis])
                next_push += 20
            if el >= next_restart:
                restarts += 1
                prov.open()
                up_b.stop()
                time.sleep(2)
                up_b = UpstreamServer("b", port=b_port).start()
                prov.close()
                next_restart += 45
            if el >= next_report:
                rss, fds = proc_sample(pid)
                samples.append((el, rss, fds))
                with cnt.lock:
                    kinds = sorted(set(cnt.ok) | set(cnt.err) | set(cnt.provoked))
                    parts = " ".join(f"{k} {cnt.ok.get(k, 0)}/{cnt.err.get(k, 0)}"
                                     f"/{cnt.provoked.get(k, 0)}" for k in kinds)
                print(f"[{el:6.0f}s] ok/err/provoked: {parts} | rss {rss} kB, fds {fds} | "
                      f"pushes {pushes}, restarts {restarts}", flush=True)
                next_report += 10
            if not r.alive():
                failed.append("remora exited during the soak")
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in legs:
            t.join(timeout=30)
    rss_end, fds_end = proc_sample(pid) if r.alive() else (0, 0)
    samples.append((time.monotonic() - t_start, rss_end, fds_end))
    try:
        st = r.stats()
        keys = ("cluster.ca.upstream_rq_total", "cluster.ca.upstream_rq_retry",
                "cluster.ca.upstream_cx_connect_fail", "cluster.grpc_backend.upstream_rq_total",
                "cluster.echo.upstream_cx_total", "cluster_manager.cds.update_success",
                "listener_manager.lds.update_success")
        print("proxy:", ", ".join(f"{k} {st.get(k, 0)}" for k in keys), flush=True)
    except (OSError, AssertionError) as e:
        print("stats unavailable:", e)

    total_err = sum(cnt.err.values())
    if total_err:
        failed.append(f"{total_err} unprovoked errors: " + "; ".join(cnt.samples[:10]))
    for k, _, _, rate in leg_specs:
        if rate > 0 and not cnt.ok.get(k):
            failed.append(f"no successful {k} traffic")
    if a.seconds >= 120:
        base = [s for s in samples if s[0] <= warm + 10.5]
        if base:
            rss0 = base[-1][1]
            fd0 = max(s[2] for s in base)
            print(f"RSS after warm-up {rss0} kB, at the end {rss_end} kB "
                  f"({(rss_end - rss0) * 100.0 / rss0:+.1f} %); fds after warm-up <= {fd0}, "
                  f"at the end {fds_end}", flush=True)
            if rss_end > rss0 * 1.05:
                failed.append(f"RSS grew {rss0} -> {rss_end} kB (> 5 %)")
            if fds_end > fd0 + 16:
                failed.append(f"fds grew {fd0} -> {fds_end}")
    rc = r.stop(check=False)
    rep = r.sanitizer_report()
    if rep:
        failed.append("sanitizer report:\n" + rep)
    if rc != 0:
        failed.append(f"remora exit status {rc}")
    for s in (up_a, up_b, echo):
        s.stop()
    if grpc_server:
        grpc_server.stop(0)
    cp.stop()
    with cnt.lock:
        summary = {"ok": cnt.ok, "errors": cnt.err, "provoked": cnt.provoked, "pushes": pushes,
                   "restarts": restarts, "rss_kb": [s[1] for s in samples],
                   "fds": [s[2] for s in samples]}
    print("summary:", json.dumps(summary), flush=True)
    if failed:
        print("SOAK FAILED:\n  " + "\n  ".join(failed), flush=True)
        return 1
    print("SOAK PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
