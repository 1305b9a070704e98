"""Prometheus leftovers: the Istio 15090 convention (a listener whose route
sends /stats/prometheus to a cluster pointing at the admin address) checked
with promtool, and stats_config (histogram_bucket_settings,
use_all_default_tags)."""

import re
import subprocess

import yaml

import harness
from harness import bootstrap, curl, http_listener, route, static_cluster
from test_prometheus import PROMTOOL, _check_exposition


def istio_config(admin, app_port, stats_port, upstream_port, stats_config=None):
    app = http_listener(app_port, [route({"prefix": "/"}, "backend")], name="app")
    prom = http_listener(stats_port, [route({"prefix": "/stats/prometheus"}, "prometheus_stats")],
                         name="prometheus_stats", stat_prefix="prometheus_stats")
    cfg = bootstrap(admin, [app, prom], [static_cluster("backend", upstream_port),
                                         static_cluster("prometheus_stats", admin)])
    if stats_config is not None:
        cfg["stats_config"] = stats_config
    return cfg


def test_15090_listener_serves_admin_prometheus(remora, upstream, ports):
    admin, app_port, stats_port = ports.get(), ports.get(), ports.get()
    sc = {"use_all_default_tags": True, "histogram_bucket_settings": [
        {"match": {"prefix": "http.ingress_http.downstream_rq_time"}, "buckets": [1, 10, 100, 1000]},
        {"match": {"suffix": "upstream_cx_connect_ms"}, "buckets": [0.25, 2.5]},
    ]}
    r = remora(istio_config(admin, app_port, stats_port, upstream.port, sc))
    for path in ("/", "/?status=503", "/?sleep_ms=30"):
        curl(f"http://127.0.0.1:{app_port}{path}")
    r.wait_stat("http.ingress_http.downstream_rq_completed", lambda v: v == 3)
    res = curl(f"http://127.0.0.1:{stats_port}/stats/prometheus")
    assert res.status == 200, res
    text = res.body.decode()
    # a path the stats route does not cover is not the admin's
    assert curl(f"http://127.0.0.1:{stats_port}/clusters").status == 404
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode in (0, 3), f"promtool exit {p.returncode}:\n{out}"
    for line in out.splitlines():
        assert re.search(r"no help text|should have \"_total\" suffix|use base unit|"
                         r"should not have \"_(total|sum|count|bucket)\" suffix|"
                         r"should not contain abbreviated units", line), line
    _check_exposition(text)

    def les(metric, label):
        return [m.group(1) for m in re.finditer(
            metric + r'_bucket\{[^}]*' + label + r'[^}]*le="([^"]+)"\}', text)] or \
            [m.group(1) for m in re.finditer(
                metric + r'_bucket\{[^}]*le="([^"]+)"[^}]*' + label, text)]
    ing = 'envoy_http_conn_manager_prefix="ingress_http"'
    assert les("envoy_http_downstream_rq_time", ing) == ["1", "10", "100", "1000", "+Inf"], text
    counts = dict(re.findall(r'envoy_http_downstream_rq_time_bucket\{' + ing + r',le="([^"]+)"\} (\d+)', text))
    assert counts["+Inf"] == "3" and int(counts["1000"]) == 3 and int(counts["10"]) <= 2
    assert les("envoy_cluster_upstream_cx_connect_ms", 'envoy_cluster_name="backend"') == ["0.25", "2.5", "+Inf"]
    # histograms no rule matches keep Envoy's default buckets
    assert len(les("envoy_cluster_upstream_rq_time", 'envoy_cluster_name="backend"')) == 20
    # the stats listener's own manager counts the scrape
    r.wait_stat("http.prometheus_stats.downstream_rq_completed", lambda v: v >= 1)


def test_stats_config_errors(tmp_path, ports):
    cases = [
        ({"use_all_default_tags": False}, "use_all_default_tags"),
        ({"stats_tags": [{"tag_name": "x", "regex": "y"}]}, "stats_config.stats_tags"),
        ({"histogram_bucket_settings": [{"match": {"prefix": "x"}, "buckets": [5, 1]}]},
         "ascending"),
        ({"histogram_bucket_settings": [{"match": {"safe_regex": {"regex": "x"}}, "buckets": [1]}]},
         "only exact, prefix"),
        ({"histogram_bucket_settings": [{"buckets": [1]}]}, "match"),
    ]
    for sc, msg in cases:
        cfg = istio_config(ports.get(), ports.get(), ports.get(), 1, sc)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        p = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and msg in p.stderr, (sc, p.stderr)
