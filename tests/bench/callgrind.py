#!/usr/bin/python3
"""Instructions per request through Remora, measured with callgrind.

Wall-clock benchmarks swing by 20% on the shared 2-CPU development machine;
instruction counts do not.  This starts the bench upstream (nginx, as in
`make bench`) and the release Remora (`build/remora`, one worker) under
`valgrind --tool=callgrind`, sends a warm-up of h2load requests, zeroes the
counters, sends the measured requests, dumps, and prints the instructions
(Ir) of the whole Remora process divided by the measured requests, plus the
top functions (callgrind_annotate, inclusive=no).

  /usr/bin/python3 tests/bench/callgrind.py [h1|h2|both] [requests]

  h2:  h2load -c 10 -m 10        (h2c prior knowledge, as the bench's h2 leg)
  h1:  h2load --h1 -c 100 -m 1   (HTTP/1.1 keep-alive, 100 connections, so the
                                  same 100 requests are in flight)

Environment: REMORA_BIN (default build/remora), CALLGRIND_PORT_BASE (default
29180, outside the ephemeral port range so a
client socket of a parallel test cannot hold it), CALLGRIND_OBS="trace,log" (or "trace", "log") measures Remora+obs:
remora.yaml plus what bench.py's obs_config() adds (Zipkin tracing at 100 %
sampling to a sink this script runs, and/or a JSON access log to a file);
CALLGRIND_OBS=all runs plain, trace, log and trace+log in turn and prints a
table, CALLGRIND_KEEP=1 keeps the temp dir with the callgrind.out files,
CALLGRIND_PROXY=haproxy measures HAProxy with tests/bench/haproxy.cfg instead
(its h1 frontend for h1, its `proto h2` frontend for h2) for comparison.
Only loopback addresses are used; every process started is stopped.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BASE = int(os.environ.get("CALLGRIND_PORT_BASE", "29180"))
UP, PROXY, ADMIN = BASE, BASE + 3, BASE + 10
HAPROXY = os.environ.get("CALLGRIND_PROXY", "remora") == "haproxy"
HA_H1, HA_H2 = BASE + 1, BASE + 5
WARM = 2000
SINK = BASE + 14
OBS = os.environ.get("CALLGRIND_OBS", "")


def wait_port(port, timeout=60.0):
    import socket
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("callgrind: port %d did not open" % port)


def render(name, tmp):
    with open(os.path.join(HERE, name)) as f:
        text = f.read()
    for default, port in ((28080, UP), (28083, PROXY), (28090, ADMIN), (28081, HA_H1), (28085, HA_H2)):
        text = re.sub(r"\b%d\b" % default, str(port), text)
    dst = os.path.join(tmp, name)
    with open(dst, "w") as f:
        f.write(text)
    return dst


def start_sink():
    """A Zipkin-like collector: reads each POSTed report and answers 202."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", SINK), Sink)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def remora_config(tmp, obs):
    """remora.yaml, plus tracing and/or the JSON access log of bench.py's
    obs_config() for obs ("trace", "log", "trace,log"; "" plain)."""
    path = render("remora.yaml", tmp)
    parts = [p for p in obs.split(",") if p]
    if not parts:
        return path
    sys.path.insert(0, HERE)
    import bench
    import yaml
    with open(path) as f:
        cfg = yaml.safe_load(f)
    bench.PORTS.update({"obs-sink": SINK, "remora-obs": PROXY, "admin-obs": ADMIN})
    os.environ["BENCH_OBS"] = obs
    src = bench.obs_config(tmp)
    with open(src) as f:
        obs_cfg = yaml.safe_load(f)
    # obs_config() starts from its own rendering of remora.yaml: keep ours
    # (ports of this script) and graft the observability parts onto it.
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ohcm = obs_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for k in ("tracing", "access_log"):
        if k in ohcm:
            hcm[k] = ohcm[k]
    cfg["node"] = obs_cfg["node"]
    cfg["static_resources"]["clusters"] += [c for c in obs_cfg["static_resources"]["clusters"]
                                            if c["name"] == "zipkin"]
    out = os.path.join(tmp, "remora-%s.yaml" % obs.replace(",", "-"))
    with open(out, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return out


def port_for(mode):
    if HAPROXY:
        return HA_H2 if mode == "h2" else HA_H1
    return PROXY


def h2load(mode, n):
    args = ["-c", "10", "-m", "10"] if mode == "h2" else ["--h1", "-c", "100", "-m", "1"]
    out = subprocess.run(["/usr/bin/h2load", "-n", str(n)] + args + ["http://127.0.0.1:%d/" % port_for(mode)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600).stdout.decode()
    m = re.search(r"status codes: (\d+) 2xx", out)
    ok = int(m.group(1)) if m else 0
    if ok != n:
        raise SystemExit("callgrind: %s: %d of %d requests got a 2xx:\n%s" % (mode, ok, n, out[-800:]))


def measure(mode, n, tmp, obs=""):
    binary = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
    tag = mode + ("-" + obs.replace(",", "-") if obs else "")
    out = os.path.join(tmp, "callgrind.out.%s" % tag)
    log = open(os.path.join(tmp, "remora-%s.log" % tag), "wb")
    cmd = [binary, "-c", remora_config(tmp, obs), "--concurrency", "1"]
    if HAPROXY:
        cmd = ["/usr/sbin/haproxy", "-db", "-f", render("haproxy.cfg", tmp)]
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + cmd,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        wait_port(port_for(mode))
        h2load(mode, WARM)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, stdout=subprocess.DEVNULL)
        h2load(mode, n)
        subprocess.run(["callgrind_control", "-d", "measured", str(p.pid)], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith("callgrind.out.%s." % tag))
    total = 0
    for f in dumps:  # the "measured" dump (one per thread with --separate-threads)
        with open(os.path.join(tmp, f)) as fh:
            text = fh.read()
        if "measured" not in text.split("\nfn=", 1)[0]:
            continue
        m = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
        total += int(m.group(1))
        ann = subprocess.run(["callgrind_annotate", os.path.join(tmp, f)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode(errors="replace")
        if os.environ.get("CALLGRIND_QUIET") != "1":
            print("\n".join(ann.splitlines()[:60]))
    print("%s: %d requests, %.0f instructions per request" % (tag, n, total / n))
    return total / n


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    tmp = tempfile.mkdtemp(prefix="remora-callgrind.")
    up = subprocess.Popen(["/usr/sbin/nginx", "-p", tmp + "/", "-e", "stderr", "-c",
                           render("nginx-upstream.conf", tmp)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    res = {}
    variants = ["", "trace", "log", "trace,log"] if OBS == "all" else [OBS]
    sink = start_sink() if OBS else None
    try:
        wait_port(UP)
        for m in (("h1", "h2") if mode == "both" else (mode,)):
            for obs in variants:
                res[m + (" " + obs if obs else " plain")] = measure(m, n, tmp, obs)
    finally:
        if sink:
            sink.shutdown()
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=10)
        if os.environ.get("CALLGRIND_KEEP") == "1":
            print("callgrind: kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for k, v in res.items():
        base = res.get(k.split(" ")[0] + " plain")
        print("%-14s %8.0f Ir/req%s" % (k, v, "  %.3fx plain" % (v / base) if base and OBS else ""))


if __name__ == "__main__":
    main()
