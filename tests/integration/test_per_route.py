"""typed_per_filter_config: per-route local_ratelimit and fault configs
(route > virtual host > route configuration), FilterConfig {disabled} turning a
filter off for one route, http_filters[].disabled enabled per route, and a
bad per-route config failing startup with its path."""

import http.client
import subprocess

import yaml

from harness import (ROUTER_FILTER, bootstrap, http_listener, remora_bin, route, route_config,
                     static_cluster, virtual_host)

LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
FC_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def with_pfc(r, **pfc):
    r["typed_per_filter_config"] = pfc
    return r


def abort(status):
    return {"@type": FAULT_TYPE, "abort": {"http_status": status, "percentage": {"numerator": 100}}}


def disabled():
    return {"@type": FC_TYPE, "disabled": True}


def fault_filter(name="fault", **cfg):
    return {"name": name, "typed_config": {"@type": FAULT_TYPE, **cfg}}


def start(remora, ports, upstream, rc, filters):
    admin, lport = ports.get(), ports.get()
    lst = http_listener(lport, rc=rc, http_filters=filters + [ROUTER_FILTER])
    r = remora(bootstrap(admin, [lst], [static_cluster("backend", upstream.port)]))
    return r, lport


def statuses(lport, path, n, host="test.local"):
    out = []
    c = http.client.HTTPConnection("127.0.0.1", lport, timeout=10)
    try:
        for _ in range(n):
            c.request("GET", path, headers={"host": host})
            resp = c.getresponse()
            resp.read()
            out.append(resp.status)
    finally:
        c.close()
    return out


def test_tight_rate_limit_on_one_route_only(remora, ports, upstream):
    """The filter-level config has no bucket (nothing is limited); /tight
    has its own LocalRateLimit with 3 tokens and no refill during the test,
    its own stats, and does not touch the other route."""
    tight = {"@type": LRL_TYPE, "stat_prefix": "tight",
             "token_bucket": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "3600s"},
             "filter_enabled": ALL, "filter_enforced": ALL}
    rc = route_config([virtual_host([
        with_pfc(route({"prefix": "/tight"}, "backend"), rl=tight),
        route({"prefix": "/"}, "backend"),
    ])])
    lrl = {"name": "rl", "typed_config": {"@type": LRL_TYPE, "stat_prefix": "global",
                                          "filter_enabled": ALL, "filter_enforced": ALL}}
    r, lport = start(remora, ports, upstream, rc, [lrl])
    assert statuses(lport, "/free", 20) == [200] * 20
    assert statuses(lport, "/tight", 10) == [200] * 3 + [429] * 7
    assert statuses(lport, "/free", 5) == [200] * 5   # unaffected afterwards
    st = r.stats()
    assert st["tight.http_local_rate_limit.enabled"] == 10
    assert st["tight.http_local_rate_limit.ok"] == 3
    assert st["tight.http_local_rate_limit.rate_limited"] == 7
    assert st["global.http_local_rate_limit.enabled"] == 25
    assert st["global.http_local_rate_limit.rate_limited"] == 0
    assert upstream.request_count() == 28


def test_fault_abort_on_one_route_only(remora, ports, upstream):
    rc = route_config([virtual_host([
        with_pfc(route({"prefix": "/broken"}, "backend"), fault=abort(503)),
        route({"prefix": "/"}, "backend"),
    ])])
    r, lport = start(remora, ports, upstream, rc, [fault_filter()])
    assert statuses(lport, "/broken", 10) == [503] * 10
    assert statuses(lport, "/fine", 10) == [200] * 10
    # stats stay the filter's (http.<prefix>.fault.*), as Envoy
    assert r.stats()["http.ingress_http.fault.aborts_injected"] == 10
    assert upstream.request_count() == 10


def test_filter_config_disabled_turns_fault_off_for_one_route(remora, ports, upstream):
    rc = route_config([virtual_host([
        with_pfc(route({"prefix": "/healthy"}, "backend"), fault=disabled()),
        route({"prefix": "/"}, "backend"),
    ])])
    r, lport = start(remora, ports, upstream, rc,
                     [fault_filter(abort={"http_status": 500, "percentage": {"numerator": 100}})])
    assert statuses(lport, "/healthy", 10) == [200] * 10
    assert statuses(lport, "/other", 10) == [500] * 10
    assert upstream.request_count() == 10


def test_virtual_host_level_applies_to_routes_without_their_own(remora, ports, upstream):
    """vhost 'api' aborts with 418 unless a route says otherwise; the route
    config level (402) covers the other virtual host; route beats vhost."""
    api = virtual_host([
        with_pfc(route({"prefix": "/own"}, "backend"), fault=abort(503)),
        with_pfc(route({"prefix": "/off"}, "backend"), fault=disabled()),
        route({"prefix": "/"}, "backend"),
    ], domains=["api.local"], name="api")
    api["typed_per_filter_config"] = {"fault": abort(418)}
    other = virtual_host([route({"prefix": "/"}, "backend")], domains=["*"], name="other")
    rc = route_config([api, other])
    rc["typed_per_filter_config"] = {"fault": abort(402)}
    r, lport = start(remora, ports, upstream, rc, [fault_filter()])
    assert statuses(lport, "/own", 3, host="api.local") == [503] * 3
    assert statuses(lport, "/inherit", 3, host="api.local") == [418] * 3
    assert statuses(lport, "/off", 3, host="api.local") == [200] * 3
    assert statuses(lport, "/x", 3, host="elsewhere.local") == [402] * 3
    assert upstream.request_count() == 3


def test_disabled_http_filter_enabled_per_route(remora, ports, upstream):
    """http_filters[].disabled: the filter runs only where a route enables it
    (FilterConfig with an empty config keeps the filter-level config)."""
    rc = route_config([virtual_host([
        with_pfc(route({"prefix": "/chaos"}, "backend"), fault={"@type": FC_TYPE, "config": {}}),
        route({"prefix": "/"}, "backend"),
    ])])
    f = fault_filter(abort={"http_status": 503, "percentage": {"numerator": 100}})
    f["disabled"] = True
    r, lport = start(remora, ports, upstream, rc, [f])
    assert statuses(lport, "/calm", 5) == [200] * 5
    assert statuses(lport, "/chaos", 5) == [503] * 5


def test_no_route_still_404_with_per_route_configs(remora, ports, upstream):
    rc = route_config([virtual_host([
        with_pfc(route({"prefix": "/a"}, "backend"), fault=abort(503)),
    ])])
    r, lport = start(remora, ports, upstream, rc, [fault_filter()])
    assert statuses(lport, "/zzz", 3) == [404] * 3
    assert r.stats()["http.ingress_http.no_route"] == 3


def test_bad_per_route_config_fails_startup(tmp_path, ports, upstream):
    rc = route_config([virtual_host([
        with_pfc(route({"prefix": "/"}, "backend"),
                 fault={"@type": FAULT_TYPE, "abort": {"http_status": 700}}),
    ])])
    lst = http_listener(ports.get(), rc=rc, http_filters=[fault_filter(), ROUTER_FILTER])
    cfg = bootstrap(ports.get(), [lst], [static_cluster("backend", upstream.port)])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = subprocess.run([remora_bin(), "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert ("route_config.virtual_hosts[0].routes[0].typed_per_filter_config.fault.abort"
            ".http_status: must be in 200..599") in p.stderr, p.stderr
