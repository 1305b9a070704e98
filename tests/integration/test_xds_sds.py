"""SDS over ADS: TLS certificates and validation contexts from the control
plane (tests/xds/control_plane.js, official Envoy protos), plugged into the
secret store: a listener warms until its certificate arrives, a rotation
reaches new handshakes while an established connection keeps working, a bad
secret is NACKed with its field path and the previous one keeps serving, and
an upstream cluster validates its peer with an SDS validation context."""
import json
import re
import socket
import ssl
import subprocess
import time

import pytest

import tls_pki
from harness import curl, wait_until
from test_xds import (LDS, ControlPlane, cla, cp, eds_cluster, last_request, pytestmark,  # noqa: F401
                      rds_listener, ready, routes, xds_bootstrap)

SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
ADS_SRC = {"ads": {}, "resource_api_version": "V3"}


@pytest.fixture
def pki(tmp_path):
    return tls_pki.make_pki(tmp_path / "pki")


def read(path):
    with open(path) as f:
        return f.read()


def cert_secret(name, pem, key):
    return {"name": name, "tls_certificate": {"certificate_chain": {"inline_string": read(pem)},
                                              "private_key": {"inline_string": read(key)}}}


def ca_secret(name, ca):
    return {"name": name, "validation_context": {"trusted_ca": {"inline_string": read(ca)}}}


def tls_rds_listener(name, port, route, secret, src=None, fetch_timeout=None):
    lst = rds_listener(name, port, route, fetch_timeout=fetch_timeout)
    lst["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": DOWNSTREAM, "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": secret,
                                                    "sds_config": src or ADS_SRC}]}}}
    return lst


def secure_cluster(name, port, ca_secret_name, api_type="GRPC"):
    """Its CA comes over SDS on a stream of its own (api_config_source
    api_type GRPC / DELTA_GRPC: SecretDiscoveryService, as Envoy).  One request
    per upstream connection: a new validation context applies to new
    handshakes only (as Envoy: pooled connections are not drained), so every
    request here must make one, whichever worker's pool it lands in."""
    return {"name": name, "type": "STATIC", "connect_timeout": {"seconds": 1},
            "load_assignment": cla(name, [port]),
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "common_http_protocol_options": {"max_requests_per_connection": {"value": 1}},
                    "explicit_http_config": {"http_protocol_options": {}}}},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": UPSTREAM, "sni": "localhost", "common_tls_context": {
                    "validation_context_sds_secret_config": {
                        "name": ca_secret_name, "sds_config": {
                            "api_config_source": {
                                "api_type": api_type, "transport_api_version": "V3",
                                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
                            "resource_api_version": "V3"}}}}}}


def s_client_serial(port, ca):
    """A new TLS client (openssl s_client): the server certificate's serial."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", "-CAfile", ca], input=b"", capture_output=True, timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m or "Verify return code: 0" not in out:
        return None
    x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=m.group(0).encode(),
                       capture_output=True, timeout=20)
    return x.stdout.decode().strip().split("=", 1)[1].lower().lstrip("0")


class KeepAlive:
    """One TLS connection, HTTP/1.1 keep-alive requests on it."""

    def __init__(self, port, ca):
        ctx = ssl.create_default_context(cafile=ca)
        self.s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                 server_hostname="localhost")

    def serial(self):
        der = self.s.getpeercert(binary_form=True)
        p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                           capture_output=True, timeout=20)
        return p.stdout.decode().strip().split("=", 1)[1].lower().lstrip("0")

    def get(self, path):
        self.s.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        n = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
        while len(body) < n:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed"
            body += chunk
        return int(head.split(b" ")[1])

    def close(self):
        self.s.close()


def run_sds(remora, cp, make_upstream, ports, pki, api_type):
    a = make_upstream("a")
    admin, lport, lport2 = ports.get(), ports.get(), ports.get()
    ca = pki["ca"]
    serial_a, serial_b = tls_pki.serial_of(pki["server"]), tls_pki.serial_of(pki["server2"])
    assert serial_a != serial_b
    cp.set("cds", "1", [eds_cluster("backend"),
                        secure_cluster("secure", lport, "mesh_ca",
                                       "GRPC" if api_type == "GRPC" else "DELTA_GRPC")])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")]), routes("r2", [("/", "secure")])])
    cp.set("lds", "1", [tls_rds_listener("tls", lport, "r1", "server_cert"),
                        rds_listener("plain", lport2, "r2")])
    r = remora(xds_bootstrap(admin, cp.grpc_port, api_type=api_type), wait_ready=False)

    # warming: the secrets are subscribed by name; until they arrive the
    # listener and the cluster are not served and /ready is not 200
    def sds_names():
        names = set()
        for q in cp.requests():
            if q["type_url"] == SDS:
                names |= set(q.get("resource_names") or q.get("subscribe") or [])
        return names
    wait_until(lambda: sds_names() >= {"server_cert", "mesh_ca"}, 15, what="SDS subscription")
    # each secret on the stream of the source that named it: the listener's
    # (ads: {}) on ADS, the cluster's (api_config_source GRPC) on SDS's own
    by_service = {}
    for q in cp.requests():
        if q["type_url"] == SDS:
            by_service.setdefault(q["service"], set()).update(
                q.get("resource_names") or q.get("subscribe") or [])
    own = "StreamSecrets" if api_type == "GRPC" else "DeltaSecrets"
    assert by_service.get(own) == {"mesh_ca"}, by_service
    assert "mesh_ca" not in set().union(*(v for k, v in by_service.items() if k != own))
    assert not ready(r)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", lport), timeout=2).close()

    cp.set("sds", "1", [cert_secret("server_cert", pki["server"], pki["server_key"]),
                        ca_secret("mesh_ca", ca)])
    wait_until(lambda: ready(r), 15, what="/ready after the secrets arrived")
    wait_until(lambda: s_client_serial(lport, ca) == serial_a, 10, what="serial A")
    assert curl(f"http://127.0.0.1:{lport2}/through").status == 200   # upstream TLS, SDS CA
    kept = KeepAlive(lport, ca)
    assert kept.serial() == serial_a
    assert kept.get("/before") == 200

    # rotation: v2 carries serial B; new clients see it, the kept one goes on
    cp.set("sds", "2", [cert_secret("server_cert", pki["server2"], pki["server2_key"]),
                        ca_secret("mesh_ca", ca)])
    wait_until(lambda: s_client_serial(lport, ca) == serial_b, 5, interval=0.1,
               what="new clients see serial B")
    assert kept.get("/after") == 200
    assert kept.serial() == serial_a
    assert r.stat("sds.server_cert.update_success") == 2
    certs = json.loads(r.admin_get("/certs")[2])["certificates"]
    named = [c for e in certs for c in e["cert_chain"] if c.get("secret_name") == "server_cert"]
    assert named and all(c["serial_number"] == serial_b for c in named), certs

    # a bad secret (garbage PEM): NACK naming the secret and the field; B serves
    bad = {"name": "server_cert", "tls_certificate": {
        "certificate_chain": {"inline_string": "-----BEGIN CERTIFICATE-----\ngarbage\n"},
        "private_key": {"inline_string": read(pki["server2_key"])}}}
    cp.set("sds", "3", [bad, ca_secret("mesh_ca", ca)])
    q = wait_until(lambda: last_request(cp, SDS, lambda q: q["error_detail"]), 10, what="SDS NACK")
    msg = q["error_detail"]["message"]
    assert "Secret 'server_cert'" in msg and "tls_certificate.certificate_chain" in msg, msg
    if api_type == "GRPC":
        assert q["version_info"] == "2"
    r.wait_stat("sds.server_cert.update_rejected", lambda v: v >= 1)
    assert s_client_serial(lport, ca) == serial_b
    assert kept.get("/still") == 200
    kept.close()

    # the upstream's validation context from SDS: a foreign CA fails the
    # upstream handshake (503), the mesh CA again lets it through
    cp.set("sds", "4", [cert_secret("server_cert", pki["server2"], pki["server2_key"]),
                        ca_secret("mesh_ca", pki["foreign_ca"])])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport2}/foreign").status == 503, 10,
               what="upstream rejects the peer under a foreign CA")
    assert r.stat("cluster.secure.ssl.fail_verify_error") >= 1
    cp.set("sds", "5", [cert_secret("server_cert", pki["server2"], pki["server2_key"]),
                        ca_secret("mesh_ca", ca)])
    wait_until(lambda: curl(f"http://127.0.0.1:{lport2}/mesh").status == 200, 10,
               what="upstream accepts the peer under the mesh CA")

    # no listener or cluster uses the secrets any more: the subscription drops
    # them (once the connections holding the old configuration are gone: the
    # removed cluster's pooled connections close, ending the listener's)
    cp.set("cds", "2", [eds_cluster("backend")])
    cp.set("lds", "2", [rds_listener("plain", lport2, "r1")])

    def unsubscribed():
        qs = [q for q in cp.requests() if q["type_url"] == SDS]
        if api_type == "GRPC":   # the last request on each stream names nothing
            last = {q["stream"]: q for q in qs}
            return all(q["resource_names"] == [] for q in last.values())
        return {n for q in qs for n in q["unsubscribe"]} >= {"server_cert", "mesh_ca"}
    wait_until(unsubscribed, 15, what="SDS secrets unsubscribed")
    assert curl(f"http://127.0.0.1:{lport2}/plain").status == 200
    assert "SDS secret 'server_cert' no longer used" in r.stderr_text()
    r.stop()


def test_sds_sotw(remora, cp, make_upstream, ports, pki):
    run_sds(remora, cp, make_upstream, ports, pki, "GRPC")


def test_sds_delta(remora, cp, make_upstream, ports, pki):
    run_sds(remora, cp, make_upstream, ports, pki, "AGGREGATED_DELTA_GRPC")


def test_sds_validation_rotations_free_retired_contexts(remora, cp, make_upstream, ports, pki):
    """200 changes of an SDS validation context: each replaced one is freed
    once no SSL_CTX built with it is left (sds.<name>.retired_contexts), not
    kept until the secret is dropped.  A connection established before the
    rotations keeps the context it was built with (exactly one retired)
    and still serves; closing it frees that one too."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    ca = pki["ca"]
    ca_pem = read(ca)
    cp.set("cds", "1", [eds_cluster("backend")])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    lst = tls_rds_listener("tls", lport, "r1", "server_cert")
    # the listener asks for (but does not require) a client certificate,
    # verified with the SDS validation context "peer_ca"
    ctc = lst["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    ctc["validation_context_sds_secret_config"] = {"name": "peer_ca", "sds_config": ADS_SRC}
    cp.set("lds", "1", [lst])

    def versioned_ca(i):
        # distinct bytes each time (text outside the PEM block is ignored)
        return {"name": "peer_ca", "validation_context": {
            "trusted_ca": {"inline_string": f"rotation {i}\n" + ca_pem}}}
    cp.set("sds", "0", [cert_secret("server_cert", pki["server"], pki["server_key"]),
                        versioned_ca(0)])
    r = remora(xds_bootstrap(admin, cp.grpc_port))
    kept = KeepAlive(lport, ca)   # its SSL_CTX holds the first validation context
    assert kept.get("/first") == 200
    assert r.stat("sds.peer_ca.retired_contexts") == 0

    n = 200
    for i in range(1, n + 1):
        cp.set("sds", str(i), [cert_secret("server_cert", pki["server"], pki["server_key"]),
                               versioned_ca(i)])
        r.wait_stat("sds.peer_ca.update_success", lambda v, i=i: v >= i + 1, timeout=10)
    # every replaced context but the kept connection's is freed (the last
    # replaced one once the workers swapped their SSL_CTX: a sweep follows)
    r.wait_stat("sds.peer_ca.retired_contexts", lambda v: v == 1, timeout=10)
    assert kept.get("/after") == 200
    assert s_client_serial(lport, ca) is not None   # new handshakes use the newest
    assert r.stat("sds.peer_ca.update_success") == n + 1
    kept.close()
    r.wait_stat("sds.peer_ca.retired_contexts", lambda v: v == 0, timeout=10)
    r.stop()


def test_listener_waiting_for_secrets_is_not_an_rds_timeout(remora, cp, make_upstream, ports,
                                                            pki):
    """A listener whose routes are there but whose certificate (SDS) comes
    later than its RDS initial_fetch_timeout warms for its secret only: no
    "RDS initial_fetch_timeout" warning, and its routes serve once the
    certificate arrives.  Control: a listener that really misses its routes
    gets the warning, naming it and the RouteConfiguration."""
    a = make_upstream("a")
    admin, lport, lport2 = ports.get(), ports.get(), ports.get()
    cp.set("cds", "1", [eds_cluster("backend")])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    one = {"seconds": 1}   # the RDS initial_fetch_timeout of both listeners
    cp.set("lds", "1", [tls_rds_listener("tls", lport, "r1", "server_cert", fetch_timeout=one)])
    r = remora(xds_bootstrap(admin, cp.grpc_port, fetch_timeout="1s"), wait_ready=False)
    r.wait_ready(timeout=20)   # the initial fetch times out after 1 s
    # well past the 1 s timeout while the listener waits for its certificate
    wait_until(lambda: "listener 'tls' warming: waiting for its SDS secrets" in r.stderr_text(),
               10, what="listener warming for its secret")
    time.sleep(2.5)
    cp.set("sds", "1", [cert_secret("server_cert", pki["server"], pki["server_key"])])
    wait_until(lambda: s_client_serial(lport, pki["ca"]) is not None, 10,
               what="the listener serves TLS")
    kept = KeepAlive(lport, pki["ca"])
    assert kept.get("/routed") == 200   # its routes, not an empty table
    kept.close()
    time.sleep(1.5)   # a timer armed when the certificate arrived would fire by now
    assert "RDS initial_fetch_timeout" not in r.stderr_text()

    # control: a listener missing its routes does time out, and says which
    cp.set("lds", "2", [tls_rds_listener("tls", lport, "r1", "server_cert", fetch_timeout=one),
                        rds_listener("plain", lport2, "nowhere", fetch_timeout=one)])
    wait_until(lambda: "RDS initial_fetch_timeout" in r.stderr_text(), 10,
               what="the RDS timeout warning for the listener missing its routes")
    warn = [ln for ln in r.stderr_text().splitlines() if "RDS initial_fetch_timeout" in ln]
    assert len(warn) == 1 and "'plain'" in warn[0] and "'nowhere'" in warn[0], warn
    assert curl(f"http://127.0.0.1:{lport2}/").status == 404
    r.stop()
