"""Bootstrap validation: --mode validate on good and bad configs, errors as
<file>:<line>:<col>: <field path>: <message>, and serving a bad config."""

import os
import re
import socket
import subprocess

import pytest

from harness import SANITIZER_MARKERS, free_port, remora_bin

GOOD = """\
node:
  id: validate-test
  cluster: tests
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: ADMIN_PORT}
static_resources:
  listeners:
  - name: listener_0
    address:
      socket_address:
        address: 127.0.0.1
        port_value: LISTEN_PORT
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                route:
                  cluster: backend
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address:
                address: 127.0.0.1
                port_value: 8080
"""

LISTENER_PORT_PATH = "static_resources.listeners[0].address.socket_address.port_value"
MATCH_PATH = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
              "route_config.virtual_hosts[0].routes[0].match")


def _env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def run_remora(args, timeout=30):
    binary = remora_bin()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"remora binary not found: {binary} (build with `make asan`)")
    p = subprocess.run([binary] + args, capture_output=True, timeout=timeout, env=_env(),
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    for m in SANITIZER_MARKERS:
        assert m not in out, f"sanitizer report:\n{out[-6000:]}"
    return p.returncode, p.stderr.decode("utf-8", "replace"), p.stdout.decode("utf-8", "replace")


def write_config(tmp_path, text, name="config.yaml"):
    text = text.replace("ADMIN_PORT", str(free_port())).replace("LISTEN_PORT", str(free_port()))
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(text)
    return path, text


def position_of(text, needle, occurrence=0):
    """1-based (line, col) of the first character of the n-th needle in text."""
    idx = -1
    for _ in range(occurrence + 1):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


def validate(path):
    return run_remora(["--mode", "validate", "-c", path])


def test_validate_good_config(tmp_path):
    path, _ = write_config(tmp_path, GOOD)
    rc, err, out = validate(path)
    assert rc == 0, err


def test_validate_does_not_bind_ports(tmp_path):
    # validation must not open the admin or listener sockets: holding both
    # ports busy does not make a good config fail
    admin, lport = free_port(), free_port()
    text = GOOD.replace("ADMIN_PORT", str(admin)).replace("LISTEN_PORT", str(lport))
    path = os.path.join(str(tmp_path), "busy.yaml")
    with open(path, "w") as f:
        f.write(text)
    held = []
    try:
        for p in (admin, lport):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.listen(1)
            held.append(s)
        rc, err, _ = validate(path)
        assert rc == 0, err
    finally:
        for s in held:
            s.close()


def test_validate_camel_case_and_json_forms_accepted(tmp_path):
    text = GOOD.replace("connect_timeout: 1s", "connectTimeout: 0.25s") \
           .replace("stat_prefix: ingress_http", "statPrefix: ingress_http")
    path, _ = write_config(tmp_path, text)
    rc, err, _ = validate(path)
    assert rc == 0, err


@pytest.mark.parametrize("name,old,new,needle,field_path,message", [
    ("unknown_field_in_match", 'prefix: "/"', 'prefx: "/"', "prefx",
     MATCH_PATH + ".prefx", "unknown field 'prefx'"),
    ("unknown_field_in_cluster", "connect_timeout: 1s", "conect_timeout: 1s", "conect_timeout",
     "static_resources.clusters[0].conect_timeout", "unknown field 'conect_timeout'"),
    ("unknown_top_level_field", "static_resources:", "static_resources:\n  extra_field: 1",
     "extra_field", "static_resources.extra_field", "unknown field 'extra_field'"),
    ("unknown_field_in_hcm", "stat_prefix: ingress_http", "stat_prefix: ingress_http\n          stat_prefx: x",
     "stat_prefx", "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefx",
     "unknown field 'stat_prefx'"),
])
def test_validate_unknown_field_exact_message(tmp_path, name, old, new, needle, field_path, message):
    assert old in GOOD
    path, text = write_config(tmp_path, GOOD.replace(old, new, 1))
    line, col = position_of(text, needle)
    rc, err, _ = validate(path)
    assert rc == 1, f"exit {rc}, stderr: {err}"
    expected = f"{path}:{line}:{col}: {field_path}: {message}"
    assert expected in err, f"expected {expected!r} in stderr:\n{err}"


@pytest.mark.parametrize("name,old,new,needle,field_path", [
    ("port_not_a_number", "port_value: LISTEN_PORT", 'port_value: "eighty"', "port_value: \"eighty\"",
     LISTENER_PORT_PATH),
    ("port_out_of_range", "port_value: LISTEN_PORT", "port_value: 70000", "port_value: 70000",
     LISTENER_PORT_PATH),
    ("port_is_a_list", "port_value: LISTEN_PORT", "port_value: [1, 2]", "port_value: [1, 2]",
     LISTENER_PORT_PATH),
    ("domains_not_a_list", 'domains: ["*"]', 'domains: "*"', "domains:",
     "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config."
     "virtual_hosts[0].domains"),
    ("duration_without_unit", "connect_timeout: 1s", "connect_timeout: 5", "connect_timeout",
     "static_resources.clusters[0].connect_timeout"),
    ("bad_enum", "type: STATIC", "type: STATICK", "type: STATICK",
     "static_resources.clusters[0].type"),
])
def test_validate_wrong_type_names_path_and_position(tmp_path, name, old, new, needle, field_path):
    assert old in GOOD
    path, text = write_config(tmp_path, GOOD.replace(old, new, 1))
    line, col = position_of(text, needle)
    rc, err, _ = validate(path)
    assert rc == 1, f"exit {rc}, stderr: {err}"
    prefix = f"{path}:{line}:{col}: {field_path}: "
    m = re.search(re.escape(prefix) + r"(\S.*)", err)
    assert m, f"expected a line starting {prefix!r} in stderr:\n{err}"


def test_validate_missing_required_cluster_name(tmp_path):
    path, text = write_config(tmp_path, GOOD.replace("  - name: backend\n    type: STATIC",
                                                     "  - type: STATIC", 1))
    rc, err, _ = validate(path)
    assert rc == 1, err
    assert re.search(re.escape(path) + r":\d+:\d+: static_resources\.clusters\[0\]\.name: .*name", err), err


def test_validate_unknown_filter_type(tmp_path):
    text = GOOD.replace("envoy.extensions.filters.http.router.v3.Router",
                        "envoy.extensions.filters.http.router.v3.Routerr")
    path, text = write_config(tmp_path, text)
    rc, err, _ = validate(path)
    assert rc == 1, err
    prefix = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]"
    assert re.search(re.escape(path) + r":\d+:\d+: " + re.escape(prefix), err), err


def test_validate_yaml_syntax_error(tmp_path):
    path, text = write_config(tmp_path, GOOD.replace("    type: STATIC", "    type: [STATIC", 1))
    rc, err, _ = validate(path)
    assert rc == 1, err
    assert re.search(re.escape(path) + r":\d+:\d+: ", err), err


def test_validate_missing_file(tmp_path):
    path = os.path.join(str(tmp_path), "does-not-exist.yaml")
    rc, err, _ = validate(path)
    assert rc != 0
    assert "does-not-exist.yaml" in err, err


def test_serving_bad_config_exits_with_message(tmp_path):
    path, text = write_config(tmp_path, GOOD.replace('prefix: "/"', 'prefx: "/"', 1))
    line, col = position_of(text, "prefx")
    lport = int(re.search(r"port_value: (\d+)\n    filter_chains", text).group(1))
    rc, err, _ = run_remora(["-c", path, "--concurrency", "1"], timeout=15)
    assert rc != 0, err
    assert f"{path}:{line}:{col}: {MATCH_PATH}.prefx: unknown field 'prefx'" in err, err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lport), timeout=2).close()
