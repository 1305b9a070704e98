"""xDS transports beside ADS: per-type gRPC streams (api_config_source GRPC /
DELTA_GRPC: ClusterDiscoveryService/StreamClusters, ...), per-resource config
sources (eds_config, rds.config_source, sds_config) of their own, REST mixed
with ADS, and REST to a TLS (and mTLS) cluster.  Driven by the Node test
control plane (tests/xds/control_plane.js), which serves ADS, every per-type
service and REST (plain and HTTPS) from one scripted state and logs which RPC
each request came on."""

import copy
import json
import subprocess

import pytest

import harness
import tls_pki
from harness import curl, wait_until
from test_xds import (CDS, EDS, LDS, RDS, ControlPlane, cla, cp, eds_cluster,  # noqa: F401
                      last_request, pytestmark, rds_listener, ready, routes)
from test_xds import restart_control_plane

SERVICE_TYPE = {"Clusters": CDS, "Endpoints": EDS, "Listeners": LDS, "Routes": RDS}


def grpc_src(api_type="GRPC", cluster="xds_cluster"):
    return {"api_config_source": {"api_type": api_type, "transport_api_version": "V3",
                                  "grpc_services": [{"envoy_grpc": {"cluster_name": cluster}}]},
            "resource_api_version": "V3"}


def rest_src(cluster="xds_rest"):
    # proto-loader form (resources go through the control plane): Durations as objects
    return {"api_config_source": {"api_type": "REST", "transport_api_version": "V3",
                                  "cluster_names": [cluster],
                                  "refresh_delay": {"nanos": 200000000},
                                  "request_timeout": {"seconds": 1}},
            "resource_api_version": "V3"}


def static_cluster(name, port, transport_socket=None):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": harness.load_assignment(name, [("127.0.0.1", port)])}
    if transport_socket:
        c["transport_socket"] = transport_socket
    return c


def bootstrap(admin, clusters, cds, lds, ads_api_type=None):
    b = harness.bootstrap(admin, [], clusters, node_id="sidecar-1")
    b["dynamic_resources"] = {"cds_config": cds, "lds_config": lds}
    if ads_api_type:
        b["dynamic_resources"]["ads_config"] = {
            "api_type": ads_api_type, "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}
    return b


def cluster_from(name, src):
    c = eds_cluster(name)
    c["eds_cluster_config"]["eds_config"] = copy.deepcopy(src)
    return c


def listener_from(name, port, route, src):
    lst = rds_listener(name, port, route)
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["rds"]["config_source"] = copy.deepcopy(src)
    return lst


def push_per_type(cp, src, versions, ports, lport):
    """Cluster "backend" (EDS), RouteConfiguration "r1" and listener "ingress"
    on lport, each naming src as its source; versions: (CDS, EDS, RDS, LDS)."""
    vc, ve, vr, vl = versions
    cp.set("cds", vc, [cluster_from("backend", src)])
    cp.set("eds", ve, [cla("backend", ports)])
    cp.set("rds", vr, [routes("r1", [("/", "backend")])])
    cp.set("lds", vl, [listener_from("ingress", lport, "r1", src)])


def _start_per_type(remora, cp, make_upstream, ports):
    """Upstreams a and b; cp serves backend -> a over per-type GRPC streams
    (no ADS); a Remora on them.  Returns (a, b, lport, src, remora)."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    src = grpc_src("GRPC")
    push_per_type(cp, src, ("c1", "e1", "r1", "l1"), [a.port], lport)
    r = remora(bootstrap(admin, [static_cluster("xds_cluster", cp.grpc_port)], src, src))
    return a, b, lport, src, r


def service_of(q):
    return "REST" if q.get("rest") else q["service"]


def test_per_type_streams(remora, cp, make_upstream, ports):
    """No ADS at all: CDS and LDS each on a per-type SotW stream, and the EDS
    and RDS names their resources reference on StreamEndpoints / StreamRoutes
    (the sources the cluster and the listener name).  Every request goes on
    the stream of its type, with that stream's own nonces and versions."""
    a, b, lport, src, r = _start_per_type(remora, cp, make_upstream, ports)
    assert curl(f"http://127.0.0.1:{lport}/x").json()["server"] == "a"
    assert cp.streams()["by_service"] == {"StreamClusters": 1, "StreamEndpoints": 1,
                                          "StreamListeners": 1, "StreamRoutes": 1}
    reqs = cp.requests()
    for q in reqs:
        assert q["type_url"] == SERVICE_TYPE[q["service"][len("Stream"):]], q
    # each stream's first request carries the node (not only the first stream's)
    firsts = {}
    for q in reqs:
        firsts.setdefault(q["stream"], q)
    assert len(firsts) == 4 and all(q["has_node"] for q in firsts.values())
    q = last_request(cp, EDS, lambda q: q["version_info"] == "e1")
    assert q and q["resource_names"] == ["backend"] and q["service"] == "StreamEndpoints"
    # an update on one stream applies and is ACKed on that stream
    cp.set("eds", "e2", [cla("backend", [b.port])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/x").json()["server"] == "b", 10,
               what="EDS update over StreamEndpoints")
    q = wait_until(lambda: last_request(cp, EDS, lambda q: q["version_info"] == "e2"), 5)
    assert q["service"] == "StreamEndpoints" and q["error_detail"] is None
    assert r.stat("control_plane.connected_state") == 1
    assert r.stat("cluster_manager.cds.update_success") >= 1
    r.stop()


def test_per_type_delta_streams(remora, cp, make_upstream, ports):
    """DELTA_GRPC sources: DeltaClusters / DeltaListeners wildcard, EDS and RDS
    by name on DeltaEndpoints / DeltaRoutes; a removed endpoint assignment and
    a new one arrive as deltas on their stream."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    src = grpc_src("DELTA_GRPC")
    cp.set("cds", "1", [cluster_from("backend", src), cluster_from("other", src)])
    cp.set("eds", "1", [cla("backend", [a.port]), cla("other", [b.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "1", [listener_from("ingress", lport, "r1", src)])
    r = remora(bootstrap(admin, [static_cluster("xds_cluster", cp.grpc_port)], src, src))
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
    assert cp.streams()["by_service"] == {"DeltaClusters": 1, "DeltaEndpoints": 1,
                                          "DeltaListeners": 1, "DeltaRoutes": 1}
    subs = {}
    for q in cp.requests():
        assert q["delta"] and q["type_url"] == SERVICE_TYPE[q["service"][len("Delta"):]], q
        subs.setdefault(q["service"], set()).update(q["subscribe"])
    assert subs["DeltaEndpoints"] == {"backend", "other"}
    assert subs["DeltaRoutes"] == {"r1"}
    assert subs["DeltaClusters"] == set() and subs["DeltaListeners"] == set()   # wildcard
    cp.set("rds", "2", [routes("r1", [("/", "other")])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] == "b", 10,
               what="route change over DeltaRoutes")
    # the cluster goes: its name is unsubscribed on DeltaEndpoints
    cp.set("cds", "2", [cluster_from("other", src)])
    wait_until(lambda: any("backend" in q.get("unsubscribe", []) for q in cp.requests()
                           if q["service"] == "DeltaEndpoints"), 10, what="EDS unsubscribe")
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "b"
    r.stop()


def test_ads_mixed_with_rest(remora, cp, make_upstream, ports):
    """CDS and EDS over ADS, LDS and RDS polled over REST, in one bootstrap:
    each type is fetched by the transport its config source names, and an
    update on either side applies."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    ads = {"ads": {}, "resource_api_version": "V3"}
    rest = rest_src()
    cp.set("cds", "c1", [cluster_from("backend", ads), cluster_from("other", ads)])
    cp.set("eds", "e1", [cla("backend", [a.port]), cla("other", [b.port])])
    cp.set("rds", "r1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "l1", [listener_from("ingress", lport, "r1", rest)])
    clusters = [static_cluster("xds_cluster", cp.grpc_port),
                static_cluster("xds_rest", cp.rest_port)]
    boot_rest = copy.deepcopy(rest)
    r = remora(bootstrap(admin, clusters, ads, boot_rest, ads_api_type="GRPC"))
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
    by_type = {}
    for q in cp.requests():
        by_type.setdefault(q["type_url"], set()).add(service_of(q))
    assert by_type[CDS] == {"StreamAggregatedResources"}
    assert by_type[EDS] == {"StreamAggregatedResources"}
    assert by_type[LDS] == {"REST"} and by_type[RDS] == {"REST"}
    q = last_request(cp, RDS, lambda q: q.get("rest"))
    assert q["resource_names"] == ["r1"]
    # a route change over REST, then an endpoint change over ADS
    cp.set("rds", "r2", [routes("r1", [("/", "other")])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] == "b", 10,
               what="RDS update polled over REST")
    cp.set("eds", "e2", [cla("backend", [a.port]), cla("other", [a.port])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a", 10,
               what="EDS update over ADS")
    assert r.stat("control_plane.connected_state") == 1
    r.stop()


@pytest.fixture
def pki(tmp_path):
    return tls_pki.make_pki(tmp_path / "pki")


def upstream_tls(pki, client_cert=True, ca="ca"):
    common = {"validation_context": {"trusted_ca": {"filename": pki[ca]}}}
    if client_cert:
        common["tls_certificates"] = [{"certificate_chain": {"filename": pki["client"]},
                                       "private_key": {"filename": pki["client_key"]}}]
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "localhost", "common_tls_context": common}}


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_rest_over_tls(remora, make_upstream, ports, pki, mtls):
    """REST polling to a cluster whose transport_socket is TLS: the server
    certificate is verified against the cluster's trusted CA (SNI localhost);
    with mTLS the control plane requires and sees Remora's client certificate."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    tls = (pki["server"], pki["server_key"]) + ((pki["ca"],) if mtls else ())
    c = ControlPlane(rest_tls=tls)
    try:
        rest = rest_src()
        c.set("cds", "1", [cluster_from("backend", rest)])
        c.set("eds", "1", [cla("backend", [a.port])])
        c.set("rds", "1", [routes("r1", [("/", "backend")])])
        c.set("lds", "1", [listener_from("ingress", lport, "r1", rest)])
        xds = static_cluster("xds_rest", c.rest_tls_port, upstream_tls(pki, client_cert=mtls))
        r = remora(bootstrap(admin, [xds], rest, copy.deepcopy(rest)))
        assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
        reqs = [q for q in c.requests() if q.get("rest")]
        assert {q["type"] for q in reqs} == {"cds", "eds", "lds", "rds"}
        assert all(q["tls"] for q in reqs)
        if mtls:
            assert {q["client_cn"] for q in reqs} == {"client"}
        assert r.stat("cluster.xds_rest.ssl.handshake") >= 4
        r.stop()
    finally:
        c.stop()


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_grpc_streams_over_tls(remora, make_upstream, ports, pki, mtls):
    """ADS and a per-type stream to an xDS cluster whose transport_socket is
    TLS (ALPN h2): the control plane's gRPC port accepts only TLS (and, for
    mTLS, only clients with a certificate of its CA)."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    c = ControlPlane(grpc_tls=(pki["server"], pki["server_key"]) + ((pki["ca"],) if mtls else ()))
    try:
        ads = {"ads": {}, "resource_api_version": "V3"}
        own = grpc_src("DELTA_GRPC")
        c.set("cds", "1", [cluster_from("backend", own)])
        c.set("eds", "1", [cla("backend", [a.port])])
        c.set("rds", "1", [routes("r1", [("/", "backend")])])
        c.set("lds", "1", [listener_from("ingress", lport, "r1", ads)])
        ts = upstream_tls(pki, client_cert=mtls)
        ts["typed_config"]["common_tls_context"]["alpn_protocols"] = ["h2"]
        xds = static_cluster("xds_cluster", c.grpc_port, ts)
        r = remora(bootstrap(admin, [xds], ads, ads, ads_api_type="GRPC"))
        assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
        assert c.streams()["by_service"] == {"StreamAggregatedResources": 1, "DeltaEndpoints": 1}
        assert r.stat("cluster.xds_cluster.ssl.handshake") >= 2
        r.stop()
    finally:
        c.stop()


def test_grpc_plaintext_to_tls_server_fails(remora, ports, pki):
    """A cleartext xDS cluster against a TLS-only control plane: the stream
    never opens (update_failure counts, connected_state stays 0)."""
    c = ControlPlane(grpc_tls=(pki["server"], pki["server_key"]))
    try:
        ads = {"ads": {}, "resource_api_version": "V3"}
        r = remora(bootstrap(ports.get(), [static_cluster("xds_cluster", c.grpc_port)], ads, ads,
                             ads_api_type="GRPC"), wait_ready=False)
        r.wait_stat("cluster_manager.cds.update_failure", lambda v: v >= 2, timeout=15)
        assert r.stat("control_plane.connected_state") == 0
        assert not c.requests()
        r.stop()
    finally:
        c.stop()


def test_rest_tls_untrusted_server_fails(remora, ports, pki):
    """The REST server's certificate is not signed by the cluster's trusted
    CA: the handshake fails (cluster.<name>.ssl.fail_verify_error), every poll
    counts update_failure, nothing is applied."""
    c = ControlPlane(rest_tls=(pki["server"], pki["server_key"]))
    try:
        c.set("cds", "1", [])
        rest = rest_src()
        xds = static_cluster("xds_rest", c.rest_tls_port,
                             upstream_tls(pki, client_cert=False, ca="foreign_ca"))
        r = remora(bootstrap(ports.get(), [xds], rest, copy.deepcopy(rest)), wait_ready=False)
        r.wait_stat("cluster_manager.cds.update_failure", lambda v: v >= 2, timeout=15)
        assert r.stat("cluster.xds_rest.ssl.fail_verify_error") >= 1
        assert r.stat("cluster_manager.cds.update_success") == 0
        assert not [q for q in c.requests() if q.get("rest")], "no request got through"
        r.stop()
    finally:
        c.stop()


def test_rest_mtls_without_client_certificate_fails(remora, ports, pki):
    """The REST server requires a client certificate the cluster does not
    have: every poll fails (update_failure), nothing is applied, and /ready
    waits for the initial fetch timeout."""
    admin = ports.get()
    c = ControlPlane(rest_tls=(pki["server"], pki["server_key"], pki["ca"]))
    try:
        c.set("cds", "1", [])
        rest = rest_src()
        xds = static_cluster("xds_rest", c.rest_tls_port, upstream_tls(pki, client_cert=False))
        r = remora(bootstrap(admin, [xds], rest, copy.deepcopy(rest)), wait_ready=False)
        r.wait_stat("cluster_manager.cds.update_failure", lambda v: v >= 2, timeout=15)
        assert r.stat("cluster_manager.cds.update_success") == 0
        assert not ready(r)
        assert not [q for q in c.requests() if q.get("rest")], "no request got through"
        r.stop()
    finally:
        c.stop()


def test_nack_on_per_type_stream_names_the_field(remora, cp, make_upstream, ports):
    """A bad cluster pushed on StreamClusters is NACKed on that stream with the
    field path; the good resources of the same response apply; the listener
    stream sees no NACK."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    src = grpc_src("GRPC")
    cp.set("cds", "1", [cluster_from("backend", src)])
    cp.set("eds", "1", [cla("backend", [a.port]), cla("fresh", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend"), ("/fresh", "fresh")])])
    cp.set("lds", "1", [listener_from("ingress", lport, "r1", src)])
    r = remora(bootstrap(admin, [static_cluster("xds_cluster", cp.grpc_port)], src, src))
    bad = cluster_from("bad", src)
    bad["lb_policy"] = "CLUSTER_PROVIDED"
    cp.set("cds", "2", [cluster_from("backend", src), cluster_from("fresh", src), bad])
    q = wait_until(lambda: last_request(cp, CDS, lambda q: q["error_detail"]), 10, what="CDS NACK")
    assert q["service"] == "StreamClusters" and q["version_info"] == "1"
    msg = q["error_detail"]["message"]
    assert "Cluster 'bad'" in msg and "lb_policy" in msg, msg
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/fresh").status == 200, 10,
               what="the valid cluster of the NACKed response applied")
    assert not [q for q in cp.requests() if q["type_url"] != CDS and q["error_detail"]]
    assert r.stat("cluster_manager.cds.update_rejected") >= 1
    r.stop()


def test_control_plane_restart_each_stream_reconnects(remora, cp, make_upstream, ports):
    """The control plane dies: the last configuration keeps serving; each
    per-type stream reconnects on its own backoff and resubscribes with its
    own accepted version; the next push applies."""
    a, b, lport, src, r = _start_per_type(remora, cp, make_upstream, ports)
    assert curl(f"http://127.0.0.1:{lport}/").json()["server"] == "a"
    cp2 = restart_control_plane(r, cp, lport)
    try:
        push_per_type(cp2, src, ("c2", "e2", "r2", "l2"), [b.port], lport)
        wait_until(lambda: r.stat("control_plane.connected_state") == 1, 40, what="reconnected")
        wait_until(lambda: len(cp2.streams()["by_service"]) == 4, 40, what="four streams")
        first = {}
        for q in cp2.requests():
            first.setdefault(q["service"], q)
        assert {s: q["version_info"] for s, q in first.items()} == {
            "StreamClusters": "c1", "StreamEndpoints": "e1", "StreamListeners": "l1",
            "StreamRoutes": "r1"}
        assert all(q["has_node"] for q in first.values())
        wait_until(lambda: curl(f"http://127.0.0.1:{lport}/").json()["server"] == "b", 15,
                   what="next push applied")
        assert r.stat("control_plane.stream_reconnects") >= 4
    finally:
        cp2.stop()
    r.stop()


def test_source_validation(tmp_path, ports):
    """Config sources are checked with their path: an AGGREGATED_* source to
    another cluster than ADS's, an unknown server cluster, ads: {} without
    ads_config."""
    cases = [
        (grpc_src("AGGREGATED_GRPC", "other"), "GRPC",
         "dynamic_resources.cds_config.api_config_source: cluster 'other': an AGGREGATED_*"),
        (grpc_src("GRPC", "nowhere"), None,
         "dynamic_resources.cds_config.api_config_source: unknown cluster 'nowhere'"),
        ({"ads": {}}, None, "dynamic_resources.cds_config.ads: ads: {} needs"),
    ]
    for src, ads, want in cases:
        b = bootstrap(ports.get(), [static_cluster("xds_cluster", 1),
                                    static_cluster("other", 1)], src, grpc_src(), ads)
        out = _check(tmp_path, b)
        assert want in out, out


def _check(tmp_path, b):
    path = tmp_path / "b.yaml"
    path.write_text(json.dumps(b))
    p = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p
    return p.stdout + p.stderr
