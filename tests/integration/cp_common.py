"""Helpers shared by the remora-cp tests (test_catalog_authz, test_remora_ca,
test_remora_cp, test_mesh_cp): the binary, atomic file replacement, and the
sidecar bootstrap that reaches remora-cp over ADS (h2c to its gRPC port, or
TLS to its CA port as Istio's xds-grpc cluster does)."""

import os

import harness

CP_NAME = "remora-cp.remora-system.svc"   # a default SAN of remora-cp's serving certificate
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def cp_bin():
    """remora-cp: $REMORA_CP_BIN, else next to the remora binary under test."""
    return os.environ.get("REMORA_CP_BIN") or os.path.join(
        os.path.dirname(harness.remora_bin()), "remora-cp")


def write_atomic(path, text, mode=None):
    """Replace path atomically (write a temporary, rename), as editors and
    ConfigMap updates do: remora-cp never reads a half-written file."""
    tmp = str(path) + ".tmp~"
    with open(tmp, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.rename(tmp, path)


def xds_tls_socket(root, name=CP_NAME):
    """The xDS cluster's transport socket: TLS with ALPN h2, trusting root,
    the control plane's certificate must carry the DNS SAN name."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UPSTREAM_TLS, "sni": name, "common_tls_context": {
            "alpn_protocols": ["h2"],
            "validation_context": {"trusted_ca": {"filename": str(root)},
                                   "match_typed_subject_alt_names": [
                                       {"san_type": "DNS", "matcher": {"exact": name}}]}}}}


def ads_bootstrap(admin_port, ip, port, node_id="sidecar-1", node_cluster="remora-tests",
                  delta=False, transport_socket=None):
    """A sidecar whose listeners and clusters all come over ADS (CDS + LDS) from
    the control plane at ip:port (cluster xds_cluster, HTTP/2)."""
    xc = {"name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
          "typed_extension_protocol_options": {HTTP_OPTS: {
              "@type": "type.googleapis.com/" + HTTP_OPTS,
              "explicit_http_config": {"http2_protocol_options": {}}}},
          "load_assignment": harness.load_assignment("xds_cluster", [(ip, port)])}
    if transport_socket is not None:
        xc["transport_socket"] = transport_socket
    b = harness.bootstrap(admin_port, [], [xc], node_id=node_id)
    b["node"]["cluster"] = node_cluster
    b["dynamic_resources"] = {
        "ads_config": {"api_type": "AGGREGATED_DELTA_GRPC" if delta else "GRPC",
                       "transport_api_version": "V3",
                       "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
        "cds_config": {"ads": {}, "resource_api_version": "V3"},
        "lds_config": {"ads": {}, "resource_api_version": "V3"},
    }
    return b


class CpProcess:
    """A remora-cp process a test starts (subclasses build the arguments):
    stderr kept in err_path, log(), metrics(), stop() (exit status 0 and no
    sanitizer report, else the test fails with the log)."""

    def _spawn(self, args, err_path, env=None):
        self.err_path = err_path
        self._err = open(err_path, "ab")
        self.proc = harness.spawn([cp_bin(), *args], stderr=self._err, env=env)
        harness.wait_until(lambda: self.proc.poll() is not None or b"remora-cp ready" in
                           self.err_path.read_bytes(), 30, what="remora-cp to start")
        assert self.proc.poll() is None, self.log()[-4000:]

    def log(self):
        """remora-cp's whole stderr so far (cut it in assertion messages)."""
        return self.err_path.read_bytes().decode("utf-8", "replace")

    def metrics(self):
        res = harness.curl(f"http://127.0.0.1:{self.admin_port}/metrics")
        assert res.status == 200, res
        out = {}
        for line in res.body.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stop(self):
        rc, killed = harness.stop_process(self.proc)
        self._err.close()
        log = self.log()
        assert not killed and rc == 0, f"remora-cp exit {rc}\n{log[-4000:]}"
        for m in harness.SANITIZER_MARKERS:
            assert m not in log, log[-4000:]
