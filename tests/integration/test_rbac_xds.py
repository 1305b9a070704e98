"""RBAC over xDS: the HTTP RBAC filter (with an RBACPerRoute override) and the
network RBAC filter arrive in listeners and routes pushed by remora-cp over
ADS (protobuf on the wire, xds/proto subset) and are enforced; a field of
RBAC that the subset leaves out (a CEL condition) is NACKed naming it."""


from harness import curl, wait_until
from test_remora_cp import make_cp, write, clusters_yaml, bootstrap, HCM, ROUTER  # noqa: F401

HRBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HRBAC_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NRBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def listeners(lport, tport, deny_header="x-deny", policy_extra=""):
    return f"""listeners:
- name: ingress
  address: {{socket_address: {{address: 127.0.0.1, port_value: {lport}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        '@type': {HCM}
        stat_prefix: ingress
        rds: {{route_config_name: r1, config_source: {{ads: {{}}, resource_api_version: V3}}}}
        http_filters:
        - name: envoy.filters.http.rbac
          typed_config:
            '@type': {HRBAC}
            rules:
              action: DENY
              policies:
                no-header:
                  permissions: [{{any: true}}]
                  principals: [{{header: {{name: {deny_header}, present_match: true}}}}]{policy_extra}
        - name: envoy.filters.http.router
          typed_config: {{'@type': {ROUTER}}}
- name: tcp
  address: {{socket_address: {{address: 127.0.0.1, port_value: {tport}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.rbac
      typed_config:
        '@type': {NRBAC}
        stat_prefix: tcp_in
        rules:
          action: ALLOW
          policies:
            other-net:
              permissions: [{{any: true}}]
              principals: [{{remote_ip: {{address_prefix: 10.0.0.0, prefix_len: 8}}}}]
    - name: envoy.filters.network.tcp_proxy
      typed_config: {{'@type': {TCP}, stat_prefix: t, cluster: ca}}
"""


ROUTES = f"""routes:
- name: r1
  virtual_hosts:
  - name: all
    domains: ['*']
    routes:
    - match: {{prefix: /admin}}
      route: {{cluster: ca}}
      typed_per_filter_config:
        envoy.filters.http.rbac:
          '@type': {HRBAC_ROUTE}
          rbac:
            rules:
              action: ALLOW
              policies:
                get-only:
                  permissions: [{{header: {{name: ':method', string_match: {{exact: GET}}}}}}]
                  principals: [{{not_id: {{url_path: {{path: {{prefix: /admin/secret}}}}}}}}]
    - match: {{prefix: /}}
      route: {{cluster: ca}}
"""


def test_rbac_filters_over_ads(remora, make_cp, make_upstream, ports, tmp_path):
    up = make_upstream("a")
    admin, lport, tport = ports.get(), ports.get(), ports.get()
    d = tmp_path / "cfg"
    write(d / "clusters.yaml", clusters_yaml({"ca": up.port}))
    write(d / "listeners.yaml", listeners(lport, tport))
    write(d / "routes.yaml", ROUTES)
    cp = make_cp(d)
    r = remora(bootstrap(admin, cp))
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/x").status == 200, 15, what="served")
    # listener-level DENY policy
    assert curl(f"http://127.0.0.1:{lport}/x", "-H", "x-deny: 1").status == 403
    # the per-route override replaces it: GET allowed except under /admin/secret
    assert curl(f"http://127.0.0.1:{lport}/admin/a", "-H", "x-deny: 1").status == 200
    assert curl(f"http://127.0.0.1:{lport}/admin/secret").status == 403
    assert curl(f"http://127.0.0.1:{lport}/admin/a", "-X", "POST", "-d", "x").status == 403
    # network RBAC: 127.0.0.1 is not in 10/8, the connection is closed unanswered
    assert curl(f"http://127.0.0.1:{tport}/x").status != 200
    stats = r.stats()
    assert stats.get("http.ingress.rbac.denied", 0) >= 3, stats
    assert stats.get("tcp_in.rbac.denied", 0) >= 1, stats

    # an RBAC field the subset leaves out (Policy.condition, CEL) is NACKed,
    # the old listener keeps serving
    write(d / "listeners.yaml", listeners(lport, tport, deny_header="x-other",
                                          policy_extra="\n                  condition: {}"))
    wait_until(lambda: cp.debug()["last_error"] or
               cp.debug()["proxies"][0]["types"]["listeners"]["last_nack"], 10,
               what="rejected")
    err = cp.debug()["last_error"] + cp.debug()["proxies"][0]["types"]["listeners"]["last_nack"]
    assert "condition" in err, err
    assert curl(f"http://127.0.0.1:{lport}/x", "-H", "x-deny: 1").status == 403

    # an edited policy is pushed and enforced
    write(d / "listeners.yaml", listeners(lport, tport, deny_header="x-other"))
    wait_until(lambda: curl(f"http://127.0.0.1:{lport}/x", "-H", "x-deny: 1").status == 200,
               10, what="edited policy")
    assert curl(f"http://127.0.0.1:{lport}/x", "-H", "x-other: 1").status == 403
    r.stop()


def test_catalog_authorization_compiles_to_rbac_and_mtls(make_cp, tmp_path):
    """--catalog: `identity` becomes the cluster's UpstreamTlsContext (SDS
    default + ROOTCA with the peer's SPIFFE ID as SAN), `allow` an RBAC filter
    on the service's inbound listener (exact ID, or a namespace prefix), and
    mistakes are reported with their position."""
    import json
    import re
    import urllib.request
    cat = tmp_path / "catalog" / "catalog.yaml"
    text = """trust_domain: example.org
services:
- name: web
  endpoints: ['127.0.0.1:9']
  identity: {namespace: prod, serviceAccount: web}
  allow:
  - from: {namespace: prod, serviceAccount: frontend}
  - from: {namespace: ops}
- name: app
  endpoints: ['127.0.0.1:10']
listeners:
- name: web-in
  port: 19080
  service: web
  routes: [{to: app}]
"""
    write(cat, text)
    cp = make_cp(None, catalog=str(cat))

    def rest(kind, node="n1"):
        req = urllib.request.Request(f"http://127.0.0.1:{cp.admin_port}/v3/discovery:{kind}",
                                     data=json.dumps({"node": {"id": node}}).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())["resources"]
    web = [c for c in rest("clusters") if c["name"] == "web"][0]
    ctx = web["transport_socket"]["typed_config"]["common_tls_context"]
    assert ctx["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    comb = ctx["combined_validation_context"]
    assert comb["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert comb["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://example.org/ns/prod/sa/web"}}]
    (lis,) = rest("listeners")
    chain = lis["filter_chains"][0]
    assert chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
    hcm = chain["filters"][0]["typed_config"]
    rbac = hcm["http_filters"][0]["typed_config"]["rules"]
    ids = rbac["policies"]["catalog-allow"]["principals"][0]["or_ids"]["ids"]
    assert [i["authenticated"]["principal_name"] for i in ids] == [
        {"exact": "spiffe://example.org/ns/prod/sa/frontend"},
        {"prefix": "spiffe://example.org/ns/ops/sa/"}]

    gen = cp.debug()["generation"]
    write(cat, text.replace("- from: {namespace: ops}", "- from: {serviceAccount: ops}"))
    wait_until(lambda: cp.debug()["last_error"], 10, what="catalog error")
    err = cp.debug()["last_error"]
    assert re.match(r"catalog\.yaml:8:11: services\[0\]\.allow\[1\]\.from: "
                    r"'namespace' is required", err), err
    write(cat, text.replace("service: web", "service: nope"))
    wait_until(lambda: "unknown service 'nope'" in cp.debug()["last_error"], 10,
               what="unknown service")
    assert cp.debug()["generation"] == gen
