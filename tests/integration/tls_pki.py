"""A throw-away PKI made with the openssl CLI, for the TLS tests.

make_pki(dir) writes (ECDSA P-256 keys):
  ca.pem/ca.key            the mesh CA ("Remora Test CA")
  server.pem/.key          SAN URI spiffe://cluster.local/ns/default/sa/server,
                           DNS localhost, DNS server.local, IP 127.0.0.1
  client.pem/.key          SAN URI spiffe://cluster.local/ns/default/sa/client
  intruder.pem/.key        same CA, SAN URI .../sa/intruder (a wrong SPIFFE ID)
  expired.pem/.key         same CA and client SPIFFE ID, valid only in January 2020
                           (openssl ca -startdate/-enddate: bookworm's openssl
                           3.0 has no x509 -not_before/-not_after)
  foreign-ca.pem, foreign.pem/.key   another CA and a client it signed
  server2.pem/.key         a second server certificate (rotation), new serial
and returns a dict name -> path (plus "dir").  issue(pki, name, uri, ...) makes
more leaves."""

import os
import subprocess

TRUST_DOMAIN = "spiffe://cluster.local"
SERVER_ID = TRUST_DOMAIN + "/ns/default/sa/server"
CLIENT_ID = TRUST_DOMAIN + "/ns/default/sa/client"
INTRUDER_ID = TRUST_DOMAIN + "/ns/default/sa/intruder"

_serial = [0x1000]


def _run(*args, cwd=None):
    p = subprocess.run(["openssl", *args], capture_output=True, cwd=cwd, timeout=60)
    if p.returncode:
        raise RuntimeError(f"openssl {' '.join(args)}: {p.stderr.decode()}")
    return p.stdout


def _ca(d, name, cn):
    key, pem = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", pem, "-days", "365", "-subj", "/O=Remora Tests/CN=" + cn,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pem, key


def issue(d, name, ca, sans, cn=None, expired=False):
    """Sign a P-256 leaf named name with ca (the CA's file prefix) and
    subjectAltName sans (openssl syntax, e.g. "URI:spiffe://x,DNS:a").  Leaves
    carry a CRL distribution point (never fetched: testssl runs offline, but
    rates a certificate without any revocation info HIGH)."""
    key, csr, pem = (os.path.join(d, name + e) for e in (".key", ".csr", ".pem"))
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=" + sans + "\n"
                "crlDistributionPoints=URI:http://crl.remora.invalid/ca.crl\n")
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/O=Remora Tests/CN=" + (cn or name))
    capem, cakey = os.path.join(d, ca + ".pem"), os.path.join(d, ca + ".key")
    _serial[0] += 1
    if not expired:
        _run("x509", "-req", "-in", csr, "-CA", capem, "-CAkey", cakey, "-set_serial",
             str(_serial[0]), "-days", "300", "-sha256", "-extfile", ext, "-out", pem)
        return pem, key
    cadir = os.path.join(d, "ca-db")
    os.makedirs(os.path.join(cadir, "new"), exist_ok=True)
    open(os.path.join(cadir, "index.txt"), "a").close()
    with open(os.path.join(cadir, "serial"), "w") as f:
        f.write("%X\n" % _serial[0])
    cnf = os.path.join(cadir, "ca.cnf")
    with open(cnf, "w") as f:
        f.write(f"[ca]\ndefault_ca=tca\n[tca]\ndatabase={cadir}/index.txt\n"
                f"new_certs_dir={cadir}/new\nserial={cadir}/serial\ndefault_md=sha256\n"
                "policy=pany\nunique_subject=no\n[pany]\ncommonName=supplied\n"
                "organizationName=optional\n")
    _run("ca", "-batch", "-config", cnf, "-cert", capem, "-keyfile", cakey, "-in", csr,
         "-out", pem, "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
         "-extfile", ext, "-notext")
    return pem, key


def serial_of(pem_path):
    """The certificate's serial number as lowercase hex (no leading zeros)."""
    out = _run("x509", "-in", pem_path, "-noout", "-serial").decode().strip()
    return out.split("=", 1)[1].lower().lstrip("0") or "0"


def make_pki(d):
    d = str(d)
    os.makedirs(d, exist_ok=True)
    pki = {"dir": d}
    pki["ca"], pki["ca_key"] = _ca(d, "ca", "Remora Test CA")
    pki["foreign_ca"], _ = _ca(d, "foreign-ca", "Foreign CA")
    server_sans = f"URI:{SERVER_ID},DNS:localhost,DNS:server.local,IP:127.0.0.1"
    for name, ca, sans, exp in (
            ("server", "ca", server_sans, False),
            ("server2", "ca", server_sans, False),
            ("client", "ca", f"URI:{CLIENT_ID}", False),
            ("intruder", "ca", f"URI:{INTRUDER_ID}", False),
            ("expired", "ca", f"URI:{CLIENT_ID}", True),
            ("foreign", "foreign-ca", f"URI:{CLIENT_ID}", False)):
        pki[name], pki[name + "_key"] = issue(d, name, ca, sans, expired=exp)
    return pki
