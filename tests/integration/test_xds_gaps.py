"""xDS client gaps closed in issue 6: initial_metadata on grpc_services (the
stream's request headers), failover to a second grpc_service (Envoy's xDS
failover policy), and /config_dump error_state for NACKed resources.  Driven
by the Node test control plane (tests/xds/control_plane.js), which logs every
stream's request headers (GET /stream_log) and can end its streams
(POST /close_streams)."""

import json
import subprocess
import threading

import harness
from harness import curl, wait_until
from test_xds import (CDS, ControlPlane, cla, cp, eds_cluster, last_request,  # noqa: F401
                      pytestmark, rds_listener, routes, xds_bootstrap)


def static_cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": harness.load_assignment(name, [("127.0.0.1", port)])}


def failover_bootstrap(admin, primary_port, failover_port, api_type="GRPC"):
    b = xds_bootstrap(admin, primary_port, api_type=api_type)
    b["static_resources"]["clusters"] = [static_cluster("xds_primary", primary_port),
                                         static_cluster("xds_failover", failover_port)]
    b["dynamic_resources"]["ads_config"]["grpc_services"] = [
        {"envoy_grpc": {"cluster_name": "xds_primary"},
         "initial_metadata": [{"key": "X-Mesh-Token", "value": "primary-secret"},
                              {"key": "x-zone", "value": "a"}]},
        {"envoy_grpc": {"cluster_name": "xds_failover"},
         "initial_metadata": [{"key": "x-mesh-token", "value": "failover-secret"}]}]
    return b


def push(c, lport, upstream_port, version):
    c.set("cds", version, [eds_cluster("backend")])
    c.set("eds", version, [cla("backend", [upstream_port])])
    c.set("rds", version, [routes("r1", [("/", "backend")])])
    c.set("lds", version, [rds_listener("ingress", lport, "r1")])


def call(c, method, path):
    return c._call(method, path, {} if method == "POST" else None)


def server_of(lport):
    return curl(f"http://127.0.0.1:{lport}/").json()["server"]


class Load:
    """Requests in a loop on a thread; every answer must be a 200."""

    def __init__(self, lport):
        self.lport, self.stop, self.ok, self.bad = lport, threading.Event(), 0, []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                st = curl(f"http://127.0.0.1:{self.lport}/").status
            except OSError as e:
                st = repr(e)
            if st == 200:
                self.ok += 1
            else:
                self.bad.append(st)
            self.stop.wait(0.05)

    def finish(self):
        self.stop.set()
        self.t.join(timeout=10)
        return self.ok, self.bad


def test_initial_metadata_and_failover(remora, make_upstream, ports):
    """The primary is down at start: after two attempts Remora takes its
    configuration from the failover server (with the failover's
    initial_metadata).  The primary comes up; Remora stays on the failover
    (Envoy does not switch back on its own) until that stream ends, then
    reconnects to the primary (its metadata, lowercased) and applies its
    configuration.  Requests keep succeeding throughout.  Once the primary
    has answered, losing it never sends Remora back to the failover."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport, pport = ports.get(), ports.get(), ports.get()
    second = ControlPlane()
    primary = None
    try:
        push(second, lport, a.port, "f1")
        r = remora(failover_bootstrap(admin, pport, second.grpc_port))
        assert server_of(lport) == "a"
        log = call(second, "GET", "/stream_log")
        assert log and log[0]["service"] == "StreamAggregatedResources"
        md = log[0]["metadata"]
        assert md.get("x-mesh-token") == "failover-secret", md
        assert "x-zone" not in md, "the primary's metadata is not sent to the failover"
        assert r.stat("control_plane.stream_reconnects") >= 2   # two primary attempts first

        load = Load(lport)
        primary = ControlPlane(pport)
        push(primary, lport, b.port, "p1")
        # the failover's stream ends: the primary is tried next (after the backoff)
        assert call(second, "POST", "/close_streams")["closed"] == 1
        wait_until(lambda: server_of(lport) == "b", 30, what="configuration from the primary")
        plog = call(primary, "GET", "/stream_log")
        assert plog[0]["metadata"].get("x-mesh-token") == "primary-secret", plog[0]
        assert plog[0]["metadata"].get("x-zone") == "a"
        # SotW: the version held (from the failover) goes along, as Envoy
        q = [q for q in primary.requests() if q["type_url"] == CDS][0]
        assert q["version_info"] == "f1", q
        ok, bad = load.finish()
        assert ok > 0 and not bad, bad

        # the primary has answered: losing it, Remora retries only the primary
        streams_before = call(second, "GET", "/streams")["total"]
        reconnects = r.stat("control_plane.stream_reconnects")
        primary.stop()
        primary = None
        wait_until(lambda: r.stat("control_plane.stream_reconnects") >= reconnects + 3, 30,
                   what="three reconnect attempts")
        assert call(second, "GET", "/streams")["total"] == streams_before
        assert server_of(lport) == "b", "the last configuration keeps serving"
        r.stop()
    finally:
        if primary:
            primary.stop()
        second.stop()


def test_failover_delta_versions_stay_with_their_server(remora, make_upstream, ports):
    """Delta ADS with a failover: a stream to the server that did not send
    the versions held carries no initial_resource_versions (Envoy)."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport, pport = ports.get(), ports.get(), ports.get()
    second = ControlPlane()
    primary = None
    try:
        push(second, lport, a.port, "f1")
        r = remora(failover_bootstrap(admin, pport, second.grpc_port,
                                      api_type="DELTA_GRPC"))
        assert server_of(lport) == "a"
        primary = ControlPlane(pport)
        push(primary, lport, b.port, "p1")
        call(second, "POST", "/close_streams")
        wait_until(lambda: server_of(lport) == "b", 30, what="configuration from the primary")
        firsts = {}
        for q in primary.requests():
            firsts.setdefault(q["type"], q)
        assert firsts["cds"]["initial_resource_versions"] == {}, firsts["cds"]
        assert firsts["lds"]["initial_resource_versions"] == {}, firsts["lds"]
        # the same server again: the versions it sent go along
        call(primary, "POST", "/close_streams")
        wait_until(lambda: len(call(primary, "GET", "/stream_log")) >= 2, 30,
                   what="reconnected to the primary")
        second_stream = call(primary, "GET", "/stream_log")[1]["stream"]
        q = wait_until(lambda: [q for q in primary.requests() if q["stream"] == second_stream
                                and q["type"] == "cds"], 10)[0]
        assert "backend" in q["initial_resource_versions"], q
        r.stop()
    finally:
        if primary:
            primary.stop()
        second.stop()


def validate(tmp_path, b):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(b))
    out = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=30)
    return out.returncode, out.stderr + out.stdout


def test_grpc_services_validation(tmp_path, ports):
    """At most two grpc_services; metadata keys are header names (no
    pseudo-headers, none the transport sets); the failover cluster must be
    a static cluster."""
    b = failover_bootstrap(ports.get(), 1, 2)
    assert validate(tmp_path, b)[0] == 0
    gs = b["dynamic_resources"]["ads_config"]["grpc_services"]
    gs.append({"envoy_grpc": {"cluster_name": "xds_primary"}})
    rc, out = validate(tmp_path, b)
    assert rc == 1 and "ads_config.grpc_services" in out and "one or two" in out, out
    for key, what in ((":authority", "pseudo-headers"), ("te", "set by the gRPC transport"),
                      ("bad key", "not a valid header name"), ("grpc-timeout", "reserved")):
        b = failover_bootstrap(ports.get(), 1, 2)
        b["dynamic_resources"]["ads_config"]["grpc_services"][1]["initial_metadata"] = [
            {"key": key, "value": "v"}]
        rc, out = validate(tmp_path, b)
        assert rc == 1, out
        assert "grpc_services[1].initial_metadata[0].key" in out and what in out, out
    b = failover_bootstrap(ports.get(), 1, 2)
    b["static_resources"]["clusters"].pop()
    rc, out = validate(tmp_path, b)
    assert rc == 1 and "grpc_services[1]" in out and "xds_failover" in out, out


def dump(r, include_eds=False):
    st, _, body = r.admin_get("/config_dump" + ("?include_eds" if include_eds else ""))
    assert st == 200
    return {c["@type"].rsplit(".", 1)[-1]: c for c in json.loads(body)["configs"]}


def test_config_dump_error_state(remora, cp, make_upstream, ports):
    """A NACKed cluster, listener and route table show error_state (details,
    last_update_attempt, the rejected version) on their dump entries while
    the previous version keeps serving; a later good push clears it."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    push(cp, lport, a.port, "1")
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    assert server_of(lport) == "a"
    d = dump(r)
    assert all("error_state" not in c for c in d["ClustersConfigDump"]["dynamic_active_clusters"])
    assert "client_status" not in json.dumps(d), "Envoy does not fill client_status"

    bad = eds_cluster("backend")
    bad["lb_policy"] = "CLUSTER_PROVIDED"
    cp.set("cds", "2", [bad])
    bad_rt = routes("r1", [("/", "backend")])
    bad_rt["virtual_hosts"][0]["routes"].insert(0, {
        "match": {"safe_regex": {"regex": "(unclosed"}}, "route": {"cluster": "backend"}})
    cp.set("rds", "2", [bad_rt])
    new_l = rds_listener("second", ports.get(), "r1")
    new_l["access_log"] = [{"name": "envoy.access_loggers.stdout"}]   # not in Remora's subset
    cp.set("lds", "2", [rds_listener("ingress", lport, "r1"), new_l])
    for t in (CDS, "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
              "type.googleapis.com/envoy.config.listener.v3.Listener"):
        wait_until(lambda: last_request(cp, t, lambda q: q["error_detail"]), 10, what="NACK")
    d = dump(r)
    cl = [c for c in d["ClustersConfigDump"]["dynamic_active_clusters"]
          if c.get("cluster", {}).get("name") == "backend"]
    assert len(cl) == 1 and cl[0]["version_info"] == "1", cl
    es = cl[0]["error_state"]
    assert "Cluster 'backend'" in es["details"] and "lb_policy" in es["details"], es
    assert es["version_info"] == "2" and es["last_update_attempt"].endswith("Z"), es
    rc = d["RoutesConfigDump"]["dynamic_route_configs"]
    assert len(rc) == 1 and rc[0]["version_info"] == "1"
    es = rc[0]["error_state"]
    assert "RouteConfiguration 'r1'" in es["details"] and "safe_regex" in es["details"], es
    assert es["failed_configuration"]["@type"].endswith("RouteConfiguration")
    assert es["failed_configuration"]["name"] == "r1"
    lis = {x["name"]: x for x in d["ListenersConfigDump"]["dynamic_listeners"]}
    assert "error_state" not in lis["ingress"]
    es = lis["second"]["error_state"]   # never accepted: an entry with its name
    assert "access_log" in es["details"] and es["version_info"] == "2", es
    assert "active_state" not in lis["second"]
    assert server_of(lport) == "a", "the old version keeps serving"
    # ?resource= and name_regex see the entries too
    st, _, body = r.admin_get("/config_dump?resource=dynamic_listeners&name_regex=second")
    assert st == 200 and "error_state" in body.decode()

    cp.set("cds", "3", [eds_cluster("backend")])
    cp.set("rds", "3", [routes("r1", [("/", "backend")])])
    cp.set("lds", "3", [rds_listener("ingress", lport, "r1")])
    for t in (CDS, "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
              "type.googleapis.com/envoy.config.listener.v3.Listener"):
        wait_until(lambda: last_request(cp, t, lambda q: q["version_info"] == "3"), 10,
                   what="ACK of version 3")
    d = dump(r)
    assert d["ListenersConfigDump"]["version_info"] == "3"
    text = json.dumps(d)
    assert "error_state" not in text, text
    assert server_of(lport) == "a"
    r.stop()


def test_delta_reconnect_versions_per_source(remora, cp, make_upstream, ports):
    """Two EDS sources (per-type DeltaEndpoints streams to two server
    clusters): after both streams reconnect, each one's
    initial_resource_versions name only the resources it subscribes, with
    the versions it got (the resource cache is per type; a stream sends the
    part of it that is its own)."""
    from test_xds_streams import bootstrap, cluster_from, grpc_src, listener_from
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    s1, s2 = grpc_src("DELTA_GRPC", "xds_one"), grpc_src("DELTA_GRPC", "xds_two")
    cp.set("cds", "1", [cluster_from("c1", s1), cluster_from("c2", s2)])
    cp.set("eds", "1", [cla("c1", [a.port]), cla("c2", [b.port])])
    cp.set("rds", "1", [routes("r1", [("/one", "c1"), ("/", "c2")])])
    cp.set("lds", "1", [listener_from("ingress", lport, "r1", s1)])
    r = remora(bootstrap(admin, [static_cluster("xds_one", cp.grpc_port),
                                 static_cluster("xds_two", cp.grpc_port)], s1, s1))
    assert curl(f"http://127.0.0.1:{lport}/one").json()["server"] == "a"
    assert server_of(lport) == "b"
    assert cp.streams()["by_service"]["DeltaEndpoints"] == 2
    first = {}
    for q in cp.requests():
        first.setdefault(q["stream"], q)
    versions = {q["subscribe"][0]: None for q in first.values() if q["service"] == "DeltaEndpoints"}
    assert set(versions) == {"c1", "c2"}
    opened = len(call(cp, "GET", "/stream_log"))
    assert call(cp, "POST", "/close_streams")["closed"] == 5
    wait_until(lambda: cp.streams()["open"] == 5 and
               len(call(cp, "GET", "/stream_log")) == opened + 5, 30, what="all reconnected")
    new = [s["stream"] for s in call(cp, "GET", "/stream_log")[opened:]
           if s["service"] == "DeltaEndpoints"]
    assert len(new) == 2
    for sid in new:
        q = wait_until(lambda: [q for q in cp.requests() if q["stream"] == sid], 10)[0]
        assert len(q["subscribe"]) == 1, q
        assert set(q["initial_resource_versions"]) == set(q["subscribe"]), q
    assert curl(f"http://127.0.0.1:{lport}/one").json()["server"] == "a"
    r.stop()
