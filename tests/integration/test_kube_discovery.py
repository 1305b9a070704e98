"""remora-cp discovers services from the Kubernetes API (--kube-discovery).

The API server is the STAND-IN of tests/integration/kube_standin.py (no
kube-apiserver is installable here; see its docstring): it serves LIST and
WATCH of v1 Services and discovery.k8s.io/v1 EndpointSlices with the API's
semantics (resourceVersion counter, chunked watch streams, bookmarks,
timeoutSeconds, 410 after a compaction), and every object it sent is
validated at the end against the Kubernetes schemas (npm kubernetes-models).

Checked with a real Remora connected to remora-cp over ADS: a Service plus
an EndpointSlice become a cluster with those endpoints that a catalog
listener routes to, and requests reach the upstreams; scaling (an endpoint
added, marked not ready, terminating) changes what Remora uses; a
compaction (ERROR 410 on the watch) relists and keeps serving; the API
server restarting resumes the watch (and catches up a change made while it
was down); a Service deleted removes its cluster; watches the server ends
(timeoutSeconds) are resumed; namespaces, multi-port Services and
appProtocol/port-name protocols; no catalog file needed."""

import json
import os
import subprocess
import time

import pytest

import harness
from harness import curl, wait_until
from cp_common import CpProcess, cp_bin
from kube_standin import KubeStandin
from test_inject import validate
from test_k8s_cp import kubelet_write
from test_remora_cp import bootstrap, write

NS = "default"
WEB = "web.default.svc.cluster.local"
API = "api.default.svc.cluster.local"


class CP(CpProcess):
    """remora-cp discovering from the stand-in."""

    def __init__(self, tmp_path, api, catalog=None, extra=()):
        self.dir = tmp_path / "cp"
        (self.dir / "config").mkdir(parents=True, exist_ok=True)
        sa = self.dir / "serviceaccount"
        kubelet_write(str(sa), {"token": "cp-token-1\n", "ca.crt": open(api.ca_pem).read(),
                                "namespace": "remora-system"})
        self.grpc_port, self.ca_port, self.admin_port = (harness.free_port() for _ in range(3))
        env = {k: v for k, v in os.environ.items()
               if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAMESPACE")}
        args = ["--address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                "--ca-port", str(self.ca_port), "--admin-port", str(self.admin_port),
                "--kube-api", api.url, "--kube-token-file", str(sa / "token"),
                "--kube-ca-file", str(sa / "ca.crt"), "--ca-dir", str(self.dir / "ca"),
                "--plaintext-ca-port", "--kube-discovery", *extra]
        args += ["--catalog", str(catalog)] if catalog else ["--config-dir", str(self.dir / "config")]
        self._spawn(args, self.dir / "cp.stderr", env=env)

    def m(self, name):
        return self.metrics().get(name, 0)

    def rest(self, key):
        """The resources of one type a node gets (REST DiscoveryRequest)."""
        res = curl(f"http://127.0.0.1:{self.admin_port}/v3/discovery:{key}", "-X", "POST",
                   "-H", "content-type: application/json", "--data",
                   json.dumps({"node": {"id": "t", "cluster": "t"}}))
        if res.status != 200:
            return []
        return json.loads(res.body)["resources"]

    def clusters(self):
        return {c["name"]: c for c in self.rest("clusters")}

    def endpoints(self):
        out = {}
        for cla in self.rest("endpoints"):
            out[cla["cluster_name"]] = sorted(
                f'{e["endpoint"]["address"]["socket_address"]["address"]}:'
                f'{e["endpoint"]["address"]["socket_address"]["port_value"]}'
                for g in cla.get("endpoints", []) for e in g.get("lb_endpoints", []))
        return out



@pytest.fixture
def api(tmp_path):
    a = KubeStandin(tmp_path / "kube")
    a.add_caller("cp-token-1")
    a.bookmark_s = 0.5
    yield a
    a.stop()
    f = tmp_path / "kube-bodies.yaml"
    n = a.write_bodies(f)
    assert not a.problems, a.problems
    assert n
    v = validate([str(f)])
    assert v.returncode == 0 and v.stdout.strip().endswith("0 problem(s)"), v.stdout


@pytest.fixture
def make_cp(tmp_path):
    cps = []

    def make(*a, **kw):
        c = CP(tmp_path, *a, **kw)
        cps.append(c)
        return c
    yield make
    for c in cps:
        c.stop()


def slice_of(name, svc, port, eps, port_name="http"):
    return KubeStandin.endpoint_slice(NS, name, svc, [(port_name, port)], eps)


def remora_endpoints(r, cluster):
    """host:port of cluster's hosts in Remora's /clusters (admin text)."""
    body = r.admin_get("/clusters")[2].decode()
    return sorted({line.split("::")[1] for line in body.splitlines()
                   if line.startswith(cluster + "::") and line.count("::") >= 3 and
                   line.split("::")[2] == "health_flags"})


def servers(lport, n=24):
    seen = set()
    for _ in range(n):
        res = curl(f"http://127.0.0.1:{lport}/x")
        seen.add(res.json()["server"] if res.status == 200 else res.status)
    return seen


def test_discovered_service_end_to_end(tmp_path, api, make_cp, remora, make_upstream, ports):
    port = ports.get()
    ups = {ip: make_upstream(name=ip, host=ip, port=port)
           for ip in ("127.0.0.11", "127.0.0.12", "127.0.0.13")}
    assert len(ups) == 3
    api.put(KubeStandin.service(NS, "web", [("http", 80, None)]))
    api.put(slice_of("web-a1", "web", port, [("127.0.0.11", True, False),
                                             ("127.0.0.12", True, False)]))
    api.put(KubeStandin.service(NS, "api", [("grpc-api", 9000, None)], cluster_ip="10.96.0.11"))
    api.put(slice_of("api-x", "api", port, [("127.0.0.13", True, False)], port_name="grpc-api"))
    # the catalog refers to the discovered service by its name
    admin, lport = ports.get(), ports.get()
    cat = tmp_path / "catalog" / "catalog.yaml"
    write(cat, f"listeners:\n- name: out\n  address: 127.0.0.1\n  port: {lport}\n"
               f"  routes:\n  - match: {{prefix: /}}\n    to: {WEB}\n"
               f"    retries: {{retry_on: connect-failure, num_retries: 2}}\n")
    cp = make_cp(api, catalog=cat, extra=("--kube-watch-timeout", "3s"))
    wait_until(lambda: cp.m("remora_cp_kube_synced") == 1, 20, what="initial sync")
    wait_until(lambda: WEB in cp.endpoints(), 20, what="the catalog loaded")
    assert cp.endpoints()[WEB] == [f"127.0.0.11:{port}", f"127.0.0.12:{port}"]
    cl = cp.clusters()
    assert set(cl) >= {WEB, API}
    # grpc-* port name: HTTP/2 upstream
    assert "typed_extension_protocol_options" in cl[API] and \
        "typed_extension_protocol_options" not in cl[WEB]
    r = remora(bootstrap(admin, cp))
    wait_until(lambda: servers(lport, 12) == {"127.0.0.11", "127.0.0.12"}, 20,
               what="both endpoints in use")
    assert remora_endpoints(r, WEB) == [f"127.0.0.11:{port}", f"127.0.0.12:{port}"]

    # scale up: a third endpoint in a second slice
    api.put(slice_of("web-b2", "web", port, [("127.0.0.13", True, False)]))
    wait_until(lambda: servers(lport, 18) == {"127.0.0.11", "127.0.0.12", "127.0.0.13"}, 20,
               what="the new endpoint in use")
    # not ready, then terminating: no longer used
    api.put(slice_of("web-a1", "web", port, [("127.0.0.11", False, False),
                                             ("127.0.0.12", True, False)]))
    wait_until(lambda: remora_endpoints(r, WEB) == [f"127.0.0.12:{port}", f"127.0.0.13:{port}"],
               20, what="the not-ready endpoint removed")
    assert servers(lport) == {"127.0.0.12", "127.0.0.13"}
    api.put(slice_of("web-a1", "web", port, [("127.0.0.11", False, False),
                                             ("127.0.0.12", False, True)]))
    wait_until(lambda: remora_endpoints(r, WEB) == [f"127.0.0.13:{port}"], 20,
               what="the terminating endpoint removed")
    assert servers(lport) == {"127.0.0.13"}
    api.put(slice_of("web-a1", "web", port, [("127.0.0.11", True, False),
                                             ("127.0.0.12", True, False)]))
    wait_until(lambda: remora_endpoints(r, WEB) == [f"127.0.0.1{i}:{port}" for i in (1, 2, 3)],
               20, what="ready again")
    m = cp.metrics()
    assert m['remora_cp_kube_discovered_services'] == 2
    assert m['remora_cp_kube_discovered_endpoints'] == 4
    assert m['remora_cp_kube_watch_events_total{kind="endpointslices",type="modified"}'] >= 3
    assert m['remora_cp_kube_watch_events_total{kind="endpointslices",type="added"}'] >= 1

    # the server ends watches after timeoutSeconds=3: resumed from the last
    # resourceVersion (no relist); bookmarks arrive in between
    w0 = m['remora_cp_kube_watches_total{kind="services"}']
    wait_until(lambda: cp.m('remora_cp_kube_watches_total{kind="services"}') >= w0 + 2, 20,
               what="watches resumed after timeoutSeconds")
    assert cp.m('remora_cp_kube_watch_events_total{kind="services",type="bookmark"}') >= 1
    assert cp.m('remora_cp_kube_relists_total{kind="services"}') == 0
    watch_rvs = [int(q["resourceVersion"]) for res, _, q in api.gets if q.get("watch")]
    assert watch_rvs and all(rv >= 1000 for rv in watch_rvs)
    assert all(q.get("allowWatchBookmarks") == "true" for _, _, q in api.gets if q.get("watch"))

    # compaction: ERROR 410 on both watches -> relist; the state is kept
    api.compact()
    wait_until(lambda: cp.m('remora_cp_kube_relists_total{kind="services"}') >= 1 and
               cp.m('remora_cp_kube_relists_total{kind="endpointslices"}') >= 1, 20,
               what="relists after 410")
    assert cp.m('remora_cp_kube_watch_events_total{kind="services",type="error"}') >= 1
    assert servers(lport) == {"127.0.0.11", "127.0.0.12", "127.0.0.13"}
    assert cp.m("remora_cp_kube_discovered_endpoints") == 4

    # the API server goes away: Remora keeps its endpoints; a change made
    # meanwhile arrives when the watch resumes
    errs0 = sum(v for k, v in cp.metrics().items() if k.startswith("remora_cp_kube_errors_total"))
    api.stop()
    wait_until(lambda: sum(v for k, v in cp.metrics().items()
                           if k.startswith("remora_cp_kube_errors_total")) > errs0, 20,
               what="watch errors while the API is down")
    assert servers(lport) == {"127.0.0.11", "127.0.0.12", "127.0.0.13"}
    api.put(slice_of("web-b2", "web", port, []))   # scaled to 0 while down
    relists = cp.m('remora_cp_kube_relists_total{kind="endpointslices"}')
    api.start()
    wait_until(lambda: remora_endpoints(r, WEB) == [f"127.0.0.11:{port}", f"127.0.0.12:{port}"],
               40, what="the change made while the API was down")
    assert servers(lport) == {"127.0.0.11", "127.0.0.12"}
    # resumed from its resourceVersion: no relist needed
    assert cp.m('remora_cp_kube_relists_total{kind="endpointslices"}') == relists

    # a Service deleted: its cluster goes away at Remora
    assert remora_endpoints(r, API) == [f"127.0.0.13:{port}"]
    api.delete("Service", NS, "api")
    wait_until(lambda: API not in r.admin_get("/clusters")[2].decode(), 20,
               what="the deleted service's cluster removed")
    assert API not in cp.clusters()
    assert cp.m('remora_cp_kube_watch_events_total{kind="services",type="deleted"}') == 1
    assert servers(lport) == {"127.0.0.11", "127.0.0.12"}
    assert "kube-watch: initial sync" in cp.log()


def test_namespaces_ports_protocols_without_catalog(tmp_path, api, make_cp):
    """--kube-namespaces: only those namespaces are listed and watched;
    multi-port Services give one cluster per port; appProtocol wins over
    the port name; UDP ports and ExternalName Services are skipped; FQDN
    slices are ignored; remora-cp runs with --config-dir only."""
    svc = KubeStandin.service("shop", "cart", [("http-web", 80, None), ("admin", 9090, "grpc"),
                                                ("tcp-db", 5432, None), ("metrics", 15090, None)])
    svc["spec"]["ports"].append({"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"})
    api.put(svc)
    api.put(KubeStandin.endpoint_slice("shop", "cart-1", "cart",
                                       [("http-web", 8080), ("admin", 9091), ("tcp-db", 5432),
                                        ("metrics", 15090)],
                                       [("10.1.0.5", True, False), ("10.1.0.6", None, False)]))
    api.put(KubeStandin.endpoint_slice("shop", "cart-2", "cart", [("http-web", 8080)],
                                       [("cart.example.com", True, False)], address_type="FQDN"))
    ext = KubeStandin.service("shop", "ext", [("http", 80, None)])
    ext["spec"] = {"type": "ExternalName", "externalName": "example.com"}
    api.put(ext)
    api.put(KubeStandin.service("other", "hidden", [("http", 80, None)]))
    cp = make_cp(api, extra=("--kube-namespaces", "shop"))
    wait_until(lambda: cp.m("remora_cp_kube_synced") == 1, 20, what="initial sync")
    host = "cart.shop.svc.cluster.local"
    wait_until(lambda: host in cp.clusters(), 20, what="clusters served")
    cl = cp.clusters()
    assert set(cl) == {host, host + ":9090", host + ":5432", host + ":15090"}, set(cl)
    assert "typed_extension_protocol_options" in cl[host + ":9090"]   # appProtocol grpc
    assert "typed_extension_protocol_options" not in cl[host]
    eps = cp.endpoints()
    # ready unset counts as ready (the API's meaning of "unknown")
    assert eps[host] == ["10.1.0.5:8080", "10.1.0.6:8080"]
    assert eps[host + ":9090"] == ["10.1.0.5:9091", "10.1.0.6:9091"]
    assert cp.m("remora_cp_kube_discovered_services") == 4
    assert {ns for _, ns, _ in api.gets} == {"shop"}


def test_no_rbac_and_flag_errors(tmp_path, api, make_cp):
    """Without list/watch RBAC remora-cp logs the API's 403, counts errors
    and retries with backoff; it still serves (without discovered services)
    after the bounded wait.  Flags that need --kube-discovery are refused."""
    api.add_caller("cp-token-1", watch=False)
    cp = make_cp(api)
    wait_until(lambda: sum(v for k, v in cp.metrics().items()
                           if k.startswith("remora_cp_kube_errors_total")) >= 2, 20,
               what="errors counted")
    assert 'cannot list resource \\"services\\"' in cp.log() or \
        'cannot list resource "services"' in cp.log()
    assert cp.m("remora_cp_kube_synced") == 0
    wait_until(lambda: curl(f"http://127.0.0.1:{cp.admin_port}/ready").status == 200, 20,
               what="serving without discovery after the bounded wait")
    n = len(api.gets)
    time.sleep(2)
    assert len(api.gets) - n <= 8   # backoff, not a tight loop
    p = subprocess.run([cp_bin(), "--config-dir", str(tmp_path), "--kube-namespaces", "a"],
                       capture_output=True, timeout=20)
    assert p.returncode == 2 and b"need --kube-discovery" in p.stderr, p
    p = subprocess.run([cp_bin(), "--config-dir", str(tmp_path), "--kube-discovery",
                        "--no-kube-api"], capture_output=True, timeout=20)
    assert p.returncode == 2 and b"--kube-discovery needs the Kubernetes API" in p.stderr, p
