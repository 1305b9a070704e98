"""xDS: Remora driven over ADS (gRPC, state of the world) by the Node.js test
control plane (tests/xds/control_plane.js: @grpc/grpc-js + the official Envoy
protos of @grpc/grpc-js-xds), so every message Remora decodes was encoded from
the real schemas.

Resources are written in proto-loader object form: snake_case fields,
Durations as {seconds, nanos}, wrappers as {value}, Anys as {"@type": ...}."""

import json
import re
import os
import subprocess
import time
import urllib.request

import pytest

import harness
from harness import curl, wait_until

XDS_DIR = os.path.join(harness.REPO, "tests", "xds")
NODE_MODULES = os.path.join(XDS_DIR, "node_modules", "@grpc", "grpc-js-xds")

pytestmark = pytest.mark.skipif(
    not os.path.isdir(NODE_MODULES) and not os.environ.get("CI"),
    reason="test control plane not installed (make xds-npm)")

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class ControlPlane:
    def __init__(self, port=0, rest_port=0, rest_tls=None, rest_tls_port=0, grpc_tls=None):
        """rest_tls: (cert, key) or (cert, key, client_ca) for an HTTPS REST
        server beside the plain one (client_ca: mTLS); grpc_tls: the same for
        the gRPC port (TLS instead of h2c)."""
        args = ["--port", str(port), "--rest-port", str(rest_port)]
        if rest_tls:
            args += ["--rest-tls", ",".join(rest_tls), "--rest-tls-port", str(rest_tls_port)]
        if grpc_tls:
            args += ["--grpc-tls", ",".join(grpc_tls)]
        self.proc = subprocess.Popen(
            ["node", os.path.join(XDS_DIR, "control_plane.js")] + args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("control plane failed: " + self.proc.stderr.read().decode())
        info = json.loads(line)
        self.grpc_port = info["grpc_port"]
        self.http_port = info["http_port"]
        self.rest_port = info["rest_port"]
        self.rest_tls_port = info.get("rest_tls_port")

    def _call(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def set(self, type_, version, resources, resend_on_nack=False):
        return self._call("POST", "/set", {"type": type_, "version": version,
                                           "resources": resources,
                                           "resend_on_nack": resend_on_nack})

    def delta(self, type_, version, resources=(), removed=()):
        """Change only these resources (delta streams get only them)."""
        return self._call("POST", "/delta", {"type": type_, "version": version,
                                             "resources": list(resources),
                                             "removed": list(removed)})

    def requests(self):
        return self._call("GET", "/requests")

    def rest_script(self, type_, status=None, delay_ms=0):
        """REST answers for type_: fail with status, or answer after delay_ms."""
        return self._call("POST", "/rest_script", {"type": type_, "status": status,
                                                   "delay_ms": delay_ms})

    def responses(self):
        return self._call("GET", "/responses")

    def streams(self):
        return self._call("GET", "/streams")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def cp():
    c = ControlPlane()
    yield c
    c.stop()


def xds_bootstrap(admin_port, cp_port, fetch_timeout=None, api_type="GRPC"):
    cds = {"ads": {}, "resource_api_version": "V3"}
    lds = {"ads": {}, "resource_api_version": "V3"}
    if fetch_timeout:
        cds["initial_fetch_timeout"] = fetch_timeout
        lds["initial_fetch_timeout"] = fetch_timeout
    b = harness.bootstrap(admin_port, [], [{
        "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": harness.load_assignment("xds_cluster", [("127.0.0.1", cp_port)]),
    }], node_id="sidecar-1")
    b["dynamic_resources"] = {
        "ads_config": {"api_type": api_type, "transport_api_version": "V3",
                       "set_node_on_first_message_only": True,
                       "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
        "cds_config": cds,
        "lds_config": lds,
    }
    return b


def eds_cluster(name, service_name=None):
    c = {"name": name, "type": "EDS", "connect_timeout": {"seconds": 1},
         "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}
    if service_name:
        c["eds_cluster_config"]["service_name"] = service_name
    return c


def cla(name, ports):
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports]}]}


def rds_listener(name, port, route_name, fetch_timeout=None):
    """fetch_timeout: the RDS config source's initial_fetch_timeout (a
    Duration object; default 15 s)."""
    src = {"ads": {}, "resource_api_version": "V3"}
    if fetch_timeout is not None:
        src["initial_fetch_timeout"] = fetch_timeout
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM_TYPE, "stat_prefix": name,
                    "rds": {"route_config_name": route_name, "config_source": src},
                    "http_filters": [{"name": "envoy.filters.http.router",
                                      "typed_config": {"@type": ROUTER_TYPE}}]}}]}]}


def routes(name, prefix_to_cluster):
    return {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": p}, "route": {"cluster": c}} for p, c in prefix_to_cluster]}]}


def restart_control_plane(r, cp, lport):
    """Stop cp: Remora disconnects and the last configuration keeps serving
    on lport (checked); a few reconnect attempts fail; then a new, empty
    control plane on the same port (returned: the caller stops it)."""
    port = cp.grpc_port
    cp.stop()
    wait_until(lambda: r.stat("control_plane.connected_state") == 0, 10, what="disconnected")
    for _ in range(5):
        assert curl(f"http://127.0.0.1:{lport}/").status == 200
    time.sleep(1.0)   # a few reconnect attempts fail meanwhile
    return ControlPlane(port)


def push_backend(cp, version, ports, lport):
    """The usual four resources at one version: cluster "backend" (EDS) on
    the upstream ports, RouteConfiguration "r1" sending / to it, listener
    "ingress" on lport using r1."""
    cp.set("cds", version, [eds_cluster("backend")])
    cp.set("eds", version, [cla("backend", ports)])
    cp.set("rds", version, [routes("r1", [("/", "backend")])])
    cp.set("lds", version, [rds_listener("ingress", lport, "r1")])


def ready(r):
    st, _, _ = r.admin_request("GET", "/ready", timeout=2)
    return st == 200


def last_request(cp, type_url, pred=lambda q: True):
    for q in reversed(cp.requests()):
        if q["type_url"] == type_url and pred(q):
            return q
    return None


def test_cold_start_any_order_then_updates(remora, cp, make_upstream, ports):
    """Cold start with resources pushed in the order RDS, EDS, LDS, CDS: /ready
    turns 200 only once all of them arrived; then a route change, an endpoint
    added and one removed apply to new requests."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cp.set("rds", "r1", [routes("r1", [("/", "backend")])])
    cp.set("eds", "e1", [cla("backend", [a.port])])
    r = remora(xds_bootstrap(admin, cp.grpc_port), wait_ready=False)
    # the proxy subscribed to CDS and LDS (wildcard) with its node on the first request
    wait_until(lambda: last_request(cp, LDS) and last_request(cp, CDS), 15, what="CDS+LDS requests")
    first = cp.requests()[0]
    assert first["has_node"] and first["node_id"] == "sidecar-1"
    assert first["node_cluster"] == "remora-tests"
    assert not ready(r)
    cp.set("lds", "l1", [rds_listener("ingress", lport, "r1")])
    time.sleep(0.5)
    assert not ready(r), "ready before CDS arrived"
    cp.set("cds", "c1", [eds_cluster("backend")])
    wait_until(lambda: ready(r), 15, what="/ready 200")
    res = curl(f"http://127.0.0.1:{lport}/x")
    assert res.status == 200, res
    assert res.json()["server"] == "a"
    # ACKs carry the accepted version and the newest nonce; EDS/RDS asked by name
    q = wait_until(lambda: last_request(cp, EDS, lambda q: q["version_info"] == "e1"), 5)
    assert q["resource_names"] == ["backend"] and q["error_detail"] is None and q["response_nonce"]
    q = wait_until(lambda: last_request(cp, RDS, lambda q: q["version_info"] == "r1"), 5)
    assert q["resource_names"] == ["r1"]
    assert not any(q["has_node"] for q in cp.requests()[1:]), "node only on the first message"
    assert r.stat("control_plane.connected_state") == 1
    assert r.stat("cluster_manager.cds.update_success") >= 1
    assert r.stat("listener_manager.lds.update_success") >= 1

    # route change: /b goes to a second cluster
    cp.set("cds", "c2", [eds_cluster("backend"), eds_cluster("other")])
    cp.set("eds", "e2", [cla("backend", [a.port]), cla("other", [b.port])])
    cp.set("rds", "r2", [routes("r1", [("/b", "other"), ("/", "backend")])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/b").json()["server"] == "b", 10,
               what="route change")
    assert curl(f"http://127.0.0.1:{lport}/a").json()["server"] == "a"

    # endpoint added then the old one removed
    cp.set("eds", "e3", [cla("backend", [a.port, b.port]), cla("other", [b.port])])
    wait_until(lambda: {curl(f"http://127.0.0.1:{lport}/x").json()["server"] for _ in range(6)}
               == {"a", "b"}, 10, what="endpoint added")
    cp.set("eds", "e4", [cla("backend", [b.port]), cla("other", [b.port])])
    wait_until(lambda: all(curl(f"http://127.0.0.1:{lport}/x").json()["server"] == "b"
                           for _ in range(6)), 10, what="endpoint removed")
    r.stop()


def test_invalid_resource_nacked_old_config_serves(remora, cp, make_upstream, ports):
    """A bad cluster and a listener with a field Remora does not support are
    NACKed with the field path, the previous version keeps serving, and the
    valid resources of the same response are applied."""
    a = make_upstream("a")
    admin, lport, lport2 = ports.get(), ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    assert curl(f"http://127.0.0.1:{lport}/").status == 200

    # CDS v2: 'backend' gets an invalid lb_policy value, 'extra' is fine
    bad = eds_cluster("backend")
    bad["lb_policy"] = "CLUSTER_PROVIDED"
    cp.set("eds", "2", [cla("backend", [a.port]), cla("extra", [a.port])])
    cp.set("cds", "2", [bad, eds_cluster("extra")])
    q = wait_until(lambda: last_request(cp, CDS, lambda q: q["error_detail"]), 10, what="CDS NACK")
    assert q["version_info"] == "1", "a NACK carries the last accepted version"
    assert "Cluster 'backend'" in q["error_detail"]["message"]
    assert "lb_policy" in q["error_detail"]["message"]
    assert q["error_detail"]["code"] == 13
    assert r.stat("cluster_manager.cds.update_rejected") >= 1
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    wait_until(lambda: "extra::" in r.admin_get("/clusters")[2].decode(), 10, what="valid cluster applied")

    # LDS v2: a listener with a field Remora's protobuf subset leaves out
    # (access_log on a listener) -> NACK naming the field; a second, valid
    # listener in the same response starts.  (TLS transport sockets are in
    # the subset: test_xds_sds.py serves TLS listeners and clusters over xDS.)
    tls = rds_listener("tls", ports.get(), "r1")
    tls["access_log"] = [{"name": "envoy.access_loggers.stdout"}]
    cp.set("lds", "2", [rds_listener("ingress", lport, "r1"), tls,
                        rds_listener("second", lport2, "r1")])
    q = wait_until(lambda: last_request(cp, LDS, lambda q: q["error_detail"]), 10, what="LDS NACK")
    msg = q["error_detail"]["message"]
    assert "Listener 'tls'" in msg and "resources[1]" in msg, msg
    assert "field 'access_log' (number 22)" in msg, msg
    assert q["version_info"] == "1"
    wait_until(lambda: curl(f"http://127.0.0.1:{lport2}/").status == 200, 10,
               what="valid listener of the rejected response applied")
    assert curl(f"http://127.0.0.1:{lport}/").status == 200

    # RDS v2: a route with an invalid regex -> NACK naming the route table and
    # the field; the previous routes keep serving both listeners
    bad_rt = routes("r1", [("/", "backend")])
    bad_rt["virtual_hosts"][0]["routes"].insert(0, {
        "match": {"safe_regex": {"regex": "(unclosed"}}, "route": {"cluster": "backend"}})
    cp.set("rds", "2", [bad_rt])
    q = wait_until(lambda: last_request(cp, RDS, lambda q: q["error_detail"]), 10, what="RDS NACK")
    msg = q["error_detail"]["message"]
    assert "RouteConfiguration 'r1'" in msg and "safe_regex" in msg, msg
    assert q["version_info"] == "1" and q["resource_names"] == ["r1"]
    for p in (lport, lport2):
        assert curl(f"http://127.0.0.1:{p}/").status == 200
    r.stop()


def test_unchanged_resources_keep_their_objects(remora, cp, make_upstream, ports):
    """A response that repeats accepted resources under a new version is ACKed
    without recompiling them: the cluster keeps its stats and host set, and a
    listener keeps its socket; a listener removed from the full LDS state
    stops accepting."""
    a = make_upstream("a")
    admin, lport, lport2 = ports.get(), ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    # one worker: with two, a request after the update may land on the
    # worker whose pool is still empty and open a connection legitimately
    r = remora(xds_bootstrap(admin, cp.grpc_port), concurrency=1)
    for _ in range(5):
        assert curl(f"http://127.0.0.1:{lport}/").status == 200
    wait_until(lambda: r.stat("cluster.backend.upstream_rq_total") == 5, 5)
    conns = a.connections
    cp.set("cds", "2", [eds_cluster("backend")])
    cp.set("eds", "2", [cla("backend", [a.port])])
    cp.set("lds", "2", [rds_listener("ingress", lport, "r1"), rds_listener("two", lport2, "r1")])
    wait_until(lambda: last_request(cp, LDS, lambda q: q["version_info"] == "2"), 10, what="LDS ACK")
    assert last_request(cp, CDS, lambda q: q["version_info"] == "2")["error_detail"] is None
    wait_until(lambda: curl(f"http://127.0.0.1:{lport2}/").status == 200, 10)
    # same cluster object: its counter went on from 5, and the pooled
    # upstream connection(s) were reused rather than new ones opened
    for _ in range(5):
        assert curl(f"http://127.0.0.1:{lport}/").status == 200
    wait_until(lambda: r.stat("cluster.backend.upstream_rq_total") == 11, 5)
    assert a.connections == conns, "the pool of the unchanged cluster was kept"
    # full state: 'two' removed -> its port is closed
    cp.set("lds", "3", [rds_listener("ingress", lport, "r1")])
    wait_until(lambda: harness.connect_refused(lport2), 10, what="removed listener closed")
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    # a second listener on the same address is rejected (SO_REUSEPORT would
    # otherwise split the connections between them)
    cp.set("lds", "4", [rds_listener("ingress", lport, "r1"), rds_listener("dup", lport, "r1")])
    q = wait_until(lambda: last_request(cp, LDS, lambda q: q["error_detail"]), 10, what="LDS NACK")
    assert "Listener 'dup': another listener has that address" in q["error_detail"]["message"]
    assert q["version_info"] == "3"
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    r.stop()


def test_control_plane_restart_reconnects(remora, cp, make_upstream, ports):
    """The control plane dies: Remora keeps serving the last config, reconnects
    (backoff), resubscribes with its accepted versions, and applies the next push."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
    cp2 = restart_control_plane(r, cp, lport)
    try:
        push_backend(cp2, "2", [b.port], lport)
        wait_until(lambda: r.stat("control_plane.connected_state") == 1, 40, what="reconnected")
        reqs = cp2.requests()
        cds = [q for q in reqs if q["type_url"] == CDS]
        assert cds[0]["version_info"] == "1", "resubscribes with the last accepted version"
        assert reqs[0]["has_node"]
        wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] == "b", 15,
                   what="next push applied")
        assert r.stat("control_plane.stream_reconnects") >= 1
    finally:
        cp2.stop()
    r.stop()


def test_bootstrap_validation(tmp_path, ports):
    """dynamic_resources errors name the field; xDS needs node id and cluster."""
    b = xds_bootstrap(ports.get(), 1)
    b["dynamic_resources"]["ads_config"]["api_type"] = "REST"
    path = tmp_path / "b.yaml"
    path.write_text(json.dumps(b))
    out = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "dynamic_resources.ads_config.api_type" in out.stderr + out.stdout
    b = xds_bootstrap(ports.get(), 1)
    del b["node"]["cluster"]
    path.write_text(json.dumps(b))
    out = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "node 'id' and 'cluster' are required" in out.stderr + out.stdout


def test_proto_subset_matches_envoy_api(tmp_path):
    """xds/proto is exactly what gen_subset.py derives from the official Envoy
    protos (the ones the test control plane installs): same names, field
    numbers and types; regenerating changes nothing."""
    pb = tmp_path / "envoy.pb"
    subprocess.run(["sh", os.path.join(XDS_DIR, "protos.sh"), "descriptor", str(pb)], check=True,
                   timeout=60)
    out = tmp_path / "subset"
    subprocess.run(["/usr/bin/python3", os.path.join(harness.REPO, "xds", "proto", "gen_subset.py"),
                    str(pb), str(out)], check=True, timeout=60, capture_output=True)
    committed = os.path.join(harness.REPO, "xds", "proto")
    generated = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "envoy/config/cluster/v3/subset.proto" in generated
    for rel in generated:
        with open(os.path.join(committed, rel)) as f:
            assert f.read() == (out / rel).read_text(), f"xds/proto/{rel} is stale: make xds-proto-subset"
    have = sorted(os.path.relpath(os.path.join(d, n), committed)
                  for d, _, files in os.walk(committed) for n in files
                  if n.endswith(".proto") or n.endswith(".def"))
    # istio/ is not Envoy's: the CA protocol (istio/api security/v1alpha1/ca.proto),
    # written by hand; test_remora_ca.py exercises it against remora-cp
    have = [p for p in have if not p.startswith("istio/")]
    assert have == generated


def test_fetch_timeouts_release_warming(remora, cp, make_upstream, ports):
    """Endpoints and routes that never arrive do not block startup forever:
    after initial_fetch_timeout the EDS cluster starts empty (503) and the RDS
    listener with an empty route table (404); when they arrive they apply."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    c = eds_cluster("backend")
    c["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = {"seconds": 1}
    cp.set("cds", "1", [c])
    cp.set("lds", "1", [rds_listener("ingress", lport, "missing", fetch_timeout={"seconds": 1})])
    r = remora(xds_bootstrap(admin, cp.grpc_port, fetch_timeout="1s"), wait_ready=False)
    r.wait_ready(timeout=20)
    assert curl(f"http://127.0.0.1:{lport}/").status == 404
    cp.set("rds", "1", [routes("missing", [("/", "backend")])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").status == 503, 10, what="routes applied")
    cp.set("eds", "1", [cla("backend", [a.port])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").status == 200, 10,
               what="endpoints applied")
    r.stop()


def test_rds_initial_fetch_timeout_per_subscription(remora, cp, make_upstream, ports):
    """Each RDS subscription (HCM stat_prefix, route_config_name) has its own
    initial_fetch_timeout, its rds.config_source's, running from its creation
    (as Envoy), not the LDS one: a listener whose routes never come starts
    after its own timeout with an empty route table (404, NR) while the
    other listener's routes arrive and serve; a subscription created later
    waits for its own timeout; 0s waits forever; the timer covers only the
    first fetch (a listener update keeping the subscription does not restart
    it)."""
    a = make_upstream("a")
    admin, pa, pb, pc, pd = (ports.get() for _ in range(5))
    cp.set("cds", "1", [eds_cluster("backend")])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("present", [("/", "backend")])])
    lst_a = rds_listener("fast", pa, "never_a", fetch_timeout={"seconds": 1})
    lst_b = rds_listener("slow", pb, "present", fetch_timeout={"seconds": 60})
    cp.set("lds", "1", [lst_a, lst_b])
    # CDS/LDS (and so the process-wide startup hold) wait 60 s: only the
    # 1 s RDS timeout of 'fast' lets the initial fetch complete in time
    r = remora(xds_bootstrap(admin, cp.grpc_port, fetch_timeout="60s"), wait_ready=False)
    r.wait_ready(timeout=30)
    assert curl(f"http://127.0.0.1:{pb}/x").json()["server"] == "a"
    res = curl(f"http://127.0.0.1:{pa}/x")
    assert res.status == 404, res
    st = r.stats()
    assert st["http.fast.no_route"] >= 1   # NR: the empty route table
    assert st["http.fast.rds.never_a.init_fetch_timeout"] == 1
    assert st["http.slow.rds.present.init_fetch_timeout"] == 0
    assert st["http.slow.rds.present.update_success"] >= 1
    assert st["http.fast.rds.never_a.update_success"] == 0
    warn = [ln for ln in r.stderr_text().splitlines() if "RDS initial_fetch_timeout" in ln]
    assert len(warn) == 1 and "'fast'" in warn[0] and "'never_a'" in warn[0], warn

    # later subscriptions: 'late' (4 s) waits its own 4 s although 'never_a'
    # timed out long ago; 'forever' (0s) never times out
    lst_c = rds_listener("late", pc, "never_c", fetch_timeout={"seconds": 4})
    lst_d = rds_listener("forever", pd, "never_d", fetch_timeout={"seconds": 0})
    t_push = time.monotonic()
    cp.set("lds", "2", [lst_a, lst_b, lst_c, lst_d])
    wait_until(lambda: curl(f"http://127.0.0.1:{pc}/x", timeout=3).status == 404, 30,
               what="'late' serves its empty route table")
    # a timer does not fire early: 'late' cannot have started before 4 s
    assert time.monotonic() - t_push >= 4.0 - 0.05
    st = r.stats()
    assert st["http.late.rds.never_c.init_fetch_timeout"] == 1
    assert st["http.fast.rds.never_a.init_fetch_timeout"] == 1
    assert "http.forever.rds.never_d.update_attempt" in st   # subscribed
    assert st["http.forever.rds.never_d.init_fetch_timeout"] == 0
    assert curl(f"http://127.0.0.1:{pd}/x", timeout=3).status == 0   # still warming: not bound
    cd = json.loads(r.admin_get("/config_dump")[2])
    dyn = [d for c in cd["configs"] if "dynamic_listeners" in c for d in c["dynamic_listeners"]]
    assert {d["name"] for d in dyn if "active_state" in d} == {"fast", "slow", "late"}, dyn

    # the timer covers only the first fetch: a new version of 'late' (same
    # subscription) starts at once with the empty table, and no second
    # timeout is counted
    lst_c2 = rds_listener("late", pc, "never_c", fetch_timeout={"seconds": 4})
    lst_c2["filter_chains"][0]["filters"][0]["typed_config"]["server_name"] = "late-v2"
    cp.set("lds", "3", [lst_a, lst_b, lst_c2, lst_d])
    wait_until(lambda: curl(f"http://127.0.0.1:{pc}/x", timeout=3).headers.get("server")
               == "late-v2", 30, what="the new version of 'late' in force")
    time.sleep(4.5)   # a restarted 4 s timer would have fired by now
    assert r.stat("http.late.rds.never_c.init_fetch_timeout") == 1
    # the missing routes arrive: 'fast' and 'forever' serve them
    cp.set("rds", "2", [routes("present", [("/", "backend")]),
                        routes("never_a", [("/", "backend")]),
                        routes("never_d", [("/", "backend")])])
    wait_until(lambda: curl(f"http://127.0.0.1:{pa}/x").status == 200, 15, what="'fast' routes")
    wait_until(lambda: curl(f"http://127.0.0.1:{pd}/x", timeout=3).status == 200, 15,
               what="'forever' routes")
    assert r.stat("http.forever.rds.never_d.init_fetch_timeout") == 0
    r.stop()


def test_draining_cluster_version_leaves_gauges(remora, cp, make_upstream, ports):
    """A cluster updated over CDS keeps its previous version while a request
    still uses it; both share the cluster.backend.* scopes.  Only the version
    in force writes the gauges: the draining one's health checker seeing a
    host come back (a host only it has) changes neither membership_* nor
    health_check.healthy, and the circuit-breaker gauges show the new
    thresholds; the draining version's counters still count."""
    import threading
    u1, u2, u3, u4 = (make_upstream(n) for n in ("u1", "u2", "u3", "u4"))
    x_port = harness.free_port()   # down until the old version drains
    admin, lport = ports.get(), ports.get()
    hc = {"timeout": {"seconds": 1}, "interval": {"nanos": 200000000},
          "unhealthy_threshold": {"value": 1}, "healthy_threshold": {"value": 1},
          "http_health_check": {"path": "/healthz"}}

    def version(hosts, max_rq):
        return {"name": "backend", "type": "STATIC", "connect_timeout": {"seconds": 1},
                "lb_policy": "ROUND_ROBIN", "load_assignment": cla("backend", hosts),
                "health_checks": [hc],
                "circuit_breakers": {"thresholds": [{"max_requests": {"value": max_rq},
                                                     "track_remaining": True}]}}
    cp.set("cds", "1", [version([u1.port, u2.port, x_port], 10)])
    # the long request below sleeps 15 s upstream: the route timeout (15 s
    # by default, as in Envoy) must not race it
    rc = routes("r1", [("/", "backend")])
    rc["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = {"seconds": 60}
    cp.set("rds", "1", [rc])
    cp.set("lds", "1", [rds_listener("ingress", lport, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    c = "cluster.backend."
    r.wait_stat(c + "membership_healthy", lambda v: v == 2, timeout=10)
    assert r.stat(c + "membership_total") == 3
    r.wait_stat(c + "circuit_breakers.default.remaining_rq", lambda v: v == 10, timeout=10)

    # a long request holds version 1 (on u1 or u2: x is unhealthy)
    long_res = []
    t = threading.Thread(target=lambda: long_res.append(
        curl(f"http://127.0.0.1:{lport}/long?sleep_ms=15000", timeout=40)))
    t.start()
    wait_until(lambda: any(q["path"].startswith("/long") for q in u1.requests + u2.requests),
               10, what="the long request reached an upstream")
    ok200 = r.stat(c + "upstream_rq_200")

    # version 2: four other-or-same hosts, other thresholds; in force at once
    cp.set("cds", "2", [version([u1.port, u2.port, u3.port, u4.port], 50)])
    r.wait_stat(c + "membership_total", lambda v: v == 4, timeout=15)
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] in ("u3", "u4"),
               10, what="version 2 serves")
    # x comes up: only version 1 checks it; once it has answered two checks
    # (so the first result was applied) version 1 has seen it healthy
    x = make_upstream("x", port=x_port)
    wait_until(lambda: sum(q["path"] == "/healthz" for q in x.requests) >= 2, 15,
               what="the draining version health-checks x")
    assert t.is_alive(), "the long request ended: the old version was not draining"
    st = r.stats()
    assert st[c + "membership_total"] == 4, st[c + "membership_total"]
    assert st[c + "membership_healthy"] == 4, st[c + "membership_healthy"]
    assert st[c + "health_check.healthy"] == 4, st[c + "health_check.healthy"]
    assert st[c + "circuit_breakers.default.remaining_rq"] == 50
    # the draining version's request completes and counts
    t.join(60)
    assert long_res and long_res[0].status == 200, long_res
    r.wait_stat(c + "upstream_rq_200", lambda v: v >= ok200 + 1, timeout=10)
    assert r.stat(c + "membership_total") == 4
    r.stop()


def test_tcp_proxy_follows_cluster_update(remora, cp, echo_server, make_upstream, ports):
    """A tcp_proxy listener sees a changed cluster (it holds cluster objects,
    so it is recompiled when the new version warms)."""
    up = make_upstream("u")
    admin, lport = ports.get(), ports.get()
    static = {"name": "backend", "type": "STATIC", "connect_timeout": {"seconds": 1},
              "load_assignment": cla("backend", [up.port])}
    cp.set("cds", "1", [static])
    cp.set("lds", "1", [{
        "name": "tcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": lport}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                                      "tcp_proxy.v3.TcpProxy",
                             "stat_prefix": "tcp", "cluster": "backend"}}]}]}])
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "u"
    static2 = dict(static, load_assignment=cla("backend", [echo_server.port]))
    cp.set("cds", "2", [static2])

    def echoed():
        import socket
        with socket.create_connection(("127.0.0.1", lport), timeout=3) as s:
            s.sendall(b"ping\n")
            s.settimeout(3)
            return s.recv(16) == b"ping\n"
    wait_until(echoed, 10, what="tcp_proxy uses the new cluster version")
    r.stop()


def test_resent_bad_version_is_not_a_busy_loop(remora, cp, make_upstream, ports):
    """A control plane that answers every NACK by resending the same bad
    version (go-control-plane does) gets delayed repeat NACKs (100 ms doubling
    to 10 s), not a request per round trip; a good version then applies."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    bad = eds_cluster("backend")
    bad["lb_policy"] = "CLUSTER_PROVIDED"
    cp.set("cds", "2", [bad], resend_on_nack=True)
    time.sleep(3.0)
    nacks = [q for q in cp.requests() if q["type_url"] == CDS and q["error_detail"]]
    # undelayed, a loopback round trip would allow thousands in 3 s; with the
    # backoff it is 1 + ~5 (0.1+0.2+0.4+0.8+1.6 s)
    assert 2 <= len(nacks) <= 12, len(nacks)
    assert all(q["version_info"] == "1" for q in nacks)
    assert r.stderr_text().count("rejecting Cluster version '2'") == 1, "logged once per version"
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    cp.set("cds", "3", [eds_cluster("backend")])
    wait_until(lambda: last_request(cp, CDS, lambda q: q["version_info"] == "3"), 10,
               what="next good version ACKed")
    r.stop()


def test_updates_under_traffic_lose_nothing(remora, cp, make_upstream, ports):
    """New connections and requests keep succeeding while routes (RDS) and
    the listener itself (LDS, same name and address) change: a new listener
    version takes over the old one's sockets, so nothing in the accept queue
    is reset; requests see the new routes."""
    import http.client
    import threading
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cp.set("cds", "1", [eds_cluster("ca"), eds_cluster("cb")])
    cp.set("eds", "1", [cla("ca", [a.port]), cla("cb", [b.port])])
    cp.set("rds", "0", [routes("r1", [("/", "ca")])])
    cp.set("lds", "0", [rds_listener("ingress", lport, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    stop = threading.Event()
    results = {"ok": 0, "fail": [], "seen": set()}

    def load():
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", lport, timeout=5)
                c.request("GET", "/x")
                resp = c.getresponse()
                body = resp.read()
                c.close()
                if resp.status == 200:
                    results["ok"] += 1
                    results["seen"].add(json.loads(body)["server"])
                else:
                    results["fail"].append(resp.status)
            except OSError as e:
                results["fail"].append(repr(e))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        for v in range(1, 9):
            cp.set("rds", str(v), [routes("r1", [("/", "cb" if v % 2 else "ca")])])
            time.sleep(0.15)
            lis = rds_listener("ingress", lport, "r1")
            lis["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] = {
                "idle_timeout": {"seconds": 100 + v}}
            cp.set("lds", str(v), [lis])
            time.sleep(0.15)
    finally:
        stop.set()
        t.join(timeout=10)
    assert results["fail"] == [], results["fail"][:5]
    assert results["ok"] >= 20, results["ok"]
    assert results["seen"] == {"a", "b"}
    assert last_request(cp, LDS, lambda q: q["version_info"] == "8")
    r.stop()


def weighted_routes(name, wa, wb, ca="ca", cb="cb"):
    return {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
            {"name": ca, "weight": {"value": wa}},
            {"name": cb, "weight": {"value": wb}}]}}}]}]}


def test_route_changes_reach_existing_connections(remora, cp, make_upstream, ports):
    """Issue 6 §6: an RDS update applies to the very next request on a
    keep-alive HTTP/1.1 connection and on an HTTP/2 connection opened before
    it (not only on new connections): a route change, a weighted shift
    100/0 -> 0/100, and a route to a cluster added in the same update.  One
    worker, so once a new connection sees the change the held connections'
    worker has it too."""
    from h2client import H2Client
    a, b, c = make_upstream("a"), make_upstream("b"), make_upstream("c")
    admin, lport = ports.get(), ports.get()
    cp.set("cds", "1", [eds_cluster("ca"), eds_cluster("cb")])
    cp.set("eds", "1", [cla("ca", [a.port]), cla("cb", [b.port])])
    cp.set("rds", "1", [routes("r1", [("/", "ca")])])
    cp.set("lds", "1", [rds_listener("ingress", lport, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port), concurrency=1)
    h1 = harness.HttpConn(lport)
    h2c = H2Client(lport)

    def via_h1():
        h1.request("GET", "/h1")
        resp = h1.read_response()
        assert resp.status == 200, resp
        return resp.json()["server"]

    def via_h2():
        sid = h2c.request("/h2")
        hdrs, body, _, reset = h2c.response(sid)
        assert reset is None and hdrs.get(":status") == "200", (hdrs, body)
        return json.loads(body)["server"]

    def fresh():
        res = curl(f"http://127.0.0.1:{lport}/fresh")
        return res.json()["server"] if res.status == 200 else None

    def push(version, rc, expect):
        cp.set("rds", version, [rc])
        wait_until(lambda: fresh() == expect, 10, what=f"RDS {version} on a new connection")

    try:
        assert via_h1() == "a" and via_h2() == "a"
        push("2", routes("r1", [("/", "cb")]), "b")                # route change
        assert via_h1() == "b" and via_h2() == "b"
        push("3", weighted_routes("r1", 100, 0), "a")              # weighted 100/0
        assert [via_h1() for _ in range(5)] == ["a"] * 5
        assert [via_h2() for _ in range(5)] == ["a"] * 5
        push("4", weighted_routes("r1", 0, 100), "b")              # shift to 0/100
        assert [via_h1() for _ in range(5)] == ["b"] * 5
        assert [via_h2() for _ in range(5)] == ["b"] * 5
        # a cluster that arrives with the route change: the held connections
        # look clusters up in the configuration of the request, not of the
        # connection (they would answer 503 no cluster otherwise)
        cp.set("cds", "2", [eds_cluster("ca"), eds_cluster("cb"), eds_cluster("cc")])
        cp.set("eds", "2", [cla("ca", [a.port]), cla("cb", [b.port]), cla("cc", [c.port])])
        wait_until(lambda: last_request(cp, EDS, lambda q: q["version_info"] == "2"), 10,
                   what="EDS 2 ACKed")
        push("5", routes("r1", [("/", "cc")]), "c")
        assert via_h1() == "c" and via_h2() == "c"
        assert not h2c.closed and not h1.eof, "the same connections served every request"
    finally:
        h1.close()
        h2c.close()
    assert not [q for q in cp.requests() if q["error_detail"]]
    # stopping checks ASan's leak report: every route table (and snapshot)
    # the streams held was released with the last stream using it
    r.stop()


def test_old_route_table_freed_with_last_stream(remora, cp, make_upstream, ports):
    """A stream keeps the route table it matched against (and the
    configuration it lives in) until it ends, then that table is freed; the
    table a connection was opened with goes when the connection closes.
    server.route_tables_active counts compiled tables (refreshed each second)."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cp.set("cds", "1", [eds_cluster("ca"), eds_cluster("cb")])
    cp.set("eds", "1", [cla("ca", [a.port]), cla("cb", [b.port])])
    cp.set("rds", "1", [routes("r1", [("/", "ca")])])
    cp.set("lds", "1", [rds_listener("ingress", lport, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port), concurrency=1)

    def fresh():
        res = curl(f"http://127.0.0.1:{lport}/fresh")
        return res.json()["server"] if res.status == 200 else None

    def tables():
        return r.stats("route_tables_active").get("server.route_tables_active")

    def settled():
        # the gauge is refreshed once a second: two equal reads 1.2 s apart
        while True:
            v = tables()
            time.sleep(1.2)
            if tables() == v:
                return v

    with harness.HttpConn(lport) as h1:                 # opened on table 1
        h1.request("GET", "/first")
        assert h1.read_response().json()["server"] == "a"
        cp.set("rds", "2", [routes("r1", [("/", "cb")])])
        wait_until(lambda: fresh() == "b", 10, what="RDS 2 applied")
        nb = b.request_count()
        h1.request("GET", "/slow?sleep_ms=5000")        # matched against table 2
        wait_until(lambda: b.request_count() > nb, 5, what="slow request upstream")
        cp.set("rds", "3", [routes("r1", [("/", "ca")])])
        wait_until(lambda: fresh() == "a", 10, what="RDS 3 applied")
        held = settled()                                # tables 1, 2 (the stream's), 3
        assert held >= 3, held
        resp = h1.read_response()
        assert resp.status == 200 and resp.json()["server"] == "b", resp
        wait_until(lambda: tables() == held - 1, 5, what="table 2 freed with its last stream")
        h1.request("GET", "/again")                     # the connection is still open
        assert h1.read_response().json()["server"] == "a"
    wait_until(lambda: tables() == held - 2, 5, what="table 1 freed with its connection")
    r.stop()


def test_weighted_shift_under_long_lived_load(remora, cp, make_upstream, ports):
    """wrk (HTTP/1.1 keep-alive) and h2load (HTTP/2) run on long-lived
    connections while a weighted route shifts 100/0 -> 0/100: no request
    fails, and in a window after the shift the upstreams see the new split on
    those same connections (all to b; a gets at most stragglers)."""
    import threading
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cp.set("cds", "1", [eds_cluster("ca"), eds_cluster("cb")])
    cp.set("eds", "1", [cla("ca", [a.port]), cla("cb", [b.port])])
    cp.set("rds", "1", [weighted_routes("r1", 100, 0)])
    cp.set("lds", "1", [rds_listener("ingress", lport, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
    out = {}

    def run(key, argv):
        p = subprocess.run(argv, capture_output=True, timeout=120)
        out[key] = (p.returncode, p.stdout.decode() + p.stderr.decode())

    dur = 8
    threads = [
        threading.Thread(target=run, args=("wrk", ["wrk", "-t", "1", "-c", "4", "-d", f"{dur}s",
                                                   f"http://127.0.0.1:{lport}/wrk"])),
        threading.Thread(target=run, args=("h2load", ["h2load", "-D", str(dur), "-c", "2",
                                                      "-m", "4",
                                                      f"http://127.0.0.1:{lport}/h2load"])),
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        # both tools are connected and sending (bounded)
        base = a.request_count()
        wait_until(lambda: a.request_count() - base >= 50, 5, what="load reaching a")
        cp.set("rds", "2", [weighted_routes("r1", 0, 100)])
        wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] == "b", 10,
                   what="the shift on a new connection")
        time.sleep(0.5)   # requests routed before the swap reach the upstream
        a0, b0 = a.request_count(), b.request_count()
        time.sleep(1.0)
        a1, b1 = a.request_count(), b.request_count()
        assert time.monotonic() - t0 < dur - 0.5, "the window must fall inside the load"
    finally:
        for t in threads:
            t.join(timeout=130)
    # the load ran on its long-lived connections only: the measurement window
    # saw the new split there
    assert b1 - b0 >= 50, (a0, a1, b0, b1)
    assert a1 - a0 <= max(2, (b1 - b0) // 100), (a0, a1, b0, b1)
    rc, text = out.get("wrk", (None, ""))
    assert rc == 0, text
    assert "Socket errors" not in text and "Non-2xx" not in text, text
    m = re.search(r"(\d+) requests in", text)
    assert m and int(m.group(1)) >= 100, text
    rc, text = out.get("h2load", (None, ""))
    assert rc == 0, text
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, 0 failed, "
                  r"0 errored, 0 timeout", text)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 100, text
    assert re.search(rf"status codes: {m.group(1)} 2xx, 0 3xx, 0 4xx, 0 5xx", text), text
    assert not [q for q in cp.requests() if q["error_detail"]]
    r.stop()
