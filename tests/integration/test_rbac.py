"""RBAC with real peers: envoy.filters.http.rbac (every principal and
permission kind, ALLOW and DENY, shadow rules that only count, per-route
disable / override, gRPC denial), envoy.filters.network.rbac (an mTLS client
closed by its SPIFFE ID after the handshake, a plaintext client closed by its
source IP), and two Remora sidecars chained over mTLS where the server
sidecar authorizes by SPIFFE ID: curl on both ends, allowed and denied
identities both counted."""

import json
import re
import socket
import ssl

import pytest

from harness import (bootstrap, curl, hcm, route, route_config, sockaddr, static_cluster,
                     virtual_host, wait_until, ROUTER_FILTER, TCP_PROXY_TYPE)
import tls_pki
from tls_pki import CLIENT_ID, INTRUDER_ID, SERVER_ID
from test_tls import (downstream_tls, fsrc, run_validate, spiffe_exact, tls_listener,
                      upstream_tls)

HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HTTP_RBAC_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = tls_pki.make_pki(tmp_path_factory.mktemp("pki"))
    # a leaf with only a DNS SAN: its principal is the DNS name
    p["dnsonly"], p["dnsonly_key"] = tls_pki.issue(p["dir"], "dnsonly", "ca", "DNS:web.mesh.local")
    return p


def rbac_filter(**cfg):
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": HTTP_RBAC, **cfg}}


def policy(permissions, principals):
    return {"permissions": permissions, "principals": principals}


ANY = {"any": True}


def rbac_listener(port, prefix, rbac, cluster="app", routes=None):
    rc = route_config([virtual_host(routes or [route({"prefix": "/"}, cluster)])])
    return {"name": prefix, "address": sockaddr(port),
            "filter_chains": [{"filters": [hcm(rc, stat_prefix=prefix,
                                               http_filters=[rbac_filter(**rbac), ROUTER_FILTER])]}]}


def hstat(r, prefix, leaf):
    return r.stat(f"http.{prefix}.rbac.{leaf}")


def denied(res):
    return res.status == 403 and res.body == b"RBAC: access denied"


# ---------------------------------------------------------------------------

def test_http_rbac_permissions_and_principals(remora, upstream, ports):
    admin = ports.get()
    cases = {
        # ALLOW: GET under /public from loopback, or anything with x-role: admin
        "allow": {"rules": {"action": "ALLOW", "policies": {
            "public-read": policy(
                [{"and_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                          {"url_path": {"path": {"prefix": "/public"}}}]}}],
                [{"source_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}]),
            "admin": policy([ANY], [{"header": {"name": "x-role", "string_match": {"exact": "admin"}}}]),
        }}},
        # DENY: /secret, or a request to another :authority than svc.local
        "deny": {"rules": {"action": "DENY", "policies": {
            "secret": policy([{"url_path": {"path": {"prefix": "/secret"}}}], [ANY]),
            "foreign-host": policy([{"not_rule": {"header": {"name": ":authority",
                                                              "string_match": {"exact": "svc.local"}}}}],
                                   [ANY]),
        }}},
        # destination_port / destination_ip / direct_remote_ip / remote_ip / and/or/not ids
        "net": {"rules": {"policies": {
            "p": policy([{"and_rules": {"rules": [
                {"destination_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}},
                {"or_rules": {"rules": [{"destination_port": 1}, {"destination_port": PORT_PLACEHOLDER}]}}]}}],
                [{"and_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}},
                                      {"remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}},
                                      {"not_id": {"header": {"name": "x-blocked", "present_match": True}}}]}}]),
        }}},
        # a policy for a different port: nothing matches, ALLOW denies all
        "wrongport": {"rules": {"policies": {"p": policy([{"destination_port": 1}], [ANY])}}},
    }
    port = {k: ports.get() for k in cases}
    listeners = []
    for k, cfg in cases.items():
        cfg = json.loads(json.dumps(cfg).replace(str(PORT_PLACEHOLDER), str(port[k])))
        listeners.append(rbac_listener(port[k], k, cfg))
    r = remora(bootstrap(admin, listeners, [static_cluster("app", upstream.port)]))

    def get(k, path, *args):
        return curl(f"http://127.0.0.1:{port[k]}{path}", "-H", "host: svc.local", *args)

    assert get("allow", "/public/a").status == 200
    assert denied(get("allow", "/private"))
    assert denied(get("allow", "/public/a", "-X", "POST"))
    assert get("allow", "/private", "-H", "x-role: admin").status == 200
    assert get("allow", "/private", "-X", "DELETE", "-H", "x-role: admin").status == 200
    assert hstat(r, "allow", "allowed") == 3 and hstat(r, "allow", "denied") == 2

    assert get("deny", "/ok").status == 200
    assert denied(get("deny", "/secret/x"))
    assert denied(curl(f"http://127.0.0.1:{port['deny']}/ok", "-H", "host: evil.example"))
    assert hstat(r, "deny", "allowed") == 1 and hstat(r, "deny", "denied") == 2

    assert get("net", "/x").status == 200
    assert denied(get("net", "/x", "-H", "x-blocked: 1"))
    assert hstat(r, "net", "allowed") == 1 and hstat(r, "net", "denied") == 1

    assert denied(get("wrongport", "/x"))
    assert hstat(r, "wrongport", "denied") == 1
    # 3 + 1 + 1 requests reached the app, nothing denied did
    assert len(upstream.requests) == 5
    assert all(not q["path"].startswith("/secret") for q in upstream.requests)
    # Prometheus: the HCM prefix is a tag, as Envoy's
    prom = r.admin_get("/stats/prometheus")[2].decode()
    assert 'envoy_http_rbac_denied{envoy_http_conn_manager_prefix="allow"} 2' in prom, prom


PORT_PLACEHOLDER = 65111


def test_http_rbac_grpc_denial_is_trailers_only(remora, upstream, ports):
    admin, port = ports.get(), ports.get()
    r = remora(bootstrap(admin, [rbac_listener(port, "g", {"rules": {"action": "DENY", "policies": {
        "all": policy([ANY], [ANY])}}})], [static_cluster("app", upstream.port)]))
    res = curl(f"http://127.0.0.1:{port}/pkg.Svc/Method", "--http2-prior-knowledge", "-X", "POST",
               "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "")
    assert res.status == 200, res
    assert res.headers.get("grpc-status") == "7", res.headers   # PERMISSION_DENIED
    assert "RBAC" in res.headers.get("grpc-message", ""), res.headers
    assert hstat(r, "g", "denied") == 1
    assert len(upstream.requests) == 0


def test_http_rbac_shadow_rules_only_count(remora, upstream, ports):
    admin, p1, p2 = ports.get(), ports.get(), ports.get()
    shadow = {"policies": {"only-get": policy([{"header": {"name": ":method", "exact_match": "GET"}}], [ANY])}}
    listeners = [
        # shadow only: nothing is enforced
        rbac_listener(p1, "shadowonly", {"shadow_rules": shadow}),
        # rules and shadow rules with their stat prefixes
        rbac_listener(p2, "both", {"rules": {"action": "DENY", "policies": {
            "secret": policy([{"url_path": {"path": {"exact": "/secret"}}}], [ANY])}},
            "shadow_rules": shadow, "rules_stat_prefix": "enf_",
            "shadow_rules_stat_prefix": "dry_"}),
    ]
    r = remora(bootstrap(admin, listeners, [static_cluster("app", upstream.port)]))
    assert curl(f"http://127.0.0.1:{p1}/a").status == 200
    assert curl(f"http://127.0.0.1:{p1}/a", "-X", "POST").status == 200
    assert curl(f"http://127.0.0.1:{p1}/a", "-X", "PUT").status == 200
    assert hstat(r, "shadowonly", "shadow_allowed") == 1
    assert hstat(r, "shadowonly", "shadow_denied") == 2
    assert hstat(r, "shadowonly", "allowed") == 0 and hstat(r, "shadowonly", "denied") == 0

    assert curl(f"http://127.0.0.1:{p2}/a", "-X", "POST").status == 200
    assert denied(curl(f"http://127.0.0.1:{p2}/secret"))
    assert hstat(r, "both", "enf_allowed") == 1 and hstat(r, "both", "enf_denied") == 1
    assert hstat(r, "both", "dry_shadow_allowed") == 1 and hstat(r, "both", "dry_shadow_denied") == 1
    assert len(upstream.requests) == 4


def test_http_rbac_per_route_disable_and_override(remora, upstream, ports):
    admin, port = ports.get(), ports.get()
    routes = [
        dict(route({"prefix": "/open"}, "app"),
             typed_per_filter_config={"envoy.filters.http.rbac": {"@type": HTTP_RBAC_ROUTE}}),
        dict(route({"prefix": "/team"}, "app"),
             typed_per_filter_config={"envoy.filters.http.rbac": {"@type": HTTP_RBAC_ROUTE, "rbac": {"rules": {
                 "policies": {"team": policy([ANY], [{"header": {"name": "x-team",
                                                                  "exact_match": "blue"}}])}}}}}),
        route({"prefix": "/"}, "app"),
    ]
    cfg = {"rules": {"policies": {}}}   # ALLOW with no policy: deny everything
    r = remora(bootstrap(admin, [rbac_listener(port, "pr", cfg, routes=routes)],
                         [static_cluster("app", upstream.port)]))
    assert denied(curl(f"http://127.0.0.1:{port}/closed"))
    assert curl(f"http://127.0.0.1:{port}/open/x").status == 200
    assert denied(curl(f"http://127.0.0.1:{port}/team/x"))
    assert curl(f"http://127.0.0.1:{port}/team/x", "-H", "x-team: blue").status == 200
    # the route's rules count in the filter's stats; a disabled route counts nothing
    assert hstat(r, "pr", "denied") == 2 and hstat(r, "pr", "allowed") == 1
    assert [q["path"] for q in upstream.requests] == ["/open/x", "/team/x"]


def test_http_rbac_config_errors(ports, tmp_path):
    admin, port = ports.get(), ports.get()
    rc, err = run_validate(bootstrap(admin, [rbac_listener(port, "e", {"rules": {"action": "LOG"}})],
                                     [static_cluster("app", 9)]), tmp_path)
    assert rc != 0 and "LOG is not supported" in err, err
    assert "http_filters[0].typed_config.rules.action" in err, err
    bad = {"rules": {"policies": {"p": policy([ANY], [{"authenticated": {"principal_name": {"exactly": "x"}}}])}}}
    rc, err = run_validate(bootstrap(admin, [rbac_listener(port, "e", bad)], [static_cluster("app", 9)]),
                           tmp_path)
    assert rc != 0 and "rules.policies.p.principals[0].authenticated.principal_name.exactly: unknown field" in err, err


def test_http_rbac_by_spiffe_id_over_mtls(remora, upstream, ports, pki):
    """mTLS listener (any certificate of the mesh CA) + RBAC by principal:
    SPIFFE ID (URI SAN), DNS SAN fallback, and the requested server name."""
    admin, port = ports.get(), ports.get()
    rbac = {"rules": {"policies": {
        "client": policy([{"requested_server_name": {"exact": "localhost"}}],
                         [{"authenticated": {"principal_name": {"exact": CLIENT_ID}}}]),
        "web": policy([ANY], [{"authenticated": {"principal_name": {"exact": "web.mesh.local"}}}]),
    }}}
    lst = tls_listener(port, "app", downstream_tls(pki, mtls=True), name="mtls")
    lst["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"] = [rbac_filter(**rbac),
                                                                             ROUTER_FILTER]
    r = remora(bootstrap(admin, [lst], [static_cluster("app", upstream.port)]))

    def go(who, host="localhost"):
        return curl(f"https://{host}:{port}/x", "--resolve", f"{host}:{port}:127.0.0.1",
                    "--cacert", pki["ca"], "--cert", pki[who], "--key", pki[who + "_key"])

    assert go("client").status == 200
    assert denied(go("intruder"))
    assert go("dnsonly").status == 200
    # the right identity, the wrong SNI (the server certificate also names server.local)
    assert denied(go("client", host="server.local"))
    assert hstat(r, "ingress", "allowed") == 2 and hstat(r, "ingress", "denied") == 2
    assert len(upstream.requests) == 2


# ---------------------------------------------------------------------------
# network RBAC

def net_rbac(stat_prefix, rules, **extra):
    return {"name": "envoy.filters.network.rbac",
            "typed_config": {"@type": NET_RBAC, "stat_prefix": stat_prefix, "rules": rules, **extra}}


def tcp_chain(cluster, stat_prefix, pre=()):
    return {"filters": [*pre, {"name": "envoy.filters.network.tcp_proxy",
                               "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix,
                                                "cluster": cluster}}]}


def echo_once(sock, data=b"ping"):
    """Send data and read it back; b"" if the proxy closed the connection."""
    try:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            d = sock.recv(65536)
            if not d:
                break
            got += d
        return got
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""


def test_network_rbac_closes_denied_spiffe_id(remora, echo_server, ports, pki):
    admin, port = ports.get(), ports.get()
    rules = {"policies": {"client-only": policy([{"destination_port": port}],
                                                [{"authenticated": {"principal_name": {"exact": CLIENT_ID}}}])}}
    chain = tcp_chain("echo", "tcp", [net_rbac("tcp.", rules, shadow_rules={"action": "DENY", "policies": {
        "intruder": policy([ANY], [{"authenticated": {"principal_name": {"exact": INTRUDER_ID}}}])}},
        shadow_rules_stat_prefix="audit_")])
    chain["transport_socket"] = downstream_tls(pki, mtls=True, alpn=None)
    r = remora(bootstrap(admin, [{"name": "tls_tcp", "address": sockaddr(port), "filter_chains": [chain]}],
                         [static_cluster("echo", echo_server.port)]))

    def connect(who):
        ctx = ssl.create_default_context(cafile=pki["ca"])
        ctx.load_cert_chain(pki[who], pki[who + "_key"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    with connect("client") as s:
        assert echo_once(s, b"hello") == b"hello"
    # the intruder completes the handshake (same CA), then is closed unread
    with connect("intruder") as s:
        assert echo_once(s, b"hello") == b""
    assert r.stat("tcp.rbac.allowed") == 1
    assert r.stat("tcp.rbac.denied") == 1
    assert r.stat("tcp.rbac.audit_shadow_allowed") == 1
    assert r.stat("tcp.rbac.audit_shadow_denied") == 1
    assert r.stat("listener.127.0.0.1_%d.ssl.handshake" % port) == 2
    # the denied connection's bytes never reached the echo server
    assert echo_server.bytes_echoed == 5


def test_network_rbac_source_ip_on_plaintext(remora, echo_server, ports):
    admin, p_deny, p_allow = ports.get(), ports.get(), ports.get()
    deny_lo = {"action": "DENY", "policies": {"loopback": policy(
        [ANY], [{"source_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}])}}
    allow_lo = {"policies": {"loopback": policy(
        [{"destination_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}],
        [{"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}])}}
    listeners = [
        {"name": "deny", "address": sockaddr(p_deny),
         "filter_chains": [tcp_chain("echo", "d", [net_rbac("denylo", deny_lo)])]},
        {"name": "allow", "address": sockaddr(p_allow),
         "filter_chains": [tcp_chain("echo", "a", [net_rbac("allowlo", allow_lo)])]},
    ]
    r = remora(bootstrap(admin, listeners, [static_cluster("echo", echo_server.port)]))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", p_deny), timeout=10) as s:
            assert echo_once(s) == b""
        with socket.create_connection(("127.0.0.1", p_allow), timeout=10) as s:
            assert echo_once(s) == b"ping"
    assert r.stat("denylo.rbac.denied") == 3 and r.stat("denylo.rbac.allowed") == 0
    assert r.stat("allowlo.rbac.allowed") == 3 and r.stat("allowlo.rbac.denied") == 0
    prom = r.admin_get("/stats/prometheus")[2].decode()
    assert re.search(r"^envoy_denylo_rbac_denied(\{\})? 3$", prom, re.M), prom


def test_network_rbac_refuses_http_matchers(ports, tmp_path):
    admin, port = ports.get(), ports.get()
    rules = {"policies": {"p": policy([{"url_path": {"path": {"exact": "/"}}}], [ANY])}}
    lst = {"name": "l", "address": sockaddr(port),
           "filter_chains": [tcp_chain("echo", "x", [net_rbac("n", rules)])]}
    rc, err = run_validate(bootstrap(admin, [lst], [static_cluster("echo", 9)]), tmp_path)
    assert rc != 0 and "only the HTTP RBAC filter can match 'url_path'" in err, err


# ---------------------------------------------------------------------------

def test_two_sidecars_chained_rbac_by_spiffe_id(remora, upstream, ports, pki):
    """curl -> [client sidecar: originate mTLS with its SPIFFE cert] ->
    [server sidecar: terminate mTLS, RBAC allows only CLIENT_ID] -> app.
    A second client sidecar holds a different SPIFFE identity (intruder):
    the server sidecar answers it 403; both decisions are counted."""
    s_admin, s_port = ports.get(), ports.get()
    rbac = {"rules": {"policies": {"client": policy(
        [ANY], [{"authenticated": {"principal_name": {"exact": CLIENT_ID}}}])}}}
    lst = tls_listener(s_port, "app", downstream_tls(pki, mtls=True), name="inbound")
    lst["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"] = [rbac_filter(**rbac),
                                                                             ROUTER_FILTER]
    server = remora(bootstrap(s_admin, [lst], [static_cluster("app", upstream.port)]),
                    name="server-sidecar")

    def client_sidecar(cert):
        admin, port = ports.get(), ports.get()
        rc = route_config([virtual_host([route({"prefix": "/"}, "server")])])
        out = {"name": "out", "address": sockaddr(port),
               "filter_chains": [{"filters": [hcm(rc, stat_prefix="egress")]}]}
        r = remora(bootstrap(admin, [out], [static_cluster(
            "server", s_port, transport_socket=upstream_tls(pki, cert=cert,
                                                            sans=spiffe_exact(SERVER_ID)))]),
                   name=f"client-sidecar-{cert}")
        return r, port

    good, good_port = client_sidecar("client")
    bad, bad_port = client_sidecar("intruder")
    for i in range(3):
        res = curl(f"http://127.0.0.1:{good_port}/hop/{i}")
        assert res.status == 200, res
        assert json.loads(res.body)["path"] == f"/hop/{i}"
        res = curl(f"http://127.0.0.1:{bad_port}/hop/{i}")
        assert denied(res), res
    assert hstat(server, "ingress", "allowed") == 3
    assert hstat(server, "ingress", "denied") == 3
    # both client sidecars completed mTLS: the denial is RBAC's, not the handshake's
    assert good.stat("cluster.server.ssl.handshake") >= 1
    assert bad.stat("cluster.server.ssl.handshake") >= 1
    assert bad.stat("cluster.server.upstream_rq_403") == 3
    assert [q["path"] for q in upstream.requests] == ["/hop/0", "/hop/1", "/hop/2"]
