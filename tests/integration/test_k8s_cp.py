"""remora-cp as deploy/kubernetes/control-plane.yaml runs it, with its volumes
laid out as the kubelet lays them out (no cluster here).

The kubelet mounts a ConfigMap or Secret as a directory of symlinks:
    catalog.yaml -> ..data/catalog.yaml
    ..data -> ..2026_11_22_10_00_00.123456789
    ..2026_11_22_10_00_00.123456789/catalog.yaml
and applies an update by writing a new timestamped directory, pointing a new
symlink ..data_tmp at it, renaming ..data_tmp over ..data (atomic) and removing
the old directory.  Checked: the Deployment's args, env, probes and mounts start
remora-cp (readiness /ready on 15014, liveness port open, TLS on the CA port for
the Service's names), a catalog edit delivered by such a swap is served, a
tokens Secret swap is honoured by the CA (the optional --ca-tokens file, added
to the manifest's args as docs/kubernetes.md says), and
deploy/kubernetes/ca-setup.sh prints a valid Secret + ConfigMaps whose roots
agree.

The kubelet also gives the pod its service-account volume
(/var/run/secrets/kubernetes.io/serviceaccount: token, ca.crt, namespace) and
the env KUBERNETES_SERVICE_HOST/PORT; with them remora-cp's CA reviews tokens
at the API server.  Here the API server is the stand-in of kube_standin.py
(see there why), the volume is laid out under the test's pod root like the
others, and since remora-cp's default path for it is compiled in, the test
adds --kube-token-file/--kube-ca-file pointing at the moved volume."""

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import yaml

import harness
from harness import curl, wait_until

DEPLOY = os.path.join(harness.REPO, "deploy", "kubernetes")
CP_NAME = "remora-cp.remora-system.svc"


def cp_bin():
    return os.path.join(os.path.dirname(harness.remora_bin()), "remora-cp")


_serial = [0]


def kubelet_write(mount, files):
    """Create or update a ConfigMap/Secret volume the way the kubelet does."""
    os.makedirs(mount, exist_ok=True)
    _serial[0] += 1
    ts = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{_serial[0]:09d}"
    new = os.path.join(mount, ts)
    os.mkdir(new)
    for name, data in files.items():
        with open(os.path.join(new, name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(os.path.join(new, name), 0o440)
    data_link = os.path.join(mount, "..data")
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    tmp = os.path.join(mount, "..data_tmp")
    os.symlink(ts, tmp)
    os.rename(tmp, data_link)   # the atomic swap
    for name in files:
        link = os.path.join(mount, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)
    if old:
        shutil.rmtree(os.path.join(mount, old))


def manifest():
    docs = [d for d in yaml.safe_load_all(open(os.path.join(DEPLOY, "control-plane.yaml")))
            if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    return docs, by


def ca_setup(tmp_path, *namespaces):
    ca_dir = tmp_path / "remora-ca"
    args = ["sh", os.path.join(DEPLOY, "ca-setup.sh"), "--ca-dir", str(ca_dir),
            "--remora-cp", cp_bin()]
    for ns in namespaces:
        args += ["--namespace", ns]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return ca_dir, p.stdout


class DeployedCP:
    """remora-cp started from the manifest's container spec: its args with the
    mount paths moved under tmp_path and its ports moved to free ones."""

    def __init__(self, tmp_path, catalog, tokens_yaml=None):
        from kube_standin import KubeStandin
        docs, by = manifest()
        dep = by[("Deployment", "remora-cp")]
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        self.container = c
        self.root = tmp_path / "pod"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in pod["volumes"]}
        self.mount = {n: str(self.root) + p for n, p in mounts.items()}
        # the volumes' contents
        assert vols["catalog"]["configMap"]["name"] == "remora-cp-catalog"
        kubelet_write(self.mount["catalog"], {"catalog.yaml": catalog})
        ca_dir, out = ca_setup(tmp_path)
        secret = yaml.safe_load(out)
        assert vols["ca"]["secret"]["secretName"] == secret["metadata"]["name"] == "remora-ca"
        kubelet_write(self.mount["ca"], {k: base64.b64decode(v)
                                         for k, v in secret["data"].items()})
        self.root_pem = str(ca_dir / "root-cert.pem")
        # the kubelet's service-account volume and the API server (a stand-in)
        assert pod.get("automountServiceAccountToken", True) is True
        assert pod["serviceAccountName"] == "remora-cp"
        self.api = KubeStandin(tmp_path / "kube")
        self.api.add_caller("remora-cp-sa-token")
        self.sa_dir = str(self.root) + "/var/run/secrets/kubernetes.io/serviceaccount"
        kubelet_write(self.sa_dir, {"token": "remora-cp-sa-token\n",
                                    "ca.crt": open(self.api.ca_pem).read(),
                                    "namespace": dep["metadata"]["namespace"]})
        self.ports = {p["containerPort"]: harness.free_port() for p in c["ports"]}
        args = []
        for a in c["args"]:
            for n, p in mounts.items():
                if a.startswith(p + "/") or a == p:
                    a = self.mount[n] + a[len(p):]
            if a.isdigit() and int(a) in self.ports:
                a = str(self.ports[int(a)])
            args.append("127.0.0.1" if a == "0.0.0.0" else a)
        args += ["--kube-token-file", self.sa_dir + "/token", "--kube-ca-file",
                 self.sa_dir + "/ca.crt"]
        if tokens_yaml is not None:   # the optional static tokens Secret
            self.mount["tokens"] = str(self.root) + "/etc/remora-cp/tokens"
            kubelet_write(self.mount["tokens"], {"tokens.yaml": tokens_yaml})
            args += ["--ca-tokens", self.mount["tokens"] + "/tokens.yaml"]
        env = dict(os.environ)
        env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = str(self.api.port)
        for e in c["env"]:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
            env[e["name"]] = dep["metadata"]["namespace"]
        self.log_path = tmp_path / "remora-cp.log"
        self._log = open(self.log_path, "wb")
        self.proc = harness.spawn([cp_bin(), *args], stderr=self._log, stdout=self._log,
                                  env=env)
        self.admin = self.ports[15014]
        self.ca_port = self.ports[15012]
        self.grpc_port = self.ports[15010]
        probe = c["readinessProbe"]["httpGet"]
        assert probe["port"] == 15014
        self.ready_path = probe["path"]
        wait_until(lambda: self.proc.poll() is not None or self.get(self.ready_path)[0] == 200,
                   30, what="the readiness probe")
        assert self.proc.poll() is None, self.log()

    def get(self, path):
        try:
            r = curl(f"http://127.0.0.1:{self.admin}{path}")
            return r.status, r.body.decode()
        except Exception:
            return 0, ""

    def discovery(self, kind, names=()):
        r = curl(f"http://127.0.0.1:{self.admin}/v3/discovery:{kind}", "-X", "POST", "-d",
                 json.dumps({"node": {"id": "frontend-1", "cluster": "frontend.shop"},
                             "resource_names": list(names)}))
        return json.loads(r.body) if r.status == 200 else {}

    def log(self):
        return open(self.log_path, "rb").read().decode("utf-8", "replace")

    def stop(self):
        rc, killed = harness.stop_process(self.proc)
        self._log.close()
        self.api.stop()
        assert not self.api.problems, self.api.problems
        text = self.log()
        assert not killed and rc == 0, text[-3000:]
        for m in harness.SANITIZER_MARKERS:
            assert m not in text, text[-3000:]


def by_kind_name():
    return manifest()[1]


def catalog_of_manifest():
    _, by = manifest()
    return by[("ConfigMap", "remora-cp-catalog")]["data"]["catalog.yaml"]


def endpoint_ips(cp):
    out = cp.discovery("endpoints", ["backend"])
    return [e["endpoint"]["address"]["socket_address"]["address"]
            for r in out.get("resources", []) for g in r["endpoints"]
            for e in g["lb_endpoints"]]


def csr_request():
    """A serialized IstioCertificateRequest (csr = 1, validity_duration = 2)."""
    key = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                          "ec_paramgen_curve:P-256"], capture_output=True, check=True,
                         timeout=30).stdout
    csr = subprocess.run(["openssl", "req", "-new", "-key", "/dev/stdin", "-subj", "/CN=x"],
                         input=key, capture_output=True, check=True, timeout=30).stdout

    def varint(n):
        out = b""
        while True:
            b = n & 0x7f
            n >>= 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out
    return b"\x0a" + varint(len(csr)) + csr + b"\x10" + varint(3600)


def create_certificate(cp, token):
    """CreateCertificate over TLS with grpcio: the status code name."""
    import grpc
    creds = grpc.ssl_channel_credentials(root_certificates=open(cp.root_pem, "rb").read())
    with grpc.secure_channel(f"127.0.0.1:{cp.ca_port}", creds, options=[
            ("grpc.ssl_target_name_override", CP_NAME)]) as ch:
        call = ch.unary_unary("/istio.v1.auth.IstioCertificateService/CreateCertificate",
                              request_serializer=lambda x: x,
                              response_deserializer=lambda x: x)
        try:
            call(csr_request(), timeout=10, metadata=[("authorization", f"Bearer {token}")])
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


@pytest.fixture
def deployed(tmp_path):
    cps = []

    def make(catalog=None, tokens=None):
        c = DeployedCP(tmp_path, catalog or catalog_of_manifest(), tokens)
        cps.append(c)
        return c
    yield make
    for c in cps:
        c.stop()


def test_manifest_starts_remora_cp_with_tls_and_probes(deployed):
    cp = deployed()
    c = cp.container
    # the liveness probe's port accepts
    assert c["livenessProbe"]["tcpSocket"]["port"] == 15014
    socket.create_connection(("127.0.0.1", cp.admin), timeout=5).close()
    # the manifest's catalog loaded (its backend endpoint) with no error
    assert json.loads(cp.get("/debug/config")[1])["last_error"] == ""
    assert endpoint_ips(cp) == ["10.96.120.15"]
    # 15012: TLS with a certificate for the Service's names (POD_NAMESPACE from the
    # downward API), verified against the root of the remora-ca Secret
    ctx = ssl.create_default_context(cafile=cp.root_pem)
    for name in ("remora-cp", "remora-cp.remora-system", CP_NAME,
                 "remora-cp.remora-system.svc.cluster.local"):
        with socket.create_connection(("127.0.0.1", cp.ca_port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                assert t.version() in ("TLSv1.2", "TLSv1.3")
    # the CA answers over TLS for a projected token the API server authenticates
    # (in-cluster: from the env and the service-account volume), refuses others
    assert "(in-cluster)" in cp.log()
    assert create_certificate(cp, cp.api.issue("shop", "frontend")) == "OK"
    assert create_certificate(cp, "tok-unknown") == "UNAUTHENTICATED"
    assert cp.api.requests[0][0] == "remora-cp-sa-token"
    assert "issued spiffe://cluster.local/ns/shop/sa/frontend" in cp.log()
    # RBAC for it: tokenreviews create, and the system:auth-delegator binding
    rules = by_kind_name()[("ClusterRole", "remora-cp")]["rules"]
    assert any("authentication.k8s.io" in r["apiGroups"] and "tokenreviews" in r["resources"]
               and "create" in r["verbs"] for r in rules), rules
    crbs = [d for (k, _), d in by_kind_name().items() if k == "ClusterRoleBinding"]
    assert any(d["roleRef"]["name"] == "system:auth-delegator" and
               {"kind": "ServiceAccount", "name": "remora-cp", "namespace": "remora-system"}
               in d["subjects"] for d in crbs), crbs
    # the root came from the Secret: nothing was generated
    assert "root loaded from" in cp.log() and "generated a new root" not in cp.log()
    # the Service exposes the three ports under the container's port names
    _, by = manifest()
    svc = by[("Service", "remora-cp")]
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {
        (p["name"], p["containerPort"]) for p in c["ports"]}


def test_configmap_symlink_swap_reloads_the_catalog(deployed):
    cp = deployed()
    assert endpoint_ips(cp) == ["10.96.120.15"]
    gen = cp.log().count("remora-cp: loaded")
    for i, ip in enumerate(("10.96.120.16", "10.96.120.17")):
        kubelet_write(cp.mount["catalog"],
                      {"catalog.yaml": catalog_of_manifest().replace("10.96.120.15", ip)})
        wait_until(lambda: endpoint_ips(cp) == [ip], 15, interval=0.1,
                   what=f"swap {i + 1} served")
    assert cp.log().count("remora-cp: loaded") >= gen + 2
    # a broken edit keeps the last good catalog, reported; fixing it recovers
    kubelet_write(cp.mount["catalog"], {"catalog.yaml": "services: [{name: x, bogus: 1}]\n"})
    wait_until(lambda: json.loads(cp.get("/debug/config")[1])["last_error"], 15,
               what="the error reported")
    assert endpoint_ips(cp) == ["10.96.120.17"]
    kubelet_write(cp.mount["catalog"], {"catalog.yaml": catalog_of_manifest()})
    wait_until(lambda: endpoint_ips(cp) == ["10.96.120.15"], 15, what="recovered")


def test_tokens_secret_swap_is_honoured(deployed):
    cp = deployed(tokens="tokens:\n  tok-one: {namespace: shop, service_account: frontend}\n")
    assert create_certificate(cp, "tok-one") == "OK"
    assert create_certificate(cp, "tok-two") == "UNAUTHENTICATED"
    kubelet_write(cp.mount["tokens"], {"tokens.yaml": (
        "tokens:\n  tok-two: {namespace: shop, service_account: backend}\n")})
    wait_until(lambda: create_certificate(cp, "tok-two") == "OK", 15, interval=0.2,
               what="the new token accepted")
    assert create_certificate(cp, "tok-one") == "UNAUTHENTICATED"


def test_ca_setup_prints_valid_objects(tmp_path):
    ca_dir, out = ca_setup(tmp_path, "shop", "default")
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [
        ("Secret", "remora-system"), ("ConfigMap", "shop"), ("ConfigMap", "default")]
    root = open(ca_dir / "root-cert.pem").read()
    assert base64.b64decode(docs[0]["data"]["root-cert.pem"]).decode() == root
    assert all(d["data"]["root-cert.pem"] == root and d["metadata"]["name"] ==
               "remora-ca-root-cert" for d in docs[1:])
    # the root is a CA the key belongs to
    key = base64.b64decode(docs[0]["data"]["root-key.pem"])
    p = subprocess.run(["openssl", "x509", "-noout", "-text"], input=root.encode(),
                       capture_output=True, timeout=10, check=True)
    assert "CA:TRUE" in p.stdout.decode()
    # running it again keeps the same root
    _, again = ca_setup(tmp_path, "shop")
    assert base64.b64decode(next(yaml.safe_load_all(again))["data"]["root-key.pem"]) == key
    # a bad namespace name is refused
    p = subprocess.run(["sh", os.path.join(DEPLOY, "ca-setup.sh"), "--ca-dir",
                        str(ca_dir), "--namespace", "Bad;ns"], capture_output=True,
                       timeout=30)
    assert p.returncode == 2
    # and the objects pass the Kubernetes schema check
    f = tmp_path / "ca.yaml"
    f.write_text(out)
    from test_inject import validate
    v = validate([str(f)])
    assert v.returncode == 0 and v.stdout.strip().endswith("0 problem(s)"), v.stdout
    # the injected sidecars mount exactly this ConfigMap name and key
    from test_inject import inject, load_all, GOLDEN, sidecar_of
    t, side = sidecar_of(load_all(inject(os.path.join(GOLDEN, "pod.yaml")))[0])
    vol = [v for v in t["spec"]["volumes"] if v["name"] == "remora-ca-root"][0]
    assert vol["configMap"]["name"] == docs[1]["metadata"]["name"]
    mount = [m for m in side["volumeMounts"] if m["name"] == "remora-ca-root"][0]["mountPath"]
    assert side["args"][side["args"].index("--ca-root-cert") + 1] == mount + "/root-cert.pem"
