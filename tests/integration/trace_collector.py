"""A small trace collector for the tracing tests: Zipkin v2 (POST
/api/v2/spans, JSON list of spans) and OTLP/HTTP JSON (POST /v1/traces).

Every posted report is validated against the data model the real
collectors accept; a violation is recorded in collector.errors (the tests
assert it stays empty) and answered 400.  Valid reports are answered 202
(Zipkin) / 200 (OTLP), and their spans kept in collector.spans (Zipkin
dicts as posted; OTLP spans flattened with "_service" and "_attrs"
{key: python value} added).  status_override makes every answer use that
status (to test reports_dropped)."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
ZIPKIN_KEYS = {"traceId", "id", "parentId", "kind", "name", "timestamp", "duration",
               "localEndpoint", "remoteEndpoint", "annotations", "tags", "debug", "shared"}
ENDPOINT_KEYS = {"serviceName", "ipv4", "ipv6", "port"}
OTLP_SPAN_KEYS = {"traceId", "spanId", "parentSpanId", "traceState", "name", "kind",
                  "startTimeUnixNano", "endTimeUnixNano", "attributes", "droppedAttributesCount",
                  "events", "droppedEventsCount", "links", "droppedLinksCount", "status", "flags"}
ANY_VALUE_KEYS = {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue",
                  "kvlistValue", "bytesValue"}


def zipkin_span_errors(s):
    e = []
    if not isinstance(s, dict):
        return ["span is not an object"]
    extra = set(s) - ZIPKIN_KEYS
    if extra:
        e.append(f"unknown keys {sorted(extra)}")
    if not (isinstance(s.get("traceId"), str) and (HEX16.match(s["traceId"]) or HEX32.match(s["traceId"]))):
        e.append(f"traceId {s.get('traceId')!r} is not 16 or 32 lowercase hex")
    elif set(s["traceId"]) == {"0"}:
        e.append("traceId is zero")
    if not (isinstance(s.get("id"), str) and HEX16.match(s["id"])):
        e.append(f"id {s.get('id')!r} is not 16 lowercase hex")
    if "parentId" in s and not (isinstance(s["parentId"], str) and HEX16.match(s["parentId"])):
        e.append(f"parentId {s.get('parentId')!r} is not 16 lowercase hex")
    if s.get("kind") not in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER"):
        e.append(f"kind {s.get('kind')!r}")
    if not isinstance(s.get("name"), str):
        e.append("name is not a string")
    ts, du = s.get("timestamp"), s.get("duration")
    # epoch microseconds: after 2001-09-09 and before 2286
    if not (isinstance(ts, int) and not isinstance(ts, bool) and 10**15 <= ts < 10**16):
        e.append(f"timestamp {ts!r} is not epoch microseconds")
    if not (isinstance(du, int) and not isinstance(du, bool) and du >= 1):
        e.append(f"duration {du!r} is not a positive integer (microseconds)")
    le = s.get("localEndpoint")
    if not isinstance(le, dict) or not isinstance(le.get("serviceName"), str) \
            or set(le) - ENDPOINT_KEYS:
        e.append(f"localEndpoint {le!r}")
    tags = s.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in tags.items()):
        e.append(f"tags {tags!r} are not all strings")
    if "shared" in s and not isinstance(s["shared"], bool):
        e.append("shared is not a boolean")
    return e


def _any_value(v):
    if not isinstance(v, dict) or len(v) != 1 or set(v) - ANY_VALUE_KEYS:
        raise ValueError(f"AnyValue {v!r}")
    (k, x), = v.items()
    if k == "stringValue":
        if not isinstance(x, str):
            raise ValueError("stringValue not a string")
        return x
    if k == "intValue":
        # proto3 JSON: int64 as a decimal string (numbers accepted too)
        if isinstance(x, bool) or not (isinstance(x, int) or (isinstance(x, str) and re.match(r"^-?\d+$", x))):
            raise ValueError(f"intValue {x!r}")
        return int(x)
    if k == "boolValue":
        if not isinstance(x, bool):
            raise ValueError("boolValue")
        return x
    if k == "doubleValue":
        return float(x)
    return x


def otlp_report_spans(doc):
    """Validate an ExportTraceServiceRequest (JSON); return flattened spans."""
    out = []
    if not isinstance(doc, dict) or set(doc) != {"resourceSpans"}:
        raise ValueError("top level must be {resourceSpans: [...]}")
    for rs in doc["resourceSpans"]:
        if set(rs) - {"resource", "scopeSpans", "schemaUrl"}:
            raise ValueError(f"resourceSpans keys {sorted(rs)}")
        attrs = {}
        for a in rs.get("resource", {}).get("attributes", []):
            if set(a) != {"key", "value"}:
                raise ValueError(f"resource attribute {a!r}")
            attrs[a["key"]] = _any_value(a["value"])
        for ss in rs["scopeSpans"]:
            if set(ss) - {"scope", "spans", "schemaUrl"}:
                raise ValueError(f"scopeSpans keys {sorted(ss)}")
            for sp in ss["spans"]:
                extra = set(sp) - OTLP_SPAN_KEYS
                if extra:
                    raise ValueError(f"span keys {sorted(extra)}")
                if not HEX32.match(sp.get("traceId", "")) or set(sp["traceId"]) == {"0"}:
                    raise ValueError(f"traceId {sp.get('traceId')!r}")
                if not HEX16.match(sp.get("spanId", "")):
                    raise ValueError(f"spanId {sp.get('spanId')!r}")
                if "parentSpanId" in sp and not HEX16.match(sp["parentSpanId"]):
                    raise ValueError(f"parentSpanId {sp['parentSpanId']!r}")
                if sp.get("kind") not in (0, 1, 2, 3, 4, 5):
                    raise ValueError(f"kind {sp.get('kind')!r} is not a SpanKind enum int")
                for k in ("startTimeUnixNano", "endTimeUnixNano"):
                    v = sp.get(k)
                    if not (isinstance(v, str) and v.isdigit() and 10**18 <= int(v) < 10**19):
                        raise ValueError(f"{k} {v!r} is not a decimal string of epoch ns")
                if int(sp["endTimeUnixNano"]) < int(sp["startTimeUnixNano"]):
                    raise ValueError("ends before it starts")
                if not isinstance(sp.get("name"), str):
                    raise ValueError("name")
                sattrs = {}
                for a in sp.get("attributes", []):
                    if set(a) != {"key", "value"} or not isinstance(a["key"], str):
                        raise ValueError(f"attribute {a!r}")
                    sattrs[a["key"]] = _any_value(a["value"])
                st = sp.get("status", {})
                if set(st) - {"code", "message"} or st.get("code", 0) not in (0, 1, 2):
                    raise ValueError(f"status {st!r}")
                flat = dict(sp)
                flat["_service"] = attrs.get("service.name")
                flat["_attrs"] = sattrs
                out.append(flat)
    return out


class TraceCollector:
    def __init__(self, host="127.0.0.1"):
        self.spans = []          # Zipkin spans
        self.otlp_spans = []     # flattened OTLP spans
        self.errors = []
        self.reports = []        # (path, headers dict)
        self.status_override = None
        self.lock = threading.Lock()
        coll = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                status = coll.handle(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._t = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                   daemon=True)

    def handle(self, path, headers, body):
        with self.lock:
            self.reports.append((path, headers))
            try:
                doc = json.loads(body)
            except ValueError as ex:
                self.errors.append(f"{path}: body is not JSON: {ex}: {body[:200]!r}")
                return 400
            if headers.get("content-type") != "application/json":
                self.errors.append(f"{path}: content-type {headers.get('content-type')!r}")
            if path == "/api/v2/spans":
                if not isinstance(doc, list):
                    self.errors.append("zipkin report is not a list")
                    return 400
                bad = False
                for s in doc:
                    errs = zipkin_span_errors(s)
                    if errs:
                        self.errors.append(f"zipkin span {s!r}: {errs}")
                        bad = True
                if bad:
                    return 400
                self.spans.extend(doc)
                return self.status_override or 202
            if path == "/v1/traces":
                try:
                    self.otlp_spans.extend(otlp_report_spans(doc))
                except (ValueError, KeyError, TypeError, AttributeError) as ex:
                    self.errors.append(f"OTLP report: {ex}: {body[:300]!r}")
                    return 400
                return self.status_override or 200
            self.errors.append(f"unexpected path {path}")
            return 404

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self):
        with self.lock:
            return list(self.spans), list(self.otlp_spans), list(self.errors)
