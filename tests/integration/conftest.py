"""Fixtures for the Remora integration suite.

  remora(config, **kw)     start the proxy (fixture: a factory); stopped and
                           checked for sanitizer reports after the test
  upstream                 a started UpstreamServer named "upstream"
  make_upstream(name, host=..., port=...)  more of them
  echo_server              a started TcpEchoServer
  ports                    ports.get() -> a free loopback port

Every test runs under a SIGALRM watchdog (TEST_TIMEOUT_S, default 120 s per
phase) so nothing can hang the suite; on failure the tail of every remora's
stderr is attached to the report.
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from upstreams import TcpEchoServer, UpstreamServer  # noqa: E402

PHASE_TIMEOUT_S = float(os.environ.get("TEST_TIMEOUT_S", "120"))

# remora-cp reviews tokens with the Kubernetes API on its own when these are
# set (in a pod); tests run inside a cluster must not reach the real one:
# tests that want the API give remora-cp a stand-in explicitly.
for _k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
    os.environ.pop(_k, None)


class PhaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise PhaseTimeout(f"test phase exceeded {PHASE_TIMEOUT_S}s (TEST_TIMEOUT_S)")


def _with_watchdog():
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, PHASE_TIMEOUT_S)
    return old


def _clear_watchdog(old):
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    old = _with_watchdog()
    try:
        yield
    finally:
        _clear_watchdog(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    old = _with_watchdog()
    try:
        yield
    finally:
        _clear_watchdog(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    old = _with_watchdog()
    try:
        yield
    finally:
        _clear_watchdog(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for r in getattr(item, "_remoras", []):
            rep.sections.append((f"remora '{r.name}' stderr", r.log_tail(80)))


@pytest.fixture
def remora(request, tmp_path):
    """Factory: remora(config_dict, concurrency=2, drain_time_s=1, ...) -> started Remora."""
    instances = []
    request.node._remoras = instances
    counter = [0]

    def start(config, wait_ready=True, name=None, **kw):
        counter[0] += 1
        r = harness.Remora(tmp_path, config, name=name or f"remora{counter[0]}", **kw)
        instances.append(r)
        r.start(wait_ready=wait_ready)
        return r

    yield start
    problems = []
    for r in instances:
        problems += r.finalize()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def make_upstream():
    servers = []

    def make(name="upstream", host="127.0.0.1", port=0):
        s = UpstreamServer(name=name, host=host, port=port).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def upstream(make_upstream):
    return make_upstream("upstream")


@pytest.fixture
def echo_server():
    s = TcpEchoServer().start()
    yield s
    s.stop()


class _Ports:
    def get(self, **kw):
        return harness.free_port(**kw)


@pytest.fixture
def ports():
    return _Ports()
