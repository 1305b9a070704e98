"""The admin interface: every endpoint's status and shape, POST-only
mutations, /quitquitquit."""

import json
import re

import pytest

from harness import connect_refused, curl, simple_http_config, wait_until


@pytest.fixture
def env(remora, upstream, ports):
    admin, lport = ports.get(), ports.get()
    r = remora(simple_http_config(admin, lport, upstream.port), concurrency=2,
               extra_args=["--service-node", "node-7", "--service-cluster", "cluster-x"])

    class Env:
        pass
    e = Env()
    e.r, e.upstream, e.lport, e.admin = r, upstream, lport, admin
    e.url = f"http://127.0.0.1:{lport}"
    return e


def _send(e, n, path="/"):
    for _ in range(n):
        res = curl(e.url + path)
        assert res.status == 200, res


def test_ready(env):
    st, h, body = env.r.admin_get("/ready")
    assert st == 200
    assert body == b"LIVE\n"


def test_server_info(env):
    st, h, body = env.r.admin_get("/server_info")
    assert st == 200
    assert "json" in h.get("content-type", ""), h
    info = json.loads(body)
    assert info["state"] == "LIVE"
    opts = info["command_line_options"]
    assert int(opts["concurrency"]) == 2
    assert opts.get("service_node") == "node-7", opts
    assert opts.get("service_cluster") == "cluster-x", opts


def test_stats_text(env):
    _send(env, 3)
    env.r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 3)
    st, h, body = env.r.admin_get("/stats")
    assert st == 200
    lines = body.decode().splitlines()
    assert lines, "empty /stats"
    for line in lines:
        assert re.match(r"^[^\s:][^:]*: \S.*$", line), f"bad /stats line {line!r}"
    # counters and gauges sorted by name; histograms (non-numeric values)
    # sorted among themselves (Envoy lists them after the others)
    scalars = [l.split(": ", 1)[0] for l in lines if re.match(r"^[^:]*: -?\d+$", l)]
    hists = [l.split(": ", 1)[0] for l in lines if not re.match(r"^[^:]*: -?\d+$", l)]
    assert scalars == sorted(scalars), "counters/gauges are not sorted by name"
    assert hists == sorted(hists), "histograms are not sorted by name"
    st = env.r.stats()
    for name in ("cluster.backend.upstream_cx_total", "cluster.backend.upstream_cx_active",
                 "cluster.backend.upstream_rq_total", "cluster.backend.upstream_rq_200",
                 "cluster.backend.membership_healthy", "cluster.backend.membership_total",
                 "http.ingress_http.downstream_rq_total", "http.ingress_http.downstream_rq_2xx",
                 f"listener.127.0.0.1_{env.lport}.downstream_cx_total"):
        assert name in st, f"{name} missing from /stats"
    assert st["cluster.backend.upstream_rq_total"] == 3
    assert st["cluster.backend.upstream_rq_200"] == 3
    assert st["http.ingress_http.downstream_rq_2xx"] == 3
    assert st["cluster.backend.membership_total"] == 1
    hist = st["http.ingress_http.downstream_rq_time"]
    assert isinstance(hist, str) and "P50(" in hist and "P99(" in hist, hist


def test_stats_filter(env):
    _send(env, 1)
    st, _, body = env.r.admin_get("/stats?filter=%5Ecluster%5C.backend%5C.upstream_rq")
    assert st == 200
    lines = body.decode().splitlines()
    assert lines
    assert all(l.startswith("cluster.backend.upstream_rq") for l in lines), lines
    assert any(l.startswith("cluster.backend.upstream_rq_total: ") for l in lines)
    # unanchored regex search
    st, _, body = env.r.admin_get("/stats?filter=membership_")
    names = [l.split(": ", 1)[0] for l in body.decode().splitlines()]
    assert "cluster.backend.membership_total" in names
    assert all("membership_" in n for n in names)


def test_stats_invalid_filter_400(env):
    st, _, body = env.r.admin_get("/stats?filter=%28unclosed")
    assert st == 400, body


def test_stats_json(env):
    _send(env, 2)
    env.r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 2)
    st, h, body = env.r.admin_get("/stats?format=json")
    assert st == 200
    doc = json.loads(body)
    stats = doc["stats"]
    values = {s["name"]: s["value"] for s in stats if "name" in s}
    assert values["cluster.backend.upstream_rq_total"] == 2
    hist = [s["histograms"] for s in stats if "histograms" in s]
    assert hist, "no histograms entry in /stats?format=json"
    names = [q["name"] for q in hist[0]["computed_quantiles"]]
    assert "http.ingress_http.downstream_rq_time" in names


def prom_samples(text, name):
    """[(labels dict, value)] for every sample of metric name."""
    out = []
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.append((labels, float(m.group(3))))
    return out


def prom_value(text, name, **labels):
    vals = [v for l, v in prom_samples(text, name) if l == labels]
    assert len(vals) == 1, f"{name}{labels}: {len(vals)} samples\n{text}"
    return vals[0]


def test_stats_prometheus_shape(env):
    _send(env, 4)
    env.r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 4)
    st, h, body = env.r.admin_get("/stats/prometheus")
    assert st == 200
    assert h.get("content-type", "").startswith("text/plain"), h
    text = body.decode()
    assert "# TYPE envoy_cluster_upstream_rq_total counter" in text
    assert prom_value(text, "envoy_cluster_upstream_rq_total", envoy_cluster_name="backend") == 4
    assert "# TYPE envoy_cluster_membership_total gauge" in text
    assert prom_value(text, "envoy_cluster_membership_total", envoy_cluster_name="backend") == 1
    assert prom_value(text, "envoy_listener_downstream_cx_total",
                      envoy_listener_address=f"127.0.0.1_{env.lport}") == 4
    # response-code families use Envoy's tag extraction
    assert prom_value(text, "envoy_cluster_upstream_rq", envoy_cluster_name="backend",
                      envoy_response_code="200") == 4
    assert prom_value(text, "envoy_http_downstream_rq_xx", envoy_http_conn_manager_prefix="ingress_http",
                      envoy_response_code_class="2") == 4
    assert "# TYPE envoy_http_downstream_rq_time histogram" in text
    assert prom_value(text, "envoy_http_downstream_rq_time_bucket",
                      envoy_http_conn_manager_prefix="ingress_http", le="+Inf") == 4
    assert prom_value(text, "envoy_http_downstream_rq_time_count",
                      envoy_http_conn_manager_prefix="ingress_http") == 4


def test_clusters(env):
    _send(env, 3)
    env.r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 3)
    st, h, body = env.r.admin_get("/clusters")
    assert st == 200
    text = body.decode()
    host = f"backend::127.0.0.1:{env.upstream.port}"
    assert re.search(rf"^{re.escape(host)}::cx_active::\d+$", text, re.M), text
    assert f"{host}::health_flags::healthy" in text.splitlines(), text
    assert f"{host}::rq_total::3" in text.splitlines(), text


def test_listeners(env):
    st, h, body = env.r.admin_get("/listeners")
    assert st == 200
    text = body.decode()
    assert "listener_0" in text
    assert f"127.0.0.1:{env.lport}" in text


def test_config_dump(env):
    st, h, body = env.r.admin_get("/config_dump")
    assert st == 200
    doc = json.loads(body)
    assert isinstance(doc.get("configs"), list) and doc["configs"], doc
    text = json.dumps(doc)
    assert "listener_0" in text and "backend" in text


@pytest.mark.parametrize("path", ["/quitquitquit", "/healthcheck/fail", "/healthcheck/ok",
                                  "/drain_listeners", "/logging?level=debug", "/reset_counters"])
def test_post_only_endpoints_reject_get(env, path):
    st, h, body = env.r.admin_get(path)
    assert st == 405, (st, body)
    assert env.r.alive()
    st, _, _ = env.r.admin_get("/ready")
    assert st == 200


def test_unknown_admin_path_404(env):
    st, _, _ = env.r.admin_get("/no/such/endpoint")
    assert st == 404


def test_healthcheck_fail_and_ok(env):
    st, _, _ = env.r.admin_post("/healthcheck/fail")
    assert st == 200
    st, _, body = env.r.admin_get("/server_info")
    assert st == 200
    assert "state" in json.loads(body)
    st, _, _ = env.r.admin_post("/healthcheck/ok")
    assert st == 200
    st, _, body = env.r.admin_get("/server_info")
    assert st == 200 and json.loads(body)["state"] == "LIVE"
    st, _, body = env.r.admin_get("/ready")
    assert st == 200 and body == b"LIVE\n"
    # traffic flows throughout
    _send(env, 1)


def test_logging_level(env):
    st, _, body = env.r.admin_post("/logging?level=debug")
    assert st == 200, body
    _send(env, 1)
    st, _, body = env.r.admin_post("/logging?level=info")
    assert st == 200, body


def test_reset_counters(env):
    _send(env, 2)
    env.r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 2)
    st, _, _ = env.r.admin_post("/reset_counters")
    assert st == 200
    stats = env.r.stats()
    assert stats.get("cluster.backend.upstream_rq_total", 0) == 0
    assert stats["cluster.backend.membership_total"] == 1     # gauges untouched
    _send(env, 1)
    env.r.wait_stat("cluster.backend.upstream_rq_total", lambda v: v == 1)


def test_drain_listeners_stops_accepting(env):
    _send(env, 1)
    st, _, _ = env.r.admin_post("/drain_listeners")
    assert st == 200
    wait_until(lambda: connect_refused(env.lport), 5, what="listener closed after /drain_listeners")
    # admin still answers
    st, _, _ = env.r.admin_get("/server_info")
    assert st == 200


def test_quitquitquit_exits_zero(env):
    st, _, body = env.r.admin_post("/quitquitquit")
    assert st == 200, body
    rc = env.r.wait_exit(15)
    assert rc == 0, env.r.log_tail()
    env.r.check_sanitizers()


def test_admin_only_on_loopback_address(env):
    # the admin socket listens where the config says (127.0.0.1), not on the
    # listener port: /ready on the data listener is routed upstream instead
    res = curl(env.url + "/ready")
    assert res.status == 200
    assert res.json()["path"] == "/ready"
