"""Kubernetes sidecar injection: `remora inject` / `uninject` golden files for
every workload kind, idempotence, the uninject round trip, opt-out, the
annotations that reach remora-init, Kubernetes schema validation of every
output and manifest (tests/k8s: kubernetes-models), the admission webhook over
real HTTPS, and the readiness/Prometheus listeners of the generated bootstrap.

UPDATE_GOLDEN=1 rewrites the golden files (review the diff before committing)."""

import base64
import copy
import glob
import json
import os
import re
import ssl
import subprocess
import urllib.request

import pytest
import yaml

import harness
from harness import Remora, wait_until

GOLDEN = os.path.join(harness.REPO, "tests", "integration", "golden", "inject")
DEPLOY = os.path.join(harness.REPO, "deploy", "kubernetes")
K8S_DIR = os.path.join(harness.REPO, "tests", "k8s")
INPUTS = sorted(p for p in glob.glob(os.path.join(GOLDEN, "*.yaml"))
                if not p.endswith(".injected.yaml"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def run(*args, input=None, check=True):
    p = subprocess.run([harness.remora_bin(), *args], input=input, capture_output=True,
                       text=True, timeout=60)
    if check:
        assert p.returncode == 0, f"remora {' '.join(args)}: rc={p.returncode}\n{p.stderr}"
    return p


def inject(path, *extra):
    return run("inject", "-q", "-f", path, *extra).stdout


def golden_path(src, suffix=""):
    return src[:-len(".yaml")] + suffix + ".injected.yaml"


def check_golden(path, text):
    if UPDATE or not os.path.exists(path):
        if not UPDATE:
            pytest.fail(f"golden file {path} missing (run with UPDATE_GOLDEN=1)")
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{path} differs (UPDATE_GOLDEN=1 to regenerate)"


def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def template_of(doc):
    kind = doc["kind"]
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


# ---- golden files, every kind -------------------------------------------------------

@pytest.mark.parametrize("src", INPUTS, ids=[os.path.basename(p) for p in INPUTS])
def test_golden(src):
    check_golden(golden_path(src), inject(src))


def test_golden_legacy_sidecar():
    src = os.path.join(GOLDEN, "deployment.yaml")
    out = inject(src, "--legacy-sidecar")
    check_golden(golden_path(src, ".legacy"), out)
    t = template_of(load_all(out)[0])
    side = t["spec"]["containers"][0]
    assert side["name"] == "remora-proxy" and "restartPolicy" not in side
    assert side["lifecycle"]["postStart"]["exec"]["command"][:2] == ["remora", "wait-ready"]
    assert [c["name"] for c in t["spec"]["initContainers"]] == ["remora-init", "migrate"]


def test_every_kind_is_injected():
    kinds = set()
    for src in INPUTS:
        for doc in load_all(inject(src)):
            items = doc["items"] if doc["kind"] == "List" else [doc]
            for d in items:
                if d["kind"] in ("Service",):
                    continue
                ann = template_of(d).get("metadata", {}).get("annotations", {})
                if "remora.io/status" in ann:
                    kinds.add(d["kind"])
    assert kinds >= {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                     "CronJob"}


def test_injected_pod_shape():
    out = load_all(inject(os.path.join(GOLDEN, "deployment.yaml")))[0]
    t = template_of(out)
    inits = t["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["remora-init", "remora-proxy", "migrate"]
    init, side = inits[0], inits[1]
    # remora-init: root with NET_ADMIN/NET_RAW, probe ports excluded from capture
    assert init["securityContext"]["runAsUser"] == 0
    assert set(init["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["REMORA_INBOUND_PORTS_EXCLUDE"].split(",") == ["15090", "15021", "15020", "8081",
                                                               "8080"]
    # the native sidecar
    assert side["restartPolicy"] == "Always"
    sc = side["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (1337, 1337)
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert {p["containerPort"] for p in side["ports"]} == {15001, 15006, 15000, 15090, 15021}
    assert side["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert side["startupProbe"]["httpGet"]["port"] == 15021
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in side["env"]
              if "valueFrom" in e}
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
                      "INSTANCE_IP": "status.podIP",
                      "SERVICE_ACCOUNT": "spec.serviceAccountName"}
    # the identity the CA must issue, from the downward API (after the variables it uses)
    assert side["env"][-1] == {"name": "REMORA_SPIFFE_ID", "value":
                               "spiffe://cluster.local/ns/$(POD_NAMESPACE)/sa/$(SERVICE_ACCOUNT)"}
    args = side["args"]
    boot = json.loads(args[args.index("--config-yaml") + 1])
    xds = boot["static_resources"]["clusters"][0]
    assert xds["name"] == "xds-grpc"
    assert (xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]) == {"address": "remora-cp.remora-system.svc", "port_value": 15012}
    # xDS over TLS to the CA port, verified against the mounted root for the Service's name
    tc = xds["transport_socket"]["typed_config"]
    assert tc["sni"] == "remora-cp.remora-system.svc"
    assert tc["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/var/run/secrets/remora/root-cert.pem"},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {
            "exact": "remora-cp.remora-system.svc"}}]}
    # the certificate client: CA address, projected token, root
    assert args[args.index("--ca-address") + 1] == "remora-cp.remora-system.svc:15012"
    assert args[args.index("--ca-token-file") + 1] == "/var/run/secrets/tokens/remora-token"
    assert args[args.index("--ca-root-cert") + 1] == "/var/run/secrets/remora/root-cert.pem"
    assert side["volumeMounts"] == [
        {"name": "remora-ca-root", "mountPath": "/var/run/secrets/remora", "readOnly": True},
        {"name": "remora-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True}]
    assert t["spec"]["volumes"] == [
        {"name": "remora-ca-root", "configMap": {"name": "remora-ca-root-cert"}},
        {"name": "remora-token", "projected": {"sources": [{"serviceAccountToken": {
            "path": "remora-token", "audience": "remora-ca", "expirationSeconds": 3600}}]}}]
    assert args[args.index("--service-cluster") + 1] == "web.$(POD_NAMESPACE)"
    assert "$(POD_NAME)" in args[args.index("--service-node") + 1]
    assert side["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                 "limits": {"cpu": "2", "memory": "1Gi"}}
    ann = t["metadata"]["annotations"]
    # the user's own scrape setting wins; the others are added
    assert ann["prometheus.io/scrape"] == "false"
    assert ann["prometheus.io/port"] == "15090"
    assert ann["prometheus.io/path"] == "/stats/prometheus"
    status = json.loads(ann["remora.io/status"])
    assert status["annotations"] == ["prometheus.io/port", "prometheus.io/path"]
    # the application's own values survive as the same types
    app_env = {e["name"]: e["value"] for e in t["spec"]["containers"][0]["env"]}
    assert app_env == {"MODE": "on", "UMASK": "0022", "MOTD": "hello\nworld\n"}


def test_annotations_reach_remora_init_and_resources():
    docs = load_all(inject(os.path.join(GOLDEN, "annotations.yaml")))
    t = template_of(docs[0])
    init, side = t["spec"]["initContainers"][:2]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env == {
        "REMORA_INBOUND_PORTS_INCLUDE": "8080,8443",
        "REMORA_INBOUND_PORTS_EXCLUDE": "15090,15021,15020,9901",
        "REMORA_OUTBOUND_PORTS_EXCLUDE": "3306",
        "REMORA_OUTBOUND_IP_RANGES_INCLUDE": "*",
        "REMORA_OUTBOUND_IP_RANGES_EXCLUDE": "169.254.169.254/32,10.96.0.0/12",
    }
    assert side["resources"]["requests"]["cpu"] == "250m"
    assert side["resources"]["limits"]["memory"] == "512Mi"
    # and remora-init itself accepts them (its --dry-run prints the rules)
    init_env = dict(os.environ, **env)
    p = subprocess.run(["sh", os.path.join(harness.REPO, "deploy", "init", "remora-init"),
                        "--dry-run", "--ipv6", "false"], env=init_env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "-A REMORA_OUTPUT -d 169.254.169.254/32 -j RETURN" in p.stdout
    assert "-A REMORA_INBOUND -p tcp --dport 8443 -j REMORA_IN_REDIRECT" in p.stdout


def test_opt_out_and_host_network_unchanged():
    src = os.path.join(GOLDEN, "annotations.yaml")
    p = run("inject", "-f", src)
    before, after = load_all(open(src).read()), load_all(p.stdout)
    assert after[1:] == before[1:]
    assert after[0] != before[0]
    assert p.stderr.count("opted out") == 2 and "hostNetwork" in p.stderr


# ---- idempotence and the uninject round trip ---------------------------------------

@pytest.mark.parametrize("src", INPUTS, ids=[os.path.basename(p) for p in INPUTS])
def test_reinjection_is_idempotent(src, tmp_path):
    once = tmp_path / "once.yaml"
    once.write_text(inject(src))
    assert inject(str(once)) == once.read_text()
    assert inject(str(once), "--legacy-sidecar") == once.read_text()


@pytest.mark.parametrize("legacy", [False, True], ids=["native", "legacy"])
@pytest.mark.parametrize("src", INPUTS, ids=[os.path.basename(p) for p in INPUTS])
def test_uninject_round_trip(src, legacy, tmp_path):
    injected = tmp_path / "injected.yaml"
    injected.write_text(inject(src, *(["--legacy-sidecar"] if legacy else [])))
    back = run("uninject", "-q", "-f", str(injected)).stdout
    # equal to the input modulo formatting: as data, and as text once the input
    # went through the same emitter (key order kept, comments dropped)
    assert load_all(back) == load_all(open(src).read())
    assert back == run("inject", "--uninject", "-q", "-f", src).stdout
    assert run("inject", "--uninject", "-q", "-f", str(injected)).stdout == back


def test_uninject_keeps_user_changes_made_after_injection(tmp_path):
    src = os.path.join(GOLDEN, "pod.yaml")
    doc = load_all(inject(src))[0]
    doc["metadata"]["annotations"]["team"] = "payments"
    doc["spec"]["initContainers"].append({"name": "late", "image": "late:1"})
    p = tmp_path / "edited.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    back = load_all(run("uninject", "-q", "-f", str(p)).stdout)[0]
    assert back["metadata"]["annotations"] == {"team": "payments"}
    assert back["spec"]["initContainers"] == [{"name": "late", "image": "late:1"}]


def test_invalid_input_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  annotations:\n"
                   "    remora.io/exclude-outbound-cidrs: '10.0.0.0/8; rm -rf /'\n"
                   "spec:\n  containers:\n  - name: a\n    image: b\n")
    p = run("inject", "-f", str(bad), check=False)
    assert p.returncode == 1 and "remora.io/exclude-outbound-cidrs" in p.stderr
    clash = tmp_path / "clash.yaml"
    clash.write_text("kind: Pod\napiVersion: v1\nmetadata: {name: x}\n"
                     "spec: {containers: [{name: remora-proxy, image: x}]}\n")
    p = run("inject", "-f", str(clash), check=False)
    assert p.returncode == 1 and "remora-proxy" in p.stderr
    nospec = tmp_path / "nospec.yaml"
    nospec.write_text("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n")
    p = run("inject", "-f", str(nospec), check=False)
    assert p.returncode == 1 and "spec.template" in p.stderr
    p = run("inject", "-f", str(tmp_path / "missing.yaml"), check=False)
    assert p.returncode == 1
    # stdin in, file out
    out = tmp_path / "out.yaml"
    run("inject", "-q", "-f", "-", "-o", str(out), input=open(os.path.join(GOLDEN, "pod.yaml")).read())
    assert out.read_text() == open(golden_path(os.path.join(GOLDEN, "pod.yaml"))).read()


# ---- manifests and schema validation -----------------------------------------------

def validate(paths):
    node_modules = os.path.join(K8S_DIR, "node_modules", "kubernetes-models")
    if not os.path.isdir(node_modules):
        if os.environ.get("CI"):
            pytest.fail("tests/k8s not installed (make k8s-npm)")
        pytest.skip("tests/k8s not installed (make k8s-npm)")
    return subprocess.run(["node", os.path.join(K8S_DIR, "validate.mjs"), *paths],
                          capture_output=True, text=True, timeout=120, cwd=K8S_DIR)


def test_schema_validation_of_outputs_and_manifests():
    outputs = sorted(glob.glob(os.path.join(GOLDEN, "*.injected.yaml")))
    manifests = sorted(glob.glob(os.path.join(DEPLOY, "*.yaml")) +
                       glob.glob(os.path.join(DEPLOY, "example", "*.yaml")))
    assert len(outputs) >= len(INPUTS) and len(manifests) >= 6
    p = validate(INPUTS + outputs + manifests)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().endswith("0 problem(s)")


def test_schema_validation_can_fail(tmp_path):
    """The checker is not a rubber stamp: a wrong type, a bad enum and a missing
    required field are each reported."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n"
                   "  - name: a\n    image: b\n    ports: [{containerPort: http}]\n---\n"
                   "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers:\n"
                   "  - name: a\n    imagePullPolicy: Sometimes\n---\n"
                   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\nspec: {}\n")
    p = validate([str(bad)])
    assert p.returncode == 1
    assert p.stdout.strip().endswith("3 problem(s)"), p.stdout


def test_example_app_after_is_generated():
    src = os.path.join(DEPLOY, "example", "app.yaml")
    after = os.path.join(DEPLOY, "example", "app-injected.yaml")
    out = inject(src)
    if UPDATE:
        with open(after, "w") as f:
            f.write(out)
    assert out == open(after).read(), "regenerate: remora inject -f app.yaml -o app-injected.yaml"
    docs = load_all(out)
    injected = [d for d in docs if d["kind"] == "Deployment"]
    assert len(injected) == 2
    for d in injected:
        assert "remora.io/status" in template_of(d)["metadata"]["annotations"]


def test_webhook_manifest_selects_labelled_namespaces():
    docs = load_all(open(os.path.join(DEPLOY, "webhook.yaml")).read())
    mwc = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"][0]
    hook = mwc["webhooks"][0]
    assert hook["namespaceSelector"] == {"matchLabels": {"remora-injection": "enabled"}}
    assert hook["clientConfig"]["service"]["path"] == "/inject"
    assert hook["rules"][0]["resources"] == ["pods"]
    ns = load_all(open(os.path.join(DEPLOY, "example", "app.yaml")).read())[0]
    assert ns["metadata"]["labels"]["remora-injection"] == "enabled"


def test_prometheus_manifest_matches_deploy_prometheus():
    docs = load_all(open(os.path.join(DEPLOY, "prometheus.yaml")).read())
    cm = [d for d in docs if d["kind"] == "ConfigMap"][0]
    prom_dir = os.path.join(harness.REPO, "deploy", "prometheus")
    assert cm["data"]["prometheus.yml"] == open(os.path.join(prom_dir, "prometheus.yml")).read()
    assert cm["data"]["remora.rules.yml"] == open(
        os.path.join(prom_dir, "rules", "remora.rules.yml")).read()
    # promtool checks those files in test_observability_deploy.py (Debian's
    # promtool lacks kubernetes_sd, so it cannot check them here as they are)


# ---- the webhook over HTTPS ----------------------------------------------------------

def json_patch_apply(doc, patch):
    """RFC 6902 add/remove/replace (what the webhook emits), written here so the
    check does not trust the code under test."""
    doc = copy.deepcopy(doc)
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(idx, op["value"])
            elif op["op"] == "remove":
                del parent[idx]
            else:
                parent[idx] = op["value"]
        else:
            if op["op"] == "remove":
                del parent[last]
            elif op["op"] == "replace":
                assert last in parent, f"replace of missing {op['path']}"
                parent[last] = op["value"]
            else:
                parent[last] = op["value"]
    return doc


@pytest.fixture
def webhook(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=remora-injector",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    port = harness.free_port()
    err = open(tmp_path / "webhook.stderr", "wb")
    proc = harness.spawn([harness.remora_bin(), "inject-webhook", "--cert", str(cert), "--key",
                          str(key), "--port", str(port), "--address", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=err)
    ctx = ssl.create_default_context(cafile=str(cert))

    def post(body, path="/inject"):
        req = urllib.request.Request(f"https://localhost:{port}{path}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())

    def healthy():
        try:
            with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=ctx,
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(healthy, 30, interval=0.2, what="webhook listening")
    yield post
    harness.stop_process(proc)
    err.close()
    text = open(tmp_path / "webhook.stderr").read()
    assert "ERROR: AddressSanitizer" not in text and "runtime error" not in text, text
    assert proc.returncode == 0, text


def review(obj, uid="6f1b2c3d-0000-4000-8000-000000000001", kind="Pod"):
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": kind},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "shop", "operation": "CREATE", "object": obj}}


def test_webhook_patch_equals_cli_output(webhook):
    src = os.path.join(GOLDEN, "pod.yaml")
    pod = load_all(open(src).read())[0]
    status, body = webhook(review(pod))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    resp = body["response"]
    assert resp["uid"] == "6f1b2c3d-0000-4000-8000-000000000001" and resp["allowed"] is True
    assert resp["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(resp["patch"]))
    # annotation keys with '/' must be escaped as ~1 in the pointer
    assert any("~1" in op["path"] for op in patch) or any(
        op["path"] == "/metadata/annotations" for op in patch)
    patched = json_patch_apply(pod, patch)
    assert patched == load_all(inject(src))[0]

    # a Pod as the API server sends it: no kind member, generateName, existing
    # annotations (patched member by member, with escaped keys)
    pod2 = load_all(open(src).read())[0]
    del pod2["kind"]
    pod2["metadata"]["annotations"] = {"team/owner": "shop~1"}
    status, body = webhook(review(pod2))
    patch = json.loads(base64.b64decode(body["response"]["patch"]))
    assert {"op": "add", "path": "/metadata/annotations/remora.io~1status",
            "value": patch[-1]["value"]} in patch or any(
        op["path"].startswith("/metadata/annotations/") for op in patch)
    patched = json_patch_apply(pod2, patch)
    assert patched["metadata"]["annotations"]["team/owner"] == "shop~1"
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["remora-init",
                                                                     "remora-proxy"]


def test_webhook_leaves_opted_out_and_other_objects_alone(webhook):
    pod = load_all(open(os.path.join(GOLDEN, "annotations.yaml")).read())[1]
    status, body = webhook(review(pod))
    assert body["response"]["allowed"] is True and "patch" not in body["response"]
    status, body = webhook(review({"metadata": {"name": "x"}}, kind="ConfigMap"))
    assert body["response"]["allowed"] is True and "patch" not in body["response"]
    # already injected: nothing more
    injected = load_all(inject(os.path.join(GOLDEN, "pod.yaml")))[0]
    status, body = webhook(review(injected))
    assert "patch" not in body["response"]


def test_webhook_denies_invalid_annotation_and_rejects_garbage(webhook):
    pod = load_all(open(os.path.join(GOLDEN, "pod.yaml")).read())[0]
    pod["metadata"]["annotations"] = {"remora.io/inbound-ports": "80;x"}
    status, body = webhook(review(pod))
    assert body["response"]["allowed"] is False
    assert "remora.io/inbound-ports" in body["response"]["status"]["message"]
    with pytest.raises(urllib.error.HTTPError) as e:
        webhook({"not": "a review"})
    assert e.value.code == 400


# ---- the generated bootstrap serves /healthz/ready and /stats/prometheus ------------

XDS_DIR = os.path.join(harness.REPO, "tests", "xds")


def test_generated_bootstrap_readiness_and_prometheus(tmp_path):
    """The sidecar's generated bootstrap, with its fixed ports moved to free ones
    (tests share the machine) and the control plane pointed at the test one:
    /healthz/ready on the 15021 listener answers as the admin /ready does (503
    until the first xDS response, then 200), /stats/prometheus on the 15090
    listener serves the admin's Prometheus text."""
    if not os.path.isdir(os.path.join(XDS_DIR, "node_modules", "@grpc", "grpc-js-xds")):
        if os.environ.get("CI"):
            pytest.fail("test control plane not installed (make xds-npm)")
        pytest.skip("test control plane not installed (make xds-npm)")
    from test_xds import ControlPlane
    cp = ControlPlane()
    try:
        boot = yaml.safe_load(run("inject", "--print-bootstrap", "--xds-plaintext",
                                  "--control-plane", f"127.0.0.1:{cp.grpc_port}").stdout)
        text = json.dumps(boot)
        assert all(f'"port_value": {p}' in text for p in (15000, 15021, 15090))
        admin, health, prom = (harness.free_port() for _ in range(3))
        text = (text.replace('"port_value": 15000', f'"port_value": {admin}')
                    .replace('"port_value": 15021', f'"port_value": {health}')
                    .replace('"port_value": 15090', f'"port_value": {prom}'))
        r = Remora(tmp_path, json.loads(text))
        r.args = ["--config-yaml", text, "--service-node", "sidecar~10.0.0.1~a.shop~shop.svc",
                  "--service-cluster", "a.shop", "--concurrency", "1", "--drain-time-s", "1"]
        r.start(wait_ready=False)
        try:
            wait_until(lambda: cp.requests(), 30, interval=0.2, what="ADS request")
            assert r.admin_get("/ready")[0] == 503
            cp.set("cds", "1", [])
            cp.set("lds", "1", [])
            wait_until(lambda: r.admin_get("/ready")[0] == 200, 30, interval=0.2,
                       what="ready")
            res = harness.curl(f"http://127.0.0.1:{health}/healthz/ready")
            assert res.status == 200 and "LIVE" in res.text()
            res = harness.curl(f"http://127.0.0.1:{health}/other")
            assert res.status == 404
            res = harness.curl(f"http://127.0.0.1:{prom}/stats/prometheus")
            assert res.status == 200
            assert re.search(r"^envoy_server_live", res.text(), re.M), res.text()[:500]
        finally:
            r.stop()
            r.check_sanitizers()
    finally:
        cp.stop()


# ---- the certificate client, the token and the root: flags and annotations ---------

def sidecar_of(doc):
    t = template_of(doc)
    for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]:
        if c["name"] == "remora-proxy":
            return t, c
    raise AssertionError("no sidecar")


def test_ca_and_xds_flags(tmp_path):
    src = os.path.join(GOLDEN, "pod.yaml")
    # a custom CA, control plane and trust domain
    t, side = sidecar_of(load_all(inject(src, "--ca-address", "ca.mesh.svc:8443",
                                         "--xds-address", "xds.mesh.svc:9443",
                                         "--trust-domain", "example.org"))[0])
    args = side["args"]
    assert args[args.index("--ca-address") + 1] == "ca.mesh.svc:8443"
    boot = json.loads(args[args.index("--config-yaml") + 1])
    xds = boot["static_resources"]["clusters"][0]
    assert xds["transport_socket"]["typed_config"]["sni"] == "xds.mesh.svc"
    assert {e["name"]: e.get("value") for e in side["env"]}["REMORA_SPIFFE_ID"] == \
        "spiffe://example.org/ns/$(POD_NAMESPACE)/sa/$(SERVICE_ACCOUNT)"
    # the token from a Secret listed in remora-cp's --ca-tokens (no TokenReview needed)
    t, side = sidecar_of(load_all(inject(src, "--ca-token-secret", "client-ca-token"))[0])
    assert t["spec"]["volumes"][1] == {"name": "remora-token", "secret": {
        "secretName": "client-ca-token", "items": [{"key": "token", "path": "remora-token"}]}}
    assert side["args"][side["args"].index("--ca-token-file") + 1] == \
        "/var/run/secrets/tokens/remora-token"
    # no certificate client: no token volume, no CA args, the root stays for xDS over TLS
    t, side = sidecar_of(load_all(inject(src, "--ca-address", "none"))[0])
    assert "--ca-address" not in side["args"]
    assert "REMORA_SPIFFE_ID" not in [e["name"] for e in side["env"]]
    assert [v["name"] for v in t["spec"]["volumes"]] == ["remora-ca-root"]
    assert [m["name"] for m in side["volumeMounts"]] == ["remora-ca-root"]
    # cleartext xDS and no CA: nothing mounted, the pod spec gets no volumes
    out = inject(src, "--ca-address", "none", "--xds-plaintext", "--control-plane",
                 "remora-cp.remora-system.svc:15010")
    t, side = sidecar_of(load_all(out)[0])
    assert "volumes" not in t["spec"] and "volumeMounts" not in side
    boot = json.loads(side["args"][side["args"].index("--config-yaml") + 1])
    assert "transport_socket" not in boot["static_resources"]["clusters"][0]
    p = tmp_path / "plain.yaml"
    p.write_text(out)
    assert load_all(run("uninject", "-q", "-f", str(p)).stdout) == load_all(open(src).read())
    # an IP control plane: the SAN to match is an IP, no SNI
    boot = yaml.safe_load(run("inject", "--print-bootstrap", "--xds-address",
                              "10.0.0.7:15012").stdout)
    tc = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert "sni" not in tc
    assert tc["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.7"}}]
    # bad values are usage errors, for the CLI and the webhook alike
    for flag, value in (("--ca-address", "no-port"), ("--xds-address", "a b:1"),
                        ("--trust-domain", "bad/td"), ("--control-plane", "x:99999"),
                        ("--ca-token-secret", "Bad_Name")):
        p = run("inject", "-f", src, flag, value, check=False)
        assert p.returncode == 2 and flag.lstrip("-") in p.stderr, (flag, p.stderr)
    p = run("inject-webhook", "--cert", "x", "--key", "y", "--ca-address", "nope", check=False)
    assert p.returncode == 2 and "--ca-address" in p.stderr


def test_address_annotations_and_volume_clash(tmp_path):
    pod = load_all(open(os.path.join(GOLDEN, "pod.yaml")).read())[0]
    pod["metadata"]["annotations"] = {"remora.io/ca-address": "none",
                                      "remora.io/xds-address": "cp.other.svc:15012"}
    p = tmp_path / "ann.yaml"
    p.write_text(yaml.safe_dump(pod, sort_keys=False))
    t, side = sidecar_of(load_all(inject(str(p)))[0])
    assert "--ca-address" not in side["args"]
    assert "cp.other.svc" in side["args"][side["args"].index("--config-yaml") + 1]
    pod["metadata"]["annotations"] = {"remora.io/ca-token-secret": "web-token"}
    p.write_text(yaml.safe_dump(pod, sort_keys=False))
    t, side = sidecar_of(load_all(inject(str(p)))[0])
    assert t["spec"]["volumes"][1]["secret"]["secretName"] == "web-token"
    pod["metadata"]["annotations"] = {"remora.io/ca-address": "$(evil)"}
    p.write_text(yaml.safe_dump(pod, sort_keys=False))
    r = run("inject", "-f", str(p), check=False)
    assert r.returncode == 1 and 'metadata.annotations["remora.io/ca-address"]' in r.stderr
    pod["metadata"]["annotations"] = {}
    pod["spec"]["volumes"] = [{"name": "remora-token", "emptyDir": {}}]
    p.write_text(yaml.safe_dump(pod, sort_keys=False))
    r = run("inject", "-f", str(p), check=False)
    assert r.returncode == 1 and "spec.volumes" in r.stderr and "remora-token" in r.stderr


def test_existing_volumes_are_kept_and_uninject_restores_them():
    src = os.path.join(GOLDEN, "daemonset.yaml")
    t, side = sidecar_of(load_all(inject(src))[0])
    assert [v["name"] for v in t["spec"]["volumes"]] == ["cache", "remora-ca-root",
                                                        "remora-token"]
    status = json.loads(t["metadata"]["annotations"]["remora.io/status"])
    assert status["volumes"] == ["remora-ca-root", "remora-token"]
    assert "volumes" not in status["created"]


def test_injected_sidecar_gets_certificate_and_xds_over_tls(tmp_path, ports, upstream):
    """The sidecar exactly as injected (its args and env, with the kubelet's
    variable expansion done here, the mounted paths pointed at the test's files,
    the Service name resolved to 127.0.0.1 and the fixed ports moved to free
    ones) against a real remora-cp: it gets its certificate over TLS with the
    projected token, its config over ADS on the TLS port, and becomes ready.
    With the identity of another service account it refuses the certificate."""
    from test_remora_ca import ControlPlane
    cp = ControlPlane(tmp_path)
    procs = []
    try:
        lport = harness.free_port()
        lst = harness.http_listener(lport, [harness.route({"prefix": "/"}, "app")], name="web")
        (cp.dir / "config" / "mesh.json").write_text(json.dumps(
            {"clusters": [harness.static_cluster("app", upstream.port)], "listeners": [lst]}))
        root = tmp_path / "root-cert.pem"   # the remora-ca-root-cert ConfigMap
        root.write_bytes(open(cp.root_pem, "rb").read())
        token = tmp_path / "remora-token"   # the projected token
        token.write_text("tok-web-1234\n")
        t, side = sidecar_of(load_all(inject(os.path.join(GOLDEN, "pod.yaml")))[0])
        env = {"POD_NAME": "client", "POD_NAMESPACE": "prod", "INSTANCE_IP": "127.0.0.1",
               "SERVICE_ACCOUNT": "web"}
        for e in side["env"]:
            if "value" in e:
                env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        assert env["REMORA_SPIFFE_ID"] == "spiffe://cluster.local/ns/prod/sa/web"
        admin, health, prom = (harness.free_port() for _ in range(3))

        def args_for(spiffe_env):
            out = []
            for a in side["args"]:
                a = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
                a = (a.replace("/var/run/secrets/remora/root-cert.pem", str(root))
                      .replace("/var/run/secrets/tokens/remora-token", str(token))
                      .replace('"address":"remora-cp.remora-system.svc","port_value":15012',
                               f'"address":"127.0.0.1","port_value":{cp.ca_port}')
                      .replace('"port_value":15000', f'"port_value":{admin}')
                      .replace('"port_value":15021', f'"port_value":{health}')
                      .replace('"port_value":15090', f'"port_value":{prom}')
                      .replace("remora-cp.remora-system.svc:15012", f"127.0.0.1:{cp.ca_port}"))
                out.append(a)
            # the Service's DNS name is what the certificate must carry
            return out + ["--ca-server-name", "remora-cp.remora-system.svc", "--concurrency",
                          "1", "--drain-time-s", "1"], dict(os.environ, REMORA_SPIFFE_ID=spiffe_env)

        args, penv = args_for(env["REMORA_SPIFFE_ID"])
        penv = {k: v for k, v in penv.items() if not k.startswith("REMORA_") or
                k == "REMORA_SPIFFE_ID"}
        log = open(tmp_path / "sidecar.stderr", "wb")
        proc = harness.spawn([harness.remora_bin(), *args], stderr=log, env=penv)
        procs.append((proc, log))

        def ready():
            try:
                return harness.curl(f"http://127.0.0.1:{health}/healthz/ready").status == 200
            except Exception:
                return False
        wait_until(ready, 60, interval=0.2, what="the injected sidecar ready")
        assert harness.curl(f"http://127.0.0.1:{lport}/via-injected").status == 200
        stats = harness.parse_stats_text(harness.curl(f"http://127.0.0.1:{admin}/stats").text())
        assert stats["remora.ca_client.certs_installed"] == 1
        assert stats["remora.ca_client.ssl.handshake"] >= 1
        assert stats["cluster.xds-grpc.ssl.handshake"] >= 1
        assert "issued spiffe://cluster.local/ns/prod/sa/web" in cp.log()
        # the root from the "ConfigMap" is what the xDS and CA connections trust
        certs = json.loads(harness.curl(f"http://127.0.0.1:{admin}/certs").text())
        assert [c["path"] for cert in certs["certificates"] for c in cert["ca_cert"]] == \
            [str(root)] * 2, certs
        harness.stop_process(proc)

        # the token maps to sa/web but the pod expects sa/other: refused
        args, penv = args_for("spiffe://cluster.local/ns/prod/sa/other")
        log2 = open(tmp_path / "sidecar2.stderr", "wb")
        proc2 = harness.spawn([harness.remora_bin(), *args], stderr=log2, env=penv)
        procs.append((proc2, log2))
        wait_until(lambda: "another identity" in open(tmp_path / "sidecar2.stderr").read(), 30,
                   what="the identity mismatch refused")
        assert not ready()
    finally:
        for p, f in procs:
            harness.stop_process(p)
            f.close()
        cp.stop()
    for name in ("sidecar.stderr", "sidecar2.stderr"):
        text = open(tmp_path / name).read()
        assert "ERROR: AddressSanitizer" not in text and "runtime error" not in text, text
