"""Applying listener updates without loss: connections accepted by a listener
version that LDS replaced (its configuration changed) drain for
--drain-time-s (HTTP/1.1: `connection: close` on the next response; idle ones
closed at the deadline; TCP: closed at the deadline) while new connections get
the new filter chains.  A route change (RDS) or a cluster change does not
drain anything.  A listener whose address cannot be bound is NACKed and the
last good configuration keeps serving."""

import socket
import time

from harness import wait_until
from test_xds import (LDS, cla, cp, eds_cluster, last_request, pytestmark,  # noqa: F401
                      rds_listener, routes, xds_bootstrap)
from test_xds import push_backend


def h1(sock, path="/x"):
    """One keep-alive request on sock; returns (status, headers dict)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    need = int(hdrs.get("content-length", "0"))
    while len(rest) < need:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return int(lines[0].split()[1]), hdrs


def closed_by_peer(sock, timeout):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def start_xds(remora, cp, make_upstream, ports, drain_time_s):
    a = make_upstream("a")
    admin, lport = ports.get(), ports.get()
    push_backend(cp, "1", [a.port], lport)
    r = remora(xds_bootstrap(admin, cp.grpc_port), drain_time_s=drain_time_s)
    return r, a, lport


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    st, h = h1(s)
    assert st == 200 and h.get("connection") != "close", h
    return s


def test_replaced_listener_drains_its_connections(remora, cp, make_upstream, ports):
    r, a, lport = start_xds(remora, cp, make_upstream, ports, drain_time_s=3)
    busy, idle = connect(lport), connect(lport)

    # a route change does not drain
    cp.set("rds", "2", [routes("r1", [("/y", "backend"), ("/", "backend")])])
    wait_until(lambda: last_request(cp, "type.googleapis.com/envoy.config.route.v3."
                                        "RouteConfiguration", lambda q: q["version_info"] == "2"),
               10, what="RDS ACK")
    st, h = h1(busy)
    assert st == 200 and h.get("connection") != "close", "an RDS change drained a connection"

    # the listener's filter chain changes (another stat_prefix): drain
    lis = rds_listener("ingress", lport, "r1")
    lis["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = "ingress_v2"
    cp.set("lds", "2", [lis])
    wait_until(lambda: last_request(cp, LDS, lambda q: q["version_info"] == "2"), 10,
               what="LDS ACK")
    # new connections get the new chain
    wait_until(lambda: h1(socket.create_connection(("127.0.0.1", lport), timeout=5))[0] == 200
               and r.stat("http.ingress_v2.downstream_rq_total") >= 1, 10,
               what="new connection on the new filter chain")
    # the held connection's next response closes it
    st, h = h1(busy)
    assert st == 200 and h.get("connection") == "close", h
    assert closed_by_peer(busy, 5)
    # the idle one is closed by the drain deadline (3 s), not at once
    t0 = time.monotonic()
    assert closed_by_peer(idle, 20), "idle connection of the replaced listener not closed"
    assert time.monotonic() - t0 > 0.5, "closed at once, not after the drain time"
    busy.close()
    idle.close()
    r.stop()


def test_listener_that_cannot_bind_is_nacked(remora, cp, make_upstream, ports):
    r, a, lport = start_xds(remora, cp, make_upstream, ports, drain_time_s=1)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    busy_port = blocker.getsockname()[1]
    cp.set("lds", "2", [rds_listener("ingress", lport, "r1"),
                        rds_listener("taken", busy_port, "r1")])
    q = wait_until(lambda: last_request(cp, LDS, lambda q: q["error_detail"]), 10,
                   what="LDS NACK for the unbindable listener")
    msg = q["error_detail"]["message"]
    assert "Listener 'taken'" in msg and str(busy_port) in msg, msg
    assert q["version_info"] == "1"
    s = connect(lport)
    s.close()
    assert r.stat("listener_manager.lds.update_rejected") >= 1
    blocker.close()
    r.stop()
