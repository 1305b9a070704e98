"""Requests on a route that is already configured keep being answered while a
large xDS push applies: 2,000 new EDS clusters and a RouteConfiguration that
grows to 2,001 virtual hosts (issue 6's whole set, smaller).  h2load sends
HTTP/1.1 requests on the existing route through the push; every one must
succeed with a 2xx.  Nothing here is timed: how fast the push applies and
the request rate before and during it are benchmarks (make bench-xds, the
"load" run), not assertions."""

import os
import re
import shutil
import subprocess
import time

import pytest

from harness import curl, wait_until
from test_xds import (CDS, EDS, RDS, cla, cp, eds_cluster, last_request, pytestmark,  # noqa: F401
                      rds_listener, xds_bootstrap)

N = int(os.environ.get("XDS_PUSH_LOAD_N", "2000"))


def vhost(name, domain, cluster):
    return {"name": name, "domains": [domain],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}


@pytest.mark.skipif(not shutil.which("h2load"), reason="h2load not installed")
def test_existing_route_served_while_full_set_applies(remora, cp, make_upstream, ports, tmp_path):
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    live = vhost("live", "live.example", "live")
    cp.set("eds", "1", [cla("live", [a.port])])
    cp.set("cds", "1", [eds_cluster("live")])
    cp.set("rds", "1", [{"name": "r1", "virtual_hosts": [live]}])
    cp.set("lds", "1", [rds_listener("l1", lport, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    url = f"http://127.0.0.1:{lport}/"
    wait_until(lambda: curl(url, "-H", "host: live.example").status == 200, 15,
               what="the live route")

    log = tmp_path / "h2load.log"
    h2 = subprocess.Popen(["h2load", "--h1", "-c", "4", "-m", "1", "-D", "8",
                           "-H", ":authority: live.example", f"--log-file={log}", url],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        t0 = time.time()
        # the whole set: every cluster (the live one unchanged), every
        # virtual host; "fresh" is a new cluster with a real endpoint
        cp.set("eds", "2", [cla("live", [a.port]), cla("fresh", [a.port])] +
               [cla(f"c{i}", [10000 + i % 1000]) for i in range(N)])
        cp.set("cds", "2", [eds_cluster("live"), eds_cluster("fresh")] +
               [eds_cluster(f"c{i}") for i in range(N)])
        cp.set("rds", "2", [{"name": "r1", "virtual_hosts": [
            live, vhost("fresh", "fresh.example", "fresh")] +
            [vhost(f"vh{i}", f"svc{i}.example", f"c{i}") for i in range(N)]}])
        for t in (CDS, EDS, RDS):
            q = wait_until(lambda: last_request(cp, t, lambda q: q["version_info"] == "2"), 60,
                           what=f"ACK of the push ({t.rsplit('.', 1)[-1]})")
            assert q["error_detail"] is None, q
        t1 = time.time()
        out, _ = h2.communicate(timeout=60)
    finally:
        if h2.poll() is None:
            h2.kill()
            h2.wait()

    # every request on the existing route succeeded, before, during, after
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    assert m, out
    total, done, ok, failed, errored = map(int, m.groups())
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert codes, out
    during = [line for line in log.read_text().splitlines()
              if t0 * 1e6 <= int(line.split()[0]) < t1 * 1e6]
    bad = [line for line in log.read_text().splitlines() if not line.split()[1].startswith("2")]
    print(f"{total} requests, {len(during)} started during the push ({t1 - t0:.2f} s)")
    assert total > 0 and failed == 0 and errored == 0 and done == ok == total, out
    assert int(codes.group(1)) == total, out
    assert not bad, bad[:5]
    # the push took effect: a route to one of its clusters answers
    wait_until(lambda: curl(url, "-H", "host: fresh.example").status == 200, 15,
               what="a route of the push")
    assert r.stat("cluster.live.upstream_rq_5xx") == 0
    r.stop()
