#!/usr/bin/python3
"""make bench-xds: push N EDS clusters (one endpoint each) through the test
control plane (tests/xds), then change 1 % of the endpoints, and report the
time from the push to Remora's ACK (as the control plane saw it), the time
until every cluster is warm, and RSS.  A first measurement tool for issue 6's
benchmark (delta xDS and the memory targets are later work).

  REMORA_BIN=build/remora python3 tests/bench/xds_scale.py [N]"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from test_xds import CDS, EDS, ControlPlane, cla, eds_cluster, last_request, xds_bootstrap  # noqa: E402


def ack_after(cp, type_url, version, t0_ms, timeout=600):
    q = harness.wait_until(lambda: last_request(cp, type_url, lambda q: q["version_info"] == version),
                           timeout, interval=0.2)
    return (q["t_ms"] - t0_ms) / 1000.0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
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
        r.wait_ready(timeout=600)
        rss1 = r.rss_kb()
        t1 = cp._call("GET", "/now")["t_ms"]
        cp.set("eds", "2", [cla(f"c{i}", [10000 + (i + (1 if i < n // 100 else 0)) % 1000])
                            for i in range(n)])
        change = ack_after(cp, EDS, "2", t1)
        print(f"clusters: {n} (EDS, 1 endpoint each; state of the world)")
        print(f"push -> CDS ACK: {cds_ack:.2f} s; push -> EDS ACK (all endpoints applied): "
              f"{eds_ack:.2f} s")
        print(f"1 % endpoint change (full EDS state resent) -> ACK: {change * 1000:.0f} ms")
        print(f"RSS: {rss0} kB before, {rss1} kB after: {(rss1 - rss0) * 1024 / n:.0f} B per "
              "cluster with its endpoint")
    finally:
        r.stop(check=False)
        cp.stop()


if __name__ == "__main__":
    main()
