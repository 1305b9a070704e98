"""A small blocking HTTP/2 client on python3-h2 for the integration tests.
Every wait is bounded.  Subclasses may handle received events in
_received(event) (called for each, before it is appended to events)."""

import socket
import time

import h2.config
import h2.connection
import h2.events


class H2Client:
    """One h2c connection.  Every wait is bounded."""

    recv_size = 65536

    def __init__(self, port, settings=None, timeout=10.0, validate=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events = []
        self.closed = False
        self.remote_settings = {}
        self.goaway = None
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _received(self, e):
        """Hook: one event just received (the base class keeps none)."""

    def find(self, pred):
        for e in self.events:
            if pred(e):
                return e
        return None

    def pump(self, timeout=1.0, auto_flush=True):
        """Read what arrives within timeout; returns new events.  auto_flush
        False: do not send anything (e.g. PING ACKs) back."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(self.recv_size)
        except socket.timeout:
            return []
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        evs = self.conn.receive_data(data)
        for e in evs:
            if isinstance(e, h2.events.RemoteSettingsChanged):
                for k, v in e.changed_settings.items():
                    self.remote_settings[k] = v.new_value
            if isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = e
            self._received(e)
        self.events += evs
        if auto_flush:
            self.flush()
        return evs

    def wait_for(self, pred, timeout=10.0, what="event"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            e = self.find(pred)
            if e is not None:
                return e
            if self.closed:
                break
            self.pump(0.2)
        e = self.find(pred)
        if e is not None:
            return e
        raise AssertionError(f"timed out waiting for {what}; events: {self.events[-10:]}")

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="test.local"):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", authority)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def response(self, sid, timeout=10.0):
        """Wait for the stream to end or be reset: (headers dict, body, trailers, reset)."""
        def done(e):
            return (isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and
                    e.stream_id == sid)
        self.wait_for(done, timeout, what=f"end of stream {sid}")
        hdrs, body, trailers, reset = {}, b"", {}, None
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                hdrs = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.TrailersReceived):
                trailers = dict(e.headers)
            elif isinstance(e, h2.events.StreamReset):
                reset = e
        self.flush()
        return hdrs, body, trailers, reset
