"""testssl.sh (Debian package testssl.sh) against a Remora TLS listener with
the default TLS settings: no finding of severity HIGH or CRITICAL.

Runs offline (no --phone-out) and fast: protocols (-p), standard cipher
categories (-s), server defaults and certificate (-S), server preference
(-P) and the vulnerability checks (-U) with --fast; about 30 s on the
sanitizer build.  Client simulation and HTTP header checks are left out
(slow; the headers are the application's business)."""

import json
import shutil
import subprocess

from harness import bootstrap, static_cluster
import tls_pki
from test_tls import downstream_tls, tls_listener


def test_testssl_reports_no_high_or_critical(remora, upstream, ports, tmp_path):
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    assert testssl, "testssl.sh is not installed (make deps)"
    pki = tls_pki.make_pki(tmp_path / "pki")
    admin, port = ports.get(), ports.get()
    remora(bootstrap(admin, [tls_listener(port, "app", downstream_tls(pki))],
                     [static_cluster("app", upstream.port)]))
    out = tmp_path / "testssl.json"
    p = subprocess.run([testssl, "--quiet", "--warnings", "off", "--color", "0", "--fast",
                        "-p", "-s", "-S", "-P", "-U", "--add-ca", pki["ca"],
                        "--connect-timeout", "5", "--openssl-timeout", "5",
                        "--jsonfile", str(out), f"https://localhost:{port}"],
                       capture_output=True, timeout=240)
    findings = json.loads(out.read_text())
    assert findings, p.stdout.decode()[-2000:]
    ids = {f["id"] for f in findings}
    # it really ran the checks we rely on
    assert {"TLS1_3", "TLS1_2", "cert_chain_of_trust"} <= ids, sorted(ids)
    bad = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL")]
    assert not bad, json.dumps(bad, indent=1)
    by_id = {f["id"]: f["finding"] for f in findings}
    assert by_id["TLS1"] == "not offered" and by_id["TLS1_1"] == "not offered", by_id
