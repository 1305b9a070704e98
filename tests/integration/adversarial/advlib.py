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
