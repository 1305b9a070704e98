"""tcp_proxy network filter: bytes relayed both ways, half-close, idle
timeout, connect failure, listener and tcp.<stat_prefix> stats."""

import hashlib
import os
import socket
import threading

from harness import bootstrap, closed_port, static_cluster, tcp_proxy_listener


def _recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(min(262144, n - len(buf)))
        if not d:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


def _recv_eof(s, timeout):
    """True if the peer closes (EOF or RST) within timeout, ignoring data."""
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _start(remora, ports, cluster_port, **tcp_extra):
    admin, lport = ports.get(), ports.get()
    cfg = bootstrap(admin, [tcp_proxy_listener(lport, "echo", stat_prefix="tcp_echo", **tcp_extra)],
                    [static_cluster("echo", cluster_port)])
    return remora(cfg), lport


def test_tcp_echo_and_stats(remora, echo_server, ports):
    r, lport = _start(remora, ports, echo_server.port)
    sent = 0
    for i in range(3):
        with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
            for msg in (b"hello\n", b"x" * 10000, os.urandom(4096)):
                s.sendall(msg)
                assert _recv_exact(s, len(msg)) == msg
                sent += len(msg)
    r.wait_stat(f"listener.127.0.0.1_{lport}.downstream_cx_total", lambda v: v == 3)
    r.wait_stat("tcp.tcp_echo.downstream_cx_total", lambda v: v == 3)
    r.wait_stat("tcp.tcp_echo.downstream_cx_rx_bytes_total", lambda v: v == sent)
    r.wait_stat("tcp.tcp_echo.downstream_cx_tx_bytes_total", lambda v: v == sent)
    r.wait_stat("cluster.echo.upstream_cx_total", lambda v: v == 3)
    r.wait_stat("cluster.echo.upstream_cx_active", lambda v: v == 0)
    r.wait_stat(f"listener.127.0.0.1_{lport}.downstream_cx_active", lambda v: v == 0)
    assert echo_server.connections == 3


def test_tcp_large_transfer_full_duplex(remora, echo_server, ports):
    r, lport = _start(remora, ports, echo_server.port)
    n = 16 * 1024 * 1024
    data = os.urandom(1 << 20) * 16
    got = hashlib.sha256()
    received = [0]
    with socket.create_connection(("127.0.0.1", lport), timeout=30) as s:
        def reader():
            while received[0] < n:
                d = s.recv(262144)
                if not d:
                    return
                got.update(d)
                received[0] += len(d)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(data)
        t.join(timeout=60)
    assert received[0] == n
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()


def test_tcp_half_close(remora, echo_server, ports):
    r, lport = _start(remora, ports, echo_server.port)
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            buf += d
    # the client's FIN reached the echo server through the proxy, and data
    # still flowed back on the other half
    assert buf == b"last words"


def test_tcp_idle_timeout(remora, echo_server, ports):
    r, lport = _start(remora, ports, echo_server.port, idle_timeout="1s")
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        s.sendall(b"ping")
        assert _recv_exact(s, 4) == b"ping"
        assert _recv_eof(s, 8), "idle connection not closed by idle_timeout"
    r.wait_stat("tcp.tcp_echo.idle_timeout", lambda v: v >= 1)
    # the upstream side was closed too
    from harness import wait_until
    wait_until(lambda: echo_server.closed_connections >= 1, 5, what="upstream connection closed")


def test_tcp_busy_connection_not_idle(remora, echo_server, ports):
    r, lport = _start(remora, ports, echo_server.port, idle_timeout="1s")
    import time
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        # traffic every 0.3 s for 2.4 s keeps the 1 s idle timer from firing
        for i in range(8):
            s.sendall(b"tick%d" % i)
            assert _recv_exact(s, 5) == b"tick%d" % i
            time.sleep(0.3)
    assert r.stat("tcp.tcp_echo.idle_timeout") == 0


def test_tcp_upstream_connect_failure_closes_downstream(remora, ports):
    r, lport = _start(remora, ports, closed_port())
    with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
        try:
            s.sendall(b"anyone?")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _recv_eof(s, 5), "downstream not closed after upstream connect failure"
    r.wait_stat("cluster.echo.upstream_cx_connect_fail", lambda v: v >= 1)
    r.wait_stat("tcp.tcp_echo.downstream_cx_total", lambda v: v == 1)
