"""xDS over REST-JSON polling: `api_config_source {api_type: REST}` in cds_config /
lds_config / eds_config / rds.config_source, against the Node.js test control
plane's REST server (tests/xds/control_plane.js), which answers with canonical
proto3 JSON (lowerCamelCase, Durations "1s") encoded from the official Envoy
protos."""

import copy
import re
import json
import urllib.request

import harness
from harness import curl, wait_until
from test_xds import (CDS, LDS, cla, cp, eds_cluster, pytestmark, rds_listener,  # noqa: F401
                      ready, routes)

REST_SRC = {"api_config_source": {"api_type": "REST", "transport_api_version": "V3",
                                  "cluster_names": ["xds_rest"],
                                  "refresh_delay": {"nanos": 200000000},
                                  "request_timeout": {"seconds": 1}},
            "resource_api_version": "V3"}   # proto-loader form: Durations as objects


def rest_bootstrap(admin, rest_port, request_timeout="1s"):
    src = copy.deepcopy(REST_SRC)
    src["api_config_source"]["request_timeout"] = request_timeout
    b = harness.bootstrap(admin, [], [{
        "name": "xds_rest", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": harness.load_assignment("xds_rest", [("127.0.0.1", rest_port)]),
    }], node_id="sidecar-1")
    b["dynamic_resources"] = {"cds_config": src, "lds_config": copy.deepcopy(src)}
    return b


def rest_cluster(name):
    c = eds_cluster(name)
    c["eds_cluster_config"]["eds_config"] = copy.deepcopy(REST_SRC)
    return c


def rest_listener(name, port, route_name):
    lis = rds_listener(name, port, route_name)
    hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["rds"]["config_source"] = copy.deepcopy(REST_SRC)
    return lis


def rest_reqs(cp, type_, pred=lambda q: True):
    return [q for q in cp.requests() if q.get("rest") and q["type"] == type_ and pred(q)]


def rest_resps(cp, type_, status):
    return [q for q in cp.responses() if q.get("rest") and q["type"] == type_
            and q["status"] == status]


def server_of(port, path="/x"):
    r = curl(f"http://127.0.0.1:{port}{path}")
    return r.json()["server"] if r.status == 200 else r.status


def start(remora, cp, make_upstream, ports, **kw):
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cp.set("cds", "c1", [rest_cluster("backend")])
    cp.set("eds", "e1", [cla("backend", [a.port])])
    cp.set("rds", "r1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "l1", [rest_listener("ingress", lport, "r1")])
    r = remora(rest_bootstrap(admin, cp.rest_port, **kw), wait_ready=False)
    wait_until(lambda: ready(r), 20, what="/ready 200 over REST")
    return r, a, b, lport


def test_rest_polling_applies_updates_and_304_is_a_noop(remora, cp, make_upstream, ports):
    r, a, b, lport = start(remora, cp, make_upstream, ports)
    assert server_of(lport) == "a"
    # every type was POSTed to its /v3/discovery:<type> with the node and, for
    # EDS/RDS, the resource names; the accepted version goes back in version_info
    for t in ("cds", "lds"):
        q = wait_until(lambda: rest_reqs(cp, t, lambda q: q["version_info"] == t[0] + "1"), 5,
                       what=f"{t} poll with the accepted version")[-1]
        assert q["has_node"] and q["node_id"] == "sidecar-1" and q["error_detail"] is None
        assert q["response_nonce"].startswith("rest-")
    q = wait_until(lambda: rest_reqs(cp, "eds", lambda q: q["version_info"] == "e1"), 5)[-1]
    assert q["resource_names"] == ["backend"]
    q = wait_until(lambda: rest_reqs(cp, "rds", lambda q: q["version_info"] == "r1"), 5)[-1]
    assert q["resource_names"] == ["r1"]
    assert r.stat("cluster_manager.cds.version") != 0   # a hash of "c1"
    # the control plane speaks canonical proto3 JSON (what Remora had to read)
    req = urllib.request.Request(f"http://127.0.0.1:{cp.rest_port}/v3/discovery:clusters",
                                 data=json.dumps({"typeUrl": CDS}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["versionInfo"] == "c1" and body["typeUrl"] == CDS
    assert body["resources"][0]["connectTimeout"] == "1s"
    assert "edsClusterConfig" in body["resources"][0]

    # unchanged state: the control plane answers 304; nothing is re-applied
    success = r.stat("cluster_manager.cds.update_success")
    n304 = len(rest_resps(cp, "cds", 304))
    wait_until(lambda: len(rest_resps(cp, "cds", 304)) >= n304 + 3, 10, what="304 answers")
    assert r.stat("cluster_manager.cds.update_success") == success
    assert r.stat("cluster_manager.cds.update_attempt") > success
    assert r.stat("cluster_manager.cds.update_failure") == 0
    assert server_of(lport) == "a"

    # updates: a new cluster + endpoints + route (RDS and EDS by name over REST)
    cp.set("eds", "e2", [cla("backend", [a.port]), cla("other", [b.port])])
    cp.set("cds", "c2", [rest_cluster("backend"), rest_cluster("other")])
    cp.set("rds", "r2", [routes("r1", [("/b", "other"), ("/", "backend")])])
    wait_until(lambda: server_of(lport, "/b") == "b", 15, what="route + cluster update over REST")
    assert server_of(lport, "/a") == "a"
    wait_until(lambda: rest_reqs(cp, "eds", lambda q: q["resource_names"] == ["backend", "other"]),
               5, what="EDS polled for the new cluster")
    assert r.stat("cluster_manager.cds.update_success") > success
    assert r.stat("control_plane.pending_requests") >= 0
    r.stop()


def test_rest_failures_keep_serving_and_count_update_failure(remora, cp, make_upstream, ports):
    r, a, b, lport = start(remora, cp, make_upstream, ports, request_timeout="0.5s")
    # a 500
    cp.rest_script("cds", status=500)
    f0 = r.stat("cluster_manager.cds.update_failure")
    r.wait_stat("cluster_manager.cds.update_failure", lambda v: v >= f0 + 2, timeout=10)
    assert server_of(lport) == "a"
    # a timeout (the answer comes after request_timeout)
    cp.rest_script("cds", status=None, delay_ms=1500)
    cp.rest_script("lds", status=None, delay_ms=1500)
    f1 = r.stat("cluster_manager.cds.update_failure")
    l1 = r.stat("listener_manager.lds.update_failure")
    r.wait_stat("cluster_manager.cds.update_failure", lambda v: v >= f1 + 2, timeout=15)
    r.wait_stat("listener_manager.lds.update_failure", lambda v: v >= l1 + 1, timeout=15)
    assert server_of(lport) == "a"
    assert r.stat("cluster_manager.cds.update_rejected") == 0
    # the control plane recovers: the next version applies
    cp.rest_script("cds")
    cp.rest_script("lds")
    cp.set("eds", "e2", [cla("backend", [b.port])])
    wait_until(lambda: server_of(lport) == "b", 15, what="update after the failures")
    r.stop()


def test_rest_rejected_resource_counts_and_sends_error_detail(remora, cp, make_upstream, ports):
    r, a, b, lport = start(remora, cp, make_upstream, ports)
    bad = rest_cluster("backend")
    bad["lb_policy"] = "CLUSTER_PROVIDED"
    cp.set("eds", "e2", [cla("backend", [a.port]), cla("extra", [b.port])])
    cp.set("cds", "c2", [bad, rest_cluster("extra")])
    r.wait_stat("cluster_manager.cds.update_rejected", lambda v: v >= 1, timeout=10)
    # the next request carries error_detail and the last accepted version
    q = wait_until(lambda: rest_reqs(cp, "cds", lambda q: q["error_detail"]), 10,
                   what="CDS poll with error_detail")[0]
    assert q["version_info"] == "c1", q
    assert q["error_detail"]["code"] == 13
    assert "Cluster 'backend'" in q["error_detail"]["message"]
    assert "lb_policy" in q["error_detail"]["message"]
    # the old config serves, the valid cluster of the same response applied
    assert server_of(lport) == "a"
    wait_until(lambda: "extra::" in r.admin_get("/clusters")[2].decode(), 10,
               what="valid cluster applied")
    # fixed: ACKed, the next request has no error_detail
    cp.set("cds", "c3", [rest_cluster("backend"), rest_cluster("extra")])
    wait_until(lambda: rest_reqs(cp, "cds", lambda q: q["version_info"] == "c3"
                                 and not q["error_detail"]), 10, what="ACK of the fixed version")
    assert server_of(lport) == "a"
    r.stop()


def test_rest_bootstrap_validation(tmp_path, ports):
    """REST needs cluster_names; mixing REST with ads: {} is refused with the path."""
    import subprocess
    admin = ports.get()
    b = rest_bootstrap(admin, 1)
    del b["dynamic_resources"]["cds_config"]["api_config_source"]["cluster_names"]
    p = tmp_path / "b.json"
    p.write_text(json.dumps(b))
    out = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(p)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "cluster_names" in out.stderr + out.stdout
    b = rest_bootstrap(admin, 1)
    b["dynamic_resources"]["lds_config"] = {"ads": {}}
    p.write_text(json.dumps(b))
    out = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(p)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "lds_config.ads" in out.stderr + out.stdout, out.stderr


def config_dump(r):
    st, _, body = r.admin_get("/config_dump?include_eds")   # endpoints only when asked (Envoy)
    assert st == 200
    out = {}
    for c in json.loads(body)["configs"]:
        out[c["@type"].rsplit(".", 1)[-1]] = c
    return out


def test_config_dump_dynamic_sections_and_stats(remora, cp, make_upstream, ports):
    r, a, b, lport = start(remora, cp, make_upstream, ports)
    d = config_dump(r)
    cl = d["ClustersConfigDump"]
    assert [c["cluster"]["name"] for c in cl["static_clusters"]] == ["xds_rest"]
    assert cl["version_info"] == "c1"
    (act,) = cl["dynamic_active_clusters"]
    assert act["version_info"] == "c1" and act["cluster"]["name"] == "backend"
    assert act["cluster"]["@type"] == CDS
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", act["last_updated"]), act
    assert cl["dynamic_warming_clusters"] == []
    lis = d["ListenersConfigDump"]
    assert lis["version_info"] == "l1"
    (dl,) = lis["dynamic_listeners"]
    assert dl["name"] == "ingress" and "warming_state" not in dl
    assert dl["active_state"]["version_info"] == "l1"
    assert dl["active_state"]["listener"]["@type"] == LDS
    assert dl["active_state"]["last_updated"]
    (rc,) = d["RoutesConfigDump"]["dynamic_route_configs"]
    assert rc["version_info"] == "r1" and rc["route_config"]["name"] == "r1" and rc["last_updated"]
    (ep,) = d["EndpointsConfigDump"]["dynamic_endpoint_configs"]
    assert ep["version_info"] == "e1" and ep["endpoint_config"]["cluster_name"] == "backend"
    first_update = act["last_updated"]

    # warming: a cluster whose endpoints never come, a listener whose routes never come
    cp.set("cds", "c2", [rest_cluster("backend"), rest_cluster("cold")])
    cp.set("lds", "l2", [rest_listener("ingress", lport, "r1"),
                         rest_listener("waiting", ports.get(), "nowhere")])

    def warming():
        d = config_dump(r)
        w = d["ClustersConfigDump"]["dynamic_warming_clusters"]
        ls = {x["name"]: x for x in d["ListenersConfigDump"]["dynamic_listeners"]}
        return (w and "waiting" in ls) and (d, w, ls)
    d, w, ls = wait_until(warming, 10, what="warming sections")
    assert [x["cluster"]["name"] for x in w] == ["cold"] and w[0]["version_info"] == "c2"
    assert "active_state" not in ls["waiting"]
    assert ls["waiting"]["warming_state"]["version_info"] == "l2"
    # unchanged resources keep their version and time
    act = {x["cluster"]["name"]: x for x in d["ClustersConfigDump"]["dynamic_active_clusters"]}
    assert act["backend"]["version_info"] == "c1" and act["backend"]["last_updated"] == first_update
    assert ls["ingress"]["active_state"]["version_info"] == "l1"
    assert d["ClustersConfigDump"]["version_info"] == "c2"

    # the stats by name
    st = r.stats()
    for scope in ("cluster_manager.cds", "listener_manager.lds"):
        for n in ("update_attempt", "update_success", "update_rejected", "update_failure",
                  "version"):
            assert f"{scope}.{n}" in st, (scope, n)
    assert st["cluster_manager.cds.update_success"] >= 2
    assert "control_plane.pending_requests" in st
    assert st["cluster_manager.warming_clusters"] == 1
    r.stop()
