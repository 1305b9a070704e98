"""Access logs (HCM and tcp_proxy access_log[]), response flags, request ids.

Each test configures a file access log in the test's tmp dir, drives real
requests (curl / http.client / raw sockets) and reads the lines the flusher
thread wrote (bounded waits: the flusher writes at least every 100 ms)."""

import http.client
import json
import os
import re
import socket
import struct
import subprocess
import time
import uuid

from harness import (ROUTER_FILTER, SANITIZER_MARKERS, bootstrap, curl, http_listener,
                     remora_bin, route, route_config, static_cluster, tcp_proxy_listener,
                     virtual_host, wait_until)

FILE_AL = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT_AL = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

FLAGS_FMT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n"


def file_log(path, fmt=None, json_format=None, filt=None, **log_format_extra):
    tc = {"@type": FILE_AL, "path": str(path)}
    if fmt is not None:
        tc["log_format"] = {"text_format_source": {"inline_string": fmt}, **log_format_extra}
    elif json_format is not None:
        tc["log_format"] = {"json_format": json_format, **log_format_extra}
    al = {"name": "envoy.access_loggers.file", "typed_config": tc}
    if filt is not None:
        al["filter"] = filt
    return al


def read_lines(path, n, timeout=10.0):
    """Wait until path holds at least n complete lines; return them."""
    def ready():
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            data = f.read().decode()
        lines = data.splitlines()
        return lines if len(lines) >= n and data.endswith("\n") else None
    return wait_until(ready, timeout, what=f"{n} access log lines in {path}")


def start_http(remora, ports, upstream, access_log, routes=None, filters=None, clusters=None,
               **hcm_extra):
    admin, lport = ports.get(), ports.get()
    routes = routes or [route({"prefix": "/"}, "backend")]
    listener = http_listener(lport, routes, access_log=access_log,
                             http_filters=filters or [ROUTER_FILTER], **hcm_extra)
    clusters = clusters or [static_cluster("backend", upstream.port)]
    r = remora(bootstrap(admin, [listener], clusters))
    return r, lport


def get(lport, path, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", lport, timeout=timeout)
    try:
        c.request("GET", path, headers={"host": "test.local", **(headers or {})})
        resp = c.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        c.close()


# ---------------------------------------------------------------------------
# default format, flags


DEFAULT_RE = re.compile(
    r'^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "(\S+) (\S+) (\S+)" (\d+) (\S+) (\d+) (\d+) '
    r'(\d+) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$')


def test_default_format_matches_envoy_layout(remora, ports, upstream, tmp_path):
    log = tmp_path / "access.log"
    r, lport = start_http(remora, ports, upstream, [file_log(log)])
    before = time.time()
    res = curl(f"http://127.0.0.1:{lport}/hello?x=1", "-H", "host: svc.local",
               "-H", "user-agent: al-test/1.0", "-H", "x-request-id: rid-123",
               "--data-binary", "abcde")
    assert res.status == 200
    (line,) = read_lines(log, 1)
    m = DEFAULT_RE.match(line)
    assert m, line
    ts, method, path, proto, code, flags, rx, tx, dur, ust, xff, ua, rid, auth, uhost = m.groups()
    t = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 2 <= t <= time.time() + 2
    assert (method, path, proto, code, flags) == ("POST", "/hello?x=1", "HTTP/1.1", "200", "-")
    assert int(rx) == 5                           # request body bytes
    assert int(tx) == len(res.body) > 0           # response body bytes
    assert ust.isdigit()                          # x-envoy-upstream-service-time
    assert (xff, ua, rid, auth) == ("-", "al-test/1.0", "rid-123", "svc.local")
    assert uhost == f"127.0.0.1:{upstream.port}"


def test_flags_nr_uc_urx_ut(remora, ports, upstream, tmp_path):
    log = tmp_path / "flags.log"
    routes = [
        route({"prefix": "/retry"}, "backend",
              retry_policy={"retry_on": "reset", "num_retries": 1,
                            "retry_back_off": {"base_interval": "0.001s"}}),
        route({"prefix": "/slow"}, "backend", timeout="0.2s"),
        route({"prefix": "/"}, "backend"),
    ]
    rc = route_config([virtual_host(routes, domains=["test.local"])])
    admin, lport = ports.get(), ports.get()
    listener = http_listener(lport, rc=rc, access_log=[file_log(log, FLAGS_FMT)])
    remora(bootstrap(admin, [listener], [static_cluster("backend", upstream.port)]))

    assert get(lport, "/ok")[0] == 200
    c = http.client.HTTPConnection("127.0.0.1", lport, timeout=10)
    c.request("GET", "/nowhere", headers={"host": "other.host"})
    assert c.getresponse().status == 404
    c.close()
    assert get(lport, "/x?action=reset")[0] == 503
    assert get(lport, "/retry?action=reset")[0] == 503
    assert get(lport, "/slow?sleep_ms=3000")[0] == 504
    lines = read_lines(log, 5)
    by_path = {ln.split(" ", 2)[2]: ln.split(" ")[:2] for ln in lines}
    assert by_path["/ok"] == ["200", "-"]
    assert by_path["/nowhere"] == ["404", "NR"]
    assert by_path["/x?action=reset"] == ["503", "UC"]
    assert by_path["/retry?action=reset"] == ["503", "UC,URX"]
    assert by_path["/slow?sleep_ms=3000"] == ["504", "UT"]
    assert upstream.request_count() >= 5


def test_flags_uf_uh(remora, ports, upstream, tmp_path):
    log = tmp_path / "uf.log"
    dead = ports.get()   # nothing listens there
    clusters = [static_cluster("dead", dead),
                {"name": "empty", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "empty", "endpoints": []}}]
    routes = [route({"prefix": "/dead"}, "dead"), route({"prefix": "/empty"}, "empty")]
    r, lport = start_http(remora, ports, upstream, [file_log(
        log, "%RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %UPSTREAM_CLUSTER% "
             "%UPSTREAM_REQUEST_ATTEMPT_COUNT%\n")], routes=routes, clusters=clusters)
    assert get(lport, "/dead")[0] == 503
    assert get(lport, "/empty")[0] == 503
    # connections may land on different workers: lines of different
    # connections are not ordered
    lines = sorted(read_lines(log, 2))
    assert lines[0] == "UF connection failure dead 1", lines   # with the failure reason
    assert lines[1] == "UH - empty 0", lines


def test_flags_rl_and_fi(remora, ports, upstream, tmp_path):
    log = tmp_path / "rl.log"
    lrl = {"name": "envoy.filters.http.local_ratelimit",
           "typed_config": {"@type": LRL_TYPE, "stat_prefix": "rl",
                            "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1,
                                             "fill_interval": "3600s"},
                            "filter_enabled": {"default_value": {"numerator": 100}},
                            "filter_enforced": {"default_value": {"numerator": 100}}}}
    fault = {"name": "envoy.filters.http.fault",
             "typed_config": {"@type": FAULT_TYPE,
                              "abort": {"header_abort": {},
                                        "percentage": {"numerator": 100}}}}
    r, lport = start_http(remora, ports, upstream, [file_log(log, FLAGS_FMT)],
                          filters=[fault, lrl, ROUTER_FILTER])
    assert get(lport, "/first")[0] == 200
    assert get(lport, "/second")[0] == 429
    assert get(lport, "/abort", {"x-envoy-fault-abort-request": "418"})[0] == 418
    lines = sorted(read_lines(log, 3))
    assert lines == ["200 - /first", "418 FI /abort", "429 RL /second"], lines


def test_downstream_close_dc(remora, ports, upstream, tmp_path):
    log = tmp_path / "dc.log"
    r, lport = start_http(remora, ports, upstream, [file_log(log, FLAGS_FMT)])
    s = socket.create_connection(("127.0.0.1", lport), timeout=5)
    s.sendall(b"GET /hang?sleep_ms=2000 HTTP/1.1\r\nhost: test.local\r\n\r\n")
    wait_until(lambda: upstream.request_count() >= 1, 5, what="the request upstream")
    # RST (a FIN after a complete HTTP/1 request is a half-close: still answered)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    (line,) = read_lines(log, 1)
    assert line.split(" ")[1] == "DC", line


# ---------------------------------------------------------------------------
# JSON, filters, operators


def test_json_format_typed_values(remora, ports, upstream, tmp_path):
    log = tmp_path / "json.log"
    jf = {"code": "%RESPONSE_CODE%", "dur": "%DURATION%", "rx": "%BYTES_RECEIVED%",
          "tx": "%BYTES_SENT%", "method": "%REQ(:METHOD)%", "missing": "%REQ(X-NOPE)%",
          "line": "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%", "flags": "%RESPONSE_FLAGS%",
          "nested": {"host": "%UPSTREAM_HOST%", "cluster": "%UPSTREAM_CLUSTER%"},
          "remote": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
          "conn": "%CONNECTION_ID%", "lit": 7, "details": "%RESPONSE_CODE_DETAILS%",
          "start": "%START_TIME(%s.%3f)%", "route": "%ROUTE_NAME%", "host": "%HOSTNAME%",
          "quote": "%REQ(X-Q)%"}
    r, lport = start_http(remora, ports, upstream, [file_log(log, json_format=jf)],
                          routes=[dict(route({"prefix": "/"}, "backend"), name="r1")])
    assert get(lport, "/j?status=201", {"x-q": 'a"b\\c'})[0] == 201
    (line,) = read_lines(log, 1)
    d = json.loads(line)
    assert d["code"] == 201 and isinstance(d["dur"], int) and d["rx"] == 0 and d["tx"] > 0
    assert d["method"] == "GET" and d["missing"] is None
    assert d["line"] == "GET /j?status=201 HTTP/1.1" and d["flags"] == "-"
    assert d["nested"] == {"host": f"127.0.0.1:{upstream.port}", "cluster": "backend"}
    assert d["remote"] == "127.0.0.1" and d["attempts"] == 1 and d["conn"] >= 1
    assert d["lit"] == 7 and d["details"] == "via_upstream" and d["route"] == "r1"
    assert d["quote"] == 'a"b\\c' and d["host"] == socket.gethostname()
    assert abs(float(d["start"]) - time.time()) < 30


def test_json_omit_empty_values(remora, ports, upstream, tmp_path):
    log = tmp_path / "omit.log"
    r, lport = start_http(remora, ports, upstream, [file_log(
        log, json_format={"ua": "%REQ(USER-AGENT)%", "nope": "%REQ(X-NOPE)%", "code": "%RESPONSE_CODE%"},
        omit_empty_values=True)])
    assert get(lport, "/", {"user-agent": "u1"})[0] == 200
    (line,) = read_lines(log, 1)
    assert json.loads(line) == {"ua": "u1", "code": 200}


def test_filters_status_and_flags(remora, ports, upstream, tmp_path):
    errors, slow = tmp_path / "errors.log", tmp_path / "either.log"
    status_ge_500 = {"status_code_filter": {"comparison": {
        "op": "GE", "value": {"default_value": 500, "runtime_key": "k"}}}}
    nr_or_hdr = {"or_filter": {"filters": [
        {"response_flag_filter": {"flags": ["NR"]}},
        {"header_filter": {"header": {"name": "x-log", "exact_match": "yes"}}}]}}
    rc = route_config([virtual_host([route({"prefix": "/"}, "backend")], domains=["test.local"])])
    admin, lport = ports.get(), ports.get()
    listener = http_listener(lport, rc=rc, access_log=[
        file_log(errors, FLAGS_FMT, filt={"and_filter": {"filters": [
            status_ge_500, {"not_health_check_filter": {}}]}}),
        file_log(slow, FLAGS_FMT, filt=nr_or_hdr)])
    remora(bootstrap(admin, [listener], [static_cluster("backend", upstream.port)]))
    assert get(lport, "/a")[0] == 200
    assert get(lport, "/b?status=503")[0] == 503
    assert get(lport, "/c", {"x-log": "yes"})[0] == 200
    c = http.client.HTTPConnection("127.0.0.1", lport, timeout=10)
    c.request("GET", "/d", headers={"host": "nope"})
    assert c.getresponse().status == 404
    c.close()
    assert get(lport, "/e?status=502")[0] == 502
    assert sorted(read_lines(errors, 2)) == ["502 - /e?status=502", "503 - /b?status=503"]
    assert sorted(read_lines(slow, 2)) == ["200 - /c", "404 NR /d"]


def validate_error(tmp_path, cfg):
    """Run `remora --mode validate` on cfg; return (exit status, stderr)."""
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
    p = subprocess.run([remora_bin(), "--mode", "validate", "-c", str(path)], capture_output=True,
                       timeout=60, env=env, stdin=subprocess.DEVNULL)
    out = p.stderr.decode("utf-8", "replace")
    for m in SANITIZER_MARKERS:
        assert m not in out, out
    return p.returncode, out


def test_unknown_operator_is_config_error(ports, upstream, tmp_path):
    listener = http_listener(ports.get(), [route({"prefix": "/"}, "backend")], access_log=[
        file_log(tmp_path / "x.log", "%NOT_AN_OPERATOR% %REQ(:PATH)%\n")])
    rc, out = validate_error(tmp_path, bootstrap(ports.get(), [listener],
                                                 [static_cluster("backend", upstream.port)]))
    assert rc != 0
    assert "access_log[0].typed_config.log_format.text_format_source.inline_string" in out, out
    assert "NOT_AN_OPERATOR" in out, out


def test_unsupported_filter_rejected_with_path(ports, upstream, tmp_path):
    al = file_log(tmp_path / "x.log", filt={"runtime_filter": {"runtime_key": "x"}})
    listener = http_listener(ports.get(), [route({"prefix": "/"}, "backend")], access_log=[al])
    rc, out = validate_error(tmp_path, bootstrap(ports.get(), [listener],
                                                 [static_cluster("backend", upstream.port)]))
    assert rc != 0 and "access_log[0].filter.runtime_filter" in out, out


# ---------------------------------------------------------------------------
# rotation, stdout, tcp_proxy


def test_reopen_logs_after_mv(remora, ports, upstream, tmp_path):
    log, rotated = tmp_path / "rot.log", tmp_path / "rot.log.1"
    r, lport = start_http(remora, ports, upstream, [file_log(log, FLAGS_FMT)])
    assert get(lport, "/one")[0] == 200
    assert read_lines(log, 1) == ["200 - /one"]
    os.rename(log, rotated)
    assert get(lport, "/two")[0] == 200
    assert read_lines(rotated, 2) == ["200 - /one", "200 - /two"]   # still the old inode
    status, _, _ = r.admin_post("/reopen_logs")
    assert status == 200
    wait_until(lambda: os.path.exists(log), 5, what="the reopened log file")
    assert get(lport, "/three")[0] == 200
    assert read_lines(log, 1) == ["200 - /three"]
    time.sleep(0.3)
    assert open(rotated).read().splitlines() == ["200 - /one", "200 - /two"]
    st = r.stats()
    assert st["access_log_file.write_buffered"] == 3
    assert st["access_log_file.write_dropped"] == 0


def test_stdout_logger(remora, ports, upstream, tmp_path):
    al = {"name": "envoy.access_loggers.stdout",
          "typed_config": {"@type": STDOUT_AL, "log_format": {
              "text_format_source": {"inline_string": "STDOUT-AL %RESPONSE_CODE% %REQ(:PATH)%\n"}}}}
    r, lport = start_http(remora, ports, upstream, [al])
    assert get(lport, "/via-stdout")[0] == 200
    wait_until(lambda: "STDOUT-AL 200 /via-stdout" in r.output(), 10, what="stdout log line")


def test_tcp_proxy_access_log(remora, ports, echo_server, tmp_path):
    log = tmp_path / "tcp.log"
    admin, lport = ports.get(), ports.get()
    listener = tcp_proxy_listener(lport, "echo", access_log=[file_log(
        log, "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %PROTOCOL% "
             "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n")])
    dead_l = tcp_proxy_listener(ports.get(), "dead", name="dead", stat_prefix="dead",
                                access_log=[file_log(log, "%RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n")])
    remora(bootstrap(admin, [listener, dead_l],
                     [static_cluster("echo", echo_server.port), static_cluster("dead", ports.get())]))
    s = socket.create_connection(("127.0.0.1", lport), timeout=5)
    s.sendall(b"x" * 1000)
    got = b""
    while len(got) < 1000:
        got += s.recv(4096)
    s.shutdown(socket.SHUT_WR)
    s.recv(10)
    s.close()
    (line,) = read_lines(log, 1)
    assert line == f"- 1000 1000 127.0.0.1:{echo_server.port} - 127.0.0.1", line
    dport = dead_l["address"]["socket_address"]["port_value"]
    d = socket.create_connection(("127.0.0.1", dport), timeout=5)
    d.settimeout(5)
    assert d.recv(10) == b""
    d.close()
    lines = read_lines(log, 2)
    assert lines[1] == "UF dead", lines


# ---------------------------------------------------------------------------
# request ids


def is_uuid4(v):
    try:
        return uuid.UUID(v).version == 4 and str(uuid.UUID(v)) == v
    except (ValueError, TypeError):
        return False


def echoed_rid(lport, headers=None):
    status, hdrs, body = get(lport, "/", headers)
    assert status == 200
    return json.loads(body)["headers"].get("x-request-id"), hdrs.get("x-request-id")


def test_request_id_generated_and_preserved(remora, ports, upstream, tmp_path):
    r, lport = start_http(remora, ports, upstream, [], always_set_request_id_in_response=True)
    up, down = echoed_rid(lport)
    assert is_uuid4(up) and down == up
    ids = {echoed_rid(lport)[0] for _ in range(20)}
    assert len(ids) == 20
    up, down = echoed_rid(lport, {"x-request-id": "keep-me"})
    assert up == "keep-me" and down == "keep-me"   # not an edge request: preserved


def test_request_id_edge_rules(remora, ports, upstream, tmp_path):
    # 127.0.0.1 is external here: internal_address_config lists only 10/8
    internal = {"cidr_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]}
    _, edge = start_http(remora, ports, upstream, [], use_remote_address=True,
                         internal_address_config=internal)
    up, _ = echoed_rid(edge, {"x-request-id": "external-id"})
    assert is_uuid4(up)
    _, keep = start_http(remora, ports, upstream, [], use_remote_address=True,
                         internal_address_config=internal, preserve_external_request_id=True)
    assert echoed_rid(keep, {"x-request-id": "external-id"})[0] == "external-id"
    # default internal ranges: loopback is internal, the id is kept
    _, lo = start_http(remora, ports, upstream, [], use_remote_address=True)
    assert echoed_rid(lo, {"x-request-id": "external-id"})[0] == "external-id"
    _, off = start_http(remora, ports, upstream, [], generate_request_id=False)
    assert echoed_rid(off)[0] is None


def test_http2_stream_logged(remora, ports, upstream, tmp_path):
    log = tmp_path / "h2.log"
    r, lport = start_http(remora, ports, upstream, [file_log(
        log, "%PROTOCOL% %RESPONSE_CODE% %REQ(:PATH)% %BYTES_SENT%\n")])
    res = curl(f"http://127.0.0.1:{lport}/h2?bytes=300", "--http2-prior-knowledge")
    assert res.status == 200 and len(res.body) == 300
    assert read_lines(log, 1) == ["HTTP/2 200 /h2?bytes=300 300"]


def test_stalled_fifo_never_blocks_main_thread(remora, ports, upstream, tmp_path):
    """Access log to a FIFO whose reader stops reading, beside a regular
    file: requests keep being served, FIFO lines beyond the buffers are
    dropped and counted, the other file keeps getting its lines and can be
    rotated (POST /reopen_logs), the admin endpoint keeps answering, and
    SIGTERM ends the process promptly with the regular file complete (no
    thread waits on the pipe without bound)."""
    fifo, log, rotated = tmp_path / "al.fifo", tmp_path / "al.log", tmp_path / "al.log.1"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # the reader: opens, reads once, stalls
    try:
        fmt = "%RESPONSE_CODE% %REQ(:PATH)% %REQ(X-PAD)%\n"
        r, lport = start_http(remora, ports, upstream,
                              [file_log(fifo, fmt), file_log(log, FLAGS_FMT)])
        assert get(lport, "/first")[0] == 200

        def fifo_line():
            try:
                return os.read(rfd, 65536)
            except BlockingIOError:
                return None
        assert wait_until(fifo_line, 10, what="the first line in the FIFO").startswith(
            b"200 /first ")
        # the reader stops; 8 KiB lines fill the pipe (64 KiB), then the
        # ring of the worker serving this keep-alive connection (1 MiB)
        pad = "p" * 8192
        c = http.client.HTTPConnection("127.0.0.1", lport, timeout=10)
        for i in range(200):
            c.request("GET", f"/fill/{i}", headers={"host": "test.local", "x-pad": pad})
            resp = c.getresponse()
            resp.read()
            assert resp.status == 200
        c.close()
        r.wait_stat("access_log_file.write_dropped", lambda v: v > 0, timeout=10)
        # the regular file is not held up by the stalled pipe
        assert get(lport, "/marker")[0] == 200
        lines = read_lines(log, 202, timeout=5)
        assert lines[0] == "200 - /first" and "200 - /marker" in lines, lines[-3:]
        # rotation of the regular file still works; the admin answers at once
        os.rename(log, rotated)
        t0 = time.monotonic()
        st, _, _ = r.admin_post("/reopen_logs", timeout=5)
        assert st == 200
        st, _, _ = r.admin_get("/stats", timeout=5)
        assert st == 200
        assert time.monotonic() - t0 < 5
        wait_until(lambda: os.path.exists(log), 5, what="the reopened log file")
        assert get(lport, "/after-reopen")[0] == 200
        assert read_lines(log, 1, timeout=5) == ["200 - /after-reopen"]
        assert get(lport, "/last")[0] == 200
        t0 = time.monotonic()
        r.stop(timeout=10)   # raises if it does not exit within 10 s
        assert time.monotonic() - t0 < 10
        assert open(log).read().splitlines() == ["200 - /after-reopen", "200 - /last"]
    finally:
        os.close(rfd)


def test_fifo_without_reader_does_not_block_startup(remora, ports, upstream, tmp_path):
    """A FIFO nobody reads yet: the proxy starts anyway (opening it never
    waits for a reader), keeps the lines in memory, and writes them once a
    reader opens the FIFO."""
    fifo = tmp_path / "late.fifo"
    os.mkfifo(fifo)
    r, lport = start_http(remora, ports, upstream, [file_log(fifo, FLAGS_FMT)])
    assert "is a FIFO without a reader" in r.stderr_text()
    assert get(lport, "/early")[0] == 200
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = b""

        def got():
            nonlocal buf
            try:
                buf += os.read(rfd, 65536)
            except BlockingIOError:
                pass
            return b"/late\n" in buf
        assert get(lport, "/late")[0] == 200
        wait_until(got, 10, what="both lines through the FIFO")
        # two connections, maybe two workers: lines of different workers
        # are not ordered
        assert sorted(buf.decode().splitlines()) == ["200 - /early", "200 - /late"]
        r.stop(timeout=10)
    finally:
        os.close(rfd)
