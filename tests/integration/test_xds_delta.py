"""Delta xDS: Remora on DeltaAggregatedResources (ads_config api_type
AGGREGATED_DELTA_GRPC) driven by the Node.js test control plane, which
computes per-stream differences with the official Envoy protos (Resource
versions are hashes of the resources' content)."""

import re
import subprocess
import threading
import time

from harness import curl, wait_until
from test_xds import (CDS, EDS, LDS, RDS, ControlPlane, cla, cp, eds_cluster, pytestmark,  # noqa: F401
                      rds_listener, ready, routes, xds_bootstrap)
from test_xds import push_backend


def delta_bootstrap(admin, cp_port, **kw):
    return xds_bootstrap(admin, cp_port, api_type="AGGREGATED_DELTA_GRPC", **kw)


def dreqs(cp, type_url, pred=lambda q: True):
    return [q for q in cp.requests() if q["type_url"] == type_url and q["delta"] and pred(q)]


def dresps(cp, type_):
    return [p for p in cp.responses() if p["type"] == type_]


def server_of(port, path="/x"):
    return curl(f"http://127.0.0.1:{port}{path}").json()["server"]


def test_delta_cold_start_any_order_add_remove(remora, cp, make_upstream, ports):
    """Cold start with RDS, EDS, LDS, CDS arriving in that order; then a
    cluster added and removed (removed_resources: Remora unsubscribes its
    endpoints), endpoints removed (no hosts: 503) and added back."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cp.set("rds", "r1", [routes("r1", [("/", "backend")])])
    cp.set("eds", "e1", [cla("backend", [a.port])])
    r = remora(delta_bootstrap(admin, cp.grpc_port), wait_ready=False)
    wait_until(lambda: dreqs(cp, CDS) and dreqs(cp, LDS), 15, what="delta CDS+LDS requests")
    first = cp.requests()[0]
    assert first["delta"] and first["has_node"] and first["node_id"] == "sidecar-1"
    # wildcard: an empty first subscription, no nonce on a spontaneous request
    for t in (CDS, LDS):
        q = dreqs(cp, t)[0]
        assert q["subscribe"] == [] and q["response_nonce"] == "" and not q["initial_resource_versions"]
    assert not ready(r)
    cp.set("lds", "l1", [rds_listener("ingress", lport, "r1")])
    time.sleep(0.5)
    assert not ready(r), "ready before CDS arrived"
    cp.set("cds", "c1", [eds_cluster("backend")])
    wait_until(lambda: ready(r), 15, what="/ready 200")
    assert server_of(lport) == "a"
    # EDS and RDS subscribed by name, ACKed with the response's nonce
    assert dreqs(cp, EDS, lambda q: q["subscribe"] == ["backend"])
    assert dreqs(cp, RDS, lambda q: q["subscribe"] == ["r1"])
    last = {p["type"]: p["nonce"] for p in cp.responses()}
    wait_until(lambda: dreqs(cp, EDS, lambda q: q["response_nonce"] == last["eds"]), 5, what="EDS ACK")
    acks = dreqs(cp, EDS, lambda q: q["response_nonce"])
    assert all(q["error_detail"] is None and not q["subscribe"] for q in acks)
    assert r.stat("control_plane.connected_state") == 1
    assert r.stat("cluster_manager.cds.update_success") >= 1

    # a second cluster and a route to it: only the changes travel
    cp.set("cds", "c2", [eds_cluster("backend"), eds_cluster("other")])
    cp.set("eds", "e2", [cla("backend", [a.port]), cla("other", [b.port])])
    cp.set("rds", "r2", [routes("r1", [("/b", "other"), ("/", "backend")])])
    wait_until(lambda: server_of(lport, "/b") == "b", 10, what="route to the added cluster")
    assert server_of(lport, "/a") == "a"
    assert dresps(cp, "cds")[-1]["n"] == 1, "only the added cluster was sent"
    assert dreqs(cp, EDS, lambda q: q["subscribe"] == ["other"])

    # the cluster removed: removed_resources; its EDS name unsubscribed
    cp.set("rds", "r3", [routes("r1", [("/", "backend")])])
    cp.set("cds", "c3", [eds_cluster("backend")])
    assert dresps(cp, "cds")[-1]["removed"] == 1
    wait_until(lambda: dreqs(cp, EDS, lambda q: q["unsubscribe"] == ["other"]), 10,
               what="EDS unsubscribe")
    wait_until(lambda: "other::" not in r.admin_get("/clusters")[2].decode(), 10,
               what="cluster removed")
    assert server_of(lport, "/b") == "a"

    # endpoints: one added, then the assignment removed (no hosts), then back
    cp.delta("eds", "e4", [cla("backend", [a.port, b.port])])
    wait_until(lambda: {server_of(lport) for _ in range(6)} == {"a", "b"}, 10, what="endpoint added")
    cp.delta("eds", "e5", removed=["backend"])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/x").status == 503, 10,
               what="assignment removed: no hosts")
    cp.delta("eds", "e6", [cla("backend", [b.port])])
    wait_until(lambda: all(server_of(lport) == "b" for _ in range(4)), 10, what="endpoints back")
    r.stop()


def test_delta_reconnect_sends_initial_resource_versions(remora, cp, make_upstream, ports):
    """After the control plane restarts, the first request of each type
    carries the versions Remora holds (initial_resource_versions), so the new
    control plane sends only what differs."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    r = remora(delta_bootstrap(admin, cp.grpc_port))
    assert server_of(lport) == "a"
    port = cp.grpc_port
    cp.stop()
    wait_until(lambda: r.stat("control_plane.connected_state") == 0, 10, what="disconnected")
    assert server_of(lport) == "a", "the last configuration keeps serving"
    cp2 = ControlPlane(port)
    try:
        cp2.set("cds", "1", [eds_cluster("backend")])        # unchanged
        cp2.set("rds", "1", [routes("r1", [("/", "backend")])])
        cp2.set("lds", "1", [rds_listener("ingress", lport, "r1")])
        cp2.set("eds", "2", [cla("backend", [b.port])])      # changed
        wait_until(lambda: r.stat("control_plane.connected_state") == 1, 40, what="reconnected")
        wait_until(lambda: server_of(lport) == "b", 15, what="the changed endpoints applied")
        reqs = cp2.requests()
        assert reqs[0]["has_node"]
        firsts = {}
        for q in reqs:
            firsts.setdefault(q["type_url"], q)
        # the versions are the control plane's content hashes, as the first one sent them
        assert set(firsts[CDS]["initial_resource_versions"]) == {"backend"}
        assert set(firsts[LDS]["initial_resource_versions"]) == {"ingress"}
        assert firsts[EDS]["subscribe"] == ["backend"]
        assert set(firsts[EDS]["initial_resource_versions"]) == {"backend"}
        assert firsts[RDS]["subscribe"] == ["r1"]
        assert all(q["response_nonce"] == "" for q in firsts.values()), "nonces do not survive"
        resp = {p["type"]: p for p in cp2.responses()}
        assert resp["cds"]["n"] == 0 and resp["lds"]["n"] == 0 and resp["rds"]["n"] == 0, resp
        assert resp["eds"]["n"] == 1
        assert r.stat("control_plane.stream_reconnects") >= 1
    finally:
        cp2.stop()
    r.stop()


def test_delta_nack_names_field_others_apply(remora, cp, make_upstream, ports):
    """A delta response with a bad cluster and a good one: the good one
    applies, the NACK names the bad resource and the field path and echoes the
    response's nonce; the previous version of the bad cluster keeps serving."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    cp.set("cds", "1", [eds_cluster("backend")])
    cp.set("eds", "1", [cla("backend", [a.port]), cla("extra", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "1", [rds_listener("ingress", lport, "r1")])
    r = remora(delta_bootstrap(admin, cp.grpc_port))
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    bad = eds_cluster("backend")
    bad["lb_policy"] = "CLUSTER_PROVIDED"
    cp.delta("cds", "2", [bad, eds_cluster("extra")])
    nonce = dresps(cp, "cds")[-1]["nonce"]
    q = wait_until(lambda: dreqs(cp, CDS, lambda q: q["error_detail"]), 10, what="CDS NACK")[-1]
    assert q["response_nonce"] == nonce
    msg = q["error_detail"]["message"]
    assert "Cluster 'backend'" in msg and "lb_policy" in msg, msg
    assert q["error_detail"]["code"] == 13
    assert r.stat("cluster_manager.cds.update_rejected") >= 1
    wait_until(lambda: "extra::" in r.admin_get("/clusters")[2].decode(), 10, what="good cluster applied")
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    # a listener with a field Remora's subset does not have: the field path
    tls = rds_listener("tls", ports.get(), "r1")
    tls["access_log"] = [{"name": "envoy.access_loggers.stdout"}]
    cp.delta("lds", "2", [tls])
    q = wait_until(lambda: dreqs(cp, LDS, lambda q: q["error_detail"]), 10, what="LDS NACK")[-1]
    msg = q["error_detail"]["message"]
    assert "Listener 'tls'" in msg and "access_log" in msg, msg
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    r.stop()


def test_delta_updates_under_h2load_zero_failures(remora, cp, make_upstream, ports):
    """h2load runs while delta updates shift a weighted route 100/0 -> 0/100,
    add and remove endpoints and replace the listener's filter chain: every
    request succeeds, and after the shift the upstreams see the new split."""
    a, b, c = make_upstream("a"), make_upstream("b"), make_upstream("c")
    admin, lport = ports.get(), ports.get()

    def weighted(wa, wb):
        return {"name": "r1", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                {"name": "ca", "weight": {"value": wa}},
                {"name": "cb", "weight": {"value": wb}}]}}}]}]}

    cp.set("cds", "1", [eds_cluster("ca"), eds_cluster("cb")])
    cp.set("eds", "1", [cla("ca", [a.port]), cla("cb", [b.port])])
    cp.set("rds", "1", [weighted(100, 0)])
    cp.set("lds", "1", [rds_listener("ingress", lport, "r1")])
    # the replaced listener's HTTP/2 connections get GOAWAY after half the
    # drain time (h2load does not retry refused streams): a drain time longer
    # than the load keeps them serving to its end, as a real mesh's 600 s would
    r = remora(delta_bootstrap(admin, cp.grpc_port), drain_time_s=10)
    assert server_of(lport) == "a"
    out = {}

    def load():
        # timing-based: the load spans every update below (about 1.5 s)
        p = subprocess.run(["h2load", "-D", "4", "-c", "4", "-m", "8",
                            f"http://127.0.0.1:{lport}/load"], capture_output=True, timeout=240)
        out["rc"], out["text"] = p.returncode, p.stdout.decode() + p.stderr.decode()

    t = threading.Thread(target=load)
    t.start()
    try:
        def pause():
            time.sleep(0.3)
        pause()
        cp.delta("eds", "2", [cla("ca", [a.port, c.port])])          # endpoint added
        pause()
        cp.delta("rds", "2", [weighted(0, 100)])                      # shift 100/0 -> 0/100
        pause()
        cp.delta("eds", "3", [cla("ca", [c.port])])                   # endpoint removed
        pause()
        lis = rds_listener("ingress", lport, "r1")                    # filter chain replaced
        lis["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] = {
            "idle_timeout": {"seconds": 120}}
        cp.delta("lds", "2", [lis])
        pause()
    finally:
        t.join(timeout=250)
    text = out.get("text", "")
    assert out.get("rc") == 0, text
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, 0 failed, "
                  r"0 errored, 0 timeout", text)
    assert m and m.group(1) == m.group(2), text
    n = int(m.group(1))
    assert n >= 200, text
    assert re.search(rf"status codes: {n} 2xx, 0 3xx, 0 4xx, 0 5xx", text), text
    # all updates were ACKed without a NACK
    assert not [q for q in cp.requests() if q["error_detail"]]
    # the split after the shift, on new connections: everything to cb (b).
    # (the requests h2load abandoned at its end may still reach the
    # upstreams: wait until their counts settle, bounded; the split on
    # long-lived connections is test_xds.py's test_weighted_shift_under_long_lived_load)
    def counts():
        return (a.request_count(), b.request_count(), c.request_count())
    before, deadline = None, time.monotonic() + 10
    while time.monotonic() < deadline:
        cur = counts()
        if cur == before:
            break
        before = cur
        time.sleep(0.5)
    for _ in range(20):
        assert server_of(lport) == "b"
    after = counts()
    assert after[1] - before[1] == 20 and after[0] == before[0] and after[2] == before[2]
    r.stop()
