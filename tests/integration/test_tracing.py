"""Distributed tracing: B3 / W3C context propagation, Zipkin and OTLP/HTTP
JSON export, across two chained Remora sidecars.

  curl -> client sidecar (OUTBOUND listener: CLIENT span)
       -> server sidecar (INBOUND listener: SERVER span) -> app (upstream)

Each sidecar exports to a collector the test runs (trace_collector.py),
which validates every report against the Zipkin v2 / OTLP JSON model."""

import os
import time

import pytest

import harness
from harness import bootstrap, curl, route, sockaddr, static_cluster, virtual_host, route_config
from trace_collector import TraceCollector

ZIPKIN_TYPE = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"


@pytest.fixture
def collector():
    c = TraceCollector().start()
    yield c
    c.stop()


def zipkin_provider(**extra):
    return {"name": "envoy.tracers.zipkin",
            "typed_config": {"@type": ZIPKIN_TYPE, "collector_cluster": "zipkin",
                             "collector_endpoint": "/api/v2/spans",
                             "collector_endpoint_version": "HTTP_JSON", **extra}}


def sidecar(admin, port, cluster, target_port, direction, tracing, collector_port,
            node_cluster, node_id):
    lst = harness.http_listener(port, [route({"prefix": "/"}, cluster)], tracing=tracing)
    lst["traffic_direction"] = direction
    cfg = bootstrap(admin, [lst], [static_cluster(cluster, target_port),
                                   static_cluster("zipkin", collector_port)], node_id=node_id)
    cfg["node"]["cluster"] = node_cluster
    return cfg


def start_chain(remora, ports, upstream, collector, client_tracing=None, server_tracing=None):
    cport, sport = ports.get(), ports.get()
    server = remora(sidecar(ports.get(), sport, "app", upstream.port, "INBOUND",
                            server_tracing or {"provider": zipkin_provider()}, collector.port,
                            "server-svc", "server-node"), name="server_sidecar")
    client = remora(sidecar(ports.get(), cport, "server_sidecar", sport, "OUTBOUND",
                            client_tracing or {"provider": zipkin_provider()}, collector.port,
                            "client-svc", "client-node"), name="client_sidecar")
    return client, server, cport


def wait_spans(collector, pred, timeout=10.0):
    def check():
        spans, _, errors = collector.snapshot()
        assert not errors, errors
        return pred(spans)
    return harness.wait_until(check, timeout, interval=0.1, what="spans at the collector")


def timed_get(port, path, *headers):
    args = []
    for h in headers:
        args += ["-H", h]
    t0 = time.time()
    r = curl(f"http://127.0.0.1:{port}{path}", *args)
    t1 = time.time()
    assert r.status == 200, r
    return r, int(t0 * 1e6), int(t1 * 1e6)


IN_TRACE = "463ac35c9f6413ad48485a3953bb6124"
IN_SPAN = "a2fb4a1d1a96d312"
IN_PARENT = "0020000000000001"
W3C_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C_SPAN = "00f067aa0ba902b7"

CASES = {
    # case: (request headers, expected trace id or None (new), caller span id or None)
    "none": ((), None, None),
    "b3multi": ((f"x-b3-traceid: {IN_TRACE}", f"x-b3-spanid: {IN_SPAN}",
                 f"x-b3-parentspanid: {IN_PARENT}", "x-b3-sampled: 1"), IN_TRACE, IN_SPAN),
    "b3single": ((f"b3: {IN_TRACE[16:]}-{IN_SPAN}-1",), IN_TRACE[16:], IN_SPAN),
    "w3c": ((f"traceparent: 00-{W3C_TRACE}-{W3C_SPAN}-01", "tracestate: congo=t61rcWkgMzE"),
            W3C_TRACE, W3C_SPAN),
}


@pytest.mark.parametrize("shared", [True, False], ids=["shared_span", "child_span"])
def test_chained_sidecars_one_trace(remora, ports, upstream, collector, shared):
    server_tracing = {"provider": zipkin_provider(shared_span_context=shared)}
    client, server, cport = start_chain(remora, ports, upstream, collector,
                                        server_tracing=server_tracing)
    results = {}
    for name, (hdrs, _, _) in CASES.items():
        results[name] = timed_get(cport, f"/{name}?q=1", *hdrs)
    # two spans per request (client sidecar CLIENT, server sidecar SERVER)
    spans = wait_spans(collector, lambda s: s if len(s) >= 2 * len(CASES) else None)
    assert len(spans) == 2 * len(CASES), spans
    app_reqs = {r["path"].split("?")[0].lstrip("/"): r for r in upstream.requests}
    for name, (hdrs, want_trace, caller_span) in CASES.items():
        r, t0, t1 = results[name]
        mine = [s for s in spans if s["tags"].get("http.url", "").endswith(f"/{name}?q=1")]
        cl = [s for s in mine if s["kind"] == "CLIENT"]
        sv = [s for s in mine if s["kind"] == "SERVER"]
        assert len(cl) == 1 and len(sv) == 1, (name, mine)
        cl, sv = cl[0], sv[0]
        # one trace across both proxies, continuing the caller's
        assert cl["traceId"] == sv["traceId"], (name, cl, sv)
        if want_trace:
            assert cl["traceId"] == want_trace, (name, cl)
            assert cl["parentId"] == caller_span, (name, cl)
        else:
            assert "parentId" not in cl, cl
        if shared:
            # Zipkin shared span: the server side reuses the client's span id
            assert sv["id"] == cl["id"] and sv.get("shared") is True, (cl, sv)
            assert sv.get("parentId") == cl.get("parentId")
        else:
            assert sv["parentId"] == cl["id"] and sv["id"] != cl["id"], (cl, sv)
            assert "shared" not in sv
        # what the app received continues the server span
        app = app_reqs[name]["headers"]
        assert app["x-b3-traceid"] == sv["traceId"]
        assert app["x-b3-spanid"] == sv["id"]
        assert app["x-b3-sampled"] == "1"
        if name == "w3c":
            tp = app["traceparent"].split("-")
            assert tp[1] == W3C_TRACE and tp[2] == sv["id"], app
            assert app["tracestate"] == "congo=t61rcWkgMzE"
        if name == "b3single":
            assert app["b3"].startswith(f"{IN_TRACE[16:]}-{sv['id']}-1"), app
        # x-request-id: generated by the client sidecar, kept by the server sidecar
        rid = app["x-request-id"]
        assert cl["tags"]["guid:x-request-id"] == rid == sv["tags"]["guid:x-request-id"]
        # timing: both spans inside the measured request, the server's inside the client's
        slack = 20000   # µs: clock reads at different points of the same machine
        assert t0 - slack <= cl["timestamp"] <= sv["timestamp"] + slack, (t0, cl, sv)
        assert sv["timestamp"] + sv["duration"] <= cl["timestamp"] + cl["duration"] + slack
        assert cl["timestamp"] + cl["duration"] <= t1 + slack, (t1, cl)
        assert cl["duration"] <= (t1 - t0) + slack
        # tags
        for s, svc, node in ((cl, "client-svc", "client-node"), (sv, "server-svc", "server-node")):
            assert s["localEndpoint"]["serviceName"] == svc
            t = s["tags"]
            assert t["http.method"] == "GET" and t["http.status_code"] == "200", t
            assert t["http.protocol"] == "HTTP/1.1" and t["component"] == "proxy"
            assert t["node_id"] == node and t["response_flags"] == "-"
            assert "error" not in t
        assert cl["tags"]["upstream_cluster"] == "server_sidecar"
        assert sv["tags"]["upstream_cluster"] == "app"
        assert sv["tags"]["upstream_address"] == f"127.0.0.1:{upstream.port}"
    assert client.stat("tracing.zipkin.spans_sent") == len(CASES)
    client.wait_stat("tracing.zipkin.reports_sent", lambda v: v >= 1)
    assert client.stat("tracing.zipkin.reports_failed") == 0
    assert client.stat("http.ingress_http.tracing.random_sampling") == len(CASES)


def test_sampling_zero_sends_nothing(remora, ports, upstream, collector):
    client_tracing = {"provider": zipkin_provider(), "random_sampling": {"value": 0}}
    client, server, cport = start_chain(remora, ports, upstream, collector,
                                        client_tracing=client_tracing)
    for i in range(20):
        timed_get(cport, f"/z{i}")
    # the decision travels: the server sidecar (100 %) follows x-b3-sampled: 0
    assert all(r["headers"]["x-b3-sampled"] == "0" for r in upstream.requests)
    client.wait_stat("tracing.zipkin.timer_flushed", lambda v: v >= 2, timeout=10)
    server.wait_stat("tracing.zipkin.timer_flushed", lambda v: v >= 2, timeout=10)
    spans, _, errors = collector.snapshot()
    assert not errors and spans == []
    assert client.stat("http.ingress_http.tracing.not_traceable") == 20
    assert client.stat("http.ingress_http.tracing.random_sampling") == 0
    assert client.stat("tracing.zipkin.spans_sent") == 0
    assert server.stat("tracing.zipkin.spans_sent") == 0


def test_dead_collector_counts_failures(remora, ports, upstream):
    dead = harness.closed_port()
    cfg = sidecar(ports.get(), ports.get(), "app", upstream.port, "INBOUND",
                  {"provider": zipkin_provider()}, dead, "svc", "node")
    port = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    r = remora(cfg)
    for i in range(10):
        timed_get(port, f"/d{i}")
    r.wait_stat("tracing.zipkin.reports_failed", lambda v: v >= 1, timeout=10)
    assert r.stat("tracing.zipkin.reports_sent") == 0
    timed_get(port, "/after")   # requests keep working


def test_collector_error_status_counts_dropped(remora, ports, upstream, collector):
    collector.status_override = 503
    cfg = sidecar(ports.get(), ports.get(), "app", upstream.port, "INBOUND",
                  {"provider": zipkin_provider()}, collector.port, "svc", "node")
    port = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    r = remora(cfg)
    timed_get(port, "/x")
    r.wait_stat("tracing.zipkin.reports_dropped", lambda v: v >= 1, timeout=10)
    assert r.stat("tracing.zipkin.reports_sent") == 0


def test_spawn_upstream_span_tags_and_errors(remora, ports, upstream, collector, monkeypatch):
    monkeypatch.setenv("REMORA_TEST_ZONE", "zone-a")
    tracing = {
        "provider": zipkin_provider(trace_id_128bit=True),
        "spawn_upstream_span": True,
        "max_path_tag_length": 8,
        "custom_tags": [
            {"tag": "lit", "literal": {"value": "v1"}},
            {"tag": "hdr", "request_header": {"name": "X-Tenant", "default_value": "none"}},
            {"tag": "hdr2", "request_header": {"name": "x-absent", "default_value": "dflt"}},
            {"tag": "zone", "environment": {"name": "REMORA_TEST_ZONE"}},
        ],
    }
    cfg = sidecar(ports.get(), ports.get(), "app", upstream.port, "INBOUND", tracing,
                  collector.port, "svc", "node")
    port = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    r = remora(cfg)
    timed_get(port, "/abcdefghijklmnop", "x-tenant: acme")
    res = curl(f"http://127.0.0.1:{port}/fail?status=503")
    assert res.status == 503
    spans = wait_spans(collector, lambda s: s if len(s) >= 4 else None)
    ok = [s for s in spans if s["tags"].get("http.status_code") == "200"]
    down = [s for s in ok if s["kind"] == "SERVER"][0]
    up = [s for s in ok if s["kind"] == "CLIENT"][0]
    assert len(down["traceId"]) == 32
    assert up["parentId"] == down["id"] and up["traceId"] == down["traceId"]
    assert up["name"] == "router app egress"
    assert down["timestamp"] <= up["timestamp"]
    assert up["timestamp"] + up["duration"] <= down["timestamp"] + down["duration"] + 1000
    app = upstream.requests[0]["headers"]
    assert app["x-b3-spanid"] == up["id"] and app["x-b3-parentspanid"] == down["id"]
    t = down["tags"]
    assert t["http.url"].endswith("/abcdefg"[:9]) or t["http.url"].endswith("/abcdefg"), t
    assert t["http.url"].split("://", 1)[1] == f"127.0.0.1:{port}/abcdefg"
    assert (t["lit"], t["hdr"], t["hdr2"], t["zone"]) == ("v1", "acme", "dflt", "zone-a")
    bad = [s for s in spans if s["tags"].get("http.status_code") == "503"]
    assert len(bad) == 2 and all(s["tags"]["error"] == "true" for s in bad), bad


def test_otlp_http_json_export(remora, ports, upstream, collector):
    tracing = {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": OTEL_TYPE, "service_name": "checkout",
        "http_service": {
            "http_uri": {"uri": f"http://127.0.0.1:{collector.port}/v1/traces",
                         "cluster": "zipkin", "timeout": "2s"},
            "request_headers_to_add": [{"header": {"key": "x-otlp-token", "value": "s3cret"}}],
        }}}}
    cfg = sidecar(ports.get(), ports.get(), "app", upstream.port, "INBOUND", tracing,
                  collector.port, "svc", "node")
    port = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    r = remora(cfg)
    _, t0, t1 = timed_get(port, "/otel", f"traceparent: 00-{W3C_TRACE}-{W3C_SPAN}-01")
    timed_get(port, "/otel-b3", f"x-b3-traceid: {IN_TRACE}", f"x-b3-spanid: {IN_SPAN}",
              "x-b3-sampled: 1")
    timed_get(port, "/otel-new")

    def got():
        _, spans, errors = collector.snapshot()
        assert not errors, errors
        return spans if len(spans) >= 3 else None
    spans = harness.wait_until(got, 10, what="OTLP spans")
    by = {s["_attrs"]["http.url"].rsplit("/", 1)[1]: s for s in spans}
    s = by["otel"]
    assert s["traceId"] == W3C_TRACE and s["parentSpanId"] == W3C_SPAN
    assert s["kind"] == 2 and s["_service"] == "checkout"
    assert s["_attrs"]["http.status_code"] == 200 and s["_attrs"]["http.method"] == "GET"
    assert t0 * 1000 - 2e7 <= int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"]) <= t1 * 1000 + 2e7
    assert by["otel-b3"]["traceId"] == IN_TRACE and by["otel-b3"]["parentSpanId"] == IN_SPAN
    assert "parentSpanId" not in by["otel-new"]
    app = {q["path"]: q["headers"] for q in upstream.requests}
    tp = app["/otel"]["traceparent"].split("-")
    assert tp == ["00", W3C_TRACE, s["spanId"], "01"]
    paths = [p for p, _ in collector.reports]
    assert set(paths) == {"/v1/traces"}
    assert all(h.get("x-otlp-token") == "s3cret" for _, h in collector.reports)
    r.wait_stat("tracing.opentelemetry.reports_sent", lambda v: v >= 1)
    assert r.stat("tracing.opentelemetry.spans_sent") == 3


@pytest.mark.parametrize("tracing,msg", [
    ({"provider": zipkin_provider(), "bogus": 1}, "unknown field 'bogus'"),
    ({"provider": {"name": "envoy.tracers.zipkin", "typed_config": {
        "@type": ZIPKIN_TYPE, "collector_cluster": "nope", "collector_endpoint": "/api/v2/spans"}}},
     "collector_cluster: unknown cluster 'nope'"),
    ({"provider": zipkin_provider(collector_endpoint_version="GRPC")}, "only HTTP_JSON"),
    ({"provider": zipkin_provider(), "random_sampling": {"value": 101}}, "random_sampling.value"),
    ({"provider": zipkin_provider(), "custom_tags": [{"tag": "x", "metadata": {}}]},
     "custom_tags[0].metadata"),
])
def test_tracing_config_errors(tmp_path, ports, tracing, msg):
    import subprocess
    import yaml
    cfg = sidecar(ports.get(), ports.get(), "app", 1, "INBOUND", tracing, 2, "svc", "node")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = subprocess.run([harness.remora_bin(), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert msg in p.stderr and "tracing" in p.stderr, p.stderr
