"""/config_dump with Envoy's query parameters: resource (each element of one
repeated field, wrapped with its type), mask (a FieldMask), name_regex (full
match on resource names) and include_eds (the EndpointsConfigDump only when
asked); private keys redacted everywhere."""

import json

import tls_pki
from harness import bootstrap, http_listener, route, static_cluster, wait_until
from test_xds import (cla, cp, eds_cluster, pytestmark, rds_listener, ready,  # noqa: F401
                      routes, xds_bootstrap)

ADMIN = "type.googleapis.com/envoy.admin.v3."


def get(r, query=""):
    st, h, body = r.admin_get("/config_dump" + query)
    return st, h, body


def dump(r, query=""):
    st, h, body = get(r, query)
    assert st == 200, (query, st, body[:300])
    assert h.get("content-type", "").startswith("application/json")
    return json.loads(body)["configs"]


def kinds(configs):
    return [c["@type"].rsplit(".", 1)[-1] for c in configs]


def static_setup(remora, upstream, ports, tmp_path):
    pki = tls_pki.make_pki(tmp_path / "pki")
    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                    [static_cluster("backend", upstream.port), static_cluster("other", 1)])
    with open(pki["server"]) as f:
        cert = f.read()
    with open(pki["server_key"]) as f:
        key = f.read()
    cfg["static_resources"]["secrets"] = [{"name": "srv", "tls_certificate": {
        "certificate_chain": {"inline_string": cert}, "private_key": {"inline_string": key}}}]
    return remora(cfg), upstream, key


def test_static_dump_layout_and_include_eds(remora, upstream, ports, tmp_path):
    r, up, key = static_setup(remora, upstream, ports, tmp_path)
    c = dump(r)
    # Envoy's order; endpoints only with ?include_eds
    assert kinds(c) == ["BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump",
                        "RoutesConfigDump", "SecretsConfigDump"]
    text = json.dumps(c)
    assert key.strip().splitlines()[1] not in text, "a private key in the dump"
    assert "[redacted]" in text
    cl, lis, rt, sec = c[1], c[2], c[3], c[4]
    assert [x["cluster"]["name"] for x in cl["static_clusters"]] == ["backend", "other"]
    assert cl["static_clusters"][0]["cluster"]["@type"].endswith("cluster.v3.Cluster")
    assert lis["static_listeners"][0]["listener"]["name"] == "listener_0"
    assert lis["static_listeners"][0]["listener"]["@type"].endswith("listener.v3.Listener")
    (inline,) = rt["static_route_configs"]
    assert inline["route_config"]["name"] == "local_route"
    assert inline["route_config"]["@type"].endswith("route.v3.RouteConfiguration")
    (s,) = sec["static_secrets"]
    assert s["name"] == "srv" and s["secret"]["@type"].endswith("tls.v3.Secret")
    assert s["secret"]["tls_certificate"]["private_key"] == {"inline_string": "[redacted]"}

    c = dump(r, "?include_eds")
    assert kinds(c)[2] == "EndpointsConfigDump"
    eps = {e["endpoint_config"]["cluster_name"]: e["endpoint_config"]
           for e in c[2]["static_endpoint_configs"]}
    assert set(eps) == {"backend", "other"}
    (lb,) = eps["backend"]["endpoints"][0]["lb_endpoints"]
    assert lb["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                           "port_value": up.port}
    assert lb["health_status"] == "HEALTHY" and lb["load_balancing_weight"] == 1
    assert c[2]["dynamic_endpoint_configs"] == []
    r.stop()


def test_resource_mask_name_regex_static(remora, upstream, ports, tmp_path):
    r, up, key = static_setup(remora, upstream, ports, tmp_path)
    c = dump(r, "?resource=static_clusters")
    assert [x["@type"] for x in c] == [ADMIN + "ClustersConfigDump.StaticCluster"] * 2
    assert [x["cluster"]["name"] for x in c] == ["backend", "other"]

    c = dump(r, "?resource=static_clusters&mask=cluster.name")
    assert c[0] == {"@type": ADMIN + "ClustersConfigDump.StaticCluster",
                    "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                                "name": "backend"}}, c[0]
    c = dump(r, "?resource=static_clusters&name_regex=oth.r")
    assert [x["cluster"]["name"] for x in c] == ["other"]
    assert dump(r, "?resource=static_clusters&name_regex=oth") == []   # a full match

    # the endpoints' elements exist only with include_eds
    st, h, body = get(r, "?resource=static_endpoint_configs")
    assert st == 404 and body.decode().strip() == "static_endpoint_configs not found in config dump"
    assert h["content-type"].startswith("text/plain")
    c = dump(r, "?resource=static_endpoint_configs&include_eds&name_regex=backend")
    assert [x["endpoint_config"]["cluster_name"] for x in c] == ["backend"]

    # mask alone: each dump it fits, trimmed
    c = dump(r, "?mask=static_listeners")
    assert kinds(c) == ["ListenersConfigDump"] and set(c[0]) == {"@type", "static_listeners"}
    c = dump(r, "?mask=bootstrap.node")
    assert kinds(c) == ["BootstrapConfigDump"] and list(c[0]["bootstrap"]) == ["node"]

    for q, code, text in (
            ("?resource=nope", 404, "nope not found in config dump"),
            ("?resource=bootstrap", 400, "bootstrap is not a repeated field. Use ?mask=bootstrap "
                                         "to get only this field"),
            ("?mask=no_such_field", 400, "FieldMask no_such_field could not be successfully "
                                         "applied to any configs."),
            ("?resource=static_clusters&mask=cluster.name,bogus", 400,
             "could not be successfully used"),
            ("?name_regex=(unclosed", 400, "Error while parsing name_regex from (unclosed")):
        st, _, body = get(r, q)
        assert st == code and text in body.decode(), (q, st, body)
    assert dump(r, "?name_regex=")   # empty: every name
    r.stop()


def test_dynamic_dump_parameters(remora, cp, make_upstream, ports):
    a = make_upstream("a")
    admin, lport, lport2 = ports.get(), ports.get(), ports.get()
    cp.set("cds", "c1", [eds_cluster("backend"), eds_cluster("other")])
    cp.set("eds", "e1", [cla("backend", [a.port]), cla("other", [a.port])])
    cp.set("rds", "r1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "l1", [rds_listener("ingress", lport, "r1"), rds_listener("egress", lport2, "r1")])
    r = remora(xds_bootstrap(admin, cp.grpc_port), wait_ready=False)
    wait_until(lambda: ready(r), 20, what="/ready")

    assert "EndpointsConfigDump" not in kinds(dump(r))
    c = dump(r, "?include_eds")
    (ed,) = [x for x in c if x["@type"].endswith("EndpointsConfigDump")]
    names = sorted(e["endpoint_config"]["cluster_name"] for e in ed["dynamic_endpoint_configs"])
    assert names == ["backend", "other"]
    assert all(e["version_info"] == "e1" for e in ed["dynamic_endpoint_configs"])
    # the static xds cluster's endpoints from its hosts
    assert [e["endpoint_config"]["cluster_name"] for e in ed["static_endpoint_configs"]] == \
        ["xds_cluster"]

    c = dump(r, "?resource=dynamic_active_clusters&mask=cluster.name,version_info")
    assert sorted(x["cluster"]["name"] for x in c) == ["backend", "other"]
    assert all(set(x) == {"@type", "cluster", "version_info"} and x["version_info"] == "c1"
               for x in c)
    assert all(x["@type"] == ADMIN + "ClustersConfigDump.DynamicCluster" for x in c)

    c = dump(r, "?resource=dynamic_listeners&name_regex=eg.*")
    assert [x["name"] for x in c] == ["egress"]
    assert c[0]["@type"] == ADMIN + "ListenersConfigDump.DynamicListener"
    assert c[0]["active_state"]["version_info"] == "l1"

    c = dump(r, "?resource=dynamic_route_configs&mask=route_config.name")
    assert c == [{"@type": ADMIN + "RoutesConfigDump.DynamicRouteConfig",
                  "route_config": {"@type": "type.googleapis.com/envoy.config.route.v3."
                                            "RouteConfiguration", "name": "r1"}}]
    c = dump(r, "?resource=dynamic_endpoint_configs&include_eds&name_regex=other"
                "&mask=endpoint_config.cluster_name")
    assert [x["endpoint_config"]["cluster_name"] for x in c] == ["other"]
    # the versions of the dumps
    c = dump(r, "?mask=version_info")
    assert [(k, x.get("version_info")) for k, x in zip(kinds(c), c)] == \
        [("ClustersConfigDump", "c1"), ("ListenersConfigDump", "l1")]
    r.stop()
