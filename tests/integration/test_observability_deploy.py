"""deploy/prometheus and deploy/grafana against a real Prometheus.

The deploy scrape job discovers pods with kubernetes_sd and the
prometheus.io/* annotations.  Debian's Prometheus is built without
Kubernetes discovery, so the test keeps the job's relabel_configs unchanged
and feeds it static targets labelled exactly as kubernetes_sd labels a pod
(__meta_kubernetes_pod_annotation_prometheus_io_*, namespace, pod name, app
label): one annotated for scraping (the Remora under test) and one that is
not (it must be dropped).  Load is sent at a paced rate for a little over
the rules' 1 m window; then the recording rules must report that rate
(within 10 %), the error ratio that was sent, and a latency, and every
expression of the Grafana dashboard must return data."""

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import yaml

from harness import (bootstrap, free_port, http_listener, route, spawn, static_cluster,
                     stop_process, wait_until)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROM_CFG = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")
RULES = os.path.join(ROOT, "deploy", "prometheus", "rules", "remora.rules.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "remora-dashboard.json")
RATE = 20.0          # requests per second sent
LOAD_S = 68          # a little over the 1 m rate window
ERROR_EVERY = 10     # every 10th request answers 503


def _pod_target(addr_port, admin_port, scrape, pod):
    return {"targets": [f"127.0.0.1:{addr_port}"],
            "labels": {"__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
                       "__meta_kubernetes_pod_annotation_prometheus_io_port": str(admin_port),
                       "__meta_kubernetes_pod_annotation_prometheus_io_path": "/stats/prometheus",
                       "__meta_kubernetes_namespace": "shop",
                       "__meta_kubernetes_pod_name": pod,
                       "__meta_kubernetes_pod_label_app": "checkout"}}


def _prom_config(workdir, admin_port):
    with open(PROM_CFG) as f:
        cfg = yaml.safe_load(f)
    job = cfg["scrape_configs"][0]
    assert job["job_name"] == "remora-sidecars"
    assert "kubernetes_sd_configs" in job
    del job["kubernetes_sd_configs"]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    # __address__ as kubernetes_sd sets it (pod IP and some container port);
    # the relabeling must replace the port with the annotation's
    job["static_configs"] = [_pod_target(8080, admin_port, "true", "checkout-1"),
                             _pod_target(8081, free_port(), "false", "checkout-2")]
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    os.makedirs(os.path.join(workdir, "rules"), exist_ok=True)
    shutil.copy(RULES, os.path.join(workdir, "rules"))
    path = os.path.join(workdir, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


class _Prom:
    def __init__(self, workdir, cfg_path):
        self.port = free_port()
        self.log = open(os.path.join(workdir, "prometheus.log"), "wb")
        self.proc = spawn(["/usr/bin/prometheus", f"--config.file={cfg_path}",
                           f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
                           f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                          stdout=self.log, stderr=self.log, cwd=workdir)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def query(self, q):
        doc = self.get("/api/v1/query?query=" + urllib.parse.quote(q))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def stop(self):
        stop_process(self.proc, timeout=10)
        self.log.close()


def _paced_load(port, stop, sent):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        due = t0 + i / RATE
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        path = "/?status=503" if i % ERROR_EVERY == ERROR_EVERY - 1 else "/"
        c.request("GET", path, headers={"host": "checkout"})
        c.getresponse().read()
        sent.append(time.monotonic())
        i += 1
    c.close()


def test_prometheus_rules_and_grafana_dashboard(remora, upstream, ports, tmp_path):
    for args in (["check", "rules", RULES],):
        p = subprocess.run(["/usr/bin/promtool", *args], capture_output=True, timeout=60)
        assert p.returncode == 0, (p.stdout + p.stderr).decode()
    admin, lport = ports.get(), ports.get()
    od = {"consecutive_5xx": 1000, "interval": "10s"}
    # static resources plus an ADS client (its control plane is down: the
    # dashboard's xDS panel shows connected_state 0 and the static config)
    cfg = bootstrap(admin, [http_listener(lport, [route({"prefix": "/"}, "backend")])],
                    [static_cluster("backend", upstream.port, outlier_detection=od),
                     static_cluster("xds_cluster", free_port())])
    cfg["dynamic_resources"] = {
        "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                       "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
        "cds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "1s"},
        "lds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "1s"},
    }
    r = remora(cfg, concurrency=1)
    workdir = str(tmp_path)
    cfg = _prom_config(workdir, admin)
    p = subprocess.run(["/usr/bin/promtool", "check", "config", cfg], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()

    # every metric the rules and the dashboard name is one Remora exports
    exported = set(re.findall(r"^(envoy_[a-zA-Z0-9_]+?)(?:_bucket|_sum|_count)?[{ ]",
                              r.admin_get("/stats/prometheus")[2].decode(), re.M))
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t["expr"] for pnl in dash["panels"] for t in pnl["targets"]]
    with open(RULES) as f:
        rules = yaml.safe_load(f)
    rule_exprs = [rl["expr"] for g in rules["groups"] for rl in g["rules"]]
    recorded = {rl["record"] for g in rules["groups"] for rl in g["rules"]}
    for e in exprs + rule_exprs:
        # metric names only: drop label selectors and by (...) lists
        bare = re.sub(r"\{[^}]*\}|\bby \([^)]*\)", "", e)
        for name in re.findall(r"\b(envoy_[a-zA-Z0-9_]+)", bare):
            base = re.sub(r"_bucket$", "", name)
            assert base in exported, f"{name} (in {e!r}) is not exported by Remora"
        for name in re.findall(r"\b(remora:[a-z0-9_:]+)", e):
            assert name in recorded, f"{name} is not a recording rule"

    prom = _Prom(workdir, cfg)
    stop, sent = threading.Event(), []
    load = threading.Thread(target=_paced_load, args=(lport, stop, sent), daemon=True)
    try:
        wait_until(lambda: prom.proc.poll() is None and _ready(prom), 30, interval=0.2,
                   what="prometheus ready")
        t_start = time.monotonic()
        load.start()
        time.sleep(LOAD_S)
        t_q = time.monotonic()
        rate = prom.query('remora:request_rate:1m{namespace="shop",service="checkout"}')
        err = prom.query('remora:error_ratio:1m{namespace="shop",service="checkout"}')
        p99 = prom.query('remora:latency_p99_ms:1m{namespace="shop",service="checkout"}')
        results = {}
        for e in exprs:
            q = e.replace("$namespace", ".*").replace("$service", ".*") \
                 .replace("$__rate_interval", "1m")
            results[e] = prom.query(q)
        up = prom.query('up{job="remora-sidecars"}')
    finally:
        stop.set()
        load.join(timeout=15)
        prom.stop()

    assert t_q - t_start > 62
    # the pod without prometheus.io/scrape=true is not scraped; the other
    # one is, at the annotation's port, with its Kubernetes labels
    assert len(up) == 1, up
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{admin}"
    assert up[0]["metric"]["pod"] == "checkout-1" and up[0]["value"][1] == "1", up

    # requests actually sent in the minute before the query
    window = [t for t in sent if t_q - 61 <= t <= t_q - 1]
    sent_rate = len(window) / 60.0
    assert len(rate) == 1, rate
    got = float(rate[0]["value"][1])
    assert abs(got - sent_rate) <= 0.1 * sent_rate, (got, sent_rate)
    assert len(err) == 1 and abs(float(err[0]["value"][1]) - 1 / ERROR_EVERY) < 0.03, err
    assert len(p99) == 1 and 0 < float(p99[0]["value"][1]) < 5000, p99
    for e, res in results.items():
        assert res, f"dashboard expression returned no data: {e}"


def _ready(prom):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
