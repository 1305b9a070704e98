"""Shared pieces of the adversarial suite: a well-behaved client whose
latency is sampled before and during an attack, and the proxy's RSS."""

import http.client
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class GoodClient:
    """Sends GET / on one keep-alive connection in a loop; records latency
    and failures.  Timing is reported, never asserted tightly: the check is
    that every request succeeds and none takes pathologically long."""

    def __init__(self, port, path="/"):
        self.port, self.path = port, path
        self.lat, self.errors = [], []
        self._stop = threading.Event()
        self._t = None

    def _run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                c.request("GET", self.path, headers={"host": "good"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    self.errors.append(f"status {r.status}")
            except Exception as e:                  # noqa: BLE001 - recorded
                self.errors.append(repr(e))
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.lat.append(time.monotonic() - t0)
            time.sleep(0.01)
        c.close()

    def sample(self, seconds):
        """Run alone for `seconds`; returns (count, p99 seconds)."""
        self.start()
        time.sleep(seconds)
        return self.stop()

    def start(self):
        self.lat, self.errors = [], []
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def stop(self):
        self._stop.set()
        self._t.join(timeout=20)
        lat = sorted(self.lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")
        return len(lat), p99


def check_unaffected(before, during, errors, what):
    """The good client kept working during the attack.  Latencies are
    printed for the record (pytest -s); the only bound is a liveness one."""
    n0, p0 = before
    n1, p1 = during
    print(f"\n[{what}] good client p99 before {p0 * 1000:.1f} ms ({n0} rq), "
          f"during {p1 * 1000:.1f} ms ({n1} rq)")
    assert not errors, f"{what}: good client failed: {errors[:5]}"
    assert n1 > 0, f"{what}: good client made no request during the attack"
    assert p1 < 5.0, f"{what}: good client stalled ({p1:.1f} s)"


class GoodH2Client(GoodClient):
    """The same over HTTP/2 with prior knowledge: h2load sends `batch`
    requests one after the other on one connection per run, each run's
    latency divided among them."""

    def __init__(self, port, path="/", batch=10):
        super().__init__(port, path)
        self.batch = batch

    def _run(self):
        import subprocess
        url = f"http://127.0.0.1:{self.port}{self.path}"
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                p = subprocess.run(["h2load", "-n", str(self.batch), "-c", "1", "-m", "1",
                                    "-T", "10", url],
                                   capture_output=True, text=True, timeout=30)
                want = f"status codes: {self.batch} 2xx,"
                if p.returncode != 0 or want not in p.stdout:
                    self.errors.append(f"h2load rc {p.returncode}: " + " / ".join(
                        ln for ln in p.stdout.splitlines() if "requests:" in ln or "status" in ln))
            except Exception as e:                  # noqa: BLE001 - recorded
                self.errors.append(repr(e))
            dt = (time.monotonic() - t0) / self.batch
            self.lat.extend([dt] * self.batch)
            time.sleep(0.01)
