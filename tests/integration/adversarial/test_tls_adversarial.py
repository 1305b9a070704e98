"""Adversarial TLS clients (issue 10): renegotiation attempts on TLS 1.2
(openssl s_client's `R` command, repeated), and KeyUpdate floods on TLS 1.3
(`K`: update and request one back).  Renegotiation is refused (the listener
contexts set SSL_OP_NO_RENEGOTIATION: a no_renegotiation alert, and the
connection carries on or is closed); key updates are legitimate TLS 1.3 and
must not disturb anything.  In both cases a well-behaved client on its own
connection keeps being served and the proxy stays up."""

import os
import select
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tls_pki  # noqa: E402
from advlib import GoodClient, check_unaffected  # noqa: E402
from harness import (bootstrap, curl, hcm, http_listener, route, route_config, sockaddr,  # noqa: E402
                     static_cluster, virtual_host, wait_until)

DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls_pki.make_pki(tmp_path_factory.mktemp("pki"))


def _config(admin, tls_port, plain_port, upstream_port, pki):
    ts = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM,
        "common_tls_context": {"tls_certificates": [{
            "certificate_chain": {"filename": pki["server"]},
            "private_key": {"filename": pki["server_key"]}}]}}}
    rc = route_config([virtual_host([route({"prefix": "/"}, "app")])])
    tls = {"name": "tls", "address": sockaddr(tls_port),
           "filter_chains": [{"transport_socket": ts, "filters": [hcm(rc, stat_prefix="ingress")]}]}
    plain = http_listener(plain_port, [route({"prefix": "/"}, "app")], name="plain",
                          stat_prefix="plain")
    return bootstrap(admin, [tls, plain], [static_cluster("app", upstream_port)])


class SClient:
    """openssl s_client driven line by line (its interactive commands: R
    renegotiate, K key update + request, k key update); its output is read
    as it comes."""

    def __init__(self, port, *args):
        self.p = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self.eof = False

    def send(self, line):
        try:
            self.p.stdin.write(line)
            self.p.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):
            return False

    def read_until(self, pattern, timeout):
        """Collect output until pattern (bytes) shows up, EOF, or timeout."""
        deadline = time.monotonic() + timeout
        while pattern not in self.out and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                break
            b = os.read(self.p.stdout.fileno(), 65536)
            if not b:
                self.eof = True
            self.out += b
        return pattern in self.out

    def finish(self):
        self.read_until(b"\0never", 0.2)
        self.p.kill()
        self.p.wait(timeout=10)
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass
        return self.out.decode("utf-8", "replace")


def _request(host="x"):
    return f"GET /after HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def test_tls12_renegotiation_refused(remora, upstream, ports, pki):
    admin, tport, pport = ports.get(), ports.get(), ports.get()
    r = remora(_config(admin, tport, pport, upstream.port, pki))
    good = GoodClient(pport)
    before = good.sample(1.0)
    good.start()
    outputs = []
    for _ in range(5):
        c = SClient(tport, "-tls1_2", "-CAfile", pki["ca"])
        time.sleep(0.5)                    # handshake done
        for _ in range(20):
            if not c.send(b"R\n"):
                break
            time.sleep(0.05)
        c.read_until(b"no renegotiation", 5)
        outputs.append(c.finish())
    during = good.stop()
    for out in outputs:
        assert "Protocol  : TLSv1.2" in out or "New, TLSv1.2" in out, out
        assert "RENEGOTIATING" in out, out
        # refused: the server answers the ClientHello with a no_renegotiation
        # alert, which OpenSSL's client treats as the end of the connection
        assert "no renegotiation" in out, out
    # exactly one handshake per connection: no renegotiation completed
    wait_until(lambda: r.stat("listener.127.0.0.1_%d.ssl.handshake" % tport) == 5, 5,
               what="5 handshakes")
    assert r.alive()
    res = curl(f"https://localhost:{tport}/ok", "--cacert", pki["ca"], "--tlsv1.2",
               "--tls-max", "1.2")
    assert res.status == 200, res
    check_unaffected(before, during, good.errors, "TLS 1.2 renegotiation attempts")


def test_tls13_key_update_flood(remora, upstream, ports, pki):
    admin, tport, pport = ports.get(), ports.get(), ports.get()
    r = remora(_config(admin, tport, pport, upstream.port, pki))
    good = GoodClient(pport)
    before = good.sample(1.0)
    good.start()
    c = SClient(tport, "-tls1_3", "-CAfile", pki["ca"])
    time.sleep(0.5)
    sent = 0
    for _ in range(100):       # paced: s_client takes one command per read of stdin
        if not c.send(b"K\n"):
            break
        sent += 1
        time.sleep(0.02)
    c.send(_request())
    got = c.read_until(b'"path": "/after"', 10)
    out = c.finish()
    during = good.stop()
    assert "TLSv1.3" in out, out
    assert sent == 100 and out.count("KEYUPDATE") == 100, out[-2000:]
    # key updates are legitimate: the same connection still carries requests
    assert got, out[-2000:]
    assert "HTTP/1.1 200" in out
    assert r.alive()
    res = curl(f"https://localhost:{tport}/ok", "--cacert", pki["ca"], "--tlsv1.3")
    assert res.status == 200, res
    check_unaffected(before, during, good.errors, "TLS 1.3 key update flood")
