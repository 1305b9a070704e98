"""A stand-in for the Kubernetes API server, for remora-cp's TokenReview and
service-discovery tests.

No kube-apiserver can run here (Debian ships only kubectl 1.20 as
`kubernetes-client`, no server binary, and the machine reaches no other
registry), so this implements the one documented endpoint remora-cp calls,
the way the real server answers it:

  POST /apis/authentication.k8s.io/v1/tokenreviews   (TokenReview create)
  GET  /api/v1[/namespaces/NS]/services                  (list, watch)
  GET  /apis/discovery.k8s.io/v1[/namespaces/NS]/endpointslices  (list, watch)

- over HTTPS with a certificate from a CA made here (the pod's ca.crt);
- the caller's bearer token is checked first: unknown -> 401 with a v1 Status
  (reason Unauthorized), known but without RBAC for `create tokenreviews`
  -> 403 with the Status the real server writes (reason Forbidden, details
  group/kind);
- the reviewed token is looked up in a table of JWT-shaped tokens this
  stand-in "issued" (namespace, service account, audiences, exp); the answer
  is 201 Created with the TokenReview echoed back and a status as the
  server's ServiceAccount token authenticator fills it: authenticated true,
  user {username system:serviceaccount:<ns>:<sa>, uid, groups, extra pod
  name/uid}, audiences = the intersection of the asked and the token's
  audiences; or, for an unknown, expired or wrong-audience token, no
  `authenticated` (false is omitted) and an `error` string;
- a body that is not a TokenReview -> 400 (BadRequest Status).

List and watch (the discovery tests) follow the API's semantics: one
resourceVersion counter for every write; LIST answers a `<Kind>List` whose
items carry no apiVersion/kind, paged with `limit` / `continue`; WATCH
(`?watch=1&resourceVersion=RV`) streams newline-separated WatchEvents
(ADDED/MODIFIED/DELETED, BOOKMARK with only metadata.resourceVersion when
allowWatchBookmarks=true, every `bookmark_s`) over chunked encoding from
just after RV, and ends after timeoutSeconds.  `compact()` forgets the
history: open watches get an ERROR event with a 410 Expired Status (what the
server sends when a watcher falls behind the compacted revision) and a watch
from an older resourceVersion gets that at once; LIST still works (the
client relists).  `stop()` / `start()` drop and bring back the server
(state kept), as an API server restart.

Every request and response body is kept (`bodies`) so a test validates them
all against the real Kubernetes schemas (npm kubernetes-models, through
tests/k8s/validate.mjs): what remora-cp sends and what this stand-in answers
are both checked against the API's published types, not against this file's
idea of them.  What is NOT emulated: the token's signature (the table is the
truth), bound-object (pod) invalidation, other endpoints, HTTP/2, API
priority and fairness, field/label selectors, Table output, protobuf
encoding, the watch cache's sendInitialEvents."""

import base64
import copy
import json
import os
import socket
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tls_pki

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
# list/watch: resource -> (path prefix, apiVersion, kind)
KINDS = {"services": ("/api/v1", "v1", "Service"),
         "endpointslices": ("/apis/discovery.k8s.io/v1", "discovery.k8s.io/v1", "EndpointSlice")}


def parse_list_path(path):
    """(resource, namespace or None) of a list/watch path, or None."""
    for res, (prefix, _, _) in KINDS.items():
        if path == f"{prefix}/{res}":
            return res, None
        if path.startswith(prefix + "/namespaces/") and path.endswith("/" + res):
            ns = path[len(prefix) + 12:-len(res) - 1]
            if ns and "/" not in ns:
                return res, ns
    return None


def _b64(d):
    return base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(
        b"=").decode()


def status(code, reason, message, details=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s


class KubeStandin:
    def __init__(self, d, port=0, cert_ca="kube-ca"):
        self.dir = str(d)
        os.makedirs(self.dir, exist_ok=True)
        self.ca_pem, _ = tls_pki._ca(self.dir, "kube-ca", "kubernetes stand-in CA")
        tls_pki._ca(self.dir, "other-ca", "not the cluster's CA")
        self.cert, self.key = tls_pki.issue(
            self.dir, "apiserver", cert_ca,
            "DNS:kubernetes,DNS:kubernetes.default.svc,IP:127.0.0.1", cn="kube-apiserver")
        self.tokens = {}        # JWT -> {ns, sa, aud, exp, user}
        self.callers = {}       # remora-cp's bearer -> {"user": ..., "rbac": bool}
        self.bodies = []        # (what, dict) for the schema check
        self.requests = []      # (caller bearer, reviewed token, audiences)
        self.problems = []      # malformed requests seen (a test asserts none)
        self.delay_s = 0        # answer reviews this much later (a slow API server)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        # list/watch state (kept across stop/start)
        self.rv = 1000
        self.store = {}         # (resource, ns, name) -> object
        self.history = []       # (rv, resource, type, object)
        self.compacted = 0      # a watch from below this rv gets 410
        self.bookmark_s = 1.0
        self.watches = set()    # open watch handlers
        self.gets = []          # (resource, ns, query dict) of every list/watch
        self.port = port
        self.srv = None
        self.start()

    # -- tokens ------------------------------------------------------------------------
    def issue(self, ns, sa, aud=("remora-ca",), ttl=3600, user=None):
        """A projected service-account token (JWT-shaped, signature not real)."""
        now = int(time.time())
        claims = {"aud": list(aud), "exp": now + ttl, "iat": now, "nbf": now,
                  "iss": "https://kubernetes.default.svc.cluster.local",
                  "kubernetes.io": {"namespace": ns, "pod": {"name": f"{sa}-pod",
                                                             "uid": str(uuid.uuid4())},
                                    "serviceaccount": {"name": sa, "uid": str(uuid.uuid4())}},
                  "sub": user or f"system:serviceaccount:{ns}:{sa}"}
        tok = (_b64({"alg": "RS256", "kid": "standin"}) + "." + _b64(claims) + "." +
               base64.urlsafe_b64encode(os.urandom(64)).rstrip(b"=").decode())
        with self.lock:
            self.tokens[tok] = {"ns": ns, "sa": sa, "aud": list(aud), "exp": now + ttl,
                                "user": claims["sub"], "pod": claims["kubernetes.io"]["pod"]}
        return tok

    def add_caller(self, bearer, rbac=True, user="system:serviceaccount:remora-system:remora-cp",
                   watch=True):
        with self.lock:
            self.callers[bearer] = {"user": user, "rbac": rbac, "watch": watch}

    # -- objects (list/watch) ----------------------------------------------------------
    def put(self, obj):
        """Create or replace an object (a write: new resourceVersion, ADDED or MODIFIED)."""
        res = {v[2]: k for k, v in KINDS.items()}[obj["kind"]]
        md = obj["metadata"]
        key = (res, md["namespace"], md["name"])
        with self.cond:
            self.rv += 1
            old = self.store.get(key)
            obj = copy.deepcopy(obj)
            obj["metadata"].update(resourceVersion=str(self.rv),
                                   uid=old["metadata"]["uid"] if old else str(uuid.uuid4()),
                                   creationTimestamp=old["metadata"]["creationTimestamp"] if old
                                   else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self.store[key] = obj
            self.history.append((self.rv, res, "MODIFIED" if old else "ADDED", obj))
            self.cond.notify_all()
        return obj

    def delete(self, kind, ns, name):
        res = {v[2]: k for k, v in KINDS.items()}[kind]
        with self.cond:
            obj = copy.deepcopy(self.store.pop((res, ns, name)))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.history.append((self.rv, res, "DELETED", obj))
            self.cond.notify_all()

    def compact(self):
        """etcd compaction + the watch cache dropping its watchers: every open
        watch gets ERROR 410 and ends; older resourceVersions are gone."""
        with self.cond:
            self.rv += 1
            self.compacted = self.rv
            self.cond.notify_all()

    @staticmethod
    def service(ns, name, ports, cluster_ip="10.96.0.10"):
        """A v1 Service; ports: [(name, port, appProtocol or None)]."""
        sp = []
        for n, p, app in ports:
            d = {"name": n, "port": p, "targetPort": p, "protocol": "TCP"}
            if app:
                d["appProtocol"] = app
            sp.append(d)
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                         "selector": {"app": name}, "ports": sp, "sessionAffinity": "None",
                         "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}}

    @staticmethod
    def endpoint_slice(ns, name, svc, ports, endpoints, address_type="IPv4"):
        """A discovery.k8s.io/v1 EndpointSlice of Service svc; ports: [(name, port)];
        endpoints: [(ip, ready, terminating)]."""
        eps = []
        for i, (ip, ready, term) in enumerate(endpoints):
            cond = {"ready": ready, "serving": bool(ready) or term, "terminating": term}
            if ready is None:   # unknown: the field is left out
                del cond["ready"], cond["serving"]
            eps.append({"addresses": [ip], "conditions": cond,
                        "nodeName": "node-1",
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{svc}-{i}",
                                      "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, ip))}})
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": ns, "labels": {
                    "kubernetes.io/service-name": svc,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                "addressType": address_type, "endpoints": eps,
                "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}

    def remove_caller(self, bearer):
        with self.lock:
            self.callers.pop(bearer, None)

    # -- life cycle --------------------------------------------------------------------
    def start(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, code, obj):
                body = json.dumps(obj).encode()
                with standin.lock:
                    standin.bodies.append((f"response {code}", obj))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Audit-Id", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(body)

            def caller(self):
                """(bearer token, the caller it names: None is a 401)."""
                auth = self.headers.get("Authorization", "")
                bearer = auth[7:] if auth.startswith("Bearer ") else None
                with standin.lock:
                    return bearer, standin.callers.get(bearer)

            def do_GET(self):
                from urllib.parse import parse_qsl, urlsplit
                u = urlsplit(self.path)
                q = dict(parse_qsl(u.query, keep_blank_values=True))
                bearer, caller = self.caller()
                if not caller:
                    return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
                what = parse_list_path(u.path)
                if not what:
                    return self.reply(404, status(404, "NotFound", "the server could not find "
                                                  "the requested resource"))
                res, ns = what
                verb = "watch" if q.get("watch") in ("1", "true") else "list"
                with standin.lock:
                    standin.gets.append((res, ns, q))
                if not caller.get("watch", True):
                    group = KINDS[res][1].rpartition("/")[0]
                    scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
                    return self.reply(403, status(
                        403, "Forbidden", f'{res}{"." + group if group else ""} is forbidden: '
                        f'User "{caller["user"]}" cannot {verb} resource "{res}" in API group '
                        f'"{group}" {scope}', {"group": group, "kind": res}))
                if verb == "watch":
                    return standin._watch(self, res, ns, q)
                return standin._list(self, res, ns, q)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                bearer, caller = self.caller()
                if not caller:
                    return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
                if self.path != REVIEW_PATH:
                    return self.reply(404, status(404, "NotFound", "the server could not find "
                                                  "the requested resource"))
                if not caller["rbac"]:
                    return self.reply(403, status(
                        403, "Forbidden", f'tokenreviews.authentication.k8s.io is forbidden: User '
                        f'"{caller["user"]}" cannot create resource "tokenreviews" in API group '
                        f'"authentication.k8s.io" at the cluster scope',
                        {"group": "authentication.k8s.io", "kind": "tokenreviews"}))
                try:
                    req = json.loads(raw)
                    assert self.headers.get("Content-Type", "").startswith("application/json")
                    assert req.get("apiVersion") == "authentication.k8s.io/v1", "apiVersion"
                    assert req.get("kind") == "TokenReview", "kind"
                    assert isinstance(req["spec"]["token"], str) and req["spec"]["token"]
                except Exception as e:   # noqa: BLE001 - anything malformed is a 400
                    with standin.lock:
                        standin.problems.append(f"bad request: {e!r}: {raw[:200]!r}")
                    return self.reply(400, status(400, "BadRequest", f"bad TokenReview: {e}"))
                with standin.lock:
                    standin.bodies.append(("request", req))
                    spec = req["spec"]
                    standin.requests.append((bearer, spec["token"], spec.get("audiences")))
                    t = standin.tokens.get(spec["token"])
                if standin.delay_s:
                    time.sleep(standin.delay_s)
                self.reply(201, standin.review(req, t))

        ThreadingHTTPServer.allow_reuse_address = True
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        """The server goes away: the listener and every open watch connection."""
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None
        with self.cond:
            for h in list(self.watches):
                h.killed = True
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.cond.notify_all()

    # -- list/watch --------------------------------------------------------------------
    def _items(self, res, ns):
        return [copy.deepcopy(o) for (r, n, _), o in sorted(self.store.items())
                if r == res and (ns is None or n == ns)]

    def _record(self, what, obj):
        """Keep obj (with apiVersion/kind, as a typed object) for the schema check."""
        with self.lock:
            self.bodies.append((what, obj))

    def _list(self, h, res, ns, q):
        _, api_version, kind = KINDS[res]
        limit = int(q.get("limit") or 0)
        start = 0
        with self.lock:
            rv = self.rv
            if q.get("continue"):
                c = json.loads(base64.urlsafe_b64decode(q["continue"] + "=="))
                start, rv = c["start"], c["rv"]
                if rv < self.compacted:
                    st = status(410, "Expired", "The provided continue parameter is too old to "
                                "display a consistent list result. You can start a new list "
                                "without the continue parameter.")
                    h.close_connection = True
                    return h.reply(410, st)
            # a page is consistent at rv: the objects as they were then
            items = self._items(res, ns)
        items = [o for o in items if int(o["metadata"]["resourceVersion"]) <= rv]
        page = items[start:start + limit] if limit else items[start:]
        md = {"resourceVersion": str(rv)}
        if limit and start + limit < len(items):
            md["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"start": start + limit, "rv": rv}).encode()).decode().rstrip("=")
            md["remainingItemCount"] = len(items) - start - limit
        for o in page:
            self._record("list item", dict(o))
            o.pop("apiVersion", None)   # items of a typed list carry no apiVersion/kind
            o.pop("kind", None)
        h.close_connection = True
        body = {"kind": kind + "List", "apiVersion": api_version, "metadata": md, "items": page}
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _watch(self, h, res, ns, q):
        _, api_version, kind = KINDS[res]
        rv = int(q.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") == "true"
        h.killed = False
        h.close_connection = True
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def send(ev):
            data = (json.dumps(ev) + "\n").encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        with self.cond:
            self.watches.add(h)
            if not rv:   # "any": the current objects as ADDED first
                pending = [("ADDED", o) for o in self._items(res, ns)]
                rv = self.rv
            else:
                pending = []
        last_bm = time.monotonic()
        try:
            while True:
                gone = None
                with self.cond:
                    if h.killed:
                        return
                    if rv < self.compacted:
                        gone = rv
                    else:
                        pending += [(t, copy.deepcopy(o)) for erv, r, t, o in self.history
                                    if erv > rv and r == res and
                                    (ns is None or o["metadata"]["namespace"] == ns)]
                        rv = self.rv
                        if not pending and time.monotonic() < deadline:
                            self.cond.wait(0.2)
                    bm_rv = self.rv
                if gone is not None:
                    st = status(410, "Expired", f"too old resource version: {gone} "
                                f"({self.compacted})")
                    self._record("watch ERROR", st)
                    send({"type": "ERROR", "object": st})
                    break
                for t, o in pending:
                    self._record(f"watch {t}", o)
                    send({"type": t, "object": o})
                pending = []
                if time.monotonic() >= deadline:
                    break
                if bookmarks and time.monotonic() - last_bm >= self.bookmark_s:
                    last_bm = time.monotonic()
                    with self.cond:   # nothing unsent below bm_rv: all sent above
                        more = any(erv > rv for erv, *_ in self.history)
                    if not more:
                        send({"type": "BOOKMARK", "object": {
                            "kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(bm_rv)}}})
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:
            pass
        finally:
            with self.cond:
                self.watches.discard(h)

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    # -- the authenticator -------------------------------------------------------------
    def review(self, req, t):
        """The TokenReview the API server returns for req (t: the token's entry)."""
        spec = dict(req["spec"])
        asked = spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"]
        out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec}
        if t is None:
            out["status"] = {"user": {}, "error": "[invalid bearer token, square/go-jose: "
                             "error in cryptographic primitive, token lookup failed]"}
            return out
        if t["exp"] <= time.time():
            out["status"] = {"user": {}, "error": "[invalid bearer token, service account token "
                             "has expired]"}
            return out
        both = [a for a in asked if a in t["aud"]]
        if not both:
            out["status"] = {"user": {}, "error": "[invalid bearer token, token audiences "
                             f"{json.dumps(t['aud'])} is invalid for the target audiences "
                             f"{json.dumps(asked)}]"}
            return out
        out["status"] = {"authenticated": True, "audiences": both, "user": {
            "username": t["user"], "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, t["user"])),
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{t['ns']}",
                       "system:authenticated"],
            "extra": {"authentication.kubernetes.io/pod-name": [t["pod"]["name"]],
                      "authentication.kubernetes.io/pod-uid": [t["pod"]["uid"]]}}}
        return out

    def write_bodies(self, path):
        """Every body seen, as a YAML stream (JSON documents) for validate.mjs."""
        with self.lock:
            docs = [b for _, b in self.bodies]
        with open(path, "w") as f:
            for d in docs:
                f.write("---\n" + json.dumps(d) + "\n")
        return len(docs)
