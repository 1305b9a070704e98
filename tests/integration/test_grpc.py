"""gRPC end to end: a grpcio client -> Remora (h2c) -> a grpcio server (h2c
upstream).  Generic handlers with raw-bytes messages, so no generated code:
unary, server streaming (incremental, and 10,000 messages), client streaming,
bidi ping-pong, trailers (grpc-status / grpc-message), grpc-timeout capped
by max_stream_duration.grpc_timeout_header_max, gRPC retry_on, and the
envoy.filters.http.grpc_stats filter."""

import threading
import time
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc")

from harness import bootstrap, http_listener, route, static_cluster, virtual_host  # noqa: E402

HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
GRPC_STATS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}

ident = (lambda b: b)


class Service:
    """test.Echo: Echo (unary), Slow (unary, sleeps), Flaky (UNAVAILABLE on
    the first call per key), Fail (INVALID_ARGUMENT + message), Stream
    (server streaming), Gated (server streaming that waits for the client to
    have seen message 1), Sum (client streaming), Chat (bidi)."""

    def __init__(self):
        self.calls = {}
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.metadata = []

    def count(self, name):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def Echo(self, req, ctx):
        self.count("Echo")
        self.metadata.append(dict(ctx.invocation_metadata()))
        ctx.set_trailing_metadata((("x-echo-trailer", "t1"),))
        return req

    def Slow(self, req, ctx):
        self.count("Slow")
        time.sleep(1.5)
        return b"late"

    def Flaky(self, req, ctx):
        n = self.count("Flaky:" + req.decode())
        if n == 1:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok after %d" % n

    def Fail(self, req, ctx):
        self.count("Fail")
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad thing: details")

    def Stream(self, req, ctx):
        n = int(req.decode())
        for i in range(n):
            yield b"m%d" % i

    def Gated(self, req, ctx):
        yield b"first"
        # the client sets the gate once it has received "first": a proxy
        # that buffered the response would never let it through
        if not self.gate.wait(10):
            ctx.abort(grpc.StatusCode.ABORTED, "gate not opened: response was buffered")
        yield b"second"

    def Sum(self, it, ctx):
        total, n = 0, 0
        for m in it:
            total += len(m)
            n += 1
        return b"%d/%d" % (n, total)

    def Chat(self, it, ctx):
        for m in it:
            yield b"re:" + m


def start_server(svc):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(svc.Echo, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(svc.Slow, ident, ident),
        "Flaky": grpc.unary_unary_rpc_method_handler(svc.Flaky, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(svc.Fail, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(svc.Stream, ident, ident),
        "Gated": grpc.unary_stream_rpc_method_handler(svc.Gated, ident, ident),
        "Sum": grpc.stream_unary_rpc_method_handler(svc.Sum, ident, ident),
        "Chat": grpc.stream_stream_rpc_method_handler(svc.Chat, ident, ident),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def grpc_env(remora, ports):
    svc = Service()
    server, up_port = start_server(svc)
    admin, lport = ports.get(), ports.get()
    routes = [
        route({"prefix": "/test.Echo/Flaky"}, "grpc_backend",
              retry_policy={"retry_on": "unavailable", "num_retries": 2}),
        route({"prefix": "/test.Echo/Slow"}, "grpc_backend",
              max_stream_duration={"grpc_timeout_header_max": "0.3s"}),
        # grpc-timeout honoured as sent (0s: no cap), no route timeout for streams
        route({"prefix": "/"}, "grpc_backend", timeout="0s",
              max_stream_duration={"grpc_timeout_header_max": "0s"}),
    ]
    filters = [{"name": "envoy.filters.http.grpc_stats",
                "typed_config": {"@type": GRPC_STATS_TYPE, "emit_filter_state": True,
                                 "stats_for_all_methods": True}},
               ROUTER]
    cl = static_cluster("grpc_backend", up_port, typed_extension_protocol_options={
        HTTP_OPTS: {"@type": "type.googleapis.com/" + HTTP_OPTS,
                    "explicit_http_config": {"http2_protocol_options": {}}}})
    cfg = bootstrap(admin, [http_listener(lport, [], rc={"name": "r", "virtual_hosts": [
        virtual_host(routes)]}, http_filters=filters)], [cl])
    r = remora(cfg)
    ch = grpc.insecure_channel(f"127.0.0.1:{lport}")
    yield r, ch, svc
    ch.close()
    server.stop(0)


def method(ch, name, kind="unary_unary"):
    return getattr(ch, kind)(f"/test.Echo/{name}", request_serializer=ident,
                             response_deserializer=ident)


def test_unary_with_trailers(grpc_env):
    r, ch, svc = grpc_env
    resp, call = method(ch, "Echo").with_call(b"hello", metadata=(("x-meta", "v"),), timeout=10)
    assert resp == b"hello"
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata()).get("x-echo-trailer") == "t1"
    assert svc.metadata[-1].get("x-meta") == "v"
    assert r.stat("cluster.grpc_backend.upstream_cx_http2_total") == 1


def test_error_status_and_message_reach_client(grpc_env):
    r, ch, svc = grpc_env
    with pytest.raises(grpc.RpcError) as ei:
        method(ch, "Fail")(b"x", timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "bad thing: details"


def test_server_streaming_10000_messages(grpc_env):
    r, ch, svc = grpc_env
    msgs = list(method(ch, "Stream", "unary_stream")(b"10000", timeout=60))
    assert len(msgs) == 10000
    assert msgs[0] == b"m0" and msgs[-1] == b"m9999"


def test_server_streaming_is_not_buffered(grpc_env):
    r, ch, svc = grpc_env
    it = method(ch, "Gated", "unary_stream")(b"", timeout=20)
    assert next(it) == b"first"
    svc.gate.set()
    assert next(it) == b"second"
    with pytest.raises(StopIteration):
        next(it)


def test_client_streaming(grpc_env):
    r, ch, svc = grpc_env
    reqs = (b"x" * i for i in range(1, 101))
    assert method(ch, "Sum", "stream_unary")(reqs, timeout=20) == b"100/5050"


def test_bidi_ping_pong(grpc_env):
    """Each request is sent only after the previous answer arrived: neither
    direction can be buffered until the end."""
    r, ch, svc = grpc_env
    sent = threading.Semaphore(1)
    answers = []

    def gen():
        for i in range(20):
            if not sent.acquire(timeout=10):
                return
            yield b"p%d" % i

    for a in method(ch, "Chat", "stream_stream")(gen(), timeout=30):
        answers.append(a)
        sent.release()
    assert answers == [b"re:p%d" % i for i in range(20)]


def test_grpc_timeout_capped_by_route(grpc_env):
    """The client allows 10 s; the route caps grpc-timeout at 0.3 s and the
    server takes 1.5 s: the proxy ends the call with DEADLINE_EXCEEDED."""
    r, ch, svc = grpc_env
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        method(ch, "Slow")(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    assert r.stat("cluster.grpc_backend.upstream_rq_timeout") == 1


def test_grpc_timeout_shorter_than_server(grpc_env):
    r, ch, svc = grpc_env
    with pytest.raises(grpc.RpcError) as ei:
        method(ch, "Slow")(b"", timeout=0.2)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_retry_on_unavailable(grpc_env):
    r, ch, svc = grpc_env
    assert method(ch, "Flaky")(b"k1", timeout=10) == b"ok after 2"
    assert svc.calls["Flaky:k1"] == 2
    assert r.stat("cluster.grpc_backend.upstream_rq_retry") == 1


def test_grpc_stats(grpc_env):
    r, ch, svc = grpc_env
    for _ in range(3):
        method(ch, "Echo")(b"a", timeout=10)
    with pytest.raises(grpc.RpcError):
        method(ch, "Fail")(b"x", timeout=10)
    list(method(ch, "Stream", "unary_stream")(b"5", timeout=10))
    p = "cluster.grpc_backend.grpc.test.Echo."
    assert r.stat(p + "Echo.total") == 3
    assert r.stat(p + "Echo.success") == 3
    assert r.stat(p + "Echo.failure") == 0
    assert r.stat(p + "Fail.total") == 1
    assert r.stat(p + "Fail.failure") == 1
    assert r.stat(p + "Stream.success") == 1
    assert r.stat(p + "Stream.response_message_count") == 5
    assert r.stat(p + "Stream.request_message_count") == 1
