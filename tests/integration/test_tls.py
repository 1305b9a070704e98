"""TLS and mTLS transport sockets with real peers: curl and openssl s_client
against a TLS listener (TLS 1.2 / 1.3, ALPN h2 / http/1.1), mTLS refusals
(no certificate, foreign CA, wrong SPIFFE ID, expired) each counted, two
Remora instances chained (the client sidecar originates mTLS, the server
sidecar terminates it and the app sees x-forwarded-client-cert), certificate
rotation while a keep-alive connection stays up, /certs and the expiry
gauge, session resumption, and startup errors naming the file."""

import json
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from harness import (bootstrap, curl, hcm, remora_bin, route, route_config, sockaddr,
                     static_cluster, virtual_host, wait_until)
import tls_pki
from tls_pki import CLIENT_ID, SERVER_ID

DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls_pki.make_pki(tmp_path_factory.mktemp("pki"))


def fsrc(path):
    return {"filename": path}


def downstream_tls(pki, cert="server", mtls=False, sans=None, alpn=("h2", "http/1.1"), **extra):
    common = {"tls_certificates": [{"certificate_chain": fsrc(pki[cert]),
                                    "private_key": fsrc(pki[cert + "_key"])}]}
    if alpn:
        common["alpn_protocols"] = list(alpn)
    if mtls:
        vc = {"trusted_ca": fsrc(pki["ca"])}
        if sans:
            vc["match_typed_subject_alt_names"] = sans
        common["validation_context"] = vc
    tc = {"@type": DOWNSTREAM, "common_tls_context": common, **extra}
    if mtls:
        tc["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": tc}


def tls_listener(port, cluster, ts, name="tls", **hcm_extra):
    rc = route_config([virtual_host([route({"prefix": "/"}, cluster)])])
    return {"name": name, "address": sockaddr(port),
            "filter_chains": [{"transport_socket": ts,
                               "filters": [hcm(rc, stat_prefix="ingress", **hcm_extra)]}]}


def spiffe_exact(spiffe_id):
    return [{"san_type": "URI", "matcher": {"exact": spiffe_id}}]


def lstat(port, leaf):
    return f"listener.127.0.0.1_{port}.ssl.{leaf}"


def https(port, path="/"):
    return f"https://localhost:{port}{path}"


def client_args(pki, who="client"):
    return ["--cacert", pki["ca"], "--cert", pki[who], "--key", pki[who + "_key"]]


def s_client(port, *args, data=b"", timeout=20):
    """openssl s_client once; returns its stdout+stderr text."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        "-servername", "localhost", *args],
                       input=data, capture_output=True, timeout=timeout)
    return (p.stdout + p.stderr).decode("utf-8", "replace")


# ---------------------------------------------------------------------------

def test_tls_versions_and_alpn(remora, upstream, ports, pki):
    admin, port = ports.get(), ports.get()
    r = remora(bootstrap(admin, [tls_listener(port, "app", downstream_tls(pki))],
                         [static_cluster("app", upstream.port)]))
    ca = ["--cacert", pki["ca"]]
    cases = [("--tlsv1.2", "--tls-max", "1.2", "--http1.1"),
             ("--tlsv1.3", "--http1.1"),
             ("--tlsv1.2", "--tls-max", "1.2", "--http2"),
             ("--tlsv1.3", "--http2")]
    for args in cases:
        res = curl(https(port, "/v"), *ca, *args)
        assert res.status == 200, (args, res)
        want = "2" if "--http2" in args else "1.1"
        assert res.info.get("http_version") == want, (args, res.info)
        echo = json.loads(res.body)
        assert echo["path"] == "/v"
        assert echo["headers"]["x-forwarded-proto"] == "https"
        # no client certificate: SANITIZE (the default) sends no XFCC
        assert "x-forwarded-client-cert" not in echo["headers"]
    assert r.stat(lstat(port, "handshake")) == 4
    assert r.stat(lstat(port, "versions.TLSv1.2")) == 2
    assert r.stat(lstat(port, "versions.TLSv1.3")) == 2
    assert r.stat(lstat(port, "no_certificate")) == 4
    assert r.stat("http.ingress.downstream_cx_http2_total") == 2
    assert r.stat("http.ingress.downstream_cx_http1_total") == 2

    # openssl s_client: the negotiated protocol and ALPN, as a TLS client sees them
    for ver, proto in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        for alpn in ("h2", "http/1.1"):
            out = s_client(port, ver, "-alpn", alpn, "-CAfile", pki["ca"])
            assert f"Protocol  : {proto}" in out or f"New, {proto}" in out, out
            assert f"ALPN protocol: {alpn}" in out, out
            assert "Verify return code: 0 (ok)" in out, out
    # TLS 1.1 is below the default floor
    out = s_client(port, "-tls1_1", "-CAfile", pki["ca"])
    assert "Cipher is (NONE)" in out or "alert" in out.lower(), out
    wait_until(lambda: r.stat(lstat(port, "connection_error")) >= 1, 5, what="connection_error")


def test_mtls_refusals_are_counted(remora, upstream, ports, pki):
    admin, port = ports.get(), ports.get()
    ts = downstream_tls(pki, mtls=True, sans=spiffe_exact(CLIENT_ID))
    r = remora(bootstrap(admin, [tls_listener(port, "app", ts)], [static_cluster("app", upstream.port)]))

    ok = curl(https(port, "/ok"), *client_args(pki))
    assert ok.status == 200, ok
    assert r.stat(lstat(port, "handshake")) == 1

    refusals = [
        ([], "fail_verify_no_cert"),                       # no certificate at all
        (client_args(pki, "foreign"), "fail_verify_error"),  # signed by a foreign CA
        (client_args(pki, "intruder"), "fail_verify_san"),   # our CA, wrong SPIFFE ID
        (client_args(pki, "expired"), "fail_verify_error"),  # our CA, expired
    ]
    expected = {"fail_verify_no_cert": 0, "fail_verify_error": 0, "fail_verify_san": 0}
    for args, stat in refusals:
        res = curl(https(port, "/no"), "--cacert", pki["ca"], *args)
        assert res.rc != 0 and res.status in (0, None), (args, res)
        expected[stat] += 1
        for name, n in expected.items():
            r.wait_stat(lstat(port, name), lambda v, n=n: v == n, timeout=5)
    assert r.stat(lstat(port, "handshake")) == 1
    assert r.stat(lstat(port, "connection_error")) == 0
    assert len(upstream.requests) == 1          # nothing refused reached the app
    log = r.stderr_text()
    assert "certificate verification failed: no subject alt name matches" in log
    assert "certificate has expired" in log
    assert "127.0.0.1:" in log                  # the peer address is logged


@pytest.mark.parametrize("mode,incoming,expect", [
    ("SANITIZE", "By=evil", None),
    ("FORWARD_ONLY", "By=evil", "By=evil"),
    ("APPEND_FORWARD", "By=evil", "By=evil,MINE"),
    ("SANITIZE_SET", "By=evil", "MINE"),
    ("ALWAYS_FORWARD_ONLY", "By=evil", "By=evil"),
])
def test_forward_client_cert_details(remora, upstream, ports, pki, mode, incoming, expect):
    admin, port = ports.get(), ports.get()
    ts = downstream_tls(pki, mtls=True)
    lst = tls_listener(port, "app", ts, forward_client_cert_details=mode,
                       set_current_client_cert_details={"subject": True, "uri": True,
                                                        "dns": True})
    remora(bootstrap(admin, [lst], [static_cluster("app", upstream.port)]))
    res = curl(https(port, "/x"), *client_args(pki), "-H", f"x-forwarded-client-cert: {incoming}")
    assert res.status == 200, res
    got = json.loads(res.body)["headers"].get("x-forwarded-client-cert")
    digest = subprocess.run(["openssl", "x509", "-in", pki["client"], "-noout", "-fingerprint",
                             "-sha256"], capture_output=True).stdout.decode()
    digest = digest.split("=", 1)[1].strip().replace(":", "").lower()
    mine = (f"By={SERVER_ID};Hash={digest};Subject=\"CN=client,O=Remora Tests\";"
            f"URI={CLIENT_ID}")
    assert got == (expect.replace("MINE", mine) if expect else None), got


def test_xfcc_cert_and_chain_are_url_encoded_pem(remora, upstream, ports, pki):
    admin, port = ports.get(), ports.get()
    lst = tls_listener(port, "app", downstream_tls(pki, mtls=True),
                       forward_client_cert_details="SANITIZE_SET",
                       set_current_client_cert_details={"cert": True, "chain": True})
    remora(bootstrap(admin, [lst], [static_cluster("app", upstream.port)]))
    res = curl(https(port, "/x"), *client_args(pki))
    xfcc = json.loads(res.body)["headers"]["x-forwarded-client-cert"]
    from urllib.parse import unquote
    fields = dict(kv.split("=", 1) for kv in xfcc.split(";"))
    pem = open(pki["client"]).read()
    assert unquote(fields["Cert"].strip('"')) == pem
    assert unquote(fields["Chain"].strip('"')).startswith(pem)
    assert "%0A" in fields["Cert"] and "\n" not in fields["Cert"]


def upstream_tls(pki, cert="client", sans=None, sni="server.local", via_secrets=False):
    common = {"alpn_protocols": ["http/1.1"]}
    if via_secrets:
        common["tls_certificate_sds_secret_configs"] = [{"name": "workload"}]
        common["validation_context_sds_secret_config"] = {"name": "mesh_ca"}
    else:
        common["tls_certificates"] = [{"certificate_chain": fsrc(pki[cert]),
                                       "private_key": fsrc(pki[cert + "_key"])}]
        vc = {"trusted_ca": fsrc(pki["ca"])}
        if sans:
            vc["match_typed_subject_alt_names"] = sans
        common["validation_context"] = vc
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM, "sni": sni, "common_tls_context": common}}


def test_two_sidecars_chained_with_mtls(remora, upstream, ports, pki):
    """app client -> curl -> [client sidecar: originate mTLS] -> [server sidecar:
    terminate mTLS, XFCC] -> app."""
    s_admin, s_port = ports.get(), ports.get()
    ts = downstream_tls(pki, mtls=True, sans=spiffe_exact(CLIENT_ID), alpn=("h2", "http/1.1"))
    server = remora(bootstrap(s_admin, [tls_listener(s_port, "app", ts,
                                                     forward_client_cert_details="SANITIZE_SET",
                                                     set_current_client_cert_details={"uri": True})],
                              [static_cluster("app", upstream.port)]), name="server-sidecar")
    c_admin, c_port = ports.get(), ports.get()
    rc = route_config([virtual_host([route({"prefix": "/"}, "server")])])
    outbound = {"name": "out", "address": sockaddr(c_port),
                "filter_chains": [{"filters": [hcm(rc, stat_prefix="egress")]}]}
    cfg = bootstrap(c_admin, [outbound], [static_cluster(
        "server", s_port, transport_socket=upstream_tls(pki, via_secrets=True,
                                                        sans=spiffe_exact(SERVER_ID)))])
    cfg["static_resources"]["secrets"] = [
        {"name": "workload", "tls_certificate": {"certificate_chain": fsrc(pki["client"]),
                                                 "private_key": fsrc(pki["client_key"])}},
        {"name": "mesh_ca", "validation_context": {
            "trusted_ca": fsrc(pki["ca"]),
            "match_typed_subject_alt_names": spiffe_exact(SERVER_ID)}},
    ]
    client = remora(cfg, name="client-sidecar")
    for i in range(5):
        res = curl(f"http://127.0.0.1:{c_port}/hop/{i}", "-H", "x-forwarded-client-cert: forged")
        assert res.status == 200, res
        echo = json.loads(res.body)
        assert echo["path"] == f"/hop/{i}"
        assert echo["headers"]["x-forwarded-client-cert"].startswith(f"By={SERVER_ID};Hash=")
        assert echo["headers"]["x-forwarded-client-cert"].endswith(f";URI={CLIENT_ID}")
    assert client.stat("cluster.server.ssl.handshake") >= 1
    assert client.stat("cluster.server.ssl.versions.TLSv1.3") >= 1
    assert client.stat("cluster.server.ssl.fail_verify_san") == 0
    assert server.stat(lstat(s_port, "handshake")) == client.stat("cluster.server.ssl.handshake")
    # the server sidecar refuses a plaintext client outright
    plain = curl(f"http://127.0.0.1:{s_port}/plain")
    assert plain.status in (0, None)
    assert len(upstream.requests) == 5


def test_upstream_server_identity_mismatch_is_refused(remora, upstream, ports, pki):
    s_admin, s_port = ports.get(), ports.get()
    server = remora(bootstrap(s_admin, [tls_listener(s_port, "app", downstream_tls(pki, mtls=True))],
                              [static_cluster("app", upstream.port)]), name="server-sidecar")
    c_admin, c_port = ports.get(), ports.get()
    rc = route_config([virtual_host([route({"prefix": "/"}, "server")])])
    outbound = {"name": "out", "address": sockaddr(c_port),
                "filter_chains": [{"filters": [hcm(rc, stat_prefix="egress")]}]}
    wrong = spiffe_exact("spiffe://cluster.local/ns/other/sa/db")
    client = remora(bootstrap(c_admin, [outbound], [static_cluster(
        "server", s_port, transport_socket=upstream_tls(pki, sans=wrong))]), name="client-sidecar")
    res = curl(f"http://127.0.0.1:{c_port}/x")
    assert res.status == 503, res
    client.wait_stat("cluster.server.ssl.fail_verify_san", lambda v: v >= 1)
    assert client.stat("cluster.server.ssl.handshake") == 0
    assert client.stat("cluster.server.upstream_cx_connect_fail") >= 1
    assert len(upstream.requests) == 0
    server.wait_stat(lstat(s_port, "connection_error"), lambda v: v >= 1)


def _tls_get(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        assert d, "connection closed"
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        d = sock.recv(65536)
        assert d, "connection closed"
        body += d
    return int(head.split(b" ")[1]), body


def _connect(port, pki):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.load_cert_chain(pki["client"], pki["client_key"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    return s


def _serial(sock):
    der = sock.getpeercert(binary_form=True)
    p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                       capture_output=True)
    return p.stdout.decode().strip().split("=", 1)[1].lower().lstrip("0")


def test_rotation_keeps_connections_and_serves_new_cert(remora, upstream, ports, pki, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = str(certs / "tls.crt"), str(certs / "tls.key")
    shutil.copy(pki["server"], cert)
    shutil.copy(pki["server_key"], key)
    admin, port = ports.get(), ports.get()
    ts = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM, "require_client_certificate": True,
        "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "server_cert"}],
                               "validation_context": {"trusted_ca": fsrc(pki["ca"])}}}}
    cfg = bootstrap(admin, [tls_listener(port, "app", ts)], [static_cluster("app", upstream.port)])
    cfg["static_resources"]["secrets"] = [{"name": "server_cert", "tls_certificate": {
        "certificate_chain": fsrc(cert), "private_key": fsrc(key)}}]
    r = remora(cfg)
    old_serial, new_serial = tls_pki.serial_of(pki["server"]), tls_pki.serial_of(pki["server2"])
    assert old_serial != new_serial

    kept = _connect(port, pki)
    assert _serial(kept) == old_serial
    assert _tls_get(kept, "/before")[0] == 200

    # rotate the way a cert manager does: write new files, rename over the old
    shutil.copy(pki["server2"], cert + ".tmp")
    shutil.copy(pki["server2_key"], key + ".tmp")
    os.rename(cert + ".tmp", cert)
    os.rename(key + ".tmp", key)

    def new_conn_serial():
        s = _connect(port, pki)
        try:
            return _serial(s) == new_serial
        finally:
            s.close()
    wait_until(new_conn_serial, 5, interval=0.1, what="new connections see the rotated certificate")
    # the connection opened before the rotation still works, with its old certificate
    assert _tls_get(kept, "/after")[0] == 200
    assert _serial(kept) == old_serial
    kept.close()
    assert len(upstream.requests) == 2
    certs_json = json.loads(r.admin_get("/certs")[2])
    chain = certs_json["certificates"][0]["cert_chain"][0]
    assert chain["serial_number"] == new_serial and chain["path"] == cert
    assert "new certificates in use" in r.stderr_text()


def test_certs_admin_and_expiry_gauge(remora, upstream, ports, pki):
    admin, port = ports.get(), ports.get()
    r = remora(bootstrap(admin, [tls_listener(port, "app", downstream_tls(pki, mtls=True))],
                         [static_cluster("app", upstream.port)]))
    status, _, body = r.admin_get("/certs")
    assert status == 200
    certs = json.loads(body)["certificates"]
    assert len(certs) == 1
    ca, leaf = certs[0]["ca_cert"][0], certs[0]["cert_chain"][0]
    assert ca["path"] == pki["ca"] and leaf["path"] == pki["server"]
    assert leaf["serial_number"] == tls_pki.serial_of(pki["server"])
    assert {"uri": SERVER_ID} in leaf["subject_alt_names"]
    assert {"dns": "localhost"} in leaf["subject_alt_names"]
    assert {"ip_address": "127.0.0.1"} in leaf["subject_alt_names"]
    assert leaf["days_until_expiration"] in ("299", "300")
    assert leaf["valid_from"].endswith("Z") and leaf["expiration_time"].endswith("Z")
    assert r.stat("server.days_until_first_cert_expiring") in (299, 300)


def test_session_resumption(remora, upstream, ports, pki):
    admin, port = ports.get(), ports.get()
    keys = os.urandom(80)
    ts = downstream_tls(pki, session_ticket_keys={"keys": [{"inline_bytes":
                                                            __import__("base64").b64encode(keys).decode()}]})
    r = remora(bootstrap(admin, [tls_listener(port, "app", ts)], [static_cluster("app", upstream.port)]))
    out = s_client(port, "-tls1_2", "-reconnect", "-CAfile", pki["ca"])
    assert out.count("Reused, TLSv1.2") >= 5, out
    assert r.stat(lstat(port, "session_reused")) >= 5


def test_stateless_resumption_can_be_disabled(remora, upstream, ports, pki):
    admin, port = ports.get(), ports.get()
    ts = downstream_tls(pki, disable_stateless_session_resumption=True)
    remora(bootstrap(admin, [tls_listener(port, "app", ts)], [static_cluster("app", upstream.port)]))
    out = s_client(port, "-tls1_2", "-CAfile", pki["ca"])
    assert "TLS session ticket:" not in out, out


def run_validate(cfg, tmp_path):
    import yaml
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = subprocess.run([remora_bin(), "--mode", "validate", "-c", str(path)],
                       capture_output=True, timeout=30)
    return p.returncode, p.stderr.decode()


def test_startup_errors_name_the_field_and_file(upstream, ports, pki, tmp_path):
    admin, port = ports.get(), ports.get()
    missing = str(tmp_path / "nope.pem")
    ts = downstream_tls(pki)
    ts["typed_config"]["common_tls_context"]["tls_certificates"][0]["certificate_chain"] = fsrc(missing)
    rc, err = run_validate(bootstrap(admin, [tls_listener(port, "app", ts)],
                                     [static_cluster("app", upstream.port)]), tmp_path)
    assert rc != 0
    assert ("static_resources.listeners[0].filter_chains[0].transport_socket.typed_config."
            "common_tls_context.tls_certificates[0].certificate_chain.filename") in err, err
    assert missing in err and "No such file" in err, err

    ts = downstream_tls(pki)
    ts["typed_config"]["common_tls_context"]["tls_certificates"][0]["private_key"] = \
        fsrc(pki["client_key"])
    rc, err = run_validate(bootstrap(admin, [tls_listener(port, "app", ts)],
                                     [static_cluster("app", upstream.port)]), tmp_path)
    assert rc != 0 and "does not match" in err and "private_key" in err, err

    ts = downstream_tls(pki)
    ts["typed_config"]["common_tls_context"]["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_0"}
    rc, err = run_validate(bootstrap(admin, [tls_listener(port, "app", ts)],
                                     [static_cluster("app", upstream.port)]), tmp_path)
    assert rc != 0 and "tls_minimum_protocol_version" in err, err

    cl = static_cluster("app", upstream.port, transport_socket={
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": UPSTREAM, "common_tls_context": {
                "validation_context_sds_secret_config": {"name": "nothere"}}}})
    rc, err = run_validate(bootstrap(admin, [], [cl]), tmp_path)
    assert rc != 0 and "unknown secret 'nothere'" in err, err
    assert "clusters[0].transport_socket.typed_config.common_tls_context." \
           "validation_context_sds_secret_config.name" in err, err


def test_large_bodies_both_ways_over_tls(remora, upstream, ports, pki, tmp_path):
    """8 MiB down and 8 MiB up through TLS on both hops (client sidecar ->
    server sidecar), HTTP/1.1 and HTTP/2 downstream: records split across
    socket writes, back-pressure, decrypted bytes left inside OpenSSL."""
    import hashlib
    from harness import pattern_bytes
    s_admin, s_port = ports.get(), ports.get()
    remora(bootstrap(s_admin, [tls_listener(s_port, "app", downstream_tls(pki, mtls=True))],
                     [static_cluster("app", upstream.port)]), name="server-sidecar")
    c_admin, c_port = ports.get(), ports.get()
    client = remora(bootstrap(c_admin, [tls_listener(c_port, "server", downstream_tls(pki))],
                              [static_cluster("server", s_port,
                                              transport_socket=upstream_tls(pki))]),
                    name="client-sidecar")
    n = 8 * 1024 * 1024
    want = hashlib.sha256(pattern_bytes(n)).hexdigest()
    up = tmp_path / "up.bin"
    up.write_bytes(pattern_bytes(n))
    for proto in ("--http1.1", "--http2"):
        res = curl(https(c_port, f"/big?bytes={n}"), "--cacert", pki["ca"], proto, timeout=60)
        assert res.status == 200, res
        assert len(res.body) == n and hashlib.sha256(res.body).hexdigest() == want
        res = curl(https(c_port, "/upload"), "--cacert", pki["ca"], proto,
                   "--data-binary", f"@{up}", timeout=60)
        assert res.status == 200, res
        echo = json.loads(res.body)
        assert echo["body_length"] == n and echo["body_sha256"] == want
    assert client.stat("cluster.server.ssl.handshake") >= 1
    assert client.stat(lstat(c_port, "handshake")) == 4


def test_tcp_proxy_mtls_tunnel(remora, echo_server, ports, pki):
    """Plain TCP in -> tcp_proxy originating mTLS -> TLS listener with
    tcp_proxy -> echo server: bytes pass both ways, the half-close too."""
    from harness import TCP_PROXY_TYPE, tcp_proxy_listener
    s_admin, s_port = ports.get(), ports.get()
    lst = tcp_proxy_listener(s_port, "echo", stat_prefix="in")
    lst["filter_chains"][0]["transport_socket"] = downstream_tls(
        pki, mtls=True, sans=spiffe_exact(CLIENT_ID), alpn=None)
    server = remora(bootstrap(s_admin, [lst], [static_cluster("echo", echo_server.port)]),
                    name="server-sidecar")
    c_admin, c_port = ports.get(), ports.get()
    client = remora(bootstrap(c_admin, [tcp_proxy_listener(c_port, "server", stat_prefix="out")],
                              [static_cluster("server", s_port, transport_socket=upstream_tls(
                                  pki, sans=spiffe_exact(SERVER_ID)))]), name="client-sidecar")
    payload = os.urandom(300000)
    with socket.create_connection(("127.0.0.1", c_port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    assert got == payload
    assert client.stat("cluster.server.ssl.handshake") == 1
    assert server.stat(lstat(s_port, "handshake")) == 1
    assert server.stat(lstat(s_port, "no_certificate")) == 0


def test_health_checks_use_the_cluster_tls(remora, upstream, ports, pki):
    """An HTTP health check of a TLS cluster runs over mTLS (as Envoy: the
    cluster's transport socket); a server that refuses our identity marks the
    host unhealthy."""
    s_admin, s_port = ports.get(), ports.get()
    server = remora(bootstrap(s_admin, [tls_listener(
        s_port, "app", downstream_tls(pki, mtls=True, sans=spiffe_exact(CLIENT_ID)))],
        [static_cluster("app", upstream.port)]), name="server-sidecar")
    hc = {"timeout": "1s", "interval": "0.2s", "unhealthy_threshold": 1, "healthy_threshold": 1,
          "http_health_check": {"path": "/healthz"}}
    c_admin = ports.get()
    client = remora(bootstrap(c_admin, [], [
        static_cluster("good", s_port, health_checks=[hc], transport_socket=upstream_tls(pki)),
        static_cluster("bad", s_port, health_checks=[hc],
                       transport_socket=upstream_tls(pki, cert="intruder"))]), name="client-sidecar")
    client.wait_stat("cluster.good.health_check.success", lambda v: v >= 2, timeout=10)
    client.wait_stat("cluster.bad.health_check.failure", lambda v: v >= 2, timeout=10)
    assert client.stat("cluster.good.ssl.handshake") >= 1
    # (with TLS 1.3 the client's handshake completes before the server
    # checks its certificate: the refusal arrives as an alert on first read)
    assert client.stat("cluster.bad.health_check.success") == 0
    server.wait_stat(lstat(s_port, "fail_verify_san"), lambda v: v >= 1)
    assert any(r["path"] == "/healthz" for r in upstream.requests)


def test_tls13_resumption_with_generated_ticket_keys(remora, upstream, ports, pki, tmp_path):
    admin, port = ports.get(), ports.get()
    r = remora(bootstrap(admin, [tls_listener(port, "app", downstream_tls(pki))],
                         [static_cluster("app", upstream.port)]))
    sess = str(tmp_path / "sess.pem")
    req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = s_client(port, "-tls1_3", "-CAfile", pki["ca"], "-sess_out", sess, "-ign_eof", data=req)
    assert "New, TLSv1.3" in out and os.path.getsize(sess) > 0, out
    out = s_client(port, "-tls1_3", "-CAfile", pki["ca"], "-sess_in", sess, "-ign_eof", data=req)
    assert "Reused, TLSv1.3" in out, out
    assert r.stat(lstat(port, "session_reused")) == 1
