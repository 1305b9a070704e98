"""xDS subscription stats per resource, with Envoy's names, over ADS state of
the world, delta and REST polling:

  http.<stat_prefix>.rds.<route_config_name>.{update_attempt, update_success,
      update_rejected, update_failure, update_empty, init_fetch_timeout,
      version, update_time, config_reload, config_reload_time_ms}
  cluster.<name>.{update_attempt, update_success, update_rejected,
      update_failure, update_empty, init_fetch_timeout, version, update_time,
      update_no_rebuild}   (Envoy roots an EDS cluster's subscription here)
  cluster_manager.cds.* / listener_manager.lds.* (update_time, update_duration)
"""

import copy
import time

import pytest

from harness import curl, wait_until
from test_stats_sharing import assert_no_duplicates, promtool_clean
from test_xds import (cla, cp, eds_cluster, pytestmark, rds_listener, ready,  # noqa: F401
                      routes, xds_bootstrap)
from test_xds_rest import REST_SRC, rest_bootstrap

MODES = ["sotw", "delta", "rest"]


def listener(mode, name, port, route_name, stat_prefix=None, fetch_timeout=None):
    lis = rds_listener(name, port, route_name)
    hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
    if stat_prefix:
        hcm["stat_prefix"] = stat_prefix
    if mode == "rest":
        hcm["rds"]["config_source"] = copy.deepcopy(REST_SRC)
    if fetch_timeout is not None:
        hcm["rds"]["config_source"]["initial_fetch_timeout"] = fetch_timeout
    return lis


def cluster(mode, name, fetch_timeout=None):
    c = eds_cluster(name)
    if mode == "rest":
        c["eds_cluster_config"]["eds_config"] = copy.deepcopy(REST_SRC)
    if fetch_timeout:
        c["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = fetch_timeout
    return c


def start(mode, remora, cp, ports, fetch_timeout=None):
    admin = ports.get()
    if mode == "rest":
        b = rest_bootstrap(admin, cp.rest_port)
        if fetch_timeout:
            for k in ("cds_config", "lds_config"):
                b["dynamic_resources"][k]["initial_fetch_timeout"] = fetch_timeout
    else:
        b = xds_bootstrap(admin, cp.grpc_port, fetch_timeout=fetch_timeout,
                          api_type="AGGREGATED_DELTA_GRPC" if mode == "delta" else "GRPC")
    r = remora(b, wait_ready=False)
    wait_until(lambda: ready(r), 20, what="/ready 200")
    return r


def server_of(port, path="/x"):
    res = curl(f"http://127.0.0.1:{port}{path}")
    return res.json()["server"] if res.status == 200 else res.status


def bad_cla(name, port):
    c = cla(name, [port])
    c["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] = \
        "not-an-ip"
    return c


@pytest.mark.parametrize("mode", MODES)
def test_rds_and_eds_subscription_stats(mode, remora, cp, make_upstream, ports):
    a, b = make_upstream("a"), make_upstream("b")
    lport, lport2 = ports.get(), ports.get()
    cp.set("cds", "1", [cluster(mode, "backend")])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    # two HCMs (two stat_prefixes) use route configuration r1: each counts it
    cp.set("lds", "1", [listener(mode, "ingress", lport, "r1"),
                        listener(mode, "second", lport2, "r1")])
    t0_ms = time.time() * 1000
    r = start(mode, remora, cp, ports)
    assert server_of(lport) == "a" and server_of(lport2) == "a"
    rds = "http.ingress.rds.r1."
    for p in ("http.ingress.rds.r1.", "http.second.rds.r1."):
        r.wait_stat(p + "update_success", lambda v: v >= 1)
        st = r.stats()
        assert st[p + "config_reload"] == 1, st
        assert st[p + "version"] == 1
        assert st[p + "update_rejected"] == 0 and st[p + "update_failure"] == 0
        assert st[p + "update_attempt"] >= st[p + "update_success"]
        # wall-clock milliseconds of the last reload / update
        assert t0_ms - 60000 < st[p + "config_reload_time_ms"] < time.time() * 1000 + 60000
        assert t0_ms - 60000 < st[p + "update_time"] < time.time() * 1000 + 60000
        for n in ("update_empty", "init_fetch_timeout"):
            assert st[p + n] == 0, (p, n)
    cl = "cluster.backend."
    st = r.stats()
    assert st[cl + "update_success"] >= 1 and st[cl + "version"] == 1, st
    assert st[cl + "update_rejected"] == 0 and st[cl + "update_time"] > t0_ms - 60000
    assert st["cluster_manager.cds.update_time"] > t0_ms - 60000
    assert st["listener_manager.lds.update_time"] > t0_ms - 60000

    # a route change: one more reload, the new version
    cp.set("rds", "2", [routes("r1", [("/b", "backend"), ("/", "backend")])])
    r.wait_stat(rds + "config_reload", lambda v: v == 2, timeout=15)
    r.wait_stat("http.second.rds.r1.config_reload", lambda v: v == 2, timeout=15)
    assert r.stat(rds + "version") == 2
    # a bad route table: rejected, no reload, the version in force stays
    bad = routes("r1", [("/", "backend")])
    bad["virtual_hosts"][0]["routes"].insert(0, {
        "match": {"safe_regex": {"regex": "(unclosed"}}, "route": {"cluster": "backend"}})
    success = r.stat(rds + "update_success")
    cp.set("rds", "3", [bad])
    r.wait_stat(rds + "update_rejected", lambda v: v >= 1, timeout=15)
    st = r.stats()
    assert st[rds + "config_reload"] == 2 and st[rds + "version"] == 2
    assert st[rds + "update_success"] == success
    assert st["http.second.rds.r1.update_rejected"] >= 1
    assert server_of(lport) == "a"

    # endpoints: a change, then a bad assignment (rejected, the hosts stay)
    s0 = st[cl + "update_success"]
    cp.set("eds", "2", [cla("backend", [b.port])])
    wait_until(lambda: server_of(lport) == "b", 15, what="EDS update")
    r.wait_stat(cl + "version", lambda v: v == 2)
    assert r.stat(cl + "update_success") >= s0 + 1
    cp.set("eds", "3", [bad_cla("backend", a.port)])
    r.wait_stat(cl + "update_rejected", lambda v: v >= 1, timeout=15)
    assert r.stat(cl + "version") == 2
    assert server_of(lport) == "b"
    if mode != "delta":
        # the same assignment again (state of the world resends it): accepted,
        # no host set rebuilt
        nr = r.stat(cl + "update_no_rebuild")
        cp.set("eds", "4", [cla("backend", [b.port])])
        r.wait_stat(cl + "version", lambda v: v == 4, timeout=15)
        cp.set("eds", "5", [cla("backend", [b.port])])
        r.wait_stat(cl + "version", lambda v: v == 5, timeout=15)
        assert r.stat(cl + "update_no_rebuild") >= nr + 1

    # the second listener goes: its RDS subscription stats go with it
    cp.set("lds", "2", [listener(mode, "ingress", lport, "r1")])
    wait_until(lambda: "http.second.rds.r1.update_success" not in r.stats(), 15,
               what="the removed HCM's RDS stats dropped")
    assert rds + "update_success" in r.stats()

    # Prometheus: Envoy's tag extraction (prefix and route config as labels)
    text, series = assert_no_duplicates(r)
    promtool_clean(text)
    assert series['envoy_http_rds_config_reload{envoy_http_conn_manager_prefix="ingress",'
                  'envoy_rds_route_config="r1"}'] == [2.0]
    assert series['envoy_cluster_update_rejected{envoy_cluster_name="backend"}'] >= [1.0]
    assert 'envoy_cluster_manager_cds_update_duration_count' in text

    # the control plane fails: every subscription counts update_failure
    f = {k: r.stat(k) for k in (rds + "update_failure", cl + "update_failure",
                                "cluster_manager.cds.update_failure")}
    if mode == "rest":
        for t in ("cds", "eds", "lds", "rds"):
            cp.rest_script(t, status=500)
    else:
        cp.stop()
    for k, v in f.items():
        r.wait_stat(k, lambda x, v=v: x > v, timeout=15)
    assert server_of(lport) == "b"
    r.stop()


@pytest.mark.parametrize("mode", ["sotw", "rest"])
def test_rds_and_eds_init_fetch_timeout(mode, remora, cp, make_upstream, ports):
    """A route configuration and an assignment that never come: after the
    initial_fetch_timeout their subscriptions count init_fetch_timeout."""
    a = make_upstream("a")
    lport, lport2 = ports.get(), ports.get()
    cp.set("cds", "1", [cluster(mode, "backend"),
                        cluster(mode, "cold", fetch_timeout={"seconds": 1})])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "1", [listener(mode, "ingress", lport, "r1"),
                        listener(mode, "waiting", lport2, "nowhere",
                                 fetch_timeout={"seconds": 1})])
    r = start(mode, remora, cp, ports, fetch_timeout="1s")
    r.wait_stat("http.waiting.rds.nowhere.init_fetch_timeout", lambda v: v == 1, timeout=15)
    r.wait_stat("cluster.cold.init_fetch_timeout", lambda v: v == 1, timeout=15)
    st = r.stats()
    assert st["http.ingress.rds.r1.init_fetch_timeout"] == 0
    assert st["cluster.backend.init_fetch_timeout"] == 0
    assert st["http.waiting.rds.nowhere.update_success"] == 0
    assert curl(f"http://127.0.0.1:{lport2}/").status == 404   # an empty route table
    r.stop()


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_sds_subscription_stats(mode, remora, cp, make_upstream, ports, tmp_path):
    """sds.<name>.*: update_time and version of the accepted secret, a
    resend of the same secret counts as a success, the stream failing counts
    update_failure."""
    import tls_pki
    from test_xds_sds import cert_secret, tls_rds_listener
    pki = tls_pki.make_pki(tmp_path / "pki")
    a = make_upstream("a")
    lport = ports.get()
    cp.set("cds", "1", [eds_cluster("backend")])
    cp.set("eds", "1", [cla("backend", [a.port])])
    cp.set("rds", "1", [routes("r1", [("/", "backend")])])
    cp.set("lds", "1", [tls_rds_listener("tls", lport, "r1", "server_cert")])
    cp.set("sds", "1", [cert_secret("server_cert", pki["server"], pki["server_key"])])
    t0_ms = time.time() * 1000
    r = start(mode, remora, cp, ports)
    p = "sds.server_cert."
    st = r.stats()
    assert st[p + "update_success"] == 1 and st[p + "version"] == 1, st
    assert st[p + "update_time"] > t0_ms - 60000
    assert st[p + "update_failure"] == 0 and st[p + "update_rejected"] == 0
    cp.set("sds", "2", [cert_secret("server_cert", pki["server2"], pki["server2_key"])])
    r.wait_stat(p + "version", lambda v: v == 2, timeout=15)
    assert r.stat(p + "update_success") == 2
    if mode == "sotw":   # the same secret again, a new response version: accepted
        cp.set("sds", "3", [cert_secret("server_cert", pki["server2"], pki["server2_key"])])
        r.wait_stat(p + "version", lambda v: v == 3, timeout=15)
        assert r.stat(p + "update_success") == 3
    cp.stop()
    r.wait_stat(p + "update_failure", lambda v: v >= 1, timeout=15)
    assert r.stat(p + "update_attempt") >= r.stat(p + "update_success") + 1
    r.stop()
