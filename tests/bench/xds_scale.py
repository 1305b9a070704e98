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

  REMORA_BIN=build/remora python3 tests/bench/xds_scale.py [N] [sotw|delta|both|endpoints|routes|all]"""
import os
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
