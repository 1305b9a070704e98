#!/usr/bin/python3
"""make bench-xds: push N EDS clusters (one endpoint each) through the test
control plane (tests/xds), then change 1 % of the endpoints, and report the
time from the push to Remora's ACK (as the control plane saw it), the time
until every cluster is warm, and RSS; first over state-of-the-world ADS, then
over delta ADS, where the 1 % change travels as 1 % of the resources (timed
from the control plane writing the response to the ACK arriving).

The state-of-the-world run also splits the time between the control plane
(encoding the CDS response; receiving the EDS subscription to writing the
EDS response: filtering and encoding) and Remora (response written to ACK:
decode, compile, apply).  The "endpoints" run (also part of "all") measures
RSS with 1 and with 9 endpoints per cluster to separate the cost of an
endpoint from that of a cluster.

  The "routes" run is issue 6's whole set: the clusters plus one listener whose
RDS RouteConfiguration has N virtual hosts.

  The "load" run (also part of "all") sends requests on a route that is already
configured (one cluster, an nginx upstream) with h2load while that whole set
arrives, and compares a window before the push with the apply (push to the
last ACK) and a window after: req/s, p50/p99/max latency, the longest gap
between two completed responses, and the non-2xx and failed requests (which
must be 0).  XDS_LOAD_RPS=<n> paces each of the XDS_LOAD_CLIENTS (default 8)
HTTP/1.1 connections at n requests per second (default: as fast as they go).

  REMORA_BIN=build/remora python3 tests/bench/xds_scale.py [N] [sotw|delta|both|endpoints|routes|load|all]"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from test_xds import (CDS, EDS, RDS, ControlPlane, cla, eds_cluster, last_request,  # noqa: E402
                      rds_listener, xds_bootstrap)


def ack_after(cp, type_url, version, t0_ms, timeout=600):
    q = harness.wait_until(lambda: last_request(cp, type_url, lambda q: q["version_info"] == version),
                           timeout, interval=0.2)
    return (q["t_ms"] - t0_ms) / 1000.0


def resp_to_ack(cp, kind, type_url, version):
    """Seconds from the control plane having written (encoded) the response
    of version to Remora's ACK of it: Remora's decode + apply, without the
    control plane's own encoding time."""
    resp = [p for p in cp.responses() if p["type"] == kind and p["version"] == version][-1]
    q = harness.wait_until(lambda: last_request(cp, type_url,
                                                lambda q: q["response_nonce"] == resp["nonce"]), 60)
    assert q["error_detail"] is None and q["version_info"] == version, q
    return (q["t_ms"] - resp["t_ms"]) / 1000.0


def resp_of(cp, kind, version):
    return [p for p in cp.responses() if p["type"] == kind and p["version"] == version][-1]


def first_request(cp, type_url, pred=lambda q: True):
    for q in cp.requests():
        if q["type_url"] == type_url and pred(q):
            return q
    return None


def run_endpoints(n, ks=(1, 9)):
    """RSS growth with k endpoints per cluster for each k: per endpoint is the
    difference over the extra endpoints, per cluster what is left."""
    rss = {}
    for k in ks:
        cp = ControlPlane()
        work = tempfile.mkdtemp(prefix="remora-bench-xds.")
        r = harness.Remora(work, xds_bootstrap(harness.free_port(), cp.grpc_port),
                           log_level="warning", drain_time_s=1)
        try:
            cp.set("lds", "0", [])
            r.start(wait_ready=False)
            harness.wait_until(lambda: last_request(cp, CDS), 30)
            time.sleep(0.5)
            rss0 = r.rss_kb()
            cp.set("eds", "1", [cla(f"c{i}", [10000 + (i * k + j) % 50000 for j in range(k)])
                                for i in range(n)])
            cp.set("cds", "1", [eds_cluster(f"c{i}") for i in range(n)])
            ack_after(cp, EDS, "1", 0)
            r.wait_ready(timeout=600)
            time.sleep(0.5)
            rss[k] = (r.rss_kb() - rss0) * 1024
        finally:
            r.stop(check=False)
            cp.stop()
    k0, k1 = ks[0], ks[-1]
    per_ep = (rss[k1] - rss[k0]) / (n * (k1 - k0))
    per_cl = rss[k0] / n - k0 * per_ep
    print(f"clusters: {n} with {k0} and with {k1} endpoints each (state of the world)")
    print(f"RSS growth: {rss[k0] / n:.0f} B per cluster with {k0}, {rss[k1] / n:.0f} B with {k1}: "
          f"{per_ep:.0f} B per endpoint, {per_cl:.0f} B per cluster without its endpoints")


def cpu_s(pid):
    """CPU time (user + system, all threads) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """{thread id: (CPU seconds, seconds waiting for a CPU on a run queue)}
    of every thread of a process (/proc/.../schedstat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns = map(int, f.read().split()[:2])
        except OSError:
            continue
        out[int(tid)] = (run_ns / 1e9, wait_ns / 1e9)
    return out


def run_routes(n):
    """Issue 6's full set: n EDS clusters and one listener whose RDS
    RouteConfiguration has n virtual hosts (one per cluster)."""
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-bench-xds.")
    r = harness.Remora(work, xds_bootstrap(harness.free_port(), cp.grpc_port), log_level="warning",
                       drain_time_s=1)
    try:
        cp.set("lds", "0", [])
        r.start(wait_ready=False)
        harness.wait_until(lambda: last_request(cp, CDS), 30)
        time.sleep(0.5)
        rss0, cpu0 = r.rss_kb(), cpu_s(r.pid)
        t0 = cp._call("GET", "/now")["t_ms"]
        cp.set("eds", "1", [cla(f"c{i}", [10000 + i % 1000]) for i in range(n)])
        cp.set("cds", "1", [eds_cluster(f"c{i}") for i in range(n)])
        cp.set("rds", "1", [{"name": "r1", "virtual_hosts": [
            {"name": f"vh{i}", "domains": [f"svc{i}.example"],
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"c{i}"}}]}
            for i in range(n)]}])
        cp.set("lds", "1", [rds_listener("l1", harness.free_port(), "r1")])
        ack_after(cp, RDS, "1", t0)
        r.wait_ready(timeout=600)
        ready = (cp._call("GET", "/now")["t_ms"] - t0) / 1000.0
        time.sleep(0.5)
        print(f"clusters: {n} (EDS, 1 endpoint each) and one RouteConfiguration of {n} virtual "
              "hosts (state of the world)")
        print(f"push -> ready (every cluster warm, listener serving): {ready:.2f} s; Remora's CPU "
              f"(all threads): {cpu_s(r.pid) - cpu0:.2f} s")
        print(f"RSS: {(r.rss_kb() - rss0) * 1024 / n:.0f} B per cluster with its endpoint and "
              "virtual host")
    finally:
        r.stop(check=False)
        cp.stop()


NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path tmp;
    proxy_temp_path tmp;
    server { listen 127.0.0.1:%d; location / { return 200 "hello"; } }
}
"""


def start_nginx(work):
    """nginx answering 200 "hello" on a free port: (process, port)."""
    port = harness.free_port()
    d = os.path.join(work, "nginx")
    os.makedirs(os.path.join(d, "tmp"))
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % port)
    p = subprocess.Popen(["/usr/sbin/nginx", "-p", d + "/", "-c", "nginx.conf"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_until(lambda: harness.curl(f"http://127.0.0.1:{port}/", timeout=2).status == 200, 10)
    return p, port


def window(log, spans):
    """Requests that started in the spans [(lo_us, hi_us), ...]: count,
    req/s, p50/p99/max latency (ms), non-2xx, and the longest gap (ms)
    between two responses completing in one span."""
    rs, gap, length = [], 0, 0
    for lo_us, hi_us in spans:
        part = [r for r in log if lo_us <= r[0] < hi_us]
        ends = sorted(r[0] + r[2] for r in part)
        gap = max([gap] + [b - a for a, b in zip(ends, ends[1:])])
        rs += part
        length += hi_us - lo_us
    if not rs:
        return None
    lat = sorted(r[2] for r in rs)
    return {"n": len(rs), "rps": len(rs) / (length / 1e6),
            "p50": lat[len(lat) // 2] / 1000, "p99": lat[min(len(lat) - 1, len(lat) * 99 // 100)] / 1000,
            "max": lat[-1] / 1000, "gap": gap / 1000,
            "non2xx": sum(1 for r in rs if not 200 <= r[1] < 300)}


def run_load(n, before_s=3.0, after_s=3.0, budget_s=None):
    """Requests on an existing route while issue 6's whole set (n clusters,
    n virtual hosts) applies; see the module's docstring."""
    clients = int(os.environ.get("XDS_LOAD_CLIENTS", "8"))
    rps = os.environ.get("XDS_LOAD_RPS")
    budget_s = budget_s or float(os.environ.get("XDS_LOAD_BUDGET_S", "20"))
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-bench-xds.")
    ngx, up_port = start_nginx(work)
    port = harness.free_port()
    r = harness.Remora(work, xds_bootstrap(harness.free_port(), cp.grpc_port), log_level="warning",
                       drain_time_s=1)
    live_vh = {"name": "live", "domains": ["live.example"],
               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "live"}}]}
    h2 = None
    try:
        cp.set("eds", "1", [cla("live", [up_port])])
        cp.set("cds", "1", [eds_cluster("live")])
        cp.set("rds", "1", [{"name": "r1", "virtual_hosts": [live_vh]}])
        cp.set("lds", "1", [rds_listener("l1", port, "r1")])
        r.start(wait_ready=False)
        r.wait_ready(timeout=60)
        url = f"http://127.0.0.1:{port}/"
        harness.wait_until(lambda: harness.curl(url, "-H", "host: live.example",
                                                timeout=2).status == 200, 30)
        log_path = os.path.join(work, "h2load.log")
        cmd = ["h2load", "--h1", "-c", str(clients), "-m", "1", "-D", str(int(before_s + budget_s)),
               "--warm-up-time", "1", "-H", ":authority: live.example", f"--log-file={log_path}", url]
        if rps:
            cmd[1:1] = ["--rps", rps]
        h2 = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1 + before_s)
        t_push = time.time()
        cpu0, th0 = cpu_s(r.pid), thread_cpu(r.pid)
        others0 = {k: cpu_s(p) for k, p in (("control plane", cp.proc.pid), ("h2load", h2.pid),
                                            ("nginx", ngx.pid))}
        load0 = os.getloadavg()[0]
        cp.set("eds", "2", [cla("live", [up_port])] +
               [cla(f"c{i}", [10000 + i % 1000]) for i in range(n)])
        cp.set("cds", "2", [eds_cluster("live")] + [eds_cluster(f"c{i}") for i in range(n)])
        cp.set("rds", "2", [{"name": "r1", "virtual_hosts": [live_vh] + [
            {"name": f"vh{i}", "domains": [f"svc{i}.example"],
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"c{i}"}}]}
            for i in range(n)]}])
        acks = [ack_after(cp, t, "2", t_push * 1000, timeout=budget_s) for t in (CDS, EDS, RDS)]
        t_done = t_push + max(acks)
        cpu, th1 = cpu_s(r.pid) - cpu0, thread_cpu(r.pid)
        others = {k: cpu_s(p) - v for k, p, v in (
            ("control plane", cp.proc.pid, others0["control plane"]),
            ("h2load", h2.pid, others0["h2load"]), ("nginx", ngx.pid, others0["nginx"]))}
        try:
            out, _ = h2.communicate(timeout=before_s + budget_s + 30)
        except subprocess.TimeoutExpired:
            print(r.admin_get("/stats?filter=^(cluster.live|http.l1|listener)")[2][:3000])
            raise
        h2 = None
        log = []
        with open(log_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    log.append((int(parts[0]), int(parts[1]), int(parts[2])))
        if not log:
            raise RuntimeError("h2load wrote no per-request log:\n" + out)
        last_start = max(x[0] for x in log) / 1e6
        # Remora's own work: from each response of the push written to its ACK
        mine = []
        for kind, url in (("cds", CDS), ("eds", EDS), ("rds", RDS)):
            resp = resp_of(cp, kind, "2")
            q = last_request(cp, url, lambda q: q["response_nonce"] == resp["nonce"])
            mine.append((resp["t_ms"] / 1000.0, q["t_ms"] / 1000.0))
        wins = [("before (%.1f s)" % before_s, [(t_push - before_s, t_push)]),
                ("push to last ACK (%.2f s)" % (t_done - t_push), [(t_push, t_done)]),
                ("Remora applying: response written to ACK, CDS+EDS+RDS (%.2f s)"
                 % sum(b - a for a, b in mine), mine),
                ("after (%.1f s)" % min(after_s, last_start - t_done),
                 [(t_done, min(t_done + after_s, last_start))])]
        failed = re.search(r"requests: .*?(\d+) failed, (\d+) errored", out)
        status = re.search(r"status codes: .*", out)
        print(f"clusters: {n} (EDS, 1 endpoint each) and one RouteConfiguration of {n + 1} "
              f"virtual hosts pushed while h2load sends requests on an existing route "
              f"({clients} HTTP/1.1 connections, {rps + ' req/s each' if rps else 'closed loop'})")
        print(f"push -> last ACK (CDS {acks[0]:.2f} s, EDS {acks[1]:.2f} s, RDS {acks[2]:.2f} s); "
              f"Remora's CPU meanwhile (all threads, to the end of the ACK wait) {cpu:.2f} s")
        print("  Remora's threads from the push to the last ACK (CPU / waiting for a CPU): " +
              ", ".join(f"{'main' if k == r.pid else k} {th1[k][0] - th0.get(k, (0, 0))[0]:.2f} s / "
                        f"{th1[k][1] - th0.get(k, (0, 0))[1]:.2f} s" for k in sorted(th1)) +
              "; the others' CPU meanwhile: " +
            ", ".join(f"{k} {v:.2f} s" for k, v in others.items()) +
            f"; load average (1 min) at the push {load0:.1f}")
        for name, spans in wins:
            w = window(log, [(int(lo * 1e6), int(hi * 1e6)) for lo, hi in spans if hi > lo])
            if w is None:
                print(f"  {name}: no requests")
                continue
            print(f"  {name}: {w['rps']:.0f} req/s, p50 {w['p50']:.2f} ms, p99 {w['p99']:.2f} ms, "
                  f"max {w['max']:.1f} ms, longest gap between responses {w['gap']:.1f} ms, "
                  f"non-2xx {w['non2xx']}")
        print(f"  h2load: {failed.group(0) if failed else '?'}; "
              f"{status.group(0) if status else '?'}")
        non2xx = sum(1 for x in log if not 200 <= x[1] < 300)
        print(f"  whole run: {len(log)} requests, non-2xx {non2xx}")
    finally:
        if h2 is not None:
            h2.kill()
            h2.wait()
        r.stop(check=False)
        cp.stop()
        ngx.terminate()
        ngx.wait(timeout=10)
        if not os.environ.get("XDS_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def run_delta(n):
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-bench-xds.")
    b = xds_bootstrap(harness.free_port(), cp.grpc_port, api_type="AGGREGATED_DELTA_GRPC")
    r = harness.Remora(work, b, log_level="warning", drain_time_s=1)
    try:
        cp.set("lds", "0", [])
        r.start(wait_ready=False)
        harness.wait_until(lambda: last_request(cp, CDS), 30)
        time.sleep(0.5)
        rss0 = r.rss_kb()
        t0 = cp._call("GET", "/now")["t_ms"]
        cp.set("eds", "1", [cla(f"c{i}", [10000 + i % 1000]) for i in range(n)])
        cp.set("cds", "1", [eds_cluster(f"c{i}") for i in range(n)])
        r.wait_ready(timeout=600)
        full = (cp.requests()[-1]["t_ms"] - t0) / 1000.0
        rss1 = r.rss_kb()
        times = []
        for rnd in range(5):   # five rounds of 1 %: median
            k = max(1, n // 100)
            lo = (rnd * k) % n
            nreq = len(cp.requests())
            cp.delta("eds", f"d{rnd}", [cla(f"c{i}", [20000 + rnd * 100 + i % 100])
                                       for i in range(lo, lo + k)])
            resp = [p for p in cp.responses() if p["type"] == "eds"][-1]
            assert resp["n"] == k, resp
            q = harness.wait_until(
                lambda: [q for q in cp.requests()[nreq:]
                         if q["type_url"] == EDS and q["response_nonce"] == resp["nonce"]], 60,
                interval=0.01)[0]
            assert q["error_detail"] is None, q
            times.append(q["t_ms"] - resp["t_ms"])
            time.sleep(0.2)
        times.sort()
        print(f"clusters: {n} (EDS, 1 endpoint each; delta)")
        print(f"push -> all clusters warm (/ready): {full:.2f} s")
        print(f"1 % endpoint change ({max(1, n // 100)} resources via delta) response -> ACK: "
              f"median {times[len(times) // 2]} ms (runs: {times})")
        print(f"RSS: {rss0} kB before, {rss1} kB after: {(rss1 - rss0) * 1024 / n:.0f} B per "
              "cluster with its endpoint")
    finally:
        r.stop(check=False)
        cp.stop()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    mode = sys.argv[2] if len(sys.argv) > 2 else "all"
    if mode in ("sotw", "both", "all"):
        run_sotw(n)
    if mode in ("delta", "both", "all"):
        run_delta(n)
    if mode in ("endpoints", "all"):
        run_endpoints(max(1, n // 5))
    if mode in ("routes", "all"):
        run_routes(n)
    if mode in ("load", "all"):
        run_load(n)


def run_sotw(n):
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-bench-xds.")
    r = harness.Remora(work, xds_bootstrap(harness.free_port(), cp.grpc_port), log_level="warning",
                       drain_time_s=1)
    try:
        cp.set("lds", "0", [])
        r.start(wait_ready=False)
        harness.wait_until(lambda: last_request(cp, CDS), 30)
        time.sleep(0.5)
        rss0 = r.rss_kb()
        t0 = cp._call("GET", "/now")["t_ms"]
        cp.set("eds", "1", [cla(f"c{i}", [10000 + i % 1000]) for i in range(n)])
        cp.set("cds", "1", [eds_cluster(f"c{i}") for i in range(n)])
        cds_ack = ack_after(cp, CDS, "1", t0)
        eds_ack = ack_after(cp, EDS, "1", t0)
        cds_r2a = resp_to_ack(cp, "cds", CDS, "1")
        eds_r2a = resp_to_ack(cp, "eds", EDS, "1")
        cp_cds = (resp_of(cp, "cds", "1")["t_ms"] - t0) / 1000.0
        sub = first_request(cp, EDS, lambda q: len(q["resource_names"]) == n)
        cp_eds = (resp_of(cp, "eds", "1")["t_ms"] - sub["t_ms"]) / 1000.0
        r.wait_ready(timeout=600)
        rss1 = r.rss_kb()
        t1 = cp._call("GET", "/now")["t_ms"]
        cp.set("eds", "2", [cla(f"c{i}", [10000 + (i + (1 if i < n // 100 else 0)) % 1000])
                            for i in range(n)])
        change = ack_after(cp, EDS, "2", t1)
        change_r2a = resp_to_ack(cp, "eds", EDS, "2")
        print(f"clusters: {n} (EDS, 1 endpoint each; state of the world)")
        print(f"push -> CDS ACK: {cds_ack:.2f} s; push -> EDS ACK (all endpoints applied): "
              f"{eds_ack:.2f} s")
        print(f"response written -> ACK (Remora's decode and apply): CDS {cds_r2a:.2f} s, "
              f"EDS {eds_r2a:.2f} s")
        print(f"control plane: push -> CDS response written {cp_cds:.2f} s; EDS subscription "
              f"received -> EDS response written {cp_eds:.2f} s")
        print(f"1 % endpoint change (full EDS state resent) -> ACK: {change * 1000:.0f} ms "
              f"(response written -> ACK: {change_r2a * 1000:.0f} ms)")
        print(f"RSS: {rss0} kB before, {rss1} kB after: {(rss1 - rss0) * 1024 / n:.0f} B per "
              "cluster with its endpoint")
    finally:
        r.stop(check=False)
        cp.stop()


if __name__ == "__main__":
    main()
