"""remora-cp's catalog authorization (issue 9): `rules` (ALLOW / DENY with
from / to / when), per-service `mtls` (STRICT, PERMISSIVE, DISABLE) and
`protocol: tcp` services authorized by the network RBAC filter.

Everything runs on loopback, configured only by remora-cp: a server sidecar
(node `srv`, SPIFFE ID .../ns/default/sa/server) holds the services' inbound
listeners; two client sidecars (nodes `alice` and `bob`, their own SPIFFE
IDs) hold outbound listeners whose clusters originate mTLS to the server
sidecar. Certificates come from remora-cp's CA (token files), so the RBAC
principals are real SPIFFE IDs checked on real handshakes.

Checked: a DENY on a path prefix answers 403 there and 200 elsewhere; DENY
wins over an ALLOW that matches; method rules; a `when` header condition;
PERMISSIVE takes a plaintext curl and an mTLS client on the same port while
STRICT refuses the plaintext one, DISABLE is plaintext only (no TLS from
the callers either); a TCP service lets alice through and
closes bob's connection (rbac stat); catalog edits apply live and a broken
edit is reported with file:line:col while the last good catalog keeps
serving."""

import re

import pytest

import harness
from harness import curl, wait_until
from cp_common import CpProcess, ads_bootstrap, write_atomic as write

TD = "cluster.local"
TOKENS = {"tok-srv-0001": "server", "tok-alice-0002": "alice", "tok-bob-0003": "bob"}
CLIENTS = ("alice", "bob")


class CatalogCP(CpProcess):
    """remora-cp serving --catalog FILE with its CA (--ca-tokens)."""

    def __init__(self, d, catalog_text):
        d.mkdir(parents=True, exist_ok=True)
        (d / "catalog").mkdir(exist_ok=True)
        self.catalog = d / "catalog" / "catalog.yaml"
        write(self.catalog, catalog_text)
        tok = d / "tokens.yaml"
        tok.write_text("tokens:\n" + "".join(
            f"  {t}: {{namespace: default, service_account: {sa}}}\n"
            for t, sa in TOKENS.items()))
        self.grpc_port, self.ca_port, self.admin_port = (harness.free_port() for _ in range(3))
        self.root_pem = d / "ca" / "root-cert.pem"
        self._spawn(["--catalog", str(self.catalog), "--address", "127.0.0.1",
                     "--grpc-port", str(self.grpc_port), "--ca-port", str(self.ca_port),
                     "--admin-port", str(self.admin_port), "--ca-tokens", str(tok),
                     "--ca-dir", str(d / "ca")], d / "cp.stderr")

    def debug(self):
        import json
        res = curl(f"http://127.0.0.1:{self.admin_port}/debug/config")
        assert res.status == 200, res
        return json.loads(res.body)


def sidecar_bootstrap(node, admin_port, cp):
    return ads_bootstrap(admin_port, "127.0.0.1", cp.grpc_port, node_id=node, node_cluster=node)


# the rules of service `web` (HTTP): what most tests check
WEB_RULES = f"""
  - action: DENY
    to: {{paths: ['/admin/*']}}
  - action: DENY
    to: {{methods: [DELETE]}}
  - action: DENY
    when: [{{key: 'request.headers[x-block]', values: ['*']}}]
  - from: {{principals: [{TD}/ns/default/sa/alice]}}
  - from: {{principals: [{TD}/ns/default/sa/bob]}}
    to: {{methods: [GET, HEAD]}}
"""


def catalog(p, web_rules=WEB_RULES, db_from="alice"):
    """p: the port map. Services web (HTTP, rules), perm (PERMISSIVE),
    strict (STRICT) and db (TCP, ALLOW from one principal), all served by
    the srv sidecar's inbound listeners; each client has outbound listeners
    to them (mTLS from the clusters' `identity`)."""
    ident = "identity: {namespace: default, serviceAccount: server}"
    out = f"""trust_domain: {TD}
services:
- name: web
  endpoints: ['127.0.0.1:{p['web_in']}']
  {ident}
  rules:{web_rules}
- name: perm
  mtls: PERMISSIVE
  endpoints: ['127.0.0.1:{p['perm_in']}']
  {ident}
- name: strict
  mtls: STRICT
  endpoints: ['127.0.0.1:{p['strict_in']}']
  {ident}
- name: plain
  mtls: DISABLE
  endpoints: ['127.0.0.1:{p['plain_in']}']
  {ident}
- name: db
  protocol: tcp
  endpoints: ['127.0.0.1:{p['db_in']}']
  {ident}
  rules: [{{from: {{principals: [{TD}/ns/default/sa/{db_from}]}}}}]
- name: app
  endpoints: ['127.0.0.1:{p['app']}']
- name: app-tcp
  protocol: tcp
  endpoints: ['127.0.0.1:{p['app']}']
listeners:
- {{name: web-in, address: 127.0.0.1, port: {p['web_in']}, service: web, nodes: [srv], routes: [{{to: app}}]}}
- {{name: perm-in, address: 127.0.0.1, port: {p['perm_in']}, service: perm, nodes: [srv], routes: [{{to: app}}]}}
- {{name: strict-in, address: 127.0.0.1, port: {p['strict_in']}, service: strict, nodes: [srv], routes: [{{to: app}}]}}
- {{name: plain-in, address: 127.0.0.1, port: {p['plain_in']}, service: plain, nodes: [srv], routes: [{{to: app}}]}}
- {{name: db-in, address: 127.0.0.1, port: {p['db_in']}, service: db, nodes: [srv], to: app-tcp}}
"""
    for c in CLIENTS:
        for svc in ("web", "perm", "strict", "plain"):
            out += (f"- {{name: {svc}-out-{c}, address: 127.0.0.1, port: {p[svc + '_' + c]}, "
                    f"nodes: [{c}], routes: [{{to: {svc}}}]}}\n")
        out += (f"- {{name: db-out-{c}, address: 127.0.0.1, port: {p['db_' + c]}, "
                f"nodes: [{c}], to: db}}\n")
    return out


def stat_sum(r, name):
    """A counter summed over every scope listed under that name (a listener
    version still draining lists its own scopes beside the new one's)."""
    st, _, body = r.admin_get("/stats")
    assert st == 200
    total = 0
    for line in body.decode().splitlines():
        k, sep, v = line.partition(": ")
        if sep and k == name and v.strip().isdigit():
            total += int(v)
    return total


@pytest.fixture
def mesh(remora, make_upstream, tmp_path):
    up = make_upstream("app")
    p = {"app": up.port}
    for k in ("web_in", "perm_in", "strict_in", "plain_in", "db_in"):
        p[k] = harness.free_port()
    for c in CLIENTS:
        for svc in ("web", "perm", "strict", "plain", "db"):
            p[f"{svc}_{c}"] = harness.free_port()
    cp = CatalogCP(tmp_path / "cp", catalog(p))
    rs = {}
    try:
        for node, tok in (("srv", "tok-srv-0001"), ("alice", "tok-alice-0002"),
                          ("bob", "tok-bob-0003")):
            tf = tmp_path / f"{node}.token"
            tf.write_text(tok + "\n")
            rs[node] = remora(sidecar_bootstrap(node, harness.free_port(), cp), name=node,
                              extra_args=["--ca-address", f"127.0.0.1:{cp.ca_port}",
                                          "--ca-token-file", str(tf),
                                          # the CA port is TLS: verify remora-cp's serving
                                          # certificate against its root, for the Service name
                                          "--ca-root-cert", str(cp.root_pem),
                                          "--ca-server-name", "remora-cp"])
        yield {"cp": cp, "p": p, **rs}
    finally:
        cp.stop()


def get(port, path="/x", *args):
    return curl(f"http://127.0.0.1:{port}{path}", *args, timeout=5)


def served(port, path="/x"):
    """The listener is there and answers (from the cp's first push)."""
    wait_until(lambda: get(port, path).status not in (0, 503), 20,
               what=f"a listener on {port} to answer")


def steady(port, want, *args, path="/x", timeout=10):
    """After an edit: wait for three answers in a row with status want (a
    pooled connection opened on the old listener version may serve one more
    request under the old rules before it is drained)."""
    wait_until(lambda: [get(port, path, *args).status for _ in range(3)] == [want] * 3, timeout,
               what=f"{want} from {port}{path} {' '.join(args)}")


def test_http_rules_deny_first_then_allow(mesh):
    p, srv = mesh["p"], mesh["srv"]
    a, b = p["web_alice"], p["web_bob"]
    served(a)
    # alice is allowed by an ALLOW rule ...
    assert get(a, "/x").status == 200
    assert get(a, "/x", "-X", "POST", "-d", "v").status == 200
    # ... but a DENY on the path prefix wins over it: 403 there, 200 elsewhere
    res = get(a, "/admin/users")
    assert res.status == 403 and b"RBAC: access denied" in res.body, res.body
    assert get(a, "/administrator").status == 200     # "/admin/*" is the prefix "/admin/"
    assert get(a, "/api/admin/x").status == 200
    # a method rule (DENY DELETE) and a header condition (DENY when x-block is present)
    assert get(a, "/x", "-X", "DELETE").status == 403
    assert get(a, "/x", "-H", "x-block: 1").status == 403
    # bob is allowed for GET/HEAD only: POST matches no ALLOW rule
    served(b)
    assert get(b, "/x").status == 200
    assert get(b, "/x", "-X", "POST", "-d", "v").status == 403
    assert get(b, "/admin/x").status == 403
    # counted by the filter that decided: the DENY filter, then the ALLOW one
    assert stat_sum(srv, "http.web-in.rbac.catalog_deny.denied") >= 4
    assert stat_sum(srv, "http.web-in.rbac.catalog.denied") >= 1
    assert stat_sum(srv, "http.web-in.rbac.catalog.allowed") >= 4


def test_service_with_only_deny_rules_allows_the_rest_and_edits_apply_live(mesh):
    p, cp = mesh["p"], mesh["cp"]
    a, b = p["web_alice"], p["web_bob"]
    served(a)
    served(b)
    assert get(b, "/x", "-X", "POST", "-d", "v").status == 403
    # only DENY rules: everything they do not match is allowed
    write(cp.catalog, catalog(p, web_rules="\n  - action: DENY\n    to: {paths: ['/admin/*']}\n"))
    steady(b, 200, "-X", "POST", "-d", "v")
    steady(a, 200, "-X", "DELETE")
    assert get(b, "/admin/x").status == 403
    assert get(a, "/admin/x").status == 403
    # deny bob by principal (DENY from), alice still in
    write(cp.catalog, catalog(p, web_rules="\n  - action: DENY\n    from: {principals: "
                                           "['*/sa/bob']}\n"))
    steady(b, 403)
    steady(a, 200)
    # a broken edit: reported with its position, the last good catalog keeps serving
    gen = cp.debug()["generation"]
    write(cp.catalog, catalog(p, web_rules="\n  - action: DENY\n    to: {paths: ['/a*b']}\n"))
    wait_until(lambda: cp.debug()["last_error"], 10, what="catalog error")
    err = cp.debug()["last_error"]
    assert re.match(r"catalog\.yaml:\d+:\d+: services\[0\]\.rules\[0\]\.to\.paths\[0\]: "
                    r"'\*' may only start or end a value", err), err
    assert cp.debug()["generation"] == gen
    # steady, not one request: bob's sidecar may still pool a connection
    # opened under the version before "deny bob" (each worker has its own
    # pool, and steady(b, 403) above may only have used one of them); it
    # answers one more request under those rules, then drains.  A broken edit
    # that changed the rules would fail these (every connection would answer
    # 200 to bob).
    steady(b, 403)
    steady(a, 200)


def test_mtls_modes_permissive_strict_disable(mesh):
    p, srv = mesh["p"], mesh["srv"]
    # PERMISSIVE: an mTLS client (alice's sidecar) and a plaintext curl, same port
    hs = f"listener.127.0.0.1_{p['perm_in']}.ssl.handshake"
    assert stat_sum(srv, hs) == 0
    served(p["perm_alice"])
    for _ in range(3):
        assert get(p["perm_alice"]).status == 200
    assert stat_sum(srv, hs) >= 1, "alice's requests did not arrive over TLS"
    assert stat_sum(mesh["alice"], "cluster.perm.ssl.handshake") >= 1
    res = get(p["perm_in"], "/plain")
    assert res.status == 200, res.stderr
    assert b"/plain" in res.body
    assert stat_sum(srv, "tls_inspector.tls_not_found") >= 1
    # STRICT: the mTLS client gets through, the plaintext one does not
    served(p["strict_alice"])
    assert get(p["strict_alice"]).status == 200
    res = get(p["strict_in"], "/plain")
    assert res.status == 0, (res.status, res.body[:200])
    # DISABLE: plaintext only; the callers' cluster does not originate TLS
    # although the service has an identity
    served(p["plain_alice"])
    assert get(p["plain_alice"]).status == 200
    assert get(p["plain_in"], "/plain").status == 200
    assert stat_sum(mesh["alice"], "cluster.plain.upstream_cx_total") >= 1
    assert stat_sum(mesh["alice"], "cluster.plain.ssl.handshake") == 0
    # a TLS client without a certificate is refused by STRICT and PERMISSIVE alike
    for port in (p["strict_in"], p["perm_in"]):
        res = curl(f"https://127.0.0.1:{port}/x", "-k", timeout=5)
        assert res.status == 0, (port, res.status)


def test_tcp_service_authorized_by_principal(mesh):
    p, srv, cp = mesh["p"], mesh["srv"], mesh["cp"]
    served(p["db_alice"])
    # alice: through tcp_proxy -> mTLS -> network RBAC -> tcp_proxy -> app
    res = get(p["db_alice"], "/over-tcp")
    assert res.status == 200 and b"/over-tcp" in res.body, res.body
    # bob: his sidecar connects and handshakes, the server closes the
    # connection: no HTTP answer at all
    before = stat_sum(srv, "tcp.db-in.rbac.denied")
    res = get(p["db_bob"], "/over-tcp")
    assert res.status == 0, (res.status, res.body[:200])
    wait_until(lambda: stat_sum(srv, "tcp.db-in.rbac.denied") > before, 5,
               what="tcp.db-in.rbac.denied")
    assert stat_sum(srv, "tcp.db-in.rbac.allowed") >= 1
    # the edit swaps them
    write(cp.catalog, catalog(p, db_from="bob"))
    steady(p["db_bob"], 200)
    steady(p["db_alice"], 0)
