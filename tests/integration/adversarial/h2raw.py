"""Raw HTTP/2 frames for the adversarial suite: frames are written exactly
as the wire carries them (only header blocks are HPACK-encoded with
python3-hpack), and a reader thread parses what the proxy sends back, so
an attack can also stop reading its socket."""

import socket
import struct
import threading
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ENHANCE_YOUR_CALM = 11
NO_QUARANTINE = "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def settings(**kv):
    ids = {"max_concurrent_streams": 3, "initial_window_size": 4, "max_frame_size": 5,
           "header_table_size": 1}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in kv.items()))


class Raw:
    """A raw h2c connection; a thread drains (and parses) what the proxy
    sends while `read` is true.  rcvbuf: SO_RCVBUF set before connecting
    (a small receive window, so a client that stops reading makes the
    proxy's output pile up quickly)."""

    def __init__(self, port, initial_window=None, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        self.enc = hpack.Encoder()
        self.closed = threading.Event()
        self.goaway_code = None
        self.goaway_last = None
        self.rst = 0
        self.frames = {}                 # frame type -> count received
        self.statuses = {}               # stream id -> :status of its response
        self.ended = set()               # streams whose response ended
        self.dec = hpack.Decoder()
        self.buf = b""
        self.read = True
        hello = PREFACE + (settings(initial_window_size=initial_window) if initial_window
                           is not None else settings())
        self.s.sendall(hello + frame(SETTINGS, ACK, 0))
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()

    def _reader(self):
        while True:
            if not self.read:
                time.sleep(0.02)
                continue
            try:
                d = self.s.recv(262144)
            except OSError:
                d = b""
            if not d:
                self.closed.set()
                return
            self.buf += d
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                payload = self.buf[9:9 + n]
                self.frames[ftype] = self.frames.get(ftype, 0) + 1
                if ftype == GOAWAY:
                    self.goaway_last = struct.unpack(">I", payload[:4])[0] & 0x7fffffff
                    self.goaway_code = struct.unpack(">I", payload[4:8])[0]
                elif ftype == RST_STREAM:
                    self.rst += 1
                elif ftype == HEADERS and sid not in self.statuses:
                    try:
                        hdrs = dict(self.dec.decode(payload))
                        self.statuses[sid] = hdrs.get(":status", hdrs.get(b":status"))
                    except Exception:            # noqa: BLE001 - a test helper
                        self.statuses[sid] = None
                if ftype in (HEADERS, DATA) and flags & END_STREAM:
                    self.ended.add(sid)
                self.buf = self.buf[9 + n:]

    def headers_block(self, path="/", extra=(), method="GET"):
        return self.enc.encode([(":method", method), (":path", path), (":scheme", "http"),
                                (":authority", "t")] + list(extra))

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass
