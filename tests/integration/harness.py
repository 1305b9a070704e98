"""Helpers for the Remora integration tests.

Everything here drives real processes over loopback sockets: the remora
binary ($REMORA_BIN), curl, raw sockets.  Every blocking call has a timeout.

Contents:
  free_port() / free_port_pair()  loopback ports outside the ephemeral range
  Remora                          start/stop the proxy, talk to its admin port
  curl()                          run the real curl, return status/headers/body
  HttpConn                        raw-socket HTTP/1.1 client (pipelining, bad input)
  ws_* helpers                    minimal WebSocket client framing
  config builders                 Envoy v3 bootstrap dicts
  spawn()                         start a helper process tied to our lifetime
"""

import base64
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")
# valgrind (REMORA_WRAPPER, `make test-valgrind`): any error, or a definite leak
VALGRIND_ERROR_RE = re.compile(r"==\d+== (ERROR SUMMARY: [1-9]|\s*definitely lost: [1-9])")


# REMORA_TIME_SCALE stretches the harness's own waits (start, stop, admin,
# stats, curl) for slow runs such as valgrind; tests' own bounds stay as written.
TIME_SCALE = float(os.environ.get("REMORA_TIME_SCALE", "1"))


def remora_wrapper():
    """REMORA_WRAPPER: a command line the binary runs under (e.g. valgrind)."""
    w = os.environ.get("REMORA_WRAPPER", "").split()
    return w


def remora_bin():
    return os.environ.get("REMORA_BIN") or os.path.join(REPO, "build", "asan", "remora")


# ---------------------------------------------------------------------------
# processes

_SETPRIV = shutil.which("setpriv")


def spawn(argv, stdout=None, stderr=None, env=None, cwd=None):
    """Popen that dies with us: the child gets SIGKILL if the test runner is
    killed (setpriv --pdeathsig), and runs in its own session so a terminal
    ^C does not reach it half-way through a test's cleanup."""
    if _SETPRIV:
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(argv)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or subprocess.DEVNULL,
                            stderr=stderr or subprocess.DEVNULL, env=env, cwd=cwd,
                            start_new_session=True)


def stop_process(proc, sig=signal.SIGTERM, timeout=10.0):
    """Signal proc and wait; SIGKILL after timeout.  Returns (returncode, killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10), True


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it.  AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError, KeyError) as e:   # e.g. connection refused while starting
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# ports
#
# Ports come from below the kernel's ephemeral range (32768+ by default), so
# the proxy's own outgoing connections can never take a port a test handed to
# a listener between allocation and bind.

_port_lock = threading.Lock()
_ports_given = set()
_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def _can_bind(host, port, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port(hosts=("127.0.0.1",), udp=False):
    """A TCP port (and UDP too if udp) free on every address in hosts."""
    with _port_lock:
        for _ in range(2000):
            p = _rng.randrange(20000, 32000)
            if p in _ports_given:
                continue
            if all(_can_bind(h, p) for h in hosts) and \
               (not udp or all(_can_bind(h, p, socket.SOCK_DGRAM) for h in hosts)):
                _ports_given.add(p)
                return p
    raise RuntimeError("no free loopback port found")


def closed_port():
    """A port nobody listens on (connections to it are refused)."""
    return free_port()


# ---------------------------------------------------------------------------
# the proxy under test

class RemoraError(Exception):
    pass


class Remora:
    """One remora process with a YAML config written from a dict.

    r = Remora(tmp_path, cfg); r.start()   # waits for GET /ready == 200
    r.admin_get("/stats"), r.stats(), r.stop()"""

    def __init__(self, workdir, config, concurrency=2, drain_time_s=1, log_level="info",
                 extra_args=(), name="remora", asan_options_extra=None, config_text=None):
        self.workdir = str(workdir)
        self.name = name
        self.config = config
        self.config_path = os.path.join(self.workdir, f"{name}.yaml")
        with open(self.config_path, "w") as f:
            f.write(config_text if config_text is not None
                    else yaml.safe_dump(config, sort_keys=False))
        self.admin_port = None
        try:
            self.admin_port = config["admin"]["address"]["socket_address"]["port_value"]
        except (KeyError, TypeError):
            pass
        self.concurrency = concurrency
        self.args = ["-c", self.config_path]
        if concurrency is not None:
            self.args += ["--concurrency", str(concurrency)]
        if drain_time_s is not None:
            self.args += ["--drain-time-s", str(drain_time_s)]
        if log_level:
            self.args += ["--log-level", log_level]
        self.args += list(extra_args)
        self.stdout_path = os.path.join(self.workdir, f"{name}.stdout")
        self.stderr_path = os.path.join(self.workdir, f"{name}.stderr")
        self.env = dict(os.environ)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if asan_options_extra:
            self.env["ASAN_OPTIONS"] = self.env["ASAN_OPTIONS"] + ":" + asan_options_extra
        self.proc = None
        self.stopped_by_us = False
        self.checked = False

    # -- lifecycle --------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid

    def start(self, wait_ready=True, timeout=30.0):
        binary = remora_bin()
        if not os.access(binary, os.X_OK):
            raise RemoraError(f"remora binary not found or not executable: {binary} "
                              "(build it with `make asan`, or set REMORA_BIN)")
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = spawn(remora_wrapper() + [binary] + self.args, stdout=self._out,
                          stderr=self._err, env=self.env, cwd=self.workdir)
        if wait_ready:
            self.wait_ready(timeout * TIME_SCALE)
        return self

    def wait_ready(self, timeout=30.0):
        assert self.admin_port, "config has no admin port"
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RemoraError(f"remora exited with status {self.proc.returncode} before "
                                  f"becoming ready\n{self.log_tail()}")
            try:
                st, _, body = self.admin_request("GET", "/ready", timeout=2)
                last = (st, body)
                if st == 200:
                    return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RemoraError(f"remora not ready within {timeout}s (last /ready: {last!r})\n"
                          f"{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait for the process to exit on its own; returns the exit status or
        raises AssertionError (after killing it) if it did not."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stopped_by_us = True
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"remora did not exit within {timeout}s\n{self.log_tail()}") from None

    def stop(self, sig=signal.SIGTERM, timeout=15.0, check=True):
        """Send sig, wait for exit (SIGKILL after timeout).  Returns the exit
        status.  With check, fails if a sanitizer reported anything."""
        self.stopped_by_us = True
        rc, killed = stop_process(self.proc, sig, timeout * TIME_SCALE)
        self._close_files()
        if killed:
            raise AssertionError(f"remora did not exit within {timeout}s of signal {sig!r}; "
                                 f"killed\n{self.log_tail()}")
        if check:
            self.check_sanitizers()
        return rc

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f and not f.closed:
                f.close()

    def output(self):
        text = ""
        for p in (self.stderr_path, self.stdout_path):
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        out = self.output()
        m = VALGRIND_ERROR_RE.search(out)
        if m:
            first = re.search(r"==\d+== (Invalid|Conditional|Use of|Syscall param|Mismatched|"
                              r"Source and destination|\S+ bytes in \S+ blocks are definitely)", out)
            i = first.start() if first else m.start()
            return out[i:i + 6000]
        for m in SANITIZER_MARKERS:
            i = out.find(m)
            if i >= 0:
                start = out.rfind("\n", 0, max(0, i - 200)) + 1
                return out[start:start + 6000]
        return None

    def check_sanitizers(self):
        self.checked = True
        rep = self.sanitizer_report()
        if rep:
            raise AssertionError(f"sanitizer report from remora ({self.name}):\n{rep}")

    def log_tail(self, lines=60):
        text = self.stderr_text().splitlines()
        out = "\n".join(text[-lines:])
        return f"--- {self.stderr_path} (last {min(lines, len(text))} of {len(text)} lines) ---\n{out}"

    def finalize(self):
        """Called by the fixture after the test: stop if still running, then
        return a list of problems (sanitizer reports, crashes)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            rc, killed = stop_process(self.proc, signal.SIGTERM, 15.0 * TIME_SCALE)
            if killed:
                problems.append(f"remora ({self.name}) ignored SIGTERM for 15s; killed")
            elif rc != 0:
                problems.append(f"remora ({self.name}) exited with status {rc} after SIGTERM")
        elif not self.stopped_by_us and self.proc.returncode != 0:
            rc = self.proc.returncode
            how = f"died from signal {-rc}" if rc < 0 else f"exited with status {rc}"
            problems.append(f"remora ({self.name}) {how} during the test\n{self.log_tail()}")
        self._close_files()
        rep = self.sanitizer_report()
        if rep:
            problems.append(f"sanitizer report from remora ({self.name}):\n{rep}")
        return problems

    # -- admin ------------------------------------------------------------

    def admin_request(self, method, path, body=None, headers=None, timeout=5.0):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout * TIME_SCALE)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def admin_get(self, path, timeout=5.0):
        return self.admin_request("GET", path, timeout=timeout)

    def admin_post(self, path, timeout=5.0):
        return self.admin_request("POST", path, body=b"", timeout=timeout)

    def stats(self, filter=None):
        """GET /stats parsed into {name: int | str} (histograms stay strings)."""
        path = "/stats"
        if filter:
            from urllib.parse import quote
            path += "?filter=" + quote(filter, safe="")
        st, _, body = self.admin_get(path)
        assert st == 200, f"GET {path} -> {st}: {body[:200]!r}"
        return parse_stats_text(body.decode())

    def stat(self, name, default=0):
        return self.stats().get(name, default)

    def wait_stat(self, name, pred, timeout=5.0):
        """Poll /stats until pred(value) holds (value 0 when absent); return the value."""
        last = [None]

        def check():
            last[0] = self.stats().get(name, 0)
            return pred(last[0])
        try:
            wait_until(check, timeout * TIME_SCALE, interval=0.05, what=f"stat {name}")
        except AssertionError:
            raise AssertionError(f"stat {name} = {last[0]!r} did not reach the expected value "
                                 f"within {timeout}s") from None
        return last[0]

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def parse_stats_text(text):
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, val = line.partition(": ")
        if not sep:
            name, sep, val = line.partition(":")
        val = val.strip()
        try:
            out[name.strip()] = int(val)
        except ValueError:
            out[name.strip()] = val
    return out


class RssSampler:
    """Samples a process's VmRSS every interval seconds in a thread."""

    def __init__(self, remora, interval=0.1):
        self.remora, self.interval = remora, interval
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self.remora.rss_kb())
            except (OSError, RuntimeError):
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(timeout=5)

    @property
    def peak_kb(self):
        return max(self.samples) if self.samples else 0


# ---------------------------------------------------------------------------
# curl

class CurlResult:
    def __init__(self, rc, stderr, info, header_text, body):
        self.rc, self.stderr, self.info, self.body = rc, stderr, info, body
        self.status = int(info.get("http_code") or info.get("response_code") or 0)
        # the last header block (skips 100 Continue and other interim answers)
        blocks = [b for b in re.split(r"\r?\n\r?\n", header_text) if b.strip()]
        last = blocks[-1] if blocks else ""
        for b in blocks:
            if b.startswith("HTTP/") and not re.match(r"HTTP/\S+ 1\d\d", b):
                last = b
        self.header_block = last
        self.headers = {}
        for line in last.splitlines()[1:]:
            k, sep, v = line.partition(":")
            if sep:
                k = k.strip().lower()
                v = v.strip()
                self.headers[k] = (self.headers[k] + ", " + v) if k in self.headers else v

    def json(self):
        return json.loads(self.body)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return (f"CurlResult(rc={self.rc}, status={self.status}, stderr={self.stderr.strip()!r}, "
                f"body={self.body[:300]!r})")


def curl(url, *args, timeout=10.0, keep_body=True, output=None):
    """Run curl once.  args are extra curl arguments (e.g. "-X", "POST").
    The body is kept in memory, or discarded (keep_body=False), or written
    to the file output."""
    d = tempfile.mkdtemp(prefix="remora-curl-")
    try:
        hdr = os.path.join(d, "headers")
        if output:
            body, keep_body = output, False
        else:
            body = os.path.join(d, "body") if keep_body else "/dev/null"
        cmd = ["curl", "-sS", "--max-time", str(timeout), "-D", hdr, "-o", body,
               "-w", "%{json}", *args, url]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
        try:
            info = json.loads(p.stdout.decode() or "{}")
        except ValueError:
            info = {}
        try:
            with open(hdr, "rb") as f:
                htext = f.read().decode("latin-1")
        except OSError:
            htext = ""
        data = b""
        if keep_body and os.path.exists(body):
            with open(body, "rb") as f:
                data = f.read()
        return CurlResult(p.returncode, p.stderr.decode("utf-8", "replace"), info, htext, data)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def curl_multi(urls, *args, timeout=30.0, workdir=None):
    """One curl process fetching several URLs (sequentially curl reuses one
    connection for them; with "-Z" it runs them in parallel).  Returns
    (exit status, stderr, [(info dict, body bytes)] in URL order)."""
    d = tempfile.mkdtemp(prefix="remora-curl-", dir=workdir)
    try:
        cmd = ["curl", "-sS", "--max-time", str(timeout), "-w", "%{json}\\n", *args]
        names = []
        for i, u in enumerate(urls):
            names.append(os.path.join(d, f"b{i}"))
            cmd += ["-o", names[-1], u]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
        infos = [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]
        by_file = {info.get("filename_effective"): info for info in infos}
        res = []
        for i, path in enumerate(names):
            info = by_file.get(path) or (infos[i] if i < len(infos) else {})
            data = open(path, "rb").read() if os.path.exists(path) else b""
            res.append((info, data))
        return p.returncode, p.stderr.decode("utf-8", "replace"), res
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# raw HTTP/1.1 client

class RawResponse:
    def __init__(self, version, status, reason, headers, body, trailers):
        self.version, self.status, self.reason = version, status, reason
        self.header_list, self.body, self.trailers = headers, body, trailers
        self.headers = {}
        for k, v in headers:
            k = k.lower()
            self.headers[k] = (self.headers[k] + ", " + v) if k in self.headers else v

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"RawResponse({self.status} {self.reason!r}, headers={self.header_list!r}, body={self.body[:200]!r})"


class HttpConn:
    """A raw HTTP/1.1 client connection with its own read buffer."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, path, headers=(), body=b"", host="test.local"):
        h = [("Host", host)] + list(headers)
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in h):
            h.append(("Content-Length", str(len(body))))
        raw = f"{method} {path} HTTP/1.1\r\n".encode() + \
            b"".join(f"{k}: {v}\r\n".encode() for k, v in h) + b"\r\n" + body
        self.send(raw)

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if not self._fill():
                raise EOFError(f"connection closed while reading a line (have {bytes(self.buf)!r})")

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self):
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self):
        line = self.read_line()
        m = re.match(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?\r\n$", line)
        if not m:
            raise AssertionError(f"bad status line {line!r}")
        headers = []
        while True:
            l = self.read_line()
            if l in (b"\r\n", b"\n"):
                break
            k, _, v = l.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        return m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1"), headers

    def read_response(self, method="GET", allow_interim=False):
        """Read one response.  Interim 1xx answers are skipped unless allow_interim."""
        while True:
            version, status, reason, headers = self.read_head()
            if 100 <= status < 200 and status != 101 and not allow_interim:
                continue
            break
        hd = {}
        for k, v in headers:
            hd.setdefault(k.lower(), []).append(v)
        trailers = []
        body = b""
        te = ",".join(hd.get("transfer-encoding", [])).lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in te:
            chunks = []
            while True:
                size_line = self.read_line().split(b";")[0].strip()
                size = int(size_line, 16)
                if size == 0:
                    break
                chunks.append(self.read_exact(size))
                assert self.read_exact(2) == b"\r\n", "bad chunk terminator"
            while True:
                l = self.read_line()
                if l in (b"\r\n", b"\n"):
                    break
                k, _, v = l.decode("latin-1").partition(":")
                trailers.append((k.strip().lower(), v.strip()))
            body = b"".join(chunks)
        elif "content-length" in hd:
            body = self.read_exact(int(hd["content-length"][0]))
        else:
            body = self.read_to_eof()
        return RawResponse(version, status, reason, headers, body, trailers)

    def wait_closed(self, timeout=5.0):
        """True if the peer closes (EOF or reset) within timeout; any bytes
        that arrive meanwhile are kept in self.buf."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    self._fill()
                except socket.timeout:
                    return False
            return True
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass


def http_get(port, path="/", headers=(), timeout=10.0, host="test.local"):
    """One GET on a fresh raw connection; returns RawResponse."""
    with HttpConn(port, timeout=timeout) as c:
        c.request("GET", path, headers=headers, host=host)
        return c.read_response()


# ---------------------------------------------------------------------------
# WebSocket (RFC 6455) client framing

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept_key(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_encode(opcode, payload, mask=True, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        ws_mask(payload, key)
    return hdr + key + masked


def ws_mask(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_read_frame(reader):
    """reader has read_exact(n).  Returns (fin, opcode, payload)."""
    b0, b1 = reader.read_exact(2)
    fin, opcode = bool(b0 & 0x80), b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read_exact(8))[0]
    key = reader.read_exact(4) if b1 & 0x80 else None
    payload = reader.read_exact(n) if n else b""
    if key:
        payload = ws_mask(payload, key) if n else b""
    return fin, opcode, payload


# ---------------------------------------------------------------------------
# config builders (Envoy v3 bootstrap as Python dicts)

ROUTER_FILTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
CARES_TYPE = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"


def sockaddr(port, address="127.0.0.1"):
    return {"socket_address": {"address": address, "port_value": port}}


def bootstrap(admin_port, listeners=(), clusters=(), node_id="remora-test"):
    return {
        "node": {"id": node_id, "cluster": "remora-tests"},
        "admin": {"address": sockaddr(admin_port)},
        "static_resources": {"listeners": list(listeners), "clusters": list(clusters)},
    }


def route(match, cluster=None, **action):
    """route({"prefix": "/"}, "backend", prefix_rewrite="/x") ->
    {"match": ..., "route": {"cluster": ..., ...}}"""
    r = {"match": match}
    if cluster is not None:
        r["route"] = {"cluster": cluster, **action}
    elif action:
        r["route"] = dict(action)
    return r


def virtual_host(routes, domains=("*",), name="local_service"):
    return {"name": name, "domains": list(domains), "routes": list(routes)}


def route_config(virtual_hosts, name="local_route"):
    return {"name": name, "virtual_hosts": list(virtual_hosts)}


def hcm(rc, stat_prefix="ingress_http", http_filters=None, **extra):
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "route_config": rc,
            **extra,
            "http_filters": list(http_filters) if http_filters is not None else [ROUTER_FILTER],
        },
    }


def http_listener(port, routes=None, rc=None, name="listener_0", stat_prefix="ingress_http",
                  **hcm_extra):
    if rc is None:
        rc = route_config([virtual_host(routes)])
    return {
        "name": name,
        "address": sockaddr(port),
        "filter_chains": [{"filters": [hcm(rc, stat_prefix=stat_prefix, **hcm_extra)]}],
    }


def tcp_proxy_listener(port, cluster, stat_prefix="tcp_echo", name="tcp_listener", **extra):
    return {
        "name": name,
        "address": sockaddr(port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix,
                             "cluster": cluster, **extra},
        }]}],
    }


def load_assignment(name, endpoints):
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": sockaddr(port, host)}} for host, port in endpoints
        ]}],
    }


def static_cluster(name, endpoints, connect_timeout="1s", **extra):
    """endpoints: [(host, port), ...] or a single port."""
    if isinstance(endpoints, int):
        endpoints = [("127.0.0.1", endpoints)]
    return {"name": name, "type": "STATIC", "connect_timeout": connect_timeout,
            "load_assignment": load_assignment(name, endpoints), **extra}


def strict_dns_cluster(name, hostname, port, dns_port, refresh="1s", connect_timeout="1s", **extra):
    return {
        "name": name, "type": "STRICT_DNS", "connect_timeout": connect_timeout,
        "dns_refresh_rate": refresh,
        "dns_lookup_family": "V4_ONLY",
        "typed_dns_resolver_config": {
            "name": "envoy.network.dns_resolvers.cares",
            "typed_config": {"@type": CARES_TYPE,
                             "resolvers": [sockaddr(dns_port)]},
        },
        "load_assignment": load_assignment(name, [(hostname, port)]),
        **extra,
    }


def simple_http_config(admin_port, listener_port, upstream_port, cluster="backend",
                       stat_prefix="ingress_http", **hcm_extra):
    """Admin + one HTTP listener routing every path to one STATIC cluster."""
    return bootstrap(admin_port,
                     [http_listener(listener_port, [route({"prefix": "/"}, cluster)],
                                    stat_prefix=stat_prefix, **hcm_extra)],
                     [static_cluster(cluster, upstream_port)])


def listener_stat(port, leaf, address="127.0.0.1"):
    return f"listener.{address}_{port}.{leaf}"


# ---------------------------------------------------------------------------
# data helpers

PATTERN = bytes(range(256)) * 256          # 64 KiB block used for generated bodies


def pattern_bytes(n):
    """The first n bytes of the repeating pattern (as the upstream generates)."""
    q, r = divmod(n, len(PATTERN))
    return PATTERN * q + PATTERN[:r]


def pattern_sha256(n):
    h = hashlib.sha256()
    q, r = divmod(n, len(PATTERN))
    for _ in range(q):
        h.update(PATTERN)
    h.update(PATTERN[:r])
    return h.hexdigest()


def write_pattern_file(path, n):
    with open(path, "wb") as f:
        q, r = divmod(n, len(PATTERN))
        for _ in range(q):
            f.write(PATTERN)
        f.write(PATTERN[:r])
    return pattern_sha256(n)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def connect_refused(port, timeout=2.0):
    """True if a new TCP connection to port is refused, or accepted and then
    closed/reset without any HTTP answer to a GET."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except socket.timeout:
        return False
    try:
        s.settimeout(timeout)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return data == b""
    finally:
        s.close()
