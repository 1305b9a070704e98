#!/usr/bin/python3
"""Remora vs HAProxy vs nginx, side by side (`make bench`).

One upstream nginx (CPU 1, one worker) answers 200 "hello".  Each proxy under
test runs pinned to CPU 0 with one worker and proxies to that upstream; wrk
(CPU 1, 1 thread, 50 keep-alive connections) loads one proxy at a time.
"Remora+filters" is the same binary with fault, local rate limit, retries,
circuit breakers and outlier detection configured but never triggering
(remora-filters.yaml).  "Remora+obs" is plain Remora plus observability:
Zipkin tracing at 100 % sampling to a sink the harness runs (answers 202) and
a JSON access log to a file (config made by obs_config()).  Rounds alternate between the proxies; the table shows
medians over rounds.  See docs/benchmarks.md for the method.

Environment:
  BENCH_SECONDS    measured seconds per round (default 10)
  BENCH_ROUNDS     rounds per proxy (default 3)
  BENCH_WARMUP     warm-up seconds before each round (default 2)
  BENCH_PROXIES    comma list out of remora,remora-filters,remora-obs,haproxy,nginx (default all)
  BENCH_H1         1 (default): the HTTP/1.1 wrk rounds; 0 skips them (with BENCH_TLS=0:
                   the h2c leg only)
  BENCH_H2         1 (default): after the HTTP/1.1 rounds, an h2c leg per proxy with
                   h2load (10 connections x 10 streams) against Remora's listener
                   (codec_type AUTO), HAProxy's `proto h2` bind and nginx's `http2`
                   listen, same upstream; 0 skips it
  BENCH_TLS        1 (default): a TLS leg for Remora and HAProxy (TLS 1.3, ECDSA P-256
                   certificate made with the openssl CLI, X25519): wrk over HTTPS keep-alive,
                   then wrk with "connection: close" (one full handshake per request,
                   session resumption off on both: handshakes/s); 0 skips it
  BENCH_OBS        what Remora+obs enables: "trace,log" (default), "trace" or "log"
  BENCH_PORT_BASE  first loopback port (default 28080, or the first free one from 29080
                   on when those ports are taken; uses base..base+14)
  BENCH_DOC        markdown file to update (default docs/benchmarks.md; "-" = none)
  REMORA_BIN       proxy binary (default build/remora)
"""

import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PROXY_CPU = "0"
LOAD_CPU = "1"
CONNECTIONS = 50
DEFAULT_BASE = 28080
# offset of each port from the base; the config files carry the default ports
PORT_OFFSETS = {"upstream": 0, "haproxy": 1, "nginx": 2, "remora": 3, "remora-filters": 4,
                "haproxy-h2": 5, "nginx-h2": 6, "remora-tls": 7, "haproxy-tls": 8,
                "admin": 10, "admin-filters": 11, "admin-tls": 12,
                "remora-obs": 9, "admin-obs": 13, "obs-sink": 14}
BEGIN_MARK = "<!-- bench:begin -->"
END_MARK = "<!-- bench:end -->"
NAMES = {"remora": "Remora", "remora-filters": "Remora+filters", "remora-obs": "Remora+obs",
         "haproxy": "HAProxy", "nginx": "nginx"}
REMORA_KEYS = ("remora", "remora-filters", "remora-obs")
CONFIGS = {"remora": "remora.yaml", "remora-filters": "remora-filters.yaml"}
ADMIN = {"remora": "admin", "remora-filters": "admin-filters", "remora-obs": "admin-obs"}
REMORA_STATS = ("http.bench.downstream_cx_total", "http.bench.downstream_rq_total",
                "cluster.upstream.upstream_cx_total", "cluster.upstream.upstream_rq_total")
# Remora+filters: the rate limit filter must have checked and passed every
# request, and none of the resilience features may have triggered.
FILTER_CHECKED = "bench_rl.http_local_rate_limit.ok"
FILTER_IDLE = ("bench_rl.http_local_rate_limit.rate_limited", "http.bench.fault.delays_injected",
               "http.bench.fault.aborts_injected", "http.bench.fault.faults_overflow",
               "cluster.upstream.upstream_rq_retry", "cluster.upstream.upstream_rq_pending_overflow",
               "cluster.upstream.outlier_detection.ejections_total")
FILTER_STATS = (FILTER_CHECKED,) + FILTER_IDLE
# CPU-per-request target of Remora+filters against plain Remora
FILTER_TARGET = 1.10
UPSTREAM_STATUS = "/__bench_upstream_status"


def env_int(name, default):
    v = os.environ.get(name, "")
    try:
        return int(v) if v else default
    except ValueError:
        sys.exit("bench: %s must be an integer, got %r" % (name, v))


SECONDS = env_int("BENCH_SECONDS", 10)
ROUNDS = env_int("BENCH_ROUNDS", 3)
WARMUP = env_int("BENCH_WARMUP", 2)
BASE = env_int("BENCH_PORT_BASE", DEFAULT_BASE)
RUN_H1 = os.environ.get("BENCH_H1", "1") != "0"


def ports_for(base):
    return {k: base + off for k, off in PORT_OFFSETS.items()}


PORTS = ports_for(BASE)
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes

class Server:
    """A process started in its own session (so its forks share its process
    group), pinned with taskset, output to a log file in the temp dir."""

    def __init__(self, name, cmd, cpu, tmp, cwd=None):
        self.name = name
        self.log = os.path.join(tmp, name + ".log")
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(["taskset", "-c", cpu] + cmd, cwd=cwd or tmp, stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the command: same pid

    def alive(self):
        return self.proc.poll() is None

    def tail(self, n=3):
        try:
            with open(self.log, errors="replace") as f:
                lines = [l.strip() for l in f.read().splitlines() if l.strip()]
        except OSError:
            return ""
        return " / ".join(lines[-n:])

    def stop(self):
        """SIGTERM the process group, SIGKILL what is left after 3 s."""
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            if not group_alive(self.pid) and not self.alive():
                break
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            end = time.time() + wait
            while time.time() < end:
                self.proc.poll()
                if not group_alive(self.pid):
                    break
                time.sleep(0.05)
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


SERVERS = []


def group_alive(pgid):
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st and st["pgrp"] == pgid and st["state"] != "Z":
                return True
    return False


def cleanup():
    while SERVERS:
        SERVERS.pop().stop()


def on_signal(signum, frame):
    raise SystemExit("bench: interrupted by signal %d" % signum)


def read_stat(pid):
    """utime/stime (ticks), ppid, pgrp and state of one process (all threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime/stime are fields 14/15
    return {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2]),
            "utime": int(rest[11]), "stime": int(rest[12])}


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st:
                children.setdefault(st["ppid"], []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pid):
    out = {}
    for p in tree(pid):
        st = read_stat(p)
        if st:
            out[p] = st["utime"] + st["stime"]
    return out


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def listening(port):
    want = ":%04X" % port
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def wait_listening(server, ports, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if not server.alive():
            raise BenchError("exited with status %s: %s" % (server.proc.returncode, server.tail()))
        if all(listening(p) for p in ports):
            return
        time.sleep(0.05)
    raise BenchError("not listening on %s after %.0f s: %s" % (ports, timeout, server.tail()))


def http_get(port, path="/", timeout=3.0):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.status, r.read()


# ---------------------------------------------------------------- configs

def render(name, tmp):
    """Config file from tests/bench with the default ports replaced by this
    run's ports.  Returns the path of the copy (or of the file itself when
    nothing changes and the file is usable in place)."""
    src = os.path.join(HERE, name)
    with open(src) as f:
        text = f.read()
    if BASE == DEFAULT_BASE and name in CONFIGS.values():
        return src
    for key, off in PORT_OFFSETS.items():
        text = re.sub(r"\b%d\b" % (DEFAULT_BASE + off), str(PORTS[key]), text)
    dst = os.path.join(tmp, name)
    with open(dst, "w") as f:
        f.write(text)
    return dst


def start_upstream(tmp):
    conf = render("nginx-upstream.conf", tmp)
    s = Server("upstream-nginx", ["/usr/sbin/nginx", "-p", tmp + "/", "-e", "stderr", "-c", conf], LOAD_CPU, tmp)
    SERVERS.append(s)
    wait_listening(s, [PORTS["upstream"]])
    status, body = http_get(PORTS["upstream"])
    if status != 200 or body != b"hello":
        raise BenchError("upstream answered %s %r" % (status, body[:60]))
    return s


def proxy_command(key, tmp):
    if key == "haproxy":
        return ["/usr/sbin/haproxy", "-db", "-f", render("haproxy.cfg", tmp)], [PORTS["haproxy"]]
    if key == "nginx":
        return (["/usr/sbin/nginx", "-p", tmp + "/", "-e", "stderr", "-c", render("nginx-proxy.conf", tmp)],
                [PORTS["nginx"]])
    binary = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
    if not os.access(binary, os.X_OK):
        raise BenchError("not run: %s not built" % os.path.relpath(binary, ROOT))
    if key == "remora-obs":
        return [binary, "-c", obs_config(tmp), "--concurrency", "1"], [PORTS[key], PORTS[ADMIN[key]]]
    conf = render(CONFIGS[key], tmp)
    if conf.startswith(ROOT + os.sep):
        conf = os.path.relpath(conf, ROOT)  # as documented: -c tests/bench/remora.yaml
    return [binary, "-c", conf, "--concurrency", "1"], [PORTS[key], PORTS[ADMIN[key]]]


# ---------------------------------------------------------------- wrk

UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_wrk(out):
    r = {"errors": []}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    r["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % pct, out, re.M)
        r["p" + pct] = float(m.group(1)) * UNIT_US[m.group(2)] if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        names = ("connect", "read", "write", "timeout")
        errs = ["%s %s" % (n, v) for n, v in zip(names, m.groups()) if v != "0"]
        if errs:
            r["errors"].append("socket errors: " + ", ".join(errs))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m and m.group(1) != "0":
        r["errors"].append("%s non-2xx responses" % m.group(1))
    if r["requests"] == 0 or r["rps"] is None or r["p50"] is None or r["p99"] is None:
        r["errors"].append("wrk produced no result: " + " / ".join(out.strip().splitlines()[-2:]))
    return r


def run_wrk(port, seconds, scheme="http", extra=()):
    cmd = ["taskset", "-c", LOAD_CPU, "/usr/bin/wrk", "-t1", "-c%d" % CONNECTIONS, "-d%ds" % seconds,
           "--latency", *extra, "%s://127.0.0.1:%d/" % (scheme, port)]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 30)
    out = p.stdout.decode(errors="replace")
    r = parse_wrk(out)
    if p.returncode != 0:
        r["errors"].append("wrk exited with status %d" % p.returncode)
    return r


def upstream_counters():
    """(accepted connections, requests) of the upstream nginx, or None."""
    try:
        status, body = http_get(PORTS["upstream"], UPSTREAM_STATUS)
    except OSError:
        return None
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", body.decode())
    return (int(m.group(1)), int(m.group(3))) if status == 200 and m else None


def remora_stats(key):
    try:
        status, body = http_get(PORTS[ADMIN[key]], "/stats")
    except OSError as e:
        return {"error": "admin /stats failed: %s" % e}
    want = REMORA_STATS + (FILTER_STATS if key == "remora-filters" else ()) + \
        (OBS_STATS if key == "remora-obs" else ())
    vals = {}
    for line in body.decode(errors="replace").splitlines():
        name, sep, v = line.partition(": ")
        if sep and name.strip() in want:
            vals[name.strip()] = v.strip()
    return vals


def check_filters_idle(n):
    """Remora+filters after a round: every request went through the rate
    limit filter (took a token), and nothing was limited, faulted, retried,
    overflowed or ejected (so the leg measures configured-but-idle filters)."""
    st = remora_stats("remora-filters")
    if "error" in st:
        raise BenchError("round %d: %s" % (n, st["error"]))
    missing = [k for k in (FILTER_CHECKED, "http.bench.downstream_rq_total") + FILTER_IDLE if k not in st]
    if missing:
        raise BenchError("round %d: stats missing from /stats: %s" % (n, ", ".join(missing)))
    fired = ["%s %s" % (k, st[k]) for k in FILTER_IDLE if st[k] != "0"]
    if fired:
        raise BenchError("round %d: filters triggered: %s" % (n, ", ".join(fired)))
    if st[FILTER_CHECKED] != st["http.bench.downstream_rq_total"]:
        raise BenchError("round %d: %s %s but http.bench.downstream_rq_total %s" % (
            n, FILTER_CHECKED, st[FILTER_CHECKED], st["http.bench.downstream_rq_total"]))


# ---------------------------------------------------------------- Remora+obs

# Remora+obs: tracing at 100 % sampling (Zipkin HTTP_JSON to the sink below)
# and a JSON access log to a file, against plain Remora.
OBS_TARGET = 1.25
OBS_STATS = ("tracing.zipkin.spans_sent", "tracing.zipkin.spans_dropped",
             "tracing.zipkin.reports_sent", "tracing.zipkin.reports_failed",
             "access_log_file.write_buffered", "access_log_file.write_dropped")
OBS_SINK = {"server": None, "spans_bytes": 0, "reports": 0}


def start_obs_sink():
    """The trace collector of the Remora+obs leg: an HTTP/1.1 server on its
    own thread that reads each report and answers 202, as Zipkin does."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            OBS_SINK["spans_bytes"] += len(self.rfile.read(n))
            OBS_SINK["reports"] += 1
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORTS["obs-sink"]), Sink)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True, name="obs-sink").start()
    OBS_SINK["server"] = srv


def obs_parts():
    """BENCH_OBS: what Remora+obs turns on (default "trace,log"; "trace" or
    "log" alone to see what each costs)."""
    return [p.strip() for p in os.environ.get("BENCH_OBS", "trace,log").split(",") if p.strip()]


def obs_config(tmp):
    """remora.yaml plus tracing and a JSON access log, written to tmp."""
    import yaml
    with open(render(CONFIGS["remora"], tmp)) as f:
        cfg = yaml.safe_load(f)
    cfg["node"] = {"id": "bench-obs", "cluster": "bench"}
    cfg["admin"]["address"]["socket_address"]["port_value"] = PORTS["admin-obs"]
    lst = cfg["static_resources"]["listeners"][0]
    lst["address"]["socket_address"]["port_value"] = PORTS["remora-obs"]
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    parts = obs_parts()
    if "trace" in parts:
        hcm["tracing"] = {"random_sampling": {"value": 100}, "provider": {
            "name": "envoy.tracers.zipkin",
            "typed_config": {"@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                             "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
                             "collector_endpoint_version": "HTTP_JSON"}}}
    if "log" in parts:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": os.path.join(tmp, "obs-access.log"),
            "log_format": {"json_format": {
                "start": "%START_TIME%", "method": "%REQ(:METHOD)%",
                "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "protocol": "%PROTOCOL%",
                "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "rx": "%BYTES_RECEIVED%",
                "tx": "%BYTES_SENT%", "duration": "%DURATION%", "upstream": "%UPSTREAM_HOST%",
                "request_id": "%REQ(X-REQUEST-ID)%", "trace": "%REQ(X-B3-TRACEID)%"}}}}]
    cfg["static_resources"]["clusters"].append({
        "name": "zipkin", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "zipkin", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": PORTS["obs-sink"]}}}}]}]}})
    path = os.path.join(tmp, "remora-obs.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def check_obs(n, r):
    """After a round: spans were exported (or counted as dropped) and the
    access log was written, so the leg measured real work."""
    time.sleep(1.5)   # one flush interval: the round's last spans leave
    st = remora_stats("remora-obs")
    if "error" in st:
        raise BenchError("round %d: %s" % (n, st["error"]))
    sent, dropped = int(st.get("tracing.zipkin.spans_sent", 0)), int(st.get("tracing.zipkin.spans_dropped", 0))
    logged = int(st.get("access_log_file.write_buffered", 0))
    total = int(st.get("http.bench.downstream_rq_total", 0))
    parts = obs_parts()
    if "trace" in parts and (sent + dropped < total - 1000 or
                             int(st.get("tracing.zipkin.reports_sent", 0)) < 1):
        raise BenchError("round %d: %d requests but %d spans sent, %d dropped, %s reports accepted"
                         % (n, total, sent, dropped, st.get("tracing.zipkin.reports_sent")))
    if "log" in parts and logged + int(st.get("access_log_file.write_dropped", 0)) < total:
        raise BenchError("round %d: %d requests but %d lines logged" % (n, total, logged))
    r["obs_dropped_share"] = dropped / total if total else 0.0


def obs_ratio_lines(ok, present):
    if "remora" not in present:
        return []
    if "remora" not in ok or "remora-obs" not in ok:
        return ["- Remora+obs / Remora: no ratio (a leg did not produce numbers)"]
    o, r = ok["remora-obs"], ok["remora"]
    pairs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(o.rounds, r.rounds)]
    paired = statistics.median(pairs)
    drop = max(x.get("obs_dropped_share", 0.0) for x in o.rounds)
    return ["- Remora+obs / Remora (tracing 100 %% + JSON access log): req/s ratio %s, paired "
            "CPU-per-request ratio %.2f (per round %s; target <= %.2f: %s); spans dropped: "
            "at most %.1f %% of requests in a round; sink got %d reports, %.1f MB" % (
                fmt_ratio(median(o, "rps"), median(r, "rps")), paired,
                ", ".join("%.2f" % x for x in pairs), OBS_TARGET,
                "met" if paired <= OBS_TARGET else "NOT met", 100 * drop,
                OBS_SINK["reports"], OBS_SINK["spans_bytes"] / 1e6)]


# ---------------------------------------------------------------- rounds

class Leg:
    def __init__(self, key):
        self.key = key
        self.server = None
        self.status = None  # None = fine, else the reason shown in the table
        self.idle_rss = None
        self.rounds = []
        self.stats = None
        self.h2_rounds = []
        self.h2_status = None


def start_leg(leg, tmp):
    try:
        cmd, ports = proxy_command(leg.key, tmp)
        for p in ports:
            if listening(p):
                raise BenchError("failed to start: port %d already in use" % p)
        # Remora runs from the repository root: -c tests/bench/remora.yaml
        leg.server = Server(leg.key, cmd, PROXY_CPU, tmp, ROOT if leg.key in REMORA_KEYS else tmp)
        SERVERS.append(leg.server)
        try:
            wait_listening(leg.server, ports)
        except BenchError as e:
            raise BenchError("failed to start: %s" % e)
        time.sleep(0.3)
        leg.idle_rss = rss_kib(leg.server.pid)
        try:
            status, body = http_get(ports[0])
        except OSError as e:
            raise BenchError("first request failed: %s" % e)
        if status != 200 or body != b"hello":
            raise BenchError("first request answered %s %r" % (status, body[:60]))
    except BenchError as e:
        leg.status = str(e)
        print("bench: %s: %s" % (NAMES[leg.key], e), flush=True)
        if leg.server:
            leg.server.stop()  # keep CPU 0 quiet for the others


def run_round(leg, n, upstream):
    port = PORTS[leg.key]
    srv = leg.server
    if not upstream.alive() or not group_alive(upstream.pid):
        raise BenchError("round %d: the upstream nginx is gone (status %s)" % (n, upstream.proc.returncode))
    warm = run_wrk(port, WARMUP)
    if warm["errors"]:
        raise BenchError("round %d warm-up: %s" % (n, "; ".join(warm["errors"])))
    if not srv.alive():
        raise BenchError("round %d: exited (status %s) during warm-up: %s" % (n, srv.proc.returncode, srv.tail()))
    up0 = upstream_counters()
    t0 = cpu_ticks(srv.pid)
    r = run_wrk(port, SECONDS)
    t1 = cpu_ticks(srv.pid)
    up1 = upstream_counters()
    if not srv.alive():
        raise BenchError("round %d: exited (status %s) during the run: %s" % (n, srv.proc.returncode, srv.tail()))
    if r["errors"]:
        raise BenchError("round %d: %s" % (n, "; ".join(r["errors"])))
    gone = [p for p in t0 if p not in t1]
    ticks = sum(v - t0.get(p, 0) for p, v in t1.items())
    r["cpu_us"] = ticks * 1e6 / CLK_TCK / r["requests"]
    r["cpu_note"] = "%d process(es) exited mid-run" % len(gone) if gone else ""
    r["rss"] = rss_kib(srv.pid)
    if up0 and up1:
        # minus the status request itself (one connection, one request)
        r["up_conns"] = up1[0] - up0[0] - 1
        r["up_reqs"] = up1[1] - up0[1] - 1
        if r["up_reqs"] < r["requests"]:
            raise BenchError("round %d: wrk counted %d responses but the upstream saw only %d requests"
                             % (n, r["requests"], r["up_reqs"]))
    if leg.key == "remora-filters":
        check_filters_idle(n)
    if leg.key == "remora-obs":
        check_obs(n, r)
    return r


# ---------------------------------------------------------------- h2load (h2c)

H2_PORT = {"remora": "remora", "haproxy": "haproxy-h2", "nginx": "nginx-h2"}
H2_CONNS, H2_STREAMS = 10, 10


def run_h2load(port, seconds):
    cmd = ["taskset", "-c", LOAD_CPU, "/usr/bin/h2load", "-c", str(H2_CONNS), "-m", str(H2_STREAMS),
           "-D", str(seconds), "http://127.0.0.1:%d/" % port]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 60)
    out = p.stdout.decode(errors="replace")
    r = {"errors": []}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    r["requests"] = int(m.group(3)) if m else 0
    if not m or m.group(4) != "0" or m.group(5) != "0":
        r["errors"].append("h2load: " + (m.group(0) if m else "no result: " + out.strip()[-200:]))
    m = re.search(r"status codes: (\d+) 2xx[^\n]*", out)
    if not m or int(m.group(1)) != r["requests"]:
        r["errors"].append("h2load: not all 2xx (%s of %d done)" % (m.group(0) if m else "no status line",
                                                                  r["requests"]))
    if p.returncode != 0:
        r["errors"].append("h2load exited with status %d" % p.returncode)
    if r["rps"] is None or not r["requests"]:
        r["errors"].append("h2load produced no result")
    return r


def run_h2_round(leg, n):
    port = PORTS[H2_PORT[leg.key]]
    srv = leg.server
    warm = run_h2load(port, WARMUP)
    if warm["errors"]:
        raise BenchError("h2 round %d warm-up: %s" % (n, "; ".join(warm["errors"])))
    t0 = cpu_ticks(srv.pid)
    r = run_h2load(port, SECONDS)
    t1 = cpu_ticks(srv.pid)
    if r["errors"]:
        raise BenchError("h2 round %d: %s" % (n, "; ".join(r["errors"])))
    ticks = sum(v - t0.get(p, 0) for p, v in t1.items())
    r["cpu_us"] = ticks * 1e6 / CLK_TCK / r["requests"]
    return r


def median(leg, field):
    return statistics.median(r[field] for r in leg.rounds)


# ---------------------------------------------------------------- report

def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return os.cpu_count(), model, os.uname().release


def tool_versions():
    def first(cmd, pat):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            m = re.search(pat, p.stdout.decode(errors="replace"))
            return m.group(1) if m else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    rev = first(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], r"(\w+)")
    dirty = first(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], r"(\S)")
    return {"wrk": first(["/usr/bin/wrk", "-v"], r"wrk (\S+)"),
            "haproxy": first(["/usr/sbin/haproxy", "-v"], r"version (\S+)"),
            "nginx": first(["/usr/sbin/nginx", "-v"], r"nginx/(\S+)"),
            "remora": rev + (" (with uncommitted changes)" if dirty != "?" else "")}


def fmt_ratio(a, b):
    return "%.2f" % (a / b) if b else "n/a"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def report(legs, started, load_before, load_after, tls=None):
    ncpu, model, kernel = machine()
    v = tool_versions()
    L = []
    L.append("- Date: %s UTC" % started.strftime("%Y-%m-%d %H:%M"))
    L.append("- Machine: %d CPUs (nproc), %s, Linux %s" % (ncpu, model, kernel))
    L.append("- Load: wrk %s, 1 thread, %d keep-alive connections; %d round(s) per proxy of %d s after "
             "%d s warm-up; medians over rounds" % (v["wrk"], CONNECTIONS, ROUNDS, SECONDS, WARMUP))
    L.append("- Versions: Remora %s, HAProxy %s, nginx %s" % (v["remora"], v["haproxy"], v["nginx"]))
    busy = " (other work was running: expect noisy numbers)" if load_before >= 0.5 else ""
    L.append("- Load average (1 min) before the run: %.2f%s" % (load_before, busy))
    L.append("- Load average (1 min) after the run: %.2f (includes the bench's own proxy, wrk and "
             "upstream)" % load_after)
    L.append("")
    L.append("| Proxy | req/s | p50 ms | p99 ms | CPU µs/req | RSS after KiB | idle RSS KiB | new upstream conns / reqs |")
    L.append("|---|--:|--:|--:|--:|--:|--:|--:|")
    if not RUN_H1:  # BENCH_H1=0: no HTTP/1.1 table
        del L[-3:]
        legs_h1 = []
    else:
        legs_h1 = legs
    for leg in legs_h1:
        name = NAMES[leg.key]
        if leg.status:
            L.append("| %s | %s | | | | | %s | |" % (name, leg.status.replace("|", "/"),
                                                     leg.idle_rss if leg.idle_rss else ""))
            continue
        up = ""
        if all("up_conns" in r for r in leg.rounds):
            up = "%d / %d" % (sum(r["up_conns"] for r in leg.rounds), sum(r["up_reqs"] for r in leg.rounds))
        L.append("| %s | %.0f | %.3f | %.3f | %.1f | %d | %d | %s |" % (
            name, median(leg, "rps"), median(leg, "p50") / 1e3, median(leg, "p99") / 1e3,
            median(leg, "cpu_us"), median(leg, "rss"), leg.idle_rss, up))
    L.append("")
    ok = {leg.key: leg for leg in legs_h1 if not leg.status}
    present = {leg.key for leg in legs_h1}
    for mine in REMORA_KEYS:
        if mine not in present:
            continue
        if mine not in ok:
            L.append("- %s ratios: none (%s did not produce numbers)" % (NAMES[mine], NAMES[mine]))
            continue
        if mine == "remora-obs":
            L += obs_ratio_lines(ok, present)
            continue
        if mine == "remora-filters" and "remora" in present:
            if "remora" in ok:
                f, r = ok["remora-filters"], ok["remora"]
                # Round n of Remora+filters runs right after round n of
                # Remora, so each pair sees nearly the same machine: the
                # median of the per-round ratios cancels slow drifts that the
                # ratio of the two medians (rounds picked independently) does
                # not.  The target is checked on the paired figure.
                pairs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(f.rounds, r.rounds)]
                paired = statistics.median(pairs)
                L.append("- Remora+filters / Remora: req/s ratio %s, CPU-per-request ratio %.2f; paired "
                         "CPU-per-request ratio %.2f (median of per-round ratios %s; target <= %.2f: %s)" % (
                             fmt_ratio(median(f, "rps"), median(r, "rps")),
                             median(f, "cpu_us") / median(r, "cpu_us"), paired,
                             ", ".join("%.2f" % x for x in pairs), FILTER_TARGET,
                             "met" if paired <= FILTER_TARGET else "NOT met"))
            else:
                L.append("- Remora+filters / Remora: no ratio (Remora did not produce numbers)")
        for other in ("haproxy", "nginx"):
            if other not in present:
                continue
            if other in ok:
                L.append("- %s / %s: req/s ratio %s, CPU-per-request ratio %s" % (
                    NAMES[mine], NAMES[other], fmt_ratio(median(ok[mine], "rps"), median(ok[other], "rps")),
                    fmt_ratio(median(ok[mine], "cpu_us"), median(ok[other], "cpu_us"))))
            else:
                L.append("- %s / %s: no ratio (%s did not produce numbers)" % (NAMES[mine], NAMES[other],
                                                                            NAMES[other]))
    for leg in legs:
        if leg.key in REMORA_KEYS and leg.stats is not None:
            st = leg.stats
            if "error" in st:
                L.append("- %s admin: %s" % (NAMES[leg.key], st["error"]))
            else:
                keys = REMORA_STATS + (FILTER_STATS if leg.key == "remora-filters" else ()) + \
                    (OBS_STATS if leg.key == "remora-obs" else ())
                L.append("- %s admin /stats after the last round: %s" % (NAMES[leg.key], ", ".join(
                    "%s %s" % (k, st.get(k, "absent")) for k in keys)))
    h2legs = [leg for leg in legs if leg.key in H2_PORT and (leg.h2_rounds or leg.h2_status)]
    if h2legs:
        L.append("")
        L.append("HTTP/2 (h2c prior knowledge) to the same HTTP/1.1 upstream: h2load, %d connections x %d "
                 "concurrent streams, %d s per round, medians:" % (H2_CONNS, H2_STREAMS, SECONDS))
        L.append("")
        L.append("| Proxy (h2c) | req/s | CPU µs/req |")
        L.append("|---|--:|--:|")
        for leg in h2legs:
            if leg.h2_status:
                L.append("| %s | %s | |" % (NAMES[leg.key], leg.h2_status.replace("|", "/")))
            else:
                L.append("| %s | %.0f | %.1f |" % (
                    NAMES[leg.key], statistics.median(r["rps"] for r in leg.h2_rounds),
                    statistics.median(r["cpu_us"] for r in leg.h2_rounds)))
        L.append("")
        h2ok = {leg.key: leg for leg in h2legs if not leg.h2_status}

        def h2med(key, field):
            return statistics.median(r[field] for r in h2ok[key].h2_rounds)
        for other in ("haproxy", "nginx"):
            if "remora" in h2ok and other in h2ok:
                L.append("- Remora / %s over h2c: req/s ratio %s, CPU-per-request ratio %s" % (
                    NAMES[other], fmt_ratio(h2med("remora", "rps"), h2med(other, "rps")),
                    fmt_ratio(h2med("remora", "cpu_us"), h2med(other, "cpu_us"))))
        for leg in h2legs:
            if leg.h2_rounds:
                L.append("- %s h2c per round (req/s, CPU µs/req): %s" % (NAMES[leg.key], "; ".join(
                    "%.0f, %.1f" % (r["rps"], r["cpu_us"]) for r in leg.h2_rounds)))
        L.append("")
    L += tls_report(tls)
    notes = [r["cpu_note"] for leg in legs for r in leg.rounds if r.get("cpu_note")]
    if notes:
        L.append("- CPU caveat: " + "; ".join(sorted(set(notes))))
    L.append("")
    L.append("Per round (req/s, p50 ms, p99 ms, CPU µs/req):")
    L.append("")
    for leg in legs:
        if leg.rounds:
            L.append("- %s: %s" % (NAMES[leg.key], "; ".join(
                "%.0f, %.3f, %.3f, %.1f" % (r["rps"], r["p50"] / 1e3, r["p99"] / 1e3, r["cpu_us"])
                for r in leg.rounds)))
    return "\n".join(L) + "\n"


DOC_HEAD = """# Benchmarks

Remora against HAProxy and nginx as HTTP/1.1 reverse proxies, one worker each,
run by `make bench` (tests/bench/run.sh).  The section between the markers
below is rewritten by every run; the rest of this file is kept.

"""


def write_doc(path, section):
    block = "%s\n%s%s" % (BEGIN_MARK, section, END_MARK)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = DOC_HEAD + BEGIN_MARK + "\n" + END_MARK + "\n"
    if BEGIN_MARK in text and END_MARK in text:
        a = text.index(BEGIN_MARK)
        b = text.index(END_MARK) + len(END_MARK)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n## Latest run\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- TLS (HTTPS)

TLS_KEYS = ("remora", "haproxy")
TLS_NAMES = {"remora": "Remora", "haproxy": "HAProxy"}


def make_tls_files(tmp):
    """An ECDSA P-256 self-signed certificate for 127.0.0.1 (openssl CLI)."""
    key, crt = os.path.join(tmp, "tls.key"), os.path.join(tmp, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=bench",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    pem = os.path.join(tmp, "haproxy-tls.pem")
    with open(pem, "w") as f:
        f.write(open(crt).read() + open(key).read())
    return crt, key, pem


def tls_configs(tmp, crt, key, pem):
    up = PORTS["upstream"]
    remora_cfg = os.path.join(tmp, "remora-tls.yaml")
    with open(remora_cfg, "w") as f:
        f.write("""admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
static_resources:
  listeners:
  - name: bench_tls
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          disable_stateless_session_resumption: true
          common_tls_context:
            alpn_protocols: [http/1.1]
            tls_params: {tls_minimum_protocol_version: TLSv1_3}
            tls_certificates:
            - certificate_chain: {filename: %s}
              private_key: {filename: %s}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench_tls
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: upstream}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
""" % (PORTS["admin-tls"], PORTS["remora-tls"], crt, key, up))
    haproxy_cfg = os.path.join(tmp, "haproxy-tls.cfg")
    with open(haproxy_cfg, "w") as f:
        f.write("""global
	nbthread 1
	maxconn 4096
	tune.ssl.cachesize 0
defaults
	mode http
	option http-keep-alive
	http-reuse always
	timeout connect 1s
	timeout client 60s
	timeout server 60s
	timeout http-keep-alive 60s
frontend bench_tls
	bind 127.0.0.1:%d ssl crt %s alpn http/1.1 ssl-min-ver TLSv1.3 no-tls-tickets
	default_backend upstream
backend upstream
	server nginx 127.0.0.1:%d
""" % (PORTS["haproxy-tls"], pem, up))
    return remora_cfg, haproxy_cfg


def https_ok(port):
    p = subprocess.run(["curl", "-sk", "--max-time", "3", "https://127.0.0.1:%d/" % port],
                       capture_output=True, timeout=10)
    return p.returncode == 0 and p.stdout == b"hello"


def run_tls_leg(key, tmp, cfgs):
    """Keep-alive HTTPS and handshakes/s for one proxy: {"ka": [rounds], "hs": [rounds]}."""
    binary = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
    port = PORTS[key + "-tls"]
    if key == "remora":
        cmd, ports = [binary, "-c", cfgs[0], "--concurrency", "1"], [port, PORTS["admin-tls"]]
    else:
        cmd, ports = ["/usr/sbin/haproxy", "-db", "-f", cfgs[1]], [port]
    srv = Server(key + "-tls", cmd, PROXY_CPU, tmp)
    SERVERS.append(srv)
    res = {"ka": [], "hs": [], "status": None}
    try:
        wait_listening(srv, ports)
        if not https_ok(port):
            raise BenchError("first HTTPS request failed")
        for n in range(1, ROUNDS + 1):
            for kind, extra in (("ka", ()), ("hs", ("-H", "Connection: close"))):
                print("bench: tls %s round %d/%d %s ..." % (kind, n, ROUNDS, TLS_NAMES[key]), flush=True)
                warm = run_wrk(port, WARMUP, "https", extra)
                if warm["errors"]:
                    raise BenchError("tls %s warm-up: %s" % (kind, "; ".join(warm["errors"])))
                t0 = cpu_ticks(srv.pid)
                r = run_wrk(port, SECONDS, "https", extra)
                t1 = cpu_ticks(srv.pid)
                if r["errors"] or not srv.alive():
                    raise BenchError("tls %s round %d: %s" % (kind, n, "; ".join(r["errors"]) or "exited"))
                r["cpu_us"] = sum(v - t0.get(p, 0) for p, v in t1.items()) * 1e6 / CLK_TCK / r["requests"]
                res[kind].append(r)
                print("bench:   %.0f req/s, %.1f CPU µs/req" % (r["rps"], r["cpu_us"]), flush=True)
        if key == "remora":
            try:
                _, body = http_get(PORTS["admin-tls"], "/stats?filter=ssl")
                st = dict(l.split(": ", 1) for l in body.decode().splitlines() if ": " in l)
                res["ssl"] = {k.split(".ssl.", 1)[1]: v for k, v in st.items() if ".ssl." in k}
            except OSError:
                pass
    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
        res["status"] = "FAILED: %s" % e
        print("bench:   %s" % res["status"], flush=True)
    finally:
        srv.stop()
    return res


def tls_report(tls):
    if not tls:
        return []
    L = ["", "HTTPS (TLS 1.3, ECDSA P-256, X25519; HTTP/1.1 to the same plaintext upstream), wrk %d "
         "connections, %d s per round, medians. Keep-alive: requests on open TLS connections; "
         "handshakes: `connection: close`, so every request is a new connection and a full "
         "handshake (wrk would resume sessions: both proxies have resumption off, Remora with "
         "`disable_stateless_session_resumption`, HAProxy with `no-tls-tickets` and "
         "`tune.ssl.cachesize 0`):" % (CONNECTIONS, SECONDS), "",
         "| Proxy (TLS) | keep-alive req/s | CPU µs/req | handshakes/s | CPU µs/handshake |",
         "|---|--:|--:|--:|--:|"]
    med = {}
    for key, res in tls.items():
        if res["status"]:
            L.append("| %s | %s | | | |" % (TLS_NAMES[key], res["status"].replace("|", "/")))
            continue
        m = [statistics.median(r[f] for r in res[k]) for k in ("ka", "hs") for f in ("rps", "cpu_us")]
        med[key] = m
        L.append("| %s | %.0f | %.1f | %.0f | %.1f |" % (TLS_NAMES[key], *m))
    if "remora" in med and "haproxy" in med:
        a, b = med["remora"], med["haproxy"]
        L += ["", "- Remora / HAProxy over TLS: keep-alive req/s ratio %s, handshakes/s ratio %s" % (
            fmt_ratio(a[0], b[0]), fmt_ratio(a[2], b[2]))]
    if tls.get("remora", {}).get("ssl"):
        ssl = tls["remora"]["ssl"]
        L.append("- Remora ssl stats after the TLS leg: " + ", ".join(
            "%s %s" % (k, ssl[k]) for k in ("handshake", "session_reused", "connection_error") if k in ssl))
    return L


# ---------------------------------------------------------------- main

def choose_ports():
    """Keep BENCH_PORT_BASE if given; otherwise move off the default ports
    when something else (another test run) listens there."""
    global BASE, PORTS
    if any(listening(p) for p in PORTS.values()):
        if os.environ.get("BENCH_PORT_BASE"):
            sys.exit("bench: ports %s: some already in use" % sorted(PORTS.values()))
        for base in range(29080, 32000, 100):
            if not any(listening(p) for p in ports_for(base).values()):
                print("bench: default ports busy, using %d..%d" % (base, base + 10), flush=True)
                BASE, PORTS = base, ports_for(base)
                return
        sys.exit("bench: no free port range found (set BENCH_PORT_BASE)")


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    keys = [k.strip() for k in os.environ.get("BENCH_PROXIES", ",".join(NAMES)).split(",") if k.strip()]
    for k in keys:
        if k not in NAMES:
            sys.exit("bench: unknown proxy %r in BENCH_PROXIES" % k)
    for tool in ("/usr/bin/wrk", "/usr/sbin/haproxy", "/usr/sbin/nginx"):
        if not os.access(tool, os.X_OK):
            sys.exit("bench: %s missing (run `make deps`)" % tool)
    if (os.cpu_count() or 1) < 2:
        print("bench: warning: fewer than 2 CPUs; proxy and load share CPU 0", flush=True)
        global LOAD_CPU
        LOAD_CPU = "0"
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = loadavg()
    tmp = tempfile.mkdtemp(prefix="remora-bench.")
    legs = [Leg(k) for k in keys]
    try:
        choose_ports()
        try:
            upstream = start_upstream(tmp)
        except (BenchError, OSError) as e:
            sys.exit("bench: upstream nginx: %s" % e)
        if "remora-obs" in keys:
            start_obs_sink()
        for leg in legs:
            start_leg(leg, tmp)
        for n in range(1, ROUNDS + 1 if RUN_H1 else 1):
            for leg in legs:
                if leg.status:
                    continue
                print("bench: round %d/%d %s ..." % (n, ROUNDS, NAMES[leg.key]), flush=True)
                try:
                    r = run_round(leg, n, upstream)
                    leg.rounds.append(r)
                    print("bench:   %.0f req/s, p50 %.3f ms, p99 %.3f ms, %.1f CPU µs/req" % (
                        r["rps"], r["p50"] / 1e3, r["p99"] / 1e3, r["cpu_us"]), flush=True)
                except (BenchError, subprocess.TimeoutExpired, OSError) as e:
                    leg.status = "FAILED: %s" % e
                    print("bench:   %s" % leg.status, flush=True)
                if leg.key in REMORA_KEYS and leg.server and leg.server.alive():
                    leg.stats = remora_stats(leg.key)
                if leg.status:
                    leg.server.stop()  # keep CPU 0 quiet for the others
        if os.environ.get("BENCH_H2", "1") != "0" and os.access("/usr/bin/h2load", os.X_OK):
            for n in range(1, ROUNDS + 1):
                for leg in legs:
                    if leg.key not in H2_PORT or leg.status or leg.h2_status:
                        continue
                    print("bench: h2 round %d/%d %s ..." % (n, ROUNDS, NAMES[leg.key]), flush=True)
                    try:
                        r = run_h2_round(leg, n)
                        leg.h2_rounds.append(r)
                        print("bench:   %.0f req/s, %.1f CPU µs/req" % (r["rps"], r["cpu_us"]), flush=True)
                    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
                        leg.h2_status = "FAILED: %s" % e
                        print("bench:   %s" % leg.h2_status, flush=True)
        tls = {}
        if os.environ.get("BENCH_TLS", "1") != "0":
            try:
                files = make_tls_files(tmp)
                cfgs = tls_configs(tmp, *files)
                for key in TLS_KEYS:
                    if key in keys:
                        tls[key] = run_tls_leg(key, tmp, cfgs)
            except (subprocess.SubprocessError, OSError) as e:
                print("bench: TLS leg not run: %s" % e, flush=True)
        section = report(legs, started, load_before, loadavg(), tls)
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(section, end="")
    doc = os.environ.get("BENCH_DOC", os.path.join(ROOT, "docs", "benchmarks.md"))
    if doc != "-":
        write_doc(doc, section)
        print("\nbench: updated %s" % os.path.relpath(doc, os.getcwd()))
    bad = [leg for leg in legs if leg.status and not leg.status.startswith("not run")]
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup()
