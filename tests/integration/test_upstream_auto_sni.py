"""Upstream auto_sni / auto_san_validation (HttpProtocolOptions.
upstream_http_protocol_options): a client Remora's TLS cluster sends each
request's host as SNI and pools connections per SNI; a server Remora picks
its filter chain by that SNI (tls_inspector + server_names), so its stats show
which name each connection carried.  With auto_san_validation the server
certificate must match the host, instead of the cluster's SAN matchers."""

import json

import pytest

from harness import (bootstrap, curl, hcm, route, route_config, sockaddr, static_cluster,
                     virtual_host)
import tls_pki
from test_tls import downstream_tls, fsrc, upstream_tls

TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters."
                                           "listener.tls_inspector.v3.TlsInspector"}}
HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls_pki.make_pki(tmp_path_factory.mktemp("pki"))


def server_sidecar(remora, ports, upstream, pki):
    """TLS listener whose chains are chosen by SNI: server.local, localhost,
    anything else."""
    admin, port = ports.get(), ports.get()
    rc = route_config([virtual_host([route({"prefix": "/"}, "app")])])
    chains = [{"filter_chain_match": {"server_names": [name]},
               "transport_socket": downstream_tls(pki, alpn=("http/1.1",)),
               "filters": [hcm(rc, stat_prefix=prefix)]}
              for name, prefix in (("server.local", "sni_server_local"), ("localhost", "sni_localhost"))]
    chains.append({"transport_socket": downstream_tls(pki, alpn=("http/1.1",)),   # any other name
                   "filters": [hcm(rc, stat_prefix="sni_other")]})
    lst = {"name": "tls", "address": sockaddr(port), "listener_filters": [TLS_INSPECTOR],
           "filter_chains": chains}
    return remora(bootstrap(admin, [lst], [static_cluster("app", upstream.port)]),
                  name="server"), port


def client_sidecar(remora, ports, pki, s_port, **upstream_opts):
    admin, port = ports.get(), ports.get()
    rc = route_config([virtual_host([route({"prefix": "/"}, "server")])])
    out = {"name": "out", "address": sockaddr(port),
           "filter_chains": [{"filters": [hcm(rc, stat_prefix="egress")]}]}
    # the cluster's own SAN matcher names a SPIFFE ID the server does not have:
    # only auto_san_validation (which replaces it) lets the handshake pass
    wrong = [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/x/sa/nobody"}}]
    cl = static_cluster("server", s_port, transport_socket=upstream_tls(pki, sans=wrong, sni="default.sni"))
    cl["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTS, "upstream_http_protocol_options": upstream_opts}}
    return remora(bootstrap(admin, [out], [cl]), name="client", concurrency=1), port


def test_auto_sni_pools_per_server_name(remora, upstream, ports, pki):
    server, s_port = server_sidecar(remora, ports, upstream, pki)
    client, c_port = client_sidecar(remora, ports, pki, s_port, auto_sni=True,
                                    auto_san_validation=True)
    for i in range(3):
        for host in ("server.local", "localhost:8080"):
            res = curl(f"http://127.0.0.1:{c_port}/r{i}", "-H", f"host: {host}")
            assert res.status == 200, (host, res)
            assert json.loads(res.body)["headers"]["host"] == host
    # each name reached its own chain, over one kept-alive connection per name
    assert server.stat("http.sni_server_local.downstream_rq_total") == 3
    assert server.stat("http.sni_localhost.downstream_rq_total") == 3
    assert server.stat("http.sni_server_local.downstream_cx_total") == 1
    assert server.stat("http.sni_localhost.downstream_cx_total") == 1
    assert client.stat("cluster.server.upstream_cx_total") == 2
    assert client.stat("cluster.server.ssl.fail_verify_san") == 0

    # a host the server certificate does not cover: auto_san_validation refuses it
    res = curl(f"http://127.0.0.1:{c_port}/x", "-H", "host: other.example")
    assert res.status == 503, res
    assert client.stat("cluster.server.ssl.fail_verify_san") == 1
    assert server.stat("http.sni_other.downstream_rq_total") == 0
    assert len(upstream.requests) == 6


def test_without_auto_san_validation_the_cluster_matchers_apply(remora, upstream, ports, pki):
    server, s_port = server_sidecar(remora, ports, upstream, pki)
    client, c_port = client_sidecar(remora, ports, pki, s_port, auto_sni=True)
    res = curl(f"http://127.0.0.1:{c_port}/x", "-H", "host: server.local")
    assert res.status == 503, res   # the cluster's (wrong) SPIFFE ID matcher refuses B
    assert client.stat("cluster.server.ssl.fail_verify_san") == 1
    assert len(upstream.requests) == 0


def test_auto_sni_config(ports, tmp_path):
    from test_tls import run_validate
    admin = ports.get()
    cl = static_cluster("server", 9)
    cl["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTS, "upstream_http_protocol_options": {"auto_sni": True, "bogus": 1}}}
    rc, err = run_validate(bootstrap(admin, [], [cl]), tmp_path)
    assert rc != 0 and "upstream_http_protocol_options.bogus: unknown field" in err, err
