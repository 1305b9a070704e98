"""remora-cp, the reference control plane (xds/cp): real Remoras bootstrapped
with ADS to it serve traffic configured from a directory of YAML resources;
edits are pushed live (zero failed requests under a client loop), a broken
file is reported with its position and the old config keeps serving; delta
ADS; per-node overrides; REST with curl; /metrics checked by promtool."""

import json
import os
import re
import subprocess
import threading
import urllib.request

import pytest

import harness
from harness import curl, wait_until
from cp_common import ads_bootstrap, cp_bin

PROMTOOL = "/usr/bin/promtool"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class RemoraCP:
    def __init__(self, workdir, config_dir, grpc_port=None, name="remora-cp", catalog=None):
        self.grpc_port = grpc_port or harness.free_port()
        self.ca_port = harness.free_port()
        self.admin_port = harness.free_port()
        self.log = open(os.path.join(workdir, name + ".log"), "w+")
        self.proc = harness.spawn(
            [cp_bin(), *(["--config-dir", config_dir] if config_dir else []),
             *(["--catalog", catalog] if catalog else []), "--address", "127.0.0.1",
             "--grpc-port", str(self.grpc_port), "--ca-port", str(self.ca_port),
             "--admin-port", str(self.admin_port), "--log-level", "debug"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.get("/ready")[0] == 200, 15, what="remora-cp /ready")

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def debug(self):
        return json.loads(self.get("/debug/config")[1])

    def metric(self, name):
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                if line.split(" ")[0] == name or name.endswith("}"):
                    return float(line.split(" ")[1])
        return None

    def logs(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        harness.stop_process(self.proc)
        self.log.close()
        # ASan reports (leaks, errors) land in the log: fail on them
        with open(self.log.name) as f:
            text = f.read()
        assert not re.search(r"ERROR: \w*Sanitizer|runtime error", text), text[-4000:]


@pytest.fixture
def make_cp(tmp_path):
    started = []

    def make(config_dir, **kw):
        c = RemoraCP(str(tmp_path), str(config_dir) if config_dir else None, **kw)
        started.append(c)
        return c
    yield make
    for c in started:
        if c.proc.poll() is None:
            c.stop()


def write(path, text):
    """Atomic replace (what editors and kubectl's ConfigMap updates do)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = str(path) + ".tmp~"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def clusters_yaml(ports):
    """EDS clusters ca/cb (and more) with their endpoints."""
    out = "clusters:\n"
    for name in ports:
        out += (f"- name: {name}\n  type: EDS\n  connect_timeout: 1s\n"
                f"  eds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}\n")
    out += "endpoints:\n"
    for name, port in ports.items():
        out += (f"- cluster_name: {name}\n  endpoints:\n  - lb_endpoints:\n"
                f"    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
                f"port_value: {port}}}}}}}\n")
    return out


def listener_yaml(port):
    return f"""listeners:
- name: ingress
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        '@type': {HCM}
        stat_prefix: ingress
        rds: {{route_config_name: r1, config_source: {{ads: {{}}, resource_api_version: V3}}}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{'@type': {ROUTER}}}
"""


def route_yaml(cluster=None, split=None, name="r1"):
    if split:
        action = "weighted_clusters: {clusters: [" + ", ".join(
            f"{{name: {c}, weight: {w}}}" for c, w in split) + "]}"
    else:
        action = f"cluster: {cluster}"
    return f"""routes:
- name: {name}
  virtual_hosts:
  - name: all
    domains: ['*']
    routes:
    - match: {{prefix: /}}
      route: {{{action}}}
"""


def bootstrap(admin, cp, node_id="sidecar-1", node_cluster="remora-tests", delta=False):
    return ads_bootstrap(admin, "127.0.0.1", cp.grpc_port, node_id=node_id,
                         node_cluster=node_cluster, delta=delta)


def server_of(port, path="/x"):
    r = curl(f"http://127.0.0.1:{port}{path}")
    return r.json()["server"] if r.status == 200 else r.status


class Loop:
    """A client loop on fresh connections; counts every non-200."""

    def __init__(self, port):
        import http.client
        self.port, self.ok, self.fail, self.seen = port, 0, [], []
        self.stop_ev = threading.Event()

        def run():
            while not self.stop_ev.is_set():
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    c.request("GET", "/x")
                    resp = c.getresponse()
                    body = resp.read()
                    c.close()
                    if resp.status == 200:
                        self.ok += 1
                        self.seen.append(json.loads(body)["server"])
                    else:
                        self.fail.append(resp.status)
                except OSError as e:
                    self.fail.append(repr(e))
        self.t = threading.Thread(target=run, daemon=True)
        self.t.start()

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=15)


def setup_dir(d, ups, lport, route):
    write(d / "clusters.yaml", clusters_yaml({n: u.port for n, u in ups.items()}))
    write(d / "listeners.yaml", listener_yaml(lport))
    write(d / "routes.yaml", route)


def run_live_edits(remora, make_cp, make_upstream, ports, tmp_path, delta):
    a, b = make_upstream("a"), make_upstream("b")
    d = tmp_path / "cp"
    admin, lport = ports.get(), ports.get()
    setup_dir(d, {"ca": a, "cb": b}, lport, route_yaml("ca"))
    cp = make_cp(d)
    r = remora(bootstrap(admin, cp, delta=delta))
    assert server_of(lport) == "a"
    loop = Loop(lport)
    try:
        wait_until(lambda: loop.ok >= 5, 15, what="traffic")
        # a weighted split, then everything to cb
        write(d / "routes.yaml", route_yaml(split=[("ca", 50), ("cb", 50)]))
        wait_until(lambda: {"a", "b"} <= set(loop.seen[-40:]), 20, what="split applied")
        # make-before-break: the route moves to cb and cluster ca goes in one
        # reload (both files within the 100 ms debounce); CDS must not drop ca
        # before the new routes are ACKed, or requests in between would 503
        write(d / "routes.yaml", route_yaml("cb"))
        write(d / "clusters.yaml", clusters_yaml({"cb": b.port}))
        wait_until(lambda: len(loop.seen) > 10 and set(loop.seen[-10:]) == {"b"}, 20,
                   what="all traffic to cb")
        wait_until(lambda: not re.search(r"^ca::", r.admin_request("GET", "/clusters")[2].decode(),
                                         re.M), 20, what="cluster ca removed from the proxy")
        # the cp's push log: the RDS push to cb precedes the CDS push without ca
        pushes = re.findall(r"push (\w+) to sidecar-1: \[([^\]]*)\]", cp.logs())
        i_cds = max(i for i, (t, n) in enumerate(pushes) if t == "cds" and n == "cb")
        assert not [p for p in pushes[i_cds + 1:] if p[0] == "rds"], pushes
        assert pushes.count(("cds", "cb")) == 1, pushes
        n = loop.ok
        wait_until(lambda: loop.ok >= n + 10, 15, what="traffic after removal")
    finally:
        loop.stop()
    assert loop.fail == [], loop.fail[:5]
    assert set(loop.seen[-10:]) == {"b"}
    dbg = cp.debug()
    assert dbg["last_error"] == ""
    node = [p for p in dbg["proxies"] if p["node_id"] == "sidecar-1"][0]
    assert node["mode"] == ("delta" if delta else "sotw")
    for key in ("clusters", "endpoints", "listeners", "routes"):
        t = node["types"][key]
        wait_until(lambda: not cp.debug()["proxies"][0]["types"][key]["pending"], 10,
                   what=f"{key} acked")
        assert t["last_nack"] == ""
    t = cp.debug()["proxies"][0]["types"]
    assert t["clusters"]["resources"] == ["cb"]
    assert t["clusters"]["acked_version"] == t["clusters"]["version"]
    return r, cp, d, lport


def test_live_edits_sotw_zero_failures(remora, make_cp, make_upstream, ports, tmp_path):
    """SotW ADS: Remora serves the YAML dir; a weighted split, a route move and
    a cluster removal are pushed while a client loop runs, with no failed
    request (CDS/EDS removals wait for the LDS/RDS ACK)."""
    r, cp, d, lport = run_live_edits(remora, make_cp, make_upstream, ports, tmp_path, delta=False)

    # a broken file: reported with file:line:col and field path; old config serves
    gen = cp.debug()["generation"]
    with open(d / "routes.yaml", "w") as f:   # in place (IN_CLOSE_WRITE)
        f.write(route_yaml("cb").replace("domains: ['*']", "domains: ['*']\n    bogus_field: 1"))
    wait_until(lambda: cp.debug()["last_error"], 10, what="error reported")
    err = cp.debug()["last_error"]
    assert re.search(r"routes\.yaml:6:5: routes\[0\]\.virtual_hosts\[0\]\.bogus_field: "
                     r"unknown field 'bogus_field'", err), err
    assert "routes.yaml:6:5" in cp.logs()
    assert cp.metric("remora_cp_config_reload_failures_total") >= 1
    assert cp.debug()["generation"] == gen
    assert cp.get("/ready")[0] == 200
    for _ in range(5):
        assert server_of(lport) == "b"
    # a YAML syntax error: file:line:col from libyaml
    write(d / "routes.yaml", "routes:\n- name: r1\n  virtual_hosts: [\n")
    wait_until(lambda: "routes.yaml:4:" in cp.debug()["last_error"], 10, what="syntax error")
    assert server_of(lport) == "b"
    # fixed: served again
    write(d / "routes.yaml", route_yaml("cb"))
    wait_until(lambda: cp.debug()["last_error"] == "" and cp.debug()["generation"] > gen, 10,
               what="fixed config loaded")
    # a NACK (Remora rejects a route to a regex it cannot compile) is recorded
    write(d / "routes.yaml", route_yaml("cb").replace(
        "match: {prefix: /}", "match: {safe_regex: {regex: '(('}}"))
    wait_until(lambda: cp.debug()["proxies"][0]["types"]["routes"]["last_nack"], 10,
               what="NACK recorded")
    assert cp.metric('remora_cp_xds_nacks_total{type="rds"}') >= 1
    assert server_of(lport) == "b"
    r.stop()


def test_live_edits_delta(remora, make_cp, make_upstream, ports, tmp_path):
    """The same edits over delta ADS (DeltaAggregatedResources)."""
    r, cp, d, lport = run_live_edits(remora, make_cp, make_upstream, ports, tmp_path, delta=True)
    pushes = {t: cp.metric(f'remora_cp_xds_pushes_total{{type="{t}"}}') for t in ("cds", "lds")}
    gen = cp.debug()["generation"]
    # a file rewritten with the same content: reloaded, but nothing is pushed
    write(d / "listeners.yaml", listener_yaml(lport))
    wait_until(lambda: cp.debug()["generation"] > gen, 10, what="reload")
    assert {t: cp.metric(f'remora_cp_xds_pushes_total{{type="{t}"}}')
            for t in ("cds", "lds")} == pushes
    r.stop()


def test_per_node_overrides(remora, make_cp, make_upstream, ports, tmp_path):
    """nodes/<node.cluster>/ overrides the shared route for that cluster of
    proxies; nodes/<node.id>/ overrides both for one proxy."""
    a, b, c = make_upstream("a"), make_upstream("b"), make_upstream("c")
    d = tmp_path / "cp"
    lport1, lport2, lport3 = ports.get(), ports.get(), ports.get()
    write(d / "clusters.yaml", clusters_yaml({"ca": a.port, "cb": b.port, "cc": c.port}))
    write(d / "routes.yaml", route_yaml("ca"))
    write(d / "nodes" / "canary" / "routes.yaml", route_yaml("cb"))
    # each proxy needs its own listener port: per node id
    for nid, lp in (("p1", lport1), ("p2", lport2), ("p3", lport3)):
        write(d / "nodes" / nid / "listeners.yaml", listener_yaml(lp))
    cp = make_cp(d)
    r1 = remora(bootstrap(ports.get(), cp, node_id="p1", node_cluster="stable"))
    r2 = remora(bootstrap(ports.get(), cp, node_id="p2", node_cluster="canary"))
    r3 = remora(bootstrap(ports.get(), cp, node_id="p3", node_cluster="canary"))
    assert server_of(lport1) == "a"
    assert server_of(lport2) == "b"
    assert server_of(lport3) == "b"
    # the id layer beats the cluster layer
    write(d / "nodes" / "p3" / "routes.yaml", route_yaml("cc"))
    wait_until(lambda: server_of(lport3) == "c", 15, what="p3 override")
    assert server_of(lport2) == "b" and server_of(lport1) == "a"
    # a new nodes/<cluster> directory is watched too
    write(d / "nodes" / "stable" / "routes.yaml", route_yaml("cc"))
    wait_until(lambda: server_of(lport1) == "c", 15, what="stable override")
    nodes = {p["node_id"]: p for p in cp.debug()["proxies"]}
    assert set(nodes) == {"p1", "p2", "p3"}
    assert nodes["p2"]["node_cluster"] == "canary"
    assert cp.metric("remora_cp_connected_proxies") == 3
    for r in (r1, r2, r3):
        r.stop()
    wait_until(lambda: cp.metric("remora_cp_connected_proxies") == 0, 10, what="disconnects")


def test_rest_with_curl_and_metrics(make_cp, ports, tmp_path):
    """POST /v3/discovery:clusters: 200 with the DiscoveryResponse JSON, then
    304 with its version; unknown types 404; /metrics passes promtool."""
    d = tmp_path / "cp"
    write(d / "clusters.yaml", clusters_yaml({"ca": 1111, "cb": 2222}))
    write(d / "nodes" / "special" / "c.yaml", clusters_yaml({"cz": 3333}))
    cp = make_cp(d)
    url = f"http://127.0.0.1:{cp.admin_port}/v3/discovery:clusters"
    req = {"node": {"id": "n1", "cluster": "x"}, "type_url":
           "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
    res = curl(url, "-X", "POST", "-H", "content-type: application/json",
               "--data", json.dumps(req))
    assert res.status == 200, res
    body = res.json()
    names = [c["name"] for c in body["resources"]]
    assert names == ["ca", "cb"]
    assert body["resources"][0]["@type"] == req["type_url"]
    assert body["resources"][0]["connect_timeout"] == "1s"
    req["version_info"] = body["version_info"]
    res = curl(url, "-X", "POST", "--data", json.dumps(req))
    assert res.status == 304, res
    # a node of cluster "special" sees its extra cluster; named endpoints
    req2 = {"node": {"id": "n2", "cluster": "special"}, "version_info": body["version_info"]}
    res = curl(url, "-X", "POST", "--data", json.dumps(req2))
    assert res.status == 200 and [c["name"] for c in res.json()["resources"]] == ["ca", "cb", "cz"]
    res = curl(f"http://127.0.0.1:{cp.admin_port}/v3/discovery:endpoints", "-X", "POST",
               "--data", json.dumps({"resource_names": ["cb"]}))
    assert res.status == 200
    assert [e["cluster_name"] for e in res.json()["resources"]] == ["cb"]
    res = curl(f"http://127.0.0.1:{cp.admin_port}/v3/discovery:nope", "-X", "POST", "--data", "{}")
    assert res.status == 404

    st, text = cp.get("/metrics")
    assert st == 200
    assert 'remora_cp_rest_requests_total{type="cds"} 3' in text
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, f"promtool exit {p.returncode}:\n{out}"


def health(port, service=""):
    """grpc.health.v1.Health/Check with Python grpcio (a real gRPC client):
    the serving status byte, or the grpc.StatusCode of the failure."""
    import grpc
    req = (b"\x0a" + bytes([len(service)]) + service.encode()) if service else b""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check",
                              request_serializer=lambda x: x, response_deserializer=lambda x: x)
        try:
            resp = call(req, timeout=5)
        except grpc.RpcError as e:
            return e.code()
    assert len(resp) == 2 and resp[0] == 0x08, resp
    return resp[1]


def test_unknown_grpc_method_and_bad_initial_config(tmp_path, make_cp):
    """The gRPC port answers an unknown method with UNIMPLEMENTED (12) on both
    the xDS and the CA port; a broken initial directory keeps /ready at 503
    and the unary health check (grpcio) NOT_SERVING until it is fixed."""
    import grpc
    d = tmp_path / "cp"
    write(d / "clusters.yaml", "clusters:\n- name: x\n  type: NOT_A_TYPE\n")
    cp = RemoraCP.__new__(RemoraCP)
    cp.grpc_port, cp.ca_port, cp.admin_port = (harness.free_port() for _ in range(3))
    cp.log = open(tmp_path / "cp.log", "w+")
    cp.proc = harness.spawn([cp_bin(), "--config-dir", str(d), "--address", "127.0.0.1",
                             "--grpc-port", str(cp.grpc_port), "--ca-port", str(cp.ca_port),
                             "--admin-port", str(cp.admin_port)],
                            stdout=cp.log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: cp.get("/ready")[0] == 503, 15, what="/ready 503")
        assert "clusters.yaml:3:9: clusters[0].type: unknown value 'NOT_A_TYPE'" in \
            cp.debug()["last_error"]
        for port in (cp.grpc_port, cp.ca_port):
            res = curl(f"http://127.0.0.1:{port}/pkg.Svc/Nope", "--http2-prior-knowledge",
                       "-X", "POST", "-H", "content-type: application/grpc",
                       "--data-binary", "@/dev/null")
            assert res.status == 200, res
            assert res.headers.get("grpc-status") == "12", res.header_block
            assert health(port) == 2   # NOT_SERVING
        write(d / "clusters.yaml", "clusters:\n- name: x\n  type: STATIC\n")
        wait_until(lambda: cp.get("/ready")[0] == 200, 10, what="/ready after fix")
        for port in (cp.grpc_port, cp.ca_port):
            assert health(port) == 1   # SERVING
            assert health(port, "envoy.service.discovery.v3.AggregatedDiscoveryService") == 1
            assert health(port, "nope") == grpc.StatusCode.NOT_FOUND
    finally:
        cp.stop()


def test_control_plane_restart(remora, make_cp, make_upstream, ports, tmp_path):
    """remora-cp stopped with a proxy connected exits cleanly (no sanitizer
    report); the proxy keeps serving its last config, reconnects to a new
    remora-cp on the same port and picks up what changed meanwhile."""
    a, b = make_upstream("a"), make_upstream("b")
    d = tmp_path / "cp"
    admin, lport = ports.get(), ports.get()
    setup_dir(d, {"ca": a, "cb": b}, lport, route_yaml("ca"))
    cp = make_cp(d)
    r = remora(bootstrap(admin, cp))
    assert server_of(lport) == "a"
    wait_until(lambda: cp.metric("remora_cp_connected_proxies") == 1, 10, what="connected")
    cp.stop()
    for _ in range(5):
        assert server_of(lport) == "a"
    write(d / "routes.yaml", route_yaml("cb"))
    cp2 = make_cp(d, grpc_port=cp.grpc_port, name="remora-cp-2")
    wait_until(lambda: server_of(lport) == "b", 30, what="new route after reconnect")
    wait_until(lambda: cp2.metric("remora_cp_connected_proxies") == 1, 10, what="reconnected")
    r.stop()


def catalog_yaml(ports, split, lport, rps=None):
    svcs = "".join(f"- name: {n}\n  endpoints: ['127.0.0.1:{p}']\n" for n, p in ports.items())
    to = "{" + ", ".join(f"{n}: {w}" for n, w in split) + "}"
    rl = f"  rate_limit: {{requests_per_second: {rps}}}\n" if rps else ""
    return (f"services:\n{svcs}listeners:\n- name: web\n  address: 127.0.0.1\n"
            f"  port: {lport}\n{rl}  routes:\n  - match: {{prefix: /}}\n    to: {to}\n"
            f"    timeout: 5s\n    retries: {{retry_on: connect-failure, num_retries: 1}}\n")


def test_catalog_split_and_rate_limit(remora, make_cp, make_upstream, ports, tmp_path):
    """--catalog: services and a listener compiled into CDS/EDS/LDS/RDS; the
    traffic split edited in the catalog shifts live traffic with zero failed
    requests; a rate limit turns into 429s; an unknown service in the file is
    reported with its line and the old catalog keeps serving."""
    a, b = make_upstream("a"), make_upstream("b")
    admin, lport = ports.get(), ports.get()
    cat = tmp_path / "catalog" / "catalog.yaml"
    ups = {"web-v1": a.port, "web-v2": b.port}
    write(cat, catalog_yaml(ups, [("web-v1", 100), ("web-v2", 0)], lport))
    cp = make_cp(None, catalog=str(cat))
    r = remora(bootstrap(admin, cp))
    assert {server_of(lport) for _ in range(10)} == {"a"}
    loop = Loop(lport)
    try:
        wait_until(lambda: loop.ok >= 5, 15, what="traffic")
        write(cat, catalog_yaml(ups, [("web-v1", 50), ("web-v2", 50)], lport))
        wait_until(lambda: {"a", "b"} <= set(loop.seen[-40:]), 20, what="50/50 split")
        write(cat, catalog_yaml(ups, [("web-v1", 0), ("web-v2", 100)], lport))
        wait_until(lambda: len(loop.seen) > 10 and set(loop.seen[-10:]) == {"b"}, 20,
                   what="all to v2")
    finally:
        loop.stop()
    assert loop.fail == [], loop.fail[:5]

    # an unknown service: reported with position; v2 keeps serving
    write(cat, catalog_yaml(ups, [("web-v3", 100)], lport))
    wait_until(lambda: cp.debug()["last_error"], 10, what="catalog error")
    err = cp.debug()["last_error"]
    assert re.match(r"catalog\.yaml:\d+:\d+: listeners\[0\]\.routes\[0\]: "
                    r"unknown service 'web-v3'", err), err
    assert server_of(lport) == "b"

    # a rate limit of 2 requests per second: a burst of 8 sees 429s
    write(cat, catalog_yaml(ups, [("web-v2", 100)], lport, rps=2))
    wait_until(lambda: cp.debug()["last_error"] == "", 10, what="catalog fixed")

    def limited():
        return 429 in [curl(f"http://127.0.0.1:{lport}/x").status for _ in range(8)]
    wait_until(limited, 15, what="429 from the rate limit")
    r.stop()
