"""Transparent capture end to end, in two network namespaces ("pods").

  pod A (10.77.0.1)                              pod B (10.77.0.2, 10.77.0.3)
  curl (root) --iptables--> remora :15001  ===>  iptables --> remora :15006 --> app :8080
                             (UID 1337)    veth                 (UID 1337)        (127.0.0.1)

Each pod runs remora-init in its namespace and a Remora as UID/GID 1337.  The
client in A connects to B's IP:port exactly as without a mesh; each sidecar's
stats and the app's view of the peer prove which way the bytes went:

  8080  A: listener 10.77.0.2:8080 (bind_to_port: false) <- use_original_dst hand-off,
           HTTP, STATIC cluster.   B: filter chain destination_port 8080, HTTP.
  9090  A: listener 0.0.0.0:9090 (bind_to_port: false, the wildcard match), tcp_proxy to an
           ORIGINAL_DST cluster.   B: chain 9090, tcp_proxy.
  7070  A: no listener: the virtual listener's own chain (passthrough), tcp_proxy to an
           ORIGINAL_DST cluster.   B: chain 7070, tcp_proxy.
  8081  excluded port (A outbound, B inbound): no proxy at all; the app sees A's address.
  10.77.0.3  excluded CIDR in A: A's sidecar is bypassed, B still captures inbound.

The A -> B hop on 8080 is mTLS (issues 5 and 8): A's outbound_8080 cluster
originates TLS with A's SPIFFE certificate (spiffe://cluster.local/ns/default/sa/client)
and checks B's (.../sa/server); B's 15006 listener has tls_inspector and a TLS
filter chain for 8080 (transport_protocol tls) whose HTTP RBAC allows only A's
SPIFFE ID, and whose access log shows %DOWNSTREAM_PEER_URI_SAN%.  The plaintext
8080 chain stays as the permissive fallback: traffic that bypasses A's sidecar
(the excluded CIDR) still reaches B in cleartext.
  8090  A: listener 10.77.0.2:8090 whose cluster presents a different SPIFFE ID
        (.../sa/intruder): B's RBAC on its TLS 8090 chain answers 403.

Protocol detection on B's inbound listener (http_inspector, 1 s timeout, continue on timeout):
  8888  an "unusual" port with an HTTP chain matched on application_protocols: detected as HTTP.
  3306  server-first service on an unlisted port: the client waits for the banner; detection
        times out and the default chain (tcp_proxy) carries it.
  5432  server-first service on an opaque port (filter_disabled for 5432): no detection, no
        timeout.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest

import harness
import tls_pki
from tls_pki import CLIENT_ID, INTRUDER_ID, SERVER_ID

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INIT = os.path.join(ROOT, "deploy", "init", "remora-init")
A_IP, B_IP, B_IP2 = "10.77.0.1", "10.77.0.2", "10.77.0.3"
A_IP6, B_IP6 = "fd77::1", "fd77::2"
PROXY_UID = 1337
APP_PORTS = (8080, 9090, 7070, 8081, 8888, 8090)
BANNER_PORTS = (3306, 5432)

BANNER_APP = textwrap.dedent("""\
    # A server-first service (MySQL/SMTP style): a banner on accept, then
    # "250 <line>" for every line received.
    import socket, sys, threading
    def serve(c):
        try:
            c.sendall(b"220 banner\\r\\n")
            f = c.makefile("rb")
            for line in f:
                c.sendall(b"250 " + line.strip() + b"\\r\\n")
        except OSError:
            pass
        finally:
            c.close()
    def run(port):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", port))
        ls.listen(16)
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    for p in sys.argv[1:]:
        threading.Thread(target=run, args=(int(p),), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
    """)

BANNER_CLIENT = textwrap.dedent("""\
    # Connect, say nothing, wait for the banner; then one command.
    import json, socket, sys, time
    t0 = time.monotonic()
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
    f = s.makefile("rb")
    banner = f.readline()
    waited = time.monotonic() - t0
    s.sendall(b"HELO pod-a\\r\\n")
    reply = f.readline()
    print(json.dumps({"banner": banner.decode(), "reply": reply.decode(), "waited": waited}))
    """)
TLS_INSPECTOR_LF = {"name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters."
                                              "listener.tls_inspector.v3.TlsInspector"},
                    "filter_disabled": {"destination_port_range": {"start": 5432, "end": 5433}}}
HTTP_INSPECTOR_LF = {"name": "envoy.filters.listener.http_inspector",
                     "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters."
                                               "listener.http_inspector.v3.HttpInspector"},
                     "filter_disabled": {"destination_port_range": {"start": 5432, "end": 5433}}}

APP = textwrap.dedent("""\
    # A tiny HTTP app: answers every request with JSON naming the port, the
    # peer address it saw and the request line; logs one JSON line per request.
    import json, socket, sys, threading, time, urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    log = open(sys.argv[1], "a", buffering=1)
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if "sleep" in q:    # a slow request (the SIGTERM test)
                time.sleep(float(q["sleep"][0]))
            rec = {"port": self.server.server_address[1], "peer": self.client_address[0],
                   "path": self.path, "xff": self.headers.get("x-forwarded-for")}
            log.write(json.dumps(rec) + "\\n")
            body = json.dumps(rec).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    class S(ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True
        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()
    for p in sys.argv[2:]:
        srv = S(("::", int(p)), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
    """)

ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
ORIGINAL_DST_LF = {"name": "envoy.filters.listener.original_dst",
                   "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener."
                                             "original_dst.v3.OriginalDst"}}


def hcm(prefix, cluster, filters=(), **extra):
    return {"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": prefix,
                "route_config": {"name": prefix, "virtual_hosts": [
                    {"name": prefix, "domains": ["*"],
                     "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
                "http_filters": [*filters, ROUTER], **extra}}


def file_log(path, fmt):
    return [{"name": "envoy.access_loggers.file",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers."
                                       "file.v3.FileAccessLog",
                              "path": path,
                              "log_format": {"text_format_source": {"inline_string": fmt}}}}]


# A: the request as it left pod A; B: the same request, with A's identity
A_LOG_FMT = "A %REQ(:PATH)% %REQ(X-REQUEST-ID)% %RESPONSE_CODE% %UPSTREAM_HOST%\n"
B_LOG_FMT = ("B %REQ(:PATH)% %REQ(X-REQUEST-ID)% %RESPONSE_CODE% %DOWNSTREAM_PEER_URI_SAN% "
             "%UPSTREAM_HOST%\n")


def tls_files(pki, who):
    return {"tls_certificates": [{"certificate_chain": {"filename": pki[who]},
                                  "private_key": {"filename": pki[who + "_key"]}}],
            "validation_context": {"trusted_ca": {"filename": pki["ca"]}}}


def upstream_mtls(pki, who):
    """A's side of the hop: present who's SPIFFE certificate, accept only B's."""
    common = tls_files(pki, who)
    common["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "URI", "matcher": {"exact": SERVER_ID}}]
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common}}


def downstream_mtls(pki):
    """B's side: any certificate of the mesh CA; RBAC decides who may call."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": tls_files(pki, "server"), "require_client_certificate": True}}


def rbac_allow(spiffe_id):
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"mesh-callers": {
            "permissions": [{"any": True}],
            "principals": [{"authenticated": {"principal_name": {"exact": spiffe_id}}}]}}}}}


def tcp(prefix, cluster):
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                                      "tcp_proxy.v3.TcpProxy",
                             "stat_prefix": prefix, "cluster": cluster}}


def sockaddr(ip, port):
    return {"socket_address": {"address": ip, "port_value": port}}


def static_cluster(name, ip, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": sockaddr(ip, port)}}]}]}}


def odst_cluster(name):
    return {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "2s", "cleanup_interval": "30s"}


def config_a(b_ip, pki, log):
    """Pod A's sidecar: Istio-style outbound side."""
    return {
        "admin": {"address": sockaddr("127.0.0.1", 15000)},
        "static_resources": {
            "listeners": [
                {"name": "virtualOutbound", "address": sockaddr("0.0.0.0", 15001),
                 "use_original_dst": True, "listener_filters": [ORIGINAL_DST_LF],
                 "filter_chains": [{"filters": [tcp("PassthroughCluster", "PassthroughCluster")]}]},
                {"name": "virtualOutbound6", "address": sockaddr("::", 15001),
                 "use_original_dst": True, "listener_filters": [ORIGINAL_DST_LF],
                 "filter_chains": [{"filters": [tcp("PassthroughCluster", "PassthroughCluster")]}]},
                {"name": f"{b_ip}_8080", "address": sockaddr(b_ip, 8080), "bind_to_port": False,
                 "filter_chains": [{"filters": [hcm("outbound_8080", "outbound_8080",
                                                    access_log=file_log(log, A_LOG_FMT))]}]},
                {"name": f"{b_ip}_8090", "address": sockaddr(b_ip, 8090), "bind_to_port": False,
                 "filter_chains": [{"filters": [hcm("outbound_8090", "outbound_8090")]}]},
                {"name": "0.0.0.0_9090", "address": sockaddr("0.0.0.0", 9090),
                 "bind_to_port": False,
                 "filter_chains": [{"filters": [tcp("outbound_9090", "outbound_9090")]}]},
            ],
            "clusters": [dict(static_cluster("outbound_8080", b_ip, 8080),
                              transport_socket=upstream_mtls(pki, "client")),
                         dict(static_cluster("outbound_8090", b_ip, 8090),
                              transport_socket=upstream_mtls(pki, "intruder")),
                         odst_cluster("outbound_9090"), odst_cluster("PassthroughCluster")],
        },
    }


def config_b(pki, log):
    """Pod B's sidecar: inbound side, one filter chain per app port; mTLS +
    RBAC for 8080 and 8090, a plaintext fallback for 8080."""
    chains = [{"filter_chain_match": {"destination_port": p, "transport_protocol": "tls"},
               "transport_socket": downstream_mtls(pki),
               "filters": [hcm(f"inbound_{p}", f"inbound_{p}", filters=[rbac_allow(CLIENT_ID)],
                               access_log=file_log(log, B_LOG_FMT))]}
              for p in (8080, 8090)]
    chains.append({"filter_chain_match": {"destination_port": 8080},
                   "filters": [hcm("inbound_8080_plaintext", "inbound_8080")]})
    for p in (9090, 7070, 5432):
        chains.append({"filter_chain_match": {"destination_port": p},
                       "filters": [tcp(f"inbound_{p}", f"inbound_{p}")]})
    chains.append({"filter_chain_match": {"destination_port": 8888,
                                          "application_protocols": ["http/1.1", "h2c"]},
                   "filters": [hcm("inbound_8888", "inbound_8888")]})
    lf = [ORIGINAL_DST_LF, TLS_INSPECTOR_LF, HTTP_INSPECTOR_LF]
    detect = {"listener_filters_timeout": "1s", "continue_on_listener_filters_timeout": True,
              # unlisted ports: Istio passes them through to the original destination;
              # Remora cannot bind 127.0.0.6 yet, so this test sends them to 127.0.0.1:3306
              "default_filter_chain": {"filters": [tcp("inbound_unlisted", "inbound_3306")]}}
    return {
        "admin": {"address": sockaddr("127.0.0.1", 15000)},
        "static_resources": {
            "listeners": [{"name": "virtualInbound", "address": sockaddr("0.0.0.0", 15006),
                           "listener_filters": lf, "filter_chains": chains, **detect},
                          {"name": "virtualInbound6", "address": sockaddr("::", 15006),
                           "listener_filters": lf, "filter_chains": chains, **detect}],
            "clusters": [static_cluster(f"inbound_{p}", "127.0.0.1", p)
                         for p in (8080, 9090, 7070, 8888, 3306, 5432, 8090)],
        },
    }


def ns_run(ns, *cmd, check=True, timeout=30):
    p = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} in {ns} failed ({p.returncode}): {p.stderr}")
    return p


def pod_pair(na, nb, tag, created, a_addrs, b_addrs):
    """Two network namespaces (appended to created as they are made, for the
    caller's cleanup) joined by a veth pair carrying a_addrs / b_addrs
    ("ip/len"; IPv6 ones without duplicate address detection).  Skips the
    test when the kernel refuses namespaces."""
    for ns in (na, nb):
        p = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"the kernel refuses network namespaces: {p.stderr.strip()}")
        created.append(ns)
        ns_run(ns, "ip", "link", "set", "lo", "up")
    va, vb = f"va{tag}", f"vb{tag}"
    subprocess.run(["ip", "link", "add", va, "netns", na, "type", "veth", "peer", "name", vb,
                    "netns", nb], check=True, capture_output=True)
    for ns, dev, addrs in ((na, va, a_addrs), (nb, vb, b_addrs)):
        for a in addrs:
            ns_run(ns, "ip", *(["-6"] if ":" in a else []), "addr", "add", a, "dev", dev,
                   *(["nodad"] if ":" in a else []))
    ns_run(na, "ip", "link", "set", va, "up")
    ns_run(nb, "ip", "link", "set", vb, "up")


class NsRemora(harness.Remora):
    """A Remora run inside a network namespace as UID/GID 1337; its admin
    port is reached with curl inside the namespace."""

    def __init__(self, workdir, config, ns, **kw):
        super().__init__(workdir, config, **kw)
        self.ns = ns
        self.admin_port = 15000
        os.chmod(self.config_path, 0o644)

    def start(self, wait_ready=True, timeout=30.0):
        binary = harness.remora_bin()
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        argv = ["ip", "netns", "exec", self.ns, "setpriv", "--reuid", str(PROXY_UID),
                "--regid", str(PROXY_UID), "--clear-groups", "--", binary] + self.args
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=self.env, cwd=self.workdir,
                                     start_new_session=True)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def admin_request(self, method, path, body=None, headers=None, timeout=5.0):
        args = ["curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}", "-X", method,
                f"http://127.0.0.1:{self.admin_port}{path}"]
        p = ns_run(self.ns, *args, check=False, timeout=timeout + 5)
        if p.returncode != 0:
            raise OSError(f"admin {path}: curl exit {p.returncode}")
        text, _, code = p.stdout.rpartition("\n")
        return int(code), {}, text.encode()


@pytest.fixture(scope="module")
def workdir():
    # readable by UID 1337 (pytest's tmp_path is root-only)
    d = tempfile.mkdtemp(prefix="remora-capture-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables, setpriv)"
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "setpriv", "curl"):
        if not shutil.which(tool):
            return f"{tool} is not installed (deploy/install-deps.sh installs it)"
    binary = harness.remora_bin()
    if not os.access(binary, os.X_OK):
        return None   # the first test fails loudly on the missing binary
    # UID 1337 must be able to reach and run the binary
    p = subprocess.run(["setpriv", "--reuid", str(PROXY_UID), "--regid", str(PROXY_UID),
                        "--clear-groups", "--", "test", "-x", binary], capture_output=True)
    if p.returncode != 0:
        pytest.fail(f"UID {PROXY_UID} cannot execute {binary}: make its directories world-readable")
    return None


@pytest.fixture(scope="module")
def pods(workdir):
    """Two namespaces joined by a veth pair; apps, rules and sidecars
    started.  Everything is torn down even when setup fails half-way."""
    why = _skip_reason()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:6]
    na, nb = f"rmA-{tag}", f"rmB-{tag}"
    created, procs, remoras = [], [], []
    try:
        pod_pair(na, nb, tag, created, [f"{A_IP}/24", f"{A_IP6}/64"],
                 [f"{B_IP}/24", f"{B_IP2}/24", f"{B_IP6}/64"])

        # B's app (plain, as root: it is not the proxy)
        app_py = os.path.join(workdir, "app.py")
        with open(app_py, "w") as f:
            f.write(APP)
        app_log = os.path.join(workdir, "app.log")
        open(app_log, "w").close()
        app = subprocess.Popen(["ip", "netns", "exec", nb, sys.executable, app_py, app_log,
                                *map(str, APP_PORTS)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        procs.append(app)
        assert app.stdout.readline().strip() == "ready", "B's app did not start"
        banner_py = os.path.join(workdir, "banner.py")
        with open(banner_py, "w") as f:
            f.write(BANNER_APP)
        with open(os.path.join(workdir, "banner_client.py"), "w") as f:
            f.write(BANNER_CLIENT)
        bapp = subprocess.Popen(["ip", "netns", "exec", nb, sys.executable, banner_py,
                                 *map(str, BANNER_PORTS)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        procs.append(bapp)
        assert bapp.stdout.readline().strip() == "ready", "B's banner service did not start"

        # the rules: IPv6 too (the namespaces have global IPv6 addresses)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMORA_")}
        env_a = dict(env, REMORA_OUTBOUND_PORTS_EXCLUDE="8081",
                     REMORA_OUTBOUND_IP_RANGES_EXCLUDE=f"{B_IP2}/32")
        env_b = dict(env, REMORA_INBOUND_PORTS_EXCLUDE="15090,15021,15020,8081")
        for ns, e in ((na, env_a), (nb, env_b)):
            p = subprocess.run(["ip", "netns", "exec", ns, "sh", INIT], env=e, capture_output=True,
                               text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            assert "REMORA_OUTPUT" in ns_run(ns, "ip6tables-save", "-t", "nat").stdout

        # the mesh PKI and the access logs, readable / writable by UID 1337
        pki = tls_pki.make_pki(os.path.join(workdir, "pki"))
        os.chmod(pki["dir"], 0o755)
        for fn in os.listdir(pki["dir"]):
            if fn.endswith((".pem", ".key")):
                os.chmod(os.path.join(pki["dir"], fn), 0o644)
        logs = {k: os.path.join(workdir, f"access-{k}.log") for k in ("a", "b")}
        for path in logs.values():
            open(path, "w").close()
            os.chmod(path, 0o666)
        ra = NsRemora(workdir, config_a(B_IP, pki, logs["a"]), na, name="podA", concurrency=2)
        rb = NsRemora(workdir, config_b(pki, logs["b"]), nb, name="podB", concurrency=2)
        for r in (ra, rb):
            remoras.append(r)
            r.start()
        yield {"a": ra, "b": rb, "na": na, "nb": nb, "app_log": app_log, "workdir": workdir,
               "logs": logs}
    finally:
        problems = []
        for r in remoras:
            problems += r.finalize()
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


def app_get(pods, url, *extra):
    """curl from pod A's app (root: captured like any application)."""
    p = ns_run(pods["na"], "curl", "-s", "-m", "10", "-g", *extra, url, check=False, timeout=20)
    assert p.returncode == 0, f"curl {url} failed ({p.returncode}): {p.stderr}"
    return json.loads(p.stdout)


def app_log(pods):
    with open(pods["app_log"]) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def snap(pods):
    return pods["a"].stats(), pods["b"].stats()


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


A_OUT = "listener.0.0.0.0_15001.downstream_cx_total"
B_IN = "listener.0.0.0.0_15006.downstream_cx_total"


def test_http_through_both_sidecars(pods):
    a0, b0 = snap(pods)
    n0 = len(app_log(pods))
    got = app_get(pods, f"http://{B_IP}:8080/hello")
    assert got["port"] == 8080 and got["path"] == "/hello"
    # B's app was reached from B's sidecar (loopback), not from pod A
    assert got["peer"] in ("127.0.0.1", "::ffff:127.0.0.1"), got
    a1, b1 = snap(pods)
    # A: the virtual listener handed the connection to the 10.77.0.2:8080 listener
    assert delta(a0, a1, f"listener.{B_IP}_8080.downstream_cx_total") == 1
    assert delta(a0, a1, A_OUT) == 0
    assert delta(a0, a1, "http.outbound_8080.downstream_rq_total") == 1
    assert delta(a0, a1, "cluster.outbound_8080.upstream_rq_total") == 1
    # B: inbound capture, filter chain chosen by the restored destination port
    assert delta(b0, b1, B_IN) == 1
    assert delta(b0, b1, "http.inbound_8080.downstream_rq_total") == 1
    assert delta(b0, b1, "cluster.inbound_8080.upstream_rq_total") == 1
    log = app_log(pods)[n0:]
    assert [r["path"] for r in log] == ["/hello"]


def test_wildcard_listener_and_original_dst_cluster(pods):
    a0, b0 = snap(pods)
    got = app_get(pods, f"http://{B_IP}:9090/wild")
    assert got["port"] == 9090 and got["peer"] in ("127.0.0.1", "::ffff:127.0.0.1")
    a1, b1 = snap(pods)
    assert delta(a0, a1, "listener.0.0.0.0_9090.downstream_cx_total") == 1
    assert delta(a0, a1, "tcp.outbound_9090.downstream_cx_total") == 1
    assert delta(a0, a1, "cluster.outbound_9090.upstream_cx_total") == 1
    assert a1.get("cluster.outbound_9090.membership_total", 0) >= 1
    assert delta(b0, b1, "tcp.inbound_9090.downstream_cx_total") == 1
    assert delta(b0, b1, "cluster.inbound_9090.upstream_cx_total") == 1


def test_passthrough_chain_of_the_virtual_listener(pods):
    a0, b0 = snap(pods)
    for i in range(3):
        got = app_get(pods, f"http://{B_IP}:7070/pass{i}")
        assert got["port"] == 7070
    a1, b1 = snap(pods)
    # no listener for :7070: the virtual listener's own chain, ORIGINAL_DST cluster
    assert delta(a0, a1, A_OUT) == 3
    assert delta(a0, a1, "tcp.PassthroughCluster.downstream_cx_total") == 3
    assert delta(a0, a1, "cluster.PassthroughCluster.upstream_cx_total") == 3
    # the sidecar's own upstream connections (UID 1337) were not captured again:
    # one downstream connection per client connection, no loop
    assert delta(a0, a1, "listener.0.0.0.0_9090.downstream_cx_total") == 0
    assert delta(b0, b1, "tcp.inbound_7070.downstream_cx_total") == 3


def test_excluded_port_bypasses_both_proxies(pods):
    a0, b0 = snap(pods)
    got = app_get(pods, f"http://{B_IP}:8081/direct")
    assert got["port"] == 8081
    assert got["peer"].endswith(A_IP), got   # the app saw pod A itself
    a1, b1 = snap(pods)
    assert delta(a0, a1, A_OUT) == 0
    assert sum(delta(a0, a1, k) for k in a1 if k.endswith("downstream_cx_total")) == 0
    assert delta(b0, b1, B_IN) == 0


def test_excluded_cidr_bypasses_the_outbound_proxy(pods):
    a0, b0 = snap(pods)
    got = app_get(pods, f"http://{B_IP2}:8080/cidr")
    assert got["port"] == 8080
    a1, b1 = snap(pods)
    # A's sidecar saw nothing (10.77.0.3/32 excluded); B still captured it inbound
    assert sum(delta(a0, a1, k) for k in a1 if k.endswith("downstream_cx_total")) == 0
    assert delta(b0, b1, B_IN) == 1
    # cleartext from a client without a sidecar: the plaintext fallback chain
    assert delta(b0, b1, "http.inbound_8080_plaintext.downstream_rq_total") == 1
    assert delta(b0, b1, "http.inbound_8080.downstream_rq_total") == 0
    assert got["peer"] in ("127.0.0.1", "::ffff:127.0.0.1")


def test_ipv6_capture(pods):
    a0, b0 = snap(pods)
    got = app_get(pods, f"http://[{B_IP6}]:7070/v6")
    assert got["port"] == 7070 and got["path"] == "/v6"
    assert got["peer"] in ("127.0.0.1", "::ffff:127.0.0.1")
    a1, b1 = snap(pods)
    # ip6tables REDIRECT to the [::]:15001 / [::]:15006 listeners; IP6T_SO_ORIGINAL_DST
    assert delta(a0, a1, "listener.[__]_15001.downstream_cx_total") == 1
    assert delta(a0, a1, "cluster.PassthroughCluster.upstream_cx_total") == 1
    assert delta(b0, b1, "listener.[__]_15006.downstream_cx_total") == 1
    assert delta(b0, b1, "cluster.inbound_7070.upstream_cx_total") == 1


def banner_get(pods, port):
    p = ns_run(pods["na"], sys.executable, os.path.join(pods["workdir"], "banner_client.py"),
               B_IP, str(port), check=False, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


B_TIMEOUTS = "listener.0.0.0.0_15006.downstream_pre_cx_timeout"


def test_http_on_unusual_port_is_detected(pods):
    a0, b0 = snap(pods)
    got = app_get(pods, f"http://{B_IP}:8888/unusual")
    assert got["port"] == 8888 and got["path"] == "/unusual"
    a1, b1 = snap(pods)
    assert delta(b0, b1, "http_inspector.http11_found") == 1
    assert delta(b0, b1, "http.inbound_8888.downstream_rq_total") == 1
    assert delta(b0, b1, B_TIMEOUTS) == 0
    # A had no listener for 8888: passthrough, as for any unknown port
    assert delta(a0, a1, "tcp.PassthroughCluster.downstream_cx_total") == 1


def test_server_first_protocol_on_unlisted_port(pods):
    a0, b0 = snap(pods)
    got = banner_get(pods, 3306)
    assert got["banner"] == "220 banner\r\n"
    assert got["reply"] == "250 HELO pod-a\r\n"
    # the banner could only come once B's 1 s detection timeout expired
    assert got["waited"] >= 0.9, got
    a1, b1 = snap(pods)
    assert delta(b0, b1, B_TIMEOUTS) == 1
    assert delta(b0, b1, "tcp.inbound_unlisted.downstream_cx_total") == 1
    assert delta(b0, b1, "http_inspector.http_not_found") == 0
    assert delta(a0, a1, "tcp.PassthroughCluster.downstream_cx_total") == 1


def test_server_first_protocol_on_opaque_port(pods):
    a0, b0 = snap(pods)
    got = banner_get(pods, 5432)
    assert got["banner"] == "220 banner\r\n"
    assert got["reply"] == "250 HELO pod-a\r\n"
    a1, b1 = snap(pods)
    # http_inspector is disabled for 5432: nothing waited, nothing timed out
    assert delta(b0, b1, B_TIMEOUTS) == 0
    assert delta(b0, b1, "tcp.inbound_5432.downstream_cx_total") == 1
    for k in ("http10_found", "http11_found", "http2_found", "http_not_found"):
        assert delta(b0, b1, "http_inspector." + k) == 0


# ---------------------------------------------------------------------------
# the A -> B hop is mTLS; B's RBAC sees A's SPIFFE ID

def access_log_lines(path, needle, timeout=5.0):
    """The access-log lines containing needle (the flusher writes them
    shortly after the request)."""
    found = []

    def check():
        with open(path) as f:
            found[:] = [ln.rstrip("\n") for ln in f if needle in ln]
        return bool(found)
    harness.wait_until(check, timeout, what=f"{needle} in {path}")
    return found


def test_mtls_hop_b_sees_a_spiffe_id(pods):
    """A-app -> A-sidecar -> (mTLS) -> B-sidecar -> B-app, proven by both
    access logs, the app's log and the stats."""
    rid = uuid.uuid4().hex
    path = f"/mtls/{rid}"
    a0, b0 = snap(pods)
    n0 = len(app_log(pods))
    got = app_get(pods, f"http://{B_IP}:8080{path}", "-H", f"x-request-id: {rid}")
    assert got["path"] == path and got["port"] == 8080
    a1, b1 = snap(pods)
    # B's RBAC allowed A's identity
    assert delta(b0, b1, "http.inbound_8080.rbac.allowed") == 1
    assert delta(b0, b1, "http.inbound_8080.rbac.denied") == 0
    assert delta(b0, b1, "http.inbound_8080_plaintext.downstream_rq_total") == 0
    # the hop was TLS from A's cluster (its connection may be reused)
    assert a1.get("cluster.outbound_8080.ssl.handshake", 0) >= 1
    assert a1.get("cluster.outbound_8080.ssl.fail_verify_san", 0) == 0
    # access logs: A sent it to B's address; B saw A's SPIFFE ID and sent it to the app
    (a_line,) = access_log_lines(pods["logs"]["a"], path)
    assert a_line == f"A {path} {rid} 200 {B_IP}:8080", a_line
    (b_line,) = access_log_lines(pods["logs"]["b"], path)
    assert b_line == f"B {path} {rid} 200 {CLIENT_ID} 127.0.0.1:8080", b_line
    assert [r["path"] for r in app_log(pods)[n0:]] == [path]


def test_mtls_hop_other_spiffe_id_is_denied(pods):
    """A's 8090 cluster presents another SPIFFE ID of the same CA: the
    handshake succeeds, B's RBAC answers 403 and the app sees nothing."""
    rid = uuid.uuid4().hex
    path = f"/denied/{rid}"
    a0, b0 = snap(pods)
    n0 = len(app_log(pods))
    p = ns_run(pods["na"], "curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}",
               "-H", f"x-request-id: {rid}", f"http://{B_IP}:8090{path}", check=False, timeout=20)
    body, _, code = p.stdout.rpartition("\n")
    assert (code, body) == ("403", "RBAC: access denied"), p.stdout
    a1, b1 = snap(pods)
    assert delta(b0, b1, "http.inbound_8090.rbac.denied") == 1
    assert delta(b0, b1, "http.inbound_8090.rbac.allowed") == 0
    assert a1.get("cluster.outbound_8090.ssl.handshake", 0) >= 1
    (b_line,) = access_log_lines(pods["logs"]["b"], path)
    assert b_line == f"B {path} {rid} 403 {INTRUDER_ID} -", b_line
    assert app_log(pods)[n0:] == []


def test_sigterm_drains_inbound_in_the_pod(pods):
    """Runs last (it stops B's sidecar).  SIGTERM while a slow request is in
    flight A-app -> A -> B -> B-app: the request completes, B's inbound
    listener refuses new connections at once, and B exits 0 within its drain
    time (the harness starts it with --drain-time-s 1, so the request is
    shorter than that: at the drain deadline open connections are closed)."""
    rb = pods["b"]
    drain_s = 1.0
    slow = subprocess.Popen(["ip", "netns", "exec", pods["na"], "curl", "-s", "-m", "10", "-o",
                             "-", "-w", "\n%{http_code}", f"http://{B_IP}:8080/drain?sleep=0.7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # the request is open on B's inbound side before the signal (the app
        # logs it only after its sleep)
        harness.wait_until(lambda: rb.stats().get("http.inbound_8080.downstream_rq_active", 0) >= 1,
                           5, interval=0.02, what="the slow request active on B")
        t_term = time.monotonic()
        rb.send_signal(signal.SIGTERM)
        # a new inbound connection is refused (curl exit 7) while the old request runs on
        p = ns_run(pods["nb"], "curl", "-s", "-m", "2", "http://127.0.0.1:15006/", check=False)
        assert p.returncode == 7, f"new inbound connection not refused: curl exit {p.returncode}"
        out, err = slow.communicate(timeout=15)
        body, _, code = out.rpartition("\n")
        assert code == "200", (out, err)
        assert json.loads(body)["path"] == "/drain?sleep=0.7"
        rc = rb.wait_exit(drain_s + 10)
        elapsed = time.monotonic() - t_term
        assert rc == 0, rb.log_tail()
        assert elapsed < drain_s + 5, f"exit took {elapsed:.1f} s with a {drain_s} s drain time"
    finally:
        if slow.poll() is None:
            os.killpg(slow.pid, signal.SIGKILL)
            slow.wait()
