"""A stand-in for the Kubernetes API server, for remora-cp's TokenReview tests.

No kube-apiserver can run here (Debian ships only kubectl 1.20 as
`kubernetes-client`, no server binary, and the machine reaches no other
registry), so this implements the one documented endpoint remora-cp calls,
the way the real server answers it:

  POST /apis/authentication.k8s.io/v1/tokenreviews   (TokenReview create)

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

Every request and response body is kept (`bodies`) so a test validates them
all against the real Kubernetes schemas (npm kubernetes-models, through
tests/k8s/validate.mjs): what remora-cp sends and what this stand-in answers
are both checked against the API's published types, not against this file's
idea of them.  What is NOT emulated: the token's signature (the table is the
truth), bound-object (pod) invalidation, other endpoints, HTTP/2, API
priority and fairness."""

import base64
import json
import os
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tls_pki

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


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

    def add_caller(self, bearer, rbac=True, user="system:serviceaccount:remora-system:remora-cp"):
        with self.lock:
            self.callers[bearer] = {"user": user, "rbac": rbac}

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

            def do_GET(self):
                self.reply(404, status(404, "NotFound", "the server could not find the "
                                       "requested resource"))

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                auth = self.headers.get("Authorization", "")
                bearer = auth[7:] if auth.startswith("Bearer ") else None
                with standin.lock:
                    caller = standin.callers.get(bearer)
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

        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

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
