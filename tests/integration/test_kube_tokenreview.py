"""remora-cp's CA authenticates workloads with a Kubernetes TokenReview.

The API server here is a STAND-IN (tests/integration/kube_standin.py): no
kube-apiserver can be installed on this machine (Debian has only the kubectl
client, no other registry is reachable), so a small Python HTTPS server
implements the one endpoint remora-cp uses, TokenReview create, answering as
the real server does (201 + status.authenticated/user/audiences, or an
`error` string; 401 for a bad caller token; 403 without RBAC).  Every request
remora-cp sent and every answer the stand-in gave is validated at the end of
each test against the Kubernetes schemas of the npm package kubernetes-models
(tests/k8s/validate.mjs), so neither side is checked only against the other.

Checked: a real Remora sidecar with --ca-token-file holding a projected-style
token (audience remora-ca) gets a certificate for
spiffe://cluster.local/ns/<ns>/sa/<sa> taken from the review; a repeated
request is served from the review cache; wrong audience, expired, unknown and
non-service-account tokens are refused (UNAUTHENTICATED, the API server's
reason, remora_cp_ca_token_review_denied_total); the API server down, its
certificate not from ca.crt, 401 and 403 to remora-cp's own credentials give
UNAVAILABLE with a clear log line and remora_cp_ca_token_review_failed_total
by reason; a rotation of remora-cp's own token file is used for the next
review; the tokens file still works beside it."""

import json
import os
import re
import subprocess

import pytest

import harness
from harness import bootstrap, curl, wait_until
from cp_common import CpProcess, cp_bin
from kube_standin import KubeStandin
from test_inject import validate
from test_k8s_cp import csr_request, kubelet_write

TD = "cluster.local"


class CP(CpProcess):
    """remora-cp with its CA reviewing tokens at the stand-in."""

    def __init__(self, tmp_path, api, own_token="cp-token-1", extra=(), sa_dir=None):
        self.dir = tmp_path / "cp"
        (self.dir / "config").mkdir(parents=True, exist_ok=True)
        self.sa_dir = sa_dir or (self.dir / "serviceaccount")
        if not sa_dir:   # the kubelet's service-account volume
            kubelet_write(str(self.sa_dir), {"token": own_token + "\n",
                                             "ca.crt": open(api.ca_pem).read(),
                                             "namespace": "remora-system"})
        self.grpc_port, self.ca_port, self.admin_port = (harness.free_port() for _ in range(3))
        env = dict(os.environ)
        env.pop("POD_NAMESPACE", None)
        for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            env.pop(k, None)
        self._spawn(["--config-dir", str(self.dir / "config"),
                     "--address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                     "--ca-port", str(self.ca_port), "--admin-port", str(self.admin_port),
                     "--ca-dir", str(self.dir / "ca"), "--plaintext-ca-port",
                     "--kube-api", api.url,
                     "--kube-token-file", str(self.sa_dir / "token"),
                     "--kube-ca-file", str(self.sa_dir / "ca.crt"), *extra],
                    self.dir / "cp.stderr", env=env)
        self.root_pem = str(self.dir / "ca" / "root-cert.pem")

    def create(self, token):
        """CreateCertificate with grpcio (cleartext CA port): (code name, details)."""
        import grpc
        with grpc.insecure_channel(f"127.0.0.1:{self.ca_port}") as ch:
            call = ch.unary_unary("/istio.v1.auth.IstioCertificateService/CreateCertificate",
                                  request_serializer=lambda x: x,
                                  response_deserializer=lambda x: x)
            try:
                resp = call(csr_request(), timeout=15,
                            metadata=[("authorization", f"Bearer {token}")])
                return "OK", leaf_uri(resp)
            except grpc.RpcError as e:
                return e.code().name, e.details()



def leaf_uri(resp):
    """The URI SAN of the first certificate of an IstioCertificateResponse."""
    m = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", resp, re.S)
    assert m, resp[:200]
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"],
                          input=m.group(0) + b"\n", capture_output=True, timeout=10,
                          check=True).stdout.decode()
    return re.search(r"URI:(\S+)", text).group(1)


@pytest.fixture
def api(tmp_path):
    a = KubeStandin(tmp_path / "kube")
    a.add_caller("cp-token-1")
    yield a
    a.stop()
    # every body both ways against the Kubernetes schemas
    f = tmp_path / "kube-bodies.yaml"
    n = a.write_bodies(f)
    assert not a.problems, a.problems
    if n:
        v = validate([str(f)])
        assert v.returncode == 0 and v.stdout.strip().endswith("0 problem(s)"), v.stdout


@pytest.fixture
def make_cp(tmp_path):
    cps = []

    def make(api, **kw):
        c = CP(tmp_path, api, **kw)
        cps.append(c)
        return c
    yield make
    for c in cps:
        c.stop()


def test_sidecar_gets_certificate_for_its_reviewed_service_account(api, make_cp, remora,
                                                                   tmp_path):
    cp = make_cp(api)
    tok = api.issue("shop", "frontend")
    tf = tmp_path / "remora-token"
    tf.write_text(tok)
    spiffe = f"spiffe://{TD}/ns/shop/sa/frontend"
    admin = harness.free_port()
    r = remora(bootstrap(admin), name="sidecar", wait_ready=False,
               extra_args=["--ca-address", f"127.0.0.1:{cp.ca_port}", "--ca-token-file", str(tf),
                     "--spiffe-id", spiffe])
    wait_until(lambda: r.stat("remora.ca_client.certs_installed") >= 1, 30,
               what="the sidecar's certificate")
    # the sidecar installs a leaf only if it carries --spiffe-id; remora-cp says what it signed
    assert r.stat("remora.ca_client.cert_request_failures") == 0
    assert f"issued {spiffe}" in cp.log()
    # remora-cp asked the API server, with its own bearer, for audience remora-ca
    assert ("cp-token-1", tok, ["remora-ca"]) in api.requests
    m = cp.metrics()
    assert m["remora_cp_ca_token_review_total"] >= 1
    assert m["remora_cp_ca_certs_issued_total"] >= 1
    assert m["remora_cp_ca_token_review_denied_total"] == 0
    # the same token again: from the review cache, no second review
    reviews = len(api.requests)
    assert cp.create(tok) == ("OK", spiffe)
    assert len(api.requests) == reviews
    assert cp.metrics()["remora_cp_ca_token_review_cache_hits_total"] >= 1
    # another service account's token: its own identity
    other = api.issue("shop", "backend")
    assert cp.create(other) == ("OK", f"spiffe://{TD}/ns/shop/sa/backend")
    assert "(in-cluster)" not in cp.log() and api.url in cp.log()


def test_refused_tokens(api, make_cp, remora, tmp_path):
    cp = make_cp(api)
    cases = {
        "wrong audience": (api.issue("shop", "frontend", aud=("api",)),
                           "is invalid for the target audiences"),
        "expired": (api.issue("shop", "frontend", ttl=-10), "has expired"),
        "unknown": (api.issue("shop", "frontend")[:-4] + "AAAA", "invalid bearer token"),
        "not a service account": (api.issue("shop", "x", user="alice"),
                                  "is not a service account"),
    }
    for what, (tok, why) in cases.items():
        code, details = cp.create(tok)
        assert code == "UNAUTHENTICATED", (what, code, details)
        assert why in details, (what, details)
    m = cp.metrics()
    assert m["remora_cp_ca_token_review_denied_total"] == len(cases), m
    assert m["remora_cp_ca_unauthenticated_total"] == len(cases), m
    assert m["remora_cp_ca_certs_issued_total"] == 0, m
    # a refused token is not cached: every attempt is reviewed again
    n = len(api.requests)
    assert cp.create(cases["expired"][0])[0] == "UNAUTHENTICATED"
    assert len(api.requests) == n + 1
    # a sidecar with the wrong-audience token gets no certificate and stays unready
    tf = tmp_path / "remora-token"
    tf.write_text(cases["wrong audience"][0])
    admin = harness.free_port()
    r = remora(bootstrap(admin), name="sidecar", wait_ready=False,
               extra_args=["--ca-address", f"127.0.0.1:{cp.ca_port}", "--ca-token-file", str(tf)])
    wait_until(lambda: r.stat("remora.ca_client.cert_request_failures") >= 1, 30,
               what="the refused request")
    assert r.stat("remora.ca_client.certs_installed") == 0
    assert curl(f"http://127.0.0.1:{admin}/ready").status == 503


def test_api_server_down_and_untrusted(api, make_cp, tmp_path):
    cp = make_cp(api, extra=["--token-review-cache-ttl", "0"])
    tok = api.issue("shop", "frontend")
    assert cp.create(tok)[0] == "OK"
    port = api.port
    api.stop()
    code, details = cp.create(tok)   # not cached (--token-review-cache-ttl 0)
    assert code == "UNAVAILABLE", (code, details)
    assert "cannot reach the API server" in details, details
    assert "cannot reach the API server" in cp.log()
    m = cp.metrics()
    assert m['remora_cp_ca_token_review_failed_total{reason="unreachable"}'] >= 1, m
    assert m["remora_cp_ca_unavailable_total"] >= 1, m
    # back on the same port: served again
    api.port = port
    api.start()
    wait_until(lambda: cp.create(tok)[0] == "OK", 20, interval=0.3, what="recovery")
    # a server whose certificate is not from the cluster CA (ca.crt) is not trusted
    bad = KubeStandin(tmp_path / "kube-bad", cert_ca="other-ca")
    bad.add_caller("cp-token-1")
    bad.tokens = api.tokens
    try:
        cp2 = CP(tmp_path / "two", bad, sa_dir=cp.sa_dir)   # ca.crt of the first stand-in
        code, details = cp2.create(tok)
        assert code == "UNAVAILABLE" and "does not verify" in details, (code, details)
        assert not bad.requests   # nothing was sent to it
        cp2.stop()
    finally:
        bad.stop()


def test_remora_cp_own_credentials_refused_then_rotated(api, make_cp, tmp_path):
    cp = make_cp(api, own_token="cp-token-old")   # not known to the API server: 401
    tok = api.issue("shop", "frontend")
    code, details = cp.create(tok)
    assert code == "UNAVAILABLE", (code, details)
    assert "refused remora-cp's own credentials (401 Unauthorized" in details, details
    assert "refused remora-cp's own credentials" in cp.log()
    assert cp.metrics()['remora_cp_ca_token_review_failed_total{reason="unauthorized"}'] == 1
    # the kubelet rotates the token file (..data swap): the next review uses it
    api.add_caller("cp-token-2")
    kubelet_write(str(cp.sa_dir), {"token": "cp-token-2\n", "ca.crt": open(api.ca_pem).read(),
                                   "namespace": "remora-system"})
    assert cp.create(tok)[0] == "OK"
    assert api.requests[-1][0] == "cp-token-2"
    assert "changed: using the new one" in cp.log()
    # RBAC taken away: 403, a clear reason
    api.add_caller("cp-token-2", rbac=False)
    code, details = cp.create(api.issue("shop", "backend"))
    assert code == "UNAVAILABLE" and "403 Forbidden" in details, (code, details)
    assert "may not create tokenreviews (bind it to system:auth-delegator)" in details
    assert 'cannot create resource "tokenreviews"' in cp.log()   # the API server's Status
    assert cp.metrics()['remora_cp_ca_token_review_failed_total{reason="forbidden"}'] == 1


def test_tokens_file_still_accepted_beside_the_api(api, make_cp, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  listed-1: {namespace: legacy, service_account: app}\n")
    cp = make_cp(api, extra=["--ca-tokens", str(tokens)])
    assert cp.create("listed-1") == ("OK", f"spiffe://{TD}/ns/legacy/sa/app")
    assert not api.requests   # no review for a listed token
    assert cp.create(api.issue("shop", "frontend"))[1] == f"spiffe://{TD}/ns/shop/sa/frontend"


def test_slow_review_blocks_nothing_and_abandoned_calls_are_cancelled(api, make_cp, tmp_path):
    import grpc
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  listed-1: {namespace: legacy, service_account: app}\n")
    cp = make_cp(api, extra=["--ca-tokens", str(tokens), "--token-review-cache-ttl", "0",
                             "--kube-api-timeout", "60s"])
    api.delay_s = 4
    slow = api.issue("shop", "frontend")
    reqs = [csr_request() for _ in range(3)]   # openssl runs before anything is timed
    ch = grpc.insecure_channel(f"127.0.0.1:{cp.ca_port}")
    call = ch.unary_unary("/istio.v1.auth.IstioCertificateService/CreateCertificate",
                          request_serializer=lambda x: x, response_deserializer=lambda x: x)
    fut = call.future(reqs[0], timeout=60, metadata=[("authorization", f"Bearer {slow}")])
    wait_until(lambda: api.requests, 10, what="the review to reach the API server")
    # while the review waits, the loop serves the admin port and listed tokens
    assert curl(f"http://127.0.0.1:{cp.admin_port}/ready").status in (200, 503)
    assert call(reqs[1], timeout=30, metadata=[("authorization", "Bearer listed-1")])
    assert not fut.done(), "served only after the slow review"
    assert cp.metrics()["remora_cp_ca_token_review_in_flight"] == 1
    assert fut.result(timeout=60)   # then the slow one completes
    # a caller that gives up before the answer: its review is cancelled, nothing breaks
    gone = call.future(reqs[2], timeout=1, metadata=[("authorization", f"Bearer {slow}")])
    with pytest.raises(grpc.RpcError):
        gone.result(timeout=30)
    wait_until(lambda: cp.metrics()["remora_cp_ca_token_review_in_flight"] == 0, 30,
               what="the abandoned review to finish")
    api.delay_s = 0
    assert cp.create(slow)[0] == "OK"
    ch.close()


def test_review_timeout(api, make_cp):
    cp = make_cp(api, extra=["--kube-api-timeout", "1s"])
    api.delay_s = 4   # longer than remora-cp waits
    code, details = cp.create(api.issue("shop", "frontend"))
    assert code == "UNAVAILABLE" and "cannot reach the API server" in details, (code, details)
    assert cp.metrics()['remora_cp_ca_token_review_failed_total{reason="unreachable"}'] == 1
    api.delay_s = 0


def test_schema_check_of_bodies_can_fail(tmp_path):
    """validate.mjs rejects a TokenReview and a Status of the wrong shape."""
    f = tmp_path / "bad.yaml"
    f.write_text("---\n" + json.dumps({"kind": "TokenReview",
                                       "apiVersion": "authentication.k8s.io/v1",
                                       "spec": {"token": 5, "audiences": "remora-ca"}}) +
                 "\n---\n" + json.dumps({"kind": "Status", "apiVersion": "v1",
                                         "code": "401"}) + "\n")
    v = validate([str(f)])
    assert v.returncode == 1 and v.stdout.strip().endswith("2 problem(s)"), v.stdout


def test_flags_checked(tmp_path):
    def run(*args, env=None):
        e = dict(os.environ)
        e.pop("KUBERNETES_SERVICE_HOST", None)
        e.update(env or {})
        p = subprocess.run([cp_bin(), "--config-dir", str(tmp_path), *args],
                           capture_output=True, text=True, timeout=30, env=e)
        return p.returncode, p.stderr
    rc, err = run("--ca-dir", str(tmp_path / "ca"))
    assert rc == 2 and "need --ca-tokens or the Kubernetes API" in err, err
    rc, err = run("--kube-api", "http://127.0.0.1:1")
    assert rc == 1 and "is not an https:// URL" in err, err
    rc, err = run("--kube-api", "https://127.0.0.1:1", "--no-kube-api")
    assert rc == 2 and "exclude each other" in err, err
    rc, err = run("--kube-api", "https://127.0.0.1:1", "--kube-ca-file", str(tmp_path / "nope"))
    assert rc == 1 and "cannot load the API server's CA bundle" in err, err
    rc, err = run("--kube-token-file", "/x")
    assert rc == 2 and "need the Kubernetes API" in err, err
    rc, err = run("--ca-dir", str(tmp_path / "ca"), "--token-review-cache-ttl", "soon")
    assert rc == 2 and "not a duration" in err, err
