"""Stats shared by name, as Envoy shares stat objects: two users of one
scope name (two HCMs with one stat_prefix; an old listener version draining
next to its replacement) bump the same counters, and /stats and
/stats/prometheus list every name once (Prometheus rejects a scrape with
two samples of one series)."""

import re
import socket
import subprocess

from harness import (bootstrap, curl, http_listener, route, static_cluster, wait_until)
from test_xds import (cla, cp, eds_cluster, last_request, pytestmark,  # noqa: F401
                      rds_listener, routes, xds_bootstrap, LDS)
from test_xds import push_backend
from test_xds_drain import h1

PROMTOOL = "/usr/bin/promtool"


def text_names(r):
    st, _, body = r.admin_get("/stats")
    assert st == 200
    return [line.split(":", 1)[0] for line in body.decode().splitlines() if line.strip()]


def prom_series(r):
    """(series key -> [values]) of /stats/prometheus; histograms by bucket."""
    st, _, body = r.admin_get("/stats/prometheus")
    assert st == 200
    text = body.decode()
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$", line)
        assert m, line
        series.setdefault(m.group(1), []).append(float(m.group(2)))
    return text, series


def assert_no_duplicates(r):
    names = text_names(r)
    dup = sorted({n for n in names if names.count(n) > 1})
    assert not dup, f"/stats lists these names more than once: {dup[:10]}"
    text, series = prom_series(r)
    dup = sorted(k for k, v in series.items() if len(v) > 1)
    assert not dup, f"/stats/prometheus has duplicate series: {dup[:10]}"
    return text, series


def promtool_clean(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode()
    # exit 3: lint remarks only (Envoy's names have them too, see test_prometheus.py)
    assert p.returncode in (0, 3), f"promtool exit {p.returncode}:\n{out}"
    assert "error while linting" not in out, out


def test_two_listeners_one_stat_prefix_share_the_series(remora, upstream, ports):
    admin, p1, p2 = ports.get(), ports.get(), ports.get()
    routes_ = [route({"prefix": "/"}, "backend")]
    cfg = bootstrap(admin, [http_listener(p1, routes_, name="one", stat_prefix="shared"),
                            http_listener(p2, routes_, name="two", stat_prefix="shared")],
                    [static_cluster("backend", upstream.port)])
    r = remora(cfg)
    for _ in range(3):
        assert curl(f"http://127.0.0.1:{p1}/a").status == 200
    for _ in range(5):
        assert curl(f"http://127.0.0.1:{p2}/b").status == 200
    assert curl(f"http://127.0.0.1:{p2}/c?status=503").status == 503
    # both listeners' traffic in one counter (the upstream saw all 9)
    r.wait_stat("http.shared.downstream_rq_total", lambda v: v == 9)
    text, series = assert_no_duplicates(r)
    promtool_clean(text)
    key = 'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="shared"}'
    assert series[key] == [9.0], series.get(key)
    assert series['envoy_http_downstream_rq_xx{envoy_response_code_class="2",'
                  'envoy_http_conn_manager_prefix="shared"}'] == [8.0]
    assert series['envoy_http_downstream_rq_xx{envoy_response_code_class="5",'
                  'envoy_http_conn_manager_prefix="shared"}'] == [1.0]
    # one histogram per name too: its count is both listeners' requests
    cnt = 'envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="shared"}'
    assert series[cnt] == [9.0]
    # each listener keeps its own per-address scope
    assert r.stat(f"listener.127.0.0.1_{p1}.downstream_cx_total") == 3
    assert r.stat(f"listener.127.0.0.1_{p2}.downstream_cx_total") == 6
    r.stop()


def test_listener_replaced_while_draining_no_duplicate_series(remora, cp, make_upstream, ports):
    """LDS replaces a listener (same address and stat_prefix, another HCM
    setting): the old version drains its connection next to the new one.
    Both versions' listener.<address>.* and http.<prefix>.* scopes are one
    scope each, counting the traffic of both."""
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    r = remora(xds_bootstrap(admin, cp.grpc_port), drain_time_s=30)
    old = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert h1(old)[0] == 200

    lis = rds_listener("ingress", lport, "r1")
    lis["filter_chains"][0]["filters"][0]["typed_config"]["server_name"] = "v2"
    cp.set("lds", "2", [lis])
    wait_until(lambda: last_request(cp, LDS, lambda q: q["version_info"] == "2"), 10,
               what="LDS ACK")

    def new_version_serves():
        s = socket.create_connection(("127.0.0.1", lport), timeout=5)
        try:
            st, h = h1(s)
            return st == 200 and h.get("server") == "v2"
        finally:
            s.close()
    wait_until(new_version_serves, 10, what="a new connection on the new listener version")
    # the old connection is draining (its next response closes it): both versions live
    text, series = assert_no_duplicates(r)
    promtool_clean(text)
    before = r.stat("http.ingress.downstream_rq_total")
    st, h = h1(old)
    assert st == 200 and h.get("connection") == "close" and h.get("server") != "v2", h
    # the old version's request counts in the same (one) series
    r.wait_stat("http.ingress.downstream_rq_total", lambda v: v == before + 1)
    assert r.stat(f"listener.127.0.0.1_{lport}.downstream_cx_total") >= 2   # the old one + the new ones
    assert_no_duplicates(r)
    old.close()
    r.stop()
