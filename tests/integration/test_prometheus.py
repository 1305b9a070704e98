"""/stats/prometheus checked by promtool and scraped by a real Prometheus."""

import json
import os
import re
import subprocess
import urllib.parse
import urllib.request

import pytest
import yaml

from harness import curl, free_port, simple_http_config, spawn, stop_process, wait_until

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"


def _metrics(r):
    st, h, body = r.admin_get("/stats/prometheus")
    assert st == 200
    return body.decode()


def test_promtool_check_metrics(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port))
    for path in ("/", "/?status=404", "/?status=503"):
        curl(f"http://127.0.0.1:{lport}{path}")
    r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 3)
    text = _metrics(r)
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode()
    # exit 1: the exposition does not parse.  exit 3: only lint remarks, which
    # Envoy's own output has too (no HELP text, counters without _total,
    # names like upstream_cx_connect_ms); any other remark fails the test.
    assert p.returncode in (0, 3), f"promtool exit {p.returncode}:\n{out}"
    assert "error while linting" not in out, out
    for line in out.splitlines():
        assert re.search(r"no help text|should have \"_total\" suffix|use base unit|"
                         r"should not have \"_(total|sum|count|bucket)\" suffix|"
                         r"should not contain abbreviated units", line), \
            f"unexpected promtool remark: {line}"
    _check_exposition(text)


def _check_exposition(text):
    """Structural checks promtool does not make: every family has one TYPE
    line before its samples, samples of a family are contiguous, histograms
    are cumulative and end with le="+Inf" equal to _count."""
    types = {}
    seen_families = []
    current = None
    buckets = {}
    counts = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP"):
            continue
        m = re.match(r"# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$", line)
        if m:
            assert m.group(1) not in types, f"second TYPE line for {m.group(1)}"
            types[m.group(1)] = m.group(2)
            current = m.group(1)
            seen_families.append(current)
            continue
        assert not line.startswith("#"), line
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        assert m, f"bad sample line {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        float(value)
        fam = name
        if current and types[current] == "histogram" and \
                name in (current + "_bucket", current + "_sum", current + "_count"):
            fam = current
        assert fam == current, f"sample {name} outside its family block (current {current})"
        if name.endswith("_bucket") and fam != name:
            key = (fam, re.sub(r',?le="[^"]*"', "", labels))
            le = re.search(r'le="([^"]*)"', labels).group(1)
            buckets.setdefault(key, []).append((le, float(value)))
        if name.endswith("_count") and fam != name:
            counts[(fam, labels)] = float(value)
    for key, bs in buckets.items():
        assert bs[-1][0] == "+Inf", f"{key}: last bucket is {bs[-1][0]}"
        vals = [v for _, v in bs]
        assert vals == sorted(vals), f"{key}: buckets not cumulative {bs}"
        les = [float(le) for le, _ in bs[:-1]]
        assert les == sorted(les)
        fam, lbl = key
        lbl = lbl.replace("{}", "")
        c = counts.get((fam, lbl))
        if c is not None:
            assert c == bs[-1][1], f"{key}: _count {c} != +Inf bucket {bs[-1][1]}"


class Prometheus:
    def __init__(self, workdir, admin_port):
        self.port = free_port()
        self.dir = workdir
        self.cfg = os.path.join(workdir, "prometheus.yml")
        with open(self.cfg, "w") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{
                    "job_name": "remora",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "metrics_path": "/stats/prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}],
                }],
            }, f)
        self.log = open(os.path.join(workdir, "prometheus.log"), "wb")
        self.proc = spawn([PROMETHEUS, f"--config.file={self.cfg}",
                           f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
                           f"--web.listen-address=127.0.0.1:{self.port}",
                           "--log.level=warn"], stdout=self.log, stderr=self.log, cwd=workdir)

    def get(self, path, timeout=5):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.status, r.read()

    def query(self, q):
        st, body = self.get("/api/v1/query?query=" + urllib.parse.quote(q))
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def log_tail(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    def stop(self):
        stop_process(self.proc, timeout=10)
        self.log.close()


@pytest.fixture
def prometheus_factory(tmp_path):
    made = []

    def make(admin_port):
        d = os.path.join(str(tmp_path), "prom")
        os.makedirs(d, exist_ok=True)
        p = Prometheus(d, admin_port)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def test_real_prometheus_scrapes_cluster_counter(remora, upstream, ports, prometheus_factory):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port))
    n = 7
    for _ in range(n):
        assert curl(f"http://127.0.0.1:{lport}/").status == 200
    r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == n)

    prom = prometheus_factory(admin)

    def ready():
        if prom.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{prom.log_tail()}")
        return prom.get("/-/ready")[0] == 200
    wait_until(ready, 30, interval=0.2, what="prometheus ready")

    result = []

    def scraped():
        result[:] = prom.query("envoy_cluster_upstream_rq_total")
        return any(s["metric"].get("envoy_cluster_name") == "backend" and
                   float(s["value"][1]) >= n for s in result)
    try:
        wait_until(scraped, 30, interval=0.5, what="Prometheus to have the scraped series")
    except AssertionError:
        st, body = prom.get("/api/v1/targets")
        raise AssertionError(f"last query result {result}\ntargets: {body[:2000]!r}\n"
                             f"{prom.log_tail()}") from None
    series = [s for s in result if s["metric"].get("envoy_cluster_name") == "backend"]
    assert len(series) == 1
    assert series[0]["metric"]["job"] == "remora"

    # the target is healthy (every scrape parsed)
    st, body = prom.get("/api/v1/targets")
    targets = json.loads(body)["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"], targets

    # a PromQL expression over a labelled histogram works too
    res = prom.query('sum(envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="ingress_http"})')
    assert res and float(res[0]["value"][1]) >= n, res
