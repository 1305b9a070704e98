"""remora-cp's certificate authority and Remora's certificate client.

A real remora-cp (build/asan/remora-cp, --ca-tokens/--ca-dir) signs the
workload certificates of real Remora sidecars (--ca-address/--ca-token-file):
each sidecar generates its key, sends a CSR with its bearer token, installs
the chain as the SDS secret `default` and the trust bundle as `ROOTCA`.
Checked with openssl s_client / Python ssl against the root the CA wrote to
its --ca-dir, and with two chained sidecars talking mTLS (test_rbac.py's
pattern).

With the CA, remora-cp's CA port serves TLS (istiod's 15012) with a serving
certificate its own CA issued for the Service's DNS names; sidecars verify it
against the root (--ca-root-cert) for CreateCertificate, and an xDS bootstrap
whose ADS cluster has an UpstreamTlsContext gets its config over the same port.
The xDS port stays cleartext."""

import json
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

import harness
from harness import (bootstrap, curl, hcm, route, route_config, sockaddr, static_cluster,
                     virtual_host, wait_until)
from cp_common import CP_NAME, CpProcess, ads_bootstrap, cp_bin, xds_tls_socket
from test_tls import DOWNSTREAM, UPSTREAM

TD = "cluster.local"
SERVER_ID = f"spiffe://{TD}/ns/prod/sa/web"
CLIENT_ID = f"spiffe://{TD}/ns/prod/sa/curl"
TOKENS = {"tok-web-1234": ("prod", "web"), "tok-curl-5678": ("prod", "curl")}
DEFAULT_SANS = ["remora-cp", "remora-cp.remora-system", "remora-cp.remora-system.svc",
                "remora-cp.remora-system.svc.cluster.local"]


class ControlPlane(CpProcess):
    def __init__(self, tmp_path, extra=()):
        self.dir = tmp_path / "cp"
        (self.dir / "config").mkdir(parents=True)
        self.ca_dir = self.dir / "ca"
        tok = self.dir / "tokens.yaml"
        tok.write_text("tokens:\n" + "".join(
            f"  {t}: {{namespace: {ns}, service_account: {sa}}}\n"
            for t, (ns, sa) in TOKENS.items()))
        self.grpc_port, self.ca_port, self.admin_port = (harness.free_port() for _ in range(3))
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
        env.pop("POD_NAMESPACE", None)   # the default serving SANs use remora-system
        self._spawn(["--config-dir", str(self.dir / "config"),
                     "--address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                     "--ca-port", str(self.ca_port), "--admin-port", str(self.admin_port),
                     "--ca-tokens", str(tok), "--ca-dir", str(self.ca_dir), *extra],
                    self.dir / "cp.stderr", env=env)
        self.root_pem = str(self.ca_dir / "root-cert.pem")


@pytest.fixture
def cp(tmp_path):
    c = ControlPlane(tmp_path)
    yield c
    c.stop()


def sds(name):
    # Istio's bootstrap shape; the secret is served in-process by the CA client
    return {"name": name, "sds_config": {"api_config_source": {
        "api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]}}}


def mesh_common(alpn):
    return {"alpn_protocols": list(alpn), "tls_certificate_sds_secret_configs": [sds("default")],
            "validation_context_sds_secret_config": sds("ROOTCA")}


def inbound_listener(port, cluster, require_client_cert=True):
    rc = route_config([virtual_host([route({"prefix": "/"}, cluster)])])
    tc = {"@type": DOWNSTREAM, "common_tls_context": mesh_common(("http/1.1",)),
          "require_client_certificate": require_client_cert}
    return {"name": "inbound", "address": sockaddr(port), "filter_chains": [{
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tc},
        "filters": [hcm(rc, stat_prefix="ingress", forward_client_cert_details="SANITIZE_SET",
                        set_current_client_cert_details={"uri": True})]}]}


def ca_args(cp, token_file, ttl=None, root=None, name=CP_NAME):
    """The CA over TLS, as an injected sidecar reaches it: verified against the
    root, the serving certificate must name the Service (no DNS here: the
    address is 127.0.0.1 and --ca-server-name says which name to expect)."""
    a = ["--ca-address", f"127.0.0.1:{cp.ca_port}", "--ca-token-file", str(token_file),
         "--ca-root-cert", str(root or cp.root_pem), "--ca-server-name", name]
    if ttl:
        a += ["--cert-ttl", ttl]
    return a


def token_file(tmp_path, name, token):
    p = tmp_path / f"{name}.token"
    p.write_text(token + "\n")
    return p


def server_sidecar(remora, tmp_path, cp, upstream, ports, ttl=None, require_client_cert=True):
    admin, port = ports.get(), ports.get()
    r = remora(bootstrap(admin, [inbound_listener(port, "app", require_client_cert)],
                         [static_cluster("app", upstream.port)]), name="server-sidecar",
               extra_args=ca_args(cp, token_file(tmp_path, "web", "tok-web-1234"), ttl))
    return r, port


def client_sidecar(remora, tmp_path, cp, s_port, ports):
    admin, port = ports.get(), ports.get()
    rc = route_config([virtual_host([route({"prefix": "/"}, "server")])])
    out = {"name": "out", "address": sockaddr(port),
           "filter_chains": [{"filters": [hcm(rc, stat_prefix="egress")]}]}
    ts = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UPSTREAM, "sni": "web.prod", "common_tls_context": mesh_common(("http/1.1",))}}
    r = remora(bootstrap(admin, [out], [static_cluster("server", s_port, transport_socket=ts)]),
               name="client-sidecar",
               extra_args=ca_args(cp, token_file(tmp_path, "curl", "tok-curl-5678")))
    return r, port


def s_client_cert(port):
    """The server certificate openssl s_client sees (PEM) and its text dump."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts"],
                       input=b"", capture_output=True, timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert m, out + p.stderr.decode("utf-8", "replace")
    pem = m.group(0) + "\n"
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-serial"], input=pem.encode(),
                          capture_output=True, timeout=10, check=True).stdout.decode()
    return pem, text


def test_sidecars_get_spiffe_certificates_and_talk_mtls(remora, upstream, ports, cp, tmp_path):
    server, s_port = server_sidecar(remora, tmp_path, cp, upstream, ports)
    client, c_port = client_sidecar(remora, tmp_path, cp, s_port, ports)

    # the server's certificate as a TLS client sees it: SPIFFE URI SAN, issued by the cp's root
    pem, text = s_client_cert(s_port)
    assert f"URI:{SERVER_ID}" in text, text
    assert "DNS:" not in text, text
    root_text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", cp.root_pem],
                               capture_output=True, check=True, timeout=10).stdout.decode()
    root_subject = root_text.split("=", 1)[1].strip()
    assert re.search(r"Issuer: *" + re.escape(root_subject), text), (text, root_subject)
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(pem)
    v = subprocess.run(["openssl", "verify", "-CAfile", cp.root_pem, str(leaf)],
                       capture_output=True, timeout=10)
    assert v.returncode == 0, v

    # mTLS between the sidecars, trust from ROOTCA; the server sees the client's identity
    for i in range(3):
        res = curl(f"http://127.0.0.1:{c_port}/hop/{i}")
        assert res.status == 200, res
        got = json.loads(res.body)
        assert got["path"] == f"/hop/{i}"
        assert f"URI={CLIENT_ID}" in got["headers"]["x-forwarded-client-cert"], got
    assert client.stat("cluster.server.ssl.handshake") >= 1
    # /certs shows the installed identity (Envoy's shape)
    certs = json.loads(server.admin_get("/certs")[2])["certificates"]
    chains = [ch for c in certs for ch in c.get("cert_chain", [])]
    assert chains and all(ch["subject_alt_names"] == [{"uri": SERVER_ID}] for ch in chains), certs
    prom = server.admin_get("/stats/prometheus")[2].decode()
    assert re.search(r"^envoy_remora_ca_client_certs_installed(\{\})? 1$", prom, re.M), prom
    assert server.stat(f"listener.127.0.0.1_{s_port}.ssl.handshake") >= 1
    for r in (server, client):
        assert r.stat("remora.ca_client.cert_requests") >= 1
        assert r.stat("remora.ca_client.certs_installed") >= 1
        assert r.stat("remora.ca_client.cert_request_failures") == 0
        # default lifetime 24 h
        assert 23 * 3600 < r.stat("remora.ca_client.cert_expiry_seconds") <= 24 * 3600
    m = cp.metrics()
    assert m["remora_cp_ca_certs_issued_total"] >= 2, m
    # the trust bundle is also offered to every node over SDS (ADS)
    res = curl(f"http://127.0.0.1:{cp.admin_port}/v3/discovery:secrets", "-X", "POST",
               "-d", json.dumps({"node": {"id": "n1", "cluster": "c1"},
                                 "resource_names": ["ROOTCA"]}))
    assert res.status == 200, res
    body = json.loads(res.body)
    ca_pem = body["resources"][0]["validation_context"]["trusted_ca"]["inline_string"]
    with open(cp.root_pem) as f:
        assert ca_pem == f.read()


def test_short_ttl_rotates_while_existing_connection_keeps_working(remora, upstream, ports, cp,
                                                                   tmp_path):
    server, s_port = server_sidecar(remora, tmp_path, cp, upstream, ports, ttl="6s",
                                    require_client_cert=False)
    ctx = ssl.create_default_context(cafile=cp.root_pem)
    ctx.check_hostname = False   # the identity is the URI SAN, no DNS name

    def new_conn():
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", s_port), timeout=10))
        return s, s.getpeercert()["serialNumber"].lower()

    def get(s, path):
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: web\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            assert d, "connection closed"
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        n = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
        while len(rest) < n:
            d = s.recv(65536)
            assert d, "connection closed"
            rest += d
        return int(head.split()[1])

    conn, first = new_conn()
    assert get(conn, "/a") == 200
    # a new client sees a new serial once the sidecar renewed (at half-life, ~3 s)
    seen = wait_until(lambda: (lambda s: s[1] if s[1] != first else s[0].close())(new_conn()),
                      30, interval=0.5, what="a renewed certificate")
    assert seen != first
    # the first connection still works, with the certificate it started with
    assert get(conn, "/b") == 200
    assert conn.getpeercert()["serialNumber"].lower() == first
    conn.close()
    assert server.stat("remora.ca_client.certs_installed") >= 2
    assert server.stat("remora.ca_client.cert_expiry_seconds") <= 6
    assert server.stat("sds.default.update_success") >= 2


def test_wrong_token_no_certificate_not_ready_then_recovers(remora, upstream, ports, cp,
                                                            tmp_path):
    admin, port = ports.get(), ports.get()
    tok = token_file(tmp_path, "bad", "not-a-valid-token")
    r = remora(bootstrap(admin, [inbound_listener(port, "app")],
                         [static_cluster("app", upstream.port)]), name="bad-token",
               wait_ready=False, extra_args=ca_args(cp, tok))
    wait_until(lambda: r.stat("remora.ca_client.cert_request_failures") >= 2, 30,
               what="two failed certificate requests")
    st, _, _ = r.admin_request("GET", "/ready")
    assert st == 503
    assert r.stat("remora.ca_client.certs_installed") == 0
    assert cp.metrics()["remora_cp_ca_unauthenticated_total"] >= 2
    # the workers (and so every listener) wait for the certificate: INITIALIZING
    assert r.stat("server.state") in (2, 3)   # PRE_INITIALIZING / INITIALIZING, not LIVE
    assert r.stat("server.live") == 0
    # the token file is re-read at each request: fixing it recovers (bounded backoff)
    tok.write_text("tok-web-1234\n")
    r.wait_ready(timeout=60)
    assert r.stat("remora.ca_client.certs_installed") == 1
    _, text = s_client_cert(port)
    assert f"URI:{SERVER_ID}" in text, text


def test_remora_ca_option_errors(tmp_path, ports):
    admin = ports.get()
    cfg = tmp_path / "b.yaml"
    import yaml
    cfg.write_text(yaml.safe_dump(bootstrap(admin, [], [])))

    def run(*args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([harness.remora_bin(), "-c", str(cfg), "--mode", "validate", *args],
                           capture_output=True, timeout=30, env=e)
        return p.returncode, p.stderr.decode()

    rc, err = run("--ca-address", "127.0.0.1:1")
    assert rc != 0 and "--ca-token-file" in err, err
    rc, err = run("--ca-address", "nope", "--ca-token-file", "/x")
    assert rc != 0 and "not host:port" in err, err
    rc, err = run("--cert-ttl", "soon")
    assert rc != 0 and "--cert-ttl" in err, err
    rc, err = run(env={"REMORA_CERT_TTL": "1h"})
    assert rc != 0 and "need --ca-address" in err, err
    rc, err = run(env={"REMORA_CA_ADDRESS": "127.0.0.1:1", "REMORA_CA_TOKEN_FILE": "/x"})
    assert rc == 0, err
    # an SDS secret name that no provider serves still needs ADS
    lst = inbound_listener(ports.get(), "app")
    cfg.write_text(yaml.safe_dump(bootstrap(admin, [lst], [static_cluster("app", 1)])))
    rc, err = run()
    assert rc != 0 and "sds_config" in err, err
    rc, err = run("--ca-address", "127.0.0.1:1", "--ca-token-file", "/x")
    assert rc == 0, err


def test_xds_listener_from_cp_warms_until_certificate(remora, upstream, ports, cp, tmp_path):
    """The deployment path: listeners and clusters come from remora-cp over ADS and name the
    secrets `default` / `ROOTCA`; the certificate client provides them in-process (they are
    never subscribed over ADS); the listener serves the CA-issued identity."""
    from test_remora_cp import bootstrap as ads_bootstrap
    port = ports.get()
    lst = inbound_listener(port, "app", require_client_cert=False)
    for s in lst["filter_chains"][0]["transport_socket"]["typed_config"][
            "common_tls_context"]["tls_certificate_sds_secret_configs"]:
        s["sds_config"] = {"ads": {}, "resource_api_version": "V3"}
    (cp.dir / "config" / "mesh.json").write_text(json.dumps(
        {"clusters": [static_cluster("app", upstream.port)], "listeners": [lst]}))
    wait_until(lambda: '"inbound"' in curl(
        f"http://127.0.0.1:{cp.admin_port}/v3/discovery:listeners", "-X", "POST", "-d",
        json.dumps({"node": {"id": "x", "cluster": "y"}})).body.decode(), 10,
        what="remora-cp to load the listener")
    r = remora(ads_bootstrap(ports.get(), cp), name="ads-sidecar",
               extra_args=ca_args(cp, token_file(tmp_path, "web", "tok-web-1234")))
    _, text = s_client_cert(port)
    assert f"URI:{SERVER_ID}" in text, text
    ctx = ssl.create_default_context(cafile=cp.root_pem)
    ctx.check_hostname = False
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
        s.sendall(b"GET /via-xds HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert upstream.requests[-1]["path"] == "/via-xds"
    # the in-process secrets were not asked for over ADS
    dbg = json.loads(curl(f"http://127.0.0.1:{cp.admin_port}/debug/config").body)
    assert len(dbg["proxies"]) == 1 and "inbound" in dbg["proxies"][0]["types"]["listeners"][
        "resources"], dbg
    sent = dbg["proxies"][0]["types"].get("secrets", {}).get("resources", [])
    assert "default" not in sent and "ROOTCA" not in sent, dbg
    assert r.stat("remora.ca_client.certs_installed") == 1


# ---- TLS on the CA port (istiod's 15012) ------------------------------------------------

def read_log(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_ca_port_serves_tls_with_a_certificate_from_its_own_ca(cp, tmp_path):
    """openssl s_client verifies the CA port's certificate against the root the CA
    wrote, for the Service's names; ALPN h2; a cleartext client is refused and
    counted; the xDS port stays cleartext."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{cp.ca_port}",
                        "-CAfile", cp.root_pem, "-verify_hostname", CP_NAME, "-alpn", "h2",
                        "-verify_return_error", "-showcerts"],
                       input=b"", capture_output=True, timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    assert "Verify return code: 0 (ok)" in out, out + p.stderr.decode()
    assert "ALPN protocol: h2" in out, out
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S).group(0)
    text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem.encode(),
                          capture_output=True, timeout=10, check=True).stdout.decode()
    sans = re.search(r"X509v3 Subject Alternative Name:.*?\n\s*(.*)\n", text).group(1)
    assert [s.strip() for s in sans.split(",")] == [f"DNS:{n}" for n in DEFAULT_SANS], sans
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text, text
    # a name it does not carry fails verification
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{cp.ca_port}",
                        "-CAfile", cp.root_pem, "-verify_hostname", "evil.example",
                        "-verify_return_error"], input=b"", capture_output=True, timeout=20)
    assert p.returncode != 0
    before = cp.metrics()["remora_cp_tls_handshake_errors_total"]
    # an h2c (cleartext) client on the TLS port: refused, logged, counted
    with socket.create_connection(("127.0.0.1", cp.ca_port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 9)
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    wait_until(lambda: cp.metrics()["remora_cp_tls_handshake_errors_total"] > before, 10,
               what="the handshake error counted")
    assert re.search(r"remora-cp: TLS handshake with 127\.0\.0\.1:\d+ failed", cp.log()), cp.log()
    m = cp.metrics()
    assert m["remora_cp_tls_handshakes_total"] >= 1
    assert 29 * 86400 < m["remora_cp_serving_cert_expiry_seconds"] <= 30 * 86400, m
    # the xDS port is cleartext gRPC as before (a gRPC health check over h2c)
    from test_remora_cp import health
    assert health(cp.grpc_port) == 1   # SERVING
    # and a real gRPC client (grpcio) speaks to the TLS port with the root
    import grpc
    creds = grpc.ssl_channel_credentials(root_certificates=open(cp.root_pem, "rb").read())
    with grpc.secure_channel(f"127.0.0.1:{cp.ca_port}", creds, options=[
            ("grpc.ssl_target_name_override", CP_NAME)]) as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check",
                              request_serializer=lambda x: x, response_deserializer=lambda x: x)
        assert call(b"", timeout=10) == b"\x08\x01"   # SERVING


def _web_sidecar(remora, upstream, ports, tmp_path, c, name, ca_extra):
    """A sidecar with the web token and an inbound listener (no client
    certificate required) that gets its certificate from c's CA port; ca_extra:
    more --ca-* arguments."""
    admin, port = ports.get(), ports.get()
    tok = token_file(tmp_path, "web", "tok-web-1234")
    return remora(bootstrap(admin, [inbound_listener(port, "app", False)],
                            [static_cluster("app", upstream.port)]), name=name,
                  extra_args=["--ca-address", f"127.0.0.1:{c.ca_port}", "--ca-token-file",
                              str(tok), *ca_extra])


def test_csr_over_tls_with_ip_san(remora, upstream, ports, tmp_path):
    """--serving-san with an IP: a sidecar addressing the CA by IP (no
    --ca-server-name) verifies the IP SAN."""
    c = ControlPlane(tmp_path, extra=["--serving-san", "localhost,127.0.0.1"])
    try:
        r = _web_sidecar(remora, upstream, ports, tmp_path, c, "ip-san",
                         ["--ca-root-cert", c.root_pem])
        assert r.stat("remora.ca_client.certs_installed") == 1
        assert r.stat("remora.ca_client.ssl.handshake") >= 1
        assert r.stat("remora.ca_client.ssl.fail_verify_san") == 0
        assert "over TLS" in read_log(r.stderr_path)
    finally:
        c.stop()


def test_csr_over_tls_wrong_root_or_name_is_refused(remora, upstream, ports, cp, tmp_path):
    """A sidecar that trusts another root does not talk to the CA: no token is
    sent, a clear log line on both sides, counters, not ready.  A wrong expected
    name fails the SAN check the same way."""
    other = tmp_path / "other-ca"
    p = subprocess.run([cp_bin(), "--ca-init", "--ca-dir", str(other)], capture_output=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == [f"{other}/root-cert.pem", f"{other}/root-key.pem"]
    issued = cp.metrics()["remora_cp_ca_requests_total"]
    admin, port = ports.get(), ports.get()
    tok = token_file(tmp_path, "web", "tok-web-1234")
    r = remora(bootstrap(admin, [inbound_listener(port, "app")],
                         [static_cluster("app", upstream.port)]), name="wrong-root",
               wait_ready=False, extra_args=ca_args(cp, tok, root=other / "root-cert.pem"))
    wait_until(lambda: r.stat("remora.ca_client.ssl.fail_verify_error") >= 2, 30,
               what="two refused handshakes")
    assert r.stat("remora.ca_client.cert_request_failures") >= 2
    assert r.stat("remora.ca_client.certs_installed") == 0
    assert r.stat("remora.ca_client.ssl.handshake") == 0
    assert r.admin_request("GET", "/ready")[0] == 503
    log = read_log(r.stderr_path)
    assert re.search(r"tls: remora\.ca_client: peer 127\.0\.0\.1:\d+: certificate verification "
                     r"failed: unable to get local issuer certificate", log), log
    assert "certificate request to 127.0.0.1" in log and "TLS handshake failed" in log, log
    # the CA never saw a request (the token stayed in the sidecar)
    assert cp.metrics()["remora_cp_ca_requests_total"] == issued
    wait_until(lambda: "TLS handshake with" in cp.log(), 10, what="remora-cp's log line")
    assert cp.metrics()["remora_cp_tls_handshake_errors_total"] >= 1
    r.stop()

    # the right root but the wrong expected name: SAN check fails
    r2 = remora(bootstrap(ports.get(), [], []), name="wrong-name", wait_ready=False,
                extra_args=ca_args(cp, tok, name="istiod.istio-system.svc"))
    wait_until(lambda: r2.stat("remora.ca_client.ssl.fail_verify_san") >= 1, 30,
               what="a SAN mismatch")
    assert r2.stat("remora.ca_client.certs_installed") == 0
    assert "no subject alt name matches" in read_log(r2.stderr_path)


def test_plaintext_ca_port_option(remora, upstream, ports, tmp_path):
    """--plaintext-ca-port keeps the CA port cleartext (h2c, no --ca-root-cert)."""
    c = ControlPlane(tmp_path, extra=["--plaintext-ca-port"])
    try:
        r = _web_sidecar(remora, upstream, ports, tmp_path, c, "h2c-ca", [])
        assert r.stat("remora.ca_client.certs_installed") == 1
        assert "cleartext h2c" in read_log(r.stderr_path)
        assert "remora_cp_tls_handshakes_total" not in c.metrics()
    finally:
        c.stop()


def tls_ads_bootstrap(admin, cp, root, name=CP_NAME):
    """Istio's xds-grpc cluster shape: ADS to the CA port over TLS, trusting the
    mounted root, the control plane's certificate must carry `name`."""
    return ads_bootstrap(admin, "127.0.0.1", cp.ca_port, transport_socket=xds_tls_socket(root, name))


def test_xds_bootstrap_over_tls_to_the_ca_port(remora, upstream, ports, cp, tmp_path):
    """An xDS bootstrap whose ADS cluster uses TLS to the CA port gets its
    listeners and clusters (and serves them); with the wrong root it gets
    nothing and says why."""
    lport = ports.get()
    lst = harness.http_listener(lport, [route({"prefix": "/"}, "app")], name="web")
    (cp.dir / "config" / "mesh.json").write_text(json.dumps(
        {"clusters": [static_cluster("app", upstream.port)], "listeners": [lst]}))
    r = remora(tls_ads_bootstrap(ports.get(), cp, cp.root_pem), name="ads-tls")
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/over-tls").status == 200, 20,
               what="the listener from ADS over TLS")
    assert upstream.requests[-1]["path"] == "/over-tls"
    assert r.stat("cluster.xds_cluster.ssl.handshake") >= 1
    assert r.stat("cluster.xds_cluster.ssl.versions.TLSv1.3") >= 1
    assert cp.metrics()["remora_cp_tls_handshakes_total"] >= 1
    dbg = json.loads(curl(f"http://127.0.0.1:{cp.admin_port}/debug/config").body)
    assert any("web" in p["types"]["listeners"]["resources"] for p in dbg["proxies"]), dbg

    other = tmp_path / "other-ca"
    subprocess.run([cp_bin(), "--ca-init", "--ca-dir", str(other)], check=True,
                   capture_output=True, timeout=30)
    bad = remora(tls_ads_bootstrap(ports.get(), cp, other / "root-cert.pem"), name="ads-bad",
                 wait_ready=False)
    wait_until(lambda: bad.stat("cluster.xds_cluster.ssl.fail_verify_error") >= 1, 30,
               what="the ADS handshake refused")
    assert bad.admin_request("GET", "/ready")[0] == 503
    assert re.search(r"tls: cluster\.xds_cluster: peer 127\.0\.0\.1:\d+: certificate "
                     r"verification failed", read_log(bad.stderr_path)), read_log(bad.stderr_path)
