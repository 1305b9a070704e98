"""ORIGINAL_DST clusters, listener_filters and bind_to_port on loopback
(no iptables: the x-envoy-original-dst-host header and non-redirected
connections).  The redirected path is test_capture.py (namespaces)."""

import os
import socket
import subprocess

import pytest
import yaml

from harness import (SANITIZER_MARKERS, bootstrap, connect_refused, curl, free_port,
                     http_listener, remora_bin, route, static_cluster, tcp_proxy_listener)

ORIGINAL_DST_LF = {"name": "envoy.filters.listener.original_dst",
                   "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener."
                                             "original_dst.v3.OriginalDst"}}


def odst_cluster(name="odst", **extra):
    return {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "1s", **extra}


def _http_cfg(ports, cluster):
    admin, lport = ports.get(), ports.get()
    lst = http_listener(lport, [route({"prefix": "/"}, "odst")])
    lst["listener_filters"] = [ORIGINAL_DST_LF]
    return admin, lport, bootstrap(admin, [lst], [cluster])


def test_header_selects_the_host(remora, ports, make_upstream):
    up1, up2 = make_upstream("u1"), make_upstream("u2")
    _, lport, cfg = _http_cfg(ports, odst_cluster(original_dst_lb_config={"use_http_header": True}))
    r = remora(cfg)
    for up in (up1, up2, up1):
        res = curl(f"http://127.0.0.1:{lport}/x", "-H",
                   f"x-envoy-original-dst-host: 127.0.0.1:{up.port}")
        assert res.status == 200, res
    assert len(up1.requests) == 2 and len(up2.requests) == 1
    st = r.stats()
    assert st["cluster.odst.upstream_rq_total"] == 3
    # one host per destination (per worker): at most 2 workers x 2 destinations
    assert 2 <= st["cluster.odst.membership_total"] <= 4


def test_custom_header_name_and_port_override(remora, ports, make_upstream):
    up = make_upstream()
    _, lport, cfg = _http_cfg(ports, odst_cluster(original_dst_lb_config={
        "use_http_header": True, "http_header_name": "X-Dest", "upstream_port_override": up.port}))
    remora(cfg)
    # the port in the header is replaced by upstream_port_override
    res = curl(f"http://127.0.0.1:{lport}/p", "-H", f"x-dest: 127.0.0.1:{closed_port_number()}")
    assert res.status == 200, res
    assert len(up.requests) == 1


def closed_port_number():
    return free_port()


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", "127.0.0.1:99999", "::1:80",
                                   "localhost:80", "[::1]"])
def test_invalid_header_is_no_host(remora, ports, make_upstream, value):
    make_upstream()
    _, lport, cfg = _http_cfg(ports, odst_cluster(original_dst_lb_config={"use_http_header": True}))
    r = remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/", "-H", f"x-envoy-original-dst-host: {value}")
    assert res.status == 503, res
    assert b"no healthy upstream" in res.body
    st = r.stats()
    assert st["cluster.odst.original_dst_host_invalid"] == 1
    assert st["cluster.odst.upstream_cx_none_healthy"] == 1


def test_header_ignored_without_use_http_header(remora, ports, make_upstream):
    up = make_upstream()
    _, lport, cfg = _http_cfg(ports, odst_cluster())
    r = remora(cfg)
    # a direct (not redirected) connection has no original destination
    res = curl(f"http://127.0.0.1:{lport}/", "-H", f"x-envoy-original-dst-host: 127.0.0.1:{up.port}")
    assert res.status == 503, res
    assert not up.requests
    assert r.stats()["cluster.odst.upstream_cx_none_healthy"] == 1


def test_ipv6_header(remora, ports):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    # an IPv6 upstream: a minimal raw server answering one request
    ls = socket.socket(socket.AF_INET6)
    ls.bind(("::1", 0))
    ls.listen(4)
    port = ls.getsockname()[1]
    import threading

    def serve():
        c, _ = ls.accept()
        c.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv6")
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    _, lport, cfg = _http_cfg(ports, odst_cluster(original_dst_lb_config={"use_http_header": True}))
    remora(cfg)
    res = curl(f"http://127.0.0.1:{lport}/", "-H", f"x-envoy-original-dst-host: [::1]:{port}")
    t.join(timeout=10)
    ls.close()
    assert res.status == 200 and res.body == b"v6", res


def test_unused_hosts_are_cleaned(remora, ports, make_upstream):
    up = make_upstream()
    _, lport, cfg = _http_cfg(ports, odst_cluster(cleanup_interval="0.2s",
                                                  original_dst_lb_config={"use_http_header": True}))
    r = remora(cfg, concurrency=1)
    res = curl(f"http://127.0.0.1:{lport}/", "-H", f"x-envoy-original-dst-host: 127.0.0.1:{up.port}")
    assert res.status == 200
    assert r.stat("cluster.odst.membership_total") == 1
    # unused for a sweep or two: gone, and its idle pooled connection closed
    r.wait_stat("cluster.odst.membership_total", lambda v: v == 0, timeout=10)
    r.wait_stat("cluster.odst.upstream_cx_destroy", lambda v: v == 1, timeout=10)
    # used again: a new host
    res = curl(f"http://127.0.0.1:{lport}/", "-H", f"x-envoy-original-dst-host: 127.0.0.1:{up.port}")
    assert res.status == 200
    assert r.stat("cluster.odst.membership_total") == 1


def test_tcp_proxy_without_original_destination_closes(remora, ports):
    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [tcp_proxy_listener(lport, "odst")], [odst_cluster()])
    r = remora(cfg)
    s = socket.create_connection(("127.0.0.1", lport), timeout=5)
    s.settimeout(5)
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    s.close()
    r.wait_stat("cluster.odst.upstream_cx_none_healthy", lambda v: v == 1)


def test_bind_to_port_false_opens_no_socket(remora, ports, make_upstream):
    up = make_upstream()
    admin, lport, hidden = ports.get(), ports.get(), ports.get()
    lst = http_listener(lport, [route({"prefix": "/"}, "backend")], name="main")
    other = http_listener(hidden, [route({"prefix": "/"}, "backend")], name="hidden",
                          stat_prefix="hidden")
    other["bind_to_port"] = False
    remora(bootstrap(admin, [lst, other], [static_cluster("backend", up.port)]))
    assert curl(f"http://127.0.0.1:{lport}/").status == 200
    assert connect_refused(hidden)


def test_listener_filter_on_a_plain_listener_keeps_the_local_address(remora, ports, make_upstream):
    # original_dst on a connection that was not redirected: nothing restored,
    # destination_port matching still sees the listener's own port
    up = make_upstream()
    admin, lport = ports.get(), ports.get()
    lst = http_listener(lport, [route({"prefix": "/"}, "backend")])
    lst["listener_filters"] = [ORIGINAL_DST_LF]
    lst["use_original_dst"] = True
    lst["filter_chains"][0]["filter_chain_match"] = {"destination_port": lport}
    remora(bootstrap(admin, [lst], [static_cluster("backend", up.port)]))
    assert curl(f"http://127.0.0.1:{lport}/").status == 200


# ---- config errors --------------------------------------------------------------


def _validate(tmp_path, cfg):
    path = os.path.join(str(tmp_path), "c.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    p = subprocess.run([remora_bin(), "--mode", "validate", "-c", path], capture_output=True,
                       text=True, timeout=30)
    for m in SANITIZER_MARKERS:
        assert m not in p.stderr
    return p.returncode, p.stderr


def _base(clusters, listeners=None):
    return bootstrap(free_port(), listeners or [], clusters)


@pytest.mark.parametrize("cluster,path,msg", [
    (odst_cluster(lb_policy="ROUND_ROBIN"), "clusters[0].lb_policy", "CLUSTER_PROVIDED"),
    ({"name": "odst", "type": "ORIGINAL_DST"}, "clusters[0]", "CLUSTER_PROVIDED"),
    (odst_cluster(load_assignment={"cluster_name": "odst", "endpoints": []}),
     "clusters[0].load_assignment", "not supported for ORIGINAL_DST"),
    (odst_cluster(cleanup_interval="0s"), "clusters[0].cleanup_interval", "greater than 0"),
    (odst_cluster(original_dst_lb_config={"upstream_port_override": 70000}),
     "original_dst_lb_config.upstream_port_override", "port"),
    (odst_cluster(original_dst_lb_config={"metadata_key": {}}),
     "original_dst_lb_config.metadata_key", ""),
    (static_cluster("s", 80, cleanup_interval="5s"), "clusters[0].cleanup_interval",
     "only ORIGINAL_DST"),
    (static_cluster("s", 80, lb_policy="CLUSTER_PROVIDED"), "clusters[0].lb_policy", ""),
])
def test_cluster_config_errors(tmp_path, cluster, path, msg):
    rc, err = _validate(tmp_path, _base([cluster]))
    assert rc != 0
    assert path in err, err
    assert msg in err, err


@pytest.mark.parametrize("mutate,path,msg", [
    (lambda l: l.update(listener_filters=[{"name": "envoy.filters.listener.proxy_protocol"}]),
     "listener_filters[0].name", "unknown or unsupported listener filter"),
    (lambda l: l.update(listener_filters=[dict(ORIGINAL_DST_LF, filter_disabled={})]),
     "listener_filters[0].filter_disabled", ""),
    (lambda l: l.update(listener_filters=[{"name": "x", "typed_config": {
        "@type": ORIGINAL_DST_LF["typed_config"]["@type"], "bogus": 1}}]),
     "listener_filters[0].typed_config.bogus", ""),
    (lambda l: l.update(use_original_dst="yes"), "use_original_dst", ""),
    (lambda l: l.update(bind_to_port=3), "bind_to_port", ""),
])
def test_listener_config_errors(tmp_path, mutate, path, msg):
    lst = http_listener(free_port(), [route({"prefix": "/"}, "odst")])
    mutate(lst)
    rc, err = _validate(tmp_path, _base([odst_cluster()], [lst]))
    assert rc != 0
    assert "listeners[0]." + path in err, err
    assert msg in err, err


def test_listener_filter_fields_accepted(tmp_path):
    lst = http_listener(free_port(), [route({"prefix": "/"}, "odst")])
    lst.update(listener_filters=[ORIGINAL_DST_LF, {"name": "envoy.filters.listener.original_dst"}],
               listener_filters_timeout="1s", continue_on_listener_filters_timeout=True,
               use_original_dst=True, bind_to_port=True)
    rc, err = _validate(tmp_path, _base([odst_cluster(cleanup_interval="10s",
                                                      original_dst_lb_config={
                                                          "use_http_header": False,
                                                          "http_header_name": "x-d",
                                                          "upstream_port_override": 80})], [lst]))
    assert rc == 0, err
